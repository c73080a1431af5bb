"""Helpers shared by the task modules: the run logger, the flow run id and its UI URL."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, runtime

from tasks.environment import load_environment


def run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (unit use): plain logging
        return logging.getLogger("migrator.tasks")


def flow_run_id() -> str | None:
    rid = runtime.flow_run.id
    return str(rid) if rid else None


def flow_run_url() -> str | None:
    """The UI link of the current flow run, for alerts (None on the ephemeral API)."""
    try:
        url = runtime.flow_run.ui_url
    except Exception:
        return None
    return str(url) if url else None


def migrator_for(environment: str, approved_by: str | None = None) -> Any:
    """The engine for ``environment``, logging its progress to the run and auditing this run's id."""
    from migrator.engine import Migrator

    env = load_environment(environment)
    return Migrator(env.settings, run_id=flow_run_id(), progress=run_logger().info, approved_by=approved_by)
