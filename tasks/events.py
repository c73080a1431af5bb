"""Prefect events beside the webhook: ``askfrank.<alert>`` (askfrank.migration.failed,
askfrank.database.dirty, askfrank.recovery.completed, ...), so teams can build Automations in
the UI on them. The resource is the environment's database, labelled with the environment and
the version; Prefect adds the flow run, flow, deployment and tags as related resources. The
payload is the alert as the webhook carries it (already redacted by ``build_event``).

Emitted here, in the task layer, never from ``migrator/`` (the core does not know Prefect).
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

PREFIX = "askfrank."


def event_version(alert: dict[str, Any]) -> int | None:
    """The version an alert is about: the failing one, else where the database ended, else where it began."""
    for key in ("failing_version", "version_after", "version_before"):
        if alert.get(key) is not None:
            return int(alert[key])
    return None


def resource_for(environment: str, alert: dict[str, Any]) -> dict[str, str]:
    version = event_version(alert)
    resource = {
        "prefect.resource.id": f"askfrank.database.{environment}",
        "prefect.resource.name": f"{alert.get('database') or environment} ({environment})",
        "askfrank.environment": environment,
        "askfrank.version": "none" if version is None or version == -1 else str(version),
    }
    if alert.get("dirty") is not None:
        resource["askfrank.dirty"] = "yes" if alert["dirty"] else "no"
    return resource


def emit_alert_event(environment: str, alert: dict[str, Any]) -> str | None:
    """Emit ``askfrank.<alert event>``; returns the Prefect event id, or None when it could not be sent
    (an event is a courtesy next to the webhook: it never fails the run)."""
    try:
        sent = emit_event(event=PREFIX + str(alert["event"]), resource=resource_for(environment, alert),
                          payload=alert)
    except Exception:
        return None
    return str(sent.id) if sent else None
