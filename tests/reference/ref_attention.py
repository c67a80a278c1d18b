"""scaled_dot_product_attention: softmax(q k^T * scale + mask) v written out in float64 (PyTorch 1.13 has no
F.scaled_dot_product_attention), from float32-drawn q, k, v.

A query row whose scores are all -inf gives zeros here, as fovea (and PyTorch >= 2.5's SDPA) define it;
PyTorch 1.13's softmax would give NaN for that row. Boolean masks are saved as float32 0/1 (npy reading is
float-only) with true = may attend.

Cases: no mask with Nq == Nk and batch > 1; cross attention with Nq != Nk, Dv != Dh and an explicit scale;
additive masks with -inf entries, one fully masked row, broadcast over heads; a boolean mask broadcast
over the batch with a fully masked row; a rank-2 (Nq, Nk) mask; a key-padding mask (B, 1, 1, Nk); large
scores (the max must be subtracted); a 700-key sequence that spans three key blocks (256 + 256 + 188), with
a key-padding mask.
"""
import math

import torch

from refutil import generator, randn, save

FAMILY = "attention"


def reference(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v in float64; mask additive (float) or boolean (True = attend)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, float("-inf"))
        else:
            s = s + mask
    s = s.expand(*q.shape[:-1], k.shape[-2])
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    p = torch.softmax(s, dim=-1).masked_fill(dead, 0.0)
    return p @ v


def qkv(g, b, h, nq, nk, dh, dv, scale=1.0):
    return randn(g, b, h, nq, dh, scale=scale), randn(g, b, h, nk, dh, scale=scale), randn(g, b, h, nk, dv)


def save_case(name, q, k, v, out, mask=None):
    save(FAMILY, f"{name}_q", q.float())
    save(FAMILY, f"{name}_k", k.float())
    save(FAMILY, f"{name}_v", v.float())
    if mask is not None:
        save(FAMILY, f"{name}_mask", mask.float())
    save(FAMILY, f"{name}_out", out)


def main():
    g = generator(700)

    q, k, v = qkv(g, 2, 3, 17, 17, 8, 8)
    save_case("self_b2", q, k, v, reference(q, k, v))

    q, k, v = qkv(g, 2, 2, 5, 13, 7, 9)
    save_case("cross_scale", q, k, v, reference(q, k, v, scale=0.3))

    # Additive (2, 1, 6, 11): about a third of the entries -inf, row 2 of batch 1 entirely -inf.
    q, k, v = qkv(g, 2, 3, 6, 11, 5, 4)
    mask = randn(g, 2, 1, 6, 11)
    mask = mask.masked_fill(torch.rand(2, 1, 6, 11, generator=g) < 0.35, float("-inf"))
    mask[1, 0, 2, :] = float("-inf")
    save_case("additive", q, k, v, reference(q, k, v, mask), mask)

    # Boolean (1, 3, 6, 11) broadcast over batch 2; head 1 row 4 may attend nothing.
    q, k, v = qkv(g, 2, 3, 6, 11, 5, 4)
    mask = torch.rand(1, 3, 6, 11, generator=g) > 0.4
    mask[0, 1, 4, :] = False
    save_case("boolean", q, k, v, reference(q, k, v, mask), mask)

    # Rank-2 additive (Nq, Nk), finite values only.
    q, k, v = qkv(g, 2, 2, 7, 9, 6, 6)
    mask = randn(g, 7, 9, scale=2.0)
    save_case("rank2", q, k, v, reference(q, k, v, mask), mask)

    # Key padding (B, 1, 1, Nk): batch 0 keeps 9 keys, batch 1 keeps 4.
    q, k, v = qkv(g, 2, 3, 5, 9, 4, 4)
    mask = torch.zeros(2, 1, 1, 9, dtype=torch.float64)
    mask[1, :, :, 4:] = float("-inf")
    save_case("key_padding", q, k, v, reference(q, k, v, mask), mask)

    # Scores around +-100: exp would overflow without subtracting the row maximum.
    q, k, v = qkv(g, 1, 2, 8, 8, 16, 8, scale=10.0)
    save_case("large_scores", q, k, v, reference(q, k, v))

    # 700 keys: three key blocks (256 + 256 + 188); the last 50 keys padded out.
    q, k, v = qkv(g, 1, 2, 70, 700, 8, 8)
    mask = torch.zeros(1, 1, 1, 700, dtype=torch.float64)
    mask[..., 650:] = float("-inf")
    save_case("three_blocks", q, k, v, reference(q, k, v, mask), mask)
