"""Sources: read-only database connections and the datasets pulled from them.

Everything that talks to the audited database goes through here, and none of
it may write. Read-only is kept by mechanism, in layers (README, "Read-only,
always"):

- SQL from the audit file is proven to be one read query (`usersql`) before
  it is sent — at validation and again here, in the dialect of the server;
- the database itself refuses a second statement in one call: PostgreSQL gets
  every statement over the extended protocol (psycopg prepares them all;
  ADBC always does), MariaDB/MySQL connect without multi-statements whatever
  the URL asks, SQLite's API runs one statement per call;
- every transaction is read-only by its own declaration, not only by default
  (PostgreSQL `BEGIN … READ ONLY`, MariaDB/MySQL `START TRANSACTION READ ONLY`),
  and on SQLite an authorizer refuses every action but reading (no ATTACH,
  no PRAGMA that sets anything, no extension loading) on a `mode=ro` file;
- strings are read as the parser reads them (PostgreSQL
  `standard_conforming_strings=on`; MariaDB/MySQL without
  `NO_BACKSLASH_ESCAPES`/`ANSI_QUOTES`), so a quote cannot mean one thing to
  the check and another to the server.

Sessions have a statement timeout and an application name a DBA can see.
Identifiers are quoted by SQLAlchemy; values are bound parameters. Errors leave
as SourceError with the password masked.
"""

from __future__ import annotations

import difflib
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from integrity import filters
from integrity.config import Audit, ConnectionConfig, DatasetConfig
from integrity.errors import CheckError, SourceError, masked_url, url_secrets
from integrity.units import ISO_TIME, ISO_TIME_WITH_OFFSET
from integrity.values import install_sqlite_functions

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

APPLICATION_NAME = "integrity"
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Connections.


@dataclass
class Source:
    """One audited database, opened read-only."""

    engine: Engine
    url: URL
    secrets: tuple[str, ...]
    retries: int = 0
    backoff: float = 1.0
    statement_timeout: float = 300.0
    deadline: float | None = None  # time.monotonic() at which the whole run must stop

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return masked_url(self.url)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        connection = self._open()
        try:
            yield connection
            # Nothing to keep: a read-only audit ends in a rollback.
            connection.rollback()
        except sa.exc.SQLAlchemyError as error:
            raise self.error(error) from None
        finally:
            connection.close()

    def read_query(self, sql: str) -> str:
        """`sql` if it is one read query as this database reads it (`usersql`), checked
        again right before it is sent; SourceError saying why not otherwise."""
        from integrity.usersql import UnsafeSql, read_query

        try:
            return read_query(sql, self.dialect)
        except UnsafeSql as problem:
            raise SourceError(f"refused to send this SQL: {problem}") from None

    def user_query(self, sql: str, name: str) -> sa.TextClause:
        """A query from the audit file, checked, as the derived table `name`: inside
        `SELECT * FROM (...)` a COMMIT, BEGIN or SET cannot stand, PostgreSQL refuses a
        data-modifying WITH and MariaDB/MySQL a misplaced INTO — the database's own
        grammar as one more layer. (Newlines: a trailing `--` comment stays inside.)"""
        return sa.text(f"SELECT * FROM (\n{self.read_query(sql)}\n) AS {name}")

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def clamp(self, connection: Connection) -> None:
        """Shorten the statement timeout to what is left of the run's time, so the
        database itself stops a query that would overrun it."""
        left = self.remaining()
        if left is None or left >= self.statement_timeout:
            return
        milliseconds = max(1, int(left * 1000))
        if self.dialect == "postgresql":
            connection.exec_driver_sql(f"SET statement_timeout = {milliseconds}")
        elif self.dialect in {"mysql", "mariadb"}:
            connection.exec_driver_sql(f"SET SESSION max_statement_time = {milliseconds / 1000:.3f}")
        # SQLite reads the deadline itself (see _sqlite_engine).

    def _open(self) -> Connection:
        """Connect, retrying transient failures with exponential backoff."""
        for attempt in range(self.retries + 1):
            try:
                return self.engine.connect()
            except sa.exc.SQLAlchemyError as error:
                delay = self.backoff * 2 ** attempt
                left = self.remaining()
                out_of_time = left is not None and left <= delay
                if attempt == self.retries or not is_transient(error) or out_of_time:
                    why = "" if attempt == 0 and not out_of_time else (
                        f"gave up after {attempt + 1} attempts"
                        + (" (the run's --timeout leaves no time for another)"
                           if out_of_time else ""))
                    raise self.error(error, why) from None
                log.warning("connecting to %s failed (%s); retrying in %.1fs", self.display_url,
                            self.error(error).args[0], delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def error(self, error: BaseException, context: str = "") -> SourceError:
        """A one-line, password-free description of a database error."""
        original = getattr(error, "orig", None) or error
        text = " ".join(str(original).split())
        # SQLAlchemy appends the statement and a link to its docs; keep the reason.
        text = re.split(r"\s*\[SQL:|\s*\(Background on this error", text)[0]
        if _is_statement_timeout(original, text):
            text = self._timeout_reason()
        prefix = f"{context}: " if context else ""
        return SourceError(f"{prefix}{text} (database {self.display_url})", secrets=self.secrets)

    def _timeout_reason(self) -> str:
        """Which bound stopped a statement, in the user's words."""
        from integrity.units import format_duration

        left = self.remaining()
        if left is not None and left < self.statement_timeout:
            return "stopped by the run's --timeout"
        return (f"statement timeout ({format_duration(self.statement_timeout)}, "
                f"connection.statement_timeout) reached")

    def dispose(self) -> None:
        self.engine.dispose()


def _is_statement_timeout(original: BaseException, text: str) -> bool:
    """PostgreSQL 57014, MariaDB 1969 (max_statement_time), MySQL 3024
    (max_execution_time), SQLite interrupted by our progress handler."""
    if getattr(original, "sqlstate", None) == "57014":
        return True
    code = original.args[0] if getattr(original, "args", None) else None
    return code in {1969, 3024} or text == "interrupted"


_TRANSIENT_TEXT = ("connection refused", "timeout expired", "timed out", "could not connect",
                   "server closed the connection", "the database system is starting up",
                   "the database system is shutting down", "too many connections",
                   "could not translate host name", "connection reset", "lost connection",
                   "can't connect", "gone away")
_TRANSIENT_SQLSTATE = {"08000", "08001", "08004", "08006", "53300", "57P03", "57P01"}
_TRANSIENT_MYSQL = {1040, 1203, 2002, 2003, 2006, 2013}


def is_transient(error: BaseException) -> bool:
    """Worth retrying: the server may be back in a moment (not a bad password or name)."""
    original = getattr(error, "orig", None) or error
    if getattr(original, "sqlstate", None) in _TRANSIENT_SQLSTATE:
        return True
    code = original.args[0] if getattr(original, "args", None) else None
    if isinstance(code, int) and code in _TRANSIENT_MYSQL:
        return True
    text = str(original).lower()
    return any(fragment in text for fragment in _TRANSIENT_TEXT)


def open_source(connection: ConnectionConfig) -> Source:
    """Create a read-only engine for the audit's connection (does not connect yet)."""
    try:
        url = make_url(connection.url)
    except (sa.exc.ArgumentError, ValueError):
        # The URL may itself contain the password: never echo it.
        raise SourceError("connection.url is not a valid SQLAlchemy URL "
                          "(expected e.g. postgresql+psycopg://user@host/db)") from None
    secrets = url_secrets(url)
    backend = url.get_backend_name()
    source = Source(engine=None, url=url, secrets=secrets, retries=connection.retries,
                    backoff=connection.retry_backoff.total_seconds(),
                    statement_timeout=connection.statement_timeout.total_seconds())
    timeout_ms = max(1, int(connection.statement_timeout.total_seconds() * 1000))
    connect_seconds = max(1, int(connection.connect_timeout.total_seconds()))
    try:
        if backend == "sqlite":
            engine = _sqlite_engine(url, timeout_ms, lambda: source.deadline)
        elif backend == "postgresql":
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            # jit=off: audit queries run once; compiling them costs more than it saves
            # (benchmarks/RESULTS.md).
            options = (f"{POSTGRES_SESSION} -c statement_timeout={timeout_ms} -c jit=off")
            args: dict[str, Any] = {"connect_timeout": connect_seconds}
            if url.get_driver_name() in {"psycopg", "psycopg2"}:
                args.update(options=options, application_name=APPLICATION_NAME)
            engine = sa.create_engine(url, connect_args=args, pool_pre_ping=True)
            if url.get_driver_name() == "psycopg":
                _read_only_postgres(engine)
        elif backend in {"mysql", "mariadb"}:
            if url.drivername in {"mysql", "mariadb"}:
                url = url.set(drivername=f"{backend}+pymysql")
            engine = sa.create_engine(url, connect_args={"connect_timeout": connect_seconds,
                                                         "program_name": APPLICATION_NAME},
                                      pool_pre_ping=True)
            _read_only_mysql(engine, timeout_ms)
        else:
            engine = sa.create_engine(url)
    except ModuleNotFoundError as error:
        raise SourceError(f"no driver for {url.drivername!r} is installed ({error.name}); "
                          f"install it next to integrity") from None
    except sa.exc.ArgumentError as error:
        raise SourceError(f"cannot use connection.url: {error}", secrets=secrets) from None
    source.engine, source.url = engine, url
    return source


def _sqlite_engine(url: URL, timeout_ms: int, run_deadline) -> Engine:
    database = url.database or ""
    if database in {"", ":memory:"}:
        raise SourceError("an in-memory SQLite database has nothing to audit; "
                          "give a file: sqlite:///path/to/file.db")
    path = Path(database)
    if not path.is_file():
        raise SourceError(f"SQLite database file not found: {path}")
    target = f"file:{path.resolve().as_posix()}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(target, uri=True, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_sqlite_reads_only)
        return connection

    engine = sa.create_engine("sqlite://", creator=connect)
    deadlines: dict[int, float] = {}

    @event.listens_for(engine, "connect")
    def _install_timeout(dbapi_connection, _record):
        key = id(dbapi_connection)
        deadlines[key] = float("inf")
        # SQLite has no statement timeout; interrupt long statements ourselves.
        dbapi_connection.set_progress_handler(
            lambda: 1 if time.monotonic() > deadlines[key] else 0, 10_000)
        install_sqlite_functions(dbapi_connection)

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(connection, _cursor, _statement, _parameters, _context, _many):
        limit = time.monotonic() + timeout_ms / 1000
        whole_run = run_deadline()
        deadlines[id(connection.connection.dbapi_connection)] = (
            limit if whole_run is None else min(limit, whole_run))

    return engine


# Strings read as the standard says (a backslash is a character), as `usersql` reads them.
POSTGRES_SESSION = ("-c default_transaction_read_only=on -c standard_conforming_strings=on"
                    " -c TimeZone=UTC")


def _read_only_postgres(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _session(dbapi_connection, _record):
        # Prepare every statement: the extended protocol, where the server refuses a
        # second command in one call ("cannot insert multiple commands into a prepared
        # statement"), whatever quoting hid it from a scanner.
        dbapi_connection.prepare_threshold = 0
        # BEGIN ... READ ONLY: the transaction itself is read-only, not only by default.
        dbapi_connection.read_only = True


# MariaDB/MySQL would run `a; b` in one call only with this capability: never ask for it.
_MULTI_STATEMENTS = 1 << 16


def _read_only_mysql(engine: Engine, timeout_ms: int) -> None:
    @event.listens_for(engine, "do_connect")
    def _single_statements(_dialect, _record, _cargs, cparams):
        cparams["client_flag"] = int(cparams.get("client_flag") or 0) & ~_MULTI_STATEMENTS

    @event.listens_for(engine, "begin")
    def _begin_read_only(connection):
        connection.exec_driver_sql("START TRANSACTION READ ONLY")

    @event.listens_for(engine, "connect")
    def _session(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.execute("SET time_zone = '+00:00'")
        # A backslash escapes and "..." is a string, as `usersql` reads them.
        cursor.execute("SET SESSION sql_mode = REPLACE(REPLACE(@@sql_mode, "
                       "'NO_BACKSLASH_ESCAPES', ''), 'ANSI_QUOTES', '')")
        cursor.execute("SELECT VERSION()")
        version = cursor.fetchone()[0]
        if "mariadb" in version.lower():
            cursor.execute(f"SET SESSION max_statement_time = {timeout_ms / 1000:.3f}")
        else:
            cursor.execute(f"SET SESSION max_execution_time = {int(timeout_ms)}")
        cursor.close()


# SQLite actions an audit needs: reading, its own functions, transactions. Everything else
# (writes, ATTACH, schema changes, PRAGMAs that set a value) is refused by SQLite itself.
_SQLITE_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                   sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT}
_SQLITE_FORBIDDEN_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit",
                               "fts3_tokenizer"}
# PRAGMAs SQLAlchemy reads to reflect tables (their argument names a table or index), and
# settings it reads (never sets: a value given is refused) — with the file's size in pages,
# which database_health reads.
_SQLITE_PRAGMAS_OF_A_TABLE = {"table_info", "table_xinfo", "index_list", "index_info",
                              "index_xinfo", "foreign_key_list"}
_SQLITE_READ_PRAGMAS = {"database_list", "read_uncommitted", "query_only", "page_count",
                        "page_size"}


def _sqlite_reads_only(action: int, first, second, _database, _trigger) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        allowed = (second or "").lower() not in _SQLITE_FORBIDDEN_FUNCTIONS
    elif action == sqlite3.SQLITE_PRAGMA:
        pragma = (first or "").lower()
        allowed = pragma in _SQLITE_PRAGMAS_OF_A_TABLE or (
            pragma in _SQLITE_READ_PRAGMAS and second is None)
    else:
        allowed = action in _SQLITE_ALLOWED
    return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY


# ---------------------------------------------------------------------------
# Datasets.


def relation(dataset: DatasetConfig, columns: list[str]) -> sa.FromClause:
    """The dataset as a selectable whose columns are `columns` (quoted as needed)."""
    if dataset.table:
        return sa.table(dataset.table, *[sa.column(name) for name in columns],
                        schema=dataset.schema_)
    return sa.text(f"{dataset.sql}\n").columns(*[sa.column(name) for name in columns]).subquery("q")


class ColumnTypes(dict):
    """Column name -> SQL type (None where the database does not say), and which columns
    the table declares NOT NULL."""

    not_null: set[str] = set()


def available_columns(connection: Connection, source: Source, name: str,
                      dataset: DatasetConfig) -> dict[str, Any]:
    """The columns a dataset really has, with their SQL types where the database says, or
    SourceError if the table/query is unusable. A table's types are reflected; a query's
    are the types of its result columns as the server describes them (`query_types`)."""
    if dataset.table:
        inspector = sa.inspect(connection)
        try:
            reflected = inspector.get_columns(dataset.table, schema=dataset.schema_)
            found = ColumnTypes({column["name"]: column["type"] for column in reflected})
            found.not_null = {column["name"] for column in reflected
                              if column.get("nullable") is False}
            return found
        except sa.exc.NoSuchTableError:
            tables = inspector.get_table_names(schema=dataset.schema_)
            tables += inspector.get_view_names(schema=dataset.schema_)
            hint = _suggest(dataset.table, tables)
            raise SourceError(f"dataset {name!r}: {dataset.label} does not exist{hint}",
                              secrets=source.secrets) from None
        except sa.exc.SQLAlchemyError as error:
            raise source.error(error, f"dataset {name!r}") from None
    try:
        source.read_query(dataset.sql)
    except SourceError as error:
        raise SourceError(f"dataset {name!r}: {error}") from None
    probe = sa.select(sa.text("*")).select_from(sa.text(f"(\n{dataset.sql}\n) AS q")).where(
        sa.false())
    try:
        result = connection.execute(probe)
        names = list(result.keys())
        description = getattr(result.cursor, "description", None)
        fields = getattr(getattr(result.cursor, "_result", None), "fields", None)
        result.close()
        types = query_types(connection, source, description, fields)
        return ColumnTypes(zip(names, types if len(types) == len(names) else
                               [None] * len(names)))
    except sa.exc.SQLAlchemyError as error:
        connection.rollback()
        raise source.error(error, f"dataset {name!r}: the sql query failed") from None


def query_types(connection: Connection, source: Source, description, fields=None
                ) -> list[Any]:
    """The SQL types of a query's result columns, as table reflection would give them, from
    the driver's description of the result (None where it says nothing we can use: SQLite,
    or a type this does not know). PostgreSQL names a type by its oid, looked up in
    pg_type; MariaDB/MySQL by a protocol code, text told from bytes by the character set
    (63: binary), which PyMySQL keeps on `fields`."""
    if not description:
        return []
    codes = [column[1] for column in description]
    if source.dialect == "postgresql" and all(isinstance(code, int) for code in codes):
        return _postgres_types(connection, codes)
    if source.dialect in {"mysql", "mariadb"}:
        charsets = [getattr(field, "charsetnr", None) for field in fields or []]
        if len(charsets) != len(codes):
            charsets = [None] * len(codes)
        return [_mysql_type(code, charset) for code, charset in zip(codes, charsets)]
    return [None] * len(codes)


def _postgres_types(connection: Connection, oids: list[int]) -> list[Any]:
    """PostgreSQL type oids as SQLAlchemy types, named as `format_type` names them (the
    names table reflection maps); an enum as ENUM, an array as ARRAY of its element. A
    domain's column is described by its base type already."""
    from sqlalchemy.dialects import postgresql

    rows = connection.execute(sa.text(
        "SELECT t.oid, format_type(t.oid, NULL), t.typtype, "
        "format_type(NULLIF(t.typelem, 0), NULL), e.typtype "
        "FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem "
        "WHERE t.oid = ANY(:oids)"), {"oids": sorted(set(oids))}).all()
    names = postgresql.base.ischema_names

    def named(name: str | None, kind: str | None) -> Any:
        if name is None:
            return None
        if kind == "e":
            return postgresql.ENUM(name=name, create_type=False)
        if name in {"timestamp with time zone", "time with time zone"}:
            return names[name](timezone=True)
        found = names.get(name)
        return None if found is None else found()

    types = {}
    for oid, name, kind, element, element_kind in rows:
        if element is not None and name.endswith("[]"):
            types[oid] = postgresql.ARRAY(named(element, element_kind) or sa.NullType())
        else:
            types[oid] = named(name, kind)
    return [types.get(oid) for oid in oids]


# MariaDB/MySQL protocol type codes (PyMySQL's FIELD_TYPE) as the types reflection gives.
_MYSQL_CODES = {0: "DECIMAL", 246: "DECIMAL", 1: "TINYINT", 2: "SMALLINT", 3: "INTEGER",
                9: "MEDIUMINT", 8: "BIGINT", 4: "FLOAT", 5: "DOUBLE", 7: "TIMESTAMP",
                10: "DATE", 14: "DATE", 11: "TIME", 12: "DATETIME", 13: "YEAR", 16: "BIT",
                245: "JSON"}
_MYSQL_STRINGS = {15: ("VARCHAR", "VARBINARY"), 253: ("VARCHAR", "VARBINARY"),
                  254: ("CHAR", "BINARY"), 249: ("TEXT", "BLOB"), 250: ("TEXT", "BLOB"),
                  251: ("TEXT", "BLOB"), 252: ("TEXT", "BLOB")}
_BINARY_CHARSET = 63


def _mysql_type(code: Any, charset: int | None) -> Any:
    from sqlalchemy.dialects import mysql

    if code in _MYSQL_CODES:
        return getattr(mysql, _MYSQL_CODES[code])()
    if code in _MYSQL_STRINGS and charset is not None:
        text, binary = _MYSQL_STRINGS[code]
        return getattr(mysql, binary if charset == _BINARY_CHARSET else text)()
    return None


def describe_missing(name: str, dataset: DatasetConfig, column: str, present) -> str:
    return (f"dataset {name!r} ({dataset.label}) has no column {column!r}"
            f"{_suggest(column, list(present))}")


def _suggest(word: str, candidates: list[str]) -> str:
    by_case = {candidate.lower(): candidate for candidate in candidates}
    if word.lower() in by_case:
        return f"; did you mean {by_case[word.lower()]!r}? (names are case-sensitive)"
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def dataset_query(dataset: DatasetConfig, columns: list[str]) -> sa.Select:
    """SELECT exactly `columns` of the dataset."""
    selectable = relation(dataset, columns)
    if not columns:  # only the rows matter (a metric's `count`): one constant per row
        return sa.select(sa.literal(1).label("_row")).select_from(selectable)
    return sa.select(*[selectable.c[column] for column in columns])


def sql_text(statement: sa.ClauseElement, source: Source) -> str:
    """The statement as the database receives it, for a reviewer to re-run."""
    return str(statement.compile(dialect=source.engine.dialect,
                                 compile_kwargs={"literal_binds": True}))


def read_frame(connection: Connection, source: Source, name: str, dataset: DatasetConfig,
               columns: dict[str, Any], bulk: BulkReader | None = None) -> pd.DataFrame:
    """Pull only `columns` (name -> reflected SQL type or None) of a dataset into a dataframe.

    With a BulkReader (PostgreSQL) the rows travel as Arrow, in the same snapshot."""
    statement = dataset_query(dataset, list(columns))
    if bulk is not None:
        frame = bulk.read(statement, f"dataset {name!r}")
        return frame if columns else pd.DataFrame(index=pd.RangeIndex(len(frame)))
    try:
        result = connection.execute(statement)
        rows = result.fetchall()
    except sa.exc.SQLAlchemyError as error:
        connection.rollback()
        raise source.error(error, f"dataset {name!r}") from None
    if not columns:
        return pd.DataFrame(index=pd.RangeIndex(len(rows)))
    return pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=False)


class BulkReader:
    """PostgreSQL's bulk path: rows as Arrow batches over ADBC (libpq's binary COPY).

    About ten times the throughput of `pandas.read_sql` at a third of its peak
    memory (benchmarks/extraction.py). The ADBC session is opened read-only with
    the run's statement timeout and imports the run's snapshot
    (`pg_export_snapshot`), so bulk-read datasets see exactly what the rest of
    the audit sees.
    """

    def __init__(self, source: Source, connection: Connection, timeout_ms: int):
        import adbc_driver_postgresql.dbapi as adbc

        self.source = source
        try:
            snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
        except sa.exc.SQLAlchemyError:
            # A standby cannot export snapshots: read in a snapshot of our own instead.
            connection.rollback()
            snapshot = None
        options = f"{POSTGRES_SESSION} -c statement_timeout={timeout_ms}"
        # libpq decodes %-escapes only (a '+' stays a '+'), so build the query by hand.
        query = {**source.url.query, "options": options, "application_name": APPLICATION_NAME}
        base = source.url.set(drivername="postgresql", query={})
        uri = base.render_as_string(hide_password=False) + "?" + "&".join(
            f"{quote(key, safe='')}={quote(str(value), safe='')}" for key, value in query.items())
        try:
            self.connection = adbc.connect(uri)
            with self.connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                if snapshot and re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
                    cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        except adbc.Error as error:
            raise source.error(error, "bulk reader") from None

    def read(self, statement: sa.Select, context: str) -> pd.DataFrame:
        import adbc_driver_postgresql.dbapi as adbc

        try:
            with self.connection.cursor() as cursor:
                # The column types first (Parse/Describe, no rows read): what Arrow cannot
                # carry as a value is asked for in a form it can.
                schema = cursor.adbc_execute_schema(sql_text(statement, self.source))
                statement = self._readable(statement, schema)
                # Rendered by SQLAlchemy's compiler: quoted identifiers, no user values inside.
                cursor.execute(sql_text(statement, self.source))
                table = cursor.fetch_arrow_table()
        except adbc.Error as error:
            raise self.source.error(error, context) from None
        return self._plain(table).to_pandas(self_destruct=True, split_blocks=True)

    @staticmethod
    def _readable(statement: sa.Select, schema) -> sa.Select:
        """`statement` with the columns ADBC cannot decode read as PostgreSQL's own text
        (enum, bit, inet, ranges …: otherwise their binary wire format), arrays too (a key
        must be one hashable value), uuid as its text (as every other database stores it,
        and as it is compared with text), money as numeric (otherwise an integer of cents)
        and timetz as time."""
        import pyarrow as pa

        columns, changed = list(statement.selected_columns), False
        for index, field_ in enumerate(schema):
            kind, name = field_.type, BulkReader._pg_type(field_)
            storage = kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind
            if name == "money":
                target = sa.Numeric
            elif name == "timetz":  # a time of day, as `time` is
                target = sa.Time
            elif (name == "uuid" or (pa.types.is_binary(storage) and name != "bytea")
                  or pa.types.is_list(kind) or pa.types.is_large_list(kind)
                  or pa.types.is_fixed_size_list(kind) or pa.types.is_struct(kind)):
                target = sa.Text
            else:
                continue
            columns[index], changed = sa.cast(columns[index], target).label(field_.name), True
        return statement.with_only_columns(*columns) if changed else statement

    @staticmethod
    def _plain(table):
        """The Arrow table with plain column types a dataframe holds as values: numeric as
        float64 (the checks compute in floats), JSON as its text, an interval as a duration
        (months of 30 days, as PostgreSQL compares intervals). Untouched when there is
        nothing to change; otherwise a new schema without the driver's metadata."""
        import pyarrow as pa

        columns, changed = list(table.columns), False
        for index, field_ in enumerate(table.schema):
            kind, column = field_.type, columns[index]
            if isinstance(kind, pa.BaseExtensionType):  # json, numeric: their text
                column = pa.chunked_array([chunk.storage for chunk in column.chunks],
                                          type=kind.storage_type)
            if pa.types.is_decimal(kind) or BulkReader._pg_type(field_) == "numeric":
                column = column.cast(pa.float64())
            elif kind == pa.month_day_nano_interval():
                column = pa.chunked_array(
                    [BulkReader._interval_ns(chunk) for chunk in column.chunks],
                    type=pa.duration("ns"))
            if column is not columns[index]:
                columns[index], changed = column, True
        if not changed:
            return table
        return pa.table(columns, names=table.column_names)

    @staticmethod
    def _pg_type(field_) -> str | None:
        """The PostgreSQL type name ADBC records on an Arrow field."""
        metadata = field_.metadata or {}
        name = metadata.get(b"POSTGRESQL:type") or metadata.get(b"ADBC:postgresql:typname")
        return name.decode() if name else None

    @staticmethod
    def _interval_ns(chunk):
        """A month_day_nano interval array as nanoseconds (30-day months)."""
        import numpy as np
        import pyarrow as pa

        layout = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
        values = np.frombuffer(chunk.buffers()[1], dtype=layout,
                               count=chunk.offset + len(chunk))[chunk.offset:]
        nanos = ((values["months"].astype("int64") * 30 + values["days"]) * 86_400_000_000_000
                 + values["nanos"])
        return pa.array(nanos, type=pa.duration("ns"),
                        mask=chunk.is_null().to_numpy(zero_copy_only=False))

    def close(self) -> None:
        """End the bulk session. Its rows are already read: a session the server has
        since dropped (a killed backend, a restart) has nothing left to roll back."""
        import adbc_driver_postgresql.dbapi as adbc

        try:
            self.connection.rollback()
        except adbc.Error:
            pass
        finally:
            try:
                self.connection.close()
            except adbc.Error:
                pass


# ---------------------------------------------------------------------------
# Times.



TIME_SLICE = 100_000  # text times parsed at a time


def to_utc(values: pd.Series, zone: str = "UTC") -> pd.Series:
    """Parse a column as UTC timestamps.

    Aware values are converted; naive ones are read in the dataset's time zone
    (UTC unless it says otherwise). Nulls and unparseable text become NaT, so
    callers can tell "missing" from "garbage" by looking at the raw column. A
    time of day or a duration is no timestamp at all: CheckError.
    """
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_timedelta64_dtype(dtype):  # MariaDB TIME, PostgreSQL interval
        raise CheckError(not_a_moment(values.name))
    if pd.api.types.is_datetime64_dtype(dtype):
        return _localize(values, zone)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return pd.to_datetime(values, unit="s", utc=True, errors="coerce")
    if isinstance(dtype, pd.StringDtype) and len(values) > TIME_SLICE:
        # Text is parsed a slice at a time (each value on its own, so alike): parsing
        # makes a Python string of every value, and a whole long column of them would
        # outweigh the column itself — Arrow-backed text is one buffer — several times.
        return pd.concat([to_utc(values.iloc[start:start + TIME_SLICE], zone)
                          for start in range(0, len(values), TIME_SLICE)])
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    present = values[values.notna()]
    if present.empty:
        return result
    kind = pd.api.types.infer_dtype(present, skipna=True)
    if kind in {"time", "timedelta"}:  # PostgreSQL time: a clock reading with no day
        raise CheckError(not_a_moment(values.name))
    if kind == "string":  # the usual case: text
        text = present.astype("object").str.strip()
    else:  # a mix of text and datetime objects (SQLite returns what was stored)
        text = present.map(_as_text).astype("object")
    text = text[text.str.fullmatch(ISO_TIME).astype(bool)]  # the rest stays NaT
    aware = text.str.fullmatch(ISO_TIME_WITH_OFFSET).astype(bool)
    if aware.any():
        result.loc[aware[aware].index] = pd.to_datetime(
            text[aware], utc=True, errors="coerce", format="ISO8601")
    naive = text[~aware]
    if not naive.empty:
        parsed = pd.to_datetime(naive, errors="coerce", format="ISO8601")
        result.loc[naive.index] = _localize(parsed, zone)
    return result


def not_a_moment(column: Any) -> str:
    """Why a time of day or a duration is no timestamp (the same words on both engines)."""
    return (f"column {column!r} holds a time of day or a duration, not a date and time: "
            f"it cannot be read as a timestamp")


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def _localize(values: pd.Series, zone: str) -> pd.Series:
    if zone == "UTC":
        return values.dt.tz_localize("UTC")
    return values.dt.tz_localize(zone, ambiguous=np.zeros(len(values), dtype=bool),
                                 nonexistent="shift_forward").dt.tz_convert("UTC")


# ---------------------------------------------------------------------------
# What a pandas check sees.


@dataclass
class Frames:
    """The datasets of one audit run, pulled once and shared by every check."""

    audit: Audit
    source: Source | None
    frames: dict[str, pd.DataFrame]
    now: datetime
    connection: Connection | None = None
    # (check id, group, runs, window) -> [(value, run's now, breached)], newest first
    baseline: Any = None
    _times: dict[tuple[str, str], pd.Series] = field(default_factory=dict)

    def frame(self, dataset: str) -> pd.DataFrame:
        return self.frames[dataset]

    def times(self, dataset: str, column: str) -> pd.Series:
        """`column` of `dataset` as UTC timestamps (parsed once per run)."""
        cached = self._times.get((dataset, column))
        if cached is None:
            zone = self.audit.datasets[dataset].timezone
            cached = to_utc(self.frames[dataset][column], zone)
            self._times[(dataset, column)] = cached
        return cached

    def rows(self, dataset: str, where: tuple[filters.Condition, ...] = ()) -> pd.DataFrame:
        """The rows of `dataset` that pass `where` (all rows if there is no filter)."""
        return self.narrow(dataset, self.frames[dataset], where)

    def narrow(self, dataset: str, rows: pd.DataFrame,
               where: tuple[filters.Condition, ...]) -> pd.DataFrame:
        """The subset of `rows` (rows of `dataset`) that pass `where`."""
        if not where:
            return rows
        keep = filters.mask(rows, where, now=self.now,
                            times=lambda column: self.times(dataset, column).loc[rows.index])
        return rows[keep]

    def time_column(self, dataset: str, rows: pd.DataFrame, column: str) -> pd.Series:
        """UTC timestamps of `column` for exactly the given rows of `dataset`."""
        return self.times(dataset, column).loc[rows.index]
