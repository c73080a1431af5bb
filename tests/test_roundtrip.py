"""``migrator verify-roundtrip`` on the machine's PostgreSQL: scratch database, schema dumps, diffs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from migrator.lint.roundtrip import choose_pg_dump, normalize_dump
from tests.conftest import SERVER_URL, write_migration

HEADER = "-- Business justification: roundtrip test.\n"


def _scratch_databases() -> set[str]:
    """This process's roundtrip scratch databases (their names carry the pid: other pytest workers and
    other runs on the same server make their own at the same time)."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        rows = conn.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'migrator\_scratch\_roundtrip\_%%' "
                            "AND split_part(datname, '_', 5) = %s", (str(os.getpid()),)).fetchall()
    return {r[0] for r in rows}


def _good_folder(d: Path) -> None:
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id bigint PRIMARY KEY, mrn text);",
                    "DROP TABLE IF EXISTS patients;")
    write_migration(d, 2, "add_patient_email", HEADER + "ALTER TABLE patients ADD COLUMN email text;",
                    "ALTER TABLE patients DROP COLUMN IF EXISTS email;")


def test_roundtrip_ok_and_scratch_database_dropped(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _good_folder(migrations_dir)
    write_migration(migrations_dir, 3, "add_patient_mrn_index",
                    HEADER + "CREATE INDEX CONCURRENTLY idx_patients_mrn ON patients (mrn);",
                    "DROP INDEX CONCURRENTLY IF EXISTS idx_patients_mrn;")
    before = _scratch_databases()
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", db_url, "--json")
    assert r.code == 0, r.out + r.err
    data = json.loads(r.out)
    assert data["ok"] is True and data["migrations"] == 3
    assert data["checked"] == [
        "000003_add_patient_mrn_index down", "000002_add_patient_email down", "000001_create_patients down",
        "000001_create_patients up again", "000002_add_patient_email up again", "000003_add_patient_mrn_index up again",
    ]
    assert data["scratch_database"] not in _scratch_databases()
    assert _scratch_databases() <= before  # none of ours left
    # the configured database itself was not touched
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('patients')").fetchone() == (None,)


def test_roundtrip_catches_a_down_that_forgets_an_index(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _good_folder(migrations_dir)
    write_migration(migrations_dir, 3, "add_patient_email_index",
                    HEADER + "CREATE INDEX idx_patients_email ON patients (email);",
                    "-- forgot: DROP INDEX IF EXISTS idx_patients_email;\nSELECT 1;")
    write_migration(migrations_dir, 4, "add_patient_phone", HEADER + "ALTER TABLE patients ADD COLUMN phone text;",
                    "ALTER TABLE patients DROP COLUMN IF EXISTS phone;")
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", db_url, "--json")
    assert r.code == 1
    data = json.loads(r.out)
    assert (data["ok"], data["failed_version"], data["failed_name"], data["phase"]) == (
        False, 3, "add_patient_email_index", "down"
    )
    assert data["checked"] == ["000004_add_patient_phone down"]
    assert "does not restore the schema before its up" in data["message"]
    diff = data["diff"].splitlines()
    assert diff[0] == "--- schema before 000003_add_patient_email_index.up"
    assert diff[1] == "+++ after 000003_add_patient_email_index.down"
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+CREATE INDEX idx_patients_email ON public.patients USING btree (email);"]
    assert data["scratch_database"] not in _scratch_databases()

    human = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", db_url)
    assert human.code == 1
    assert "FAILED: the down of 000003_add_patient_email_index does not restore" in human.out
    assert "+CREATE INDEX idx_patients_email" in human.out


def test_roundtrip_reports_a_failing_down(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _good_folder(migrations_dir)
    (migrations_dir / "000002_add_patient_email.down.sql").write_text("ALTER TABLE patients DROP COLUMN emial;")
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", db_url, "--json")
    assert r.code == 1
    data = json.loads(r.out)
    assert (data["failed_version"], data["phase"]) == (2, "error")
    assert "down of 000002_add_patient_email failed" in data["message"] and "emial" in data["message"]
    assert data["scratch_database"] not in _scratch_databases()


def test_roundtrip_never_prints_the_password(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _good_folder(migrations_dir)
    url = db_url.replace("postgres@", "postgres:RoundtripSentinel42@", 1)
    assert "RoundtripSentinel42" in url
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", url, "--json")
    assert r.code == 0, r.out + r.err
    assert "RoundtripSentinel42" not in r.out + r.err


def test_roundtrip_refuses_a_folder_with_file_errors(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_patients", HEADER + "CREATE TABLE patients (id int);")
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", db_url)
    assert r.code == 1
    assert "000001_create_patients.up.sql" in r.err and "down" in r.err


@pytest.mark.db  # asks the machine's server for its version
def test_pg_dump_choice_matches_the_server() -> None:
    with psycopg.connect(SERVER_URL) as conn:
        major = conn.info.server_version // 10000
    path, chosen = choose_pg_dump(major)
    assert chosen >= major and Path(path).name == "pg_dump"
    newer_path, newer = choose_pg_dump(17)
    assert newer >= 17 and Path(newer_path).name == "pg_dump"  # the embedded 18 when the system one is older
    from migrator.errors import ConfigError

    with pytest.raises(ConfigError, match="no pg_dump of major version >= 99"):
        choose_pg_dump(99)


def test_normalize_dump_drops_noise() -> None:
    text = "--\n-- PostgreSQL database dump\n\\restrict abc\nSET x = 1;\nSELECT pg_catalog.set_config('a', '', false);\n\nCREATE TABLE t (\n    a int\n);\n\\unrestrict abc\n"
    assert normalize_dump(text) == ["CREATE TABLE t (", "    a int", ");"]


def test_roundtrip_with_a_custom_state_table_from_the_url(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _good_folder(migrations_dir)
    url = db_url + ("&" if "?" in db_url else "?") + "x-migrations-table=Mig_State"
    r = cli("verify-roundtrip", "--path", str(migrations_dir), "--database-url", url, "--json")
    assert r.code == 0, r.out + r.err
    assert json.loads(r.out)["ok"] is True
