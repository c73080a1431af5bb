"""The per-environment migration slot, and a wait that says who it waits for.

At most one migrate/rollback/force/recover run per environment: a Prefect global concurrency
limit of 1 (``askfrank-migrations-<env>``), on top of the database's advisory lock. Prefect records
a lease holder but its API does not return it, so the run that takes the slot also tags itself
``HOLDER_TAG_PREFIX + <limit>`` (visible on the run's page in the UI) and removes the tag when
it lets go. A waiting run logs within a few seconds, and every ``REPORT_EVERY_SECONDS`` after,
which run holds the slot (name, state such as "paused for approval", link) and how long it has
waited, so nobody stares at a silent "Running" run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.utilities.urls import url_for

from migrator.errors import MigratorError
from tasks._common import flow_run_id, run_logger
from tasks.environment import Environment

FIRST_REPORT_SECONDS = 2.0  # a slot free within this long is taken silently
REPORT_EVERY_SECONDS = 30.0
HOLDER_TAG_PREFIX = "holds-slot:"
# Flows that take the slot; a run of one of these for the same environment may be the holder.
SLOT_FLOWS = ("migrate", "rollback", "force", "recover")


def _ui_url(run: Any) -> str | None:
    try:
        return url_for(run)
    except Exception:
        return None


def _state_phrase(run: Any) -> str:
    """'paused for approval', 'running task apply-prod', 'cancelling': what the holder is doing."""
    state = run.state
    if state is None:
        return "state unknown"
    if state.is_paused():
        key = str(state.state_details.pause_key or "")
        return f"paused for {key}" if key and not key.isdigit() else "paused, waiting for input in the UI"
    return str(state.name or state.type.value).lower()


def describe_run(run: Any, flow_name: str | None = None) -> str:
    """One line naming a flow run: flow, name, state, since when, link."""
    since = run.start_time or run.expected_start_time
    when = f", started {since.astimezone(UTC):%H:%M:%S} UTC" if since else ""
    link = _ui_url(run)
    return f"{flow_name or 'flow'} run '{run.name}' ({_state_phrase(run)}{when})" + (f" {link}" if link else "")


def find_holders(env: Environment, exclude: str | None = None) -> list[str]:
    """Who holds ``env``'s slot: the live run tagged as holder; else the live runs of the slot's
    flows for ``env`` (it is one of them). Empty when nothing is found."""
    live = FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]))
    with get_client(sync_client=True) as client:
        tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=live, tags=FlowRunFilterTags(all_=[HOLDER_TAG_PREFIX + env.concurrency_limit])))
        runs = [r for r in tagged if str(r.id) != exclude]
        if not runs:
            runs = [
                r for r in client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=list(SLOT_FLOWS))),
                    flow_run_filter=FlowRunFilter(state=live))
                if str(r.id) != exclude and (r.parameters or {}).get("environment") == env.name
            ]
            prefix = "one of: " if len(runs) > 1 else ""
        else:
            prefix = ""
        flows = {r.flow_id: client.read_flow(r.flow_id).name for r in runs}
    return [prefix + describe_run(r, flows.get(r.flow_id)) for r in runs]


def _holder_text(env: Environment, me: str | None) -> str:
    try:
        holders = find_holders(env, exclude=me)
    except Exception as exc:  # the report must never break the wait
        return f"(could not read the holder: {type(exc).__name__})"
    return "; ".join(holders) if holders else "a run that is not visible from this API (or just finished)"


def _report_while_waiting(env: Environment, stop: threading.Event, started: float, wait: float | None,
                          log: Any, me: str | None) -> None:
    delay = FIRST_REPORT_SECONDS
    while not stop.wait(delay):
        waited = time.monotonic() - started
        limit = f"; gives up after {wait:g}s" if wait is not None else ""
        log.info("waiting %.0fs for the %s migration slot (%s), held by %s%s",
                 waited, env.name, env.concurrency_limit, _holder_text(env, me), limit)
        delay = REPORT_EVERY_SECONDS


def _context_run(run_id: str) -> Any:
    """The current run as its context holds it (None when the context is another run's)."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    return run if run is not None and str(run.id) == run_id else None


def _set_holder_tag(run_id: str | None, tag: str, present: bool, client: Any) -> None:
    """Add or remove the holder tag: one API call (the tags come from the run's context; only
    without one is the run read first), instead of a read and an update at each end of the slot."""
    if not run_id:
        return
    with contextlib.suppress(Exception):  # a tag is a courtesy
        run = _context_run(run_id)
        tags = set((run if run is not None else client.read_flow_run(UUID(run_id))).tags or [])
        new = tags | {tag} if present else tags - {tag}
        if new != tags:
            client.update_flow_run(UUID(run_id), tags=sorted(new))
            if run is not None:  # the context's copy says what the server now has
                run.tags = sorted(new)


@contextlib.contextmanager
def migration_slot(env: Environment, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold ``env``'s slot for the body; while waiting for it, log who holds it."""
    # one client for the limit and the tags: each new client costs the API a CSRF-token round trip
    client = get_client(sync_client=True)
    with client:
        client.upsert_global_concurrency_limit_by_name(env.concurrency_limit, 1)
        with _slot(env, client, wait_seconds):
            yield


@contextlib.contextmanager
def _slot(env: Environment, client: Any, wait_seconds: float | None) -> Iterator[None]:
    wait = env.settings.lock_wait_seconds if wait_seconds is None else wait_seconds
    me = flow_run_id()
    log = run_logger()
    tag = HOLDER_TAG_PREFIX + env.concurrency_limit
    started = time.monotonic()
    stop = threading.Event()
    reporter = threading.Thread(target=_report_while_waiting, args=(env, stop, started, wait, log, me),
                                name=f"slot-wait-{env.name}", daemon=True)
    reporter.start()
    acquired = False
    try:
        with concurrency(env.concurrency_limit, occupy=1, strict=True, timeout_seconds=wait,
                         holder=ConcurrencyLeaseHolder(type="flow_run", id=UUID(me)) if me else None):
            acquired = True
            stop.set()
            waited = time.monotonic() - started
            if waited >= FIRST_REPORT_SECONDS:
                log.info("got the %s migration slot after waiting %.0fs", env.name, waited)
            _set_holder_tag(me, tag, True, client)
            try:
                yield
            finally:
                _set_holder_tag(me, tag, False, client)
    except TimeoutError:
        if acquired:  # a timeout inside the body (a task's) is not the slot's
            raise
        raise MigratorError(
            f"another migrate/rollback/force run of {env.name} holds the concurrency limit "
            f"{env.concurrency_limit} (waited {wait:g}s): {_holder_text(env, me)}; "
            f"let it finish, then retry this run"
        ) from None
    finally:
        stop.set()
        reporter.join(timeout=5)
