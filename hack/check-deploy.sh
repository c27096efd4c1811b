#!/usr/bin/env bash
# Offline validation of everything under deploy/ plus the compose files and scripts:
# compose config, promtool check/test, dashboard JSON and metric names (against
# docs/metrics.md), kustomize build and a Kubernetes schema check (promtool: Debian's,
# taken out of its package by hack/prometheus.sh, nothing installed).
# Last line: "N passed, M failed, K skipped"; exit status non-zero on any failure.
set -uo pipefail
LOG_TAG=check-deploy
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

pass=0 fail=0 skip=0
check() { # check <name> <command...>
    local name="$1" out; shift
    if out=$("$@" 2>&1); then
        pass=$((pass + 1)); printf 'ok   %s\n' "$name"
    else
        fail=$((fail + 1)); printf 'FAIL %s\n%s\n' "$name" "$(tail -25 <<<"$out" | sed 's/^/     /')"
    fi
}

PROM_BIN=$(bash hack/prometheus.sh) || die "no promtool (hack/prometheus.sh)"
promtool() { "$PROM_BIN/promtool" "$@"; }
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
$PY -c 'import yaml' 2>/dev/null || apt_need /nonexistent-python3-yaml python3-yaml

check "shell syntax" bash -c 'for f in hack/*.sh scripts/build-base-image.sh scripts/e2e-*.sh; do bash -n "$f" || exit 1; done'
check "compose config" hack/compose.sh config -q
check "compose config (gpu profile)" hack/compose.sh --profile gpu config -q
check "compose config (prod networks)" env COMPOSE_EXTRA_FILES=docker-compose.prod.yml hack/compose.sh --profile gpu config -q
check "compose config (Grafana with its volume, prod)" \
    env COMPOSE_EXTRA_FILES="deploy/grafana/docker-compose.grafana.yml docker-compose.prod.yml" \
    hack/compose.sh --profile grafana config -q
check "compose config (AGENT_COUNT=6)" bash -c 'export AGENTS_FILE=$(mktemp --suffix=.yml); trap "rm -f $AGENTS_FILE" EXIT;
    AGENT_COUNT=6 hack/gen-agents.sh 2>/dev/null && hack/compose.sh config -q &&
    hack/compose.sh config --services | grep -qx agent-6'
check "compose: guide ports and addresses" $PY - <<'PY'
import subprocess, yaml, sys
cfg = yaml.safe_load(subprocess.run(["hack/compose.sh", "config"], capture_output=True, text=True, check=True).stdout)
s = cfg["services"]
want = {"agent-1": ("172.20.0.2", ["8080:8080", "7946:7946", "9090:9090"]),
        "agent-2": ("172.20.0.3", ["8081:8080", "7947:7946", "9091:9090"]),
        "agent-3": ("172.20.0.4", ["8082:8080", "7948:7946", "9092:9090"]),
        "prometheus": ("172.20.0.5", ["9093:9090"]), "grafana": ("172.20.0.6", ["3000:3000"])}
for name, (ip, ports) in want.items():
    svc = s[name]
    assert svc["networks"]["llm-network"]["ipv4_address"] == ip, (name, svc["networks"])
    got = {f'{p["published"]}:{p["target"]}' if isinstance(p, dict) else p.split("/")[0] for p in svc["ports"]}
    assert set(ports) <= got, (name, got)
    if name.startswith("agent"):
        assert svc["container_name"] == f"distributed-llm-{name}" and svc["hostname"] == name
        assert "healthcheck" in svc
assert cfg["networks"]["llm-network"]["ipam"]["config"][0]["subnet"] == "172.20.0.0/16"
print("ports and addresses match the guide")
PY
check "promtool check config (docker, local)" promtool check config --syntax-only \
    deploy/prometheus/prometheus-docker.yml deploy/prometheus/prometheus-local.yml
check "promtool check config (k8s, discovery swapped)" bash -c "
    tmp=\$(mktemp -d); trap 'rm -rf \$tmp' EXIT
    $PY -c 'import sys,yaml; c=yaml.safe_load(open(\"deploy/prometheus/prometheus-k8s.yml\"));
[j.pop(\"kubernetes_sd_configs\") and j.setdefault(\"static_configs\",[{\"targets\":[\"x:9090\"]}]) for j in c[\"scrape_configs\"] if \"kubernetes_sd_configs\" in j];
c.pop(\"rule_files\"); yaml.safe_dump(c, open(sys.argv[1],\"w\"))' \$tmp/k8s.yml && $PROM_BIN/promtool check config --syntax-only \$tmp/k8s.yml"
check "promtool check rules" promtool check rules deploy/prometheus/rules/*.yml
check "promtool test rules" promtool test rules deploy/prometheus/tests/*.yml
check "dashboards: valid JSON, unique uids" $PY - <<'PY'
import json, glob
uids = set()
for f in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    d = json.load(open(f))
    assert d["uid"] not in uids, f
    uids.add(d["uid"])
    assert d["panels"], f
    for p in d["panels"]:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), (f, p["title"])
print(len(uids), "dashboards")
PY
check "dashboards match hack/gen-dashboards.py" bash -c '
    tmp=$(mktemp -d); trap "rm -rf $tmp" EXIT; cp deploy/grafana/dashboards/*.json $tmp/;
    '"$PY"' hack/gen-dashboards.py >/dev/null; rc=0;
    for f in $tmp/*.json; do cmp -s "$f" "deploy/grafana/dashboards/$(basename "$f")" || { echo "stale: $f"; rc=1; }; done;
    cp $tmp/*.json deploy/grafana/dashboards/; exit $rc'
check "queries use only docs/metrics.md names" $PY hack/queries.py names
k8s_schema() {
    local venv="$REPO_ROOT/target/deploy-venv"
    if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
        $PY -m venv "$venv" && "$venv/bin/pip" install -q kubernetes-validate || return 1
    fi
    kubectl kustomize --load-restrictor=LoadRestrictionsNone deploy/k8s >"$venv/k8s.yaml" || return 1
    "$venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 "$venv/k8s.yaml"
}
if command -v kubectl >/dev/null; then
    check "kubectl kustomize deploy/k8s" bash -c 'kubectl kustomize --load-restrictor=LoadRestrictionsNone deploy/k8s >/dev/null'
    check "kubernetes schema (kubernetes-validate --strict)" k8s_schema
else
    skip=$((skip + 2))
    printf 'SKIP %s\n' "kubectl kustomize deploy/k8s, kubernetes schema: kubectl is not installed"
fi

echo "$pass passed, $fail failed, $skip skipped"
((fail == 0))
