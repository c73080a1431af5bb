"""On-call signals of the flows under prefect_test_harness (real PostgreSQL, S3, webhook receiver):
a waiting run says who holds the slot; expected failures are one line without a traceback;
configuration errors are not retried; task runs are named for what they do."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.flow_runs import resume_flow_run
from test_flows import _paused_run_id, db_state, env, events, hook, s3  # noqa: F401

from conftest import write_migration

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_logs(flow_run_id: UUID, settle: float = 10.0) -> list[str]:
    """The run's log messages as the API has them (the log handler ships them in batches)."""
    deadline = time.monotonic() + settle
    last: list[str] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        logs = sorted(logs, key=lambda lg: lg.timestamp)
        msgs = [lg.message for lg in logs]
        if msgs == last and any(lg.task_run_id is None and lg.message.startswith("Finished in state") for lg in logs):
            return msgs
        last = msgs
        time.sleep(1.0)
    return last


def _in_thread(fn: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(return_state=True, **kwargs)))
    t.start()
    return t, out


def test_waiting_run_logs_who_holds_the_slot(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import flows.slot
    from flows.migrate import migrate

    monkeypatch.setattr(flows.slot, "REPORT_EVERY_SECONDS", 3.0)
    holder_thread, holder_out = _in_thread(migrate, environment="test", require_approval=True)
    holder_id = _paused_run_id()
    with get_client(sync_client=True) as client:
        holder = client.read_flow_run(holder_id)
    assert "holds-slot:askfrank-migrations-test" in holder.tags
    waiter_thread, waiter_out = _in_thread(migrate, environment="test")
    time.sleep(9)  # first report after ~2 s, then every 3 s
    resume_flow_run(holder_id, run_input={"decision": "reject", "approver": "bob"})
    holder_thread.join(60)
    waiter_thread.join(120)
    assert holder_out[0].is_failed() and waiter_out[0].is_completed()
    assert db_state(env["db_url"]) == [(2, False)]
    logs = run_logs(waiter_out[0].state_details.flow_run_id)
    waits = [m for m in logs if m.startswith("waiting ")]
    assert len(waits) >= 2, logs
    first = waits[0]
    assert f"held by migrate run '{holder.name}' (paused for approval, started " in first
    assert f"/runs/flow-run/{holder_id}" in first
    assert "for the test migration slot (askfrank-migrations-test)" in first and "gives up after 30s" in first
    seconds = [int(m.split()[1].rstrip("s")) for m in waits]
    assert seconds[0] <= 5 and seconds == sorted(seconds) and seconds[-1] > seconds[0]
    assert any(m.startswith("got the test migration slot after waiting") for m in logs)
    with get_client(sync_client=True) as client:  # the tag went with the slot
        assert not [t for t in client.read_flow_run(holder_id).tags if t.startswith("holds-slot:")]


def task_runs(flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))))


def test_expected_failure_is_one_line_without_traceback(env: dict[str, Any]) -> None:  # noqa: F811
    from flows.migrate import migrate

    write_migration(env["dir"], 3, "broken", "-- Business justification: test\nSELECT 1/0;",
                    "-- Business justification: test\nSELECT 1;")
    state = migrate(environment="test", return_state=True)
    assert state.is_failed()
    logs = run_logs(state.state_details.flow_run_id)
    assert not [m for m in logs if "Traceback" in m or "\n" in m], logs
    failed = [m for m in logs if "MigrationFailedError: " in m or "RunFailed: " in m]
    assert any(m.startswith("Task run failed with exception: MigrationFailedError: ") for m in failed), logs
    # the flow ends through flow_report's typed RunFailed: one line with the failure and the real state
    assert any(
        m.startswith("Encountered exception during execution: RunFailed: migrate test failed: migration 3 (up) failed")
        for m in failed
    ), logs
    assert all("000003_broken.up.sql" in m for m in failed)


def test_unexpected_error_keeps_its_traceback(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from flows.migrate import migrate
    from migrator.engine import Migrator

    def boom(self: Any, *a: Any, **k: Any) -> Any:
        raise RuntimeError("boom: a bug, not an expected failure")

    monkeypatch.setattr(Migrator, "up", boom)
    state = migrate(environment="test", return_state=True)
    assert state.is_failed()
    logs = run_logs(state.state_details.flow_run_id)
    assert any("Traceback" in m and "RuntimeError: boom" in m for m in logs), logs


def test_configuration_error_is_not_retried(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from flows.status_monitor import status_monitor

    monkeypatch.setenv("TEST_FLOW_DATABASE_URL", "postgresql://postgres@127.0.0.1:9/nowhere")  # nothing listens
    state = status_monitor(environment="test", return_state=True)
    assert state.is_failed()
    (status,) = [t for t in task_runs(state.state_details.flow_run_id) if t.task_key.startswith("read_status")]
    assert status.name == "status test" and status.run_count == 1 and status.state.is_failed()


def test_transient_error_is_still_retried(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from flows.status_monitor import status_monitor
    from migrator.engine import Migrator

    real = Migrator.status
    calls: list[int] = []

    def flaky(self: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return real(self)

    monkeypatch.setattr(Migrator, "status", flaky)
    state = status_monitor(environment="test", return_state=True)
    assert state.is_completed()
    (status,) = [t for t in task_runs(state.state_details.flow_run_id) if t.task_key.startswith("read_status")]
    assert status.run_count == 2


def test_task_runs_are_named_for_what_they_do(env: dict[str, Any]) -> None:  # noqa: F811
    from flows.migrate import migrate

    state = migrate(environment="test", return_state=True)
    assert state.is_completed()
    names = {t.name for t in task_runs(state.state_details.flow_run_id)}
    assert names >= {"status test", "backup test", "validate test", "plan up test", "apply test",
                     "verify test at 2", "notify migration.succeeded"}, names


def askfrank_events(flow_run_id: UUID, expected: int, timeout: float = 20.0) -> list[Any]:
    """The askfrank.* Prefect events of one flow run, read back from the server's events API."""
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    found: list[Any] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(prefix=["askfrank."])), limit=50)
        found = [e for e in page.events if e.payload.get("run_id") == str(flow_run_id)]
        if len(found) >= expected:
            break
        time.sleep(0.5)
    return sorted(found, key=lambda e: e.occurred)


def test_alerts_are_also_prefect_events(env: dict[str, Any]) -> None:  # noqa: F811
    import psycopg

    from flows.migrate import migrate
    from flows.status_monitor import status_monitor

    write_migration(env["dir"], 3, "broken", "-- Business justification: test\nSELECT 1/0;",
                    "-- Business justification: test\nSELECT 1;")
    failed = migrate(environment="test", return_state=True)
    (ev,) = askfrank_events(failed.state_details.flow_run_id, 1)
    assert ev.event == "askfrank.migration.failed"
    assert ev.resource.id == "askfrank.database.test"
    assert ev.resource["askfrank.environment"] == "test" and ev.resource["askfrank.version"] == "3"
    assert ev.payload["error"] == "division by zero" and ev.payload["id"] == events(env["hook"])[-1]["id"]
    related = {r.id for r in ev.related}
    assert f"prefect.flow-run.{failed.state_details.flow_run_id}" in related  # links back to the run

    with psycopg.connect(env["db_url"], autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = true")
    monitored = status_monitor(environment="test", return_state=True)
    dirty = [e for e in askfrank_events(monitored.state_details.flow_run_id, 1) if e.event == "askfrank.database.dirty"]
    assert len(dirty) == 1
    assert dirty[0].resource["askfrank.version"] == "2" and dirty[0].resource["askfrank.dirty"] == "yes"
    assert "Flow-Sentinel-pw-42" not in dirty[0].model_dump_json()
