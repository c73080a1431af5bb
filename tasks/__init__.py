"""Prefect tasks: thin wrappers over the ``migrator`` core with retries, caching and run logging.

Importing this package attaches two filters to Prefect's run loggers: an expected failure (a
MigratorError) is logged as one line without a traceback, and migrator's credential redaction
runs last, so nothing a task or the engine logs can carry a password to the Prefect API.
"""

from __future__ import annotations

import logging

from migrator.redact import RedactingFilter
from tasks.run_logs import RUN_LOGGERS, QuietExpectedFailures

for _name in RUN_LOGGERS:
    logging.getLogger(_name).addFilter(QuietExpectedFailures())
for _name in (*RUN_LOGGERS, "migrator"):
    logging.getLogger(_name).addFilter(RedactingFilter())
