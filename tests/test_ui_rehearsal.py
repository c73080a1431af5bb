"""The rehearsal table as the approver sees it: a real ``prefect server`` with its UI, a ``migrate``
run of a prod-like environment (rehearsal enabled) paused for approval, and headless Debian Chromium
opening the UI's Resume dialog. Skipped when /usr/bin/chromium or python playwright is missing
(never `playwright install`).

``UPDATE_SCREENSHOTS=1`` writes the dialog to docs/img/rehearsal-approval.png for docs/rehearsal.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, SERVER_URL, write_migration
from prefect_server import running_server
from ui_browser import CHROMIUM, browser_page, migrate_paused_for_approval, open_resume_dialog

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install -y chromium)"),
]
JUST = "-- Business justification: test\n"



def test_rehearsal_table_in_the_resume_dialog(tmp_path: Path, db_url: str, migrations_dir: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    from migrator.config import Settings
    from migrator.engine import Migrator

    write_migration(migrations_dir, 1, "create_patients",
                    JUST + "CREATE TABLE patients (id int PRIMARY KEY, mrn int NOT NULL, name text NOT NULL);",
                    JUST + "DROP TABLE IF EXISTS patients;")
    Migrator(Settings(database_url=db_url, migrations_path=migrations_dir)).up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO patients SELECT i, i % 50000, 'patient ' || i FROM generate_series(1, 200000) i")
    write_migration(migrations_dir, 2, "widen_patient_id", JUST + "ALTER TABLE patients ALTER COLUMN id TYPE bigint;",
                    JUST + "ALTER TABLE patients ALTER COLUMN id TYPE int;")
    ddir = tmp_path / "deployments"
    ddir.mkdir()
    (ddir / "prod.yaml").write_text(
        "environment: prod\ndatabase_url: {env: UI_TEST_DATABASE_URL}\n"
        f'backup: {{url: "file://{tmp_path / "backups"}", retries: 0}}\n'
        "approval: {required: true, timeout_seconds: 600}\ntimeouts: {lock_wait_seconds: 30}\n"
        "rehearsal: {enabled: true, server_url: {env: UI_TEST_REHEARSAL_URL}, allow_same_server: true, "
        "large_table_bytes: 1MB}\n")
    shot = (ROOT / "docs" / "img" / "rehearsal-approval.png" if os.environ.get("UPDATE_SCREENSHOTS")
            else tmp_path / "form.png")
    with running_server(tmp_path / "prefect", ui=True) as server:
        env = server.client_env(MIGRATOR_DEPLOYMENTS_DIR=str(ddir), MIGRATIONS_PATH=str(migrations_dir),
                                UI_TEST_DATABASE_URL=db_url, UI_TEST_REHEARSAL_URL=SERVER_URL,
                                PREFECT_LOGGING_LEVEL="INFO")
        env.pop("DATABASE_URL", None)
        log = tmp_path / "flow.log"
        with (migrate_paused_for_approval(server.api_url, env, log, timeout=180) as (_flow, run_id),
              browser_page(height=1300) as page):
            dialog = open_resume_dialog(page, server.ui_url, run_id)
            dialog.get_by_text("Rehearsal: 1 migration(s) succeeded on the restored copy", exact=False).wait_for()
            text = dialog.inner_text()
            # the rehearsal comes before the plan; the lock, its hold and the rewrite are readable there
            assert text.index("Rehearsal: 1 migration(s)") < text.index("Backup taken before"), text
            for needle in ("⚠ ACCESS EXCLUSIVE on public.patients (table", "blocks reads and writes",
                           "rewritten: public.patients", "MIG005", "Production estimate"):
                assert needle in text, needle
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot))
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(1, False)]
    assert shot.stat().st_size > 10_000
