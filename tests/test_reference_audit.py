"""The reference audit against the reference data: exact violations, on every database.

The generator records which rows it broke; the audit must report exactly those
keys — nothing missing, nothing extra — and clean data must pass with exit 0.
"""

from __future__ import annotations

import pytest

from conftest import NOW
from integrity.config import load_audit
from integrity.reference import reference_audit_path
from integrity.reference.generator import generate
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
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reference.sqlite'}"
    return request.getfixturevalue("postgres_database")


def audit_reference(url, monkeypatch):
    monkeypatch.setenv("REFERENCE_DATABASE_URL", url)
    return run_audit(load_audit(reference_audit_path()), now=NOW, sample_limit=0)


def test_every_injected_violation_is_found_exactly(database_url, monkeypatch):
    reference = generate(database_url, scale=0.01, seed=11, now=NOW)
    result = audit_reference(database_url, monkeypatch)

    assert result.errors == []
    assert {check.id: check.status for check in result.checks} == EXPECTED_STATUS
    for check in result.checks:
        expected = reference.expected.get(check.id, set())
        assert set(check.violation_keys) == expected, check.id
        assert check.violation_count == len(expected), check.id
    assert result.exit_code == 1


def test_injections_cover_every_check_kind(database_url, monkeypatch):
    reference = generate(database_url, scale=0.01, seed=11, now=NOW)
    result = audit_reference(database_url, monkeypatch)
    kinds_with_violations = {check.kind for check in result.checks if check.violation_keys}
    assert kinds_with_violations == {
        "counter_vs_events", "timestamp_preserved", "timestamp_valid", "duplicates",
        "duplicate_events", "orphans", "cross_tenant", "reconciliation", "metric",
        "freshness", "custom_sql"}
    assert result.check("sms_delivery_rate").value == pytest.approx(0.85)
    assert result.check("sms_opt_out_rate").value == pytest.approx(
        reference.values["sms_opt_out_rate"])


def test_clean_reference_data_passes(database_url, monkeypatch):
    generate(database_url, scale=0.01, seed=3, now=NOW, inject=False)
    result = audit_reference(database_url, monkeypatch)
    assert [(c.id, c.status, c.error) for c in result.checks if c.status != "pass"] == []
    assert result.exit_code == 0


def test_sqlite_also_catches_unparseable_timestamps(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    reference = generate(url, scale=0.01, seed=11, now=NOW)
    result = audit_reference(url, monkeypatch)
    problems = {row["id"]: row["problem"] for row in result.check("quote_sent_at_valid").sample}
    assert problems[reference.unparseable_quote] == "unparseable"
    assert sorted(problems.values()) == ["before_createdAt", "in_future", "null", "unparseable"]
