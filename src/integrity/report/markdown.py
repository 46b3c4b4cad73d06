"""summary.md: the verdict for a pull request or a CI job summary ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from integrity.gate import exit_code
from integrity.report.json_report import lifecycle_counts, lifecycle_totals
from integrity.report.junit import summary
from integrity.report.text import watch_line
from integrity.results import STATUS_RANK, AuditResult

VERDICT = {0: "✅ gate passed", 1: "❌ gate failed: violations",
           2: "⚠️ audit error: the verdict is incomplete",
           4: "🛑 ROLLBACK criterion met"}


def render(result: AuditResult, limit: int = 50) -> str:
    code = exit_code(result)
    counts = result.counts
    lines = [f"### integrity · {result.audit_name}: {VERDICT[code]} (exit {code})", "",
             f"{len(result.checks)} checks: " + ", ".join(
                 f"{counts[s]} {s}" for s in ("fail", "warn", "error", "info", "pass")
                 if counts[s]) + f" · gate fails on **{result.fail_on}** · data as of "
             f"{result.now:%Y-%m-%d %H:%M} UTC"]
    totals = lifecycle_totals(result)
    if totals:
        lines[-1] += (f" · {totals['new']} new, {totals['persisting']} persisting, "
                      f"{totals['resolved']} resolved violations")
    for line in result.rollback:
        lines += ["", f"> **ROLLBACK criterion met:** {_cell(line)}"]
    if result.watch:
        lines += ["", watch_line(result.watch)]
    for error in result.errors:
        lines += ["", f"> **Audit error:** {_cell(error)}"]
    for warning in result.warnings:
        lines += ["", f"> **Warning:** {_cell(warning)}"]
    shown = [c for c in sorted(result.checks, key=lambda c: -STATUS_RANK[c.status])
             if c.status != "pass"]
    if shown:
        lines += ["", "| status | check | violations | new | details |", "|---|---|---:|---:|---|"]
        for check in shown[:limit]:
            life = lifecycle_counts(check)
            detail = check.error if check.status == "error" else summary(check).split(": ", 1)[-1]
            if check.purpose:
                detail = f"{check.purpose}: {detail}"
            lines.append(f"| {check.status.upper()} | `{check.id}` | "
                         f"{'' if check.violation_count is None else f'{check.violation_count:,}'}"
                         f" | {life['new'] if life else ''} | {_cell(detail)} |")
        if len(shown) > limit:
            lines.append(f"| | … {len(shown) - limit} more | | | |")
    lines += ["", f"{counts['pass']} checks passed."]
    return "\n".join(lines) + "\n"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")
