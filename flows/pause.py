"""A paused run that says why it waits: the one pause of the approval and recovery forms.

``pause_for_input`` pauses the current flow run with a form (a ``RunInput``) and a state message that
says what the run waits for and what to click, so an approval pause and a recovery pause read apart
in the run list. It handles its own timeout: Prefect fails a run whose pause deadline has passed
with its own message ("The flow was paused and never resumed"), replacing the run's state message,
so the deadline given to the server is later than ours, and the run ends with the message that
says where the database is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.input import RunInput, keyset_from_paused_state
from prefect.input.actions import create_flow_run_input, delete_flow_run_input
from prefect.states import Paused, State
from prefect.utilities.engine import propose_state_sync

from migrator.errors import MigratorError
from tasks._common import run_logger

SERVER_GRACE_SECONDS = 120
MAX_MESSAGE = 1900
REFRESH_SECONDS = 10.0
# while a pause is young somebody is likely at the form (the alert has just gone out): an answer is
# picked up within a second and the description follows the file every 3 s; later, the slower rates
YOUNG_SECONDS = 600.0
YOUNG_POLL_SECONDS = 1.0
YOUNG_REFRESH_SECONDS = 3.0

FormT = TypeVar("FormT", bound=RunInput)


def deadline_text(timeout_seconds: int) -> str:
    """When a pause started now times out, as people read it: ``22:55 UTC``."""
    return (datetime.now(UTC) + timedelta(seconds=timeout_seconds)).strftime("%H:%M UTC")


def pause_for_input(form: type[FormT], *, timeout_seconds: int, key: str, message: str,
                    refresh: Callable[[], str | None] | None = None) -> FormT | None:
    """Pause with ``form`` and the state message ``message``; the answer, or None on timeout.

    ``refresh`` (called every YOUNG_REFRESH_SECONDS during the pause's first YOUNG_SECONDS, then every
    REFRESH_SECONDS) returns the form's description as it should read now, or None to leave it: the
    recovery form re-reads the migration file, so what the engineer sees when opening the form is what
    the file says at that moment. The answer is looked for every second while the pause is young,
    then every 1-5 s (a tenth of the timeout).
    """
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None, "a form needs a flow run"
    run_logger().info("%s", message)
    proposed: State[None] = Paused(timeout_seconds=timeout_seconds + SERVER_GRACE_SECONDS, reschedule=False,
                                   pause_key=key, message=message[:MAX_MESSAGE])
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset  # type: ignore[assignment]  # as pause_flow_run does
    slow_poll = max(1, min(5, timeout_seconds // 10))
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=ctx.flow_run.id)
        if not state.is_paused():
            raise MigratorError(f"the run could not pause for its form (state {state.type.value})")
        form.save(keyset)
        paused_at = time.monotonic()
        deadline = paused_at + timeout_seconds
        shown = form._description if isinstance(form._description, str) else None
        refreshed = paused_at
        while True:
            young = time.monotonic() - paused_at < YOUNG_SECONDS
            time.sleep(YOUNG_POLL_SECONDS if young else slow_poll)
            every = YOUNG_REFRESH_SECONDS if young else REFRESH_SECONDS
            if refresh is not None and time.monotonic() - refreshed >= every:
                refreshed = time.monotonic()
                shown = _refresh_description(keyset["description"], ctx.flow_run.id, shown, refresh)
            current = client.read_flow_run(ctx.flow_run.id).state
            if current is not None and current.is_running():
                run_logger().info("form answered")
                return cast(FormT, form.load(keyset))
            if time.monotonic() >= deadline:
                return None


def _refresh_description(key: str, flow_run_id: object, shown: str | None,
                         refresh: Callable[[], str | None]) -> str | None:
    """Replace the paused form's description when ``refresh`` says it reads differently now."""
    try:
        new = refresh()
        if new is None or new == shown:
            return shown
        delete_flow_run_input(key=key, flow_run_id=flow_run_id)  # type: ignore[arg-type]
        create_flow_run_input(key=key, value=new, flow_run_id=flow_run_id)  # type: ignore[arg-type]
    except Exception as exc:  # the form keeps its last description; the answer is checked anyway
        run_logger().warning("could not refresh the form's description: %s", exc)
        return shown
    run_logger().info("the form's description was updated: the migration file or the database changed")
    return new
