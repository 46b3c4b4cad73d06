"""One audit job, as cron or CI runs it: lock → run → history → reports → notifications.

The order matters. The output folder is proven writable and the lock taken
before anything connects; history is recorded before the reports are written
(the reports show the lifecycle); notifications go out after the reports
exist (they link to them), and the reports are written once more with what
the notifications did. A timeout stops the run where it is, errors the
checks that did not run, and is recorded like any other outcome.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from integrity.config import Audit
from integrity.errors import IntegrityError
from integrity.results import AuditResult, CheckResult


@dataclass
class JobOptions:
    output: str
    sample_limit: int | None = None
    fail_on: str = "critical"
    now: datetime | None = None
    engine: str | None = None
    history: str | None = None          # URL, or None for no history
    timeout: float | None = None        # seconds for the whole run
    lock: Path | None = None
    on_result: Callable[[CheckResult], None] | None = None


@dataclass
class JobOutcome:
    result: AuditResult
    written: dict[str, Path] = field(default_factory=dict)
    deliveries: list = field(default_factory=list)


def execute(audit: Audit, options: JobOptions) -> JobOutcome:
    """Run the job; IntegrityError (unwritable output, Locked, history) before any check runs."""
    from integrity.operations import audit_lock
    from integrity.report import prepare_output

    prepare_output(options.output)  # an unwritable folder must not cost a whole run
    store = _history(options.history)
    lock = audit_lock(options.lock) if options.lock else _nothing()
    try:
        with lock:
            return _run(audit, options, store)
    finally:
        if store is not None:
            store.dispose()


def _run(audit: Audit, options: JobOptions, store) -> JobOutcome:
    from integrity.notify import deliver
    from integrity.report import write_reports
    from integrity.runner import run_audit

    result = run_audit(audit, now=options.now, sample_limit=options.sample_limit,
                       fail_on=options.fail_on, engine=options.engine, history=store,
                       on_result=options.on_result, timeout=options.timeout)
    if store is not None:
        try:
            store.apply(result)
        except IntegrityError as error:
            # The checks ran; without history their lifecycle and acceptances are unknown.
            result.errors.append(str(error))
    formats = audit.config.output.formats
    outcome = JobOutcome(result, write_reports(result, options.output, formats))
    if audit.config.notify:
        report = outcome.written.get("html")
        outcome.deliveries = deliver(result, audit, store,
                                     str(report.resolve()) if report else None)
        result.notifications = outcome.deliveries
        outcome.written = write_reports(result, options.output, formats)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and "markdown" in formats:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(outcome.written["markdown"].read_text(encoding="utf-8") + "\n")
    return outcome


def _history(url: str | None):
    if not url:
        return None
    from integrity.history import History

    store = History(url)
    store.ensure()
    return store


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
