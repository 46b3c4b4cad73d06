"""The `integrity` command. Only wiring: every decision lives in the package.

Domain errors are caught here and become one line on stderr with exit code 2;
a traceback means a bug. Heavy imports (pandas, SQLAlchemy) happen inside the
commands that need them, so `--help` and `validate` stay instant.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from integrity import __version__
from integrity.gate import ExitCode, exit_code

AUDIT_ERROR = int(ExitCode.AUDIT_ERROR)


def _fail(message: str) -> None:
    click.echo(f"integrity: error: {message}", err=True)
    sys.exit(AUDIT_ERROR)


def _parse_now(value: str | None, option: str = "--now") -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{option}: not an ISO 8601 time: {value!r} (e.g. 2026-01-30T12:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _load(path: str, deferred: bool = False):
    from integrity.audit import load_audit
    from integrity.errors import ConfigError

    try:
        return load_audit(path, deferred=deferred)
    except ConfigError as error:
        _fail(f"invalid audit\n{error}" if "\n" in str(error) else str(error))


class _FailClosed(click.Group):
    """Whatever escapes a command is exit 2 and one line on stderr (`-v` adds the trace):
    a run that did not finish auditing must never read as 1 (violations) or 0 (passed)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted before the audit finished")
        except BaseException as error:  # noqa: BLE001 — RunTimeout, MemoryError, bugs
            logging.getLogger("integrity").debug("integrity crashed", exc_info=True)
            text = " ".join(str(error).split()) or "no message"
            _fail(f"{type(error).__name__}: {text[:300]} (this is a bug in integrity unless "
                  f"the message says otherwise; -v shows where)")


@click.group(cls=_FailClosed, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="integrity")
@click.option("-v", "--verbose", is_flag=True, help="Log progress and crash details to stderr.")
def main(verbose: bool) -> None:
    """Audit the data of a multi-tenant SaaS application.

    Exit codes: 0 the gate passed; 1 violations at or above the fail level;
    2 the audit could not run or a check errored; 3 another run of the same
    audit holds its lock.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


ENGINE = click.option("--engine", type=click.Choice(["pandas", "sql", "auto"]),
                      help="Where checks run (default: the audit's `engine:`, else auto): "
                           "pull into pandas, or push the work down into the database. "
                           "A check's own `engine:` wins.")


def _check_engines(audit, engine: str | None) -> None:
    """Refuse, before connecting, checks the SQL engine cannot express on this database."""
    from sqlalchemy.engine import make_url

    from integrity.runner import engine_problems

    try:
        dialect = make_url(audit.connection.url).get_backend_name()
    except Exception:  # noqa: BLE001 — an unusable URL is reported when connecting
        return
    problems = engine_problems(audit, dialect, engine)
    if problems:
        _fail("invalid audit\n" + "\n".join(
            f"{audit.file}:{line}:{column}: {path} ({check_id}): {problem}"
            for path, check_id, (line, column), problem in problems))


@main.command()
@click.argument("audit", type=click.Path(dir_okay=False))
@ENGINE
def validate(audit: str, engine: str | None) -> None:
    """Validate an audit file without connecting to anything.

    Needs no secrets: a ${VARIABLE} that is not set is read from the environment at run
    time, and what depends on it (the database's SQL dialect) is checked then."""
    loaded = _load(audit, deferred=True)
    if engine or loaded.config.engine == "sql":
        _check_engines(loaded, engine)
    click.echo(f"{audit}: valid — {len(loaded.checks)} checks on "
               f"{len(loaded.datasets)} datasets")
    for warning in loaded.warnings:
        click.echo(f"integrity: warning: {warning}", err=True)
    if loaded.deferred:
        click.echo(f"read from the environment at run time: {', '.join(loaded.deferred)}"
                   + ("; the database's SQL dialect is known only then"
                      if "${" in loaded.connection.url else ""))


def history_url(audit=None, option: str | None = None) -> str:
    """--history, else the audit's history.url, else $INTEGRITY_HISTORY_URL, else the default."""
    import os

    from integrity.history import DEFAULT_URL, is_same_database

    configured = audit.config.history.url if audit is not None else None
    url = option or configured or os.environ.get("INTEGRITY_HISTORY_URL") or DEFAULT_URL
    if audit is not None and is_same_database(url, audit.connection.url):
        from sqlalchemy.engine import make_url

        from integrity.errors import masked_url

        _fail(f"the run history ({masked_url(make_url(url))}) is the audited database, which "
              f"integrity never writes to: give --history or history.url another database")
    return url


HISTORY = click.option("--history", "history", metavar="URL",
                       help="Run history database (default: the audit's history.url, else "
                            "$INTEGRITY_HISTORY_URL, else sqlite:///reports/history.sqlite).")


def _options(function):
    options = [
        click.option("-o", "--output", type=click.Path(file_okay=False),
                     help="Folder for the reports (default: the audit's output.dir, "
                          "else reports/<audit name>)."),
        click.option("--sample-limit", type=click.IntRange(min=0),
                     help="Violating rows kept per check in the reports (0 = all)."),
        click.option("--fail-on", type=click.Choice(["critical", "warning"]), default="critical",
                     show_default=True, help="Lowest level that fails the gate."),
        click.option("--now", "now", metavar="ISO_TIME",
                     help="Evaluate windows and freshness as of this time (default: now)."),
        ENGINE,
        click.option("--full", is_flag=True,
                     help="Examine every row: no check of an `incremental:` dataset starts "
                          "from the last run's watermark."),
        HISTORY,
        click.option("--no-history", is_flag=True,
                     help="Do not read or record run history (no lifecycle, no baselines, "
                          "and no notifications: they need its cooldowns — unless --notify)."),
        click.option("--notify", "force_notify", is_flag=True,
                     help="With --no-history, send the audit's notifications all the same "
                          "(every run alerts: there are no cooldowns without history)."),
        click.option("--notify-dry-run", "notify_dry_run", metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Write the messages the channels would get to FILE (JSON lines) "
                          "instead of sending them; alert state is kept as if sent — replay "
                          "with --now and a separate --history."),
        click.option("--timeout", metavar="DURATION",
                     help="Bound the whole run (e.g. 30m); past it the run is an audit error."),
        click.option("--no-lock", is_flag=True,
                     help="Do not take the audit's lock (runs of the same audit may overlap)."),
        click.option("--summary", type=click.Choice(["auto", "line", "checks", "all"]),
                     default="auto", show_default=True,
                     help="Console output: one line (auto when not on a terminal), the "
                          "checks that need attention (auto on a terminal, with progress), "
                          "or every check."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True, help="json: one JSON object per check and per run, "
                                             "for log shippers."),
        click.option("--check", "only", multiple=True, metavar="PATTERN",
                     help="Run only the checks whose id or kind matches (shell pattern; "
                          "repeatable)."),
        click.option("--skip", multiple=True, metavar="PATTERN",
                     help="Leave out the checks whose id or kind matches (repeatable)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@click.argument("audit", type=click.Path(dir_okay=False))
@_options
def run(audit, **options) -> None:
    """Run an audit, write its reports and exit with the gate's code.

    Exit codes: 0 the gate passed; 1 violations at or above --fail-on; 2 the
    audit could not run or a check errored; 3 another run of this audit holds
    the lock.
    """
    sys.exit(_job(_load(audit), **options))


@main.command()
@click.argument("audit", type=click.Path(dir_okay=False))
@_options
def gate(audit, **options) -> None:
    """Gate a deploy: run AUDIT and exit non-zero unless it passes.

    The same run as `integrity run`, listing the checks that block; in a
    GitHub Actions job the Markdown summary goes to $GITHUB_STEP_SUMMARY, and
    junit.xml in the output folder is for any CI's test report.
    """
    if options["summary"] == "auto":
        options["summary"] = "checks"
    sys.exit(_job(_load(audit), **options))


def _job(audit, **options) -> int:
    from integrity.errors import IntegrityError
    from integrity.job import execute
    from integrity.operations import Locked

    audit, job, mode, log_format = _prepare(audit, **options)
    try:
        outcome = execute(audit, job)
    except Locked as error:
        click.echo(f"integrity: {error}", err=True)
        return 3
    except IntegrityError as error:
        _fail(str(error))
    _report(outcome, mode, log_format)
    return exit_code(outcome.result)


def _prepare(audit, output=None, sample_limit=None, fail_on="critical", now=None, engine=None,
             history=None, no_history=False, force_notify=False, timeout=None, no_lock=False,
             summary="auto", log_format="text", only=(), skip=(), notify_dry_run=None,
             full=False):
    """The job a run's options describe: (audit, JobOptions, console mode, log format)."""
    from integrity.job import JobOptions
    from integrity.operations import lock_path
    from integrity.units import parse_duration

    if only or skip:
        audit = _select(audit, only, skip)
    _check_engines(audit, engine)
    target = output or audit.config.output.dir or str(Path("reports") / audit.name)
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout).total_seconds()
        except ValueError as error:
            _fail(f"--timeout: {error}")
        if seconds <= 0:
            _fail(f"--timeout: {timeout!r} would stop the run before it starts; give a "
                  f"positive duration such as 30m, or leave --timeout out for no bound")
    interactive = sys.stdout.isatty()
    mode = ("checks" if interactive else "line") if summary == "auto" else summary
    progress = _progress(log_format, interactive and mode != "line")
    options = JobOptions(
        output=target, sample_limit=sample_limit, fail_on=fail_on, now=_parse_now(now),
        engine=engine, full=full, timeout=seconds, on_result=progress,
        history=None if no_history or not audit.config.history.enabled
        else history_url(audit, history),
        lock=None if no_lock else lock_path(audit.file, audit.connection.url, audit.name),
        notify=force_notify or bool(notify_dry_run) or not (
            no_history or not audit.config.history.enabled),
        notify_dry_run=notify_dry_run)
    return audit, options, mode, log_format


def _select(audit, only: tuple[str, ...], skip: tuple[str, ...]):
    """The audit with only the checks --check/--skip leave (matched on id or kind)."""
    import dataclasses
    from fnmatch import fnmatchcase

    def matches(config, patterns) -> bool:
        return any(fnmatchcase(config.id, p) or fnmatchcase(config.kind, p) for p in patterns)

    kept = [c for c in audit.checks if (not only or matches(c, only)) and not matches(c, skip)]
    if not kept:
        _fail("--check/--skip leave no check to run")
    return dataclasses.replace(audit, checks=kept,
                               indices={c.id: i for i, c in enumerate(audit.checks)})


def _progress(log_format: str, interactive: bool):
    """Per-check output as results arrive: JSON lines, or progress on a terminal."""
    if log_format == "json":
        import json

        from integrity.report.json_report import check_document

        def emit(check):
            document = {key: value for key, value in check_document(check).items()
                        if key not in {"violations", "columns", "trend"}}
            click.echo(json.dumps({"event": "check", **document}, default=str))
        return emit
    if interactive:
        def show(check):
            count = "" if check.violation_count is None else f"{check.violation_count:,}"
            click.echo(f"  {check.status.upper():<5} {check.id}  {count}  "
                       f"({check.duration_ms:.0f} ms)")
        return show
    return None


def _report(outcome, mode: str, log_format: str) -> None:
    from integrity.report.text import summary_lines

    result = outcome.result
    report = outcome.written.get("html")
    if log_format == "json":
        import json

        click.echo(json.dumps({
            "event": "audit", "audit": result.audit_name, "run_id": result.run_id,
            "exit_code": exit_code(result),
            "outcome": ExitCode(exit_code(result)).name.lower(),
            "counts": result.counts, "errors": result.errors, "warnings": result.warnings,
            "rollback": result.rollback,
            "report": str(report) if report else None,
            "notifications": [{"channel": d.channel, "ok": d.ok, "error": d.error}
                              for d in outcome.deliveries]}))
        return
    for error in result.errors:
        click.echo(f"integrity: error: {error}", err=True)
    for warning in result.warnings:
        click.echo(f"integrity: warning: {warning}", err=True)
    lines = summary_lines(result, all_checks=mode == "all")
    if mode == "line":
        # The verdict's line, and a rollback's: it is the one thing nobody may miss.
        lines = [line for line in lines if line.startswith(("ROLLBACK", "watch #"))] \
            + lines[-1:]
        # One line for the log; why a check could not run still goes to stderr.
        for check in result.checks:
            if check.status == "error" and check.error not in result.errors and \
                    check.error.removeprefix("not run: ") not in result.errors:
                click.echo(f"integrity: error: {check.id}: {check.error}", err=True)
    for line in lines:
        if not line.startswith("error: "):
            click.echo(line)
    for delivery in outcome.deliveries:
        if not delivery.ok:
            click.echo(f"integrity: notification to {delivery.channel} ({delivery.target}) "
                       f"failed: {delivery.error}", err=True)
    if report is not None:
        click.echo(f"report: {report}")


def _quiet_run(audit, now, history) -> None:
    """An earlier demo night: recorded in history, nothing printed or kept but that."""
    from integrity.history import History
    from integrity.runner import run_audit

    store = History(f"sqlite:///{history.resolve()}")
    store.apply(run_audit(audit, now=now, history=store))
    store.dispose()


@main.command()
@click.option("-o", "--output", type=click.Path(file_okay=False), default="reports/demo",
              show_default=True, help="Folder for the demo database and reports.")
@click.option("--scale", type=click.FloatRange(min=0.0001), default=0.02, show_default=True,
              help="Size of the generated data (1 = about 100k quotes).")
@click.option("--nights", type=click.IntRange(min=1, max=30), default=3, show_default=True,
              help="Audit this many nightly snapshots, so the report shows what is new.")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(output: str, scale: float, nights: int, seed: int) -> None:
    """Build the reference data in SQLite, audit it, and point to the report.

    Each night's snapshot is the night before plus a day of new rows, with known,
    injected violations: most persist, a few are repaired, a few new ones appear. The
    gate fails by design; the demo itself exits 0 when the audits ran.
    """
    import os
    from datetime import timedelta

    from integrity.errors import OutputError
    from integrity.reference import reference_audit_path
    from integrity.reference.generator import default_now, generate, generate_next
    from integrity.report import prepare_output

    try:
        folder = prepare_output(output)
    except OutputError as error:
        _fail(str(error))
    database = (folder / "reference.sqlite").resolve()
    history = folder / "history.sqlite"
    for stale in folder.glob("history.sqlite*"):
        stale.unlink()  # a fresh story every time the demo runs
    url = f"sqlite:///{database}"
    os.environ["REFERENCE_DATABASE_URL"] = url
    audit = _load(str(reference_audit_path()))
    today = default_now()
    reference = None
    for night in range(nights):
        now = today - timedelta(days=nights - 1 - night)
        last = night == nights - 1
        if reference is None:
            click.echo(f"Night {night + 1} of {nights} ({now:%Y-%m-%d}): generating the "
                       f"reference data (scale {scale}) in {database} and auditing it ...")
            reference = generate(url, scale=scale, seed=seed, now=now)
        else:
            click.echo(f"Night {night + 1} of {nights} ({now:%Y-%m-%d}): adding a day of data "
                       "(a few violations repaired, a few new) and auditing it ...")
            reference = generate_next(url, reference, now=now)
        if last:
            code = _job(audit, output=str(folder), now=now.isoformat(), summary="checks",
                        history=f"sqlite:///{history.resolve()}", no_lock=True)
        else:
            _quiet_run(audit, now, history)

    click.echo("")
    click.echo(f"Open the report: {(folder / 'report.html').resolve().as_uri()}")
    if code == AUDIT_ERROR:
        sys.exit(code)
    click.echo("The violations above were injected on purpose; a real audit would exit "
               f"{code} here.")


@main.command()
@click.argument("url")
@click.option("--scale", type=click.FloatRange(min=0.0001), default=0.02, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--now", "now", metavar="ISO_TIME", help="Anchor the data at this time.")
@click.option("--clean", is_flag=True, help="Generate clean data, without injected violations.")
def generate(url: str, scale: float, seed: int, now: str | None, clean: bool) -> None:
    """Create the reference schema at URL (dropping its tables) and fill it."""
    import sqlalchemy as sa

    from integrity.errors import scrub, url_secrets
    from integrity.reference.generator import generate as fill

    try:
        secrets = url_secrets(sa.engine.make_url(url))
    except sa.exc.ArgumentError:
        _fail("not a valid SQLAlchemy URL")
    try:
        reference = fill(url, scale=scale, seed=seed, now=_parse_now(now), inject=not clean)
    except sa.exc.SQLAlchemyError as error:
        _fail(scrub(" ".join(str(getattr(error, "orig", error)).split()), secrets))
    rows = sum(len(frame) for frame in reference.tables.values())
    click.echo(f"{rows:,} rows written; {sum(map(len, reference.expected.values()))} "
               f"violations injected")


@main.command(name="checks")
@click.argument("kind", required=False)
def list_checks(kind: str | None) -> None:
    """List the check kinds this version knows; with KIND, that kind's reference.

    `integrity checks duplicates` prints every setting of the kind (type, default,
    meaning), exactly what it counts as a violation, and an example. The same pages,
    and the rest of an audit file's settings, are in docs/reference.md."""
    from integrity.checks import CHECKS

    if kind is None:
        for name, family in CHECKS.items():
            click.echo(f"{name:<20} {family.__doc__}")
        return
    if kind not in CHECKS:
        import difflib

        hint = difflib.get_close_matches(kind, list(CHECKS), n=1)
        _fail(f"unknown check kind {kind!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (known: {', '.join(CHECKS)})")
    from integrity.catalog import as_text, kind_page

    click.echo(as_text(kind_page(kind)), nl=False)


@main.group()
def suite() -> None:
    """Great Expectations suites (expectations/*.json)."""


@suite.command("scaffold")
@click.argument("dataset")
@click.option("--audit", "audit_path", required=True, type=click.Path(dir_okay=False),
              help="The audit whose connection and dataset definition to use.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the suite (default: expectations/<dataset>.json).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Profile only the first N rows (by key).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def scaffold(dataset: str, audit_path: str, output: str | None, limit: int | None,
             force: bool) -> None:
    """Draft a GX suite from DATASET's data, for a human to review and edit."""
    import difflib

    from integrity.errors import IntegrityError
    from integrity.scaffold import draft, read_dataset, write

    audit = _load(audit_path)
    if dataset not in audit.datasets:
        hint = difflib.get_close_matches(dataset, list(audit.datasets), n=1)
        _fail(f"{audit_path}: no dataset {dataset!r}"
              + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (defined: {', '.join(audit.datasets)})")
    target = Path(output or Path("expectations") / f"{dataset}.json")
    if target.exists() and not force:
        _fail(f"{target} exists; pass --force to overwrite it")
    try:
        frame = read_dataset(audit, dataset, limit)
    except IntegrityError as error:
        _fail(str(error))
    document = draft(frame, dataset)
    try:
        write(document, target)
    except OSError as error:
        _fail(f"cannot write {target}: {error.strerror or error}")
    click.echo(f"{target}: {len(document['expectations'])} expectations drafted from "
               f"{len(frame):,} rows of {dataset}. Review them, then attach the suite:\n"
               f"  - {{kind: expectation_suite, dataset: {dataset}, suite: {target}}}")


@main.command()
@click.argument("audit", type=click.Path(dir_okay=False))
@click.argument("check")
@click.argument("keys", nargs=-1)
@click.option("--reason", required=True, help="Why the violations are accepted (the ticket).")
@click.option("--until", "until", required=True, metavar="YYYY-MM-DD",
              help="The last day the acceptance holds.")
@HISTORY
def accept(audit: str, check: str, keys: tuple[str, ...], reason: str, until: str,
           history: str | None) -> None:
    """Accept known violations of CHECK so the gate can pass while they are fixed.

    KEYS are violation keys as the report shows them (a compound key as comma-
    separated values: tn_0001,2026-01-09); without KEYS every violation of the
    check is accepted. Accepted violations stay in the report, marked, and the
    acceptance expires after --until.
    """
    from datetime import date

    from integrity.errors import IntegrityError
    from integrity.history import History
    from integrity.job import refuse_the_audited_database

    loaded = _load(audit)
    kinds = {config.id: config.kind for config in loaded.checks}
    if check not in kinds and check.split(":", 1)[0] not in kinds:
        _fail(f"{audit}: no check {check!r} (checks: {', '.join(sorted(kinds))})")
    if kinds.get(check) == "expectation_suite":
        # A suite's results are its expectations; an acceptance of the suite's own id
        # would match none of them.
        _fail(f"{check} is a Great Expectations suite: accept one of its expectations by "
              f"the id the report shows, e.g. {check}:expect_column_values_to_not_be_null(email)")
    try:
        last_day = date.fromisoformat(until)
    except ValueError:
        _fail(f"--until: not a date: {until!r} (e.g. 2026-12-31)")
    store = History(history_url(loaded, history))
    try:
        refuse_the_audited_database(store, loaded)
        count, unknown = store.accept(loaded.name, check,
                                      [key.split(",") for key in keys] or None, reason, last_day)
    except IntegrityError as error:
        _fail(str(error))
    finally:
        store.dispose()
    what = f"{count} violation(s)" if keys else "every violation"
    click.echo(f"accepted {what} of {check} until {last_day.isoformat()}: {reason}")
    if unknown:
        click.echo(f"integrity: warning: {len(unknown)} of these keys match no violation of "
                   f"{check} in its last recorded run ({', '.join(map(','.join, unknown))}); "
                   f"check the spelling — a compound key is comma-separated, as the report "
                   f"shows it", err=True)


@main.group(name="alerts")
def alerts_group() -> None:
    """Open alerts, the alert log, and acknowledging an alert."""


@alerts_group.command("list")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@HISTORY
def alerts_list(audit: str, history: str | None) -> None:
    """The open alerts of AUDIT: since when, last value, channels, reminders sent."""
    loaded = _load(audit, deferred=True)
    store = _reading(loaded, history)
    found = _guarded(lambda: store.open_alerts(loaded.name))
    if not found:
        click.echo(f"no open alerts for {loaded.name}")
        return
    for alert in found:
        acked = ""
        if alert["acknowledged_at"]:
            until = (f" until {_moment(alert['ack_until'])}" if alert["ack_until"]
                     else "")
            acked = f", acknowledged{until}: {alert['ack_note']}"
        state = ("sent" if alert["announced"] else "held back") + (
            ", a message is due" if alert["pending"] and alert["announced"] else "")
        click.echo(f"{alert['last_status'].upper():<5} {alert['check_id']} on "
                   f"{alert['target'] or '?'} via {alert['channel_name']}: open since "
                   f"{_moment(alert['opened_at'])}, last value {alert['last_value'] or '–'}, "
                   f"{state}, {alert['reminders']} reminder(s){acked}")


@alerts_group.command("log")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@HISTORY
def alerts_log(audit: str, limit: int, history: str | None) -> None:
    """The alert history of AUDIT, newest first: fired, reminded, held back,
    acknowledged, recovered — with times and delivery outcomes."""
    loaded = _load(audit, deferred=True)
    store = _reading(loaded, history)
    for entry in _guarded(lambda: store.alert_log(loaded.name, limit)):
        delivered = {None: "", True: ", delivered", False: f", NOT delivered: "
                     f"{entry['error']}"}[entry["delivered"]]
        note = f" — {entry['note']}" if entry["note"] else ""
        run = f"run #{entry['run_id']}" if entry["run_id"] else "by hand"
        click.echo(f"{_moment(entry['at'])}  {entry['event']:<12} {entry['check_id']} on "
                   f"{entry['target'] or '?'} via {entry['channel_name']} "
                   f"({entry['status']}{', ' + entry['value'] if entry['value'] else ''}; "
                   f"{run}{delivered}){note}")


@alerts_group.command("ack")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.argument("check")
@click.option("--note", required=True, help="Who is on it, and why (shown in the alert log).")
@click.option("--for", "lasting", metavar="DURATION",
              help="Silence reminders this long (e.g. 4h); default: until the alert "
                   "resolves or worsens.")
@click.option("--until", "until_text", metavar="ISO_TIME",
              help="Silence reminders until this time instead (e.g. 2026-03-02T18:00:00Z).")
@click.option("--target", help="Only the alert on this target (default: every target).")
@click.option("--now", "now", metavar="ISO_TIME", help="Acknowledge as of this time.")
@HISTORY
def alerts_ack(audit: str, check: str, note: str, lasting: str | None, until_text: str | None,
               target: str | None, now: str | None, history: str | None) -> None:
    """Acknowledge CHECK's open alert: no reminders while someone is on it.

    The breach stays open and in every report; a worse status alerts again;
    PagerDuty hears `acknowledge` for its incident at once.
    """
    from integrity.notify import acknowledge_incidents
    from integrity.units import parse_duration

    loaded = _load(audit, deferred=True)  # no secret is needed to acknowledge
    moment = _parse_now(now) or datetime.now(timezone.utc)
    until = None
    if lasting and until_text:
        _fail("--for and --until say the same thing: give one")
    if lasting:
        try:
            until = moment + parse_duration(lasting)
        except ValueError as error:
            _fail(f"--for: {error}")
    if until_text:
        until = _parse_now(until_text, "--until")
        if until <= moment:
            _fail(f"--until {until_text} is not after now ({_moment(moment)})")
    store = _reading(loaded, history)
    acknowledged = _guarded(lambda: store.acknowledge(loaded.name, check, note, until, moment,
                                                      target))
    if not acknowledged:
        _fail(f"{check}: no open alert of {loaded.name} to acknowledge "
              f"(`integrity alerts list {audit}` shows the open ones)")
    for line in acknowledge_incidents(loaded, acknowledged, check):
        click.echo(line)
    channels = ", ".join(sorted({a["channel_name"] for a in acknowledged}))
    click.echo(f"acknowledged {check} on {channels}"
               f"{f' until {_moment(until)}' if until else ''}: {note}")


def _reading(audit, option: str | None):
    """The audit's history store, for a command that reads (or acknowledges): refused if
    it is the audited database, and never created — a store that does not exist yet has
    no alerts."""
    from integrity.history import History

    return History(history_url(audit, option))


def _guarded(action):
    from integrity.errors import IntegrityError

    try:
        return action()
    except IntegrityError as error:
        _fail(str(error))


def _moment(moment) -> str:
    return "–" if moment is None else f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


@main.group(name="history")
def history_group() -> None:
    """Browse the run history: list runs, show one, diff two."""


AUDIT_FILE = click.argument("audit_file", required=False,
                            type=click.Path(dir_okay=False, exists=True))


@history_group.command("list")
@AUDIT_FILE
@click.option("--audit", "audit_name", help="Only runs of this audit (its name).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@HISTORY
def history_list(audit_file: str | None, audit_name: str | None, limit: int,
                 history: str | None) -> None:
    """The most recent runs, newest first. With AUDIT_FILE: its runs, from its store."""
    store, audit_name = _history(history, audit_file, audit_name)
    found = _guarded(lambda: store.list_runs(audit_name, limit)) if store else []
    if not found:
        click.echo("no runs recorded yet")
    for run in found:
        counts = ", ".join(f"{run['counts'][s]} {s}" for s in ("fail", "warn", "error", "info",
                                                                 "pass") if s in run["counts"])
        click.echo(f"#{run['id']:<5} {run['started_at']:%Y-%m-%d %H:%M}  {run['audit']:<20} "
                   f"{run['outcome']:<12} exit {run['exit_code']}  {counts}  "
                   f"data as of {run['data_as_of']:%Y-%m-%d %H:%M:%S}  "
                   f"on {run['target'] or '(not recorded)'}")


@history_group.command("show")
@click.argument("run_id", type=int)
@AUDIT_FILE
@HISTORY
def history_show(run_id: int, audit_file: str | None, history: str | None) -> None:
    """One run: every check's status, count or value, and what was sent."""
    store, _ = _history(history, audit_file)
    head, results = _read_run(store, run_id)
    click.echo(f"run #{head['id']} of {head['audit']} ({head['audit_file']}) on "
               f"{head['target'] or '(target not recorded)'}, "
               f"{head['started_at']:%Y-%m-%d %H:%M:%S} UTC, data as of "
               f"{head['data_as_of']:%Y-%m-%d %H:%M:%S} UTC, engine {head['engine']}, "
               f"{head['outcome']} (exit {head['exit_code']})")
    width = max((len(row["check_id"]) for row in results), default=10)
    for row in results:
        count = "–" if row["violation_count"] is None else f"{row['violation_count']:,}"
        value = "" if row["value"] is None else f"  value {row['value']:.6g}"
        click.echo(f"  {row['status'].upper():<5} {row['check_id']:<{width}}  {count}{value}")
    for sent in _guarded(lambda: store.deliveries(run_id)):
        outcome = "delivered" if sent["ok"] else f"NOT delivered: {sent['error']}"
        click.echo(f"  sent to {sent['channel']}: {', '.join(sent['checks'])} — {outcome} "
                   f"({sent['attempts']} attempt(s))")


@history_group.command("diff")
@click.argument("older", type=int)
@click.argument("newer", type=int)
@AUDIT_FILE
@HISTORY
def history_diff(older: int, newer: int, audit_file: str | None, history: str | None) -> None:
    """What changed per check between two runs."""
    store, _ = _history(history, audit_file)
    first, before = _read_run(store, older)
    second, after = _read_run(store, newer)
    if (first["audit"], first["target"]) != (second["audit"], second["target"]):
        _fail(f"run #{older} ({first['audit']} on {first['target'] or '?'}) and run #{newer} "
              f"({second['audit']} on {second['target'] or '?'}) audit different things: "
              f"runs of different audits or targets are never compared")
    old = {row["check_id"]: row for row in before}
    new = {row["check_id"]: row for row in after}
    changes = 0
    for check_id in sorted(set(old) | set(new)):
        a, b = old.get(check_id), new.get(check_id)
        if a is None or b is None:
            click.echo(f"{'+' if a is None else '-'} {check_id}: "
                       f"{'added' if a is None else 'removed'}")
            changes += 1
            continue
        appeared = len(b["fingerprints"] - a["fingerprints"])
        gone = len(a["fingerprints"] - b["fingerprints"])
        if a["status"] != b["status"] or appeared or gone:
            changes += 1
            click.echo(f"~ {check_id}: {a['status']} -> {b['status']}, violations "
                       f"{a['violation_count']} -> {b['violation_count']} "
                       f"(+{appeared} new, -{gone} resolved)")
    if not changes:
        click.echo(f"no changes between run #{older} and run #{newer}")


def _history(option: str | None, audit_file: str | None = None,
             audit_name: str | None = None):
    """(the store to read, the audit name to read) — the audit file's store and name when
    one is given. Reading never creates a store: (None, …) when there is none yet."""
    from integrity.history import History

    audit = _load(audit_file, deferred=True) if audit_file else None
    store = History(history_url(audit, option))
    if not _guarded(store.exists):
        return None, audit_name
    return store, audit_name or (audit.name if audit else None)


def _read_run(store, run_id: int):
    from integrity.errors import IntegrityError

    if store is None:
        _fail(f"history: no run {run_id} (no runs recorded yet)")
    try:
        return store.run(run_id)
    except IntegrityError as error:
        _fail(str(error))


@main.command()
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.option("--cron", "schedule", metavar="SCHEDULE",
              help="When to run, in cron syntax: '0 3 * * *' is 03:00 every day. With "
                   "--watch: the standard schedule outside a watch (optional).")
@click.option("--watch", "watch", is_flag=True,
              help="One line for post-deploy watches too: every 5 minutes `integrity watch "
                   "tick` runs the audit when the active watch's cadence (else --cron) says.")
@click.option("--env-file", type=click.Path(dir_okay=False),
              help="A file of VAR=value lines (secrets) loaded before each run.")
@click.option("--log", "log_file", type=click.Path(dir_okay=False),
              help="Where each run's output goes (default: reports/<audit name>.log).")
@click.option("--systemd", is_flag=True, help="Print a systemd service and timer instead.")
@click.option("--timeout", default="2h", show_default=True,
              help="Bound each run; an overrun is recorded as an audit error.")
@click.option("--fail-on", type=click.Choice(["critical", "warning"]), default="critical",
              show_default=True)
def schedule(audit: str, schedule: str | None, watch: bool, env_file: str | None,
             log_file: str | None, systemd: bool, timeout: str, fail_on: str) -> None:
    """Print a ready crontab line (or systemd units) that runs AUDIT on a schedule.

    The line changes to this folder, loads the environment file, appends the
    run's output to the log, and records the exit code (0 passed, 1 violations,
    2 audit error, 3 a previous run still holds the lock, 4 a watch's rollback
    criterion met); cron mails a line only when a run did not pass. Runs never
    overlap: each takes the audit's lock.
    """
    import os

    from integrity.audit import load_audit
    from integrity.errors import ConfigError, IntegrityError
    from integrity.operations import crontab_line, read_env_file, systemd_units, validate_cron
    from integrity.units import format_duration

    if schedule is None and not watch:
        _fail("give --cron SCHEDULE (e.g. '0 3 * * *'), or --watch for post-deploy watches")
    try:
        # Validate now, with the variables the scheduled runs will have.
        overlay = read_env_file(Path(env_file)) if env_file else {}
        loaded = load_audit(audit, environ={**os.environ, **overlay})
    except (ConfigError, IntegrityError) as error:
        _fail(str(error))
    try:
        when = validate_cron(schedule) if schedule is not None else None
        if watch and when is not None:
            from integrity.watch import last_scheduled

            last_scheduled(when, datetime.now(timezone.utc))  # one the tick can read
    except IntegrityError as error:
        _fail(str(error))
    for check in loaded.checks:
        # A sliding window ends at the run's start: a run at 10:00:05 over data stamped at
        # the start of each hour would measure the hour just begun (nearly empty).
        if getattr(check, "window", None) and hasattr(check, "align") and check.align is None:
            click.echo(f"integrity: note: {check.id}: its {format_duration(check.window)} "
                       f"window slides back from each run's start; for data stamped per "
                       f"hour or day, `align: hour` (or day, week) measures the last complete "
                       f"one", err=True)
    workdir = Path.cwd()
    audit_path = Path(audit).resolve()
    env = Path(env_file).resolve() if env_file else None
    log = Path(log_file).resolve() if log_file else workdir / "reports" / f"{loaded.name}.log"
    arguments = ["--timeout", timeout, "--fail-on", fail_on]
    command = "run"
    if watch:
        # Every five minutes: the tick runs only what is due, so an hourly-then-daily
        # cadence needs no crontab edits and a watch's moments are kept within minutes.
        command, arguments = "watch tick", arguments + (["--cron", when] if when else [])
        when = "*/5 * * * *"
    if systemd:
        for name, text in systemd_units(loaded.name, when, audit_path, workdir, env,
                                        arguments, command).items():
            click.echo(f"# /etc/systemd/system/{name}\n{text}")
        click.echo(f"# then: systemctl daemon-reload && systemctl enable --now "
                   f"integrity-{loaded.name}.timer")
        return
    click.echo(crontab_line(when, audit_path, workdir, env, log, arguments, command))


# ---------------------------------------------------------------------------
# Post-deploy watches.


@main.group(name="watch")
def watch_group() -> None:
    """Watch a deploy: hour-0 baseline, runs at the plan's cadence, rollback, sign-off."""


def _watch_failure(error) -> None:
    from integrity.operations import Locked

    if isinstance(error, Locked):
        click.echo(f"integrity: {error}", err=True)
        sys.exit(3)
    _fail(str(error))


@watch_group.command("start")
@click.argument("audit", type=click.Path(dir_okay=False))
@click.option("--deploy", required=True, metavar="LABEL",
              help="What was deployed: a version, a tag or a commit.")
@click.option("--for", "lasting", metavar="DURATION",
              help="How long to watch (e.g. 24h, 7d); default: the audit's watch.duration.")
@_options
def watch_start(audit, deploy: str, lasting: str | None, **options) -> None:
    """Open a watch at a deploy: measure the period before it, run hour 0 (the baseline).

    Exits with the hour-0 run's code (0, 1, 2); 3 if a run holds the lock.
    """
    from integrity.errors import IntegrityError
    from integrity.units import parse_duration
    from integrity.watch import start

    duration = None
    if lasting is not None:
        try:
            duration = parse_duration(lasting)
        except ValueError as error:
            _fail(f"--for: {error}")
    if not deploy.strip() or "\n" in deploy or len(deploy) > 200:
        _fail("--deploy: one line of at most 200 characters (a version, a tag or a commit)")
    loaded, job, mode, log_format = _prepare(_load(audit), **options)
    try:
        done = start(loaded, job, deploy.strip(), duration)
    except IntegrityError as error:
        _watch_failure(error)
    _report(done.outcome, mode, log_format)
    _say(done.message, log_format, done.watch)
    code = exit_code(done.outcome.result)
    sys.exit(code if done.watch and done.watch["state"] == "active" else
             max(code, int(ExitCode.AUDIT_ERROR)))


def _say(message: str, log_format: str, watch: dict | None = None) -> None:
    """A watch's own line: text, or one JSON object among the run's (--log-format json)."""
    if not message:
        return
    if log_format == "json":
        import json

        click.echo(json.dumps({"event": "watch", "watch": watch and watch["id"],
                               "state": watch and watch["state"], "message": message}))
    else:
        click.echo(message)


@watch_group.command("tick")
@click.argument("audit", type=click.Path(dir_okay=False))
@click.option("--cron", "standard", metavar="SCHEDULE",
              help="The audit's standard schedule, for when no watch is active.")
@_options
def watch_tick(audit, standard: str | None, **options) -> None:
    """Run AUDIT if a run is due: by the active watch's cadence, else by --cron.

    What `integrity schedule --watch` puts in the crontab. After the watch's
    last run it signs the watch off and closes it. Exit codes: the run's (0, 1,
    2, 4 rollback), 0 when nothing was due, 1 when the sign-off is NOT
    APPROVED, 3 if a run holds the lock.
    """
    from integrity.errors import IntegrityError
    from integrity.watch import tick

    loaded, job, mode, log_format = _prepare(_load(audit), **options)
    try:
        done = tick(loaded, job, standard)
    except IntegrityError as error:
        _watch_failure(error)
    code = 0
    if done.outcome is not None:
        _report(done.outcome, mode, log_format)
        code = exit_code(done.outcome.result)
    _say(done.message, log_format, done.watch)
    if done.signoff is not None:
        if log_format == "json":
            _say(f"{done.signoff.verdict}", log_format, done.watch)
        else:
            _print_signoff(done.signoff)
        if code == 0 and not done.signoff.approved:
            code = 1
    sys.exit(code)


def _print_signoff(signoff) -> None:
    from integrity.watch import _clock

    watch = signoff.watch
    given = f" (signed off {_clock(watch['closed_at'])})" if signoff.given else ""
    click.echo(f"watch #{watch['id']} (deploy {watch['deploy']}): {signoff.verdict}{given}")
    for criterion in signoff.criteria:
        click.echo(f"  {'met' if criterion.met else 'NOT MET':<7} {criterion.name} — "
                   f"{criterion.evidence}")
    if "html" in signoff.written:
        click.echo(f"sign-off: {signoff.written['html']}")


def _watch_store(audit_file: str, history: str | None):
    from integrity.history import History

    audit = _load(audit_file, deferred=True)
    store = History(history_url(audit, history))
    return audit, (store if _guarded(store.exists) else None)


WATCH_ID = click.option("--watch", "watch_id", type=int, metavar="ID",
                        help="Which watch (default: the newest on the audit's target).")
NOW = click.option("--now", "now", metavar="ISO_TIME",
                   help="As of this time (default: now).")


@watch_group.command("status")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@WATCH_ID
@NOW
@HISTORY
def watch_status(audit: str, watch_id: int | None, now: str | None,
                 history: str | None) -> None:
    """Where the watch stands: hour N of M, runs made, due and missed, rollback, criteria."""
    from integrity.errors import IntegrityError
    from integrity.watch import _clock, cadence_text, evaluate, find

    loaded, store = _watch_store(audit, history)
    moment = _parse_now(now) or datetime.now(timezone.utc)
    try:
        watch = find(store, loaded, watch_id)
        state, criteria = evaluate(store, watch, moment)
    except IntegrityError as error:
        _fail(str(error))
    who = watch["deployed_by"]
    total = round((watch["ends_at"] - watch["started_at"]).total_seconds() / 3600, 1)
    shown = watch["state"] if watch["state"] != "closed" else (
        "signed off " + (watch["verdict"] or "").replace("_", " ").upper())
    if watch["state"] == "active" and watch.get("rollback_at"):
        shown += ", FAILED: a rollback criterion was met"
    click.echo(f"watch #{watch['id']} · deploy {watch['deploy']} of {loaded.name} on "
               f"{watch['target']} — {shown}")
    click.echo(f"deployed {_clock(watch['started_at'])} by {who.get('by', '?')}"
               + (f" (commit {who['commit'][:12]})" if who.get("commit") else "")
               + f" · hour {max(state.hours, 0):g} of {total:g} · ends "
                 f"{_clock(watch['ends_at'])}")
    click.echo(f"cadence: {cadence_text(watch)}")
    to_come = len([m for m in state.moments if m > moment and m not in state.done]) \
        if watch["state"] == "active" else 0
    click.echo(f"runs: {len(state.done)} made, {len(state.missed)} missed"
               + (f" ({', '.join(_clock(m) for m in state.missed[:5])})" if state.missed
                  else "")
               + (f", {to_come} to come" if to_come else "")
               + (f"; due now ({_clock(state.due)})" if state.due else
                  f"; next at {_clock(state.next)}" if state.next and watch["state"] == "active"
                  else ""))
    click.echo("rollback: " + (f"criterion met at {_clock(watch['rollback_at'])}"
                               if watch.get("rollback_at") else "no criterion met"))
    fired = [step for step in store.alert_steps(
        watch["audit"], watch["target"], watch["started_at"], watch.get("closed_at") or moment)
        if step["event"] in {"fired", "worse"}]
    click.echo(f"incidents: {len(fired)} alert(s) since the deploy" + (": " + ", ".join(
        f"{step['check_id']} {step['status']} at {_clock(step['at'])}"
        for step in fired[:5]) + (" …" if len(fired) > 5 else "") if fired else ""))
    click.echo("criteria so far:")
    for criterion in criteria:
        click.echo(f"  {'met' if criterion.met else 'NOT MET':<7} {criterion.name} — "
                   f"{criterion.evidence}")
    store.dispose()


@watch_group.command("signoff")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.option("--early", is_flag=True,
              help="An interim verdict before the end; the watch stays open.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Folder for the sign-off (default: the audit's output.dir, else "
                   "reports/<audit name>); it goes in watch-<id>/.")
@WATCH_ID
@NOW
@HISTORY
def watch_signoff(audit: str, early: bool, output: str | None, watch_id: int | None,
                  now: str | None, history: str | None) -> None:
    """Judge the watch over every run of its window: APPROVED (exit 0) or NOT APPROVED (1).

    At or after the end the watch closes with the verdict and the audit returns
    to its standard schedule; writes signoff.html and signoff.md.
    """
    from integrity.errors import IntegrityError
    from integrity.watch import find, signoff

    loaded, store = _watch_store(audit, history)
    folder = output or loaded.config.output.dir or str(Path("reports") / loaded.name)
    try:
        watch = find(store, loaded, watch_id)
        done = signoff(store, watch, _parse_now(now) or datetime.now(timezone.utc), folder,
                       early=early)
    except IntegrityError as error:
        _fail(str(error))
    _print_signoff(done)
    store.dispose()
    sys.exit(done.exit_code)


@watch_group.command("extend")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.option("--by", "by", required=True, metavar="DURATION", help="E.g. 24h.")
@click.option("--reason", required=True, help="Why (shown in the sign-off's timeline).")
@WATCH_ID
@NOW
@HISTORY
def watch_extend(audit: str, by: str, reason: str, watch_id: int | None, now: str | None,
                 history: str | None) -> None:
    """Make the active watch longer; the last cadence runs on to the new end."""
    from integrity.errors import IntegrityError
    from integrity.units import parse_duration
    from integrity.watch import _clock, extend, find

    try:
        span = parse_duration(by)
    except ValueError as error:
        _fail(f"--by: {error}")
    loaded, store = _watch_store(audit, history)
    try:
        watch = extend(store, find(store, loaded, watch_id, active=watch_id is None), span,
                       reason, _parse_now(now) or datetime.now(timezone.utc))
    except IntegrityError as error:
        _fail(str(error))
    click.echo(f"watch #{watch['id']} now ends {_clock(watch['ends_at'])}")
    store.dispose()


@watch_group.command("abort")
@click.argument("audit", type=click.Path(dir_okay=False, exists=True))
@click.option("--reason", required=True, help="Why (kept with the watch).")
@WATCH_ID
@NOW
@HISTORY
def watch_abort(audit: str, reason: str, watch_id: int | None, now: str | None,
                history: str | None) -> None:
    """End the active watch without a verdict (a rollback done, a redeploy coming)."""
    from integrity.errors import IntegrityError
    from integrity.watch import abort, find

    loaded, store = _watch_store(audit, history)
    try:
        watch = abort(store, find(store, loaded, watch_id, active=watch_id is None), reason,
                      _parse_now(now) or datetime.now(timezone.utc))
    except IntegrityError as error:
        _fail(str(error))
    click.echo(f"watch #{watch['id']} (deploy {watch['deploy']}) aborted: {reason}")
    store.dispose()
