#!/usr/bin/env bash
# One-shot local setup: checks prerequisites, starts the Docker environment
# (make dev-start: build, model, images, agents + Prometheus + Grafana, wait for
# health) and runs the TUI on this machine in Docker discovery mode.
# Env: AGENT_COUNT (3), LOG_LEVEL (info), SKIP_START=1 to only run the TUI.
set -euo pipefail
LOG_TAG=local-dev
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

need docker "install Docker Engine: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "Docker is installed but the engine is not reachable (start it, or add yourself to the docker group)"
compose_cmd >/dev/null || die "Docker Compose is missing: install the compose plugin or docker-compose"
need cargo "install Rust: https://rustup.rs"
need make "install make (apt-get install make)"
need curl "install curl (apt-get install curl)"
if ! command -v debootstrap >/dev/null && ! image_exists "$LOCAL_BASE_IMAGE"; then
    log "note: without registry access the base image is built with debootstrap (installed on demand)"
fi

if [[ "${SKIP_START:-0}" != 1 ]]; then
    log "starting the environment (AGENT_COUNT=${AGENT_COUNT:-3}, LOG_LEVEL=${LOG_LEVEL:-info})"
    make dev-start
fi
curl -fsS -m 5 http://localhost:8080/health >/dev/null || die "agent-1 is not healthy: make dev-status; make dev-logs"
log "agents are healthy; Prometheus http://localhost:9093, Grafana http://localhost:3000 (admin/admin)"
log "starting the TUI (quit with q; the containers keep running: make dev-stop)"
exec make run-tui-docker
