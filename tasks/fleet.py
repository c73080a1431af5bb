"""Fleet steps: resolve the fleet's databases, read every one's state, migrate one in-process.

Task inputs and results carry database names only, never URLs: Prefect stores both, and a URL
holds credentials. URLs are resolved inside the tasks from the environment's secret references,
once per flow run (``run_members``), like the environment itself (``run_environment``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from migrator import files, fleet
from migrator.backup import list_backups
from migrator.config import Settings
from migrator.errors import ConfigError
from migrator.recover.actions import inspect
from migrator.redact import redact
from tasks._common import flow_run_id, run_logger
from tasks.environment import Environment, _secret, run_environment
from tasks.recovery import claim_dirty_page


def load_fleet(environment: str) -> tuple[Environment, fleet.FleetSpec]:
    """The fleet's environment (its settings name no database) and its spec; not a fleet stops.

    Loaded once per flow run (``run_environment``): the flow and each of its tasks share it."""
    env = run_environment(environment)
    spec = fleet.parse_fleet(env.raw, environment)
    if spec is None:
        raise ConfigError(
            f"environment {environment!r} is not a fleet (deployments/{environment}.yaml has no databases: "
            f"or discover:); run migrate/{environment} instead"
        )
    return env, spec


def resolve_members(env: Environment, spec: fleet.FleetSpec) -> list[fleet.Member]:
    """Every member with its URL (a discovery query, or the listed references): never log the result."""
    return fleet.resolve_members(spec, lambda ref, what: _secret(ref, what, spec.name))


# the members resolved by the flow runs of this process: (fleet, flow run id) -> {name: Member}
_RUN_MEMBERS: OrderedDict[tuple[str, str], dict[str, fleet.Member]] = OrderedDict()
_RUN_MEMBERS_KEPT = 8
_run_members_lock = threading.Lock()


def run_members(env: Environment, spec: fleet.FleetSpec) -> dict[str, fleet.Member]:
    """The fleet's members as this flow run first resolved them (one discovery query per run; the
    survey, every in-process member and the read-back share it). Outside a run: resolved afresh."""
    run_id = runtime.flow_run.id
    if not run_id:
        return {m.name: m for m in resolve_members(env, spec)}
    key = (spec.name, str(run_id))
    with _run_members_lock:
        members = _RUN_MEMBERS.get(key)
    if members is None:
        members = {m.name: m for m in resolve_members(env, spec)}  # outside the lock: a slow catalogue
        with _run_members_lock:
            members = _RUN_MEMBERS.setdefault(key, members)
            while len(_RUN_MEMBERS) > _RUN_MEMBERS_KEPT:
                _RUN_MEMBERS.popitem(last=False)
    return members


def member(env: Environment, spec: fleet.FleetSpec, name: str) -> fleet.Member:
    """One member: from this run's resolution, else looked up alone (a name that is no member stops)."""
    found = run_members(env, spec).get(name)
    if found is not None:
        return found
    return fleet.Member(name, fleet.member_url(spec, name, lambda ref, what: _secret(ref, what, spec.name,
                                                                                         required=True)))


def member_settings(env: Environment, member: fleet.Member) -> Settings:
    """One member's settings: the fleet's, with the member's URL and environment name."""
    return replace(env.settings, database_url=member.url, environment=fleet.member_environment(env.name, member.name))


def target_versions(env: Environment, target_version: int | None) -> list[int]:
    """The migration versions a fleet run brings databases to (all, or up to ``target_version``)."""
    migrations = files.load(env.settings.migrations_path)
    migrations.raise_if_errors()
    versions = sorted(migrations.versions)
    if target_version is not None:
        if target_version not in versions:
            raise ConfigError(f"target_version {target_version} is not a migration in {env.settings.migrations_path}")
        versions = [v for v in versions if v <= target_version]
    return versions


@task(name="survey", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def survey_fleet(environment: str, target_version: int | None = None) -> fleet.Survey:
    """Discover the fleet's databases and read each one's version, dirty flag and pending count."""
    env, spec = load_fleet(environment)
    members = list(run_members(env, spec).values())
    versions = target_versions(env, target_version)
    states = fleet.survey(members, env.settings, versions, parallel=spec.survey_parallel)
    log = run_logger()
    dirty = sum(s.dirty for s in states)
    behind = sum(s.needs_migration for s in states)
    unreachable = sum(s.error is not None for s in states)
    log.info("%s: %s databases, %s behind, %s dirty, %s unreachable", environment, len(states), behind, dirty,
             unreachable)
    return fleet.Survey(versions[-1] if versions else -1, states)


@task(name="read-after", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def read_after(environment: str, names: list[str], backups_since: float | None = None,
               backups_for: list[str] | None = None) -> fleet.After:
    """The real version and dirty flag of ``names`` after their runs (the truth, not what a run said),
    and for ``backups_for`` the newest backup taken since ``backups_since`` (epoch seconds)."""
    env, spec = load_fleet(environment)
    known = run_members(env, spec)
    members = [known[n] if n in known else member(env, spec, n) for n in names]
    states = fleet.survey(members, env.settings, target_versions(env, None), parallel=spec.survey_parallel)
    after = fleet.After(states={s.name: s for s in states})
    if backups_for and backups_since is not None:
        wanted = set(backups_for)
        after.backup_keys = newest_backups(env, [m for m in members if m.name in wanted], backups_since,
                                           spec.survey_parallel)
    return after


@task(name="migrate-member", task_run_name="migrate {name}", retries=0, cache_policy=NO_CACHE)
def migrate_member(environment: str, name: str, expected_version: int, target_version: int | None = None,
                   approved_by: str | None = None) -> State[fleet.MemberResult]:
    """Migrate ONE database of the fleet ``environment`` in this process (the fleet's in-process mode):
    file drift check, verified backup, apply (locked, audited, through the engine), verify.

    One task run per database instead of a ``migrate`` child flow run with six task runs (issue 23).
    A failed database ends the task run Failed (red in the UI) with the MemberResult as its data,
    not an exception: the fleet goes on with the others and names it. Never retried: a failed
    migration needs a person; the audit rows carry the fleet run's id."""
    env, spec = load_fleet(environment)
    settings = member_settings(env, member(env, spec, name))
    log = run_logger()
    policy = fleet.MemberPolicy(env.backup_retries, env.backup_retry_delay_seconds, env.drift_verify,
                                env.drift_ignore, env.drift_scratch_url)
    result = fleet.migrate_member(name, settings, expected_version, target_version=target_version,
                                  run_id=flow_run_id(), approved_by=approved_by,
                                  progress=lambda line: log.info("%s", line), policy=policy)
    task_run = runtime.task_run.id
    result.run_id = str(task_run) if task_run else None
    for warning in result.warnings:
        log.warning("%s (drift.verify: warn; see `migrator drift --json`)", warning)
    if result.dirty_after:
        # the fleet's ONE alert pages it: record the incident as paged, as a migrate run of a fleet does,
        # so the status monitor reminds on schedule instead of paging it again at once
        try:
            claim_dirty_page(env, settings, inspect(settings))
        except Exception as exc:  # the report says it is dirty either way
            log.warning("%s: could not record the incident as paged: %s", name, redact(str(exc)))
    if result.ok:
        line = (f"{name}: migrated {result.version_before} -> {result.version_after} "
                f"({len(result.steps)} migration(s)), verified")
        log.info("%s", line)
        return Completed(message=line, data=result)
    line = f"{name}: {result.stage} failed" + (" (database left DIRTY)" if result.dirty_after else "") + \
        f": {result.error}"
    log.error("%s", line)
    return Failed(message=line[:1900], data=result)


def newest_backups(env: Environment, members: list[fleet.Member], since: float, parallel: int) -> dict[str, str]:
    """Each member's newest backup created at or after ``since``: one store listing per database."""
    cutoff = datetime.fromtimestamp(since, UTC)

    def newest(member: fleet.Member) -> tuple[str, str | None]:
        try:
            infos = list_backups(member_settings(env, member))
        except Exception:  # a listing problem must not hide the migration outcome
            return member.name, None
        fresh = [i for i in infos if i.complete and i.created_at is not None and i.created_at >= cutoff]
        return member.name, fresh[0].key if fresh else None

    if not members:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(members)))) as pool:
        return {name: key for name, key in pool.map(newest, members) if key}
