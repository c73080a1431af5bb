"""HIPAA checks from the team's guide: no sensitive data in migration files, and a business
justification in every up file's header.

Only string literals and comments are searched (PostgreSQL's scanner tells them apart from
identifiers), so a column named ``ssn`` or ``email`` is fine and a value ``'123-45-6789'`` is not.
Messages name the kind of data and its line, never the value itself: the report ends up in CI
logs, which must not receive the data either.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from migrator.lint.model import Finding, finding
from migrator.lint.parse import ParsedFile, byte_to_char
from migrator.sql import COMMENT_TOKENS

LITERAL_TOKENS = frozenset({"SCONST", "USCONST"})

_RESERVED_EMAIL_DOMAINS = re.compile(
    r"(^|\.)(example\.(com|org|net)|[a-z0-9-]+\.(example|test|invalid|localhost)|example|test|invalid|localhost)$"
)

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("a US Social Security number", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")),
    ("an e-mail address", re.compile(r"[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})")),
    (
        "a phone number",
        re.compile(r"(?<![\d-])(?:\+?1[-.\s]?)?\(?[2-9]\d{2}\)?[-.\s]\d{3}[-.\s]\d{4}(?![\d-])|\+[1-9]\d{9,14}\b"),
    ),
    ("a medical record number", re.compile(r"(?i)\bMRN[-_:#\s]*\d{4,}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Stripe key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{16,}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")),
    ("a password hash", re.compile(r"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}|\$argon2(id|i|d)\$")),
    (
        "a password, key or token assignment",
        re.compile(r"(?i)\b(password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|token)\s*[:=]\s*\S{4,}"),
    ),
]

_SECRET_COLUMN = re.compile(r"(?i)(pass(word|wd)?|secret|token|api_?key|private_?key|credential)")
_JUSTIFICATION = re.compile(r"(?i)\b(?:business\s+)?justification\s*:\s*(.*)")
_PLACEHOLDER = re.compile(r"(?i)^(todo|tbd|fixme|xxx|n/?a|none|-|\.\.\.)\b")


def _phone_is_fictional(text: str) -> bool:
    digits = re.sub(r"\D", "", text)[-10:]
    return len(digits) == 10 and digits[3:6] == "555" and digits[6:8] == "01"


_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "credential",
                           "credentials", "pin"})
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
                           ("auth", "token"), ("client", "secret")})
# a column about a secret, not holding one: password_changed_at, token_type, api_key_id, ...
_NOT_SECRET_LAST = frozenset({"type", "kind", "hint", "id", "expires", "expiry", "at", "on", "name", "length",
                              "count", "policy", "format", "version", "algorithm", "algo", "url", "set",
                              "changed", "updated", "required", "enabled", "reset", "attempts", "prefix", "scope",
                              "scopes", "salt", "hash", "hashed", "digest", "encrypted", "fingerprint"})
_HASHED = re.compile(r"^(\$(2[abxy]|argon2(id|i|d)|pbkdf2[-_a-z0-9]*|scrypt|[156])\$|SCRAM-SHA-256\$|md5[0-9a-f]{32}$"
                     r"|[0-9a-f]{64}$|[0-9a-f]{128}$)")


def is_secret_column(name: str) -> bool:
    """Whether a column named ``name`` holds a password, token or key (its value must never be a literal)."""
    parts = [p for p in re.split(r"[^a-z0-9]+", name.lower()) if p]
    if not parts or parts[-1] in _NOT_SECRET_LAST:
        return False
    return any(p in _SECRET_WORDS for p in parts) or any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def _literal(node: object) -> tuple[str, int] | None:
    """(value, byte location) of a string constant, also through a cast (``'x'::text``)."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        return _literal(node["TypeCast"].get("arg"))
    const = node.get("A_Const")
    if const and "sval" in const:
        return const["sval"].get("sval", ""), const.get("location", -1)
    return None


def _assignments(kind: str, node: Any) -> list[tuple[str, Any]]:
    """(column, value expression) pairs an INSERT, UPDATE, CREATE TABLE or ALTER TABLE writes."""
    pairs: list[tuple[str, Any]] = []

    def targets(items: Any) -> None:
        for t in items or ():
            rt = t.get("ResTarget") or {}
            val = rt.get("val") or {}
            if "MultiAssignRef" in val:  # SET (a, b) = ('x', 'y')
                mar = val["MultiAssignRef"]
                args = ((mar.get("source") or {}).get("RowExpr") or {}).get("args") or []
                i = mar.get("colno", 0) - 1
                val = args[i] if 0 <= i < len(args) else {}
            pairs.append((rt.get("name") or "", val))

    def column_defaults(col: Any) -> None:
        for c in col.get("constraints") or ():
            con = c.get("Constraint") or {}
            if con.get("contype") == "CONSTR_DEFAULT":
                pairs.append((str(col.get("colname") or ""), con.get("raw_expr")))

    if kind == "InsertStmt":
        cols = [(c.get("ResTarget") or {}).get("name") or "" for c in node.get("cols") or ()]
        select = (node.get("selectStmt") or {}).get("SelectStmt") or {}
        for row in select.get("valuesLists") or ():
            for col, val in zip(cols, (row.get("List") or {}).get("items") or (), strict=False):
                pairs.append((col, val))
        targets((node.get("onConflictClause") or {}).get("targetList"))
    elif kind == "UpdateStmt":
        targets(node.get("targetList"))
    elif kind == "CreateStmt":
        for elt in node.get("tableElts") or ():
            if "ColumnDef" in elt:
                column_defaults(elt["ColumnDef"])
    elif kind == "AlterTableStmt":
        for c in node.get("cmds") or ():
            cmd = c.get("AlterTableCmd") or {}
            d = cmd.get("def") or {}
            if cmd.get("subtype") == "AT_AddColumn" and "ColumnDef" in d:
                column_defaults(d["ColumnDef"])
            elif cmd.get("subtype") == "AT_ColumnDefault" and d:
                pairs.append((cmd.get("name") or "", d))
    return pairs


def secret_column_findings(pf: ParsedFile, already: set[int]) -> list[Finding]:
    """MIG201 for a plaintext string written to a password/secret/token column (not at ``already``)."""
    out: list[Finding] = []
    to_char = None
    for st in pf.statements:
        if st.kind not in ("InsertStmt", "UpdateStmt", "CreateStmt", "AlterTableStmt"):
            continue
        for column, expr in _assignments(st.kind, st.node):
            lit = _literal(expr)
            if lit is None or not lit[0] or not is_secret_column(column) or _HASHED.match(lit[0]):
                continue
            if to_char is None:
                to_char = byte_to_char(pf.sql)
            offset = to_char(lit[1]) if lit[1] >= 0 else st.start
            if offset in already:
                continue
            line, col = pf.pos(offset)
            out.append(
                finding(
                    "MIG201",
                    pf.file,
                    f"string literal at line {line} is a plaintext value for the secret column {column}; never "
                    "write passwords, tokens or keys into migration files (set them at run time, hashed)",
                    line,
                    col,
                    offset=offset,
                )
            )
    return out


def sensitive_findings(pf: ParsedFile) -> list[Finding]:
    """MIG201 for each literal or comment that looks like patient data or a secret."""
    out = _token_findings(pf)
    if pf.error is None:
        out.extend(secret_column_findings(pf, {f.offset for f in out if f.offset is not None}))
    return out


def _token_findings(pf: ParsedFile) -> list[Finding]:
    out: list[Finding] = []
    tokens = pf.tokens
    if tokens is None:
        return out
    prev1 = prev2 = ""  # names of the last two non-comment tokens (prev1 the last)
    prev_text = ""
    wanted = _WANTED_TOKENS
    for tok in tokens:
        name = tok.name
        if name not in wanted:  # most tokens: keywords, operators, numbers
            prev2, prev1 = prev1, name
            continue
        is_comment = name in COMMENT_TOKENS
        if is_comment or name in LITERAL_TOKENS:
            text = pf.sql[tok.start : tok.end + 1]
            if is_comment and "migrator:allow" in text:
                continue
            kinds = _match(text)
            if not is_comment and not kinds:
                if prev1 == "PASSWORD":
                    kinds = ["a role password"]
                elif prev1 == "ASCII_61" and prev2 == "IDENT" and _SECRET_COLUMN.search(prev_text):
                    kinds = ["a password, key or token value"]
            for kind in kinds:
                line, col = pf.pos(tok.start)
                where = "comment" if is_comment else "string literal"
                out.append(
                    finding(
                        "MIG201",
                        pf.file,
                        f"{where} at line {line} looks like {kind}; keep real patient data and secrets out of "
                        "migration files",
                        line,
                        col,
                        offset=tok.start,
                    )
                )
        if not is_comment:
            if name == "IDENT":
                prev_text = pf.sql[tok.start : tok.end + 1]
            prev2, prev1 = prev1, name
    return out


# the tokens _token_findings looks at: the rest only move the two-token window
_WANTED_TOKENS = COMMENT_TOKENS | LITERAL_TOKENS | {"IDENT"}


_URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@")


def _match(text: str) -> list[str]:
    kinds = []
    if _URL_CREDENTIALS.search(text):
        kinds.append("credentials in a URL")
        text = _URL_CREDENTIALS.sub("", text)  # user:password@host is not an e-mail address
    for kind, rx in PATTERNS:
        for m in rx.finditer(text):
            if kind == "an e-mail address" and _RESERVED_EMAIL_DOMAINS.search(m.group(1).lower()):
                continue
            if kind == "a phone number" and _phone_is_fictional(m.group(0)):
                continue
            kinds.append(kind)
            break
    return kinds


def header_comments(pf: ParsedFile) -> list[str]:
    """Comments before the first statement."""
    first = pf.statements[0].start if pf.statements else len(pf.sql)
    return [text for start, _end, text in pf.comments if start < first]


def justification_findings(pf: ParsedFile) -> list[Finding]:
    """MIG202 when the up file's header has no real 'Business justification:' line."""
    if pf.tokens is None and pf.error is not None:
        return []  # does not even scan: the syntax error says enough
    for text in header_comments(pf):
        for raw in text.splitlines():
            m = _JUSTIFICATION.search(raw)
            if m:
                value = m.group(1).strip().rstrip("*/").strip()
                if len(value) >= 3 and not _PLACEHOLDER.match(value):
                    return []
                return [
                    finding(
                        "MIG202",
                        pf.file,
                        "the business justification is still a placeholder; say why this change is needed "
                        "(ticket, business reason)",
                        1,
                        1,
                    )
                ]
    return [
        finding(
            "MIG202",
            pf.file,
            "no '-- Business justification: ...' comment before the first statement (HIPAA audit trail); "
            "add one or run with --no-require-justification",
            1,
            1,
        )
    ]
