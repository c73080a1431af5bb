"""What every migrate/rollback/force/recover run shares: the concurrency slot and ONE failure mechanism.

``flow_report(kind, env)`` wraps a flow's steps. Whatever way the run ends, it reads the database's
real state afterwards (version, dirty flag, the failed migration and its statements), sends at most
one alert (a dirty database is paged once per incident, see ``migrator.recover.incident``), writes the run's
artifact (and the ``incident-<env>`` artifact when there is a new incident or a recovery), and gives
the flow run a one-line state message that says the truth and the next step as a UI link. A flow
body is its steps, in order; the report is filled in by the step helpers below.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.states import Completed
from prefect.utilities.urls import url_for

from flows.slot import migration_slot as migration_slot  # re-exported: flows import it from here
from migrator.alerts.notify import failure_fields as core_fields
from migrator.errors import (
    ApprovalRejected,
    DirtyDatabaseError,
    ForceRefusedError,
    MigrationFailedError,
    MigratorError,
    migration_failure,
)
from migrator.files import shown as shown_file
from migrator.recover.actions import Incident, RecoveryError, RecoveryResult, inspect, version_text, yes_no
from migrator.recover.incident import (
    incident_md,
    outcome_text,
    recovery_md,
    statements_md,
)
from migrator.redact import redact
from migrator.verify import VerifyError
from tasks._common import deployment_run_url, flow_run_id, flow_run_url, run_logger
from tasks.backup import VerifiedBackup, backup_task
from tasks.environment import Environment
from tasks.notify import notify
from tasks.recovery import claim_dirty_page
from tasks.status import read_status

if TYPE_CHECKING:
    from prefect.states import State

    from migrator.engine import PlanItem, Step
    from migrator.lint import ValidationReport
    from migrator.status_model import Status


class RunFailed(MigratorError):
    """The run failed; the message is the whole truth in one line (state, failure, next step)."""


# ------------------------------------------------------------------------------------------- the report


@dataclass
class Decision:
    """The approval form's answer: ``approved`` or ``rejected`` by whom, with their comment (a change
    ticket), or ``timed out``."""

    decision: str  # approved | rejected | timed out
    by: str | None = None
    comment: str = ""

    def text(self) -> str:
        """``approved by bob (CHG-7)``, ``rejected by bob (not ready)``, ``timed out``."""
        if self.decision == "timed out":
            return "timed out: nobody answered, nothing applied"
        why = f" ({self.comment})" if self.comment else ""
        return f"{self.decision} by {self.by}{why}"

    def approved_by(self) -> str:
        """The artifact's "approved by" cell."""
        if self.decision == "approved":
            return f"{self.by}" + (f" (comment: {self.comment})" if self.comment else "")
        return f"nobody: {self.text()}"

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "by": self.by, "comment": self.comment}


def outcome_of(exc: BaseException) -> str:
    """The run's outcome for the exception that ended it, in the one vocabulary: rejected, left
    dirty, refused, failed, cancelled."""
    if not isinstance(exc, Exception):
        return "cancelled"
    if isinstance(exc, ApprovalRejected):
        return "rejected"
    if isinstance(exc, RecoveryError):
        return outcome_text(exc.result.outcome) if exc.result.outcome != "completed" else "failed"
    if isinstance(exc, DirtyDatabaseError | ForceRefusedError):
        return "refused"
    return "failed"


@dataclass
class RunReport:
    """The typed summary of one run; ``to_dict()`` is what the flow returns."""

    kind: str
    env: Environment
    outcome: str = "running"
    database: str | None = None
    version_before: int | None = None
    dirty_before: bool | None = None
    version_after: int | None = None
    dirty_after: bool | None = None
    backup_key: str | None = None
    backup_url: str | None = None
    approved_by: str | None = None
    approval: Decision | None = None  # the approval form's answer (or its timeout), when one was asked
    approval_comment: str = ""  # an approval's comment (a change ticket): kept in the audit rows
    plan: list[PlanItem] = field(default_factory=list)  # what the plan step said would run
    steps: list[Step] = field(default_factory=list)  # what the apply (or rollback) step ran
    lint: ValidationReport | None = None
    error: str | None = None
    incident: Incident | None = None
    incident_page: str | None = None  # "first" | "reminder" | "duplicate" once the incident was claimed
    recoveries: list[RecoveryResult] = field(default_factory=list)
    next_step: str | None = None
    message: str = ""
    alerted: list[str] = field(default_factory=list)
    success_alert: tuple[str, dict[str, Any]] | None = None
    pausing_for_recovery: bool = False
    started: float = field(default_factory=time.monotonic)
    duration_seconds: float = 0.0
    first_attempt_here: bool = True  # False on an in-process retry of the same flow run (see final_state)
    fleet_run_id: str | None = None  # a migrate-fleet run that alerts once for all its databases: none from here

    @property
    def environment(self) -> str:
        return self.env.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "environment": self.env.name, "outcome": self.outcome, "database": self.database,
            "version_before": self.version_before, "dirty_before": self.dirty_before,
            "version_after": self.version_after, "dirty_after": self.dirty_after,
            "backup_key": self.backup_key, "backup_url": self.backup_url, "approved_by": self.approved_by,
            "approval": self.approval.to_dict() if self.approval else None,
            "plan": [asdict(p) for p in self.plan], "steps": [asdict(s) for s in self.steps],
            "error": self.error,
            "incident": self.incident.to_dict() if self.incident else None,
            "recoveries": [r.to_dict() for r in self.recoveries], "next_step": self.next_step,
            "message": self.message, "alerts": list(self.alerted), "duration_seconds": self.duration_seconds,
        }

    def final_state(self) -> State[Any] | dict[str, Any]:
        """The flow's return value: Completed with the truthful one-line message.

        Also after a Retry from the UI (a new attempt of the same flow run in a new process: its
        run_count is above 1, and it gets the same summary line as a first run). Only an in-process
        retry (``@flow(retries=...)``) returns the plain summary: Prefect 3.9 hands that caller the
        first attempt's exception when a flow returns a State (FlowRunEngine.result prefers
        ``_raised``); its message is in the log and the artifact.
        """
        if not self.first_attempt_here:
            return self.to_dict()
        return Completed(message=self.message[:1900], data=self.to_dict())

    # -- truth -----------------------------------------------------------------------------------

    def read_truth(self) -> None:
        """Read the database's real state now (best effort: a dead database is said so)."""
        try:
            inc = inspect(self.env.settings)
        except Exception as exc:
            self.next_step = self.next_step or "check that the database is reachable, then look at its state"
            run_logger().warning("could not read the database state after the run: %s", redact(str(exc)))
            return
        self.database, self.version_after, self.dirty_after = inc.database, inc.version, inc.dirty
        self.incident = inc if inc.dirty else None

    def state_line(self) -> str:
        if self.incident is not None:
            return self.incident.headline()
        if self.version_after is None:
            return "database state unknown (could not read it)"
        return (f"database {self.database} at version {version_text(self.version_after)}, "
                f"dirty: {yes_no(self.dirty_after)}")

    # -- alerts ----------------------------------------------------------------------------------

    def alert(self, event: str, **fields: Any) -> None:
        fields.setdefault("database", self.database)
        fields.setdefault("version_before", self.version_before)
        fields.setdefault("backup_key", self.backup_url or self.backup_key)
        if self.fleet_run_id:  # no notify task run per database of a fleet: the fleet run alerts once
            run_logger().info("alert %s not sent: this run is part of fleet run %s, which alerts once for all "
                              "its databases", event, self.fleet_run_id)
        else:
            notify.with_options(task_run_name=f"notify {event}")(self.env.name, event, **fields)
        self.alerted.append(event)

    def page_incident(self, error: str | None = None) -> None:
        """database.dirty, once per incident (a reminder after the configured interval)."""
        inc = self.incident
        assert inc is not None
        decision = claim_dirty_page(self.env, self.env.settings, inc)
        self.incident_page = decision.kind
        self.next_step, link = next_step_for(self.env, inc, paused_here=self.pausing_for_recovery)
        if not decision.send:
            run_logger().info(
                "database.dirty not paged again: the same incident (%s) was paged at %s (%s page(s))",
                inc.fingerprint, decision.first_sent, decision.sent,
            )
            return
        prefix = "Reminder: " if decision.kind == "reminder" else ""
        self.alert(
            "database.dirty", version_after=inc.version, failing_version=inc.file_version or inc.version,
            dirty=True, file=inc.where, error=inc.pg_error or error, direction=inc.direction,
            statement=inc.statement, flow_run_url=link, next_step=self.next_step,
            reminder=decision.kind == "reminder", incident=inc.fingerprint,
            message=f"{prefix}{inc.headline()}. Next: {self.next_step}",
        )
        self.write_incident_artifact()

    def alert_failure(self, exc: Exception) -> None:
        if self.alerted:  # backup.failed, or the incident, was already reported by this run
            return
        if self.incident is not None and self.kind != "force":  # a refused force is its own alert
            self.page_incident(str(exc))
            return
        if isinstance(exc, ApprovalRejected):  # request_approval sent approval.rejected: not a failure page
            return
        if isinstance(exc, VerifyError) and exc.only_schema_drift:  # applied; the schema differs: say that
            self.alert("schema.drift", version_after=self.version_after, dirty=self.dirty_after,
                       differences=exc.schema_drift, next_step="run `migrator drift --json` (docs/drift.md)")
            return
        fields = failure_fields(exc)
        fields.setdefault("version_after", self.version_after)
        if isinstance(exc, ForceRefusedError):
            fields["direction"] = "force"
        fields.setdefault("dirty", self.dirty_after)
        if self.next_step is None:
            self.next_step = self.failure_next_step(exc)
        fields.update(next_step=self.next_step, duration_ms=int((time.monotonic() - self.started) * 1000))
        self.alert("migration.failed", **fields)

    def failure_next_step(self, exc: BaseException) -> str:
        """What to do after a failure that left the database clean (a dirty one has the recovery form)."""
        failure = migration_failure(exc)
        retry = (f"then click Retry on this run ({flow_run_url()})" if flow_run_url() else "then Retry this run")
        retry += f" or start {self.kind}/{self.env.name} again"
        if failure is not None:
            where = shown_file(failure.file, failure.line)
            return (f"nothing of migration {failure.version} stayed applied; fix {where} (or wait out a transient "
                    f"cause such as a lock), deploy the fix to the worker, {retry}")
        if isinstance(exc, ForceRefusedError):
            return f"read the version the database records now (migrator status), {retry} with it as expected_current"
        return f"fix the cause named above, {retry}"

    # -- ending ------------------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        self.outcome = outcome_of(exc)
        self.error = redact(str(exc)) or type(exc).__name__
        self.pausing_for_recovery = False  # whatever it was waiting for, this run is ending
        self.read_truth()
        if self.incident is not None:
            self.next_step, _ = next_step_for(self.env, self.incident)
        elif isinstance(exc, ApprovalRejected):
            self.next_step = (f"nothing was applied; settle what the rejection asks for, then start "
                              f"{self.kind}/{self.env.name} again")
        if isinstance(exc, Exception):
            self.alert_failure(exc)
        elif self.incident is not None and not self.alerted:
            # a cancel (Prefect's TerminationSignal) that left the database dirty pages like any failure
            self.page_incident(self.error)
        what = self.error if not isinstance(exc, DirtyDatabaseError) else "refused: the database is dirty"
        self.message = f"{self.kind} {self.env.name} {self.outcome}: {what}. Now: {self.state_line()}"
        if self.next_step:
            self.message += f". Next: {self.next_step}"

    def succeed(self) -> None:
        self.read_truth()
        if self.outcome == "running":
            self.outcome = "succeeded"
        if self.success_alert is not None:
            event, fields = self.success_alert
            self.alert(event, version_after=self.version_after, dirty=self.dirty_after,
                       duration_ms=int((time.monotonic() - self.started) * 1000), **fields)
        self.message = f"{self.kind} {self.env.name} {self.outcome}. Now: {self.state_line()}"
        if self.incident is not None:
            self.next_step, _ = next_step_for(self.env, self.incident)
        if self.next_step:
            self.message += f". Next: {self.next_step}"

    # -- artifacts ---------------------------------------------------------------------------------

    def write_artifacts(self) -> None:
        self.duration_seconds = round(time.monotonic() - self.started, 1)
        create_markdown_artifact(markdown=redact(run_md(self)), key=artifact_key(self.kind, self.env.name),
                                 description=f"{self.kind} {self.env.name}: {self.outcome}")
        if self.recoveries and self.incident_page != "duplicate":
            self.write_incident_artifact()

    def publish(self) -> None:
        """Rewrite the run's artifacts now, at a decision (approval, rejection, recovery), so they say
        what was decided while the run goes on; the end of the run writes them again."""
        try:
            self.write_artifacts()
        except Exception as exc:  # an artifact is a courtesy: it never stops the run
            run_logger().warning("could not update the %s artifact: %s", artifact_key(self.kind, self.env.name),
                                 redact(str(exc)))

    def write_incident_artifact(self) -> None:
        """``incident-<env>``: written for a new incident (or a reminder) and after a recovery; a later
        run refused on the same incident leaves it alone."""
        inc = self.incident
        if inc is None and not self.recoveries:
            return
        if inc is not None:
            md = incident_md(inc, run_url=flow_run_url() if self.pausing_for_recovery else None,
                             backup_url=self.backup_url, next_step=self.next_step)
        else:
            last = self.recoveries[-1]
            md = (f"# {self.env.name}: incident resolved by `{last.action}` ({last.engineer})\n\n"
                  f"{last.message}\n")
        md += recovery_md(self.recoveries)
        create_markdown_artifact(markdown=redact(md), key=artifact_key("incident", self.env.name),
                                 description=f"incident {self.env.name}")


_ATTEMPTS_HERE: set[str] = set()  # flow runs that have had an attempt in this process


@contextlib.contextmanager
def flow_report(kind: str, env: Environment, report: RunReport | None = None, *,
                fleet_run_id: str | None = None) -> Iterator[RunReport]:
    """The one failure mechanism of migrate, rollback, force, recover and migrate-fleet (see the module
    docstring); ``report`` is a RunReport subclass for a run about more than one database (the fleet's);
    ``fleet_run_id``: the migrate-fleet run this one belongs to, which sends the alerts instead."""
    run = report if report is not None else RunReport(kind, env, fleet_run_id=fleet_run_id)
    rid = flow_run_id()
    if rid is not None:
        run.first_attempt_here = rid not in _ATTEMPTS_HERE
        _ATTEMPTS_HERE.add(rid)
    try:
        yield run
    except BaseException as exc:
        run.fail(exc)
        if isinstance(exc, Exception):
            run_logger().error("%s", run.message)
            raise RunFailed(run.message) from exc
        raise
    else:
        run.succeed()
        run_logger().info("%s", run.message)
    finally:
        run.write_artifacts()


# ------------------------------------------------------------------------------------------- steps


def read_status_before(run: RunReport, *, refuse_dirty: bool = True) -> Status:
    """Read the database's state into the report; a dirty database stops migrate and rollback."""
    before = read_status(run.env.name)
    run.database, run.version_before, run.dirty_before = before.database, before.version, before.dirty
    run.version_after, run.dirty_after = before.version, before.dirty
    if refuse_dirty and before.dirty:
        raise DirtyDatabaseError(before.version)
    return before


def take_backup(run: RunReport) -> VerifiedBackup:
    """The environment's backup task; a failure alerts ``backup.failed`` (once) and stops the run."""
    env = run.env
    try:
        taken: VerifiedBackup = backup_task(env)(env.name)
    except Exception as exc:
        run.alert("backup.failed", **failure_fields(exc))
        raise
    run.backup_key, run.backup_url = taken.backup.key, taken.backup.url or taken.backup.key
    return taken


def apply_step(run: RunReport, task: Any, *args: Any) -> bool:
    """Run the apply (or rollback) task; a failure that leaves the database dirty becomes an
    incident of this run (paged once, with this run's URL) and returns False instead of raising."""
    try:
        result = task(run.env.name, *args)
    except MigrationFailedError as exc:
        if not exc.dirty:
            raise
        run.read_truth()
        if run.incident is None:  # cleaned up in the meantime by someone else: report the failure
            raise
        run.pausing_for_recovery = True
        run.error = redact(str(exc))
        run.page_incident(exc.pg_message)
        return False
    run.steps, run.version_after = list(result.steps), result.version_after
    return True


def failure_fields(exc: BaseException) -> dict[str, Any]:
    fields = core_fields(exc)
    fields["error"] = redact(fields.get("error") or str(exc))
    return fields


# ------------------------------------------------------------------------------------------- links


def ui_url(kind: str, obj_id: Any) -> str | None:
    with contextlib.suppress(Exception):
        return url_for(kind, obj_id=str(obj_id))
    return None


def next_step_for(env: Environment, inc: Incident, *, paused_here: bool = False) -> tuple[str, str | None]:
    """What on-call does next, where they are (the Prefect UI), with a link: the paused run that
    holds the recovery form, or the ``recover/<env>`` deployment."""
    if paused_here:
        url = flow_run_url()
        return (f"open {url or 'this flow run'} and click Resume: choose revert, resume, mark_applied or "
                "leave_dirty in the recovery form, then Submit", url)
    paused = _paused_run_url(inc.run_id)
    if paused:
        return (f"the run that failed waits for a decision: open {paused} and click Resume, choose an action "
                "in the recovery form, then Submit", paused)

    url = deployment_run_url(f"recover/{env.name}", {"environment": env.name})
    if url is None:  # no recover deployment to link (a local run on Prefect's ephemeral API): the terminal
        return (f"`migrator status` shows the failed statement; fix the file, then `migrator recover --resume` "
                f"(or `--revert`, or `--mark-applied` once finished by hand); with a Prefect server: "
                f"Deployments > recover/{env.name} > Run", None)
    return (f"open {url} and submit it (leave action empty: the run reads the incident and pauses with the "
            f"recovery form), or fill action=revert|resume|mark_applied and engineer to act at once; "
            f"CLI: migrator recover --resume|--revert|--mark-applied", url)


def _paused_run_url(run_id: str | None) -> str | None:
    if not run_id or run_id == flow_run_id():
        return None

    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        fr = client.read_flow_run(run_id)  # type: ignore[arg-type]
        if fr.state is not None and fr.state.is_paused():
            return ui_url("flow-run", fr.id)
    return None



# ----------------------------------------------------------------------------------------- markdown


def md_cell(value: Any) -> str:
    """A GitHub-flavoured markdown table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "_none_\n"
    head = "| " + " | ".join(md_cell(c) for c in columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(md_cell(v) for v in row) + " |\n" for row in rows)
    return head + body


def findings_md(report: ValidationReport | None, limit: int = 50) -> str:
    if report is None:
        return "_validation did not run_\n"
    text = f"{report.errors} errors, {report.warnings} warnings\n\n"
    rows = [
        (f.severity, f.rule, shown_file(f.file, f.line) if f.file else "", f.message)
        for f in report.findings[:limit]
    ]
    return text + md_table(["severity", "rule", "where", "message"], rows)


def approved_by_text(run: RunReport) -> str:
    """Who approved what this run applied, true at every point of the run."""
    if run.approval is not None:
        return run.approval.approved_by()
    if run.approved_by:
        return run.approved_by
    return "nobody (no approval asked)"


def run_md(run: RunReport) -> str:
    """The run's artifact: what happened, the database's real state now, and the next step."""
    def known(v: Any, text: str) -> str:
        return text if v is not None else "?"

    md = (
        f"# {run.kind} on `{run.env.name}`: {md_cell(run.outcome)}\n\n"
        "| | |\n|---|---|\n"
        f"| environment | `{run.env.name}` |\n"
        f"| database | `{run.database or '?'}` |\n"
        f"| version before | {known(run.version_before, version_text(run.version_before))} |\n"
        f"| version now | {known(run.version_after, version_text(run.version_after))} |\n"
        f"| dirty now | {known(run.dirty_after, yes_no(run.dirty_after))} |\n"
        f"| backup | `{run.backup_url or 'none'}` |\n"
        f"| approved by | {md_cell(approved_by_text(run))} |\n"
        f"| duration | {run.duration_seconds} s |\n\n"
    )
    if run.message:
        md += f"**What happened:** {run.message}\n\n"
    if run.next_step:
        md += f"**Next step:** {run.next_step}\n\n"
    if run.incident is not None:
        md += (f"## Failed migration `{run.incident.migration or '?'}`\n\n"
               f"`{run.incident.where or '?'}`: {run.incident.pg_error or 'no error recorded'}\n\n"
               + statements_md(run.incident)
               + f"\nThe incident, with the actions, is the artifact `incident-{run.env.name}`.\n")
    md += recovery_md(run.recoveries)
    md += "\n## Migrations\n\n" + md_table(
        ["version", "name", "direction", "duration (ms)", "transactional", "result"], migration_rows(run))
    if run.lint is not None:
        md += "\n## Lint findings\n\n" + findings_md(run.lint)
    return md


def migration_rows(run: RunReport) -> list[tuple[Any, ...]]:
    """The plan's migrations with what became of each, from the database's state now (a migration
    applied by a recovery is listed, as is one that failed or never ran)."""
    done = {(s.version, s.direction): s for s in run.steps}
    rows = []
    listed: Sequence[PlanItem | Step] = run.plan or run.steps
    for step in listed:
        version, direction = step.version, step.direction
        ran = done.get((version, direction))
        rows.append((version, step.name, direction, ran.duration_ms if ran else "",
                     yes_no(step.transactional), _step_result(run, version, direction, ran is not None)))
    return rows


def _step_result(run: RunReport, version: int, direction: str, ran: bool) -> str:
    now, dirty = run.version_after, run.dirty_after
    if ran:
        return "applied" if direction == "up" else "reverted"
    if now is None:
        return "unknown (the database could not be read)"
    if version == now and dirty:
        return "FAILED half-way: database dirty"
    recovery = next((r for r in reversed(run.recoveries)
                     if r.outcome == "completed" and r.version_before == version), None)
    by = f" ({recovery.action} by {recovery.engineer})" if recovery else ""
    if direction == "up":
        return f"applied{by}" if version <= now else f"not applied{by}"
    return f"reverted{by}" if version > now else f"not reverted{by}"


def artifact_key(kind: str, environment: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes (``tenants:clinic_1``)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{environment}".lower()).strip("-")
