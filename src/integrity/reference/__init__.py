"""The reference schema, its data generator and the audit that checks it."""

from __future__ import annotations

from pathlib import Path


def reference_audit_path() -> Path:
    """audits/reference.yml of this checkout, or the copy packaged with the wheel."""
    candidates = [Path.cwd() / "audits" / "reference.yml",
                  Path(__file__).resolve().parents[3] / "audits" / "reference.yml",
                  Path(__file__).resolve().parent / "reference.yml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("audits/reference.yml is missing from this installation")
