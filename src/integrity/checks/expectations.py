"""Great Expectations suites: the column-level vocabulary, run by GX itself (seeds 000, 001).

Not null, unique, regular expressions (E.164 phones, e-mails, wa.me links),
value sets and ranges are what GX already says well; an audit attaches a GX 1.x
`ExpectationSuite` JSON file — exactly as GX writes it — to a dataset:

    - id: lead_columns
      kind: expectation_suite
      dataset: leads
      suite: expectations/leads.json

GX validates the pulled dataframe (pandas engine) or the table through its SQL
datasource on the audit's own read-only engine (SQL engine). Every expectation
becomes one result in the audit's model: status from GX's success and the
expectation's severity (its `severity`, else `meta.severity`, else the
suite's `meta.severity`, else the check's — GX writes "critical" by default, so
that value cannot outrank the others), the unexpected count over the
element count, and the offending rows *with the dataset's key columns*.

GX takes seconds to import: it is imported here, inside the checks, only when
an audit really has a suite — never by `integrity --help` or `validate`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from integrity.checks import Check, Measurement
from integrity.config import CheckConfig

COLUMN_ARGUMENTS = ("column", "column_A", "column_B")
LIST_ARGUMENTS = ("column_list",)
SEVERITIES = {"critical", "warning", "info"}


class SuiteConfig(CheckConfig):
    kind: Literal["expectation_suite"] = Field(description="Selects this check.")
    dataset: str = Field(description=(
        "The dataset the suite validates, whole (no `where`). Required."))
    suite: str = Field(description=(
        "The GX 1.x ExpectationSuite JSON file, relative to the audit file's folder (else "
        "to the current folder), e.g. `../expectations/leads.json`. Required."))


@dataclass(frozen=True)
class SuiteFile:
    """A suite as read from disk: GX's JSON, untouched, and where it came from."""

    path: Path
    document: dict

    @property
    def expectations(self) -> list[dict]:
        return self.document["expectations"]

    def columns(self) -> list[str]:
        """Every column the suite's expectations name (in order, once)."""
        found: list[str] = []
        for expectation in self.expectations:
            kwargs = expectation.get("kwargs", {})
            found += [kwargs[name] for name in COLUMN_ARGUMENTS if isinstance(kwargs.get(name), str)]
            for name in LIST_ARGUMENTS:
                found += [c for c in kwargs.get(name) or [] if isinstance(c, str)]
        return list(dict.fromkeys(found))

    def label(self, index: int) -> str:
        expectation = self.expectations[index]
        kind, kwargs = expectation["type"], expectation.get("kwargs", {})
        columns = [kwargs[name] for name in COLUMN_ARGUMENTS if isinstance(kwargs.get(name), str)]
        columns += list(kwargs.get("column_list") or [])
        return f"{kind}({', '.join(columns)})" if columns else kind

    def where(self, index: int) -> str:
        return f"{self.path}: expectations[{index}] ({self.expectations[index]['type']})"

    def severity(self, index: int, default: str) -> str:
        """meta.severity, else GX's own `severity` unless it is GX's default "critical"
        (which GX writes whether or not anyone chose it), else the suite's meta.severity,
        else the check's severity."""
        expectation = self.expectations[index]
        own = expectation.get("severity")
        for candidate in ((expectation.get("meta") or {}).get("severity"),
                          own if own != "critical" else None,
                          (self.document.get("meta") or {}).get("severity")):
            if candidate in SEVERITIES:
                return candidate
        return default


def resolve(suite: str, audit_file: str) -> Path:
    """A suite path, relative to the audit file's folder first, then to the current folder."""
    path = Path(suite)
    if path.is_absolute():
        return path
    beside = Path(audit_file).parent / path
    return beside if beside.is_file() or not path.is_file() else path


@lru_cache(maxsize=64)
def _read(path: Path, modified: float) -> SuiteFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such suite file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the suite: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") \
            from None
    if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
        raise ValueError(f"{path}: not a Great Expectations suite (no `expectations` list)")
    if not document["expectations"]:
        # An empty suite would run as no check at all, and an audit of nothing never passes.
        raise ValueError(f"{path}: the suite has no expectations: nothing to check")
    for index, expectation in enumerate(document["expectations"]):
        if not isinstance(expectation, dict) or not isinstance(expectation.get("type"), str) \
                or not isinstance(expectation.get("kwargs", {}), dict):
            raise ValueError(f"{path}: expectations[{index}] needs a `type` (e.g. "
                             f"expect_column_values_to_not_be_null) and `kwargs`")
    return SuiteFile(path, document)


def load_suite(path: Path) -> SuiteFile:
    try:
        modified = path.stat().st_mtime
    except OSError:
        modified = 0.0
    return _read(path, modified)


class ExpectationSuiteCheck(Check):
    """Great Expectations suites for column-level rules."""

    kind = "expectation_suite"
    Config = SuiteConfig
    config: SuiteConfig

    @classmethod
    def validate(cls, config, audit):
        problems = []
        if config.where:
            problems.append((("where",), "a suite validates its whole dataset: filter with a "
                                         "`sql:` dataset or an expectation's row_condition"))
        try:
            load_suite(resolve(config.suite, getattr(audit, "file", ".")))
        except ValueError as error:
            problems.append((("suite",), str(error)))
        return problems

    @property
    def suite(self) -> SuiteFile:
        return load_suite(resolve(self.config.suite, self.audit.file))

    def columns(self):
        return {self.config.dataset: self.identity(self.config.dataset, *self.suite.columns())}

    def missing_column(self, dataset: str, column: str, present) -> str:
        suite = self.suite
        for index in range(len(suite.expectations)):
            if column in SuiteFile(suite.path, {"expectations": [suite.expectations[index]]}
                                   ).columns():
                return f"{suite.where(index)}: {super().missing_column(dataset, column, present)}"
        return super().missing_column(dataset, column, present)

    # -- running ----------------------------------------------------------------------

    def measure(self, data) -> list[Measurement]:
        context = gx_context()
        name = f"pandas-{uuid.uuid4().hex[:8]}"
        source = context.data_sources.add_pandas(name)
        try:
            asset = source.add_dataframe_asset(self.config.dataset)
            batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
                batch_parameters={"dataframe": data.frame(self.config.dataset)})
            return self._validate(batch)
        finally:
            context.data_sources.delete(name)

    def measure_sql(self, db) -> list[Measurement]:
        from great_expectations.datasource.fluent import SQLDatasource

        from integrity.sources import dataset_query, sql_text

        context = gx_context()
        name = f"sql-{uuid.uuid4().hex[:8]}"
        # GX would build its own engines from a URL; hand it one on the audit's own
        # connection instead (see _borrowed_engine), and show it only the masked URL.
        engine = _borrowed_engine(db)
        # No temporary tables: the audit's transaction is read-only, even for those.
        datasource = _with_engine(SQLDatasource(name=name, create_temp_table=False,
                                                connection_string=db.source.display_url), engine)
        datasource = _with_engine(context.data_sources.add_sql(datasource), engine)
        try:
            columns = list(self.columns()[self.config.dataset])
            query = sql_text(dataset_query(self.audit.datasets[self.config.dataset], columns),
                             db.source)
            asset = datasource.add_query_asset(self.config.dataset, query=query)
            batch = asset.add_batch_definition_whole_table("all").get_batch()
            parts = self._validate(batch)
            for part in parts:
                part.sql = query
            return parts
        finally:
            context.data_sources.delete(name)

    def _validate(self, batch) -> list[Measurement]:
        suite_file = self.suite
        suite = build_suite(suite_file)
        key = list(self.audit.datasets[self.config.dataset].key or [])
        result_format: dict[str, Any] = {"result_format": "COMPLETE",
                                         "partial_unexpected_count": 20}
        if key:
            result_format["unexpected_index_column_names"] = key
        outcome = batch.validate(suite, result_format=result_format)
        labels = _unique([suite_file.label(i) for i in range(len(suite_file.expectations))])
        return [self._part(result, index, labels[index], key, suite_file)
                for index, result in enumerate(outcome.results)]

    def _part(self, result, index: int, label: str, key: list[str], suite: SuiteFile
              ) -> Measurement:
        import pandas as pd

        config = result.expectation_config
        details = result.result or {}
        severity = suite.severity(index, self.config.severity)
        description = _describe(config)
        error = _exception(result)
        if error is not None:
            return Measurement(violations=pd.DataFrame(), violation_count=0, population=None,
                               keys=key, label=label, description=description,
                               severity=severity, error=f"{suite.where(index)}: {error}")
        rows = details.get("unexpected_index_list")
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            violations = pd.DataFrame(rows)
        elif details.get("partial_unexpected_list") is not None:
            column = (config.kwargs or {}).get("column", "value")
            violations = pd.DataFrame({column: details.get("unexpected_list")
                                       or details["partial_unexpected_list"]})
        else:
            violations = pd.DataFrame()
        count = details.get("unexpected_count")
        if count is None:
            count = 0 if result.success else 1
        keys = [column for column in key if column in violations] or list(violations.columns)
        # Key columns first, as every other check shows them, whatever the GX backend did.
        violations = violations[keys + [c for c in violations.columns if c not in keys]]
        if keys and not violations.empty:
            violations = violations.sort_values(keys, kind="stable").reset_index(drop=True)
        notes = []
        if details.get("unexpected_percent") is not None and count:
            notes.append(f"GX: {details['unexpected_percent']:.4g}% of the non-null values "
                         f"are unexpected")
        observed = details.get("observed_value")
        if observed is not None and not isinstance(observed, (list, dict)):
            notes.append(f"observed value: {observed}")
        return Measurement(violations=violations, violation_count=int(count),
                           population=details.get("element_count"), keys=keys, judged=True,
                           level=None if result.success else severity, label=label,
                           description=description, severity=severity, notes=notes)

    def describe(self) -> str:
        return (self.config.description or
                f"Great Expectations suite {self.config.suite} on {self.config.dataset}.")


# ---------------------------------------------------------------------------
# GX plumbing.


@lru_cache(maxsize=1)
def gx_context():
    """One ephemeral context per process: no project folder, no network, no analytics."""
    import logging

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs (and prints tracebacks of) what it then reports or drops; integrity reports
    # those itself, once, as audit errors. Some GX loggers even set INFO on their own.
    for name in [*logging.root.manager.loggerDict, "great_expectations"]:
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _borrowed_engine(db):
    """An engine whose every connection is the audit's own DBAPI connection: GX's queries
    run in the audit's read-only transaction and snapshot, with its statement timeout and
    what is left of --timeout, and GX never logs in (it is only shown the masked URL).
    Giving a connection back must not end the shared transaction: no reset on return."""
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    lent = _lend(db.connection.connection.dbapi_connection)
    url = db.source.url.set(password=None)
    if url.get_backend_name() == "sqlite":
        url = sa.engine.make_url("sqlite://")
    return sa.create_engine(url, creator=lambda: lent, poolclass=StaticPool,
                            pool_reset_on_return=None)


def _lend(connection):
    """The audit's DBAPI connection as GX may hold it: closing, committing or rolling back
    only gives it back (GX disposes its engines when they are collected; the audit's
    transaction and snapshot must outlive that)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover — psycopg is a dependency
        psycopg = None
    if psycopg is not None and isinstance(connection, psycopg.Connection):
        # psycopg and SQLAlchemy's dialect want a real Connection: a second one over the same
        # libpq session (same transaction, same snapshot, same settings). It never prepares
        # statements, so its names cannot clash with the audit's own prepared ones.
        class LentPsycopg(_GivenBack, psycopg.Connection):
            pass

        lent = LentPsycopg(connection.pgconn)
        lent.prepare_threshold = None
        return lent
    return _Lent(connection)


class _GivenBack:
    """What ends a connection or its transaction, made to only give the connection back."""

    def close(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


class _Lent(_GivenBack):
    """A lent DBAPI connection (see _lend) for drivers that do not check its type."""

    def __init__(self, connection):
        object.__setattr__(self, "_connection", connection)

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def __setattr__(self, name, value):
        setattr(self._connection, name, value)


def _with_engine(datasource, engine):
    """Make GX use `engine` for the datasource and its execution engine. GX 1.x builds both
    from the connection string unless its caches say they are built (private attributes,
    hence the pin on great-expectations<2 and the tests that prove one connection)."""
    from great_expectations.execution_engine import SqlAlchemyExecutionEngine

    datasource._engine = engine
    datasource._cached_connection_string = datasource.connection_string
    datasource._execution_engine = SqlAlchemyExecutionEngine(
        engine=engine, create_temp_table=datasource.create_temp_table)
    datasource._cached_execution_engine_kwargs = datasource.dict(
        exclude=datasource._get_exec_engine_excludes(),
        config_provider=datasource._config_provider, exclude_unset=False)
    return datasource


def build_suite(suite: SuiteFile):
    """The GX suite object; an unknown expectation or bad argument names file and position.

    GX *drops* an expectation it cannot build (it only logs), which would silently
    shorten the suite: every expectation is checked here first.
    """
    import great_expectations as gx

    from integrity.errors import CheckError

    for index, expectation in enumerate(suite.expectations):
        problem = _expectation_problem(expectation)
        if problem:
            raise CheckError(f"{suite.where(index)}: {problem}")
    try:
        built = gx.ExpectationSuite(**suite.document)
    except Exception as error:  # noqa: BLE001 — GX raises many types for a bad document
        raise CheckError(f"{suite.path}: Great Expectations cannot read this suite: "
                         f"{str(error).splitlines()[0]}") from None
    if len(built.expectations) != len(suite.expectations):
        raise CheckError(f"{suite.path}: Great Expectations kept {len(built.expectations)} of "
                         f"{len(suite.expectations)} expectations")
    return built


def _expectation_problem(expectation: dict) -> str | None:
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        implementation = get_expectation_impl(expectation["type"])
    except Exception as error:  # noqa: BLE001 — ExpectationNotFoundError and kin
        return str(error).splitlines()[0]
    arguments = {**expectation.get("kwargs", {}),
                 **{name: expectation[name] for name in ("meta", "description", "severity", "id",
                                                         "notes") if expectation.get(name)}}
    try:
        implementation(**arguments)
    except Exception as error:  # noqa: BLE001 — pydantic validation of the arguments
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return "invalid arguments: " + "; ".join(lines[1:3] or lines[:1])
    return None


def _describe(config) -> str:
    own = getattr(config, "description", None)
    arguments = ", ".join(f"{name}={value!r}" for name, value in (config.kwargs or {}).items()
                          if name not in {"batch_id"})
    rule = f"{config.type}({arguments})"
    return f"{own} — {rule}" if own else rule


def _exception(result) -> str | None:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message") or "GX raised an exception"
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message") or "GX raised an exception"
    return None


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique
