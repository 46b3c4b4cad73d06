"""Reports: data is escaped, samples keep groups whole, the JSON carries the documented fields."""

from __future__ import annotations

import json

from conftest import run
from integrity.gate import exit_code
from integrity.report import write_reports


def test_html_escapes_data_and_shows_the_query(sqlite_db, tmp_path):
    sqlite_db.tables(quotes=[{"id": 1, "note": "<script>alert(1)</script>"},
                             {"id": 2, "note": "<script>alert(1)</script>"}])
    result = run(sqlite_db, "quotes: {table: quotes, key: id}", """\
        - {id: dupes, kind: duplicates, dataset: quotes, columns: note}
        - {id: raw, kind: custom_sql, sql: "SELECT id, note FROM quotes WHERE note LIKE '<%'"}
        """, engine="pandas")  # the pandas engine shows the query that read each dataset
    written = write_reports(result, tmp_path)
    html = written["html"].read_text()
    assert "<script>alert(1)" not in html  # (the report has a script of its own)
    # duplicates: 2 rows x (note, duplicate_key); custom_sql: 2 rows x note
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 6
    assert "SELECT id, note FROM quotes WHERE note LIKE &#39;&lt;%&#39;" in html
    assert 'SELECT quotes.id, quotes.note \nFROM quotes' in html  # the data read, per dataset
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_json_report_fields(sqlite_db, tmp_path):
    sqlite_db.tables(leads=[{"id": i, "email": f"a{i % 3}@x"} for i in range(9)])
    result = run(sqlite_db, "leads: {table: leads, key: id}", """\
        - id: dupes
          kind: duplicates
          dataset: leads
          columns: email
          thresholds: {warn: "> 0", critical: "> 50%"}
        """, sample_limit=4)
    document = json.loads(write_reports(result, tmp_path, ["json"])["json"].read_text())
    check = document["checks"][0]
    assert {key: check[key] for key in ("id", "kind", "status", "severity", "violation_count",
                                        "population", "rate", "thresholds")} == {
        "id": "dupes", "kind": "duplicates", "status": "fail", "severity": "critical",
        "violation_count": 6, "population": 9, "rate": 0.666667,
        "thresholds": {"warn": "> 0", "critical": "> 50%"}}
    # Groups of three: the 4-row limit keeps two whole groups (6 rows) rather than split one.
    assert [row["duplicate_group"] for row in check["violations"]] == [1, 1, 1, 2, 2, 2]
    assert check["violations_truncated"] is True
    assert document["summary"] == {"checks": 1, "pass": 0, "info": 0, "warn": 0, "fail": 1,
                                   "error": 0, "violations": 6}


def test_info_severity_never_fails_the_gate(sqlite_db):
    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    result = run(sqlite_db, "leads: {table: leads, key: id}", """\
        - {kind: duplicates, dataset: leads, columns: email, severity: info}
        """, fail_on="warning")
    assert (result.checks[0].status, exit_code(result)) == ("info", 0)


def test_a_missing_time_is_null_in_the_report_not_nat(sqlite_db, tmp_path):
    """A job that never wrote a heartbeat: its newest time is missing, not the text "NaT"."""
    sqlite_db.tables(beats=[{"id": 1, "job": "a", "at": "2026-01-30 12:00:00"}])
    result = run(sqlite_db, "beats: {table: beats, key: id}", """\
        - {id: jobs, kind: freshness, dataset: beats, time: at, by: [job], max_age: 1h,
           expect_groups: [a, b]}
        """)
    document = json.loads(write_reports(result, tmp_path, ["json"])["json"].read_text())
    assert document["checks"][0]["violations"] == [
        {"job": "b", "newest": None, "age": "no rows", "level": "critical"}]


def test_a_checks_own_description_is_in_every_report_and_alert(sqlite_db, tmp_path):
    from integrity.notify import _summary

    sqlite_db.tables(leads=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
    result = run(sqlite_db, "leads: {table: leads, key: id}", """\
        - {id: dupes, kind: duplicates, dataset: leads, columns: email,
           description: "No duplicate leads (seed 003)"}
        """)
    check = result.check("dupes")
    assert check.description.startswith("No duplicate leads (seed 003) — ")
    written = write_reports(result, tmp_path)
    for name in ("html", "json", "markdown"):
        assert "No duplicate leads (seed 003)" in written[name].read_text(), name
    assert _summary(result, check, 1, check.status) == (
        "test: dupes (No duplicate leads (seed 003)) FAIL — 1 violation, 1 new")
