"""``migrator trigger``: against a real ``prefect server`` and a real process worker on 127.0.0.1.

Deployments come from flows in a temporary folder (``flow.from_source(<local dir>).deploy``: no
image, no git). Auth and transport failures use the real HTTP receiver scripted to answer 401/403/500.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import reap
from migrator.trigger import (
    EXIT_API,
    EXIT_CANCELLED,
    EXIT_CONFIG,
    EXIT_CRASHED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    RETRY_ATTEMPTS,
    RETRY_BUDGET_SECONDS,
    RETRY_STATUSES,
    PrefectAPI,
    PrefectAPIError,
    Trigger,
    _retry_delay,
    parse_params,
)
from prefect_server import PrefectServer, prefect_server, running_worker  # noqa: F401  (fixture)
from webhook_receiver import WebhookReceiver, closed_port_url

ROOT = Path(__file__).resolve().parent.parent
# server tests: the shared server starts once (~15 s), each worker-run flow takes ~8 s
SERVER = pytest.mark.timeout(150)
SENTINEL = "Sentinel-Pw-7f3a9c"
NO_AUTH = {"PREFECT_API_KEY": "", "PREFECT_API_AUTH_STRING": "", "PREFECT_UI_URL": ""}


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- input and settings (no server) --------------------------------------------------------------
def test_param_values_are_json_when_they_parse() -> None:
    assert parse_params(
        [
            "x=1",
            "f=2.5",
            "dry_run=true",
            "n=null",
            'cfg={"a": [1]}',
            "env=prod",
            'label="42"',
            "v=000123",
            "e=",
            "s=a=b",
        ]
    ) == {
        "x": 1,
        "f": 2.5,
        "dry_run": True,
        "n": None,
        "cfg": {"a": [1]},
        "env": "prod",
        "label": "42",
        "v": "000123",
        "e": "",
        "s": "a=b",
    }
    assert parse_params(["x=NaN"]) == {"x": "NaN"}  # not valid JSON for the API: kept as text


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("target_version", "--param 'target_version' must be NAME=VALUE"),
        ("=5", "--param '=5' must be NAME=VALUE"),
        ("bad-name=1", "'bad-name' is not a valid flow parameter name"),
    ],
)
def test_bad_param_syntax_is_one_line_naming_it(cli, param: str, expected: str) -> None:
    r = cli("trigger", "migrate/prod", "--param", param, env={"PREFECT_API_URL": closed_port_url("/api")})
    assert r.code == EXIT_CONFIG
    assert expected in one_error_line(r.err)


def test_param_given_twice_is_refused(cli) -> None:
    r = cli(
        "trigger", "migrate/prod", "--param", "x=1", "--param", "x=2", env={"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    )
    assert r.code == EXIT_CONFIG
    assert "--param x is given more than once" in one_error_line(r.err)


def test_missing_api_url_names_the_variable(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    r = cli("trigger", "migrate/prod", "--wait")
    assert r.code == EXIT_CONFIG
    assert "PREFECT_API_URL is not set" in one_error_line(r.err)


def test_malformed_api_url_and_deployment_name(cli) -> None:
    r = cli("trigger", "migrate/prod", env={"PREFECT_API_URL": "prefect.internal:4200"})
    assert r.code == EXIT_CONFIG
    # a URL that does not parse may hold a password: it is never echoed (issue 10.5)
    line = one_error_line(r.err)
    assert "PREFECT_API_URL='****' must be an http(s) URL" in line and "prefect.internal" not in line
    r = cli("trigger", "migrate", env={"PREFECT_API_URL": closed_port_url("/api")})
    assert r.code == EXIT_CONFIG
    assert "deployment 'migrate' must be FLOW/DEPLOYMENT, e.g. migrate/prod" in one_error_line(r.err)


def test_bad_timeout_is_a_usage_error(cli) -> None:
    r = cli("trigger", "migrate/prod", "--wait", "--timeout", "soon")
    assert r.code == 2
    assert "--timeout 'soon' must be a number of seconds" in r.err


def test_prefect_cloud_needs_a_key_and_links_to_the_cloud_ui() -> None:
    cloud = "https://api.prefect.cloud/api/accounts/acc-1/workspaces/ws-2"
    with pytest.raises(Exception, match="PREFECT_API_KEY is not set"):
        PrefectAPI.from_env({"PREFECT_API_URL": cloud})
    api = PrefectAPI.from_env({"PREFECT_API_URL": cloud, "PREFECT_API_KEY": "pnu_" + SENTINEL})
    assert api.run_url("r1") == "https://app.prefect.cloud/account/acc-1/workspace/ws-2/runs/flow-run/r1"
    assert api.headers()["Authorization"] == "Bearer pnu_" + SENTINEL
    assert SENTINEL not in repr(api)
    local = PrefectAPI.from_env({"PREFECT_API_URL": "http://prefect.internal:4200/api/"})
    assert local.run_url("r1") == "http://prefect.internal:4200/runs/flow-run/r1"
    ui = PrefectAPI.from_env(
        {"PREFECT_API_URL": "http://10.0.0.5:4200/api", "PREFECT_UI_URL": "https://prefect.example/"}
    )
    assert ui.run_url("r1") == "https://prefect.example/runs/flow-run/r1"


def test_unreachable_api_names_the_redacted_url(cli) -> None:
    url = closed_port_url("/api").replace("http://", f"http://ops:{SENTINEL}@")
    r = cli("trigger", "migrate/prod", "--wait", env={"PREFECT_API_URL": url, **NO_AUTH})
    assert r.code == EXIT_API
    line = one_error_line(r.err)
    assert "cannot reach the Prefect API at http://ops:****@127.0.0.1:" in line
    assert "check PREFECT_API_URL" in line
    assert SENTINEL not in r.out + r.err


@pytest.mark.parametrize("status", [401, 403])
def test_refused_basic_auth_never_prints_the_credentials(cli, status: int) -> None:
    with WebhookReceiver(default=(status, {"Content-Type": "application/json"}, '{"detail": "Unauthorized"}')) as rx:
        api_url = f"http://127.0.0.1:{rx.port}/api"
        for extra in ([], ["--json"]):
            r = cli(
                "trigger",
                "migrate/prod",
                "--wait",
                *extra,
                env={**NO_AUTH, "PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": f"ci:{SENTINEL}"},
            )
            assert r.code == EXIT_CONFIG
            line = one_error_line(r.err)
            assert f"refused the credentials (HTTP {status}); check PREFECT_API_AUTH_STRING" in line
            token = base64.b64encode(f"ci:{SENTINEL}".encode()).decode()
            assert SENTINEL not in r.out + r.err and token not in r.out + r.err
        sent = rx.requests[0]
        assert sent.path == "/api/deployments/name/migrate/prod"
        assert sent.header("Authorization") == f"Basic {token}"


def test_refused_api_key_never_prints_it(cli) -> None:
    with WebhookReceiver(default=401) as rx:
        key = f"pnu_{SENTINEL}"
        r = cli(
            "trigger",
            "migrate/prod",
            env={**NO_AUTH, "PREFECT_API_URL": f"http://127.0.0.1:{rx.port}/api", "PREFECT_API_KEY": key},
        )
        assert r.code == EXIT_CONFIG
        assert "check PREFECT_API_KEY" in one_error_line(r.err)
        assert SENTINEL not in r.out + r.err
        assert rx.requests[0].header("Authorization") == f"Bearer {key}"


def test_server_errors_and_non_api_answers_exit_6(cli) -> None:
    with WebhookReceiver(default=(500, {}, "database is locked")) as rx:
        r = cli("trigger", "migrate/prod", env={**NO_AUTH, "PREFECT_API_URL": f"http://127.0.0.1:{rx.port}/api"})
        assert r.code == EXIT_API
        assert "answered HTTP 500 to GET /deployments/name/migrate/prod: database is locked" in one_error_line(r.err)
    with WebhookReceiver(default=(200, {"Content-Type": "text/html"}, "<html>Prefect UI</html>")) as rx:
        r = cli("trigger", "migrate/prod", env={**NO_AUTH, "PREFECT_API_URL": f"http://127.0.0.1:{rx.port}"})
        assert r.code == EXIT_API
        assert "non-JSON answer" in one_error_line(r.err) and "ending in /api" in r.err


JSON = {"Content-Type": "application/json"}
DEPLOYMENT = json.dumps({"id": "dep-1", "name": "prod", "work_pool_name": "migrations"})
NEW_RUN = json.dumps({"id": "run-1", "name": "brave-otter", "state": {"type": "SCHEDULED", "name": "Scheduled"}})


def _scripted_trigger(rx: WebhookReceiver) -> tuple[Trigger, list[float], list[str]]:
    """A Trigger on the receiver whose sleeps are recorded instead of slept."""
    slept: list[float] = []
    said: list[str] = []
    api = PrefectAPI.from_env({"PREFECT_API_URL": f"http://127.0.0.1:{rx.port}/api"})
    return Trigger(api, emit=said.append, sleep=slept.append), slept, said


def test_a_busy_server_503_is_retried_and_the_retried_post_carries_the_same_idempotency_key() -> None:
    # the self-hosted server answers 503 while its database is locked (seen in CI on create_flow_run)
    busy = (503, JSON, '{"exception_message": "Service Unavailable"}')
    with WebhookReceiver() as rx:
        rx.script([busy, (200, JSON, DEPLOYMENT), busy, busy, (201, JSON, NEW_RUN)])
        trigger, slept, said = _scripted_trigger(rx)
        result = trigger.run("migrate/prod")
        assert result.flow_run_id == "run-1" and result.created is True
        assert [r.status for r in rx.requests] == [503, 200, 503, 503, 201]
        posts = [r for r in rx.requests if r.method == "POST"]
        keys = {r.json()["idempotency_key"] for r in posts}
        assert len(posts) == 3 and len(keys) == 1 and next(iter(keys)).startswith("migrator-trigger-")
        assert len(slept) == 3 and all(0 < s <= 2.0 for s in slept)
        warnings = [line for line in said if line.startswith("warning:")]
        assert len(warnings) == 3 and "HTTP 503 to POST /deployments/dep-1/create_flow_run" in warnings[-1]


def test_retry_after_is_honoured_and_capped_and_a_caller_key_is_sent_as_given() -> None:
    with WebhookReceiver() as rx:
        rx.script(
            [
                (429, {"Retry-After": "7"}, "slow down"),
                (200, JSON, DEPLOYMENT),
                (429, {"Retry-After": "3600"}, "slow down"),
                (200, JSON, NEW_RUN),
            ]
        )
        trigger, slept, _ = _scripted_trigger(rx)
        result = trigger.run("migrate/prod", idempotency_key="ci-job-1")
        assert slept == [7.0, 30.0]
        # 200 for a caller's key means an earlier run with that key was returned
        assert result.created is False and rx.requests[-1].json()["idempotency_key"] == "ci-job-1"


def test_a_server_that_stays_unavailable_gives_up_after_the_attempts_with_exit_6() -> None:
    with WebhookReceiver(default=(503, JSON, '{"exception_message": "Service Unavailable"}')) as rx:
        trigger, slept, _ = _scripted_trigger(rx)
        with pytest.raises(PrefectAPIError, match="answered HTTP 503 to GET /deployments/name/migrate/prod") as err:
            trigger.run("migrate/prod")
        assert err.value.exit_code == EXIT_API
        assert len(rx.requests) == RETRY_ATTEMPTS and len(slept) == RETRY_ATTEMPTS - 1


def test_an_internal_error_or_a_rejection_is_not_retried() -> None:
    with WebhookReceiver() as rx:
        rx.script([(500, {}, "boom")])
        trigger, slept, _ = _scripted_trigger(rx)
        with pytest.raises(PrefectAPIError, match="HTTP 500"):
            trigger.run("migrate/prod")
        assert len(rx.requests) == 1 and slept == []
        rx.clear()
        rx.script([(200, JSON, DEPLOYMENT), (422, JSON, '{"detail": "bad parameters"}')])
        with pytest.raises(Exception, match="rejected the run \\(HTTP 422\\): bad parameters"):
            trigger.run("migrate/prod")
        assert len(rx.requests) == 2 and slept == []


def test_cli_module_does_not_import_httpx_or_prefect() -> None:
    code = (
        "import sys; from migrator.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('httpx', 'prefect', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# --- against a real Prefect server and worker ----------------------------------------------------
FLOWS = """
from prefect import flow
from prefect.flow_runs import pause_flow_run


@flow
def ok_flow(x: int = 0, label: str = "none") -> int:
    print("ok_flow got", x, label)
    return x


@flow
def bad_flow() -> None:
    raise ValueError("boom from bad_flow: column patients.ssn does not exist")


@flow
def approval_flow() -> str:
    pause_flow_run(timeout=90)
    return "approved"
"""

DEPLOY = """
import sys
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.workers.process import ProcessWorker

src = sys.argv[1]
with get_client(sync_client=True) as client:
    for pool in ("trigger-tests", "trigger-idle"):
        client.create_work_pool(
            WorkPoolCreate(name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
        )
for fn, name, pool in [
    ("ok_flow", "test", "trigger-tests"),
    ("bad_flow", "test", "trigger-tests"),
    ("approval_flow", "test", "trigger-tests"),
    ("ok_flow", "idle", "trigger-idle"),  # no worker polls this pool: its runs stay Scheduled
]:
    flow.from_source(source=src, entrypoint=f"testflows.py:{fn}").deploy(
        name=name, work_pool_name=pool, print_next_steps=False, ignore_warnings=True
    )
"""


@dataclass
class Deployed:
    server: PrefectServer
    env: dict[str, str]

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return api_request(self.server.api_url, method, path, **kwargs)


def api_request(api_url: str, method: str, path: str, sleep=time.sleep, **kwargs: object) -> httpx.Response:  # type: ignore[no-untyped-def]
    """A test's own call to the Prefect API, retried like the product's client retries it.

    The server on SQLite answers 503 while its database is locked (CI saw it on /resume): a test
    helper that gives up on the first 503 fails the test for a reason the product handles.
    """
    started = time.monotonic()
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        r = httpx.request(method, f"{api_url}/{path}", timeout=10, **kwargs)  # type: ignore[arg-type]
        if r.status_code not in RETRY_STATUSES or attempt == RETRY_ATTEMPTS:
            break
        delay = _retry_delay(r, attempt)
        if time.monotonic() - started + delay > RETRY_BUDGET_SECONDS:
            break
        sleep(delay)
    r.raise_for_status()
    return r


def test_the_test_helper_retries_a_busy_prefect_api_like_the_product() -> None:
    """Regression (issue 11.8): the helper raised on a 503 from /resume, failing one run in three."""
    busy = (503, JSON, '{"exception_message": "Service Unavailable"}')
    with WebhookReceiver() as rx:
        rx.script([busy, (429, {**JSON, "Retry-After": "0"}, "{}"), (200, JSON, "{}")])
        slept: list[float] = []
        r = api_request(f"http://127.0.0.1:{rx.port}/api", "POST", "flow_runs/run-1/resume", sleep=slept.append,
                        json={})
        assert r.status_code == 200 and [q.status for q in rx.requests] == [503, 429, 200]
        assert len(slept) == 2 and slept[1] == 0
        rx.script([(500, JSON, "{}")])
        with pytest.raises(httpx.HTTPStatusError):  # what the product does not retry, the helper does not either
            api_request(f"http://127.0.0.1:{rx.port}/api", "GET", "flow_runs/run-1", sleep=slept.append)


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:  # noqa: F811
    """The test flows deployed from a local folder, and a process worker polling their pool."""
    project = tmp_path_factory.mktemp("trigger-project")
    (project / "testflows.py").write_text(FLOWS)
    (project / "deploy.py").write_text(DEPLOY)
    done = subprocess.run(
        [sys.executable, "deploy.py", str(project)],
        cwd=project,
        env=prefect_server.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with running_worker(prefect_server, "trigger-tests", cwd=project):
        yield Deployed(prefect_server, {**NO_AUTH, "PREFECT_API_URL": prefect_server.api_url})


def _start_cli(deployed: Deployed, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrator", "trigger", *args],
        cwd=ROOT,
        env=deployed.server.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    """stderr lines up to the first containing ``needle`` (pytest-timeout guards a hang)."""
    assert proc.stderr is not None
    seen: list[str] = []
    for raw in proc.stderr:
        seen.append(raw.rstrip("\n"))
        if needle in raw:
            return seen
    raise AssertionError(f"{needle!r} never printed; got: {seen}")


def _started_run_id(lines: list[str]) -> str:
    """The flow run id from the "started flow run NAME (ID) of ..." line; a retry warning may come first."""
    started = [ln for ln in lines if ln.startswith("started flow run ")]
    assert len(started) == 1, lines
    return started[0].split("(")[1].split(")")[0]


@SERVER
def test_completed_run_exits_0_and_prints_each_state(cli, deployed: Deployed) -> None:
    r = cli(
        "trigger",
        "ok-flow/test",
        "--param",
        "x=1",
        "--param",
        "label=blue",
        "--wait",
        "--poll",
        "0.5",
        "--json",
        env=deployed.env,
    )
    assert r.code == 0, r.err
    states = [ln.split()[1] for ln in r.err.splitlines() if ln[:4].isdigit()]
    assert states[0] == "SCHEDULED" and "RUNNING" in states and states[-1] == "COMPLETED"
    result = json.loads(r.out)
    assert result["state_type"] == "COMPLETED" and result["exit_code"] == 0 and result["error"] is None
    assert result["url"] == f"{deployed.server.ui_url}/runs/flow-run/{result['flow_run_id']}"
    run = deployed.api("GET", f"flow_runs/{result['flow_run_id']}").json()
    assert run["parameters"] == {"x": 1, "label": "blue"}  # 1 arrived as an integer, blue as a string
    assert run["state_type"] == "COMPLETED"


@SERVER
def test_failed_run_exits_1_with_the_failure_message(cli, deployed: Deployed) -> None:
    r = cli("trigger", "bad-flow/test", "--wait", "--poll", "0.5", env=deployed.env)
    assert r.code == EXIT_FAILED
    line = one_error_line(r.err)
    assert "of bad-flow/test ended Failed (FAILED)" in line
    assert "boom from bad_flow: column patients.ssn does not exist" in line
    assert "/runs/flow-run/" in line


@SERVER
def test_unknown_deployment_and_parameters_are_refused_before_a_run(cli, deployed: Deployed) -> None:
    # a name no test deploys (the session's server is shared: other modules deploy migrate/<env>)
    r = cli("trigger", "migrate/nowhere", "--wait", env=deployed.env)
    assert r.code == EXIT_CONFIG
    line = one_error_line(r.err)
    assert "deployment 'migrate/nowhere' not found on the Prefect API at http://127.0.0.1:" in line
    assert "`prefect deployment ls`" in line
    r = cli("trigger", "ok-flow/prod", env=deployed.env)
    assert "(deployments of flow 'ok-flow': ok-flow/idle, ok-flow/test)" in one_error_line(r.err)
    r = cli("trigger", "ok-flow/idle", "--param", "target=3", env=deployed.env)
    assert r.code == EXIT_CONFIG
    assert "--param target: deployment ok-flow/idle has no parameter 'target' (it takes: label, x)" in one_error_line(
        r.err
    )
    r = cli("trigger", "ok-flow/idle", "--param", "x=abc", env=deployed.env)
    assert r.code == EXIT_CONFIG
    assert "rejected the run (HTTP 409)" in one_error_line(r.err) and "'abc' is not of type 'integer'" in r.err


@SERVER
def test_without_wait_prints_the_run_and_the_idempotency_key_reuses_it(cli, deployed: Deployed) -> None:
    first = cli("trigger", "ok-flow/idle", "--idempotency-key", "ci-job-4711", "--json", env=deployed.env)
    assert first.code == 0, first.err
    run = json.loads(first.out)
    assert run["created"] is True and run["waited"] is False and run["state_type"] == "SCHEDULED"
    assert f"started flow run {run['flow_run_name']} ({run['flow_run_id']}) of ok-flow/idle" in first.err
    again = cli("trigger", "ok-flow/idle", "--idempotency-key", "ci-job-4711", env=deployed.env)
    assert again.code == 0
    assert run["flow_run_id"] in again.out and "existing run for idempotency key 'ci-job-4711'" in again.err
    assert run["url"] in again.out


@SERVER
def test_timeout_exits_5_saying_the_run_continues(cli, deployed: Deployed) -> None:
    r = cli("trigger", "ok-flow/idle", "--wait", "--timeout", "1.5", "--poll", "0.5", env=deployed.env)
    assert r.code == EXIT_TIMEOUT
    line = one_error_line(r.err)
    assert "timed out after" in line and "it is still Scheduled (SCHEDULED)" in line
    assert "continues on the Prefect server; see http://127.0.0.1:" in line


@SERVER
@pytest.mark.parametrize(
    ("state", "name", "message", "code"),
    [
        ("CANCELLED", "Cancelled", "cancelled by on-call", EXIT_CANCELLED),
        ("CRASHED", "Crashed", "worker process exited with code -9", EXIT_CRASHED),
    ],
)
def test_cancelled_and_crashed_runs_have_their_own_exit_codes(
    cli, deployed: Deployed, state: str, name: str, message: str, code: int
) -> None:
    idle = deployed.api("GET", "deployments/name/ok-flow/idle").json()["id"]
    label = f"end-{state.lower()}"

    def end_run_when_waiting() -> None:
        """What the UI or the infrastructure does to the run while the trigger waits for it."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            query = {"deployments": {"id": {"any_": [idle]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}
            runs = deployed.api("POST", "flow_runs/filter", json=query).json()
            mine = [fr for fr in runs if fr["parameters"].get("label") == label]
            if mine:
                deployed.api(
                    "POST",
                    f"flow_runs/{mine[0]['id']}/set_state",
                    json={"state": {"type": state, "message": message}, "force": True},
                )
                return
            time.sleep(0.2)

    t = threading.Thread(target=end_run_when_waiting)
    t.start()
    r = cli(
        "trigger",
        "ok-flow/idle",
        "--param",
        f"label={label}",
        "--wait",
        "--poll",
        "0.3",
        "--timeout",
        "60",
        env=deployed.env,
    )
    t.join()
    assert r.code == code
    assert f"ended {name} ({state}): {message}" in one_error_line(r.err)


@SERVER
def test_ctrl_c_stops_waiting_and_the_run_continues(deployed: Deployed) -> None:
    proc = _start_cli(deployed, "ok-flow/idle", "--wait", "--poll", "0.3")
    try:
        started = _read_until(proc, "SCHEDULED")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == EXIT_INTERRUPTED
    assert "stopped waiting (interrupted)" in err and "continues on the Prefect server" in err
    run_id = _started_run_id(started)
    assert deployed.api("GET", f"flow_runs/{run_id}").json()["state_type"] == "SCHEDULED"


@SERVER
def test_paused_run_says_approval_is_awaited_then_completes_when_resumed(deployed: Deployed) -> None:
    proc = _start_cli(deployed, "approval-flow/test", "--wait", "--poll", "0.5", "--timeout", "120")
    run_id = None
    try:
        lines = _read_until(proc, "waiting for approval in the UI")
        run_id = _started_run_id(lines)
        assert lines[-1].startswith(f"waiting for approval in the UI: {deployed.server.ui_url}/runs/flow-run/{run_id}")
        assert any(" PAUSED " in ln for ln in lines)
        deployed.api("POST", f"flow_runs/{run_id}/resume", json={})
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            reap(proc)
            if run_id:
                deployed.api(
                    "POST", f"flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLED"}, "force": True}
                )
    assert proc.returncode == 0, err
    assert "Completed (COMPLETED)" in out
    states = [ln.split()[1] for ln in [*lines, *err.splitlines()] if ln[:4].isdigit()]
    assert states[-3:] == ["PAUSED", "RUNNING", "COMPLETED"]  # running again after the approval
