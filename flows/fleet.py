"""``migrate-fleet``: migrate every database of a fleet environment, canary first, then in waves.

One survey (every database's version and dirty flag), one validation, one approval for the whole
fleet; then each database is migrated by its own ``migrate`` run (backup -> validate -> apply ->
verify, with its own lock, audit trail and UI recovery):

- from a deployment (``migrate-fleet/<env>``), as child runs of the ``migrate/<env>`` deployment
  (``run_deployment``), so the work spreads over every worker of the work pool;
- without one (``python -m flows migrate-fleet``, the ephemeral API), as in-process subflows.

Both honour ``max_parallel`` and the failure budget ``max_failures``: once more databases failed
than the budget allows, nothing new starts; running ones finish; nothing is rolled back. A canary
failure always stops the rollout. The fleet sends ONE alert (``fleet.completed`` / ``fleet.failed``);
its children send none (they run with ``fleet_run_id``).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Literal

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact

from flows._common import artifact_key, findings_md, md_table
from migrator import fleet
from migrator.errors import ApprovalRejected, ConfigError, MigratorError
from migrator.lint import ValidationReport
from migrator.redact import redact
from tasks._common import flow_run_id, flow_run_url, run_logger
from tasks.environment import Environment
from tasks.fleet import load_fleet, read_after, survey_fleet
from tasks.notify import notify
from tasks.validate import validate_migrations

Children = Literal["auto", "deployment", "subflow"]
FAILED = frozenset({"failed", "dirty", "unreachable"})


@dataclass
class ChildResult:
    """How one child run ended, as its orchestrator saw it."""

    name: str
    ok: bool
    run_id: str | None = None
    error: str | None = None
    backup_key: str | None = None
    duration_seconds: float | None = None


def ui_run_url(run_id: str | None) -> str | None:
    """The Prefect UI link of a flow run (None on the ephemeral API, which has no UI)."""
    if not run_id:
        return None
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not ui:
        api = PREFECT_API_URL.value()
        ui = api[: -len("/api")] if api and api.endswith("/api") else None
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None


# ----------------------------------------------------------------------------------- child runners


class SubflowRunner:
    """Children as in-process subflows of this run, ``max_parallel`` threads at a time."""

    def __init__(self, max_parallel: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="fleet")
        self.running: dict[Future[ChildResult], str] = {}
        self.settings = _without_child_heartbeats()
        # Prefect warns once per task that a timeout cannot interrupt a task in a thread: say it
        # once for the fleet instead of twice per database
        run_logger().warning("in-process children run in threads: Prefect cannot interrupt their task timeouts; "
                             "PostgreSQL's lock_timeout and statement_timeout still bound every statement")
        self._filter = _ThreadTimeoutNotice()
        logging.getLogger("prefect.task_runs").addFilter(self._filter)

    def start(self, name: str, parameters: dict[str, Any]) -> None:
        ctx = contextvars.copy_context()  # the fleet's flow run context: the child becomes its subflow
        self.running[self.pool.submit(ctx.run, _run_subflow, name, parameters, self.settings)] = name

    def wait_any(self) -> list[ChildResult]:
        done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
        results = []
        for fut in done:
            name = self.running.pop(fut)
            try:
                results.append(fut.result())
            except BaseException as exc:  # the engine itself failed around the child
                results.append(ChildResult(name, False, error=redact(f"{type(exc).__name__}: {exc}")))
        return results

    def close(self) -> None:
        try:
            self.pool.shutdown(wait=True)
        finally:
            logging.getLogger("prefect.task_runs").removeFilter(self._filter)


class _ThreadTimeoutNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in str(record.msg)


def _without_child_heartbeats() -> Any:
    """The fleet run's settings with flow heartbeats off, for its in-process children.

    Prefect's heartbeat thread sleeps in whole seconds and the engine joins it when a flow run
    ends, so every subflow's end waited 0.5 s on average (measured: 0.52 s of a 3.9 s child under
    load). An in-process child lives and dies with the fleet run's process, whose own heartbeat
    keeps going: a crash of that process stops the fleet run's heartbeat, and the children are
    that run's subflows (deployment children, each in its own process, keep their heartbeats).
    """
    from prefect.context import get_settings_context

    return get_settings_context().settings.copy_with_update(updates={"flows.heartbeat_frequency": None})


def _run_subflow(name: str, parameters: dict[str, Any], settings: Any = None) -> ChildResult:
    from prefect.context import SettingsContext, get_settings_context

    from flows.migrate import migrate

    started = time.monotonic()
    if settings is None:
        state: Any = migrate(**parameters, return_state=True)
    else:
        with SettingsContext(profile=get_settings_context().profile, settings=settings):
            state = migrate(**parameters, return_state=True)
    run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    value = state.result(raise_on_failure=False)
    duration = round(time.monotonic() - started, 1)
    if state.is_completed() and isinstance(value, dict):
        return ChildResult(name, True, run_id, backup_key=value.get("backup_key"), duration_seconds=duration)
    error = value if isinstance(value, BaseException) else state.message
    return ChildResult(name, False, run_id, error=redact(str(error)), duration_seconds=duration)


class DeploymentRunner:
    """Children as runs of the ``migrate`` deployment, picked up by any worker of its pool."""

    def __init__(self, deployment: str, poll_seconds: float = 2.0) -> None:
        self.deployment = deployment
        self.poll_seconds = poll_seconds
        self.running: dict[Any, str] = {}

    def start(self, name: str, parameters: dict[str, Any]) -> None:
        from prefect.deployments import run_deployment

        run: Any = run_deployment(
            name=self.deployment, parameters=parameters, timeout=0, as_subflow=True,
            flow_run_name=f"migrate {parameters['environment']}",
        )
        self.running[run.id] = name

    def wait_any(self) -> list[ChildResult]:
        """Poll the running children's states in ONE API call per interval until one is final."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

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
    """Deployment children when this run came from a deployment (a work pool exists), else subflows."""
    if mode == "auto":
        mode = "deployment" if runtime.deployment.id else "subflow"
    if mode == "subflow":
        return SubflowRunner(max_parallel)
    name = child_deployment or f"migrate/{environment}"
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except Exception:
        raise ConfigError(
            f"deployment {name} not found: deploy it (prefect deploy --name {name}) or run with children=subflow"
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
                    o.run_id, o.run_url = result.run_id, ui_run_url(result.run_id)
                    o.error, o.duration_seconds = result.error, result.duration_seconds
                    o.backup_key = result.backup_key
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
) -> dict[str, Any]:
    """Migrate every database of the fleet ``environment``: canary, then waves, within a failure budget."""
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
    started = time.monotonic()
    try:
        survey = survey_fleet(environment, target_version)
    except Exception as exc:  # no catalogue, no secret: the fleet cannot start, and someone must know
        why = redact(str(exc))
        notify(environment, "fleet.failed", database=environment, error=why, flow_run_url=flow_run_url(),
               message=f"fleet {environment}: could not list or read its databases: {why}; nothing was started")
        raise
    latest = int(survey["latest"])
    states = [fleet.DatabaseState(**d) for d in survey["databases"]]
    outcomes: dict[str, fleet.Outcome] = {}
    to_run: list[str] = []
    for s in states:
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
            to_run.append(s.name)
        outcomes[s.name] = o
    budget = fleet.Budget(policy["max_failures"])
    budget.failures = sum(o.outcome in FAILED for o in outcomes.values())
    waves = fleet.plan_waves(to_run, policy["canary"], policy["wave_size"])
    report: ValidationReport | None = None
    stopped: str | None = None
    result: dict[str, Any] = {"environment": environment, "latest": latest, "policy": policy}
    try:
        if to_run:
            report = validate_migrations(spec.member_environment(to_run[0]))
            if report.errors:
                raise MigratorError(f"validation found {report.errors} error(s) (checked against "
                                    f"{to_run[0]}); nothing was started")
        plan_md = plan_markdown(environment, states, to_run, waves, latest, policy)
        if dry_run:
            create_markdown_artifact(markdown=plan_md + "\n## Lint findings\n\n" + findings_md(report),
                                     key=artifact_key("fleet-plan", environment),
                                     description=f"fleet dry run {environment}")
            result.update(outcome="dry run", databases=[o.to_dict() for o in outcomes.values()],
                          to_run=to_run, waves=[w.databases for w in waves])
            return result
        if budget.exceeded:
            stopped = (f"{budget.failures} database(s) dirty or unreachable before the start, more than "
                       f"max_failures {budget.max_failures}: nothing was started")
        approved_by: str | None = None
        if to_run and not stopped:
            approve = env.approval_required if require_approval is None else require_approval
            if approve:
                approved_by = _fleet_approval(env, states, to_run, report, plan_md,
                                              approval_timeout_seconds or env.approval_timeout_seconds)
            runner = choose_runner(children, environment, child_deployment, policy["max_parallel"])
            fleet_run = flow_run_id() or "local"

            extra = _in_process_extras() if isinstance(runner, SubflowRunner) else {}

            def params_for(name: str) -> dict[str, Any]:
                return {"environment": spec.member_environment(name), "target_version": target_version,
                        "require_approval": False, "approved_by": approved_by, "fleet_run_id": fleet_run, **extra}

            rollout_started = time.time() - 1  # backup keys carry millisecond UTC timestamps
            stopped = roll_out(waves, runner, policy["max_parallel"], budget, params_for, outcomes)
            _read_truth(environment, outcomes, [n for n in to_run if outcomes[n].outcome != "not started"],
                        rollout_started)
    except Exception as exc:
        stopped = redact(str(exc))
        if not isinstance(exc, ApprovalRejected):  # a rejection has alerted approval.rejected already
            started_any = any(o.run_id for o in outcomes.values())
            notify(environment, "fleet.failed", database=environment, error=stopped, flow_run_url=flow_run_url(),
                   message=f"fleet {environment}: stopped{'' if started_any else ' before migrating'}: {stopped}",
                   counts=fleet.counts(outcomes.values()))
        raise
    finally:
        if not dry_run:
            ordered = [outcomes[s.name] for s in states]
            md = summary_markdown(environment, ordered, latest, stopped)
            create_markdown_artifact(markdown=redact(md), key=artifact_key("migrate-fleet", environment),
                                     description=f"migrate-fleet {environment}")
            result.update(databases=[o.to_dict() for o in ordered], counts=fleet.counts(ordered), stopped=stopped,
                          duration_seconds=round(time.monotonic() - started, 1))
    failed = [o for o in outcomes.values() if o.outcome in FAILED]
    _fleet_alert(environment, list(outcomes.values()), failed, stopped, result["duration_seconds"], latest)
    result["outcome"] = "failed" if failed else "succeeded"
    if failed:
        names = ", ".join(o.name for o in failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        raise MigratorError(f"fleet {environment}: {len(failed)} of {len(outcomes)} databases failed ({names}); "
                            f"see the migrate-fleet artifact for each one's state and next step")
    return result


def _in_process_extras() -> dict[str, Any]:
    """An in-process child has no UI to be recovered in: when the migrate flow can pause for a
    recovery form, it must not wait there (the fleet reports the dirty database and its next step)."""
    from flows.migrate import migrate

    properties = migrate.parameters.properties or {}
    return {"recovery_timeout_seconds": 1} if "recovery_timeout_seconds" in properties else {}


def _read_truth(environment: str, outcomes: dict[str, fleet.Outcome], names: list[str], since: float) -> None:
    """Version after / dirty from the databases themselves, not from what the runs reported; the
    backup of a deployment child (whose return value stays on its worker) from the backup store."""
    if not names:
        return
    after = read_after(environment, names, since, [n for n in names if not outcomes[n].backup_key])
    for name in names:
        s = after.get(name) or {}
        o = outcomes[name]
        if s.get("error"):
            o.error = o.error or s["error"]
            continue
        o.version_after, o.dirty_after = s.get("version"), bool(s.get("dirty"))
        o.backup_key = o.backup_key or s.get("backup_key")
        if o.outcome == "running":  # a child whose end we did not see (should not happen): say so
            o.outcome = "unknown"


def _fleet_approval(env: Environment, states: list[fleet.DatabaseState], to_run: list[str],
                    report: ValidationReport | None, plan_md: str, timeout_seconds: int) -> str:
    """ONE approval for the fleet: the plan lists every database and the migrations to run."""
    from flows.approval import request_approval
    from tasks.status import plan_migrations

    by_name = {s.name: s for s in states}
    furthest = min(to_run, key=lambda n: by_name[n].version or -1)
    plan = replace(plan_migrations(fleet.member_environment(env.name, furthest)),
                   database=f"{len(to_run)} databases of {env.name} (migrations listed for the furthest behind, "
                            f"{furthest})")
    return str(request_approval(env, plan, report, None, timeout_seconds, preface_md=plan_md))


def _fleet_alert(environment: str, outcomes: list[fleet.Outcome], failed: list[fleet.Outcome],
                 stopped: str | None, duration_seconds: float, latest: int) -> None:
    c = fleet.counts(outcomes)
    event = "fleet.failed" if failed else "fleet.completed"
    parts = ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
    message = f"fleet {environment}: {len(outcomes)} databases: {parts}" + (f"; stopped: {stopped}" if stopped else "")
    notify(environment, event, database=environment, version_after=latest, duration_ms=int(duration_seconds * 1000),
           message=message, counts=c, stopped=stopped, flow_run_url=flow_run_url(),
           failed_databases=[{"database": o.name, "outcome": o.outcome, "error": o.error,
                              "version": o.version_after, "dirty": o.dirty_after, "run_url": o.run_url}
                             for o in failed[:50]],
           failed_total=len(failed))


@flow(name="fleet-status")
def fleet_status(environment: str = "tenants") -> dict[str, Any]:
    """One line per database: version, dirty, pending. The run fails when any database is dirty."""
    survey = survey_fleet(environment)
    states = [fleet.DatabaseState(**d) for d in survey["databases"]]
    lines = fleet.status_lines(states, int(survey["latest"]))
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
    return {"environment": environment, "latest": survey["latest"], "databases": survey["databases"]}
