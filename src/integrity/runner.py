"""Run an audit: connect, pull each dataset once, run every check, collect results.

A problem is contained where it happens: a missing table errors the checks
that read it, a missing column errors the checks that name it, a crashing
check errors itself — every other check still runs, and the audit as a whole
can then never pass (see `gate`).
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime, timezone

from integrity.checks import CHECKS, Check
from integrity.config import Audit
from integrity.errors import IntegrityError, SourceError
from integrity.results import AuditResult, CheckResult, DatasetLoad, errored, measured

log = logging.getLogger(__name__)


def run_audit(audit: Audit, *, now: datetime | None = None, sample_limit: int | None = None,
              fail_on: str = "critical") -> AuditResult:
    from integrity.sources import (Frames, available_columns, dataset_query, describe_missing,
                                   open_source, read_frame, sql_text)

    started = datetime.now(timezone.utc)
    now = (now or started).astimezone(timezone.utc)
    limit = audit.config.output.sample_limit if sample_limit is None else sample_limit
    checks = [CHECKS[config.kind](config, audit) for config in audit.checks]
    paths = {check.id: f"checks[{index}]" for index, check in enumerate(checks)}
    result = AuditResult(audit_name=audit.name, audit_file=audit.file,
                         config_hash=audit.config_hash, engine="pandas", database="",
                         dialect=None, started_at=started, finished_at=started, now=now,
                         checks=[], fail_on=fail_on, sample_limit=limit)

    def fail_all(message: str) -> AuditResult:
        result.errors.append(message)
        result.checks = [errored(check.config, _datasets(check), message, paths[check.id],
                                 _describe(check)) for check in checks]
        result.finished_at = datetime.now(timezone.utc)
        return result

    try:
        source = open_source(audit.connection)
    except SourceError as error:
        return fail_all(str(error))
    result.database, result.dialect = source.display_url, source.dialect

    broken: dict[str, str] = {}
    needs: dict[str, list[str]] = {}
    for check in checks:
        try:
            for dataset, columns in check.columns().items():
                needs[dataset] = list(dict.fromkeys(needs.get(dataset, []) + columns))
        except (IntegrityError, ValueError) as error:
            broken[check.id] = str(error)

    frames = {}
    try:
        with source.connect() as connection:
            if source.dialect in {"postgresql", "mysql", "mariadb"}:
                # One snapshot for every dataset: a counter and its event log
                # read moments apart could disagree without anything being wrong.
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            for name, wanted in needs.items():
                dataset = audit.datasets[name]
                users = [c for c in checks if name in _safe_columns(c) and c.id not in broken]
                began = time.perf_counter()
                try:
                    present = available_columns(connection, source, name, dataset)
                except SourceError as error:
                    for check in users:
                        broken[check.id] = str(error)
                    continue
                for check in users:
                    absent = [c for c in _safe_columns(check)[name] if c not in present]
                    if absent:
                        broken[check.id] = describe_missing(name, dataset, absent[0], present)
                loadable = [column for column in wanted if column in present]
                try:
                    frames[name] = read_frame(connection, source, name, dataset, loadable)
                except SourceError as error:
                    for check in users:
                        broken.setdefault(check.id, str(error))
                    continue
                result.datasets.append(DatasetLoad(
                    name, len(frames[name]), loadable, time.perf_counter() - began,
                    sql_text(dataset_query(dataset, loadable), source)))
    except SourceError as error:
        source.dispose()
        return fail_all(str(error))

    data = Frames(audit=audit, source=source, frames=frames, now=now)
    try:
        for check in checks:
            result.checks.append(_run_one(check, data, broken.get(check.id), limit,
                                          paths[check.id]))
    finally:
        source.dispose()
    result.finished_at = datetime.now(timezone.utc)
    return result


def _run_one(check: Check, data, problem: str | None, limit: int, path: str) -> CheckResult:
    if problem is not None:
        return errored(check.config, _datasets(check), problem, path, _describe(check))
    began = time.perf_counter()
    try:
        measurement = check.measure(data)
    except IntegrityError as error:
        return errored(check.config, _datasets(check), str(error), path, _describe(check),
                       (time.perf_counter() - began) * 1000)
    except Exception as error:  # noqa: BLE001 — one crashing check must not hide the others
        log.debug("check %s crashed\n%s", check.id, traceback.format_exc())
        message = f"the check crashed: {type(error).__name__}: {error}"
        return errored(check.config, _datasets(check), message, path, _describe(check),
                       (time.perf_counter() - began) * 1000)
    elapsed = (time.perf_counter() - began) * 1000
    return measured(check, measurement, elapsed, limit, path)


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
