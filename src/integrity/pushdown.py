"""The SQL engine: checks compiled to SQLAlchemy Core and run inside the database.

Only violations and counts come back, so the audit of a table with tens of
millions of rows costs the database a scan and the auditor a few kilobytes.
Every statement is built from SQLAlchemy expressions: identifiers quoted by
the dialect, values bound as parameters, never config text pasted into SQL
(the custom-SQL check excepted, which runs read-only like everything else).

Times are compared as integers: each dialect turns a time column into units
since the Unix epoch at its native precision (microseconds on PostgreSQL and
MariaDB, milliseconds on SQLite, whose date functions keep no more). NULL
stands for a missing or unparseable time, as NaT does in the pandas engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import BINARY

from integrity import filters
from integrity.config import Aggregate, Audit, DatasetConfig
from integrity.errors import CheckError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from integrity.sources import Source

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
UNITS = {"sqlite": 1_000, "postgresql": 1_000_000, "mysql": 1_000_000, "mariadb": 1_000_000}
_TEXT_TYPES = (sa.String, sa.Text, sa.Enum)


def units_per_second(dialect: str) -> int:
    return UNITS.get(dialect, 1_000_000)


def engine_problems(dialect: str, audit: Audit, dataset: str) -> list[str]:
    """What the SQL engine cannot do for `dataset` on `dialect` (empty if all is well)."""
    zone = audit.datasets[dataset].timezone
    if zone != "UTC" and dialect != "postgresql":
        return [f"dataset {dataset!r} has timezone {zone}: the sql engine on {dialect} reads "
                f"naive times as UTC; use `engine: pandas` for checks on it"]
    return []


@dataclass
class Tables:
    """What a check sees on the SQL engine: relations, dialect helpers, a connection."""

    audit: Audit
    source: Source
    connection: Connection
    now: datetime
    columns: dict[str, dict[str, Any]]  # dataset -> column name -> reflected SQL type
    baseline: Any = None  # (check id, group, runs, statistic) -> (value, runs found)
    _relations: dict[str, sa.FromClause] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.source.dialect

    @property
    def units(self) -> int:
        return units_per_second(self.dialect)

    # -- relations ---------------------------------------------------------------

    def relation(self, dataset: str) -> sa.FromClause:
        """The dataset as a FROM clause with every column the run reads from it."""
        relation = self._relations.get(dataset)
        if relation is None:
            from integrity.sources import relation as build

            relation = build(self.audit.datasets[dataset], list(self.columns[dataset]))
            self._relations[dataset] = relation
        return relation

    def alias(self, dataset: str, name: str) -> sa.FromClause:
        return self.relation(dataset).alias(name)

    def is_text(self, dataset: str, column: str) -> bool:
        kind = self.columns[dataset].get(column)
        return kind is None or isinstance(kind, _TEXT_TYPES)

    # -- exact text ------------------------------------------------------------------
    #
    # MariaDB/MySQL compare text through the column's collation — usually case- and
    # trailing-space-insensitive, so 'SENT' = 'sent ' there but not in Python. On those
    # databases text keys are compared, grouped and joined as bytes; elsewhere these
    # helpers change nothing.

    @property
    def collates(self) -> bool:
        return self.dialect in {"mysql", "mariadb"}

    def exact(self, expression: sa.ColumnElement) -> sa.ColumnElement:
        """`expression` compared byte for byte (still bound and read as text)."""
        if not self.collates:
            return expression
        return sa.type_coerce(sa.cast(expression, BINARY()), sa.String)

    def key(self, dataset: str, relation: sa.FromClause, column: str) -> sa.ColumnElement:
        """A column to group or partition by: exact if it holds text."""
        expression = relation.c[column]
        kind = self.columns.get(dataset, {}).get(column)
        return self.exact(expression) if isinstance(kind, _TEXT_TYPES) else expression

    def same(self, left: tuple[str, str, sa.ColumnElement],
             right: tuple[str, str, sa.ColumnElement]) -> sa.ColumnElement:
        """left = right, exactly. The plain equality stays so an index can serve the join."""
        first, second = self.comparable(left, right)
        clause = first == second
        if self.collates and self.holds_text(left, right):
            clause = sa.and_(clause, self.exact(first) == self.exact(second))
        return clause

    def differ(self, left: tuple[str, str, sa.ColumnElement],
               right: tuple[str, str, sa.ColumnElement]) -> sa.ColumnElement:
        first, second = self.comparable(left, right)
        if self.collates and self.holds_text(left, right):
            return self.exact(first) != self.exact(second)
        return first != second

    def holds_text(self, *sides: tuple[str, str, sa.ColumnElement]) -> bool:
        return any(isinstance(self.columns.get(dataset, {}).get(column), _TEXT_TYPES)
                   for dataset, column, _ in sides)

    def comparable(self, left: tuple[str, str, sa.ColumnElement],
                   right: tuple[str, str, sa.ColumnElement]
                   ) -> tuple[sa.ColumnElement, sa.ColumnElement]:
        """Two (dataset, column, expression) keys made comparable, as the pandas engine
        aligns them: an integer id against a text reference compares as text."""
        (left_set, left_name, left_expr), (right_set, right_name, right_expr) = left, right
        left_type = self.columns.get(left_set, {}).get(left_name)
        right_type = self.columns.get(right_set, {}).get(right_name)
        if left_type is None or right_type is None:
            return left_expr, right_expr
        left_text, right_text = (isinstance(left_type, _TEXT_TYPES),
                                 isinstance(right_type, _TEXT_TYPES))
        if left_text == right_text:
            return left_expr, right_expr
        return (left_expr if left_text else sa.cast(left_expr, sa.String),
                right_expr if right_text else sa.cast(right_expr, sa.String))

    def count(self, dataset: str, relation: sa.FromClause,
              condition: sa.ColumnElement | None = None) -> int:
        statement = sa.select(sa.func.count()).select_from(relation)
        if condition is not None:
            statement = statement.where(condition)
        return int(self.scalar(statement))

    # -- times ---------------------------------------------------------------------

    def epoch(self, dataset: str, expression: sa.ColumnElement, column: str | None = None
              ) -> sa.ColumnElement:
        """`expression` (a time column of `dataset`) in integer units since the epoch."""
        name = self.dialect
        column = column or getattr(expression, "name", None)
        kind = self.columns.get(dataset, {}).get(column) if column else None
        zone = self.audit.datasets[dataset].timezone
        if name == "sqlite":
            day = sa.func.julianday(expression)
            text = sa.cast(sa.func.round((day - 2440587.5) * 86_400_000), sa.BigInteger)
            number = sa.cast(expression * 1000, sa.BigInteger)
            return sa.case((sa.func.typeof(expression).in_(["integer", "real"]), number),
                           else_=text)
        if name == "postgresql":
            value = expression
            if kind is None or isinstance(kind, _TEXT_TYPES):
                value = sa.cast(expression, sa.TIMESTAMP(timezone=True))
            elif zone != "UTC" and isinstance(kind, (sa.DateTime, sa.Date)) and not getattr(
                    kind, "timezone", False):
                value = sa.func.timezone(zone, expression)  # naive local -> aware
            return sa.cast(sa.extract("epoch", value) * 1_000_000, sa.BigInteger)
        if name in {"mysql", "mariadb"}:
            return sa.func.timestampdiff(sa.text("MICROSECOND"), sa.literal("1970-01-01 00:00:00"),
                                         expression, type_=sa.BigInteger)
        raise CheckError(f"the sql engine does not support {name} yet")

    def floor_div(self, expression: sa.ColumnElement, divisor: int) -> sa.ColumnElement:
        """Integer division of epoch units (e.g. the UTC day number of a time)."""
        return expression // divisor

    def bound(self, moment: datetime) -> int:
        """A Python time in the dialect's epoch units."""
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        delta = moment.astimezone(timezone.utc) - EPOCH
        return (delta.days * 86_400 + delta.seconds) * self.units + \
            delta.microseconds * self.units // 1_000_000

    def span(self, seconds: float) -> int:
        return int(round(seconds * self.units))

    def to_times(self, values: pd.Series) -> pd.Series:
        """Epoch units back to UTC timestamps (for showing rows as the pandas engine does)."""
        unit = "ms" if self.units == 1_000 else "us"
        numbers = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(numbers, unit=unit, utc=True)

    # -- filters ---------------------------------------------------------------------

    def where(self, dataset: str, relation: sa.FromClause,
              conditions: tuple[filters.Condition, ...]) -> sa.ColumnElement:
        clauses = [self._condition(dataset, relation, condition) for condition in conditions]
        return sa.and_(sa.true(), *clauses)

    def _condition(self, dataset: str, relation: sa.FromClause,
                   condition: filters.Condition) -> sa.ColumnElement:
        column = relation.c[condition.column]
        op, value = condition.op, condition.value
        exact = self.key(dataset, relation, condition.column)
        if exact is not column and op in {"eq", "in"}:
            # The plain predicate can use an index; the exact one decides.
            plain = column == value if op == "eq" else column.in_(list(value))
            return sa.and_(plain, exact == value if op == "eq" else exact.in_(list(value)))
        if op not in {"since", "until", "is_null"}:
            column = exact
        if op in {"since", "until"}:
            bound = self.bound(filters.time_bound(condition, self.now))
            moment = self.epoch(dataset, column, condition.column)
            return moment >= bound if op == "since" else moment < bound
        if op == "is_null":
            return column.is_(None) if value else column.is_not(None)
        if op == "in":
            return column.in_(list(value))
        if op == "not_in":
            return sa.and_(column.not_in(list(value)), column.is_not(None))
        if op == "ne":
            return sa.and_(column != value, column.is_not(None))
        return {"eq": column.__eq__, "lt": column.__lt__, "le": column.__le__,
                "gt": column.__gt__, "ge": column.__ge__}[op](value)

    # -- text ----------------------------------------------------------------------------

    def normalise(self, expression: sa.ColumnElement, steps: list[str],
                  region: str | None) -> sa.ColumnElement:
        """The duplicates normalisers in SQL, with the pandas engine's exact semantics."""
        if not steps:
            return self.exact(expression)
        if self.dialect == "sqlite":
            # SQLite runs in this process: the very Python function the pandas engine uses.
            return sa.func.integrity_normalise(expression, ",".join(steps), region or "")
        value = sa.cast(expression, sa.Text)
        for step in steps:
            if step in {"trim", "email"}:
                value = self._trim(value)
            if step in {"lower", "email"}:
                value = sa.func.lower(value)
            if step == "digits":
                value = self._regexp_remove(value, "[^0-9]")
            if step == "phone":
                raise CheckError("normalize: phone (E.164) cannot run inside "
                                 f"{self.dialect}; use `engine: pandas` for this check")
        return sa.func.nullif(self.exact(value), "")

    def _trim(self, value):
        if self.dialect == "postgresql":
            return sa.func.btrim(value, sa.literal(" \t\n\r\f\v"))
        return self._regexp_remove(value, "^[[:space:]]+|[[:space:]]+$")

    def _regexp_remove(self, value, pattern: str):
        if self.dialect == "postgresql":
            return sa.func.regexp_replace(value, pattern, "", "g")
        return sa.func.regexp_replace(value, pattern, "")

    # -- aggregates ---------------------------------------------------------------------

    def aggregate(self, relation: sa.FromClause, dataset: str, measure: Aggregate
                  ) -> sa.ColumnElement:
        """An aggregate as SQL; its own filter becomes a CASE inside it (one scan for many)."""
        condition = self.where(dataset, relation, measure.where) if measure.where else None
        if measure.function == "count" and measure.column is None:
            if condition is None:
                return sa.func.count()
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)
        value = relation.c[measure.column]
        if measure.function not in {"count", "count_distinct"}:
            value = sa.cast(value, sa.Float) if self.is_text(dataset, measure.column) else value
        if condition is not None:
            value = sa.case((condition, value), else_=sa.null())
        if measure.function == "count":
            return sa.func.count(value)
        if measure.function == "count_distinct":
            return sa.func.count(sa.distinct(value))
        if measure.function == "sum":
            return sa.func.coalesce(sa.func.sum(value), 0)
        if measure.function == "avg" and self.dialect in {"mysql", "mariadb"}:
            # MariaDB averages integers as DECIMAL with 4 digits: 1/3 -> 0.3333. A double
            # operand keeps full precision, as in the other databases.
            value = value + sa.literal_column("0e0")
        return {"avg": sa.func.avg, "min": sa.func.min, "max": sa.func.max}[measure.function](value)

    # -- running statements -----------------------------------------------------------------

    def frame(self, statement: sa.Select) -> pd.DataFrame:
        try:
            result = self.connection.execute(statement)
            rows = result.fetchall()
        except sa.exc.SQLAlchemyError as error:
            raise self.source.error(error, "pushdown query failed") from None
        frame = pd.DataFrame.from_records(rows, columns=list(result.keys()), coerce_float=False)
        return decode_bytes(frame)

    def scalar(self, statement: sa.Select) -> Any:
        try:
            return self.connection.execute(statement).scalar_one()
        except sa.exc.SQLAlchemyError as error:
            raise self.source.error(error, "pushdown query failed") from None

    def sql(self, statement: sa.ClauseElement) -> str:
        from integrity.sources import sql_text

        try:
            return sql_text(statement, self.source)
        except Exception:  # noqa: BLE001 — a literal the dialect cannot render: show it bound
            return str(statement.compile(dialect=self.source.engine.dialect))


def decode_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """Text read as bytes (see `Tables._exact_text`) back to text."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, (bytes, bytearray))).any():
            frame[column] = values.map(lambda v: v.decode("utf-8", "replace")
                                       if isinstance(v, (bytes, bytearray)) else v)
    return frame


def burst_starts(time: sa.ColumnElement, partition: list[sa.ColumnElement],
                 order: list[sa.ColumnElement], window: int) -> sa.ColumnElement:
    """1 where an event opens a burst (first of its partition, or more than `window`
    units after the previous event), else 0. Rows without a time open their own."""
    previous = sa.func.lag(time).over(partition_by=partition, order_by=[time, *order])
    return sa.case((time.is_(None), 1), (previous.is_(None), 1),
                   (time - previous > window, 1), else_=0)


def nulls_last(expression: sa.ColumnElement) -> list[sa.ColumnElement]:
    """ORDER BY terms putting NULLs last on every dialect (MariaDB lacks NULLS LAST)."""
    return [sa.case((expression.is_(None), 1), else_=0), expression]


def install_sqlite_functions(dbapi_connection) -> None:
    """Deterministic Python functions the SQL engine calls on SQLite."""
    from integrity.checks.duplicates import normalise_one

    def normalise(value, steps, region):
        if value is None:
            return None
        return normalise_one(value, steps.split(","), region or None)

    dbapi_connection.create_function("integrity_normalise", 3, normalise, deterministic=True)
