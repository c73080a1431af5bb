"""``migrator embedded url|psql|stop|status``: the embedded PostgreSQL without Python one-liners.

The embedded server (used when no DATABASE_URL is set) keeps running between commands; these
subcommands show where it is, open psql on it, and stop it. They always act on the embedded
server of this folder (``MIGRATOR_EMBEDDED_DIR``, default ``.migrator/pgdata``), whatever
DATABASE_URL says.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migrator import output
from migrator.commands import Context

EXIT_NOT_RUNNING = 3


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "embedded",
        parents=[common],
        help="the embedded PostgreSQL: url, psql, stop, status",
        description="The embedded PostgreSQL used when no DATABASE_URL is set (data in MIGRATOR_EMBEDDED_DIR, "
        "default .migrator/pgdata).",
    )
    actions = p.add_subparsers(dest="embedded_command", metavar="ACTION", required=True)
    a = actions.add_parser("url", parents=[common], help="start it if needed and print its URL (for DATABASE_URL=...)")
    a.set_defaults(func=cmd_url)
    a = actions.add_parser("psql", parents=[common], help="start it if needed and open psql on it (extra "
                           "arguments after -- go to psql)")
    a.add_argument("psql_args", nargs=argparse.REMAINDER, help="arguments for psql, e.g. -- -c 'select 1'")
    a.set_defaults(func=cmd_psql)
    a = actions.add_parser("stop", parents=[common], help="stop it (the data stays; the next command starts it)")
    a.set_defaults(func=cmd_stop)
    a = actions.add_parser("status", parents=[common], help="running or not, pid, data folder, URL (exit 3 when "
                           "stopped)")
    a.set_defaults(func=cmd_status)


@dataclass
class EmbeddedState:
    """What postmaster.pid says, checked against the live process."""

    running: bool
    data_dir: str
    pid: int | None = None
    url: str | None = None
    version: str | None = None


def _data_dir(ctx: Context) -> Path:
    return ctx.settings.embedded_dir.expanduser().resolve()


def state(data_dir: Path, database: str = "askfrank") -> EmbeddedState:
    """Read ``postmaster.pid`` (pid, socket folder) without starting anything."""
    version_file = data_dir / "PG_VERSION"
    version = version_file.read_text().strip() if version_file.exists() else None
    st = EmbeddedState(running=False, data_dir=str(data_dir), version=version)
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return st
    st.running, st.pid = True, pid
    socket_dir = lines[4] if len(lines) > 4 and lines[4] else str(data_dir)
    st.url = f"postgresql://postgres@/{database}?host={socket_dir}"
    return st


def cmd_url(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.embedded would add 195 modules (psycopg, asyncio, ...)
    from migrator import embedded

    url = embedded.server_url(_data_dir(ctx))
    if ctx.json:
        output.print_json({"url": url})
    else:
        print(url)
    return 0


def cmd_psql(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.embedded would add 195 modules (psycopg, asyncio, ...)
    from migrator import embedded

    url = embedded.server_url(_data_dir(ctx))
    psql = embedded.bin_dir() / "psql"
    extra = [a for a in args.psql_args if a != "--"] if args.psql_args[:1] == ["--"] else list(args.psql_args)
    os.execv(str(psql), [str(psql), url, *extra])  # replaces this process: psql owns the terminal
    return 0  # pragma: no cover


def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    # lazy: `migrator --help` loads this module; migrator.embedded would add 195 modules (psycopg, asyncio, ...)
    from migrator import embedded

    data_dir = _data_dir(ctx)
    stopped = embedded.stop(data_dir)
    if ctx.json:
        output.print_json({"stopped": stopped, "data_dir": str(data_dir)})
    elif stopped:
        output.info(f"stopped the embedded PostgreSQL in {data_dir} (data kept; the next command starts it again)")
    else:
        output.info(f"the embedded PostgreSQL in {data_dir} was not running")
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    st = state(_data_dir(ctx))
    if ctx.json:
        output.print_json(asdict(st))
    elif st.running:
        print(f"running: PostgreSQL {st.version} pid {st.pid}, data {st.data_dir}, url {st.url}")
    elif st.version:
        print(f"stopped: PostgreSQL {st.version}, data {st.data_dir} (the next migrator command starts it)")
    else:
        print(f"not created: no data in {st.data_dir} (the first migrator command without DATABASE_URL creates it)")
    return 0 if st.running else EXIT_NOT_RUNNING
