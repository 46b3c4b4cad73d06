"""One audit job, as cron or CI runs it: lock → run → history → reports → notifications.

The order matters. The output folder is proven writable and the lock taken
before anything connects; history is recorded before the reports are written
(the reports show the lifecycle); notifications go out after the reports
exist (they link to them), and the reports are written once more with what
the notifications did. A report (or $GITHUB_STEP_SUMMARY) that cannot be
written makes the run an audit error: the other reports are rewritten and the
recorded run amended to say so. A timeout stops the run where it is, errors
the checks that did not run, and is recorded like any other outcome.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from integrity.config import Audit
from integrity.errors import IntegrityError
from integrity.results import AuditResult, CheckResult

log = logging.getLogger(__name__)


@dataclass
class JobOptions:
    output: str
    sample_limit: int | None = None
    fail_on: str = "critical"
    now: datetime | None = None
    engine: str | None = None
    full: bool = False                  # examine every row of incremental datasets
    history: str | None = None          # URL, or None for no history
    timeout: float | None = None        # seconds for the whole run
    lock: Path | None = None
    notify: bool = True                 # send the audit's notifications
    notify_dry_run: str | None = None   # write the messages to this file instead
    on_result: Callable[[CheckResult], None] | None = None
    # Called with the result and the history store after the checks ran and before the run
    # is recorded: a post-deploy watch compares with its deploy there (watch.py).
    before_record: Callable[[AuditResult, object], None] | None = None


@dataclass
class JobOutcome:
    result: AuditResult
    written: dict[str, Path] = field(default_factory=dict)
    deliveries: list = field(default_factory=list)


def execute(audit: Audit, options: JobOptions) -> JobOutcome:
    """Run the job; IntegrityError (unwritable output, Locked, history) before any check runs."""
    from integrity.operations import audit_lock
    from integrity.report import prepare_output

    import time

    # One deadline for the whole job: history waits, checks and notifications share it.
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    prepare_output(options.output)  # an unwritable folder must not cost a whole run
    store = open_history(options.history, audit, deadline)
    lock = audit_lock(options.lock) if options.lock else _nothing()
    try:
        with lock:
            return _run(audit, options, store, deadline)
    finally:
        if store is not None:
            store.dispose()


def _run(audit: Audit, options: JobOptions, store, deadline: float | None) -> JobOutcome:
    import time

    from integrity.notify import deliver
    from integrity.runner import run_audit

    left = None if deadline is None else max(0.001, deadline - time.monotonic())
    result = run_audit(audit, now=options.now, sample_limit=options.sample_limit,
                       fail_on=options.fail_on, engine=options.engine, history=store,
                       on_result=options.on_result, timeout=left, full=options.full,
                       timeout_text=None if options.timeout is None else f"{options.timeout:g}s")
    if options.before_record is not None:
        _stage(result, "comparing with the deploy", lambda: options.before_record(result, store))
    if store is not None:
        # The checks ran; without history their lifecycle and acceptances are unknown.
        _stage(result, "recording the run history", lambda: store.apply(result))
    recorded = len(result.errors)
    formats = audit.config.output.formats
    outcome = JobOutcome(result, _write(result, options.output, formats))
    keep = audit.config.output.keep_runs if result.run_id is not None else 0
    if audit.config.notify and options.notify:
        report = outcome.written.get("html")
        if report and keep and "html" in formats:
            report = _run_folder(options.output, result.run_id) / "report.html"
        outcome.deliveries = _stage(result, "sending notifications", lambda: deliver(
            result, audit, store, str(report.resolve()) if report else None, deadline,
            options.notify_dry_run)) or []
        result.notifications = outcome.deliveries
        if deadline is not None and time.monotonic() >= deadline:
            result.errors.append(f"the run exceeded its timeout of {options.timeout:g}s "
                                 f"while sending notifications")
    _stage(result, "writing $GITHUB_STEP_SUMMARY", lambda: _step_summary(result))
    if (audit.config.notify and options.notify) or len(result.errors) > recorded:
        # Once more, with what the notifications did and any output that failed: no
        # report may claim a verdict the process does not give.
        outcome.written = _write(result, options.output, formats) or outcome.written
    if keep:
        _stage(result, "keeping the run's own report", lambda: _keep_run(
            result.run_id, options.output, outcome.written, keep))
    if store is not None and result.run_id is not None and len(result.errors) > recorded:
        _stage(result, "amending the run history", lambda: store.amend(result))
    return outcome


def _run_folder(output: str, run_id: int) -> Path:
    return Path(output) / "runs" / str(run_id)


def _keep_run(run_id: int, output: str, written: dict[str, Path], keep: int) -> None:
    """A copy of the run's report.html and report.json in runs/<run id>/ (its alerts link
    there; the next run overwrites only the latest), and only the newest `keep` of them."""
    import shutil

    if not any(name in written for name in ("html", "json")):
        return  # neither was written (or asked for): no empty folder
    folder = _run_folder(output, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("html", "json"):
        if name in written:
            shutil.copyfile(written[name], folder / written[name].name)
    folders = sorted((p for p in (Path(output) / "runs").glob("*")
                      if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _stage(result: AuditResult, doing: str, action: Callable):
    """Run one stage after the checks; a failure there is an audit error on the result
    (exit 2, in every report still written), never a crash that loses the others."""
    try:
        return action()
    except Exception as error:  # noqa: BLE001 — fail closed, and keep what was done
        _record_failure(result, doing, error)
        return None


def _record_failure(result: AuditResult, doing: str, error: Exception) -> None:
    if isinstance(error, IntegrityError):
        message = str(error)  # ours: already one line that says what and where
    else:
        log.debug("%s failed\n%s", doing, traceback.format_exc())
        text = " ".join(str(error).split()) or "no message"
        message = f"{doing} failed: {type(error).__name__}: {text[:300]}"
    if message not in result.errors:
        result.errors.append(message)


def _write(result: AuditResult, directory: str, formats) -> dict[str, Path]:
    """The reports written; a file that cannot be written is an audit error (exit 2)."""
    from integrity.errors import OutputError
    from integrity.report import write_reports

    try:
        return write_reports(result, directory, formats)
    except OutputError as error:
        _record_failure(result, "writing the reports", error)
        return error.written
    except Exception as error:  # noqa: BLE001 — a renderer's crash must not lose the run
        _record_failure(result, "writing the reports", error)
        return {}


def _step_summary(result: AuditResult) -> None:
    """The Markdown verdict appended to $GITHUB_STEP_SUMMARY (GitHub Actions), whatever
    the audit's output formats."""
    from integrity.report import markdown

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(markdown.render(result) + "\n")
    except OSError as error:
        result.errors.append(f"cannot write $GITHUB_STEP_SUMMARY ({path}): "
                             f"{error.strerror or error}")


def open_history(url: str | None, audit: Audit, deadline: float | None = None):
    """The run history at `url`, ready to write — never the audited database (refused
    before anything is written) — or None without a URL."""
    if not url:
        return None
    from integrity.history import History

    store = History(url, deadline)
    try:
        refuse_the_audited_database(store, audit)
        store.ensure()
    except BaseException:
        store.dispose()
        raise
    return store


def refuse_the_audited_database(store, audit: Audit) -> None:
    """IntegrityError if the history `store` would write where `audit` reads, decided by
    the servers' identities (`identity`) before anything is written to either."""
    from integrity.history import HistoryError, is_same_database
    from integrity.identity import shares_tables

    audited = _audited_identity(audit)
    if audited is None:
        # The audited database cannot say who it is (the run will report why): the
        # URLs' spelling is all there is to go on.
        same = is_same_database(str(store.url.render_as_string(hide_password=False)),
                                audit.connection.url)
    else:
        history = store.identity()
        schemas = {dataset.schema_ or audited.schema for dataset in audit.datasets.values()}
        same = history is not None and shares_tables(history, audited, schemas)
    if same:
        raise HistoryError(
            f"the run history ({store.display_url}) is the audited database, which integrity "
            f"never writes to (the server identifies both as one: a different spelling of the "
            f"same database); give --history or history.url another database")


def _audited_identity(audit: Audit):
    """The audited database's identity, or None when it cannot be reached."""
    from sqlalchemy.engine import make_url

    from integrity.identity import identify, sqlite_file
    from integrity.sources import open_source

    try:
        url = make_url(audit.connection.url)
    except Exception:  # noqa: BLE001 — an unusable URL is reported when the run connects
        return None
    if url.get_backend_name() == "sqlite":
        return sqlite_file(url.database) if url.database else None
    try:
        source = open_source(audit.connection)
    except IntegrityError:
        return None
    source.retries = 0  # the run itself retries; this question is not worth waiting for
    try:
        with source.connect() as connection:
            return identify(connection)
    except IntegrityError:
        return None
    finally:
        source.dispose()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
