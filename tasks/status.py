"""Read-only steps: the database's status and the plan of what apply would do.

Retried (reading is safe to repeat) and never cached: each read must see the database as it is now.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.engine import Plan
from migrator.status_model import Status
from tasks._common import migrator_for, retry_unless_permanent


@task(name="status", task_run_name="status {environment}", retries=3,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def read_status(environment: str) -> Status:
    """Version, dirty flag, applied and pending migrations, as the engine's ``Status`` (plain data)."""
    status: Status = migrator_for(environment).status()
    return status


@task(name="plan", task_run_name="plan {direction} {environment}", retries=2,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan_migrations(environment: str, target_version: int | None = None, direction: str = "up",
                    steps: int | None = None) -> Plan:
    """What apply would do, without doing it: the engine's ``Plan`` (its steps as ``PlanItem``)."""
    plan: Plan = migrator_for(environment).plan(direction=direction, target=target_version, steps=steps)
    return plan
