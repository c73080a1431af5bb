"""Start a Prefect deployment's flow run from CI/CD through the REST API, and follow it to the end.

Why not ``prefect deployment run``: a CD job needs one exit code that says "the migration
completed", one-line errors that a pipeline log shows without a traceback, and no Prefect import
(start-up time, and the same command works from a slim CI image with only this package). The REST
calls are the ones the Prefect client makes: ``GET /deployments/name/{flow}/{deployment}``,
``POST /deployments/{id}/create_flow_run`` and ``GET /flow_runs/{id}``.

Settings come from the environment Prefect's own tools use: ``PREFECT_API_URL`` (required),
``PREFECT_API_KEY`` (Prefect Cloud, sent as a Bearer token) or ``PREFECT_API_AUTH_STRING``
(``user:password`` of a self-hosted server with basic auth), and ``PREFECT_UI_URL`` (optional, for
run links). Credentials are registered with ``migrator.redact`` and never printed.

Exit codes (``TriggerResult.exit_code``): see the ``EXIT_*`` constants below.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from migrator.errors import ConfigError, MigratorError
from migrator.output import info
from migrator.redact import redact, redact_url, register_secret, register_url
from migrator.retry import backoff_delay, retry_after_seconds

EXIT_COMPLETED = 0  # the run reached COMPLETED (or, without --wait, the run was created)
EXIT_FAILED = 1  # the run ended FAILED (a task raised, a migration failed, approval timed out...)
EXIT_CONFIG = 2  # bad setting or input: PREFECT_API_URL, credentials, --param, unknown deployment
EXIT_CRASHED = 3  # the run CRASHED (infrastructure: the worker's process died, out of memory...)
EXIT_CANCELLED = 4  # the run was CANCELLED (from the UI or the API)
EXIT_TIMEOUT = 5  # --timeout elapsed while the run was still going; the run continues
EXIT_API = 6  # the Prefect API could not be reached or answered an unexpected error
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting; the run continues

FINAL_STATES = {
    "COMPLETED": EXIT_COMPLETED,
    "FAILED": EXIT_FAILED,
    "CRASHED": EXIT_CRASHED,
    "CANCELLED": EXIT_CANCELLED,
}

CLOUD_API_PREFIX = "https://api.prefect.cloud/api"
CLOUD_UI_URL = "https://app.prefect.cloud"

# consecutive failed polls tolerated while waiting (a server restart or a network blip must not
# fail a CD job whose run is fine); each failed poll waits one poll interval
MAX_POLL_ERRORS = 10


# a busy or restarting API is retried (429 rate limit; 502/504 from a proxy; 503 from the server when
# its database is locked or it is starting): at most RETRY_ATTEMPTS requests, backoff from
# RETRY_BASE_SECONDS doubling up to RETRY_MAX_SECONDS with jitter, a Retry-After of at most
# RETRY_AFTER_CAP_SECONDS honoured, and no retry that would end past RETRY_BUDGET_SECONDS
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
RETRY_AFTER_CAP_SECONDS = 30.0
RETRY_BUDGET_SECONDS = 60.0


def _retry_delay(response: Any, attempt: int) -> float:
    """Seconds before retry ``attempt`` + 1: the server's Retry-After (capped), else jittered backoff."""
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_SECONDS)
    return backoff_delay(attempt, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)


class PrefectAPIError(MigratorError):
    """The Prefect API could not be reached or answered something unexpected (retrying may help)."""

    exit_code = EXIT_API


# settings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrefectAPI:
    """Where the Prefect API is and how to authenticate; ``from_env`` reads Prefect's own variables."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    auth_string: str | None = field(default=None, repr=False)
    ui_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PrefectAPI:
        """Read PREFECT_API_URL / PREFECT_API_KEY / PREFECT_API_AUTH_STRING / PREFECT_UI_URL."""
        env = os.environ if env is None else env
        api_key = (env.get("PREFECT_API_KEY") or "").strip() or None
        auth_string = (env.get("PREFECT_API_AUTH_STRING") or "").strip() or None
        for secret in (api_key, auth_string):
            register_secret(secret)
        if auth_string and ":" in auth_string:
            register_secret(auth_string.split(":", 1)[1])
        url = (env.get("PREFECT_API_URL") or "").strip().rstrip("/")
        register_url(url)
        if not url:
            raise ConfigError(
                "PREFECT_API_URL is not set: set it to the Prefect API, e.g. "
                "PREFECT_API_URL=http://prefect.internal:4200/api (self-hosted) or "
                "https://api.prefect.cloud/api/accounts/ACCOUNT_ID/workspaces/WORKSPACE_ID (Prefect Cloud)"
            )
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigError(f"PREFECT_API_URL={redact_url(url)!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"PREFECT_API_URL={redact_url(url)!r} must be an http(s) URL ending in /api, "
                "e.g. http://127.0.0.1:4200/api"
            )
        if url.startswith(CLOUD_API_PREFIX) and not api_key:
            raise ConfigError(
                "PREFECT_API_URL points to Prefect Cloud but PREFECT_API_KEY is not set: "
                "create an API key (or a service account key) in Prefect Cloud and set PREFECT_API_KEY"
            )
        ui_url = (env.get("PREFECT_UI_URL") or "").strip().rstrip("/") or None
        return cls(url=url, api_key=api_key, auth_string=auth_string, ui_url=ui_url)

    @property
    def display_url(self) -> str:
        """The API URL safe to print (userinfo masked)."""
        return redact_url(self.url)

    def headers(self) -> dict[str, str]:
        """Authorization as the Prefect client sends it: basic auth string first, else the API key."""
        headers = {"Accept": "application/json"}
        if self.auth_string:
            token = base64.b64encode(self.auth_string.encode("utf-8")).decode("ascii")
            register_secret(token)
            headers["Authorization"] = f"Basic {token}"
        elif self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def ui_base(self) -> str:
        """The UI root, as Prefect derives it: PREFECT_UI_URL, else the API URL without ``/api``."""
        if self.ui_url:
            return self.ui_url
        ui = self.url
        if ui.startswith(CLOUD_API_PREFIX):
            ui = CLOUD_UI_URL + ui[len(CLOUD_API_PREFIX) :]
            ui = ui.replace("/accounts/", "/account/").replace("/workspaces/", "/workspace/")
            return ui
        if ui.endswith("/api"):
            ui = ui[: -len("/api")]
        return ui.replace("/api/", "/")

    def run_url(self, flow_run_id: str) -> str:
        """Link to a flow run's page in the Prefect UI."""
        return f"{self.ui_base()}/runs/flow-run/{flow_run_id}"


# parameters --------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity are not JSON: keep such values as strings


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["x=1", "name=prod", 'cfg={"a": 1}']`` -> ``{"x": 1, "name": "prod", "cfg": {"a": 1}}``.

    A value is JSON when it parses as JSON (numbers, true/false, null, lists, objects, "quoted
    strings"), otherwise the text itself; so ``--param target_version=42`` sends an integer and
    ``--param label='"42"'`` a string.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {item!r} must be NAME=VALUE, e.g. --param target_version=42")
        if not key.isidentifier():
            raise ConfigError(
                f"--param {item!r}: {key!r} is not a valid flow parameter name (letters, digits and _), "
                "e.g. --param dry_run=true"
            )
        if key in params:
            raise ConfigError(f"--param {key} is given more than once; give each parameter once")
        try:
            value: Any = json.loads(raw, parse_constant=_reject_constant)
        except ValueError:
            value = raw
        params[key] = value
    return params


def split_deployment(name: str) -> tuple[str, str]:
    """``"migrate/prod"`` -> ``("migrate", "prod")``; anything else is a ConfigError saying the form."""
    flow_name, sep, deployment_name = name.strip().partition("/")
    if not sep or not flow_name or not deployment_name or "/" in deployment_name:
        raise ConfigError(
            f"deployment {name!r} must be FLOW/DEPLOYMENT, e.g. migrate/prod; list them with `prefect deployment ls`"
        )
    return flow_name, deployment_name


# result ------------------------------------------------------------------------------------------
@dataclass
class StateChange:
    """One state the run went through, as recorded by the Prefect server."""

    type: str
    name: str
    timestamp: str | None
    message: str | None = None
    pause_timeout: str | None = None  # PAUSED: when the pause (approval) expires

    @classmethod
    def from_api(cls, state: Mapping[str, Any]) -> StateChange:
        details = state.get("state_details") or {}
        return cls(
            type=str(state.get("type") or "UNKNOWN"),
            name=str(state.get("name") or "Unknown"),
            timestamp=state.get("timestamp"),
            message=state.get("message"),
            pause_timeout=details.get("pause_timeout") if isinstance(details, dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "timestamp": self.timestamp, "message": self.message}


@dataclass
class TriggerResult:
    """What ``migrator trigger`` did: the run it started (or found by idempotency key) and how it ended."""

    deployment: str
    deployment_id: str
    flow_run_id: str
    flow_run_name: str
    url: str | None
    parameters: dict[str, Any]
    work_pool: str | None = None
    created: bool = True  # False: an earlier run with the same idempotency key was returned
    idempotency_key: str | None = None
    waited: bool = False
    state_type: str | None = None
    state_name: str | None = None
    state_message: str | None = None
    timed_out: bool = False
    interrupted: bool = False
    duration_seconds: float | None = None  # wall clock from the trigger until the last state seen
    run_time_seconds: float | None = None  # Prefect's total_run_time of the run
    states: list[StateChange] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state_type in FINAL_STATES

    @property
    def exit_code(self) -> int:
        """0 only when the run completed (or was just started without waiting); see EXIT_*."""
        if not self.waited:
            return EXIT_COMPLETED
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.timed_out or not self.final:
            return EXIT_TIMEOUT
        return FINAL_STATES[str(self.state_type)]

    def error_message(self) -> str | None:
        """The one-line explanation for a non-zero exit code, or None when all is well."""
        run = f"flow run {self.flow_run_name} ({self.flow_run_id}) of {self.deployment}"
        where = f"; see {self.url}" if self.url else ""
        code = self.exit_code
        if code == EXIT_COMPLETED:
            return None
        if code == EXIT_INTERRUPTED:
            return f"stopped waiting (interrupted); {run} continues on the Prefect server{where}"
        if code == EXIT_TIMEOUT:
            return (
                f"timed out after {self.duration_seconds or 0:.0f}s waiting for {run}; it is still "
                f"{self.state_name or 'going'} ({self.state_type}) and continues on the Prefect server{where}"
            )
        message = f": {self.state_message}" if self.state_message else ""
        return f"{run} ended {self.state_name} ({self.state_type}){message}{where}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; credentials are redacted when printed (print_json)."""
        return {
            "deployment": self.deployment,
            "deployment_id": self.deployment_id,
            "flow_run_id": self.flow_run_id,
            "flow_run_name": self.flow_run_name,
            "url": self.url,
            "parameters": self.parameters,
            "work_pool": self.work_pool,
            "created": self.created,
            "idempotency_key": self.idempotency_key,
            "waited": self.waited,
            "state_type": self.state_type,
            "state_name": self.state_name,
            "state_message": self.state_message,
            "final": self.final,
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
            "duration_seconds": None if self.duration_seconds is None else round(self.duration_seconds, 3),
            "run_time_seconds": self.run_time_seconds,
            "exit_code": self.exit_code,
            "error": self.error_message(),
            "states": [s.to_dict() for s in self.states],
        }


# HTTP --------------------------------------------------------------------------------------------
def _detail(response: Any) -> str:
    """The ``detail`` of a FastAPI error answer, or the start of the body, on one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
    else:
        text = response.text
    return " ".join(redact(text).split())[:300]


class _Client:
    """A thin httpx client that turns transport and HTTP failures into one-line MigratorErrors."""

    def __init__(
        self,
        api: PrefectAPI,
        timeout: float = 30.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self._httpx = httpx
        self.sleep = sleep
        self.emit = emit
        # retries= retries only failed connection attempts (the request never left), so it is safe
        # for POST too; a lost answer to a POST is covered by the idempotency key.
        self.http = httpx.Client(
            base_url=api.url + "/",
            headers=api.headers(),
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=httpx.HTTPTransport(retries=2),
            follow_redirects=True,
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the httpx response for 2xx/404/409/422, raise otherwise.

        A busy or restarting server (429, 502, 503, 504) is retried with exponential backoff and
        jitter, honouring ``Retry-After``, within ``RETRY_BUDGET_SECONDS``: the self-hosted
        server answers 503 when its database is momentarily locked, and a CD job must not fail on
        that. Every POST this client sends is safe to repeat: filters only read, and a run is
        created with an idempotency key (see ``Trigger.start``).
        """
        started = time.monotonic()
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            response = self._send(method, path, **kwargs)
            status = response.status_code
            if status not in RETRY_STATUSES or attempt == RETRY_ATTEMPTS:
                break
            delay = _retry_delay(response, attempt)
            if time.monotonic() - started + delay > RETRY_BUDGET_SECONDS:
                break
            if self.emit is not None:
                self.emit(
                    f"warning: the Prefect API answered HTTP {status} to {method} /{path} "
                    f"(attempt {attempt} of {RETRY_ATTEMPTS}); retrying in {delay:.1f} s"
                )
            self.sleep(delay)
        return self._check(method, path, response)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.http.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            reason = " ".join(redact(str(exc) or type(exc).__name__).split())
            raise PrefectAPIError(
                f"cannot reach the Prefect API at {self.api.display_url} ({type(exc).__name__}: {reason}); "
                "check PREFECT_API_URL and that the server is running"
            ) from None

    def _check(self, method: str, path: str, response: Any) -> Any:
        status = response.status_code
        if status in (401, 403):
            if self.api.auth_string or self.api.api_key:
                used = "PREFECT_API_AUTH_STRING" if self.api.auth_string else "PREFECT_API_KEY"
                hint = (
                    f"check {used} (PREFECT_API_KEY for Prefect Cloud, "
                    "PREFECT_API_AUTH_STRING for a self-hosted server)"
                )
            else:
                hint = (
                    "no credentials are set: set PREFECT_API_KEY (Prefect Cloud) "
                    "or PREFECT_API_AUTH_STRING (self-hosted)"
                )
            raise ConfigError(
                f"the Prefect API at {self.api.display_url} refused the credentials (HTTP {status}); {hint}"
            )
        if status >= 500 or (status >= 300 and status not in (404, 409, 422)):
            raise PrefectAPIError(
                f"the Prefect API at {self.api.display_url} answered HTTP {status} to {method} /{path}: "
                f"{_detail(response)}"
            )
        return response

    def json(self, response: Any, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PrefectAPIError(
                f"the Prefect API at {self.api.display_url} sent a non-JSON answer for {what} "
                f"(HTTP {response.status_code}); is PREFECT_API_URL the API (ending in /api), not the UI?"
            ) from None


# the trigger -------------------------------------------------------------------------------------
def _state_of(run: Mapping[str, Any]) -> StateChange:
    state = run.get("state")
    if isinstance(state, dict) and state.get("type"):
        return StateChange.from_api(state)
    return StateChange(str(run.get("state_type") or "UNKNOWN"), str(run.get("state_name") or "Unknown"), None)


def _short_time(timestamp: str | None) -> str:
    """``2026-11-25T19:12:39.116785Z`` -> ``2026-11-25T19:12:39Z`` (seconds are enough in a CI log)."""
    if not timestamp:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    head = timestamp.split(".")[0].replace("+00:00", "")
    return head if head.endswith("Z") else head + "Z"


def format_state(change: StateChange) -> str:
    """One line per state change: timestamp, TYPE, name and message."""
    line = f"{_short_time(change.timestamp)}  {change.type:<9} {change.name}"
    if change.message:
        line += f": {' '.join(change.message.split())}"
    return line


class Trigger:
    """Start a deployment's flow run and optionally follow it; ``emit`` receives progress lines."""

    def __init__(
        self,
        api: PrefectAPI,
        *,
        emit: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.emit = emit or _default_emit
        self.sleep = sleep

    # -- steps -----------------------------------------------------------------------------------
    def _deployment(self, client: _Client, name: str) -> dict[str, Any]:
        flow_name, deployment_name = split_deployment(name)
        path = f"deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}"
        response = client.request("GET", path)
        if response.status_code == 404:
            raise ConfigError(self._not_found(client, name, flow_name))
        if response.status_code != 200:
            raise PrefectAPIError(
                f"reading deployment {name} from {self.api.display_url} failed (HTTP {response.status_code}): "
                f"{_detail(response)}"
            )
        data = client.json(response, f"deployment {name}")
        if not isinstance(data, dict) or "id" not in data:
            raise PrefectAPIError(f"unexpected answer for deployment {name} from {self.api.display_url}")
        return data

    def _not_found(self, client: _Client, name: str, flow_name: str) -> str:
        """Say the deployment is unknown, and which deployments of that flow exist, if any."""
        base = f"deployment {name!r} not found on the Prefect API at {self.api.display_url}"
        try:
            response = client.request(
                "POST", "deployments/filter", json={"flows": {"name": {"any_": [flow_name]}}, "limit": 20}
            )
        except MigratorError:
            response = None
        if response is not None and response.status_code == 404:
            return f"{base}, which does not look like a Prefect API: PREFECT_API_URL usually ends in /api"
        known: list[str] = []
        if response is not None and response.status_code == 200:
            try:
                known = sorted(f"{flow_name}/{d['name']}" for d in response.json() if isinstance(d, dict))
            except (ValueError, KeyError, TypeError):
                known = []
        hint = f" (deployments of flow {flow_name!r}: {', '.join(known)})" if known else ""
        return f"{base}{hint}; list deployments with `prefect deployment ls` or check the names in prefect.yaml"

    @staticmethod
    def _check_parameter_names(name: str, deployment: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Refuse a parameter the flow does not take before a run is created that would fail on it."""
        schema = deployment.get("parameter_openapi_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
            return
        known = schema["properties"]
        if schema.get("additionalProperties") is True:
            return
        unknown = [key for key in params if key not in known]
        if unknown:
            takes = ", ".join(sorted(known)) or "no parameters"
            raise ConfigError(
                f"--param {unknown[0]}: deployment {name} has no parameter {unknown[0]!r} (it takes: {takes})"
            )

    def start(
        self, client: _Client, name: str, params: Mapping[str, Any], idempotency_key: str | None
    ) -> TriggerResult:
        """Look the deployment up by name and create a flow run of it."""
        deployment = self._deployment(client, name)
        self._check_parameter_names(name, deployment, params)
        # without a caller's key, one of our own makes a retried POST (lost answer, 503) return the
        # run the first attempt created instead of starting a second migration
        key = idempotency_key or f"migrator-trigger-{uuid.uuid4()}"
        body: dict[str, Any] = {"parameters": dict(params), "idempotency_key": key}
        response = client.request("POST", f"deployments/{deployment['id']}/create_flow_run", json=body)
        if response.status_code in (409, 422):
            raise ConfigError(f"deployment {name} rejected the run (HTTP {response.status_code}): {_detail(response)}")
        if response.status_code == 404:
            raise ConfigError(f"deployment {name} was deleted while starting the run; check `prefect deployment ls`")
        run = client.json(response, f"the new run of {name}")
        if not isinstance(run, dict) or "id" not in run:
            raise PrefectAPIError(f"unexpected answer when creating a run of {name} at {self.api.display_url}")
        flow_run_id = str(run["id"])
        state = _state_of(run)
        return TriggerResult(
            deployment=name,
            deployment_id=str(deployment["id"]),
            flow_run_id=flow_run_id,
            flow_run_name=str(run.get("name") or flow_run_id),
            url=self.api.run_url(flow_run_id),
            parameters=dict(run.get("parameters") or params),
            work_pool=deployment.get("work_pool_name"),
            # 200 means the key matched an existing run: a caller's earlier run, or our own retried POST
            created=response.status_code == 201 or idempotency_key is None,
            idempotency_key=idempotency_key,
            state_type=state.type,
            state_name=state.name,
            state_message=state.message,
        )

    def _history(self, client: _Client, flow_run_id: str) -> list[StateChange]:
        response = client.request("GET", "flow_run_states/", params={"flow_run_id": flow_run_id})
        if response.status_code != 200:
            return []
        data = client.json(response, "the run's states")
        if not isinstance(data, list):
            return []
        return [StateChange.from_api(s) for s in data if isinstance(s, dict)]

    def _announce(self, result: TriggerResult, change: StateChange) -> None:
        self.emit(format_state(change))
        if change.type == "PAUSED":
            until = f" (the pause expires at {_short_time(change.pause_timeout)})" if change.pause_timeout else ""
            self.emit(f"waiting for approval in the UI: {result.url}{until}")
        elif change.name == "Late":
            pool = f" {result.work_pool!r}" if result.work_pool else ""
            self.emit(f"the run is late: is a worker polling work pool{pool}? (`prefect worker start --pool ...`)")

    def wait(
        self,
        client: _Client,
        result: TriggerResult,
        *,
        timeout: float,
        poll: float,
        started: float,
    ) -> TriggerResult:
        """Poll the run until a final state, the timeout or Ctrl-C; print every state it passes through."""
        result.waited = True
        deadline = started + timeout
        seen: set[tuple[str, str, str | None]] = set()
        last_state: tuple[str, str, str | None] | None = None
        errors = 0
        try:
            while True:
                try:
                    response = client.request("GET", f"flow_runs/{result.flow_run_id}")
                    if response.status_code == 404:
                        raise ConfigError(
                            f"flow run {result.flow_run_id} of {result.deployment} disappeared (deleted?) while waiting"
                        )
                    run = client.json(response, "the flow run")
                    current = _state_of(run)
                    key = (current.type, current.name, current.timestamp)
                    if key != last_state:
                        history = self._history(client, result.flow_run_id) or [current]
                        if not any((s.type, s.name, s.timestamp) == key for s in history):
                            history.append(current)
                        for change in history:
                            ckey = (change.type, change.name, change.timestamp)
                            if ckey not in seen:
                                seen.add(ckey)
                                result.states.append(change)
                                self._announce(result, change)
                        last_state = key
                    errors = 0
                except PrefectAPIError as exc:
                    errors += 1
                    if errors >= MAX_POLL_ERRORS:
                        raise PrefectAPIError(
                            f"{exc} (while waiting for flow run {result.flow_run_id}; it may still be running: "
                            f"{result.url})"
                        ) from None
                    self.emit(f"warning: {exc}; retrying")
                else:
                    result.state_type, result.state_name = current.type, current.name
                    result.state_message = current.message
                    total = run.get("total_run_time")
                    result.run_time_seconds = float(total) if isinstance(total, int | float) else None
                    if current.type in FINAL_STATES:
                        break
                now = time.monotonic()
                if now >= deadline:
                    result.timed_out = True
                    break
                self.sleep(max(0.0, min(poll, deadline - now)))
        except KeyboardInterrupt:
            result.interrupted = True
        result.duration_seconds = time.monotonic() - started
        return result

    # -- entry point -----------------------------------------------------------------------------
    def run(
        self,
        deployment: str,
        params: Mapping[str, Any] | None = None,
        *,
        wait: bool = False,
        timeout: float = 3600.0,
        poll: float = 2.0,
        idempotency_key: str | None = None,
    ) -> TriggerResult:
        """Start a run of ``deployment`` (``flow/deployment``); with ``wait``, follow it to the end."""
        if timeout <= 0:
            raise ConfigError(f"--timeout {timeout:g} must be > 0 seconds, e.g. --timeout 3600")
        if poll <= 0:
            raise ConfigError(f"--poll {poll:g} must be > 0 seconds, e.g. --poll 2")
        params = dict(params or {})
        started = time.monotonic()
        client = _Client(self.api, sleep=self.sleep, emit=self.emit)
        try:
            result = self.start(client, deployment, params, idempotency_key)
            reused = "" if result.created else f" (existing run for idempotency key {idempotency_key!r})"
            self.emit(
                f"started flow run {result.flow_run_name} ({result.flow_run_id}) of {deployment}{reused}: {result.url}"
            )
            if wait:
                self.wait(client, result, timeout=timeout, poll=poll, started=started)
            else:
                result.duration_seconds = time.monotonic() - started
            return result
        finally:
            client.close()


def _default_emit(message: str) -> None:
    info(message)


def trigger(
    deployment: str,
    params: Mapping[str, Any] | None = None,
    *,
    wait: bool = False,
    timeout: float = 3600.0,
    poll: float = 2.0,
    idempotency_key: str | None = None,
    api: PrefectAPI | None = None,
    emit: Callable[[str], None] | None = None,
) -> TriggerResult:
    """Start (and with ``wait`` follow) a run of ``flow/deployment``; settings from the environment."""
    return Trigger(api or PrefectAPI.from_env(), emit=emit).run(
        deployment, params, wait=wait, timeout=timeout, poll=poll, idempotency_key=idempotency_key
    )
