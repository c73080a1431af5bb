#!/usr/bin/env bash
# A local Prefect stack without docker: `prefect server` on the machine's PostgreSQL (a database of
# its own), the `migrations` work pool, every deployment of prefect.yaml, and one process worker.
# State (PREFECT_HOME, pids, logs) lives in .prefect-local/. See docs/prefect-local.md.
#
#   scripts/prefect-local.sh up     # or: make prefect-up
#   scripts/prefect-local.sh down   # or: make prefect-down   (DROP_DB=1 also drops the database)
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$(realpath -m "${PREFECT_LOCAL_DIR:-.prefect-local}")
PORT=${PREFECT_LOCAL_PORT:-4200}
PG_URL=${PREFECT_LOCAL_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}   # the server to put it on
DB=${PREFECT_LOCAL_DB:-askfrank_prefect}
POOL=migrations
API_URL="http://127.0.0.1:${PORT}/api"
PY="uv run --quiet python"

# Everything Prefect here uses its own home and this server, never a developer's profile or Cloud.
for v in $(env | grep -o '^PREFECT_[A-Z_]*' || true); do unset "$v"; done
export PREFECT_HOME="$DIR/home" PREFECT_API_URL="$API_URL"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 NO_PROXY=127.0.0.1,localhost
export MIGRATOR_PROJECT_DIR="$PWD"

say() { printf 'prefect-local: %s\n' "$*"; }
alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

asyncpg_url() {  # postgresql://u[:p]@h:port/x -> postgresql+asyncpg://u[:p]@h:port/$DB
    $PY - "$PG_URL" "$DB" <<'PY'
import sys
from psycopg.conninfo import conninfo_to_dict
i = conninfo_to_dict(sys.argv[1])
auth = str(i.get("user") or "postgres") + (f":{i['password']}" if i.get("password") else "")
print(f"postgresql+asyncpg://{auth}@{i.get('host') or '127.0.0.1'}:{i.get('port') or 5432}/{sys.argv[2]}")
PY
}

database() {  # create | drop
    $PY - "$PG_URL" "$DB" "$1" <<'PY'
import sys
import psycopg
from psycopg import sql
url, name, action = sys.argv[1:]
with psycopg.connect(url, autocommit=True) as conn:
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if action == "create" and not exists:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"prefect-local: created database {name}")
    elif action == "drop" and exists:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        print(f"prefect-local: dropped database {name}")
PY
}

up() {
    mkdir -p "$DIR/home"
    database create
    if alive server; then
        say "server already running (pid $(cat "$DIR/server.pid"))"
    else
        PREFECT_API_DATABASE_CONNECTION_URL="$(asyncpg_url)" \
            setsid nohup uv run --quiet prefect server start --host 127.0.0.1 --port "$PORT" --analytics-off \
            >"$DIR/server.log" 2>&1 </dev/null &
        echo $! >"$DIR/server.pid"
        say "server starting on $API_URL (log: $DIR/server.log)"
    fi
    for _ in $(seq 1 120); do
        $PY -c "import httpx,sys; sys.exit(httpx.get('$API_URL/health', timeout=2).status_code != 200)" 2>/dev/null && break
        alive server || { say "server exited; last lines of $DIR/server.log:"; tail -20 "$DIR/server.log"; exit 1; }
        sleep 1
    done
    uv run --quiet prefect work-pool create "$POOL" --type process --overwrite >/dev/null
    uv run --quiet prefect --no-prompt deploy --all >"$DIR/deploy.log" 2>&1 || { tail -20 "$DIR/deploy.log"; exit 1; }
    say "deployed every flow of prefect.yaml (log: $DIR/deploy.log)"
    if [ "${SCHEDULES:-0}" != 1 ]; then  # locally, nothing runs on its own unless asked
        $PY - <<'PY'
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    for d in c.read_deployments():
        if d.schedules:
            c.pause_deployment(d.id)
PY
        say "scheduled deployments paused (SCHEDULES=1 make prefect-up keeps them running)"
    fi
    if alive worker; then
        say "worker already running (pid $(cat "$DIR/worker.pid"))"
    else
        setsid nohup uv run --quiet prefect worker start --pool "$POOL" --type process --install-policy never \
            >"$DIR/worker.log" 2>&1 </dev/null &
        echo $! >"$DIR/worker.pid"
        say "worker started on pool $POOL (log: $DIR/worker.log)"
    fi
    say "UI: http://127.0.0.1:${PORT}   stop: make prefect-down"
    say "use it from this shell: export PREFECT_API_URL=$API_URL"
}

stop() {  # the process group we started, TERM then KILL
    local name=$1 pid
    alive "$name" || { rm -f "$DIR/$name.pid"; return 0; }
    pid=$(cat "$DIR/$name.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$DIR/$name.pid"
    say "$name stopped"
}

down() {
    stop worker
    stop server
    if [ "${DROP_DB:-0}" = 1 ]; then database drop; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
