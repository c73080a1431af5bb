"""Apply steps: run migration files up or down through the engine (transactional, locked, audited).

Never retried and never cached: a failed migration needs a person, and a re-run must start from
the database's real state (the engine reads it under its lock).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._common import migrator_for


@task(name="apply", task_run_name="apply {environment}", retries=0, cache_policy=NO_CACHE,
      timeout_seconds=2 * 3600)
def apply_migrations(
    environment: str, target_version: int | None = None, approved_by: str | None = None
) -> dict[str, Any]:
    """Apply up to ``target_version`` (default: latest, or goto when below the current version)."""
    m = migrator_for(environment, approved_by)
    result = m.up() if target_version is None else m.goto(target_version)
    return dict(result.to_dict())


@task(name="rollback", task_run_name="rollback {environment}", retries=0, cache_policy=NO_CACHE,
      timeout_seconds=2 * 3600)
def rollback_migrations(environment: str, steps: int | None = 1, to_version: int | None = None,
                        approved_by: str | None = None) -> dict[str, Any]:
    """Revert ``steps`` migrations, or down to ``to_version``."""
    m = migrator_for(environment, approved_by)
    result = m.goto(to_version) if to_version is not None else m.down(steps or 1)
    return dict(result.to_dict())
