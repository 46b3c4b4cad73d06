"""The command line: exit codes 0/1/2, one-line errors, no passwords, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import NOW
from integrity.cli import main
from integrity.reference.generator import generate

NOW_TEXT = NOW.isoformat()


def invoke(*args, env=None):
    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def reference_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "reference.sqlite"
    generate(f"sqlite:///{path}", scale=0.005, seed=5, now=NOW)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "reference.sqlite"
    generate(f"sqlite:///{path}", scale=0.005, seed=5, now=NOW, inject=False)
    return f"sqlite:///{path}"


def test_validate(write_audit):
    path = write_audit("""\
        connection: {url: "sqlite:///x.db"}
        datasets: {t: {table: t, key: id}}
        checks: [{kind: freshness, dataset: t, time: at, max_age: 1h}]
        """)
    result = invoke("validate", path)
    assert result.exit_code == 0
    assert result.output == f"{path}: valid — 1 checks on 1 datasets\n"


def test_reference_audit_exits_1_and_writes_reports(reference_db, tmp_path):
    result = invoke("run", "audits/reference.yml", "-o", tmp_path, "--now", NOW_TEXT,
                    "--sample-limit", "2", env={"REFERENCE_DATABASE_URL": reference_db})
    assert result.exit_code == 1, result.output
    assert "gate (fail on critical) FAILED (violations), exit 1" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema_version"] == "1.2"
    assert report["gate"] == {"fail_on": "critical", "passed": False, "exit_code": 1,
                              "outcome": "violations"}
    checks = {check["id"]: check for check in report["checks"]}
    email = checks["quote_email_counter"]
    assert (email["status"], email["severity"], email["violation_count"]) == ("fail", "critical", 5)
    assert len(email["violations"]) == 2 and email["violations_truncated"] is True
    # Duplicate groups are never cut in half by the sample limit.
    duplicates = checks["lead_duplicate_email"]["violations"]
    assert [row["duplicate_role"] for row in duplicates] == ["kept", "surplus", "surplus"]
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")


def test_a_subset_of_checks_keeps_the_paths_of_the_file(reference_db, tmp_path):
    result = invoke("run", "audits/reference.yml", "-o", tmp_path, "--now", NOW_TEXT,
                    "--check", "quote_*", "--skip", "quote_sent_at_preserved", "--no-history",
                    "--no-lock", env={"REFERENCE_DATABASE_URL": reference_db})
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    paths = [(check["id"].split(":")[0], check["path"]) for check in report["checks"]]
    assert list(dict.fromkeys(paths)) == [  # a suite's results share its path
        ("quote_email_counter", "checks[0]"), ("quote_sms_counter", "checks[1]"),
        ("quote_sent_at_valid", "checks[3]"), ("quote_send_double_clicks", "checks[4]"),
        ("quote_channel_distribution", "checks[6]"), ("quote_agent_cross_tenant", "checks[13]"),
        ("quote_columns", "checks[24]")]


def test_sample_limit_zero_keeps_every_row(reference_db, tmp_path):
    result = invoke("run", "audits/reference.yml", "-o", tmp_path, "--now", NOW_TEXT,
                    "--sample-limit", "0", env={"REFERENCE_DATABASE_URL": reference_db})
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    for check in report["checks"]:
        assert check["violations_truncated"] is False
        rows = check["violations"]
        if check["context_column"] == "duplicate_role":  # the kept row is shown, not counted
            rows = [row for row in rows if row["duplicate_role"] == "surplus"]
        else:
            assert check["context_column"] is None, check["id"]
        assert len(rows) == check["violation_count"], check["id"]


def test_clean_data_passes_with_exit_0(clean_db, tmp_path):
    result = invoke("run", "audits/reference.yml", "-o", tmp_path, "--now", NOW_TEXT,
                    env={"REFERENCE_DATABASE_URL": clean_db})
    assert result.exit_code == 0, result.output
    assert "40 checks (40 pass)" in result.output


def test_fail_on_warning(write_audit, clean_db, tmp_path):
    path = write_audit(f"""\
        connection: {{url: "{clean_db}"}}
        datasets: {{leads: {{table: Lead, key: id}}}}
        checks:
          - {{kind: freshness, dataset: leads, time: createdAt, warn_after: 1m}}
        """)
    assert invoke("run", path, "-o", tmp_path / "a", "--now", NOW_TEXT).exit_code == 0
    strict = invoke("run", path, "-o", tmp_path / "b", "--now", NOW_TEXT, "--fail-on", "warning")
    assert strict.exit_code == 1


def test_missing_table_or_column_is_exit_2(write_audit, clean_db, tmp_path):
    path = write_audit(f"""\
        connection: {{url: "{clean_db}"}}
        datasets:
          leads: {{table: Leads, key: id}}
          quotes: {{table: AgentQuote, key: id}}
        checks:
          - {{id: a, kind: duplicates, dataset: leads, columns: email}}
          - {{id: b, kind: duplicates, dataset: quotes, columns: customerMail}}
          - {{id: c, kind: duplicates, dataset: quotes, columns: customerEmail}}
        """)
    result = invoke("run", path, "-o", tmp_path, "--summary", "checks")
    assert result.exit_code == 2
    assert result.output.splitlines()[:2] == [
        "ERROR a  dataset 'leads': table \"Leads\" does not exist; did you mean 'Lead'?",
        "ERROR b  dataset 'quotes' (table \"AgentQuote\") has no column 'customerMail'; "
        "did you mean 'customerEmail'?"]
    assert "gate (fail on critical) ERROR (audit incomplete), exit 2" in result.output


def test_unreachable_database_masks_the_password(write_audit, tmp_path):
    path = write_audit("""\
        connection: {url: "postgresql://auditor:Sup3r-S3cret@127.0.0.1:1/app",
                     connect_timeout: 2s, retries: 1, retry_backoff: 0.1s}
        datasets: {t: {table: t, key: id}}
        checks: [{kind: freshness, dataset: t, time: at, max_age: 1h}]
        """)
    result = invoke("run", path, "-o", tmp_path)
    assert result.exit_code == 2
    assert "error: gave up after 2 attempts: connection failed: " in result.output
    assert "Connection refused" in result.output
    assert "postgresql+psycopg://auditor:***@127.0.0.1:1/app" in result.output
    for text in (result.output, (tmp_path / "report.json").read_text(),
                 (tmp_path / "report.html").read_text()):
        assert "Sup3r-S3cret" not in text


def test_a_password_given_as_a_url_parameter_is_masked_too(write_audit, tmp_path,
                                                           postgres_database):
    """Drivers take ?password= (and ?sslpassword=) as well as user:password@."""
    secret = "Qu3ry-S3cret"
    found = f"{postgres_database}?password={secret}"
    missing = f"{postgres_database.rsplit('/', 1)[0]}/no_such_db?sslpassword={secret}"
    outputs = []
    for url in (found, missing):
        path = write_audit(f"""\
            connection: {{url: "{url}", retries: 0}}
            datasets: {{t: {{sql: "SELECT 1 AS id, now() AS at", key: id}}}}
            checks: [{{kind: freshness, dataset: t, time: at, max_age: 1h}}]
            """)
        out = tmp_path / str(len(outputs))
        result = invoke("run", path, "-o", out, "--no-history", "--no-lock")
        outputs.append(result)
        for text in (result.output, *(file.read_text() for file in out.iterdir())):
            assert secret not in text
    assert outputs[0].exit_code == 0
    database = json.loads((tmp_path / "0" / "report.json").read_text())["run"]["database"]
    assert database == f"{postgres_database}?password=***"
    assert outputs[1].exit_code == 2
    assert f"{postgres_database.rsplit('/', 1)[0]}/no_such_db?sslpassword=***" in outputs[1].output


def test_unwritable_output_folder_is_exit_2_before_the_audit(write_audit, tmp_path):
    path = write_audit("""\
        connection: {url: "sqlite:///nowhere.db"}
        datasets: {t: {table: t, key: id}}
        checks: [{kind: freshness, dataset: t, time: at, max_age: 1h}]
        """)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("run", path, "-o", blocker / "reports")
    assert result.exit_code == 2
    assert result.output == (f"integrity: error: cannot write reports to {blocker / 'reports'}: "
                             f"Not a directory\n")


def test_bad_yaml_is_one_line_and_exit_2(write_audit):
    path = write_audit("connection: {url: x\n")
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"integrity: error: {path}:2:1: invalid YAML")


def test_missing_sqlite_file_is_not_created(write_audit, tmp_path):
    database = tmp_path / "typo.sqlite"
    path = write_audit(f"""\
        connection: {{url: "sqlite:///{database}"}}
        datasets: {{t: {{table: t, key: id}}}}
        checks: [{{kind: freshness, dataset: t, time: at, max_age: 1h}}]
        """)
    result = invoke("run", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert f"error: SQLite database file not found: {database}" in result.output
    assert not database.exists()


def test_demo_runs_from_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("demo", "--output", tmp_path / "demo", "--scale", "0.005")
    assert result.exit_code == 0, result.output
    assert "Open the report: file://" in result.output
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000


def test_demo_nights_mostly_persist(tmp_path):
    """Each demo night is the night before plus a day: the last report shows most
    violations persisting, a few resolved and a few new — not everything replaced."""
    result = invoke("demo", "--output", tmp_path / "demo", "--scale", "0.005", "--nights", "3")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    summary = report["summary"]
    assert (summary["new"], summary["persisting"], summary["resolved"]) == (5, 53, 3)
    assert summary["violations"] == summary["new"] + summary["persisting"]
    lifecycle = {check["id"]: check["lifecycle"] for check in report["checks"]}
    assert all(state["previous_run"] == 2 for state in lifecycle.values())
    assert lifecycle["lead_duplicate_email"]["new"] == 1         # a duplicate in today's leads
    assert lifecycle["lead_duplicate_email"]["persisting"] == 4  # yesterday's and the older ones


@pytest.mark.parametrize("command", [["validate"], ["checks"], ["checks", "duplicates"]],
                         ids=["validate", "checks", "checks-kind"])
def test_help_and_validate_do_not_import_pandas(write_audit, command):
    path = write_audit("""\
        connection: {url: "sqlite:///x.db"}
        datasets: {t: {table: t, key: id}}
        checks: [{kind: duplicates, dataset: t, columns: [a]}]
        """)
    arguments = [*command, str(path)] if command == ["validate"] else command
    code = ("import sys\nfrom integrity.cli import main\n"
            f"try:\n    main({arguments!r})\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "heavy = sorted(m for m in ('pandas', 'sqlalchemy', 'numpy') if m in sys.modules)\n"
            "print(heavy)\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip().splitlines()[-1] == "[]"


def test_checks_lists_every_kind_with_its_own_line():
    from integrity.checks import CHECKS

    result = invoke("checks")
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert list(lines) == list(CHECKS)
    assert lines["timestamp_valid"] == "Null, unparseable, future or impossible timestamps."
    assert len(set(lines.values())) == len(lines)  # no two kinds described alike


def test_checks_kind_prints_its_settings_semantics_and_an_example():
    from integrity.catalog import KIND_EXAMPLES

    result = invoke("checks", "orphans")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("orphans — References to nothing.\n")
    assert "unless `required: true`" in text                    # the module's semantics
    assert "  required  (true or false; default false)\n" in text
    assert "  on_empty  (`warn`, `fail` or `pass`; default `warn`)\n" in text  # common ones
    assert "Settings of `thresholds`:" in text
    example = text.split("Example:\n", 1)[1]
    assert example == "".join(f"  {line}\n" if line else "\n"
                              for line in KIND_EXAMPLES["orphans"].splitlines())


def test_checks_with_an_unknown_kind_is_exit_2_with_a_suggestion():
    result = invoke("checks", "dupes")
    assert result.exit_code == 2
    assert result.output.startswith("integrity: error: unknown check kind 'dupes'; did you "
                                    "mean 'duplicates'? (known: counter_vs_events, ")


def test_the_history_can_never_be_the_audited_database(write_audit, tmp_path):
    import sqlite3

    audited = tmp_path / "app.sqlite"
    sqlite3.connect(audited).executescript("CREATE TABLE t (id int, at text);")
    path = write_audit(f"""\
        connection: {{url: "sqlite:///{audited}"}}
        datasets: {{t: {{table: t, key: id}}}}
        checks: [{{kind: freshness, dataset: t, time: at, max_age: 1h}}]
        """)
    # The same file by another spelling, from --history and from the environment.
    for args, env in [(["--history", f"sqlite:///{tmp_path}/./app.sqlite"], None),
                      ([], {"INTEGRITY_HISTORY_URL": f"sqlite:///{audited}"})]:
        result = invoke("run", path, "-o", tmp_path / "out", "--no-lock", *args, env=env)
        assert result.exit_code == 2
        assert "is the audited database, which integrity never writes to" in result.output
    tables = sqlite3.connect(audited).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("t",)]


def test_same_database_compares_servers_by_what_they_are():
    from integrity.history import is_same_database

    pg = "postgresql+psycopg://auditor:pw@localhost/app"
    assert is_same_database(pg, "postgresql+psycopg://other@127.0.0.1/app")
    assert not is_same_database(pg, "postgresql+psycopg://auditor:pw@localhost/history")
    assert not is_same_database(pg, "postgresql+psycopg://auditor:pw@db.internal/app")
    assert not is_same_database(pg, "sqlite:///app")
    assert not is_same_database(pg, f"{pg}?options=-csearch_path%3Dintegrity")  # own schema
    assert not is_same_database("sqlite://", "sqlite://")  # in-memory: nothing shared


def test_accepting_a_whole_suite_is_refused_with_the_ids_to_use(tmp_path):
    result = invoke("accept", "audits/reference.yml", "lead_columns", "--reason", "T-4",
                    "--until", "2099-01-01", "--history", f"sqlite:///{tmp_path / 'h.sqlite'}")
    assert result.exit_code == 2
    assert ("lead_columns is a Great Expectations suite: accept one of its expectations by "
            "the id the report shows") in result.output


def test_validate_needs_no_secrets_and_warns_of_unused_datasets(write_audit):
    path = write_audit("""\
        connection: {url: "${DATABASE_URL}"}
        datasets:
          leads: {table: leads, key: id}
          leftover: {table: old_leads, key: id}
          recent: {sql: "SELECT id FROM leads WHERE created::date > now() - interval '1 day'"}
        checks:
          - {kind: duplicates, dataset: leads, columns: email}
          - {kind: freshness, dataset: recent, time: id, max_age: 1h}
        notify:
          - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
        """)
    result = CliRunner().invoke(main, ["validate", str(path)], env={
        "DATABASE_URL": None, "SLACK_WEBHOOK_URL": None})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path}: valid — 2 checks on 3 datasets",
        "read from the environment at run time: DATABASE_URL, SLACK_WEBHOOK_URL; the "
        "database's SQL dialect is known only then"]
    assert result.stderr == f"integrity: warning: {path}:4:3: datasets.leftover: no check " \
                            f"reads this dataset\n"


def test_engine_refusals_name_each_check_where_it_is_written(write_audit):
    path = write_audit("""\
        connection: {url: "postgresql+psycopg://auditor@db/app"}
        datasets: {leads: {table: leads, key: id}}
        checks:
          - {id: phones, kind: duplicates, dataset: leads, columns: phone,
             normalize: {phone: phone}, engine: sql}
          - {id: emails, kind: duplicates, dataset: leads, columns: email}
          - {id: phones_again, kind: duplicates, dataset: leads, columns: phone,
             normalize: {phone: phone}}
        """)
    result = invoke("validate", path, "--engine", "sql")
    assert result.exit_code == 2
    problem = ("the sql engine cannot run this check on postgresql: normalize: phone: phone "
               "(E.164 parsing) cannot run inside postgresql; set `engine: pandas` (or `auto`) on "
               "it")
    assert result.output.splitlines() == [
        "integrity: error: invalid audit",
        f"{path}:5:33: checks[0] (phones): {problem}",
        f"{path}:7:5: checks[2] (phones_again): {problem}"]
