"""What a rehearsal measures and reports: lock modes, holds, rewrites, lint predictions, and the
per-statement / per-migration / whole-run report (shared by ``rehearse``, ``rehearse_apply`` and
``rehearse_report``, so that none of them imports another's internals)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from migrator.errors import MigratorError

DEFAULT_LARGE_TABLE_BYTES = 10 * 1024 * 1024
SAMPLE_INTERVAL_SECONDS = 0.02
ESTIMATE_LABEL = (
    "the rehearsal's own time on the rehearsal server; production hardware, load and waits for "
    "locks held by running sessions can make it longer"
)

# pg_locks mode -> the name people read in PostgreSQL's documentation, strongest last.
MODES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
STRENGTH = {name: i for i, name in enumerate(MODES.values())}
# What each mode blocks for the application (plain SELECT / INSERT-UPDATE-DELETE).
BLOCKS = {
    "SHARE": "writes",
    "SHARE ROW EXCLUSIVE": "writes",
    "EXCLUSIVE": "writes",
    "ACCESS EXCLUSIVE": "reads and writes",
}
KINDS = {"r": "table", "p": "table", "m": "materialized view", "i": "index", "I": "index", "S": "sequence",
          "v": "view", "f": "foreign table", "t": "toast", "c": "type"}
TABLE_KINDS = ("table", "materialized view")

# validate's rules that predict a blocking lock, and what they predict.
LOCK_RULES = {
    "MIG002": "ACCESS EXCLUSIVE while the whole table is scanned",
    "MIG003": "SHARE (blocks writes) until the index is built",
    "MIG004": "a write-blocking lock while every row is validated",
    "MIG005": "ACCESS EXCLUSIVE and a table rewrite",
    "MIG010": "row locks on every row until commit",
    "MIG013": "ACCESS EXCLUSIVE and a table rewrite",
    "MIG014": "ACCESS EXCLUSIVE while the unique index is built",
    "MIG016": "ACCESS EXCLUSIVE on the index's table",
}

# --------------------------------------------------------------------------------------------- report


@dataclass
class LockHold:
    """One lock a statement took, and how long it was held."""

    relation: str
    kind: str
    mode: str
    statement: int  # 1-based index of the statement that took it
    held_ms: int  # from that statement's start until COMMIT (or the end of an autocommit statement)
    size_bytes: int | None  # the relation's size before the migration (None: created by it)
    blocks: str | None  # "reads and writes", "writes", or None
    large: bool  # a blocking lock on a table of at least large_table_bytes
    observed: str  # "pg_locks after the statement" or "sampled while it ran"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rewrite:
    """A relation whose relfilenode changed: PostgreSQL wrote a new copy of it."""

    relation: str
    kind: str
    statement: int
    size_before: int | None
    size_after: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """A validate rule that predicted a lock, next to what the rehearsal measured."""

    rule: str
    name: str
    line: int | None
    statement: int | None
    predicted: str
    message: str
    measured: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatementReport:
    index: int
    line: int
    text: str
    duration_ms: float
    locks: list[LockHold] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "locks": [lk.to_dict() for lk in self.locks]}


@dataclass
class MigrationReport:
    version: int
    name: str
    direction: str
    file: str
    transactional: bool
    why_not_transactional: str | None
    duration_ms: float = 0.0
    statements: list[StatementReport] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    failed: bool = False
    error: str | None = None
    location: str | None = None  # file:line:column of the failing statement

    @property
    def locks(self) -> list[LockHold]:
        return [lk for s in self.statements for lk in s.locks]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["statements"] = [s.to_dict() for s in self.statements]
        d["locks"] = [lk.to_dict() for lk in self.locks]
        return d


@dataclass
class RehearsalReport:
    """Everything a rehearsal found; ``ok`` False when a migration would fail."""

    environment: str
    database: str
    backup_key: str | None
    backup_size: int | None
    scratch_server: str
    scratch_database: str | None
    kept: bool
    large_table_bytes: int
    version_before: int | None = None
    version_after: int | None = None
    restore_seconds: float = 0.0
    apply_seconds: float = 0.0
    total_seconds: float = 0.0
    estimate_seconds: float = 0.0
    estimate_label: str = ESTIMATE_LABEL
    migrations: list[MigrationReport] = field(default_factory=list)
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)
    server_version: str | None = None
    backup_created_at: str | None = None  # when the restored backup was taken (ISO, UTC)
    backup_problem: str | None = None  # a newer backup that could not be used: the warning (issue 19)
    cleanup: str | None = None  # what the run removed of killed runs' scratch databases, one line

    @property
    def failure(self) -> MigrationReport | None:
        return next((m for m in self.migrations if m.failed), None)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def failure_message(self) -> str | None:
        m = self.failure
        if m is None:
            return None
        return (
            f"rehearsal: migration {m.version} ({m.name}) would fail at {m.location or m.file}: {m.error}; "
            "caught on the restored copy, nothing was applied to the source database"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["migrations"] = [m.to_dict() for m in self.migrations]
        d["ok"] = self.ok
        d["failure"] = self.failure_message()
        return d


# ------------------------------------------------------------------------------------------ options


def human_bytes(n: int | None) -> str:
    if n is None:
        return "new"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_ms(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60000:.1f} min"


class RehearsalStoppedError(MigratorError):
    """SIGTERM during a rehearsal (CLI): the scratch database is dropped on the way out."""

    exit_code = 143
