"""patch_embed: F.conv2d(images, weight, bias, stride=kernel).flatten(2).transpose(1, 2) in float64, from
float32-drawn images and weights; patchify as unfold; and the full encoder input sequence
cat(prefix tokens, patch tokens) + position embedding, as torchvision / timm / Hugging Face build it.

Cases: square patches on a non-square image with batch 2; image sizes that are not a multiple of the patch
(PyTorch's conv drops the remainder); no bias, batch 3; rectangular 2 x 3 patches; a ViT-like 16 x 16 patch
with 768 inputs per patch. Sequences: class token + one register token with position embeddings for all
tokens, and timm's no_embed_class layout (position embeddings for the patches only).
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "patch_embed"

# name: (images (N, C, H, W), weight (D, C, kh, kw), with bias)
CASES = {
    "p4_b2": ((2, 3, 12, 16), (5, 3, 4, 4), True),
    "p3_remainder": ((1, 2, 11, 10), (6, 2, 3, 3), True),
    "nobias_b3": ((3, 3, 8, 8), (7, 3, 4, 4), False),
    "rect_patch": ((2, 1, 7, 9), (4, 1, 2, 3), True),
    "vit_p16": ((1, 3, 32, 48), (24, 3, 16, 16), True),
}


def patchify(x, kh, kw):
    n, c = x.shape[:2]
    u = x.unfold(2, kh, kh).unfold(3, kw, kw)  # (N, C, gh, gw, kh, kw)
    gh, gw = u.shape[2:4]
    return u.permute(0, 2, 3, 1, 4, 5).reshape(n, gh * gw, c * kh * kw)


def main():
    for i, (name, (xs, ws, with_bias)) in enumerate(CASES.items()):
        g = generator(800 + i)
        x = randn(g, *xs)
        w = randn(g, *ws, scale=(ws[1] * ws[2] * ws[3]) ** -0.5)
        b = randn(g, ws[0], scale=0.5) if with_bias else None
        save(FAMILY, f"{name}_x", x.float())
        save(FAMILY, f"{name}_w", w.float())
        if with_bias:
            save(FAMILY, f"{name}_b", b.float())
        out = F.conv2d(x, w, b, stride=ws[2:]).flatten(2).transpose(1, 2)
        assert torch.allclose(out, F.linear(patchify(x, *ws[2:]), w.reshape(ws[0], -1), b))
        save(FAMILY, f"{name}_out", out)
        if name in ("p3_remainder", "rect_patch"):
            save(FAMILY, f"{name}_patches", patchify(x, *ws[2:]))

    # Sequences on the p4_b2 case (grid 3 x 4, D = 5).
    g = generator(850)
    x = randn(g, 2, 3, 12, 16)
    w = randn(g, 5, 3, 4, 4, scale=48 ** -0.5)
    b = randn(g, 5, scale=0.5)
    tokens = F.conv2d(x, w, b, stride=4).flatten(2).transpose(1, 2)
    prefix = randn(g, 2, 5)  # class token, one register token
    pos_all = randn(g, 2 + 12, 5)
    pos_patches = randn(g, 12, 5)
    for t, n in ((x, "x"), (w, "w"), (b, "b"), (prefix, "prefix"), (pos_all, "pos_all"), (pos_patches, "pos_patches")):
        save(FAMILY, f"seq_{n}", t.float())
    seq = torch.cat([prefix.expand(2, 2, 5), tokens], dim=1)
    save(FAMILY, "seq_out_pos_all", seq + pos_all)
    save(FAMILY, "seq_out_pos_patches", torch.cat([prefix.expand(2, 2, 5), tokens + pos_patches], dim=1))
    save(FAMILY, "seq_out_class_only", torch.cat([prefix[:1].expand(2, 1, 5), tokens], dim=1) + pos_all[1:])
