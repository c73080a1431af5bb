"""On-call, end to end: a real ``prefect server`` (with its UI) and a process worker on 127.0.0.1.

``migrate/prod`` -> approval given through the API (``POST /flow_runs/{id}/resume`` with run_input)
-> ``000010_add_user_nickname`` fails half-way (the ADD COLUMN ran, the CREATE INDEX CONCURRENTLY
names a misspelled column) -> the run is Paused awaiting recovery, ONE ``database.dirty`` page
carrying the run's URL -> the file is fixed on disk -> in headless Chromium: open the alert's link,
Resume, choose ``resume``, type the engineer, Submit -> Completed, prod at 10 clean, audit rows, one
``database.dirty`` and one ``recovery.completed``. The same with ``revert`` through the API (9 clean,
the partial column gone). Screenshots of the approval form, the recovery form and the incident
artifact go to docs/img/ (docs/runbook.md shows them).
"""

from __future__ import annotations

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

from conftest import ROOT
from prefect_server import PREFECT_BIN, PrefectServer, running_server, running_worker
from ui_browser import Actions, browser_page, chromium, open_resume_dialog
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(900)
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


def _events(hook: WebhookReceiver) -> list[str]:
    return [str(r.header("X-Webhook-Event")) for r in hook.requests]


def _run(api: str, run_id: str) -> dict[str, Any]:
    return dict(_api("GET", f"{api}/flow_runs/{run_id}").json())


def _wait(api: str, run_id: str, want: str, pause_key: str | None = None, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    fr: dict[str, Any] = {}
    while time.monotonic() < deadline:
        fr = _run(api, run_id)
        st = fr.get("state") or {}
        if st.get("type") == want and (pause_key is None or (st.get("state_details") or {}).get("pause_key") == pause_key):
            return fr
        if st.get("type") in ("FAILED", "CRASHED", "CANCELLED", "COMPLETED") and st.get("type") != want:
            raise AssertionError(f"run ended {st.get('type')}: {st.get('message')}")
        time.sleep(1)
    st = fr.get("state") or {}
    raise AssertionError(f"run never reached {want} {pause_key or ''}: {st.get('type')} "
                         f"(pause key {(st.get('state_details') or {}).get('pause_key')}): {st.get('message')}")


def _start_migrate(api: str) -> str:
    dep = _api("GET", f"{api}/deployments/name/migrate/prod").json()
    fr = _api("POST", f"{api}/deployments/{dep['id']}/create_flow_run", json={}).json()
    return str(fr["id"])


def _api(method: str, url: str, **kw: Any) -> httpx.Response:
    """One API call, retried on 5xx (the test server's SQLite answers 503 under load; issue 9.8)."""
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


def _to_recovery_pause(p: dict[str, Any], page: Any | None = None) -> tuple[str, str]:
    """Start migrate/prod, approve through the API, wait for the recovery pause; returns (run id, alert link)."""
    api, hook = p["api"], p["hook"]
    run_id = _start_migrate(api)
    _wait(api, run_id, "PAUSED", "approval")
    if page is not None:
        _shoot_form(page, p["server"].ui_url, run_id, shot("e2e-approval-form.png"))
    _resume(api, run_id, {"decision": "approve", "approver": "alice@askfrank.example", "comment": "CHG-42"})
    _wait(api, run_id, "PAUSED", "recovery-1")
    assert _state(p["db_url"]) == [(10, True)] and _column(p["db_url"])
    (page_req,) = [r for r in hook.wait_for(2, timeout=30) if r.header("X-Webhook-Event") == "database.dirty"]
    assert _events(hook) == ["approval.requested", "database.dirty"]
    slack = page_req.json()
    buttons = [e["url"] for b in slack["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons and run_id in buttons[0], slack  # the page links the paused run
    assert "nicknam" in slack["text"] and "000010_add_user_nickname.up.sql:7" in str(slack)
    return run_id, buttons[0]


def _shoot_form(page: Any, ui: str, run_id: str, path: Path) -> None:
    dialog = open_resume_dialog(page, ui, run_id)
    dialog.wait_for()
    page.wait_for_timeout(800)
    dialog.screenshot(path=str(path))
    page.get_by_role("button", name="Close").click()


def _assert_audit(url: str, action: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT direction, action, success, approved_by FROM schema_migrations_history "
                            "WHERE version = 10 ORDER BY id").fetchall()
    assert rows == [("up", None, False, "alice@askfrank.example"), ("recover", action, True, "bob@askfrank.example")]


def test_resume_from_the_alert_in_the_browser(prod: dict[str, Any]) -> None:
    api, hook, url = prod["api"], prod["hook"], prod["db_url"]
    have_browser = chromium() is not None
    if not have_browser:
        run_id, link = _to_recovery_pause(prod)
    with browser_page(height=1700) if have_browser else _nothing() as page:
        if have_browser:
            run_id, link = _to_recovery_pause(prod, page)
            arts = _api("POST", f"{api}/artifacts/filter", json={
                "artifacts": {"key": {"any_": ["incident-prod"]}}, "sort": "CREATED_DESC", "limit": 1}).json()
            page.goto(f"{prod['server'].ui_url}/artifacts/artifact/{arts[0]['id']}")
            page.get_by_text("Choose an action").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shot("incident-artifact.png")), full_page=True)
        fixed = (prod["migrations"] / "000010_add_user_nickname.up.sql")
        fixed.write_text(BROKEN.replace("(nicknam)", "(nickname)"))  # the fix reached the worker
        if have_browser:
            act = Actions()
            page.goto(link)
            act("open the link in the alert")
            page.get_by_role("button", name="Resume").first.click()
            act("click Resume")
            dialog = page.get_by_role("dialog")
            _choose(dialog, "resume", act)
            dialog.locator("textarea, input[type=text]").first.fill("bob@askfrank.example")
            act("type your name")
            page.wait_for_timeout(500)
            dialog.screenshot(path=str(shot("recovery-form.png")))
            dialog.get_by_role("button", name="Submit").click()
            act("click Submit")
            _submitted(dialog)
            record = (f"{act.count} UI actions from the alert to clean prod (measured in headless Chromium):\n"
                      + "".join(f"{i}. {a}\n" for i, a in enumerate(act.done, 1)))
            print(record)
            shot("ui-actions.txt").write_text(record)
        else:
            _resume(api, run_id, {"action": "resume", "engineer": "bob@askfrank.example"})
    fr = _wait(api, run_id, "COMPLETED")
    assert "version 10, dirty: no" in fr["state"]["message"], fr["state"]["message"]
    assert _state(url) == [(10, False)]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'idx_user_nickname'").fetchone()
    _assert_audit(url, "resume")
    hook.wait_for(3, timeout=30)
    kinds = _events(hook)
    assert kinds.count("database.dirty") == 1 and kinds.count("recovery.completed") == 1, kinds
    assert kinds == ["approval.requested", "database.dirty", "recovery.completed"]


def test_revert_through_the_api(prod: dict[str, Any]) -> None:
    api, hook, url = prod["api"], prod["hook"], prod["db_url"]
    run_id, _link = _to_recovery_pause(prod)
    _resume(api, run_id, {"action": "revert", "engineer": "bob@askfrank.example", "comment": "INC-9"})
    fr = _wait(api, run_id, "COMPLETED")
    assert "version 9, dirty: no" in fr["state"]["message"], fr["state"]["message"]
    assert _state(url) == [(9, False)] and not _column(url)  # the partial column is gone
    _assert_audit(url, "revert")
    hook.wait_for(3, timeout=30)
    assert _events(hook) == ["approval.requested", "database.dirty", "recovery.completed"]


def _choose(dialog: Any, value: str, act: Actions) -> None:
    """Prefect's select (p-select): open the list, click the option."""
    control = dialog.locator(".p-select-button__control").first
    control.click()
    option = dialog.page.get_by_role("option", name=value, exact=True)
    try:
        option.first.wait_for(state="visible", timeout=3_000)
    except Exception:  # headless: the click may only focus the control; the list opens with the arrow key
        control.press("ArrowDown")
    act("open the Action list")
    option.first.click()
    act(f"pick {value}")
    control.get_by_text(value, exact=True).wait_for(timeout=10_000)  # the choice took before going on


def _submitted(dialog: Any) -> None:
    """The form closes once Prefect accepted the input; a loaded machine may take a while. If it stays
    open, say what it shows (a validation message, the chosen action) instead of a later timeout."""
    try:
        dialog.wait_for(state="hidden", timeout=60_000)
    except Exception as exc:
        shown = dialog.inner_text(timeout=5_000) if dialog.count() else "(gone)"
        dialog.page.screenshot(path=str(shot("recovery-form-not-submitted.png")), full_page=True)
        raise AssertionError(f"the recovery form did not close after Submit; it shows:\n{shown}") from exc


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
