"""Incremental against full runs of the parent, entity and row-local checks on PostgreSQL.

    python benchmarks/probe_incremental_plans.py [--url URL] [--churn 0.001 0.01]
        [--before SRC] [--runs 2] [--explain]

For each churn rate it regenerates the reference data at scale 1, gives the
tables an indexed "updatedAt" (and "Conversation"."leadId" the index a foreign
key column has), runs a few checks of audits/reference.yml in full with
history, applies the churn dated the next day (updates of children and
entities, inserts everywhere: an update of an old parent or event rightly runs
those checks in full), then times per check an incremental run, and a `--full`
one, on copies of the history. `--before SRC` times the incremental run of
another source tree too (e.g. an exported older commit's `src`).
`--explain` prints EXPLAIN ANALYZE of each incremental statement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from data import NOW, prepare  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
CHECKS = ["message_orphans", "message_cross_tenant", "conversation_lead_orphans",
          "quote_email_counter", "quote_sent_at_preserved", "quote_sent_at_valid",
          "lead_duplicate_email", "quote_send_double_clicks"]
NEXT_DAY = "2026-01-31T12:30:00Z"
# table -> (the time updatedAt starts from, whether old rows may be updated)
TABLES = {"Message": ('"sentAt"', True), "Conversation": ('"createdAt"', False),
          "Lead": ('"createdAt"', False), "QuoteSend": ('"sentAt"', False),
          "AgentQuote": (None, True)}
DATASETS = {"messages": "Message", "conversations": "Conversation", "leads": "Lead",
            "sends": "QuoteSend", "quotes": "AgentQuote"}


def sql(url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


def prepare_changes(url: str) -> None:
    """The change column, indexed, as a table with incremental runs has it."""
    statements = []
    for table, (source, _) in TABLES.items():
        if source:
            kind = "timestamptz" if table == "Message" else "timestamp"
            statements += [f'ALTER TABLE "{table}" ADD COLUMN "updatedAt" {kind}',
                           f'UPDATE "{table}" SET "updatedAt" = {source}']
        statements.append(f'CREATE INDEX "ix_{table}_updatedAt" ON "{table}" ("updatedAt")')
    statements += ['CREATE INDEX "ix_Conversation_leadId" ON "Conversation" ("leadId")',
                   "VACUUM ANALYZE"]
    sql(url, *statements)


def churn(url: str, rate: float) -> None:
    """`rate` of each table's rows inserted (copies with new ids) and, where old rows may
    change, as many updated, all dated the next day."""
    day = "'2026-01-31 12:00:00'"
    statements = []
    for table, (_, updated) in TABLES.items():
        count = f'(SELECT (count(*) * {rate})::int FROM "{table}")'
        if table in {"Message", "QuoteSend"}:
            new_id = f'id + (SELECT max(id) FROM "{table}")'
        else:
            new_id = "id || '-new'"
        columns = f"""(SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
                     FROM information_schema.columns WHERE table_name = '{table}')"""
        statements.append(f"""
            DO $$ DECLARE names text; BEGIN
              SELECT {columns} INTO names;
              EXECUTE format('CREATE TEMP TABLE copies AS SELECT * FROM "{table}" ORDER BY
                              md5(id::text) LIMIT %s', {count});
              UPDATE copies SET id = {new_id}, "updatedAt" = {day};
              EXECUTE format('INSERT INTO "{table}" (%s) SELECT %s FROM copies', names, names);
              DROP TABLE copies;
            END $$""")
        if updated:
            statements.append(f"""
                UPDATE "{table}" SET "updatedAt" = {day} WHERE id IN (
                  SELECT id FROM "{table}" WHERE "updatedAt" < {day}
                  ORDER BY md5(id::text || 'u') LIMIT {count})""")
    # Some changes that matter: a message moved to another conversation, a quote
    # counted once more.
    statements += [f"""UPDATE "Message" SET "conversationId" = 'gone' WHERE id IN (
                         SELECT id FROM "Message" WHERE "updatedAt" = {day} LIMIT 50)""",
                   f"""UPDATE "AgentQuote" SET "emailSentCount" = "emailSentCount" + 1
                       WHERE id IN (SELECT id FROM "AgentQuote" WHERE "updatedAt" = {day}
                                    LIMIT 50)""",
                   "ANALYZE"]
    sql(url, *statements)


def write_audit(url: str, folder: Path) -> Path:
    reference = yaml.safe_load((HERE.parent / "audits" / "reference.yml").read_text())
    datasets = {name: {**reference["datasets"][name],
                       "incremental": {"changed": "updatedAt"}} for name in DATASETS}
    checks = [check for check in reference["checks"] if check["id"] in CHECKS]
    audit = {"version": 1, "name": "probe", "connection": {"url": url},
             "engine": "sql", "datasets": datasets, "checks": checks}
    path = folder / "probe.yml"
    path.write_text(yaml.safe_dump(audit, sort_keys=False))
    return path


def run(audit: Path, history: Path, output: Path, now: str, src: Path, *extra: str) -> dict:
    """Seconds per check of one run, and its report."""
    environment = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "integrity", "run", str(audit), "--history",
               f"sqlite:///{history}", "--now", now, "-o", str(output), "--sample-limit",
               "0", "--summary", "line", *extra]
    subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, check=False)
    report = json.loads((output / "report.json").read_text())
    return {check["id"]: check for check in report["checks"]}


def explain(url: str, report: dict) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        for name, check in report.items():
            statement = check.get("sql")
            if not statement:
                continue
            plan = connection.execute(sa.text("EXPLAIN ANALYZE " + statement.replace(":", r"\:")))
            print(f"--- {name}")
            print("\n".join(row[0] for row in plan))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                                         "integrity_probe_plans")
    parser.add_argument("--churn", type=float, nargs="+", default=[0.001, 0.01])
    parser.add_argument("--before", type=Path, help="another source tree to time too")
    parser.add_argument("--runs", type=int, default=2, help="the fastest of this many")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--reuse", type=Path, help=(
        "a folder kept from an earlier probe (one churn rate): time again on its data"))
    options = parser.parse_args()
    src = HERE.parent / "src"
    variants = {"incremental": src, **({"before": options.before} if options.before else {})}
    folder = options.reuse or Path(tempfile.mkdtemp(prefix="probe-plans-"))
    for rate in options.churn:
        audit, base = folder / "probe.yml", folder / "base.sqlite"
        if not options.reuse:
            prepare(options.url, 1, regenerate=True)
            prepare_changes(options.url)
            audit = write_audit(options.url, folder)
            base.unlink(missing_ok=True)
            run(audit, base, folder / "first", NOW, src)
            churn(options.url, rate)
        seconds: dict[str, dict[str, float]] = {}
        notes: dict[str, str] = {}
        answers: dict[str, dict[str, int]] = {}
        for attempt in range(options.runs):
            for variant, tree in [*variants.items(), ("full", src)]:
                history = folder / f"{variant}.sqlite"
                shutil.copy(base, history)
                report = run(audit, history, folder / variant, NEXT_DAY, tree,
                             *(["--full"] if variant == "full" else []))
                for name, check in report.items():
                    figure = check["duration_ms"] / 1000
                    kept = seconds.setdefault(name, {})
                    kept[variant] = min(kept.get(variant, figure), figure)
                    answers.setdefault(name, {})[variant] = check["violation_count"]
                    if variant == "incremental":
                        notes[name] = next((note for note in check.get("notes", [])
                                            if "incremental" in note or "full" in note), "")
                if options.explain and variant == "incremental" and attempt == 0:
                    explain(options.url, report)
        print(f"\nchurn {rate:.1%} (seconds, fastest of {options.runs})")
        header = "".join(f"{variant:>13}" for variant in [*variants, "full"])
        print(f"{'check':28}{header}")
        for name in CHECKS:
            row = seconds.get(name, {})
            cells = "".join(f"{row.get(variant, float('nan')):13.3f}"
                            for variant in [*variants, "full"])
            found = answers.get(name, {})
            same = "" if len(set(found.values())) == 1 else f"  DIFFERENT ANSWERS {found}"
            print(f"{name:28}{cells}   {notes.get(name, '')[:80]}{same}")
    print(f"\nkept in {folder} (--reuse it to time the last churn rate again)")


if __name__ == "__main__":
    main()
