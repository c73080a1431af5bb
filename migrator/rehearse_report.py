"""A rehearsal report as rows (shared), Markdown (the approval form and the Prefect artifact) and
terminal output (``migrator rehearse``). Plain Python: the flow and the CLI render the same rows."""

from __future__ import annotations

from typing import Any

from migrator.redact import redact
from migrator.rehearse import LockHold, MigrationReport, RehearsalReport, human_bytes, human_ms

TABLE_KINDS = ("table", "materialized view")
LOCK_COLUMNS = ["migration", "statement", "time", "lock", "relation", "held", "size", "blocks"]


def strongest(locks: list[LockHold]) -> list[LockHold]:
    """The strongest lock per relation (ALTER TYPE takes SHARE and ACCESS EXCLUSIVE on the table: the
    person needs the second), tables first; the JSON report keeps every lock."""
    from migrator.rehearse import MODES

    order = {m: i for i, m in enumerate(MODES.values())}
    best: dict[str, LockHold] = {}
    for lk in locks:
        if lk.relation not in best or order.get(lk.mode, 0) > order.get(best[lk.relation].mode, 0):
            best[lk.relation] = lk
    return sorted(best.values(), key=lambda x: (x.kind not in TABLE_KINDS, x.relation))


def _shown(lk: LockHold) -> bool:
    """Table locks, and any lock that blocks the application (index locks of a rewrite...)."""
    return lk.kind in TABLE_KINDS or lk.blocks is not None


def _note(lk: LockHold) -> str:
    if not lk.blocks:
        return "-"
    text = lk.blocks
    if lk.large:
        text = f"{text} ⚠ LARGE TABLE"
    return text


def lock_rows(report: RehearsalReport) -> list[list[str]]:
    """One row per lock a statement took: the approver's question, answered per table."""
    rows: list[list[str]] = []
    for m in report.migrations:
        label = f"{m.version} {m.name}"
        for s in m.statements:
            shown = [lk for lk in strongest(s.locks) if _shown(lk)]
            stmt = f"#{s.index} line {s.line}: {s.text}"
            if not shown:
                rows.append([label, stmt, human_ms(s.duration_ms), "-", "-", "-", "-",
                             "FAILED" if s.error else "-"])
                continue
            for lk in shown:
                held = human_ms(lk.held_ms)
                if lk.observed.startswith("sampled"):
                    held = f"≤ {held} (own commit)"
                rows.append([label, stmt, human_ms(s.duration_ms), lk.mode, f"{lk.relation} ({lk.kind})", held,
                             human_bytes(lk.size_bytes), _note(lk) + (" · FAILED" if s.error else "")])
    return rows


def rewrite_rows(report: RehearsalReport) -> list[list[str]]:
    return [
        [f"{m.version} {m.name}", f"{r.relation} ({r.kind})", f"#{r.statement}", human_bytes(r.size_before),
         human_bytes(r.size_after) if not m.failed else "rolled back"]
        for m in report.migrations for r in m.rewrites
    ]


def prediction_rows(report: RehearsalReport) -> list[list[str]]:
    return [
        [f"{m.version} {m.name}", f"{p.rule} {p.name}", str(p.line or "-"), p.predicted, p.measured]
        for m in report.migrations for p in m.predictions
    ]


def migration_rows(report: RehearsalReport) -> list[list[str]]:
    return [
        [str(m.version), m.name, "yes" if m.transactional else "no", human_ms(m.duration_ms),
         f"WOULD FAIL at {m.location}: {m.error}" if m.failed else "ok"]
        for m in report.migrations
    ]


def headline(report: RehearsalReport) -> str:
    if report.skipped:
        return f"Rehearsal skipped: {report.skipped}"
    if not report.migrations:
        return "Rehearsal: nothing pending on the restored copy"
    if not report.ok:
        m: MigrationReport = report.failure  # type: ignore[assignment]
        return f"Rehearsal: migration {m.version} ({m.name}) WOULD FAIL on the restored copy"
    large = sum(1 for m in report.migrations for s in m.statements for lk in strongest(s.locks) if lk.large)
    rewrites = sum(len(m.rewrites) for m in report.migrations)
    return (f"Rehearsal: {len(report.migrations)} migration(s) succeeded on the restored copy in "
            f"{human_ms(report.estimate_seconds * 1000)}; {large} blocking lock(s) on large tables, "
            f"{rewrites} rewrite(s)")


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    esc = [[str(v).replace("|", "\\|").replace("\n", " ") for v in r] for r in rows]
    return ("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            + "".join("| " + " | ".join(r) + " |\n" for r in esc))


def to_markdown(report: RehearsalReport) -> str:
    """The rehearsal section shown first in the approval form and the plan artifact."""
    md = f"## {headline(report)}\n\n"
    if report.skipped:
        md += f"> ⚠ **Warning:** {report.skipped}. The approver decides without a measurement.\n"
        return redact(md)
    md += (f"Backup `{report.backup_key}` ({human_bytes(report.backup_size)}) restored into scratch database "
           f"`{report.scratch_database}` on `{report.scratch_server}` (PostgreSQL {report.server_version}) in "
           f"{report.restore_seconds:.1f} s; version {report.version_before} → {report.version_after}.\n\n")
    if report.migrations:
        md += (f"**Production estimate: {human_ms(report.estimate_seconds * 1000)}** — {report.estimate_label}.\n\n")
    if not report.ok:
        md += f"**{report.failure_message()}**\n\n"
    md += "### Migrations\n\n" + _md_table(["version", "name", "transactional", "time", "outcome"],
                                          migration_rows(report))
    md += (f"\n### Locks (held until commit; ⚠ = blocking lock on a table of at least "
           f"{human_bytes(report.large_table_bytes)})\n\n" + _md_table(LOCK_COLUMNS, lock_rows(report)))
    md += "\n### Table rewrites (relfilenode changed)\n\n" + _md_table(
        ["migration", "relation", "statement", "size before", "size after"], rewrite_rows(report))
    preds = prediction_rows(report)
    if preds:
        md += "\n### validate predicted a lock: measured\n\n" + _md_table(
            ["migration", "rule", "line", "predicted", "measured"], preds)
    if report.warnings:
        md += "\n" + "".join(f"> ⚠ {w}\n" for w in report.warnings)
    return redact(md)


def print_human(report: RehearsalReport) -> None:
    """Terminal output for ``migrator rehearse``: one block per migration, a line per statement and
    lock (readable in a pipe or a CI log, where a wide table would be folded)."""
    from migrator.output import line

    line(headline(report), style="bold red" if not report.ok else "bold")
    if report.skipped:
        return
    line(f"backup {report.backup_key} ({human_bytes(report.backup_size)}) restored into {report.scratch_database} "
         f"on {report.scratch_server} (PostgreSQL {report.server_version}) in {report.restore_seconds:.1f} s; "
         f"version {report.version_before} -> {report.version_after}")
    for m in report.migrations:
        kind = "transactional" if m.transactional else f"not transactional: {m.why_not_transactional}"
        outcome = f"WOULD FAIL at {m.location}: {m.error}" if m.failed else "ok"
        line("")
        line(f"{m.version} {m.name} ({kind}) {human_ms(m.duration_ms)}: {outcome}",
             style="bold red" if m.failed else "bold")
        for s in m.statements:
            line(f"  #{s.index} line {s.line} ({human_ms(s.duration_ms)}): {s.text}", style="red" if s.error else None)
            for lk in strongest(s.locks):
                held = human_ms(lk.held_ms)
                held = f"held <= {held} (the statement commits by itself)" if lk.observed.startswith("sampled") \
                    else f"held {held} until commit"
                size = "" if lk.size_bytes is None else f", {human_bytes(lk.size_bytes)}"
                note = f"  blocks {_note(lk)}" if lk.blocks else ""
                line(f"      {lk.mode:<22} {lk.relation} ({lk.kind}{size})  {held}{note}",
                     style="red" if lk.large else None)
        for r in m.rewrites:
            after = "rolled back" if m.failed else human_bytes(r.size_after)
            line(f"  rewritten by #{r.statement}: {r.relation} ({r.kind}) {human_bytes(r.size_before)} -> {after}")
        for p in m.predictions:
            line(f"  validate {p.rule} {p.name} (line {p.line}) predicted {p.predicted}; measured: {p.measured}")
    if report.migrations:
        line("")
        line(f"production estimate: {human_ms(report.estimate_seconds * 1000)} ({report.estimate_label})")
    for w in report.warnings:
        line(f"warning: {w}", style="yellow")


def summary_dict(report: RehearsalReport) -> dict[str, Any]:
    """A short dict for the flow's run summary (the full report is in the artifact)."""
    return {"ok": report.ok, "skipped": report.skipped, "backup_key": report.backup_key,
            "estimate_seconds": report.estimate_seconds, "failure": report.failure_message()}
