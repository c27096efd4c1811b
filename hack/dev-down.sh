#!/usr/bin/env bash
# `make dev-stop` / `make dev-clean`: stops and removes the stack's containers and
# networks, quietly and only what exists (compose names every network of the files it
# is given, so the prod override's networks are passed only when they exist).
#   hack/dev-down.sh            containers and networks (make dev-stop)
#   hack/dev-down.sh --clean    also the project's volumes, its agent image (AGENT_IMAGE of
#                               its images.env) and target/compose (make dev-clean); IMAGES=1
#                               also removes the local base and Prometheus images (slow to
#                               rebuild: kept)
# Only the project COMPOSE_PROJECT_NAME (distributed-llm) is touched: the e2e tests' own
# stack (project dllm-e2e) and the dev stack never remove each other's parts.
set -euo pipefail
LOG_TAG=dev-down
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

clean=0
[[ "${1:-}" == --clean ]] && clean=1
need docker "install Docker: https://docs.docker.com/engine/install/"

project=(--filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
containers=$(docker ps -aq "${project[@]}")
networks=()
net=${COMPOSE_PROJECT_NAME}_llm-network
for n in "$net" "${COMPOSE_PROJECT_NAME}_monitoring" "${COMPOSE_PROJECT_NAME}_edge"; do
    docker network inspect "$n" >/dev/null 2>&1 && networks+=("$n")
done

if [[ -n "$containers" || ${#networks[@]} -gt 0 ]]; then
    extra=""
    [[ " ${networks[*]} " == *" ${COMPOSE_PROJECT_NAME}_monitoring "* || " ${networks[*]} " == *" ${COMPOSE_PROJECT_NAME}_edge "* ]] \
        && extra=docker-compose.prod.yml
    if [[ " ${networks[*]} " == *" $net "* ]]; then
        log "stopping $(wc -w <<<"$containers") container(s) and removing ${networks[*]}"
        # compose's own progress lines go to stderr; keep only real errors visible.
        out=$(COMPOSE_EXTRA_FILES="$extra" dc --profile gpu --profile grafana down --remove-orphans 2>&1) \
            || { echo "$out" >&2; die "compose down failed"; }
        grep -iE 'error|warn' <<<"$out" | grep -v 'not found' >&2 || true
    else
        # Containers without the base network (a half-created stack): remove them directly.
        [[ -n "$containers" ]] && docker rm -f $containers >/dev/null
        for n in "${networks[@]}"; do docker network rm "$n" >/dev/null; done
    fi
    # A network compose did not know (files changed since `up`) would stay: remove it.
    for n in "${networks[@]}"; do
        docker network inspect "$n" >/dev/null 2>&1 && docker network rm "$n" >/dev/null
    done
else
    log "no $COMPOSE_PROJECT_NAME container or network: nothing to stop"
fi

((clean)) || exit 0

mapfile -t volumes < <(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
if ((${#volumes[@]})); then
    log "removing volume(s) ${volumes[*]}"
    docker volume rm "${volumes[@]}" >/dev/null
fi
agent_image=$([[ -f $GEN_DIR/images.env ]] && . "$GEN_DIR/images.env"; echo "${AGENT_IMAGE:-distributed-llm/agent:latest}")
images=("$agent_image")
[[ "${IMAGES:-0}" == 1 ]] && images+=("$LOCAL_BASE_IMAGE" "$LOCAL_PROMETHEUS_IMAGE")
for i in "${images[@]}"; do
    if image_exists "$i"; then
        log "removing image $i ($(image_mb "$i") MB)"
        docker image rm "$i" >/dev/null
    fi
done
rm -rf "$GEN_DIR"
[[ $COMPOSE_PROJECT_NAME == distributed-llm ]] && rm -rf target/image # (the staged binaries: shared)
kept=()
for i in "$LOCAL_BASE_IMAGE" "$LOCAL_PROMETHEUS_IMAGE"; do
    image_exists "$i" && kept+=("$i ($(image_mb "$i") MB)")
done
if ((${#kept[@]})); then
    log "kept $(IFS=,; echo "${kept[*]}" | sed 's/,/, /g'): slow to rebuild; IMAGES=1 make dev-clean removes them"
fi
