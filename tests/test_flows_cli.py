"""Issue 11.3: ``python -m flows migrate`` prints a short summary, and a failed run one ``error:`` line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write_migration
from flows.__main__ import LocalApi, summary_line
from prefect_templates import seed_prefect_home

HEADER = "-- Business justification: T-11 flow output test.\n"


def test_summary_line_says_what_happened_in_a_line_or_two() -> None:
    result = {"environment": "local", "outcome": "succeeded", "database": "askfrank", "version_before": -1,
              "version_after": 9, "steps": [{"version": v, "name": f"m{v}"} for v in range(1, 10)],
              "duration_seconds": 3.9, "backup_key": "local/askfrank/x.dump"}
    assert summary_line("migrate", "local", result).splitlines() == [
        "migrate local: succeeded; askfrank version none -> 9; 9 migration(s) (1_m1, 2_m2, 3_m3, ...); 3.9 s",
        "backup: local/askfrank/x.dump",
        "next: `make migrate-status` shows the state; `python -m flows rollback` reverts the last migration",
        "(--json prints the full result)",
    ]
    # the backup as something to open: a file:// URL as its path, an s3:// URL as is; the log last
    located = {**result, "backup_url": "file:///srv/app/backups/local/askfrank/x%20y.dump"}
    lines = summary_line("migrate", "local", located, log=".migrator/logs/m.log").splitlines()
    assert lines[1] == "backup: /srv/app/backups/local/askfrank/x y.dump"
    assert lines[-1].startswith("log: .migrator/logs/m.log (-v prints it")
    s3 = {**result, "backup_url": "s3://bucket/prefix/local/askfrank/x.dump"}
    assert summary_line("migrate", "staging", s3).splitlines()[1] == "backup: s3://bucket/prefix/local/askfrank/x.dump"
    nothing = {"outcome": "no change", "database": "askfrank", "version_before": 9, "version_after": 9}
    assert summary_line("migrate", "local", nothing).splitlines()[:2] == [
        "migrate local: no change; askfrank version 9", "next: nothing to do: no migration is pending"]


def test_flow_cli_argument_errors_are_one_line() -> None:
    for argv, expected in (
        (["migrate", "--target", "abc"], "error: argument --target: 'abc' is not a whole number; "
                                         "see `python -m flows --help`"),
        (["migrat"], "error: unknown flow 'migrat' (did you mean 'migrate'?); see `python -m flows --help`"),
    ):
        r = subprocess.run([sys.executable, "-m", "flows", *argv], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.splitlines() == [expected]


@pytest.mark.prefect  # a real local API server (uvicorn + Prefect's app)
@pytest.mark.timeout(240)
def test_local_api_server_takes_another_port_when_its_port_was_taken(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The free port is chosen before the server binds it; a clean-clone CI run saw another process take
    it in between ("address already in use", the server exited 3). The server starts again elsewhere."""
    monkeypatch.setenv("PREFECT_HOME", str(seed_prefect_home(tmp_path / "prefect")))  # a migrated copy
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = LocalApi(tmp_path / "api.log")
        api.spawn(port=port)
        try:
            assert api.wait() is None, (tmp_path / "api.log").read_text()[-2000:]
            assert api.attempts == 2 and api.url != f"http://127.0.0.1:{port}/api"
            assert os.environ["PREFECT_API_URL"] == api.url
            assert b"address already in use" in (tmp_path / "api.log").read_bytes()
        finally:
            api.stop()


@pytest.mark.prefect  # `python -m flows` runs the flow on Prefect's ephemeral server
@pytest.mark.timeout(240)
def test_flow_cli_prints_a_summary_then_one_error_line_without_tracebacks(tmp_path: Path, db_url: str) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    write_migration(d, 1, "create_patients", HEADER + "CREATE TABLE patients (id int PRIMARY KEY);",
                    "DROP TABLE IF EXISTS patients;")
    env = {**os.environ, "DATABASE_URL": db_url, "MIGRATIONS_PATH": str(d), "BACKUP_URL": f"file://{tmp_path}/b",
           "PREFECT_HOME": str(seed_prefect_home(tmp_path / "prefect")), "PREFECT_API_URL": "", "MIGRATOR_LOG_DIR": str(tmp_path / "logs")}
    env.pop("MIGRATOR_DEBUG", None)

    def flow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows", "migrate", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=200)

    ok = flow()
    assert ok.returncode == 0, ok.stderr[-3000:]
    lines = ok.stdout.splitlines()
    assert lines[0].startswith(f"migrate local: succeeded; {db_url.rsplit('/', 1)[1]} version none -> 1; "
                               "1 migration(s) (000001_create_patients); ")
    assert lines[1].startswith(f"backup: {tmp_path}/b/local/") and lines[1].endswith("_vnone.dump")
    assert Path(lines[1].removeprefix("backup: ")).is_file()  # a path one can open
    assert lines[2].startswith("next: `make migrate-status` shows the state")
    assert lines[3].startswith("log: ") and len(lines) == 4
    assert "Task run" not in ok.stderr and "prefect" not in ok.stderr  # Prefect's lines are in the log file
    log = Path(lines[3].split()[1])
    assert log.parent == tmp_path / "logs" and "Finished in state Completed" in log.read_text()

    again = flow()  # nothing to do: checked without Prefect, no flow run, no backup
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].startswith(f"migrate local: no change; {db_url.rsplit('/', 1)[1]} version 1")
    assert "checked without a flow run" in again.stdout and "backup:" not in again.stdout

    write_migration(d, 2, "add_patient_email",
                    HEADER + "ALTER TABLE patients ADD COLUMN email text;\n"
                    "CREATE INDEX CONCURRENTLY idx_patients_email ON patients (emial);\n",
                    "DROP INDEX CONCURRENTLY IF EXISTS idx_patients_email;\n"
                    "ALTER TABLE patients DROP COLUMN IF EXISTS email;\n")
    failed = flow("--json", "-v")
    assert failed.returncode == 1
    assert failed.stdout == ""
    errors = [ln for ln in failed.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and 'column "emial" does not exist' in errors[0] and "DIRTY at version 2" in errors[0]
    assert "migrator recover" in errors[0]  # no UI behind the ephemeral API: it did not wait for a form
    assert "no recovery action chosen" not in errors[0], errors[0]  # nobody was asked: it did not pause at all
    assert "Traceback" not in failed.stderr
    assert "Task run 'apply local'" in failed.stderr  # -v: Prefect's lines on the terminal too
    assert failed.stderr.splitlines()[-2].startswith(f"log: {tmp_path}/logs/migrate-local-")  # then the error
