"""Duplicates: "no duplicate leads" (seed 003) and double clicks (seed 000).

`duplicates` — rows sharing a (compound) key after normalisation: `email`
(trimmed, lower-case), `phone` (E.164, parsed with `default_region` for
national numbers), `lower`, `trim`, `digits`. Rows with a null (or empty)
key part are not compared, as in SQL. The violation count is the number of
*surplus* rows, Σ(group size − 1): a group of three is two violations. The
sample shows whole groups: each row carries `duplicate_group`, and
`duplicate_role` says which row is kept (the first by `keep_first_by`, then by
key) and which are surplus.

`duplicate_events` — the same (entity, channel, recipient …) within a time
window: rows equal on `by`, cut into bursts (each at most `window` after the
previous); in a burst every row after the first is surplus.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BeforeValidator

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig, Columns, Duration
from integrity.filters import columns as filter_columns
from integrity.filters import describe as describe_filter
from integrity.units import format_duration

Normaliser = Literal["trim", "lower", "email", "phone", "digits"]


def _as_list(value):
    return [value] if isinstance(value, str) else value


class DuplicatesConfig(CheckConfig):
    kind: Literal["duplicates"]
    dataset: str
    columns: Columns
    normalize: dict[str, Annotated[list[Normaliser], BeforeValidator(_as_list)]] = {}
    default_region: str | None = None
    keep_first_by: str | None = None


class Duplicates(Check):
    kind = "duplicates"
    Config = DuplicatesConfig
    config: DuplicatesConfig

    @classmethod
    def validate(cls, config, audit):
        problems = []
        for column in config.normalize:
            if column not in config.columns:
                problems.append((("normalize", column),
                                 f"{column!r} is not one of the key columns {config.columns}"))
        if config.default_region is not None:
            import phonenumbers

            if config.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                problems.append((("default_region",),
                                 f"unknown region {config.default_region!r} "
                                 f"(use a two-letter country code such as US or GB)"))
        return problems

    def columns(self):
        config = self.config
        return {config.dataset: self.identity(config.dataset, *config.columns,
                                              config.keep_first_by,
                                              *filter_columns(config.where))}

    def measure(self, data) -> Measurement:
        config = self.config
        rows = data.rows(config.dataset, config.where)
        keys = {column: normalise(rows[column], config.normalize.get(column, []),
                                  config.default_region) for column in config.columns}
        key_columns = [f"_key_{index}" for index in range(len(config.columns))]
        work = rows.assign(**dict(zip(key_columns, keys.values())))
        order = [*([config.keep_first_by] if config.keep_first_by else []),
                 *(self.audit.datasets[config.dataset].key or [])]
        if order:
            work = work.sort_values(list(dict.fromkeys(order)), kind="stable", na_position="last")
        work = work[work[key_columns].notna().all(axis=1)]
        sizes = work.groupby(key_columns, sort=False)[key_columns[0]].transform("size")
        work = work[sizes > 1]
        shown = self.identity(config.dataset, *config.columns)
        if work.empty:
            violations = work[shown].assign(duplicate_group=[], duplicate_role=[])
            return Measurement(violations=violations, violation_count=0, population=len(rows),
                               keys=self.key_or(shown), group_column="duplicate_group",
                               context_column="duplicate_role")
        group = work.groupby(key_columns, sort=True).ngroup() + 1
        rank = work.groupby(key_columns, sort=False).cumcount()
        violations = work[shown].assign(
            duplicate_group=group,
            duplicate_role=rank.map(lambda position: "kept" if position == 0 else "surplus"),
            duplicate_key=work[key_columns].astype(str).agg(" | ".join, axis=1))
        violations = violations.assign(_rank=rank).sort_values(
            ["duplicate_group", "_rank"], kind="stable").drop(columns="_rank")
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int((rank > 0).sum()), population=len(rows),
                           keys=self.key_or(shown), group_column="duplicate_group",
                           context_column="duplicate_role")

    def key_or(self, shown: list[str]) -> list[str]:
        return list(self.audit.datasets[self.config.dataset].key or shown)

    def describe(self) -> str:
        config = self.config
        parts = []
        for column in config.columns:
            steps = config.normalize.get(column)
            parts.append(f"{column} ({', '.join(steps)})" if steps else column)
        scope = f" among rows where {describe_filter(config.where)}" if config.where else ""
        return (f"No two {config.dataset} rows may share ({', '.join(parts)}){scope}; "
                f"every row of a group after the first is one violation.")


class DuplicateEventsConfig(CheckConfig):
    kind: Literal["duplicate_events"]
    dataset: str
    by: Columns
    time: str
    window: Duration = timedelta(minutes=5)


class DuplicateEvents(Check):
    kind = "duplicate_events"
    Config = DuplicateEventsConfig
    config: DuplicateEventsConfig

    def columns(self):
        config = self.config
        return {config.dataset: self.identity(config.dataset, *config.by, config.time,
                                              *filter_columns(config.where))}

    def measure(self, data) -> Measurement:
        from integrity.checks.common import bursts

        config = self.config
        rows = data.rows(config.dataset, config.where)
        rows = rows[rows[config.by].notna().all(axis=1)]
        order = list(self.audit.datasets[config.dataset].key or [])
        grouped = bursts(rows, data.time_column(config.dataset, rows, config.time), config.by,
                         config.window, order=order)
        repeated = grouped[grouped["_burst_size"] > 1]
        shown = self.identity(config.dataset, *config.by, config.time)
        violations = repeated[shown].assign(
            duplicate_group=repeated["_burst"].rank(method="dense").astype("int64"),
            duplicate_role=(repeated["_burst_rank"] > 1).map({True: "surplus", False: "kept"}),
            seconds_after_first=(repeated["_time"] - repeated["_burst_first"]).dt.total_seconds())
        return Measurement(violations=violations.reset_index(drop=True),
                           violation_count=int((repeated["_burst_rank"] > 1).sum()),
                           population=len(rows), keys=list(order or shown),
                           group_column="duplicate_group", context_column="duplicate_role")

    def describe(self) -> str:
        config = self.config
        scope = f" (rows where {describe_filter(config.where)})" if config.where else ""
        return (f"{config.dataset} rows equal on ({', '.join(config.by)}){scope} and at most "
                f"{format_duration(config.window)} apart by {config.time} form a burst; "
                f"every row of a burst after the first is one violation.")


# ---------------------------------------------------------------------------
# Normalisation.


def normalise(values, steps: list[str], region: str | None):
    """Apply normalisation steps to a column; empty results become null."""
    if not steps:
        return values

    def one(value):
        text = str(value)
        for step in steps:
            if step in {"trim", "email"}:
                text = text.strip()
            if step in {"lower", "email"}:
                text = text.lower()
            if step == "digits":
                text = "".join(ch for ch in text if ch.isdigit())
            if step == "phone":
                text = e164(text, region) or ""
        return text or None

    # Normalise each distinct value once: phone parsing is slow and keys repeat.
    mapping = {value: one(value) for value in values.dropna().unique()}
    return values.map(mapping).astype("object").where(values.notna(), None)


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
