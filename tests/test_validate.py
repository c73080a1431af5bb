"""``migrator validate``: the corpus of good and bad folders, output formats, exit codes, drift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from migrator.lint import validate_folder
from migrator.lint.model import RULES
from tests.conftest import ROOT, write_migration

CORPUS = Path(__file__).parent / "lint_corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.json").exists())
HEADER = "-- Business justification: test migration for the validate suite.\n"


@pytest.fixture(autouse=True)
def _no_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """validate must never need (or start) a database unless one is configured."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("MIGRATOR_REQUIRE_JUSTIFICATION", raising=False)
    monkeypatch.setenv("MIGRATOR_EMBEDDED_DIR", str(tmp_path / "embedded-must-not-start"))


def _rows(report: object) -> list[dict[str, object]]:
    return [
        {"severity": f.severity, "rule": f.rule, "file": f.file, "line": f.line, "column": f.column}
        for f in report.findings  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("case", CASES)
def test_corpus_exact_findings(case: str) -> None:
    expected = json.loads((CORPUS / case / "expected.json").read_text())
    folder = CORPUS / case / "migrations"
    report = validate_folder(folder, require_justification=expected["require_justification"], base=folder)
    assert _rows(report) == expected["findings"]
    assert report.exit_code() == expected["exit_code"]
    assert report.exit_code(strict=True) == expected["strict_exit_code"]


def test_corpus_covers_every_lint_rule() -> None:
    """Each file-level rule (safety, structure, HIPAA, allow comments) appears in some expected.json."""
    seen = set()
    for case in CASES:
        seen |= {f["rule"] for f in json.loads((CORPUS / case / "expected.json").read_text())["findings"]}
    file_rules = {r for r in RULES if not r.startswith("MIG3") and r not in ("MIG101", "MIG102", "MIG103", "MIG104")}
    assert file_rules - seen == set()


def test_messages_name_the_place_and_the_fix() -> None:
    folder = CORPUS / "structure" / "migrations"
    msgs = {(f.rule, f.file): f.message for f in validate_folder(folder, base=folder).findings}
    assert "next free: 000010" in msgs[("MIG106", "000002_create_wards.up.sql")]
    assert "3..4 are missing" in msgs[("MIG111", "000005_AddFloors.up.sql")]
    folder = CORPUS / "syntax_error" / "migrations"
    errors = [f for f in validate_folder(folder, base=folder).findings if f.rule == "MIG000"]
    assert [f.location() for f in errors] == ["000001_create_clinics.up.sql:7:1", "000002_add_clinic_notes.up.sql:3:53"]
    assert errors[0].message == 'syntax error at or near "CREAT"'
    assert "\n" not in errors[1].message


def test_repository_migrations_have_no_errors() -> None:
    report = validate_folder(ROOT / "migrations", require_justification=True)
    assert report.migrations >= 1
    assert [f for f in report.findings if f.severity == "error"] == []


def test_cli_text_format_and_exit_codes(cli, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    r = cli("validate", "--path", str(migrations_dir), "--format", "text")
    assert r.code == 0, r.out + r.err
    assert "0 error(s), 0 warning(s)" in r.out
    write_migration(migrations_dir, 2, "index_rooms", HEADER + "CREATE INDEX idx_rooms ON rooms (id);",
                    "DROP INDEX IF EXISTS idx_rooms;")
    assert cli("validate", "--path", str(migrations_dir)).code == 0
    r = cli("validate", "--path", str(migrations_dir), "--strict", "--format", "text")
    assert r.code == 2
    assert "000002_index_rooms.up.sql:2:1: warning:" in r.out and "MIG003" in r.out
    write_migration(migrations_dir, 3, "broken_sql", HEADER + "SELEC 1;", "SELECT 1;")
    r = cli("validate", "--path", str(migrations_dir), "--format", "text")
    assert r.code == 1
    assert "000003_broken_sql.up.sql:2:1: error: syntax error at or near \"SELEC\"" in r.out


def test_cli_json_sarif_github_human(cli, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int, name text);",
                    "DROP TABLE IF EXISTS rooms;")
    write_migration(migrations_dir, 2, "drop_room_name", HEADER + "ALTER TABLE rooms DROP COLUMN name;",
                    "ALTER TABLE rooms ADD COLUMN IF NOT EXISTS name text;")
    args = ("validate", "--path", str(migrations_dir))

    r = cli(*args, "--json")  # the global --json means --format json
    assert r.code == 1
    data = json.loads(r.out)
    assert data["ok"] is False and data["errors"] == 1 and data["drift_checked"] is False
    (f,) = data["findings"]
    assert (f["rule"], f["name"], f["line"], f["column"]) == ("MIG006", "ban-drop-column", 2, 1)
    assert f["file"].endswith("000002_drop_room_name.up.sql") and f["help"]

    sarif = json.loads(cli(*args, "--format", "sarif").out)
    assert sarif["version"] == "2.1.0"
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "MIG006" and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": 2, "startColumn": 1}
    assert sarif["runs"][0]["tool"]["driver"]["rules"][result["ruleIndex"]]["name"] == "ban-drop-column"

    gh = cli(*args, "--format", "github").out.splitlines()
    assert gh[0].startswith("::error file=") and ",line=2,col=1,title=MIG006 ban-drop-column::DROP COLUMN" in gh[0]

    human = cli(*args)
    assert human.code == 1 and "MIG006" in human.out and "1 error(s)" in human.out


def test_require_justification_is_configurable(cli, migrations_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_rooms", "CREATE TABLE rooms (id int);", "DROP TABLE IF EXISTS rooms;")
    args = ("validate", "--path", str(migrations_dir), "--format", "json")
    r = cli(*args)
    assert r.code == 1 and [f["rule"] for f in json.loads(r.out)["findings"]] == ["MIG202"]
    assert cli(*args, "--no-require-justification").code == 0
    monkeypatch.setenv("MIGRATOR_REQUIRE_JUSTIFICATION", "0")
    assert cli(*args).code == 0
    assert cli(*args, "--require-justification").code == 1


def test_sensitive_values_never_reach_the_output(cli) -> None:  # type: ignore[no-untyped-def]
    folder = CORPUS / "hipaa" / "migrations"
    for fmt in ("human", "text", "json", "sarif", "github"):
        r = cli("validate", "--path", str(folder), "--format", fmt)
        assert r.code == 1
        for value in ("hunter22", "123-45-6789", "john.smith", "S3cret!pass", "AKIAIOSFODNN7EXAMPLE", "0048213"):
            assert value not in r.out + r.err, (fmt, value)


def test_validate_does_not_start_the_embedded_database(cli, migrations_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    r = cli("validate", "--path", str(migrations_dir), "--json")
    assert r.code == 0 and json.loads(r.out)["drift_checked"] is False
    assert not (tmp_path / "embedded-must-not-start").exists()


def test_missing_folder_is_one_clear_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("validate", "--path", str(tmp_path / "nope"))
    assert r.code == 1
    assert r.err.startswith("error: migrations folder") and "nope" in r.err and "MIGRATIONS_PATH" in r.err


def test_drift_against_a_real_database(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from migrator.config import Settings
    from migrator.engine import Migrator

    for v, name in ((1, "create_rooms"), (3, "create_beds"), (4, "create_desks")):
        table = name.removeprefix("create_")
        write_migration(migrations_dir, v, name, HEADER + f"CREATE TABLE {table} (id int);",
                        f"DROP TABLE IF EXISTS {table};")
    Migrator(Settings.from_env(database_url=db_url, migrations_path=migrations_dir)).up()
    args = ("validate", "--path", str(migrations_dir), "--database-url", db_url, "--json")
    r = cli(*args)
    assert r.code == 0, r.out
    assert json.loads(r.out)["drift_checked"] is True

    # an applied file edited, an applied file deleted, and a migration merged below the current version
    up1 = migrations_dir / "000001_create_rooms.up.sql"
    up1.write_text(up1.read_text() + "CREATE INDEX idx_rooms ON rooms (id);\n")
    for f in migrations_dir.glob("000003_*"):
        f.unlink()
    write_migration(migrations_dir, 2, "create_lamps", HEADER + "CREATE TABLE lamps (id int);",
                    "DROP TABLE IF EXISTS lamps;")
    r = cli(*args)
    assert r.code == 1
    findings = [f for f in json.loads(r.out)["findings"] if f["rule"].startswith("MIG3")]
    assert {(f["rule"], Path(f["file"]).name, f["version"]) for f in findings} == {
        ("MIG301", "000001_create_rooms.up.sql", 1),
        ("MIG302", migrations_dir.name, 3),
        ("MIG303", "000002_create_lamps.up.sql", 2),
    }
    out_of_order = next(f for f in findings if f["rule"] == "MIG303")
    assert "renumber it to 000005" in out_of_order["message"]
    assert cli(*args, "--no-drift").code == 0


def test_drift_ignores_a_reverted_migration_whose_file_was_removed(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from migrator.config import Settings
    from migrator.engine import Migrator

    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    write_migration(migrations_dir, 2, "create_beds", HEADER + "CREATE TABLE beds (id int);",
                    "DROP TABLE IF EXISTS beds;")
    settings = Settings.from_env(database_url=db_url, migrations_path=migrations_dir)
    Migrator(settings).up()
    Migrator(settings).down(1)  # 2 reverted, then abandoned: its files are deleted, 3 takes over
    for f in migrations_dir.glob("000002_*"):
        f.unlink()
    write_migration(migrations_dir, 3, "create_desks", HEADER + "CREATE TABLE desks (id int);",
                    "DROP TABLE IF EXISTS desks;")
    Migrator(settings).up()
    r = cli("validate", "--path", str(migrations_dir), "--database-url", db_url, "--json")
    assert [f["rule"] for f in json.loads(r.out)["findings"]] == ["MIG111"]  # only the gap warning
    assert r.code == 0


def test_drift_reports_missing_current_version_and_dirty(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from migrator.config import Settings
    from migrator.engine import Migrator

    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    write_migration(migrations_dir, 2, "create_beds", HEADER + "CREATE TABLE beds (id int);",
                    "DROP TABLE IF EXISTS beds;")
    settings = Settings.from_env(database_url=db_url, migrations_path=migrations_dir)
    Migrator(settings).up()
    Migrator(settings).force(2)  # clean
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = true")
    shutil.rmtree(migrations_dir)
    migrations_dir.mkdir()
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    r = cli("validate", "--path", str(migrations_dir), "--database-url", db_url, "--format", "text")
    assert r.code == 1
    assert "MIG304" in r.out and "dirty at version 2" in r.out
    assert "MIG302" in r.out and "version 2 is applied" in r.out


def test_database_url_password_is_redacted(cli, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "create_rooms", HEADER + "CREATE TABLE rooms (id int);",
                    "DROP TABLE IF EXISTS rooms;")
    url = "postgresql://postgres:SentinelPw123@127.0.0.1:1/nowhere"
    r = cli("validate", "--path", str(migrations_dir), "--database-url", url)
    assert r.code != 0
    assert "SentinelPw123" not in r.out + r.err
    assert r.err.startswith("error: cannot connect to")


def test_docs_describe_every_rule() -> None:
    docs = (ROOT / "docs" / "validation.md").read_text()
    missing = [f"{r.id} {r.name}" for r in RULES.values() if f"`{r.id}` | `{r.name}`" not in docs]
    assert missing == []


@pytest.mark.parametrize(
    "literal",
    ["2024-01-15 10:30:00+00", "550e8400-e29b-41d4-a716-446655440000", "192.168.1.10", "ICD-10 E11.9", "100.00",
     "password_hash", "noreply@askfrank.test", "nurse@example.org", "555-0142", "(415) 555-0199", "MRN-12",
     "000-12-3456", "zip 94107-1234", "NPI 1234567893"],
)
def test_hipaa_benign_literals_pass(literal: str) -> None:
    from migrator.lint.hipaa import _match

    assert _match(literal) == []


@pytest.mark.parametrize(
    ("literal", "kind"),
    [("SSN 078-05-1120", "a US Social Security number"), ("jane@hospital.org", "an e-mail address"),
     ("+1 (212) 555-7788", "a phone number"), ("+442071838750", "a phone number"),
     ("mrn: 00482131", "a medical record number"), ("ghp_" + "a" * 36, "a GitHub token"),
     ("-----BEGIN RSA PRIVATE KEY-----", "a private key"), ("api_key=abcd1234efgh", "a password, key or token assignment"),
     ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "a JSON web token")],
)
def test_hipaa_sensitive_literals_are_caught(literal: str, kind: str) -> None:
    from migrator.lint.hipaa import _match

    assert kind in _match(literal)


def test_validate_does_not_load_pglasts_node_classes_and_they_still_load_on_use(tmp_path: Path) -> None:
    """pglast.ast and pglast.enums (~45 ms of a cold validate) wait until something uses them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from migrator.lint import validate_folder\n"
        "validate_folder('migrations')\n"
        "print('ast' if 'Node' in vars(sys.modules['pglast.ast']) else 'no ast',\n"
        "      'enums' if 'SetOperation' in vars(sys.modules['pglast.enums']) else 'no enums')\n"
        "from pglast import ast, parse_sql\n"
        "from pglast.enums import SetOperation\n"
        "print(isinstance(parse_sql('select 1 union select 2')[0].stmt, ast.SelectStmt), "
        "SetOperation.SETOP_UNION.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.splitlines() == ["no ast no enums", "True SETOP_UNION"]
