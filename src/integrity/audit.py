"""An audit file, read whole: its settings (`config`) with every check validated by
its family in the catalog (`checks`).

This is the one place the two meet, so `config` knows nothing of the check
families and the families build on `config`. Importing the catalog imports
no pandas or SQLAlchemy: `integrity validate` stays fast.
"""

from __future__ import annotations

import os

from integrity import config
from integrity.checks import CHECKS
from integrity.config import Audit


def load_audit(path: str | os.PathLike, *, environ: dict[str, str] | None = None,
               deferred: bool = False) -> Audit:
    """Read and validate an audit file; raise ConfigError(s) naming every problem.
    `deferred`: an unset ${VARIABLE} (without a default) is not an error but left for run
    time and listed in `Audit.deferred` — `integrity validate` needs no secrets."""
    return config.load(path, CHECKS, environ=environ, deferred=deferred)


def parse_audit(text: str, *, file: str = "<audit>", environ: dict[str, str] | None = None,
                deferred: bool = False) -> Audit:
    """The audit written in `text` (as if read from `file`); see `load_audit`."""
    return config.parse(text, CHECKS, file=file, environ=environ, deferred=deferred)
