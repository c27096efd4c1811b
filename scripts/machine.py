"""What a benchmark table must say about the machine it was measured on: the CPU model and
the SIMD features that decide kernel speed, and llama.cpp's own feature line
(`llama_print_system_info`, from the same native build the anchor runs), so that an anchor
built without its fast paths shows in the table (see docs/performance.md)."""
from __future__ import annotations

from pathlib import Path

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
         "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu() -> str:
    """`<model name>, <cores> cores, <features>` from /proc/cpuinfo."""
    model, flags, cores = "unknown CPU", set(), 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
                cores += 1
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = " ".join(f for f in FLAGS if f in flags) or "no AVX2"
    return f"{model}, {cores} cores, {have}"


def llama_system_info() -> str:
    """llama.cpp's system_info line of the anchor build (its Python binding over the built
    library: scripts/llama-cpp.sh env sets the paths)."""
    try:
        import llama_cpp  # noqa: PLC0415 (only with the anchor's environment)

        info = llama_cpp.llama_print_system_info()
        return (info.decode() if isinstance(info, bytes) else str(info)).strip()
    except Exception as e:  # noqa: BLE001 (the table says why it is missing)
        return f"unavailable ({type(e).__name__}: {e}); run under eval \"$(scripts/llama-cpp.sh env)\""


def describe() -> list[str]:
    return [f"CPU: {cpu()}", f"llama.cpp system_info: {llama_system_info()}"]


if __name__ == "__main__":
    print("\n".join(describe()))
