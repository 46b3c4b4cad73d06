"""report.json: the machine-readable verdict (schema documented in docs/report-json.md).

Bump SCHEMA_VERSION's major number when a field changes meaning or goes away;
adding a field is a minor bump.
"""

from __future__ import annotations

import json
from typing import Any

from integrity import __version__
from integrity.gate import ExitCode, exit_code
from integrity.results import AuditResult, CheckResult

SCHEMA_VERSION = "1.2"


def document(result: AuditResult) -> dict[str, Any]:
    code = exit_code(result)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "integrity", "version": __version__},
        "audit": {"name": result.audit_name, "file": result.audit_file,
                  "config_hash": result.config_hash},
        "run": {
            "started_at": _time(result.started_at),
            "finished_at": _time(result.finished_at),
            "duration_seconds": round(result.duration_seconds, 3),
            "now": _time(result.now),
            "engine": result.engine,
            "database": result.database,
            "target": result.target,
            "dialect": result.dialect,
            "sample_limit": result.sample_limit,
            "run_id": result.run_id,
            "history": result.history,
        },
        "gate": {"fail_on": result.fail_on, "passed": code == ExitCode.OK,
                 "exit_code": code, "outcome": ExitCode(code).name.lower()},
        "summary": {"checks": len(result.checks), **result.counts,
                    "violations": sum(c.violation_count or 0 for c in result.checks),
                    **lifecycle_totals(result)},
        "errors": list(result.errors),
        "warnings": list(result.warnings),
        "datasets": [{"name": d.name, "rows": d.rows, "columns": d.columns,
                      "seconds": round(d.seconds, 4), "sql": d.sql} for d in result.datasets],
        "checks": [check_document(check) for check in result.checks],
        "notifications": [_delivery(d) for d in result.notifications],
        "watch": None if result.watch is None else {**result.watch,
                                                      "rollback": list(result.rollback)},
    }


def _delivery(delivery) -> dict[str, Any]:
    return {"channel": delivery.channel, "target": delivery.target, "ok": delivery.ok,
            "attempts": delivery.attempts, "error": delivery.error, "checks": delivery.alerts,
            "suppressed": delivery.suppressed}


def check_document(check: CheckResult) -> dict[str, Any]:
    return {
        "id": check.id,
        "kind": check.kind,
        "path": check.path,
        "engine": check.engine,
        "datasets": check.datasets,
        "description": check.description,
        "severity": check.severity,
        "status": check.status,
        "violation_count": check.violation_count,
        "population": check.population,
        "rate": None if check.rate is None else round(check.rate, 6),
        "value": check.value,
        "value_text": check.value_text,
        "interval": None if check.interval is None else {
            "start": _time(check.interval[0]), "end": _time(check.interval[1])},
        "thresholds": check.thresholds,
        "sql": check.sql,
        "notes": check.notes,
        "error": check.error,
        "duration_ms": round(check.duration_ms, 2),
        "key_columns": check.key_columns,
        "group_column": check.group_column,
        "context_column": check.context_column,
        "columns": check.columns,
        "violations": [{**row, "_state": state} if state else row
                       for row, state in zip(check.sample, row_states(check))],
        "violations_truncated": check.sample_truncated,
        "violations_shown": check.sample_violations,
        "lifecycle": lifecycle_counts(check),
        "status_before_acceptance": check.status_before_acceptance,
        "tenants": check.tenant_counts,
        "trend": [{"run": run, "status": status, "violations": count}
                  for run, status, count in check.trend],
    }


def lifecycle_counts(check: CheckResult) -> dict[str, Any] | None:
    life = check.lifecycle
    if life is None:
        return None
    return {"previous_run": life.previous_run, "new": len(life.new),
            "persisting": len(life.persisting), "resolved": len(life.resolved),
            "accepted": len(life.accepted)}


def lifecycle_totals(result: AuditResult) -> dict[str, int]:
    counted = [lifecycle_counts(check) for check in result.checks]
    counted = [c for c in counted if c is not None]
    if not counted:
        return {}
    return {name: sum(c[name] for c in counted) for name in ("new", "persisting", "resolved",
                                                             "accepted")}


def row_states(check: CheckResult) -> list[str | None]:
    """Per sample row: new / persisting since … / accepted until … (None for context rows)."""
    from integrity.history import fingerprint

    life = check.lifecycle
    states: list[str | None] = []
    for row in check.sample:
        if life is None or (check.context_column and row.get(check.context_column) == "kept"):
            states.append(None)
            continue
        print_ = fingerprint(check.id, [row.get(column) for column in check.key_columns])
        if print_ in life.accepted:
            states.append(f"accepted until {life.accepted[print_][1].isoformat()}")
        elif print_ in life.persisting:
            first, count = life.persisting[print_]
            states.append(f"since {first:%Y-%m-%d %H:%M} ({count} runs)")
        elif print_ in life.new:
            states.append("new")
        else:
            states.append(None)
    return states


def render(result: AuditResult) -> str:
    return json.dumps(document(result), indent=2, ensure_ascii=False) + "\n"


def _time(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")
