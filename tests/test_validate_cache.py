"""The validate cache (.migrator/cache/validate): an unchanged folder is answered without parsing,
and any change to a file, the options or the linter makes it validate again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import write_migration

HEADER = "-- Business justification: T-21 cache test.\n"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("MIGRATOR_NO_CACHE", raising=False)
    monkeypatch.delenv("MIGRATOR_REQUIRE_JUSTIFICATION", raising=False)
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);", "DROP TABLE IF EXISTS rooms;")
    write_migration(d, 2, "index_rooms", HEADER + "CREATE INDEX idx_rooms_id ON rooms (id);",
                    "DROP INDEX IF EXISTS idx_rooms_id;")
    return d


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files parsed from now on (a cache hit parses none)."""
    import migrator.lint.parse

    seen: list[str] = []
    real = migrator.lint.parse.parse_file

    def counting(file: str, sql: str):  # type: ignore[no-untyped-def]
        seen.append(file)
        return real(file, sql)

    monkeypatch.setattr(migrator.lint.parse, "parse_file", counting)
    return seen


def test_an_unchanged_folder_is_answered_from_the_cache(cli, folder: Path, parses: list[str]) -> None:  # type: ignore[no-untyped-def]
    first = cli("validate", "--path", str(folder))
    assert first.code == 0 and "MIG003" in first.out and len(parses) == 4
    parses.clear()
    again = cli("validate", "--path", str(folder))
    assert (again.code, again.out) == (first.code, first.out)
    as_json = cli("validate", "--path", str(folder), "--format", "json")  # another format: from the stored report
    assert as_json.code == 0 and '"MIG003"' in as_json.out
    strict = cli("validate", "--path", str(folder), "--strict")  # the exit code still follows the options
    assert strict.code == 2 and strict.out == first.out
    assert parses == []


def test_a_changed_file_of_the_same_size_validates_again(cli, folder: Path) -> None:  # type: ignore[no-untyped-def]
    first = cli("validate", "--path", str(folder))
    up = folder / "000002_index_rooms.up.sql"
    text = up.read_text()
    up.write_text(text.replace("CREATE INDEX idx", "CREATE INDEX jdx"))  # same size, same second
    stat = up.stat()
    os.utime(up, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = cli("validate", "--path", str(folder))
    assert "jdx_rooms_id" in again.out and again.out != first.out


def test_options_and_no_cache_are_respected(cli, folder: Path, parses: list[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (folder / "000003_add_beds.up.sql").write_text("CREATE TABLE beds (id int);\n")  # no justification
    (folder / "000003_add_beds.down.sql").write_text("DROP TABLE IF EXISTS beds;\n")
    strict = cli("validate", "--path", str(folder))
    assert strict.code == 1 and "MIG202" in strict.out
    relaxed = cli("validate", "--path", str(folder), "--no-require-justification")
    assert relaxed.code == 0 and "MIG202" not in relaxed.out
    parses.clear()
    assert cli("validate", "--path", str(folder)).out == strict.out  # both answers are cached
    assert cli("validate", "--path", str(folder), "--no-require-justification").out == relaxed.out
    assert parses == []
    assert cli("validate", "--path", str(folder), "--no-cache").out == strict.out and len(parses) == 6
    monkeypatch.setenv("MIGRATOR_NO_CACHE", "1")
    assert cli("validate", "--path", str(folder)).out == strict.out and len(parses) == 12


def test_an_unwritable_cache_is_ignored(cli, folder: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(blocker))
    for _ in range(2):
        r = cli("validate", "--path", str(folder))
        assert r.code == 0 and "MIG003" in r.out and r.err == ""


def test_drift_is_never_taken_from_the_cache(cli, folder: Path, db_url: str, parses: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert cli("validate", "--path", str(folder)).code == 0
    parses.clear()
    r = cli("validate", "--path", str(folder), "--database-url", db_url)
    assert r.code == 0 and len(parses) == 4


def test_stat_shortcut_still_sees_an_edit_that_keeps_size_and_mtime(cli, folder: Path, parses: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Old files are trusted by their stat (no reading); an edit restoring size and mtime changes ctime."""
    old = 1_600_000_000_000_000_000
    for p in folder.iterdir():
        os.utime(p, ns=(old, old))
    cli("validate", "--path", str(folder))
    cli("validate", "--path", str(folder))  # now the index holds the stat signature
    parses.clear()
    assert "idx_rooms_id" in cli("validate", "--path", str(folder)).out and parses == []
    up = folder / "000002_index_rooms.up.sql"
    up.write_text(up.read_text().replace("CREATE INDEX idx", "CREATE INDEX jdx"))
    os.utime(up, ns=(old, old))
    r = cli("validate", "--path", str(folder))
    assert "jdx_rooms_id" in r.out and parses != []
