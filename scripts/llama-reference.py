#!/usr/bin/env python3
"""References from llama.cpp (the anchor: llama-cpp-python 0.3.36's vendored llama.cpp,
built natively by scripts/llama-cpp.sh), through the Python binding over our libllama.

  generate  FILE.gguf [--prompts P.json] [--out R.json]
      For each prompt (raw text, or chat messages rendered with the GGUF's own Jinja chat
      template): the prompt tokens, N greedy tokens (temperature 0, argmax of llama.cpp's
      logits) and per step the top-k (token, logit) pairs; the prompt is decoded in one
      batch, then one token per step. CPU, greedy, n_ctx 2048, n_batch 512, f16 KV cache,
      flash attention off, 1 thread (recorded in the JSON). scripts/fixtures.sh makes one
      for every fixture model and for the default model (crates/engine/tests/reference.rs).
  tokenize  FILE.gguf [--corpus scripts/tokenizer-corpus.txt ...] [--out T.json]
      For each corpus entry: tokens with parse_special on/off x add_special on/off, each
      token's piece (llama_token_to_piece, as hex bytes: pieces may split UTF-8), and the
      whole decode (llama_detokenize). vocab_only load.
  stats     FILE.gguf
      Is a random model a useful reference?  Top-1/top-2 logit margins over a greedy run,
      distinct tokens, and how often the top-1 changes when the context before the
      generated tokens is replaced (context sensitivity).
  chat      FILE.gguf --messages '[{"role":"user","content":"hi"}]'
      Print the rendered prompt (Jinja and llama_chat_apply_template) and its tokens.

Run with the venv python and the exports of `scripts/llama-cpp.sh env`:
  eval "$(scripts/llama-cpp.sh env)"; $PY scripts/llama-reference.py generate model.gguf --out ref.json
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import sys
import time
from pathlib import Path

try:
    import numpy as np
    import llama_cpp as lc
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
except ImportError as e:  # pragma: no cover
    sys.exit(f"llama-reference.py: {e}: eval \"$(scripts/llama-cpp.sh env)\" and run it with $PY")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "scripts" / "tokenizer-corpus.txt"
# The Llama 3.x template prints today's date when the renderer offers strftime_now: fix it.
FIXED_DATE = datetime.datetime(2024, 7, 26)
N_CTX, N_BATCH = 2048, 512
# One thread: llama.cpp's results do not depend on the thread count, and on a busy machine
# two spinning OpenMP threads are 10x slower than one (references are not benchmarks).
N_THREADS = 1

DEFAULT_PROMPTS = [
    {"name": "story", "messages": [{"role": "user", "content": "Tell me a short story about a robot who learns to paint."}]},
    {"name": "system+multi-turn", "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan? Answer in one word."}]},
    {"name": "raw-text", "text": "The quick brown fox jumps over the lazy dog. Once upon a time, in a small village,"},
    {"name": "raw-code", "text": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n"},
]


def log(*a):
    print("[llama-reference]", *a, file=sys.stderr, flush=True)


class FixedDateFormatter(Jinja2ChatFormatter):
    """llama-cpp-python's Jinja2 renderer (HF-compatible: trim_blocks, lstrip_blocks,
    loopcontrols, tojson), with strftime_now pinned to FIXED_DATE for reproducibility."""

    @staticmethod
    def strftime_now(f: str) -> str:
        return FIXED_DATE.strftime(f)


def lib_info() -> dict:
    return {
        "llama_cpp_python": lc.__version__,
        "libllama": str(Path(lc.llama_cpp._lib._name).resolve()),
        "system_info": lc.llama_print_system_info().decode().strip(),
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 24), b""):
            h.update(b)
    return h.hexdigest()


def load(path: str, vocab_only=False, threads=None, n_ctx=N_CTX):
    threads = threads or N_THREADS
    return lc.Llama(model_path=path, vocab_only=vocab_only, n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH,
                    n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, flash_attn=False,
                    logits_all=False, verbose=False, seed=0)


# ---- tokenizer helpers (llama.cpp's C API through ctypes) ----

def tokenize(llm, text: str, add_special: bool, parse_special: bool) -> list:
    b = text.encode("utf-8")
    n = len(b) + 16
    buf = (lc.llama_token * n)()
    k = lc.llama_tokenize(llm._model.vocab, b, len(b), buf, n, add_special, parse_special)
    if k < 0:
        n = -k
        buf = (lc.llama_token * n)()
        k = lc.llama_tokenize(llm._model.vocab, b, len(b), buf, n, add_special, parse_special)
    return list(buf[:k])


def piece(llm, tok: int, special: bool = True) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = lc.llama_token_to_piece(llm._model.vocab, tok, buf, 256, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(llm._model.vocab, tok, buf, -n, 0, special)
    return buf.raw[:n]


def detokenize(llm, toks: list, remove_special: bool, unparse_special: bool) -> bytes:
    arr = (lc.llama_token * max(1, len(toks)))(*toks)
    n = 4 * len(toks) * 16 + 64
    buf = ctypes.create_string_buffer(n)
    k = lc.llama_detokenize(llm._model.vocab, arr, len(toks), buf, n, remove_special, unparse_special)
    if k < 0:
        buf = ctypes.create_string_buffer(-k)
        k = lc.llama_detokenize(llm._model.vocab, arr, len(toks), buf, -k, remove_special, unparse_special)
    return buf.raw[:k]


def text_of(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


# ---- chat ----

def model_template(llm) -> str | None:
    t = lc.llama_model_chat_template(llm._model.model, None)
    return t.decode("utf-8") if t else None


def render_jinja(llm, messages: list) -> str:
    tmpl = model_template(llm)
    if tmpl is None:
        raise ValueError("the GGUF has no tokenizer.chat_template")
    vocab = llm._model.vocab
    bos, eos = lc.llama_vocab_bos(vocab), lc.llama_vocab_eos(vocab)
    f = FixedDateFormatter(template=tmpl, bos_token=text_of(piece(llm, bos)) if bos >= 0 else "",
                           eos_token=text_of(piece(llm, eos)) if eos >= 0 else "", add_generation_prompt=True)
    return f(messages=messages).prompt


def render_builtin(llm, messages: list) -> str | None:
    """llama.cpp's C++ llama_chat_apply_template (it detects a built-in template from the
    Jinja source; no Jinja engine). None when llama.cpp does not recognise the template."""
    tmpl = lc.llama_model_chat_template(llm._model.model, None)
    if not tmpl:
        return None
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    arr = (lc.llama_chat_message * len(keep))(*[lc.llama_chat_message(role=r, content=c) for r, c in keep])
    n = 1 << 16
    buf = ctypes.create_string_buffer(n)
    k = lc.llama_chat_apply_template(tmpl, arr, len(keep), True, buf, n)
    if k < 0:
        return None
    if k > n:
        buf = ctypes.create_string_buffer(k)
        k = lc.llama_chat_apply_template(tmpl, arr, len(keep), True, buf, k)
    return buf.raw[:k].decode("utf-8", errors="replace")


def prompt_tokens(llm, case: dict) -> tuple:
    """(tokens, text, info) for a case: chat messages (Jinja render, then tokenize with
    parse_special and no added BOS: the template writes it, as llama-cpp-python does) or
    raw text (tokenize with the vocab's add_special, special tokens not parsed)."""
    if "messages" in case:
        text = render_jinja(llm, case["messages"])
        info = {"renderer": "jinja2 (llama-cpp-python Jinja2ChatFormatter, strftime_now fixed to "
                            f"{FIXED_DATE:%d %b %Y}), add_generation_prompt",
                "tokenize": "add_special=false parse_special=true"}
        b = render_builtin(llm, case["messages"])
        info["llama_chat_apply_template"] = b
        info["renderers_agree"] = b == text
        return tokenize(llm, text, False, True), text, info
    text = case["text"]
    return tokenize(llm, text, True, False), text, {"tokenize": "add_special=true parse_special=false"}


# ---- decoding ----

def logits_last(llm) -> np.ndarray:
    p = lc.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(p, shape=(llm.n_vocab(),)).copy()


def topk(x: np.ndarray, k: int) -> list:
    idx = np.argpartition(-x, k)[:k]
    idx = idx[np.lexsort((idx, -x[idx]))]  # by logit desc, then id asc
    return [[int(i), round(float(x[i]), 5)] for i in idx]


def greedy(llm, prompt: list, n: int, k: int, forced: list | None = None) -> dict:
    """Decodes prompt (one batch) then n tokens one at a time. forced: teacher-force these
    tokens instead of the argmax (the top-k are still those of llama.cpp)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    steps, toks = [], []
    for i in range(n):
        x = logits_last(llm)
        tok = int(np.argmax(x))
        steps.append(topk(x, k))
        nxt = forced[i] if forced is not None else tok
        toks.append(tok)
        if i + 1 < n:
            llm.eval([nxt])
    return {"tokens": toks, "top": steps, "seconds": time.perf_counter() - t0}


def generate_reference(model: str, prompts: list, n_predict: int = 64, top_k: int = 5, threads=None) -> dict:
    llm = load(model, threads=threads)
    cases = []
    for c in prompts:
        try:
            toks, text, info = prompt_tokens(llm, c)
        except Exception as e:  # e.g. Gemma 2's template refuses a system message
            log(f"{c.get('name')}: skipped: {e}")
            cases.append({**c, "skipped": str(e)})
            continue
        g = greedy(llm, toks, n_predict, top_k)
        vocab = llm._model.vocab
        case = dict(c)
        if "messages" in c and len(c["messages"]) == 1 and c["messages"][0]["role"] == "user":
            case["user_message"] = c["messages"][0]["content"]  # the smollm2-reference.json field
        case.update({
            "prompt_text": text, "prompt": info, "prompt_tokens": toks,
            "greedy_tokens": g["tokens"],
            "greedy_text": text_of(detokenize(llm, g["tokens"], False, False)),
            "eog_steps": [i for i, t in enumerate(g["tokens"]) if lc.llama_vocab_is_eog(vocab, t)],
            "top": g["top"],
            "margins": [round(s[0][1] - s[1][1], 5) for s in g["top"]],
        })
        cases.append(case)
        log(f"{Path(model).name} {c.get('name')}: {len(toks)} prompt tokens, {n_predict} greedy tokens, "
            f"min margin {min(case['margins']):.3f} ({g['seconds']:.2f} s)")
    del llm
    return {
        "model": Path(model).name,
        "model_sha256": sha256(Path(model)),
        "reference": "llama.cpp 0c1e570 (llama-cpp-python 0.3.36 sdist, native build), CPU, temperature 0 "
                     "(argmax of the logits), prompt in one batch then one token per step, no stop at end-of-generation",
        "settings": {"n_ctx": N_CTX, "n_batch": N_BATCH, "n_ubatch": N_BATCH, "n_threads": threads or N_THREADS,
                     "flash_attn": False, "kv_cache": "f16", "n_predict": n_predict, "top_k": top_k},
        "note": "Compare prompt tokens exactly and generated tokens by teacher-forced top-1 agreement "
                "(feed greedy_tokens, compare your argmax at each step with greedy_tokens[i]); 'margins' "
                "(top-1 minus top-2 logit) say which steps are too close to call.",
        "lib": lib_info(),
        "cases": cases,
    }


def cmd_generate(a) -> int:
    prompts = json.loads(Path(a.prompts).read_text()) if a.prompts else DEFAULT_PROMPTS
    if a.user_message:
        prompts = [{"name": "user", "messages": [{"role": "user", "content": m}]} for m in a.user_message]
    t0 = time.time()
    write_json(generate_reference(a.model, prompts, a.n_predict, a.top_k, a.threads), a.out)
    log(f"done in {time.time() - t0:.1f} s")
    return 0


def read_corpus(paths: list) -> list:
    """scripts/tokenizer-corpus.txt format: one entry per line; lines starting with '#' and
    empty lines are skipped; JSON string escapes are decoded (\\n, \\t, \\\\, \\u00a0, \\ud83d\\ude00),
    so entries can hold newlines, tabs and trailing spaces that editors would not keep."""
    out = []
    for p in paths:
        for n, line in enumerate(Path(p).read_text(encoding="utf-8").split("\n"), 1):
            if not line or line.startswith("#"):
                continue
            try:
                out.append(json.loads('"' + line.replace('"', '\\"') + '"'))
            except json.JSONDecodeError as e:
                sys.exit(f"{p}:{n}: bad escape ({e}); write a backslash as \\\\")
    return out


def read_llama_inp(path: Path) -> list:
    """llama.cpp's tokenizer test inputs (models/ggml-vocab-*.gguf.inp), split exactly like
    tests/test-tokenizer-0.cpp does (separator '\\n__ggml_vocab_test__\\n')."""
    raw, sep, out, pos = path.read_text(encoding="utf-8"), "\n__ggml_vocab_test__\n", [], 0
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        if nxt < 0:
            out.append(raw[pos:])
            break
        out.append(raw[pos:nxt])
        pos = nxt + len(sep)
    return out


def tokenizer_reference(model: str, corpora: list, llama_inp: list = ()) -> dict:
    llm = load(model, vocab_only=True)
    vocab = llm._model.vocab
    texts = [(Path(c).name, t) for c in corpora for t in read_corpus([c])]
    for p in llama_inp:
        texts += [(Path(p).name, t) for t in read_llama_inp(Path(p))]
    entries = []
    for source, text in texts:
        e = {"source": source, "text": text, "runs": []}
        for add_special in (False, True):
            for parse_special in (False, True):
                toks = tokenize(llm, text, add_special, parse_special)
                e["runs"].append({
                    "add_special": add_special, "parse_special": parse_special, "tokens": toks,
                    "pieces_hex": [piece(llm, t, True).hex() for t in toks],
                    "detokenize": text_of(detokenize(llm, toks, False, True)),
                    "detokenize_remove_special": text_of(detokenize(llm, toks, True, False)),
                })
        entries.append(e)
    return {
        "model": Path(model).name, "model_sha256": sha256(Path(model)),
        "reference": "llama.cpp 0c1e570 (llama-cpp-python 0.3.36 sdist, native build), vocab_only",
        "vocab": {"type": {1: "SPM", 2: "BPE", 3: "WPM", 4: "UGM", 5: "RWKV"}.get(lc.llama_vocab_type(vocab), "?"),
                  "n_tokens": lc.llama_vocab_n_tokens(vocab), "bos": lc.llama_vocab_bos(vocab),
                  "eos": lc.llama_vocab_eos(vocab), "eot": lc.llama_vocab_eot(vocab),
                  "add_bos": bool(lc.llama_vocab_get_add_bos(vocab)), "add_eos": bool(lc.llama_vocab_get_add_eos(vocab))},
        "note": "runs: the 4 combinations of llama_tokenize(add_special, parse_special); pieces_hex: "
                "llama_token_to_piece(special=true, lstrip=0) bytes in hex (a piece can be part of a UTF-8 "
                "character); detokenize: llama_detokenize(remove_special=false, unparse_special=true); "
                "detokenize_remove_special: (remove_special=true, unparse_special=false).",
        "lib": lib_info(),
        "entries": entries,
    }


def cmd_tokenize(a) -> int:
    out = tokenizer_reference(a.model, a.corpus or [DEFAULT_CORPUS], a.llama_inp or [])
    write_json(out, a.out)
    log(f"{len(out['entries'])} entries x 4 runs")
    return 0


def cmd_stats(a) -> int:
    llm = load(a.model, threads=a.threads)
    vocab = llm._model.vocab
    main = tokenize(llm, "Tell me a short story about a robot who learns to paint. Once upon a time", True, False)
    other = tokenize(llm, "SELECT name FROM users WHERE age > 30; the weather today is sunny and warm", True, False)
    g = greedy(llm, main, a.n_predict, 2)
    # teacher-force the same continuation after another context: does the top-1 move?
    h = greedy(llm, other, a.n_predict, 2, forced=g["tokens"])
    m = np.array([s[0][1] - s[1][1] for s in g["top"]])
    same = np.mean([x == y for x, y in zip(g["tokens"], h["tokens"])])
    self_rep = np.mean([g["tokens"][i] == (g["tokens"][i - 1] if i else main[-1]) for i in range(len(g["tokens"]))])
    logits = logits_last(llm)
    res = {
        "model": Path(a.model).name,
        "steps": len(m),
        "margin_min": round(float(m.min()), 4), "margin_p10": round(float(np.percentile(m, 10)), 4),
        "margin_median": round(float(np.median(m)), 4), "margin_mean": round(float(m.mean()), 4),
        "margin_max": round(float(m.max()), 4),
        "steps_margin_below_0.1": int((m < 0.1).sum()), "steps_margin_below_0.5": int((m < 0.5).sum()),
        "distinct_greedy_tokens": len(set(g["tokens"])),
        "top1_repeats_previous_token": round(float(self_rep), 3),
        "top1_unchanged_when_context_replaced": round(float(same), 3),
        "logit_std_last_step": round(float(logits.std()), 3),
        "greedy_text": text_of(detokenize(llm, g["tokens"], False, True))[:200],
    }
    print(json.dumps(res, indent=1, ensure_ascii=False))
    return 0


def cmd_chat(a) -> int:
    llm = load(a.model, vocab_only=True)
    msgs = json.loads(a.messages)
    j = render_jinja(llm, msgs)
    print("jinja:", repr(j))
    print("llama_chat_apply_template:", repr(render_builtin(llm, msgs)))
    print("tokens:", tokenize(llm, j, False, True))
    return 0


def write_json(obj, out: str | None) -> None:
    s = json.dumps(obj, indent=1, ensure_ascii=False)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out + ".tmp")
        tmp.write_text(s + "\n", encoding="utf-8")
        tmp.replace(out)
        log(f"wrote {out}")
    else:
        print(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="greedy tokens and top-k logits")
    g.add_argument("model")
    g.add_argument("--prompts", help='JSON list of {"name", "text"} or {"name", "messages": [{"role","content"}]}')
    g.add_argument("--user-message", action="append", help="a single-user-message chat prompt (repeatable)")
    g.add_argument("--n-predict", type=int, default=64)
    g.add_argument("--top-k", type=int, default=5)
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--out")
    t = sub.add_parser("tokenize", help="tokenizer references")
    t.add_argument("model")
    t.add_argument("--corpus", action="append", help=f"corpus file(s) (default {DEFAULT_CORPUS.relative_to(REPO)})")
    t.add_argument("--llama-inp", action="append", help="llama.cpp test input files (models/ggml-vocab-*.gguf.inp)")
    t.add_argument("--out")
    s = sub.add_parser("stats", help="margins and context sensitivity of a (random) model")
    s.add_argument("model")
    s.add_argument("--n-predict", type=int, default=64)
    s.add_argument("--threads", type=int, default=None)
    c = sub.add_parser("chat", help="render a chat prompt")
    c.add_argument("model")
    c.add_argument("--messages", required=True)
    a = ap.parse_args(argv)
    return {"generate": cmd_generate, "tokenize": cmd_tokenize, "stats": cmd_stats, "chat": cmd_chat}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
