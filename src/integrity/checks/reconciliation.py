"""Reconciliation: an aggregate on one side must match the other, per key (seeds 000, 003).

"Lead count matches webhook events", "quota tracking accurate", "Σ counters vs
send log". Each side aggregates its dataset (`count`, `sum(col)`,
`count_distinct(col)`, `p95(col)`, …) grouped by its `by` columns and, with `per_day`, by
the UTC calendar day of a time column. Sides are matched by position of their
keys (left `by: [tenantId]` meets right `by: [companyId]`); a key present on
one side only meets 0. A key is a violation when |left − right| exceeds the
tolerance: `tolerance: 2` (absolute), `"1%"` (of the larger side), or both
`{absolute: 2, relative: 1%}` (the larger allowance wins).

Incrementally, a *bucket* is one key of the comparison (the `by` values, and the
UTC day of `per_day`): its answer depends on the rows in it on both sides and
nothing else. A run re-aggregates, over **all** their rows on both sides (so a
sum or a percentile stays exact), exactly the buckets touched since the last run:
those holding a row (in or out of its side's filter) changed since its dataset's
watermark minus the overlap, those holding a row within the overlap when the last
run read either dataset (recorded with the watermark: such a row may since have
been deleted or moved to another bucket without a trace), and those that violated
in the last run. Every other bucket holds the same rows as then, when it did not
violate. Both datasets must declare `incremental:` (else the check runs in full,
saying so), and so it does when a filter bounds a time relative to `now`
(`since: 7d`, `until: 1h`: unchanged rows enter or leave a bucket as time passes)
or when there is no key (one bucket, which every change touches). A **hard
delete**, or an update moving a row to another bucket, of a row older than the
overlap leaves nothing a watermark sees: each run records how many rows of each
dataset are older than where the next run starts, and when the next run counts
another number it runs in full, saying so (any change to such a row does too: a
count cannot tell it from a move). With `created:` on a dataset (a column set
once, at insert) a row is *old* when it was born before where the run starts —
inserted before, or last changed before — and each run records instead the count
and a checksum (`Tables.key_checksum`) of the old rows' buckets and whether each
side's filter takes them: an old row updated within its bucket leaves both as they
were, and touches its bucket; only a delete, a move to another bucket or out of the
side's filter (a soft delete) runs the check in full. More than 10,000 buckets
within the overlap run the next time in full. The population (buckets on either side, over the
whole table) is not counted again: each run records how many buckets hold a row
of either side older than where the next run starts — those rows are all still
there, unchanged, or the run is a full one — and the next run adds the touched
buckets that hold none.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from integrity.checks import (MOST_UNSETTLED, _NOT_A_KEY, Check, Measurement, add_columns,
                              born, born_problem, born_rows, changed_rows, changed_since,
                              created_column, inserted_and_changed, older_count,
                              settled_problem, typed_key)
from integrity.config import AggregateField, CheckConfig, Model, Where, parse_aggregate
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import parse_fraction


# Buckets of several parts (`by` and `per_day`) to see again by their keys, at most: the
# database tests such a list one key at a time on every row of both sides (a list of one
# part is hashed). At scale 10, 1,000 of them made the check ten times slower than in full.
MOST_LISTED_BUCKETS = 50


class Side(Model):
    dataset: str = Field(description="The dataset this side aggregates. Required.")
    measure: AggregateField = Field(parse_aggregate("count"), description=(
        "The aggregate: `count` (rows), `count(col)` (non-null values), "
        "`count_distinct(col)`, `sum(col)`, `avg(col)`, `min(col)`, `max(col)`, a percentile "
        "(`p50(col)` or `median(col)`, `p90`, `p95`, `p99`, `percentile(col, 0.9)`: see "
        "`metric`), or `{measure: count, where: {...}}` with a filter of its own. Default "
        "`count`."))
    by: list[str] = Field([], description=(
        "The key columns to group by, e.g. `[tenantId]`; matched by position to the other "
        "side's. Default: none (one total)."))
    per_day: str | None = Field(None, description=(
        "A time column: group by its UTC calendar day too (after the `by` columns). "
        "Default: not set."))
    where: Where = Field((), description="A filter on this side's rows. Default: every row.")
    name: str | None = Field(None, description=(
        "This side's label in reports. Default: the dataset's name."))

    @property
    def key_count(self) -> int:
        return len(self.by) + (1 if self.per_day else 0)

    def describe(self) -> str:
        keys = [*self.by, *([f"day({self.per_day})"] if self.per_day else [])]
        text = f"{self.measure} of {self.dataset}"
        if keys:
            text += f" by {', '.join(keys)}"
        if self.where:
            text += f" where {describe_filter(self.where)}"
        return text


class Tolerance(Model):
    absolute: float = Field(0.0, description=(
        "The difference allowed per key, as a number. Default 0."))
    relative: float = Field(0.0, description=(
        "The difference allowed per key, as a fraction of the larger side: `1%` or 0.01. "
        "Default 0."))

    def allowance(self, left, right):
        import numpy as np

        return np.maximum(self.absolute, self.relative * np.maximum(abs(left), abs(right)))

    def __str__(self) -> str:
        parts = []
        if self.absolute:
            parts.append(f"{self.absolute:g}")
        if self.relative:
            parts.append(f"{self.relative * 100:g}%")
        return " or ".join(parts) or "0"


def parse_tolerance(value: Any) -> Any:
    if isinstance(value, (Tolerance, dict)):
        if isinstance(value, dict) and "relative" in value:
            value = {**value, "relative": parse_fraction(value["relative"])}
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        return {"relative": parse_fraction(value)}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"absolute": float(value)}
    raise ValueError(f"invalid tolerance {value!r}: use a number (absolute), '1%' (relative) "
                     f"or {{absolute: 2, relative: 1%}}")


class ReconciliationConfig(CheckConfig):
    kind: Literal["reconciliation"] = Field(description="Selects this check.")
    left: Side = Field(description="One side: an aggregate of a dataset per key. Required.")
    right: Side = Field(description=(
        "The other side, with as many keys as `left` (`by` columns, plus `per_day`). "
        "Required."))
    tolerance: Annotated[Tolerance, BeforeValidator(parse_tolerance)] = Field(
        Tolerance(), description=(
            "How far apart the sides may be per key: `2` (absolute), `\"1%\"` (of the larger "
            "side) or `{absolute: 2, relative: 1%}` (the larger allowance wins). Default 0: "
            "the sides must be equal."))

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys([self.left.dataset, self.right.dataset]))


class Reconciliation(Check):
    """An aggregate on each side, per key, within a tolerance."""

    kind = "reconciliation"
    Config = ReconciliationConfig
    config: ReconciliationConfig

    def __init__(self, config, audit):
        super().__init__(config, audit)
        # Where the next run will start in each dataset, as the runner gives it: the
        # population's count needs both sides' (`watermark_extras`).
        self.ahead: dict = {}

    @classmethod
    def validate(cls, config, audit):
        problems = []
        if config.where:
            problems.append((("where",), "a reconciliation filters each side: use left.where "
                                         "and right.where"))
        if config.left.key_count != config.right.key_count:
            problems.append((("right", "by"), f"left has {config.left.key_count} key(s), right "
                                              f"has {config.right.key_count}; they are matched "
                                              f"by position"))
        return problems

    def names(self) -> tuple[str, str]:
        left, right = self.config.left, self.config.right
        left_name = left.name or left.dataset
        right_name = right.name or right.dataset
        if left_name == right_name:
            return f"left {left_name}", f"right {right_name}"
        return left_name, right_name

    def key_names(self) -> list[str]:
        left = self.config.left
        return [*left.by, *(["day"] if left.per_day else [])]

    def columns(self):
        needed: dict[str, list[str]] = {}
        for side in (self.config.left, self.config.right):
            add_columns(needed, side.dataset, *side.by, side.per_day, *side.measure.columns,
                        *filter_columns(side.where))
        return needed

    def side_values(self, data, side: Side, rows=None):
        import pandas as pd

        from integrity.checks.common import aggregate, day_of

        rows = data.rows(side.dataset, side.where) if rows is None else rows
        keys = list(side.by)
        if side.per_day:
            rows = rows.assign(_day=day_of(data.time_column(side.dataset, rows, side.per_day)))
            keys.append("_day")
        values = aggregate(data, side.dataset, rows, side.measure, keys)
        if not keys:
            return pd.Series([values if values is not None else 0.0],
                             index=pd.Index(["all rows"]))
        return values

    def measure(self, data) -> Measurement:
        import pandas as pd

        from integrity.checks.common import align

        left_name, right_name = self.names()
        sides = (self.config.left, self.config.right)
        rows = [data.rows(side.dataset, side.where) for side in sides]
        notes, population = [], None
        if self.increments:
            rows, examined, population = self.touched_rows(data, rows)
            notes.append(self.bucket_note(examined, population))
        elif self.counts_buckets():
            self.next_buckets = len(set().union(*[
                {bucket for bucket, old in zip(self.bucket_texts(data, index, rows[index]),
                                               self.old_rows(data, index, rows[index])) if old}
                for index in range(2)]))
        left = self.side_values(data, self.config.left, rows[0])
        right = self.side_values(data, self.config.right, rows[1])
        names = self.key_names() or ["scope"]
        left_keys, right_keys = _keys(left.index, names), _keys(right.index, names)
        for name in names:
            left_keys[name], right_keys[name] = align(left_keys[name], right_keys[name])
        # A union of both sides summed per key (as the SQL engine does) rather than an
        # outer merge: a key on one side only meets 0, and empty sides need no special case.
        both = pd.concat([left_keys.assign(**{left_name: left.to_numpy(dtype="float64"),
                                              right_name: 0.0}),
                          right_keys.assign(**{left_name: 0.0,
                                               right_name: right.to_numpy(dtype="float64")})],
                         ignore_index=True)
        table = both.groupby(names, dropna=False, sort=False, as_index=False)[
            [left_name, right_name]].sum()
        outcome = self.compare(table)
        if population is not None:
            outcome.population = population
        outcome.notes = notes
        return outcome

    def compare(self, table) -> Measurement:
        """Flag the keys of a (keys…, left, right) table whose sides differ too much."""
        left_name, right_name = self.names()
        names = self.key_names() or ["scope"]
        table[[left_name, right_name]] = table[[left_name, right_name]].astype(
            "float64").fillna(0.0)
        difference = table[left_name] - table[right_name]
        allowance = self.config.tolerance.allowance(table[left_name], table[right_name])
        flagged = difference.abs() > allowance
        violations = table[flagged].assign(difference=difference[flagged])
        for column in (left_name, right_name, "difference"):
            if (violations[column] % 1 == 0).all():
                violations[column] = violations[column].astype("int64")
        violations = violations.sort_values(names, kind="stable", na_position="first")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int(flagged.sum()), population=len(table),
                           keys=names)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        left_name, right_name = self.names()
        names = self.key_names() or ["scope"]
        counting = self.counts_buckets()
        sides = []
        for index, (alias, side) in enumerate((("left_side", config.left),
                                               ("right_side", config.right))):
            rows = db.alias(side.dataset, alias)
            sides.append((side, rows, [key for key, _ in self.bucket(db, index, rows)]))
        parts = []
        for index, (side, rows, keys) in enumerate(sides):
            keys = [key.label(f"k{i}") for i, key in enumerate(keys)]
            everything = [] if keys else [("k0", sa.literal("all rows"))]
            value, zero = side.measure, sa.literal(0)
            scope = db.where(side.dataset, rows, side.where)
            # Incrementally: only the touched buckets, each with all its rows, and whether
            # it holds a row older than the overlap (the population's arithmetic).
            settled = []
            if self.increments:
                # Asked only of the rows the filter takes, as the full run buckets only
                # them (the database may test conditions in any order, and a text day it
                # cannot read would stop the check).
                scope = sa.and_(scope, sa.case((scope, self.touched(db, index, rows)),
                                               else_=sa.false()))
                settled = [("s", sa.func.max(sa.case(
                    (self.not_old(db, rows, self.increments[side.dataset]), 0), else_=1)))]
            if counting:  # and whether it will hold one older than where the next run starts
                settled.append(("n", sa.func.max(sa.case(
                    (self.not_old(db, rows, self.ahead[side.dataset]), 0), else_=1))))
            parts.append(db.grouped(side.dataset, rows, scope, keys,
                                    [*everything, ("l", value if index == 0 else zero),
                                     ("r", zero if index == 0 else value), *settled]))
        both = sa.union_all(*parts).subquery("both")
        keys = [both.c[f"k{i}"] for i in range(len(names))]
        settled = [sa.func.max(both.c.s).label("s")] if self.increments else []
        if counting:
            settled.append(sa.func.max(both.c.n).label("n"))
        summed = sa.select(*keys, sa.func.sum(both.c.l).label("l"),
                           sa.func.sum(both.c.r).label("r"), *settled).group_by(*keys
                                                                                ).subquery("summed")
        # Compare in the database; bring back the differing keys, the key count (the
        # population), and one row even when nothing differs, to carry that count.
        left_value = sa.func.coalesce(summed.c.l, 0)
        right_value = sa.func.coalesce(summed.c.r, 0)
        tolerance = config.tolerance
        larger = db.greatest(sa.func.abs(left_value), sa.func.abs(right_value))
        allowance = db.greatest(sa.literal(float(tolerance.absolute)),
                                float(tolerance.relative) * larger)
        flagged = sa.func.abs(left_value - right_value) > allowance
        # The touched buckets that hold no row older than the overlap: new since the last
        # run, they add to the buckets it counted.
        unsettled = [sa.func.sum(sa.case((summed.c.s == 0, 1), else_=0)).over().label("_new")
                     ] if self.increments else []
        # The buckets the next run will count as holding an old row: those that do now,
        # and the touched ones that will and did not (counting on the last run's count).
        if counting:
            entering = summed.c.n == 1 if not self.increments else sa.and_(summed.c.n == 1,
                                                                           summed.c.s == 0)
            unsettled.append(sa.func.sum(sa.case((entering, 1), else_=0)).over().label("_next"))
        judged = sa.select(*[summed.c[f"k{i}"] for i in range(len(names))], summed.c.l,
                           summed.c.r, flagged.label("_flag"),
                           sa.func.count().over().label("_keys"), *unsettled,
                           sa.func.row_number().over().label("_row")).subquery("judged")
        statement = sa.select(*[judged.c[f"k{i}"] for i in range(len(names))], judged.c.l,
                              judged.c.r, judged.c._flag, judged.c._keys,
                              *([judged.c._new] if self.increments else []),
                              *([judged.c._next] if counting else [])).where(
            sa.or_(judged.c._flag, judged.c._row == 1))
        table = db.frame(statement)
        population = int(table["_keys"].iloc[0]) if len(table) else 0

        def first(column: str) -> int:  # a count carried by every row; none: no bucket
            values = table.pop(column)
            return int(values.iloc[0] or 0) if len(values) else 0

        if counting:
            entered = first("_next")
            self.next_buckets = entered + (self.settled_buckets() if self.increments else 0)
            if self.went_back():
                self.next_buckets = None
        notes = []
        if self.increments:
            examined = population
            population = self.settled_buckets() + first("_new")
            notes.append(self.bucket_note(examined, population))
        table = table[table.pop("_flag").astype(bool)].drop(columns="_keys")
        table.columns = [*names, left_name, right_name]
        if config.left.per_day:
            table["day"] = [None if day is None or day != day else
                            day if isinstance(day, str) else day.isoformat()[:10]
                            for day in table["day"]]
        outcome = self.compare(table)
        outcome.population = population
        outcome.sql = db.sql(statement)
        outcome.notes = notes
        return outcome

    # -- incremental runs (module docstring) ------------------------------------------

    def needs_every_increment(self) -> bool:
        return True

    def incremental_problem(self, dataset: str) -> str | None:
        if not self.key_names():
            return "it has one bucket (no `by` nor `per_day`): every change touches it"
        for side in (self.config.left, self.config.right):
            for condition in (*side.where, *side.measure.where):
                if condition.op in {"since", "until"} and isinstance(condition.value,
                                                                     timedelta):
                    moves = "in" if condition.op == "until" else "out"
                    return (f"its filter on {condition.column} ({condition.op}) lets "
                            f"unchanged rows {moves} as time passes")
        return None

    def unsettled_field(self) -> str:
        return f"buckets of {self.id}"

    def bucket(self, db, index: int, relation) -> list[tuple]:
        """SQL: the bucket of a row of side `index` (0 left, 1 right; alias `relation`) as
        the sides are matched: per key, its expression and what a key kept as text binds
        as ("day", "text", or the column's type)."""
        sides = (self.config.left, self.config.right)
        raw = []
        for number, side in enumerate(sides):
            rows = relation if number == index else db.relation(side.dataset)
            keys = [(side.dataset, column, rows.c[column]) for column in side.by]
            if side.per_day:
                keys.append((None, None, db.day(side.dataset, rows, side.per_day)))
            raw.append(keys)
        found = []
        for pair in zip(*raw):
            text = db.holds_text(*pair)
            expression = db.comparable(*pair)[index]
            mine = pair[index]
            found.append((db.exact(expression) if text else expression,
                          "day" if mine[0] is None else "text" if text
                          else db.columns[mine[0]].get(mine[1])))
        return found

    def recorded_keys(self) -> list[tuple]:
        """The buckets (as text) of last run's violations and of its rows within the
        overlap, on both sides."""
        keys = {tuple(key) for increment in self.increments.values() for key in increment.keys}
        for increment in self.increments.values():
            keys |= {tuple(key) for key in
                     increment.recorded["unsettled"][self.unsettled_field()]}
        return sorted(keys, key=repr)

    def touched(self, db, index: int, relation):
        """SQL: whether a row of side `index` (alias `relation`) is in a touched bucket."""
        import sqlalchemy as sa

        mine = self.bucket(db, index, relation)
        expressions = [expression for expression, _ in mine]
        # The buckets of the rows changed on either side (found by the change columns'
        # indexes), as one uncorrelated subquery the database hashes once: a correlated
        # EXISTS would be run again for every row of the table. A bucket with a null part
        # (which `=` never matches, and the full run groups null with null) is matched
        # by the correlated form, tried only for a row whose own bucket has a null part.
        changed_buckets, with_nulls = [], []
        for number, side in enumerate((self.config.left, self.config.right)):
            changed = db.alias(side.dataset, f"changed_{number}_{index}")
            theirs = self.bucket(db, number, changed)
            since = changed_since(db, changed, self.increments[side.dataset])
            changed_buckets.append(sa.select(*[other.label(f"k{position}") for position,
                                               (other, _) in enumerate(theirs)]).where(since))
            with_nulls.append(sa.exists().where(
                since, *[sa.or_(ours == other, sa.and_(ours.is_(None), other.is_(None)))
                         for ours, (other, _) in zip(expressions, theirs)]))
        found = sa.union(*changed_buckets).subquery(f"changed_buckets_{index}")
        parts = [expressions[0].in_(sa.select(found.c.k0)) if len(expressions) == 1 else
                 sa.tuple_(*expressions).in_(sa.select(*found.c)),
                 sa.and_(sa.or_(*[expression.is_(None) for expression in expressions]),
                         sa.or_(*with_nulls))]
        complete, partial = [], []
        for key in self.recorded_keys():
            values = [_typed(db, kind, text) for (_, kind), text in zip(mine, key)]
            if _NOT_A_KEY in values:
                continue  # no row's key can be it: no bucket to see again
            if None in values:
                partial.append(sa.and_(*[expression.is_(None) if value is None
                                         else expression == value
                                         for (expression, _), value in zip(mine, values)]))
            else:
                complete.append(tuple(values))
        if complete and len(mine) == 1:
            parts.append(mine[0][0].in_([row[0] for row in complete]))
        elif complete:
            parts.append(sa.tuple_(*[expression for expression, _ in mine]).in_(complete))
        return sa.or_(*parts, *partial)

    def bucket_texts(self, data, index: int, rows) -> list[tuple]:
        """pandas: the bucket of each of `rows` (of side `index`) as comparable text: a
        number as a number whenever both sides' key columns hold numbers (as `align`)."""
        from integrity.checks.common import day_of

        sides = (self.config.left, self.config.right)
        side, columns = sides[index], []
        for position, column in enumerate(sides[index].by):
            numeric = all(_numeric(data.frame(other.dataset)[other.by[position]])
                          for other in sides)
            columns.append([_text(value, numeric) for value in rows[column]])
        if side.per_day:
            days = day_of(data.time_column(side.dataset, rows, side.per_day))
            columns.append([_text(value, False) for value in days])
        return list(zip(*columns)) if columns else [()] * len(rows)

    def touched_rows(self, data, rows: list) -> tuple[list, int, int]:
        """pandas: each side's `rows` in a touched bucket, how many buckets they fill, and
        the population."""
        import pandas as pd

        sides = (self.config.left, self.config.right)
        numeric = [all(_numeric(data.frame(side.dataset)[side.by[position]]) for side in sides)
                   for position in range(len(sides[0].by))] + [False] * bool(sides[0].per_day)
        touched = {tuple(_recorded(text, numeric[position])
                         for position, text in enumerate(key))
                   for key in self.recorded_keys()}
        for index, side in enumerate(sides):
            whole = data.frame(side.dataset)
            changed = whole[changed_rows(data, whole, self.increments[side.dataset]).to_numpy()]
            touched |= set(self.bucket_texts(data, index, changed))
        kept, present, settled, ahead = [], set(), set(), set()
        for index, side in enumerate(sides):
            buckets = self.bucket_texts(data, index, rows[index])
            inside = pd.Series([bucket in touched for bucket in buckets], index=rows[index].index,
                               dtype=bool)
            old = self.old(data, rows[index], self.increments[side.dataset])
            older = self.old_rows(data, index, rows[index]) if self.counts_buckets() \
                else [False] * len(buckets)
            for bucket, held, is_old, will_be in zip(buckets, inside, old, older):
                if held:
                    present.add(bucket)
                    if is_old:
                        settled.add(bucket)
                    if will_be:
                        ahead.add(bucket)
            kept.append(rows[index][inside.to_numpy()])
        if self.counts_buckets():
            self.next_buckets = None if self.went_back() else (
                self.settled_buckets() + len((present - settled) & ahead))
        return kept, len(present), self.settled_buckets() + len(present - settled)

    def counts_buckets(self) -> bool:
        """Whether this run records, for the next, how many buckets hold a row older than
        where it will start: every dataset's next start is known (`watermark_extras`)."""
        return bool(self.key_names()) and all(side.dataset in self.ahead
                                              for side in (self.config.left, self.config.right))

    def went_back(self) -> bool:
        """Whether the next run starts before this one in a dataset (its newest row was
        deleted, or its change time set back): a bucket counted as holding a row older
        than this run's start may hold none older than the next one's, so an incremental
        run cannot count the next run's buckets from the last run's. It records none, and
        the next run is a full one."""
        return any(self.ahead[name].since < increment.since
                   for name, increment in self.increments.items() if name in self.ahead)

    def old_rows(self, data, index: int, rows) -> list[bool]:
        """pandas: which of `rows` (of side `index`) are older than where the next run
        starts."""
        side = (self.config.left, self.config.right)[index]
        return list(self.old(data, rows, self.ahead[side.dataset]))

    def created(self, increment) -> str | None:
        return created_column(self.audit, increment)

    def not_old(self, db, relation, increment):
        """SQL: the rows of `relation` not older than `increment.since` — changed since,
        or with `created:`, inserted and changed since (an updated row stays old: it
        stays in its bucket, or the checksum of the buckets shows it moved)."""
        created = self.created(increment)
        if created is None:
            return changed_since(db, relation, increment)
        return inserted_and_changed(db, relation, increment, created)

    def old(self, data, rows, increment):
        """pandas: which of `rows` are older than `increment.since` (`not_old`)."""
        created = self.created(increment)
        if created is None:
            return ~changed_rows(data, rows, increment)
        return born_rows(data, rows, increment, created)

    def born(self, db, increment) -> dict:
        """How many rows of the increment's dataset were born before its start, and a
        checksum of whether each side's filter takes them and of their buckets there (on
        each side that reads the dataset): a born row soft-deleted out of its side leaves
        a bucket the last run counted, as surely as a delete."""
        import sqlalchemy as sa

        dataset = increment.dataset
        sides = [(index, side) for index, side in enumerate((self.config.left,
                                                             self.config.right))
                 if side.dataset == dataset]

        def values(rows) -> list:
            # A row the side's filter leaves out has no bucket there: its day is not even
            # computed (a text time PostgreSQL cannot read must not stop the run).
            found = []
            for index, side in sides:
                taken = db.where(dataset, rows, side.where)
                found += [sa.case((taken, 1), else_=0),
                          *[sa.case((taken, expression), else_=sa.null())
                            for expression, _ in self.bucket(db, index, rows)]]
            return found

        return born(db, increment, self.created(increment), "born_rows", values,
                    ("buckets of", self.id))

    def watermark_after(self, dataset: str) -> dict:
        if getattr(self, "next_buckets", None) is None or dataset not in self.config.datasets:
            return {}
        return {"buckets": {self.id: int(self.next_buckets)}}

    def settled_buckets(self) -> int:
        """The buckets holding a row older than the overlap, as the last run counted them."""
        for increment in self.increments.values():
            if self.id in increment.recorded.get("buckets", {}):
                return int(increment.recorded["buckets"][self.id])
        raise KeyError(self.id)  # incremental_start_problem made this a full run

    def watermark_extras(self, db, dataset: str, since) -> dict:
        import sqlalchemy as sa

        sides = (self.config.left, self.config.right)
        if dataset not in self.config.datasets or self.incremental_problem(dataset):
            return {}  # no incremental run will start from it
        self.ahead[dataset] = since
        recent = []
        for index, side in enumerate(sides):
            if side.dataset == dataset:
                mine = db.alias(dataset, f"recent_{index}")
                keys = [key.label(f"k{i}") for i, (key, _) in
                        enumerate(self.bucket(db, index, mine))]
                recent.append(sa.select(*keys).where(db.where(dataset, mine, side.where),
                                                     changed_since(db, mine, since)))
        found = db.frame(sa.union(*recent).limit(MOST_UNSETTLED + 1))
        texts = [[_kept(value) for value in row] for row in found.itertuples(index=False,
                                                                             name=None)]
        extras: dict = {"unsettled": {
            self.unsettled_field(): texts if len(texts) <= MOST_UNSETTLED else None}}
        if self.created(since) is not None:
            extras["born"] = {self.unsettled_field(): self.born(db, since)}
        else:
            extras["settled"] = int(older_count(db, since, "rows"))
        return extras

    def incremental_start_problem(self, db, dataset: str) -> str | None:
        increment = self.increments[dataset]
        created = self.created(increment)
        if created is not None:
            # Only a delete, or an update moving an old row to another bucket, hides: an
            # update within its bucket keeps the count and the checksum, and touches it.
            problem = born_problem(increment, created, self.unsettled_field(),
                                   "rows in other buckets", "moved to another bucket",
                                   lambda: self.born(db, increment))
        else:
            problem = settled_problem(db, increment, self.unsettled_field(),
                                      "settled_rows", "rows", "buckets",
                                      "a row deleted or moved to another bucket leaves "
                                      "nothing a watermark sees")
        if problem is None and not any(self.id in increment.recorded.get("buckets", {})
                                       for increment in self.increments.values()):
            run = self.increments[dataset].run_id
            return f"run {run} recorded no count of the buckets older than the overlap"
        listed = len(self.recorded_keys()) if problem is None else 0
        if len(self.key_names()) > 1 and listed > MOST_LISTED_BUCKETS:
            return (f"{listed:,} buckets of run {increment.run_id} to see again (its "
                    f"violations and rows within the overlap), more than "
                    f"{MOST_LISTED_BUCKETS}: a list of keys of several parts is tested one "
                    f"key at a time on every row, which costs more than a full run")
        return problem

    def bucket_note(self, examined: int, population: int) -> str:
        """What an incremental run re-aggregated, for the report."""
        increments = [self.increments[name] for name in self.config.datasets]
        run = increments[0].run_id
        changed = "; ".join(f"{increment.dataset}.{increment.column} ≥ {_shown(increment)} "
                            f"or null" for increment in increments)
        violated = len(increments[0].keys)
        return (f"incremental: re-aggregated {examined:,} touched "
                f"bucket{'s' if examined != 1 else ''} of {population:,}, each over all its "
                f"rows on both sides: those holding a row changed ({changed}) or within the "
                f"overlap when run {run} read it, and the {violated:,} "
                f"key{'s' if violated != 1 else ''} that violated in run {run}; counts and "
                f"keys are the whole table's, every other bucket keeps its status of run "
                f"{run}")

    def describe(self) -> str:
        config = self.config
        return (f"{config.left.describe()} must match {config.right.describe()} per key, "
                f"within a tolerance of {config.tolerance}.")


def _keys(index, names: list[str]):
    """The group keys of an aggregate as a frame with the check's key names."""
    return index.to_frame(index=False, name=names if index.nlevels > 1 else names[0])


def _typed(db, kind, text: str | None):
    """A bucket's key kept as text, as a value its expression compares with."""
    if text is None:
        return None
    if kind == "day":
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return _NOT_A_KEY
        return text if db.dialect == "sqlite" else day  # SQLite's day is ISO text
    if kind == "text":
        return text
    return typed_key(kind, text)


def _numeric(values) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _text(value, numeric: bool) -> str | None:
    """A key value as comparable text: numbers as `align` compares them."""
    import pandas as pd

    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return None
    if numeric:
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _recorded(text: str | None, numeric: bool) -> str | None:
    """A key kept as text by history, as `_text` writes it."""
    if text is None or not numeric:
        return text
    try:
        return _text(float(text), True)
    except ValueError:
        return text


def _kept(value) -> str | None:
    """A bucket's key value read from the database, kept as text with the watermark."""
    if value is None or value != value:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):  # a day
        return value.isoformat()
    return str(value)


def _shown(increment) -> str:
    return (str(increment.since) if increment.numeric
            else increment.since.isoformat().replace("+00:00", "Z"))
