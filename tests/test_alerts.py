"""The alert lifecycle on the run's clock: reminders, held-back alerts, recovery, routing,
acknowledgement, dry runs and each run's own report — against real loopback servers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from integrity.cli import main
from test_notify import ROUTING_KEY, leads_db, write_audit

DAY = "2026-03-02"


def at(clock: str) -> str:
    return f"{DAY}T{clock}Z"


def run(audit, tmp_path, env, clock: str, *extra):
    result = CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"),
                                       "--history", f"sqlite:///{tmp_path / 'h.sqlite'}",
                                       "--no-lock", "--now", at(clock), *extra],
                                env=env, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return json.loads((tmp_path / "out" / "report.json").read_text())


def texts(server) -> list[str]:
    """Each Slack message: its headline and first alert line."""
    return [" | ".join(json.loads(r["body"])["text"].splitlines()[:2]) for r in server.requests]


def test_reminders_while_it_lasts_then_a_recovery_message(sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 2h}
""")
    leads_db(sqlite_db, 1)
    for clock in ("10:00:05", "11:00:03", "11:59:31", "13:00:04", "14:00:06"):
        run(audit, tmp_path, env, clock)  # 11:59:31 is 29 s early: cron's jitter counts
    leads_db(sqlite_db, 0)
    run(audit, tmp_path, env, "15:00:02")
    run(audit, tmp_path, env, "16:00:02")  # fixed and told: silence
    assert texts(http_server) == [
        "[FAIL] integrity alerts: 1 check needs attention (exit 1) | "
        "- alerts: dupes FAIL — 1 violation, 1 new",
        "[FAIL] integrity alerts: 1 check needs attention (exit 1) | "
        "- alerts: dupes FAIL — 1 violation — still, since 2026-03-02 10:00 UTC (1h 59m), "
        "reminder 1",
        "[FAIL] integrity alerts: 1 check needs attention (exit 1) | "
        "- alerts: dupes FAIL — 1 violation — still, since 2026-03-02 10:00 UTC (4h), "
        "reminder 2",
        "[RESOLVED] integrity alerts: 1 recovered (exit 0) | "
        "- alerts: dupes passes again after 4h 59m (since 2026-03-02 10:00 UTC)"]


def test_a_held_back_alert_is_sent_when_the_cooldown_ends(sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 2h, repeat: never}
""")
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "10:00:00")          # fired
    leads_db(sqlite_db, 0)
    run(audit, tmp_path, env, "10:30:00")          # recovered (told at once)
    leads_db(sqlite_db, 1)
    held = run(audit, tmp_path, env, "11:00:00")   # back within 2 h of the last message
    run(audit, tmp_path, env, "12:00:00")          # still held
    run(audit, tmp_path, env, "12:30:00")          # the cooldown is over: said, late
    run(audit, tmp_path, env, "16:00:00")          # repeat: never — no reminder
    assert [d["suppressed"] for d in held["notifications"]] == [["dupes"]]
    assert texts(http_server)[2:] == [
        "[FAIL] integrity alerts: 1 check needs attention (exit 1) | "
        "- alerts: dupes FAIL — 1 violation — since 2026-03-02 11:00 UTC "
        "(held back until now)"]
    assert len(http_server.requests) == 3
    log = CliRunner().invoke(main, ["alerts", "log", str(audit), "--history",
                                    f"sqlite:///{tmp_path / 'h.sqlite'}"])
    assert [line.split()[3] for line in log.output.splitlines()][::-1] == [
        "fired", "recovered", "held", "fired"], log.output


def test_routing_sends_warnings_to_slack_and_failures_to_pagerduty(sqlite_db, tmp_path,
                                                                 http_server):
    base = f"http://127.0.0.1:{http_server.server_port}"
    env = {"SLACK_WEBHOOK_URL": f"{base}/slack", "PD_KEY": ROUTING_KEY}
    path = tmp_path / "alerts.yml"
    path.write_text(f"""\
name: alerts
connection: {{url: "{sqlite_db.url}"}}
datasets: {{leads: {{table: leads, key: id}}}}
checks:
  - id: dupes
    kind: duplicates
    dataset: leads
    columns: email
    thresholds: {{warn: "> 0", critical: "> 2"}}
  - {{id: ids, kind: duplicates, dataset: leads, columns: id, notify: {{channels: [oncall]}}}}
notify:
  - {{channel: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}", severities: [warning],
     checks: [dup*]}}
  - {{channel: pagerduty, name: oncall, routing_key: "${{PD_KEY}}", severities: [critical],
     events_url: "{base}/pd"}}
""")
    leads_db(sqlite_db, 1)
    run(path, tmp_path, env, "10:00:00")   # dupes warns: Slack only
    leads_db(sqlite_db, 3)
    run(path, tmp_path, env, "11:00:00")   # dupes fails: PagerDuty; Slack neither repeats
    run(path, tmp_path, env, "12:00:00")   # nor resolves while another channel has it
    leads_db(sqlite_db, 0)
    run(path, tmp_path, env, "13:00:00")   # passes: both hear it ended
    sent = [(r["path"], json.loads(r["body"]).get("event_action") or
             json.loads(r["body"])["text"].splitlines()[0]) for r in http_server.requests]
    assert sent == [
        ("/slack", "[WARN] integrity alerts: 1 check needs attention (exit 0)"),
        ("/pd", "trigger"),
        ("/slack", "[RESOLVED] integrity alerts: 1 recovered (exit 0)"),
        ("/pd", "resolve")]


def test_a_check_may_name_only_channels_that_exist(sqlite_db, tmp_path):
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", name: team}
  - {channel: webhook, url: "${A}"}
  - {channel: webhook, url: "${B}"}
""")
    text = audit.read_text().replace(
        "columns: email}", "columns: email, notify: {channels: [teem, webhook]}}")
    audit.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(audit)],
                                env={"SLACK_WEBHOOK_URL": "https://x/y", "A": "https://a/b",
                                     "B": "https://b/c"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "notify.channels" in line]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "checks[0].notify.channels[0]: no channel named 'teem'; did you mean 'team'? "
        "(channels: team, webhook)",
        "checks[0].notify.channels[1]: 2 channels are 'webhook': give them a `name:` and "
        "use it here"]


def test_dry_run_writes_the_messages_and_sends_nothing(sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack/T0/B0"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
""")
    leads_db(sqlite_db, 1)
    outbox = tmp_path / "outbox.jsonl"
    run(audit, tmp_path, env, "10:00:00", "--notify-dry-run", str(outbox))
    run(audit, tmp_path, env, "11:00:00", "--notify-dry-run", str(outbox))  # a reminder
    assert http_server.requests == []
    messages = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert [(m["at"], m["to"], m["body"]["text"].splitlines()[1]) for m in messages] == [
        ("2026-03-02T10:00:00Z", "http://127.0.0.1", "- alerts: dupes FAIL — 1 violation, 1 new"),
        ("2026-03-02T11:00:00Z", "http://127.0.0.1",
         "- alerts: dupes FAIL — 1 violation — still, since 2026-03-02 10:00 UTC (1h), "
         "reminder 1")]
    assert "T0/B0" not in outbox.read_text()


def test_acknowledged_alerts_stop_reminding_and_pagerduty_hears_it(sqlite_db, tmp_path,
                                                                  http_server):
    base = f"http://127.0.0.1:{http_server.server_port}"
    env = {"SLACK_WEBHOOK_URL": f"{base}/slack", "PD_KEY": ROUTING_KEY}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - {{channel: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}"}}
  - {{channel: pagerduty, routing_key: "${{PD_KEY}}", events_url: "{base}/pd"}}
""")
    history = ["--history", f"sqlite:///{tmp_path / 'h.sqlite'}"]
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "10:00:00")
    listed = CliRunner().invoke(main, ["alerts", "list", str(audit), *history], env=env)
    assert [line.split(" on ")[0] for line in listed.output.splitlines()] == [
        "FAIL  dupes", "FAIL  dupes"]
    assert "open since 2026-03-02 10:00 UTC, last value 1 violation, sent, 0 reminder(s)" \
        in listed.output
    acked = CliRunner().invoke(main, ["alerts", "ack", str(audit), "dupes", "--note",
                                      "ana is on it", "--for", "3h", "--now", at("10:20:00"),
                                      *history], env=env)
    assert acked.exit_code == 0, acked.output
    assert acked.output.splitlines()[-1] == (
        "acknowledged dupes on pagerduty, slack until 2026-03-02 13:20 UTC: ana is on it")
    assert json.loads(http_server.requests[-1]["body"])["event_action"] == "acknowledge"
    run(audit, tmp_path, env, "11:00:00")   # acknowledged: no reminder
    run(audit, tmp_path, env, "12:00:00")
    run(audit, tmp_path, env, "13:30:00")   # the acknowledgement ended: reminders again
    slack = [r for r in http_server.requests if r["path"] == "/slack"]
    assert [json.loads(r["body"])["text"].splitlines()[1] for r in slack] == [
        "- alerts: dupes FAIL — 1 violation, 1 new",
        "- alerts: dupes FAIL — 1 violation — still, since 2026-03-02 10:00 UTC (3h 30m), "
        "reminder 1"]
    again = CliRunner().invoke(main, ["alerts", "ack", str(audit), "dupes", "--note", "x",
                                      "--until", "2026-03-02T13:00:00Z", "--now",
                                      at("13:40:00"), *history], env=env)
    assert again.exit_code == 2 and again.output.strip().endswith(
        "--until 2026-03-02T13:00:00Z is not after now (2026-03-02 13:40 UTC)")
    nothing = CliRunner().invoke(main, ["alerts", "ack", str(audit), "ids", "--note", "x",
                                        *history], env=env)
    assert nothing.exit_code == 2 and "ids: no open alert of alerts" in nothing.output


def test_each_run_keeps_its_own_report_and_alerts_link_to_it(sqlite_db, tmp_path,
                                                            http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 0s}
""")
    audit.write_text(audit.read_text() + "output: {keep_runs: 2}\n")
    leads_db(sqlite_db, 1)
    for clock in ("10:00:00", "11:00:00", "12:00:00"):
        report = run(audit, tmp_path, env, clock)
    runs = tmp_path / "out" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["2", "3"]
    assert sorted(p.name for p in (runs / "3").iterdir()) == ["report.html", "report.json"]
    assert json.loads((runs / "2" / "report.json").read_text())["run"]["run_id"] == 2
    link = json.loads(http_server.requests[-1]["body"])["text"].splitlines()[-1]
    assert link == f"Report: {(runs / '3' / 'report.html').resolve()}"
    assert report["run"]["run_id"] == 3


def test_alert_state_of_an_older_store_carries_over(sqlite_db, tmp_path, http_server):
    """A version-3 store's alert state (when each alert was last sent, open PagerDuty
    incidents) becomes the new alerts: no cooldown restarts, no incident forgotten."""
    base = f"http://127.0.0.1:{http_server.server_port}"
    env = {"PD_KEY": ROUTING_KEY}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - {{channel: pagerduty, routing_key: "${{PD_KEY}}", events_url: "{base}/pd"}}
""")
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "10:00:00")
    store = sqlite3.connect(tmp_path / "h.sqlite")
    with store:  # as version 3 kept it
        store.execute("INSERT INTO integrity_alert_state SELECT audit, target, channel, "
                      "check_id, last_sent_at, last_status, open FROM integrity_alerts")
        store.execute("DROP TABLE integrity_alerts")
        store.execute("UPDATE integrity_meta SET value = '3'")
    store.close()
    leads_db(sqlite_db, 0)
    run(audit, tmp_path, env, "11:00:00")
    assert [json.loads(r["body"])["event_action"] for r in http_server.requests] == [
        "trigger", "resolve"]


@pytest.mark.parametrize("command", [["alerts", "list"], ["alerts", "log"]])
def test_reading_alerts_never_creates_a_store(sqlite_db, tmp_path, command):
    audit = write_audit(tmp_path, sqlite_db, '  - {channel: slack, webhook_url: "${S}"}\n')
    store = tmp_path / "none.sqlite"
    result = CliRunner().invoke(main, [*command, str(audit), "--history", f"sqlite:///{store}"],
                                env={"S": "https://hooks.example.com/x"})
    assert result.exit_code == 0, result.output
    assert not store.exists()


def test_history_reads_the_audit_files_store_and_shows_data_time_values_and_deliveries(
        sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
""")
    store = tmp_path / "h.sqlite"
    audit.write_text(audit.read_text() + f"history: {{url: 'sqlite:///{store}'}}\n")
    leads_db(sqlite_db, 1)
    CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"), "--no-lock",
                              "--now", at("10:00:05")], env=env, catch_exceptions=False)
    listed = CliRunner().invoke(main, ["history", "list", str(audit)], env=env)
    assert listed.exit_code == 0, listed.output
    assert "data as of 2026-03-02 10:00:05" in listed.output and " alerts " in listed.output
    shown = CliRunner().invoke(main, ["history", "show", "1", str(audit)], env=env)
    lines = shown.output.splitlines()
    assert "data as of 2026-03-02 10:00:05 UTC" in lines[0]
    assert [line.split()[:3] for line in lines[1:3]] == [["FAIL", "dupes", "1"],
                                                         ["PASS", "ids", "0"]]
    assert lines[3].startswith("  sent to slack:") and lines[3].endswith(
        ": dupes — delivered (1 attempt(s))")
    nowhere = tmp_path / "nowhere.sqlite"
    empty = CliRunner().invoke(main, ["history", "list", str(audit), "--history",
                                      f"sqlite:///{nowhere}"], env=env)
    assert (empty.exit_code, empty.output, nowhere.exists()) == (
        0, "no runs recorded yet\n", False)


def test_schedule_notes_a_sliding_window_and_not_an_aligned_one(tmp_path):
    env = {"PAGERDUTY_ROUTING_KEY": "R0", "SLACK_WEBHOOK_URL": "https://hooks.example.com/x"}
    shipped = Path(__file__).parents[1] / "audits" / "sms-alerts.yml"
    sliding = tmp_path / "sliding.yml"
    sliding.write_text(shipped.read_text().replace("    align: hour", "    # no align"))
    notes = {}
    for path in (shipped, sliding):
        result = CliRunner().invoke(main, ["schedule", str(path), "--cron", "0 * * * *"],
                                    env=env)
        assert result.exit_code == 0, result.output
        notes[path.name] = [line.split(": ")[2] for line in result.output.splitlines()
                            if line.startswith("integrity: note:")]
    assert notes == {"sms-alerts.yml": [], "sliding.yml": [
        "delivery_rate_critical", "llm_failure_critical", "llm_cost_spike_warning",
        "opt_out_rate_warning", "daily_limit_hit_warning"]}


def test_a_check_that_cannot_run_neither_resolves_nor_reopens_its_alert(sqlite_db, tmp_path,
                                                                        http_server):
    """on_errors: false — an error is not news on this channel, and not a recovery either."""
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", on_errors: false, repeat: never}
""")
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "10:00:00")
    sqlite_db.tables(leads=[{"id": 1, "mail": "a@x"}])  # no email column: dupes errors
    CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"), "--history",
                              f"sqlite:///{tmp_path / 'h.sqlite'}", "--no-lock", "--now",
                              at("11:00:00")], env=env)
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "12:00:00")  # failing again: the same alert, still open
    assert len(http_server.requests) == 1
    listed = CliRunner().invoke(main, ["alerts", "list", str(audit), "--history",
                                       f"sqlite:///{tmp_path / 'h.sqlite'}"], env=env)
    assert "open since 2026-03-02 10:00 UTC" in listed.output


def test_a_suites_notify_holds_for_each_of_its_expectations():
    """Expectations report as `suite:expectation`; the suite's `notify:` routes them."""
    from datetime import datetime, timezone

    from integrity.config import CheckNotify, SlackChannel
    from integrity.notify import plan
    from integrity.results import AuditResult, CheckResult

    now = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    failed = CheckResult(id="lead_columns:expect_column_values_to_not_be_null(email)",
                         kind="expectation_suite", datasets=["leads"], description="",
                         severity="critical", status="fail", violation_count=1)
    result = AuditResult("alerts", "a.yml", "h", "pandas", "sqlite://", "sqlite", now, now,
                         now, [failed], "critical", 20)
    slack = SlackChannel(channel="slack", webhook_url="https://hooks.example.com/x")
    routed = {"lead_columns": CheckNotify(channels=["pagerduty"])}
    assert plan(result, slack, {}, now, routed) == []
    [step] = plan(result, slack, {}, now, {})
    assert (step.check_id, step.event) == (failed.id, "fired")


def test_acknowledging_needs_no_secret_and_says_who_was_not_told(sqlite_db, tmp_path,
                                                                 http_server):
    base = f"http://127.0.0.1:{http_server.server_port}"
    env = {"PD_KEY": ROUTING_KEY}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - {{channel: pagerduty, routing_key: "${{PD_KEY}}", events_url: "{base}/pd"}}
""")
    history = ["--history", f"sqlite:///{tmp_path / 'h.sqlite'}"]
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "10:00:00")
    acked = CliRunner().invoke(main, ["alerts", "ack", str(audit), "dupes", "--note", "on it",
                                      "--now", at("10:05:00"), *history], env={"PD_KEY": ""})
    assert acked.exit_code == 0, acked.output
    assert acked.output.splitlines() == [
        "integrity: warning: pagerduty was not told: ${PD_KEY} is not set here (PagerDuty "
        "keeps escalating until the incident is acknowledged there)",
        "acknowledged dupes on pagerduty: on it"]
    assert [json.loads(r["body"])["event_action"] for r in http_server.requests] == ["trigger"]
