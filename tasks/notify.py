"""Notify step: a signed webhook alert (or a log line when no webhook is configured), and the same
alert as a Prefect event (``askfrank.<event>``) for Automations.

``send_event`` already retries delivery with backoff and never raises, so a failed alert can
never turn a successful run into a failed one, nor hide the original failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from migrator.alerts.webhook import DeliveryResult
from tasks._common import flow_run_id, flow_run_url, run_logger
from tasks.environment import run_environment
from tasks.events import emit_alert_event


@dataclass(frozen=True)
class AlertOutcome:
    """What became of one alert: its webhook delivery and its Prefect event, or the fleet run that
    sends it instead (then nothing was sent from here)."""

    event: str
    delivery: DeliveryResult | None = None
    prefect_event_id: str | None = None
    muted_by_fleet_run: str | None = None


@task(name="notify", task_run_name="notify {event}", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def notify(environment: str, event: str, **fields: Any) -> AlertOutcome:
    from migrator.alerts.notify import build_event, send_event

    fleet_run = muted_by_fleet_run(event)
    if fleet_run:
        return AlertOutcome(event, muted_by_fleet_run=fleet_run)
    env = run_environment(environment)
    settings = env.settings
    settings.flow_run_url = flow_run_url()
    fields.setdefault("run_id", flow_run_id())
    result = send_event(settings, event, **fields)
    log = run_logger()
    if result.delivered:
        log.info("alert %s delivered", event)
    alert = {**build_event(settings, event, **fields), "id": result.id}
    prefect_event = emit_alert_event(environment, alert)
    if prefect_event is None:
        log.warning("Prefect event askfrank.%s not emitted (the webhook alert is unaffected)", event)
    return AlertOutcome(event, delivery=result, prefect_event_id=prefect_event)


def muted_by_fleet_run(event: str) -> str | None:
    """The migrate-fleet run this flow run belongs to (its ``fleet_run_id`` parameter), if any: that
    run alerts once for all its databases, so ``event`` is logged here instead of sent."""
    from prefect import runtime

    try:
        value = runtime.flow_run.parameters.get("fleet_run_id")
    except Exception:
        return None
    if not value:
        return None
    run_logger().info("alert %s not sent: this run is part of fleet run %s, which alerts once for all its databases",
                      event, value)
    return str(value)
