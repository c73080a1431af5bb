"""Parse a migration file with PostgreSQL's own parser (libpg_query through pglast).

The parse tree is taken as JSON (``parse_sql_json``), which is ~20x faster than building pglast's
Python node objects and is all the rules need. libpg_query reports statement locations in UTF-8
bytes; they are turned into character offsets here so every position is a character offset into
the file's text, then into 1-based line:column.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

from migrator.lint.model import Finding, finding
from migrator.sql import COMMENT_TOKENS, NonTransactional, classify, line_col, pg_parser, scan


@dataclass
class Statement:
    """One top-level statement: its node type, JSON body, and where it starts (first real token)."""

    kind: str
    node: dict[str, Any]
    start: int
    end: int
    line: int
    column: int
    text: str


@dataclass
class ParsedFile:
    """A file's text, tokens, statements and comments; ``error`` is set when it does not parse."""

    file: str
    sql: str
    tokens: list[Any] | None = None
    statements: list[Statement] = field(default_factory=list)
    comments: list[tuple[int, int, str]] = field(default_factory=list)
    error: Finding | None = None
    _non_transactional: list[NonTransactional] | None = field(default=None, repr=False, compare=False)

    def pos(self, offset: int) -> tuple[int, int]:
        return line_col(self.sql, offset)

    def non_transactional(self) -> list[NonTransactional]:
        """``migrator.sql.classify`` of the file (the engine's reading), computed once: structure and
        the safety rules both ask."""
        if self._non_transactional is None:
            self._non_transactional = classify(self.sql, self.tokens) if self.tokens is not None else []
        return self._non_transactional


class _ByteToChar:
    """Map UTF-8 byte offsets to character offsets (identity for ASCII text)."""

    def __init__(self, sql: str) -> None:
        self.ascii = sql.isascii()
        self.raw = b"" if self.ascii else sql.encode("utf-8")

    def __call__(self, b: int) -> int:
        if self.ascii:
            return b
        return len(self.raw[:b].decode("utf-8", errors="ignore"))


def byte_to_char(sql: str) -> _ByteToChar:
    """A map from libpg_query's UTF-8 byte offsets into ``sql`` to character offsets."""
    return _ByteToChar(sql)


def parse_file(file: str, sql: str) -> ParsedFile:
    """Scan and parse ``sql``; a syntax error becomes a MIG000 finding at file:line:column."""
    parser = pg_parser()
    pf = ParsedFile(file=file, sql=sql)
    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except Exception as exc:  # ParseError, or e.g. a statement nested too deeply
        msg = str(exc.args[0]) if exc.args else str(exc) or type(exc).__name__
        if "\n" in msg:  # "at or near" quotes the rest of an unterminated string: keep one line
            msg = msg.split("\n", 1)[0].rstrip() + ' ..."'
        loc = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) and exc.args[1] >= 0 else None
        line, col = line_col(sql, loc) if loc is not None else (None, None)
        pf.error = finding("MIG000", file, msg, line, col)
        pf.tokens = scan(sql)
        _collect_comments(pf)
        return pf
    pf.tokens = scan(sql)
    _collect_comments(pf)
    real_starts = [t.start for t in pf.tokens or () if t.name not in COMMENT_TOKENS]
    to_char = _ByteToChar(sql)
    for raw in tree.get("stmts", []):
        (kind, node), = raw["stmt"].items()
        b_start = raw.get("stmt_location", 0)
        b_len = raw.get("stmt_len", 0)
        start = to_char(b_start)
        end = to_char(b_start + b_len) if b_len else len(sql)
        i = bisect.bisect_left(real_starts, start)
        if i < len(real_starts) and real_starts[i] < end:
            start = real_starts[i]
        line, col = line_col(sql, start)
        pf.statements.append(Statement(kind, node, start, end, line, col, sql[start:end]))
    return pf


def _collect_comments(pf: ParsedFile) -> None:
    for t in pf.tokens or ():
        if t.name in COMMENT_TOKENS:
            pf.comments.append((t.start, t.end + 1, pf.sql[t.start : t.end + 1]))
