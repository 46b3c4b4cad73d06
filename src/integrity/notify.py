"""Notifications: tell the right channel once, not every night.

A channel speaks about what changed: checks at or above its `min_severity`
with *new* violations or a worse status than last time, and checks (or
whole audits) that could not run. Per check and channel there is a cooldown
(kept in the run history), so a persisting problem is not repeated every
run. PagerDuty gets one incident per check (a stable `dedup_key`), triggered
and then resolved when the check passes again.

A failing channel — HTTP 500, a hang past its timeout, TLS trouble — never
fails or hides the audit: it is retried briefly, recorded, and shown in the
report. Secrets (webhook URLs, routing keys, SMTP passwords) come only from
the environment (config.py refuses them written into the file) and are kept
out of every message, log and report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integrity import __version__
from integrity.errors import scrub
from integrity.gate import exit_code
from integrity.results import STATUS_RANK

if TYPE_CHECKING:
    from integrity.config import Audit
    from integrity.history import History
    from integrity.results import AuditResult, CheckResult

QUALIFYING = {"critical": {"fail"}, "warning": {"fail", "warn"},
              "info": {"fail", "warn", "info"}}
PAGERDUTY_SEVERITY = {"fail": "critical", "warn": "warning", "info": "info", "error": "error"}
AUDIT_ERRORS = "(audit)"  # the pseudo-check id under which audit-level errors are alerted


@dataclass
class Alert:
    check_id: str
    action: str          # "trigger" or "resolve"
    status: str
    summary: str
    reason: str          # new / worse / unknown (no history to compare) / error / resolved
    violation_count: int | None = None
    new_count: int = 0


@dataclass
class Delivery:
    """What happened when a channel was told (shown in the report, kept in history)."""

    channel: str
    target: str
    alerts: list[str]
    ok: bool
    attempts: int
    error: str | None = None
    suppressed: list[str] = field(default_factory=list)  # in cooldown


class ChannelError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


def channel_key(channel) -> str:
    """A stable name for a channel's state in history: its type and a hash of its target."""
    target = {"slack": lambda c: c.webhook_url, "pagerduty": lambda c: c.routing_key,
              "email": lambda c: f"{c.smtp.host}:{','.join(c.to)}",
              "webhook": lambda c: c.url}[channel.channel](channel)
    return f"{channel.channel}:{hashlib.sha256(target.encode()).hexdigest()[:12]}"


def describe_target(channel) -> str:
    """Where a channel points, without its secrets."""
    if channel.channel == "email":
        return f"{', '.join(channel.to)} via {channel.smtp.host}:{channel.smtp.port}"
    url = channel.events_url if channel.channel == "pagerduty" else (
        channel.webhook_url if channel.channel == "slack" else channel.url)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"


def secrets_of(channel) -> list[str]:
    found = []
    for name in ("webhook_url", "routing_key", "url", "secret"):
        value = getattr(channel, name, None)
        if value:
            found.append(value)
            path = urlsplit(value).path if "://" in value else ""
            found += [piece for piece in path.split("/") if len(piece) >= 8]
    if channel.channel == "email" and channel.smtp.password:
        found.append(channel.smtp.password)
    return found


# ---------------------------------------------------------------------------
# Deciding.


def plan(result: AuditResult, channel, state: dict[str, dict], now: datetime
         ) -> tuple[list[Alert], list[str]]:
    """(alerts to send, checks suppressed by the cooldown) for one channel."""
    alerts, suppressed = [], []
    qualifying = QUALIFYING[channel.min_severity]
    cooldown = channel.cooldown

    def cooling(check_id: str) -> bool:
        last = (state.get(check_id) or {}).get("last_sent_at")
        return last is not None and now - last < cooldown

    if result.errors and channel.on_errors:
        alert = Alert(AUDIT_ERRORS, "trigger", "error", f"{result.audit_name}: the audit could "
                      f"not run: {result.errors[0]}", "error")
        (suppressed.append(alert.check_id) if cooling(alert.check_id) else alerts.append(alert))
    for check in result.checks:
        previous = state.get(check.id) or {}
        if check.status == "error":
            if channel.on_errors and not result.errors:
                alert = Alert(check.id, "trigger", "error",
                              f"{check.id} could not run: {check.error}", "error")
                (suppressed.append(check.id) if cooling(check.id) else alerts.append(alert))
            continue
        if check.status in qualifying:
            new = len(check.lifecycle.new) if check.lifecycle is not None else None
            worse = STATUS_RANK[check.status] > STATUS_RANK.get(previous.get("last_status"), 0)
            if not (new or worse or new is None):
                continue
            reason = "new" if new else "worse" if worse else "unknown"
            alert = Alert(check.id, "trigger", check.status, _summary(result, check, new), reason,
                          check.violation_count, new or 0)
            (suppressed.append(check.id) if cooling(check.id) and not worse
             else alerts.append(alert))
        elif channel.channel == "pagerduty" and previous.get("open"):
            alerts.append(Alert(check.id, "resolve", check.status,
                                f"{check.id} passes again", "resolved"))
    if channel.channel == "pagerduty" and not result.errors and (state.get(AUDIT_ERRORS) or {}
                                                                  ).get("open"):
        alerts.append(Alert(AUDIT_ERRORS, "resolve", "pass",
                            f"{result.audit_name} runs again", "resolved"))
    return alerts, suppressed


def _summary(result: AuditResult, check: CheckResult, new: int | None) -> str:
    count = check.violation_count or 0
    fresh = f", {new} new" if new else ""
    why = f" ({check.purpose})" if check.purpose else ""
    return (f"{result.audit_name}: {check.id}{why} {check.status.upper()} — {count:,} "
            f"violation{'s' if count != 1 else ''}{fresh}")


# ---------------------------------------------------------------------------
# Sending.


def deliver(result: AuditResult, audit: Audit, history: History | None,
            report: str | None, deadline: float | None = None) -> list[Delivery]:
    """Plan, send and record every channel of the audit; never raises for a channel.
    `deadline` (time.monotonic()): the job's own bound, on top of each channel's timeout.

    Cooldowns are judged, and deliveries recorded, at the run's `now` — one clock, so a
    replay with --now sends what production would have sent."""
    now = result.now
    deliveries = []
    for channel in audit.config.notify:
        key = channel_key(channel)
        state = history.notification_state(result.audit_name, result.target, key) \
            if history else {}
        alerts, suppressed = plan(result, channel, state, now)
        if not alerts:
            if suppressed:
                deliveries.append(Delivery(channel.channel, describe_target(channel), [], True,
                                           0, suppressed=suppressed))
            continue
        link = channel.report_url or report
        delivery = _send(channel, alerts, result, link, deadline)
        delivery.suppressed = suppressed
        deliveries.append(delivery)
        if history is not None:
            history.record_notifications(result.audit_name, result.target, key,
                                         result.run_id, alerts, delivery, now)
    return deliveries


def _send(channel, alerts: list[Alert], result: AuditResult, link: str | None,
          deadline: float | None = None) -> Delivery:
    """Send, retrying, all within the channel's `timeout` (and the job's `deadline`, a
    time.monotonic()): a total for the delivery, not a per-read socket timeout, so a
    server that trickles a byte at a time cannot hold the run."""
    secrets = secrets_of(channel)
    sender = {"slack": _slack, "pagerduty": _pagerduty, "email": _email,
              "webhook": _webhook}[channel.channel]
    budget = channel.timeout.total_seconds()
    ends = time.monotonic() + budget
    bound_by_the_run = deadline is not None and deadline < ends
    if bound_by_the_run:
        ends = deadline
    attempts, error = 0, None
    for attempt in range(channel.retries + 1):
        left = ends - time.monotonic()
        if left <= 0:
            break
        attempts = attempt + 1
        try:
            _within(left, lambda: sender(channel, alerts, result, link))
            error = None
            break
        except _Overran:
            error = ("the run's --timeout ended the delivery" if bound_by_the_run else
                     f"no complete answer within {budget:g}s (the channel's timeout, for the "
                     f"whole delivery)")
            break
        except ChannelError as failure:
            error = scrub(str(failure), secrets)
            if not failure.retryable:
                break
        except Exception as failure:  # noqa: BLE001 — a channel must never crash the audit
            error = scrub(f"{type(failure).__name__}: {failure}", secrets)
        if attempt < channel.retries:
            time.sleep(max(0.0, min(0.5 * 2 ** attempt, ends - time.monotonic())))
    if attempts == 0:
        error = "not sent: the run's --timeout had passed"
    return Delivery(channel.channel, describe_target(channel), [a.check_id for a in alerts],
                    error is None, attempts, error)


def _socket_timeout(channel) -> float:
    """Each socket wait: a backstop just past the delivery's own total (see `_within`)."""
    return channel.timeout.total_seconds() + 1


class _Overran(Exception):
    pass


def _within(seconds: float, action) -> None:
    """Run `action` in a worker thread and stop waiting after `seconds` in all. The worker
    is a daemon: an abandoned send (its socket still trickling) cannot keep the process."""
    outcome: dict[str, BaseException | None] = {}

    def work() -> None:
        try:
            action()
            outcome["error"] = None
        except BaseException as error:  # noqa: BLE001 — handed to the waiting thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name="integrity-notify", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Overran()
    if outcome.get("error") is not None:
        raise outcome["error"]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": f"integrity/{__version__}",
                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        retryable = error.code >= 500 or error.code == 429
        raise ChannelError(f"HTTP {error.code} {error.reason}", retryable) from None
    except urllib.error.URLError as error:
        raise ChannelError(f"cannot reach {urlsplit(url).hostname}: {error.reason}", True) \
            from None
    except (TimeoutError, OSError) as error:
        raise ChannelError(f"no answer from {urlsplit(url).hostname} within {timeout:g}s "
                           f"({type(error).__name__})", True) from None


def _headline(result: AuditResult, alerts: list[Alert]) -> str:
    triggered = [a for a in alerts if a.action == "trigger"]
    worst = max((STATUS_RANK[a.status] for a in triggered), default=0)
    label = {4: "ERROR", 3: "FAIL", 2: "WARN", 1: "INFO"}.get(worst, "OK")
    count = len(triggered)
    return (f"[{label}] integrity {result.audit_name}: {count} "
            f"{'check needs' if count == 1 else 'checks need'} attention "
            f"(exit {exit_code(result)})")


def _lines(alerts: list[Alert]) -> list[str]:
    return [f"- {alert.summary}" for alert in alerts]


def _slack(channel, alerts, result, link) -> None:
    text = "\n".join([_headline(result, alerts), *_lines(alerts),
                      *([f"Report: {link}"] if link else [])])
    body = json.dumps({"text": text}).encode()
    _post(channel.webhook_url, body, {}, _socket_timeout(channel))


def _webhook(channel, alerts, result, link) -> None:
    body = json.dumps({
        "audit": result.audit_name, "run_id": result.run_id, "exit_code": exit_code(result),
        "data_as_of": result.now.isoformat(), "report": link,
        "alerts": [asdict(alert) for alert in alerts]}, sort_keys=True).encode()
    headers = {}
    if channel.secret:
        stamp = str(int(time.time()))
        digest = hmac.new(channel.secret.encode(), stamp.encode() + b"." + body,
                          hashlib.sha256).hexdigest()
        headers = {"X-Integrity-Timestamp": stamp, "X-Integrity-Signature": f"sha256={digest}"}
    _post(channel.url, body, headers, _socket_timeout(channel))


def dedup_key(audit_name: str, check_id: str) -> str:
    return f"integrity/{audit_name}/{check_id}"


def _pagerduty(channel, alerts, result, link) -> None:
    for alert in alerts:
        event: dict[str, Any] = {"routing_key": channel.routing_key,
                                 "event_action": alert.action,
                                 "dedup_key": dedup_key(result.audit_name, alert.check_id)}
        if alert.action == "trigger":
            event["payload"] = {
                "summary": alert.summary[:1024], "source": result.database or "integrity",
                "severity": PAGERDUTY_SEVERITY[alert.status], "component": alert.check_id,
                "group": result.audit_name, "class": alert.reason,
                "custom_details": {"violations": alert.violation_count, "new": alert.new_count,
                                   "run": result.run_id, "exit_code": exit_code(result)}}
            if link and link.startswith(("http://", "https://")):
                event["links"] = [{"href": link, "text": "integrity report"}]
        _post(channel.events_url, json.dumps(event).encode(), {},
              _socket_timeout(channel))


def _email(channel, alerts, result, link) -> None:
    message = EmailMessage()
    message["Subject"] = _headline(result, alerts)
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message.set_content("\n".join([*_lines(alerts), "",
                                   *([f"Report: {link}"] if link else []),
                                   f"Run #{result.run_id} of {result.audit_file}, data as of "
                                   f"{result.now:%Y-%m-%d %H:%M} UTC."]))
    smtp = channel.smtp
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=_socket_timeout(channel)) as server:
            if smtp.starttls:
                context = ssl.create_default_context(cafile=smtp.ca_file)
                server.starttls(context=context)
            if smtp.username:
                server.login(smtp.username, smtp.password or "")
            server.send_message(message)
    except smtplib.SMTPAuthenticationError as error:
        raise ChannelError(f"SMTP authentication failed ({error.smtp_code})", False) from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as error:
        raise ChannelError(f"SMTP {smtp.host}:{smtp.port}: {type(error).__name__}: {error}",
                           True) from None
