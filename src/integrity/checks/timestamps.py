"""Timestamps that must not move, and timestamps that must make sense (seed 000).

`timestamp_preserved` — "sentAt preserved on re-send (within 5min)". The
entity's events are cut into bursts (each event at most `window` after the
previous one). A stored timestamp that falls inside a burst but later than
the burst's first event (beyond `tolerance`, default 1 s, for clocks) was
overwritten by a re-send within the window: a violation. A re-send after the
window may move it legitimately; a timestamp outside every burst is not this
rule's business. Incrementally it follows `counter_vs_events`'s rule (see
`counters`): the entities whose row changed, that have events changed or had
events within the last overlap, or that violated last time, are judged again,
each with all its events; both datasets must declare `incremental:`, and a
deleted or changed event older than the overlap makes the run a full one.

`timestamp_valid` — "sentAt corruption (invalid dates or null values)". For
the rows in scope (e.g. `where: {status: SENT}`) the column must be present
and parseable, not in the future (beyond `future_tolerance`), not before
another column (`not_before: createdAt`) and not before `earliest`.
Incrementally (a dataset with `incremental:`) each row is judged on its own,
so a run re-checks the rows changed since the last run's watermark (minus the
overlap) plus every key that violated in the last run — a fixed, deleted or
out-of-scope row resolves — and every other row keeps its last status, which
was no violation: an unchanged row cannot move into the future as `now`
advances (a run whose `now` is before the last one's runs in full). The
population is counted over the whole table.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import Field, field_validator

from integrity.checks import Check, Measurement, add_columns, single_key_problems
from integrity.checks.counters import ByEntity, Events
from integrity.config import CheckConfig, Duration
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import format_duration


class PreservedConfig(CheckConfig):
    kind: Literal["timestamp_preserved"] = Field(description="Selects this check.")
    dataset: str = Field(description=(
        "The dataset holding the stored timestamp; it needs a one-column `key:` (the id the "
        "events refer to). Required."))
    column: str = Field(description=(
        "The stored timestamp that a re-send must not move, e.g. `sentAt`. Required."))
    events: Events = Field(description=(
        "The event log (e.g. the sends) whose bursts the stored timestamp is compared with. "
        "Required."))
    window: Duration = Field(timedelta(minutes=5), description=(
        "An entity's events at most this far apart (each from the previous) form one burst: "
        "a re-send within it must not move the timestamp. Default 5m."))
    tolerance: Duration = Field(timedelta(seconds=1), description=(
        "Clock tolerance: a stored time up to this much after the burst's first event is "
        "not a violation. Default 1s."))

    @property
    def datasets(self) -> list[str]:
        return [self.dataset, self.events.dataset]


class TimestampPreserved(ByEntity):
    """A re-send within the window must not move the timestamp."""

    kind = "timestamp_preserved"
    Config = PreservedConfig
    config: PreservedConfig

    @classmethod
    def validate(cls, config, audit):
        return single_key_problems(audit, config.dataset)

    def columns(self):
        config = self.config
        needed = {config.dataset: self.identity(config.dataset, config.column,
                                                *filter_columns(config.where))}
        return add_columns(needed, config.events.dataset, *config.events.columns)

    def measure(self, data) -> Measurement:
        import pandas as pd

        from integrity.checks.common import align, bursts

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        entities = data.rows(config.dataset, config.where)
        population, notes = len(entities), []
        if self.increments:
            entities = entities[self.rechecked_rows(data, entities)]
            notes.append(self.entity_note(len(entities), population))
        stored = data.time_column(config.dataset, entities, config.column)
        log = data.rows(events.dataset, events.where)
        log = log[log[events.entity].notna()]
        grouped = bursts(log, data.time_column(events.dataset, log, events.time),
                         [events.entity], config.window)
        spans = (grouped[grouped["_burst_size"] > 1]
                 .groupby("_burst")
                 .agg(_entity=(events.entity, "first"), burst_first=("_burst_first", "first"),
                      burst_last=("_burst_last", "first"), burst_events=("_burst_size", "first")))
        table = entities.assign(_stored=stored)
        table = table[table["_stored"].notna()]
        left, spans["_entity"] = align(table[key], spans["_entity"])
        joined = table.assign(_entity=left).merge(spans, on="_entity", how="inner")
        tolerance = pd.Timedelta(config.tolerance)
        moved = ((joined["_stored"] > joined["burst_first"] + tolerance)
                 & (joined["_stored"] <= joined["burst_last"] + tolerance))
        hits = joined[moved]
        violations = hits[self.identity(config.dataset, config.column)].assign(
            burst_first=hits["burst_first"], burst_last=hits["burst_last"],
            burst_events=hits["burst_events"],
            moved_by_seconds=(hits["_stored"] - hits["burst_first"]).dt.total_seconds())
        violations = violations.drop_duplicates(subset=[key]).sort_values(key, kind="stable")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=len(violations), population=population,
                           keys=[key], notes=notes)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        from integrity.pushdown import burst_starts

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        axis = db.axis((events.dataset, events.time), (config.dataset, config.column))
        log, entity, moment, scope = events.in_sql(db, axis)
        timed = (sa.select(entity.label("entity"), moment.label("moment"))
                 .where(scope, moment.is_not(None), *self.their_events(db, log))
                 .subquery("timed"))
        marked = sa.select(timed.c.entity, timed.c.moment,
                           burst_starts(timed.c.moment, [timed.c.entity], [], axis,
                                        config.window.total_seconds())
                           .label("opens")).subquery("marked")
        numbered = sa.select(
            marked.c.entity, marked.c.moment,
            sa.func.sum(marked.c.opens).over(partition_by=[marked.c.entity],
                                             order_by=[marked.c.moment],
                                             rows=(None, 0)).label("burst"),
        ).subquery("numbered")
        spans = (sa.select(numbered.c.entity, sa.func.min(numbered.c.moment).label("first"),
                           sa.func.max(numbered.c.moment).label("last"),
                           sa.func.count().label("size"))
                 .group_by(numbered.c.entity, numbered.c.burst)
                 .having(sa.func.count() > 1).subquery("spans"))
        entities = db.alias(config.dataset, "entities")
        stored = axis.of(config.dataset, entities, config.column)
        joined = db.same((config.dataset, key, entities.c[key]),
                         (events.dataset, events.entity, spans.c.entity))
        tolerance = config.tolerance.total_seconds()
        shown = self.identity(config.dataset, config.column)
        first = axis.epoch(events.dataset, spans.c.first, events.time)
        statement = (
            sa.select(*[entities.c[column] for column in shown],
                      first.label("burst_first"),
                      axis.epoch(events.dataset, spans.c.last, events.time).label("burst_last"),
                      spans.c.size.label("burst_events"),
                      (axis.epoch(config.dataset, stored, config.column) - first)
                      .label("moved_by"))
            .select_from(entities.join(spans, joined))
            .where(db.where(config.dataset, entities, config.where), stored.is_not(None),
                   stored > axis.plus(spans.c.first, tolerance),
                   stored <= axis.plus(spans.c.last, tolerance))
            .order_by(entities.c[key]))
        statement, population, notes = self.judged_again(db, entities, statement)
        violations = db.frame(statement)
        violations["burst_first"] = db.to_times(violations["burst_first"])
        violations["burst_last"] = db.to_times(violations["burst_last"])
        violations["moved_by_seconds"] = violations.pop("moved_by").astype("float64") / db.units
        violations = violations.drop_duplicates(subset=[key]).reset_index(drop=True)
        return Measurement(violations=violations, violation_count=len(violations),
                           population=population, keys=[key], sql=db.sql(statement),
                           notes=notes)

    def describe(self) -> str:
        config, events = self.config, self.config.events
        scope = f" ({describe_filter(events.where)})" if events.where else ""
        return (f"{config.dataset}.{config.column} must stay at the first event of a burst of "
                f"{events.dataset} events{scope} at most {format_duration(config.window)} apart: "
                f"a value inside a burst but later than its first event "
                f"(+{format_duration(config.tolerance)} tolerance) was overwritten by a re-send.")


class ValidConfig(CheckConfig):
    kind: Literal["timestamp_valid"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset holding the timestamp. Required.")
    column: str = Field(description=(
        "The timestamp column: a time column, or text holding ISO 8601 times (anything else "
        "is `unparseable`). Required."))
    required: bool = Field(True, description=(
        "Whether a null value is a violation (`null`). Default true."))
    not_in_future: bool = Field(True, description=(
        "Whether a time after the run's `now` plus `future_tolerance` is a violation "
        "(`in_future`). Default true."))
    future_tolerance: Duration = Field(timedelta(minutes=1), description=(
        "How far past `now` a time may be (clock skew) before it is `in_future`. "
        "Default 1m."))
    not_before: str | None = Field(None, description=(
        "Another time column this one must not precede, e.g. `createdAt` (violations: "
        "`before_createdAt`). Default: not set."))
    earliest: datetime | None = Field(None, description=(
        "A date or time no value may precede (`before_earliest`), e.g. `2020-01-01`; "
        "without an offset it is UTC. Default: not set."))

    @field_validator("earliest")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class TimestampValid(Check):
    """Null, unparseable, future or impossible timestamps."""

    kind = "timestamp_valid"
    Config = ValidConfig
    config: ValidConfig

    def incremental_problem(self, dataset: str) -> str | None:
        return self.row_local_problem(dataset)

    def columns(self):
        config = self.config
        return {config.dataset: self.identity(config.dataset, config.column, config.not_before,
                                              *filter_columns(config.where))}

    def measure(self, data) -> Measurement:
        import pandas as pd

        config = self.config
        rows = data.rows(config.dataset, config.where)
        population = len(rows)
        rows = rows[self.examined_rows(data, rows)]
        raw = rows[config.column]
        parsed = data.time_column(config.dataset, rows, config.column)
        problem = pd.Series(None, index=rows.index, dtype="object")
        if config.earliest is not None:
            problem[parsed < pd.Timestamp(config.earliest)] = "before_earliest"
        if config.not_before:
            other = data.time_column(config.dataset, rows, config.not_before)
            problem[parsed < other] = f"before_{config.not_before}"
        if config.not_in_future:
            horizon = pd.Timestamp(data.now) + pd.Timedelta(config.future_tolerance)
            problem[parsed > horizon] = "in_future"
        problem[raw.notna() & parsed.isna()] = "unparseable"
        if config.required:
            problem[raw.isna()] = "null"
        flagged = problem.notna()
        keep = self.identity(config.dataset, config.column, config.not_before)
        violations = rows.loc[flagged, keep].assign(problem=problem[flagged])
        key = self.audit.datasets[config.dataset].key or keep[:1]
        violations = violations.sort_values(key, kind="stable")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int(flagged.sum()), population=population,
                           keys=list(key), notes=[self.incremental_note(len(rows), population)]
                           if self.increment else [])

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        rows = db.alias(config.dataset, "rows")
        raw = rows.c[config.column]
        pair = [(config.dataset, config.column)] + (
            [(config.dataset, config.not_before)] if config.not_before else [])
        axis = db.axis(*pair)
        moment = axis.of(config.dataset, rows, config.column)
        cases = []
        if config.required:
            cases.append((raw.is_(None), "null"))
        if not axis.native:  # a real timestamp column cannot hold garbage
            cases.append((sa.and_(raw.is_not(None), moment.is_(None)), "unparseable"))
        if config.not_in_future:
            horizon = db.now + config.future_tolerance
            cases.append((db.time_after(config.dataset, rows, config.column, horizon),
                          "in_future"))
        if config.not_before:
            other = axis.of(config.dataset, rows, config.not_before)
            cases.append((moment < other, f"before_{config.not_before}"))
        if config.earliest is not None:
            cases.append((db.time_before(config.dataset, rows, config.column, config.earliest),
                          "before_earliest"))
        problem = sa.case(*cases, else_=sa.null())
        keep = self.identity(config.dataset, config.column, config.not_before)
        key = list(self.audit.datasets[config.dataset].key or keep[:1])
        scope = db.where(config.dataset, rows, config.where)
        examined = self.examined(db, rows)
        statement = (sa.select(*[rows.c[column] for column in keep], problem.label("problem"))
                     .where(scope, examined, problem.is_not(None))
                     .order_by(*[rows.c[column] for column in key]))
        violations = db.frame(statement)
        population = db.count(config.dataset, rows, scope, same_as=config.where)
        notes = [self.incremental_note(db.count(config.dataset, rows, sa.and_(scope, examined)),
                                       population)] if self.increment else []
        return Measurement(violations=violations, violation_count=len(violations),
                           population=population, keys=key, sql=db.sql(statement), notes=notes)

    def describe(self) -> str:
        config = self.config
        rules = []
        if config.required:
            rules.append("present")
        rules.append("parseable")
        if config.not_in_future:
            rules.append(f"not in the future (+{format_duration(config.future_tolerance)})")
        if config.not_before:
            rules.append(f"not before {config.not_before}")
        if config.earliest:
            rules.append(f"not before {config.earliest.isoformat()}")
        scope = f" for rows where {describe_filter(config.where)}" if config.where else ""
        return f"{config.dataset}.{config.column} must be {', '.join(rules)}{scope}."
