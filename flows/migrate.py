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

from flows._common import (
    artifact_key,
    failure_fields,
    migration_slot,
    new_summary,
    record_status,
    run_artifact,
    take_backup,
)
from flows.approval import ApprovalRejected, plan_markdown, request_approval
from flows.rehearsal import rehearse_before_approval
from migrator.errors import DirtyDatabaseError, MigratorError
from tasks.apply import apply_migrations
from tasks.environment import load_environment
from tasks.notify import notify
from tasks.status import plan_migrations
from tasks.validate import validate_migrations
from tasks.verify import verify_status


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

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        target_version: Stop at this version (leave empty for the latest migration); below the
            current version it migrates down.
        dry_run: Only validate and show the plan: no backup, nothing applied.
        require_approval: Pause for an engineer's approval before apply (empty: as the environment's
            settings say: approval.required in deployments/<env>.yaml).
        approval_timeout_seconds: How long to wait for the approval before giving up, nothing
            applied (empty: the environment's setting).
        approved_by: Set by migrate-fleet, whose one approval covers this database: no approval pause.
        fleet_run_id: Set by migrate-fleet: the fleet sends ONE alert for all its databases, so this
            run sends none.
    """
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
            preface = rehearse_before_approval(env, summary, target_version)  # rehearsal.enabled environments
            approve = env.approval_required if require_approval is None else require_approval
            if approved_by:
                summary["approved_by"] = approved_by
            elif approve:
                summary["approved_by"] = request_approval(
                    env, plan, report, summary.get("backup_key"),
                    approval_timeout_seconds or env.approval_timeout_seconds, preface_md=preface,
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
        if isinstance(exc, Exception) and not isinstance(exc, ApprovalRejected) and not summary.get("alerted"):
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
