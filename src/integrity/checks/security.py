"""Row-level security: each tenant sees only its own rows (seed 001, PostgreSQL).

Seed 001: "RLS Policy Violations: any occurrence — Critical". A
`row_level_security` check looks at the tables of the audit's datasets that
have a `tenant_column` (or those `datasets:` names) and reports, one row each:

- `rls off` — the table does not enable row level security (`relrowsecurity`);
- `no policy` — it enables it but has no policy, so the application sees
  nothing (or, as owner, everything);
- `not forced` — with `forced: true`, the table does not FORCE row level
  security, so its owner (often the application's role) bypasses every policy;
- `leak` — the **isolation probe** (`probe:`) found rows of other tenants.

The probe acts as the application does, for a sample of tenants (the first
`tenants` values of the tenant column, in order): inside the audit's read-only
transaction, in a savepoint, `SET LOCAL ROLE <role>` and
`set_config(<setting>, '<tenant>', true)`, then it counts the rows whose
tenant column is not that tenant — any is a leak, reported with the table,
the tenant and the count, never the rows. The savepoint is rolled back after
each tenant, and the session's own role is checked to be back before anything
else runs. The audit role must be a member of the probe's role (`GRANT
app_user TO auditor`): without it the check says so and stops, as it does
when the role cannot read the table. A dataset that is a query (`sql:`) has
no table to look at, and says so in a note.

The check runs on either engine (it reads the catalog and counts rows in the
database) and needs PostgreSQL; the number of tables looked at is its
population.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Model


class Probe(Model):
    role: Annotated[str, Field(min_length=1, max_length=63)] = Field(description=(
        "The application's database role, taken with `SET LOCAL ROLE` for the probe, e.g. "
        "`app_user`. The audit role must be a member of it. Required."))
    setting: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")] \
        = Field(description=(
            "The setting the policies read the tenant from, e.g. `app.tenant_id` (a policy "
            "`USING (\"tenantId\" = current_setting('app.tenant_id'))`). Required."))
    tenants: Annotated[int, Field(ge=1, le=1000)] = Field(5, description=(
        "How many tenants are probed: the first of the tenant column's values, in order. "
        "Default 5."))


class RowLevelSecurityConfig(CheckConfig):
    kind: Literal["row_level_security"] = Field(description="Selects this check.")
    datasets_: list[str] = Field([], alias="datasets", description=(
        "The datasets whose tables must isolate tenants. Default: every dataset with a "
        "`tenant_column`."))
    forced: bool = Field(False, description=(
        "Also require FORCE ROW LEVEL SECURITY, so the table's owner is held to the "
        "policies too (when the application connects as the owner). Default false."))
    probe: Probe | None = Field(None, description=(
        "The isolation probe: act as the application for a sample of tenants and count the "
        "other tenants' rows it can see, e.g. `{role: app_user, setting: app.tenant_id}`. "
        "Default: not set (the catalog is checked only)."))

    @property
    def datasets(self) -> list[str]:
        return list(self.datasets_)


class RowLevelSecurity(Check):
    """Tables that do not isolate tenants, and rows one tenant can see of another."""

    kind = "row_level_security"
    Config = RowLevelSecurityConfig
    config: RowLevelSecurityConfig

    @classmethod
    def validate(cls, config, audit):
        problems = []
        for index, name in enumerate(config.datasets_):
            dataset = audit.datasets.get(name)
            if dataset is None:
                continue  # config names unknown datasets itself
            if not dataset.tenant_column:
                problems.append((("datasets", index), f"dataset {name!r} has no "
                                 f"`tenant_column`: nothing says whose a row is"))
        if not config.datasets_ and not any(d.tenant_column for d in audit.datasets.values()):
            problems.append((("kind",), "no dataset has a `tenant_column`: name the tenant "
                                        "column of the tables to check"))
        return problems

    def columns(self):
        return {}  # nothing is pulled: the check reads the catalog and counts in place

    def sql_problems(self, dialect: str) -> list[str]:
        return []

    def chosen(self) -> list[str]:
        return self.config.datasets_ or [name for name, dataset in self.audit.datasets.items()
                                         if dataset.tenant_column]

    def measure(self, data) -> Measurement:
        import pandas as pd
        import sqlalchemy as sa

        from integrity.errors import CheckError

        source, connection = data.source, data.connection
        if source.dialect != "postgresql":
            raise CheckError(f"row level security is PostgreSQL's; this database is "
                             f"{source.dialect}")
        rows, notes, looked = [], [], 0
        try:
            if self.config.probe is not None:
                self._may_become(connection, self.config.probe.role)
            for name in self.chosen():
                dataset = self.audit.datasets[name]
                if not dataset.table:
                    notes.append(f"dataset {name!r} is a query: its tables are not checked")
                    continue
                looked += 1
                table = f"{dataset.schema_ + '.' if dataset.schema_ else ''}{dataset.table}"
                state = self._catalog(connection, dataset)
                if state is None:
                    raise CheckError(f"dataset {name!r}: no table {table} (as this role sees "
                                     f"the catalog)")
                problem = ("rls off" if not state["enabled"] else
                           "no policy" if not state["policies"] else
                           "not forced" if self.config.forced and not state["forced"] else None)
                if problem:
                    rows.append({"dataset": name, "table": table, "problem": problem,
                                 "tenant": None, "other_tenant_rows": None,
                                 "owner": state["owner"]})
                if self.config.probe is not None:
                    rows += self._probe(connection, name, table, dataset)
        except sa.exc.SQLAlchemyError as error:
            raise source.error(error, "row level security check failed") from None
        frame = pd.DataFrame(rows, columns=["dataset", "table", "problem", "tenant",
                                            "other_tenant_rows", "owner"])
        return Measurement(violations=frame, violation_count=len(frame), population=looked,
                           keys=["dataset", "problem", "tenant"], notes=notes)

    measure_sql = measure  # the catalog and the counts are the database's on either engine

    # -- the catalog -------------------------------------------------------------------------

    @staticmethod
    def _catalog(connection, dataset) -> dict[str, Any] | None:
        import sqlalchemy as sa

        row = connection.execute(sa.text(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner), "
            "(SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND n.nspname = coalesce(:schema, current_schema())"),
            {"table": dataset.table, "schema": dataset.schema_}).first()
        if row is None:
            return None
        return {"enabled": bool(row[0]), "forced": bool(row[1]), "owner": row[2],
                "policies": int(row[3])}

    # -- the isolation probe -----------------------------------------------------------------

    @staticmethod
    def _may_become(connection, role: str) -> None:
        import sqlalchemy as sa

        from integrity.errors import CheckError

        exists, member, me = connection.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role), "
            "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role) "
            "THEN pg_has_role(current_user, :role, 'MEMBER') END, current_user"),
            {"role": role}).one()
        if not exists:
            raise CheckError(f"probe.role: no role {role!r} in this database")
        if not member:
            raise CheckError(f"the probe acts as {role!r} with SET ROLE, which {me!r} may not: "
                             f"GRANT {role} TO {me}")

    def _probe(self, connection, name: str, table: str, dataset) -> list[dict]:
        import sqlalchemy as sa

        from integrity.errors import CheckError

        probe = self.config.probe
        preparer = connection.dialect.identifier_preparer
        relation = ".".join(preparer.quote(part) for part in
                            ([dataset.schema_] if dataset.schema_ else []) + [dataset.table])
        column = preparer.quote(dataset.tenant_column)
        tenants = connection.execute(sa.text(
            f"SELECT DISTINCT {column} FROM {relation} WHERE {column} IS NOT NULL "
            f"ORDER BY 1 LIMIT :n"), {"n": probe.tenants}).scalars().all()
        me = connection.execute(sa.text("SELECT current_user")).scalar_one()
        leaks = []
        for tenant in tenants:
            savepoint = connection.begin_nested()
            try:
                connection.execute(sa.text(f"SET LOCAL ROLE {preparer.quote(probe.role)}"))
                connection.execute(sa.text("SELECT set_config(:setting, :tenant, true)"),
                                   {"setting": probe.setting, "tenant": str(tenant)})
                seen = connection.execute(sa.text(
                    f"SELECT count(*) FROM {relation} WHERE {column}::text IS DISTINCT FROM "
                    f":tenant"), {"tenant": str(tenant)}).scalar_one()
            except sa.exc.SQLAlchemyError as error:
                savepoint.rollback()
                reason = " ".join(str(getattr(error, "orig", error)).split()).split(" [SQL")[0]
                raise CheckError(f"the probe as {probe.role!r} on {table} failed: "
                                 f"{reason}") from None
            savepoint.rollback()
            if connection.execute(sa.text("SELECT current_user")).scalar_one() != me:
                connection.invalidate()  # never let another check run as the probe's role
                raise CheckError(f"the session did not return from role {probe.role!r}")
            if seen:
                leaks.append({"dataset": name, "table": table, "problem": "leak",
                              "tenant": str(tenant), "other_tenant_rows": int(seen),
                              "owner": None})
        return leaks

    def describe(self) -> str:
        what = ", ".join(self.chosen()) or "no dataset"
        text = (f"The tables of {what} enable row level security with at least one policy"
                + (" and FORCE it" if self.config.forced else ""))
        probe = self.config.probe
        if probe is not None:
            text += (f"; acting as {probe.role} with {probe.setting} set to each of the first "
                     f"{probe.tenants} tenants, no row of another tenant is visible")
        return text + "."
