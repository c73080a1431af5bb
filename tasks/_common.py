"""Helpers shared by the task modules: the run logger, the flow run id and its UI URL."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from prefect import get_run_logger, runtime
from prefect.client.orchestration import get_client
from prefect.utilities.urls import url_for

from migrator.engine import Migrator
from migrator.errors import ConfigError, DirtyDatabaseError, MigrationFileError
from migrator.verify import VerifyError
from tasks.environment import run_environment


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


def migrator_for(environment: str, approved_by: str | None = None, approval_comment: str | None = None) -> Any:
    """The engine for ``environment``, logging its progress to the run and auditing this run's id,
    the approver and the approval's comment."""
    env = run_environment(environment)
    return Migrator(env.settings, run_id=flow_run_id(), progress=run_logger().info, approved_by=approved_by,
                    approval_comment=approval_comment)


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` for every retried task: a setting, a migration file, a dirty database
    or a failed verify is the same on the next attempt, so it fails at once instead of after
    minutes of retries; anything else (a network blip, a timeout) is retried."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, ConfigError | MigrationFileError | DirtyDatabaseError | VerifyError)


def deployment_run_url(deployment: str, parameters: dict[str, Any]) -> str | None:
    """The UI's run form of ``deployment`` (``"force/prod"``) with ``parameters`` already filled in.

    None when there is no such deployment (a local run) or no UI. The UI reads the ``parameters``
    query value with ``JSON.parse(decodeURIComponent(...))`` after the router decoded it once,
    so it is encoded twice, as the UI's own links are.
    """
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(deployment)
        base = url_for("deployment", obj_id=dep.id)
    except Exception:
        return None
    if not base:
        return None
    return f"{base}/run?parameters={quote(quote(json.dumps(parameters), safe=''), safe='')}"
