"""Run history: lifecycle across runs, baselines, accepted violations, a store that holds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import mysql

from conftest import NOW, audit_text, database_url
from integrity.cli import main
from integrity.audit import parse_audit
from integrity.gate import exit_code
from integrity.history import SCHEMA_VERSION, History, HistoryError, fingerprint, meta_table
from integrity.notify import Step
from integrity.runner import run_audit

DATASETS = """\
leads: {table: leads, key: id, tenant_column: tenantId, mask: [email]}
companies: {table: companies, key: id}
"""
CHECKS = """\
- {id: dupes, kind: duplicates, dataset: leads, columns: [tenantId, email]}
- {id: orphans, kind: orphans, dataset: leads, reference: companyId, parent: companies}
"""


def leads(*rows):
    return [{"id": i, "tenantId": t, "email": e, "companyId": c} for i, t, e, c in rows]


@pytest.fixture
def store(tmp_path):
    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    yield history
    history.dispose()


def audited(db, store, now, checks=CHECKS, datasets=DATASETS):
    audit = parse_audit(audit_text(db.url, datasets, checks), file="lifecycle.yml")
    result = run_audit(audit, now=now, history=store, sample_limit=0)
    store.apply(result)
    return result


def states(result, check_id):
    check = result.check(check_id)
    life = check.lifecycle
    by_print = {fingerprint(check_id, key): key for key in check.violation_keys}
    return {"new": {by_print[p] for p in life.new},
            "persisting": {by_print[p]: runs for p, (_, runs) in life.persisting.items()},
            "resolved": {tuple(json.loads(key)) for key in life.resolved.values()}}


def test_new_persisting_and_resolved_across_three_runs(sqlite_db, store):
    companies = [{"id": 1}, {"id": 2}]
    # Night 1: leads 2 and 4 duplicate 1 and 3; lead 5 points to a missing company.
    sqlite_db.tables(companies=companies, leads=leads(
        (1, "t", "a@x", 1), (2, "t", "a@x", 1), (3, "t", "b@x", 2), (4, "t", "b@x", 2),
        (5, "t", "c@x", 9)))
    first = audited(sqlite_db, store, NOW - timedelta(days=2))
    assert states(first, "dupes") == {"new": {(2,), (4,)}, "persisting": {}, "resolved": set()}
    assert first.check("dupes").lifecycle.previous_run is None
    # Night 2: lead 4 fixed, lead 6 duplicates lead 1 too; lead 5 still orphaned.
    sqlite_db.tables(companies=companies, leads=leads(
        (1, "t", "a@x", 1), (2, "t", "a@x", 1), (3, "t", "b@x", 2), (4, "t", "d@x", 2),
        (5, "t", "c@x", 9), (6, "t", "a@x", 1)))
    second = audited(sqlite_db, store, NOW - timedelta(days=1))
    assert states(second, "dupes") == {"new": {(6,)}, "persisting": {(2,): 2},
                                       "resolved": {("4",)}}
    assert states(second, "orphans") == {"new": set(), "persisting": {(5,): 2},
                                         "resolved": set()}
    first_seen = second.check("orphans").lifecycle.persisting[fingerprint("orphans", (5,))][0]
    assert first_seen == (NOW - timedelta(days=2)).replace(tzinfo=None)
    # Night 3: everything fixed but lead 6.
    sqlite_db.tables(companies=companies, leads=leads(
        (1, "t", "a@x", 1), (2, "t", "e@x", 1), (3, "t", "b@x", 2), (4, "t", "d@x", 2),
        (5, "t", "c@x", 2), (6, "t", "a@x", 1)))
    third = audited(sqlite_db, store, NOW)
    assert states(third, "dupes") == {"new": set(), "persisting": {(6,): 2},
                                      "resolved": {("2",)}}
    assert states(third, "orphans") == {"new": set(), "persisting": {}, "resolved": {("5",)}}
    assert [count for _, _, count in third.check("dupes").trend] == [2, 2, 1]
    # The report leads with it, masks e-mails, and says which rows are new.
    from integrity.report.json_report import document

    report = document(third)
    assert report["summary"]["resolved"] == 2
    dupes = next(c for c in report["checks"] if c["id"] == "dupes")
    assert dupes["lifecycle"] == {"previous_run": second.run_id, "new": 0, "persisting": 1,
                                  "resolved": 1, "accepted": 0}
    assert [(row["id"], row["email"], row.get("_state")) for row in dupes["violations"]] == [
        (1, "a•••@x", None), (6, "a•••@x", f"since {NOW - timedelta(days=1):%Y-%m-%d %H:%M} "
                                           f"(2 runs)")]


def test_an_errored_check_does_not_reset_the_lifecycle(sqlite_db, store):
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    audited(sqlite_db, store, NOW - timedelta(days=2))
    sqlite_db.tables(companies=[{"id": 1}], leads=[{"id": 1, "tenantId": "t"}])  # no columns
    broken = audited(sqlite_db, store, NOW - timedelta(days=1))
    assert broken.check("orphans").status == "error"
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    again = audited(sqlite_db, store, NOW)
    assert states(again, "orphans") == {"new": set(), "persisting": {(1,): 2}, "resolved": set()}


METRIC = """\
- id: daily_quotes
  kind: metric
  dataset: sends
  value: count
  time: at
  window: 1d
  thresholds: {warn: "< 50% of baseline", critical: "< 25% of baseline"}
  baseline: {runs: 7, statistic: median, min_runs: 3}
- id: cost_spike
  kind: metric
  dataset: sends
  value: avg(cost)
  time: at
  window: 1d
  thresholds: {warn: "> 2x baseline"}
  baseline: {runs: 7, statistic: mean, min_runs: 2, insufficient: warning}
"""


def test_baselines_come_from_earlier_runs(sqlite_db, store):
    def night(day: int, sends: int, cost: float):
        moment = NOW - timedelta(days=10 - day)
        rows = [{"id": i, "cost": cost, "at": (moment - timedelta(hours=1)).strftime(
            "%Y-%m-%d %H:%M:%S")} for i in range(sends)]
        sqlite_db.tables(sends=rows)
        return audited(sqlite_db, store, moment, METRIC, "sends: {table: sends, key: id}")

    first = night(1, 100, 1.0)
    daily, cost = first.check("daily_quotes"), first.check("cost_spike")
    assert (daily.status, cost.status) == ("info", "warn")  # no history yet: said, not passed
    assert [(row["level"], row["bound"]) for row in cost.sample] == [
        ("warning", "baseline: too little history")]
    assert any("too little history" in note for note in daily.notes)
    # cost_spike needs 2 earlier runs: one is not enough, and it says so as a warning.
    assert [(c.status, c.value) for c in (night(2, 110, 1.0).checks)] == [("info", 110),
                                                                          ("warn", 1.0)]
    third = night(3, 90, 1.1)
    assert [c.status for c in third.checks] == ["info", "pass"]      # 2 earlier runs < 3
    assert night(4, 60, 1.0).check("daily_quotes").status == "pass"   # median 100: 60 is fine
    dropped = night(5, 40, 1.0).check("daily_quotes")                # median(100,110,90,60)=95
    assert (dropped.status, dropped.sample[0]["baseline"]) == ("warn", "95")
    # Night 5's 40 breached a bound: left out, the median stays 95, and 20 < 25% of it.
    fallen = night(6, 20, 1.0).check("daily_quotes")
    assert (fallen.status, fallen.notes) == ("fail", [
        "baseline 95 = median of 4 runs 2026-01-21..2026-01-24 (1 breaching run left out)"])
    spike = night(7, 80, 2.5).check("cost_spike")                     # mean of 1.0…1.1 ≈ 1.02
    assert [(row["level"], row["bound"]) for row in spike.sample] == [("warning", "> 2x baseline")]


def test_accepted_violations_pass_the_gate_until_they_expire(sqlite_db, store, tmp_path):
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9), (2, "t", "b@x", 8)))
    store.accept("lifecycle", "orphans", [["1"]], "TICKET-12: import bug", date(2026, 2, 10))
    partly = audited(sqlite_db, store, NOW)
    orphans = partly.check("orphans")
    assert orphans.status == "fail"
    assert "1 of 2 violation(s) accepted; 1 open" in orphans.notes
    store.accept("lifecycle", "orphans", [["2"]], "TICKET-13", date(2026, 2, 1))
    fully = audited(sqlite_db, store, NOW)
    orphans = fully.check("orphans")
    assert (orphans.status, orphans.status_before_acceptance) == ("pass", "fail")
    assert exit_code(fully) == 0
    from integrity.report.json_report import document

    rows = next(c for c in document(fully)["checks"] if c["id"] == "orphans")["violations"]
    assert [row["_state"] for row in rows] == ["accepted until 2026-02-10",
                                               "accepted until 2026-02-01"]
    expired = audited(sqlite_db, store, datetime(2026, 2, 5, tzinfo=timezone.utc))
    orphans = expired.check("orphans")
    assert orphans.status == "fail"
    assert "1 acceptance(s) expired (last on 2026-02-01)" in orphans.notes


def test_accept_and_history_commands(sqlite_db, tmp_path):
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    audit = tmp_path / "lifecycle.yml"
    audit.write_text(audit_text(sqlite_db.url, DATASETS, CHECKS))
    history = f"sqlite:///{tmp_path / 'h.sqlite'}"
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    assert cli("run", audit, "-o", tmp_path / "a", "--history", history).exit_code == 1
    accepted = cli("accept", audit, "orphans", "1", "--reason", "known", "--until", "2099-01-01",
                   "--history", history)
    assert accepted.output == "accepted 1 violation(s) of orphans until 2099-01-01: known\n"
    assert cli("run", audit, "-o", tmp_path / "b", "--history", history).exit_code == 0
    listed = cli("history", "list", "--history", history).output.splitlines()
    assert [line.split()[0] for line in listed] == ["#2", "#1"]
    assert "ok           exit 0" in listed[0] and "violations   exit 1" in listed[1]
    diff = cli("history", "diff", "1", "2", "--history", history).output
    assert diff == "~ orphans: fail -> pass, violations 1 -> 1 (+0 new, -0 resolved)\n"
    shown = cli("history", "show", "2", "--history", history).output
    assert "  PASS  orphans  1" in shown
    missing = cli("history", "show", "9", "--history", history)
    assert missing.exit_code == 2 and "no run 9" in missing.output
    unknown = cli("accept", audit, "orphan", "--reason", "x", "--until", "2099-01-01",
                  "--history", history)
    assert unknown.exit_code == 2 and "no check 'orphan'" in unknown.output
    typo = cli("accept", audit, "orphans", "1", "99", "--reason", "x", "--until", "2099-01-01",
               "--history", history)
    assert typo.exit_code == 0  # recorded all the same: it may be about to appear
    assert ("integrity: warning: 1 of these keys match no violation of orphans in its last "
            "recorded run (99)") in typo.output


def test_two_runs_writing_at_once_are_both_recorded(sqlite_db, tmp_path):
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    audit = tmp_path / "lifecycle.yml"
    audit.write_text(audit_text(sqlite_db.url, DATASETS, CHECKS))
    history = tmp_path / "shared.sqlite"
    # --no-lock: the runs overlap on purpose, to test the history store itself.
    command = [sys.executable, "-m", "integrity", "run", str(audit), "--no-lock", "--history",
               f"sqlite:///{history}"]
    processes = [subprocess.Popen(command + ["-o", str(tmp_path / f"out{n}")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for n in range(4)]
    finished = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [1, 1, 1, 1], finished
    connection = sqlite3.connect(history)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert connection.execute("SELECT count(*) FROM integrity_runs").fetchone() == (4,)
    assert connection.execute("SELECT count(*) FROM integrity_check_results").fetchone() == (8,)
    assert connection.execute("SELECT value FROM integrity_meta").fetchall() == [
        (str(SCHEMA_VERSION),)]


def test_schema_versions(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    store = History(url)
    store.ensure()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(meta_table.update().values(value="99"))
    engine.dispose()
    newer = History(url)
    with pytest.raises(HistoryError) as refused:
        newer.ensure()
    assert f"schema version 99, newer than this integrity ({SCHEMA_VERSION})" in str(
        refused.value)
    for handle in (store, newer):
        handle.dispose()


def test_history_on_postgresql_in_its_own_schema(servers, sqlite_db):
    url = servers.database("postgresql")
    store = History(url)
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    first = audited(sqlite_db, store, NOW - timedelta(days=1))
    second = audited(sqlite_db, store, NOW)
    assert (first.run_id, second.run_id) == (1, 2)
    assert states(second, "orphans")["persisting"] == {(1,): 2}
    store.dispose()


# ---------------------------------------------------------------------------
# The history on MySQL/MariaDB: keys within InnoDB's limit, exact, and made all or nothing.

LONG_ID = "orphans_" + "Long" * 98  # 400 characters: the longest id a history column holds
STORE_CHECKS = CHECKS + f"""\
- {{id: Orphans, kind: orphans, dataset: leads, reference: companyId, parent: companies}}
- {{id: {LONG_ID}, kind: orphans, dataset: leads, reference: companyId, parent: companies}}
- id: cost
  kind: metric
  dataset: sends
  value: avg(cost)
  by: [grp]
  thresholds: {{warn: "> 2x baseline"}}
  baseline: {{runs: 7, statistic: mean, min_runs: 1}}
"""
STORE_DATASETS = DATASETS + "sends: {table: sends, key: id}\n"


def sends(**costs):
    return [{"id": i, "grp": group, "cost": cost} for i, (group, cost) in
            enumerate(costs.items())]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_store_round_trip(kind, servers, sqlite_db, tmp_path):
    """The same two runs give the same history on every backend: check ids and groups that
    differ only in case or a trailing space stay apart, times keep their microseconds,
    values their double precision."""
    store = History(database_url(kind, servers, tmp_path))
    companies = [{"id": 1}, {"id": 2}]
    first_at = NOW - timedelta(days=1, microseconds=123_457)
    sqlite_db.tables(companies=companies, leads=leads(
        (1, "t", "a@x", 1), (2, "t", "a@x", 1), (3, "t", "b@x", 2), (4, "t", "b@x", 2),
        (5, "t", "c@x", 9)), sends=sends(**{"a": 1_234_567.891, "A": 2.2, "a ": 3.3}))
    first = audited(sqlite_db, store, first_at, STORE_CHECKS, STORE_DATASETS)
    assert states(first, "dupes") == {"new": {(2,), (4,)}, "persisting": {}, "resolved": set()}
    assert states(first, LONG_ID) == {"new": {(5,)}, "persisting": {}, "resolved": set()}
    assert store.accept("lifecycle", "orphans", [["5"]], "T-7", date(2026, 2, 10)) == (1, [])
    sqlite_db.tables(companies=companies, leads=leads(
        (1, "t", "a@x", 1), (2, "t", "a@x", 1), (3, "t", "b@x", 2), (4, "t", "d@x", 2),
        (5, "t", "c@x", 9), (6, "t", "a@x", 1)),
        sends=sends(**{"a": 1_234_567.891, "A": 5.0, "a ": 3.3}))
    second = audited(sqlite_db, store, NOW, STORE_CHECKS, STORE_DATASETS)
    assert states(second, "dupes") == {"new": {(6,)}, "persisting": {(2,): 2},
                                       "resolved": {("4",)}}
    assert second.check("dupes").lifecycle.persisting[fingerprint("dupes", (2,))][0] == (
        first_at.replace(tzinfo=None))
    assert [count for _, _, count in second.check("dupes").trend] == [2, 2]
    # The acceptance covers `orphans`, not `Orphans` nor the long id.
    assert [(second.check(c).status, states(second, c)["persisting"]) for c in
            ("orphans", "Orphans", LONG_ID)] == [("pass", {(5,): 2}), ("fail", {(5,): 2}),
                                                 ("fail", {(5,): 2})]
    # Baselines per group, exactly: only "A" more than doubled its own.
    cost = second.check("cost")
    assert (cost.status, set(cost.violation_keys)) == ("warn", {("A",)})
    assert [store.trailing_values("lifecycle", second.target, "cost", group, before=NOW,
                                  runs_back=7) for group in ("a", "A", "a ", "a  ")] == [
        [(1_234_567.891, first_at, False)], [(2.2, first_at, False)], [(3.3, first_at, False)],
        []]
    # What was recorded reads back as written.
    head, results = store.run(second.run_id)
    assert head["audit"] == "lifecycle" and head["data_as_of"] == NOW.replace(tzinfo=None)
    assert [row["check_id"] for row in results] == sorted(
        ["Orphans", "cost", "dupes", LONG_ID, "orphans"])
    assert next(row for row in results if row["check_id"] == LONG_ID)["fingerprints"] == {
        fingerprint(LONG_ID, ("5",))}
    assert [run["id"] for run in store.list_runs("lifecycle")] == [second.run_id, first.run_id]
    # Alert state: per check (exactly, as written), replaced on each step, per target.
    sent = NOW + timedelta(microseconds=654_321)
    opened = {"open": True, "announced": True, "pending": False, "opened_at": sent,
              "last_sent_at": sent, "resolved_at": None, "last_status": "fail",
              "last_value": "1 violation", "reminders": 0, "acknowledged_at": None,
              "ack_until": None, "ack_note": None}
    resolved = {**opened, "open": False, "resolved_at": sent + timedelta(hours=1),
                "last_sent_at": sent + timedelta(hours=1), "last_status": "pass"}

    def record(check_id, state, at=sent):
        store.record_alerts("lifecycle", second.target, "slack:0123456789ab", "slack",
                            second.run_id, [Step(check_id, "fired", None, state, state)],
                            None, at)

    for check_id in ("Orphans", LONG_ID, "orphans"):
        record(check_id, opened)
    record("Orphans", resolved, at=sent + timedelta(hours=1))
    assert store.alert_state("lifecycle", second.target, "slack:0123456789ab") == {
        "Orphans": resolved, LONG_ID: opened, "orphans": opened}
    assert store.alert_state("lifecycle", second.target, "SLACK:0123456789AB") == {}
    assert store.alert_state("lifecycle", "another-target", "slack:0123456789ab") == {}
    store.dispose()


def integrity_tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sorted(name for name in sa.inspect(engine).get_table_names()
                      if name.startswith("integrity_"))
    finally:
        engine.dispose()


ALL_TABLES = sorted(meta_table.metadata.tables)


def test_mariadb_ensure_is_idempotent_and_takes_turns(servers, sqlite_db):
    url = servers.database("mariadb")
    starters = [History(url) for _ in range(4)]
    failures = []
    together = threading.Barrier(len(starters))

    def start(store):
        try:
            together.wait(timeout=60)
            store.ensure()
        except HistoryError as error:
            failures.append(error)

    threads = [threading.Thread(target=start, args=(store,)) for store in starters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == [] and integrity_tables(url) == ALL_TABLES
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    audited(sqlite_db, starters[0], NOW)
    for _ in range(2):
        again = History(url)
        again.ensure()
        again.dispose()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.select(meta_table)).all() == [
            ("schema_version", str(SCHEMA_VERSION))]
        assert connection.exec_driver_sql("SELECT count(*) FROM integrity_runs").scalar() == 1
    engine.dispose()
    assert integrity_tables(url) == ALL_TABLES
    for store in starters:
        store.dispose()


@pytest.mark.parametrize("table, moment", [("integrity_check_values", "before_create"),
                                           ("integrity_violations", "after_create")])
def test_a_mariadb_store_is_made_whole_or_not_at_all(servers, table, moment):
    """CREATE TABLE commits at once on MySQL/MariaDB: a creation failing half-way (here the
    server refusing a statement run as one table is made, or once the last is) takes back
    every table it made."""
    url = servers.database("mariadb")
    target = meta_table.metadata.tables[table]

    def refused(_table, connection, **_):
        connection.exec_driver_sql("SELECT * FROM integrity_no_such_table")

    sa.event.listen(target, moment, refused)
    try:
        store = History(url)
        with pytest.raises(HistoryError) as failed:
            store.ensure()
    finally:
        sa.event.remove(target, moment, refused)
    assert "cannot prepare the store" in str(failed.value)
    assert "integrity_no_such_table" in str(failed.value)
    assert integrity_tables(url) == []
    store.ensure()  # the same store, once the server agrees
    assert integrity_tables(url) == ALL_TABLES
    store.dispose()


def test_an_unfinished_mariadb_store_is_made_again(servers):
    """Tables without a schema version are a creation that never finished (killed, or by an
    integrity that failed on the key length): empty, they are made again; with rows, the
    store is refused and left as it is."""
    url = servers.database("mariadb")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE integrity_meta (`key` VARCHAR(40) PRIMARY KEY, "
                                   "value VARCHAR(200) NOT NULL)")
        connection.exec_driver_sql("CREATE TABLE integrity_runs (id INTEGER PRIMARY KEY, "
                                   "audit VARCHAR(200) NOT NULL)")
    store = History(url)
    store.ensure()
    assert integrity_tables(url) == ALL_TABLES
    audit_type = {column["name"]: column["type"] for column in
                  sa.inspect(engine).get_columns("integrity_runs")}["audit"]
    assert isinstance(audit_type, mysql.VARBINARY)
    store.dispose()
    engine.dispose()

    url = servers.database("mariadb")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE integrity_accepted (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql("INSERT INTO integrity_accepted VALUES (1)")
    store = History(url)
    with pytest.raises(HistoryError) as refused:
        store.ensure()
    assert "rows (integrity_accepted) but no schema version" in str(refused.value)
    assert integrity_tables(url) == ["integrity_accepted"]
    store.dispose()
    engine.dispose()


def test_a_value_longer_than_its_mariadb_column_is_refused_not_cut(servers):
    store = History(servers.database("mariadb"))
    with pytest.raises(HistoryError) as refused:
        store.accept("lifecycle", LONG_ID + "x", None, "r", date(2026, 2, 1))
    assert "a value of 401 bytes, longer than the 400 this history column holds" in str(
        refused.value)
    with store.engine.connect() as connection:
        assert store.acceptances(connection, "lifecycle") == []
    store.dispose()


def test_one_audit_on_two_databases_keeps_two_lifecycles(tmp_path):
    """The same audit file against staging and production, one history store: each
    database's violations are new, persisting and resolved against its own runs only."""
    from click.testing import CliRunner

    from integrity.cli import main

    staging, production = tmp_path / "staging.sqlite", tmp_path / "production.sqlite"
    for path, rows in ((staging, [(1, "a@x"), (2, "a@x")]),
                       (production, [(1, "b@x"), (2, "b@x"), (3, "b@x")])):
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE leads (id int, email text)")
            connection.exec_driver_sql("INSERT INTO leads VALUES " + ", ".join(
                f"({key}, '{email}')" for key, email in rows))
        engine.dispose()
    audit = tmp_path / "leads.yml"
    audit.write_text("connection: {url: '${DB}'}\ndatasets: {leads: {table: leads, key: id}}\n"
                     "checks: [{id: dupes, kind: duplicates, dataset: leads, columns: email}]\n")
    history = f"sqlite:///{tmp_path / 'history.sqlite'}"

    def run(database):
        result = CliRunner().invoke(main, [
            "run", str(audit), "-o", str(tmp_path / "out"), "--no-lock", "--history", history,
            "--log-format", "json"], env={"DB": f"sqlite:///{database}"})
        document = json.loads((tmp_path / "out" / "report.json").read_text())
        [check] = document["checks"]
        return result.exit_code, document["run"]["target"], check["lifecycle"]

    first = run(staging)
    second = run(production)
    third = run(staging)
    assert [(code, target) for code, target, _ in (first, second, third)] == [
        (1, f"sqlite:{staging}"), (1, f"sqlite:{production}"), (1, f"sqlite:{staging}")]
    counts = [(life["new"], life["persisting"], life["resolved"])
              for _, _, life in (first, second, third)]
    assert counts == [(1, 0, 0), (2, 0, 0), (0, 1, 0)]  # production never touched staging's
    listing = CliRunner().invoke(main, ["history", "list", "--history", history]).output
    assert [line.rsplit(" on ", 1)[1] for line in listing.splitlines()] == [
        f"sqlite:{staging}", f"sqlite:{production}", f"sqlite:{staging}"]
    refused = CliRunner().invoke(main, ["history", "diff", "1", "2", "--history", history])
    assert refused.exit_code == 2
    assert "runs of different audits or targets are never compared" in refused.output


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_version_2_store_upgrades_and_keeps_its_runs(kind, servers, tmp_path, sqlite_db):
    """Runs recorded before targets existed stay readable (target ''); the store is
    upgraded in place, and new runs carry their target."""
    from conftest import database_url

    url = database_url(kind, servers, tmp_path) if kind != "sqlite" else \
        f"sqlite:///{tmp_path / 'old.sqlite'}"
    sqlite_db.tables(companies=[{"id": 1}], leads=leads((1, "t", "a@x", 9)))
    store = History(url)
    audited(sqlite_db, store, NOW - timedelta(days=1))
    store.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # back to version 2, as an older integrity left it
        connection.exec_driver_sql("DROP INDEX ix_runs_series")
        connection.exec_driver_sql("ALTER TABLE integrity_runs DROP COLUMN target")
        connection.exec_driver_sql("UPDATE integrity_meta SET value = '2'")
    engine.dispose()
    store = History(url)
    second = audited(sqlite_db, store, NOW)
    runs_ = store.list_runs("lifecycle")
    assert [run["target"] for run in runs_] == [second.target, ""]
    assert second.target.startswith("sqlite:/")
    store.dispose()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.select(meta_table.c.value)).scalar() == str(SCHEMA_VERSION)
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_version_3_store_upgrades_and_its_values_count_as_not_breached(kind, servers,
                                                                        tmp_path, sqlite_db):
    """Values recorded before breaches were say nothing (NULL): they count as not breached,
    so a store upgraded in place keeps its baselines; new values say whether they breached."""
    from conftest import database_url

    url = database_url(kind, servers, tmp_path)
    cost = STORE_CHECKS[STORE_CHECKS.index("- id: cost"):]  # the metric alone
    sqlite_db.tables(sends=sends(a=1.0))
    store = History(url)
    first = audited(sqlite_db, store, NOW - timedelta(days=1), cost, STORE_DATASETS)
    store.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # back to version 3, as an older integrity left it
        connection.exec_driver_sql("ALTER TABLE integrity_check_values DROP COLUMN breached")
        connection.exec_driver_sql("UPDATE integrity_meta SET value = '3'")
    engine.dispose()
    sqlite_db.tables(sends=sends(a=5.0))  # more than 2x the old value: a breach
    store = History(url)
    second = audited(sqlite_db, store, NOW, cost, STORE_DATASETS)
    assert (second.check("cost").status, second.check("cost").notes) == (
        "warn", ["baseline for a 1 = mean of 1 run 2026-01-29"])
    assert store.trailing_values("lifecycle", second.target, "cost", "a",
                                 before=NOW + timedelta(days=1)) == [
        (5.0, NOW, True), (1.0, NOW - timedelta(days=1), False)]
    store.dispose()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.select(meta_table.c.value)).scalar() == str(SCHEMA_VERSION)
        assert connection.exec_driver_sql(
            "SELECT run_id, breached FROM integrity_check_values ORDER BY run_id").all() == [
            (first.run_id, None), (second.run_id, True)]
    engine.dispose()
