"""Apply steps: run migration files up or down through the engine (transactional, locked, audited).

Never retried and never cached: a failed migration needs a person, and a re-run must start from
the database's real state (the engine reads it under its lock). A failure that leaves the database
dirty is told as the flow handles it: the run pauses with the recovery form, so the advice is the
form, not ``migrator force`` (the CLI's way out).
"""

from __future__ import annotations

import re

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.engine import RunResult
from migrator.errors import MigrationFailedError
from tasks._common import migrator_for

FORM_ADVICE = ("this run pauses with the recovery form: open the run and click Resume, then choose resume, revert, "
               "mark_applied or leave_dirty (not `migrator force`)")
_FORCE_ADVICE = re.compile(r";?\s*finish the change by hand.*$", re.DOTALL)


def _told_for_the_form(exc: MigrationFailedError) -> MigrationFailedError:
    if not exc.dirty:
        return exc
    text = str(exc)
    told = _FORCE_ADVICE.sub("", text) if _FORCE_ADVICE.search(text) else text
    return exc.with_message(f"{told}; {FORM_ADVICE}")


@task(name="apply", task_run_name="apply {environment}", retries=0, cache_policy=NO_CACHE,
      timeout_seconds=2 * 3600)
def apply_migrations(
    environment: str, target_version: int | None = None, approved_by: str | None = None,
    approval_comment: str | None = None,
) -> RunResult:
    """Apply up to ``target_version`` (default: latest, or goto when below the current version)."""
    m = migrator_for(environment, approved_by, approval_comment)
    try:
        result: RunResult = m.up() if target_version is None else m.goto(target_version)
    except MigrationFailedError as exc:
        raise _told_for_the_form(exc) from exc.__cause__
    return result


@task(name="rollback", task_run_name="rollback {environment}", retries=0, cache_policy=NO_CACHE,
      timeout_seconds=2 * 3600)
def rollback_migrations(environment: str, steps: int | None = 1, to_version: int | None = None,
                        approved_by: str | None = None, approval_comment: str | None = None) -> RunResult:
    """Revert ``steps`` migrations, or down to ``to_version``."""
    m = migrator_for(environment, approved_by, approval_comment)
    try:
        result: RunResult = m.goto(to_version) if to_version is not None else m.down(steps or 1)
    except MigrationFailedError as exc:
        raise _told_for_the_form(exc) from exc.__cause__
    return result
