"""Database health on real PostgreSQL and MariaDB: a statement running long, a session idle
in a transaction, a sequence near its end, the connection share, and statistics that are
not there — each measure its own result, exactly. On a real SQLite file: its size in
pages, its AUTOINCREMENT sequences, and what has no meaning without a server, said."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from conftest import NOW, Database, audit_text
from integrity.audit import parse_audit
from integrity.runner import run_audit

CHECK = """\
- id: db
  kind: database_health
  connections: {warn: "> 0%"}
  long_queries: {longer_than: 1s}
  idle_in_transaction: {older_than: 1s}
  slow_statements: {mean_above: 200ms}
"""
SLEEP = {"postgresql": "SELECT pg_sleep(6)", "mariadb": "SELECT SLEEP(6)"}
SEQUENCE = {
    "postgresql": ["CREATE SEQUENCE nearly_done MAXVALUE 100",
                   "SELECT setval('nearly_done', 90)",
                   "CREATE TABLE fresh (id serial PRIMARY KEY)", "INSERT INTO fresh DEFAULT VALUES"],
    "mariadb": ["CREATE TABLE nearly_done (id TINYINT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB",
                "INSERT INTO nearly_done VALUES (120)",
                "CREATE TABLE fresh (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB",
                "INSERT INTO fresh VALUES (NULL)"]}
FULLEST = {"postgresql": ("public.nearly_done", 90, 100, "89.9%", 89 / 99),
           "mariadb": ("nearly_done.id", 120, 127, "94.4%", 119 / 126)}
MISSING = {
    "postgresql": "not measured: pg_stat_statements is not installed in this database (CREATE "
                  "EXTENSION pg_stat_statements, with it in shared_preload_libraries)",
    "mariadb": "not measured: performance_schema is off on this server "
               "(performance_schema=ON in its configuration, then a restart)"}


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_each_measure_on_a_real_server(kind, servers):
    url = servers.database(kind)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in SEQUENCE[kind]:
            connection.exec_driver_sql(statement)
        limit = int(connection.exec_driver_sql(
            "SHOW max_connections" if kind == "postgresql" else
            "SELECT @@max_connections").scalar())
    sleeper = engine.connect()
    idler = engine.connect()
    idler.exec_driver_sql("SELECT 1 FROM fresh")  # a transaction, left open and idle
    worker = threading.Thread(target=lambda: sleeper.exec_driver_sql(SLEEP[kind]), daemon=True)
    worker.start()
    try:
        time.sleep(2.5)  # both past their 1 s
        audit = parse_audit(audit_text(url, "fresh: {table: fresh, key: id}", CHECK),
                            file="health.yml")
        result = run_audit(audit, now=NOW)
    finally:
        idler.rollback()
        idler.close()
        worker.join(10)
        sleeper.close()
        engine.dispose()
    checks = {check.id: check for check in result.checks}
    assert list(checks) == ["db:connections", "db:idle_in_transaction", "db:long_queries",
                            "db:slow_statements", "db:sequences", "db:replication_lag",
                            "db:size"]
    lag = checks["db:replication_lag"]
    assert (lag.status, lag.notes) == ("pass", ["not a replica: no replication lag to measure"])
    connections = checks["db:connections"]
    assert connections.status == "warn"
    assert connections.sample[0]["max_connections"] == limit
    assert connections.sample[0]["in_use"] >= 3  # the audit, the sleeper and the idler
    user = "postgres" if kind == "postgresql" else "root"
    for name in ("db:idle_in_transaction", "db:long_queries"):
        check = checks[name]
        assert (check.status, check.violation_count, check.value) == ("warn", 1, 1), name
        assert [row["user"] for row in check.sample] == [user]
        assert check.sample[0]["seconds"] > 1
    slow = checks["db:slow_statements"]
    assert (slow.status, slow.notes) == ("warn", [MISSING[kind]])
    sequences = checks["db:sequences"]
    name, last, top, used, value = FULLEST[kind]
    assert sequences.status == "warn"
    assert [(r["sequence"], r["last_value"], r["max_value"], r["used"])
            for r in sequences.sample] == [(name, last, top, used)]
    assert sequences.value == pytest.approx(value)


NOT_ON_SQLITE = {
    "db:connections": "not applicable on SQLite: there is no server and no connection limit; "
                      "each process opens the file itself",
    "db:idle_in_transaction": "not applicable on SQLite: no server lists the transactions "
                              "other processes hold open",
    "db:long_queries": "not applicable on SQLite: statements run inside each application's "
                       "own process, where no other connection can see them",
    "db:slow_statements": "not applicable on SQLite: no server keeps statistics of the "
                          "statements it ran"}
ROWID_MAX = 2**63 - 1


def pages(path) -> tuple[int, int]:
    """The file's page count and page size, as SQLite itself reports them."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        return (connection.execute("PRAGMA page_count").fetchone()[0],
                connection.execute("PRAGMA page_size").fetchone()[0])
    finally:
        connection.close()


def test_sqlite_measures_what_applies(tmp_path):
    """A file has a size and AUTOINCREMENT sequences; sessions, running and slow statements
    and a connection limit belong to a server, which SQLite has not: each of those says so
    at info, never a silent pass. A rowid without AUTOINCREMENT is no sequence."""
    path = tmp_path / "app.sqlite"
    database = Database(f"sqlite:///{path}")
    nine_tenths = ROWID_MAX // 10 * 9
    database.execute("CREATE TABLE invoice (number INTEGER PRIMARY KEY AUTOINCREMENT, total int)",
                     "CREATE TABLE ticket (id INTEGER PRIMARY KEY AUTOINCREMENT, body text)",
                     "CREATE TABLE note (id INTEGER PRIMARY KEY, body text)",
                     f"INSERT INTO invoice VALUES ({nine_tenths}, 10)",
                     "INSERT INTO ticket (body) VALUES ('a'), ('b'), ('c')",
                     f"INSERT INTO note VALUES ({ROWID_MAX}, 'last rowid')")
    audit = parse_audit(audit_text(database.url, "ticket: {table: ticket, key: id}",
                                   "- {id: db, kind: database_health}\n"), file="health.yml")
    checks = {check.id: check for check in run_audit(audit, now=NOW).checks}
    assert list(checks) == ["db:connections", "db:idle_in_transaction", "db:long_queries",
                            "db:slow_statements", "db:sequences", "db:replication_lag",
                            "db:size"]
    for name, note in NOT_ON_SQLITE.items():
        check = checks[name]
        assert (check.status, check.notes, check.error, check.value, check.violation_count) \
            == ("info", [note], None, None, 0), name
    lag = checks["db:replication_lag"]
    assert (lag.status, lag.notes) == ("pass", ["not a replica: no replication lag to measure"])
    sequences = checks["db:sequences"]
    assert (sequences.status, sequences.violation_count) == ("warn", 1)
    assert sequences.value == (nine_tenths - 1) / (ROWID_MAX - 1)
    assert sequences.sample == [{"sequence": "invoice.number", "last_value": nine_tenths,
                                 "max_value": ROWID_MAX, "used": "90.0%"}]
    assert sequences.notes == ["2 sequence(s); the fullest has used 90.0% of its range"]
    size = checks["db:size"]
    count, page_size = pages(path)
    assert (size.status, size.value) == ("pass", count * page_size)
    assert size.value == path.stat().st_size  # no write ahead log: the file is its pages
    assert size.notes == [
        f"{count * page_size / 1024:.1f} kB; {count} pages of {page_size} B; tables not "
        f"measured (counting their pages means reading the whole file)",
        "growth unknown: no size recorded for this target in the last 1d"]


def test_sqlite_size_growth_against_the_history(tmp_path):
    """The size is the file's pages, and it grows against the history exactly as a server's:
    the second run compares with the oldest size of the last day."""
    from datetime import timedelta

    from integrity.history import History

    path = tmp_path / "app.sqlite"
    database = Database(f"sqlite:///{path}")
    database.execute("CREATE TABLE blobs (id int PRIMARY KEY, body text)")
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    audit = parse_audit(audit_text(database.url, "blobs: {table: blobs, key: id}", """\
        - id: db
          kind: database_health
          measures: [size]
          size: {growth_over: 1d, warn: "> 20%", critical: "> 10000000%"}
        """), file="health.yml")

    def measured(now):
        result = run_audit(audit, now=now, history=store)
        store.apply(result)
        return result.check("db:size")

    first = measured(NOW - timedelta(hours=1))
    before = pages(path)
    database.execute(*[f"INSERT INTO blobs VALUES ({n}, '{'x' * 2000}')" for n in range(200)])
    after = pages(path)
    second = measured(NOW)
    store.dispose()
    assert (first.status, first.value) == ("pass", before[0] * before[1])
    assert first.notes[1] == "growth unknown: no size recorded for this target in the last 1d"
    assert (second.status, second.value) == ("warn", after[0] * after[1])
    grown = (after[0] - before[0]) / before[0]
    assert second.notes[1] == (f"grew {grown * 100:+.1f}% since "
                               f"{before[0] * before[1] / 1024:.1f} kB (the oldest size of the "
                               f"last 1d)")
    assert second.value_text == f"{after[0] * after[1] / 1024:.1f} kB ({grown * 100:+.1f}%)"


@pytest.fixture
def stats_database():
    """A database on the PostgreSQL server that loads pg_stat_statements (.ci/run starts
    one on port 5433), with the extension created; dropped afterwards."""
    import os
    import uuid

    url = os.environ.get("INTEGRITY_TEST_POSTGRES_STATS_URL")
    if not url:
        pytest.skip("INTEGRITY_TEST_POSTGRES_STATS_URL is not set (a PostgreSQL server with "
                    "shared_preload_libraries = 'pg_stat_statements'; .ci/run starts one)")
    name = f"integrity_stats_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    target = sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(target)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE EXTENSION pg_stat_statements")
    yield engine, target
    engine.dispose()
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


def test_slow_statements_from_pg_stat_statements(stats_database):
    engine, url = stats_database
    with engine.connect() as connection:
        for _ in range(2):
            connection.exec_driver_sql("SELECT pg_sleep(0.3)")
        connection.exec_driver_sql("SELECT 1")  # quick: not slow
    audit = parse_audit(audit_text(url, "t: {sql: 'SELECT 1 AS id', key: id}", """\
        - id: db
          kind: database_health
          measures: [slow_statements]
          slow_statements: {mean_above: 200ms}
        """), file="health.yml")
    [check] = run_audit(audit, now=NOW).checks
    assert (check.id, check.status, check.violation_count) == ("db:slow_statements", "warn", 1)
    [row] = check.sample
    assert (row["statement"], row["calls"]) == ("SELECT pg_sleep($1)", 2)
    assert 300 <= row["mean_ms"] < 1000


def test_a_replica_behind_its_primary(stats_database):
    """.ci/run streams the pg_stat_statements server (5433) to a replica on 5434. With the
    replica's replay paused while the primary writes, it falls behind; resumed, it is not."""
    import os

    replica_url = os.environ.get("INTEGRITY_TEST_POSTGRES_REPLICA_URL")
    if not replica_url:
        pytest.skip("INTEGRITY_TEST_POSTGRES_REPLICA_URL is not set (.ci/run starts one)")
    primary, _ = stats_database
    replica = sa.create_engine(replica_url, isolation_level="AUTOCOMMIT")

    def wait_until_replayed():
        with primary.connect() as connection:
            target = connection.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()
        for _ in range(100):
            with replica.connect() as connection:
                if connection.exec_driver_sql(
                        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).scalar():
                    return
            time.sleep(0.1)
        raise AssertionError("the replica did not catch up")

    def lag(warn_after: str):
        audit = parse_audit(audit_text(replica_url, "t: {sql: 'SELECT 1 AS id', key: id}", f"""\
            - id: db
              kind: database_health
              measures: [replication_lag]
              replication_lag: {{warn_after: {warn_after}}}
            """), file="health.yml")
        [check] = run_audit(audit, now=NOW).checks
        return check

    with primary.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE beat (at timestamptz)")
        connection.exec_driver_sql("INSERT INTO beat VALUES (now())")
    wait_until_replayed()
    caught_up = lag("1s")
    assert (caught_up.status, caught_up.value) == ("pass", 0.0)
    with replica.connect() as connection:
        connection.exec_driver_sql("SELECT pg_wal_replay_pause()")
    try:
        time.sleep(1.5)
        with primary.begin() as connection:
            connection.exec_driver_sql("INSERT INTO beat VALUES (now())")
        time.sleep(0.5)  # received, not replayed
        behind = lag("1s")
        assert (behind.status, behind.violation_count) == ("warn", 1)
        assert 1.5 < behind.value < 30
        assert behind.sample[0]["replication"] == "running"
    finally:
        with replica.connect() as connection:
            connection.exec_driver_sql("SELECT pg_wal_replay_resume()")
        replica.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_size_growth_against_the_history(kind, servers, tmp_path):
    """The first run has no history: growth unknown, said. After the database grows, the
    next run (an hour later by its clock) compares with the oldest size of the last day."""
    import os
    from datetime import timedelta

    from integrity.history import History

    url = servers.database(kind)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE blobs (id int PRIMARY KEY, body text)")
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    audit = parse_audit(audit_text(url, "blobs: {table: blobs, key: id}", """\
        - id: db
          kind: database_health
          measures: [size]
          size: {growth_over: 1d, warn: "> 20%", critical: "> 10000000%"}
        """), file="health.yml")

    def measured(now):
        result = run_audit(audit, now=now, history=store)
        store.apply(result)
        return result.check("db:size")

    first = measured(NOW - timedelta(hours=1))
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO blobs VALUES (:id, :body)"),
                           [{"id": n, "body": os.urandom(2000).hex()}  # incompressible
                            for n in range(2000)])
        if kind == "mariadb":
            connection.exec_driver_sql("ANALYZE TABLE blobs")  # sizes are statistics there
    second = measured(NOW)
    engine.dispose()
    store.dispose()
    assert (first.status, first.notes[1]) == (
        "pass", "growth unknown: no size recorded for this target in the last 1d")
    grown = (second.value - first.value) / first.value
    assert grown > 0.2 and second.status == "warn"
    assert second.notes[1].startswith(f"grew {grown * 100:+.1f}% since ")
    assert second.notes[0].split("; ")[1].startswith("largest tables: ")
    assert "blobs" in second.notes[0]
