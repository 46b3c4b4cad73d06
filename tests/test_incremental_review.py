"""Incremental runs at their edges: each test here is a case where an incremental run
once gave another answer than a full run on the same snapshot (or stopped, or ran in full
for a wrong reason) — a parent created after its last update, a watermark that went
back, keys of PostgreSQL types an array of text does not compare with, a planner's
estimate of an empty table.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from conftest import DATABASES, database_url
from test_incremental import (CHECKS, CLOCK, COMPANIES_CREATED, DATASETS, LEDGER,
                              PARENT_CHECKS, Chain, Ledger, Mutator, answer, create,
                              TIME, create_ledger, naive)


def assert_same_answers(incremental, full) -> None:
    """Statuses, counts, population, keys and lifecycle of every check: the full run's (a
    --full run's comparison with its own incremental state aside)."""
    theirs = [c for c in full.checks if not c.id.endswith(":incremental")]
    assert [c.id for c in incremental.checks] == [c.id for c in theirs]
    for mine, theirs in zip(incremental.checks, theirs):
        assert mine.status != "error", (mine.id, mine.error)
        assert answer(mine) == answer(theirs), (mine.id, mine.notes)


# ---------------------------------------------------------------------------
# `created:` — a parent whose creation time is later than its last change time.


@pytest.mark.parametrize("kind", DATABASES)
def test_a_deleted_parent_created_after_its_last_update_is_seen(kind, servers, tmp_path):
    """Company 5 was created (createdAt) after the overlap's start but last changed before
    it (an import that kept the source's updatedAt): it is neither among the parents
    inserted before the overlap nor among those changed since. Deleted, its item
    dangles: the incremental run must find it."""
    url = database_url(kind, servers, tmp_path)
    create(url, [])
    mutator = Mutator(url)
    old = CLOCK - timedelta(days=2)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine", "companyId": company}
                         for company in (1, 2, 5)], old)
    # the items' watermark, an hour before the clock (item 4): items 1 to 3 are old
    rows.append({**rows[0], "id": 4, "updatedAt": naive(CLOCK - timedelta(hours=1))})
    companies = mutator.seed_companies(["t1"] * 4, old)
    # the companies' watermark, a day before the clock (company 7, unused)
    companies.append({**companies[0], "id": 7, "updatedAt": naive(CLOCK - timedelta(days=1)),
                      "createdAt": naive(CLOCK - timedelta(days=1))})
    companies.append({**companies[0], "id": 5, "updatedAt": naive(old),
                      "createdAt": naive(CLOCK - timedelta(days=1))})
    create(url, rows, companies=companies)
    datasets, checks = f"{DATASETS}\n{COMPANIES_CREATED}", PARENT_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    chains = [Chain(url, tmp_path, engine, False, datasets, checks)
              for engine in ("pandas", "sql")]
    truth = full.run(CLOCK)
    assert truth.check("has_company").violation_keys == []
    for chain in chains:
        assert_same_answers(chain.run(CLOCK), truth)
    with mutator.engine.begin() as connection:
        connection.execute(mutator.companies.delete().where(mutator.companies.c.id == 5))
    later = CLOCK + timedelta(hours=1)
    truth = full.run(later)
    assert truth.check("has_company").violation_keys == [(3,)]
    for chain in chains:
        assert_same_answers(chain.run(later), truth)
    for chain in (full, *chains):
        chain.dispose()
    mutator.dispose()


# ---------------------------------------------------------------------------
# Reconciliation — the newest row deleted: the next watermark is older than the last.

COUNTED = """\
- {id: counted, kind: reconciliation, tolerance: 10%,
   left: {dataset: orders, by: [tenantId]}, right: {dataset: payments, by: [payer]}}
"""


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_a_reconciliation_counts_its_population_after_the_watermark_goes_back(
        tmp_path, engine):
    """Order 2, the newest, is hard-deleted: the orders' next watermark (order 1's time)
    is older than the last, and order 1 — older than the last run's start — is not older
    than the next one's. The buckets the last run counted as holding an old row are not
    all such buckets any more: the population must still be the full run's."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_ledger(url)
    books = Ledger(url)
    orders = [books.row("orders", "t3", 0, 5, naive(CLOCK - timedelta(minutes=10))),
              books.row("orders", "t2", 0, 5, naive(CLOCK))]
    payments = [books.row("payments", "t1", 0, 5, naive(CLOCK - timedelta(days=2)))]
    create_ledger(url, orders, payments)
    checks = COUNTED
    full = Chain(url, tmp_path, "sql", True, LEDGER, checks)
    mine = Chain(url, tmp_path, engine, False, LEDGER, checks)
    assert_same_answers(mine.run(CLOCK), full.run(CLOCK))
    with books.engine.begin() as connection:
        connection.execute(books.tables["orders"].delete().where(
            books.tables["orders"].c.id == orders[1]["id"]))
    for hours in (1, 2, 3):
        now = CLOCK + timedelta(hours=hours)
        truth = full.run(now)
        assert truth.check("counted").population == 2
        assert_same_answers(mine.run(now), truth)
    for chain in (full, mine):
        chain.dispose()
    books.dispose()


# ---------------------------------------------------------------------------
# PostgreSQL binds changed keys as one array: of the column's own type, not text.

KEYED_DATASETS = """\
accounts: {table: accounts, key: id, incremental: {changed: updatedAt, created: createdAt,
                                                   overlap: 1m, full_above: 100%}}
notes: {table: notes, key: id, incremental: {changed: updatedAt, overlap: 1m,
                                             full_above: 100%}}
"""
KEYED_CHECKS = """\
- {id: has_account, kind: orphans, dataset: notes, reference: accountId, parent: accounts,
   parent_where: {deletedAt: null}}
"""


@pytest.mark.parametrize("key_type, keys", [
    ("uuid", ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
              "00000000-0000-4000-8000-000000000003"]),
    # blank-padded: a value read back as 'BETA    ', which as text is not 'BETA'
    ("char(8)", ["ACME", "BETA", "GONE"]),
    ("code", ["ACME", "BETA", "GONE"]),  # an enum: CREATE TYPE code AS ENUM (...)
])
def test_postgresql_parent_keys_bind_as_the_reference_column_compares_them(
        key_type, keys, servers, tmp_path):
    """Account 1 was changed within the overlap when the first run read the accounts (its
    key is recorded), account 2 is soft-deleted after it (a changed parent): the notes
    referencing either are judged again, by their keys bound to the notes' own column."""
    url = servers.database("postgresql")
    engine = sa.create_engine(url)
    old, recent = naive(CLOCK - timedelta(days=2)), naive(CLOCK - timedelta(hours=1))
    with engine.begin() as connection:
        if key_type == "code":
            connection.execute(sa.text("CREATE TYPE code AS ENUM ('ACME', 'BETA', 'GONE')"))
        connection.execute(sa.text(f'CREATE TABLE accounts (id {key_type} PRIMARY KEY, '
                                   f'"deletedAt" timestamp, "updatedAt" timestamp, '
                                   f'"createdAt" timestamp)'))
        connection.execute(sa.text(f'CREATE TABLE notes (id integer PRIMARY KEY, '
                                   f'"accountId" {key_type}, "updatedAt" timestamp)'))
        connection.execute(sa.text(f'INSERT INTO accounts (id, "updatedAt", "createdAt") '
                                   f'VALUES (CAST(:id AS {key_type}), :at, :at)'),
                           [{"id": keys[0], "at": recent}, {"id": keys[1], "at": old}])
        # note 4, the notes' watermark, makes notes 1 to 3 old
        connection.execute(sa.text(f'INSERT INTO notes VALUES (:id, CAST(:account AS '
                                   f'{key_type}), :at)'),
                           [{"id": n + 1, "account": key, "at": old}
                            for n, key in enumerate(keys)]
                           + [{"id": 4, "account": keys[1], "at": recent}])
    full = Chain(url, tmp_path, "sql", True, KEYED_DATASETS, KEYED_CHECKS)
    chains = [Chain(url, tmp_path, kind, False, KEYED_DATASETS, KEYED_CHECKS)
              for kind in ("pandas", "sql")]
    truth = full.run(CLOCK)
    assert truth.check("has_account").violation_keys == [(3,)]
    for chain in chains:
        assert_same_answers(chain.run(CLOCK), truth)
    later = CLOCK + timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(sa.text(f'UPDATE accounts SET "deletedAt" = :at, "updatedAt" = :at '
                                   f'WHERE id = CAST(:id AS {key_type})'),
                           {"at": naive(later), "id": keys[1]})
    truth = full.run(later)
    assert truth.check("has_account").violation_keys == [(2,), (3,), (4,)]
    for chain in chains:
        mine = chain.run(later)
        assert_same_answers(mine, truth)
        assert mine.check("has_account").notes[-1].startswith("incremental: examined")
    for chain in (full, *chains):
        chain.dispose()
    engine.dispose()


# ---------------------------------------------------------------------------
# full_above: the planner's estimate of a table it last saw empty.


def test_full_above_counts_a_table_the_planner_last_saw_empty(servers, tmp_path):
    """ANALYZE ran while the table was empty: PostgreSQL estimates 0 rows until it runs
    again. Two changed rows of 21 are not all of them."""
    url = servers.database("postgresql")
    create(url, [])
    mutator = Mutator(url)
    with mutator.engine.begin() as connection:
        connection.execute(sa.text("ANALYZE items"))
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine"}] * 21, CLOCK - timedelta(days=1))
    rows[-1]["updatedAt"] = naive(CLOCK - timedelta(hours=1))
    with mutator.engine.begin() as connection:
        connection.execute(mutator.table.insert(), rows)
        estimate = connection.execute(sa.text(
            "SELECT reltuples FROM pg_class WHERE oid = 'items'::regclass")).scalar()
    assert estimate == 0
    datasets = ("items: {table: items, key: id, incremental: {changed: updatedAt, "
                "overlap: 1m, full_above: 20%}}")
    chain = Chain(url, tmp_path, "sql", False, datasets, CHECKS)
    chain.run(CLOCK)
    later = CLOCK + timedelta(days=1)
    with mutator.engine.begin() as connection:
        connection.execute(mutator.table.update().where(mutator.table.c.id == 1).values(
            email="x@x.com", updatedAt=naive(later)))
    notes = chain.run(later).check("sent_valid").notes
    assert notes[-1].startswith("incremental: examined 2 changed rows of 21"), notes
    chain.dispose()
    mutator.dispose()


# ---------------------------------------------------------------------------
# Bound keys: SQLite's own default limit of values bound to one statement.


@pytest.fixture
def sqlite_default_limit():
    """Each SQLite connection opened with the limit SQLite is built with by default
    (32,766 values bound to a statement; some distributions raise it)."""
    import sqlite3

    def limit(connection, _record):
        if isinstance(connection, sqlite3.Connection):
            connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

    sa.event.listen(sa.engine.Engine, "connect", limit)
    yield
    sa.event.remove(sa.engine.Engine, "connect", limit)


def test_changed_parents_within_the_overlap_and_last_runs_keys_fit_one_sqlite_statement(
        tmp_path, sqlite_default_limit):
    """10,000 parents within the overlap of the first run, 10,000 more changed since (20,000
    changed parents, the most bound), and 3,000 children that violated: bound each once,
    they are fewer than SQLite binds."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    old, recent = naive(CLOCK - timedelta(days=2)), naive(CLOCK - timedelta(hours=1))
    companies = [{"id": n, "tenantId": "t1", "deletedAt": None, "createdAt": old,
                  "updatedAt": recent if n > 20_000 else old} for n in range(1, 30_001)]
    items = [{"id": n, "tenantId": "t1", "otherTenant": "t1", "email": None,
              "status": "SENT", "sentAt": None, "createdAt": old, "deletedAt": None,
              "updatedAt": old, "sendCount": None, "companyId": 99_999 if n > 1 else 1}
             for n in range(1, 3_002)]
    create(url, items, companies=companies)
    datasets, checks = f"{DATASETS}\n{COMPANIES_CREATED}", PARENT_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    mine = Chain(url, tmp_path, "sql", False, datasets, checks)
    assert_same_answers(mine.run(CLOCK), full.run(CLOCK))
    later = CLOCK + timedelta(hours=1)
    engine = sa.create_engine(url)
    table = sa.Table("companies", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(table.update().where(table.c.id <= 10_000).values(
            tenantId="t2", updatedAt=naive(later)))
    engine.dispose()
    truth = full.run(later)
    assert truth.check("company_tenant").violation_keys == [(1,)]
    result = mine.run(later)
    assert_same_answers(result, truth)
    assert all(c.notes[-1].startswith("incremental: examined") for c in result.checks)
    for chain in (full, mine):
        chain.dispose()


# ---------------------------------------------------------------------------
# The key checksum: an empty key and no key are not the same key.

CODES = KEYED_DATASETS
CODE_CHECKS = """\
- {id: has_account, kind: orphans, dataset: notes, reference: accountCode,
   parent: accounts, parent_key: code}
"""


@pytest.mark.parametrize("kind", DATABASES)
def test_a_parent_key_emptied_to_null_runs_in_full(kind, servers, tmp_path):
    """Account 1's code goes from '' to null (a clean-up of empty strings): the note
    referencing '' dangles. The parents' key checksum must tell the two apart."""
    url = database_url(kind, servers, tmp_path)
    metadata = sa.MetaData()
    accounts = sa.Table("accounts", metadata,
                        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                        sa.Column("code", sa.String(8)), sa.Column("createdAt", TIME),
                        sa.Column("updatedAt", TIME))
    notes = sa.Table("notes", metadata,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("accountCode", sa.String(8)), sa.Column("updatedAt", TIME))
    old, recent = naive(CLOCK - timedelta(days=2)), naive(CLOCK - timedelta(hours=1))
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        connection.execute(accounts.insert(), [
            {"id": 1, "code": "", "createdAt": old, "updatedAt": old},
            {"id": 2, "code": "b", "createdAt": old, "updatedAt": old},
            {"id": 3, "code": "c", "createdAt": recent, "updatedAt": recent}])
        connection.execute(notes.insert(), [{"id": 1, "accountCode": "", "updatedAt": old},
                                            {"id": 2, "accountCode": "b", "updatedAt": old},
                                            {"id": 3, "accountCode": "b", "updatedAt": recent}])
    full = Chain(url, tmp_path, "sql", True, CODES, CODE_CHECKS)
    chains = [Chain(url, tmp_path, engine_, False, CODES, CODE_CHECKS)
              for engine_ in ("pandas", "sql")]
    truth = full.run(CLOCK)
    assert truth.check("has_account").violation_keys == []
    for chain in chains:
        assert_same_answers(chain.run(CLOCK), truth)
    later = CLOCK + timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(accounts.update().where(accounts.c.id == 1).values(
            code=None, updatedAt=naive(later)))
    truth = full.run(later)
    assert truth.check("has_account").violation_keys == [(1,)]
    for chain in chains:
        assert_same_answers(chain.run(later), truth)
    for chain in (full, *chains):
        chain.dispose()
    engine.dispose()


# ---------------------------------------------------------------------------
# `created:` — why a run is a full one, when a parent was backfilled.


def test_a_parent_inserted_with_an_earlier_creation_time_is_not_called_a_delete(tmp_path):
    """Company 8 is inserted with a createdAt older than the overlap (a backfill): the
    parents inserted before it are one more, and the run says so — not that one was
    deleted."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    old = CLOCK - timedelta(days=2)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine", "companyId": company}
                         for company in (1, 8)], old)
    rows.append({**rows[0], "id": 3, "updatedAt": naive(CLOCK - timedelta(hours=1))})
    companies = mutator.seed_companies(["t1"] * 2, old)
    companies.append({**companies[0], "id": 7, "updatedAt": naive(CLOCK - timedelta(days=1)),
                      "createdAt": naive(CLOCK - timedelta(days=1))})
    create(url, rows, companies=companies)
    datasets, checks = f"{DATASETS}\n{COMPANIES_CREATED}", PARENT_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    mine = Chain(url, tmp_path, "sql", False, datasets, checks)
    assert_same_answers(mine.run(CLOCK), full.run(CLOCK))
    later = CLOCK + timedelta(hours=1)
    with mutator.engine.begin() as connection:
        connection.execute(mutator.companies.insert().values(
            id=8, tenantId="t1", createdAt=naive(old), updatedAt=naive(later)))
    truth = full.run(later)
    result = mine.run(later)
    assert_same_answers(result, truth)
    assert result.check("has_company").notes == [
        "ran in full (companies): companies holds 3 rows with createdAt before the overlap "
        "where run 1 counted 2: one was inserted since with an earlier createdAt, and a "
        "count cannot tell whether another was deleted or given another key, which leaves "
        "nothing a watermark sees"]
    for chain in (full, mine):
        chain.dispose()
    mutator.dispose()
