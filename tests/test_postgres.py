"""PostgreSQL specifics: read-only sessions, quoting, time zones."""

from __future__ import annotations

import pytest

from conftest import Database, keys, only, run


@pytest.fixture
def pg(postgres_database) -> Database:
    return Database(postgres_database)


def test_camel_case_reserved_and_schema_qualified_names(pg):
    pg.execute('CREATE SCHEMA IF NOT EXISTS app',
               'DROP TABLE IF EXISTS app."order"',
               'CREATE TABLE app."order" ("Id" int, "tenantId" text, "user" text, '
               '"sentAt" timestamptz)',
               """INSERT INTO app."order" VALUES
                  (1, 't', 'a', '2026-01-30 10:00+00'), (2, 't', 'a', '2026-01-30 11:00+01')""")
    check = only(run(pg, 'orders: {table: order, schema: app, key: Id, tenant_column: tenantId}',
                     """\
        - {kind: duplicate_events, dataset: orders, by: [tenantId, user], time: sentAt,
           window: 1s}
        """))
    # 11:00+01 is 10:00 UTC: the two rows are the same instant.
    assert keys(check) == {(2,)}


def test_statement_timeout_is_enforced(pg):
    from conftest import audit_text
    from integrity.audit import parse_audit
    from integrity.runner import run_audit

    pg.tables(t=[{"id": 1}])
    text = audit_text(pg.url, "t: {table: t, key: id}",
                      '- {id: slow, kind: custom_sql, sql: "SELECT id FROM t, pg_sleep(3)"}')
    text = text.replace(f"  url: {pg.url}\n", f"  url: {pg.url}\n  statement_timeout: 500ms\n")
    slow = run_audit(parse_audit(text)).check("slow")
    assert slow.status == "error"
    assert "statement timeout (0.5s, connection.statement_timeout) reached" in slow.error


def test_a_run_timeout_names_the_run_limit_even_after_a_bulk_read(pg):
    """Datasets read in bulk (ADBC) first, then a check that overruns the run's limit."""
    from conftest import audit_text
    from integrity.audit import parse_audit
    from integrity.runner import run_audit

    pg.tables(t=[{"id": 1, "email": "a@x"}, {"id": 2, "email": "a@x"}])
    text = audit_text(pg.url, "t: {table: t, key: id}", """\
        - {id: twice, kind: duplicates, dataset: t, columns: email, engine: pandas}
        - {id: slow, kind: custom_sql, sql: "SELECT id FROM t, pg_sleep(5)"}
        """)
    result = run_audit(parse_audit(text), timeout=1)
    assert result.errors == ["the run exceeded its timeout of 1s"]
    assert [(c.id, c.status) for c in result.checks] == [("twice", "fail"), ("slow", "error")]
    assert result.check("twice").violation_count == 1
