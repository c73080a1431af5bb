"""The rule catalogue as documentation: the tables of docs/validation.md and ``--list-rules``.

Generated from ``migrator.lint.model.RULES`` so the documented rules cannot drift from the
checks (tests/test_docs.py compares docs/validation.md with ``rules_markdown()``).
"""

from __future__ import annotations

from typing import Any

from migrator.lint.model import RULES, Rule

# (heading, which rules) in the order the docs present them
GROUPS: tuple[tuple[str, str], ...] = (
    ("Parsing and structure", "structure"),
    ("Safety (production PostgreSQL)", "safety"),
    ("HIPAA", "hipaa"),
    ("Allow comments", "allow"),
    ("Drift (with a database)", "drift"),
)


def group_of(rule: Rule) -> str:
    """Group by id range: MIG000 and MIG1xx structure, MIG0xx safety, 2xx HIPAA, 3xx drift, 9xx allow."""
    n = int(rule.id[3:])
    if n == 0 or 100 <= n < 200:
        return "structure"
    if n < 100:
        return "safety"
    return {2: "hipaa", 3: "drift", 9: "allow"}.get(n // 100, "structure")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rules_markdown(level: int = 3) -> str:
    """One markdown table per group (id, name, severity, what, why, fix), headings at ``level``."""
    out: list[str] = []
    for heading, key in GROUPS:
        rules = [r for r in RULES.values() if group_of(r) == key]
        if not rules:
            continue
        out += [f"{'#' * level} {heading}", "", "| id | name | severity | what | why | safe alternative / fix |",
                "|---|---|---|---|---|---|"]
        out += [
            f"| `{r.id}` | `{r.name}` | {r.severity} | {_cell(r.summary)} | {_cell(r.why)} | {_cell(r.fix)} |"
            for r in rules
        ]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def rules_json() -> list[dict[str, Any]]:
    """Every rule as a dict, in catalogue order (``validate --list-rules --json``)."""
    return [
        {"id": r.id, "name": r.name, "severity": r.severity, "summary": r.summary, "why": r.why, "fix": r.fix,
         "silenceable": r.silenceable, "squawk": list(r.squawk), "group": group_of(r)}
        for r in RULES.values()
    ]
