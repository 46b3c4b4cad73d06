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


# A time is optional (a line without one has a null `ts`); indented lines are no log lines.
TIMED = r"^(?:(?P<ts>\d{4}-\S+ \S+) )?(?P<level>[A-Z]+) (?P<message>.*)$"
FIRST = """\
2026-03-02 09:00:00 INFO started
2026-03-02 09:05:00 ERROR webhook failed
    at deliver (webhooks.py:212)
2026-03-02 09:10:00 ERROR webhook failed
2026-03-02 9:15 ERROR webhook failed
ERROR no time at all
2026-03-02 09:40:00 INFO webhook received
2026-03-02 11:00:00 INFO from a clock that is ahead
"""
SECOND = """\
2026-03-02 09:50:00 ERROR webhook failed
2026-03-02 09:59:59 ERROR webhook failed
2026-03-02 10:00:01 ERROR webhook failed
"""


@pytest.mark.parametrize("chunk, time_slice", [(2, 3), (1, 1), (100_000, 100_000)])
def test_a_log_read_a_few_lines_at_a_time_gives_the_same_answers(
        tmp_path, sqlite_db, monkeypatch, chunk, time_slice):
    from integrity import files, sources

    monkeypatch.setattr(files, "CHUNK", chunk)
    monkeypatch.setattr(sources, "TIME_SLICE", time_slice)
    with gzip.open(tmp_path / "app-1.log.gz", "wt") as handle:
        handle.write(FIRST)
    (tmp_path / "app-2.log").write_text(SECOND)
    sqlite_db.tables(t=[{"id": 1}])
    audit = audit_with(tmp_path, sqlite_db, f"""\
        log: {{file: 'app-*.log*', pattern: '{TIMED}', key: [file, line]}}""", """\
        - {id: errors, kind: metric, dataset: log, value: count, where: {level: ERROR},
           time: ts, window: 1h, align: hour, thresholds: {warn: "> 3"}}
        - {id: times, kind: timestamp_valid, dataset: log, column: ts}
        - {id: failing, kind: freshness, dataset: log, time: ts, where: {level: ERROR},
           max_age: 1m}
        """)
    result = run_audit(audit, now=NOW, sample_limit=0)
    errors, times, failing = (result.check(c) for c in ("errors", "times", "failing"))
    # [09:00, 10:00): 09:05 and 09:10 in the first file, 09:50 and 09:59:59 in the second;
    # "9:15" is no time and the line without one has none.
    assert (errors.status, errors.value) == ("warn", 4)
    assert errors.notes == [
        "engine auto: pandas, because dataset 'log' is a file, read by the pandas engine",
        "app-1.log.gz: 1 line(s) the pattern does not match, left out"]
    assert [(r["file"], r["line"], r["problem"]) for r in times.sample] == [
        ("app-1.log.gz", 5, "unparseable"), ("app-1.log.gz", 6, "null"),
        ("app-1.log.gz", 8, "in_future")]
    assert times.population == 10
    assert failing.value == 4.0  # the 10:00:01 failure, four seconds before now


def test_log_columns_are_compact_text_and_the_same_in_any_chunking(tmp_path, monkeypatch):
    from integrity import files
    from integrity.config import DatasetConfig

    with gzip.open(tmp_path / "app-1.log.gz", "wt") as handle:
        handle.write(FIRST)
    (tmp_path / "app-2.log").write_text(SECOND)
    dataset = DatasetConfig(file="app-*.log*", pattern=TIMED)
    wanted = ["line", "ts", "file", "level"]
    frames = []
    for chunk in (1, 3, 100_000):
        monkeypatch.setattr(files, "CHUNK", chunk)
        notes = []
        frames.append(files.read("log", dataset, tmp_path, wanted, notes))
        assert notes == ["app-1.log.gz: 1 line(s) the pattern does not match, left out"]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    frame = frames[0]
    assert frame["line"].tolist() == [1, 2, 4, 5, 6, 7, 8, 1, 2, 3]
    assert frame["file"].tolist() == ["app-1.log.gz"] * 7 + ["app-2.log"] * 3
    assert frame["level"].tolist()[3:6] == ["ERROR", "ERROR", "INFO"]
    assert frame["ts"].tolist()[3] == "2026-03-02 9:15"
    assert frame["ts"].isna().tolist() == [False] * 4 + [True] + [False] * 5
    # Text is held as pandas holds a CSV's text (on pandas 3, Arrow-backed), lines as int64.
    text = pd.Series(["text"]).dtype
    assert frame.dtypes.to_dict() == {"line": "int64", "ts": text, "file": text, "level": text}
    # Only the rows matter when no column is wanted.
    assert len(files.read("log", dataset, tmp_path, [], None)) == 10
    assert files.read("log", dataset, tmp_path, [], None).columns.tolist() == []


def test_time_format_is_read_chunk_by_chunk_in_logs_and_csv(tmp_path, monkeypatch):
    from integrity import files
    from integrity.config import DatasetConfig

    monkeypatch.setattr(files, "CHUNK", 2)
    (tmp_path / "access.log").write_text(
        '10.0.0.1 - - [02/Mar/2026:09:15:00 +0100] "GET /"\n'
        '10.0.0.2 - - [not a time] "GET /"\n'
        '10.0.0.3 - - [02/Mar/2026:09:16:30 +0000] "GET /quotes"\n')
    (tmp_path / "access.csv").write_text(
        "ip,at\n10.0.0.1,02/Mar/2026:09:15:00 +0100\n10.0.0.2,not a time\n"
        "10.0.0.3,02/Mar/2026:09:16:30 +0000\n")
    layout = {"at": "%d/%b/%Y:%H:%M:%S %z"}
    log = DatasetConfig(file="access.log", pattern=r'^(?P<ip>\S+) \S+ \S+ \[(?P<at>[^]]+)\]',
                        time_format=layout)
    csv = DatasetConfig(file="access.csv", time_format=layout)
    expected = ["2026-03-02T09:15:00+01:00", None, "2026-03-02T09:16:30+00:00"]
    for dataset in (log, csv):
        at = files.read("access", dataset, tmp_path, ["ip", "at"])["at"]
        assert [None if pd.isna(value) else value for value in at] == expected


def test_text_times_parsed_a_slice_at_a_time_are_the_same_times(monkeypatch):
    from integrity import sources

    text = pd.Series(["2026-03-02 09:15:00", " 2026-03-02T08:15:00+01:00 ", None, "9:15",
                      "2026-03-02T09:15:00.250Z", "2026-03-02"] * 3, dtype=pd.Series(["t"]).dtype)
    text = text[text.index % 4 != 1]  # rows a filter kept: their labels are not 0..n-1
    whole = sources.to_utc(text, "Europe/Paris")
    monkeypatch.setattr(sources, "TIME_SLICE", 4)
    pd.testing.assert_series_equal(sources.to_utc(text, "Europe/Paris"), whole)
    assert whole.index.tolist() == text.index.tolist()
    assert whole.loc[0] == pd.Timestamp("2026-03-02 08:15:00", tz="UTC")  # Paris is UTC+1
    assert whole.loc[4] == pd.Timestamp("2026-03-02 09:15:00.250", tz="UTC")
    assert whole.isna().sum() == 5  # the nulls and the "9:15"s the filter kept


def test_without_arrow_backed_text_log_columns_are_object_with_the_same_values(
        tmp_path, monkeypatch):
    from integrity import files
    from integrity.config import DatasetConfig

    (tmp_path / "app-2.log").write_text(FIRST)
    dataset = DatasetConfig(file="app-2.log", pattern=TIMED,
                            time_format={"ts": "%Y-%m-%d %H:%M:%S"})
    arrow = files.read("log", dataset, tmp_path, ["ts", "level", "file"])
    monkeypatch.setattr(files, "CHUNK", 2)
    monkeypatch.setattr(files, "_text_dtype", lambda: object)  # pandas 2's text
    plain = files.read("log", dataset, tmp_path, ["ts", "level", "file"])
    assert plain.dtypes.tolist() == [object] * 3
    assert plain["ts"].tolist()[3:6] == [None, None, "2026-03-02T09:40:00"]
    pd.testing.assert_frame_equal(plain.astype(arrow.dtypes.to_dict()), arrow)
