"""Custom SQL: any query whose rows are violations — the escape hatch (all seeds).

The one place where text from the audit file runs as SQL, so it is held to
more: only a single SELECT (or WITH … SELECT) is accepted at validation time,
and it runs in the audit's read-only session with its statement timeout. The
query may differ per database: `sql: {postgresql: ..., sqlite: ..., default: ...}`.
`key` names the columns that identify a violating row (all columns if
omitted); `population_sql` (a query returning one number) gives the rate its
denominator.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Columns

_DIALECTS = {"postgresql", "sqlite", "mysql", "mariadb", "default"}
# One left-to-right pass, so whichever of a comment, a string or a quoted name opens
# first wins, as in the database's own scanner ('--' inside a string is not a comment).
# MySQL's executable comments (/*! ... */, /*M! ... */) run, so they count as code.
_TOKENS = {
    escapes: re.compile(
        r"(?P<comment>--[^\n]*|/\*(?!M?!).*?\*/)"
        + (r"|(?P<string>'(?:[^'\\]|''|\\.)*')" if escapes else r"|(?P<string>'(?:[^']|'')*')")
        + r"|(?P<name>\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`)"
        + r"|(?P<open>/\*(?!M?!)|['\"`])", re.DOTALL)
    for escapes in (False, True)
}


def read_only_query(sql: str) -> str:
    """The query if it is one SELECT/WITH statement; ValueError otherwise.

    Strings are read both as PostgreSQL and SQLite do (a backslash is a character) and
    as MySQL does (a backslash escapes): a query is accepted only if it is one
    statement both ways, so no reading can hide a second statement in a string."""
    for escapes in (False, True):
        code = _code(sql, _TOKENS[escapes]).strip().rstrip(";").strip()
        if not code:
            raise ValueError("the query is empty")
        if ";" in code:
            raise ValueError("only one statement is allowed")
    first = code.split(None, 1)[0].upper()
    if first not in {"SELECT", "WITH"}:
        raise ValueError(f"custom SQL runs read-only: it must be a SELECT (or WITH ... SELECT), "
                         f"not {first}")
    return sql.strip()


def _code(sql: str, tokens: re.Pattern) -> str:
    """`sql` with comments blanked and strings and quoted names emptied."""
    def blank(match: re.Match) -> str:
        if match.group("open"):
            what = "comment" if match.group("open") == "/*" else "quote"
            raise ValueError(f"unterminated {what} {match.group('open')} at character "
                             f"{match.start() + 1}")
        return " " if match.group("comment") else "''"
    return tokens.sub(blank, sql)


def _per_dialect(value):
    if isinstance(value, str):
        return {"default": read_only_query(value)}
    if isinstance(value, dict) and value:
        unknown = set(value) - _DIALECTS
        if unknown:
            raise ValueError(f"unknown database {sorted(unknown)[0]!r} "
                             f"(use {', '.join(sorted(_DIALECTS))})")
        return {name: read_only_query(sql) if isinstance(sql, str) else sql
                for name, sql in value.items()}
    raise ValueError("sql must be a query, or a mapping of database name to query")


class CustomSqlConfig(CheckConfig):
    kind: Literal["custom_sql"]
    sql: dict[str, str]
    key: Columns | None = None
    tenant_column: str | None = None
    population_sql: dict[str, str] | None = None

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
        if config.where:
            return [(("where",), "write the filter into the query")]
        return []

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
        try:
            result = connection.execute(sa.text(sql))
            frame = pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()),
                                              coerce_float=False)
            population = None
            population_sql = (config.query_for(source.dialect, config.population_sql)
                              if config.population_sql else None)
            if population_sql:
                population = int(connection.execute(sa.text(population_sql)).scalar_one())
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
