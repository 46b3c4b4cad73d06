"""Counter vs. unique events (seed 000: "emailSentCount > number of unique email sends").

A stored counter (`emailSentCount`, `smsSentCount`) must equal — or in
`at_most` mode not exceed — the number of *unique* events of its channel for
the entity. Unique means one per distinct idempotency key when the events
carry one (events with a null key count one per burst), otherwise one per
burst of events no more than `window` apart (default 5 minutes); an event
without a time counts on its own. Problems are named: `over_count` (duplicate
requests incremented the counter: idempotency broken), `under_count`, and
`not_incrementing` (counter 0 while events exist; flagged in `at_most` mode
too unless `zero_counter: false`). A null counter reads as 0.

Incrementally — this rule is `timestamp_preserved`'s too — an entity's answer
depends on its own row and its own events only, so a run judges again, each
with its row and all its events (looked up by entity), exactly the entities
whose row changed since the entity dataset's watermark (minus the overlap),
that have an event changed since the event log's watermark (minus its
overlap; in or out of the events' filter), that had an event within the last
overlap when the last run read the log (recorded with its watermark: such an
event may since have been deleted or moved without a trace), or whose key
violated in the last run. Every other entity has the same row and the same
events as then, when it did not violate. Both datasets must declare
`incremental:` — with only one, a change in the other would go unseen, and
the check runs in full, saying so. A hard delete, or an update moving an event
to another entity, of an event older than the overlap leaves nothing a
watermark sees: each run records how many events are older than where the
next run starts, and when the next run counts another number it runs in full,
saying so (an update of such an event does too: a count cannot tell it from a
move). More than 10,000 entities with events within the overlap run the next
time in full. The population is counted over the whole table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from integrity.checks import (MOST_UNSETTLED, _NOT_A_KEY, Check, Measurement, add_columns,
                              bindable, bound_keys, changed_rows, changed_since, in_keys,
                              older_count, settled_problem, single_key_problems,
                              too_many_bound, typed_key)
from integrity.config import CheckConfig, Duration, Model, Where
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import format_duration

if TYPE_CHECKING:
    import pandas as pd


class Events(Model):
    """The event log a counter is compared with."""

    dataset: str = Field(description="The event log dataset, e.g. the send log. Required.")
    entity: str = Field(description=(
        "The event log's column holding the entity's id, matched to the checked dataset's "
        "one-column `key:`; events with a null entity are left out. Required."))
    time: str = Field(description=(
        "The event time column: an entity's events at most `window` apart form one burst. "
        "Required."))
    idempotency_key: str | None = Field(None, description=(
        "`counter_vs_events` only: a column naming one logical request; events sharing a "
        "value count once, events with a null key one per burst. Default: not set (one per "
        "burst)."))
    where: Where = Field((), description=(
        "A filter on the events, e.g. `{channel: EMAIL}` for one channel's sends. Default: "
        "every event."))

    @property
    def columns(self) -> list[str]:
        return [self.entity, self.time, *([self.idempotency_key] if self.idempotency_key else []),
                *filter_columns(self.where)]

    def in_sql(self, db, axis):
        """For the SQL engine: (relation, entity column, time on `axis`, filter incl.
        entity not null)."""
        import sqlalchemy as sa

        log = db.alias(self.dataset, "events")
        entity = db.key(self.dataset, log, self.entity)
        moment = axis.of(self.dataset, log, self.time)
        return log, entity, moment, sa.and_(db.where(self.dataset, log, self.where),
                                            entity.is_not(None))




class ByEntity(Check):
    """The incremental rule of a check of each entity against its events (module
    docstring): `config` has `dataset` (one-column key), `where` and `events`."""

    def needs_every_increment(self) -> bool:
        return True

    def incremental_problem(self, dataset: str) -> str | None:
        config = self.config
        if config.dataset == config.events.dataset:
            return "its entities and their events are one dataset"
        for where in (config.where, config.events.where):
            timed = [c for c in where if c.op == "until"]
            if timed:
                return (f"its filter on {timed[0].column} (until) lets unchanged rows in as "
                        f"time passes")
        return None

    def watermark_extras(self, db, dataset: str, since) -> dict:
        import sqlalchemy as sa

        events = self.config.events
        if dataset != events.dataset:
            return {}
        log = db.alias(dataset, "log")
        changed = changed_since(db, log, since)
        settled = older_count(db, since, "log")
        recent = db.frame(sa.select(log.c[events.entity].label("entity"))
                          .where(changed, log.c[events.entity].is_not(None)).distinct()
                          .limit(MOST_UNSETTLED + 1))["entity"]
        texts = [None if since.as_recorded(value) is None else str(since.as_recorded(value))
                 for value in recent]
        return {"settled": int(settled),
                "unsettled": {events.entity: texts if len(texts) <= MOST_UNSETTLED else None}}

    def incremental_start_problem(self, db, dataset: str) -> str | None:
        events = self.config.events
        if dataset != events.dataset:
            return None
        return settled_problem(db, self.increments[dataset], events.entity, "log", "events",
                               "entities had events",
                               "an event deleted or moved to another entity leaves nothing "
                               "a watermark sees")

    def changed_entities(self, db) -> list[tuple] | None:
        """SQL: the entities of the events changed since the log's increment, to bind
        (read by the change column's index); None when too many, or when the entity
        column's values do not bind as they are against the key."""
        import sqlalchemy as sa

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        if not bindable(db, (config.dataset, key), (events.dataset, events.entity)):
            return None
        log = db.alias(events.dataset, "changed_events")
        return db.once((self.id, "changed"), lambda: bound_keys(db, sa.select(
            log.c[events.entity]).where(changed_since(db, log, self.increments[events.dataset]),
                                        log.c[events.entity].is_not(None))))

    def recheck(self, db, entities):
        """SQL: the entities (rows of alias `entities`) an incremental run judges again: an
        OR of conditions each served by an index (the change column, the key) while the
        entities of changed events are few enough to bind."""
        import sqlalchemy as sa

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        mine, theirs = self.increments[config.dataset], self.increments[events.dataset]
        kind = db.columns[config.dataset].get(key)
        recent = [typed_key(kind, text) for text in theirs.recorded["unsettled"][events.entity]]
        recent = [value for value in recent if value is not _NOT_A_KEY]
        parts = [self.examined(db, entities, mine)]
        changed = self.changed_entities(db)
        if changed:  # an entity with events within the overlap then, and changed since
            bound = {row[0] for row in changed}
            recent = [value for value in recent if value not in bound]
            if too_many_bound(db, (len(mine.keys), 1), (len(changed) + len(recent), 1)):
                changed = None
        if changed is None:
            log = db.alias(events.dataset, "changed_events")
            parts.append(sa.exists().where(changed_since(db, log, theirs), db.same(
                (config.dataset, key, entities.c[key]),
                (events.dataset, events.entity, log.c[events.entity]))))
        elif changed:
            parts.append(in_keys(db, [entities.c[key]], changed))
        if recent:
            parts.append(entities.c[key].in_(recent))
        return sa.or_(*parts)

    def rechecked_rows(self, data, entities):
        """pandas: which `entities` (rows of the check's dataset) an incremental run judges
        again."""
        import pandas as pd

        from integrity.checks.common import align

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        mine, theirs = self.increments[config.dataset], self.increments[events.dataset]
        wanted = self.examined_rows(data, entities, mine)
        log = data.frame(events.dataset)
        changed = log.loc[changed_rows(data, log, theirs), events.entity].dropna()
        recent = pd.Series(theirs.recorded["unsettled"][events.entity], dtype="object")
        for values in (changed, recent):
            ours, others = align(entities[key], values)
            wanted = wanted | ours.isin(set(others.dropna())).to_numpy()
        return wanted

    def their_events(self, db, log) -> list:
        """SQL: in an incremental run, the condition on the event log (alias `log`) of the
        events of the entities judged again (none in a full run): their keys bound as a
        list, looked up by the log's entity index, while they are few enough."""
        import sqlalchemy as sa

        if not self.increments:
            return []
        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        again = db.alias(config.dataset, "again")
        if bindable(db, (config.dataset, key), (events.dataset, events.entity)):
            keys = db.once((self.id, "again"), lambda: bound_keys(db, sa.select(
                again.c[key]).where(again.c[key].is_not(None), self.recheck(db, again))))
            if keys is not None:
                return [in_keys(db, [log.c[events.entity]], keys)]
        return [sa.exists().where(db.same((config.dataset, key, again.c[key]),
                                          (events.dataset, events.entity,
                                           log.c[events.entity])),
                                  self.recheck(db, again))]

    def judged_again(self, db, entities, statement) -> tuple:
        """SQL: `statement` (over alias `entities`) narrowed to the entities an incremental
        run judges again; the population, counted over the whole table; and the note
        saying what was examined."""
        import sqlalchemy as sa

        config = self.config
        scope = db.where(config.dataset, entities, config.where)
        population = db.count(config.dataset, entities, scope, same_as=config.where)
        if not self.increments:
            return statement, population, []
        rechecked = self.recheck(db, entities)
        examined = db.count(config.dataset, entities, sa.and_(scope, rechecked))
        return (statement.where(rechecked), population,
                [self.entity_note(examined, population)])

    def entity_note(self, examined: int, population: int) -> str:
        config, events = self.config, self.config.events
        mine, theirs = self.increments[config.dataset], self.increments[events.dataset]
        return (f"incremental: examined {examined:,} entit{'y' if examined == 1 else 'ies'} "
                f"of {population:,}, each with all its events: those changed "
                f"({mine.describe()}), with events changed ({theirs.column} ≥ "
                f"{_shown(theirs)} or null), or with events within the overlap when run "
                f"{theirs.run_id} read {events.dataset}; counts and keys are the whole "
                f"table's, every other entity keeps its status of run {mine.run_id}")


def _shown(increment) -> str:
    return (str(increment.since) if increment.numeric
            else increment.since.isoformat().replace("+00:00", "Z"))


class CounterConfig(CheckConfig):
    kind: Literal["counter_vs_events"] = Field(description="Selects this check.")
    dataset: str = Field(description=(
        "The dataset holding the counter; it needs a one-column `key:` (the id the events "
        "refer to). Required."))
    counter: str = Field(description=(
        "The counter column, e.g. `emailSentCount`; a null counter reads as 0. Required."))
    events: Events = Field(description="The event log the counter counts. Required.")
    mode: Literal["equal", "at_most"] = Field("equal", description=(
        "`equal`: the counter must equal the unique events (`over_count`, `under_count`, "
        "`not_incrementing`); `at_most`: it may be lower, not higher (`over_count`, and "
        "`not_incrementing` unless `zero_counter: false`). Default `equal`."))
    window: Duration = Field(timedelta(minutes=5), description=(
        "An entity's events at most this far apart (each from the previous) form one burst, "
        "counted once. Default 5m."))
    zero_counter: bool = Field(True, description=(
        "In `at_most` mode, whether a counter of 0 while events exist is a violation "
        "(`not_incrementing`). Default true; `equal` mode always flags it."))

    @property
    def datasets(self) -> list[str]:
        return [self.dataset, self.events.dataset]


class CounterVsEvents(ByEntity):
    """A stored counter equals the unique events it counts."""

    kind = "counter_vs_events"
    Config = CounterConfig
    config: CounterConfig

    @classmethod
    def validate(cls, config, audit):
        return single_key_problems(audit, config.dataset)

    def columns(self):
        config = self.config
        needed = {config.dataset: self.identity(config.dataset, config.counter,
                                                *filter_columns(config.where))}
        return add_columns(needed, config.events.dataset, *config.events.columns)

    def unique_events(self, data) -> tuple[pd.Series, pd.Series]:
        """(unique events, raw events) per entity id, from the event log."""
        import pandas as pd

        from integrity.checks.common import bursts

        events = self.config.events
        rows = data.rows(events.dataset, events.where)
        rows = rows[rows[events.entity].notna()]
        times = data.time_column(events.dataset, rows, events.time)
        raw = rows.groupby(events.entity).size()
        unique = pd.Series(0, index=raw.index, dtype="int64")
        collapsing = rows
        if events.idempotency_key:
            keyed = rows[events.idempotency_key].notna()
            unique = unique.add(rows[keyed].groupby(events.entity)[events.idempotency_key]
                                .nunique(), fill_value=0)
            collapsing = rows[~keyed]
        timed = bursts(collapsing, times.loc[collapsing.index], [events.entity],
                       self.config.window)
        unique = unique.add(timed.groupby(events.entity)["_burst"].nunique(), fill_value=0)
        untimed = times.loc[collapsing.index].isna()
        unique = unique.add(collapsing[untimed].groupby(events.entity).size(), fill_value=0)
        return unique.astype("int64"), raw.astype("int64")

    def measure(self, data) -> Measurement:
        import pandas as pd

        from integrity.checks.common import align

        config = self.config
        key = self.key_of(config.dataset)[0]
        entities = data.rows(config.dataset, config.where)
        population = len(entities)
        # Over the whole table, as the SQL engine counts them.
        nulls = int(pd.to_numeric(entities[config.counter], errors="coerce").isna().sum())
        incremental = []
        if self.increments:
            entities = entities[self.rechecked_rows(data, entities)]
            incremental = [self.entity_note(len(entities), population)]
        unique, raw = self.unique_events(data)
        counts = pd.DataFrame({"unique_events": unique, "events": raw})
        counts.index.name = "_entity"
        counts = counts.reset_index()
        entity_ids, counts["_entity"] = align(entities[key], counts["_entity"])
        table = entities.assign(_entity=entity_ids).merge(counts, on="_entity", how="left")
        table[["unique_events", "events"]] = table[["unique_events", "events"]].fillna(0).astype(
            "int64")
        counter = pd.to_numeric(table[config.counter], errors="coerce")
        notes = [f"{nulls} rows have a null {config.counter}; read as 0"] if nulls else []
        counter = counter.fillna(0)
        unique_counts = table["unique_events"]
        over = counter > unique_counts
        zero = (counter == 0) & (unique_counts > 0)
        under = (counter < unique_counts) & ~zero
        problem = pd.Series(None, index=table.index, dtype="object")
        problem[over] = "over_count"
        problem[zero] = "not_incrementing"
        problem[under] = "under_count"
        flagged = over.copy()
        if config.mode == "equal":
            flagged |= zero | under
        elif config.zero_counter:
            flagged |= zero
        columns = self.identity(config.dataset, config.counter)
        violations = table.loc[flagged, columns + ["unique_events", "events"]].assign(
            problem=problem[flagged])
        violations = violations.sort_values(key, kind="stable")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int(flagged.sum()), population=population,
                           keys=[key], notes=incremental + notes)

    def describe(self) -> str:
        config, events = self.config, self.config.events
        relation = "equal" if config.mode == "equal" else "not exceed"
        unique = (f"one per distinct {events.idempotency_key} (events without one: one per "
                  f"burst of events at most {format_duration(config.window)} apart)"
                  if events.idempotency_key else
                  f"one per burst of events at most {format_duration(config.window)} apart")
        scope = f" where {describe_filter(events.where)}" if events.where else ""
        text = (f"{config.dataset}.{config.counter} must {relation} the number of unique "
                f"events in {events.dataset}{scope} with {events.entity} = the entity's id; "
                f"unique = {unique}.")
        if config.mode == "at_most" and config.zero_counter:
            text += " A counter of 0 while events exist is flagged too (not incrementing)."
        return text

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        from integrity.pushdown import burst_starts

        config, events = self.config, self.config.events
        key = self.key_of(config.dataset)[0]
        axis = db.axis((events.dataset, events.time))
        log, entity, moment, scoped = events.in_sql(db, axis)
        window = config.window.total_seconds()
        idempotency = (db.key(events.dataset, log, events.idempotency_key)
                       if events.idempotency_key else None)

        # One pass over the log: every event, with "does it open a burst?" among the
        # events that have no idempotency key.
        if idempotency is None:
            opens = burst_starts(moment, [entity], [], axis, window)
        else:
            loose = idempotency.is_(None)
            opens = sa.case((loose, burst_starts(moment, [entity, loose], [], axis, window)),
                            else_=0)
        marked = sa.select(
            entity.label("entity"),
            (idempotency if idempotency is not None else sa.null()).label("idempotency"),
            opens.label("opens"),
        ).where(scoped, *self.their_events(db, log)).subquery("marked")
        per_entity = sa.select(
            marked.c.entity,
            (sa.func.count(sa.distinct(marked.c.idempotency)) + sa.func.sum(marked.c.opens))
            .label("unique_events"),
            sa.func.count().label("events"),
        ).group_by(marked.c.entity).subquery("per_entity")

        entities = db.alias(config.dataset, "entities")
        joined = db.same((config.dataset, key, entities.c[key]),
                         (events.dataset, events.entity, per_entity.c.entity))
        counter = sa.func.coalesce(entities.c[config.counter], 0)
        unique = sa.func.coalesce(per_entity.c.unique_events, 0)
        over, zero = counter > unique, sa.and_(counter == 0, unique > 0)
        under = sa.and_(counter < unique, sa.not_(zero))
        flagged = over
        if config.mode == "equal":
            flagged = sa.or_(over, zero, under)
        elif config.zero_counter:
            flagged = sa.or_(over, zero)
        shown = self.identity(config.dataset, config.counter)
        statement = (
            sa.select(*[entities.c[column] for column in shown],
                      unique.label("unique_events"),
                      sa.func.coalesce(per_entity.c.events, 0).label("events"),
                      sa.case((over, "over_count"), (zero, "not_incrementing"),
                              else_="under_count").label("problem"))
            .select_from(entities.outerjoin(per_entity, joined))
            .where(db.where(config.dataset, entities, config.where), flagged)
            .order_by(*[entities.c[column] for column in self.key_of(config.dataset)]))
        statement, population, incremental = self.judged_again(db, entities, statement)
        scope = db.where(config.dataset, entities, config.where)
        violations = db.frame(statement)
        # Null counters that matter (events exist) are violations already; the others are
        # worth a note, counted where the column allows nulls at all.
        declared = config.counter in db.not_null.get(config.dataset, set())
        nulls = 0 if declared else db.count(config.dataset, entities, sa.and_(
            scope, entities.c[config.counter].is_(None)))
        notes = [f"{int(nulls)} rows have a null {config.counter}; read as 0"] if nulls else []
        return Measurement(violations=violations, violation_count=len(violations),
                           population=int(population), keys=[key], notes=incremental + notes,
                           sql=db.sql(statement))
