"""``force`` flow: clear a dirty state, only when the operator says which version is recorded now.

No blind forcing: ``expected_current`` must equal the version in ``schema_migrations`` (read
under the migration lock), else the run fails and nothing changes. The force is in the audit trail.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows._common import migration_slot, new_summary, record_status, run_artifact
from tasks.environment import load_environment
from tasks.force import force_version
from tasks.notify import notify


@flow(name="force")
def force(environment: str, version: int, expected_current: int) -> dict[str, Any]:
    """Set ``version`` (clean) when the database records ``expected_current``.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        version: The version to record as applied and clean: the last migration that fully
            applied (the failed one's version minus 1 when it did not finish; -1 for none).
        expected_current: The version the database records now (the dirty one, as shown in the
            alert and the failed run); the force is refused when it differs.
    """
    env = load_environment(environment)
    started = time.monotonic()
    summary = new_summary(environment)
    try:
        with migration_slot(env):
            before = record_status(environment, summary, refuse_dirty=False)
            result = force_version(environment, version, expected_current)
            summary.update(version_after=result["version_after"], outcome="forced")
        notify(environment, "migration.succeeded", database=summary["database"], direction="force",
               version_before=before["version"], version_after=version, dirty=False,
               message=f"{environment}: version forced from {before['version']}"
                       f"{' (dirty)' if before['dirty'] else ''} to {version}")
        return summary
    except Exception as exc:
        summary.update(outcome="refused" if "refusing to force" in str(exc) else "failed", error=str(exc))
        raise
    finally:
        summary["duration_seconds"] = round(time.monotonic() - started, 1)
        run_artifact("force", env, summary)
