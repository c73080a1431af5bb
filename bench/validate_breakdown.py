"""Where a cold ``migrator validate`` of the bench's 1,000 files spends its time, phase by phase.

Each phase runs in-process on the same files, least CPU time of ``--repeat`` runs (a shared machine's wall time is noise), so
the phases add up to roughly one cold run; the interpreter start and the imports are measured as
fresh processes. Used for docs/benchmarks.md's "where the cold time goes".

    .venv/bin/python bench/validate_breakdown.py [--pairs 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_validate import generate


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Least CPU time (this process) of ``repeat`` calls: wall time on a loaded machine measures the others."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _process(code: str, repeat: int) -> float:
    """Least CPU time (user + sys) of a fresh ``python -c code``."""
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    import pglast.parser as pp

    from migrator import files, sql
    from migrator.lint import allow, hipaa, report, rules, structure, validate_folder
    from migrator.lint.parse import parse_file
    from migrator.redact import redact

    folder = Path(tempfile.mkdtemp(prefix="validate_breakdown_")) / "migrations"
    generate(folder, args.pairs)
    r = args.repeat
    mset = files.load(folder)
    texts = [(str(mf.path), mf.sql) for m in mset for mf in (m.up, m.down) if mf]
    trees = [pp.parse_sql_json(t) for _, t in texts]
    parsed = [parse_file(n, t) for n, t in texts]
    ups = parsed[0::2]
    rep = validate_folder(folder)
    as_json = report.render(rep, "json")

    def lint_all() -> None:
        state = rules.LintState()
        for up, down in zip(parsed[0::2], parsed[1::2], strict=True):
            rules.lint_up(up, state)
            rules.lint_down(down, up)

    rows = [
        ("python start (python -c pass)", _process("pass", r)),
        ("imports (cli, lint, pglast)", _process("import migrator.cli, migrator.commands.validate, migrator.lint, "
                                                "migrator.lint.rules, migrator.lint.hipaa, migrator.lint.allow, "
                                                "migrator.lint.structure, migrator.lint.report, migrator.sql; "
                                                "migrator.sql.pg_parser()", r)
         - _process("pass", r)),
        ("read the folder (files.load)", _best(lambda: files.load(folder), r)),
        ("libpg_query parse to JSON", _best(lambda: [pp.parse_sql_json(t) for _, t in texts], r)),
        ("json.loads of the parse trees", _best(lambda: [json.loads(t) for t in trees], r)),
        ("libpg_query scan (tokens)", _best(lambda: [sql.scan(t) for _, t in texts], r)),
        ("parse_file: all of the above per file", _best(lambda: [parse_file(n, t) for n, t in texts], r)),
        ("HIPAA (literals, comments, secrets)", _best(lambda: [hipaa.sensitive_findings(p) for p in parsed], r)),
        ("justification headers", _best(lambda: [hipaa.justification_findings(p) for p in ups], r)),
        ("transaction structure (MIG113-115)", _best(lambda: [structure.transaction_findings(p) for p in parsed], r)),
        ("safety rules (up and down)", _best(lint_all, r)),
        ("allow comments", _best(lambda: [allow.apply(p, []) for p in parsed], r)),
        ("validate_folder in all", _best(lambda: validate_folder(folder), r)),
        ("JSON report (to_json + encode)", _best(lambda: report._json_text(report.to_json(rep)), r)),
        ("text report", _best(lambda: report.render(rep, "text"), r)),
        ("redact the JSON report", _best(lambda: redact(as_json), r)),
    ]
    print(f"{len(texts)} files, {len(rep.findings)} findings; CPU time, least of {r} runs")
    for name, seconds in rows:
        print(f"  {name:40s} {seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
