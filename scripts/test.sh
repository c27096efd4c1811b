#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it (`bash .ci/run` calls `make test`):
#   1. fetch the default model (SmolLM2-135M-Instruct Q4_1) into ~/.cache/distributed-llm/models
#   2. formatting and lints (cargo fmt --check, cargo clippy -D warnings)
#   3. every crate's unit and integration tests (real model, real agents on 127.0.0.1)
#   4. end-to-end suites: Prometheus queries against real agents, the TUI in tmux,
#      the Docker Compose stack and ./hack/local-dev-tui.sh up to the TUI, in tmux
#      (skipped with a clear message only when no Docker engine)
# Installs what it needs (Debian packages) itself. Last line: "N passed, M failed".
# Env: SKIP_E2E=1 runs steps 1-3 only; SKIP_LINT=1 skips step 2.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Every suite runs the debug binaries built below (`make` exports BIN_DIR=target/release
# for images and the dev stack; a release build here would cost ~20 min).
export BIN_DIR=target/debug
passed=0
failed=0
failures=()
start=$(date +%s)

step() { # name, command...
    local name=$1
    shift
    local t0=$(date +%s)
    echo
    echo "==== $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "==== $name: ok ($(($(date +%s) - t0)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "==== $name: FAILED ($(($(date +%s) - t0)) s)"
    fi
}

apt_install() { # installs the missing Debian packages among "$@"
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

step "prerequisites (apt: tmux curl jq)" apt_install tmux curl jq
# The workspace's binaries are built once here and the agent fetches the model
# (`agent fetch-model`): no separate engine-only build with other features.
step "default model (cargo build --bins, agent fetch-model)" \
    bash -c 'cargo build --workspace --bins -q && target/debug/agent fetch-model'
if [[ "${SKIP_LINT:-0}" != 1 ]]; then
    step "cargo fmt --check" cargo fmt --all -- --check
    step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -q -- -D warnings
fi
step "build binaries" cargo build --workspace --bins -q
step "cargo test (all crates)" cargo test --workspace --no-fail-fast -q
if [[ "${SKIP_E2E:-0}" != 1 ]]; then
    step "offline deploy checks (compose, promtool, dashboards, kustomize)" bash hack/check-deploy.sh
    for s in scripts/e2e-queries.sh scripts/e2e-sdk.sh scripts/e2e-partition.sh scripts/e2e-compose.sh scripts/e2e-local-dev.sh; do
        [[ -f $s ]] && step "$s" bash "$s"
    done
fi

echo
echo "test suites finished in $(($(date +%s) - start)) s"
((failed)) && printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
((failed == 0))
