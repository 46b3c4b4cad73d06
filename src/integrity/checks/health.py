"""Database health: the server the application runs on (seeds 001, 002, 003).

A `database_health` check reports each of its `measures` as its own result,
`<id>:<measure>`, judged by that measure's `warn`/`critical` bounds on its
value:

- `connections` — sessions in use as a share of `max_connections`, server-wide
  (seed 003: "> 80 % pool warn, > 95 % critical"). Value: the share.
- `idle_in_transaction` — sessions of the audited database idle inside an open
  transaction for longer than `older_than` (they hold locks and block
  vacuum). Value: how many; each is a row (session, user, seconds).
- `long_queries` — statements of the audited database running longer than
  `longer_than`, the audit's own session left out (seed 002: "no slow
  queries"). Value: how many; each is a row (session, user, seconds) — the
  statement's text is not shown, it may hold data.
- `slow_statements` — kinds of statement whose mean time is above
  `mean_above` (seed 001: "Database Query Time > 200 ms per query"), from
  PostgreSQL's `pg_stat_statements` or MariaDB/MySQL's `performance_schema`
  digests, for the audited database. Value: how many kinds; each is a row
  (the normalised statement, calls, mean ms). Without the extension (or with
  `performance_schema` off) nothing can be measured: the result says so and
  takes the `unavailable` level (warn by default) — never a silent pass.
- `replication_lag` — on a replica, how far behind its primary it is, in
  seconds: 0 when it has replayed all it received, else the time since the
  last transaction it replayed (PostgreSQL), or `Seconds_Behind_Master`
  (MariaDB/MySQL); a replica whose replication has stopped fails. On a server
  that is no replica there is nothing to measure: a note says so.
- `sequences` — PostgreSQL sequences, MariaDB/MySQL AUTO_INCREMENT columns and
  SQLite AUTOINCREMENT tables of the audited database: the share of their range
  used, (last − min) / (max − min) (seed 001: "monitor sequence usage"). Value:
  the highest share; each sequence past a bound is a row.

- `size` — the audited database's size, and its growth against the oldest
  size recorded for this target in the last `growth_over` (seed 002:
  `pg_database_size`; an SQLite file's pages), judged by `warn`/`critical` on
  the growth (`"> 20%"`); a server's largest tables are named in a note.
  Without enough history the growth is unknown and said, not judged.

Everything is read from the server's statistics and catalog views inside the
audit's read-only transaction, bounded by its statement timeout. A view the
audit role may not read in full (other users' sessions need `pg_read_all_stats`
on PostgreSQL, `PROCESS` on MariaDB/MySQL) shows what it can. Times are the
server's clock at the measurement, not the run's `now`: these measure the present.

SQLite is a file the application opens in its own process: there is no server.
What applies to a file is measured — `size` is page_count × page_size (its
PRAGMAs: every page of the database, free ones included, checkpointed or still
in the write-ahead log), its growth judged against the history as on a server
(the tables' sizes are not named: counting them means reading every page);
`sequences` are the AUTOINCREMENT tables' largest rowid used (`sqlite_sequence`)
against 2^63 − 1, past which inserts fail (a rowid without AUTOINCREMENT reuses
free values and never runs out: no sequence); `replication_lag` says "not a
replica". `connections`, `idle_in_transaction`, `long_queries` and
`slow_statements` have no meaning there — no server holds sessions, sees other
processes' statements or keeps their statistics — so each is its own result at
`info` saying "not applicable on SQLite" and why: visible, never a silent pass,
never an error.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Duration, Model
from integrity.units import Threshold, format_duration, parse_threshold

MEASURES = ("connections", "idle_in_transaction", "long_queries", "slow_statements",
            "sequences", "replication_lag", "size")


class Bounds(Model):
    warn: Threshold | None = Field(None, description=(
        "The measure warns when its value meets this bound, e.g. `\"> 80%\"` or `\"> 0\"`."))
    critical: Threshold | None = Field(None, description=(
        "The measure fails when its value meets this bound (it wins over `warn`)."))

    @field_validator("warn", "critical", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return None if value is None else parse_threshold(value, default_measure="value")

    def level(self, value: float | None) -> str | None:
        if self.critical is not None and self.critical.breached(value):
            return "critical"
        if self.warn is not None and self.warn.breached(value):
            return "warning"
        return None


class ShareBounds(Bounds):
    warn: Threshold | None = Field(parse_threshold("> 80%", default_measure="value"),
                                   description="Warn above this share. Default `> 80%`.")
    critical: Threshold | None = Field(parse_threshold("> 95%", default_measure="value"),
                                       description="Fail above this share. Default `> 95%`.")


class CountBounds(Bounds):
    warn: Threshold | None = Field(parse_threshold("> 0", default_measure="value"),
                                   description="Warn at this many. Default `> 0`.")


class IdleSessions(CountBounds):
    older_than: Duration = Field(timedelta(minutes=5), description=(
        "Idle in a transaction for longer than this. Default 5m."))


class LongQueries(CountBounds):
    longer_than: Duration = Field(timedelta(minutes=1), description=(
        "Running for longer than this. Default 1m."))


class SlowStatements(CountBounds):
    mean_above: Duration = Field(timedelta(seconds=1), description=(
        "A kind of statement is slow when its mean time is above this, e.g. `200ms`. "
        "Default 1s."))
    unavailable: Literal["warn", "fail", "info"] = Field("warn", description=(
        "The result when the statistics are not there (`pg_stat_statements` not installed "
        "or not loaded; `performance_schema` off). Default `warn`."))


class ReplicationLag(Model):
    warn_after: Duration = Field(timedelta(seconds=30), description=(
        "Warn when the replica is further behind than this. Default 30s."))
    critical_after: Duration = Field(timedelta(minutes=5), description=(
        "Fail when it is further behind than this. Default 5m."))


class SizeGrowth(Bounds):
    growth_over: Duration = Field(timedelta(days=1), description=(
        "Growth is measured against the oldest size recorded for this target in this "
        "span, from the run history. Default 1d."))
    warn: Threshold | None = Field(parse_threshold("> 20%", default_measure="value"),
                                   description="Warn when it grew more. Default `> 20%`.")
    critical: Threshold | None = Field(parse_threshold("> 50%", default_measure="value"),
                                       description="Fail when it grew more. Default `> 50%`.")


class DatabaseHealthConfig(CheckConfig):
    kind: Literal["database_health"] = Field(description="Selects this check.")
    measures: list[Literal["connections", "idle_in_transaction", "long_queries",
                           "slow_statements", "sequences", "replication_lag",
                           "size"]] = Field(
        list(MEASURES), min_length=1, description=(
            "The measures to take, each its own result `<id>:<measure>`. Default: all "
            "seven."))
    connections: ShareBounds = Field(ShareBounds(), description=(
        "Bounds on the share of `max_connections` in use."))
    idle_in_transaction: IdleSessions = Field(IdleSessions(), description=(
        "Sessions idle in a transaction: `older_than` and bounds on how many."))
    long_queries: LongQueries = Field(LongQueries(), description=(
        "Statements running long: `longer_than` and bounds on how many."))
    slow_statements: SlowStatements = Field(SlowStatements(), description=(
        "Kinds of statement slow on average: `mean_above`, bounds on how many, and the "
        "level when the statistics are not there."))
    sequences: ShareBounds = Field(ShareBounds(), description=(
        "Bounds on the share of a sequence's range used."))
    replication_lag: ReplicationLag = Field(ReplicationLag(), description=(
        "How far behind its primary a replica may be."))
    size: SizeGrowth = Field(SizeGrowth(), description=(
        "Bounds on the database's growth over `growth_over`, from the run history."))


class DatabaseHealth(Check):
    """Connections, stuck sessions, long and slow statements, and sequences near their end."""

    kind = "database_health"
    Config = DatabaseHealthConfig
    config: DatabaseHealthConfig

    def columns(self):
        return {}  # nothing is pulled: the server's own views are read in place

    def sql_problems(self, dialect: str) -> list[str]:
        return []

    def measure(self, data) -> list[Measurement]:
        import sqlalchemy as sa

        from integrity.errors import CheckError

        source, connection = data.source, data.connection
        dialect = source.dialect
        readers = {"postgresql": _Postgres, "mysql": _MariaDB, "mariadb": _MariaDB,
                   "sqlite": _SQLite}
        if dialect not in readers:
            raise CheckError(f"database health is read from PostgreSQL's or MariaDB/MySQL's "
                             f"statistics, or from an SQLite file; this database is {dialect}")
        server = readers[dialect](connection)
        self._history = getattr(data, "baseline", None)
        results = []
        for name in self.config.measures:
            if name in server.not_applicable:
                results.append(_not_applicable(name, server.name,
                                               server.not_applicable[name]))
                continue
            try:
                results.append(getattr(self, f"_{name}")(server))
            except sa.exc.SQLAlchemyError as error:
                results.append(_failed(name, source.error(error, f"{name} could not be "
                                                                   f"read")))
        return results

    measure_sql = measure  # the server's views are read in place on either engine

    # -- measures ----------------------------------------------------------------------------

    def _connections(self, server) -> Measurement:
        in_use, limit = server.connections()
        share = in_use / limit if limit else None
        row = {"in_use": in_use, "max_connections": limit}
        return _judged("connections", self.config.connections, share, [row],
                       f"{in_use} of {limit} connections in use",
                       text=None if share is None else f"{share * 100:.1f}%")

    def _idle_in_transaction(self, server) -> Measurement:
        bounds = self.config.idle_in_transaction
        rows = server.idle(bounds.older_than.total_seconds())
        return _judged("idle_in_transaction", bounds, len(rows), rows,
                       f"idle in a transaction for more than "
                       f"{format_duration(bounds.older_than)}")

    def _long_queries(self, server) -> Measurement:
        bounds = self.config.long_queries
        rows = server.running(bounds.longer_than.total_seconds())
        return _judged("long_queries", bounds, len(rows), rows,
                       f"running for more than {format_duration(bounds.longer_than)}")

    def _slow_statements(self, server) -> Measurement:
        bounds = self.config.slow_statements
        rows, missing = server.slow(bounds.mean_above.total_seconds() * 1000)
        if missing:
            import pandas as pd

            level = {"warn": "warning", "fail": "critical", "info": "info"}[bounds.unavailable]
            return Measurement(violations=pd.DataFrame(), violation_count=0, population=None,
                               keys=["statement"], level=level, judged=True,
                               label="slow_statements", notes=[f"not measured: {missing}"],
                               description="Kinds of statement slow on average: not measured.")
        return _judged("slow_statements", bounds, len(rows), rows,
                       f"a mean time above {format_duration(bounds.mean_above)}",
                       keys=["statement"])

    def _sequences(self, server) -> Measurement:
        bounds = self.config.sequences
        found = server.sequences()
        worst = max((row["used"] for row in found), default=None)
        rows = [{**row, "used": f"{row['used'] * 100:.1f}%"} for row in found
                if bounds.level(row["used"])]
        return _judged("sequences", bounds, worst, rows,
                       f"{len(found)} sequence(s); the fullest has used "
                       f"{'–' if worst is None else f'{worst * 100:.1f}%'} of its range",
                       keys=["sequence"], text=None if worst is None else
                       f"{worst * 100:.1f}%", count=len(rows))

    def _replication_lag(self, server) -> Measurement:
        import pandas as pd

        bounds = self.config.replication_lag
        replica, lag, stopped = server.lag()
        if not replica:
            return Measurement(violations=pd.DataFrame(), violation_count=0, population=None,
                               keys=["replica"], judged=True, label="replication_lag",
                               notes=["not a replica: no replication lag to measure"],
                               description="replication lag: not a replica.")
        level = ("critical" if stopped or lag > bounds.critical_after.total_seconds() else
                 "warning" if lag > bounds.warn_after.total_seconds() else None)
        row = {"replica": "this server", "lag_seconds": None if stopped else round(lag, 1),
               "replication": "stopped" if stopped else "running"}
        return Measurement(
            violations=pd.DataFrame([row] if level else []), violation_count=1 if level else 0,
            population=None, keys=["replica"], level=level, judged=True,
            value=None if stopped else lag, value_text="stopped" if stopped else f"{lag:.1f}s",
            label="replication_lag", notes=["replication has stopped" if stopped else
                                            f"{lag:.1f}s behind the primary"],
            description=f"replication lag: warning after {format_duration(bounds.warn_after)}"
                        f", critical after {format_duration(bounds.critical_after)} or when "
                        f"replication has stopped.")

    def _size(self, server) -> Measurement:
        bounds = self.config.size
        size, tables = server.size()
        earlier = self._history(f"{self.id}:size", "database", 0, bounds.growth_over) \
            if self._history is not None else []
        oldest = min(earlier, key=lambda entry: entry[1])[0] if earlier else None
        growth = (size - oldest) / oldest if oldest else None
        if isinstance(tables, str):  # what the server says instead of its tables' sizes
            notes = [f"{_bytes(size)}; {tables}"]
        else:
            largest = ", ".join(f"{name} {_bytes(bytes_)}" for name, bytes_ in tables[:5])
            notes = [f"{_bytes(size)}; largest tables: {largest or 'none'}"]
        if growth is None:
            notes.append(f"growth unknown: no size recorded for this target in the last "
                         f"{format_duration(bounds.growth_over)}")
        else:
            notes.append(f"grew {growth * 100:+.1f}% since {_bytes(oldest)} (the oldest "
                         f"size of the last {format_duration(bounds.growth_over)})")
        measured = _judged("size", bounds, growth, [{"database": "this database", "bytes": size,
                                                      "growth": f"{(growth or 0) * 100:+.1f}%"}],
                           notes[0], keys=["database"],
                           text=_bytes(size) + ("" if growth is None else
                                                f" ({growth * 100:+.1f}%)"))
        measured.notes = notes
        measured.value = float(size)  # kept in history: the next runs' growth is from it
        measured.values = {"database": float(size)}
        return measured

    def describe(self) -> str:
        return ("The server's health: " + ", ".join(m.replace("_", " ") for m in
                                                     self.config.measures) + ".")


def _judged(name: str, bounds: Bounds, value: float | None, rows: list[dict], what: str,
            keys: list[str] | None = None, text: str | None = None,
            count: int | None = None) -> Measurement:
    import pandas as pd

    level = bounds.level(value)
    shown = [f"{label} if {bound}" for label, bound in (("warning", bounds.warn),
                                                        ("critical", bounds.critical)) if bound]
    frame = pd.DataFrame(rows) if level else pd.DataFrame(columns=list(rows[0]) if rows else [])
    return Measurement(
        violations=frame, violation_count=(count if count is not None else len(frame))
        if level else 0, population=None, keys=keys or list(frame.columns[:1]) or ["session"],
        level=level, judged=True, value=value, value_text=text or (
            None if value is None else f"{value:g}"),
        label=name, notes=[what], description=f"{name.replace('_', ' ')}: "
                                              f"{'; '.join(shown) or 'reported'}.")


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _not_applicable(name: str, database: str, reason: str) -> Measurement:
    """A measure the database has no meaning for: shown at info, never a silent pass."""
    import pandas as pd

    return Measurement(violations=pd.DataFrame(), violation_count=0, population=None,
                       keys=["database"], level="info", judged=True, label=name,
                       notes=[f"not applicable on {database}: {reason}"],
                       description=f"{name.replace('_', ' ')}: not applicable on {database}.")


def _failed(name: str, error: Exception) -> Measurement:
    import pandas as pd

    return Measurement(violations=pd.DataFrame(), violation_count=0, population=None,
                       keys=[], label=name, error=str(error))


# ---------------------------------------------------------------------------
# Each server's views.


class _Server:
    """A server's statistics views, read on the audit's connection."""

    name = "this server"
    # Measures that mean nothing for this kind of database, and why.
    not_applicable: dict[str, str] = {}

    def __init__(self, connection):
        self.connection = connection

    def _rows(self, sql: str, **params) -> list:
        import sqlalchemy as sa

        return self.connection.execute(sa.text(sql), params).all()


class _Postgres(_Server):
    def connections(self) -> tuple[int, int]:
        [(in_use, limit)] = self._rows(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity "
            "WHERE backend_type = 'client backend'), "
            "current_setting('max_connections')::int")
        return int(in_use), int(limit)

    def _sessions(self, states: str, since: str, seconds: float) -> list[dict]:
        return [{"session": pid, "user": user, "seconds": round(float(age), 1)}
                for pid, user, age in self._rows(
                    f"SELECT pid, usename, extract(epoch FROM clock_timestamp() - {since}) "
                    f"FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
                    f"AND pid <> pg_backend_pid() AND state IN ({states}) "
                    f"AND clock_timestamp() - {since} > make_interval(secs => :seconds) "
                    f"ORDER BY pid", seconds=seconds)]

    def idle(self, seconds: float) -> list[dict]:
        return self._sessions("'idle in transaction', 'idle in transaction (aborted)'",
                              "state_change", seconds)

    def running(self, seconds: float) -> list[dict]:
        return self._sessions("'active'", "query_start", seconds)

    def slow(self, milliseconds: float) -> tuple[list[dict], str | None]:
        import sqlalchemy as sa

        installed = self._rows("SELECT n.nspname FROM pg_catalog.pg_extension e JOIN "
                               "pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
                               "WHERE e.extname = 'pg_stat_statements'")
        if not installed:
            return [], ("pg_stat_statements is not installed in this database (CREATE "
                        "EXTENSION pg_stat_statements, with it in shared_preload_libraries)")
        schema = self.connection.dialect.identifier_preparer.quote(installed[0][0])
        savepoint = self.connection.begin_nested()  # an unloaded library errors the statement
        try:
            rows = self._rows(
                f"SELECT left(regexp_replace(s.query, '\\s+', ' ', 'g'), 200), s.calls, "
                f"s.mean_exec_time FROM {schema}.pg_stat_statements s JOIN "
                f"pg_catalog.pg_database d ON d.oid = s.dbid WHERE d.datname = "
                f"current_database() AND s.mean_exec_time > :ms "
                f"ORDER BY s.mean_exec_time DESC, 1", ms=milliseconds)
        except sa.exc.SQLAlchemyError as error:
            savepoint.rollback()
            reason = " ".join(str(getattr(error, "orig", error)).split()).split(" [SQL")[0]
            return [], f"pg_stat_statements cannot be read: {reason}"
        savepoint.commit()
        return [{"statement": text, "calls": int(calls), "mean_ms": round(float(mean), 1)}
                for text, calls, mean in rows], None

    def size(self) -> tuple[int, list[tuple[str, int]]]:
        """The database's bytes, and its tables' (with indexes), largest first."""
        [(size,)] = self._rows("SELECT pg_database_size(current_database())")
        tables = self._rows(
            "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
            "c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN "
            "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
            "ORDER BY 2 DESC, 1 LIMIT 5")
        return int(size), [(name, int(bytes_)) for name, bytes_ in tables]

    def lag(self) -> tuple[bool, float, bool]:
        """(a replica?, seconds behind, replication stopped?)"""
        [(replica, caught_up, seconds, receiving)] = self._rows(
            "SELECT pg_is_in_recovery(), "
            "pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn(), "
            "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_stat_wal_receiver)")
        if not replica:
            return False, 0.0, False
        lag = 0.0 if caught_up or seconds is None else float(seconds)
        return True, lag, not receiving and not caught_up

    def sequences(self) -> list[dict]:
        return [{"sequence": name, "last_value": int(last), "max_value": int(top),
                 "used": (float(last) - float(low)) / (float(top) - float(low))}
                for name, last, low, top in self._rows(
                    "SELECT schemaname || '.' || sequencename, last_value, min_value, "
                    "max_value FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL "
                    "AND increment_by > 0 ORDER BY 1")]


_INTEGER_MAX = {"tinyint": 127, "smallint": 32_767, "mediumint": 8_388_607,
                "int": 2_147_483_647, "bigint": 9_223_372_036_854_775_807}


class _MariaDB(_Server):
    def connections(self) -> tuple[int, int]:
        [(in_use, limit)] = self._rows(
            "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
            "WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), @@max_connections")
        return int(in_use), int(limit)

    def idle(self, seconds: float) -> list[dict]:
        return [{"session": pid, "user": user, "seconds": float(age)}
                for pid, user, age in self._rows(
                    "SELECT p.ID, p.USER, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) "
                    "FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST "
                    "p ON p.ID = t.trx_mysql_thread_id WHERE p.COMMAND = 'Sleep' "
                    "AND p.DB = DATABASE() AND p.ID <> CONNECTION_ID() "
                    "AND TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) > :seconds ORDER BY p.ID",
                    seconds=seconds)]

    def running(self, seconds: float) -> list[dict]:
        return [{"session": pid, "user": user, "seconds": float(age)}
                for pid, user, age in self._rows(
                    "SELECT ID, USER, TIME_MS / 1000 FROM information_schema.PROCESSLIST "
                    "WHERE COMMAND = 'Query' AND DB = DATABASE() AND ID <> CONNECTION_ID() "
                    "AND TIME_MS / 1000 > :seconds ORDER BY ID", seconds=seconds)]

    def slow(self, milliseconds: float) -> tuple[list[dict], str | None]:
        [(enabled,)] = self._rows("SELECT @@performance_schema")
        if not enabled:
            return [], ("performance_schema is off on this server (performance_schema=ON in "
                        "its configuration, then a restart)")
        return [{"statement": text, "calls": int(calls), "mean_ms": round(float(mean), 1)}
                for text, calls, mean in self._rows(
                    "SELECT LEFT(DIGEST_TEXT, 200), COUNT_STAR, AVG_TIMER_WAIT / 1e9 FROM "
                    "performance_schema.events_statements_summary_by_digest "
                    "WHERE SCHEMA_NAME = DATABASE() AND AVG_TIMER_WAIT / 1e9 > :ms "
                    "ORDER BY AVG_TIMER_WAIT DESC, 1", ms=milliseconds)], None

    def size(self) -> tuple[int, list[tuple[str, int]]]:
        tables = [(name, int(bytes_ or 0)) for name, bytes_ in self._rows(
            "SELECT TABLE_NAME, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY 2 DESC, 1")]
        return sum(bytes_ for _, bytes_ in tables), tables[:5]

    def lag(self) -> tuple[bool, float, bool]:
        status = self.connection.exec_driver_sql("SHOW SLAVE STATUS").mappings().first()
        if status is None:
            return False, 0.0, False
        behind = status.get("Seconds_Behind_Master")
        return True, float(behind or 0), behind is None

    def sequences(self) -> list[dict]:
        found = []
        for table, column, kind, unsigned, next_value in self._rows(
                "SELECT t.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, "
                "c.COLUMN_TYPE LIKE '%unsigned%', t.AUTO_INCREMENT "
                "FROM information_schema.TABLES t JOIN information_schema.COLUMNS c "
                "ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME "
                "WHERE t.TABLE_SCHEMA = DATABASE() AND c.EXTRA LIKE '%auto_increment%' "
                "AND t.AUTO_INCREMENT IS NOT NULL ORDER BY 1, 2"):
            top = _INTEGER_MAX.get(str(kind).lower())
            if top is None:
                continue
            top = top * 2 + 1 if unsigned else top
            last = int(next_value) - 1
            found.append({"sequence": f"{table}.{column}", "last_value": last,
                          "max_value": top, "used": (last - 1) / (top - 1)})
        return found


_ROWID_MAX = 2**63 - 1


class _SQLite(_Server):
    """A file the application opens in its own process: no server, so no sessions, running
    statements, statement statistics or connection limit to read — but the file's size and
    its AUTOINCREMENT sequences are there, in PRAGMAs and `sqlite_sequence`."""

    name = "SQLite"
    not_applicable = {
        "connections": "there is no server and no connection limit; each process opens the "
                       "file itself",
        "idle_in_transaction": "no server lists the transactions other processes hold open",
        "long_queries": "statements run inside each application's own process, where no "
                        "other connection can see them",
        "slow_statements": "no server keeps statistics of the statements it ran",
    }

    def size(self) -> tuple[int, str]:
        """The database's bytes (its pages, free ones included), and why its tables' sizes
        are not given: only reading every page of the file (dbstat) would count them."""
        [(pages,)] = self._rows("PRAGMA page_count")
        [(page_size,)] = self._rows("PRAGMA page_size")
        return int(pages) * int(page_size), (
            f"{int(pages)} pages of {int(page_size)} B; tables not measured (counting their "
            f"pages means reading the whole file)")

    def lag(self) -> tuple[bool, float, bool]:
        return False, 0.0, False  # a file is nobody's replica

    def sequences(self) -> list[dict]:
        """AUTOINCREMENT tables: the largest rowid used (`sqlite_sequence`) against 2^63 − 1,
        past which inserts fail. A rowid without AUTOINCREMENT never runs out — SQLite then
        reuses free ones — so it is no sequence."""
        if not self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                          "AND name = 'sqlite_sequence'"):
            return []  # made with the first AUTOINCREMENT table
        import sqlalchemy as sa

        inspector, found = sa.inspect(self.connection), []
        for table, last in self._rows("SELECT name, seq FROM sqlite_sequence ORDER BY name"):
            # The INTEGER PRIMARY KEY that AUTOINCREMENT requires: the rowid's own name.
            columns = inspector.get_pk_constraint(table)["constrained_columns"]
            column = columns[0] if len(columns) == 1 else "rowid"
            found.append({"sequence": f"{table}.{column}", "last_value": int(last),
                          "max_value": _ROWID_MAX,
                          "used": max(int(last) - 1, 0) / (_ROWID_MAX - 1)})
        return found
