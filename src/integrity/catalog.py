"""The settings reference: every check kind and every part of an audit file, read from the
config models themselves.

`integrity checks KIND` prints one kind's page; `docs/reference.md` is every page, written
by `python -m integrity.catalog --write docs/reference.md` (a test fails when it is stale).
There is one source for each piece: a setting's meaning is the `Field(description=...)`
beside the field, its type and default come from the field, a kind's one-line summary is
its check class's docstring and its exact semantics are its check module's docstring. Only
the examples live here, and a test validates each of them as an audit file.

This module must not import pandas or SQLAlchemy: `integrity checks` has to be instant.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from integrity import config
from integrity.units import Threshold, format_duration

# ---------------------------------------------------------------------------
# What a page is made of.


@dataclass
class Setting:
    name: str     # as written in the file (`from`, not `sender`)
    type: str     # in the user's terms: duration, filter, column or list of columns …
    default: str  # `required`, `not set`, or the value as written in YAML
    meaning: str  # the field's description


@dataclass
class Table:
    title: str
    settings: list[Setting]


@dataclass
class Page:
    name: str                        # `duplicates`, `connection`, …
    summary: str                     # one line
    semantics: str = ""              # paragraphs, as written
    tables: list[Table] = field(default_factory=list)
    example: str | None = None       # YAML; checked by tests/test_docs.py


# ---------------------------------------------------------------------------
# Examples: an audit file's parts (without `connection:`), each validated by a test.

KIND_EXAMPLES = {
    "counter_vs_events": """\
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
  sends: {table: QuoteSend, key: id}
checks:
  - id: quote_email_counter
    kind: counter_vs_events
    dataset: quotes
    counter: emailSentCount
    events: {dataset: sends, entity: quoteId, time: sentAt,
             idempotency_key: idempotencyKey, where: {channel: EMAIL}}
    mode: equal                      # or at_most: the counter may be lower
    window: 5m                       # key-less events at most 5m apart count once
""",
    "timestamp_preserved": """\
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
  sends: {table: QuoteSend, key: id}
checks:
  - id: quote_sent_at_preserved
    kind: timestamp_preserved
    dataset: quotes
    column: sentAt
    events: {dataset: sends, entity: quoteId, time: sentAt}
    window: 5m
    tolerance: 1s                    # clock tolerance
""",
    "timestamp_valid": """\
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
checks:
  - id: quote_sent_at_valid
    kind: timestamp_valid
    dataset: quotes
    where: {status: SENT}
    column: sentAt
    not_before: createdAt            # another column
    earliest: 2020-01-01             # a literal bound
    future_tolerance: 1m
""",
    "duplicates": """\
datasets:
  leads: {table: Lead, key: id, tenant_column: tenantId}
checks:
  - id: lead_emails_unique
    kind: duplicates
    dataset: leads
    columns: [tenantId, email]
    normalize: {email: email}        # trim + lower-case; plus-tags and dots are kept
    keep_first_by: createdAt         # the earliest row of a group is the kept one
  - id: lead_phones_unique
    kind: duplicates
    dataset: leads
    columns: [tenantId, phone]
    normalize: {phone: phone}        # E.164 via libphonenumber
    default_region: GB               # for numbers written without +44
""",
    "duplicate_events": """\
datasets:
  sends: {table: QuoteSend, key: id}
checks:
  - id: quote_send_double_clicks
    kind: duplicate_events
    dataset: sends
    where: {status: SENT}
    by: [quoteId, channel, recipient]
    time: sentAt
    window: 30s
""",
    "orphans": """\
datasets:
  messages: {table: Message, key: id, tenant_column: tenantId}
  conversations: {table: Conversation, key: id, tenant_column: tenantId}
checks:
  - id: message_orphans
    kind: orphans
    dataset: messages
    reference: conversationId        # or a list, matched to the parent key
    parent: conversations            # parent_key: default the parent's key (id)
    parent_where: {deletedAt: null}  # a soft-deleted parent counts as missing
    required: true                   # default false: a null reference is allowed
""",
    "cross_tenant": """\
datasets:
  messages: {table: Message, key: id, tenant_column: tenantId}
  conversations: {table: Conversation, key: id, tenant_column: tenantId}
  access_log: {table: AccessLog, key: id}
checks:
  - id: message_cross_tenant         # child against parent
    kind: cross_tenant
    dataset: messages                # tenant: the dataset's tenant_column
    reference: conversationId
    parent: conversations            # its tenant: its tenant_column, or parent_tenant_column
  - id: access_cross_tenant          # two columns of one row
    kind: cross_tenant
    dataset: access_log
    tenant_column: actorTenantId
    other_tenant_column: resourceTenantId
""",
    "reconciliation": """\
datasets:
  leads: {table: Lead, key: id, tenant_column: tenantId}
  webhooks: {table: WebhookEvent, key: id}
checks:
  - id: leads_match_webhooks
    kind: reconciliation
    left:  {dataset: leads, measure: count, by: [tenantId], per_day: createdAt}
    right: {dataset: webhooks, measure: count, by: [tenantId], per_day: receivedAt,
            where: {eventType: lead.created}}
    tolerance: 0                     # 2 | "1%" | {absolute: 2, relative: 1%}
""",
    "metric": """\
datasets:
  sms_metrics: {table: SmsMetric, key: id}
  sends: {table: QuoteSend, key: id}
checks:
  - id: sms_delivery_rate
    kind: metric
    dataset: sms_metrics
    numerator: sum(delivered_count)  # or value: avg(llm_cost_usd), or share: count
    denominator: sum(sent_count)
    time: metric_hour
    window: 24h
    thresholds: {warn: "< 95%", critical: "< 90%"}
  - id: channel_distribution         # "any channel at 0%"
    kind: metric
    dataset: sends
    share: count
    by: [channel]
    expect_groups: [EMAIL, WHATSAPP, LINK]   # a channel with no rows counts as 0
    time: sentAt
    window: 7d
    thresholds: {warn: "< 5%", critical: "<= 0%"}
""",
    "freshness": """\
datasets:
  heartbeats: {table: JobHeartbeat, key: id}
checks:
  - id: jobs_running
    kind: freshness
    dataset: heartbeats
    time: beatAt
    by: [job]                        # each job on its own
    expect_groups: [sms-scheduler, invoice-sync]   # a job that never ran is stale
    warn_after: 10m
    critical_after: 30m              # or max_age: 30m, at the check's severity
""",
    "row_level_security": """\
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
  leads: {table: Lead, key: id, tenant_column: tenantId}
checks:
  - id: tenants_isolated
    kind: row_level_security          # every dataset with a tenant_column, by default
    forced: true                      # the app connects as the tables' owner
    probe: {role: app_user, setting: app.tenant_id, tenants: 5}
""",
    "database_health": """\
checks:
  - id: database
    kind: database_health             # PostgreSQL, MariaDB/MySQL; SQLite: size, sequences
    connections: {warn: "> 80%", critical: "> 95%"}        # seed 003
    long_queries: {longer_than: 1s}                        # seed 002: no query over 1000 ms
    slow_statements: {mean_above: 200ms}                   # seed 001 (pg_stat_statements)
    idle_in_transaction: {older_than: 5m}
    sequences: {warn: "> 80%", critical: "> 95%"}          # seed 001: sequence usage
    replication_lag: {warn_after: 30s, critical_after: 5m}
    size: {growth_over: 1d, warn: "> 20%"}                 # seed 002: pg_database_size
""",
    "custom_sql": """\
checks:
  - id: whatsapp_urls_well_formed
    kind: custom_sql
    key: id
    sql:
      mysql: SELECT id FROM AgentQuote WHERE whatsappUrl NOT LIKE 'https://wa.me/%'
      default: SELECT id FROM "AgentQuote" WHERE "whatsappUrl" NOT LIKE 'https://wa.me/%'
    population_sql: SELECT COUNT(*) FROM "AgentQuote"
""",
    "expectation_suite": """\
datasets:
  leads: {table: Lead, key: id, tenant_column: tenantId}
checks:
  - id: lead_columns
    kind: expectation_suite
    dataset: leads
    suite: ../expectations/leads.json   # relative to the audit file, else the current folder
""",
    "http": """\
checks:
  - id: backend_health               # seed 002: the health endpoint, every few hours
    kind: http
    url: https://api.example.com/health
    headers: {Authorization: "Bearer ${HEALTH_TOKEN}"}   # every value from the environment
    expect: {status: ok, services.database: true, services.backgroundJobs: true}
    max_latency: 1s
    retries: 4                       # "wait 30 seconds and retry"; failing for over
    retry_delay: 30s                 # 2 minutes (5 attempts) is a violation
""",
}

AUDIT_EXAMPLE = """\
version: 1
name: nightly                        # default: the file name
target: production                   # the database's name in history
engine: auto                         # auto (default), sql or pandas
connection:
  url: ${DATABASE_URL}               # ${VAR} and ${VAR:-default} come from the environment
  statement_timeout: 2m
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
  legacy: {table: orders, schema: app, key: [shop, number]}        # compound key
  recent: {sql: "SELECT * FROM events WHERE kind = 'x'", key: id}   # a query
  paris:  {table: bookings, key: id, timezone: Europe/Paris}       # naive times are local
checks:
  - kind: freshness
    dataset: quotes
    time: createdAt
    max_age: 1d
output:
  dir: reports/nightly
  sample_limit: 20
history: {url: "postgresql+psycopg://integrity@ops-db/integrity"}
mask: [email, phone]
"""

NOTIFY_EXAMPLE = """\
notify:
  - channel: slack
    webhook_url: ${SLACK_WEBHOOK_URL}
    min_severity: warning
    cooldown: 2h
    report_url: https://ci.example.com/artifacts/nightly/report.html
  - channel: pagerduty
    routing_key: ${PAGERDUTY_ROUTING_KEY}
    events_url: https://events.eu.pagerduty.com/v2/enqueue   # the EU service region
  - channel: email
    from: integrity@example.com
    to: [data-oncall@example.com]
    smtp: {host: smtp.example.com, username: integrity, password: "${SMTP_PASSWORD}"}
  - channel: webhook
    url: ${AUDIT_WEBHOOK_URL}
    secret: ${AUDIT_WEBHOOK_SECRET}
"""

WATCH_EXAMPLE = """\
watch:
  duration: 7d
  cadence: [{until: 3d, every: 1h}, {every: 1d}]   # hourly for 3 days, then daily
  rollback_on: [quote_email_counter, quote_sent_at_preserved]
  signoff:
    all_runs_pass: [quote_sent_at_valid]
    no_new_violations: [quote_*]
    metrics: {send_error_rate: "< 1% in every run"}
    compare_to_baseline: {quotes_sent_per_day: "not lower than 50%"}
"""

# Defaults the value cannot say in a user's words (an empty list that means something).
SHOWN_DEFAULTS = {"cadence": "hourly"}

# Types the annotation cannot say in a user's words (a validator accepts more than it).
SHOWN_TYPES = {
    ("AuditConfig", "datasets"): "mapping: name → dataset",
    ("AuditConfig", "checks"): "list of checks",
    ("AuditConfig", "notify"): "list of channels",
    ("CustomSqlConfig", "sql"): "query, or mapping: database → query",
    ("CustomSqlConfig", "population_sql"): "query, or mapping: database → query",
    ("DuplicatesConfig", "normalize"): "mapping: column → normaliser or list of them",
    ("HttpConfig", "headers"): "mapping: header name → text from ${VARIABLES}",
    ("HttpConfig", "expect_status"): "status code, or a list of them",
    ("HttpConfig", "expect"): "mapping: dotted path → JSON value",
    ("IncrementalConfig", "overlap"): "duration, or a number of ids",
}


# ---------------------------------------------------------------------------
# Pages.


def kind_page(kind: str) -> Page:
    """The reference page of one check kind."""
    from integrity.checks import CHECKS

    family = CHECKS[kind]
    model = family.Config
    own = _own_fields(model, config.CheckConfig)
    common = [name for name in config.CheckConfig.model_fields if name not in own]
    tables = [Table("Settings", [_setting(model, name) for name in own])]
    tables += _nested(model, own)
    tables.append(Table("Common check settings", [_setting(model, name) for name in common]))
    tables += _nested(model, common)
    return Page(name=kind, summary=_one_line(family.__doc__), semantics=semantics(kind),
                tables=tables, example=KIND_EXAMPLES.get(kind))


def semantics(kind: str) -> str:
    """What the kind checks, exactly: its module's docstring without the title line — only
    the paragraphs about `kind` when the module defines several kinds."""
    from integrity.checks import CHECKS

    module = sys.modules[CHECKS[kind].__module__]
    paragraphs = [part.strip("\n") for part in (module.__doc__ or "").split("\n\n")][1:]
    siblings = [name for name, family in CHECKS.items() if family.__module__ == module.__name__]
    if len(siblings) == 1:
        return "\n\n".join(paragraphs)
    mine, current = [], None
    for paragraph in paragraphs:
        opener = next((name for name in siblings if paragraph.startswith(f"`{name}` —")), None)
        current = opener or current
        if current == kind:
            mine.append(paragraph)
    return "\n\n".join(mine)


def audit_pages() -> list[Page]:
    """The parts of an audit file other than its checks."""
    top = config.AuditConfig
    pages = [
        Page("audit file", "The top level of an `audits/*.yml` file.",
             "Every error names the file, line, column and path inside it, and all errors of "
             "a file are reported at once. `${NAME}` and `${NAME:-default}` are replaced from "
             "the environment (`$${` is a literal `${`).",
             [Table("Settings", [_setting(top, name) for name in top.model_fields])],
             AUDIT_EXAMPLE),
        Page("connection", "The audited database: `connection:`.",
             "integrity only reads (README, \"Read-only, always\").",
             [Table("Settings", _settings(config.ConnectionConfig))]),
        Page("datasets", "The tables and queries checks read: `datasets: {NAME: {...}}`.",
             f"{_one_line(config.DatasetConfig.__doc__)} Checks refer to a dataset by its "
             f"name.", [Table("Settings of each dataset", _settings(config.DatasetConfig)),
                        *_nested(config.DatasetConfig, ["incremental"])]),
        Page("output", "Where reports are written: `output:`.", "",
             [Table("Settings", _settings(config.OutputConfig))]),
        Page("history", "The run history: `history:`.", _one_line(config.HistoryConfig.__doc__),
             [Table("Settings", _settings(config.HistoryConfig))]),
    ]
    rules = config.NotifyRules
    tables = [Table("Settings of every channel", _settings(rules))]
    for channel in typing.get_args(typing.get_args(config.Channel)[0]):
        own = _own_fields(channel, rules)
        tag = typing.get_args(channel.model_fields["channel"].annotation)[0]
        article = "an" if tag[0] in "aeiou" else "a"
        tables.append(Table(f"Settings of {article} `{tag}` channel",
                            [_setting(channel, name) for name in own]))
        tables += _nested(channel, own)
    pages.append(Page("notify", "Alert channels: `notify: [...]`.", _one_line(rules.__doc__),
                      tables, NOTIFY_EXAMPLE))
    pages.append(Page(
        "watch", "A post-deploy watch's plan: `watch:`.",
        "`integrity watch start AUDIT --deploy LABEL` opens a watch: the deploy's own run is "
        "hour 0, the baseline; `integrity watch tick` (cron, every 5 minutes) runs the audit "
        "at the cadence's moments; a `rollback_on` check failing with violations hour 0 did "
        "not have exits 4 and alerts; after the last run the sign-off says APPROVED or NOT "
        "APPROVED (README, \"Watch a deploy\").",
        [Table("Settings", _settings(config.WatchConfig)),
         Table("Settings of each `cadence` entry", _settings(config.WatchCadence)),
         Table("Settings of `signoff`", _settings(config.Signoff))], WATCH_EXAMPLE))
    return pages


def _own_fields(model: type[BaseModel], base: type[BaseModel]) -> list[str]:
    """The fields `model` declares itself (a redeclared field of `base` included), in
    declaration order, `kind`/`channel` first."""
    names: list[str] = []
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, base) and cls is not base:
            names += [name for name in cls.__dict__.get("__annotations__", {})
                      if name in model.model_fields and name not in names]
    return sorted(names, key=lambda name: name not in {"kind", "channel"})


def _settings(model: type[BaseModel]) -> list[Setting]:
    return [_setting(model, name) for name in model.model_fields]


def _setting(model: type[BaseModel], name: str) -> Setting:
    info = model.model_fields[name]
    shown = SHOWN_TYPES.get((model.__name__, name))
    return Setting(name=info.alias or name, type=shown or _type(info.annotation, info.metadata),
                   default=_default(info, info.alias or name), meaning=_one_line(info.description))


def _nested(model: type[BaseModel], names: list[str]) -> list[Table]:
    """A table for each mapping-valued setting among `names` (one for settings sharing a
    model: `left` and `right`)."""
    found: dict[type[BaseModel], list[str]] = {}
    for name in names:
        info = model.model_fields[name]
        inner = _model_of(info.annotation)
        if inner is not None:
            found.setdefault(inner, []).append(info.alias or name)
    return [Table("Settings of " + " and ".join(f"`{name}`" for name in fields),
                  _settings(inner)) for inner, fields in found.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a setting holds (Optional and Annotated unwrapped), if it holds one."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return None
            annotation = members[0]
        else:
            break
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else None


# ---------------------------------------------------------------------------
# Types and defaults, in the user's words.


def _type(annotation: Any, metadata: list | tuple = ()) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], [*args[1:], *metadata])
    validators = {item.func for item in metadata if isinstance(item, BeforeValidator)}
    if config.parse_duration in validators:
        return "duration"
    if config.parse_where in validators:
        return "filter"
    if config.parse_aggregate in validators:
        return "aggregate"
    if any(getattr(function, "__name__", "") == "parse_tolerance" for function in validators):
        return "number, percentage or mapping"
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        return " or ".join(dict.fromkeys(_type(member) for member in members))
    if origin is Literal:
        values = [f"`{value}`" for value in args]
        return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if config.as_list in validators:
            return "column or list of columns" if inner is str else \
                f"{_type(inner)}, or a list of them"
        return f"list of {_plural(_type(inner))}"
    if origin is dict:
        return f"mapping: {_type(args[0])} → {_type(args[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        bounds = _bounds(metadata)
        for kind, word in ((bool, "true or false"), (int, "integer"), (float, "number"),
                           (datetime, "date or time"), (timedelta, "duration"),
                           (Threshold, "bound"), (str, "text")):
            if issubclass(annotation, kind):
                return f"{word}{bounds}"
    return "value"


def _plural(word: str) -> str:
    return {"text": "text", "value": "values", "mapping": "mappings"}.get(word, word)


def _bounds(metadata) -> str:
    low = next((item.ge for item in metadata if hasattr(item, "ge")), None)
    high = next((item.le for item in metadata if hasattr(item, "le")), None)
    if low is not None and high is not None:
        return f", {low} to {high}"
    return f", at least {low}" if low is not None else ""


def _default(info: FieldInfo, name: str) -> str:
    if info.is_required():
        return "required"
    if SHOWN_DEFAULTS.get(name):
        return SHOWN_DEFAULTS[name]
    value = info.get_default(call_default_factory=True)
    if value is None or value == "":
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, (list, tuple, dict)):
        return ", ".join(f"`{item}`" for item in value) if value else "none"
    if isinstance(value, config.Aggregate):
        return "`count`" if str(value) == "count(*)" else f"`{value}`"
    if isinstance(value, (config.OutputConfig, config.HistoryConfig)):
        return f"see `{name}`"  # a part of the audit file, with a section of its own
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value}`"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


# ---------------------------------------------------------------------------
# Rendering: a terminal page, and Markdown for docs/reference.md.


def as_text(page: Page, width: int | None = None) -> str:
    """A page for the terminal: plain text, wrapped to `width`."""
    width = width or max(60, min(100, shutil.get_terminal_size((100, 24)).columns))
    wrap = textwrap.TextWrapper(width=width, break_long_words=False, break_on_hyphens=False)
    lines = [f"{page.name} — {page.summary}", ""]
    if page.semantics:
        lines += [_indent(page.semantics, "  "), ""]
    wrap.initial_indent = wrap.subsequent_indent = "      "
    for table in page.tables:
        lines.append(f"{table.title}:")
        for setting in table.settings:
            default = setting.default if setting.default == "required" or \
                setting.default.startswith("see ") else f"default {setting.default}"
            lines += [f"  {setting.name}  ({setting.type}; {default})",
                      _unbroken(wrap.fill(_unbreakable(setting.meaning)))]
        lines.append("")
    if page.example:
        lines += ["Example:", _indent(page.example.rstrip("\n"), "  "), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def as_markdown(page: Page, level: int = 2) -> str:
    heading = "#" * level
    lines = [f"{heading} `{page.name}`" if page.name != "audit file" else
             f"{heading} The audit file", "", f"*{page.summary}*", ""]
    if page.semantics:
        lines += [page.semantics, ""]
    for table in page.tables:
        lines += [f"**{table.title}**", "", "| Setting | Type | Default | Meaning |",
                  "|---|---|---|---|"]
        lines += [f"| `{s.name}` | {_cell(s.type)} | {_cell(s.default)} | {_cell(s.meaning)} |"
                  for s in table.settings]
        lines.append("")
    if page.example:
        lines += ["**Example**", "", "```yaml", page.example.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def reference() -> str:
    """docs/reference.md: every part of an audit file and every check kind."""
    from integrity.checks import CHECKS

    parts = audit_pages()
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated from the config models: `python -m integrity.catalog --write "
        "docs/reference.md`. Do not edit by hand; tests/test_docs.py fails when it is "
        "stale. -->",
        "",
        "Every setting an audit file takes: its type, default and meaning, from the models "
        "that validate the file. `integrity checks KIND` prints a check kind's page in the "
        "terminal.",
        "",
        "Contents: " + " · ".join(_link(page.name) for page in parts),
        "",
        "Checks: " + " · ".join(_link(kind) for kind in CHECKS),
        "",
        "**Value types.** *duration*: `30s`, `5m`, `1.5h`, `7d`, `2w`, or a number of seconds. "
        "*filter*: a mapping of column to condition, data and never SQL — `{status: SENT}`, "
        "`{channel: [EMAIL, SMS]}`, `{deletedAt: null}`, `{direction: {not: INBOUND}}`, "
        "`{amount: {gt: 0, le: 1000}}`, `{createdAt: {since: 7d}}`, `{sentAt: {until: 1h}}` "
        "(see README, \"Filters\"). *aggregate*: `count`, `count(col)`, "
        "`count_distinct(col)`, `sum(col)`, `avg(col)`, `min(col)`, `max(col)`, a percentile "
        "`median(col)`, `p50(col)`, `p90(col)`, `p95(col)`, `p99(col)` or "
        "`percentile(col, 0.9)`, or `{measure: ..., where: {...}}`. *bound*: a comparison "
        "such as `\"> 0\"`, `\"> 5%\"`, `\"count >= 10\"`, `\"< 50% of baseline\"`. *column "
        "or list of columns*: `id` or `[shop, number]`.",
        "",
        "## The audit file and its parts",
        "",
    ]
    for page in parts:
        lines.append(as_markdown(page, level=3))
    lines += ["## Checks", "",
              "Every check reports its violating rows (keys, tenant, the values that make them "
              "wrong), a violation count, the population it measured and the rate. A check's "
              "own settings come first, then the settings every check has.", ""]
    for kind in CHECKS:
        lines.append(as_markdown(kind_page(kind), level=3))
    return "\n".join(lines).rstrip("\n") + "\n"


def _link(name: str) -> str:
    anchor = "the-audit-file" if name == "audit file" else name.replace(" ", "-")
    return f"[{'the audit file' if name == 'audit file' else name}](#{anchor})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


_NBSP = "\u00a0"


def _unbreakable(text: str) -> str:
    """`code spans` kept on one line when wrapped (`{warn: "> 0"}` split is unreadable)."""
    parts = text.split("`")
    return "`".join(part.replace(" ", _NBSP) if index % 2 else part
                    for index, part in enumerate(parts))


def _unbroken(text: str) -> str:
    return text.replace(_NBSP, " ")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integrity.catalog",
                                     description="Print (or write) docs/reference.md.")
    parser.add_argument("--write", metavar="FILE", help="Write the reference to FILE.")
    options = parser.parse_args(argv)
    text = reference()
    if options.write:
        Path(options.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
