"""Benchmark: ``migrator validate`` vs squawk on the same 1,000 generated migration files.

1,000 files = 500 migrations, each an up and a down file, with a realistic mix (new tables with
indexes and plpgsql triggers, added columns, concurrent indexes, constraints added NOT VALID then
validated, data backfills) plus the usual review findings in every change (~2,400 findings, as in
issue 11). Both tools run as a fresh process, in the same run, on the same folder, with their
default output into a pipe (what CI and `| grep` see): ``migrator validate`` (parse + structure +
safety + HIPAA; no database; one ``file:line:col: severity: message [rule]`` line per finding) and
``squawk`` (parse + lint); then both with JSON output. Each is run ``--repeat`` times and the best
time is kept. Ours runs cold (``--no-cache``: every file parsed) and warm (unchanged folder:
the content-hash cache answers). Targets: cold <= 2x squawk, warm <= 1x squawk. `migrator/` is
byte-compiled first (what `make` does). Each ratio is printed as wall time | CPU time (user + sys of
the best run): on a shared machine the wall times of adjacent runs move by 2x, CPU times much less.

    .venv/bin/python bench/bench_validate.py [--pairs 500] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

HEADER = "-- Migration: {stem}\n-- Business justification: BENCH-{v} generated for the validate benchmark.\n"

TEMPLATES = [
    (
        """CREATE TABLE t{v} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id BIGINT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_t{v}_patient ON t{v} (patient_id);
CREATE FUNCTION t{v}_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := now(); -- keep; semicolons; inside
    RETURN NEW;
END;
$$;
CREATE TRIGGER trg_t{v} BEFORE INSERT ON t{v} FOR EACH ROW EXECUTE FUNCTION t{v}_touch();
""",
        """DROP TRIGGER IF EXISTS trg_t{v} ON t{v};
DROP FUNCTION IF EXISTS t{v}_touch();
DROP TABLE IF EXISTS t{v};
""",
    ),
    (
        "ALTER TABLE t{p} ADD COLUMN c{v} TEXT;\nCOMMENT ON COLUMN t{p}.c{v} IS 'added by {v}';\n",
        "ALTER TABLE t{p} DROP COLUMN IF EXISTS c{v};\n",
    ),
    (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_t{p}_note_{v} ON t{p} (note);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS idx_t{p}_note_{v};\n",
    ),
    (
        """ALTER TABLE t{p} ADD CONSTRAINT chk_{v} CHECK (length(note) < 10000) NOT VALID;
ALTER TABLE t{p} VALIDATE CONSTRAINT chk_{v};
""",
        "ALTER TABLE t{p} DROP CONSTRAINT IF EXISTS chk_{v};\n",
    ),
    (
        """/* backfill /* nested */ comment */
UPDATE t{p} SET note = 'n/a' WHERE note = '' AND id < 10000;
DO $$ BEGIN RAISE NOTICE 'BEGIN; COMMIT;'; END $$;
""",
        "UPDATE t{p} SET note = '' WHERE note = 'n/a' AND id < 10000;\n",
    ),
    (
        "CREATE INDEX idx_t{p}_created_{v} ON t{p} (created_at);\nALTER TABLE t{p} ALTER COLUMN note SET NOT NULL;\n",
        "DROP INDEX IF EXISTS idx_t{p}_created_{v};\n",
    ),
]


# Appended to every migration that changes an existing table: the usual review findings (a blocking
# index, a type change, a validated foreign key), so 1,000 files carry ~2,000 findings as in issue 11.
UNSAFE = """CREATE INDEX idx_t{p}_id_{v} ON t{p} (id);
ALTER TABLE t{p} ALTER COLUMN note TYPE varchar(500);
ALTER TABLE t{p} ADD CONSTRAINT fk_{v} FOREIGN KEY (patient_id) REFERENCES t{p} (id);
"""


def generate(directory: Path, pairs: int, unsafe: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    last_table = 1
    change = 0
    for v in range(1, pairs + 1):
        if v % 5 == 1:  # every fifth migration creates a table the next four change
            kind = 0
            last_table = v
        else:
            kind = change % (len(TEMPLATES) - 1) + 1
            change += 1
        up, down = TEMPLATES[kind]
        stem = f"{v:06d}_bench_change_{v}"
        ctx = {"v": v, "p": last_table, "stem": stem}
        extra = UNSAFE.format(**ctx) if unsafe and kind != 0 else ""
        (directory / f"{stem}.up.sql").write_text(HEADER.format(**ctx) + up.format(**ctx) + extra)
        (directory / f"{stem}.down.sql").write_text(down.format(**ctx))


def _best(cmd: list[str], repeat: int, ok_codes: tuple[int, ...],
          env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Best wall time of ``repeat`` runs (and the run's output); the best CPU time goes to CPU[cmd]."""
    best = float("inf")
    best_cpu = float("inf")
    proc: subprocess.CompletedProcess[str] | None = None
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "NO_COLOR": "1", **(env or {})})
        best = min(best, time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode not in ok_codes:
            raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    assert proc is not None
    CPU[" ".join(cmd)] = best_cpu
    return best, proc


# CPU seconds (user + sys) of the best run of each command: steadier than wall time on a shared machine
CPU: dict[str, float] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500, help="migrations to generate (2 files each; default 500)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = ap.parse_args()

    # what `make` does before every migrate-* target (and `make setup` once): byte-compile our modules.
    # With PYTHONDONTWRITEBYTECODE=1 (set on these machines) Python otherwise recompiles every module
    # it imports at every start: +0.15 s per run, which is not what a developer or CI pays.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "migrator")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_validate_"))
    folder = args.keep or tmp / "migrations"
    try:
        generate(folder, args.pairs)
        sql_files = sorted(str(p) for p in folder.glob("*.sql"))
        print(f"{len(sql_files)} files ({args.pairs} migrations x up+down) in {folder}")

        # what people and CI get: the default output, stdout into a pipe (-> one line per finding).
        # cold: no cache entry (--no-cache parses every file); warm: the folder is unchanged since the
        # last run, so the content-hash cache in MIGRATOR_CACHE_DIR answers.
        cache_dir = tmp / "cache"
        env = {"MIGRATOR_CACHE_DIR": str(cache_dir)}
        ours_cmd = [sys.executable, "-m", "migrator", "validate", "--path", str(folder)]
        if (VENV_BIN / "migrator").exists():  # the console script, as make and CI call it (no runpy)
            ours_cmd = [str(VENV_BIN / "migrator"), "validate", "--path", str(folder)]
        cold, proc = _best([*ours_cmd, "--no-cache"], args.repeat, (0, 1, 2), env)
        data = json.loads(subprocess.run([*ours_cmd, "--no-cache", "--format", "json"], capture_output=True,
                                         text=True, cwd=ROOT).stdout)
        print(
            f"migrator validate, cold (default output into a pipe): {cold:.3f} s  ({data['files']} files, "
            f"{data['errors']} errors, {data['warnings']} warnings, {data['infos']} notes; "
            f"{len(proc.stdout.splitlines())} lines)"
        )
        time.sleep(2.1)  # files written just now are "racy" for the cache's stat check: let them age
        subprocess.run(ours_cmd, capture_output=True, cwd=ROOT, env={**os.environ, **env})  # fills the cache
        warm, wproc = _best(ours_cmd, max(args.repeat, 5), (0, 1, 2), env)
        assert wproc.stdout == proc.stdout, "the cached output differs from a full validation"
        print(f"migrator validate, warm (unchanged folder, cache hit): {warm:.3f} s")
        cold_json, _ = _best([*ours_cmd, "--no-cache", "--format", "json"], args.repeat, (0, 1, 2), env)
        warm_json, _ = _best([*ours_cmd, "--format", "json"], max(args.repeat, 5), (0, 1, 2), env)
        print(f"migrator validate --format json: cold {cold_json:.3f} s, warm {warm_json:.3f} s")

        squawk = shutil.which("squawk", path=str(VENV_BIN)) or shutil.which("squawk")
        if not squawk:
            print("squawk: not installed (uv sync installs squawk-cli)")
            return
        base_cmd = [squawk, "--no-assume-in-transaction", *sql_files]
        theirs, sproc = _best(base_cmd, args.repeat, (0, 1))
        print(f"squawk {_squawk_version(squawk)} (default output into a pipe): {theirs:.3f} s  "
              f"({len(sproc.stdout.splitlines())} lines)")
        theirs_json, jproc = _best([squawk, "--reporter", "json", "--no-assume-in-transaction", *sql_files],
                                   max(args.repeat, 5), (0, 1))
        try:
            n = len(json.loads(jproc.stdout or "[]"))
        except json.JSONDecodeError:
            n = -1
        print(f"squawk --reporter json: {theirs_json:.3f} s  ({n} violations)")
        fastest = min(theirs, theirs_json)

        def cpu(cmd: list[str]) -> float:
            return CPU[" ".join(cmd)]

        c_cold, c_warm = cpu([*ours_cmd, "--no-cache"]), cpu(ours_cmd)
        c_cold_json, c_warm_json = cpu([*ours_cmd, "--no-cache", "--format", "json"]), cpu([*ours_cmd, "--format", "json"])
        c_theirs = cpu(base_cmd)
        c_theirs_json = cpu([squawk, "--reporter", "json", "--no-assume-in-transaction", *sql_files])
        print(f"CPU seconds (user+sys, least of the runs): migrator default cold {c_cold:.3f}, warm {c_warm:.3f}; "
              f"json cold {c_cold_json:.3f}, warm {c_warm_json:.3f}; squawk default {c_theirs:.3f}, json {c_theirs_json:.3f}")
        print("ratios migrator/squawk (targets: cold <= 2x, warm <= 1x), wall time | CPU time (user+sys):")
        print(f"  default outputs into a pipe: cold {cold / theirs:.2f}x | {c_cold / c_theirs:.2f}x,  "
              f"warm {warm / theirs:.2f}x | {c_warm / c_theirs:.2f}x")
        print(f"  json vs json:                cold {cold_json / theirs_json:.2f}x | {c_cold_json / c_theirs_json:.2f}x,  "
              f"warm {warm_json / theirs_json:.2f}x | {c_warm_json / c_theirs_json:.2f}x")
        print(f"  vs squawk's fastest run ({fastest:.3f} s): cold {cold / fastest:.2f}x "
              f"[{'met' if cold <= 2 * fastest else 'MISSED'}], warm {warm / fastest:.2f}x "
              f"[{'met' if warm <= fastest else 'MISSED'}]")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _squawk_version(squawk: str) -> str:
    out = subprocess.run([squawk, "--version"], capture_output=True, text=True).stdout.strip()
    return out.split()[-1] if out else "?"


if __name__ == "__main__":
    main()
