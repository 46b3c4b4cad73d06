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
    db.connection.exec_driver_sql("SET random_page_cost = 1")  # an SSD-tuned server
    db._once.clear()
    db.index_lookups(True)
    assert setting(db) == "1"


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
