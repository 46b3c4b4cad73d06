"""README is the front door: every YAML block in it parses, and every audit, check,
channel, filter and threshold example in it validates as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from integrity.audit import parse_audit
from integrity.config import Thresholds
from integrity.filters import parse_where

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


class Environment(dict):
    """Any ${VARIABLE} a README example uses, with a value of the right shape."""

    def __bool__(self) -> bool:
        return True

    def __contains__(self, name) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        if name.endswith("DATABASE_URL"):
            return "postgresql+psycopg://auditor@db/app"
        return "https://example.com/hook" if name.endswith("URL") else f"value-of-{name}"


HEAD = "connection: {url: 'postgresql+psycopg://auditor@db/app'}\n"


def _datasets(value) -> set[str]:
    """Every dataset name a check example refers to."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {"dataset", "parent"} and isinstance(item, str):
                found.add(item)
            found |= _datasets(item)
    elif isinstance(value, list):
        for item in value:
            found |= _datasets(item)
    return found


def _validate(block: str) -> None:
    data = yaml.safe_load(block)
    file = str(ROOT / "audits" / "readme.yml")  # suites resolve as from audits/
    if isinstance(data, dict) and "connection" in data:
        parse_audit(block, file=file, environ=Environment())
    elif isinstance(data, dict) and "notify" in data:
        parse_audit(HEAD + "datasets: {t: {table: t}}\nchecks: [{kind: freshness, dataset: t,"
                    " time: at, max_age: 1h}]\n" + block, file=file, environ=Environment())
    elif isinstance(data, list) and all(isinstance(item, dict) and "kind" in item
                                        for item in data):
        names = sorted(_datasets(data)) or ["t"]
        datasets = "".join(f"  {name}: {{table: {name}, key: id, tenant_column: tenantId}}\n"
                           for name in names)
        checks = "".join(f"  {line}\n" for line in block.splitlines())
        parse_audit(HEAD + "datasets:\n" + datasets + "checks:\n" + checks, file=file,
                    environ=Environment())
    elif isinstance(data, dict) and set(data) == {"datasets"}:  # datasets alone
        names = list(data["datasets"])
        checks = "".join(f"  - {{kind: metric, dataset: {name}, value: count, "
                         f"thresholds: {{critical: '< 1'}}}}\n" for name in names)
        parse_audit(HEAD + block + "\nchecks:\n" + checks, file=file, environ=Environment())
    elif isinstance(data, dict) and set(data) == {"checks"}:  # checks with their routing
        names = sorted(_datasets(data["checks"])) or ["t"]
        datasets = "".join(f"  {name}: {{table: {name}, key: id}}\n" for name in names)
        channels = sorted({name for item in data["checks"]
                           for name in (item.get("notify") or {}).get("channels") or []})
        notify = "".join(f"  - {{channel: webhook, name: {name}, url: \"${{HOOK}}\"}}\n"
                         for name in channels)
        parse_audit(HEAD + "datasets:\n" + datasets + block + "\nnotify:\n" + notify,
                    file=file, environ=Environment())
    elif isinstance(data, dict) and set(data) == {"where"}:
        parse_where(data["where"])
    elif isinstance(data, dict) and set(data) == {"thresholds"}:
        for line in block.splitlines():  # alternatives, one per line
            Thresholds.model_validate(yaml.safe_load(line)["thresholds"])
    elif "uses" in str(data) or "script" in str(data):
        pass  # CI configuration (GitHub Actions, GitLab): parsed is all we can ask
    else:
        raise AssertionError(f"a README YAML block of a shape this test does not know:\n{block}")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_every_yaml_block_in_the_readme_validates(block):
    _validate(block)


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 19  # a regex that found nothing would pass every test above


# ---------------------------------------------------------------------------
# docs/reference.md and `integrity checks KIND`: every setting, from the models.


def _config_models() -> list[type]:
    """Every model an audit file reaches: the audit's own, its channels', and every check
    kind's with the mappings nested in them (events, left/right, smtp …)."""
    import typing

    from pydantic import BaseModel

    from integrity.checks import CHECKS
    from integrity.config import AuditConfig

    found: list[type] = []

    def visit(annotation) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for info in annotation.model_fields.values():
                    visit(info.annotation)
        for argument in typing.get_args(annotation):
            visit(argument)

    visit(AuditConfig)
    for family in CHECKS.values():
        visit(family.Config)
    return found


def test_every_setting_of_every_config_model_has_a_description():
    models = {model.__name__ for model in _config_models()}
    assert {"AuditConfig", "ConnectionConfig", "DatasetConfig", "OutputConfig",
            "HistoryConfig", "SlackChannel", "PagerDutyChannel", "EmailChannel", "SmtpServer",
            "WebhookChannel", "Thresholds", "Events", "Side",
            "Tolerance", "MetricThresholds", "Baseline", "DuplicatesConfig"} <= models
    undescribed = [f"{model.__name__}.{name}" for model in _config_models()
                   for name, info in model.model_fields.items()
                   if len((info.description or "").split()) < 2]
    assert undescribed == [], "settings without a Field(description=...): " + \
        ", ".join(undescribed)


def test_the_reference_shows_every_setting_of_every_model():
    from integrity.catalog import audit_pages, kind_page
    from integrity.checks import CHECKS

    shown = {setting.name for page in [*audit_pages(), *map(kind_page, CHECKS)]
             for table in page.tables for setting in table.settings}
    missing = {info.alias or name for model in _config_models()
               for name, info in model.model_fields.items()} - shown
    assert missing == set()
    for kind, family in CHECKS.items():  # a kind's page: its settings and the common ones
        tables = {table.title: table for table in kind_page(kind).tables}
        names = [s.name for title in ("Settings", "Common check settings")
                 for s in tables[title].settings]
        assert sorted(names) == sorted(info.alias or name for name, info in
                                       family.Config.model_fields.items()), kind


def test_docs_reference_md_is_up_to_date():
    from integrity.catalog import reference

    written = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert written == reference(), ("docs/reference.md is out of date with the config "
                                    "models: run `.venv/bin/python -m integrity.catalog "
                                    "--write docs/reference.md`")


def _kinds():
    from integrity.checks import CHECKS

    return list(CHECKS)


@pytest.mark.parametrize("kind", _kinds())
def test_every_kind_has_an_example_that_validates(kind):
    from integrity.catalog import KIND_EXAMPLES

    example = KIND_EXAMPLES[kind]
    data = yaml.safe_load(example)
    assert {check["kind"] for check in data["checks"]} == {kind}
    datasets = "" if "datasets" in data else "datasets: {t: {table: t}}\n"
    audit = parse_audit(HEAD + datasets + example, file=str(ROOT / "audits" / "example.yml"),
                        environ=Environment())
    assert [check.kind for check in audit.checks] == [kind] * len(data["checks"])


def test_the_audit_file_and_notify_examples_validate():
    from integrity.catalog import AUDIT_EXAMPLE, NOTIFY_EXAMPLE, WATCH_EXAMPLE

    checks = "".join(f"  - {{id: {name}, kind: duplicates, dataset: t, columns: [a]}}\n"
                     for name in ("quote_email_counter", "quote_sent_at_preserved",
                                  "quote_sent_at_valid")) + "".join(
        f"  - {{id: {name}, kind: metric, dataset: t, value: count, thresholds: "
        f"{{warn: '< 10'}}}}\n" for name in ("send_error_rate", "quotes_sent_per_day"))
    watched = parse_audit(HEAD + "datasets: {t: {table: t}}\nchecks:\n" + checks
                          + WATCH_EXAMPLE, environ=Environment())
    assert watched.config.watch.rollback_on == ["quote_email_counter",
                                                "quote_sent_at_preserved"]

    parse_audit(AUDIT_EXAMPLE, file=str(ROOT / "audits" / "example.yml"), environ=Environment())
    audit = parse_audit(HEAD + "datasets: {t: {table: t}}\nchecks: [{kind: freshness, "
                        "dataset: t, time: at, max_age: 1h}]\n" + NOTIFY_EXAMPLE,
                        environ=Environment())
    assert [channel.channel for channel in audit.config.notify] == [
        "slack", "pagerduty", "email", "webhook"]


def test_the_reference_says_what_only_error_messages_used_to():
    from integrity.catalog import kind_page, reference

    text = reference()
    for setting in ("events_url", "parent_tenant_column", "ca_file", "retry_backoff",
                    "on_empty", "insufficient"):
        assert f"| `{setting}` |" in text, setting
    rows = {s.name: s for t in kind_page("duplicates").tables for s in t.settings}
    assert "plus-tags and dots stay" in rows["normalize"].meaning
    rows = {s.name: s for t in kind_page("orphans").tables for s in t.settings}
    assert rows["required"].default == "false"
    rows = {s.name: s for t in kind_page("cross_tenant").tables for s in t.settings}
    assert "tenant_column" in rows["parent_tenant_column"].meaning
    assert "(docs/reference.md)" in README
