"""The recovery form: a paused run asks on-call what to do with a dirty database, then does it.

Used by ``migrate`` and ``rollback`` when apply leaves the database dirty, and by ``recover/<env>``.
The form's description is the incident (every statement: done, failed with PostgreSQL's error, not
run) and what each action does now; an action that is refused or fails brings the form back with
the reason on top, until the database is clean, the engineer leaves it dirty, or the time runs out
(the database is then left as it is).
"""

from __future__ import annotations

import time
from typing import Literal, cast

from prefect.input import RunInput
from pydantic import Field

from flows._common import RunReport, migration_slot, next_step_for
from migrator.errors import MigratorError
from migrator.incident import incident_md
from migrator.recovery import RecoveryError, RecoveryResult, version_text
from tasks._common import flow_run_url, run_logger
from tasks.recovery import recover_database

MAX_ROUNDS = 5
SERVER_GRACE_SECONDS = 120  # see wait_for_input


class RecoveryInput(RunInput):
    """What on-call chooses, in the Prefect UI, for a database a migration left dirty."""

    action: Literal["revert", "resume", "mark_applied", "leave_dirty"] = Field(
        description="revert: run the down file, record the previous version. resume: run the statements that "
        "did not run (fix the file on the worker first). mark_applied: you finished by hand, record this "
        "version clean. leave_dirty: change nothing."
    )
    engineer: str = Field(min_length=1, description="Your name or e-mail; recorded in the audit trail")
    comment: str = Field(default="", description="Ticket or reason (optional)")


class RecoveryTimeoutError(MigratorError):
    """Nobody chose a recovery action in time; the database was left as it was."""


def ask(run: RunReport, timeout_seconds: int, note: str | None, round_no: int = 1) -> RecoveryInput:
    """Pause with the recovery form; its description is the incident as it is now."""
    assert run.incident is not None
    md = incident_md(run.incident, run_url=flow_run_url(), backup_url=run.backup_url, note=note,
                     title=f"Recover {run.env.name}: database dirty at version {version_text(run.incident.version)}")
    answer = wait_for_input(RecoveryInput.with_initial_data(description=md), timeout_seconds, f"recovery-{round_no}")
    if answer is None:
        raise RecoveryTimeoutError(
            f"no recovery action chosen within {timeout_seconds}s; the database was left as it is"
        )
    return answer


def wait_for_input(form: type[RecoveryInput], timeout_seconds: int, key: str) -> RecoveryInput | None:
    """``pause_flow_run(wait_for_input=...)`` whose timeout this run handles itself (None on timeout).

    Prefect fails a run whose pause deadline has passed with its own message ("The flow was paused
    and never resumed"), replacing the run's state message; the deadline given to the server is
    therefore later than ours, and the run ends with the message that says where the database is.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.input import keyset_from_paused_state
    from prefect.states import Paused, State
    from prefect.utilities.engine import propose_state_sync

    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None, "a recovery form needs a flow run"
    run_logger().info("paused for recovery: waiting up to %ss for an answer in the recovery form", timeout_seconds)
    server_deadline = timeout_seconds + SERVER_GRACE_SECONDS
    proposed: State[None] = Paused(timeout_seconds=server_deadline, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset  # type: ignore[assignment]  # as pause_flow_run does
    poll = max(1, min(5, timeout_seconds // 10))
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=ctx.flow_run.id)
        if not state.is_paused():
            raise MigratorError(f"the run could not pause for the recovery form (state {state.type.value})")
        form.save(keyset)
        deadline = time.monotonic() + timeout_seconds
        while True:
            time.sleep(poll)
            current = client.read_flow_run(ctx.flow_run.id).state
            if current is not None and current.is_running():
                run_logger().info("recovery form answered")
                return cast(RecoveryInput, form.load(keyset))
            if time.monotonic() >= deadline:
                return None


def act(run: RunReport, action: str, engineer: str, comment: str) -> RecoveryResult:
    """One action under the environment's slot, alerted once and recorded in the report."""
    with migration_slot(run.env):
        result: RecoveryResult = recover_database(run.env.name, action, engineer, comment)
    run.recoveries.append(result)
    event = "recovery.completed" if result.ok else "recovery.failed"
    run.alert(event, version_after=result.version_after, dirty=result.dirty_after, action=result.action,
              engineer=result.engineer, comment=result.comment, outcome=result.outcome,
              failing_version=run.incident.file_version if run.incident else None,
              file=f"{result.file}:{result.line}" if result.file and result.line else result.file,
              error=result.error, statement=result.statement, message=result.message,
              incident=run.incident.fingerprint if run.incident else None)
    run.read_truth()
    return result


def recover_in_run(run: RunReport, timeout_seconds: int) -> None:
    """Ask, act, and ask again after a refusal or a failure, until the database is clean."""
    note: str | None = None
    for round_no in range(1, MAX_ROUNDS + 1):
        if run.incident is None:
            return
        run.pausing_for_recovery = True
        run.next_step, _link = next_step_for(run.env, run.incident, paused_here=True)
        answer = ask(run, timeout_seconds, note, round_no)
        result = act(run, answer.action, answer.engineer, answer.comment)
        if result.outcome == "completed":
            run.outcome = f"recovered ({result.action} by {result.engineer})"
            run.next_step = _after(run, result)
            return
        if result.outcome == "left_dirty":
            raise RecoveryError(result)
        note = result.message
    raise MigratorError(f"{MAX_ROUNDS} recovery actions were refused or failed in this run; the last: {note}")


def _after(run: RunReport, result: RecoveryResult) -> str | None:
    if result.action == "revert":
        return (f"migration {result.migration} is not applied any more; fix it, then start migrate/{run.env.name} "
                "again")
    return None
