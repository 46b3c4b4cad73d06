"""The type matrix: the common column types of each database, through every check that
can read them, on both engines.

One table per database holds one column of each type and six rows written so every
answer can be worked out by hand:

* rows 1 and 2 hold the same value in every column, spelled differently where the type
  allows it (1.50 and 1.5, '1 day' and '24 hours', 10:00Z and 11:00+01:00, jsonb with
  other spacing), so each column has exactly one duplicate (row 2) unless said otherwise;
* row 3 sits on the window's edge ([now - 1d, now) with now 2026-01-30 12:30 UTC):
  exactly at its start, or a microsecond before it;
* row 4 is before 2020 (`earliest`), row 5 in the future, row 6 all NULL.

Every check runs on the pandas engine and on the SQL engine; both must give the same
status, counts, population, violation keys and value, and that answer must be the one
derived here from the rows. A check that cannot read a type (a time of day is no
timestamp) must say so in words, the same on both engines — never crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from conftest import DATABASES, NOW, Database, audit_text, database_url
from integrity.audit import parse_audit
from integrity.runner import run_audit

ENGINES = ["pandas", "sql"]
U1, U2, U3 = (f"{digit * 8}-{digit * 4}-{digit * 4}-{digit * 4}-{digit * 12}"
              for digit in "123")
NO_TIMESTAMP = ("column {!r} holds a time of day or a duration, not a date and time: it "
                "cannot be read as a timestamp")
THRESHOLD = 3  # metrics: critical above 3


@dataclass
class Matrix:
    """One database's table and the answers its rows imply."""

    ddl: list[str]
    duplicates: dict[str, list[tuple]]          # column -> violation keys
    numbers: dict[str, dict[int, float]]        # numeric column -> row id -> value
    windows: dict[str, set[int]]                # time column -> rows in [now - 1d, now)
    freshness: dict[str, float]                 # time column -> age of the newest row (s)
    valid: dict[str, list[tuple[int, str]]]     # time column -> (id, problem)
    per_day: dict[str, list[tuple]]             # time column -> (day, its count, reference's)
    day_reference: str                          # the time column the others are counted against
    references: list[tuple[str, str, list[tuple], list[tuple]]]  # column, parent, orphans, crossed
    times_of_day: list[str] = field(default_factory=list)


POSTGRESQL = Matrix(
    ddl=[
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
        """CREATE TABLE typed (id int PRIMARY KEY, tenant text, amount numeric(10,2),
           ratio numeric, price money, ref uuid, doc json, docb jsonb, ints int[], tags text[],
           mood mood, span interval, raw bytea, flag bool, bit1 bit(1), day date, clock time,
           local_at timestamp, aware_at timestamptz, label text, qty bigint,
           score double precision)""",
        f"""INSERT INTO typed VALUES
        (1, 't1', 1.50, 0.125, 1.50, '{U1}', '{{"a": 1}}', '{{"a": 1}}', '{{1,2}}', '{{a,b}}',
         'ok', '1 day', '\\x01', true, B'1', '2026-01-30', '10:00', '2026-01-30 10:00',
         '2026-01-30 10:00+00', 'x', 1, 0.5),
        (2, 't1', 1.5, 0.1250, 1.5, '{U1}', '{{"a": 1}}', '{{"a":  1}}', '{{1,2}}', '{{a,b}}',
         'ok', '24 hours', '\\x01', true, B'1', '2026-01-30', '10:00:00', '2026-01-30 10:00',
         '2026-01-30 11:00+01', 'x', 1, 0.5),
        (3, 't1', 7.50, 2.75, 7.50, '{U2}', '{{"a": 2}}', '{{"a": 2}}', '{{2,1}}', '{{b}}',
         'sad', '1 month', '\\x02', false, B'0', '2026-01-29', '10:00:00.000001',
         '2026-01-29 12:29:59.999999', '2026-01-29 12:30:00+00', 'X', 4, 2.0),
        (4, 't2', 100.00, -1, 100, '{U3}', '{{"b": 1}}', '{{"b": 1}}', '{{}}', '{{}}',
         'happy', '30 days', '\\x', NULL, NULL, '2019-12-31', '23:59:59.999999',
         '2019-12-31 23:59:59.999999', '2019-12-31 23:59:59.999999-01', 'x ', 6, 4.0),
        (5, 't2', -0.25, 3.75, -0.25, '{U2}', '[1]', '[1]', '{{3}}', '{{c}}',
         NULL, '-1 day', '\\x', NULL, NULL, '2026-02-01', '00:00',
         '2026-01-30 12:31:00.5', '2026-01-30 12:31:00+00', 'y', 5, -2.5),
        (6, 't2', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
        "CREATE TABLE accounts (ref uuid PRIMARY KEY, tenant text)",
        f"INSERT INTO accounts VALUES ('{U1}', 't1'), ('{U2}', 't2')",
        "CREATE TABLE ledgers (code numeric(10,2) PRIMARY KEY, tenant text)",
        "INSERT INTO ledgers VALUES (1.50, 't1'), (100.00, 't2'), (7.50, 't2')",
    ],
    duplicates={
        **{column: [(2,)] for column in [
            "amount", "ratio", "price", "doc", "docb", "ints", "tags", "mood", "flag", "bit1",
            "day", "clock", "local_at", "aware_at", "label", "qty", "score"]},
        "ref": [(2,), (5,)],   # U1 twice, U2 twice
        "span": [(2,), (4,)],  # '1 month' = '30 days', as PostgreSQL compares intervals
        "raw": [(2,), (5,)],   # an empty bytea is a value
    },
    numbers={
        "amount": {1: 1.5, 2: 1.5, 3: 7.5, 4: 100, 5: -0.25},
        "ratio": {1: 0.125, 2: 0.125, 3: 2.75, 4: -1, 5: 3.75},
        "price": {1: 1.5, 2: 1.5, 3: 7.5, 4: 100, 5: -0.25},
        "qty": {1: 1, 2: 1, 3: 4, 4: 6, 5: 5},
        "score": {1: 0.5, 2: 0.5, 3: 2.0, 4: 4.0, 5: -2.5},
    },
    windows={"day": {1, 2}, "local_at": {1, 2}, "aware_at": {1, 2, 3}},
    freshness={"day": 12.5 * 3600, "local_at": 2.5 * 3600, "aware_at": 2.5 * 3600},
    valid={"day": [(4, "before_earliest"), (5, "in_future"), (6, "null")],
           "local_at": [(4, "before_earliest"), (5, "in_future"), (6, "null")],
           # row 4 is 2020-01-01 00:59:59.999999 UTC; row 5 exactly at the 1m tolerance
           "aware_at": [(6, "null")]},
    per_day={"day": [("2026-01-30", 2, 3), ("2026-02-01", 1, 0)],
             "aware_at": [("2019-12-31", 0, 1), ("2020-01-01", 1, 0)]},
    day_reference="local_at",
    references=[("ref", "accounts", [(4,)], [(3,)]),
                ("amount", "ledgers", [(5,)], [(3,)])],
    times_of_day=["clock"],
)

MARIADB = Matrix(
    ddl=[
        """CREATE TABLE typed (id int PRIMARY KEY, tenant varchar(10), amount DECIMAL(10,2),
           flag TINYINT(1), doc JSON, at6 DATETIME(6), day DATE, clock TIME, raw BLOB,
           bit1 BIT(1), label VARCHAR(20), qty BIGINT, score DOUBLE,
           mood ENUM('sad', 'ok', 'happy'))""",
        """INSERT INTO typed VALUES
        (1, 't1', 1.50, 1, '{"a": 1}', '2026-01-30 10:00:00', '2026-01-30', '10:00', x'01',
         b'1', 'x', 1, 0.5, 'ok'),
        (2, 't1', 1.5, 1, '{"a": 1}', '2026-01-30 10:00:00.000000', '2026-01-30', '10:00:00',
         x'01', b'1', 'x', 1, 0.5, 'ok'),
        (3, 't1', 7.50, 0, '{"a": 2}', '2026-01-29 12:30:00', '2026-01-29', '10:00:01', x'02',
         b'0', 'X', 4, 2.0, 'sad'),
        (4, 't2', 100.00, NULL, '{"b": 1}', '2019-12-31 23:59:59.999999', '2019-12-31',
         '23:59:59', x'', NULL, 'x ', 6, 4.0, 'happy'),
        (5, 't2', -0.25, NULL, '[1]', '2026-01-30 12:31:00.5', '2026-02-01', '00:00', x'',
         NULL, 'y', 5, -2.5, NULL),
        (6, 't2', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
        "CREATE TABLE ledgers (code DECIMAL(10,2) PRIMARY KEY, tenant varchar(10))",
        "INSERT INTO ledgers VALUES (1.50, 't1'), (100.00, 't2'), (7.50, 't2')",
    ],
    duplicates={
        # 'X' and 'x ' equal 'x' in the default collation, not byte for byte
        **{column: [(2,)] for column in [
            "amount", "flag", "doc", "at6", "day", "clock", "bit1", "label", "qty", "score",
            "mood"]},
        "raw": [(2,), (5,)],
    },
    numbers={
        "amount": {1: 1.5, 2: 1.5, 3: 7.5, 4: 100, 5: -0.25},
        "flag": {1: 1, 2: 1, 3: 0},
        "qty": {1: 1, 2: 1, 3: 4, 4: 6, 5: 5},
        "score": {1: 0.5, 2: 0.5, 3: 2.0, 4: 4.0, 5: -2.5},
    },
    windows={"day": {1, 2}, "at6": {1, 2, 3}},
    freshness={"day": 12.5 * 3600, "at6": 2.5 * 3600},
    valid={"day": [(4, "before_earliest"), (5, "in_future"), (6, "null")],
           "at6": [(4, "before_earliest"), (5, "in_future"), (6, "null")]},
    per_day={"day": [("2026-01-30", 2, 3), ("2026-02-01", 1, 0)]},
    day_reference="at6",
    references=[("amount", "ledgers", [(5,)], [(3,)])],
    times_of_day=["clock"],
)

SQLITE = Matrix(
    ddl=[
        """CREATE TABLE typed (id INTEGER PRIMARY KEY, tenant TEXT, amount NUMERIC,
           qty INTEGER, score REAL, label TEXT, raw BLOB, at TEXT, day TEXT)""",
        # NUMERIC keeps what is no number as text (row 7); text times in several spellings.
        """INSERT INTO typed VALUES
        (1, 't1', 1.50, 1, 0.5, 'x', x'01', '2026-01-30 10:00:00', '2026-01-30'),
        (2, 't1', '1.5', 1, 0.5, 'x', x'01', '2026-01-30T11:00:00+01:00', '2026-01-30'),
        (3, 't1', 7.50, 4, 2.0, 'X', x'02', '2026-01-29T12:30:00Z', '2026-01-29'),
        (4, 't2', 100.00, 6, 4.0, 'x ', x'', '2019-12-31 23:59:59.999', '2019-12-31'),
        (5, 't2', -0.25, 5, -2.5, 'y', x'', '2026-01-30T13:31:00.500+01:00', '2026-02-01'),
        (6, 't2', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (7, 't2', 'abc', 7, 7.5, '', x'03', 'yesterday', '30/01/2026')""",
        "CREATE TABLE ledgers (code NUMERIC PRIMARY KEY, tenant TEXT)",
        "INSERT INTO ledgers VALUES (1.50, 't1'), (100.00, 't2'), (7.50, 't2')",
    ],
    duplicates={
        **{column: [(2,)] for column in ["amount", "qty", "score", "label", "day"]},
        "raw": [(2,), (5,)],
        "at": [],  # rows 1 and 2 are the same moment but not the same text
    },
    numbers={
        "amount": {1: 1.5, 2: 1.5, 3: 7.5, 4: 100, 5: -0.25},  # 'abc' is no number
        "qty": {1: 1, 2: 1, 3: 4, 4: 6, 5: 5, 7: 7},
        "score": {1: 0.5, 2: 0.5, 3: 2.0, 4: 4.0, 5: -2.5, 7: 7.5},
    },
    windows={"day": {1, 2}, "at": {1, 2, 3}},
    freshness={"day": 12.5 * 3600, "at": 2.5 * 3600},
    valid={"day": [(4, "before_earliest"), (5, "in_future"), (6, "null"), (7, "unparseable")],
           "at": [(4, "before_earliest"), (5, "in_future"), (6, "null"), (7, "unparseable")]},
    per_day={"day": [("2026-01-30", 2, 3), ("2026-02-01", 1, 0)]},
    day_reference="at",
    references=[("amount", "ledgers", [(5,), (7,)], [(3,)])],
)

MATRICES = {"postgresql": POSTGRESQL, "mariadb": MARIADB, "sqlite": SQLITE}
FUNCTIONS = {"sum": sum, "avg": lambda values: sum(values) / len(values), "min": min, "max": max}


def times(matrix: Matrix) -> list[str]:
    return [*matrix.windows, *matrix.times_of_day]


def checks(matrix: Matrix) -> list[dict]:
    """Every check that can read a column of the table, as audit-file mappings."""
    found = [{"id": f"dup_{column}", "kind": "duplicates", "dataset": "typed",
              "columns": [column]} for column in matrix.duplicates]
    for column, parent, _, _ in matrix.references:
        found += [{"id": f"orphans_{column}", "kind": "orphans", "dataset": "typed",
                   "reference": column, "parent": parent},
                  {"id": f"tenants_{column}", "kind": "cross_tenant", "dataset": "typed",
                   "reference": column, "parent": parent}]
    for column in matrix.numbers:
        found.append({"id": f"sum_{column}", "kind": "reconciliation",
                      "left": {"dataset": "typed", "measure": f"sum({column})", "by": ["tenant"]},
                      "right": {"dataset": "typed", "measure": f"sum({column})",
                                "by": ["tenant"], "where": {"id": {"not": 3}}}})
        for function in FUNCTIONS:
            for time in [None, *times(matrix)]:
                window = {"time": time, "window": "1d"} if time else {}
                found.append({"id": f"{function}_{column}_{time or 'all'}", "kind": "metric",
                              "dataset": "typed", "value": f"{function}({column})", **window,
                              "thresholds": {"critical": f"> {THRESHOLD}"}})
    for time in times(matrix):
        found += [
            {"id": f"fresh_{time}", "kind": "freshness", "dataset": "typed", "time": time,
             "max_age": "12h", "where": {"id": {"not": 5}}},
            {"id": f"valid_{time}", "kind": "timestamp_valid", "dataset": "typed",
             "column": time, "earliest": "2020-01-01T00:00:00Z"},
            {"id": f"clicks_{time}", "kind": "duplicate_events", "dataset": "typed",
             "by": ["tenant"], "time": time, "window": "1s"},
        ]
        if time != matrix.day_reference:
            found.append({"id": f"daily_{time}", "kind": "reconciliation",
                          "left": {"dataset": "typed", "per_day": time, "name": "rows"},
                          "right": {"dataset": "typed", "per_day": matrix.day_reference,
                                    "name": "reference"}})
    return found


@pytest.fixture(scope="module", params=DATABASES)
def matrix(request, servers, tmp_path_factory):
    """(database, its Matrix, {engine: {check id: result}}, Database): the table audited
    once per engine."""
    kind = request.param
    spec = MATRICES[kind]
    db = Database(database_url(kind, servers, tmp_path_factory.mktemp(kind)))
    db.execute(*spec.ddl)
    parents = "".join(f"\n{parent}: {{table: {parent}, key: {key}, tenant_column: tenant}}"
                      for parent, key in [("accounts", "ref"), ("ledgers", "code")]
                      if any(reference[1] == parent for reference in spec.references))
    datasets = "typed: {table: typed, key: id, tenant_column: tenant}" + parents
    text = "\n".join(f"- {json.dumps(check)}" for check in checks(spec))
    audit = parse_audit(audit_text(db.url, datasets, text), file="types.yml")
    results = {}
    for engine in ENGINES:
        result = run_audit(audit, now=NOW, engine=engine, sample_limit=0)
        assert result.errors == [], (engine, result.errors)
        results[engine] = {check.id: check for check in result.checks}
    return kind, spec, results, db


def answer(check) -> tuple:
    """What both engines must agree on."""
    return (check.status, check.error, check.violation_count, check.population,
            sorted(check.violation_keys, key=repr))


def test_both_engines_give_the_same_answer(matrix):
    _, spec, results, _ = matrix
    pandas, sql = results["pandas"], results["sql"]
    assert list(pandas) == list(sql) == [check["id"] for check in checks(spec)]
    for check_id in pandas:
        assert answer(pandas[check_id]) == answer(sql[check_id]), check_id
        values = pandas[check_id].value, sql[check_id].value
        assert values == (None, None) or values[0] == pytest.approx(values[1], rel=1e-12), \
            check_id
        crashed = [check.error for check in (pandas[check_id], sql[check_id])
                   if check.error and "crashed" in check.error]
        assert crashed == [], check_id


@pytest.mark.parametrize("engine", ENGINES)
def test_duplicates_on_every_column(matrix, engine):
    _, spec, results, _ = matrix
    found = {column: results[engine][f"dup_{column}"] for column in spec.duplicates}
    assert {column: (check.error, sorted(check.violation_keys)) for column, check in
            found.items()} == {column: (None, keys) for column, keys in spec.duplicates.items()}
    assert {check.status for column, check in found.items() if spec.duplicates[column]} == {
        "fail"}


@pytest.mark.parametrize("engine", ENGINES)
def test_orphans_and_cross_tenant_on_uuid_and_decimal_keys(matrix, engine):
    _, spec, results, _ = matrix
    for column, _, orphans, crossed in spec.references:
        dangling = results[engine][f"orphans_{column}"]
        assert (dangling.error, dangling.violation_keys) == (None, orphans), column
        tenants = results[engine][f"tenants_{column}"]
        assert (tenants.error, tenants.violation_keys) == (None, crossed), column
        assert tenants.sample[0]["tenant"] == "t1"


@pytest.mark.parametrize("engine", ENGINES)
def test_reconciliation_sums_every_numeric_type(matrix, engine):
    """Left: the sum per tenant; right: the same without row 3. Tenant t1 differs by row
    3's value (unless it is 0), t2 not at all."""
    _, spec, results, _ = matrix
    for column, values in spec.numbers.items():
        check = results[engine][f"sum_{column}"]
        t1 = sum(value for row, value in values.items() if row in {1, 2, 3})
        expected = [] if values.get(3) == 0 else [("t1", t1, t1 - values[3], values[3])]
        shown = [(row["tenant"], row["left typed"], row["right typed"], row["difference"])
                 for row in check.sample]
        assert (check.error, check.population, shown) == (None, 2, expected), column
        assert check.status == ("fail" if expected else "pass"), column


@pytest.mark.parametrize("engine", ENGINES)
def test_metrics_over_numeric_types_in_windows_of_every_time_type(matrix, engine):
    _, spec, results, _ = matrix
    for column, values in spec.numbers.items():
        for function, compute in FUNCTIONS.items():
            for time, rows in [("all", set(values)), *spec.windows.items()]:
                check = results[engine][f"{function}_{column}_{time}"]
                numbers = [value for row, value in values.items() if row in rows]
                expected = compute(numbers)
                assert check.error is None, check.id
                assert check.value == pytest.approx(expected, rel=1e-12), check.id
                assert check.status == ("fail" if expected > THRESHOLD else "pass"), check.id


@pytest.mark.parametrize("engine", ENGINES)
def test_freshness_on_every_time_type(matrix, engine):
    _, spec, results, _ = matrix
    for time, age in spec.freshness.items():
        check = results[engine][f"fresh_{time}"]
        assert (check.error, check.value) == (None, age), time
        assert check.status == ("fail" if age > 12 * 3600 else "pass"), time


@pytest.mark.parametrize("engine", ENGINES)
def test_timestamp_valid_on_every_time_type(matrix, engine):
    _, spec, results, _ = matrix
    for time, problems in spec.valid.items():
        check = results[engine][f"valid_{time}"]
        assert check.error is None, time
        assert [(row["id"], row["problem"]) for row in check.sample] == problems, time


@pytest.mark.parametrize("engine", ENGINES)
def test_per_day_and_bursts_on_every_time_type(matrix, engine):
    _, spec, results, _ = matrix
    for time in spec.windows:
        clicks = results[engine][f"clicks_{time}"]
        assert (clicks.error, clicks.violation_keys) == (None, [(2,)]), time
        if time == spec.day_reference:
            continue
        daily = results[engine][f"daily_{time}"]
        assert daily.error is None, time
        assert [(row["day"], row["rows"], row["reference"]) for row in daily.sample] == \
            spec.per_day[time], time


@pytest.mark.parametrize("engine", ENGINES)
def test_a_time_of_day_is_no_timestamp(matrix, engine):
    """TIME holds no date: every check that needs a moment says so, and runs nothing."""
    _, spec, results, _ = matrix
    for time in spec.times_of_day:
        reading = [f"fresh_{time}", f"valid_{time}", f"clicks_{time}", f"daily_{time}",
                   *[f"{function}_{column}_{time}" for column in spec.numbers
                     for function in FUNCTIONS]]
        assert {(results[engine][check].status, results[engine][check].error)
                for check in reading} == {("error", NO_TIMESTAMP.format(time))}


# ---------------------------------------------------------------------------
# The same table through a `sql:` dataset: its columns are typed from the server's
# description of the result, as a table's are reflected.

QUERY_TYPES = {  # (database, column) -> a check that reads the column by its type
    ("postgresql", "doc"): ("duplicates", {"columns": ["doc"]}),
    ("postgresql", "price"): ("metric", {"value": "sum(price)",
                                         "thresholds": {"critical": "> 1000"}}),
    ("postgresql", "clock"): ("freshness", {"time": "clock", "max_age": "12h"}),
    ("mariadb", "raw"): ("duplicates", {"columns": ["raw"]}),
}


def run_query_dataset(db: Database, found: list[dict]):
    text = "\n".join(f"- {json.dumps({'dataset': 'q', **check})}" for check in found)
    audit = parse_audit(audit_text(db.url, 'q: {sql: "SELECT * FROM typed", key: id}', text))
    return {engine: {check.id: check for check in
                     run_audit(audit, now=NOW, engine=engine, sample_limit=0).checks}
            for engine in ENGINES}


def test_duplicates_on_every_column_of_a_query(matrix):
    kind, spec, _, db = matrix
    columns = list(spec.duplicates)
    results = run_query_dataset(db, [{"id": column, "kind": "duplicates", "columns": [column]}
                                     for column in columns])
    for engine in ENGINES:
        assert {column: (check.error, sorted(check.violation_keys))
                for column, check in results[engine].items()} == {
            column: (None, spec.duplicates[column]) for column in columns}, engine


@pytest.mark.parametrize("kind, column", list(QUERY_TYPES))
def test_query_columns_are_read_by_their_types(servers, tmp_path, kind, column):
    """Untyped, these differ: PostgreSQL json has no equality, money no cast to float, a
    time of day would read as no time at all; a MariaDB BLOB would be text, '' no key."""
    db = Database(database_url(kind, servers, tmp_path))
    db.execute(*MATRICES[kind].ddl)
    check_kind, settings = QUERY_TYPES[(kind, column)]
    results = run_query_dataset(db, [{"id": column, "kind": check_kind, **settings}])
    pandas, sql = results["pandas"][column], results["sql"][column]
    assert pandas.status != "error" or pandas.error == NO_TIMESTAMP.format(column)
    assert answer(sql) == answer(pandas)


# ---------------------------------------------------------------------------
# Filters compare a value from the audit file with a typed column as a value of its type.


@pytest.mark.parametrize("engine", ENGINES)
def test_filters_on_typed_postgresql_columns(servers, engine):
    db = Database(servers.database("postgresql"))
    db.execute(*POSTGRESQL.ddl)
    filters = {"ref": {"ref": U1}, "mood": {"mood": "ok"}, "money": {"price": {"gt": 2}},
               "day": {"day": "2026-01-30"}, "since_day": {"day": {"ge": "2026-01-30"}},
               "aware": {"aware_at": {"ge": "2026-01-30T00:00:00Z"}}}
    text = "\n".join(
        "- " + json.dumps({"id": name, "kind": "metric", "dataset": "typed", "value": "count",
                           "where": where, "thresholds": {"critical": "> 100"}})
        for name, where in filters.items())
    audit = parse_audit(audit_text(db.url, "typed: {table: typed, key: id}", text))
    result = run_audit(audit, now=NOW, engine=engine, sample_limit=0)
    found = {check.id: (check.error, check.value) for check in result.checks}
    assert found == {"ref": (None, 2), "mood": (None, 2), "money": (None, 2),
                     "day": (None, 2), "since_day": (None, 3), "aware": (None, 3)}


def count_where(db: Database, datasets: str, filters: dict[str, tuple[str, dict]]) -> dict:
    """{engine: {name: (error, count)}} for a count of each dataset's rows in `filters`
    (name -> (dataset, where))."""
    text = "\n".join(
        "- " + json.dumps({"id": name, "kind": "metric", "dataset": dataset, "value": "count",
                           "where": where, "thresholds": {"critical": "> 100"}})
        for name, (dataset, where) in filters.items())
    audit = parse_audit(audit_text(db.url, datasets, text))
    return {engine: {check.id: (check.error, check.value) for check in
                     run_audit(audit, now=NOW, engine=engine, sample_limit=0).checks}
            for engine in ENGINES}


def test_filters_on_typed_mariadb_columns(servers):
    db = Database(servers.database("mariadb"))
    db.execute(*MARIADB.ddl)
    found = count_where(db, "typed: {table: typed, key: id}", {
        "day": ("typed", {"day": "2026-01-30"}),
        "since_day": ("typed", {"day": {"ge": "2026-01-30"}}),
        "days": ("typed", {"day": ["2026-01-29", "2026-02-01"]}),
        "at": ("typed", {"at6": "2026-01-30T10:00:00Z"}),
        "since_at": ("typed", {"at6": {"ge": "2026-01-30T01:00:00+01:00"}})})
    assert found["pandas"] == found["sql"] == {
        "day": (None, 2), "since_day": (None, 3), "days": (None, 2), "at": (None, 2),
        "since_at": (None, 3)}


def test_filters_read_a_value_as_the_column_type_or_say_it_is_none(servers):
    """A uuid written otherwise (no hyphens) is not its text: none match on either engine
    (a count of no rows is 0).
    A day or a time that is none is the same error on both. A naive time column is read in
    the dataset's zone (10:00 in Paris is 09:00 UTC)."""
    db = Database(servers.database("postgresql"))
    db.execute(*POSTGRESQL.ddl)
    found = count_where(db, """\
        typed: {table: typed, key: id}
        paris: {table: typed, key: id, timezone: Europe/Paris}
        """, {
        "unhyphenated": ("typed", {"ref": U1.replace("-", "")}),
        "no_day": ("typed", {"day": "2026/01/30"}),
        "no_time": ("typed", {"aware_at": {"lt": "yesterday"}}),
        "local": ("paris", {"local_at": "2026-01-30T09:00:00Z"}),
        "uuids": ("typed", {"ref": {"not": [U1, U3]}})})
    assert found["pandas"] == found["sql"]
    assert found["sql"] == {
        "unhyphenated": (None, 0), "local": (None, 2), "uuids": (None, 2),
        "no_day": ("where.day: '2026/01/30' is no day; the column holds dates (write e.g. "
                   "2026-01-30)", None),
        "no_time": ("where.aware_at: 'yesterday' is no date and time; the column holds "
                    "timestamps (write an ISO time, e.g. 2026-01-30T12:00:00Z)", None)}


def test_citext_keys_compare_alike_on_both_engines(servers):
    """citext compares case-insensitively inside PostgreSQL; its keys compare as the text
    the pandas engine reads (as MariaDB's collated text compares byte for byte)."""
    db = Database(servers.database("postgresql"))
    db.execute("CREATE EXTENSION IF NOT EXISTS citext",
               "CREATE TABLE people (id int PRIMARY KEY, email citext)",
               "INSERT INTO people VALUES (1, 'A@x.com'), (2, 'a@x.com'), (3, 'b@x.com')",
               "CREATE TABLE owners (email citext PRIMARY KEY)",
               "INSERT INTO owners VALUES ('a@X.com')")
    audit = parse_audit(audit_text(db.url, """\
        people: {table: people, key: id}
        owners: {table: owners, key: email}
        """, """\
        - {id: twice, kind: duplicates, dataset: people, columns: [email]}
        - {id: owned, kind: orphans, dataset: people, reference: email, parent: owners}
        """))
    pandas, sql = (run_audit(audit, now=NOW, engine=engine, sample_limit=0)
                   for engine in ENGINES)
    assert [answer(check) for check in pandas.checks] == [answer(check) for check in sql.checks]
