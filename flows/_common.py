"""Pieces every flow shares: the per-environment concurrency slot, artifacts and failure alerts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact

from flows.slot import migration_slot as migration_slot  # re-exported: flows import it from here
from migrator.errors import DirtyDatabaseError
from migrator.redact import redact
from tasks.backup import backup_task
from tasks.environment import Environment
from tasks.notify import notify
from tasks.status import read_status


def new_summary(environment: str) -> dict[str, Any]:
    """The run summary every flow fills in; it becomes the run's artifact."""
    return {"environment": environment, "outcome": "running", "steps": []}


def record_status(environment: str, summary: dict[str, Any], *, refuse_dirty: bool = True) -> dict[str, Any]:
    """Read the database's state into ``summary``; a dirty database stops migrate and rollback."""
    before = read_status(environment)
    summary.update(database=before["database"], version_before=before["version"], version_after=before["version"])
    if refuse_dirty and before["dirty"]:
        raise DirtyDatabaseError(before["version"])
    return before


def take_backup(env: Environment, summary: dict[str, Any]) -> dict[str, Any]:
    """The environment's backup task; a failure alerts ``backup.failed`` (once) and stops the run."""
    try:
        backup = backup_task(env)(env.name)
    except Exception as exc:
        notify(env.name, "backup.failed", database=summary.get("database"),
               version_before=summary.get("version_before"), **failure_fields(exc))
        summary["alerted"] = True
        raise
    summary["backup_key"] = backup["key"]
    return dict(backup)


def failure_fields(exc: BaseException) -> dict[str, Any]:
    from migrator.notify import failure_fields as core_fields

    fields = core_fields(exc)
    fields["error"] = redact(fields.get("error") or str(exc))
    return fields


def md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_none_\n"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |\n" for row in rows)
    return head + body


def findings_md(report: dict[str, Any] | None, limit: int = 50) -> str:
    if not report:
        return "_validation did not run_\n"
    findings = report.get("findings") or []
    text = f"{report.get('errors', 0)} errors, {report.get('warnings', 0)} warnings\n\n"
    rows = [
        (f.get("severity"), f.get("rule"), f"{f.get('file')}:{f.get('line') or ''}", f.get("message"))
        for f in findings[:limit]
    ]
    return text + md_table(["severity", "rule", "where", "message"], rows)


def run_artifact(kind: str, env: Environment, summary: dict[str, Any], report: dict[str, Any] | None = None) -> None:
    """The markdown artifact every run leaves: what happened, to which versions, with what backup."""
    steps = summary.get("steps") or []
    md = (
        f"# {kind} on `{env.name}`: {summary.get('outcome', '?')}\n\n"
        f"| | |\n|---|---|\n"
        f"| environment | `{env.name}` |\n"
        f"| database | `{summary.get('database', '?')}` |\n"
        f"| version before | {summary.get('version_before', '?')} |\n"
        f"| version after | {summary.get('version_after', '?')} |\n"
        f"| backup | `{summary.get('backup_key') or 'none'}` |\n"
        f"| approved by | {summary.get('approved_by') or '-'} |\n"
        f"| duration | {summary.get('duration_seconds', '?')} s |\n\n"
    )
    if summary.get("error"):
        md += f"**Error:** {redact(summary['error'])}\n\n"
    md += "## Migrations\n\n" + md_table(
        ["version", "name", "direction", "duration (ms)", "transactional"],
        [(s["version"], s["name"], s["direction"], s.get("duration_ms", ""), s.get("transactional", ""))
         for s in steps],
    )
    if report is not None:
        md += "\n## Lint findings\n\n" + findings_md(report)
    create_markdown_artifact(markdown=redact(md), key=artifact_key(kind, env.name), description=f"{kind} {env.name}")


def artifact_key(kind: str, environment: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes (``tenants:clinic_1``)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{environment}".lower()).strip("-")
