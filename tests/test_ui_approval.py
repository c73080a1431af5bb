"""The approval form as an on-call engineer sees it: a real ``prefect server`` with its UI, a
``migrate`` run of prod paused for approval, and headless Debian Chromium driving the UI's Resume
dialog. Skipped when /usr/bin/chromium or python playwright is missing (never `playwright install`).

``UPDATE_SCREENSHOTS=1`` writes the form to docs/img/approval-form.png for the runbook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conftest import ROOT, write_migration
from prefect_server import running_server
from ui_browser import CHROMIUM, browser_page, migrate_paused_for_approval, open_resume_dialog

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install -y chromium)"),
]



def test_approval_form_in_the_browser(tmp_path: Path, db_url: str, migrations_dir: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    write_migration(migrations_dir, 1, "create_patients", "-- Business justification: test\nCREATE TABLE patients (id int);",
                    "-- Business justification: test\nDROP TABLE IF EXISTS patients;")
    write_migration(migrations_dir, 2, "require_patient_phone",
                    "-- Business justification: test\nALTER TABLE patients ADD COLUMN phone text;\n"
                    "ALTER TABLE patients ALTER COLUMN phone SET NOT NULL;",
                    "-- Business justification: test\nALTER TABLE patients DROP COLUMN IF EXISTS phone;")
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    (ddir / "prod.yaml").write_text(
        "environment: prod\ndatabase_url: {env: UI_TEST_DATABASE_URL}\n"
        f'backup: {{url: "file://{tmp_path / "backups"}", retries: 0}}\n'
        "approval: {required: true, timeout_seconds: 600}\ntimeouts: {lock_wait_seconds: 30}\n"
        "rehearsal: {enabled: false}\n")
    shot = ROOT / "docs" / "img" / "approval-form.png" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "form.png"
    with running_server(tmp_path / "prefect", ui=True) as server:
        env = server.client_env(MIGRATOR_DEPLOYMENTS_DIR=str(ddir), MIGRATIONS_PATH=str(migrations_dir),
                                UI_TEST_DATABASE_URL=db_url, PREFECT_LOGGING_LEVEL="INFO")
        env.pop("DATABASE_URL", None)
        log = tmp_path / "flow.log"
        with migrate_paused_for_approval(server.api_url, env, log, timeout=120) as (flow, run_id):
            with browser_page() as page:
                dialog = open_resume_dialog(page, server.ui_url, run_id)
                dialog.get_by_text("2 migrations for prod: version none → 2").wait_for()
                text = dialog.inner_text()
                # the migrations by name, in order, the lint warning under its migration, before the numbers
                order = [text.index(s) for s in ("000001_create_patients", "000002_require_patient_phone",
                                                 "MIG002", "is at version none")]
                assert order == sorted(order), text
                decision = dialog.locator("button.p-select-button__control").first
                assert decision.inner_text().strip() == ""  # no decision chosen for you
                page.wait_for_timeout(500)
                page.screenshot(path=str(shot))
                dialog.get_by_role("button", name="Submit").click()  # an empty answer is refused in the form
                dialog.get_by_text("'decision' is a required property").wait_for()
                dialog.get_by_text("'approver' is a required property").wait_for()
                state = httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
                assert state == "PAUSED"
                options = page.locator(".p-select-option")
                for _ in range(5):  # the select opens on a key press (a click only focuses it)
                    decision.focus()
                    page.keyboard.press("ArrowDown")
                    page.wait_for_timeout(500)
                    if options.count():
                        break
                assert [options.nth(i).inner_text() for i in range(options.count())] == ["approve", "reject"]
                options.filter(has_text="reject").click()
                dialog.locator("textarea").nth(0).fill("bob@askfrank.example")
                dialog.locator("textarea").nth(1).fill("CHG-7 not ready")
                dialog.get_by_role("button", name="Submit").click()
            assert flow.wait(timeout=120) != 0
    output = log.read_text()
    assert "rejected by bob@askfrank.example (CHG-7 not ready): 000001_create_patients, 000002_require_patient_phone" \
        in output
    assert "Traceback" not in output
    with psycopg.connect(db_url) as conn:
        applied: Any = conn.execute("SELECT to_regclass('patients')").fetchone()
    assert applied == (None,)  # nothing applied
    assert shot.stat().st_size > 10_000
