"""The approval gate: a paused run, a form that can't be answered by accident, and its outcome.

The approving engineer sees, in the Prefect UI's resume form, what will run (each pending
migration by name with its lint warnings, after any preface such as a rehearsal result), must
choose ``approve`` or ``reject`` (no default) and give a name. A rejection alerts ``approval.rejected``
(not ``migration.failed``: nobody is paged) and ends the run Failed, outcome "rejected", with
ApprovalRejected; nothing was applied. A UI Retry of an approved run does not ask again while what it
would run is what was approved (``covered``: same files by checksum); a fixed file is approved again.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, Literal

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input, delete_flow_run_input, read_flow_run_input
from pydantic import Field

from flows._common import Decision, RunReport, artifact_key, md_table
from flows.pause import deadline_text, pause_for_input
from migrator.errors import ApprovalRejected, MigratorError
from tasks._common import run_logger
from tasks.environment import Environment
from tasks.notify import notify

if TYPE_CHECKING:
    from migrator.engine import Plan, PlanItem
    from migrator.lint import Finding, ValidationReport


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


def migration_label(step: PlanItem) -> str:
    """``000002_create_b``: the file's stem, as engineers know it."""
    return f"{step.version:06d}_{step.name}"


_VERSION_PREFIX = re.compile(r"(\d+)_")


def _version_of(finding: Finding) -> int | None:
    """The migration version a lint finding is about (from its file name), None for folder-level ones."""
    m = _VERSION_PREFIX.match((finding.file or "").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def _findings(report: ValidationReport | None) -> list[Finding]:
    return report.findings if report is not None else []


def _findings_by_version(report: ValidationReport | None) -> dict[int, list[Finding]]:
    out: dict[int, list[Finding]] = {}
    for f in _findings(report):
        v = _version_of(f)
        if v is not None:
            out.setdefault(v, []).append(f)
    return out


def _finding_line(f: Finding) -> str:
    where = (f.file or "").rsplit("/", 1)[-1] + (f":{f.line}" if f.line else "")
    return f"**{f.severity}** {f.rule} `{where}`: {f.message}"


def migrations_md(plan: Plan, report: ValidationReport | None) -> str:
    """Each migration the plan runs, by name, in order, with its lint findings under it."""
    by_version = _findings_by_version(report)
    lines = []
    for i, step in enumerate(plan.steps, 1):
        tx = "one transaction: all or nothing" if step.transactional else (
            f"**not in a transaction** ({step.why_not_transactional}): a failure halfway leaves the "
            "database dirty")
        lines.append(f"{i}. **{migration_label(step)}** ({step.direction}): {tx}")
        findings = by_version.get(step.version, [])
        lines += [f"    - {_finding_line(f)}" for f in findings] or ["    - no lint findings"]
    return "\n".join(lines) + "\n"


def plan_markdown(env: Environment, plan: Plan, report: ValidationReport | None,
                  backup_key: str | None, preface_md: str | None = None) -> str:
    """The plan as the approver and the plan artifact show it: the preface (a rehearsal result) first,
    then the version change, each migration by name with its lint findings, then the numbers."""
    n = len(plan.steps)
    md = preface_md.rstrip() + "\n\n" if preface_md else ""  # first, as agreed (F's rehearsal result)
    md += (f"# {n} migration{'s' if n != 1 else ''} for `{env.name}`: version {_version(plan.version)} "
           f"→ {_version(plan.target)}\n\n")
    md += migrations_md(plan, report)
    md += (
        f"\nDatabase `{plan.database}` is at version **{_version(plan.version)}**; "
        f"after these it will be at **{_version(plan.target)}**.\n\n"
        f"Backup taken before: `{backup_key or 'none'}`\n"
    )
    planned = {s.version for s in plan.steps}
    other = [f for f in _findings(report) if _version_of(f) not in planned]
    if other:
        md += "\n## Other lint findings (migrations not in this plan)\n\n" + md_table(
            ["severity", "rule", "where", "message"],
            [(f.severity, f.rule, f"{f.file}:{f.line or ''}", f.message) for f in other[:50]])
    return md


def _version(v: Any) -> str:
    return "none" if v is None or v == -1 else str(v)


def _names(plan: Plan, limit: int = 10) -> str:
    names = [migration_label(s) for s in plan.steps]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def request_approval(env: Environment, plan: Plan, report: ValidationReport | None,
                     backup_key: str | None, timeout_seconds: int, preface_md: str | None = None,
                     run: RunReport | None = None) -> str:
    """Pause until an engineer answers in the UI; returns who approved.

    Raises ApprovalRejected on a rejection (after alerting ``approval.rejected``) and MigratorError
    on a timeout; either way nothing was applied. The decision (who, their comment) is logged,
    written on top of the ``approval-<env>`` artifact, and recorded in ``run`` (its artifact is
    rewritten at once); the comment of an approval reaches the audit rows with the approver.
    """
    md = plan_markdown(env, plan, report, backup_key, preface_md)
    key = artifact_key("approval", env.name)
    names = _names(plan)
    scope = approved_scope(env.name, plan)
    earlier = _earlier_approval(scope)
    if earlier is not None:  # a Retry of this run, the plan unchanged: the approval already given holds
        run_logger().info("%s in an earlier attempt of this run, for these very files: applying %s",
                          earlier.text(), names)
        _decided(env, key, md, earlier, f"applying {names} (a retry of the same run; the plan, its files' "
                                        "checksums included, is what was approved)", run)
        return str(earlier.by)
    create_markdown_artifact(markdown="> **Waiting for a decision**: open this run, click Resume, choose approve or "
                             "reject\n\n" + md, key=key,
                             description=f"approval needed: {env.name} (paused, waiting for a decision)")
    notify(env.name, "approval.requested", database=plan.database, version_before=plan.version,
           version_after=plan.target, backup_key=backup_key,
           migrations=[migration_label(s) for s in plan.steps],
           message=f"{env.name}: approval requested for {len(plan.steps)} migration(s): {names}")
    n = len(plan.steps)
    waiting = (f"paused for approval: {n} migration{'s' if n != 1 else ''} for {env.name} (version "
               f"{_version(plan.version)} -> {_version(plan.target)}) wait for an engineer. Click Resume, "
               f"set Decision to approve or reject, type Your name (and a Comment, e.g. the change ticket), then "
               f"Submit; without an answer by {deadline_text(timeout_seconds)} nothing is applied")
    answer = pause_for_input(Approval.with_initial_data(description=md), timeout_seconds=timeout_seconds,
                             key="approval",  # a waiting run names what the holder waits for: "paused for approval"
                             message=waiting)
    log = run_logger()
    if answer is None:
        decided = Decision("timed out")
        _decided(env, key, md, decided, f"nothing was applied; {env.name} stays at version "
                                        f"{_version(plan.version)}", run)
        raise MigratorError(f"approval timed out after {timeout_seconds}s: nothing was applied")
    approver, comment = answer.approver.strip(), answer.comment.strip()
    if answer.decision != "approve":
        decided = Decision("rejected", approver, comment)
        msg = f"{decided.text()}: {names} not applied; {env.name} stays at version {_version(plan.version)}"
        log.info("%s", msg)
        _decided(env, key, md, decided, msg, run)
        notify(env.name, "approval.rejected", database=plan.database, version_before=plan.version,
               version_after=plan.version, approver=approver, comment=comment,
               migrations=[migration_label(s) for s in plan.steps], message=f"{env.name}: {msg}")
        raise ApprovalRejected(msg, approver, comment)
    decided = Decision("approved", approver, comment)
    log.info("%s: applying %s", decided.text(), names)
    _remember_approval(scope, decided)
    _decided(env, key, md, decided, f"applying {names}", run)
    return approver


APPROVED_PLAN_KEY = "approved-plan"


def approved_scope(env_name: str, plan: Plan) -> dict[str, Any]:
    """What an approval covers: the environment, database, target and each step with its file's checksum
    (plain JSON: it is kept as the flow run's input and compared on a Retry)."""
    return {"environment": env_name, "database": plan.database, "target": plan.target,
            "steps": [[s.version, s.direction, s.checksum] for s in plan.steps]}


def covered(scope: dict[str, Any], approved: dict[str, Any]) -> bool:
    """Is every step of ``scope`` one the approval ``approved`` covered, file checksum included, for the
    same database and target? (A retry after 9 of 10 migrations applied runs the approved 10th.)"""
    if any(scope[k] != approved.get(k) for k in ("environment", "database", "target")):
        return False
    given = {tuple(step) for step in approved.get("steps") or []}
    return bool(scope["steps"]) and all(tuple(step) in given and step[2] for step in scope["steps"])


def _earlier_approval(scope: dict[str, Any]) -> Decision | None:
    """The approval an earlier attempt of this flow run (before a UI Retry) got for a plan covering this
    one; None on a first attempt, for a changed file (a fixed file is approved again), or outside a run."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    try:
        given = read_flow_run_input(key=APPROVED_PLAN_KEY, flow_run_id=ctx.flow_run.id)
    except Exception as exc:  # the server could not answer: ask again rather than assume
        run_logger().warning("could not read this run's earlier approval (%s); asking again", exc)
        return None
    if not isinstance(given, dict) or not given.get("approver") or not covered(scope, given.get("scope") or {}):
        return None
    return Decision("approved", str(given["approver"]), str(given.get("comment") or ""))


def _remember_approval(scope: dict[str, Any], decided: Decision) -> None:
    """Keep the approval with the flow run, so a Retry of the same plan does not ask again."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    value = {"scope": scope, "approver": decided.by, "comment": decided.comment}
    try:
        with contextlib.suppress(Exception):  # absent on a first approval
            delete_flow_run_input(key=APPROVED_PLAN_KEY, flow_run_id=ctx.flow_run.id)
        create_flow_run_input(key=APPROVED_PLAN_KEY, value=value, flow_run_id=ctx.flow_run.id)
    except Exception as exc:  # a Retry then asks again: safe
        run_logger().warning("could not keep the approval with the run (%s); a Retry will ask again", exc)


def _decided(env: Environment, key: str, md: str, decided: Decision, what: str, run: RunReport | None) -> None:
    """The decision on top of the approval artifact, in the run's report, and in its artifact now."""
    head = f"> **Decision: {decided.text()}** - {what}\n\n"
    create_markdown_artifact(markdown=head + md, key=key, description=f"approval {env.name}: {decided.text()}")
    if run is not None:
        run.approval = decided
        if decided.decision == "approved":
            run.approved_by = decided.by
            run.approval_comment = decided.comment
        run.publish()
