"""Read-only steps: the database's status and the plan of what apply would do.

Retried (reading is safe to repeat) and never cached: each read must see the database as it is now.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._common import migrator_for, retry_unless_permanent


@task(name="status", task_run_name="status {environment}", retries=3,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def read_status(environment: str) -> dict[str, Any]:
    """Version, dirty flag, applied and pending migrations."""
    return dict(migrator_for(environment).status().to_dict())


@task(name="plan", task_run_name="plan {direction} {environment}", retries=2,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan_migrations(environment: str, target_version: int | None = None, direction: str = "up",
                    steps: int | None = None) -> dict[str, Any]:
    """What apply would do, without doing it."""
    return dict(migrator_for(environment).plan(direction=direction, target=target_version, steps=steps).to_dict())
