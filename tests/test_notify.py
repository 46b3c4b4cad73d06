"""Notifications against real servers on loopback: exact payloads, signatures, faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import audit_text, free_port
from integrity.cli import main

SECRET = "whsec-0123456789abcdef"
SLACK_TOKEN = "T0000/B0000/abcdefghijklmnopqrstuvwx"
ROUTING_KEY = "R0123456789abcdef0123456789abcdef"


def leads_db(db, duplicates: int):
    """`duplicates` leads sharing a@x with lead 1."""
    rows = [{"id": 1, "email": "a@x"}] + [{"id": 10 + n, "email": "a@x"}
                                          for n in range(duplicates)]
    db.tables(leads=rows + [{"id": 99, "email": "z@x"}])


def write_audit(tmp_path, db, notify: str) -> Path:
    path = tmp_path / "alerts.yml"
    text = audit_text(db.url, "leads: {table: leads, key: id}", """\
        - {id: dupes, kind: duplicates, dataset: leads, columns: email}
        - {id: ids, kind: duplicates, dataset: leads, columns: id}
        """)
    path.write_text("name: alerts\n" + text + "notify:\n" + notify)
    return path


def run(audit, tmp_path, env, *extra):
    result = CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"),
                                       "--history", f"sqlite:///{tmp_path / 'h.sqlite'}",
                                       "--no-lock", *extra], env=env, catch_exceptions=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    return result, report


def test_slack_and_signed_webhook_speak_once_per_change(sqlite_db, tmp_path, http_server):
    base = f"http://127.0.0.1:{http_server.server_port}"
    env = {"SLACK_WEBHOOK_URL": f"{base}/slack/{SLACK_TOKEN}",
           "AUDIT_WEBHOOK_URL": f"{base}/hook", "AUDIT_WEBHOOK_SECRET": SECRET}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 0s, repeat: never,
     report_url: "https://ci.example.com/artifacts/report.html"}
  - {channel: webhook, url: "${AUDIT_WEBHOOK_URL}", secret: "${AUDIT_WEBHOOK_SECRET}",
     cooldown: 0s, repeat: never}
""")
    leads_db(sqlite_db, 1)
    first, report = run(audit, tmp_path, env)
    assert first.exit_code == 1
    slack, hook = http_server.requests
    assert slack["path"] == f"/slack/{SLACK_TOKEN}"
    assert json.loads(slack["body"]) == {"text": "\n".join([
        "[FAIL] integrity alerts: 1 check needs attention (exit 1)",
        "- alerts: dupes FAIL — 1 violation, 1 new",
        "  first keys: id=10",
        "Report: https://ci.example.com/artifacts/report.html"])}
    body = json.loads(hook["body"])
    assert (body["audit"], body["exit_code"], body["run_id"]) == ("alerts", 1, 1)
    assert [(a["check_id"], a["action"], a["reason"], a["new_count"]) for a in body["alerts"]] \
        == [("dupes", "trigger", "new", 1)]
    stamp = hook["headers"]["X-Integrity-Timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + hook["body"],
                        hashlib.sha256).hexdigest()
    assert hook["headers"]["X-Integrity-Signature"] == f"sha256={expected}"
    assert [(d["channel"], d["ok"], d["checks"]) for d in report["notifications"]] == [
        ("slack", True, ["dupes"]), ("webhook", True, ["dupes"])]
    assert SLACK_TOKEN not in json.dumps(report) and SECRET not in json.dumps(report)
    # Same data again: nothing new, nothing worse, no reminders (repeat: never) — silence.
    run(audit, tmp_path, env)
    assert len(http_server.requests) == 2
    # One more duplicate: new violations speak again.
    leads_db(sqlite_db, 2)
    run(audit, tmp_path, env)
    assert len(http_server.requests) == 4
    assert "- alerts: dupes FAIL — 2 violations, 1 new" in json.loads(
        http_server.requests[2]["body"])["text"]


def test_pagerduty_triggers_then_resolves_with_a_stable_dedup_key(sqlite_db, tmp_path,
                                                                 http_server):
    env = {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - {{channel: pagerduty, routing_key: "${{PAGERDUTY_ROUTING_KEY}}",
     events_url: "http://127.0.0.1:{http_server.server_port}/pd/v2/enqueue"}}
""")
    leads_db(sqlite_db, 1)
    _, first = run(audit, tmp_path, env)
    first_now = first["run"]["now"][:19] + "Z"  # alerts give times to the second
    run(audit, tmp_path, env)           # still failing, nothing new: no second trigger
    leads_db(sqlite_db, 0)
    fixed, _ = run(audit, tmp_path, env)
    run(audit, tmp_path, env)           # still fine: nothing to resolve any more
    assert fixed.exit_code == 0
    events = [json.loads(request["body"]) for request in http_server.requests]
    # One incident per check and audited database (a hash of the server's identity when
    # the audit names no `target:`).
    target = json.loads((tmp_path / "out" / "report.json").read_text())["run"]["target"]
    key = f"integrity/alerts/dupes@{hashlib.sha256(target.encode()).hexdigest()[:12]}"
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", key), ("resolve", key)]
    trigger = events[0]
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"] == {
        "summary": "alerts: dupes FAIL — 1 violation, 1 new", "source": sqlite_db.url,
        "severity": "critical", "component": "dupes", "group": "alerts", "class": "new",
        "custom_details": {"violations": 1, "new": 1, "run": 1, "exit_code": 1,
                           "first_keys": [{"id": 10}], "since": first_now}}
    assert events[1] == {"routing_key": ROUTING_KEY, "event_action": "resolve",
                         "dedup_key": key}


def test_email_over_starttls_with_login(sqlite_db, tmp_path, smtp_server):
    host, port, cert, inbox = smtp_server
    env = {"SMTP_PASSWORD": "s3cret-pass"}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - channel: email
    from: audit@example.com
    to: [oncall@example.com, data@example.com]
    smtp: {{host: "{host}", port: {port}, username: auditor, password: "${{SMTP_PASSWORD}}",
           ca_file: "{cert}"}}
""")
    leads_db(sqlite_db, 1)
    result, report = run(audit, tmp_path, env)
    assert report["notifications"][0]["ok"] is True, report["notifications"]
    (envelope,) = inbox.messages
    assert envelope.rcpt_tos == ["oncall@example.com", "data@example.com"]
    message = message_from_bytes(envelope.content)
    assert message["Subject"] == "[FAIL] integrity alerts: 1 check needs attention (exit 1)"
    body = message.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.startswith("- alerts: dupes FAIL — 1 violation, 1 new\n  first keys: id=10\n\n"
                           "Report: ")
    assert "s3cret-pass" not in result.output


def test_failing_channels_never_fail_or_hide_the_audit(sqlite_db, tmp_path, http_server,
                                                       smtp_server):
    host, port, cert, _ = smtp_server
    base = f"http://127.0.0.1:{http_server.server_port}"
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"SLACK_WEBHOOK_URL": f"{base}/fail/{SLACK_TOKEN}", "HANG_URL": f"{base}/hang",
           "CLOSED_URL": f"{closed}/nobody", "SMTP_PASSWORD": "wrong-password"}
    audit = write_audit(tmp_path, sqlite_db, f"""\
  - {{channel: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}", retries: 2}}
  - {{channel: webhook, url: "${{HANG_URL}}", timeout: 500ms, retries: 0}}
  - {{channel: webhook, url: "${{CLOSED_URL}}", retries: 1}}
  - channel: email
    from: audit@example.com
    to: [oncall@example.com]
    smtp: {{host: "{host}", port: {port}, username: auditor, password: "${{SMTP_PASSWORD}}",
           ca_file: "{cert}"}}
""")
    leads_db(sqlite_db, 1)
    began = time.monotonic()
    result, report = run(audit, tmp_path, env, "--summary", "checks")
    assert time.monotonic() - began < 20
    assert result.exit_code == 1  # the violations decide, not the channels
    outcomes = [(d["channel"], d["ok"], d["attempts"], d["error"])
                for d in report["notifications"]]
    assert outcomes[0] == ("slack", False, 3, "HTTP 500 Internal Server Error")
    assert outcomes[1][:3] == ("webhook", False, 1)
    assert outcomes[1][3] == ("no complete answer within 0.5s (the channel's timeout, for "
                              "the whole delivery)")
    assert outcomes[2][:3] == ("webhook", False, 2)
    assert outcomes[2][3].startswith("cannot reach 127.0.0.1: [Errno 111] Connection refused")
    assert outcomes[3] == ("email", False, 1, "SMTP authentication failed (535)")
    assert "notification to slack (http://127.0.0.1:" in result.output
    assert result.output.count("failed: ") == 4
    html = (tmp_path / "out" / "report.html").read_text()
    assert "failed after 3 attempts: HTTP 500 Internal Server Error" in html
    for text in (result.output, html, json.dumps(report)):
        assert SLACK_TOKEN not in text and "wrong-password" not in text
    # Failed deliveries do not start the cooldown: the next run tries again.
    retry, _ = run(audit, tmp_path, env)
    assert sum(1 for r in http_server.requests if "/fail/" in r["path"]) == 6


def test_cooldown_holds_back_repeats(sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 2h}
""")
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env)
    leads_db(sqlite_db, 2)        # new violations, but within two hours of the last alert
    _, report = run(audit, tmp_path, env)
    assert len(http_server.requests) == 1
    assert report["notifications"] == [{
        "channel": "slack", "target": f"http://127.0.0.1:{http_server.server_port}/…",
        "ok": True, "attempts": 0, "error": None, "checks": [], "suppressed": ["dupes"]}]


def test_secrets_must_come_from_the_environment(sqlite_db, tmp_path):
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/xyz"}
  - {channel: pagerduty, routing_key: "${PD_KEY}"}
""")
    result = CliRunner().invoke(main, ["validate", str(audit)], env={"PD_KEY": ROUTING_KEY})
    assert result.exit_code == 2
    assert "notify[0].webhook_url: a secret must come from the environment: write " \
           "${WEBHOOK_URL} and export it" in result.output
    assert "notify[1]" not in result.output


@pytest.mark.parametrize("channel", [
    '{channel: webhook, url: "${TRICKLE_URL}", timeout: 2s, retries: 2}',
    '{channel: slack, webhook_url: "${TRICKLE_URL}", timeout: 2s, retries: 2}',
    '{channel: pagerduty, routing_key: "${PD_KEY}", events_url: "${TRICKLE_URL}", timeout: 2s}',
])
def test_a_trickling_server_cannot_hold_a_delivery_past_its_timeout(sqlite_db, tmp_path,
                                                                     http_server, channel):
    env = {"TRICKLE_URL": f"http://127.0.0.1:{http_server.server_port}/trickle",
           "PD_KEY": ROUTING_KEY}
    audit = write_audit(tmp_path, sqlite_db, f"  - {channel}\n")
    leads_db(sqlite_db, 1)
    began = time.monotonic()
    result, report = run(audit, tmp_path, env)
    assert time.monotonic() - began < 8  # the server would take 20 s per attempt
    assert result.exit_code == 1
    [delivery] = report["notifications"]
    assert (delivery["ok"], delivery["attempts"], delivery["error"]) == (
        False, 1, "no complete answer within 2s (the channel's timeout, for the whole delivery)")


def test_the_runs_timeout_bounds_its_notifications(sqlite_db, tmp_path, http_server):
    env = {"TRICKLE_URL": f"http://127.0.0.1:{http_server.server_port}/trickle"}
    audit = write_audit(tmp_path, sqlite_db,
                        '  - {channel: webhook, url: "${TRICKLE_URL}", timeout: 60s}\n')
    leads_db(sqlite_db, 1)
    began = time.monotonic()
    result, report = run(audit, tmp_path, env, "--timeout", "3s")
    assert time.monotonic() - began < 8
    assert result.exit_code == 2
    assert report["errors"] == [
        "the run exceeded its timeout of 3s while sending notifications"]
    assert report["notifications"][0]["error"] == "the run's --timeout ended the delivery"


def test_cooldowns_follow_the_runs_clock_so_a_replay_sends_what_production_would(
        sqlite_db, tmp_path, http_server):
    """Two runs seconds apart in real time but two hours apart by --now: a 1h cooldown
    has passed by the run's clock, so the second alert goes out (the wall clock would
    have held it back)."""
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}", cooldown: 1h}
""")
    leads_db(sqlite_db, 1)
    run(audit, tmp_path, env, "--now", "2026-01-30T10:00:00Z")
    leads_db(sqlite_db, 2)  # new violations, 30 minutes later by the run's clock
    _, held = run(audit, tmp_path, env, "--now", "2026-01-30T10:30:00Z")
    leads_db(sqlite_db, 3)  # and again, two hours after the first alert
    _, sent = run(audit, tmp_path, env, "--now", "2026-01-30T12:00:00Z")
    assert [d["suppressed"] for d in held["notifications"]] == [["dupes"]]
    assert [(d["ok"], d["checks"]) for d in sent["notifications"]] == [(True, ["dupes"])]
    assert len(http_server.requests) == 2


def test_no_history_means_no_notifications_unless_asked(sqlite_db, tmp_path, http_server):
    env = {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{http_server.server_port}/slack"}
    audit = write_audit(tmp_path, sqlite_db, """\
  - {channel: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
""")
    leads_db(sqlite_db, 1)
    out = tmp_path / "out"
    quiet = CliRunner().invoke(main, ["run", str(audit), "-o", str(out), "--no-history",
                                      "--no-lock"], env=env)
    assert quiet.exit_code == 1 and http_server.requests == []
    loud = CliRunner().invoke(main, ["run", str(audit), "-o", str(out), "--no-history",
                                     "--notify", "--no-lock"], env=env)
    assert loud.exit_code == 1 and len(http_server.requests) == 1


def test_a_redirected_webhook_is_not_counted_as_delivered(sqlite_db, tmp_path, http_server):
    env = {"HOOK_URL": f"http://127.0.0.1:{http_server.server_port}/moved"}
    audit = write_audit(tmp_path, sqlite_db, '  - {channel: webhook, url: "${HOOK_URL}"}\n')
    leads_db(sqlite_db, 1)
    _, report = run(audit, tmp_path, env)
    [delivery] = report["notifications"]
    assert (delivery["ok"], delivery["attempts"], delivery["error"]) == (
        False, 1, "HTTP 302 Found: redirected, not followed (give the address that answers "
                  "itself)")
    assert [request["path"] for request in http_server.requests] == ["/moved"]
