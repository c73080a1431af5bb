"""``migrate-fleet``: migrate every database of a fleet environment, canary first, then in waves.

One survey (every database's version and dirty flag), one validation, one approval for the whole
fleet; then each database goes through the whole pipeline of a ``migrate`` run: no file drift, a
verified backup, apply (its own advisory lock, audited through the engine), verify:

- from a deployment (``migrate-fleet/<env>``), as child runs of the ``migrate/<env>`` deployment
  (``run_deployment``), so the work spreads over every worker of the work pool; each child has
  its own run page, slot, retries and recovery form;
- without one (``python -m flows migrate-fleet``, the ephemeral API): in this process, each
  database ONE task run (``migrate-member``: ``migrator.fleet.migrate_member``), ``max_parallel``
  threads at a time. A child flow run (about 0.45 s) and its six task runs (about 25 ms each)
  cost more than the work of a small migration (issue 23); a failed database is named in the
  fleet's artifact and alert with its next step (``recover/<fleet>:<db>`` for a dirty one).

Both honour ``max_parallel`` and the failure budget ``max_failures``: once more databases failed
than the budget allows, nothing new starts; running ones finish; nothing is rolled back. A canary
failure always stops the rollout. The fleet sends ONE alert (``fleet.completed`` / ``fleet.failed``);
its children send none (they run with ``fleet_run_id``). The run ends through ``flow_report``, as
``migrate`` does: one failure mechanism, a truthful one-line state message, the run's artifact.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from flows._common import RunReport, artifact_key, findings_md, flow_report, md_table, outcome_of
from flows.approval import request_approval
from migrator import fleet
from migrator.errors import ApprovalRejected, ConfigError, MigratorError
from migrator.lint import ValidationReport
from migrator.redact import redact
from tasks._common import deployment_run_url, flow_run_id, flow_run_url, run_logger
from tasks.environment import Environment
from tasks.fleet import load_fleet, migrate_member, read_after, survey_fleet
from tasks.notify import notify
from tasks.status import plan_migrations
from tasks.validate import validate_migrations

# "subflow" is the in-process mode's old name (each database was a child flow run): still accepted
Children = Literal["auto", "deployment", "in-process", "subflow"]
FAILED = frozenset({"failed", "dirty", "unreachable"})


@dataclass
class ChildResult:
    """How one database's run ended, as its orchestrator saw it."""

    name: str
    ok: bool
    run_id: str | None = None
    error: str | None = None
    backup_key: str | None = None
    duration_seconds: float | None = None
    run_kind: str = "flow-run"  # or "task-run": an in-process database's run
    next_step: str | None = None


def ui_run_url(run_id: str | None, kind: str = "flow-run") -> str | None:
    """The Prefect UI link of a flow (or task) run (None on the ephemeral API, which has no UI)."""
    if not run_id:
        return None
    ui = PREFECT_UI_URL.value()
    if not ui:
        api = PREFECT_API_URL.value()
        ui = api[: -len("/api")] if api and api.endswith("/api") else None
    return f"{ui.rstrip('/')}/runs/{kind}/{run_id}" if ui else None


# ----------------------------------------------------------------------------------- child runners


class InProcessRunner:
    """Each database ONE ``migrate-member`` task run of this flow run, ``max_parallel`` threads at a time."""

    def __init__(self, max_parallel: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="fleet")
        self.running: dict[Future[ChildResult], str] = {}

    def start(self, name: str, parameters: dict[str, Any]) -> None:
        ctx = contextvars.copy_context()  # the fleet's flow run context: the task runs in this flow run
        self.running[self.pool.submit(ctx.run, _run_member, name, parameters)] = name

    def wait_any(self) -> list[ChildResult]:
        done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        results = []
        for fut in done:
            name = self.running.pop(fut)
            try:
                results.append(fut.result())
            except BaseException as exc:  # the engine itself failed around the task
                results.append(ChildResult(name, False, error=redact(f"{type(exc).__name__}: {exc}")))
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _run_member(name: str, parameters: dict[str, Any]) -> ChildResult:
    state: Any = migrate_member(**parameters, return_state=True)
    run_id = str(state.state_details.task_run_id) if state.state_details.task_run_id else None
    value = state.result(raise_on_failure=False)
    if not isinstance(value, fleet.MemberResult):  # the task itself failed (e.g. its URL did not resolve)
        error = value if isinstance(value, BaseException) else state.message
        return ChildResult(name, False, run_id, error=redact(str(error)), run_kind="task-run")
    error = None if value.ok else f"{value.stage} failed: {value.error}"
    return ChildResult(name, value.ok, value.run_id or run_id, error=error, backup_key=value.backup_key,
                       duration_seconds=value.duration_seconds, run_kind="task-run",
                       next_step=None if value.ok else member_next_step(parameters["environment"], value))


def member_next_step(environment: str, r: fleet.MemberResult) -> str:
    """What on-call does about an in-process database that failed at ``r.stage`` (it has no run of
    its own to recover in: a dirty one goes to ``recover/<fleet>:<db>``)."""
    env = fleet.member_environment(environment, r.name)
    if r.dirty_after:
        url = deployment_run_url(f"recover/{env}", {"environment": env})
        where = f"[recover/{env}]({url})" if url else f"recover/{env} (Deployments > Run > Custom run)"
        return (f"dirty: recover it: run {where} (the recovery form), or `DATABASE_URL=<{r.name}'s URL> migrator "
                f"recover --env {env} --resume|--revert|--mark-applied`; then re-run the fleet")
    if r.stage == "drift":
        return "nothing was touched (its applied files changed): restore the files or fix the database, re-run"
    if r.stage == "backup":
        return "nothing was applied (no verified backup): fix the backup store or pg_dump, re-run the fleet"
    if r.stage == "verify":
        return (f"applied, but verify failed: `DATABASE_URL=<{r.name}'s URL> migrator drift --env {env}` names "
                "what differs; fix it, re-run the fleet")
    return "clean (its transaction rolled back): fix the cause, re-run the fleet"


class DeploymentRunner:
    """Children as runs of the ``migrate`` deployment, picked up by any worker of its pool."""

    def __init__(self, deployment: str, poll_seconds: float = 2.0) -> None:
        self.deployment = deployment
        self.poll_seconds = poll_seconds
        self.running: dict[Any, str] = {}

    def start(self, name: str, parameters: dict[str, Any]) -> None:
        run: Any = run_deployment(
            name=self.deployment, parameters=parameters, timeout=0, as_subflow=True,
            flow_run_name=f"migrate {parameters['environment']}",
        )
        self.running[run.id] = name

    def wait_any(self) -> list[ChildResult]:
        """Poll the running children's states in ONE API call per interval until one is final."""
        while True:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(self.running))),
                    limit=len(self.running),
                )
            # a PAUSED child waits for a person (e.g. the recovery form of a dirty database): for the
            # fleet it has failed, and the fleet's alert links to it, instead of waiting for the person
            finished = [r for r in runs if r.state is not None and (r.state.is_final() or r.state.is_paused())]
            if finished:
                results = []
                for r in finished:
                    name = self.running.pop(r.id)
                    ok = bool(r.state and r.state.is_completed())
                    error = None if ok else redact(r.state.message if r.state and r.state.message else
                                                   f"run ended {r.state.name if r.state else 'without a state'}")
                    if r.state and r.state.is_paused():
                        error = f"paused, waiting for a person in its run: {r.state.message or r.state.name}"
                    results.append(ChildResult(name, ok, str(r.id), error=error,
                                               duration_seconds=round(r.total_run_time.total_seconds(), 1)))
                return results
            time.sleep(self.poll_seconds)

    def close(self) -> None:
        return None


def choose_runner(mode: Children, environment: str, child_deployment: str | None, max_parallel: int) -> Any:
    """Deployment children when this run came from a deployment (a work pool exists), else in-process."""
    if mode == "auto":
        mode = "deployment" if runtime.deployment.id else "in-process"
    if mode in ("in-process", "subflow"):
        return InProcessRunner(max_parallel)
    name = child_deployment or f"migrate/{environment}"

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except Exception:
        raise ConfigError(
            f"deployment {name} not found: deploy it (prefect deploy --name {name}) or run with children=in-process"
        ) from None
    return DeploymentRunner(name)


# ------------------------------------------------------------------------------------------- rollout


def roll_out(waves: list[fleet.Wave], runner: Any, max_parallel: int, budget: fleet.Budget,
             params_for: Callable[[str], dict[str, Any]], outcomes: dict[str, fleet.Outcome]) -> str | None:
    """Start each wave when the previous one finished; returns why the rollout stopped early, or None."""
    log = run_logger()
    try:
        for wave in waves:
            if budget.exceeded:
                return f"failure budget exceeded ({budget.failures} failed, max_failures {budget.max_failures})"
            queue = list(reversed(wave.databases))
            wave_failed = 0
            log.info("wave %s%s: %s database(s)", wave.number, " (canary)" if wave.canary else "", len(queue))
            while queue or runner.running:
                while queue and len(runner.running) < max_parallel and not budget.exceeded:
                    name = queue.pop()
                    outcomes[name].wave = wave.number
                    outcomes[name].outcome = "running"
                    runner.start(name, params_for(name))
                if not runner.running:
                    break
                for result in runner.wait_any():
                    o = outcomes[result.name]
                    o.outcome = "succeeded" if result.ok else "failed"
                    o.run_id, o.run_url = result.run_id, ui_run_url(result.run_id, result.run_kind)
                    o.error, o.duration_seconds = result.error, result.duration_seconds
                    o.backup_key, o.next_step = result.backup_key, result.next_step
                    budget.record(not result.ok)
                    wave_failed += not result.ok
                    log.log(20 if result.ok else 40, "%s: %s%s", result.name, o.outcome,
                            f": {result.error}" if result.error else "")
            if wave.canary and wave_failed:
                return f"canary failed ({wave_failed} of {len(wave.databases)}): no other database was started"
        left = any(outcomes[n].outcome == "not started" for w in waves for n in w.databases)
        return (f"failure budget exceeded ({budget.failures} failed, max_failures {budget.max_failures})"
                if budget.exceeded and left else None)
    finally:
        runner.close()


# ------------------------------------------------------------------------------------------ artifacts


def _version(v: int | None) -> str:
    return "?" if v is None else "none" if v < 0 else str(v)


def summary_markdown(environment: str, outcomes: list[fleet.Outcome], latest: int, stopped: str | None,
                     dry_run: bool = False) -> str:
    """One table row per database (linear); failed databases first with their errors and run links."""
    c = fleet.counts(outcomes)
    title = "dry run" if dry_run else ("failed" if any(o.outcome in FAILED for o in outcomes) else "succeeded")
    md = [f"# migrate-fleet on `{environment}`: {title}\n\n",
          f"{len(outcomes)} databases, target version **{_version(latest)}**: "
          + ", ".join(f"{n} {k}" for k, n in sorted(c.items())) + "\n\n"]
    if stopped:
        md.append(f"**Stopped early:** {stopped}.\n\n")
    failed = [o for o in outcomes if o.outcome in FAILED]
    if failed:
        # what on-call needs comes first: the UI cuts wide tables off on the right
        md.append("## Failed: each needs a person (nothing was rolled back)\n\n")
        md.append(md_table(
            ["database", "state now", "next step"],
            [(o.name, _state_now(o), _next_step(o)) for o in failed],
        ))
        md.append("\n" + "".join(f"- **{o.name}**: {_clip(redact(o.error or 'no error text'))}\n"
                                 for o in failed[:200]))
        if len(failed) > 200:
            md.append(f"- … and {len(failed) - 200} more (each in its run)\n")
        md.append("\n")
    md.append("## Databases\n\n")
    md.append(md_table(
        ["database", "outcome", "version", "run", "wave", "duration (s)", "backup"],
        [(o.name, o.outcome, _span(o),
          f"[{o.run_id[:8]}]({o.run_url})" if o.run_url and o.run_id else (o.run_id or "-"),
          "-" if o.wave is None else ("canary" if o.wave == 0 else o.wave),
          "" if o.duration_seconds is None else o.duration_seconds,
          f"`{o.backup_key}`" if o.backup_key else "-")
         for o in outcomes],
    ))
    return "".join(md)


def _state_now(o: fleet.Outcome) -> str:
    return f"version {_version(o.version_after)}, " + ("**DIRTY**" if o.dirty_after else "clean")


def _span(o: fleet.Outcome) -> str:
    before, after = _version(o.version_before), _version(o.version_after)
    text = before if before == after else f"{before} → {after}"
    return text + (" **DIRTY**" if o.dirty_after else "")


def _clip(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _next_step(o: fleet.Outcome) -> str:
    if o.next_step and (o.dirty_after or o.outcome != "dirty"):
        link = f" ([its run]({o.run_url}))" if o.run_url and not o.dirty_after else ""
        return o.next_step + link
    if o.outcome == "dirty":
        return "dirty before this run: recover it first (its last migrate run, or the runbook), then re-run"
    if o.dirty_after:
        where = f"recover it in [its run]({o.run_url})" if o.run_url else f"recover it: run {o.run_id or '?'}"
        return f"dirty: {where}"
    if o.outcome == "unreachable":
        return "check the database URL / catalogue entry, then re-run the fleet"
    link = f" ([its run]({o.run_url}))" if o.run_url else ""
    return f"clean (its transaction rolled back){link}: fix the cause, re-run the fleet"


def plan_markdown(environment: str, states: list[fleet.DatabaseState], to_run: list[str], waves: list[fleet.Wave],
                  latest: int, policy: dict[str, int]) -> str:
    by_name = {s.name: s for s in states}
    wave_of = {name: w.number for w in waves for name in w.databases}
    return (
        f"# Fleet plan for `{environment}`\n\n"
        f"{len(to_run)} of {len(states)} databases to migrate to version **{_version(latest)}** in {len(waves)} "
        f"wave(s); canary {policy['canary']}, max_parallel {policy['max_parallel']}, wave_size "
        f"{policy['wave_size']}, max_failures {policy['max_failures']}.\n\n"
        + md_table(["database", "wave", "version", "pending"],
                   [(n, "canary" if wave_of[n] == 0 else wave_of[n],
                     _version(by_name[n].version), by_name[n].pending) for n in to_run])
    )


# ---------------------------------------------------------------------------------------- the report


@dataclass
class FleetReport(RunReport):
    """``flow_report``'s report for a fleet run: the same ending as ``migrate`` (one failure path, a
    truthful one-line state message, the run's artifact), about many databases instead of one.

    The fleet environment names no database: the truth is every member's, read by the fleet itself
    (``_read_truth``); the alert is the fleet's one ``fleet.completed`` / ``fleet.failed``."""

    dry_run: bool = False
    policy: dict[str, int] = field(default_factory=dict)
    latest: int = -1
    states: list[fleet.DatabaseState] = field(default_factory=list)
    outcomes: dict[str, fleet.Outcome] = field(default_factory=dict)
    to_run: list[str] = field(default_factory=list)
    waves: list[fleet.Wave] = field(default_factory=list)
    surveyed: bool = False
    stopped: str | None = None

    def ordered(self) -> list[fleet.Outcome]:
        return [self.outcomes[s.name] for s in self.states]

    def failed(self) -> list[fleet.Outcome]:
        return [o for o in self.ordered() if o.outcome in FAILED]

    def read_truth(self) -> None:
        """Nothing to read here: the members' truth was read after the rollout (``_read_truth``)."""

    def state_line(self) -> str:
        c = fleet.counts(self.ordered())
        return f"{len(self.states)} databases: " + (", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "none")

    def send(self, event: str, message: str, **fields: Any) -> None:
        notify(self.env.name, event, database=self.env.name, message=message, flow_run_url=flow_run_url(), **fields)
        self.alerted.append(event)

    def fail(self, exc: BaseException) -> None:
        self.outcome = outcome_of(exc)
        self.error = redact(str(exc)) or type(exc).__name__
        self.stopped = self.stopped or self.error
        name = self.env.name
        if isinstance(exc, Exception) and not isinstance(exc, ApprovalRejected) and not self.alerted:
            # (a rejection has alerted approval.rejected already)
            if not self.surveyed:  # no catalogue, no secret: the fleet cannot start, and someone must know
                self.send("fleet.failed", f"fleet {name}: could not list or read its databases: {self.error}; "
                          "nothing was started", error=self.error)
            else:
                started_any = any(o.run_id for o in self.outcomes.values())
                self.send("fleet.failed", f"fleet {name}: stopped{'' if started_any else ' before migrating'}: "
                          f"{self.error}", error=self.error, counts=fleet.counts(self.outcomes.values()))
        self.next_step = self.next_step or (
            "see the migrate-fleet artifact: each failed database with its state and next step" if self.failed()
            else "fix the cause named above, then start the fleet run again")
        self.message = f"{self.kind} {name} {self.outcome}: {self.error}. Now: {self.state_line()}"
        if self.next_step:
            self.message += f". Next: {self.next_step}"

    def succeed(self) -> None:
        self.outcome = "dry run" if self.dry_run else "succeeded"
        if self.dry_run:
            self.message = (f"{self.kind} {self.env.name} dry run: {len(self.to_run)} of {len(self.states)} "
                            f"databases to migrate in {len(self.waves)} wave(s); nothing changed")
        else:
            self.message = f"{self.kind} {self.env.name} succeeded. Now: {self.state_line()}"

    def write_artifacts(self) -> None:
        self.duration_seconds = round(time.monotonic() - self.started, 1)
        if self.dry_run:
            return  # its artifact is the plan (fleet-plan-<env>), written by the flow
        md = summary_markdown(self.env.name, self.ordered(), self.latest, self.stopped)
        create_markdown_artifact(markdown=redact(md), key=artifact_key(self.kind, self.env.name),
                                 description=f"{self.kind} {self.env.name}: {self.outcome}")

    def to_dict(self) -> dict[str, Any]:
        ordered = self.ordered()
        result: dict[str, Any] = {"environment": self.env.name, "latest": self.latest, "policy": self.policy,
                                  "outcome": self.outcome, "databases": [o.to_dict() for o in ordered],
                                  "message": self.message, "run_id": flow_run_id()}
        if self.dry_run:
            result.update(to_run=self.to_run, waves=[w.databases for w in self.waves])
        else:
            result.update(counts=fleet.counts(ordered), stopped=self.stopped,
                          duration_seconds=self.duration_seconds, alerts=list(self.alerted))
        return result


# ------------------------------------------------------------------------------------------------ flow


@flow(name="migrate-fleet")
def migrate_fleet(
    environment: str = "tenants",
    target_version: int | None = None,
    dry_run: bool = False,
    canary: int | None = None,
    max_parallel: int | None = None,
    wave_size: int | None = None,
    max_failures: int | None = None,
    children: Children = "auto",
    child_deployment: str | None = None,
    require_approval: bool | None = None,
    approval_timeout_seconds: int | None = None,
) -> Any:
    """Migrate every database of the fleet ``environment``: canary, then waves, within a failure budget.

    Args:
        children: ``in-process`` (each database one task run of this run), ``deployment`` (each a run
            of ``child_deployment``, default ``migrate/ENVIRONMENT``, e.g. ``migrate/prod``), or ``auto``: deployment
            children when this run comes from a deployment. ``subflow`` is in-process's old name.
    """
    env, spec = load_fleet(environment)
    policy = {
        "canary": spec.canary if canary is None else canary,
        "max_parallel": spec.max_parallel if max_parallel is None else max_parallel,
        "max_failures": spec.max_failures if max_failures is None else max_failures,
    }
    policy["wave_size"] = wave_size or spec.wave_size or policy["max_parallel"]
    if min(policy["max_parallel"], policy["wave_size"]) < 1 or min(policy["canary"], policy["max_failures"]) < 0:
        raise ConfigError(f"migrate-fleet {environment}: max_parallel and wave_size must be >= 1, canary and "
                          f"max_failures >= 0 (got {policy})")
    run = FleetReport("migrate-fleet", env, dry_run=dry_run, policy=policy)
    with flow_report("migrate-fleet", env, run):
        survey(run, target_version)
        budget = fleet.Budget(policy["max_failures"])
        budget.failures = sum(o.outcome in FAILED for o in run.outcomes.values())
        run.waves = fleet.plan_waves(run.to_run, policy["canary"], policy["wave_size"])
        lint: ValidationReport | None = None
        if run.to_run:
            lint = validate_migrations(spec.member_environment(run.to_run[0]))
            if lint.errors:
                raise MigratorError(f"validation found {lint.errors} error(s) (checked against "
                                    f"{run.to_run[0]}); nothing was started")
        plan_md = plan_markdown(environment, run.states, run.to_run, run.waves, run.latest, policy)
        if dry_run:
            create_markdown_artifact(markdown=plan_md + "\n## Lint findings\n\n" + findings_md(lint),
                                     key=artifact_key("fleet-plan", environment),
                                     description=f"fleet dry run {environment}")
        elif budget.exceeded:
            run.stopped = (f"{budget.failures} database(s) dirty or unreachable before the start, more than "
                           f"max_failures {budget.max_failures}: nothing was started")
        elif run.to_run:
            approve = env.approval_required if require_approval is None else require_approval
            approved_by = _fleet_approval(env, run.states, run.to_run, lint, plan_md,
                                          approval_timeout_seconds or env.approval_timeout_seconds) if approve else None
            runner = choose_runner(children, environment, child_deployment, policy["max_parallel"])
            params_for = _params_for(runner, spec, run.latest, target_version, approved_by)
            rollout_started = time.time() - 1  # backup keys carry millisecond UTC timestamps
            run.stopped = roll_out(run.waves, runner, policy["max_parallel"], budget, params_for, run.outcomes)
            _read_truth(environment, run.outcomes,
                        [n for n in run.to_run if run.outcomes[n].outcome != "not started"], rollout_started)
        failed = run.failed()
        if not dry_run:
            _fleet_alert(run, failed)
        if failed and not dry_run:
            names = ", ".join(o.name for o in failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10
                                                              else "")
            raise MigratorError(f"fleet {environment}: {len(failed)} of {len(run.outcomes)} databases failed "
                                f"({names}); see the migrate-fleet artifact for each one's state and next step")
    return run.final_state()


def survey(run: FleetReport, target_version: int | None) -> None:
    """Every database's state; which ones this run migrates (the others: current, dirty, unreachable)."""
    found = survey_fleet(run.env.name, target_version)
    run.surveyed, run.latest, run.states = True, found.latest, found.databases
    for s in run.states:
        o = fleet.Outcome(s.name, "not started", version_before=s.version, version_after=s.version,
                          dirty_after=s.dirty)
        if s.error:
            o.outcome, o.error = "unreachable", s.error
        elif s.dirty:
            o.outcome = "dirty"
            o.error = f"dirty at version {s.version} before this run; recover it, then re-run the fleet"
        elif s.pending == 0:
            o.outcome = "current"
        else:
            run.to_run.append(s.name)
        run.outcomes[s.name] = o


def _params_for(runner: Any, spec: fleet.FleetSpec, latest: int, target_version: int | None,
                approved_by: str | None) -> Callable[[str], dict[str, Any]]:
    """What each database's run gets: names and versions only (Prefect stores them; never a URL)."""
    if isinstance(runner, InProcessRunner):
        return lambda name: {"environment": spec.name, "name": name, "expected_version": latest,
                             "target_version": target_version, "approved_by": approved_by}
    fleet_run = flow_run_id() or "local"
    return lambda name: {"environment": spec.member_environment(name), "target_version": target_version,
                         "require_approval": False, "approved_by": approved_by, "fleet_run_id": fleet_run}


def _read_truth(environment: str, outcomes: dict[str, fleet.Outcome], names: list[str], since: float) -> None:
    """Version after / dirty from the databases themselves, not from what the runs reported; the
    backup of a deployment child (whose return value stays on its worker) from the backup store."""
    if not names:
        return
    after = read_after(environment, names, since, [n for n in names if not outcomes[n].backup_key])
    for name in names:
        o = outcomes[name]
        s = after.states.get(name)
        if s is None or s.error:
            o.error = o.error or (s.error if s else "its state could not be read after the run")
            continue
        o.version_after, o.dirty_after = s.version, s.dirty
        o.backup_key = o.backup_key or after.backup_keys.get(name)
        if o.outcome == "running":  # a child whose end we did not see (should not happen): say so
            o.outcome = "unknown"


def _fleet_approval(env: Environment, states: list[fleet.DatabaseState], to_run: list[str],
                    report: ValidationReport | None, plan_md: str, timeout_seconds: int) -> str:
    """ONE approval for the fleet: the plan lists every database and the migrations to run."""
    by_name = {s.name: s for s in states}
    furthest = min(to_run, key=lambda n: by_name[n].version or -1)
    plan = replace(plan_migrations(fleet.member_environment(env.name, furthest)),
                   database=f"{len(to_run)} databases of {env.name} (migrations listed for the furthest behind, "
                            f"{furthest})")
    return str(request_approval(env, plan, report, None, timeout_seconds, preface_md=plan_md))


def _fleet_alert(run: FleetReport, failed: list[fleet.Outcome]) -> None:
    """The fleet's ONE alert: counts, why it stopped, and each failed database (first 50)."""
    outcomes = list(run.outcomes.values())
    c = fleet.counts(outcomes)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
    message = (f"fleet {run.env.name}: {len(outcomes)} databases: {parts}"
               + (f"; stopped: {run.stopped}" if run.stopped else ""))
    run.send("fleet.failed" if failed else "fleet.completed", message, version_after=run.latest,
             duration_ms=int((time.monotonic() - run.started) * 1000), counts=c, stopped=run.stopped,
             failed_databases=[{"database": o.name, "outcome": o.outcome, "error": o.error,
                                "version": o.version_after, "dirty": o.dirty_after, "run_url": o.run_url,
                                "next_step": _next_step(o)} for o in failed[:50]],
             failed_total=len(failed))


@flow(name="fleet-status")
def fleet_status(environment: str = "tenants") -> dict[str, Any]:
    """One line per database: version, dirty, pending. The run fails when any database is dirty."""
    found = survey_fleet(environment)
    states = found.databases
    lines = fleet.status_lines(states, found.latest)
    log = run_logger()
    for line in lines:
        log.info("%s", line)
    dirty = [s.name for s in states if s.dirty]
    md = f"# Fleet status `{environment}`\n\n" + md_table(
        ["database", "version", "dirty", "pending", "error"],
        [(s.name, _version(s.version), "DIRTY" if s.dirty else "", s.pending, s.error or "") for s in states])
    create_markdown_artifact(markdown=redact(md), key=artifact_key("fleet-status", environment),
                             description=f"fleet status {environment}")
    if dirty:
        raise MigratorError(f"fleet {environment}: {len(dirty)} dirty database(s): {', '.join(dirty[:20])}")
    return {"environment": environment, "latest": found.latest, "databases": [s.to_dict() for s in states]}
