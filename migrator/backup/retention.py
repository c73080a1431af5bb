"""Retention: which complete backups to keep, and the remains of interrupted backups to remove.

Only complete backups count: the newest ``keep_last`` and every one younger than ``keep_days`` are
kept, and always the newest complete one, so an incomplete object can never be the backup a policy
keeps while it deletes the good ones. Incomplete objects and leftovers of interrupted uploads
(unfinished multipart uploads, staging objects, ``.partial`` files) are removed once older than the
grace period (an upload still running is younger than that). A leftover whose name says it was
written on this host by a process that is gone goes at once, and one whose process still runs
stays whatever its age (issue 19; ``migrator.leftover``). ``sweep_interrupted`` does the same at the
start of every backup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from migrator.backup.catalog import BackupInfo, list_in
from migrator.backup.errors import BackupError
from migrator.backup.keys import group_prefix, open_destination
from migrator.backup.stores import Leftover, Store
from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.leftover import Removed, removable, summary

log = logging.getLogger(__name__)

DEFAULT_ORPHAN_GRACE_HOURS = 24.0  # longer than any backup runs (the Prefect backup task stops at 4 h)
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class PruneResult:
    """What a retention policy keeps and deletes (or would delete, on a dry run), and the incomplete
    objects and upload leftovers removed (``waiting``: those still within the grace period)."""

    keep_last: int
    keep_days: float
    dry_run: bool
    kept: list[BackupInfo]
    deleted: list[BackupInfo]
    grace_hours: float = DEFAULT_ORPHAN_GRACE_HOURS
    incomplete: list[BackupInfo] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    waiting: list[BackupInfo | Leftover] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_last": self.keep_last,
            "keep_days": self.keep_days,
            "dry_run": self.dry_run,
            "kept": [b.to_dict() for b in self.kept],
            "deleted": [b.to_dict() for b in self.deleted],
            "grace_hours": self.grace_hours,
            "incomplete": [b.to_dict() for b in self.incomplete],
            "leftovers": [x.to_dict() for x in self.leftovers],
            "waiting": [x.to_dict() for x in self.waiting],
        }

    @property
    def freed_bytes(self) -> int:
        items: list[BackupInfo | Leftover] = [*self.deleted, *self.incomplete, *self.leftovers]
        return sum(x.size or 0 for x in items)


def retention(
    backups: list[BackupInfo], keep_last: int, keep_days: float, now: datetime | None = None
) -> tuple[list[BackupInfo], list[BackupInfo]]:
    """(kept, deleted) among COMPLETE backups, per environment/database group: the newest ``keep_last``,
    all younger than ``keep_days``, and always the newest; backups of unknown age are kept.
    Incomplete backups are in neither list."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=keep_days)
    groups: dict[tuple[str | None, str | None], list[BackupInfo]] = {}
    for b in backups:
        if b.complete:
            groups.setdefault((b.environment, b.database), []).append(b)
    kept: list[BackupInfo] = []
    deleted: list[BackupInfo] = []
    for items in groups.values():
        items.sort(key=lambda i: (i.created_at or _EPOCH, i.key), reverse=True)
        for index, b in enumerate(items):
            if index == 0 or index < keep_last or b.created_at is None or b.created_at > cutoff:
                kept.append(b)
            else:
                deleted.append(b)
    return kept, deleted


def prune_backups(
    settings: Settings,
    *,
    keep_last: int,
    keep_days: float,
    destination: str | None = None,
    database: str | None = None,
    all_groups: bool = False,
    yes: bool = False,
    now: datetime | None = None,
    orphan_grace_hours: float = DEFAULT_ORPHAN_GRACE_HOURS,
) -> PruneResult:
    """Apply the retention policy and remove old incomplete objects and upload leftovers; deletes only
    with ``yes`` (otherwise a dry run)."""
    if keep_last < 0 or keep_days < 0:
        raise ConfigError("--keep-last and --keep-days must be >= 0")
    if not orphan_grace_hours >= 0 or orphan_grace_hours == float("inf"):
        raise ConfigError("--orphan-grace must be a number of hours >= 0")
    store = open_destination(settings, destination)
    prefix = group_prefix(store, settings, database, all_groups)
    backups = list_in(store, prefix)
    kept, deleted = retention(backups, keep_last, keep_days, now)
    result = PruneResult(keep_last, keep_days, not yes, kept, deleted, orphan_grace_hours)
    grace = orphan_grace_hours * 3600
    for b in backups:
        if not b.complete:
            age = _age(b.stored_at or b.created_at, now)
            (result.incomplete if age is not None and age >= grace else result.waiting).append(b)
    for x in store.leftovers(prefix):
        ok, x.reason = removable(x.maker, _aware(x.started_at), max_age_hours=orphan_grace_hours, now=now)
        (result.leftovers if ok else result.waiting).append(x)
    if yes:
        _delete(store, result)
    return result


def find_leftovers(
    settings: Settings, *, destination: str | None = None, database: str | None = None, all_groups: bool = False
) -> list[Leftover]:
    """Remains of interrupted backups in scope (what ``prune`` removes once older than the grace period)."""
    store = open_destination(settings, destination)
    return list(store.leftovers(group_prefix(store, settings, database, all_groups)))


def sweep_interrupted(store: Store, prefix: str, *, max_age_hours: float = DEFAULT_ORPHAN_GRACE_HOURS
                      ) -> tuple[list[Leftover], str | None]:
    """Remove what interrupted backups left under ``prefix`` (and the folder's root) when their
    process is gone or they are older than ``max_age_hours``; (removed, the one line saying so).

    Run at the start of every backup. Best effort: a store that refuses the listing or a delete (a
    PutObject-only role) is logged and the backup goes on; ``backups prune`` reports the rest."""
    removed: list[Leftover] = []
    try:
        for x in store.leftovers(prefix):
            ok, why = removable(x.maker, _aware(x.started_at), max_age_hours=max_age_hours)
            if ok:
                store.remove(x)
                x.reason = why
                removed.append(x)
    except (BackupError, OSError) as exc:
        log.warning("could not look for leftovers of interrupted backups in %s: %s", store.url, exc)
    line = summary("leftover of an interrupted backup", "leftovers of interrupted backups",
                   [Removed(x.key, x.size, x.reason or "") for x in removed])
    if line:
        log.info("%s", line)
    return removed, line


def _aware(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _age(when: datetime | None, now: datetime | None) -> float | None:
    if when is None:
        return None
    return ((now or datetime.now(UTC)) - when).total_seconds()


def _delete(store: Store, result: PruneResult) -> None:
    for b in [*result.deleted, *result.incomplete]:
        store.delete(b.key)
        log.info("deleted %s backup %s", "incomplete" if not b.complete else "expired", b.url)
    for x in result.leftovers:
        store.remove(x)
        log.info("removed %s %s (%s bytes)", x.kind, store.url_for(x.key), x.size)
