"""Post-deploy watches: a deploy, a window, a verdict (the seeds' monitoring plans).

`integrity watch start AUDIT --deploy v42` records the deploy in the run
history, measures each windowed metric over the period `before` the deploy
(default 7 days: a count or sum per window of it, a ratio or percentile over
all of it), runs the audit once as **hour 0** — the baseline every later run
is compared with — and opens the watch. One cron line (`integrity schedule
AUDIT --watch`, every five minutes) then calls `integrity watch tick`, which
decides from the plan whether a run is due:

- The **cadence** (`[{until: 3d, every: 1h}, {every: 1d}]`) gives the runs'
  moments, counted from the deploy: 0, 1h, …, 71h, then 3d, 4d, 5d, 6d, and the
  end. A run is due at its moment (a minute early counts: cron jitter) until the
  next one; a tick that comes late runs it late. A moment whose time has passed
  without a run is **missed** — a finding in `status` and against the sign-off.
- Each run in a watch is compared with hour 0: per check, its value or count at
  the deploy and now, the violations new since the deploy and those resolved,
  and the value before the deploy (report: "Since the deploy").
- A `rollback_on` check that **fails with violations hour 0 did not have** (a
  metric breaching its critical bound counts as one: its group) is a rollback
  criterion met: the run exits 4, every channel that takes failures gets a
  `ROLLBACK criterion met` alert (and a recovery when no criterion is met any
  more), and the watch can no longer be approved. What was already broken at the
  deploy does not trigger it: the deploy did not cause it.
- At the end, the tick that makes the last run **signs off**: every criterion
  over every run of the window — no rollback criterion met, every run finished
  its audit, no more missed runs than `missed_runs`, `all_runs_pass`,
  `no_new_violations`, `metrics` bounds and `compare_to_baseline` — gives
  **APPROVED** or **NOT APPROVED**, written as a one-page report (HTML and
  Markdown) with each criterion's evidence, links to the runs that broke it,
  the before/after table and the incident timeline. The watch closes and the
  audit returns to its standard schedule (`tick --cron`), its history intact.

Every decision uses the run's `now` (`--now` replays a watch exactly), and the
plan is kept with the watch as it was at the deploy: editing the audit file
during a watch changes the checks, not the criteria it is judged by.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from integrity.config import Audit, WatchConfig, worse_direction
from integrity.errors import IntegrityError
from integrity.gate import ExitCode
from integrity.history import History, fingerprint
from integrity.results import STATUS_RANK
from integrity.job import JobOptions, JobOutcome, execute, open_history
from integrity.notify import ROLLBACK
from integrity.units import format_duration, parse_baseline_comparison, parse_run_condition

JITTER = timedelta(minutes=1)  # a run this much before its moment counts (cron starts early)
SCALED = {"count", "sum"}  # aggregates whose value grows with the window measured


def named(check_id: str, pattern: str) -> bool:
    """Whether a plan's id or glob names a result: the check as the file names it, and each
    of its parts (`database:size` of a `database` check, a suite's expectations)."""
    return fnmatchcase(check_id, pattern) or fnmatchcase(check_id.split(":", 1)[0], pattern)


class WatchError(IntegrityError):
    """No watch to act on, or one that cannot do what was asked."""


# ---------------------------------------------------------------------------
# The plan: when to run, and what to judge.


def plan_of(audit: Audit, duration: timedelta | None) -> dict[str, Any]:
    """The watch's plan from the audit's `watch:` (and `--for`), as kept with the watch:
    durations in seconds, and for each comparison with the baseline the direction that is
    worse, decided now from the check's bounds."""
    config = audit.config.watch
    if config is None and duration is None:
        raise WatchError(f"{audit.file}: no `watch:` plan; give --for (e.g. --for 24h), or "
                         f"add a watch: section (README, \"Watch a deploy\")")
    if config is None:
        config = WatchConfig(duration=duration)
    elif duration is not None:
        config = config.model_copy(update={"duration": duration})
    if config.duration <= timedelta(0):
        raise WatchError("a watch needs a duration of more than 0 (e.g. --for 24h)")
    checks = {check.id: check for check in audit.checks}
    directions = {}
    for check_id, text in config.signoff.compare_to_baseline.items():
        direction = parse_baseline_comparison(text).direction
        directions[check_id] = worse_direction(checks[check_id]) if direction == "worse" \
            else direction
    return {
        "duration": config.duration.total_seconds(),
        "cadence": [[None if step.until is None else step.until.total_seconds(),
                     step.every.total_seconds()] for step in config.cadence] or [[None, 3600]],
        "before": config.before.total_seconds(),
        "rollback_on": list(config.rollback_on),
        "signoff": {**config.signoff.model_dump(), "directions": directions},
    }


def moments(watch: dict) -> list[datetime]:
    """Every moment the cadence runs the audit, from the deploy (hour 0) to the end."""
    start, end = watch["started_at"], watch["ends_at"]
    total = end - start
    offsets: list[timedelta] = []
    begin = timedelta(0)
    for until, every in watch["plan"]["cadence"]:
        stop = total if until is None else min(timedelta(seconds=until), total)
        step = timedelta(seconds=every)
        offset = begin
        while offset < stop:
            offsets.append(offset)
            offset += step
        begin = max(begin, stop)
        if begin >= total:
            break
    if begin < total:  # an extended watch: the last cadence runs on to the new end
        step = timedelta(seconds=watch["plan"]["cadence"][-1][1])
        offset = begin
        while offset < total:
            offsets.append(offset)
            offset += step
    if not offsets or offsets[-1] != total:
        offsets.append(total)
    return [start + offset for offset in offsets]


@dataclass
class Progress:
    """Where a watch stands at `now`: its moments, the runs done, missed and to come."""

    watch: dict
    now: datetime
    moments: list[datetime]
    runs: list[dict]
    done: dict[datetime, int] = field(default_factory=dict)  # moment -> run id
    missed: list[datetime] = field(default_factory=list)
    due: datetime | None = None      # the moment a run is due for now, if any
    next: datetime | None = None     # the next moment after now

    @property
    def hours(self) -> float:
        return round((min(self.now, self.watch["ends_at"]) - self.watch["started_at"])
                     / timedelta(hours=1), 1)

    @property
    def ended(self) -> bool:
        return self.now + JITTER >= self.watch["ends_at"]


def progress(watch: dict, runs: list[dict], now: datetime, closing: bool = False) -> Progress:
    """`closing`: judged as the watch closes at `now` (its last moment, if not run, is
    missed). A closed watch is judged as it was when it closed."""
    closed = closing or watch["state"] != "active"
    if watch["state"] != "active" and watch.get("closed_at"):
        now = min(now, watch["closed_at"])  # an aborted watch misses nothing after it
    found = Progress(watch, now, moments(watch), runs)
    found.done = {run["slot_at"]: run["run_id"] for run in runs}
    reached = [moment for moment in found.moments if moment <= now + JITTER]
    current = reached[-1] if reached else None
    for index, moment in enumerate(found.moments):
        if moment in found.done or moment > now + JITTER:
            continue
        following = found.moments[index + 1] if index + 1 < len(found.moments) else None
        if (following is not None and following <= now + JITTER) or (following is None
                                                                      and closed):
            found.missed.append(moment)
    if not closed and current is not None and current not in found.done:
        found.due = current
    found.next = next((moment for moment in found.moments if moment > now + JITTER), None)
    return found


# ---------------------------------------------------------------------------
# Starting, and each run of a watch.


@dataclass
class WatchRun:
    """What a start or a tick did."""

    watch: dict | None
    outcome: JobOutcome | None = None   # the audit's run, if one was due
    message: str = ""
    signoff: Signoff | None = None


def deployed_by() -> dict[str, str]:
    """Who and what deployed, from the environment: a CI's own variables first."""
    env = os.environ
    found = {"by": env.get("INTEGRITY_DEPLOYED_BY") or env.get("GITHUB_ACTOR")
             or env.get("GITLAB_USER_LOGIN") or env.get("BUILD_REQUESTEDFOR")
             or _user(), "host": socket.gethostname()}
    if env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA"):
        found["commit"] = env.get("GITHUB_SHA") or env["CI_COMMIT_SHA"]
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        found["ci"] = (f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/"
                       f"{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}")
    elif env.get("CI_PIPELINE_URL"):
        found["ci"] = env["CI_PIPELINE_URL"]
    return found


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no user name is not worth failing a deploy over
        return "unknown"


def start(audit: Audit, options: JobOptions, deploy: str,
          duration: timedelta | None = None) -> WatchRun:
    """Open a watch of `audit` at a deploy: the period before it measured, hour 0 run."""
    with _locked(options):
        return _start(audit, dataclasses.replace(options, lock=None), deploy, duration)


def _start(audit: Audit, options: JobOptions, deploy: str,
           duration: timedelta | None) -> WatchRun:
    if not options.history:
        raise WatchError("a watch keeps its deploy, baseline and runs in the run history: "
                         "run it with history (not --no-history, not history.enabled: false)")
    plan = plan_of(audit, duration)
    now = _now(options)
    target = _target(audit)
    store = open_history(options.history, audit)
    try:
        watch_id = store.open_watch(
            audit.name, target, audit.file, deploy, deployed_by(), now,
            now + timedelta(seconds=plan["duration"]), plan)
        watch = store.find_watch(audit.name, watch_id=watch_id)
        try:
            before = measure_before(audit, plan, now, options.engine)
            store.update_watch(watch_id, before=before)
            watch["before"] = before
            outcome = execute(audit, dataclasses.replace(
                options, now=now, before_record=lambda result, _: compare(result, watch, None)))
        except BaseException as error:
            store.update_watch(watch_id, (now, "aborted", None, f"the deploy's run could not "
                                          f"start: {error}"), state="aborted", closed_at=now,
                               reason=f"the deploy's run could not start: {error}")
            raise
        run_id = outcome.result.run_id
        if run_id is None:
            store.update_watch(watch_id, (now, "aborted", None, "hour 0 was not recorded"),
                               state="aborted", closed_at=now,
                               reason="hour 0 was not recorded in the history")
            raise WatchError("the deploy's run (hour 0) was not recorded in the run history, "
                             "so nothing could be compared with it; the watch is aborted")
        store.add_watch_run(watch_id, run_id, now)
        store.update_watch(watch_id, baseline_run_id=run_id)
        watch["baseline_run_id"] = run_id
        result = outcome.result
        unfinished = result.errors or [f"{check.id}: {check.error}" for check in result.checks
                                       if check.status == "error"]
        if unfinished:
            # A baseline with holes would make everything it missed look new later: a false
            # rollback. Fail closed: no watch without a whole hour 0.
            reason = f"hour 0 (run #{run_id}) could not audit everything: {unfinished[0]}"
            store.update_watch(watch_id, (now, "aborted", run_id, reason), state="aborted",
                               closed_at=now, reason=reason)
            return WatchRun(watch, outcome, f"watch #{watch_id} of deploy {deploy} NOT opened: "
                                            f"{reason}; put it right and run `integrity watch "
                                            f"start` again")
        ends = watch["ends_at"]
        message = (f"watch #{watch_id} of deploy {deploy} opened: {audit.name} on {target} "
                   f"until {_clock(ends)} ({format_duration(ends - now)}); hour 0 is run "
                   f"#{run_id}")
        return WatchRun(watch, outcome, message)
    finally:
        store.dispose()


def tick(audit: Audit, options: JobOptions, standard: str | None = None) -> WatchRun:
    """Run the audit if the active watch's cadence (or, without a watch, the standard cron
    schedule `standard`) has a run due now; sign the watch off after its last run.

    The audit's lock is taken before deciding, not only for the run: two ticks at once
    (a slow run, a manual tick) must not both find the same moment due."""
    with _locked(options):
        return _tick(audit, dataclasses.replace(options, lock=None), standard)


def _locked(options: JobOptions):
    from contextlib import nullcontext

    from integrity.operations import audit_lock

    return audit_lock(options.lock) if options.lock else nullcontext()


def _tick(audit: Audit, options: JobOptions, standard: str | None) -> WatchRun:
    if not options.history:
        raise WatchError("watch tick decides from the run history (the watch, the runs made, "
                         "the standard schedule's last run): run it with history")
    now = _now(options)
    target = _target(audit)
    store = History(options.history)
    try:
        watch = store.find_watch(audit.name, target, active=True) if store else None
        if watch is None:
            return _standard(audit, options, store, target, standard, now)
        state = progress(watch, store.watch_runs(watch["id"], checks=False), now)
        outcome = None
        message = ""
        if state.due is not None:
            outcome = run_in_watch(audit, options, store, watch, state.due, now)
            state = progress(watch, store.watch_runs(watch["id"], checks=False), now)
        elif not state.ended:
            message = (f"watch #{watch['id']} (deploy {watch['deploy']}): no run due; the "
                       f"next at {_clock(state.next)}" if state.next else "")
        signed = None
        if state.ended and state.due is None and not (outcome is not None and
                                                      outcome.result.run_id is None):
            signed = signoff(store, watch, now, options.output)
        return WatchRun(watch, outcome, message, signed)
    finally:
        store.dispose()


def _target(audit: Audit) -> str:
    """The audited database's name in the history, as the server says — or WatchError: a
    watch is found by its target, and the URL's spelling is not the server's identity (an
    unreachable database must fail the tick, not make it miss its watch)."""
    if audit.config.target:
        return audit.config.target
    from integrity.identity import identify, sqlite_file
    from integrity.sources import open_source

    from sqlalchemy.engine import make_url

    url = make_url(audit.connection.url)
    if url.get_backend_name() == "sqlite":
        found = sqlite_file(url.database) if url.database else None
        if found is None:
            raise WatchError(f"the audited database {url.database!r} does not exist, so "
                             f"which watch is its cannot be known; nothing was run")
        return found.target_name
    source = open_source(audit.connection)
    try:
        with source.connect() as connection:
            return identify(connection).target_name
    except IntegrityError as error:
        raise WatchError(f"cannot reach the audited database to know which watch is its: "
                         f"{error}") from None
    finally:
        source.dispose()


def _standard(audit, options, store, target, standard, now) -> WatchRun:
    """Outside a watch: a run when the standard schedule's last moment has none yet."""
    if standard is None:
        return WatchRun(None, message=f"no active watch of {audit.name}; nothing to run "
                                      f"(give --cron for its standard schedule)")
    moment = last_scheduled(standard, now)
    if moment is not None and \
            store.last_run_since(audit.name, target, moment - JITTER) is not None:
        return WatchRun(None, message=f"no watch; the standard schedule's run of "
                                      f"{_clock(moment)} is done")
    return WatchRun(None, execute(audit, dataclasses.replace(options, now=now)))


def last_scheduled(expression: str, now: datetime) -> datetime | None:
    """The latest moment at or before `now` (a minute late counts) that a cron expression
    names — in the machine's local time, as cron reads the same expression."""
    from cronsim import CronSim, CronSimError

    local = (now + JITTER).astimezone()  # the system's zone (TZ), at that moment's offset
    try:
        moments = CronSim(expression, local.replace(tzinfo=None, second=0, microsecond=0)
                          + timedelta(minutes=1), reverse=True)
        return next(moments).replace(tzinfo=local.tzinfo).astimezone(timezone.utc)
    except (CronSimError, StopIteration) as error:
        raise WatchError(f"--cron: {expression!r}: {error}") from None


def run_in_watch(audit: Audit, options: JobOptions, store: History, watch: dict,
                 moment: datetime, now: datetime) -> JobOutcome:
    baseline = _baseline(store, watch)
    outcome = execute(audit, dataclasses.replace(
        options, now=now, before_record=lambda result, _: compare(result, watch, baseline)))
    result = outcome.result
    if result.run_id is not None:
        store.add_watch_run(watch["id"], result.run_id, moment)
        if result.rollback:
            first = watch.get("rollback_at") is None
            store.update_watch(watch["id"], (now, "rollback", result.run_id,
                                             "; ".join(result.rollback)),
                               **({"rollback_at": now} if first else {}))
    return outcome


def _baseline(store: History, watch: dict) -> dict[str, dict] | None:
    """Hour 0's checks: status, count, value, group values and violation fingerprints."""
    run_id = watch.get("baseline_run_id")
    return None if run_id is None else store.run_checks(run_id)


def _now(options: JobOptions) -> datetime:
    now = options.now or datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------
# Before the deploy, and since.


def measure_before(audit: Audit, plan: dict, now: datetime, engine: str | None) -> dict:
    """Each windowed metric over the `before` period up to the deploy, from the data
    itself: a count or sum per window of that period (so it reads like the runs' own
    values), any other value over the whole period. Not recorded as a run."""
    from integrity.runner import run_audit

    before = timedelta(seconds=plan["before"])
    windowed = [check for check in audit.checks
                if check.kind == "metric" and getattr(check, "window", None)]
    if not windowed or before <= timedelta(0):
        return {}
    changed = []
    for check in windowed:
        update: dict[str, Any] = {"window": before}
        if check.align is not None and not _whole(before, check.align):
            update["align"] = None
        changed.append(check.model_copy(update=update))
    subset = dataclasses.replace(audit, checks=changed,
                                 indices={c.id: audit.indices.get(c.id, i)
                                          for i, c in enumerate(changed)})
    result = run_audit(subset, now=now, sample_limit=0, engine=engine)
    found = {}
    for check, measured in zip(windowed, result.checks):
        if measured.status == "error":
            found[check.id] = {"value": None, "error": measured.error}
            continue
        aggregate = check.value.function if check.value is not None else None
        factor = check.window / before if aggregate in SCALED else 1
        value = None if measured.value is None else measured.value * factor
        groups = {key: None if value_ is None else value_ * factor
                  for key, value_ in measured.group_values.items()}
        found[check.id] = {
            "value": value, "groups": groups, "percent": _is_percent(measured.value_text),
            "over": (f"per {format_duration(check.window)} over the {format_duration(before)} "
                     f"before the deploy" if aggregate in SCALED else
                     f"over the {format_duration(before)} before the deploy")}
    return found


def _whole(span: timedelta, unit: str) -> bool:
    size = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
    return span % size[unit] == timedelta(0)


def _is_percent(text: str | None) -> bool:
    return bool(text) and text.split(" ")[0].endswith("%")


def compare(result, watch: dict, baseline: dict[str, dict] | None) -> None:
    """What changed since the deploy, on the result (report, alerts); and the rollback
    criteria the run meets. `baseline`: hour 0's checks (None: this run is hour 0)."""
    plan = watch["plan"]
    changes = []
    for check in result.checks:
        prints = {fingerprint(check.id, key) for key in check.violation_keys}
        at = (baseline or {}).get(check.id)
        before = (watch.get("before") or {}).get(check.id) or {}
        percent = _is_percent(check.value_text) or before.get("percent", False)
        keyed = check.kind not in {"metric", "freshness"}
        now_value = check.value if not keyed else check.violation_count
        row = {"check": check.id, "status": check.status,
               "before": _shown(before.get("value"), percent),
               # hour 0 is itself the run at the deploy
               "at_deploy": _shown(now_value, percent) if baseline is None else
               None if at is None else _shown(
                   at["value"] if not keyed else at["violation_count"], percent),
               "now": _shown(now_value, percent),
               "new_since_deploy": None, "resolved_since_deploy": None,
               "changed": False}
        if at is not None:
            new = len(prints - at["fingerprints"])
            if (at["violation_count"] or 0) > len(at["fingerprints"]):
                # Hour 0 had more violations than history keeps fingerprints of: which are
                # new is unknown, how many more there are is not.
                new = max(0, (check.violation_count or 0) - at["violation_count"])
            row["new_since_deploy"] = new
            row["resolved_since_deploy"] = len(at["fingerprints"] - prints)
            worse = STATUS_RANK[check.status] > STATUS_RANK.get(at["status"], 0)
            row["changed"] = bool(new) or bool(row["resolved_since_deploy"]) or (
                at["status"] != check.status)
            if check.status == "fail" and (new or worse) and any(
                    named(check.id, pattern) for pattern in plan["rollback_on"]):
                result.rollback.append(_rollback_line(check, new, at["status"]))
        if not keyed or row["changed"]:
            changes.append(row)
    unmatched = [pattern for pattern in plan["rollback_on"]
                 if not any(named(check.id, pattern) for check in result.checks)]
    if unmatched:
        result.warnings.append(
            f"the watch's rollback_on {', '.join(unmatched)} matches no check of this run "
            f"(the audit file changed during the watch): that criterion cannot be judged, "
            f"and the sign-off will say so")
    hours = (result.now - watch["started_at"]) / timedelta(hours=1)
    result.watch = {
        "id": watch["id"], "deploy": watch["deploy"],
        "deployed_at": _clock(watch["started_at"]), "ends_at": _clock(watch["ends_at"]),
        "hours": round(hours, 1),
        "duration_hours": round((watch["ends_at"] - watch["started_at"])
                                / timedelta(hours=1), 1),
        "baseline_run": watch.get("baseline_run_id"), "changes": changes}


def _rollback_line(check, new: int, was: str) -> str:
    what = f"{check.purpose} — " if check.purpose else ""
    if check.kind in {"metric", "freshness"}:
        return (f"{what}{check.id} at {check.value_text or check.value} "
                f"({was} at the deploy)")
    if not new:  # as many violations, but now at the fail level
        return (f"{what}{check.id}, {check.violation_count or 0:,} violation(s) "
                f"({was} at the deploy)")
    return (f"{what}{check.id}, {new:,} violation{'s' if new != 1 else ''} since the "
            f"deploy")


def _shown(value: float | None, percent: bool) -> str | None:
    if value is None:
        return None
    if percent:
        return f"{value:.2%}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def _clock(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------
# Status and sign-off.


@dataclass
class Criterion:
    name: str
    met: bool
    evidence: str
    runs: list[int] = field(default_factory=list)  # the runs that broke it


@dataclass
class Signoff:
    watch: dict
    progress: Progress
    criteria: list[Criterion]
    interim: bool
    table: list[dict]
    timeline: list[dict]
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def given(self) -> bool:
        """Signed off before: the verdict as it was given then."""
        return self.watch["state"] == "closed" and not self.table and not self.timeline

    @property
    def approved(self) -> bool:
        return all(criterion.met for criterion in self.criteria)

    @property
    def verdict(self) -> str:
        verdict = "APPROVED" if self.approved else "NOT APPROVED"
        return f"{verdict} so far" if self.interim else verdict

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.approved else ExitCode.VIOLATIONS)


def find(store: History | None, audit: Audit, watch_id: int | None = None,
         active: bool = False) -> dict:
    """The audit's newest watch on its target (or watch `watch_id`), else WatchError."""
    target = None
    if watch_id is None:
        try:
            target = _target(audit)
        except (WatchError, IntegrityError):
            pass  # reading needs no database: the audit's newest watch, whatever its target
    watch = store.find_watch(audit.name, target, watch_id, active) if store else None
    if watch is None:
        which = f"watch #{watch_id}" if watch_id is not None else (
            "active watch" if active else "watch")
        raise WatchError(f"no {which} of {audit.name} in the run history"
                         + ("" if watch_id is not None else f" for {target}")
                         + "; start one with `integrity watch start AUDIT --deploy LABEL`")
    return watch


def evaluate(store: History, watch: dict, now: datetime, closing: bool = False
             ) -> tuple[Progress, list[Criterion]]:
    """Every criterion of the watch over its runs so far (`closing`: as it closes now — a
    moment without its run is missed, the last one too)."""
    runs = store.watch_runs(watch["id"])
    state = progress(watch, runs, now, closing)
    plan, signoff_ = watch["plan"], watch["plan"]["signoff"]
    baseline = next((run for run in runs if run["run_id"] == watch.get("baseline_run_id")),
                    None)
    ids = list(dict.fromkeys(check_id for run in runs for check_id in run["checks"]))
    criteria = []

    rollbacks = [run["run_id"] for run in runs if run["exit_code"] == ExitCode.ROLLBACK]
    unjudged = {run["run_id"]: [pattern for pattern in plan["rollback_on"] if not any(
        named(check_id, pattern) for check_id in run["checks"])] for run in runs}
    unjudged = {run: patterns for run, patterns in unjudged.items() if patterns}
    evidence = (f"met in {len(rollbacks)} run(s), first at {_clock(watch.get('rollback_at'))}"
                if rollbacks else f"none in {len(runs)} run(s)")
    if unjudged:
        evidence += "; not judged in " + "; ".join(
            f"run #{run} ({', '.join(patterns)} did not run)"
            for run, patterns in list(unjudged.items())[:5])
    criteria.append(Criterion(
        "No rollback criterion met" + (f" ({', '.join(plan['rollback_on'])})"
                                       if plan["rollback_on"] else ""),
        not rollbacks and not unjudged, evidence, sorted({*rollbacks, *unjudged})))
    broken = [run["run_id"] for run in runs if run["errors"] or any(
        check["status"] == "error" for check in run["checks"].values())]
    criteria.append(Criterion("Every run finished its audit", not broken,
                              f"{len(broken)} of {len(runs)} run(s) could not audit "
                              f"everything" if broken else f"all {len(runs)} run(s)", broken))
    allowed = signoff_["missed_runs"]
    criteria.append(Criterion(
        "No missed runs" if not allowed else f"At most {allowed} missed run(s)",
        len(state.missed) <= allowed,
        (f"{len(state.missed)} missed: " + ", ".join(_clock(m) for m in state.missed[:10]))
        if state.missed else f"{len(state.done)} of {len(state.done) + len(state.missed)} "
                             f"due run(s) made"))
    for pattern in signoff_["all_runs_pass"]:
        matched = [check_id for check_id in ids if named(check_id, pattern)]
        failing = {}
        for run in runs:
            for check_id in matched:
                status = run["checks"].get(check_id, {}).get("status", "missing")
                if status not in {"pass", "info"}:  # info: a finding that never fails
                    failing.setdefault(run["run_id"], []).append(f"{check_id} {status}")
        criteria.append(Criterion(
            f"{pattern} pass in every run", not failing and bool(matched),
            "; ".join(f"run #{run}: {', '.join(what)}" for run, what in
                      list(failing.items())[:5]) if failing else
            f"{len(matched)} check(s) passed in all {len(runs)} run(s)" if matched else
            "no check of that name ran", list(failing)))
    for pattern in signoff_["no_new_violations"]:
        matched = [check_id for check_id in ids if named(check_id, pattern)]
        found: dict[int, list[str]] = {}
        for run in runs:
            for check_id in matched:
                if check_id not in run["checks"]:
                    found.setdefault(run["run_id"], []).append(f"{check_id} did not run")
                    continue
                prints = run["checks"][check_id]["fingerprints"]
                new = prints - (baseline or {"checks": {}})["checks"].get(
                    check_id, {}).get("fingerprints", set())
                if new:
                    found.setdefault(run["run_id"], []).append(f"{check_id} +{len(new)}")
        criteria.append(Criterion(
            f"{pattern}: no violation the deploy did not have", not found,
            "; ".join(f"run #{run}: {', '.join(what)}" for run, what in
                      list(found.items())[:5]) if found else
            f"{len(matched)} check(s), none new in {len(runs)} run(s)", list(found)))
    percent = {check_id: bool(before.get("percent"))
                for check_id, before in (watch.get("before") or {}).items()}
    for check_id, text in signoff_["metrics"].items():
        condition = parse_run_condition(text)
        criteria.append(_metric_criterion(check_id, condition, runs, percent.get(
            check_id, "%" in text)))
    for check_id, text in signoff_["compare_to_baseline"].items():
        comparison = parse_baseline_comparison(text)
        criteria.append(_baseline_criterion(
            check_id, comparison, signoff_["directions"].get(check_id), runs, baseline,
            percent.get(check_id, comparison.unit == "points")))
    return state, criteria


def _number(value: float | None, percent: bool) -> str:
    if value is None:
        return "no value"
    return f"{value:.2%}" if percent else f"{value:.4g}"


def _group(group: str, text: str) -> str:
    """`text`, or `group: text` when the metric has groups."""
    return text if group == "all rows" else f"{group}: {text}"


def _values(run: dict, check_id: str) -> dict[str, float | None]:
    check = run["checks"].get(check_id)
    if check is None:
        return {}
    return dict(check["groups"]) or {"all rows": check["value"]}


def _metric_criterion(check_id: str, condition, runs: list[dict], percent: bool) -> Criterion:
    name = f"{check_id} {condition.text}"
    if not runs:
        return Criterion(name, False, "no run yet")
    if condition.over == "average":  # each group's own average over the runs
        series: dict[str, list[float]] = {}
        for run in runs:
            for group, value in _values(run, check_id).items():
                if value is not None:
                    series.setdefault(group, []).append(value)
        means = {group: sum(values) / len(values) for group, values in series.items()}
        bad = [_group(group, f"average {_number(mean, percent)}")
               for group, mean in means.items() if not condition.holds(mean)]
        if not means:
            return Criterion(name, False, "no value in any run")
        return Criterion(name, not bad, "; ".join(bad[:5]) if bad else ", ".join(
            _group(group, f"average {_number(mean, percent)}")
            for group, mean in list(means.items())[:5]) + f" over {len(runs)} run(s)")
    chosen = runs[-1:] if condition.over == "last" else runs
    broken: dict[int, str] = {}
    for run in chosen:
        values = _values(run, check_id)
        bad = [_group(group, _number(v, percent)) for group, v in values.items()
               if not condition.holds(v)] or ([] if values else ["not measured"])
        if bad:
            broken[run["run_id"]] = ", ".join(bad[:3])
    return Criterion(name, not broken, "; ".join(f"run #{run}: {what}" for run, what in
                                                 list(broken.items())[:5])
                     if broken else f"held in {len(chosen)} run(s)", list(broken))


def _baseline_criterion(check_id: str, comparison, direction: str | None, runs: list[dict],
                        baseline: dict | None, percent: bool) -> Criterion:
    name = f"{check_id} {comparison.text} against the deploy's run"
    if baseline is None or direction is None:
        return Criterion(name, False, "no baseline (hour 0) to compare with")
    base = _values(baseline, check_id)
    if not base or all(value is None for value in base.values()):
        return Criterion(name, False, "no value at the deploy (hour 0) to compare with")
    broken: dict[int, str] = {}
    for run in runs:
        if run["run_id"] == baseline["run_id"]:
            continue  # hour 0 is what the others are compared with
        values = _values(run, check_id)
        if not values:
            broken[run["run_id"]] = "not measured"
        for group, value in values.items():
            start = base.get(group)
            if start is None:
                broken.setdefault(run["run_id"], _group(
                    group, "no value at the deploy to compare with"))
                continue
            if value is None:
                broken.setdefault(run["run_id"], _group(group, "no value"))
                continue
            drop = start - value if direction == "lower" else value - start
            if drop > comparison.allowed(start) + 1e-12:
                broken.setdefault(run["run_id"], _group(
                    group, f"{_number(value, percent)} against {_number(start, percent)} "
                           f"at the deploy"))
    return Criterion(name, not broken, "; ".join(f"run #{run}: {what}" for run, what in
                                                 list(broken.items())[:5])
                     if broken else f"within it in {len(runs)} run(s)", list(broken))


def signoff(store: History, watch: dict, now: datetime, output: str,
            early: bool = False) -> Signoff:
    """The verdict over every run of the watch, written as a one-page report; at or after
    the end (not `early`), the watch closes with it."""
    from integrity.report.signoff import write_signoff

    if watch["state"] == "aborted":
        raise WatchError(f"watch #{watch['id']} was aborted at {_clock(watch['closed_at'])}"
                         + (f": {watch['reason']}" if watch.get("reason") else "")
                         + "; it has no verdict")
    folder = Path(output) / f"watch-{watch['id']}"
    if watch["state"] == "closed":
        # Signed off already: the verdict as it was given, and its report left as written.
        state, criteria = evaluate(store, watch, watch["closed_at"], closing=True)
        result = Signoff(watch, state, criteria, False, [], [])
        result.written = {name: folder / file for name, file in
                          (("html", "signoff.html"), ("markdown", "signoff.md"))
                          if (folder / file).exists()}
        return result
    if not early and now + JITTER < watch["ends_at"]:
        raise WatchError(f"watch #{watch['id']} ends at {_clock(watch['ends_at'])}; "
                         f"`--early` gives an interim verdict")
    state, criteria = evaluate(store, watch, now, closing=not early)
    result = Signoff(watch, state, criteria, early, _table(store, watch, state),
                     _timeline(store, watch, state, now))
    result.written = write_signoff(result, folder)
    if not early:
        verdict = "approved" if result.approved else "not_approved"
        store.update_watch(watch["id"], (now, "signed off", None, result.verdict),
                           state="closed", verdict=verdict, closed_at=now)
        watch.update(state="closed", verdict=verdict, closed_at=now)
    return result


def _table(store: History, watch: dict, state: Progress) -> list[dict]:
    """Before the deploy, at the deploy, the last run, and the runs that breached."""
    runs = state.runs
    if not runs:
        return []
    first, last = runs[0], runs[-1]
    before = watch.get("before") or {}
    rows = []
    for check_id, check in last["checks"].items():
        at = first["checks"].get(check_id, {})
        percent = (before.get(check_id) or {}).get("percent", False)
        valued = check["value"] is not None or at.get("value") is not None
        if check["groups"] and not valued:  # a metric per group: its highest
            at_value = max((v for v in at.get("groups", {}).values() if v is not None),
                           default=None)
            last_value = max((v for v in check["groups"].values() if v is not None),
                             default=None)
            rows.append({"check": check_id, "before": None,
                         "at_deploy": _max(at_value, percent), "last": _max(last_value, percent),
                         "status": check["status"], "runs": len(runs),
                         "breached_runs": sum(run["checks"].get(check_id, {}).get("status")
                                              in {"warn", "fail"} for run in runs)})
            continue
        breached = [run["run_id"] for run in runs
                    if run["checks"].get(check_id, {}).get("status") in {"warn", "fail"}]
        rows.append({
            "check": check_id,
            "before": _shown((before.get(check_id) or {}).get("value"), percent),
            "at_deploy": _shown(at.get("value") if valued else at.get("violation_count"),
                                percent),
            "last": _shown(check["value"] if valued else check["violation_count"], percent),
            "status": check["status"], "breached_runs": len(breached),
            "runs": len(runs)})
    return rows


def _max(value: float | None, percent: bool) -> str | None:
    shown = _shown(value, percent)
    return None if shown is None else f"highest {shown}"


def _timeline(store: History, watch: dict, state: Progress, now: datetime) -> list[dict]:
    events = [{"at": event["at"], "what": event["event"], "run": event["run_id"],
               "note": event["note"] or ""} for event in store.watch_events(watch["id"])]
    until = watch.get("closed_at") or now
    for step in store.alert_steps(watch["audit"], watch["target"], watch["started_at"], until):
        if step["event"] in {"fired", "worse", "recovered"}:
            what = "the rollback criteria" if step["check_id"] == ROLLBACK else step["check_id"]
            value = f" — {step['value']}" if step["value"] else ""
            events.append({"at": step["at"], "what": f"alert {step['event']}",
                           "run": step["run_id"],
                           "note": f"{what} on {step['channel_name']}: {step['status']}{value}"})
    events += [{"at": moment, "what": "missed run", "run": None,
                "note": "the cadence asked for a run; none was made"} for moment in state.missed]
    first = {"started": 0, "signed off": 2, "aborted": 2}  # the deploy opens its own moment
    return sorted(events, key=lambda event: (event["at"], first.get(event["what"], 1)))


def extend(store: History, watch: dict, by: timedelta, reason: str, now: datetime) -> dict:
    if by <= timedelta(0):
        raise WatchError("--by: extend by more than 0 (e.g. 24h)")
    if watch["state"] != "active":
        raise WatchError(f"watch #{watch['id']} is {watch['state']}: only an active watch can "
                         f"be extended")
    ends = watch["ends_at"] + by
    store.update_watch(watch["id"], (now, "extended", None,
                                     f"by {format_duration(by)} to {_clock(ends)}: {reason}"),
                       ends_at=ends)
    watch["ends_at"] = ends
    return watch


def abort(store: History, watch: dict, reason: str, now: datetime) -> dict:
    if watch["state"] != "active":
        raise WatchError(f"watch #{watch['id']} is already {watch['state']}")
    store.update_watch(watch["id"], (now, "aborted", None, reason), state="aborted",
                       closed_at=now, reason=reason)
    watch.update(state="aborted", closed_at=now, reason=reason)
    return watch


def cadence_text(watch: dict) -> str:
    """`every 1h until 3d, then every 1d` (for status)."""
    parts = []
    for until, every in watch["plan"]["cadence"]:
        text = f"every {format_duration(timedelta(seconds=every))}"
        if until is not None:
            text += f" until {format_duration(timedelta(seconds=until))}"
        parts.append(text)
    return ", then ".join(parts)

