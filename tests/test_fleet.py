"""Fleets against real PostgreSQL: 20 tenant databases created here (and dropped), discovered from a
catalogue database, migrated by ``migrate-fleet`` as in-process subflows under the Prefect test
harness, with file:// backups and a real webhook receiver.

Proves: every tenant reaches the latest version with its own backup; a conflicting tenant fails
and, with max_failures 0, no database of a later wave starts, the failed one reported with its
error and left clean (transactional file) or dirty with its recovery step (non-transactional);
ONE fleet alert, no per-database alert; a re-run skips current databases; the fleet-status flow
and CLI; fail-closed configuration errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import SERVER_URL, tenant_databases, url_for, write_migration
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

PASSWORD = "Fleet-Sentinel-pw-77"
TENANTS = 20
J = "-- Business justification: test\n"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
def tenants(pg_server: str) -> Iterator[dict[str, Any]]:
    """20 empty tenant databases plus a catalogue database listing them (in order)."""
    with tenant_databases("fleet", TENANTS,
                          "CREATE TABLE tenants (name text PRIMARY KEY, active boolean NOT NULL DEFAULT true)",
                          "INSERT INTO tenants (name) VALUES (%s)") as dbs:
        yield dbs


@pytest.fixture
def fleet_env(tmp_path: Path, tenants: dict[str, Any], hook: WebhookReceiver, migrations_dir: Path,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """deployments/tenants.yaml: discover the tenants from the catalogue; credentials from a variable."""
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    backups = tmp_path / "backups"
    (ddir / "tenants.yaml").write_text(
        f"""environment: tenants
discover:
  catalogue_url: {{env: TEST_FLEET_CATALOGUE_URL}}
  query: SELECT name FROM tenants WHERE active ORDER BY name
  url_template: "postgresql://{{credentials}}@127.0.0.1:5432/{{name}}"
  credentials: {{env: TEST_FLEET_CREDENTIALS}}
fleet: {{canary: 1, max_parallel: 4, max_failures: 0}}
backup: {{url: "file://{backups}", retries: 0}}
webhook: {{url: {{env: TEST_FLEET_WEBHOOK_URL}}, secret: {{env: TEST_FLEET_WEBHOOK_SECRET}}, format: json}}
approval: {{required: false}}
timeouts: {{lock_timeout: 2s, statement_timeout: 1min, lock_wait_seconds: 30}}
"""
    )
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(ddir))
    monkeypatch.setenv("MIGRATIONS_PATH", str(migrations_dir))
    monkeypatch.setenv("TEST_FLEET_CATALOGUE_URL",
                       url_for(SERVER_URL, tenants["catalogue"]).replace("postgres@", f"postgres:{PASSWORD}@"))
    monkeypatch.setenv("TEST_FLEET_CREDENTIALS", f"postgres:{PASSWORD}")
    monkeypatch.setenv("TEST_FLEET_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("TEST_FLEET_WEBHOOK_SECRET", "fleet-hook-secret")
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.01")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    write_migration(migrations_dir, 1, "create_a", J + "CREATE TABLE a (id int);", J + "DROP TABLE IF EXISTS a;")
    write_migration(migrations_dir, 2, "create_b", J + "CREATE TABLE b (id int);", J + "DROP TABLE IF EXISTS b;")
    return {"dir": migrations_dir, "backups": backups, "hook": hook, **tenants}


def state(name: str) -> tuple[int, bool] | None:
    with psycopg.connect(url_for(SERVER_URL, name)) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version, dirty FROM schema_migrations").fetchone()
        return (int(row[0]), bool(row[1])) if row else None


def events(hook: WebhookReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in hook.requests]


def outcomes(result_or_state: Any) -> dict[str, dict[str, Any]]:
    result = result_or_state
    return {d["name"]: d for d in result["databases"]}


def test_fleet_migrates_every_tenant_then_rerun_skips(fleet_env: dict[str, Any]) -> None:
    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    result = migrate_fleet(environment="tenants", children="subflow")
    assert result["outcome"] == "succeeded" and result["counts"] == {"succeeded": TENANTS}
    assert all(state(n) == (2, False) for n in names)
    by_name = outcomes(result)
    assert by_name[names[0]]["wave"] == 0  # the canary went first, alone
    assert {by_name[n]["wave"] for n in names[1:5]} == {1}
    for n in names:
        o = by_name[n]
        assert (o["version_before"], o["version_after"]) == (-1, 2) and o["run_id"]
        assert n in o["backup_key"]  # each database has its own backup, keyed by its name
    dumps = list(fleet_env["backups"].rglob("*.dump"))
    assert len(dumps) == TENANTS and {d.parent.name for d in dumps} == set(names)
    with psycopg.connect(url_for(SERVER_URL, names[7])) as conn:  # its own audit trail, with its environment
        audit = conn.execute("SELECT environment, run_id FROM schema_migrations_history").fetchall()
    assert {r[0] for r in audit} == {f"tenants:{names[7]}"} and len(audit) == 2
    assert {r[1] for r in audit} == {result["run_id"]}  # audited with the fleet run's id
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:  # in-process: ONE task run per database, no child flow run
        task_run = client.read_task_run(by_name[names[7]]["run_id"])
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[result["run_id"]])))
    assert task_run.name == f"migrate {names[7]}" and str(task_run.flow_run_id) == result["run_id"]
    assert children == []
    (ev,) = events(fleet_env["hook"])  # ONE alert for the fleet, none per database
    assert ev["event"] == "fleet.completed" and ev["details"]["counts"] == {"succeeded": TENANTS}
    fleet_env["hook"].clear()

    again = migrate_fleet(environment="tenants", children="subflow")
    assert again["counts"] == {"current": TENANTS}
    assert all(o["run_id"] is None for o in again["databases"])  # no child run was started
    assert len(list(fleet_env["backups"].rglob("*.dump"))) == TENANTS
    for r in fleet_env["hook"].requests:
        assert PASSWORD.encode() not in r.body


def test_conflicting_tenant_stops_later_waves_and_stays_clean(fleet_env: dict[str, Any]) -> None:
    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    bad = names[6]  # wave 2 (canary, then waves of 4: 1-4, 5-8, 9-12, ...)
    with psycopg.connect(url_for(SERVER_URL, bad), autocommit=True) as conn:
        conn.execute("CREATE TABLE b (legacy text)")
    state_ = migrate_fleet(environment="tenants", children="subflow", return_state=True)
    assert state_.is_failed()
    assert "1 of 20 databases failed" in str(state_.message) and bad in str(state_.message)
    from prefect.artifacts import Artifact

    art = Artifact.get("migrate-fleet-tenants")
    assert art is not None
    md = str(art.data)
    assert "failure budget exceeded" in md and bad in md and "already exists" in md
    assert state(bad) == (1, False)  # migration 2 rolled back by its transaction: clean at 1
    for n in names[1:9]:
        if n != bad:
            assert state(n) == (2, False), n  # its wave and the ones before finished
    for n in names[9:]:
        assert state(n) is None, n  # no later wave started: untouched
    (ev,) = events(fleet_env["hook"])
    assert ev["event"] == "fleet.failed"
    (failed,) = ev["details"]["failed_databases"]
    assert failed["database"] == bad and "already exists" in failed["error"] and failed["dirty"] is False
    assert ev["details"]["counts"] == {"succeeded": 8, "failed": 1, "not started": 11}
    assert PASSWORD not in md and all(PASSWORD.encode() not in r.body for r in fleet_env["hook"].requests)


def test_non_transactional_failure_leaves_dirty_with_recovery_step(fleet_env: dict[str, Any]) -> None:
    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    write_migration(fleet_env["dir"], 3, "index_a", J + "-- CONCURRENTLY: a takes writes; outside a transaction.\n"
                    "CREATE INDEX CONCURRENTLY a_id_idx ON a (id);",
                    J + "DROP INDEX CONCURRENTLY IF EXISTS a_id_idx;")
    bad = names[2]  # wave 1
    with psycopg.connect(url_for(SERVER_URL, bad), autocommit=True) as conn:
        conn.execute("CREATE TABLE a_id_idx (x int)")  # the index name is taken: file 3 fails
    state_ = migrate_fleet(environment="tenants", children="subflow", return_state=True)
    assert state_.is_failed()
    assert state(bad) == (3, True)  # failed outside a transaction: dirty at 3, needs a person
    assert all(state(n) == (3, False) for n in names[:5] if n != bad)
    assert all(state(n) is None for n in names[5:])
    from prefect.artifacts import Artifact

    art = Artifact.get("migrate-fleet-tenants")
    assert art is not None
    md = str(art.data)
    assert "version 3, **DIRTY**" in md and "dirty: recover it" in md
    assert f"recover/tenants:{bad}" in md and "apply failed" in md  # the in-process task's own next step
    (ev,) = events(fleet_env["hook"])
    (failed,) = ev["details"]["failed_databases"]
    assert failed["database"] == bad and failed["dirty"] is True and failed["version"] == 3
    assert f"recover/tenants:{bad}" in failed["next_step"]


def test_a_failed_backup_applies_nothing_and_says_so(fleet_env: dict[str, Any]) -> None:
    """In-process, a database whose backup cannot be written is not migrated: its task run names the
    stage, the fleet names it with the next step, and the canary failure stops the rest."""
    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    fleet_env["backups"].write_text("a file where the backup store's folder should be\n")
    state_ = migrate_fleet(environment="tenants", children="in-process", return_state=True)
    assert state_.is_failed() and names[0] in str(state_.message)
    assert all(state(n) is None for n in names)  # nothing applied anywhere, not even the canary
    (ev,) = events(fleet_env["hook"])
    (failed,) = ev["details"]["failed_databases"]
    assert failed["database"] == names[0] and failed["error"].startswith("backup failed")
    assert "nothing was applied" in failed["next_step"] and failed["dirty"] is False
    assert ev["details"]["counts"] == {"failed": 1, "not started": TENANTS - 1}


def test_canary_failure_stops_whatever_the_budget(fleet_env: dict[str, Any]) -> None:
    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    with psycopg.connect(url_for(SERVER_URL, names[0]), autocommit=True) as conn:
        conn.execute("CREATE TABLE b (legacy text)")
    state_ = migrate_fleet(environment="tenants", children="subflow", max_failures=5, return_state=True)
    assert state_.is_failed()
    assert state(names[0]) == (1, False)
    assert all(state(n) is None for n in names[1:])


def test_dry_run_and_fleet_status(fleet_env: dict[str, Any], cli: Any) -> None:
    from flows.fleet import fleet_status, migrate_fleet

    names = fleet_env["names"]
    result = migrate_fleet(environment="tenants", dry_run=True)
    assert result["outcome"] == "dry run" and result["to_run"] == names
    assert result["waves"][0] == [names[0]] and len(result["waves"]) == 1 + 5
    assert all(state(n) is None for n in names)  # nothing changed
    with psycopg.connect(url_for(SERVER_URL, names[3]), autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute("INSERT INTO schema_migrations VALUES (1, true)")
    st = fleet_status(environment="tenants", return_state=True)
    assert st.is_failed() and names[3] in str(st.message)
    r = cli("fleet-status", "--env", "tenants")
    assert r.code == 3, r.err
    lines = r.out.strip().splitlines()
    assert len(lines) == TENANTS and "DIRTY" in lines[3] and "pending 1" in lines[3]
    assert "version   none  clean  pending 2" in lines[0]
    r2 = cli("status", "--env", "tenants")  # status on a fleet environment: the same lines
    assert r2.code == 3 and r2.out == r.out
    assert PASSWORD not in r.out + r.err
    # a dirty database counts against the budget before anything starts
    state_ = migrate_fleet(environment="tenants", children="subflow", return_state=True)
    assert state_.is_failed() and all(state(n) is None for n in names if n != names[3])


def test_fail_closed_configuration(fleet_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    from migrator.errors import ConfigError
    from tasks.environment import load_environment

    monkeypatch.delenv("TEST_FLEET_CREDENTIALS")
    with pytest.raises(ConfigError, match="discover.credentials does not resolve"):
        load_environment(f"tenants:{fleet_env['names'][0]}")
    monkeypatch.setenv("TEST_FLEET_CREDENTIALS", "postgres:x")
    with pytest.raises(ConfigError, match="returns no database 'nope'"):
        load_environment("tenants:nope")
    with pytest.raises(ConfigError, match="not valid"):
        load_environment("tenants:bad name")
    env = load_environment("tenants")  # the fleet itself names no database: connecting cannot work
    from migrator.engine import Migrator

    with pytest.raises(ConfigError, match="a-fleet-environment-is-no-single-database"):
        Migrator(env.settings).status()
    r = cli("fleet-status", "--env", "nosuch")
    assert r.code != 0 and r.err.count("\n") == 1 and "nosuch" in r.err


def test_databases_list_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str,
                             migrations_dir: Path) -> None:
    from migrator import fleet
    from tasks.environment import load_environment

    ddir = tmp_path / "deployments"
    ddir.mkdir()
    (ddir / "shards.yaml").write_text(
        "databases:\n"
        "  - {name: eu-1, url: {env: TEST_SHARD_EU1}}\n"
        "  - {name: us-1, url: {secret_block: no-such-block, env: TEST_SHARD_US1}}\n"
        "fleet: {canary: 0, max_parallel: 2}\n"
    )
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(ddir))
    monkeypatch.setenv("TEST_SHARD_EU1", db_url)
    monkeypatch.delenv("TEST_SHARD_US1", raising=False)
    assert load_environment("shards:eu-1").settings.database_url == db_url
    with pytest.raises(Exception, match=r"databases\[us-1\].url does not resolve"):
        load_environment("shards:us-1")
    with pytest.raises(Exception, match="lists no database 'asia'"):
        load_environment("shards:asia")
    spec = fleet.parse_fleet({"databases": [{"name": "a", "url": "x"}], "fleet": {"canary": 0}}, "s")
    assert spec is not None and spec.canary == 0
    waves = fleet.plan_waves([f"d{i}" for i in range(10)], canary=2, wave_size=3)
    assert [w.databases for w in waves] == [["d0", "d1"], ["d2", "d3", "d4"], ["d5", "d6", "d7"], ["d8", "d9"]]
    assert [w.number for w in waves] == [0, 1, 2, 3] and waves[0].canary
    assert [(w.number, w.canary) for w in fleet.plan_waves(["a", "b"], canary=0, wave_size=1)] == [(1, False),
                                                                                                     (2, False)]
    for bad, msg in [({"databases": [], "fleet": {}}, "non-empty"),
                     ({"databases": [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}]}, "twice"),
                     ({"databases": [{"name": "a", "url": "x"}], "fleet": {"max_paralel": 2}}, "unknown keys"),
                     ({"discover": {"catalogue_url": "x", "query": "q",
                                    "url_template": "postgresql://u:pw@h/{name}"}}, "must not hold a password")]:
        with pytest.raises(Exception, match=msg):
            fleet.parse_fleet(bad, "s")


def test_one_approval_for_the_fleet(fleet_env: dict[str, Any], tmp_path: Path) -> None:
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.fleet import migrate_fleet

    names = fleet_env["names"]
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(
        migrate_fleet(environment="tenants", children="subflow", require_approval=True, return_state=True)))
    t.start()
    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline, paused = time.monotonic() + 90, []
    while not paused and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            paused = client.read_flow_runs(flow_run_filter=flt)
        time.sleep(0.5)
    assert len(paused) == 1, "the fleet pauses ONCE for approval"
    assert all(state(n) is None for n in names)  # nothing applied while waiting
    (ev,) = events(fleet_env["hook"])
    assert ev["event"] == "approval.requested"
    resume_flow_run(paused[0].id, run_input={"decision": "approve", "approver": "alice@askfrank.example"})
    t.join(300)
    assert out and out[0].is_completed()
    for n in names:
        with psycopg.connect(url_for(SERVER_URL, n)) as conn:
            who = {r[0] for r in conn.execute("SELECT approved_by FROM schema_migrations_history")}
        assert who == {"alice@askfrank.example"}, n
    assert [e["event"] for e in events(fleet_env["hook"])] == ["approval.requested", "fleet.completed"]


def test_unreadable_catalogue_stops_with_one_alert(fleet_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.fleet import migrate_fleet

    monkeypatch.setenv("TEST_FLEET_CATALOGUE_URL",
                       url_for(SERVER_URL, "no_such_catalogue_db").replace("postgres@", f"postgres:{PASSWORD}@"))
    state_ = migrate_fleet(environment="tenants", children="subflow", return_state=True)
    assert state_.is_failed() and "no_such_catalogue_db" in str(state_.message)
    (ev,) = events(fleet_env["hook"])
    assert ev["event"] == "fleet.failed" and "nothing was started" in ev["message"]
    assert PASSWORD not in str(state_.message) and PASSWORD.encode() not in fleet_env["hook"].requests[0].body
    assert all(state(n) is None for n in fleet_env["names"])
