"""Verify step: after apply, the database is clean, at the target version, and without drift (files and schema)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.verify import verify
from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import run_environment

if TYPE_CHECKING:
    from migrator.verify import Verification


@task(name="verify", task_run_name="verify {environment} at {expected_version}", retries=3,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def verify_status(environment: str, expected_version: int, check_drift: bool = True) -> Verification:
    """Raise when the database is dirty, not at ``expected_version``, or drifted from its files or their schema
    (live schema drift per the environment's ``drift.verify``: fail, warn or off). Returns what verify saw as a
    ``Verification`` dataclass (Prefect pickles it like any result), not a bare dict."""
    env = run_environment(environment)
    result = verify(env.settings, expected_version, check_drift, env.drift_verify, drift_ignore=env.drift_ignore,
                    scratch_url=env.drift_scratch_url)
    log = run_logger()
    for warning in result.warnings:
        log.warning("%s (drift.verify: warn; see `migrator drift --json`)", warning)
    checked = "no schema drift" if check_drift and env.drift_verify != "off" else "schema drift not checked"
    log.info("verified: version %s, clean, no file drift, %s", result.status["version"],
             checked if not result.warnings else f"{len(result.warnings)} schema drift warning(s)")
    return result
