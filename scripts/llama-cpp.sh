#!/usr/bin/env bash
# The llama.cpp "anchor": the reference implementation the engine is measured against.
#
# Builds llama.cpp natively (-march=native, Release, shared libraries, RPC on, no curl) from
# the source vendored in the llama-cpp-python 0.3.36 sdist (llama.cpp commit 0c1e570, the
# one scripts/fixtures.sh makes the default model's reference with), and a Python venv whose
# `llama_cpp` package (the sdist's own, via PYTHONPATH) loads *our* libllama.so (via
# LLAMA_CPP_LIB_PATH). Nothing comes from a model hub; only PyPI and Debian apt are used.
#
# Usage:
#   scripts/llama-cpp.sh [build]   full build: libllama + llama-bench llama-server
#                                  ggml-rpc-server llama-quantize, and the venv
#   scripts/llama-cpp.sh minimal   libllama + llama-quantize only, and the venv (CI)
#   scripts/llama-cpp.sh lib       libllama only, and the venv: all that the Python scripts
#                                  (make-gguf.py, llama-reference.py, fixtures.sh) need
#   scripts/llama-cpp.sh venv      the venv only
#   scripts/llama-cpp.sh env       print `export` lines (builds `minimal` first if needed):
#                                  eval "$(scripts/llama-cpp.sh env)"
#   scripts/llama-cpp.sh check     import llama_cpp from the venv and show it uses our lib
#
# Env:
#   DLLM_CACHE        cache root (default ~/.cache/distributed-llm); everything lives outside
#                     the repository: $DLLM_CACHE/llama.cpp/0.3.36/ and $DLLM_CACHE/venv
#   LLAMA_CPP_MINIMAL=1  same as the `minimal` subcommand for `build` and `env`
#   LLAMA_CPP_JOBS    parallel compile jobs (default: number of cores)
#   PYTHON            interpreter the venv is made from (default python3, >= 3.9)
#
# Idempotent: each part leaves a stamp (recording the version, the flags and this CPU's
# -march=native feature set, since a native build must not be reused on another CPU), so
# a second run returns at once. All progress goes to stderr; `env` prints only the exports.
set -euo pipefail

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# Python packages of the venv. gguf 0.19.0 is the gguf-py vendored in this llama.cpp
# (vendor/llama.cpp/gguf-py/pyproject.toml), so it writes exactly the format it reads.
# numpy, typing_extensions, diskcache, jinja2: the llama_cpp package's own dependencies.
PY_REQUIREMENTS=(
    "gguf==0.19.0"
    "numpy==2.3.5"
    "sentencepiece==0.2.1"
    "typing_extensions==4.16.0"
    "diskcache==5.6.3"
    "jinja2==3.1.6"
)

CACHE=${DLLM_CACHE:-$HOME/.cache/distributed-llm}
ROOT=$CACHE/llama.cpp/$VERSION
SDIST_TGZ=$ROOT/llama_cpp_python-$VERSION.tar.gz
SRC=$ROOT/src/llama_cpp_python-$VERSION # the sdist, extracted; llama_cpp/ is the Python package
LLAMA_SRC=$SRC/vendor/llama.cpp
BUILD=$ROOT/build
BIN=$BUILD/bin # tools and shared libraries (llama.cpp puts both in bin/)
VENV=$CACHE/venv
JOBS=${LLAMA_CPP_JOBS:-$(nproc)}

CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=ON
    -DBUILD_SHARED_LIBS=ON
    -DLLAMA_CURL=OFF
    -DGGML_RPC=ON
    # offline and lean: no web UI download at build time, no OpenSSL, no tests/examples
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
)
# AMX: some virtual machines advertise AMX in CPUID but fault on its instructions (seen on
# a Firecracker VM: ggml's AMX matmul dies on ldtilecfg with SIGSEGV). When -march=native
# enables AMX here, a tiny program requests the tile permission and runs a tile instruction;
# if it fails, the build keeps -march=native minus AMX (explicit -mno-* wins over -march).
amx_probe() { # prints "ok", "broken" or "absent"
    local target
    target=$(c++ -march=native -Q --help=target 2>/dev/null || true) # (no grep -q: pipefail)
    grep -qE '^\s+-mamx-tile\s+\[enabled\]' <<<"$target" || {
        echo absent
        return
    }
    local d
    d=$(mktemp -d)
    cat >"$d/amx.c" <<'C'
#include <immintrin.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    unsigned char cfg[64];
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 2;
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1; cfg[16] = 64; cfg[48] = 16; /* palette 1; tile 0: 16 rows of 64 bytes */
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
C
    if cc -O1 -march=native "$d/amx.c" -o "$d/amx" 2>/dev/null && "$d/amx" 2>/dev/null; then
        echo ok
    else
        echo broken
    fi
    rm -rf "$d"
}
if [[ $(amx_probe) == broken ]]; then
    CMAKE_FLAGS+=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
    AMX_NOTE=" (AMX off: this CPU advertises it but its instructions fault here)"
else
    AMX_NOTE=""
fi
LIB_TARGETS=(llama)
MINIMAL_TARGETS=(llama llama-quantize)
FULL_TARGETS=(llama llama-quantize llama-bench llama-server ggml-rpc-server)

log() { echo "[llama-cpp.sh] $*" >&2; }
die() {
    echo "[llama-cpp.sh] error: $*" >&2
    exit 1
}

apt_install() { # installs the missing Debian packages among "$@" (sudo only when not root)
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed: install them by hand and re-run"
}

# Identity of a build: version, flags, compiler and what -march=native means on this CPU.
build_key() {
    {
        echo "$VERSION $SDIST_SHA256"
        echo "${CMAKE_FLAGS[*]}"
        c++ --version 2>/dev/null | head -1
        # the features -march=native enables here (a copied cache on another CPU rebuilds)
        c++ -march=native -Q --help=target 2>/dev/null | grep -E '^\s+-m(arch|[a-z0-9]+)\b.*\[enabled\]|^\s+-march=' || true
    } | sha256sum | cut -c1-16
}

elapsed() { echo "$(($(date +%s) - $1)) s"; }

fetch_sdist() {
    [[ -f $SRC/.extracted ]] && return 0
    mkdir -p "$ROOT"
    if [[ ! -f $SDIST_TGZ ]] || ! echo "$SDIST_SHA256  $SDIST_TGZ" | sha256sum -c --quiet - 2>/dev/null; then
        local t0=$(date +%s)
        log "downloading the llama-cpp-python $VERSION sdist from PyPI (76 MB) ..."
        local tmp
        tmp=$(mktemp -d "$ROOT/dl.XXXXXX")
        ensure_venv
        "$VENV/bin/python" -m pip download -q --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -d "$tmp" >&2 ||
            die "pip download llama-cpp-python==$VERSION failed: is PyPI reachable (pip config, proxy)?"
        mv "$tmp/llama_cpp_python-$VERSION.tar.gz" "$SDIST_TGZ"
        rm -rf "$tmp"
        echo "$SDIST_SHA256  $SDIST_TGZ" | sha256sum -c --quiet - ||
            die "$SDIST_TGZ: sha256 differs from the pinned $SDIST_SHA256 (delete it and re-run)"
        log "downloaded in $(elapsed "$t0")"
    fi
    log "extracting the sdist into $ROOT/src ..."
    rm -rf "$SRC"
    mkdir -p "$ROOT/src"
    tar -xzf "$SDIST_TGZ" -C "$ROOT/src"
    [[ -f $LLAMA_SRC/CMakeLists.txt ]] || die "$LLAMA_SRC/CMakeLists.txt missing after extraction"
    touch "$SRC/.extracted"
}

python_for_pip() { # the interpreter the venv is made from
    "${PYTHON:-python3}" "$@"
}

# Builds the given cmake targets (skipped when the stamp for this set and build key exists).
build_targets() { # stamp-name targets...
    local name=$1
    shift
    command -v c++ >/dev/null || apt_install g++
    command -v cmake >/dev/null || apt_install cmake
    local key stamp
    key=$(build_key)
    stamp=$ROOT/.stamp-$name
    # lib is part of minimal, minimal part of full: a bigger current build satisfies a smaller one
    local s
    for s in full minimal lib; do
        if [[ $(cat "$ROOT/.stamp-$s" 2>/dev/null) == "$key" ]]; then
            log "llama.cpp $name build up to date ($s build in $BIN)"
            return 0
        fi
        [[ $s == "$name" ]] && break
    done
    fetch_sdist
    local t0=$(date +%s)
    if [[ ! -f $BUILD/CMakeCache.txt || $(cat "$ROOT/.configured" 2>/dev/null) != "$key" ]]; then
        log "configuring llama.cpp${AMX_NOTE} (cmake ${CMAKE_FLAGS[*]}) ..."
        rm -rf "$BUILD"
        cmake -S "$LLAMA_SRC" -B "$BUILD" "${CMAKE_FLAGS[@]}" >"$ROOT/cmake-configure.log" 2>&1 ||
            die "cmake configure failed: see $ROOT/cmake-configure.log"
        echo "$key" >"$ROOT/.configured"
        log "configured in $(elapsed "$t0")"
    fi
    # One target at a time so that the time of each part is known (CI cost).
    local t
    for t in "$@"; do
        local t1=$(date +%s)
        log "building $t with $JOBS jobs (log: $ROOT/build-$t.log) ..."
        cmake --build "$BUILD" --target "$t" -j "$JOBS" >"$ROOT/build-$t.log" 2>&1 ||
            die "building $t failed: see $ROOT/build-$t.log (tail: $(tail -3 "$ROOT/build-$t.log" | tr '\n' ' '))"
        log "built $t in $(elapsed "$t1")"
    done
    [[ -f $BIN/libllama.so ]] || die "$BIN/libllama.so missing after the build"
    echo "$key" >"$stamp"
    log "llama.cpp $name build done in $(elapsed "$t0"): $BIN"
}

ensure_venv() {
    local key stamp=$VENV/.stamp
    key=$(printf '%s\n' "${PY_REQUIREMENTS[@]}" | sha256sum | cut -c1-16)
    if [[ -f $stamp && $(cat "$stamp") == "$key" && -x $VENV/bin/python ]]; then
        log "venv up to date ($VENV)"
        return 0
    fi
    local t0=$(date +%s)
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating the venv $VENV ..."
        python_for_pip -m venv "$VENV" 2>/dev/null || {
            apt_install python3-venv
            python_for_pip -m venv "$VENV"
        } || die "python3 -m venv failed: install python3-venv (Debian) or set PYTHON=/path/to/python3"
    fi
    log "installing ${PY_REQUIREMENTS[*]} into the venv ..."
    "$VENV/bin/python" -m pip install -q "${PY_REQUIREMENTS[@]}" >&2 ||
        die "pip install into $VENV failed: is PyPI reachable? (delete $VENV to start over)"
    echo "$key" >"$stamp"
    log "venv ready in $(elapsed "$t0")"
}

# The exports every other script uses.
print_env() {
    echo "export LLAMA_CPP_BIN=$BIN"
    echo "export LLAMA_CPP_LIB_PATH=$BIN"
    echo "export PYTHONPATH=$SRC\${PYTHONPATH:+:\$PYTHONPATH}"
    echo "export PY=$VENV/bin/python"
}

# Loads llama_cpp from the venv the way the other scripts do and proves which lib it used.
check() {
    eval "$(print_env)"
    "$PY" - <<'EOF'
import os, llama_cpp
info = llama_cpp.llama_print_system_info().decode()
lib = llama_cpp.llama_cpp._lib._name
maps = open("/proc/self/maps").read()
want = os.path.realpath(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libllama.so"))
loaded = sorted({l.split()[-1] for l in maps.splitlines() if "libllama" in l or "libggml" in l})
print("llama_cpp", llama_cpp.__version__, "from", os.path.dirname(llama_cpp.__file__))
print("libllama:", lib)
print("mapped:", *loaded, sep="\n  ")
print("system info:", info)
assert any(os.path.realpath(p) == want for p in loaded), f"{want} is not the loaded libllama"
assert "AVX2 = 1" in info, "AVX2 is off in this build"
print("ok: our native libllama is loaded and has AVX2")
EOF
}

cmd=${1:-build}
[[ ${LLAMA_CPP_MINIMAL:-0} == 1 && $cmd == build ]] && cmd=minimal
case $cmd in
build)
    build_targets full "${FULL_TARGETS[@]}"
    ensure_venv
    log "done; use: eval \"\$(scripts/llama-cpp.sh env)\""
    ;;
minimal)
    build_targets minimal "${MINIMAL_TARGETS[@]}"
    ensure_venv
    ;;
lib)
    build_targets lib "${LIB_TARGETS[@]}"
    ensure_venv
    ;;
venv) ensure_venv ;;
env)
    # any current build with libllama is enough for the exports; else build the minimal one
    key=$(build_key)
    if [[ $(cat "$ROOT/.stamp-full" 2>/dev/null) != "$key" && $(cat "$ROOT/.stamp-minimal" 2>/dev/null) != "$key" &&
        $(cat "$ROOT/.stamp-lib" 2>/dev/null) != "$key" ]]; then
        build_targets minimal "${MINIMAL_TARGETS[@]}"
    fi
    ensure_venv
    print_env
    ;;
check)
    [[ -f $BIN/libllama.so ]] || die "no build yet: run scripts/llama-cpp.sh build (or minimal) first"
    ensure_venv
    check
    ;;
-h | --help | help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$cmd' (build, minimal, lib, venv, env, check, help)" ;;
esac
