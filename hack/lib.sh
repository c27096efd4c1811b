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

# ---- test bookkeeping for scripts/e2e-*.sh: "ok"/"FAIL" lines, "N passed, M failed" last ----
T_PASS=0
T_FAIL=0
t_ok() { T_PASS=$((T_PASS + 1)); printf 'ok   %s\n' "$*"; }
t_fail() { T_FAIL=$((T_FAIL + 1)); printf 'FAIL %s\n' "$*"; }
t_check() { # t_check <description> <command...>
    local what="$1" out; shift
    if out=$("$@" 2>&1); then t_ok "$what"; else t_fail "$what"; [[ -n "$out" ]] && tail -15 <<<"$out" | sed 's/^/     /'; fi
}
t_summary() { echo "$T_PASS passed, $T_FAIL failed"; }

# Test scripts that run local processes: PIDS holds them, WORK their logs.
stop_pids() { # TERM every process in PIDS, KILL those still alive after 10 s
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null
    done
}
finish() { # on failure show each $WORK/*.log's tail; print the summary; exit with the result
    if ((T_FAIL > 0)); then
        for f in "${WORK:-/nonexistent}"/*.log; do [[ -f $f ]] && { echo "---- tail of $f"; tail -20 "$f"; }; done
    fi
    t_summary
    ((T_FAIL == 0))
    exit
}
abort() { t_fail "$*"; finish; }

# Ensure target/<profile>/{agent,tui} exist (CI builds them first).
ensure_binaries() { # ensure_binaries <bin dir>
    [[ -x "$REPO_ROOT/$1/agent" ]] && return 0
    log "$1/agent missing: cargo build --bins"
    local flags=(); [[ "$1" == target/release ]] && flags=(--release)
    (cd "$REPO_ROOT" && cargo build "${flags[@]}" --bins) || return 1
}

# Ensure the default model is in ~/.cache/distributed-llm/models.
ensure_model() {
    local dir="${MODEL_DIR:-$HOME/.cache/distributed-llm/models}"
    [[ -r "$dir/${MODEL_FILE:-$DEFAULT_MODEL_FILE}" ]] && return 0
    log "model missing: cargo run -p engine --bin fetch-model"
    (cd "$REPO_ROOT" && cargo run -q -p engine --bin fetch-model) >/dev/null
}

# An OpenAI chat completion; prints the response body. chat <base url> <prompt> [max_tokens]
chat() {
    curl -fsS -m "${CHAT_TIMEOUT:-120}" -H 'Content-Type: application/json' "$1/v1/chat/completions" \
        -d "$(jq -nc --arg p "$2" --argjson n "${3:-8}" \
            '{messages: [{role: "user", content: $p}], max_tokens: $n, temperature: 0}')"
}

# One sample of a metric from a /metrics URL, summed over its series.
metric_sum() { # metric_sum <metrics url> <name>
    curl -fsS -m 5 "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%d\n", s}'
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
