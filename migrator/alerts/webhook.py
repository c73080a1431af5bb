"""Webhook delivery: the HTTP side of alerts, bounded in time and memory.

One POST per attempt, signed with HMAC-SHA256 over ``"{timestamp}.{raw body}"``; exponential backoff
with jitter on connection errors, timeouts, 429 (``Retry-After`` honoured) and 5xx, no retry on other
4xx. The whole delivery (every attempt and wait) fits in WEBHOOK_MAX_TOTAL, each attempt as a whole
in WEBHOOK_TIMEOUT, and at most RESPONSE_SNIPPET_BYTES of an answer are read. ``migrator.alerts.notify``
builds the events and calls :func:`deliver`; httpx is imported only when something is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from migrator import __version__
from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.redact import redact
from migrator.retry import backoff_delay, retry_after_seconds

log = logging.getLogger("migrator.alerts.notify")  # one logger for alerts, whichever module speaks

FORMATS = ("json", "slack")
RESPONSE_SNIPPET_BYTES = 4096  # at most this much of a receiver's answer is read (quoted in the error)
SNIPPET_SECONDS = 1.0  # and for at most this long: the status code is what matters

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Webhook-Event"
ATTEMPT_HEADER = "X-Webhook-Attempt"

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


# ------------------------------------------------------------------------------------------- signature


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>``, the X-Webhook-Signature value."""
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
        return {k: redact(v) if isinstance(v, str) else v for k, v in asdict(self).items()}


def reset_notices() -> None:
    """Forget that the once-per-process notices were given (for tests)."""
    global _log_only_notice_given, _unsigned_notice_given
    with _log_only_notice_lock:
        _log_only_notice_given = False
        _unsigned_notice_given = False


def notice_once(kind: str, message: str) -> None:
    """Log ``message`` once per process per ``kind`` ("log-only" or "unsigned")."""
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


def _is_cert_error(exc: BaseException) -> bool:
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


def deliver(
    settings: Settings, e: Mapping[str, Any], body: bytes, options: DeliveryOptions, result: DeliveryResult
) -> None:
    """POST ``body`` with retries, the whole of it within WEBHOOK_MAX_TOTAL; fills ``result`` in place.

    Runs on an event loop of its own (in a helper thread when the caller already runs one): asyncio
    cancellation is what bounds an attempt as a whole, including a receiver that trickles its status
    line or body a byte at a time (httpx's timeouts apply to each read, so they never fire then).
    """
    if not settings.webhook_secret:
        notice_once(
            "unsigned",
            "WEBHOOK_SECRET is not set: webhook requests are sent unsigned; set WEBHOOK_SECRET (or "
            "--webhook-secret) so receivers can verify X-Webhook-Signature",
        )
    _run_coroutine(lambda: _deliver_async(settings, e, body, options, result))


def _run_coroutine(make: Callable[[], Any]) -> None:
    """Run ``make()``'s coroutine to the end on a private loop (never waiting for stray resolver threads)."""
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
    return (text if len(text) <= 200 else text[:199] + "…"), read
