#!/usr/bin/env python3
"""The engine beside llama.cpp over model shapes x quantizations (`make bench-matrix`).

For every (shape, quantization) cell, the same GGUF file is benchmarked by the engine
(`target/release/bench --json --no-llama-cpp --repeat 1`) and by llama.cpp (`llama-bench`
from the native build of scripts/llama-cpp.sh), with the same thread count, in alternating
rounds (engine first in even rounds, llama.cpp first in odd ones); the best round of each
figure is kept. Figures: prompt processing tok/s (--pp tokens in one batch), generation
tok/s (--tg tokens), TTFT (engine: a real 1-message chat request, template and tokenizer
included; llama.cpp: prefill of a prompt of the same token count, llama-bench -p N) and
peak RSS of each process (wait4 ru_maxrss). Every figure is printed with the exact command
that produced it.

Shapes:
  smollm2-135m  the default model file itself (SmolLM2-135M-Instruct Q4_1) and its
                requantizations with llama.cpp's quantizer (scripts/make-gguf.py --from)
  1b, 3b        random-weight Llama-3.2-1B / -3B shapes (scripts/make-gguf.py --arch llama3
                --tokenizer llama-bpe-real: the real 128256-token vocabulary), F16 master
                requantized to each type
Models are cached under $DLLM_CACHE (requant/, fixtures/). Run it with the venv python:
  eval "$(scripts/llama-cpp.sh env)"; $PY scripts/bench-matrix.py --shapes smollm2-135m --quants Q4_1,Q8_0
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from machine import describe

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DLLM_CACHE") or Path.home() / ".cache" / "distributed-llm")
DEFAULT_QUANTS = "Q4_0,Q4_1,Q8_0,Q4_K_M,Q5_K_M,Q6_K,F16,BF16"


def log(*a):
    print("[bench-matrix]", *a, file=sys.stderr, flush=True)


def run(cmd: list) -> dict:
    """Runs cmd; returns rc, stdout, stderr, wall seconds and the peak RSS (MiB) of the
    process (wait4's ru_maxrss: the child alone, not this script)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = [], []
    ts = [threading.Thread(target=lambda s, b: b.append(s.read()), args=(p.stdout, out)),
          threading.Thread(target=lambda s, b: b.append(s.read()), args=(p.stderr, err))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    for t in ts:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "stdout": out[0].decode(errors="replace"), "stderr": err[0].decode(errors="replace"),
            "seconds": time.perf_counter() - t0, "rss_mib": ru.ru_maxrss / 1024.0}


def error_line(stderr: str) -> str:
    """The error of a failed run: an 'Error:' or panic line, else the last line."""
    lines = stderr.strip().splitlines() or ["?"]
    for l in lines:
        if l.startswith("Error:") or "panicked" in l or l.startswith("error:"):
            return l[:300]
    return lines[-1][:300]


def quote(cmd: list) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def default_model() -> Path:
    d = Path(os.environ["DLLM_MODEL_DIR"]) if os.environ.get("DLLM_MODEL_DIR") else \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distributed-llm" / "models"
    p = d / "SmolLM2-135M-Instruct.Q4_1.gguf"
    for cmd in (["cargo", "run", "-q", "--release", "-p", "engine", "--bin", "fetch-model"],
                ["cargo", "run", "-q", "--release", "-p", "agent", "--bin", "agent", "--", "fetch-model"]):
        if p.is_file():
            break
        log(f"{p} missing: {quote(cmd)} ...")
        subprocess.run(cmd, cwd=REPO, stdout=sys.stderr)
    if not p.is_file():
        sys.exit(f"bench-matrix: no default model at {p}: run `make model`")
    return p


def models_for(shape: str, quants: list, py: str) -> dict:
    """{quant: path} for a shape, making (cached) files as needed."""
    mk = [py, str(REPO / "scripts" / "make-gguf.py")]
    if shape == "smollm2-135m":
        src = default_model()
        out = {"Q4_1": src} if "Q4_1" in quants else {}
        rest = [q for q in quants if q != "Q4_1"]
        if rest:
            cmd = mk + ["--from", str(src), "--quant", ",".join(rest), "--cache"]
            log(f"requantizing the default model: {quote(cmd)}")
            r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if r.returncode:
                sys.exit(f"bench-matrix: {quote(cmd)} failed")
            for q, line in zip(rest, r.stdout.split()):
                out[q] = Path(line)
        return out
    if shape in ("1b", "3b"):
        cmd = mk + ["--arch", "llama3", "--shape", shape, "--tokenizer", "llama-bpe-real", "--cache",
                    "--quant", ",".join(q for q in quants if q != "F16")]
        log(f"making the {shape} model (random weights, cached): {quote(cmd)}")
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if r.returncode:
            sys.exit(f"bench-matrix: {quote(cmd)} failed")
        paths = [Path(x) for x in r.stdout.split()]
        out = {}
        for p in paths:
            q = p.name.rsplit(".", 2)[-2]
            if q in quants:
                out[q] = p
        return out
    sys.exit(f"bench-matrix: unknown shape {shape} (smollm2-135m, 1b, 3b)")


def engine_round(bench: str, model: Path, a, chat_len: list) -> dict:
    cmd = [bench, "--json", "--no-llama-cpp", "--repeat", "1", "--model", str(model), "--threads", str(a.threads),
           "--prompt-tokens", str(a.pp), "--gen-tokens", str(a.tg)]
    r = run(cmd)
    res = {"command": quote(cmd), "rss_mib": r["rss_mib"], "seconds": r["seconds"]}
    if r["rc"] != 0:
        res["error"] = error_line(r["stderr"])
        return res
    j = json.loads(r["stdout"])
    e = j["engine"]
    chat_len.append(e["ttft_prompt_tokens"])
    res.update(pp=e["pp_tok_s"], tg=e["tg_tok_s"], ttft_ms=e["ttft_ms"], load_ms=e["load_ms"],
               ttft_prompt_tokens=e["ttft_prompt_tokens"])
    return res


def llama_round(llama_bench: str, model: Path, a, chat_len: int) -> dict:
    ps = f"{a.pp},{chat_len}" if chat_len and chat_len != a.pp else str(a.pp)
    cmd = [llama_bench, "-m", str(model), "-t", str(a.threads), "-p", ps, "-n", str(a.tg), "-r", "1", "-o", "json"]
    r = run(cmd)
    res = {"command": quote(cmd), "rss_mib": r["rss_mib"], "seconds": r["seconds"]}
    if r["rc"] != 0:
        res["error"] = error_line(r["stderr"])
        return res
    for row in json.loads(r["stdout"]):
        n_p, n_g, ts = row.get("n_prompt", 0), row.get("n_gen", 0), row.get("avg_ts", 0.0)
        if n_g:
            res["tg"] = ts
        elif n_p == a.pp:
            res["pp"] = ts
        if n_p == chat_len and not n_g:
            res["ttft_ms"] = 1e3 * n_p / ts if ts else None
        res["build"] = f"{row.get('build_commit')} ({row.get('cpu_info', '')}, {row.get('backends', '')})"
    return res


def best(rounds: list, key: str, lower=False):
    v = [r[key] for r in rounds if r.get(key) is not None]
    if not v:
        return None
    return min(v) if lower else max(v)


def fmt(x, spec="{:.1f}"):
    return "-" if x is None else spec.format(x)


def ratio(e, l, inverse=False):
    if e is None or l is None or not l or not e:
        return "-"
    return f"{(l / e if inverse else e / l):.2f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="smollm2-135m,1b", help="comma list: smollm2-135m, 1b, 3b")
    ap.add_argument("--quants", default=DEFAULT_QUANTS, help=f"comma list (default {DEFAULT_QUANTS})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pp", type=int, default=128, help="prompt tokens (prompt processing test)")
    ap.add_argument("--tg", type=int, default=128, help="generated tokens (generation test)")
    ap.add_argument("--markdown", action="store_true", help="print the result as a Markdown table (for docs)")
    ap.add_argument("--json", dest="json_out", help="also write every round to this JSON file")
    ap.add_argument("--bench", default=str(REPO / "target" / "release" / "bench"), help="the engine's bench binary")
    ap.add_argument("--llama-bench", default=None, help="default: $LLAMA_CPP_BIN/llama-bench")
    ap.add_argument("--no-build", action="store_true", help="do not `cargo build --release --bin bench` first")
    a = ap.parse_args(argv)

    py = os.environ.get("PY") or sys.executable
    llama_bench = a.llama_bench or (Path(os.environ["LLAMA_CPP_BIN"]) / "llama-bench" if os.environ.get("LLAMA_CPP_BIN") else None)
    if not llama_bench or not Path(llama_bench).is_file():
        sys.exit("bench-matrix: llama-bench not found: run scripts/llama-cpp.sh build, then "
                 "eval \"$(scripts/llama-cpp.sh env)\" (or pass --llama-bench)")
    if not a.no_build:
        log("cargo build --release -p engine --bin bench ...")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "engine", "--bin", "bench"], cwd=REPO, check=True)
    shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    quants = [q.strip().upper() for q in a.quants.split(",") if q.strip()]
    cells = []
    for shape in shapes:
        files = models_for(shape, quants, py)
        for q in quants:
            if q not in files:
                log(f"{shape} {q}: no model file, skipped")
                continue
            model = files[q]
            log(f"{shape} {q}: {model} ({model.stat().st_size / 2**20:.0f} MiB), {a.rounds} alternating rounds ...")
            eng, lla, chat_len = [], [], []
            for i in range(a.rounds):
                order = ["engine", "llama"] if i % 2 == 0 else ["llama", "engine"]
                for who in order:
                    if who == "engine":
                        eng.append(engine_round(a.bench, model, a, chat_len))
                    else:
                        lla.append(llama_round(str(llama_bench), model, a, chat_len[-1] if chat_len else 0))
            # llama.cpp's TTFT needs the chat prompt length, known after the first engine round
            if chat_len and not any(r.get("ttft_ms") for r in lla):
                lla.append(llama_round(str(llama_bench), model, a, chat_len[-1]))
            cell = {
                "shape": shape, "quant": q, "model": str(model), "model_mib": model.stat().st_size / 2**20,
                "engine": {k: best(eng, k, k in ("ttft_ms", "rss_mib", "load_ms")) for k in
                           ("pp", "tg", "ttft_ms", "rss_mib", "load_ms")},
                "llama": {k: best(lla, k, k in ("ttft_ms", "rss_mib")) for k in ("pp", "tg", "ttft_ms", "rss_mib")},
                "engine_command": eng[0]["command"] if eng else None,
                "llama_command": next((r["command"] for r in lla if r.get("ttft_ms")), lla[0]["command"] if lla else None),
                "engine_error": next((r["error"] for r in eng if "error" in r), None),
                "llama_error": next((r["error"] for r in lla if "error" in r), None),
                "llama_build": next((r["build"] for r in lla if "build" in r), None),
                "rounds": {"engine": eng, "llama": lla},
            }
            cells.append(cell)
            e, l = cell["engine"], cell["llama"]
            print(f"\n== {shape} {q}  ({model}, {cell['model_mib']:.0f} MiB, threads {a.threads}, best of {a.rounds})")
            if cell["engine_error"]:
                print(f"   engine failed: {cell['engine_error']}")
            if cell["llama_error"]:
                print(f"   llama.cpp failed: {cell['llama_error']}")
            print(f"   prompt processing  engine {fmt(e['pp']):>8} tok/s  llama.cpp {fmt(l['pp']):>8} tok/s  ratio {ratio(e['pp'], l['pp'])}")
            print(f"   generation         engine {fmt(e['tg']):>8} tok/s  llama.cpp {fmt(l['tg']):>8} tok/s  ratio {ratio(e['tg'], l['tg'])}")
            print(f"   TTFT               engine {fmt(e['ttft_ms']):>8} ms     llama.cpp {fmt(l['ttft_ms']):>8} ms     "
                  f"(llama.cpp: prefill of {chat_len[-1] if chat_len else '?'} tokens)")
            print(f"   peak RSS           engine {fmt(e['rss_mib'], '{:.0f}'):>8} MiB    llama.cpp {fmt(l['rss_mib'], '{:.0f}'):>8} MiB")
            print(f"   engine load        {fmt(e['load_ms'], '{:.0f}')} ms")
            print(f"   engine:    {cell['engine_command']}")
            print(f"   llama.cpp: {cell['llama_command']}   [{cell['llama_build']}]")
            sys.stdout.flush()
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"threads": a.threads, "rounds": a.rounds, "pp": a.pp, "tg": a.tg,
                                                "cells": cells}, indent=1))
        log(f"wrote {a.json_out}")
    print()
    # Every table names its machine and the anchor's own feature line.
    for line in describe():
        print(line + ("  " if a.markdown else ""))
    print()
    if a.markdown:
        print(f"| shape | type | MiB | PP engine | PP llama.cpp | PP ratio | TG engine | TG llama.cpp | TG ratio "
              f"| TTFT engine | TTFT llama.cpp | RSS engine | RSS llama.cpp |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in cells:
            e, l = c["engine"], c["llama"]
            print(f"| {c['shape']} | {c['quant']} | {c['model_mib']:.0f} | {fmt(e['pp'])} | {fmt(l['pp'])} | {ratio(e['pp'], l['pp'])} "
                  f"| {fmt(e['tg'])} | {fmt(l['tg'])} | {ratio(e['tg'], l['tg'])} | {fmt(e['ttft_ms'], '{:.0f}')} ms "
                  f"| {fmt(l['ttft_ms'], '{:.0f}')} ms | {fmt(e['rss_mib'], '{:.0f}')} MiB | {fmt(l['rss_mib'], '{:.0f}')} MiB |")
        print(f"\ntok/s, best of {a.rounds} alternating rounds, {a.threads} threads, prompt {a.pp} tokens, generation "
              f"{a.tg} tokens. Commands, per row:\n")
        for c in cells:
            print(f"- {c['shape']} {c['quant']}: `{c['engine_command']}` / `{c['llama_command']}`")
    else:
        print(f"{'shape':14s} {'type':7s} {'PP engine':>10s} {'PP llama':>10s} {'ratio':>6s} {'TG engine':>10s} "
              f"{'TG llama':>10s} {'ratio':>6s} {'TTFT e':>8s} {'TTFT l':>8s} {'RSS e':>6s} {'RSS l':>6s}")
        for c in cells:
            e, l = c["engine"], c["llama"]
            print(f"{c['shape']:14s} {c['quant']:7s} {fmt(e['pp']):>10s} {fmt(l['pp']):>10s} {ratio(e['pp'], l['pp']):>6s} "
                  f"{fmt(e['tg']):>10s} {fmt(l['tg']):>10s} {ratio(e['tg'], l['tg']):>6s} {fmt(e['ttft_ms'], '{:.0f}'):>8s} "
                  f"{fmt(l['ttft_ms'], '{:.0f}'):>8s} {fmt(e['rss_mib'], '{:.0f}'):>6s} {fmt(l['rss_mib'], '{:.0f}'):>6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
