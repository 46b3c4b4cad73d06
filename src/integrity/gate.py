"""The gate: the exit code a scheduler or a CI pipeline acts on.

Stable and documented (README, "Exit codes"); the order below is the
priority when several apply:

    4  ROLLBACK     during a post-deploy watch, a `rollback_on` check failed —
                    it wins even over 2: the checks that decide a rollback ran
                    and breached, whatever else could not run
    2  AUDIT_ERROR  the audit could not run, or a check errored — the verdict
                    is incomplete, so it can never pass
    1  VIOLATIONS   a check reached the fail level (default: critical, i.e.
                    status `fail`; `--fail-on warning` also counts `warn`)
    0  OK           the gate passed
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrity.results import AuditResult

FAIL_ON = ("critical", "warning")


class ExitCode(IntEnum):
    OK = 0
    VIOLATIONS = 1
    AUDIT_ERROR = 2
    ROLLBACK = 4  # 3 is `integrity run`'s "another run holds the lock" (operations.Locked)


def failing_statuses(fail_on: str) -> set[str]:
    return {"fail", "warn"} if fail_on == "warning" else {"fail"}


def exit_code(result: AuditResult) -> int:
    """The exit code of a finished run (see `decide`)."""
    return int(decide(result))


def decide(result: AuditResult) -> ExitCode:
    if result.rollback:
        return ExitCode.ROLLBACK
    if result.errors or not result.checks or any(c.status == "error" for c in result.checks):
        return ExitCode.AUDIT_ERROR
    failing = failing_statuses(result.fail_on)
    if any(check.status in failing for check in result.checks):
        return ExitCode.VIOLATIONS
    return ExitCode.OK
