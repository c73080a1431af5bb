"""What backups exist, which of them are complete, and which one is ``latest``.

A backup is complete when its metadata records a sha256 and a size equal to the stored object's.
Only complete backups are ``latest``, count for retention, or are restored by the drill; incomplete
ones (an object some older version or another tool left without its sha256) are listed, marked,
and never chosen. Interrupted uploads are not backups at all: see ``Store.leftovers``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from migrator.backup.errors import BackupError
from migrator.backup.keys import configured_database_name, group_prefix, open_destination, parse_key
from migrator.backup.stores import S3Store, Store, StoredObject
from migrator.config import Settings

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class BackupInfo:
    """One listed backup; time and version come from its key, completeness from its metadata."""

    key: str
    url: str
    size: int
    environment: str | None
    database: str | None
    version: int | None
    created_at: datetime | None
    complete: bool = True
    problem: str | None = None  # why it is not complete
    stored_at: datetime | None = None  # when the store wrote the object (its mtime / LastModified)

    @property
    def age_seconds(self) -> float | None:
        if self.created_at is None:
            return None
        return (datetime.now(UTC) - self.created_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        d["stored_at"] = self.stored_at.isoformat() if self.stored_at else None
        d["age_seconds"] = round(self.age_seconds, 1) if self.age_seconds is not None else None
        return d


def metadata_int(meta: dict[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def tool_major(meta: dict[str, str]) -> int:
    """Major version of the pg_dump that wrote the backup (0 when not recorded)."""
    m = re.match(r"(\d+)", meta.get("pg-dump-version", ""))
    return int(m.group(1)) if m else 0


def incomplete_reason(meta: dict[str, str] | None, size: int) -> str | None:
    """Why an object with this metadata is not a complete backup, or None when it is one."""
    meta = meta or {}
    if not _SHA256_RE.match(meta.get("sha256", "")):
        return "no sha256 in its metadata (the upload was interrupted, or it was not made by migrator)"
    recorded = metadata_int(meta, "size")
    if recorded is None:
        return "no size in its metadata"
    if recorded != size:
        return f"its metadata records {recorded} bytes, the stored object has {size}"
    return None


def _info(store: Store, obj: StoredObject) -> BackupInfo:
    stored_at = obj.last_modified
    if stored_at is not None and stored_at.tzinfo is None:
        stored_at = stored_at.replace(tzinfo=UTC)
    parsed = parse_key(obj.key)
    if parsed:
        env, db, created, version = parsed
        return BackupInfo(obj.key, store.url_for(obj.key), obj.size, env, db, version, created, stored_at=stored_at)
    return BackupInfo(obj.key, store.url_for(obj.key), obj.size, None, None, None, stored_at, stored_at=stored_at)


def _checked(store: Store, info: BackupInfo) -> BackupInfo:
    try:
        head = store.head(info.key)
    except BackupError as exc:  # unreadable metadata (a broken sidecar): not usable as a backup
        info.complete, info.problem = False, str(exc)
        return info
    info.problem = incomplete_reason(head.metadata, head.size)
    info.complete = info.problem is None
    return info


def _check_all(store: Store, infos: list[BackupInfo]) -> list[BackupInfo]:
    """Read every backup's metadata (S3: HEAD requests, a few at a time; a folder: the sidecars)."""
    if isinstance(store, S3Store) and len(infos) > 1:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="backup-head") as pool:
            return list(pool.map(lambda i: _checked(store, i), infos))
    return [_checked(store, i) for i in infos]


def newest_first(infos: Iterable[BackupInfo]) -> list[BackupInfo]:
    return sorted(infos, key=lambda i: (i.created_at or _EPOCH, i.key), reverse=True)


def list_in(store: Store, prefix: str) -> list[BackupInfo]:
    """Backups under ``prefix``, newest first, each checked for completeness."""
    return newest_first(_check_all(store, [_info(store, o) for o in store.list(prefix)]))


def list_backups(
    settings: Settings,
    *,
    destination: str | None = None,
    database: str | None = None,
    all_groups: bool = False,
) -> list[BackupInfo]:
    """Backups of the configured environment and database (or all of them), newest first; incomplete
    ones are included with ``complete=False`` and the reason in ``problem``."""
    store = open_destination(settings, destination)
    return list_in(store, group_prefix(store, settings, database, all_groups))


def resolve_key(store: Store, key: str, settings: Settings, database: str | None) -> str:
    """A key as given (also as a full URL), or ``latest``: the newest COMPLETE backup of the group."""
    key = key.strip()
    if key != "latest":
        base = store.url_for("")
        if key.startswith(base):
            key = key[len(base) :]
        return key.lstrip("/") if isinstance(store, S3Store) else key
    db = database or configured_database_name(settings)
    prefix = group_prefix(store, settings, db)
    candidates = [_info(store, o) for o in store.list(prefix)]
    skipped: list[BackupInfo] = []
    for info in newest_first(i for i in candidates if i.created_at is not None):
        if _checked(store, info).complete:  # newest first: usually one HEAD
            for bad in skipped:
                log.warning("latest: skipped incomplete backup %s (%s)", bad.url, bad.problem)
            return info.key
        skipped.append(info)
    where = f"database {db!r} (environment {settings.environment!r}) in {store.url}"
    if skipped:
        raise BackupError(
            f"no complete backups of {where}: {len(skipped)} incomplete ({skipped[0].problem}); "
            "run `migrator backup` to take one"
        )
    raise BackupError(f"no backups of {where}; run `migrator backup` first or check --to / BACKUP_URL and --env")
