"""Metric thresholds: a value or rate over a window against warn/critical bounds (seeds 000, 004).

"Delivery rate < 90%", "template fallback > 50%", "opt-out > 10%", "a channel
at 0%". A metric is one of

* `value: avg(llm_cost_usd)` — an aggregate, or a percentile: `p95(response_ms)`;
* `numerator: sum(delivered_count)` / `denominator: sum(sent_count)` — a ratio;
* `share: count` — each group's part of the total (needs `by`).

computed over the rows of `dataset` whose `time` lies in the measured interval
[start, end) (every row without a `window`), optionally per group (`by:
[channel]`; `expect_groups` lists groups that must exist, so a channel with no
rows at all is measured over no rows). Bounds are `thresholds: {warn: "< 95%",
critical: "< 90%"}`; each group breaching a bound is one violation, and the
check takes the worst level.

The interval slides by default: [now − window, now), so consecutive runs never
count a row twice. With `align: hour|day|week` it is the last `window` of whole
calendar hours, days or weeks (a week starts on Monday) in the dataset's
`timezone` that ended at or before the run's `now`: at 10:00:05 or at 10:40,
`window: 1h, align: hour` measures [09:00, 10:00) and `window: 2h` [08:00,
10:00); at 00:00:05, `window: 1d, align: day` measures the day before. A day is
a calendar day, 23 or 25 hours long when the clocks change. The interval is
computed once, from the run's `now`, and both engines compare times against
the same two bounds; the report records it.

Percentiles (seed 000: "Response Time (p95) < 500 ms, warn > 1 s, critical >
2 s"): `p50(col)` (or `median(col)`), `p90`, `p95`, `p99` and `percentile(col,
0.9)` (a fraction in (0, 1)) are continuous percentiles, interpolated linearly
between the two nearest ranks, over the group's numbers (its values read as the
other aggregates read them; nulls are left out): with the n numbers sorted
x[0..n−1] and h = (n − 1)·fraction, x[⌊h⌋] + (h − ⌊h⌋)·(x[⌈h⌉] − x[⌊h⌋]). One
value is its own percentile; 1..10 give p50 5.5, p90 9.1, p95 9.55
(9.549999999999999 in doubles, as 0.95 is) and p99 9.91. This is PostgreSQL's
`percentile_cont(0.95) WITHIN GROUP (ORDER BY col)` and pandas' grouped
`quantile(0.95, interpolation="linear")`, computed to the last digit by both
engines on every database: SQLite through `values.percentile`, MariaDB and MySQL
from ranks (`Tables.grouped`: MariaDB's PERCENTILE_CONT rounds differently in
the last digit, MySQL has none). A percentile can be a `value`, a `numerator` or
a `denominator` (p99 / p50), not a `share`.

Empty means something. A count (`count`, `count(col)`, `count_distinct(col)`)
or a `sum` over no rows — an empty window, or an expected group without rows —
is 0, and is judged like any other value: `< 50% of baseline` fires on a day
with none. `avg`, `min`, `max` and a percentile over no rows (or over nothing
but nulls), a ratio whose denominator is 0 and a share of a total of 0 have no
value, nor has a check with `by` that finds no group at all; such a group (or
the whole check) takes the `on_empty` level —
`warn` by default, `fail`, `info`, or `pass` — never a silent pass, and a note
says why ("no rows in [start, end)", "denominator 0").

A relative bound ("< 50% of baseline", "> 2x baseline") compares a group with
the `statistic` of its own values in earlier runs of this audit on this target
(from the run history): the last `runs` values (7 by default) or, with
`baseline.window: 7d`, the values of the runs whose `now` lies in [now − 7d,
now) — one clock, the runs' own `now`. A value that breached a bound (warn or
critical) in its own run is left out (`exclude: breaches`, the default), so a
spike does not raise its own baseline; a group flagged only for too little
history, or for having no value, breached nothing. With fewer than `min_runs`
values left, the group is reported at the `insufficient` level. A note says
which runs formed each baseline: "baseline 0.42 = median of 6 runs
2026-11-22..2026-11-28 (2 breaching runs left out)".
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from integrity.checks import Check, Measurement
from integrity.config import AggregateField, CheckConfig, Duration, Model
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import Threshold, format_duration, parse_threshold


class MetricThresholds(Model):
    warn: Threshold | None = Field(None, description=(
        "A group warns when its value meets this bound: `\"< 95%\"`, `\"> 2.5\"`, "
        "`\"< 50% of baseline\"`, `\"> 2x baseline\"`. Default: not set."))
    critical: Threshold | None = Field(None, description=(
        "A group fails when its value meets this bound (it wins over `warn`). Default: not "
        "set; give at least one of `warn` and `critical`."))

    @field_validator("warn", "critical", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return None if value is None else parse_threshold(value, default_measure="value")

    @model_validator(mode="after")
    def _one_needed(self):
        if self.warn is None and self.critical is None:
            raise ValueError("give at least one of warn or critical")
        return self


class Baseline(Model):
    """Where relative bounds ('< 50% of baseline') get their baseline: the check's own
    values in earlier runs of this audit on this target (from the run history) — the last
    `runs`, or those of the last `window` — without the values that breached a bound."""

    runs: Annotated[int, Field(ge=1, le=365)] = Field(7, description=(
        "How many previous runs of this audit (with a value for the group) the baseline "
        "looks at, 1 to 365, when `window` is not set. Default 7."))
    window: Duration | None = Field(None, description=(
        "Look at the runs whose `now` lies in [now − window, now) instead, e.g. `7d`: the "
        "same span of time however often the audit runs. Give `runs` or `window`, not "
        "both. Default: not set (`runs`)."))
    statistic: Literal["median", "mean", "min", "max"] = Field("median", description=(
        "How those runs' values (per group) make the baseline. Default `median`."))
    exclude: Literal["breaches", "none"] = Field("breaches", description=(
        "`breaches`: leave out the values that breached a bound (warn or critical) in their "
        "own run, group by group, so a spike does not raise its own baseline; `none`: keep "
        "every value. Default `breaches`."))
    min_runs: Annotated[int, Field(ge=1)] = Field(3, description=(
        "The fewest earlier values (breaches left out) a relative bound needs. Default 3."))
    insufficient: Literal["info", "warning"] = Field("info", description=(
        "The level of a group with too little history for a relative bound — never a "
        "silent pass. Default `info`."))

    @model_validator(mode="after")
    def _runs_or_window(self):
        if self.window is not None and "runs" in self.model_fields_set:
            raise ValueError("give runs or window, not both")
        if self.window is not None and not self.window:
            raise ValueError("window must be longer than 0")
        return self


class MetricConfig(CheckConfig):
    kind: Literal["metric"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset measured. Required.")
    value: AggregateField | None = Field(None, description=(
        "The metric as one aggregate, e.g. `avg(llm_cost_usd)` (the aggregates of "
        "`reconciliation`), or a percentile: `p50(col)` (`median(col)`), `p90`, `p95`, "
        "`p99`, `percentile(col, 0.9)` — continuous, interpolated linearly between the two "
        "nearest ranks of the group's numbers, as PostgreSQL's `percentile_cont`; none "
        "without a number. Give exactly one of `value`, `numerator` with `denominator`, "
        "or `share`."))
    numerator: AggregateField | None = Field(None, description=(
        "With `denominator`: the metric is numerator / denominator, e.g. "
        "`sum(delivered_count)`, or a percentile (`p99(response_ms)` over "
        "`p50(response_ms)`)."))
    denominator: AggregateField | None = Field(None, description=(
        "With `numerator`, e.g. `sum(sent_count)`. A denominator of 0 gives no value: "
        "the group takes the `on_empty` level."))
    share: AggregateField | None = Field(None, description=(
        "The metric is each group's part of the total, e.g. `count` (needs `by`; not a "
        "percentile)."))
    by: list[str] = Field([], description=(
        "Group columns: each group is measured and judged on its own, e.g. `[channel]`. "
        "Default: none (one value for all rows)."))
    expect_groups: list[Any] | None = Field(None, description=(
        "Groups that must exist, with exactly one `by` column: a group without rows is "
        "measured over no rows (a count or sum: 0; a ratio, share, average or percentile: "
        "no value, `on_empty`). Default: not set."))
    time: str | None = Field(None, description=(
        "The time column `window` applies to; give both or neither. Default: not set."))
    window: Duration | None = Field(None, description=(
        "Only rows whose `time` lies in [now − window, now) count, so consecutive runs "
        "never count a row twice (with `align`: the last `window` of whole buckets). "
        "Default: not set (every row)."))
    align: Literal["hour", "day", "week"] | None = Field(None, description=(
        "Measure whole calendar buckets in the dataset's `timezone`: the last `window` of "
        "complete hours, days or weeks (from Monday) that ended at or before the run's "
        "`now`, so a run at 10:00:05 or 10:40 with `window: 1h, align: hour` measures "
        "[09:00, 10:00). `window` must be a whole number of them. Default: not set (the "
        "window slides with `now`)."))
    on_empty: Literal["warn", "fail", "pass", "info"] = Field("warn", description=(
        "The level of a group without a value — `avg`, `min`, `max` or a percentile over no "
        "rows (or no number), a ratio "
        "whose denominator is 0, a share of a total of 0 — or of the whole check when `by` "
        "finds no group (a count or sum over no rows is 0, and judged): `warn` — the group "
        "warns; `fail` — it fails; `info` — it is reported; `pass` — it passes; each with "
        "a note saying why. As for every check, also what happens when `where` matches "
        "none of the dataset's rows. Default `warn`."))
    thresholds: MetricThresholds = Field(  # type: ignore[assignment]
        description=(
            "Bounds on the metric's value — not on a violation count: `{warn: \"< 95%\", "
            "critical: \"< 90%\"}`; each group beyond a bound is one violation. Required."))
    baseline: Baseline = Field(Baseline(), description=(
        "Where relative bounds (`< 50% of baseline`) get their baseline: this check's "
        "values in earlier runs, from the run history."))
    format: Literal["percent", "number"] | None = Field(None, description=(
        "How values are shown: `percent` or `number`. Default: not set (percent for a ratio "
        "or share, number for `value`)."))

    @field_validator("share")
    @classmethod
    def _not_a_percentile(cls, share: Any) -> Any:
        if share is not None and share.fraction is not None:
            raise ValueError(f"{share} has no total for a group to be a share of; measure "
                             f"each group's own with value: {share} and by")
        return share

    @model_validator(mode="after")
    def _shape(self):
        shapes = [self.value is not None, self.numerator is not None or self.denominator is not None,
                  self.share is not None]
        if sum(shapes) != 1:
            raise ValueError("give exactly one of value, numerator+denominator, or share")
        if (self.numerator is None) != (self.denominator is None):
            raise ValueError("a ratio needs both numerator and denominator")
        if self.share is not None and not self.by:
            raise ValueError("share needs `by` (the groups whose share is measured)")
        if (self.window is None) != (self.time is None):
            raise ValueError("window and time go together (time: the column the window applies to)")
        if self.expect_groups is not None and len(self.by) != 1:
            raise ValueError("expect_groups needs exactly one `by` column")
        return self

    @property
    def is_rate(self) -> bool:
        if self.format:
            return self.format == "percent"
        return self.value is None


# Aggregates that are 0 over no rows; the others (avg, min, max, percentiles) have no value
# there.
ADDITIVE = {"count", "count_distinct", "sum"}
# The level a group without a value takes, by `on_empty`.
ON_EMPTY_LEVELS = {"warn": "warning", "fail": "critical", "info": "info", "pass": None}
ALIGN_UNITS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def measured_interval(now: datetime, window: timedelta, align: str | None, zone: str
                      ) -> tuple[datetime, datetime]:
    """[start, end) in UTC that a run at `now` measures (see the module docstring)."""
    now = now.astimezone(timezone.utc)
    if align is None:
        return now - window, now
    local = now.astimezone(ZoneInfo(zone))
    if align == "hour":
        # An hour is an hour of real time, the clocks changing or not; only its start is
        # local (a zone 5:30 ahead of UTC starts its hours at UTC's half hours).
        end = local.replace(minute=0, second=0, microsecond=0).astimezone(timezone.utc)
        return end - window, end
    # Days and weeks are counted on the local calendar (wall-clock arithmetic), so a day
    # the clocks change is still one day.
    end_local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if align == "week":
        end_local -= timedelta(days=local.weekday())
    start_local = end_local - timedelta(days=window // timedelta(days=1))
    return start_local.astimezone(timezone.utc), end_local.astimezone(timezone.utc)


def interval_text(interval: tuple[datetime, datetime], zone: str) -> str:
    """`[2026-01-30 09:00, 10:00) UTC`: the interval in the dataset's time zone, the end's
    date only when it differs from the start's."""
    start, end = (moment.astimezone(ZoneInfo(zone)) for moment in interval)

    def clock(moment: datetime) -> str:
        seconds = moment.strftime(":%S") if moment.second or moment.microsecond else ""
        fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
        return moment.strftime("%H:%M") + seconds + fraction

    first = f"{start:%Y-%m-%d} {clock(start)}"
    second = clock(end) if end.date() == start.date() else f"{end:%Y-%m-%d} {clock(end)}"
    return f"[{first}, {second}) {zone}"


def _runs(count: int, kind: str = "") -> str:
    return f"{count} {kind}run" + ("" if count == 1 else "s")


class Metric(Check):
    """A value or rate over a window against bounds."""

    kind = "metric"
    Config = MetricConfig
    config: MetricConfig
    _interval: tuple[datetime, datetime] | None = None  # of the run being measured

    @classmethod
    def validate(cls, config, audit):
        if config.align is None:
            return []
        if config.window is None:
            return [(("align",), "align needs a window (and its time column): the number of "
                                 "whole buckets measured, e.g. window: 1h with align: hour")]
        unit = ALIGN_UNITS[config.align]
        if config.window < unit or config.window % unit:
            return [(("window",), f"window {format_duration(config.window)} is not a whole "
                                  f"number of {config.align}s (align: {config.align}); use e.g. "
                                  f"{format_duration(unit)} or {format_duration(2 * unit)}")]
        return []

    def columns(self):
        config = self.config
        wanted = [*config.by, config.time, *filter_columns(config.where)]
        for aggregate in self.parts():
            wanted += aggregate.columns
        return {config.dataset: list(dict.fromkeys(c for c in wanted if c))}

    def parts(self) -> list:
        """The aggregates to compute per group: [value], [numerator, denominator] or [share]."""
        config = self.config
        if config.value is not None:
            return [config.value]
        if config.share is not None:
            return [config.share]
        return [config.numerator, config.denominator]

    def measure(self, data) -> Measurement:
        import pandas as pd

        from integrity.checks.common import aggregate

        config = self.config
        self._baseline = data.baseline
        rows = data.rows(config.dataset, config.where)
        interval = self.interval(data.now)
        if interval is not None:
            times = data.time_column(config.dataset, rows, config.time)
            start, end = (pd.Timestamp(moment) for moment in interval)
            rows = rows[((times >= start) & (times < end)).to_numpy()]
        by = list(config.by)
        if not by:  # one value, over no rows too (SQL's aggregate without GROUP BY)
            groups = pd.DataFrame({f"a{i}": [aggregate(data, config.dataset, rows, part, [])]
                                   for i, part in enumerate(self.parts())})
        elif rows.empty:
            groups = pd.DataFrame(columns=[*by, *[f"a{i}" for i in range(len(self.parts()))]])
        else:
            series = [aggregate(data, config.dataset, rows, part, by).rename(f"a{i}")
                      for i, part in enumerate(self.parts())]
            groups = pd.concat(series, axis=1).reset_index()
            groups.columns = [*by, *[f"a{i}" for i in range(len(series))]]
        total = (aggregate(data, config.dataset, rows, config.share, [])
                 if config.share is not None and not rows.empty else None)
        return self.judge(groups, total, population=len(rows))

    def measure_sql(self, db) -> Measurement:
        import pandas as pd
        import sqlalchemy as sa

        config = self.config
        self._baseline = db.baseline
        rows = db.alias(config.dataset, "rows")
        scope = db.where(config.dataset, rows, config.where)
        interval = self.interval(db.now)
        if interval is not None:
            scope = sa.and_(scope,
                            db.time_at_least(config.dataset, rows, config.time, interval[0]),
                            db.time_before(config.dataset, rows, config.time, interval[1]))
        by = [db.key(config.dataset, rows, column).label(column) for column in config.by]
        statement = db.grouped(config.dataset, rows, scope, by, [
            *((f"a{i}", part) for i, part in enumerate(self.parts())),
            ("_rows", sa.func.count())])
        groups = db.frame(statement)
        population = int(groups.pop("_rows").sum()) if len(groups) else 0
        total = None
        if config.share is not None and population:
            if config.share.function in {"count", "sum"}:  # additive: the groups add up
                total = pd.to_numeric(groups["a0"], errors="coerce").sum(min_count=1)
                total = None if pd.isna(total) else total  # SUM of nothing but NULLs
            else:
                total = db.scalar(sa.select(db.aggregate(rows, config.dataset, config.share))
                                  .select_from(rows).where(scope))
        outcome = self.judge(groups, None if total is None else float(total), population)
        outcome.sql = db.sql(statement)
        hint = db.index_hint(config.dataset, config.time) if config.window else None
        if hint:
            outcome.notes.append(hint.replace("the newest", "the window"))
        return outcome

    def interval(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The interval this run measures (None without a window), kept for `describe`."""
        config = self.config
        self._interval = None if config.window is None else measured_interval(
            now, config.window, config.align, self.zone)
        return self._interval

    @property
    def zone(self) -> str:
        return self.audit.datasets[self.config.dataset].timezone

    def judge(self, groups, total, population: int) -> Measurement:
        """From per-group aggregates (columns by…, a0[, a1]; one row without `by`, even over
        no rows) to the judged measurement."""
        import numpy as np
        import pandas as pd

        config = self.config
        rowless = pd.Series(population == 0, index=groups.index)  # measured over no rows
        if config.expect_groups is not None:
            groups, rowless = self._expected(groups, rowless, config.expect_groups)
        numbers = groups.drop(columns=list(config.by)).apply(
            lambda column: pd.to_numeric(column, errors="coerce").astype("float64"))
        if config.share is not None:
            value = numbers["a0"] / total if total else numbers["a0"] * np.nan
        elif config.value is not None:
            value = numbers["a0"]
        else:
            value = numbers["a0"] / numbers["a1"].replace(0, np.nan)
        why = [None if not pd.isna(number) else self._no_value(empty, parts, total)
               for number, empty, parts in zip(value, rowless, numbers.itertuples(index=False))]
        if config.by:
            table = groups[list(config.by)].assign(value=value.to_numpy(), _why=why)
            table = self._in_order(table)
        else:
            table = pd.DataFrame({"scope": ["all rows"] * len(value), "value": value.to_numpy(),
                                  "_why": why})
        table = table.reset_index(drop=True)
        reasons = [reason if isinstance(reason, str) else None for reason in table["_why"]]
        return self._result(table.drop(columns="_why"), population, reasons)

    def _in_order(self, table):
        """Groups in their natural order, as both engines show them; in text order when
        they mix types (an expected group 1 among text)."""
        by = list(self.config.by)
        try:
            return table.sort_values(by, kind="stable")
        except TypeError:
            return table.sort_values(by, kind="stable", key=lambda column: column.astype(str))

    def _expected(self, groups, rowless, expected):
        """`groups` with a row for each expected group that has none, its aggregates taken
        over no rows (a count or sum is 0, anything else null), and `rowless` to match."""
        import pandas as pd

        column = self.config.by[0]
        present = set(groups[column].astype(str))
        missing = [group for group in expected if str(group) not in present]
        extra = pd.DataFrame({column: missing, **{
            f"a{i}": [0.0 if part.function in ADDITIVE else float("nan")] * len(missing)
            for i, part in enumerate(self.parts())}})
        flags = pd.Series([True] * len(missing))
        if groups.empty:  # nothing to append to (and no all-NA concatenation)
            return extra, flags
        return (pd.concat([groups, extra], ignore_index=True),
                pd.concat([rowless, flags], ignore_index=True))

    def _no_value(self, rowless: bool, parts, total) -> str:
        """Why a group (or the scope) has no value, in the note and its violation row."""
        config = self.config
        if rowless:
            return self._no_rows()
        if config.share is not None:
            return "total 0" if not total else f"{config.share} has no value"
        if config.value is not None:
            return f"{config.value} has no value"
        numerator, denominator = parts
        if denominator == 0:
            return "denominator 0"
        if denominator != denominator:
            return f"the denominator {config.denominator} has no value"
        return f"the numerator {config.numerator} has no value"

    def _no_rows(self) -> str:
        if self._interval is None:
            return "no rows"
        return f"no rows in {interval_text(self._interval, self.zone)}"

    def _result(self, table, population, why):
        import pandas as pd

        from integrity.checks.common import worst_level

        config = self.config
        notes: list[str] = []
        keys = list(config.by) or ["scope"]
        empty_level = ON_EMPTY_LEVELS[config.on_empty]
        if table.empty:  # `by` found no group at all: the whole check has no value
            notes.append(f"no value: {self._no_rows()}, so no group to measure; "
                         f"on_empty: {config.on_empty}")
            return Measurement(violations=table, violation_count=0, population=population,
                               keys=keys, level=empty_level, judged=True, notes=notes,
                               interval=self._interval)
        levels = pd.Series(None, index=table.index, dtype="object")
        reasons = pd.Series(None, index=table.index, dtype="object")  # the `bound` column
        bounds = config.thresholds
        groups = self.group_keys(table)
        valued = table["value"].notna()
        baselines, left_out = self.baselines([g for g, ok in zip(groups, valued) if ok], notes)
        for level, bound in (("warning", bounds.warn), ("critical", bounds.critical)):
            if bound is not None:
                breached = pd.Series([bound.breached(value, baselines.get(group)) for value, group
                                      in zip(table["value"], groups)], index=table.index)
                levels[breached], reasons[breached] = level, str(bound)
        # Recorded with the values: later baselines leave these out. A group flagged below
        # only for want of history, or of a value, breached nothing.
        breaches = {group for group, level in zip(groups, levels) if not pd.isna(level)}
        if self.relative:
            short = [index for index, group in zip(table.index, groups)
                     if valued[index] and baselines.get(group) is None]
            if short:
                # Too little history: say so, never pass silently.
                for index in short:
                    if pd.isna(levels[index]):
                        levels[index] = config.baseline.insufficient
                        reasons[index] = "baseline: too little history"
                without = f", {_runs(left_out, 'breaching ')} left out" if left_out else ""
                notes.append(f"too little history for a baseline ({len(short)} group(s) with "
                             f"fewer than {config.baseline.min_runs} earlier runs{without}): "
                             f"{config.baseline.insufficient}")
        for reason, indices in self._by_reason(why).items():
            notes.append(self._no_value_note(reason, [groups[i] for i in indices]))
            if empty_level is not None:
                levels[indices], reasons[indices] = empty_level, f"no value: {reason}"
        flagged = levels.notna()
        violations = table[flagged].assign(level=levels[flagged], bound=reasons[flagged])
        if self.relative:
            violations["baseline"] = [None if baselines.get(g) is None else
                                      self.format(baselines[g]) for g, keep in
                                      zip(groups, flagged) if keep]
        violations["value"] = violations["value"].map(self.format)
        single = None if config.by else table["value"].iloc[0]
        single = None if single is None or pd.isna(single) else float(single)
        shown = self.format(single) if single is not None else (
            ", ".join(f"{row[config.by[0]]}: {self.format(row['value']) or 'no value'}"
                      for _, row in table.iterrows()) if len(config.by) == 1 and
            len(table) <= 12 else None)
        values = {group: (None if pd.isna(value) else float(value))
                  for group, value in zip(groups, table["value"])}
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int(flagged.sum()), population=population,
                           keys=keys, level=worst_level(levels), judged=True,
                           value=single, value_text=shown, notes=notes, values=values,
                           breached_groups=breaches, interval=self._interval)

    @staticmethod
    def _by_reason(why: list[str | None]) -> dict[str, list[int]]:
        """Positions of the groups without a value, per reason, in order of appearance."""
        found: dict[str, list[int]] = {}
        for index, reason in enumerate(why):
            if reason is not None:
                found.setdefault(reason, []).append(index)
        return found

    def _no_value_note(self, reason: str, groups: list[str]) -> str:
        """`no value: denominator 0; on_empty: warn`, naming the groups when there are some."""
        where = "no value"
        if self.config.by:
            named = ", ".join(groups[:12]) + (f" and {len(groups) - 12} more"
                                              if len(groups) > 12 else "")
            where = f"no value for {len(groups)} group(s) ({named})"
        return f"{where}: {reason}; on_empty: {self.config.on_empty}"

    @property
    def relative(self) -> bool:
        bounds = self.config.thresholds
        return any(bound is not None and bound.relative for bound in (bounds.warn,
                                                                       bounds.critical))

    def group_keys(self, table) -> list[str]:
        """How each group is named in the run history ("all rows" without `by`)."""
        if not self.config.by:
            return ["all rows"] * len(table)
        return [" | ".join("null" if v is None or v != v else str(v) for v in row)
                for row in table[list(self.config.by)].itertuples(index=False, name=None)]

    def baselines(self, groups: list[str], notes: list[str]) -> tuple[dict[str, float], int]:
        """Each group's baseline from history, when there is enough of it, with a note
        saying which runs formed it; and how many breaching values were left out of the
        groups that have too little history."""
        if not self.relative:
            return {}, 0
        provider = getattr(self, "_baseline", None)
        if provider is None:
            notes.append("no run history: relative thresholds cannot be judged")
            return {}, 0
        spec = self.config.baseline
        compute = {"median": statistics.median, "mean": statistics.fmean,
                   "min": min, "max": max}[spec.statistic]
        found, formed, short_of = {}, [], 0
        for group in dict.fromkeys(groups):
            trailing = provider(self.id, group, spec.runs, spec.window)
            kept = [(value, as_of) for value, as_of, breached in trailing
                    if not (breached and spec.exclude == "breaches")]
            left_out = len(trailing) - len(kept)
            if len(kept) < spec.min_runs:
                short_of += left_out
                continue
            found[group] = float(compute([value for value, _ in kept]))
            formed.append(self._formed(group, found[group], [as_of for _, as_of in kept],
                                       left_out))
        notes += formed[:12]
        if len(formed) > 12:
            notes.append(f"… and {len(formed) - 12} more group(s) with a baseline")
        return found, short_of

    def _formed(self, group: str, baseline: float, moments: list[datetime],
                left_out: int) -> str:
        """`baseline 0.42 = median of 6 runs 2026-11-22..2026-11-28 (2 breaching runs left
        out)`: which values formed a group's baseline (the runs' `now`, as UTC days)."""
        first, last = (f"{moment.astimezone(timezone.utc):%Y-%m-%d}"
                       for moment in (min(moments), max(moments)))
        days = first if first == last else f"{first}..{last}"
        scope = f" for {group}" if self.config.by else ""
        text = (f"baseline{scope} {self.format(baseline)} = {self.config.baseline.statistic} "
                f"of {_runs(len(moments))} {days}")
        return text + (f" ({_runs(left_out, 'breaching ')} left out)" if left_out else "")

    def _span(self) -> str:
        """`the last 1d [2026-01-29 10:00, 2026-01-30 10:00) UTC`, `the hour [2026-01-30
        09:00, 10:00) UTC`: the interval once a run measured it, else how it is chosen."""
        config = self.config
        if config.align is None:
            span = f"the last {format_duration(config.window)}"
        else:
            count = config.window // ALIGN_UNITS[config.align]
            span = f"the {config.align}" if count == 1 else f"the {count} {config.align}s"
            if self._interval is None:
                span = span.replace("the", "the last complete", 1)
        if self._interval is None:
            return span + (f" (aligned in {self.zone})" if config.align else "")
        return f"{span} {interval_text(self._interval, self.zone)}"

    def format(self, value) -> str | None:
        if value is None or value != value:
            return None
        return f"{value * 100:.2f}%" if self.config.is_rate else f"{value:.6g}"

    def describe(self) -> str:
        config = self.config
        if config.value is not None:
            what = str(config.value)
        elif config.share is not None:
            what = f"each group's share of {config.share}"
        else:
            what = f"{config.numerator} / {config.denominator}"
        text = f"{what} of {config.dataset}"
        if config.by:
            text += f" per {', '.join(config.by)}"
        if config.window is not None:
            text += f" over {self._span()} of {config.time}"
        if config.where:
            text += f" where {describe_filter(config.where)}"
        bounds = [f"{name} if {bound}" for name, bound in
                  (("warning", config.thresholds.warn), ("critical", config.thresholds.critical))
                  if bound]
        return f"{text}: {'; '.join(bounds)}."
