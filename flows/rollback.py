"""``rollback`` flow: backup, then revert N migrations (or down to a version), verify, notify."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows._common import failure_fields, migration_slot, new_summary, record_status, run_artifact, take_backup
from flows.approval import ApprovalRejected, request_approval
from migrator.errors import MigratorError
from tasks.apply import rollback_migrations
from tasks.environment import load_environment
from tasks.notify import notify
from tasks.status import plan_migrations
from tasks.verify import verify_status


@flow(name="rollback")
def rollback(
    environment: str = "local",
    steps: int = 1,
    to_version: int | None = None,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """Revert the last ``steps`` migrations, or everything above ``to_version``; backup first.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        steps: How many of the most recent migrations to revert (ignored when to_version is set).
        to_version: Revert every migration above this version instead (-1 reverts all).
        require_approval: Pause for an engineer's approval before reverting (empty: as the
            environment's settings say).
        approval_timeout_seconds: How long to wait for the approval before giving up, nothing
            reverted (empty: the environment's setting).
    """
    if to_version is None and steps < 1:
        raise MigratorError(f"steps must be >= 1 (got {steps}); use to_version=-1 to revert everything")
    env = load_environment(environment)
    started = time.monotonic()
    summary = new_summary(environment)
    try:
        with migration_slot(env):
            record_status(environment, summary)
            plan = plan_migrations(environment, to_version, direction="down", steps=steps)
            if not plan["steps"]:
                summary["outcome"] = "no change"
                return summary
            backup = take_backup(env, summary)
            approve = env.approval_required if require_approval is None else require_approval
            if approve:
                summary["approved_by"] = request_approval(
                    env, plan, None, backup["key"], approval_timeout_seconds or env.approval_timeout_seconds
                )
            result = rollback_migrations.with_options(timeout_seconds=env.apply_task_seconds)(
                environment, steps, to_version, summary.get("approved_by")
            )
            summary.update(steps=result["steps"], version_after=result["version_after"])
            verify_status(environment, plan["target"], check_drift=False)
        summary["outcome"] = "succeeded"
        summary["duration_seconds"] = round(time.monotonic() - started, 1)
        notify(environment, "migration.succeeded", database=summary["database"], direction="down",
               version_before=summary["version_before"], version_after=summary["version_after"],
               backup_key=summary.get("backup_key"), duration_ms=int(summary["duration_seconds"] * 1000))
        return summary
    except Exception as exc:
        summary.update(outcome="failed", error=str(exc))
        if not summary.get("alerted") and not isinstance(exc, ApprovalRejected):
            notify(environment, "migration.failed", database=summary.get("database"),
                   version_before=summary.get("version_before"), backup_key=summary.get("backup_key"),
                   **failure_fields(exc))
        raise
    finally:
        summary.setdefault("duration_seconds", round(time.monotonic() - started, 1))
        run_artifact("rollback", env, summary)
