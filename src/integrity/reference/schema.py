"""The reference schema: a small multi-tenant SaaS as the seeds describe it.

Prisma-style names on purpose ("AgentQuote"."emailSentCount", a table called
"User"), a snake_case metrics table as in seed 004, text ids (cuid-like) and
integer ids, `timestamp` and `timestamptz` columns: the shapes a real audit
meets. Used by the demo, the tests and the benchmark.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects import mysql

metadata = MetaData()


def DateTime(timezone: bool = False):  # noqa: N802 — reads like the type it stands for
    """Millisecond timestamps everywhere: MariaDB's DATETIME would drop the fraction."""
    return _DateTime(timezone=timezone).with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")


Tenant = Table(
    "Tenant", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("whatsappQuotaUsed", Integer, nullable=False),
    Column("createdAt", DateTime(), nullable=False),
)

User = Table(
    "User", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenantId", String(40), nullable=False),
    Column("email", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("createdAt", DateTime(), nullable=False),
)

AgentQuote = Table(
    "AgentQuote", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenantId", String(40), nullable=False),
    Column("agentId", String(40), nullable=False),
    Column("customerEmail", String(200)),
    Column("customerPhone", String(40)),
    Column("whatsappUrl", String(300)),
    Column("status", String(20), nullable=False),
    Column("emailSentCount", Integer, nullable=False),
    Column("smsSentCount", Integer, nullable=False),
    Column("sentAt", DateTime()),
    Column("createdAt", DateTime(), nullable=False),
    Column("updatedAt", DateTime(), nullable=False),
)

QuoteSend = Table(
    "QuoteSend", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenantId", String(40), nullable=False),
    Column("quoteId", String(40), nullable=False, index=True),
    Column("channel", String(20), nullable=False),
    Column("recipient", String(300)),
    Column("idempotencyKey", String(80)),
    Column("status", String(20), nullable=False),
    Column("sentAt", DateTime(), nullable=False),
)

Lead = Table(
    "Lead", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenantId", String(40)),
    Column("email", String(200)),
    Column("phone", String(40)),
    Column("customerCode", String(20), nullable=False),
    Column("source", String(40), nullable=False),
    Column("createdAt", DateTime(), nullable=False),
)

Conversation = Table(
    "Conversation", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenantId", String(40), nullable=False),
    Column("leadId", String(40)),
    Column("createdAt", DateTime(), nullable=False),
)

Message = Table(
    "Message", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenantId", String(40), nullable=False),
    Column("conversationId", String(40), nullable=False, index=True),
    Column("direction", String(10), nullable=False),
    Column("body", Text, nullable=False),
    Column("sentAt", DateTime(timezone=True), nullable=False),
)

WebhookEvent = Table(
    "WebhookEvent", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenantId", String(40)),
    Column("eventType", String(40), nullable=False),
    Column("receivedAt", DateTime(), nullable=False),
)

AccessLog = Table(
    "AccessLog", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("actorUserId", String(40), nullable=False),
    Column("actorTenantId", String(40), nullable=False),
    Column("resourceType", String(40), nullable=False),
    Column("resourceId", String(40), nullable=False),
    Column("resourceTenantId", String(40), nullable=False),
    Column("action", String(20), nullable=False),
    Column("at", DateTime(), nullable=False),
)

sms_metrics = Table(
    "sms_metrics", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("metric_hour", DateTime(), nullable=False, unique=True),
    Column("scheduled_count", Integer, nullable=False),
    Column("sent_count", Integer, nullable=False),
    Column("delivered_count", Integer, nullable=False),
    Column("failed_count", Integer, nullable=False),
    Column("generated_count", Integer, nullable=False),
    Column("llm_success_count", Integer, nullable=False),
    Column("template_fallback_count", Integer, nullable=False),
    Column("opt_out_count", Integer, nullable=False),
    Column("daily_limit_hit_count", Integer, nullable=False),
    Column("llm_cost_usd", Float, nullable=False),
)

JobHeartbeat = Table(
    "JobHeartbeat", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("job", String(40), nullable=False),
    Column("beatAt", DateTime(), nullable=False),
)

# The API's request log (seeds 000-003): one row per request, as a logging middleware
# writes it. `requestId` is the client's idempotency key; a repeat the server answered
# from its idempotency cache has `idempotentReplay` 1. `errorCode` is set on 4xx and 5xx.
ApiRequest = Table(
    "ApiRequest", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenantId", String(40)),
    Column("method", String(10), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("statusCode", Integer, nullable=False),
    Column("durationMs", Integer, nullable=False),
    Column("requestId", String(80), nullable=False),
    Column("idempotentReplay", Integer, nullable=False),
    Column("errorCode", String(40)),
    Column("at", DateTime(), nullable=False, index=True),
)

TABLES = [Tenant, User, AgentQuote, QuoteSend, Lead, Conversation, Message, WebhookEvent,
          AccessLog, sms_metrics, JobHeartbeat, ApiRequest]
# Tables whose rows belong to one tenant: row level security applies to them (PostgreSQL).
TENANT_TABLES = ["User", "AgentQuote", "QuoteSend", "Lead", "Conversation", "Message",
                 "WebhookEvent", "ApiRequest"]
