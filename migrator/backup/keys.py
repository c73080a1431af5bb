"""Where a backup lives: the destination, and the key layout that makes keys sort by time.

Keys: ``{prefix}/{environment}/{database}/{UTC timestamp}_v{version}.dump``; the environment and
database form a "group" (``latest`` and retention work per group).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from psycopg.conninfo import conninfo_to_dict

from migrator.backup.stores import Store, open_store
from migrator.config import Settings, prepare_url
from migrator.embedded import DEFAULT_DATABASE

DEFAULT_BACKUP_URL = "file://./backups"

_KEY_RE = re.compile(
    r"(?:^|/)(?P<env>[^/]+)/(?P<db>[^/]+)/(?P<ts>\d{8}T\d{6})(?:\.(?P<ms>\d{3}))?Z_v(?P<version>-?\d+|none)\.dump$"
)
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


def open_destination(settings: Settings, url: str | None) -> Store:
    """The store for ``--to``/``--from``, else BACKUP_URL, else ``./backups``."""
    return open_store(url or settings.backup_url or DEFAULT_BACKUP_URL)


def safe_name(name: str) -> str:
    return _SAFE_RE.sub("_", name) or "_"


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"


def make_key(store: Store, environment: str, database: str, now: datetime, version: int) -> str:
    """``{prefix}/{environment}/{database}/{UTC timestamp}_v{version}.dump``."""
    v = "none" if version < 0 else str(version)
    return store.join(safe_name(environment), safe_name(database), f"{_timestamp(now)}_v{v}.dump")


def parse_key(key: str) -> tuple[str, str, datetime, int | None] | None:
    """(environment, database, created_at, version) of a key in our layout, else None."""
    m = _KEY_RE.search(key)
    if not m:
        return None
    created = datetime.strptime(m.group("ts"), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    if m.group("ms"):
        created += timedelta(milliseconds=int(m.group("ms")))
    version = None if m.group("version") == "none" else int(m.group("version"))
    return m.group("env"), m.group("db"), created, version


def group_prefix(store: Store, settings: Settings, database: str | None, all_groups: bool = False) -> str:
    """The key prefix of the environment/database group (or of the whole destination), ending in ``/``."""
    if all_groups:
        root = store.join()
        return root + "/" if root else ""
    db = database or configured_database_name(settings)
    return store.join(safe_name(settings.environment), safe_name(db)) + "/"


def configured_database_name(settings: Settings) -> str:
    """Name of the configured database without connecting (the embedded default is ``askfrank``)."""
    if not settings.database_url:
        return DEFAULT_DATABASE

    params = conninfo_to_dict(prepare_url(settings.database_url).conninfo)
    return str(params.get("dbname") or params.get("user") or "postgres")
