#!/usr/bin/env bash
# Proves docs/prefect-local.md's recipe: runs its block (between the recipe:begin/end markers) as
# written, on a fresh clone of this checkout, approves the prod run through the API (what the form's
# Submit does), and checks that the run succeeded and prod is clean at the latest version.
# Everything it starts is stopped on the way out (by pid / process group). Run by
# tests/test_prefect_local_recipe.py.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
CLONE="$WORK/clone"
say() { printf 'recipe: %s\n' "$*"; }

git clone --quiet "$ROOT" "$CLONE"
cd "$CLONE"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# RECIPE_PREFECT_DB: an existing database for the server (the tests pass a copy of an already migrated
# Prefect database, which saves the 20-40 s of Prefect's schema migrations); dropped at the end either way
export PREFECT_LOCAL_PORT=$PORT PREFECT_LOCAL_DB="${RECIPE_PREFECT_DB:-askfrank_prefect_recipe_$$}"
export UV_NO_PROGRESS=1
python3 - docs/prefect-local.md >"$WORK/recipe.sh" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
block = text[text.index("<!-- recipe:begin"):text.index("<!-- recipe:end")]
print("set -euo pipefail\n" + re.search(r"```sh\n(.*?)```", block, re.DOTALL).group(1))
PY
for db in askfrank_dev askfrank_prod; do dropdb -h 127.0.0.1 -U postgres --if-exists "$db"; done

cleanup() {
    set +e
    [ -n "${RECIPE_PGID:-}" ] && kill -TERM -- "-$RECIPE_PGID" 2>/dev/null  # the recipe's group (the webhook sink)
    [ -n "${APPROVER:-}" ] && kill "$APPROVER" 2>/dev/null
    (cd "$CLONE" && DROP_DB=1 scripts/prefect-local.sh down >/dev/null 2>&1)
    (cd "$CLONE" && .venv/bin/migrator embedded stop >/dev/null 2>&1)
    for db in askfrank_dev askfrank_prod; do dropdb -h 127.0.0.1 -U postgres --if-exists "$db" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "running docs/prefect-local.md's block on a fresh clone (Prefect on port $PORT)"
setsid bash "$WORK/recipe.sh" >"$WORK/recipe.log" 2>&1 &
RECIPE_PID=$!
RECIPE_PGID=$RECIPE_PID  # setsid: the recipe leads its own process group

approve() {  # the prod run, once Paused for approval: what Resume > approve > Submit sends
    until [ -f .prefect-local/worker.pid ]; do  # make prefect-up has synced .venv and started everything
        kill -0 "$RECIPE_PID" 2>/dev/null || exit 1
        sleep 2
    done
    PREFECT_API_URL="http://127.0.0.1:$PORT/api" .venv/bin/python - <<'PY'
import sys, time
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
deadline = time.monotonic() + 900
with get_client(sync_client=True) as c:
    while time.monotonic() < deadline:
        try:
            dep = c.read_deployment_by_name("migrate/prod")
        except Exception:
            time.sleep(2)
            continue
        for run in c.read_flow_runs():
            if run.deployment_id == dep.id and run.state is not None and run.state.is_paused():
                print(f"recipe: approving paused run {run.name}: {run.state.message}")
                resume_flow_run(run.id, run_input={"decision": "approve", "approver": "recipe", "comment": "docs recipe"})
                sys.exit(0)
        time.sleep(2)
sys.exit("recipe: the prod run never paused for approval")
PY
}

approve &
APPROVER=$!
status=0
wait "$RECIPE_PID" || status=$?
kill "$APPROVER" 2>/dev/null || true
APPROVER=
cat "$WORK/recipe.log"
[ "$status" = 0 ] || { say "the recipe failed (exit $status)"; tail -30 .prefect-local/worker.log || true; exit 1; }
latest=$(ls migrations/*.up.sql | sed 's#.*/0*\([0-9]*\)_.*#\1#' | sort -n | tail -1)
state=$(psql -h 127.0.0.1 -U postgres -d askfrank_prod -tAc "SELECT version || ' ' || dirty FROM schema_migrations")
[ "$state" = "$latest false" ] || { say "prod is at '$state', expected '$latest false'"; exit 1; }
say "prod run succeeded: askfrank_prod at version $latest, clean"
