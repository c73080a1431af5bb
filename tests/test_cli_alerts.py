"""The engine commands raise alerts: migration.failed on up/down/goto failures, database.dirty on
``status --alert``; a failed delivery never changes the command's exit status."""

from __future__ import annotations

from pathlib import Path

from conftest import dbname_of, write_migration
from migrator.alerts.notify import verify_signature
from webhook_receiver import WebhookReceiver, closed_port_url

SECRET = "hook-s3cret-value"
PASSWORD = "Sentinel-DB-pw-77"


def _env(db_url: str, d: Path, hook: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url.replace("postgres@", f"postgres:{PASSWORD}@"),
        "MIGRATIONS_PATH": str(d),
        "WEBHOOK_URL": hook,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_BACKOFF_BASE": "0.01",
        "WEBHOOK_MAX_ATTEMPTS": "2",
        "MIGRATOR_ENV": "staging",
    }


def test_failed_up_sends_signed_migration_failed(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "ok", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, 2, "bad", "CREATE TABLE b (id int);\nSELECT 1/0;", "DROP TABLE b;")
    with WebhookReceiver() as rx:
        r = cli("up", env=_env(db_url, migrations_dir, rx.url))
        assert r.code == 1 and "division by zero" in r.err
        (req,) = rx.wait_for(1)
    body = req.json()
    assert body["event"] == "migration.failed" and body["environment"] == "staging"
    assert body["failing_version"] == 2 and body["file"].endswith("000002_bad.up.sql:2")  # file:line, as database.dirty
    assert body["error"] == "division by zero" and body["dirty"] is False
    assert body["database"] == dbname_of(db_url)
    assert verify_signature(SECRET, req.header("X-Webhook-Timestamp"), req.body, req.header("X-Webhook-Signature"))
    assert PASSWORD.encode() not in req.body and SECRET.encode() not in req.body


def test_undeliverable_alert_keeps_the_original_failure(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "bad", "SELECT 1/0;", "SELECT 1;")
    r = cli("up", env=_env(db_url, migrations_dir, closed_port_url()))
    assert r.code == 1
    assert "migration 1 (up) failed" in r.err and "division by zero" in r.err
    assert PASSWORD not in r.err + r.out


def test_status_alert_on_dirty(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_migration(migrations_dir, 1, "bad", "VACUUM;\nSELECT 1/0;", "SELECT 1;")
    with WebhookReceiver() as rx:
        env = _env(db_url, migrations_dir, rx.url)
        cli("up", env=env)
        rx.wait_for(1)
        rx.clear()
        r = cli("status", "--alert", env=env)
        assert r.code == 3
        (req,) = rx.wait_for(1)
        assert req.json()["event"] == "database.dirty" and req.json()["failing_version"] == 1
        rx.clear()
        cli("force", "0", env=env)
        r = cli("status", "--alert", env=env)
        assert r.code == 0 and rx.requests == []


def test_up_finishes_with_a_hostile_receiver(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A receiver that trickles a byte every 2 s, then one with an endless 500 body: `up` still ends
    within WEBHOOK_MAX_TOTAL with its own exit status and the failure line (issue 10.3)."""
    import time

    from webhook_receiver import Response

    write_migration(migrations_dir, 1, "bad", "SELECT 1/0;", "SELECT 1;")
    for hostile in (Response(200, trickle=2.0, trickle_head=True), Response(500, stream_bytes=256 * 1024 * 1024)):
        with WebhookReceiver(default=hostile) as rx:
            env = {**_env(db_url, migrations_dir, rx.url), "WEBHOOK_TIMEOUT": "60", "WEBHOOK_MAX_TOTAL": "3"}
            started = time.monotonic()
            r = cli("up", env=env)
            elapsed = time.monotonic() - started
            assert r.code == 1 and "migration 1 (up) failed" in r.err and "division by zero" in r.err
            assert elapsed < 20, f"`up` took {elapsed:.0f}s with {hostile}"
            assert rx.requests and max(rx.body_bytes_sent) < 256 * 1024 * 1024
