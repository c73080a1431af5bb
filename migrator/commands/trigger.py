"""``migrator trigger DEPLOYMENT``: start a Prefect deployment's run from CI/CD and gate on its outcome.

Exit codes: 0 the run completed (or, without --wait, was started); 1 it failed; 2 a setting or input
is wrong (PREFECT_API_URL, credentials, --param, unknown deployment); 3 crashed; 4 cancelled;
5 --timeout elapsed while it was still going; 6 the Prefect API was unreachable or answered an
error; 130 Ctrl-C while waiting. In every case but 0 one ``error: ...`` line says why, and for a
run that is still going, where to follow it. Only stdlib is imported here; httpx loads when used.
"""

from __future__ import annotations

import argparse
from typing import Any

from migrator.commands import Context
from migrator.errors import ConfigError
from migrator.output import error, line, print_json

DEFAULT_TIMEOUT = 3600.0
DEFAULT_POLL = 2.0


def _seconds(option: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r} must be a number of seconds") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{option} {text!r} must be > 0 seconds")
        return value

    return parse


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``trigger`` to the CLI."""
    p = sub.add_parser(
        "trigger",
        parents=[common],
        help="start a Prefect deployment's flow run (CD), optionally wait for its final state",
        description=(
            "Start a run of a Prefect deployment through the Prefect REST API (PREFECT_API_URL; "
            "PREFECT_API_KEY for Prefect Cloud or PREFECT_API_AUTH_STRING=user:password for a self-hosted "
            "server with basic auth). With --wait, print each state change and exit 0 only when the run "
            "COMPLETED. Exit codes: 0 completed (or started, without --wait), 1 failed, 2 bad setting or "
            "input, 3 crashed, 4 cancelled, 5 timed out (the run continues), 6 Prefect API unreachable or "
            "erroring, 130 interrupted (the run continues)."
        ),
    )
    p.add_argument("deployment", metavar="DEPLOYMENT", help="FLOW/DEPLOYMENT, e.g. migrate/prod")
    p.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="flow parameter; VALUE is JSON when it parses (42, true, null, {...}), else a string; repeatable",
    )
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit code = its outcome")
    p.add_argument(
        "--timeout",
        type=_seconds("--timeout"),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --wait: give up waiting after this long, exit 5 (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--poll",
        type=_seconds("--poll"),
        default=DEFAULT_POLL,
        metavar="SECONDS",
        help=f"with --wait: seconds between state checks (default {DEFAULT_POLL:g})",
    )
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a retried CD job with the same key gets the same run instead of a second one, e.g. the CI job id",
    )
    p.set_defaults(func=run_trigger)


def run_trigger(ctx: Context, args: argparse.Namespace) -> int:
    """Start the run, follow it with --wait, print the result; the exit code is the run's outcome."""
    # lazy: `migrator --help` loads this module; migrator.trigger would add 178 modules (httpx, rich, ...)
    from migrator import trigger

    params = trigger.parse_params(args.params)
    api = trigger.PrefectAPI.from_env()
    key = args.idempotency_key.strip() if args.idempotency_key else None
    if args.idempotency_key is not None and not key:
        raise ConfigError("--idempotency-key is empty; give a key such as the CI job id, or leave the option out")
    result = trigger.trigger(
        args.deployment,
        params,
        wait=args.wait,
        timeout=args.timeout,
        poll=args.poll,
        idempotency_key=key,
        api=api,
    )
    if ctx.json:
        print_json(result.to_dict())
    else:
        took = f" after {result.duration_seconds:.1f}s" if result.waited and result.duration_seconds else ""
        line(
            f"flow run {result.flow_run_name} ({result.flow_run_id}) of {result.deployment}: "
            f"{result.state_name} ({result.state_type}){took}; {result.url}"
        )
    message = result.error_message()
    if message:
        error(message)
    return result.exit_code
