"""SQL text as the engine sees it: statement splitting, positions, and which files cannot run in a transaction.

The engine and the linter both use this module (the engine imports nothing from ``migrator.lint``).

Everything here works on PostgreSQL's own scanner (``pglast.parser.scan``), so comments, quoted
strings, quoted identifiers and dollar-quoted bodies are never mistaken for SQL: a ``BEGIN`` inside
a ``DO $$ ... $$`` block or a function body is a string token, not transaction control, and the
``BEGIN ATOMIC ... END`` of a SQL-standard function body is tracked so its inner ``;`` and ``END``
neither split the statement nor look like ``COMMIT``. The engine calls
``non_transactional_reason`` before every file, so it only scans (no full parse).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import Any

COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
SEMICOLON = "ASCII_59"

# First keyword(s) of a statement that controls the transaction itself.
_TX_CONTROL = {
    "BEGIN_P": "BEGIN",
    "START": "START TRANSACTION",
    "COMMIT": "COMMIT",
    "END_P": "END",
    "ROLLBACK": "ROLLBACK",
    "ABORT_P": "ABORT",
}


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a file: character span (end exclusive, no ``;``), text, 1-based line."""

    start: int
    end: int
    text: str
    line: int


@dataclass(frozen=True)
class StatementTokens:
    """The non-comment tokens of one top-level statement, with its character span."""

    start: int
    end: int  # exclusive
    tokens: list[Any]


@dataclass(frozen=True)
class NonTransactional:
    """One statement that forces the file out of a transaction, and why."""

    kind: str  # "transaction-control" or "no-transaction-block"
    keyword: str  # e.g. "BEGIN", "CREATE INDEX CONCURRENTLY"
    start: int  # character offset of the statement
    line: int
    reason: str


def line_col(sql: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of the 0-based character offset ``pos``; CRLF counts as one newline.

    Matches golang-migrate, which reports positions after turning CRLF into LF: the ``\\r`` sits
    before the ``\\n`` so it never shifts a column of the next line.
    """
    pos = max(0, min(pos, len(sql)))
    line = sql.count("\n", 0, pos) + 1
    col = pos - sql.rfind("\n", 0, pos)
    return line, col


def pg_parser() -> Any:
    """``pglast.parser`` (libpg_query), imported without executing ``pglast.ast`` and ``pglast.enums``.

    The extension's module init binds both (``from . import ast, enums``) but only ``parse_sql``'s
    node objects and the printers use them; ``scan``, ``parse_sql_json`` and ``split`` do not. They
    cost 40-50 ms of a 0.3 s cold ``validate``, so until pglast is imported they are registered as
    modules that execute their real code on first attribute access (any ``pglast.ast.X``,
    ``from pglast.enums import Y``): same module objects, loaded only when something needs them.
    """
    if "pglast" not in sys.modules:
        _defer_pglast_submodules(sys.modules)
    # lazy: `migrator status` loads this module; pglast.parser would add 17 modules
    from pglast import parser

    return parser


def _defer_pglast_submodules(modules: dict[str, Any]) -> None:
    package = importlib.util.find_spec("pglast")
    if package is None or not package.submodule_search_locations:
        return
    lock = threading.RLock()
    for short in ("enums", "ast"):
        found = PathFinder.find_spec(short, list(package.submodule_search_locations))
        if found is None or found.origin is None:
            return  # another pglast layout: import it as it is
        spec = importlib.util.spec_from_file_location(
            f"pglast.{short}", found.origin, submodule_search_locations=found.submodule_search_locations)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)

        def load(attr: str, module: Any = module, spec: Any = spec) -> Any:
            with lock:  # re-entrant: pglast.ast's code may touch pglast.enums while it loads
                if "__getattr__" in module.__dict__:  # pglast's modules define none: still deferred
                    del module.__dict__["__getattr__"]
                    spec.loader.exec_module(module)
            return getattr(module, attr)

        module.__dict__["__getattr__"] = load  # PEP 562: called only for attributes the module lacks yet
        modules[spec.name] = module


def scan(sql: str) -> list[Any] | None:
    """PostgreSQL's tokens for ``sql`` (comments included), or None when it does not even scan."""
    parser = pg_parser()

    try:
        return list(parser.scan(sql))
    except Exception:  # unterminated quote or comment: the parser will report it precisely
        return None


def statements_from_tokens(sql: str, tokens: list[Any]) -> list[StatementTokens]:
    """Group tokens into top-level statements on ``;``, skipping comments.

    ``BEGIN ATOMIC ... END`` (and any ``CASE ... END`` inside it) nests, so its ``;`` do not end
    the enclosing CREATE FUNCTION/PROCEDURE.
    """
    out: list[StatementTokens] = []
    current: list[Any] = []
    depth = 0
    prev = None
    for tok in tokens:
        name = tok.name
        if name in COMMENT_TOKENS:
            continue
        if name == SEMICOLON and depth == 0:
            if current:
                out.append(StatementTokens(current[0].start, current[-1].end + 1, current))
            current = []
            prev = None
            continue
        opens_atomic = name == "ATOMIC" and prev is not None and prev.name == "BEGIN_P" and len(current) > 1
        if opens_atomic or (depth > 0 and name == "CASE"):
            depth += 1
        elif depth > 0 and name == "END_P":
            depth -= 1
        current.append(tok)
        prev = tok
    if current:
        out.append(StatementTokens(current[0].start, current[-1].end + 1, current))
    return out


def _names(st: StatementTokens, limit: int = 8) -> list[str]:
    return [t.name for t in st.tokens[:limit]]


def classify(sql: str, tokens: list[Any] | None = None) -> list[NonTransactional]:
    """Every statement of ``sql`` that cannot run inside a transaction block, in file order."""
    if tokens is None:
        return list(_classify_text(sql))
    return _classify_tokens(sql, tokens)


@functools.lru_cache(maxsize=4096)
def _classify_text(sql: str) -> tuple[NonTransactional, ...]:
    """``classify`` of a whole text, remembered: the executor's preflight and its path choice both ask."""
    tokens = scan(sql)
    return () if tokens is None else tuple(_classify_tokens(sql, tokens))


def _classify_tokens(sql: str, tokens: list[Any]) -> list[NonTransactional]:
    found: list[NonTransactional] = []
    for st in statements_from_tokens(sql, tokens):
        hit = _classify_statement(st)
        if hit is None:
            continue
        kind, keyword, why = hit
        line = line_col(sql, st.start)[0]
        if kind == "transaction-control":
            reason = f"explicit transaction control ({keyword} at line {line}); the file manages its own transaction"
        else:
            reason = f"{keyword} at line {line} cannot run inside a transaction block{why}"
        found.append(NonTransactional(kind, keyword, st.start, line, reason))
    return found


def _classify_statement(st: StatementTokens) -> tuple[str, str, str] | None:
    names = _names(st)
    all_names = [t.name for t in st.tokens]
    first = names[0]
    second = names[1] if len(names) > 1 else ""
    if first in _TX_CONTROL:
        if first == "START" and second != "TRANSACTION":
            return None
        if first in ("COMMIT", "ROLLBACK") and second == "PREPARED":
            return ("no-transaction-block", f"{first} PREPARED", "")
        return ("transaction-control", _TX_CONTROL[first], "")
    if first == "PREPARE" and second == "TRANSACTION":
        return ("no-transaction-block", "PREPARE TRANSACTION", "")
    if first == "CREATE":
        rest = names[1:]
        if rest[:1] == ["UNIQUE"]:
            rest = rest[1:]
        if rest[:2] == ["INDEX", "CONCURRENTLY"]:
            return ("no-transaction-block", "CREATE INDEX CONCURRENTLY", "")
        if second == "DATABASE":
            return ("no-transaction-block", "CREATE DATABASE", "")
        if second == "TABLESPACE":
            return ("no-transaction-block", "CREATE TABLESPACE", "")
        if second == "SUBSCRIPTION":
            return ("no-transaction-block", "CREATE SUBSCRIPTION", " (when it creates a replication slot)")
        return None
    if first == "DROP":
        if names[1:3] == ["INDEX", "CONCURRENTLY"]:
            return ("no-transaction-block", "DROP INDEX CONCURRENTLY", "")
        if second == "DATABASE":
            return ("no-transaction-block", "DROP DATABASE", "")
        if second == "TABLESPACE":
            return ("no-transaction-block", "DROP TABLESPACE", "")
        if second == "SUBSCRIPTION":
            return ("no-transaction-block", "DROP SUBSCRIPTION", " (when it drops a replication slot)")
        return None
    if first == "REINDEX":
        if "CONCURRENTLY" in all_names:
            return ("no-transaction-block", "REINDEX CONCURRENTLY", "")
        target = next((n for n in names[1:] if n in ("INDEX", "TABLE", "SCHEMA", "DATABASE", "SYSTEM_P")), "")
        if target in ("SCHEMA", "DATABASE", "SYSTEM_P"):
            return ("no-transaction-block", f"REINDEX {target.removesuffix('_P')}", "")
        return None
    if first == "VACUUM":
        return ("no-transaction-block", "VACUUM", "")
    if first == "ALTER":
        if second == "SYSTEM_P":
            return ("no-transaction-block", "ALTER SYSTEM", "")
        if second == "DATABASE" and "TABLESPACE" in all_names and "SET" in all_names:
            return ("no-transaction-block", "ALTER DATABASE ... SET TABLESPACE", "")
        if second == "TABLE" and "DETACH" in all_names:
            i = all_names.index("DETACH")
            if "CONCURRENTLY" in all_names[i:]:
                return ("no-transaction-block", "DETACH PARTITION ... CONCURRENTLY", "")
        return None
    if first == "DISCARD" and second == "ALL":
        return ("no-transaction-block", "DISCARD ALL", "")
    if first == "CLUSTER" and len(all_names) == 1:
        return ("no-transaction-block", "CLUSTER (without a table)", "")
    return None


def non_transactional_reason(sql: str) -> str | None:
    """Why ``sql`` (a whole migration file) cannot run inside one transaction, or None.

    Reports the first such statement; the engine then runs the file without wrapping it.
    """
    found = classify(sql)
    return found[0].reason if found else None


def split_statements(sql: str) -> list[Statement]:
    """Each top-level statement of ``sql`` in file order (character offsets, end exclusive, no ``;``).

    Uses PostgreSQL's parser through ``pglast.split``; SQL that does not parse is split on the
    scanner's top-level ``;`` instead (pglast's own parser-less split drops statements that do not
    start with a keyword), and text that does not even scan is returned as one statement.
    """
    return list(_split(sql))


@functools.lru_cache(maxsize=4096)
def _split(sql: str) -> tuple[Statement, ...]:
    """``split_statements``, remembered (Statement is frozen): the engine checks a plan before it runs it."""
    return tuple(Statement(start, end, sql[start:end], line_col(sql, start)[0]) for start, end in _spans(sql))


def _spans(sql: str) -> list[tuple[int, int]]:
    # lazy: `migrator status` loads this module; pglast would add 17 modules
    import pglast

    try:
        return [(s.start, s.stop) for s in pglast.split(sql, only_slices=True)]
    except Exception:
        pass
    tokens = scan(sql)
    if tokens is None:
        stripped = sql.strip()
        if not stripped:
            return []
        start = sql.index(stripped[0])
        return [(start, start + len(stripped))]
    return [(st.start, st.end) for st in statements_from_tokens(sql, tokens)]


@dataclass(frozen=True)
class TransactionProblem:
    """An explicit ``BEGIN``/``COMMIT`` that does not pair up (validate's MIG115; the engine refuses it)."""

    hit: NonTransactional  # the statement at fault
    message: str


def explicit_transactions(
    sql: str, hits: list[NonTransactional]
) -> tuple[list[tuple[NonTransactional, NonTransactional | None]], list[TransactionProblem]]:
    """The file's own BEGIN ... COMMIT blocks (the end None when never committed) and its unmatched
    transaction control, in file order. One reading for the linter and the executor, so ``up``
    refuses exactly what ``validate`` reports."""
    blocks: list[tuple[NonTransactional, NonTransactional | None]] = []
    problems: list[TransactionProblem] = []
    open_begin: NonTransactional | None = None
    for h in hits:
        if h.kind != "transaction-control":
            continue
        if h.keyword in ("BEGIN", "START TRANSACTION"):
            if open_begin is not None:
                problems.append(TransactionProblem(h, (
                    f"{h.keyword} at line {h.line} while the transaction opened at line {open_begin.line} is "
                    "still open (PostgreSQL only warns and ignores it)")))
                continue
            open_begin = h
        elif open_begin is None:
            problems.append(TransactionProblem(h, f"{h.keyword} at line {h.line} has no BEGIN before it in this file"))
        else:
            blocks.append((open_begin, h))
            open_begin = None
    if open_begin is not None:
        blocks.append((open_begin, None))
        problems.append(TransactionProblem(open_begin, (
            f"BEGIN at line {open_begin.line} is never committed: the changes are rolled back when the session ends")))
    return blocks, problems


def unbalanced_transactions(sql: str) -> tuple[int, str] | None:
    """(line, message) of the first unpaired BEGIN/COMMIT of a whole file, or None."""
    problems = explicit_transactions(sql, classify(sql))[1]
    return (problems[0].hit.line, problems[0].message) if problems else None
