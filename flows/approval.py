"""The approval gate: a paused run, a form that can't be answered by accident, and its outcome.

The approving engineer sees, in the Prefect UI's resume form, what will run (each pending
migration by name with its lint warnings, after any preface such as a rehearsal result), must
choose ``approve`` or ``reject`` (no default) and give a name. A rejection is not a failure: it
alerts ``approval.rejected`` (not ``migration.failed``) and ends the run with ApprovalRejected.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows._common import artifact_key, md_table
from migrator.errors import ApprovalRejected, MigratorError
from tasks.environment import Environment
from tasks.notify import notify


class Approval(RunInput):
    """What the approving engineer fills in, in the Prefect UI, to resume a paused run."""

    decision: Literal["approve", "reject"] = Field(
        title="Decision",
        description="approve: apply the migrations listed above. reject: stop; nothing is applied.",
    )
    approver: str = Field(
        title="Your name",
        min_length=1,
        pattern=r"\S",
        description="Name or e-mail, recorded in the database's audit trail with the migrations.",
    )
    comment: str = Field(default="", title="Comment", description="Change ticket or reason (optional).")


def migration_label(step: dict[str, Any]) -> str:
    """``000002_create_b``: the file's stem, as engineers know it."""
    return f"{int(step['version']):06d}_{step['name']}"


_VERSION_PREFIX = re.compile(r"(\d+)_")


def _version_of(finding: dict[str, Any]) -> int | None:
    """The migration version a lint finding is about (from its file name), None for folder-level ones."""
    m = _VERSION_PREFIX.match(str(finding.get("file") or "").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def _findings_by_version(report: dict[str, Any] | None) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for f in (report or {}).get("findings") or []:
        v = _version_of(f)
        if v is not None:
            out.setdefault(v, []).append(f)
    return out


def _finding_line(f: dict[str, Any]) -> str:
    where = str(f.get("file") or "").rsplit("/", 1)[-1] + (f":{f['line']}" if f.get("line") else "")
    return f"**{f.get('severity')}** {f.get('rule')} `{where}`: {f.get('message')}"


def migrations_md(plan: dict[str, Any], report: dict[str, Any] | None) -> str:
    """Each migration the plan runs, by name, in order, with its lint findings under it."""
    by_version = _findings_by_version(report)
    lines = []
    for i, step in enumerate(plan["steps"], 1):
        tx = "one transaction: all or nothing" if step.get("transactional") else (
            f"**not in a transaction** ({step.get('why_not_transactional')}): a failure halfway leaves the "
            "database dirty")
        lines.append(f"{i}. **{migration_label(step)}** ({step['direction']}): {tx}")
        findings = by_version.get(int(step["version"]), [])
        lines += [f"    - {_finding_line(f)}" for f in findings] or ["    - no lint findings"]
    return "\n".join(lines) + "\n"


def plan_markdown(env: Environment, plan: dict[str, Any], report: dict[str, Any] | None,
                  backup_key: str | None, preface_md: str | None = None) -> str:
    """The plan as the approver and the plan artifact show it: the preface (a rehearsal result) first,
    then the version change, each migration by name with its lint findings, then the numbers."""
    n = len(plan["steps"])
    md = preface_md.rstrip() + "\n\n" if preface_md else ""  # first, as agreed (F's rehearsal result)
    md += (f"# {n} migration{'s' if n != 1 else ''} for `{env.name}`: version {_version(plan['version'])} "
           f"→ {_version(plan['target'])}\n\n")
    md += migrations_md(plan, report)
    md += (
        f"\nDatabase `{plan['database']}` is at version **{_version(plan['version'])}**; "
        f"after these it will be at **{_version(plan['target'])}**.\n\n"
        f"Backup taken before: `{backup_key or 'none'}`\n"
    )
    planned = {int(s["version"]) for s in plan["steps"]}
    other = [f for f in (report or {}).get("findings") or [] if _version_of(f) not in planned]
    if other:
        md += "\n## Other lint findings (migrations not in this plan)\n\n" + md_table(
            ["severity", "rule", "where", "message"],
            [(f.get("severity"), f.get("rule"), f"{f.get('file')}:{f.get('line') or ''}", f.get("message"))
             for f in other[:50]])
    return md


def _version(v: Any) -> str:
    return "none" if v is None or v == -1 else str(v)


def _names(plan: dict[str, Any], limit: int = 10) -> str:
    names = [migration_label(s) for s in plan["steps"]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def request_approval(env: Environment, plan: dict[str, Any], report: dict[str, Any] | None,
                     backup_key: str | None, timeout_seconds: int, preface_md: str | None = None) -> str:
    """Pause until an engineer answers in the UI; returns who approved.

    Raises ApprovalRejected on a rejection (after alerting ``approval.rejected``) and MigratorError
    on a timeout; either way nothing was applied.
    """
    md = plan_markdown(env, plan, report, backup_key, preface_md)
    create_markdown_artifact(markdown=md, key=artifact_key("approval", env.name),
                             description=f"approval needed: {env.name}")
    names = _names(plan)
    notify(env.name, "approval.requested", database=plan["database"], version_before=plan["version"],
           version_after=plan["target"], backup_key=backup_key,
           migrations=[migration_label(s) for s in plan["steps"]],
           message=f"{env.name}: approval requested for {len(plan['steps'])} migration(s): {names}")
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=md),
            timeout=timeout_seconds,
            poll_interval=max(1, min(10, timeout_seconds // 10)),
            key="approval",  # a waiting run names what the holder waits for: "paused for approval"
        )
    except FlowPauseTimeout:
        raise MigratorError(f"approval timed out after {timeout_seconds}s: nothing was applied") from None
    approver = answer.approver.strip()
    if answer.decision != "approve":
        why = f" ({answer.comment.strip()})" if answer.comment.strip() else ""
        msg = (f"rejected by {approver}{why}: {names} not applied; {env.name} stays at version "
               f"{_version(plan['version'])}")
        notify(env.name, "approval.rejected", database=plan["database"], version_before=plan["version"],
               version_after=plan["version"], approver=approver, comment=answer.comment,
               migrations=[migration_label(s) for s in plan["steps"]], message=f"{env.name}: {msg}")
        raise ApprovalRejected(msg)
    return approver
