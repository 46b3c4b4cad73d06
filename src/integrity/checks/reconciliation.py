"""Reconciliation: an aggregate on one side must match the other, per key (seeds 000, 003).

"Lead count matches webhook events", "quota tracking accurate", "Σ counters vs
send log". Each side aggregates its dataset (`count`, `sum(col)`,
`count_distinct(col)`, `p95(col)`, …) grouped by its `by` columns and, with `per_day`, by
the UTC calendar day of a time column. Sides are matched by position of their
keys (left `by: [tenantId]` meets right `by: [companyId]`); a key present on
one side only meets 0. A key is a violation when |left − right| exceeds the
tolerance: `tolerance: 2` (absolute), `"1%"` (of the larger side), or both
`{absolute: 2, relative: 1%}` (the larger allowance wins).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from integrity.checks import Check, Measurement, add_columns
from integrity.config import AggregateField, CheckConfig, Model, Where, parse_aggregate
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import parse_fraction


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

    def side_values(self, data, side: Side):
        import pandas as pd

        from integrity.checks.common import aggregate, day_of

        rows = data.rows(side.dataset, side.where)
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
        left = self.side_values(data, self.config.left)
        right = self.side_values(data, self.config.right)
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
        return self.compare(table)

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
        sides = []
        for alias, side in (("left_side", config.left), ("right_side", config.right)):
            rows = db.alias(side.dataset, alias)
            keys = [(side.dataset, column, rows.c[column]) for column in side.by]
            if side.per_day:
                keys.append((None, None, db.day(side.dataset, rows, side.per_day)))
            sides.append((side, rows, keys))
        (left, left_rows, left_keys), (right, right_rows, right_keys) = sides
        aligned = [tuple(db.exact(e) if db.holds_text(a, b) else e for e in db.comparable(a, b))
                   for a, b in zip(left_keys, right_keys)]
        parts = []
        for side, rows, keys, index in ((left, left_rows, left_keys, 0),
                                        (right, right_rows, right_keys, 1)):
            keys = [pair[index].label(f"k{i}") for i, pair in enumerate(aligned)]
            everything = [] if keys else [("k0", sa.literal("all rows"))]
            value, zero = side.measure, sa.literal(0)
            parts.append(db.grouped(side.dataset, rows, db.where(side.dataset, rows, side.where),
                                    keys, [*everything, ("l", value if index == 0 else zero),
                                           ("r", zero if index == 0 else value)]))
        both = sa.union_all(*parts).subquery("both")
        keys = [both.c[f"k{i}"] for i in range(len(names))]
        summed = sa.select(*keys, sa.func.sum(both.c.l).label("l"),
                           sa.func.sum(both.c.r).label("r")).group_by(*keys).subquery("summed")
        # Compare in the database; bring back the differing keys, the key count (the
        # population), and one row even when nothing differs, to carry that count.
        left_value = sa.func.coalesce(summed.c.l, 0)
        right_value = sa.func.coalesce(summed.c.r, 0)
        tolerance = config.tolerance
        larger = db.greatest(sa.func.abs(left_value), sa.func.abs(right_value))
        allowance = db.greatest(sa.literal(float(tolerance.absolute)),
                                float(tolerance.relative) * larger)
        flagged = sa.func.abs(left_value - right_value) > allowance
        judged = sa.select(summed, flagged.label("_flag"),
                           sa.func.count().over().label("_keys"),
                           sa.func.row_number().over().label("_row")).subquery("judged")
        statement = sa.select(*[judged.c[f"k{i}"] for i in range(len(names))], judged.c.l,
                              judged.c.r, judged.c._flag, judged.c._keys).where(
            sa.or_(judged.c._flag, judged.c._row == 1))
        table = db.frame(statement)
        population = int(table["_keys"].iloc[0]) if len(table) else 0
        table = table[table.pop("_flag").astype(bool)].drop(columns="_keys")
        table.columns = [*names, left_name, right_name]
        if config.left.per_day:
            table["day"] = [None if day is None or day != day else
                            day if isinstance(day, str) else day.isoformat()[:10]
                            for day in table["day"]]
        outcome = self.compare(table)
        outcome.population = population
        outcome.sql = db.sql(statement)
        return outcome

    def describe(self) -> str:
        config = self.config
        return (f"{config.left.describe()} must match {config.right.describe()} per key, "
                f"within a tolerance of {config.tolerance}.")


def _keys(index, names: list[str]):
    """The group keys of an aggregate as a frame with the check's key names."""
    return index.to_frame(index=False, name=names if index.nlevels > 1 else names[0])
