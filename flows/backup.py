"""``backup`` flow: a verified backup on demand or on schedule, then the retention policy."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._common import failure_fields
from tasks.backup import VerifiedBackup, backup_task, prune
from tasks.environment import run_environment
from tasks.notify import notify


@flow(name="backup")
def backup(environment: str = "local", apply_retention: bool = True) -> dict[str, Any]:
    """Take and verify a backup, then delete backups beyond the environment's retention policy.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        apply_retention: Also delete backups older than the environment's keep_last / keep_days.
    """
    env = run_environment(environment)
    try:
        taken: VerifiedBackup = backup_task(env)(environment)
    except Exception as exc:
        notify(environment, "backup.failed", **failure_fields(exc))
        raise
    result = taken.to_dict()  # the run's result and --json: the backup's fields, verified, toc_entries
    if apply_retention:
        result["pruned"] = [b.key for b in prune(environment).deleted]
    return result
