"""Attacks on the read-only promise, on SQLite, PostgreSQL and MariaDB.

Every layer is attacked on its own, so a hole in one is caught by a test even
while the others hold: the parser (`usersql`), the derived table user SQL runs
in, the database's refusal of a second statement, the read-only transaction and
SQLite's authorizer. After each attack every table is fingerprinted and the
tell-tale side effects (a new table, a file on the server) are looked for.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from integrity.audit import parse_audit
from integrity.errors import ConfigError, SourceError
from integrity.gate import exit_code
from integrity.runner import run_audit
from integrity.sources import open_source
from integrity.usersql import UnsafeSql, read_query
from conftest import NOW, Database, database_url
from test_databases import fingerprint

# ---------------------------------------------------------------------------
# Layer 1: the parser, per database, without connecting.

REFUSED = [
    # Dollar quoting hides the quote a text scanner would pair.
    ("postgresql", "SELECT $q$'$q$ AS id; COMMIT; BEGIN READ WRITE; DELETE FROM \"JobHeartbeat\";"
                   " COMMIT; --'", "only one statement is allowed"),
    ("postgresql", "SELECT $a$ $b$ $a$; DELETE FROM t; SELECT $b$ x $b$",
     "only one statement is allowed"),
    # A dataset query that closes the probe's parenthesis.
    ("postgresql", "SELECT 1 AS id) AS q; COMMIT; BEGIN READ WRITE; CREATE TABLE pwned(x int);"
                   " COMMIT; SELECT * FROM (SELECT 1 AS id", "cannot read this as one"),
    ("postgresql", 'DELETE FROM "Tenant" RETURNING id', "not DELETE"),
    ("postgresql", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "contains DELETE"),
    ("postgresql", "WITH d AS (UPDATE t SET id = 0 RETURNING *) SELECT * FROM d",
     "contains UPDATE"),
    ("postgresql", "WITH d AS (INSERT INTO t VALUES (9) RETURNING *) SELECT 1",
     "contains INSERT"),
    ("postgresql", "SELECT * INTO pwned FROM t", "SELECT ... INTO writes"),
    ("postgresql", "SELECT * FROM t FOR UPDATE", "locks rows"),
    ("postgresql", "SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", "locks rows"),
    ("postgresql", "SELECT * FROM t FOR SHARE", "locks rows"),
    ("postgresql", "SELECT E'\\''; DELETE FROM t; --'", "only one statement is allowed"),
    ("postgresql", "SELECT 1 /* outer /* inner */ still a comment */; DELETE FROM t",
     "only one statement is allowed"),
    ("postgresql", "SELECT 1 \\; DELETE FROM t", "cannot read this as one"),
    ("postgresql", "COPY t TO '/tmp/x'", "not COPY"),
    ("postgresql", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'", "not COPY"),
    ("postgresql", "SELECT pg_read_file('/etc/passwd')", "pg_read_file() is not allowed"),
    ("postgresql", "SELECT pg_catalog.pg_read_binary_file('/etc/passwd')",
     "pg_read_binary_file() is not allowed"),
    ("postgresql", 'SELECT "pg_read_file"(\'/etc/passwd\')', "pg_read_file() is not allowed"),
    ("postgresql", "SELECT PG_LS_DIR('.')", "pg_ls_dir() is not allowed"),
    ("postgresql", "SELECT lo_import('/etc/passwd')", "lo_import() is not allowed"),
    ("postgresql", "SELECT lo_export(1, '/tmp/x')", "lo_export() is not allowed"),
    ("postgresql", "SELECT * FROM dblink('dbname=test', 'SELECT 1') AS r(a int)",
     "dblink() is not allowed"),
    ("postgresql", "SELECT dblink_exec('dbname=test', 'DELETE FROM t')",
     "dblink_exec() is not allowed"),
    ("postgresql", "SELECT set_config('default_transaction_read_only', 'off', false)",
     "set_config() is not allowed"),
    ("postgresql", "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')",
     "query_to_xml() is not allowed"),
    ("postgresql", "SELECT pg_terminate_backend(1)", "pg_terminate_backend() is not allowed"),
    ("postgresql", "SELECT pg_advisory_lock(1)", "pg_advisory_lock() is not allowed"),
    ("postgresql", "SELECT nextval('s')", "nextval() is not allowed"),
    ("postgresql", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "not SET"),
    ("postgresql", "COMMIT", "not COMMIT"),
    ("postgresql", "BEGIN READ WRITE", "not TRANSACTION"),
    ("postgresql", "EXPLAIN ANALYZE DELETE FROM t", "not EXPLAIN"),
    # Unicode: look-alike separators and invisible characters are not read as code.
    ("postgresql", "SELECT 1\uff1b DELETE FROM t", "cannot read this as one"),
    ("postgresql", "SELECT 1;\u200b DELETE FROM t", "cannot read this as one"),
    ("postgresql", 'SELECT "a\u202e" FROM t; DELETE FROM t', "only one statement is allowed"),
    ("postgresql", "SELECT U&'\\0027'; DELETE FROM t", "only one statement is allowed"),
    ("mysql", "SELECT 1 \u037e DELETE FROM t", "cannot read this as one"),
    ("mysql", "SELECT id FROM t INTO OUTFILE '/tmp/integrity-pwned'", "SELECT ... INTO writes"),
    ("mysql", "SELECT id INTO DUMPFILE '/tmp/integrity-pwned' FROM t", "SELECT ... INTO writes"),
    ("mysql", "SELECT 1 INTO @a", "SELECT ... INTO writes"),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')", "load_file() is not allowed"),
    ("mysql", "SELECT * FROM t LOCK IN SHARE MODE", "locks rows"),
    ("mysql", "SELECT 1 /*! ; DELETE FROM t */", "comments as SQL"),
    ("mysql", "SELECT 1 /*M!100000 , LOAD_FILE('/etc/passwd') */", "comments as SQL"),
    ("mysql", "SELECT 'a\\\\'; DELETE FROM t", "only one statement is allowed"),  # \\ is one \
    ("mysql", "SELECT GET_LOCK('x', 10)", "get_lock() is not allowed"),
    ("mysql", "HANDLER t OPEN", "cannot read this as one"),
    ("mysql", "LOAD DATA INFILE '/etc/passwd' INTO TABLE t", "cannot read this as one"),
    ("sqlite", "ATTACH DATABASE '/tmp/integrity-pwned.db' AS x", "not ATTACH"),
    ("sqlite", "SELECT load_extension('/tmp/x.so')", "load_extension() is not allowed"),
    ("sqlite", "SELECT readfile('/etc/passwd')", "readfile() is not allowed"),
    ("sqlite", "PRAGMA query_only = 0", "not PRAGMA"),
    ("sqlite", "SELECT 1; DELETE FROM t", "only one statement is allowed"),
    ("sqlite", "WITH d AS (SELECT 1) DELETE FROM t", "not DELETE"),
    ("sqlite", "VACUUM INTO '/tmp/x.db'", "not VACUUM"),
]


@pytest.mark.parametrize("database, sql, problem", REFUSED)
def test_the_parser_refuses_everything_but_one_read(database, sql, problem):
    with pytest.raises(UnsafeSql) as refused:
        read_query(sql, database)
    assert problem in str(refused.value)


@pytest.mark.parametrize("database, sql", [
    ("postgresql", "SELECT $q$'; DELETE FROM t; --$q$ AS id"),  # one string
    ("postgresql", "SELECT E'\\'; DELETE FROM t; --' AS id"),  # an escaped quote: one string
    ("postgresql", "SELECT 1 /* a /* nested */ ; DELETE FROM t; */ AS id"),  # one comment
    ("postgresql", 'SELECT id FROM "AgentQuote" WHERE "whatsappUrl" NOT LIKE \'https://wa.me/%\''),
    ("postgresql", "SELECT x::numeric, now() - interval '1 day' FROM t WHERE z ~ '^a;'"),
    ("postgresql", "WITH a AS (SELECT 1 AS id) SELECT * FROM a UNION ALL SELECT 2"),
    ("postgresql", "SELECT 1; "),
    ("mysql", "SELECT 'a\\'; DELETE FROM t; SELECT ' AS id"),  # MySQL: \' escapes: one string
    ("mysql", "SELECT `odd;name` FROM t # a comment; with a semicolon"),
    ("sqlite", "SELECT 'it''s; fine' AS a -- a comment; with a semicolon\nFROM t"),
])
def test_the_parser_reads_quotes_and_comments_as_the_database_does(database, sql):
    assert read_query(sql, database) == sql.strip().rstrip("; ")


def test_sql_for_an_unknown_database_must_be_a_read_in_every_dialect():
    read_query("SELECT 1 AS id", None)
    with pytest.raises(UnsafeSql):  # one statement for PostgreSQL, three for MySQL
        read_query("SELECT 'a\\'; DELETE FROM t; SELECT '", None)


# ---------------------------------------------------------------------------
# The layers below the parser, on real databases.

ALL = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=ALL)
def target(request, servers, tmp_path) -> Database:
    db = Database(database_url(request.param, servers, tmp_path))
    db.tables(t=[{"id": 1}, {"id": 2}], JobHeartbeat=[{"id": 1, "job": "sms"}])
    db.kind = request.param
    return db


def _audited(url: str):
    """The audit's own read-only Source for `url`, as a run opens it."""
    return open_source(parse_audit(
        f"connection: {{url: '{url}'}}\ndatasets: {{t: {{table: t}}}}\n"
        f"checks: [{{kind: freshness, dataset: t, time: id, max_age: 1h}}]\n").connection)


def _no_parser(monkeypatch) -> None:
    """As if the parser had a hole: every text passes it unchanged."""
    monkeypatch.setattr("integrity.usersql.read_query", lambda sql, database: sql.strip())


# Attacks that a parser with a hole would let through, and what they would do.
SMUGGLED = {
    "postgresql": [
        "SELECT $q$'$q$ AS id; COMMIT; BEGIN READ WRITE; DELETE FROM \"JobHeartbeat\"; COMMIT; --'",
        "WITH d AS (DELETE FROM t RETURNING id) SELECT * FROM d",
        "SELECT * INTO pwned FROM t",
        "COMMIT",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "DELETE FROM t RETURNING id",
        "SELECT id FROM t FOR UPDATE",
        "CREATE TABLE pwned AS SELECT 1 AS id",
    ],
    "mariadb": [
        "SELECT 1 AS id; DELETE FROM JobHeartbeat",
        "SELECT id FROM t INTO OUTFILE '{file}'",
        "COMMIT",
        "SET SESSION TRANSACTION READ WRITE",
        "DELETE FROM t",
        "CREATE TABLE pwned (id int)",
    ],
    "sqlite": [
        "SELECT 1 AS id; DELETE FROM JobHeartbeat",
        "ATTACH DATABASE '{file}' AS pwned",
        "PRAGMA query_only = 0",
        "DELETE FROM t",
        "CREATE TABLE pwned (id int)",
        "SELECT load_extension('{file}')",
    ],
}


def _yaml(sql: str) -> str:
    return "'" + sql.replace("'", "''") + "'"


def test_smuggled_statements_are_refused_below_the_parser(target, monkeypatch, tmp_path):
    """custom_sql, population_sql and dataset sql: with the parser bypassed, the derived
    table, the single-statement protocol, the read-only transaction and (SQLite) the
    authorizer still refuse every write; the checks error, nothing changes."""
    _no_parser(monkeypatch)
    side_file = Path(f"/tmp/integrity-pwned-{uuid.uuid4().hex[:8]}")
    attacks = [sql.format(file=side_file) for sql in SMUGGLED[target.kind]]
    datasets = "t: {table: t, key: id}\n" + "".join(
        f"d{index}: {{sql: {_yaml(sql)}, key: id}}\n" for index, sql in enumerate(attacks))
    checks = "".join(
        f"- {{id: c{index}, kind: custom_sql, sql: {_yaml(sql)}, "
        f"population_sql: {_yaml(sql)}}}\n"
        f"- {{id: f{index}, kind: freshness, dataset: d{index}, time: id, max_age: 1h}}\n"
        for index, sql in enumerate(attacks))
    before = fingerprint(target.url)
    text = (f"connection:\n  url: {target.url}\ndatasets:\n{textwrap.indent(datasets, '  ')}"
            f"checks:\n{textwrap.indent(checks, '  ')}")
    audit = parse_audit(text, file="attack.yml")
    for engine in ("pandas", "sql"):
        result = run_audit(audit, now=NOW, engine=engine)
        statuses = {check.id: check.status for check in result.checks}
        assert set(statuses.values()) == {"error"}, statuses
    assert fingerprint(target.url) == before
    assert not side_file.exists()
    engine = sa.create_engine(target.url)
    assert "pwned" not in sa.inspect(engine).get_table_names()
    engine.dispose()


MULTI = {"postgresql": "SELECT 1; DELETE FROM t", "mariadb": "SELECT 1; DELETE FROM t",
         "sqlite": "SELECT 1; DELETE FROM t"}
LEAVE_READ_ONLY = {
    "postgresql": ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                   "SET default_transaction_read_only = off"],
    "mariadb": ["SET SESSION TRANSACTION READ WRITE"],
    "sqlite": ["PRAGMA query_only = 0"],
}


def test_the_database_refuses_a_second_statement_in_one_call(target):
    source = _audited(target.url)
    with pytest.raises((SourceError, sa.exc.SQLAlchemyError)) as refused:
        with source.connect() as connection:
            connection.exec_driver_sql(MULTI[target.kind]).all()
    assert any(words in str(refused.value).lower() for words in (
        "cannot insert multiple commands into a prepared statement",  # PostgreSQL
        "you have an error in your sql syntax",  # MariaDB without multi-statements
        "you can only execute one statement at a time")), refused.value  # SQLite
    source.dispose()
    engine = sa.create_engine(target.url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2
    engine.dispose()


def test_a_url_cannot_turn_multi_statements_back_on(servers, tmp_path):
    url = sa.engine.make_url(database_url("mariadb", servers, tmp_path))
    Database(url.render_as_string(hide_password=False)).tables(t=[{"id": 1}])
    multi = url.update_query_dict({"client_flag": str(1 << 16)})
    source = _audited(multi.render_as_string(hide_password=False))
    with pytest.raises((SourceError, sa.exc.SQLAlchemyError)):
        with source.connect() as connection:
            connection.exec_driver_sql("SELECT 1; DELETE FROM t").all()
    source.dispose()


def test_the_transaction_stays_read_only_whatever_the_session_says(target):
    """Inside the audit's transaction, changing the session's default does not make the
    transaction writable: it was declared read-only when it began."""
    source = _audited(target.url)
    for statement in LEAVE_READ_ONLY[target.kind]:
        with pytest.raises((SourceError, sa.exc.SQLAlchemyError)) as refused:
            with source.connect() as connection:
                connection.exec_driver_sql("SELECT count(*) FROM t").all()
                connection.exec_driver_sql(statement)
                connection.exec_driver_sql("DELETE FROM t")
        assert any(word in str(refused.value).lower() for word in (
            "read-only", "read only", "authoriz", "readonly")), refused.value
    source.dispose()
    engine = sa.create_engine(target.url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2
    engine.dispose()


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE '{file}' AS x", "PRAGMA query_only = 0", "PRAGMA journal_mode = WAL",
    "SELECT load_extension('{file}')", "CREATE TEMP TABLE x (id int)", "VACUUM",
    "PRAGMA page_size = 1024",  # read by database_health; setting it is refused
])
def test_sqlite_itself_refuses_everything_but_reading(sqlite_db, tmp_path, statement):
    sqlite_db.tables(t=[{"id": 1}])
    before = fingerprint(sqlite_db.url)
    side_file = tmp_path / "side.db"
    source = _audited(sqlite_db.url)
    with pytest.raises((SourceError, sa.exc.SQLAlchemyError)) as refused:
        with source.connect() as connection:
            connection.exec_driver_sql(statement.format(file=side_file)).all()
    assert "authoriz" in str(refused.value), refused.value
    source.dispose()
    assert not side_file.exists()
    assert fingerprint(sqlite_db.url) == before


def test_validate_refuses_an_attack_with_its_position(write_audit):
    from click.testing import CliRunner

    from integrity.cli import main

    path = write_audit("""\
        connection: {url: "postgresql+psycopg://auditor@db/app"}
        datasets:
          beats: {table: JobHeartbeat, key: id}
        checks:
          - id: sneaky
            kind: custom_sql
            sql: "SELECT $q$'$q$ AS id; COMMIT; BEGIN READ WRITE; DELETE FROM beats; --'"
        """)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"integrity: error: {path}:7:5: checks[0].sql: only one statement is allowed "
        f"(PostgreSQL reads 4: "
        f"SELECT, COMMIT, TRANSACTION, DELETE)")
    with pytest.raises(ConfigError):
        parse_audit(path.read_text(), file=str(path))


# ---------------------------------------------------------------------------
# The run history is never the audited database, however it is spelled.


def _history_tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return [name for name in sa.inspect(engine).get_table_names()
                if name.startswith("integrity_")]
    finally:
        engine.dispose()


def _run_with_history(write_audit, tmp_path, audited_url: str, history_url: str):
    from click.testing import CliRunner

    from integrity.cli import main

    path = write_audit(f"""\
        connection: {{url: "{audited_url}"}}
        datasets: {{t: {{table: t, key: id}}}}
        checks: [{{kind: duplicates, dataset: t, columns: id}}]
        """)
    return CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "out"),
                                     "--no-lock", "--history", history_url])


REFUSAL = "is the audited database, which integrity never writes to"


def test_an_sqlite_history_that_is_a_hard_link_of_the_audited_file(sqlite_db, tmp_path,
                                                                   write_audit):
    import os

    sqlite_db.tables(t=[{"id": 1}])
    audited = Path(sqlite_db.url.removeprefix("sqlite:///"))
    alias = tmp_path / "elsewhere" / "history.sqlite"
    alias.parent.mkdir()
    os.link(audited, alias)
    before = fingerprint(sqlite_db.url)
    result = _run_with_history(write_audit, tmp_path, sqlite_db.url, f"sqlite:///{alias}")
    assert result.exit_code == 2, result.output
    assert REFUSAL in result.output
    assert fingerprint(sqlite_db.url) == before  # the file's bytes too: no WAL switch
    assert not Path(f"{audited}-wal").exists()


def _spellings(kind: str, url: str) -> list[str]:
    """Other names of the same database: localhost for 127.0.0.1, the default port left
    out, the server's unix socket."""
    parsed = sa.engine.make_url(url)
    names = [parsed.set(host="localhost"), parsed.set(port=None)]
    if kind == "postgresql":
        names.append(parsed.set(host=None, port=None).update_query_dict(
            {"host": "/var/run/postgresql"}))
    else:
        names.append(parsed.set(host="localhost", port=None).update_query_dict(
            {"unix_socket": "/run/mysqld/mysqld.sock"}))
    return [name.render_as_string(hide_password=False) for name in names]


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_server_history_by_another_name_is_refused_by_identity(kind, servers, tmp_path,
                                                                 write_audit, monkeypatch):
    # Only the servers' answers decide here: the URL-spelling pre-check is switched off.
    monkeypatch.setattr("integrity.history.is_same_database", lambda first, second: False)
    monkeypatch.setattr("integrity.cli.history_url", lambda audit=None, option=None: option)
    url = database_url(kind, servers, tmp_path)
    Database(url).tables(t=[{"id": 1}])
    for spelling in _spellings(kind, url):
        result = _run_with_history(write_audit, tmp_path, url, spelling)
        assert result.exit_code == 2, (spelling, result.output)
        assert REFUSAL in result.output
    assert _history_tables(url) == []


def test_a_postgresql_history_in_a_schema_of_its_own_is_apart(servers, tmp_path, write_audit):
    url = database_url("postgresql", servers, tmp_path)
    Database(url).tables(t=[{"id": 1}])
    Database(url).execute("CREATE SCHEMA integrity")
    own_schema = sa.engine.make_url(url).set(host="localhost").update_query_dict(
        {"options": "-csearch_path=integrity"}).render_as_string(hide_password=False)
    result = _run_with_history(write_audit, tmp_path, url, own_schema)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url)
    assert "integrity_runs" in sa.inspect(engine).get_table_names(schema="integrity")
    assert _history_tables(url) == []  # nothing in the audited (public) schema
    engine.dispose()


# ---------------------------------------------------------------------------
# The role: the last line of defence, reported when it is missing.


@pytest.fixture
def role(servers, tmp_path, request):
    """(kind, admin URL, URL as a fresh role that may only SELECT, grant(statement))."""
    kind = request.param
    url = database_url(kind, servers, tmp_path)
    Database(url).tables(t=[{"id": 1}], u=[{"id": 1}])
    name = f"integrity_ro_{uuid.uuid4().hex[:8]}"
    parsed = sa.engine.make_url(url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if kind == "postgresql":
            for statement in (f"CREATE ROLE {name} LOGIN",
                              f"GRANT CONNECT ON DATABASE {parsed.database} TO {name}",
                              f"GRANT USAGE ON SCHEMA public TO {name}",
                              f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}"):
                connection.exec_driver_sql(statement)
        else:
            connection.execute(sa.text(f"CREATE USER '{name}'@'%'"))
            connection.execute(sa.text(f"GRANT SELECT ON `{parsed.database}`.* TO '{name}'@'%'"))

    def grant(statement: str) -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(statement.format(role=name)))

    yield kind, parsed.set(username=name).render_as_string(hide_password=False), grant
    with admin.connect() as connection:
        if kind == "postgresql":
            connection.exec_driver_sql(f"DROP OWNED BY {name}")
            connection.exec_driver_sql(f"DROP ROLE {name}")
        else:
            connection.execute(sa.text(f"DROP USER '{name}'@'%'"))
    admin.dispose()


@pytest.mark.parametrize("role", ["postgresql", "mariadb"], indirect=True)
def test_a_role_that_can_write_is_reported_and_a_select_only_one_is_not(role):
    kind, url, grant = role
    audit = parse_audit(f"connection: {{url: '{url}'}}\ndatasets: {{t: {{table: t, key: id}}}}\n"
                        f"checks: [{{kind: duplicates, dataset: t, columns: id}}]\n")
    result = run_audit(audit, now=NOW)
    assert (exit_code(result), result.warnings) == (0, [])
    if kind == "postgresql":
        grant("GRANT INSERT ON u TO {role}")
        expected = "INSERT/UPDATE/DELETE/TRUNCATE on 1 table(s) (public.u)"
    else:
        grant("GRANT DELETE ON u TO '{role}'@'%'")
        expected = f"DELETE on `{sa.engine.make_url(url).database}`.`u`"
    result = run_audit(audit, now=NOW)
    assert exit_code(result) == 0  # a warning, not a finding
    assert result.warnings == [
        f"the audit role can write: {expected}. integrity writes nothing by its own "
        f"mechanisms, but a SELECT-only role is the last line of defence (README: What to "
        f"grant the audit user)"]
