"""The benchmark: the reference audit at scale, integrity against what else one could run.

    python benchmarks/run.py [--url-template URL] [--scales 1 10] [--runs 3] [--regenerate]

For each scale factor it fills a PostgreSQL database with the reference data
(once; reused while its row counts match), then runs, each in a fresh process
and `--runs` times:

- the limit: hand-written SQL per check over psycopg (benchmarks/limit.py);
- integrity --engine sql, and integrity --engine pandas;
- naive pandas: read_sql of the tables plus pandas code (benchmarks/naive_pandas.py);
- Great Expectations 1.x on the same database (benchmarks/gx_equivalent.py).

The runs go round-robin (every variant once per round). It measures wall
time, CPU time and peak RSS, requires every variant to find
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
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from data import NOW, TABLES, prepare  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PHONE = "lead_duplicate_phone"
INTEGRITY_SKIP = ["--skip", "expectation_suite", "--skip", PHONE]
# GX counts every row of a duplicate group; integrity and the others count the surplus rows.
GX_COUNTS_GROUP_ROWS = {"lead_duplicate_email"}
KEPT_SECTIONS = ("## Large logs", "## Incremental runs")


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    violations: dict | None = None
    per_check: list[dict[str, float]] = field(default_factory=list)  # seconds per check
    statements: list[dict[str, float]] = field(default_factory=list)  # GX: count, seconds

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


def per_check_seconds(name: str, stdout: str, folder: Path) -> dict[str, float]:
    if name == "integrity --engine sql":
        report = json.loads((folder / "sql" / "report.json").read_text())
        return {check["id"]: check["duration_ms"] / 1000 for check in report["checks"]}
    if name.startswith("the limit"):
        return json.loads(stdout.strip().splitlines()[-1])["seconds"]
    return {}


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
    parser.add_argument("--render", metavar="RAW_JSON",
                        help="Only rewrite the output from the raw figures of an earlier run.")
    args = parser.parse_args()
    raw_path = Path(args.output).with_suffix(".json")
    if args.render:
        raw = json.loads(Path(args.render).read_text())
        write(args.output, *load_raw(raw))
        return

    results: dict[float, dict[str, Measure]] = {}
    rows: dict[float, int] = {}
    phones: dict[float, dict[str, float]] = {}
    folder = Path(tempfile.mkdtemp(prefix="integrity-bench-"))
    for scale in args.scales:
        url = args.url_template.format(scale=f"{scale:g}")
        print(f"scale {scale:g}: {url}", flush=True)
        rows[scale] = prepare(url, scale, args.regenerate)
        todo = variants(url, folder)
        measured = {name: Measure() for name in todo}
        # Round-robin: each round runs every variant once, so a machine that slows down
        # or speeds up during the benchmark does so for all of them alike.
        for round_ in range(args.runs):
            for name, (command, env, counts) in todo.items():
                measure = measured[name]
                wall, cpu, peak, stdout = run_measured(command, env)
                measure.seconds.append(wall)
                measure.cpu.append(cpu)
                measure.peak_mb.append(peak)
                measure.violations = counts(stdout)
                measure.per_check.append(per_check_seconds(name, stdout, folder))
                if name.startswith("Great Expectations"):
                    last = json.loads(stdout.strip().splitlines()[-1])
                    measure.statements.append({key: last[key] for key in
                                               ("statements", "database_seconds")})
                print(f"  round {round_ + 1}: {name}: {wall:.2f} s, peak {peak:.0f} MB",
                      flush=True)
        check_answers(measured)
        results[scale] = measured
        phones[scale] = phone_check(url, folder, args.runs)
    extras = [side_benchmark("extraction.py", "--runs", str(args.runs)),
              side_benchmark("startup.py", "--runs", "5")]
    date = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    # A child's peak RSS starts from this process's (exec keeps the high-water mark):
    # recorded to show it stayed below every figure.
    coordinator = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The raw figures first: rendering can then be redone without re-measuring.
    raw_path.write_text(json.dumps({
        "runs": args.runs, "extras": extras, "date": date, "coordinator_mb": coordinator,
        "scales": [{"scale": scale, "rows": rows[scale], "phone": phones[scale],
                    "variants": {name: asdict(m) for name, m in results[scale].items()}}
                   for scale in results]}, indent=1))
    write(args.output, results, rows, phones, args.runs, extras, date, coordinator)


def load_raw(raw: dict) -> tuple:
    results = {entry["scale"]: {name: Measure(**m) for name, m in entry["variants"].items()}
               for entry in raw["scales"]}
    rows = {entry["scale"]: entry["rows"] for entry in raw["scales"]}
    phones = {entry["scale"]: entry["phone"] for entry in raw["scales"]}
    return (results, rows, phones, raw["runs"], raw["extras"], raw["date"],
            raw.get("coordinator_mb"))


def write(output: str, *figures) -> None:
    # Sections another script measures (benchmarks/logs.py) stay as they were.
    old = Path(output).read_text() if Path(output).exists() else ""
    kept = [section.rstrip("\n") for section in re.split(r"(?m)^(?=## )", old)
            if section.startswith(KEPT_SECTIONS)]
    Path(output).write_text(render(*figures) + "".join(f"\n{section}\n" for section in kept))
    print(f"wrote {output}")


def side_benchmark(script: str, *arguments: str) -> str:
    print(f"  {script} ...", flush=True)
    completed = subprocess.run([PYTHON, f"benchmarks/{script}", *arguments], cwd=ROOT,
                               capture_output=True, text=True, check=True)
    return completed.stdout.strip()


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


def render(results, rows, phones, runs, extras, date, coordinator=None) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    lines = ["# Benchmark results", "",
             f"Produced by `python benchmarks/run.py` on {date}: "
             f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.platform()}, "
             f"Python {platform.python_version()}, PostgreSQL on the same machine. Each figure is "
             f"the median of {runs} runs, each in a fresh process (imports included); peak RSS "
             f"is the process's own" + ("" if coordinator is None else
                                        f" (the process starting them peaked at "
                                        f"{coordinator:.0f} MB, the floor of any figure)") +
             ". All variants found the same violations (checked by the run).",
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
    lines += per_check(results[max(results)], max(results))
    lines += targets(results)
    lines += analysis(results, phones, extras)
    lines += ["", "## Extraction (pandas engine, PostgreSQL)", "", extras[0], "",
              "## Start-up", "", extras[1]]
    return "\n".join(lines) + "\n"


def per_check(measured: dict[str, Measure], scale: float) -> list[str]:
    """Where the time goes, check by check (integrity's own timing against the limit's)."""
    ours, theirs = measured["integrity --engine sql"], measured["the limit (hand-written SQL)"]

    def median(measure: Measure, check: str) -> float | None:
        values = [run[check] for run in measure.per_check if check in run]
        return statistics.median(values) if values else None

    lines = [f"### Check by check at SF {scale:g} (seconds; integrity's includes counting its "
             f"population)", "", "| check | integrity sql | limit |", "|---|---:|---:|"]
    for check in ours.per_check[0]:
        mine, limit = median(ours, check), median(theirs, check)
        lines.append(f"| {check} | {mine:.3f} | {'–' if limit is None else f'{limit:.3f}'} |")
    return lines + [""]


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



def analysis(results, phones, extras) -> list[str]:
    """The reading of the figures; every number in it comes from this run."""
    largest = max(results)
    big = results[largest]
    sql, limit = big["integrity --engine sql"].wall, big["the limit (hand-written SQL)"].wall
    gx, naive = big["Great Expectations 1.x"].wall, big["naive pandas (read_sql + pandas)"].wall
    started = re.search(r"\| integrity run \(1 check, no suite\) \| ([\d.]+) \|", extras[1])
    fixed = float(started.group(1)) if started else 0.0
    limit_runs = big["the limit (hand-written SQL)"].seconds
    spread = max(limit_runs) - min(limit_runs)
    pandas_mb = statistics.median(big["integrity --engine pandas"].peak_mb)
    naive_mb = statistics.median(big["naive pandas (read_sql + pandas)"].peak_mb)
    phone = phones[largest]
    profile = big["Great Expectations 1.x"].statements
    statements = statistics.median(run["statements"] for run in profile) if profile else 0
    gx_db = statistics.median(run["database_seconds"] for run in profile) if profile else 0
    ours_phone = phone["integrity"]
    hand_phone = phone["hand-written (pull + libphonenumber)"]
    return ["", "## What the numbers say", "",
            f"- **The SQL engine takes {sql / limit:.2f}× the time of hand-written SQL at SF "
            f"{largest:g}** ({sql - limit:.1f} s more). "
            + (f"About {fixed:.1f} s does not grow with the data: a run of one check takes that "
               "long (Start-up, below) — importing pandas, SQLAlchemy and pydantic, validating "
               "the audit, reflecting the tables, writing four reports. " if fixed else "")
            + (f"That is the whole gap or more: the hand-written run itself varied by "
               f"{spread:.1f} s between rounds, so at this scale the queries are level with it "
               "within the machine's noise. " if fixed and fixed >= sql - limit else
               "The rest is a population count per distinct filtered dataset, which "
               "hand-written SQL skips and which gives every check its rate, and the sample "
               "rows the reports show. ")
            + "The check-by-check table shows the queries do the "
            "same work: they were reshaped with EXPLAIN ANALYZE until each ran like the "
            "hand-written one (native timestamp arithmetic, anti-joins instead of OR filters, "
            "one sort per window, reading only the partitions that hold repeats, comparing "
            "reconciliations in the database, no JIT for one-off queries).",
            f"- **Against Great Expectations the SQL engine is {gx / sql:.1f}× faster.** The GX "
            "variant is itself pushdown: a GX user's cross-table rules are the same hand-written "
            "SQL as the limit, run through query assets, so GX costs the limit plus its own "
            f"overhead ({gx / limit:.1f}× the limit). Counting its statements shows where that "
            f"goes: {statements:.0f} statements, {gx_db:.1f} s of its {gx:.1f} s in the "
            "database, against one query per check for the limit: for each query asset GX "
            "runs the query itself once (in full, to inspect it), then its row count, its "
            "unexpected count and its unexpected values, each a separate query over the same "
            "joins; table assets add reflection. No tool can be 5× faster than that variant while "
            f"it is within {gx / limit:.1f}× of the limit; a GX user who validates pulled "
            "frames instead pays at least the naive-pandas figure. What integrity adds over "
            "the GX variant is that nobody had to hand-write the queries.",
            f"- **Against naive pandas the SQL engine is {naive / sql:.1f}× faster.** The naive "
            f"variant spends most of its time in `read_sql` of {len(TABLES)} tables and "
            "most of its memory holding them. Hand-written SQL, the floor, is "
            f"{naive / limit:.1f}× faster than it: that is the most any tool can reach, and "
            f"the SQL engine's distance to it is the fixed start-up above"
            + (" — which is why the 5× target is missed on this run." if naive / sql < 5
               else "."),
            "- **Memory.** The SQL engine's peak RSS is flat across scales: only violations and "
            "counts come back. The pandas engine's grows with the data, as it must, but is "
            f"{pandas_mb:.0f} MB against naive pandas' {naive_mb:.0f} MB at SF {largest:g}: it "
            "reads only the columns the checks use, as Arrow.",
            f"- **E.164.** Normalising phone numbers needs libphonenumber, in Python; at SF "
            f"{largest:g} integrity takes {ours_phone:.1f} s against {hand_phone:.1f} s for the "
            "hand-written loop (it normalises each distinct value once). It is timed apart "
            "because no database can run it."]

if __name__ == "__main__":
    main()
