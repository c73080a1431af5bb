"""Validate step: parse, lint, HIPAA checks and drift against the environment's database.

Not cached: a retried run must see the files as they are now (an engineer may have fixed one).
"""

from __future__ import annotations

from prefect import task

from migrator.lint import ValidationReport, validate_folder
from tasks._common import retry_unless_permanent, run_logger
from tasks.environment import run_environment


@task(name="validate", task_run_name="validate {environment}", retries=1,
      retry_condition_fn=retry_unless_permanent, retry_delay_seconds=5)
def validate_migrations(environment: str, drift: bool = True) -> ValidationReport:
    """Run ``migrator validate`` (with drift); returns the core's report (counts and findings)."""

    env = run_environment(environment)
    report = validate_folder(env.settings.migrations_path, settings=env.settings, drift=drift)
    log = run_logger()
    for f in report.findings:
        level = {"error": 40, "warning": 30}.get(f.severity, 20)
        log.log(level, "%s: %s %s: %s", f.location(), f.severity, f.rule, f.message)
    log.info("validate: %s errors, %s warnings in %s files", report.errors, report.warnings, report.files)
    return report
