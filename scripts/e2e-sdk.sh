#!/usr/bin/env bash
# Client SDKs against real agents: the official `openai` and `ollama` Python packages
# (installed from PyPI into a cached virtual environment), run with pytest over
# tests/sdk/test_*.py, against one agent and against a 3-agent cluster on loopback.
# The tests read DLLM_URL (the agent entered) and DLLM_AGENTS (1 or 3).
# Binaries: target/debug (built with `cargo build --bins` when absent).
# Env: E2E_PORT_BASE (22000): single agent API 22080 (metrics 22090, gossip 22946),
#      cluster API 22081-3, metrics 22091-3, gossip 22947-9 (UDP);
#      SDK_TESTS: pytest -k expression. Last line: "N passed, M failed".
set -uo pipefail
LOG_TAG=e2e-sdk
. "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT"

BASE=${E2E_PORT_BASE:-22000}
BIN_DIR=${BIN_DIR:-target/debug}
WORK=$(mktemp -d /tmp/e2e-sdk.XXXXXX)
PIDS=()
VENV=${SDK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/distributed-llm/sdk-venv}
# Pinned so a new SDK release cannot change the test's meaning unnoticed.
PKGS=(openai==3.57.0 ollama==0.6.3 pytest==9.2.0 jsonschema==4.26.0)

cleanup() {
    stop_pids
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_need curl curl
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || apt_need /nonexistent-python3-venv python3-venv
ensure_binaries "$BIN_DIR" || abort "cargo build --bins failed"
ensure_model || abort "could not fetch the default model"

if ! "$VENV/bin/python" -c 'import openai, ollama, pytest, jsonschema' 2>/dev/null \
    || [[ "$(cat "$VENV/.pkgs" 2>/dev/null)" != "${PKGS[*]}" ]]; then
    log "installing ${PKGS[*]} into $VENV (about 30 s)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "${PKGS[@]}" \
        && echo "${PKGS[*]}" >"$VENV/.pkgs" || abort "pip install ${PKGS[*]} failed"
fi
t_ok "Python SDKs: $("$VENV/bin/python" -c 'import openai, importlib.metadata as m; print("openai", openai.__version__, "ollama", m.version("ollama"))')"

for p in $((BASE + 80)) $((BASE + 81)) $((BASE + 82)) $((BASE + 83)) $((BASE + 90)) $((BASE + 91)) $((BASE + 92)) $((BASE + 93)); do
    port_free "$p" || abort "port 127.0.0.1:$p is in use (set E2E_PORT_BASE)"
done

start_agent() { # start_agent <name> <index 0..3> <seeds>
    NODE_ID="$1" BIND_ADDR=127.0.0.1 ADVERTISE_ADDR=127.0.0.1 BIND_PORT=$((BASE + 80 + $2)) \
        GOSSIP_PORT=$((BASE + 946 + $2)) METRICS_PORT=$((BASE + 90 + $2)) SEED_NODES="$3" \
        MODEL_PATH="$MODEL_DIR/${MODEL_FILE:-$DEFAULT_MODEL_FILE}" \
        LOG_LEVEL=info "$BIN_DIR/agent" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
}
healthy() { local i; for i in "$@"; do curl -fsS -m 3 "http://127.0.0.1:$((BASE + 80 + i))/health" >/dev/null || return 1; done; }

start_agent sdk-single 0 "127.0.0.1:$((BASE + 946))"
seeds="127.0.0.1:$((BASE + 947)),127.0.0.1:$((BASE + 948)),127.0.0.1:$((BASE + 949))"
for i in 1 2 3; do start_agent "sdk-agent-$i" "$i" "$seeds"; done
wait_for "${HEALTH_TIMEOUT:-240}" "the single agent" healthy 0 || abort "the single agent did not become healthy"
wait_for "${HEALTH_TIMEOUT:-240}" "3 clustered agents" healthy 1 2 3 || abort "the cluster did not become healthy"
t_ok "1 agent and a 3-agent cluster on loopback healthy"

run_pytest() { # run_pytest <description> <url> <agents>
    if DLLM_URL="$2" DLLM_AGENTS="$3" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        ${SDK_TESTS:+-k "$SDK_TESTS"} tests/sdk >"$WORK/pytest-$3.txt" 2>&1; then
        t_ok "$1: $(tail -1 "$WORK/pytest-$3.txt")"
    else
        t_fail "$1"
        tail -60 "$WORK/pytest-$3.txt" | sed 's/^/     /'
    fi
}
run_pytest "SDK tests against one agent" "http://127.0.0.1:$((BASE + 80))" 1
run_pytest "SDK tests through a 3-agent cluster (entered at agent 2)" "http://127.0.0.1:$((BASE + 82))" 3

for i in 0 1 2 3; do
    healthy "$i" || t_fail "agent $i went down during the tests"
done
t_check "no agent panicked" bash -c "! grep -l panicked $WORK/*.log"
finish
