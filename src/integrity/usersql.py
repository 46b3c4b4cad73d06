"""User SQL: prove that SQL text from an audit file is one read query, before it runs.

Three settings carry SQL that integrity did not write — `custom_sql`'s `sql`
and `population_sql`, and a dataset's `sql:`. Each is read by a real SQL
parser (sqlglot) in the dialect of the database it will run on, so dollar
quotes, `E''` strings, backslash escapes, nested and executable comments are
read as that database reads them, and it must be exactly one read query:

- one statement (a second one, smuggled in any quoting, is refused);
- a query (`SELECT`, `WITH … SELECT`, set operations, `VALUES`, `TABLE t`) with
  nothing inside that writes or locks: no data-modifying `WITH`, no
  `SELECT … INTO` (tables, variables, `OUTFILE`/`DUMPFILE`), no `FOR UPDATE/SHARE`;
- no function that reads or writes server files, reaches another database,
  changes settings, signals other sessions or takes locks (`pg_read_file`,
  `lo_import`, `dblink_exec`, `set_config`, `LOAD_FILE`, `load_extension`, …):
  their output would land in reports, or their effect outlive the run.

This is the first of the layers README describes; it never stands alone. The
connection then sends each statement so that the database itself refuses a
second one, inside a transaction that is read-only by its own declaration
(see `sources`). A query this parser cannot read is refused, not guessed at:
integrity runs only SQL it can prove harmless.

This module must not import pandas or SQLAlchemy (`integrity validate` stays fast).
"""

from __future__ import annotations

import logging
import re

# The database a URL scheme names -> sqlglot's dialect.
SQLGLOT_DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql",
                    "sqlite": "sqlite"}
DATABASE_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB",
                  "sqlite": "SQLite"}

# Functions refused in user SQL (lower-case; a trailing '*' is a prefix). Grouped by why.
_FORBIDDEN_FUNCTIONS = {
    "read or write files on the database server": [
        "pg_read_file", "pg_read_binary_file", "pg_ls_*", "pg_stat_file", "pg_file_*",
        "pg_logdir_ls", "lo_*", "loread", "lowrite", "load_file", "readfile", "writefile",
        "edit", "load_extension", "fts3_tokenizer", "sys_exec", "sys_eval"],
    "reach another database": ["dblink*", "postgres_fdw_*"],
    "run SQL given as text": ["query_to_xml*", "cursor_to_xml*"],
    "change settings or server state": [
        "set_config", "pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_switch_wal",
        "pg_create_restore_point", "pg_stat_reset*", "pg_create_*", "pg_drop_*",
        "pg_replication_*", "pg_logical_emit_message", "pg_import_system_collations",
        "nextval", "setval", "pg_notify"],
    "signal other sessions": ["pg_terminate_backend", "pg_cancel_backend"],
    "take locks that outlive a statement": ["pg_advisory*", "pg_try_advisory*", "get_lock",
                                            "release_lock", "release_all_locks"],
}
_FUNCTION_REASON = {name: reason for reason, names in _FORBIDDEN_FUNCTIONS.items()
                    for name in names}
_FORBIDDEN_EXACT = {name for name in _FUNCTION_REASON if not name.endswith("*")}
_FORBIDDEN_PREFIXES = tuple(name[:-1] for name in _FUNCTION_REASON if name.endswith("*"))


class UnsafeSql(ValueError):
    """SQL that is not provably one read query. `line`/`column`: where in the query."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


def validation_problem(sql: str, key: str, url: str) -> str | None:
    """Why `sql`, written for `key` (a database name, or `default`: the audit's own
    database), is not one read query; None when it is. For config validation."""
    database = key if key in SQLGLOT_DIALECTS else database_of(url)
    if database is None and "${" in url:
        return None  # the database comes from the environment: proven at run time
    try:
        read_query(sql, database)
    except UnsafeSql as problem:
        return str(problem)
    return None


def database_of(url: str) -> str | None:
    """The database a connection URL names (`postgresql`, `mysql`, `mariadb`, `sqlite`),
    read from its scheme without SQLAlchemy; None when it is none of those."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].strip().lower()
    scheme = {"postgres": "postgresql"}.get(scheme, scheme)
    return scheme if scheme in SQLGLOT_DIALECTS else None


def read_query(sql: str, database: str | None) -> str:
    """`sql` (without surrounding space or a final `;`) if it is exactly one read query
    as `database` reads it.

    `database`: postgresql, mysql, mariadb or sqlite; any other (None included) must
    accept it as all three read it. Raises UnsafeSql saying why not."""
    if database not in SQLGLOT_DIALECTS:
        for each in ("mysql", "sqlite", "postgresql"):
            accepted = read_query(sql, each)
        return accepted
    import sqlglot
    from sqlglot import expressions as exp
    from sqlglot.errors import ParseError, TokenError

    dialect = SQLGLOT_DIALECTS[database]
    name = DATABASE_NAMES[database]
    # sqlglot warns when it falls back to an opaque command; the refusal below says it.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    text = sql.strip()
    if not text.rstrip(";").strip():
        raise UnsafeSql("the query is empty")
    try:
        if dialect == "mysql":
            _no_executable_comments(text)
        statements = [tree for tree in sqlglot.parse(text, read=dialect) if tree is not None]
    except (ParseError, TokenError) as error:
        raise _unreadable(text, dialect, name, error) from None
    statements = [tree for tree in statements if not isinstance(tree, exp.Semicolon)]
    if len(statements) != 1:
        found = ", ".join(_statement_name(tree) for tree in statements[:4])
        raise UnsafeSql(f"only one statement is allowed ({name} reads {len(statements)}: "
                        f"{found}{', …' if len(statements) > 4 else ''})")
    tree = statements[0]
    if not isinstance(tree, (exp.Query, exp.Values)):
        raise UnsafeSql(f"audit SQL runs read-only: it must be one SELECT (or WITH ... "
                        f"SELECT), not {_statement_name(tree)}")
    for node in tree.walk():
        problem = _problem(node, exp)
        if problem:
            raise UnsafeSql(problem)
    return re.sub(r"[\s;]+$", "", text)  # it runs inside a derived table


def _no_executable_comments(text: str) -> None:
    """MySQL and MariaDB run the text of `/*! ... */` and `/*M! ... */` as SQL: a parser
    that reads it as a comment would not see what runs."""
    import sqlglot

    for token in sqlglot.tokenize(text, read="mysql"):
        for comment in token.comments:
            if re.match(r"M?!", comment):
                raise UnsafeSql("MySQL and MariaDB run the text of /*! ... */ comments as SQL: "
                                "write it as plain SQL", token.line, token.col)


def _problem(node, exp) -> str | None:
    """Why `node` (inside a query) is not a read, or None."""
    if isinstance(node, (exp.DML, exp.DDL, exp.Command, exp.Copy, exp.Transaction,
                         exp.Commit, exp.Rollback, exp.Set, exp.Pragma, exp.Attach,
                         exp.Detach, exp.Use, exp.Grant, exp.LoadData)):
        return (f"a query may only read: it contains {_statement_name(node)} "
                f"(a data-modifying WITH, or a statement inside the query)")
    if isinstance(node, exp.Into):
        return "SELECT ... INTO writes (a table, a file or variables): only a read is allowed"
    if isinstance(node, exp.Lock):
        return "FOR UPDATE / FOR SHARE locks rows: an audit only reads"
    if isinstance(node, exp.Func):
        function = _function_name(node)
        reason = _function_reason(function)
        if reason:
            return f"{function}() is not allowed in audit SQL: functions that {reason} are refused"
    return None


def _function_name(node) -> str:
    from sqlglot import expressions as exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _function_reason(function: str) -> str | None:
    if function in _FORBIDDEN_EXACT:
        return _FUNCTION_REASON[function]
    for prefix in _FORBIDDEN_PREFIXES:
        if function.startswith(prefix):
            return _FUNCTION_REASON[prefix + "*"]
    return None


def _statement_name(tree) -> str:
    from sqlglot import expressions as exp

    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    if isinstance(tree, exp.Query):
        return "SELECT"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", type(tree).__name__).upper()


def _unreadable(text: str, dialect: str, name: str, error: Exception) -> UnsafeSql:
    """A parse failure, with the position in the query — and a plain reason for the one
    write that some dialects' grammar lacks altogether (`INTO OUTFILE`)."""
    import sqlglot
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.tokenize(text, read=dialect)
    except Exception:  # noqa: BLE001 — the parse error below says what is wrong
        tokens = []
    reads = bool(tokens) and tokens[0].token_type in {TokenType.SELECT, TokenType.WITH,
                                                      TokenType.L_PAREN}
    for token in tokens if reads else []:
        if token.token_type == TokenType.INTO:
            return UnsafeSql("SELECT ... INTO writes (a table, a file or variables): only a "
                             "read is allowed", token.line, token.col)
    details = getattr(error, "errors", None) or [{}]
    first = details[0]
    line, column = first.get("line"), first.get("col")
    reason = first.get("description") or str(error).splitlines()[0]
    where = f" at line {line}, column {column} of the query" if line else ""
    return UnsafeSql(f"cannot read this as one {name} query ({reason}{where}); integrity runs "
                     f"only SQL it can prove is a single read", line, column)
