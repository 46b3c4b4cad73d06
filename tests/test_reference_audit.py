"""The reference audit against the reference data: exact violations, on every database.

The generator records which rows it broke; the audit must report exactly those
keys — nothing missing, nothing extra — and clean data must pass with exit 0.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import DATABASES, NOW, database_url
from integrity.audit import load_audit
from integrity.gate import exit_code
from integrity.reference import reference_audit_path
from integrity.reference.generator import generate, generate_next
from integrity.runner import run_audit

EXPECTED_STATUS = {
    "quote_email_counter": "fail",
    "quote_sms_counter": "fail",
    "quote_sent_at_preserved": "fail",
    "quote_sent_at_valid": "fail",
    "quote_send_double_clicks": "fail",
    "whatsapp_urls_well_formed": "fail",
    "quote_channel_distribution": "pass",
    "lead_duplicate_email": "fail",
    "lead_duplicate_phone": "warn",
    "message_orphans": "fail",
    "lead_orphans": "fail",
    "conversation_lead_orphans": "warn",
    "message_cross_tenant": "fail",
    "quote_agent_cross_tenant": "fail",
    "access_log_cross_tenant": "fail",
    "leads_match_webhooks": "warn",
    "whatsapp_quota_matches_messages": "fail",
    "sms_delivery_rate": "fail",
    "sms_template_fallback_rate": "pass",
    "sms_opt_out_rate": "warn",
    "sms_daily_limit_rate": "pass",
    "messages_arriving": "pass",
    "job_heartbeats": "fail",
    "lead_columns:expect_column_values_to_match_regex(phone)": "warn",
    "lead_columns:expect_column_values_to_match_regex(email)": "fail",
    "lead_columns:expect_column_values_to_be_unique(customerCode)": "fail",
    "lead_columns:expect_column_values_to_not_be_null(createdAt)": "pass",
    "quote_columns:expect_column_values_to_be_in_set(status)": "pass",
    "quote_columns:expect_column_values_to_be_between(emailSentCount)": "pass",
    "quote_columns:expect_column_values_to_be_between(smsSentCount)": "pass",
    "quote_columns:expect_column_values_to_match_regex(whatsappUrl)": "fail",
    "send_columns:expect_column_values_to_be_in_set(channel)": "pass",
    "send_columns:expect_column_values_to_be_in_set(status)": "fail",
    "send_columns:expect_column_values_to_not_be_null(sentAt)": "pass",
    "message_columns:expect_column_values_to_be_in_set(direction)": "pass",
    "message_columns:expect_column_value_lengths_to_be_between(body)": "fail",
    "sms_metric_columns:expect_column_values_to_be_between(sent_count)": "pass",
    "sms_metric_columns:expect_column_values_to_be_between(delivered_count)": "pass",
    "sms_metric_columns:expect_column_values_to_be_between(llm_cost_usd)": "pass",
    "sms_metric_columns:"
    "expect_column_pair_values_a_to_be_greater_than_b(sent_count, delivered_count)": "fail",
}


ENGINES = ["pandas", "sql"]


@pytest.fixture(scope="module", params=DATABASES)
def injected(request, servers, tmp_path_factory):
    """(url, reference) of injected reference data, once per database."""
    url = database_url(request.param, servers, tmp_path_factory.mktemp("injected"))
    return url, generate(url, scale=0.01, seed=11, now=NOW)


@pytest.fixture(scope="module", params=DATABASES)
def clean(request, servers, tmp_path_factory):
    url = database_url(request.param, servers, tmp_path_factory.mktemp("clean"))
    generate(url, scale=0.01, seed=3, now=NOW, inject=False)
    return url


def audit_reference(url, monkeypatch, engine="pandas"):
    monkeypatch.setenv("REFERENCE_DATABASE_URL", url)
    return run_audit(load_audit(reference_audit_path()), now=NOW, sample_limit=0, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_injected_violation_is_found_exactly(injected, engine, monkeypatch):
    url, reference = injected
    result = audit_reference(url, monkeypatch, engine)

    assert result.errors == []
    assert {check.id: check.status for check in result.checks} == EXPECTED_STATUS
    for check in result.checks:
        expected = reference.expected.get(check.id, set())
        assert set(check.violation_keys) == expected, check.id
        assert check.violation_count == len(expected), check.id
    assert exit_code(result) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_injections_cover_every_check_kind(injected, engine, monkeypatch):
    url, reference = injected
    result = audit_reference(url, monkeypatch, engine)
    kinds_with_violations = {check.kind for check in result.checks if check.violation_keys}
    assert kinds_with_violations == {
        "counter_vs_events", "timestamp_preserved", "timestamp_valid", "duplicates",
        "duplicate_events", "orphans", "cross_tenant", "reconciliation", "metric",
        "freshness", "custom_sql", "expectation_suite"}
    assert result.check("sms_delivery_rate").value == pytest.approx(0.85)
    assert result.check("sms_opt_out_rate").value == pytest.approx(
        reference.values["sms_opt_out_rate"])


@pytest.mark.parametrize("engine", ENGINES)
def test_clean_reference_data_passes(clean, engine, monkeypatch):
    result = audit_reference(clean, monkeypatch, engine)
    assert [(c.id, c.status, c.error) for c in result.checks if c.status != "pass"] == []
    assert exit_code(result) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_sqlite_also_catches_unparseable_timestamps(tmp_path, monkeypatch, engine):
    url = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    reference = generate(url, scale=0.01, seed=11, now=NOW)
    result = audit_reference(url, monkeypatch, engine)
    problems = {row["id"]: row["problem"] for row in result.check("quote_sent_at_valid").sample}
    assert problems[reference.unparseable_quote] == "unparseable"
    assert sorted(problems.values()) == ["before_createdAt", "in_future", "null", "unparseable"]


def test_both_engines_give_the_same_report(injected, monkeypatch):
    url, _ = injected
    pandas, sql = (audit_reference(url, monkeypatch, engine) for engine in ENGINES)
    assert [c.id for c in pandas.checks] == [c.id for c in sql.checks]
    for left, right in zip(pandas.checks, sql.checks):
        assert (left.id, left.status, left.violation_count, left.population, left.columns) == (
            right.id, right.status, right.violation_count, right.population, right.columns)
        assert left.violation_keys == right.violation_keys, left.id
    assert [c.engine for c in sql.checks if c.engine == "pandas"] == ["pandas"]  # E.164


@pytest.mark.parametrize("database", DATABASES)
def test_following_nights_are_found_exactly(database, servers, tmp_path, monkeypatch):
    """`generate_next` keeps the data and most violations, repairs a few and injects a
    few in the new day's rows; every night, the audit finds exactly what it recorded."""
    url = database_url(database, servers, tmp_path)
    reference = generate(url, scale=0.005, seed=11, now=NOW - timedelta(days=2))
    history = [reference]
    for _ in range(2):
        reference = generate_next(url, reference)
        history.append(reference)
        monkeypatch.setenv("REFERENCE_DATABASE_URL", url)
        result = run_audit(load_audit(reference_audit_path()), now=reference.now,
                           sample_limit=0)
        assert result.errors == []
        for check in result.checks:
            assert check.error is None, check.id
            assert set(check.violation_keys) == reference.expected.get(check.id, set()), check.id
    assert reference.now == NOW
    # The reference audit's own checks (the seed audits' keys persist every night: the same
    # incident in each night's last hour, the same code collision, the same SMS hours).
    audited = {check.id for check in result.checks}
    keys = [{(check, key) for check, found in night.expected.items() if check in audited
             for key in found} for night in history]
    lifecycle = [(len(after - before), len(after & before), len(before - after))
                 for before, after in zip(keys, keys[1:])]  # new, persisting, resolved
    # SQLite also has a quote with an unparseable sentAt, which no night repairs.
    assert lifecycle == ([(5, 51, 3), (5, 53, 3)] if database == "sqlite" else
                         [(5, 49, 4), (5, 51, 3)])
    rows = [{name: len(frame) for name, frame in night.tables.items()} for night in history]
    assert all(rows[2][name] > rows[1][name] > rows[0][name]
               for name in ("AgentQuote", "QuoteSend", "Lead", "Message", "AccessLog"))
