"""``rollback`` flow: backup, then revert N migrations (or down to a version), verify, notify.

A down file that fails half-way outside a transaction leaves the database dirty: the run pages
once and pauses with the recovery form, as ``migrate`` does.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._common import apply_step, flow_report, migration_slot, read_status_before, take_backup
from flows.approval import request_approval
from flows.recovery_form import recover_in_run
from migrator.errors import MigratorError
from tasks.apply import rollback_migrations
from tasks.environment import run_environment
from tasks.status import plan_migrations
from tasks.verify import verify_status


@flow(name="rollback")
def rollback(
    environment: str = "local",
    steps: int = 1,
    to_version: int | None = None,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
    recovery_timeout_seconds: int | None = None,
) -> Any:
    """Revert the last ``steps`` migrations, or everything above ``to_version``; backup first.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        steps: How many of the most recent migrations to revert (ignored when to_version is set).
        to_version: Revert every migration above this version instead (-1 reverts all).
        require_approval: Pause for an engineer's approval before reverting (empty: as the
            environment's settings say).
        approval_timeout_seconds: How long to wait for the approval before giving up, nothing
            reverted (empty: the environment's setting).
        recovery_timeout_seconds: When a down file leaves the database dirty, how long the recovery
            form waits before the run ends and leaves the database as it is (empty: the approval timeout;
            0: don't pause, end the run dirty at once).
    """
    if to_version is None and steps < 1:
        raise MigratorError(f"steps must be >= 1 (got {steps}); use to_version=-1 to revert everything")
    env = run_environment(environment)
    with flow_report("rollback", env) as run:
        with migration_slot(env):
            read_status_before(run)
            plan = plan_migrations(environment, to_version, direction="down", steps=steps)
            run.plan = list(plan.steps)
            if not plan.steps:
                run.outcome = "no change"
            else:
                take_backup(run)
                if env.approval_required if require_approval is None else require_approval:
                    run.approved_by = request_approval(env, plan, None, run.backup_url,
                                                       approval_timeout_seconds or env.approval_timeout_seconds,
                                                       run=run)
                revert = rollback_migrations.with_options(timeout_seconds=env.apply_task_seconds)
                apply_step(run, revert, steps, to_version, run.approved_by, run.approval_comment or None)
        if run.incident is not None:
            recover_in_run(run, env.approval_timeout_seconds if recovery_timeout_seconds is None
                           else recovery_timeout_seconds)
        elif plan.steps:
            verify_status(environment, plan.target, check_drift=False)
            run.success_alert = ("migration.succeeded", {"direction": "down"})
    return run.final_state()
