"""argparse ``type=`` checks: a value PostgreSQL or the engine cannot use is refused while parsing
the command line (exit 2, one line naming the option) instead of failing later as an internal
error or, worse, at apply time on every migration."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from migrator.config import MAX_LOCK_WAIT_SECONDS, parse_interval_ms
from migrator.errors import ConfigError

MAX_BIGINT = 2**63 - 1  # schema_migrations.version and LIMIT are bigint


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def version(text: str) -> int:
    """A migration version: -1 (no version) up to 2^63-1, what schema_migrations can hold."""
    value = _int(text)
    if not -1 <= value <= MAX_BIGINT:
        raise argparse.ArgumentTypeError(
            f"{text} is not a version schema_migrations can hold (-1 to {MAX_BIGINT})"
        )
    return value


def count(text: str) -> int:
    """How many migrations or rows: 1 up to 2^63-1."""
    value = _int(text)
    if not 1 <= value <= MAX_BIGINT:
        raise argparse.ArgumentTypeError(f"{text} must be a whole number from 1 to {MAX_BIGINT}")
    return value


def seconds(text: str) -> float:
    """A lock wait: finite seconds from 0 to PostgreSQL's lock_timeout limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; e.g. 300") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_LOCK_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} must be a number of seconds from 0 to {MAX_LOCK_WAIT_SECONDS} (about 24 days); e.g. 300"
        )
    return value


def duration(option: str) -> Callable[[str], str]:
    """A PostgreSQL duration (``10s``, ``5min``) within PostgreSQL's limit; kept as written."""

    def check(text: str) -> str:
        try:
            parse_interval_ms(text, option)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).split("=", 1)[-1]) from None
        return text

    return check
