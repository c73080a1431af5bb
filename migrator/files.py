"""Migration files in golang-migrate's grammar: ``{version}_{title}.{up|down}.sql``.

golang-migrate matches ``^([0-9]+)_(.*)\\.(down|up)\\.(.*)$`` and parses the version as uint64;
files that do not match are skipped. We are stricter where a silent skip would hide a mistake:
a ``.sql`` file that does not match is an error, other files are reported as warnings. Every
problem names the file and says what to do, and loading never stops at the first problem so that
``validate`` can report them all at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from migrator.errors import MigrationFileError

# Go's regexp: ``$`` matches only at the very end (Python's also before a final newline, so
# ``1_foobar.up.sql\n`` would be a migration here and skipped by golang-migrate): ``\Z`` is Go's ``$``.
FILE_RE = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)\Z")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
MAX_VERSION = 2**63 - 1  # schema_migrations.version is a bigint
DIGITS = 6
IGNORED_FILES = {".gitkeep", ".keep", ".DS_Store", ".driftignore", "schema.sql"}  # the last two: migrator.schema

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


class CreateInputError(MigrationFileError):
    """A ``create`` argument that cannot make a loadable migration file: the command line's fault."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One finding about the migrations folder; ``severity`` is ``error`` or ``warning``."""

    severity: str
    code: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "file": self.file, "message": self.message}


@dataclass(frozen=True)
class MigrationFile:
    """One direction of one migration, with its text and checksum read once at load time."""

    path: Path
    version: int
    name: str
    direction: str
    sql: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class Migration:
    """A version with its up and (normally) down file."""

    version: int
    name: str
    up: MigrationFile | None = None
    down: MigrationFile | None = None

    @property
    def label(self) -> str:
        """The name as the files spell it (``000010_add_x``), so a person can find the file from it."""
        f = self.up or self.down
        return f.filename.split(".", 1)[0] if f is not None else f"{self.version}_{self.name}"


@dataclass
class MigrationSet:
    """All migrations of a folder, ordered by version, and the problems found while loading."""

    directory: Path
    migrations: list[Migration] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_version = {m.version: m for m in self.migrations}

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)

    def __len__(self) -> int:
        return len(self.migrations)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def versions(self) -> list[int]:
        return [m.version for m in self.migrations]

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else -1

    def get(self, version: int) -> Migration | None:
        return self._by_version.get(version)

    def previous(self, version: int) -> int:
        """The version before ``version`` in file order, or -1 (golang-migrate's "no version")."""
        prev = -1
        for v in self.versions:
            if v >= version:
                break
            prev = v
        return prev

    def raise_if_errors(self) -> None:
        """Refuse to migrate from a folder with file errors; the first one is named."""
        errs = self.errors
        if errs:
            more = f" (and {len(errs) - 1} more; run `migrator validate` to list them)" if len(errs) > 1 else ""
            raise MigrationFileError(f"{errs[0]}{more}")


def is_effectively_empty(sql: str) -> bool:
    """True when the text has nothing but whitespace and comments."""
    return not _COMMENTS.sub("", sql).strip()


def shown(path: Path | str, line: int | None = None) -> str:
    """A file as people look for it (``migrations/000003_x.up.sql:7``): relative to the working
    directory (the project checkout) when inside it, with the line when known."""
    text = str(path)
    with contextlib.suppress(ValueError, OSError):
        text = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return f"{text}:{line}" if line else text


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, rel: str, problems: list[Problem]) -> tuple[str, str] | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(
            Problem("error", "unreadable", rel, f"cannot be read ({exc.strerror or exc}); check its permissions")
        )
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(
            Problem("error", "encoding", rel, f"is not valid UTF-8 (byte {exc.start}, line {line}); re-save as UTF-8")
        )
        return None
    if text.startswith("\ufeff"):
        problems.append(
            Problem("error", "encoding", rel, "starts with a byte-order mark, which PostgreSQL rejects; remove it")
        )
        return None
    if is_effectively_empty(text):
        problems.append(
            Problem("error", "empty", rel, "is empty (only whitespace or comments); write the SQL or delete the pair")
        )
    return text, sha256_hex(raw)


def _not_a_file(path: Path) -> str:
    """Why an entry named like a migration is not one, and what to do."""
    if path.is_symlink() and not path.exists():
        return f"is a broken symbolic link (to {os.readlink(path)}); fix the link or delete it"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc}); check it and its permissions"
    kind = (
        "a directory" if stat.S_ISDIR(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    via = " (through a symbolic link)" if path.is_symlink() else ""
    return f"is {kind}{via}, not a regular file; a migration must be a plain .sql file: replace or delete it"


def load(directory: Path | str) -> MigrationSet:
    """Read every migration file under ``directory`` (not recursive) into a MigrationSet."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationFileError(
            f"migrations folder {directory} does not exist; create it or point --path / MIGRATIONS_PATH at it"
        )
    problems: list[Problem] = []
    seen, failed = _scan(directory, problems)
    by_version: dict[int, Migration] = {}
    for (version, direction), mf in seen.items():
        mig = by_version.setdefault(version, Migration(version, mf.name))
        setattr(mig, direction, mf)
    migrations = sorted(by_version.values(), key=lambda m: m.version)
    next_free = f"{(migrations[-1].version + 1 if migrations else 1):0{DIGITS}d}"
    problems = [
        Problem(p.severity, p.code, p.file, p.message.replace("{next_free}", next_free)) for p in problems
    ]
    problems += _pairing_problems(migrations, failed, directory)
    return MigrationSet(directory, migrations, problems)


def _scan(
    directory: Path, problems: list[Problem]
) -> tuple[dict[tuple[int, str], MigrationFile], set[tuple[int, str]]]:
    """Read the folder's migration files, keyed by (version, direction); problems are appended.

    Also returns the (version, direction) of entries named like a migration that are not regular
    files: they are reported once here, so their partner is not also reported as "missing".
    """
    seen: dict[tuple[int, str], MigrationFile] = {}
    failed: set[tuple[int, str]] = set()
    for path in sorted(directory.iterdir(), key=lambda p: p.name):  # names: Path comparison is 10x slower
        rel = str(path)
        m = FILE_RE.match(path.name)
        if m and not path.is_file():  # never skipped silently (and a FIFO is never opened)
            code = "unreadable" if path.is_symlink() and not path.exists() else "not-a-file"
            problems.append(Problem("error", code, rel, _not_a_file(path)))
            failed.add((int(m.group(1)), m.group(3)))
            continue
        mf = _read_entry(path, m, problems, is_file=m is not None)
        if mf is None:
            continue
        key = (mf.version, mf.direction)
        if key in seen:
            problems.append(
                Problem(
                    "error",
                    "duplicate",
                    rel,
                    f"duplicates version {mf.version} ({mf.direction}) of {seen[key].filename}; "
                    f"renumber one of them (next free: {{next_free}})",
                )
            )
            continue
        seen[key] = mf
    return seen, failed


def _read_entry(
    path: Path, m: re.Match[str] | None, problems: list[Problem], is_file: bool = False
) -> MigrationFile | None:
    """One regular folder entry as a migration file, or None (skipped, or a problem appended).

    ``is_file``: already known to be a regular file (saves a stat per migration file).
    """
    rel = str(path)
    if (not is_file and path.is_dir()) or path.name in IGNORED_FILES:
        return None
    if not m:
        if path.suffix == ".sql":
            problems.append(
                Problem(
                    "error",
                    "bad-name",
                    rel,
                    "does not match {version}_{title}.{up|down}.sql; rename it (e.g. 000007_add_x.up.sql)",
                )
            )
        elif any(ord(ch) < 32 for ch in path.name):  # e.g. a newline: shown escaped, so output stays one line
            shown = rel.encode("unicode_escape").decode("ascii")
            problems.append(
                Problem(
                    "warning",
                    "not-a-migration",
                    shown,
                    "has a control character (e.g. a newline) in its name, so it is not a migration "
                    "(golang-migrate ignores it too); rename it without it",
                )
            )
        else:
            problems.append(Problem("warning", "not-a-migration", rel, "is not a migration file and is ignored"))
        return None
    version_s, name, direction, ext = m.groups()
    if ext != "sql":
        problems.append(
            Problem("error", "bad-extension", rel, f"has extension .{ext}; only .sql migrations are supported")
        )
        return None
    version = int(version_s)
    if version > MAX_VERSION:
        problems.append(
            Problem("error", "bad-version", rel, f"version {version} does not fit schema_migrations' bigint")
        )
        return None
    read = _read(path, rel, problems)
    if read is None:
        return None
    text, digest = read
    return MigrationFile(path, version, name, direction, text, digest)


def _pairing_problems(
    migrations: list[Migration], failed: set[tuple[int, str]], directory: Path
) -> list[Problem]:
    """Up and down files that do not pair: different titles, a missing up, a missing down."""
    problems: list[Problem] = []
    for mig in migrations:
        if mig.up and mig.down and mig.up.name != mig.down.name:
            problems.append(
                Problem(
                    "error",
                    "name-mismatch",
                    str(mig.down.path),
                    f"has title {mig.down.name!r} but its up file {mig.up.filename} has {mig.up.name!r}; "
                    "give both the same title",
                )
            )
        if mig.up is None and (mig.version, "up") not in failed:
            problems.append(
                Problem(
                    "error",
                    "missing-up",
                    str(mig.down.path) if mig.down else str(directory),
                    f"has no matching {mig.version:0{DIGITS}d}_{mig.name}.up.sql; add it or delete this file",
                )
            )
        if mig.down is None and mig.up is not None and (mig.version, "down") not in failed:
            problems.append(
                Problem(
                    "error",
                    "missing-down",
                    str(mig.up.path),
                    f"has no matching {mig.up.path.name.replace('.up.sql', '.down.sql')}; "
                    "write the rollback (the seed requires one for every migration)",
                )
            )
    return problems


def _name_max(directory: Path) -> int:
    """The longest file name (bytes) the filesystem of ``directory`` (or its nearest parent) takes."""
    probe = directory.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def create(directory: Path | str, name: str, *, justification: str = "") -> tuple[Path, Path]:
    """Create the next sequential pair ``{NNNNNN}_{name}.up.sql`` / ``.down.sql`` with a header.

    The number is the last file's version + 1, zero-padded to 6 digits, as
    ``migrate create -seq -digits 6`` does. Refuses a name that is not snake_case and a name that
    an existing migration already uses.
    """
    directory = Path(directory)
    if not NAME_RE.fullmatch(name):
        raise CreateInputError(
            f"migration name {name[:80]!r}{'...' if len(name) > 80 else ''} is not descriptive snake_case "
            "(lower-case letters, digits, underscores, starting with a letter), e.g. add_patient_table"
        )
    bad = next((c for c in justification if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise CreateInputError(
            f"--justification must be one line of text: it contains {bad!r} at position "
            f"{justification.index(bad) + 1}; remove line breaks and control characters"
        )
    name_max = _name_max(directory)
    longest = len(f"{0:0{DIGITS}d}_{name}.down.sql".encode())
    if longest > name_max:
        raise CreateInputError(
            f"migration name is {len(name)} characters: its file names would exceed this filesystem's "
            f"{name_max}-byte limit; use at most {name_max - longest + len(name)} characters"
        )
    directory.mkdir(parents=True, exist_ok=True)
    existing = load(directory)
    for mig in existing:
        if mig.name == name:
            raise MigrationFileError(
                f"a migration named {name!r} already exists ({mig.label}); choose another name"
            )
    version = existing.latest + 1 if existing.latest >= 0 else 1
    latest = existing.get(existing.latest)
    highest = f"migration {latest.label}" if latest else str(directory)
    # Versions of files that failed to load still occupy their number.
    for p in existing.problems:
        m = FILE_RE.match(Path(p.file).name)
        if m and int(m.group(1)) >= version:
            version, highest = int(m.group(1)) + 1, p.file
    if version > MAX_VERSION:
        raise MigrationFileError(
            f"{highest} has the largest version schema_migrations can hold ({MAX_VERSION}), so no later "
            "migration can be numbered; nothing was written. Renumber the folder before adding migrations"
        )
    stem = f"{version:0{DIGITS}d}_{name}"
    if len(f"{stem}.down.sql".encode()) > name_max:
        raise CreateInputError(
            f"migration name is {len(name)} characters: with version {version} its file names would exceed "
            f"this filesystem's {name_max}-byte limit; use at most {name_max - len(stem) + len(name) - 9} characters"
        )
    up = directory / f"{stem}.up.sql"
    down = directory / f"{stem}.down.sql"
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    why = justification.strip() or "TODO: why this change is needed (ticket, business reason)"
    header = (
        f"-- Migration: {stem}\n"
        f"-- Created: {created}\n"
        f"-- Business justification: {why}\n"
        "-- Patient data affected: TODO (yes/no; if yes, which tables and how)\n"
    )
    up.write_text(header + "-- Up: forward change\n\n", encoding="utf-8")
    down.write_text(header + "-- Down: reverse exactly what the up file does\n\n", encoding="utf-8")
    return up, down
