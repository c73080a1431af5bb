"""Backup step: pg_dump streamed to S3 (or file://), verified.

Retried (an upload can fail transiently) and cached per flow run: when an engineer retries a
failed ``migrate`` run from the UI, the backup of that run is reused instead of taken again.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE

from tasks._common import flow_run_id, retry_unless_permanent, run_logger
from tasks.environment import Environment, run_environment


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
def backup_database(environment: str) -> dict[str, Any]:
    """Take and verify a backup; returns its key, size and sha256 (no credentials)."""
    from migrator.backup import create_backup, verify_backup

    env = run_environment(environment)
    log = run_logger()
    result = create_backup(env.settings, run_id=flow_run_id())
    if result.cleanup:
        log.info("%s", result.cleanup)
    log.info("backup %s written: %s bytes, sha256 %s", result.key, result.size, result.sha256)
    check = verify_backup(env.settings, result.key)
    log.info("backup %s verified: %s TOC entries", result.key, check.toc_entries)
    return {**result.to_dict(), "verified": check.ok, "toc_entries": check.toc_entries}


def backup_task(env: Environment) -> Any:
    """The backup task with ``env``'s timeout and retry policy (deployments/<env>.yaml)."""
    return backup_database.with_options(
        timeout_seconds=env.backup_task_seconds,
        retries=env.backup_retries,
        retry_delay_seconds=env.backup_retry_delay_seconds,
    )
