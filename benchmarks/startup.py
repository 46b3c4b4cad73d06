"""Cold-start times of the command line: --help, validate, and an audit with one GX suite.

    python benchmarks/startup.py [--runs 5]

Each command runs in a fresh process; the table shows the median wall time.
Targets: `integrity --help` under 0.3 s, `integrity validate` under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTEGRITY = [sys.executable, "-m", "integrity"]


def timed(command: list[str], env: dict | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="integrity-startup-"))
    database = folder / "reference.sqlite"
    from integrity.reference.generator import generate

    generate(f"sqlite:///{database}", scale=0.005)
    suite_audit = folder / "suite.yml"
    suite_audit.write_text(f"""\
connection: {{url: "sqlite:///{database}"}}
datasets: {{leads: {{table: Lead, key: id}}}}
checks:
  - {{id: leads, kind: expectation_suite, dataset: leads,
     suite: {ROOT / 'expectations' / 'leads.json'}}}
""")
    plain_audit = folder / "plain.yml"
    plain_audit.write_text(f"""\
connection: {{url: "sqlite:///{database}"}}
datasets: {{leads: {{table: Lead, key: id}}}}
checks: [{{kind: duplicates, dataset: leads, columns: email}}]
""")
    commands = {
        "integrity --help": INTEGRITY + ["--help"],
        "integrity validate audits/reference.yml": INTEGRITY + ["validate",
                                                                "audits/reference.yml"],
        "integrity run (1 check, no suite)": INTEGRITY + ["run", str(plain_audit), "-o",
                                                          str(folder / "a")],
        "integrity run (1 GX suite)": INTEGRITY + ["run", str(suite_audit), "-o",
                                                   str(folder / "b")],
    }
    print(f"Median of {args.runs} cold runs, {os.cpu_count()} cores. Targets: --help under "
          f"0.3 s, validate under 0.5 s.\n")
    print("| command | seconds |")
    print("|---|---:|")
    for name, command in commands.items():
        times = [timed(command) for _ in range(args.runs)]
        print(f"| {name} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
