"""Real databases as users have them: odd names, schemas, types, and a session that cannot write."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import DATABASES, NOW, Database, audit_text, database_url
from integrity.audit import load_audit, parse_audit
from integrity.errors import SourceError
from integrity.gate import exit_code
from integrity.reference import reference_audit_path
from integrity.reference.generator import generate
from integrity.runner import run_audit
from integrity.sources import open_source

ENGINES = ["pandas", "sql"]


@pytest.fixture(params=DATABASES)
def db(request, servers, tmp_path) -> Database:
    return Database(database_url(request.param, servers, tmp_path))


def run(db: Database, datasets: str, checks: str, engine: str, **connection):
    text = audit_text(db.url, datasets, checks)
    for key, value in connection.items():
        text = text.replace("  url:", f"  {key}: {value}\n  url:", 1)
    return run_audit(parse_audit(text), now=NOW, engine=engine, sample_limit=0)


# ---------------------------------------------------------------------------
# Names and types.

SCHEMA_DDL = {
    "postgresql": [
        'CREATE SCHEMA app',
        'CREATE TABLE app."User" (id integer PRIMARY KEY, "tenantId" text)',
        'CREATE TABLE app."order" ("Id" text PRIMARY KEY, "tenantId" text, "user" integer, '
        '"userRef" text, "select" timestamp, "placedAt" timestamptz)',
    ],
    "mariadb": [
        'CREATE TABLE `User` (id integer PRIMARY KEY, tenantId varchar(20))',
        'CREATE TABLE `order` (Id varchar(40) PRIMARY KEY, tenantId varchar(20), `user` integer, '
        'userRef varchar(20), `select` DATETIME(3), placedAt DATETIME(3))',
    ],
    "sqlite": [
        'CREATE TABLE "User" (id integer PRIMARY KEY, "tenantId" text)',
        'CREATE TABLE "order" ("Id" text PRIMARY KEY, "tenantId" text, "user" integer, '
        '"userRef" text, "select" datetime, "placedAt" datetime)',
    ],
}
ORDERS = [  # cuid-like text ids; "user" an integer reference, "userRef" the same as text
    ("ckq1", "t1", 1, "1", "2026-01-30 10:00:00.000", "2026-01-30 10:00:00.000"),
    ("ckq2", "t1", 1, "1", "2026-01-30 10:00:00.400", "2026-01-30 10:00:00.250"),  # 250 ms later
    ("ckq3", "t1", 2, "2", "2026-01-30 10:00:05.000", "2026-01-30 10:00:05.000"),  # other tenant
    ("ckq4", "t2", 9, "9", "2026-01-30 10:00:05.000", "2026-01-30 10:00:05.000"),  # no such user
    ("ckq5", "t2", None, None, None, None),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_reserved_words_schemas_and_mixed_id_types(db, engine):
    dialect = sa.engine.make_url(db.url).get_backend_name()
    dialect = "mariadb" if dialect == "mysql" else dialect
    statements = list(SCHEMA_DDL[dialect])
    schema = "app" if dialect == "postgresql" else None
    table = "app.\"order\"" if schema else ("`order`" if dialect == "mariadb" else '"order"')
    users = "app.\"User\"" if schema else ("`User`" if dialect == "mariadb" else '"User"')
    statements.append(f"INSERT INTO {users} VALUES (1, 't1'), (2, 't2')")
    for row in ORDERS:
        values = ", ".join("NULL" if value is None else
                           (str(value) if isinstance(value, int) else f"'{value}'")
                           for value in row)
        statements.append(f"INSERT INTO {table} VALUES ({values})")
    db.execute(*statements)
    in_schema = ", schema: app" if schema else ""
    result = run(db, f"""\
        orders: {{table: order{in_schema}, key: Id, tenant_column: tenantId}}
        users: {{table: User{in_schema}, key: id, tenant_column: tenantId}}
        """, """\
        - {id: orphans_int, kind: orphans, dataset: orders, reference: user, parent: users}
        - {id: orphans_text, kind: orphans, dataset: orders, reference: userRef, parent: users}
        - {id: tenants, kind: cross_tenant, dataset: orders, reference: userRef, parent: users}
        - {id: clicks, kind: duplicate_events, dataset: orders, by: [tenantId, user],
           time: placedAt, window: 300ms}
        - {id: select_clicks, kind: duplicate_events, dataset: orders, by: [tenantId, user],
           time: select, window: 300ms}
        """, engine)
    found = {check.id: set(check.violation_keys) for check in result.checks}
    errors = {check.id: check.error for check in result.checks if check.error}
    assert errors == {}
    assert found == {"orphans_int": {("ckq4",)}, "orphans_text": {("ckq4",)},
                     "tenants": {("ckq3",)}, "clicks": {("ckq2",)}, "select_clicks": set()}


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_key_part_is_no_key(db, engine):
    db.tables(leads=[{"id": 1, "tenantId": "t1", "email": ""},
                     {"id": 2, "tenantId": "t1", "email": ""},
                     {"id": 3, "tenantId": "t1", "email": " "},  # a key: nothing trims it
                     {"id": 4, "tenantId": "t1", "email": " "},
                     {"id": 5, "tenantId": "t1", "email": "a@x.com"},
                     {"id": 6, "tenantId": "t1", "email": "a@x.com"}])
    result = run(db, "leads: {table: leads, key: id}",
                 "- {id: d, kind: duplicates, dataset: leads, columns: [tenantId, email]}", engine)
    check = result.check("d")
    assert (check.status, check.violation_count) == ("fail", 2)
    assert [(row["id"], row["duplicate_role"]) for row in check.sample] == [
        (3, "kept"), (4, "surplus"), (5, "kept"), (6, "surplus")]


TEXT_TIMES = [  # (id, text) -> what both engines must read
    (1, "2026-01-30 10:00:00"),         # 10:00 UTC
    (2, "2026-01-30T12:00:00+02:00"),   # 10:00 UTC: the offset wins
    (3, "2026-01-30T09:00:00Z"),        # 09:00 UTC
    (4, " 2026-01-30 15:30:00+0530 "),  # 10:00 UTC
    (5, "garbage"),                     # no time, and no error either
    (6, None),
    (7, "2026-01-29"),                  # midnight, the day before
    (8, "2026/01/30 10:00"),            # not ISO 8601 (MariaDB alone would take it)
]


@pytest.mark.parametrize("engine", ENGINES)
def test_text_times_read_alike_on_every_database(db, engine):
    db.tables(ev=[{"id": i, "at": text} for i, text in TEXT_TIMES])
    result = run(db, "ev: {table: ev, key: id}", """\
        - {id: valid, kind: timestamp_valid, dataset: ev, column: at,
           earliest: "2026-01-30T09:30:00Z"}
        - {id: fresh, kind: freshness, dataset: ev, time: at, max_age: 1h}
        - id: daily
          kind: reconciliation
          left: {dataset: ev, per_day: at}
          right: {dataset: ev, per_day: at, where: {id: {in: [1, 2, 3, 4]}}}
        """, engine)
    valid = result.check("valid")
    assert sorted((row["id"], row["problem"]) for row in valid.sample) == [
        (3, "before_earliest"), (5, "unparseable"), (6, "null"), (7, "before_earliest"),
        (8, "unparseable")]
    assert result.check("fresh").value == 2.5 * 3600  # newest 10:00, now 12:30
    daily = result.check("daily")  # rows without a time meet as one day: no day
    assert (daily.status, daily.violation_keys) == ("fail", [(None,), ("2026-01-29",)])
    assert [(row["left ev"], row["right ev"]) for row in daily.sample] == [(3, 0), (1, 0)]


@pytest.mark.parametrize("engine", ENGINES)
def test_naive_text_times_are_read_in_the_dataset_time_zone_on_postgresql(servers, engine):
    db = Database(servers.database("postgresql"))
    db.tables(ev=[{"id": i, "at": text} for i, text in TEXT_TIMES])
    check = "- {id: fresh, kind: freshness, dataset: ev, time: at, max_age: 1h}"
    # Newest at 12:30 UTC: 10:00 UTC from the rows with an offset, unless naive 10:00 in
    # New York (15:00 UTC) is later still.
    for zone, age in [("UTC", 2.5), ("Europe/Paris", 2.5), ("America/New_York", -2.5)]:
        result = run(db, f"ev: {{table: ev, key: id, timezone: {zone}}}", check, engine)
        assert result.check("fresh").value == age * 3600, zone


@pytest.mark.parametrize("engine", ENGINES)
def test_a_metric_window_includes_its_start_and_excludes_now(db, engine):
    """Nightly runs at midnight with `window: 1d` measure each day once: a row at 00:00
    belongs to the day it starts."""
    db.tables(sends=[{"id": 1, "at": "2026-01-29 12:30:00"},   # now - 1d: in
                     {"id": 2, "at": "2026-01-29 12:29:59"},   # just before: out
                     {"id": 3, "at": "2026-01-30 12:29:59"},   # in
                     {"id": 4, "at": "2026-01-30 12:30:00"}])  # now: the next window's
    result = run(db, "sends: {table: sends, key: id}", """\
        - {id: daily, kind: metric, dataset: sends, value: count, time: at, window: 1d,
           thresholds: {critical: "< 1"}}
        """, engine)
    assert result.check("daily").value == 2


def test_timestamptz_and_timestamp_compare_in_utc(servers, tmp_path):
    db = Database(servers.database("postgresql"))
    db.execute('CREATE TABLE t (id int, local_naive timestamp, aware timestamptz)',
               "INSERT INTO t VALUES (1, '2026-01-30 10:00:00', '2026-01-30 11:00:00+01:00'), "
               "(2, '2026-01-30 10:00:00', '2026-01-30 10:00:00+01:00')")
    for engine in ENGINES:
        result = run(db, "t: {table: t, key: id}", """\
            - {kind: timestamp_valid, dataset: t, column: local_naive, not_before: aware}
            """, engine)
        assert set(result.checks[0].violation_keys) == set(), engine
        reverse = run(db, "t: {table: t, key: id}", """\
            - {kind: timestamp_valid, dataset: t, column: aware, not_before: local_naive}
            """, engine)
        assert set(reverse.checks[0].violation_keys) == {(2,)}, engine


# ---------------------------------------------------------------------------
# Never harm the audited database.


def fingerprint(url: str) -> dict[str, str]:
    """A hash of every row of every table (and of the file itself for SQLite)."""
    engine = sa.create_engine(url)
    prints = {}
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        for name in inspector.get_table_names():
            # Untyped columns: the raw values, garbage timestamps included.
            columns = [sa.column(c["name"]) for c in inspector.get_columns(name)]
            rows = connection.execute(sa.select(*columns).select_from(sa.table(name))
                                      .order_by(*columns)).all()
            prints[name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    engine.dispose()
    if url.startswith("sqlite:///"):
        prints["<file>"] = hashlib.sha256(Path(url[len("sqlite:///"):]).read_bytes()).hexdigest()
    return prints


def test_a_full_audit_leaves_every_table_identical(db, monkeypatch):
    generate(db.url, scale=0.005, seed=2, now=NOW)
    before = fingerprint(db.url)
    monkeypatch.setenv("REFERENCE_DATABASE_URL", db.url)
    audit = load_audit(reference_audit_path())
    for engine in ENGINES:
        assert exit_code(run_audit(audit, now=NOW, engine=engine)) == 1
    assert fingerprint(db.url) == before
    from integrity.reference.schema import metadata

    assert set(before) - {"<file>"} == set(metadata.tables)  # every table was compared


@pytest.mark.parametrize("statement", [
    "DELETE FROM t", "UPDATE t SET id = 2", "DROP TABLE t", "INSERT INTO t VALUES (3)",
    "CREATE TABLE u (id int)"])
def test_the_audit_session_refuses_every_write(db, statement):
    db.tables(t=[{"id": 1}])
    audit = parse_audit(audit_text(db.url, "t: {table: t, key: id}",
                                   "- {kind: duplicates, dataset: t, columns: id}"))
    source = open_source(audit.connection)
    with pytest.raises((SourceError, sa.exc.SQLAlchemyError)) as refused:
        with source.connect() as connection:
            connection.execute(sa.text(statement))
    assert any(word in str(refused.value).lower() for word in
               ("read-only", "read only", "readonly", "not authorized")), refused.value
    source.dispose()
    engine = sa.create_engine(db.url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT id FROM t")).all() == [(1,)]
    engine.dispose()


@pytest.mark.parametrize("sleep", [
    pytest.param("SELECT pg_sleep(3)", id="postgresql"),
    pytest.param("SELECT SLEEP(3)", id="mariadb"),
    pytest.param("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 100000000) SELECT count(*) FROM n", id="sqlite")])
def test_statement_timeout_on_every_database(sleep, servers, tmp_path, request):
    kind = request.node.callspec.id
    db = Database(database_url(kind, servers, tmp_path))
    db.tables(t=[{"id": 1}])
    began = time.monotonic()
    result = run(db, "t: {table: t, key: id}", f"- {{id: slow, kind: custom_sql, sql: '{sleep}'}}",
                 "sql", statement_timeout="500ms")
    slow = result.checks[0]
    assert slow.status == "error"
    assert slow.error.startswith("custom SQL failed: statement timeout (0.5s, "
                                 "connection.statement_timeout) reached (database "), slow.error
    assert time.monotonic() - began < 2.5


BEATS = {  # 150,000 heartbeats one second apart, no index, statistics fresh
    "postgresql": ["CREATE TABLE beats (id int, at timestamp)",
                   "INSERT INTO beats SELECT i, timestamp '2026-01-30 12:00' - "
                   "i * interval '1 second' FROM generate_series(1, 150000) AS i",
                   "ANALYZE beats"],
    "mariadb": ["CREATE TABLE beats (id int, at DATETIME)",
                "INSERT INTO beats SELECT seq, TIMESTAMP '2026-01-30 12:00' - "
                "INTERVAL seq SECOND FROM seq_1_to_150000",
                "ANALYZE TABLE beats"],
}


@pytest.mark.parametrize("kind", list(BEATS))
def test_a_window_check_on_a_large_unindexed_table_recommends_the_index(kind, servers):
    db = Database(servers.database(kind))
    db.execute(*BEATS[kind])
    q = '"' if kind == "postgresql" else "`"
    datasets = "beats: {table: beats, key: id}"
    checks = """\
        - {id: fresh, kind: freshness, dataset: beats, time: at, max_age: 1h}
        - {id: busy, kind: metric, dataset: beats, time: at, window: 1h, value: count,
           thresholds: {critical: "< 1"}}
        - {id: quiet, kind: metric, dataset: beats, value: count, thresholds: {critical: "< 1"}}
        """
    result = run(db, datasets, checks, "sql")
    # The size is the database's estimate: exact on PostgreSQL after ANALYZE, sampled by
    # InnoDB.
    pattern = (rf"{q}beats{q} has about ([0-9,]+) rows and no index starting with {q}at{q}: "
               rf"this check reads all of them\. CREATE INDEX {q}beats_at_idx{q} ON {q}beats{q} "
               rf"\({q}at{q}\) would let it read only the (newest|window)\.")
    for check, reads in [("fresh", "newest"), ("busy", "window")]:
        notes = result.check(check).notes
        assert len(notes) == 1 and re.fullmatch(pattern, notes[0]), notes
        assert re.fullmatch(pattern, notes[0]).group(2) == reads
        estimate = int(re.fullmatch(pattern, notes[0]).group(1).replace(",", ""))
        assert 0.8 * 150_000 <= estimate <= 1.2 * 150_000
    assert result.check("quiet").notes == []  # no window: reading every row is the point

    db.execute("CREATE INDEX beats_at ON beats (at)")
    result = run(db, datasets, checks, "sql")
    assert [result.check(c).notes for c in ("fresh", "busy", "quiet")] == [[], [], []]


def test_postgresql_sessions_are_named_for_the_dba(servers):
    db = Database(servers.database("postgresql"))
    db.tables(t=[{"id": 1}])
    result = run(db, "t: {table: t, key: id}", """\
        - id: named
          kind: custom_sql
          sql: >-
            SELECT application_name, current_setting('transaction_read_only') AS read_only
            FROM pg_stat_activity WHERE pid = pg_backend_pid()
        """, "sql")
    assert result.checks[0].sample == [{"application_name": "integrity", "read_only": "on"}]


# ---------------------------------------------------------------------------
# Connections that fail.


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _proxy_later(port: int, target: tuple[str, int], delay: float) -> threading.Thread:
    """After `delay`, forward 127.0.0.1:port to `target`: a server that comes back."""
    def pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        time.sleep(delay)
        listener = socket.create_server(("127.0.0.1", port))
        listener.settimeout(10)
        try:
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()
        except OSError:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_transient_outage_is_retried(servers):
    db = Database(servers.database("postgresql"))
    db.tables(t=[{"id": 1}, {"id": 1}])
    target = sa.engine.make_url(db.url)
    port = _free_port()
    _proxy_later(port, (target.host, target.port or 5432), delay=0.5)
    outage = Database(target.set(port=port).render_as_string(hide_password=False))
    began = time.monotonic()
    result = run(outage, "t: {table: t, key: id}", "- {kind: duplicates, dataset: t, columns: id}",
                 "sql", retries=4, retry_backoff="0.2s")
    assert result.errors == []
    assert result.checks[0].violation_count == 1
    assert time.monotonic() - began >= 0.5


def test_a_permanent_failure_is_not_retried(servers):
    target = sa.engine.make_url(servers.database("postgresql"))
    missing = Database(target.set(database="no_such_database_here").render_as_string(
        hide_password=False))
    began = time.monotonic()
    result = run(missing, "t: {table: t, key: id}", "- {kind: duplicates, dataset: t, columns: id}",
                 "sql", retries=3, retry_backoff="2s")
    assert time.monotonic() - began < 1.5
    assert 'database "no_such_database_here" does not exist' in result.errors[0]
    assert exit_code(result) == 2


# ---------------------------------------------------------------------------
# No silent pass.


@pytest.mark.parametrize("engine", ENGINES)
def test_a_grouped_freshness_check_on_an_empty_table_is_stale(db, engine):
    db.execute("CREATE TABLE beats (id integer, job varchar(20), beat_at varchar(30))")
    check = run(db, "beats: {table: beats, key: id}", """\
        - {id: beats, kind: freshness, dataset: beats, time: beat_at, by: [job],
           max_age: 1h}
        """, engine).check("beats")
    assert (check.status, check.violation_count, check.violation_keys) == (
        "fail", 1, [(None,)])
    assert check.notes == ["no rows with a time at all: the dataset is stale"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("on_empty, status", [(None, "warn"), ("fail", "fail"),
                                              ("pass", "pass")])
def test_a_filter_that_matches_nothing_is_never_a_quiet_pass(db, engine, on_empty, status):
    db.tables(sends=[{"id": 1, "status": "SENT", "email": "a"},
                     {"id": 2, "status": "SENT", "email": "a"}])
    setting = f", on_empty: {on_empty}" if on_empty else ""
    result = run(db, "sends: {table: sends, key: id}", f"""\
        - {{id: dupes, kind: duplicates, dataset: sends, columns: email,
           where: {{status: sent}}{setting}}}
        - {{id: all_dupes, kind: duplicates, dataset: sends, columns: email,
           where: {{status: SENT}}, severity: warning}}
        """, engine)
    check = result.check("dupes")
    assert (check.status, check.violation_count, check.population) == (status, 0, 0)
    assert check.notes[-1] == ("the filter (status = 'sent') matches none of the 2 rows of "
                               f"sends: values compare exactly (case included); on_empty: "
                               f"{on_empty or 'warn'}")
    assert result.check("all_dupes").notes == []  # a filter that matches rows says nothing


def test_connection_retries_stop_at_the_runs_timeout(servers):
    """An unreachable server is retried only while the run's --timeout leaves time."""
    port = _free_port()  # nothing listens there
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    began = time.monotonic()
    text = audit_text(db.url, "t: {table: t, key: id}",
                      "- {kind: duplicates, dataset: t, columns: id}")
    text = text.replace("  url:", "  retries: 10\n  retry_backoff: 1s\n  url:", 1)
    result = run_audit(parse_audit(text), now=NOW, timeout=2.5)
    assert time.monotonic() - began < 5  # 10 retries would take 17 minutes of backoff
    assert exit_code(result) == 2
    assert "(the run's --timeout leaves no time for another)" in result.errors[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_sample_limit_counts_violations_not_rows(db, engine):
    """74 duplicate pairs: 74 surplus rows, each shown beside its kept row. A limit of 50
    shows 50 violations (100 rows), and a group of three straddling it stays whole."""
    rows = [{"id": n, "email": f"u{n // 2}@x"} for n in range(148)]
    rows += [{"id": 1000 + n, "email": "zz@x"} for n in range(3)]  # the last group: 2 surplus
    db.tables(leads=rows)
    text = audit_text(db.url, "leads: {table: leads, key: id}",
                      "- {id: dupes, kind: duplicates, dataset: leads, columns: email}")
    audit = parse_audit(text)
    check = run_audit(audit, now=NOW, engine=engine, sample_limit=50).check("dupes")
    assert check.violation_count == 76
    assert (check.sample_violations, len(check.sample), check.sample_truncated) == (50, 100, True)
    assert [row["duplicate_role"] for row in check.sample[:2]] == ["kept", "surplus"]
    whole = run_audit(audit, now=NOW, engine=engine, sample_limit=75).check("dupes")
    assert (whole.sample_violations, len(whole.sample), whole.sample_truncated) == (
        76, 151, False)  # zz@x kept whole: nothing left out


@pytest.mark.parametrize("engine", ENGINES)
def test_sample_times_read_alike_from_every_database(db, engine):
    """Times in report samples are ISO 8601 UTC with Z, whatever the database returned
    (SQLite text, a naive timestamp, an aware one), and naive ones are read in the
    dataset's time zone — so report.json from two databases diffs cleanly."""
    import pandas as pd

    db.tables(quotes=pd.DataFrame({
        "id": [1, 2], "createdAt": pd.to_datetime(["2026-01-30 09:00:00", "2026-01-30 09:00:00"]),
        "sentAt": pd.to_datetime(["2026-02-01 10:00:00", "2026-01-30 08:00:00"])}))
    zones = ["UTC", "Europe/Paris"] if engine == "pandas" or db.url.startswith("postgresql") \
        else ["UTC"]
    expected = {"UTC": ("2026-02-01T10:00:00Z", "2026-01-30T08:00:00Z"),
                "Europe/Paris": ("2026-02-01T09:00:00Z", "2026-01-30T07:00:00Z")}
    for zone in zones:
        result = run(db, f"quotes: {{table: quotes, key: id, timezone: {zone}}}", """\
            - {id: sent, kind: timestamp_valid, dataset: quotes, column: sentAt,
               not_before: createdAt}
            """, engine)
        rows = {row["id"]: row["sentAt"] for row in result.check("sent").sample}
        assert (rows[1], rows[2]) == expected[zone], zone


def test_engine_auto_runs_each_check_where_the_database_can_and_says_why(db):
    """E.164 runs inside SQLite (which calls the same Python function) but not inside
    PostgreSQL or MariaDB; a check auto sends to pandas says why; answers equal pandas'."""
    db.tables(leads=[{"id": 1, "phone": "+44 7700 900123", "email": "a@x"},
                     {"id": 2, "phone": "07700900123", "email": "A@x "},
                     {"id": 3, "phone": "+1 555 0100", "email": "b@x"}])
    checks = """\
        - {id: phones, kind: duplicates, dataset: leads, columns: phone,
           normalize: {phone: phone}, default_region: GB}
        - {id: emails, kind: duplicates, dataset: leads, columns: email,
           normalize: {email: email}}
        """
    auto = run(db, "leads: {table: leads, key: id}", checks, "auto")
    pandas = run(db, "leads: {table: leads, key: id}", checks, "pandas")
    sqlite = db.url.startswith("sqlite")
    assert {check.id: check.engine for check in auto.checks} == {
        "phones": "sql" if sqlite else "pandas", "emails": "sql"}
    why = [note for note in auto.check("phones").notes if note.startswith("engine auto")]
    assert why == ([] if sqlite else [
        f"engine auto: pandas, because normalize: phone: phone (E.164 parsing) cannot run "
        f"inside {auto.dialect}"])
    for check_id in ("phones", "emails"):
        assert (auto.check(check_id).violation_keys, auto.check(check_id).status) == (
            pandas.check(check_id).violation_keys, pandas.check(check_id).status)
    assert auto.check("phones").violation_keys == [(2,)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_float_tenant_against_a_text_tenant_compares_as_pandas_reads_it(db, engine):
    """An integer column with a null is stored as floats by some loaders (10.0): against a
    text tenant "10" it is the same tenant on both engines."""
    db.tables(access=[{"id": 1, "actor": 10, "resource": "10"},
                      {"id": 2, "actor": 10, "resource": "11"},
                      {"id": 3, "actor": None, "resource": "11"},
                      {"id": 4, "actor": 10.5, "resource": "10.5"}])
    check = run(db, "access: {table: access, key: id}", """\
        - {id: crossed, kind: cross_tenant, dataset: access, tenant_column: actor,
           other_tenant_column: resource}
        """, engine).check("crossed")
    assert (check.status, check.violation_keys) == ("fail", [(2,)])


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_a_count_that_reads_no_column(db, engine):
    """Only the rows matter: the pandas engine reads a constant per row (PostgreSQL's bulk
    path included), the SQL engine counts the table."""
    db.tables(sends=[{"id": n} for n in range(5)])
    result = run(db, "sends: {table: sends, key: id}", """\
        - {id: rows, kind: metric, dataset: sends, value: count, thresholds: {critical: "< 1"}}
        """, engine)
    check = result.check("rows")
    assert (check.status, check.value, check.population) == ("pass", 5, 5)
