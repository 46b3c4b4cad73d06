"""Draft a Great Expectations suite from the data: the quickest path to a first audit.

`integrity suite scaffold DATASET --audit AUDIT` reads the dataset (read-only,
like any audit), profiles each column — nulls, uniqueness, small value sets,
numeric ranges, lengths, recognisable formats (E.164, e-mail, UUID) — and
writes a GX 1.x suite JSON for a human to edit. Every expectation it drafts
holds on the data it was drafted from; whether it *should* hold is the
reviewer's call, which is why the suite says it is a draft.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from integrity.results import plain

if TYPE_CHECKING:
    import pandas as pd

    from integrity.config import Audit

SET_LIMIT = 12
FORMATS = {
    "E.164 phone number": r"^\+[1-9][0-9]{6,14}$",
    "e-mail address": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    "UUID": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}


def read_dataset(audit: Audit, dataset: str, limit: int | None) -> pd.DataFrame:
    """Every column of a dataset (the first `limit` rows), through the audit's read-only source."""
    import sqlalchemy as sa

    from integrity.sources import available_columns, dataset_query, open_source

    source = open_source(audit.connection)
    try:
        with source.connect() as connection:
            definition = audit.datasets[dataset]
            columns = available_columns(connection, source, dataset, definition)
            statement = dataset_query(definition, list(columns))
            key = [c for c in definition.key or [] if c in columns]
            if key:
                statement = statement.order_by(*[sa.column(c) for c in key])
            if limit:
                statement = statement.limit(limit)
            import pandas as pd

            try:
                result = connection.execute(statement)
                return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()),
                                                 coerce_float=False)
            except sa.exc.SQLAlchemyError as error:
                raise source.error(error, f"dataset {dataset!r}") from None
    finally:
        source.dispose()


def draft(frame: pd.DataFrame, name: str) -> dict:
    """The suite (GX's JSON form) describing `frame` as it is."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd

    from integrity.checks.expectations import gx_context

    gx_context()  # analytics off, logging quiet
    rows = len(frame)
    expectations = [gxe.ExpectTableColumnsToMatchSet(column_set=list(frame.columns),
                                                     exact_match=True),
                    gxe.ExpectTableRowCountToBeBetween(min_value=1 if rows else 0)]
    for column in frame.columns:
        values = frame[column]
        present = values.dropna()
        nulls = rows - len(present)
        if rows and nulls == 0:
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        elif rows and nulls / rows <= 0.05:
            mostly = math.floor((1 - nulls / rows) * 100) / 100
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly))
        if present.empty:
            continue
        kind = _kind(present)
        distinct = present.nunique()
        if distinct == len(present) and len(present) > 1 and kind in {"text", "integer"}:
            expectations.append(gxe.ExpectColumnValuesToBeUnique(column=column))
        elif distinct <= SET_LIMIT and len(present) >= 3 * distinct and kind in {
                "text", "integer", "boolean"}:
            value_set = sorted({plain(value) for value in present.unique()}, key=repr)
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column,
                                                                value_set=value_set))
        if kind in {"integer", "number"}:
            numbers = pd.to_numeric(present)
            expectations.append(gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=plain(numbers.min()), max_value=plain(numbers.max())))
        if kind == "text" and not _times(present):
            text = present.astype(str)
            for label, pattern in FORMATS.items():
                if text.map(lambda value: bool(re.match(pattern, value))).all():
                    expectations.append(gxe.ExpectColumnValuesToMatchRegex(
                        column=column, regex=pattern, description=f"Every value is a {label}."))
                    break
            lengths = text.str.len()
            expectations.append(gxe.ExpectColumnValueLengthsToBeBetween(
                column=column, min_value=int(lengths.min()), max_value=int(lengths.max())))
    drafted = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    suite = gx.ExpectationSuite(name=name, expectations=expectations, meta={
        "description": f"Drafted by `integrity suite scaffold` from {rows:,} rows on {drafted}. "
                       f"Review every expectation: it describes the data as it was, "
                       f"not as it must be."})
    return suite.to_json_dict()


def _kind(values) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "integer" if (values % 1 == 0).all() and values.abs().max() < 2 ** 53 else "number"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "time"
    sample = values.iloc[0]
    if isinstance(sample, bool):
        return "boolean"
    if isinstance(sample, int) and all(isinstance(v, int) for v in values):
        return "integer"
    if isinstance(sample, str) and all(isinstance(v, str) for v in values):
        return "text"
    return "other"


def _times(values) -> bool:
    """Text that is really timestamps (SQLite stores them so): no length or format rules."""
    import pandas as pd

    parsed = pd.to_datetime(values, errors="coerce", format="ISO8601")
    return bool(parsed.notna().all())


def write(document: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
