"""The API's request log and the application's log, with one known incident (seeds 000-003).

Seeds 000 to 003 watch endpoints and logs as much as tables: error rates, p95
response times, idempotency hits, webhook failures, "no ERROR level messages",
"background jobs running (every 30 seconds)". This module makes that traffic
for the reference data: the `ApiRequest` table (the last three days, a few
hundred requests an hour) and the lines of `app.log` (the last two days).

Traffic is the same every hour, whatever the scale: each endpoint's requests
are spread evenly over the hour (one in each of n equal slots, at a random
moment of it), so every quarter of an hour has requests of every endpoint and
a rate over 15 minutes always has a denominator. In every complete hour the
send endpoint sees one repeat the idempotency cache answered, the WhatsApp
endpoint one invalid phone and one message that is too long, and every sixth
hour one login fails. No clean request fails with a 5xx and no clean log line
is an error (nor says "error"), so every check of the seed audits passes on it.

With injections there is one incident, in the first half of the last complete
hour before `now` — so hourly checks (`window: 1h, align: hour`) see all of it
and the 15- and 30-minute rollback windows, which end at `now`, see none of it:

- the send endpoint answers its 20 requests slowly (6-7 s) and 8 of them with
  a 500, one of those a failed database transaction;
- the WhatsApp endpoint rejects 2 more invalid phones with a 400, and one with
  a 500 (a validation failure that should have been a 400);
- the Chatwoot webhook fails 5 times with a 500, each logged as an ERROR line;

and in the log, the `call-sync` background job stopped 20 minutes before `now`.
`Traffic.expected` names, per check of the seed audits, the keys the incident
breaks; `Traffic.values`, the values it gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

SEND = "/api/agents/quotes/[id]/send"
WHATSAPP = "/api/agents/quotes/send/whatsapp"
HEALTH = "/health"
CALLS = "/api/calls"
ASSISTANTS = "/api/assistants"
CHATWOOT = "/api/webhooks/chatwoot"
LOGIN = "/api/auth/login"
# method, path, requests an hour, fastest and slowest answer in ms.
ENDPOINTS = [
    ("POST", SEND, 40, 80, 450),
    ("POST", WHATSAPP, 30, 60, 300),
    ("GET", HEALTH, 60, 5, 60),
    ("GET", CALLS, 30, 100, 400),
    ("GET", ASSISTANTS, 10, 300, 900),  # "known slow"
    ("POST", CHATWOOT, 30, 30, 150),
    ("POST", LOGIN, 20, 80, 250),
]
REQUEST_HOURS = 72  # the request log keeps three days
LOG_HOURS = 48  # the application log two
BACKGROUND_JOBS = ["call-sync", "queue-worker"]  # each runs every 30 seconds
STOPPED_JOB = "call-sync"
COLUMNS = ["id", "tenantId", "method", "endpoint", "statusCode", "durationMs", "requestId",
           "idempotentReplay", "errorCode", "at"]
SLOW_MS = (6000, 7000)
# The checks of the seed audits that this data breaks (their ids, as the audits name them).
HOURLY = ["send_error_rate", "send_response_p95", "send_transaction_failures",
          "whatsapp_validation_error_rate", "whatsapp_invalid_phone_rate", "send_success_rate",
          "http_5xx_rate", "api_availability", "api_response_time", "error_rate", "log_errors",
          "log_error_lines", "webhook_failures", "webhook_500s"]
PER_ENDPOINT = ["endpoint_p99", "response_time"]
CHECKS = [*HOURLY, *PER_ENDPOINT, "validation_answered_500", "background_jobs"]


@dataclass
class Traffic:
    requests: pd.DataFrame
    log: list[str]
    expected: dict[str, set[tuple]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)


def make(now: datetime, tenants: list[str], seed: int, inject: bool) -> Traffic:
    """The request log and the application log up to `now` (naive UTC)."""
    rng = np.random.default_rng([seed, 2026])  # its own stream: the tables' data is unchanged
    top = pd.Timestamp(now).floor("h")
    incident = top - pd.Timedelta(hours=1)
    rows = []
    for start in (top - pd.Timedelta(hours=k) for k in range(REQUEST_HOURS, -1, -1)):
        full = start + pd.Timedelta(hours=1) <= pd.Timestamp(now)
        for method, path, per_hour, fastest, slowest in ENDPOINTS:
            moments = start + pd.to_timedelta((np.arange(per_hour) + rng.random(per_hour))
                                              / per_hour * 3600, unit="s")
            durations = rng.integers(fastest, slowest + 1, per_hour)
            owners = rng.integers(0, len(tenants), per_hour)
            for k in range(per_hour):
                if moments[k] >= pd.Timestamp(now):
                    break
                status, error = 200, None
                if path == WHATSAPP and full and k == per_hour - 1:
                    status, error = 400, "INVALID_PHONE"
                elif path == WHATSAPP and full and k == per_hour - 2:
                    status, error = 400, "MESSAGE_TOO_LONG"
                elif path == LOGIN and full and k == per_hour - 1 and start.hour % 6 == 0:
                    status, error = 401, "INVALID_CREDENTIALS"
                tenant = None if path == HEALTH else tenants[owners[k]]
                rows.append([tenant, method, path, status, int(durations[k]), None, 0, error,
                             moments[k], start, k])
                if path == SEND and full and k == per_hour // 2 + 5:
                    # A double submit the idempotency cache answered: same request id.
                    rows.append([tenant, method, path, 200, int(rng.integers(5, 21)), "replay",
                                 1, None, moments[k] + pd.Timedelta(seconds=3), start, -1])
    frame = pd.DataFrame(rows, columns=["tenantId", "method", "endpoint", "statusCode",
                                        "durationMs", "requestId", "idempotentReplay",
                                        "errorCode", "at", "hour", "slot"])
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    original = frame["requestId"].isna()
    frame.loc[original, "requestId"] = [f"rq_{n:08d}" for n in frame.loc[original, "id"]]
    replays = frame.index[~original]
    frame.loc[replays, "requestId"] = frame.loc[replays - 1, "requestId"].to_numpy()
    traffic = Traffic(requests=frame, log=[])
    stopped_at = None
    if inject:
        _incident(traffic, rng, incident)
        stopped_at = pd.Timestamp(now) - pd.Timedelta(minutes=20)
        traffic.expected["background_jobs"] = {(STOPPED_JOB,)}
    traffic.log = _log(traffic.requests, now, stopped_at)
    traffic.requests = frame[COLUMNS].copy()
    traffic.requests["at"] = traffic.requests["at"].dt.floor("ms")
    return traffic


def _incident(traffic: Traffic, rng, hour: pd.Timestamp) -> None:
    frame = traffic.requests
    first_half = (frame["hour"] == hour) & (frame["at"] < hour + pd.Timedelta(minutes=30)) \
        & (frame["slot"] >= 0)

    def pick(path: str, count: int) -> list[int]:
        rows = frame.index[first_half & (frame["endpoint"] == path)
                           & (frame["statusCode"] == 200)]
        return [rows[i] for i in sorted(rng.choice(len(rows), count, replace=False))]

    slow = frame.index[first_half & (frame["endpoint"] == SEND)]
    frame.loc[slow, "durationMs"] = rng.integers(SLOW_MS[0], SLOW_MS[1] + 1, len(slow))
    failed = pick(SEND, 8)
    frame.loc[failed, ["statusCode", "errorCode"]] = [500, "INTERNAL"]
    frame.loc[failed[0], "errorCode"] = "TRANSACTION_FAILED"
    rejected = pick(WHATSAPP, 3)
    frame.loc[rejected[:2], ["statusCode", "errorCode"]] = [400, "INVALID_PHONE"]
    frame.loc[rejected[2], ["statusCode", "errorCode"]] = [500, "INVALID_PHONE"]
    webhooks = pick(CHATWOOT, 5)
    frame.loc[webhooks, ["statusCode", "errorCode"]] = [500, "INTERNAL"]

    # What the incident does to the seed audits' checks, counted from the rows it changed.
    in_hour = frame[frame["hour"] == hour]
    of = lambda path: in_hour[in_hour["endpoint"] == path]  # noqa: E731
    sends, whatsapp = of(SEND), of(WHATSAPP)
    server_errors = int((in_hour["statusCode"] >= 500).sum())
    validation = whatsapp["errorCode"].isin(["INVALID_PHONE", "MESSAGE_TOO_LONG"])
    both = pd.concat([sends, whatsapp])
    traffic.values.update({check: float(value) for check, value in {
        "send_error_rate": (sends["statusCode"] >= 500).sum() / len(sends),
        "send_transaction_failures": 1 / len(sends),
        "whatsapp_validation_error_rate": validation.sum() / len(whatsapp),
        "whatsapp_invalid_phone_rate": (whatsapp["errorCode"] == "INVALID_PHONE").sum()
        / len(whatsapp),
        "send_success_rate": (both["statusCode"] < 300).sum() / len(both),
        "http_5xx_rate": server_errors / len(in_hour),
        "error_rate": server_errors / len(in_hour),
        "api_response_time": in_hour["durationMs"].mean(),
        "webhook_failures": 5, "webhook_500s": 5, "log_errors": 5, "log_error_lines": 5,
    }.items()})
    for check in HOURLY:
        traffic.expected[check] = {("all rows",)}
    for check in PER_ENDPOINT:  # judged per endpoint: the slow one
        traffic.expected[check] = {(SEND,)}
    traffic.expected["validation_answered_500"] = {(int(frame.loc[rejected[2], "id"]),)}


def _log(requests: pd.DataFrame, now: datetime, stopped_at: pd.Timestamp | None) -> list[str]:
    """The application log of the last LOG_HOURS: job runs, webhooks, a few warnings."""
    start = pd.Timestamp(now) - pd.Timedelta(hours=LOG_HOURS)
    entries = []
    ticks = pd.date_range(start.ceil("30s"), pd.Timestamp(now), freq="30s", inclusive="left")
    for number, job in enumerate(BACKGROUND_JOBS):
        for tick in ticks:
            if job == STOPPED_JOB and stopped_at is not None and tick >= stopped_at:
                break
            moment = tick + pd.Timedelta(milliseconds=120 + 250 * number)
            entries.append((moment, f"INFO [Background Jobs] {job} ran in "
                                    f"{40 + (tick.minute * 7 + number) % 50}ms"))
    hooks = requests[(requests["endpoint"] == CHATWOOT) & (requests["at"] >= start)]
    for moment, status, request in zip(hooks["at"], hooks["statusCode"], hooks["requestId"]):
        entries.append((moment, f"INFO [Chatwoot Webhook] received message_created "
                                f"request={request}"))
        if status >= 500:
            entries.append((moment + pd.Timedelta(milliseconds=40),
                            f"ERROR [Chatwoot Webhook] failed message_created "
                            f"request={request}: upstream timeout"))
    for hour in pd.date_range(start.ceil("6h"), pd.Timestamp(now), freq="6h"):
        entries.append((hour + pd.Timedelta(minutes=7), "WARN [Vapi] assistant request took "
                                                        "4100ms, retrying once"))
    entries.sort(key=lambda entry: entry[0])
    return [f"{moment.strftime('%Y-%m-%dT%H:%M:%S.')}{moment.microsecond // 1000:03d}Z "
            f"{text}" for moment, text in entries]
