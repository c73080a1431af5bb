"""Human (rich) and machine (--json) output for CLI commands.

rich is imported only when a human table is printed, so ``--json`` and error paths stay fast.
Everything printed passes through ``redact`` first.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from migrator.redact import redact


def _console(stderr: bool = False) -> Any:
    # lazy: every command loads this module; rich.console would add 54 modules
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def via_make() -> bool:
    """True when the Makefile's ``migrate-*`` targets run the command (they set MIGRATOR_VIA_MAKE=1)."""
    return os.environ.get("MIGRATOR_VIA_MAKE") == "1"


def suggest(cli: str, make: str | None = None) -> str:
    """A command to suggest, as the person typed theirs: ``make migrate-...`` under make, else ``migrator ...``.

    Without a make form, the CLI is named by its path in the venv (what the Makefile runs).
    """
    if not via_make():
        return cli
    return make if make is not None else ".venv/bin/" + cli


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout, credentials redacted."""
    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
    sys.stdout.flush()


def write_stdout(text: str) -> None:
    """Text on stdout as is (credentials redacted), ending with one newline."""
    sys.stdout.write(redact(text).rstrip("\n") + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A progress or result line for people, on stderr so --json stdout stays parseable."""
    sys.stderr.write(redact(message) + "\n")
    sys.stderr.flush()


def error(message: str) -> None:
    """The one-line error a command ends with."""
    sys.stderr.write("error: " + redact(message).replace("\n", " ") + "\n")
    sys.stderr.flush()


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    styles: Callable[[Sequence[Any]], str | None] | None = None,
    caption: str | None = None,
) -> None:
    """Print a rich table on stdout; ``styles`` may colour a row (e.g. red for dirty).

    Into a pipe or file the table is plain aligned text with nothing cut (rich would squeeze it
    into 80 columns and draw boxes that ``grep``/``awk`` then have to step around).
    """
    if not is_terminal():
        plain_table(title, columns, rows, caption=caption)
        return
    # lazy: every command loads this module; rich.table would add 46 modules
    from rich.table import Table

    t = Table(title=title, caption=redact(caption) if caption else None, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(redact("" if v is None else v) for v in row), style=styles(row) if styles else None)
    _console().print(t)


def is_terminal() -> bool:
    """True when stdout is an interactive terminal (tables, colours); False in pipes, files and CI."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def plain_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str | None = None
) -> None:
    """Columns separated by two spaces and padded to the widest cell; multi-line cells joined with ' / '."""
    cells = [[redact("" if v is None else str(v)).replace("\n", " / ") for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = []
    if title:
        out.append(redact(title))
    for row in [list(columns), *cells]:
        out.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if caption:
        out.append(redact(caption))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


def line(message: str, style: str | None = None) -> None:
    """A line on stdout for people (rich markup disabled so file names print verbatim)."""
    if not is_terminal():
        sys.stdout.write(redact(message) + "\n")
        sys.stdout.flush()
        return
    _console().print(redact(message), style=style, markup=False)
