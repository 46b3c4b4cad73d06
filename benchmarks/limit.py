"""The limit: the reference audit's checks as hand-written PostgreSQL, one query per check.

    python benchmarks/limit.py URL NOW

What a careful engineer would write by hand for each check of
audits/reference.yml (without the GX suites), run over psycopg in one
read-only session: the floor any tool can approach. Each query returns the
violating keys; thresholds are judged in Python. Prints one JSON object:
check id -> violation count, so the benchmark can require the same answers
from integrity.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta

import psycopg

BURST = ("CASE WHEN lag({t}) OVER w IS NULL OR {t} - lag({t}) OVER w > interval '{window}' "
         "THEN 1 ELSE 0 END")

QUERIES: dict[str, str] = {
    "quote_email_counter": f"""
        WITH m AS (
          SELECT "quoteId" AS q, "idempotencyKey" AS k,
                 CASE WHEN "idempotencyKey" IS NULL THEN {BURST.format(t='"sentAt"', window='5 minutes')} ELSE 0 END AS opens
          FROM "QuoteSend" WHERE channel = 'EMAIL'
          WINDOW w AS (PARTITION BY "quoteId", "idempotencyKey" IS NULL ORDER BY "sentAt")),
        u AS (SELECT q, count(DISTINCT k) + sum(opens) AS n FROM m GROUP BY q)
        SELECT a.id FROM "AgentQuote" a LEFT JOIN u ON u.q = a.id
        WHERE coalesce(a."emailSentCount", 0) <> coalesce(u.n, 0)""",
    "quote_sms_counter": f"""
        WITH m AS (
          SELECT "quoteId" AS q, {BURST.format(t='"sentAt"', window='5 minutes')} AS opens
          FROM "QuoteSend" WHERE channel = 'WHATSAPP'
          WINDOW w AS (PARTITION BY "quoteId" ORDER BY "sentAt")),
        u AS (SELECT q, sum(opens) AS n FROM m GROUP BY q)
        SELECT a.id FROM "AgentQuote" a LEFT JOIN u ON u.q = a.id
        WHERE coalesce(a."smsSentCount", 0) > coalesce(u.n, 0)
           OR (coalesce(a."smsSentCount", 0) = 0 AND coalesce(u.n, 0) > 0)""",
    "quote_sent_at_preserved": f"""
        WITH m AS (
          SELECT "quoteId" AS q, "sentAt" AS t, {BURST.format(t='"sentAt"', window='5 minutes')} AS opens
          FROM "QuoteSend" WINDOW w AS (PARTITION BY "quoteId" ORDER BY "sentAt")),
        b AS (SELECT q, t, sum(opens) OVER (PARTITION BY q ORDER BY t ROWS UNBOUNDED PRECEDING) AS burst
              FROM m),
        s AS (SELECT q, min(t) AS first, max(t) AS last FROM b GROUP BY q, burst HAVING count(*) > 1)
        SELECT DISTINCT a.id FROM "AgentQuote" a JOIN s ON s.q = a.id
        WHERE a."sentAt" > s.first + interval '1 second' AND a."sentAt" <= s.last + interval '1 second'""",
    "quote_sent_at_valid": """
        SELECT id FROM "AgentQuote" WHERE status = 'SENT'
          AND ("sentAt" IS NULL OR "sentAt" > %(now)s::timestamp + interval '1 minute'
               OR "sentAt" < "createdAt")""",
    "quote_send_double_clicks": f"""
        SELECT id FROM (
          SELECT id, {BURST.format(t='"sentAt"', window='30 seconds')} AS opens
          FROM "QuoteSend" WHERE status = 'SENT' AND recipient IS NOT NULL
          WINDOW w AS (PARTITION BY "quoteId", channel, recipient ORDER BY "sentAt", id)) x
        WHERE opens = 0""",
    "whatsapp_urls_well_formed": """
        SELECT id FROM "AgentQuote" WHERE "whatsappUrl" IS NOT NULL
          AND ("whatsappUrl" NOT LIKE 'https://wa.me/%%' OR "whatsappUrl" LIKE '%% %%'
               OR "whatsappUrl" LIKE 'https://wa.me/+%%')""",
    "lead_duplicate_email": """
        SELECT id FROM (
          SELECT id, row_number() OVER (PARTITION BY "tenantId", e ORDER BY "createdAt", id) AS rank
          FROM (SELECT id, "tenantId", "createdAt",
                       nullif(lower(btrim(email, E' \\t\\n\\r\\f\\x0B')), '') AS e FROM "Lead") k
          WHERE "tenantId" IS NOT NULL AND e IS NOT NULL) r
        WHERE rank > 1""",
    "message_orphans": """
        SELECT id FROM "Message" m WHERE "conversationId" IS NULL
        UNION ALL
        SELECT id FROM "Message" m
        WHERE NOT EXISTS (SELECT 1 FROM "Conversation" c WHERE c.id = m."conversationId")
          AND "conversationId" IS NOT NULL""",
    "lead_orphans": """
        SELECT id FROM "Lead" l WHERE "tenantId" IS NULL
        UNION ALL
        SELECT id FROM "Lead" l
        WHERE NOT EXISTS (SELECT 1 FROM "Tenant" t WHERE t.id = l."tenantId")
          AND "tenantId" IS NOT NULL""",
    "conversation_lead_orphans": """
        SELECT id FROM "Conversation" c WHERE "leadId" IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM "Lead" l WHERE l.id = c."leadId")""",
    "message_cross_tenant": """
        SELECT m.id FROM "Message" m JOIN "Conversation" c ON c.id = m."conversationId"
        WHERE m."tenantId" <> c."tenantId" """,
    "quote_agent_cross_tenant": """
        SELECT a.id FROM "AgentQuote" a JOIN "User" u ON u.id = a."agentId"
        WHERE a."tenantId" <> u."tenantId" """,
    "access_log_cross_tenant": """
        SELECT id FROM "AccessLog" WHERE "actorTenantId" <> "resourceTenantId" """,
    "leads_match_webhooks": """
        SELECT t, d FROM (
          SELECT t, d, sum(l) AS l, sum(r) AS r FROM (
            SELECT "tenantId" AS t, date_trunc('day', "createdAt") AS d, 1 AS l, 0 AS r FROM "Lead"
            UNION ALL
            SELECT "tenantId", date_trunc('day', "receivedAt"), 0, 1 FROM "WebhookEvent"
            WHERE "eventType" = 'lead.created') x
          GROUP BY t, d) y
        WHERE l <> r""",
    "whatsapp_quota_matches_messages": """
        SELECT coalesce(t.id, m.t) FROM "Tenant" t
        FULL JOIN (SELECT "tenantId" AS t, count(*) AS n FROM "Message"
                   WHERE direction = 'OUTBOUND' GROUP BY 1) m ON m.t = t.id
        WHERE coalesce(t."whatsappQuotaUsed", 0) <> coalesce(m.n, 0)""",
}

METRICS = {  # id: (numerator, denominator, bound)
    "sms_delivery_rate": ("delivered_count", "sent_count", lambda v: v < 0.95),
    "sms_template_fallback_rate": ("template_fallback_count", "generated_count",
                                   lambda v: v > 0.50),
    "sms_opt_out_rate": ("opt_out_count", "delivered_count", lambda v: v > 0.10),
    "sms_daily_limit_rate": ("daily_limit_hit_count", "scheduled_count", lambda v: v > 0.20),
}


def audit(url: str, now: datetime, skip: set[str] = frozenset(),
          timings: dict[str, float] | None = None) -> dict[str, int]:
    import phonenumbers

    found: dict[str, int] = {}
    timings = {} if timings is None else timings
    naive_now = now.replace(tzinfo=None)
    with psycopg.connect(url, options="-c default_transaction_read_only=on -c TimeZone=UTC",
                         autocommit=False) as connection:
        cursor = connection.cursor()
        for check, query in QUERIES.items():
            began = time.perf_counter()
            cursor.execute(query, {"now": naive_now})
            found[check] = len(cursor.fetchall())
            timings[check] = time.perf_counter() - began
        began = time.perf_counter()
        if "lead_duplicate_phone" in skip:
            cursor.execute("SELECT 1 WHERE false")
        else:
            # E.164 needs libphonenumber: pull the column, normalise, group, as any tool must.
            cursor.execute('SELECT id, "tenantId", phone, "createdAt" FROM "Lead"')
        seen: dict[tuple, int] = {}
        surplus = 0
        for _id, tenant, phone, _created in sorted(cursor.fetchall(), key=lambda r: (r[3], r[0])):
            if tenant is None or not phone or not phone.strip():
                continue
            try:
                number = phonenumbers.parse(phone.strip(), "GB")
                key = (tenant, phonenumbers.format_number(number,
                                                          phonenumbers.PhoneNumberFormat.E164)
                       if phonenumbers.is_possible_number(number) else phone)
            except phonenumbers.NumberParseException:
                key = (tenant, "".join(c for c in phone if c.isdigit()))
            surplus += 1 if key in seen else 0
            seen[key] = 1
        if "lead_duplicate_phone" not in skip:
            found["lead_duplicate_phone"] = surplus
            timings["lead_duplicate_phone"] = time.perf_counter() - began
        since = naive_now - timedelta(hours=24)
        for check, (numerator, denominator, breached) in METRICS.items():
            cursor.execute(f"SELECT sum({numerator})::float / nullif(sum({denominator}), 0) "
                           f"FROM sms_metrics WHERE metric_hour >= %s AND metric_hour <= %s",
                           (since, naive_now))
            value = cursor.fetchone()[0]
            found[check] = int(value is not None and breached(value))
        cursor.execute("""SELECT channel, count(*)::float / sum(count(*)) OVER ()
                          FROM "QuoteSend" WHERE status = 'SENT' AND "sentAt" >= %s
                            AND "sentAt" <= %s GROUP BY channel""",
                       (naive_now - timedelta(days=7), naive_now))
        shares = dict(cursor.fetchall())
        found["quote_channel_distribution"] = sum(
            1 for channel in ("EMAIL", "WHATSAPP", "LINK") if shares.get(channel, 0) < 0.05)
        cursor.execute('SELECT max("sentAt") FROM "Message"')
        newest = cursor.fetchone()[0]
        found["messages_arriving"] = int(newest is None or now - newest > timedelta(hours=1))
        cursor.execute('SELECT job, max("beatAt") FROM "JobHeartbeat" GROUP BY job')
        beats = dict(cursor.fetchall())
        jobs = ["sms-scheduler", "quote-reminders", "webhook-retry", "invoice-sync"]
        found["job_heartbeats"] = sum(1 for job in jobs if job not in beats
                                      or naive_now - beats[job] > timedelta(minutes=10))
        connection.rollback()
    return found


if __name__ == "__main__":
    url, moment = sys.argv[1], datetime.fromisoformat(sys.argv[2].replace("Z", "+00:00"))
    skipped = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else set()
    spent: dict[str, float] = {}
    counts = audit(url.replace("postgresql+psycopg://", "postgresql://"), moment, skipped, spent)
    print(json.dumps({"violations": counts, "seconds": spent}))
