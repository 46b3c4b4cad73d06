"""Fail closed: a fault at any stage of a run is exit 2 — never 1, never 0 — with one line
on stderr, the run recorded as an audit error and every report that can be written.

Faults are injected where each stage does its work (config, connect, extract, check,
history, report, notify), as the unexpected exceptions a driver, a library or a bug
would raise, not as integrity's own errors.
"""

from __future__ import annotations

import contextlib
import json
import textwrap

import pytest
from click.testing import CliRunner

from integrity.cli import main
from integrity.gate import exit_code
from integrity.history import History


class Injected(RuntimeError):
    pass


def _raise(*_args, **_kwargs):
    raise Injected("injected fault")


STAGES = {
    # stage: (what to break, is the run recorded in history?)
    "config": ("integrity.config._load_yaml", False),
    "connect": ("integrity.sources.open_source", True),
    "extract": ("integrity.sources.read_frame", True),
    "check": ("integrity.checks.duplicates.Duplicates.measure", True),
    "history": ("integrity.history.History.apply", False),
    "report": ("integrity.report.html.render", True),
    "notify": ("integrity.notify.deliver", True),
}


@pytest.fixture
def audit(sqlite_db, tmp_path):
    sqlite_db.tables(t=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    path = tmp_path / "audit.yml"
    # engine: pandas — the faults below are injected into the pandas engine's reading and
    # measuring (the SQL engine's own faults are in test_attacks and test_databases).
    path.write_text(textwrap.dedent(f"""\
        engine: pandas
        connection: {{url: "{sqlite_db.url}"}}
        datasets: {{t: {{table: t, key: id}}}}
        checks:
          - {{id: dupes, kind: duplicates, dataset: t, columns: email, severity: info}}
        notify:
          - {{channel: webhook, url: "${{HOOK}}"}}
        """))
    return path


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_fault_at_any_stage_is_exit_2_and_recorded(stage, audit, tmp_path, monkeypatch):
    target, recorded = STAGES[stage]
    monkeypatch.setattr(target, _raise)
    history = f"sqlite:///{tmp_path / 'history.sqlite'}"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["run", str(audit), "-o", str(out), "--no-lock", "--history", history],
        env={"HOOK": "http://127.0.0.1:9/hook"})
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("integrity: error")]
    assert len(errors) == 1 and "Injected: injected fault" in errors[0], result.output
    assert "Traceback" not in result.output
    runs = History(history).list_runs()
    if recorded:
        assert [(run["exit_code"], run["outcome"]) for run in runs] == [(2, "audit_error")]
        _, checks = History(history).run(runs[0]["id"])
        said = [runs[0]["errors"], *(check["error"] or "" for check in checks)]
        assert any("Injected: injected fault" in text for text in said), said
        report = json.loads((out / "report.json").read_text())
        assert report["gate"]["exit_code"] == 2
        assert "Injected: injected fault" in json.dumps(report)
    else:
        assert runs == []
    assert not list(out.glob(".*.tmp"))  # no half-written report left behind


def test_memory_running_out_while_reading_is_exit_2(audit, tmp_path, monkeypatch):
    def out_of_memory(*_args, **_kwargs):
        raise MemoryError()

    monkeypatch.setattr("integrity.sources.read_frame", out_of_memory)
    result = CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"),
                                       "--no-lock", "--no-history"],
                                env={"HOOK": "http://127.0.0.1:9/hook"})
    assert result.exit_code == 2, result.output
    assert "the run stopped: MemoryError: no message" in result.output


def test_a_crash_outside_a_run_is_exit_2_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr("integrity.checks.CHECKS", None)  # a bug anywhere, e.g. `checks`
    result = CliRunner().invoke(main, ["checks"])
    assert result.exit_code == 2
    assert result.output.startswith("integrity: error: AttributeError: ")
    assert "this is a bug in integrity" in result.output


@pytest.mark.parametrize("value", ["0", "0s", "0m", "0.0h"])
def test_a_zero_timeout_is_refused_not_read_as_no_timeout(value, audit, tmp_path):
    result = CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"),
                                       "--no-history", "--timeout", value],
                                env={"HOOK": "http://127.0.0.1:9/hook"})
    assert result.exit_code == 2
    assert result.output.startswith("integrity: error: --timeout: ")
    assert not (tmp_path / "out" / "report.json").exists()


@contextlib.contextmanager
def _killing(url: str, query: str):
    """While the block runs, terminate the audit's PostgreSQL sessions running a statement
    like `query` (ILIKE pattern); yields the list of sessions terminated."""
    import threading
    import time

    import sqlalchemy as sa

    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    killed: list = []

    def kill() -> None:
        with admin.connect() as connection:
            for _ in range(500):
                killed.extend(connection.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = 'integrity' AND query ILIKE :query "
                    "AND pid <> pg_backend_pid()"), {"query": query}).all())
                if killed:
                    return
                time.sleep(0.02)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        killer.join()
        admin.dispose()


def test_a_connection_killed_mid_run_is_said_once(servers, tmp_path):
    """The database ends the audit's session while a check runs: that check says why, the
    run says 'connection lost' once, the checks after it are not run, exit 2."""
    from conftest import Database, database_url
    from integrity.audit import parse_audit
    from integrity.runner import run_audit

    url = database_url("postgresql", servers, tmp_path)
    Database(url).tables(t=[{"id": 1}, {"id": 2}])
    audit = parse_audit(textwrap.dedent(f"""\
        connection: {{url: "{url}"}}
        datasets: {{t: {{table: t, key: id}}}}
        checks:
          - {{id: first, kind: duplicates, dataset: t, columns: id}}
          - {{id: slow, kind: custom_sql, sql: "SELECT pg_sleep(5)::text AS id"}}
          - {{id: after, kind: duplicates, dataset: t, columns: id}}
        """))
    with _killing(url, "%pg_sleep%"):
        result = run_audit(audit, engine="sql")
    statuses = {check.id: check.status for check in result.checks}
    assert statuses == {"first": "pass", "slow": "error", "after": "error"}
    assert "terminating connection" in result.check("slow").error
    assert result.errors == ["the connection to the audited database was lost during check slow"]
    assert result.check("after").error == (
        "not run: the connection to the audited database was lost during check slow")
    assert exit_code(result) == 2


def test_a_bulk_read_whose_connection_is_killed_errors_its_checks_only(servers, tmp_path):
    """The pandas engine's ADBC reader loses its session mid-read: the checks of that
    dataset error with the reason, the others still run, no traceback, exit 2."""
    from conftest import Database, database_url
    from integrity.audit import parse_audit
    from integrity.runner import run_audit

    url = database_url("postgresql", servers, tmp_path)
    Database(url).execute(
        "CREATE TABLE big AS SELECT i AS id, md5(i::text) AS code "
        "FROM generate_series(1, 1500000) AS i",
        "CREATE TABLE small (id int, code text)", "INSERT INTO small VALUES (1, 'a'), (2, 'a')")
    audit = parse_audit(textwrap.dedent(f"""\
        connection: {{url: "{url}"}}
        datasets: {{big: {{table: big, key: id}}, small: {{table: small, key: id}}}}
        checks:
          - {{id: big_codes, kind: duplicates, dataset: big, columns: code}}
          - {{id: small_codes, kind: duplicates, dataset: small, columns: code}}
        """))
    with _killing(url, "COPY%big%") as killed:
        result = run_audit(audit, engine="pandas")
    assert killed, "the bulk read ended before it could be interrupted"
    big, small = result.check("big_codes"), result.check("small_codes")
    assert big.status == "error" and big.error.startswith("dataset 'big': "), big.error
    assert (small.status, small.violation_count) == ("fail", 1), (small.error, result.errors)
    assert exit_code(result) == 2
