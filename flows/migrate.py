"""``migrate`` flow: backup -> validate -> (approval) -> apply -> verify -> notify.

Re-running a failed run from the Prefect UI reuses that run's backup (the backup task is cached
per flow run) and apply resumes from the database's real state. With ``dry_run`` the flow takes
no backup and changes nothing: it validates and shows the plan. When apply leaves the database
dirty (a non-transactional file failed half-way) the run pages once and pauses with the recovery
form (``flows.recovery_form``) instead of just failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows._common import (
    RunReport,
    apply_step,
    artifact_key,
    flow_report,
    migration_slot,
    read_status_before,
    take_backup,
)
from flows.approval import plan_markdown, request_approval
from flows.recovery_form import recover_in_run
from flows.rehearsal import rehearse_before_approval
from migrator.errors import MigratorError
from tasks.apply import apply_migrations
from tasks.environment import run_environment
from tasks.status import plan_migrations
from tasks.validate import validate_migrations
from tasks.verify import verify_status

if TYPE_CHECKING:
    from migrator.engine import Plan
    from migrator.lint import ValidationReport


@flow(name="migrate")
def migrate(
    environment: str = "local",
    target_version: int | None = None,
    dry_run: bool = False,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
    recovery_timeout_seconds: int | None = None,
    approved_by: str | None = None,
    fleet_run_id: str | None = None,
) -> Any:
    """Bring ``environment``'s database to ``target_version`` (default: the latest migration).

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        target_version: Stop at this version (leave empty for the latest migration); below the
            current version it migrates down.
        dry_run: Only validate and show the plan: no backup, nothing applied.
        require_approval: Pause for an engineer's approval before apply (empty: as the environment's
            settings say: approval.required in its file in deployments/).
        approval_timeout_seconds: How long to wait for the approval before giving up, nothing
            applied (empty: the environment's setting).
        recovery_timeout_seconds: When apply leaves the database dirty, how long the recovery form waits
            before the run ends and leaves the database as it is (empty: the approval timeout; 0: don't pause,
            end the run dirty at once, e.g. a local run with no Prefect UI to answer the form).
        approved_by: Set by migrate-fleet, whose one approval covers this database: no approval pause.
        fleet_run_id: Set by migrate-fleet: the fleet sends ONE alert for all its databases, so this
            run sends none.
    """
    env = run_environment(environment)
    with flow_report("migrate", env) as run:
        with migration_slot(env):
            read_status_before(run)
            if not dry_run:
                take_backup(run)
            run.lint = validate(environment)
            plan = plan_migrations(environment, target_version)
            run.plan = list(plan.steps)
            if dry_run:
                show_dry_run(run, plan)
            elif not plan.steps:
                run.outcome = "no change"
            else:
                preface = rehearse(run, target_version)  # rehearsal.enabled environments
                if approved_by:  # migrate-fleet's one approval covers this database
                    run.approved_by = approved_by
                elif env.approval_required if require_approval is None else require_approval:
                    run.approved_by = request_approval(env, plan, run.lint, run.backup_url,
                                                       approval_timeout_seconds or env.approval_timeout_seconds,
                                                       preface_md=preface, run=run)
                apply = apply_migrations.with_options(timeout_seconds=env.apply_task_seconds)
                apply_step(run, apply, target_version, run.approved_by, run.approval_comment or None)
        if run.incident is not None:
            recover_in_run(run, env.approval_timeout_seconds if recovery_timeout_seconds is None
                           else recovery_timeout_seconds)
        elif not dry_run:
            verify_status(environment, plan.target)
            if plan.steps:
                run.success_alert = ("migration.succeeded", {
                    "migrations": [s.label or f"{s.version}_{s.name}" for s in run.steps]})
    return run.final_state()


def rehearse(run: RunReport, target_version: int | None) -> str | None:
    """The rehearsal step (flows.rehearsal) before approval; its alert counts as this run's alert."""
    summary = {"database": run.database, "version_before": run.version_before, "backup_key": run.backup_key}
    try:
        return rehearse_before_approval(run.env, summary, target_version)
    finally:
        if summary.get("alerted"):
            run.alerted.append("rehearsal.failed")


def validate(environment: str) -> ValidationReport:
    """Lint, HIPAA checks and drift; errors stop the run before anything changes."""
    report = validate_migrations(environment)
    if report.errors:
        raise MigratorError(f"validation found {report.errors} error(s); see the lint findings artifact")
    return report


def show_dry_run(run: RunReport, plan: Plan) -> None:
    create_markdown_artifact(markdown=plan_markdown(run.env, plan, run.lint, None),
                             key=artifact_key("plan", run.env.name), description=f"dry run {run.env.name}")
    run.outcome = "dry run"
