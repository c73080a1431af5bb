"""The documentation says what the code does: the rule tables come from the catalogue, links resolve."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT
from migrator.lint.catalogue import rules_markdown
from migrator.lint.model import RULES

BEGIN = "<!-- rules:begin"
END = "<!-- rules:end -->"


def _generated_block(text: str) -> str:
    start = text.index(BEGIN)
    body = text[text.index("\n", start) + 1 : text.index(END)]
    return body.strip("\n") + "\n"


def test_the_rule_list_in_docs_validation_is_the_catalogue() -> None:
    doc = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    assert _generated_block(doc) == rules_markdown(), (
        "docs/validation.md's rule tables differ from the rule catalogue: regenerate them with "
        "`migrator validate --list-rules --format markdown` between the rules:begin/end markers"
    )
    for rule in RULES.values():  # every rule, with its current severity, is in the doc
        assert f"| `{rule.id}` | `{rule.name}` | {rule.severity} |" in doc


def test_the_doc_check_fails_when_a_rule_changes() -> None:
    doc = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    drifted = doc.replace("| `MIG006` | `ban-drop-column` | error |", "| `MIG006` | `ban-drop-column` | warning |")
    assert _generated_block(drifted) != rules_markdown()


def test_list_rules_command_prints_the_same_markdown() -> None:
    r = subprocess.run([sys.executable, "-m", "migrator", "validate", "--list-rules", "--format", "markdown"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout == rules_markdown()
    j = subprocess.run([sys.executable, "-m", "migrator", "validate", "--list-rules", "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert [r["id"] for r in __import__("json").loads(j.stdout)] == list(RULES)


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"


CMD_BEGIN = "<!-- commands:begin"
CMD_END = "<!-- commands:end -->"


def _commands_block(text: str) -> str:
    start = text.index(CMD_BEGIN)
    return text[text.index("\n", start) + 1 : text.index(CMD_END)].strip("\n") + "\n"


def test_docs_commands_reference_is_the_parser() -> None:
    from migrator.cli_reference import markdown

    doc = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert _commands_block(doc) == markdown(), (
        "docs/commands.md's argument reference differs from the parser: regenerate it with "
        "`python -m migrator.cli_reference` between the commands:begin/end markers"
    )


def test_docs_commands_table_has_every_command_and_every_argument_is_described() -> None:
    import argparse

    from migrator.cli import build_parser

    doc = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    table = doc[: doc.index(CMD_BEGIN)]
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in sub.choices if f"`migrator {name}" not in table and f"`migrator {name}`" not in doc]
    assert missing == [], f"commands without a row in docs/commands.md's table: {missing}"

    def undocumented(p: argparse.ArgumentParser, path: str) -> list[str]:
        found = [] if p.description else [f"{path}: no description"]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    found += undocumented(child, f"{path} {name}")
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                found.append(f"{path} {a.option_strings or a.dest}: no help")
        return found

    assert undocumented(parser, "migrator") == []


def test_every_doc_table_renders_and_the_docs_agree_with_the_product() -> None:
    """One runbook with the real form fields and outcomes; the docs that contradicted it are gone."""
    from markdown_check import table_problems

    docs = {p.name: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    for name, text in docs.items():
        assert table_problems(text) == [], name
    everything = "\n".join(docs.values())
    assert "rejection is not a failure" not in everything.lower()  # a rejected run is Failed (outcome rejected)
    assert "(`approved`, `approver`" not in everything  # the approval form's fields are Decision / Your name / Comment
    runbook = docs["runbook.md"]
    for words in ("**Decision**", "**Your name**", "**Comment**", "**Action**", "**Engineer**",
                  "recovery.left_dirty", "approval.rejected", "Retry"):
        assert words in runbook, words
    for name in ("prefect.md", "prefect-local.md", "README.md"):
        assert "runbook.md" in docs[name], f"{name} does not link the runbook"
    from migrator.alerts.notify import EVENTS

    for event in EVENTS:  # every event the code can send is documented
        assert f"`{event}`" in docs["alerts.md"], event
