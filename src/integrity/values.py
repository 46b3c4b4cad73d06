"""How a value is read, the same in both engines.

The pandas engine calls these on the values it pulled; on SQLite the SQL
engine registers them as SQL functions (`install_sqlite_functions`), so a
pushed-down check reads a value exactly as the pandas engine does:

- `normalise_one`: the normalisers of `normalize:` (duplicates). `trim`
  strips ASCII white space, `lower` is Unicode lower-case, `email` is both,
  `digits` keeps ASCII 0-9, `phone` is E.164 by libphonenumber. An empty
  result is no value (None). PostgreSQL and MariaDB mirror every rule but
  `phone` in SQL (pushdown).
- `number`: a value as a number, as `pd.to_numeric(errors="coerce")`.
- `epoch_ms`: a text time (units.ISO_TIME; naive is UTC) as milliseconds
  since the epoch, None when it is no time.
- `percentile`: the continuous percentile of some numbers, as PostgreSQL's
  `percentile_cont` computes it, digit for digit (SQLite's
  `integrity_percentile` aggregate).

Both `sources` (which installs the functions on each SQLite connection) and
`pushdown` (which calls them) build on this module; it imports neither.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from functools import lru_cache

from integrity.units import ISO_TIME

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def install_sqlite_functions(dbapi_connection) -> None:
    """Deterministic Python functions the SQL engine calls on SQLite."""

    def normalise(value, steps, region):
        if value is None:
            return None
        return normalise_one(value, steps.split(","), region or None)

    dbapi_connection.create_function("integrity_normalise", 3, normalise, deterministic=True)
    dbapi_connection.create_function("integrity_epoch_ms", 1, epoch_ms, deterministic=True)
    dbapi_connection.create_function("integrity_number", 1, number, deterministic=True)
    dbapi_connection.create_aggregate("integrity_percentile", 2, _Percentile)
    dbapi_connection.create_aggregate("integrity_key_checksum", -1, _KeyChecksum)


class _KeyChecksum:
    """integrity_key_checksum(column, ...): the sum, modulo 2**64, of a 64-bit hash of each
    row's values (text, each marked, a null otherwise: '' is not null) — as text: what the
    other databases' sums of hashes are for."""

    def __init__(self):
        self.total = 0

    def step(self, *values) -> None:
        import hashlib

        text = "\x1f".join("\x1e" if value is None else f"\x1d{value}" for value in values)
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % 2 ** 64

    def finalize(self) -> str:
        return str(self.total)


class _Percentile:
    """integrity_percentile(value, fraction): `percentile` of a group's values, read as
    numbers (`number`); NULL when none is."""

    def __init__(self):
        self.numbers: list[int | float] = []
        self.fraction = 0.5

    def step(self, value, fraction) -> None:
        self.fraction = fraction
        value = number(value)
        if value is not None:
            self.numbers.append(value)

    def finalize(self) -> float | None:
        return percentile(self.numbers, self.fraction)


# ---------------------------------------------------------------------------
# Normalisers.

_ASCII_SPACE = " \t\n\r\f\v"
_NOT_DIGIT = re.compile(r"[^0-9]")


def normalise_one(value, steps: list[str], region: str | None) -> str | None:
    """One value through the normalisers, in order; an empty result is None."""
    text = str(value)
    for step in steps:
        if step in {"trim", "email"}:
            text = text.strip(_ASCII_SPACE)
        if step in {"lower", "email"}:
            text = text.lower()
        if step == "digits":
            text = _NOT_DIGIT.sub("", text)
        if step == "phone":
            text = e164(text, region) or ""
    return text or None


@lru_cache(maxsize=200_000)
def e164(raw: str, region: str | None) -> str | None:
    """The number in E.164 (+447700900123), or its digits when it cannot be parsed."""
    import phonenumbers

    text = raw.strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    digits = "".join(ch for ch in text if ch.isdigit())
    return ("+" + digits if text.startswith("+") else digits) or None


# ---------------------------------------------------------------------------
# Numbers and times.


def number(value) -> int | float | None:
    """A value as a number the way the pandas engine reads a measure (`pd.to_numeric`,
    errors coerced), None when it is none."""
    if value is None or isinstance(value, (int, float)):
        return value
    import pandas as pd

    parsed = pd.to_numeric(pd.Series([value], dtype=object), errors="coerce").iloc[0]
    return None if pd.isna(parsed) else float(parsed)


def percentile(numbers: list[int | float], fraction: float) -> float | None:
    """The continuous percentile (linear interpolation) of `numbers`, None without any.

    Sorted x[0..n-1], h = (n − 1)·fraction: x[⌊h⌋] + (h − ⌊h⌋)·(x[⌈h⌉] − x[⌊h⌋]), in
    this order of operations, as PostgreSQL's percentile_cont and pandas' grouped
    quantile(interpolation="linear") compute it (numpy's, above the midpoint, computes
    x[⌈h⌉] − (1 − t)·(…) and may differ in the last digit)."""
    if not numbers:
        return None
    ordered = sorted(numbers)
    position = (len(ordered) - 1) * fraction
    below, above = math.floor(position), math.ceil(position)
    low = float(ordered[below])
    if below == above:
        return low
    return low + (float(ordered[above]) - low) * (position - below)


_ISO = re.compile(ISO_TIME)


def epoch_ms(value) -> int | None:
    """Milliseconds since the epoch of a text time (units.ISO_TIME; naive is UTC, as the
    sql engine on SQLite runs only UTC datasets), None when it is no time."""
    return _epoch_ms(value) if isinstance(value, str) else _epoch_ms_uncached(value)


@lru_cache(maxsize=65_536)
def _epoch_ms(value: str) -> int | None:
    """SQLite calls this once per row and check: times repeat (hourly metrics, a day's
    events), so each distinct text is parsed once."""
    return _epoch_ms_uncached(value)


def _epoch_ms_uncached(value) -> int | None:
    text = str(value).strip() if value is not None else ""
    if not _ISO.match(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # 02-30: the pattern's shape, not a date
        return None
    delta = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + round(delta.microseconds / 1000)
