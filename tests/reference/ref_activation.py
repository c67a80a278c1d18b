"""activation: relu, gelu (erf and tanh forms), quick_gelu, silu, sigmoid in float64 from float32 inputs.

Inputs cover odd shapes with batch > 1 at several scales, and a 1-D sweep with zeros, tiny values, the
tails where the gates underflow (|x| up to 30, 1e3, 1e4) and a dense grid over [-16, 10] where the
erf/sigmoid tails are steepest. Both gelu forms are saved from 40-digit mpmath (see gelu_erf below):
F.gelu's float64 formula rounds to 0 in the tail long before the true value does. Non-finite inputs are
tested in C++ (PyTorch returns NaN for gelu(-inf); fovea returns the limit, -0).

    /usr/bin/python3 tests/reference/ref_activation.py fit

prints the coefficients of detail::ErfcxPoly in include/fovea/ops/activation.hpp: see fit().
"""
import sys

import mpmath as mp
import numpy as np
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "activation"

# name: (shape, scale); every case is drawn from its own seed.
CASES = {
    "r3_b3": ((3, 5, 7), 3.0),
    "r4_b2": ((2, 3, 9, 11), 1.0),
    "r2_wide": ((4, 129), 30.0),
    "r3_huge": ((2, 3, 17), 1e3),
}


def gelu_erf(x):
    # 0.5 x (1 + erf(x / sqrt 2)) as 0.5 x erfc(-x / sqrt 2) in 40-digit arithmetic: in float64 1 + erf
    # cancels to 0 below x ~ -8.3, and even float64 erfc is off by 2 z^2 eps relative (1e-13 at x = -30)
    # from rounding z = x / sqrt 2, more than the double test allows. main() checks it against F.gelu.
    return exact(lambda v: v / 2 * mp.erfc(-v / mp.sqrt(2)), x)


def gelu_tanh(x):
    # F.gelu(approximate="tanh")'s 0.5 x (1 + tanh(u)) as x / (1 + exp(-2u)) (1 + tanh(u) = 2 sigmoid(2u)),
    # 40 digits, for the same reasons.
    return exact(lambda v: v / (1 + mp.exp(-2 * mp.sqrt(2 / mp.pi) * (v + mp.mpf("0.044715") * v ** 3))), x)


def exact(f, x):
    with mp.workdps(40):
        return torch.tensor([float(f(mp.mpf(v))) for v in x.flatten().tolist()], dtype=torch.float64).reshape(x.shape)


OPS = {
    "relu": torch.relu,
    "gelu": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # CLIP's QuickGELU
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
}
# The exact forms are PyTorch's functions: main() checks that they agree with F.gelu up to the float64
# rounding of F.gelu's own formula (absolute, ~eps |x|).
PYTORCH_FORMS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


def sweep():
    fixed = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-3, -1e-3, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 5.0, -5.0,
             30.0, -30.0, 87.0, -87.0, 100.0, -100.0, 1e3, -1e3, 1e4, -1e4, 3e38, -3e38]
    grid = np.linspace(-16.0, 10.0, 1041)
    return torch.tensor(np.concatenate([fixed, grid]), dtype=torch.float32).double()


def main():
    inputs = {"sweep": sweep()}
    for i, (name, (shape, scale)) in enumerate(CASES.items()):
        inputs[name] = randn(generator(300 + i), *shape, scale=scale)
    for name, x in inputs.items():
        save(FAMILY, f"{name}_x", x.float())
        finite = x.abs() < 1e30  # F.gelu's tanh form overflows x^3 beyond
        for op, f in OPS.items():
            y = f(x)
            if op in PYTORCH_FORMS:
                ref = PYTORCH_FORMS[op](x)
                err = ((y - ref).abs() / (x.abs() + 1))[finite].max().item()
                assert err < 1e-15, (name, op, err)
            save(FAMILY, f"{name}_{op}", y)


# ---- coefficients for detail::ErfcxPoly ----------------------------------------------------------------
# g(t) = (1 + 2z) * exp(z^2) * erfc(z) with z = K (1 + t) / (1 - t) maps z in [0, inf) to t in [-1, 1); g is
# smooth there (g(1) = 2 / sqrt(pi)), so a single polynomial in t covers every z without branches.
# Interpolated at Chebyshev nodes in 40-digit arithmetic, then expanded into monomials for Horner.
# K = 3: degree 12 truncates at 3e-9 (float), degree 24 at 2e-17 (double).
K = 3


def fit(degree):
    mp.mp.dps = 40
    k = mp.mpf(K)

    def g(t):
        if t == 1:
            return 2 / mp.sqrt(mp.pi)
        z = k * (1 + t) / (1 - t)
        return (1 + 2 * z) * mp.exp(z * z) * mp.erfc(z)

    m = degree + 1
    nodes = [mp.cos(mp.pi * (j + mp.mpf(1) / 2) / m) for j in range(m)]
    vals = [g(t) for t in nodes]
    cheb = [2 * sum(v * mp.cos(mp.pi * i * (j + mp.mpf(1) / 2) / m) for j, v in enumerate(vals)) / m
            for i in range(m)]
    cheb[0] /= 2
    # Chebyshev T_i as monomials, by T_{i+1} = 2 t T_i - T_{i-1}.
    basis = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]
    while len(basis) < m:
        nxt = [mp.mpf(0)] * (len(basis) + 1)
        for i, v in enumerate(basis[-1]):
            nxt[i + 1] += 2 * v
        for i, v in enumerate(basis[-2]):
            nxt[i] -= v
        basis.append(nxt)
    mono = [mp.mpf(0)] * m
    for c, b in zip(cheb, basis):
        for i, v in enumerate(b):
            mono[i] += c * v
    return mono


if __name__ == "__main__" and sys.argv[1:] == ["fit"]:
    for degree, kind in ((12, "float"), (24, "double")):
        coeffs = fit(degree)
        print(f"// {kind}, degree {degree}, highest power first")
        if kind == "float":
            print(",\n".join(f"{np.float32(float(c))!r}f".replace("np.float32(", "").replace(")", "")
                             for c in reversed(coeffs)))
        else:
            print(",\n".join(repr(float(c)) for c in reversed(coeffs)))
