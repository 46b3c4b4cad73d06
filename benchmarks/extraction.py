"""Extraction throughput: integrity's PostgreSQL bulk path against pandas.read_sql.

    python benchmarks/extraction.py [--url URL] [--scale 2] [--runs 3]

Fills the reference schema at URL (default: a database `integrity_bench_sf2` on the
local PostgreSQL server, created if missing) unless its "Message" table already
holds the expected rows, then reads the columns an audit of messages uses, each
method in a fresh process so peak memory is its own. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

from data import messages_at, prepare  # benchmarks/ is the script's folder

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/integrity_bench_sf2"
COLUMNS = ["id", "tenantId", "conversationId", "direction", "sentAt"]

# Each method: imports (not timed), then "# timed" and what is measured.
READ_SQL = """
import pandas as pd, sqlalchemy as sa
# timed
engine = sa.create_engine(URL)
query = 'SELECT ' + ', '.join(f'"{c}"' for c in COLUMNS) + ' FROM "Message"'
with engine.connect() as connection:
    frame = pd.read_sql(sa.text(query), connection)
"""

INTEGRITY = """
import adbc_driver_postgresql.dbapi, pyarrow
from integrity.config import ConnectionConfig, DatasetConfig
from integrity.sources import BulkReader, available_columns, open_source, read_frame
# timed
source = open_source(ConnectionConfig(url=URL))
dataset = DatasetConfig(table="Message", key=["id"])
with source.connect() as connection:
    connection = connection.execution_options(isolation_level="REPEATABLE READ")
    present = available_columns(connection, source, "messages", dataset)
    bulk = BulkReader(source, connection, timeout_ms=300_000)
    frame = read_frame(connection, source, "messages", dataset,
                       {c: present[c] for c in COLUMNS}, bulk)
    bulk.close()
"""

MEASURE = """
import json, resource, time
URL, COLUMNS = {url!r}, {columns!r}
{setup}
began = time.perf_counter()
{body}
elapsed = time.perf_counter() - began
print(json.dumps({{"rows": len(frame), "seconds": elapsed,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(url: str, body: str) -> dict:
    setup, timed = textwrap.dedent(body).split("# timed\n")
    code = MEASURE.format(url=url, columns=COLUMNS, setup=setup, body=timed)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("INTEGRITY_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--scale", type=float, default=2.0, help="2 = 1M messages")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    prepare(args.url, args.scale)
    rows = messages_at(args.scale)
    results = {}
    for name, body in (("pandas.read_sql", READ_SQL), ("integrity (ADBC, Arrow)", INTEGRITY)):
        runs = [measure(args.url, body) for _ in range(args.runs)]
        assert all(run["rows"] == rows for run in runs), runs
        results[name] = {"seconds": statistics.median(r["seconds"] for r in runs),
                         "peak_mb": statistics.median(r["peak_mb"] for r in runs)}
    base = results["pandas.read_sql"]
    print(f"Message: {rows:,} rows x {len(COLUMNS)} columns; median of {args.runs} runs, "
          f"each in a fresh process, connect included, imports excluded\n")
    print("| method | seconds | rows/s | speed-up | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {result['seconds']:.2f} | {rows / result['seconds']:,.0f} | "
              f"{base['seconds'] / result['seconds']:.1f}x | {result['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
