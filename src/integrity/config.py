"""Audit definitions: read, interpolate and validate an `audits/*.yml` file.

Validation is complete before anything connects. Every error names the file,
the line and the path inside it (`checks[3].window`) and says what is wrong;
all errors of a file are reported together. Secrets stay in the environment:
`${NAME}` and `${NAME:-default}` are replaced from it (`$${` is a literal `${`).

This module must not import pandas or SQLAlchemy: `integrity validate` has to
answer in a fraction of a second.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from integrity.errors import ConfigError, ConfigErrors
from integrity.filters import Condition, parse_where
from integrity.units import (Threshold, parse_baseline_comparison, parse_duration,
                             parse_fraction, parse_run_condition, parse_threshold)

# ---------------------------------------------------------------------------
# Field types shared by every check family.

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Where = Annotated[tuple[Condition, ...], BeforeValidator(parse_where)]
Severity = Literal["critical", "warning", "info"]
Engine = Literal["pandas", "sql", "auto"]


def as_list(value: Any) -> Any:
    """One value or a list of them, as a list (YAML lets users write either)."""
    return [value] if isinstance(value, str) else value


Columns = Annotated[list[str], BeforeValidator(as_list), Field(min_length=1)]
"""One column name or a list of them (a compound key)."""


_AGGREGATE = re.compile(
    r"^\s*(count|count_distinct|sum|avg|min|max|median|p50|p90|p95|p99|percentile)\s*"
    r"(?:\(\s*([^()]*?)\s*\))?\s*$", re.IGNORECASE)
# The percentiles by name, as the fraction each one is.
PERCENTILES = {"median": 0.5, "p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
AGGREGATES = ("count", "count(col)", "count_distinct(col)", "sum(col)", "avg(col)", "min(col)",
              "max(col)", "median(col)", "p50(col)", "p90(col)", "p95(col)", "p99(col)",
              "percentile(col, 0.9)")


@dataclass(frozen=True)
class Aggregate:
    """`count`, `count(col)`, `count_distinct(col)`, `sum(col)`, `avg(col)`, `min`, `max`,
    a percentile (`p95(col)`, `median(col)`, `percentile(col, 0.9)`: `fraction` says
    which), optionally narrowed by its own filter: `{measure: count, where: {...}}`."""

    function: str
    column: str | None
    where: tuple[Condition, ...] = ()
    fraction: float | None = None  # a percentile's, in (0, 1); None for the others

    @property
    def columns(self) -> list[str]:
        from integrity.filters import columns

        return [*([self.column] if self.column else []), *columns(self.where)]

    def __str__(self) -> str:
        arguments = self.column or "*"
        if self.function == "percentile":
            arguments += f", {self.fraction:g}"
        text = f"{self.function}({arguments})"
        if self.where:
            from integrity.filters import describe

            text += f" where {describe(self.where)}"
        return text


def parse_aggregate(value: Any) -> Aggregate:
    if isinstance(value, Aggregate):
        return value
    where: tuple[Condition, ...] = ()
    if isinstance(value, dict):
        unknown = set(value) - {"measure", "where"}
        if unknown or "measure" not in value:
            raise ValueError("an aggregate is a string such as 'sum(amount)' or a mapping "
                             "{measure: 'count', where: {...}}")
        where = parse_where(value.get("where"))
        value = value["measure"]
    match = _AGGREGATE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid aggregate {value!r}: {_unknown_aggregate(value)}")
    function, column = match.group(1).lower(), match.group(2) or None
    if column == "*":
        column = None
    if function != "count" and column is None:
        example = "percentile(amount, 0.9)" if function == "percentile" else f"{function}(amount)"
        raise ValueError(f"invalid aggregate {value!r}: {function} needs a column, "
                         f"e.g. {example}")
    fraction = PERCENTILES.get(function)
    if function == "percentile":
        column, fraction = _percentile_arguments(value, column)
    elif column and "," in column:
        raise ValueError(f"invalid aggregate {value!r}: {function} takes one column"
                         + ("; for another percentile write percentile(col, 0.9)"
                            if fraction else ""))
    return Aggregate(function, column, where, fraction)


def _percentile_arguments(value: str, arguments: str) -> tuple[str, float]:
    """`col, 0.9` of `percentile(col, 0.9)`: the column and a fraction in (0, 1)."""
    column, comma, written = arguments.rpartition(",")
    column, written = column.strip(), written.strip()
    if not comma or not column:
        raise ValueError(f"invalid aggregate {value!r}: percentile needs a column and a "
                         f"fraction, e.g. percentile(response_ms, 0.9) for the 90th percentile")
    try:
        fraction = float(written)
    except ValueError:
        fraction = None
    if fraction is None or not 0 < fraction < 1:
        hint = (f"; write percentile({column}, {fraction / 100:g}) for {written}%"
                if fraction is not None and 1 < fraction < 100 else "")
        raise ValueError(f"invalid aggregate {value!r}: the fraction must lie between 0 and 1 "
                         f"(0.9 is the 90th percentile){hint}")
    return column, fraction


def _unknown_aggregate(value: Any) -> str:
    """What to write instead of an aggregate that is none: a close name when there is one."""
    choices = f"use {', '.join(AGGREGATES[:-1])} or {AGGREGATES[-1]}"
    name = re.match(r"\s*(\w+)", value) if isinstance(value, str) else None
    if name is None:
        return choices
    written = name.group(1).lower()
    percentile = re.fullmatch(r"p(\d{1,2})", written)
    if percentile:
        return f"{written} is not one of p50, p90, p95, p99; write percentile(col, " \
               f"{int(percentile.group(1)) / 100:g})"
    names = list(dict.fromkeys(choice.split("(")[0] for choice in AGGREGATES))
    hint = difflib.get_close_matches(written, names, n=1)
    return choices + (f"; did you mean {hint[0]!r}?" if hint else "")


AggregateField = Annotated[Aggregate, BeforeValidator(parse_aggregate)]


class Model(BaseModel):
    """Strict base: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Thresholds(Model):
    """Bounds on the violation count or rate: `warn: "> 0"`, `critical: "> 5%"`."""

    warn: Threshold | None = Field(None, description=(
        "The check warns when this bound holds: `\"> 0\"`, `\"> 5%\"` (a percentage is the "
        "rate: violations over population), `\"count >= 10\"`, `\"rate > 0.02\"`. "
        "Default: not set."))
    critical: Threshold | None = Field(None, description=(
        "The check fails when this bound holds (it is looked at before `warn`). Default: not "
        "set; give at least one of `warn` and `critical`."))

    @field_validator("warn", "critical", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return None if value is None else parse_threshold(value)

    @model_validator(mode="after")
    def _one_needed(self) -> Thresholds:
        if self.warn is None and self.critical is None:
            raise ValueError("give at least one of warn or critical")
        return self


class CheckNotify(Model):
    """A check's own alerting, over its channels' settings."""

    channels: list[str] | None = Field(None, description=(
        "The channels (by `name`, default their type) that hear this check, e.g. "
        "`[pagerduty]`. Default: every channel whose `checks:` takes it."))
    cooldown: Duration | None = Field(None, description=(
        "This check's cooldown on every channel, e.g. `30m`. Default: the channel's."))
    repeat: Duration | Literal["never"] | None = Field(None, description=(
        "How often this check's open alert is repeated, or `never`. Default: the channel's "
        "`repeat`."))


class CheckConfig(Model):
    """What every check has. Check families extend it with their own fields."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$")] = Field("", description=(
        "The check's stable name, unique in the audit (letters, digits, `_ . : -`): reports, "
        "the run history, alerts, `--check`/`--skip` and `integrity accept` use it. Default: "
        "`<dataset>.<kind>` (its first dataset), e.g. `leads.duplicates`; "
        "`audit.<kind>` for a check without one (`audit.custom_sql`, `audit.http`)."))
    kind: str = Field(description="Which check this is: one of `integrity checks`.")
    description: str | None = Field(None, description=(
        "Why the check exists, in your team's words: shown before the check's exact rule in "
        "every report and in alerts. Default: not set (the rule alone)."))
    severity: Severity = Field("critical", description=(
        "What a violation means when `thresholds` is not set: `critical` (the check fails; "
        "the gate blocks), `warning` (it warns) or `info` (reported only). Default "
        "`critical`. Freshness with `max_age` judges at this level; a metric judges by its "
        "own thresholds."))
    thresholds: Thresholds | None = Field(None, description=(
        "Bounds on the violation count or rate instead of \"any violation takes "
        "`severity`\": `{warn: \"> 0\", critical: \"> 5%\"}`. A plain number compares the "
        "count, a percentage the rate; below every bound the check passes. Default: not set. "
        "Freshness and http take none; a metric's thresholds bound its value instead."))
    where: Where = Field((), description=(
        "A filter on the check's dataset: only matching rows are checked and counted. Data, "
        "never SQL: `{status: SENT}`, `{channel: [EMAIL, SMS]}`, `{deletedAt: null}`, "
        "`{amount: {gt: 0}}`, `{createdAt: {since: 7d}}` (README, \"Filters\"). Default: "
        "every row. Not for `reconciliation` (use `left.where`, `right.where`), "
        "`custom_sql` (filter in the query), `expectation_suite` or `http`."))
    on_empty: Literal["warn", "fail", "pass"] = Field("warn", description=(
        "What happens when `where` matches none of the dataset's rows (often a typo: `sent` "
        "vs `SENT`): `warn` — the check warns, with a note naming the filter and the row "
        "count; `fail` — it fails at its `severity`; `pass` — it passes with the note. "
        "Default `warn`."))
    notify: CheckNotify | None = Field(None, description=(
        "This check's alerting: which channels hear it and its cooldown, e.g. `{channels: "
        "[pagerduty], cooldown: 30m}`. Default: not set (the channels' settings)."))
    engine: Engine | None = Field(None, description=(
        "Where this check runs, over the audit's `engine:` and `--engine`: `pandas` (pull "
        "the columns, compute in Python), `sql` (the database computes; only violations "
        "come back) or `auto` (SQL where the database can express the check, else pandas, "
        "with a note saying why). Default: not set (the run's engine)."))

    @property
    def datasets(self) -> list[str]:
        """Names of the datasets the check reads (checked against `datasets:`)."""
        dataset = getattr(self, "dataset", None)
        return [dataset] if dataset else []


class Family(Protocol):
    """What reading a file needs of a check family (`checks.Check` is one): the model of
    its settings and its cross-field validation. The catalog is passed in by the caller
    (`integrity.audit`), so this module knows no family."""

    Config: type[CheckConfig]

    @classmethod
    def validate(cls, config: CheckConfig, audit: Any) -> list[tuple[tuple, str]]: ...


# ---------------------------------------------------------------------------
# The audit file.


class ConnectionConfig(Model):
    url: str = Field(min_length=1, description=(
        "The audited database, as an SQLAlchemy URL: `postgresql+psycopg://auditor@db/app`, "
        "`mysql+pymysql://…`, `sqlite:///app.db`. Keep the password out of the file: "
        "`url: ${DATABASE_URL}`. Required."))
    statement_timeout: Duration = Field(timedelta(minutes=5), description=(
        "The longest one statement may run; the database stops it and the check errors, "
        "naming this setting. Default 5m."))
    connect_timeout: Duration = Field(timedelta(seconds=10), description=(
        "How long one attempt to connect may wait for the database. Default 10s."))
    retries: Annotated[int, Field(ge=0, le=10)] = Field(3, description=(
        "How many times a transient connection failure (refused, timed out, too many "
        "connections, starting up) is retried, 0 to 10; a permanent one fails at once. "
        "Default 3."))
    retry_backoff: Duration = Field(timedelta(seconds=1), description=(
        "The wait before the first retry; each further retry waits twice as long. "
        "Default 1s."))


def parse_overlap(value: Any) -> Any:
    """A duration (`10m`), or a plain number: seconds of a time column, ids of a number
    column (which one the column's type decides at run time)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid overlap {value!r}: use e.g. 10m, or a number of ids")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"invalid overlap {value!r}: must be zero or more")
        return value
    return parse_duration(value)


class IncrementalConfig(Model):
    """How a run sees what changed in a dataset since the last run: a column that grows
    with every change. Checks with an exact incremental rule then examine only the rows
    changed since the last run's watermark, plus the keys that violated in it (README,
    "Incremental runs")."""

    changed: str | None = Field(None, description=(
        "A column every insert and update sets to a later value, e.g. `updatedAt`: rows "
        "whose value is at least the last run's watermark minus `overlap` (or null) are "
        "examined again. A soft delete must set it too. Give `changed` or `appended`."))
    appended: str | None = Field(None, description=(
        "For an append-only table: a column that grows with each new row, e.g. `id`; rows "
        "are never updated. Give `changed` or `appended`."))
    created: str | None = Field(None, description=(
        "With `changed`: a column set once, when the row is inserted, e.g. `createdAt`. "
        "The checks against this dataset as a parent (orphans, cross_tenant) and the "
        "reconciliations reading it then stay incremental when an old row is updated — "
        "only an old row deleted, given another key or moved to another bucket (or out of "
        "a reconciliation side's filter) runs them in full. Default: not set (any change "
        "to a row older than the overlap runs them in full)."))
    overlap: Annotated[float | timedelta, BeforeValidator(parse_overlap)] | None = Field(
        None, description=(
            "How far back of the last watermark rows are examined again, for transactions "
            "that committed late (a time written before the last run's snapshot but "
            "committed after it): a duration for a time column (`10m`), a number of ids "
            "for a number column. Default `10m` with `changed`, 0 with `appended`."))
    full_above: Annotated[float, BeforeValidator(parse_fraction)] = Field(0.05, description=(
        "Run the dataset's checks in full when more than this share of its rows changed "
        "since the last run (`25%` or 0.25): past it, looking the changed rows up one by "
        "one costs more than reading the table once. Default `5%`, with a margin below "
        "where the churn benchmark's incremental run stops being cheaper, about 10% "
        "(benchmarks/RESULTS.md, \"Incremental runs\"); `100%` never chooses a full run "
        "for this reason."))
    full_every: Duration | None = Field(None, description=(
        "Run the dataset's checks in full when the last full run is at least this old on "
        "the run's clock (`--now`), e.g. `7d`: what a watermark cannot see — a row "
        "changed without moving its column, a commit later than `overlap` — is caught "
        "then. Default: not set (full only when the history has no usable state, or with "
        "`--full`)."))

    @model_validator(mode="after")
    def _one_column(self) -> IncrementalConfig:
        if bool(self.changed) == bool(self.appended):
            raise ValueError("give one of changed (a column set on every change) or "
                             "appended (a growing id of an append-only table)")
        if self.full_every is not None and self.full_every <= timedelta(0):
            raise ValueError("full_every must be longer than 0s")
        if not 0 < self.full_above <= 1:
            raise ValueError("full_above is a share of the rows, above 0% and at most 100%")
        if self.created and not self.changed:
            raise ValueError("created goes with changed: an appended table's rows are never "
                             "updated")
        return self

    @property
    def column(self) -> str:
        return self.changed or self.appended

    @property
    def mode(self) -> str:
        return "changed" if self.changed else "appended"

    def overlap_or_default(self) -> float | timedelta:
        if self.overlap is not None:
            return self.overlap
        return timedelta(minutes=10) if self.changed else 0


class DatasetConfig(Model):
    """A table (optionally schema-qualified), a read-only SQL query, or files."""

    table: str | None = Field(None, description=(
        "The table to read. Give one of `table`, `sql` and `file`."))
    schema_: str | None = Field(default=None, alias="schema", description=(
        "The table's schema (on MySQL and MariaDB: its database), e.g. `app`. Default: not "
        "set (the connection's default). Only with `table`."))
    sql: str | None = Field(None, description=(
        "A query whose rows are the dataset, instead of a table: one read query, checked as "
        "the audited database reads it. Give one of `table`, `sql` and `file`."))
    file: str | None = Field(None, description=(
        "Files whose rows are the dataset, instead of a table: a path or a glob relative to "
        "the audit file (`logs/app*.log.gz`), CSV, JSON lines, Parquet or a log; read by "
        "the pandas engine. Give one of `table`, `sql` and `file`."))
    format: Literal["csv", "jsonl", "parquet", "log"] | None = Field(None, description=(
        "The files' format. Default: from the name (`.csv`, `.jsonl`/`.ndjson`, "
        "`.parquet`, `.log`, each optionally `.gz`); `log` when `pattern` is given."))
    pattern: str | None = Field(None, description=(
        "For a log: a regular expression with named groups, which are the columns, e.g. "
        "`(?P<ts>\\S+ \\S+) (?P<level>\\w+) (?P<message>.*)`; `file` and `line` are added. "
        "Lines it does not match are left out (a note counts them). Default: not set."))
    time_format: dict[str, str] = Field({}, description=(
        "Per column, the layout its text times are written in (Python strptime), e.g. "
        "`{ts: \"%d/%b/%Y:%H:%M:%S %z\"}`; read as ISO 8601. Default: none (ISO 8601 "
        "text and the database's times are read as they are)."))
    key: Columns | None = Field(None, description=(
        "The column(s) that identify a row (a list: a compound key): shown with every "
        "violation, ordering samples, naming the kept row of a duplicate group and following "
        "violations from run to run. A parent's key is what `orphans` and `cross_tenant` "
        "match by default; `counter_vs_events` and `timestamp_preserved` need a one-column "
        "key. Default: not set."))
    tenant_column: str | None = Field(None, description=(
        "The column holding each row's tenant: shown with every violation, and the tenant "
        "`cross_tenant` compares (on the checked dataset and on its parent). Default: not "
        "set."))
    timezone: str = Field("UTC", description=(
        "The IANA time zone of times stored without an offset (a timestamp without time "
        "zone, text without `Z` or `+02:00`), e.g. `Europe/Paris`. Default `UTC`."))
    description: str | None = Field(None, description=(
        "A note for readers of the audit file: what the dataset is. Default: not set."))
    mask: list[str] = Field([], description=(
        "Columns shown masked (`a•••@example.com`, `+44•••••23`) in the samples of every "
        "check that reads this dataset, on top of the audit's `mask`. Default: none."))
    incremental: IncrementalConfig | None = Field(None, description=(
        "How a run sees what changed since the last one: `{changed: updatedAt}` or "
        "`{appended: id}`, with `overlap` and `full_every`. Checks with an exact "
        "incremental rule then examine the changed rows plus the keys that violated last "
        "time, with the same answer as a full run; the others run in full. Needs `key:`; "
        "a table or a query. Default: not set (every run reads everything)."))

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _table_or_sql(self) -> DatasetConfig:
        if sum(bool(x) for x in (self.table, self.sql, self.file)) != 1:
            raise ValueError("give exactly one of table, sql or file")
        if self.schema_ and not self.table:
            raise ValueError("schema applies to a table")
        if (self.format or self.pattern) and not self.file:
            raise ValueError("format and pattern apply to a file")
        if self.format == "log" and not self.pattern:
            raise ValueError("a log needs a pattern: a regular expression with named groups")
        if self.pattern:
            try:
                groups = re.compile(self.pattern).groupindex
            except re.error as error:
                raise ValueError(f"pattern: not a regular expression: {error}") from None
            if not groups:
                raise ValueError("pattern needs named groups, e.g. (?P<level>\\w+): they "
                                 "are the columns")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             f"UTC or Europe/Paris)") from None
        return value

    @property
    def label(self) -> str:
        if self.file:
            return f"file {self.file}"
        if self.table:
            return f'table "{self.schema_}"."{self.table}"' if self.schema_ else \
                f'table "{self.table}"'
        return "sql query"


class OutputConfig(Model):
    dir: str | None = Field(None, description=(
        "The folder reports are written to. Default: `reports/<audit name>`; `--output` "
        "wins."))
    formats: list[Literal["html", "json", "junit", "markdown"]] = Field(
        ["html", "json", "junit", "markdown"], description=(
            "The reports to write: `html` (report.html), `json` (report.json), `junit` "
            "(junit.xml, for CI) and `markdown` (summary.md). Default: all four."))
    sample_limit: Annotated[int, Field(ge=0)] = Field(20, description=(
        "How many violations each check shows in its sample (context rows, such as the kept "
        "row of a duplicate group, come along); 0 shows them all. Counts are always exact. "
        "Default 20; `--sample-limit` wins."))
    keep_runs: Annotated[int, Field(ge=0, le=10_000)] = Field(30, description=(
        "Each recorded run also keeps its own report.html and report.json in "
        "`runs/<run id>/` under `dir` — the page its alerts link to, which the next run "
        "does not overwrite; the newest `keep_runs` are kept, 0 keeps none. Default 30."))


class HistoryConfig(Model):
    """The run history store: a separate database, never the audited one."""

    url: str | None = Field(None, description=(
        "The database the run history is kept in, as an SQLAlchemy URL; never the audited "
        "database. New and persisting violations, baselines, `integrity accept` and alert "
        "cooldowns come from it. Default: `$INTEGRITY_HISTORY_URL`, else "
        "`sqlite:///reports/history.sqlite`; `--history` wins."))
    enabled: bool = Field(True, description=(
        "`false` runs without a history, as `--no-history` does: no new/persisting "
        "violations, baselines or cooldowns, and so no notifications unless `--notify`. "
        "Default true."))


class NotifyRules(Model):
    """When a channel speaks: an alert opens when a check it hears reaches its severities
    (or cannot run), is repeated every `repeat` while the breach lasts, and resolves with
    a recovery message — at most one message per `cooldown` per check, held back, never
    lost."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(None, description=(
        "The channel's name, for a check's `notify.channels` and in reports, e.g. `oncall`. "
        "Default: its type (`slack`, `pagerduty`, `email`, `webhook`); give names when two "
        "channels share a type."))
    checks: list[str] = Field([], description=(
        "The checks this channel hears: ids or globs, e.g. `[sms_delivery_rate, llm_*]`. "
        "Default: every check."))
    severities: list[Literal["critical", "warning", "info"]] | None = Field(
        None, min_length=1, description=(
            "Exactly the levels this channel hears, e.g. `[warning]` for Slack while "
            "PagerDuty takes `[critical]`; replaces `min_severity`. Default: not set "
            "(`min_severity` and worse)."))
    min_severity: Literal["info", "warning", "critical"] = Field("warning", description=(
        "The least severe status that alerts: `critical` (failures only), `warning` "
        "(warnings and failures) or `info` (info too). Default `warning`."))
    cooldown: Duration = Field(timedelta(minutes=60), description=(
        "The least time between two messages about the same check on this channel, on the "
        "run's clock (`--now`). An alert due within it is held back and sent by the first "
        "run after it if the breach still stands; a worse status speaks at once. "
        "Default 1h."))
    repeat: Duration | Literal["never"] | None = Field(None, description=(
        "How often an open alert is repeated (a reminder) while the breach lasts, on the "
        "run's clock, or `never`. PagerDuty keeps its one incident open instead. Default: "
        "the `cooldown`."))
    on_errors: bool = Field(True, description=(
        "Alert when a check, or the whole audit, could not run. Default true."))
    timeout: Duration = Field(timedelta(seconds=10), description=(
        "The total time one delivery may take on this channel, retries included. "
        "Default 10s."))
    retries: Annotated[int, Field(ge=0, le=5)] = Field(2, description=(
        "How many times a failed delivery is retried (0 to 5), within `timeout`. "
        "Default 2."))
    report_url: str | None = Field(None, description=(
        "The report's address in alerts, where reviewers open it (a CI artifact, a web "
        "server). Default: not set (the path of the report written)."))


class SlackChannel(NotifyRules):
    channel: Literal["slack"] = Field(description="`slack`: a Slack incoming webhook.")
    webhook_url: str = Field(description=(
        "The Slack incoming-webhook URL. A secret: write `${SLACK_WEBHOOK_URL}` and export "
        "it, never the URL itself. Required."))


class PagerDutyChannel(NotifyRules):
    channel: Literal["pagerduty"] = Field(description=(
        "`pagerduty`: one incident per check (Events API v2), resolved when the check "
        "passes again."))
    routing_key: str = Field(description=(
        "The integration's routing key. A secret: write `${PAGERDUTY_ROUTING_KEY}` and "
        "export it, never the key itself. Required."))
    events_url: str = Field("https://events.pagerduty.com/v2/enqueue", description=(
        "Where events are sent: the Events API v2 endpoint. Change it for PagerDuty's EU "
        "service region (`https://events.eu.pagerduty.com/v2/enqueue`) or a proxy. Default "
        "`https://events.pagerduty.com/v2/enqueue`."))
    min_severity: Literal["info", "warning", "critical"] = Field("critical", description=(
        "The least severe status that opens an incident: `critical` (failures only), "
        "`warning` or `info`. Default `critical`."))
    cooldown: Duration = Field(timedelta(minutes=30), description=(
        "The least time between two triggers for the same check, on the run's clock "
        "(`--now`); a check whose status got worse triggers at once. Default 30m."))


class SmtpServer(Model):
    host: str = Field(description="The SMTP server's host name. Required.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(587, description=(
        "The SMTP server's port (submission). Default 587; implicit TLS (465) is not "
        "supported."))
    starttls: bool = Field(True, description=(
        "Switch to TLS with STARTTLS before logging in, checking the server's certificate. "
        "Default true; `false` sends in clear (a local relay)."))
    username: str | None = Field(None, description=(
        "Log in as this user. Default: not set (no login)."))
    password: str | None = Field(None, description=(
        "The SMTP password. A secret: write `${SMTP_PASSWORD}` and export it, never the "
        "password itself. Default: not set."))
    ca_file: str | None = Field(None, description=(
        "A CA certificate file (PEM) to trust, for a relay with a private certificate. "
        "Default: not set (the system's CAs)."))


class EmailChannel(NotifyRules):
    channel: Literal["email"] = Field(description="`email`: a message through an SMTP server.")
    smtp: SmtpServer = Field(description="The SMTP server that sends the message. Required.")
    sender: str = Field(alias="from", description="The sender's address. Required.")
    to: Annotated[list[str], Field(min_length=1)] = Field(description=(
        "The recipients' addresses, at least one. Required."))

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WebhookChannel(NotifyRules):
    channel: Literal["webhook"] = Field(description=(
        "`webhook`: a JSON POST (`audit`, `run_id`, `exit_code`, `alerts`, `report`)."))
    url: str = Field(description=(
        "Where the JSON is posted. A secret: write `${AUDIT_WEBHOOK_URL}` and export it, "
        "never the URL itself. Required."))
    secret: str | None = Field(None, description=(
        "Signs each request: `X-Integrity-Signature: sha256=` HMAC-SHA256(secret, "
        "timestamp + \".\" + body), with the timestamp in `X-Integrity-Timestamp`. A "
        "secret: write `${AUDIT_WEBHOOK_SECRET}` and export it. Default: not set (unsigned)."))


Channel = Annotated[SlackChannel | PagerDutyChannel | EmailChannel | WebhookChannel,
                    Field(discriminator="channel")]
# Settings that are secrets: they must come from the environment (${VAR}), never the file.
SECRET_SETTINGS = {"slack": [("webhook_url",)], "pagerduty": [("routing_key",)],
                   "email": [("smtp", "password")], "webhook": [("url",), ("secret",)]}


class WatchCadence(Model):
    """How often a watch runs the audit, up to an offset from the deploy."""

    until: Duration | None = Field(None, description=(
        "Until how long after the deploy this cadence holds, e.g. `3d`; the next entry "
        "takes over from there. Default: not set (until the watch ends; only the last "
        "entry may leave it out)."))
    every: Duration = Field(description=(
        "The time between runs, e.g. `1h`, counted from the deploy (a deploy at 12:15 runs "
        "at 13:15, 14:15, …); 5m or more. Required."))

    @field_validator("every")
    @classmethod
    def _positive(cls, every: timedelta) -> timedelta:
        if every < timedelta(minutes=5):
            raise ValueError("a watch runs at most every 5 minutes (its cron tick's own "
                             "period): give every: 5m or more")
        return every


class Signoff(Model):
    """What a watch must show, over every run of its window, to be APPROVED."""

    all_runs_pass: list[str] = Field([], description=(
        "Checks (ids or globs such as `quote_*`) that pass in every run of the watch, the "
        "deploy's own (hour 0) included (`info`, which never fails, counts as passing). "
        "Default: none."))
    no_new_violations: list[str] = Field([], description=(
        "Checks (ids or globs) with no violation, in any run, that the deploy's own run "
        "did not have: what was broken before the deploy does not count against it. "
        "Default: none."))
    metrics: dict[str, str] = Field({}, description=(
        "Metric (or freshness) check id → a bound its value meets: `\"< 1% in every run\"` "
        "(the default), `\"<= 500 on average\"`, `\"> 95% in the last run\"`; each group "
        "of a grouped metric must meet it. Default: none."))
    compare_to_baseline: dict[str, str] = Field({}, description=(
        "Metric check id → how far its value may move from the deploy's own run (hour 0) "
        "in any run: `\"not worse than 2 points\"` (percentage points; worse is the "
        "direction of the check's own bounds), `\"not lower than 5%\"` (of the baseline), "
        "`\"not higher than 200\"` (the metric's unit). Default: none."))
    missed_runs: Annotated[int, Field(ge=0)] = Field(0, description=(
        "How many runs the cadence asked for may be missing (a missed run is a finding, "
        "not silence). Default 0."))


class WatchConfig(Model):
    """A post-deploy watch: `integrity watch start` opens one at a deploy."""

    duration: Duration = Field(description=(
        "How long the watch lasts from the deploy, e.g. `24h` or `7d` (`watch start --for` "
        "overrides it). Required."))
    cadence: list[WatchCadence] = Field([], description=(
        "When the audit runs during the watch: `[{until: 3d, every: 1h}, {every: 1d}]` is "
        "hourly for three days, then daily. Runs are counted from the deploy; the deploy's "
        "own run (hour 0) is the baseline and the last run is at the end. Default: hourly "
        "(`[{every: 1h}]`)."))
    before: Duration = Field(timedelta(days=7), description=(
        "The period before the deploy each windowed metric is also measured over, at the "
        "start, for the before/after comparison (a count or sum per window of that period). "
        "Default `7d`."))
    rollback_on: list[str] = Field([], description=(
        "Checks (ids or globs) whose failure during the watch means roll back: a metric "
        "failing, or a check with violations the deploy's own run did not have. The run "
        "exits 4, alerts `ROLLBACK criterion met`, and the watch cannot be approved. "
        "Default: none."))
    signoff: Signoff = Field(Signoff(), description=(
        "The criteria of the sign-off (`integrity watch signoff`); a rollback, a run that "
        "could not audit or a missed run also stand against it."))

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, cadence: list[WatchCadence]) -> list[WatchCadence]:
        previous = timedelta(0)
        for number, step in enumerate(cadence):
            if step.until is None and number != len(cadence) - 1:
                raise ValueError(f"entry {number} needs `until:` (only the last entry may "
                                 f"run to the end of the watch)")
            if step.until is not None and step.until <= previous:
                raise ValueError(f"entry {number}'s until must come after the entry before it")
            previous = step.until or previous
        return cadence


class AuditConfig(Model):
    version: Literal[1] = Field(1, description=(
        "The audit file's format version: `1`. Default 1."))
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(None, description=(
        "The audit's name in reports, the run history and alerts (letters, digits, "
        "`_ . -`). Default: the file's name without `.yml`."))
    target: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/@-]+$", max_length=300)] | None = \
        Field(None, description=(
            "The audited database's name in the run history and reports, e.g. `production` "
            "(letters, digits, `_ . : / @ -`). Default: not set (the server's identity, from "
            "the connection URL without its password)."))
    description: str | None = Field(None, description=(
        "A note for readers of the audit file: what it audits, who owns it. Default: not "
        "set."))
    engine: Engine = Field("auto", description=(
        "Where checks run unless a check's `engine:` or `--engine` says otherwise: `auto` "
        "(each check in SQL where the database can express it, else in pandas; the report "
        "says which ran where and why), `sql` (every check in the database; only violations "
        "come back) or `pandas` (pull the columns checks need once, compute in Python). "
        "Both engines give the same answer. Default `auto`."))
    connection: ConnectionConfig = Field(description="The audited database. Required.")
    datasets: dict[str, DatasetConfig] = Field(min_length=1, description=(
        "The tables and queries checks read, by the name checks use. At least one."))
    checks: list[dict[str, Any]] = Field(min_length=1, description=(
        "The checks to run: each a mapping with `kind:` and that kind's settings "
        "(`integrity checks KIND`). At least one."))
    output: OutputConfig = Field(OutputConfig(), description=(
        "Where reports are written, which, and how many sample rows they keep."))
    history: HistoryConfig = Field(HistoryConfig(), description="The run history store.")
    mask: list[str] = Field([], description=(
        "Columns shown masked (`a•••@example.com`, `+44•••••23`) in the samples of every "
        "check, whatever the dataset. Default: none."))
    notify: list[Channel] = Field([], description=(
        "Alert channels: `slack`, `pagerduty`, `email`, `webhook`. Default: none."))
    watch: WatchConfig | None = Field(None, description=(
        "The plan of a post-deploy watch (`integrity watch start`): its duration, cadence, "
        "rollback criteria and sign-off. Default: not set (`watch start` then needs "
        "`--for`, and runs hourly)."))


@dataclass
class Audit:
    """A validated audit: the file it came from, its settings and its checks."""

    file: str
    name: str
    config: AuditConfig
    checks: list[CheckConfig]
    config_hash: str
    positions: dict[tuple, tuple[int, int]] = field(default_factory=dict, repr=False)
    # Where each check stands in the file (check id -> index), so `checks[3]` keeps naming
    # the same check when --check/--skip run a subset.
    indices: dict[str, int] = field(default_factory=dict, repr=False)
    # ${VARIABLES} left for run time (`parse(deferred=True)`, as `validate` reads).
    deferred: list[str] = field(default_factory=list)
    # Warnings that are not errors: a dataset no check reads (a typo in a check, or leftovers).
    warnings: list[str] = field(default_factory=list)

    def path(self, index: int) -> str:
        """`checks[N]` of the check at `index` of `checks`, as numbered in the file."""
        return f"checks[{self.indices.get(self.checks[index].id, index)}]"

    @property
    def connection(self) -> ConnectionConfig:
        return self.config.connection

    @property
    def datasets(self) -> dict[str, DatasetConfig]:
        return self.config.datasets


# ---------------------------------------------------------------------------
# Loading.


def load(path: str | os.PathLike, kinds: Mapping[str, Family], *,
         environ: dict[str, str] | None = None, deferred: bool = False) -> Audit:
    """Read and validate an audit file; raise ConfigError(s) naming every problem.
    `kinds`: the check families by kind (the catalog). `deferred`: see `parse`."""
    file = str(path)
    try:
        if Path(path).stat().st_size > MAX_FILE_BYTES:  # not even read into memory
            raise _too_large(file)
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such audit file", file=file) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read audit file: {error}", file=file) from None
    return parse(text, kinds, file=file, environ=os.environ if environ is None else environ,
                 deferred=deferred)


def parse(text: str, kinds: Mapping[str, Family], *, file: str = "<audit>",
          environ: dict[str, str] | None = None, deferred: bool = False) -> Audit:
    """The audit in `text`, each check validated by its family in `kinds`.

    `deferred`: an unset ${VARIABLE} (without a default) is not an error but left for run
    time and listed in `Audit.deferred` — `integrity validate` needs no secrets."""
    data, positions = _load_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError("an audit file must be a mapping (connection:, datasets:, checks:)",
                          file=file, line=1)
    errors: list[ConfigError] = []

    def error(path: tuple, message: str) -> None:
        line, column = _position(positions, path)
        errors.append(ConfigError(message, file=file, path=_format_path(path) or None,
                                  line=line, column=column))

    written = data  # as in the file, before ${VARIABLES}: where a secret came from
    interpolated: set[tuple] = set()
    later: list[str] = [] if deferred else None
    unset: list[tuple] = []  # paths whose variable is missing: said once, not again below

    def missing(path: tuple, message: str) -> None:
        unset.append(path)
        error(path, message)

    data = _interpolate(data, (), environ or {}, missing, interpolated, later)

    # Every error of the file at once: a problem at the top level does not hide the
    # checks' own (they are validated against whatever datasets did validate).
    try:
        audit = AuditConfig.model_validate(data)
    except ValidationError as exc:
        audit = None
        for problem in exc.errors():
            path = _in_file(data, problem["loc"])
            if (path[:1] == ("checks",) and len(path) > 1) or any(
                    path[:len(u)] == u for u in unset):
                continue  # the checks are validated one by one below (not the list itself)
            error(path, _message(problem, AuditConfig, problem["loc"]))
    if audit is None:
        _validate_checks(_partial(data), data.get("checks", []) if isinstance(
            data.get("checks"), list) else [], kinds, error, file, written.get("checks"))
        raise ConfigErrors(errors)

    for index, channel in enumerate(audit.notify):
        for setting in SECRET_SETTINGS[channel.channel]:
            path = ("notify", index, *setting)
            value = getattr(channel, setting[0])
            for part in setting[1:]:
                value = getattr(value, part, None)
            if value and path not in interpolated:
                error(path, f"a secret must come from the environment: write "
                            f"${{{'_'.join(setting).upper()}}} and export it")
    _validate_dataset_queries(audit, error)
    checks = _validate_checks(audit, data.get("checks", []), kinds, error, file,
                              written.get("checks"))
    _validate_channel_names(audit, checks, data.get("checks", []), error)
    if audit.watch is not None:
        _validate_watch(audit.watch, checks, error)
    if errors:
        raise ConfigErrors(errors)
    name = audit.name or Path(file).stem
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    used = {name for check in checks for name in check.datasets}
    warnings = []
    for unused in [name for name in audit.datasets if name not in used]:
        line, column = _position(positions, ("datasets", unused))
        warnings.append(f"{file}:{line}:{column}: datasets.{unused}: no check reads this "
                        f"dataset")
    return Audit(file=file, name=name, config=audit, checks=checks, config_hash=digest,
                 positions=positions, deferred=list(dict.fromkeys(later or [])),
                 warnings=warnings)


def _validate_channel_names(audit: AuditConfig, checks: list[CheckConfig], raw: list[Any],
                            error) -> None:
    """`name:`s are unique, and a check's `notify.channels` names one channel each (a type
    such as `webhook` names a channel only while there is one of that type)."""
    names: dict[str, list[int]] = {}
    for index, channel in enumerate(audit.notify):
        if channel.name and channel.name in names and any(
                audit.notify[other].name for other in names[channel.name]):
            error(("notify", index, "name"), f"two channels are named {channel.name!r} (also "
                                             f"notify[{names[channel.name][0]}])")
        names.setdefault(channel.name or channel.channel, []).append(index)
    positions = {item.get("id"): index for index, item in enumerate(raw)
                 if isinstance(item, dict)}
    for number, check in enumerate(checks):
        wanted = check.notify.channels if check.notify is not None else None
        where = ("checks", positions.get(check.id, number), "notify", "channels")
        for position, name in enumerate(wanted or []):
            if name not in names:
                hint = difflib.get_close_matches(name, list(names), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                error(where + (position,), f"no channel named {name!r}{suggestion} "
                                           f"(channels: {', '.join(names) or 'none'})")
            elif len(names[name]) > 1:
                error(where + (position,), f"{len(names[name])} channels are {name!r}: give "
                                           f"them a `name:` and use it here")


def _validate_watch(watch: WatchConfig, checks: list[CheckConfig], error) -> None:
    """The checks a watch names exist; the ones judged by value measure one; a comparison
    with the baseline knows which way is worse."""
    from fnmatch import fnmatchcase

    ids = [check.id for check in checks]
    by_id = {check.id: check for check in checks}

    def unknown(path: tuple, name: str, what: str = "check") -> None:
        hint = difflib.get_close_matches(name, ids, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        error(path, f"no {what} matches {name!r}{suggestion}")

    for setting, names in (("rollback_on", watch.rollback_on),
                           ("signoff.all_runs_pass", watch.signoff.all_runs_pass),
                           ("signoff.no_new_violations", watch.signoff.no_new_violations)):
        path = ("watch", *setting.split("."))
        for index, pattern in enumerate(names):
            if not any(fnmatchcase(check_id, pattern) for check_id in ids):
                unknown(path + (index,), pattern)
    for setting in ("metrics", "compare_to_baseline"):
        for check_id, text in getattr(watch.signoff, setting).items():
            path = ("watch", "signoff", setting, check_id)
            check = by_id.get(check_id)
            try:
                (parse_run_condition if setting == "metrics" else parse_baseline_comparison)(
                    text)
            except ValueError as problem:
                error(path, str(problem))
                continue
            if check is None:
                unknown(path, check_id)
            elif check.kind not in ({"metric", "freshness"} if setting == "metrics"
                                    else {"metric"}):
                error(path, f"{check_id} is a {check.kind} check: {setting} judges the value "
                            f"of a metric{' or freshness' if setting == 'metrics' else ''} "
                            f"check (use all_runs_pass or no_new_violations)")
            elif setting == "compare_to_baseline" and \
                    parse_baseline_comparison(text).direction == "worse" and \
                    worse_direction(check) is None:
                error(path, f"{check_id}'s bounds do not say whether lower or higher is worse: "
                            f"write 'not lower than …' or 'not higher than …'")


def worse_direction(check: CheckConfig) -> str | None:
    """`lower` when a metric's bounds catch falling values (`< 95%`), `higher` when they
    catch rising ones, None when they do both or neither."""
    thresholds = getattr(check, "thresholds", None)
    ops = {bound.op[0] for bound in (getattr(thresholds, "warn", None),
                                     getattr(thresholds, "critical", None)) if bound is not None}
    if ops == {"<"}:
        return "lower"
    if ops == {">"}:
        return "higher"
    return None


def _validate_dataset_queries(audit: AuditConfig, error) -> None:
    """A dataset's `sql:` must be one read query as the audited database reads it; an
    incremental dataset is one whose rows a run can find again by key."""
    from integrity.usersql import validation_problem

    for name, dataset in audit.datasets.items():
        if dataset.incremental is not None:
            where = ("datasets", name, "incremental")
            if dataset.file:
                error(where, "incremental applies to a table or a query, not to files "
                             "(they are read whole)")
            elif not dataset.key:
                error(where, "incremental needs the dataset's `key:`: the rows that violated "
                             "in the last run are looked up by it")
        if dataset.sql:
            problem = validation_problem(dataset.sql, "default", audit.connection.url)
            if problem:
                error(("datasets", name, "sql"), problem)


def _validate_checks(audit: AuditConfig, raw_checks: list[Any], kinds: Mapping[str, Family],
                     error, file: str, written: Any = None) -> list[CheckConfig]:
    """`written`: the checks as in the file, before ${VARIABLES} were replaced."""
    from types import SimpleNamespace

    written = written if isinstance(written, list) else []

    checks: list[CheckConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_checks):
        where = ("checks", index)
        if not isinstance(raw, dict):
            error(where, "a check must be a mapping with at least `kind:`")
            continue
        kind = raw.get("kind")
        if not isinstance(kind, str) or not kind:
            error(where, f"missing `kind` (one of: {', '.join(sorted(kinds))})")
            continue
        family = kinds.get(kind)
        if family is None:
            hint = difflib.get_close_matches(kind, list(kinds), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            error(where + ("kind",), f"unknown check kind {kind!r}{suggestion} "
                                     f"(known: {', '.join(sorted(kinds))})")
            continue
        try:
            check = family.Config.model_validate(raw)
        except ValidationError as exc:
            for problem in exc.errors():
                error(where + _in_file(raw, problem["loc"]),
                      _message(problem, family.Config, problem["loc"]))
            continue
        if not check.id:
            base = check.datasets[0] if check.datasets else "audit"
            check = check.model_copy(update={"id": f"{base}.{kind}"})
        if check.id in seen:
            error(where + ("id",), f"duplicate check id {check.id!r} (also checks[{seen[check.id]}]);"
                                   f" give each check a distinct `id`")
        seen[check.id] = index
        for dataset_path, dataset in _dataset_references(check):
            if dataset not in audit.datasets:
                hint = difflib.get_close_matches(dataset, list(audit.datasets), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                error(where + dataset_path, f"unknown dataset {dataset!r}{suggestion} "
                                            f"(defined: {', '.join(audit.datasets)})")
        # What a family's `validate` may look at: the datasets, the file (for relative
        # paths) and the check as written (a secret must come from the environment).
        scope = SimpleNamespace(datasets=audit.datasets, file=file, config=audit,
                                written=written[index] if index < len(written) else {})
        for problem_path, message in family.validate(check, scope):
            error(where + _in_file(raw, problem_path), message)
        checks.append(check)
    return checks


def _dataset_references(check: CheckConfig) -> list[tuple[tuple, str]]:
    """(path, dataset name) of every dataset a check names, for one uniform error."""
    found: list[tuple[tuple, str]] = []

    def walk(model: BaseModel, path: tuple) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if name == "dataset" and isinstance(value, str):
                found.append((path + ("dataset",), value))
            elif isinstance(value, BaseModel):
                walk(value, path + (name,))

    walk(check, ())
    return found


# ---------------------------------------------------------------------------
# YAML with positions.


_FAST_LOADER = getattr(yaml, "CSafeLoader", None)  # libyaml: parses 7x faster


def _load_yaml(text: str, file: str) -> tuple[Any, dict[tuple, tuple[int, int]]]:
    """The document and the (line, column) of every path in it. libyaml parses; a file it
    rejects is parsed again in Python, whose messages name the offending character."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_large(file)
    if _FAST_LOADER is not None:
        try:
            return _compose(_FAST_LOADER(text), file)
        except yaml.YAMLError:
            pass
        except RecursionError:
            raise ConfigError(f"the audit file nests deeper than {MAX_DEPTH} levels; refused",
                              file=file) from None
    try:
        return _compose(yaml.SafeLoader(text), file)
    except RecursionError:
        raise ConfigError(f"the audit file nests deeper than {MAX_DEPTH} levels; refused",
                          file=file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", file=file,
                          line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None


# Bounds on what an audit file may expand to: far above any real audit, far below what
# exhausts memory. Aliases are counted as expanded — `&a [*b, *b, …]` chains ("billion
# laughs") grow exponentially from a few lines.
MAX_FILE_BYTES = 5_000_000
MAX_NODES = 250_000
MAX_DEPTH = 64


def _compose(loader, file: str) -> tuple[Any, dict[tuple, tuple[int, int]]]:
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("the audit file is empty", file=file, line=1)
        _within_bounds(node, file)
        positions: dict[tuple, tuple[int, int]] = {}
        _index_positions(node, (), positions, file)
        return loader.construct_document(node), positions
    finally:
        loader.dispose()


def _too_large(file: str) -> ConfigError:
    return ConfigError(f"the audit file is larger than {MAX_FILE_BYTES:,} bytes; refused",
                       file=file)


def _within_bounds(root: yaml.Node, file: str) -> None:
    """ConfigError unless the document, with every alias expanded, stays within MAX_NODES
    nodes and MAX_DEPTH levels. Counted on the composed graph (an alias is the same node
    object again), once per distinct node, so the count itself is cheap."""
    expanded: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in expanded:
            continue
        children = ([item for pair in node.value for item in pair]
                    if isinstance(node, yaml.MappingNode) else
                    node.value if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if key in depth:  # on the stack already: a recursive alias
                raise ConfigError("invalid YAML: an alias refers to itself", file=file,
                                  line=node.start_mark.line + 1,
                                  column=node.start_mark.column + 1)
            depth[key] = 0
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in expanded)
            continue
        expanded[key] = 1 + sum(expanded[id(child)] for child in children)
        depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
        mark = node.start_mark
        if expanded[key] > MAX_NODES:
            raise ConfigError(f"the audit file expands to more than {MAX_NODES:,} YAML values "
                              f"(aliases count as often as they are used); refused",
                              file=file, line=mark.line + 1, column=mark.column + 1)
        if depth[key] > MAX_DEPTH:
            raise ConfigError(f"the audit file nests deeper than {MAX_DEPTH} levels; refused",
                              file=file, line=mark.line + 1, column=mark.column + 1)


def _index_positions(node: yaml.Node, path: tuple, positions: dict, file: str) -> None:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (first at line {seen[key]})", file=file,
                                  path=_format_path(path) or None,
                                  line=key_node.start_mark.line + 1,
                                  column=key_node.start_mark.column + 1)
            seen[key] = key_node.start_mark.line + 1
            _index_positions(value_node, path + (key,), positions, file)
            # After the value's own entries: a key points at the key, not at its value.
            positions[path + (key,)] = (key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_positions(item, path + (index,), positions, file)


def _in_file(data: Any, loc: tuple) -> tuple:
    """A pydantic error location as a path in the file: without the names pydantic gives
    union members (`notify[1].email.smtp` is `notify[1].smtp` in the file)."""
    path, node = [], data
    for index, part in enumerate(loc):
        if not isinstance(node, (dict, list)):
            break  # below a scalar: only type names (`str`, `list[str]`) remain
        present = (part in node) if isinstance(node, dict) else (
            isinstance(part, int) and 0 <= part < len(node))
        if present:
            node = node[part]
        elif index < len(loc) - 1:
            continue  # a union member's name, not a key of the file
        path.append(part)
    return tuple(path)


def _partial(data: dict) -> Any:
    """What the checks may be validated against when the audit's top level is invalid:
    the datasets that are valid on their own, and the connection URL as written."""
    from types import SimpleNamespace

    datasets = {}
    for name, raw in (data.get("datasets") or {}).items() if isinstance(
            data.get("datasets"), dict) else []:
        try:
            datasets[name] = DatasetConfig.model_validate(raw)
        except ValidationError:
            pass
    connection = data.get("connection") if isinstance(data.get("connection"), dict) else {}
    url = connection.get("url") if isinstance(connection.get("url"), str) else ""
    return SimpleNamespace(datasets=datasets, connection=SimpleNamespace(url=url))


def _allowed_keys(model: Any, loc: tuple) -> list[str] | None:
    """The keys the block at `loc` (a pydantic location under `model`) allows, as written
    in a file (aliases), or None when the block is not a model."""
    import typing

    current = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {field.alias or name: field for name, field in current.model_fields.items()}
            field = fields.get(part) or current.model_fields.get(part)
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) in (list, tuple):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (typing.Union, types.UnionType):
            # A discriminated union: pydantic's location names the member by its tag.
            current = next((member for member in typing.get_args(current)
                            if _tag(member) == part), None)
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return None


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; Optional[X] -> X."""
    import typing

    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _tag(member: Any) -> str | None:
    import typing

    member = _unwrap(member)
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return None
    field = member.model_fields.get("channel")
    values = typing.get_args(field.annotation) if field is not None else ()
    return values[0] if values else None


def _position(positions: dict, path: tuple) -> tuple[int | None, int | None]:
    path = tuple(path)
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get((), (None, None))


def _format_path(path: tuple) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _message(problem: dict, model: type[BaseModel] | None = None, loc: tuple = ()) -> str:
    """Pydantic's messages, reworded where they would confuse a YAML author; an unknown
    setting gets a "did you mean" and the keys its block allows (`model` holds `loc`)."""
    kind, message = problem["type"], problem["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, tuple(loc[:-1])) if model is not None else None
        if not allowed:
            return ("unknown setting (check the spelling; `integrity checks KIND` and "
                    "docs/reference.md list every setting)")
        key = str(loc[-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown setting {key!r}{hint} (allowed here: {', '.join(allowed)})"
    if kind == "missing":
        return "required setting is missing"
    if kind == "literal_error":
        return message.replace("Input should be", "must be")
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    if message.startswith("Assertion failed, "):
        return message[len("Assertion failed, "):]
    return message[0].lower() + message[1:]


# ---------------------------------------------------------------------------
# ${ENV} interpolation.

_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, path: tuple, environ: dict[str, str], error,
                 interpolated: set[tuple], later: list[str] | None = None) -> Any:
    """`value` with ${VARIABLE}s replaced; an unset one is an error — or, when `later` is a
    list, kept as written and its name added there (read at run time)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, path + (key,), environ, error, interpolated, later)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, path + (index,), environ, error, interpolated, later)
                for index, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    interpolated.add(path)

    def replace(match: re.Match) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if default is not None:
            return default
        if later is not None:
            later.append(name)
            return match.group(0)
        error(path, f"environment variable {name} is not set "
                    f"(export it, or write ${{{name}:-default}})")
        return ""

    return _VARIABLE.sub(replace, value)


def from_environment(text: Any) -> bool:
    """Whether `text`, as written in the file, takes a ${VARIABLE} (`$${` is none)."""
    return isinstance(text, str) and any(match.group(0) != "$${"
                                         for match in _VARIABLE.finditer(text))
