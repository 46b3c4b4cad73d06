"""HTTP: a health endpoint answers, says it is healthy, and says so quickly (seed 002).

"Check health endpoint: `curl https://…/health`", expecting `{"status": "ok",
"services": {"database": true, …}}`; "if database shows false: wait 30 seconds
and retry … if persists >2 minutes: alert team".

An attempt sends one `method` request to `url` and passes when the answer's
status is one of `expect_status`; when `expect` is given, the body parses as
JSON and each dotted path (`services.database`; `checks.0.status` for a list
item) holds exactly its value — `true` is not `1`, `"1"` is not `1`, an absent
path is `missing`; and the exchange, from the request to the end of the body
with any redirects, took at most `max_latency`. A failing attempt is tried
again after `retry_delay`, up to `retries` times, and the check is violated
only when the last attempt fails too: `retries: 4, retry_delay: 30s` is seed
002's "persists over 2 minutes".

The violations are the failed expectations of the last attempt, one row each:
`expectation` (a path of `expect`, `HTTP status`, `response body` when it is not
JSON, `response time`, or `HTTP response` when there was none), `expected`,
`found` — `services.database`, `true`, `false`. No answer at all — connection
refused, a DNS failure, a TLS failure, no complete answer within `timeout` — is
one `HTTP response` row saying so, not an audit error: the endpoint being down
is what the check looks for. The
check's value is the last attempt's latency in milliseconds; notes say how
many attempts it took ("failed 3 times, 30s apart; last: HTTP 503") and where
redirects led (at most 5 are followed; the final URL is shown without its
query string).

`timeout` bounds an attempt in all, not each socket read, and is cut to what
is left of the run's `--timeout`; a probe that the run's timeout cuts short is
an error of the check, as for any check that cannot finish. Certificates are
verified (`verify_tls`), against `ca_file` when given. Every `headers` value is
a secret, and so is a `url` with credentials or a token: they must come from
the environment (`${VAR}`), go to the URL's own origin only (a redirect
elsewhere goes without the headers) and never appear in reports, notes, errors
or alerts; the URL is shown without credentials or query string.

The probe is about the present: the run's `--now` does not change it. It reads
no dataset and runs alike on both engines, before the audit's database session
opens: its retries never hold the database's snapshot, and its answer stands
when connecting to the database fails.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BeforeValidator, Field, field_validator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Duration, from_environment
from integrity.errors import CheckError, scrub, secret_parameter
from integrity.units import format_duration

MAX_REDIRECTS = 5
BODY_LIMIT = 1 << 20  # a health answer is small; a larger body is not read whole
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # a header name (RFC 9110)
_MISSING = object()
# What a row names besides the paths of `expect` (which may not take these names).
STATUS, RESPONSE, BODY, LATENCY = "HTTP status", "HTTP response", "response body", "response time"


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


StatusCode = Annotated[int, Field(ge=100, le=599)]


class HttpConfig(CheckConfig):
    kind: Literal["http"] = Field(description="Selects this check.")
    url: str = Field(description=(
        "The endpoint, `http://` or `https://`, e.g. `https://api.example.com/health`. A URL "
        "with credentials (`user:password@`) or a token in its query string is a secret: "
        "write `${HEALTH_URL}` (or `?token=${HEALTH_TOKEN}`) and export it. Required."))
    method: Literal["GET", "HEAD"] = Field("GET", description=(
        "`GET`, or `HEAD` (no body, so no `expect`). Default `GET`."))
    headers: dict[str, str] = Field({}, description=(
        "Request headers, e.g. `{Authorization: \"Bearer ${HEALTH_TOKEN}\"}`. Every value is "
        "a secret: it must come from the environment, is sent to the URL's origin only and "
        "is never shown. Default: none."))
    expect_status: Annotated[list[StatusCode], BeforeValidator(_one_or_more),
                             Field(min_length=1)] = Field([200], description=(
                                 "The status code that passes, or a list of them "
                                 "(`[200, 204]`); redirects are followed first. Default 200."))
    expect: dict[str, Any] = Field({}, description=(
        "What the JSON body must say: dotted paths to exact values, e.g. `{status: ok, "
        "services.database: true}` (`checks.0.status`: a list's first item). Default: none "
        "(the body need not be JSON)."))
    max_latency: Duration | None = Field(None, description=(
        "The longest an attempt may take, from the request to the end of the body, "
        "redirects included; slower fails the attempt. Default: not set."))
    timeout: Duration = Field(timedelta(seconds=10), description=(
        "The total time one attempt may take (the whole exchange, not each read) before it "
        "counts as no answer; cut to what is left of the run's `--timeout`. Default 10s."))
    retries: Annotated[int, Field(ge=0, le=10)] = Field(2, description=(
        "How many times a failed attempt is tried again before the check fails, 0 to 10. "
        "Default 2."))
    retry_delay: Duration = Field(timedelta(seconds=30), description=(
        "The wait before each retry: seed 002's \"wait 30 seconds and retry\". Default 30s."))
    verify_tls: bool = Field(True, description=(
        "Verify an https endpoint's certificate and host name; a failure is no answer. "
        "Default true; `false` accepts any certificate."))
    ca_file: str | None = Field(None, description=(
        "A CA certificate file (PEM) to trust, for an endpoint with a private certificate. "
        "Default: not set (the system's CAs)."))

    @field_validator("url")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if "${" in value:
            return value  # read from the environment at run time (`integrity validate`)
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 — raises on a port that is no number
        except ValueError:
            parts = None
        # The URL itself is never echoed: it may hold a secret from the environment.
        if parts is None or parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            raise ValueError("url must be an http:// or https:// address with a host, e.g. "
                             "https://api.example.com/health")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name")
            if any(character in text for character in "\r\n\0"):
                raise ValueError(f"the value of header {name} holds a line break or NUL")
        return value

    @field_validator("expect")
    @classmethod
    def _paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path, wanted in value.items():
            if not all(path.split(".")) or path in {STATUS, RESPONSE, BODY, LATENCY}:
                raise ValueError(f"{path!r} is not a dotted path such as services.database")
            if not _is_json(wanted):
                raise ValueError(f"{path}: expect a JSON value — text, a number, true, false, "
                                 f"null, a list or a mapping (quote a date)")
        return value


def _is_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json(item) for key, item in value.items())
    if isinstance(value, list):
        return all(map(_is_json, value))
    return value is None or isinstance(value, (str, bool, int, float))


@dataclass
class Attempt:
    """One exchange and the expectations it failed (none: it passed)."""

    failures: list[tuple[str, str, str]]  # (expectation, expected, found)
    status: int | None = None             # None: no answer
    latency_ms: float | None = None
    url: str | None = None                # where the answer came from
    redirects: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """`HTTP 503`, `HTTP 200, services.database: expected true, found false`, or why
        there was no answer."""
        if self.status is None:
            return self.failures[0][2]
        said = [f"{name}: expected {expected}, found {found}"
                for name, expected, found in self.failures if name != STATUS]
        return ", ".join([f"HTTP {self.status}", *said])


class Http(Check):
    """Does an endpoint answer, say it is healthy, and say so quickly?"""

    kind = "http"
    Config = HttpConfig
    config: HttpConfig
    reads_database = False

    @classmethod
    def validate(cls, config, audit):
        problems = []
        if config.where:
            problems.append((("where",), "an http check reads no dataset, so it takes no "
                                         "`where`"))
        if config.thresholds is not None:
            problems.append((("thresholds",), "an http check is judged by its `severity`: a "
                                              "failed last attempt takes it"))
        if config.method == "HEAD" and config.expect:
            problems.append((("expect",), "a HEAD answer has no body: use `method: GET` to "
                                          "check what the body says"))
        if config.ca_file and not config.verify_tls:
            problems.append((("ca_file",), "ca_file is for verifying certificates: drop it, "
                                           "or leave verify_tls true"))
        if not config.timeout:
            problems.append((("timeout",), "timeout must be more than 0s"))
        written = getattr(audit, "written", None)
        return problems + _literal_secrets(written if isinstance(written, dict) else {})

    def columns(self):
        return {}

    def sql_problems(self, dialect: str) -> list[str]:
        return []

    def measure(self, data) -> Measurement:
        source = getattr(data, "source", None)
        deadline = None if source is None else source.deadline
        context = self._tls()
        attempts: list[Attempt] = []
        while True:
            attempts.append(self._attempt(context, deadline, len(attempts) + 1))
            if attempts[-1].passed or len(attempts) > self.config.retries:
                break
            delay = self.config.retry_delay.total_seconds()
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise CheckError(self._scrub(
                    f"the run's --timeout leaves no time to try again "
                    f"({format_duration(delay)} after attempt {len(attempts)}: "
                    f"{attempts[-1].summary()})"))
            time.sleep(delay)
        return self._measurement(attempts)

    measure_sql = measure  # no database: the same probe on either engine

    def describe(self) -> str:
        config = self.config
        text = (f"{config.method} {shown(config.url)} must answer HTTP "
                f"{_statuses(config.expect_status)}")
        if config.expect:
            text += " with " + " and ".join(f"{path} = {_json(value)}"
                                            for path, value in config.expect.items())
            text += " in its JSON body"
        if config.max_latency is not None:
            text += f", within {format_duration(config.max_latency)}"
        text += f" (each attempt at most {format_duration(config.timeout)})."
        if config.retries:
            times = "once" if config.retries == 1 else f"{config.retries} times"
            text += (f" A failing attempt is tried again {times}, "
                     f"{format_duration(config.retry_delay)} later; only the last one counts.")
        if config.headers:
            text += f" Headers sent: {', '.join(config.headers)} (values not shown)."
        return text

    # -- one attempt ---------------------------------------------------------------

    def _tls(self):
        """The https context: verified against the system's CAs or `ca_file`, or not."""
        import ssl

        if not self.config.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=self.config.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise CheckError(f"cannot read ca_file {self.config.ca_file}: "
                             f"{getattr(error, 'strerror', None) or error}") from None

    def _attempt(self, context, deadline: float | None, number: int) -> Attempt:
        import http.client

        from integrity.web import Overran, request, within

        config = self.config
        budget = config.timeout.total_seconds()
        left = budget if deadline is None else min(budget, deadline - time.monotonic())
        if left <= 0:
            raise CheckError(f"the run's --timeout had passed before attempt {number}")

        def exchange():
            began = time.perf_counter()
            # Each socket wait gets a backstop just past the attempt's own total (`within`).
            answer = request(config.url, method=config.method, headers=dict(config.headers),
                             timeout=budget + 1, context=context, max_redirects=MAX_REDIRECTS,
                             limit=BODY_LIMIT)
            return answer, round((time.perf_counter() - began) * 1000, 1)

        try:
            answer, latency = within(left, exchange, name=f"integrity-{self.id}")
        except Overran:
            if left < budget:
                raise CheckError(f"the run's --timeout ended attempt {number}") from None
            return self._no_answer(f"no complete answer within "
                                   f"{format_duration(config.timeout)}")
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
            return self._no_answer(unreachable(error))
        except ValueError as error:  # urllib refuses the URL or a header
            raise CheckError(self._scrub(f"cannot send the request: {error}")) from None
        failures = []
        if answer.status not in config.expect_status:
            failures.append((STATUS, _statuses(config.expect_status), str(answer.status)))
        if config.expect:
            failures += _body_failures(answer, config.expect)
        bound = None if config.max_latency is None else config.max_latency.total_seconds() * 1000
        if bound is not None and latency > bound:
            failures.append((LATENCY, f"≤ {_milliseconds(bound)}", _milliseconds(latency)))
        return Attempt(failures, answer.status, latency, answer.url, answer.redirects)

    def _no_answer(self, reason: str) -> Attempt:
        return Attempt([(RESPONSE, f"HTTP {_statuses(self.config.expect_status)}", reason)])

    # -- the measurement -------------------------------------------------------------

    def _measurement(self, attempts: list[Attempt]) -> Measurement:
        import pandas as pd

        last, config = attempts[-1], self.config
        delay = format_duration(config.retry_delay)
        notes = []
        if last.passed and len(attempts) > 1:
            failed = "; ".join(f"attempt {number} failed ({attempt.summary()})"
                               for number, attempt in enumerate(attempts[:-1], start=1))
            notes.append(f"took {len(attempts)} attempts, {delay} apart: {failed}")
        elif not last.passed:
            notes.append(f"failed {len(attempts)} times, {delay} apart; last: {last.summary()}"
                         if len(attempts) > 1 else f"failed its only attempt: {last.summary()}")
        if last.redirects:
            plural = "s" if last.redirects > 1 else ""
            notes.append(f"followed {last.redirects} redirect{plural} to {shown(last.url)}")
            if last.redirects >= MAX_REDIRECTS and 300 <= (last.status or 0) < 400:
                notes.append(f"at most {MAX_REDIRECTS} redirects are followed: the answer "
                             f"there was another one (HTTP {last.status})")
        rows = pd.DataFrame(last.failures, columns=["expectation", "expected", "found"],
                            dtype="object")
        rows["found"] = [self._scrub(text) for text in rows["found"]]
        if last.status is None:
            value_text = f"no answer: {last.summary()}"
        else:
            value_text = f"HTTP {last.status} in {_milliseconds(last.latency_ms)}"
        return Measurement(violations=rows, violation_count=len(rows), population=None,
                           keys=["expectation"],
                           value=last.latency_ms,
                           value_text=self._scrub(value_text),
                           notes=[self._scrub(note) for note in notes])

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets())

    def secrets(self) -> list[str]:
        """Every header value (and its longer words: the token of `Bearer <token>`), and the
        URL's password, a username long enough to be a token, and secret-looking query
        values."""
        config = self.config
        found: list[str] = []
        for value in config.headers.values():
            found += [value, *(word for word in value.split() if len(word) >= 8)]
        parts = urlsplit(config.url)
        found += [parts.password or "", parts.username if len(parts.username or "") >= 8
                  else ""]
        found += [value for name, value in parse_qsl(parts.query) if secret_parameter(name)]
        return [secret for secret in found if secret]


# ---------------------------------------------------------------------------
# Words and values.


def shown(url: str | None) -> str:
    """The URL as reports show it: without credentials, query string or fragment."""
    parts = urlsplit(url or "")
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def unreachable(error: BaseException) -> str:
    """Why there was no HTTP answer, in a few words (never the URL: it may be secret)."""
    import http.client
    import socket
    import ssl
    import urllib.error

    reason: Any = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, str):
        return reason
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS: the certificate is not trusted ({reason.verify_message})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"DNS: the host name does not resolve ({reason.strerror})"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return f"{type(reason).__name__}: {reason}"


def _body_failures(answer, expect: dict[str, Any]) -> list[tuple[str, str, str]]:
    if answer.truncated:
        return [(BODY, "JSON", f"more than {BODY_LIMIT >> 20} MiB, not read")]
    try:
        document = json.loads(answer.body)
    except (ValueError, RecursionError):  # not JSON, not text, or nested past reason
        text = answer.body[:60].decode("utf-8", "replace")
        return [(BODY, "JSON", f"not JSON: {text!r}" if text.strip() else "an empty body")]
    failures = []
    for path, wanted in expect.items():
        found = _at(document, path)
        if found is _MISSING:
            failures.append((path, _json(wanted), "missing"))
        elif not _same(found, wanted):
            failures.append((path, _json(wanted), _json(found)))
    return failures


def _at(document: Any, path: str) -> Any:
    """The value at a dotted path: mapping keys, and list indexes (`checks.0.status`)."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdecimal() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _same(found: Any, wanted: Any) -> bool:
    """JSON equality: `true` is not `1` (as Python's `==` would have it), `1` is `1.0`."""
    if isinstance(found, bool) or isinstance(wanted, bool):
        return isinstance(found, bool) and isinstance(wanted, bool) and found == wanted
    if isinstance(found, (int, float)) and isinstance(wanted, (int, float)):
        return found == wanted
    if isinstance(found, dict) and isinstance(wanted, dict):
        return found.keys() == wanted.keys() and all(_same(found[k], wanted[k]) for k in found)
    if isinstance(found, list) and isinstance(wanted, list):
        return len(found) == len(wanted) and all(map(_same, found, wanted))
    return type(found) is type(wanted) and found == wanted


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 200 else text[:199] + "…"


def _statuses(codes: list[int]) -> str:
    return " or ".join(map(str, codes))


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _literal_secrets(written: dict) -> list[tuple[tuple, str]]:
    """Secrets written in the file itself: a header value, the URL's credentials or a
    secret-looking query value without a ${VARIABLE}."""
    problems = []
    url = written.get("url")
    if isinstance(url, str) and _literal_credentials(url):
        problems.append((("url",), "a secret must come from the environment: write "
                                   "${HEALTH_URL} (or only the token, ?token=${HEALTH_TOKEN}) "
                                   "and export it"))
    headers = written.get("headers")
    for name, value in (headers.items() if isinstance(headers, dict) else []):
        if isinstance(value, str) and not from_environment(value):
            variable = re.sub(r"[^A-Za-z0-9]+", "_", str(name)).upper()
            problems.append((("headers", name), f"a secret must come from the environment: "
                                                f"write ${{{variable}}} and export it (every "
                                                f"header value is a secret)"))
    return problems


def _literal_credentials(url: str) -> bool:
    parts = urlsplit(url.strip())
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and not from_environment(userinfo):
        return True
    return any(secret_parameter(name) and value and not from_environment(value)
               for name, value in parse_qsl(parts.query, keep_blank_values=True))
