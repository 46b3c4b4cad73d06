"""Row-level security on a real PostgreSQL: tables without RLS or policies, owners that
bypass them, and an isolation probe that finds a leaky policy — read-only throughout."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from conftest import NOW, audit_text
from integrity.audit import parse_audit
from integrity.runner import run_audit

ROWS = [(1, "t1", "public"), (2, "t1", "private"), (3, "t2", "private"), (4, "t3", "public")]


@pytest.fixture
def rls(servers):
    """A database with four tenant tables and an application role; dropped afterwards."""
    url = servers.database("postgresql")
    role = f"app_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        run = connection.exec_driver_sql
        run(f"CREATE ROLE {role} NOLOGIN")
        for table in ("quotes", "leads", "notes", "files"):
            run(f'CREATE TABLE {table} (id int PRIMARY KEY, "tenantId" text, status text)')
            run(f"INSERT INTO {table} VALUES " + ", ".join(
                f"({i}, '{t}', '{s}')" for i, t, s in ROWS))
            run(f"GRANT SELECT ON {table} TO {role}")
        isolated = """"tenantId" = current_setting('app.tenant_id', true)"""
        run("ALTER TABLE quotes ENABLE ROW LEVEL SECURITY")
        run("ALTER TABLE quotes FORCE ROW LEVEL SECURITY")
        run(f"CREATE POLICY own ON quotes USING ({isolated})")
        run("ALTER TABLE leads ENABLE ROW LEVEL SECURITY")  # public rows leak to everyone
        run(f"CREATE POLICY own ON leads USING ({isolated} OR status = 'public')")
        run("ALTER TABLE files ENABLE ROW LEVEL SECURITY")  # enabled, no policy
    engine.dispose()
    yield url, role
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("quotes", "leads", "notes", "files"):
            connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql(f"DROP ROLE {role}")
    engine.dispose()


DATASETS = "".join(f"{t}: {{table: {t}, key: id, tenant_column: tenantId}}\n"
                   for t in ("quotes", "leads", "notes", "files"))


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_tables_and_a_leaky_policy_are_found(rls, engine):
    url, role = rls
    audit = parse_audit(audit_text(url, DATASETS, f"""\
        - id: isolated
          kind: row_level_security
          forced: true
          probe: {{role: {role}, setting: app.tenant_id, tenants: 3}}
        """), file="rls.yml")
    result = run_audit(audit, now=NOW, engine=engine, sample_limit=0)
    check = result.check("isolated")
    assert check.status == "fail", check.error
    rows = [(r["dataset"], r["problem"], r["tenant"], r["other_tenant_rows"])
            for r in check.sample]
    assert sorted(rows, key=str) == sorted([
        ("leads", "not forced", None, None),
        # t1 sees t3's public row; t2 sees both public rows; t3 sees t1's.
        ("leads", "leak", "t1", 1), ("leads", "leak", "t2", 2), ("leads", "leak", "t3", 1),
        ("notes", "rls off", None, None),
        ("notes", "leak", "t1", 2), ("notes", "leak", "t2", 3), ("notes", "leak", "t3", 3),
        ("files", "no policy", None, None),
    ], key=str)
    assert (check.violation_count, check.population) == (9, 4)
    # The probe left the session as it found it: the next statements run as the auditor.
    assert result.errors == []


def test_the_probe_needs_the_role_and_says_so(rls, servers):
    url, role = rls
    auditor = f"auditor_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {auditor} LOGIN")
        connection.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {auditor}")
    engine.dispose()
    try:
        as_auditor = sa.engine.make_url(url).set(username=auditor)
        audit = parse_audit(audit_text(as_auditor.render_as_string(hide_password=False),
                                       DATASETS, f"""\
            - id: isolated
              kind: row_level_security
              probe: {{role: {role}, setting: app.tenant_id}}
            """), file="rls.yml")
        check = run_audit(audit, now=NOW).check("isolated")
        assert (check.status, check.error) == (
            "error", f"the probe acts as {role!r} with SET ROLE, which {auditor!r} may not: "
                     f"GRANT {role} TO {auditor}")
    finally:
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {auditor}")
            connection.exec_driver_sql(f"DROP ROLE {auditor}")
        engine.dispose()


def test_only_postgresql_has_row_level_security(sqlite_db):
    sqlite_db.tables(quotes=[{"id": 1, "tenantId": "t1"}])
    audit = parse_audit(audit_text(sqlite_db.url, "quotes: {table: quotes, key: id, "
                                   "tenant_column: tenantId}", """\
        - {id: isolated, kind: row_level_security}
        """), file="rls.yml")
    check = run_audit(audit, now=NOW).check("isolated")
    assert (check.status, check.error) == (
        "error", "row level security is PostgreSQL's; this database is sqlite")


def test_a_role_name_is_data_not_sql(rls):
    url, _ = rls
    audit = parse_audit(audit_text(url, DATASETS, """\
        - id: isolated
          kind: row_level_security
          probe: {role: 'x"; DROP TABLE quotes; --', setting: app.tenant_id}
        """), file="rls.yml")
    check = run_audit(audit, now=NOW).check("isolated")
    assert (check.status, check.error) == (
        "error", "probe.role: no role 'x\"; DROP TABLE quotes; --' in this database")
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM quotes").scalar() == 4
    engine.dispose()
