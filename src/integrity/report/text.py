"""The console summary: what a cron mail or a CI log shows."""

from __future__ import annotations

from integrity.gate import exit_code
from integrity.results import STATUS_RANK, AuditResult

_OUTCOME = {0: "passed", 1: "FAILED (violations)", 2: "ERROR (audit incomplete)",
            4: "ROLLBACK (a rollback criterion of the watch was met)"}


def watch_line(watch: dict) -> str:
    """Where a run stands in its post-deploy watch, and what changed since the deploy."""
    changed = [c for c in watch.get("changes", []) if c.get("new_since_deploy")
               or c.get("changed")]
    hours = watch["hours"]
    return (f"watch #{watch['id']} of deploy {watch['deploy']}: hour {hours:g} of "
            f"{watch['duration_hours']:g}; " + (
                f"{len(changed)} check(s) changed since the deploy: " + ", ".join(
                    c["check"] + (f" (+{c['new_since_deploy']} new)" if c.get(
                        "new_since_deploy") else "") for c in changed[:8])
                if changed else "nothing changed since the deploy"))


def summary_lines(result: AuditResult, *, all_checks: bool = False) -> list[str]:
    lines = [f"error: {error}" for error in result.errors]
    lines += [f"ROLLBACK criterion met: {line}" for line in result.rollback]
    if result.watch:
        lines.append(watch_line(result.watch))
    width = max((len(check.id) for check in result.checks), default=10)
    for check in sorted(result.checks, key=lambda c: -STATUS_RANK[c.status]):
        if check.status == "pass" and not all_checks:
            continue
        if check.status == "error":
            detail = "not run (see the error above)" if check.error in result.errors else (
                check.error or "")
        elif check.value_text and check.kind in {"metric", "freshness"}:
            detail = f"{check.value_text}; {check.violation_count} breach(es)"
        else:
            rate = "" if check.rate is None else f" ({check.rate:.2%})"
            population = "" if check.population is None else f" of {check.population:,}"
            detail = f"{check.violation_count:,} violation(s){population}{rate}"
        lines.append(f"{check.status.upper():<5} {check.id:<{width}}  {detail}")
    counts = result.counts
    tally = ", ".join(f"{counts[s]} {s}" for s in ("fail", "warn", "error", "info", "pass")
                      if counts[s])
    code = exit_code(result)
    lines.append(f"{result.audit_name}: {len(result.checks)} checks ({tally or 'none'}) in "
                 f"{result.duration_seconds:.1f}s; gate (fail on {result.fail_on}) "
                 f"{_OUTCOME[code]}, exit {code}")
    return lines
