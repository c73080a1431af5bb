"""Post-apply verification: the database is clean, at the expected version, without an INVALID
index and without drift.

Two drifts: the files against the audit trail's checksums (``migrator.lint.drift``) and the live
schema against what the applied migrations produce (``migrator.schema.drift``). Live schema drift
FAILS verify by default (``schema_drift="fail"``): verify's promise is that the database is what its
migrations say, and a hand-made index or type change breaks it as surely as a wrong version; an
INVALID index (a failed ``CREATE INDEX CONCURRENTLY``) counts. Objects managed elsewhere belong in
the ignore file; an environment may choose ``warn`` (reported, not failed) or ``off``.

The core of the ``verify`` step of the flows (the task is a thin wrapper), kept out of
``engine.py`` so the engine stays the apply path only. Plain Python, no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator import files
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import MigratorError
from migrator.lint import drift as drift_mod
from migrator.schema.drift import check


class VerifyError(MigratorError):
    """After apply, the database is not what the plan said it would be. ``schema_drift`` holds the live
    schema drift lines, ``only_schema_drift`` says nothing else was wrong (the flows then alert
    ``schema.drift``, not ``migration.failed``: the migration itself is applied)."""

    def __init__(self, message: str, schema_drift: list[str] | None = None, only_schema_drift: bool = False) -> None:
        super().__init__(message)
        self.schema_drift = list(schema_drift or [])
        self.only_schema_drift = only_schema_drift

    def __reduce__(self) -> tuple[object, ...]:
        return (VerifyError, (str(self), self.schema_drift, self.only_schema_drift))


@dataclass
class Verification:
    """What verify saw: the status, the expected version and any drift (``ok`` when nothing is wrong)."""

    status: dict[str, Any]
    expected_version: int
    drift: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    schema_drift: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**self.status, "expected_version": self.expected_version, "drift": self.drift,
                "schema_drift": self.schema_drift, "warnings": self.warnings, "ok": self.ok}


SCHEMA_DRIFT_MODES = ("fail", "warn", "off")


def verify(settings: Settings, expected_version: int, check_drift: bool = True, schema_drift: str = "fail", *,
           drift_ignore: Path | None = None, scratch_url: str | None = None) -> Verification:
    """Check the database against ``expected_version``; raise VerifyError naming every problem.

    ``check_drift`` False skips both drift checks; ``schema_drift`` is ``fail``, ``warn`` or ``off``."""
    if schema_drift not in SCHEMA_DRIFT_MODES:
        raise ValueError(f"schema_drift must be one of {SCHEMA_DRIFT_MODES}, not {schema_drift!r}")

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
    live: list[str] = []
    warnings: list[str] = []
    if check_drift and schema_drift != "off" and not problems:
        live, trouble = _schema_drift(settings, drift_ignore, scratch_url)
        found = [f"schema drift: {line}" for line in live] + trouble
        (problems if schema_drift == "fail" else warnings).extend(found)
    result = Verification(status=status.to_dict(), expected_version=expected_version, drift=drift, problems=problems,
                          schema_drift=live, warnings=warnings)
    if problems:
        hint = ""
        if live and schema_drift == "fail":
            hint = ("; the migration is applied: run `migrator drift --json` for both sides, then put each change in a "
                    "new migration, undo it, or list it in migrations/.driftignore")
        only = bool(live) and schema_drift == "fail" and len(problems) == len(live)
        raise VerifyError("verify failed: " + "; ".join(problems) + hint, live if schema_drift == "fail" else [], only)
    return result


def _schema_drift(settings: Settings, ignore: Path | None, scratch_url: str | None) -> tuple[list[str], list[str]]:
    """(difference lines, why it could not be checked): a check that cannot run never passes as "no drift"."""
    try:
        report = check(settings, ignore=ignore, scratch_url=scratch_url)
    except MigratorError as exc:
        return [], [f"schema drift not checked: {exc}; fix that, or set drift.verify: warn for this environment"]
    return report.lines, []
