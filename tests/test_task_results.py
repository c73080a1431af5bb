"""What the status, plan, validate, apply and rollback tasks return (issue 22): the core's dataclasses,
not dicts. Prefect must be able to persist each (its default result serializer pickles them), and the
flow's result (``RunReport.to_dict``, what ``python -m flows --json`` prints) keeps the keys the
dicts had."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from conftest import write_migration


def test_the_tasks_return_the_core_dataclasses() -> None:
    from migrator.engine import Plan, RunResult
    from migrator.lint import ValidationReport
    from migrator.status_model import Status
    from tasks import apply, status, validate

    expected = {status.read_status: Status, status.plan_migrations: Plan, validate.validate_migrations: ValidationReport,
                apply.apply_migrations: RunResult, apply.rollback_migrations: RunResult}
    for task, kind in expected.items():
        returns = typing.get_type_hints(task.fn)["return"]
        assert returns is kind and dataclasses.is_dataclass(kind), (task.name, returns)


def test_results_pickle_and_the_run_summary_keeps_its_keys(db_url: str, migrations_dir: Path) -> None:
    from prefect.serializers import PickleSerializer

    from flows._common import RunReport, findings_md
    from migrator.config import Settings
    from migrator.engine import Migrator
    from migrator.lint import validate_folder
    from tasks.environment import load_environment

    write_migration(migrations_dir, 1, "create_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    write_migration(migrations_dir, 2, "index_t", "CREATE INDEX CONCURRENTLY t_id ON t (id);",
                    "DROP INDEX CONCURRENTLY t_id;")
    settings = Settings.from_env(database_url=db_url, migrations_path=migrations_dir)
    m = Migrator(settings)
    plan = m.plan(direction="up", target=None, steps=None)
    applied = m.up()
    st = m.status()
    reverted = m.down(1)
    report = validate_folder(migrations_dir, settings=settings, drift=False)
    serializer = PickleSerializer()
    for result in (plan, applied, st, reverted, report):
        again = serializer.loads(serializer.dumps(result))
        assert type(again) is type(result) and again.to_dict() == result.to_dict()

    run = RunReport("migrate", load_environment("local"))
    run.plan, run.steps = list(plan.steps), list(applied.steps)
    summary = run.to_dict()
    assert summary["plan"] == plan.to_dict()["steps"] and [s["version"] for s in summary["plan"]] == [1, 2]
    assert summary["steps"] == applied.to_dict()["steps"] and summary["steps"][1]["transactional"] is False
    assert findings_md(report).startswith(f"{report.errors} errors, {report.warnings} warnings\n\n")
