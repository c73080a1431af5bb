"""The command reference of docs/commands.md, generated from the argparse parser itself.

``python -m migrator.cli_reference`` prints it; tests/test_docs.py checks that the block between
the ``commands:begin`` / ``commands:end`` markers of docs/commands.md is exactly this output, so a
new command or option cannot be left out of the docs.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from migrator.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, helps.get(name, "")
                yield from _commands(sub, f"{path} {name}")


def _argument(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return names
        return f"{names} {action.metavar or action.dest.upper()}"
    return str(action.metavar or action.dest)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown() -> str:
    parser = build_parser()
    out = ["| command | argument | meaning |", "| --- | --- | --- |"]
    for path, sub, help_ in _commands(parser, "migrator"):
        out.append(f"| `{path}` | | {_cell(help_)} |")
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help == argparse.SUPPRESS:  # the global options, described once below
                continue
            out.append(f"| | `{_cell(_argument(action))}` | {_cell(action.help or '')} |")
    out += ["", "Global options (every command, before or after it):", "",
            "| option | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            out.append(f"| `{_cell(_argument(action))}` | {_cell(action.help or '')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
