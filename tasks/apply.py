"""Apply step: plan and apply migrations through the engine (transactional, locked, audited).

Never retried and never cached: a failed migration needs a person, and a re-run must start from
the database's real state (the engine reads it under its lock).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._common import flow_run_id, run_logger
from tasks.environment import load_environment


def _migrator(environment: str, approved_by: str | None = None) -> Any:
    from migrator.engine import Migrator

    env = load_environment(environment)
    log = run_logger()
    return Migrator(env.settings, run_id=flow_run_id(), progress=log.info, approved_by=approved_by)


@task(name="status", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def read_status(environment: str) -> dict[str, Any]:
    """Version, dirty flag, applied and pending migrations."""
    return dict(_migrator(environment).status().to_dict())


@task(name="plan", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan_migrations(environment: str, target_version: int | None = None, direction: str = "up",
                    steps: int | None = None) -> dict[str, Any]:
    """What apply would do, without doing it."""
    return dict(_migrator(environment).plan(direction=direction, target=target_version, steps=steps).to_dict())


@task(name="apply", retries=0, cache_policy=NO_CACHE, timeout_seconds=2 * 3600)
def apply_migrations(
    environment: str, target_version: int | None = None, approved_by: str | None = None
) -> dict[str, Any]:
    """Apply up to ``target_version`` (default: latest, or goto when below the current version)."""
    m = _migrator(environment, approved_by)
    result = m.up() if target_version is None else m.goto(target_version)
    return dict(result.to_dict())


@task(name="rollback", retries=0, cache_policy=NO_CACHE, timeout_seconds=2 * 3600)
def rollback_migrations(environment: str, steps: int | None = 1, to_version: int | None = None,
                        approved_by: str | None = None) -> dict[str, Any]:
    """Revert ``steps`` migrations, or down to ``to_version``."""
    m = _migrator(environment, approved_by)
    result = m.goto(to_version) if to_version is not None else m.down(steps or 1)
    return dict(result.to_dict())


@task(name="force", retries=0, cache_policy=NO_CACHE)
def force_version(environment: str, version: int, expected_current: int) -> dict[str, Any]:
    """Set the version and clear dirty, only when the recorded version is the expected one."""
    return dict(_migrator(environment).force(version, expected_current=expected_current).to_dict())
