"""Fill the reference schema with realistic data and known, injected violations.

`build()` makes clean data first — every check of `audits/reference.yml`
passes on it — then, unless `inject=False`, breaks it in documented ways and
records, per check id, the exact violation keys the audit must report. The
expectations come from the injections, not from running any check, so tests
that compare the two really test the checks.

Deterministic for a (scale, seed, now) triple. Scale 1 is about 100k quotes,
~200k send events, 100k leads, 50k conversations, 500k messages and 100k
access-log rows.

The request log and the application log of seeds 000-003 come from `traffic`
(its own random stream, so the tables above are the same with or without it);
`write_app_log()` writes the log, and on PostgreSQL
`enable_row_level_security()` gives the tenant tables policies — one leaky,
one table without — for seed 001's isolation probe.

`next_night()` ages a snapshot the way a production database ages: the same
rows plus a day of new ones; most violations persist (same keys), a few are
repaired and a few new ones appear in the new rows — so audits on consecutive
nights show new, persisting and resolved violations.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from integrity.reference import schema, traffic

CHANNELS = ["EMAIL", "WHATSAPP", "LINK"]
# Results of the Great Expectations suites in expectations/, as the reference audit names them.
GX = {
    "phone": "lead_columns:expect_column_values_to_match_regex(phone)",
    "email": "lead_columns:expect_column_values_to_match_regex(email)",
    "code": "lead_columns:expect_column_values_to_be_unique(customerCode)",
    "url": "quote_columns:expect_column_values_to_match_regex(whatsappUrl)",
    "status": "send_columns:expect_column_values_to_be_in_set(status)",
    "body": "message_columns:expect_column_value_lengths_to_be_between(body)",
    "delivered": "sms_metric_columns:"
                 "expect_column_pair_values_a_to_be_greater_than_b(sent_count, delivered_count)",
}
JOBS = ["sms-scheduler", "quote-reminders", "webhook-retry", "invoice-sync"]
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
SEND_COLUMNS = ["tenantId", "quoteId", "channel", "recipient", "idempotencyKey", "status", "sentAt"]
# What a night repairs: checks whose broken value can be put right from the data
# itself (each repair resolves one key, two for a wa.me link that a suite also flags).
REPAIRABLE = ["quote_email_counter", "quote_sent_at_valid", "whatsapp_urls_well_formed",
              "quote_agent_cross_tenant", "message_cross_tenant", "access_log_cross_tenant",
              "job_heartbeats"]
REPAIRS_PER_NIGHT = 3


@dataclass
class Reference:
    """Generated tables (naive UTC times) and what the reference audit must find."""

    now: datetime
    tables: dict[str, pd.DataFrame]
    expected: dict[str, set[tuple]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    unparseable_quote: str | None = None
    app_log: list[str] = field(default_factory=list)  # lines of app.log (write_app_log)
    # The generator's state, so that `next_night()` can continue from this snapshot.
    _builder: _Builder | None = field(default=None, init=False, repr=False, compare=False)

    def expect(self, check: str, *keys: tuple) -> None:
        self.expected.setdefault(check, set()).update(keys)

    def resolve(self, check: str, *keys: tuple) -> None:
        remaining = self.expected.get(check, set()) - set(keys)
        if remaining:
            self.expected[check] = remaining
        else:
            self.expected.pop(check, None)


def default_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def build(scale: float = 0.02, seed: int = 7, now: datetime | None = None, inject: bool = True,
          unparseable_dates: bool = False) -> Reference:
    """Generate the reference data. `unparseable_dates` stores garbage text in a
    timestamp column (only SQLite can hold it)."""
    now = (now or default_now()).astimezone(timezone.utc)
    return _Builder(scale, seed, now).run(inject, unparseable_dates)


def next_night(previous: Reference, now: datetime | None = None) -> Reference:
    """The snapshot a night after `previous` (or at `now`, later than it): the same rows
    plus new ones for the time in between. With injections, a few violations are
    repaired and a few new ones appear in the new rows; the rest persist with the same
    keys. Deterministic for a (previous, now) pair; `previous` is left as it was."""
    if previous._builder is None:
        raise ValueError("next_night() continues a snapshot made by build() or next_night()")
    now = (now or previous.now + DAY).astimezone(timezone.utc)
    if now <= previous.now:
        raise ValueError(f"the next night ({now}) must come after {previous.now}")
    return copy.deepcopy(previous._builder).advance(previous, now)


class _Builder:
    def __init__(self, scale: float, seed: int, now: datetime):
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.now = now.replace(tzinfo=None)  # tables hold naive UTC
        self.aware_now = now
        self.n_tenants = max(5, int(200 * scale))
        self.n_quotes = max(500, int(100_000 * scale))
        self.n_leads = max(500, int(100_000 * scale))
        self.n_access = max(300, int(100_000 * scale))
        self.used: set[str] = set()
        self.injected = False
        self.stopped_jobs: set[str] = set()
        self.quota_offset: dict[str, int] = {}
        self.lead_serial = self.n_leads  # the next clean lead's number

    # -- helpers -------------------------------------------------------------

    def days_ago(self, low: float, high: float, size: int) -> np.ndarray:
        seconds = self.rng.uniform(low * 86400, high * 86400, size)
        return (np.datetime64(self.now, "us") - (seconds * 1e6).astype("timedelta64[us]"))

    def pick(self, candidates: list, count: int, space: str = "quote") -> list:
        """`count` candidates not picked before (per table), in a seeded order."""
        free = [c for c in candidates if (space, c) not in self.used]
        if len(free) < count:
            raise RuntimeError("the reference data is too small for its injections")
        chosen = [free[i] for i in sorted(self.rng.choice(len(free), count, replace=False))]
        self.used.update((space, c) for c in chosen)
        return chosen

    # -- clean data -------------------------------------------------------------

    def run(self, inject: bool, unparseable: bool) -> Reference:
        self.tenants()
        self.quotes_and_sends()
        self.leads()
        self.conversations_and_messages()
        self.access_log()
        self.sms_metrics()
        self.heartbeats()
        reference = Reference(now=self.aware_now, tables={})
        self.injected = inject
        if inject:
            self.inject(reference, unparseable)
        self.webhooks(reference, inject)
        self.quota(reference, inject)
        self.traffic(reference)
        reference.tables = self.frames()
        reference._builder = self
        return reference

    def tenants(self):
        n = self.n_tenants
        self.tenant_ids = [f"tn_{i:05d}" for i in range(n)]
        self.tenant = pd.DataFrame({
            "id": self.tenant_ids, "name": [f"Tenant {i}" for i in range(n)],
            "whatsappQuotaUsed": 0, "createdAt": self.days_ago(200, 400, n)})
        users = [(f"us_{i:05d}_{j}", tid, f"agent{j}@tenant{i}.example.com",
                  "ADMIN" if j == 0 else "AGENT") for i, tid in enumerate(self.tenant_ids)
                 for j in range(4)]
        self.user = pd.DataFrame(users, columns=["id", "tenantId", "email", "role"])
        self.user["createdAt"] = self.days_ago(100, 200, len(self.user))

    def quotes_and_sends(self):
        self.quote, sends, self.bursts = self.make_quotes(0, self.n_quotes, 3, 30, 0)
        self.send = pd.DataFrame(sends, columns=SEND_COLUMNS)
        self.quote_index = {quote: i for i, quote in enumerate(self.quote["id"])}

    def make_quotes(self, start: int, n: int, low: float, high: float, first_send: int):
        """Quotes number `start` on, created `low`–`high` days ago, with their sends (rows,
        numbered from `first_send`) and bursts. Every send lies in the past when low >= 3."""
        rng = self.rng
        tenant_index = rng.integers(0, self.n_tenants, n)
        ids = [f"qt_{i:08d}" for i in range(start, start + n)]
        phones = [f"+4477{i:08d}" for i in range(start, start + n)]
        created = self.days_ago(low, high, n)
        sent = rng.random(n) < 0.7
        channel_draw = rng.choice(3, size=(n, 3), p=[0.6, 0.3, 0.1])
        burst_count = rng.integers(1, 4, n)
        first_delay = rng.uniform(600, 7200, n)
        gaps = rng.uniform(3600, 86400, (n, 3))
        hit_draw = rng.random((n, 3)) < 0.1
        hit_delay = rng.uniform(5, 120, (n, 3))
        sends, bursts_of = [], {}
        email_counts, sms_counts, sent_at, urls = [], [], [], []
        for i in range(n):
            quote, number = ids[i], start + i
            tenant = self.tenant_ids[tenant_index[i]]
            if not sent[i]:
                email_counts.append(0), sms_counts.append(0), sent_at.append(None)
                urls.append(None)
                continue
            moment = pd.Timestamp(created[i]) + pd.Timedelta(seconds=first_delay[i])
            counts = {"EMAIL": 0, "WHATSAPP": 0, "LINK": 0}
            bursts = []
            for b in range(burst_count[i]):
                channel = CHANNELS[channel_draw[i, b]]
                counts[channel] += 1
                key = None if channel == "WHATSAPP" else f"{quote}-{b}"
                recipient = {"EMAIL": f"customer{number}@example.com", "WHATSAPP": phones[i],
                             "LINK": f"https://quotes.example.com/q/{quote}"}[channel]
                rows = [first_send + len(sends)]
                sends.append([tenant, quote, channel, recipient, key, "SENT", moment])
                if hit_draw[i, b]:
                    rows.append(first_send + len(sends))
                    sends.append([tenant, quote, channel, recipient, key, "DEDUPED",
                                  moment + pd.Timedelta(seconds=hit_delay[i, b])])
                bursts.append({"channel": channel, "first": moment, "key": key,
                               "recipient": recipient, "rows": rows})
                moment += pd.Timedelta(seconds=gaps[i, b])
            bursts_of[quote] = bursts
            email_counts.append(counts["EMAIL"]), sms_counts.append(counts["WHATSAPP"])
            sent_at.append(bursts[-1]["first"])
            urls.append(f"https://wa.me/{phones[i][1:]}" if counts["WHATSAPP"] else None)
        agents = [f"us_{t:05d}_{j}" for t, j in zip(tenant_index, rng.integers(1, 4, n))]
        quote = pd.DataFrame({
            "id": ids, "tenantId": [self.tenant_ids[t] for t in tenant_index],
            "agentId": agents,
            "customerEmail": [f"customer{i}@example.com" for i in range(start, start + n)],
            "customerPhone": phones, "whatsappUrl": urls,
            "status": np.where(sent, "SENT", "DRAFT"), "emailSentCount": email_counts,
            "smsSentCount": sms_counts, "sentAt": pd.Series(sent_at, dtype="object"),
            "createdAt": created})
        quote["updatedAt"] = [
            (s if s is not None else pd.Timestamp(c)) + pd.Timedelta(minutes=10)
            for s, c in zip(quote["sentAt"], quote["createdAt"])]
        return quote, sends, bursts_of

    def leads(self):
        self.lead = self.make_leads(0, self.n_leads, 1, 30)

    def make_leads(self, start: int, n: int, low: float, high: float) -> pd.DataFrame:
        tenant_index = self.rng.integers(0, self.n_tenants, n)
        numbers = range(start, start + n)
        return pd.DataFrame({
            "id": [f"ld_{i:08d}" for i in numbers],
            "tenantId": [self.tenant_ids[t] for t in tenant_index],
            "email": [f"lead{i}@mail.example.com" for i in numbers],
            "phone": [f"+447{100_000_000 + i:09d}" for i in numbers],
            "customerCode": [f"C-{i:07d}" for i in numbers],
            "source": self.rng.choice(["chatwoot", "web", "import"], n),
            "createdAt": self.days_ago(low, high, n)})

    def conversations_and_messages(self):
        self.conversation, self.message = self.make_conversations(self.lead, 0, 0, 1, 30)

    def make_conversations(self, leads: pd.DataFrame, first: int, first_message: int,
                           low: float, high: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Conversations of half of `leads`, created `low`–`high` days ago, numbered from
        `first`, with ten messages each up to a minute ago (ids after `first_message`)."""
        rng = self.rng
        n = max(1, len(leads) // 2)
        lead_rows = leads.iloc[sorted(rng.choice(len(leads), n, replace=False))]
        without_lead = rng.random(n) < 0.2
        conversation = pd.DataFrame({
            "id": [f"cv_{i:08d}" for i in range(first, first + n)],
            "tenantId": lead_rows["tenantId"].to_numpy(),
            "leadId": np.where(without_lead, None, lead_rows["id"].to_numpy()),
            "createdAt": self.days_ago(low, high, n)})
        per = 10
        conv = np.repeat(np.arange(n), per)
        start = conversation["createdAt"].to_numpy().astype("datetime64[us]")[conv]
        end = np.datetime64(self.now - MINUTE, "us")
        span = (end - start).astype("int64")
        offsets = (rng.random(len(conv)) * span).astype("int64").astype("timedelta64[us]")
        times = start + offsets
        times[-1] = end  # the newest message is a minute old: "messages still arriving"
        numbers = first_message + np.arange(len(conv))
        message = pd.DataFrame({
            "id": numbers + 1,
            "tenantId": conversation["tenantId"].to_numpy()[conv],
            "conversationId": conversation["id"].to_numpy()[conv],
            "direction": np.where(numbers % 2 == 0, "INBOUND", "OUTBOUND"),
            "body": [f"message {i}" for i in numbers],
            "sentAt": times})
        return conversation, message

    def access_log(self):
        self.access = self.make_access(0, self.n_access, 0.01, 30)

    def make_access(self, first: int, n: int, low: float, high: float) -> pd.DataFrame:
        rng = self.rng
        quotes = self.quote.iloc[rng.integers(0, len(self.quote), n)]
        actors = [f"us_{int(t[3:]):05d}_{j}" for t, j in
                  zip(quotes["tenantId"], rng.integers(0, 4, n))]
        return pd.DataFrame({
            "id": np.arange(first + 1, first + n + 1), "actorUserId": actors,
            "actorTenantId": quotes["tenantId"].to_numpy().copy(), "resourceType": "AgentQuote",
            "resourceId": quotes["id"].to_numpy(),
            "resourceTenantId": quotes["tenantId"].to_numpy().copy(),
            "action": rng.choice(["read", "update"], n), "at": self.days_ago(low, high, n)})

    def sms_metrics(self):
        top = pd.Timestamp(self.now).floor("h")
        self.metrics = self.make_metrics([top - pd.Timedelta(hours=k) for k in range(30 * 24)], 0)

    def make_metrics(self, hours: list, first: int) -> pd.DataFrame:
        rng = self.rng
        n = len(hours)
        sent = np.full(n, 100)
        delivered = rng.integers(96, 100, n)
        generated = np.full(n, 100)
        fallback = rng.integers(10, 30, n)
        return pd.DataFrame({
            "id": np.arange(first + 1, first + n + 1), "metric_hour": hours,
            "scheduled_count": 105, "sent_count": sent,
            "delivered_count": delivered, "failed_count": sent - delivered,
            "generated_count": generated, "llm_success_count": generated - fallback,
            "template_fallback_count": fallback, "opt_out_count": rng.integers(0, 3, n),
            "daily_limit_hit_count": rng.integers(0, 5, n),
            "llm_cost_usd": rng.uniform(0.001, 0.0015, n).round(6)})

    def heartbeats(self):
        beats = [(job, pd.Timestamp(self.now) - pd.Timedelta(minutes=5 * k))
                 for job in JOBS for k in range(12 * 12)]
        self.beats = pd.DataFrame(beats, columns=["job", "beatAt"])

    def webhooks(self, reference: Reference, inject: bool):
        leads = pd.DataFrame({"tenantId": self.lead["tenantId"], "eventType": "lead.created",
                              "receivedAt": self.lead["createdAt"]})
        conversations = pd.DataFrame({"tenantId": self.conversation["tenantId"],
                                      "eventType": "conversation.created",
                                      "receivedAt": self.conversation["createdAt"]})
        events = pd.concat([leads, conversations], ignore_index=True)
        if inject:
            # A lead whose webhook never arrived, and a webhook whose lead was never created.
            lost = self.lead[self.lead["tenantId"].isin(self.tenant_ids)].iloc[7]
            events = events.drop(index=lost.name)
            day = (pd.Timestamp(self.now) - pd.Timedelta(days=2)).normalize()
            tenant = self.tenant_ids[1] if lost["tenantId"] != self.tenant_ids[1] else \
                self.tenant_ids[2]
            events = pd.concat([events, pd.DataFrame({
                "tenantId": [tenant], "eventType": ["lead.created"],
                "receivedAt": [day + pd.Timedelta(hours=13)]})], ignore_index=True)
            reference.expect("leads_match_webhooks",
                             (lost["tenantId"], pd.Timestamp(lost["createdAt"]).strftime("%Y-%m-%d")),
                             (tenant, day.strftime("%Y-%m-%d")))
        self.webhook = events.reset_index(drop=True)
        self.webhook.insert(0, "id", np.arange(1, len(self.webhook) + 1))

    def quota(self, reference: Reference, inject: bool):
        outbound = self.message[self.message["direction"] == "OUTBOUND"]
        used = outbound.groupby("tenantId").size()
        self.tenant["whatsappQuotaUsed"] = self.tenant["id"].map(used).fillna(0).astype(int)
        if inject:
            row = self.tenant.index[3]
            self.tenant.loc[row, "whatsappQuotaUsed"] += 5
            self.quota_offset[self.tenant.loc[row, "id"]] = 5
            reference.expect("whatsapp_quota_matches_messages", (self.tenant.loc[row, "id"],))

    def traffic(self, reference: Reference) -> None:
        """The request log and the application log up to now, with their incident."""
        made = traffic.make(self.now, self.tenant_ids, self.seed, self.injected)
        self.requests = made.requests
        reference.app_log = made.log
        for check, keys in made.expected.items():
            reference.expect(check, *keys)
        reference.values.update(made.values)

    def frames(self) -> dict[str, pd.DataFrame]:
        send = self.send.copy()
        send.insert(0, "id", np.arange(1, len(send) + 1))
        frames = {"Tenant": self.tenant, "User": self.user, "AgentQuote": self.quote,
                "QuoteSend": send, "Lead": self.lead, "Conversation": self.conversation,
                "Message": self.message, "WebhookEvent": self.webhook, "AccessLog": self.access,
                "sms_metrics": self.metrics,
                "JobHeartbeat": self.beats.assign(id=np.arange(1, len(self.beats) + 1))[
                    ["id", "job", "beatAt"]],
                "ApiRequest": self.requests}
        return {name: _to_milliseconds(frame) for name, frame in frames.items()}

    # -- injected violations --------------------------------------------------------

    def add_send(self, quote: str, burst: dict, status: str, moment, key="same") -> int:
        row = self.quote.loc[self.quote_index[quote]]
        key = burst["key"] if key == "same" else key
        self.send.loc[len(self.send)] = [row["tenantId"], quote, burst["channel"],
                                         burst["recipient"], key, status, moment]
        return len(self.send)  # ids are 1-based row numbers

    def quotes_with(self, predicate) -> list[str]:
        return [q for q, bursts in self.bursts.items() if predicate(bursts)]

    def set_quote(self, quote: str, column: str, value) -> None:
        self.quote.loc[self.quote_index[quote], column] = value

    def double_click_whatsapp(self, quote: str, reference: Reference) -> None:
        """Two WhatsApp sends 2 s apart, no key, the counter incremented twice."""
        burst = next(b for b in self.bursts[quote] if b["channel"] == "WHATSAPP")
        send_id = self.add_send(quote, burst, "SENT", burst["first"] + pd.Timedelta(seconds=2))
        self.set_quote(quote, "smsSentCount",
                       self.quote.loc[self.quote_index[quote], "smsSentCount"] + 1)
        reference.expect("quote_sms_counter", (quote,))
        reference.expect("quote_send_double_clicks", (send_id,))

    def inject(self, reference: Reference, unparseable: bool) -> None:
        has = lambda channel: (lambda bursts: any(b["channel"] == channel for b in bursts))
        last_email = lambda bursts: bursts[-1]["channel"] == "EMAIL" and len(bursts[-1]["rows"]) == 1

        # Idempotency broken: a retry with the same key incremented emailSentCount.
        for quote in self.pick(self.quotes_with(has("EMAIL")), 3):
            burst = next(b for b in self.bursts[quote] if b["channel"] == "EMAIL")
            if len(burst["rows"]) == 1:
                self.add_send(quote, burst, "DEDUPED", burst["first"] + pd.Timedelta(seconds=30))
            self.set_quote(quote, "emailSentCount",
                           self.quote.loc[self.quote_index[quote], "emailSentCount"] + 1)
            reference.expect("quote_email_counter", (quote,))
        # Counters not incrementing at all.
        for quote in self.pick(self.quotes_with(has("EMAIL")), 2):
            self.set_quote(quote, "emailSentCount", 0)
            reference.expect("quote_email_counter", (quote,))
        # Double click on WhatsApp: two sends 2 s apart, no key, counter incremented twice.
        for quote in self.pick(self.quotes_with(has("WHATSAPP")), 3):
            self.double_click_whatsapp(quote, reference)
        # Double click on e-mail with two different keys: the counter agrees with the
        # keys, only the time-window rule sees it.
        for quote in self.pick(self.quotes_with(has("EMAIL")), 1):
            burst = next(b for b in self.bursts[quote] if b["channel"] == "EMAIL")
            send_id = self.add_send(quote, burst, "SENT", burst["first"] + pd.Timedelta(seconds=1),
                                    key=f"{quote}-double")
            self.set_quote(quote, "emailSentCount",
                           self.quote.loc[self.quote_index[quote], "emailSentCount"] + 1)
            reference.expect("quote_send_double_clicks", (send_id,))
        # sentAt overwritten by a re-send within the window (one of them a 0:00/0:04/0:08 chain).
        for n, quote in enumerate(self.pick(self.quotes_with(last_email), 3)):
            burst = self.bursts[quote][-1]
            delays = [240, 480] if n == 0 else [90]
            for delay in delays:
                self.add_send(quote, burst, "DEDUPED", burst["first"] + pd.Timedelta(seconds=delay))
            self.set_quote(quote, "sentAt", burst["first"] + pd.Timedelta(seconds=delays[-1]))
            reference.expect("quote_sent_at_preserved", (quote,))
        # sentAt corruption: null, in the future, before createdAt (and garbage text).
        corrupt = self.pick(self.quotes_with(lambda bursts: True), 4 if unparseable else 3)
        self.set_quote(corrupt[0], "sentAt", None)
        self.set_quote(corrupt[1], "sentAt", pd.Timestamp(self.now) + pd.Timedelta(days=3))
        created = self.quote.loc[self.quote_index[corrupt[2]], "createdAt"]
        self.set_quote(corrupt[2], "sentAt", pd.Timestamp(created) - pd.Timedelta(hours=1))
        reference.unparseable_quote = corrupt[3] if unparseable else None
        reference.expect("quote_sent_at_valid", *[(quote,) for quote in corrupt])
        # Malformed wa.me links.
        for n, quote in enumerate(self.pick(self.quotes_with(has("WHATSAPP")), 2)):
            digits = self.quote.loc[self.quote_index[quote], "customerPhone"][1:]
            url = f"https://wa.me/+{digits[:4]} {digits[4:]}" if n == 0 else f"http://wa.me/{digits}"
            self.set_quote(quote, "whatsappUrl", url)
            reference.expect("whatsapp_urls_well_formed", (quote,))
            reference.expect(GX["url"], (quote,))
        # A send stuck in a status the application does not know.
        lone_link = lambda bursts: any(b["channel"] == "LINK" and len(b["rows"]) == 1
                                       for b in bursts)
        for quote in self.pick(self.quotes_with(lone_link), 1):
            burst = next(b for b in self.bursts[quote]
                         if b["channel"] == "LINK" and len(b["rows"]) == 1)
            self.send.loc[burst["rows"][0], "status"] = "QUEUED"
            reference.expect(GX["status"], (burst["rows"][0] + 1,))
        # A quote assigned to another tenant's agent.
        for quote in self.pick(list(self.quote["id"]), 2):
            tenant = self.quote.loc[self.quote_index[quote], "tenantId"]
            other = next(t for t in self.tenant_ids if t != tenant)
            self.set_quote(quote, "agentId", f"us_{int(other[3:]):05d}_1")
            reference.expect("quote_agent_cross_tenant", (quote,))
        self.inject_leads(reference)
        self.inject_messages(reference)
        self.inject_operations(reference)

    def next_lead(self, reference_row, **changes) -> str:
        lead_id = f"ld_x{len(self.lead):07d}"
        n = len(self.lead)
        row = {**reference_row.to_dict(), "id": lead_id,
               "email": f"extra{n}@mail.example.com", "phone": f"+447{900_000_000 + n:09d}",
               "customerCode": f"C-X{n:06d}", **changes}
        self.lead.loc[n] = row
        return lead_id

    def inject_leads(self, reference: Reference) -> None:
        originals = self.pick(list(self.lead.index[:200]), 4, "lead")
        first, second, third, other_tenant = (self.lead.loc[i] for i in originals)
        hour = pd.Timedelta(hours=1)
        # Duplicate e-mails after trimming and lower-casing: a group of three, a group of two.
        local, domain = first["email"].split("@")
        copies = [self.next_lead(first, email=f"  {local.upper()}@{domain} ",
                                 createdAt=first["createdAt"] + hour),
                  self.next_lead(first, email=f"{local}@{domain.upper()}",
                                 createdAt=first["createdAt"] + 2 * hour),
                  self.next_lead(second, email=second["email"].title(),
                                 createdAt=second["createdAt"] + hour)]
        reference.expect("lead_duplicate_email", *[(c,) for c in copies])
        reference.expect(GX["email"], (copies[0],))  # the one with spaces around it
        # The same address in another tenant is not a duplicate.
        tenant = next(t for t in self.tenant_ids if t != first["tenantId"])
        self.next_lead(other_tenant, tenantId=tenant, email=first["email"])
        # The same phone in national format (07…) and in E.164 (+447…).
        national = "0" + third["phone"][3:6] + " " + third["phone"][6:]
        copy = self.next_lead(third, phone=national, createdAt=third["createdAt"] + hour)
        reference.expect("lead_duplicate_phone", (copy,))
        reference.expect(GX["phone"], (copy,))  # national format, not E.164
        # Two leads given the same generated customer code (seed 001: "check for collisions").
        twins = self.pick(list(self.lead.index[200:400]), 2, "lead")
        self.lead.loc[twins[1], "customerCode"] = self.lead.loc[twins[0], "customerCode"]
        reference.expect(GX["code"], *[(self.lead.loc[row, "id"],) for row in twins])
        # The duplicates rule keeps the first by key and counts the other as surplus.
        reference.expect("customer_code_unique", (max(self.lead.loc[row, "id"] for row in twins),))
        # Leads of a company that no longer exists.
        for _ in range(2):
            orphan = self.next_lead(first, tenantId="tn_gone")
            reference.expect("lead_orphans", (orphan,))

    def inject_messages(self, reference: Reference) -> None:
        rows = self.pick(list(self.message.index[: len(self.message) - 1]), 6, "message")
        for n, row in enumerate(rows[:3]):
            self.message.loc[row, "conversationId"] = f"cv_deleted_{n}"
            reference.expect("message_orphans", (int(self.message.loc[row, "id"]),))
        for row in rows[3:]:
            tenant = self.message.loc[row, "tenantId"]
            self.message.loc[row, "tenantId"] = next(t for t in self.tenant_ids if t != tenant)
            reference.expect("message_cross_tenant", (int(self.message.loc[row, "id"]),))
        # A message longer than WhatsApp accepts.
        long = self.pick(list(self.message.index[: len(self.message) - 1]), 1, "message")[0]
        self.message.loc[long, "body"] = "x" * 2000
        reference.expect(GX["body"], (int(self.message.loc[long, "id"]),))
        linked = self.conversation.index[self.conversation["leadId"].notna()]
        row = self.pick(list(linked), 1, "conversation")[0]
        self.conversation.loc[row, "leadId"] = "ld_deleted"
        reference.expect("conversation_lead_orphans", (self.conversation.loc[row, "id"],))

    def inject_operations(self, reference: Reference) -> None:
        for row in self.pick(list(self.access.index), 2, "access"):
            tenant = self.access.loc[row, "actorTenantId"]
            self.access.loc[row, "actorTenantId"] = next(
                t for t in self.tenant_ids if t != tenant)
            reference.expect("access_log_cross_tenant", (int(self.access.loc[row, "id"]),))
        # The last 24 hours: deliveries fell to 85% (critical), opt-outs rose to ~12% (warning).
        recent = self.metrics["metric_hour"] >= pd.Timestamp(self.now) - pd.Timedelta(hours=24)
        self.metrics.loc[recent, "delivered_count"] = 85
        self.metrics.loc[recent, "failed_count"] = 15
        self.metrics.loc[recent, "opt_out_count"] = 10
        # An old hour counting more deliveries than sends.
        old = self.metrics.index[self.metrics["metric_hour"] < pd.Timestamp(self.now)
                                 - pd.Timedelta(hours=48)][5]
        self.metrics.loc[old, "delivered_count"] = self.metrics.loc[old, "sent_count"] + 20
        reference.expect(GX["delivered"], (int(self.metrics.loc[old, "id"]),))
        reference.expect("sms_delivery_rate", ("all rows",))
        reference.expect("sms_opt_out_rate", ("all rows",))
        # audits/sms-alerts.yml measures the last complete hour, one of those 24.
        reference.expect("delivery_rate_critical", ("all rows",))
        reference.expect("opt_out_rate_warning", ("all rows",))
        reference.values.update({"sms_delivery_rate": 0.85, "sms_opt_out_rate": 10 / 85})
        # A job that stopped three hours ago, and one that never ran.
        beats = self.beats
        stopped = (beats["job"] == "quote-reminders") & (
            beats["beatAt"] > pd.Timestamp(self.now) - pd.Timedelta(hours=3))
        self.beats = beats[~stopped & (beats["job"] != "invoice-sync")].reset_index(drop=True)
        self.stopped_jobs = {"quote-reminders", "invoice-sync"}
        reference.expect("job_heartbeats", ("quote-reminders",), ("invoice-sync",))


    # -- the next night -----------------------------------------------------------

    def advance(self, previous: Reference, now: datetime) -> Reference:
        """Continue from `previous` (this builder is a copy of its state) to `now`."""
        before = self.now
        self.now, self.aware_now = now.replace(tzinfo=None), now
        days = (self.now - before) / DAY
        reference = Reference(now=now, tables={},
                              expected={check: set(keys)
                                        for check, keys in previous.expected.items()},
                              values=dict(previous.values),
                              unparseable_quote=previous.unparseable_quote)
        if self.injected:
            # A sentAt set days ahead stays ahead: the clock must not quietly repair it.
            ahead = [i for i, value in self.quote["sentAt"].items()
                     if isinstance(value, pd.Timestamp) and value > pd.Timestamp(before)]
            for i in ahead:
                self.quote.loc[i, "sentAt"] = self.quote.loc[i, "sentAt"] + (self.now - before)
            self.repair(reference)
        new = self.add_rows(before, days)
        if self.injected:
            self.inject_new_rows(reference, new)
        self.add_webhooks(new["lead"], new["conversation"])
        # The request log and the application log roll over: the last days before `now`,
        # with the incident (if any) in its last hour again.
        for check in traffic.CHECKS:
            reference.expected.pop(check, None)
        self.traffic(reference)
        used = self.message[self.message["direction"] == "OUTBOUND"].groupby("tenantId").size()
        self.tenant["whatsappQuotaUsed"] = (
            self.tenant["id"].map(used).fillna(0).astype(int)
            + self.tenant["id"].map(self.quota_offset).fillna(0).astype(int))
        reference.tables = self.frames()
        reference._builder = self
        return reference

    def repair(self, reference: Reference) -> None:
        """Put right a few violations whose correct value the data itself tells."""
        candidates = sorted((check, key) for check in REPAIRABLE
                            for key in reference.expected.get(check, ())
                            if key != (reference.unparseable_quote,))
        count = min(REPAIRS_PER_NIGHT, len(candidates))
        for n in sorted(self.rng.choice(len(candidates), count, replace=False)):
            check, key = candidates[n]
            if check.startswith("quote_") or check == "whatsapp_urls_well_formed":
                quote = key[0]
                row = self.quote.loc[self.quote_index[quote]]
                bursts = self.bursts[quote]
                if check == "quote_email_counter":  # one per idempotency key again
                    self.set_quote(quote, "emailSentCount",
                                   sum(b["channel"] == "EMAIL" for b in bursts))
                elif check == "quote_sent_at_valid":
                    self.set_quote(quote, "sentAt", bursts[-1]["first"])
                elif check == "quote_agent_cross_tenant":
                    self.set_quote(quote, "agentId", f"us_{int(row['tenantId'][3:]):05d}_1")
                else:
                    self.set_quote(quote, "whatsappUrl",
                                   f"https://wa.me/{row['customerPhone'][1:]}")
                    reference.resolve(GX["url"], key)
            elif check == "message_cross_tenant":
                row = key[0] - 1  # ids are 1-based row numbers
                conversation = self.conversation.loc[
                    self.conversation["id"] == self.message.loc[row, "conversationId"]]
                self.message.loc[row, "tenantId"] = conversation["tenantId"].iloc[0]
            elif check == "access_log_cross_tenant":
                row = key[0] - 1
                self.access.loc[row, "actorTenantId"] = self.access.loc[row, "resourceTenantId"]
            else:  # job_heartbeats: the job runs (again)
                self.stopped_jobs.discard(key[0])
            reference.resolve(check, key)

    def add_rows(self, before: datetime, days: float) -> dict:
        """The rows of the `days` since `before`, appended; returns what is new."""
        per_day = lambda total, spread: max(1, round(total / spread * days))
        quotes, sends, bursts = self.make_quotes(len(self.quote), per_day(self.n_quotes, 27),
                                                 3, 3 + days, len(self.send))
        self.quote = pd.concat([self.quote, quotes], ignore_index=True)
        self.quote_index.update((quote, i) for i, quote in enumerate(self.quote["id"]))
        self.send = pd.concat([self.send, pd.DataFrame(sends, columns=SEND_COLUMNS)],
                              ignore_index=True)
        self.bursts.update(bursts)
        leads = self.make_leads(self.lead_serial, per_day(self.n_leads, 29), 0.001, days)
        self.lead_serial += len(leads)
        first_lead = len(self.lead)
        self.lead = pd.concat([self.lead, leads], ignore_index=True)
        conversations, messages = self.make_conversations(
            leads, len(self.conversation), len(self.message), 0.001, days)
        first_message = len(self.message)
        self.conversation = pd.concat([self.conversation, conversations], ignore_index=True)
        self.message = pd.concat([self.message, messages], ignore_index=True)
        first_access = len(self.access)
        self.access = pd.concat([self.access, self.make_access(
            first_access, per_day(self.n_access, 30), 0.001, days)], ignore_index=True)
        top, last = pd.Timestamp(self.now).floor("h"), pd.Timestamp(before).floor("h")
        hours = [top - pd.Timedelta(hours=k)
                 for k in range(int((top - last) / pd.Timedelta(hours=1)))]
        metrics = self.make_metrics(hours, len(self.metrics))
        if self.injected:  # the delivery incident goes on
            metrics = metrics.assign(delivered_count=85, failed_count=15, opt_out_count=10)
        self.metrics = pd.concat([self.metrics, metrics], ignore_index=True)
        steps = int((pd.Timestamp(self.now) - pd.Timestamp(before)) / pd.Timedelta(minutes=5))
        beats = [(job, pd.Timestamp(self.now) - pd.Timedelta(minutes=5 * k))
                 for job in JOBS if job not in self.stopped_jobs for k in range(steps)]
        self.beats = pd.concat([self.beats, pd.DataFrame(beats, columns=["job", "beatAt"])],
                               ignore_index=True)
        return {"quote": list(quotes["id"]), "lead": first_lead, "conversation": conversations,
                "message": list(range(first_message, len(self.message) - 1)),  # not the newest
                "access": list(range(first_access, len(self.access)))}

    def inject_new_rows(self, reference: Reference, new: dict) -> None:
        """A few new violations, in the new rows."""
        whatsapp = [q for q in new["quote"]
                    if any(b["channel"] == "WHATSAPP" for b in self.bursts.get(q, ()))]
        for quote in self.pick(whatsapp or self.quotes_with(
                lambda bursts: any(b["channel"] == "WHATSAPP" for b in bursts)), 1):
            self.double_click_whatsapp(quote, reference)
        original = self.lead.loc[self.pick(list(self.lead.index[new["lead"]:]), 1, "lead")[0]]
        local, domain = original["email"].split("@")
        copy_ = self.next_lead(original, email=f"{local}@{domain.upper()}",
                               createdAt=original["createdAt"] + MINUTE)
        reference.expect("lead_duplicate_email", (copy_,))
        row = self.pick(new["message"], 1, "message")[0]
        self.message.loc[row, "conversationId"] = f"cv_deleted_{row}"
        reference.expect("message_orphans", (int(self.message.loc[row, "id"]),))
        row = self.pick(new["access"], 1, "access")[0]
        tenant = self.access.loc[row, "actorTenantId"]
        self.access.loc[row, "actorTenantId"] = next(t for t in self.tenant_ids if t != tenant)
        reference.expect("access_log_cross_tenant", (int(self.access.loc[row, "id"]),))

    def add_webhooks(self, first_lead: int, conversations: pd.DataFrame) -> None:
        leads = self.lead.iloc[first_lead:]
        events = pd.concat([
            pd.DataFrame({"tenantId": leads["tenantId"], "eventType": "lead.created",
                          "receivedAt": leads["createdAt"]}),
            pd.DataFrame({"tenantId": conversations["tenantId"],
                          "eventType": "conversation.created",
                          "receivedAt": conversations["createdAt"]})], ignore_index=True)
        first = len(self.webhook) + 1
        events.insert(0, "id", np.arange(first, first + len(events)))
        self.webhook = pd.concat([self.webhook, events], ignore_index=True)

def _to_milliseconds(frame: pd.DataFrame) -> pd.DataFrame:
    """Times at millisecond precision, which every database keeps exactly (DATETIME(3))."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_dtype(values.dtype):
            frame[column] = values.dt.floor("ms")
        elif values.dtype == object and values.map(lambda v: isinstance(v, pd.Timestamp)).any():
            frame[column] = values.map(lambda v: v.floor("ms") if isinstance(v, pd.Timestamp)
                                       else v)
    return frame


# ---------------------------------------------------------------------------
# Writing.


def write(reference: Reference, url: str, *, unparseable_dates: bool = False) -> None:
    """Create the reference tables at `url` (dropping old ones) and load the data."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            schema.metadata.drop_all(connection)
            # Tables first, secondary indexes after the data: a bulk load into indexed
            # tables is several times slower.
            for table in schema.TABLES:
                connection.execute(sa.schema.CreateTable(table))
            for table in schema.TABLES:
                _load(connection, table, reference.tables[table.name])
            for table in schema.TABLES:
                for index in table.indexes:
                    connection.execute(sa.schema.CreateIndex(index))
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def write_app_log(reference: Reference, path: str | Path) -> Path:
    """Write the application log of the reference data (seeds 002 and 003) to `path`.
    `generate` writes it as app.log beside an SQLite database."""
    path = Path(path)
    path.write_text("".join(line + "\n" for line in reference.app_log), encoding="utf-8")
    return path


# Seed 001's isolation probe, in the seed audit's words: the datasets it checks, their tables.
RLS_DATASETS = {"users": "User", "quotes": "AgentQuote", "leads": "Lead",
                "conversations": "Conversation", "messages": "Message"}
RLS_TENANTS = 3  # the probe's `tenants:` in audits/seed-001-workflow.yml
LEAKY_TABLE, OPEN_TABLE = "Conversation", "Message"


def enable_row_level_security(reference: Reference, url: str, *,
                              role: str = "integrity_reference_app", leaky: bool = True) -> str:
    """Give the tenant tables at `url` (PostgreSQL, after `write`) row level security as an
    application would: a role `role` that reads them, and on each a policy showing the rows
    of the tenant in `app.tenant_id`. With `leaky`, two mistakes, recorded as the violations
    of seed 001's `tenant_isolation`: Conversation's policy also shows every conversation
    without a lead (a "shared inbox" that is everyone's), and Message has no row level
    security at all. The role is the cluster's: it is created only when missing, and this
    database's grants go with the database. Returns the role's name."""
    engine = sa.create_engine(url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise ValueError("row level security is PostgreSQL's")
    quote = engine.dialect.identifier_preparer.quote
    own = """"tenantId" = current_setting('app.tenant_id', true)"""
    try:
        with engine.begin() as connection:
            run = connection.exec_driver_sql
            exists = connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"),
                                        {"role": role}).first()
            if exists is None:
                try:
                    with connection.begin_nested():
                        run(f"CREATE ROLE {quote(role)} NOLOGIN")
                except sa.exc.IntegrityError:
                    pass  # created meanwhile by another run on this cluster
            for table in schema.TENANT_TABLES:
                run(f"GRANT SELECT ON {quote(table)} TO {quote(role)}")
                if leaky and table == OPEN_TABLE:
                    continue
                run(f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY")
                shared = ' OR "leadId" IS NULL' if leaky and table == LEAKY_TABLE else ""
                run(f"CREATE POLICY tenant_isolation ON {quote(table)} USING ({own}{shared})")
    finally:
        engine.dispose()
    if leaky:
        for dataset, table in RLS_DATASETS.items():
            frame = reference.tables[table]
            tenants = sorted(frame["tenantId"].dropna().unique())[:RLS_TENANTS]
            visible = frame if table == OPEN_TABLE else \
                frame[frame["leadId"].isna()] if table == LEAKY_TABLE else None
            if visible is None:
                continue
            if table == OPEN_TABLE:
                reference.expect("tenant_isolation", (dataset, "rls off", None))
            for tenant in tenants:
                others = int((visible["tenantId"] != tenant).sum())
                if others:
                    reference.expect("tenant_isolation", (dataset, "leak", tenant))
                    reference.values[f"tenant_isolation:{dataset}:{tenant}"] = others
    return role


def _load(connection, table: sa.Table, frame: pd.DataFrame) -> None:
    frame = frame[[column.name for column in table.columns]]
    if connection.dialect.name == "postgresql":
        _copy(connection, table, frame)
        return
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for record in records:
        for name, value in record.items():
            if isinstance(value, pd.Timestamp):
                record[name] = value.to_pydatetime()
    for start in range(0, len(records), 5000):
        connection.execute(table.insert(), records[start:start + 5000])


def _copy(connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """COPY … FROM STDIN as CSV written by Arrow (quoted strings, unquoted empty = NULL),
    in chunks: a million rows a second."""
    import pyarrow as pa
    import pyarrow.csv as csv

    raw = connection.connection.driver_connection
    columns = ", ".join(f'"{column}"' for column in frame.columns)
    options = csv.WriteOptions(include_header=False)
    with raw.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN WITH (FORMAT csv)') as copy:
            for start in range(0, len(frame), 500_000):
                sink = io.BytesIO()
                csv.write_csv(pa.Table.from_pandas(frame.iloc[start:start + 500_000],
                                                   preserve_index=False), sink, options)
                copy.write(sink.getvalue())


def generate(url: str, *, scale: float = 0.02, seed: int = 7, now: datetime | None = None,
             inject: bool = True) -> Reference:
    """Build the reference data and write it to `url`. SQLite also gets garbage timestamps."""
    unparseable = inject and sa.engine.make_url(url).get_backend_name() == "sqlite"
    reference = build(scale, seed, now, inject, unparseable_dates=unparseable)
    _store(reference, url)
    return reference


def generate_next(url: str, previous: Reference, *, now: datetime | None = None) -> Reference:
    """Write the night after `previous` (see `next_night`) to `url`, replacing its tables.
    `url` is the same kind of database `previous` was generated for."""
    reference = next_night(previous, now)
    _store(reference, url)
    return reference


def _store(reference: Reference, url: str) -> None:
    write(reference, url)
    database = sa.engine.make_url(url).database
    if sa.engine.make_url(url).get_backend_name() == "sqlite" and database not in (
            None, "", ":memory:"):
        write_app_log(reference, Path(database).parent / "app.log")
    if reference.unparseable_quote is not None:
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            # The DateTime type would refuse this text, so bypass it on purpose.
            connection.execute(sa.text('UPDATE "AgentQuote" SET "sentAt" = :garbage '
                                       'WHERE id = :id'),
                               {"garbage": "not-a-date", "id": reference.unparseable_quote})
        engine.dispose()
