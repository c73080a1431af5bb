"""Backoff and ``Retry-After`` for the HTTP clients that retry (webhook alerts, the CD trigger).

One place, so an alert and a trigger behave alike towards a busy server: exponential backoff with
jitter (clients retrying at once do not stay in step) and the server's ``Retry-After`` read in both
of its forms.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry ``attempt`` + 1: exponential from ``base``, capped at ``cap``, with "equal
    jitter" (half the step fixed, half random)."""
    step = min(cap, base * (2 ** (attempt - 1)))
    return step / 2 + random.uniform(0, step / 2)
