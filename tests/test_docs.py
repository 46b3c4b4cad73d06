"""README is the front door: every YAML block in it parses, and every audit, check,
channel, filter and threshold example in it validates as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from integrity.config import Thresholds, parse_audit
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
