"""Recovery decided in the run, under prefect_test_harness with real PostgreSQL, S3 (moto) and a
webhook receiver: a CREATE INDEX CONCURRENTLY fails after an ADD COLUMN ran; the migrate run pages
once and pauses with the recovery form; the answer resumes, reverts, or times out."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from prefect.flow_runs import resume_flow_run
from test_approval import _paused_form
from test_flows import (  # noqa: F401 - fixtures
    _paused_run_id,
    artifact,
    db_state,
    env,
    events,
    hook,
    s3,
)
from test_recovery import DOWN_SAFE, DOWN_UNSAFE, UP_BROKEN, UP_FIXED

from conftest import write_migration
from migrator.execute.state import statement_hash

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(300)]


@pytest.fixture
def broken(env: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    write_migration(env["dir"], 3, "add_contact_email", UP_BROKEN.replace("contacts", "a"),
                    DOWN_SAFE.replace("contacts", "a"))
    return env


def _start(**kw: Any) -> tuple[threading.Thread, list[Any]]:
    from flows.migrate import migrate

    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(migrate(environment="test", return_state=True, **kw)))
    t.start()
    return t, out


def _kinds(e: dict[str, Any]) -> list[str]:
    return [ev["event"] for ev in events(e["hook"])]


def test_dirty_apply_pauses_then_resume_completes(broken: dict[str, Any]) -> None:
    t, out = _start(recovery_timeout_seconds=120)
    run_id = _paused_run_id()
    assert db_state(broken["db_url"]) == [(3, True)]
    assert _kinds(broken) == ["database.dirty"]  # one page, before the pause
    ev = events(broken["hook"])[0]
    assert ev["failing_version"] == 3 and ev["dirty"] is True and 'column "emial" does not exist' in ev["error"]
    assert ev["file"].endswith("000003_add_contact_email.up.sql:4") and "Resume" in ev["message"]
    incident = artifact("incident-test")
    assert "| 1 | done | 2 |" in incident and "| 2 | **FAILED** | 4 |" in incident and "| 3 | not run | 6 |" in incident
    assert "`resume`" in incident and "`revert`" in incident
    _, form = _paused_form(run_id)
    assert "## What resume will run" in form and "(emial)" in form  # the file as it was at the pause
    assert "changed on the worker" not in form
    (broken["dir"] / "000003_add_contact_email.up.sql").write_text(UP_FIXED.replace("contacts", "a"))
    form = _form_once(run_id, lambda text: "idx_a_email ON a (email)" in text)  # re-read while the run waits
    assert "The migration file changed on the worker since this run paused" in form
    fixed = "CREATE INDEX CONCURRENTLY idx_a_email ON a (email)"
    assert f"| 2 | 4 | `{fixed}` | `{statement_hash(fixed)[:12]}` |" in form
    resume_flow_run(run_id, run_input={"action": "resume", "engineer": "alice@askfrank.example", "comment": "INC-1"})
    t.join(120)
    assert out and out[0].is_completed(), out
    assert "version 3, dirty: no" in (out[0].message or "")
    assert db_state(broken["db_url"]) == [(3, False)]
    assert {"idx_a_email", "idx_a_email_lower"} <= indexes_of(broken["db_url"])
    assert _kinds(broken) == ["database.dirty", "recovery.completed"]
    done = events(broken["hook"])[1]
    assert done["dirty"] is False and done["version_after"] == 3 and done["details"]["engineer"] == "alice@askfrank.example"
    md = artifact("migrate-test")
    assert "recovered (resume by alice@askfrank.example)" in md and "| dirty now | no |" in md
    with psycopg.connect(broken["db_url"]) as conn:
        rows = conn.execute("SELECT direction, action, success, approved_by FROM schema_migrations_history "
                            "WHERE version = 3 ORDER BY id").fetchall()
    assert rows == [("up", None, False, None), ("recover", "resume", True, "alice@askfrank.example")]


def _form_once(run_id: Any, ok: Any, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            _, text = _paused_form(run_id)
        except RuntimeError:  # between a submit and the next pause the run is Running: no form
            time.sleep(0.5)
            continue
        if ok(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"the paused form never showed it; it shows:\n{text}")


def test_resume_submitted_right_after_the_file_changed_shows_the_form_again(
        broken: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitted before the form was re-read: resume does not run statements nobody saw; the form comes
    back saying what resume would run now, and the second submit runs exactly that."""
    import flows.pause

    # no re-read of the file before the submit, however late this test sees the pause
    monkeypatch.setattr(flows.pause, "YOUNG_REFRESH_SECONDS", 120.0)
    t, out = _start(recovery_timeout_seconds=120)
    run_id = _paused_run_id()
    (broken["dir"] / "000003_add_contact_email.up.sql").write_text(UP_FIXED.replace("contacts", "a"))
    resume_flow_run(run_id, run_input={"action": "resume", "engineer": "alice"})
    form = _form_once(run_id, lambda text: "resume not run" in text)
    assert "changed on the worker after the form was shown" in form and "idx_a_email ON a (email)" in form
    assert db_state(broken["db_url"]) == [(3, True)]  # nothing ran
    assert _kinds(broken) == ["database.dirty"]  # and nothing was alerted
    resume_flow_run(_paused_run_id(), run_input={"action": "resume", "engineer": "alice"})
    t.join(120)
    assert out and out[0].is_completed(), out
    assert db_state(broken["db_url"]) == [(3, False)]
    assert _kinds(broken) == ["database.dirty", "recovery.completed"]


def indexes_of(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'a'")}


def test_refused_revert_asks_again_then_revert_removes_the_partial_column(broken: dict[str, Any]) -> None:
    down = broken["dir"] / "000003_add_contact_email.down.sql"
    down.write_text(DOWN_UNSAFE.replace("contacts", "a"))
    t, out = _start(recovery_timeout_seconds=120)
    run_id = _paused_run_id()
    resume_flow_run(run_id, run_input={"action": "revert", "engineer": "bob"})
    deadline = time.monotonic() + 60
    while "recovery.refused" not in _kinds(broken) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _kinds(broken) == ["database.dirty", "recovery.refused"]  # refused, not failed: nothing ran
    refused = events(broken["hook"])[1]
    assert "not safe on a partial state" in refused["message"] and refused["severity"] == "warning"
    assert "click Resume" in refused["details"]["next_step"]  # the form comes back in this run
    assert db_state(broken["db_url"]) == [(3, True)]
    down.write_text(DOWN_SAFE.replace("contacts", "a"))
    run_id = _paused_run_id()  # the form is back, with the refusal on top
    resume_flow_run(run_id, run_input={"action": "revert", "engineer": "bob"})
    t.join(120)
    assert out and out[0].is_completed()
    assert db_state(broken["db_url"]) == [(2, False)]
    with psycopg.connect(broken["db_url"]) as conn:
        cols = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name = 'a'")}
    assert cols == {"id"}  # the partial column is gone
    assert _kinds(broken) == ["database.dirty", "recovery.refused", "recovery.completed"]


def test_recovery_timeout_leaves_the_database_and_says_so(broken: dict[str, Any]) -> None:
    from flows.migrate import migrate

    state = migrate(environment="test", recovery_timeout_seconds=3, return_state=True)
    assert state.is_failed()
    assert db_state(broken["db_url"]) == [(3, True)]
    msg = state.message or ""
    assert "DIRTY at version 3" in msg and "emial" in msg and "recover/test" in msg
    assert _kinds(broken) == ["database.dirty"]  # the timeout is not a second page
    md = artifact("migrate-test")
    assert "| dirty now | yes |" in md and "| version now | 3 |" in md


def test_recover_deployment_flow_and_refused_force(broken: dict[str, Any]) -> None:
    from flows.force import force
    from flows.migrate import migrate
    from flows.recover import recover

    migrate(environment="test", recovery_timeout_seconds=2, return_state=True)
    assert db_state(broken["db_url"]) == [(3, True)]
    state = force(environment="test", version=2, expected_current=5, return_state=True)
    assert state.is_failed() and "refusing to force" in (state.message or "")
    assert _kinds(broken)[-1] == "migration.failed"  # force alerts its failures now
    result = recover(environment="test", action="mark_applied", engineer="carol", comment="done by hand")
    assert result["outcome"] == "recovered (mark_applied by carol)" and result["dirty_after"] is False
    assert db_state(broken["db_url"]) == [(3, False)]
    assert _kinds(broken)[-1] == "recovery.completed"
    result = recover(environment="test")
    assert result["outcome"] == "nothing to recover"
    assert "| version | none |" not in artifact("incident-test")
