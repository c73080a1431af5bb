"""Verify step: after apply, the database is clean, at the target version, and without drift."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.errors import MigratorError
from tasks._common import run_logger
from tasks.environment import load_environment


@task(name="verify", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def verify_status(environment: str, expected_version: int, check_drift: bool = True) -> dict[str, Any]:
    """Raise when the database is dirty, not at ``expected_version``, or drifted from its files."""
    from migrator.engine import Migrator

    env = load_environment(environment)
    status = Migrator(env.settings).status()
    problems: list[str] = []
    if status.dirty:
        problems.append(f"database is dirty at version {status.version}")
    if status.version != expected_version:
        problems.append(f"database is at version {status.version}, expected {expected_version}")
    drift: list[str] = []
    if check_drift:
        from migrator import files
        from migrator.lint import drift as drift_mod

        drift = [
            f"{f.location()}: {f.message}"
            for f in drift_mod.check(env.settings, files.load(env.settings.migrations_path))
            if f.severity == "error"
        ]
        problems.extend(drift)
    result = {**status.to_dict(), "expected_version": expected_version, "drift": drift, "ok": not problems}
    if problems:
        raise MigratorError("verify failed: " + "; ".join(problems))
    run_logger().info("verified: version %s, clean, no drift", status.version)
    return result
