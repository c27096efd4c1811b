#!/usr/bin/env bash
# Shared helpers for the hack/ and scripts/e2e-* scripts. Source it; do not run it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-distributed-llm}"
LOCAL_BASE_IMAGE="distributed-llm/debian-base:bookworm"
LOCAL_PROMETHEUS_IMAGE="distributed-llm/prometheus:local"
DEFAULT_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
GEN_DIR="$REPO_ROOT/target/compose"

log() { printf '\033[1;34m[%s]\033[0m %s\n' "${LOG_TAG:-dev}" "$*" >&2; }
warn() { printf '\033[1;33m[%s] warning:\033[0m %s\n' "${LOG_TAG:-dev}" "$*" >&2; }
die() { printf '\033[1;31m[%s] error:\033[0m %s\n' "${LOG_TAG:-dev}" "$*" >&2; exit 1; }

# The compose command: `docker compose` (v2) when present, else `docker-compose` (v1).
compose_cmd() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose"
    else
        return 1
    fi
}

# Run compose on this project: docker-compose.yml plus the generated override for
# AGENT_COUNT > 3 when it exists (AGENTS_FILE), plus COMPOSE_EXTRA_FILES (space separated).
dc() {
    local cmd files=(-f "$REPO_ROOT/docker-compose.yml")
    cmd=$(compose_cmd) || die "neither 'docker compose' nor 'docker-compose' is installed"
    local agents="${AGENTS_FILE:-$GEN_DIR/docker-compose.agents.yml}"
    [[ -f "$agents" ]] && files+=(-f "$agents")
    for f in ${COMPOSE_EXTRA_FILES:-}; do files+=(-f "$f"); done
    [[ -f "$GEN_DIR/images.env" ]] && set -a && . "$GEN_DIR/images.env" && set +a
    # shellcheck disable=SC2086
    (cd "$REPO_ROOT" && $cmd -p "$COMPOSE_PROJECT_NAME" --project-directory "$REPO_ROOT" "${files[@]}" "$@")
}

# agent-1 .. agent-$AGENT_COUNT
agent_services() {
    local n="${AGENT_COUNT:-3}" i
    [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 12 ]] || die "AGENT_COUNT must be 1..12 (got '$n')"
    for ((i = 1; i <= n; i++)); do echo "agent-$i"; done
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"; }

# Install Debian packages when a command is missing (root or sudo).
apt_need() { # apt_need <command> <package>
    command -v "$1" >/dev/null 2>&1 && return 0
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    log "installing $2 with apt-get"
    $sudo apt-get install -y "$2" >/dev/null 2>&1 \
        || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y "$2" >/dev/null 2>&1; } \
        || die "could not install $2 (apt-get install -y $2)"
}

# Poll a command until it succeeds or the deadline (seconds) passes.
wait_for() { # wait_for <seconds> <description> <command...>
    local secs="$1" what="$2" end; shift 2
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || { warn "timed out after ${secs}s waiting for $what"; return 1; }
        sleep 2
    done
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Make an image available: present locally, or pulled within a bounded time.
image_obtainable() {
    image_exists "$1" && return 0
    timeout "${PULL_TIMEOUT:-60}" docker pull -q "$1" >/dev/null 2>&1
}
