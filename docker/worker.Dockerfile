# syntax=docker/dockerfile:1
# Prefect process worker with this project installed from uv.lock (same versions as CI), used by
# docker-compose.yml's prefect-worker service. Build context: the repository root.
#   docker build -f docker/worker.Dockerfile -t askfrank-migrator-worker .
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /uvx /bin/

# The environment lives outside /app so that a developer's .venv copied with the context is ignored.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

WORKDIR /app

# Dependencies first (cached layer while only the project's code changes).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

# The project itself: migrations, flows, tasks, prefect.yaml and deployments/ are run from /app.
COPY . /app
RUN --mount=type=cache,target=/root/.cache/uv \
    rm -rf /app/.venv /app/.migrator /app/backups && \
    uv sync --frozen --no-dev

# Run as an unprivileged user (the embedded PostgreSQL server, the fallback without DATABASE_URL, refuses root).
RUN useradd --create-home --uid 10001 migrator && chown -R migrator /app
USER migrator

CMD ["prefect", "worker", "start", "--pool", "migrations", "--type", "process"]
