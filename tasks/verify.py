"""Verify step: after apply, the database is clean, at the target version, and without drift."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import load_environment


@task(name="verify", task_run_name="verify {environment} at {expected_version}", retries=3,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def verify_status(environment: str, expected_version: int, check_drift: bool = True) -> dict[str, Any]:
    """Raise when the database is dirty, not at ``expected_version``, or drifted from its files."""
    from migrator.verify import verify

    result = verify(load_environment(environment).settings, expected_version, check_drift)
    run_logger().info("verified: version %s, clean, no drift", result.status["version"])
    return result.to_dict()
