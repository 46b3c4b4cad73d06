"""Metrics an on-call engineer can rely on: aligned windows, empty windows, baselines by time.

Every scenario runs on both engines and, where the fixtures allow, on SQLite, PostgreSQL
and MariaDB, with exact expected values, intervals and notes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from conftest import DATABASES, Database, audit_text, database_url
from integrity.audit import parse_audit
from integrity.report.json_report import check_document
from integrity.runner import run_audit

ENGINES = ["pandas", "sql"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(params=DATABASES)
def db(request, servers, tmp_path) -> Database:
    return Database(database_url(request.param, servers, tmp_path))


def measure(db: Database, checks: str, now: datetime, engine: str,
            datasets: str = "sends: {table: sends, key: id}"):
    audit = parse_audit(audit_text(db.url, datasets, checks), file="windows.yml")
    result = run_audit(audit, now=now, engine=engine, sample_limit=0)
    assert result.errors == []
    for check in result.checks:
        assert check.status != "error", check.error
    return result


# ---------------------------------------------------------------------------
# Aligned windows.

HOURLY = """\
- {id: hour, kind: metric, dataset: sends, value: count, time: at, window: 1h, align: hour,
   thresholds: {critical: "< 1"}}
- {id: two_hours, kind: metric, dataset: sends, value: count, time: at, window: 2h,
   align: hour, thresholds: {critical: "< 1"}}
- {id: sliding, kind: metric, dataset: sends, value: count, time: at, window: 1h,
   thresholds: {critical: "< 1"}}
"""
SENDS = [{"id": 1, "at": "2026-01-30 07:59:59"},   # before both aligned windows
         {"id": 2, "at": "2026-01-30 08:00:00"},   # the 2h window's first instant
         {"id": 3, "at": "2026-01-30 08:59:59"},
         {"id": 4, "at": "2026-01-30 09:00:00"},   # the hour's first instant
         {"id": 5, "at": "2026-01-30 09:39:59"},
         {"id": 6, "at": "2026-01-30 09:59:59"},   # the hour's last second
         {"id": 7, "at": "2026-01-30 10:00:00"},   # the next hour: not complete yet
         {"id": 8, "at": "2026-01-30 10:00:03"}]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("now, sliding", [("2026-01-30 10:00:05", 4),   # ids 5-8
                                          ("2026-01-30 10:40:00", 3)])  # ids 6-8
def test_an_aligned_window_measures_the_last_complete_hour(db, engine, now, sliding):
    db.tables(sends=SENDS)
    result = measure(db, HOURLY, utc(now), engine)
    hour, two_hours = result.check("hour"), result.check("two_hours")
    assert (hour.value, two_hours.value, result.check("sliding").value) == (3, 5, sliding)
    assert hour.interval == (utc("2026-01-30 09:00"), utc("2026-01-30 10:00"))
    assert check_document(hour)["interval"] == {"start": "2026-01-30T09:00:00Z",
                                                "end": "2026-01-30T10:00:00Z"}
    assert check_document(two_hours)["interval"] == {"start": "2026-01-30T08:00:00Z",
                                                     "end": "2026-01-30T10:00:00Z"}
    assert hour.description == ("count(*) of sends over the hour [2026-01-30 09:00, 10:00) "
                                "UTC of at: critical if < 1.")
    assert two_hours.description == ("count(*) of sends over the 2 hours [2026-01-30 08:00, "
                                     "10:00) UTC of at: critical if < 1.")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_day_aligned_in_the_datasets_time_zone_on_postgresql(servers, engine):
    """Naive local times in New York (UTC−5 in January): a run at 00:30 local time
    (05:30 UTC) measures the local day before, 05:00 to 05:00 UTC."""
    db = Database(servers.database("postgresql"))
    db.execute("CREATE TABLE sends (id int PRIMARY KEY, at timestamp, label text)",
               "INSERT INTO sends VALUES "
               "(1, '2026-01-28 23:59:59', 'the day before, local'),"
               "(2, '2026-01-29 00:00:00', 'first instant'),"
               "(3, '2026-01-29 03:00:00', 'before 05:00 UTC: in the local day'),"
               "(4, '2026-01-29 23:59:59', 'last second'),"
               "(5, '2026-01-30 00:00:00', 'today: not complete'),"
               "(6, '2026-01-30 00:20:00', 'today'),"
               "(7, '2026-01-18 23:59:59', 'a Sunday'),"
               "(8, '2026-01-19 00:00:00', 'the Monday after')")
    checks = """\
        - {id: daily, kind: metric, dataset: sends, value: count, time: at, window: 1d,
           align: day, thresholds: {critical: "< 1"}}
        - {id: weekly, kind: metric, dataset: sends, value: count, time: at, window: 7d,
           align: week, thresholds: {critical: "< 1"}}
        """
    local = measure(db, checks, utc("2026-01-30 05:30"), engine,
                    "sends: {table: sends, key: id, timezone: America/New_York}")
    daily = local.check("daily")
    assert (daily.value, daily.interval) == (3, (utc("2026-01-29 05:00"),
                                                 utc("2026-01-30 05:00")))
    assert daily.description == ("count(*) of sends over the day [2026-01-29 00:00, "
                                 "2026-01-30 00:00) America/New_York of at: critical if < 1.")
    # 2026-01-30 is a Friday: the last complete week is Monday 19 to Monday 26, local.
    weekly = local.check("weekly")
    assert (weekly.value, weekly.interval) == (1, (utc("2026-01-19 05:00"),
                                                   utc("2026-01-26 05:00")))
    # The same rows read in UTC: the day is 00:00 to 00:00 UTC, which row 5 has left.
    plain = measure(db, checks, utc("2026-01-30 05:30"), engine)
    assert (plain.check("daily").value, plain.check("daily").interval) == (
        3, (utc("2026-01-29 00:00"), utc("2026-01-30 00:00")))


def test_a_sliding_window_records_its_interval_and_no_window_none(sqlite_db):
    sqlite_db.tables(sends=SENDS)
    result = measure(sqlite_db, """\
        - {id: sliding, kind: metric, dataset: sends, value: count, time: at, window: 90m,
           thresholds: {critical: "< 1"}}
        - {id: all, kind: metric, dataset: sends, value: count, thresholds: {critical: "< 1"}}
        """, utc("2026-01-30 10:40:00.250"), "pandas")
    sliding = result.check("sliding")
    assert (sliding.value, check_document(sliding)["interval"]) == (
        4, {"start": "2026-01-30T09:10:00.250000Z", "end": "2026-01-30T10:40:00.250000Z"})
    assert sliding.description == ("count(*) of sends over the last 1.5h [2026-01-30 "
                                   "09:10:00.25, 10:40:00.25) UTC of at: critical if < 1.")
    assert (result.check("all").interval, check_document(result.check("all"))["interval"]) \
        == (None, None)


# ---------------------------------------------------------------------------
# Empty means something.

QUIET_HOUR = [{"id": 1, "channel": "EMAIL", "ok": 1, "sent": 2, "cost": 2.0,
               "at": "2026-01-30 08:30:00"},
              {"id": 2, "channel": "SMS", "ok": 0, "sent": 0, "cost": 4.0,
               "at": "2026-01-30 08:45:00"}]
LAST_HOUR = "time: at, window: 1h, align: hour"
EMPTY = f"""\
- {{id: count, kind: metric, dataset: sends, value: count, {LAST_HOUR},
   thresholds: {{critical: "< 1"}}}}
- {{id: sum, kind: metric, dataset: sends, value: sum(cost), {LAST_HOUR},
   thresholds: {{critical: "< 1"}}}}
- {{id: rate, kind: metric, dataset: sends, numerator: sum(ok), denominator: count,
   {LAST_HOUR}, thresholds: {{critical: "< 90%"}}}}
- {{id: rate_pass, kind: metric, dataset: sends, numerator: sum(ok), denominator: count,
   {LAST_HOUR}, on_empty: pass, thresholds: {{critical: "< 90%"}}}}
- {{id: cost, kind: metric, dataset: sends, value: avg(cost), {LAST_HOUR}, on_empty: info,
   thresholds: {{warn: "> 3"}}}}
- {{id: per_channel, kind: metric, dataset: sends, value: count, by: [channel],
   expect_groups: [EMAIL, SMS], {LAST_HOUR}, thresholds: {{critical: "< 1"}}}}
- {{id: channels_seen, kind: metric, dataset: sends, value: count, by: [channel],
   {LAST_HOUR}, thresholds: {{critical: "< 1"}}}}
- {{id: share, kind: metric, dataset: sends, share: count, by: [channel],
   expect_groups: [EMAIL, SMS], {LAST_HOUR}, thresholds: {{warn: "< 10%"}}}}
- {{id: delivered, kind: metric, dataset: sends, numerator: sum(ok), denominator: sum(sent),
   by: [channel], thresholds: {{critical: "< 10%"}}}}
- {{id: sms_delivered, kind: metric, dataset: sends, numerator: sum(ok),
   denominator: sum(sent), where: {{channel: SMS}}, thresholds: {{critical: "< 10%"}}}}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_window_counts_zero_and_a_ratio_has_no_value(db, engine):
    db.tables(sends=QUIET_HOUR)
    result = measure(db, EMPTY, utc("2026-01-30 10:00:05"), engine)
    hour = "[2026-01-30 09:00, 10:00) UTC"

    def shown(check_id):
        check = result.check(check_id)
        return (check.status, check.value, check.violation_count,
                [tuple(row.values()) for row in check.sample], check.notes)

    # A count and a sum over no rows are 0, judged like any value.
    assert shown("count") == ("fail", 0, 1, [("all rows", "0", "critical", "< 1")], [])
    assert shown("sum") == ("fail", 0, 1, [("all rows", "0", "critical", "< 1")], [])
    assert shown("per_channel") == ("fail", None, 2, [("EMAIL", "0", "critical", "< 1"),
                                                      ("SMS", "0", "critical", "< 1")], [])
    # A ratio, an average and a share have no value: on_empty, with the reason.
    assert shown("rate") == ("warn", None, 1, [
        ("all rows", None, "warning", f"no value: no rows in {hour}")], [
        f"no value: no rows in {hour}; on_empty: warn"])
    assert shown("rate_pass") == ("pass", None, 0, [], [
        f"no value: no rows in {hour}; on_empty: pass"])
    assert shown("cost") == ("info", None, 1, [
        ("all rows", None, "info", f"no value: no rows in {hour}")], [
        f"no value: no rows in {hour}; on_empty: info"])
    assert shown("share") == ("warn", None, 2, [
        ("EMAIL", None, "warning", f"no value: no rows in {hour}"),
        ("SMS", None, "warning", f"no value: no rows in {hour}")], [
        f"no value for 2 group(s) (EMAIL, SMS): no rows in {hour}; on_empty: warn"])
    # Grouped, with no group to measure at all: the whole check has no value.
    assert shown("channels_seen") == ("warn", None, 0, [], [
        f"no value: no rows in {hour}, so no group to measure; on_empty: warn"])
    # Rows, but nothing sent: denominator 0.
    assert shown("delivered") == ("warn", None, 1, [
        ("SMS", None, "warning", "no value: denominator 0")], [
        "no value for 1 group(s) (SMS): denominator 0; on_empty: warn"])
    assert result.check("delivered").value_text == "EMAIL: 50.00%, SMS: no value"
    assert shown("sms_delivered") == ("warn", None, 1, [
        ("all rows", None, "warning", "no value: denominator 0")], [
        "no value: denominator 0; on_empty: warn"])


# ---------------------------------------------------------------------------
# Baselines by time, without breaches.


@pytest.fixture
def store(tmp_path):
    from integrity.history import History

    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    yield history
    history.dispose()


def night(db: Database, store, checks: str, now: str, rows: int, engine: str,
          cost: float = 1.0, target: str = "production"):
    """A run at `now` over `rows` calls made at noon the day before, recorded in `store`."""
    moment = utc(now)
    noon = (moment - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    calls = [(i, cost, noon.strftime("%Y-%m-%d %H:%M:%S")) for i in range(rows)]
    db.tables(calls=pd.DataFrame(calls, columns=["id", "cost", "at"]))
    text = f"target: {target}\n" + audit_text(db.url, "calls: {table: calls, key: id}", checks)
    result = run_audit(parse_audit(text, file="nightly.yml"), now=moment, engine=engine,
                       history=store, sample_limit=0)
    assert result.errors == []
    store.apply(result)
    return result


SPIKE = """\
- {id: cost, kind: metric, dataset: calls, value: avg(cost), time: at, window: 1d,
   align: day, thresholds: {critical: "> 2x baseline"},
   baseline: {window: 7d, statistic: mean, min_runs: 2}}
- {id: cost_all_values, kind: metric, dataset: calls, value: avg(cost), time: at,
   window: 1d, align: day, thresholds: {critical: "> 2x baseline"},
   baseline: {window: 7d, statistic: mean, min_runs: 2, exclude: none}}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_spike_does_not_raise_its_own_baseline(db, store, engine):
    """After a day at 3x the usual cost, 2.97x still fails: the spike breached a bound in
    its own run and is left out. Kept in (`exclude: none`), it lifts the mean to 1.5."""
    def statuses(now, cost):
        result = night(db, store, SPIKE, now, 2, engine, cost)
        return [(check.status, check.value) for check in result.checks]

    assert statuses("2026-01-21 00:00:05", 1.0) == [("info", 1.0)] * 2  # no history yet
    assert statuses("2026-01-22 00:00:05", 1.0) == [("info", 1.0)] * 2  # 1 run < min_runs
    assert statuses("2026-01-23 00:00:05", 1.0) == [("pass", 1.0)] * 2
    assert statuses("2026-01-24 00:00:05", 3.0) == [("fail", 3.0)] * 2  # > 2x 1.0
    after = night(db, store, SPIKE, "2026-01-25 00:00:05", 2, engine, 2.97)
    cost, kept = after.check("cost"), after.check("cost_all_values")
    assert (cost.status, cost.notes) == ("fail", [
        "baseline 1 = mean of 3 runs 2026-01-21..2026-01-23 (1 breaching run left out)"])
    assert [(row["value"], row["baseline"], row["bound"]) for row in cost.sample] == [
        ("2.97", "1", "> 2x baseline")]
    assert (kept.status, kept.notes) == ("pass", [
        "baseline 1.5 = mean of 4 runs 2026-01-21..2026-01-24"])


WINDOWED = """\
- {id: calls, kind: metric, dataset: calls, value: count, time: at, window: 1d, align: day,
   thresholds: {warn: "< 50% of baseline"},
   baseline: {window: 3d, statistic: median, min_runs: 1}}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_baseline_window_reads_its_span_of_this_target_only(sqlite_db, store, engine):
    """The baseline of the run at 2026-01-25 00:00:05 is the runs of production in
    [2026-01-22 00:00:05, now): not the older run (30), not staging's (2000). A day without
    a single call counts 0, and 0 is under 50% of the median 22."""
    for now, rows, target, status in [
            ("2026-01-20 00:00:05", 30, "production", "info"),  # too little history
            ("2026-01-22 00:00:05", 20, "production", "pass"),  # the first one in
            ("2026-01-23 00:00:05", 24, "production", "pass"),
            ("2026-01-24 00:00:05", 22, "production", "pass"),
            ("2026-01-24 12:00:00", 2000, "staging", "info")]:
        assert night(sqlite_db, store, WINDOWED, now, rows, engine, target=target
                     ).check("calls").status == status, now
    quiet = night(sqlite_db, store, WINDOWED, "2026-01-25 00:00:05", 0, engine).check("calls")
    assert (quiet.status, quiet.value, quiet.notes) == ("warn", 0, [
        "baseline 22 = median of 3 runs 2026-01-22..2026-01-24"])
    assert [(row["value"], row["baseline"], row["bound"]) for row in quiet.sample] == [
        ("0", "22", "< 50% of baseline")]
