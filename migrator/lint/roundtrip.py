"""``verify-roundtrip``: every down restores exactly the schema before its up.

The seed's "test full cycle" made automatic. On a scratch database of the configured server (or
the embedded one): apply the ups one at a time, dumping the schema (``pg_dump --schema-only``)
before each; then walk down one migration at a time and compare each result with the schema
recorded before that migration's up; then walk up again comparing with the schema after it. The
first difference is reported with a unified diff of the two dumps. The scratch database is always
dropped.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from migrator import db, embedded, files
from migrator.config import Settings, TableName, state_table_name
from migrator.engine import Migrator
from migrator.errors import ConfigError, MigratorError
from migrator.redact import redact, register_secret
from migrator.scratch import scratch_database

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"\b(\d+)(?:\.(\d+))?")


@dataclass
class RoundtripResult:
    """Outcome: ok, or the first migration (and phase) whose schema differs, with the diff."""

    ok: bool
    scratch_database: str
    migrations: int = 0
    pg_dump: str = ""
    checked: list[str] = field(default_factory=list)
    failed_version: int | None = None
    failed_name: str | None = None
    phase: str | None = None  # "down" (schema after down != before up) or "up" (re-apply differs) or "error"
    message: str = ""
    diff: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _major(version_text: str) -> int:
    m = _VERSION_RE.search(version_text)
    return int(m.group(1)) if m else 0


def choose_pg_dump(server_major: int) -> tuple[str, int]:
    """The pg_dump whose major version is the smallest one >= the server's (system or embedded)."""
    candidates: list[str] = []
    system = shutil.which("pg_dump")
    if system:
        candidates.append(system)
    try:
        candidates.append(str(embedded.bin_dir() / "pg_dump"))
    except Exception as exc:  # the wheel is a dependency; be robust anyway
        log.debug("no embedded pg_dump: %s", exc)
    found: list[tuple[int, str]] = []
    for path in candidates:
        if not Path(path).exists():
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        found.append((_major(out), path))
    usable = sorted(v for v in found if v[0] >= server_major)
    if not usable:
        have = ", ".join(f"{p} ({v})" for v, p in found) or "none"
        raise ConfigError(
            f"no pg_dump of major version >= {server_major} (the server's) was found (have: {have}); install "
            "postgresql-client of that version"
        )
    major, path = usable[0]
    return path, major


def _libpq_env(conninfo: str) -> tuple[str, dict[str, str]]:
    """A conninfo without the password (safe on a command line) and PGPASSWORD in the environment."""
    params = conninfo_to_dict(conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        register_secret(str(password))
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def normalize_dump(text: str) -> list[str]:
    """Schema dump lines without comments, SET lines, blank lines and pg_dump's random \\restrict keys."""
    out = []
    for line in text.splitlines():
        s = line.rstrip()
        if not s or s.startswith("--") or s.startswith("SET ") or s.startswith("\\restrict") \
                or s.startswith("\\unrestrict") or s.startswith("SELECT pg_catalog.set_config"):
            continue
        out.append(s)
    return out


class _Dumper:
    def __init__(self, pg_dump: str, conninfo: str, table: TableName) -> None:
        self.pg_dump = pg_dump
        self.dsn, self.env = _libpq_env(conninfo)
        def pattern(name: str) -> str:  # quoted: exact, case-sensitive names; unqualified: any schema
            quoted = '"' + name.replace('"', '""') + '"'
            return f'"{table.schema}".{quoted}' if table.schema else quoted

        self.excludes = [
            f"--exclude-table={pattern(n)}"
            for n in (table.table, f"{table.table}_history", f"{table.table}_history_id_seq")
        ]

    def __call__(self) -> list[str]:
        cmd = [self.pg_dump, "--schema-only", "--no-owner", "--no-privileges", *self.excludes, f"--dbname={self.dsn}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise MigratorError(f"pg_dump failed to run ({exc}); check {self.pg_dump}") from None
        if proc.returncode != 0:
            msg = redact(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
            raise MigratorError(f"pg_dump --schema-only of the scratch database failed: {msg}")
        return normalize_dump(proc.stdout)


def _diff(expected: list[str], actual: list[str], expected_label: str, actual_label: str) -> str:
    return "\n".join(
        difflib.unified_diff(expected, actual, fromfile=expected_label, tofile=actual_label, n=3, lineterm="")
    )


def verify_roundtrip(settings: Settings, progress: Callable[[str], None] | None = None) -> RoundtripResult:
    """Run the round trip on a scratch database next to ``settings``' database (or the embedded one)."""
    say = progress or (lambda _m: None)
    mset = files.load(settings.migrations_path)
    mset.raise_if_errors()
    conn_info = db.resolve(settings)
    table = state_table_name(settings, conn_info.table)
    with db.connect(conn_info) as admin:
        server_major = admin.info.server_version // 10000
    pg_dump, _dump_major = choose_pg_dump(server_major)
    with scratch_database(conn_info, "roundtrip", say=say) as scratch:
        name = conninfo_to_dict(scratch)["dbname"]
        result = RoundtripResult(ok=False, scratch_database=str(name), migrations=len(mset), pg_dump=pg_dump)
        # The URL's x-migrations-table is not part of the conninfo: pass the table explicitly.
        quoted = '"' + table.table.replace('"', '""') + '"'
        if table.schema:
            quoted = '"' + table.schema.replace('"', '""') + '".' + quoted
        scratch_settings = dataclasses.replace(settings, database_url=scratch, table=quoted)
        dump = _Dumper(pg_dump, scratch, table)
        engine = Migrator(scratch_settings, progress=lambda _m: None)
        _walk(result, list(mset), engine, dump, say)
        return result


def _walk(result: RoundtripResult, migrations: list[Any], engine: Any, dump: Any, say: Callable[[str], None]) -> None:
    """All ups, then each down checked against the schema before its up, then each up again."""
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    current = dump()
    for m in migrations:
        before[m.version] = current
        if not _step(result, engine.up, m, "up", say):
            return
        current = dump()
        after[m.version] = current
    # the walk back down (each down against the schema before its up), then up again (each up
    # against the schema its first up gave): one loop, the phase says which
    checks = (
        ("down", list(reversed(migrations)), before, "the down of {} does not restore the schema before its up",
         "schema before {}.up", "after {}.down", "{} down"),
        ("up", migrations, after, "re-applying {} after its down gives a different schema",
         "after first {}.up", "after {}.up again", "{} up again"),
    )
    for phase, order, expected, problem, was, now, passed in checks:
        for m in order:
            if not _step(result, getattr(engine, phase), m, phase, say):
                if phase == "up":
                    result.message = f"re-applying {m.label} after its down failed: {result.message}"
                return
            current = dump()
            if current != expected[m.version]:
                _fail(result, m, phase, problem.format(m.label),
                      _diff(expected[m.version], current, was.format(m.label), now.format(m.label)))
                return
            result.checked.append(passed.format(m.label))
    result.ok = True
    result.message = f"all {len(migrations)} migration(s) round-trip: every down restores the schema before its up"


def _step(result: RoundtripResult, fn: Callable[..., Any], m: Any, phase: str, say: Callable[[str], None]) -> bool:
    try:
        fn(1)
    except MigratorError as exc:
        _fail(result, m, "error", f"{phase} of {m.label} failed: {exc}", "")
        return False
    say(f"{m.version}/{phase[0]} {m.name}")
    return True


def _fail(result: RoundtripResult, m: Any, phase: str, message: str, diff: str) -> None:
    result.ok = False
    result.failed_version = m.version
    result.failed_name = m.name
    result.phase = phase
    result.message = redact(message)
    result.diff = redact(diff)
