"""Live schema drift: the database's catalog against the schema its applied migrations produce.

A hand-run ``ALTER`` at 3 a.m. or a hotfix index changes the schema without a migration; the file
checksums (``migrator.lint.drift``) cannot see it. Here the live catalog is compared with the
expected one (``migrator.schema.expected``: the same files applied on a scratch database, cached by
their hashes) and each difference is one line naming the object:

    + index patients_email_idx (not in migrations)
    - constraint users.users_email_key (in migrations, not in the database)
    ~ column users.phone type text != varchar(20)

``~`` lines read ``<attribute> <in the database> != <from the migrations>``. Objects managed
elsewhere are listed in an ignore file (``migrations/.driftignore`` by default), one
``[KIND] PATTERN`` a line.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrator import db
from migrator.config import Settings
from migrator.engine import Migrator
from migrator.errors import ConfigError, MigratorError
from migrator.schema import catalog, expected
from migrator.schema.catalog import KINDS, Catalog, display

IGNORE_ENV = "MIGRATOR_DRIFT_IGNORE"
IGNORE_FILE = ".driftignore"  # in the migrations folder, so it travels with the files
EXIT_DRIFT = 3
_TABLE_KINDS = ("table", "foreign table", "view", "materialized view")
_LONG = 100  # values longer than this (or on several lines) are not repeated on the line


@dataclass(frozen=True)
class Difference:
    """One object that differs: added by hand (``+``), missing (``-``) or changed (``~`` one attribute)."""

    change: str
    kind: str
    name: str
    attribute: str | None = None
    database: str | None = None
    migrations: str | None = None

    @property
    def line(self) -> str:
        what = f"{self.kind} {display(self.name)}"
        if self.change == "+":
            invalid = "; INVALID" if self.kind == "index" and self.database == "no" else ""
            return f"+ {what} (not in migrations{invalid})"
        if self.change == "-":
            return f"- {what} (in migrations, not in the database)"
        if self.kind == "index" and self.attribute == "valid" and self.database == "no":
            return (f"~ {what} INVALID (valid in migrations): a failed CREATE INDEX CONCURRENTLY; drop it and "
                    f"create it again, or `REINDEX INDEX CONCURRENTLY {display(self.name)}`")
        left = self.database or ("no" if self.migrations == "yes" else "(none)")
        right = self.migrations or ("no" if self.database == "yes" else "(none)")
        if max(len(left), len(right)) > _LONG or "\n" in left + right:
            return f"~ {what} {self.attribute} differs (`migrator drift --json` shows both)"
        return f"~ {what} {self.attribute} {left} != {right}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line}


@dataclass
class DriftReport:
    """What ``migrator drift`` found on one database at one version."""

    database: str
    version: int
    differences: list[Difference]
    ignored: int = 0
    ignore_file: str | None = None
    ignore_hint: str = "migrations/" + IGNORE_FILE
    expected_cached: bool = False
    cache_file: str | None = None
    seconds: float = 0.0
    objects: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.differences)

    @property
    def lines(self) -> list[str]:
        return [d.line for d in self.differences]

    def summary(self) -> str:
        """One line with the outcome and the next step."""
        if not self.drifted:
            return (f"no schema drift: {self.database} at version {self.version} matches its migrations "
                    f"({self.objects} objects, {self.ignored} ignored)")
        return (f"schema drift: {len(self.differences)} difference(s) between {self.database} and its migrations "
                f"at version {self.version}; put each change in a new migration (`migrator create NAME`), undo it, or "
                f"list objects managed elsewhere in {self.ignore_file or self.ignore_hint}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "version": self.version, "drift": self.drifted,
            "differences": [d.to_dict() for d in self.differences], "ignored": self.ignored,
            "ignore_file": self.ignore_file, "expected_cached": self.expected_cached, "cache_file": self.cache_file,
            "objects": self.objects, "seconds": round(self.seconds, 3), "summary": self.summary(),
        }


# -------------------------------------------------------------------------------------------- ignore


@dataclass(frozen=True)
class IgnoreRule:
    """``[KIND] PATTERN`` (fnmatch, case-sensitive) on the object's name, with or without ``public.``."""

    kind: str | None
    pattern: str
    where: str

    def matches(self, kind: str, name: str) -> bool:
        if self.kind is not None and self.kind != kind:
            return False
        return fnmatch.fnmatchcase(name, self.pattern) or fnmatch.fnmatchcase(display(name), self.pattern)


def load_ignore(path: Path) -> list[IgnoreRule]:
    """Read an ignore file; a bad line is a ConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"drift ignore file {path} does not exist; create it or drop --ignore") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"drift ignore file {path} cannot be read: {exc}") from None
    rules: list[IgnoreRule] = []
    by_length = sorted(KINDS, key=len, reverse=True)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        where = f"{path}:{number}"
        kind = next((k for k in by_length if line == k or line.startswith(k + " ")), None)
        pattern = line[len(kind):].strip() if kind else line
        if kind is None and (" " in line or "\t" in line):
            raise ConfigError(f"{where}: unknown object kind {line.split()[0]!r}; write `KIND PATTERN` with KIND "
                              f"one of {', '.join(KINDS)}, or a PATTERN alone")
        if not pattern:
            raise ConfigError(f"{where}: {kind!r} needs a name pattern, e.g. `{kind} public.audit_*`")
        if pattern.count("[") != pattern.count("]"):
            raise ConfigError(f"{where}: pattern {pattern!r} has an unclosed '['; write [[] for a literal '['")
        rules.append(IgnoreRule(kind, pattern, where))
    return rules


def ignore_path(settings: Settings, given: str | Path | None) -> Path | None:
    """The ignore file to read: the one given, else $MIGRATOR_DRIFT_IGNORE (both must exist), else
    ``<migrations>/.driftignore`` when it exists."""
    if given:
        return Path(given)
    if os.environ.get(IGNORE_ENV):
        return Path(os.environ[IGNORE_ENV])
    default = settings.migrations_path / IGNORE_FILE
    return default if default.exists() else None


def _filter(cat: Catalog, rules: list[IgnoreRule]) -> tuple[Catalog, set[str]]:
    """The catalog without ignored objects (a table's rule also covers what belongs to the table)."""
    if not rules:
        return cat, set()
    ignored_tables = {o["name"] for o in cat.values() if o["kind"] in _TABLE_KINDS
                      and any(r.matches(o["kind"], o["name"]) for r in rules)}
    kept: Catalog = {}
    dropped: set[str] = set()
    for key, obj in cat.items():
        if obj.get("table") in ignored_tables or any(r.matches(obj["kind"], obj["name"]) for r in rules):
            dropped.add(key)
        else:
            kept[key] = obj
    return kept, dropped


# ------------------------------------------------------------------------------------------- compare


def compare(live: Catalog, expected: Catalog) -> list[Difference]:
    """The differences, in report order; a whole table added or missing is one line, not one per column,
    and an object added or missing carries its grants (a new function's default EXECUTE to PUBLIC)."""
    out: list[Difference] = []
    whole = {(("+" if key in live else "-"), obj["name"]) for key, obj in {**expected, **live}.items()
             if obj["kind"] in _TABLE_KINDS and (key in live) != (key in expected)}
    only_live, only_expected = set(live) - set(expected), set(expected) - set(live)
    for key in set(live) | set(expected):
        have, want = live.get(key), expected.get(key)
        obj = have or want
        assert obj is not None
        if have is None or want is None:
            change = "+" if have is not None else "-"
            if obj.get("table") and (change, obj["table"]) in whole and obj["kind"] not in _TABLE_KINDS:
                continue
            if obj.get("of") in (only_live if change == "+" else only_expected):
                continue
            valid = obj["attrs"].get("valid") if obj["kind"] == "index" else None
            out.append(Difference(change, obj["kind"], obj["name"], database=valid if change == "+" else None))
            continue
        for attr in sorted(set(have["attrs"]) | set(want["attrs"])):
            a, b = have["attrs"].get(attr), want["attrs"].get(attr)
            if a != b:
                out.append(Difference("~", obj["kind"], obj["name"], attr, a, b))
    order = {k: i for i, k in enumerate(KINDS)}
    out.sort(key=lambda d: (order.get(d.kind, len(order)), d.name, d.change, d.attribute or ""))
    return out


# --------------------------------------------------------------------------------------------- check


def check(settings: Settings, *, ignore: str | Path | None = None, scratch_url: str | None = None,
          cache: Path | None = None) -> DriftReport:
    """Compare the database of ``settings`` with the schema its applied migrations produce.

    Raises MigratorError when the database is dirty (there is no "expected" schema half-way through
    a migration) or records a version newer than the files."""
    started = time.monotonic()
    path = ignore_path(settings, ignore)
    rules = load_ignore(path) if path is not None else []
    engine = Migrator(settings, progress=lambda _m: None)
    mset = engine.load_files()
    mset.raise_if_errors()
    status = engine.status()
    if status.dirty:
        raise MigratorError(f"{status.database} is dirty at version {status.version}: schema drift is only defined on "
                            "a clean database; see `migrator status` and end the incident first")
    if status.version >= 0 and not status.version_has_file:
        raise MigratorError(f"{status.database} is at version {status.version}, which no file has: the expected "
                            "schema cannot be built; restore the file (see `migrator validate`)")
    with engine.session(lock=False) as s:
        exclude = [(s.st.schema, s.st.table + suffix) for suffix in ("", "_history", "_alerts")]
        live = catalog.capture(s.conn, exclude)
        server_major = s.conn.info.server_version // 10000
    exp = expected.expected_catalog(settings, mset, status.version, server_major, exclude,
                                    scratch_url=scratch_url, directory=cache)
    live_kept, live_dropped = _filter(live, rules)
    exp_kept, exp_dropped = _filter(exp.catalog, rules)
    report = DriftReport(
        database=status.database or db.resolve(settings).display,
        version=status.version,
        differences=compare(live_kept, exp_kept),
        ignored=len(live_dropped | exp_dropped),
        ignore_file=str(path) if path is not None else None,
        ignore_hint=str(settings.migrations_path / IGNORE_FILE),
        expected_cached=exp.cached,
        cache_file=str(exp.path) if exp.path else None,
        objects=len(live_kept),
    )
    report.seconds = time.monotonic() - started
    return report
