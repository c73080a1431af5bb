"""Drift between the migration files and what a database actually ran.

The engine records the sha256 of every up file it applies in the ``{table}_history`` audit table.
Here those checksums are compared with today's files: an applied file that changed, an applied
version whose file is gone, and a file older than the database's version that never ran (merged
out of order, so golang-migrate would never apply it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrator import db
from migrator.config import Settings, state_table_name
from migrator.execute import state
from migrator.files import DIGITS, MigrationSet
from migrator.lint.model import Finding, finding


def check(settings: Settings, mset: MigrationSet, display: Callable[[Any], str] = str) -> list[Finding]:
    """Drift findings against the database of ``settings.database_url`` (which must be set)."""
    conn_info = db.resolve(settings)
    with db.connect(conn_info) as conn:
        st = state.resolve_table(conn, state_table_name(settings, conn_info.table))
        version, dirty = state.read_state(conn, st)
        sums = applied_from_history(state.read_history(conn, st))
    return compare(mset, version, dirty, sums, display=display, target=conn_info.display)


def applied_from_history(rows: list[dict[str, Any]]) -> dict[int, str]:
    """{version: sha256} of the up files currently applied according to the audit rows (newest first).

    A successful up records the file's checksum; so does a ``force`` (or a resume / mark_applied recovery) to a version
    with a file, which declares that version applied as the file is; a successful down removes the
    version again, so a migration that was reverted and later deleted or renumbered is not reported
    as missing.
    """
    applied: dict[int, str] = {}
    for row in reversed(rows):
        if not row.get("success"):
            continue
        v = int(row["version"])
        declares_applied = row.get("direction") in ("up", "force") or (
            row.get("direction") == "recover" and row.get("action") in ("resume", "mark_applied")
        )
        if declares_applied and row.get("checksum"):
            applied[v] = str(row["checksum"])
        elif row.get("direction") == "down":
            applied.pop(v, None)
    return applied


def compare(
    mset: MigrationSet,
    version: int,
    dirty: bool,
    sums: dict[int, str],
    *,
    display: Callable[[Any], str] = str,
    target: str = "the database",
) -> list[Finding]:
    """The drift findings for a database at ``version`` whose history recorded ``sums``."""
    out: list[Finding] = []
    folder = display(mset.directory)
    if dirty:
        out.append(
            finding("MIG304", folder, f"{target} is dirty at version {version}: a migration failed half-way; "
                    "inspect the schema, then `migrator force V`")
        )
    applied = {v: s for v, s in sums.items() if v <= version}
    for v, digest in sorted(applied.items()):
        mig = mset.get(v)
        if mig is None or mig.up is None:
            out.append(
                finding("MIG302", folder, f"version {v} is applied to {target} but its up file is missing; "
                        "restore it from git history", version=v)
            )
        elif mig.up.sha256 != digest:
            out.append(
                finding(
                    "MIG301",
                    display(mig.up.path),
                    f"changed since it was applied to {target} (sha256 {digest[:12]} then, {mig.up.sha256[:12]} "
                    "now); restore it and put the change in a new migration",
                    version=v,
                )
            )
    if version >= 0 and version not in applied and mset.get(version) is None:
        out.append(
            finding("MIG302", folder, f"{target} is at version {version} but no file has that version; restore "
                    "it, or the database cannot be rolled back", version=version)
        )
    if applied:
        first_recorded = min(applied)
        next_free = max(version, mset.latest) + 1
        for mig in mset:
            if first_recorded < mig.version < version and mig.version not in applied:
                f = mig.up or mig.down
                out.append(
                    finding(
                        "MIG303",
                        display(f.path) if f else folder,
                        f"version {mig.version} was never applied to {target}, which is already at {version}; "
                        f"golang-migrate will never run it: renumber it to {next_free:0{DIGITS}d}",
                        version=mig.version,
                    )
                )
                next_free += 1
    return out
