"""Running unattended: one run at a time per audit, a bound on a whole run, cron lines.

The lock is an advisory `flock` on a file per audit and database: the kernel
drops it when the holder dies, even by `kill -9`, so a crashed run never
leaves a lock behind that blocks the next one. The file names the holder
(pid, start time) so a refused run can say who is running. A run over its
timeout raises `RunTimeout` — a BaseException, so no check's own error
handling can swallow it (see runner.run_audit for how the deadline is kept).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from integrity.errors import IntegrityError


class Locked(IntegrityError):
    """Another run of the same audit holds the lock (exit code 3)."""


class RunTimeout(BaseException):
    """The whole run took longer than --timeout."""


def lock_path(audit_file: str | os.PathLike, url: str, audit_name: str) -> Path:
    """The lock of one audit of one database: keyed on the audit file's absolute path and
    the database it audits (its URL without the password), not on the current folder —
    the same audit started from two folders, or by cron and by hand, is one audit. In a
    per-user folder under the system's temporary directory, so any working folder works."""
    without_password = re.sub(r"(//[^/@:]*):[^@/]*@", r"\1@", url)
    key = f"{Path(audit_file).resolve()}\n{without_password}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", audit_name)
    return Path(tempfile.gettempdir()) / f"integrity-locks-{os.getuid()}" / f"{safe}-{digest}.lock"


@contextmanager
def audit_lock(path: Path) -> Iterator[None]:
    """Hold the audit's lock for the duration, or raise Locked at once."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise Locked(f"another run holds the lock {path} ({holder}); not starting") \
                from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since "
                     f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the flock


# ---------------------------------------------------------------------------
# Scheduling.

_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")


def validate_cron(expression: str) -> str:
    fields = expression.split()
    if expression.startswith("@"):
        if expression not in {"@hourly", "@daily", "@midnight", "@weekly", "@monthly",
                              "@yearly", "@annually", "@reboot"}:
            raise IntegrityError(f"unknown cron shortcut {expression!r}")
        return expression
    if len(fields) != 5 or not all(_CRON_FIELD.match(field) for field in fields):
        raise IntegrityError(f"not a cron schedule: {expression!r} (five fields, e.g. "
                             f"'0 3 * * *' for 03:00 every day)")
    return " ".join(fields)


def command_line(audit: Path, arguments: list[str], command: str = "run") -> str:
    executable = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "integrity" else None
    program = shlex.quote(str(executable)) if executable and executable.exists() else \
        f"{shlex.quote(sys.executable)} -m integrity"
    extra = " ".join(shlex.quote(argument) for argument in arguments)
    return f"{program} {command} {shlex.quote(str(audit))}{' ' + extra if extra else ''}"


def read_env_file(path: Path) -> dict[str, str]:
    """VAR=value lines (as `set -a; . file` reads them): comments, `export`, quotes."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise IntegrityError(f"cannot read the environment file {path}: "
                             f"{error.strerror or error}") from None
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, separator, value = line.partition("=")
        if separator and name.strip().isidentifier():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def crontab_line(schedule: str, audit: Path, workdir: Path, env_file: Path | None,
                 log_file: Path, arguments: list[str], command: str = "run") -> str:
    """A crontab entry: right folder, environment file, log, and the exit code kept.

    Exit 1 (violations), 2 (audit error) and 4 (rollback) reach cron's mail through the
    log line written after the run; 3 (another run is still going) is logged too — and
    mailed, except for a watch's tick, which comes every 5 minutes and meets its own
    run still going as a matter of course.
    """
    quiet = "[ $code -eq 0 ] || [ $code -eq 3 ]" if command != "run" else "[ $code -eq 0 ]"
    run = command_line(audit, arguments, command)
    source = f". {shlex.quote(str(env_file))} && " if env_file else ""
    log = shlex.quote(str(log_file))
    folder = shlex.quote(str(log_file.parent))
    body = (f"cd {shlex.quote(str(workdir))} && mkdir -p {folder} && "
            f"{{ set -a; {source}set +a; {run}; }} >> {log} 2>&1;"
            f" code=$?; echo \"$(date -u +%FT%TZ) {audit.stem} exit $code\" >> {log};"
            f" {quiet} || echo \"integrity: {audit.stem} exited $code, see {log}\"")
    return f"{schedule} /bin/sh -c {shlex.quote(body)}"


def systemd_units(name: str, schedule: str, audit: Path, workdir: Path, env_file: Path | None,
                  arguments: list[str], command: str = "run") -> dict[str, str]:
    run = command_line(audit, arguments, command)
    calendar = _calendar(schedule)
    environment = f"EnvironmentFile={env_file}\n" if env_file else ""
    return {
        f"integrity-{name}.service": (
            "[Unit]\n"
            f"Description=integrity audit {name}\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"WorkingDirectory={workdir}\n"
            f"{environment}"
            f"ExecStart={run}\n"
            "# 1 = violations, 2 = the audit could not run, 3 = a previous run still holds "
            "the lock, 4 = a watch's rollback criterion met\n"
            "SuccessExitStatus=0\n"),
        f"integrity-{name}.timer": (
            "[Unit]\n"
            f"Description=Run the integrity audit {name} on schedule\n\n"
            "[Timer]\n"
            f"OnCalendar={calendar}\n"
            "Persistent=true\n\n"
            "[Install]\n"
            "WantedBy=timers.target\n"),
    }


def _calendar(schedule: str) -> str:
    """A systemd OnCalendar= for the common cron forms (minute hour * * day-of-week)."""
    shortcuts = {"@hourly": "hourly", "@daily": "daily", "@midnight": "daily",
                 "@weekly": "weekly", "@monthly": "monthly", "@yearly": "yearly",
                 "@annually": "yearly"}
    if schedule in shortcuts:
        return shortcuts[schedule]
    minute, hour, day, month, weekday = schedule.split()
    days = {"0": "Sun", "1": "Mon", "2": "Tue", "3": "Wed", "4": "Thu", "5": "Fri", "6": "Sat",
            "7": "Sun"}

    def weekdays(value: str) -> str:
        return ",".join("..".join(days.get(end, end) for end in piece.split("-"))
                        for piece in value.split(","))

    def part(value: str) -> str:
        # cron "a-b" is systemd "a..b"; "*/n" is "0/n".
        return "*" if value == "*" else value.replace("*/", "0/").replace("-", "..")

    week = "" if weekday == "*" else weekdays(weekday) + " "
    return f"{week}*-{part(month)}-{part(day)} {part(hour)}:{part(minute)}:00"
