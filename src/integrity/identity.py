"""Which database is this? Asked of the server, never read off the URL's spelling.

`localhost` and `127.0.0.1`, an omitted default port, a host alias, a unix
socket or an SQLite hard link all name one database in different words; only
the server (or the file system) can say two names are one. This is how the
run history is kept out of the audited database (README, "Run history"):

- PostgreSQL: the cluster's `system_identifier` (`pg_control_system()`, the same
  for every name of the server and different for every other cluster), the
  database, and the schema the history would write into;
- MariaDB/MySQL: `@@server_uuid` where the server has one (MySQL), else
  MariaDB's `@@hostname:@@port:@@datadir`, and the database;
- SQLite: the file's device and inode.

Asking writes nothing: the queries are reads, SQLite files are only stat()ed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa


@dataclass(frozen=True)
class Identity:
    """A database as its server knows it. `schema`: where unqualified names resolve
    (PostgreSQL's current_schema(); None elsewhere). `path`: an SQLite file's absolute path."""

    kind: str
    server: str
    database: str
    schema: str | None = None
    path: str | None = None

    @property
    def target_name(self) -> str:
        """The name history keys runs by when the audit gives no `target:` — stable across
        spellings of the URL: `postgresql:7713676981460322422/app`,
        `mysql:vm:3306:/var/lib/mysql//app`, `sqlite:/srv/data/app.db`."""
        if self.kind == "sqlite" and self.path:
            return f"sqlite:{self.path}"
        return f"{self.kind}:{self.server}/{self.database}"

    def same_database(self, other: Identity) -> bool:
        return (self.kind, self.server, self.database) == (other.kind, other.server,
                                                           other.database)


def sqlite_file(path: str | os.PathLike) -> Identity | None:
    """The identity of an SQLite file, or None when there is no such file (a history file
    not yet created cannot be the audited one)."""
    try:
        status = Path(path).stat()
    except OSError:
        return None
    return Identity("sqlite", f"{status.st_dev}:{status.st_ino}", "main",
                    path=str(Path(path).resolve()))


def identify(connection: sa.Connection) -> Identity:
    """Ask the server behind `connection` who it is (reads only)."""
    dialect = connection.dialect.name

    def scalar(statement: str):
        return connection.exec_driver_sql(statement).scalar()

    if dialect == "postgresql":
        try:
            with connection.begin_nested():
                server = str(scalar("SELECT system_identifier FROM pg_control_system()"))
        except sa.exc.DBAPIError:  # a managed server that hides it: its address, then
            server = str(scalar("SELECT coalesce(host(inet_server_addr()), 'local') || ':' "
                                "|| coalesce(inet_server_port(), 0)"))
        return Identity("postgresql", server, scalar("SELECT current_database()"),
                        scalar("SELECT current_schema()"))
    if dialect in {"mysql", "mariadb"}:
        try:
            with connection.begin_nested():
                server = scalar("SELECT @@server_uuid")
        except sa.exc.DBAPIError:  # MariaDB has no server_uuid
            server = scalar("SELECT CONCAT(@@hostname, ':', @@port, ':', @@datadir)")
        return Identity("mysql", str(server), str(scalar("SELECT DATABASE()")))
    if dialect == "sqlite":
        rows = connection.exec_driver_sql("PRAGMA database_list").all()
        main = next((row[2] for row in rows if row[1] == "main"), "")
        found = sqlite_file(main) if main else None
        if found is not None:
            return found
    url = connection.engine.url
    return Identity(dialect, f"{url.host}:{url.port}", str(url.database))


def shares_tables(history: Identity, audited: Identity, audited_schemas: set[str]) -> bool:
    """Whether a history at `history` would write where the audit reads: the same database,
    and (PostgreSQL) a schema the audit reads — a history in a schema of its own is apart."""
    if not history.same_database(audited):
        return False
    if history.kind != "postgresql":
        return True
    return history.schema is not None and history.schema in audited_schemas
