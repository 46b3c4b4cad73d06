"""What the audit's database role could do if every other layer failed.

integrity never writes to the audited database, by mechanism (see `sources`
and `usersql`). The role it logs in as is the last line of defence, and only
the team can give it: README recommends one that may only SELECT. This module
asks the server, at the start of every run, whether the role can write — and
the run says so on the console and in every report when it can:

- PostgreSQL: superuser; membership of `pg_write_server_files`,
  `pg_execute_server_program` or `pg_read_server_files`; INSERT, UPDATE,
  DELETE or TRUNCATE on any table of the schemas the audit reads;
- MariaDB/MySQL: grants (`SHOW GRANTS`) of FILE, SUPER, ALL PRIVILEGES or any
  write privilege (INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, …).

SQLite has no roles: the file is opened read-only and file permissions are the
last line there. Reads only; a role that may not even read the catalog is said
so, never an error.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

ADVICE = ("integrity writes nothing by its own mechanisms, but a SELECT-only role is the last "
          "line of defence (README: What to grant the audit user)")

_SERVER_ROLES = ("pg_write_server_files", "pg_execute_server_program", "pg_read_server_files")
_MYSQL_WRITES = re.compile(
    r"\b(ALL PRIVILEGES|FILE|SUPER|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|INDEX|"
    r"TRIGGER|EVENT|CREATE ROUTINE|ALTER ROUTINE|EXECUTE|LOCK TABLES|RELOAD|SHUTDOWN|"
    r"GRANT OPTION|CREATE USER|PROCESS)\b")


def write_warning(connection: sa.Connection, schemas: set[str | None]) -> str | None:
    """One line saying what the role can do beyond reading, or None when it can only read.

    `schemas`: the schemas the audit reads (None: the connection's default)."""
    dialect = connection.dialect.name
    try:
        with connection.begin_nested():
            if dialect == "postgresql":
                found = _postgresql(connection, schemas)
            elif dialect in {"mysql", "mariadb"}:
                found = _mysql(connection)
            else:
                return None
    except sa.exc.DBAPIError:
        return ("could not read what the audit role may do (the catalog is not readable); "
                + ADVICE)
    if not found:
        return None
    return f"the audit role can write: {'; '.join(found)}. {ADVICE}"


def _postgresql(connection: sa.Connection, schemas: set[str | None]) -> list[str]:
    role, superuser = connection.execute(sa.text(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")).one()
    found = [f"{role} is a superuser"] if superuser else []
    members = connection.execute(sa.text(
        "SELECT name FROM unnest(CAST(:roles AS text[])) AS name "
        "WHERE pg_has_role(current_user, name, 'MEMBER') ORDER BY name"),
        {"roles": list(_SERVER_ROLES)}).scalars().all()
    if members and not superuser:
        found.append(f"member of {', '.join(members)}")
    names = sorted({schema for schema in schemas if schema} | (
        {connection.execute(sa.text("SELECT current_schema()")).scalar()} if None in schemas
        else set()) - {None})
    writable = connection.execute(sa.text(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(CAST(:schemas AS text[])) "
        "AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') "
        "ORDER BY 1"), {"schemas": names}).scalars().all()
    if writable and not superuser:
        shown = ", ".join(writable[:3]) + (", …" if len(writable) > 3 else "")
        found.append(f"INSERT/UPDATE/DELETE/TRUNCATE on {len(writable)} table(s) ({shown})")
    return found


def _mysql(connection: sa.Connection) -> list[str]:
    found = []
    for (grant,) in connection.exec_driver_sql("SHOW GRANTS").all():
        head = str(grant).split(" ON ", 1)[0].removeprefix("GRANT ")
        privileges = sorted(set(_MYSQL_WRITES.findall(head)))
        if privileges:
            target = str(grant).split(" ON ", 1)[1].split(" TO ", 1)[0] if " ON " in grant \
                else "?"
            found.append(f"{', '.join(privileges)} on {target}")
    return found
