#!/usr/bin/env python3
"""Fixtures for the engine's dequantizer test (crates/engine/tests/dequantize.rs): random
blocks of every weight format the engine runs, with the values the `gguf` Python package
(`gguf.quants.dequantize`, PyPI `gguf`) gives for them. The engine's kernel tests compare
its SIMD kernels with its own `dequantize`; this holds that `dequantize` against an
implementation written apart from it, so that a mistake shared by both cannot hide.

  python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install gguf==0.19.0
  /tmp/gguf-venv/bin/python scripts/dequant-fixtures.py

Writes crates/engine/tests/fixtures/dequantize/<FORMAT>.bin, each:
  b"DQF1", u32 block bytes, u32 values per block, u32 blocks (little endian),
  the blocks as GGUF stores them, then the dequantized values as f32.
The bytes are random (seeded: the output is the same on every run) except the f16 scales,
which are set to finite values of either sign so that every value is finite.
"""
from __future__ import annotations

import argparse
import pathlib
import struct
import sys

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, quants

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/engine/tests/fixtures/dequantize"

# Format -> (blocks in the fixture, byte offsets of the f16 scales in a block).
FORMATS = {
    "Q4_0": (16, [0]),
    "Q4_1": (16, [0, 2]),
    "Q5_0": (16, [0]),
    "Q5_1": (16, [0, 2]),
    "Q8_0": (16, [0]),
    "IQ4_NL": (16, [0]),
    "Q2_K": (4, [80, 82]),
    "Q3_K": (4, [108]),
    "Q4_K": (4, [0, 2]),
    "Q5_K": (4, [0, 2]),
    "Q6_K": (4, [208]),
}
# Plain formats: the engine's "blocks" are 8 values.
PLAIN = {"F32": np.float32, "F16": np.float16, "BF16": None}
PLAIN_VALUES = 256


def quantized(name: str, rng: np.random.Generator) -> tuple[bytes, int, int, np.ndarray]:
    qtype = T[name]
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    n, scales = FORMATS[name]
    data = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
    for off in scales:
        mag = rng.uniform(1e-3, 0.1, size=n) * rng.choice([-1.0, 1.0], size=n)
        data[:, off : off + 2] = mag.astype(np.float16).view(np.uint8).reshape(n, 2)
    values = quants.dequantize(data.reshape(-1), qtype).astype(np.float32).reshape(-1)
    assert values.size == n * block_values and np.isfinite(values).all(), name
    return data.tobytes(), block_bytes, block_values, values


def plain(name: str, rng: np.random.Generator) -> tuple[bytes, int, int, np.ndarray]:
    x = rng.normal(0.0, 2.0, size=PLAIN_VALUES).astype(np.float32)
    if name == "BF16":
        raw = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is fine: any bits do
        data = raw.view(np.uint8)
        values = quants.dequantize(data, T.BF16)
        size = 2
    else:
        data = x.astype(PLAIN[name]).view(np.uint8)
        values = quants.dequantize(data, T[name])
        size = np.dtype(PLAIN[name]).itemsize
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    assert values.size == PLAIN_VALUES and np.isfinite(values).all(), name
    return data.tobytes(), 8 * size, 8, values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*FORMATS, *PLAIN]):
        rng = np.random.default_rng([args.seed, i])
        make = plain if name in PLAIN else quantized
        blocks, block_bytes, block_values, values = make(name, rng)
        n = len(blocks) // block_bytes
        body = b"DQF1" + struct.pack("<III", block_bytes, block_values, n)
        body += blocks + values.astype("<f4").tobytes()
        path = args.out / f"{name}.bin"
        path.write_bytes(body)
        print(f"{path.relative_to(ROOT)}: {n} blocks, {len(body)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
