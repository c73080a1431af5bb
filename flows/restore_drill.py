"""``restore-drill`` flow (weekly): prove the latest backup restores.

Restores it into a scratch database next to the environment's database, checks the restored
schema version against the backup's metadata, and drops the scratch database; alerts on failure
(``backup.failed``), and with ``backup.incomplete`` when the newest backup is incomplete and an older
one had to be restored. The scratch databases of killed drills are dropped first (``scratch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._common import failure_fields
from migrator.backup import RestoreResult
from migrator.errors import MigratorError
from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import run_environment
from tasks.notify import notify


@dataclass(frozen=True)
class DrillResult:
    """What the drill restored (key, sha256, schema versions; ``target`` is the scratch database as
    shown, without credentials) and, when the newest backup was incomplete and an older one had to be
    restored, that finding as one line."""

    restore: RestoreResult
    newest_problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flow's result and ``--json``: the restore's fields and ``newest_problem``."""
        return {**self.restore.to_dict(), "newest_problem": self.newest_problem}


@task(name="restore-into-scratch", task_run_name="restore drill {environment}", retries=1,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=30, cache_policy=NO_CACHE)
def restore_into_scratch(environment: str) -> DrillResult:
    """Restore ``latest`` into a scratch database (dropped afterwards) and check its schema version."""
    from migrator import db
    from migrator.backup import list_backups, parse_key, restore_backup
    from migrator.scratch import scratch_database

    env = run_environment(environment)
    log = run_logger()
    newest = next((b for b in list_backups(env.settings) if b.created_at is not None), None)
    with scratch_database(db.resolve(env.settings), "drill", say=log.info) as target:
        result = restore_backup(env.settings, "latest", target)
        parsed = parse_key(result.key)
        taken = f"{parsed[2]:%Y-%m-%d %H:%M:%S} UTC" if parsed else "at an unknown time"
        log.info("restored %s (%s bytes, taken %s) into a scratch database: schema version %s", result.key,
                 result.size, taken, result.schema_version)
        problem = None
        if newest is not None and not newest.complete and newest.key != result.key:
            # the drill proves "latest" restores; a broken newest backup is the finding, not a detail
            problem = (f"the newest backup {newest.key} is INCOMPLETE ({newest.problem}); the drill "
                       f"restored the newest complete one, {result.key}; take a new backup")
            log.warning("%s", problem)
        if result.backup_schema_version is not None and result.schema_version != result.backup_schema_version:
            raise MigratorError(
                f"restored {result.key} is at schema version {result.schema_version}, but the backup "
                f"recorded {result.backup_schema_version}"
            )
        return DrillResult(result, newest_problem=problem)


@flow(name="restore-drill")
def restore_drill(environment: str = "local") -> dict[str, Any]:
    """Restore the latest backup into a scratch database and check its schema version.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
    """
    try:
        drill = restore_into_scratch(environment)
    except Exception as exc:
        notify(environment, "backup.failed", message=f"restore drill failed on {environment}: {exc}",
               drill=True, **failure_fields(exc))
        raise
    if drill.newest_problem:
        notify(environment, "backup.incomplete", backup_key=drill.restore.key, drill=True,
               message=f"restore drill on {environment}: {drill.newest_problem}")
    return drill.to_dict()
