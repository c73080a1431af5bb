"""Prefect tasks: thin wrappers over the ``migrator`` core with retries, caching and run logging.

Importing this package attaches migrator's credential redaction to Prefect's run loggers, so
nothing a task or the engine logs can carry a password to the Prefect API.
"""

from __future__ import annotations

import logging

from migrator.redact import RedactingFilter

for _name in ("prefect.flow_runs", "prefect.task_runs", "migrator"):
    logging.getLogger(_name).addFilter(RedactingFilter())
