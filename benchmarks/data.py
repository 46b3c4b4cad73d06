"""The benchmark's data: the reference schema in PostgreSQL at a scale factor.

    python benchmarks/data.py URL SCALE [--regenerate]

Creates the database if missing and fills it with the project's generator
unless its "Message" table already holds the rows this scale writes; prints
the total row count. The measuring scripts call `prepare`, which runs this in
a child process: a process's peak RSS passes to the processes it starts, so
the coordinator must never hold the data itself, or every figure would carry
its peak.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

NOW = "2026-01-30T12:30:00Z"
TABLES = ["Tenant", "User", "AgentQuote", "QuoteSend", "Lead", "Conversation", "Message",
          "WebhookEvent", "AccessLog", "sms_metrics", "JobHeartbeat"]


def messages_at(scale: float) -> int:
    """Rows of "Message" the reference generator writes at this scale."""
    return max(500, int(100_000 * scale)) * 5


def prepare(url: str, scale: float, regenerate: bool = False) -> int:
    """`ensure_data` in a child process; the total row count."""
    command = [sys.executable, str(Path(__file__)), url, f"{scale:g}"]
    output = subprocess.run(command + (["--regenerate"] if regenerate else []),
                            check=True, stdout=subprocess.PIPE, text=True).stdout
    return int(output.strip().splitlines()[-1])


def ensure_data(url: str, scale: float, regenerate: bool = False) -> int:
    from datetime import datetime

    import sqlalchemy as sa

    from integrity.reference.generator import generate

    target = sa.engine.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": target.database}).first():
            connection.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        try:
            messages = connection.execute(sa.text('SELECT count(*) FROM "Message"')).scalar_one()
        except sa.exc.ProgrammingError:
            messages = 0
    engine.dispose()
    if regenerate or messages != messages_at(scale):
        print(f"  generating scale {scale:g} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        generate(url, scale=scale, seed=7,
                 now=datetime.fromisoformat(NOW.replace("Z", "+00:00")))
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))  # as a production database is
        engine.dispose()
        print(f"  generated in {time.perf_counter() - began:.0f} s", file=sys.stderr,
              flush=True)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = sum(connection.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
                   for table in TABLES)
    engine.dispose()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("scale", type=float)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    print(ensure_data(args.url, args.scale, args.regenerate))
