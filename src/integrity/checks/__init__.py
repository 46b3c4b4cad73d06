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
from typing import TYPE_CHECKING, Any, Callable, ClassVar

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


@dataclass
class Increment:
    """What an incremental run of one check examines in its dataset: the rows whose change
    column is at least `since` (the last run's watermark minus the overlap) or null, and
    the rows of `keys` (every key that violated in run `run_id`, as history keeps them:
    text). `since` is a UTC time, or a number for a number column."""

    dataset: str
    column: str
    since: datetime | float
    keys: list[list[str | None]]
    run_id: int
    # A row's key value as history wrote it (results.plain; given by the runner, which
    # sits above results): the pandas engine finds last run's keys by it.
    as_recorded: Callable[[Any], Any] = str
    # The last run's watermark of the dataset as recorded, with what checks added to it
    # (`Check.watermark_extras`).
    recorded: dict | None = None

    @property
    def numeric(self) -> bool:
        return not isinstance(self.since, datetime)

    def describe(self) -> str:
        since = self.since.isoformat().replace("+00:00", "Z") if not self.numeric \
            else str(self.since)  # an id of ten digits, not 1.23457e+09
        return (f"{self.column} ≥ {since} or null, and the {len(self.keys):,} "
                f"key{'s' if len(self.keys) != 1 else ''} that violated in run {self.run_id}")


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
        # Set by the runner when this run may examine only what changed (`incremental:`);
        # a check reading several datasets finds each one's in `increments`.
        self.increment: Increment | None = None
        self.increments: dict[str, Increment] = {}

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

    # -- incremental runs ------------------------------------------------------------

    def incremental_problem(self, dataset: str) -> str | None:
        """Why this check runs in full although `dataset` is incremental (None: it has an
        exact incremental rule, written in its family's docstring, and may use it)."""
        return f"{self.kind} has no incremental rule"

    def row_local_problem(self, dataset: str) -> str | None:
        """The incremental rule of a check that judges each row of its dataset on its own:
        re-check the changed rows and last run's violating keys, and every other row keeps
        its last status — unless the filter lets a row in as time passes (`until:`)."""
        if dataset != getattr(self.config, "dataset", None) or len(self.datasets) != 1:
            return f"{self.kind} reads more than {dataset}"
        timed = [c for c in self.config.where if c.op == "until"]
        if timed:
            return (f"its filter on {timed[0].column} (until) lets unchanged rows in as "
                    f"time passes")
        return None

    def needs_every_increment(self) -> bool:
        """Whether this check's incremental rule needs every dataset it reads to be
        incremental (else it runs in full)."""
        return False

    def watermark_extras(self, db: Tables, dataset: str, since: Increment) -> dict:
        """What this check's next incremental run needs recorded with `dataset`'s
        watermark, read in this run's snapshot; `since` is where the next run will start
        (this watermark minus the overlap). None by default."""
        return {}

    def watermark_after(self, dataset: str) -> dict:
        """What this check, once measured in this run's snapshot, records with `dataset`'s
        watermark for its next incremental run (a count its measurement made anyway).
        None by default."""
        return {}

    def incremental_start_problem(self, db: Tables, dataset: str) -> str | None:
        """Why, seen in this run's snapshot, this check cannot start from
        `self.increments[dataset]` (None: it can)."""
        return None

    def examined(self, db: Tables, relation, increment: Increment | None = None) -> Any:
        """SQL: the condition on `relation` (the check's dataset) of the rows an
        incremental run examines; true in a full run. The keys bind as values of their
        column's type (history keeps them as text)."""
        import sqlalchemy as sa

        increment = increment or self.increment
        if increment is None:
            return sa.true()
        changed = changed_since(db, relation, increment)
        names = self.key_of(increment.dataset)
        values = [typed_key(db.columns[increment.dataset].get(name), key[index])
                  for key in increment.keys for index, name in enumerate(names)]
        rows = [tuple(values[start:start + len(names)])
                for start in range(0, len(values), len(names))]
        rows = [row for row in rows if _NOT_A_KEY not in row]
        if not rows:
            return changed
        if len(names) == 1:
            return sa.or_(changed, relation.c[names[0]].in_([row[0] for row in rows]))
        return sa.or_(changed, sa.tuple_(*[relation.c[name] for name in names]).in_(rows))

    def examined_rows(self, data: Frames, rows: pd.DataFrame,
                      increment: Increment | None = None) -> pd.Series:
        """pandas: which of `rows` (of the check's dataset) an incremental run examines;
        every row in a full run."""
        import pandas as pd

        increment = increment or self.increment
        if increment is None:
            return pd.Series(True, index=rows.index)
        changed = changed_rows(data, rows, increment)
        wanted = {tuple(key) for key in increment.keys}
        names = self.key_of(increment.dataset)
        if not wanted:
            return changed
        recorded = increment.as_recorded
        texts = [tuple(None if recorded(value) is None else str(recorded(value))
                       for value in row)
                 for row in rows[names].itertuples(index=False, name=None)]
        violated = pd.Series([text in wanted for text in texts], index=rows.index, dtype=bool)
        return changed | violated

    def incremental_note(self, examined: int, population: int | None) -> str:
        """What an incremental run examined, for the report."""
        increment = self.increment
        whole = "" if population is None else f" of {population:,}"
        return (f"incremental: examined {examined:,} changed row{'s' if examined != 1 else ''}"
                f"{whole} ({increment.describe()}); counts and keys are the whole "
                f"table's, every other row keeps its status of run {increment.run_id}")

    def missing_column(self, dataset: str, column: str, present) -> str:
        """The error when a column this check reads is not in the dataset."""
        from integrity.sources import describe_missing

        return describe_missing(dataset, self.audit.datasets[dataset], column, present)

    @property
    def datasets(self) -> list[str]:
        return list(self.columns())


_NOT_A_KEY = object()  # a key from history that no value of the column can equal
# More keys than this within the overlap: the next run runs in full rather than bind them all.
MOST_UNSETTLED = 10_000


def settled_problem(db: Tables, increment: Increment, field: str, alias: str, things: str,
                    too_many: str, why: str) -> str | None:
    """Why a rule that remembers the keys within the overlap must run in full: the last run
    did not count the rows older than it (which no watermark shows again), had more than
    MOST_UNSETTLED keys within it, or counted another number of old rows than there are
    now — one was deleted or changed since. `things` names the rows (plural), `too_many`
    what there were too many of, `why` what such a change hides."""
    dataset = increment.dataset
    recorded, run = increment.recorded or {}, f"run {increment.run_id}"
    unsettled = recorded.get("unsettled", {})
    if "settled" not in recorded or field not in unsettled:
        return f"{run} recorded no count of {dataset}'s {things} older than the overlap"
    if unsettled[field] is None:
        return f"more than {MOST_UNSETTLED:,} {too_many} within the overlap in {run}"
    settled = older_count(db, increment, alias)
    if settled != recorded["settled"]:
        return (f"{dataset} holds {settled:,} {things if settled != 1 else things[:-1]} "
                f"older than the overlap where {run} counted {recorded['settled']:,}: one "
                f"was deleted or changed since, and {why}")
    return None


# Changed parents (or entities to judge again) up to this many: their keys are read first,
# by the change column's index, and bound as a list, so every part of the rows to judge
# again is an index lookup. A correlated subquery in an OR would have the database test
# every row of the table; past this many keys a scan costs about the same anyway.
MOST_BOUND = 100_000
# SQLite takes at most 32,766 values bound to one statement, and a key of several
# columns binds each: there, and for keys of several columns, fewer.
MOST_BOUND_VALUES = 20_000


# Values bound to one statement off PostgreSQL, every list of keys together: SQLite binds
# at most 32,766 by default (the filters bind a few more).
MOST_BOUND_STATEMENT = 30_000


def too_many_bound(db: Tables, *lists: tuple[int, int]) -> bool:
    """Whether lists of keys, each (how many keys, values per key), bind more values than
    one statement takes off PostgreSQL (where a list of one column binds as one array)."""
    return db.dialect != "postgresql" and sum(
        count * width for count, width in lists) > MOST_BOUND_STATEMENT


def bound_keys(db: Tables, statement) -> list[tuple] | None:
    """The distinct rows of `statement` (a key's columns, nulls left out by the caller) as
    values to bind, or None when there are more than can be bound (`MOST_BOUND` keys; on
    PostgreSQL a one-column key binds one array, elsewhere each value is a parameter)."""
    width = len(statement.selected_columns)
    most = MOST_BOUND if db.dialect == "postgresql" and width == 1 else min(
        MOST_BOUND, MOST_BOUND_VALUES // width)
    found = db.rows(statement.distinct().limit(most + 1))
    if len(found) > most or (len(found) > MOST_BOUND_VALUES // width
                             and _array_of([row[0] for row in found]) is None):
        return None
    return found


def _array_of(values: list) -> Any:
    """The type of a PostgreSQL array binding `values` (keys as the driver read them), or
    None when they are of no one kind it binds as is."""
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import ARRAY, UUID

    kinds = {type(value) for value in values if value is not None}
    if kinds == {str}:
        return ARRAY(sa.Text())
    if kinds == {int}:
        return ARRAY(sa.BigInteger())
    if kinds == {uuid.UUID}:
        return ARRAY(UUID(as_uuid=True))
    return None


def bindable(db: Tables, *sides: tuple[str, str]) -> bool:
    """Whether values read from one (dataset, column) side may be bound as they are to
    compare with the others: all text or all integers. Otherwise `Tables.same` compares
    them as the pandas engine aligns them, which a bound list would not."""
    import sqlalchemy as sa

    kinds = [db.columns.get(dataset, {}).get(column) for dataset, column in sides]
    return (all(db.is_text(dataset, column) for dataset, column in sides)
            or all(isinstance(kind, sa.Integer) for kind in kinds))


def in_keys(db: Tables, columns: list, rows: list[tuple]) -> Any:
    """SQL: `columns` (one or several) among `rows` of values. On PostgreSQL one column's
    values bind as one array (`= ANY`): a statement binds at most 65,535 parameters."""
    import sqlalchemy as sa

    values = [row[0] for row in rows]
    kind = _array_of(values) if len(columns) == 1 and db.dialect == "postgresql" else None
    if kind is not None:
        array = sa.bindparam(None, values, type_=kind)
        own = db.reflected(columns[0])
        if isinstance(kind.item_type, sa.Text) and own is not None and not (
                isinstance(own, (sa.String, sa.Text))
                and not isinstance(own, (sa.CHAR, sa.Enum))):
            # Text keys compared with a column of another type (uuid, an enum, blank-padded
            # char(n)): as values of its type, as a list of values would bind — a uuid or
            # an enum has no = text, and char(n) as text drops the padding the keys were
            # read with.
            from sqlalchemy.dialects.postgresql import ARRAY

            array = sa.cast(array, ARRAY(own))
        return columns[0] == sa.any_(array)
    if len(columns) == 1:
        return columns[0].in_([row[0] for row in rows])
    return sa.tuple_(*columns).in_(rows)


def older_count(db: Tables, increment: Increment, alias: str) -> int:
    """The rows of the increment's dataset older than `increment.since`, counted once a
    run however many checks keep the count: the table's rows less those changed since,
    which the change column's index finds — one count of the table serves this run's
    start, the next run's and every population over the whole table."""
    relation = db.alias(increment.dataset, alias)
    return db.total(increment.dataset) - db.count(
        increment.dataset, relation, changed_since(db, relation, increment),
        same_as=("changed since", increment.column, increment.since))


def created_column(audit: Audit, increment: Increment) -> str | None:
    """The increment's dataset's `created` column, when its rows' insert can be told from
    their changes (with a time change column)."""
    setting = audit.datasets[increment.dataset].incremental
    return setting.created if setting and not increment.numeric else None


def inserted_and_changed(db: Tables, relation, increment: Increment, created: str) -> Any:
    """SQL: the rows of `relation` inserted (by `created`) and changed since
    `increment.since` — the few not *born* before it. A born row was inserted before (or
    has no creation time) or last changed before: an update leaves it born, and only a
    delete or an insert dated in the past changes which rows are."""
    import sqlalchemy as sa

    dataset = increment.dataset
    if db.typed_time(dataset, created):
        recent = relation.c[created] >= db.time_literal(dataset, created, increment.since)
    else:  # a text time, or none: born
        recent = db.time_at_least(dataset, relation, created, increment.since)
        recent = sa.case((recent, 1), else_=0) == 1
    return sa.and_(recent, changed_since(db, relation, increment))


def born_rows(data: Frames, rows: pd.DataFrame, increment: Increment,
              created: str) -> pd.Series:
    """pandas: which of `rows` were born before `increment.since` (`inserted_and_changed`
    says which were not)."""
    import pandas as pd

    times = data.time_column(increment.dataset, rows, created)
    recent = (times >= pd.Timestamp(increment.since)).fillna(False).astype(bool)
    return ~(recent & changed_rows(data, rows, increment))


def born(db: Tables, increment: Increment, created: str, alias: str,
         values: Callable[[Any], list], what: tuple) -> dict:
    """How many rows of the increment's dataset were born before `increment.since`
    (`inserted_and_changed`), and a checksum of their `values(relation)` (a parent's key,
    a reconciliation's bucket): an update keeps both, a delete or a changed value does
    not. The whole table's count and checksum, read once a run, less those of the few rows
    inserted and changed since; `what` names the values, for the memo."""
    import sqlalchemy as sa

    dataset = increment.dataset
    relation = db.alias(dataset, alias)
    summed = [sa.func.count(), db.key_checksum(values(relation))]

    def read() -> dict:
        whole = db.once(("key checksum", dataset, *what),
                        lambda: db.rows(sa.select(*summed))[0])
        part = db.rows(sa.select(*summed).where(
            inserted_and_changed(db, relation, increment, created)))[0]
        checksum = int(whole[1] or 0) - int(part[1] or 0)  # a SQLite sum of none: null
        if db.dialect == "sqlite":  # its checksum is a sum modulo 2**64
            checksum %= 2 ** 64
        return {"created": created, "count": int(whole[0]) - int(part[0]),
                "checksum": str(checksum)}

    return db.once(("rows born", dataset, created, increment.since, *what), read)


def born_problem(increment: Increment, created: str, field: str, things: str, changed: str,
                 now: Callable[[], dict]) -> str | None:
    """Why a rule that keeps count of the rows born before the overlap (`born`) must run in
    full: the last run recorded no count, had more than MOST_UNSETTLED keys within the
    overlap, or one row more or less was born since, or holds other values. `things` names
    such values ("other keys"), `changed` the change that gives them ("given another key");
    `now()` counts in this run."""
    dataset, run = increment.dataset, f"run {increment.run_id}"
    recorded = increment.recorded or {}
    before = recorded.get("born", {}).get(field)
    unsettled = recorded.get("unsettled", {})
    if before is None or before.get("created") != created or field not in unsettled:
        return f"{run} recorded no count of {dataset}'s rows inserted before the overlap"
    if unsettled[field] is None:
        return f"more than {MOST_UNSETTLED:,} {dataset} rows were within the overlap in {run}"
    counted = now()
    if counted["count"] > before["count"]:
        # More, not fewer: an insert with an earlier creation time (a backfill), which a
        # count cannot tell from one alongside a delete.
        return (f"{dataset} holds {counted['count']:,} rows with {created} before the "
                f"overlap where {run} counted {before['count']:,}: one was inserted since "
                f"with an earlier {created}, and a count cannot tell whether another was "
                f"deleted or {changed}, which leaves nothing a watermark sees")
    if (counted["count"], counted["checksum"]) != (before["count"], before["checksum"]):
        return (f"{dataset} holds {counted['count']:,} rows with {created} before the "
                f"overlap where {run} counted {before['count']:,}, or {things}: one was "
                f"deleted or {changed} since, which leaves nothing a watermark sees")
    return None


def changed_since(db: Tables, relation, increment: Increment) -> Any:
    """SQL: the rows of `relation` whose change column is at least `increment.since`, or
    null (the keys of `increment` aside)."""
    import sqlalchemy as sa

    column = relation.c[increment.column]
    if increment.numeric:
        return sa.or_(column >= increment.since, column.is_(None))
    if db.typed_time(increment.dataset, increment.column):
        return sa.or_(column >= db.time_literal(increment.dataset, increment.column,
                                                increment.since), column.is_(None))
    # text or SQLite times: a value that is no time is examined too
    older = db.time_before(increment.dataset, relation, increment.column, increment.since)
    return sa.case((older, 0), else_=1) == 1


def changed_rows(data: Frames, rows: pd.DataFrame, increment: Increment) -> pd.Series:
    """pandas: `changed_since` on a frame of the increment's dataset."""
    import pandas as pd

    if increment.numeric:
        values = pd.to_numeric(rows[increment.column], errors="coerce")
        return ~(values < increment.since)
    times = data.time_column(increment.dataset, rows, increment.column)
    return ~(times < pd.Timestamp(increment.since))


def typed_key(kind: Any, text: str | None) -> Any:
    """A key value kept as text by history, as a value of its column's type: a number
    column's `17` binds as 17 (PostgreSQL compares no integer with text)."""
    import sqlalchemy as sa

    if text is None:
        return _NOT_A_KEY  # a null key part matches no row
    if isinstance(kind, sa.Integer):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)  # `17.0`: an id read through a column with nulls
        except ValueError:
            return _NOT_A_KEY
        return int(number) if number.is_integer() else _NOT_A_KEY
    if isinstance(kind, (sa.Numeric, sa.Float)):
        try:
            return float(text)
        except ValueError:
            return _NOT_A_KEY
    return text


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
