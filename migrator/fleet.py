"""Fleets: one environment naming many databases (tenants, shards, regions), each migrated on its own.

A ``deployments/<env>.yaml`` is a fleet when it has ``databases:`` (names with URL references) or
``discover:`` (a query on a catalogue database returning names, and a URL template). Every member
keeps its own ``schema_migrations``, lock, audit trail and backups: a member is addressed as the
environment ``<fleet>:<name>`` (e.g. ``tenants:clinic_042``), which the flows load like any other
environment, so backups are keyed ``<fleet>_<name>/<database>/...`` and alerts and audit rows name it.

Plain Python (no Prefect): the CLI's ``fleet-status`` and the flows share parsing, discovery, the
status survey and wave planning. Everything here is linear in the number of databases.
"""

from __future__ import annotations

import bisect
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg

from migrator import db
from migrator.config import Settings, prepare_url, state_table_name
from migrator.db import connect
from migrator.errors import ConfigError, MigrationFailedError, MigratorError
from migrator.execute import state
from migrator.execute.executor import invalid_indexes
from migrator.redact import redact, register_secret, register_url

MEMBER_SEP = ":"
# The fleet environment itself names no database: its settings carry this URL, so anything that
# tries to connect with them fails at once (a socket that cannot exist), never reaching a default.
NO_DATABASE_URL = "postgresql:///fleet?host=/nonexistent/a-fleet-environment-is-no-single-database"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
FLEET_KEYS = {"databases", "discover", "fleet"}
_POLICY_KEYS = {"canary", "max_parallel", "wave_size", "max_failures", "survey_parallel"}
_DISCOVER_KEYS = {"catalogue_url", "query", "url_template", "credentials"}

# (reference from the YAML, what it is for the error message) -> the value, or None when unresolved
SecretResolver = Callable[[Any, str], "str | None"]


@dataclass(frozen=True)
class DatabaseRef:
    """One ``databases:`` entry: a name and a URL reference (a string or ``{secret_block, env}``)."""

    name: str
    url: Any


@dataclass(frozen=True)
class Discovery:
    """``discover:``: names come from ``query`` on the catalogue; URLs from ``url_template``."""

    catalogue_url: Any
    query: str
    url_template: str
    credentials: Any = None


@dataclass(frozen=True)
class FleetSpec:
    """A fleet environment and its rollout policy."""

    name: str
    databases: tuple[DatabaseRef, ...] = ()
    discover: Discovery | None = None
    canary: int = 1
    max_parallel: int = 4
    wave_size: int | None = None
    max_failures: int = 0
    survey_parallel: int = 16

    def member_environment(self, member: str) -> str:
        return member_environment(self.name, member)


@dataclass(frozen=True)
class Member:
    """A resolved member. ``url`` holds credentials: never log it, never pass it to a Prefect task."""

    name: str
    url: str = field(repr=False)


@dataclass
class DatabaseState:
    """One member's position: version (-1 = none), dirty flag, pending migrations, or why unknown."""

    name: str
    version: int | None = None
    dirty: bool = False
    pending: int = 0
    error: str | None = None
    invalid_indexes: list[str] = field(default_factory=list)

    @property
    def needs_migration(self) -> bool:
        return self.error is None and not self.dirty and self.pending > 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dirty": self.dirty, "pending": self.pending,
                "error": self.error, "invalid_indexes": self.invalid_indexes}


# ---------------------------------------------------------------------------------------- naming


def member_environment(fleet: str, member: str) -> str:
    """The environment name of one member: ``<fleet>:<member>``."""
    return f"{fleet}{MEMBER_SEP}{member}"


def split_member(environment: str) -> tuple[str, str | None]:
    """``tenants:clinic_1`` -> (``tenants``, ``clinic_1``); ``prod`` -> (``prod``, None)."""
    fleet, sep, member = environment.partition(MEMBER_SEP)
    if not sep:
        return environment, None
    check_name(member, f"environment {environment!r}")
    return fleet, member


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{where}: database name {name!r} is not valid; use 1-63 letters, digits, '_', '.', '-' "
            "starting with a letter or digit"
        )
    return name


# --------------------------------------------------------------------------------------- parsing


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what}={value!r} must be an integer >= {minimum}")
    return value


def parse_fleet(raw: dict[str, Any], env_name: str) -> FleetSpec | None:
    """The fleet declared in ``deployments/<env_name>.yaml`` (already parsed), or None if not a fleet."""
    where = f"deployments/{env_name}.yaml"
    if not (set(raw) & FLEET_KEYS):
        return None
    if "database_url" in raw:
        raise ConfigError(f"{where}: a fleet has databases: or discover:, not also database_url; remove one")
    if ("databases" in raw) == ("discover" in raw):
        raise ConfigError(f"{where}: a fleet needs exactly one of databases: or discover:")
    policy = raw.get("fleet") or {}
    if not isinstance(policy, dict) or set(policy) - _POLICY_KEYS:
        unknown = sorted(set(policy) - _POLICY_KEYS) if isinstance(policy, dict) else policy
        raise ConfigError(f"{where}: fleet: has unknown keys {unknown}; known: {', '.join(sorted(_POLICY_KEYS))}")
    spec = FleetSpec(
        name=env_name,
        canary=_int(policy.get("canary", 1), f"{where}: fleet.canary", 0),
        max_parallel=_int(policy.get("max_parallel", 4), f"{where}: fleet.max_parallel", 1),
        wave_size=None if policy.get("wave_size") is None
        else _int(policy["wave_size"], f"{where}: fleet.wave_size", 1),
        max_failures=_int(policy.get("max_failures", 0), f"{where}: fleet.max_failures", 0),
        survey_parallel=_int(policy.get("survey_parallel", 16), f"{where}: fleet.survey_parallel", 1),
    )
    if "databases" in raw:
        entries = raw["databases"]
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: databases: must be a non-empty list of {{name, url}}")
        refs: list[DatabaseRef] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries, 1):
            if not isinstance(entry, dict) or set(entry) != {"name", "url"}:
                raise ConfigError(
                    f"{where}: databases[{i}] must be {{name: ..., url: <string or {{secret_block, env}}>}}"
                )
            name = check_name(entry["name"], f"{where}: databases[{i}]")
            if name in seen:
                raise ConfigError(f"{where}: database {name!r} is listed twice; names must be unique")
            seen.add(name)
            refs.append(DatabaseRef(name, entry["url"]))
        return replace(spec, databases=tuple(refs))
    d = raw["discover"]
    if not isinstance(d, dict) or set(d) - _DISCOVER_KEYS or not {"catalogue_url", "query", "url_template"} <= set(d):
        raise ConfigError(
            f"{where}: discover: needs catalogue_url, query and url_template (credentials optional)"
        )
    template = str(d["url_template"])
    fields = _template_fields(template, where)
    if "name" not in fields:
        raise ConfigError(f"{where}: discover.url_template must contain {{name}}")
    if "credentials" in fields and d.get("credentials") is None:
        raise ConfigError(f"{where}: discover.url_template uses {{credentials}}; set discover.credentials")
    if urlsplit(re.sub(r"[{}]", "", template)).password:
        raise ConfigError(f"{where}: discover.url_template must not hold a password; use {{credentials}}")
    query = str(d["query"]).strip().rstrip(";").strip()
    if not query:
        raise ConfigError(f"{where}: discover.query is empty")
    return replace(spec, discover=Discovery(d["catalogue_url"], query, template, d.get("credentials")))


def _template_fields(template: str, where: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f}
    except ValueError as exc:
        raise ConfigError(f"{where}: discover.url_template is not a valid template ({exc})") from None


# ------------------------------------------------------------------------------------ resolution


def _required(resolve: SecretResolver, ref: Any, what: str, fleet: str) -> str:
    value = resolve(ref, what)
    if not value:
        raise ConfigError(
            f"deployments/{fleet}.yaml: {what} did not resolve (no Secret block / variable set); "
            "stopping before connecting to any database"
        )
    register_url(value)
    return value


def _discover_rows(spec: FleetSpec, resolve: SecretResolver, only: str | None = None) -> list[dict[str, Any]]:
    assert spec.discover is not None
    d = spec.discover
    catalogue = prepare_url(_required(resolve, d.catalogue_url, "discover.catalogue_url", spec.name))
    sql = d.query if only is None else f"SELECT * FROM ({d.query.replace('%', '%%')}) AS fleet WHERE fleet.name = %s"

    with connect(catalogue) as conn:
        try:
            cur = conn.execute(sql, (only,) if only is not None else None)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"deployments/{spec.name}.yaml: discover.query failed: {redact(first)}") from None
        columns = [c.name for c in cur.description or []]
        if "name" not in columns:
            raise ConfigError(
                f"deployments/{spec.name}.yaml: discover.query must return a column named name; got {columns}"
            )
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def _url_from_row(spec: FleetSpec, row: dict[str, Any], credentials: str | None) -> str:
    assert spec.discover is not None
    values = {k: quote(str(v), safe="") for k, v in row.items()}
    if credentials is not None:
        values["credentials"] = credentials
    try:
        return spec.discover.url_template.format(**values)
    except KeyError as exc:
        raise ConfigError(
            f"deployments/{spec.name}.yaml: discover.url_template uses {{{exc.args[0]}}} but the query "
            f"returns only {sorted(row)}"
        ) from None


def resolve_members(spec: FleetSpec, resolve: SecretResolver) -> list[Member]:
    """Every member with its URL, in declared (or query) order; fails closed on anything unresolved."""
    if spec.discover is None:
        return [
            Member(ref.name, _required(resolve, ref.url, f"databases[{ref.name}].url", spec.name))
            for ref in spec.databases
        ]
    rows = _discover_rows(spec, resolve)
    creds = _credentials(spec, resolve)
    members: list[Member] = []
    seen: set[str] = set()
    for row in rows:
        name = check_name(row["name"], f"deployments/{spec.name}.yaml: discover.query row")
        if name in seen:
            raise ConfigError(f"deployments/{spec.name}.yaml: discover.query returned {name!r} twice")
        seen.add(name)
        members.append(Member(name, _url_from_row(spec, row, creds)))
    return members


def _credentials(spec: FleetSpec, resolve: SecretResolver) -> str | None:
    assert spec.discover is not None
    if spec.discover.credentials is None:
        return None
    value = _required(resolve, spec.discover.credentials, "discover.credentials", spec.name)

    register_secret(value)
    for part in value.split(":", 1):
        register_secret(part)
    return value


def member_url(spec: FleetSpec, member: str, resolve: SecretResolver) -> str:
    """One member's URL; a name that is not a member stops (never another database)."""
    if spec.discover is None:
        for ref in spec.databases:
            if ref.name == member:
                return _required(resolve, ref.url, f"databases[{member}].url", spec.name)
        raise ConfigError(f"deployments/{spec.name}.yaml lists no database {member!r}; see databases:")
    rows = _discover_rows(spec, resolve, only=member)
    if not rows:
        raise ConfigError(f"deployments/{spec.name}.yaml: discover.query returns no database {member!r}")
    return _url_from_row(spec, rows[0], _credentials(spec, resolve))


# ---------------------------------------------------------------------------------------- survey


def read_member_state(member: Member, settings: Settings, versions: Sequence[int]) -> DatabaseState:
    """Version, dirty, pending count and INVALID indexes of one member: one connection, three small
    queries, no lock."""
    try:
        conn_info = prepare_url(member.url)
        with db.connect(conn_info) as conn:
            st = state.resolve_table(conn, state_table_name(settings, conn_info.table))
            version, dirty = state.read_state(conn, st)
            invalid = invalid_indexes(conn)
    except MigratorError as exc:
        return DatabaseState(member.name, error=redact(str(exc)))
    except Exception as exc:  # a broken member is reported, never allowed to stop the survey of the rest
        return DatabaseState(member.name, error=redact(f"{type(exc).__name__}: {exc}"))
    pending = len(versions) - bisect.bisect_right(versions, version)
    return DatabaseState(member.name, version=version, dirty=dirty, pending=pending, invalid_indexes=invalid)


def survey(members: Sequence[Member], settings: Settings, versions: Iterable[int],
           parallel: int = 16) -> list[DatabaseState]:
    """Every member's state, read ``parallel`` at a time; same order as ``members``."""
    ordered = sorted(versions)
    if not members:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(members)))) as pool:
        return list(pool.map(lambda m: read_member_state(m, settings, ordered), members))


@dataclass
class Survey:
    """Every member's state and the version a run brings them to (-1: no migrations)."""

    latest: int
    databases: list[DatabaseState] = field(default_factory=list)


@dataclass
class After:
    """Members' states read after their runs (the truth, not what a run said), and the newest
    backup each one took during the run, where it was looked up."""

    states: dict[str, DatabaseState] = field(default_factory=dict)
    backup_keys: dict[str, str] = field(default_factory=dict)


# -------------------------------------------------------------------------------------- planning


@dataclass
class Wave:
    """Databases started together; the next wave starts when this one has finished."""

    number: int
    canary: bool
    databases: list[str]


def plan_waves(names: Sequence[str], canary: int, wave_size: int) -> list[Wave]:
    """Canary wave 0 (the first ``canary`` names), then waves 1, 2, ... of ``wave_size``; order is kept."""
    waves: list[Wave] = []
    head = list(names[:canary])
    if head:
        waves.append(Wave(0, True, head))
    rest = names[canary:]
    for i in range(0, len(rest), wave_size):  # wave 0 is the canary wave, even when there is none
        waves.append(Wave(1 + i // wave_size, False, list(rest[i:i + wave_size])))
    return waves


@dataclass
class Outcome:
    """What happened to one database in a fleet run."""

    name: str
    outcome: str  # succeeded | failed | skipped (current) | not started | dirty | unreachable | no change
    version_before: int | None = None
    version_after: int | None = None
    dirty_after: bool = False
    duration_seconds: float | None = None
    backup_key: str | None = None
    run_url: str | None = None
    run_id: str | None = None
    error: str | None = None
    wave: int | None = None
    next_step: str | None = None  # set when the run that migrated it knows better than the fleet's default

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Budget:
    """The failure budget: after more than ``max_failures`` failures no new database starts."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures
        self.failures = 0

    def record(self, failed: bool) -> None:
        self.failures += int(failed)

    @property
    def exceeded(self) -> bool:
        return self.failures > self.max_failures


def counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    result: dict[str, int] = {}
    for o in outcomes:
        result[o.outcome] = result.get(o.outcome, 0) + 1
    return result


def status_lines(states: Sequence[DatabaseState], latest: int) -> list[str]:
    """One line per database for terminals: name, version, dirty, pending (or the error)."""
    width = max((len(s.name) for s in states), default=8)
    lines = []
    for s in states:
        if s.error:
            lines.append(f"{s.name:<{width}}  unreachable: {s.error}")
            continue
        version = "none" if s.version is None or s.version < 0 else str(s.version)
        flag = "DIRTY" if s.dirty else "clean"
        lines.append(f"{s.name:<{width}}  version {version:>6}  {flag}  pending {s.pending}"
                     + ("" if s.pending or s.dirty else "  (latest)" if latest >= 0 else "")
                     + (f"  INVALID index: {', '.join(s.invalid_indexes)}" if s.invalid_indexes else ""))
    return lines


# ------------------------------------------------------------------------------ one member, in-process


@dataclass(frozen=True)
class MemberPolicy:
    """The environment's settings a member's pipeline follows (deployments/<fleet>.yaml), secret-free
    except ``scratch_url``, which is never shown."""

    backup_retries: int = 2
    backup_retry_delay_seconds: float = 30
    schema_drift: str = "fail"  # drift.verify: fail | warn | off
    drift_ignore: Path | None = None
    scratch_url: str | None = field(default=None, repr=False)


@dataclass
class MemberResult:
    """What ``migrate_member`` did to one database: plain data, names only, no URL.

    ``stage`` is where the pipeline ended: ``done``, or the step that failed (``drift``: nothing
    was touched; ``backup``: nothing applied; ``apply``: see ``dirty_after``; ``verify``: applied,
    but the database is not what the plan said)."""

    name: str
    ok: bool = False
    stage: str = "drift"
    version_before: int | None = None
    version_after: int | None = None
    dirty_after: bool = False
    backup_key: str | None = None
    steps: list[str] = field(default_factory=list)  # golang-migrate's lines: ``2/u create_b (4ms)``
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    run_id: str | None = None  # the run (a Prefect task run) that did it, set by the caller


def _verified_backup(settings: Settings, run_id: str | None, progress: Callable[[str], None] | None,
                     policy: MemberPolicy) -> str:
    """Take and verify a backup, retried as ``backup.retries`` says; a setting error is not retried."""
    # lazy: the backup package (pg_dump, storage clients) only when a member is migrated
    from migrator.backup import create_verified_backup

    attempt = 0
    while True:
        try:
            return create_verified_backup(settings, run_id=run_id, say=progress)[0].key
        except ConfigError:
            raise
        except Exception as exc:
            attempt += 1
            if attempt > policy.backup_retries:
                raise
            if progress:
                progress(f"backup attempt {attempt} failed ({redact(str(exc))}); retrying in "
                         f"{policy.backup_retry_delay_seconds:g} s")
            time.sleep(policy.backup_retry_delay_seconds)


def migrate_member(name: str, settings: Settings, expected_version: int, *, target_version: int | None = None,
                   run_id: str | None = None, approved_by: str | None = None,
                   progress: Callable[[str], None] | None = None,
                   policy: MemberPolicy | None = None) -> MemberResult:
    """One fleet member's whole pipeline, what a ``migrate`` run does to it, in one call: no file drift
    (else nothing is touched), a verified backup (else nothing is applied), apply through the engine
    (its advisory lock, the executor, an audit row per migration), then verify (version, dirty, file
    and schema drift).

    Never raises for a failure of the database: the result names the stage and the error, so one
    member cannot stop the others. The fleet's in-process mode calls this once per database instead
    of starting a child flow run (issue 23: a flow run and its task runs cost more than the work).
    """
    # lazy: `migrator fleet-status` (this module) starts without the engine, lint and verify code
    from migrator import files
    from migrator.engine import Migrator
    from migrator.lint import drift as drift_mod
    from migrator.verify import verify

    policy = policy or MemberPolicy()
    started = time.monotonic()
    result = MemberResult(name)
    try:
        drift = [f"{f.location()}: {f.message}" for f in drift_mod.check(settings, files.load(settings.migrations_path))
                 if f.severity == "error"]
        if drift:
            raise MigratorError("the files drifted from what this database ran: " + "; ".join(drift)
                                + "; nothing was applied: restore the files (or fix the database), then re-run")
        result.stage = "backup"
        result.backup_key = _verified_backup(settings, run_id, progress, policy)
        result.stage = "apply"
        m = Migrator(settings, run_id=run_id, progress=progress, approved_by=approved_by)
        run = m.up() if target_version is None else m.goto(target_version)
        result.version_before, result.version_after, result.dirty_after = (run.version_before, run.version_after,
                                                                           run.dirty_after)
        result.steps = [s.describe() for s in run.steps]
        result.stage = "verify"
        checked = verify(settings, expected_version, True, policy.schema_drift, drift_ignore=policy.drift_ignore,
                         scratch_url=policy.scratch_url)
        result.warnings = list(checked.warnings)
        result.stage, result.ok = "done", True
    except MigrationFailedError as exc:
        result.dirty_after, result.error = exc.dirty, redact(str(exc))
    except Exception as exc:  # a member's failure is reported, never allowed to stop the others
        result.error = redact(str(exc)) or type(exc).__name__
    result.duration_seconds = round(time.monotonic() - started, 2)
    return result
