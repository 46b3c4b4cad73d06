"""The seeds' monitoring plans as audits (audits/seed-*.yml) against the reference data.

Each audit runs on generated data — tables, the request log, app.log, and on
PostgreSQL row level security — in SQLite, PostgreSQL and MariaDB, the same file
on each, and must report exactly what the generator injected: every check's
status, and every violation key the generator recorded (`Reference.expected`,
made from the injections, never from a check). Clean data passes every data
check. The health endpoint is a real server on loopback.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import NOW
from integrity.audit import load_audit
from integrity.cli import main
from integrity.reference.generator import enable_row_level_security, generate, write_app_log
from integrity.reference.traffic import SEND
from integrity.runner import run_audit

AUDITS = Path(__file__).resolve().parents[1] / "audits"
SEEDS = {path.stem: path for path in sorted(AUDITS.glob("seed-*.yml"))}
# Without earlier runs a relative bound ("< 50% of baseline") cannot be judged: the check
# says so at its `insufficient` level, info, for its one group.
BASELINE = {"quotes_sent_per_day", "workflow_creation_rate", "customer_creation_rate",
            "llm_cost_spike_warning"}
NOT_SQLITE = "row level security is PostgreSQL's; this database is sqlite"
# database_health's measures that need a server: on SQLite each says so, at info.
SERVER_MEASURES = {"connections", "idle_in_transaction", "long_queries", "slow_statements"}
NO_STATEMENTS = ("not measured: pg_stat_statements is not installed in this database (CREATE "
                 "EXTENSION pg_stat_statements, with it in shared_preload_libraries)")
NO_DIGESTS = ("not measured: performance_schema is off on this server (performance_schema=ON "
              "in its configuration, then a restart)")
NOT_MARIADB = "row level security is PostgreSQL's; this database is mysql"

# What the injected reference data does to each seed audit on SQLite: database_health
# measures the file's size and sequences; PostgreSQL and MariaDB measure their server
# (below), and PostgreSQL runs the isolation probe.
EXPECTED_STATUS = {
    "seed-000-send-quote": {
        "send_error_rate": "fail", "send_error_rate_rollback": "pass",
        "send_error_rate_30m": "pass", "send_duplicate_requests": "pass",
        "send_idempotency_hits": "pass", "send_response_p95": "fail",
        "validation_answered_500": "fail", "send_transaction_failures": "fail",
        "whatsapp_validation_error_rate": "warn", "whatsapp_invalid_phone_rate": "warn",
        "whatsapp_message_length_rate": "pass", "whatsapp_sends_blocked": "pass",
        "whatsapp_urls_well_formed": "fail", "quote_email_counter": "fail",
        "quote_sms_counter": "fail", "quote_sent_at_preserved": "fail",
        "quote_sent_at_valid": "fail", "quote_send_double_clicks": "fail",
        "send_error_messages": "pass", "quotes_sent_per_day": "info",
        "quote_channel_distribution": "pass", "send_success_rate": "warn",
        "send_success_rollback": "pass"},
    "seed-001-workflow": {
        "api_availability": "fail", "auth_failure_rate": "pass", "api_response_time": "warn",
        "database:connections": "info", "database:slow_statements": "info",
        "database:sequences": "pass", "workflow_creation_rate": "info",
        "customer_creation_rate": "info", "login_success_rate": "pass",
        "http_5xx_rate": "fail", "http_4xx_rate": "pass", "access_log_cross_tenant": "fail",
        "tenant_isolation": "error", "quote_agent_cross_tenant": "fail",
        "message_cross_tenant": "fail", "customer_code_unique": "fail"},
    "seed-002-voice-24h": {
        "backend_health": "pass", "error_rate": "fail", "log_errors": "fail",
        "background_jobs": "fail", "endpoint_p99": "warn", "health_response_time": "pass",
        "calls_response_time": "pass", "webhook_response_time": "pass",
        "assistants_response_time": "pass", "database:connections": "info",
        "database:long_queries": "info", "database:size": "pass"},
    "seed-003-crm-24h": {
        "database:connections": "info", "database:slow_statements": "info",
        "error_rate": "fail", "response_time": "fail",
        "average_response_time": "pass", "webhooks_receiving": "pass",
        "webhook_failures": "warn", "webhook_500s": "fail", "webhook_processing_time": "pass",
        "log_error_lines": "warn", "new_leads": "pass", "messages_arriving": "pass",
        "lead_duplicate_email": "fail", "lead_duplicate_phone": "warn",
        "messages_by_direction": "pass", "message_echoes": "pass",
        "whatsapp_quota_matches_messages": "fail", "leads_match_webhooks": "warn",
        "message_orphans": "fail", "lead_orphans": "fail", "conversation_lead_orphans": "warn"},
    "seed-004-sms": {
        "delivery_rate_critical": "fail", "llm_failure_critical": "pass",
        "llm_cost_spike_warning": "info", "opt_out_rate_warning": "warn",
        "daily_limit_hit_warning": "pass", "sms_delivery_rate": "fail",
        "sms_template_fallback_rate": "pass", "sms_opt_out_rate": "warn",
        "sms_daily_limit_rate": "pass", "sms_metrics_recorded": "pass",
        "sms_metric_columns:expect_column_values_to_be_between(sent_count)": "pass",
        "sms_metric_columns:expect_column_values_to_be_between(delivered_count)": "pass",
        "sms_metric_columns:expect_column_values_to_be_between(llm_cost_usd)": "pass",
        "sms_metric_columns:"
        "expect_column_pair_values_a_to_be_greater_than_b(sent_count, delivered_count)": "fail"},
}
# On PostgreSQL, database_health is one result per measure; the test server has no
# pg_stat_statements, which the check says instead of passing.
ON_POSTGRES = {
    "seed-001-workflow": {"database:connections": "pass", "database:slow_statements": "warn",
                          "database:sequences": "pass", "tenant_isolation": "fail"},
    "seed-002-voice-24h": {"database:connections": "pass", "database:long_queries": "pass",
                           "database:size": "pass"},
    "seed-003-crm-24h": {"database:connections": "pass", "database:slow_statements": "warn"},
}

# On MariaDB too; its test server runs with performance_schema off, which the check says.
ON_MARIADB = {
    "seed-001-workflow": {"database:connections": "pass", "database:slow_statements": "warn",
                          "database:sequences": "pass"},
    "seed-002-voice-24h": {"database:connections": "pass", "database:long_queries": "pass",
                           "database:size": "pass"},
    "seed-003-crm-24h": {"database:connections": "pass", "database:slow_statements": "warn"},
}


@pytest.fixture(scope="module")
def sqlite_injected(tmp_path_factory):
    """Injected reference data in SQLite, with app.log written beside it."""
    folder = tmp_path_factory.mktemp("seeds")
    reference = generate(f"sqlite:///{folder / 'reference.sqlite'}", scale=0.01, seed=11,
                         now=NOW)
    return f"sqlite:///{folder / 'reference.sqlite'}", folder / "app.log", reference


@pytest.fixture(scope="module")
def sqlite_clean(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    reference = generate(f"sqlite:///{folder / 'reference.sqlite'}", scale=0.01, seed=3,
                         now=NOW, inject=False)
    return f"sqlite:///{folder / 'reference.sqlite'}", folder / "app.log", reference


def postgres_reference(servers, folder: Path, inject: bool):
    url = servers.database("postgresql")
    reference = generate(url, scale=0.01, seed=11 if inject else 3, now=NOW, inject=inject)
    role = enable_row_level_security(reference, url, role=f"app_{uuid.uuid4().hex[:8]}",
                                     leaky=inject)
    log = write_app_log(reference, folder / "app.log")
    return url, log, reference, role


def drop_role(url: str, role: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP OWNED BY {role}")
        connection.exec_driver_sql(f"DROP ROLE {role}")
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_injected(servers, tmp_path_factory):
    url, log, reference, role = postgres_reference(servers, tmp_path_factory.mktemp("pg"), True)
    yield url, log, reference, role
    drop_role(url, role)


@pytest.fixture(scope="module")
def postgres_clean(servers, tmp_path_factory):
    url, log, reference, role = postgres_reference(servers, tmp_path_factory.mktemp("pgc"),
                                                   False)
    yield url, log, reference, role
    drop_role(url, role)


def mariadb_reference(servers, folder: Path, inject: bool):
    url = servers.database("mariadb")
    reference = generate(url, scale=0.01, seed=11 if inject else 3, now=NOW, inject=inject)
    return url, write_app_log(reference, folder / "app.log"), reference


@pytest.fixture(scope="module")
def mariadb_injected(servers, tmp_path_factory):
    return mariadb_reference(servers, tmp_path_factory.mktemp("maria"), True)


@pytest.fixture(scope="module")
def mariadb_clean(servers, tmp_path_factory):
    return mariadb_reference(servers, tmp_path_factory.mktemp("mariac"), False)


def audit_seed(seed: str, url: str, log: Path, health: str, role: str | None = None,
               **environ):
    """Run one seed audit as its file says, its variables pointing at this data."""
    environ = {"REFERENCE_DATABASE_URL": url, "APP_LOG": str(log), "HEALTH_URL": health,
               "HEALTH_RETRY_DELAY": "0.2s", **({"APP_ROLE": role} if role else {}), **environ}
    return run_audit(load_audit(SEEDS[seed], environ=environ), now=NOW, sample_limit=0)


def assert_exactly_injected(result, reference) -> None:
    for check in result.checks:
        if check.id in BASELINE:
            assert check.violation_keys == [("all rows",)], check.id
            assert "too little history for a baseline" in " ".join(check.notes), check.id
        elif check.error is not None or check.kind == "http":  # no data of the reference's
            assert check.violation_keys == [], check.id
        else:
            assert set(check.violation_keys) == reference.expected.get(check.id, set()), \
                check.id
            assert check.violation_count == len(reference.expected.get(check.id, ())), check.id
        if check.id in reference.values:
            assert check.value == pytest.approx(reference.values[check.id]), check.id


def test_there_is_an_audit_per_seed():
    assert list(SEEDS) == list(EXPECTED_STATUS)


@pytest.mark.parametrize("seed", list(EXPECTED_STATUS))
def test_every_seed_audit_validates(seed):
    outcome = CliRunner().invoke(main, ["validate", str(SEEDS[seed])])
    assert outcome.exit_code == 0, outcome.output


@pytest.mark.parametrize("seed", list(EXPECTED_STATUS))
def test_each_seed_audit_finds_exactly_what_was_injected(seed, sqlite_injected, health):
    url, log, reference = sqlite_injected
    result = audit_seed(seed, url, log, f"{health}/health")
    assert result.errors == []
    assert {check.id: check.status for check in result.checks} == EXPECTED_STATUS[seed]
    for check in result.checks:
        if check.kind == "row_level_security":
            assert check.error == NOT_SQLITE
        if check.kind == "database_health" and check.id.split(":")[1] in SERVER_MEASURES:
            assert check.notes[0].startswith("not applicable on SQLite: "), check.id
    assert_exactly_injected(result, reference)


@pytest.mark.parametrize("data", ["sqlite_injected", "mariadb_injected"])
def test_the_incident_as_the_plans_read_it(data, request, health):
    """The hour of the incident, in the plans' numbers: 8 of the send endpoint's 41
    requests failed (one a transaction), the WhatsApp endpoint answered one validation
    failure with a 500, and the Chatwoot webhook failed 5 times."""
    url, log, reference = request.getfixturevalue(data)
    send = audit_seed("seed-000-send-quote", url, log, f"{health}/health")
    assert send.check("send_error_rate").value == pytest.approx(8 / 41)
    assert send.check("send_transaction_failures").value == pytest.approx(1 / 41)
    assert send.check("send_duplicate_requests").value == pytest.approx(1 / 41)
    assert send.check("send_idempotency_hits").value == 24  # one a complete hour
    assert send.check("send_response_p95").value > 6000
    assert send.check("whatsapp_validation_error_rate").value == pytest.approx(5 / 30)
    assert send.check("whatsapp_invalid_phone_rate").value == pytest.approx(4 / 30)
    assert send.check("send_success_rate").value == pytest.approx((33 + 25) / 71)
    [answered] = send.check("validation_answered_500").sample
    assert (answered["endpoint"], answered["statusCode"], answered["errorCode"]) == (
        "/api/agents/quotes/send/whatsapp", 500, "INVALID_PHONE")
    crm = audit_seed("seed-003-crm-24h", url, log, f"{health}/health")
    assert crm.check("webhook_failures").value == 5
    assert crm.check("webhook_500s").value == 5
    assert crm.check("response_time").group_values[SEND] > 5000
    voice = audit_seed("seed-002-voice-24h", url, log, f"{health}/health")
    [stopped] = voice.check("background_jobs").sample
    # It stopped at 12:10, twenty minutes before the run; its last run began at 12:09:30.
    assert (stopped["job"], stopped["newest"], stopped["age"], stopped["level"]) == (
        "call-sync", "2026-01-30T12:09:30.120000Z", "20.5m", "critical")


def test_the_health_endpoint_is_retried_then_fails(sqlite_injected, health):
    """"If database shows false: wait 30 seconds and retry" — the plan's 4 retries, here
    0.2 s apart, and then the violation says what the endpoint said."""
    url, log, _ = sqlite_injected
    result = audit_seed("seed-002-voice-24h", url, log, f"{health}/degraded")
    check = result.check("backend_health")
    assert check.status == "fail"
    assert [(row["expectation"], row["expected"], row["found"]) for row in check.sample] == [
        ("services.database", "true", "false")]
    assert check.notes[0].startswith("failed 5 times, 0.2s apart")


@pytest.mark.parametrize("seed", list(EXPECTED_STATUS))
def test_clean_reference_data_passes_every_data_check(seed, sqlite_clean, health):
    url, log, _ = sqlite_clean
    result = audit_seed(seed, url, log, f"{health}/health")
    assert [(c.id, c.status, c.error) for c in result.checks if c.status != "pass"
            and c.id not in BASELINE and c.kind != "row_level_security"
            and not (c.status == "info" and c.id.split(":")[-1] in SERVER_MEASURES)] == []
    assert {c.id: c.status for c in result.checks if c.id in BASELINE} == {
        c: "info" for c in BASELINE if c in EXPECTED_STATUS[seed]}


@pytest.mark.parametrize("seed", ["seed-002-voice-24h", "seed-003-crm-24h"])
def test_the_sqlite_demo_runs_without_skipping_database_health(seed, sqlite_clean, health,
                                                              tmp_path):
    """`integrity run` on the SQLite demo as its file says, no --skip: what applies to a
    file is measured, what needs a server is said at info, and clean data passes the gate."""
    url, log, _ = sqlite_clean
    outcome = CliRunner().invoke(
        main, ["run", str(SEEDS[seed]), "--now", NOW.isoformat(), "--output", str(tmp_path),
               "--no-history", "--no-lock", "--summary", "all"],
        env={"REFERENCE_DATABASE_URL": url, "APP_LOG": str(log),
             "HEALTH_URL": f"{health}/health"})
    assert outcome.exit_code == 0, outcome.output
    assert "database:connections" in outcome.output


@pytest.mark.parametrize("seed", list(ON_POSTGRES))
def test_on_postgresql_with_row_level_security(seed, postgres_injected, health):
    url, log, reference, role = postgres_injected
    result = audit_seed(seed, url, log, f"{health}/health", role)
    assert result.errors == []
    expected = {check: status for check, status in EXPECTED_STATUS[seed].items()
                if not check.startswith("database:")} | ON_POSTGRES[seed]
    assert {check.id: check.status for check in result.checks} == expected
    for check in result.checks:
        if check.id == "database:slow_statements":
            assert check.notes == [NO_STATEMENTS]
    assert_exactly_injected(result, reference)


def test_the_isolation_probe_counts_what_each_tenant_sees(postgres_injected, health):
    """Conversations without a lead leak to every tenant; Message has no row level
    security at all: each probed tenant sees exactly the other tenants' rows the
    generator counted."""
    url, log, reference, role = postgres_injected
    result = audit_seed("seed-001-workflow", url, log, f"{health}/health", role)
    check = result.check("tenant_isolation")
    rows = {(r["dataset"], r["problem"], r["tenant"]): r["other_tenant_rows"]
            for r in check.sample}
    assert {key for key, seen in rows.items() if seen is None} == {
        ("messages", "rls off", None)}
    assert {key: seen for key, seen in rows.items() if seen is not None} == {
        (dataset, "leak", tenant): seen for key, seen in reference.values.items()
        if key.startswith("tenant_isolation:")
        for dataset, tenant in [key.split(":")[1:]]}
    assert check.population == 5


@pytest.mark.parametrize("seed", list(ON_POSTGRES))
def test_clean_postgresql_passes_every_data_check(seed, postgres_clean, health):
    url, log, _, role = postgres_clean
    result = audit_seed(seed, url, log, f"{health}/health", role)
    assert [(c.id, c.status, c.error) for c in result.checks if c.status != "pass"
            and c.id not in BASELINE and c.id != "database:slow_statements"] == []


@pytest.mark.parametrize("seed", list(EXPECTED_STATUS))
def test_on_mariadb_each_seed_audit_finds_exactly_what_was_injected(seed, mariadb_injected,
                                                                      health):
    """The same files, unchanged, on MariaDB: every status, key and value as on SQLite and
    PostgreSQL; the server's health is measured, row level security is PostgreSQL's."""
    url, log, reference = mariadb_injected
    result = audit_seed(seed, url, log, f"{health}/health")
    assert result.errors == []
    expected = {check: status for check, status in EXPECTED_STATUS[seed].items()
                if not check.startswith("database:")} | ON_MARIADB.get(seed, {})
    assert {check.id: check.status for check in result.checks} == expected
    for check in result.checks:
        if check.kind == "row_level_security":
            assert check.error == NOT_MARIADB
        if check.id == "database:slow_statements":
            assert check.notes == [NO_DIGESTS]
    assert_exactly_injected(result, reference)


@pytest.mark.parametrize("seed", list(EXPECTED_STATUS))
def test_clean_mariadb_passes_every_data_check(seed, mariadb_clean, health):
    url, log, _ = mariadb_clean
    result = audit_seed(seed, url, log, f"{health}/health")
    assert [(c.id, c.status, c.error) for c in result.checks if c.status != "pass"
            and c.id not in BASELINE and c.id != "database:slow_statements"
            and c.kind != "row_level_security"] == []
