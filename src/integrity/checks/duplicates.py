"""Duplicates: "no duplicate leads" (seed 003) and double clicks (seed 000).

`duplicates` — rows sharing a (compound) key after normalisation: `email`
(trimmed, lower-case), `phone` (E.164, parsed with `default_region` for
national numbers), `lower`, `trim`, `digits`. Rows with a null (or empty)
key part are not compared, as in SQL. The violation count is the number of
*surplus* rows, Σ(group size − 1): a group of three is two violations. The
sample shows whole groups: each row carries `duplicate_group`, and
`duplicate_role` says which row is kept (the first by `keep_first_by`, then by
key) and which are surplus.

Incrementally (a dataset with `incremental:`): the normalised keys of the rows
changed since the last run's watermark (minus the overlap) and of the rows that
violated in the last run are looked up against the whole table, and exactly the
groups of those keys are formed again. Any other group holds only unchanged
rows that were no surplus last time, so it is still no duplicate (a hard
delete only shrinks a group; a group that held a violation is looked up by
it). The lookup reads every row's key: cheap through an index on the plain key
columns; a normalised key has none and is a scan. The population is counted
over the whole table.

`duplicate_events` — the same (entity, channel, recipient …) within a time
window: rows equal on `by`, cut into bursts (each at most `window` after the
previous); in a burst every row after the first is surplus.
Incrementally: the `by` values of the rows changed since the last run's
watermark (minus the overlap) and of the rows that were surplus in the last
run name the partitions (rows equal on `by`) that are read whole and cut into
bursts again; so an event whose twin came before the watermark (a double
click straddling it) is found with it. Any other partition holds no changed
row and held no surplus row: its rows were each the first of a burst, and
with rows only removed since (a hard delete, or an update moving a row to
another partition, which is examined there) each one's predecessor is as far
back or farther, so it still opens a burst: no violation, as before. A bound
on the event time (the watermark minus the window) would not be exact: a
burst chains, and a changed row's time need not be recent (a backdated
event, or an update). The lookup is cheap through an index on the `by`
columns. The population is counted over the whole table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Columns, Duration, as_list
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import format_duration
from integrity.values import normalise_one

Normaliser = Literal["trim", "lower", "email", "phone", "digits"]


class DuplicatesConfig(CheckConfig):
    kind: Literal["duplicates"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset whose rows are compared. Required.")
    columns: Columns = Field(description=(
        "The key: the column, or columns together, no two rows may share, e.g. "
        "`[tenantId, email]`. A row with a null or empty key part is not compared. "
        "Required."))
    normalize: dict[str, Annotated[list[Normaliser], BeforeValidator(as_list)]] = Field(
        {}, description=(
            "Per key column, what is done to a value before comparing — one step or a list, "
            "applied in order: `trim` strips spaces, tabs and line breaks at both ends; "
            "`lower` lower-cases; `email` is `trim` then `lower`, nothing more (plus-tags and "
            "dots stay: `a+x@example.com` and `a@example.com` differ); `digits` keeps only "
            "0-9; `phone` reads the number as E.164 (`+447700900123`) with libphonenumber, "
            "using `default_region` for national numbers, and keeps the digits (and a "
            "leading `+`) of one it cannot read; in SQL it runs only on SQLite (elsewhere: "
            "`engine: pandas` or `auto`). A value left empty is no key. "
            "Default: none (values compared as stored)."))
    default_region: str | None = Field(None, description=(
        "The country assumed by `phone` for numbers written without `+country`, as a "
        "two-letter code: `GB`, `US`. Default: not set (such numbers keep their digits)."))
    keep_first_by: str | None = Field(None, description=(
        "The column whose smallest value marks the `kept` row of a group, e.g. `createdAt` "
        "(nulls last); ties go by the dataset's key. Default: not set (by the key)."))


class Duplicates(Check):
    """Rows sharing a (normalised) key."""

    kind = "duplicates"
    Config = DuplicatesConfig
    config: DuplicatesConfig

    @classmethod
    def validate(cls, config, audit):
        problems = []
        for column in config.normalize:
            if column not in config.columns:
                problems.append((("normalize", column),
                                 f"{column!r} is not one of the key columns {config.columns}"))
        if config.default_region is not None:
            import phonenumbers

            if config.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                problems.append((("default_region",),
                                 f"unknown region {config.default_region!r} "
                                 f"(use a two-letter country code such as US or GB)"))
        return problems

    def incremental_problem(self, dataset: str) -> str | None:
        return self.row_local_problem(dataset)

    def lookup_note(self, examined: int, groups: int, population: int) -> str:
        normalised = any(self.config.normalize.get(column) for column in self.config.columns)
        how = ("a scan: no index holds a normalised key" if normalised else
               "an index on the key columns makes it cheap")
        return (self.incremental_note(examined, population)
                + ("; its 1 key was" if groups == 1 else f"; their {groups:,} keys were")
                + f" looked up against the whole table ({how})")

    def sql_problems(self, dialect: str) -> list[str]:
        problems = super().sql_problems(dialect)
        phones = [c for c, steps in self.config.normalize.items() if "phone" in steps]
        if phones and dialect != "sqlite":
            problems.append(f"normalize: {phones[0]}: phone (E.164 parsing) cannot run inside "
                            f"{dialect}")
        return problems

    def columns(self):
        config = self.config
        return {config.dataset: self.identity(config.dataset, *config.columns,
                                              config.keep_first_by,
                                              *filter_columns(config.where))}

    def measure(self, data) -> Measurement:
        import numpy as np

        config = self.config
        rows = data.rows(config.dataset, config.where)
        keys = {column: normalise(rows[column], config.normalize.get(column, []),
                                  config.default_region) for column in config.columns}
        key_columns = [f"_key_{index}" for index in range(len(config.columns))]
        order = list(dict.fromkeys([*([config.keep_first_by] if config.keep_first_by else []),
                                    *(self.audit.datasets[config.dataset].key or [])]))
        shown = self.identity(config.dataset, *config.columns)
        # Only the columns shown or ordered by, and only rows in groups of two or more,
        # go on to the sort: the frame may hold every other check's columns too.
        work = rows[list(dict.fromkeys(shown + order))].assign(
            **dict(zip(key_columns, keys.values())))
        work = work[work[key_columns].notna().all(axis=1)]
        notes = []
        if self.increment:
            import pandas as pd

            examined = work[self.examined_rows(data, rows).loc[work.index]]
            wanted = pd.MultiIndex.from_frame(examined[key_columns]).unique()
            work = work[pd.MultiIndex.from_frame(work[key_columns]).isin(wanted)]
            notes.append(self.lookup_note(len(examined), len(wanted), len(rows)))
        sizes = work.groupby(key_columns, sort=False)[key_columns[0]].transform("size")
        work = work[sizes > 1]
        if order:
            work = work.sort_values(order, kind="stable", na_position="last")
        if work.empty:
            violations = work[shown].assign(duplicate_group=[], duplicate_role=[])
            return Measurement(violations=violations, violation_count=0, population=len(rows),
                               keys=self.key_or(shown), group_column="duplicate_group",
                               context_column="duplicate_role", notes=notes)
        groups = work.groupby(key_columns, sort=True)
        rank = groups.cumcount()
        label = work[key_columns[0]].astype(str)
        for column in key_columns[1:]:
            label = label + " | " + work[column].astype(str)
        violations = work[shown].assign(
            duplicate_group=groups.ngroup() + 1,
            duplicate_role=np.where(rank == 0, "kept", "surplus"),
            duplicate_key=label)
        violations = violations.assign(_rank=rank).sort_values(
            ["duplicate_group", "_rank"], kind="stable").drop(columns="_rank")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int((rank > 0).sum()), population=len(rows),
                           keys=self.key_or(shown), group_column="duplicate_group",
                           context_column="duplicate_role", notes=notes)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        rows = db.alias(config.dataset, "rows")
        scope = db.where(config.dataset, rows, config.where)
        shown = self.identity(config.dataset, *config.columns)
        dataset_key = list(self.audit.datasets[config.dataset].key or [])
        carried = list(dict.fromkeys(shown + dataset_key +
                                     ([config.keep_first_by] if config.keep_first_by else [])))
        ordering = [*([config.keep_first_by] if config.keep_first_by else []), *dataset_key]
        # The sort that serves both windows (group size and rank) spills to disk on large
        # tables, so its rows stay narrow: a key or ordering term that is a carried column
        # as it is reuses that column instead of adding a copy.
        extra: list[sa.ColumnElement] = []

        def term(expression: sa.ColumnElement, column: str, name: str) -> str:
            if expression is rows.c[column] and column in carried:
                return column
            extra.append(expression.label(name))
            return name

        def key_parts(relation) -> list[sa.ColumnElement]:
            return [db.normalise(as_compared(db, config.dataset, relation, column),
                                 config.normalize.get(column, []), config.default_region)
                    for column in config.columns]

        key_names = [term(part, column, f"_key_{index}") for index, (part, column)
                     in enumerate(zip(key_parts(rows), config.columns))]
        order_names = [term(db.key(config.dataset, rows, column), column, f"_order_{index}")
                       for index, column in enumerate(ordering)]
        keyed = sa.select(*[rows.c[column] for column in carried], *extra).where(scope)
        lookups = None
        if self.increment:
            # The groups of the examined rows' keys, looked up against the whole table (a
            # second alias: the lookup must not correlate with the rows it selects).
            changed = db.alias(config.dataset, "changed")
            parts = key_parts(changed)
            looked_up = sa.and_(db.where(config.dataset, changed, config.where),
                                self.examined(db, changed), *[p.is_not(None) for p in parts])
            lookups = sa.select(*parts).where(looked_up).distinct().subquery("lookups")
            mine = key_parts(rows)
            keyed = keyed.where((mine[0] if len(mine) == 1 else sa.tuple_(*mine))
                                .in_(sa.select(*lookups.c)))
        keyed = keyed.subquery("keyed")
        parts = [keyed.c[name] for name in key_names]
        order = [piece for name, column in zip(order_names, ordering)
                 for piece in db.nulls_last(keyed.c[name], config.dataset, column)]
        # A row belongs to a duplicate group when it is not first of its key or has a
        # successor: rank and successor share one window, where a group count would need a
        # second pass that holds each partition.
        window = {"partition_by": parts, "order_by": order or parts}
        sized = (sa.select(keyed,
                           sa.func.row_number().over(**window).label("_rank"),
                           sa.func.lead(sa.literal_column("1")).over(**window).label("_next"))
                 .where(*[part.is_not(None) for part in parts],
                        # '' is no key either (normalisers already turn it into NULL)
                        *[as_text(db, config.dataset, part, column) != ""
                          for part, column in zip(parts, config.columns)
                          if not config.normalize.get(column)
                          and db.is_text(config.dataset, column)])
                 .subquery("sized"))
        members = (sa.select(sized).where(sa.or_(sized.c._rank > 1, sized.c._next.is_not(None)))
                   .subquery("members"))
        groups = [members.c[name] for name in key_names]
        ranked = sa.select(
            members, sa.func.dense_rank().over(order_by=groups).label("duplicate_group"),
        ).subquery("ranked")
        label = groups_text(db, [ranked.c[name] for name in key_names])
        statement = (sa.select(*[ranked.c[column] for column in shown],
                               ranked.c.duplicate_group,
                               sa.case((ranked.c._rank == 1, "kept"), else_="surplus")
                               .label("duplicate_role"),
                               label.label("duplicate_key"))
                     .order_by(ranked.c.duplicate_group, ranked.c._rank))
        violations = db.frame(statement)
        population = db.count(config.dataset, rows, scope, same_as=config.where)
        notes = []
        if lookups is not None:
            groups = int(db.scalar(sa.select(sa.func.count()).select_from(lookups)))
            notes.append(self.lookup_note(db.count(config.dataset, changed, looked_up), groups,
                                          population))
        return Measurement(violations=violations,
                           violation_count=int((violations["duplicate_role"] == "surplus").sum())
                           if len(violations) else 0,
                           population=population,
                           keys=self.key_or(shown), group_column="duplicate_group",
                           context_column="duplicate_role", sql=db.sql(statement), notes=notes)

    def key_or(self, shown: list[str]) -> list[str]:
        return list(self.audit.datasets[self.config.dataset].key or shown)

    def describe(self) -> str:
        config = self.config
        parts = []
        for column in config.columns:
            steps = config.normalize.get(column)
            parts.append(f"{column} ({', '.join(steps)})" if steps else column)
        scope = f" among rows where {describe_filter(config.where)}" if config.where else ""
        return (f"No two {config.dataset} rows may share ({', '.join(parts)}){scope}; "
                f"every row of a group after the first is one violation.")


class DuplicateEventsConfig(CheckConfig):
    kind: Literal["duplicate_events"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset of events. Required.")
    by: Columns = Field(description=(
        "The columns repeated events share, e.g. `[quoteId, channel, recipient]`; rows "
        "with a null in any of them are left out. Required."))
    time: str = Field(description=(
        "The event time column; rows without a time are left out. Required."))
    window: Duration = Field(timedelta(minutes=5), description=(
        "Equal rows at most this far apart (each from the previous) form one burst; every "
        "row of a burst after the first is a violation. Default 5m."))


class DuplicateEvents(Check):
    """The same thing twice within seconds (double clicks)."""

    kind = "duplicate_events"
    Config = DuplicateEventsConfig
    config: DuplicateEventsConfig

    def incremental_problem(self, dataset: str) -> str | None:
        return self.row_local_problem(dataset)

    def lookup_note(self, examined: int, partitions: int, population: int) -> str:
        which = ("its 1 partition", "was") if partitions == 1 else (
            f"their {partitions:,} partitions", "were")
        return (self.incremental_note(examined, population)
                + f"; {which[0]} ({', '.join(self.config.by)}) {which[1]} read whole and cut "
                  f"into bursts again (an index on those columns makes it cheap)")

    def columns(self):
        config = self.config
        return {config.dataset: self.identity(config.dataset, *config.by, config.time,
                                              *filter_columns(config.where))}

    def measure(self, data) -> Measurement:
        from integrity.checks.common import bursts

        config = self.config
        rows = data.rows(config.dataset, config.where)
        rows = rows[rows[config.by].notna().all(axis=1)]
        population = len(rows)
        notes = []
        if self.increment:
            examined = self.examined_rows(data, rows)
            rows, partitions = same_partitions(rows, examined, list(config.by))
            notes.append(self.lookup_note(int(examined.sum()), partitions, population))
        order = list(self.audit.datasets[config.dataset].key or [])
        grouped = bursts(rows, data.time_column(config.dataset, rows, config.time), config.by,
                         config.window, order=order)
        repeated = grouped[grouped["_burst_size"] > 1]
        shown = self.identity(config.dataset, *config.by, config.time)
        violations = repeated[shown].assign(
            duplicate_group=repeated["_burst"].rank(method="dense").astype("int64"),
            duplicate_role=(repeated["_burst_rank"] > 1).map({True: "surplus", False: "kept"}),
            seconds_after_first=(repeated["_time"] - repeated["_burst_first"]).dt.total_seconds())
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int((repeated["_burst_rank"] > 1).sum()),
                           population=population, keys=list(order or shown),
                           group_column="duplicate_group", context_column="duplicate_role",
                           notes=notes)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        from integrity.pushdown import burst_starts

        config = self.config
        rows = db.alias(config.dataset, "rows")
        order = list(self.audit.datasets[config.dataset].key or [])
        shown = self.identity(config.dataset, *config.by, config.time)
        carried = list(dict.fromkeys(shown + order))
        axis = db.axis((config.dataset, config.time))
        moment = axis.of(config.dataset, rows, config.time)
        scope = sa.and_(db.where(config.dataset, rows, config.where),
                        *[rows.c[column].is_not(None) for column in config.by])
        by = [f"_by_{index}" for index in range(len(config.by))]
        ties = [f"_tie_{index}" for index in range(len(order))]
        events = (sa.select(*[rows.c[column] for column in carried], moment.label("_moment"),
                            *[db.key(config.dataset, rows, column).label(name)
                              for name, column in zip(by, config.by)],
                            *[db.key(config.dataset, rows, column).label(name)
                              for name, column in zip(ties, order)])
                  .where(scope, moment.is_not(None)))
        lookups = None
        if self.increment:
            # The partitions of the examined rows, read whole (a second alias: the lookup
            # must not correlate with the rows it selects).
            changed = db.alias(config.dataset, "changed")
            looked_up = sa.and_(db.where(config.dataset, changed, config.where),
                                *[changed.c[column].is_not(None) for column in config.by],
                                self.examined(db, changed))
            lookups = (sa.select(*[db.key(config.dataset, changed, column)
                                   for column in config.by])
                       .where(looked_up).distinct().subquery("lookups"))
            mine = [db.key(config.dataset, rows, column) for column in config.by]
            events = events.where((mine[0] if len(mine) == 1 else sa.tuple_(*mine))
                                  .in_(sa.select(*lookups.c)))
        timed = events.subquery("timed")
        window = config.window.total_seconds()

        def marked(source, name):
            return sa.select(source, burst_starts(source.c._moment, [source.c[c] for c in by],
                                                  [source.c[c] for c in ties], axis, window)
                             .label("_opens")).subquery(name)

        # One pass (what a hand-written query would do) finds the partitions holding an
        # event that repeats the previous one within the window; only their rows are
        # read again, through the index on the partition columns where there is one.
        everything = marked(timed, "marked")
        flagged = (sa.select(*[everything.c[c] for c in by]).where(everything.c._opens == 0)
                   .distinct().subquery("flagged"))
        again = (events
                 .where(sa.tuple_(*[db.key(config.dataset, rows, column) for column in config.by])
                        .in_(sa.select(*[flagged.c[c] for c in by])))
                 .subquery("again"))
        detail = marked(again, "detail")
        sequence = [detail.c._moment, *[detail.c[c] for c in ties]]
        numbered = sa.select(detail, sa.func.sum(detail.c._opens).over(
            partition_by=[detail.c[c] for c in by], order_by=sequence, rows=(None, 0))
            .label("_burst")).subquery("numbered")
        burst = [*[numbered.c[c] for c in by], numbered.c._burst]
        sequence = [numbered.c._moment, *[numbered.c[c] for c in ties]]
        sized = sa.select(
            numbered,
            sa.func.count().over(partition_by=burst).label("_size"),
            sa.func.row_number().over(partition_by=burst, order_by=sequence).label("_rank"),
            sa.func.min(numbered.c._moment).over(partition_by=burst).label("_first"),
        ).subquery("sized")
        group_order = [*[sized.c[c] for c in by], sized.c._burst]
        repeated = sa.select(sized, sa.func.dense_rank().over(order_by=group_order)
                             .label("duplicate_group")).where(sized.c._size > 1).subquery("rep")
        statement = (sa.select(*[repeated.c[column] for column in shown],
                               repeated.c.duplicate_group,
                               sa.case((repeated.c._rank > 1, "surplus"), else_="kept")
                               .label("duplicate_role"),
                               (axis.epoch(config.dataset, repeated.c._moment, config.time)
                                - axis.epoch(config.dataset, repeated.c._first, config.time))
                               .label("_after"))
                     .order_by(repeated.c.duplicate_group, repeated.c._rank))
        violations = db.frame(statement)
        violations["seconds_after_first"] = (violations.pop("_after").astype("float64")
                                             / db.units)
        surplus = int((violations["duplicate_role"] == "surplus").sum()) if len(violations) else 0
        population = db.count(config.dataset, rows, scope,
                              same_as=(config.where, "not null", tuple(config.by)))
        notes = []
        if lookups is not None:
            partitions = int(db.scalar(sa.select(sa.func.count()).select_from(lookups)))
            notes.append(self.lookup_note(db.count(config.dataset, changed, looked_up),
                                          partitions, population))
        return Measurement(violations=violations, violation_count=surplus,
                           population=population,
                           keys=list(order or shown), group_column="duplicate_group",
                           context_column="duplicate_role", sql=db.sql(statement), notes=notes)

    def describe(self) -> str:
        config = self.config
        scope = f" (rows where {describe_filter(config.where)})" if config.where else ""
        return (f"{config.dataset} rows equal on ({', '.join(config.by)}){scope} and at most "
                f"{format_duration(config.window)} apart by {config.time} form a burst; "
                f"every row of a burst after the first is one violation.")


def same_partitions(rows, examined, columns: list[str]):
    """pandas: the rows equal on `columns` to an `examined` row (a boolean Series over
    `rows`), and how many such partitions there are."""
    import pandas as pd

    wanted = pd.MultiIndex.from_frame(rows.loc[examined, columns]).unique()
    return rows[pd.MultiIndex.from_frame(rows[columns]).isin(wanted)], len(wanted)


def as_compared(db, dataset: str, relation, column: str):
    """A key column as the pandas engine compares it: PostgreSQL json (which has no
    equality operator) and jsonb by their text, which is what the pandas engine reads."""
    import sqlalchemy as sa

    if db.dialect == "postgresql" and isinstance(db.columns[dataset].get(column), sa.JSON):
        return sa.cast(relation.c[column], sa.Text)
    return relation.c[column]


def as_text(db, dataset: str, part, column: str):
    """A key part that may hold text, to compare with ''. PostgreSQL refuses to compare an
    enum, or a column of a query (whose type the check does not know: a number, a date …),
    with text; their text it compares."""
    import sqlalchemy as sa

    kind = db.columns[dataset].get(column)
    if db.dialect == "postgresql" and (kind is None or isinstance(kind, sa.Enum)):
        return sa.cast(part, sa.Text)
    return part


def groups_text(db, parts):
    """'a | b' from the normalised key parts, as the pandas engine labels a group."""
    import sqlalchemy as sa

    label = sa.cast(parts[0], sa.String)
    for part in parts[1:]:
        label = sa.func.concat(label, " | ", sa.cast(part, sa.String)) if db.dialect in {
            "mysql", "mariadb"} else label + " | " + sa.cast(part, sa.String)
    return label


# ---------------------------------------------------------------------------
# Normalisation.


def normalise(values, steps: list[str], region: str | None):
    """Apply normalisation steps to a column; empty results become null."""
    import pandas as pd

    if not steps:
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            return values.where(values.isna() | (values != ""), None)  # '' is no key either
        return values
    # Normalise each distinct value once: phone parsing is slow and keys repeat.
    mapping = {value: normalise_one(value, steps, region) for value in values.dropna().unique()}
    return values.map(mapping).astype("object").where(values.notna(), None)
