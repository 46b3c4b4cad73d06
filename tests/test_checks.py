"""Each check family on hand-written tables: exact violation keys, counts and edge cases."""

from __future__ import annotations

import pytest

from integrity.errors import ConfigError
from integrity.gate import exit_code

from conftest import keys, only, run

T0 = "2026-01-30 10:00:00"


def at(minutes: float, base: str = "2026-01-30 10:00") -> str:
    import pandas as pd

    return (pd.Timestamp(base) + pd.Timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")


QUOTES_AND_SENDS = """\
quotes: {table: quotes, key: id, tenant_column: tenantId}
sends: {table: sends, key: id}
"""


class TestCounterVsEvents:
    def send(self, id, quote, minute, channel="EMAIL", key=None):
        return {"id": id, "quoteId": quote, "channel": channel, "idempotencyKey": key,
                "sentAt": at(minute)}

    def test_counts_distinct_idempotency_keys(self, sqlite_db):
        sqlite_db.tables(
            quotes=[{"id": "a", "tenantId": "t1", "emailSentCount": 1},
                    {"id": "b", "tenantId": "t1", "emailSentCount": 2},   # hit counted twice
                    {"id": "c", "tenantId": "t2", "emailSentCount": 0},   # not incrementing
                    {"id": "d", "tenantId": "t2", "emailSentCount": 1},   # under (2 keys)
                    {"id": "e", "tenantId": "t2", "emailSentCount": 0}],  # no events: fine
            sends=[self.send(1, "a", 0, key="k1"), self.send(2, "a", 1, key="k1"),
                   self.send(3, "b", 0, key="k2"), self.send(4, "b", 1, key="k2"),
                   self.send(5, "c", 0, key="k3"),
                   self.send(6, "d", 0, key="k4"), self.send(7, "d", 60, key="k5"),
                   self.send(8, "a", 0, channel="WHATSAPP")])
        check = only(run(sqlite_db, QUOTES_AND_SENDS, """\
            - kind: counter_vs_events
              dataset: quotes
              counter: emailSentCount
              events: {dataset: sends, entity: quoteId, time: sentAt,
                       idempotency_key: idempotencyKey, where: {channel: EMAIL}}
            """))
        assert {row["id"]: row["problem"] for row in check.sample} == {
            "b": "over_count", "c": "not_incrementing", "d": "under_count"}
        assert (check.violation_count, check.population) == (3, 5)
        assert check.sample[0] == {"id": "b", "tenantId": "t1", "emailSentCount": 2,
                                   "unique_events": 1, "events": 2, "problem": "over_count"}

    def test_window_collapsing_and_at_most_mode(self, sqlite_db):
        sqlite_db.tables(
            quotes=[{"id": "chain", "tenantId": "t", "smsSentCount": 1},   # 0, 4, 8: one burst
                    {"id": "edge", "tenantId": "t", "smsSentCount": 1},    # gap exactly 5m
                    {"id": "apart", "tenantId": "t", "smsSentCount": 2},   # 5m01s: two bursts
                    {"id": "over", "tenantId": "t", "smsSentCount": 2},
                    {"id": "under", "tenantId": "t", "smsSentCount": 1},   # allowed in at_most
                    {"id": "zero", "tenantId": "t", "smsSentCount": 0}],
            sends=[self.send(1, "chain", 0, "SMS"), self.send(2, "chain", 4, "SMS"),
                   self.send(3, "chain", 8, "SMS"),
                   self.send(4, "edge", 0, "SMS"), self.send(5, "edge", 5, "SMS"),
                   self.send(6, "apart", 0, "SMS"), self.send(7, "apart", 5 + 1 / 60, "SMS"),
                   self.send(8, "over", 0, "SMS"), self.send(9, "over", 1, "SMS"),
                   self.send(10, "under", 0, "SMS"), self.send(11, "under", 30, "SMS"),
                   self.send(12, "zero", 0, "SMS")])
        audit = """\
            - kind: counter_vs_events
              dataset: quotes
              counter: smsSentCount
              events: {dataset: sends, entity: quoteId, time: sentAt}
              mode: at_most
            """
        check = only(run(sqlite_db, QUOTES_AND_SENDS, audit))
        assert {row["id"]: (row["problem"], row["unique_events"]) for row in check.sample} == {
            "over": ("over_count", 1), "zero": ("not_incrementing", 1)}
        quiet = only(run(sqlite_db, QUOTES_AND_SENDS, audit + "  zero_counter: false\n"))
        assert keys(quiet) == {("over",)}

    def test_null_keys_fall_back_to_bursts_and_untimed_events_count_alone(self, sqlite_db):
        sqlite_db.tables(
            quotes=[{"id": "a", "tenantId": "t", "emailSentCount": 3}],
            sends=[self.send(1, "a", 0, key="k"), self.send(2, "a", 1, key="k"),
                   self.send(3, "a", 30), self.send(4, "a", 31),
                   {"id": 5, "quoteId": "a", "channel": "EMAIL", "idempotencyKey": None,
                    "sentAt": None}])
        check = only(run(sqlite_db, QUOTES_AND_SENDS, """\
            - kind: counter_vs_events
              dataset: quotes
              counter: emailSentCount
              events: {dataset: sends, entity: quoteId, time: sentAt,
                       idempotency_key: idempotencyKey}
            """))
        assert check.violation_count == 0  # k + one burst (30, 31) + the untimed event = 3


class TestTimestamps:
    def test_overwritten_within_the_window(self, sqlite_db):
        sends = [(1, "kept", 0), (2, "kept", 2),
                 (3, "moved", 0), (4, "moved", 2),
                 (5, "chain", 0), (6, "chain", 4), (7, "chain", 8),
                 (8, "later", 0), (9, "later", 60),          # re-send after the window
                 (10, "clock", 0), (11, "clock", 2),         # within the 1 s tolerance
                 (12, "single", 0)]
        sqlite_db.tables(
            quotes=[{"id": "kept", "tenantId": "t", "sentAt": at(0)},
                    {"id": "moved", "tenantId": "t", "sentAt": at(2)},
                    {"id": "chain", "tenantId": "t", "sentAt": at(8)},
                    {"id": "later", "tenantId": "t", "sentAt": at(60)},
                    {"id": "clock", "tenantId": "t", "sentAt": "2026-01-30 10:00:00.900"},
                    {"id": "single", "tenantId": "t", "sentAt": at(0)}],
            sends=[{"id": i, "quoteId": q, "sentAt": at(m)} for i, q, m in sends])
        check = only(run(sqlite_db, QUOTES_AND_SENDS, """\
            - kind: timestamp_preserved
              dataset: quotes
              column: sentAt
              events: {dataset: sends, entity: quoteId, time: sentAt}
            """))
        assert keys(check) == {("moved",), ("chain",)}
        chain = next(row for row in check.sample if row["id"] == "chain")
        assert (chain["burst_events"], chain["moved_by_seconds"]) == (3, 480.0)
        assert chain["burst_first"] == "2026-01-30T10:00:00Z"

    def test_valid_timestamps(self, sqlite_db):
        sqlite_db.tables(quotes=[
            {"id": "ok", "status": "SENT", "sentAt": at(5), "createdAt": at(0)},
            {"id": "null", "status": "SENT", "sentAt": None, "createdAt": at(0)},
            {"id": "draft", "status": "DRAFT", "sentAt": None, "createdAt": at(0)},
            {"id": "garbage", "status": "SENT", "sentAt": "yesterday", "createdAt": at(0)},
            {"id": "future", "status": "SENT", "sentAt": at(60 * 24 * 3), "createdAt": at(0)},
            {"id": "early", "status": "SENT", "sentAt": at(-5), "createdAt": at(0)},
            {"id": "offset", "status": "SENT", "sentAt": "2026-01-30T11:00:00+01:00",
             "createdAt": "2026-01-30 10:00:00.5"}])
        check = only(run(sqlite_db, "quotes: {table: quotes, key: id}", """\
            - kind: timestamp_valid
              dataset: quotes
              where: {status: SENT}
              column: sentAt
              not_before: createdAt
            """))
        assert {row["id"]: row["problem"] for row in check.sample} == {
            "null": "null", "garbage": "unparseable", "future": "in_future",
            "early": "before_createdAt", "offset": "before_createdAt"}
        assert check.population == 6

    def test_naive_times_are_read_in_the_dataset_time_zone(self, sqlite_db):
        # 12:15 in Paris is 11:15 UTC: 75 minutes before `now` (12:30 UTC), while the
        # same text read as UTC is 15 minutes old.
        sqlite_db.tables(events=[{"id": 1, "at": "2026-01-30 12:15:00"}])
        datasets = "events: {table: events, key: id, timezone: Europe/Paris}"
        check = """\
            - {kind: freshness, dataset: events, time: at, max_age: 30m}
            """
        paris = only(run(sqlite_db, datasets, check))
        assert (paris.status, paris.value_text) == ("fail", "newest row 1.2h old")
        assert only(run(sqlite_db, "events: {table: events, key: id}", check)).status == "pass"


class TestDuplicates:
    def test_normalised_compound_key_counts_surplus_rows(self, sqlite_db):
        sqlite_db.tables(leads=[
            {"id": 1, "tenantId": "t1", "email": "Ann@Example.com", "createdAt": at(0)},
            {"id": 2, "tenantId": "t1", "email": " ann@example.com ", "createdAt": at(1)},
            {"id": 3, "tenantId": "t1", "email": "ANN@EXAMPLE.COM", "createdAt": at(-1)},
            {"id": 4, "tenantId": "t2", "email": "ann@example.com", "createdAt": at(0)},
            {"id": 5, "tenantId": "t2", "email": "bob@example.com", "createdAt": at(0)},
            {"id": 6, "tenantId": "t2", "email": "bob@example.com", "createdAt": at(0)},
            {"id": 7, "tenantId": "t2", "email": None, "createdAt": at(0)},
            {"id": 8, "tenantId": "t2", "email": "  ", "createdAt": at(0)},
            {"id": 9, "tenantId": "t2", "email": None, "createdAt": at(0)}])
        check = only(run(sqlite_db, "leads: {table: leads, key: id, tenant_column: tenantId}",
                         """\
            - kind: duplicates
              dataset: leads
              columns: [tenantId, email]
              normalize: {email: email}
              keep_first_by: createdAt
            """))
        assert check.violation_count == 3  # (3 − 1) + (2 − 1)
        assert keys(check) == {(1,), (2,), (6,)}
        assert [(r["id"], r["duplicate_group"], r["duplicate_role"]) for r in check.sample] == [
            (3, 1, "kept"), (1, 1, "surplus"), (2, 1, "surplus"),
            (5, 2, "kept"), (6, 2, "surplus")]
        assert check.population == 9

    def test_phone_numbers_compare_in_e164(self, sqlite_db):
        sqlite_db.tables(leads=[
            {"id": 1, "phone": "+44 7700 900123"}, {"id": 2, "phone": "07700 900123"},
            {"id": 3, "phone": "(07700) 900-123"}, {"id": 4, "phone": "+1 415 555 0100"},
            {"id": 5, "phone": "not a phone"}, {"id": 6, "phone": "not a phone!"}])
        check = only(run(sqlite_db, "leads: {table: leads, key: id}", """\
            - kind: duplicates
              dataset: leads
              columns: phone
              normalize: {phone: phone}
              default_region: GB
            """))
        assert keys(check) == {(2,), (3,)}
        assert check.sample[0]["duplicate_key"] == "+447700900123"

    def test_time_window_duplicates(self, sqlite_db):
        sqlite_db.tables(sends=[
            {"id": 1, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(0)},
            {"id": 2, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(0.05)},
            {"id": 3, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(0.1)},
            {"id": 4, "quoteId": "q", "channel": "EMAIL", "to": "b", "sentAt": at(0.05)},
            {"id": 5, "quoteId": "q", "channel": "SMS", "to": "a", "sentAt": at(0.05)},
            {"id": 6, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(10)},
            {"id": 7, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(10.5)},
            {"id": 8, "quoteId": "q", "channel": "EMAIL", "to": "a", "sentAt": at(11.02)}])
        check = only(run(sqlite_db, "sends: {table: sends, key: id}", """\
            - kind: duplicate_events
              dataset: sends
              by: [quoteId, channel, to]
              time: sentAt
              window: 30s
            """))
        # 7 is exactly 30 s after 6 ("at most the window": same burst); 8 is 31.2 s after 7.
        assert keys(check) == {(2,), (3,), (7,)}
        assert check.violation_count == 3
        assert [(row["id"], row["duplicate_group"], row["duplicate_role"])
                for row in check.sample] == [(1, 1, "kept"), (2, 1, "surplus"), (3, 1, "surplus"),
                                             (6, 2, "kept"), (7, 2, "surplus")]


class TestReferences:
    DATASETS = """\
    conversations: {table: conversations, key: id, tenant_column: tenantId}
    messages: {table: messages, key: id, tenant_column: tenantId}
    """

    def tables(self, db):
        db.tables(
            conversations=[{"id": "c1", "tenantId": "t1", "deletedAt": None},
                           {"id": "c2", "tenantId": "t2", "deletedAt": None},
                           {"id": "c3", "tenantId": "t1", "deletedAt": at(0)}],
            messages=[{"id": 1, "tenantId": "t1", "conversationId": "c1"},
                      {"id": 2, "tenantId": "t1", "conversationId": "c2"},   # other tenant
                      {"id": 3, "tenantId": "t1", "conversationId": "gone"},  # orphan
                      {"id": 4, "tenantId": "t1", "conversationId": None},
                      {"id": 5, "tenantId": "t1", "conversationId": "c3"},   # soft-deleted
                      {"id": 6, "tenantId": None, "conversationId": "c2"}])  # no tenant

    def test_orphans(self, sqlite_db):
        self.tables(sqlite_db)
        result = run(sqlite_db, self.DATASETS, """\
            - {id: lax, kind: orphans, dataset: messages, reference: conversationId,
               parent: conversations}
            - {id: strict, kind: orphans, dataset: messages, reference: conversationId,
               parent: conversations, required: true, parent_where: {deletedAt: null}}
            """)
        assert keys(only(result, "lax")) == {(3,)}
        strict = only(result, "strict")
        assert {row["id"]: row["problem"] for row in strict.sample} == {
            3: "no_such_parent", 4: "missing_reference", 5: "no_such_parent"}

    def test_cross_tenant_needs_both_sides(self, sqlite_db):
        self.tables(sqlite_db)
        check = only(run(sqlite_db, self.DATASETS, """\
            - {kind: cross_tenant, dataset: messages, reference: conversationId,
               parent: conversations}
            """))
        assert keys(check) == {(2,)}
        assert check.sample == [{"id": 2, "tenantId": "t1", "conversationId": "c2",
                                 "conversations.tenantId": "t2"}]
        assert check.population == 4  # messages 1, 2, 3, 5 have a tenant and a reference

    def test_cross_tenant_on_one_row_and_integer_ids(self, sqlite_db):
        sqlite_db.tables(access=[
            {"id": 1, "actor": 10, "resource": "10"}, {"id": 2, "actor": 10, "resource": "11"},
            {"id": 3, "actor": None, "resource": "11"}])
        check = only(run(sqlite_db, "access: {table: access, key: id}", """\
            - {kind: cross_tenant, dataset: access, tenant_column: actor,
               other_tenant_column: resource}
            """))
        assert keys(check) == {(2,)}


class TestReconciliation:
    def test_per_key_and_day_with_tolerance(self, sqlite_db):
        sqlite_db.tables(
            leads=[{"id": i, "tenant": t, "createdAt": d} for i, (t, d) in enumerate([
                ("a", "2026-01-01 09:00"), ("a", "2026-01-01 23:59:59"), ("a", "2026-01-02 00:00"),
                ("b", "2026-01-01 10:00")])],
            hooks=[{"id": i, "company": t, "at": d, "type": k} for i, (t, d, k) in enumerate([
                ("a", "2026-01-01 09:00", "lead"), ("a", "2026-01-01 10:00", "lead"),
                ("a", "2026-01-02 00:00", "other"), ("c", "2026-01-03 00:00", "lead")])])
        check = only(run(sqlite_db, """\
            leads: {table: leads, key: id}
            hooks: {table: hooks, key: id}
            """, """\
            - kind: reconciliation
              left: {dataset: leads, by: [tenant], per_day: createdAt}
              right: {dataset: hooks, by: [company], per_day: at, where: {type: lead}}
            """))
        assert check.sample == [
            {"tenant": "a", "day": "2026-01-02", "leads": 1, "hooks": 0, "difference": 1},
            {"tenant": "b", "day": "2026-01-01", "leads": 1, "hooks": 0, "difference": 1},
            {"tenant": "c", "day": "2026-01-03", "leads": 0, "hooks": 1, "difference": -1}]
        assert check.population == 4

    def test_sum_against_count_with_relative_tolerance(self, sqlite_db):
        sqlite_db.tables(
            tenants=[{"id": 1, "used": 100}, {"id": 2, "used": 50}, {"id": 3, "used": 0}],
            messages=[{"id": i, "tenantId": 1} for i in range(99)] +
                     [{"id": 100 + i, "tenantId": 2} for i in range(45)])
        check = only(run(sqlite_db, """\
            tenants: {table: tenants, key: id}
            messages: {table: messages, key: id}
            """, """\
            - kind: reconciliation
              left: {dataset: tenants, measure: sum(used), by: [id]}
              right: {dataset: messages, by: [tenantId]}
              tolerance: {absolute: 1, relative: 5%}
            """))
        assert keys(check) == {(2,)}


class TestMetricsAndFreshness:
    def test_rates_per_group_with_expected_groups(self, sqlite_db):
        rows = ([{"id": i, "channel": "EMAIL", "ok": 1, "at": at(-1 - i)} for i in range(8)] +
                [{"id": 10 + i, "channel": "SMS", "ok": int(i < 1), "at": at(-1 - i)}
                 for i in range(2)] +
                [{"id": 20, "channel": "LINK", "ok": 1, "at": at(-60 * 24 * 3)}])
        sqlite_db.tables(sends=rows)
        result = run(sqlite_db, "sends: {table: sends, key: id}", """\
            - id: share
              kind: metric
              dataset: sends
              share: count
              by: [channel]
              expect_groups: [EMAIL, SMS, LINK]
              time: at
              window: 1d
              thresholds: {warn: "< 25%", critical: "<= 0%"}
            - id: success
              kind: metric
              dataset: sends
              numerator: sum(ok)
              denominator: count
              by: [channel]
              time: at
              window: 1d
              thresholds: {critical: "< 90%"}
            - id: empty
              kind: metric
              dataset: sends
              value: avg(ok)
              where: {channel: FAX}
              thresholds: {critical: "< 1"}
            """, now=__import__("pandas").Timestamp("2026-01-30 10:00", tz="UTC").to_pydatetime())
        share = only(result, "share")
        assert share.status == "fail"
        assert [(r["channel"], r["value"], r["level"]) for r in share.sample] == [
            ("LINK", "0.00%", "critical"), ("SMS", "20.00%", "warning")]
        success = only(result, "success")
        assert [(r["channel"], r["value"]) for r in success.sample] == [("SMS", "50.00%")]
        empty = only(result, "empty")
        # FAX is a value no row has: the filter, not the data, made the window empty. An
        # average over no rows has no value: on_empty (warn).
        assert [(r["scope"], r["value"], r["level"], r["bound"]) for r in empty.sample] == [
            ("all rows", None, "warning", "no value: no rows")]
        assert (empty.status, empty.notes) == ("warn", [
            "no value: no rows; on_empty: warn",
            "the filter (channel = 'FAX') matches none of the 11 rows of sends: values compare "
            "exactly (case included); on_empty: warn"])

    @pytest.mark.parametrize("engine", ["pandas", "sql"])
    def test_a_count_of_every_row(self, sqlite_db, engine):
        # Nothing narrows it, so only the dataset names the rows: the SQL engine once
        # counted the one row of a SELECT without FROM.
        sqlite_db.tables(sends=[{"id": 1}, {"id": 2}, {"id": 3}])
        check = only(run(sqlite_db, "sends: {table: sends, key: id}", """\
            - {kind: metric, dataset: sends, value: count, thresholds: {critical: "< 1"}}
            """, engine=engine))
        assert (check.value, check.population) == (3, 3)

    def test_freshness_per_group(self, sqlite_db):
        sqlite_db.tables(beats=[{"id": 1, "job": "a", "at": at(-1)},
                                {"id": 2, "job": "b", "at": at(-20)},
                                {"id": 3, "job": "b", "at": at(-90)}])
        check = only(run(sqlite_db, "beats: {table: beats, key: id}", """\
            - kind: freshness
              dataset: beats
              time: at
              by: [job]
              expect_groups: [a, b, c]
              warn_after: 10m
              critical_after: 1h
            """, now=__import__("pandas").Timestamp("2026-01-30 10:00", tz="UTC")
                     .to_pydatetime()))
        assert check.status == "fail"
        assert [(r["job"], r["age"], r["level"]) for r in check.sample] == [
            ("b", "20m", "warning"), ("c", "no rows", "critical")]


class TestCustomSqlAndIsolation:
    def test_rows_are_violations(self, sqlite_db):
        sqlite_db.tables(quotes=[{"id": 1, "url": "https://wa.me/1"}, {"id": 2, "url": "x"}])
        check = only(run(sqlite_db, "quotes: {table: quotes, key: id}", """\
            - id: urls
              kind: custom_sql
              key: id
              sql: SELECT id, url FROM quotes WHERE url NOT LIKE 'https://wa.me/%'
              population_sql: SELECT COUNT(*) FROM quotes
            """))
        assert (keys(check), check.population, check.rate) == ({(2,)}, 2, 0.5)

    def test_a_data_modifying_with_is_refused_before_connecting(self, sqlite_db):
        # The layers below the parser are attacked one by one in test_attacks.py.
        sqlite_db.tables(quotes=[{"id": 1}])
        with pytest.raises(ConfigError) as refused:
            run(sqlite_db, "quotes: {table: quotes, key: id}", """\
                - id: sneaky
                  kind: custom_sql
                  sql: WITH extra AS (SELECT 2) INSERT INTO quotes SELECT * FROM extra
                """)
        assert str(refused.value) == (
            "test.yml:8:5: checks[0].sql: audit SQL runs read-only: it must be one SELECT "
            "(or WITH ... SELECT), not INSERT")

    def test_a_crashing_check_does_not_hide_the_others(self, sqlite_db):
        sqlite_db.tables(quotes=[{"id": 1, "email": "a"}, {"id": 2, "email": "a"}])
        result = run(sqlite_db, "quotes: {table: quotes, key: id}", """\
            - {id: broken, kind: custom_sql, sql: SELECT * FROM no_such_table}
            - {id: dupes, kind: duplicates, dataset: quotes, columns: email}
            - {id: missing, kind: duplicates, dataset: quotes, columns: emial}
            """)
        assert result.check("broken").status == "error"
        assert "no such table: no_such_table" in result.check("broken").error
        assert result.check("missing").error == (
            "dataset 'quotes' (table \"quotes\") has no column 'emial'; did you mean 'email'?")
        assert keys(result.check("dupes")) == {(2,)}
        assert exit_code(result) == 2
