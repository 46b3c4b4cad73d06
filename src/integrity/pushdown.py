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

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import BIGINT, BINARY
from sqlalchemy.sql import util as sql_util

from integrity import filters
from integrity.config import Aggregate, Audit
from integrity.errors import CheckError
from integrity.units import ISO_TIME, ISO_TIME_WITH_OFFSET, OFFSET_AT_END
from integrity.values import EPOCH

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from integrity.sources import Source

UNITS = {"sqlite": 1_000, "postgresql": 1_000_000, "mysql": 1_000_000, "mariadb": 1_000_000}
_TEXT_TYPES = (sa.String, sa.Text, sa.Enum)


def _pg():
    """PostgreSQL's own types, imported when a PostgreSQL database is audited (the module
    costs an hourly run on SQLite a twentieth of its start-up)."""
    from sqlalchemy.dialects import postgresql

    return postgresql


def _read_as_text() -> tuple:
    """PostgreSQL types the pandas engine reads as their text (sources.BulkReader): a
    filter value compares with that text (see filters' docstring)."""
    pg = _pg()
    return (sa.Enum, sa.Uuid, sa.JSON, sa.ARRAY, pg.INET, pg.CIDR, pg.BIT, pg.MACADDR,
            pg.MACADDR8, pg.AbstractRange, pg.AbstractMultiRange, pg.TSVECTOR, pg.HSTORE)


def units_per_second(dialect: str) -> int:
    return UNITS.get(dialect, 1_000_000)


def engine_problems(dialect: str, audit: Audit, dataset: str) -> list[str]:
    """What the SQL engine cannot do for `dataset` on `dialect` (empty if all is well)."""
    if audit.datasets[dataset].file:
        return [f"dataset {dataset!r} is a file, read by the pandas engine"]
    zone = audit.datasets[dataset].timezone
    if zone != "UTC" and dialect != "postgresql":
        return [f"dataset {dataset!r} has timezone {zone}: the sql engine on {dialect} reads "
                f"naive times as UTC"]
    return []


# What an incremental check's statements tell PostgreSQL's planner a page read out of order
# costs (`Tables.index_lookups`): the value tuning guides give for SSD or cached data.
INDEX_LOOKUP_COST = 1.1


@dataclass
class Tables:
    """What a check sees on the SQL engine: relations, dialect helpers, a connection."""

    audit: Audit
    source: Source
    connection: Connection
    now: datetime
    columns: dict[str, dict[str, Any]]  # dataset -> column name -> reflected SQL type
    not_null: dict[str, set[str]] = field(default_factory=dict)  # declared NOT NULL
    # (check id, group, runs, window) -> [(value, run's now, breached)], newest first
    baseline: Any = None
    _relations: dict[str, sa.FromClause] = field(default_factory=dict)
    _counts: dict[tuple, int] = field(default_factory=dict)
    _once: dict[tuple, Any] = field(default_factory=dict)

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
    # databases text keys are compared, grouped and joined as bytes. PostgreSQL's citext
    # compares case-insensitively: its keys are compared as plain text. Elsewhere these
    # helpers change nothing.

    @property
    def collates(self) -> bool:
        return self.dialect in {"mysql", "mariadb"}

    def exact(self, expression: sa.ColumnElement) -> sa.ColumnElement:
        """`expression` compared byte for byte (still bound and read as text)."""
        if self.collates:
            return sa.type_coerce(sa.cast(expression, BINARY()), sa.String)
        if self.dialect == "postgresql" and isinstance(self.reflected(expression), _pg().CITEXT):
            return sa.cast(expression, sa.Text)
        return expression

    def reflected(self, expression: sa.ColumnElement) -> Any:
        """The reflected type of `expression` if it is a column of a dataset's relation
        (or of an alias of it), else None."""
        table = getattr(expression, "table", None)
        if table is None:
            return None
        for dataset, relation in self._relations.items():
            if table is relation or getattr(table, "element", None) is relation:
                return self.columns.get(dataset, {}).get(expression.name)
        return None

    def key(self, dataset: str, relation: sa.FromClause, column: str) -> sa.ColumnElement:
        """A column to group or partition by: exact if it holds text."""
        expression = relation.c[column]
        kind = self.columns.get(dataset, {}).get(column)
        return self.exact(expression) if isinstance(kind, _TEXT_TYPES) else expression

    def nulls_last(self, expression: sa.ColumnElement, dataset: str,
                   column: str) -> list[sa.ColumnElement]:
        """ORDER BY terms putting NULLs last, as the pandas engine does. PostgreSQL sorts
        them last by itself; MariaDB and SQLite sort them first and MariaDB lacks NULLS
        LAST, hence the CASE, needless on a column declared NOT NULL."""
        if self.dialect == "postgresql" or column in self.not_null.get(dataset, ()):
            return [expression]
        return [sa.case((expression.is_(None), 1), else_=0), expression]

    def same(self, left: tuple[str, str, sa.ColumnElement],
             right: tuple[str, str, sa.ColumnElement]) -> sa.ColumnElement:
        """left = right, exactly. The plain equality stays so an index can serve the join."""
        first, second = self.comparable(left, right)
        clause = first == second
        if self.holds_text(left, right):
            exact = self.exact(first), self.exact(second)
            if exact[0] is not first or exact[1] is not second:
                clause = sa.and_(clause, exact[0] == exact[1])
        return clause

    def differ(self, left: tuple[str, str, sa.ColumnElement],
               right: tuple[str, str, sa.ColumnElement]) -> sa.ColumnElement:
        first, second = self.comparable(left, right)
        if self.holds_text(left, right):
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
        return (left_expr if left_text else _as_text(left_expr, left_type),
                right_expr if right_text else _as_text(right_expr, right_type))

    def count(self, dataset: str, relation: sa.FromClause,
              condition: sa.ColumnElement | None = None, same_as: Any = None) -> int:
        """Rows of `relation` meeting `condition`. Checks that measure the same population
        pass the same `same_as` (the dataset and its filters): it is counted once a run. A
        condition every row meets (none, `true`, a NOT NULL column not null) is the
        table's row count, read once a run for every check (`total`)."""
        if condition is None or self.every_row(dataset, condition):
            return self.total(dataset)
        cache = (dataset, same_as) if same_as is not None else None
        if cache in self._counts:
            return self._counts[cache]
        statement = sa.select(sa.func.count()).select_from(relation)
        if condition is not None:
            statement = statement.where(condition)
        found = int(self.scalar(statement))
        if cache is not None:
            self._counts[cache] = found
        return found

    def total(self, dataset: str) -> int:
        """How many rows `dataset` holds, counted once a run: a population over the whole
        table, and the rows older than a watermark (the total less the changed rows, which
        the change column's index finds) share it."""
        return self.once(("table rows", dataset), lambda: int(self.scalar(
            sa.select(sa.func.count()).select_from(self.relation(dataset)))))

    def every_row(self, dataset: str, condition: sa.ColumnElement) -> bool:
        """Whether every row of `dataset` meets `condition`, seen from its form alone:
        `true`, a column declared NOT NULL tested not null, or a conjunction of those."""
        from sqlalchemy.sql import operators
        from sqlalchemy.sql.elements import (AsBoolean, BinaryExpression, BooleanClauseList,
                                             ColumnClause, Null, True_)

        if isinstance(condition, True_):
            return True
        if isinstance(condition, AsBoolean) and condition.operator is operators.is_true:
            return self.every_row(dataset, condition.element)
        if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_:
            return all(self.every_row(dataset, clause) for clause in condition.clauses)
        return (isinstance(condition, BinaryExpression)
                and condition.operator is operators.is_not
                and isinstance(condition.right, Null)
                and isinstance(condition.left, ColumnClause)
                and condition.left.name in self.not_null.get(dataset, ()))

    def index_lookups(self, on: bool) -> None:
        """PostgreSQL: price a page read out of order as one read in sequence (`on`), or
        as the session had it again, for the statements of an incremental check. They
        find the rows to examine by index — a range of the change column, bound keys —
        and the default price (4, set for spinning disks) has the planner scan a table of
        millions instead for a few thousand rows scattered over its pages: 0.96 s against
        0.11 s for one count at scale 10 (benchmarks/incremental.py). Never raised above
        the session's own, and local to the check's savepoint, which a failing statement
        rolls back with it."""
        if self.dialect != "postgresql":
            return
        # The session's price, as text (None on a server without the setting).
        session = self.once(("random page cost",), lambda: self.scalar(sa.text(
            "SELECT current_setting('random_page_cost', true)")))
        try:
            lower = session is not None and float(session) > INDEX_LOOKUP_COST
        except ValueError:
            lower = False
        if lower:
            price = INDEX_LOOKUP_COST if on else float(session)
            self.connection.exec_driver_sql(f"SET LOCAL random_page_cost = {price}")

    def once(self, key: tuple, read) -> Any:
        """`read()` the first time `key` is asked for in this run, its answer after: what
        several checks read of one snapshot alike (a count, a checksum). A check's own
        keys start with its id; the run's, with words a check id cannot hold (spaced)."""
        if key not in self._once:
            self._once[key] = read()
        return self._once[key]

    # -- times ---------------------------------------------------------------------

    def epoch(self, dataset: str, expression: sa.ColumnElement, column: str | None = None
              ) -> sa.ColumnElement:
        """`expression` (a time column of `dataset`) in integer units since the epoch."""
        name = self.dialect
        column = column or getattr(expression, "name", None)
        kind = self.columns.get(dataset, {}).get(column) if column else None
        zone = self.audit.datasets[dataset].timezone
        if name != "sqlite" and (isinstance(kind, (sa.Time, sa.Interval)) or (
                name == "postgresql" and isinstance(kind, _pg().INTERVAL))):
            from integrity.sources import not_a_moment

            raise CheckError(not_a_moment(column))  # as the pandas engine says (to_utc)
        if name == "sqlite":
            # Text through the pandas engine's own rules (SQLite runs in this process);
            # julianday() would miss "+0530" and read other text its own way.
            number = sa.cast(expression * 1000, sa.BigInteger)
            return sa.case((sa.func.typeof(expression).in_(["integer", "real"]), number),
                           else_=sa.func.integrity_epoch_ms(expression))
        if name == "postgresql":
            value = expression
            if kind is None or isinstance(kind, _TEXT_TYPES):
                value = self._parsed_text(expression, zone)
            elif zone != "UTC" and isinstance(kind, (sa.DateTime, sa.Date)) and not getattr(
                    kind, "timezone", False):
                value = sa.func.timezone(zone, expression)  # naive local -> aware
            # date_part is float8 (EXTRACT is numeric, twice as slow per row); at µs
            # precision the float error stays far below half a microsecond, so round()
            # gives the exact integer.
            return sa.cast(sa.func.round(sa.func.date_part("epoch", value) * 1_000_000),
                           sa.BigInteger)
        if name in {"mysql", "mariadb"}:
            if kind is None or isinstance(kind, _TEXT_TYPES):
                return self._parsed_text_mysql(expression)
            return sa.func.timestampdiff(sa.text("MICROSECOND"), sa.literal("1970-01-01 00:00:00"),
                                         expression, type_=sa.BigInteger)
        raise CheckError(f"the sql engine does not support {name} yet")

    # Text times are read as the pandas engine reads them (units.ISO_TIME): an offset
    # wins, else the dataset's time zone; anything else is no time (NULL) rather than an
    # error that would stop the check. A date the pattern lets through but the calendar
    # lacks (02-30) is still PostgreSQL's error.

    def _parsed_text(self, expression: sa.ColumnElement, zone: str) -> sa.ColumnElement:
        """PostgreSQL: text to timestamptz, NULL when it is no ISO time."""
        text = sa.func.btrim(sa.cast(expression, sa.Text), sa.literal(" \t\n\r\f\v"))
        aware = sa.cast(text, sa.TIMESTAMP(timezone=True))
        if zone != "UTC":  # the session is in UTC: naive text is read in the dataset's zone
            aware = sa.case((text.op("~")(sa.literal(ISO_TIME_WITH_OFFSET)), aware),
                            else_=sa.func.timezone(zone, sa.cast(text, sa.TIMESTAMP())))
        return sa.case((text.op("~")(sa.literal(ISO_TIME)), aware), else_=sa.null())

    def _parsed_text_mysql(self, expression: sa.ColumnElement) -> sa.ColumnElement:
        """MariaDB/MySQL: text to epoch microseconds, the offset applied (their date
        functions ignore it), NULL when it is no ISO time."""
        text = sa.func.trim(expression)
        aware = text.op("REGEXP")(sa.literal(ISO_TIME_WITH_OFFSET))
        suffix = sa.case((aware, sa.func.coalesce(
            sa.func.regexp_substr(text, r"[+-][0-9]{2}(:?[0-9]{2})?$"), "")), else_="")
        digits = sa.func.replace(sa.func.substring(suffix, 2), ":", "")
        offset = sa.case((suffix == "", 0), else_=(
            sa.case((sa.func.left(suffix, 1) == "-", -1), else_=1)
            * (sa.cast(sa.func.left(digits, 2), sa.Integer) * 3600
               + sa.cast(sa.func.coalesce(sa.func.nullif(sa.func.substring(digits, 3, 2), ""),
                                          "0"), sa.Integer) * 60)))
        local = sa.case((aware, sa.func.regexp_replace(text, OFFSET_AT_END, "")), else_=text)
        epoch = sa.func.timestampdiff(sa.text("MICROSECOND"), sa.literal("1970-01-01 00:00:00"),
                                      local, type_=sa.BigInteger) - offset * 1_000_000
        return sa.case((text.op("REGEXP")(sa.literal(ISO_TIME)), epoch), else_=sa.null())

    def day(self, dataset: str, relation: sa.FromClause, column: str) -> sa.ColumnElement:
        """The UTC calendar day of a time column (a DATE, or ISO text on SQLite)."""
        expression = relation.c[column]
        if self.dialect == "sqlite":
            return sa.func.date(self.epoch(dataset, expression, column) / 1000.0, "unixepoch")
        if self.typed_time(dataset, column):
            return sa.cast(expression, sa.Date) if self.dialect == "postgresql" else \
                sa.func.date(expression)
        epoch = self.epoch(dataset, expression, column)
        if self.dialect == "postgresql":
            return sa.cast(sa.func.to_timestamp(epoch / 1_000_000.0), sa.Date)
        return sa.func.date(sa.func.timestampadd(sa.text("MICROSECOND"), epoch,
                                                 sa.literal("1970-01-01 00:00:00")))

    def axis(self, *columns: tuple[str, str]) -> Axis:
        """The time axis for (dataset, column) pairs compared with one another. PostgreSQL
        subtracts dates as a number of days, not an interval: dates go by epoch units."""
        dates = self.dialect == "postgresql" and any(
            isinstance(self.columns.get(dataset, {}).get(column), sa.Date)
            for dataset, column in columns)
        return Axis(self, not dates and all(self.typed_time(dataset, column)
                                            for dataset, column in columns))

    def index_hint(self, dataset: str, column: str, threshold: int = 100_000) -> str | None:
        """A note recommending an index when a large table has none leading with `column`
        (a freshness or window check then reads the whole table). The size is the
        planner's estimate (PostgreSQL `reltuples`, MariaDB/MySQL `TABLE_ROWS`): no count."""
        definition = self.audit.datasets[dataset]
        if self.dialect not in {"postgresql", "mysql", "mariadb"} or not definition.table:
            return None
        table, schema = definition.table, definition.schema_
        quote = self.connection.dialect.identifier_preparer.quote_identifier
        name = ".".join(quote(part) for part in (schema, table) if part)
        try:
            inspector = sa.inspect(self.connection)
            leading = [index["column_names"][:1] for index in
                       inspector.get_indexes(table, schema=schema)]
            leading.append(inspector.get_pk_constraint(table, schema=schema)
                           .get("constrained_columns", [])[:1])
            if [column] in leading:
                return None
            rows = self.connection.execute(*self._estimated_rows(name, table, schema)).scalar()
        except sa.exc.SQLAlchemyError:
            return None
        if not rows or rows < threshold:
            return None
        index = quote(f"{table}_{column}_idx"[:60])  # MariaDB/MySQL want a name
        return (f"{name} has about {int(rows):,} rows and no index starting with "
                f"{quote(column)}: this check reads all of them. CREATE INDEX {index} ON "
                f"{name} ({quote(column)}) would let it read only the newest.")

    def table_rows(self, dataset: str) -> int:
        """About how many rows `dataset` holds: the planner's estimate for a table on
        PostgreSQL or MariaDB/MySQL (no count), else a count."""
        definition = self.audit.datasets[dataset]
        if self.dialect in {"postgresql", "mysql", "mariadb"} and definition.table:
            quote = self.connection.dialect.identifier_preparer.quote_identifier
            name = ".".join(quote(part) for part in (definition.schema_, definition.table)
                            if part)
            try:
                rows = self.connection.execute(*self._estimated_rows(
                    name, definition.table, definition.schema_)).scalar()
            except sa.exc.SQLAlchemyError:
                rows = None
            if rows is not None and rows >= 0:
                return int(rows)
        return self.scalar(sa.select(sa.func.count()).select_from(self.relation(dataset)))

    def _estimated_rows(self, name: str, table: str, schema: str | None) -> tuple:
        """The statement and parameters reading the estimated row count of a table
        (`name` quoted and qualified)."""
        if self.dialect == "postgresql":
            return (sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": name})
        return (sa.text("SELECT table_rows FROM information_schema.tables "
                        "WHERE table_schema = COALESCE(:s, DATABASE()) AND table_name = :t"),
                {"s": schema, "t": table})

    def greatest(self, first, second) -> sa.ColumnElement:
        """The larger of two values (SQLite spells it max(a, b))."""
        if self.dialect == "sqlite":
            return sa.func.max(first, second)
        return sa.func.greatest(first, second)

    def key_checksum(self, columns: list[sa.ColumnElement]) -> sa.ColumnElement:
        """An aggregate that changes when a row's values leave the rows summed: the sum of
        a hash of each row's values, 64 bits (60 on MariaDB): a key deleted, or changed,
        shows; the order of rows does not. Compared only with itself, on one database."""
        if self.dialect == "sqlite":
            return sa.func.integrity_key_checksum(*columns)
        # Each value marked, a null otherwise: concat_ws leaves nulls out, so '' and null
        # (a key emptied to null) would hash alike.
        text = sa.func.concat_ws(sa.literal("\x1f"), *[
            sa.case((column.is_(None), sa.literal("\x1e")),
                    else_=sa.func.concat(sa.literal("\x1d"), column)) for column in columns])
        if self.dialect == "postgresql":
            return sa.func.coalesce(sa.func.sum(sa.func.hashtextextended(text, 0)), 0)
        hashed = sa.cast(sa.func.conv(sa.func.substring(sa.func.md5(text), 1, 15), 16, 10),
                         BIGINT(unsigned=True))
        return sa.func.coalesce(sa.func.sum(hashed), 0)

    def typed_time(self, dataset: str, column: str) -> bool:
        """A real timestamp column the database can compare as it is (an index can serve),
        read in UTC: no per-row conversion needed."""
        kind = self.columns.get(dataset, {}).get(column)
        return (self.dialect in {"postgresql", "mysql", "mariadb"}
                and isinstance(kind, (sa.DateTime, sa.Date))
                and self.audit.datasets[dataset].timezone == "UTC")

    def time_literal(self, dataset: str, column: str, moment: datetime) -> sa.ColumnElement:
        kind = self.columns[dataset][column]
        utc = moment.astimezone(timezone.utc)
        if isinstance(kind, sa.DateTime) and kind.timezone:
            return sa.literal(utc, sa.DateTime(timezone=True))
        return sa.literal(utc.replace(tzinfo=None), sa.DateTime())

    def time_at_least(self, dataset: str, relation: sa.FromClause, column: str,
                      moment: datetime) -> sa.ColumnElement:
        """column >= moment, comparing the column as it is stored when it can."""
        if self.typed_time(dataset, column):
            return sa.and_(relation.c[column] >= self.time_literal(dataset, column, moment),
                           relation.c[column].is_not(None))
        epoch = self.epoch(dataset, relation.c[column], column)
        return sa.and_(epoch >= self.bound(moment), epoch.is_not(None))

    def time_before(self, dataset: str, relation: sa.FromClause, column: str,
                    moment: datetime) -> sa.ColumnElement:
        if self.typed_time(dataset, column):
            return relation.c[column] < self.time_literal(dataset, column, moment)
        return self.epoch(dataset, relation.c[column], column) < self.bound(moment)

    def time_after(self, dataset: str, relation: sa.FromClause, column: str,
                   moment: datetime) -> sa.ColumnElement:
        if self.typed_time(dataset, column):
            return relation.c[column] > self.time_literal(dataset, column, moment)
        return self.epoch(dataset, relation.c[column], column) > self.bound(moment)

    def newest(self, dataset: str, relation: sa.FromClause, column: str) -> sa.ColumnElement:
        """The epoch units of the newest time: MAX first, then one conversion, when the
        column's own order is time order."""
        if self.typed_time(dataset, column):
            return self.epoch(dataset, sa.func.max(relation.c[column]), column)
        return sa.func.max(self.epoch(dataset, relation.c[column], column))

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
        if op in {"since", "until"}:
            moment = filters.time_bound(condition, self.now)
            if op == "since":
                return self.time_at_least(dataset, relation, condition.column, moment)
            return self.time_before(dataset, relation, condition.column, moment)
        if op == "is_null":
            return column.is_(None) if value else column.is_not(None)
        values = list(value) if op in {"in", "not_in"} else [value]
        typed = self._typed(dataset, relation, condition.column, values)
        if typed is not None:
            return _compare(*typed, op)
        exact = self.key(dataset, relation, condition.column)
        if exact is not column and op in {"eq", "in"}:
            # The plain predicate can use an index; the exact one decides.
            return sa.and_(_compare(column, values, op), _compare(exact, values, op))
        return _compare(exact, values, op)

    def _typed(self, dataset: str, relation: sa.FromClause, column: str, values: list[Any]
               ) -> tuple[sa.ColumnElement, list[Any]] | None:
        """What a filter compares, and the values bound to compare it with, for a column
        whose type decides how a value from the audit file reads (filters' docstring);
        None for a column that compares values as written."""
        kind = self.columns.get(dataset, {}).get(column)
        expression = relation.c[column]
        if self.dialect == "sqlite" or kind is None:
            return None  # SQLite's declared types are affinities: values as stored
        if isinstance(kind, sa.DateTime):
            moments = [filters.moment_value(column, value) for value in values]
            if self.typed_time(dataset, column):
                return expression, [sa.null() if moment is None else
                                    self.time_literal(dataset, column, moment)
                                    for moment in moments]
            return self.epoch(dataset, expression, column), [
                None if moment is None else self.bound(moment) for moment in moments]
        if isinstance(kind, sa.Date):
            return expression, [sa.literal(filters.day_value(column, value), sa.Date())
                                for value in values]
        if self.dialect != "postgresql":
            return None
        if isinstance(kind, _pg().MONEY):
            return sa.cast(expression, sa.Numeric), values
        if isinstance(kind, sa.Uuid) and all(isinstance(value, str) and _canonical_uuid(value)
                                            for value in values):
            return expression, [sa.literal(uuid.UUID(value), sa.Uuid()) for value in values]
        if isinstance(kind, _read_as_text()):
            return sa.cast(expression, sa.Text), values
        return None

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
        """An aggregate as SQL; its own filter becomes a CASE inside it (one scan for many).
        A percentile on MariaDB/MySQL is no aggregate there: `grouped` builds it."""
        if measure.function == "count" and measure.column is None:
            if not measure.where:
                return sa.func.count()
            condition = self.where(dataset, relation, measure.where)
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)
        value = self.measured(relation, dataset, measure)
        if measure.function == "count":
            return sa.func.count(value)
        if measure.function == "count_distinct":
            return sa.func.count(sa.distinct(value))
        if measure.function == "sum":
            return sa.func.coalesce(sa.func.sum(value), 0)
        if measure.fraction is not None:
            return self._percentile(value, measure)
        if measure.function == "avg" and self.dialect in {"mysql", "mariadb"}:
            # MariaDB averages integers as DECIMAL with 4 digits: 1/3 -> 0.3333. A double
            # operand keeps full precision, as in the other databases.
            value = value + sa.literal_column("0e0")
        return {"avg": sa.func.avg, "min": sa.func.min, "max": sa.func.max}[measure.function](value)

    def measured(self, relation: sa.FromClause, dataset: str, measure: Aggregate
                 ) -> sa.ColumnElement:
        """The values an aggregate of a column reads: numbers as the pandas engine reads
        them (count and count_distinct take any value), NULL outside its own filter."""
        value = relation.c[measure.column]
        if measure.function not in {"count", "count_distinct"}:
            if self.dialect == "sqlite":
                # Any column may hold anything: a number as the pandas engine reads it, else
                # no value (CAST makes 'abc' 0, which avg counts, and max() prefers text).
                value = sa.func.integrity_number(value, type_=sa.Float)
            elif self.is_text(dataset, measure.column):
                value = sa.cast(value, sa.Float)
            elif self.dialect == "postgresql" and isinstance(
                    self.columns[dataset].get(measure.column), _pg().MONEY):
                value = sa.cast(value, sa.Numeric)  # money has no avg, and reads as '$1.50'
        if measure.where:
            value = sa.case((self.where(dataset, relation, measure.where), value),
                            else_=sa.null())
        return value

    def _percentile(self, value: sa.ColumnElement, measure: Aggregate) -> sa.ColumnElement:
        """A continuous percentile of `value` (NULLs left out) as one aggregate."""
        fraction = sa.literal(measure.fraction, sa.Float)
        if self.dialect == "postgresql":
            return sa.type_coerce(sa.func.percentile_cont(fraction).within_group(value),
                                  sa.Float)
        if self.dialect == "sqlite":
            return sa.func.integrity_percentile(value, fraction, type_=sa.Float)
        raise CheckError(f"{measure}: a percentile on {self.dialect} is computed by "
                         f"Tables.grouped, from ranks")

    def grouped(self, dataset: str, relation: sa.FromClause, scope: sa.ColumnElement,
                keys: list[sa.ColumnElement],
                columns: list[tuple[str, Aggregate | sa.ColumnElement]]) -> sa.Select:
        """SELECT keys…, columns… FROM relation WHERE scope GROUP BY keys (keys labelled),
        each Aggregate of `columns` by `aggregate`, the rest as given.

        MariaDB has PERCENTILE_CONT only as a window function, MySQL not at all, and
        MariaDB's interpolates as (⌈h⌉ − h)·x[⌊h⌋] + (h − ⌊h⌋)·x[⌈h⌉], which differs from
        PostgreSQL's in the last digit about one time in four. So there a percentile comes
        from ranks: a derived table numbers each group's values (NULLs last) and counts
        them, and the grouped query picks x[⌊h⌋] and x[⌈h⌉] and interpolates in doubles,
        in PostgreSQL's order of operations."""
        percentiles = [part for _, part in columns
                       if isinstance(part, Aggregate) and part.fraction is not None]
        if not percentiles or self.dialect not in {"mysql", "mariadb"}:
            selected = [(self.aggregate(relation, dataset, part) if isinstance(part, Aggregate)
                         else part).label(name) for name, part in columns]
            return (sa.select(*keys, *selected).select_from(relation).where(scope)
                    .group_by(*keys))
        partition = [key.element if isinstance(key, sa.Label) else key for key in keys]
        double = sa.literal_column("0e0")  # + 0e0: computed as a double, as in PostgreSQL
        ranks = []
        for index, part in enumerate(percentiles):
            value = self.measured(relation, dataset, part) + double
            count = sa.func.count(value).over(partition_by=partition)
            ranks += [value.label(f"_value{index}"),
                      sa.func.row_number().over(partition_by=partition,
                                                order_by=[value.is_(None), value])
                      .label(f"_rank{index}"),
                      ((count - 1) * (sa.literal(part.fraction, sa.Float) + double))
                      .label(f"_position{index}")]
        ranked = sa.select(*relation.c, *ranks).where(scope).subquery("ranked")
        adapter = sql_util.ClauseAdapter(ranked)
        selected = []
        for name, part in columns:
            if isinstance(part, Aggregate) and part.fraction is not None:
                index = percentiles.index(part)
                expression = self._interpolated(*(ranked.c[f"_{column}{index}"] for column
                                                  in ("value", "rank", "position")))
            elif isinstance(part, Aggregate):
                expression = adapter.traverse(self.aggregate(relation, dataset, part))
            else:
                expression = adapter.traverse(part)
            selected.append(expression.label(name))
        keys = [adapter.traverse(key) for key in keys]
        return sa.select(*keys, *selected).select_from(ranked).group_by(*keys)

    @staticmethod
    def _interpolated(value: sa.ColumnElement, rank: sa.ColumnElement,
                      position: sa.ColumnElement) -> sa.ColumnElement:
        """x[⌊h⌋] + (x[⌈h⌉] − x[⌊h⌋])·(h − ⌊h⌋) over the ranked rows of a group (rank 1 is
        x[0], h the position); NULL when the group has no value."""
        low = sa.func.max(sa.case((rank == sa.func.floor(position) + 1, value)))
        high = sa.func.max(sa.case((rank == sa.func.ceil(position) + 1, value)))
        return low + (high - low) * sa.func.max(position - sa.func.floor(position))

    # -- running statements -----------------------------------------------------------------

    def frame(self, statement: sa.Select) -> pd.DataFrame:
        try:
            result = self.connection.execute(statement)
            rows = result.fetchall()
        except sa.exc.SQLAlchemyError as error:
            raise self.source.error(error, "pushdown query failed") from None
        frame = pd.DataFrame.from_records(rows, columns=list(result.keys()), coerce_float=False)
        return decode_bytes(frame)

    def rows(self, statement: sa.Select) -> list[tuple]:
        """The rows of `statement` as the driver gives them (values to bind again)."""
        try:
            return [tuple(row) for row in self.connection.execute(statement)]
        except sa.exc.SQLAlchemyError as error:
            raise self.source.error(error, "pushdown query failed") from None

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


def _compare(left: sa.ColumnElement, values: list[Any], op: str) -> sa.ColumnElement:
    """left <op> the value(s) of a filter; nulls never satisfy it, as in the pandas engine."""
    if op == "in":
        return left.in_(values)
    if op == "not_in":
        return sa.and_(left.not_in(values), left.is_not(None))
    value = values[0]
    if op == "ne":
        return sa.and_(left != value, left.is_not(None))
    return {"eq": left.__eq__, "lt": left.__lt__, "le": left.__le__,
            "gt": left.__gt__, "ge": left.__ge__}[op](value)


def _canonical_uuid(text: str) -> bool:
    """`text` is a uuid as PostgreSQL writes one (lowercase, hyphenated): comparing the
    column as a uuid is then comparing its text."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def decode_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """Text read as bytes (see `Tables.exact`) back to text."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, (bytes, bytearray))).any():
            frame[column] = values.map(lambda v: v.decode("utf-8", "replace")
                                       if isinstance(v, (bytes, bytearray)) else v)
    return frame


@dataclass(frozen=True)
class Axis:
    """How times of some columns are handled in SQL: as the database's own timestamps
    (`native`: ordering, comparison and interval arithmetic need no per-row conversion,
    and indexes still apply) or as integer epoch units (text timestamps, local zones)."""

    db: Tables
    native: bool

    def of(self, dataset: str, relation: sa.FromClause, column: str) -> sa.ColumnElement:
        expression = relation.c[column]
        return expression if self.native else self.db.epoch(dataset, expression, column)

    def later(self, current, previous, seconds: float) -> sa.ColumnElement:
        """current is more than `seconds` after previous."""
        if not self.native:
            return current - previous > self.db.span(seconds)
        if self.db.dialect == "postgresql":
            return current - previous > sa.literal(timedelta(seconds=seconds), sa.Interval())
        return sa.func.timestampdiff(sa.text("MICROSECOND"), previous, current) > \
            int(round(seconds * 1_000_000))

    def plus(self, moment, seconds: float) -> sa.ColumnElement:
        if not self.native:
            return moment + self.db.span(seconds)
        if self.db.dialect == "postgresql":
            return moment + sa.literal(timedelta(seconds=seconds), sa.Interval())
        return sa.func.timestampadd(sa.text("MICROSECOND"), int(round(seconds * 1_000_000)),
                                    moment)

    def epoch(self, dataset: str, expression, column: str) -> sa.ColumnElement:
        """Epoch units of a time on this axis (for the few rows that are shown)."""
        return self.db.epoch(dataset, expression, column) if self.native else expression


def burst_starts(time: sa.ColumnElement, partition: list[sa.ColumnElement],
                 order: list[sa.ColumnElement], axis: Axis, seconds: float) -> sa.ColumnElement:
    """1 where an event opens a burst (first of its partition, or more than `seconds`
    after the previous event), else 0. Rows without a time open their own."""
    previous = sa.func.lag(time).over(partition_by=partition, order_by=[time, *order])
    return sa.case((time.is_(None), 1), (previous.is_(None), 1),
                   (axis.later(time, previous, seconds), 1), else_=0)


def _as_text(expression: sa.ColumnElement, kind: Any) -> sa.ColumnElement:
    """A number as the pandas engine writes it when it meets text: 7.0 (a float column, or
    an integer column that holds a null and so became float in pandas) is "7"."""
    if isinstance(kind, (sa.Float, sa.Numeric)) and not isinstance(kind, sa.Integer):
        whole = sa.cast(expression, sa.BigInteger)
        return sa.case((expression == whole, sa.cast(whole, sa.String)),
                       else_=sa.cast(expression, sa.String))
    return sa.cast(expression, sa.String)
