"""Recovery step: one recovery action on a dirty database (revert, resume, mark_applied, leave_dirty).

Never retried: a recovery that failed needs a person to look again, and a retry could run the
remaining statements twice.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.config import Settings
from migrator.recover.actions import Incident, RecoveryResult, recover
from migrator.recover.incident import DEFAULT_REMIND_MINUTES, PageDecision, claim
from tasks._common import flow_run_id, run_logger
from tasks.environment import Environment, run_environment


def claim_dirty_page(env: Environment, settings: Settings, inc: Incident) -> PageDecision:
    """Claim the ``database.dirty`` page of ``inc`` (once per incident, a reminder after
    ``monitor.dirty_reminder_minutes`` of deployments/<env>.yaml; empty there: no reminder)."""
    remind = env.raw.get("monitor", {}).get("dirty_reminder_minutes", DEFAULT_REMIND_MINUTES)
    return claim(settings, inc, "database.dirty", None if remind is None else float(remind))


@task(name="recover", retries=0, cache_policy=NO_CACHE, task_run_name="recover {action}")
def recover_database(environment: str, action: str, engineer: str, comment: str = "") -> RecoveryResult:
    """Run ``action`` under the migration lock; refused and failed actions come back with the reason."""
    env = run_environment(environment)
    log = run_logger()
    result = recover(env.settings, action, engineer, comment, run_id=flow_run_id(), progress=log.info)
    (log.info if result.ok else log.error)("%s", result.message)
    return result
