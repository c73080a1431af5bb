"""``restore-drill`` flow (weekly): prove the latest backup restores.

Restores it into a scratch database next to the environment's database, checks the restored
schema version against the backup's metadata, and drops the scratch database; alerts on failure.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._common import failure_fields
from migrator.errors import MigratorError
from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import load_environment
from tasks.notify import notify


@task(name="restore-into-scratch", task_run_name="restore drill {environment}", retries=1,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=30, cache_policy=NO_CACHE)
def restore_into_scratch(environment: str) -> dict[str, Any]:
    from migrator import db
    from migrator.backup import restore_backup
    from migrator.scratch import scratch_database

    env = load_environment(environment)
    log = run_logger()
    with scratch_database(db.resolve(env.settings), "drill", say=log.info) as target:
        result = restore_backup(env.settings, "latest", target)
        log.info("restored %s (%s bytes) into a scratch database: schema version %s", result.key, result.size,
                 result.schema_version)
        if result.backup_schema_version is not None and result.schema_version != result.backup_schema_version:
            raise MigratorError(
                f"restored {result.key} is at schema version {result.schema_version}, but the backup "
                f"recorded {result.backup_schema_version}"
            )
        return result.to_dict()


@flow(name="restore-drill")
def restore_drill(environment: str = "local") -> dict[str, Any]:
    """Restore the latest backup into a scratch database and check its schema version.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
    """
    try:
        return restore_into_scratch(environment)
    except Exception as exc:
        notify(environment, "backup.failed", message=f"restore drill failed on {environment}: {exc}",
               drill=True, **failure_fields(exc))
        raise
