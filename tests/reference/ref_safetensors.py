"""safetensors files laid out byte for byte as the reference writer (huggingface/safetensors) lays them out,
from PyTorch tensors in F64, F32, F16 and BF16, with the float64 value of every stored element as .npy.

The safetensors package is not installed here, so the layout is written by hand, following the reference
writer: tensors sorted by dtype, largest alignment first (its Dtype enum order, descending), then by name;
data packed in that order; header JSON with no spaces, "__metadata__" first, then each tensor as
{"dtype", "shape", "data_offsets"}; the header padded with spaces to a multiple of 8 bytes.
"""
import json
import os
import struct

import numpy as np
import torch

from refutil import family_dir, generator, save

FAMILY = "safetensors"

# The reference's Dtype enum, in order; the writer sorts by it, descending.
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
               "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
TORCH_DTYPE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64"}


def raw_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the 16 bits
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # little-endian host


def write_safetensors(path, tensors, metadata=None):
    items = sorted(tensors.items(), key=lambda kv: (-DTYPE_ORDER.index(TORCH_DTYPE[kv[1].dtype]), kv[0]))
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, t in items:
        b = raw_bytes(t)
        header[name] = {"dtype": TORCH_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    # serde_json writes UTF-8 as is and no spaces.
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(family_dir(FAMILY), path), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    g = generator(2024)
    inf, nan = float("inf"), float("nan")
    # F16: zeros of both signs, infinities, NaN, the extremes, the smallest and largest subnormals, a few
    # subnormals in between, the smallest normal, then random values over a wide range.
    f16_special = [0.0, -0.0, inf, -inf, nan, 65504.0, -65504.0, 2.0 ** -24, -(2.0 ** -24), 1023 * 2.0 ** -24,
                   3 * 2.0 ** -24, 517 * 2.0 ** -24, 2.0 ** -14, -(2.0 ** -14), 1.0, -2.5, 1 / 3]
    f16 = torch.cat([torch.tensor(f16_special, dtype=torch.float64),
                     torch.randn(36 - len(f16_special), generator=g, dtype=torch.float64) * 100]).half().reshape(4, 9)
    # BF16: the same kinds of values at float32's range (its subnormals reach 2^-133).
    bf16_special = [0.0, -0.0, inf, -inf, nan, 3.3895313892515355e38, -3.3895313892515355e38, 2.0 ** -133,
                    -(2.0 ** -133), 127 * 2.0 ** -133, 2.0 ** -126, 1.0, -2.5, 1 / 3, 1e30, -1e-30]
    bf16 = torch.cat([torch.tensor(bf16_special, dtype=torch.float64),
                      torch.randn(45 - len(bf16_special), generator=g, dtype=torch.float64) * 1e3]
                     ).bfloat16().reshape(3, 5, 3)
    f32 = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float32)  # batch 2, odd sizes
    f32[0, 0, 0, :3] = torch.tensor([-0.0, 1e-40, -3.4e38])  # a float32 subnormal survives untouched
    # F64 values that float rounds: random doubles, one past float's range, one below its subnormals, and
    # one exactly halfway between two floats (ties to even).
    f64 = torch.randn(3, 1, 7, generator=g, dtype=torch.float64)
    f64.view(-1)[:4] = torch.tensor([1e300, -1e-300, 1.0 + 2.0 ** -24, -0.0], dtype=torch.float64)
    scalar = torch.tensor(2.75, dtype=torch.float32)
    empty = torch.zeros(0, 3, dtype=torch.float32)
    ids = torch.tensor([0, -1, 2 ** 40, 7, 3], dtype=torch.int64)
    utf8 = torch.tensor([1.5, -2.0], dtype=torch.float32)
    write_safetensors("dtypes.safetensors", {"f16": f16, "bf16": bf16, "blocks.0.f32": f32, "f64": f64,
                                             "scalar": scalar, "empty": empty, "ids": ids, "blöck.ü": utf8})
    for name, t in [("f16", f16), ("bf16", bf16), ("f32", f32), ("f64", f64), ("scalar", scalar), ("empty", empty),
                    ("utf8", utf8)]:
        save(FAMILY, "dtypes_" + name, t.double())

    # Metadata, as transformers writes it, plus a value with characters JSON must escape.
    w = torch.randn(3, 4, generator=g, dtype=torch.float32)
    write_safetensors("meta.safetensors", {"w": w}, {"format": "pt", "note": 'ünïcode "quoted"\n\ttab'})
    save(FAMILY, "meta_w", w.double())

    # F32 and F64 only, for the C++ writer to reproduce byte for byte from the same values.
    a = torch.randn(2, 5, generator=g, dtype=torch.float32)
    b = torch.randn(3, generator=g, dtype=torch.float32)
    z = torch.randn(3, 1, generator=g, dtype=torch.float64)
    c = torch.tensor(-1.25, dtype=torch.float64)
    write_safetensors("writer.safetensors", {"b": b, "a": a, "z": z, "c": c}, {"format": "pt"})
    save(FAMILY, "writer_a", a)
    save(FAMILY, "writer_b", b)
    save(FAMILY, "writer_z", z)
    save(FAMILY, "writer_c", c.reshape(1))
