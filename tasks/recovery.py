"""Recovery step: one recovery action on a dirty database (revert, resume, mark_applied, leave_dirty).

Never retried: a recovery that failed needs a person to look again, and a retry could run the
remaining statements twice.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.recover.actions import RecoveryResult, recover
from tasks._common import flow_run_id, run_logger
from tasks.environment import run_environment


@task(name="recover", retries=0, cache_policy=NO_CACHE, task_run_name="recover {action}")
def recover_database(environment: str, action: str, engineer: str, comment: str = "") -> RecoveryResult:
    """Run ``action`` under the migration lock; refused and failed actions come back with the reason."""
    env = run_environment(environment)
    log = run_logger()
    result = recover(env.settings, action, engineer, comment, run_id=flow_run_id(), progress=log.info)
    (log.info if result.ok else log.error)("%s", result.message)
    return result
