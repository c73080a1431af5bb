"""The restore drill: prove that ``latest`` restores, into a scratch database dropped afterwards.

Not re-exported by ``migrator.backup``: it needs ``migrator.db`` and ``migrator.scratch``, which the
package's face keeps out of the CLI's start-up.

It restores the newest complete backup, checks the restored schema version against the one the
backup recorded, and names the newest backup when it is incomplete (an older one had to be
restored): that finding is the drill's point, not a detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrator import db
from migrator.backup.catalog import list_backups
from migrator.backup.keys import parse_key
from migrator.backup.restore import RestoreResult, restore_backup
from migrator.config import Settings
from migrator.errors import MigratorError
from migrator.scratch import scratch_database


@dataclass(frozen=True)
class DrillResult:
    """What the drill restored (key, sha256, schema versions; ``target`` is the scratch database as
    shown, without credentials) and, when the newest backup was incomplete and an older one had to be
    restored, that finding as one line."""

    restore: RestoreResult
    newest_problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flow's result and ``--json``: the restore's fields and ``newest_problem``."""
        return {**self.restore.to_dict(), "newest_problem": self.newest_problem}


def restore_drill(settings: Settings, say: Callable[[str], None], warn: Callable[[str], None]) -> DrillResult:
    """Restore ``latest`` into a scratch database and check its schema version; raises when it differs."""
    newest = next((b for b in list_backups(settings) if b.created_at is not None), None)
    with scratch_database(db.resolve(settings), "drill", say=say) as target:
        result = restore_backup(settings, "latest", target)
    parsed = parse_key(result.key)
    taken = f"{parsed[2]:%Y-%m-%d %H:%M:%S} UTC" if parsed else "at an unknown time"
    say(f"restored {result.key} ({result.size} bytes, taken {taken}) into a scratch database: "
        f"schema version {result.schema_version}")
    problem = None
    if newest is not None and not newest.complete and newest.key != result.key:
        problem = (f"the newest backup {newest.key} is INCOMPLETE ({newest.problem}); the drill "
                   f"restored the newest complete one, {result.key}; take a new backup")
        warn(problem)
    if result.backup_schema_version is not None and result.schema_version != result.backup_schema_version:
        raise MigratorError(f"restored {result.key} is at schema version {result.schema_version}, but the backup "
                            f"recorded {result.backup_schema_version}")
    return DrillResult(result, newest_problem=problem)
