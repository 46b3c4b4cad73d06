"""The HTML report in a real browser: what a reviewer sees, with and without JavaScript."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from browser import Browser
from conftest import NOW
from integrity.history import Lifecycle, fingerprint
from integrity.report import write_reports
from integrity.results import AuditResult, CheckResult

SCREENSHOTS = Path(__file__).resolve().parents[1] / "reports" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    handle = Browser()
    yield handle
    handle.close()


def big_result(checks: int = 200, rows_each: int = 50) -> AuditResult:
    """200 checks and 10,000 sample rows: the size the report must stay usable at."""
    results = []
    statuses = ["fail", "warn", "pass", "error", "info"]
    for index in range(checks):
        status = statuses[index % len(statuses)]
        rows = [] if status in {"pass", "error"} else [
            {"id": f"row-{index}-{n}", "tenantId": f"t{n % 7}", "email": f"u{n}@example.com",
             "value": n} for n in range(rows_each)]
        keys = [(row["id"],) for row in rows]
        life = Lifecycle(previous_run=41, new={fingerprint(f"check-{index:04d}", k)
                                               for k in keys[:3]},
                         persisting={fingerprint(f"check-{index:04d}", k): (
                             datetime(2026, 1, 20), 5) for k in keys[3:]},
                         resolved={"x": '["gone"]'} if index % 3 == 0 else {})
        results.append(CheckResult(
            id=f"check-{index:04d}", kind="duplicates", datasets=["leads"],
            description=f"Rule number {index} <b>escaped</b>", severity="critical",
            status=status, path=f"checks[{index}]", violation_count=len(rows) or None,
            population=1000, rate=len(rows) / 1000, columns=["id", "tenantId", "email", "value"],
            sample=rows, key_columns=["id"], violation_keys=keys,
            error="boom" if status == "error" else None, tenant_column="tenantId",
            tenant_counts={f"t{n}": 7 for n in range(7)} if rows else {},
            lifecycle=None if status == "error" else life,
            trend=[(run, "fail", (run * 7 + index) % 13) for run in range(30, 42)]))
    started = NOW - timedelta(minutes=3)
    return AuditResult(audit_name="nightly", audit_file="audits/nightly.yml",
                       config_hash="abc", engine="sql", database="postgresql://app@db/app",
                       dialect="postgresql", started_at=started, finished_at=NOW, now=NOW,
                       checks=results, fail_on="critical", sample_limit=50, run_id=42,
                       history="sqlite:///reports/history.sqlite")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    return write_reports(big_result(), folder, ["html"])["html"]


def test_the_report_renders_what_matters_first(browser, report):
    browser.open(report.as_uri())
    assert browser.evaluate("document.getElementById('verdict').textContent") == \
        "Audit error: the verdict is incomplete (exit 2)"
    headings = browser.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
    assert headings[:3] == ["New since the last run", "Summary", "Checks"]
    assert browser.evaluate("document.querySelectorAll('#summary-table tr.row').length") == 200
    assert browser.evaluate("document.querySelectorAll('table.samples tbody tr').length") == \
        120 * 50
    # Failing checks open, passing ones collapsed; trends drawn as SVG.
    assert browser.evaluate("document.querySelector('#check-check-0000').open") is True
    assert browser.evaluate("document.querySelector('#check-check-0002').open") is False
    assert browser.evaluate("document.querySelectorAll('svg.spark').length") >= 200
    # Data never becomes markup.
    assert browser.evaluate("document.querySelectorAll('#check-check-0000 b').length") == 0
    first = browser.evaluate(
        "[...document.querySelectorAll('#check-check-0000 table.samples tbody tr')[0]"
        ".querySelectorAll('td')].map(td => td.textContent)")
    assert first == ["new", "row-0-0", "t0", "u0@example.com", "0"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = browser.screenshot(str(SCREENSHOTS / "report.png"))
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 50_000


def test_the_filter_box_narrows_the_report(browser, report):
    browser.open(report.as_uri())
    assert browser.evaluate("document.getElementById('tools').classList.contains('hidden')") \
        is False
    browser.evaluate("""(() => { const box = document.getElementById('filter');
        box.value = 'warn check-01'; box.dispatchEvent(new Event('input')); })()""")
    visible = browser.evaluate(
        "[...document.querySelectorAll('#summary-table tr.row')]"
        ".filter(r => !r.classList.contains('hidden')).map(r => r.dataset.check)")
    # "warn" rows are every fifth from 1; "check-01" is 0100 to 0199.
    assert sorted(visible) == [f"check-{n:04d}" for n in range(101, 200, 5)]
    assert browser.evaluate("document.getElementById('shown').textContent") == "20 of 200 checks"
    assert browser.evaluate("document.querySelectorAll('details.check.hidden').length") == 180
    browser.evaluate("document.getElementById('expand').click()")
    assert browser.evaluate("[...document.querySelectorAll('details.check')]"
                            ".every(d => d.open)") is True


def test_without_javascript_everything_is_there(browser, report):
    browser.open(report.as_uri(), scripts=False)
    assert browser.evaluate("document.getElementById('tools').classList.contains('hidden')") \
        is True  # the filter needs a script, so it stays out of the way
    assert browser.evaluate("document.querySelectorAll('details.check').length") == 200
    assert browser.evaluate("document.querySelectorAll('details.check.hidden').length") == 0


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """`integrity demo` at a small scale: the report a newcomer sees first."""
    from click.testing import CliRunner

    from integrity.cli import main

    folder = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = CliRunner().invoke(main, ["demo", "--output", str(folder / "demo"),
                                           "--scale", "0.005"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "demo" / "report.html"


def test_the_demo_report_in_the_browser(browser, demo_report):
    browser.open(demo_report.as_uri())
    text = browser.evaluate("document.body.innerText")
    assert "Gate failed: violations (exit 1)" in text
    assert "New since the last run" in text
    masked = browser.evaluate(
        "[...document.querySelectorAll('#check-lead_duplicate_email td')]"
        ".map(td => td.textContent).filter(t => t.includes('@'))")
    assert masked and all("•••@" in value for value in masked)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = browser.screenshot(str(SCREENSHOTS / "demo.png"))
    assert image[:8] == b"\x89PNG\r\n\x1a\n"


LONG_ID = ("lead_columns:expect_column_pair_values_a_to_be_greater_than_b(sent_count,"
           "delivered_count)_" + "x" * 300)[:300]
UNBROKEN = "Q" * 1800  # no space, no hyphen: nothing a browser would break a line at


def long_result() -> AuditResult:
    """Every value that could widen the page, at its worst."""
    columns = [f"column_with_a_rather_long_name_{n:02d}" for n in range(40)]
    sample = [{column: f"value-{row}-{n}" * (3 if n % 7 else 1) for n, column in
               enumerate(columns)} | {columns[5]: UNBROKEN[:600]} for row in range(8)]
    sql = ("SELECT " + ", ".join(f"t.{column} AS alias_{n}" for n, column in enumerate(columns))
           + " FROM t WHERE t.note = '" + UNBROKEN + "' AND ")
    sql += " AND ".join(f"t.{columns[n % 40]} IS NOT NULL" for n in range(400))
    sql = sql[:5000]
    error = "psycopg.errors.UndefinedColumn: column " + UNBROKEN + " does not exist"
    life = Lifecycle(previous_run=6, new={fingerprint(LONG_ID, (n,)) for n in range(8)},
                     persisting={}, resolved={})
    checks = [
        CheckResult(id=LONG_ID, kind="custom_sql_with_a_long_kind_name", datasets=[
                        "dataset_" + "d" * 120, "another_dataset"],
                    description="Why: " + UNBROKEN[:400], severity="critical", status="fail",
                    path="checks[0]." + "p" * 200, violation_count=123_456_789,
                    population=9_876_543_210, rate=0.0125, value_text="EMAIL:" + "9" * 200,
                    sql=sql, columns=columns, sample=sample, key_columns=columns[:3],
                    violation_keys=[(n,) for n in range(8)],
                    thresholds={"warn": "> " + "1" * 150, "critical": "> 50%"},
                    notes=["note " + UNBROKEN[:500]], tenant_column=columns[0],
                    tenant_counts={"tenant-" + UNBROKEN[:300]: 5, "t2": 3}, lifecycle=life,
                    trend=[(run, "fail", run * 3) for run in range(1, 8)]),
        CheckResult(id="E" * 300, kind="freshness", datasets=["leads"], description="",
                    severity="critical", status="error", error=error, sql=sql),
        CheckResult(id="short", kind="duplicates", datasets=["leads"], description="ok",
                    severity="warning", status="pass", violation_count=0, population=10,
                    rate=0.0, lifecycle=Lifecycle(previous_run=6, new=set(), persisting={},
                                                  resolved={"gone": '["x"]'})),
    ]
    from integrity.results import DatasetLoad

    return AuditResult(audit_name="nightly_" + "n" * 200, audit_file="audits/" + "a" * 200
                       + ".yml", config_hash="f" * 64, engine="sql",
                       database="postgresql://app@" + "h" * 250 + "/app", dialect="postgresql",
                       started_at=NOW - timedelta(minutes=1), finished_at=NOW, now=NOW,
                       checks=checks, fail_on="critical", sample_limit=50, run_id=7,
                       history="sqlite:///" + "h" * 250, errors=[error], warnings=[error],
                       target="postgresql://" + "t" * 250,
                       datasets=[DatasetLoad(name="dataset_" + "d" * 120, rows=10**9,
                                             columns=columns, seconds=1.5, sql=sql)])


@pytest.fixture(scope="module")
def long_report(tmp_path_factory):
    return write_reports(long_result(), tmp_path_factory.mktemp("long"), ["html"])["html"]


VIEWPORTS = {"desktop": (1280, 800, False), "wide": (1400, 1000, False),
             "phone": (390, 844, True)}
LAYOUT = """(() => {
    const box = element => element.getBoundingClientRect();
    return {scrollWidth: document.documentElement.scrollWidth,
            bodyWidth: document.body.scrollWidth, innerWidth: window.innerWidth,
            verdict: box(document.getElementById('verdict')).top,
            overview: document.getElementById('overview')
                && box(document.getElementById('overview')).bottom,
            wider: [...document.querySelectorAll('body *')]
                .filter(e => box(e).right > window.innerWidth + 0.5 && box(e).width > 0
                        && !e.parentElement.closest('.scroll, pre, .samples'))
                .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                          + (e.className && e.className.baseVal === undefined
                             ? '.' + e.className.split(' ').join('.') : ''))
                .slice(0, 5)};
})()"""


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("which", ["demo", "long"])
@pytest.mark.parametrize("scripts", [True, False], ids=["js", "nojs"])
def test_the_page_never_scrolls_sideways(browser, demo_report, long_report, which, viewport,
                                         scripts):
    """Wide content scrolls or wraps inside its own box; the verdict is in the first screen."""
    width, height, mobile = VIEWPORTS[viewport]
    browser.viewport(width, height, mobile)
    try:
        browser.open((demo_report if which == "demo" else long_report).as_uri(),
                     scripts=scripts)
        layout = browser.evaluate(LAYOUT)
        if scripts:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            browser.screenshot(str(SCREENSHOTS / f"{which}-{width}x{height}.png"),
                               full_page=False)
    finally:
        browser.reset_viewport()
    # A phone lays the page out at the width of its widest content and zooms out,
    # so innerWidth alone would grow with the overflow: compare with the screen too.
    assert layout["innerWidth"] == width, layout
    assert layout["scrollWidth"] <= width and layout["bodyWidth"] <= width, layout
    assert layout["wider"] == [], layout
    assert 0 <= layout["verdict"] < height, layout
    # The verdict, the counts by status and new / persisting / resolved: all unscrolled.
    assert layout["overview"] is not None and layout["overview"] <= height, layout
