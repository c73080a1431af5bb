"""Migration file grammar and the problems reported for bad folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_migration
from migrator import files
from migrator.errors import MigrationFileError


def codes(ms: files.MigrationSet) -> list[tuple[str, str, str]]:
    return sorted((p.severity, p.code, Path(p.file).name) for p in ms.problems)


def test_versions_ordered_numerically_any_width(migrations_dir: Path) -> None:
    for name in ["10_ten", "9_nine", "000011_eleven", "20240101120000_timestamp"]:
        (migrations_dir / f"{name}.up.sql").write_text("SELECT 1;")
        (migrations_dir / f"{name}.down.sql").write_text("SELECT 1;")
    ms = files.load(migrations_dir)
    assert ms.versions == [9, 10, 11, 20240101120000]
    assert ms.problems == []
    assert ms.previous(11) == 10 and ms.previous(9) == -1 and ms.latest == 20240101120000


def test_each_problem_named_with_file_and_fix(migrations_dir: Path) -> None:
    write_migration(migrations_dir, 1, "ok", "SELECT 1;", "SELECT 1;")
    (migrations_dir / "1_again.up.sql").write_text("SELECT 2;")  # duplicate version 1 (up)
    write_migration(migrations_dir, 2, "no_down", "SELECT 1;")
    (migrations_dir / "000003_no_up.down.sql").write_text("SELECT 1;")
    (migrations_dir / "add_thing.sql").write_text("SELECT 1;")
    (migrations_dir / "000004_latin1.up.sql").write_bytes(b"SELECT '\xe9';")
    (migrations_dir / "000004_latin1.down.sql").write_text("SELECT 1;")
    write_migration(migrations_dir, 5, "empty", "-- nothing here\n/* really */\n", "SELECT 1;")
    write_migration(migrations_dir, 6, "names", "SELECT 1;")
    (migrations_dir / "000006_other.down.sql").write_text("SELECT 1;")
    (migrations_dir / "000007_gone.up.sql").symlink_to(migrations_dir / "does-not-exist")
    (migrations_dir / "README.md").write_text("notes")
    (migrations_dir / ".gitkeep").write_text("")
    ms = files.load(migrations_dir)
    assert codes(ms) == [
        ("error", "bad-name", "add_thing.sql"),
        ("error", "duplicate", "1_again.up.sql"),
        ("error", "empty", "000005_empty.up.sql"),
        ("error", "encoding", "000004_latin1.up.sql"),
        ("error", "missing-down", "000002_no_down.up.sql"),
        ("error", "missing-up", "000003_no_up.down.sql"),
        ("error", "missing-up", "000004_latin1.down.sql"),
        ("error", "name-mismatch", "000006_other.down.sql"),
        ("error", "unreadable", "000007_gone.up.sql"),
        ("warning", "not-a-migration", "README.md"),
    ]
    dup = next(p for p in ms.problems if p.code == "duplicate")
    assert "1_again.up.sql" in dup.message or "000001_ok.up.sql" in dup.message
    assert "next free: 000007" in dup.message
    enc = next(p for p in ms.problems if p.code == "encoding")
    assert "not valid UTF-8" in enc.message and "line 1" in enc.message
    with pytest.raises(MigrationFileError, match=r"and \d+ more; run `migrator validate`"):
        ms.raise_if_errors()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match="migrations folder .*nope does not exist.*MIGRATIONS_PATH"):
        files.load(tmp_path / "nope")


def test_create_numbers_and_headers(migrations_dir: Path) -> None:
    up, down = files.create(migrations_dir, "add_patient_table", justification="ticket AF-12")
    assert up.name == "000001_add_patient_table.up.sql" and down.name == "000001_add_patient_table.down.sql"
    assert "-- Business justification: ticket AF-12" in up.read_text()
    up2, _ = files.create(migrations_dir, "add_index")
    assert up2.name == "000002_add_index.up.sql"
    (migrations_dir / "000041_old.up.sql").write_text("SELECT 1;")
    up3, _ = files.create(migrations_dir, "third")
    assert up3.name == "000042_third.up.sql"


@pytest.mark.parametrize("bad", ["Add Patient", "add-patient", "1st_table", "", "x;drop"])
def test_create_refuses_bad_names(migrations_dir: Path, bad: str) -> None:
    with pytest.raises(MigrationFileError, match="not descriptive snake_case"):
        files.create(migrations_dir, bad)


def test_create_refuses_duplicate_name(migrations_dir: Path) -> None:
    files.create(migrations_dir, "add_patient_table")
    with pytest.raises(MigrationFileError, match="already exists"):
        files.create(migrations_dir, "add_patient_table")


def test_repository_migrations_load_cleanly() -> None:
    ms = files.load(Path(__file__).resolve().parent.parent / "migrations")
    assert ms.errors == [] and len(ms) >= 8
