#!/usr/bin/env bash
# Partition and heal: three real agents on 127.0.0.1; an nftables rule on the loopback
# interface drops UDP to and from agent 3's gossip port for PARTITION_SECS (10) s.
# Checks that agents 1-2 mark agent 3 dead and re-plan over the two of them, that
# requests meanwhile complete or fail with a clear error (never hang), and that after
# the heal all three converge to one plan again. Prints detection and recovery times.
# Only loopback traffic is touched, in a dedicated nftables table that is always
# deleted on exit. Needs root and nftables (installed with apt when missing); without
# root it is skipped: a "SKIP: ..." line and exit status 77, which scripts/test.sh reports
# as skipped (never as passed). Binaries: the workspace's (cargo build --workspace --bins,
# seconds when up to date), not a build of its own.
# Env: E2E_PORT_BASE (22000): API 22081-3, metrics 22091-3, gossip 22947-9 (UDP).
# Last line: "N passed, M failed"; exit status non-zero on failure.
set -uo pipefail
LOG_TAG=e2e-partition
. "$(dirname "$0")/../hack/lib.sh"
cd "$REPO_ROOT"

BASE=${E2E_PORT_BASE:-22000}
BIN_DIR=${BIN_DIR:-target/debug}
PARTITION_SECS=${PARTITION_SECS:-10}
TABLE=dllm_partition_test
WORK=$(mktemp -d /tmp/e2e-partition.XXXXXX)
PIDS=()
api() { echo "http://127.0.0.1:$((BASE + 80 + $1))"; }
gossip_port() { echo $((BASE + 946 + $1)); }

cleanup() {
    nft delete table inet "$TABLE" 2>/dev/null
    stop_pids
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $(id -u) != 0 ]]; then
    echo "SKIP: the partition test needs root (nftables rules on the loopback interface); run it as root"
    exit 77
fi
apt_need nft nftables
apt_need jq jq
apt_need curl curl
ensure_binaries "$BIN_DIR" || abort "cargo build --workspace --bins failed"
ensure_model "$BIN_DIR" || abort "could not fetch the default model"
for i in 1 2 3; do
    for p in $((BASE + 80 + i)) $((BASE + 90 + i)) $(gossip_port "$i"); do
        port_free "$p" || abort "port 127.0.0.1:$p is in use (set E2E_PORT_BASE)"
    done
done

seeds="127.0.0.1:$(gossip_port 1),127.0.0.1:$(gossip_port 2),127.0.0.1:$(gossip_port 3)"
for i in 1 2 3; do
    NODE_ID="p-agent-$i" BIND_ADDR=127.0.0.1 ADVERTISE_ADDR=127.0.0.1 BIND_PORT=$((BASE + 80 + i)) \
        GOSSIP_PORT=$(gossip_port "$i") METRICS_PORT=$((BASE + 90 + i)) SEED_NODES="$seeds" \
        MODEL_PATH="$MODEL_DIR/${MODEL_FILE:-$DEFAULT_MODEL_FILE}" \
        LOG_LEVEL=info "$BIN_DIR/agent" >"$WORK/agent-$i.log" 2>&1 &
    PIDS+=($!)
done

# "version nodes" of agent $1's plan when it sees exactly $2 alive members, a complete
# plan over them, and is healthy; fails otherwise.
plan_of() {
    local h v
    h=$(curl -fsS -m 3 "$(api "$1")/health" 2>/dev/null) || return 1
    v=$(curl -fsS -m 3 "$(api "$1")/v1/cluster" 2>/dev/null) || return 1
    jq -e --argjson n "$2" '
        ([.members[] | select(.state == "alive")] | length) == $n
        and .plan.complete and (.plan.assignments | length) == $n' <<<"$v" >/dev/null || return 1
    jq -r '"\(.plan.version) \([.plan.assignments[] | "\(.node_id):\(.start)..\(.end)"] | join(" "))"' <<<"$v"
}
# All agents in "$@" agree on one plan over $n (= $# ) members.
agree() {
    local n=$# first="" p i
    for i in "$@"; do
        p=$(plan_of "$i" "$n") || return 1
        [[ -z $first ]] && first=$p
        [[ $p == "$first" ]] || return 1
    done
    echo "$first"
}
# Poll `agree` every 0.2 s for at most $1 s; prints the plan.
wait_agree() {
    local secs=$1 end out
    shift
    end=$(($(date +%s%N) + secs * 1000000000))
    while (($(date +%s%N) < end)); do
        out=$(agree "$@") && { echo "$out"; return 0; }
        sleep 0.2
    done
    return 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

plan=$(wait_agree "${HEALTH_TIMEOUT:-240}" 1 2 3) || abort "the 3 agents did not agree on a plan"
t_ok "3 agents agree on one plan: $plan"
ok_chat() { chat "$(api "$1")" "Say hello." 8 2>/dev/null | jq -e '.choices[0].message.content' >/dev/null; }
wait_for 60 "a chat completion through agent 1" ok_chat 1 && t_ok "chat through the pipeline before the partition" \
    || t_fail "no chat completion before the partition"

# Requests during the partition: one per second through agent 1 and agent 3; each must
# complete (200) or fail with a JSON error (503/429), never hang (curl -m 60).
requests() {
    local i=0 end=$(($(date +%s) + PARTITION_SECS + 12)) a code
    while (($(date +%s) < end)); do
        for a in 1 3; do
            i=$((i + 1))
            code=$(curl -sS -m 60 -o "$WORK/req-$i.json" -w '%{http_code}' -H 'Content-Type: application/json' \
                "$(api "$a")/v1/chat/completions" \
                -d '{"messages":[{"role":"user","content":"Name three colors."}],"max_tokens":16,"temperature":0}')
            local rc=$?
            if ((rc != 0)); then
                echo "HANG-OR-ERROR agent-$a curl exit $rc"
            elif [[ $code == 200 ]] && jq -e '.choices[0].message.content' "$WORK/req-$i.json" >/dev/null 2>&1; then
                echo "OK agent-$a"
            elif jq -e '.error.message' "$WORK/req-$i.json" >/dev/null 2>&1; then
                echo "CLEAR agent-$a $code $(jq -r '.error.message' "$WORK/req-$i.json" | cut -c1-120)"
            else
                echo "UNCLEAR agent-$a $code $(head -c 200 "$WORK/req-$i.json")"
            fi
        done
        sleep 1
    done
}
# A long streamed request through agent 1 across the partition.
stream_req() {
    curl -sS -N -m 120 -H 'Content-Type: application/json' "$(api 1)/v1/chat/completions" \
        -d '{"messages":[{"role":"user","content":"Write a long story about a dragon."}],"max_tokens":200,"temperature":0,"stream":true}' \
        >"$WORK/stream.txt" 2>&1
    echo $? >"$WORK/stream.rc"
}
requests >"$WORK/requests.txt" &
REQ_PID=$!
stream_req &
STREAM_PID=$!
sleep 1

G3=$(gossip_port 3)
nft -f - <<NFT || abort "could not add the nftables rule"
table inet $TABLE {
    chain input {
        type filter hook input priority -10; policy accept;
        iifname "lo" udp dport $G3 drop
        iifname "lo" udp sport $G3 drop
    }
}
NFT
t0=$(now_ms)
t_ok "partition: UDP to and from 127.0.0.1:$G3 (agent 3's gossip) dropped on lo"

# Agents 1 and 2 mark agent 3 dead and agree on a plan over the two of them.
if plan2=$(wait_agree $((PARTITION_SECS + 20)) 1 2); then
    t_detect=$(($(now_ms) - t0))
    t_ok "agents 1-2 re-planned without agent 3 in ${t_detect} ms: $plan2"
    v=$(curl -fsS -m 3 "$(api 1)/v1/cluster")
    [[ $(jq -r '.members[] | select(.node_id == "p-agent-3") | .state' <<<"$v") == dead ]] \
        && t_ok "agent 1 sees agent 3 dead" || t_fail "agent 1 does not see agent 3 dead: $v"
else
    t_fail "agents 1-2 did not re-plan without agent 3"
fi
# Agent 3, alone, sees the others dead and plans for itself.
if plan3=$(wait_agree 10 3 2>/dev/null); then
    t_ok "agent 3 alone plans for itself: $plan3"
else
    t_fail "agent 3 did not plan alone"
fi

rest=$((PARTITION_SECS * 1000 - ($(now_ms) - t0)))
((rest > 0)) && sleep "$(awk -v ms="$rest" 'BEGIN {printf "%.1f", ms / 1000}')"
nft delete table inet "$TABLE" || t_fail "could not delete the nftables table"
t1=$(now_ms)
t_ok "healed after $(((t1 - t0) / 1000)) s"

if plan=$(wait_agree 90 1 2 3); then
    t_heal=$(($(now_ms) - t1))
    t_ok "one plan over 3 agents again ${t_heal} ms after the heal: $plan"
else
    t_fail "the agents did not re-converge after the heal"
fi

wait "$REQ_PID"
wait "$STREAM_PID"
n_ok=$(grep -c '^OK' "$WORK/requests.txt")
n_clear=$(grep -c '^CLEAR' "$WORK/requests.txt")
n_bad=$(grep -vc '^OK\|^CLEAR' "$WORK/requests.txt")
grep -v '^OK' "$WORK/requests.txt" | sort | uniq -c | sed 's/^/     /'
((n_bad == 0)) && t_ok "requests during the partition: $n_ok completed, $n_clear clear errors, 0 hung" \
    || t_fail "requests during the partition: $n_bad neither completed nor failed clearly"
src=$(cat "$WORK/stream.rc" 2>/dev/null)
if [[ $src == 0 ]] && grep -q 'data: \[DONE\]' "$WORK/stream.txt"; then
    if grep -q '"finish_reason":"' "$WORK/stream.txt"; then
        t_ok "a stream across the partition completed ($(grep -c '"content"' "$WORK/stream.txt") chunks)"
    elif grep -q '"error"' "$WORK/stream.txt"; then
        t_ok "a stream across the partition ended with a clear error: $(grep '"error"' "$WORK/stream.txt" | head -1 | cut -c1-200)"
    else
        t_fail "the stream ended without a finish reason or error"
    fi
else
    t_fail "the stream across the partition did not end properly (curl exit ${src:-?})"
fi
grep -h "pipeline recovered\|re-planning" "$WORK"/agent-1.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220 | sed 's/^/     /'
echo "partition recovery: detection ${t_detect:-?} ms, re-convergence after heal ${t_heal:-?} ms"
ok_chat 3 && t_ok "chat through agent 3 after the heal" || t_fail "no chat through agent 3 after the heal"
finish
