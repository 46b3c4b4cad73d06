"""report.html: one self-contained page, summary first, readable without JavaScript.

The Jinja environment is built once, with autoescaping on: sample rows are
data from the audited database and must never become markup. Trends are
inline SVG; the only script is an optional filter box and expand/collapse
buttons — without JavaScript every section is still there and readable.
"""

from __future__ import annotations

import re
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from integrity import __version__
from integrity.gate import exit_code
from integrity.report.json_report import lifecycle_counts, lifecycle_totals, row_states
from integrity.results import STATUS_RANK, AuditResult, CheckResult

VERDICTS = {0: ("passed", "Gate passed"), 1: ("failed", "Gate failed: violations"),
            2: ("error", "Audit error: the verdict is incomplete"),
            4: ("rollback", "ROLLBACK criterion met")}
STATUS_COLOURS = {"pass": "#1a7f37", "info": "#0969da", "warn": "#9a6700", "fail": "#cf222e",
                  "error": "#8250df"}


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("integrity", "report/templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True, bytecode_cache=_bytecode_cache())
    env.filters.update(percent=_percent, number=_number, cell=_cell, breakable=_breakable)
    env.globals.update(sparkline=sparkline, lifecycle=lifecycle_counts, states=row_states)
    return env


def _bytecode_cache():
    """Compiled templates kept between runs (compiling the report's template costs a cron
    run ~0.2 s); none when the cache folder cannot be made. Jinja keys each entry by the
    template's source checksum, so a new version of integrity never reads a stale one."""
    import os
    from pathlib import Path

    from jinja2 import FileSystemBytecodeCache

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "integrity" / f"templates-{__version__}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        return None
    return FileSystemBytecodeCache(str(folder))


def render(result: AuditResult) -> str:
    order = sorted(result.checks, key=lambda c: (-STATUS_RANK[c.status],
                                                 -(lifecycle_counts(c) or {}).get("new", 0)))
    changed = [c for c in order if (lifecycle_counts(c) or {}).get("new")
               or (lifecycle_counts(c) or {}).get("resolved")]
    code = exit_code(result)
    verdict_class, verdict = VERDICTS[code]
    return environment().get_template("report.html.j2").render(
        result=result, checks=order, changed=changed, counts=result.counts,
        totals=lifecycle_totals(result), exit_code=code, verdict=verdict,
        verdict_class=verdict_class, version=__version__,
        started=result.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        now=result.now.strftime("%Y-%m-%d %H:%M:%S UTC"))


def sparkline(check: CheckResult, width: int = 120, height: int = 24) -> Markup:
    """Violation counts over recent runs as an inline SVG (no script, no network)."""
    points = [(run, status, count) for run, status, count in check.trend]
    if len(points) < 2:
        return Markup('<span class="note">first run</span>') if points else Markup("")
    counts = [count or 0 for _, _, count in points]
    top = max(counts) or 1
    step = (width - 6) / (len(points) - 1)
    coordinates = [(3 + index * step, height - 3 - (count / top) * (height - 6))
                   for index, count in enumerate(counts)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{STATUS_COLOURS[status]}">'
        f"<title>run {run}: {status}, {count if count is not None else '–'} violations"
        f"</title></circle>"
        for (x, y), (run, status, count) in zip(coordinates, points))
    label = escape(f"violations over the last {len(points)} runs: "
                   f"{', '.join(str(c) for c in counts)}")
    return Markup(f'<svg class="spark" width="{width}" height="{height}" role="img" '
                  f'aria-label="{label}" viewBox="0 0 {width} {height}">'
                  f'<polyline points="{line}" fill="none" stroke="#57606a" stroke-width="1.2"/>'
                  f"{dots}</svg>")


def _percent(value) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0%"
    if value < 0.0001:
        return "<0.01%"
    return f"{value * 100:.2f}%"


def _number(value) -> str:
    return "–" if value is None else f"{value:,}"


# After a separator that a word continues from, and before an opening bracket: where a
# long check id, dataset list, path or URL may wrap (the CSS breaks anywhere as a last resort).
_SOFT_BREAK = re.compile(r"(?<=[_:,./)\]=&|@-])(?=[^_:,./)\]=&|@\s-])|(?<=\w)(?=[(\[])")


def _breakable(value) -> Markup:
    """Escaped text with <wbr> at its natural break points; copying it yields the same text."""
    if value is None:
        return Markup("")
    return Markup("<wbr>").join(escape(piece) for piece in _SOFT_BREAK.split(str(value)))


def _cell(value) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
