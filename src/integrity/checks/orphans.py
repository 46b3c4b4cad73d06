"""Orphans: child rows whose reference points to no parent (seeds 001, 003).

"No orphaned records": a message without its conversation, a lead without its
company, a commission without its workflow. A row whose reference is null is
not an orphan unless `required: true` (then it is a `missing_reference`).
`parent_where` narrows the parents that count (e.g. `{deletedAt: null}`: a
reference to a soft-deleted parent is dangling too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from integrity.checks import Check, Measurement, add_columns
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


class Orphans(Check):
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
                           violation_count=len(violations), population=len(children),
                           keys=list(order))

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
                           population=db.count(config.dataset, children, scope,
                                               same_as=config.where), keys=order,
                           sql=db.sql(statement))

    def describe(self) -> str:
        config = self.config
        key = parent_key(self, config.parent, config.parent_key)
        parents = f" where {describe_filter(config.parent_where)}" if config.parent_where else ""
        nulls = ("a null reference is a violation" if config.required
                 else "a null reference is allowed")
        return (f"Every {config.dataset}.({', '.join(config.reference)}) must match "
                f"{config.parent}.({', '.join(key)}){parents}; {nulls}.")
