"""Folder and file structure: pairs, duplicates, gaps, names, and transaction behaviour.

File-level problems come from ``migrator.files.load`` (the same checks the engine refuses to
migrate on) and are turned into findings here; gaps, naming style and the statements that force
the non-transactional path are added on top.
"""

from __future__ import annotations

import itertools

from migrator.files import NAME_RE, MigrationSet, Problem
from migrator.lint.model import ERROR, WARNING, Finding, finding
from migrator.lint.parse import ParsedFile
from migrator.sql import NonTransactional, explicit_transactions, statements_from_tokens

PROBLEM_RULES = {
    "bad-name": "MIG100",
    "bad-extension": "MIG101",
    "bad-version": "MIG102",
    "unreadable": "MIG103",
    "encoding": "MIG104",
    "empty": "MIG105",
    "duplicate": "MIG106",
    "name-mismatch": "MIG107",
    "missing-up": "MIG108",
    "missing-down": "MIG109",
    "not-a-migration": "MIG110",
}

# Titles that say nothing about the change.
VAGUE_NAMES = frozenset(
    "migration migrations update updates change changes fix fixes misc temp tmp test wip new stuff "
    "schema db database patch hotfix".split()
)
# golang-migrate's default (non -seq) versions are UTC timestamps; gaps are normal there.
TIMESTAMP_VERSION = 10**11


def problem_findings(problems: list[Problem]) -> list[Finding]:
    """Findings for the problems ``files.load`` found while reading the folder."""
    out = []
    for p in problems:
        rule = PROBLEM_RULES.get(p.code, "MIG100")
        out.append(finding(rule, p.file, p.message, severity=WARNING if p.severity == WARNING else ERROR))
    return out


def folder_findings(mset: MigrationSet) -> list[Finding]:
    """Gaps between versions and non-descriptive titles."""
    out: list[Finding] = []
    versions = mset.versions
    for prev, cur in itertools.pairwise(versions):
        if cur < TIMESTAMP_VERSION and cur - prev > 1:
            mig = mset.get(cur)
            f = mig.up or mig.down if mig else None
            missing = f"{prev + 1}" if cur - prev == 2 else f"{prev + 1}..{cur - 1}"
            out.append(
                finding(
                    "MIG111",
                    str(f.path) if f else str(mset.directory),
                    f"version {cur} follows {prev}: version(s) {missing} are missing; check no migration was lost "
                    "in a merge, or renumber",
                )
            )
    for mig in mset:
        f = mig.up or mig.down
        if f is None:
            continue
        name = mig.name
        if not NAME_RE.match(name):
            out.append(
                finding(
                    "MIG112",
                    str(f.path),
                    f"title {name!r} is not snake_case (lower-case letters, digits, underscores); "
                    "e.g. add_patient_table",
                )
            )
        elif name in VAGUE_NAMES or len(name) < 4:
            out.append(
                finding(
                    "MIG112",
                    str(f.path),
                    f"title {name!r} does not say what changes; use e.g. add_patient_table or "
                    "add_email_verification_index",
                )
            )
    return out


def transaction_findings(pf: ParsedFile) -> list[Finding]:
    """How the file's statements interact with the transaction migrator wraps each file in."""
    tokens = pf.tokens
    if tokens is None:
        return []
    hits = pf.non_transactional()
    if not hits:
        return []
    out: list[Finding] = []
    explicit_ranges = _explicit_transactions(pf, hits, out)
    n_statements = len(statements_from_tokens(pf.sql, tokens))
    _outside_transaction_findings(pf, hits, explicit_ranges, n_statements, out)
    return out


def _explicit_transactions(pf: ParsedFile, hits: list[NonTransactional], out: list[Finding]) -> list[tuple[int, int]]:
    """The file's own BEGIN ... COMMIT ranges (MIG114), and its unmatched ones (MIG115), as
    ``migrator.sql.explicit_transactions`` reads them (the engine refuses the same MIG115 files)."""
    file = pf.file
    blocks, problems = explicit_transactions(pf.sql, hits)
    found: list[tuple[int, Finding]] = []
    for p in problems:
        found.append((p.hit.start, finding("MIG115", file, p.message, p.hit.line, pf.pos(p.hit.start)[1],
                                           offset=p.hit.start)))
    ranges: list[tuple[int, int]] = []
    for begin, end in blocks:
        ranges.append((begin.start, end.start if end is not None else len(pf.sql)))
        if end is not None:
            found.append((begin.start, finding(
                "MIG114", file,
                f"explicit transaction: BEGIN at line {begin.line}, {end.keyword} at line {end.line}; migrator "
                "runs the file as is and records the version outside this transaction",
                begin.line, pf.pos(begin.start)[1], offset=begin.start,
            )))
    out.extend(f for _pos, f in sorted(found, key=lambda x: x[0]))
    return ranges


def _outside_transaction_findings(pf: ParsedFile, hits: list[NonTransactional], explicit_ranges: list[tuple[int, int]],
                                  n_statements: int, out: list[Finding]) -> None:
    """Statements that cannot run in a transaction: inside the file's own (MIG116), or alone or not (MIG113/117)."""
    file = pf.file
    for h in hits:
        if h.kind == "transaction-control":
            continue
        col = pf.pos(h.start)[1]
        if any(a < h.start < b for a, b in explicit_ranges):
            out.append(
                finding(
                    "MIG116",
                    file,
                    f"{h.keyword} at line {h.line} is inside the file's own BEGIN ... COMMIT; PostgreSQL refuses it",
                    h.line,
                    col,
                    offset=h.start,
                )
            )
            continue
        out.append(finding("MIG113", file, f"runs outside a transaction: {h.reason}", h.line, col, offset=h.start))
        if n_statements > 1:
            out.append(
                finding(
                    "MIG117",
                    file,
                    f"{h.keyword} at line {h.line} shares the file with {n_statements - 1} other statement(s): "
                    "golang-migrate runs a file as one implicit transaction, where it fails, and a failure "
                    "half-way leaves the database dirty",
                    h.line,
                    col,
                    offset=h.start,
                )
            )
