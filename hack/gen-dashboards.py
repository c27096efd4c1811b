#!/usr/bin/env python3
"""Generates the Grafana dashboards in deploy/grafana/dashboards/ (committed output).

Every query uses only the metric names of docs/metrics.md; scripts/e2e-queries.sh
evaluates each one against real agents. Run: python3 hack/gen-dashboards.py
"""
import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
N = 'node=~"$node"'
RI = "$__rate_interval"


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "format": fmt}
    if instant:
        t.update({"instant": True, "range": False})
    return t


def panel(kind, title, targets, x, y, w=12, h=8, unit="short", desc="", **extra):
    p = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [t if isinstance(t, dict) else target(*t, ref=chr(65 + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    p.update(extra)
    return p


def ts(title, targets, x, y, **kw):
    return panel("timeseries", title, targets, x, y, **kw)


def stat(title, expr, x, y, w=4, unit="short", desc=""):
    return panel("stat", title, [target(expr, instant=True)], x, y, w=w, h=4, unit=unit, desc=desc)


def quantiles(metric, by, legend):
    return [
        (f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{N}}}[{RI}])))", f"{legend} p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


def dashboard(uid, title, panels, desc):
    for i, p in enumerate(panels):
        p["id"] = i + 1
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["distributed-llm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["distributed-llm"], "asDropdown": True, "title": "distributed-llm"}],
        "templating": {
            "list": [
                {
                    "name": "node",
                    "label": "Node",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(distributed_llm_node_info, node)", "refId": "nodes"},
                    "definition": "label_values(distributed_llm_node_info, node)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def table(title, targets, x, y, w=24, h=8, desc=""):
    return panel(
        "table", title, [target(e, legend=l, ref=chr(65 + i), instant=True, fmt="table") for i, (e, l) in enumerate(targets)],
        x, y, w=w, h=h, desc=desc,
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}}},
        ],
    )


overview = dashboard("dllm-overview", "distributed-llm / Cluster overview", [
    stat("Agents reporting", f"count(distributed_llm_node_info{{{N}}})", 0, 0, desc="Agents whose metrics Prometheus scrapes"),
    stat("Healthy agents", f"sum(distributed_llm_node_health{{{N}}})", 4, 0),
    stat("Alive members (gossip)", 'max(distributed_llm_cluster_members{state="alive"})', 8, 0),
    stat("Model layers", "max(distributed_llm_cluster_model_layers)", 12, 0),
    stat("Layers held (all agents)", "sum(distributed_llm_cluster_layers_held)", 16, 0,
         desc="Equal to the model's layers when the plan covers the model"),
    stat("Plan version", "max(distributed_llm_cluster_plan_version)", 20, 0),
    table("Node status", [
        (f"distributed_llm_node_info{{{N}}}", "info"),
        (f"distributed_llm_node_health{{{N}}}", "healthy"),
        (f"distributed_llm_cluster_layer_start{{{N}}}", "layer start"),
        (f"distributed_llm_cluster_layer_end{{{N}}}", "layer end"),
        (f"distributed_llm_cluster_layers_held{{{N}}}", "layers"),
        (f"distributed_llm_node_cpu_usage_percent{{{N}}}", "cpu %"),
        (f"distributed_llm_inference_active_requests{{{N}}}", "active requests"),
    ], 0, 4, desc="One row per agent: version, API address, health and the layer range it serves"),
    panel("bargauge", "Layers held per agent", [(f"distributed_llm_cluster_layers_held{{{N}}}", "{{node}}")], 0, 12,
          options={"orientation": "horizontal", "displayMode": "gradient"}),
    ts("Gossip members by state", [(f"distributed_llm_cluster_members{{{N}}}", "{{node}} {{state}}")], 12, 12),
    ts("Agent health", [(f"distributed_llm_node_health{{{N}}}", "{{node}}")], 0, 20, desc="1 = healthy"),
    ts("Requests per second by status", [
        (f"sum by (status) (rate(distributed_llm_inference_requests_total{{{N}}}[{RI}]))", "{{status}}")], 12, 20, unit="reqps"),
], "Node status, layer placement and gossip membership of the distributed-llm cluster")

resources = dashboard("dllm-resources", "distributed-llm / Resource utilization", [
    ts("Agent CPU use (% of the CPUs it may use)", [(f"distributed_llm_node_cpu_usage_percent{{{N}}}", "{{node}}")],
       0, 0, unit="percent", desc="The agent process's own CPU time against its cgroup CPU limit (or its cores), not the host's"),
    ts("CPU cores and limit", [
        (f"distributed_llm_node_cpu_cores{{{N}}}", "{{node}} cores"),
        (f"distributed_llm_node_cpu_limit_cores{{{N}}}", "{{node}} limit"),
    ], 12, 0, desc="Logical cores seen, and the CPUs the agent may use (cgroup quota)"),
    ts("Memory used", [
        (f"100 * (1 - distributed_llm_node_memory_available_bytes{{{N}}} / distributed_llm_node_memory_total_bytes{{{N}}})", "{{node}}")],
       0, 8, unit="percent"),
    ts("Memory (bytes)", [
        (f"distributed_llm_node_memory_used_bytes{{{N}}}", "{{node}} used"),
        (f"distributed_llm_node_memory_available_bytes{{{N}}}", "{{node}} available"),
        (f"distributed_llm_node_memory_total_bytes{{{N}}}", "{{node}} total"),
    ], 12, 8, unit="bytes"),
    ts("Agent resident memory", [(f"distributed_llm_process_resident_memory_bytes{{{N}}}", "{{node}}")], 0, 16, unit="bytes"),
    ts("GPUs", [(f"distributed_llm_node_gpu_count{{{N}}}", "{{node}}")], 12, 16),
    ts("GPU memory used", [
        (f"100 * distributed_llm_node_gpu_memory_used_bytes{{{N}}} / distributed_llm_node_gpu_memory_total_bytes{{{N}}}", "{{node}} gpu {{gpu}}")],
       0, 24, unit="percent", desc="Empty on agents without NVIDIA GPUs"),
    ts("GPU utilization", [(f"distributed_llm_node_gpu_utilization_percent{{{N}}}", "{{node}} gpu {{gpu}}")], 12, 24,
       unit="percent", desc="Empty on agents without NVIDIA GPUs"),
], "CPU, memory and GPU use of every agent over time")

network = dashboard("dllm-network", "distributed-llm / Network topology and performance", [
    table("Pipeline links (messages in the time range)", [
        (f"sum by (node, peer) (increase(distributed_llm_network_messages_sent_total{{{N}}}[$__range]))", "messages"),
        (f"sum by (node, peer) (increase(distributed_llm_network_bytes_sent_total{{{N}}}[$__range]))", "bytes"),
    ], 0, 0, w=12, desc="Who sends hidden states to whom: one row per node -> peer link"),
    table("Layer placement", [
        (f"distributed_llm_cluster_layer_start{{{N}}}", "start"),
        (f"distributed_llm_cluster_layer_end{{{N}}}", "end"),
    ], 12, 0, w=12, desc="The contiguous layer range [start, end) of each agent"),
    ts("Bytes sent per second", [
        (f"sum by (node, peer) (rate(distributed_llm_network_bytes_sent_total{{{N}}}[{RI}]))", "{{node}} -> {{peer}}")], 0, 8, unit="Bps"),
    ts("Bytes received per second", [
        (f"sum by (node, peer) (rate(distributed_llm_network_bytes_received_total{{{N}}}[{RI}]))", "{{node}} <- {{peer}}")], 12, 8, unit="Bps"),
    ts("Messages per second", [
        (f"sum by (node, peer) (rate(distributed_llm_network_messages_sent_total{{{N}}}[{RI}]))", "{{node}} -> {{peer}} sent"),
        (f"sum by (node, peer) (rate(distributed_llm_network_messages_received_total{{{N}}}[{RI}]))", "{{node}} <- {{peer}} received"),
    ], 0, 16),
    ts("Link latency", quantiles("distributed_llm_hop_latency_seconds", "node, peer", "{{node}} -> {{peer}}"), 12, 16, unit="s",
       desc="Round trip of the pings on each pipeline link (hidden states go stage to stage, tokens to the entry agent)"),
    ts("Mean hop latency", [
        (f"sum by (node, peer) (rate(distributed_llm_hop_latency_seconds_sum{{{N}}}[{RI}])) / "
         f"sum by (node, peer) (rate(distributed_llm_hop_latency_seconds_count{{{N}}}[{RI}]))", "{{node}} -> {{peer}}")],
       0, 24, unit="s"),
    ts("Gossip members alive", [(f'distributed_llm_cluster_members{{{N}, state="alive"}}', "{{node}}")], 12, 24),
], "Pipeline links between agents, traffic and hop latency")

inference = dashboard("dllm-inference", "distributed-llm / Inference requests", [
    ts("Requests per second", [
        (f"sum by (node, status) (rate(distributed_llm_inference_requests_total{{{N}}}[{RI}]))", "{{node}} {{status}}")], 0, 0, unit="reqps"),
    ts("Failed request ratio", [
        (f'(sum by (node) (rate(distributed_llm_inference_requests_total{{{N}, status!="ok"}}[{RI}])) '
         f"or sum by (node) (rate(distributed_llm_inference_requests_total{{{N}}}[{RI}])) * 0) / "
         f"sum by (node) (rate(distributed_llm_inference_requests_total{{{N}}}[{RI}]))", "{{node}}")],
       12, 0, unit="percentunit", desc="error, rejected and cancelled over all requests"),
    ts("Active requests", [(f"distributed_llm_inference_active_requests{{{N}}}", "{{node}}")], 0, 8),
    ts("Request duration", quantiles("distributed_llm_inference_request_duration_seconds", "node", "{{node}}"), 12, 8, unit="s"),
    ts("Time to first token", quantiles("distributed_llm_inference_time_to_first_token_seconds", "node", "{{node}}"), 0, 16, unit="s"),
    ts("Tokens per second", [
        (f"sum by (node) (rate(distributed_llm_inference_tokens_generated_total{{{N}}}[{RI}]))", "{{node}} generated"),
        (f"sum by (node) (rate(distributed_llm_inference_prompt_tokens_total{{{N}}}[{RI}]))", "{{node}} prompt"),
    ], 12, 16),
    ts("Generation speed of the last request", [(f"distributed_llm_inference_tokens_per_second{{{N}}}", "{{node}}")], 0, 24),
    ts("Stage compute per batch", quantiles("distributed_llm_stage_forward_seconds", "node", "{{node}}"), 12, 24, unit="s",
       desc="Forward time of each agent's own layers for one batch"),
    ts("Sequences per batch", [
        (f"sum by (node) (rate(distributed_llm_stage_batch_sequences_sum{{{N}}}[{RI}])) / "
         f"sum by (node) (rate(distributed_llm_stage_batch_sequences_count{{{N}}}[{RI}]))", "{{node}} mean"),
        (f"histogram_quantile(0.95, sum by (node, le) (rate(distributed_llm_stage_batch_sequences_bucket{{{N}}}[{RI}])))", "{{node}} p95"),
    ], 0, 32, desc="Continuous batching: how many sequences share one pass over the weights"),
    ts("Queues", [
        (f"distributed_llm_inference_queued_requests{{{N}}}", "{{node}} requests waiting for admission"),
        (f"distributed_llm_stage_queued_steps{{{N}}}", "{{node}} steps waiting for the stage"),
        (f"distributed_llm_pipeline_sessions{{{N}}}", "{{node}} open sequences"),
    ], 12, 32),
    ts("KV cache", [
        (f"distributed_llm_kv_cache_bytes{{{N}}}", "{{node}} {{kind}}"),
    ], 0, 40, unit="bytes", desc="KV memory of open sequences and of the prefix cache"),
    ts("Prefix cache hit ratio", [
        (f"sum by (node) (rate(distributed_llm_prefix_cache_hits_total{{{N}}}[{RI}])) / "
         f"(sum by (node) (rate(distributed_llm_prefix_cache_hits_total{{{N}}}[{RI}])) + "
         f"sum by (node) (rate(distributed_llm_prefix_cache_misses_total{{{N}}}[{RI}])))", "{{node}}"),
    ], 12, 40, unit="percentunit", desc="Sequences opened on a cached prefix over those that asked for one"),
    ts("Recoveries", [
        (f"sum by (node) (increase(distributed_llm_pipeline_recoveries_total{{{N}}}[$__range]))", "{{node}}"),
    ], 0, 48, desc="Requests replayed on a new plan after a stage failed"),
    stat("KV capacity (positions)", f"sum(distributed_llm_kv_cache_capacity_positions{{{N}}})", 12, 48),
], "Request rates, latencies, token throughput, batching and KV cache")

for name, d in [("cluster-overview", overview), ("resources", resources), ("network", network), ("inference", inference)]:
    (OUT / f"{name}.json").write_text(json.dumps(d, indent=2) + "\n")
    print(f"wrote {OUT / name}.json")
