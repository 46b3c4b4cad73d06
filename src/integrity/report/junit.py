"""junit.xml: one testcase per check, for the CI systems that read JUnit.

A check at or above the gate's fail level is a <failure> (its summary, then
sample keys); a check that could not run is an <error>; a warning below the
fail level passes, with the warning in <system-out> so it is still visible.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from integrity.gate import failing_statuses
from integrity.results import AuditResult, CheckResult


def render(result: AuditResult) -> str:
    failing = failing_statuses(result.fail_on)
    suite = ET.Element("testsuite", {
        "name": f"integrity.{result.audit_name}",
        "tests": str(len(result.checks) + len(result.errors)),  # the (audit) cases too
        "failures": str(sum(c.status in failing for c in result.checks)),
        "errors": str(sum(c.status == "error" for c in result.checks) + len(result.errors)),
        "skipped": "0",
        "time": f"{result.duration_seconds:.3f}",
        "timestamp": result.started_at.replace(tzinfo=None).isoformat(timespec="seconds"),
    })
    for error in result.errors:
        case = ET.SubElement(suite, "testcase", {"classname": f"integrity.{result.audit_name}",
                                                 "name": "(audit)", "time": "0"})
        ET.SubElement(case, "error", {"message": error, "type": "audit_error"}).text = error
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"integrity.{result.audit_name}.{check.kind}", "name": check.id,
            "time": f"{check.duration_ms / 1000:.3f}"})
        if check.status == "error":
            ET.SubElement(case, "error", {"message": check.error or "error",
                                          "type": "check_error"}).text = check.error
        elif check.status in failing:
            ET.SubElement(case, "failure", {"message": summary(check),
                                            "type": check.status}).text = details(check)
        elif check.status in {"warn", "info"}:
            ET.SubElement(case, "system-out").text = f"{check.status}: {summary(check)}"
    root = ET.Element("testsuites", {"name": "integrity"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def summary(check: CheckResult) -> str:
    if check.value_text and check.kind in {"metric", "freshness"}:
        return f"{check.status.upper()} {check.id}: {check.value_text}"
    count = check.violation_count or 0
    population = f" of {check.population:,}" if check.population is not None else ""
    return (f"{check.status.upper()} {check.id}: {count:,} violation{'s' if count != 1 else ''}"
            f"{population}")


def details(check: CheckResult, keys: int = 10) -> str:
    lines = [check.description]
    if check.violation_keys:
        shown = ", ".join("/".join(str(v) for v in key) for key in check.violation_keys[:keys])
        more = len(check.violation_keys) - keys
        lines.append(f"keys ({', '.join(check.key_columns)}): {shown}"
                     + (f" … and {more:,} more" if more > 0 else ""))
    return "\n".join(lines)
