"""batch_norm (inference, running statistics) and layer_norm: float64 outputs from float32 inputs, with
torch.native_layer_norm's mean and rstd and autograd gradients for layer_norm.
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "norm"

# name: (input shape, eps, input offset, running-mean offset)
BATCH_NORM = {
    "bn_4d": ((2, 5, 7, 9), 1e-5, 0.0, 0.0),
    "bn_4d_b1": ((1, 3, 4, 6), 1e-3, 0.0, 0.0),
    "bn_3d": ((3, 4, 11), 1e-5, 0.0, 0.0),
    "bn_2d": ((3, 16), 1e-5, 0.0, 0.0),
    # Activations and running mean near 100, spread ~1: the centred formula keeps float exact here.
    "bn_offset": ((2, 4, 5, 5), 1e-5, 100.0, 100.0),
}

# name: (input shape, eps, offset, with gradients)
LAYER_NORM = {
    "ln_r1": ((13,), 1e-5, 0.0, True),
    "ln_b1_n1": ((1, 1, 13), 1e-5, 0.0, False),
    "ln_b3_n7": ((3, 7, 13), 1e-5, 0.0, True),
    "ln_b1_n197": ((1, 197, 64), 1e-6, 0.0, False),
    "ln_r2_768": ((4, 768), 1e-6, 0.0, True),
    # x + 1000 with unit spread: E[x^2] - E[x]^2 in float would lose every digit of the variance.
    "ln_offset_b3_n7": ((3, 7, 64), 1e-6, 1000.0, True),
    "ln_offset_b1_n197": ((1, 197, 64), 1e-5, 1000.0, False),
}


def batch_norm_cases():
    for i, (name, (shape, eps, x_off, m_off)) in enumerate(BATCH_NORM.items()):
        g = generator(200 + i)
        c = shape[1]
        x = (randn(g, *shape) * 1.5 + x_off).float().double()
        mean = (randn(g, c) + m_off).float().double()
        var = (torch.rand(c, generator=g, dtype=torch.float32) * 3 + 0.2).double()
        w = randn(g, c)
        b = randn(g, c)
        for t, n in ((x, "x"), (mean, "mean"), (var, "var"), (w, "w"), (b, "b")):
            save(FAMILY, f"{name}_{n}", t.float())
        save(FAMILY, f"{name}_out", F.batch_norm(x, mean, var, w, b, training=False, eps=eps))


def layer_norm_cases():
    for i, (name, (shape, eps, off, grads)) in enumerate(LAYER_NORM.items()):
        g = generator(300 + i)
        d = shape[-1]
        x = (randn(g, *shape) * 0.8 + off).float().double()
        w = (1 + randn(g, d, scale=0.2)).float().double()
        b = randn(g, d, scale=0.2)
        for t, n in ((x, "x"), (w, "w"), (b, "b")):
            save(FAMILY, f"{name}_{n}", t.float())
        out, mean, rstd = torch.native_layer_norm(x, [d], w, b, eps)
        assert torch.allclose(out, F.layer_norm(x, (d,), w, b, eps))
        save(FAMILY, f"{name}_out", out)
        if grads:
            save(FAMILY, f"{name}_mean", mean.reshape(-1))
            save(FAMILY, f"{name}_rstd", rstd.reshape(-1))
            dout = randn(g, *shape)
            x.requires_grad_(True)
            w.requires_grad_(True)
            b.requires_grad_(True)
            F.layer_norm(x, (d,), w, b, eps).backward(dout)
            save(FAMILY, f"{name}_dout", dout.float())
            save(FAMILY, f"{name}_dx", x.grad)
            save(FAMILY, f"{name}_dw", w.grad)
            save(FAMILY, f"{name}_db", b.grad)


def main():
    batch_norm_cases()
    layer_norm_cases()
