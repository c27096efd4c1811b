#!/usr/bin/env bash
# The llama.cpp-referenced test fixtures, in one call (Rust tests and CI use this):
#
#   dir=$(scripts/fixtures.sh)        # prints the fixture directory on stdout (last line)
#
# It ensures the llama.cpp library build and the venv (scripts/llama-cpp.sh lib), then
# generates, each only once (cached in ${DLLM_CACHE:-~/.cache/distributed-llm}/fixtures/):
#   - a tiny random-weight model of every family (scripts/make-gguf.py --shape tiny, seed 0):
#       llama (SmolLM2 vocab, tied)          F16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K_M Q5_K_M Q6_K BF16
#       llama3 --untied (rope_freqs, output.weight), llama --moe (Mixtral-style experts),
#       qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3      F16 Q8_0 Q4_K_M
#   - the default model (SmolLM2-135M-Instruct Q4_1) requantized to Q4_K_M: at 576 wide,
#     llama.cpp falls back to Q5_0 (and Q8_0) for most matrices (see docs/performance.md)
#   - for every model file: <file>.reference.json (scripts/llama-reference.py generate:
#     prompt tokens, 64 greedy tokens, top-5 logits per step, for 2 chat and 2 raw prompts),
#     the default model itself included (SmolLM2-135M-Instruct.Q4_1.gguf.reference.json,
#     crates/engine/tests/reference.rs; the model is fetched with `agent fetch-model` first)
#   - tokenizer references tokenizer-<name>.json (scripts/llama-reference.py tokenize) for
#     each vocabulary in the models, and for llama.cpp's real vocabularies (llama-bpe, qwen2,
#     phi-3, llama-spm) on scripts/tokenizer-corpus.txt plus llama.cpp's own test inputs
#   - manifest.json: every file with its family, tokenizer, type, sha256 and reference;
#     "default_model": the default model's reference
#
# llama.cpp's and the quantizer's own output goes to fixtures.log in the fixture directory
# (its tail is printed on failure); stderr gets one line per phase.
#
# Warm runs are instant: a stamp records a hash of the scripts, templates and corpus that
# made the fixtures; when any of them changes the fixtures are regenerated.
# Env: DLLM_CACHE (cache root), FIXTURES_DIR (default $DLLM_CACHE/fixtures),
#      LLAMA_CPP_BUILD (which scripts/llama-cpp.sh build to ensure; default lib).
set -euo pipefail
cd "$(dirname "$0")/.."

. hack/lib.sh # ensure_model
CACHE=${DLLM_CACHE:-$HOME/.cache/distributed-llm}
DIR=${FIXTURES_DIR:-$CACHE/fixtures}
mkdir -p "$DIR"
log() { echo "[fixtures.sh] $*" >&2; }

# what the fixtures depend on (not the llama.cpp build: it is pinned to one version)
inputs_hash() {
    cat scripts/fixtures.sh scripts/make-gguf.py scripts/llama-reference.py scripts/tokenizer-corpus.txt \
        scripts/templates/*.jinja | sha256sum | cut -c1-16
}
HASH=$(inputs_hash)
STAMP=$DIR/.complete
if [[ $(cat "$STAMP" 2>/dev/null) == "$HASH" ]]; then
    log "fixtures up to date ($DIR)"
    echo "$DIR"
    exit 0
fi

# one generator at a time (parallel test binaries may all call this)
exec 9>"$DIR/.lock"
if ! flock -n 9; then
    log "another fixtures.sh is running; waiting for it ..."
    flock 9
fi
if [[ $(cat "$STAMP" 2>/dev/null) == "$HASH" ]]; then
    echo "$DIR"
    exit 0
fi

t0=$(date +%s)
if [[ -f $DIR/.inputs && $(cat "$DIR/.inputs") != "$HASH" ]]; then
    # only what this script makes (other files of the cache directory are left alone)
    log "scripts changed since the fixtures were made: regenerating them"
    rm -f "$DIR"/*-tiny-*-0.*.gguf "$DIR"/SmolLM2-135M-Instruct.Q4_1.*.gguf "$DIR"/*.reference.json \
        "$DIR"/tokenizer-*.json "$DIR"/manifest.json
fi
echo "$HASH" >"$DIR/.inputs"

log "ensuring the llama.cpp build and the venv (scripts/llama-cpp.sh ${LLAMA_CPP_BUILD:-lib}) ..."
scripts/llama-cpp.sh "${LLAMA_CPP_BUILD:-lib}"
eval "$(scripts/llama-cpp.sh env 2>/dev/null)"
ensure_model "${BIN_DIR:-target/debug}" || {
    log "could not fetch the default model (agent fetch-model)"
    exit 1
}
t1=$(date +%s)
log "llama.cpp ready in $((t1 - t0)) s; generating fixtures into $DIR (about 5 min on 2 cores; log: $DIR/fixtures.log) ..."

# All steps in one Python process (imports and the default model's vocabulary read once).
# Its stderr (llama.cpp's and the quantizer's logs) goes to fixtures.log.
FIXTURES_DIR=$DIR "$PY" - 2>"$DIR/fixtures.log" <<'EOF' || {
import contextlib, hashlib, importlib.util, json, os, sys, time
from pathlib import Path

def module(name, file):
    spec = importlib.util.spec_from_file_location(name, file)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m  # (dataclasses look their module up)
    spec.loader.exec_module(m)
    return m

mg = module("make_gguf", "scripts/make-gguf.py")
ref = module("llama_reference", "scripts/llama-reference.py")
D = Path(os.environ["FIXTURES_DIR"])
ALL_QUANTS = "Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q4_K_M,Q5_K_M,Q6_K,BF16"
FAMILY_QUANTS = "Q8_0,Q4_K_M"
MODELS = [  # (arch, extra args, quantizations)
    ("llama", [], ALL_QUANTS),
    ("llama3", ["--untied"], FAMILY_QUANTS),
    ("llama", ["--moe"], FAMILY_QUANTS),
    ("qwen2", [], FAMILY_QUANTS),
    ("qwen3", [], FAMILY_QUANTS),
    ("qwen3moe", [], FAMILY_QUANTS),
    ("gemma2", [], FAMILY_QUANTS),
    ("gemma3", [], FAMILY_QUANTS),
    ("phi3", [], FAMILY_QUANTS),
]
manifest = {"models": [], "tokenizers": []}
timing = {}

def step(name, fn):
    t = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        r = fn()
    timing[name] = round(time.time() - t, 1)
    return r

def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 24), b""):
            h.update(b)
    return h.hexdigest()

def reference(path):
    """<fixture dir>/<model file name>.reference.json, made once."""
    out = D / f"{path.name}.reference.json"
    if not out.is_file():
        step(f"reference {path.name}", lambda: ref.write_json(
            ref.generate_reference(str(path), ref.DEFAULT_PROMPTS, 64, 5), str(out)))
    return out

def with_reference(path, family, tokenizer, kind):
    out = reference(path)
    manifest["models"].append({"file": path.name, "family": family, "tokenizer": tokenizer, "type": kind,
                               "sha256": sha(path), "reference": out.name})

tokenizer_models = {}
for arch, extra, quants in MODELS:
    tok = mg.default_tokenizer(arch, "tiny")
    paths = step(f"make {arch}", lambda: mg.run(["--arch", arch, "--shape", "tiny", "--seed", "0", "--cache",
                                                  "--out", str(D / f"{arch}{''.join('-' + x.lstrip('-') for x in extra)}-tiny-{tok}-0"),
                                                  "--quant", quants, *extra]))
    for p in paths:
        with_reference(p, arch, tok, p.name.rsplit(".", 2)[-2])
    # one tokenizer reference per distinct vocabulary (spm differs by family specials)
    key = tok if tok != "spm" else f"spm-{mg.spm_family(arch)}"
    tokenizer_models.setdefault(key, paths[0])

# the default model itself (crates/engine/tests/reference.rs; the file stays in the model cache)
default = mg.default_model()
manifest["default_model"] = {"file": default.name, "sha256": sha(default), "reference": reference(default).name}
# the default model, requantized: the K-quant fallbacks at 576 wide
for p in step("requant default model", lambda: mg.run(["--from", str(default), "--quant", "Q4_K_M", "--cache",
                                                       "--out", str(D / default.name.removesuffix(".gguf"))])):
    with_reference(p, "llama", "smollm", p.name.rsplit(".", 2)[-2])

corpus = [str(ref.DEFAULT_CORPUS)]
for key, model in tokenizer_models.items():
    out = D / f"tokenizer-{key}.json"
    if not out.is_file():
        step(f"tokenizer {key}", lambda: ref.write_json(ref.tokenizer_reference(str(model), corpus), str(out)))
    manifest["tokenizers"].append({"name": key, "vocab_from": model.name, "reference": out.name})
for key, f in mg.REAL_VOCAB.items():
    vocab = mg.VOCAB_DIR / f
    out = D / f"tokenizer-{key}.json"
    inp = Path(str(vocab) + ".inp")
    if not out.is_file():
        step(f"tokenizer {key}", lambda: ref.write_json(
            ref.tokenizer_reference(str(vocab), corpus, [str(inp)] if inp.is_file() else []), str(out)))
    manifest["tokenizers"].append({"name": key, "vocab_from": f"llama.cpp models/{f}", "reference": out.name})

manifest["note"] = ("Made by scripts/fixtures.sh (scripts/make-gguf.py + scripts/llama-reference.py over "
                    "llama.cpp 0c1e570 from llama-cpp-python 0.3.36). Models: tiny random weights, seed 0.")
ref.write_json(manifest, str(D / "manifest.json"))
for k, v in timing.items():
    print(f"[fixtures.sh]   {v:6.1f} s  {k}", file=sys.stderr)
EOF
    log "generating the fixtures failed; the end of $DIR/fixtures.log:"
    tail -40 "$DIR/fixtures.log" >&2
    exit 1
}

echo "$HASH" >"$STAMP"
grep -a '^\[fixtures.sh\]' "$DIR/fixtures.log" >&2 # the time of each model
log "fixtures ready in $(($(date +%s) - t0)) s (llama.cpp $((t1 - t0)) s, fixtures $(($(date +%s) - t1)) s): $DIR"
echo "$DIR"
