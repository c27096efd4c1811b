#!/usr/bin/env bash
# One-shot local setup: checks prerequisites, starts the Docker environment
# (make dev-start: build, model, images, agents + Prometheus + Grafana when its image
# can be had, wait for health) and runs the TUI on this machine in Docker discovery mode.
# Every long step says what it does and roughly how long it takes; the last line before
# the TUI names only the services that answer.
# Env: AGENT_COUNT (3), LOG_LEVEL (info), BIN_DIR (target/release), SKIP_START=1 to only
#      run the TUI, NO_TUI=1 to stop before the TUI (scripts).
set -euo pipefail
LOG_TAG=local-dev
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
BIN_DIR="${BIN_DIR:-target/release}"
export BIN_DIR

need docker "install Docker Engine: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "Docker is installed but the engine is not reachable (start it, or add yourself to the docker group)"
compose_cmd >/dev/null || die "Docker Compose is missing: install the compose plugin or docker-compose"
need cargo "install Rust: https://rustup.rs"
need make "install make (apt-get install make)"
need curl "install curl (apt-get install curl)"

if [[ "${SKIP_START:-0}" != 1 ]]; then
    first=()
    [[ -x "$BIN_DIR/agent" ]] || first+=("build ~7 min on 2 cores")
    [[ -r "$MODEL_DIR/$DEFAULT_MODEL_FILE" ]] \
        || first+=("model download 89 MiB")
    if ! image_exists "$LOCAL_BASE_IMAGE" && ! image_exists debian:bookworm-slim; then
        first+=("base and Prometheus images ~1 min (debootstrap, apt)")
    fi
    if ((${#first[@]})); then
        log "first run here: $(printf '%s, ' "${first[@]}")then seconds on later runs"
    fi
    step "starting the environment: make dev-start (AGENT_COUNT=${AGENT_COUNT:-3}, LOG_LEVEL=${LOG_LEVEL:-info})" \
        "$( ((${#first[@]})) && echo "about 9 min the first time on 2 cores" || echo "under a minute")"
    make --no-print-directory dev-start
fi

grafana=0
[[ -f "$GEN_DIR/images.env" ]] && grafana=$(. "$GEN_DIR/images.env" && echo "${GRAFANA_AVAILABLE:-0}")
answering=$(answering_services "${AGENT_COUNT:-3}" "$grafana")
grep -q '^agent-' <<<"$answering" || die "no agent answers: make dev-status; make dev-logs"
log "ready: $(services_line "$answering")"
[[ "${NO_TUI:-0}" == 1 ]] && exit 0
log "starting the TUI (quit with q; the containers keep running: make dev-stop)"
# Docker discovery of this project's agents only (the e2e test runs its own stack beside
# the dev stack): its containers, and its API ports on localhost (8080-8083 for the dev stack).
export TUI_DOCKER_PORTS="$(host_port 8080)-$(host_port 8083)"
if [[ -x "$BIN_DIR/tui" ]]; then
    exec "$BIN_DIR/tui" --docker --docker-project="$COMPOSE_PROJECT_NAME" --log-level="${LOG_LEVEL:-info}"
fi
exec make --no-print-directory run-tui-docker
