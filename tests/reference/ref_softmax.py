"""softmax: F.softmax and F.log_softmax along every dim, in float64 from float32 inputs.

Cases: an odd rank-3 (3, 5, 7) and a rank-4 (2, 3, 4, 5) at scale 3; a rank-3 (2, 3, 9) of huge values
(scale 1e4, where exp without the max subtracted overflows); a rank-3 (2, 4, 6) at scale 30 with -inf
entries (attention masks), one row along the last dim entirely -inf (PyTorch gives NaN there).
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "softmax"

# name: (shape, scale)
CASES = {
    "r3": ((3, 5, 7), 3.0),
    "r4": ((2, 3, 4, 5), 3.0),
    "r3_huge": ((2, 3, 9), 1e4),
    "r3_masked": ((2, 4, 6), 30.0),
}


def main():
    for i, (name, (shape, scale)) in enumerate(CASES.items()):
        g = generator(400 + i)
        x = randn(g, *shape, scale=scale)
        if name == "r3_masked":
            x[torch.rand(*shape, generator=g) < 0.2] = float("-inf")
            x[1, 2, :] = float("-inf")
        save(FAMILY, f"{name}_x", x.float())
        for dim in range(len(shape)):
            save(FAMILY, f"{name}_softmax_d{dim}", F.softmax(x, dim))
            save(FAMILY, f"{name}_log_softmax_d{dim}", F.log_softmax(x, dim))
