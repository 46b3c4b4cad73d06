"""report.html: one self-contained page, summary first, readable without JavaScript.

The Jinja environment is built once, with autoescaping on: sample rows are
data from the audited database and must never become markup.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from integrity import __version__
from integrity.results import STATUS_RANK, AuditResult

VERDICTS = {0: ("passed", "Gate passed"), 1: ("failed", "Gate failed: violations"),
            2: ("error", "Audit error: the verdict is incomplete")}


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("integrity", "report/templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(percent=_percent, number=_number, cell=_cell)
    return env


def render(result: AuditResult) -> str:
    order = sorted(result.checks, key=lambda c: -STATUS_RANK[c.status])
    code = result.exit_code
    verdict_class, verdict = VERDICTS[code]
    return environment().get_template("report.html.j2").render(
        result=result, checks=order, counts=result.counts, exit_code=code,
        verdict=verdict, verdict_class=verdict_class, version=__version__,
        started=result.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        now=result.now.strftime("%Y-%m-%d %H:%M:%S UTC"))


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


def _cell(value) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
