"""Incremental runs of the parent and entity rules bind the keys of what changed (the
changed parents, the entities of changed events) as lists while they are few, and fall
back to correlated subqueries past `MOST_BOUND`: both give the full run's answer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import DATABASES, database_url
from test_incremental import (CLOCK, COMPANIES, DATASETS, ENTITY_CHECKS, PARENT_CHECKS, SENDS,
                              Chain, assert_same_answer, create, naive)

ITEMS = 40


@pytest.fixture(params=DATABASES)
def url(request, servers, tmp_path_factory):
    return database_url(request.param, servers, tmp_path_factory.mktemp(request.param))


def seeded(url: str) -> None:
    """40 items, each with one send and referencing its own company, of which only the
    first five exist; written two days before the clock but the first of each, a day
    later (the watermark: the others are older than the overlap)."""
    old = naive(CLOCK - timedelta(days=2))
    sent = naive(CLOCK - timedelta(hours=2))
    items = [{"id": item, "tenantId": "t1", "otherTenant": "t1", "email": None,
              "status": "SENT", "sentAt": sent, "createdAt": old, "deletedAt": None,
              "updatedAt": old, "sendCount": 1, "companyId": item}
             for item in range(1, ITEMS + 1)]
    sends = [{"id": item, "itemId": item, "at": sent - timedelta(minutes=1), "updatedAt": old}
             for item in range(1, ITEMS + 1)]
    companies = [{"id": company, "tenantId": "t1", "deletedAt": None, "updatedAt": old}
                 for company in range(1, 6)]
    for rows in (items, sends, companies):
        rows[0]["updatedAt"] = naive(CLOCK - timedelta(days=1))
    create(url, items, sends, companies)


def changed(url: str, later) -> None:
    """The missing companies arrive, every other one in another tenant, and every other
    item sends again an hour after its sentAt: no item row changes."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    companies = sa.Table("companies", metadata, autoload_with=engine)
    sends = sa.Table("sends", metadata, autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(companies.insert(), [
            {"id": company, "tenantId": "t2" if company % 2 else "t1", "deletedAt": None,
             "updatedAt": naive(later)} for company in range(6, ITEMS + 1)])
        connection.execute(sends.insert(), [
            {"id": 100 + item, "itemId": item, "at": naive(CLOCK - timedelta(hours=1)),
             "updatedAt": naive(later)} for item in range(1, ITEMS + 1, 2)])
    engine.dispose()


@pytest.mark.parametrize("most", [5, 5_000], ids=["subqueries", "bound lists"])
def test_many_changed_parents_and_events_give_the_full_runs_answer(url, tmp_path, monkeypatch,
                                                                  most):
    import integrity.checks
    from integrity.checks.counters import ByEntity
    from integrity.checks.orphans import ByParent

    monkeypatch.setattr(integrity.checks, "MOST_BOUND", most)
    bound = []
    for rule, reader in ((ByParent, "changed_parents"), (ByEntity, "changed_entities")):
        def spy(self, db, original=getattr(rule, reader)):
            keys = original(self, db)
            bound.append(keys is not None)
            return keys
        monkeypatch.setattr(rule, reader, spy)
    seeded(url)
    datasets = f"{DATASETS}\n{SENDS}\n{COMPANIES}"
    checks = f"{ENTITY_CHECKS}{PARENT_CHECKS}"
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    chains = [Chain(url, tmp_path, engine, False, datasets, checks)
              for engine in ("pandas", "sql")]
    first = full.run(CLOCK)
    for chain in chains:
        assert_same_answer(chain.run(CLOCK), first, expect_incremental=False)
    later = CLOCK + timedelta(days=1)
    changed(url, later)
    truth = full.run(later)
    found = {check.id: len(check.violation_keys) for check in truth.checks}
    # Half the new companies are in another tenant, half the items count one send short.
    assert found == {"counted": ITEMS // 2, "preserved": 0, "has_company": 0,
                     "company_tenant": (ITEMS - 5) // 2}
    bound.clear()
    for chain in chains:
        assert_same_answer(chain.run(later), truth, expect_incremental=True)
    # 35 changed companies and 20 entities with new sends: bound while at most `most`.
    assert bound and set(bound) == {most >= ITEMS}
    for chain in (full, *chains):
        chain.dispose()
