"""The package reads bottom-up: every import points down this list of layers.

A module may import from a lower layer only (imports for type hints too), so
there is no import circle to break with a function-level import, and a reader
can start at `errors` and end at `cli` without looking ahead. A new module
must be given its place here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "integrity"

LAYERS = [
    ["errors", "units", "reference"],           # words and quantities; the demo's data
    ["filters", "values", "usersql", "identity", "privileges", "operations",
     "web"],                                    # building blocks: values, user SQL, locks, HTTP
    ["config"],                                 # an audit file's settings
    ["sources", "files"],                       # reading the audited database; files
    ["pushdown"],                               # the SQL engine's building blocks
    ["checks"],                                 # the catalog: one module per family
    ["audit", "results", "catalog"],            # a whole audit; what a run found
    ["gate"],                                   # the exit code
    ["history"],                                # runs, lifecycle, baselines
    ["report", "notify"],                       # what people read
    ["runner", "scaffold"],                     # running an audit
    ["job"],                                    # a scheduled run: lock, run, report, notify
    ["watch"],                                  # a deploy watched: cadence, rollback, sign-off
    ["cli"],                                    # the commands
    ["__main__"],
]
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def unit(module: str) -> str | None:
    """`integrity.checks.duplicates` -> `checks`: a package is one unit."""
    parts = module.split(".")
    return parts[1] if parts[0] == "integrity" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ([f"integrity.{alias.name}" for alias in node.names]
                     if node.module == "integrity" else [node.module])
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_every_import_points_down():
    wrong, unplaced = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue  # the version string only
        if own not in LAYER:
            unplaced.add(own)
            continue
        for line, module in imports(path):
            target = unit(module)
            if target in (None, own, "__version__"):
                continue
            if target not in LAYER:
                unplaced.add(target)
            elif LAYER[target] >= LAYER[own]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line}: {own} imports {module} "
                             f"(layer {LAYER[target]} >= {LAYER[own]})")
    assert not unplaced, f"give these modules a layer in LAYERS: {sorted(unplaced)}"
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_a_circle(tmp_path):
    """The check itself can fail: an upward import is reported with its place."""
    module = tmp_path / "config.py"
    module.write_text("def f():\n    from integrity.checks import CHECKS\n")
    (line, name), = imports(module)
    assert (line, unit(name), LAYER["checks"] > LAYER["config"]) == (2, "checks", True)
