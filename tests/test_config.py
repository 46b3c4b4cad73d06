"""Audit files: every mistake is named by file, line and path, before anything connects."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from integrity.audit import load_audit, parse_audit
from integrity.checks import CHECKS
from integrity.errors import ConfigError

KNOWN = ", ".join(sorted(CHECKS))  # every kind, in the order errors list them

HEAD = """\
connection:
  url: sqlite:///data.sqlite
datasets:
  quotes: {table: AgentQuote, key: id, tenant_column: tenantId}
  sends: {table: QuoteSend, key: id}
checks:
"""


def errors(checks: str, head: str = HEAD, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_audit(head + textwrap.indent(textwrap.dedent(checks), "  "), file="a.yml",
                    environ=environ or {})
    return str(caught.value).splitlines()


def test_valid_audit_parses_into_typed_checks():
    audit = parse_audit(HEAD + textwrap.indent(textwrap.dedent("""\
        - kind: counter_vs_events
          dataset: quotes
          counter: emailSentCount
          events: {dataset: sends, entity: quoteId, time: sentAt, where: {channel: EMAIL}}
          window: 90s
        - id: fresh
          kind: freshness
          dataset: sends
          time: sentAt
          warn_after: 1h
        """), "  "), file="a.yml")
    counter, fresh = audit.checks
    assert counter.id == "quotes.counter_vs_events"
    assert counter.window == timedelta(seconds=90)
    assert counter.events.where[0].column == "channel"
    assert fresh.id == "fresh" and fresh.warn_after == timedelta(hours=1)
    assert audit.name == "a"


def test_unknown_kind_suggests_the_closest():
    assert errors("- {kind: dupes, dataset: quotes}") == [
        "a.yml:7:6: checks[0].kind: unknown check kind 'dupes'; did you mean 'duplicates'? "
        f"(known: {KNOWN})"]


def test_wrong_type_names_the_path_and_line():
    assert errors("""\
        - kind: duplicates
          dataset: quotes
          columns: [email]
        - kind: duplicate_events
          dataset: sends
          by: quoteId
          time: sentAt
          window: 5 minutes
        """) == ["a.yml:14:5: checks[1].window: invalid duration '5 minutes': "
                 "use e.g. 30s, 5m, 1h, 7d"]


def test_all_errors_are_reported_together():
    assert errors("""\
        - kind: duplicates
          dataset: quote
          columns: [email]
        - kind: metric
          dataset: quotes
          value: avg(total)
          thresholds: {warn: ">> 3"}
        - kind: orphans
          dataset: sends
          reference: quoteId
          parent: quotes
          colour: red
        """) == [
        "a.yml:8:5: checks[0].dataset: unknown dataset 'quote'; did you mean 'quotes'? "
        "(defined: quotes, sends)",
        "a.yml:13:18: checks[1].thresholds.warn: invalid threshold '>> 3': "
        "use e.g. '> 0', '> 5%', 'count >= 10'",
        "a.yml:18:5: checks[2].colour: unknown setting 'colour' (allowed here: id, kind, "
        "description, severity, thresholds, where, on_empty, notify, engine, dataset, reference, "
        "parent, parent_key, parent_where, required)"]


@pytest.mark.parametrize("checks, message", [
    ("[]", "a.yml:6:1: checks: list should have at least 1 item after validation, not 0"),
    ("5", "a.yml:6:1: checks: input should be a valid list")])
def test_a_checks_list_that_is_empty_or_no_list_is_said_so(checks, message):
    with pytest.raises(ConfigError) as caught:
        parse_audit(HEAD.replace("checks:\n", f"checks: {checks}\n"), file="a.yml")
    assert str(caught.value).splitlines() == [message]


def test_missing_required_setting():
    assert errors("- {kind: orphans, dataset: sends, parent: quotes}") == [
        "a.yml:7:5: checks[0].reference: required setting is missing"]


def test_malformed_yaml_points_at_the_line():
    with pytest.raises(ConfigError) as caught:
        parse_audit("connection:\n  url: [unclosed\ndatasets: {}\n", file="bad.yml")
    assert str(caught.value).startswith("bad.yml:3:")
    assert "invalid YAML" in str(caught.value)


def test_duplicate_keys_are_errors_not_silently_overwritten():
    with pytest.raises(ConfigError) as caught:
        parse_audit("connection:\n  url: a\n  url: b\n", file="dup.yml")
    assert str(caught.value) == "dup.yml:3:3: connection: duplicate key 'url' (first at line 2)"


def test_environment_variables_are_interpolated(tmp_path):
    text = HEAD.replace("sqlite:///data.sqlite", "${DB_URL}") + \
        "  - {kind: freshness, dataset: sends, time: sentAt, max_age: '${AGE:-2h}'}\n"
    audit = parse_audit(text, environ={"DB_URL": "postgresql://u:pw@h/db"})
    assert audit.connection.url == "postgresql://u:pw@h/db"
    assert audit.checks[0].max_age == timedelta(hours=2)
    with pytest.raises(ConfigError) as caught:
        parse_audit(text, file="env.yml", environ={})
    assert str(caught.value) == ("env.yml:2:3: connection.url: environment variable DB_URL is "
                                 "not set (export it, or write ${DB_URL:-default})")
    literal = parse_audit(HEAD + "  - {kind: freshness, dataset: sends, time: sentAt, "
                                 "max_age: 1h, description: 'cost $${x}'}\n")
    assert literal.checks[0].description == "cost ${x}"


def test_duplicate_check_ids():
    assert errors("""\
        - {id: a, kind: freshness, dataset: sends, time: sentAt, max_age: 1h}
        - {id: a, kind: freshness, dataset: quotes, time: sentAt, max_age: 1h}
        """) == ["a.yml:8:6: checks[1].id: duplicate check id 'a' (also checks[0]); "
                 "give each check a distinct `id`"]


def test_custom_sql_must_be_a_single_select():
    assert errors("- {id: x, kind: custom_sql, sql: 'DELETE FROM quotes'}") == [
        "a.yml:7:31: checks[0].sql: audit SQL runs read-only: it must be one SELECT "
        "(or WITH ... SELECT), not DELETE"]
    assert errors("- {id: x, kind: custom_sql, sql: 'SELECT 1; DROP TABLE quotes'}") == [
        "a.yml:7:31: checks[0].sql: only one statement is allowed (SQLite reads 2: SELECT, "
        "DROP)"]
    assert errors("- {id: x, kind: custom_sql, sql: {mysql: 'SELECT 1 INTO OUTFILE \"/x\"',"
                  " default: 'SELECT 1'}, population_sql: 'SELECT 1 FOR UPDATE'}") == [
        "a.yml:7:37: checks[0].sql.mysql: SELECT ... INTO writes (a table, a file or "
        "variables): only a read is allowed",
        "a.yml:7:96: checks[0].population_sql: FOR UPDATE / FOR SHARE locks rows: an audit "
        "only reads"]
    # A semicolon inside a string literal or a comment is not a second statement.
    audit = parse_audit(HEAD + "  - {id: x, kind: custom_sql, sql: \"SELECT ';' AS a -- ;\"}\n")
    assert audit.checks[0].sql == {"default": "SELECT ';' AS a -- ;"}


def test_a_dataset_query_must_be_one_read_query_too():
    head = HEAD.replace("  sends: {table: QuoteSend, key: id}\n", (
        "  sends: {sql: 'SELECT 1 AS id) AS q; COMMIT; BEGIN READ WRITE; CREATE TABLE p(x int);"
        " COMMIT; SELECT * FROM (SELECT 1 AS id', key: id}\n"
        "  gone: {sql: 'DELETE FROM Tenant RETURNING id', key: id}\n"))
    assert errors("- {kind: freshness, dataset: quotes, time: sentAt, max_age: 1h}",
                  head=head) == [
        "a.yml:5:11: datasets.sends.sql: cannot read this as one SQLite query (Invalid "
        "expression / Unexpected token at line 1, column 15 of the query); integrity runs "
        "only SQL it can prove is a single read",
        "a.yml:6:10: datasets.gone.sql: audit SQL runs read-only: it must be one SELECT (or "
        "WITH ... SELECT), not DELETE"]


def test_check_specific_rules():
    assert errors("""\
        - kind: reconciliation
          left: {dataset: quotes, by: [tenantId], per_day: createdAt}
          right: {dataset: sends, by: [tenantId]}
        """) == ["a.yml:9:29: checks[0].right.by: left has 2 key(s), right has 1; "
                 "they are matched by position"]
    assert errors("""\
        - kind: metric
          dataset: sends
          value: avg(cost)
          numerator: count
          denominator: count
          thresholds: {warn: "> 1"}
        """) == ["a.yml:7:5: checks[0]: give exactly one of value, numerator+denominator, "
                 "or share"]
    assert errors("""\
        - kind: duplicates
          dataset: quotes
          columns: [phone]
          normalize: {phone: phone}
          default_region: XX
        """) == ["a.yml:11:5: checks[0].default_region: unknown region 'XX' "
                 "(use a two-letter country code such as US or GB)"]
    assert errors("""\
        - kind: freshness
          dataset: sends
          time: sentAt
        """) == ["a.yml:7:5: checks[0]: give max_age, or warn_after and/or critical_after"]


def test_an_aligned_window_is_whole_buckets():
    assert errors("""\
        - {id: hours, kind: metric, dataset: sends, value: count, time: sentAt,
           window: 90m, align: hour, thresholds: {warn: "< 1"}}
        - {id: weeks, kind: metric, dataset: sends, value: count, time: sentAt,
           window: 1d, align: week, thresholds: {warn: "< 1"}}
        - {id: unbounded, kind: metric, dataset: sends, value: count, align: day,
           thresholds: {warn: "< 1"}}
        """) == ["a.yml:8:6: checks[0].window: window 1.5h is not a whole number of hours "
                 "(align: hour); use e.g. 1h or 2h",
                 "a.yml:10:6: checks[1].window: window 1d is not a whole number of weeks "
                 "(align: week); use e.g. 7d or 14d",
                 "a.yml:11:65: checks[2].align: align needs a window (and its time column): "
                 "the number of whole buckets measured, e.g. window: 1h with align: hour"]


def test_a_baseline_looks_at_runs_or_a_window():
    audit = parse_audit(HEAD + textwrap.indent(textwrap.dedent("""\
        - {id: weekly, kind: metric, dataset: sends, value: count,
           thresholds: {warn: "< 50% of baseline"}, baseline: {window: 7d, exclude: none}}
        - {id: counted, kind: metric, dataset: sends, value: count,
           thresholds: {warn: "< 50% of baseline"}}
        """), "  "), file="a.yml")
    weekly, counted = (check.baseline for check in audit.checks)
    assert (weekly.window, weekly.exclude) == (timedelta(days=7), "none")
    assert (counted.window, counted.runs, counted.exclude) == (None, 7, "breaches")
    assert errors("""\
        - {id: both, kind: metric, dataset: sends, value: count,
           thresholds: {warn: "< 50% of baseline"}, baseline: {runs: 7, window: 7d}}
        """) == ["a.yml:8:47: checks[0].baseline: give runs or window, not both"]


def test_thresholds_language():
    audit = parse_audit(HEAD + textwrap.indent(textwrap.dedent("""\
        - kind: orphans
          dataset: sends
          reference: quoteId
          parent: quotes
          thresholds: {warn: "> 0", critical: "rate >= 2.5%"}
        - kind: metric
          dataset: sends
          numerator: count(deliveredAt)
          denominator: count
          thresholds: {critical: "< 90%"}
        """), "  "))
    orphans, metric = audit.checks
    assert (orphans.thresholds.warn.measure, orphans.thresholds.warn.value) == ("count", 0)
    assert (orphans.thresholds.critical.measure, orphans.thresholds.critical.value) == (
        "rate", 0.025)
    assert metric.thresholds.critical.breached(0.89) and not metric.thresholds.critical.breached(
        0.9)


def test_a_dataset_is_a_table_or_a_query():
    head = HEAD.replace("  sends: {table: QuoteSend, key: id}\n",
                        "  sends: {table: QuoteSend, sql: 'SELECT 1', key: id}\n")
    assert errors("- {kind: freshness, dataset: quotes, time: t, max_age: 1h}", head=head) == [
        "a.yml:5:3: datasets.sends: give exactly one of table, sql or file"]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_audit(tmp_path / "nope.yml")
    assert str(caught.value).endswith("nope.yml: no such audit file")


def test_the_shipped_audits_are_valid():
    from pathlib import Path

    paths = {path.name: path for path in Path(__file__).parents[1].glob("audits/*.yml")}
    seeds = ["seed-000-send-quote.yml", "seed-001-workflow.yml", "seed-002-voice-24h.yml",
             "seed-003-crm-24h.yml", "seed-004-sms.yml"]  # tests/test_seed_audits.py runs them
    assert sorted(paths) == ["reference.yml", *seeds, "sms-alerts.yml"]
    audit = load_audit(paths["reference.yml"], environ={})
    assert [check.kind for check in audit.checks].count("expectation_suite") == 5
    assert len(audit.checks) == 28
    alerts = load_audit(paths["sms-alerts.yml"], environ={"PAGERDUTY_ROUTING_KEY": "R0", "SLACK_WEBHOOK_URL":
                                           "https://hooks.slack.com/services/T/B/x"})
    assert [(check.id, check.notify.cooldown.total_seconds() / 60) for check in
            alerts.checks] == [("delivery_rate_critical", 60), ("llm_failure_critical", 30),
                               ("llm_cost_spike_warning", 120), ("opt_out_rate_warning", 240),
                               ("daily_limit_hit_warning", 180)]


def test_notification_errors_name_the_setting_where_it_is_written():
    text = HEAD + textwrap.dedent("""\
          - {kind: freshness, dataset: sends, time: sentAt, max_age: 1h}
        notify:
          - channel: slack
            webhook_url: ${SLACK_URL}
          - channel: email
            from: a@b.c
            to: someone
            smtp:
              host: smtp.example.com
              prot: 25
        """)
    with pytest.raises(ConfigError) as caught:
        parse_audit(text, file="a.yml", environ={"SLACK_URL": "https://hooks.example.com/x"})
    assert str(caught.value).splitlines() == [
        "a.yml:16:7: notify[1].smtp.prot: unknown setting 'prot'; did you mean 'port'? "
        "(allowed here: host, port, starttls, username, password, ca_file)",
        "a.yml:13:5: notify[1].to: input should be a valid list"]


def test_yaml_bombs_and_giant_files_are_refused_at_once(tmp_path):
    import time

    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n"
        for i in range(9))
    began = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        parse_audit(laughs, file="bomb.yml")
    assert time.monotonic() - began < 5  # refused before anything is expanded
    assert str(refused.value) == (
        "bomb.yml:6:4: the audit file expands to more than 250,000 YAML values (aliases "
        "count as often as they are used); refused")

    many = HEAD + "".join(f"  - {{id: c{n}, kind: freshness, dataset: quotes, time: sentAt, "
                          f"max_age: 1h}}\n" for n in range(48_647))
    with pytest.raises(ConfigError) as refused:
        parse_audit(many, file="many.yml")
    assert "expands to more than 250,000 YAML values" in str(refused.value)

    with pytest.raises(ConfigError) as refused:
        parse_audit("connection: " + "[" * 50_000 + "]" * 50_000, file="deep.yml")
    assert str(refused.value) == "deep.yml: the audit file nests deeper than 64 levels; refused"

    huge = tmp_path / "huge.yml"
    huge.write_text("# " + "x" * 6_000_000 + "\n")
    with pytest.raises(ConfigError) as refused:
        load_audit(huge)
    assert str(refused.value) == f"{huge}: the audit file is larger than 5,000,000 bytes; refused"


def test_a_nul_in_a_filter_value_is_a_config_error_on_every_engine():
    assert errors('- {kind: freshness, dataset: quotes, time: sentAt, max_age: 1h, '
                  'where: {status: "SE\\0NT"}}') == [
        "a.yml:7:67: checks[0].where: where.status: a value cannot contain a NUL character "
        "(\\0): no database compares it as written"]


def test_every_error_of_a_file_comes_at_once_with_the_keys_allowed_there():
    """Top-level, notify, dataset and check errors in one round, none hidden behind
    another; an unknown setting names the closest allowed key and all of them."""
    text = textwrap.dedent("""\
        version: 2
        connection: {url: "${NOT_SET}", statment_timeout: 5m}
        datasets:
          quotes: {tabel: AgentQuote, key: id}
          sends: {table: QuoteSend, key: id}
        checks:
          - {kind: freshness, dataset: sends, time: sentAt, max_ag: 1h}
          - {kind: dupes, dataset: sends}
        notify:
          - {channel: slack, webhook_url: "https://x", cooldwn: 1h}
        """)
    with pytest.raises(ConfigError) as caught:
        parse_audit(text, file="a.yml", environ={})
    assert str(caught.value).splitlines() == [
        "a.yml:2:14: connection.url: environment variable NOT_SET is not set (export it, "
        "or write ${NOT_SET:-default})",
        "a.yml:1:1: version: must be 1",
        "a.yml:2:33: connection.statment_timeout: unknown setting 'statment_timeout'; did you "
        "mean 'statement_timeout'? (allowed here: url, statement_timeout, connect_timeout, "
        "retries, retry_backoff)",
        "a.yml:4:12: datasets.quotes.tabel: unknown setting 'tabel'; did you mean 'table'? "
        "(allowed here: table, schema, sql, file, format, pattern, time_format, key, "
        "tenant_column, timezone, description, mask, incremental)",
        "a.yml:10:48: notify[0].cooldwn: unknown setting 'cooldwn'; did you mean 'cooldown'? "
        "(allowed here: name, checks, severities, min_severity, cooldown, repeat, on_errors, "
        "timeout, retries, report_url, channel, webhook_url)",
        "a.yml:7:53: checks[0].max_ag: unknown setting 'max_ag'; did you mean 'max_age'? "
        "(allowed here: id, kind, description, severity, thresholds, where, on_empty, notify, "
        "engine, dataset, time, max_age, warn_after, critical_after, by, expect_groups)",
        "a.yml:8:6: checks[1].kind: unknown check kind 'dupes'; did you mean 'duplicates'? "
        f"(known: {KNOWN})"]
