#!/usr/bin/env bash
# End-to-end test of the Docker Compose environment (no registry needed):
#  1. builds the local base image (debootstrap), the agent image from target/debug and a
#     Prometheus image from Debian's package;
#  2. brings up agent-1..3 + prometheus as a stack of its own beside the dev stack, which
#     may be running (project dllm-e2e: containers dllm-e2e-agent-1.., its own network
#     and volumes, host ports 28080-28082, 29090-29093; hack/lib.sh use_test_stack), no Grafana;
#  3. checks health, `curl localhost:28080/health`, the layer split, a chat completion
#     entered at agent-2 that runs on all three agents, Prometheus targets at :29093;
#  4. `docker restart dllm-e2e-agent-2` and checks the cluster recovers;
#  5. `make dev-stop` and `make dev-clean` (for that project) leave nothing behind and
#     print no "not found"; the agent image (stripped binaries) is under 120 MB and no
#     Grafana volume is made for a stack without Grafana; the other containers (the dev
#     stack's), the volumes and the images are as before (the base and Prometheus images
#     aside: kept as caches once built).
# Last line: "N passed, M failed"; exit status non-zero on failure; cleans up on any exit.
# Env: HEALTH_TIMEOUT (300 s).
set -uo pipefail
LOG_TAG=e2e-compose
. "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT"

export BIN_DIR=${BIN_DIR:-target/debug}
export BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE_IMAGE}
export PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-$LOCAL_PROMETHEUS_IMAGE}
export NO_GRAFANA=1 AGENT_COUNT=3 LOG_LEVEL=${LOG_LEVEL:-info}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-300}
AGENTS=(agent-1 agent-2 agent-3)
STARTED=0

cleanup() {
    # Whatever happened: remove this project's containers, network, volumes and image.
    ((STARTED)) && bash hack/dev-down.sh --clean >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM
dump_logs() {
    ((T_FAIL > 0)) && ((STARTED)) || return 0
    for a in "${AGENTS[@]}" prometheus; do
        echo "---- docker logs $(container "$a") (tail)"
        docker logs --tail 25 "$(container "$a")" 2>&1
    done
}
finish() {
    [[ -n "${STARTED_LOGS_DUMPED:-}" ]] || dump_logs
    t_summary
    ((T_FAIL == 0))
    exit
}
abort() { t_fail "$*"; finish; }

# ---- prerequisites ----
command -v docker >/dev/null || abort "docker is not installed"
docker info >/dev/null 2>&1 || abort "cannot talk to the Docker engine"
compose_cmd >/dev/null || apt_need docker-compose docker-compose
apt_need jq jq
apt_need curl curl
apt_need make make
ensure_binaries "$BIN_DIR" || abort "cargo build --bins failed"
ensure_model || abort "could not fetch the default model"
use_test_stack
API=() MET=() PORTS=()
for i in 0 1 2; do
    API+=("http://localhost:$(host_port $((8080 + i)))")
    MET+=("http://localhost:$(host_port $((9090 + i)))/metrics")
    PORTS+=("$(host_port $((8080 + i)))" "$(host_port $((9090 + i)))")
done
PORTS+=("$(host_port 9093)")
PROM=http://localhost:$(host_port 9093)
claim_test_ports "${PORTS[@]}"
before=$(docker_state)

# ---- images and stack ----
STARTED=1
t_check "images built (base $BASE_IMAGE, agent $AGENT_IMAGE from $BIN_DIR, $PROMETHEUS_IMAGE)" hack/images.sh
agent_image_small() {
    local mb
    mb=$(image_mb "$AGENT_IMAGE")
    echo "$AGENT_IMAGE is $mb MB"
    ((mb > 0 && mb < 120))
}
t_check "agent image under 120 MB (stripped binaries)" agent_image_small
t_check "docker compose up agent-1 agent-2 agent-3 prometheus (project $COMPOSE_PROJECT_NAME)" dc up -d --no-build "${AGENTS[@]}" prometheus

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }
agents_healthy() { local a; for a in "${AGENTS[@]}"; do [[ "$(health "$(container "$a")")" == healthy ]] || return 1; done; }
wait_for "$HEALTH_TIMEOUT" "healthy agents" agents_healthy && t_ok "3 agent containers healthy" \
    || abort "agents not healthy: $(for a in "${AGENTS[@]}"; do printf '%s=%s ' "$a" "$(health "$(container "$a")")"; done)"
t_check "curl ${API[0]}/health" curl -fsS -m 5 "${API[0]}/health"

# Each agent holds a non-empty layer range and together they cover the model.
layers_ok() {
    local i held total=0 model
    model=$(metric_sum "${MET[0]}" distributed_llm_cluster_model_layers) || return 1
    for i in 0 1 2; do
        held=$(metric_sum "${MET[$i]}" distributed_llm_cluster_layers_held) || return 1
        ((held > 0)) || { echo "${AGENTS[$i]} holds no layers"; return 1; }
        total=$((total + held))
    done
    ((model > 0 && total == model)) || { echo "layers held $total, model $model"; return 1; }
    echo "layers held: $total of $model"
}
wait_for 120 "layer plan over 3 agents" layers_ok
t_check "the 3 agents split the model's layers" layers_ok

# A chat completion entered at agent-2 runs a forward step on every agent.
forward_counts() { local m; for m in "${MET[@]}"; do metric_sum "$m" distributed_llm_stage_forward_seconds_count; done; }
chat_spans_all() { # chat_spans_all <api url>
    local before after body i
    mapfile -t before < <(forward_counts)
    body=$(chat "$1" "What is the capital of France? Answer in one word." 8) || { echo "request failed: $body"; return 1; }
    jq -e '.choices[0].message.content | length > 0' >/dev/null <<<"$body" || { echo "no content: $body"; return 1; }
    mapfile -t after < <(forward_counts)
    for i in 0 1 2; do
        ((${after[$i]:-0} > ${before[$i]:-0})) || { echo "${AGENTS[$i]} did no forward step (${before[$i]} -> ${after[$i]})"; return 1; }
    done
    echo "answer: $(jq -c '.choices[0].message.content' <<<"$body"); forward steps ${before[*]} -> ${after[*]}"
}
retry_chat() { # the plan may still be converging: retry (bounded) before judging
    local end=$((SECONDS + 120)) out
    until out=$(chat_spans_all "$1" 2>&1); do
        ((SECONDS < end)) || { echo "$out"; return 1; }
        sleep 3
    done
    echo "$out"
}
t_check "chat completion via agent-2 (${API[1]}) spans all three agents" retry_chat "${API[1]}"

# The pipelined greedy answer equals a single-process generation of the same prompt, split
# at the same layers (three equal agents get 10/10/10, as `--stages 3` does), so that the f16
# hidden-state hops happen at the same places and cannot flip a near-tie differently.
same_as_local() {
    local prompt="Name the largest planet of the solar system." cluster single
    cluster=$(chat "${API[1]}" "$prompt" 12 | jq -r '.choices[0].message.content') || return 1
    single=$(docker exec "$(container agent-1)" agent generate --prompt "$prompt" --max-tokens 12 --temperature 0 --stages 3 2>/dev/null) || return 1
    [[ "$cluster" == "$(sed -e 's/[[:space:]]*$//' <<<"$single")" ]] || { echo "cluster: '$cluster' / single process: '$single'"; return 1; }
    echo "both: '$cluster'"
}
t_check "greedy answer through 3 agents equals single-process generation" same_as_local

# Prometheus scrapes every agent.
targets_up() {
    local t
    t=$(curl -fsS -m 5 "$PROM/api/v1/targets") || return 1
    jq -e '[.data.activeTargets[] | select(.labels.job == "distributed-llm-agents")] | length == 3' >/dev/null <<<"$t" &&
        jq -e '[.data.activeTargets[] | .health] | all(. == "up")' >/dev/null <<<"$t"
}
wait_for 90 "Prometheus targets up" targets_up
t_check "Prometheus $PROM/api/v1/targets: all up" targets_up
t_check "Prometheus has agent metrics" bash -c \
    "curl -fsS -m 5 '$PROM/api/v1/query?query=count(distributed_llm_node_info)' | jq -e '.data.result[0].value[1] == \"3\"'"

# Restart agent-2: the cluster recovers and serves again, through agent-2 and agent-1.
t_check "docker restart $(container agent-2)" docker restart -t 10 "$(container agent-2)"
wait_for "$HEALTH_TIMEOUT" "agents healthy after restart" agents_healthy && t_ok "agents healthy after the restart" \
    || t_fail "agents not healthy after the restart"
wait_for 120 "layer plan after restart" layers_ok
t_check "layers covered after the restart" layers_ok
t_check "chat via agent-2 after its restart spans all three agents" retry_chat "${API[1]}"
t_check "chat via agent-1 after the restart" retry_chat "${API[0]}"
wait_for 90 "Prometheus targets up" targets_up
t_check "Prometheus targets all up after the restart" targets_up

# ---- teardown through the Makefile ----
dump_logs
STARTED_LOGS_DUMPED=1
t_check "no grafana-data volume for a stack without Grafana" \
    bash -c "! docker volume inspect ${COMPOSE_PROJECT_NAME}_grafana-data >/dev/null 2>&1"
t_check "make dev-stop, without 'not found' lines" bash -c 'out=$(make -s dev-stop 2>&1) || { echo "$out"; exit 1; }; echo "$out"; ! grep -qi "not found" <<<"$out"'

t_check "no container of the project left after dev-stop" bash -c "[[ -z \"\$(docker ps -aq --filter label=com.docker.compose.project=$COMPOSE_PROJECT_NAME)\" ]]"
t_check "network ${COMPOSE_PROJECT_NAME}_llm-network removed" bash -c "! docker network inspect ${COMPOSE_PROJECT_NAME}_llm-network >/dev/null 2>&1"
t_check "make dev-clean, without 'not found' lines" bash -c 'out=$(make -s dev-clean 2>&1) || { echo "$out"; exit 1; }; echo "$out"; ! grep -qi "not found" <<<"$out"'

t_check "no volume of the project left after dev-clean" bash -c "[[ -z \"\$(docker volume ls -q --filter label=com.docker.compose.project=$COMPOSE_PROJECT_NAME)\" ]]"
t_check "nothing listening on ${PORTS[*]}" bash -c ". hack/lib.sh; for p in ${PORTS[*]}; do port_free \$p || exit 1; done"
t_check "other containers (the dev stack's), volumes and images as before" docker_unchanged "$before"
STARTED=0
finish
