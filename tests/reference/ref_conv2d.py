"""F.conv2d references for tests/ops/test_conv2d.cpp.

Each case <name> saves <name>_input (N, C, H, W), <name>_weight (O, C/groups, kH, kW), <name>_bias (O) when
the case has one (float32), and <name>_out (float64, computed by F.conv2d in float64 from the float32 values).
The C++ test holds the matching options table; keep the two in step.
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

# name: (N, C, H, W, O, (kH, kW), stride, padding, dilation, groups, bias)
CASES = {
    "pointwise": (3, 8, 7, 9, 12, (1, 1), 1, 0, 1, 1, True),             # 1x1, the input is the patch matrix
    "pointwise_stride2": (3, 8, 9, 9, 10, (1, 1), 2, 0, 1, 1, True),     # ResNet downsample
    "k3_pad1": (1, 5, 11, 13, 6, (3, 3), 1, 1, 1, 1, True),
    "stem": (1, 3, 23, 20, 8, (7, 7), 2, 3, 1, 1, False),                # ResNet stem, odd sizes
    "asymmetric": (3, 4, 13, 10, 5, (3, 2), (2, 1), (0, 2), (2, 3), 1, True),
    "groups2": (3, 6, 9, 8, 4, (3, 3), 2, 1, 1, 2, True),
    "groups2_pointwise": (2, 8, 5, 6, 6, (1, 1), 1, 0, 1, 2, False),
    "depthwise_mult2": (3, 4, 10, 9, 8, (3, 3), 1, 1, 1, 4, True),      # channel multiplier 2
    "depthwise_strided": (2, 5, 11, 12, 5, (3, 3), 2, 2, 2, 5, False),   # stride 2, dilation 2
    "depthwise_k5": (1, 6, 17, 19, 6, (5, 5), 1, 2, 1, 6, True),
    "depthwise_rowstride": (2, 4, 9, 8, 4, (3, 3), (2, 1), 1, 1, 4, True),
    "depthwise_colstride": (1, 3, 7, 11, 6, (3, 2), (1, 2), (1, 0), (1, 2), 3, False),  # multiplier 2
    "no_bias_s2": (3, 7, 12, 11, 9, (3, 3), 2, 0, 1, 1, False),
    "dilated_same": (2, 3, 9, 10, 4, (3, 3), 1, 2, 2, 1, True),         # stride 1, output as wide as input
    "patch16": (2, 3, 48, 32, 16, (16, 16), 16, 0, 1, 1, True),         # ViT patch embedding
    "kernel_fills_input": (2, 3, 5, 6, 4, (7, 8), 1, 1, 1, 1, True),    # output 1x1
    "many_tiles": (2, 8, 19, 17, 12, (3, 3), 1, 1, 1, 1, True),        # the plan test cuts it into 3 and 7 tiles
    "small_spatial": (5, 16, 7, 7, 24, (3, 3), 1, 1, 1, 1, True),       # whole images batched into tiles
    "small_spatial_b1": (1, 24, 5, 5, 40, (3, 3), 1, 1, 1, 1, True),    # output channels split over threads
}


def main():
    g = generator(2024)
    for name, (n, c, h, w, o, (kh, kw), stride, padding, dilation, groups, has_bias) in CASES.items():
        x = randn(g, n, c, h, w)
        # Scaled like a trained layer (fan-in), so outputs are O(1) whatever K is.
        fan_in = (c // groups) * kh * kw
        weight = randn(g, o, c // groups, kh, kw, scale=fan_in ** -0.5)
        bias = randn(g, o) if has_bias else None
        out = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
        save("conv2d", name + "_input", x.float())
        save("conv2d", name + "_weight", weight.float())
        if has_bias:
            save("conv2d", name + "_bias", bias.float())
        save("conv2d", name + "_out", out)
        print(f"  {name}: input {tuple(x.shape)} weight {tuple(weight.shape)} -> {tuple(out.shape)}")
