"""The `http` check (seed 002's health endpoint) against a real loopback server: what an
attempt is, retries, latency, timeouts, no answer, TLS, redirects, and secrets that never
leave the environment."""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from conftest import audit_text, free_port, self_signed
from integrity.audit import parse_audit
from integrity.cli import main
from integrity.errors import ConfigError
from integrity.runner import engine_problems, run_audit

HEALTHY = {"status": "ok", "services": {"database": True, "supabase": True,
                                        "backgroundJobs": True},
           "timestamp": "2025-12-21T12:15:00.000Z", "uptime": 3600}
DEGRADED = {**HEALTHY, "services": {**HEALTHY["services"], "database": False}}
EXPECT = "{status: ok, services.database: true}"


def answer(status: int = 200, body=HEALTHY, delay: float = 0.0, location: str | None = None):
    """One scripted answer; `body` may be a function of the request's headers and path."""
    return {"status": status, "body": body, "delay": delay, "location": location}


class Endpoint(BaseHTTPRequestHandler):
    """Answers each path from its script, one step per request (the last step repeats)."""

    def do_GET(self):  # noqa: N802 — the http.server API
        self._answer()

    def do_HEAD(self):  # noqa: N802
        self._answer()

    def _answer(self):
        server = self.server
        path = self.path.split("?")[0]
        server.requests.append({"path": self.path, "method": self.command,
                                "headers": dict(self.headers)})
        script = server.script.get(path, [answer(404, {"error": "no such path"})])
        seen = sum(1 for request in server.requests if request["path"].split("?")[0] == path)
        step = script[min(seen, len(script)) - 1]
        if step["delay"] and server.stopping.wait(step["delay"]):
            return
        body = step["body"](dict(self.headers), self.path) if callable(step["body"]) else \
            step["body"]
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(step["status"])
            if step["location"]:
                self.send_header("Location", step["location"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


def serve(tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.script, server.requests, server.stopping = {}, [], threading.Event()
    scheme = "https" if tls is not None else "http"
    server.base = f"{scheme}://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def endpoint():
    server = serve()
    yield server
    stop(server)


@pytest.fixture
def audit_db(tmp_path):
    """An audited database with one table, for the freshness check beside the probe."""
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE heartbeat (id INTEGER, beatAt TEXT)")
        connection.execute("INSERT INTO heartbeat VALUES (1, '2026-01-30T12:00:00Z')")
    return f"sqlite:///{path}"


def probe(url: str, checks: str, *, environ=None, **options):
    """Run an audit of `checks` (YAML) on a database with one table; the result."""
    text = audit_text(url, "heartbeat: {table: heartbeat, key: id}", checks)
    audit = parse_audit(text, file="audit.yml", environ=environ or {})
    return run_audit(audit, sample_limit=0, **options)


def rows(check) -> list[tuple]:
    return [(row["expectation"], row["expected"], row["found"]) for row in check.sample]


def paths(server) -> list[str]:
    return [request["path"] for request in server.requests]


# ---------------------------------------------------------------------------
# An attempt, and retries.


def test_a_healthy_endpoint_passes_and_its_value_is_the_latency(endpoint, audit_db):
    endpoint.script["/health"] = [answer(200, HEALTHY)]
    began = time.perf_counter()
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", expect: {EXPECT}}}
        """).checks
    elapsed_ms = (time.perf_counter() - began) * 1000
    assert (check.status, check.violation_count, check.notes) == ("pass", 0, [])
    assert 0 < check.value < elapsed_ms
    assert check.value_text == f"HTTP 200 in {check.value:.0f} ms"
    assert paths(endpoint) == ["/health"]
    assert endpoint.requests[0]["method"] == "GET"
    assert check.description == (
        f"GET {endpoint.base}/health must answer HTTP 200 with status = \"ok\" and "
        f"services.database = true in its JSON body (each attempt at most 10s). A failing "
        f"attempt is tried again 2 times, 30s later; only the last one counts.")


def test_a_degraded_database_is_a_violation_after_every_retry(endpoint, audit_db):
    endpoint.script["/health"] = [answer(200, DEGRADED)]
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", expect: {EXPECT},
            retries: 2, retry_delay: 50ms}}
        """).checks
    assert (check.status, check.violation_count) == ("fail", 1)
    assert rows(check) == [("services.database", "true", "false")]
    assert check.key_columns == ["expectation"]
    assert check.notes == ["failed 3 times, 0.05s apart; last: HTTP 200, services.database: "
                           "expected true, found false"]
    assert paths(endpoint) == ["/health"] * 3


def test_degraded_then_recovered_within_the_retries_passes(endpoint, audit_db):
    endpoint.script["/health"] = [answer(503, DEGRADED), answer(200, HEALTHY)]
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", expect: {EXPECT},
            retries: 3, retry_delay: 50ms}}
        """).checks
    assert (check.status, check.violation_count) == ("pass", 0)
    assert check.notes == ["took 2 attempts, 0.05s apart: attempt 1 failed (HTTP 503, "
                           "services.database: expected true, found false)"]
    assert paths(endpoint) == ["/health"] * 2


def test_retries_wait_retry_delay_between_attempts(endpoint, audit_db):
    endpoint.script["/health"] = [answer(503)]
    began = time.perf_counter()
    probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", retries: 2,
            retry_delay: 300ms}}
        """)
    assert 0.6 <= time.perf_counter() - began < 2
    assert len(endpoint.requests) == 3


def test_an_unexpected_status_is_one_row(endpoint, audit_db):
    endpoint.script["/health"] = [answer(503, b"<html>Service Unavailable</html>")]
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", retries: 1,
            retry_delay: 50ms, severity: warning}}
        """).checks
    assert (check.status, rows(check)) == ("warn", [("HTTP status", "200", "503")])
    assert check.value_text.startswith("HTTP 503 in ")
    assert check.notes == ["failed 2 times, 0.05s apart; last: HTTP 503"]
    assert len(endpoint.requests) == 2


def test_expected_statuses_may_be_a_list_and_head_needs_no_body(endpoint, audit_db):
    endpoint.script["/health"] = [answer(204, b"")]
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", method: HEAD,
            expect_status: [200, 204], retries: 0}}
        """).checks
    assert (check.status, [r["method"] for r in endpoint.requests]) == ("pass", ["HEAD"])


def test_a_body_that_is_not_json_or_lacks_a_path(endpoint, audit_db):
    endpoint.script["/text"] = [answer(200, b"OK")]
    endpoint.script["/partial"] = [answer(200, {"status": 1, "services": [True]})]
    result = probe(audit_db, f"""
        - {{id: text, kind: http, url: "{endpoint.base}/text", expect: {EXPECT}, retries: 0}}
        - {{id: partial, kind: http, url: "{endpoint.base}/partial", retries: 0,
            expect: {{status: "1", services.database: true, services.0: true}}}}
        """)
    assert rows(result.check("text")) == [("response body", "JSON", "not JSON: 'OK'")]
    # JSON equality: the number 1 is not the text "1"; a path through a list takes an index.
    assert rows(result.check("partial")) == [("status", '"1"', "1"),
                                             ("services.database", "true", "missing")]


def test_slower_than_max_latency_fails_the_attempt(endpoint, audit_db):
    endpoint.script["/health"] = [answer(200, HEALTHY, delay=0.3)]
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", max_latency: 100ms,
            retries: 0}}
        """).checks
    (expectation, expected, found), = rows(check)
    assert (check.status, expectation, expected) == ("fail", "response time", "≤ 100 ms")
    assert 300 <= int(found.removesuffix(" ms")) < 1000
    assert check.value >= 300
    assert len(endpoint.requests) == 1


def test_a_hanging_endpoint_is_bounded_by_timeout(endpoint, audit_db):
    endpoint.script["/health"] = [answer(200, HEALTHY, delay=5)]
    began = time.perf_counter()
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", timeout: 300ms,
            retries: 1, retry_delay: 50ms}}
        """).checks
    assert time.perf_counter() - began < 1.5  # two attempts of 0.3 s and a pause
    assert rows(check) == [("HTTP response", "HTTP 200", "no complete answer within 0.3s")]
    assert (check.status, check.value, check.value_text) == (
        "fail", None, "no answer: no complete answer within 0.3s")
    assert len(endpoint.requests) == 2


def test_connection_refused_is_a_violation_not_an_audit_error(audit_db):
    port = free_port()  # nothing listens there
    result = probe(audit_db, f"""
        - {{id: health, kind: http, url: "http://127.0.0.1:{port}/health", retries: 1,
            retry_delay: 50ms}}
        """)
    check, = result.checks
    assert (result.errors, check.status, rows(check)) == (
        [], "fail", [("HTTP response", "HTTP 200", "connection refused")])
    assert check.notes == ["failed 2 times, 0.05s apart; last: connection refused"]


def test_no_answer_is_said_in_a_few_words():
    import http.client
    import urllib.error

    from integrity.checks.http import unreachable

    failures = [urllib.error.URLError(socket.gaierror(-2, "Name or service not known")),
                http.client.RemoteDisconnected("Remote end closed connection"),
                urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))]
    assert [unreachable(error) for error in failures] == [
        "DNS: the host name does not resolve (Name or service not known)",
        "the server closed the connection without answering", "connection refused"]


def test_the_runs_timeout_bounds_the_probe_and_errors_it(endpoint, audit_db):
    endpoint.script["/health"] = [answer(503)]
    began = time.perf_counter()
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health", retry_delay: 30s}}
        """, timeout=1.0).checks
    assert time.perf_counter() - began < 1.5
    assert check.status == "error"
    assert check.error == ("the run's --timeout leaves no time to try again (30s after "
                           "attempt 1: HTTP 503)")
    assert len(endpoint.requests) == 1


# ---------------------------------------------------------------------------
# Redirects and TLS.


def test_redirects_are_followed_and_the_note_names_where_without_the_query(endpoint, audit_db):
    endpoint.script["/old"] = [answer(301, b"", location="/health?key=abc")]
    endpoint.script["/health"] = [answer(200, HEALTHY)]
    endpoint.script["/loop"] = [answer(302, b"", location="/loop")]
    result = probe(audit_db, f"""
        - {{id: moved, kind: http, url: "{endpoint.base}/old", expect: {EXPECT}}}
        - {{id: loop, kind: http, url: "{endpoint.base}/loop", retries: 0}}
        """)
    moved, loop = result.checks
    assert (moved.status, moved.notes) == ("pass", [f"followed 1 redirect to "
                                                    f"{endpoint.base}/health"])
    assert rows(loop) == [("HTTP status", "200", "302")]
    assert loop.notes[1:] == [f"followed 5 redirects to {endpoint.base}/loop",
                              "at most 5 redirects are followed: the answer there was "
                              "another one (HTTP 302)"]
    assert paths(endpoint).count("/loop") == 6


def test_headers_do_not_follow_a_redirect_to_another_origin(endpoint, audit_db):
    other = serve()
    try:
        other.script["/health"] = [answer(200, HEALTHY)]
        endpoint.script["/same"] = [answer(302, b"", location="/health")]
        endpoint.script["/health"] = [answer(200, HEALTHY)]
        endpoint.script["/away"] = [answer(302, b"", location=f"{other.base}/health")]
        result = probe(audit_db, f"""
            - {{id: same, kind: http, url: "{endpoint.base}/same",
                headers: {{X-Api-Key: "${{API_KEY}}"}}}}
            - {{id: away, kind: http, url: "{endpoint.base}/away",
                headers: {{X-Api-Key: "${{API_KEY}}"}}}}
            """, environ={"API_KEY": "k-0123456789"})
        assert [check.status for check in result.checks] == ["pass", "pass"]
        assert [request["headers"].get("X-Api-Key") for request in endpoint.requests] == [
            "k-0123456789"] * 3
        assert [request["headers"].get("X-Api-Key") for request in other.requests] == [None]
    finally:
        stop(other)


def test_tls_is_verified_by_default_and_ca_file_trusts_a_private_certificate(tmp_path,
                                                                             audit_db):
    server = serve(self_signed(tmp_path, "endpoint"))
    try:
        server.script["/health"] = [answer(200, HEALTHY)]
        result = probe(audit_db, f"""
            - {{id: default, kind: http, url: "{server.base}/health", retries: 0}}
            - {{id: trusted, kind: http, url: "{server.base}/health",
                ca_file: "{tmp_path / 'endpoint.crt'}"}}
            - {{id: unverified, kind: http, url: "{server.base}/health", verify_tls: false}}
            """)
        default, trusted, unverified = result.checks
        (expectation, _, found), = rows(default)
        assert (default.status, expectation) == ("fail", "HTTP response")
        assert found.startswith("TLS: the certificate is not trusted (self"), found
        assert (trusted.status, unverified.status) == ("pass", "pass")
        assert len(server.requests) == 2  # the refused handshake never got to a request
    finally:
        stop(server)


def test_an_unreadable_ca_file_is_an_error_of_the_check(endpoint, audit_db, tmp_path):
    check, = probe(audit_db, f"""
        - {{id: health, kind: http, url: "{endpoint.base}/health",
            ca_file: "{tmp_path / 'missing.crt'}"}}
        """).checks
    assert check.status == "error"
    assert check.error.startswith(f"cannot read ca_file {tmp_path / 'missing.crt'}: ")
    assert endpoint.requests == []


# ---------------------------------------------------------------------------
# Beside the database's checks, on either engine.


@pytest.mark.parametrize("engine", ["pandas", "sql", "auto"])
def test_it_runs_alike_on_both_engines_in_the_files_order(endpoint, audit_db, engine):
    endpoint.script["/health"] = [answer(200, DEGRADED)]
    result = probe(audit_db, f"""
        - {{id: fresh, kind: freshness, dataset: heartbeat, time: beatAt, max_age: 1h}}
        - {{id: health, kind: http, url: "{endpoint.base}/health", expect: {EXPECT},
            retries: 0}}
        - {{id: stale, kind: freshness, dataset: heartbeat, time: beatAt, max_age: 1m}}
        """, engine=engine)
    assert [check.id for check in result.checks] == ["fresh", "health", "stale"]
    assert result.errors == []
    assert rows(result.check("health")) == [("services.database", "true", "false")]
    assert [check.engine for check in result.checks] == [
        "pandas" if engine == "pandas" else "sql", None, "pandas" if engine == "pandas" else "sql"]
    audit = parse_audit(audit_text(audit_db, "t: {table: t}", f"""
        - {{kind: http, url: "{endpoint.base}/health", engine: sql}}"""), file="a.yml")
    assert engine_problems(audit, "sqlite", "sql") == []


def test_the_probe_answers_when_the_database_cannot_be_reached(endpoint):
    endpoint.script["/health"] = [answer(200, HEALTHY)]
    url = f"postgresql+psycopg://auditor@127.0.0.1:{free_port()}/app"
    text = audit_text(url, "heartbeat: {table: heartbeat}", f"""
        - {{id: fresh, kind: freshness, dataset: heartbeat, time: beatAt, max_age: 1h}}
        - {{id: health, kind: http, url: "{endpoint.base}/health"}}
        """).replace(f"url: {url}", f"url: {url}\n  retries: 0")
    result = run_audit(parse_audit(text, file="a.yml"))
    assert [(check.id, check.status) for check in result.checks] == [
        ("fresh", "error"), ("health", "pass")]
    assert len(result.errors) == 1 and "refused" in result.errors[0]


# ---------------------------------------------------------------------------
# Secrets.

TOKEN = "tok-5f0c2a9e8d7b6c41"
QUERY_TOKEN = "q-81be2f6d0c9a4d57"


def test_secrets_never_reach_a_report_an_alert_or_the_console(endpoint, audit_db, tmp_path):
    # The endpoint echoes what it was sent — the worst case for a secret.
    endpoint.script["/health"] = [answer(403, lambda headers, path: {
        "status": f"denied: {headers.get('Authorization')} at {path}"})]
    audit = tmp_path / "health.yml"
    audit.write_text(audit_text(audit_db, "heartbeat: {table: heartbeat, key: id}", f"""
        - id: health
          kind: http
          url: "{endpoint.base}/health?token=${{HEALTH_QUERY_TOKEN}}"
          headers: {{Authorization: "Bearer ${{HEALTH_TOKEN}}"}}
          expect: {{status: ok}}
          retries: 0
        """) + 'notify:\n  - {channel: webhook, url: "${HOOK_URL}"}\n')
    outbox = tmp_path / "outbox.jsonl"
    result = CliRunner().invoke(main, [
        "run", str(audit), "-o", str(tmp_path / "out"), "--no-lock",
        "--history", f"sqlite:///{tmp_path / 'history.sqlite'}", "--notify-dry-run",
        str(outbox)], env={"HEALTH_TOKEN": TOKEN, "HEALTH_QUERY_TOKEN": QUERY_TOKEN,
                           "HOOK_URL": "https://hooks.example.com/x"},
        catch_exceptions=False)
    assert result.exit_code == 1, result.output
    sent = endpoint.requests[0]
    assert (sent["headers"]["Authorization"], sent["path"]) == (
        f"Bearer {TOKEN}", f"/health?token={QUERY_TOKEN}")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    check, = report["checks"]
    assert [(row["expectation"], row["found"]) for row in check["violations"]] == [
        ("HTTP status", "403"), ("status", '"denied: *** at /health?token=***"')]
    written = [result.output, outbox.read_text(), (tmp_path / "history.sqlite").read_bytes()]
    written += [path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert len(written) > 6 and '"value": "HTTP 403 in ' in outbox.read_text()
    for text in written:
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        assert TOKEN not in text and QUERY_TOKEN not in text


def errors(checks: str, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_audit(audit_text("sqlite:///x.db", "t: {table: t}", checks), file="a.yml",
                    environ=environ or {})
    return str(caught.value).splitlines()


def test_a_secret_written_in_the_file_is_refused_where_it_stands():
    assert errors("""
        - kind: http
          url: "https://auditor:hunter2@api.example.com/health"
        - kind: http
          id: token
          url: "https://api.example.com/health?full=1&token=abc123"
          headers: {Accept: application/json, Authorization: "Bearer ${TOKEN}"}
        """, {"TOKEN": "t"}) == [
        "a.yml:7:5: checks[0].url: a secret must come from the environment: write "
        "${HEALTH_URL} (or only the token, ?token=${HEALTH_TOKEN}) and export it",
        "a.yml:10:5: checks[1].url: a secret must come from the environment: write "
        "${HEALTH_URL} (or only the token, ?token=${HEALTH_TOKEN}) and export it",
        "a.yml:11:15: checks[1].headers.Accept: a secret must come from the environment: "
        "write ${ACCEPT} and export it (every header value is a secret)"]


def test_secrets_from_the_environment_are_accepted_and_validate_needs_none():
    checks = """
        - {kind: http, id: a, url: "https://auditor:${PASSWORD}@api.example.com/health"}
        - {kind: http, id: b, url: "https://api.example.com/health?full=1&token=${TOKEN}"}
        - {kind: http, id: c, url: "${HEALTH_URL}", headers: {X-Api-Key: "${KEY}"}}
        """
    environ = {"PASSWORD": "p", "TOKEN": "t", "HEALTH_URL": "https://u:p@h/x?key=k",
               "KEY": "k"}
    audit = parse_audit(audit_text("sqlite:///x.db", "t: {table: t}", checks), file="a.yml",
                        environ=environ)
    assert [check.id for check in audit.checks] == ["a", "b", "c"]
    deferred = parse_audit(audit_text("sqlite:///x.db", "t: {table: t}", checks),
                           file="a.yml", environ={}, deferred=True)
    assert deferred.deferred == ["PASSWORD", "TOKEN", "HEALTH_URL", "KEY"]


def test_settings_that_cannot_work_are_config_errors():
    assert errors("""
        - {kind: http, url: "ftp://api.example.com/health"}
        - {kind: http, id: b, url: "https://api.example.com/", method: HEAD, expect: {a: 1},
           where: {x: 1}, thresholds: {warn: "> 0"}, verify_tls: false, ca_file: ca.pem}
        - {kind: http, id: c, url: "https://api.example.com/", expect_status: 700,
           expect: {"a..b": 1}}
        - {kind: http, id: d, url: "https://api.example.com/", timeout: 0s}
        """) == [
        "a.yml:6:18: checks[0].url: url must be an http:// or https:// address with a "
        "host, e.g. https://api.example.com/health",
        "a.yml:8:6: checks[1].where: an http check reads no dataset, so it takes no `where`",
        "a.yml:8:21: checks[1].thresholds: an http check is judged by its `severity`: a "
        "failed last attempt takes it",
        "a.yml:7:72: checks[1].expect: a HEAD answer has no body: use `method: GET` to "
        "check what the body says",
        "a.yml:8:67: checks[1].ca_file: ca_file is for verifying certificates: drop it, or "
        "leave verify_tls true",
        "a.yml:9:58: checks[2].expect_status: input should be less than or equal to 599",
        "a.yml:10:6: checks[2].expect: 'a..b' is not a dotted path such as services.database",
        "a.yml:11:58: checks[3].timeout: timeout must be more than 0s"]


def test_a_secret_header_value_is_never_echoed_by_an_error():
    lines = errors("""
        - {kind: http, url: "https://api.example.com/", headers: {X-Key: "${KEY}"}}
        """, {"KEY": "line\nbreak-secret"})
    assert lines == ["a.yml:6:51: checks[0].headers: the value of header X-Key holds a line "
                     "break or NUL"]

