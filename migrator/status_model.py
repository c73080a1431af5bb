"""What ``status`` reports (``Status`` and its parts): plain data, no psycopg, so the CLI's printing and
the tasks' artifacts can use it without the engine's imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from migrator import files

NO_VERSION = -1
# Every INVALID index not being built right now (schema, index, table); ``%%``: psycopg's escape for %
INVALID_INDEXES_SQL = """
SELECT n.nspname, c.relname, t.relname
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)
"""

MigrationState = Literal["applied", "pending", "missing-file"]
StatementOutcome = Literal["done", "failed", "not run"]


@dataclass
class MigrationInfo:
    version: int
    name: str
    state: MigrationState
    has_down: bool
    applied_at: str | None = None
    checksum: str | None = None
    label: str = ""  # as the files spell it (000010_add_x); "" when no file holds the version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatementState:
    """One statement of the file a dirty attempt ran, and how far the attempt got with it."""

    index: int  # 1-based
    line: int
    text: str
    state: StatementOutcome


@dataclass
class DirtyFailure:
    """What the attempt that left the database dirty did, from its audit row and the file on disk."""

    version: int
    name: str | None
    direction: str
    file: str | None
    line: int | None
    statement: str | None
    pg_error: str | None
    run_id: str | None
    attempt_id: int
    started_at: str
    finished: bool  # False: the "started" row was never completed (kill -9, server crash)
    file_changed: bool  # the file's statements differ from those the attempt ran
    statements: list[StatementState] = field(default_factory=list)
    reverted: int | None = None  # statements of the down file a later revert ran before it stopped
    revert_total: int | None = None
    revert_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Status:
    """The database's position against the migrations folder."""

    database: str
    table: str
    version: int
    dirty: bool
    latest: int
    applied: list[MigrationInfo]
    pending: list[MigrationInfo]
    version_has_file: bool
    problems: list[dict[str, str]] = field(default_factory=list)
    failure: DirtyFailure | None = None  # when dirty and the audit trail has the attempt
    invalid_indexes: list[str] = field(default_factory=list)  # left by a failed or killed CONCURRENTLY build

    @property
    def is_current(self) -> bool:
        return not self.dirty and not self.pending

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "table": self.table,
            "version": self.version,
            "dirty": self.dirty,
            "latest": self.latest,
            "current": self.is_current,
            "version_has_file": self.version_has_file,
            "applied": [m.to_dict() for m in self.applied],
            "pending": [m.to_dict() for m in self.pending],
            "problems": self.problems,
            "failure": self.failure.to_dict() if self.failure else None,
            "invalid_indexes": self.invalid_indexes,
        }


def build_status(
    database: str,
    table: str,
    ms: files.MigrationSet,
    version: int,
    dirty: bool,
    applied_at: dict[int, tuple[str, str | None]],
) -> Status:
    """The database's position (``version``, ``dirty``, ``applied_at``: version -> (time, sha256)) against ``ms``."""
    applied: list[MigrationInfo] = []
    pending: list[MigrationInfo] = []
    for m in ms:
        at, checksum = applied_at.get(m.version, (None, None))
        info = MigrationInfo(m.version, m.name, "applied", m.down is not None, at, checksum, m.label)
        if m.version <= version:
            applied.append(info)
        else:
            info.state = "pending"
            info.applied_at = None
            pending.append(info)
    has_file = version == NO_VERSION or ms.get(version) is not None
    if not has_file:
        applied.append(MigrationInfo(version, "?", "missing-file", False))
    return Status(
        database=database,
        table=table,
        version=version,
        dirty=dirty,
        latest=ms.latest,
        applied=applied,
        pending=pending,
        version_has_file=has_file,
        problems=[p.to_dict() for p in ms.problems],
    )
