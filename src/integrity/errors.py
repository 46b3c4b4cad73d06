"""The exception hierarchy: one root, and errors that say where to look.

A bad audit file (ConfigError) is a different thing from a database that
cannot be read (SourceError) and from a check that could not be computed
(CheckError); none of them is a failed check. No message built here may carry
a password: SourceError scrubs the secrets it is given.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class IntegrityError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(IntegrityError):
    """An audit definition is invalid. Names the file, the line and the path inside it."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None,
                 line: int | None = None, column: int | None = None):
        self.message = message
        self.file = file
        self.path = path
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<audit>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__(errors[0].message, file=errors[0].file, path=errors[0].path,
                         line=errors[0].line, column=errors[0].column)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


class SourceError(IntegrityError):
    """A database or dataset could not be read. Never carries a password."""

    def __init__(self, message: str, *, secrets: tuple[str, ...] = ()):
        super().__init__(scrub(message, secrets))


class CheckError(IntegrityError):
    """A check could not be computed on the data it was given (missing column, bad type)."""


class OutputError(IntegrityError):
    """A report could not be written. `written`: the reports that were."""

    def __init__(self, message: str, written: dict | None = None):
        super().__init__(message)
        self.written = written or {}


def scrub(message: str, secrets: tuple[str, ...] | list[str]) -> str:
    """Replace every secret (raw and URL-encoded) in a message by '***'."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            message = message.replace(form, "***")
    return message


# Drivers also take credentials as query parameters (?password=, ?sslpassword=, ?token=);
# web APIs as ?key= (Google), ?sig= (Azure SAS), ?code= (Azure Functions), ?signature=.
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|api_?key|credential|signature|"
                               r"^(key|sig|code|auth)$", re.IGNORECASE)
_MASK = "MASKEDSECRET"


def secret_parameter(name: str) -> bool:
    """Whether a URL query parameter of this name looks like it carries a secret."""
    return bool(_SECRET_PARAMETER.search(name))


def url_secrets(url: URL) -> tuple[str, ...]:
    """Every secret a database URL carries: its password and its secret-looking parameters."""
    found = [url.password] if url.password else []
    for name, value in url.query.items():
        if secret_parameter(name):
            found += [value] if isinstance(value, str) else list(value)
    return tuple(str(secret) for secret in found if secret)


def masked_url(url: URL) -> str:
    """The URL to show: `postgresql+psycopg://auditor:***@db/app?sslpassword=***`."""
    hidden = {name: _MASK for name in url.query if secret_parameter(name)}
    shown = url.update_query_dict(hidden) if hidden else url
    return shown.render_as_string(hide_password=True).replace(_MASK, "***")
