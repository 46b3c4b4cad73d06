"""Seed 004's alerting system, replaced: `audits/sms-alerts.yml` run hourly, as cron would,
over two simulated days of hourly SMS metrics, against real loopback Slack, PagerDuty and
webhook endpoints and a real SMTP server (the file's two channels, plus a webhook that
hears everything and an e-mail list that hears the warnings). The exact sequence of messages is the test: first alerts, reminders at the
cooldown, no false alarms, recovery messages, PagerDuty trigger/resolve with a stable
`dedup_key`, and nothing lost while PagerDuty was down."""

from __future__ import annotations

import json
from email import message_from_bytes
from datetime import datetime, timedelta, timezone
from pathlib import Path

from click.testing import CliRunner

from integrity.cli import main
from integrity.reference.schema import sms_metrics

AUDIT = Path(__file__).parents[1] / "audits" / "sms-alerts.yml"
START = datetime(2026, 3, 2, tzinfo=timezone.utc)   # the first run measures the hour before
HISTORY_HOURS = 72                                   # data before the first run (baselines)
HOURS = 40


def hour_row(index: int, hour: int) -> dict:
    """Metrics of one hour (`hour` counted from START): normal, except in the incidents."""
    row = dict(scheduled_count=100, sent_count=100, delivered_count=98, failed_count=2,
               generated_count=50, llm_success_count=45, template_fallback_count=5,
               opt_out_count=2, daily_limit_hit_count=5, llm_cost_usd=1.0)
    if hour in (5, 6, 7, 36, 38):            # delivery below 90 %: PagerDuty
        row.update(delivered_count=85, failed_count=15)
    if 10 <= hour <= 19:                     # opt-outs 15 % for ten hours: Slack, 240 min
        row.update(opt_out_count=15)
    if hour in (24, 25):                     # LLM cost at 3x its average: Slack, 120 min
        row.update(llm_cost_usd=3.0)
    if hour in (29, 30, 31):                 # template fallback 60 %: PagerDuty, while down
        row.update(template_fallback_count=30, llm_success_count=20)
    moment = (START + timedelta(hours=hour)).replace(tzinfo=None)
    return {"id": index, "metric_hour": moment, **row}


def test_seed_004_replayed_hour_by_hour(sqlite_db, tmp_path, http_server, smtp_server):
    sqlite_db.tables(sms_metrics=[hour_row(index, hour) for index, hour in
                                  enumerate(range(-HISTORY_HOURS, HOURS))])
    base = f"http://127.0.0.1:{http_server.server_port}"
    audit = tmp_path / "sms-alerts.yml"  # the shipped file, pointed at the loopback servers
    host, port, cert, inbox = smtp_server
    audit.write_text(AUDIT.read_text().replace(
        "    routing_key: ${PAGERDUTY_ROUTING_KEY}\n",
        f"    routing_key: ${{PAGERDUTY_ROUTING_KEY}}\n    events_url: {base}/pd\n") + f"""\
  - {{channel: webhook, url: "${{HOOK_URL}}", severities: [critical, warning]}}
  - channel: email
    from: integrity@example.com
    to: [sms-team@example.com]
    severities: [warning]
    smtp: {{host: "{host}", port: {port}, username: auditor, password: "${{SMTP_PASSWORD}}",
           ca_file: "{cert}"}}
""")
    env = {"REFERENCE_DATABASE_URL": sqlite_db.url, "PAGERDUTY_ROUTING_KEY": "R" * 32,
           "SLACK_WEBHOOK_URL": f"{base}/slack/T0/B0/secret", "HOOK_URL": f"{base}/hook",
           "SMTP_PASSWORD": "s3cret-pass"}
    hooks: list[tuple[int, list[tuple[str, str]]]] = []
    mails: list[tuple[int, str]] = []
    sent: list[tuple[int, str, str]] = []
    for hour in range(1, HOURS + 1):
        jitter = [5, 2, 7, 3, 9, 1][hour % 6]  # cron starts a few seconds after the hour
        now = START + timedelta(hours=hour, seconds=jitter)
        http_server.down = hour in (30, 31)
        before, mailed = len(http_server.requests), len(inbox.messages)
        result = CliRunner().invoke(main, [
            "run", str(audit), "-o", str(tmp_path / "out"), "--no-lock", "--now",
            now.isoformat(), "--history", f"sqlite:///{tmp_path / 'h.sqlite'}"], env=env)
        assert result.exit_code in (0, 1), result.output
        for envelope in inbox.messages[mailed:]:
            mails.append((hour, message_from_bytes(envelope.content)["Subject"]))
        for request in http_server.requests[before:]:
            body = json.loads(request["body"])
            if request["path"] == "/hook":
                if not http_server.down:
                    hooks.append((hour, [(a["check_id"], a["reason"]) for a in body["alerts"]]))
                continue
            if request["path"] == "/pd":
                if http_server.down:
                    continue  # refused (HTTP 500); the next run tries again
                sent.append((hour, "pd", f"{body['event_action']} {body['dedup_key']}"))
            else:
                lines = body["text"].splitlines()
                sent.append((hour, "slack", lines[1].split(" — ")[0] + (
                    " — reminder" if "reminder" in lines[1] else "")))
    delivery = "integrity/sms-alerts/delivery_rate_critical@"
    fallback = "integrity/sms-alerts/llm_failure_critical@"
    assert [(hour, channel, text.split("@")[0] + ("@" if "@" in text else ""))
            for hour, channel, text in sent] == [
        (6, "pd", f"trigger {delivery}"),         # hours 5-7 below 90 %: one incident
        (9, "pd", f"resolve {delivery}"),
        (11, "slack", "- sms-alerts: opt_out_rate_warning (Opt-outs among delivered "
                      "messages.) WARN"),
        (15, "slack", "- sms-alerts: opt_out_rate_warning (Opt-outs among delivered "
                      "messages.) WARN — reminder"),   # 240 minutes later, while it lasts
        (19, "slack", "- sms-alerts: opt_out_rate_warning (Opt-outs among delivered "
                      "messages.) WARN — reminder"),
        (21, "slack", "- sms-alerts: opt_out_rate_warning passes again after 10h "
                      "(since 2026-03-02 11:00 UTC)"),
        (25, "slack", "- sms-alerts: llm_cost_spike_warning (LLM cost this hour against "
                      "its average hour.) WARN"),
        (27, "slack", "- sms-alerts: llm_cost_spike_warning passes again after 2h "
                      "(since 2026-03-03 01:00 UTC)"),
        (32, "pd", f"trigger {fallback}"),        # down at 30 and 31: sent, late, at 32
        (33, "pd", f"resolve {fallback}"),
        (37, "pd", f"trigger {delivery}"),        # flapping: hour 36 bad, 37 fine, 38 bad
        (38, "pd", f"resolve {delivery}"),
        (39, "pd", f"trigger {delivery}"),
        (40, "pd", f"resolve {delivery}"),
    ]
    # The webhook hears both severities — and, down with PagerDuty at 30 and 31, loses
    # nothing; e-mail hears the warnings when Slack does.
    assert hooks == [  # no PagerDuty here: reminders every 60 minutes while it lasts
        (6, [("delivery_rate_critical", "new")]), (7, [("delivery_rate_critical", "reminder")]),
        (8, [("delivery_rate_critical", "reminder")]),
        (9, [("delivery_rate_critical", "resolved")]),
        (11, [("opt_out_rate_warning", "new")]), (15, [("opt_out_rate_warning", "reminder")]),
        (19, [("opt_out_rate_warning", "reminder")]),
        (21, [("opt_out_rate_warning", "resolved")]),
        (25, [("llm_cost_spike_warning", "new")]),
        (27, [("llm_cost_spike_warning", "resolved")]),
        (32, [("llm_failure_critical", "late")]), (33, [("llm_failure_critical", "resolved")]),
        (37, [("delivery_rate_critical", "new")]), (38, [("delivery_rate_critical", "resolved")]),
        (39, [("delivery_rate_critical", "new")]), (40, [("delivery_rate_critical", "resolved")])]
    assert [hour for hour, _ in mails] == [hour for hour, channel, _ in sent
                                           if channel == "slack"]
    assert mails[0][1] == "[WARN] integrity sms-alerts: 1 check needs attention (exit 0)"
    # One stable dedup_key per check and target, whatever the run.
    keys = {text.split(" ", 1)[1] for _, channel, text in sent if channel == "pd"}
    assert len(keys) == 2
    # The first message says what on-call needs: value, bound, the hour measured, why.
    first = next(json.loads(r["body"])["text"] for r in http_server.requests
                 if r["path"].startswith("/slack"))
    assert first.splitlines()[:3] == [
        "[WARN] integrity sms-alerts: 1 check needs attention (exit 0)",
        "- sms-alerts: opt_out_rate_warning (Opt-outs among delivered messages.) WARN — "
        "15.31%",
        "  value 15.31% (warning if > 10%) over [2026-03-02T10:00:00Z, 2026-03-02T11:00:00Z)"]
    assert "secret" not in first
    spike = next(json.loads(r["body"])["text"] for r in http_server.requests
                 if r["path"].startswith("/slack") and "llm_cost_spike" in r["body"].decode())
    assert spike.splitlines()[1:4] == [
        "- sms-alerts: llm_cost_spike_warning (LLM cost this hour against its average hour.) "
        "WARN — 3",
        "  value 3 (warning if > 2x baseline) over [2026-03-03T00:00:00Z, "
        "2026-03-03T01:00:00Z)",
        "  baseline 1 = mean of 24 runs 2026-03-02..2026-03-03"]
    assert len(sms_metrics.columns) == 12  # the reference schema this audit is written for
