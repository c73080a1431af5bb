"""Force step: set the recorded version and clear dirty, guarded by the version the operator expects.

Never retried: a refused force needs the operator to look again.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.engine import RunResult
from tasks._common import migrator_for


@task(name="force", task_run_name="force {environment} to {version}", retries=0, cache_policy=NO_CACHE)
def force_version(environment: str, version: int, expected_current: int) -> RunResult:
    """Set the version and clear dirty, only when the recorded version is the expected one."""
    result: RunResult = migrator_for(environment).force(version, expected_current=expected_current)
    return result
