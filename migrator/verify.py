"""Post-apply verification: the database is clean, at the expected version, without an INVALID
index and without drift.

The core of the ``verify`` step of the flows (the task is a thin wrapper), kept out of
``engine.py`` so the engine stays the apply path only. Plain Python, no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrator.config import Settings
from migrator.errors import MigratorError


class VerifyError(MigratorError):
    """After apply, the database is not what the plan said it would be."""


@dataclass
class Verification:
    """What verify saw: the status, the expected version and any drift (``ok`` when nothing is wrong)."""

    status: dict[str, Any]
    expected_version: int
    drift: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**self.status, "expected_version": self.expected_version, "drift": self.drift, "ok": self.ok}


def verify(settings: Settings, expected_version: int, check_drift: bool = True) -> Verification:
    """Check the database against ``expected_version``; raise VerifyError naming every problem."""
    from migrator import files
    from migrator.engine import Migrator
    from migrator.lint import drift as drift_mod

    status = Migrator(settings).status()
    problems: list[str] = []
    if status.dirty:
        problems.append(f"database is dirty at version {status.version}")
    if status.version != expected_version:
        problems.append(f"database is at version {status.version}, expected {expected_version}")
    problems.extend(f"INVALID index {index}: drop it (DROP INDEX CONCURRENTLY) and build it again"
                    for index in status.invalid_indexes)
    drift: list[str] = []
    if check_drift:
        drift = [
            f"{f.location()}: {f.message}"
            for f in drift_mod.check(settings, files.load(settings.migrations_path))
            if f.severity == "error"
        ]
        problems.extend(drift)
    result = Verification(status=status.to_dict(), expected_version=expected_version, drift=drift, problems=problems)
    if problems:
        raise VerifyError("verify failed: " + "; ".join(problems))
    return result
