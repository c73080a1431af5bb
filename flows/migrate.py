"""``migrate`` flow: backup -> validate -> (approval) -> apply -> verify -> notify.

Re-running a failed run from the Prefect UI reuses that run's backup (the backup task is cached
per flow run) and apply resumes from the database's real state. With ``dry_run`` the flow takes
no backup and changes nothing: it validates and shows the plan. When apply leaves the database
dirty (a non-transactional file failed half-way) the run pages once and pauses with the recovery
form (``flows.recovery_form``) instead of just failing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows._common import (
    RunReport,
    apply_step,
    findings_md,
    flow_report,
    md_table,
    migration_slot,
    read_status_before,
    take_backup,
)
from flows.recovery_form import recover_in_run
from migrator.errors import MigratorError
from migrator.recovery import version_text
from tasks.apply import apply_migrations, plan_migrations
from tasks.environment import Environment, load_environment
from tasks.notify import notify
from tasks.validate import validate_migrations
from tasks.verify import verify_status


@flow(name="migrate")
def migrate(
    environment: str = "local",
    target_version: int | None = None,
    dry_run: bool = False,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
    recovery_timeout_seconds: int | None = None,
) -> Any:
    """Bring ``environment``'s database to ``target_version`` (default: the latest migration).

    Args:
        environment: deployments/<environment>.yaml names the database, backups and alerts.
        target_version: migrate up (or down) to this version; empty for the latest.
        dry_run: validate and show the plan only: no backup, no change.
        require_approval: pause for an engineer's approval before apply (default: the environment's setting).
        approval_timeout_seconds: how long the approval form waits (default: the environment's setting).
        recovery_timeout_seconds: how long the recovery form waits when apply leaves the database dirty.
    """
    env = load_environment(environment)
    with flow_report("migrate", env) as run:
        with migration_slot(env):
            read_status_before(run)
            if not dry_run:
                take_backup(run)
            run.lint = validate(environment)
            plan = plan_migrations(environment, target_version)
            run.plan = plan["steps"]
            if dry_run:
                show_dry_run(run, plan)
            elif not plan["steps"]:
                run.outcome = "no change"
            else:
                if env.approval_required if require_approval is None else require_approval:
                    run.approved_by = request_approval(env, plan, run.lint, run.backup_url,
                                                       approval_timeout_seconds or env.approval_timeout_seconds)
                apply = apply_migrations.with_options(timeout_seconds=env.apply_task_seconds)
                apply_step(run, apply, target_version, run.approved_by)
        if run.incident is not None:
            recover_in_run(run, recovery_timeout_seconds or env.approval_timeout_seconds)
        elif not dry_run:
            verify_status(environment, plan["target"])
            if plan["steps"]:
                run.success_alert = ("migration.succeeded", {
                    "migrations": [f"{s['version']}_{s['name']}" for s in run.steps]})
    return run.final_state()


def validate(environment: str) -> dict[str, Any]:
    """Lint, HIPAA checks and drift; errors stop the run before anything changes."""
    report = validate_migrations(environment)
    if report["errors"]:
        raise MigratorError(f"validation found {report['errors']} error(s); see the lint findings artifact")
    return dict(report)


def show_dry_run(run: RunReport, plan: dict[str, Any]) -> None:
    create_markdown_artifact(markdown=plan_markdown(run.env, plan, run.lint, None), key=f"plan-{run.env.name}",
                             description=f"dry run {run.env.name}")
    run.outcome = "dry run"


class Approval(RunInput):
    """What the approving engineer fills in, in the Prefect UI, to resume a paused run."""

    approved: bool = Field(default=False, description="Apply the migrations listed in the plan artifact")
    approver: str = Field(default="", description="Your name or e-mail; recorded in the audit trail")
    comment: str = Field(default="", description="Ticket or reason (optional)")


def plan_markdown(env: Environment, plan: dict[str, Any], report: dict[str, Any] | None, backup_key: str | None) -> str:
    rows = [
        (s["version"], s["name"], s["direction"], "yes" if s["transactional"] else f"no: {s['why_not_transactional']}")
        for s in plan["steps"]
    ]
    return (
        f"# Plan for `{env.name}`\n\n"
        f"Database `{plan['database']}` is at version **{version_text(plan['version'])}**; "
        f"target **{version_text(plan['target'])}**.\n\n"
        f"Backup: `{backup_key or 'none'}`\n\n"
        "## Migrations to run\n\n" + md_table(["version", "name", "direction", "transactional"], rows) +
        "\n## Lint findings\n\n" + findings_md(report)
    )


def request_approval(env: Environment, plan: dict[str, Any], report: dict[str, Any] | None,
                     backup_key: str | None, timeout_seconds: int) -> str:
    """Pause until an engineer approves in the UI; returns who approved. Timeout or rejection fails."""
    md = plan_markdown(env, plan, report, backup_key)
    create_markdown_artifact(markdown=md, key=f"approval-{env.name}", description=f"approval needed: {env.name}")
    notify(env.name, "approval.requested", database=plan["database"], version_before=plan["version"],
           version_after=plan["target"], backup_key=backup_key,
           message=f"{len(plan['steps'])} migration(s) on {env.name} wait for approval")
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=md),
            timeout=timeout_seconds,
            poll_interval=max(1, min(10, timeout_seconds // 10)),
        )
    except FlowPauseTimeout:
        raise MigratorError(f"approval timed out after {timeout_seconds}s: nothing was applied") from None
    if not answer.approved:
        who = answer.approver or "an engineer"
        raise MigratorError(f"rejected by {who}{': ' + answer.comment if answer.comment else ''}; nothing was applied")
    if not answer.approver.strip():
        raise MigratorError("approval without an approver name; nothing was applied")
    return answer.approver.strip()
