#!/usr/bin/env bash
# Prometheus and promtool for the tests and `make prometheus-local`, without installing a
# system service (Debian's `prometheus` package starts one on :9090, agent-1's metrics port):
# the two binaries are taken out of the package (`apt-get download` + `dpkg -x`, no install,
# nothing started) into ${DLLM_CACHE:-~/.cache/distributed-llm}/prometheus/<version>/.
#
#   dir=$(hack/prometheus.sh)     # prints the directory with `prometheus` and `promtool`
#
# Warm runs are instant. Without apt (not Debian), a `prometheus` and `promtool` on PATH
# are used instead. Progress goes to stderr; stdout is only the directory.
set -euo pipefail

CACHE=${DLLM_CACHE:-$HOME/.cache/distributed-llm}
log() { echo "[prometheus.sh] $*" >&2; }
die() {
    echo "[prometheus.sh] error: $*" >&2
    exit 1
}

if ! command -v apt-get >/dev/null; then
    p=$(command -v prometheus || true)
    [[ -n $p && -x $(dirname "$p")/promtool ]] ||
        die "no apt-get and no prometheus/promtool on PATH: install Prometheus 2.x and re-run"
    dirname "$p"
    exit 0
fi

version() { apt-cache show --no-all-versions prometheus 2>/dev/null | awk '/^Version:/ {print $2; exit}'; }
v=$(version)
if [[ -z $v ]]; then
    # The package lists are missing (a fresh container): refresh them (root or sudo).
    sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    log "apt has no 'prometheus' package listed: apt-get update"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    v=$(version)
    [[ -n $v ]] || die "apt knows no 'prometheus' package (Debian bookworm has 2.42)"
fi
dir=$CACHE/prometheus/$v
if [[ -x $dir/prometheus && -x $dir/promtool ]]; then
    echo "$dir"
    exit 0
fi

t0=$(date +%s)
log "Prometheus $v: apt-get download prometheus + dpkg -x into $dir (19 MB download, not installed) ..."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq prometheus >"$tmp/download.log" 2>&1) ||
    die "apt-get download prometheus failed: $(tail -3 "$tmp/download.log" | tr '\n' ' ')"
dpkg -x "$tmp"/prometheus_*.deb "$tmp/root"
mkdir -p "$dir"
for b in prometheus promtool; do
    [[ -x $tmp/root/usr/bin/$b ]] || die "$b is not in the package"
    mv "$tmp/root/usr/bin/$b" "$dir/$b"
done
"$dir/prometheus" --version 2>&1 | head -1 >&2
log "ready in $(($(date +%s) - t0)) s: $dir"
echo "$dir"
