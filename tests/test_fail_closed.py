"""Fail closed (issue 10 item 6): a non-local environment whose database URL, declared backup URL or
declared secret does not resolve stops before connecting, naming the Secret block and the variable
it looked for; it never falls back to DATABASE_URL or the embedded server. Flows run under
``prefect_test_harness`` and through ``python -m flows``; the database is the real one on
127.0.0.1:5432, set as DATABASE_URL to prove it is never used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT
from migrator.errors import ConfigError
from prefect_server import isolated_env
from prefect_templates import seed_prefect_home

pytestmark = pytest.mark.usefixtures("prefect_harness")

PROD_VARS = ("ASKFRANK_PROD_DATABASE_URL", "ASKFRANK_DEV_DATABASE_URL", "WEBHOOK_URL", "WEBHOOK_SECRET",
             "BACKUP_URL", "MIGRATOR_DEPLOYMENTS_DIR", "MIGRATOR_ENV")


@pytest.fixture
def nothing_configured(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path | str]:
    """A worker without any prod/dev secret, but with a plain DATABASE_URL that must NOT be used."""
    for var in PROD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MIGRATOR_EMBEDDED_DIR", str(tmp_path / "pgdata"))
    return {"db_url": db_url, "embedded": tmp_path / "pgdata"}


def _untouched(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def _deployments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> Path:
    d = tmp_path / "deployments"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("MIGRATOR_DEPLOYMENTS_DIR", str(d))
    return d


@pytest.mark.parametrize(("env", "block", "var"), [
    ("prod", "askfrank-prod-database-url", "ASKFRANK_PROD_DATABASE_URL"),
    ("dev", "askfrank-dev-database-url", "ASKFRANK_DEV_DATABASE_URL"),
])
def test_migrate_dry_run_without_the_secret_fails_before_connecting(nothing_configured: dict[str, str], env: str,
                                                                   block: str, var: str) -> None:
    from flows.migrate import migrate

    state = migrate(environment=env, dry_run=True, return_state=True)
    assert state.is_failed()
    message = str(state.message) + repr(state.result(raise_on_failure=False))
    assert f"Prefect Secret block '{block}' does not exist" in message, message
    assert f"environment variable {var} is not set" in message
    assert "nothing falls back to another database" in message
    assert _untouched(str(nothing_configured["db_url"]))
    assert not Path(nothing_configured["embedded"]).exists()


def test_python_m_flows_with_nothing_configured_fails_in_one_line(nothing_configured: dict[str, str],
                                                                  tmp_path: Path) -> None:
    env = isolated_env(seed_prefect_home(tmp_path / "prefect-home"))  # its local API starts on a migrated copy
    for var in PROD_VARS:
        env.pop(var, None)
    env["DATABASE_URL"] = str(nothing_configured["db_url"])
    env["MIGRATOR_EMBEDDED_DIR"] = str(nothing_configured["embedded"])
    r = subprocess.run([sys.executable, "-m", "flows", "migrate", "--env", "prod", "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "'askfrank-prod-database-url' does not exist" in last, r.stderr[-2000:]
    assert "ASKFRANK_PROD_DATABASE_URL is not set" in last
    assert r.stdout.strip() == ""  # no "Completed" summary
    assert _untouched(str(nothing_configured["db_url"]))
    assert not Path(nothing_configured["embedded"]).exists()


def test_declared_webhook_secret_and_backup_url_must_resolve(nothing_configured: dict[str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.environment import load_environment

    monkeypatch.setenv("T_DB", str(nothing_configured["db_url"]))
    _deployments(tmp_path, monkeypatch, hooky=(
        "database_url: {env: T_DB}\n"
        "webhook: {url: http://127.0.0.1:9/hook, secret: {secret_block: t-hook-secret, env: T_HOOK_SECRET}}\n"
    ), backupy=(
        "database_url: {env: T_DB}\nbackup: {url: {secret_block: t-backup-url, env: T_BACKUP_URL}}\n"
    ), bare="environment: bare\n", empty_var="database_url: {env: T_EMPTY}\n")
    with pytest.raises(ConfigError, match=r"webhook.secret does not resolve \(Prefect Secret block 't-hook-secret' "
                                          r"does not exist; environment variable T_HOOK_SECRET is not set"):
        load_environment("hooky")
    monkeypatch.setenv("T_HOOK_SECRET", "hook-secret-value")
    assert load_environment("hooky").settings.webhook_secret == "hook-secret-value"
    with pytest.raises(ConfigError, match=r"backup.url does not resolve .*'t-backup-url'.*T_BACKUP_URL"):
        load_environment("backupy")
    with pytest.raises(ConfigError, match=r"declares no database_url"):
        load_environment("bare")
    monkeypatch.setenv("T_EMPTY", "")
    with pytest.raises(ConfigError, match=r"environment variable T_EMPTY is empty"):
        load_environment("empty_var")


def test_only_local_or_embedded_true_may_use_embedded_or_plain_database_url(
        nothing_configured: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrator import db
    from tasks.environment import load_environment

    _deployments(tmp_path, monkeypatch, local="environment: local\n", sandbox="embedded: true\n",
                 dev2="database_url: {secret_block: nope-dev2, env: NOPE_DEV2}\n")
    local = load_environment("local")
    assert local.settings.database_url == nothing_configured["db_url"]  # local: plain DATABASE_URL is fine
    monkeypatch.delenv("DATABASE_URL")
    sandbox = load_environment("sandbox")
    assert sandbox.settings.database_url is None and sandbox.settings.allow_embedded
    with pytest.raises(ConfigError, match="'nope-dev2' does not exist; environment variable NOPE_DEV2 is not set"):
        load_environment("dev2")
    # the core refuses too: a non-local Settings without a URL never reaches the embedded server
    from dataclasses import replace

    with pytest.raises(ConfigError, match="environment 'dev2' has no database URL"):
        db.resolve(replace(sandbox.settings, environment="dev2", allow_embedded=False))
    assert not Path(nothing_configured["embedded"]).exists()


def test_secret_block_lookup_failure_is_not_treated_as_missing(nothing_configured: dict[str, str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.environment import load_environment

    _deployments(tmp_path, monkeypatch, blocky="database_url: {secret_block: t-db-url, env: T_DB_URL}\n")
    monkeypatch.setenv("T_DB_URL", str(nothing_configured["db_url"]))
    # block missing, variable set: the variable is used (the block does not exist, it was asked)
    assert load_environment("blocky").settings.database_url == nothing_configured["db_url"]
    Secret(value="postgresql://postgres@127.0.0.1:5432/from_block").save("t-db-url", overwrite=True)
    assert load_environment("blocky").settings.database_url.endswith("/from_block")
    # API unreachable: the block may exist, so neither it nor the variable is used
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}), pytest.raises(ConfigError) as err:
        load_environment("blocky")
    msg = str(err.value)
    assert "cannot read Prefect Secret block 't-db-url'" in msg and "http://127.0.0.1:1/api did not answer" in msg
    assert "instead of treating it as missing" in msg and "\n" not in msg
    assert _untouched(str(nothing_configured["db_url"]))
