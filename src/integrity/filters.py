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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

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
            hit = _comparable(column, value).isin(list(value))
            hit = hit if op == "in" else (~hit & column.notna())
        else:
            left = _comparable(column, [value])
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
