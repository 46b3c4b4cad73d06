"""Large application logs: does reading one stay within bounded memory?

    python benchmarks/logs.py [--lines 100000 1000000 [5000000]] [--compression plain gzip]
                              [--dir DIR] [--runs 1]

Writes an application log of each `--lines` count into `--dir` (a temporary folder
unless given; a log already there with the same count is reused) — ten lines a second,
about 170 bytes each, 3% ERROR lines each followed by a stack-trace line the pattern
leaves out — plain and gzip-compressed. Then it runs an audit of two checks over each
log, every run a fresh `integrity run` process: the error lines of the last complete
hour (a metric) and the age of the newest line (freshness). It prints the file's size,
the wall time and the peak RSS of each run, and requires both answers to equal the
counts made while the log was written, or the timing is moot. The code measured is
this checkout's (`src/` comes first on the child's path). Add 5000000 to `--lines` for
an 800 MB log (written once, about a minute); the figures are kept by hand in the
"Large logs" section of benchmarks/RESULTS.md, which benchmarks/run.py leaves as it is.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
VERSION = 1  # of the generated log: a log written by another version is written again
PATTERN = (r"^(?P<ts>\S+ \S+) (?P<level>[A-Z]+) +\[(?P<thread>[^]]+)\] (?P<logger>\S+) - "
           r"(?P<message>.*)$")
LEVELS = [("INFO", 0.90), ("WARN", 0.96), ("ERROR", 0.99), ("DEBUG", 1.0)]
BATCH = 10_000  # lines written at a time: the coordinator never holds the log


def message(rng: random.Random, level: str) -> tuple[str, str]:
    """(logger, message) of one line, about 120 characters."""
    tenant, event, took = rng.randrange(200), rng.getrandbits(40), rng.randrange(2, 900)
    if level == "ERROR":
        return "webhook.delivery", (
            f'delivery failed event_id=evt_{event:012x} tenant=t{tenant:03d} '
            f'endpoint=https://hooks.example.com/t{tenant:03d}/inbound status=503 '
            f'attempt={rng.randrange(1, 6)} error="upstream timed out after 30000 ms"')
    if rng.random() < 0.5:
        return "http.access", (
            f'GET /api/v1/quotes/{rng.randrange(10**7)} status=200 bytes={rng.randrange(99999)} '
            f'took_ms={took} tenant=t{tenant:03d} ua="Mozilla/5.0 (X11; Linux x86_64)"')
    return "webhook.delivery", (
        f'delivered event_id=evt_{event:012x} tenant=t{tenant:03d} '
        f'endpoint=https://hooks.example.com/t{tenant:03d}/inbound status=200 took_ms={took}')


def generate(folder: Path, lines: int, compressions: list[str]) -> dict:
    """Write the log of `lines` lines (each compression asked for) unless it is there
    already; what the audit must find in it."""
    stem = folder / f"app-{lines}"
    answers_path = stem.with_suffix(".json")
    names = {"plain": f"app-{lines}.log", "gzip": f"app-{lines}.log.gz"}
    if answers_path.exists():
        answers = json.loads(answers_path.read_text())
        if answers.get("version") == VERSION and all(
                (folder / names[c]).exists() for c in compressions):
            return answers
    rng = random.Random(lines)
    handles = [open(folder / names[c], "w", encoding="utf-8") if c == "plain" else
               gzip.open(folder / names[c], "wt", encoding="utf-8", compresslevel=6)
               for c in compressions]
    errors_per_hour: dict[int, int] = {}
    written = record = unmatched = 0
    second_text, second = "", -1
    newest_ms = 0
    batch: list[str] = []
    while written < lines:
        at_ms = record * 100 + rng.randrange(100)  # ten records a second, in order
        record += 1
        if at_ms // 1000 != second:  # strftime once a second, not once a line
            second = at_ms // 1000
            second_text = f"{START + timedelta(seconds=second):%Y-%m-%d %H:%M:%S}"
        draw = rng.random()
        level = next(name for name, bound in LEVELS if draw < bound)
        logger, text = message(rng, level)
        batch.append(f"{second_text}.{at_ms % 1000:03d} {level:<5} "
                     f"[worker-{rng.randrange(16)}] {logger} - {text}\n")
        written += 1
        newest_ms = at_ms
        if level == "ERROR":
            hour = at_ms // 3_600_000
            errors_per_hour[hour] = errors_per_hour.get(hour, 0) + 1
            if written < lines:
                batch.append("    at app.webhooks.deliver(webhooks.py:212)\n")
                written += 1
                unmatched += 1
        if len(batch) >= BATCH:
            for handle in handles:
                handle.writelines(batch)
            batch.clear()
    for handle in handles:
        handle.writelines(batch)
        handle.close()
    # Evaluated five minutes after the newest line's second: the metric's window is the
    # last complete hour before then.
    now_ms = (newest_ms // 1000 + 300) * 1000
    window_hour = now_ms // 3_600_000 - 1
    answers = {
        "version": VERSION, "lines": lines, "unmatched": unmatched,
        "now": f"{START + timedelta(milliseconds=now_ms):%Y-%m-%dT%H:%M:%SZ}",
        "errors_last_hour": errors_per_hour.get(window_hour, 0),
        "newest_age_s": (now_ms - newest_ms) / 1000,
    }
    answers_path.write_text(json.dumps(answers))
    return answers


def audit(folder: Path, log: Path) -> Path:
    path = folder / f"{log.name}.yml"
    path.write_text(f"""\
connection: {{url: "sqlite:///{folder / 'empty.sqlite'}"}}
datasets:
  app_log:
    file: {log}
    pattern: '{PATTERN}'
    key: [file, line]
checks:
  - id: error_lines_per_hour
    kind: metric
    dataset: app_log
    value: count
    where: {{level: ERROR}}
    time: ts
    window: 1h
    align: hour
    thresholds: {{warn: "> 1500", critical: "> 5000"}}
  - id: log_fresh
    kind: freshness
    dataset: app_log
    time: ts
    max_age: 15m
""")
    return path


def run_measured(command: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one fresh process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                   env=env)
        # wait4: this child's own peak RSS (RUSAGE_CHILDREN keeps a maximum over every
        # child so far).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 1):
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited {code}:\n{err.read()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def check_answers(report: Path, answers: dict, name: str) -> None:
    checks = {check["id"]: check for check in json.loads(report.read_text())["checks"]}
    errors, fresh = checks["error_lines_per_hour"], checks["log_fresh"]
    found = (errors.get("value"), fresh.get("value"))
    expected = (answers["errors_last_hour"], answers["newest_age_s"])
    if found[0] != expected[0] or found[1] is None or abs(found[1] - expected[1]) > 1e-6:
        raise AssertionError(f"{name}: found (errors, age) {found}, wrote {expected}; "
                             f"{errors.get('error') or fresh.get('error') or ''}")
    unmatched = f"{name}: {answers['unmatched']:,} line(s) the pattern does not match"
    if answers["unmatched"] and not any(text.startswith(unmatched)
                                        for text in errors.get("notes", [])):
        raise AssertionError(f"no note says {unmatched!r}: {errors.get('notes')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--compression", nargs="+", choices=["plain", "gzip"],
                        default=["plain", "gzip"])
    parser.add_argument("--dir", help="Where the logs are written and reused "
                                      "(default: a new temporary folder).")
    parser.add_argument("--runs", type=int, default=1, help="Runs per log (the median).")
    args = parser.parse_args()
    if args.dir:
        folder = Path(args.dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        measure(args, folder)
    else:  # a gigabyte of logs is not left behind
        with tempfile.TemporaryDirectory(prefix="integrity-logs-") as temporary:
            measure(args, Path(temporary))


def measure(args: argparse.Namespace, folder: Path) -> None:
    sqlite3.connect(folder / "empty.sqlite").close()  # an audit names a database
    rows = []
    for lines in args.lines:
        began = time.perf_counter()
        answers = generate(folder, lines, args.compression)
        print(f"{lines:,} lines ready in {time.perf_counter() - began:.1f} s", file=sys.stderr,
              flush=True)
        for compression in args.compression:
            log = folder / (f"app-{lines}.log" + (".gz" if compression == "gzip" else ""))
            out = folder / f"report-{log.name}"
            command = [sys.executable, "-m", "integrity", "run", str(audit(folder, log)),
                       "--no-history", "--no-lock", "--now", answers["now"], "-o", str(out)]
            measures = []
            for _ in range(args.runs):
                measures.append(run_measured(command))
                check_answers(out / "report.json", answers, log.name)
            wall, cpu, peak = (statistics.median(m[i] for m in measures) for i in range(3))
            rows.append((lines, compression, log.stat().st_size / 2**20, wall, cpu, peak,
                         answers["errors_last_hour"]))
            print(f"  {log.name}: {wall:.2f} s, peak {peak:.0f} MB", file=sys.stderr,
                  flush=True)
    # A child's peak RSS starts from this process's (exec keeps the high-water mark):
    # shown to prove it stays below every figure.
    coordinator = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{os.cpu_count()} cores, Python {platform.python_version()}; median of "
          f"{args.runs} run(s), each a fresh process (imports included); the process "
          f"starting them peaked at {coordinator:.0f} MB.\n")
    print("| lines | file | size (MB) | wall (s) | CPU (s) | lines/s | peak RSS (MB) | "
          "error lines in the hour |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for lines, compression, size, wall, cpu, peak, errors in rows:
        print(f"| {lines:,} | {compression} | {size:,.1f} | {wall:.2f} | {cpu:.2f} | "
              f"{lines / wall:,.0f} | {peak:.0f} | {errors:,} |")


if __name__ == "__main__":
    main()
