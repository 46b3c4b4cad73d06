"""HTTP with a total deadline: one exchange, and a wait that cannot outlast its time.

A socket timeout bounds each read, not the exchange: a server that trickles
one byte at a time never trips it and could hold a run for ever. `within`
runs an action in a worker thread and stops waiting after a number of
seconds in all. `request` makes one HTTP exchange with the standard library
and returns every answer, 4xx and 5xx included, with where it came from
after redirects. Notifications post with them; the `http` check probes with
them.

Nothing here words a failure or logs: callers say what went wrong in their
own terms and keep their secrets out of it. The caller's `headers` go to the
URL's own origin only: a redirect to another scheme, host or port goes
without them (a bearer token is not handed to whoever a redirect names).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from integrity import __version__

MAX_REDIRECTS = urllib.request.HTTPRedirectHandler.max_redirections  # urllib's own: 10


class Overran(Exception):
    """The action did not finish in time; its worker is left behind (a daemon thread)."""


def within(seconds: float, action: Callable[[], Any], name: str = "integrity-http") -> Any:
    """`action()`'s value, or its exception — unless it takes more than `seconds` in all:
    then Overran. The worker is a daemon: an abandoned exchange (its socket still
    trickling) cannot keep the process alive."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 — handed to the waiting thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    worker.join(max(0.0, seconds))
    if worker.is_alive():
        raise Overran()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@dataclass
class Response:
    status: int
    reason: str
    url: str          # where the answer came from: the last URL of a redirect chain
    redirects: int    # how many were followed
    body: bytes       # at most the `limit` asked for
    truncated: bool   # the body was longer than `limit`


def request(url: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float, context: Any = None,
            max_redirects: int = MAX_REDIRECTS, limit: int = 0) -> Response:
    """One HTTP exchange. Any HTTP answer is a Response (a status is the caller's to
    judge); no answer at all raises what urllib raises — URLError (refused, DNS, TLS),
    TimeoutError or another OSError, http.client.HTTPException. `timeout` bounds each
    socket wait (wrap the call in `within` for a total); `context`: the ssl.SSLContext of
    https; `limit`: how many bytes of the body to read (0: none). A redirect beyond
    `max_redirects` is not followed: its 3xx is the answer."""
    headers = dict(headers or {})
    redirects = _Redirects(max_redirects, list(headers))
    opener = urllib.request.build_opener(redirects, urllib.request.HTTPSHandler(context=context))
    outgoing = urllib.request.Request(url, data=body, method=method, headers={
        "User-Agent": f"integrity/{__version__}", **headers})
    try:
        with opener.open(outgoing, timeout=timeout) as answer:
            data = answer.read(limit + 1) if limit else b""
            return Response(answer.status, answer.reason, answer.url, redirects.followed,
                            data[:limit], len(data) > limit)
    except urllib.error.HTTPError as error:  # a 4xx or 5xx, or a redirect not followed
        with error:
            data = error.read(limit + 1) if limit else b""
        return Response(error.code, str(error.reason), error.url, redirects.followed,
                        data[:limit], len(data) > limit)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, counted, stopped after `limit`, and without the caller's
    headers once they leave the first URL's origin."""

    def __init__(self, limit: int, private: list[str]):
        self.limit, self.private, self.followed = limit, private, 0
        # urllib's own caps (4 visits of one URL, 10 in all) would stop a chain after
        # counting it as followed: `limit` alone decides.
        self.max_repeats = self.max_redirections = limit + 1

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in self.private:
                # urllib keeps names capitalized; the next hop copies this request's
                # headers, so once dropped they stay dropped.
                new.remove_header(name.capitalize())
        return new

    def http_error_302(self, req, fp, code, msg, headers):
        if self.followed >= self.limit:
            return None  # not followed: urllib raises this answer as an HTTPError
        self.followed += 1
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(),
            parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower()))
