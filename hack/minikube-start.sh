#!/usr/bin/env bash
# `make minikube-start`: starts minikube (if needed), loads the agent image and the
# model into it, deploys deploy/k8s and waits for the agents to be ready.
# Env: MINIKUBE_CPUS (2), MINIKUBE_MEMORY (6g), MODEL_DIR, MODEL_FILE, BIN_DIR (target/release).
set -euo pipefail
LOG_TAG=minikube
. "$(dirname "$0")/lib.sh"

need minikube "install it: https://minikube.sigs.k8s.io/docs/start/"
need kubectl "install it: https://kubernetes.io/docs/tasks/tools/"
MODEL_FILE="${MODEL_FILE:-$DEFAULT_MODEL_FILE}"
[[ -r "$MODEL_DIR/$MODEL_FILE" ]] || die "model $MODEL_DIR/$MODEL_FILE not found: run 'make model' first"

if ! minikube status >/dev/null 2>&1; then
    log "starting minikube"
    minikube start --cpus="${MINIKUBE_CPUS:-2}" --memory="${MINIKUBE_MEMORY:-6g}"
fi

NO_GRAFANA=1 PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}" "$REPO_ROOT/hack/images.sh"
log "loading distributed-llm/agent:latest into minikube"
minikube image load distributed-llm/agent:latest

log "copying the model to the minikube node (/data/distributed-llm/models)"
minikube ssh -- "sudo mkdir -p /data/distributed-llm/models && sudo chmod 755 /data/distributed-llm/models"
if ! minikube ssh -- "test -s /data/distributed-llm/models/$MODEL_FILE"; then
    minikube cp "$MODEL_DIR/$MODEL_FILE" "/data/distributed-llm/models/$MODEL_FILE"
    minikube ssh -- "sudo chmod 644 /data/distributed-llm/models/$MODEL_FILE"
fi

log "deploying deploy/k8s"
kubectl kustomize --load-restrictor=LoadRestrictionsNone "$REPO_ROOT/deploy/k8s" | kubectl apply -f -
# A new image with the same tag: restart the pods so they pick it up.
kubectl -n distributed-llm rollout restart statefulset/agent >/dev/null
kubectl -n distributed-llm rollout status statefulset/agent --timeout=300s \
    || die "agents not ready: kubectl -n distributed-llm get pods; kubectl -n distributed-llm logs agent-0"
log "deployed. Agents: kubectl -n distributed-llm port-forward svc/agent 8080:8080;" \
    "Prometheus: $(minikube service -n distributed-llm prometheus --url 2>/dev/null || echo 'minikube service -n distributed-llm prometheus');" \
    "TUI: make run-tui-k8s"
