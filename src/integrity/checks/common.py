"""Machinery several check families share: bursts, key alignment, aggregates.

A *burst*: for one entity, events sorted by time, a maximal run in
which each event follows the previous one by at most the window. 0:00, 0:04,
0:08 with a 5-minute window is one burst. Events without a time belong to no
burst; callers decide what that means for their rule.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from integrity.config import Aggregate
    from integrity.sources import Frames


def bursts(frame: pd.DataFrame, times: pd.Series, by: list[str], window: timedelta,
           order: list[str] | None = None) -> pd.DataFrame:
    """`frame` rows with a time, sorted, with burst columns added.

    _time (UTC), _burst (a run-wide id), _burst_rank (1 = first event),
    _burst_size, _burst_first and _burst_last (times). Ties are broken by
    `order` so the "first" event of a burst is deterministic.
    """
    work = frame.assign(_time=times)
    work = work[work["_time"].notna()]
    sort_by = [*by, "_time", *(order or [])]
    work = work.sort_values(sort_by, kind="stable")
    if work.empty:
        return work.assign(_burst=pd.Series(dtype="int64"), _burst_rank=pd.Series(dtype="int64"),
                           _burst_size=pd.Series(dtype="int64"),
                           _burst_first=work["_time"], _burst_last=work["_time"])
    previous = work[by].shift()
    new_entity = (work[by] != previous).any(axis=1) | previous.isna().any(axis=1)
    gap = work["_time"].diff()
    new_burst = new_entity | (gap > pd.Timedelta(window)) | gap.isna()
    burst = new_burst.astype("int64").cumsum()
    grouped = work["_time"].groupby(burst)
    return work.assign(
        _burst=burst,
        _burst_rank=burst.groupby(burst).cumcount() + 1,
        _burst_size=grouped.transform("size"),
        _burst_first=grouped.transform("first"),
        _burst_last=grouped.transform("last"),
    )


def align(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Make two key columns comparable (an integer id against a text reference)."""
    if left.dtype == right.dtype:
        return left, right
    numeric = pd.api.types.is_numeric_dtype
    if numeric(left) and numeric(right):
        return left.astype("float64"), right.astype("float64")
    return _as_key_text(left), _as_key_text(right)


def _as_key_text(values: pd.Series) -> pd.Series:
    def text(value):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return values.map(text).astype("object")


def aligned_frames(left: pd.DataFrame, left_on: list[str], right: pd.DataFrame,
                   right_on: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copies of `left`/`right` whose join columns have comparable types."""
    left_out, right_out = {}, {}
    for left_column, right_column in zip(left_on, right_on):
        left_out[left_column], right_out[right_column] = align(left[left_column],
                                                              right[right_column])
    return left.assign(**left_out), right.assign(**right_out)


def has_nulls(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    return frame[columns].isna().any(axis=1)


def day_of(times: pd.Series) -> pd.Series:
    """The UTC calendar day of each time, as ISO text (stable across databases)."""
    return times.dt.strftime("%Y-%m-%d").where(times.notna(), None)


def aggregate(data: Frames, dataset: str, rows: pd.DataFrame, measure: Aggregate,
              by: list[str]) -> pd.Series | float:
    """Evaluate an aggregate (count, sum(x), p95(x), ...) over `rows`, grouped by `by`
    columns of rows.

    Returns a Series indexed by the groups, or a scalar when `by` is empty.
    The aggregate's own `where` narrows the rows first.
    """
    base = rows
    if measure.where:
        rows = data.narrow(dataset, rows, measure.where)
    column = measure.column
    if measure.function == "count" and column is None:
        values = pd.Series(1, index=rows.index, dtype="int64")
    else:
        values = rows[column]
        if measure.function != "count_distinct" and measure.function != "count":
            values = pd.to_numeric(values, errors="coerce")
    if measure.fraction is not None:
        return _percentile(values, [rows[name] for name in by], measure.fraction,
                           _groups_of(base, by) if measure.where and by else None)
    function = {"count": "count", "count_distinct": "nunique", "sum": "sum", "avg": "mean",
                "min": "min", "max": "max"}[measure.function]
    if not by:
        if function == "count":
            return float(values.notna().sum())
        if function == "nunique":
            return float(values.nunique())
        result = getattr(values, function)()
        if function == "sum":
            return float(result)
        return None if pd.isna(result) else float(result)
    groups = [rows[name] for name in by]
    grouped = values.groupby(groups, dropna=False, observed=True, sort=True)
    if function == "sum":
        result = grouped.sum(min_count=0).astype("float64")
    else:
        result = getattr(grouped, function)().astype("float64")
    if measure.where:
        # A group whose rows all fail the aggregate's own filter still exists: its count is 0.
        empty = 0.0 if function in {"count", "nunique", "sum"} else np.nan
        result = result.reindex(_groups_of(base, by), fill_value=empty)
    return result


def _groups_of(rows: pd.DataFrame, by: list[str]) -> pd.Index:
    return rows.groupby([rows[name] for name in by], dropna=False, observed=True,
                        sort=True).size().index


def _percentile(values: pd.Series, groups: list[pd.Series], fraction: float,
                every: pd.Index | None) -> pd.Series | float | None:
    """The continuous percentile (`values.percentile`'s rule) of each group's values,
    reindexed to `every` group when given; of all values without groups. Grouped quantile
    interpolates as x[lo] + (x[hi] − x[lo])·t, exactly as percentile_cont does;
    Series.quantile (numpy) does not above the midpoint and may differ in the last digit,
    hence one group even for all the values."""
    keys = groups or [pd.Series(0, index=values.index)]
    result = values.astype("float64").groupby(keys, dropna=False, observed=True, sort=True
                                              ).quantile(fraction, interpolation="linear")
    result = result.astype("float64")
    if not groups:
        return None if result.empty or pd.isna(result.iloc[0]) else float(result.iloc[0])
    return result if every is None else result.reindex(every, fill_value=np.nan)


def worst_level(levels) -> str | None:
    """The most severe level in a Series of levels (None where a row passed)."""
    for level in ("critical", "warning", "info"):
        if (levels == level).any():
            return level
    return None
