"""Kill -9 at a random statement of a 3-statement non-transactional file, then `recover --resume`
or `--revert`, N times (issue 19's done-when): counts the trials that end "clean" with a schema
other than a fresh migration to the recorded version produces, and INVALID indexes left behind.

    uv run python bench/kill_trials.py --trials 20

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), like the tests; uses their helpers.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_truthful_state import kill_trial, prepare_kill_folder, settings

from conftest import SERVER_URL, create_database, drop_database, url_for
from migrator.engine import Migrator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    wrong = left_invalid = 0
    t0 = time.perf_counter()
    for trial in range(1, args.trials + 1):
        k, action = rng.randint(1, 3), rng.choice(["resume", "revert"])
        names = [create_database(SERVER_URL, "kill"), create_database(SERVER_URL, "fresh")]
        try:
            url, fresh = (url_for(SERVER_URL, n) for n in names)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp)
                prepare_kill_folder(path)
                Migrator(settings(url, path)).goto(1)
                recorded, invalid, same = kill_trial(url, fresh, path, k, action)
        finally:
            for n in names:
                drop_database(SERVER_URL, n)
        (version, dirty), = recorded
        wrong += (not dirty and not same)
        left_invalid += len(invalid)
        print(f"trial {trial:2}: kill at statement {k}, {action:6} -> version {version}, "
              f"{'dirty' if dirty else 'clean'}, schema {'as the files make it' if same else 'DIFFERENT'}, "
              f"{len(invalid)} INVALID index(es)")
    print(f"{args.trials} trials in {time.perf_counter() - t0:.1f} s: {wrong} ended clean with a wrong schema, "
          f"{left_invalid} INVALID index(es) left")
    return 1 if wrong or left_invalid else 0


if __name__ == "__main__":
    sys.exit(main())
