"""Running unattended: exit codes, locks between real processes, timeouts, cron, CI outputs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import audit_text

ROOT = Path(__file__).resolve().parents[1]
SLOW = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {limit}) "
        "SELECT i AS id FROM n WHERE i < 0")


def integrity(*args, cwd=None, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "integrity", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          **kwargs)


@pytest.fixture
def slow_audit(sqlite_db, tmp_path):
    """An audit whose one query keeps SQLite busy for a few seconds."""
    sqlite_db.tables(t=[{"id": 1}])
    path = tmp_path / "slow.yml"
    path.write_text(audit_text(sqlite_db.url, "t: {table: t, key: id}",
                               f"- {{id: slow, kind: custom_sql, sql: "
                               f"\"{SLOW.format(limit=30_000_000)}\"}}"))
    return path


def lock_of(audit: Path) -> Path:
    from integrity.audit import load_audit
    from integrity.operations import lock_path

    loaded = load_audit(audit)
    return lock_path(loaded.file, loaded.connection.url, loaded.name)


def wait_for_lock(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().startswith("pid "):
            return path.read_text()
        time.sleep(0.05)
    raise TimeoutError(path)


def test_an_overlapping_run_exits_3_and_history_stays_intact(slow_audit, tmp_path):
    history = tmp_path / "history.sqlite"
    command = [sys.executable, "-m", "integrity", "run", str(slow_audit), "--history",
               f"sqlite:///{history}"]
    first = subprocess.Popen(command + ["-o", str(tmp_path / "a")], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = wait_for_lock(lock_of(slow_audit))
    assert holder.startswith(f"pid {first.pid} since ")
    elsewhere = tmp_path / "elsewhere"  # the same audit from another folder: the same lock
    elsewhere.mkdir()
    second = integrity("run", slow_audit, "-o", tmp_path / "b", "--history",
                       f"sqlite:///{history}", cwd=elsewhere)
    assert second.returncode == 3
    assert "another run holds the lock" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.wait(timeout=120) == 0
    runs = sqlite3.connect(history).execute("SELECT count(*), min(exit_code) FROM "
                                            "integrity_runs").fetchone()
    assert runs == (1, 0)


def test_a_killed_run_leaves_no_stale_lock(slow_audit, tmp_path):
    victim = subprocess.Popen([sys.executable, "-m", "integrity", "run", str(slow_audit),
                               "-o", str(tmp_path / "a"), "--no-history"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = lock_of(slow_audit)
    wait_for_lock(lock)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert lock.read_text().startswith(f"pid {victim.pid}")  # the file is still there…
    slow_audit.write_text(slow_audit.read_text().replace("30000000", "10"))  # same audit
    after = integrity("run", slow_audit, "-o", tmp_path / "b", "--no-history", cwd=tmp_path)
    assert after.returncode == 0, after.stderr   # …but nobody holds it: the next run goes
    assert lock.read_text().startswith("pid ")


def test_a_run_over_its_timeout_is_an_audit_error_recorded_in_history(slow_audit, tmp_path):
    history = tmp_path / "history.sqlite"
    began = time.monotonic()
    result = integrity("run", slow_audit, "-o", tmp_path / "out", "--timeout", "1s",
                       "--history", f"sqlite:///{history}", cwd=tmp_path)
    assert time.monotonic() - began < 15
    assert result.returncode == 2
    assert "the run exceeded its timeout of 1s" in result.stderr
    outcome = sqlite3.connect(history).execute(
        "SELECT outcome, exit_code, errors FROM integrity_runs").fetchone()
    assert outcome[:2] == ("audit_error", 2) and "timeout" in outcome[2]


def test_a_report_that_cannot_be_written_is_an_audit_error_everywhere(sqlite_db, tmp_path):
    """A passing audit whose summary.md cannot be written: exit 2, and neither the other
    reports nor the history claim the pass."""
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "b"}])
    audit = tmp_path / "a.yml"
    audit.write_text(audit_text(sqlite_db.url, "leads: {table: leads, key: id}",
                                "- {id: dupes, kind: duplicates, dataset: leads, columns: email}"))
    (tmp_path / "out" / "summary.md").mkdir(parents=True)  # a folder where the file goes
    history = tmp_path / "history.sqlite"
    result = integrity("run", audit, "-o", tmp_path / "out", "--history", f"sqlite:///{history}",
                       "--no-lock", cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot write {tmp_path / 'out' / 'summary.md'}: Is a directory" in result.stderr
    gate = json.loads((tmp_path / "out" / "report.json").read_text())["gate"]
    assert (gate["exit_code"], gate["passed"]) == (2, False)
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors")) == ("2", "1")  # dupes + (audit)
    recorded = sqlite3.connect(history).execute(
        "SELECT outcome, exit_code, errors FROM integrity_runs").fetchall()
    assert [row[:2] for row in recorded] == [("audit_error", 2)]
    assert "summary.md: Is a directory" in recorded[0][2]


def test_the_step_summary_is_written_whatever_the_formats_and_never_crashes(sqlite_db,
                                                                           tmp_path):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}])
    audit = tmp_path / "a.yml"
    audit.write_text(audit_text(sqlite_db.url, "leads: {table: leads, key: id}",
                                "- {id: dupes, kind: duplicates, dataset: leads, columns: email}")
                     + "output: {formats: [json]}\n")
    step_summary = tmp_path / "step-summary.md"
    result = integrity("gate", audit, "-o", tmp_path / "out", "--no-history", "--no-lock",
                       cwd=tmp_path, env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert result.returncode == 0, result.stderr
    assert step_summary.read_text().startswith("### integrity · a: ✅ gate passed (exit 0)")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.json"]

    missing = tmp_path / "no-such-folder" / "summary.md"
    result = integrity("gate", audit, "-o", tmp_path / "out", "--no-history", "--no-lock",
                       cwd=tmp_path, env={"GITHUB_STEP_SUMMARY": str(missing)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (f"cannot write $GITHUB_STEP_SUMMARY ({missing}): No such file or directory"
            in result.stderr)


def test_the_crontab_line_runs_the_audit(sqlite_db, tmp_path):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    (tmp_path / "audits").mkdir()
    audit = tmp_path / "audits" / "nightly.yml"
    audit.write_text(audit_text("${NIGHTLY_URL}", "leads: {table: leads, key: id}",
                                "- {kind: duplicates, dataset: leads, columns: email}"))
    env_file = tmp_path / "integrity.env"
    env_file.write_text(f"NIGHTLY_URL={sqlite_db.url}\n")
    line = integrity("schedule", audit, "--cron", "0 3 * * *", "--env-file", env_file,
                     cwd=tmp_path).stdout.strip()
    assert line.startswith("0 3 * * * /bin/sh -c ")
    command = line.split(" ", 5)[5]
    ran = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    log = (tmp_path / "reports" / "nightly.log").read_text()
    assert "nightly: 1 checks (1 fail)" in log
    assert log.rstrip().endswith("nightly exit 1")
    assert ran.stdout == f"integrity: nightly exited 1, see {tmp_path}/reports/nightly.log\n"
    assert (tmp_path / "reports" / "nightly" / "report.html").exists()
    units = integrity("schedule", audit, "--cron", "30 2 * * 1-5", "--systemd", "--env-file",
                      env_file, cwd=tmp_path).stdout
    assert "OnCalendar=Mon..Fri *-*-* 2:30:00" in units
    assert f"WorkingDirectory={tmp_path}" in units
    assert f"EnvironmentFile={env_file}" in units
    bad = integrity("schedule", audit, "--cron", "every night", "--env-file", env_file,
                    cwd=tmp_path)
    assert bad.returncode == 2 and "not a cron schedule" in bad.stderr
    unset = integrity("schedule", audit, "--cron", "0 3 * * *", cwd=tmp_path)
    assert unset.returncode == 2 and "environment variable NIGHTLY_URL is not set" in unset.stderr


EXIT_CODE_CASES = {
    0: "- {kind: duplicates, dataset: leads, columns: id}",
    1: "- {kind: duplicates, dataset: leads, columns: email}",
    2: "- {kind: duplicates, dataset: leads, columns: no_such_column}",
}


@pytest.mark.parametrize("code", sorted(EXIT_CODE_CASES))
def test_documented_exit_codes(sqlite_db, tmp_path, code):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    audit = tmp_path / "a.yml"
    audit.write_text(audit_text(sqlite_db.url, "leads: {table: leads, key: id}",
                                EXIT_CODE_CASES[code]))
    result = integrity("gate", audit, "-o", tmp_path / "out", "--no-history", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    readme = (ROOT / "README.md").read_text()
    assert f"| {code} |" in readme  # and it is in the README's table


def test_ci_outputs(sqlite_db, tmp_path):
    import jsonschema

    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"},
                            {"id": 3, "email": "b"}])
    audit = tmp_path / "ci.yml"
    audit.write_text(audit_text(sqlite_db.url, "leads: {table: leads, key: id}", """\
        - {id: dupes, kind: duplicates, dataset: leads, columns: email}
        - {id: soft, kind: duplicates, dataset: leads, columns: email, severity: warning}
        - {id: unique_ids, kind: duplicates, dataset: leads, columns: id}
        - {id: broken, kind: duplicates, dataset: leads, columns: nope}
        """))
    step_summary = tmp_path / "step-summary.md"
    step_summary.write_text("earlier step\n")
    result = integrity("gate", audit, "-o", tmp_path / "out", "--no-history", cwd=tmp_path,
                       env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert result.returncode == 2
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["dupes"].find("failure").get("message") == \
        "FAIL dupes: 1 violation of 3"
    assert cases["dupes"].find("failure").text.endswith("keys (id): 2")
    assert "warn: WARN soft" in cases["soft"].find("system-out").text
    assert cases["unique_ids"].find("failure") is None
    assert "no column 'nope'" in cases["broken"].find("error").get("message")
    summary = step_summary.read_text()
    assert summary.startswith("earlier step\n### integrity · ci: ⚠️ audit error")
    assert "| FAIL | `dupes` | 1 |" in summary
    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()
                                    ).validate(report)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**report, "gate": {"exit_code": 7}})


def test_console_output_for_cron_terminals_and_log_shippers(sqlite_db, tmp_path):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    audit = tmp_path / "out.yml"
    audit.write_text(audit_text(sqlite_db.url, "leads: {table: leads, key: id}", """\
        - {id: dupes, kind: duplicates, dataset: leads, columns: email}
        - {id: ids, kind: duplicates, dataset: leads, columns: id}
        """))
    quiet = integrity("run", audit, "-o", tmp_path / "a", "--no-history", cwd=tmp_path)
    lines = quiet.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("out: 2 checks (1 fail, 1 pass)")
    assert lines[1] == f"report: {tmp_path / 'a' / 'report.html'}"
    shipped = integrity("run", audit, "-o", tmp_path / "b", "--no-history", "--log-format",
                        "json", cwd=tmp_path)
    events = [json.loads(line) for line in shipped.stdout.splitlines()]
    assert [(e["event"], e.get("id"), e.get("status")) for e in events] == [
        ("check", "dupes", "fail"), ("check", "ids", "pass"), ("audit", None, None)]
    assert events[-1]["exit_code"] == 1 and events[-1]["counts"]["fail"] == 1
    command = " ".join(shlex.quote(part) for part in [
        sys.executable, "-m", "integrity", "run", str(audit), "-o", str(tmp_path / "c"),
        "--no-history"])
    terminal = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True,
                              text=True, cwd=tmp_path)
    shown = terminal.stdout.replace("\r", "")
    assert "  FAIL  dupes  1  (" in shown and "  PASS  ids  0  (" in shown
    assert "FAIL  dupes  1 violation(s) of 2 (50.00%)" in shown


def test_a_locked_history_store_cannot_hold_a_run_past_its_timeout(sqlite_db, tmp_path):
    sqlite_db.tables(t=[{"id": 1}])
    audit = tmp_path / "quick.yml"
    audit.write_text(audit_text(sqlite_db.url, "t: {table: t, key: id}",
                                "- {kind: duplicates, dataset: t, columns: id}"))
    history = tmp_path / "history.sqlite"
    assert integrity("run", audit, "-o", tmp_path / "a", "--history",
                     f"sqlite:///{history}").returncode == 0
    holder = sqlite3.connect(history, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the store
    try:
        began = time.monotonic()
        result = integrity("run", audit, "-o", tmp_path / "b", "--timeout", "3s",
                           "--history", f"sqlite:///{history}")
        elapsed = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert elapsed < 3 + 2 + 4, elapsed  # the deadline, the grace, and start-up
    assert result.returncode == 2, result.stderr
    assert "database is locked" in result.stderr
