"""``restore-drill`` flow (weekly): prove the latest backup restores.

Restores it into a scratch database next to the environment's database, checks the restored
schema version against the backup's metadata, and drops the scratch database; alerts on failure
(``backup.failed``), and with ``backup.incomplete`` when the newest backup is incomplete and an older
one had to be restored. The scratch databases of killed drills are dropped first (``scratch``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._common import failure_fields
from tasks.backup import restore_into_scratch
from tasks.notify import notify


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
