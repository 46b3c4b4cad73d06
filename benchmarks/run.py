"""The benchmark: the reference audit at scale, integrity against what else one could run.

    python benchmarks/run.py [--url-template URL] [--scales 1 10] [--runs 3] [--regenerate]

For each scale factor it fills a PostgreSQL database with the reference data
(once; reused while its row counts match), then runs, each in a fresh process
and `--runs` times:

- the limit: hand-written SQL per check over psycopg (benchmarks/limit.py);
- integrity --engine sql, and integrity --engine pandas;
- naive pandas: read_sql of the tables plus pandas code (benchmarks/naive_pandas.py);
- Great Expectations 1.x on the same database (benchmarks/gx_equivalent.py).

It measures wall time, CPU time and peak RSS, requires every variant to find
the same violations, and writes benchmarks/RESULTS.md with the medians, the
ratios to the limit and the targets. The E.164 duplicate-phone check is timed
on its own (libphonenumber's parsing costs the same in any tool), and so is
startup (benchmarks/startup.py) and extraction (benchmarks/extraction.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
NOW = "2026-01-30T12:30:00Z"
PYTHON = sys.executable
PHONE = "lead_duplicate_phone"
INTEGRITY_SKIP = ["--skip", "expectation_suite", "--skip", PHONE]
# GX counts every row of a duplicate group; integrity and the others count the surplus rows.
GX_COUNTS_GROUP_ROWS = {"lead_duplicate_email"}


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    violations: dict | None = None

    @property
    def wall(self) -> float:
        return statistics.median(self.seconds)


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one fresh process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT,
                                   env={**os.environ, **(env or {})})
        # wait4: this child's own CPU time and peak RSS (RUSAGE_CHILDREN keeps a maximum
        # over every child so far).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout


def integrity_counts(folder: Path) -> dict[str, int]:
    report = json.loads((folder / "report.json").read_text())
    return {check["id"]: check["violation_count"] for check in report["checks"]}


def variants(url: str, folder: Path) -> dict[str, tuple[list[str], dict, callable]]:
    env = {"REFERENCE_DATABASE_URL": url}

    def from_json(stdout: str) -> dict:
        return json.loads(stdout.strip().splitlines()[-1])["violations"]

    def integrity(engine: str):
        out = folder / engine
        command = [PYTHON, "-m", "integrity", "run", "audits/reference.yml", *INTEGRITY_SKIP,
                   "--engine", engine, "--no-history", "--no-lock", "--now", NOW,
                   "-o", str(out)]
        return command, env, lambda _stdout: integrity_counts(out)

    return {
        "the limit (hand-written SQL)": (
            [PYTHON, "benchmarks/limit.py", url, NOW, PHONE], {}, from_json),
        "integrity --engine sql": integrity("sql"),
        "integrity --engine pandas": integrity("pandas"),
        "naive pandas (read_sql + pandas)": (
            [PYTHON, "benchmarks/naive_pandas.py", url, NOW], {}, from_json),
        "Great Expectations 1.x": (
            [PYTHON, "benchmarks/gx_equivalent.py", url, NOW], {}, from_json),
    }


def ensure_data(url: str, scale: float, regenerate: bool) -> int:
    from integrity.reference.generator import generate

    target = sa.engine.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": target.database}).first():
            connection.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    expected_messages = max(500, int(100_000 * scale)) * 5
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        try:
            messages = connection.execute(sa.text('SELECT count(*) FROM "Message"')).scalar_one()
        except sa.exc.ProgrammingError:
            messages = 0
    engine.dispose()
    if regenerate or messages != expected_messages:
        print(f"  generating scale {scale:g} ...", flush=True)
        began = time.perf_counter()
        generate(url, scale=scale, seed=7, now=datetime.fromisoformat(NOW.replace("Z",
                                                                                   "+00:00")))
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))  # as a production database is
        engine.dispose()
        print(f"  generated in {time.perf_counter() - began:.0f} s", flush=True)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = sum(connection.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
                   for table in ("Tenant", "User", "AgentQuote", "QuoteSend", "Lead",
                                 "Conversation", "Message", "WebhookEvent", "AccessLog",
                                 "sms_metrics", "JobHeartbeat"))
    engine.dispose()
    return rows


def phone_check(url: str, folder: Path, runs: int) -> dict[str, float]:
    timings = {"hand-written (pull + libphonenumber)": [], "integrity": []}
    for _ in range(runs):
        wall, *_ = run_measured([PYTHON, "-c", (
            "import sys, time; sys.path.insert(0, 'benchmarks'); import limit; "
            "from datetime import datetime, timezone; "
            f"t = {{}}; limit.audit({url.replace('+psycopg', '')!r}, "
            f"datetime(2026, 1, 30, 12, 30, tzinfo=timezone.utc), set(limit.QUERIES), t)")])
        timings["hand-written (pull + libphonenumber)"].append(wall)
        wall, *_ = run_measured([PYTHON, "-m", "integrity", "run", "audits/reference.yml",
                                 "--check", PHONE, "--no-history", "--no-lock", "--now", NOW,
                                 "-o", str(folder / "phone")],
                                {"REFERENCE_DATABASE_URL": url})
        timings["integrity"].append(wall)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url-template", default=os.environ.get(
        "INTEGRITY_BENCH_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/integrity_bench_sf{scale}"))
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()

    results: dict[float, dict[str, Measure]] = {}
    rows: dict[float, int] = {}
    phones: dict[float, dict[str, float]] = {}
    folder = Path(tempfile.mkdtemp(prefix="integrity-bench-"))
    for scale in args.scales:
        url = args.url_template.format(scale=f"{scale:g}")
        print(f"scale {scale:g}: {sa.engine.make_url(url).render_as_string()}", flush=True)
        rows[scale] = ensure_data(url, scale, args.regenerate)
        measured: dict[str, Measure] = {}
        for name, (command, env, counts) in variants(url, folder).items():
            measure = Measure()
            for _ in range(args.runs):
                wall, cpu, peak, stdout = run_measured(command, env)
                measure.seconds.append(wall)
                measure.cpu.append(cpu)
                measure.peak_mb.append(peak)
                measure.violations = counts(stdout)
            measured[name] = measure
            print(f"  {name}: {measure.wall:.2f} s, peak {max(measure.peak_mb):.0f} MB",
                  flush=True)
        check_answers(measured)
        results[scale] = measured
        phones[scale] = phone_check(url, folder, args.runs)
    Path(args.output).write_text(render(results, rows, phones, args.runs))
    print(f"wrote {args.output}")


def check_answers(measured: dict[str, Measure]) -> None:
    """Every variant must find the same violations as the limit, or the timing is moot."""
    limit = measured["the limit (hand-written SQL)"].violations
    for name, measure in measured.items():
        for check, count in limit.items():
            theirs = measure.violations.get(check)
            if name.startswith("Great Expectations") and check in GX_COUNTS_GROUP_ROWS:
                continue  # GX counts whole groups; checked to be larger below
            if theirs != count:
                raise AssertionError(f"{name} finds {theirs} violations of {check}, "
                                     f"the limit {count}")
    for check in GX_COUNTS_GROUP_ROWS:
        gx = measured["Great Expectations 1.x"].violations[check]
        assert gx >= limit[check], (check, gx, limit[check])


def render(results, rows, phones, runs) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    lines = ["# Benchmark results", "",
             f"Produced by `python benchmarks/run.py` on {datetime.now(timezone.utc):%Y-%m-%d}: "
             f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.platform()}, "
             f"Python {platform.python_version()}, PostgreSQL on the same machine. Each figure is "
             f"the median of {runs} runs, each in a fresh process (imports included); peak RSS "
             f"is the process's. All variants found the same violations (checked by the run).",
             "", "The audit: `audits/reference.yml` without its GX suites and without the "
             "E.164 duplicate-phone check (timed on its own below: its cost is libphonenumber's "
             "and the same in every tool) — 22 checks: counters vs. unique sends, sentAt "
             "preserved and valid, double clicks, duplicate e-mails, orphans, cross-tenant, "
             "reconciliations, metric thresholds, freshness, custom SQL.", ""]
    for scale, measured in results.items():
        limit = measured["the limit (hand-written SQL)"]
        lines += [f"## Scale factor {scale:g} ({rows[scale]:,} rows)", "",
                  "| variant | wall (s) | × limit | CPU (s) | peak RSS (MB) | rows/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, measure in measured.items():
            lines.append(f"| {name} | {measure.wall:.2f} | {measure.wall / limit.wall:.2f} | "
                         f"{statistics.median(measure.cpu):.2f} | "
                         f"{statistics.median(measure.peak_mb):.0f} | "
                         f"{rows[scale] / measure.wall:,.0f} |")
        lines += ["", "E.164 duplicate-phone check alone: " + ", ".join(
            f"{name} {seconds:.2f} s" for name, seconds in phones[scale].items()), ""]
    lines += targets(results)
    return "\n".join(lines) + "\n"


def targets(results) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|:-:|"]
    largest, smallest = max(results), min(results)
    big = results[largest]
    sql = big["integrity --engine sql"].wall
    limit = big["the limit (hand-written SQL)"].wall
    ratio = sql / limit
    lines.append(f"| SQL engine ≤ 1.2× the limit at SF {largest:g} | {ratio:.2f}× "
                 f"({sql:.2f} s vs {limit:.2f} s) | {'yes' if ratio <= 1.2 else 'no'} |")
    for other in ("Great Expectations 1.x", "naive pandas (read_sql + pandas)"):
        speedup = big[other].wall / sql
        lines.append(f"| SQL engine ≥ 5× faster than {other} at SF {largest:g} | {speedup:.1f}× "
                     f"| {'yes' if speedup >= 5 else 'no'} |")
    low = statistics.median(results[smallest]["integrity --engine sql"].peak_mb)
    high = statistics.median(big["integrity --engine sql"].peak_mb)
    flat = high <= 1.3 * low and high < 300
    lines.append(f"| SQL engine peak RSS flat (SF {largest:g} ≤ 1.3× SF {smallest:g}, < 300 MB) "
                 f"| {low:.0f} MB → {high:.0f} MB | {'yes' if flat else 'no'} |")
    return lines


if __name__ == "__main__":
    main()
