"""What a Great Expectations user would write instead: GX 1.x on the same database.

    python benchmarks/gx_equivalent.py URL NOW

The reference audit's checks (without the GX suites and the E.164 check, as
in the other variants) as a GX user expresses them: column and column-pair
expectations on table assets where GX has the vocabulary, and query assets —
the join or window a cross-table rule needs, written by hand — checked with
`expect_table_row_count_to_equal(0)` or a value expectation. GX runs it all
through its SQL execution engine (pushdown). Prints check id -> violation
count as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timedelta

os.environ["GX_ANALYTICS_ENABLED"] = "false"

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from limit import QUERIES  # noqa: E402 — the same hand-written SQL, as query assets

RATIOS = {"sms_delivery_rate": ("delivered_count", "sent_count", 0.95, None),
          "sms_template_fallback_rate": ("template_fallback_count", "generated_count", None, 0.5),
          "sms_opt_out_rate": ("opt_out_count", "delivered_count", None, 0.10),
          "sms_daily_limit_rate": ("daily_limit_hit_count", "scheduled_count", None, 0.20)}


def audit(url: str, now: datetime) -> dict[str, int]:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_postgres("app", connection_string=url)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    found: dict[str, int] = {}

    def validate(asset, expectations, label):
        suite = gx.ExpectationSuite(name=label, expectations=expectations)
        batch = asset.add_batch_definition_whole_table(label).get_batch()
        return batch.validate(suite, result_format="SUMMARY").results

    def table(name):
        return source.add_table_asset(name.strip('"').lower() + "_t", table_name=name)

    def query(label, sql):
        sql = " ".join(sql.split())
        if not sql.upper().startswith("SELECT "):  # GX accepts only "SELECT …" text
            sql = f"SELECT * FROM ({sql}) AS q"
        return source.add_query_asset(label, query=sql)

    # Column-level rules on tables, where GX has the words for them.
    found["access_log_cross_tenant"] = validate(table('"AccessLog"'), [
        gxe.ExpectColumnPairValuesToBeEqual(column_A="actorTenantId",
                                            column_B="resourceTenantId")],
        "access")[0].result["unexpected_count"]
    found["whatsapp_urls_well_formed"] = validate(table('"AgentQuote"'), [
        gxe.ExpectColumnValuesToMatchRegex(column="whatsappUrl",
                                           regex=r"^https://wa\.me/[^+ ][^ ]*$")],
        "urls")[0].result["unexpected_count"]
    found["lead_duplicate_email"] = validate(query("emails", """
        SELECT id, "tenantId", nullif(lower(btrim(email, E' \\t\\n\\r\\f\\x0B')), '') AS email
        FROM "Lead" WHERE "tenantId" IS NOT NULL"""), [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["tenantId", "email"],
                                            ignore_row_if="any_value_is_missing")],
        "emails")[0].result["unexpected_count"]
    # Orphans as joins whose parent side must not be null.
    for check, sql in (
            ("message_orphans", 'SELECT m.id, c.id AS parent FROM "Message" m LEFT JOIN '
                                '"Conversation" c ON c.id = m."conversationId"'),
            ("lead_orphans", 'SELECT l.id, t.id AS parent FROM "Lead" l LEFT JOIN "Tenant" t '
                             'ON t.id = l."tenantId"'),
            ("conversation_lead_orphans", 'SELECT c.id, l.id AS parent FROM "Conversation" c '
                                          'LEFT JOIN "Lead" l ON l.id = c."leadId" '
                                          'WHERE c."leadId" IS NOT NULL')):
        found[check] = validate(query(check, sql), [
            gxe.ExpectColumnValuesToNotBeNull(column="parent")], check)[0].result[
            "unexpected_count"]
    # Cross-tenant as joined pairs whose tenants must be equal.
    for check, sql in (
            ("message_cross_tenant", 'SELECT m.id, m."tenantId" AS a, c."tenantId" AS b FROM '
                                     '"Message" m JOIN "Conversation" c ON c.id = m."conversationId"'),
            ("quote_agent_cross_tenant", 'SELECT q.id, q."tenantId" AS a, u."tenantId" AS b FROM '
                                         '"AgentQuote" q JOIN "User" u ON u.id = q."agentId"')):
        found[check] = validate(query(check, sql), [
            gxe.ExpectColumnPairValuesToBeEqual(column_A="a", column_B="b")], check)[0].result[
            "unexpected_count"]
    # Rules GX has no words for: the violations as a query, which must return no rows.
    for check in ("quote_email_counter", "quote_sms_counter", "quote_sent_at_preserved",
                  "quote_send_double_clicks", "leads_match_webhooks",
                  "whatsapp_quota_matches_messages"):
        result = validate(query(check, QUERIES[check]), [
            gxe.ExpectTableRowCountToEqual(value=0)], check)[0]
        found[check] = int(result.result["observed_value"])
    found["quote_sent_at_valid"] = int(validate(query("valid", QUERIES["quote_sent_at_valid"]
                                                      .replace("%(now)s", f"'{stamp}'")), [
        gxe.ExpectTableRowCountToEqual(value=0)], "valid")[0].result["observed_value"])
    # Metrics as one-row queries with bounds.
    since = (now - timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")
    for check, (numerator, denominator, low, high) in RATIOS.items():
        result = validate(query(check, f"""
            SELECT sum({numerator})::float / nullif(sum({denominator}), 0) AS value
            FROM sms_metrics WHERE metric_hour >= '{since}' AND metric_hour <= '{stamp}'"""), [
            gxe.ExpectColumnValuesToBeBetween(column="value", min_value=low, max_value=high,
                                              strict_min=False)], check)[0]
        found[check] = int(result.result["unexpected_count"] > 0)
    week = (now - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")
    result = validate(query("channels", f"""
        SELECT c.channel, coalesce(s.share, 0) AS share
        FROM (VALUES ('EMAIL'), ('WHATSAPP'), ('LINK')) AS c(channel)
        LEFT JOIN (SELECT channel, count(*)::float / sum(count(*)) OVER () AS share
                   FROM "QuoteSend" WHERE status = 'SENT' AND "sentAt" >= '{week}'
                     AND "sentAt" <= '{stamp}' GROUP BY channel) s ON s.channel = c.channel"""), [
        gxe.ExpectColumnValuesToBeBetween(column="share", min_value=0.05)], "channels")[0]
    found["quote_channel_distribution"] = result.result["unexpected_count"]
    # Freshness: the newest time must be recent.
    result = validate(table('"Message"'), [gxe.ExpectColumnMaxToBeBetween(
        column="sentAt", min_value=(now - timedelta(hours=1)).isoformat() + "+00:00")],
        "fresh")[0]
    found["messages_arriving"] = int(not result.success)
    result = validate(query("beats", """
        SELECT j.job, max(b."beatAt") AS newest
        FROM (VALUES ('sms-scheduler'), ('quote-reminders'), ('webhook-retry'),
                     ('invoice-sync')) AS j(job)
        LEFT JOIN "JobHeartbeat" b ON b.job = j.job GROUP BY j.job"""), [
        gxe.ExpectColumnValuesToBeBetween(column="newest",
                                          min_value=(now - timedelta(minutes=10)).isoformat()),
        gxe.ExpectColumnValuesToNotBeNull(column="newest")], "beats")
    found["job_heartbeats"] = sum(r.result["unexpected_count"] for r in result)
    return {check: int(value) for check, value in found.items()}


def count_statements() -> dict[str, float]:
    """Statements GX sends and the time they take, for the benchmark's reading."""
    import time

    import sqlalchemy as sa

    tally = {"statements": 0, "database_seconds": 0.0}

    @sa.event.listens_for(sa.engine.Engine, "before_cursor_execute")
    def started(conn, cursor, statement, parameters, context, executemany):
        conn.info["integrity_bench_began"] = time.perf_counter()

    @sa.event.listens_for(sa.engine.Engine, "after_cursor_execute")
    def finished(conn, cursor, statement, parameters, context, executemany):
        tally["statements"] += 1
        tally["database_seconds"] += time.perf_counter() - conn.info["integrity_bench_began"]

    return tally


if __name__ == "__main__":
    moment = datetime.fromisoformat(sys.argv[2].replace("Z", "+00:00")).replace(tzinfo=None)
    url = sys.argv[1]
    tally = count_statements()
    print(json.dumps({"violations": audit(url, moment), **tally}))
