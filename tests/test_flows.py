"""The Prefect flows under ``prefect_test_harness`` with real PostgreSQL, moto's S3 server and a
real webhook receiver: happy path, failures, dirty database, backup failure, retried run,
approval given and timed out, force refused, status monitor, restore drill, dry run."""

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

from conftest import db_state, url_for, write_migration
from s3_server import S3Server, serve
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

PASSWORD = "Flow-Sentinel-pw-42"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    yield from serve(monkeypatch)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
def env(tmp_path: Path, db_url: str, s3: S3Server, hook: WebhookReceiver, migrations_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A deployments/test.yaml pointing at this test's database, bucket and webhook."""
    bucket = s3.create_bucket()
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    (ddir / "test.yaml").write_text(
        f"""environment: test
database_url: {{env: TEST_FLOW_DATABASE_URL}}
backup: {{url: "s3://{bucket}/askfrank", retries: 0}}
webhook: {{url: {{env: TEST_FLOW_WEBHOOK_URL}}, secret: {{env: TEST_FLOW_WEBHOOK_SECRET}}, format: json}}
approval: {{required: false, timeout_seconds: 60}}
timeouts: {{lock_timeout: 300ms, statement_timeout: 1min, lock_wait_seconds: 30}}
monitor: {{pending_alert_after_minutes: 0}}
"""
    )
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(ddir))
    monkeypatch.setenv("MIGRATIONS_PATH", str(migrations_dir))
    monkeypatch.setenv("TEST_FLOW_DATABASE_URL", db_url.replace("postgres@", f"postgres:{PASSWORD}@"))
    monkeypatch.setenv("TEST_FLOW_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("TEST_FLOW_WEBHOOK_SECRET", "flow-hook-secret")
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.01")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    write_migration(migrations_dir, 1, "create_a", "-- Business justification: test\nCREATE TABLE a (id int);",
                    "-- Business justification: test\nDROP TABLE IF EXISTS a;")
    write_migration(migrations_dir, 2, "create_b", "-- Business justification: test\nCREATE TABLE b (id int);",
                    "-- Business justification: test\nDROP TABLE IF EXISTS b;")
    return {"bucket": bucket, "db_url": db_url, "dir": migrations_dir, "s3": s3, "hook": hook}


def backups(env: dict[str, Any]) -> list[str]:
    resp = env["s3"].client().list_objects_v2(Bucket=env["bucket"])
    return [o["Key"] for o in resp.get("Contents", [])]


def events(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in hook.requests]


def assert_no_secret(hook: WebhookReceiver) -> None:
    for r in hook.requests:
        assert PASSWORD.encode() not in r.body


def artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        art = client.read_latest_artifacts()
        found = [a for a in art if a.key == key]
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_one_migrate_run_resolves_its_environment_once(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML is read and the secrets looked up once per run, not in each of its tasks
    (backup, validate, plan, apply, verify, notify); the next run resolves afresh."""
    import tasks.environment as environment
    from flows.migrate import migrate

    loads: list[str] = []
    real = environment.load_environment

    def counting(name: str, **overrides: Any) -> Any:
        loads.append(name)
        return real(name, **overrides)

    monkeypatch.setattr(environment, "load_environment", counting)
    result = migrate(environment="test")
    assert result["outcome"] == "succeeded" and result["backup_key"]
    assert loads == ["test"]
    migrate(environment="test")  # nothing pending: a new run, a new resolution
    assert loads == ["test", "test"]


def test_happy_path(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    result = migrate(environment="test")
    assert result["outcome"] == "succeeded" and result["version_after"] == 2
    assert db_state(env["db_url"]) == [(2, False)]
    assert len(backups(env)) == 1 and result["backup_key"] == backups(env)[0]
    evs = events(env["hook"])
    assert [e["event"] for e in evs] == ["migration.succeeded"]
    assert evs[0]["version_before"] == -1 and evs[0]["version_after"] == 2 and evs[0]["backup_key"]
    md = artifact("migrate-test")
    assert "succeeded" in md and "create_b" in md and result["backup_key"] in md
    assert_no_secret(env["hook"])
    with psycopg.connect(env["db_url"]) as conn:  # the flow run id reaches the audit trail
        run_ids = {r[0] for r in conn.execute("SELECT run_id FROM schema_migrations_history").fetchall()}
    assert len(run_ids) == 1 and None not in run_ids


def test_failing_migration_fails_run_and_alerts(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    write_migration(env["dir"], 3, "broken", "-- Business justification: test\nCREATE TABLE c (id int);\nSELECT 1/0;",
                    "-- Business justification: test\nDROP TABLE IF EXISTS c;")
    state = migrate(environment="test", return_state=True)
    assert state.is_failed()
    assert db_state(env["db_url"]) == [(2, False)]  # 1 and 2 applied, 3 rolled back: not dirty
    (ev,) = [e for e in events(env["hook"]) if e["event"] == "migration.failed"]
    assert ev["failing_version"] == 3 and ev["error"] == "division by zero" and ev["dirty"] is False
    # the same facts as database.dirty: file:line, statement, backup, run, next step
    assert ev["file"].endswith("000003_broken.up.sql:3") and ev["details"]["statement"] == "SELECT 1/0"
    assert ev["backup_key"] and ev["severity"] == "critical"
    assert "fix " in ev["details"]["next_step"] and "000003_broken.up.sql:3" in ev["details"]["next_step"]
    assert "Retry" in ev["details"]["next_step"] and "Next: nothing of migration 3 stayed applied" in state.message
    assert "failed" in artifact("migrate-test")
    assert_no_secret(env["hook"])


def test_dirty_database_refused_and_monitor_alerts(env: dict[str, Any]) -> None:
    from flows.migrate import migrate
    from flows.status_monitor import status_monitor

    with psycopg.connect(env["db_url"], autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, true)")
    state = migrate(environment="test", return_state=True)
    assert state.is_failed() and backups(env) == []
    assert [e["event"] for e in events(env["hook"])] == ["database.dirty"]
    assert events(env["hook"])[0]["failing_version"] == 1
    env["hook"].clear()
    result = status_monitor(environment="test")  # the same incident: one page only (issue 9.3)
    assert result["dirty"] and "database.dirty" not in result["alerts"]
    migrate(environment="test", return_state=True)  # a retry finds it again: still no page
    assert [e for e in events(env["hook"]) if e["event"] == "database.dirty"] == []


def test_monitor_alerts_on_pending(env: dict[str, Any]) -> None:
    from flows.status_monitor import status_monitor

    result = status_monitor(environment="test")
    assert result["pending"] == 2 and result["alerts"] == ["migration.pending"]
    (ev,) = events(env["hook"])
    assert ev["event"] == "migration.pending" and "pending" in ev["message"]


def test_monitor_alerts_schema_drift_once_naming_the_object(env: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.migrate import migrate
    from flows.status_monitor import status_monitor

    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    assert migrate(environment="test")["outcome"] == "succeeded"  # verify found no drift
    env["hook"].clear()
    assert status_monitor(environment="test")["drift"] == []
    with psycopg.connect(env["db_url"], autocommit=True) as conn:
        conn.execute("CREATE INDEX patients_email_idx ON a (id)")
        conn.execute("ALTER TABLE b ALTER COLUMN id TYPE bigint")
    result = status_monitor(environment="test")
    assert result["alerts"] == ["schema.drift"]
    assert result["drift"] == ["~ column b.id type bigint != integer", "+ index patients_email_idx (not in migrations)"]
    (ev,) = events(env["hook"])
    assert ev["event"] == "schema.drift" and ev["details"]["differences"] == result["drift"]
    assert "patients_email_idx" in ev["message"] and "migrator drift" in ev["message"]
    assert_no_secret(env["hook"])
    assert status_monitor(environment="test")["alerts"] == []  # the same list: alerted once
    with psycopg.connect(env["db_url"], autocommit=True) as conn:
        conn.execute("DROP INDEX patients_email_idx")
    assert status_monitor(environment="test")["alerts"] == ["schema.drift"]  # a different list alerts again
    assert [e["event"] for e in events(env["hook"])] == ["schema.drift", "schema.drift"]


def test_migrate_fails_verify_on_schema_drift_and_alerts_schema_drift(env: dict[str, Any], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.migrate import migrate

    monkeypatch.setenv("MIGRATOR_CACHE_DIR", str(tmp_path / "cache"))
    with psycopg.connect(env["db_url"], autocommit=True) as conn:
        conn.execute("CREATE TABLE hotfix (id int)")  # made by hand before the release
    state = migrate(environment="test", return_state=True)
    assert state.is_failed() and db_state(env["db_url"]) == [(2, False)]  # applied; verify found the drift
    assert "+ table hotfix (not in migrations)" in str(state.message) and "migration is applied" in str(state.message)
    (ev,) = events(env["hook"])
    assert ev["event"] == "schema.drift" and ev["details"]["differences"] == ["+ table hotfix (not in migrations)"]
    assert ev["version_after"] == 2 and "at version 2" in ev["message"]


def test_monitor_says_why_drift_was_not_checked_and_still_checks_pending(env: dict[str, Any], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.status_monitor import status_monitor

    yaml = tmp_path / "deployments" / "test.yaml"
    yaml.write_text(yaml.read_text() + f"drift: {{ignore: {tmp_path / 'missing.ignore'}}}\n")
    result = status_monitor(environment="test")
    assert "drift ignore file" in result["drift_error"] and "missing.ignore" in result["drift_error"]
    assert result["alerts"] == ["migration.pending"]


def test_backup_failure_stops_before_apply(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    env["s3"].client().delete_bucket(Bucket=env["bucket"])
    state = migrate(environment="test", return_state=True)
    assert state.is_failed()
    assert not _has_table(env["db_url"])  # apply never started: not even the state table exists
    evs = events(env["hook"])
    assert [e["event"] for e in evs] == ["backup.failed"]
    assert "bucket" in evs[0]["error"].lower()


def test_retried_run_reuses_its_backup(env: dict[str, Any]) -> None:
    """A transient failure (a lock held by another session) fails apply; the flow's retry (the same
    flow run, as a retry from the UI) reuses the cached backup and resumes from the database."""
    from flows.migrate import migrate

    write_migration(env["dir"], 3, "alter_a", "-- Business justification: test\nALTER TABLE a ADD COLUMN x int;",
                    "-- Business justification: test\nALTER TABLE a DROP COLUMN IF EXISTS x;")
    migrate(environment="test", target_version=2)
    assert len(backups(env)) == 1
    blocker = psycopg.connect(env["db_url"])
    blocker.execute("LOCK TABLE a IN ACCESS SHARE MODE")

    def release_after_first_failure() -> None:
        # Hold the lock until the first attempt has failed (not a fixed delay: a loaded machine
        # can take longer than any delay to reach apply), then let the retry through.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "migration.failed" not in [e["event"] for e in events(env["hook"])]:
            time.sleep(0.2)
        blocker.close()

    threading.Thread(target=release_after_first_failure, daemon=True).start()
    result = migrate.with_options(retries=1, retry_delay_seconds=4)(environment="test")
    assert result["outcome"] == "succeeded" and db_state(env["db_url"]) == [(3, False)]
    assert len(backups(env)) == 2  # one for the first run, ONE for the retried run
    kinds = [e["event"] for e in events(env["hook"])]
    assert kinds.count("migration.failed") == 1 and kinds[-1] == "migration.succeeded"


def _paused_run_id(timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=flt)
        if runs:
            return runs[0].id
        time.sleep(0.5)
    raise AssertionError("the flow never paused for approval")


def test_approval_given(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(migrate(environment="test", require_approval=True,
                                                           return_state=True)))
    t.start()
    run_id = _paused_run_id()
    assert not _has_table(env["db_url"])  # nothing applied while waiting
    assert [e["event"] for e in events(env["hook"])] == ["approval.requested"]
    assert "create_b" in artifact("approval-test")
    resume_flow_run(run_id, run_input={"decision": "approve", "approver": "alice@askfrank.example", "comment": "CHG-1"})
    t.join(120)
    assert out and out[0].is_completed()
    assert db_state(env["db_url"]) == [(2, False)]
    with psycopg.connect(env["db_url"]) as conn:
        who = {r[0] for r in conn.execute("SELECT approved_by FROM schema_migrations_history").fetchall()}
    assert who == {"alice@askfrank.example"}
    assert "alice@askfrank.example" in artifact("migrate-test")


def _has_table(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone() == (True,)


def test_approval_timeout_fails_and_alerts(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    state = migrate(environment="test", require_approval=True, approval_timeout_seconds=2, return_state=True)
    assert state.is_failed()
    assert not _has_table(env["db_url"]) or db_state(env["db_url"]) == []
    kinds = [e["event"] for e in events(env["hook"])]
    assert kinds == ["approval.requested", "migration.failed"]
    assert "approval timed out" in events(env["hook"])[-1]["error"]


def test_force_requires_the_expected_version(env: dict[str, Any]) -> None:
    from flows.force import force
    from flows.migrate import migrate

    migrate(environment="test")
    state = force(environment="test", version=1, expected_current=1, return_state=True)
    assert state.is_failed() and db_state(env["db_url"]) == [(2, False)]
    result = force(environment="test", version=1, expected_current=2)
    assert result["outcome"] == "forced" and db_state(env["db_url"]) == [(1, False)]
    with psycopg.connect(env["db_url"]) as conn:
        row = conn.execute("SELECT direction, from_version, to_version FROM schema_migrations_history "
                           "ORDER BY id DESC LIMIT 1").fetchone()
    assert row == ("force", 2, 1)


def test_rollback_and_restore_drill(env: dict[str, Any]) -> None:
    from flows.migrate import migrate
    from flows.restore_drill import restore_drill
    from flows.rollback import rollback

    migrate(environment="test")
    result = rollback(environment="test", steps=1)
    assert result["version_after"] == 1 and db_state(env["db_url"]) == [(1, False)]
    assert len(backups(env)) == 2
    drill = restore_drill(environment="test")
    assert drill["schema_version"] == 2  # the latest backup was taken at version 2, before the rollback
    with psycopg.connect(url_for(env["db_url"], "postgres")) as conn:
        left = conn.execute(r"SELECT count(*) FROM pg_database WHERE datname LIKE 'migrator\_scratch\_drill\_%%' "
                            "AND split_part(datname, '_', 5) = %s", (str(os.getpid()),)).fetchone()
    assert left == (0,)


def test_backup_flow_verifies_and_applies_retention(env: dict[str, Any]) -> None:
    """The backup flow's result (what --json prints) names the verified backup, as its store URL and
    without the database password, and the backups the retention policy deleted: keep_last 1 with
    keep_days 0 keeps the newest only."""
    import json

    from flows.backup import backup
    from flows.migrate import migrate

    conf = Path(os.environ["MIGRATOR_DEPLOYMENTS_DIR"]) / "test.yaml"
    conf.write_text(conf.read_text().replace("retries: 0}", "retries: 0, keep_last: 1, keep_days: 0}"))
    migrate(environment="test")
    (first,) = backups(env)
    result = backup(environment="test")
    assert result["verified"] is True and result["toc_entries"] > 0 and result["schema_version"] == 2
    assert result["url"] == f"s3://{env['bucket']}/{result['key']}" and result["key"] != first
    assert result["pruned"] == [first] and backups(env) == [result["key"]]
    assert PASSWORD not in json.dumps(result, default=str)
    assert "pruned" not in backup(environment="test", apply_retention=False)
    assert len(backups(env)) == 2


def test_restore_drill_alerts_a_truncated_newest_backup(env: dict[str, Any]) -> None:
    """Issue 19: the drill proves `latest` restores; when the newest backup is cut short it restores
    the newest complete one and says so with one backup.incomplete alert naming both."""
    from flows.migrate import migrate
    from flows.restore_drill import restore_drill

    migrate(environment="test")
    (good,) = backups(env)
    client = env["s3"].client()
    head = client.head_object(Bucket=env["bucket"], Key=good)
    body = client.get_object(Bucket=env["bucket"], Key=good)["Body"].read()
    newer = good.replace(good.rsplit("/", 1)[1], "29991231T235959.000Z_v2.dump")
    client.put_object(Bucket=env["bucket"], Key=newer, Body=body[: len(body) // 2], Metadata=head["Metadata"])
    sent = len(events(env["hook"]))
    drill = restore_drill(environment="test")
    assert drill["key"] == good and newer in drill["newest_problem"] and "INCOMPLETE" in drill["newest_problem"]
    (alert,) = events(env["hook"])[sent:]
    assert alert["event"] == "backup.incomplete" and alert["backup_key"] == good
    assert newer in alert["message"] and "restore drill on test" in alert["message"]


def test_dry_run_changes_nothing(env: dict[str, Any]) -> None:
    from flows.migrate import migrate

    result = migrate(environment="test", dry_run=True)
    assert result["outcome"] == "dry run" and [s["version"] for s in result["plan"]] == [1, 2]
    assert backups(env) == [] and events(env["hook"]) == []
    assert not _has_table(env["db_url"]) or db_state(env["db_url"]) == []


def test_secret_block_wins_over_environment_variable(env: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from tasks.environment import load_environment

    Secret(value=env["db_url"]).save("askfrank-test-db-url", overwrite=True)
    ddir = tmp_path / "deployments2"
    ddir.mkdir()
    (ddir / "blocky.yaml").write_text(
        "environment: blocky\ndatabase_url: {secret_block: askfrank-test-db-url, env: NOT_SET_ANYWHERE}\n"
    )
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(ddir))
    e = load_environment("blocky")
    assert e.settings.database_url == env["db_url"] and e.name == "blocky"
    (ddir / "broken.yaml").write_text("database_url: [unclosed\n")
    from migrator.errors import ConfigError

    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_environment("broken")
    with pytest.raises(ConfigError, match="no settings for environment 'nope'"):
        load_environment("nope")
