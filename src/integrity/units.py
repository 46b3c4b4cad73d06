"""Small value languages of the audit file: durations, percentages, thresholds.

They are parsed once, at validation time, into plain values so that a typo
("5 mins", ">> 3") is a config error with a location, never a runtime crash.
This module must stay import-light: `integrity validate` depends on it.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """'300s', '5m', '1.5h', '7d', '2w', or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h, 7d")
    if seconds < 0 or math.isinf(seconds) or math.isnan(seconds):
        raise ValueError(f"invalid duration {value!r}: must be zero or more")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta | float | None) -> str:
    """The shortest exact spelling: 300s -> '5m', 5400s -> '1.5h'."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = seconds / size
            text = f"{amount:.1f}".rstrip("0").rstrip(".")
            return f"{sign}{text}{unit}"
    return f"{sign}{seconds:g}s"


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
_THRESHOLD = re.compile(
    r"^\s*(?:(count|rate|value)\s*)?(<=|>=|==|!=|<|>|=)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*(%?)\s*$",
    re.IGNORECASE,
)


_RELATIVE = re.compile(
    r"^\s*(<=|>=|==|!=|<|>|=)\s*(\d+(?:\.\d+)?)\s*(%|x|×)\s*(?:of\s+)?(?:the\s+)?baseline\s*$",
    re.IGNORECASE)


@dataclass(frozen=True)
class Threshold:
    """A bound such as '> 5%' or 'count > 10', breached when the comparison holds.

    `measure` is what is compared: 'count' (violating rows), 'rate' (violations
    over population) or 'value' (a metric). A percent sign means a fraction.
    """

    measure: str
    op: str
    value: float
    text: str
    relative: bool = False  # the bound is `value` times a baseline from history

    def breached(self, observed: float | None, baseline: float | None = None) -> bool:
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return False
        if self.relative and baseline is None:
            return False  # no baseline: the caller says so, it is not a breach
        bound = self.value * baseline if self.relative else self.value
        return _OPERATORS[self.op](observed, bound)

    def __str__(self) -> str:
        return self.text


def parse_threshold(value: Any, *, default_measure: str = "count") -> Threshold:
    """'> 0', '>= 5%', 'rate > 0.02', 'count > 10', '< 90%', '< 50% of baseline', '> 2x baseline'.

    Without a measure word a percentage means 'rate' (or the metric value for
    metric checks) and a plain number means `default_measure`.
    """
    if isinstance(value, Threshold):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"invalid threshold {value!r}: use e.g. '> 0', '> 5%', 'count >= 10'")
    if isinstance(value, (int, float)):
        return Threshold(default_measure, ">", float(value), f"> {value:g}")
    relative = _RELATIVE.match(value)
    if relative:
        if default_measure != "value":
            raise ValueError(f"invalid threshold {value!r}: baselines apply to metric checks")
        op, number, unit = relative.groups()
        factor = float(number) / 100 if unit == "%" else float(number)
        return Threshold("value", "==" if op == "=" else op, factor, " ".join(value.split()),
                         relative=True)
    match = _THRESHOLD.match(value)
    if not match:
        raise ValueError(f"invalid threshold {value!r}: use e.g. '> 0', '> 5%', 'count >= 10'")
    measure, op, number, percent = match.groups()
    amount = float(number) / (100 if percent else 1)
    if measure is None:
        measure = "rate" if percent and default_measure == "count" else default_measure
    measure = measure.lower()
    if default_measure == "value" and measure != "value":
        raise ValueError(f"invalid threshold {value!r}: a metric is compared as a value, "
                         f"write e.g. '< 90%' or '> 2.5'")
    if default_measure != "value" and measure == "value":
        raise ValueError(f"invalid threshold {value!r}: this check counts violations; "
                         f"compare 'count' or 'rate'")
    return Threshold(measure, "==" if op == "=" else op, amount, " ".join(value.split()))


def parse_fraction(value: Any) -> float:
    """'5%' -> 0.05, 0.05 -> 0.05."""
    if isinstance(value, bool):
        raise ValueError(f"invalid fraction {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                return float(text[:-1]) / 100
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"invalid fraction {value!r}: use e.g. 0.05 or '5%'")


# The text times integrity reads, alike on both engines and every database: an ISO 8601
# date, optionally a time after "T" or a space, optionally an offset right after it (Z,
# +02, +0200, +02:00). Anything else is no time ("unparseable"), never an error. The
# patterns run in Python, PostgreSQL and MariaDB/MySQL as they are.
_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_CLOCK = r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?)?"
_OFFSET = r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)"
ISO_TIME = f"^{_DATE}{_CLOCK}{_OFFSET}?$"
ISO_TIME_WITH_OFFSET = f"^{_DATE}{_CLOCK}{_OFFSET}$"
OFFSET_AT_END = f"{_OFFSET}$"  # only ever applied to a time ISO_TIME_WITH_OFFSET matched


# ---------------------------------------------------------------------------
# A watch's sign-off criteria: "< 1% in every run", "not worse than 2 points".

_OVER = {"in every run": "every", "every run": "every", "in the last run": "last",
         "the last run": "last", "on average": "average", "in average": "average"}


@dataclass(frozen=True)
class RunCondition:
    """A bound a metric's value must meet over a watch's runs: in every run (default), on
    average, or in the last run. Met when the comparison holds."""

    bound: Threshold
    over: str  # every / last / average
    text: str

    def holds(self, value: float | None) -> bool:
        return value is not None and self.bound.breached(value)

    def __str__(self) -> str:
        return self.text


def parse_run_condition(value: Any) -> RunCondition:
    """'< 1%', '< 1% in every run', '<= 500 on average', '> 95% in the last run'."""
    if isinstance(value, RunCondition):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"invalid condition {value!r}: use e.g. '< 1% in every run'")
    text = " ".join(str(value).split())
    over, bound = "every", text
    for words, name in _OVER.items():
        if text.lower().endswith(" " + words):
            over, bound = name, text[:-len(words) - 1].strip()
            break
    try:
        threshold = parse_threshold(bound, default_measure="value")
    except ValueError:
        raise ValueError(f"invalid condition {value!r}: use e.g. '< 1% in every run', "
                         f"'<= 500 on average', '> 95% in the last run'") from None
    if threshold.relative:
        raise ValueError(f"invalid condition {value!r}: compare with the deploy's baseline "
                         f"under compare_to_baseline")
    return RunCondition(threshold, over, text)


_COMPARISON = re.compile(
    r"^\s*not\s+(worse|lower|higher)\s+(?:than\s+(?:the\s+)?baseline\s+)?(?:by\s+more\s+)?"
    r"than\s+(\d+(?:\.\d+)?)\s*(points?|pp|%)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class BaselineComparison:
    """How far a metric may move from its value at the deploy (hour 0) in any run of the
    watch: `points` (percentage points of a rate: 2 points = 0.02), `percent` (of the
    baseline value) or `absolute` (the metric's own unit), in the `direction` that is
    worse — `lower`, `higher`, or `worse` (decided from the check's own bounds)."""

    direction: str
    amount: float
    unit: str
    text: str

    def allowed(self, baseline: float) -> float:
        if self.unit == "points":
            return self.amount / 100
        if self.unit == "percent":
            return abs(baseline) * self.amount / 100
        return self.amount

    def __str__(self) -> str:
        return self.text


def parse_baseline_comparison(value: Any) -> BaselineComparison:
    """'not worse than 2 points', 'not lower than 5%', 'not higher than 200'."""
    if isinstance(value, BaselineComparison):
        return value
    match = _COMPARISON.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid comparison {value!r}: use e.g. 'not worse than 2 points' "
                         f"(percentage points), 'not lower than 5%' (of the baseline) or "
                         f"'not higher than 200' (the metric's unit)")
    direction, amount, unit = match.groups()
    unit = {"point": "points", "points": "points", "pp": "points", "%": "percent",
            None: "absolute"}[unit.lower() if unit else None]
    return BaselineComparison(direction.lower(), float(amount), unit, " ".join(value.split()))
