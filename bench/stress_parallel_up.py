"""Issue 10.1's stress, by hand: N parallel ``migrator up`` over 50 migrations, every 10th a slow
CREATE INDEX CONCURRENTLY; each trial must end at the last version, clean, each applied once,
with no INVALID index.

    uv run python bench/stress_parallel_up.py --trials 10 --procs 8

Uses the machine's PostgreSQL (TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres)
and a fresh database per trial. Prints one line per trial and the count survived.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_lock_wait import check_applied_once, cic_folder, start_up

from conftest import SERVER_URL, create_database, drop_database, url_for


def trial(procs: int, count: int) -> tuple[bool, str]:
    name = create_database(SERVER_URL, "stress")
    url = url_for(SERVER_URL, name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            cic_folder(folder, count, rows=300, delay=0.005, cic_every=10)
            running = []
            for _ in range(procs):
                running.append(start_up(url, folder))
                time.sleep(0.3)
            outs = [p.communicate(timeout=600) for p in running]
            codes = [p.returncode for p in running]
            if any(codes):
                errs = "; ".join(e.strip().splitlines()[-1] for (_o, e), c in zip(outs, codes, strict=True) if c)
                return False, f"exit codes {codes}: {errs}"
            check_applied_once(url, count)
            return True, "clean at the last version, each migration applied once, no invalid index"
    except AssertionError as exc:
        return False, f"check failed: {exc}"
    finally:
        drop_database(SERVER_URL, name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--migrations", type=int, default=50)
    args = ap.parse_args()
    survived = 0
    for i in range(1, args.trials + 1):
        t0 = time.perf_counter()
        ok, detail = trial(args.procs, args.migrations)
        survived += ok
        print(f"trial {i}: {'ok' if ok else 'FAILED'} ({time.perf_counter() - t0:.1f}s) {detail}", flush=True)
    print(f"survived {survived}/{args.trials}")
    sys.exit(0 if survived == args.trials else 1)


if __name__ == "__main__":
    main()
