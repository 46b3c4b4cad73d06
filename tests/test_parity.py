"""Both engines, same answer: random small datasets per check family, on every database.

Hypothesis draws tables full of the cases that break implementations — nulls,
events exactly one window apart, repeated idempotency keys, mixed-case and
padded e-mails, integer ids against text references, empty tables — writes
them to a real database, runs each check with the pandas engine and with the
SQL engine, and requires the same status, counts, population and violation
keys. A single differing row fails the test.

Times are drawn at millisecond precision: that is what every database here
stores exactly (SQLite's date functions keep no more).
"""

from __future__ import annotations

import json
import os
import textwrap
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from conftest import DATABASES, NOW, audit_text, database_url
from integrity.audit import parse_audit
from integrity.runner import run_audit

# CI runs a fixed set of examples (reproducible); INTEGRITY_PARITY_RANDOM=1 explores anew.
EXAMPLES = int(os.environ.get("INTEGRITY_PARITY_EXAMPLES", "25"))
PARITY = settings(max_examples=EXAMPLES, deadline=None,
                  derandomize=not os.environ.get("INTEGRITY_PARITY_RANDOM"),
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture,
                                         HealthCheck.data_too_large])
BASE = datetime(2026, 1, 30, 11, 0)
TYPES = {"text": lambda: sa.String(64), "int": sa.Integer, "float": sa.Float, "double": sa.Double,
         "time": lambda: sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")}


# ---------------------------------------------------------------------------
# Value strategies.

small_ids = st.sampled_from(["a", "b", "c", "d"])
tenants = st.one_of(st.none(), st.sampled_from(["t1", "t2", "t3"]))
# Offsets that land exactly on window boundaries (30 s multiples) and between them.
offsets = st.one_of(st.integers(0, 40).map(lambda n: n * 30_000),
                    st.integers(0, 1_200_000))


def times(nullable: bool = True):
    moment = offsets.map(lambda ms: BASE + timedelta(milliseconds=ms))
    return st.one_of(st.none(), moment) if nullable else moment


windows = st.sampled_from([30, 60, 300])
emails = st.builds(lambda pad, local, domain: f"{pad}{local}@{domain}{pad}",
                   st.sampled_from(["", " ", "  ", "\t"]),
                   st.sampled_from(["ann", "Ann", "ANN", "bob", "Élodie", "élodie"]),
                   st.sampled_from(["x.com", "X.com", "x.COM"]))


def rows(*columns, min_size=0, max_size=12):
    """Lists of dicts with a unique integer id."""
    fields = st.fixed_dictionaries(dict(columns))
    return st.lists(fields, min_size=min_size, max_size=max_size).map(
        lambda items: [{"id": index + 1, **item} for index, item in enumerate(items)])


# ---------------------------------------------------------------------------
# Running a scenario on one database with both engines.


def load(url: str, tables: dict[str, tuple[dict[str, str], list[dict]]]) -> None:
    metadata = sa.MetaData()
    for name, (spec, _) in tables.items():
        sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True,
                                           autoincrement=False),
                 *[sa.Column(column, TYPES[kind]()) for column, kind in spec.items()])
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        for name, (_, records) in tables.items():
            if records:
                connection.execute(metadata.tables[name].insert(), records)
    engine.dispose()


def both_engines(url: str, tables, datasets: str, checks: str):
    load(url, tables)
    audit = parse_audit(audit_text(url, datasets, checks), file="parity.yml")
    return [run_audit(audit, now=NOW, engine=engine, sample_limit=0)
            for engine in ("pandas", "sql")]


def assert_same(url, tables, datasets, checks):
    """Both engines' results, once they agree."""
    if not isinstance(checks, str):  # a list of check mappings: JSON is YAML
        checks = "\n".join(f"- {json.dumps(check)}" for check in checks)
    pandas, sql = both_engines(url, tables, datasets, textwrap.dedent(checks))
    assert pandas.errors == sql.errors == []
    assert [c.id for c in pandas.checks] == [c.id for c in sql.checks]
    for left, right in zip(pandas.checks, sql.checks):
        assert left.status != "error", left.error
        assert right.status != "error", right.error
        assert (left.status, left.violation_count, left.population) == (
            right.status, right.violation_count, right.population), left.id
        assert sorted(left.violation_keys, key=repr) == sorted(right.violation_keys,
                                                               key=repr), left.id
        if left.value is not None or right.value is not None:
            assert left.value == pytest.approx(right.value), left.id
        assert left.interval == right.interval, left.id
    return pandas, sql


@pytest.fixture(scope="module", params=DATABASES)
def url(request, servers, tmp_path_factory):
    return database_url(request.param, servers, tmp_path_factory.mktemp(request.param))


# ---------------------------------------------------------------------------
# One test per family.


@PARITY
@given(entities=rows(("key", small_ids), ("tenantId", tenants),
                     ("counter", st.one_of(st.none(), st.integers(0, 4)))),
       events=rows(("entity", st.one_of(st.none(), small_ids)), ("at", times()),
                   ("idem", st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))),
                   ("channel", st.sampled_from(["EMAIL", "SMS"]))),
       mode=st.sampled_from(["equal", "at_most"]), window=windows,
       keyed=st.booleans(), zero=st.booleans(), filtered=st.booleans())
def test_counter_vs_events(url, entities, events, mode, window, keyed, zero, filtered):
    entities = list({row["key"]: row for row in entities}.values())  # unique entity ids
    assert_same(url, {
        "entities": ({"key": "text", "tenantId": "text", "counter": "int"}, entities),
        "events": ({"entity": "text", "at": "time", "idem": "text", "channel": "text"}, events),
    }, """\
        entities: {table: entities, key: key, tenant_column: tenantId}
        events: {table: events, key: id}
        """, [{"kind": "counter_vs_events", "dataset": "entities", "counter": "counter",
               "events": {"dataset": "events", "entity": "entity", "time": "at",
                          **({"idempotency_key": "idem"} if keyed else {}),
                          **({"where": {"channel": "EMAIL"}} if filtered else {})},
               "mode": mode, "window": window, "zero_counter": zero}])


@PARITY
@given(entities=rows(("key", small_ids), ("stored", times())),
       events=rows(("entity", st.one_of(st.none(), small_ids)), ("at", times())),
       window=windows, tolerance=st.sampled_from([0, 1, 30]))
def test_timestamp_preserved(url, entities, events, window, tolerance):
    entities = list({row["key"]: row for row in entities}.values())
    assert_same(url, {
        "entities": ({"key": "text", "stored": "time"}, entities),
        "events": ({"entity": "text", "at": "time"}, events),
    }, """\
        entities: {table: entities, key: key}
        events: {table: events, key: id}
        """, [{"kind": "timestamp_preserved", "dataset": "entities", "column": "stored",
               "events": {"dataset": "events", "entity": "entity", "time": "at"},
               "window": window, "tolerance": tolerance}])


@PARITY
@given(table=rows(("status", st.sampled_from(["SENT", "DRAFT"])),
                  ("sentAt", st.one_of(st.none(), times(False),
                                       st.integers(0, 5).map(lambda d: NOW.replace(tzinfo=None)
                                                             + timedelta(days=d, seconds=30)))),
                  ("createdAt", times())),
       required=st.booleans(), future=st.booleans())
def test_timestamp_valid(url, table, required, future):
    assert_same(url, {"quotes": ({"status": "text", "sentAt": "time", "createdAt": "time"},
                                 table)},
                "quotes: {table: quotes, key: id}",
                [{"kind": "timestamp_valid", "dataset": "quotes", "where": {"status": "SENT"},
                  "column": "sentAt", "not_before": "createdAt", "required": required,
                  "not_in_future": future, "earliest": "2026-01-30T11:05:00"}])


@PARITY
@given(table=rows(("tenantId", tenants), ("email", st.one_of(st.none(), emails)),
                  ("createdAt", times())),
       normaliser=st.sampled_from(["email", "lower", "trim", None]), by_created=st.booleans())
def test_duplicates(url, table, normaliser, by_created):
    check = {"kind": "duplicates", "dataset": "leads", "columns": ["tenantId", "email"]}
    if normaliser:
        check["normalize"] = {"email": normaliser}
    if by_created:
        check["keep_first_by"] = "createdAt"
    assert_same(url, {"leads": ({"tenantId": "text", "email": "text", "createdAt": "time"},
                                table)},
                "leads: {table: leads, key: id, tenant_column: tenantId}", [check])


@PARITY
@given(table=rows(("quoteId", st.one_of(st.none(), small_ids)),
                  ("channel", st.sampled_from(["EMAIL", "SMS"])),
                  ("recipient", st.one_of(st.none(), st.sampled_from(["x", "y"]))),
                  ("sentAt", times())),
       window=windows)
def test_duplicate_events(url, table, window):
    assert_same(url, {"sends": ({"quoteId": "text", "channel": "text", "recipient": "text",
                                 "sentAt": "time"}, table)},
                "sends: {table: sends, key: id}",
                [{"kind": "duplicate_events", "dataset": "sends",
                  "by": ["quoteId", "channel", "recipient"], "time": "sentAt",
                  "window": window}])


@PARITY
@given(parents=rows(("tenant", tenants), ("deleted", st.one_of(st.none(), times(False)))),
       children=rows(("tenant", tenants), ("parentId", st.one_of(st.none(), st.integers(0, 14))),
                     ("other", tenants)),
       required=st.booleans(), live_only=st.booleans())
def test_orphans_and_cross_tenant(url, parents, children, required, live_only):
    orphans = {"id": "orphans", "kind": "orphans", "dataset": "children",
               "reference": "parentId", "parent": "parents", "required": required}
    if live_only:
        orphans["parent_where"] = {"deleted": None}
    assert_same(url, {
        "parents": ({"tenant": "text", "deleted": "time"}, parents),
        "children": ({"tenant": "text", "parentId": "int", "other": "text"}, children),
    }, """\
        parents: {table: parents, key: id, tenant_column: tenant}
        children: {table: children, key: id, tenant_column: tenant}
        """, [orphans,
              {"id": "parent_tenant", "kind": "cross_tenant", "dataset": "children",
               "reference": "parentId", "parent": "parents"},
              {"id": "same_row", "kind": "cross_tenant", "dataset": "children",
               "other_tenant_column": "other"}])


@PARITY
@given(left=rows(("tenant", tenants), ("amount", st.one_of(st.none(), st.integers(0, 3))),
                 ("createdAt", times())),
       right=rows(("company", tenants), ("kind", st.sampled_from(["lead", "other"])),
                  ("at", times())),
       per_day=st.booleans(), measure=st.sampled_from(["count", "sum(amount)", "count(amount)",
                                                       "p90(amount)"]),
       tolerance=st.sampled_from([0, 1, "50%"]))
def test_reconciliation(url, left, right, per_day, measure, tolerance):
    # Two days apart so per-day keys really differ.
    right = [{**row, "at": row["at"] + timedelta(days=row["id"] % 2)} if row["at"] else row
             for row in right]
    left_side = {"dataset": "leads", "measure": measure, "by": ["tenant"]}
    right_side = {"dataset": "hooks", "by": ["company"], "where": {"kind": "lead"}}
    if per_day:
        left_side["per_day"], right_side["per_day"] = "createdAt", "at"
    assert_same(url, {
        "leads": ({"tenant": "text", "amount": "int", "createdAt": "time"}, left),
        "hooks": ({"company": "text", "kind": "text", "at": "time"}, right),
    }, """\
        leads: {table: leads, key: id}
        hooks: {table: hooks, key: id}
        """, [{"kind": "reconciliation", "left": left_side, "right": right_side,
               "tolerance": tolerance}])


@PARITY
@given(table=rows(("channel", st.one_of(st.none(), st.sampled_from(["EMAIL", "SMS"]))),
                  ("ok", st.one_of(st.none(), st.integers(0, 1))),
                  ("cost", st.one_of(st.none(), st.integers(0, 10))),
                  ("at", times())),
       shape=st.sampled_from(["ratio", "value", "share", "filtered"]), grouped=st.booleans(),
       expect=st.booleans(),
       window=st.sampled_from([None, ("20m", None), ("2h", None), ("1h", "hour")]))
def test_metric(url, table, shape, grouped, expect, window):
    if shape == "share":
        grouped = True
    check = {"kind": "metric", "dataset": "sends",
             **{"ratio": {"numerator": "sum(ok)", "denominator": "count"},
                "value": {"value": "avg(cost)"},
                "share": {"share": "count"},
                "filtered": {"value": {"measure": "count", "where": {"ok": 1}}}}[shape],
             "thresholds": {"warn": "< 50%" if shape in {"ratio", "share"} else "> 2"}}
    if grouped:
        check["by"] = ["channel"]
        if expect:
            check["expect_groups"] = ["EMAIL", "SMS", "LINK"]
    if window:
        check["time"], check["window"] = "at", window[0]
        if window[1]:  # at NOW, 12:30: [11:00, 12:00), whose start the times hit exactly
            check["align"] = window[1]
    assert_same(url, {"sends": ({"channel": "text", "ok": "int", "cost": "int", "at": "time"},
                                table)},
                "sends: {table: sends, key: id}", [check])


# Durations that tie, lie far apart, are negative or fractional: what interpolation gets wrong.
durations = st.one_of(st.none(), st.sampled_from([0.0, 2.0, 2.0, -3.5, 1000.0]),
                      st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
PERCENTILES = {"p50(ms)": 0.5, "median(ms)": 0.5, "p90(ms)": 0.9, "p95(ms)": 0.95,
               "p99(ms)": 0.99, "percentile(ms, 0.123)": 0.123, "percentile(ms, 0.999)": 0.999}


@PARITY
@given(table=rows(("endpoint", st.one_of(st.none(), st.sampled_from(["/a", "/b"]))),
                  ("ms", durations), ("ok", st.one_of(st.none(), st.integers(0, 1))),
                  ("at", times()), max_size=16),
       measure=st.sampled_from(list(PERCENTILES)),
       shape=st.sampled_from(["value", "ratio", "filtered"]), grouped=st.booleans(),
       expect=st.booleans(), aligned=st.booleans())
def test_percentile(url, table, measure, shape, grouped, expect, aligned):
    check = {"kind": "metric", "dataset": "requests",
             **{"value": {"value": measure},
                "ratio": {"numerator": measure, "denominator": "p50(ms)"},
                "filtered": {"value": {"measure": measure, "where": {"ok": 1}}}}[shape],
             "thresholds": {"warn": "> 2", "critical": "> 1000"}}
    if grouped:
        check["by"] = ["endpoint"]
        if expect:
            check["expect_groups"] = ["/a", "/b", "/c"]
    if aligned:  # at NOW, 12:30: [11:00, 12:00), which holds every row with a time
        check.update(time="at", window="1h", align="hour")
    pandas, sql = assert_same(url, {"requests": ({"endpoint": "text", "ms": "double",
                                                  "ok": "int", "at": "time"}, table)},
                              "requests: {table: requests, key: id}", [check])
    # To the last digit, and the rule's own value: the same doubles, sorted, interpolated.
    assert pandas.checks[0].group_values == sql.checks[0].group_values
    if shape != "ratio":
        assert pandas.checks[0].group_values == expected_percentiles(
            table, PERCENTILES[measure], grouped, expect, aligned, shape == "filtered")


def expected_percentiles(table, fraction, grouped, expect, aligned, filtered):
    """Each group's percentile by `values.percentile`, named as the run history names it."""
    from integrity.values import percentile

    measured = [row for row in table if row["at"] is not None or not aligned]
    groups: dict = {}
    for row in measured:
        numbers = groups.setdefault(row["endpoint"] if grouped else "all rows", [])
        if row["ms"] is not None and (row["ok"] == 1 or not filtered):
            numbers.append(row["ms"])
    for group in (["/a", "/b", "/c"] if grouped and expect else []) + (
            [] if grouped else ["all rows"]):
        groups.setdefault(group, [])
    return {"null" if group is None else group: percentile(numbers, fraction)
            for group, numbers in groups.items()}


@PARITY
@given(table=rows(("job", st.one_of(st.none(), st.sampled_from(["a", "b"]))), ("at", times())),
       grouped=st.booleans())
def test_freshness(url, table, grouped):
    check = {"kind": "freshness", "dataset": "beats", "time": "at", "warn_after": "30m",
             "critical_after": "80m"}
    if grouped:
        check.update(by=["job"], expect_groups=["a", "b", "c"])
    assert_same(url, {"beats": ({"job": "text", "at": "time"}, table)},
                "beats: {table: beats, key: id}", [check])


def test_the_parity_harness_catches_a_one_row_difference(url, monkeypatch):
    """If the SQL engine lost one violation, `assert_same` must fail."""
    from integrity.checks.orphans import Orphans

    real = Orphans.measure_sql

    def drop_one(self, db):
        measurement = real(self, db)
        measurement.violations = measurement.violations.iloc[1:]
        measurement.violation_count -= 1
        return measurement

    monkeypatch.setattr(Orphans, "measure_sql", drop_one)
    tables = {"parents": ({"tenant": "text"}, [{"id": 1, "tenant": "t"}]),
              "children": ({"tenant": "text", "parentId": "int"},
                           [{"id": 1, "tenant": "t", "parentId": 2},
                            {"id": 2, "tenant": "t", "parentId": 3}])}
    with pytest.raises(AssertionError, match=r"^children\.orphans"):
        assert_same(url, tables, """\
            parents: {table: parents, key: id}
            children: {table: children, key: id}
            """, """\
            - {kind: orphans, dataset: children, reference: parentId, parent: parents}
            """)
