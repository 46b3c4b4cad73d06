"""Percentiles (seed 000: "Response Time (p95) < 500 ms, warn > 1 s, critical > 2 s").

Continuous percentiles with linear interpolation, on every database and both engines,
to the last digit: exact values for known inputs, the empty cases, a p95 per endpoint
over the last complete hour, and the audit-file errors that keep a typo from measuring
the wrong thing.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import DATABASES, Database, database_url, run
from integrity.audit import parse_audit
from integrity.errors import ConfigError
from integrity.values import percentile

ENGINES = ["pandas", "sql"]
NOW = datetime(2026, 1, 30, 10, 20, tzinfo=timezone.utc)


@pytest.fixture(scope="module", params=DATABASES)
def db(request, servers, tmp_path_factory) -> Database:
    return Database(database_url(request.param, servers, tmp_path_factory.mktemp(request.param)))


def measure(db: Database, checks: str, engine: str,
            datasets: str = "requests: {table: requests, key: id}"):
    result = run(db, datasets, checks, now=NOW, engine=engine)
    assert result.errors == [] and [c.error for c in result.checks if c.error] == []
    return result


# ---------------------------------------------------------------------------
# The rule itself.


@pytest.mark.parametrize("numbers, fraction, expected", [
    (list(range(1, 11)), 0.5, 5.5),
    (list(range(1, 11)), 0.9, 9.1),
    (list(range(1, 11)), 0.95, 9.549999999999999),  # 9.55 as far as 0.95 is 0.95
    (list(range(1, 11)), 0.99, 9.91),
    ([7], 0.95, 7.0),
    ([], 0.5, None),
    ([3, 1], 0.5, 2.0),
    ([4, 4, 4, 10], 0.5, 4.0),             # ties
    ([-2.5, 0.5], 0.25, -1.75),
    ([10, 1, 5], 0.75, 7.5),               # unsorted in, sorted first
])
def test_the_rule(numbers, fraction, expected):
    assert percentile(numbers, fraction) == expected


def test_the_rule_is_percentile_conts_order_of_operations_not_numpys():
    # numpy (Series.quantile) computes x[hi] − (1 − t)·(x[hi] − x[lo]) above the midpoint,
    # one digit off here; percentile_cont and the grouped quantile compute x[lo] + t·(…).
    import pandas as pd

    numbers = [0.1, 0.3]
    assert percentile(numbers, 0.9) == 0.1 + (0.3 - 0.1) * 0.9 == 0.28
    assert pd.Series(numbers).groupby([0, 0]).quantile(0.9).iloc[0] == 0.28
    assert pd.Series(numbers).quantile(0.9) == 0.27999999999999997


# ---------------------------------------------------------------------------
# Exact values, every database, both engines.

PERCENTILES = """\
- {id: p50, kind: metric, dataset: requests, value: p50(ms), thresholds: {warn: "> 1000"}}
- {id: median, kind: metric, dataset: requests, value: median(ms), thresholds: {warn: "> 1000"}}
- {id: p90, kind: metric, dataset: requests, value: p90(ms), thresholds: {warn: "> 1000"}}
- {id: p95, kind: metric, dataset: requests, value: p95(ms), thresholds: {warn: "> 1000"}}
- {id: p99, kind: metric, dataset: requests, value: p99(ms), thresholds: {warn: "> 1000"}}
- {id: p25, kind: metric, dataset: requests, value: "percentile(ms, 0.25)",
   thresholds: {warn: "> 1000"}}
"""
EXPECTED = {"p50": 5.5, "median": 5.5, "p90": 9.1, "p95": 9.549999999999999, "p99": 9.91,
            "p25": 3.25}


@pytest.mark.parametrize("engine", ENGINES)
def test_one_to_ten_and_nulls(db, engine):
    db.tables(requests=[{"id": i, "ms": float(i) if i <= 10 else None} for i in range(1, 14)])
    result = measure(db, PERCENTILES, engine)
    assert {check.id: check.value for check in result.checks} == EXPECTED
    assert {check.id: check.population for check in result.checks} == dict.fromkeys(EXPECTED, 13)
    assert result.check("p95").value_text == "9.55"
    assert result.check("p95").description == "p95(ms) of requests: warning if > 1000."


@pytest.mark.parametrize("engine", ENGINES)
def test_one_value_is_its_own_percentile(db, engine):
    db.tables(requests=[{"id": 1, "ms": 7.0}, {"id": 2, "ms": None}])
    result = measure(db, PERCENTILES, engine)
    assert {check.id: check.value for check in result.checks} == dict.fromkeys(EXPECTED, 7.0)
    assert {check.status for check in result.checks} == {"pass"}


@pytest.mark.parametrize("engine", ENGINES)
def test_two_values_ties_and_negatives(db, engine):
    db.tables(requests=[{"id": index + 1, "ms": ms, "kind": kind} for index, (ms, kind) in
                        enumerate([(-2.5, "two"), (0.5, "two"), (4.0, "ties"), (4.0, "ties"),
                                   (4.0, "ties"), (10.0, "ties")])])
    result = measure(db, """\
        - {id: p25, kind: metric, dataset: requests, value: "percentile(ms, 0.25)", by: [kind],
           thresholds: {warn: "> 1000"}}
        - {id: p90, kind: metric, dataset: requests, value: p90(ms), by: [kind],
           thresholds: {warn: "> 1000"}}
        """, engine)
    assert result.check("p25").group_values == {"ties": 4.0, "two": -1.75}
    assert result.check("p90").group_values == {"ties": percentile([4, 4, 4, 10], 0.9),
                                                "two": percentile([-2.5, 0.5], 0.9)}
    assert result.check("p90").group_values["ties"] == pytest.approx(8.2)


@pytest.mark.parametrize("engine", ENGINES)
def test_no_number_is_no_value(db, engine):
    # All nulls, a group whose rows all fail the percentile's own filter, an expected group
    # without rows, and an empty window: no value, so on_empty decides.
    db.tables(requests=[{"id": 1, "ms": None, "endpoint": "/a", "ok": 1,
                         "at": "2026-01-30 09:10:00"},
                        {"id": 2, "ms": 5.0, "endpoint": "/b", "ok": 0,
                         "at": "2026-01-30 09:20:00"}])
    result = measure(db, """\
        - {id: nulls, kind: metric, dataset: requests, value: p95(ms), where: {endpoint: /a},
           thresholds: {warn: "> 1000"}}
        - {id: groups, kind: metric, dataset: requests, by: [endpoint],
           value: {measure: p95(ms), where: {ok: 1}}, expect_groups: [/a, /b, /c],
           on_empty: fail, thresholds: {warn: "> 1000"}}
        - {id: window, kind: metric, dataset: requests, value: p95(ms), time: at, window: 10m,
           on_empty: info, thresholds: {warn: "> 1000"}}
        """, engine)
    nulls, groups, window = (result.check(name) for name in ("nulls", "groups", "window"))
    assert (nulls.status, nulls.value, nulls.notes) == (
        "warn", None, ["no value: p95(ms) has no value; on_empty: warn"])
    assert groups.status == "fail"
    assert groups.group_values == {"/a": None, "/b": None, "/c": None}
    assert groups.notes == [
        "no value for 2 group(s) (/a, /b): p95(ms) where ok = 1 has no value; on_empty: fail",
        "no value for 1 group(s) (/c): no rows; on_empty: fail"]
    assert (window.status, window.value, window.population) == ("info", None, 0)
    assert window.notes == ["no value: no rows in [2026-01-30 10:10, 10:20) UTC; on_empty: info"]


# ---------------------------------------------------------------------------
# The seed's metric: p95 response time per endpoint over the last complete hour.

REQUESTS = (
    # /quotes: one request in twenty takes 5 s; the p95 barely moves: 300 + 0.05·4700.
    [{"endpoint": "/quotes", "ms": 300, "at": f"2026-01-30 09:{minute:02d}:00"}
     for minute in range(19)] +
    [{"endpoint": "/quotes", "ms": 5000, "at": "2026-01-30 09:59:59"}] +
    # /leads: 1200 ms at the 95th percentile, a warning.
    [{"endpoint": "/leads", "ms": ms, "at": "2026-01-30 09:30:00"} for ms in (800, 1200)] +
    # /health: fast, but with a null and a request outside the hour on either side.
    [{"endpoint": "/health", "ms": ms, "at": at} for ms, at in (
        (20, "2026-01-30 09:00:00"), (None, "2026-01-30 09:15:00"), (40, "2026-01-30 09:45:00"),
        (99999, "2026-01-30 08:59:59"), (99999, "2026-01-30 10:00:00"))])
SEED_000 = """\
- id: response_time_p95
  kind: metric
  dataset: requests
  value: p95(duration_ms)
  by: [endpoint]
  time: requested_at
  window: 1h
  align: hour
  thresholds: {warn: "> 1000", critical: "> 2000"}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_p95_response_time_per_endpoint_over_the_last_complete_hour(db, engine):
    db.tables(requests=[{"id": index + 1, "endpoint": row["endpoint"],
                         "duration_ms": row["ms"], "requested_at": row["at"]}
                        for index, row in enumerate(REQUESTS)])
    check = measure(db, SEED_000, engine).check("response_time_p95")
    assert check.status == "warn"
    assert check.group_values == {"/health": 39.0, "/leads": 1180.0,
                                  "/quotes": percentile([300] * 19 + [5000], 0.95)}
    assert check.group_values["/quotes"] == pytest.approx(535.0)
    assert check.value_text == "/health: 39, /leads: 1180, /quotes: 535"
    assert sorted(check.violation_keys) == [("/leads",)]
    assert check.population == 25  # of 27: two lie outside [09:00, 10:00)
    assert check.interval == (datetime(2026, 1, 30, 9, tzinfo=timezone.utc),
                              datetime(2026, 1, 30, 10, tzinfo=timezone.utc))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_slow_tail_is_critical(db, engine):
    db.tables(requests=[{"id": i, "endpoint": "/quotes", "duration_ms": 2500 if i > 17 else 100,
                         "requested_at": "2026-01-30 09:30:00"} for i in range(1, 21)])
    check = measure(db, SEED_000, engine).check("response_time_p95")
    assert (check.status, check.group_values) == ("fail", {"/quotes": 2500.0})
    assert [(row["endpoint"], row["value"], row["level"], row["bound"])
            for row in check.sample] == [("/quotes", "2500", "critical", "> 2000")]


# ---------------------------------------------------------------------------
# Ratios and reconciliations of percentiles.


@pytest.mark.parametrize("engine", ENGINES)
def test_a_ratio_of_percentiles_and_a_reconciliation(db, engine):
    db.tables(requests=[{"id": i, "tenant": "t1" if i <= 10 else "t2", "duration_ms": float(i)}
                        for i in range(1, 15)],
              budgets=[{"id": 1, "tenant": "t1", "p90": 9.1}, {"id": 2, "tenant": "t2", "p90": 9}])
    result = measure(db, """\
        - id: tail
          kind: metric
          dataset: requests
          numerator: p99(duration_ms)
          denominator: median(duration_ms)
          by: [tenant]
          thresholds: {warn: "> 150%"}
        - id: budget
          kind: reconciliation
          left: {dataset: requests, measure: p90(duration_ms), by: [tenant]}
          right: {dataset: budgets, measure: max(p90), by: [tenant]}
          tolerance: 0.001
        """, engine, datasets="requests: {table: requests, key: id}\n"
                              "budgets: {table: budgets, key: id}")
    tail, budget = result.check("tail"), result.check("budget")
    assert tail.group_values == {"t1": 9.91 / 5.5, "t2": percentile([11, 12, 13, 14], 0.99) / 12.5}
    assert sorted(tail.violation_keys) == [("t1",)]
    assert [(row["tenant"], row["requests"], row["budgets"]) for row in budget.sample] == [
        ("t2", pytest.approx(13.7), 9)]


# ---------------------------------------------------------------------------
# The audit file.

HEAD = """\
connection:
  url: sqlite:///data.sqlite
datasets:
  requests: {table: requests, key: id}
checks:
"""


def errors(check: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_audit(HEAD + "  " + check + "\n", file="a.yml")
    return str(caught.value).splitlines()


@pytest.mark.parametrize("written, message", [
    ("percentile(ms, 90)", "the fraction must lie between 0 and 1 (0.9 is the 90th "
                           "percentile); write percentile(ms, 0.9) for 90%"),
    ("percentile(ms, 0)", "the fraction must lie between 0 and 1 (0.9 is the 90th "
                          "percentile)"),
    ("percentile(ms)", "percentile needs a column and a fraction, e.g. "
                       "percentile(response_ms, 0.9) for the 90th percentile"),
    ("p95", "p95 needs a column, e.g. p95(amount)"),
    ("p95(ms, 0.9)", "p95 takes one column; for another percentile write "
                     "percentile(col, 0.9)"),
    ("p97(ms)", "p97 is not one of p50, p90, p95, p99; write percentile(col, 0.97)"),
    ("mediam(ms)", "use count, count(col), count_distinct(col), sum(col), avg(col), "
                   "min(col), max(col), median(col), p50(col), p90(col), p95(col), p99(col) "
                   "or percentile(col, 0.9); did you mean 'median'?"),
])
def test_a_wrong_percentile_is_named_where_it_is(written, message):
    assert errors(f'- {{kind: metric, dataset: requests, value: "{written}", '
                  f'thresholds: {{warn: "> 1"}}}}') == [
        f"a.yml:6:39: checks[0].value: invalid aggregate {written!r}: {message}"]


def test_a_percentile_is_no_share():
    assert errors('- {kind: metric, dataset: requests, share: p95(ms), by: [endpoint], '
                  'thresholds: {warn: "> 1"}}') == [
        "a.yml:6:39: checks[0].share: p95(ms) has no total for a group to be a share of; "
        "measure each group's own with value: p95(ms) and by"]


def test_spellings():
    audit = parse_audit(HEAD + """\
  - {id: a, kind: metric, dataset: requests, value: P99( ms ), thresholds: {warn: "> 1"}}
  - {id: b, kind: metric, dataset: requests, value: "percentile(ms,0.999)",
     thresholds: {warn: "> 1"}}
  - {id: c, kind: metric, dataset: requests, value: {measure: median(ms), where: {ok: 1}},
     thresholds: {warn: "> 1"}}
""", file="a.yml")
    values = [check.value for check in audit.checks]
    assert [(str(value), value.fraction) for value in values] == [
        ("p99(ms)", 0.99), ("percentile(ms, 0.999)", 0.999), ("median(ms) where ok = 1", 0.5)]
