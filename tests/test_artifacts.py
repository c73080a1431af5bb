"""Every surface of a full on-call scenario tells the truth, under prefect_test_harness with real
PostgreSQL, S3 (moto) and a webhook receiver: dirty -> leave_dirty -> revert (recover flow) -> migrate
again; an approval with a change ticket; a rejection. Each artifact version every run wrote is valid
GitHub-flavoured markdown (every table parses, same cells per row), and its "approved by", version
and dirty lines match the database and its audit trail; paused runs carry a state message; events
use one vocabulary and their severity follows the database's state after them."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

import psycopg
import pytest
from markdown_check import field, table_problems
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.flow_runs import resume_flow_run
from test_flows import _paused_run_id, db_state, env, events, hook, s3  # noqa: F401 - fixtures
from test_recovery import DOWN_SAFE, UP_BROKEN, UP_FIXED

from conftest import write_migration

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(300)]


def _in_thread(fn: Any, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(return_state=True, **kw)))
    t.start()
    return t, out


def _paused(run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _wait_running(run_id: UUID, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _paused(run_id)
        if state is None or not state.is_paused():
            return
        time.sleep(0.3)


def _artifacts(run_id: UUID) -> list[tuple[str, str]]:
    """Every version of every artifact the flow run wrote: (key, markdown)."""
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return [(str(a.key), str(a.data)) for a in arts]


def _latest(run_id: UUID, key: str) -> str:
    found = [a for a in _artifacts_sorted(run_id) if a[0] == key]
    assert found, f"no artifact {key} of run {run_id}"
    return found[-1][1]


def _artifacts_sorted(run_id: UUID) -> list[tuple[str, str]]:
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return [(str(a.key), str(a.data)) for a in sorted(arts, key=lambda a: a.created)]


def _all_sound(run_id: UUID) -> None:
    arts = _artifacts(run_id)
    assert arts
    for key, md in arts:
        assert table_problems(md) == [], (key, md)


def _matches_db(md: str, url: str) -> None:
    ((version, dirty),) = db_state(url)
    assert field(md, "version now") == str(version), md
    assert field(md, "dirty now") == ("yes" if dirty else "no"), md


def _kinds(e: dict[str, Any]) -> list[str]:
    return [ev["event"] for ev in events(e["hook"])]


def test_dirty_leave_dirty_revert_then_migrate_again(env: dict[str, Any]) -> None:  # noqa: F811
    from flows.migrate import migrate
    from flows.recover import recover

    write_migration(env["dir"], 3, "add_contact_email", UP_BROKEN.replace("contacts", "a"),
                    DOWN_SAFE.replace("contacts", "a"))
    t, out = _in_thread(migrate, environment="test", recovery_timeout_seconds=120)
    run_id = _paused_run_id()
    paused = _paused(run_id)
    assert paused.message.startswith("paused for recovery: test database ") and "DIRTY at version 3" in paused.message
    assert "Click Resume, choose an Action" in paused.message and "Engineer" in paused.message
    resume_flow_run(run_id, run_input={"action": "leave_dirty", "engineer": "dana", "comment": "INC-4 tomorrow"})
    t.join(120)
    state = out[0]
    assert state.is_failed()
    assert "RunFailed: migrate test left dirty: left dirty by dana" in state.message
    assert "recover/test" in state.message  # the next step: no paused run holds the form any more
    assert db_state(env["db_url"]) == [(3, True)]
    assert _kinds(env) == ["database.dirty", "recovery.left_dirty"]
    left = events(env["hook"])[1]
    assert left["severity"] == "warning" and left["dirty"] is True and "Recovery completed" not in left["message"]
    assert left["details"]["outcome"] == "left dirty" and left["details"]["comment"] == "INC-4 tomorrow"
    assert "DIRTY at version 3" in left["details"]["next_step"]
    _all_sound(run_id)
    md = _latest(run_id, "migrate-test")
    _matches_db(md, env["db_url"])
    assert md.startswith("# migrate on `test`: left dirty")
    assert "| `leave_dirty` | dana | INC-4 tomorrow | left dirty | 3 | yes |" in md
    assert "| 3 | add_contact_email | up |  | no | FAILED half-way: database dirty |" in md
    assert field(md, "approved by") == "nobody (no approval asked)"
    incident = _latest(run_id, "incident-test")
    assert field(incident, "dirty") == "yes" and field(incident, "version") == "3"

    # the recover deployment's flow, started empty: it pauses with the same form; revert
    t, out = _in_thread(recover, environment="test", timeout_seconds=120)
    rec_id = _paused_run_id()
    assert _paused(rec_id).message.startswith("paused for recovery: ")
    resume_flow_run(rec_id, run_input={"action": "revert", "engineer": "erin"})
    t.join(120)
    assert out[0].is_completed(), out[0]
    assert "recover test recovered (revert by erin)" in out[0].message and "dirty: no" in out[0].message
    assert db_state(env["db_url"]) == [(2, False)]
    assert _kinds(env)[-1] == "recovery.completed" and events(env["hook"])[-1]["severity"] == "info"
    _all_sound(rec_id)
    _matches_db(_latest(rec_id, "recover-test"), env["db_url"])
    resolved = _latest(rec_id, "incident-test")
    assert "incident resolved by `revert` (erin)" in resolved and "| recovered | 2 | no |" in resolved

    # the fixed file, migrate again: 3 applied, clean
    (env["dir"] / "000003_add_contact_email.up.sql").write_text(UP_FIXED.replace("contacts", "a"))
    again = migrate(environment="test", return_state=True)
    assert again.is_completed() and "migrate test succeeded" in (again.message or "")
    assert db_state(env["db_url"]) == [(3, False)]
    _all_sound(again.state_details.flow_run_id)
    md = _latest(again.state_details.flow_run_id, "migrate-test")
    _matches_db(md, env["db_url"])
    assert "| 3 | add_contact_email | up |" in md and "| applied |" in md


def test_approval_comment_reaches_the_audit_row_and_every_artifact(env: dict[str, Any]) -> None:  # noqa: F811
    from flows.migrate import migrate

    t, out = _in_thread(migrate, environment="test", require_approval=True)
    run_id = _paused_run_id()
    waiting = _paused(run_id).message
    assert waiting.startswith("paused for approval: 2 migrations for test (version none -> 2)")
    assert "set Decision to approve or reject, type Your name" in waiting
    assert _latest(run_id, "approval-test").startswith("> **Waiting for a decision**")
    resume_flow_run(run_id, run_input={"decision": "approve", "approver": "bob", "comment": "CHG-42"})
    t.join(120)
    assert out[0].is_completed(), out[0]
    with psycopg.connect(env["db_url"]) as conn:
        rows = conn.execute("SELECT version, approved_by, comment FROM schema_migrations_history "
                            "ORDER BY id").fetchall()
    assert rows == [(1, "bob", "CHG-42"), (2, "bob", "CHG-42")]
    _all_sound(run_id)
    md = _latest(run_id, "migrate-test")
    _matches_db(md, env["db_url"])
    assert field(md, "approved by") == "bob (comment: CHG-42)"
    approval = _latest(run_id, "approval-test")
    assert approval.startswith("> **Decision: approved by bob (CHG-42)**")


def test_rejection_names_the_rejecter_and_comment_everywhere(env: dict[str, Any]) -> None:  # noqa: F811
    from flows.migrate import migrate

    t, out = _in_thread(migrate, environment="test", require_approval=True)
    run_id = _paused_run_id()
    resume_flow_run(run_id, run_input={"decision": "reject", "approver": "carol", "comment": "CHG-7 not ready"})
    t.join(120)
    state = out[0]
    assert state.is_failed() and "RunFailed: migrate test rejected: rejected by carol (CHG-7 not ready)" in state.message
    assert "Next: nothing was applied" in state.message
    assert _kinds(env) == ["approval.requested", "approval.rejected"]
    _all_sound(run_id)
    md = _latest(run_id, "migrate-test")
    assert md.startswith("# migrate on `test`: rejected")
    assert field(md, "approved by") == "nobody: rejected by carol (CHG-7 not ready)"
    assert field(md, "version now") == "none" and field(md, "dirty now") == "no"
    assert "| 1 | create_a | up |  | yes | not applied |" in md
    assert _latest(run_id, "approval-test").startswith("> **Decision: rejected by carol (CHG-7 not ready)**")


def test_a_retry_from_the_ui_completes_with_the_same_summary_line(env: dict[str, Any]) -> None:  # noqa: F811
    """A UI Retry sets the failed run AwaitingRetry and a worker runs it again in a new process
    (run_count 2): it ends Completed with the summary line a first run has, not without a message."""
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry

    import flows._common
    from flows.migrate import migrate

    migrate(environment="test", target_version=1)
    write_migration(env["dir"], 3, "alter_a", "-- Business justification: test\nALTER TABLE a ADD COLUMN x int;",
                    "-- Business justification: test\nALTER TABLE a DROP COLUMN IF EXISTS x;")
    blocker = psycopg.connect(env["db_url"])
    blocker.execute("LOCK TABLE a IN ACCESS SHARE MODE")  # apply of 3 times out on its lock: clean failure
    try:
        first = migrate(environment="test", return_state=True)
    finally:
        blocker.close()
    assert first.is_failed() and db_state(env["db_url"]) == [(2, False)]
    run_id = first.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(), force=True)
        flow_run = client.read_flow_run(run_id)
    flows._common._ATTEMPTS_HERE.discard(str(run_id))  # the worker's new process has seen no attempt
    again = run_flow(migrate, flow_run=flow_run, parameters={"environment": "test"}, return_type="state")
    assert again.is_completed(), again
    assert (again.message or "").startswith("migrate test succeeded. Now: database ")
    assert "at version 3, dirty: no" in (again.message or "")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).run_count == 2
    _matches_db(_latest(run_id, "migrate-test"), env["db_url"])


def test_lint_findings_name_files_as_the_alerts_do(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact's lint table names a file inside the checkout as ``migrations/...:line`` (as the
    terminal and the alerts do), not by the worker's absolute path; a file outside it keeps its path."""
    from flows._common import findings_md
    from migrator.lint import Finding, ValidationReport

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "migrations" / "000010_x.up.sql"
    outside = "/elsewhere/migrations/000011_y.up.sql"
    md = findings_md(ValidationReport(directory=str(tmp_path / "migrations"), findings=[
        Finding(severity="warning", rule="MIG117", file=str(inside), line=2, message="m"),
        Finding(severity="warning", rule="MIG113", file=outside, line=None, message="n"),
    ]))
    assert md.startswith("0 errors, 2 warnings\n\n")
    assert "| migrations/000010_x.up.sql:2 |" in md and str(tmp_path) not in md
    assert f"| {outside} |" in md
    assert not table_problems(md)
