"""Alerts: migration events, built, rendered and handed to the webhook, never in the way of the real failure.

Both the CLI and the Prefect flows call :func:`send_event`. It builds a versioned event from the
registry (:data:`EVENTS`), renders it (generic JSON or Slack text + blocks) and delivers it through
:mod:`migrator.alerts.webhook` (signed, retried, bounded in time and memory). A delivery that finally fails
is logged at ERROR with the whole event and returned as ``DeliveryResult(delivered=False)``: alerting
must never hide or replace the failure it reports, so ``send_event`` does not raise (except
``ValueError`` for an unknown event type, a programming error).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from migrator.alerts.webhook import (
    ATTEMPT_HEADER,
    EVENT_HEADER,
    FORMATS,
    IDEMPOTENCY_HEADER,
    RESPONSE_SNIPPET_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryOptions,
    DeliveryResult,
    check_webhook,
    deliver,
    destination,
    notice_once,
    reset_notices,
    sign,
    verify_signature,
)
from migrator.config import Settings
from migrator.errors import ConfigError, migration_failure
from migrator.files import shown
from migrator.redact import redact, register_secret, register_url

# The notifier's API; the delivery names are re-exported from migrator.alerts.webhook so callers keep one import.
__all__ = [
    "ALL_EVENT_TYPES",
    "ATTEMPT_HEADER",
    "EVENTS",
    "EVENT_FIELDS",
    "EVENT_HEADER",
    "EVENT_TYPES",
    "FORMATS",
    "IDEMPOTENCY_HEADER",
    "MAX_TEXT",
    "RECOVERY_EVENTS",
    "RESPONSE_SNIPPET_BYTES",
    "SCHEMA_VERSION",
    "SIGNATURE_HEADER",
    "TEST_EVENT",
    "TIMESTAMP_HEADER",
    "DeliveryOptions",
    "DeliveryResult",
    "EventType",
    "build_event",
    "check_webhook",
    "database_name",
    "destination",
    "failure_fields",
    "recovery_event",
    "render",
    "reset_notices",
    "send_event",
    "severity_of",
    "sign",
    "slack_payload",
    "verify_signature",
]

log = logging.getLogger("migrator.alerts.notify")

SCHEMA_VERSION = 1
TEST_EVENT = "test"
MAX_TEXT = 4000  # long texts (a PostgreSQL error quoting a huge statement) are clipped to keep alerts readable

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
    if before is None and after is None:
        return ""
    return f" from version {_version(before)} to {_version(after)}"


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
    at = f" at version {_version(ver)}" if ver is not None else ""
    return f"{_where(e)} is dirty{at}: run `migrator recover` to see what ran and the ways out"


def _version(v: Any) -> str:
    """A version as every surface writes it: golang-migrate's -1 (nothing applied) is "none"."""
    return "none" if v == -1 else str(v)


def _recovery(outcome: str) -> Callable[[Mapping[str, Any]], str]:
    def summary(e: Mapping[str, Any]) -> str:
        after = e.get("version_after")
        state = (f"; now at version {_version(after)}, dirty: {'yes' if e.get('dirty') else 'no'}"
                 if after is not None else "")
        return _with_error(f"{_where(e)}: recovery {outcome}{state}", e)

    return summary


def _approval_requested(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: approval requested to migrate{_span(e)}"


def _pending(e: Mapping[str, Any]) -> str:
    return f"{_where(e)}: migrations pending since version {_version(e.get('version_before'))}"


def _schema_drift(e: Mapping[str, Any]) -> str:
    found = (e.get("details") or {}).get("differences") or []
    listed = "; ".join(str(d) for d in found[:5]) + (f"; ... {len(found) - 5} more" if len(found) > 5 else "")
    ver = e.get("version_after") if e.get("version_after") is not None else e.get("version_before")
    return (f"{_where(e)}: the schema differs from its migrations at version {ver}"
            + (f": {listed}" if listed else "") + "; run `migrator drift` for the list")


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
        EventType("backup.incomplete", ":warning:", "Newest backup is incomplete", "warning"),
        EventType("approval.requested", ":raised_hand:", "Approval requested", "info", _approval_requested),
        EventType("approval.rejected", ":no_entry_sign:", "Approval rejected: nothing applied", "warning"),
        EventType("migration.pending", ":hourglass:", "Migrations pending", "info", _pending),
        EventType("index.invalid", ":warning:", "INVALID index", "warning"),
        EventType("schema.drift", ":mag:", "Schema drift", "warning", _schema_drift),
        # recovery outcomes: recovered (clean), left dirty, refused, failed; only the first is "completed"
        EventType("recovery.completed", ":white_check_mark:", "Recovered: database clean", "info",
                  _recovery("recovered")),
        EventType("recovery.left_dirty", ":warning:", "Recovery: database left dirty", "warning",
                  _recovery("left dirty")),
        EventType("recovery.refused", ":no_entry_sign:", "Recovery refused: database still dirty", "warning",
                  _recovery("refused")),
        EventType("recovery.failed", ":x:", "Recovery failed: database still dirty", "critical",
                  _recovery("failed")),
        EventType("rehearsal.failed", ":x:", "Rehearsal failed", "critical"),
        EventType("fleet.completed", ":white_check_mark:", "Fleet migration completed", "info"),
        EventType("fleet.failed", ":x:", "Fleet migration failed", "critical"),
        EventType(TEST_EVENT, ":bell:", "Test alert", "info", _test),
    )
}
EVENT_TYPES = tuple(name for name in EVENTS if name != TEST_EVENT)
ALL_EVENT_TYPES = tuple(EVENTS)


# A recovery's outcome (migrator.recover.actions.RecoveryResult.outcome) and the event that reports it.
RECOVERY_EVENTS = {
    "completed": "recovery.completed",
    "left_dirty": "recovery.left_dirty",
    "refused": "recovery.refused",
    "failed": "recovery.failed",
}
_LOUDNESS = {"info": 0, "warning": 1, "critical": 2}


def recovery_event(outcome: str) -> str:
    """The event for a recovery outcome: ``recovery.completed`` only when the database is clean."""
    return RECOVERY_EVENTS.get(outcome, "recovery.failed")


def severity_of(event: str, dirty: object) -> str:
    """The event type's severity, raised to at least ``warning`` when the database is dirty after it:
    a pager that resolves on ``info`` must never close a live incident."""
    severity = _check_event(event).severity
    if dirty is True and _LOUDNESS[severity] < _LOUDNESS["warning"]:
        return "warning"
    return severity


def _check_event(event: str) -> EventType:
    try:
        return EVENTS[event]
    except KeyError:
        raise ValueError(f"unknown event type {event!r}; use one of {', '.join(ALL_EVENT_TYPES)}") from None


def build_event(settings: Settings, event: str, **fields: Any) -> dict[str, Any]:
    """The event dict (schema_version 1); every string redacted, database reduced to its name."""
    kind = _check_event(event)

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
        "severity": severity_of(event, given.get("dirty")),
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
    failure = migration_failure(exc)  # a Prefect cancel's TerminationSignal carries it as its cause
    if failure is None:
        return {"error": str(exc)}

    exc = failure
    return {
        "failing_version": exc.version,
        "direction": exc.direction,
        "file": shown(exc.file, exc.line) if exc.file else None,  # as database.dirty names it: file:line
        "error": exc.pg_message or str(exc),
        "dirty": exc.dirty,
        "version_after": exc.state_version,
        "line": exc.line,
        "column": exc.column,
        "statement": _clip(exc.statement, MAX_TEXT) if exc.statement else None,
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
        shown = ["?" if v is None else _version(v) for v in (before, after)]
        facts.append(("Version", f"{shown[0]} → {shown[1]}"))
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


# -------------------------------------------------------------------------------------------- sending


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
    level = logging.INFO if e["severity"] == "info" else logging.WARNING
    fmt = settings.webhook_format if settings.webhook_format in FORMATS else "json"
    if not settings.webhook_url:
        notice_once("log-only", "no webhook configured (WEBHOOK_URL / --webhook-url): events go to the log only")
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
        deliver(settings, e, body, options, result)
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
