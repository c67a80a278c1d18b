"""linear: F.linear forward in float64 from float32 inputs, and autograd gradients for a given dout.

Cases cover rank 1, 2 and 3 inputs, B = 1 and 3, N = 1, 7 and 197, odd widths 13 -> 7 and ViT-like 64 -> 192.
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "linear"

# name: (input shape, out features, with no-bias output, with gradients)
CASES = {
    "r1": ((13,), 7, True, True),
    "r2_b3": ((3, 13), 7, False, True),
    "r2_vit_b3": ((3, 64), 192, False, False),
    "r3_b1_n1": ((1, 1, 13), 7, False, False),
    "r3_b3_n7": ((3, 7, 13), 7, True, True),
    "r3_b1_n197": ((1, 197, 13), 7, False, False),
    "vit_b3_n7": ((3, 7, 64), 192, True, True),
    "vit_b1_n197": ((1, 197, 64), 192, False, False),
}


def main():
    for i, (name, (shape, out_features, nobias, grads)) in enumerate(CASES.items()):
        g = generator(100 + i)
        in_features = shape[-1]
        x = randn(g, *shape)
        w = randn(g, out_features, in_features, scale=in_features ** -0.5)
        b = randn(g, out_features, scale=0.5)
        for t, n in ((x, "x"), (w, "w"), (b, "b")):
            save(FAMILY, f"{name}_{n}", t.float())
        save(FAMILY, f"{name}_out", F.linear(x, w, b))
        if nobias:
            save(FAMILY, f"{name}_out_nobias", F.linear(x, w))
        if grads:
            dout = randn(g, *shape[:-1], out_features)
            x.requires_grad_(True)
            w.requires_grad_(True)
            b.requires_grad_(True)
            F.linear(x, w, b).backward(dout)
            save(FAMILY, f"{name}_dout", dout.float())
            save(FAMILY, f"{name}_dx", x.grad)
            save(FAMILY, f"{name}_dw", w.grad)
            save(FAMILY, f"{name}_db", b.grad)
