"""Fleet steps: resolve the fleet's databases and read every one's state.

Task inputs and results carry database names only, never URLs: Prefect stores both, and a URL
holds credentials. URLs are resolved inside each task from the environment's secret references.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator import fleet
from migrator.config import Settings
from migrator.errors import ConfigError
from tasks._common import run_logger
from tasks.environment import Environment, _secret, load_environment


def load_fleet(environment: str) -> tuple[Environment, fleet.FleetSpec]:
    """The fleet's environment (its settings name no database) and its spec; not a fleet stops."""
    env = load_environment(environment)
    spec = fleet.parse_fleet(env.raw, environment)
    if spec is None:
        raise ConfigError(
            f"environment {environment!r} is not a fleet (deployments/{environment}.yaml has no databases: "
            f"or discover:); run migrate/{environment} instead"
        )
    return env, spec


def resolve_members(env: Environment, spec: fleet.FleetSpec) -> list[fleet.Member]:
    return fleet.resolve_members(spec, lambda ref, what: _secret(ref, what, spec.name))


def member_settings(env: Environment, member: fleet.Member) -> Settings:
    """One member's settings: the fleet's, with the member's URL and environment name."""
    return replace(env.settings, database_url=member.url, environment=fleet.member_environment(env.name, member.name))


def target_versions(env: Environment, target_version: int | None) -> list[int]:
    """The migration versions a fleet run brings databases to (all, or up to ``target_version``)."""
    from migrator import files

    migrations = files.load(env.settings.migrations_path)
    migrations.raise_if_errors()
    versions = sorted(migrations.versions)
    if target_version is not None:
        if target_version not in versions:
            raise ConfigError(f"target_version {target_version} is not a migration in {env.settings.migrations_path}")
        versions = [v for v in versions if v <= target_version]
    return versions


@task(name="survey", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def survey_fleet(environment: str, target_version: int | None = None) -> dict[str, Any]:
    """Discover the fleet's databases and read each one's version, dirty flag and pending count."""
    env, spec = load_fleet(environment)
    members = resolve_members(env, spec)
    versions = target_versions(env, target_version)
    states = fleet.survey(members, env.settings, versions, parallel=spec.survey_parallel)
    log = run_logger()
    dirty = sum(s.dirty for s in states)
    behind = sum(s.needs_migration for s in states)
    unreachable = sum(s.error is not None for s in states)
    log.info("%s: %s databases, %s behind, %s dirty, %s unreachable", environment, len(states), behind, dirty,
             unreachable)
    return {"latest": versions[-1] if versions else -1, "databases": [s.to_dict() for s in states]}


@task(name="read-after", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def read_after(environment: str, names: list[str], backups_since: float | None = None,
               backups_for: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The real version and dirty flag of ``names`` after their runs (the truth, not what a run said),
    and for ``backups_for`` the newest backup taken since ``backups_since`` (epoch seconds)."""
    env, spec = load_fleet(environment)
    wanted = set(names)
    members = [m for m in resolve_members(env, spec) if m.name in wanted]
    states = fleet.survey(members, env.settings, target_versions(env, None), parallel=spec.survey_parallel)
    result = {s.name: s.to_dict() for s in states}
    if backups_for and backups_since is not None:
        keys = newest_backups(env, [m for m in members if m.name in set(backups_for)], backups_since,
                              spec.survey_parallel)
        for name, key in keys.items():
            result[name]["backup_key"] = key
    return result


def newest_backups(env: Environment, members: list[fleet.Member], since: float, parallel: int) -> dict[str, str]:
    """Each member's newest backup created at or after ``since``: one store listing per database."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from migrator.backup import list_backups

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
