"""A rehearsal report as rows (shared), Markdown (the approval form and the Prefect artifact) and
terminal output (``migrator rehearse``). Plain Python: the flow and the CLI render the same rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from migrator.output import line
from migrator.redact import redact
from migrator.rehearse.model import MODES, LockHold, MigrationReport, RehearsalReport, human_bytes, human_ms

TABLE_KINDS = ("table", "materialized view")


def strongest(locks: list[LockHold]) -> list[LockHold]:
    """The strongest lock per relation (ALTER TYPE takes SHARE and ACCESS EXCLUSIVE on the table: the
    person needs the second), tables first; the JSON report keeps every lock."""
    order = {m: i for i, m in enumerate(MODES.values())}
    best: dict[str, LockHold] = {}
    for lk in locks:
        if lk.relation not in best or order.get(lk.mode, 0) > order.get(best[lk.relation].mode, 0):
            best[lk.relation] = lk
    return sorted(best.values(), key=lambda x: (x.kind not in TABLE_KINDS, x.relation))


def _shown(lk: LockHold) -> bool:
    """Table locks, and any lock that blocks the application (index locks of a rewrite...)."""
    return lk.kind in TABLE_KINDS or lk.blocks is not None


def held_text(lk: LockHold, markdown: bool = False) -> str:
    """How long, and until what: COMMIT, the statement's own commit, or the failure."""
    held = human_ms(lk.held_ms)
    if "released at the failure" in lk.observed:
        return f"{held} (until the failure)"
    if lk.observed.startswith("sampled"):
        return f"≤ {held} (own commit)" if markdown else f"<= {held} (the statement commits by itself)"
    return held if markdown else f"{held} until commit"


def _note(lk: LockHold) -> str:
    if not lk.blocks:
        return "-"
    text = lk.blocks
    if lk.large:
        text = f"{text} ⚠ LARGE TABLE"
    return text


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


def _taken(report: RehearsalReport) -> str:
    """", taken 2026-12-04 20:50:15 UTC" when the backup's time is known."""
    if not report.backup_created_at:
        return ""

    try:
        return f", taken {datetime.fromisoformat(report.backup_created_at):%Y-%m-%d %H:%M:%S} UTC"
    except ValueError:
        return f", taken {report.backup_created_at}"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: RehearsalReport) -> str:
    """The rehearsal section shown first in the approval form and the plan artifact.

    Bullets, not wide tables: the Prefect UI's resume dialog is narrow, and a table there hides its
    right-hand columns (the lock mode and its hold) behind a horizontal scroll. The answer to "what
    will this block, and for how long" comes first; where the numbers come from comes last.
    """
    md = f"## {headline(report)}\n\n"
    if report.skipped:
        md += f"> ⚠ **Warning:** {report.skipped}. The approver decides without a measurement.\n"
        return redact(md)
    if not report.ok:
        md += f"**{_md(report.failure_message())}**\n\n"
    if report.backup_problem:  # the approver must know the copy is older than the newest backup
        md += f"> ⚠ **Warning:** {_md(report.backup_problem)}\n\n"
    if report.migrations:
        md += f"**Production estimate: {human_ms(report.estimate_seconds * 1000)}** ({report.estimate_label}).\n\n"
    for m in report.migrations:
        kind = "one transaction" if m.transactional else "not in a transaction"
        outcome = f" — **WOULD FAIL** at `{m.location}`: {_md(m.error)}" if m.failed else ""
        md += f"### {m.version} {m.name}: {human_ms(m.duration_ms)} ({kind}){outcome}\n\n"
        for s in m.statements:
            for lk in strongest(s.locks):
                if not _shown(lk):
                    continue
                mark = "⚠ " if lk.large else ""
                size = f", {human_bytes(lk.size_bytes)}" if lk.size_bytes is not None else ""
                blocks = f" — blocks {lk.blocks}" if lk.blocks else " — blocks neither reads nor writes"
                md += (f"- {mark}**{lk.mode}** on `{lk.relation}` ({lk.kind}{size}) held **{held_text(lk, True)}**"
                       f"{blocks}; statement #{s.index} (line {s.line})\n")
            if s.error:
                md += f"- statement #{s.index} (line {s.line}) failed: {_md(s.error)}\n"
        for r in m.rewrites:
            after = "rolled back" if m.failed else human_bytes(r.size_after)
            md += (f"- rewritten: `{r.relation}` ({r.kind}) {human_bytes(r.size_before)} → {after} "
                   f"(statement #{r.statement})\n")
        for p in m.predictions:
            md += f"- validate {p.rule} {p.name} (line {p.line}) predicted {p.predicted}; measured: {_md(p.measured)}\n"
        if not any(_shown(lk) for lk in m.locks) and not m.rewrites and not m.failed:
            md += "- no table lock and no rewrite measured\n"
        md += "\n"
    others = [w for w in report.warnings if w != report.backup_problem]
    if others:
        md += "".join(f"> ⚠ {_md(w)}\n" for w in others) + "\n"
    md += (f"_⚠ = a lock that blocks the application on a table of at least "
           f"{human_bytes(report.large_table_bytes)}. Backup `{report.backup_key}` "
           f"({human_bytes(report.backup_size)}{_taken(report)}) restored into scratch database "
           f"`{report.scratch_database}` on "
           f"{report.scratch_server} (PostgreSQL {report.server_version}) in {report.restore_seconds:.1f} s; "
           f"version {report.version_before} → {report.version_after}; locks read from pg_locks after each "
           f"statement, held until commit._\n")
    return redact(md)


def print_human(report: RehearsalReport) -> None:
    """Terminal output for ``migrator rehearse``: one block per migration, a line per statement and
    lock (readable in a pipe or a CI log, where a wide table would be folded)."""
    line(headline(report), style="bold red" if not report.ok else "bold")
    if report.skipped:
        return
    line(f"backup {report.backup_key} ({human_bytes(report.backup_size)}{_taken(report)}) restored into "
         f"{report.scratch_database} "
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
                held = "held " + held_text(lk)
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
            "backup_created_at": report.backup_created_at, "backup_problem": report.backup_problem,
            "estimate_seconds": report.estimate_seconds, "failure": report.failure_message()}
