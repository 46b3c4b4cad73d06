"""Cross-tenant: "Cross-tenant data access: any occurrence is critical" (seed 001).

Two shapes. With `parent:` a child row's tenant must equal its parent's
tenant (a message in another company's conversation, a quote assigned to
another tenant's agent). With `other_tenant_column:` two tenant columns of the
same row must agree (an access-log row whose actor tenant is not the
resource's tenant). A violation needs both sides present: a child without a
parent is an orphan (see `orphans`), not also cross-tenant, and a null tenant
is not compared. The population is the rows with a tenant and a reference (or
both tenant columns).

Incrementally (a dataset with `incremental:`) the two-column form is judged row
by row: a run re-checks the rows changed since the last run's watermark (minus
the overlap) plus every key that violated in the last run (so a fixed or
deleted row resolves), and every other row keeps its last status; the
population is counted over the whole table. The parent form follows
`orphans`' rule (see `orphans`): the children changed, referencing a parent
changed or within the last overlap, or violating last time are judged again;
both datasets must declare `incremental:`, and a deleted or changed parent
older than the overlap makes the run a full one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from integrity.checks import Measurement, add_columns
from integrity.checks.orphans import ByParent, parent_key, validate_reference
from integrity.config import CheckConfig, Columns
from integrity.filters import columns as filter_columns


class CrossTenantConfig(CheckConfig):
    kind: Literal["cross_tenant"] = Field(description="Selects this check.")
    dataset: str = Field(description="The dataset whose rows are checked. Required.")
    tenant_column: str | None = Field(None, description=(
        "The row's tenant column. Default: the dataset's `tenant_column:`; one of the two "
        "is required."))
    reference: Columns | None = Field(None, description=(
        "With `parent`: the column(s) pointing to the parent row, matched in order to "
        "`parent_key`. Required with `parent`."))
    parent: str | None = Field(None, description=(
        "The parent dataset: each row's tenant must equal the tenant of the parent row it "
        "references. Give `parent` (with `reference`) or `other_tenant_column`, not both."))
    parent_key: Columns | None = Field(None, description=(
        "The parent column(s) `reference` matches. Default: the parent dataset's `key:`."))
    parent_tenant_column: str | None = Field(None, description=(
        "The parent's tenant column. Default: the parent dataset's `tenant_column:`; with "
        "`parent`, one of the two is required."))
    other_tenant_column: str | None = Field(None, description=(
        "A second tenant column of the same row that must equal `tenant_column`, e.g. an "
        "access log's `resourceTenantId` against `actorTenantId`. Give this or `parent`."))

    @model_validator(mode="after")
    def _one_shape(self):
        if bool(self.parent) == bool(self.other_tenant_column):
            raise ValueError("give either parent (with reference) or other_tenant_column")
        if self.parent and not self.reference:
            raise ValueError("reference is required with parent (the column pointing to it)")
        return self

    @property
    def datasets(self) -> list[str]:
        return [self.dataset, *([self.parent] if self.parent else [])]


class CrossTenant(ByParent):
    """Data that crosses tenants (any occurrence is critical)."""

    kind = "cross_tenant"
    Config = CrossTenantConfig
    config: CrossTenantConfig

    @classmethod
    def validate(cls, config, audit):
        problems = []
        if config.dataset in audit.datasets and not (
                config.tenant_column or audit.datasets[config.dataset].tenant_column):
            problems.append((("tenant_column",), f"dataset {config.dataset!r} has no "
                                                 f"tenant_column; set one here or on the dataset"))
        if config.parent:
            problems += validate_reference(audit, config.reference, config.parent,
                                           config.parent_key)
            if config.parent in audit.datasets and not (
                    config.parent_tenant_column or audit.datasets[config.parent].tenant_column):
                problems.append((("parent_tenant_column",),
                                 f"dataset {config.parent!r} has no tenant_column; set "
                                 f"parent_tenant_column"))
        return problems

    def needs_every_increment(self) -> bool:
        return bool(self.config.parent)

    def incremental_problem(self, dataset: str) -> str | None:
        if self.config.parent:
            return super().incremental_problem(dataset)
        return self.row_local_problem(dataset)

    def watermark_extras(self, db, dataset: str, since) -> dict:
        return super().watermark_extras(db, dataset, since) if self.config.parent else {}

    def incremental_start_problem(self, db, dataset: str) -> str | None:
        if self.config.parent:
            return super().incremental_start_problem(db, dataset)
        return None

    @property
    def tenant(self) -> str:
        return self.config.tenant_column or self.tenant_of(self.config.dataset)

    @property
    def parent_tenant(self) -> str:
        return self.config.parent_tenant_column or self.tenant_of(self.config.parent)

    def columns(self):
        config = self.config
        needed = {config.dataset: self.identity(config.dataset, self.tenant,
                                                *(config.reference or []),
                                                config.other_tenant_column,
                                                *filter_columns(config.where))}
        if config.parent:
            add_columns(needed, config.parent, *parent_key(self, config.parent, config.parent_key),
                        self.parent_tenant)
        return needed

    def measure(self, data) -> Measurement:
        from integrity.checks.common import align, aligned_frames

        config = self.config
        rows = data.rows(config.dataset, config.where)
        order = list(self.audit.datasets[config.dataset].key or [self.tenant])
        notes = []
        if config.other_tenant_column:
            pairs = rows[rows[[self.tenant, config.other_tenant_column]].notna().all(axis=1)]
            examined = pairs[self.examined_rows(data, pairs)]
            if self.increment:
                notes.append(self.incremental_note(len(examined), len(pairs)))
            mine, theirs = align(examined[self.tenant], examined[config.other_tenant_column])
            flagged = examined[(mine != theirs).to_numpy()]
            shown = self.identity(config.dataset, self.tenant, config.other_tenant_column)
            violations = flagged[shown]
        else:
            key = parent_key(self, config.parent, config.parent_key)
            reference = list(config.reference)
            parents = data.frame(config.parent)[[*key, self.parent_tenant]].drop_duplicates(key)
            parent_tenant = f"{config.parent}.{self.parent_tenant}"
            parents = parents.rename(columns={**dict(zip(key, reference)),
                                              self.parent_tenant: parent_tenant})
            linked = rows[rows[[*reference, self.tenant]].notna().all(axis=1)]
            pairs = linked  # every row with a tenant and a reference was looked up
            if self.increments:
                linked = linked[self.rechecked_rows(data, linked).to_numpy()]
                notes.append(self.parent_note(len(linked), len(pairs)))
            linked, parents = aligned_frames(linked, reference, parents, reference)
            joined = linked.assign(_row=linked.index).merge(parents, on=reference, how="inner")
            joined = joined[joined[parent_tenant].notna()]
            mine, theirs = align(joined[self.tenant], joined[parent_tenant])
            flagged = joined[(mine != theirs).to_numpy()]
            shown = self.identity(config.dataset, self.tenant, *reference)
            violations = rows.loc[flagged["_row"], shown].assign(
                **{parent_tenant: flagged[parent_tenant].to_numpy()})
        violations = violations.sort_values(order, kind="stable")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=len(violations), population=len(pairs), keys=order,
                           notes=notes)

    def measure_sql(self, db) -> Measurement:
        import sqlalchemy as sa

        config = self.config
        rows = db.alias(config.dataset, "rows")
        order = list(self.audit.datasets[config.dataset].key or [self.tenant])
        scope = db.where(config.dataset, rows, config.where)
        mine = rows.c[self.tenant]
        notes = []
        if config.other_tenant_column:
            shown = self.identity(config.dataset, self.tenant, config.other_tenant_column)
            theirs = rows.c[config.other_tenant_column]
            differ = db.differ((config.dataset, self.tenant, mine),
                               (config.dataset, config.other_tenant_column, theirs))
            paired = sa.and_(scope, mine.is_not(None), theirs.is_not(None))
            examined = self.examined(db, rows)
            statement = (sa.select(*[rows.c[column] for column in shown])
                         .where(paired, examined, differ).order_by(*[rows.c[c] for c in order]))
            population = db.count(config.dataset, rows, paired)
            if self.increment:
                notes.append(self.incremental_note(
                    db.count(config.dataset, rows, sa.and_(paired, examined)), population))
        else:
            key = parent_key(self, config.parent, config.parent_key)
            reference = list(config.reference)
            parents = db.alias(config.parent, "parents")
            theirs = parents.c[self.parent_tenant]
            joins = [db.same((config.dataset, ref, rows.c[ref]), (config.parent, own,
                                                                   parents.c[own]))
                     for ref, own in zip(reference, key)]
            differ = db.differ((config.dataset, self.tenant, mine),
                               (config.parent, self.parent_tenant, theirs))
            joined = rows.join(parents, sa.and_(*joins))
            paired = sa.and_(scope, mine.is_not(None), theirs.is_not(None),
                             *[rows.c[ref].is_not(None) for ref in reference])
            shown = self.identity(config.dataset, self.tenant, *reference)
            # The population is every row with a tenant and a reference (each was looked
            # up), counted without the join.
            present = sa.and_(scope, mine.is_not(None),
                              *[rows.c[ref].is_not(None) for ref in reference])
            population = db.count(config.dataset, rows, present,
                                  same_as=(config.where, "cross_tenant", self.tenant,
                                           tuple(reference)))
            if self.increments:
                rechecked = self.recheck(db, rows)
                paired = sa.and_(paired, rechecked)
                notes.append(self.parent_note(
                    db.count(config.dataset, rows, sa.and_(present, rechecked)), population))
            statement = (sa.select(*[rows.c[column] for column in shown],
                                   theirs.label(f"{config.parent}.{self.parent_tenant}"))
                         .select_from(joined).where(paired, differ)
                         .order_by(*[rows.c[c] for c in order]))
        violations = db.frame(statement)
        return Measurement(violations=violations, violation_count=len(violations),
                           population=population, keys=order, sql=db.sql(statement),
                           notes=notes)

    def describe(self) -> str:
        config = self.config
        if config.other_tenant_column:
            return (f"In {config.dataset}, {self.tenant} must equal "
                    f"{config.other_tenant_column} whenever both are present.")
        key = parent_key(self, config.parent, config.parent_key)
        return (f"Each {config.dataset} row's {self.tenant} must equal the "
                f"{self.parent_tenant} of the {config.parent} row it references "
                f"({', '.join(config.reference)} -> {', '.join(key)}).")
