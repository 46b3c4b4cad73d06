"""Row filters (`where:`) written as data, never as SQL text.

    where:
      status: SENT                    # equals
      channel: [EMAIL, WHATSAPP]      # one of
      deletedAt: null                 # is null
      direction: {not: INBOUND}       # not equal (a list: none of; null: not null)
      amount: {gt: 0, le: 1000}       # comparisons: lt, le, gt, ge
      createdAt: {since: 7d}          # within the last 7 days before the run's `now`
      sentAt: {until: 1h}             # at least an hour before `now` (or an ISO time)

Filters are parsed at validation time into `Condition`s and applied to a
dataframe here; a value from the audit file is only ever compared, never
pasted into a query.

A value compares with a column as a value of the column's type, alike on both
engines (the SQL engine knows the type from the database, `pushdown.Tables._typed`;
the pandas engine from what its reader put in the column, `_like`):

* a date (`date`, MariaDB `DATE`): the value is a day (`2026-01-30`), compared
  with the day stored — no time zone involved;
* a date and time (`timestamp`, `timestamptz`, `DATETIME`): the value is an ISO
  time read as `since:`/`until:` read theirs (an offset wins, none is UTC) and
  compared as a moment with the column as every check reads it (naive times in
  the dataset's `timezone:`);
* a value that is no day, or no time, is an error of the check, in the same
  words on both engines — never a silent "no row matches" (except on the pandas
  engine in a column holding no value at all, whose type it cannot see: no row
  matches there either way);
* PostgreSQL money compares as a number, as it is summed;
* other PostgreSQL types the pandas engine reads as their text (enum, uuid, json,
  arrays, inet, bit …) compare as that text: an enum by its label, in text order.
  A uuid given as its canonical text is bound as a uuid, the same comparison,
  which an index can serve;
* anything else as written: a text column against numbers compares as numbers,
  against true/false as booleans. On SQLite a declared type is only an affinity:
  values compare as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from integrity.errors import CheckError
from integrity.units import parse_duration

if TYPE_CHECKING:
    import pandas as pd

_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null", "since", "until"}
_ALIASES = {"not": "not", "equals": "eq", "lte": "le", "gte": "ge", "<": "lt", "<=": "le",
            ">": "gt", ">=": "ge", "=": "eq", "==": "eq", "!=": "ne"}
_TIME_OPS = {"since", "until"}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any = None

    def describe(self) -> str:
        if self.op == "is_null":
            return f"{self.column} is {'' if self.value else 'not '}null"
        symbol = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
                  "in": "in", "not_in": "not in"}.get(self.op)
        if self.op in _TIME_OPS:
            value = self.value
            if isinstance(value, timedelta):
                from integrity.units import format_duration
                text = f"now - {format_duration(value)}"
            else:
                text = value.isoformat()
            return f"{self.column} {'>=' if self.op == 'since' else '<'} {text}"
        if isinstance(self.value, (list, tuple)):
            return f"{self.column} {symbol} ({', '.join(map(repr, self.value))})"
        return f"{self.column} {symbol} {self.value!r}"


def parse_where(raw: Any) -> tuple[Condition, ...]:
    """Turn the `where:` mapping of an audit file into conditions (ValueError if malformed)."""
    if raw is None:
        return ()
    if isinstance(raw, tuple) and all(isinstance(item, Condition) for item in raw):
        return raw
    if not isinstance(raw, dict):
        raise ValueError("where must be a mapping of column to value, e.g. {status: SENT}")
    conditions: list[Condition] = []
    for column, spec in raw.items():
        if not isinstance(column, str) or not column:
            raise ValueError(f"where: column names must be strings, got {column!r}")
        conditions.extend(_parse_column(column, spec))
    return tuple(conditions)


def _parse_column(column: str, spec: Any) -> list[Condition]:
    if spec is None:
        return [Condition(column, "is_null", True)]
    if isinstance(spec, list):
        _check_scalars(column, spec)
        return [Condition(column, "in", tuple(spec))]
    if not isinstance(spec, dict):
        _check_scalars(column, [spec])
        return [Condition(column, "eq", spec)]
    if not spec:
        raise ValueError(f"where.{column}: empty condition")
    conditions = []
    for raw_op, value in spec.items():
        op = _ALIASES.get(str(raw_op), str(raw_op))
        if op == "not":
            if value is None:
                conditions.append(Condition(column, "is_null", False))
            elif isinstance(value, list):
                _check_scalars(column, value)
                conditions.append(Condition(column, "not_in", tuple(value)))
            else:
                _check_scalars(column, [value])
                conditions.append(Condition(column, "ne", value))
            continue
        if op not in _COMPARISONS:
            known = ", ".join(sorted((_COMPARISONS | {"not"}) - {"eq"}))
            raise ValueError(f"where.{column}: unknown operator {raw_op!r} (known: {known})")
        if op in _TIME_OPS:
            conditions.append(Condition(column, op, _parse_time_bound(column, op, value)))
        elif op in {"in", "not_in"}:
            if not isinstance(value, list):
                raise ValueError(f"where.{column}.{raw_op}: expected a list")
            _check_scalars(column, value)
            conditions.append(Condition(column, op, tuple(value)))
        elif op == "is_null":
            if not isinstance(value, bool):
                raise ValueError(f"where.{column}.is_null: expected true or false")
            conditions.append(Condition(column, op, value))
        else:
            _check_scalars(column, [value])
            conditions.append(Condition(column, op, value))
    return conditions


def _check_scalars(column: str, values: list[Any]) -> None:
    for value in values:
        if isinstance(value, (dict, list)):
            raise ValueError(f"where.{column}: values must be scalars, got {value!r}")
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL refuses NUL in text and other databases cut it: no engine could
            # compare it as written, so neither does.
            raise ValueError(f"where.{column}: a value cannot contain a NUL character (\\0): "
                             f"no database compares it as written")


def _parse_time_bound(column: str, op: str, value: Any) -> timedelta | datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parse_duration(value)
    except ValueError:
        pass
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    raise ValueError(f"where.{column}.{op}: expected a duration before now (7d) or an ISO time")


def columns(conditions: tuple[Condition, ...]) -> list[str]:
    return list(dict.fromkeys(condition.column for condition in conditions))


def describe(conditions: tuple[Condition, ...]) -> str:
    return " and ".join(condition.describe() for condition in conditions)


def time_bound(condition: Condition, now: datetime) -> datetime:
    value = condition.value
    return now - value if isinstance(value, timedelta) else value


def mask(frame: pd.DataFrame, conditions: tuple[Condition, ...], *, now: datetime,
         times: Any) -> pd.Series:
    """Boolean mask of the rows of `frame` that satisfy every condition.

    `times(column)` returns the column parsed as UTC timestamps (the dataset
    knows its time zone). Nulls never satisfy a comparison, as in SQL.
    """
    import pandas as pd

    result = pd.Series(True, index=frame.index)
    for condition in conditions:
        column = frame[condition.column]
        op, value = condition.op, condition.value
        if op in _TIME_OPS:
            bound = pd.Timestamp(time_bound(condition, now))
            parsed = times(condition.column)
            hit = parsed >= bound if op == "since" else parsed < bound
        elif op == "is_null":
            hit = column.isna() if value else column.notna()
        elif op in {"in", "not_in"}:
            left, values = _like(column, list(value), condition.column, times)
            hit = left.isin(values)
            hit = hit if op == "in" else (~hit & column.notna())
        else:
            left, (value,) = _like(column, [value], condition.column, times)
            hit = {
                "eq": lambda: left == value,
                "ne": lambda: (left != value) & column.notna(),
                "lt": lambda: left < value,
                "le": lambda: left <= value,
                "gt": lambda: left > value,
                "ge": lambda: left >= value,
            }[op]()
        result &= hit.fillna(False).astype(bool)
    return result


def day_value(column: str, value: Any) -> date | None:
    """A filter value for a date column, as a day (CheckError if it is none; a null in a
    list stays null, as for any column)."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CheckError(f"where.{column}: {value!r} is no day; the column holds dates "
                     f"(write e.g. 2026-01-30)")


def moment_value(column: str, value: Any) -> datetime | None:
    """A filter value for a date-and-time column, as an aware moment (naive: UTC, as
    `since:` reads it; CheckError if it is no ISO time; a null in a list stays null)."""
    if value is None:
        return None
    moment = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    if moment is None:
        raise CheckError(f"where.{column}: {value!r} is no date and time; the column holds "
                         f"timestamps (write an ISO time, e.g. 2026-01-30T12:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _like(column: pd.Series, values: list[Any], name: str, times: Any
          ) -> tuple[pd.Series, list[Any]]:
    """The column and the values to compare it with, alike (see the module's docstring):
    a column of timestamps as UTC moments, a column of days as days, anything else as
    `_comparable` aligns it. The type is what the reader put in the column."""
    import pandas as pd

    held = None
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        held = datetime
    elif column.dtype == object:  # a database column holds one type: its first value says
        present = column.notna().to_numpy()
        held = type(column.iloc[present.argmax()]) if present.any() else None
    if held is not None and issubclass(held, datetime):
        moments = [moment_value(name, value) for value in values]
        return times(name), [None if moment is None else pd.Timestamp(moment)
                             for moment in moments]
    if held is not None and issubclass(held, date):
        return column, [day_value(name, value) for value in values]
    return _comparable(column, values), values


def _comparable(column: pd.Series, values: Any) -> pd.Series:
    """Compare like SQL does: a text column against numbers compares as numbers,
    a boolean column against true/false as booleans."""
    import pandas as pd

    sample = [value for value in values if value is not None]
    if sample and all(isinstance(value, bool) for value in sample):
        if column.dtype == object or str(column.dtype).startswith(("str", "string")):
            return column.map(lambda v: None if v is None else str(v).lower() in {"1", "true", "t"})
        return column.astype("boolean")
    if sample and all(isinstance(value, (int, float)) for value in sample):
        if not pd.api.types.is_numeric_dtype(column):
            return pd.to_numeric(column, errors="coerce")
    elif sample and all(isinstance(value, str) for value in sample):
        if not (column.dtype == object or pd.api.types.is_string_dtype(column)):
            return column.astype("string")
    return column
