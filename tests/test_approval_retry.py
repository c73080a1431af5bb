"""A Retry of an approved run asks again only when what it would run is not what was approved:
``flows.approval.covered`` compares the environment, database, target and every step's file checksum.
(The Retry itself, against a real server and worker in Chromium: tests/test_e2e_recovery.py.)"""

from __future__ import annotations

from flows.approval import approved_scope, covered
from migrator.engine import Plan, PlanItem


def _plan(version: int, steps: list[tuple[int, str]], database: str = "askfrank", target: int = 10) -> Plan:
    """The plan task's answer (the engine's Plan) with these (version, checksum) steps up."""
    return Plan(database=database, version=version, dirty=False, target=target, steps=[
        PlanItem(version=v, name=f"m{v}", direction="up", to_version=v, transactional=True,
                 why_not_transactional=None, file=f"migrations/{v:06d}_m{v}.up.sql", checksum=c) for v, c in steps])


APPROVED = approved_scope("prod", _plan(8, [(9, "a9"), (10, "a10")]))


def test_the_same_plan_or_its_unapplied_rest_is_covered() -> None:
    assert covered(approved_scope("prod", _plan(8, [(9, "a9"), (10, "a10")])), APPROVED)
    assert covered(approved_scope("prod", _plan(9, [(10, "a10")])), APPROVED)  # 9 applied, 10 failed


def test_a_changed_file_another_target_database_or_environment_asks_again() -> None:
    assert not covered(approved_scope("prod", _plan(9, [(10, "fixed")])), APPROVED)
    assert not covered(approved_scope("prod", _plan(8, [(9, "a9"), (10, "a10"), (11, "a11")], target=11)), APPROVED)
    assert not covered(approved_scope("prod", _plan(9, [(10, "a10")], database="other")), APPROVED)
    assert not covered(approved_scope("staging", _plan(9, [(10, "a10")])), APPROVED)
    assert not covered(approved_scope("prod", _plan(10, [])), APPROVED)  # nothing to run: nothing to approve
    assert not covered(approved_scope("prod", _plan(9, [(10, "a10")])), {})
