"""Schema drift step: the live schema against the schema its applied migrations produce.

Used by the status monitor. Retried like the other reads; a check that cannot run (no CREATEDB
for the scratch build, a bad ignore file) comes back as ``error`` so the monitor still does its
other checks and says why drift was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.errors import MigratorError
from migrator.schema.drift import DriftReport, check
from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import run_environment


@dataclass(frozen=True)
class DriftCheck:
    """The drift step's answer: the report, or why the check could not run (then ``report`` is None)."""

    report: DriftReport | None = None
    error: str | None = None


@task(name="schema-drift", task_run_name="schema drift {environment}", retries=2,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def schema_drift(environment: str) -> DriftCheck:
    """The drift report, or the reason the check could not run."""
    env = run_environment(environment)
    try:
        report = check(env.settings, ignore=env.drift_ignore, scratch_url=env.drift_scratch_url)
    except MigratorError as exc:  # the same on a retry: say why, let the monitor go on
        run_logger().warning("schema drift not checked: %s", exc)
        return DriftCheck(error=str(exc))
    run_logger().info("%s", report.summary())
    return DriftCheck(report=report)
