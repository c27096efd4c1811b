#!/usr/bin/env bash
# llama.cpp tokenizer references for the BPE pre-tokenizers that scripts/fixtures.sh does
# not cover (crates/engine/tests/tokenizers.rs runs this after scripts/fixtures.sh):
#
#   dir=$(scripts/tokenizer-variants.sh)     # prints the directory on stdout (last line)
#
# For each variant: a vocabulary-only GGUF, either one of llama.cpp's own test vocabularies
# (models/ggml-vocab-*.gguf of the sdist scripts/llama-cpp.sh fetched) as it is, or such a
# vocabulary with another `tokenizer.ggml.pre` (tekken and gpt-4o on Llama 3's vocabulary,
# `default` with the key removed), then `scripts/llama-reference.py tokenize` on
# scripts/tokenizer-corpus.txt plus llama.cpp's test inputs for that vocabulary. Output in
# ${DLLM_CACHE:-~/.cache/distributed-llm}/fixtures/tokenizer-variants/: <name>.gguf,
# tokenizer-<name>.json and manifest.json ({name, gguf, pre, reference}), and eog.json: the
# ids llama_vocab_is_eog accepts, for these vocabularies, llama.cpp's llama-bpe, qwen2,
# phi-3 and llama-spm ones and every F16 fixture model of scripts/fixtures.sh (run it
# first). Cached: a stamp holds a hash of this script, llama-reference.py, the corpus and
# the fixture manifest.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${DLLM_CACHE:-$HOME/.cache/distributed-llm}
DIR=${FIXTURES_DIR:-$CACHE/fixtures}/tokenizer-variants
mkdir -p "$DIR"
log() { echo "[tokenizer-variants.sh] $*" >&2; }

FIXTURES=${FIXTURES_DIR:-$CACHE/fixtures}
HASH=$(cat scripts/tokenizer-variants.sh scripts/llama-reference.py scripts/tokenizer-corpus.txt \
    "$FIXTURES/manifest.json" 2>/dev/null | sha256sum | cut -c1-16)
if [[ $(cat "$DIR/.complete" 2>/dev/null) == "$HASH" ]]; then
    log "up to date ($DIR)"
    echo "$DIR"
    exit 0
fi
exec 9>"$DIR/.lock"
flock 9
if [[ $(cat "$DIR/.complete" 2>/dev/null) == "$HASH" ]]; then
    echo "$DIR"
    exit 0
fi

eval "$(scripts/llama-cpp.sh env 2>/dev/null)" || {
    echo "[tokenizer-variants.sh] scripts/llama-cpp.sh env failed" >&2
    exit 1
}
MODELS=$("$PY" -c 'import os, llama_cpp; print(os.path.join(os.path.dirname(os.path.dirname(llama_cpp.__file__)), "vendor", "llama.cpp", "models"))')
[[ -f $MODELS/ggml-vocab-llama-bpe.gguf ]] || {
    echo "[tokenizer-variants.sh] no llama.cpp vocabularies in $MODELS" >&2
    exit 1
}
t0=$(date +%s)
log "making references into $DIR ..."
DIR=$DIR MODELS=$MODELS FIXTURES=$FIXTURES "$PY" - <<'PYEOF'
import importlib.util, json, os, sys
from pathlib import Path
import gguf

DIR, MODELS = Path(os.environ["DIR"]), Path(os.environ["MODELS"])
spec = importlib.util.spec_from_file_location("ref", "scripts/llama-reference.py")
ref = importlib.util.module_from_spec(spec); sys.modules["ref"] = ref; spec.loader.exec_module(ref)

# name -> (llama.cpp vocabulary, tokenizer.ggml.pre to write: None = as it is, "" = remove)
VARIANTS = {
    "tekken": ("llama-bpe", "tekken"),
    "gpt-4o": ("llama-bpe", "gpt-4o"),
    "default": ("gpt-2", ""),
    "gpt-2": ("gpt-2", None),
    "mpt": ("mpt", None),
    "starcoder": ("starcoder", None),
    "refact": ("refact", None),
    "command-r": ("command-r", None),
    "falcon": ("falcon", None),
    "deepseek-llm": ("deepseek-llm", None),
    "deepseek-coder": ("deepseek-coder", None),
    "qwen35": ("qwen35", None),
}

def copy_with_pre(src: Path, dst: Path, pre):
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or (key == "tokenizer.ggml.pre"):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    if pre:
        w.add_string("tokenizer.ggml.pre", pre)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

corpus = [str(ref.DEFAULT_CORPUS)]
out = []
for name, (vocab, pre) in VARIANTS.items():
    src = MODELS / f"ggml-vocab-{vocab}.gguf"
    if pre is None:
        model = src
    else:
        model = DIR / f"{name}.gguf"
        copy_with_pre(src, model, pre)
    inp = MODELS / f"ggml-vocab-{vocab}.gguf.inp"
    reference = DIR / f"tokenizer-{name}.json"
    ref.write_json(ref.tokenizer_reference(str(model), corpus, [str(inp)] if inp.is_file() else []), str(reference))
    out.append({"name": name, "gguf": str(model), "pre": pre if pre is not None else "(as in the file)",
                "reference": reference.name})
    print(f"[tokenizer-variants.sh] {name}: {reference.name}", file=sys.stderr)
(DIR / "manifest.json").write_text(json.dumps({"variants": out}, indent=1) + "\n")

# end-of-generation sets
files = [Path(v["gguf"]) for v in out]
files += [MODELS / f"ggml-vocab-{n}.gguf" for n in ("llama-bpe", "qwen2", "phi-3", "llama-spm")]
files += sorted(Path(os.environ["FIXTURES"]).glob("*.F16.gguf"))
eog = {}
for f in files:
    llm = ref.load(str(f), vocab_only=True)
    vocab = llm._model.vocab
    eog[str(f)] = [i for i in range(ref.lc.llama_vocab_n_tokens(vocab)) if ref.lc.llama_vocab_is_eog(vocab, i)]
    del llm
(DIR / "eog.json").write_text(json.dumps(eog, indent=1) + "\n")
print(f"[tokenizer-variants.sh] eog.json: {len(eog)} vocabularies", file=sys.stderr)
PYEOF
echo "$HASH" >"$DIR/.complete"
log "done in $(($(date +%s) - t0)) s"
echo "$DIR"
