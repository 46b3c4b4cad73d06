"""Run history: what was found, when, and what changed since the previous run.

A separate database (a SQLite file under reports/ by default, any SQLAlchemy
URL by choice — never the audited connection) records every run, every check
result and a fingerprint of every violating row's key. From it each violation
is *new*, *persisting* (first seen when, in how many runs) or *resolved*;
baseline-relative thresholds read trailing values; accepted violations are
kept with their reason and expiry; the report draws trends.

The schema is versioned in `integrity_meta` and upgraded in place, in one
transaction (on MySQL/MariaDB, whose DDL commits at once, all or nothing by taking
back what a failed creation made: `History._ensure_mysql`). Every run is written in
one transaction too, so two audits finishing at once cannot interleave (SQLite waits
on its lock; PostgreSQL serialises the version row).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from integrity import __version__
from integrity.errors import IntegrityError, masked_url, scrub, url_secrets
from integrity.gate import ExitCode, exit_code

if TYPE_CHECKING:
    from integrity.results import AuditResult, CheckResult

SCHEMA_VERSION = 7
TRACKED_PER_CHECK = 100_000  # violation fingerprints kept per check and run
DEFAULT_URL = "sqlite:///reports/history.sqlite"
GRACE_MS = 2_000  # lock waits allowed past the run's deadline, to record how it ended
MYSQL = ("mysql", "mariadb")  # dialect names (mysql+pymysql:// reaching MariaDB says "mysql")


class _Utf8Bytes(sa.types.TypeDecorator):
    """Text kept as its UTF-8 bytes in a VARBINARY — on MySQL/MariaDB only.

    Their VARCHARs compare by collation: case-insensitively and ignoring trailing spaces
    by default, so check ids `Dupes` and `dupes`, or metric groups `a` and `a `, would
    collide in a primary key, and utf8mb4 counts 4 bytes a character against the 3072-byte
    key limit. Bytes compare exactly, as PostgreSQL and SQLite do, and are counted as they
    are. A value too long is refused here, never truncated by a lenient sql_mode."""

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        data = value.encode()
        if len(data) > self.impl.length:
            # The value itself is not quoted: a group key is data, perhaps masked data.
            raise ValueError(f"a value of {len(data)} bytes, longer than the "
                             f"{self.impl.length} this history column holds")
        return data

    def process_result_value(self, value, dialect):
        return None if value is None else bytes(value).decode()


def _name(chars: int, mysql_bytes: int | None = None) -> sa.types.TypeEngine:
    """VARCHAR(chars) — unchanged on SQLite and PostgreSQL — and exact bytes on MySQL:
    4 bytes a character, unless the value is known to be ASCII (check ids match
    [A-Za-z0-9_.:-]+, fingerprints are hex), so any value PostgreSQL takes fits."""
    return sa.String(chars).with_variant(_Utf8Bytes(mysql_bytes or 4 * chars), *MYSQL)


# MySQL/MariaDB only, so stores on the others keep their schema (no migration): DATETIME
# keeps microseconds, FLOAT would be single precision (baselines), TEXT stops at 64 KB.
_MOMENT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)
_NUMBER = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL)
_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL)
# InnoDB for transactions, DYNAMIC rows for the 3072-byte key limit, utf8mb4 for any text.
# The longest key is then integrity_check_values' (run_id, check_id, group_key):
# 4 + 400 + 1600 = 2004 bytes, within the 3072 InnoDB allows.
_ON_MYSQL = dict(mysql_engine="InnoDB", mysql_charset="utf8mb4", mysql_row_format="DYNAMIC")

metadata = sa.MetaData()

meta_table = sa.Table(
    "integrity_meta", metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
    **_ON_MYSQL,
)
runs = sa.Table(
    "integrity_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audit", _name(200), nullable=False, index=True),
    # The audited database (`identity.target_name`, or the audit's `target:`): runs of one
    # audit against staging and production are two series that never meet.
    sa.Column("target", _name(300), nullable=False, server_default=""),
    sa.Column("audit_file", sa.String(1000), nullable=False),
    sa.Column("engine", sa.String(20), nullable=False),
    sa.Column("started_at", _MOMENT, nullable=False),
    sa.Column("finished_at", _MOMENT, nullable=False),
    sa.Column("data_as_of", _MOMENT, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=False),
    sa.Column("fail_on", sa.String(20), nullable=False),
    sa.Column("tool_version", sa.String(40), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("database", sa.String(1000), nullable=False),
    sa.Column("errors", _TEXT, nullable=False),
    **_ON_MYSQL,
)
check_results = sa.Table(
    "integrity_check_results", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("integrity_runs.id"), primary_key=True),
    sa.Column("check_id", _name(400, 400), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("violation_count", sa.Integer),
    sa.Column("population", sa.BigInteger),
    sa.Column("rate", _NUMBER),
    sa.Column("value", _NUMBER),
    sa.Column("duration_ms", _NUMBER, nullable=False),
    sa.Column("error", _TEXT),
    **_ON_MYSQL,
)
check_values = sa.Table(  # per-group values of metric checks, for baselines
    "integrity_check_values", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("integrity_runs.id"), primary_key=True),
    sa.Column("check_id", _name(400, 400), primary_key=True),
    sa.Column("group_key", _name(400), primary_key=True),
    sa.Column("value", _NUMBER),
    # Whether the value breached a bound in its own run: baselines leave it out. NULL for
    # values recorded before version 4, read as not breached.
    sa.Column("breached", sa.Boolean),
    **_ON_MYSQL,
)
violations = sa.Table(
    "integrity_violations", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("integrity_runs.id"), primary_key=True),
    sa.Column("check_id", _name(400, 400), primary_key=True),
    sa.Column("fingerprint", _name(32, 32), primary_key=True),
    sa.Column("key_json", _TEXT, nullable=False),
    sa.Column("first_seen_at", _MOMENT, nullable=False),
    sa.Column("runs_seen", sa.Integer, nullable=False),
    **_ON_MYSQL,
)
accepted = sa.Table(
    "integrity_accepted", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audit", _name(200), nullable=False),
    sa.Column("check_id", _name(400, 400), nullable=False),
    sa.Column("fingerprint", _name(32, 32)),  # null: every violation of the check
    sa.Column("key_json", _TEXT),
    sa.Column("reason", _TEXT, nullable=False),
    sa.Column("until", sa.Date, nullable=False),
    sa.Column("created_at", _MOMENT, nullable=False),
    **_ON_MYSQL,
)
notification_state = sa.Table(  # version 3's alert state, read once by _alerts_from_state
    "integrity_alert_state", metadata,
    sa.Column("audit", _name(200), primary_key=True),
    sa.Column("target", _name(300), primary_key=True),
    sa.Column("channel", _name(60), primary_key=True),
    sa.Column("check_id", _name(400, 400), primary_key=True),
    sa.Column("last_sent_at", _MOMENT, nullable=False),
    sa.Column("last_status", sa.String(10), nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
    **_ON_MYSQL,
)
notification_log = sa.Table(
    "integrity_notification_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("audit", _name(200), nullable=False),
    sa.Column("channel", _name(60), nullable=False),
    sa.Column("sent_at", _MOMENT, nullable=False),
    sa.Column("checks", _TEXT, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", _TEXT),
    **_ON_MYSQL,
)
alerts = sa.Table(  # per audit, target, channel and check: the alert's lifecycle (notify.py)
    "integrity_alerts", metadata,
    sa.Column("audit", _name(200), primary_key=True),
    sa.Column("target", _name(300), primary_key=True),
    sa.Column("channel", _name(60), primary_key=True),
    sa.Column("check_id", _name(400, 400), primary_key=True),
    sa.Column("channel_name", sa.String(100), nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
    sa.Column("announced", sa.Boolean, nullable=False),  # a message about it got through
    sa.Column("pending", sa.Boolean, nullable=False),    # a message is due (held, or failed)
    sa.Column("opened_at", _MOMENT),
    sa.Column("last_sent_at", _MOMENT),
    sa.Column("resolved_at", _MOMENT),
    sa.Column("last_status", sa.String(10), nullable=False),
    sa.Column("last_value", _TEXT),
    sa.Column("reminders", sa.Integer, nullable=False),
    sa.Column("acknowledged_at", _MOMENT),
    sa.Column("ack_until", _MOMENT),
    sa.Column("ack_note", _TEXT),
    sa.Column("last_run_id", sa.Integer),
    **_ON_MYSQL,
)
alert_log = sa.Table(  # every step of every alert: fired, reminded, held, acknowledged, ...
    "integrity_alert_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audit", _name(200), nullable=False),
    sa.Column("target", _name(300), nullable=False),
    sa.Column("channel_name", sa.String(100), nullable=False),
    sa.Column("check_id", _name(400, 400), nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("at", _MOMENT, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("value", _TEXT),
    sa.Column("delivered", sa.Boolean),  # null: nothing was sent
    sa.Column("error", _TEXT),
    sa.Column("note", _TEXT),
    **_ON_MYSQL,
)
watches = sa.Table(  # post-deploy watches (watch.py): a deploy, a window, a verdict
    "integrity_watches", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("audit", _name(200), nullable=False),
    sa.Column("target", _name(300), nullable=False),
    sa.Column("audit_file", sa.String(1000), nullable=False),
    sa.Column("deploy", sa.String(300), nullable=False),       # the label or commit
    sa.Column("deployed_by", _TEXT, nullable=False),            # JSON: who and what, from the env
    sa.Column("started_at", _MOMENT, nullable=False),           # the deploy's run's `now`
    sa.Column("ends_at", _MOMENT, nullable=False),
    sa.Column("plan", _TEXT, nullable=False),                   # JSON: cadence, criteria
    sa.Column("baseline_run_id", sa.Integer),                   # hour 0
    sa.Column("before", _TEXT),                                 # JSON: metric values before
    sa.Column("state", sa.String(20), nullable=False),          # active / closed / aborted
    sa.Column("verdict", sa.String(20)),                        # approved / not_approved
    sa.Column("rollback_at", _MOMENT),                          # the first rollback criterion met
    sa.Column("closed_at", _MOMENT),
    sa.Column("reason", _TEXT),
    **_ON_MYSQL,
)
watch_runs = sa.Table(  # which runs belong to a watch, and the slot of the cadence each took
    "integrity_watch_runs", metadata,
    sa.Column("watch_id", sa.Integer, sa.ForeignKey("integrity_watches.id"), primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("integrity_runs.id"), primary_key=True),
    sa.Column("slot_at", _MOMENT, nullable=False),
    **_ON_MYSQL,
)
watch_events = sa.Table(  # started, rollback, extended, aborted, signed off
    "integrity_watch_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("watch_id", sa.Integer, sa.ForeignKey("integrity_watches.id"), nullable=False),
    sa.Column("at", _MOMENT, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("note", _TEXT),
    **_ON_MYSQL,
)
watermarks = sa.Table(  # per run and incremental dataset: how far the run read (runner.py)
    "integrity_watermarks", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("integrity_runs.id"), primary_key=True),
    sa.Column("dataset", _name(200), primary_key=True),
    sa.Column("change_column", _name(200), nullable=False),
    # JSON: {"time": ISO 8601 UTC} or {"number": "123"}; null when the dataset was empty.
    sa.Column("watermark", _TEXT),
    sa.Column("read_in_full", sa.Boolean, nullable=False),  # no check of it ran incrementally
    **_ON_MYSQL,
)
sa.Index("ix_watches_series", watches.c.audit, watches.c.target)
sa.Index("ix_alert_log_series", alert_log.c.audit, alert_log.c.target, alert_log.c.id)
sa.Index("ix_runs_series", runs.c.audit, runs.c.target)
sa.Index("ix_violations_check", violations.c.check_id, violations.c.run_id)
sa.Index("ix_results_check", check_results.c.check_id, check_results.c.run_id)

# Upgrades: version -> statements taking the schema from version - 1 to version. New tables
# need none (create_all adds them); changed columns would go here. The MySQL/MariaDB
# variants above are version 2 as it stands: no MySQL store could be made without them.
def _add_column(connection, table: sa.Table, name: str, constraints: str = "") -> None:
    """ALTER TABLE … ADD COLUMN `name` as `table` declares it — unless it is there: checked
    first, so a step can be run again (MySQL commits each ALTER at once)."""
    present = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
    if name not in present:
        kind = table.c[name].type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}{constraints}")


def _add_target_to_runs(connection) -> None:
    """Version 3: runs carry their target; runs recorded before have none ('')."""
    _add_column(connection, runs, "target", " NOT NULL DEFAULT ''")
    if connection.dialect.name not in MYSQL:  # no MySQL store was ever at version 2
        connection.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS ix_runs_series ON {runs.name} (audit, target)")


def _alerts_from_state(connection) -> None:
    """Version 4: alerts have a lifecycle (integrity_alerts, a new table); what the
    version-3 integrity_alert_state knew — when each alert was last sent, and PagerDuty
    incidents still open — carries over, so no cooldown restarts and no incident is
    forgotten."""
    if connection.execute(sa.select(sa.func.count()).select_from(alerts)).scalar():
        return  # already carried over (MySQL commits each step at once)
    rows = connection.execute(sa.select(notification_state)).all()
    if rows:
        connection.execute(alerts.insert(), [dict(
            audit=row.audit, target=row.target, channel=row.channel, check_id=row.check_id,
            channel_name=row.channel.split(":")[0], open=bool(row.open),
            announced=bool(row.open), pending=False, opened_at=row.last_sent_at if row.open
            else None, last_sent_at=row.last_sent_at, resolved_at=None,
            last_status=row.last_status, last_value=None, reminders=0) for row in rows])


def _add_breached_to_check_values(connection) -> None:
    """Version 5: a metric value says whether it breached a bound in its own run; values
    recorded before say nothing (NULL), and count as not breached."""
    _add_column(connection, check_values, "breached")


MIGRATIONS: dict[int, list] = {
    2: [],  # 2: notification state and log (new tables)
    # 3: runs.target; alert state per target in integrity_alert_state (a new table: the
    # version-2 integrity_notification_state is left as it was, unused).
    3: [_add_target_to_runs],
    4: [_alerts_from_state],  # integrity_alert_state is left as it was, unused
    5: [_add_breached_to_check_values],  # check_values.breached, for baselines
    6: [],  # watches, their runs and events (new tables)
    7: [],  # watermarks of incremental datasets (a new table)
}


class HistoryError(IntegrityError):
    """The history store cannot be read or written."""


def fingerprint(check_id: str, key: Iterable[Any]) -> str:
    """A stable id for one violation: the check and the key's values as text
    (so 1588 and "1588" are the same key whatever the driver returned)."""
    canonical = json.dumps([check_id, [None if v is None else str(v) for v in key]])
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _reason(error: BaseException) -> str:
    """A database error's own words, on one line, without the statement."""
    text = " ".join(str(getattr(error, "orig", None) or error).split())
    return text.split(" [SQL:")[0]


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Lifecycle:
    """How a check's violations relate to the previous run that measured it."""

    previous_run: int | None = None
    new: set[str] = field(default_factory=set)
    persisting: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)  # fingerprint -> key json
    accepted: dict[str, tuple[str, date]] = field(default_factory=dict)  # fp -> reason, until


@dataclass
class IncrementState:
    """What an incremental run of a check starts from: the last run of the same audit on
    the same target in which the check ran, the watermark that run read the check's
    dataset up to, and every key that violated in it."""

    run_id: int
    now: datetime               # that run's `now`
    config_hash: str
    violation_count: int | None
    keys: list[list[str | None]]
    change_column: str | None   # None: the run recorded no watermark for the dataset
    watermark: dict | None      # {"time": ISO} or {"number": text}; None: it was empty


@dataclass
class Acceptance:
    check_id: str
    fingerprint: str | None
    key: list | None
    reason: str
    until: date


def _series(audit: str, target: str | None) -> tuple:
    """The runs that are one series: one audit of one target (None: of any target)."""
    if target is None:
        return (runs.c.audit == audit,)
    return runs.c.audit == audit, runs.c.target == target


def is_same_database(first: str, second: str) -> bool:
    """Whether two URLs name the same database (the same SQLite file, or the same
    server, port, database name and session options — a history in its own PostgreSQL
    schema, `?options=-csearch_path%3Dintegrity`, is apart). Unparseable URLs are not
    compared here."""
    try:
        a, b = sa.engine.make_url(first), sa.engine.make_url(second)
    except sa.exc.ArgumentError:
        return False
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        files = [url.database for url in (a, b)]
        if any(name in (None, "", ":memory:") for name in files):
            return False
        return Path(files[0]).resolve() == Path(files[1]).resolve()
    local = {None, "", "localhost", "127.0.0.1", "::1"}

    def host(url) -> str | None:
        return "localhost" if url.host in local else url.host

    return ((host(a), a.port, a.database, a.query.get("options"))
            == (host(b), b.port, b.database, b.query.get("options")))


class History:
    """One history database."""

    def __init__(self, url: str = DEFAULT_URL, deadline: float | None = None):
        """`deadline` (a time.monotonic()): waits for the store's locks end there, so a
        busy store cannot hold a run past its --timeout."""
        self.deadline = deadline
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise HistoryError("history: not a valid SQLAlchemy URL") from None
        self._secrets = url_secrets(parsed)
        self.url = parsed
        self.display_url = masked_url(parsed)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "",
                                                                             ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(parsed, connect_args={"timeout": 60})

            @sa.event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record):
                # Our own transactions (BEGIN IMMEDIATE below), and WAL so readers
                # never block the writer.
                dbapi_connection.isolation_level = None
                dbapi_connection.execute(f"PRAGMA busy_timeout={self._wait_ms()}")
                dbapi_connection.execute("PRAGMA journal_mode=WAL")

            @sa.event.listens_for(self.engine, "begin")
            def _begin_immediate(connection):
                connection.exec_driver_sql(f"PRAGMA busy_timeout={self._wait_ms()}")
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            self.engine = sa.create_engine(parsed, pool_pre_ping=True)
            if parsed.get_backend_name() in {"postgresql", "mysql", "mariadb"}:
                self._bound_lock_waits(parsed.get_backend_name())
        self._ready = False

    def _wait_ms(self) -> int:
        """How long a lock may be waited for: a minute, or what is left of the run — and
        past the run's deadline a short grace, so that a run that timed out is still
        recorded as such (a few seconds over --timeout, never a minute)."""
        if self.deadline is None:
            return 60_000
        left = int((self.deadline - time.monotonic()) * 1000)
        return min(60_000, max(left, GRACE_MS))

    def _bound_lock_waits(self, backend: str) -> None:
        @sa.event.listens_for(self.engine, "begin")
        def _bounded(connection):
            if self.deadline is None:
                return
            wait = self._wait_ms()
            if backend == "postgresql":
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait}")
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {wait}")
            else:
                connection.exec_driver_sql(
                    f"SET SESSION innodb_lock_wait_timeout = {max(1, wait // 1000)}")

    def identity(self):
        """Which database this store is, as its server says (`identity`); None for an
        SQLite file that does not exist yet. Reads only: call it before `ensure`."""
        from integrity.identity import identify, sqlite_file

        if self.url.get_backend_name() == "sqlite":
            return sqlite_file(self.url.database) if self.url.database else None
        try:
            with self.engine.connect() as connection:
                return identify(connection)
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot connect") from None

    # -- schema -----------------------------------------------------------------------

    def _error(self, error: BaseException, action: str) -> HistoryError:
        return HistoryError(scrub(f"history ({self.display_url}): {action}: {_reason(error)}",
                                  self._secrets))

    def ensure(self) -> None:
        """Create or upgrade the schema (idempotent, safe when two runs start together)."""
        if self._ready:
            return
        try:
            if self.engine.dialect.name in MYSQL:
                self._ensure_mysql()
            else:
                try:
                    with self.engine.begin() as connection:
                        metadata.create_all(connection, checkfirst=True)
                        self._upgrade(connection)
                except sa.exc.IntegrityError:
                    pass  # another run created the version row first: its schema is ours
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot prepare the store") from None
        self._ready = True

    def _upgrade(self, connection) -> None:
        """Stamp a new store with the schema version, or run the migrations it lacks."""
        version = connection.execute(sa.select(meta_table.c.value).where(
            meta_table.c.key == "schema_version")).scalar()
        if version is None:
            connection.execute(meta_table.insert().values(key="schema_version",
                                                          value=str(SCHEMA_VERSION)))
            version = SCHEMA_VERSION
        version = int(version)
        if version > SCHEMA_VERSION:
            raise HistoryError(f"history ({self.display_url}) has schema version "
                               f"{version}, newer than this integrity "
                               f"({SCHEMA_VERSION}); upgrade integrity")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(step, []):
                if callable(statement):
                    statement(connection)
                else:
                    connection.exec_driver_sql(statement)
            connection.execute(meta_table.update().where(
                meta_table.c.key == "schema_version").values(value=str(step)))

    def _ensure_mysql(self) -> None:
        """`ensure` on MySQL/MariaDB, where every CREATE TABLE commits at once, so a
        transaction cannot take back a creation that failed half-way.

        All or nothing all the same: under a server lock named after the database (two
        runs starting together take turns), create the missing tables one by one, then
        stamp the version row in a transaction; if anything fails, drop every table this
        call created — the half-made one too — before raising. The version row is written
        last, so a store without it never finished: a creation killed before it could
        clean up (or an integrity before this fix, which failed on the key length) left
        tables that are dropped and made again here — if they are empty; otherwise the
        store is refused, never dropped. (A future migration altering tables would commit
        at each statement here too, and must be written to be re-run.)"""
        lock = "integrity_history_" + hashlib.sha256(
            str(self.url.database).encode()).hexdigest()[:16]
        ours = set(metadata.tables)
        with self.engine.connect() as connection:
            got = connection.execute(sa.text("SELECT GET_LOCK(:lock, 60)"),
                                     {"lock": lock}).scalar()
            connection.commit()
            if got != 1:
                raise HistoryError(f"history ({self.display_url}): cannot prepare the store: "
                                   f"another run has held its schema lock for 60 s")
            try:
                found = ours & set(sa.inspect(connection).get_table_names())
                if found and not self._stamped(connection, found):
                    self._drop_unfinished(connection, found)
                    found = set()
                try:
                    for table in metadata.sorted_tables:  # referenced tables first
                        if table.name not in found:
                            table.create(connection)
                    connection.commit()
                    with connection.begin():
                        self._upgrade(connection)
                except BaseException as failure:
                    try:
                        connection.rollback()
                        made = ours & set(sa.inspect(connection).get_table_names()) - found
                        for table in reversed(metadata.sorted_tables):
                            if table.name in made:
                                table.drop(connection)
                        connection.commit()
                    except sa.exc.SQLAlchemyError as cleanup:
                        raise self._error(cleanup, f"cannot prepare the store "
                                          f"({_reason(failure)}), then cannot drop the tables "
                                          f"it made (the next run will)") from None
                    raise
            finally:
                try:
                    connection.execute(sa.text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
                    connection.commit()
                except sa.exc.SQLAlchemyError:
                    pass  # the lock ends with the session anyway

    @staticmethod
    def _stamped(connection, found: set[str]) -> bool:
        if meta_table.name not in found:
            return False
        return connection.execute(sa.select(meta_table.c.value).where(
            meta_table.c.key == "schema_version")).scalar() is not None

    def _drop_unfinished(self, connection, found: set[str]) -> None:
        quote = connection.dialect.identifier_preparer.quote
        filled = [name for name in sorted(found) if connection.exec_driver_sql(
            f"SELECT 1 FROM {quote(name)} LIMIT 1").first() is not None]
        connection.rollback()
        if filled:
            raise HistoryError(f"history ({self.display_url}): cannot prepare the store: "
                               f"it has integrity tables with rows ({', '.join(filled)}) but "
                               f"no schema version; integrity will not guess what they are")
        for table in reversed(metadata.sorted_tables):
            if table.name in found:
                table.drop(connection)
        connection.commit()

    # -- reading ------------------------------------------------------------------------

    def previous_fingerprints(self, connection, audit: str, target: str | None, check_id: str
                              ) -> tuple[int | None, dict[str, tuple[str, datetime, int]]]:
        """The last run of `audit` on `target` in which `check_id` ran, and its violations."""
        previous = connection.execute(
            sa.select(sa.func.max(check_results.c.run_id))
            .select_from(check_results.join(runs, runs.c.id == check_results.c.run_id))
            .where(*_series(audit, target), check_results.c.check_id == check_id,
                   check_results.c.status != "error")).scalar()
        if previous is None:
            return None, {}
        rows = connection.execute(
            sa.select(violations.c.fingerprint, violations.c.key_json,
                      violations.c.first_seen_at, violations.c.runs_seen)
            .where(violations.c.run_id == previous, violations.c.check_id == check_id)).all()
        return previous, {row[0]: (row[1], row[2], row[3]) for row in rows}

    def increment_state(self, audit: str, target: str, check_id: str, dataset: str
                        ) -> IncrementState | None:
        """Where an incremental run of `check_id` over `dataset` starts (None: the check
        never ran on this target)."""
        self.ensure()
        try:
            with self.engine.connect() as connection:
                previous, seen = self.previous_fingerprints(connection, audit, target, check_id)
                if previous is None:
                    return None
                run = connection.execute(
                    sa.select(runs.c.data_as_of, runs.c.config_hash,
                              check_results.c.violation_count)
                    .select_from(runs.join(check_results, check_results.c.run_id == runs.c.id))
                    .where(runs.c.id == previous, check_results.c.check_id == check_id)).one()
                mark = connection.execute(
                    sa.select(watermarks.c.change_column, watermarks.c.watermark)
                    .where(watermarks.c.run_id == previous,
                           watermarks.c.dataset == dataset)).first()
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot read the last run's watermark") from None
        return IncrementState(
            run_id=previous, now=_aware(run.data_as_of), config_hash=run.config_hash,
            violation_count=run.violation_count,
            keys=[json.loads(key_json) for key_json, _, _ in seen.values()],
            change_column=mark.change_column if mark else None,
            watermark=json.loads(mark.watermark) if mark and mark.watermark else None)

    def last_full_read(self, audit: str, target: str, dataset: str) -> datetime | None:
        """The `now` of the last run of `audit` on `target` that read `dataset` in full."""
        self.ensure()
        try:
            with self.engine.connect() as connection:
                found = connection.execute(
                    sa.select(sa.func.max(runs.c.data_as_of))
                    .select_from(runs.join(watermarks, watermarks.c.run_id == runs.c.id))
                    .where(*_series(audit, target), watermarks.c.dataset == dataset,
                           watermarks.c.read_in_full.is_(True))).scalar()
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot read the last full run") from None
        return _aware(found)

    def last_status(self, audit: str, target: str, check_id: str) -> str | None:
        """The status of `check_id` in the last run of `audit` on `target` that has it."""
        self.ensure()
        try:
            with self.engine.connect() as connection:
                trend = self.trend(connection, audit, target, check_id, limit=1)
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot read the last run") from None
        return trend[-1][1] if trend else None

    def acceptances(self, connection, audit: str) -> list[Acceptance]:
        rows = connection.execute(sa.select(accepted).where(accepted.c.audit == audit)).all()
        return [Acceptance(row.check_id, row.fingerprint,
                           None if row.key_json is None else json.loads(row.key_json),
                           row.reason, row.until) for row in rows]

    def trailing_values(self, audit: str, target: str, check_id: str, group_key: str, *,
                        before: datetime, runs_back: int | None = None,
                        since: datetime | None = None) -> list[tuple[float, datetime, bool]]:
        """A metric group's values in the runs of `audit` on `target` before `before`, newest
        first: (value, the run's `now`, whether the value breached a bound in that run) —
        the last `runs_back` values, or those of runs at or after `since`. A value recorded
        before breaches were (schema version 4) counts as not breached."""
        self.ensure()
        statement = (
            sa.select(check_values.c.value, runs.c.data_as_of, check_values.c.breached)
            .select_from(check_values.join(runs, runs.c.id == check_values.c.run_id))
            .where(*_series(audit, target), check_values.c.check_id == check_id,
                   check_values.c.group_key == group_key, check_values.c.value.is_not(None),
                   runs.c.data_as_of < _naive(before))
            .order_by(runs.c.data_as_of.desc()).limit(runs_back))
        if since is not None:
            statement = statement.where(runs.c.data_as_of >= _naive(since))
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(statement).all()
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot read baselines") from None
        return [(float(value), _aware(as_of), bool(breached)) for value, as_of, breached in rows]

    def trend(self, connection, audit: str, target: str, check_id: str, limit: int = 30
              ) -> list[tuple[int, str, int | None]]:
        """(run id, status, violation count) of the last `limit` runs, oldest first."""
        rows = connection.execute(
            sa.select(check_results.c.run_id, check_results.c.status,
                      check_results.c.violation_count)
            .select_from(check_results.join(runs, runs.c.id == check_results.c.run_id))
            .where(*_series(audit, target), check_results.c.check_id == check_id)
            .order_by(check_results.c.run_id.desc()).limit(limit)).all()
        return [tuple(row) for row in reversed(rows)]

    # -- the run -------------------------------------------------------------------------------

    def apply(self, result: AuditResult) -> None:
        """Attach lifecycle, acceptance and trends to `result`, re-judge checks whose
        violations are all accepted, and record the run."""
        self.ensure()
        today = result.now.date()
        try:
            with self.engine.begin() as connection:
                acceptances = self.acceptances(connection, result.audit_name)
                for check in result.checks:
                    if check.status == "error":
                        check.lifecycle = None
                        continue
                    self._lifecycle(connection, result, check, acceptances, today)
                run_id = self._record(connection, result)
                for check in result.checks:
                    check.trend = self.trend(connection, result.audit_name, result.target,
                                             check.id)
                result.run_id = run_id
                result.history = self.display_url
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the run") from None

    def amend(self, result: AuditResult) -> None:
        """Correct a recorded run's outcome after errors found once it was recorded (a
        report that could not be written): history never keeps a pass the process did
        not give."""
        code = exit_code(result)
        try:
            with self.engine.begin() as connection:
                connection.execute(runs.update().where(runs.c.id == result.run_id).values(
                    outcome=ExitCode(code).name.lower(), exit_code=code,
                    errors=json.dumps(result.errors)))
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the run") from None

    def _lifecycle(self, connection, result: AuditResult, check: CheckResult,
                   acceptances: list[Acceptance], today: date) -> None:
        previous, seen = self.previous_fingerprints(connection, result.audit_name,
                                                    result.target, check.id)
        life = Lifecycle(previous_run=previous)
        now = _naive(result.now)
        current: dict[str, tuple[str, datetime, int]] = {}
        for key in check.violation_keys[:TRACKED_PER_CHECK]:
            print_ = fingerprint(check.id, key)
            key_json = json.dumps([None if v is None else str(v) for v in key])
            if print_ in seen:
                _, first, count = seen[print_]
                life.persisting[print_] = (first, count + 1)
                current[print_] = (key_json, first, count + 1)
            else:
                life.new.add(print_)
                current[print_] = (key_json, now, 1)
        life.resolved = {fp: key_json for fp, (key_json, _, _) in seen.items()
                         if fp not in current}
        for acceptance in acceptances:
            if acceptance.check_id != check.id or acceptance.until < today:
                continue
            for print_ in current:
                if acceptance.fingerprint in (None, print_):
                    life.accepted[print_] = (acceptance.reason, acceptance.until)
        expired = [a for a in acceptances if a.check_id == check.id and a.until < today]
        if expired:
            check.notes.append(f"{len(expired)} acceptance(s) expired (last on "
                               f"{max(a.until for a in expired).isoformat()})")
        check.lifecycle = life
        check.tracked = current
        if len(check.violation_keys) > TRACKED_PER_CHECK:
            check.notes.append(f"lifecycle tracks the first {TRACKED_PER_CHECK:,} violations")
        if life.accepted and check.status in {"warn", "fail", "info"}:
            open_count = len(current) - len(life.accepted)
            if open_count == 0:
                check.notes.append(f"all {len(life.accepted)} violation(s) accepted: "
                                   f"{sorted({reason for reason, _ in life.accepted.values()})[0]}")
                check.status_before_acceptance = check.status
                check.status = "pass"
            else:
                check.notes.append(f"{len(life.accepted)} of {len(current)} violation(s) "
                                   f"accepted; {open_count} open")

    def _record(self, connection, result: AuditResult) -> int:
        code = exit_code(result)
        run_id = connection.execute(runs.insert().values(
            audit=result.audit_name, target=result.target, audit_file=result.audit_file,
            engine=result.engine,
            started_at=_naive(result.started_at), finished_at=_naive(result.finished_at),
            data_as_of=_naive(result.now), outcome=ExitCode(code).name.lower(), exit_code=code,
            fail_on=result.fail_on, tool_version=__version__, config_hash=result.config_hash,
            database=result.database, errors=json.dumps(result.errors))).inserted_primary_key[0]
        rows, values, prints = [], [], []
        for check in result.checks:
            rows.append(dict(run_id=run_id, check_id=check.id, kind=check.kind,
                             status=check.status, severity=check.severity,
                             violation_count=check.violation_count,
                             population=check.population, rate=check.rate, value=check.value,
                             duration_ms=check.duration_ms, error=check.error))
            for group_key, value in (check.group_values or {}).items():
                values.append(dict(run_id=run_id, check_id=check.id, group_key=group_key,
                                   value=value, breached=group_key in check.breached_groups))
            for print_, (key_json, first, count) in (getattr(check, "tracked", None)
                                                      or {}).items():
                prints.append(dict(run_id=run_id, check_id=check.id, fingerprint=print_,
                                   key_json=key_json, first_seen_at=first, runs_seen=count))
        marks = [dict(run_id=run_id, dataset=mark.dataset, change_column=mark.column,
                      watermark=None if mark.value is None else json.dumps(mark.value),
                      read_in_full=mark.read_in_full) for mark in result.watermarks]
        for table, batch in ((check_results, rows), (check_values, values),
                             (violations, prints), (watermarks, marks)):
            for start in range(0, len(batch), 5000):
                connection.execute(table.insert(), batch[start:start + 5000])
        return run_id

    # -- acceptances -------------------------------------------------------------------------

    def accept(self, audit: str, check_id: str, keys: list[list[str]] | None, reason: str,
               until: date, now: datetime | None = None) -> tuple[int, list[list[str]]]:
        """Record the acceptance; (rows recorded, the keys no violation of the check's last
        recorded run has — accepted all the same, they may be about to appear)."""
        self.ensure()
        now = _naive(now or datetime.now(timezone.utc))
        rows = [dict(audit=audit, check_id=check_id, fingerprint=None, key_json=None,
                     reason=reason, until=until, created_at=now)] if not keys else [
            dict(audit=audit, check_id=check_id, fingerprint=fingerprint(check_id, key),
                 key_json=json.dumps(key), reason=reason, until=until, created_at=now)
            for key in keys]
        try:
            with self.engine.begin() as connection:
                # Acceptances hold for the audit on every target: the keys are looked up
                # in its last recorded run, whichever database that was.
                _, seen = self.previous_fingerprints(connection, audit, None, check_id)
                connection.execute(accepted.insert(), rows)
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the acceptance") from None
        unknown = [key for key, row in zip(keys or [], rows) if row["fingerprint"] not in seen]
        return len(rows), unknown

    # -- notifications -------------------------------------------------------------------------

    _ALERT_FIELDS = ("open", "announced", "pending", "opened_at", "last_sent_at",
                     "resolved_at", "last_status", "last_value", "reminders",
                     "acknowledged_at", "ack_until", "ack_note")
    _ALERT_MOMENTS = {"opened_at", "last_sent_at", "resolved_at", "acknowledged_at",
                      "ack_until"}

    def alert_state(self, audit: str, target: str, channel: str) -> dict[str, dict]:
        """Each check's alert on one channel (notify.plan reads and returns these)."""
        self.ensure()
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(alerts).where(
                alerts.c.audit == audit, alerts.c.target == target,
                alerts.c.channel == channel)).all()
        return {row.check_id: self._alert(row) for row in rows}

    def _alert(self, row) -> dict:
        return {name: _aware(getattr(row, name)) if name in self._ALERT_MOMENTS
                else getattr(row, name) for name in self._ALERT_FIELDS}

    def record_alerts(self, audit: str, target: str, channel: str, channel_name: str,
                      run_id: int | None, steps, delivery, now: datetime) -> None:
        """Keep each alert's new state — as sent only if the delivery got through, so a
        failed one stays due — and log every step and the delivery."""
        ok = delivery is None or delivery.ok
        try:
            with self.engine.begin() as connection:
                if delivery is not None and delivery.alerts:
                    connection.execute(notification_log.insert().values(
                        run_id=run_id, audit=audit, channel=channel, sent_at=_naive(now),
                        checks=json.dumps(delivery.alerts), ok=delivery.ok,
                        attempts=delivery.attempts, error=delivery.error))
                for step in steps:
                    state = step.sent if ok or step.alert is None else step.unsent
                    key = dict(audit=audit, target=target, channel=channel,
                               check_id=step.check_id)
                    connection.execute(alerts.delete().where(
                        *[alerts.c[name] == value for name, value in key.items()]))
                    connection.execute(alerts.insert().values(
                        **key, channel_name=channel_name, last_run_id=run_id,
                        **{name: _naive(value) if name in self._ALERT_MOMENTS and value
                           else value for name, value in state.items()
                           if name in self._ALERT_FIELDS},
                        **{name: False for name in ("announced", "pending")
                           if name not in state}))
                    if step.logged:
                        connection.execute(alert_log.insert().values(
                            audit=audit, target=target, channel_name=channel_name,
                            check_id=step.check_id, run_id=run_id, at=_naive(now),
                            event=step.event, status=state.get("last_status") or "pass",
                            value=state.get("last_value"),
                            delivered=None if step.alert is None else ok,
                            error=None if ok or step.alert is None else delivery.error))
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record notifications") from None

    def acknowledge(self, audit: str, check_id: str, note: str, until: datetime | None,
                    now: datetime, target: str | None = None) -> list[dict]:
        """Acknowledge the open alerts of a check (every channel; one target, or every
        target): no reminders until `until` (None: until it resolves or worsens). The
        breach stays open and visible. Returns the alerts acknowledged."""
        self.ensure()
        where = [alerts.c.audit == audit, alerts.c.check_id == check_id,
                 alerts.c.open.is_(True)]
        if target is not None:
            where.append(alerts.c.target == target)
        try:
            with self.engine.begin() as connection:
                found = connection.execute(sa.select(alerts).where(*where)).all()
                if found:
                    connection.execute(alerts.update().where(*where).values(
                        acknowledged_at=_naive(now), ack_until=_naive(until) if until else None,
                        ack_note=note))
                    connection.execute(alert_log.insert(), [dict(
                        audit=audit, target=row.target, channel_name=row.channel_name,
                        check_id=check_id, run_id=None, at=_naive(now), event="acknowledged",
                        status=row.last_status, value=row.last_value, delivered=None,
                        error=None, note=note) for row in found])
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the acknowledgement") from None
        return [{"target": row.target, "channel": row.channel, "channel_name": row.channel_name,
                 **self._alert(row)} for row in found]

    def open_alerts(self, audit: str) -> list[dict]:
        """The alerts of an audit that are open, on every target and channel."""
        if not self.exists():
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(alerts).where(
                alerts.c.audit == audit, alerts.c.open.is_(True)).order_by(
                alerts.c.opened_at, alerts.c.check_id, alerts.c.channel_name)).all()
        return [{"target": row.target, "check_id": row.check_id, "channel": row.channel,
                 "channel_name": row.channel_name, "last_run_id": row.last_run_id,
                 **self._alert(row)} for row in rows]

    def alert_log(self, audit: str, limit: int = 50) -> list[dict]:
        """The newest steps of an audit's alerts, newest first."""
        if not self.exists():
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(alert_log).where(
                alert_log.c.audit == audit).order_by(alert_log.c.id.desc()).limit(limit)).all()
        return [{**row._mapping, "at": _aware(row.at)} for row in rows]

    # -- watches -------------------------------------------------------------------------------

    _WATCH_MOMENTS = ("started_at", "ends_at", "rollback_at", "closed_at")

    def _watch(self, row) -> dict:
        watch = dict(row._mapping)
        for name in self._WATCH_MOMENTS:
            watch[name] = _aware(watch[name])
        for name in ("deployed_by", "plan", "before"):
            watch[name] = json.loads(watch[name]) if watch[name] else {}
        return watch

    def open_watch(self, audit: str, target: str, audit_file: str, deploy: str,
                   deployed_by: dict, started_at: datetime, ends_at: datetime,
                   plan: dict) -> int:
        """A new active watch of `audit` on `target` — refused (HistoryError) while another
        is active there: one deploy is watched at a time."""
        self.ensure()
        try:
            with self.engine.begin() as connection:
                active = connection.execute(sa.select(watches.c.id, watches.c.deploy).where(
                    watches.c.audit == audit, watches.c.target == target,
                    watches.c.state == "active")).first()
                if active is not None:
                    raise HistoryError(
                        f"watch #{active.id} (deploy {active.deploy}) of {audit} is still "
                        f"active on this target: sign it off (`integrity watch signoff`) or "
                        f"abort it (`integrity watch abort --reason …`) first")
                watch_id = connection.execute(watches.insert().values(
                    audit=audit, target=target, audit_file=audit_file, deploy=deploy,
                    deployed_by=json.dumps(deployed_by, sort_keys=True),
                    started_at=_naive(started_at), ends_at=_naive(ends_at),
                    plan=json.dumps(plan, sort_keys=True), state="active")
                ).inserted_primary_key[0]
                connection.execute(watch_events.insert().values(
                    watch_id=watch_id, at=_naive(started_at), event="started",
                    note=f"deploy {deploy}"))
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot open the watch") from None
        return watch_id

    def update_watch(self, watch_id: int, event: tuple | None = None, **values) -> None:
        """Change a watch (moments are aware datetimes) and log `event`: (at, name,
        run_id, note)."""
        values = {name: _naive(value) if isinstance(value, datetime) else
                  json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
                  for name, value in values.items()}
        try:
            with self.engine.begin() as connection:
                if values:
                    connection.execute(watches.update().where(watches.c.id == watch_id)
                                       .values(**values))
                if event is not None:
                    at, name, run_id, note = event
                    connection.execute(watch_events.insert().values(
                        watch_id=watch_id, at=_naive(at), event=name, run_id=run_id,
                        note=note))
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the watch") from None

    def add_watch_run(self, watch_id: int, run_id: int, slot_at: datetime) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(watch_runs.insert().values(
                    watch_id=watch_id, run_id=run_id, slot_at=_naive(slot_at)))
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot record the watch's run") from None

    def find_watch(self, audit: str, target: str | None = None, watch_id: int | None = None,
                   active: bool = False) -> dict | None:
        """A watch by id, else the newest (active) watch of `audit` (on `target`)."""
        if not self.exists():
            return None
        where = [watches.c.audit == audit]
        if watch_id is not None:
            where.append(watches.c.id == watch_id)
        if target is not None:
            where.append(watches.c.target == target)
        if active:
            where.append(watches.c.state == "active")
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(watches).where(*where)
                                     .order_by(watches.c.id.desc()).limit(1)).first()
        return None if row is None else self._watch(row)

    def watch_runs(self, watch_id: int, checks: bool = True) -> list[dict]:
        """The watch's runs in order: slot, run id, `now`, outcome, exit code, errors — and,
        with `checks`, each check's status, violation count, value, group values and
        violation fingerprints (`run_checks`)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(watch_runs.c.slot_at, runs.c.id, runs.c.data_as_of, runs.c.outcome,
                          runs.c.exit_code, runs.c.errors)
                .select_from(watch_runs.join(runs, runs.c.id == watch_runs.c.run_id))
                .where(watch_runs.c.watch_id == watch_id).order_by(runs.c.id)).all()
            return [{"slot_at": _aware(row.slot_at), "run_id": row.id,
                     "now": _aware(row.data_as_of), "outcome": row.outcome,
                     "exit_code": row.exit_code, "errors": json.loads(row.errors),
                     "checks": self._run_checks(connection, row.id) if checks else {}}
                    for row in rows]

    def run_checks(self, run_id: int) -> dict[str, dict]:
        """Each check of a run: status, violation count, value, group values, fingerprints."""
        with self.engine.connect() as connection:
            return self._run_checks(connection, run_id)

    @staticmethod
    def _run_checks(connection, run_id: int) -> dict[str, dict]:
        checks = {r.check_id: {"status": r.status, "violation_count": r.violation_count,
                               "value": r.value, "groups": {}, "fingerprints": set()}
                  for r in connection.execute(sa.select(check_results).where(
                      check_results.c.run_id == run_id))}
        for value in connection.execute(sa.select(check_values).where(
                check_values.c.run_id == run_id)):
            if value.check_id in checks:
                checks[value.check_id]["groups"][value.group_key] = value.value
        for print_ in connection.execute(sa.select(
                violations.c.check_id, violations.c.fingerprint).where(
                violations.c.run_id == run_id)):
            if print_.check_id in checks:
                checks[print_.check_id]["fingerprints"].add(print_.fingerprint)
        return checks

    def watch_events(self, watch_id: int) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(watch_events).where(
                watch_events.c.watch_id == watch_id).order_by(watch_events.c.id)).all()
        return [{**row._mapping, "at": _aware(row.at)} for row in rows]

    def alert_steps(self, audit: str, target: str, since: datetime, until: datetime
                    ) -> list[dict]:
        """The steps of an audit's alerts on one target between two moments, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(alert_log).where(
                alert_log.c.audit == audit, alert_log.c.target == target,
                alert_log.c.at >= _naive(since), alert_log.c.at <= _naive(until))
                .order_by(alert_log.c.id)).all()
        return [{**row._mapping, "at": _aware(row.at)} for row in rows]

    def last_run_since(self, audit: str, target: str, since: datetime) -> int | None:
        """The newest run of `audit` on `target` whose `now` is at or after `since`."""
        if not self.exists():
            return None
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.max(runs.c.id)).where(
                *_series(audit, target), runs.c.data_as_of >= _naive(since))).scalar()

    # -- browsing ------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the store was ever made: reading commands never create one."""
        database = self.url.database
        if self.url.get_backend_name() == "sqlite" and database and database != ":memory:" \
                and not Path(database).exists():
            return False
        try:
            with self.engine.connect() as connection:
                present = sa.inspect(connection).has_table(meta_table.name)
        except sa.exc.SQLAlchemyError as error:
            raise self._error(error, "cannot read the store") from None
        if present:
            self.ensure()  # an older store is upgraded before it is read
        return present

    def list_runs(self, audit: str | None = None, limit: int = 20) -> list[dict]:
        self.ensure()
        statement = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if audit:
            statement = statement.where(runs.c.audit == audit)
        with self.engine.connect() as connection:
            found = [dict(row._mapping) for row in connection.execute(statement)]
            for run in found:
                counts = connection.execute(
                    sa.select(check_results.c.status, sa.func.count())
                    .where(check_results.c.run_id == run["id"])
                    .group_by(check_results.c.status)).all()
                run["counts"] = dict(counts)
        return found

    def run(self, run_id: int) -> tuple[dict, list[dict]]:
        self.ensure()
        with self.engine.connect() as connection:
            head = connection.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if head is None:
                raise HistoryError(f"history: no run {run_id}")
            results = [dict(row._mapping) for row in connection.execute(
                sa.select(check_results).where(check_results.c.run_id == run_id)
                .order_by(check_results.c.check_id))]
            for row in results:
                row["fingerprints"] = set(connection.execute(
                    sa.select(violations.c.fingerprint).where(
                        violations.c.run_id == run_id,
                        violations.c.check_id == row["check_id"])).scalars())
        return dict(head._mapping), results

    def deliveries(self, run_id: int) -> list[dict]:
        """What the run's notifications did, channel by channel."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(notification_log).where(
                notification_log.c.run_id == run_id).order_by(notification_log.c.id)).all()
        return [{**row._mapping, "checks": json.loads(row.checks)} for row in rows]

    def dispose(self) -> None:
        self.engine.dispose()
