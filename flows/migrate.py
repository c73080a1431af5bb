"""``migrate`` flow: backup -> validate -> (approval) -> apply -> verify -> notify.

Re-running a failed run from the Prefect UI reuses that run's backup (the backup task is cached
per flow run) and apply resumes from the database's real state. With ``dry_run`` the flow takes
no backup and changes nothing: it validates and shows the plan.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows._common import (
    artifact_key,
    failure_fields,
    findings_md,
    md_table,
    migration_slot,
    new_summary,
    record_status,
    run_artifact,
    take_backup,
)
from migrator.errors import DirtyDatabaseError, MigratorError
from tasks.apply import apply_migrations, plan_migrations
from tasks.environment import Environment, load_environment
from tasks.notify import notify
from tasks.validate import validate_migrations
from tasks.verify import verify_status


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
        f"Database `{plan['database']}` is at version **{plan['version']}**; target **{plan['target']}**.\n\n"
        f"Backup: `{backup_key or 'none'}`\n\n"
        "## Migrations to run\n\n" + md_table(["version", "name", "direction", "transactional"], rows) +
        "\n## Lint findings\n\n" + findings_md(report)
    )


def request_approval(env: Environment, plan: dict[str, Any], report: dict[str, Any] | None,
                     backup_key: str | None, timeout_seconds: int) -> str:
    """Pause until an engineer approves in the UI; returns who approved. Timeout or rejection fails."""
    md = plan_markdown(env, plan, report, backup_key)
    create_markdown_artifact(markdown=md, key=artifact_key("approval", env.name),
                             description=f"approval needed: {env.name}")
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


@flow(name="migrate")
def migrate(
    environment: str = "local",
    target_version: int | None = None,
    dry_run: bool = False,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
    approved_by: str | None = None,
    fleet_run_id: str | None = None,
) -> dict[str, Any]:
    """Bring ``environment``'s database to ``target_version`` (default: the latest migration).

    ``approved_by`` / ``fleet_run_id`` are set by migrate-fleet: its one approval covers this
    database, and it sends one alert for the fleet, so this run sends none."""
    env = load_environment(environment)
    started = time.monotonic()
    summary = new_summary(environment)
    report: dict[str, Any] | None = None
    try:
        with migration_slot(env):
            record_status(environment, summary)
            if not dry_run:
                take_backup(env, summary)
            report = validate_migrations(environment)
            if report["errors"]:
                raise MigratorError(f"validation found {report['errors']} error(s); see the lint findings artifact")
            plan = plan_migrations(environment, target_version)
            summary["plan"] = plan["steps"]
            if dry_run:
                create_markdown_artifact(markdown=plan_markdown(env, plan, report, None),
                                         key=artifact_key("plan", env.name), description=f"dry run {env.name}")
                summary["outcome"] = "dry run"
                return summary
            if not plan["steps"]:
                summary["outcome"] = "no change"
                verify_status(environment, plan["target"])
                return summary
            approve = env.approval_required if require_approval is None else require_approval
            if approved_by:
                summary["approved_by"] = approved_by
            elif approve:
                summary["approved_by"] = request_approval(
                    env, plan, report, summary.get("backup_key"),
                    approval_timeout_seconds or env.approval_timeout_seconds,
                )
            result = apply_migrations.with_options(timeout_seconds=env.apply_task_seconds)(
                environment, target_version, summary.get("approved_by")
            )
            summary.update(steps=result["steps"], version_after=result["version_after"])
            verify_status(environment, plan["target"])
        summary["outcome"] = "succeeded"
        summary["duration_seconds"] = round(time.monotonic() - started, 1)
        notify(environment, "migration.succeeded", database=summary["database"],
               version_before=summary["version_before"], version_after=summary["version_after"],
               backup_key=summary.get("backup_key"), duration_ms=int(summary["duration_seconds"] * 1000),
               migrations=[f"{s['version']}_{s['name']}" for s in summary["steps"]])
        return summary
    except BaseException as exc:
        summary.update(outcome="failed", error=str(exc), duration_seconds=round(time.monotonic() - started, 1))
        if isinstance(exc, Exception) and not summary.get("alerted"):
            event = "database.dirty" if isinstance(exc, DirtyDatabaseError) else "migration.failed"
            fields = failure_fields(exc)
            if isinstance(exc, DirtyDatabaseError):
                fields.update(failing_version=exc.version, dirty=True)
            fields.setdefault("version_before", summary.get("version_before"))
            notify(environment, event, database=summary.get("database"), backup_key=summary.get("backup_key"),
                   duration_ms=int(summary["duration_seconds"] * 1000), **fields)
        raise
    finally:
        summary.setdefault("duration_seconds", round(time.monotonic() - started, 1))
        run_artifact("migrate", env, summary, report)
