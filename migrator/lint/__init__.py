"""``migrator validate``: the checks every migration passes before it reaches a database.

Parse (PostgreSQL's own parser), structure, safety rules, HIPAA checks, allow comments, and,
when a database is given, drift. ``validate_folder`` is the entry point for the CLI and for the
Prefect flows; nothing heavy is imported at module level.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.lint.model import ERROR, INFO, RULES, SEVERITY_ORDER, WARNING, Finding, finding
from migrator.lint.report import to_json
from migrator.validate_cache import require_justification_default as default

if TYPE_CHECKING:
    from migrator.config import Settings

__all__ = ["RULES", "Finding", "ValidationReport", "validate_folder"]


@dataclass
class ValidationReport:
    """All findings of one validation run, sorted by file and line."""

    directory: str
    migrations: int = 0
    files: int = 0
    findings: list[Finding] = field(default_factory=list)
    drift_checked: bool = False

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> int:
        return self.count(ERROR)

    @property
    def warnings(self) -> int:
        return self.count(WARNING)

    @property
    def infos(self) -> int:
        return self.count(INFO)

    def exit_code(self, strict: bool = False) -> int:
        """0 clean, 1 errors, 2 warnings when ``strict``."""
        if self.errors:
            return 1
        if strict and self.warnings:
            return 2
        return 0

    def to_dict(self) -> dict[str, object]:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """The report ``to_dict`` describes (what the validate cache stores)."""
        known = {"rule", "name", "severity", "file", "line", "column", "message", "help"}
        findings = [
            Finding(rule=d["rule"], severity=d["severity"], file=d["file"], message=d["message"], line=d["line"],
                    column=d["column"], help=d.get("help", ""), extra={k: v for k, v in d.items() if k not in known})
            for d in data["findings"]
        ]
        return cls(directory=data["directory"], migrations=data["migrations"], files=data["files"],
                   findings=findings, drift_checked=data["drift_checked"])


def require_justification_default() -> bool:
    """MIGRATOR_REQUIRE_JUSTIFICATION=0/false/no turns the header requirement off (default on)."""
    return default()


def _display(base: Path | None) -> Callable[[object], str]:
    """Paths relative to ``base`` when inside it; folders are resolved once each (1,000 files share one)."""
    folders: dict[str, str | None] = {}

    def relative_folder(key: str) -> str | None:
        if key not in folders:
            try:
                folders[key] = str(Path(key).resolve().relative_to(base)) if base is not None else None
            except ValueError:
                folders[key] = None
        return folders[key]

    def show(path: object) -> str:
        text = str(path)
        parent, name = os.path.split(text)
        if not name:  # a folder given with a trailing slash
            text = str(Path(text))
            parent, name = os.path.split(text)
        rel = relative_folder(parent or ".")
        if rel is None:
            return text
        return name if rel == "." else f"{rel}/{name}"

    return show


def validate_folder(
    directory: Path | str,
    *,
    require_justification: bool | None = None,
    settings: Settings | None = None,
    drift: bool = False,
    base: Path | str | None = None,
) -> ValidationReport:
    """Validate every migration in ``directory``; with ``drift`` also compare with the database.

    Paths in findings are relative to ``base`` (default: the working directory) when inside it.
    """
    # lazy: a cached `migrator validate` loads this module; migrator.files and 2 more would add 15 modules
    from migrator import files
    from migrator.lint import allow, hipaa, rules, structure
    from migrator.lint.parse import parse_file

    if require_justification is None:
        require_justification = require_justification_default()
    base = Path(base or Path.cwd()).resolve()
    show = _display(base)
    mset = files.load(directory)
    report = ValidationReport(directory=show(mset.directory))
    found: list[Finding] = []
    for f in structure.problem_findings(mset.problems):
        f.file = show(f.file)
        found.append(f)
    for f in structure.folder_findings(mset):
        f.file = show(f.file)
        found.append(f)
    state = rules.LintState()
    report.migrations = len(mset)
    for mig in mset:
        parsed = {}
        for mf in (mig.up, mig.down):
            if mf is None:
                continue
            report.files += 1
            parsed[mf.direction] = parse_file(show(mf.path), mf.sql)
        up, down = parsed.get("up"), parsed.get("down")
        for pf in (up, down):
            if pf is None:
                continue
            file_findings: list[Finding] = []
            if pf.error is not None:
                found.append(pf.error)
            file_findings.extend(structure.transaction_findings(pf))
            file_findings.extend(hipaa.sensitive_findings(pf))
            if pf is up:
                if pf.error is None:
                    file_findings.extend(rules.lint_up(pf, state))
                if require_justification:
                    file_findings.extend(hipaa.justification_findings(pf))
            elif pf.error is None:
                file_findings.extend(rules.lint_down(pf, up))
            kept, about_allow = allow.apply(pf, file_findings)
            found.extend(kept)
            found.extend(about_allow)
    schema_file = mset.directory / "schema.sql"
    if schema_file.exists():  # migrator.schema.dumpfile: only projects that keep one
        # lazy: a cached `migrator validate` loads this module; migrator.schema.dumpfile would add 18 modules
        from migrator.schema.dumpfile import stale_reason

        reason = stale_reason(mset, schema_file)
        if reason:
            found.append(finding("MIG305", show(schema_file), f"{schema_file.name} {reason}"))
    if drift and settings is not None:
        # lazy: a cached `migrator validate` loads this module; migrator.lint.drift would add 205 modules
        from migrator.lint import drift as drift_mod

        found.extend(drift_mod.check(settings, mset, display=show))
        report.drift_checked = True
    found.sort(key=lambda f: (f.file, f.line or 0, f.column or 0, SEVERITY_ORDER.get(f.severity, 9), f.rule))
    report.findings = found
    return report
