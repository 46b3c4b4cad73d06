"""What a user would write instead: pandas.read_sql of the tables, then pandas code.

    python benchmarks/naive_pandas.py URL NOW

The reference audit's checks (without the GX suites and the E.164 check, as
in the other variants) written the obvious way: read every table the checks
touch with `pandas.read_sql("SELECT * ...")`, then filter, merge and group.
Prints check id -> violation count as JSON, like benchmarks/limit.py.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from data import TABLES  # benchmarks/ is the script's folder

FIVE_MINUTES, THIRTY_SECONDS = pd.Timedelta(minutes=5), pd.Timedelta(seconds=30)


def bursts_opened(frame: pd.DataFrame, by: list[str], time: str, window) -> pd.Series:
    ordered = frame.sort_values([*by, time])
    gap = ordered.groupby(by)[time].diff()
    return (gap.isna() | (gap > window)).reindex(frame.index)


def audit(url: str, now: datetime) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        t = {name: pd.read_sql(sa.text(f'SELECT * FROM "{name}"'), connection) for name in TABLES}
    engine.dispose()
    now = pd.Timestamp(now).tz_localize(None) if pd.Timestamp(now).tzinfo else pd.Timestamp(now)
    quotes, sends, leads = t["AgentQuote"].set_index("id"), t["QuoteSend"], t["Lead"]
    messages, conversations = t["Message"], t["Conversation"]
    messages["sentAt"] = pd.to_datetime(messages["sentAt"], utc=True).dt.tz_localize(None)
    found: dict[str, int] = {}

    email = sends[sends["channel"] == "EMAIL"]
    keyed = email[email["idempotencyKey"].notna()].groupby("quoteId")["idempotencyKey"].nunique()
    loose = email[email["idempotencyKey"].isna()]
    opened = bursts_opened(loose, ["quoteId"], "sentAt", FIVE_MINUTES)
    unique = keyed.add(opened.groupby(loose["quoteId"]).sum(), fill_value=0)
    unique = unique.reindex(quotes.index, fill_value=0)
    found["quote_email_counter"] = int((quotes["emailSentCount"].fillna(0) != unique).sum())

    sms = sends[sends["channel"] == "WHATSAPP"]
    unique = bursts_opened(sms, ["quoteId"], "sentAt", FIVE_MINUTES).groupby(
        sms["quoteId"]).sum().reindex(quotes.index, fill_value=0)
    counter = quotes["smsSentCount"].fillna(0)
    found["quote_sms_counter"] = int(((counter > unique) | ((counter == 0) & (unique > 0))).sum())

    ordered = sends.sort_values(["quoteId", "sentAt"])
    gap = ordered.groupby("quoteId")["sentAt"].diff()
    ordered["burst"] = (gap.isna() | (gap > FIVE_MINUTES)).cumsum()
    spans = ordered.groupby("burst").agg(quoteId=("quoteId", "first"), first=("sentAt", "min"),
                                         last=("sentAt", "max"), size=("sentAt", "size"))
    spans = spans[spans["size"] > 1].merge(quotes[["sentAt"]], left_on="quoteId",
                                           right_index=True)
    second = pd.Timedelta(seconds=1)
    moved = spans[(spans["sentAt"] > spans["first"] + second)
                  & (spans["sentAt"] <= spans["last"] + second)]
    found["quote_sent_at_preserved"] = moved["quoteId"].nunique()

    sent = quotes[quotes["status"] == "SENT"]
    found["quote_sent_at_valid"] = int((sent["sentAt"].isna()
                                        | (sent["sentAt"] > now + pd.Timedelta(minutes=1))
                                        | (sent["sentAt"] < sent["createdAt"])).sum())

    clicks = sends[(sends["status"] == "SENT") & sends["recipient"].notna()]
    clicks = clicks.sort_values(["quoteId", "channel", "recipient", "sentAt", "id"])
    gap = clicks.groupby(["quoteId", "channel", "recipient"])["sentAt"].diff()
    found["quote_send_double_clicks"] = int((gap <= THIRTY_SECONDS).sum())

    url = quotes["whatsappUrl"].dropna()
    found["whatsapp_urls_well_formed"] = int((~url.str.startswith("https://wa.me/")
                                              | url.str.contains(" ")
                                              | url.str.startswith("https://wa.me/+")).sum())

    shares = sends[(sends["status"] == "SENT") & (sends["sentAt"] >= now - pd.Timedelta(days=7))
                   & (sends["sentAt"] <= now)]["channel"].value_counts(normalize=True)
    found["quote_channel_distribution"] = sum(
        1 for channel in ("EMAIL", "WHATSAPP", "LINK") if shares.get(channel, 0) < 0.05)

    normalised = leads.assign(e=leads["email"].str.strip(" \t\n\r\f\v").str.lower()
                              .replace("", None))
    normalised = normalised[normalised["tenantId"].notna() & normalised["e"].notna()]
    normalised = normalised.sort_values(["createdAt", "id"])
    found["lead_duplicate_email"] = int(normalised.duplicated(["tenantId", "e"]).sum())

    found["message_orphans"] = int((~messages["conversationId"].isin(conversations["id"])).sum())
    found["lead_orphans"] = int((~leads["tenantId"].isin(t["Tenant"]["id"])).sum())
    linked = conversations["leadId"].notna()
    found["conversation_lead_orphans"] = int(
        (~conversations.loc[linked, "leadId"].isin(leads["id"])).sum())

    pairs = messages.merge(conversations[["id", "tenantId"]], left_on="conversationId",
                           right_on="id", suffixes=("", "_conversation"))
    found["message_cross_tenant"] = int((pairs["tenantId"] != pairs["tenantId_conversation"])
                                        .sum())
    pairs = quotes.reset_index().merge(t["User"][["id", "tenantId"]], left_on="agentId",
                                       right_on="id", suffixes=("", "_agent"))
    found["quote_agent_cross_tenant"] = int((pairs["tenantId"] != pairs["tenantId_agent"]).sum())
    log = t["AccessLog"]
    found["access_log_cross_tenant"] = int((log["actorTenantId"] != log["resourceTenantId"])
                                           .sum())

    hooks = t["WebhookEvent"]
    hooks = hooks[hooks["eventType"] == "lead.created"]
    left = leads.groupby([leads["tenantId"], leads["createdAt"].dt.date]).size()
    right = hooks.groupby([hooks["tenantId"], hooks["receivedAt"].dt.date]).size()
    both = pd.concat([left, right], axis=1).fillna(0)
    found["leads_match_webhooks"] = int((both[0] != both[1]).sum())

    outbound = messages[messages["direction"] == "OUTBOUND"].groupby("tenantId").size()
    quota = t["Tenant"].set_index("id")["whatsappQuotaUsed"]
    both = pd.concat([quota, outbound], axis=1).fillna(0)
    found["whatsapp_quota_matches_messages"] = int((both.iloc[:, 0] != both.iloc[:, 1]).sum())

    metrics = t["sms_metrics"]
    day = metrics[(metrics["metric_hour"] >= now - pd.Timedelta(hours=24))
                  & (metrics["metric_hour"] <= now)].sum(numeric_only=True)
    found["sms_delivery_rate"] = int(day["delivered_count"] / day["sent_count"] < 0.95)
    found["sms_template_fallback_rate"] = int(
        day["template_fallback_count"] / day["generated_count"] > 0.5)
    found["sms_opt_out_rate"] = int(day["opt_out_count"] / day["delivered_count"] > 0.10)
    found["sms_daily_limit_rate"] = int(day["daily_limit_hit_count"] / day["scheduled_count"]
                                        > 0.20)

    newest = messages["sentAt"].max()
    found["messages_arriving"] = int(now - newest > pd.Timedelta(hours=1))
    beats = t["JobHeartbeat"].groupby("job")["beatAt"].max()
    jobs = ["sms-scheduler", "quote-reminders", "webhook-retry", "invoice-sync"]
    found["job_heartbeats"] = sum(1 for job in jobs if job not in beats
                                  or now - beats[job] > pd.Timedelta(minutes=10))
    return found


if __name__ == "__main__":
    moment = datetime.fromisoformat(sys.argv[2].replace("Z", "+00:00")).replace(tzinfo=None)
    print(json.dumps({"violations": audit(sys.argv[1], moment)}))
