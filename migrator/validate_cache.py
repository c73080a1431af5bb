"""A content-hash cache for ``migrator validate`` (ruff-style), in ``.migrator/cache/validate``.

The key of a folder is the sha256 of every entry's name and bytes, the options that change the
findings (the justification requirement, where paths are shown from) and the linter itself
(migrator's version and the size and mtime of every module that produces findings). On a hit
the stored findings are used as they are, and the output already rendered for the same format
is written back without importing the parser: an unchanged folder re-validates in the time it
takes to read it. Drift is never cached (it depends on the database), so validate with a
database URL bypasses the cache. Only the standard library here, and outside ``migrator.lint``
(whose import builds the rule catalogue): this is the fast path.

``--no-cache`` or ``MIGRATOR_NO_CACHE=1`` turn it off; ``MIGRATOR_CACHE_DIR`` moves it. A cache
that cannot be read or written is ignored (the validation just runs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
import time
import zlib
from pathlib import Path
from typing import Any

from migrator import __version__

CACHE_VERSION = 1
_LINTER_FILES = ("files.py", "sql.py", "redact.py", "lint/__init__.py", "lint/allow.py", "lint/hipaa.py",
                 "lint/model.py", "lint/parse.py", "lint/report.py", "lint/rules.py", "lint/structure.py",
                 "lint/stable_functions.txt", "validate_cache.py")


def require_justification_default() -> bool:
    """As ``migrator.lint.require_justification_default``, without importing the linter."""
    return os.environ.get("MIGRATOR_REQUIRE_JUSTIFICATION", "1").strip().lower() not in ("0", "false", "no", "off")


def enabled(no_cache: bool = False) -> bool:
    return not no_cache and os.environ.get("MIGRATOR_NO_CACHE", "").strip().lower() not in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    return Path(os.environ.get("MIGRATOR_CACHE_DIR") or Path(".migrator") / "cache") / "validate"


def _linter_fingerprint() -> str:
    root = Path(__file__).resolve().parent
    parts = [__version__, str(CACHE_VERSION)]
    files = [root / rel for rel in _LINTER_FILES]
    try:  # PostgreSQL's parser (pglast's extension): found, not imported
        spec = importlib.util.find_spec("pglast")
        if spec is not None and spec.submodule_search_locations:
            files += sorted(Path(next(iter(spec.submodule_search_locations))).glob("parser*.so"))
    except (ImportError, ValueError):
        pass
    for path in files:
        try:
            st = path.stat()
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path.name}:-")
    return "|".join(parts)


def folder_key(directory: Path, options: dict[str, Any]) -> tuple[str, str] | None:
    """(content key, stat signature) of the folder, or None when it cannot be read.

    The stat signature (names, sizes, mtimes, inodes) lets an unchanged folder skip reading its
    files: when it matches the stored one, the stored content key is reused. Files modified within
    the last two seconds are read anyway (an edit in the same mtime tick keeps size and mtime).
    """
    fingerprint = _linter_fingerprint() + json.dumps(options, sort_keys=True)
    try:
        resolved = directory.resolve()
        entries = sorted(os.scandir(resolved), key=lambda e: e.name)
        stats = [(e, e.stat(follow_symlinks=False)) for e in entries]
    except OSError:
        return None
    racy = time.time_ns() - 2_000_000_000
    parts = [fingerprint, str(resolved)]
    for e, st in stats:
        if st.st_mtime_ns >= racy or st.st_ctime_ns >= racy:
            parts.append("racy")  # never trust a racily recent file's stat: hash the contents
            break
        parts.append(f"{e.name}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    signature = "\n".join(parts)
    stored = _read_index(slot(directory, options))
    if "racy" not in parts and stored is not None and stored.get("signature") == signature \
            and isinstance(stored.get("key"), str):
        return stored["key"], signature
    # lazy: `migrator --help` loads this module; hashlib would add 3 modules
    import hashlib

    h = hashlib.sha256()
    h.update(fingerprint.encode())
    h.update(str(resolved).encode("utf-8", "surrogateescape") + b"\0")
    try:
        for e, st in stats:
            name = e.name.encode("utf-8", "surrogateescape")
            if stat.S_ISREG(st.st_mode):
                with open(e.path, "rb") as f:
                    data = f.read()
                h.update(b"f" + name + b"\0" + str(len(data)).encode() + b"\0" + data)
            else:  # a folder, a symlink, a FIFO: named, never opened (validate reports them)
                h.update(b"o" + name + b"\0")
    except OSError:
        return None
    return h.hexdigest(), signature


def slot(directory: Path, options: dict[str, Any]) -> Path:
    """The cache folder of one migrations folder validated with ``options`` (keys name both exactly)."""
    resolved = str(directory.resolve())
    tag = zlib.crc32((resolved + "\0" + json.dumps(options, sort_keys=True)).encode("utf-8", "surrogateescape"))
    return cache_dir() / f"{Path(resolved).name[:40]}-{tag:08x}"


def _read_index(base: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((base / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_index(base: Path, key: str) -> dict[str, Any] | None:
    """{key, signature, counts, rendered: [...]} when the cached entry is for ``key``."""
    data = _read_index(base)
    if data is None or data.get("key") != key:
        return None
    return data


def load_rendered(base: Path, index: dict[str, Any], name: str) -> str | None:
    if name not in index.get("rendered", ()):
        return None
    try:
        return (base / f"{_safe(name)}.txt").read_text(encoding="utf-8")
    except OSError:
        return None


def load_report(base: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((base / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _safe(name: str) -> str:
    return name.replace(":", "-")


def _write(path: Path, text: str) -> None:
    """Atomically: a concurrent reader sees the old or the new file, never half of one."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def store(base: Path, index: dict[str, Any], report: dict[str, Any] | None = None,
          rendered: tuple[str, str] | None = None) -> None:
    """Save the entry: the report (when new), one rendered output, then the index naming them."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        if report is not None:
            _write(base / "report.json", json.dumps(report, separators=(",", ":")))
            index["rendered"] = []
        if rendered is not None:
            name, text = rendered
            _write(base / f"{_safe(name)}.txt", text)
            index["rendered"] = sorted({*index.get("rendered", []), name})
        _write(base / "index.json", json.dumps(index))
    except OSError:
        pass  # a read-only checkout: validate still works, just without the cache
