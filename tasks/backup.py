"""Backup tasks: pg_dump streamed to S3 (or file://) and verified; retention; the restore drill.

The backup is retried (an upload can fail transiently) and cached per flow run: when an engineer
retries a failed ``migrate`` run from the UI, the backup of that run is reused instead of taken again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE

from migrator.backup import BackupResult, PruneResult, VerifyResult, create_verified_backup, prune_backups
from migrator.backup.drill import DrillResult, restore_drill
from tasks._common import flow_run_id, retry_unless_permanent, run_logger
from tasks.environment import Environment, run_environment


@dataclass(frozen=True)
class VerifiedBackup:
    """The backup a run took and its read-back check (sha256, size, ``pg_restore --list``): what the
    flows name in their summaries and what a retried run reuses from the cache. Plain data: the
    URLs are the store's (``s3://bucket/...``, ``file:///...``), never a database URL."""

    backup: BackupResult
    check: VerifyResult

    def to_dict(self) -> dict[str, Any]:
        """The backup flow's result and ``--json``: the backup's fields, ``verified`` and ``toc_entries``."""
        return {**self.backup.to_dict(), "verified": self.check.ok, "toc_entries": self.check.toc_entries}


@task(
    name="backup",
    task_run_name="backup {environment}",
    retry_condition_fn=retry_unless_permanent,
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=RUN_ID + TASK_SOURCE + INPUTS,
    persist_result=True,
    timeout_seconds=4 * 3600,
)
def backup_database(environment: str) -> VerifiedBackup:
    """Take and verify a backup; returns it with its check (key, size, sha256; no credentials)."""
    log = run_logger()
    result, check = create_verified_backup(run_environment(environment).settings, run_id=flow_run_id(),
                                           say=lambda line: log.info("%s", line))
    return VerifiedBackup(backup=result, check=check)


def backup_task(env: Environment) -> Any:
    """The backup task with ``env``'s timeout and retry policy (deployments/<env>.yaml)."""
    return backup_database.with_options(
        timeout_seconds=env.backup_task_seconds,
        retries=env.backup_retries,
        retry_delay_seconds=env.backup_retry_delay_seconds,
    )


@task(name="prune", task_run_name="prune backups {environment}", retries=2,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=10, cache_policy=NO_CACHE)
def prune(environment: str) -> PruneResult:
    """Apply the environment's retention policy (keep_last, keep_days); returns what was kept and deleted."""
    env = run_environment(environment)
    return prune_backups(env.settings, keep_last=env.keep_last, keep_days=env.keep_days, yes=True)


@task(name="restore-into-scratch", task_run_name="restore drill {environment}", retries=1,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=30, cache_policy=NO_CACHE)
def restore_into_scratch(environment: str) -> DrillResult:
    """Restore ``latest`` into a scratch database (dropped afterwards) and check its schema version."""
    log = run_logger()
    return restore_drill(run_environment(environment).settings, say=log.info, warn=log.warning)
