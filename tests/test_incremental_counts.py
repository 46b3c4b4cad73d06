"""What an incremental run counts, and how it asks PostgreSQL to plan what it examines.

A run counts each table's rows once: populations over the whole table (no filter, or
only NOT NULL columns tested not null) and the rows older than a watermark (the total
less the changed rows, found by the change column) share that count. On PostgreSQL an
incremental check's statements run priced for index lookups, in its own savepoint."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from conftest import DATABASES, database_url
from test_incremental import (CLOCK, COMPANIES_CREATED, DATASETS, ENTITY_CHECKS,
                              PARENT_CHECKS, SENDS, Chain, answer, create, naive)


@pytest.fixture(params=DATABASES)
def url(request, servers, tmp_path_factory):
    return database_url(request.param, servers, tmp_path_factory.mktemp(request.param))


def seeded(url: str) -> None:
    """Ten items with a send each, referencing five companies (the last two missing), all
    written two days before the clock."""
    old = naive(CLOCK - timedelta(days=2))
    items = [{"id": item, "tenantId": "t1", "otherTenant": "t1", "email": None,
              "status": "SENT", "sentAt": old, "createdAt": old, "deletedAt": None,
              "updatedAt": old, "sendCount": 1, "companyId": 1 + item % 5}
             for item in range(1, 11)]
    sends = [{"id": item, "itemId": item, "at": old, "updatedAt": old}
             for item in range(1, 11)]
    companies = [{"id": company, "tenantId": "t1", "deletedAt": None, "updatedAt": old,
                  "createdAt": old} for company in range(1, 4)]
    create(url, items, sends, companies)


def changed(url: str, later) -> None:
    """A company arrives, an item changes tenant, an item gets a second send."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    tables = {name: sa.Table(name, metadata, autoload_with=engine)
              for name in ("items", "sends", "companies")}
    with engine.begin() as connection:
        connection.execute(tables["companies"].insert(), [
            {"id": 4, "tenantId": "t1", "deletedAt": None, "updatedAt": naive(later),
             "createdAt": naive(later)}])
        connection.execute(tables["items"].update().where(tables["items"].c.id == 2)
                           .values(tenantId="t2", updatedAt=naive(later)))
        connection.execute(tables["sends"].insert(), [
            {"id": 11, "itemId": 3, "at": naive(later), "updatedAt": naive(later)}])
    engine.dispose()


# A statement reading a whole table: its count (and, for parents with `created:`, the
# checksum of their keys), with no WHERE.
WHOLE_TABLE = re.compile(r'^SELECT count\(\*\) AS count_1(, .*)?\s+FROM [`"]?(\w+)[`"]?'
                         r'( AS born_parents)?\s*$', re.DOTALL)


def test_a_run_counts_each_table_once_and_gives_the_full_runs_answer(url, tmp_path):
    """The second run is incremental: `has_company` and `company_tenant` count their
    population over the whole items table, `counted` the sends older than the overlap
    (this run's start and the next one's), the parents' rules the companies inserted
    before it with the checksum of their keys — one read of each table serves them all."""
    seeded(url)
    datasets = f"{DATASETS}\n{SENDS}\n{COMPANIES_CREATED}"
    checks = f"{ENTITY_CHECKS}{PARENT_CHECKS}"
    incremental = Chain(url, tmp_path, "sql", False, datasets, checks)
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    incremental.run(CLOCK)
    full.run(CLOCK)
    later = CLOCK + timedelta(hours=1)
    changed(url, later - timedelta(minutes=30))
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_):
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        mine = incremental.run(later)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    theirs = full.run(later)
    counted = [match.group(2) for statement in statements
               if (match := WHOLE_TABLE.match(statement.strip()))]
    assert sorted(counted) == ["companies", "items", "sends"]
    for check, reference in zip(mine.checks, theirs.checks):
        assert answer(check) == answer(reference), check.id
        assert any(note.startswith("incremental: examined") for note in check.notes), (
            check.id, check.notes)
    incremental.dispose()
    full.dispose()


def test_only_a_condition_every_row_meets_is_the_tables_count():
    from integrity.pushdown import Tables

    db = Tables(audit=None, source=None, connection=None, now=None, columns={},
                not_null={"items": {"id", "tenantId"}})
    rows = sa.table("items", sa.column("id"), sa.column("tenantId"), sa.column("email")
                    ).alias("rows")
    every = [sa.true(), sa.and_(sa.true()), rows.c.id.is_not(None),
             sa.and_(sa.true(), rows.c.id.is_not(None), rows.c.tenantId.is_not(None))]
    some = [sa.false(), sa.and_(sa.false()), sa.not_(sa.true()), rows.c.email.is_not(None),
            rows.c.id.is_(None), sa.or_(rows.c.id.is_not(None), rows.c.email == "a"),
            sa.and_(rows.c.id.is_not(None), rows.c.email.is_not(None)), rows.c.id > 0]
    assert [db.every_row("items", condition) for condition in every] == [True] * len(every)
    assert [db.every_row("items", condition) for condition in some] == [False] * len(some)
    assert not db.every_row("sends", rows.c.id.is_not(None))  # another dataset's NOT NULL


@pytest.fixture
def postgres_tables(postgres_database):
    from integrity.audit import parse_audit
    from integrity.pushdown import Tables
    from integrity.sources import open_source

    audit = parse_audit(f"connection: {{url: '{postgres_database}'}}\n"
                        f"datasets: {{items: {{table: items}}}}\n"
                        f"checks: [{{kind: freshness, dataset: items, time: at, "
                        f"max_age: 1h}}]\n",
                        file="counts.yml")
    source = open_source(audit.connection)
    with source.engine.connect() as connection:
        yield Tables(audit=audit, source=source, connection=connection, now=CLOCK,
                     columns={})
    source.engine.dispose()


def setting(db) -> str:
    return db.scalar(sa.text("SELECT current_setting('random_page_cost')"))


def test_index_lookups_last_the_savepoint_and_never_raise_a_lower_price(postgres_tables):
    db = postgres_tables
    assert setting(db) == "4"  # PostgreSQL's default, as the session has it
    savepoint = db.connection.begin_nested()
    db.index_lookups(True)
    assert setting(db) == "1.1"
    db.index_lookups(False)
    assert setting(db) == "4"
    savepoint.commit()
    savepoint = db.connection.begin_nested()  # a check that fails: rolled back with it
    db.index_lookups(True)
    savepoint.rollback()
    assert setting(db) == "4"
    # A session with its own price: lowered for the check, then given back (not the
    # server's default); an SSD-tuned one, never raised.
    for own, during in (("2", "1.1"), ("1", "1")):
        db.connection.exec_driver_sql(f"SET random_page_cost = {own}")
        db._once.clear()
        savepoint = db.connection.begin_nested()
        db.index_lookups(True)
        assert setting(db) == during
        db.index_lookups(False)
        assert setting(db) == own
        savepoint.commit()


def test_only_incremental_checks_are_planned_for_index_lookups(url, tmp_path, monkeypatch):
    from integrity.pushdown import Tables

    calls: list[bool] = []
    original = Tables.index_lookups
    monkeypatch.setattr(Tables, "index_lookups",
                        lambda self, on: (calls.append(on), original(self, on))[1])
    seeded(url)
    datasets = f"{DATASETS}\n{SENDS}\n{COMPANIES_CREATED}"
    chain = Chain(url, tmp_path, "sql", False, datasets, f"{ENTITY_CHECKS}{PARENT_CHECKS}")
    chain.run(CLOCK)  # the first run has no watermark to start from: in full
    assert calls == []
    chain.run(CLOCK + timedelta(hours=1))
    # SQLite runs no savepoint per check (nor has a planner price to set).
    assert calls == ([] if url.startswith("sqlite") else [True, False] * 4)
    chain.dispose()


TEXT_LEDGER = """\
- {id: daily, kind: reconciliation,
   left: {dataset: orders, by: [tenantId], per_day: at, where: {kind: sale}},
   right: {dataset: payments, by: [payer], per_day: at}}
- {id: counted, kind: reconciliation,
   left: {dataset: orders, by: [tenantId]}, right: {dataset: payments, by: [payer]}}
"""


def test_a_row_a_reconciliation_leaves_out_cannot_stop_the_run(postgres_database, tmp_path):
    """Orders' times are text; an old import (which the `daily` side leaves out) holds a
    date no calendar has, which PostgreSQL refuses to read. The checksum of the buckets of
    the orders born before the overlap (`created:`) reads no bucket of a row its side
    leaves out, nor does the incremental measurement (whatever order the database tests
    its conditions in), so both runs go through — the incremental one with the full
    run's answer."""
    metadata = sa.MetaData()
    for name, tenant in (("orders", "tenantId"), ("payments", "payer")):
        sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column(tenant, sa.String(8)), sa.Column("kind", sa.String(8)),
                 sa.Column("at", sa.Text), sa.Column("createdAt", sa.DateTime),
                 sa.Column("updatedAt", sa.DateTime))
    old = naive(CLOCK - timedelta(days=2))
    engine = sa.create_engine(postgres_database)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        connection.execute(metadata.tables["orders"].insert(), [
            {"id": 1, "tenantId": "t1", "kind": "sale", "at": "2026-02-27 10:00",
             "createdAt": old, "updatedAt": old},
            {"id": 2, "tenantId": "t1", "kind": "import", "at": "2024-02-30 10:00",
             "createdAt": old - timedelta(days=1), "updatedAt": old - timedelta(days=1)}])
        connection.execute(metadata.tables["payments"].insert(), [
            {"id": 1, "payer": "t1", "kind": "card", "at": "2026-02-27 11:00",
             "createdAt": old, "updatedAt": old}])
    datasets = "\n".join(
        f"{name}: {{table: {name}, key: id, incremental: {{changed: updatedAt, "
        f"created: createdAt, overlap: 1m, full_above: 100%}}}}"
        for name in ("orders", "payments"))
    incremental = Chain(postgres_database, tmp_path, "sql", False, datasets, TEXT_LEDGER)
    full = Chain(postgres_database, tmp_path, "sql", True, datasets, TEXT_LEDGER)
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        mine, theirs = incremental.run(now), full.run(now)
        assert [c.error for c in mine.checks] == [None, None]
        assert [(c.id, c.status, c.violation_count) for c in mine.checks] == [
            ("daily", "pass", 0), ("counted", "fail", 1)]
        assert [answer(c) for c in mine.checks] == [answer(c) for c in theirs.checks]
    assert mine.check("daily").notes[0].startswith("incremental: re-aggregated")
    incremental.dispose()
    full.dispose()
    engine.dispose()


def test_a_check_whose_incremental_planning_fails_errs_alone(postgres_database, tmp_path,
                                                             monkeypatch):
    """A statement that fails while a check plans its incremental start (here, what it
    records for the next run) errs that check; the run's snapshot is not aborted, and
    every other check measures as usual."""
    from integrity.checks.orphans import ByParent

    def failing(self, db, dataset, since):
        db.scalar(sa.text("SELECT 1 / 0"))

    seeded(postgres_database)
    datasets = f"{DATASETS}\n{SENDS}\n{COMPANIES_CREATED}"
    chain = Chain(postgres_database, tmp_path, "sql", False, datasets,
                  f"{ENTITY_CHECKS}{PARENT_CHECKS}")
    monkeypatch.setattr(ByParent, "watermark_extras", failing)
    from integrity.runner import run_audit

    result = run_audit(chain.audit, now=CLOCK, engine="sql", history=chain.store,
                       sample_limit=0)
    statuses = {check.id: check.status for check in result.checks}
    assert statuses == {"counted": "pass", "preserved": "pass", "has_company": "error",
                        "company_tenant": "error"}
    assert "division by zero" in result.check("has_company").error
    chain.dispose()
