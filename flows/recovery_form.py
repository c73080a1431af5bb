"""The recovery form: a paused run asks on-call what to do with a dirty database, then does it.

Used by ``migrate`` and ``rollback`` when apply leaves the database dirty, and by ``recover/<env>``.
The form's description is the incident (every statement: done, failed with PostgreSQL's error, not
run) and what each action does now; an action that is refused or fails brings the form back with
the reason on top, until the database is clean, the engineer leaves it dirty, or the time runs out
(the database is then left as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prefect.input import RunInput
from pydantic import Field

from flows._common import RunReport, migration_slot, next_step_for
from flows.pause import deadline_text, pause_for_input
from migrator.alerts.notify import recovery_event
from migrator.errors import MigratorError
from migrator.recover.actions import RecoveryError, RecoveryResult, inspect, version_text
from migrator.recover.incident import incident_md, outcome_text, recovery_next_step, resume_plan
from tasks._common import flow_run_url, run_logger
from tasks.recovery import recover_database

MAX_ROUNDS = 5


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


@dataclass
class FormView:
    """What the open recovery form shows: what resume would run when it was last (re)written."""

    paused_plan: list[tuple[int, int, str, str]]
    shown_plan: list[tuple[int, int, str, str]]


def _form_md(run: RunReport, note: str | None, view: FormView) -> str:
    assert run.incident is not None
    return incident_md(run.incident, run_url=flow_run_url(), backup_url=run.backup_url, note=note,
                       title=f"Recover {run.env.name}: database dirty at version {version_text(run.incident.version)}",
                       changed_since_pause=view.shown_plan != view.paused_plan)


def ask(run: RunReport, timeout_seconds: int, note: str | None, round_no: int = 1,
        view: FormView | None = None) -> tuple[RecoveryInput, FormView]:
    """Pause with the recovery form; its description is the incident as it is now, re-read from the
    database and the migration file while the run waits (a fixed file that reaches the worker shows
    up in the form, with what resume will run and its hashes, and that it changed since the pause)."""
    assert run.incident is not None
    if timeout_seconds <= 0:
        raise RecoveryTimeoutError("not paused for recovery: this run does not wait for a form (recovery timeout 0, "
                                   "e.g. a local run with no Prefect UI); the database was left as it is")
    plan = resume_plan(run.incident)
    view = view or FormView(plan, plan)
    view.shown_plan = plan

    def refresh() -> str | None:
        try:
            inc = inspect(run.env.settings)
        except Exception:
            return None
        if not inc.dirty:
            return None
        run.incident = inc
        view.shown_plan = resume_plan(inc)
        return _form_md(run, note, view)

    form = RecoveryInput.with_initial_data(description=_form_md(run, note, view))
    answer = wait_for_input(form, timeout_seconds, f"recovery-{round_no}", run, refresh)
    if answer is None:
        raise RecoveryTimeoutError(
            f"no recovery action chosen within {timeout_seconds}s; the database was left as it is"
        )
    return answer, view


def changed_under_the_form(run: RunReport, answer: RecoveryInput, view: FormView) -> str | None:
    """For ``resume``: re-read the file at submit time; when what resume would run is not what the
    form showed, say so (the form comes back showing it) instead of running statements nobody saw."""
    if answer.action != "resume":
        return None
    run.read_truth()
    if run.incident is None:
        return None
    now = resume_plan(run.incident)
    if now == view.shown_plan:
        return None
    view.shown_plan = now
    listed = ", ".join(f"{i} (line {line}, sha256 {digest[:12]})" for i, line, _text, digest in now) or "nothing"
    return (f"resume not run: the migration file changed on the worker after the form was shown; resume would "
            f"now run statement(s) {listed}. Check them below and submit again")


def wait_for_input(form: type[RecoveryInput], timeout_seconds: int, key: str, run: RunReport,
                   refresh: Callable[[], str | None] | None = None) -> RecoveryInput | None:
    """The recovery pause: a state message that says why the run waits and what to click."""
    inc = run.incident
    assert inc is not None
    message = (f"paused for recovery: {inc.headline()}. Click Resume, choose an Action (resume, revert, "
               f"mark_applied or leave_dirty), type your name in Engineer, then Submit; without an answer by "
               f"{deadline_text(timeout_seconds)} the run ends and leaves the database as it is")
    return pause_for_input(form, timeout_seconds=timeout_seconds, key=key, message=message, refresh=refresh)


def act(run: RunReport, action: str, engineer: str, comment: str) -> RecoveryResult:
    """One action under the environment's slot, alerted once and recorded in the report; the run's
    artifacts are rewritten with it (the decision is visible while the run goes on)."""
    before = run.incident
    with migration_slot(run.env):
        result: RecoveryResult = recover_database(run.env.name, action, engineer, comment)
    run.recoveries.append(result)
    run.read_truth()
    asked_again = run.pausing_for_recovery and result.outcome in ("refused", "failed")  # the form comes back
    again = (next_step_for(run.env, run.incident, paused_here=asked_again)[0] if run.incident is not None
             else "look at the database")
    next_step = recovery_next_step(result, again)
    run.alert(recovery_event(result.outcome), version_after=result.version_after, dirty=result.dirty_after,
              action=result.action, engineer=result.engineer, comment=result.comment or None,
              outcome=outcome_text(result.outcome),
              failing_version=before.file_version if before else None,
              file=f"{result.file}:{result.line}" if result.file and result.line else result.file,
              error=result.error, statement=result.statement, message=result.message, next_step=next_step,
              incident=before.fingerprint if before else None)
    run.publish()
    return result


def recover_in_run(run: RunReport, timeout_seconds: int) -> None:
    """Ask, act, and ask again after a refusal or a failure, until the database is clean."""
    note: str | None = None
    view: FormView | None = None
    for round_no in range(1, MAX_ROUNDS + 1):
        if run.incident is None:
            return
        run.pausing_for_recovery = True
        run.next_step, _link = next_step_for(run.env, run.incident, paused_here=True)
        answer, view = ask(run, timeout_seconds, note, round_no, view)
        changed = changed_under_the_form(run, answer, view)
        if changed is not None:
            run_logger().warning("%s", changed)
            note = changed
            continue
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
