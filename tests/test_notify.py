"""Alerts against a real HTTP receiver on 127.0.0.1: retries, Retry-After, refused connections,
timeouts, no retry on 4xx, signatures, Slack layout, the log-only mode, and no secret anywhere."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from migrator.alerts import notify
from migrator.config import Settings
from migrator.errors import ConfigError, MigrationFailedError
from migrator.retry import backoff_delay, retry_after_seconds
from webhook_receiver import Response, WebhookReceiver, closed_port_url

SECRET = "whsec-Test-Secret-123"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoff so the file runs in seconds; no stray webhook settings from the environment."""
    for name in ("WEBHOOK_URL", "WEBHOOK_SECRET", "WEBHOOK_FORMAT", "WEBHOOK_MAX_ATTEMPTS", "WEBHOOK_MAX_TOTAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "2")
    notify.reset_notices()


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def settings_for(url: str | None, fmt: str = "json", secret: str | None = SECRET, **kw: object) -> Settings:
    return Settings(webhook_url=url, webhook_secret=secret, webhook_format=fmt, environment="staging", **kw)  # type: ignore[arg-type]


def failed_fields() -> dict[str, object]:
    return {
        "database": "askfrank",
        "version_before": 12,
        "version_after": 13,
        "failing_version": 13,
        "direction": "up",
        "file": "migrations/000013_add_index.up.sql",
        "error": 'relation "tbl_user" does not exist',
        "dirty": True,
        "duration_ms": 1234.4,
    }


# ------------------------------------------------------------------------------------------ delivery


def test_500_twice_then_200_is_delivered_on_third_attempt_with_one_idempotency_key(rx: WebhookReceiver) -> None:
    rx.script([(500,), (503, {}, "busy"), (200,)])
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert result.delivered and result.attempts == 3 and result.status == 200 and result.error is None
    reqs = rx.requests
    assert [r.status for r in reqs] == [500, 503, 200]
    assert {r.header("Idempotency-Key") for r in reqs} == {result.id}
    assert len({r.body for r in reqs}) == 1  # a retry re-sends the same event
    assert [r.header("X-Webhook-Attempt") for r in reqs] == ["1", "2", "3"]
    event = reqs[-1].json()
    assert event["id"] == result.id and event["event"] == "migration.failed"
    assert event["schema_version"] == notify.SCHEMA_VERSION
    assert event["failing_version"] == 13 and event["file"].endswith("000013_add_index.up.sql")
    assert event["error"] == 'relation "tbl_user" does not exist' and event["dirty"] is True
    assert event["duration_ms"] == 1234 and event["environment"] == "staging"
    assert "000013_add_index.up.sql" in event["message"] and "does not exist" in event["message"]
    assert reqs[-1].method == "POST" and reqs[-1].header("Content-Type", "").startswith("application/json")


def test_every_event_field_is_present_and_flow_run_url_comes_from_settings(rx: WebhookReceiver) -> None:
    s = settings_for(rx.url, flow_run_url="https://prefect.example/runs/flow-run/abc", run_id="run-7")
    notify.send_event(
        s,
        "migration.succeeded",
        database="askfrank",
        version_before=3,
        version_after=5,
        backup_key="staging/askfrank/2026.dump",
        duration_ms=10,
        approver="ops",
    )
    event = rx.requests[0].json()
    assert set(event) == {
        "schema_version",
        "id",
        "event",
        "severity",
        "time",
        "environment",
        "database",
        "version_before",
        "version_after",
        "failing_version",
        "direction",
        "file",
        "error",
        "dirty",
        "backup_key",
        "duration_ms",
        "run_id",
        "flow_run_url",
        "message",
        "details",
    }
    assert event["flow_run_url"] == "https://prefect.example/runs/flow-run/abc" and event["run_id"] == "run-7"
    assert event["backup_key"] == "staging/askfrank/2026.dump" and event["details"] == {"approver": "ops"}
    assert event["time"].endswith("Z") and datetime.fromisoformat(event["time"]).tzinfo is not None
    assert event["message"] == "askfrank (staging): migrated from version 3 to 5"


def test_429_retry_after_is_honoured(rx: WebhookReceiver) -> None:
    rx.script([(429, {"Retry-After": "1"}), (200,)])
    result = notify.send_event(settings_for(rx.url), "database.dirty", database="askfrank", version_after=7)

    assert result.delivered and result.attempts == 2
    first, second = rx.requests
    # backoff alone is ~0.01 s here; the second try waited for the receiver's Retry-After
    assert second.time - first.time >= 0.9


def test_retry_after_beyond_the_time_budget_stops_without_hammering(
    rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_TOTAL", "5")
    when = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    rx.script([(429, {"Retry-After": when})])
    with caplog.at_level(logging.WARNING, logger="migrator.alerts.notify"):
        result = notify.send_event(settings_for(rx.url), "backup.failed", database="askfrank", error="disk full")

    assert not result.delivered and result.attempts == 1 and result.status == 429
    assert "Retry-After" in (result.error or "") and "WEBHOOK_MAX_TOTAL=5" in (result.error or "")
    assert len(rx.requests) == 1
    assert any(r.levelno == logging.ERROR and "ALERT NOT DELIVERED" in r.getMessage() for r in caplog.records)


def test_connection_refused_is_retried_then_reported_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "3")
    with caplog.at_level(logging.WARNING, logger="migrator.alerts.notify"):
        result = notify.send_event(settings_for(closed_port_url()), "migration.failed", **failed_fields())

    assert not result.delivered and result.attempts == 3 and result.status is None
    assert "connection error" in (result.error or "") and "WEBHOOK_MAX_ATTEMPTS=3" in (result.error or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and result.id in errors[0].getMessage()
    assert '"failing_version": 13' in errors[0].getMessage()  # the event itself survives in the log
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 2


def test_a_response_slower_than_the_timeout_is_retried(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "0.3")
    rx.script([Response(200, delay=2.0), (200,)])
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert result.delivered and result.attempts == 2
    assert len(rx.requests) == 2


def test_only_timeouts_reports_the_timeout(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "0.2")
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "2")
    rx.script([Response(200, delay=2.0), Response(200, delay=2.0)])
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert not result.delivered and result.attempts == 2
    assert "no response within" in (result.error or "") and "WEBHOOK_TIMEOUT" in (result.error or "")


def test_400_is_not_retried(rx: WebhookReceiver) -> None:
    rx.script([(400, {"Content-Type": "text/plain"}, "bad signature")])
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert not result.delivered and result.attempts == 1 and result.status == 400
    assert "HTTP 400: bad signature" in (result.error or "") and "not retried" in (result.error or "")
    assert len(rx.requests) == 1


def test_total_time_is_bounded(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "1000")
    monkeypatch.setenv("WEBHOOK_MAX_TOTAL", "0.5")
    monkeypatch.setenv("WEBHOOK_BACKOFF_BASE", "0.05")
    rx.default = Response(500)
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert not result.delivered and 1 <= result.attempts < 1000
    assert "WEBHOOK_MAX_TOTAL=0.5" in (result.error or "")


def test_redirect_is_not_followed(rx: WebhookReceiver) -> None:
    rx.script([(302, {"Location": "http://127.0.0.1:1/elsewhere"})])
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
    assert not result.delivered and result.attempts == 1 and result.status == 302


# ----------------------------------------------------------------------------------------- signature


def test_signature_verifies_with_the_documented_procedure(rx: WebhookReceiver) -> None:
    notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
    req = rx.requests[0]
    ts, sig = req.header("X-Webhook-Timestamp"), req.header("X-Webhook-Signature")
    assert ts is not None and sig is not None and sig.startswith("sha256=")
    assert abs(int(ts) - time.time()) < 60

    assert notify.verify_signature(SECRET, ts, req.body, sig)
    # tampered body, wrong secret, stale or future timestamp, malformed header: all rejected
    assert not notify.verify_signature(SECRET, ts, req.body.replace(b"13", b"14"), sig)
    assert not notify.verify_signature("other-secret", ts, req.body, sig)
    assert not notify.verify_signature(SECRET, ts, req.body, sig, now=int(ts) + 301)
    assert not notify.verify_signature(SECRET, ts, req.body, sig, now=int(ts) - 301)
    assert notify.verify_signature(SECRET, ts, req.body, sig, now=int(ts) + 299)
    assert not notify.verify_signature(SECRET, str(int(ts) - 1), req.body, sig)  # timestamp is signed too
    assert not notify.verify_signature(SECRET, "soon", req.body, sig)
    assert not notify.verify_signature(SECRET, ts, req.body, sig.removeprefix("sha256="))
    assert not notify.verify_signature(SECRET, ts, req.body, None)


def test_documented_receiver_example_matches(rx: WebhookReceiver) -> None:
    """The stdlib-only receiver code in docs/alerts.md accepts what send_event sends (docs cannot drift)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text(encoding="utf-8")
    code = next(block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    verify = namespace["verify"]

    notify.send_event(settings_for(rx.url, fmt="slack"), "database.dirty", database="askfrank", version_after=4)
    req = rx.requests[0]
    assert verify(SECRET, req.headers, req.body)
    assert not verify(SECRET, req.headers, req.body + b" ")
    assert not verify("wrong", req.headers, req.body)
    stale = dict(req.headers, **{"X-Webhook-Timestamp": str(int(time.time()) - 301)})
    assert not verify(SECRET, stale, req.body)


def test_without_secret_requests_are_unsigned_and_that_is_said_once(
    rx: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="migrator.alerts.notify"):
        r1 = notify.send_event(settings_for(rx.url, secret=None), "migration.failed", **failed_fields())
        r2 = notify.send_event(settings_for(rx.url, secret=None), "migration.failed", **failed_fields())
    assert r1.delivered and r2.delivered and not r1.signed
    assert rx.requests[0].header("X-Webhook-Signature") is None
    assert sum("WEBHOOK_SECRET is not set" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------------- formats


def test_slack_format_is_text_plus_blocks(rx: WebhookReceiver) -> None:
    s = settings_for(rx.url, fmt="slack", flow_run_url="https://prefect.example/runs/flow-run/abc")
    fields = failed_fields() | {"error": 'syntax error at or near "<" & more'}
    result = notify.send_event(s, "migration.failed", **fields)
    assert result.delivered and result.format == "slack"

    payload = rx.requests[0].json()
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].startswith(":x: Migration failed") and "askfrank" in payload["text"]
    types = [b["type"] for b in payload["blocks"]]
    assert types[0] == "header" and types[-1] == "context" and "section" in types and "actions" in types
    assert len(payload["blocks"][0]["text"]["text"]) <= 150
    assert payload["blocks"][0]["text"]["text"] == ":x: Migration failed · staging"
    facts = next(b for b in payload["blocks"] if "fields" in b)["fields"]
    assert 1 <= len(facts) <= 10
    rendered = " ".join(f["text"] for f in facts)
    assert "*Database*\naskfrank" in rendered and "12 → 13" in rendered and "000013_add_index.up.sql" in rendered
    sections = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    error_text = next(t for t in sections if t.startswith("*Error*"))
    assert "&lt;" in error_text and "&amp;" in error_text and "<" not in error_text  # mrkdwn escaped
    button = payload["blocks"][types.index("actions")]["elements"][0]
    assert button["url"] == "https://prefect.example/runs/flow-run/abc"
    assert result.id in payload["blocks"][-1]["elements"][0]["text"]
    assert rx.requests[0].header("Idempotency-Key") == result.id
    assert notify.verify_signature(
        SECRET,
        rx.requests[0].header("X-Webhook-Timestamp"),
        rx.requests[0].body,
        rx.requests[0].header("X-Webhook-Signature"),
    )


@pytest.mark.parametrize("event", notify.EVENT_TYPES)
def test_every_event_type_renders_in_both_formats(event: str) -> None:
    e = notify.build_event(settings_for(None), event, database="askfrank", version_before=1, version_after=2)
    assert e["event"] == event and e["message"]
    for fmt in notify.FORMATS:
        assert json.loads(notify.render(e, fmt))


def test_failure_fields_from_a_migration_error(rx: WebhookReceiver) -> None:
    exc = MigrationFailedError(
        "migration 13 failed",
        version=13,
        name="add_index",
        direction="up",
        file="migrations/000013_add_index.up.sql",
        line=4,
        column=7,
        statement="CREATE INDEX ...",
        pg_message='relation "tbl_user" does not exist',
        dirty=True,
        state_version=13,
    )
    notify.send_event(settings_for(rx.url), "migration.failed", version_before=12, **notify.failure_fields(exc))
    event = rx.requests[0].json()
    assert event["failing_version"] == 13 and event["version_after"] == 13 and event["dirty"] is True
    assert event["error"] == 'relation "tbl_user" does not exist'
    assert event["details"] == {"line": 4, "column": 7, "statement": "CREATE INDEX ..."}
    assert event["file"] == "migrations/000013_add_index.up.sql:4"  # as database.dirty names it
    assert event["severity"] == "critical"
    assert notify.failure_fields(RuntimeError("boom")) == {"error": "boom"}


def test_odd_field_values_never_break_an_alert(rx: WebhookReceiver) -> None:
    result = notify.send_event(
        settings_for(rx.url),
        "migration.failed",
        error=RuntimeError("x" * 10_000),
        duration_ms=float("nan"),
        file=Path("migrations/000001_a.up.sql"),
        where=Path("/srv/app"),
        tags={"a", "b"},
    )
    assert result.delivered
    event = rx.requests[0].json()
    assert len(event["error"]) <= notify.MAX_TEXT and event["error"].endswith("…")
    assert event["duration_ms"] is None and event["file"] == "migrations/000001_a.up.sql"
    assert event["details"]["where"] == "/srv/app" and sorted(event["details"]["tags"]) == ["a", "b"]


def test_dirty_event_names_the_dirty_version(rx: WebhookReceiver) -> None:
    s = settings_for(rx.url, fmt="slack")
    notify.send_event(s, "database.dirty", database="askfrank", version_before=7, failing_version=7, dirty=True)
    payload = rx.requests[0].json()
    assert payload["text"].startswith(":warning: Database is dirty: askfrank (staging) is dirty at version 7")
    assert "`migrator recover`" in payload["text"]  # the way out that shows what ran, not a blind force


def test_unknown_event_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown event type 'migration\.exploded'"):
        notify.send_event(settings_for(None), "migration.exploded")


# ----------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_TIMEOUT", "fast"),
        ("WEBHOOK_TIMEOUT", "0"),
        ("WEBHOOK_MAX_ATTEMPTS", "0"),
        ("WEBHOOK_MAX_ATTEMPTS", "2.5"),
        ("WEBHOOK_MAX_TOTAL", "-1"),
        ("WEBHOOK_BACKOFF_BASE", "x"),
    ],
)
def test_bad_tuning_variable_is_a_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        notify.DeliveryOptions.from_env({name: value})


def test_bad_tuning_variable_fails_delivery_without_raising(
    rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "many")
    with caplog.at_level(logging.ERROR, logger="migrator.alerts.notify"):
        result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
    assert not result.delivered and result.attempts == 0 and "WEBHOOK_MAX_ATTEMPTS='many'" in (result.error or "")
    assert rx.requests == [] and "ALERT NOT DELIVERED" in caplog.text


def test_plain_http_is_refused_except_for_loopback() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        notify.check_webhook(settings_for("http://alerts.example.com/hook"))
    with pytest.raises(ConfigError, match="https://"):
        notify.check_webhook(settings_for("ftp://alerts.example.com/hook"))
    notify.check_webhook(settings_for("https://alerts.example.com/hook"))
    notify.check_webhook(settings_for("http://localhost:8080/hook"))


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("nonsense") is None
    assert retry_after_seconds(None) is None
    later = retry_after_seconds(format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True))
    assert later is not None and 100 < later <= 120


def test_backoff_grows_is_jittered_and_capped() -> None:
    opts = notify.DeliveryOptions(backoff_base=1.0, backoff_max=8.0)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {backoff_delay(attempt, opts.backoff_base, opts.backoff_max) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays) and len(delays) > 1


# ------------------------------------------------------------------------------------ log-only mode


def test_no_webhook_logs_events_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="migrator.alerts.notify"):
        r1 = notify.send_event(settings_for(None), "database.dirty", database="askfrank", version_after=9, dirty=True)
        r2 = notify.send_event(settings_for(None), "migration.succeeded", database="askfrank", version_after=10)
    assert r1.logged_only and not r1.delivered and r1.attempts == 0 and r2.logged_only
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no webhook configured" in m for m in messages) == 1
    dirty = next(r for r in caplog.records if r1.id in r.getMessage())
    assert dirty.levelno == logging.WARNING and '"database.dirty"' in dirty.getMessage()
    assert any(r2.id in m for m in messages)


# --------------------------------------------------------------------------------------- secrets


SENTINEL = "S3ntinelPw"


def test_sentinel_password_never_reaches_payload_headers_or_logs(
    rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db_url = f"postgres://u:{SENTINEL}@127.0.0.1/x"
    rx.script([(500,), (200,)])
    with caplog.at_level(logging.DEBUG):
        for fmt in notify.FORMATS:
            s = settings_for(rx.url, fmt=fmt, database_url=db_url)
            notify.send_event(
                s,
                "migration.failed",
                database=db_url,
                file="000002_x.up.sql",
                error=f"could not connect to {db_url}: password={SENTINEL} rejected",
                extra_info=f"pw {SENTINEL}",
            )
        # a failing delivery logs the event at ERROR: still nothing secret in it
        notify.send_event(settings_for(closed_port_url(), database_url=db_url), "backup.failed", error=db_url)
    assert len(rx.requests) == 3
    for req in rx.requests:
        assert SENTINEL not in req.body.decode() and SENTINEL not in json.dumps(req.headers)
        assert SECRET not in req.body.decode() and SECRET not in json.dumps(req.headers)
    event = rx.requests[1].json()
    assert event["database"] == "x"  # the URL was reduced to the database name
    assert "could not connect" in event["error"]
    assert SENTINEL not in caplog.text and SECRET not in caplog.text and "ALERT NOT DELIVERED" in caplog.text


def test_unregistered_password_in_settings_is_masked_by_send_event(rx: WebhookReceiver) -> None:
    """Settings built directly (as a Prefect task might) were never registered: send_event does it."""
    fresh = "Fr3shUnregisteredPw"
    s = settings_for(rx.url, database_url=f"postgresql://u:{fresh}@db.internal:5432/askfrank")
    notify.send_event(s, "migration.failed", error=f"server said: authentication for {fresh} failed")
    body = rx.requests[0].body.decode()
    assert fresh not in body and "authentication for ****" in body
    assert json.loads(body)["database"] == "askfrank"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgres://u:pw@h:5432/askfrank?sslmode=require", "askfrank"),
        ("host=h dbname=askfrank password=pw", "askfrank"),
        ("host=h dbname='ask frank' password=pw", "ask frank"),
        ("askfrank", "askfrank"),
        ("postgres://u:pw@h/", None),
        (None, None),
    ],
)
def test_database_name_never_carries_credentials(value: str | None, expected: str | None) -> None:
    assert notify.database_name(value) == expected


# ------------------------------------------------------------------------------------------ CLI


def test_cli_notify_test_delivers_and_prints_result(cli, rx: WebhookReceiver) -> None:  # type: ignore[no-untyped-def]
    env = {
        "WEBHOOK_URL": rx.url,
        "WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": f"postgres://u:{SENTINEL}@127.0.0.1/x",
        "MIGRATOR_ENV": "prod",
    }
    r = cli("notify", "test", "--json", env=env)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["delivered"] is True and out["attempts"] == 1 and out["signed"] is True and out["event"] == "test"
    assert out["destination"] == f"http://127.0.0.1:{rx.port}"  # no path: it may hold a token
    req = rx.requests[0]
    assert req.json()["event"] == "test" and req.json()["environment"] == "prod" and req.json()["database"] == "x"
    assert notify.verify_signature(
        SECRET, req.header("X-Webhook-Timestamp"), req.body, req.header("X-Webhook-Signature")
    )
    assert SENTINEL not in r.out + r.err and SECRET not in r.out + r.err

    r = cli("notify", "test", "--webhook-format", "slack", env=env)
    assert r.code == 0 and "delivered to" in r.err and "signed" in r.err
    assert set(rx.requests[1].json()) == {"text", "blocks"}


def test_cli_notify_test_failed_delivery_exits_1(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url = closed_port_url()
    env = {
        "WEBHOOK_URL": url,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_MAX_ATTEMPTS": "2",
        "DATABASE_URL": f"postgres://u:{SENTINEL}@127.0.0.1/x",
    }
    r = cli("notify", "test", env=env)
    assert r.code == 1
    assert "error: test event not delivered" in r.err and "connection error" in r.err
    assert SENTINEL not in r.out + r.err and SECRET not in r.out + r.err

    r = cli("notify", "test", "--json", env=env)
    assert r.code == 1 and json.loads(r.out)["delivered"] is False and json.loads(r.out)["attempts"] == 2


def test_cli_notify_test_without_webhook_exits_2(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("notify", "test")
    assert r.code == 2 and "error: no webhook configured: set WEBHOOK_URL" in r.err


def test_cli_notify_test_bad_settings_exit_2(cli, rx: WebhookReceiver) -> None:  # type: ignore[no-untyped-def]
    r = cli("notify", "test", "--webhook-url", rx.url, env={"WEBHOOK_TIMEOUT": "soon"})
    assert r.code == 2 and "error: WEBHOOK_TIMEOUT='soon'" in r.err
    r = cli("notify", "test", "--webhook-url", "http://alerts.example.com/x", env={"WEBHOOK_TIMEOUT": "1"})
    assert r.code == 2 and "plain http" in r.err
    assert rx.requests == []


# ------------------------------------------------------------------------- bounded time and memory
# Hostile receivers (issue 10.3): a byte every 2 s kept `up` waiting for minutes (httpx's timeouts
# apply to each read), an endless error body was read whole (23 GB, then an OOM kill).


def test_a_receiver_trickling_its_head_is_cut_at_webhook_max_total(
    rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "60")  # each read gets a byte within 2 s: per-read timeouts never fire
    monkeypatch.setenv("WEBHOOK_MAX_TOTAL", "3")
    rx.default = Response(200, trickle=2.0, trickle_head=True)  # ~40 bytes of head: 80 s if waited for
    started = time.monotonic()
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
    elapsed = time.monotonic() - started

    assert not result.delivered and result.status is None and result.attempts >= 1
    assert "no response within" in (result.error or "") and "WEBHOOK_MAX_TOTAL=3" in (result.error or "")
    assert elapsed < 15  # generous; the unbounded delivery took 80 s here (150 s+ in the field)


def test_a_trickling_error_body_is_not_waited_for(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "60")
    monkeypatch.setenv("WEBHOOK_MAX_TOTAL", "4")
    rx.default = Response(500, body="overloaded " * 10, trickle=2.0)  # 110 bytes: 220 s if read whole
    started = time.monotonic()
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
    elapsed = time.monotonic() - started

    assert not result.delivered and result.status == 500 and result.attempts >= 2  # retried within the budget
    assert (result.error or "").startswith("HTTP 500") and "WEBHOOK_MAX_TOTAL=4" in (result.error or "")
    assert elapsed < 15


def test_a_trickling_success_body_is_delivered_at_once(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "60")
    rx.script([Response(200, body="ok " * 40, trickle=2.0)])
    started = time.monotonic()
    result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())

    assert result.delivered and result.attempts == 1 and result.status == 200
    assert time.monotonic() - started < 10  # the status is the answer; the body (240 s) is never read
    assert result.response_bytes == 0


def test_an_endless_error_body_costs_a_few_kb(rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "3")
    notify.send_event(settings_for(rx.url), "test")  # warm up: imports (httpx, anyio) are not the subject
    endless = 64 * 1024 * 1024
    rx.default = Response(500, headers={"Content-Type": "text/plain"}, stream_bytes=endless)
    tracemalloc.start()
    try:
        result = notify.send_event(settings_for(rx.url), "migration.failed", **failed_fields())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * 1024 * 1024, f"delivery peaked at {peak} bytes of Python memory"  # reading it all: > 64 MiB
    assert not result.delivered and result.attempts == 3 and result.status == 500
    assert (result.error or "").startswith("HTTP 500: xxxx") and len(result.error or "") < 400
    # per attempt: the 4 KiB snippet plus at most one 64 KiB network read
    assert 0 < result.response_bytes <= 3 * (notify.RESPONSE_SNIPPET_BYTES + 65536)
    assert len(rx.body_bytes_sent) == 3 and max(rx.body_bytes_sent) < endless  # the client hung up early


def test_delivery_from_inside_a_running_event_loop(rx: WebhookReceiver) -> None:
    import asyncio

    async def caller() -> notify.DeliveryResult:
        return notify.send_event(settings_for(rx.url), "test")

    assert asyncio.run(caller()).delivered and len(rx.requests) == 1


def test_every_event_in_the_registry_has_a_title_severity_and_summary() -> None:
    for name in ("recovery.completed", "recovery.failed", "approval.rejected", "rehearsal.failed", "fleet.failed"):
        assert name in notify.EVENT_TYPES
    for kind in notify.EVENTS.values():
        assert kind.severity in ("info", "warning", "critical") and kind.title and kind.emoji
    e = notify.build_event(settings_for(None), "recovery.failed", database="askfrank", error="lock timeout")
    assert e["message"] == "askfrank (staging): recovery failed: lock timeout"


def test_recovery_outcomes_have_their_own_events_and_dirty_is_never_info() -> None:
    assert [notify.recovery_event(o) for o in ("completed", "left_dirty", "refused", "failed")] == [
        "recovery.completed", "recovery.left_dirty", "recovery.refused", "recovery.failed"]
    left = notify.build_event(settings_for(None), "recovery.left_dirty", database="askfrank", version_after=3,
                              dirty=True)
    assert left["severity"] == "warning" and "completed" not in left["message"].lower()
    assert left["message"] == "askfrank (staging): recovery left dirty; now at version 3, dirty: yes"
    assert "completed" not in notify.EVENTS["recovery.left_dirty"].title.lower()
    # any event that reports a dirty database is at least a warning, whatever its type says
    for name in notify.EVENT_TYPES:
        sev = notify.build_event(settings_for(None), name, dirty=True)["severity"]
        assert sev in ("warning", "critical"), name
    assert notify.build_event(settings_for(None), "recovery.completed", dirty=False)["severity"] == "info"


def test_slack_says_none_for_no_version_like_every_other_surface() -> None:
    e = notify.build_event(settings_for(None), "migration.succeeded", database="askfrank", version_before=-1,
                           version_after=9)
    rendered = json.dumps(notify.slack_payload(e), ensure_ascii=False)
    assert "none → 9" in rendered and "from version none to 9" in rendered and "version -1" not in rendered
