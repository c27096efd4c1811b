#!/usr/bin/env bash
# Brings the compose stack up: images (hack/images.sh), AGENT_COUNT agents,
# Prometheus and (when obtainable) Grafana, then waits until every agent is healthy.
# The last line names only the services that answer (Grafana, profile `grafana`, is
# started only when its image can be had, and only then gets its volume).
#
# Env: AGENT_COUNT (3), LOG_LEVEL (info), BIN_DIR (target/release), NO_GRAFANA,
#      MODEL_DIR (the model cache: ~/.cache/distributed-llm/models), MODEL_FILE, HEALTH_TIMEOUT (300 s),
#      GPU=1 adds agent-gpu (profile gpu).
set -euo pipefail
LOG_TAG=dev-up
. "$(dirname "$0")/lib.sh"

MODEL_FILE="${MODEL_FILE:-$DEFAULT_MODEL_FILE}"
export MODEL_DIR MODEL_FILE LOG_LEVEL="${LOG_LEVEL:-info}"
case "$LOG_LEVEL" in debug | info | warn | error) ;; *) die "LOG_LEVEL must be debug, info, warn or error (got '$LOG_LEVEL')" ;; esac
[[ -r "$MODEL_DIR/$MODEL_FILE" ]] || die "model $MODEL_DIR/$MODEL_FILE not found: run 'make model' first"

"$REPO_ROOT/hack/images.sh"
"$REPO_ROOT/hack/gen-agents.sh"
. "$GEN_DIR/images.env"

mapfile -t services < <(agent_services)
services+=(prometheus)
profile=()
if [[ "$GRAFANA_AVAILABLE" == 1 ]]; then
    profile+=(--profile grafana)
    services+=(grafana)
fi
if [[ "${GPU:-0}" == 1 ]]; then
    profile+=(--profile gpu)
    services+=(agent-gpu)
fi

step "starting ${services[*]}" "a few seconds; the agents then load their layers"
dc "${profile[@]}" up -d --no-build "${services[@]}"

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }
all_healthy() {
    local s
    for s in "${services[@]}"; do
        [[ "$s" == agent-* ]] || continue
        [[ "$(health "$(container "$s")")" == healthy ]] || return 1
    done
}
step "waiting for the agents to become healthy" "usually 10-30 s, at most ${HEALTH_TIMEOUT:-300} s"
if ! wait_for "${HEALTH_TIMEOUT:-300}" "healthy agents" all_healthy; then
    for s in "${services[@]}"; do echo "  $(container "$s"): $(health "$(container "$s")")" >&2; done
    die "agents did not become healthy: see 'make dev-logs'"
fi
answering=$(answering_services "${AGENT_COUNT:-3}" "$GRAFANA_AVAILABLE")
log "cluster is up: $(services_line "$answering")"
