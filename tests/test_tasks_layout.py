"""The task layer's shape (issue 12.5): settings know nothing of tasks; verify is core logic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT, write_migration


def test_environment_settings_import_no_task_module() -> None:
    """Not even inside a function (the old ``Environment.backup_task`` imported tasks.backup)."""
    tree = ast.parse((ROOT / "tasks" / "environment.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert [m for m in imported if m == "tasks" or m.startswith("tasks.")] == []


def test_each_task_module_holds_one_concern() -> None:
    from tasks import apply, force, status

    assert {t.name for t in (status.read_status, status.plan_migrations)} == {"status", "plan"}
    assert {t.name for t in (apply.apply_migrations, apply.rollback_migrations)} == {"apply", "rollback"}
    assert force.force_version.name == "force"


def test_core_verify_names_every_problem(db_url: str, migrations_dir: Path) -> None:
    from migrator.config import Settings
    from migrator.engine import Migrator
    from migrator.errors import MigratorError
    from migrator.verify import verify

    write_migration(migrations_dir, 1, "create_t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    write_migration(migrations_dir, 2, "add_c", "ALTER TABLE t ADD COLUMN c int;", "ALTER TABLE t DROP COLUMN c;")
    settings = Settings.from_env(database_url=db_url, migrations_path=migrations_dir)
    Migrator(settings).up()
    assert verify(settings, 2).to_dict()["ok"] is True
    with pytest.raises(MigratorError, match=r"^verify failed: database is at version 2, expected 1$"):
        verify(settings, 1, check_drift=False)
    (migrations_dir / "000002_add_c.up.sql").write_text("ALTER TABLE t ADD COLUMN d int;")
    with pytest.raises(MigratorError, match=r"verify failed: .*000002"):
        verify(settings, 2)
