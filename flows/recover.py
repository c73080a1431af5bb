"""``recover`` flow (deployment ``recover/<env>``): the recovery choices for a dirty database that no
paused run holds - found by the status monitor, left by the golang-migrate CLI, or after a recovery
form timed out.

Started with only ``environment`` (Quick run), it reads the incident from the database and pauses
with the recovery form, whose description shows the failed migration, every statement and what
each action does now: nothing to type but the choice. With ``action`` and ``engineer`` it acts at once.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows._common import flow_report, read_status_before
from flows.recovery_form import act, recover_in_run
from migrator.recover.actions import RecoveryError
from tasks.environment import run_environment


@flow(name="recover")
def recover(
    environment: str,
    action: Literal["revert", "resume", "mark_applied", "leave_dirty"] | None = None,
    engineer: str = "",
    comment: str = "",
    timeout_seconds: int | None = None,
) -> Any:
    """Recover ``environment``'s dirty database: revert, resume, mark_applied or leave_dirty.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        action: leave empty to get the recovery form with the incident; or revert (run the down file),
            resume (run the statements that did not run), mark_applied (you finished by hand), leave_dirty.
        engineer: your name or e-mail (required with action); recorded in the audit trail.
        comment: ticket or reason (optional).
        timeout_seconds: how long the recovery form waits (default: the environment's approval timeout).
    """
    env = run_environment(environment)
    with flow_report("recover", env) as run:
        read_status_before(run, refuse_dirty=False)
        run.read_truth()
        if run.incident is None:
            run.outcome = "nothing to recover"
        elif action and engineer.strip():
            result = act(run, action, engineer, comment)
            if not result.ok or result.outcome == "left_dirty":
                raise RecoveryError(result)
            run.outcome = f"recovered ({result.action} by {result.engineer})"
        else:
            recover_in_run(run, timeout_seconds or env.approval_timeout_seconds)
    return run.final_state()
