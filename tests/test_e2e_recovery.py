"""On-call, end to end: a real ``prefect server`` (its UI, on PostgreSQL) and a process worker on
127.0.0.1, a real webhook receiver, headless Debian Chromium doing what the engineer does.

- approve then resume: ``migrate/prod`` pauses for approval; from the ``approval.requested`` alert's
  link the engineer approves with a change ticket -> ``000010_add_user_nickname`` fails half-way (the
  ADD COLUMN ran, the CREATE INDEX CONCURRENTLY names a misspelled column) -> Paused for recovery, ONE
  ``database.dirty`` page with the run's link -> the file is fixed on disk; once the form shows the
  fixed statement (it re-reads the file every few seconds) the engineer resumes from the alert's link ->
  Completed, prod at 10 clean, the approval's comment in the audit row.
- reject from the form: Failed, ``approval.rejected`` (no page), the artifacts name the rejecter
  and the comment.
- retry: after a lock timeout (the approval holds) and after a fixed file (approved again).
- leave_dirty (a warning, never "completed") then ``recover/prod`` reverts.
- the Deployments list's search finds a flow's deployments.

Every artifact version a run wrote must parse (every table). The UI actions of each path are counted
into docs/img/ui-actions.txt and the runbook's table; with ``UPDATE_SCREENSHOTS=1`` the file and the
screenshots in docs/img/ are rewritten, otherwise the file is checked. Browser tests skip without
/usr/bin/chromium (never ``playwright install``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from markdown_check import field, table_problems

from conftest import ROOT
from prefect_server import PREFECT_BIN, PrefectServer, running_server, running_worker
from ui_browser import Actions, browser_page, chromium
from webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]
IMG = ROOT / "docs" / "img"
SHOTS: dict[str, Path] = {}  # where this session's screenshots go (docs/img/ with UPDATE_SCREENSHOTS=1)


def shot(name: str) -> Path:
    """docs/img/<name> when UPDATE_SCREENSHOTS=1 (for docs/runbook.md), else the test's tmp folder."""
    if os.environ.get("UPDATE_SCREENSHOTS"):
        IMG.mkdir(parents=True, exist_ok=True)
        return IMG / name
    return SHOTS["tmp"] / name
BROKEN = """-- Migration: 000010_add_user_nickname
-- Business justification: clinicians asked to search patients by the name they go by.
-- Patient data affected: no

ALTER TABLE tbl_user ADD COLUMN IF NOT EXISTS nickname text;

CREATE INDEX CONCURRENTLY idx_user_nickname ON tbl_user (nicknam);
"""
DOWN = """-- Migration: 000010_add_user_nickname (down)
DROP INDEX CONCURRENTLY IF EXISTS idx_user_nickname;
ALTER TABLE tbl_user DROP COLUMN IF EXISTS nickname;
"""


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server with its UI, migrate/prod and recover/prod deployed from prefect.yaml."""
    with running_server(tmp_path_factory.mktemp("prefect-ui"), ui=True) as server:
        env = server.client_env(MIGRATOR_PROJECT_DIR=str(ROOT))
        for cmd in ([PREFECT_BIN, "work-pool", "create", "migrations", "--type", "process", "--overwrite"],
                    [PREFECT_BIN, "--no-prompt", "deploy", "--name", "migrate/prod", "--name", "recover/prod"]):
            r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
            assert r.returncode == 0, r.stdout + r.stderr
        yield server


@pytest.fixture
def prod(ui_server: PrefectServer, db_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A worker serving prod on this test's database, a copy of migrations/ plus the broken 10."""
    SHOTS["tmp"] = tmp_path
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", migrations)
    # the schema file a real pull request would refresh: this 10 cannot be applied anywhere (that is the
    # point), so no schema.sql can be written for it; without the file validate's MIG305 does not apply
    (migrations / "schema.sql").unlink()
    (migrations / "000010_add_user_nickname.up.sql").write_text(BROKEN)
    (migrations / "000010_add_user_nickname.down.sql").write_text(DOWN)
    # prod as committed, without the rehearsal: it would catch this misspelled column on a restored
    # copy before approval (flows.rehearsal). This test is about a failure that reaches production
    # anyway (data or lock contention only production has).
    deployments = tmp_path / "deployments"
    shutil.copytree(ROOT / "deployments", deployments)
    prod_yaml = deployments / "prod.yaml"
    prod_yaml.write_text(prod_yaml.read_text().replace("  enabled: true\n", "  enabled: false\n", 1))
    with WebhookReceiver() as hook:
        worker_env = {
            "ASKFRANK_PROD_DATABASE_URL": db_url,
            "BACKUP_URL": f"file://{tmp_path / 'backups'}",
            "WEBHOOK_URL": hook.url,
            "WEBHOOK_SECRET": "e2e-recovery-secret",
            "WEBHOOK_BACKOFF_BASE": "0.01",
            "MIGRATOR_PROJECT_DIR": str(ROOT),
            "MIGRATIONS_PATH": str(migrations),
            "MIGRATOR_DEPLOYMENTS_DIR": str(deployments),
        }
        with running_worker(ui_server, "migrations", cwd=ROOT, env=worker_env) as worker:
            yield {"server": ui_server, "api": ui_server.api_url, "db_url": db_url, "hook": hook,
                   "migrations": migrations, "worker": worker}


TX_BROKEN = BROKEN.replace("CONCURRENTLY ", "")  # transactional: the failure rolls everything back
UI_ACTIONS = IMG / "ui-actions.txt"
UI_PATHS = ("alert -> clean database (resume)", "approve", "reject", "retry", "retry after fixing the file")
UI_HEADER = ("UI actions the on-call engineer needs, measured in headless Chromium against a real `prefect server`\n"
             "(on PostgreSQL) and a process worker by tests/test_e2e_recovery.py: each navigation, click, choice\n"
             "and typed field is one. Rewritten with UPDATE_SCREENSHOTS=1; otherwise the tests check this file.\n")


@pytest.fixture
def page() -> Iterator[Any]:
    """A headless Chromium page (skipped without /usr/bin/chromium and python playwright)."""
    if chromium() is None:
        pytest.skip("Debian chromium or python playwright not installed (apt-get install -y chromium)")
    with browser_page(height=1700) as pg:
        yield pg


def _events(hook: WebhookReceiver) -> list[str]:
    return [str(r.header("X-Webhook-Event")) for r in hook.requests]


def _run(api: str, run_id: str) -> dict[str, Any]:
    return dict(_api("GET", f"{api}/flow_runs/{run_id}").json())


def _wait(api: str, run_id: str, want: str, pause_key: str | None = None, timeout: float = 240) -> dict[str, Any]:
    """The run once it is in state ``want`` (a Paused run: with ``pause_key``, and a state message that
    says what it waits for); fails at once when the run ends otherwise."""
    deadline = time.monotonic() + timeout
    fr: dict[str, Any] = {}
    while time.monotonic() < deadline:
        fr = _run(api, run_id)
        st = fr.get("state") or {}
        if st.get("type") == want and (pause_key is None or (st.get("state_details") or {}).get("pause_key") == pause_key):
            if want == "PAUSED":
                waits_for = "approval" if pause_key == "approval" else "recovery"
                assert str(st.get("message")).startswith(f"paused for {waits_for}: "), st.get("message")
                assert "Click Resume" in str(st.get("message")), st.get("message")
            return fr
        if st.get("type") in ("FAILED", "CRASHED", "CANCELLED", "COMPLETED") and st.get("type") != want:
            raise AssertionError(f"run ended {st.get('type')}: {st.get('message')}")
        time.sleep(1)
    st = fr.get("state") or {}
    raise AssertionError(f"run never reached {want} {pause_key or ''}: {st.get('type')} "
                         f"(pause key {(st.get('state_details') or {}).get('pause_key')}): {st.get('message')}")


def _start(api: str, deployment: str = "migrate/prod") -> str:
    dep = _api("GET", f"{api}/deployments/name/{deployment}").json()
    fr = _api("POST", f"{api}/deployments/{dep['id']}/create_flow_run", json={}).json()
    return str(fr["id"])


def _api(method: str, url: str, **kw: Any) -> httpx.Response:
    """One API call, retried on 5xx (a loaded server may answer 503 for a moment; issue 9.8)."""
    for attempt in range(10):
        r = httpx.request(method, url, timeout=15, **kw)
        if r.status_code < 500:
            return r
        time.sleep(0.5 * (attempt + 1))
    return r


def _resume(api: str, run_id: str, run_input: dict[str, Any]) -> None:
    r = _api("POST", f"{api}/flow_runs/{run_id}/resume", json={"run_input": run_input})
    assert r.status_code in (200, 201) and r.json().get("status") == "ACCEPT", r.text


def _state(url: str) -> list[tuple[int, bool]]:
    with psycopg.connect(url) as conn:
        return [(int(v), bool(d)) for v, d in conn.execute("SELECT version, dirty FROM schema_migrations")]


def _column(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'tbl_user' "
                            "AND column_name = 'nickname'").fetchone() is not None


def _link(hook: WebhookReceiver, event: str, count: int) -> str:
    """The **Open flow run** button of the last ``event`` alert, once ``count`` alerts arrived."""
    found = [r for r in hook.wait_for(count, timeout=60) if r.header("X-Webhook-Event") == event]
    assert found, _events(hook)
    slack = found[-1].json()
    buttons = [e["url"] for b in slack["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons, slack
    return str(buttons[0])


def _artifacts(api: str, run_id: str) -> list[dict[str, Any]]:
    """Every version of every artifact the run wrote, oldest first."""
    arts = _api("POST", f"{api}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [run_id]}}, "sort": "CREATED_DESC"}).json()
    return list(reversed(arts))


def _latest(api: str, run_id: str, key: str) -> dict[str, Any]:
    found = [a for a in _artifacts(api, run_id) if a["key"] == key]
    assert found, f"no artifact {key} of run {run_id}: {[a['key'] for a in _artifacts(api, run_id)]}"
    return found[-1]


def _all_tables_parse(api: str, run_id: str) -> None:
    """Every table of every artifact version the run wrote is GitHub-flavoured markdown."""
    arts = _artifacts(api, run_id)
    assert arts
    for a in arts:
        assert table_problems(str(a["data"])) == [], (a["key"], a["data"])


def _to_recovery_pause(p: dict[str, Any]) -> tuple[str, str]:
    """Start migrate/prod, approve through the API, wait for the recovery pause; (run id, the page's link)."""
    api, hook = p["api"], p["hook"]
    run_id = _start(api)
    _wait(api, run_id, "PAUSED", "approval")
    _resume(api, run_id, {"decision": "approve", "approver": "alice@askfrank.example", "comment": "CHG-42"})
    _wait(api, run_id, "PAUSED", "recovery-1")
    assert _state(p["db_url"]) == [(10, True)] and _column(p["db_url"])
    link = _link(hook, "database.dirty", 2)
    assert _events(hook) == ["approval.requested", "database.dirty"]
    assert run_id in link  # the page links the paused run
    return run_id, link


def _form_description(api: str, run_id: str, pause_key: str, *needles: str, timeout: float = 90) -> str:
    """The paused run's form description once it contains every needle: the run re-reads the migration
    file every 3 s (flows.pause.YOUNG_REFRESH_SECONDS), and a resume submitted before the form showed the
    change runs nothing and brings the form back (by design), so the engineer, and this test, submit
    only once the form shows what resume will run."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        r = _api("GET", f"{api}/flow_runs/{run_id}/input/paused-{pause_key}-description")
        text = json.loads(r.text) if r.status_code == 200 else ""
        if all(n in text for n in needles):
            return text
        time.sleep(1)
    raise AssertionError(f"the form never showed {needles}; it shows:\n{text}")


def _open_form(page: Any, link: str, act: Actions) -> Any:
    """Open the alert's link, click Resume: the run's form (a dialog)."""
    page.goto(link)
    act("open the link in the alert")
    page.get_by_role("button", name="Resume").first.click()
    act("click Resume")
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def _choose(dialog: Any, field: str, value: str, act: Actions) -> None:
    """Prefect's select (p-select, the form's only one): open the list, click the option."""
    control = dialog.locator(".p-select-button__control").first
    control.click()
    option = dialog.page.get_by_role("option", name=value, exact=True)
    try:
        option.first.wait_for(state="visible", timeout=3_000)
    except Exception:  # headless: the click may only focus the control; the list opens with the arrow key
        control.press("ArrowDown")
    act(f"open the {field} list")
    option.first.click()
    act(f"pick {value}")
    control.get_by_text(value, exact=True).wait_for(timeout=10_000)  # the choice took before going on


def _type(dialog: Any, nth: int, text: str, what: str, act: Actions) -> None:
    dialog.locator("textarea, input[type=text]").nth(nth).fill(text)
    act(what)


def _submit(dialog: Any, act: Actions, form: str) -> None:
    """Submit; the form closes once Prefect accepted the input (a loaded machine may take a while).
    If it stays open, say what it shows (a validation message, the choice) instead of a later timeout."""
    dialog.get_by_role("button", name="Submit").click()
    act("click Submit")
    try:
        dialog.wait_for(state="hidden", timeout=60_000)
    except Exception as exc:
        shown = dialog.inner_text(timeout=5_000) if dialog.count() else "(gone)"
        dialog.page.screenshot(path=str(shot(f"{form}-form-not-submitted.png")), full_page=True)
        raise AssertionError(f"the {form} form did not close after Submit; it shows:\n{shown}") from exc


def _sections(text: str) -> dict[str, str]:
    """ui-actions.txt by path: ``## <path>: N UI actions`` and its numbered lines."""
    out: dict[str, str] = {}
    for part in text.split("\n## ")[1:]:
        out[part.split(": ", 1)[0]] = "## " + part.rstrip("\n") + "\n"
    return out


def _record(path: str, act: Actions) -> None:
    """The measured UI actions of one path into docs/img/ui-actions.txt (UPDATE_SCREENSHOTS=1), or
    checked against it and against the runbook's table (so neither goes stale)."""
    required = [a for a in act.done if not a.endswith("(optional)")]
    extra = act.count - len(required)
    section = (f"## {path}: {len(required)} UI actions" + (f" (+{extra} optional)" if extra else "") + "\n"
               + "".join(f"{i}. {a}\n" for i, a in enumerate(act.done, 1)))
    print(section)
    sections = _sections(UI_ACTIONS.read_text()) if UI_ACTIONS.exists() else {}
    if os.environ.get("UPDATE_SCREENSHOTS"):
        sections[path] = section
        UI_ACTIONS.write_text(UI_HEADER + "".join("\n" + sections[p] for p in UI_PATHS if p in sections))
        return
    assert sections.get(path) == section, (f"docs/img/ui-actions.txt is not what was measured for {path!r}; "
                                           f"rerun with UPDATE_SCREENSHOTS=1 and update docs/runbook.md:\n{section}")
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert f"| {path} | {len(required)} |" in runbook, f"docs/runbook.md's UI actions table: {path} is {len(required)}"


def _assert_audit(url: str, action: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT direction, action, success, approved_by, comment FROM schema_migrations_history "
                            "WHERE version = 10 ORDER BY id").fetchall()
    assert rows[0] == ("up", None, False, "alice@askfrank.example", "CHG-42"), rows  # the approval's comment
    assert [r[:4] for r in rows[1:]] == [("recover", action, True, "bob@askfrank.example")], rows


def test_approve_and_resume_from_the_alerts_in_the_browser(prod: dict[str, Any], page: Any) -> None:
    api, hook, url, ui = prod["api"], prod["hook"], prod["db_url"], prod["server"].ui_url
    run_id = _start(api)
    _wait(api, run_id, "PAUSED", "approval")
    link = _link(hook, "approval.requested", 1)
    assert run_id in link
    act = Actions()
    dialog = _open_form(page, link, act)
    dialog.get_by_text("migrations for prod", exact=False).first.wait_for()
    _choose(dialog, "Decision", "approve", act)
    _type(dialog, 0, "alice@askfrank.example", "type Your name", act)
    _type(dialog, 1, "CHG-42", "type the change ticket in Comment (optional)", act)
    _submit(dialog, act, "approval")
    _record("approve", act)

    _wait(api, run_id, "PAUSED", "recovery-1")
    assert _state(url) == [(10, True)] and _column(url)
    link = _link(hook, "database.dirty", 2)
    assert _events(hook) == ["approval.requested", "database.dirty"] and run_id in link
    slack = next(r.json() for r in hook.requests if r.header("X-Webhook-Event") == "database.dirty")
    assert "nicknam" in slack["text"] and "000010_add_user_nickname.up.sql:7" in str(slack)
    assert _latest(api, run_id, "approval-prod")["data"].startswith(
        "> **Decision: approved by alice@askfrank.example (CHG-42)**")
    incident = _latest(api, run_id, "incident-prod")
    page.goto(f"{ui}/artifacts/artifact/{incident['id']}")
    page.get_by_text("Choose an action").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shot("incident-artifact.png")), full_page=True)

    (prod["migrations"] / "000010_add_user_nickname.up.sql").write_text(BROKEN.replace("(nicknam)", "(nickname)"))
    described = _form_description(api, run_id, "recovery-1", "changed on the worker since this run paused",
                                  "`CREATE INDEX CONCURRENTLY idx_user_nickname ON tbl_user (nickname)`")
    digest = described.split("(nickname)` | `", 1)[1][:12]  # the sha256 the form shows for the fixed statement
    act = Actions()
    dialog = _open_form(page, link, act)
    dialog.get_by_text("changed on the worker since this run paused", exact=False).wait_for()
    assert digest in dialog.inner_text()  # what resume will run, as the engineer sees it
    _choose(dialog, "Action", "resume", act)
    _type(dialog, 0, "bob@askfrank.example", "type your name in Engineer", act)
    page.wait_for_timeout(500)
    dialog.screenshot(path=str(shot("recovery-form.png")))
    _submit(dialog, act, "recovery")
    _record("alert -> clean database (resume)", act)

    fr = _wait(api, run_id, "COMPLETED")
    assert "version 10, dirty: no" in fr["state"]["message"], fr["state"]["message"]
    assert _state(url) == [(10, False)]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'idx_user_nickname'").fetchone()
    _assert_audit(url, "resume")
    hook.wait_for(3, timeout=30)
    assert _events(hook) == ["approval.requested", "database.dirty", "recovery.completed"]
    _all_tables_parse(api, run_id)
    md = _latest(api, run_id, "migrate-prod")["data"]
    assert field(md, "version now") == "10" and field(md, "dirty now") == "no", md
    assert field(md, "approved by") == "alice@askfrank.example (comment: CHG-42)", md


def test_reject_in_the_browser(prod: dict[str, Any], page: Any) -> None:
    api, hook, url, ui = prod["api"], prod["hook"], prod["db_url"], prod["server"].ui_url
    run_id = _start(api)
    _wait(api, run_id, "PAUSED", "approval")
    act = Actions()
    dialog = _open_form(page, _link(hook, "approval.requested", 1), act)
    dialog.get_by_text("migrations for prod", exact=False).first.wait_for()
    _choose(dialog, "Decision", "reject", act)
    _type(dialog, 0, "carol@askfrank.example", "type Your name", act)
    _type(dialog, 1, "CHG-7 not ready", "type the reason in Comment (optional)", act)
    _submit(dialog, act, "approval")
    _record("reject", act)

    fr = _wait(api, run_id, "FAILED")
    assert "rejected by carol@askfrank.example (CHG-7 not ready)" in fr["state"]["message"], fr["state"]["message"]
    hook.wait_for(2, timeout=30)
    assert _events(hook) == ["approval.requested", "approval.rejected"]  # nobody is paged
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('tbl_user')").fetchone() == (None,)  # nothing applied
    _all_tables_parse(api, run_id)
    art = _latest(api, run_id, "migrate-prod")
    assert field(art["data"], "approved by") == "nobody: rejected by carol@askfrank.example (CHG-7 not ready)"
    assert field(art["data"], "version now") == "none" and field(art["data"], "dirty now") == "no"
    assert _latest(api, run_id, "approval-prod")["data"].startswith(
        "> **Decision: rejected by carol@askfrank.example (CHG-7 not ready)**")
    page.goto(f"{ui}/artifacts/artifact/{art['id']}")
    page.get_by_text("rejected by carol@askfrank.example", exact=False).first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shot("rejected-artifact.png")), full_page=True)


def _retry(page: Any, link: str, act: Actions) -> None:
    page.goto(link)
    act("open the link in the alert")
    page.get_by_role("button", name="Retry").first.click()
    act("click Retry")
    modal = page.get_by_role("dialog")
    modal.get_by_role("button", name="Retry").click()
    act("click Retry in the confirmation")
    modal.wait_for(state="hidden", timeout=30_000)


def test_retry_after_a_lock_timeout_in_the_browser(prod: dict[str, Any], page: Any) -> None:
    """10 times out on its lock behind a long transaction (rolled back, clean at 9); the transaction
    ends; Retry in the UI: the same files, so the approval of the first attempt holds."""
    from migrator.config import Settings
    from migrator.engine import Migrator

    api, hook, url = prod["api"], prod["hook"], prod["db_url"]
    up = prod["migrations"] / "000010_add_user_nickname.up.sql"
    up.write_text(TX_BROKEN.replace("(nicknam)", "(nickname)"))
    Migrator(Settings(database_url=url, migrations_path=prod["migrations"])).up(steps=9)
    blocker = psycopg.connect(url)
    blocker.execute("LOCK TABLE tbl_user IN ACCESS SHARE MODE")  # a long report query, say
    try:
        run_id = _start(api)
        _wait(api, run_id, "PAUSED", "approval")
        _resume(api, run_id, {"decision": "approve", "approver": "alice@askfrank.example", "comment": "CHG-42"})
        fr = _wait(api, run_id, "FAILED")
    finally:
        blocker.close()
    assert _state(url) == [(9, False)] and not _column(url), fr["state"]["message"]
    runs_before = fr["run_count"]
    act = Actions()
    _retry(page, _link(hook, "migration.failed", 2), act)
    _record("retry", act)
    fr = _wait(api, run_id, "COMPLETED")  # no second approval pause
    assert fr["run_count"] > runs_before
    assert fr["state"]["message"].startswith("migrate prod succeeded. Now: database "), fr["state"]["message"]
    assert _state(url) == [(10, False)] and _column(url)
    hook.wait_for(3, timeout=30)
    assert _events(hook) == ["approval.requested", "migration.failed", "migration.succeeded"]
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT success, approved_by, comment FROM schema_migrations_history "
                            "WHERE version = 10 ORDER BY id").fetchall()
    assert rows[-1] == (True, "alice@askfrank.example", "CHG-42"), rows
    _all_tables_parse(api, run_id)
    assert _latest(api, run_id, "approval-prod")["data"].startswith(
        "> **Decision: approved by alice@askfrank.example (CHG-42)** - applying 000010_add_user_nickname (a retry")


def test_retry_after_fixing_the_file_in_the_browser(prod: dict[str, Any], page: Any) -> None:
    """A transactional migration fails (rolled back, clean at 9); the file is fixed; Retry in the UI:
    the file is not what was approved, so the run asks for approval again."""
    api, hook, url = prod["api"], prod["hook"], prod["db_url"]
    up = prod["migrations"] / "000010_add_user_nickname.up.sql"
    up.write_text(TX_BROKEN)
    run_id = _start(api)
    _wait(api, run_id, "PAUSED", "approval")
    _resume(api, run_id, {"decision": "approve", "approver": "alice@askfrank.example", "comment": "CHG-42"})
    fr = _wait(api, run_id, "FAILED")
    assert _state(url) == [(9, False)] and not _column(url), fr["state"]["message"]
    runs_before = fr["run_count"]
    link = _link(hook, "migration.failed", 2)
    up.write_text(TX_BROKEN.replace("(nicknam)", "(nickname)"))  # the fix reached the worker
    act = Actions()
    _retry(page, link, act)
    # the retry runs the flow again: the fixed file is not what was approved, so it asks again
    _wait(api, run_id, "PAUSED", "approval")  # AwaitingRetry, the worker runs it again, it pauses
    assert _link(hook, "approval.requested", 3) == link
    page.get_by_role("button", name="Resume").first.click(timeout=60_000)  # the open page shows it by itself
    act("click Resume")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("1 migration for prod: version 9 → 10", exact=False).first.wait_for()
    _choose(dialog, "Decision", "approve", act)
    _type(dialog, 0, "alice@askfrank.example", "type Your name", act)
    _submit(dialog, act, "approval")
    _record("retry after fixing the file", act)
    fr = _wait(api, run_id, "COMPLETED")
    assert fr["run_count"] > runs_before  # the same flow run, run again
    assert fr["state"]["message"].startswith("migrate prod succeeded. Now: database "), fr["state"]["message"]
    assert _state(url) == [(10, False)] and _column(url)
    _all_tables_parse(api, run_id)
    md = _latest(api, run_id, "migrate-prod")["data"]
    assert field(md, "version now") == "10" and field(md, "dirty now") == "no", md
    assert field(md, "approved by") == "alice@askfrank.example", md


def test_leave_dirty_then_revert_with_recover(prod: dict[str, Any], page: Any) -> None:
    """leave_dirty, chosen in the form, ends the run Failed with a warning (never "completed");
    recover/prod then reverts (answered through the API)."""
    from migrator.alerts.notify import EVENTS

    api, hook, url = prod["api"], prod["hook"], prod["db_url"]
    run_id, link = _to_recovery_pause(prod)
    act = Actions()
    dialog = _open_form(page, link, act)
    _choose(dialog, "Action", "leave_dirty", act)
    _type(dialog, 0, "bob@askfrank.example", "type your name in Engineer", act)
    _type(dialog, 1, "INC-9 tomorrow", "type a ticket in Comment (optional)", act)
    _submit(dialog, act, "recovery")
    fr = _wait(api, run_id, "FAILED")
    assert "left dirty by bob@askfrank.example" in fr["state"]["message"], fr["state"]["message"]
    recover_id = _api("GET", f"{api}/deployments/name/recover/prod").json()["id"]
    assert f"/deployments/deployment/{recover_id}/run?parameters=" in fr["state"]["message"]  # next: its form
    assert _state(url) == [(10, True)]
    hook.wait_for(3, timeout=30)
    assert _events(hook) == ["approval.requested", "database.dirty", "recovery.left_dirty"]
    left = hook.requests[2].json()
    assert EVENTS["recovery.left_dirty"].severity == "warning"
    assert left["blocks"][0]["text"]["text"].startswith(":warning: Recovery: database left dirty"), left
    assert "completed" not in left["text"].lower(), left["text"]
    _all_tables_parse(api, run_id)
    md = _latest(api, run_id, "migrate-prod")["data"]
    assert field(md, "version now") == "10" and field(md, "dirty now") == "yes", md

    rec_id = _start(api, "recover/prod")
    _wait(api, rec_id, "PAUSED", "recovery-1")
    _resume(api, rec_id, {"action": "revert", "engineer": "erin@askfrank.example", "comment": "INC-9"})
    fr = _wait(api, rec_id, "COMPLETED")
    assert "version 9, dirty: no" in fr["state"]["message"], fr["state"]["message"]
    assert _state(url) == [(9, False)] and not _column(url)  # the partial column is gone
    hook.wait_for(4, timeout=30)
    assert _events(hook)[-1] == "recovery.completed"
    _all_tables_parse(api, rec_id)
    assert "| recovered | 9 | no |" in _latest(api, rec_id, "incident-prod")["data"]


def test_the_deployments_search_finds_a_flows_deployments(prod: dict[str, Any], page: Any) -> None:
    """Deployments are named after the environment (``prod``) under each flow, so the Deployments list
    shows seven ``prod`` rows with the flow's name in small type under each; the list's search matches
    the flow's name too (``flow_or_deployment_name``): typing ``recover`` leaves recover's deployments."""
    ui = prod["server"].ui_url
    page.goto(f"{ui}/deployments")
    page.get_by_text("2 Deployments").wait_for()
    page.get_by_placeholder("Search deployments").fill("recover")
    page.get_by_text("1 Deployment", exact=True).wait_for()
    row = page.locator("tbody tr")
    assert row.count() == 1 and row.first.inner_text().split()[:2] == ["prod", "recover"], row.first.inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shot("deployments-search.png")), clip={"x": 0, "y": 0, "width": 1400, "height": 420})
