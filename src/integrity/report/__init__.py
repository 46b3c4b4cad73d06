"""Reports: the files a reviewer opens and a machine reads.

`report.html` is one self-contained page (no network, no JavaScript needed);
`report.json` follows the documented, versioned schema in docs/report-json.md.
Writing fails as OutputError, never with a traceback, and the output folder is
checked before the audit runs (`prepare_output`) so a long audit is not lost
to an unwritable path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from integrity.errors import OutputError

if TYPE_CHECKING:
    from integrity.results import AuditResult

FORMATS = ("html", "json", "junit", "markdown")


def prepare_output(directory: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(f"cannot write reports to {path}: {reason}") from None
    return path


def write_reports(result: AuditResult, directory: str | os.PathLike,
                  formats: tuple[str, ...] | list[str] = FORMATS) -> dict[str, Path]:
    from integrity.report import html, json_report, junit, markdown

    path = prepare_output(directory)
    writers = {"json": (json_report.render, "report.json"), "html": (html.render, "report.html"),
               "junit": (junit.render, "junit.xml"), "markdown": (markdown.render, "summary.md")}
    written, failures = {}, []
    for name in formats:  # one unwritable file must not cost the others
        render, filename = writers[name]
        target = path / filename
        try:
            _atomic_write(target, render(result))
        except OSError as error:
            failures.append(f"cannot write {target}: {error.strerror or error}")
            continue
        except Exception as error:  # noqa: BLE001 — a renderer's crash costs only its file
            text = " ".join(str(error).split()) or "no message"
            failures.append(f"cannot write {target}: {type(error).__name__}: {text[:300]}")
            continue
        written[name] = target
    if failures:
        raise OutputError("; ".join(failures), written)
    return written


def _atomic_write(target: Path, text: str) -> None:
    """Write via a temporary file so a reader never sees half a report."""
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk or a kill: no half-written leftovers
        raise
