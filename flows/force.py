"""``force`` flow: clear a dirty state, only when the operator says which version is recorded now.

No blind forcing: ``expected_current`` must equal the version in ``schema_migrations`` (read
under the migration lock), else the run fails (``ForceRefusedError``), alerts, and nothing
changes. The force is in the audit trail. For a dirty database left by a failed migration,
``recover/<env>`` is the better tool: it knows which statements ran.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._common import flow_report, migration_slot, read_status_before
from migrator.recover.actions import version_text
from tasks.environment import run_environment
from tasks.force import force_version


@flow(name="force")
def force(environment: str, version: int, expected_current: int) -> Any:
    """Set ``version`` (clean) when the database records ``expected_current``.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        version: The version to record as applied and clean: the last migration that fully
            applied (the failed one's version minus 1 when it did not finish; -1 for none).
        expected_current: The version the database records now (the dirty one, as shown in the
            alert and the failed run); the force is refused when it differs.
    """
    env = run_environment(environment)
    with flow_report("force", env) as run:
        with migration_slot(env):
            before = read_status_before(run, refuse_dirty=False)
            force_version(environment, version, expected_current)
        run.outcome = "forced"
        run.success_alert = ("migration.succeeded", {
            "direction": "force",
            "message": f"{environment}: version forced from {version_text(before.version)}"
                       f"{' (dirty)' if before.dirty else ''} to {version_text(version)}",
        })
    return run.final_state()
