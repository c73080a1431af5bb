"""Verify: read a backup back, recompute its sha256 and size, and have ``pg_restore --list`` read it."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from migrator.backup import pgtools
from migrator.backup.catalog import metadata_int, resolve_key, tool_major
from migrator.backup.errors import BackupIntegrityError
from migrator.backup.keys import open_destination
from migrator.config import Settings


@dataclass
class VerifyResult:
    """Outcome of reading a backup back: sha256, size and pg_restore --list."""

    key: str
    url: str
    ok: bool
    size: int
    expected_size: int | None
    sha256: str
    expected_sha256: str | None
    toc_entries: int
    pg_restore: dict[str, object]
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_backup(
    settings: Settings,
    key: str,
    destination: str | None = None,
    *,
    database: str | None = None,
    raise_on_failure: bool = True,
) -> VerifyResult:
    """Stream a backup back, recompute its sha256 and size, and have ``pg_restore --list`` read it."""
    store = open_destination(settings, destination)
    key = resolve_key(store, key, settings, database)
    meta = store.head(key).metadata or {}
    expected_sha = meta.get("sha256") or None
    expected_size = metadata_int(meta, "size")
    tool = pgtools.find_tool("pg_restore", tool_major(meta))
    h = hashlib.sha256()
    size = 0
    with pgtools.stderr_file() as err, tempfile.TemporaryFile() as toc:
        proc = subprocess.Popen([str(tool.path), "--list"], stdin=subprocess.PIPE, stdout=toc, stderr=err)
        feeding = True
        try:
            for chunk in store.read(key):
                h.update(chunk)
                size += len(chunk)
                if feeding:
                    feeding = pgtools.feed(proc, chunk)
        except BaseException:
            pgtools.kill(proc)
            raise
        pgtools.close_stdin(proc)
        rc = proc.wait()
        toc.seek(0)
        entries = sum(1 for ln in toc.read().decode("utf-8", "replace").splitlines() if ln and not ln.startswith(";"))
        stderr = pgtools.read_stderr(err)
    sha = h.hexdigest()
    problems = _problems(sha, expected_sha, size, expected_size, rc, stderr)
    result = VerifyResult(
        key=key,
        url=store.url_for(key),
        ok=not problems,
        size=size,
        expected_size=expected_size,
        sha256=sha,
        expected_sha256=expected_sha,
        toc_entries=entries,
        pg_restore=tool.to_dict(),
        problems=problems,
        metadata=meta,
    )
    if problems and raise_on_failure:
        raise BackupIntegrityError(f"backup {result.url} failed verification: " + "; ".join(problems))
    return result


def _problems(
    sha: str, expected_sha: str | None, size: int, expected_size: int | None, rc: int, stderr: str
) -> list[str]:
    problems: list[str] = []
    if expected_sha is None:
        problems.append("no sha256 recorded in its metadata (not made by migrator, or the upload did not finish)")
    elif sha != expected_sha:
        problems.append(f"sha256 is {sha}, the backup recorded {expected_sha}: the stored object is corrupted")
    if expected_size is not None and size != expected_size:
        problems.append(f"size is {size} bytes, the backup recorded {expected_size}")
    if rc != 0:
        problems.append(f"pg_restore --list cannot read it (exit {rc}): {stderr or 'no message'}")
    return problems
