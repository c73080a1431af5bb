"""``status-monitor`` flow (scheduled): alert on a dirty database, on schema drift, or on migrations
pending too long.

A dirty database is paged once per incident (``migrator.recover.incident``): every 15 minutes the monitor
finds the same dirty version and stays quiet, except for a reminder after the configured interval.

"Pending since" is remembered per environment in a Prefect Variable, so the threshold counts from
the first check that saw the oldest pending version, whatever the schedule.

Schema drift (``migrator.schema.drift``: the live schema against the one its applied migrations
produce) is alerted as ``schema.drift`` with the list of differences, once per distinct list: the
list last alerted is kept in a Prefect Variable, so the same hotfix index is not paged every 15
minutes, while a new difference (or drift coming back after it was fixed) alerts again.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import flow
from prefect.variables import Variable

from flows._common import RunReport
from tasks.drift import schema_drift
from tasks.environment import Environment, run_environment
from tasks.notify import notify
from tasks.status import read_status

if TYPE_CHECKING:
    from migrator.status_model import Status


def _variable(environment: str) -> str:
    return f"askfrank_pending_since_{environment}".replace("-", "_")


def _drift_variable(environment: str) -> str:
    return f"askfrank_schema_drift_{environment}".replace("-", "_").replace(":", "_")


def alert_drift(environment: str, st: Status) -> dict[str, Any]:
    """schema.drift with every difference, unless this same list was already alerted."""
    checked = schema_drift(environment)
    name = _drift_variable(environment)
    if checked.report is None:
        return {"drift_error": checked.error}
    report = checked.report
    lines = report.lines
    if not lines:
        Variable.set(name, {}, overwrite=True)
        return {"drift": []}

    fingerprint = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    seen: dict[str, Any] = Variable.get(name, default={}) or {}
    out: dict[str, Any] = {"drift": lines}
    if seen.get("fingerprint") != fingerprint:
        notify(environment, "schema.drift", database=st.database, version_before=st.version,
               differences=lines, summary=report.summary())
        Variable.set(name, {"fingerprint": fingerprint, "since": datetime.now(UTC).isoformat()}, overwrite=True)
        out["alerted"] = True
    return out


def page_dirty(env: Environment) -> list[str]:
    """database.dirty with the incident and the next step (recover/<env>), unless already paged."""
    run = RunReport("status-monitor", env)
    run.read_truth()
    if run.incident is None:
        return []
    run.page_incident()
    return list(run.alerted)


def alert_invalid_indexes(environment: str, st: Status) -> list[str]:
    """index.invalid once for each new set of INVALID indexes (a Variable remembers the last one)."""
    found = sorted(st.invalid_indexes)
    name = _variable(environment) + "_invalid_indexes"
    seen: list[str] = Variable.get(name, default=[]) or []
    if found == seen:
        return []
    Variable.set(name, found, overwrite=True)
    if not found:
        return []
    first = found[0].split(" ", 1)[0]
    notify(environment, "index.invalid", database=st.database, version_before=st.version,
           version_after=st.version, dirty=st.dirty,
           message=f"{len(found)} INVALID index(es) on {environment}: {', '.join(found)}; each enforces nothing "
                   f"and the planner ignores it: drop it (DROP INDEX CONCURRENTLY IF EXISTS {first}) and build it "
                   "again, or `migrator recover --resume` while the database is dirty",
           invalid_indexes=found)
    return ["index.invalid"]


@flow(name="status-monitor")
def status_monitor(environment: str = "local", pending_alert_after_minutes: float | None = None) -> dict[str, Any]:
    """Alert when the database is dirty, when its schema drifted from its migrations, or when migrations
    have been pending too long.

    Args:
        environment: Which database: the name of a file in deployments/ (dev, staging, prod, local).
        pending_alert_after_minutes: Alert when a migration has been pending this long (empty: the
            environment's setting).
    """
    env = run_environment(environment)
    threshold = env.pending_alert_after_minutes if pending_alert_after_minutes is None else pending_alert_after_minutes
    st = read_status(environment)
    result: dict[str, Any] = {"version": st.version, "dirty": st.dirty, "pending": len(st.pending),
                              "alerts": []}
    if st.dirty:  # paged once per incident (a reminder after monitor.dirty_reminder_minutes)
        result["alerts"] += page_dirty(env)
    elif env.drift_monitor:  # a dirty database has no expected schema: drift waits for the incident's end
        drift = alert_drift(environment, st)
        result["alerts"] += ["schema.drift"] if drift.pop("alerted", False) else []
        result.update(drift)
    else:  # no drift check here: an INVALID index still gets its own alert
        result["alerts"] += alert_invalid_indexes(environment, st)
    name = _variable(environment)
    if not st.pending:
        Variable.set(name, {}, overwrite=True)
        return result
    oldest = st.pending[0].version
    seen: dict[str, Any] = Variable.get(name, default={}) or {}
    if seen.get("version") != oldest:
        seen = {"version": oldest, "since": datetime.now(UTC).isoformat()}
        Variable.set(name, seen, overwrite=True)
    waited = (datetime.now(UTC) - datetime.fromisoformat(seen["since"])).total_seconds() / 60
    result["pending_minutes"] = round(waited, 1)
    if waited >= threshold:
        notify(environment, "migration.pending", database=st.database, version_before=st.version,
               version_after=st.pending[-1].version,
               message=f"{len(st.pending)} migration(s) pending on {environment} for {waited:.0f} min "
                       f"(threshold {threshold:g} min), oldest {oldest}",
               pending=[m.label or f"{m.version}_{m.name}" for m in st.pending])
        result["alerts"].append("migration.pending")
    return result
