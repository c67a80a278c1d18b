"""max_pool2d, avg_pool2d and adaptive_avg_pool2d references (tests/ops/test_pooling.cpp).

Each case saves <name>_x (float32 input) and <name>_y (float64 output of torch.nn.functional on the same
values). The C++ test lists the same cases with the same arguments; a mismatch fails there on shape or value.
"""
import torch
import torch.nn.functional as F

import refutil

FAMILY = "pooling"

# name: (input shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "max_resnet": ((1, 2, 112, 112), 3, 2, 1, 1, False),          # ResNet stem
    "max_odd_floor": ((2, 3, 13, 11), 3, 2, 1, 1, False),
    "max_odd_ceil": ((2, 3, 13, 11), 3, 2, 0, 1, True),           # ceil adds a partial last window
    "max_ceil_drop": ((2, 2, 5, 8), (2, 3), (3, 2), (1, 1), 1, True),  # ceil's last window dropped (H)
    "max_asym": ((3, 2, 9, 10), (3, 2), (1, 3), (1, 0), 1, False),
    "max_default_stride": ((2, 2, 9, 7), (2, 3), None, 0, 1, False),
    "max_dilated": ((2, 2, 15, 12), 3, 2, 1, 2, False),
    "max_dilated_asym_ceil": ((1, 3, 11, 14), (2, 3), 1, (1, 1), (2, 3), True),
    "max_dilated_ceil": ((2, 1, 10, 9), 3, 3, 1, (3, 2), True),
    "max_kernel_past_input": ((2, 2, 2, 3), 3, 2, 0, 1, True),    # ceil keeps one window wider than H
    "max_dilated_all_padding": ((2, 2, 12, 2), (4, 2), 1, 1, (2, 3), False),  # W taps -1 and 2: -inf out
}

# name: (input shape, kernel, stride, padding, ceil_mode, count_include_pad)
AVG_CASES = {
    "avg_2x2": ((2, 3, 8, 8), 2, None, 0, False, True),
    "avg_odd_floor_pad": ((2, 3, 12, 11), 3, 2, 1, False, True),
    "avg_odd_floor_nopad": ((2, 3, 12, 11), 3, 2, 1, False, False),
    "avg_ceil_pad": ((2, 3, 12, 11), 3, 2, 1, True, True),        # last row window clipped to H + pad
    "avg_ceil_nopad": ((2, 3, 12, 11), 3, 2, 1, True, False),
    "avg_asym_ceil_pad": ((3, 2, 9, 7), (3, 2), (2, 1), (1, 1), True, True),
    "avg_asym_ceil_nopad": ((3, 2, 9, 7), (3, 2), (2, 1), (1, 1), True, False),
    "avg_big_window_ceil": ((1, 2, 11, 9), (5, 4), 3, 2, True, True),
    "avg_big_window_ceil_nopad": ((1, 2, 11, 9), (5, 4), 3, 2, True, False),
    "avg_stride1": ((2, 2, 7, 6), 3, 1, 1, False, True),
    "avg_kernel_past_input": ((2, 2, 2, 3), 3, 2, 0, True, True),  # divisor: window clipped to H + pad
}

# name: (input shape, output size)
ADAPTIVE_CASES = {
    "adaptive_1x1": ((2, 3, 7, 7), (1, 1)),
    "adaptive_7x7": ((2, 3, 10, 9), (7, 7)),
    "adaptive_7x7_same": ((1, 2, 7, 7), (7, 7)),
    "adaptive_3x5": ((2, 2, 11, 13), (3, 5)),
    "adaptive_3x5_even": ((3, 2, 8, 8), (3, 5)),
    "adaptive_upsample": ((1, 3, 5, 4), (7, 7)),                  # more bins than pixels: bins overlap
}


def main():
    g = refutil.generator(1234)
    for name, (shape, k, s, p, d, ceil) in MAX_CASES.items():
        x = refutil.randn(g, *shape)
        refutil.save(FAMILY, name + "_x", x.float())
        refutil.save(FAMILY, name + "_y", F.max_pool2d(x, k, s, p, d, ceil_mode=ceil))
    for name, (shape, k, s, p, ceil, cip) in AVG_CASES.items():
        x = refutil.randn(g, *shape)
        refutil.save(FAMILY, name + "_x", x.float())
        refutil.save(FAMILY, name + "_y", F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip))
        # PyTorch's own float32 result: fovea sums in the same order, so it matches to the bit.
        refutil.save(FAMILY, name + "_yf32", F.avg_pool2d(x.float(), k, s, p, ceil_mode=ceil, count_include_pad=cip))
    for name, (shape, size) in ADAPTIVE_CASES.items():
        x = refutil.randn(g, *shape)
        refutil.save(FAMILY, name + "_x", x.float())
        refutil.save(FAMILY, name + "_y", F.adaptive_avg_pool2d(x, size))

    # NaN propagates (a NaN anywhere in the window wins) and -inf survives as a value, padding never wins.
    x = refutil.randn(g, 2, 2, 9, 8)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 4, 0] = float("nan")
    x[1, 0, 8, 7] = float("nan")
    x[1, 1, 0:3, 0:3] = float("-inf")
    x[1, 1, 5, 5] = float("inf")
    refutil.save(FAMILY, "max_nan_x", x.float())
    refutil.save(FAMILY, "max_nan_y", F.max_pool2d(x, 3, 2, 1, ceil_mode=True))

    # Ties between +0 and -0 keep the first in window order (row, then column), which fixes the sign.
    r = torch.rand(2, 3, 7, 8, generator=g, dtype=torch.float32).double()
    x = torch.where(r < 0.4, torch.tensor(0.0, dtype=torch.float64), torch.tensor(-0.0, dtype=torch.float64))
    x = torch.where(r > 0.9, -r, x)
    refutil.save(FAMILY, "max_signed_zero_x", x.float())
    refutil.save(FAMILY, "max_signed_zero_y", F.max_pool2d(x, 3, 2, 1))
