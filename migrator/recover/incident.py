"""One page per incident, and the incident as people read it (markdown for the Prefect UI).

Where the dedupe state lives: in the database the incident is about, next to its audit trail, in
``{table}_alerts`` (one row per incident fingerprint and event). Every run of every flow, the
status monitor and the CLI's ``status --alert`` already connect to that database, so they all see
the same record without Prefect (the CLI never imports it) and without a second store to keep
alive; a Prefect server rebuilt from scratch does not re-page a known incident, and a database
restored from a backup taken before the incident has no record of it (it has no incident either).
Claiming a page is one ``INSERT ... ON CONFLICT ... WHERE`` statement, so a UI retry and the
monitor racing each other still send one page. A reminder is sent when the last page for the same
fingerprint is older than the configured interval, and is marked as a reminder.

The fingerprint is environment + database + version + the failed audit row (``Incident.fingerprint``):
a retry or a monitor run that finds the same dirty version is the same incident; the same migration
failing again after a revert is a new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg import sql

from migrator.engine import Migrator
from migrator.execute.state import statement_hash
from migrator.recover.actions import ACTIONS, Incident, RecoveryResult, version_text, yes_no

if TYPE_CHECKING:
    from migrator.config import Settings
    from migrator.execute.state import StateTable

PageKind = Literal["first", "reminder", "duplicate"]
DEFAULT_REMIND_MINUTES = 240.0


@dataclass
class PageDecision:
    """Whether to send a page for an incident now: the first one, a reminder, or not (duplicate)."""

    kind: PageKind
    first_sent: datetime | None = None
    sent: int = 0

    @property
    def send(self) -> bool:
        return self.kind != "duplicate"


def _alerts_table(st: StateTable) -> sql.Identifier:
    return sql.Identifier(st.schema, st.table + "_alerts")


def claim_page(
    conn: psycopg.Connection, st: StateTable, fingerprint: str, event: str, remind_after_minutes: float | None
) -> PageDecision:
    """Record that ``event`` is paged for ``fingerprint`` unless it already was (less than
    ``remind_after_minutes`` ago; None: never remind). Atomic: concurrent runs get one "first"."""
    table = _alerts_table(st)
    for _ in range(2):  # two first runs may race on CREATE TABLE IF NOT EXISTS
        try:
            conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {} (
                        fingerprint text NOT NULL, event text NOT NULL,
                        first_sent timestamptz NOT NULL DEFAULT now(), last_sent timestamptz NOT NULL DEFAULT now(),
                        sent integer NOT NULL DEFAULT 1, run_id text, PRIMARY KEY (fingerprint, event))"""
                ).format(table)
            )
            break
        except psycopg.errors.UniqueViolation:
            continue
    remind = sql.SQL("false" if remind_after_minutes is None else "a.last_sent <= now() - make_interval(secs => %s)")
    params: tuple[object, ...] = (fingerprint, event)
    if remind_after_minutes is not None:
        params += (float(remind_after_minutes) * 60,)
    row = conn.execute(
        sql.SQL(
            """INSERT INTO {t} AS a (fingerprint, event) VALUES (%s, %s)
               ON CONFLICT (fingerprint, event) DO UPDATE SET last_sent = now(), sent = a.sent + 1
               WHERE {remind}
               RETURNING sent, first_sent"""
        ).format(t=table, remind=remind),
        params,
    ).fetchone()
    if row is None:
        first = conn.execute(
            sql.SQL("SELECT sent, first_sent FROM {} WHERE fingerprint = %s AND event = %s").format(table),
            (fingerprint, event),
        ).fetchone()
        return PageDecision("duplicate", first[1] if first else None, int(first[0]) if first else 0)
    return PageDecision("first" if int(row[0]) == 1 else "reminder", row[1], int(row[0]))


def claim(settings: Settings, incident: Incident, event: str = "database.dirty",
          remind_after_minutes: float | None = DEFAULT_REMIND_MINUTES) -> PageDecision:
    """``claim_page`` on the incident's own database (a connection of its own, no migration lock).

    When the record cannot be written (read-only user, database unreachable) the page is sent:
    a duplicate page is better than a lost one.
    """
    try:
        with Migrator(settings).session(lock=False) as s:
            return claim_page(s.conn, s.st, incident.fingerprint, event, remind_after_minutes)
    except Exception as exc:
        logging.getLogger("migrator.recover.incident").warning(
            "could not record the page for %s (%s); sending it anyway", incident.fingerprint, exc)
        return PageDecision("first")


# ------------------------------------------------------------------------------------------- markdown


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def statements_md(inc: Incident) -> str:
    """Each statement of the failed file, state first (the form is narrow)."""
    if not inc.statements:
        return "_the failed file is not on the worker, or no audit row says what ran_\n"
    rows = ["| # | state | line | statement |", "|---|---|---|---|"]
    for r in inc.statements:
        text = r.text if len(r.text) <= 70 else r.text[:67] + "..."
        state = {"done": "done", "not run": "not run", "unknown": "unknown (no audit row)"}.get(r.state, "**FAILED**")
        rows.append(f"| {r.index} | {state} | {r.line} | `{_cell(text)}` |")
    failed = next((r for r in inc.statements if r.state == "failed"), None)
    tail = f"\nStatement {failed.index} failed: **{_cell(failed.error)}**\n" if failed and failed.error else ""
    return "\n".join(rows) + "\n" + tail


def resume_plan(inc: Incident) -> list[tuple[int, int, str, str]]:
    """What ``resume`` would run now, read from the file on the worker: (statement number, line,
    text, sha256 of the statement as the audit trail hashes it); empty when resume is refused."""
    try:
        if not inc.option("resume").available:
            return []
    except Exception:
        return []
    return [(r.index, r.line, r.text, statement_hash(r.text)) for r in inc.statements
            if r.state in ("failed", "not run")]


def resume_md(inc: Incident, *, changed_since_pause: bool = False) -> str:
    """The statements ``resume`` will run if submitted now, with their hashes (the form shows them)."""
    plan = resume_plan(inc)
    md = ""
    if changed_since_pause:
        md += ("> **The migration file changed on the worker since this run paused**: what resume runs is "
               "the file as it is now, below.\n\n")
    if not plan:
        return md
    skipped = sum(1 for r in inc.statements if r.state == "done")
    rows = ["| # | line | statement | sha256 |", "|---|---|---|---|"]
    for index, line, text, digest in plan:
        short = text if len(text) <= 70 else text[:67] + "..."
        rows.append(f"| {index} | {line} | `{_cell(short)}` | `{digest[:12]}` |")
    return (md + f"## What resume will run\n\nSkips the {skipped} statement(s) already run, then runs these, "
            "exactly, from the file on the worker now:\n\n" + "\n".join(rows) + "\n")


def options_md(inc: Incident) -> str:
    """The four actions as a list (wraps in a narrow form): what each does now, or why it is refused."""
    lines = []
    for o in inc.options:
        if o.available:
            lines.append(f"- **`{o.action}`**: {o.does}")
        else:
            lines.append(f"- ~~`{o.action}`~~ **refused**: {o.why_not}")
    return "\n".join(lines) + "\n"


def incident_md(inc: Incident, *, title: str | None = None, run_url: str | None = None,
                backup_url: str | None = None, note: str | None = None, next_step: str | None = None,
                changed_since_pause: bool = False) -> str:
    """The incident for the recovery form's description and the ``incident-<env>`` artifact: what
    failed and how far it got first, then the choices, then the details."""
    env = inc.environment or "?"
    head = title or f"{env}: database is dirty at version {version_text(inc.version)}"
    md = f"# {head}\n\n"
    if note:
        md += f"> **Last recovery attempt:** {_cell(note)}\n\n"
    if inc.migration and inc.attempt_id is not None:
        md += f"Migration **`{inc.migration}`** ({inc.direction}) failed"
        md += f" at `{Path(inc.file).name}:{inc.line}`" if inc.file and inc.line else ""
        md += f": **{_cell(inc.pg_error)}**.\n\n" if inc.pg_error else ".\n\n"
    else:
        md += f"{_cell(inc.headline())}.\n\n"
    md += "## Statements\n\n" + statements_md(inc)
    if inc.file_changed:
        md += "\n_The file on the worker changed since the failed run: the statements above are the current file's._\n"
    resume = resume_md(inc, changed_since_pause=changed_since_pause)
    md += ("\n" + resume) if resume else ""
    md += "\n## Choose an action\n\n" + options_md(inc)
    if next_step:
        md += f"\n**Next step:** {next_step}\n"
    md += (
        "\n## Details\n\n| field | value |\n|---|---|\n"
        f"| environment | `{env}` |\n"
        f"| database | `{inc.database}` |\n"
        f"| version | {version_text(inc.version)} |\n"
        f"| dirty | {yes_no(inc.dirty)} |\n"
        f"| version before the migration | {version_text(inc.previous_version)} |\n"
    )
    if inc.where:
        md += f"| file | `{inc.where}` |\n"
    if inc.failed_at:
        md += f"| failed at | {inc.failed_at} |\n"
    if run_url:
        md += f"| run | [{run_url}]({run_url}) |\n"
    if backup_url:
        md += f"| backup before the run | `{backup_url}` |\n"
    return md


# The one vocabulary for a recovery's outcome (RecoveryResult.outcome is the core's key for it).
OUTCOME_WORDS = {"completed": "recovered", "left_dirty": "left dirty", "refused": "refused", "failed": "failed"}


def outcome_text(outcome: str) -> str:
    """``completed`` -> ``recovered``, ``left_dirty`` -> ``left dirty``: the word events, state
    messages and artifacts use."""
    return OUTCOME_WORDS.get(outcome, outcome)


def recovery_next_step(result: RecoveryResult, choose_again: str) -> str | None:
    """What on-call does after a recovery action; ``choose_again`` is where the choice is made."""
    if result.outcome == "completed":
        if result.action == "revert":
            return (f"migration {result.migration or result.version_before} is not applied any more: fix it, "
                    "then migrate again")
        return None
    if result.outcome == "left_dirty":
        return (f"the database stays DIRTY at version {version_text(result.version_after)}: nothing migrates "
                f"until it is recovered; {choose_again}")
    return f"the database is still DIRTY at version {version_text(result.version_after)}: {choose_again}"


def recovery_md(results: list[RecoveryResult]) -> str:
    """Every recovery action of the run, in order (GitHub-flavoured markdown table)."""
    if not results:
        return ""
    head = ["action", "engineer", "comment", "outcome", "version after", "dirty after", "what happened"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        rows.append(
            f"| `{r.action}` | {_cell(r.engineer)} | {_cell(r.comment or '')} | {outcome_text(r.outcome)} | "
            f"{version_text(r.version_after)} | {yes_no(r.dirty_after)} | {_cell(r.message)} |"
        )
    return "\n## Recovery\n\n" + "\n".join(rows) + "\n"


__all__ = ["ACTIONS", "OUTCOME_WORDS", "PageDecision", "claim", "claim_page", "incident_md", "outcome_text",
           "recovery_md", "recovery_next_step", "resume_md", "resume_plan", "statements_md"]
