"""A full run that disagrees with the incremental state is a finding.

`full_every` (or `--full`) reads an incremental dataset in full to see what no
watermark can: a row written without moving its change column, a row inserted
with an old one. When the last run left a usable incremental state, the check is
also measured from it, on the same snapshot; a disagreement is reported as
`<check>:incremental` with the keys only one of the two found, and fails the
gate; the full answer stands for the check itself. Here a writer forgets to
bump `updatedAt`, on SQLite, PostgreSQL and MariaDB, with both engines.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from conftest import DATABASES, audit_text, database_url
from integrity.audit import parse_audit
from integrity.gate import exit_code
from integrity.history import History
from integrity.runner import run_audit
from test_incremental import CLOCK, Mutator, create, naive

DATASETS = ("items: {table: items, key: id, incremental: {changed: updatedAt, overlap: 1m, "
            "full_every: 2d, full_above: 100%}}")
CHECKS = """\
- {id: sent_valid, kind: timestamp_valid, dataset: items, where: {status: SENT},
   column: sentAt, not_before: createdAt}
- {id: tenants_agree, kind: cross_tenant, dataset: items, tenant_column: tenantId,
   other_tenant_column: otherTenant}
- {id: emails_unique, kind: duplicates, dataset: items, columns: [tenantId, email],
   normalize: {email: email}, where: {deletedAt: null}, keep_first_by: createdAt}
"""
DAY = timedelta(days=1)
FINE = {"tenantId": "t1", "otherTenant": "t1", "email": None, "status": "SENT",
        "sent": "fine"}


@pytest.fixture(scope="module", params=DATABASES)
def url(request, servers, tmp_path_factory):
    return database_url(request.param, servers, tmp_path_factory.mktemp(request.param))


def six_rows(url: str) -> Mutator:
    """Six fine items, unchanged for two days but item 5, changed an hour ago."""
    create(url, [])
    mutator = Mutator(url)
    rows = mutator.seed([FINE] * 6, CLOCK)
    for row in rows:
        row["updatedAt"] = naive(CLOCK - 2 * DAY)
    rows[4]["updatedAt"] = naive(CLOCK - timedelta(hours=1))
    create(url, rows)
    return mutator


def good_change(mutator: Mutator, moment) -> None:
    """A writer that bumps updatedAt: row 6 gets an e-mail."""
    items = mutator.table
    with mutator.engine.begin() as connection:
        connection.execute(items.update().where(items.c.id == 6).values(
            email=f"r6-{moment:%d%H}@x.com", updatedAt=naive(moment)))


def unseen_changes(mutator: Mutator) -> None:
    """A writer that forgets updatedAt: row 2 loses its sentAt and moves to tenant t2, and
    row 7 arrives stamped three days ago — far outside the overlap."""
    items = mutator.table
    with mutator.engine.begin() as connection:
        connection.execute(items.update().where(items.c.id == 2).values(
            sentAt=None, otherTenant="t2"))
        connection.execute(items.insert().values(
            id=7, tenantId="t1", otherTenant="t2", email=None, status="SENT",
            sentAt=naive(CLOCK), createdAt=naive(CLOCK - 3 * DAY),
            updatedAt=naive(CLOCK - 3 * DAY)))


def found(result) -> dict:
    return {c.id: (c.status, c.violation_count, c.population, sorted(c.violation_keys))
            for c in result.checks}


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_full_every_reports_what_the_incremental_state_missed(url, tmp_path, engine):
    mutator = six_rows(url)
    audit = parse_audit(audit_text(url, DATASETS, CHECKS), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")

    def run(now):
        result = run_audit(audit, now=now, engine=engine, history=store, sample_limit=0)
        assert result.errors == []
        store.apply(result)
        return result

    try:
        first = run(CLOCK)  # no state to compare with: nothing but the full run
        assert [c.id for c in first.checks] == ["sent_valid", "tenants_agree", "emails_unique"]
        assert first.check("sent_valid").notes == [
            "ran in full (items): full_every 2d: never read in full before"]
        good_change(mutator, CLOCK + DAY)
        second = run(CLOCK + DAY)
        assert second.check("tenants_agree").notes[0].startswith("incremental: examined 2 ")
        unseen_changes(mutator)
        third = run(CLOCK + 2 * DAY)
        # The full answer stands for the checks; each disagreement follows its check.
        assert found(third) == {
            "sent_valid": ("fail", 1, 7, [(2,)]),
            "sent_valid:incremental": ("fail", 1, None, [(2,)]),
            "tenants_agree": ("fail", 2, 7, [(2,), (7,)]),
            "tenants_agree:incremental": ("fail", 2, None, [(2,), (7,)]),
            "emails_unique": ("pass", 0, 7, [])}
        assert [c.id for c in third.checks] == [
            "sent_valid", "sent_valid:incremental", "tenants_agree",
            "tenants_agree:incremental", "emails_unique"]
        drift = third.check("tenants_agree:incremental")
        assert drift.purpose == (
            "the full run found 2 violations the incremental state missed (a change no "
            "watermark saw: a row written with an old updatedAt, or a delete)")
        assert drift.description.startswith(drift.purpose + " — an incremental run of "
                                            "tenants_agree from the state of run 2")
        assert (drift.kind, drift.severity, drift.engine) == ("cross_tenant", "critical", engine)
        assert drift.columns == ["id", "found_by"]
        assert drift.sample == [{"id": 2, "found_by": "full run only"},
                                {"id": 7, "found_by": "full run only"}]
        assert drift.notes == [
            "usually a writer does not set updatedAt on every change: fix the writer, or "
            "widen the incremental overlap; until then only a full run sees it"]
        assert third.check("tenants_agree").notes == [
            "full_every: the incremental state disagreed with the full run; the full run's "
            "answer stands (see tenants_agree:incremental)",
            "ran in full (items): full_every 2d: last read in full at 2026-03-01T12:00:00Z"]
        assert third.check("emails_unique").notes == [
            "full_every: the incremental state agreed with the full run",
            "ran in full (items): full_every 2d: last read in full at 2026-03-01T12:00:00Z"]
        assert exit_code(third) == 1
        # The lifecycle of a check is the full answer's: 2 and 7 are new; so are they for
        # the disagreement, which history keeps under its own id.
        assert len(third.check("tenants_agree").lifecycle.new) == 2
        assert len(drift.lifecycle.new) == 2
        assert [(m.value, m.read_in_full) for m in third.watermarks] == [
            ({"time": "2026-03-02T12:00:00+00:00"}, True)]
        # The next incremental run starts from the full answer: 2 and 7 are rechecked.
        state = store.increment_state(audit.name, third.target, "tenants_agree", "items")
        assert (state.run_id, sorted(state.keys)) == (3, [["2"], ["7"]])
        fourth = run(CLOCK + 3 * DAY)
        assert found(fourth)["tenants_agree"] == ("fail", 2, 7, [(2,), (7,)])
        assert "tenants_agree:incremental" not in found(fourth)
        # The next full_every run agrees: the disagreement passes, and resolves.
        fifth = run(CLOCK + 4 * DAY)
        assert found(fifth) == {
            "sent_valid": ("fail", 1, 7, [(2,)]),
            "sent_valid:incremental": ("pass", 0, None, []),
            "tenants_agree": ("fail", 2, 7, [(2,), (7,)]),
            "tenants_agree:incremental": ("pass", 0, None, []),
            "emails_unique": ("pass", 0, 7, [])}
        again = fifth.check("tenants_agree:incremental")
        assert again.purpose == "the incremental state agreed with the full run again"
        assert len(again.lifecycle.resolved) == 2
        assert fifth.check("tenants_agree").notes[0] == (
            "full_every: the incremental state agreed with the full run")
        sixth = run(CLOCK + 6 * DAY)  # agreed again: nothing more to resolve
        assert [c.id for c in sixth.checks] == ["sent_valid", "tenants_agree", "emails_unique"]
    finally:
        store.engine.dispose()
        mutator.dispose()


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_the_comparison_changes_nothing_of_the_full_answer(url, tmp_path, engine):
    """Statuses, counts, keys and notes aside, the full run with a comparison answers as a
    full run without history; its watermark is the snapshot's."""
    mutator = six_rows(url)
    audit = parse_audit(audit_text(url, DATASETS, CHECKS), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    try:
        for now in (CLOCK, CLOCK + DAY):
            store.apply(run_audit(audit, now=now, engine=engine, history=store))
            good_change(mutator, now + DAY)
        unseen_changes(mutator)
        compared = run_audit(audit, now=CLOCK + 2 * DAY, engine=engine, history=store,
                             full=True)
        plain = run_audit(audit, now=CLOCK + 2 * DAY, engine=engine)
        assert {key: value for key, value in found(compared).items()
                if not key.endswith(":incremental")} == found(plain)
        assert [c.sample for c in compared.checks if ":" not in c.id] == [
            c.sample for c in plain.checks]
        assert [(m.value, m.read_in_full) for m in compared.watermarks] == [
            (m.value, m.read_in_full) for m in plain.watermarks]
        assert compared.check("sent_valid").notes == [
            "--full: the incremental state disagreed with the full run; the full run's "
            "answer stands (see sent_valid:incremental)", "ran in full (items): --full"]
    finally:
        store.engine.dispose()
        mutator.dispose()


def test_a_failing_incremental_measurement_is_a_note(tmp_path, monkeypatch):
    from integrity.checks import Check

    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    mutator = six_rows(url)
    audit = parse_audit(audit_text(url, DATASETS, CHECKS), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    for now in (CLOCK, CLOCK + DAY):
        store.apply(run_audit(audit, now=now, history=store))
    unseen_changes(mutator)

    def broken(self, examined, population):
        raise RuntimeError("no disk left")

    monkeypatch.setattr(Check, "incremental_note", broken)
    result = run_audit(audit, now=CLOCK + 3 * DAY, history=store)
    assert found(result)["tenants_agree"] == ("fail", 2, 7, [(2,), (7,)])
    assert result.check("tenants_agree").notes[0] == (
        "full_every: the incremental state could not be compared with the full run: the "
        "check crashed: RuntimeError: no disk left")
    assert "tenants_agree:incremental" not in found(result)
    store.engine.dispose()
    mutator.dispose()


def test_no_comparison_without_a_usable_state(tmp_path):
    """A full run for want of a start (a first run, a changed audit, no history) has
    nothing to compare with."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    mutator = six_rows(url)
    audit = parse_audit(audit_text(url, DATASETS, CHECKS), file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    store.apply(run_audit(audit, now=CLOCK, history=store))
    unseen_changes(mutator)
    edited = parse_audit(audit_text(url, DATASETS, CHECKS) + "# edited\n",
                         file=str(tmp_path / "a.yml"))
    result = run_audit(edited, now=CLOCK + 3 * DAY, history=store, full=True)
    assert [c.id for c in result.checks] == ["sent_valid", "tenants_agree", "emails_unique"]
    assert result.check("sent_valid").notes == ["ran in full (items): --full"]
    result = run_audit(audit, now=CLOCK + 3 * DAY, full=True)
    assert [c.id for c in result.checks] == ["sent_valid", "tenants_agree", "emails_unique"]
    store.engine.dispose()
    mutator.dispose()


def test_full_on_the_command_line_reports_the_disagreement_everywhere(tmp_path):
    from click.testing import CliRunner

    from integrity.cli import main

    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    mutator = six_rows(url)
    audit = tmp_path / "nightly.yml"
    audit.write_text(audit_text(url, DATASETS.replace(", full_every: 2d", ""), CHECKS))
    history = f"sqlite:///{tmp_path / 'h.sqlite'}"
    out = tmp_path / "out"

    def run(now, *options):
        return CliRunner().invoke(main, ["run", str(audit), "-o", str(out), "--history",
                                         history, "--now", now.isoformat(), *options])

    for now in (CLOCK, CLOCK + DAY):
        assert run(now).exit_code == 0
    unseen_changes(mutator)
    assert run(CLOCK + 2 * DAY).exit_code == 0  # unseen by the incremental run
    outcome = run(CLOCK + 2 * DAY, "--full")
    assert outcome.exit_code == 1, outcome.output
    report = json.loads((out / "report.json").read_text())
    drift = {check["id"]: check for check in report["checks"]}["tenants_agree:incremental"]
    assert (drift["status"], drift["violation_count"], drift["key_columns"]) == (
        "fail", 2, ["id"])
    assert [row["found_by"] for row in drift["violations"]] == ["full run only"] * 2
    assert [row["id"] for row in drift["violations"]] == [2, 7]
    assert "| FAIL | `tenants_agree:incremental` | 2 | 2 | the full run found 2 violations " \
           "the incremental state missed" in (out / "summary.md").read_text()
    junit = (out / "junit.xml").read_text()
    assert 'name="tenants_agree:incremental"' in junit and "keys (id): 2, 7" in junit
    assert "tenants_agree:incremental" in (out / "report.html").read_text()
    mutator.dispose()
    with sa.create_engine(history).connect() as connection:  # kept under its own id
        rows = connection.execute(sa.text(
            "SELECT key_json FROM integrity_violations WHERE check_id = "
            "'tenants_agree:incremental' ORDER BY key_json")).scalars().all()
    assert rows == ['["2"]', '["7"]']


def test_what_only_the_incremental_state_kept_and_a_count_alone_that_differs():
    """Neither arises from a writer that forgets its change column (the last run's keys are
    looked up again), but a rule that went wrong would show them: they are said too."""
    from integrity.checks import CHECKS as KINDS, Increment
    from integrity.results import CheckResult
    from integrity.runner import PassedOver, drift_result

    audit = parse_audit(audit_text("sqlite:///x.db", DATASETS, CHECKS), file="a.yml")
    check = KINDS["cross_tenant"](audit.checks[1], audit)
    increment = Increment(dataset="items", column="updatedAt", since=CLOCK, keys=[], run_id=4)
    start = PassedOver(increment, {"items": increment}, "full_every")

    def outcome(count, population, keys):
        return CheckResult(id="tenants_agree", kind="cross_tenant", datasets=["items"],
                           description="", severity="critical", status="fail",
                           violation_count=count, population=population, key_columns=["id"],
                           violation_keys=keys)

    full, incremental = outcome(1, 7, [(2,)]), outcome(3, 7, [(2,), (5,), (9,)])
    kept = drift_result(check, full, incremental, start, [], [(5,), (9,)], 1,
                        "tenants_agree:incremental")
    assert (kept.status, kept.violation_count, kept.violation_keys) == ("fail", 2, [(5,), (9,)])
    assert kept.purpose.startswith("the incremental state kept 2 violations the full run "
                                   "did not find (a change no watermark saw")
    assert (kept.sample, kept.sample_truncated) == ([{"id": 5, "found_by": "incremental only"}],
                                                    True)
    counted = drift_result(check, full, outcome(1, 6, [(2,)]), start, [], [], 0,
                           "tenants_agree:incremental")
    assert (counted.status, counted.violation_count) == ("fail", 0)
    assert counted.purpose.startswith("the full run counted 1 violation of 7 where the "
                                      "incremental state counted 1 violation of 6")


@pytest.mark.parametrize("engine", ["pandas", "sql"])
def test_a_counter_changed_without_its_stamp_is_found_by_the_full_run(tmp_path, engine):
    from test_incremental import ENTITY_CHECKS, SENDS, entities
    from test_incremental import DATASETS as ITEMS

    url, mutator, _ = entities(tmp_path)
    audit = parse_audit(audit_text(url, f"{ITEMS}\n{SENDS}", ENTITY_CHECKS),
                        file=str(tmp_path / "a.yml"))
    store = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    for now in (CLOCK, CLOCK + DAY):
        result = run_audit(audit, now=now, engine=engine, history=store)
        store.apply(result)
    assert result.check("counted").notes[0].startswith("incremental: examined ")
    items = mutator.table
    with mutator.engine.begin() as connection:  # item 1 counts 3 sends, updatedAt kept
        connection.execute(items.update().where(items.c.id == 1).values(sendCount=3))
    result = run_audit(audit, now=CLOCK + 2 * DAY, engine=engine, history=store, full=True)
    assert found(result) == {"counted": ("fail", 2, 5, [(1,), (4,)]),
                             "counted:incremental": ("fail", 1, None, [(1,)]),
                             "preserved": ("pass", 0, 5, [])}
    assert result.check("preserved").notes[0] == (
        "--full: the incremental state agreed with the full run")
    store.engine.dispose()
    mutator.dispose()
