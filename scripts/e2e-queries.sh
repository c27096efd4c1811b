#!/usr/bin/env bash
# Every dashboard panel and alert-rule expression against real data: starts three real
# agents and a real Prometheus (Debian's 2.42, the binary taken out of its package by
# hack/prometheus.sh: nothing installed, no service started) on loopback only, sends chat
# completions through the pipeline, lets Prometheus scrape, then evaluates each
# expression through the Prometheus HTTP API (hack/queries.py eval).
# Binaries: target/debug (built with `cargo build --bins` when absent).
# Env: E2E_PORT_BASE (21000): agents' API 21081-3, metrics 21091-3, gossip 21947-9 (UDP),
#      Prometheus 21099. Last line: "N passed, M failed"; exit status non-zero on failure.
set -uo pipefail
LOG_TAG=e2e-queries
. "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT"

BASE=${E2E_PORT_BASE:-21000}
BIN_DIR=${BIN_DIR:-target/debug}
WORK=$(mktemp -d /tmp/e2e-queries.XXXXXX)
PIDS=()
PROM_PORT=$((BASE + 99))
PROM="http://127.0.0.1:$PROM_PORT"

cleanup() {
    stop_pids
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PROM_BIN=$(bash hack/prometheus.sh) || abort "no Prometheus (hack/prometheus.sh)"
apt_need jq jq
apt_need curl curl
/usr/bin/python3 -c 'import yaml' 2>/dev/null || apt_need /nonexistent-python3-yaml python3-yaml
ensure_binaries "$BIN_DIR" || abort "cargo build --bins failed"
ensure_model "$BIN_DIR" || abort "could not fetch the default model"

# Static checks first: alert unit tests and metric names against docs/metrics.md.
t_check "promtool test rules (alert unit tests)" "$PROM_BIN/promtool" test rules deploy/prometheus/tests/*.yml
t_check "every query uses only docs/metrics.md names" /usr/bin/python3 hack/queries.py names

for p in $((BASE + 81)) $((BASE + 82)) $((BASE + 83)) $((BASE + 91)) $((BASE + 92)) $((BASE + 93)) "$PROM_PORT"; do
    port_free "$p" || abort "port 127.0.0.1:$p is in use (set E2E_PORT_BASE)"
done

seeds="127.0.0.1:$((BASE + 947)),127.0.0.1:$((BASE + 948)),127.0.0.1:$((BASE + 949))"
for i in 1 2 3; do
    NODE_ID="q-agent-$i" BIND_ADDR=127.0.0.1 ADVERTISE_ADDR=127.0.0.1 BIND_PORT=$((BASE + 80 + i)) \
        GOSSIP_PORT=$((BASE + 946 + i)) METRICS_PORT=$((BASE + 90 + i)) SEED_NODES="$seeds" \
        MODEL_PATH="$MODEL_DIR/${MODEL_FILE:-$DEFAULT_MODEL_FILE}" \
        LOG_LEVEL=info "$BIN_DIR/agent" >"$WORK/agent-$i.log" 2>&1 &
    PIDS+=($!)
done
all_healthy() { local i; for i in 1 2 3; do curl -fsS -m 3 "http://127.0.0.1:$((BASE + 80 + i))/health" || return 1; done; }
if wait_for "${HEALTH_TIMEOUT:-240}" "3 healthy agents" all_healthy; then
    t_ok "3 agents on loopback healthy"
else
    abort "agents did not become healthy"
fi

cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$REPO_ROOT/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: distributed-llm-agents
    static_configs:
      - targets: ["127.0.0.1:$((BASE + 91))", "127.0.0.1:$((BASE + 92))", "127.0.0.1:$((BASE + 93))"]
YAML
"$PROM_BIN/prometheus" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
prom_q() { curl -fsS -m 5 "$PROM/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // "0"'; }
targets_up() { [[ "$(prom_q 'count(up{job="distributed-llm-agents"} == 1)')" == 3 ]]; }
wait_for 60 "Prometheus scraping 3 agents" targets_up && t_ok "Prometheus scrapes the 3 agents" \
    || abort "Prometheus does not scrape the agents"

# Rules loaded and healthy.
rules=$(curl -fsS -m 5 "$PROM/api/v1/rules")
n_rules=$(jq '[.data.groups[].rules[]] | length' <<<"$rules")
bad=$(jq -r '[.data.groups[].rules[] | select(.health == "err") | .name + ": " + .lastError] | join("; ")' <<<"$rules")
[[ "$n_rules" -gt 0 && -z "$bad" ]] && t_ok "Prometheus loaded $n_rules alert rules" || t_fail "alert rules: $n_rules loaded; errors: $bad"

# Traffic through the pipeline, entered at agent 2.
for prompt in "Say hello." "Name a colour."; do
    if body=$(chat "http://127.0.0.1:$((BASE + 82))" "$prompt" 8) && [[ -n "$(jq -r '.choices[0].message.content // empty' <<<"$body")" ]]; then
        t_ok "chat completion via agent 2: $(jq -c '.choices[0].message.content' <<<"$body")"
    else
        t_fail "chat completion via agent 2 failed: ${body:-no answer}"
    fi
done
ingested() {
    [[ "$(prom_q 'sum(distributed_llm_inference_requests_total)')" -ge 2 ]] 2>/dev/null &&
        [[ "$(prom_q 'sum(distributed_llm_hop_latency_seconds_count)')" != 0 ]]
}
wait_for 60 "Prometheus to ingest the requests" ingested || t_fail "requests not visible in Prometheus"
sleep 5 # a few more scrapes so that rate() windows hold samples after the requests

out=$(/usr/bin/python3 hack/queries.py eval "$PROM")
grep -v '^[0-9]* passed, [0-9]* failed$' <<<"$out"
read -r qp qf < <(tail -1 <<<"$out" | awk '{print $1, $3}')
T_PASS=$((T_PASS + ${qp:-0}))
T_FAIL=$((T_FAIL + ${qf:-1}))
finish
