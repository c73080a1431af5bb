"""Is a markdown text's every table a GitHub-flavoured markdown table? (markdown-it-py, which rich
brings, parses GFM tables the way GitHub and the Prefect UI render them.)

``table_problems(md)`` lists each block of ``|`` lines that does not parse as a table, or whose rows
have another number of cells than its header; empty when every table is sound.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")


def cells(line: str) -> int:
    """The number of cells of a ``| a | b |`` row (escaped pipes are content)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return len(re.split(r"(?<!\\)\|", body))


def pipe_blocks(md: str) -> list[list[str]]:
    """Consecutive lines starting with ``|``, outside fenced code."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in md.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            current.append(line)
            continue
        if current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def table_problems(md: str) -> list[str]:
    problems = []
    blocks = pipe_blocks(md)
    for block in blocks:
        head = block[0].strip()
        if len(block) < 2 or not SEPARATOR.match(block[1].strip()):
            problems.append(f"no valid separator under {head!r}: {block[1:2]}")
            continue
        want = cells(block[0])
        if cells(block[1]) != want:
            problems.append(f"separator of {head!r} has {cells(block[1])} cells, the header {want}")
        for row in block[2:]:
            if cells(row) != want:
                problems.append(f"row {row!r} has {cells(row)} cells, its header {head!r} {want}")
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    tables = sum(1 for t in tokens if t.type == "table_open")
    if tables != len(blocks):
        problems.append(f"{len(blocks)} blocks of | lines but {tables} rendered tables")
    return problems


def field(md: str, name: str) -> str | None:
    """The value of the ``| name | value |`` row of a two-column table."""
    m = re.search(rf"^\| {re.escape(name)} \| (.*?) \|\s*$", md, re.MULTILINE)
    return m.group(1) if m else None
