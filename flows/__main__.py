"""Run a flow directly (Prefect's ephemeral API when no server is configured).

    uv run python -m flows migrate [--env local] [--target N] [--dry-run] [--always-run] [--json] [-v]
    uv run python -m flows status-monitor --env dev
    uv run python -m flows migrate-fleet --env tenants [--dry-run] [--max-parallel 8] [--max-failures 2]
    uv run python -m flows fleet-status --env tenants

Prints a short summary last (the run's result as JSON with --json): what changed, where the
backup is, what to do next and where the run's log is; a failed run ends with one ``error:`` line.
Prefect's and the tasks' log lines go to that log file (``.migrator/logs/``), not the terminal;
``-v`` prints them on stderr too (without tracebacks unless MIGRATOR_DEBUG=1; the Prefect API keeps
the full tracebacks).

Without PREFECT_API_URL the local API server is started at once, in parallel with importing
Prefect, instead of by Prefect's client after the imports (which also imports the whole server
into this process). A local ``migrate`` with nothing to do (clean, nothing pending, files validate)
is answered without Prefect in about half a second; ``--always-run`` runs the flow anyway.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from migrator import argtypes
from migrator.errors import MigratorError
from migrator.output import error
from migrator.redact import RedactingFilter, redact

# A HIPAA product's local runs phone nobody: no Prefect telemetry from the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The ephemeral API creates its database on first use; on a busy 2-core machine that exceeds
# Prefect's 20 s default and the fresh-machine command would fail for no reason of its own.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def main(argv: list[str] | None = None) -> int:
    # lazy: the argument errors and the quick path start without the CLI's modules
    from migrator.cli import Parser  # one-line argument errors, as the migrator CLI

    p = Parser(prog="python -m flows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("flow", choices=["migrate", "rollback", "status-monitor", "backup", "restore-drill",
                                    "migrate-fleet", "fleet-status"])
    p.add_argument("--env", default="local", help="environment (deployments/<env>.yaml)")
    p.add_argument("--target", type=argtypes.version, default=None, help="migrate: target version")
    p.add_argument("--steps", type=argtypes.count, default=1, help="rollback: migrations to revert")
    p.add_argument("--dry-run", action="store_true", help="migrate: validate and plan only")
    p.add_argument("--canary", type=int, default=None, help="migrate-fleet: canary databases (fleet: canary)")
    p.add_argument("--max-parallel", type=int, default=None, help="migrate-fleet: databases at a time")
    p.add_argument("--max-failures", type=int, default=None, help="migrate-fleet: failure budget")
    p.add_argument("--json", action="store_true", help="print the run's result as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print Prefect's and the tasks' log lines on stderr (they always go to the log file)")
    p.add_argument("--always-run", action="store_true",
                   help="migrate in a local environment: run the flow (backup, validate, verify) even when no "
                   "migration is pending; without it such a rerun only checks, in under a second")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="platformdirs")

    if args.flow == "migrate" and not (args.dry_run or args.always_run or args.target is not None):
        try:
            quick = nothing_to_do(args.env)
        except MigratorError:  # e.g. the database is unreachable: the flow retries, reports and alerts
            quick = None
        if quick is not None:
            print(json.dumps(quick, indent=2, default=str) if args.json else summary_line("migrate", args.env, quick))
            return 0

    # With Prefect's ephemeral API (no PREFECT_API_URL) there is no UI to answer the recovery form a
    # dirty failure pauses for: don't pause (0); the run ends dirty and says so, and
    # `migrator status` / `migrator recover` take it from there.
    recovery_wait = None if os.environ.get("PREFECT_API_URL") else 0
    log_path = _log_path(args.flow, args.env)
    api = None if os.environ.get("PREFECT_API_URL") else LocalApi.start(log_path)  # before prefect's import
    _configure_logging(log_path, verbose=args.verbose, tracebacks=bool(os.environ.get("MIGRATOR_DEBUG")))
    if api is not None:
        problem = api.wait()
        if problem:
            error(problem)
            return 1
    try:
        if args.flow == "migrate":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.migrate import migrate

            result = migrate(environment=args.env, target_version=args.target, dry_run=args.dry_run,
                             recovery_timeout_seconds=recovery_wait)
        elif args.flow == "migrate-fleet":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.fleet import migrate_fleet

            result = migrate_fleet(environment=args.env, target_version=args.target, dry_run=args.dry_run,
                                   canary=args.canary, max_parallel=args.max_parallel,
                                   max_failures=args.max_failures, children="in-process")
        elif args.flow == "fleet-status":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.fleet import fleet_status

            result = fleet_status(environment=args.env)
        elif args.flow == "rollback":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.rollback import rollback

            result = rollback(environment=args.env, steps=args.steps, recovery_timeout_seconds=recovery_wait)
        elif args.flow == "status-monitor":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.status_monitor import status_monitor

            result = status_monitor(environment=args.env)
        elif args.flow == "backup":
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.backup import backup

            result = backup(environment=args.env)
        else:
            # lazy: each flow module imports Prefect; only the chosen flow's is loaded
            from flows.restore_drill import restore_drill

            result = restore_drill(environment=args.env)
    except MigratorError as exc:
        _print_log_hint(log_path)
        error(str(exc))
        return 1
    except Exception as exc:  # the flow run failed: Prefect has logged the details
        _print_log_hint(log_path)
        error(f"{args.flow} flow run failed ({type(exc).__name__}): {exc}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(summary_line(args.flow, args.env, result, log=_shown(log_path)))
    return 0


def nothing_to_do(env_name: str) -> dict[str, object] | None:
    """The result of a local ``migrate`` that would change nothing, found without Prefect; else None.

    A local environment (no approval, plain settings) whose database is clean, has no pending
    migration and whose files validate with no error (drift included) gets no flow run: the flow
    would only back up an unchanged database and verify what this already read. Anything else
    (pending work, a dirty database, a finding, a staging or production environment) runs the flow.
    """
    # lazy: the quick path (nothing pending) answers in under a second, without Prefect
    from tasks.environment import is_local, load_environment

    started = time.monotonic()
    env = load_environment(env_name)
    if not is_local(env_name, env.raw) or env.approval_required:
        return None
    # lazy: the quick path (nothing pending) answers in under a second, without Prefect
    from migrator.engine import Migrator
    from migrator.lint import validate_folder

    st = Migrator(env.settings).status()
    if st.dirty or st.pending or not st.version_has_file:
        return None
    report = validate_folder(env.settings.migrations_path, settings=env.settings, drift=True)
    if report.errors:
        return None
    return {
        "kind": "migrate", "environment": env_name, "outcome": "no change", "database": st.database,
        "version_before": st.version, "dirty_before": False, "version_after": st.version, "dirty_after": False,
        "backup_key": None, "backup_url": None, "steps": [], "flow_run": None,
        "next_step": "nothing to do: no migration is pending (checked without a flow run; --always-run runs the "
                     "flow: backup, validate, verify)",
        "message": f"migrate {env_name} no change. Now: database {st.database} at version "
                   f"{'none' if st.version == -1 else st.version}, dirty: no",
        "duration_seconds": round(time.monotonic() - started, 1),
    }


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _print_log_hint(log_path: Path) -> None:
    if log_path.exists():
        sys.stderr.write(f"log: {_shown(log_path)} (-v prints it on the terminal)\n")


def _log_path(flow: str, env: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(os.environ.get("MIGRATOR_LOG_DIR") or Path(".migrator") / "logs")
    safe_env = "".join(c if c.isalnum() or c in "-_" else "_" for c in env)
    return folder / f"{flow}-{safe_env}-{stamp}-{os.getpid()}.log"


class LocalApi:
    """Prefect's local API server (what its client starts when no PREFECT_API_URL is set), started by
    us before Prefect is imported so the two overlap; stopped when this process exits."""

    PORT_RETRIES = 3  # the free port is chosen before the server binds it: another process may take it first

    def __init__(self, log_path: Path) -> None:
        self.log_path, self.url, self.attempts, self.log_offset = log_path, "", 0, 0
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, log_path: Path) -> LocalApi | None:
        api = cls(log_path)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            api.spawn()
        except OSError:
            return None  # no log folder: let Prefect's client start its server as usual
        atexit.register(api.stop)
        return api

    def spawn(self, port: int = 0) -> None:
        """Start the server on ``port`` (0: a free one, chosen as Prefect does) and point the client at it."""
        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        with open(self.log_path, "ab") as out:  # the server writes into it until it stops
            self.log_offset = out.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
                 "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )
        self.attempts += 1
        self.url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = self.url

    def _lost_its_port(self) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return b"address already in use" in f.read()
        except OSError:
            return False

    def wait(self) -> str | None:
        """None once the API answers; else one line saying why it did not."""
        # lazy: only a local API server start needs httpx; the quick path does not
        import httpx

        assert self.proc is not None
        limit = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120)
        deadline = time.monotonic() + limit
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None and self._lost_its_port() and self.attempts < self.PORT_RETRIES:
                    self.spawn()  # another process bound the port between our choice and the server's bind
                    continue
                if code is not None:
                    return (f"the local Prefect API server exited with code {code} before it answered; its output "
                            f"is in {_shown(self.log_path)} (or set PREFECT_API_URL to a running server)")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return None
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        return (f"the local Prefect API server did not answer within {limit:.0f} s "
                "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its output is in "
                f"{_shown(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def summary_line(flow: str, env: str, result: object, log: str | None = None) -> str:
    """The lines a person reads: what happened to which database, where the backup is (a path for
    file://, else its URL), what to do next and where the run's log is."""
    if not isinstance(result, dict):
        return redact(f"{flow} {env}: {result}")
    r: dict[str, object] = result

    def v(x: object) -> str:
        return "none" if x in (None, -1) else str(x)

    parts = [f"{flow} {env}: {r.get('outcome', 'done')}"]
    if "database" in r:
        before, after = r.get("version_before"), r.get("version_after")
        parts.append(f"{r['database']} version {v(before)}" + (f" -> {v(after)}" if after != before else ""))
    steps = r.get("steps")
    if isinstance(steps, list) and steps:
        names = ", ".join(str(s.get("label") or f"{s.get('version')}_{s.get('name')}")
                          for s in steps[:3] if isinstance(s, dict))
        parts.append(f"{len(steps)} migration(s) ({names}{', ...' if len(steps) > 3 else ''})")
    plan = r.get("plan")
    if r.get("outcome") == "dry run" and isinstance(plan, list):
        parts.append(f"{len(plan)} migration(s) would run")
    counts = r.get("counts")
    if isinstance(counts, dict):  # migrate-fleet: how many databases ended how
        parts.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + " databases")
    if r.get("duration_seconds") is not None:
        parts.append(f"{r['duration_seconds']} s")
    lines = ["; ".join(parts)]
    backup = _backup_location(r)
    if backup:
        lines.append(f"backup: {backup}")
    lines.append(f"next: {_next_step(flow, env, r)}")
    lines.append(f"log: {log} (-v prints it on the terminal; --json prints the full result)" if log
                 else "(--json prints the full result)")
    return redact("\n".join(lines))


def _backup_location(r: dict[str, object]) -> str | None:
    """Where the backup is, as something to open: a file:// URL as its path, anything else as the URL."""
    url = r.get("backup_url")
    if isinstance(url, str) and url:
        if url.startswith("file://"):
            return unquote(urlsplit(url).path)
        return url
    key = r.get("backup_key") or r.get("key")
    return str(key) if key else None


def _next_step(flow: str, env: str, r: dict[str, object]) -> str:
    given = r.get("next_step")
    if isinstance(given, str) and given:
        return given
    where = "" if env == "local" else f" --env {env}"
    # what a person on a fresh clone can type: `migrator` is not on PATH outside the venv
    status = "`make migrate-status`" if env == "local" else f"`.venv/bin/migrator status{where}`"
    outcome = r.get("outcome")
    if flow == "migrate":
        if outcome == "dry run":
            return f"`python -m flows migrate{where}` applies them"
        if outcome == "no change":
            return "nothing to do: no migration is pending"
        if r.get("steps"):
            return f"{status} shows the state; `python -m flows rollback{where}` reverts the last migration"
    if flow == "rollback" and r.get("steps"):
        return f"fix the migration, then `python -m flows migrate{where}`"
    return f"{status} shows the state"


def _configure_logging(log_path: Path, *, verbose: bool, tracebacks: bool) -> None:
    """Prefect's and the tasks' log lines into ``log_path``; on the terminal only with ``verbose``.

    On the terminal a failed task's line is kept but its traceback dropped (unless ``tracebacks``);
    the log file and the API log handler (the UI) keep it. The record is copied for that.
    """
    # lazy: Prefect is imported after the local API server was started (module docstring)
    import prefect.main  # noqa: F401  - configures Prefect's logging handlers
    from prefect.logging.handlers import PrefectConsoleHandler

    stream = None
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - shared by the handlers below
    except OSError:
        verbose = True  # no writable log folder: keep Prefect's console lines instead
    seen: set[int] = set()
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for handler in list(lg.handlers):
            if isinstance(handler, PrefectConsoleHandler) and id(handler) not in seen:
                seen.add(id(handler))
                if stream is not None:  # the same lines as Prefect's console, with tracebacks
                    to_file = logging.StreamHandler(stream)
                    to_file.setLevel(max(handler.level, logging.INFO))
                    to_file.setFormatter(handler.formatter)
                    to_file.addFilter(RedactingFilter())
                    lg.addHandler(to_file)
                if not verbose:
                    handler.setLevel(logging.CRITICAL + 1)
                    continue
                if tracebacks:
                    continue
                original = handler.format

                def format_line(record: logging.LogRecord, _original=original) -> str:  # type: ignore[no-untyped-def]
                    if record.exc_info or record.exc_text:
                        record = copy.copy(record)
                        record.exc_info, record.exc_text = None, None
                    return _original(record)

                handler.format = format_line  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
