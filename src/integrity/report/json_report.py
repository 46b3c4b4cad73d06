"""report.json: the machine-readable verdict (schema documented in docs/report-json.md).

Bump SCHEMA_VERSION's major number when a field changes meaning or goes away;
adding a field is a minor bump.
"""

from __future__ import annotations

import json
from typing import Any

from integrity import __version__
from integrity.results import AuditResult, CheckResult

SCHEMA_VERSION = "1.0"


def document(result: AuditResult) -> dict[str, Any]:
    from integrity.gate import ExitCode

    code = result.exit_code
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
            "dialect": result.dialect,
            "sample_limit": result.sample_limit,
        },
        "gate": {"fail_on": result.fail_on, "passed": code == ExitCode.OK,
                 "exit_code": code, "outcome": ExitCode(code).name.lower()},
        "summary": {"checks": len(result.checks), **result.counts,
                    "violations": sum(c.violation_count or 0 for c in result.checks)},
        "errors": list(result.errors),
        "datasets": [{"name": d.name, "rows": d.rows, "columns": d.columns,
                      "seconds": round(d.seconds, 4), "sql": d.sql} for d in result.datasets],
        "checks": [check_document(check) for check in result.checks],
    }


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
        "thresholds": check.thresholds,
        "sql": check.sql,
        "notes": check.notes,
        "error": check.error,
        "duration_ms": round(check.duration_ms, 2),
        "key_columns": check.key_columns,
        "group_column": check.group_column,
        "context_column": check.context_column,
        "columns": check.columns,
        "violations": check.sample,
        "violations_truncated": check.sample_truncated,
    }


def render(result: AuditResult) -> str:
    return json.dumps(document(result), indent=2, ensure_ascii=False) + "\n"


def _time(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")
