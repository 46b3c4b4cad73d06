"""Orphans: child rows whose reference points to no parent (seeds 001, 003).

"No orphaned records": a message without its conversation, a lead without its
company, a commission without its workflow. A row whose reference is null is
not an orphan unless `required: true` (then it is a `missing_reference`).
`parent_where` narrows the parents that count (e.g. `{deletedAt: null}`: a
reference to a soft-deleted parent is dangling too).

Incrementally — this rule is `cross_tenant`'s with `parent:` too — a child's
answer depends on its own row and the parent rows its reference matches, so a
run judges again exactly the children changed since the child dataset's
watermark (minus the overlap), the children referencing a parent changed since
the parent dataset's watermark (minus its overlap: soft-deleted, filtered out,
re-tenanted — by the key it has now), the children referencing a parent that
was within the overlap when the last run read the parents (recorded with their
watermark: such a parent may since have been deleted or given another key
without a trace), and the children whose key violated in the last run (a
parent inserted since resolves them). Every other child has the same row and
the same matching parents as then, when it did not violate. Both datasets
must declare `incremental:`; with only one, the check runs in full, saying so.
A **hard delete** of a parent older than the overlap, or a new key given to
one, leaves nothing a watermark sees: each run records how many parents are
older than where the next run starts, and when the next run counts another
number it runs in full, saying so (any change to such a parent does too — a
soft delete included — since a count cannot tell it from a delete). With
`created:` on the parent dataset (a column set once, at insert), the run records
instead the count and a key checksum (`Tables.key_checksum`) of the parents
inserted before where the next run starts (or last changed before it: a creation
time may be later than a change time): an update leaves both unchanged — the
updated parent is a changed one, its children are judged again — and only a
delete or a new key runs the check in full. More than
10,000 parents within the overlap run the next time in full. The population is
counted over the whole table.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from integrity.checks import (MOST_UNSETTLED, _NOT_A_KEY, Check, Measurement, add_columns,
                              bindable, born, born_problem, bound_keys, changed_rows,
                              changed_since, created_column, in_keys, older_count,
                              settled_problem, too_many_bound, typed_key)
from integrity.config import CheckConfig, Columns, Where
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter


class OrphansConfig(CheckConfig):
    kind: Literal["orphans"] = Field(description="Selects this check.")
    dataset: str = Field(description="The child dataset whose references are checked. Required.")
    reference: Columns = Field(description=(
        "The child's column(s) pointing to the parent, matched in order to `parent_key`. "
        "Required."))
    parent: str = Field(description="The parent dataset. Required.")
    parent_key: Columns | None = Field(None, description=(
        "The parent column(s) a reference must match. Default: the parent dataset's "
        "`key:`."))
    parent_where: Where = Field((), description=(
        "Only parents matching this filter count, e.g. `{deletedAt: null}`: a reference to "
        "a soft-deleted parent dangles too. Default: every parent row."))
    required: bool = Field(False, description=(
        "Whether a null reference (any part of it null) is a violation too, "
        "`missing_reference`. Default false: a null reference is allowed, not an orphan."))

    @property
    def datasets(self) -> list[str]:
        return [self.dataset, self.parent]


def parent_key(check: Check, parent: str, explicit: list[str] | None) -> list[str]:
    return list(explicit or check.audit.datasets[parent].key or [])


def validate_reference(audit, reference: list[str], parent: str,
                       explicit: list[str] | None) -> list[tuple[tuple, str]]:
    if parent not in audit.datasets:
        return [(("parent",), f"unknown dataset {parent!r} (defined: {', '.join(audit.datasets)})")]
    key = explicit or audit.datasets[parent].key
    if not key:
        return [(("parent_key",), f"dataset {parent!r} has no `key:`; give `parent_key:`")]
    if len(key) != len(reference):
        return [(("reference",), f"{len(reference)} reference column(s) but the parent key "
                                 f"has {len(key)} ({', '.join(key)})")]
    return []




class ByParent(Check):
    """The incremental rule of a check of each child row against the parent it references
    (module docstring): `config` has `dataset`, `where`, `reference` and `parent`."""

    def parent_key(self) -> list[str]:
        return parent_key(self, self.config.parent, self.config.parent_key)

    def needs_every_increment(self) -> bool:
        return True

    def incremental_problem(self, dataset: str) -> str | None:
        config = self.config
        if config.dataset == config.parent:
            return "its children and parents are one dataset"
        for where in (config.where, getattr(config, "parent_where", ())):
            timed = [c for c in where if c.op == "until"]
            if timed:
                return (f"its filter on {timed[0].column} (until) lets unchanged rows in as "
                        f"time passes")
        return None

    def unsettled_field(self) -> str:
        return "keys " + ", ".join(self.parent_key())

    def watermark_extras(self, db, dataset: str, since) -> dict:
        import sqlalchemy as sa

        if dataset != self.config.parent or self.incremental_problem(dataset):
            return {}  # no incremental run will start from it
        key = self.parent_key()
        parents = db.alias(dataset, "parents")
        changed = changed_since(db, parents, since)
        recent = db.frame(sa.select(*[parents.c[column] for column in key]).where(changed)
                          .distinct().limit(MOST_UNSETTLED + 1))
        texts = [[None if since.as_recorded(value) is None else str(since.as_recorded(value))
                  for value in row] for row in recent.itertuples(index=False, name=None)]
        extras: dict = {"unsettled": {
            self.unsettled_field(): texts if len(texts) <= MOST_UNSETTLED else None}}
        if self.created(since) is not None:
            extras["born"] = {self.unsettled_field(): self.born(db, since)}
        else:
            extras["settled"] = older_count(db, since, "parents")
        return extras

    def created(self, increment) -> str | None:
        return created_column(self.audit, increment) if increment.dataset == \
            self.config.parent else None

    def born(self, db, increment) -> dict:
        """How many parents were born before `increment.since` (inserted before, or last
        changed before), and a checksum of their keys: an update leaves both as they
        were, a delete or a new key does not. Every other parent was changed since, and
        the last run recorded its key (`unsettled`)."""
        key = self.parent_key()
        return born(db, increment, self.created(increment), "born_parents",
                    lambda parents: [parents.c[name] for name in key], tuple(key))

    def incremental_start_problem(self, db, dataset: str) -> str | None:
        if dataset != self.config.parent:
            return None
        increment = self.increments[dataset]
        column, field = self.created(increment), self.unsettled_field()
        if column is not None:
            # Only a delete or a new key of an old parent hides: its children would keep
            # the status they had. An update keeps the count and the checksum, and makes
            # the parent changed (its children are judged again).
            return born_problem(increment, column, field, "other keys", "given another key",
                                lambda: self.born(db, increment))
        return settled_problem(db, increment, field, "parents",
                               "rows", f"{dataset} rows were",
                               "a parent deleted or given another key leaves nothing a "
                               "watermark sees")

    def changed_parents(self, db) -> list[tuple] | None:
        """SQL: the keys of the parents changed since their increment, to bind (read once a
        run, by the change column's index); None when there are too many, or their values
        do not bind as they are against the reference."""
        import sqlalchemy as sa

        config, key = self.config, self.parent_key()
        if not all(bindable(db, (config.dataset, ref), (config.parent, own))
                   for ref, own in zip(config.reference, key)):
            return None
        parents = db.alias(config.parent, "changed_parents")
        return db.once((self.id, "changed parents"), lambda: bound_keys(db, sa.select(
            *[parents.c[own] for own in key]).where(
                changed_since(db, parents, self.increments[config.parent]),
                *[parents.c[own].is_not(None) for own in key])))

    def recheck(self, db, children):
        """SQL: the children (rows of alias `children`) an incremental run judges again: an
        OR of conditions each served by an index (the change column, the key, the
        reference) while the changed parents are few enough to bind."""
        import sqlalchemy as sa

        config, key = self.config, self.parent_key()
        mine, theirs = self.increments[config.dataset], self.increments[config.parent]
        references = [children.c[ref] for ref in config.reference]
        parts = [self.examined(db, children, mine)]
        kinds = [db.columns[config.dataset].get(ref) for ref in config.reference]
        recent = [tuple(typed_key(kind, text) for kind, text in zip(kinds, row))
                  for row in theirs.recorded["unsettled"][self.unsettled_field()]]
        recent = [row for row in recent if _NOT_A_KEY not in row]
        changed = self.changed_parents(db)
        if changed:  # a parent within the overlap then, and changed since: bound once
            bound = set(changed)
            recent = [row for row in recent if row not in bound]
            if too_many_bound(db, (len(mine.keys), len(self.key_of(config.dataset))),
                              (len(changed) + len(recent), len(key))):
                changed = None
        if changed is None:
            parents = db.alias(config.parent, "changed_parents")
            parts.append(sa.exists().where(changed_since(db, parents, theirs), *[
                db.same((config.dataset, ref, children.c[ref]),
                        (config.parent, own, parents.c[own]))
                for ref, own in zip(config.reference, key)]))
        elif changed:
            parts.append(in_keys(db, references, changed))
        if recent:
            parts.append(in_keys(db, references, recent))
        return sa.or_(*parts)

    def rechecked_rows(self, data, children):
        """pandas: which `children` an incremental run judges again."""
        from integrity.checks.common import _as_key_text

        config, key = self.config, self.parent_key()
        mine, theirs = self.increments[config.dataset], self.increments[config.parent]
        wanted = self.examined_rows(data, children, mine)
        parents = data.frame(config.parent)
        changed = parents[changed_rows(data, parents, theirs)]
        keys = {tuple(row) for row in zip(*[_as_key_text(changed[own]) for own in key])}
        keys |= {tuple(row) for row in theirs.recorded["unsettled"][self.unsettled_field()]}
        import pandas as pd

        references = zip(*[_as_key_text(children[ref]) for ref in config.reference])
        return wanted | pd.Series([row in keys for row in references], index=children.index,
                                  dtype=bool)

    def parent_note(self, examined: int, population: int) -> str:
        config = self.config
        mine, theirs = self.increments[config.dataset], self.increments[config.parent]
        since = (str(theirs.since) if theirs.numeric
                 else theirs.since.isoformat().replace("+00:00", "Z"))
        return (f"incremental: examined {examined:,} changed row{'s' if examined != 1 else ''}"
                f" of {population:,} ({mine.describe()}), and those referencing a parent "
                f"changed ({theirs.column} ≥ {since} or null) or within the overlap when run "
                f"{theirs.run_id} read {config.parent}; counts and keys are the whole table's, "
                f"every other row keeps its status of run {mine.run_id}")


class Orphans(ByParent):
    """References to nothing."""

    kind = "orphans"
    Config = OrphansConfig
    config: OrphansConfig

    @classmethod
    def validate(cls, config, audit):
        return validate_reference(audit, config.reference, config.parent,
                                  config.parent_key)

    def columns(self):
        config = self.config
        needed = {config.dataset: self.identity(config.dataset, *config.reference,
                                                *filter_columns(config.where))}
        return add_columns(needed, config.parent, *parent_key(self, config.parent, config.parent_key),
                           *filter_columns(config.parent_where))

    def measure(self, data) -> Measurement:
        import pandas as pd

        from integrity.checks.common import aligned_frames, has_nulls

        config = self.config
        reference, key = config.reference, parent_key(self, config.parent, config.parent_key)
        children = data.rows(config.dataset, config.where)
        population, notes = len(children), []
        if self.increments:
            children = children[self.rechecked_rows(data, children).to_numpy()]
            notes.append(self.parent_note(len(children), population))
        parents = data.rows(config.parent, config.parent_where)[key].drop_duplicates()
        missing = has_nulls(children, reference)
        linked = children[~missing]
        linked, parents = aligned_frames(linked, reference, parents, key)
        found = linked.merge(parents.rename(columns=dict(zip(key, reference))),
                             on=reference, how="left", indicator=True)
        dangling = linked[(found["_merge"] == "left_only").to_numpy()]
        shown = self.identity(config.dataset, *reference)
        parts = [children.loc[dangling.index, shown].assign(problem="no_such_parent")]
        if config.required:
            parts.append(children.loc[missing, shown].assign(problem="missing_reference"))
        violations = pd.concat(parts).sort_index(kind="stable")
        order = self.audit.datasets[config.dataset].key or shown
        violations = violations.sort_values(list(order), kind="stable")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=len(violations), population=population,
                           keys=list(order), notes=notes)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        key = parent_key(self, config.parent, config.parent_key)
        children = db.alias(config.dataset, "children")
        parents = db.alias(config.parent, "parents")
        matches = [db.same((config.dataset, ref, children.c[ref]),
                           (config.parent, own, parents.c[own]))
                   for ref, own in zip(config.reference, key)]
        found = (sa.select(sa.literal(1)).select_from(parents)
                 .where(*matches,
                        db.where(config.parent, parents, config.parent_where)))
        scope = db.where(config.dataset, children, config.where)
        population = db.count(config.dataset, children, scope, same_as=config.where)
        notes = []
        if self.increments:
            rechecked = self.recheck(db, children)
            notes.append(self.parent_note(
                db.count(config.dataset, children, sa.and_(scope, rechecked)), population))
            scope = sa.and_(scope, rechecked)
        present = sa.and_(*[children.c[ref].is_not(None) for ref in config.reference])
        shown = self.identity(config.dataset, *config.reference)
        order = list(self.audit.datasets[config.dataset].key or shown)
        columns = [children.c[column] for column in shown]
        # Separate statements, so the database plans a (parallel) anti-join for the
        # dangling references instead of filtering row by row.
        parts = [sa.select(*columns, sa.literal("no_such_parent").label("problem"))
                 .where(scope, present, ~found.exists())]
        if config.required:
            parts.append(sa.select(*columns, sa.literal("missing_reference").label("problem"))
                         .where(scope, sa.not_(present)))
        union = (sa.union_all(*parts) if len(parts) > 1 else parts[0]).subquery("flagged")
        statement = sa.select(union).order_by(*[union.c[c] for c in order])
        violations = db.frame(statement)
        return Measurement(violations=violations, violation_count=len(violations),
                           population=population, keys=order, sql=db.sql(statement),
                           notes=notes)

    def describe(self) -> str:
        config = self.config
        key = parent_key(self, config.parent, config.parent_key)
        parents = f" where {describe_filter(config.parent_where)}" if config.parent_where else ""
        nulls = ("a null reference is a violation" if config.required
                 else "a null reference is allowed")
        return (f"Every {config.dataset}.({', '.join(config.reference)}) must match "
                f"{config.parent}.({', '.join(key)}){parents}; {nulls}.")
