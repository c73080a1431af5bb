"""docs/prefect-local.md's recipe, run as written on a fresh clone by scripts/prefect-local-recipe.sh:
a real ``prefect server`` on PostgreSQL, the deployments, a worker, migrate/dev, then migrate/prod
(with its rehearsal on the embedded server, a webhook receiver, approval through the API) ends
succeeded with prod clean at the latest version."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT, SERVER_URL, drop_database
from prefect_templates import create_migrated_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]  # a real prefect server, a worker


@pytest.mark.skipif(not (shutil.which("git") and shutil.which("createdb") and shutil.which("psql")),
                    reason="needs git and the PostgreSQL client tools")
def test_the_documented_local_recipe_reaches_a_succeeded_prod_run() -> None:
    if subprocess.run(["git", "status", "--porcelain", "docs/prefect-local.md", "scripts"], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        pytest.skip("the recipe runs on a clone of the committed checkout; commit docs/ and scripts/ first")
    # the server's database is a copy of the run's migrated Prefect database (prefect_templates): the
    # recipe's `make prefect-up` finds it there, as it would on a second `up`, and drops it at the end
    database = f"askfrank_prefect_recipe_{uuid.uuid4().hex[:8]}"
    create_migrated_database(SERVER_URL, database)
    try:
        r = subprocess.run([str(ROOT / "scripts" / "prefect-local-recipe.sh")], cwd=ROOT, capture_output=True,
                           text=True, timeout=1400, env={**os.environ, "RECIPE_PREFECT_DB": database})
    finally:
        drop_database(SERVER_URL, database)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "Completed: migrate dev succeeded" in out
    assert "Paused: paused for approval:" in out  # the paused run says why it waits
    assert "Completed: migrate prod succeeded. Now: database askfrank_prod at version" in out
    assert "recipe: prod run succeeded" in out
