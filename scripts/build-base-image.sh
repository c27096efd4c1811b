#!/usr/bin/env bash
# Builds the local Debian base image (no registry needed):
#   debootstrap --variant=minbase bookworm  +  docker import.
# Idempotent: does nothing when the image already exists (FORCE=1 rebuilds).
#
# Env: BASE_IMAGE (default distributed-llm/debian-base:bookworm),
#      DEBIAN_MIRROR (default: the first URI of apt's configured Debian source),
#      SUITE (default bookworm), EXTRA_PACKAGES (comma list, default ca-certificates).
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-distributed-llm/debian-base:bookworm}"
SUITE="${SUITE:-bookworm}"
EXTRA_PACKAGES="${EXTRA_PACKAGES:-ca-certificates}"

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running? are you in the docker group?)"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE already exists (FORCE=1 to rebuild)"
    exit 0
fi

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap with apt-get"
    $SUDO apt-get install -y debootstrap >/dev/null 2>&1 \
        || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y debootstrap >/dev/null; } \
        || die "could not install debootstrap"
fi

mirror_from_apt() {
    local uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1=="deb" && $2 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(mirror_from_apt)}"

ROOTFS=$(mktemp -d /tmp/debian-base.XXXXXX)
cleanup() { $SUDO rm -rf "$ROOTFS"; }
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
$SUDO debootstrap --variant=minbase --include="$EXTRA_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; die "debootstrap failed (log: $ROOTFS.log)"; }
rm -f "$ROOTFS.log"

# Keep the image small and apt usable inside later builds.
$SUDO rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
cat <<SRC | $SUDO tee "$ROOTFS/etc/apt/sources.list" >/dev/null
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
SRC

log "docker import -> $BASE_IMAGE"
$SUDO tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
log "built $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
