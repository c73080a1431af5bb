"""Headless Debian Chromium driven by playwright, for looking at the Prefect UI for real.

Never ``playwright install``: the machine's ``/usr/bin/chromium`` is used, offline, loopback only.
``chromium()`` is None when it is absent (tests then skip their browser part).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return None
    try:
        import playwright  # noqa: F401
    except ImportError:
        return None
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@dataclass
class Actions:
    """Counts what a person does in the UI: each navigation, click, choice and typed field is one."""

    done: list[str] = field(default_factory=list)

    def __call__(self, what: str) -> None:
        self.done.append(what)

    @property
    def count(self) -> int:
        return len(self.done)


@contextmanager
def browser_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    exe = chromium()
    assert exe is not None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS)
        try:
            page = b.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            b.close()


@contextmanager
def migrate_paused_for_approval(api_url: str, env: dict[str, str], log: Path,
                                timeout: float) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m flows migrate --env prod`` (its output in ``log``) once its run is Paused for approval
    on the server at ``api_url``: yields (the process, the run id); the process group is stopped on the
    way out if it is still running."""
    from conftest import ROOT

    with log.open("wb") as out:
        flow = subprocess.Popen([sys.executable, "-m", "flows", "migrate", "--env", "prod"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield flow, _paused_run(api_url, flow, log, timeout)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGTERM)
            flow.wait(timeout=60)


def open_resume_dialog(page: Any, ui_url: str, run_id: str) -> Any:
    """The run's page in the UI, its Resume button clicked: the dialog with the run's input form."""
    page.goto(f"{ui_url}/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Resume").first.click()
    return page.get_by_role("dialog")


def _paused_run(api_url: str, flow: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """The id of the first flow run that is Paused (for approval) on the server at ``api_url``;
    fails with the flow's log when the flow process ends first or nothing pauses in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api_url}/flow_runs/filter", timeout=10,
                          json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}).json()
        if runs:
            return str(runs[0]["id"])
        assert flow.poll() is None, log.read_text()
        time.sleep(0.5)
    raise AssertionError("the run never paused for approval:\n" + log.read_text())
