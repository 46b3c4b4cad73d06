"""Post-deploy watches (watch.py), driven as cron drives them: `watch start` at a deploy,
`watch tick` every hour with simulated time (`--now`), over reference data with a
regression injected at a known hour, against a real loopback webhook. The runs happen at
the plan's cadence, the rollback criterion fires at the first run after the regression
(exit 4, its own alert), a missed run is a finding, and the sign-off says APPROVED or NOT
APPROVED with the exact reasons."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import database_url
from integrity.audit import parse_audit
from integrity.cli import main
from integrity.errors import ConfigErrors
from integrity.gate import ExitCode, decide
from integrity.reference.generator import generate
from integrity.results import AuditResult
from integrity.watch import JITTER, moments, progress

T0 = datetime(2026, 3, 9, 12, 15, tzinfo=timezone.utc)  # the deploy
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "reports" / "screenshots"

CHECKS = """\
checks:
  - id: quote_email_counter
    kind: counter_vs_events
    description: counter corruption
    dataset: quotes
    counter: emailSentCount
    events: {dataset: sends, entity: quoteId, time: sentAt, idempotency_key: idempotencyKey,
             where: {channel: EMAIL}}
    mode: equal
  - id: sms_delivery_rate
    kind: metric
    description: SMS delivered among sent, each hour
    dataset: sms_metrics
    numerator: sum(delivered_count)
    denominator: sum(sent_count)
    time: metric_hour
    window: 1h
    align: hour
    thresholds: {warn: "< 95%", critical: "< 80%"}
"""


def audit_file(folder: Path, watch: str) -> Path:
    path = folder / "voice-launch.yml"
    path.write_text(f"""\
name: voice-launch
connection: {{url: "${{DB}}"}}
datasets:
  quotes: {{table: AgentQuote, key: id, tenant_column: tenantId}}
  sends: {{table: QuoteSend, key: id, tenant_column: tenantId}}
  sms_metrics: {{table: sms_metrics, key: id}}
{CHECKS}
output: {{dir: "{folder / 'out'}", formats: [html, json]}}
history: {{url: "sqlite:///{folder / 'history.sqlite'}"}}
notify:
  - {{channel: webhook, url: "${{HOOK_URL}}"}}
{textwrap.dedent(watch)}""")
    return path


WATCH_24H = """\
watch:
  duration: 24h
  cadence: [{every: 4h}]
  rollback_on: [quote_email_counter]
  signoff:
    no_new_violations: [quote_*]
    metrics: {sms_delivery_rate: "> 90% in every run"}
    compare_to_baseline: {sms_delivery_rate: "not worse than 5 points"}
"""


def corrupt_counters(database: Path, count: int, reference) -> None:
    """The regression: e-mail counters incremented on idempotency hits, on `count` quotes
    that were sound (not among the violations injected before the deploy)."""
    broken = [key[0] for key in reference.expected.get("quote_email_counter", ())]
    with sqlite3.connect(database) as connection:
        quotes = [row[0] for row in connection.execute(
            'SELECT id FROM "AgentQuote" WHERE "emailSentCount" > 0 ORDER BY id DESC')
            if row[0] not in broken][:count]
        connection.executemany('UPDATE "AgentQuote" SET "emailSentCount" = '
                               '"emailSentCount" + 1 WHERE id = ?', [(q,) for q in quotes])


class Cron:
    """`integrity …` as cron runs it: same history, same environment, `--now`."""

    def __init__(self, audit: Path, env: dict[str, str]):
        self.audit, self.env = audit, env
        self.extra: list[str] = []  # options every command gets (--history URL)

    def __call__(self, *arguments: str, now: datetime):
        result = CliRunner().invoke(main, [*arguments[:2], str(self.audit), *arguments[2:],
                                           *self.extra, "--now", now.isoformat()],
                                    env=self.env)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.output
        return result

    def tick(self, now: datetime):
        return self("watch", "tick", "--no-lock", now=now)


def watched(tmp_path: Path, http_server, watch: str, data_until: datetime,
            inject: bool = True):
    """Reference data up to `data_until` in an SQLite file, and cron for an audit of it
    with `watch` whose webhook is the loopback server: (cron, database, reference)."""
    database = tmp_path / "voice.sqlite"
    reference = generate(f"sqlite:///{database}", scale=0.005, now=data_until, inject=inject)
    cron = Cron(audit_file(tmp_path, watch),
                {"DB": f"sqlite:///{database}",
                 "HOOK_URL": f"http://127.0.0.1:{http_server.server_port}/hook"})
    return cron, database, reference


def rollback_alerts(http_server, since: int = 0) -> list[dict]:
    return [{**alert, "exit_code": body["exit_code"]}
            for request in http_server.requests[since:]
            for body in [json.loads(request["body"])]
            for alert in body["alerts"] if alert["check_id"] == "(rollback)"]


def test_a_24_hour_watch_with_a_regression_is_not_approved(tmp_path, http_server):
    # The data runs to the watch's end; the SMS delivery incident starts at the deploy.
    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0 + timedelta(hours=24))
    started = cron("watch", "start", "--deploy", "v2.4.0", "--no-lock", now=T0)
    assert started.exit_code == 1, started.output  # injected violations were there before
    assert "watch #1 of deploy v2.4.0 opened" in started.output
    codes, alerts = {0: 1}, {}
    for hour in range(1, 25):
        if hour == 10:
            corrupt_counters(database, 12, reference)
        if 16 <= hour <= 19:
            continue  # the machine was down: the 16:00 run never happens
        before = len(http_server.requests)
        result = cron.tick(T0 + timedelta(hours=hour, seconds=[4, 9, 2][hour % 3]))
        if "no run due" not in result.output:
            codes[hour] = result.exit_code
            alerts[hour] = [(a["reason"], a["summary"], a["exit_code"])
                            for a in rollback_alerts(http_server, before)]
    # Runs at the cadence; what was broken before the deploy never asks for a rollback;
    # the regression does, at the first run after it, and for as long as it lasts.
    assert codes == {0: 1, 4: 1, 8: 1, 12: 4, 20: 4, 24: 4}
    rollback = ("voice-launch: ROLLBACK criterion met: counter corruption — "
                "quote_email_counter, 12 violations since the deploy")
    assert alerts == {4: [], 8: [], 12: [("new", rollback, 4)],
                      20: [("reminder", rollback, 4)], 24: [("reminder", rollback, 4)]}
    # The last run signed the watch off, and said why not.
    final = cron.tick(T0 + timedelta(hours=24, minutes=5))
    assert "no active watch" in final.output  # closed: back to the standard schedule
    before = len(http_server.requests)
    standard = cron("watch", "tick", "--no-lock", "--cron", "0 */6 * * *",
                    now=T0 + timedelta(hours=30))  # its 18:00 UTC run, outside the watch
    assert standard.exit_code == 1  # the corruption is still there: violations, no rollback
    assert [(a["reason"], a["summary"]) for a in rollback_alerts(http_server, before)] == [
        ("resolved", "voice-launch: the watch is over (rollback criteria are judged only "
                     "during a watch) after 17h 59m (since 2026-03-10 00:15 UTC)")]
    status = cron("watch", "status", now=T0 + timedelta(hours=25))
    lines = status.output.splitlines()
    assert lines[0].endswith("— signed off NOT APPROVED")
    assert lines[3] == "runs: 6 made, 1 missed (2026-03-10 04:15 UTC)"
    assert lines[4] == "rollback: criterion met at 2026-03-10 00:15 UTC"
    assert lines[5] == (
        "incidents: 4 alert(s) since the deploy: quote_email_counter fail at 2026-03-09 "
        "12:15 UTC, sms_delivery_rate warn at 2026-03-09 16:15 UTC, (rollback) fail at "
        "2026-03-10 00:15 UTC, quote_email_counter fail at 2026-03-10 00:15 UTC")
    assert [line.split(" — ")[0].strip() for line in lines[7:]] == [
        "NOT MET No rollback criterion met (quote_email_counter)",
        "met     Every run finished its audit",
        "NOT MET No missed runs",
        "NOT MET quote_*: no violation the deploy did not have",
        "NOT MET sms_delivery_rate > 90% in every run",
        "NOT MET sms_delivery_rate not worse than 5 points against the deploy's run"]
    report = (tmp_path / "out" / "watch-1" / "signoff.md").read_text()
    assert report.splitlines()[0] == "# ❌ NOT APPROVED: deploy v2.4.0 of voice-launch"
    assert "| ❌ | No missed runs | 1 missed: 2026-03-10 04:15 UTC |" in report
    assert ("| ❌ | quote_*: no violation the deploy did not have | run #4: "
            "quote_email_counter +12; run #5: quote_email_counter +12; run #6: "
            "quote_email_counter +12 — [run #4](../runs/4/report.html), [run #5]"
            "(../runs/5/report.html), [run #6](../runs/6/report.html) |") in report
    # Before and after: delivery was ~98% in the week before, 85% since the deploy.
    row = next(line for line in report.splitlines() if line.startswith("| `sms_delivery_rate`"))
    before, at_deploy, last, breached = [cell.strip() for cell in row.split("|")[2:6]]
    assert float(before.rstrip("%")) > 96 and float(at_deploy.rstrip("%")) > 95
    assert (last, breached) == ("85.00%", "5 of 6")
    assert "**missed run**" in report and "**rollback** (run #4)" in report
    # The report of the regression's run says what changed since the deploy.
    document = json.loads((tmp_path / "out" / "runs" / "4" / "report.json").read_text())
    assert document["gate"] == {"fail_on": "critical", "passed": False, "exit_code": 4,
                                "outcome": "rollback"}
    assert document["watch"]["hours"] == 12.0 and document["watch"]["rollback"] == [
        rollback.split("ROLLBACK criterion met: ")[1]]
    counter = next(c for c in document["watch"]["changes"]
                   if c["check"] == "quote_email_counter")
    assert (counter["new_since_deploy"], counter["resolved_since_deploy"]) == (12, 0)
    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)


def test_a_clean_24_hour_watch_is_approved_and_hands_back_to_the_schedule(tmp_path,
                                                                           http_server):
    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0 + timedelta(hours=30), inject=False)
    assert cron("watch", "start", "--deploy", "v2.4.1", "--no-lock", now=T0).exit_code == 0
    again = cron("watch", "start", "--deploy", "v2.4.2", "--no-lock", now=T0 + JITTER)
    assert again.exit_code == 2
    assert "watch #1 (deploy v2.4.1) of voice-launch is still active" in again.output
    early = cron("watch", "signoff", now=T0 + timedelta(hours=5))
    assert early.exit_code == 2 and "`--early` gives an interim verdict" in early.output
    codes = {}
    for hour in range(1, 25):
        result = cron.tick(T0 + timedelta(hours=hour, seconds=3))
        codes[hour] = result.exit_code
        if hour == 8:
            interim = cron("watch", "signoff", "--early", now=T0 + timedelta(hours=8, minutes=1))
            assert interim.exit_code == 0
            assert interim.output.splitlines()[0] == \
                "watch #1 (deploy v2.4.1): APPROVED so far"
    assert set(codes.values()) == {0}
    assert "APPROVED" in result.output and "NOT APPROVED" not in result.output
    assert http_server.requests == []  # nothing to say: nothing was wrong
    report = (tmp_path / "out" / "watch-1" / "signoff.md").read_text()
    assert report.splitlines()[0] == "# ✅ APPROVED: deploy v2.4.1 of voice-launch"
    assert report.count("| ✅ |") == 6
    # Closed: the tick follows the audit's standard schedule now, once per moment.
    standard = ["--cron", "0 */6 * * *"]
    after = T0 + timedelta(hours=29, minutes=50)  # 2026-03-10 18:05: the 18:00 run is due
    first = cron("watch", "tick", "--no-lock", *standard, now=after)
    assert first.exit_code == 0 and "voice-launch: 2 checks" in first.output
    second = cron("watch", "tick", "--no-lock", *standard, now=after + timedelta(minutes=5))
    assert "the standard schedule's run of 2026-03-10 18:00 UTC is done" in second.output
    # A new deploy can be watched now.
    assert cron("watch", "start", "--deploy", "v2.5.0", "--for", "2h", "--no-lock",
                now=after + timedelta(minutes=10)).exit_code == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_watch_kept_in_each_kind_of_history_store(kind, servers, tmp_path, http_server):
    """Watches live in the run history, wherever it is; a store an older integrity made
    (schema version 5, before watches) is upgraded in place."""
    from integrity.history import SCHEMA_VERSION, History

    url = database_url(kind, servers, tmp_path)
    store = History(url)
    store.ensure()
    store.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("integrity_watch_events", "integrity_watch_runs", "integrity_watches"):
            connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql("UPDATE integrity_meta SET value = '5'")
    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0 + timedelta(hours=24), inject=False)
    cron.extra = ["--history", url]
    assert cron("watch", "start", "--deploy", "v7", "--no-lock", now=T0).exit_code == 0
    for hour in range(4, 25, 4):
        assert cron.tick(T0 + timedelta(hours=hour, seconds=30)).exit_code == 0
    status = cron("watch", "status", now=T0 + timedelta(hours=25))
    assert status.output.splitlines()[0].endswith("— signed off APPROVED")
    assert "runs: 7 made, 0 missed" in status.output
    with engine.connect() as connection:
        assert connection.exec_driver_sql(
            "SELECT count(*) FROM integrity_watch_runs").scalar() == 7
        assert connection.exec_driver_sql(
            "SELECT value FROM integrity_meta").scalar() == str(SCHEMA_VERSION)
        assert [row[0] for row in connection.exec_driver_sql(
            "SELECT event FROM integrity_watch_events ORDER BY id")] == ["started",
                                                                         "signed off"]
    engine.dispose()


def test_a_tick_while_another_run_holds_the_lock_decides_nothing(tmp_path, http_server):
    from integrity.audit import load_audit
    from integrity.operations import audit_lock, lock_path

    cron, database, _ = watched(tmp_path, http_server, WATCH_24H, T0 + timedelta(hours=24),
                                inject=False)
    assert cron("watch", "start", "--deploy", "v1", now=T0).exit_code == 0
    audit = load_audit(str(cron.audit), environ=cron.env)
    with audit_lock(lock_path(audit.file, audit.connection.url, audit.name)):
        held = cron("watch", "tick", now=T0 + timedelta(hours=4))
    assert held.exit_code == 3 and "another run holds the lock" in held.output
    assert "runs: 1 made, 0 missed" in cron("watch", "status",
                                            now=T0 + timedelta(hours=4, minutes=1)).output
    assert cron("watch", "tick", now=T0 + timedelta(hours=4, minutes=5)).exit_code == 0
    assert "runs: 2 made, 0 missed" in cron("watch", "status",
                                            now=T0 + timedelta(hours=4, minutes=6)).output


# ---------------------------------------------------------------------------
# The shipped plans: seed 000's seven days and seed 002's twenty-four hours.

AUDITS = ROOT / "audits"


def shipped(name: str, folder: Path) -> Path:
    """audits/NAME.yml as shipped, with its reports and history in `folder`."""
    path = folder / f"{name}.yml"
    text = (AUDITS / f"{name}.yml").read_text()
    # Relative paths (the log) are read from the audit file's folder, as shipped.
    path.write_text(text + f"output: {{dir: \"{folder / 'out'}\", formats: [json]}}\n"
                           f"history: {{url: \"sqlite:///{folder / 'history.sqlite'}\"}}\n")
    return path


SEED_000_CHECKS = ["quote_*", "send_error_rate", "send_error_rate_rollback",
                   "send_transaction_failures", "whatsapp_sends_blocked",
                   "whatsapp_urls_well_formed", "send_success_rate", "send_success_rollback"]


def test_seed_000_watched_for_7_days(tmp_path, monkeypatch):
    """The shipped plan: hourly for three days, then daily; the counters corrupted on day
    4 (hour 80) are a rollback at the first run after it, the daily one of hour 96; the
    request log's incident in the last hour before the end breaks the error-rate criterion
    in the last run only."""
    from integrity.reference import traffic

    monkeypatch.setattr(traffic, "REQUEST_HOURS", 8 * 24)  # the watch and the day before
    database = tmp_path / "reference.sqlite"
    reference = generate(f"sqlite:///{database}", scale=0.005, now=T0 + timedelta(days=7))
    cron = Cron(shipped("seed-000-send-quote", tmp_path),
                {"REFERENCE_DATABASE_URL": f"sqlite:///{database}"})
    only = [option for pattern in SEED_000_CHECKS for option in ("--check", pattern)]
    started = cron("watch", "start", "--deploy", "phase-2", "--no-lock", *only, now=T0)
    assert started.exit_code == 1, started.output  # violations injected long before
    ran = {}
    for hour in range(1, 7 * 24 + 1):
        if hour == 80:
            corrupt_counters(database, 3, reference)
        result = cron("watch", "tick", "--no-lock", *only,
                      now=T0 + timedelta(hours=hour, seconds=7))
        if "no run due" not in result.output:
            ran[hour] = result.exit_code
    assert list(ran) == [*range(1, 73), 96, 120, 144, 168]
    assert sorted(hour for hour, code in ran.items() if code == 4) == [96, 120, 144, 168]
    assert {code for hour, code in ran.items() if hour < 96} == {1}
    status = cron("watch", "status", now=T0 + timedelta(days=7, hours=1))
    lines = status.output.splitlines()
    assert lines[2] == "cadence: every 1h until 3d, then every 1d"
    assert lines[3] == "runs: 77 made, 0 missed"
    assert [line.split(" — ")[0].strip() for line in lines[lines.index("criteria so far:")
                                                             + 1:]] == [
        "NOT MET No rollback criterion met (send_error_rate_rollback, "
        "send_transaction_failures, whatsapp_sends_blocked, whatsapp_urls_well_formed, "
        "quote_email_counter, quote_sms_counter, quote_sent_at_valid, send_success_rollback)",
        "met     Every run finished its audit",
        "met     No missed runs",
        "NOT MET quote_*: no violation the deploy did not have",
        "NOT MET send_error_rate < 1% in every run",
        "NOT MET send_success_rate > 95% in every run"]
    # The request log's incident, in the last hour: only the last run (#77) measured it.
    assert "send_error_rate < 1% in every run — run #77: 19.51%" in status.output  # 8 of 41
    assert "send_success_rate > 95% in every run — run #77: 81.69%" in status.output
    report = (tmp_path / "out" / "watch-1" / "signoff.md").read_text()
    assert report.splitlines()[0] == "# ❌ NOT APPROVED: deploy phase-2 of seed-000-send-quote"


@pytest.mark.parametrize("inject", [False, True], ids=["clean", "incident"])
def test_seed_002_watched_for_24_hours_on_postgresql(inject, servers, tmp_path, health):
    """The shipped plan on PostgreSQL: hours 0, 4 … 24 and the sign-off. Clean, APPROVED FOR
    CUSTOMER LAUNCH; with the reference incident in the watch's last hour (a 500 burst, a
    background job stopped), the 24-hour run meets the error-rate rollback criterion and the
    sign-off says NOT APPROVED, and why."""
    from integrity.reference.generator import write_app_log

    url = servers.database("postgresql")
    reference = generate(url, scale=0.005, now=T0 + timedelta(hours=24), inject=inject)
    log = write_app_log(reference, tmp_path / "app.log")
    cron = Cron(shipped("seed-002-voice-24h", tmp_path),
                {"REFERENCE_DATABASE_URL": url, "APP_LOG": str(log), "HEALTH_URL": f"{health}/health",
                 "HEALTH_RETRY_DELAY": "1s"})
    started = cron("watch", "start", "--deploy", "v1.0.0", "--no-lock", now=T0)
    assert started.exit_code == 0, started.output
    codes = {}
    for hour in range(1, 25):
        result = cron.tick(T0 + timedelta(hours=hour, seconds=4))
        if "no run due" not in result.output:
            codes[hour] = result.exit_code
    assert codes == ({4: 0, 8: 0, 12: 0, 16: 0, 20: 0, 24: 0} if not inject else
                     {4: 0, 8: 0, 12: 0, 16: 0, 20: 0, 24: 4})
    report = (tmp_path / "out" / "watch-1" / "signoff.md").read_text().splitlines()
    if not inject:
        assert report[0] == "# ✅ APPROVED: deploy v1.0.0 of seed-002-voice-24h"
        assert sum(line.startswith("| ✅ |") for line in report) == 8
        return
    assert report[0] == "# ❌ NOT APPROVED: deploy v1.0.0 of seed-002-voice-24h"
    broken = [line.split(" | ")[1] for line in report if line.startswith("| ❌ |")]
    assert broken == ["No rollback criterion met (backend_health, error_rate)",
                      "background_jobs pass in every run",
                      "error_rate < 1% in every run",
                      "endpoint_p99 not higher than 20% against the deploy's run"]
    evidence = {line.split(" | ")[1]: line.split(" | ")[2] for line in report
                if line.startswith("| ❌ |")}
    assert evidence["endpoint_p99 not higher than 20% against the deploy's run"].startswith(
        "run #7: /api/agents/quotes/[id]/send: ")  # the send endpoint slowed down


# ---------------------------------------------------------------------------
# The parts, one by one.


def test_moments_follow_the_cadence_from_the_deploy():
    plan = {"cadence": [[3 * 86400, 3600], [None, 86400]]}
    watch = {"started_at": T0, "ends_at": T0 + timedelta(days=7), "plan": plan}
    found = moments(watch)
    assert len(found) == 72 + 4 + 1
    assert found[:2] == [T0, T0 + timedelta(hours=1)]
    assert found[71:] == [T0 + timedelta(hours=71)] + [T0 + timedelta(days=d)
                                                       for d in (3, 4, 5, 6, 7)]
    # Extended by a day and a half: the last cadence runs on, and the end is a moment.
    longer = {**watch, "ends_at": T0 + timedelta(days=8, hours=12)}
    assert moments(longer)[-3:] == [T0 + timedelta(days=7), T0 + timedelta(days=8),
                                    T0 + timedelta(days=8, hours=12)]
    # seed 002: hours 0, 4, … 24.
    four = {"started_at": T0, "ends_at": T0 + timedelta(hours=24),
            "plan": {"cadence": [[None, 4 * 3600]]}}
    assert [(m - T0) / timedelta(hours=1) for m in moments(four)] == [0, 4, 8, 12, 16, 20, 24]


def test_a_run_is_due_from_a_minute_early_and_missed_once_the_next_is_due():
    watch = {"started_at": T0, "ends_at": T0 + timedelta(hours=24), "state": "active",
             "plan": {"cadence": [[None, 4 * 3600]]}}
    done = [{"slot_at": T0, "run_id": 1}]
    early = progress(watch, done, T0 + timedelta(hours=4) - timedelta(seconds=59))
    assert early.due == T0 + timedelta(hours=4) and early.missed == []
    too_early = progress(watch, done, T0 + timedelta(hours=4) - timedelta(seconds=61))
    assert too_early.due is None and too_early.next == T0 + timedelta(hours=4)
    late = progress(watch, done, T0 + timedelta(hours=9))
    assert late.due == T0 + timedelta(hours=8) and late.missed == [T0 + timedelta(hours=4)]
    ended = progress(watch, done + [{"slot_at": T0 + timedelta(hours=24), "run_id": 2}],
                     T0 + timedelta(hours=25))
    assert ended.ended and ended.due is None and len(ended.missed) == 5


def test_a_rollback_wins_over_an_incomplete_audit():
    result = AuditResult(audit_name="a", audit_file="a.yml", config_hash="", engine="sql",
                         database="", dialect=None, started_at=T0, finished_at=T0, now=T0,
                         checks=[], fail_on="critical", sample_limit=0,
                         errors=["a check crashed"])
    assert decide(result) == ExitCode.AUDIT_ERROR
    result.rollback.append("counter corruption — quote_email_counter, 3 violations")
    assert decide(result) == ExitCode.ROLLBACK == 4


PLAN_HEAD = f"""\
connection: {{url: "sqlite:///x.sqlite"}}
datasets:
  quotes: {{table: AgentQuote, key: id}}
  sends: {{table: QuoteSend, key: id}}
  sms_metrics: {{table: sms_metrics, key: id}}
{CHECKS}"""


def test_a_watch_plan_with_mistakes_names_each_one():
    text = PLAN_HEAD + """\
watch:
  duration: 7d
  cadence: [{every: 1h}, {every: 1d}]
  rollback_on: [quote_email_countr]
  signoff:
    all_runs_pass: [lead_*]
    metrics: {quote_email_counter: "< 3", sms_delivery_rate: "< 1 wombat"}
    compare_to_baseline: {sms_delivery_rate: "not worse than 2 points"}
"""
    with pytest.raises(ConfigErrors) as raised:
        parse_audit(text, file="plan.yml")
    assert str(raised.value).splitlines() == [
        "plan.yml:27:3: watch.cadence: entry 0 needs `until:` (only the last entry may run "
        "to the end of the watch)"]
    fixed = text.replace("[{every: 1h}, {every: 1d}]", "[{until: 3d, every: 1h}, {every: 1d}]")
    with pytest.raises(ConfigErrors) as raised:
        parse_audit(fixed, file="plan.yml")
    assert str(raised.value).splitlines() == [
        "plan.yml:28:17: watch.rollback_on[0]: no check matches 'quote_email_countr'; did "
        "you mean 'quote_email_counter'?",
        "plan.yml:30:21: watch.signoff.all_runs_pass[0]: no check matches 'lead_*'",
        "plan.yml:31:15: watch.signoff.metrics.quote_email_counter: quote_email_counter is a "
        "counter_vs_events check: metrics judges the value of a metric or freshness check "
        "(use all_runs_pass or no_new_violations)",
        "plan.yml:31:43: watch.signoff.metrics.sms_delivery_rate: invalid condition "
        "'< 1 wombat': use e.g. '< 1% in every run', '<= 500 on average', '> 95% in the "
        "last run'"]


def test_extend_and_abort(tmp_path, http_server):
    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0, inject=False)
    cron("watch", "start", "--deploy", "v9", "--no-lock", now=T0)
    extended = cron("watch", "extend", "--by", "12h", "--reason", "a quiet weekend",
                    now=T0 + timedelta(hours=1))
    assert extended.output.strip() == "watch #1 now ends 2026-03-11 00:15 UTC"
    status = cron("watch", "status", now=T0 + timedelta(hours=2))
    assert "hour 2 of 36" in status.output and "runs: 1 made, 0 missed, 9 to come" in \
        status.output
    aborted = cron("watch", "abort", "--reason", "rolled back by hand",
                   now=T0 + timedelta(hours=3))
    assert aborted.output.strip() == "watch #1 (deploy v9) aborted: rolled back by hand"
    later = cron("watch", "status", now=T0 + timedelta(days=3))
    assert "runs: 1 made, 0 missed" in later.output  # nothing is due after an abort
    assert "no active watch" in cron.tick(T0 + timedelta(hours=4)).output
    again = cron("watch", "abort", "--reason", "twice", now=T0 + timedelta(hours=5))
    assert again.exit_code == 2 and "no active watch of voice-launch" in again.output


def test_schedule_prints_one_line_for_watches_and_the_standard_schedule(tmp_path):
    path = audit_file(tmp_path, WATCH_24H)
    result = CliRunner().invoke(main, ["schedule", str(path), "--watch", "--cron",
                                       "0 3 * * *"], env={"DB": "sqlite:///x.sqlite",
                                                          "HOOK_URL": "http://x"})
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("*/5 * * * * /bin/sh -c ")
    assert f"watch tick {path}" in line and "--cron '\"'\"'0 3 * * *'\"'\"'" in line
    # A tick meeting its own run still going (exit 3) is not mailed; anything else is.
    assert "[ $code -eq 0 ] || [ $code -eq 3 ] || echo" in line


# ---------------------------------------------------------------------------
# What a hostile read found, each now a test.


def sql(database: Path, *statements: str) -> None:
    with sqlite3.connect(database) as connection:
        for statement in statements:
            connection.execute(statement)


def test_no_watch_opens_on_an_incomplete_hour_0(tmp_path, http_server):
    """An hour 0 that could not audit everything would make what it missed look new later:
    a false rollback. No watch opens; the run is recorded as the audit error it was."""
    cron, database, _ = watched(tmp_path, http_server, WATCH_24H, T0 + timedelta(hours=24))
    sql(database, 'ALTER TABLE "QuoteSend" RENAME TO "QuoteSendOld"')
    started = cron("watch", "start", "--deploy", "v3", "--no-lock", now=T0)
    assert started.exit_code == 2
    assert "watch #1 of deploy v3 NOT opened: hour 0 (run #1) could not audit everything: " \
        "quote_email_counter:" in started.output
    sql(database, 'ALTER TABLE "QuoteSendOld" RENAME TO "QuoteSend"')
    assert "no active watch" in cron.tick(T0 + timedelta(hours=4, seconds=5)).output
    status = cron("watch", "status", now=T0 + timedelta(hours=5))
    assert status.output.splitlines()[0].endswith("— aborted")
    refused = cron("watch", "signoff", "--early", now=T0 + timedelta(hours=5))
    assert refused.exit_code == 2 and "was aborted at 2026-03-09 12:15 UTC: hour 0" in \
        refused.output and "it has no verdict" in refused.output


def test_a_metric_worse_than_at_the_deploy_is_a_rollback(tmp_path, http_server):
    cron, database, _ = watched(tmp_path, http_server, WATCH_24H.replace(
        "rollback_on: [quote_email_counter]", "rollback_on: [sms_delivery_rate]"),
        T0 + timedelta(hours=24), inject=False)
    sql(database, "UPDATE sms_metrics SET delivered_count = 93 WHERE metric_hour = "
                  "'2026-03-09 11:00:00.000000'",
        "UPDATE sms_metrics SET delivered_count = 50 WHERE metric_hour = "
        "'2026-03-09 15:00:00.000000'")
    assert cron("watch", "start", "--deploy", "v4", "--no-lock", now=T0).exit_code == 0
    ticked = cron.tick(T0 + timedelta(hours=4, seconds=5))
    assert ticked.exit_code == 4
    assert "ROLLBACK criterion met: SMS delivered among sent, each hour — sms_delivery_rate " \
        "at 50.00% (warn at the deploy)" in ticked.output


def test_the_watch_of_an_unreachable_database_fails_the_tick(tmp_path, http_server):
    cron, database, _ = watched(tmp_path, http_server, WATCH_24H, T0 + timedelta(hours=24),
                                inject=False)
    assert cron("watch", "start", "--deploy", "v5", "--no-lock", now=T0).exit_code == 0
    database.rename(tmp_path / "moved.sqlite")
    ticked = cron.tick(T0 + timedelta(hours=4, seconds=5))
    assert ticked.exit_code == 2 and "does not exist, so which watch is its cannot be known" \
        in ticked.output
    assert cron("watch", "tick", "--no-history", now=T0 + timedelta(hours=4)).exit_code == 2


def test_a_manual_signoff_counts_the_last_moment_and_is_given_once(tmp_path, http_server):
    cron, database, _ = watched(tmp_path, http_server, WATCH_24H, T0 + timedelta(hours=24),
                                inject=False)
    cron("watch", "start", "--deploy", "v6", "--no-lock", now=T0)
    for hour in range(4, 21, 4):
        cron.tick(T0 + timedelta(hours=hour, seconds=5))
    signed = cron("watch", "signoff", now=T0 + timedelta(hours=24))  # no 24h run
    assert signed.exit_code == 1
    assert "NOT MET No missed runs — 1 missed: 2026-03-10 12:15 UTC" in signed.output
    report = tmp_path / "out" / "watch-1" / "signoff.md"
    written = report.read_text()
    again = cron("watch", "signoff", "--early", now=T0 + timedelta(hours=30))
    assert again.exit_code == 1 and again.output.splitlines()[0] == \
        "watch #1 (deploy v6): NOT APPROVED (signed off 2026-03-10 12:15 UTC)"
    assert report.read_text() == written  # the verdict given is not re-judged or rewritten
    status = cron("watch", "status", now=T0 + timedelta(days=3))
    assert "runs: 6 made, 1 missed (2026-03-10 12:15 UTC)" in status.output


def test_a_check_renamed_during_the_watch_cannot_pass_for_a_clean_one(tmp_path, http_server):
    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0 + timedelta(hours=24), inject=False)
    cron("watch", "start", "--deploy", "v8", "--no-lock", now=T0)
    text = cron.audit.read_text()
    cron.audit.write_text(text.replace("id: quote_email_counter", "id: email_counter")
                          .replace("rollback_on: [quote_email_counter]", "rollback_on: []")
                          .replace("no_new_violations: [quote_*]", "no_new_violations: []"))
    corrupt_counters(database, 3, reference)
    ticked = cron.tick(T0 + timedelta(hours=4, seconds=5))
    assert ticked.exit_code == 1  # the kept plan still names quote_email_counter
    assert "the watch's rollback_on quote_email_counter matches no check of this run" in \
        ticked.output
    early = cron("watch", "signoff", "--early", now=T0 + timedelta(hours=4, minutes=1))
    assert "NOT MET No rollback criterion met (quote_email_counter) — none in 2 run(s); not " \
        "judged in run #2 (quote_email_counter did not run)" in early.output
    assert "NOT MET quote_*: no violation the deploy did not have — run #2: " \
        "quote_email_counter did not run" in early.output


def test_comparisons_with_nothing_never_pass():
    from integrity.units import parse_baseline_comparison, parse_run_condition
    from integrity.watch import _baseline_criterion, _metric_criterion

    def run(run_id, groups):
        return {"run_id": run_id, "checks": {"rate": {"value": None, "groups": groups}}}

    hour_0 = run(1, {"EMAIL": 0.99, "SMS": None})
    later = [hour_0, run(2, {"EMAIL": 0.98, "SMS": 0.97, "LINK": 0.5}),
             {"run_id": 3, "checks": {}}]
    comparison = parse_baseline_comparison("not worse than 5 points")
    judged = _baseline_criterion("rate", comparison, "lower", later, hour_0, True)
    assert (judged.met, judged.runs) == (False, [2, 3])
    assert judged.evidence == ("run #2: SMS: no value at the deploy to compare with; "
                               "run #3: not measured")
    nothing = _baseline_criterion("rate", comparison, "lower", later, run(1, {}), True)
    assert (nothing.met, nothing.evidence) == (False, "no value at the deploy (hour 0) to "
                                                      "compare with")
    average = _metric_criterion("rate", parse_run_condition("> 90% on average"),
                                [run(1, {"EMAIL": 0.99, "SMS": 0.85}),
                                 run(2, {"EMAIL": 0.97, "SMS": 0.99})], True)
    assert (average.met, average.evidence) == (True, "EMAIL: average 98.00%, SMS: average "
                                                     "92.00% over 2 run(s)")
    last = _metric_criterion("rate", parse_run_condition("> 90% in the last run"),
                             [run(1, {"EMAIL": 0.5}), run(2, {"EMAIL": 0.95})], True)
    assert (last.met, last.runs) == (True, [])


def test_the_standard_schedule_is_read_in_local_time_as_cron_reads_it(monkeypatch):
    import time

    from integrity.watch import last_scheduled

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:  # 03:00 in Berlin (UTC+1 in March) is 02:00 UTC
        assert last_scheduled("0 3 * * *", datetime(2026, 3, 10, 2, 30, tzinfo=timezone.utc)) \
            == datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)
        assert last_scheduled("0 3 * * *", datetime(2026, 3, 10, 1, 30, tzinfo=timezone.utc)) \
            == datetime(2026, 3, 9, 2, 0, tzinfo=timezone.utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_cadence_faster_than_the_tick_is_refused():
    text = PLAN_HEAD + """\
watch: {duration: 20m, cadence: [{every: 2m}]}
"""
    with pytest.raises(ConfigErrors) as raised:
        parse_audit(text, file="fast.yml")
    assert str(raised.value) == ("fast.yml:25:35: watch.cadence[0].every: a watch runs at "
                                 "most every 5 minutes (its cron tick's own period): give "
                                 "every: 5m or more")


def test_the_signoff_page_in_a_browser(tmp_path, http_server):
    """What a product manager opens: the verdict first, each criterion, before/after."""
    from browser import Browser

    cron, database, reference = watched(tmp_path, http_server, WATCH_24H,
                                        T0 + timedelta(hours=24))
    cron("watch", "start", "--deploy", "v2.4.0", "--no-lock", now=T0)
    for hour in (4, 8, 12, 20, 24):
        if hour == 12:
            corrupt_counters(database, 12, reference)
        cron.tick(T0 + timedelta(hours=hour, seconds=5))
    page = tmp_path / "out" / "watch-1" / "signoff.html"
    browser = Browser()
    try:
        browser.open(page.as_uri(), scripts=False)
        assert browser.evaluate("document.getElementById('verdict').textContent") == \
            "NOT APPROVED"
        marks = browser.evaluate("[...document.querySelectorAll('td.mark')]"
                                 ".map(td => td.textContent)")
        assert marks == ["✗ not met", "✓ met", "✗ not met", "✗ not met", "✗ not met",
                         "✗ not met"]
        links = browser.evaluate("[...document.querySelectorAll('tr.broken a')]"
                                 ".map(a => a.getAttribute('href'))")
        assert "../runs/4/report.html" in links
        assert browser.evaluate("document.body.scrollWidth <= window.innerWidth") is True
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        image = browser.screenshot(str(SCREENSHOTS / "signoff.png"))
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 20_000
    finally:
        browser.close()
