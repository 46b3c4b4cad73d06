"""The check catalog: one module per family, registered by subclassing `Check`.

A check is declared once: a config model (parsed from YAML, no database
needed), the columns it reads, and how it measures violations. Defining a
subclass with a `kind` is the registration; `CHECKS` maps kinds to classes.

A check returns a `Measurement`: the violating rows (keys, tenant, the values
that make them wrong), how many violations there are, and the population they
were measured on. It does not decide pass or fail: `results` does, from the
check's severity or thresholds, so every family is judged the same way.

Check modules import pandas inside functions only: the registry is imported
by `integrity validate`, which must not pay for pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from integrity.config import Audit, CheckConfig

if TYPE_CHECKING:
    import pandas as pd

    from integrity.pushdown import Tables
    from integrity.sources import Frames

CHECKS: dict[str, type[Check]] = {}


@dataclass
class Measurement:
    """What a check found.

    `violations` holds the rows to show, one per violation unless
    `context_column` marks some rows as context (e.g. the kept row of a
    duplicate group, shown beside its surplus copies but not counted).
    `keys` names the columns that identify a violation (history, tests);
    `group_column` keeps whole groups together when rows are sampled.
    Checks that judge a value themselves (metrics, freshness) set `level`.
    """

    violations: pd.DataFrame
    violation_count: int
    population: int | None
    keys: list[str]
    group_column: str | None = None
    context_column: str | None = None
    level: str | None = None
    judged: bool = False
    value: float | None = None
    value_text: str | None = None
    sql: str | None = None
    notes: list[str] = field(default_factory=list)
    # A check that yields several results (one per expectation of a suite) labels each
    # and may give it its own description, severity, or the error that stopped it.
    label: str | None = None
    description: str | None = None
    severity: str | None = None
    error: str | None = None
    # Per-group values of a metric, kept in the run history for baselines, and the groups
    # whose value breached a bound (later baselines leave those values out).
    values: dict[str, float | None] = field(default_factory=dict)
    breached_groups: set[str] = field(default_factory=set)
    # The [start, end) a windowed metric measured (UTC), as both engines compared it.
    interval: tuple[datetime, datetime] | None = None


class Check:
    """Base class of every check family."""

    kind: ClassVar[str]
    Config: ClassVar[type[CheckConfig]]
    # False for a check that touches no database (an HTTP probe): the runner runs it
    # before the database session opens, with no connection.
    reads_database: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            if kind in CHECKS:
                raise TypeError(f"check kind {kind!r} is defined twice")
            CHECKS[kind] = cls

    def __init__(self, config: CheckConfig, audit: Audit):
        self.config = config
        self.audit = audit

    @property
    def id(self) -> str:
        return self.config.id

    # -- validation (no database) ------------------------------------------

    @classmethod
    def validate(cls, config: CheckConfig, audit: Audit | Any) -> list[tuple[tuple, str]]:
        """Cross-field problems as (path inside the check, message); none by default.
        `audit.written` is the check as written in the file, before ${VARIABLES}."""
        return []

    # -- what it reads ---------------------------------------------------------

    def columns(self) -> dict[str, list[str]]:
        """Columns read per dataset (key and tenant columns included where known)."""
        raise NotImplementedError

    def identity(self, dataset: str, *extra: str | None) -> list[str]:
        """A dataset's key and tenant columns followed by `extra`, without repeats."""
        definition = self.audit.datasets[dataset]
        names = [*(definition.key or []), definition.tenant_column, *extra]
        return list(dict.fromkeys(name for name in names if name))

    def tenant_column(self) -> str | None:
        """The tenant column of the violations this check reports, if any."""
        own = getattr(self.config, "tenant_column", None)
        datasets = list(self.columns())
        return own or (self.tenant_of(datasets[0]) if datasets else None)

    def key_of(self, dataset: str) -> list[str]:
        key = self.audit.datasets[dataset].key
        if not key:
            raise ValueError(f"dataset {dataset!r} needs a `key:` for check {self.id!r}")
        return list(key)

    def tenant_of(self, dataset: str) -> str | None:
        return self.audit.datasets[dataset].tenant_column

    # -- measuring ---------------------------------------------------------------

    def measure(self, data: Frames) -> Measurement | list[Measurement]:
        """The pandas engine: measure on dataframes pulled from the database."""
        raise NotImplementedError

    def measure_sql(self, db: Tables) -> Measurement | list[Measurement]:
        """The SQL engine: the database computes the violations; only they come back."""
        raise NotImplementedError

    def sql_problems(self, dialect: str) -> list[str]:
        """Why this check cannot run on the SQL engine of `dialect` (empty: it can)."""
        from integrity.pushdown import engine_problems

        return [problem for dataset in self.columns()
                for problem in engine_problems(dialect, self.audit, dataset)]

    def describe(self) -> str:
        """One paragraph saying exactly what counts as a violation."""
        return self.config.description or self.kind

    def missing_column(self, dataset: str, column: str, present) -> str:
        """The error when a column this check reads is not in the dataset."""
        from integrity.sources import describe_missing

        return describe_missing(dataset, self.audit.datasets[dataset], column, present)

    @property
    def datasets(self) -> list[str]:
        return list(self.columns())


def add_columns(needed: dict[str, list[str]], dataset: str,
                *columns: str | None) -> dict[str, list[str]]:
    """Add columns of `dataset` to a `Check.columns()` mapping, without repeats."""
    wanted = [*needed.get(dataset, []), *(column for column in columns if column)]
    needed[dataset] = list(dict.fromkeys(wanted))
    return needed


def single_key_problems(audit: Audit | Any, dataset: str) -> list[tuple[tuple, str]]:
    """A check that joins events to an entity needs the entity's one-column key."""
    definition = audit.datasets.get(dataset)
    if definition is not None and (not definition.key or len(definition.key) != 1):
        return [(("dataset",), f"dataset {dataset!r} needs a single-column `key:` "
                               f"(the entity id its events refer to)")]
    return []


# Importing the families registers them. Keep this list in catalog order.
from integrity.checks import (  # noqa: E402,F401
    counters,
    timestamps,
    duplicates,
    orphans,
    tenancy,
    security,
    reconciliation,
    metrics,
    freshness,
    health,
    custom_sql,
    expectations,
    http,
)
