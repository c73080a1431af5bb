"""Validation output: a table for people, JSON, SARIF 2.1.0 for code scanning, GitHub annotations.

Every format goes through ``redact`` (findings never contain the data they flag, but file paths
and database targets are printed too).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from migrator import __version__
from migrator.lint.model import ERROR, INFO, RULES, WARNING
from migrator.output import line, table
from migrator.redact import redact

if TYPE_CHECKING:
    from migrator.lint import ValidationReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {ERROR: "error", WARNING: "warning", INFO: "note"}
_GITHUB_LEVEL = {ERROR: "error", WARNING: "warning", INFO: "notice"}


def to_json(report: ValidationReport) -> dict[str, Any]:
    return {
        "ok": report.errors == 0,
        "directory": report.directory,
        "migrations": report.migrations,
        "files": report.files,
        "errors": report.errors,
        "warnings": report.warnings,
        "infos": report.infos,
        "drift_checked": report.drift_checked,
        "findings": [f.to_dict() for f in report.findings],
    }


def to_sarif(report: ValidationReport) -> dict[str, Any]:
    used = sorted({f.rule for f in report.findings})
    rules = []
    for rid in used:
        r = RULES.get(rid)
        if r is None:
            continue
        rules.append(
            {
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": f"{r.summary} {r.why}".strip()},
                "help": {"text": r.fix},
                "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
            }
        )
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in report.findings:
        text = f.message + (f" Safe alternative: {f.help}" if f.help else "")
        region = {"startLine": f.line or 1}
        if f.column:
            region["startColumn"] = f.column
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": _SARIF_LEVEL.get(f.severity, "warning"),
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.file}, "region": region}}],
        }
        if f.rule in index:
            result["ruleIndex"] = index[f.rule]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "migrator validate",
                        "version": __version__,
                        "informationUri": "https://github.com/askfrank/migrator",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def _gh_escape(value: str, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def github_lines(report: ValidationReport, show_info: bool = True) -> list[str]:
    """``::error file=F,line=L,col=C,title=T::message`` workflow commands, one per finding."""
    out = []
    for f in report.findings:
        if f.severity == INFO and not show_info:
            continue
        props = [f"file={_gh_escape(f.file, True)}"]
        if f.line:
            props.append(f"line={f.line}")
        if f.column:
            props.append(f"col={f.column}")
        props.append(f"title={_gh_escape(f'{f.rule} {f.name}', True)}")
        msg = f.message + (f" Safe alternative: {f.help}" if f.help else "")
        out.append(f"::{_GITHUB_LEVEL.get(f.severity, 'warning')} {','.join(props)}::{_gh_escape(msg)}")
    return out


def summary(report: ValidationReport, infos_hidden: bool = False) -> str:
    drift = ", drift checked" if report.drift_checked else ""
    hidden = " (not shown; -v shows them)" if infos_hidden and report.infos else ""
    return (
        f"{report.migrations} migration(s), {report.files} file(s){drift}: {report.errors} error(s), "
        f"{report.warnings} warning(s), {report.infos} note(s){hidden}"
    )


def print_human(report: ValidationReport, show_info: bool = True) -> None:
    """One table per file (the file name as title, so it is never cut), then the summary line."""
    def style(row: Any) -> str | None:
        return {ERROR: "red", WARNING: "yellow"}.get(row[1])

    by_file: dict[str, list[Any]] = {}
    for f in report.findings:
        if f.severity == INFO and not show_info:
            continue
        where = f"{f.line}:{f.column or 1}" if f.line else "-"
        text = f.message + (f"\n→ {f.help}" if f.help else "")
        by_file.setdefault(f.file, []).append((where, f.severity, f"{f.rule}\n{f.name}", text))
    for file, rows in by_file.items():
        table(file, ["line:col", "severity", "rule", "finding / safe alternative"], rows, styles=style)
    line(summary(report, not show_info), style="red" if report.errors else ("yellow" if report.warnings else "green"))


def text_lines(report: ValidationReport, show_info: bool = True) -> list[str]:
    """``file:line:col: severity: message [rule name]``, one per finding (the compilers' format)."""
    out = []
    for f in report.findings:
        if f.severity == INFO and not show_info:
            continue
        rule = RULES.get(f.rule)
        where = f"{f.file}:{f.line}:{f.column or 1}" if f.line is not None else f.file
        out.append(f"{where}: {f.severity}: {f.message} [{f.rule} {rule.name if rule else f.rule}]")
    return out


def write(report: ValidationReport, fmt: str, show_info: bool = True) -> None:
    """Print ``report`` on stdout in ``fmt`` (human, text, json, sarif or github).

    ``show_info=False`` leaves notes out of the human, text and github formats (they are counted in
    the summary); json and sarif always carry every finding.
    """
    if fmt == "human":
        print_human(report, show_info)
        return
    sys.stdout.write(render(report, fmt, show_info) + "\n")
    sys.stdout.flush()


def _json_text(data: dict[str, Any]) -> str:
    """``data`` as JSON with one key, and one finding, per line.

    Same document as ``json.dumps(data, indent=2)``, but every line is written by the C encoder
    (``indent`` switches json to its pure-Python encoder: 0.25 s of a 1,000-file cold run).
    """
    encode = json.JSONEncoder(separators=(", ", ": ")).encode
    parts = []
    for key, value in data.items():
        if key == "findings" and value:
            items = ",\n    ".join(encode(item) for item in value)
            parts.append(f'  {encode(key)}: [\n    {items}\n  ]')
        else:
            parts.append(f"  {encode(key)}: {encode(value)}")
    return "{\n" + ",\n".join(parts) + "\n}"


def render(report: ValidationReport, fmt: str, show_info: bool = True) -> str:
    """``report`` as the text ``write`` prints for ``fmt`` (not human), credentials redacted."""
    if fmt == "text":
        lines = text_lines(report, show_info)
        lines.append(summary(report, not show_info))
        text = "\n".join(lines)
    elif fmt == "json":
        text = _json_text(to_json(report))
    elif fmt == "sarif":
        text = json.dumps(to_sarif(report), indent=2)
    else:
        lines = github_lines(report, show_info)
        lines.append(summary(report, not show_info))
        text = "\n".join(lines)
    return redact(text)
