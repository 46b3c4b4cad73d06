"""Freshness: the newest row of a dataset is younger than a bound (seeds 002, 003).

"Messages being processed", "background jobs running (every 30 seconds)".
The age is `now` minus the newest `time` among the rows in scope; it is
compared with `warn_after` and `critical_after` (or `max_age` at the check's
severity). With `by: [job]` every group is judged on its own newest row, and
`expect_groups` names groups that must exist: a job that never wrote a row is
stale. A dataset with no rows at all (in scope) is stale too, with or without
`by`: no data is not fresh data.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Duration
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import format_duration


class FreshnessConfig(CheckConfig):
    kind: Literal["freshness"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset that must keep receiving rows. Required.")
    time: str = Field(description="The time column whose newest value is judged. Required.")
    max_age: Duration | None = Field(None, description=(
        "The oldest the newest row may be; older is a violation at the check's `severity`. "
        "Give `max_age`, or `warn_after` and/or `critical_after`."))
    warn_after: Duration | None = Field(None, description=(
        "The newest row older than this warns. Default: not set."))
    critical_after: Duration | None = Field(None, description=(
        "The newest row older than this fails. Default: not set."))
    by: list[str] = Field([], description=(
        "Group columns: each group's newest row is judged on its own, e.g. `[job]`. "
        "Default: none (the whole dataset)."))
    expect_groups: list[Any] | None = Field(None, description=(
        "Groups that must exist, with exactly one `by` column: a group without rows is "
        "stale. Default: not set."))

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_age is None and self.warn_after is None and self.critical_after is None:
            raise ValueError("give max_age, or warn_after and/or critical_after")
        if self.max_age is not None and (self.warn_after or self.critical_after):
            raise ValueError("give max_age (with severity) or warn_after/critical_after, not both")
        if self.expect_groups is not None and len(self.by) != 1:
            raise ValueError("expect_groups needs exactly one `by` column")
        if self.thresholds is not None:
            raise ValueError("freshness is judged by max_age / warn_after / critical_after, "
                             "not thresholds")
        return self

    def bounds(self) -> list[tuple[str, timedelta]]:
        """(level, age) pairs, most severe first."""
        if self.max_age is not None:
            return [(self.severity, self.max_age)]
        pairs = [("critical", self.critical_after), ("warning", self.warn_after)]
        return [(level, age) for level, age in pairs if age is not None]


class Freshness(Check):
    """Is anything still arriving?"""

    kind = "freshness"
    Config = FreshnessConfig
    config: FreshnessConfig

    def columns(self):
        config = self.config
        wanted = [*config.by, config.time, *filter_columns(config.where)]
        return {config.dataset: list(dict.fromkeys(wanted))}

    def measure(self, data) -> Measurement:
        import pandas as pd

        config = self.config
        rows = data.rows(config.dataset, config.where)
        times = data.time_column(config.dataset, rows, config.time)
        if config.by:
            newest = times.groupby([rows[c] for c in config.by], dropna=False).max()
            table = newest.rename("newest").reset_index()
            table.columns = [*config.by, "newest"]
        else:
            table = pd.DataFrame({"newest": [times.max() if len(times) else pd.NaT]})
        return self.judge(table, int(times.notna().sum()), data.now)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        rows = db.alias(config.dataset, "rows")
        by = [db.key(config.dataset, rows, column).label(column) for column in config.by]
        # Only MAX: with an index on the time column the database reads one entry.
        statement = (sa.select(*by, db.newest(config.dataset, rows, config.time).label("newest"))
                     .where(db.where(config.dataset, rows, config.where)).group_by(*by))
        table = db.frame(statement)
        if not config.by and table.empty:
            table = table.reindex([0])
        table["newest"] = db.to_times(table["newest"])
        outcome = self.judge(table, int(table["newest"].notna().sum()), db.now)
        outcome.sql = db.sql(statement)
        hint = db.index_hint(config.dataset, config.time)
        if hint:
            outcome.notes.append(hint)
        return outcome

    def judge(self, table, row_count: int, now) -> Measurement:
        """From the newest time per group (columns by…, newest) to the judged measurement."""
        import pandas as pd

        config = self.config
        if config.by and config.expect_groups is not None:
            present = set(table[config.by[0]].astype(str))
            missing = [g for g in config.expect_groups if str(g) not in present]
            table = pd.concat([table, pd.DataFrame({config.by[0]: missing,
                                                    "newest": [pd.NaT] * len(missing)})],
                              ignore_index=True)
        if config.by and table.empty:
            # Not one group: the dataset itself is stale (no data is not fresh data), judged
            # as one group whose key is null.
            table = pd.DataFrame({**{column: [None] for column in config.by},
                                  "newest": [pd.NaT]})
        if not config.by:
            table = pd.DataFrame({"scope": ["all rows"], "newest": table["newest"].to_numpy()})
        table["newest"] = pd.to_datetime(table["newest"], utc=True)
        age = (pd.Timestamp(now) - table["newest"]).dt.total_seconds()
        levels = pd.Series(None, index=table.index, dtype="object")
        for level, bound in reversed(config.bounds()):
            levels[(age > bound.total_seconds()) | age.isna()] = level
        flagged = levels.notna()
        violations = table[flagged].assign(
            age=[format_duration(a) if a == a else "no rows" for a in age[flagged]],
            level=levels[flagged])
        notes = [] if row_count else ["no rows with a time at all: the dataset is stale"]
        from integrity.checks.common import worst_level

        worst = worst_level(levels)
        single = None if config.by or age.isna().iloc[0] else float(age.iloc[0])
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int(flagged.sum()), population=len(table),
                           keys=list(config.by) or ["scope"], level=worst, judged=True,
                           value=single,
                           value_text=None if single is None else
                           f"newest row {format_duration(single)} old", notes=notes)

    def describe(self) -> str:
        config = self.config
        bounds = "; ".join(f"{level} after {format_duration(age)}" for level, age in
                           config.bounds())
        scope = f" where {describe_filter(config.where)}" if config.where else ""
        per = f" per {', '.join(config.by)}" if config.by else ""
        return (f"The newest {config.dataset}.{config.time}{scope}{per} must be recent: "
                f"{bounds}.")
