#!/usr/bin/env python3
"""Random-weight GGUF models with the exact tensor names, shapes and metadata keys that
llama.cpp 0.3.36 (the anchor, commit 0c1e570) loads, for the families the engine supports:

  llama     SmolLM2-like: tied output, no rope scaling (rope type NORM)
  llama3    Llama 3.x: `rope_freqs.weight` (llama3 rope scaling factors), GQA, rope base 5e5
  qwen2     Qwen2.5: Q/K/V biases, rope base 1e6 (rope type NEOX)
  qwen3     Qwen3: per-head q/k RMS norms, head_dim * n_head != n_embd
  qwen3moe  Qwen3-MoE: router `ffn_gate_inp` (F32), experts `ffn_{gate,up,down}_exps`,
            expert_count / expert_used_count / expert_feed_forward_length
  gemma2    Gemma 2: post-attention / post-ffw norms, attention and final logit softcapping,
            sliding window on every other layer, embeddings scaled by sqrt(n_embd)
  gemma3    Gemma 3: q/k norms, sliding window on 5 of every 6 layers (llama.cpp's default
            pattern, no key written, like the converter), local/global rope bases
  --moe     (llama, llama3) Mixtral-style experts: `ffn_gate_inp` and `ffn_{gate,up,down}_exps`
            as wide as feed_forward_length, expert_count / expert_used_count
  phi3      Phi-3: fused `attn_qkv`, gate and up fused in `ffn_up` (2*n_ff rows, gate first),
            `sliding_window` key written like the converter (llama.cpp ignores it for phi3)

Every file is a plain F16 "master" (2-D weights F16; norms, biases, router, rope factors F32,
as convert_hf_to_gguf.py writes them); `--quant` requantizes the master with llama.cpp's own
quantizer (`llama_model_quantize` through the Python binding over our native libllama).

Weights are N(0,1)-based with per-tensor scales chosen so that a random model still has
peaked, context-dependent next-token distributions (see --logit-std, --residual-gain,
--attn-sharpness); each tensor has its own RNG stream seeded by (seed, tensor name), so the
output is bit-identical for a given seed and flags.

Run it with the venv python and the exports of `scripts/llama-cpp.sh env`:
  eval "$(scripts/llama-cpp.sh env)"
  $PY scripts/make-gguf.py --arch qwen3 --shape tiny --quant Q8_0,Q4_K_M --cache
Outputs (one path per line on stdout; progress on stderr):
  <prefix>.F16.gguf and <prefix>.<QUANT>.gguf, where <prefix> is --out, else
  $DLLM_CACHE/fixtures/<arch>-<shape>-<tokenizer>-<seed> (with --cache, existing files are kept).
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT
except ImportError as e:  # pragma: no cover
    sys.exit(f"make-gguf.py: {e}: run it with the venv python: eval \"$(scripts/llama-cpp.sh env)\"; $PY {sys.argv[0]} ...")

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "scripts" / "templates"
CACHE = Path(os.environ.get("DLLM_CACHE") or Path.home() / ".cache" / "distributed-llm")
LLAMA_CPP_VERSION = "0.3.36"
SDIST = CACHE / "llama.cpp" / LLAMA_CPP_VERSION / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}"
VOCAB_DIR = SDIST / "vendor" / "llama.cpp" / "models"  # llama.cpp's real vocab-only GGUFs


def log(*a):
    print("[make-gguf]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------


@dataclass
class Shape:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int | None = None  # None: n_embd / n_head
    n_ctx: int = 4096
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int | None = None  # None: n_ff / 4 (rounded to 256 when possible)
    n_swa: int | None = None  # sliding window (gemma2/gemma3); None: family default
    extra: dict = field(default_factory=dict)


# tiny: dims multiples of 256 so every K-quant applies to every matrix, GQA, a few layers.
SHAPES = {
    "tiny": Shape("tiny", n_embd=256, n_layer=4, n_head=4, n_head_kv=2, n_ff=512, n_ctx=4096,
                  n_expert=8, n_expert_used=2, n_ff_exp=256, n_swa=32),
    # HuggingFaceTB/SmolLM2-135M: 576 wide (not a multiple of 256: K-quants fall back)
    "smollm2-135m": Shape("smollm2-135m", n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536,
                          n_ctx=8192),
    # meta-llama/Llama-3.2-1B
    "1b": Shape("1b", n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, n_ctx=131072),
    # meta-llama/Llama-3.2-3B
    "3b": Shape("3b", n_embd=3072, n_layer=28, n_head=24, n_head_kv=8, n_ff=8192, n_ctx=131072),
}

# Per-family details of the tiny shape (so that the feature is exercised at tiny size).
TINY_FAMILY = {
    "qwen3": dict(head_dim=128),  # 4 heads x 128 = 512 != n_embd 256, like Qwen3-0.6B
    "qwen3moe": dict(head_dim=128),
    "gemma2": dict(head_dim=128),
    "gemma3": dict(n_layer=6, head_dim=128),  # 6 layers: 5 sliding + 1 global (default pattern 6)
}
FAMILY_HEAD_DIM = {"qwen3": 128, "qwen3moe": 128, "gemma2": 256, "gemma3": 256}

ARCHS = ["llama", "llama3", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"]
GGUF_ARCH = {a: ("llama" if a == "llama3" else a) for a in ARCHS}

# family hyper-parameters as the converters write them (from the real configs)
FAMILY = {
    "llama": dict(rope_base=100000.0, eps=1e-5),
    "llama3": dict(rope_base=500000.0, eps=1e-5,
                   llama3_rope=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192)),
    "qwen2": dict(rope_base=1000000.0, eps=1e-6),
    "qwen3": dict(rope_base=1000000.0, eps=1e-6),
    "qwen3moe": dict(rope_base=1000000.0, eps=1e-6),
    "gemma2": dict(rope_base=10000.0, eps=1e-6, attn_softcap=50.0, final_softcap=30.0, n_swa=4096),
    "gemma3": dict(rope_base=1000000.0, rope_base_swa=10000.0, eps=1e-6, n_swa=512),
    "phi3": dict(rope_base=10000.0, eps=1e-5, phi3_swa=2047),
}

TEMPLATE_FILE = {
    "llama3": "llama3.jinja", "qwen2": "qwen2.jinja", "qwen3": "qwen3.jinja",
    "qwen3moe": "qwen3.jinja", "gemma2": "gemma2.jinja", "gemma3": "gemma3.jinja",
    "phi3": "phi3.jinja",
}  # llama: the SmolLM2 template of the default model

# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------
TOKENIZERS = {
    "smollm": "SmolLM2's BPE vocabulary exactly as in the default model (pre smollm, its ChatML template)",
    "llama-bpe": "SmolLM2's vocabulary with tokenizer.ggml.pre = llama-bpe and the family's chat template",
    "qwen2": "SmolLM2's vocabulary with tokenizer.ggml.pre = qwen2 and the family's chat template",
    "spm": "a SentencePiece (tokenizer.ggml.model = llama) BPE vocabulary trained here, byte fallback, "
           "with the family's special tokens",
    "llama-bpe-real": "the real Llama 3 vocabulary (128256) from llama.cpp's models/ggml-vocab-llama-bpe.gguf",
    "qwen2-real": "the real Qwen2 vocabulary (151936) from llama.cpp's models/ggml-vocab-qwen2.gguf",
    "phi3-real": "the real Phi-3 SentencePiece vocabulary (32064) from llama.cpp's models/ggml-vocab-phi-3.gguf",
    "llama-spm-real": "the real Llama 2 SentencePiece vocabulary (32000) from llama.cpp's models/ggml-vocab-llama-spm.gguf",
}
REAL_VOCAB = {"llama-bpe-real": "ggml-vocab-llama-bpe.gguf", "qwen2-real": "ggml-vocab-qwen2.gguf",
              "phi3-real": "ggml-vocab-phi-3.gguf", "llama-spm-real": "ggml-vocab-llama-spm.gguf"}


def default_tokenizer(arch: str, shape: str) -> str:
    if arch in ("llama", "llama3") and shape in ("1b", "3b"):
        return "llama-bpe-real"  # the real 128256-token head, as in Llama 3.2
    return {"llama": "smollm", "llama3": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2",
            "qwen3moe": "qwen2", "gemma2": "spm", "gemma3": "spm", "phi3": "spm"}[arch]


def model_dir() -> Path:
    """Where the engine caches models (crates/engine/src/fetch.rs: same rules)."""
    if os.environ.get("DLLM_MODEL_DIR"):
        return Path(os.environ["DLLM_MODEL_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "distributed-llm" / "models"


def default_model() -> Path:
    p = model_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if p.is_file():
        return p
    out = ""
    for cmd in (["cargo", "run", "-q", "--release", "-p", "engine", "--bin", "fetch-model"],
                ["cargo", "run", "-q", "--release", "-p", "agent", "--bin", "agent", "--", "fetch-model"]):
        log(f"{p} missing: fetching it with `{' '.join(cmd)}` ...")
        try:
            out = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
            break
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"  failed: {e}")
    else:
        sys.exit(f"make-gguf.py: could not fetch the default model; run `make model` in {REPO}")
    p2 = Path(out.strip().splitlines()[-1]) if out.strip() else p
    if not p2.is_file():
        sys.exit(f"make-gguf.py: fetch-model did not produce {p}; run `make model`")
    return p2


def field_value(r: GGUFReader, key: str):
    f = r.fields.get(key)
    if f is None:
        return None
    v = f.contents()
    return v


@dataclass
class Vocab:
    kind: str  # gguf tokenizer.ggml.model: gpt2 | llama
    pre: str
    tokens: list  # bytes
    types: list  # int
    scores: list | None = None
    merges: list | None = None
    ids: dict = field(default_factory=dict)  # bos/eos/unk/pad/eot -> id
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    template: str | None = None
    source: str = ""

    def id_of(self, text: str) -> int | None:
        b = text.encode()
        for i, t in enumerate(self.tokens):
            if t == b:
                return i
        return None


def vocab_from_gguf(path: Path, source: str) -> Vocab:
    """The tokenizer metadata of a GGUF (cached: a fresh copy per call)."""
    return copy.deepcopy(_vocab_from_gguf(str(path), source))


@functools.lru_cache(maxsize=8)
def _vocab_from_gguf(path: str, source: str) -> Vocab:
    r = GGUFReader(path)
    toks = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(toks.parts[i]) for i in toks.data]
    types = [int(x) for x in field_value(r, "tokenizer.ggml.token_type")]
    v = Vocab(kind=field_value(r, "tokenizer.ggml.model"), pre=field_value(r, "tokenizer.ggml.pre") or "default",
              tokens=tokens, types=types, source=source)
    if "tokenizer.ggml.scores" in r.fields:
        v.scores = [float(x) for x in field_value(r, "tokenizer.ggml.scores")]
    if "tokenizer.ggml.merges" in r.fields:
        m = r.fields["tokenizer.ggml.merges"]
        v.merges = [bytes(m.parts[i]) for i in m.data]
    for k, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                   ("pad", "padding_token_id"), ("eot", "eot_token_id")]:
        x = field_value(r, f"tokenizer.ggml.{key}")
        if x is not None:
            v.ids[k] = int(x)
    v.add_bos = field_value(r, "tokenizer.ggml.add_bos_token")
    v.add_eos = field_value(r, "tokenizer.ggml.add_eos_token")
    v.add_space_prefix = field_value(r, "tokenizer.ggml.add_space_prefix")
    v.template = field_value(r, "tokenizer.chat_template")
    return v


# The family's special tokens for the trained SentencePiece vocabulary: ids 0.. are the
# control pieces (in this order), then the chat tokens as user-defined pieces.
SPM_FAMILY = {
    # family: (unk, bos, eos, pad, chat tokens, eos override, eot, add_bos, add_space_prefix)
    "gemma": dict(order=["<pad>", "<eos>", "<bos>", "<unk>"], unk="<unk>", bos="<bos>", eos="<eos>", pad="<pad>",
                  chat=["<start_of_turn>", "<end_of_turn>"], eot="<end_of_turn>", add_bos=True, space=False),
    "phi3": dict(order=["<unk>", "<s>", "</s>"], unk="<unk>", bos="<s>", eos="</s>", pad=None,
                 chat=["<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"],
                 eos_override="<|endoftext|>", eot="<|end|>", add_bos=True, space=True),
    "qwen": dict(order=["<unk>", "<s>", "</s>"], unk="<unk>", bos="<s>", eos="</s>", pad=None,
                 chat=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_override="<|im_end|>",
                 add_bos=False, space=True),
    "llama3": dict(order=["<unk>", "<|begin_of_text|>", "<|end_of_text|>"], unk="<unk>", bos="<|begin_of_text|>",
                   eos="<|end_of_text|>", pad=None, chat=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                   eos_override="<|eot_id|>", eot="<|eot_id|>", add_bos=True, space=True),
    "llama": dict(order=["<unk>", "<s>", "</s>"], unk="<unk>", bos="<s>", eos="</s>", pad=None,
                  chat=["<|im_start|>", "<|im_end|>"], eos_override="<|im_end|>", add_bos=True, space=True),
}


def spm_family(arch: str) -> str:
    return {"gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3", "qwen2": "qwen", "qwen3": "qwen",
            "qwen3moe": "qwen", "llama3": "llama3"}.get(arch, "llama")


# A small multilingual corpus (written for this script) to train the SentencePiece vocabulary.
SPM_CORPUS = """\
The quick brown fox jumps over the lazy dog while the robot paints a picture of the sea.
Once upon a time, in a small village by the river, there lived an old clockmaker and his cat.
Every morning he opened the shop at seven o'clock, swept the floor and wound all the clocks.
A distributed system is one in which the failure of a computer you did not know existed can render your own computer unusable.
Agents gossip about their CPU, memory and GPUs; each one is given a contiguous range of layers.
Hidden states flow from agent to agent over gRPC, and the tokens stream back to the client.
The weather today is sunny with a light breeze from the west; tomorrow it will rain again.
She asked him whether he had read the book, and he answered that he had not finished it yet.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 3.14159 2.71828 1,000,000 12:30 2024-07-26
Prices went up by 3.5% in March, 4.25% in April and 0.75% in May, according to the report.
def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a
fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}
for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product
SELECT name, count(*) FROM users WHERE age > 30 GROUP BY name ORDER BY 2 DESC;
{"role": "user", "content": "Tell me a short story about a robot who learns to paint."}
<html><body><p class="note">Hello, world!</p></body></html>
Le renard brun rapide saute par-dessus le chien paresseux. L'été est chaud à Paris.
Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!
El rápido zorro marrón salta sobre el perro perezoso. ¿Dónde está la biblioteca?
Быстрая коричневая лиса прыгает через ленивую собаку.
敏捷的棕色狐狸跳过了懒狗。今天天气很好，我们去公园散步吧。
素早い茶色の狐が怠け者の犬を飛び越える。東京は日本の首都です。
빠른 갈색 여우가 게으른 개를 뛰어넘는다. 안녕하세요!
Emoji: 😀 🚀 🎨 🤖 👍🏽 ❤️ 🇫🇷 — and symbols: © ® ™ € £ ¥ ± × ÷ → ← ∞ ≈ ≠ ≤ ≥
Tabs\tand  double  spaces,   triple spaces, and\nnew lines\n\n\nand trailing spaces   
The robot learned to paint the sea, the sky and the mountains; then it painted itself.
In the beginning the universe was created. This has made a lot of people very angry.
All happy families are alike; each unhappy family is unhappy in its own way.
It was the best of times, it was the worst of times, it was the age of wisdom.
"""


def spm_vocab(arch: str, vocab_size: int) -> Vocab:
    """Trains a SentencePiece BPE model (Llama-style settings: byte fallback, digit split,
    identity normalization) and converts it the way convert_hf_to_gguf.py does."""
    import sentencepiece as spm

    fam = SPM_FAMILY[spm_family(arch)]
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d) / "corpus.txt"
        corpus.write_text(SPM_CORPUS.replace("\\n", "\n").replace("\\t", "\t") * 3, encoding="utf-8")
        ids = {p: i for i, p in enumerate(fam["order"])}
        kw = dict(
            input=str(corpus), model_prefix=str(Path(d) / "m"), model_type="bpe", vocab_size=vocab_size,
            character_coverage=1.0, byte_fallback=True, split_digits=True, split_by_unicode_script=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=fam["space"], allow_whitespace_only_pieces=True, hard_vocab_limit=False,
            unk_id=ids[fam["unk"]], bos_id=ids[fam["bos"]], eos_id=ids[fam["eos"]],
            pad_id=ids[fam["pad"]] if fam["pad"] else -1,
            unk_piece=fam["unk"], bos_piece=fam["bos"], eos_piece=fam["eos"], pad_piece=fam["pad"] or "<pad>",
            user_defined_symbols=fam["chat"], num_threads=1, minloglevel=2, seed_sentencepiece_size=100000,
            max_sentence_length=8192, train_extremely_large_corpus=False,
        )
        spm.SentencePieceTrainer.train(**kw)
        sp = spm.SentencePieceProcessor(model_file=str(Path(d) / "m.model"))
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for i in range(sp.vocab_size()):
        piece = sp.IdToPiece(i)
        t = T.NORMAL
        if sp.IsUnknown(i):
            t = T.UNKNOWN
        elif sp.IsControl(i):
            t = T.CONTROL
        elif sp.IsUnused(i):
            t = T.UNUSED
        elif sp.IsByte(i):
            t = T.BYTE
        if piece in fam["chat"]:
            t = T.CONTROL  # like tokenizer_config.json's "special": true (the converter's added_tokens_decoder)
        tokens.append(piece.encode())
        scores.append(float(sp.GetScore(i)))
        types.append(int(t))
    v = Vocab(kind="llama", pre="default", tokens=tokens, types=types, scores=scores,
              source=f"SentencePiece BPE {sp.vocab_size()} pieces trained by make-gguf.py ({spm_family(arch)} specials)")
    v.ids = {"bos": tokens.index(fam["bos"].encode()), "unk": tokens.index(fam["unk"].encode()),
             "eos": tokens.index(fam.get("eos_override", fam["eos"]).encode())}
    if fam["pad"]:
        v.ids["pad"] = tokens.index(fam["pad"].encode())
    if fam.get("eot"):
        v.ids["eot"] = tokens.index(fam["eot"].encode())
    v.add_bos, v.add_eos, v.add_space_prefix = fam["add_bos"], False, fam["space"]
    return v


def load_vocab(name: str, arch: str, spm_size: int) -> Vocab:
    if name in ("smollm", "llama-bpe", "qwen2"):
        v = vocab_from_gguf(default_model(), "SmolLM2-135M-Instruct (default model)")
        if name != "smollm":
            v.pre = name
            v.source += f", pre-tokenizer set to {name}"
        return v
    if name == "spm":
        return spm_vocab(arch, spm_size)
    if name in REAL_VOCAB:
        p = VOCAB_DIR / REAL_VOCAB[name]
        if not p.is_file():
            sys.exit(f"make-gguf.py: {p} missing: run scripts/llama-cpp.sh (it extracts the llama.cpp sources)")
        v = vocab_from_gguf(p, f"llama.cpp models/{REAL_VOCAB[name]}")
        # instruct-model end-of-turn tokens, as in the published instruct GGUFs
        if name == "llama-bpe-real":
            v.ids["eos"] = v.ids["eot"] = v.id_of("<|eot_id|>")
            v.add_bos = True
        if name == "qwen2-real":
            v.ids["eos"] = v.id_of("<|im_end|>")
            v.add_bos = False
        if name == "phi3-real":
            v.ids["eot"] = v.id_of("<|end|>")
        return v
    sys.exit(f"make-gguf.py: unknown tokenizer {name!r} (one of {', '.join(TOKENIZERS)})")


# --------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------


@dataclass
class Scales:
    logit_std: float  # std of the final logits over the vocabulary
    residual_gain: float  # size of each sublayer's output relative to the embedding
    attn_sharpness: float  # std of the attention scores q.k/sqrt(d)
    router_std: float = 2.0  # std of the MoE router logits
    bias_std: float = 0.3  # qwen2 q/k/v biases


def rope_llama3_factors(head_dim: int, base: float, p: dict) -> np.ndarray:
    """convert_hf_to_gguf.py (conversion/llama.py generate_extra_tensors), in float32."""
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    lo = p["original_max_position_embeddings"] / p["low_freq_factor"]
    hi = p["original_max_position_embeddings"] / p["high_freq_factor"]
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < hi:
            out.append(1.0)
        elif wavelen > lo:
            out.append(p["factor"])
        else:
            smooth = (p["original_max_position_embeddings"] / wavelen - p["low_freq_factor"]) / (
                p["high_freq_factor"] - p["low_freq_factor"])
            out.append(1 / ((1 - smooth) / p["factor"] + smooth))
    return np.array(out, dtype=np.float32)


class Gen:
    """Deterministic tensors: one RNG stream per (seed, name)."""

    CHUNK = 1 << 22  # values generated per call (fixed, so streams never depend on memory)

    def __init__(self, seed: int):
        self.seed = seed

    def rng(self, name: str):
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, zlib.crc32(name.encode())])))

    def normal(self, name: str, shape: tuple, std: float, dtype=np.float16, mean: float = 0.0) -> np.ndarray:
        rng = self.rng(name)
        n = int(np.prod(shape))
        out = np.empty(n, dtype=dtype)
        for i in range(0, n, self.CHUNK):
            k = min(self.CHUNK, n - i)
            x = rng.standard_normal(k, dtype=np.float32)
            x *= np.float32(std)
            if mean:
                x += np.float32(mean)
            out[i:i + k] = x
        return out.reshape(shape)

    def norm(self, name: str, n: int, gain: float, spread: float = 0.1) -> np.ndarray:
        """An RMSNorm weight around `gain` (F32, like the converter)."""
        return self.normal(name, (n,), gain * spread, np.float32, mean=gain)


@dataclass
class Spec:
    """Everything that defines a model file."""
    arch: str
    shape: Shape
    seed: int
    tokenizer: str
    untied: bool
    scales: Scales
    master: str  # F16 | F32
    template: str | None  # file or "none" or None (family default)
    spm_vocab_size: int = 1024
    moe: bool = False  # llama/llama3: Mixtral-style experts


def tensor_plan(spec: Spec, n_vocab: int):
    """Yields (name, numpy shape, dtype, maker) in file order; numpy shape = reversed ggml ne."""
    a, s, sc = spec.arch, spec.shape, spec.scales
    fam = FAMILY[a]
    d = s.n_embd
    hd = s.head_dim or d // s.n_head
    nq, nkv = s.n_head * hd, s.n_head_kv * hd
    wt = np.float16 if spec.master == "F16" else np.float32
    g = Gen(spec.seed)
    gemma = a.startswith("gemma")
    qk_norm = a in ("qwen3", "qwen3moe", "gemma3")
    # embeddings: std 1 (gemma: 1/sqrt(d), as gemma scales them by sqrt(d) on input)
    emb_std = 1.0 / math.sqrt(d) if gemma else 1.0
    # output norm gain so that logits = norm(x) * g . E have std logit_std
    g_out = sc.logit_std / (emb_std * math.sqrt(d))
    # with q/k norms the scores' scale comes from the norm weights, else from Wq/Wk
    qk_w = 1.0 if qk_norm else math.sqrt(sc.attn_sharpness)
    qk_n = math.sqrt(sc.attn_sharpness)
    # residual branch outputs: gemma's post-norms set their size; others: Wo / Wdown
    out_gain = 1.0 if gemma else sc.residual_gain
    plan = []

    def add(name, shape, dtype, fn):
        plan.append((name, tuple(shape), dtype, fn))

    def mat(name, rows, cols, gain=1.0):  # ggml ne = [cols (input), rows (output)]
        add(name, (rows, cols), wt, lambda name=name: g.normal(name, (rows, cols), gain / math.sqrt(cols), wt))

    def vec(name, n, gain, spread=0.1):
        add(name, (n,), np.float32, lambda name=name: g.norm(name, n, gain, spread))

    add("token_embd.weight", (n_vocab, d), wt, lambda: g.normal("token_embd.weight", (n_vocab, d), emb_std, wt))
    if a == "llama3":
        f = rope_llama3_factors(hd, fam["rope_base"], fam["llama3_rope"])
        add("rope_freqs.weight", (hd // 2,), np.float32, lambda: f)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", d, 1.0)
        if a == "phi3":
            def qkv(name=p + "attn_qkv.weight"):
                w = g.normal(name, (nq + 2 * nkv, d), 1.0 / math.sqrt(d), np.float32)
                w[: nq + nkv] *= np.float32(qk_w)
                return w.astype(wt)
            add(p + "attn_qkv.weight", (nq + 2 * nkv, d), wt, qkv)
        else:
            mat(p + "attn_q.weight", nq, d, qk_w)
            mat(p + "attn_k.weight", nkv, d, qk_w)
            mat(p + "attn_v.weight", nkv, d)
            if a == "qwen2":  # Q/K/V biases (F32)
                for t, n in (("q", nq), ("k", nkv), ("v", nkv)):
                    nm = p + f"attn_{t}.bias"
                    add(nm, (n,), np.float32, lambda nm=nm, n=n: g.normal(nm, (n,), sc.bias_std, np.float32))
        if qk_norm:
            vec(p + "attn_q_norm.weight", hd, qk_n)
            vec(p + "attn_k_norm.weight", hd, qk_n)
        mat(p + "attn_output.weight", d, nq, out_gain)
        if gemma:
            vec(p + "post_attention_norm.weight", d, sc.residual_gain)
        vec(p + "ffn_norm.weight", d, 1.0)
        if a == "qwen3moe" or spec.moe:
            ne, fe = s.n_expert, (s.n_ff if spec.moe else s.n_ff_exp or max(256, (s.n_ff // 4) // 256 * 256))
            add(p + "ffn_gate_inp.weight", (ne, d), np.float32,
                lambda name=p + "ffn_gate_inp.weight": g.normal(name, (ne, d), sc.router_std / math.sqrt(d), np.float32))
            for t, shp, gain, fan in (("gate", (ne, fe, d), 1.0, d), ("up", (ne, fe, d), 1.0, d),
                                      ("down", (ne, d, fe), out_gain, fe)):
                nm = p + f"ffn_{t}_exps.weight"
                add(nm, shp, wt, lambda nm=nm, shp=shp, gain=gain, fan=fan: g.normal(nm, shp, gain / math.sqrt(fan), wt))
        elif a == "phi3":
            mat(p + "ffn_up.weight", 2 * s.n_ff, d)  # rows [0, n_ff) gate, [n_ff, 2 n_ff) up
            mat(p + "ffn_down.weight", d, s.n_ff, out_gain)
        else:
            mat(p + "ffn_gate.weight", s.n_ff, d)
            mat(p + "ffn_up.weight", s.n_ff, d)
            mat(p + "ffn_down.weight", d, s.n_ff, out_gain)
        if gemma:
            vec(p + "post_ffw_norm.weight", d, sc.residual_gain)
    vec("output_norm.weight", d, g_out)
    if spec.untied:
        add("output.weight", (n_vocab, d), wt, lambda: g.normal("output.weight", (n_vocab, d), emb_std, wt))
    return plan


def resolve_shape(arch: str, base: Shape, ov: dict) -> Shape:
    s = replace(base)
    if base.name == "tiny":
        s = replace(s, **TINY_FAMILY.get(arch, {}))
    elif arch in FAMILY_HEAD_DIM and s.head_dim is None:
        s = replace(s, head_dim=FAMILY_HEAD_DIM[arch])
    return replace(s, **{k: v for k, v in ov.items() if v is not None})


def write_master(spec: Spec, path: Path) -> None:
    a, s = spec.arch, spec.shape
    fam = FAMILY[a]
    ga = GGUF_ARCH[a]
    vocab = load_vocab(spec.tokenizer, a, spec.spm_vocab_size)
    n_vocab = len(vocab.tokens)
    hd = s.head_dim or s.n_embd // s.n_head
    t0 = time.time()
    w = GGUFWriter(str(path), ga)  # writes general.architecture
    w.add_type("model")
    w.add_name(f"random {a} {s.name} seed {spec.seed}")
    w.add_description(f"random weights by distributed-llm scripts/make-gguf.py: arch={a} shape={s.name} "
                      f"tokenizer={spec.tokenizer} seed={spec.seed} untied={spec.untied} moe={spec.moe} "
                      f"logit_std={spec.scales.logit_std} residual_gain={spec.scales.residual_gain} "
                      f"attn_sharpness={spec.scales.attn_sharpness}")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if spec.master == "F16" else gguf.LlamaFileType.ALL_F32)
    # --- hyper-parameters (the keys each family's converter writes) ---
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_layer_norm_rms_eps(fam["eps"])
    w.add_rope_freq_base(fam["rope_base"])
    if ga == "llama":
        w.add_vocab_size(n_vocab)
        w.add_rope_dimension_count(hd)
    if a in ("qwen3", "qwen3moe", "gemma2", "gemma3") or (s.head_dim and s.head_dim != s.n_embd // s.n_head):
        w.add_key_length(hd)
        w.add_value_length(hd)
    if a == "qwen3moe" or spec.moe:
        w.add_expert_count(s.n_expert)
        w.add_expert_used_count(s.n_expert_used)
    if a == "qwen3moe":
        w.add_expert_feed_forward_length(s.n_ff_exp or max(256, (s.n_ff // 4) // 256 * 256))
    if a == "gemma2":
        w.add_attn_logit_softcapping(fam["attn_softcap"])
        w.add_final_logit_softcapping(fam["final_softcap"])
        w.add_sliding_window(s.n_swa or fam["n_swa"])
    if a == "gemma3":
        w.add_sliding_window(s.n_swa or fam["n_swa"])
        w.add_rope_freq_base_swa(fam["rope_base_swa"])
    if a == "phi3":
        w.add_rope_dimension_count(hd)
        w.add_rope_scaling_orig_ctx_len(s.n_ctx)
        w.add_sliding_window(fam["phi3_swa"])
    # --- tokenizer ---
    w.add_tokenizer_model(vocab.kind)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    if vocab.merges is not None:
        w.add_token_merges(vocab.merges)
    for k, fn in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                  ("pad", w.add_pad_token_id), ("eot", w.add_eot_token_id)):
        if vocab.ids.get(k) is not None:
            fn(vocab.ids[k])
    if vocab.add_bos is not None:
        w.add_add_bos_token(bool(vocab.add_bos))
    if vocab.add_eos is not None:
        w.add_add_eos_token(bool(vocab.add_eos))
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(bool(vocab.add_space_prefix))
    tmpl = chat_template(spec, vocab)
    if tmpl:
        w.add_chat_template(tmpl)
    # --- tensors: infos first, then the data one tensor at a time (bounded memory) ---
    plan = tensor_plan(spec, n_vocab)
    for name, shape, dtype, _ in plan:
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    n_params = 0
    for i, (name, shape, dtype, make) in enumerate(plan):
        x = make()
        assert x.shape == shape and x.dtype == dtype, (name, x.shape, shape, x.dtype, dtype)
        w.write_tensor_data(x)
        n_params += x.size
        if x.size > 20_000_000 or (i + 1) % 64 == 0:
            log(f"  {i + 1}/{len(plan)} tensors ({time.time() - t0:.0f} s)")
    w.close()
    log(f"wrote {path} ({n_params / 1e6:.1f} M parameters, vocab {n_vocab} [{vocab.source}], "
        f"{path.stat().st_size / 2**20:.1f} MiB) in {time.time() - t0:.1f} s")


def chat_template(spec: Spec, vocab: Vocab) -> str | None:
    if spec.template == "none":
        return None
    if spec.template:
        return Path(spec.template).read_text(encoding="utf-8")
    f = TEMPLATE_FILE.get(spec.arch)
    if f is None:  # llama: the default model's (SmolLM2) template
        return vocab.template or vocab_from_gguf(default_model(), "").template
    return (TEMPLATES / f).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------
# Quantization through llama.cpp (our native libllama)
# --------------------------------------------------------------------------------------
FTYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M",
          "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"]


def llama_cpp_module():
    try:
        import llama_cpp  # the sdist's package via PYTHONPATH, over LLAMA_CPP_LIB_PATH's libllama
    except Exception as e:
        sys.exit(f"make-gguf.py: cannot import llama_cpp ({e}): eval \"$(scripts/llama-cpp.sh env)\" first")
    return llama_cpp


def quantize(src: Path, dst: Path, qtype: str, threads: int, allow_requantize: bool = False) -> None:
    lc = llama_cpp_module()
    name = "LLAMA_FTYPE_ALL_F32" if qtype == "F32" else f"LLAMA_FTYPE_MOSTLY_{qtype}"
    if not hasattr(lc, name):
        sys.exit(f"make-gguf.py: llama.cpp has no file type {qtype} ({name})")
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, name)
    params.nthread = threads
    params.allow_requantize = allow_requantize
    tmp = dst.with_name(dst.name + ".tmp")
    t0 = time.time()
    log(f"quantizing {src.name} -> {dst.name} ({qtype}, llama_model_quantize, {threads} threads) ...")
    rc = lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        sys.exit(f"make-gguf.py: llama_model_quantize {qtype} failed (rc {rc})")
    tmp.replace(dst)
    log(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB) in {time.time() - t0:.1f} s")


def tensor_types(path: Path) -> dict:
    """{ggml type: [tensor names]} of a GGUF file."""
    r = GGUFReader(str(path))
    out: dict = {}
    for t in r.tensors:
        out.setdefault(t.tensor_type.name, []).append(t.name)
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 24), b""):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    run(argv)
    return 0


def run(argv=None) -> list:
    """The command line, callable in-process (scripts/fixtures.sh): returns the output paths."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="llama", choices=ARCHS)
    ap.add_argument("--shape", default="tiny", choices=list(SHAPES))
    ap.add_argument("--layers", type=int, help="override the number of layers")
    ap.add_argument("--hidden", type=int, help="override n_embd")
    ap.add_argument("--ff", type=int, help="override the feed-forward width")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--experts", type=int)
    ap.add_argument("--experts-used", type=int)
    ap.add_argument("--expert-ff", type=int)
    ap.add_argument("--ctx", type=int, help="context_length written to the file")
    ap.add_argument("--swa", type=int, help="sliding window (gemma2/gemma3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", choices=list(TOKENIZERS), help="default: by family (see --list)")
    ap.add_argument("--spm-vocab-size", type=int, default=1024)
    ap.add_argument("--template", help="a Jinja file for tokenizer.chat_template, or 'none' (default: the family's)")
    ap.add_argument("--untied", action="store_true", help="write a separate output.weight (not for gemma2)")
    ap.add_argument("--moe", action="store_true", help="llama/llama3: Mixtral-style experts (--experts, --experts-used)")
    ap.add_argument("--master", default="F16", choices=["F16", "F32"], help="type of the 2-D weights of the master")
    ap.add_argument("--quant", default="", help=f"comma list of llama.cpp file types ({','.join(FTYPES)})")
    ap.add_argument("--out", help="output prefix: writes PREFIX.F16.gguf and PREFIX.<QUANT>.gguf")
    ap.add_argument("--from", dest="src", metavar="GGUF",
                    help="requantize this existing model instead of making one (allow_requantize: a quantized "
                         "source is dequantized first); outputs PREFIX.<QUANT>.gguf, PREFIX defaulting to "
                         "$DLLM_CACHE/requant/<source name without .gguf>")
    ap.add_argument("--cache", action="store_true", help="keep files that exist already")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="quantization threads")
    ap.add_argument("--logit-std", type=float, default=None,
                    help="std of the output logits over the vocabulary (default 10; gemma2 5, below its softcap of 30)")
    ap.add_argument("--residual-gain", type=float, default=6.0,
                    help="size of each attention/FFN output relative to the token embedding (default 6: smaller "
                         "values let the tied embedding predict the input token again)")
    ap.add_argument("--attn-sharpness", type=float, default=3.0, help="std of the attention scores (default 3)")
    ap.add_argument("--types", action="store_true", help="also print the tensor types of every output file")
    ap.add_argument("--sha256", action="store_true", help="also print the sha256 of every output file")
    ap.add_argument("--list", action="store_true", help="list shapes, tokenizers and file types")
    a = ap.parse_args(argv)

    if a.list:
        for k, s in SHAPES.items():
            print(f"shape {k}: {s}")
        for k, v in TOKENIZERS.items():
            print(f"tokenizer {k}: {v}")
        print("arch defaults:", {x: default_tokenizer(x, "tiny") for x in ARCHS})
        print("file types:", ",".join(FTYPES))
        return []
    if a.src:
        return requantize_existing(a)
    if a.moe and GGUF_ARCH[a.arch] != "llama":
        ap.error("--moe is for llama/llama3 (qwen3moe has experts of its own)")
    if a.untied and a.arch == "gemma2":
        ap.error("gemma2 always uses token_embd as the output (llama.cpp ignores output.weight)")
    ov = dict(n_layer=a.layers, n_embd=a.hidden, n_ff=a.ff, n_head=a.heads, n_head_kv=a.kv_heads,
              head_dim=a.head_dim, n_expert=a.experts, n_expert_used=a.experts_used, n_ff_exp=a.expert_ff,
              n_ctx=a.ctx, n_swa=a.swa)
    shape = resolve_shape(a.arch, SHAPES[a.shape], ov)
    tok = a.tokenizer or default_tokenizer(a.arch, a.shape)
    logit_std = a.logit_std if a.logit_std is not None else (5.0 if a.arch == "gemma2" else 10.0)
    spec = Spec(arch=a.arch, shape=shape, seed=a.seed, tokenizer=tok, untied=a.untied, moe=a.moe,
                scales=Scales(logit_std, a.residual_gain, a.attn_sharpness), master=a.master,
                template=a.template, spm_vocab_size=a.spm_vocab_size)

    # file names: overrides and non-default knobs are part of the name (no cache collisions)
    shape_label = a.shape + "".join(f"-{k}{v}" for k, v in ov.items() if v is not None)
    arch_label = a.arch + ("-untied" if a.untied else "") + ("-moe" if a.moe else "")
    knobs = [(a.logit_std, None, "ls"), (a.residual_gain, 6.0, "rg"), (a.attn_sharpness, 3.0, "as"),
             (a.master, "F16", "m"), (a.template, None, "tmpl"), (a.spm_vocab_size if tok == "spm" else 1024, 1024, "sv")]
    extra = "".join(f"-{lbl}{Path(str(v)).stem}" for v, dflt, lbl in knobs if v != dflt)
    prefix = Path(a.out) if a.out else CACHE / "fixtures" / f"{arch_label}-{shape_label}-{tok}-{a.seed}{extra}"
    prefix.parent.mkdir(parents=True, exist_ok=True)

    master = Path(f"{prefix}.{a.master}.gguf")
    outs = [master]
    if a.cache and master.is_file():
        log(f"cached: {master}")
    else:
        tmp = master.with_name(master.name + ".tmp")
        write_master(spec, tmp)
        tmp.replace(master)
    for q in [q.strip().upper() for q in a.quant.split(",") if q.strip()]:
        if q not in FTYPES:
            ap.error(f"unknown quantization {q} (one of {','.join(FTYPES)})")
        if q == a.master:
            continue
        dst = Path(f"{prefix}.{q}.gguf")
        outs.append(dst)
        if a.cache and dst.is_file():
            log(f"cached: {dst}")
            continue
        quantize(master, dst, q, a.threads)
    report(outs, a)
    return outs


def requantize_existing(a) -> list:
    src = Path(a.src)
    if not src.is_file():
        sys.exit(f"make-gguf.py: {src}: no such file")
    prefix = Path(a.out) if a.out else CACHE / "requant" / src.name.removesuffix(".gguf")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    outs = []
    for q in [q.strip().upper() for q in a.quant.split(",") if q.strip()]:
        if q not in FTYPES:
            sys.exit(f"make-gguf.py: unknown quantization {q} (one of {','.join(FTYPES)})")
        dst = Path(f"{prefix}.{q}.gguf")
        outs.append(dst)
        if a.cache and dst.is_file():
            log(f"cached: {dst}")
            continue
        quantize(src, dst, q, a.threads, allow_requantize=True)
    report(outs, a)
    return outs


def report(outs: list, a) -> None:
    for p in outs:
        line = str(p)
        if a.sha256:
            line += f"  sha256={sha256(p)}"
        print(line, flush=True)
        if a.types:
            for t, names in sorted(tensor_types(p).items()):
                kinds = sorted(set(n.split(".")[2] if n.startswith("blk.") else n.rsplit(".", 1)[0] for n in names))
                print(f"    {t:7s} {len(names):4d}  {' '.join(kinds)}")


if __name__ == "__main__":
    sys.exit(main())
