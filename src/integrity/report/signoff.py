"""The sign-off of a post-deploy watch: one page a product manager can read.

The verdict first (APPROVED / NOT APPROVED), then each criterion with its
evidence and links to the runs that broke it, the before/after table and the
incident timeline. HTML (self-contained, no script) and Markdown. The sign-off
is passed in as built by `integrity.watch` and read by attribute only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from integrity import __version__
from integrity.errors import OutputError


def write_signoff(signoff: Any, folder: Path) -> dict[str, Path]:
    """signoff.html and signoff.md in `folder` (`<output>/watch-<id>/`)."""
    from integrity.report import _atomic_write, prepare_output

    prepare_output(folder)
    written = {}
    for name, render, filename in (("html", html, "signoff.html"),
                                   ("markdown", markdown, "signoff.md")):
        target = folder / filename
        try:
            _atomic_write(target, render(signoff, folder))
        except OSError as error:
            raise OutputError(f"cannot write {target}: {error.strerror or error}",
                              written) from None
        written[name] = target
    return written


def run_link(folder: Path, run_id: int) -> str | None:
    """The run's own report (output.keep_runs), relative to the sign-off, if it was kept."""
    report = folder.parent / "runs" / str(run_id) / "report.html"
    return f"../runs/{run_id}/report.html" if report.exists() else None


def _clock(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def _context(signoff: Any, folder: Path) -> dict[str, Any]:
    watch, state = signoff.watch, signoff.progress
    who = watch.get("deployed_by") or {}
    return {
        "s": signoff, "watch": watch, "state": state, "version": __version__,
        "deployed": _clock(watch["started_at"]), "ends": _clock(watch["ends_at"]),
        "now": _clock(state.now), "who": who,
        "links": {run["run_id"]: run_link(folder, run["run_id"]) for run in state.runs},
        "clock": _clock,
    }


def html(signoff: Any, folder: Path) -> str:
    from integrity.report.html import environment

    return environment().get_template("signoff.html.j2").render(**_context(signoff, folder))


def markdown(signoff: Any, folder: Path) -> str:
    context = _context(signoff, folder)
    watch, state = context["watch"], context["state"]
    mark = "✅" if signoff.approved else "❌"
    lines = [f"# {mark} {signoff.verdict}: deploy {watch['deploy']} of {watch['audit']}", "",
             f"Watch #{watch['id']} on `{watch['target']}` from {context['deployed']} to "
             f"{context['ends']} · {len(state.runs)} run(s), {len(state.missed)} missed · "
             f"judged at {context['now']}", "",
             "| | criterion | evidence |", "|---|---|---|"]
    for criterion in signoff.criteria:
        runs = ", ".join(_md_run(run, context["links"]) for run in criterion.runs[:10])
        lines.append(f"| {'✅' if criterion.met else '❌'} | {_cell(criterion.name)} | "
                     f"{_cell(criterion.evidence)}{' — ' + runs if runs else ''} |")
    if signoff.table:
        lines += ["", "## Before and after the deploy", "",
                  "| check | before the deploy | at the deploy | last run | runs in breach |",
                  "|---|---:|---:|---:|---:|"]
        for row in signoff.table:
            lines.append(f"| `{row['check']}` | {row['before'] or '–'} | "
                         f"{row['at_deploy'] or '–'} | {row['last'] or '–'} | "
                         f"{row['breached_runs']} of {row['runs']} |")
    if signoff.timeline:
        lines += ["", "## Timeline", ""]
        for event in signoff.timeline:
            run = f" (run #{event['run']})" if event["run"] else ""
            lines.append(f"- {_clock(event['at'])} — **{event['what']}**{run}: "
                         f"{_cell(event['note'])}")
    return "\n".join(lines) + "\n"


def _md_run(run_id: int, links: dict) -> str:
    link = links.get(run_id)
    return f"[run #{run_id}]({link})" if link else f"run #{run_id}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
