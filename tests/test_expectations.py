"""Great Expectations suites inside an audit: real GX, both engines, exact keys, clear errors.

The reference suites' exact results on the reference data are asserted with
every other check in test_reference_audit.py (three databases, two engines);
here: the file format round-trips, scaffolding, errors, and what must not
import GX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import NOW, run
from integrity.cli import main
from integrity.gate import exit_code
from integrity.reference.generator import generate

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "expectations").glob("*.json"))


@pytest.mark.parametrize("path", SUITES, ids=[path.stem for path in SUITES])
def test_shipped_suites_are_exactly_what_gx_writes(path):
    import great_expectations as gx

    document = json.loads(path.read_text())
    assert gx.ExpectationSuite(**document).to_json_dict() == document


@pytest.fixture
def leads(sqlite_db):
    return sqlite_db.tables(leads=[
        {"id": 1, "phone": "+447700900123", "email": "a@x.com", "code": "C1"},
        {"id": 2, "phone": "07700 900123", "email": "b@x.com", "code": "C2"},
        {"id": 3, "phone": None, "email": " c@x.com", "code": "C2"},
        {"id": 4, "phone": "+15550100", "email": "d@x", "code": "C4"}])


def gx_suite(tmp_path, *expectations, meta=None) -> Path:
    """A suite written by GX itself."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="leads", expectations=list(expectations), meta=meta or {})
    path = tmp_path / "leads.json"
    path.write_text(json.dumps(suite.to_json_dict(), indent=2))
    return path


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_a_suite_written_by_gx_runs_here_with_keys(leads, tmp_path, engine):
    import great_expectations.expectations as gxe

    path = gx_suite(
        tmp_path,
        gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=r"^\+[1-9][0-9]{6,14}$",
                                           description="E.164 phones"),
        gxe.ExpectColumnValuesToMatchRegex(column="email", regex=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                                           severity="warning"),
        gxe.ExpectColumnValuesToBeUnique(column="code", meta={"severity": "info"}),
        gxe.ExpectTableRowCountToBeBetween(min_value=10))
    result = run(leads, "leads: {table: leads, key: id}", f"""\
        - {{id: contact, kind: expectation_suite, dataset: leads, suite: {path}}}
        """, engine=engine)
    by_id = {check.id: check for check in result.checks}
    phone = by_id["contact:expect_column_values_to_match_regex(phone)"]
    assert (phone.status, phone.violation_count, phone.population) == ("fail", 1, 4)
    assert phone.sample == [{"id": 2, "phone": "07700 900123"}]
    assert phone.description.startswith("E.164 phones — expect_column_values_to_match_regex(")
    email = by_id["contact:expect_column_values_to_match_regex(email)"]
    assert (email.status, set(email.violation_keys)) == ("warn", {(3,), (4,)})
    code = by_id["contact:expect_column_values_to_be_unique(code)"]
    assert (code.status, set(code.violation_keys)) == ("info", {(2,), (3,)})
    rows = by_id["contact:expect_table_row_count_to_be_between"]
    assert (rows.status, rows.violation_count) == ("fail", 1)
    assert "observed value: 4" in rows.notes
    assert exit_code(result) == 1


def test_suite_meta_sets_the_default_severity(leads, tmp_path):
    import great_expectations as gx

    path = tmp_path / "s.json"
    document = {"name": "s", "meta": {"severity": "warning"}, "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "phone"}}]}
    path.write_text(json.dumps(document))
    assert gx.ExpectationSuite(**document)  # a hand-written suite GX accepts
    result = run(leads, "leads: {table: leads, key: id}",
                 f"- {{id: s, kind: expectation_suite, dataset: leads, suite: {path}}}")
    assert [(c.status, c.violation_keys) for c in result.checks] == [("warn", [(3,)])]


def write_audit(tmp_path, url, suite_text) -> Path:
    (tmp_path / "suite.json").write_text(suite_text)
    audit = tmp_path / "audit.yml"
    audit.write_text(f"""\
connection: {{url: "{url}"}}
datasets: {{leads: {{table: leads, key: id}}}}
checks:
  - {{id: s, kind: expectation_suite, dataset: leads, suite: suite.json}}
""")
    return audit


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_invalid_json_is_a_config_error_naming_the_file(leads, tmp_path):
    audit = write_audit(tmp_path, leads.url, '{"name": "s", "expectations": [\n  {"type": }\n]}')
    result = invoke("validate", audit)
    assert result.exit_code == 2
    assert result.output == (f"integrity: error: {audit}:4:54: checks[0].suite: "
                             f"{tmp_path / 'suite.json'}:2:12: invalid JSON: Expecting value\n")


def test_a_where_on_a_suite_is_refused_not_ignored(leads, tmp_path):
    audit = write_audit(tmp_path, leads.url, json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "phone"}}]}))
    audit.write_text(audit.read_text().replace("suite: suite.json}",
                                               "suite: suite.json, where: {phone: x}}"))
    result = invoke("validate", audit)
    assert result.exit_code == 2
    assert result.output == (f"integrity: error: {audit}:4:73: checks[0].where: a suite "
                             "validates its whole dataset: filter with a `sql:` dataset or "
                             "an expectation's row_condition\n")


def test_an_empty_suite_is_refused_with_the_reason(leads, tmp_path):
    audit = write_audit(tmp_path, leads.url, json.dumps({"name": "s", "expectations": []}))
    result = invoke("validate", audit)
    assert result.exit_code == 2
    assert result.output == (f"integrity: error: {audit}:4:54: checks[0].suite: "
                             f"{tmp_path / 'suite.json'}: the suite has no expectations: "
                             "nothing to check\n")


def test_unknown_expectation_is_an_audit_error_naming_it(leads, tmp_path):
    audit = write_audit(tmp_path, leads.url, json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "phone"}},
        {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "phone"}}]}))
    result = invoke("run", audit, "-o", tmp_path / "out", "--summary", "checks")
    assert result.exit_code == 2
    assert (f"ERROR s  {tmp_path / 'suite.json'}: expectations[1] "
            f"(expect_column_values_to_be_purple): expect_column_values_to_be_purple not found"
            in result.output), result.output


def test_a_column_the_dataset_lacks_names_suite_and_expectation(leads, tmp_path):
    audit = write_audit(tmp_path, leads.url, json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "phone"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "emial"}}]}))
    result = invoke("run", audit, "-o", tmp_path / "out", "--summary", "checks")
    assert result.exit_code == 2
    assert (f"ERROR s  {tmp_path / 'suite.json'}: expectations[1] "
            f"(expect_column_values_to_be_unique): dataset 'leads' (table \"leads\") has no "
            f"column 'emial'; did you mean 'email'?" in result.output), result.output


def test_scaffold_drafts_a_suite_that_holds_on_its_data(tmp_path, monkeypatch):
    import great_expectations as gx

    url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    generate(url, scale=0.005, seed=4, now=NOW, inject=False)
    monkeypatch.setenv("REFERENCE_DATABASE_URL", url)
    target = tmp_path / "suites" / "leads.json"
    result = invoke("suite", "scaffold", "leads", "--audit", ROOT / "audits/reference.yml",
                    "-o", target)
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    assert gx.ExpectationSuite(**document).to_json_dict() == document  # loads unchanged in GX
    kinds = {(e["type"], e["kwargs"].get("column")) for e in document["expectations"]}
    assert {("expect_column_values_to_be_unique", "id"),
            ("expect_column_values_to_be_unique", "customerCode"),
            ("expect_column_values_to_match_regex", "phone"),
            ("expect_column_values_to_be_in_set", "source")} <= kinds
    audit = tmp_path / "audit.yml"
    audit.write_text(f"""\
connection: {{url: "{url}"}}
datasets: {{leads: {{table: Lead, key: id}}}}
checks:
  - {{id: drafted, kind: expectation_suite, dataset: leads, suite: {target}}}
""")
    for engine in ("pandas", "sql"):
        ran = invoke("run", audit, "-o", tmp_path / engine, "--engine", engine)
        assert ran.exit_code == 0, ran.output
    again = invoke("suite", "scaffold", "leads", "--audit", ROOT / "audits/reference.yml",
                   "-o", target)
    assert again.exit_code == 2 and "exists; pass --force" in again.output


def _imports_gx(*cli_args, env=None) -> bool:
    code = ("import sys\nfrom integrity.cli import main\n"
            f"try:\n    main({list(map(str, cli_args))!r})\nexcept SystemExit:\n    pass\n"
            "print('great_expectations' in sys.modules)\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}).stdout
    return output.strip().splitlines()[-1] == "True"


def test_gx_is_imported_only_by_audits_with_suites(tmp_path, sqlite_db):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}])
    plain = tmp_path / "plain.yml"
    plain.write_text(f"""\
connection: {{url: "{sqlite_db.url}"}}
datasets: {{leads: {{table: leads, key: id}}}}
checks: [{{kind: duplicates, dataset: leads, columns: email}}]
""")
    assert not _imports_gx("--help")
    assert not _imports_gx("validate", ROOT / "audits/reference.yml")
    assert not _imports_gx("run", plain, "-o", tmp_path / "out")
    suite = write_audit(tmp_path, sqlite_db.url, json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}]}))
    assert _imports_gx("run", suite, "-o", tmp_path / "out2")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_gx_runs_on_the_audits_own_connection(kind, servers, tmp_path):
    """Under the SQL engine GX never logs in on its own: every statement of the run,
    GX's included, goes through the audit's one read-only connection and snapshot."""
    import great_expectations.expectations as gxe
    import sqlalchemy as sa

    from conftest import Database, database_url

    db = Database(database_url(kind, servers, tmp_path))
    db.tables(leads=[{"id": 1, "code": "C1"}, {"id": 2, "code": "C1"}])
    path = gx_suite(tmp_path, gxe.ExpectColumnValuesToBeUnique(column="code"))
    connections: set[int] = set()

    def seen(dbapi_connection, _record):
        # GX's engine is handed the audit's connection itself, wrapped so it cannot close
        # it (on PostgreSQL a second psycopg object over the same libpq session).
        real = getattr(dbapi_connection, "_connection", dbapi_connection)
        connections.add(id(getattr(real, "pgconn", real)))

    sa.event.listen(sa.engine.Engine, "connect", seen)
    try:
        result = run(db, "leads: {table: leads, key: id}", f"""\
            - {{id: codes, kind: expectation_suite, dataset: leads, suite: {path}}}
            - {{id: dupes, kind: duplicates, dataset: leads, columns: code}}
            """, engine="sql")
    finally:
        sa.event.remove(sa.engine.Engine, "connect", seen)
    codes = result.check("codes:expect_column_values_to_be_unique(code)")
    assert (codes.status, set(codes.violation_keys)) == ("fail", {(1,), (2,)})
    assert len(connections) == 1
