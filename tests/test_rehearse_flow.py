"""The migrate flow's rehearsal step under ``prefect_test_harness`` with real PostgreSQL, file://
backups and a real webhook receiver: in a prod-like environment (approval required, rehearsal
enabled) the approval form and artifact show the rehearsal table FIRST; a migration that fails on
the restored copy fails the run before the approval pause with one ``rehearsal.failed`` alert and
nothing reaches the database; ``rehearsal.max_backup_bytes`` skips with a warning."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state

from conftest import SERVER_URL, write_migration
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

JUST = "-- Business justification: test\n"
PASSWORD = "Rehearsal-Sentinel-pw-7"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


def write_env(ddir: Path, backups: Path, rehearsal: str) -> None:
    (ddir / "test.yaml").write_text(
        f"""environment: test
database_url: {{env: TEST_REHEARSAL_DATABASE_URL}}
backup: {{url: "file://{backups}", retries: 0}}
webhook: {{url: {{env: TEST_REHEARSAL_WEBHOOK_URL}}, secret: {{env: TEST_REHEARSAL_WEBHOOK_SECRET}}, format: json}}
approval: {{required: true, timeout_seconds: 120}}
timeouts: {{lock_timeout: 2s, statement_timeout: 2min, lock_wait_seconds: 30}}
rehearsal: {rehearsal}
"""
    )


@pytest.fixture
def env(tmp_path: Path, db_url: str, hook: WebhookReceiver, migrations_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A prod-like deployments/test.yaml: approval required, rehearsal enabled on the test server
    (another database on it: allow_same_server), blocking locks marked from 1 MB."""
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    write_env(ddir, tmp_path / "backups", "{enabled: true, server_url: {env: TEST_REHEARSAL_SERVER_URL}, "
              "allow_same_server: true, large_table_bytes: 1MB}")
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(ddir))
    monkeypatch.setenv("MIGRATIONS_PATH", str(migrations_dir))
    monkeypatch.setenv("TEST_REHEARSAL_DATABASE_URL", db_url.replace("postgres@", f"postgres:{PASSWORD}@"))
    monkeypatch.setenv("TEST_REHEARSAL_SERVER_URL", SERVER_URL)
    monkeypatch.setenv("TEST_REHEARSAL_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("TEST_REHEARSAL_WEBHOOK_SECRET", "rehearsal-hook-secret")
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.01")
    for var in ("DATABASE_URL", "BACKUP_URL"):
        monkeypatch.delenv(var, raising=False)
    from migrator.config import Settings
    from migrator.engine import Migrator

    write_migration(migrations_dir, 1, "create_patients",
                    JUST + "CREATE TABLE patients (id int PRIMARY KEY, mrn int NOT NULL, name text NOT NULL);",
                    JUST + "DROP TABLE IF EXISTS patients;")
    Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO patients SELECT i, i % 50000, 'patient ' || i FROM generate_series(1, 100000) i")
    return {"db_url": db_url, "dir": migrations_dir, "hook": hook, "ddir": ddir, "tmp": tmp_path}


def artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_latest_artifacts() if a.key == key]
    assert found, f"no artifact {key}"
    return str(found[0].data)


def events(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in hook.requests]


def state(url: str) -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute("SELECT version, dirty FROM schema_migrations").fetchall()]


def paused_run_id(timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=flt)
        if runs:
            return runs[0].id
        time.sleep(0.5)
    raise AssertionError("the flow never paused for approval")


def approve(approver: str) -> dict[str, Any]:
    """The approval form's answer (flows.approval.Approval)."""
    return {"decision": "approve", "approver": approver, "comment": "CHG-13"}


def test_rehearsal_table_first_in_the_approval_form(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    write_migration(env["dir"], 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(migrate(environment="test", return_state=True)))
    t.start()
    run_id = paused_run_id()
    assert state(env["db_url"]) == [(1, False)]  # rehearsed, not applied, while waiting
    md = artifact("approval-test")
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[0].startswith("## Rehearsal: 1 migration(s) succeeded on the restored copy")  # shown first
    assert md.index("## Rehearsal") < md.index("widen_patient_id") < md.index("Backup taken before")
    row = next(ln for ln in md.splitlines() if "ACCESS EXCLUSIVE" in ln and "`public.patients` (table" in ln)
    assert row.startswith("- ⚠ ") and "blocks reads and writes" in row and "held **" in row
    assert "- rewritten: `public.patients` (table)" in md and "MIG005" in md and "Production estimate" in md
    assert PASSWORD not in md
    assert "ACCESS EXCLUSIVE" in artifact("rehearsal-test")
    with get_client(sync_client=True) as client:  # the same table, first, in the resume form's description
        paused = client.read_flow_run(run_id).state
    assert paused is not None and paused.is_paused()
    description = str(read_flow_run_input(keyset_from_paused_state(paused)["description"], flow_run_id=run_id))
    assert description.index("## Rehearsal") < description.index("widen_patient_id")
    assert "ACCESS EXCLUSIVE" in description and "- ⚠ " in description
    assert [e["event"] for e in events(env["hook"])] == ["approval.requested"]
    resume_flow_run(run_id, run_input=approve("alice@askfrank.example"))
    t.join(120)
    assert out and out[0].is_completed()
    assert state(env["db_url"]) == [(2, False)]


def test_rehearsal_failure_fails_before_approval(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    write_migration(env["dir"], 2, "unique_mrn",
                    JUST + "ALTER TABLE patients ADD CONSTRAINT patients_mrn_key UNIQUE (mrn);",
                    JUST + "ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_mrn_key;")
    result = migrate(environment="test", return_state=True)
    assert result.is_failed()
    assert state(env["db_url"]) == [(1, False)]  # nothing applied to the database
    with psycopg.connect(env["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'patients_mrn_key'").fetchone() == (0,)
    evs = events(env["hook"])
    assert [e["event"] for e in evs] == ["rehearsal.failed"]  # one page; never asked to approve
    assert evs[0]["failing_version"] == 2 and "000002_unique_mrn.up.sql:2" in evs[0]["file"]
    assert "would fail" in evs[0]["message"] and "nothing was applied" in evs[0]["message"]
    assert "could not create unique index" in evs[0]["error"]
    assert all(PASSWORD.encode() not in r.body for r in env["hook"].requests)
    assert "WOULD FAIL" in artifact("rehearsal-test")
    assert "would fail" in artifact("migrate-test")


def test_size_limit_skips_with_warning_in_the_form(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    write_env(env["ddir"], env["tmp"] / "backups", "{enabled: true, server_url: {env: TEST_REHEARSAL_SERVER_URL}, "
              "allow_same_server: true, max_backup_bytes: 1kB}")
    write_migration(env["dir"], 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(migrate(environment="test", return_state=True)))
    t.start()
    run_id = paused_run_id()
    md = artifact("approval-test")
    first = next(ln for ln in md.splitlines() if ln.startswith("## "))
    assert first.startswith("## Rehearsal skipped") and "max_backup_bytes" in md and "Warning" in md
    resume_flow_run(run_id, run_input=approve("bob@askfrank.example"))
    t.join(120)
    assert out and out[0].is_completed() and state(env["db_url"]) == [(2, False)]


def test_unresolvable_rehearsal_server_fails_closed(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rehearsal enabled but its server's secret does not resolve: the run stops before approval
    with one rehearsal.failed alert; it never falls back to the production server."""
    from flows.migrate import migrate

    monkeypatch.delenv("TEST_REHEARSAL_SERVER_URL")
    write_migration(env["dir"], 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    result = migrate(environment="test", return_state=True)
    assert result.is_failed()
    assert state(env["db_url"]) == [(1, False)]
    evs = events(env["hook"])
    assert [e["event"] for e in evs] == ["rehearsal.failed"]
    assert "rehearsal.server_url does not resolve" in evs[0]["error"] and "nothing was applied" in evs[0]["message"]
    with psycopg.connect(SERVER_URL) as conn:
        assert not conn.execute(r"SELECT 1 FROM pg_database WHERE datname LIKE 'migrator\_scratch\_rehearsal\_%%' "
                                "AND split_part(datname, '_', 5) = %s", (str(os.getpid()),)).fetchone()


def test_a_truncated_newest_backup_is_alerted_and_shown_first(env: dict[str, Any]) -> None:
    """Issue 19: the rehearsal step asked for `latest` while the newest backup is truncated: one
    backup.incomplete alert naming both backups, the warning first in the rehearsal section, and the
    rehearsal runs on the newest complete backup."""
    import json

    from prefect import flow

    from flows.rehearsal import rehearse_before_approval
    from migrator.backup import create_backup
    from migrator.config import Settings
    from tasks.environment import load_environment

    write_migration(env["dir"], 2, "add_note", JUST + "ALTER TABLE patients ADD COLUMN note text;",
                    JUST + "ALTER TABLE patients DROP COLUMN IF EXISTS note;")
    backups = env["tmp"] / "backups"
    good = create_backup(Settings(database_url=env["db_url"], backup_url=f"file://{backups}", environment="test"))
    bad = backups / good.key.replace(good.key.rsplit("/", 1)[1], "29991231T235959.000Z_v1.dump")
    data = (backups / good.key).read_bytes()
    bad.write_bytes(data[:1000])
    (bad.parent / (bad.name + ".json")).write_text((backups / (good.key + ".json")).read_text())

    @flow(name="rehearsal-step")
    def step() -> str | None:
        return rehearse_before_approval(load_environment("test"), {"database": "x", "backup_key": None})

    md = step()
    assert md is not None and md.split("\n")[2].startswith("> ⚠ **Warning:** the newest backup")
    (alert,) = events(env["hook"])
    assert alert["event"] == "backup.incomplete" and alert["backup_key"] == good.key
    assert "INCOMPLETE" in alert["message"] and bad.relative_to(backups).as_posix() in alert["message"]
    assert PASSWORD not in json.dumps(alert)
