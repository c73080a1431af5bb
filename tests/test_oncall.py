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
from test_flows import _paused_run_id, db_state, env, events, harness, hook, s3  # noqa: F401


def run_logs(flow_run_id: UUID, settle: float = 10.0) -> list[str]:
    """The run's log messages as the API has them (the log handler ships them in batches)."""
    deadline = time.monotonic() + settle
    last: list[str] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        msgs = [lg.message for lg in sorted(logs, key=lambda lg: lg.timestamp)]
        if msgs and msgs == last and any("Finished in state" in m for m in msgs):
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
