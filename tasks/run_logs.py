"""Run logs an on-call engineer can read: an expected failure is one line, not a traceback.

Prefect logs a failing task or flow run with ``exc_info`` (a 40-line traceback in the UI). For the
``MigratorError`` family, whose message already says what happened and what to do, this filter
drops the traceback and writes the exception as its message; unexpected errors keep theirs.
"""

from __future__ import annotations

import logging

from migrator.errors import MigratorError


class QuietExpectedFailures(logging.Filter):
    """Strip the traceback of records about a MigratorError; leave every other record alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, MigratorError):
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string must not break logging
            msg = str(record.msg)
        record.msg = msg.replace(repr(exc), f"{type(exc).__name__}: {exc}")
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
