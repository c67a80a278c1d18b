"""interpolate: F.interpolate(x, size=..., mode="bicubic" | "bilinear", align_corners=...) in float64 from
float32-drawn inputs; interpolate_pos_embed as Hugging Face's interpolate_pos_encoding does it (the patch
rows viewed as (1, D, gh, gw), resized, viewed back; prefix rows kept apart).

Cases: non-square up- and down-sampling, batch 2, both modes and both align_corners; one side unchanged
while the other changes; a size of 1 (align_corners scale 0); the identity size. Position embeddings:
class token + a 4 x 6 grid to 7 x 5 (bicubic and bilinear), no prefix 5 x 5 -> 3 x 3, and two prefix
tokens 14 x 14 -> 16 x 16 (ViT-B/16 at 224 -> 256).
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "interpolate"

# name: (input shape, output size)
CASES = {
    "up": ((2, 3, 5, 7), (9, 12)),
    "down": ((2, 2, 13, 11), (6, 4)),
    "mixed": ((1, 2, 6, 6), (6, 10)),
    "to_one": ((1, 2, 4, 5), (1, 3)),
    "same": ((1, 1, 4, 3), (4, 3)),
}

# name: (num_prefix, D, old grid, new grid, mode)
POS = {
    "pos_cls_bicubic": (1, 8, (4, 6), (7, 5), "bicubic"),
    "pos_cls_bilinear": (1, 8, (4, 6), (7, 5), "bilinear"),
    "pos_noprefix_down": (0, 6, (5, 5), (3, 3), "bicubic"),
    "pos_reg_vit": (2, 4, (14, 14), (16, 16), "bicubic"),
}


def resize_pos(pos, prefix, old, new, mode):
    d = pos.shape[1]
    grid = pos[prefix:].reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode=mode, align_corners=False)
    return torch.cat([pos[:prefix], grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], d)], dim=0)


def main():
    g = generator(900)
    for name, (shape, size) in CASES.items():
        x = randn(g, *shape)
        save(FAMILY, f"{name}_x", x.float())
        for mode in ("bicubic", "bilinear"):
            for ac in (False, True):
                out = F.interpolate(x, size=size, mode=mode, align_corners=ac)
                save(FAMILY, f"{name}_{mode}_{'ac' if ac else 'noac'}", out)
    for name, (prefix, d, old, new, mode) in POS.items():
        pos = randn(g, prefix + old[0] * old[1], d)
        save(FAMILY, f"{name}_pos", pos.float())
        save(FAMILY, f"{name}_out", resize_pos(pos, prefix, old, new, mode))
