"""Incremental runs: what changed since the last run, with the same answer as a full run.

A dataset with `incremental:` lets the row-local checks (timestamp_valid, the
two-column cross_tenant, duplicates, duplicate_events) examine only the rows
changed since the last run's watermark plus the keys that violated in it (and,
for the duplicate families, what those rows are compared with), and the checks of
an entity against its events (counter_vs_events, timestamp_preserved) only the
entities whose row or events changed. The property test applies random
mutations — inserts, updates that make rows violate and stop violating, soft and
hard deletes, rows committed late inside the overlap, change times equal to the
last watermark; events sent, moved to another entity, re-timed and hard-deleted;
parents inserted, re-tenanted, soft- and hard-deleted and given another key — and
after every step compares an
incremental run with a full run on the same snapshot: statuses, counts,
population, every violating key and the lifecycle (new, persisting, resolved),
on SQLite, PostgreSQL and MariaDB, with both engines.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from conftest import DATABASES, audit_text, database_url
from integrity.audit import parse_audit
from integrity.cli import main
from integrity.errors import ConfigErrors
from integrity.history import History
from integrity.runner import run_audit

CLOCK = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
COLUMNS = ("id", "tenantId", "otherTenant", "email", "status", "sentAt", "createdAt",
           "deletedAt", "updatedAt")
# Tables of a few rows: most runs change more than the default full_above (5%) of them.
DATASETS = ("items: {table: items, key: id, incremental: {changed: updatedAt, overlap: 1m, "
            "full_above: 100%}}")
CHECKS = """\
- {id: sent_valid, kind: timestamp_valid, dataset: items, where: {status: SENT},
   column: sentAt, not_before: createdAt}
- {id: tenants_agree, kind: cross_tenant, dataset: items, tenant_column: tenantId,
   other_tenant_column: otherTenant}
- {id: emails_unique, kind: duplicates, dataset: items, columns: [tenantId, email],
   normalize: {email: email}, where: {deletedAt: null}, keep_first_by: createdAt}
- {id: double_sends, kind: duplicate_events, dataset: items, by: [tenantId, status],
   time: sentAt, window: 5m, where: {deletedAt: null}}
"""
# Each item's sends: its counter counts them, its sentAt must stay at a burst's first.
SENDS = ("sends: {table: sends, key: id, incremental: {changed: updatedAt, overlap: 1m, "
         "full_above: 100%}}")
ENTITY_CHECKS = """\
- {id: counted, kind: counter_vs_events, dataset: items, counter: sendCount,
   events: {dataset: sends, entity: itemId, time: at}, window: 5m}
- {id: preserved, kind: timestamp_preserved, dataset: items, column: sentAt,
   events: {dataset: sends, entity: itemId, time: at}, window: 5m}
"""
# Each item's company: it must exist (and not be soft-deleted), in the item's tenant.
COMPANIES = ("companies: {table: companies, key: id, incremental: {changed: updatedAt, "
             "overlap: 1m, full_above: 100%}}")
# The same, telling inserts from updates: an updated company stays incremental.
COMPANIES_CREATED = ("companies: {table: companies, key: id, incremental: {changed: "
                     "updatedAt, created: createdAt, overlap: 1m, full_above: 100%}}")
PARENT_CHECKS = """\
- {id: has_company, kind: orphans, dataset: items, reference: companyId,
   parent: companies, parent_where: {deletedAt: null}}
- {id: company_tenant, kind: cross_tenant, dataset: items, tenant_column: tenantId,
   reference: companyId, parent: companies, parent_tenant_column: tenantId}
"""


def create(url: str, rows: list[dict], sends: list[dict] = (),
           companies: list[dict] = ()) -> None:
    metadata = sa.MetaData()
    table = sa.Table("items", metadata,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("tenantId", sa.String(8)), sa.Column("otherTenant", sa.String(8)),
                     sa.Column("email", sa.String(40)), sa.Column("status", sa.String(8)),
                     *[sa.Column(name, TIME) for name in ("sentAt", "createdAt", "deletedAt",
                                                          "updatedAt")],
                     sa.Column("sendCount", sa.Integer), sa.Column("companyId", sa.Integer))
    parents = sa.Table("companies", metadata,
                       sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                       sa.Column("tenantId", sa.String(8)), sa.Column("deletedAt", TIME),
                       sa.Column("updatedAt", TIME), sa.Column("createdAt", TIME))
    log = sa.Table("sends", metadata,
                   sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                   sa.Column("itemId", sa.Integer), sa.Column("at", TIME),
                   sa.Column("updatedAt", TIME))
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        if rows:
            connection.execute(table.insert(), rows)
        if sends:
            connection.execute(log.insert(), list(sends))
        if companies:
            connection.execute(parents.insert(), list(companies))
    engine.dispose()


def naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


class Chain:
    """One series of runs with its own history: incremental, or always --full."""

    def __init__(self, url: str, folder, engine: str, full: bool, datasets: str = DATASETS,
                 checks: str = CHECKS):
        self.audit = parse_audit(audit_text(url, datasets, checks),
                                 file=str(folder / "incremental.yml"))
        self.store = History(f"sqlite:///{folder / f'h-{uuid.uuid4().hex[:8]}.sqlite'}")
        self.engine, self.full = engine, full

    def run(self, now: datetime):
        result = run_audit(self.audit, now=now, engine=self.engine, history=self.store,
                           sample_limit=0, full=self.full)
        assert result.errors == []
        self.store.apply(result)
        return result

    def dispose(self):
        self.store.engine.dispose()


def answer(check) -> tuple:
    life = check.lifecycle
    return (check.status, check.violation_count, check.population,
            sorted(check.violation_keys, key=repr), sorted(life.new),
            sorted(life.persisting.items()), sorted(life.resolved))


# Why a check of an entity against its events may run in full although both datasets ran
# before: an event older than the overlap was deleted or changed (the property test does
# both), or the event log was empty.
EVENTS_SEEN_CHANGING = ("ran in full (sends): sends holds ", "ran in full (sends): sends had "
                                                              "no rows in run ")
# The same for a check of children against their parents.
PARENTS_SEEN_CHANGING = ("ran in full (companies): companies holds ",
                         "ran in full (companies): companies had no rows in run ")


def assert_same_answer(incremental, full, expect_incremental: bool) -> None:
    assert [c.id for c in incremental.checks] == [c.id for c in full.checks]
    for mine, theirs in zip(incremental.checks, full.checks):
        assert mine.status != "error", mine.error
        assert answer(mine) == answer(theirs), mine.id
        ran = [note for note in mine.notes if note.startswith("incremental: examined")]
        if expect_incremental and mine.id in {"counted", "preserved"} and not ran:
            assert mine.notes[-1].startswith(EVENTS_SEEN_CHANGING), (mine.id, mine.notes)
            continue
        if expect_incremental and mine.id in {"has_company", "company_tenant"} and not ran:
            assert mine.notes[-1].startswith(PARENTS_SEEN_CHANGING), (mine.id, mine.notes)
            continue
        assert bool(ran) == expect_incremental, (mine.id, mine.notes)


# ---------------------------------------------------------------------------
# The property: random mutation sequences, compared after every step.

EXAMPLES = int(os.environ.get("INTEGRITY_INCREMENTAL_EXAMPLES", "6"))
# No shrinking: each example is a sequence of a dozen audit runs, and shrinking one takes
# minutes; a failure prints its example as drawn (mutations and clock steps, in order).
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    derandomize=not os.environ.get("INTEGRITY_PARITY_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])

emails = st.sampled_from([None, "ann@x.com", " Ann@x.com", "ANN@X.COM ", "bob@x.com"])
tenants = st.sampled_from(["t1", "t2"])
# sentAt relative to the row's creation and the clock: fine, null, before createdAt, or
# in the future (which it stops being as the clock moves on, without the row changing);
# or one fixed moment (and one 4 minutes after it) whatever the clock: rows written at
# different steps send twice within the window, the first send before the watermark.
sent = st.sampled_from(["fine", "null", "early", "future", "far_future", "fixed",
                        "fixed_next"])
FIXED = CLOCK + timedelta(hours=2)
fields = st.fixed_dictionaries({
    "tenantId": tenants, "otherTenant": st.sampled_from([None, "t1", "t2"]), "email": emails,
    "status": st.sampled_from(["SENT", "DRAFT"]), "sent": sent,
    "sendCount": st.sampled_from([None, 0, 1, 2]),
    "companyId": st.sampled_from([None, 1, 2, 3, 4, 5])})
# An event's time: around its item's sentAt (a burst from a minute before it to two
# minutes after holds it: a moved timestamp), at the clock, or none.
event_times = st.sampled_from(["before", "after", "clock", "none"])
when = st.sampled_from(["clock", "late", "tie"])
# What one change does; `when` says which change time it writes: the clock, a time inside
# the overlap before the last watermark (a late commit), or exactly the last watermark.
changes = st.one_of(
    st.tuples(st.just("insert"), fields, st.sampled_from(["clock", "late", "tie"])),
    st.tuples(st.just("update"), st.integers(0, 20), fields,
              st.sampled_from(["clock", "late", "tie"])),
    st.tuples(st.just("soft_delete"), st.integers(0, 20)),
    st.tuples(st.just("hard_delete"), st.integers(0, 20)),
    # events go to the first three items, so that an item has several
    st.tuples(st.just("send"), st.integers(0, 2), event_times, when),
    st.tuples(st.just("edit_send"), st.integers(0, 20), st.integers(0, 2), event_times, when),
    st.tuples(st.just("delete_send"), st.integers(0, 20)),
    # a company: new (its id the next one), re-tenanted, soft-deleted or restored, given
    # the next free id, or hard-deleted
    st.tuples(st.just("company"), st.integers(0, 20), tenants,
              st.sampled_from(["insert", "tenant", "soft_delete", "restore", "new_key",
                               "hard_delete"]), when),
)
steps = st.lists(st.tuples(st.integers(1, 36), st.lists(changes, min_size=1, max_size=3)),
                 min_size=2, max_size=4)


def row_values(values: dict, created: datetime, clock: datetime) -> dict:
    sent_at = {"fine": created + timedelta(minutes=5), "null": None,
               "early": created - timedelta(minutes=1), "future": clock + timedelta(hours=2),
               "far_future": clock + timedelta(days=3), "fixed": FIXED,
               "fixed_next": FIXED + timedelta(minutes=4)}[values["sent"]]
    return {"tenantId": values["tenantId"], "otherTenant": values["otherTenant"],
            "email": values["email"], "status": values["status"],
            "sentAt": None if sent_at is None else naive(sent_at), "createdAt": naive(created),
            "sendCount": values.get("sendCount"), "companyId": values.get("companyId")}


def event_time(choice: str, clock: datetime, sent_at: datetime | None) -> datetime | None:
    around = sent_at or naive(clock)
    return {"before": around - timedelta(minutes=1), "after": around + timedelta(minutes=2),
            "clock": naive(clock), "none": None}[choice]


class Mutator:
    """Applies changes to the audited table as an application would, on a clock."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url)
        self.table = sa.Table("items", sa.MetaData(), autoload_with=self.engine)
        self.sends = sa.Table("sends", sa.MetaData(), autoload_with=self.engine)
        self.companies = sa.Table("companies", sa.MetaData(), autoload_with=self.engine)
        self.next_id = self.next_send = 1
        self.next_company = 4  # companies 1 to 3 are seeded

    def seed_sends(self, rows: list[dict], sends: list[tuple], clock: datetime) -> list[dict]:
        """Events of seeded `rows`: (item index, event time), written an hour before."""
        made = []
        for index, choice in sends if rows else ():
            item = rows[index % len(rows)]
            made.append({"id": self.next_send, "itemId": item["id"],
                         "at": event_time(choice, clock, item["sentAt"]),
                         "updatedAt": naive(clock - timedelta(hours=1))})
            self.next_send += 1
        return made

    def seed(self, rows: list[dict], clock: datetime) -> list[dict]:
        made = []
        for values in rows:
            created = clock - timedelta(hours=1)
            made.append({"id": self.next_id, **row_values(values, created, clock),
                         "deletedAt": None, "updatedAt": naive(created)})
            self.next_id += 1
        return made

    def watermark(self, table: str = "items") -> datetime | None:
        table = {"items": self.table, "sends": self.sends, "companies": self.companies}[table]
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.max(table.c.updatedAt))).scalar()

    def apply(self, change: tuple, clock: datetime, last_mark: datetime | None,
              last_send: datetime | None = None, last_company: datetime | None = None
              ) -> None:
        kind = change[0]
        if kind.endswith("send"):
            return self.apply_send(change, clock, last_send)
        if kind == "company":
            return self.apply_company(change, clock, last_company)
        when = {"clock": naive(clock), "tie": last_mark,
                "late": None if last_mark is None else last_mark - timedelta(seconds=37)}
        with self.engine.begin() as connection:
            ids = [row[0] for row in connection.execute(
                sa.select(self.table.c.id).order_by(self.table.c.id))]
            if kind == "insert":
                changed = when[change[2]] or naive(clock)
                connection.execute(self.table.insert().values(
                    id=self.next_id, **row_values(change[1], clock - timedelta(minutes=30), clock),
                    deletedAt=None, updatedAt=changed))
                self.next_id += 1
                return
            if not ids:
                return
            row = ids[change[1] % len(ids)]
            where = self.table.c.id == row
            if kind == "update":
                values = row_values(change[2], clock - timedelta(minutes=30), clock)
                values.pop("createdAt")
                connection.execute(self.table.update().where(where).values(
                    **values, updatedAt=when[change[3]] or naive(clock)))
            elif kind == "soft_delete":
                connection.execute(self.table.update().where(where).values(
                    deletedAt=naive(clock), updatedAt=naive(clock)))
            else:
                connection.execute(self.table.delete().where(where))

    def apply_send(self, change: tuple, clock: datetime, last_mark: datetime | None) -> None:
        kind, log = change[0], self.sends
        when = {"clock": naive(clock), "tie": last_mark,
                "late": None if last_mark is None else last_mark - timedelta(seconds=37)}
        with self.engine.begin() as connection:
            items = list(connection.execute(
                sa.select(self.table.c.id, self.table.c.sentAt).order_by(self.table.c.id))) \
                or [(0, None)]
            sends = [row[0] for row in connection.execute(sa.select(log.c.id).order_by(log.c.id))]
            if kind == "send":
                item, sent_at = items[change[1] % len(items)]
                connection.execute(log.insert().values(
                    id=self.next_send, itemId=item, at=event_time(change[2], clock, sent_at),
                    updatedAt=when[change[3]] or naive(clock)))
                self.next_send += 1
            elif sends and kind == "edit_send":  # moved to another item, and re-timed
                item, sent_at = items[change[2] % len(items)]
                connection.execute(log.update().where(
                    log.c.id == sends[change[1] % len(sends)]).values(
                    itemId=item, at=event_time(change[3], clock, sent_at),
                    updatedAt=when[change[4]] or naive(clock)))
            elif sends:
                connection.execute(log.delete().where(log.c.id == sends[change[1] % len(sends)]))

    def apply_company(self, change: tuple, clock: datetime, last_mark: datetime | None
                      ) -> None:
        _, pick, tenant, what, stamp = change
        table = self.companies
        changed = {"clock": naive(clock), "tie": last_mark, "late": None if last_mark is None
                   else last_mark - timedelta(seconds=37)}[stamp] or naive(clock)
        with self.engine.begin() as connection:
            ids = [row[0] for row in connection.execute(sa.select(table.c.id).order_by(
                table.c.id))]
            if what == "insert" or not ids:
                connection.execute(table.insert().values(id=self.next_company, tenantId=tenant,
                                                         updatedAt=changed, createdAt=changed))
                self.next_company += 1
                return
            where = table.c.id == ids[pick % len(ids)]
            if what == "hard_delete":
                connection.execute(table.delete().where(where))
                return
            values = {"tenant": {"tenantId": tenant}, "soft_delete": {"deletedAt": naive(clock)},
                      "restore": {"deletedAt": None},
                      "new_key": {"id": self.next_company}}[what]
            if what == "new_key":
                self.next_company += 1
            connection.execute(table.update().where(where).values(**values, updatedAt=changed))

    def seed_companies(self, tenants: list[str], clock: datetime) -> list[dict]:
        return [{"id": index + 1, "tenantId": tenant, "deletedAt": None,
                 "updatedAt": naive(clock - timedelta(hours=1)),
                 "createdAt": naive(clock - timedelta(hours=1))}
                for index, tenant in enumerate(tenants)]

    def dispose(self):
        self.engine.dispose()


@pytest.fixture(scope="module", params=DATABASES)
def url(request, servers, tmp_path_factory):
    return database_url(request.param, servers, tmp_path_factory.mktemp(request.param))


@PROPERTY
@given(initial=st.lists(fields, max_size=8),
       initial_sends=st.lists(st.tuples(st.integers(0, 2), event_times), max_size=6),
       companies=st.lists(tenants, min_size=3, max_size=3), steps=steps)
def test_an_incremental_run_gives_the_full_runs_answer_after_every_change(
        url, tmp_path_factory, initial, initial_sends, companies, steps):
    folder = tmp_path_factory.mktemp("chains")
    create(url, [])
    mutator = Mutator(url)
    rows = mutator.seed(initial, CLOCK)
    create(url, rows, mutator.seed_sends(rows, initial_sends, CLOCK),
           mutator.seed_companies(companies, CLOCK))
    # The reference: every run --full (the engines agree on a full run: test_parity.py).
    datasets = f"{DATASETS}\n{SENDS}\n{COMPANIES_CREATED}"
    checks = CHECKS + ENTITY_CHECKS + PARENT_CHECKS
    full = Chain(url, folder, "sql", full=True, datasets=datasets, checks=checks)
    chains = [Chain(url, folder, engine, full=False, datasets=datasets, checks=checks)
              for engine in ("pandas", "sql")]
    try:
        clock = CLOCK
        truth = full.run(clock)
        for incremental in chains:
            assert_same_answer(incremental.run(clock), truth, expect_incremental=False)
        for hours, batch in steps:
            # what the runs just made read up to
            marks = [mutator.watermark(name) for name in ("items", "sends", "companies")]
            clock += timedelta(hours=hours)
            for change in batch:
                mutator.apply(change, clock, *marks)
            truth = full.run(clock)
            for incremental in chains:
                # After a run that read no rows, everything is new: the run is a full one.
                assert_same_answer(incremental.run(clock), truth,
                                   expect_incremental=marks[0] is not None)
    finally:
        mutator.dispose()
        for chain in (full, *chains):
            chain.dispose()


def test_the_harness_catches_a_rule_that_forgets_last_runs_violations(tmp_path, monkeypatch):
    """Without last run's violating keys, an unchanged violating row is not examined and its
    violation goes missing: the comparison must fail."""
    from integrity import checks
    from integrity.checks import Increment

    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    create(url, mutator.seed([{"tenantId": "t1", "otherTenant": "t2", "email": None,
                               "status": "SENT", "sent": "null"}], CLOCK))
    incremental = Chain(url, tmp_path, "sql", full=False)
    full = Chain(url, tmp_path, "sql", full=True)
    assert_same_answer(incremental.run(CLOCK), full.run(CLOCK), expect_incremental=False)
    later = CLOCK + timedelta(hours=1)
    mutator.apply(("insert", {"tenantId": "t1", "otherTenant": "t1", "email": None,
                              "status": "SENT", "sent": "fine"}, "clock"), later, None)
    assert_same_answer(incremental.run(later), full.run(later), expect_incremental=True)
    monkeypatch.setattr(checks, "Increment", lambda **given: Increment(**{**given, "keys": []}))
    with pytest.raises(AssertionError):
        assert_same_answer(incremental.run(later), full.run(later), expect_incremental=True)
    for chain in (incremental, full):
        chain.dispose()
    mutator.dispose()


# ---------------------------------------------------------------------------
# One scenario, spelled out: what a nightly run examines and says.


def scenario(tmp_path):
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    fine = {"tenantId": "t1", "otherTenant": "t1", "email": None, "status": "SENT",
            "sent": "fine"}
    rows = mutator.seed([fine] * 6, CLOCK)
    for row in rows[:5]:  # long unchanged; row 6 changed last, an hour before the clock
        row["updatedAt"] = naive(CLOCK - timedelta(days=1))
    rows[1].update(sentAt=None)                                   # sent_valid: null
    rows[2].update(otherTenant="t2")                              # tenants_agree
    rows[3].update(email="ann@x.com")
    rows[4].update(email=" ANN@x.com")                            # emails_unique: surplus 5
    create(url, rows)
    return url, mutator


def test_a_nightly_run_examines_what_changed_and_reports_the_whole_table(tmp_path):
    url, mutator = scenario(tmp_path)
    chain = Chain(url, tmp_path, "sql", full=False)
    first = chain.run(CLOCK)
    assert {c.id: (c.violation_count, sorted(c.violation_keys)) for c in first.checks} == {
        "sent_valid": (1, [(2,)]), "tenants_agree": (1, [(3,)]), "emails_unique": (1, [(5,)]),
        "double_sends": (4, [(3,), (4,), (5,), (6,)])}  # all sent at 11:05: 1 is first
    assert first.check("sent_valid").notes == [
        "ran in full (items): no earlier run of this check on this target"]
    later = CLOCK + timedelta(days=1)
    with mutator.engine.begin() as connection:  # row 2 fixed, row 3 deleted, row 6 broken
        items = mutator.table
        connection.execute(items.update().where(items.c.id == 2).values(
            sentAt=naive(CLOCK), updatedAt=naive(later)))
        connection.execute(items.delete().where(items.c.id == 3))
        connection.execute(items.update().where(items.c.id == 6).values(
            otherTenant="t2", updatedAt=naive(later)))
    second = chain.run(later)
    assert {c.id: (c.status, c.violation_count, c.population, sorted(c.violation_keys))
            for c in second.checks} == {
        "sent_valid": ("pass", 0, 5, []), "tenants_agree": ("fail", 1, 5, [(6,)]),
        "emails_unique": ("fail", 1, 5, [(5,)]),
        "double_sends": ("fail", 3, 5, [(4,), (5,), (6,)])}  # 2 now sends alone, 3 is gone
    since = "2026-03-01T10:59:00Z"  # the first run's watermark (11:00) less the overlap
    assert second.check("sent_valid").notes == [
        f"incremental: examined 2 changed rows of 5 (updatedAt ≥ {since} or null, and the 1 "
        f"key that violated in run 1); counts and keys are the whole table's, every other "
        f"row keeps its status of run 1"]
    # Rows 2 and 6 changed; row 3 violated but is gone: its violation resolves.
    assert second.check("tenants_agree").notes[0].startswith(
        "incremental: examined 2 changed rows of 5")
    assert [len(second.check("tenants_agree").lifecycle.resolved),
            len(second.check("tenants_agree").lifecycle.new)] == [1, 1]
    assert second.check("emails_unique").notes == [
        f"incremental: examined 1 changed row of 5 (updatedAt ≥ {since} or null, and the 1 "
        f"key that violated in run 1); counts and keys are the whole table's, every other "
        f"row keeps its status of run 1; its 1 key was looked up against the whole table "
        f"(a scan: no index holds a normalised key)"]  # rows 2 and 6 have no e-mail: no key
    assert [(mark.dataset, mark.column, mark.value, mark.read_in_full)
            for mark in second.watermarks] == [
        ("items", "updatedAt", {"time": "2026-03-02T12:00:00+00:00"}, False)]
    chain.dispose()
    mutator.dispose()


def test_a_double_click_straddling_the_watermark_is_found(tmp_path, monkeypatch):
    """Row 7 (tenant t2) sent long before the watermark; a second send of t2 30 seconds
    later arrives after it. The changed row's partition is read whole, so the pair is a
    burst; a rule that cut bursts among the examined rows alone would miss it, and the
    comparison with a full run catches that."""
    from integrity.checks import duplicates

    url, mutator = scenario(tmp_path)
    sent = CLOCK - timedelta(hours=3)

    def send(row: int, at: datetime, changed: datetime) -> None:
        with mutator.engine.begin() as connection:
            connection.execute(mutator.table.insert().values(
                id=row, tenantId="t2", otherTenant="t2", email=None, status="SENT",
                sentAt=naive(at), createdAt=naive(at), updatedAt=naive(changed)))

    send(7, sent, CLOCK - timedelta(days=1))
    full = Chain(url, tmp_path, "sql", full=True)
    right = [Chain(url, tmp_path, engine, full=False) for engine in ("pandas", "sql")]
    wrong = Chain(url, tmp_path, "pandas", full=False)
    first = full.run(CLOCK)
    for chain in (*right, wrong):
        assert_same_answer(chain.run(CLOCK), first, expect_incremental=False)
    later = CLOCK + timedelta(days=1)
    send(8, sent + timedelta(seconds=30), later)
    truth = full.run(later)
    sends = truth.check("double_sends")
    assert (sends.violation_count, sorted(sends.violation_keys), len(sends.lifecycle.new),
            len(sends.lifecycle.persisting)) == (5, [(3,), (4,), (5,), (6,), (8,)], 1, 4)
    for chain in right:
        mine = chain.run(later)
        assert_same_answer(mine, truth, expect_incremental=True)
        assert mine.check("double_sends").notes == [
            # row 8, and 3 to 6 that were surplus; their two partitions hold every row
            "incremental: examined 5 changed rows of 8 (updatedAt ≥ 2026-03-01T10:59:00Z or "
            "null, and the 4 keys that violated in run 1); counts and keys are the whole "
            "table's, every other row keeps its status of run 1; their 2 partitions "
            "(tenantId, status) were read whole and cut into bursts again (an index on those "
            "columns makes it cheap)"]
    monkeypatch.setattr(duplicates, "same_partitions",
                        lambda rows, examined, columns: (rows[examined], 1))
    with pytest.raises(AssertionError):
        assert_same_answer(wrong.run(later), truth, expect_incremental=True)
    for chain in (full, *right, wrong):
        chain.dispose()
    mutator.dispose()


def entities(tmp_path):
    """Five items, each counting one send and keeping its sentAt S, but item 4 counts a
    send it does not have. Send 3, the newest, was written within the overlap of the
    event log's watermark."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    sent = CLOCK - timedelta(hours=2)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine", "sendCount": 1}] * 5, CLOCK)
    for row in rows:
        row.update(sentAt=naive(sent), updatedAt=naive(CLOCK - timedelta(days=2)))
    rows[3]["updatedAt"] = naive(CLOCK - timedelta(days=1))
    sends = [{"id": item, "itemId": item, "at": naive(sent - timedelta(minutes=1)),
              "updatedAt": naive(CLOCK - timedelta(days=2))} for item in (1, 2, 3, 5)]
    sends[2]["updatedAt"] = naive(CLOCK - timedelta(hours=1))
    create(url, rows, sends)
    mutator.next_send = 6
    return url, mutator, sent


def test_an_entity_is_judged_again_when_its_row_or_its_events_change(tmp_path, monkeypatch):
    from integrity.checks.counters import ByEntity

    url, mutator, sent = entities(tmp_path)
    datasets, checks = f"{DATASETS}\n{SENDS}", ENTITY_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    right = [Chain(url, tmp_path, engine, False, datasets, checks)
             for engine in ("pandas", "sql")]
    # A wrong rule: the entities that had events within the overlap are not recorded.
    wrong = Chain(url, tmp_path, "sql", False, datasets, checks)
    first = full.run(CLOCK)
    assert [(c.id, c.violation_keys) for c in first.checks] == [("counted", [(4,)]),
                                                                ("preserved", [])]
    for chain in right:
        assert_same_answer(chain.run(CLOCK), first, expect_incremental=False)
    assert [mark.value for mark in first.watermarks] == [
        {"time": "2026-02-28T12:00:00+00:00"},
        {"time": "2026-03-01T11:00:00+00:00", "settled": 3, "unsettled": {"itemId": ["3"]}}]
    with monkeypatch.context() as patched:
        recorded = ByEntity.watermark_extras
        patched.setattr(ByEntity, "watermark_extras", lambda self, db, name, since: {
            **recorded(self, db, name, since), **({"unsettled": {"itemId": []}}
                                                  if name == "sends" else {})})
        wrong.run(CLOCK)
    later = CLOCK + timedelta(days=1)
    with mutator.engine.begin() as connection:
        items, log = mutator.table, mutator.sends
        # item 2 counts two sends; item 1 sends again a minute after sentAt (a re-send
        # that moved it); send 3 moves from item 3 to item 4, committed late.
        connection.execute(items.update().where(items.c.id == 2).values(
            sendCount=2, updatedAt=naive(later)))
        connection.execute(log.insert().values(id=6, itemId=1, at=naive(
            sent + timedelta(minutes=1)), updatedAt=naive(later)))
        connection.execute(log.update().where(log.c.id == 3).values(
            itemId=4, updatedAt=naive(CLOCK - timedelta(hours=1, seconds=30))))
    truth = full.run(later)
    assert [(c.id, c.violation_keys) for c in truth.checks] == [
        ("counted", [(2,), (3,)]), ("preserved", [(1,)])]
    for chain in right:
        mine = chain.run(later)
        assert_same_answer(mine, truth, expect_incremental=True)
        # 1 and 4 have changed events, 2 a changed row (and 4 is at the watermark and
        # violated), 3 had send 3 within the overlap; 5 keeps its status.
        assert mine.check("counted").notes == [
            "incremental: examined 4 entities of 5, each with all its events: those changed "
            "(updatedAt ≥ 2026-02-28T11:59:00Z or null, and the 1 key that violated in run "
            "1), with events changed (updatedAt ≥ 2026-03-01T10:59:00Z or null), or with "
            "events within the overlap when run 1 read sends; counts and keys are the whole "
            "table's, every other entity keeps its status of run 1"]
    with pytest.raises(AssertionError):  # item 3 lost its send without a trace
        assert_same_answer(wrong.run(later), truth, expect_incremental=True)
    # A hard delete of item 5's only send, older than the overlap: nothing in item 5 or
    # the log changed, but the count of such sends tells.
    with mutator.engine.begin() as connection:
        connection.execute(mutator.sends.delete().where(mutator.sends.c.id == 5))
    truth = full.run(later + timedelta(hours=1))
    assert truth.check("counted").violation_keys == [(2,), (3,), (5,)]
    for chain in right:
        mine = chain.run(later + timedelta(hours=1))
        assert_same_answer(mine, truth, expect_incremental=False)
        assert mine.check("counted").notes == [
            "ran in full (sends): sends holds 3 events older than the overlap where run 2 "
            "counted 4: one was deleted or changed since, and an event deleted or moved to "
            "another entity leaves nothing a watermark sees"]
    for chain in (full, *right, wrong):
        chain.dispose()
    mutator.dispose()


@pytest.mark.parametrize("plain", ["items", "sends"])
def test_an_entity_check_runs_in_full_when_one_of_its_datasets_is_not_incremental(
        tmp_path, plain):
    url, mutator, _ = entities(tmp_path)
    datasets = {"items": DATASETS, "sends": SENDS}
    datasets[plain] = f"{plain}: {{table: {plain}, key: id}}"
    chain = Chain(url, tmp_path, "sql", False, "\n".join(datasets.values()), ENTITY_CHECKS)
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        result = chain.run(now)
    assert [c.notes for c in result.checks] == [[
        f"ran in full ({plain}): {plain} declares no `incremental:`, so what changes there "
        f"would go unseen"]] * 2
    chain.dispose()
    mutator.dispose()


def test_a_child_is_judged_again_when_its_parent_changes_and_a_hard_delete_runs_in_full(
        tmp_path, monkeypatch):
    from integrity.checks.orphans import ByParent

    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine", "companyId": company}
                         for company in (1, 2, 3, 4, 9)], CLOCK)
    for row in rows:
        row["updatedAt"] = naive(CLOCK - timedelta(days=2))
    rows[4]["updatedAt"] = naive(CLOCK - timedelta(days=1))
    companies = mutator.seed_companies(["t1", "t1", "t2", "t1"], CLOCK - timedelta(days=2))
    for company in companies[2:]:  # 3 and 4 changed last, within the overlap
        company["updatedAt"] = naive(CLOCK - timedelta(hours=1))
    create(url, rows, companies=companies)
    datasets, checks = f"{DATASETS}\n{COMPANIES}", PARENT_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    right = [Chain(url, tmp_path, engine, False, datasets, checks)
             for engine in ("pandas", "sql")]
    wrong = Chain(url, tmp_path, "pandas", False, datasets, checks)

    def step(now, expected, notes, expect_incremental=True):
        truth = full.run(now)
        assert [(c.id, c.violation_keys) for c in truth.checks] == expected
        for chain in right:
            mine = chain.run(now)
            assert_same_answer(mine, truth, expect_incremental)
            assert mine.check("has_company").notes == notes
        return truth

    first = step(CLOCK, [("has_company", [(5,)]), ("company_tenant", [(3,)])], [
        "ran in full (companies): no earlier run of this check on this target"], False)
    assert first.watermarks[1].value == {"time": "2026-03-01T11:00:00+00:00", "settled": 2,
                                         "unsettled": {"keys id": [["3"], ["4"]]}}
    with monkeypatch.context() as patched:  # a wrong rule: no parents within the overlap
        recorded = ByParent.watermark_extras
        patched.setattr(ByParent, "watermark_extras", lambda self, db, name, since: {
            **recorded(self, db, name, since), **({"unsettled": {"keys id": []}}
                                                  if name == "companies" else {})})
        wrong.run(CLOCK)
    later = CLOCK + timedelta(days=1)
    table = mutator.companies
    with mutator.engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == 3).values(
            tenantId="t1", updatedAt=naive(later)))                 # item 3 agrees now
        connection.execute(table.delete().where(table.c.id == 4))   # item 4 dangles
        connection.execute(table.insert().values(id=9, tenantId="t1", updatedAt=naive(later)))
    # 3 and 5 reference a changed company, 4 one within the overlap (since deleted), 5 is
    # at the watermark and violated; 1 and 2 keep their status.
    truth = step(later, [("has_company", [(4,)]), ("company_tenant", [])], [
        "incremental: examined 3 changed rows of 5 (updatedAt ≥ 2026-02-28T11:59:00Z or "
        "null, and the 1 key that violated in run 1), and those referencing a parent "
        "changed (updatedAt ≥ 2026-03-01T10:59:00Z or null) or within the overlap when "
        "run 1 read companies; counts and keys are the whole table's, every other row "
        "keeps its status of run 1"])
    with pytest.raises(AssertionError):  # item 4's company went without a trace
        assert_same_answer(wrong.run(later), truth, expect_incremental=True)
    # A soft delete of company 2, older than the overlap: a count cannot tell it from a
    # hard delete, so the run is a full one; so is it after a hard delete of company 1.
    with mutator.engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == 2).values(
            deletedAt=naive(later), updatedAt=naive(later + timedelta(hours=1))))
    step(later + timedelta(hours=1), [("has_company", [(2,), (4,)]), ("company_tenant", [])], [
        "ran in full (companies): companies holds 1 row older than the overlap where run 2 "
        "counted 2: one was deleted or changed since, and a parent deleted or given another "
        "key leaves nothing a watermark sees"], False)
    with mutator.engine.begin() as connection:
        connection.execute(table.delete().where(table.c.id == 1))
    step(later + timedelta(hours=2), [("has_company", [(1,), (2,), (4,)]),
                                      ("company_tenant", [])], [
        "ran in full (companies): companies holds 2 rows older than the overlap where run 3 "
        "counted 3: one was deleted or changed since, and a parent deleted or given another "
        "key leaves nothing a watermark sees"], False)
    for chain in (full, *right, wrong):
        chain.dispose()
    mutator.dispose()


@pytest.mark.parametrize("kind", DATABASES)
def test_with_a_created_column_an_updated_parent_stays_incremental(kind, servers, tmp_path):
    url = database_url(kind, servers, tmp_path)
    create(url, [])
    mutator = Mutator(url)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine", "companyId": company}
                         for company in (1, 2, 3, 4, 9)], CLOCK - timedelta(days=2))
    companies = mutator.seed_companies(["t1"] * 4, CLOCK - timedelta(days=2))
    # the companies' watermark, a day later (company 7, unused): 1 to 4 are old
    companies.append({**companies[0], "id": 7, "updatedAt": naive(CLOCK - timedelta(days=1)),
                      "createdAt": naive(CLOCK - timedelta(days=1))})
    create(url, rows, companies=companies)
    datasets, checks = f"{DATASETS}\n{COMPANIES_CREATED}", PARENT_CHECKS
    full = Chain(url, tmp_path, "sql", True, datasets, checks)
    chains = [Chain(url, tmp_path, engine, False, datasets, checks)
              for engine in ("pandas", "sql")]
    table = mutator.companies

    def step(now, change, expected, incremental):
        with mutator.engine.begin() as connection:
            change(connection)
        truth = full.run(now)
        assert [(c.id, c.violation_keys) for c in truth.checks] == expected
        for chain in chains:
            mine = chain.run(now)
            assert_same_answer(mine, truth, incremental)
            notes = mine.check("has_company").notes
            assert notes[-1].startswith("incremental: examined" if incremental else
                                        "ran in full (companies): "), notes
            assert incremental or now == CLOCK or "deleted or given another key" in notes[-1]
        return truth

    first = step(CLOCK, lambda connection: None, [("has_company", [(5,)]),
                                                  ("company_tenant", [])], False)
    born = first.watermarks[1].value["born"]["keys id"]
    assert (born["created"], born["count"]) == ("createdAt", 4)
    # Company 2 soft-deleted, company 3 moved to another tenant: old rows, updated — their
    # items are judged again, the rest keep their status; no full run.
    later = CLOCK + timedelta(days=1)
    step(later, lambda connection: (
        connection.execute(table.update().where(table.c.id == 2).values(
            deletedAt=naive(later), updatedAt=naive(later))),
        connection.execute(table.update().where(table.c.id == 3).values(
            tenantId="t2", updatedAt=naive(later)))),
        [("has_company", [(2,), (5,)]), ("company_tenant", [(3,)])], True)
    # Company 4 given another key: as many rows as before, another checksum — in full.
    step(later + timedelta(hours=1), lambda connection: connection.execute(
        table.update().where(table.c.id == 4).values(id=20, updatedAt=naive(later))),
        [("has_company", [(2,), (4,), (5,)]), ("company_tenant", [(3,)])], False)
    step(later + timedelta(hours=2), lambda connection: None,
         [("has_company", [(2,), (4,), (5,)]), ("company_tenant", [(3,)])], True)
    # Company 1 hard-deleted: one row fewer — in full.
    step(later + timedelta(hours=3), lambda connection: connection.execute(
        table.delete().where(table.c.id == 1)),
        [("has_company", [(1,), (2,), (4,), (5,)]), ("company_tenant", [(3,)])], False)
    for chain in (full, *chains):
        chain.dispose()
    mutator.dispose()


def test_a_day_that_changed_more_than_full_above_runs_in_full(tmp_path):
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create(url, [])
    mutator = Mutator(url)
    rows = mutator.seed([{"tenantId": "t1", "otherTenant": "t1", "email": None,
                          "status": "SENT", "sent": "fine"}] * 21, CLOCK - timedelta(days=1))
    rows[-1]["updatedAt"] = naive(CLOCK - timedelta(hours=1))  # the watermark, alone
    create(url, rows)
    datasets = ("items: {table: items, key: id, incremental: {changed: updatedAt, "
                "overlap: 1m, full_above: 20%}}")
    chain = Chain(url, tmp_path, "sql", False, datasets, CHECKS)

    def day(now, ids):
        table = mutator.table
        with mutator.engine.begin() as connection:
            connection.execute(table.update().where(table.c.id.in_(ids)).values(
                email="x@x.com", updatedAt=naive(now)))
        return chain.run(now).check("sent_valid").notes[-1]

    assert day(CLOCK, []).startswith("ran in full (items): no earlier run")
    # 3 rows and the one at the watermark: 19%, not more than 20%
    assert day(CLOCK + timedelta(days=1), [1, 2, 3]).startswith(
        "incremental: examined 4 changed rows of 21")
    # the 3 rows of the last run are within its overlap: 8 rows to look at
    assert day(CLOCK + timedelta(days=1, minutes=1), [5, 6, 7, 8, 9]) == (
        "ran in full (items): 8 of about 21 rows changed since run 2 (38%), more than "
        "full_above 20%: reading the table once costs less")
    chain.dispose()
    mutator.dispose()


def test_full_full_every_and_a_changed_audit_run_in_full(tmp_path):
    url, mutator = scenario(tmp_path)
    datasets = ("items: {table: items, key: id, incremental: {changed: updatedAt, "
                "full_every: 2d, full_above: 100%}}")
    audit = parse_audit(audit_text(url, datasets, CHECKS), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")

    def notes(now, **options):
        result = run_audit(audit, now=now, history=store, **options)
        store.apply(result)
        return [result.check("sent_valid").notes[-1], result.watermarks[0].read_in_full]

    day = timedelta(days=1)
    assert notes(CLOCK) == [
        "ran in full (items): full_every 2d: never read in full before", True]
    assert notes(CLOCK + day)[0].startswith("incremental: examined 2 changed rows of 6")
    assert notes(CLOCK + 2 * day) == [
        "ran in full (items): full_every 2d: last read in full at 2026-03-01T12:00:00Z", True]
    assert notes(CLOCK + 2 * day, full=True) == ["ran in full (items): --full", True]
    assert notes(CLOCK + day) == ["ran in full (items): this run's now is before run 4's", True]
    edited = parse_audit(audit_text(url, datasets, CHECKS) + "# edited\n",
                         file=str(tmp_path / "a.yml"))
    result = run_audit(edited, now=CLOCK + 3 * day, history=store)
    assert result.check("sent_valid").notes == [
        "ran in full (items): the audit file changed since run 5"]
    plain = run_audit(audit, now=CLOCK + 3 * day)
    assert plain.check("sent_valid").notes == [
        "ran in full (items): no run history to start from"]
    store.engine.dispose()
    mutator.dispose()


def test_checks_without_an_incremental_rule_run_in_full_and_say_so(tmp_path):
    url, mutator = scenario(tmp_path)
    checks = CHECKS + """\
- {id: fresh, kind: freshness, dataset: items, time: updatedAt, max_age: 30d}
- {id: same_tenant, kind: cross_tenant, dataset: items, tenant_column: tenantId,
   reference: id, parent: items, parent_tenant_column: otherTenant}
- {id: stamped_later, kind: timestamp_valid, dataset: items, column: sentAt,
   where: {createdAt: {until: 1h}}}
"""
    audit = parse_audit(audit_text(url, DATASETS, checks), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        result = run_audit(audit, now=now, history=store)
        store.apply(result)
    assert {c.id: c.notes[-1] for c in result.checks if c.id not in {
        "sent_valid", "tenants_agree", "emails_unique", "double_sends"}} == {
        "fresh": "ran in full (items): freshness has no incremental rule",
        "same_tenant": "ran in full (items): its children and parents are one dataset",
        "stamped_later": "ran in full (items): its filter on createdAt (until) lets unchanged "
                         "rows in as time passes"}
    store.engine.dispose()
    mutator.dispose()


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_appended_ids_and_a_missing_change_column(tmp_path, sqlite_db, engine):
    sqlite_db.tables(log=[{"id": n, "actor": "t1", "resource": "t1" if n != 2 else "t2"}
                          for n in (1, 2, 3)])
    checks = """\
- {id: same, kind: cross_tenant, dataset: log, tenant_column: actor,
   other_tenant_column: resource}
- {id: once, kind: duplicates, dataset: log, columns: [resource]}
"""
    audit = parse_audit(audit_text(sqlite_db.url, "log: {table: log, key: id, incremental: "
                                   "{appended: id, full_above: 100%}}", checks), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    first = run_audit(audit, now=CLOCK, history=store, engine=engine)
    store.apply(first)
    assert first.watermarks[0].value == {"number": "3"}
    assert first.check("once").violation_keys == [(3,)]
    sqlite_db.execute("INSERT INTO log VALUES (4, 't2', 't1')", "DELETE FROM log WHERE id = 2")
    second = run_audit(audit, now=CLOCK, history=store, engine=engine)
    same, once = second.check("same"), second.check("once")
    assert (same.violation_count, same.violation_keys, same.population) == (1, [(4,)], 3)
    # id ≥ 3 (no overlap) and the key that violated: rows 3 and 4 (2 is gone)
    assert same.notes[0].startswith("incremental: examined 2 changed rows of 3 (id ≥ 3 or "
                                    "null, and the 1 key that violated in run 1)")
    assert (once.violation_count, once.violation_keys) == (2, [(3,), (4,)])
    assert once.notes[0].endswith("its 1 key was looked up against the whole table (an "
                                  "index on the key columns makes it cheap)")
    typo = parse_audit(audit_text(sqlite_db.url, "log: {table: log, key: id, incremental: "
                                  "{appended: ID, overlap: 5m}}", checks), file="a.yml")
    broken = run_audit(typo, now=CLOCK, engine=engine).check("same")
    assert broken.status == "error"
    assert broken.error.startswith("datasets.log.incremental: ")
    assert "'ID'" in broken.error and "did you mean 'id'?" in broken.error
    wrong = parse_audit(audit_text(sqlite_db.url, "log: {table: log, key: id, incremental: "
                                   "{appended: id, overlap: 5m, full_above: 100%}}", checks), file="a.yml")
    assert run_audit(wrong, now=CLOCK, engine=engine).check("same").error == (
        "datasets.log.incremental.overlap: id holds numbers, so the overlap is a number of "
        "them, not a duration")
    store.engine.dispose()


def test_the_incremental_setting_is_validated_where_it_is_written():
    text = audit_text("sqlite:///x.db", """\
        a: {table: a, key: id, incremental: {chnaged: updatedAt}}
        b: {table: b, key: id, incremental: {changed: updatedAt, appended: id}}
        c: {table: c, key: id, incremental: {appended: id, overlap: soon}}
        """, """\
        - {kind: timestamp_valid, dataset: a, column: x}
        """)
    with pytest.raises(ConfigErrors) as raised:
        parse_audit(text, file="nightly.yml")
    assert str(raised.value).splitlines()[:3] == [
        "nightly.yml:4:40: datasets.a.incremental.chnaged: unknown setting 'chnaged'; did you "
        "mean 'changed'? (allowed here: changed, appended, created, overlap, full_above, "
        "full_every)",
        "nightly.yml:5:26: datasets.b.incremental: give one of changed (a column set on every "
        "change) or appended (a growing id of an append-only table)",
        "nightly.yml:6:54: datasets.c.incremental.overlap: invalid duration 'soon': use e.g. "
        "30s, 5m, 1h, 7d"]
    text = audit_text("sqlite:///x.db", """\
        d: {table: d, incremental: {appended: id}}
        e: {file: e.csv, key: id, incremental: {appended: id}}
        """, """\
        - {kind: timestamp_valid, dataset: d, column: x}
        - {kind: timestamp_valid, dataset: e, column: x}
        """)
    with pytest.raises(ConfigErrors) as raised:
        parse_audit(text, file="nightly.yml")
    assert str(raised.value).splitlines() == [
        "nightly.yml:4:17: datasets.d.incremental: incremental needs the dataset's `key:`: the "
        "rows that violated in the last run are looked up by it",
        "nightly.yml:5:29: datasets.e.incremental: incremental applies to a table or a query, "
        "not to files (they are read whole)"]


def test_full_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    url, mutator = scenario(tmp_path)
    audit = tmp_path / "nightly.yml"
    audit.write_text(audit_text(url, DATASETS, CHECKS))
    history = f"sqlite:///{tmp_path / 'h.sqlite'}"
    said = []
    for options in ([], [], ["--full"]):
        outcome = CliRunner().invoke(main, ["run", str(audit), "-o", str(tmp_path / "out"),
                                            "--history", history, "--now", CLOCK.isoformat(),
                                            *options])
        assert outcome.exit_code == 1, outcome.output
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        said.append({check["notes"][-1].split(" (")[0].split(" examined")[0]
                     for check in report["checks"]})
    assert said == [{"ran in full"}, {"incremental:"}, {"ran in full"}]
    assert "ran in full (items): --full" in report["checks"][0]["notes"]
    mutator.dispose()


# ---------------------------------------------------------------------------
# Reconciliation: only the touched buckets are re-aggregated, each over all its rows.

INCREMENTAL = "incremental: {changed: updatedAt, overlap: 1m, full_above: 100%}"
LEDGER = f"""\
orders: {{table: orders, key: id, {INCREMENTAL}}}
payments: {{table: payments, key: id, {INCREMENTAL}}}
"""
# The same, telling inserts from updates: an old row updated within its bucket (an amount,
# a soft delete) leaves the reconciliation incremental; moved or deleted, it does not.
LEDGER_CREATED = LEDGER.replace("changed: updatedAt,", "changed: updatedAt, created: createdAt,")
# Per tenant and day: the amounts of live orders against the payments; per tenant: the
# number of orders against the number of payments, within 10%; and the median amounts.
LEDGER_CHECKS = """\
- {id: paid, kind: reconciliation,
   left: {dataset: orders, measure: sum(amount), by: [tenantId], per_day: at,
          where: {deletedAt: null}},
   right: {dataset: payments, measure: sum(amount), by: [payer], per_day: at}}
- {id: counted, kind: reconciliation, tolerance: 10%,
   left: {dataset: orders, by: [tenantId]}, right: {dataset: payments, by: [payer]}}
- {id: medians, kind: reconciliation,
   left: {dataset: orders, measure: median(amount), by: [tenantId]},
   right: {dataset: payments, measure: median(amount), by: [payer]}}
"""
RECONCILED = ("paid", "counted", "medians")
# Why a reconciliation runs in full although both datasets ran before: a row older than
# the overlap was deleted or changed (the property test does both), or a dataset was empty.
LEDGER_SEEN_CHANGING = tuple(f"ran in full ({name}): {name} {what}"
                             for name in ("orders", "payments")
                             for what in ("holds ", "had no rows in run "))
# Or the last run recorded no count of its buckets: a watermark went back (its newest row
# was hard-deleted), so it could not count the next run's (`went_back`).
LEDGER_NOT_COUNTED = "recorded no count of the buckets older than the overlap"


def create_ledger(url: str, orders: list[dict] = (), payments: list[dict] = ()) -> None:
    metadata = sa.MetaData()
    tables = {}
    for name, tenant in (("orders", "tenantId"), ("payments", "payer")):
        tables[name] = sa.Table(
            name, metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column(tenant, sa.String(8)), sa.Column("amount", sa.Integer),
            *[sa.Column(column, TIME) for column in ("at", "deletedAt", "updatedAt",
                                                     "createdAt")])
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        for name, rows in (("orders", orders), ("payments", payments)):
            if rows:
                connection.execute(tables[name].insert(), list(rows))
    engine.dispose()


def assert_same_reconciliation(incremental, full, expect_incremental: bool) -> None:
    assert [c.id for c in incremental.checks] == [c.id for c in full.checks]
    for mine, theirs in zip(incremental.checks, full.checks):
        assert mine.status != "error", mine.error
        assert answer(mine) == answer(theirs), mine.id
        ran = [note for note in mine.notes if note.startswith("incremental: re-aggregated")]
        if expect_incremental and not ran:
            assert mine.notes[-1].startswith(LEDGER_SEEN_CHANGING) or mine.notes[-1].endswith(
                LEDGER_NOT_COUNTED), (mine.id, mine.notes)
            continue
        assert bool(ran) == expect_incremental, (mine.id, mine.notes)


class Ledger:
    """Orders and payments written as an application would, on a clock."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url)
        self.tables = {name: sa.Table(name, sa.MetaData(), autoload_with=self.engine)
                       for name in ("orders", "payments")}
        self.next_id = 1

    def row(self, table: str, tenant: str, day: int, amount: int, changed) -> dict:
        self.next_id += 1
        return {"id": self.next_id - 1, "tenantId" if table == "orders" else "payer": tenant,
                "amount": amount, "at": naive(CLOCK + timedelta(days=day, hours=3)),
                "deletedAt": None, "updatedAt": changed, "createdAt": changed}

    def watermark(self, table: str) -> datetime | None:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.max(
                self.tables[table].c.updatedAt))).scalar()

    def apply(self, change: tuple, clock: datetime, marks: dict) -> None:
        kind, table = change[0], change[1]
        rows = self.tables[table]
        stamp = change[-1]
        mark = marks[table]
        changed = {"clock": naive(clock), "tie": mark,
                   "late": None if mark is None else mark - timedelta(seconds=37)}[stamp] \
            or naive(clock)
        tenant = "tenantId" if table == "orders" else "payer"
        with self.engine.begin() as connection:
            ids = [row[0] for row in connection.execute(sa.select(rows.c.id).order_by(
                rows.c.id))]
            if kind == "insert" or not ids:
                _, _, who, day, amount, _ = change if kind == "insert" else (
                    None, None, "t1", 0, 5, None)
                connection.execute(rows.insert().values(**self.row(table, who, day, amount,
                                                                   changed)))
                return
            if kind == "pair":  # an order and its payment: their buckets balance
                _, _, who, day, amount, _ = change
                other = self.tables["payments" if table == "orders" else "orders"]
                connection.execute(other.insert().values(**self.row(
                    other.name, who, day, amount, changed)))
                connection.execute(rows.insert().values(**self.row(table, who, day, amount,
                                                                   changed)))
                return
            where = rows.c.id == ids[change[2] % len(ids)]
            if kind == "move":  # to another tenant or day: another bucket
                _, _, _, who, day, amount, _ = change
                connection.execute(rows.update().where(where).values(**{
                    tenant: who, "amount": amount,
                    "at": naive(CLOCK + timedelta(days=day, hours=3)), "updatedAt": changed}))
            elif kind == "soft_delete":
                connection.execute(rows.update().where(where).values(
                    deletedAt=naive(clock), updatedAt=changed))
            else:
                connection.execute(rows.delete().where(where))

    def dispose(self):
        self.engine.dispose()


ledger_tenants = st.sampled_from([None, "t1", "t2", "t3", "t4", "t5", "t6"])
days = st.integers(0, 2)
amounts = st.sampled_from([0, 5, 7, 10, 12])
sides = st.sampled_from(["orders", "payments"])
ledger_changes = st.one_of(
    st.tuples(st.just("insert"), sides, ledger_tenants, days, amounts, when),
    st.tuples(st.just("pair"), sides, ledger_tenants, days, amounts, when),
    st.tuples(st.just("move"), sides, st.integers(0, 20), ledger_tenants, days, amounts, when),
    st.tuples(st.just("soft_delete"), sides, st.integers(0, 20), when),
    st.tuples(st.just("hard_delete"), sides, st.integers(0, 20), when),
)
ledger_steps = st.lists(st.tuples(st.integers(1, 36),
                                  st.lists(ledger_changes, min_size=1, max_size=3)),
                        min_size=2, max_size=4)
# Most seeded orders come with their payment, so that most buckets balance.
# Seeded rows were written two days or one hour before the first run (then the newest,
# within the overlap of its watermark).
seeded = st.lists(st.tuples(st.sampled_from(["orders", "payments", "both", "both"]),
                            ledger_tenants, days, amounts, st.sampled_from([48, 48, 1])),
                  max_size=12)


@pytest.mark.parametrize("datasets", [LEDGER, LEDGER_CREATED], ids=["changed", "created"])
@PROPERTY
@given(initial=seeded, steps=ledger_steps)
def test_an_incremental_reconciliation_gives_the_full_runs_answer_after_every_change(
        url, tmp_path_factory, datasets, initial, steps):
    folder = tmp_path_factory.mktemp("ledgers")
    create_ledger(url)
    ledger = Ledger(url)
    seed = {"orders": [], "payments": []}
    for which, tenant, day, amount, hours in initial:
        for table in (["orders", "payments"] if which == "both" else [which]):
            seed[table].append(ledger.row(table, tenant, day, amount,
                                          naive(CLOCK - timedelta(hours=hours))))
    create_ledger(url, seed["orders"], seed["payments"])
    full = Chain(url, folder, "sql", full=True, datasets=datasets, checks=LEDGER_CHECKS)
    chains = [Chain(url, folder, engine, full=False, datasets=datasets, checks=LEDGER_CHECKS)
              for engine in ("pandas", "sql")]
    try:
        clock = CLOCK
        truth = full.run(clock)
        for incremental in chains:
            assert_same_reconciliation(incremental.run(clock), truth, expect_incremental=False)
        for hours, batch in steps:
            marks = {name: ledger.watermark(name) for name in ("orders", "payments")}
            clock += timedelta(hours=hours)
            for change in batch:
                ledger.apply(change, clock, marks)
            truth = full.run(clock)
            for incremental in chains:
                assert_same_reconciliation(incremental.run(clock), truth,
                                           expect_incremental=None not in marks.values())
    finally:
        ledger.dispose()
        for chain in (full, *chains):
            chain.dispose()


def ledger(tmp_path):
    """Tenants t1 to t4 balance on day 0; order 9 (t4) and payment 7 (t3) were written
    last, within the overlap of their watermarks, the others two days before."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_ledger(url)
    books = Ledger(url)
    old, recent = naive(CLOCK - timedelta(days=2)), naive(CLOCK - timedelta(hours=1))
    orders = [books.row("orders", tenant, 0, amount, old)
              for tenant, amount in (("t1", 5), ("t1", 7), ("t2", 10), ("t3", 12))]
    payments = [books.row("payments", tenant, 0, amount, old)
                for tenant, amount in (("t1", 12), ("t2", 10), ("t3", 12), ("t4", 7))]
    orders.append(books.row("orders", "t4", 0, 7, recent))
    payments[2]["updatedAt"] = naive(CLOCK - timedelta(days=1))
    create_ledger(url, orders, payments)
    return url, books


PAID = """\
- {id: paid, kind: reconciliation,
   left: {dataset: orders, measure: sum(amount), by: [tenantId], per_day: at,
          where: {deletedAt: null}},
   right: {dataset: payments, measure: sum(amount), by: [payer], per_day: at}}
"""


def test_a_touched_bucket_is_re_aggregated_whole_and_an_old_row_moved_runs_in_full(
        tmp_path, monkeypatch):
    from integrity.checks import changed_since
    from integrity.checks.reconciliation import Reconciliation

    url, books = ledger(tmp_path)
    full = Chain(url, tmp_path, "sql", True, LEDGER, PAID)
    right = [Chain(url, tmp_path, engine, False, LEDGER, PAID) for engine in ("pandas", "sql")]
    # Wrong rules: aggregating only the changed rows of a bucket; forgetting the buckets
    # that held a row within the overlap.
    partial, forgetful = (Chain(url, tmp_path, "sql", False, LEDGER, PAID) for _ in range(2))
    first = full.run(CLOCK)
    assert (first.check("paid").violation_keys, first.check("paid").population) == ([], 4)
    for chain in (*right, partial):
        assert_same_reconciliation(chain.run(CLOCK), first, expect_incremental=False)
    assert [mark.value for mark in first.watermarks] == [
        # t1 to t4 hold a row older than the overlap of its dataset (counted while
        # measuring, recorded with both)
        {"time": "2026-03-01T11:00:00+00:00", "settled": 4,
         "unsettled": {"buckets of paid": [["t4", "2026-03-01"]]}, "buckets": {"paid": 4}},
        {"time": "2026-02-28T12:00:00+00:00", "settled": 3,
         "unsettled": {"buckets of paid": [["t3", "2026-03-01"]]}, "buckets": {"paid": 4}}]
    with monkeypatch.context() as patched:
        recorded = Reconciliation.watermark_extras
        patched.setattr(Reconciliation, "watermark_extras", lambda self, db, name, since: {
            **(extras := recorded(self, db, name, since)),
            "unsettled": {field: [] for field in extras.get("unsettled", {})}})
        forgetful.run(CLOCK)
    later = CLOCK + timedelta(days=1)
    table, payments = books.tables["orders"], books.tables["payments"]
    with books.engine.begin() as connection:
        # t1 is paid 1 more; order 9 moves from t4 to t5 (committed late); t6 is new on
        # the payments side only. t2 is not touched (t3 held payment 7 within the overlap).
        connection.execute(payments.insert().values(**books.row("payments", "t1", 0, 1,
                                                                naive(later))))
        connection.execute(table.update().where(table.c.id == 9).values(
            tenantId="t5", updatedAt=naive(CLOCK - timedelta(hours=1, seconds=30))))
        connection.execute(payments.insert().values(**books.row("payments", "t6", 1, 3,
                                                                naive(later))))
    truth = full.run(later)
    day = "2026-03-01"
    assert (truth.check("paid").violation_keys, truth.check("paid").population) == (
        [("t1", day), ("t4", day), ("t5", day), ("t6", "2026-03-02")], 6)
    for chain in right:
        mine = chain.run(later)
        assert_same_reconciliation(mine, truth, expect_incremental=True)
        assert mine.check("paid").notes == [
            "incremental: re-aggregated 5 touched buckets of 6, each over all its rows on "
            "both sides: those holding a row changed (orders.updatedAt ≥ "
            "2026-03-01T10:59:00Z or null; payments.updatedAt ≥ 2026-02-28T11:59:00Z or "
            "null) or within the overlap when run 1 read it, and the 0 keys that violated "
            "in run 1; counts and keys are the whole table's, every other bucket keeps its "
            "status of run 1"]
    with pytest.raises(AssertionError):  # order 9 left t4 without a trace
        assert_same_reconciliation(forgetful.run(later), truth, expect_incremental=True)
    monkeypatch.setattr(Reconciliation, "touched", lambda self, db, index, relation:
                        changed_since(db, relation, self.increments[
                            (self.config.left, self.config.right)[index].dataset]))
    with pytest.raises(AssertionError):  # t1's sum is of the new payment alone
        assert_same_reconciliation(partial.run(later), truth, expect_incremental=True)
    monkeypatch.undo()
    # Order 1, older than the overlap, moves to day 1: its old bucket is unknown.
    with books.engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == 1).values(
            at=naive(CLOCK + timedelta(days=1, hours=3)),
            updatedAt=naive(later + timedelta(hours=1))))
    truth = full.run(later + timedelta(hours=1))
    for chain in right:
        mine = chain.run(later + timedelta(hours=1))
        assert_same_reconciliation(mine, truth, expect_incremental=False)
        assert mine.check("paid").notes == [
            "ran in full (orders): orders holds 3 rows older than the overlap where run 2 "
            "counted 4: one was deleted or changed since, and a row deleted or moved to "
            "another bucket leaves nothing a watermark sees"]
    # And the run after it is incremental again, with t1 (violating) seen again.
    truth = full.run(later + timedelta(hours=2))
    for chain in right:
        mine = chain.run(later + timedelta(hours=2))
        assert_same_reconciliation(mine, truth, expect_incremental=True)
    for chain in (full, *right, partial, forgetful):
        chain.dispose()
    books.dispose()


def test_with_created_an_old_row_updated_in_its_bucket_keeps_a_reconciliation_incremental(
        tmp_path):
    """Order 2 (t1), older than the overlap, is corrected: with `created:` it stays in its
    bucket, which its change touches — the run stays incremental. Then order 3 (t2) is
    soft-deleted out of the left side's filter, and order 4 (t3) moves to another day:
    either leaves a bucket the last run counted without a trace, and runs it in full."""
    url, books = ledger(tmp_path)
    full = Chain(url, tmp_path, "sql", True, LEDGER_CREATED, PAID)
    mine = [Chain(url, tmp_path, engine, False, LEDGER_CREATED, PAID)
            for engine in ("pandas", "sql")]
    truth = full.run(CLOCK)
    for chain in mine:
        assert_same_reconciliation(chain.run(CLOCK), truth, expect_incremental=False)
    orders = books.tables["orders"]
    steps = [(2, {"amount": 6}, None),
             (3, {"deletedAt": naive(CLOCK)},
              "ran in full (orders): orders holds 5 rows with createdAt before the overlap "
              "where run 2 counted 5, or rows in other buckets: one was deleted or moved to "
              "another bucket since, which leaves nothing a watermark sees"),
             (4, {"at": naive(CLOCK + timedelta(days=1, hours=3))},
              "ran in full (orders): orders holds 5 rows with createdAt before the overlap "
              "where run 3 counted 5, or rows in other buckets: one was deleted or moved to "
              "another bucket since, which leaves nothing a watermark sees")]
    for hours, (order, values, note) in enumerate(steps, start=1):
        now = CLOCK + timedelta(hours=hours)
        with books.engine.begin() as connection:
            connection.execute(orders.update().where(orders.c.id == order).values(
                **values, updatedAt=naive(now - timedelta(minutes=30))))
        truth = full.run(now)
        for chain in mine:
            result = chain.run(now)
            assert answer(result.check("paid")) == answer(truth.check("paid"))
            notes = result.check("paid").notes
            if note is None:
                assert notes[0].startswith("incremental: re-aggregated 3 touched buckets of 4"), \
                    notes
            else:
                assert notes == [note]
    for chain in (full, *mine):
        chain.dispose()
    books.dispose()


def test_a_reconciliation_with_many_buckets_of_several_parts_to_see_again_runs_in_full(
        tmp_path, monkeypatch):
    """More buckets of several parts to see again than MOST_LISTED_BUCKETS: the check runs
    in full, saying why, with the full run's answer; a check of one-part buckets does not."""
    import integrity.checks.reconciliation as reconciliation

    monkeypatch.setattr(reconciliation, "MOST_LISTED_BUCKETS", 0)
    url, books = ledger(tmp_path)
    checks = PAID + """\
- {id: counted, kind: reconciliation, tolerance: 10%,
   left: {dataset: orders, by: [tenantId]}, right: {dataset: payments, by: [payer]}}
"""
    full = Chain(url, tmp_path, "sql", True, LEDGER, checks)
    mine = Chain(url, tmp_path, "sql", False, LEDGER, checks)
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        truth, result = full.run(now), mine.run(now)
        assert [answer(check) for check in result.checks] == [
            answer(check) for check in truth.checks]
    assert result.check("paid").notes == [
        "ran in full (orders): 2 buckets of run 1 to see again (its violations and rows "
        "within the overlap), more than 0: a list of keys of several parts is tested one "
        "key at a time on every row, which costs more than a full run"]
    assert result.check("counted").notes[0].startswith("incremental: re-aggregated")
    for chain in (full, mine):
        chain.dispose()
    books.dispose()


@pytest.mark.parametrize("checks, note", [
    ("""\
- {id: paid, kind: reconciliation, left: {dataset: orders, measure: sum(amount)},
   right: {dataset: payments, measure: sum(amount)}}
""", "ran in full (payments): it has one bucket (no `by` nor `per_day`): every change "
     "touches it"),
    ("""\
- {id: paid, kind: reconciliation, left: {dataset: orders, by: [tenantId],
   where: {at: {since: 7d}}}, right: {dataset: payments, by: [payer]}}
""", "ran in full (payments): its filter on at (since) lets unchanged rows out as time "
     "passes"),
    ("""\
- {id: paid, kind: reconciliation, left: {dataset: orders, by: [tenantId]},
   right: {dataset: payments, by: [payer], measure: {measure: count,
           where: {at: {until: 1h}}}}}
""", "ran in full (payments): its filter on at (until) lets unchanged rows in as time "
     "passes"),
])
def test_a_reconciliation_without_an_exact_rule_runs_in_full(tmp_path, checks, note):
    url, books = ledger(tmp_path)
    chain = Chain(url, tmp_path, "sql", False, LEDGER, checks)
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        result = chain.run(now)
    assert result.check("paid").notes == [note]
    plain = Chain(url, tmp_path, "pandas", False, LEDGER.splitlines()[0] + "\n"
                  "payments: {table: payments, key: id}", LEDGER_CHECKS)
    for now in (CLOCK, CLOCK + timedelta(hours=1)):
        result = plain.run(now)
    assert {c.id: c.notes for c in result.checks} == {name: [
        "ran in full (payments): payments declares no `incremental:`, so what changes "
        "there would go unseen"] for name in RECONCILED}
    for each in (chain, plain):
        each.dispose()
    books.dispose()
