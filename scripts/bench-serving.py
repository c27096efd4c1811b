#!/usr/bin/env python3
"""Serving benchmark of issue 11 (`make bench-serving`): agents beside llama-server, measured
with the same streaming OpenAI client, in alternating rounds. Standard library only.

Parts (every figure is printed with the exact commands of the servers that produced it and
the request the client sent):

 1. Concurrent streams on one machine, default model: one agent (target/release/agent, its
    own process on 127.0.0.1) vs `llama-server -np N -t T -c CTX*N` (continuous batching,
    same file, same threads). For each stream count S (--streams, default 1,4,8,16) the
    client runs max(S, --requests) greedy streaming requests (`temperature: 0`, varied
    prompts, `max_tokens` --tokens) on S concurrent connections. Figures: aggregate tok/s
    (generated tokens of all requests / wall time of the whole load), TTFT p50 and p99
    (request sent -> first chunk with non-empty content), per-stream decode tok/s (median
    over requests of (tokens - 1) / (last content chunk - first content chunk)).
 2. A 1B-shape model (scripts/make-gguf.py --arch llama --shape 1b --tokenizer smollm
    --quant Q4_0: hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, the default
    model's vocabulary) that no single agent may hold: 3 agents on loopback, each with
    --memory-limit = half the file (rounded up to the planner's 64 MiB), /v1/cluster must
    show 3 assignments; vs llama-server over two ggml-rpc-servers (--rpc, -ngl 99: llama.cpp's
    own layer split) vs llama-server alone. Streams --streams-1b (default 1,4,8).
 3. 3 agents vs 1 on the default model at every stream count of part 1 (the 3-agent cluster
    takes its turn in the same alternating rounds). From each agent's Prometheus /metrics
    (deltas over each measured load) the per-stage batch time t_i
    (stage_forward_seconds_sum/_count), sequences per batch b_i
    (stage_batch_sequences_sum/_count) and the link round trips (hop_latency_seconds, the
    ring stage1 -> stage2 -> stage3 -> stage1) give, on paper, the rate of the same pipeline
    with each stage on its own machine:
        R = min( min_i b_i / t_i ,  S / (sum_i t_i + sum_links rtt/2) )
    the first term: the slowest stage, busy all the time, emits b_i sequence-steps (= tokens)
    per t_i; the second: a stream has one step in flight, which needs every stage's batch
    time plus one one-way hop per link. (Part 2's cluster gets the same figure.)

The machine is shared: systems alternate within each round (the order flips every round and
stream count), the best and the median round of every figure are reported, with the load
average at start and end. Every process started is killed on exit (also Ctrl-C, errors,
SIGTERM; children also get PR_SET_PDEATHSIG). Ports are free ports on 127.0.0.1.

Run with:  make bench-serving BENCH_SERVING_ARGS="--rounds 2 --markdown"
      or:  python3 scripts/bench-serving.py --rounds 3 --streams 1,4,8,16 --json out.json
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import http.client
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DLLM_CACHE") or Path.home() / ".cache" / "distributed-llm")
LLAMA_CPP_VERSION = "0.3.36"
QUANTUM = 64 * 1024 * 1024  # the planner's memory granularity (crates/cluster/src/placement.rs)

# helpers shared with the engine benchmark (no __pycache__ left in scripts/)
sys.dont_write_bytecode = True
_spec = importlib.util.spec_from_file_location("bench_matrix", REPO / "scripts" / "bench-matrix.py")
bench_matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_matrix)
quote, fmt = bench_matrix.quote, bench_matrix.fmt


def log(*a):
    print("[bench-serving]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# processes: every one is killed on exit
# --------------------------------------------------------------------------------------

def _pdeathsig():
    """In the child: die with the parent (Linux), even if it is SIGKILLed."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Procs:
    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list = []  # (name, Popen, log file)
        self.lock = threading.Lock()

    def start(self, name: str, cmd: list, env: dict | None = None) -> subprocess.Popen:
        logf = open(self.logdir / f"{name}.log", "wb")
        full_env = dict(os.environ)
        for k in ("SEED_NODES", "MODEL_PATH", "MEMORY_LIMIT", "NODE_ID", "BIND_PORT", "GOSSIP_PORT",
                  "METRICS_PORT", "API_KEY", "CLUSTER_SECRET", "TLS_CERT", "TLS_KEY", "RUST_LOG"):
            full_env.pop(k, None)
        full_env.update(env or {})
        p = subprocess.Popen([str(c) for c in cmd], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, start_new_session=True, preexec_fn=_pdeathsig)
        with self.lock:
            self.procs.append((name, p, logf))
        return p

    def log_of(self, name: str) -> Path:
        return self.logdir / f"{name}.log"

    def stop(self, p: subprocess.Popen):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        with self.lock:
            for i, (_, q, f) in enumerate(self.procs):
                if q is p:
                    f.close()
                    del self.procs[i]
                    break

    def stop_all(self):
        with self.lock:
            ps = [p for _, p, _ in self.procs]
        for p in reversed(ps):
            self.stop(p)


PROCS: Procs | None = None


def _cleanup():
    if PROCS is not None:
        PROCS.stop_all()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------
# ports and HTTP
# --------------------------------------------------------------------------------------
_USED_PORTS: set = set()


def free_port(udp: bool = False) -> int:
    """A TCP port free on 127.0.0.1 (and UDP too when asked: the agent's gossip port)."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        ok = port not in _USED_PORTS
        if ok and udp:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                u.close()
        s.close()
        if ok:
            _USED_PORTS.add(port)
            return port
    raise RuntimeError("no free port")


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body.decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)


def http_post_json(port: int, path: str, body: dict, timeout: float = 120.0) -> tuple:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data.decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)


# --------------------------------------------------------------------------------------
# the streaming client
# --------------------------------------------------------------------------------------
TOPICS = [
    "a lighthouse keeper who finds a message in a bottle", "the history of the printing press",
    "how bees communicate inside the hive", "a robot who learns to paint", "the water cycle",
    "a city built on the back of a giant turtle", "why the sky is blue", "the life of a medieval blacksmith",
    "how a steam engine works", "a detective who solves crimes with smells", "the migration of monarch butterflies",
    "a child who befriends a dragon", "how vaccines train the immune system", "the first expedition to Mars",
    "the rise and fall of the Roman Empire", "a baker who opens a shop on the moon", "how rainbows form",
    "a forgotten library under the sea", "the invention of the telephone", "a cat who becomes mayor of a small town",
]
STYLES = [
    "Write a long, detailed story about {}.", "Explain in detail {}, step by step.",
    "Write a long essay about {}.", "Tell me everything you know about {}.",
]


def prompt_for(round_i: int, i: int) -> str:
    """Varied prompts: different per request and per round (the same for every system in a round)."""
    n = len(TOPICS)
    return STYLES[(i + round_i) % len(STYLES)].format(TOPICS[(i * 7 + round_i * 3) % n])


def request_body(prompt: str, tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}


def stream_request(port: int, body: dict, timeout: float) -> dict:
    """One streaming chat request. Times: sent, first and last chunk with non-empty content."""
    res = {"tokens": 0, "chunks": 0, "finish": None}
    t0 = time.perf_counter()
    first = last = None
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            res["error"] = f"HTTP {r.status}: {r.read()[:300].decode(errors='replace')}"
            c.close()
            return res
        usage = None
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            j = json.loads(data)
            if j.get("error"):
                res["error"] = json.dumps(j["error"])[:300]
            if j.get("usage"):
                usage = j["usage"]
            for ch in j.get("choices") or []:
                content = (ch.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    res["chunks"] += 1
                if ch.get("finish_reason"):
                    res["finish"] = ch["finish_reason"]
        c.close()
        res["tokens"] = int(usage["completion_tokens"]) if usage and "completion_tokens" in usage else res["chunks"]
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    res["seconds"] = time.perf_counter() - t0
    if first is not None:
        res["ttft"] = first - t0
        if res["tokens"] > 1 and last > first:
            res["decode_tok_s"] = (res["tokens"] - 1) / (last - first)
    elif "error" not in res:
        res["error"] = "no content chunk"
    return res


def percentile(v: list, q: float):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not v:
        return None
    s = sorted(v)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_load(port: int, streams: int, n_requests: int, tokens: int, round_i: int, timeout: float) -> dict:
    """n_requests requests on `streams` concurrent connections; each connection sends its
    next request when its previous one finished."""
    todo = list(range(n_requests))
    lock = threading.Lock()
    results = []

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            r = stream_request(port, request_body(prompt_for(round_i, i), tokens), timeout)
            r["index"] = i
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    total = sum(r["tokens"] for r in ok)
    ttfts = [r["ttft"] for r in ok if "ttft" in r]
    dec = [r["decode_tok_s"] for r in ok if "decode_tok_s" in r]
    finishes: dict = {}
    for r in ok:
        finishes[r["finish"]] = finishes.get(r["finish"], 0) + 1
    return {"streams": streams, "requests": n_requests, "ok": len(ok), "errors": errors[:5], "n_errors": len(errors),
            "wall_s": wall, "tokens": total, "agg_tok_s": total / wall if wall > 0 and ok else None,
            "ttft_p50_ms": 1e3 * percentile(ttfts, 0.5) if ttfts else None,
            "ttft_p99_ms": 1e3 * percentile(ttfts, 0.99) if ttfts else None,
            "decode_tok_s": statistics.median(dec) if dec else None, "finish": finishes,
            "max_request_s": max((r["seconds"] for r in results), default=None)}


# --------------------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} of an agent's /metrics."""
    st, text = http_get(port, "/metrics", timeout=10)
    out = {}
    if st != 200:
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        labels = frozenset((k, val) for k, val in _LABEL.findall(m.group(2) or "") if k != "node")
        out[(m.group(1), labels)] = v
    return out


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def hop_peers(snap: dict) -> set:
    return {dict(l).get("peer") for (n, l) in snap if n == "distributed_llm_hop_latency_seconds_count"} - {None}


# --------------------------------------------------------------------------------------
# systems
# --------------------------------------------------------------------------------------
class System:
    """A server (or cluster) answering /v1/chat/completions on `port`."""
    label = "?"
    commands: list = []
    port = 0

    def snapshot(self):
        return None

    def stage_stats(self, before, after, streams):
        return None


class AgentCluster(System):
    def __init__(self, procs: Procs, agent: Path, model: Path, n: int, threads: int, tag: str,
                 memory_limit: int | None = None, log_level: str = "warn"):
        self.procs, self.n, self.tag = procs, n, tag
        self.label = f"{n} agent" + ("s" if n > 1 else "")
        self.nodes = []  # (node_id, api, gossip, metrics)
        self.commands = []
        self.popens = []
        env = {"RAYON_NUM_THREADS": str(threads)}
        for i in range(n):
            api, gossip, metrics = free_port(), free_port(udp=True), free_port()
            node = f"{tag}-{i + 1}"
            cmd = [agent, "--node-id", node, "--bind-addr", "127.0.0.1", "--advertise-addr", "127.0.0.1",
                   "--bind-port", api, "--gossip-port", gossip, "--metrics-port", metrics, "--model", model,
                   "--log-level", log_level]
            if memory_limit:
                cmd += ["--memory-limit", memory_limit]
            if i > 0:
                cmd += [f"--seed-nodes=127.0.0.1:{self.nodes[0][2]}"]
            self.nodes.append((node, api, gossip, metrics))
            self.commands.append(f"RAYON_NUM_THREADS={threads} " + quote(cmd))
            self.popens.append(procs.start(node, cmd, env))
        self.port = self.nodes[0][1]
        self.stages = []  # node ids in layer order
        self.assignments = []

    def wait_ready(self, timeout: float = 300.0):
        t0 = time.time()
        last = ""
        while time.time() - t0 < timeout:
            for (node, *_), p in zip(self.nodes, self.popens):
                if p.poll() is not None:
                    raise RuntimeError(f"agent {node} exited with {p.returncode}: "
                                       f"{tail(self.procs.log_of(node))}")
            st, body = http_get(self.port, "/v1/cluster")
            if st == 200:
                j = json.loads(body)
                plan = j.get("plan") or {}
                asg = plan.get("assignments") or []
                last = f"plan {[(a['node_id'], a['start'], a['end']) for a in asg]} complete={plan.get('complete')}" \
                       f" error={j.get('plan_error')}"
                healthy = all(http_get(api, "/health")[0] == 200 for _, api, _, _ in self.nodes)
                if len(asg) == self.n and plan.get("complete") and healthy:
                    st, resp = http_post_json(self.port, "/v1/chat/completions", {
                        "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0})
                    if st == 200:
                        self.assignments = sorted(asg, key=lambda a: a["start"])
                        self.stages = [a["node_id"] for a in self.assignments]
                        log(f"{self.label} ready in {time.time() - t0:.0f} s: {self.plan_text()}")
                        return
                    last += f"; request: {st} {resp[:200]}"
            time.sleep(0.5)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s ({last})")

    def plan_text(self) -> str:
        return ", ".join(f"{a['node_id']} [{a['start']},{a['end']})" for a in self.assignments)

    def metrics_port(self, node: str) -> int:
        return next(m for n, _, _, m in self.nodes if n == node)

    def snapshot(self):
        return {node: scrape(m) for node, _, _, m in self.nodes}

    def stage_stats(self, before: dict, after: dict, streams: int) -> dict:
        """Per stage (layer order): batches, mean batch time t, mean sequences per batch b;
        per ring link: mean round trip; and the on-paper rate with each stage on its own machine."""
        stages = []
        for node in self.stages:
            b, a = before.get(node, {}), after.get(node, {})
            n_batches = delta(a, b, "distributed_llm_stage_forward_seconds_count")
            sec = delta(a, b, "distributed_llm_stage_forward_seconds_sum")
            seq_n = delta(a, b, "distributed_llm_stage_batch_sequences_count")
            seq = delta(a, b, "distributed_llm_stage_batch_sequences_sum")
            stages.append({"node": node, "batches": int(n_batches), "t_ms": 1e3 * sec / n_batches if n_batches else None,
                           "b": seq / seq_n if seq_n else None, "busy_s": sec})
        links = []
        if len(self.stages) > 1:
            ring = list(zip(self.stages, self.stages[1:] + self.stages[:1]))
            for src, dst in ring:
                b, a = before.get(src, {}), after.get(src, {})
                cnt = delta(a, b, "distributed_llm_hop_latency_seconds_count", peer=dst)
                s = delta(a, b, "distributed_llm_hop_latency_seconds_sum", peer=dst)
                if not cnt:  # no ping in the window: the mean so far
                    cnt = a.get(("distributed_llm_hop_latency_seconds_count", frozenset({("peer", dst)})), 0.0)
                    s = a.get(("distributed_llm_hop_latency_seconds_sum", frozenset({("peer", dst)})), 0.0)
                links.append({"from": src, "to": dst, "pings": int(cnt), "rtt_ms": 1e3 * s / cnt if cnt else None})
        out = {"stages": stages, "links": links}
        if all(s["t_ms"] and s["b"] for s in stages):
            bound_stage = min(s["b"] / (s["t_ms"] / 1e3) for s in stages)
            cycle_ms = sum(s["t_ms"] for s in stages) + sum((l["rtt_ms"] or 0.0) / 2 for l in links)
            bound_cycle = streams / (cycle_ms / 1e3)
            out.update(bound_stage=bound_stage, cycle_ms=cycle_ms, bound_cycle=bound_cycle,
                       paper_tok_s=min(bound_stage, bound_cycle))
        return out


class LlamaServer(System):
    def __init__(self, procs: Procs, bin_dir: Path, model: Path, threads: int, np_: int, ctx: int, label: str,
                 name: str, rpc: list | None = None, extra: list | None = None):
        self.procs, self.label, self.name = procs, label, name
        self.port = free_port()
        cmd = [bin_dir / "llama-server", "-m", model, "-t", threads, "-np", np_, "-c", ctx * np_,
               "--host", "127.0.0.1", "--port", self.port]
        if rpc:
            cmd += ["--rpc", ",".join(rpc), "-ngl", "99"]
        cmd += extra or []
        self.commands = [quote(cmd)]
        self.popen = procs.start(name, cmd)

    def wait_ready(self, timeout: float = 300.0):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.popen.returncode}: {tail(self.procs.log_of(self.name))}")
            if http_get(self.port, "/health")[0] == 200:
                st, resp = http_post_json(self.port, "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0})
                if st == 200:
                    log(f"{self.label} ready in {time.time() - t0:.0f} s")
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s: {tail(self.procs.log_of(self.name))}")

    def split_text(self) -> str:
        """llama.cpp's own report of where the weights went (model buffer sizes, offloaded layers)."""
        try:
            text = self.procs.log_of(self.name).read_text(errors="replace")
        except OSError:
            return ""
        keep = [l.split(":", 1)[-1].strip() if "load_tensors" in l else l.strip() for l in text.splitlines()
                if "model buffer size" in l or "offloaded" in l]
        return "; ".join(dict.fromkeys(keep))


def start_rpc_servers(procs: Procs, bin_dir: Path, threads: int, n: int = 2) -> tuple:
    addrs, cmds = [], []
    for i in range(n):
        port = free_port()
        cmd = [bin_dir / "ggml-rpc-server", "-H", "127.0.0.1", "-p", port, "-t", threads]
        procs.start(f"rpc-{i + 1}", cmd)
        addrs.append(f"127.0.0.1:{port}")
        cmds.append(quote(cmd))
    deadline = time.time() + 30
    for a in addrs:
        host, port = a.split(":")
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"ggml-rpc-server {a} does not listen")
                time.sleep(0.2)
    return addrs, cmds


def tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------
# rounds
# --------------------------------------------------------------------------------------

def measure(systems: list, streams_list: list, requests: int, tokens: int, rounds: int, timeout: float,
            title: str) -> dict:
    """{label: {S: [round results]}}; systems alternate, the order flips every (round, S)."""
    res = {s.label: {S: [] for S in streams_list} for s in systems}
    for r in range(rounds):
        for k, S in enumerate(streams_list):
            order = systems if (r + k) % 2 == 0 else list(reversed(systems))
            for sys_ in order:
                n_req = max(S, requests)
                before = sys_.snapshot()
                out = run_load(sys_.port, S, n_req, tokens, r, timeout)
                after = sys_.snapshot()
                if before is not None:
                    out["pipeline"] = sys_.stage_stats(before, after, S)
                out["round"] = r
                out["load1"] = os.getloadavg()[0]
                res[sys_.label][S].append(out)
                err = f", {out['n_errors']} failed: {out['errors'][0]}" if out["n_errors"] else ""
                log(f"{title} round {r + 1}/{rounds} S={S:<2} {sys_.label:28s} {fmt(out['agg_tok_s']):>7} tok/s  "
                    f"TTFT p50 {fmt(out['ttft_p50_ms'], '{:.0f}'):>5} ms p99 {fmt(out['ttft_p99_ms'], '{:.0f}'):>5} ms  "
                    f"decode {fmt(out['decode_tok_s']):>6} tok/s/stream  {out['tokens']} tokens in "
                    f"{out['wall_s']:.1f} s  load {out['load1']:.1f}{err}")
    return res


def summarize(runs: list) -> dict:
    """Best and median over rounds of each figure (tok/s: max; TTFT: min)."""
    def vals(k):
        return [x[k] for x in runs if x.get(k) is not None]
    out = {}
    for k, lower in (("agg_tok_s", False), ("ttft_p50_ms", True), ("ttft_p99_ms", True), ("decode_tok_s", False)):
        v = vals(k)
        out[k] = {"best": (min(v) if lower else max(v)) if v else None, "median": statistics.median(v) if v else None}
    out["tokens"] = [x["tokens"] for x in runs]
    out["errors"] = sum(x["n_errors"] for x in runs)
    out["first_error"] = next((x["errors"][0] for x in runs if x["errors"]), None)
    fin: dict = {}
    for x in runs:
        for f, c in x["finish"].items():
            fin[str(f)] = fin.get(str(f), 0) + c
    out["finish"] = fin
    pipes = [x["pipeline"] for x in runs if x.get("pipeline") and x["pipeline"].get("paper_tok_s")]
    if pipes:
        best = max(pipes, key=lambda p: p["paper_tok_s"])  # the round with the least contention
        out["pipeline_best"] = best
        out["paper_tok_s"] = {"best": best["paper_tok_s"], "median": statistics.median(p["paper_tok_s"] for p in pipes)}
    single = [x["pipeline"] for x in runs if x.get("pipeline") and len(x["pipeline"]["stages"]) == 1
              and x["pipeline"]["stages"][0]["t_ms"]]
    if single:
        st = [p["stages"][0] for p in single]
        out["single_stage"] = {"t_ms": statistics.median(s["t_ms"] for s in st),
                               "b": statistics.median(s["b"] for s in st)}
    return out


def r2(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def print_part(title: str, systems: list, res: dict, streams_list: list, ref: str, md: bool, requests: int,
               tokens: int, rounds: int, notes: list):
    print(f"\n## {title}\n")
    summ = {s.label: {S: summarize(res[s.label][S]) for S in streams_list} for s in systems}
    hdr = ["streams", "system", "agg tok/s best", "agg median", f"vs {ref}", "TTFT p50 ms best", "p50 median",
           "TTFT p99 ms best", "p99 median", "decode tok/s/stream", "tokens/round", "failed"]
    rows = []
    for S in streams_list:
        ref_best = summ[ref][S]["agg_tok_s"]["best"] if ref in summ else None
        for s in systems:
            x = summ[s.label][S]
            rows.append([str(S), s.label, fmt(x["agg_tok_s"]["best"]), fmt(x["agg_tok_s"]["median"]),
                         "" if s.label == ref else r2(x["agg_tok_s"]["best"], ref_best),
                         fmt(x["ttft_p50_ms"]["best"], "{:.0f}"), fmt(x["ttft_p50_ms"]["median"], "{:.0f}"),
                         fmt(x["ttft_p99_ms"]["best"], "{:.0f}"), fmt(x["ttft_p99_ms"]["median"], "{:.0f}"),
                         fmt(x["decode_tok_s"]["median"]), "/".join(str(t) for t in x["tokens"]),
                         str(x["errors"]) + (f" ({x['first_error'][:60]})" if x["first_error"] else "")])
    table(hdr, rows, md)
    print(f"\n{rounds} alternating round(s); per stream count the client sends max(S, {requests}) requests of "
          f"max_tokens {tokens} on S connections. Best = highest tok/s / lowest TTFT over rounds; decode = median "
          f"of the per-round medians.")
    for s in systems:
        fin = {}
        for S in streams_list:
            for f, c in summ[s.label][S]["finish"].items():
                fin[f] = fin.get(f, 0) + c
        print(f"- {s.label}: finish reasons {fin}")
    for n in notes:
        print(f"- {n}")
    print("\nCommands:")
    for s in systems:
        for c in s.commands:
            print(f"- {s.label}: `{c}`")
    return summ


def print_paper(title: str, cluster: AgentCluster, summ: dict, streams_list: list, single: str | None, md: bool):
    print(f"\n### {title}: on paper, each stage on its own machine\n")
    print("R = min( min_i b_i / t_i , S / (sum_i t_i + sum_links rtt/2) ), from each agent's /metrics over the "
          "measured load (deltas): t_i = stage_forward_seconds_sum/_count (mean batch time of stage i), "
          "b_i = stage_batch_sequences_sum/_count (sequences per batch; each sequence-step at the last stage is one "
          "token), rtt = hop_latency_seconds_sum/_count of each ring link (pings). The round with the highest R is "
          "shown (least contention); t_i were measured with all stages sharing this machine's cores, so they are "
          "upper bounds of a dedicated machine's and R is conservative.\n")
    hdr = ["streams", "measured tok/s (best)"] + [f"stage {i + 1} t ms / b" for i in range(len(cluster.stages))] + \
          ["link rtt ms"] + ["min b/t", "S/cycle", "cycle ms", "R on paper tok/s"]
    if single:
        hdr += [f"{single}: t ms / b", f"{single} b/t", f"R / {single} measured"]
    rows = []
    for S in streams_list:
        x = summ[cluster.label][S]
        p = x.get("pipeline_best")
        if not p:
            rows.append([str(S), fmt(x["agg_tok_s"]["best"])] + ["-"] * (len(hdr) - 2))
            continue
        row = [str(S), fmt(x["agg_tok_s"]["best"])]
        row += [f"{fmt(s['t_ms'], '{:.2f}')} / {fmt(s['b'], '{:.2f}')}" for s in p["stages"]]
        row += [", ".join(fmt(l["rtt_ms"], "{:.2f}") for l in p["links"])]
        row += [fmt(p["bound_stage"]), fmt(p["bound_cycle"]), fmt(p["cycle_ms"], "{:.1f}"), fmt(p["paper_tok_s"])]
        if single:
            one = summ[single][S]
            ss = one.get("single_stage")
            row += [f"{fmt(ss['t_ms'], '{:.2f}')} / {fmt(ss['b'], '{:.2f}')}" if ss else "-",
                    fmt(ss["b"] / (ss["t_ms"] / 1e3)) if ss else "-",
                    r2(p["paper_tok_s"], one["agg_tok_s"]["best"])]
        rows.append(row)
    table(hdr, rows, md)
    print(f"\nStages in layer order: {cluster.plan_text()}; links: " +
          ", ".join(f"{a}->{b}" for a, b in zip(cluster.stages, cluster.stages[1:] + cluster.stages[:1])))


def table(hdr: list, rows: list, md: bool):
    if md:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------

def venv_python() -> str:
    if os.environ.get("PY"):
        return os.environ["PY"]
    p = CACHE / "venv" / "bin" / "python"
    return str(p) if p.exists() else sys.executable


def model_1b(path: str | None) -> Path:
    if path:
        return Path(path)
    cmd = [venv_python(), str(REPO / "scripts" / "make-gguf.py"), "--arch", "llama", "--shape", "1b",
           "--tokenizer", "smollm", "--quant", "Q4_0", "--cache"]
    log(f"the 1B-shape model (random weights, cached): {quote(cmd)}")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit(f"bench-serving: {quote(cmd)} failed (run it with the venv: eval \"$(scripts/llama-cpp.sh env)\")")
    for line in r.stdout.split():
        if line.endswith(".Q4_0.gguf"):
            return Path(line)
    sys.exit(f"bench-serving: {quote(cmd)} printed no Q4_0 file")


# --------------------------------------------------------------------------------------

def main(argv=None) -> int:
    global PROCS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF of parts 1 and 3 (default: the default model, fetched if missing)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="compute threads of every agent (RAYON_NUM_THREADS), llama-server (-t) and ggml-rpc-server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", default="1,4,8,16", help="concurrent streams of parts 1 and 3")
    ap.add_argument("--requests", type=int, default=16, help="requests per load (at least S)")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of every request (greedy)")
    ap.add_argument("--ctx", type=int, default=1024, help="llama-server context per slot (-c CTX*NP)")
    ap.add_argument("--np", type=int, default=0, help="llama-server slots (default: max(8, most streams))")
    ap.add_argument("--llama-args", default="", help="extra arguments of every llama-server (e.g. \"--poll 0\")")
    ap.add_argument("--agents", type=int, default=3, help="agents of the pipeline (parts 2 and 3)")
    ap.add_argument("--skip-1b", action="store_true", help="skip part 2 (the 1B-shape model)")
    ap.add_argument("--skip-rpc", action="store_true", help="part 2 without llama-server over ggml-rpc-servers")
    ap.add_argument("--skip-cluster", action="store_true", help="part 1 without the 3-agent cluster (skips part 3)")
    ap.add_argument("--model-1b", help="GGUF of part 2 (default: made by scripts/make-gguf.py, cached)")
    ap.add_argument("--streams-1b", default="1,4,8", help="concurrent streams of part 2")
    ap.add_argument("--requests-1b", type=int, default=8, help="requests per load in part 2 (at least S)")
    ap.add_argument("--request-timeout", type=float, default=300.0, help="seconds without a byte before a request fails")
    ap.add_argument("--agent", default=str(REPO / "target" / "release" / "agent"))
    ap.add_argument("--llama-bin", help="directory of llama-server and ggml-rpc-server (default: $LLAMA_CPP_BIN)")
    ap.add_argument("--no-build", action="store_true", help="do not `cargo build --release --bin agent` first")
    ap.add_argument("--logs", help="directory for the servers' logs (default: a temporary one, kept on failure)")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--json", dest="json_out", help="also write every round to this JSON file")
    a = ap.parse_args(argv)

    streams = [int(x) for x in a.streams.split(",") if x.strip()]
    streams_1b = [int(x) for x in a.streams_1b.split(",") if x.strip()]
    np_ = a.np or max([8] + streams + ([] if a.skip_1b else streams_1b))
    bin_dir = Path(a.llama_bin or os.environ.get("LLAMA_CPP_BIN") or
                   CACHE / "llama.cpp" / LLAMA_CPP_VERSION / "build" / "bin")
    for b in ("llama-server",) + (() if a.skip_rpc or a.skip_1b else ("ggml-rpc-server",)):
        if not (bin_dir / b).is_file():
            sys.exit(f"bench-serving: {bin_dir / b} not found: run scripts/llama-cpp.sh build "
                     f"(and eval \"$(scripts/llama-cpp.sh env)\") or pass --llama-bin")
    if not a.no_build:
        log("cargo build --release --bin agent ... (waits for the build lock when others build)")
        subprocess.run(["cargo", "build", "--release", "--bin", "agent"], cwd=REPO, check=True)
    agent = Path(a.agent)
    if not agent.is_file():
        sys.exit(f"bench-serving: {agent} not found: cargo build --release --bin agent")
    model = Path(a.model) if a.model else bench_matrix.default_model()
    m1b = None if a.skip_1b else model_1b(a.model_1b)

    logdir = Path(a.logs) if a.logs else Path(tempfile.mkdtemp(prefix="bench-serving-"))
    logdir.mkdir(parents=True, exist_ok=True)
    PROCS = Procs(logdir)
    atexit.register(_cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    load_start = os.getloadavg()
    t_start = time.time()
    report = {"threads": a.threads, "rounds": a.rounds, "tokens": a.tokens, "requests": a.requests, "np": np_,
              "ctx": a.ctx, "load_start": load_start, "parts": {}}
    ok = False
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        print(f"# Serving benchmark (scripts/bench-serving.py), {time.strftime('%Y-%m-%d %H:%M')}, commit {git}")
        print(f"\nMachine: {os.cpu_count()} cores; load average at start {load_start[0]:.2f} {load_start[1]:.2f} "
              f"{load_start[2]:.2f}; threads {a.threads}; logs {logdir}")
        for line in describe():  # the CPU and llama.cpp's own feature line (its build's fast paths)
            print(line + "  ")
        print(f"Request (per request i of round r, the same for every system): POST /v1/chat/completions "
              f"`{json.dumps(request_body(prompt_for(0, 0), a.tokens))}` with varied prompts "
              f"(e.g. {prompt_for(0, 1)!r}, {prompt_for(1, 0)!r})")

        # ---- parts 1 and 3: default model ----
        log(f"parts 1+3: {model} ({model.stat().st_size / 2**20:.0f} MiB)")
        one = AgentCluster(PROCS, agent, model, 1, a.threads, "single")
        llama = LlamaServer(PROCS, bin_dir, model, a.threads, np_, a.ctx, f"llama-server -np {np_}", "llama-server",
                            extra=shlex.split(a.llama_args))
        systems = [one, llama]
        many = None
        if not a.skip_cluster:
            many = AgentCluster(PROCS, agent, model, a.agents, a.threads, "pipe")
            systems.append(many)
        for s in systems:
            s.wait_ready()
        res = measure(systems, streams, a.requests, a.tokens, a.rounds, a.request_timeout, "default model")
        notes = [f"model {model} ({model.stat().st_size / 2**20:.0f} MiB); agents: RAYON_NUM_THREADS={a.threads} "
                 f"each; llama-server -t {a.threads}, {np_} slots of {a.ctx} positions"]
        if many:
            notes.append(f"{many.label}: {many.plan_text()} (all on this machine's {os.cpu_count()} cores)")
        summ = print_part(f"Concurrent streams, default model ({one.label} vs llama-server"
                          f"{'' if not many else ' vs ' + many.label})", systems, res, streams, llama.label,
                          a.markdown, a.requests, a.tokens, a.rounds, notes)
        if many:
            print(f"\n### {many.label} vs 1 (aggregate tok/s, best of {a.rounds})\n")
            table(["streams", "1 agent", many.label, "ratio"],
                  [[str(S), fmt(summ[one.label][S]["agg_tok_s"]["best"]), fmt(summ[many.label][S]["agg_tok_s"]["best"]),
                    r2(summ[many.label][S]["agg_tok_s"]["best"], summ[one.label][S]["agg_tok_s"]["best"])]
                   for S in streams], a.markdown)
            print_paper(f"{many.label}, default model", many, summ, streams, one.label, a.markdown)
        report["parts"]["default"] = {"model": str(model), "commands": {s.label: s.commands for s in systems},
                                      "plan": many.plan_text() if many else None, "rounds": res, "summary": summ}
        PROCS.stop_all()

        # ---- part 2: the 1B-shape model ----
        if m1b:
            size = m1b.stat().st_size
            limit = -(-size // 2 // QUANTUM) * QUANTUM
            log(f"part 2: {m1b} ({size / 2**20:.0f} MiB), agents --memory-limit {limit} ({limit / 2**20:.0f} MiB)")
            systems = []
            cl = AgentCluster(PROCS, agent, m1b, a.agents, a.threads, "big", memory_limit=limit)
            systems.append(cl)
            rpc = None
            if not a.skip_rpc:
                addrs, rpc_cmds = start_rpc_servers(PROCS, bin_dir, a.threads)
                rpc = LlamaServer(PROCS, bin_dir, m1b, a.threads, np_, a.ctx, "llama-server --rpc x2", "llama-rpc",
                                  rpc=addrs, extra=shlex.split(a.llama_args))
                rpc.commands = rpc_cmds + rpc.commands
                systems.append(rpc)
            alone = LlamaServer(PROCS, bin_dir, m1b, a.threads, np_, a.ctx, "llama-server alone", "llama-alone",
                                extra=shlex.split(a.llama_args))
            systems.append(alone)
            for s in systems:
                s.wait_ready()
            if len(cl.assignments) != a.agents:
                raise RuntimeError(f"/v1/cluster shows {len(cl.assignments)} assignments, expected {a.agents}")
            res1b = measure(systems, streams_1b, a.requests_1b, a.tokens, a.rounds, a.request_timeout, "1B")
            notes = [f"model {m1b} ({size / 2**20:.0f} MiB, random weights); each agent --memory-limit {limit} "
                     f"({limit / 2**20:.0f} MiB < the file): /v1/cluster shows {len(cl.assignments)} assignments: "
                     f"{cl.plan_text()}"]
            if rpc:
                notes.append(f"llama.cpp's split over RPC (its log): {rpc.split_text()}")
            summ1b = print_part("1B-shape model over 3 agents vs llama.cpp RPC vs llama-server alone", systems, res1b,
                                streams_1b, rpc.label if rpc else alone.label, a.markdown, a.requests_1b, a.tokens,
                                a.rounds, notes)
            print_paper(f"{cl.label}, 1B-shape model", cl, summ1b, streams_1b, None, a.markdown)
            report["parts"]["1b"] = {"model": str(m1b), "memory_limit": limit,
                                     "commands": {s.label: s.commands for s in systems}, "plan": cl.plan_text(),
                                     "rpc_split": rpc.split_text() if rpc else None, "rounds": res1b, "summary": summ1b}
            PROCS.stop_all()
        ok = True
    except KeyboardInterrupt:
        log("interrupted: stopping every server")
        return 130
    except RuntimeError as e:
        log(f"error: {e}")
        return 1
    finally:
        PROCS.stop_all()
        load_end = os.getloadavg()
        report["load_end"] = load_end
        print(f"\nLoad average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, at end "
              f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; {(time.time() - t_start) / 60:.1f} min.")
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(report, indent=1, default=str))
            log(f"wrote {a.json_out}")
        if ok and not a.logs:
            for f in logdir.iterdir():
                f.unlink()
            logdir.rmdir()
        elif not ok:
            log(f"servers' logs kept in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
