#!/usr/bin/env bash
# End-to-end test of the README's first command, `./hack/local-dev-tui.sh`, in tmux
# (160×48), up to the TUI and through it, as a stack of its own beside the dev stack,
# which may be running (project dllm-e2e, its own network, volumes and host ports
# 28080-28082, 29090-29093: hack/lib.sh use_test_stack):
#  1. the script runs (debug binaries: BIN_DIR=target/debug) and opens the TUI, which
#     finds the three Docker agents of its project (and no other);
#  2. its last line before the TUI ("ready: ...") names only services that answer:
#     every URL in it answers, and Grafana is named only when its container runs;
#     no grafana-data volume exists without Grafana; every long step was announced and
#     no legacy-builder deprecation notice was printed;
#  3. at 160 columns the nodes table's columns are as wide as their content;
#  4. a chat completion entered at agent-2: every stage shows a STEP/S figure while it
#     runs, and TOK/S / STEP/S fall back to "-" when idle; the Cluster view lists the
#     links a token travels, each with a measured latency;
#  5. q quits; `make dev-stop` prints no "not found" line; `make dev-clean` cleans; the
#     other containers (the dev stack's), the volumes and the images are as before.
# Last line: "N passed, M failed"; exit status non-zero on failure; cleans up on any exit.
# Env: KEEP=1 keeps the stack.
set -uo pipefail
LOG_TAG=e2e-local-dev
. "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT"

export BIN_DIR=${BIN_DIR:-target/debug}
export BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE_IMAGE}
export PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-$LOCAL_PROMETHEUS_IMAGE}
export AGENT_COUNT=3 LOG_LEVEL=info
SESSION="e2e-local-dev-$$"
WORK=$(mktemp -d)
STARTED=0

cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null
    if ((STARTED)) && [[ "${KEEP:-0}" != 1 ]]; then
        bash hack/dev-down.sh --clean >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
screen() { tmux capture-pane -p -t "$SESSION" 2>/dev/null; }
# Plain text of everything the script printed (tmux pipe-pane), colours removed.
script_log() { sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r//g' "$WORK/pane.log"; }
wait_screen() { # wait_screen <seconds> <description> <command on $s...>
    local secs="$1" what="$2" end; shift 2
    end=$((SECONDS + secs))
    until s=$(screen) && "$@" "$s"; do
        tmux has-session -t "$SESSION" 2>/dev/null || { echo "the tmux session is gone (waiting for $what)"; return 1; }
        if [[ $s == *"local-dev-tui.sh exited with"* && $what != "the TUI to exit" ]]; then
            echo "local-dev-tui.sh ended while waiting for $what; screen:"; echo "$s"; return 1
        fi
        ((SECONDS < end)) || { echo "timed out waiting for $what; screen:"; echo "$s"; return 1; }
        sleep 0.3
    done
}
row() { grep -m1 "^│$2 " <<<"$1"; } # row <screen> <node>
col() { # col <screen> <first header> <column header> <row key>: the row's cell under the header
    awk -v first="$2" -v h="$3" -v key="$4" '
        index($0, first) && index($0, h) && !start { start = index($0, h); next }
        start && index($0, "│" key " ") == 1 {
            s = substr($0, start); sub(/ .*/, "", s); print s; exit
        }' <<<"$1"
}

# ---- prerequisites ----
command -v docker >/dev/null || abort "docker is not installed"
docker info >/dev/null 2>&1 || abort "cannot talk to the Docker engine"
compose_cmd >/dev/null || apt_need docker-compose docker-compose
apt_need tmux tmux
apt_need jq jq
apt_need curl curl
apt_need make make
ensure_binaries "$BIN_DIR" || abort "cargo build --bins failed"
[[ -x "$BIN_DIR/tui" ]] || abort "$BIN_DIR/tui missing (cargo build --bins)"
ensure_model "$BIN_DIR" || abort "could not fetch the default model"
use_test_stack
PORTS=()
for p in 8080 8081 8082 9090 9091 9092 9093; do PORTS+=("$(host_port "$p")"); done
claim_test_ports "${PORTS[@]}"
before=$(docker_state)

# ---- 1. the README's first command, in tmux ----
STARTED=1
# A tmux server that runs already (the dev stack's TUI, say) gives new sessions its own
# environment, not this script's: the stack's variables are passed on the command line.
stack_vars=()
for v in BIN_DIR BASE_IMAGE PROMETHEUS_IMAGE AGENT_IMAGE AGENT_COUNT LOG_LEVEL COMPOSE_PROJECT_NAME \
    DLLM_PORT_OFFSET DLLM_NET_PREFIX MODEL_DIR; do
    stack_vars+=("$(printf '%q' "$v=${!v}")")
done
tmux new-session -d -s "$SESSION" -x 160 -y 48 -c "$REPO_ROOT" \
    "env ${stack_vars[*]} ./hack/local-dev-tui.sh; echo \"local-dev-tui.sh exited with \$?\"; sleep 600" \
    || abort "tmux new-session failed"
tmux pipe-pane -t "$SESSION" -o "cat >>$WORK/pane.log"
three_rows() { [[ $1 == *"Nodes (3)"* ]] && for a in agent-1 agent-2 agent-3; do row "$1" "$a" | grep -q alive || return 1; done; }
if wait_screen 900 "the TUI with three alive agents" three_rows; then
    t_ok "hack/local-dev-tui.sh opened the TUI and it shows agent-1..3 alive"
else
    script_log | tail -30
    abort "hack/local-dev-tui.sh did not reach the TUI"
fi

# ---- 2. what the script said ----
ready=$(script_log | grep -a '\[local-dev\] ready: ' | tail -1)
echo "     $ready"
[[ -n $ready ]] && t_ok "the script's last line names the services" || t_fail "no 'ready:' line in the script's output"
named_answer() {
    local urls u
    urls=$(grep -oE 'http://localhost:[0-9]+' <<<"$ready")
    # "agents http://localhost:28080 28081 28082": the bare ports are agents too.
    for u in $(grep -oE 'agents http://localhost:[0-9]+( [0-9]+)*' <<<"$ready" | grep -oE ' [0-9]+$| [0-9]+ ' ); do
        urls+=$'\n'"http://localhost:$u"
    done
    [[ -n $urls ]] || { echo "no URL in: $ready"; return 1; }
    for u in $urls; do
        case $u in
            *:$(host_port 9093)) curl -fsS -m 3 "$u/-/ready" >/dev/null || { echo "$u does not answer"; return 1; } ;;
            *:$(host_port 3000)) curl -fsS -m 3 "$u/api/health" >/dev/null || { echo "$u does not answer"; return 1; } ;;
            *) curl -fsS -m 3 "$u/health" >/dev/null || { echo "$u does not answer"; return 1; } ;;
        esac
    done
    echo "all answer: $(tr '\n' ' ' <<<"$urls")"
}
t_check "every URL in the last line answers" named_answer
grafana_consistent() {
    local running=0
    [[ "$(docker inspect -f '{{.State.Running}}' "$(container grafana)" 2>/dev/null)" == true ]] && running=1
    if ((running)); then
        grep -q "Grafana http://localhost:$(host_port 3000)" <<<"$ready" || { echo "Grafana runs but is not named"; return 1; }
    else
        ! grep -qi grafana <<<"$ready" || { echo "Grafana named but not running: $ready"; return 1; }
        ! docker volume inspect "${COMPOSE_PROJECT_NAME}_grafana-data" >/dev/null 2>&1 \
            || { echo "grafana-data volume created without Grafana"; return 1; }
    fi
    echo "grafana running=$running"
}
t_check "Grafana named (and its volume created) only when it runs" grafana_consistent
t_check "every long step announced (build, images, start, health)" bash -c '
    log=$(sed -e "s/\x1b\[[0-9;?]*[A-Za-z]//g" "'"$WORK"'/pane.log")
    for w in "cargo build" "building distributed-llm/agent:" "starting agent-1" "waiting for the agents"; do
        grep -qa "$w" <<<"$log" || { echo "no announcement of: $w"; exit 1; }
    done'
t_check "no legacy-builder deprecation notice" bash -c '! grep -qa "DEPRECATED" "'"$WORK"'/pane.log"'

# ---- 3. columns sized to content at 160 columns ----
fitted() {
    local s header addr_w
    s=$(screen)
    header=$(grep -m1 'NODE' <<<"$s")
    # NODE is as wide as "agent-1" (7) and ADDRESS as its widest address, plus one space.
    addr_w=$(for a in agent-1 agent-2 agent-3; do row "$s" "$a" | awk '{print length($3)}'; done | sort -n | tail -1)
    awk -v h="$header" -v aw="$addr_w" 'BEGIN {
        node = index(h, "NODE"); status = index(h, "STATUS"); addr = index(h, "ADDRESS"); cpu = index(h, "CPU")
        if (status - node != 8) { print "NODE column is " status - node - 1 " wide, want 7"; exit 1 }
        if (cpu - addr != aw + 1) { print "ADDRESS column is " cpu - addr - 1 " wide, want " aw; exit 1 }
        print "NODE 7, ADDRESS " aw " wide"
    }'
}
t_check "nodes table columns fit their content at 160 columns" fitted

# ---- 4. live figures during and after a request ----
curl -fsS -m 120 -H 'Content-Type: application/json' "http://localhost:$(host_port 8081)/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"Write a long story about a lighthouse keeper."}],"max_tokens":96,"temperature":0}' \
    >"$WORK/chat.json" 2>&1 &
chat_pid=$!
all_stepping() {
    local a v
    for a in agent-1 agent-2 agent-3; do
        v=$(col "$1" NODE "STEP/S" "$a")
        [[ $v =~ ^[0-9]+\.[0-9]$ && $v != 0.0 ]] || return 1
    done
}
t_check "while generating, every stage (the middle one too) shows a STEP/S figure" wait_screen 60 "STEP/S on all three agents" all_stepping
entry_tokens() { v=$(col "$(screen)" NODE "TOK/S" agent-2); [[ $v =~ ^[0-9]+\.[0-9]$ ]] || { echo "agent-2 TOK/S: '$v'"; return 1; }; }
t_check "...and the entry agent-2 a TOK/S figure" entry_tokens
wait "$chat_pid"
jq -e '.choices[0].message.content | length > 0' "$WORK/chat.json" >/dev/null \
    && t_ok "the chat completion answered" || t_fail "chat completion failed: $(head -c 300 "$WORK/chat.json")"
all_idle() {
    local a
    for a in agent-1 agent-2 agent-3; do
        [[ $(col "$1" NODE "TOK/S" "$a") == - && $(col "$1" NODE "STEP/S" "$a") == - ]] || return 1
    done
}
t_check "idle again: TOK/S and STEP/S fall to '-' on every agent" wait_screen 20 "idle figures" all_idle
tmux send-keys -t "$SESSION" 2
links_ok() { # every row of the links table has a measured latency (AVG > 0 ms)
    awk '/Links a token travels/ {on = 1; next}
         on && index($0, "FROM") && index($0, "AVG") {start = index($0, "AVG"); next}
         on && start && index($0, "│agent-") == 1 {
             v = substr($0, start); sub(/ .*/, "", v); n++
             if (!(v + 0 > 0)) bad++
         }
         on && /^└/ {on = 0}
         END {exit !(n > 0 && bad == 0)}' <<<"$1"
}
if wait_screen 10 "the links table" links_ok; then
    t_ok "Cluster view lists the links a token travels, each with a measured latency"
    awk '/Links a token travels/,/^└/' <<<"$(screen)" | grep -v '^│ *│$' | sed 's/^/     /'
else
    t_fail "links table"
    screen | sed 's/^/     /'
fi

# ---- 5. quit and tear down through the Makefile ----
tmux send-keys -t "$SESSION" q
t_check "q quits the TUI" wait_screen 10 "the TUI to exit" bash -c '[[ $1 == *"local-dev-tui.sh exited with 0"* ]]' _
t_check "make dev-stop prints no 'not found' line" bash -c 'out=$(make -s dev-stop 2>&1); echo "$out"; ! grep -qi "not found" <<<"$out"'
t_check "no container or network of the project left" bash -c "[[ -z \"\$(docker ps -aq --filter label=com.docker.compose.project=$COMPOSE_PROJECT_NAME)\" ]] && ! docker network inspect ${COMPOSE_PROJECT_NAME}_llm-network >/dev/null 2>&1"
t_check "make dev-clean prints no 'not found' line and says what it keeps" bash -c 'out=$(make -s dev-clean 2>&1); echo "$out"; ! grep -qi "not found" <<<"$out" && grep -q "kept\|removing" <<<"$out"'
t_check "make dev-stop with nothing running says so" bash -c 'make -s dev-stop 2>&1 | grep -q "nothing to stop"'
t_check "other containers (the dev stack's), volumes and images as before" docker_unchanged "$before"
STARTED=0
finish
