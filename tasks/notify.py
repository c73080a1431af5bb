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

from migrator.alerts.notify import build_event, send_event
from migrator.alerts.webhook import DeliveryResult
from tasks._common import flow_run_id, flow_run_url, run_logger
from tasks.environment import run_environment
from tasks.events import emit_alert_event


@dataclass(frozen=True)
class AlertOutcome:
    """What became of one alert: its webhook delivery and its Prefect event."""

    event: str
    delivery: DeliveryResult | None = None
    prefect_event_id: str | None = None


@task(name="notify", task_run_name="notify {event}", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def notify(environment: str, event: str, **fields: Any) -> AlertOutcome:
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
