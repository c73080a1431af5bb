"""``-- migrator:allow RULE justification`` comments that silence a finding, with a reason.

``migrator:allow`` applies to the statement it sits in, the statement ending earlier on the same
line (a trailing comment), or else the next statement; ``migrator:allow-file`` applies to the
whole file. RULE is an id (``MIG006``) or a name (``ban-drop-column``), several separated by
commas. Only real comments count (the scanner tells them from strings). A comment without a
justification silences nothing and is itself an error; one that silences nothing is a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from migrator.lint.model import RULES, RULES_BY_NAME, Finding, finding
from migrator.lint.parse import ParsedFile

_ID_LIST = re.compile(r"^[A-Za-z0-9_-]+(?:[ \t]*,[ \t]*[A-Za-z0-9_-]+)*")


@dataclass
class Directive:
    rules: list[str]
    whole_file: bool
    justification: str
    offset: int
    line: int
    column: int
    statement: int | None = None  # index into the file's statements
    used: bool = field(default=False)


def _parse(text: str) -> tuple[bool, list[str], str] | None:
    i = text.find("migrator:allow")
    if i < 0:
        return None
    rest = text[i + len("migrator:allow") :]
    whole = rest.startswith("-file")
    if whole:
        rest = rest[len("-file") :]
    rest = rest.rstrip()
    if rest.endswith("*/"):
        rest = rest[:-2]
    rest = rest.strip()
    m = _ID_LIST.match(rest)
    if not m:
        return whole, [], ""
    ids = [x.strip() for x in m.group(0).split(",") if x.strip()]
    return whole, ids, rest[m.end() :].strip().lstrip(":-—").strip()


def directives(pf: ParsedFile) -> tuple[list[Directive], list[Finding]]:
    """The file's allow comments, and findings about malformed ones."""
    out: list[Directive] = []
    problems: list[Finding] = []
    for start, _end, text in pf.comments:
        for k, raw in enumerate(text.splitlines()):
            parsed = _parse(raw)
            if parsed is None:
                continue
            whole, ids, why = parsed
            offset = start + (text.find(raw) if k else 0)
            line, col = pf.pos(offset)
            rules: list[str] = []
            for rid in ids:
                rule = RULES.get(rid.upper()) or RULES_BY_NAME.get(rid.lower())
                if rule is None:
                    problems.append(
                        finding("MIG901", pf.file, f"migrator:allow names unknown rule {rid!r}", line, col)
                    )
                elif not rule.silenceable:
                    problems.append(
                        finding("MIG901", pf.file, f"rule {rule.id} ({rule.name}) cannot be silenced", line, col)
                    )
                else:
                    rules.append(rule.id)
            if not ids:
                problems.append(
                    finding("MIG901", pf.file, "migrator:allow without a rule id, e.g. migrator:allow MIG006 "
                            "<why>", line, col)
                )
                continue
            if len(re.sub(r"\W", "", why)) < 3:
                problems.append(
                    finding(
                        "MIG900",
                        pf.file,
                        f"migrator:allow {','.join(ids)} gives no justification; write why it is safe after the "
                        "rule id",
                        line,
                        col,
                    )
                )
                continue
            if rules:
                out.append(Directive(rules, whole, why, offset, line, col))
    _attach(pf, out)
    return out, problems


def _attach(pf: ParsedFile, ds: list[Directive]) -> None:
    stmts = pf.statements
    for d in ds:
        if d.whole_file:
            continue
        for i, st in enumerate(stmts):
            if st.start <= d.offset < st.end:
                d.statement = i
                break
        else:
            same_line = [
                i for i, st in enumerate(stmts) if st.end <= d.offset and pf.pos(max(st.end - 1, 0))[0] == d.line
            ]
            if same_line:
                d.statement = same_line[-1]
            else:
                nxt = [i for i, st in enumerate(stmts) if st.start > d.offset]
                d.statement = nxt[0] if nxt else None


def _statement_of(pf: ParsedFile, offset: int | None) -> int | None:
    if offset is None:
        return None
    for i, st in enumerate(pf.statements):
        if st.start <= offset < max(st.end, st.start + 1):
            return i
    return None


def apply(pf: ParsedFile, findings: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(kept findings, findings about the allow comments themselves); silenced ones are dropped."""
    ds, problems = directives(pf)
    if not ds:
        return findings, problems
    kept: list[Finding] = []
    for f in findings:
        rule = RULES.get(f.rule)
        silenced = False
        if rule is not None and rule.silenceable:
            idx = _statement_of(pf, f.offset)
            for d in ds:
                if f.rule in d.rules and (d.whole_file or (idx is not None and d.statement == idx)):
                    d.used = True
                    silenced = True
        if not silenced:
            kept.append(f)
    for d in ds:
        if not d.used:
            scope = "this file" if d.whole_file else "the statement it annotates"
            problems.append(
                finding("MIG902", pf.file, f"migrator:allow {','.join(d.rules)} silences nothing in {scope}; "
                        "remove it", d.line, d.column)
            )
    return kept, problems
