"""Shared fixtures: real databases, tiny tables, audits written to tmp_path.

PostgreSQL tests read INTEGRITY_TEST_POSTGRES_URL (a server where the user may
create databases). Without it they skip with the reason shown — unless CI=true,
where a missing or unreachable server is a failure, never a silent skip.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import textwrap
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from integrity.audit import parse_audit
from integrity.runner import run_audit

NOW = datetime(2026, 1, 30, 12, 30, tzinfo=timezone.utc)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _server_url(variable: str, what: str) -> str:
    url = os.environ.get(variable)
    if not url:
        message = f"{variable} is not set: no {what} server to test against"
        if IN_CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return url


SERVERS = {
    "postgresql": ("INTEGRITY_TEST_POSTGRES_URL", "PostgreSQL"),
    "mariadb": ("INTEGRITY_TEST_MARIADB_URL", "MariaDB"),
}


class Servers:
    """Creates throw-away databases on the test servers and drops them at the end."""

    def __init__(self):
        self.created: list[tuple[str, str]] = []

    def database(self, kind: str) -> str:
        variable, what = SERVERS[kind]
        server = _server_url(variable, what)
        name = f"integrity_test_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        quote = admin.dialect.identifier_preparer.quote
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {quote(name)}"))
        except sa.exc.OperationalError as error:
            message = f"cannot reach {what} at {variable}: {error.orig}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        finally:
            admin.dispose()
        self.created.append((server, name))
        url = sa.engine.make_url(server).set(database=name)
        return url.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for server, name in self.created:
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            quote = admin.dialect.identifier_preparer.quote
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)}{force}"))
            admin.dispose()


@pytest.fixture(scope="session")
def servers():
    registry = Servers()
    yield registry
    registry.drop_all()


@pytest.fixture(scope="session")
def postgres_database(servers) -> str:
    """A fresh, empty PostgreSQL database for this test session."""
    return servers.database("postgresql")


@pytest.fixture(scope="session")
def mariadb_database(servers) -> str:
    """A fresh, empty MariaDB database for this test session."""
    return servers.database("mariadb")


DATABASES = ["sqlite", "postgresql", "mariadb"]


def database_url(kind: str, servers: Servers, tmp_path: Path) -> str:
    """A new empty database of `kind` (a file for SQLite)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.sqlite'}"
    return servers.database(kind)


# ---------------------------------------------------------------------------
# Tiny databases for check tests.


class Database:
    """A real database holding a few hand-written tables."""

    def __init__(self, url: str):
        self.url = url

    def tables(self, **tables: list[dict] | pd.DataFrame) -> Database:
        engine = sa.create_engine(self.url)
        with engine.begin() as connection:
            for name, rows in tables.items():
                frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
                frame.to_sql(name, connection, if_exists="replace", index=False)
        engine.dispose()
        return self

    def execute(self, *statements: str) -> None:
        engine = sa.create_engine(self.url)
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
        engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'data.sqlite'}")


def audit_text(url: str, datasets: str, checks: str) -> str:
    return (f"connection:\n  url: {url}\n"
            f"datasets:\n{textwrap.indent(textwrap.dedent(datasets).strip(), '  ')}\n"
            f"checks:\n{textwrap.indent(textwrap.dedent(checks).strip(), '  ')}\n")


def run(db: Database, datasets: str, checks: str, *, now: datetime = NOW, **options):
    audit = parse_audit(audit_text(db.url, datasets, checks), file="test.yml")
    return run_audit(audit, now=now, sample_limit=options.pop("sample_limit", 0), **options)


def only(result, check_id: str | None = None):
    """The single check result (asserting it ran)."""
    check = result.checks[0] if check_id is None else result.check(check_id)
    assert check.status != "error", check.error
    return check


def keys(check) -> set:
    return set(check.violation_keys)


@pytest.fixture
def write_audit(tmp_path):
    def write(text: str, name: str = "audit.yml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


# ---------------------------------------------------------------------------
# A real HTTP server on loopback, recording what channels send (Slack, PagerDuty, webhooks).


class Recorder(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /fail 500, /hang sleeps past the client's timeout."""

    def do_POST(self):  # noqa: N802 — the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "body": body})
        if "/hang" in self.path:
            time.sleep(2)
        if "/trickle" in self.path:  # the answer one byte at a time: each read is quick
            answer = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"x" * 80 + b"\r\n\r\n"
            for byte in answer:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up, as it should
                time.sleep(0.2)
            return
        if "/moved" in self.path:  # a webhook that moved: the POST would become a GET
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        down = getattr(self.server, "down", False)  # a test may take the service down
        status = 500 if "/fail" in self.path or down else 202 if "/pd" in self.path else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# Seed 002's backend: /health healthy, /degraded with its database down.

HEALTHY = {"status": "ok", "services": {"database": True, "supabase": True,
                                        "backgroundJobs": True},
           "timestamp": "2026-01-30T12:15:00.000Z", "uptime": 3600}


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 — the http.server API
        body = HEALTHY if self.path == "/health" else {
            **HEALTHY, "services": {**HEALTHY["services"], "database": False}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def health():
    """The base URL of a loopback backend with seed 002's /health (and /degraded)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# A real SMTP server on loopback (aiosmtpd), with STARTTLS and a login.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed(folder: Path, name: str) -> ssl.SSLContext:
    """A server's TLS context with a self-signed certificate for localhost and 127.0.0.1,
    written to `folder/name.crt` for clients to trust (it is its own CA)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([
                       x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture
def smtp_server(tmp_path):
    """aiosmtpd with STARTTLS (a self-signed certificate) and AUTH required."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    context = self_signed(tmp_path, "smtp")
    cert_file = tmp_path / "smtp.crt"

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            self.messages.append(envelope)
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"auditor", b"s3cret-pass")
        return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 535 on failure

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            tls_context=context, require_starttls=True,
                            auth_required=True, auth_require_tls=True,
                            authenticator=authenticate)
    controller.start()
    yield controller.hostname, controller.port, cert_file, inbox
    controller.stop()
