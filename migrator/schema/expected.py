"""The schema the applied migrations produce: built on a scratch database by the engine, cached by hash.

The scratch database is created next to the database being checked (same server, so the same
PostgreSQL version, extensions and roles), or on ``scratch_url``'s server. The files are applied
there with ``migrator.engine.Migrator.goto`` exactly as ``migrator up`` applies them; nothing here
runs migration SQL itself. The captured catalog is kept in ``.migrator/cache/schema/<key>.json``,
the key being the sha256 of the up files up to the version, that version, the server's major
version and the capture format: a warm check reads one small file instead of building anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from migrator import db
from migrator.config import Settings
from migrator.errors import MigratorError
from migrator.files import MigrationSet
from migrator.schema import catalog

log = logging.getLogger(__name__)

CACHE_ENV = "MIGRATOR_CACHE_DIR"


def cache_dir() -> Path:
    """``$MIGRATOR_CACHE_DIR/schema`` or ``./.migrator/cache/schema`` (git-ignored, like the embedded data)."""
    return Path(os.environ.get(CACHE_ENV) or Path(".migrator") / "cache") / "schema"


@dataclass
class Expected:
    """The expected catalog and where it came from (``cached``, or built on ``scratch`` just now)."""

    catalog: catalog.Catalog
    key: str
    cached: bool
    path: Path | None


def files_digest(mset: MigrationSet, version: int) -> str:
    """sha256 over each up file applied at ``version`` (its version and its own sha256)."""
    h = hashlib.sha256()
    for mig in mset:
        if mig.version > version:
            break
        h.update(f"{mig.version} {mig.up.sha256 if mig.up else '-'}\n".encode())
    return h.hexdigest()


def cache_key(mset: MigrationSet, version: int, server_major: int, table: str) -> str:
    """sha256 over the capture format, the server's major version, the state table and each applied up file."""
    text = f"format {catalog.FORMAT}\nserver {server_major}\ntable {table}\nversion {version}\n"
    return hashlib.sha256((text + files_digest(mset, version)).encode()).hexdigest()


def expected_catalog(settings: Settings, mset: MigrationSet, version: int, server_major: int,
                     exclude: list[tuple[str, str]], *, scratch_url: str | None = None,
                     directory: Path | None = None) -> Expected:
    """The catalog of a database migrated from nothing to ``version`` with today's files (cached)."""
    table = ",".join(f"{s}.{t}" for s, t in exclude)
    key = cache_key(mset, version, server_major, table)
    folder = directory or cache_dir()
    path = folder / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("catalog"), dict):
            return Expected(data["catalog"], key, True, path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("schema cache %s unreadable (%s); building it again", path, exc)
    built = _build(settings, version, exclude, scratch_url)
    written: Path | None = path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "version": version, "catalog": built}, sort_keys=True),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only checkout still gets its answer, only slower next time
        log.warning("could not write the schema cache %s (%s); set %s to a writable folder", path, exc, CACHE_ENV)
        written = None
    return Expected(built, key, False, written)


def _build(settings: Settings, version: int, exclude: list[tuple[str, str]],
           scratch_url: str | None) -> catalog.Catalog:
    """Apply the files up to ``version`` on a scratch database with the engine, then read its catalog."""
    with built_database(settings, version, exclude[0], scratch_url) as scratch, \
            db.connect(db.resolve(scratch)) as conn:
        return catalog.capture(conn, exclude)


@contextlib.contextmanager
def built_database(settings: Settings, version: int, table: tuple[str, str],
                   scratch_url: str | None = None) -> Iterator[Settings]:
    """A scratch database migrated from nothing to ``version`` by the engine (``Migrator.goto``), as the
    Settings to reach it; dropped afterwards. ``table`` is the live state table's (schema, name)."""
    # lazy: `migrator validate` loads this module; migrator.engine and migrator.scratch would add 7 modules
    from migrator.engine import Migrator
    from migrator.scratch import scratch_database

    server = db.resolve(dataclasses.replace(settings, database_url=scratch_url) if scratch_url else settings)
    schema, name = table
    qualified = '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
    with scratch_database(server, "migrator_drift") as scratch:
        # the live state table's schema is named explicitly: the scratch database's search_path may differ
        scratch_settings = dataclasses.replace(settings, database_url=scratch, table=qualified)
        if version >= 0:
            try:
                Migrator(scratch_settings, progress=lambda _m: None).goto(version)
            except MigratorError as exc:
                raise MigratorError(
                    f"building the expected schema failed: applying the migrations up to {version} on a scratch "
                    f"database: {exc}; fix the file, or check it with `migrator verify-roundtrip`"
                ) from None
        yield scratch_settings
