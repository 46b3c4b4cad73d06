"""integrity: audit the data of a multi-tenant SaaS application.

The package reads like its data flow:

    config -> sources -> checks -> results -> report / gate

`config` validates an audit file without touching a database, `sources`
opens read-only connections and pulls datasets, `checks` measure violations,
`results` judges them against severities and thresholds, and `report` and
`gate` turn the verdict into files and an exit code.
"""

__version__ = "0.1.0"
