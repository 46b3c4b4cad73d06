"""The hourly alerting audit at a realistic size: is one cron run cheap?

    python benchmarks/alerting.py [--runs 24] [--url URL ...]

Fills each database (a SQLite file, and any --url) with 10 days x 20 users of hourly
SMS metrics (4,800 rows, the shape of seed 004's `sms_metrics`, per user), then
runs `audits/sms-alerts.yml` once per simulated hour over the last `--runs` hours,
each as cron would — a fresh `integrity run` process with `--now` a few seconds
after the hour, its own run history, and Slack and PagerDuty answered by a real
HTTP server on loopback. Prints the median, p90 and max wall time per run and the
messages sent, and writes benchmarks/ALERTING.md. Target: median under 1.5 s.
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
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
AUDIT = ROOT / "audits" / "sms-alerts.yml"
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS, USERS = 10, 20
TARGET_SECONDS = 1.5


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 — the http.server API
        self.server.received.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def fill(url: str) -> int:
    """10 days x 20 users of hourly metrics, with a few bad hours that alert."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = sa.Table(
        "sms_metrics", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("metric_hour", sa.DateTime, nullable=False, index=True),
        *[sa.Column(name, sa.Integer, nullable=False) for name in (
            "scheduled_count", "sent_count", "delivered_count", "failed_count",
            "generated_count", "llm_success_count", "template_fallback_count",
            "opt_out_count", "daily_limit_hit_count")],
        sa.Column("llm_cost_usd", sa.Float, nullable=False))
    rows = []
    for hour in range(DAYS * 24):
        moment = (START + timedelta(hours=hour)).replace(tzinfo=None)
        bad = hour % 37 in (0, 1)  # a two-hour incident every 37 hours
        for user in range(USERS):
            rows.append(dict(
                id=len(rows) + 1, user_id=user, metric_hour=moment, scheduled_count=10,
                sent_count=10, delivered_count=8 if bad else 10, failed_count=2 if bad else 0,
                generated_count=5, llm_success_count=5, template_fallback_count=0,
                opt_out_count=2 if bad else 0, daily_limit_hit_count=1,
                llm_cost_usd=0.05 * (3 if bad else 1)))
    with engine.begin() as connection:
        metadata.drop_all(connection)
        metadata.create_all(connection)
        connection.execute(table.insert(), rows)
    engine.dispose()
    return len(rows)


def measure(url: str, server, folder: Path, runs: int) -> tuple[list[float], dict]:
    """Wall time of each hourly run, and the messages the loopback server received."""
    folder.mkdir(parents=True)
    server.received.clear()
    base = f"http://127.0.0.1:{server.server_port}"
    audit = folder / "sms-alerts.yml"
    audit.write_text(AUDIT.read_text().replace(
        "    routing_key: ${PAGERDUTY_ROUTING_KEY}\n",
        f"    routing_key: ${{PAGERDUTY_ROUTING_KEY}}\n    events_url: {base}/pd\n"))
    env = {**os.environ, "REFERENCE_DATABASE_URL": url, "PAGERDUTY_ROUTING_KEY": "R" * 32,
           "SLACK_WEBHOOK_URL": f"{base}/slack"}
    walls = []
    for hour in range(DAYS * 24 - runs, DAYS * 24):
        now = START + timedelta(hours=hour + 1, seconds=5)
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "integrity", "run", str(audit), "--now", now.isoformat(),
             "--history", f"sqlite:///{folder / 'history.sqlite'}", "--no-lock",
             "-o", str(folder / "out")], env=env, capture_output=True, text=True, cwd=ROOT)
        walls.append(time.perf_counter() - began)
        if done.returncode not in (0, 1):
            sys.exit(f"run at {now} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return walls, {"slack": sum(p.startswith("/slack") for p in server.received),
                   "pagerduty": sum(p == "/pd" for p in server.received)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--url", nargs="*", default=[],
                        help="More databases to measure (a SQLite file always is).")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "ALERTING.md"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="integrity-alerting-"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    table = []
    for n, url in enumerate([f"sqlite:///{folder / 'metrics.sqlite'}", *args.url]):
        rows = fill(url)
        walls, messages = measure(url, server, folder / str(n), args.runs)
        median = statistics.median(walls)
        p90 = statistics.quantiles(walls, n=10)[-1] if len(walls) >= 2 else walls[0]
        table.append(f"| {sa.engine.make_url(url).get_backend_name()} | {len(walls)} | "
                     f"{median:.2f} | {p90:.2f} | {max(walls):.2f} | < {TARGET_SECONDS} | "
                     f"{'yes' if median < TARGET_SECONDS else 'NO'} | {json.dumps(messages)} |")
    server.shutdown()
    lines = [
        "# Alerting benchmark",
        "",
        f"Produced by `python benchmarks/alerting.py --runs {args.runs}"
        f"{' --url …' if args.url else ''}` on {datetime.now(timezone.utc):%Y-%m-%d}: "
        f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
        f"the database on the same machine.",
        "",
        f"`audits/sms-alerts.yml` (seed 004: five thresholds, PagerDuty and Slack) over "
        f"{rows:,} rows ({DAYS} days x {USERS} users of hourly metrics), run once per "
        f"simulated hour for the last {args.runs} hours, each a fresh process as cron "
        f"starts it (imports, history, notifications to a loopback server included).",
        "",
        "| metrics in | runs | median (s) | p90 (s) | max (s) | target | met | messages |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        *table,
        ""]
    Path(args.output).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
