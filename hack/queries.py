#!/usr/bin/env python3
"""Every PromQL expression of the Grafana dashboards and the alert rules.

  queries.py list                 print them (source, expression)
  queries.py names                check the metric names against docs/metrics.md
  queries.py eval PROMETHEUS_URL  evaluate each through the Prometheus HTTP API:
                                  fails on errors and on empty results (alerts: the
                                  value side of "<value> <op> <threshold>" must return
                                  data and the whole rule must evaluate)
Prints "ok ..." / "FAIL ..." lines and, last, "N passed, M failed".
"""
import glob
import json
import pathlib
import re
import sys
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME_RE = re.compile(r"\b(distributed_llm_[a-z0-9_]+|up)\b(?!\s*\()")
# Grafana variables -> values Prometheus accepts.
GRAFANA_VARS = [("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m"),
                ("${node}", ".*"), ("$node", ".*")]
# Per-GPU series only exist on agents that see an NVIDIA GPU.
GPU_DEVICE_METRICS = {"distributed_llm_node_gpu_memory_total_bytes", "distributed_llm_node_gpu_memory_used_bytes",
                      "distributed_llm_node_gpu_utilization_percent"}
THRESHOLD_RE = re.compile(r"^(?P<value>.*\S)\s*(?:>|<|>=|<=|==|!=)\s*-?[0-9.eE+]+\s*$", re.S)


def load_yaml(path):
    import yaml  # python3-yaml

    with open(path) as f:
        return yaml.safe_load(f)


def collect():
    """(source, expr, kind) for every dashboard target, template variable and alert rule."""
    out = []
    for f in sorted(glob.glob(str(ROOT / "deploy/grafana/dashboards/*.json"))):
        d = json.load(open(f))
        name = pathlib.Path(f).stem
        panels = list(d.get("panels", []))
        while panels:
            p = panels.pop(0)
            panels.extend(p.get("panels", []))  # rows
            for t in p.get("targets", []):
                out.append((f"{name}: {p['title']} [{t.get('refId', '')}]", t["expr"], "panel"))
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.match(r"label_values\((.+),\s*\w+\)$", q or "")
            if m:
                out.append((f"{name}: variable ${v['name']}", m.group(1), "panel"))
    for f in sorted(glob.glob(str(ROOT / "deploy/prometheus/rules/*.yml"))):
        for g in load_yaml(f)["groups"]:
            for r in g["rules"]:
                out.append((f"rules: {r.get('alert') or r.get('record')}", r["expr"], "alert"))
    return out


def substitute(expr):
    for var, val in GRAFANA_VARS:
        expr = expr.replace(var, val)
    return expr


def contract_names():
    text = (ROOT / "docs/metrics.md").read_text()
    rows = re.findall(r"^\|\s*`(distributed_llm_[a-z0-9_]+)`\s*\|\s*([a-z]+)", text, re.M)
    names = set()
    for name, kind in rows:
        names.add(name)
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


def names_in(expr):
    # label names and label values are not metric names: drop {...} and "..." first
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    return set(NAME_RE.findall(bare))


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def ok(self, msg):
        self.passed += 1
        print(f"ok   {msg}")

    def fail(self, msg):
        self.failed += 1
        print(f"FAIL {msg}")

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def cmd_names():
    known, rep = contract_names(), Report()
    if len(known) < 20:
        rep.fail(f"docs/metrics.md lists only {len(known)} names: cannot check")
    for src, expr, _ in collect():
        used = names_in(expr)
        unknown = sorted(n for n in used if n not in known and n != "up")
        if not used:
            rep.fail(f"{src}: no metric name in {expr!r}")
        elif unknown:
            rep.fail(f"{src}: not in docs/metrics.md: {', '.join(unknown)}")
        else:
            rep.ok(f"{src}")
    return rep.done()


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def cmd_eval(base):
    rep = Report()
    try:
        gpus = sum(float(s["value"][1]) for s in query(base, "distributed_llm_node_gpu_count"))
    except Exception as e:  # noqa: BLE001
        rep.fail(f"cannot query {base}: {e}")
        return rep.done()
    for src, expr, kind in collect():
        e = substitute(expr)
        try:
            result = query(base, e)
            if kind == "alert":
                m = THRESHOLD_RE.match(e)
                if not m:
                    rep.fail(f"{src}: not of the form '<value> <op> <threshold>': {e}")
                    continue
                result = query(base, m.group("value"))
        except Exception as err:  # noqa: BLE001
            rep.fail(f"{src}: {err}\n     {e}")
            continue
        if result:
            rep.ok(f"{src} ({len(result)} series)")
        elif gpus == 0 and names_in(e) & GPU_DEVICE_METRICS:
            rep.ok(f"{src} (empty: no agent has a GPU; per-GPU series absent as documented)")
        else:
            rep.fail(f"{src}: returned nothing\n     {e}")
    return rep.done()


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        for src, expr, kind in collect():
            print(f"{kind}\t{src}\t{expr}")
        return 0
    if len(argv) >= 2 and argv[1] == "names":
        return cmd_names()
    if len(argv) >= 3 and argv[1] == "eval":
        return cmd_eval(argv[2].rstrip("/"))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
