"""Custom SQL: any query whose rows are violations — the escape hatch (all seeds).

Text from the audit file runs as SQL here, so it is held to more: it must be
one read query as the audit's database reads it (`usersql`, at validation and
again before it is sent), and it runs in the audit's read-only session with its
statement timeout, where the database itself refuses a second statement. The
query may differ per database: `sql: {postgresql: ..., sqlite: ..., default: ...}`.
`key` names the columns that identify a violating row (all columns if
omitted); `population_sql` (a query returning one number) gives the rate its
denominator.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Columns

_DIALECTS = {"postgresql", "sqlite", "mysql", "mariadb", "default"}


def _per_dialect(value):
    if isinstance(value, str):
        return {"default": value.strip()}
    if isinstance(value, dict) and value:
        unknown = set(value) - _DIALECTS
        if unknown:
            raise ValueError(f"unknown database {sorted(unknown)[0]!r} "
                             f"(use {', '.join(sorted(_DIALECTS))})")
        return {name: sql.strip() if isinstance(sql, str) else sql
                for name, sql in value.items()}
    raise ValueError("sql must be a query, or a mapping of database name to query")


class CustomSqlConfig(CheckConfig):
    kind: Literal["custom_sql"] = Field(description="Selects this check.")
    sql: dict[str, str] = Field(description=(
        "The query whose every row is a violation: one read query, or one per database, "
        "`{postgresql: ..., mysql: ..., sqlite: ..., default: ...}` (`mysql` and `mariadb` "
        "stand in for each other). Required."))
    key: Columns | None = Field(None, description=(
        "The returned column(s) that identify a violation. Default: every returned "
        "column."))
    tenant_column: str | None = Field(None, description=(
        "The returned column holding the tenant, shown with the violations. Default: not "
        "set."))
    population_sql: dict[str, str] | None = Field(None, description=(
        "A query returning one number, the population, so the check has a rate (and "
        "`thresholds` can use percentages); one query or one per database, as `sql`. "
        "Default: not set."))

    @field_validator("sql", "population_sql", mode="before")
    @classmethod
    def _queries(cls, value):
        return None if value is None else _per_dialect(value)

    def query_for(self, dialect: str, queries: dict[str, str] | None = None) -> str | None:
        queries = self.sql if queries is None else queries
        aliases = {"mariadb": "mysql", "mysql": "mariadb"}
        return queries.get(dialect) or queries.get(aliases.get(dialect, "")) or queries.get(
            "default")


class CustomSql(Check):
    """Any query whose rows are violations: the escape hatch."""

    kind = "custom_sql"
    Config = CustomSqlConfig
    config: CustomSqlConfig

    @classmethod
    def validate(cls, config, audit):
        from integrity.usersql import validation_problem

        problems = [(("where",), "write the filter into the query")] if config.where else []
        for setting in ("sql", "population_sql"):
            for database, sql in (getattr(config, setting) or {}).items():
                problem = validation_problem(sql, database, audit.config.connection.url)
                if problem:
                    problems.append(((setting, database), problem))
        return problems

    def columns(self):
        return {}

    def measure(self, data) -> Measurement:
        import pandas as pd
        import sqlalchemy as sa

        from integrity.errors import CheckError

        config, source, connection = self.config, data.source, data.connection
        sql = config.query_for(source.dialect)
        if sql is None:
            raise CheckError(f"no query for {source.dialect} (give sql.{source.dialect} or "
                             f"sql.default)")
        population_sql = (config.query_for(source.dialect, config.population_sql)
                          if config.population_sql else None)
        try:
            result = connection.execute(source.user_query(sql, "custom_sql"))
            frame = pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()),
                                              coerce_float=False)
            population = None
            if population_sql:
                population = int(connection.execute(
                    source.user_query(population_sql, "population")).scalar_one())
        except sa.exc.SQLAlchemyError as error:
            raise source.error(error, "custom SQL failed") from None
        keys = list(config.key or frame.columns)
        missing = [column for column in keys if column not in frame.columns]
        if missing:
            raise CheckError(f"key column {missing[0]!r} is not returned by the query "
                             f"(it returns {', '.join(map(str, frame.columns))})")
        if keys:
            frame = frame.sort_values(keys, kind="stable", na_position="first")
        return Measurement(violations=frame.reset_index(drop=True), violation_count=len(frame),
                           population=population, keys=keys, sql=sql)

    measure_sql = measure  # the query runs in the database on either engine

    def sql_problems(self, dialect: str) -> list[str]:
        return []

    def describe(self) -> str:
        return self.config.description or "Every row returned by the query is a violation."
