"""Alerts: migration events posted to a webhook, signed, retried, and never in the way of the real failure.

Both the CLI and the Prefect flows call :func:`send_event`. It builds a versioned event (generic JSON
or Slack text + blocks), signs it with HMAC-SHA256 over ``"{timestamp}.{raw body}"``, and delivers it
with httpx: exponential backoff with jitter on connection errors, timeouts, 429 (``Retry-After``
honoured) and 5xx, no retry on other 4xx, all within a bounded total time. A delivery that finally
fails is logged at ERROR and returned as ``DeliveryResult(delivered=False)``: alerting must never hide
or replace the failure it reports, so ``send_event`` does not raise (except ``ValueError`` for an
unknown event type, a programming error). httpx is imported only when something is sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from migrator import __version__
from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.redact import redact, register_secret, register_url
from migrator.retry import backoff_delay, retry_after_seconds

log = logging.getLogger("migrator.notify")

SCHEMA_VERSION = 1
TEST_EVENT = "test"
FORMATS = ("json", "slack")
MAX_TEXT = 4000  # long texts (a PostgreSQL error quoting a huge statement) are clipped to keep alerts readable
RESPONSE_SNIPPET_BYTES = 4096  # at most this much of a receiver's answer is read (quoted in the error)
SNIPPET_SECONDS = 1.0  # and for at most this long: the status code is what matters

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Webhook-Event"
ATTEMPT_HEADER = "X-Webhook-Attempt"

# Top-level event fields a caller may pass; anything else lands in ``details``.
EVENT_FIELDS = (
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
    "message",
    "run_id",
    "flow_run_url",
)

_log_only_notice_lock = threading.Lock()
_log_only_notice_given = False
_unsigned_notice_given = False


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class DeliveryOptions:
    """Retry tuning, from WEBHOOK_TIMEOUT / _MAX_ATTEMPTS / _MAX_TOTAL / _BACKOFF_BASE / _BACKOFF_MAX."""

    timeout: float = 5.0
    max_attempts: int = 5
    max_total: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeliveryOptions:
        """Read the tuning variables; a malformed one is a ConfigError naming it."""
        env = os.environ if env is None else env
        return cls(
            timeout=_positive_float(env, "WEBHOOK_TIMEOUT", cls.timeout),
            max_attempts=_positive_int(env, "WEBHOOK_MAX_ATTEMPTS", cls.max_attempts),
            max_total=_positive_float(env, "WEBHOOK_MAX_TOTAL", cls.max_total),
            backoff_base=_positive_float(env, "WEBHOOK_BACKOFF_BASE", cls.backoff_base, allow_zero=True),
            backoff_max=_positive_float(env, "WEBHOOK_BACKOFF_MAX", cls.backoff_max, allow_zero=True),
        )


def _positive_float(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={raw!r} must be a number of seconds {bound}; e.g. {name}={default:g}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be a whole number >= 1; e.g. {name}={default}")
    return value


def check_webhook(settings: Settings) -> DeliveryOptions:
    """Validate the webhook settings and tuning variables; ConfigError names what to fix."""
    options = DeliveryOptions.from_env()
    if settings.webhook_format not in FORMATS:
        raise ConfigError(f"WEBHOOK_FORMAT / --webhook-format={settings.webhook_format!r}: use json or slack")
    if settings.webhook_url:
        _check_url(settings.webhook_url)
    return options


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("WEBHOOK_URL / --webhook-url is not a valid URL; use https://host/path") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(
            f"WEBHOOK_URL / --webhook-url {destination(url)!r} must be an https:// URL (e.g. https://hooks.example/x)"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"WEBHOOK_URL / --webhook-url {destination(url)!r} uses plain http: alerts must travel over TLS, "
            "use https:// (http is accepted only for localhost relays)"
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def destination(url: str | None) -> str | None:
    """``scheme://host[:port]`` of the webhook: its path and query may hold a token (Slack), so never shown."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return redact(f"{parts.scheme}://{host}{port}")


# ---------------------------------------------------------------------------------------------- events


def database_name(value: object) -> str | None:
    """A database name safe to publish: URLs and libpq conninfo strings are reduced to their dbname."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if "://" in text:
        try:
            parts = urlsplit(text)
            name = unquote(parts.path.lstrip("/")) or dict(parse_qsl(parts.query)).get("dbname", "")
        except ValueError:
            return "<redacted>"
        return redact(name) if name else None
    if "=" in text:
        m = re.search(r"\bdbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", text)
        return redact(m.group(1).strip("'")) if m else None
    return redact(text)


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {redact(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return redact(value)


def _where(e: Mapping[str, Any]) -> str:
    db = e.get("database") or "database"
    env = e.get("environment")
    return f"{db} ({env})" if env else str(db)


def _span(e: Mapping[str, Any]) -> str:
    before, after = e.get("version_before"), e.get("version_after")
    return f" from version {before} to {after}" if before is not None or after is not None else ""


def _with_error(text: str, e: Mapping[str, Any]) -> str:
    return text + (f": {e['error']}" if e.get("error") else "")


def _migrated(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: migrated{_span(e)}"


def _migration_failed(e: Mapping[str, Any]) -> str:
    ver = e.get("failing_version")
    what = f"migration {ver}" if ver is not None else "migration"
    if e.get("file"):
        what += f" ({e['file']})"
    return _with_error(f"{_where(e)}: {what} failed", e)


def _dirty(e: Mapping[str, Any]) -> str:
    ver = next((e.get(k) for k in ("failing_version", "version_after", "version_before") if e.get(k) is not None), None)
    at = f" at version {ver}" if ver is not None else ""
    return f"{_where(e)} is dirty{at}: inspect the schema, then `migrator force V` with the last good version"


def _approval_requested(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: approval requested to migrate{_span(e)}"


def _pending(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: migrations pending since version {e.get('version_before')}"


def _test(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: test alert from `migrator notify test`"


@dataclass(frozen=True)
class EventType:
    """One kind of alert: its Slack title, how loud it is, and its one-line summary.

    ``severity`` is ``info`` (logged at INFO), ``warning`` or ``critical`` (logged at WARNING; a
    person should look). Without ``summary`` the line is "<db> (<env>): <title in lower case>[: error]";
    a caller's ``message=`` always wins.
    """

    name: str
    emoji: str
    title: str
    severity: Literal["info", "warning", "critical"]
    summary: Callable[[Mapping[str, Any]], str] | None = None

    def describe(self, e: Mapping[str, Any]) -> str:
        if self.summary is not None:
            return self.summary(e)
        return _with_error(f"{_where(e)}: {self.title[:1].lower()}{self.title[1:]}", e)


# The registry: a new event is one line here (callers then use its name with send_event).
EVENTS: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("migration.succeeded", ":white_check_mark:", "Migration succeeded", "info", _migrated),
        EventType("migration.failed", ":x:", "Migration failed", "critical", _migration_failed),
        EventType("database.dirty", ":warning:", "Database is dirty", "critical", _dirty),
        EventType("backup.failed", ":x:", "Backup failed", "critical"),
        EventType("approval.requested", ":raised_hand:", "Approval requested", "info", _approval_requested),
        EventType("approval.rejected", ":no_entry_sign:", "Approval rejected: nothing applied", "warning"),
        EventType("migration.pending", ":hourglass:", "Migrations pending", "info", _pending),
        EventType("recovery.completed", ":white_check_mark:", "Recovery completed", "info"),
        EventType("recovery.failed", ":x:", "Recovery failed", "critical"),
        EventType("rehearsal.failed", ":x:", "Rehearsal failed", "critical"),
        EventType("fleet.completed", ":white_check_mark:", "Fleet migration completed", "info"),
        EventType("fleet.failed", ":x:", "Fleet migration failed", "critical"),
        EventType(TEST_EVENT, ":bell:", "Test alert", "info", _test),
    )
}
EVENT_TYPES = tuple(name for name in EVENTS if name != TEST_EVENT)
ALL_EVENT_TYPES = tuple(EVENTS)


def _check_event(event: str) -> EventType:
    try:
        return EVENTS[event]
    except KeyError:
        raise ValueError(f"unknown event type {event!r}; use one of {', '.join(ALL_EVENT_TYPES)}") from None


def build_event(settings: Settings, event: str, **fields: Any) -> dict[str, Any]:
    """The event dict (schema_version 1); every string redacted, database reduced to its name."""
    kind = _check_event(event)
    import uuid

    register_url(settings.database_url)
    register_secret(settings.webhook_secret)
    register_secret(settings.webhook_url)
    given = {k: v for k, v in fields.items() if k in EVENT_FIELDS}
    extra = {k: v for k, v in fields.items() if k not in EVENT_FIELDS}
    db = given.get("database")
    duration = given.get("duration_ms")
    e: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": str(uuid.uuid4()),
        "event": event,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "environment": settings.environment,
        "database": database_name(db if db is not None else settings.database_url),
        "version_before": given.get("version_before"),
        "version_after": given.get("version_after"),
        "failing_version": given.get("failing_version"),
        "direction": given.get("direction"),
        "file": given.get("file"),
        "error": given.get("error"),
        "dirty": given.get("dirty"),
        "backup_key": given.get("backup_key"),
        "duration_ms": round(duration) if isinstance(duration, int | float) and math.isfinite(duration) else None,
        "run_id": given.get("run_id") or settings.run_id,
        "flow_run_url": given.get("flow_run_url") or settings.flow_run_url,
        "message": None,
        "details": extra,
    }
    for key in ("error", "file", "backup_key", "direction"):
        if e[key] is not None:
            e[key] = _clip(str(e[key]), MAX_TEXT)
    e = _redact_value(e)
    summary = str(given["message"]) if given.get("message") else kind.describe(e)
    e["message"] = _clip(redact(summary), MAX_TEXT)
    return e


def failure_fields(exc: BaseException) -> dict[str, Any]:
    """Event fields for a failure: a MigrationFailedError's version, file, line and PostgreSQL error."""
    from migrator.errors import MigrationFailedError

    if not isinstance(exc, MigrationFailedError):
        return {"error": str(exc)}
    return {
        "failing_version": exc.version,
        "direction": exc.direction,
        "file": exc.file,
        "error": exc.pg_message or str(exc),
        "dirty": exc.dirty,
        "version_after": exc.state_version,
        "line": exc.line,
        "column": exc.column,
    }


def _mrkdwn(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(e: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook message: ``text`` (notification line) plus blocks laid out for a phone."""
    kind = EVENTS.get(e["event"])
    emoji, title = (kind.emoji, kind.title) if kind else (":bell:", str(e["event"]))
    env = e.get("environment") or ""
    header = f"{emoji} {title}" + (f" · {env}" if env else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(header, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(_mrkdwn(e.get("message") or title), 3000)}},
    ]
    facts: list[tuple[str, Any]] = [("Database", e.get("database"))]  # environment is in the header
    before, after = e.get("version_before"), e.get("version_after")
    if before is not None or after is not None:
        facts.append(("Version", f"{'-' if before is None else before} → {'-' if after is None else after}"))
    facts += [
        ("Failing version", e.get("failing_version")),
        ("File", e.get("file")),
        ("Dirty", "yes" if e.get("dirty") else None),
        ("Backup", e.get("backup_key")),
        ("Duration", _duration(e.get("duration_ms"))),
        ("Run", e.get("run_id")),
    ]
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{label}*\n{_mrkdwn(value)}", 2000)}
        for label, value in facts
        if value is not None and value != ""
    ][:10]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if e.get("error"):
        err = _clip(str(e["error"]).replace("```", "'''"), 2800)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{_mrkdwn(err)}```"}})
    if e.get("flow_run_url"):
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open flow run"},
                        "url": _clip(str(e["flow_run_url"]), 3000),
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"`{e['event']}` · {e['time']} · id `{e['id']}`"}],
        }
    )
    text = _clip(f"{emoji} {title}: {e.get('message') or ''}", 3000)
    return {"text": text, "blocks": blocks}


def _duration(ms: Any) -> str | None:
    if not isinstance(ms, int | float):
        return None
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def render(e: Mapping[str, Any], fmt: str) -> bytes:
    """The exact bytes sent (and signed) for format ``json`` or ``slack``."""
    payload = slack_payload(e) if fmt == "slack" else e
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


# ------------------------------------------------------------------------------------------- signature


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>``, the X-Webhook-Signature value."""
    import hashlib
    import hmac

    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str | int | None,
    body: bytes,
    signature_header: str | None,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Receiver side: True only for a fresh timestamp and a matching signature (constant-time compare)."""
    import hmac

    if not secret or timestamp is None or not signature_header:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_seconds:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), signature_header.strip().lower().encode())


# -------------------------------------------------------------------------------------------- delivery


@dataclass
class DeliveryResult:
    """What happened to one event: delivered or not, after how many attempts, and why not."""

    event: str
    id: str
    delivered: bool
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    destination: str | None = None
    format: str = "json"
    signed: bool = False
    logged_only: bool = False
    duration_ms: int = 0
    response_bytes: int = 0  # body bytes read from the receiver's answers (bounded per attempt)

    def to_dict(self) -> dict[str, Any]:
        return {k: _redact_value(v) if isinstance(v, str) else v for k, v in asdict(self).items()}


def reset_notices() -> None:
    """Forget that the once-per-process notices were given (for tests)."""
    global _log_only_notice_given, _unsigned_notice_given
    with _log_only_notice_lock:
        _log_only_notice_given = False
        _unsigned_notice_given = False


def _notice_once(kind: str, message: str) -> None:
    global _log_only_notice_given, _unsigned_notice_given
    with _log_only_notice_lock:
        if kind == "log-only":
            if _log_only_notice_given:
                return
            _log_only_notice_given = True
        else:
            if _unsigned_notice_given:
                return
            _unsigned_notice_given = True
    log.warning("%s", redact(message))


def send_event(settings: Settings, event: str, **fields: Any) -> DeliveryResult:
    """Build ``event`` and deliver it (or log it when no webhook is configured). Never raises on delivery.

    Raises ValueError only for an unknown event type (a programming error, caught by the tests).
    """
    _check_event(event)
    try:
        return _send(settings, event, fields)
    except Exception as exc:  # a bug here must not replace the failure being reported
        message = redact(f"ALERT NOT DELIVERED: {event}: unexpected {type(exc).__name__}: {exc}")
        log.error("%s", message)
        return DeliveryResult(event=event, id="", delivered=False, error=message)


def _send(settings: Settings, event: str, fields: Mapping[str, Any]) -> DeliveryResult:
    e = build_event(settings, event, **fields)
    body_json = json.dumps(e, ensure_ascii=False, default=str)
    level = logging.INFO if EVENTS[event].severity == "info" else logging.WARNING
    fmt = settings.webhook_format if settings.webhook_format in FORMATS else "json"
    if not settings.webhook_url:
        _notice_once("log-only", "no webhook configured (WEBHOOK_URL / --webhook-url): events go to the log only")
        log.log(level, "event %s", redact(body_json))
        return DeliveryResult(event=event, id=e["id"], delivered=False, format=fmt, logged_only=True)
    result = DeliveryResult(
        event=event,
        id=e["id"],
        delivered=False,
        destination=destination(settings.webhook_url),
        format=fmt,
        signed=bool(settings.webhook_secret),
    )
    started = time.monotonic()
    try:
        options = check_webhook(settings)
        body = render(e, settings.webhook_format)
        _deliver(settings, e, body, options, result)
    except ConfigError as exc:
        result.error = redact(str(exc))
    except Exception as exc:  # alerting must never replace the failure it reports
        result.error = redact(f"unexpected {type(exc).__name__}: {exc}")
    result.duration_ms = int((time.monotonic() - started) * 1000)
    if result.delivered:
        log.info(
            "%s",
            redact(f"webhook delivered: {event} id {e['id']} to {result.destination} ({result.attempts} attempt(s))"),
        )
    else:
        log.error(
            "%s",
            redact(
                f"ALERT NOT DELIVERED: {event} id {e['id']} to {result.destination} after {result.attempts} "
                f"attempt(s): {result.error}; the event follows so it is not lost: {body_json}"
            ),
        )
    return result


def _is_cert_error(exc: BaseException) -> bool:
    import ssl

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Outcome:
    """One attempt: ``error`` is empty when delivered; ``final`` stops the retries (4xx, bad URL, TLS)."""

    status: int | None = None
    error: str = ""
    final: bool = False
    retry_after: float | None = None
    body_bytes: int = 0


def _deliver(
    settings: Settings, e: Mapping[str, Any], body: bytes, options: DeliveryOptions, result: DeliveryResult
) -> None:
    """POST ``body`` with retries, the whole of it within WEBHOOK_MAX_TOTAL; fills ``result`` in place.

    Runs on an event loop of its own (in a helper thread when the caller already runs one): asyncio
    cancellation is what bounds an attempt as a whole, including a receiver that trickles its status
    line or body a byte at a time (httpx's timeouts apply to each read, so they never fire then).
    """
    if not settings.webhook_secret:
        _notice_once(
            "unsigned",
            "WEBHOOK_SECRET is not set: webhook requests are sent unsigned; set WEBHOOK_SECRET (or "
            "--webhook-secret) so receivers can verify X-Webhook-Signature",
        )
    _run_coroutine(lambda: _deliver_async(settings, e, body, options, result))


def _run_coroutine(make: Callable[[], Any]) -> None:
    """Run ``make()``'s coroutine to the end on a private loop (never waiting for stray resolver threads)."""
    import asyncio

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(make())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        run()
        return
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=in_thread, name="webhook-delivery", daemon=True)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def _headers(e: Mapping[str, Any], body: bytes, secret: str | None, attempt: int) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"askfrank-migrator/{__version__}",
        IDEMPOTENCY_HEADER: str(e["id"]),
        EVENT_HEADER: str(e["event"]),
        ATTEMPT_HEADER: str(attempt),
    }
    if secret:
        ts = int(time.time())
        headers[TIMESTAMP_HEADER] = str(ts)
        headers[SIGNATURE_HEADER] = sign(secret, ts, body)
    return headers


async def _deliver_async(
    settings: Settings, e: Mapping[str, Any], body: bytes, options: DeliveryOptions, result: DeliveryResult
) -> None:
    import asyncio

    import httpx

    deadline = time.monotonic() + options.max_total
    url = settings.webhook_url or ""
    err = ""
    # verify=True is httpx's default, spelled out: certificate checks are never turned off.
    async with httpx.AsyncClient(
        verify=True, follow_redirects=False, trust_env=True, timeout=options.timeout
    ) as client:
        for attempt in range(1, options.max_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.error = f"{err}; gave up: WEBHOOK_MAX_TOTAL={options.max_total:g}s used up"
                return
            result.attempts = attempt
            headers = _headers(e, body, settings.webhook_secret, attempt)
            outcome = await _attempt(client, url, body, headers, min(options.timeout, remaining))
            result.status = outcome.status
            result.response_bytes += outcome.body_bytes
            if not outcome.error:
                result.delivered, result.error = True, None
                return
            err = outcome.error
            if outcome.final:
                result.error = err
                return
            wait = _next_wait(attempt, outcome, options, deadline)
            if isinstance(wait, str):
                result.error = f"{err}; gave up: {wait}"
                return
            result.error = err
            log.warning(
                "%s",
                redact(
                    f"webhook attempt {attempt}/{options.max_attempts} for {e['event']} failed: {err}; "
                    f"retrying in {wait:.2g}s"
                ),
            )
            await asyncio.sleep(wait)


def _next_wait(attempt: int, outcome: _Outcome, options: DeliveryOptions, deadline: float) -> float | str:
    """Seconds before the next attempt, or why there is none (as the end of the error message)."""
    if attempt == options.max_attempts:
        return f"after WEBHOOK_MAX_ATTEMPTS={options.max_attempts}"
    wait = backoff_delay(attempt, options.backoff_base, options.backoff_max)
    if outcome.retry_after is not None:
        wait = max(wait, outcome.retry_after)
    if time.monotonic() + wait >= deadline:
        why = f"Retry-After {outcome.retry_after:g}s" if outcome.retry_after is not None else f"next try in {wait:.2g}s"
        return f"{why} would pass WEBHOOK_MAX_TOTAL={options.max_total:g}s"
    return wait


async def _attempt(client: Any, url: str, body: bytes, headers: dict[str, str], timeout: float) -> _Outcome:
    """One POST: connect, send and the status line + headers within ``timeout`` as a whole; then at
    most RESPONSE_SNIPPET_BYTES of a non-2xx body, for at most SNIPPET_SECONDS (within ``timeout`` too)."""
    import asyncio

    import httpx

    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
    except TimeoutError:
        return _Outcome(error=f"no response within {timeout:.3g}s (WEBHOOK_TIMEOUT bounds each attempt)")
    except httpx.TimeoutException as exc:
        return _Outcome(error=f"no response within {timeout:.3g}s ({type(exc).__name__}, WEBHOOK_TIMEOUT)")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return _Outcome(error=f"invalid webhook URL: {exc}", final=True)
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        if _is_cert_error(exc):
            return _Outcome(
                error=f"TLS certificate verification failed ({reason}); fix the receiver's certificate "
                "or trust its CA with SSL_CERT_FILE (verification is never turned off)",
                final=True,
            )
        return _Outcome(error=f"connection error ({type(exc).__name__}): {reason}")
    try:
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(status=status)  # its body is not needed: never read it
        budget = min(SNIPPET_SECONDS, timeout - (time.monotonic() - started))
        snippet, read = await _snippet(response, budget)
    finally:
        await response.aclose()  # an unread body is not drained: the connection is dropped instead
    err = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return _Outcome(status, err, retry_after=retry_after, body_bytes=read)
    if status < 500:
        return _Outcome(status, f"{err} (not retried: the receiver rejected the request)", final=True, body_bytes=read)
    return _Outcome(status, err, body_bytes=read)


async def _snippet(response: Any, budget: float) -> tuple[str, int]:
    """(the first RESPONSE_SNIPPET_BYTES of the raw body as one clipped line, bytes read); an endless or
    trickling body costs at most that much memory and ``budget`` seconds."""
    import asyncio

    import httpx

    data = bytearray()
    read = 0
    if budget > 0:
        try:
            async with asyncio.timeout(budget), contextlib.aclosing(response.aiter_raw()) as chunks:
                async for chunk in chunks:
                    read += len(chunk)
                    data += chunk[: RESPONSE_SNIPPET_BYTES - len(data)]
                    if len(data) >= RESPONSE_SNIPPET_BYTES:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass  # the status code is the answer; the text is a courtesy
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return "", read  # raw bytes of a compressed body say nothing (and are never decompressed)
    text = bytes(data).decode("utf-8", "replace").strip().replace("\r", " ").replace("\n", " ")
    return _clip(text, 200), read
