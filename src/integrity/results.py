"""Results: one model for every check, and the rule that turns a measurement into a status.

Statuses, from best to worst: `pass`, `info` (violations of an informational
check), `warn`, `fail`, `error` (the check could not run). A check with
`thresholds` is judged on its violation count or rate (critical first, then
warn); without, any violation takes the check's severity. Metrics and
freshness judge their own value and arrive with a level.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from integrity.checks import Check, Measurement
    from integrity.config import CheckConfig

STATUSES = ("pass", "info", "warn", "fail", "error")
STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
LEVEL_STATUS = {None: "pass", "info": "info", "warning": "warn", "critical": "fail"}


@dataclass
class CheckResult:
    id: str
    kind: str
    datasets: list[str]
    description: str     # the audit file's `description:` (why), then the exact rule (what)
    severity: str
    status: str
    path: str = ""
    purpose: str | None = None  # the audit file's `description:` alone, for alerts
    violation_count: int | None = None
    population: int | None = None
    rate: float | None = None
    value: float | None = None
    value_text: str | None = None
    sql: str | None = None
    thresholds: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    duration_ms: float = 0.0
    columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    sample_truncated: bool = False
    sample_violations: int = 0  # violations among the sample rows (context rows not counted)
    key_columns: list[str] = field(default_factory=list)
    violation_keys: list[tuple] = field(default_factory=list)
    group_column: str | None = None
    context_column: str | None = None
    engine: str | None = None
    tenant_column: str | None = None
    tenant_counts: dict[str, int] = field(default_factory=dict)
    group_values: dict[str, float | None] = field(default_factory=dict)
    breached_groups: set[str] = field(default_factory=set)  # of group_values, for history
    interval: tuple[datetime, datetime] | None = None  # [start, end) a metric measured, UTC
    # Filled from the run history (see history.History.apply).
    lifecycle: Any = None
    tracked: dict = field(default_factory=dict, repr=False)
    trend: list[tuple] = field(default_factory=list)
    status_before_acceptance: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in {"warn", "fail"}


def judge(config: CheckConfig, measurement: Measurement, rate: float | None) -> str:
    if measurement.error is not None:
        return "error"
    if measurement.judged:
        return LEVEL_STATUS[measurement.level]
    count = measurement.violation_count
    if config.thresholds is not None:
        for level, bound in (("critical", config.thresholds.critical),
                             ("warning", config.thresholds.warn)):
            if bound is None:
                continue
            observed = count if bound.measure == "count" else rate
            if bound.breached(observed):
                return LEVEL_STATUS[level]
        return "pass"
    return "pass" if count == 0 else LEVEL_STATUS[measurement.severity or config.severity]


def thresholds_text(config: CheckConfig) -> dict[str, str]:
    bounds = getattr(config, "thresholds", None)
    if bounds is None:
        return {}
    return {name: str(getattr(bounds, name)) for name in ("warn", "critical")
            if getattr(bounds, name, None) is not None}


def measured(check: Check, measurement: Measurement, duration_ms: float, sample_limit: int,
             path: str, mask: set[str] | frozenset[str] = frozenset()) -> CheckResult:
    """The result of a check that ran. Columns in `mask` are masked in the sample."""
    config = check.config
    count, population = measurement.violation_count, measurement.population
    notes = list(measurement.notes)
    if population:
        rate = count / population
    elif population == 0:
        rate = 0.0
        if not measurement.judged:
            notes.append("empty population: nothing to check")
    else:
        rate = None
    frame = measurement.violations
    sample, truncated = take_sample(frame, sample_limit, measurement.group_column,
                                    measurement.context_column)
    label = f"{config.id}:{measurement.label}" if measurement.label else config.id
    tenant = check.tenant_column()
    return CheckResult(
        id=label, kind=config.kind, datasets=check.datasets, path=path,
        description=_with_purpose(config, measurement.description or check.describe()),
        purpose=config.description,
        severity=measurement.severity or config.severity,
        status=judge(config, measurement, rate), error=measurement.error,
        violation_count=count, population=population, rate=rate,
        value=measurement.value, value_text=measurement.value_text, sql=measurement.sql,
        thresholds=thresholds_text(config), notes=notes, duration_ms=duration_ms,
        columns=[str(column) for column in frame.columns],
        sample=masked(records(sample, _zone(check)), mask), sample_truncated=truncated,
        sample_violations=len(sample) if not measurement.context_column
        or measurement.context_column not in sample
        else int((sample[measurement.context_column] != "kept").sum()),
        key_columns=list(measurement.keys),
        violation_keys=violation_keys(frame, measurement),
        group_column=measurement.group_column, context_column=measurement.context_column,
        tenant_column=tenant if tenant in frame else None,
        tenant_counts=tenant_counts(frame, tenant, measurement.context_column),
        group_values=dict(measurement.values), interval=measurement.interval,
        breached_groups=set(measurement.breached_groups),
    )


def _zone(check: Check) -> str:
    """The time zone naive times of the check's rows are read in: its datasets' one (UTC
    when they differ — each check compares in UTC anyway)."""
    zones = {check.audit.datasets[name].timezone for name in check.datasets
             if name in check.audit.datasets}
    return zones.pop() if len(zones) == 1 else "UTC"


def tenant_counts(frame: pd.DataFrame, tenant: str | None, context: str | None
                  ) -> dict[str, int]:
    """Violations per tenant, most first (context rows excluded)."""
    if not tenant or tenant not in frame or frame.empty:
        return {}
    rows = frame[frame[context] != "kept"] if context and context in frame else frame
    counts: dict[str, int] = {}
    for value, count in rows[tenant].value_counts(dropna=False, sort=False).items():
        name = "(none)" if plain(value) is None else str(plain(value))
        counts[name] = counts.get(name, 0) + int(count)  # 7 and 7.0 are one tenant
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def mask_value(value: Any) -> Any:
    """Keep enough to recognise a value, not to use it: a•••@example.com, +44•••••23."""
    if value is None:
        return None
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}•••@{domain}"
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6:
        return f"{text[:3]}•••••{text[-2:]}"
    return f"{text[:1]}•••" if text else text


def masked(rows: list[dict[str, Any]], columns: set[str] | frozenset[str]
           ) -> list[dict[str, Any]]:
    if not columns:
        return rows
    # duplicate_key is derived from the key columns: masked whenever one of them is.
    derived = {"duplicate_key"} if any(name in columns for row in rows[:1] for name in row) \
        else set()
    return [{name: mask_value(value) if name in columns or name in derived else value
             for name, value in row.items()} for row in rows]


def _with_purpose(config: CheckConfig, rule: str) -> str:
    """The check's own `description:` (why it exists, in the team's words) before the
    exact rule it applies — each once."""
    purpose = (config.description or "").strip()
    if not purpose or purpose in rule:
        return rule
    return f"{purpose} — {rule}"


def errored(config: CheckConfig, datasets: list[str], message: str, path: str,
            description: str = "", duration_ms: float = 0.0) -> CheckResult:
    """The result of a check that could not run: never a pass."""
    return CheckResult(id=config.id, kind=config.kind, datasets=datasets, path=path,
                       description=_with_purpose(config, description or config.kind),
                       purpose=config.description,
                       severity=config.severity, status="error", error=message,
                       thresholds=thresholds_text(config), duration_ms=duration_ms)


def take_sample(frame: pd.DataFrame, limit: int, group_column: str | None,
                context_column: str | None = None) -> tuple[pd.DataFrame, bool]:
    """The rows of the first `limit` violations (0 = all), whole groups when the check
    groups rows. Context rows (a duplicate group's `kept` row) come with their group but
    do not count: `sample_limit: 50` shows 50 violations, not 25 pairs."""
    import pandas as pd

    if context_column and context_column in frame:
        counted = frame[context_column] != "kept"
    else:
        counted = pd.Series(True, index=frame.index)  # every row is a violation
    if limit == 0 or int(counted.sum()) <= limit:
        return frame, False
    if group_column and group_column in frame:
        groups = frame[group_column]
        per_group = counted.groupby(groups, sort=False).sum()
        before = per_group.cumsum() - per_group  # violations in the groups before each one
        # A group that straddles the limit is kept whole: half a group misleads.
        kept = frame[groups.isin(before[before < limit].index)]
    else:
        kept = frame[counted.cumsum().shift(fill_value=0) < limit]
    return kept, len(kept) < len(frame)


def violation_keys(frame: pd.DataFrame, measurement: Measurement) -> list[tuple]:
    """Key tuples of every violating row (context rows excluded), in frame order."""
    if frame.empty:
        return []
    rows = frame
    if measurement.context_column and measurement.context_column in frame:
        rows = frame[frame[measurement.context_column] != "kept"]
    columns = [column for column in measurement.keys if column in rows]
    if not columns:
        return []
    return [tuple(plain(value) for value in row)
            for row in rows[columns].itertuples(index=False, name=None)]


def records(frame: pd.DataFrame, zone: str = "UTC") -> list[dict[str, Any]]:
    """Sample rows as JSON values, one format whatever the database returned: instants as
    ISO 8601 UTC with `Z` — a naive time (a `timestamp` column, or text such as SQLite
    keeps) read in the dataset's time zone `zone`, as the checks read it. Text that is not
    a date and time is kept as written (an `unparseable` value must show as it is)."""
    return [{str(column): _instant(plain(value), zone) for column, value
             in zip(frame.columns, row)} for row in frame.itertuples(index=False, name=None)]


def _instant(value: Any, zone: str) -> Any:
    if not isinstance(value, str) or len(value) < 16 or not _DATE_AND_TIME.match(value):
        return value
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def plain(value: Any) -> Any:
    """A JSON-safe Python value: timestamps as ISO 8601 (UTC 'Z'), NaN/NaT as None."""
    if value is None or (isinstance(value, datetime) and value != value):  # NaT is a datetime
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return value
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
            return value.isoformat(timespec="auto") + "Z"
        return value.isoformat()  # naive: `records` reads it in the dataset's zone
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, (list, dict, tuple)) and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp):
            return plain(value.to_pydatetime())
        if isinstance(value, pd.Timedelta):
            return value.total_seconds()
    except (TypeError, ValueError):
        pass
    return str(value)


# A date with a time (of the ISO forms units.ISO_TIME reads): a date alone stays a date.
_DATE_AND_TIME = re.compile(r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")


@dataclass
class DatasetLoad:
    name: str
    rows: int
    columns: list[str]
    seconds: float
    sql: str = ""


@dataclass
class Watermark:
    """How far a run read an incremental dataset: the largest value of its change column
    in the snapshot the run read ({"time": ISO} or {"number": text}; None: no rows)."""

    dataset: str
    column: str
    value: dict | None
    read_in_full: bool = True


@dataclass
class AuditResult:
    audit_name: str
    audit_file: str
    config_hash: str
    engine: str
    database: str
    dialect: str | None
    started_at: datetime
    finished_at: datetime
    now: datetime
    checks: list[CheckResult]
    fail_on: str
    sample_limit: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the run, not a check's finding
    # The audited database as history keys it: the audit's `target:`, else the server's
    # identity (identity.target_name); runs of different targets are never compared.
    target: str = ""
    datasets: list[DatasetLoad] = field(default_factory=list)
    run_id: int | None = None
    history: str | None = None
    notifications: list = field(default_factory=list)
    # During a post-deploy watch (watch.py): the rollback criteria this run met, one line
    # each, and what changed since the deploy.
    rollback: list[str] = field(default_factory=list)
    watch: dict[str, Any] | None = None
    watermarks: list[Watermark] = field(default_factory=list)  # incremental datasets

    @property
    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for check in self.checks:
            counts[check.status] += 1
        return counts

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def check(self, check_id: str) -> CheckResult:
        for check in self.checks:
            if check.id == check_id:
                return check
        raise KeyError(check_id)
