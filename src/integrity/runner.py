"""Run an audit: connect, read what the checks need, run every check, collect results.

Everything happens in one read-only session (one snapshot where the database
offers it): the pandas engine pulls each dataset once for all its checks, the
SQL engine sends each check's query to the database. A problem is contained
where it happens: a missing table errors the checks that read it, a missing
column the checks that name it, a crashing check itself — every other check
still runs, and the audit as a whole can then never pass (see `gate`).
A check that touches no database (an HTTP probe) runs before the session
opens; results are reported in the file's order all the same.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from integrity import files
from integrity.checks import CHECKS, Check
from integrity.config import Audit
from integrity.errors import IntegrityError, SourceError
from integrity.filters import describe
from integrity.identity import identify
from integrity.privileges import write_warning
from integrity.results import (LEVEL_STATUS, AuditResult, CheckResult, DatasetLoad, errored,
                               measured, plain)

if TYPE_CHECKING:
    from integrity.checks import Increment
    from integrity.history import History

log = logging.getLogger(__name__)


def engine_of(check: Check, default: str) -> str:
    """A check's own `engine:` wins over the run's (CLI `--engine`, else the audit's)."""
    return check.config.engine or default


def engine_problems(audit: Audit, dialect: str, engine: str | None = None
                    ) -> list[tuple[str, str, tuple, str]]:
    """(check path, check id, (line, column), problem) for every check the SQL engine
    cannot run on `dialect` — all of them, each where the file sets its engine."""
    default = engine or audit.config.engine
    problems = []
    for index, config in enumerate(audit.checks):
        check = CHECKS[config.kind](config, audit)
        if engine_of(check, default) == "sql":
            path = audit.path(index)
            number = audit.indices.get(config.id, index)
            where = ("checks", number, "engine") if config.engine else ("checks", number)
            position = audit.positions.get(where) or audit.positions.get(("checks", number),
                                                                         (None, None))
            problems += [(path, config.id, position, f"the sql engine cannot run this check "
                          f"on {dialect}: {problem}; set `engine: pandas` (or `auto`) on it")
                         for problem in check.sql_problems(dialect)]
    return problems


def run_audit(audit: Audit, *, now: datetime | None = None, sample_limit: int | None = None,
              fail_on: str = "critical", engine: str | None = None,
              history: History | None = None,
              on_result: Callable[[CheckResult], None] | None = None,
              timeout: float | None = None, timeout_text: str | None = None,
              full: bool = False) -> AuditResult:
    """Run every check. With a `history`, metric baselines come from it (recording the
    run and the violation lifecycle is `History.apply`, after this), and checks of an
    `incremental:` dataset may examine only what changed since the last run (`full`:
    none does). `on_result` sees each result as it is ready (progress on a terminal).
    `timeout` (seconds) bounds the whole run: the database stops a statement that would
    overrun it, and the checks that did not run are errors; the rest is kept.
    `timeout_text` names the bound in messages (the job's --timeout, when `timeout` is
    what is left of it)."""
    from integrity.operations import RunTimeout

    result = _empty_result(audit, now, sample_limit, fail_on, engine)
    # Until the server says who it is (or if it never answers): the audit's `target:`,
    # else the URL as shown.
    result.target = audit.config.target or shown_url(audit)
    deadline = None if not timeout else time.monotonic() + timeout
    try:
        return _run_audit(audit, result, history, on_result or (lambda _: None), deadline,
                          timeout_text or (None if timeout is None else f"{timeout:g}s"), full)
    except (RunTimeout, ConnectionLost) as stop:
        return _stopped(audit, result, str(stop))
    except Exception as error:  # noqa: BLE001 — fail closed: the run is an audit error
        # A failure outside any one check (a driver, a reader, memory): what ran is kept,
        # the rest is errored, and the run can never pass.
        log.debug("the run stopped\n%s", traceback.format_exc())
        return _stopped(audit, result, f"the run stopped: {_reason(error)}")


def shown_url(audit: Audit) -> str:
    from sqlalchemy.engine import make_url

    from integrity.errors import masked_url

    try:
        return masked_url(make_url(audit.connection.url))
    except Exception:  # noqa: BLE001 — an unusable URL: the run reports it
        return "unknown"


def _stopped(audit: Audit, result: AuditResult, reason: str) -> AuditResult:
    """`result` with `reason` as an audit error and every check that did not run errored."""
    done = {check.path for check in result.checks}  # a suite's results share its path
    result.errors.append(reason)
    for index, config in enumerate(audit.checks):
        if audit.path(index) not in done:
            result.checks.append(errored(config, list(config.datasets), f"not run: {reason}",
                                         audit.path(index)))
    _in_file_order(audit, result)
    result.finished_at = datetime.now(timezone.utc)
    return result


def _in_file_order(audit: Audit, result: AuditResult) -> None:
    """Results in the order of the file's checks (probes ran first, before the session)."""
    order = {audit.path(index): index for index in range(len(audit.checks))}
    result.checks.sort(key=lambda check: order.get(check.path, len(order)))  # stable


def _reason(error: BaseException) -> str:
    """One line: the exception's type and first line (the trace is for -v)."""
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text[:300]}"


def _empty_result(audit: Audit, now, sample_limit, fail_on, engine) -> AuditResult:
    started = datetime.now(timezone.utc)
    limit = audit.config.output.sample_limit if sample_limit is None else sample_limit
    return AuditResult(audit_name=audit.name, audit_file=audit.file,
                       config_hash=audit.config_hash, engine=engine or audit.config.engine,
                       database="", dialect=None, started_at=started, finished_at=started,
                       now=(now or started).astimezone(timezone.utc), checks=[],
                       fail_on=fail_on, sample_limit=limit, warnings=list(audit.warnings))


def _run_audit(audit: Audit, result: AuditResult, history: History | None,
               on_result: Callable[[CheckResult], None], deadline: float | None,
               timeout: str | None, full: bool = False) -> AuditResult:
    from integrity.pushdown import Tables
    from integrity.sources import (BulkReader, Frames, available_columns, dataset_query,
                                   open_source, read_frame, sql_text)

    now, limit, default_engine = result.now, result.sample_limit, result.engine
    checks = [CHECKS[config.kind](config, audit) for config in audit.checks]
    paths = {check.id: audit.path(index) for index, check in enumerate(checks)}
    engines = {check.id: engine_of(check, default_engine) for check in checks}

    def fail_all(message: str) -> AuditResult:
        """Every check errored by `message` — but a probe that ran keeps its answer."""
        result.errors.append(message)
        probed = {outcome.path for outcome in result.checks}
        result.checks += [errored(check.config, _datasets(check), message, paths[check.id],
                                  _describe(check)) for check in checks
                          if paths[check.id] not in probed]
        _in_file_order(audit, result)
        result.finished_at = datetime.now(timezone.utc)
        return result

    try:
        source = open_source(audit.connection)
    except SourceError as error:
        return fail_all(str(error))
    result.database, result.dialect = source.display_url, source.dialect
    source.deadline = deadline
    chosen = {}  # check id -> why `auto` chose pandas
    for check in checks:
        if engines[check.id] == "auto":
            engines[check.id], chosen[check.id] = _choose(check, source.dialect)

    def on_time(connection=None) -> None:
        """Stop here if the run is out of time; else let the database enforce the rest."""
        from integrity.operations import RunTimeout

        if deadline is not None and time.monotonic() >= deadline:
            raise RunTimeout(f"the run exceeded its timeout of {timeout}")
        if connection is not None:
            source.clamp(connection)

    broken: dict[str, str] = {}
    needs: dict[str, list[str]] = {}   # every column any check reads, per dataset
    pulls: dict[str, list[str]] = {}   # what the pandas engine must pull
    for check in checks:
        try:
            for dataset, columns in check.columns().items():
                needs[dataset] = list(dict.fromkeys(needs.get(dataset, []) + columns))
                if engines[check.id] == "pandas":
                    pulls[dataset] = list(dict.fromkeys(pulls.get(dataset, []) + columns))
            if engines[check.id] == "sql":
                for problem in check.sql_problems(source.dialect):
                    broken.setdefault(check.id, f"the sql engine cannot run this check: {problem}; "
                                                f"set `engine: pandas` (or `auto`) on it")
        except (IntegrityError, ValueError) as error:
            broken[check.id] = str(error)
    for name in needs:  # what changed is found by the change column: it is read too
        setting = audit.datasets[name].incremental
        if setting is not None:
            marks = [column for column in (setting.column, setting.created) if column]
            needs[name] = list(dict.fromkeys([*needs[name], *marks]))
            if name in pulls:
                pulls[name] = list(dict.fromkeys([*pulls[name], *marks]))

    # A check that touches no database (an HTTP probe) runs first, outside the session:
    # waiting between its attempts must not hold the snapshot open (a server's idle-in-
    # transaction timeout may end it), and its answer stands if the database is down.
    probes = [check for check in checks if not check.reads_database]
    nowhere = Frames(audit=audit, source=source, frames={}, now=now)
    for check in probes:
        on_time()
        for outcome in _run_one(check, engines[check.id], nowhere, None, broken.get(check.id),
                                limit, paths[check.id], _mask(audit, check)):
            outcome.engine = None  # neither engine: it read no database
            result.checks.append(outcome)
            on_result(outcome)

    bulk = None
    try:
        with source.connect() as connection:
            if source.dialect in {"postgresql", "mysql", "mariadb"}:
                # One snapshot for every dataset: a counter and its event log
                # read moments apart could disagree without anything being wrong.
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            if not audit.config.target:
                result.target = identify(connection).target_name
            warning = write_warning(connection, {dataset.schema_ for dataset
                                                 in audit.datasets.values()})
            if warning:
                result.warnings.append(warning)
            types: dict[str, dict] = {}
            not_null: dict[str, set[str]] = {}
            frames = {}
            folder = Path(audit.file).resolve().parent  # a file dataset's path is from here
            file_notes: dict[str, list[str]] = {}
            for name, wanted in needs.items():
                on_time(connection)
                dataset = audit.datasets[name]
                users = [c for c in checks if name in _safe_columns(c) and c.id not in broken]
                began = time.perf_counter()
                try:
                    present = (files.columns(name, dataset, folder) if dataset.file else
                               available_columns(connection, source, name, dataset))
                except SourceError as error:
                    for check in users:
                        broken[check.id] = str(error)
                    continue
                for check in users:
                    absent = [c for c in _safe_columns(check)[name] if c not in present]
                    if absent:
                        broken[check.id] = check.missing_column(name, absent[0], present)
                types[name] = {column: present[column] for column in wanted if column in present}
                not_null[name] = getattr(present, "not_null", set())
                if name not in pulls:
                    continue
                loadable = {column: present[column] for column in pulls[name]
                            if column in present}
                try:
                    if dataset.file:
                        frames[name] = files.read(name, dataset, folder, list(loadable),
                                                  file_notes.setdefault(name, []))
                        result.datasets.append(DatasetLoad(
                            name, len(frames[name]), list(loadable),
                            time.perf_counter() - began, dataset.label))
                        continue
                    if bulk is None and source.dialect == "postgresql" and _psycopg(source):
                        statement_ms = int(
                            audit.connection.statement_timeout.total_seconds() * 1000)
                        bulk = BulkReader(source, connection, statement_ms)
                    frames[name] = read_frame(connection, source, name, dataset, loadable, bulk)
                except SourceError as error:
                    for check in users:
                        broken.setdefault(check.id, str(error))
                    if bulk is not None:
                        # Its session may be gone with the error: the next dataset gets a
                        # fresh reader in the same snapshot.
                        bulk.close()
                        bulk = None
                    continue
                result.datasets.append(DatasetLoad(
                    name, len(frames[name]), list(loadable), time.perf_counter() - began,
                    sql_text(dataset_query(dataset, list(loadable)), source)))

            if bulk is not None:
                bulk.close()  # its snapshot is no longer needed; the checks run on `connection`
                bulk = None
            baseline = None if history is None else functools.partial(
                _baseline, history, audit.name, result.target, now)
            contexts = {
                "pandas": Frames(audit=audit, source=source, frames=frames, now=now,
                                 connection=connection, baseline=baseline),
                "sql": Tables(audit=audit, source=source, connection=connection, now=now,
                              columns=types, not_null=not_null, baseline=baseline),
            }
            late: list = []  # (check, dataset, its watermark): what it adds after measuring
            full_notes, passed_over = _plan_increments(audit, checks, broken, contexts["sql"],
                                                       history, result, full, late)
            for check in checks:
                if check in probes:
                    continue  # answered before the session opened
                on_time(connection)
                engine = engines[check.id]
                outcomes = _run_one(check, engine, contexts[engine], connection,
                                    broken.get(check.id), limit, paths[check.id],
                                    _mask(audit, check))
                for watched, name, mark in late:
                    if watched is check and all(outcome.status != "error"
                                                for outcome in outcomes):
                        _merge_extras(mark, check.watermark_after(name))
                drift = []
                if check.id in passed_over and len(outcomes) == 1 \
                        and outcomes[0].status != "error":
                    drift = _reconcile(check, passed_over[check.id], outcomes[0], engine,
                                       contexts[engine], connection, limit, deadline,
                                       _mask(audit, check), history, result)
                for outcome in outcomes:
                    if chosen.get(check.id):
                        outcome.notes.append(chosen[check.id])
                    if full_notes.get(check.id) and outcome.status != "error":
                        outcome.notes.append(full_notes[check.id])
                    outcome.notes += [note for name in check.datasets
                                      for note in file_notes.get(name, [])]
                for outcome in [*outcomes, *drift]:
                    result.checks.append(outcome)
                    on_result(outcome)
                if connection.invalidated:
                    # Said once, here, rather than as every later check's confusing failure.
                    raise ConnectionLost(f"the connection to the audited database was lost "
                                         f"during check {check.id}")
            if deadline is not None and time.monotonic() >= deadline:
                # The last check was stopped by the deadline: the run overran all the same.
                result.errors.append(f"the run exceeded its timeout of {timeout}")
    except SourceError as error:
        return fail_all(str(error))
    finally:
        if bulk is not None:  # a timeout or error while the datasets were being read
            with contextlib.suppress(Exception):  # keep the error that got us here
                bulk.close()
        source.dispose()
    _in_file_order(audit, result)
    result.finished_at = datetime.now(timezone.utc)
    return result


# More keys than this violated last time: looking each up again costs about what a full
# run does (and binds that many values), so the check runs in full instead.
MOST_KEYS_RECHECKED = 10_000


@dataclass
class PassedOver:
    """The incremental start a check had, in a run that reads in full because it was
    asked to (`--full`) or is due to (`full_every`): the check is measured from it too, on
    the same snapshot, and a disagreement with the full answer is a finding."""

    increment: Increment | None
    increments: dict[str, Increment]
    trigger: str  # `--full` or `full_every`, as the notes say it


def _plan_increments(audit: Audit, checks: list[Check], broken: dict[str, str], db,
                     history: History | None, result: AuditResult, full: bool,
                     late: list | None = None
                     ) -> tuple[dict[str, str], dict[str, PassedOver]]:
    """For each `incremental:` dataset the checks read: read its watermark (the largest
    value of its change column, in this run's snapshot) into `result.watermarks`, and give
    each check that may examine only what changed its `increment`. Returns, per check
    that runs in full all the same, the note saying why; and, per check that runs in full
    only because of `--full` or `full_every`, the incremental start it would have had. A
    change column that is not there, or an overlap of the wrong kind, errors the
    dataset's checks (`broken`)."""
    from integrity.checks import Increment
    from integrity.errors import SourceError
    from integrity.history import HistoryError
    from integrity.results import Watermark

    readers: dict[str, list[Check]] = {}
    for check in checks:
        for name in _safe_columns(check):
            if audit.datasets[name].incremental is not None:
                readers.setdefault(name, []).append(check)
    notes: dict[str, str] = {}
    shares: dict = {}  # (dataset, since) -> (rows changed, rows): counted once a run
    forced: dict[str, str] = {}  # check id -> `--full` or `full_every`, with a valid start
    marks = []  # (dataset, change column, watermark with the checks' extras, its readers)
    for name, users in readers.items():
        users = [check for check in users if check.id not in broken]
        setting = audit.datasets[name].incremental
        if not users:
            continue
        absent = [column for column in (setting.column, setting.created)
                  if column and column not in db.columns.get(name, {})]
        if absent:
            from integrity.sources import describe_missing

            present = dict.fromkeys(db.columns.get(name, {}))
            message = f"datasets.{name}.incremental: " + describe_missing(
                name, audit.datasets[name], absent[0], present)
            for check in users:
                broken[check.id] = message
            continue
        try:
            mark = _apart(db, lambda: _watermark(db, name, setting.column))
        except (SourceError, IntegrityError) as error:
            for check in users:
                broken[check.id] = f"datasets.{name}.incremental: {error}"
            continue
        numeric = mark is not None and "number" in mark
        overlap = setting.overlap_or_default()
        if numeric and isinstance(overlap, timedelta):
            for check in users:
                broken[check.id] = (f"datasets.{name}.incremental.overlap: {setting.column} "
                                    f"holds numbers, so the overlap is a number of them, "
                                    f"not a duration")
            continue
        if mark is not None:
            # What the next run will need of this snapshot, where it will start.
            ahead = Increment(dataset=name, column=setting.column,
                              since=_since(mark, overlap, numeric), keys=[], run_id=0)
            extras: dict = {}
            for check in users:
                try:
                    _merge_extras(extras, _apart(db, lambda: check.watermark_extras(
                        db, name, ahead)))
                except (SourceError, IntegrityError) as error:
                    broken[check.id] = f"datasets.{name}.incremental: {error}"
            mark = {**mark, **extras}
            if late is not None:
                late += [(check, name, mark) for check in users if check.id not in broken]
        users = [check for check in users if check.id not in broken]
        reason, scheduled = _full_reason(audit, name, setting, history, result, full)
        for check in users:
            # A full run that was asked for or is due still plans the incremental start it
            # replaces: the two answers are compared (`_reconcile`).
            why = check.incremental_problem(name) if scheduled else (
                reason or check.incremental_problem(name))
            state = None
            if why is None:
                try:
                    state = history.increment_state(audit.name, result.target, check.id, name)
                except HistoryError as error:
                    why = f"the run history could not be read: {error}"
            if why is None:
                why = _state_problem(audit, name, setting.column, state, result, numeric)
            if why is None and not scheduled:
                try:
                    why = _apart(db, lambda: _churn_problem(db, name, setting, _since(
                        state.watermark, overlap, numeric), state.run_id, shares))
                except (SourceError, IntegrityError) as error:
                    broken[check.id] = f"datasets.{name}.incremental: {error}"
                    continue
            if scheduled:
                notes[check.id] = f"ran in full ({name}): {reason}"
            if why is not None:
                if not scheduled:
                    notes[check.id] = f"ran in full ({name}): {why}"
                continue
            last = state.watermark
            check.increment = Increment(dataset=name, column=setting.column,
                                        since=_since(last, overlap, numeric), keys=state.keys,
                                        run_id=state.run_id, as_recorded=plain, recorded=last)
            check.increments[name] = check.increment
            if scheduled:
                forced[check.id] = "--full" if full else "full_every"
        marks.append((name, setting.column, mark, users))
    passed_over: dict[str, PassedOver] = {}
    for check in checks:
        if not check.increments or check.id in broken:
            continue
        why = None
        if check.needs_every_increment():
            for name in dict.fromkeys(check.config.datasets):
                if name in check.increments:
                    continue
                why = notes.get(check.id) or (
                    f"ran in full ({name}): {name} declares no `incremental:`, so what "
                    f"changes there would go unseen")
                break
        for name in check.increments if why is None else ():
            try:
                problem = _apart(db, lambda: check.incremental_start_problem(db, name))
            except (SourceError, IntegrityError) as error:
                if check.id in forced:  # the full run needs none of it
                    why = notes[check.id]
                    break
                broken[check.id] = f"datasets.{name}.incremental: {error}"
                break
            if problem is not None:
                why = f"ran in full ({name}): {problem}"
                break
        if check.id in forced:
            # It runs in full as asked, saying why (`notes`); without a reason against it,
            # from where an incremental run would have started, too.
            if why is None and check.id not in broken:
                passed_over[check.id] = PassedOver(check.increment, dict(check.increments),
                                                   forced[check.id])
            check.increment, check.increments = None, {}
            continue
        if why is not None or check.id in broken:
            if why is not None:
                notes[check.id] = why
            check.increment, check.increments = None, {}
    for name, column, mark, users in marks:
        result.watermarks.append(Watermark(name, column, mark, read_in_full=not any(
            name in check.increments for check in users)))
    return notes, passed_over


def _apart(db, read):
    """`read()` in a savepoint of its own (off SQLite), as a check's measurement is: a
    statement that fails there must not abort the snapshot every other check reads."""
    if db.dialect == "sqlite":
        return read()
    savepoint = db.connection.begin_nested()
    try:
        value = read()
    except BaseException:
        _rollback(savepoint)
        raise
    savepoint.commit()
    return value


def _merge_extras(extras: dict, more: dict) -> None:
    """Add what one check records with a watermark to what others did (a field that is a
    dict, such as `unsettled`, is merged key by key)."""
    for field, value in more.items():
        extras[field] = ({**extras[field], **value} if isinstance(value, dict)
                         and isinstance(extras.get(field), dict) else value)


def _reconcile(check: Check, start: PassedOver, full: CheckResult, engine: str, context,
               connection, limit: int, deadline: float | None, mask: set[str],
               history: History | None, result: AuditResult) -> list[CheckResult]:
    """Measure `check` again from the incremental start its full run passed over, on the
    same snapshot, and compare: the full answer `full` stands either way. A disagreement
    — in the violation count, the population or the violating keys — is a change no
    watermark saw, and is a finding of its own (`<check>:incremental`); an agreement is a
    note on `full`. Nothing of this run's answer, history or watermarks comes from the
    incremental measurement, and its failure is a note, never the check's error."""
    if deadline is not None and time.monotonic() >= deadline:
        full.notes.append(f"{start.trigger}: the incremental state was not compared with "
                          f"the full run: the run is out of time")
        return []
    kept = dict(vars(check))  # what the full measurement left (for the watermark): kept
    check.increment, check.increments = start.increment, dict(start.increments)
    try:
        # Its own sample limit: every key is compared, the sample only shows them.
        shadow = _run_one(check, engine, context, connection, None, limit, full.path, mask)
    finally:
        vars(check).clear()
        vars(check).update(kept)
        check.increment, check.increments = None, {}
    if len(shadow) != 1 or shadow[0].status == "error":
        why = shadow[0].error if len(shadow) == 1 else f"it gave {len(shadow)} results"
        full.notes.append(f"{start.trigger}: the incremental state could not be compared "
                          f"with the full run: {why}")
        return []
    incremental = shadow[0]
    theirs = set(incremental.violation_keys)
    mine = set(full.violation_keys)
    only_full = list(dict.fromkeys(key for key in full.violation_keys if key not in theirs))
    only_incremental = list(dict.fromkeys(key for key in incremental.violation_keys
                                          if key not in mine))
    agree = not only_full and not only_incremental and (
        full.violation_count, full.population) == (
        incremental.violation_count, incremental.population)
    finding = f"{check.id}:{INCREMENTAL}"
    if agree:
        full.notes.append(f"{start.trigger}: the incremental state agreed with the full run")
        if not _drifted_last(history, result, finding):
            return []
    else:
        full.notes.append(f"{start.trigger}: the incremental state disagreed with the full "
                          f"run; the full run's answer stands (see {finding})")
    return [drift_result(check, full, incremental, start, only_full, only_incremental,
                         limit, finding)]


# The label of the result that compares a check's full run with its incremental state:
# `<check id>:incremental`, as a suite labels its expectations `<suite>:<expectation>`.
INCREMENTAL = "incremental"
FULL_ONLY, INCREMENTAL_ONLY = "full run only", "incremental only"


def drift_result(check: Check, full: CheckResult, incremental: CheckResult,
                 start: PassedOver, only_full: list[tuple], only_incremental: list[tuple],
                 limit: int, finding: str) -> CheckResult:
    """The finding of a full run that disagrees with the incremental state — or, once they
    agree again, its pass (which resolves what the disagreement opened)."""
    columns = sorted({increment.column for increment in start.increments.values()})
    runs = sorted({increment.run_id for increment in start.increments.values()})
    keys = [*only_full, *only_incremental]
    parts = []
    if only_full:
        parts.append(f"the full run found {len(only_full):,} violation"
                     f"{'s' if len(only_full) != 1 else ''} the incremental state missed")
    if only_incremental:
        parts.append(f"the incremental state kept {len(only_incremental):,} violation"
                     f"{'s' if len(only_incremental) != 1 else ''} the full run did not find")
    if not parts and (full.violation_count, full.population) != (
            incremental.violation_count, incremental.population):
        parts.append(f"the full run counted {_counted(full)} where the incremental state "
                     f"counted {_counted(incremental)}")
    unseen = (f"a change no watermark saw: a row written with an old "
              f"{' or '.join(columns)}, or a delete")
    message = (f"{'; '.join(parts)} ({unseen})" if parts else
               "the incremental state agreed with the full run again")
    rule = (f"an incremental run of {check.id} from the state of run "
            f"{', '.join(map(str, runs))}, on the full run's snapshot, must find what the full "
            f"run finds — the same violations, population and keys; where they differ, the "
            f"full run's answer stands")
    rows = [{**dict(zip(full.key_columns, key)), "found_by": FULL_ONLY} for key in only_full]
    rows += [{**dict(zip(full.key_columns, key)), "found_by": INCREMENTAL_ONLY}
             for key in only_incremental]
    shown = rows if limit == 0 else rows[:limit]
    notes = [] if not parts else [
        f"usually a writer does not set {' or '.join(columns)} on every change: fix the "
        f"writer, or widen the incremental overlap; until then only a full run sees it"]
    return CheckResult(
        id=finding, kind=check.kind, datasets=list(full.datasets), path=full.path,
        description=f"{message} — {rule}", purpose=message, severity="critical",
        status="fail" if parts else "pass", violation_count=len(keys), population=None,
        notes=notes, duration_ms=incremental.duration_ms,
        columns=[*full.key_columns, "found_by"], sample=shown,
        sample_truncated=len(shown) < len(rows), sample_violations=len(shown),
        key_columns=list(full.key_columns), violation_keys=keys, engine=full.engine)


def _counted(outcome: CheckResult) -> str:
    count = outcome.violation_count or 0
    whole = "" if outcome.population is None else f" of {outcome.population:,}"
    return f"{count:,} violation{'s' if count != 1 else ''}{whole}"


def _drifted_last(history: History | None, result: AuditResult, finding: str) -> bool:
    """Whether the last recorded result of `finding` was a disagreement (its pass now
    resolves it: its keys in history, its alert)."""
    from integrity.history import HistoryError

    if history is None:
        return False
    try:
        return history.last_status(result.audit_name, result.target, finding) not in {
            None, "pass"}
    except HistoryError:
        return False  # the disagreement stays open until a run can read it


def _churn_problem(db, name: str, setting, since, run_id: int, shares: dict) -> str | None:
    """Why the checks of `name` run in full although they could start from `since`: more
    than `full_above` of its rows changed since — looking them up one by one would cost
    more than reading the table once."""
    import sqlalchemy as sa

    from integrity.checks import Increment, changed_since

    if setting.full_above >= 1:
        return None
    if (name, since) not in shares:
        rows = db.alias(name, "churn")
        changed = db.scalar(sa.select(sa.func.count()).select_from(rows).where(changed_since(
            db, rows, Increment(dataset=name, column=setting.column, since=since, keys=[],
                                run_id=run_id))))
        total = db.table_rows(name) if changed else 0
        if total < changed:
            # An estimate below the rows changed is stale (a table analyzed while empty,
            # or before a bulk load): the table's rows are counted instead.
            total = db.scalar(sa.select(sa.func.count()).select_from(db.alias(name, "rows")))
        shares[name, since] = (int(changed), int(total))
    changed, total = shares[name, since]
    if not changed or changed <= setting.full_above * max(total, changed):
        return None
    return (f"{changed:,} of about {max(total, changed):,} rows changed since run {run_id} "
            f"({changed / max(total, changed):.0%}), more than full_above "
            f"{setting.full_above:.0%}: reading the table once costs less")


def _watermark(db, name: str, column: str) -> dict | None:
    """The largest value of `column` in the dataset, in this run's snapshot: {"number":
    text} for a number column, {"time": ISO 8601 UTC} for a time (None: no value)."""
    import sqlalchemy as sa

    from integrity.values import EPOCH

    rows = db.alias(name, "rows")
    kind = db.columns[name].get(column)
    if not isinstance(kind, (sa.Numeric, sa.Integer)):
        raw = db.scalar(sa.select(sa.func.max(rows.c[column])))
        if raw is None:
            return None
        if isinstance(kind, (sa.DateTime, sa.Date, sa.String)) or not isinstance(
                raw, (int, float, Decimal)):
            newest = db.scalar(sa.select(db.newest(name, rows, column)))
            if newest is None:
                return None
            moment = EPOCH + timedelta(microseconds=int(newest) * 1_000_000 // db.units)
            return {"time": moment.isoformat()}
    raw = db.scalar(sa.select(sa.func.max(rows.c[column])))
    return None if raw is None else {"number": str(raw)}


def _since(mark: dict, overlap, numeric: bool) -> datetime | int | float:
    """Where a run starting from watermark `mark` starts: the mark minus the overlap."""
    if numeric:
        return _number(mark["number"]) - overlap
    return datetime.fromisoformat(mark["time"]) - (
        overlap if isinstance(overlap, timedelta) else timedelta(seconds=overlap))


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _full_reason(audit: Audit, name: str, setting, history: History | None,
                 result: AuditResult, full: bool) -> tuple[str | None, bool]:
    """Why every check of dataset `name` runs in full this time (None: they may not), and
    whether only because it was asked for (`--full`) or is due (`full_every`) — not for
    want of a run history to start from."""
    from integrity.history import HistoryError
    from integrity.units import format_duration

    if history is None:
        return ("--full" if full else "no run history to start from"), False
    if full:
        return "--full", True
    if setting.full_every is None:
        return None, False
    try:
        last = history.last_full_read(audit.name, result.target, name)
    except HistoryError as error:
        return f"the run history could not be read: {error}", False
    if last is None:
        return (f"full_every {format_duration(setting.full_every)}: never read in full "
                f"before"), True
    if result.now - last >= setting.full_every:
        return (f"full_every {format_duration(setting.full_every)}: last read in full at "
                f"{last.isoformat().replace('+00:00', 'Z')}"), True
    return None, False


def _state_problem(audit: Audit, name: str, column: str, state, result: AuditResult,
                   numeric: bool) -> str | None:
    """Why the last run of a check cannot be where its incremental run starts."""
    if state is None:
        return "no earlier run of this check on this target"
    run = f"run {state.run_id}"
    if state.change_column is None:
        return f"{run} recorded no watermark for {name}"
    if state.change_column != column or state.config_hash != audit.config_hash:
        return f"the audit file changed since {run}"
    if state.watermark is None:
        return f"{name} had no rows in {run}"
    if ("number" in state.watermark) != numeric:
        return f"{column} holds other values than in {run}"
    if result.now < state.now:
        return f"this run's now is before {run}'s"
    if state.violation_count != len(state.keys):
        return (f"{run} kept {len(state.keys):,} of its {state.violation_count or 0:,} "
                f"violations' keys")
    if len(state.keys) > MOST_KEYS_RECHECKED:
        return (f"{len(state.keys):,} keys violated in {run}: looking each up again costs "
                f"about what a full run does")
    return None


def _choose(check: Check, dialect: str) -> tuple[str, str | None]:
    """`engine: auto`: the database when it can express the check, else pandas — and why."""
    try:
        problems = check.sql_problems(dialect)
    except (IntegrityError, ValueError):
        return "sql", None  # the check's own error is reported where it runs
    if problems:
        return "pandas", f"engine auto: pandas, because {problems[0]}"
    return "sql", None


def _baseline(history: History, audit: str, target: str, now: datetime, check_id: str,
              group: str, runs_back: int, window: timedelta | None):
    """A metric group's values in the runs of this target recorded before this one: the last
    `runs_back`, or with a `window` those of runs in [now − window, now). One clock: the
    run's own `now`, as recorded for every run."""
    if window is not None:
        return history.trailing_values(audit, target, check_id, group, before=now,
                                       since=now - window)
    return history.trailing_values(audit, target, check_id, group, before=now,
                                   runs_back=runs_back)


def _mask(audit: Audit, check: Check) -> set[str]:
    columns = set(audit.config.mask)
    for dataset in _safe_columns(check):
        columns |= set(audit.datasets[dataset].mask)
    return columns


def _run_one(check: Check, engine: str, context, connection, problem: str | None, limit: int,
             path: str, mask: set[str]) -> list[CheckResult]:
    """The check's result — or results, for a check that yields several (a GX suite)."""
    if problem is not None:
        return [errored(check.config, _datasets(check), problem, path, _describe(check))]
    began = time.perf_counter()
    measure = check.measure if engine == "pandas" else check.measure_sql
    # A savepoint per check: a failing statement must not abort the shared snapshot
    # (SQLite does not abort a transaction on error, and pysqlite's savepoints are unreliable).
    # A probe has no connection at all.
    savepoint = None if connection is None or connection.dialect.name == "sqlite" else \
        connection.begin_nested()
    # An incremental check finds what it examines by index: plan for that, in its savepoint.
    lookups = engine == "sql" and savepoint is not None and bool(
        check.increment or check.increments)
    try:
        if lookups:
            context.index_lookups(True)
        measurement = measure(context)
        if lookups:
            context.index_lookups(False)
        if savepoint is not None:
            savepoint.commit()
    except IntegrityError as error:
        _rollback(savepoint)
        return [errored(check.config, _datasets(check), str(error), path, _describe(check),
                        (time.perf_counter() - began) * 1000)]
    except Exception as error:  # noqa: BLE001 — one crashing check must not hide the others
        _rollback(savepoint)
        log.debug("check %s crashed\n%s", check.id, traceback.format_exc())
        message = f"the check crashed: {type(error).__name__}: {error}"
        return [errored(check.config, _datasets(check), message, path, _describe(check),
                        (time.perf_counter() - began) * 1000)]
    elapsed = (time.perf_counter() - began) * 1000
    parts = measurement if isinstance(measurement, list) else [measurement]
    outcomes = [measured(check, part, elapsed / max(1, len(parts)), limit, path, mask)
                for part in parts]
    for outcome in outcomes:
        outcome.engine = engine
    if len(outcomes) == 1:
        _when_the_filter_matches_nothing(check, engine, context, outcomes[0])
    return outcomes


def _when_the_filter_matches_nothing(check: Check, engine: str, context,
                                     outcome: CheckResult) -> None:
    """An empty population where the dataset has rows is a filter that matched none of
    them — usually a value spelled otherwise than in the data (`sent` for `SENT`). Never a
    quiet pass: a note, and the check's `on_empty` status (warn by default)."""
    config = check.config
    dataset = getattr(config, "dataset", None)
    if not config.where or outcome.population != 0 or outcome.status == "error" or not dataset:
        return
    if engine == "pandas":
        total = len(context.frame(dataset))
        matching = len(context.rows(dataset, config.where))
    else:
        rows = context.alias(dataset, "rows")
        total = context.count(dataset, rows)
        matching = context.count(dataset, rows, context.where(dataset, rows, config.where))
    if total == 0 or matching > 0:
        return
    outcome.notes.append(f"the filter ({describe(config.where)}) matches none of the "
                         f"{total:,} rows of {dataset}: values compare exactly (case "
                         f"included); on_empty: {config.on_empty}")
    if config.on_empty == "fail":
        outcome.status = LEVEL_STATUS[config.severity]
    elif config.on_empty == "warn" and outcome.status in {"pass", "info"}:
        outcome.status = "warn"
    elif config.on_empty == "info" and outcome.status == "pass":  # a metric's setting
        outcome.status = "info"


def _psycopg(source) -> bool:
    return source.url.get_driver_name() in {"psycopg", "psycopg2"}


def _rollback(savepoint) -> None:
    if savepoint is not None and savepoint.is_active:
        try:
            savepoint.rollback()
        except Exception:  # noqa: BLE001 — a lost connection; the run loop says so once
            if not savepoint.connection.invalidated:
                raise


class ConnectionLost(Exception):
    """The audited database's connection died mid-run: the checks after it cannot run."""


def _safe_columns(check: Check) -> dict[str, list[str]]:
    try:
        return check.columns()
    except (IntegrityError, ValueError):
        return {}


def _datasets(check: Check) -> list[str]:
    return list(check.config.datasets)


def _describe(check: Check) -> str:
    try:
        return check.describe()
    except Exception:  # noqa: BLE001 — a description must never turn an error into a crash
        return check.config.description or check.kind
