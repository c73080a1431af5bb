"""The migrate flow's rehearsal step: after the backup, before approval.

Environments with ``rehearsal.enabled`` (prod by default) restore the run's backup into a scratch
database on their rehearsal server and apply the pending migrations there first. The measured
table (locks, hold times, rewrites) is returned for the approval form and kept as an artifact; a
migration that would fail, or a rehearsal that cannot run, fails the run before the approval pause
with one ``rehearsal.failed`` alert, and nothing reaches the database. A rehearsal that had to pass
over an incomplete newest backup sends ``backup.incomplete`` and goes on with the older one.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact

from flows._common import artifact_key, failure_fields
from migrator.errors import MigratorError
from migrator.rehearse.report import summary_dict, to_markdown
from tasks.environment import Environment
from tasks.notify import notify
from tasks.rehearse import rehearsal_config, rehearse_migrations


class RehearsalFailedError(MigratorError):
    """A pending migration failed on the restored copy: production was not touched."""


def rehearse_before_approval(env: Environment, summary: dict[str, Any], target_version: int | None = None
                             ) -> str | None:
    """Rehearse when the environment asks for it; returns the Markdown to show the approver first."""
    conf = rehearsal_config(env)
    if not conf.enabled:
        return None
    context = {"database": summary.get("database"), "version_before": summary.get("version_before"),
               "backup_key": summary.get("backup_key")}
    try:
        report = rehearse_migrations.with_options(timeout_seconds=conf.timeout_seconds)(
            env.name, summary.get("backup_key") or "latest", target_version)
    except Exception as exc:
        notify(env.name, "rehearsal.failed", **context, **failure_fields(exc),
               message=f"rehearsal on {env.name} could not run: {exc}; nothing was applied")
        summary["alerted"] = True
        raise
    summary["rehearsal"] = summary_dict(report)
    if report.backup_problem:  # rehearsed on an older backup than the newest: said and alerted, never silent (issue 19)
        notify(env.name, "backup.incomplete", **{**context, "backup_key": report.backup_key},
               message=f"rehearsal on {env.name}: {report.backup_problem}")
    markdown = to_markdown(report)
    create_markdown_artifact(markdown=markdown, key=artifact_key("rehearsal", env.name),
                             description=f"rehearsal {env.name}: locks, hold times, rewrites")
    failed = report.failure
    if failed is not None:
        message = str(report.failure_message())
        notify(env.name, "rehearsal.failed", **context, failing_version=failed.version,
               file=failed.location or failed.file, error=failed.error, message=message)
        summary["alerted"] = True
        raise RehearsalFailedError(message)
    return markdown
