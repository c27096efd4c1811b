#!/usr/bin/env bash
# Resolves and builds the images of the compose stack, then writes the choice to
# target/compose/images.env (read by hack/compose.sh and the Makefile's compose calls).
#
# Each long step says what it does and roughly how long it takes. Images are built with
# BuildKit when docker buildx is installed, else with the legacy builder.
#
# Env (all optional):
#   BIN_DIR           prebuilt binaries for the agent image (target/release); the image
#                     gets copies stripped of debug info (target/image/<profile>/), the
#                     originals keep their symbols for local profiling
#   WITH_TUI=1        put the tui binary in the image too (it normally runs on the host)
#   BASE_IMAGE        base of the agent/prometheus images; default: the local
#                     debootstrap image if present, else debian:bookworm-slim if it can
#                     be pulled, else the local one is built (scripts/build-base-image.sh)
#   AGENT_IMAGE       tag of the agent image (distributed-llm/agent:latest)
#   PROMETHEUS_IMAGE  default prom/prometheus:v2.53.0 if obtainable, else a local build
#                     from Debian's prometheus package (distributed-llm/prometheus:local)
#   GRAFANA_IMAGE     default grafana/grafana:10.4.2; skipped (with a warning) if it
#                     cannot be obtained or NO_GRAFANA=1
set -euo pipefail
LOG_TAG=images
. "$(dirname "$0")/lib.sh"

need docker "install Docker: https://docs.docker.com/engine/install/"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running? are you in the docker group?)"

BIN_DIR="${BIN_DIR:-target/release}"
AGENT_IMAGE="${AGENT_IMAGE:-distributed-llm/agent:latest}"
mkdir -p "$GEN_DIR"

[[ -x "$REPO_ROOT/$BIN_DIR/agent" ]] \
    || die "$BIN_DIR/agent not found: build it first (cargo build --release --bins, or make build)"

if [[ -z "${BASE_IMAGE:-}" ]]; then
    if image_exists "$LOCAL_BASE_IMAGE"; then
        BASE_IMAGE="$LOCAL_BASE_IMAGE"
    elif image_obtainable debian:bookworm-slim; then
        BASE_IMAGE=debian:bookworm-slim
    else
        log "debian:bookworm-slim cannot be pulled: building a local base image"
        BASE_IMAGE="$LOCAL_BASE_IMAGE"
    fi
fi
if [[ "$BASE_IMAGE" == "$LOCAL_BASE_IMAGE" ]] && ! image_exists "$BASE_IMAGE"; then
    step "building the base image $BASE_IMAGE (debootstrap of Debian bookworm + docker import, once)" \
        "about 30 s, 2 min when apt must install debootstrap first; most of it downloading ~40 MB of packages"
    BASE_IMAGE="$BASE_IMAGE" "$REPO_ROOT/scripts/build-base-image.sh"
fi
image_exists "$BASE_IMAGE" || image_obtainable "$BASE_IMAGE" || die "base image $BASE_IMAGE is not available"

IMAGE_BIN_DIR=$(stage_binaries "$BIN_DIR")
step "building $AGENT_IMAGE from $BIN_DIR (stripped copies in $IMAGE_BIN_DIR) on $BASE_IMAGE" "about 10 s"
docker_build --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg BIN_DIR="$IMAGE_BIN_DIR" \
    -t "$AGENT_IMAGE" "$REPO_ROOT" >/dev/null || die "docker build of $AGENT_IMAGE failed"
log "$AGENT_IMAGE: $(image_mb "$AGENT_IMAGE") MB"

if [[ -z "${PROMETHEUS_IMAGE:-}" ]]; then
    if image_obtainable prom/prometheus:v2.53.0; then
        PROMETHEUS_IMAGE=prom/prometheus:v2.53.0
    else
        PROMETHEUS_IMAGE="$LOCAL_PROMETHEUS_IMAGE"
    fi
fi
if [[ "$PROMETHEUS_IMAGE" == "$LOCAL_PROMETHEUS_IMAGE" ]] && { ! image_exists "$PROMETHEUS_IMAGE" || [[ "${REBUILD:-0}" == 1 ]]; }; then
    step "building $PROMETHEUS_IMAGE (Debian's prometheus package on $BASE_IMAGE, once)" \
        "about 30 s, most of it apt downloading ~100 MB"
    docker_build --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$PROMETHEUS_IMAGE" \
        "$REPO_ROOT/deploy/prometheus" >/dev/null || die "docker build of $PROMETHEUS_IMAGE failed"
fi

GRAFANA_IMAGE="${GRAFANA_IMAGE:-grafana/grafana:10.4.2}"
GRAFANA_AVAILABLE=0
if [[ "${NO_GRAFANA:-0}" != 1 ]]; then
    if image_obtainable "$GRAFANA_IMAGE"; then
        GRAFANA_AVAILABLE=1
    else
        warn "$GRAFANA_IMAGE cannot be obtained (no registry?): the stack runs without Grafana" \
             "(nothing will listen on :3000). Set GRAFANA_IMAGE to a local Grafana image to get the dashboards."
    fi
fi

cat >"$GEN_DIR/images.env" <<ENV
BIN_DIR=$IMAGE_BIN_DIR
BASE_IMAGE=$BASE_IMAGE
AGENT_IMAGE=$AGENT_IMAGE
PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE
GRAFANA_IMAGE=$GRAFANA_IMAGE
GRAFANA_AVAILABLE=$GRAFANA_AVAILABLE
ENV
log "images: agent=$AGENT_IMAGE prometheus=$PROMETHEUS_IMAGE grafana=$([[ $GRAFANA_AVAILABLE == 1 ]] && echo "$GRAFANA_IMAGE" || echo none)"
