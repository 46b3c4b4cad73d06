"""File datasets: CSV (gzip too), JSON lines, Parquet and an application log parsed by a
regular expression — the seeds' "grep -i error logs/app.log" and "no webhook line for 30
minutes" as checks, with exact results."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from conftest import audit_text
from integrity.audit import parse_audit
from integrity.runner import run_audit

NOW = datetime(2026, 3, 2, 10, 0, 5, tzinfo=timezone.utc)
LOG = """\
2026-03-02 08:15:00 INFO webhook received id=1
2026-03-02 09:05:00 ERROR webhook failed id=2
2026-03-02 09:10:00 ERROR webhook failed id=3
2026-03-02 09:11:00 ERROR webhook failed id=3
garbage that is no log line
2026-03-02 09:20:00 INFO webhook received id=4
2026-03-02 09:40:00 ERROR webhook failed id=5
2026-03-02 09:59:59 ERROR webhook failed id=6
2026-03-02 10:00:01 ERROR webhook failed id=7
"""
PATTERN = r"^(?P<ts>\S+ \S+) (?P<level>\w+) webhook (?P<event>\w+) id=(?P<id>\d+)$"


def audit_with(tmp_path, sqlite_db, datasets: str, checks: str):
    path = tmp_path / "files.yml"
    path.write_text(audit_text(sqlite_db.url, datasets, checks))
    return parse_audit(path.read_text(), file=str(path))


@pytest.mark.parametrize("engine", ["pandas", "auto"])
def test_error_lines_per_hour_and_silence_from_a_log(tmp_path, sqlite_db, engine):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text(LOG)
    sqlite_db.tables(t=[{"id": 1}])
    audit = audit_with(tmp_path, sqlite_db, f"""\
        log: {{file: logs/app.log, pattern: '{PATTERN}', key: [file, line]}}""", """\
        - id: webhook_errors
          kind: metric
          dataset: log
          value: count
          where: {level: ERROR}
          time: ts
          window: 1h
          align: hour
          thresholds: {warn: "> 3", critical: "> 10"}
        - id: webhook_lines
          kind: freshness
          dataset: log
          time: ts
          where: {event: received}
          max_age: 30m
        - {id: lines, kind: duplicates, dataset: log, columns: id}
        """)
    result = run_audit(audit, now=NOW, engine=engine, sample_limit=0)
    errors, fresh, dupes = (result.check(c) for c in ("webhook_errors", "webhook_lines",
                                                      "lines"))
    # [09:00, 10:00): ids 2, 3, 3, 5, 6 — the 10:00:01 line is the next hour's.
    assert (errors.status, errors.value) == ("warn", 5)
    assert "app.log: 1 line(s) the pattern does not match, left out" in errors.notes
    assert fresh.status == "fail"  # the last "received" line is 40 minutes old
    assert [(r["file"], r["line"]) for r in dupes.sample if r["duplicate_role"] == "surplus"
            ] == [("app.log", 4)]
    assert {check.engine for check in result.checks} == {"pandas"}


def test_csv_gzip_jsonl_and_parquet_read_the_same_rows(tmp_path, sqlite_db):
    rows = pd.DataFrame({"id": [1, 2, 3, 4], "email": ["a@x", "b@x", "A@x ", "c@x"],
                         "at": ["2026-03-02T09:00:00Z"] * 4})
    rows.to_csv(tmp_path / "leads-1.csv.gz", index=False, compression="gzip")
    rows.iloc[:0].to_csv(tmp_path / "leads-2.csv.gz", index=False, compression="gzip")
    with gzip.open(tmp_path / "leads.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows.to_dict("records"))
    rows.to_parquet(tmp_path / "leads.parquet")
    sqlite_db.tables(t=[{"id": 1}])
    found = {}
    for name in ("leads-*.csv.gz", "leads.jsonl.gz", "leads.parquet"):
        audit = audit_with(tmp_path, sqlite_db, f"leads: {{file: '{name}', key: id}}", """\
            - {id: dupes, kind: duplicates, dataset: leads, columns: email,
               normalize: {email: email}}
            """)
        check = run_audit(audit, now=NOW, sample_limit=0).check("dupes")
        found[name] = (check.status, tuple(check.violation_keys), check.population)
    assert set(found.values()) == {("fail", ((3,),), 4)}, found


def test_a_file_dataset_is_the_pandas_engines(tmp_path, sqlite_db):
    (tmp_path / "app.log").write_text(LOG)
    sqlite_db.tables(t=[{"id": 1}])
    audit = audit_with(tmp_path, sqlite_db, f"log: {{file: app.log, pattern: '{PATTERN}'}}",
                       "- {id: n, kind: metric, dataset: log, value: count, "
                       "thresholds: {critical: '< 1'}}\n")
    check = run_audit(audit, now=NOW, engine="sql").check("n")
    assert check.status == "error"
    assert "dataset 'log' is a file, read by the pandas engine" in check.error


@pytest.mark.parametrize("dataset, message", [
    ("{file: a.log, table: t}", "give exactly one of table, sql or file"),
    ("{file: a.log, format: log}", "a log needs a pattern"),
    ("{file: a.log, pattern: '(\\\\w+'}", "pattern: not a regular expression"),
    ("{file: a.log, pattern: '\\\\w+'}", "pattern needs named groups"),
    ("{table: t, pattern: '(?P<a>.)'}", "format and pattern apply to a file"),
])
def test_file_settings_are_checked(dataset, message, sqlite_db, tmp_path):
    from integrity.errors import ConfigErrors

    with pytest.raises(ConfigErrors) as raised:
        audit_with(tmp_path, sqlite_db, f"d: {dataset}",
                   "- {kind: metric, dataset: d, value: count, thresholds: {critical: '< 1'}}\n")
    assert message in str(raised.value)


def test_no_file_matches(tmp_path, sqlite_db):
    sqlite_db.tables(t=[{"id": 1}])
    audit = audit_with(tmp_path, sqlite_db, "log: {file: 'nowhere/*.log', pattern: '(?P<a>.*)'}",
                       "- {id: n, kind: metric, dataset: log, value: count, "
                       "thresholds: {critical: '< 1'}}\n")
    check = run_audit(audit, now=NOW).check("n")
    assert check.status == "error"
    assert check.error.startswith("dataset 'log': no file matches nowhere/*.log (from ")
