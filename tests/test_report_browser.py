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


def test_the_demo_report_in_the_browser(browser, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from integrity.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "--output", str(tmp_path / "demo"),
                                       "--scale", "0.005"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    browser.open((tmp_path / "demo" / "report.html").as_uri())
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
