"""Notifications: an alert per (check, channel) with a lifecycle, on the run's clock.

An alert **opens** when a check reaches a status the channel takes
(`severities:`, else `min_severity` and worse) or cannot run (`on_errors`),
and the first message goes out unless the channel spoke about that check
less than `cooldown` ago — then it is **held back** and sent by the first
run after the cooldown while the breach still stands (never lost). While it
stays open, a **reminder** goes out every `repeat` (default: the cooldown;
`never` turns reminders off; PagerDuty keeps its one incident open instead);
new violations speak at once when the cooldown allows, and a worse status
speaks at once whatever the cooldown. An **acknowledged** alert
(`integrity alerts ack`) sends no reminders until it ends or worsens. When
the check passes again the alert **resolves**: a recovery message on every
channel that heard of it, with how long it lasted (PagerDuty: `resolve`). A
breach held back and gone before anyone was told resolves silently; the
alert log keeps both.

Routing: a channel hears the checks its `checks:` (ids or globs) names —
all by default — at its severities; a check's own `notify:` narrows the
channels (`channels:`) and sets its `cooldown`/`repeat`.

Every decision uses the run's `now` (one clock: `--now` replays what
production would have sent; `--notify-dry-run FILE` writes the messages to a
file instead of sending them). A failed delivery keeps the alert due, so the
next run tries again. A failing channel — HTTP 500, a hang past its
timeout, TLS trouble — never fails or hides the audit: it is retried
briefly, recorded, and shown in the report. Secrets (webhook URLs, routing
keys, SMTP passwords) come only from the environment (config.py refuses
them written into the file) and are kept out of every message, log and
report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integrity.errors import scrub
from integrity.gate import exit_code
from integrity.results import STATUS_RANK
from integrity.web import Overran, request, within

if TYPE_CHECKING:
    from integrity.config import Audit
    from integrity.history import History
    from integrity.results import AuditResult, CheckResult

QUALIFYING = {"critical": {"fail"}, "warning": {"fail", "warn"},
              "info": {"fail", "warn", "info"}}
SEVERITY_STATUS = {"critical": "fail", "warning": "warn", "info": "info"}
TOP = 5  # tenants or keys named in an alert
PAGERDUTY_SEVERITY = {"fail": "critical", "warn": "warning", "info": "info", "error": "error"}
AUDIT_ERRORS = "(audit)"  # the pseudo-check id under which audit-level errors are alerted
ROLLBACK = "(rollback)"  # the pseudo-check of a watch's rollback criteria (watch.py)


@dataclass
class Alert:
    check_id: str
    action: str          # "trigger" or "resolve"
    status: str
    summary: str
    reason: str          # new / worse / held back / reminder / unknown (no history) / resolved
    violation_count: int | None = None
    new_count: int = 0
    since: datetime | None = None       # when the alert opened
    reminder: int = 0                   # the how-manieth reminder this is
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    """What happened when a channel was told (shown in the report, kept in history)."""

    channel: str
    target: str
    alerts: list[str]
    ok: bool
    attempts: int
    error: str | None = None
    suppressed: list[str] = field(default_factory=list)  # held back by the cooldown


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
# Routing.


def channel_name(channel) -> str:
    """The name per-check `notify.channels` uses: `name:`, else the channel's type."""
    return channel.name or channel.channel


def routes(channel, check_id: str, rules: Any = None) -> bool:
    """Whether `check_id` is this channel's business (its `checks:`, the check's
    `notify.channels`). Audit-level errors go to every channel that takes errors."""
    if check_id == AUDIT_ERRORS:
        return True
    if channel.checks and not any(fnmatch.fnmatchcase(check_id, pattern)
                                  for pattern in channel.checks):
        return False
    return rules is None or rules.channels is None or channel_name(channel) in rules.channels


def alerting_statuses(channel) -> set[str]:
    """The statuses that open an alert on this channel: its `severities:` exactly, else
    `min_severity` and everything worse."""
    if channel.severities is not None:
        return {SEVERITY_STATUS[severity] for severity in channel.severities}
    return QUALIFYING[channel.min_severity]


def timing(channel, rules: Any = None) -> tuple[timedelta, timedelta | None]:
    """(cooldown, repeat) for one check on one channel: the check's `notify:` wins; repeat
    defaults to the cooldown, `never` is None."""
    cooldown = (rules.cooldown if rules is not None and rules.cooldown is not None
                else channel.cooldown)
    repeat = rules.repeat if rules is not None and rules.repeat is not None else channel.repeat
    if repeat == "never":
        return cooldown, None
    return cooldown, cooldown if repeat is None else repeat


# ---------------------------------------------------------------------------
# Deciding: the alert lifecycle of one check on one channel.


@dataclass
class Step:
    """What one run does to one alert: maybe a message, and the state to keep — `sent`
    if the message got through (or there was none), `unsent` if the channel failed, so a
    failed delivery is tried again next run and nothing is lost."""

    check_id: str
    event: str                   # fired / reminded / worse / held / resolved / recovered
    alert: Alert | None
    sent: dict
    unsent: dict
    held: bool = False           # due, but within the cooldown
    logged: bool = True          # a step worth a line in the alert log


def plan(result: AuditResult, channel, state: dict[str, dict], now: datetime,
         rules: dict[str, Any] | None = None) -> list[Step]:
    """The steps of every alert on one channel for this run, at the run's `now`."""
    rules = rules or {}
    statuses = alerting_statuses(channel)
    steps: list[Step] = []
    measured: list[tuple[str, str | None, CheckResult | None]] = []
    if result.errors and channel.on_errors:
        measured.append((AUDIT_ERRORS, "error", None))
    elif (state.get(AUDIT_ERRORS) or {}).get("open"):
        measured.append((AUDIT_ERRORS, None, None))
    # A watch's rollback criteria speak on every channel that takes failures, whatever its
    # `checks:`: a rollback is the whole deploy's, not one check's.
    if result.rollback and "fail" in statuses:
        measured.append((ROLLBACK, "fail", None))
    elif (state.get(ROLLBACK) or {}).get("open"):
        measured.append((ROLLBACK, None, None))
    for check in result.checks:
        rule = _rule(rules, check.id)
        if not routes(channel, check.id, rule):
            continue
        if check.status == "error":
            if not channel.on_errors or result.errors:
                continue  # not measured: its alert neither opens nor resolves here
            breach = "error"
        elif check.status not in statuses and STATUS_RANK[check.status] > max(
                STATUS_RANK[status] for status in statuses):
            continue  # beyond this channel's severities (a warnings channel, a failure):
            # another channel speaks now; this one's alert neither resolves nor repeats
        else:
            breach = check.status if check.status in statuses else None
        measured.append((check.id, breach, check))
    for check_id, breach, check in measured:
        step = _step(result, channel, check_id, breach, check, state.get(check_id) or {},
                     now, *timing(channel, _rule(rules, check_id)))
        if step is not None:
            steps.append(step)
    return steps


def _rule(rules: dict[str, Any], check_id: str) -> Any:
    """A check's `notify:` — a suite's holds for each of its expectations (`suite:…`)."""
    return rules.get(check_id) or rules.get(check_id.split(":", 1)[0])


def _elapsed(since: datetime | None, now: datetime, span: timedelta) -> bool:
    """Whether `span` has passed since `since`. A run up to a minute early (a tenth of the
    span at most) counts: cron starts a few seconds late or early, and an hourly run must
    not miss a 60-minute cooldown by two seconds."""
    return since is None or now - since >= span - min(timedelta(minutes=1), span / 10)


def _step(result, channel, check_id, breach, check, previous, now, cooldown, repeat):
    last_sent = previous.get("last_sent_at")
    cooled = _elapsed(last_sent, now, cooldown)
    value = _value_text(check)
    if breach is None:
        if not previous.get("open"):
            return None
        closed = {**previous, "open": False, "resolved_at": now, "last_status": (
            check.status if check else "pass"), "last_value": value, "reminders": 0,
            "ack_until": None, "acknowledged_at": None, "ack_note": None, "pending": False}
        if not previous.get("announced"):  # held back all along: nobody was told
            return Step(check_id, "resolved", None, closed, closed)
        alert = Alert(check_id, "resolve", closed["last_status"],
                      _recovery(result, check_id, previous, now), "resolved",
                      since=previous.get("opened_at"), details=_details(check))
        return Step(check_id, "recovered", alert, {**closed, "last_sent_at": now},
                    {**previous, "pending": True})
    opened = previous.get("open")
    base = {**previous, "open": True, "last_status": breach, "last_value": value,
            "opened_at": previous.get("opened_at") if opened else now}
    if not opened:
        base.update(reminders=0, announced=False, ack_until=None, acknowledged_at=None,
                    ack_note=None, resolved_at=None)
    new = len(check.lifecycle.new) if check is not None and check.lifecycle is not None else 0
    worse = opened and STATUS_RANK[breach] > STATUS_RANK.get(previous.get("last_status"), 0)
    acknowledged = previous.get("acknowledged_at") is not None and (
        previous.get("ack_until") is None or now < previous["ack_until"])
    if not opened or not previous.get("announced"):
        event, reason = "fired", "new" if new or check is None else "unknown"
        if opened:  # held back by the cooldown, or its delivery failed, until now
            reason = "late"
        if not cooled:
            held = {**base, "pending": True}
            return Step(check_id, "held", None, held, held, held=True,
                        logged=not previous.get("pending"))
    elif worse:
        event, reason = "worse", "worse"
        base.update(ack_until=None, acknowledged_at=None, ack_note=None)
    elif new or previous.get("pending"):
        # News (or a message that is due since a failed delivery or a held-back one) is
        # said once the cooldown allows — never dropped.
        event, reason = "fired", "new" if new else "late"
        if not cooled:
            held = {**base, "pending": True}
            return Step(check_id, "held", None, held, held, held=True,
                        logged=not previous.get("pending"))
    elif (repeat is not None and not acknowledged and channel.channel != "pagerduty"
          and last_sent is not None and _elapsed(last_sent, now, repeat)):
        event, reason = "reminded", "reminder"
    else:
        return Step(check_id, "open", None, base, base, logged=False) \
            if base != previous else None
    reminders = base.get("reminders", 0) + (1 if event == "reminded" else 0)
    alert = Alert(check_id, "trigger", breach, _summary(result, check, new, breach),
                  reason, None if check is None else check.violation_count, new,
                  since=base["opened_at"], reminder=reminders if event == "reminded" else 0,
                  details=_details(check))
    sent = {**base, "announced": True, "last_sent_at": now, "pending": False,
            "reminders": reminders}
    return Step(check_id, event, alert, sent, {**base, "pending": True})


def _value_text(check: CheckResult | None) -> str | None:
    if check is None:
        return None
    if check.value_text:
        return check.value_text
    if check.violation_count is not None:
        count = check.violation_count
        return f"{count:,} violation{'s' if count != 1 else ''}"
    return None


def _details(check: CheckResult | None) -> dict[str, Any]:
    """What an on-call engineer needs beside the headline: the measured value against its
    bounds, the interval measured, the baseline, who is affected, and why the check exists."""
    if check is None:
        return {}
    details: dict[str, Any] = {}
    if check.value_text:
        details["value"] = check.value_text
    if check.thresholds:
        details["thresholds"] = {level: str(bound) for level, bound in check.thresholds.items()}
    interval = getattr(check, "interval", None)
    if interval:
        start, end = interval
        details["interval"] = {"start": _iso(start), "end": _iso(end)}
    # The metric's own words on its baseline: "baseline 1.02 = mean of 24 runs …".
    said = [note for note in check.notes if note.startswith("baseline")]
    baselines = [row.get("baseline") for row in check.sample if row.get("baseline")]
    if said:
        details["baseline"] = "; ".join(said[:3])
    elif baselines:
        details["baseline"] = baselines[0] if len(set(baselines)) == 1 else baselines[:5]
    if check.tenant_counts:
        top = sorted(check.tenant_counts.items(), key=lambda item: (-item[1], str(item[0])))
        details["top_tenants"] = [{"tenant": tenant, "violations": count}
                                  for tenant, count in top[:TOP]]
    elif check.sample and check.key_columns and check.key_columns != ["scope"]:
        keys = [{column: row.get(column) for column in check.key_columns}
                for row in check.sample if row.get(check.context_column or "") != "kept"]
        details["first_keys"] = keys[:TOP]
    if check.purpose:
        details["description"] = check.purpose
    return details


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(since: datetime | None, now: datetime) -> str:
    """How long an alert has lasted, to the minute: `45m`, `3h 30m`, `2d 4h`."""
    if since is None:
        return ""
    minutes = max(0, int((now - since).total_seconds()) // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes and not days else ""]
    return " ".join(part for part in parts if part) or "under a minute"


def _summary(result: AuditResult, check: CheckResult | None, new: int, status: str) -> str:
    if check is None and result.rollback:
        return f"{result.audit_name}: ROLLBACK criterion met: {'; '.join(result.rollback)}"
    if check is None:
        return f"{result.audit_name}: the audit could not run: {result.errors[0]}"
    if check.status == "error":
        return f"{result.audit_name}: {check.id} could not run: {check.error}"
    count = check.violation_count or 0
    fresh = f", {new} new" if new and check.kind != "metric" else ""  # a metric: its value
    why = f" ({check.purpose})" if check.purpose else ""
    what = (f"{check.value_text}" if check.value_text and check.kind == "metric" else
            f"{count:,} violation{'s' if count != 1 else ''}")
    return f"{result.audit_name}: {check.id}{why} {status.upper()} — {what}{fresh}"


def _recovery(result: AuditResult, check_id: str, previous: dict, now: datetime) -> str:
    what = {AUDIT_ERRORS: "the audit runs again",
            ROLLBACK: "no rollback criterion is met any more" if result.watch is not None
            else "the watch is over (rollback criteria are judged only during a watch)"}.get(
        check_id, f"{check_id} passes again")
    since = previous.get("opened_at")
    lasted = f" after {_span(since, now)} (since {_clock(since)})" if since else ""
    return f"{result.audit_name}: {what}{lasted}"


# ---------------------------------------------------------------------------
# Sending.


def deliver(result: AuditResult, audit: Audit, history: History | None,
            report: str | None, deadline: float | None = None,
            dry_run: str | Path | None = None) -> list[Delivery]:
    """Plan, send and record every channel of the audit; never raises for a channel.
    `deadline` (time.monotonic()): the job's own bound, on top of each channel's timeout.
    `dry_run`: append each message to this file (JSON lines) instead of sending it.

    Everything is judged, and recorded, at the run's `now` — one clock, so a replay with
    --now sends what production would have sent."""
    now = result.now
    rules = {check.id: check.notify for check in audit.checks if check.notify is not None}
    outbox = _FileOutbox(Path(dry_run), now) if dry_run else _NETWORK
    deliveries = []
    for channel in audit.config.notify:
        key = channel_key(channel)
        state = history.alert_state(result.audit_name, result.target, key) if history else {}
        steps = plan(result, channel, state, now, rules)
        alerts = [step.alert for step in steps if step.alert is not None]
        held = [step.check_id for step in steps if step.held]
        if alerts:
            link = (channel.report_url or report or "").replace(
                "{run_id}", str(result.run_id or "")) or None
            delivery = _send(channel, alerts, result, link, deadline, outbox)
            delivery.suppressed = held
            deliveries.append(delivery)
        elif held:
            delivery = Delivery(channel_name(channel), describe_target(channel), [], True, 0,
                                suppressed=held)
            deliveries.append(delivery)
        else:
            delivery = None
        if history is not None and steps:
            history.record_alerts(result.audit_name, result.target, key, channel_name(channel),
                                  result.run_id, steps, delivery, now)
    return deliveries


def acknowledge_incidents(audit: Audit, acknowledged: list[dict], check_id: str) -> list[str]:
    """PagerDuty hears `acknowledge` for the open incidents of alerts just acknowledged
    (its on-call stops escalating); one line per incident told, or not."""
    lines = []
    for channel in audit.config.notify:
        if channel.channel != "pagerduty":
            continue
        if "${" in channel.routing_key:  # read without secrets: say so, acknowledge anyway
            if any(a["channel"].startswith("pagerduty:") and a["announced"]
                   for a in acknowledged):
                lines.append(f"integrity: warning: {channel_name(channel)} was not told: "
                             f"{channel.routing_key} is not set here (PagerDuty keeps "
                             f"escalating until the incident is acknowledged there)")
            continue
        key = channel_key(channel)
        for alert in acknowledged:
            if alert["channel"] != key or not alert["announced"]:
                continue
            event = {"routing_key": channel.routing_key, "event_action": "acknowledge",
                     "dedup_key": dedup_key(audit.name, check_id, alert["target"] or "")}
            try:
                within(channel.timeout.total_seconds(), lambda: _post(
                    channel.events_url, json.dumps(event).encode(), {},
                    _socket_timeout(channel)))
                lines.append(f"{channel_name(channel)} ({describe_target(channel)}): "
                             f"incident {event['dedup_key']} acknowledged")
            except (ChannelError, Overran) as error:
                reason = scrub(str(error), secrets_of(channel)) or "no answer in time"
                lines.append(f"integrity: warning: {channel_name(channel)} "
                             f"({describe_target(channel)}) was not told: {reason}")
    return lines


def _send(channel, alerts: list[Alert], result: AuditResult, link: str | None,
          deadline: float | None = None, outbox: Any = None) -> Delivery:
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
            within(left, lambda: sender(channel, alerts, result, link, outbox or _NETWORK))
            error = None
            break
        except Overran:
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
    return Delivery(channel_name(channel), describe_target(channel),
                    [a.check_id for a in alerts], error is None, attempts, error)


def _socket_timeout(channel) -> float:
    """Each socket wait: a backstop just past the delivery's own total (see `web.within`)."""
    return channel.timeout.total_seconds() + 1


class _Network:
    """Messages go out: HTTP POSTs and SMTP."""

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
        _post(url, body, headers, timeout)

    def mail(self, channel, message: EmailMessage, timeout: float) -> None:
        _smtp(channel, message, timeout)


class _FileOutbox:
    """`--notify-dry-run FILE`: each message appended as one JSON line, nothing sent."""

    def __init__(self, path: Path, now: datetime):
        self.path, self.now = path, now

    def _write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"at": _iso(self.now), **record}, sort_keys=True) + "\n")

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        self._write({"to": f"{parts.scheme}://{parts.hostname}", "body": json.loads(body)})

    def mail(self, channel, message: EmailMessage, timeout: float) -> None:
        self._write({"to": message["To"], "subject": message["Subject"],
                     "body": message.get_content()})


_NETWORK = _Network()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    try:
        # Not followed: urllib would re-send a redirected POST as a GET without its body,
        # and a 200 from there would count as delivered when nothing was.
        answer = request(url, method="POST", body=body, timeout=timeout, max_redirects=0,
                         headers={"Content-Type": "application/json", **headers})
    except urllib.error.URLError as error:
        raise ChannelError(f"cannot reach {urlsplit(url).hostname}: {error.reason}", True) \
            from None
    except (TimeoutError, OSError) as error:
        raise ChannelError(f"no answer from {urlsplit(url).hostname} within {timeout:g}s "
                           f"({type(error).__name__})", True) from None
    if 300 <= answer.status < 400:
        raise ChannelError(f"HTTP {answer.status} {answer.reason}: redirected, not followed "
                           f"(give the address that answers itself)", False)
    if not 200 <= answer.status < 300:
        retryable = answer.status >= 500 or answer.status == 429
        raise ChannelError(f"HTTP {answer.status} {answer.reason}", retryable)
    return answer.status


def _headline(result: AuditResult, alerts: list[Alert]) -> str:
    open_ = [a for a in alerts if a.action == "trigger"]
    recovered = [a for a in alerts if a.action == "resolve"]
    worst = max((STATUS_RANK[a.status] for a in open_), default=0)
    label = {4: "ERROR", 3: "FAIL", 2: "WARN", 1: "INFO"}.get(worst, "RESOLVED")
    if any(a.check_id == ROLLBACK and a.action == "trigger" for a in alerts):
        label = "ROLLBACK"
    parts = []
    if open_:
        parts.append(f"{len(open_)} {'check needs' if len(open_) == 1 else 'checks need'} "
                     f"attention")
    if recovered:
        parts.append(f"{len(recovered)} recovered")
    return (f"[{label}] integrity {result.audit_name}: {', '.join(parts)} "
            f"(exit {exit_code(result)})")


def _lines(alerts: list[Alert], now: datetime) -> list[str]:
    lines = []
    for alert in alerts:
        head = alert.summary
        if alert.reason == "reminder":
            head += f" — still, since {_clock(alert.since)} ({_span(alert.since, now)}), " \
                    f"reminder {alert.reminder}"
        elif alert.reason == "late":
            head += f" — since {_clock(alert.since)} (held back until now)"
        lines.append(f"- {head}")
        lines += [f"  {line}" for line in _detail_lines(alert.details)] \
            if alert.action == "trigger" else []
    return lines


def _detail_lines(details: dict[str, Any]) -> list[str]:
    lines = []
    if "value" in details or "thresholds" in details:
        bounds = "; ".join(f"{'critical' if level == 'critical' else 'warning'} if {bound}"
                           for level, bound in details.get("thresholds", {}).items())
        interval = details.get("interval")
        over = (f" over [{interval['start']}, {interval['end']})" if interval else "")
        value = details.get("value")
        lines.append(" ".join(part for part in (
            f"value {value}" if value else "", f"({bounds})" if bounds else "") if part)
            + over)
    if "baseline" in details:
        text = str(details["baseline"])
        lines.append(text if text.startswith("baseline") else f"baseline {text}")
    if details.get("top_tenants"):
        lines.append("top tenants: " + ", ".join(
            f"{row['tenant']} ({row['violations']:,})" for row in details["top_tenants"]))
    if details.get("first_keys"):
        lines.append("first keys: " + "; ".join(
            ", ".join(f"{name}={value}" for name, value in key.items())
            for key in details["first_keys"]))
    return [line for line in lines if line.strip()]


def _clock(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def _slack(channel, alerts, result, link, outbox) -> None:
    text = "\n".join([_headline(result, alerts), *_lines(alerts, result.now),
                      *([f"Report: {link}"] if link else [])])
    body = json.dumps({"text": text}).encode()
    outbox.post(channel.webhook_url, body, {}, _socket_timeout(channel))


def _webhook(channel, alerts, result, link, outbox) -> None:
    body = json.dumps({
        "audit": result.audit_name, "target": result.target, "run_id": result.run_id,
        "exit_code": exit_code(result), "data_as_of": result.now.isoformat(),
        "report": link, "alerts": [_alert_document(alert) for alert in alerts]},
        sort_keys=True, default=str).encode()
    headers = {}
    if channel.secret:
        stamp = str(int(time.time()))
        digest = hmac.new(channel.secret.encode(), stamp.encode() + b"." + body,
                          hashlib.sha256).hexdigest()
        headers = {"X-Integrity-Timestamp": stamp, "X-Integrity-Signature": f"sha256={digest}"}
    outbox.post(channel.url, body, headers, _socket_timeout(channel))


def _alert_document(alert: Alert) -> dict[str, Any]:
    document = asdict(alert)
    document["since"] = _iso(alert.since) if alert.since else None
    return document


def dedup_key(audit_name: str, check_id: str, target: str = "") -> str:
    """One PagerDuty incident per check and audited database: staging resolving must not
    resolve production's incident. A long target name is shortened to a hash."""
    if len(target) > 60:  # a server identity, not a name: shortened
        target = hashlib.sha256(target.encode()).hexdigest()[:12]
    return f"integrity/{audit_name}/{check_id}" + (f"@{target}" if target else "")


def _pagerduty(channel, alerts, result, link, outbox) -> None:
    for alert in alerts:
        event: dict[str, Any] = {"routing_key": channel.routing_key,
                                 "event_action": alert.action,
                                 "dedup_key": dedup_key(result.audit_name, alert.check_id,
                                                        result.target or "")}
        if alert.action == "trigger":
            details = {"violations": alert.violation_count, "new": alert.new_count,
                       "run": result.run_id, "exit_code": exit_code(result), **alert.details}
            if alert.since:
                details["since"] = _iso(alert.since)
            event["payload"] = {
                "summary": alert.summary[:1024], "source": result.database or "integrity",
                "severity": PAGERDUTY_SEVERITY[alert.status], "component": alert.check_id,
                "group": result.audit_name, "class": alert.reason,
                "custom_details": details}
            if link and link.startswith(("http://", "https://")):
                event["links"] = [{"href": link, "text": "integrity report"}]
        outbox.post(channel.events_url, json.dumps(event).encode(), {},
                    _socket_timeout(channel))


def _email(channel, alerts, result, link, outbox) -> None:
    message = EmailMessage()
    message["Subject"] = _headline(result, alerts)
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message.set_content("\n".join([*_lines(alerts, result.now), "",
                                   *([f"Report: {link}"] if link else []),
                                   f"Run #{result.run_id} of {result.audit_file}, data as of "
                                   f"{result.now:%Y-%m-%d %H:%M} UTC."]))
    outbox.mail(channel, message, _socket_timeout(channel))


def _smtp(channel, message: EmailMessage, timeout: float) -> None:
    smtp = channel.smtp
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as server:
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
