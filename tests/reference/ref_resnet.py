"""Small torchvision ResNets (BasicBlock, Bottleneck, grouped Bottleneck) with random weights and random
BatchNorm running statistics, in eval mode and float64.

Each model is saved as <name>.safetensors (float32, torchvision's state_dict names, written by hand below),
with its input (float32), logits and layer4 features (float64, computed from the float32-rounded values).
The narrow models reuse torchvision's own BasicBlock / Bottleneck and ResNet._make_layer / forward; only
the stem and stage widths differ from the stock constructor, which hard-codes 64..512.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
from torchvision.models import resnet as tv

from refutil import family_dir, generator, save


class NarrowResNet(tv.ResNet):
    """torchvision.models.ResNet with configurable stem width, stage widths and input channels.

    Mirrors ResNet.__init__ line for line (same module names and order) except for those widths, so its
    state_dict names and the inherited forward are torchvision's. Checked against tv.resnet18/50 below."""

    def __init__(self, block, layers, widths=(64, 128, 256, 512), stem=64, in_channels=3, num_classes=1000,
                 groups=1, width_per_group=64):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = stem
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)


def randomize(model, gen):
    """Random weights and non-trivial BatchNorm statistics, all exactly representable in float32.

    Convs keep a fan-in scale so activations neither explode nor vanish across the depth; BN gets
    gamma in [0.5, 1.5], beta ~ N(0, 0.2), mean ~ N(0, 0.2), var in [0.5, 2] so that eval-mode BN is far
    from the identity and a loader that skips or swaps any of the four tensors fails the comparison."""
    def f32(*shape, scale=1.0, lo=None, hi=None):
        if lo is not None:
            t = lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float32)
        else:
            t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.double()

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(f32(*m.weight.shape, scale=(2.0 / fan_in) ** 0.5))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(f32(c, lo=0.5, hi=1.5))
                m.bias.copy_(f32(c, scale=0.2))
                m.running_mean.copy_(f32(c, scale=0.2))
                m.running_var.copy_(f32(c, lo=0.5, hi=2.0))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(f32(*m.weight.shape, scale=m.in_features ** -0.5))
                m.bias.copy_(f32(m.out_features, scale=0.1))
    return model


_DTYPES = {torch.float32: ("F32", np.float32), torch.float64: ("F64", np.float64), torch.int64: ("I64", np.int64),
           torch.float16: ("F16", np.float16)}


def write_safetensors(path, tensors, float_dtype=torch.float32, metadata=None):
    """SafeTensors by hand: u64 little-endian header length, JSON header, then the raw little-endian data.

    Floating tensors are stored as float_dtype; integer ones (num_batches_tracked) keep int64, as a real
    torchvision export does. The header is padded with spaces to a multiple of 8, as the format allows."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(float_dtype)
        tag, np_dtype = _DTYPES[t.dtype]
        data = np.ascontiguousarray(t.numpy(), dtype=np.dtype(np_dtype).newbyteorder("<")).tobytes()
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def logits_and_features(model, x):
    """model(x) and the layer4 output, from torchvision's own forward."""
    seen = {}
    hook = model.layer4.register_forward_hook(lambda mod, inp, out: seen.setdefault("f", out.detach().clone()))
    with torch.no_grad():
        logits = model(x)
    hook.remove()
    return logits, seen["f"]


def _check_same_structure():
    """The narrow class with the stock widths has exactly torchvision's names and shapes."""
    for ours, theirs in ((NarrowResNet(tv.BasicBlock, [2, 2, 2, 2]), tv.resnet18()),
                         (NarrowResNet(tv.Bottleneck, [3, 4, 6, 3]), tv.resnet50()),
                         (NarrowResNet(tv.Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4),
                          tv.resnext50_32x4d())):
        a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        assert a == b, "NarrowResNet drifted from torchvision's ResNet"
        assert list(a) == list(b)


# name: (block, layers, widths, stem, in_channels, classes, groups, width_per_group, input shape, seed)
MODELS = {
    # resnet18-like; odd input size so every stride-2 stage rounds (57 -> 29 -> 15 -> 8 -> 4 -> 2 -> 1).
    "basic": (tv.BasicBlock, [2, 1, 2, 1], (8, 16, 32, 64), 8, 3, 10, 1, 64, (3, 3, 57, 61), 11),
    # resnet50-like narrow: expansion 4, downsample in every stage including layer1.
    "bottleneck": (tv.Bottleneck, [1, 2, 1, 1], (4, 8, 16, 32), 8, 3, 10, 1, 64, (2, 3, 64, 64), 12),
    # ResNeXt-like grouped 3x3 convs (groups 2, width_per_group 32 -> width = planes), one input
    # channel, 7 classes, a non-square input.
    "grouped": (tv.Bottleneck, [1, 1, 1, 1], (8, 8, 16, 16), 6, 1, 7, 2, 32, (2, 1, 40, 33), 13),
}


def build(name):
    block, layers, widths, stem, cin, classes, groups, wpg, shape, seed = MODELS[name]
    gen = generator(seed)
    model = NarrowResNet(block, layers, widths, stem, cin, classes, groups, wpg)
    randomize(model, gen).double().eval()
    x = torch.randn(*shape, generator=gen, dtype=torch.float32)
    return model, x


def modules(gen):
    """The three nn modules alone (Conv2d with groups, stride, padding, dilation and bias; BatchNorm2d with
    random statistics; Linear on a rank-3 input), in one state dict under the prefixes conv, bn, fc."""
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=True)
    bn = nn.BatchNorm2d(5)
    fc = nn.Linear(7, 5)
    holder = nn.Module()
    holder.conv, holder.bn, holder.fc = conv, bn, fc
    randomize(holder, gen)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(6, generator=gen, dtype=torch.float32).double())
    holder.double().eval()
    xs = {"conv": torch.randn(2, 4, 9, 8, generator=gen, dtype=torch.float32),
          "bn": torch.randn(3, 5, 4, 6, generator=gen, dtype=torch.float32),
          "fc": torch.randn(2, 3, 7, generator=gen, dtype=torch.float32)}
    with torch.no_grad():
        ys = {k: getattr(holder, k)(x.double()) for k, x in xs.items()}
    return holder, xs, ys


def main():
    _check_same_structure()
    out = family_dir("resnet")
    holder, xs, ys = modules(generator(10))
    write_safetensors(os.path.join(out, "modules.safetensors"), holder.state_dict())
    for k in xs:
        save("resnet", f"module_{k}_input", xs[k])
        save("resnet", f"module_{k}_output", ys[k])
    for name in MODELS:
        model, x = build(name)
        logits, feats = logits_and_features(model, x.double())
        write_safetensors(os.path.join(out, name + ".safetensors"), model.state_dict(), metadata={"format": "pt"})
        save("resnet", name + "_input", x)
        save("resnet", name + "_logits", logits)
        save("resnet", name + "_features", feats)
        if name == "basic":
            # The smallest images torchvision accepts: every stride-2 stage keeps a size of 1.
            x_small = torch.randn(2, 3, 1, 3, generator=generator(14), dtype=torch.float32)
            save("resnet", "basic_small_input", x_small)
            save("resnet", "basic_small_logits", logits_and_features(model, x_small.double())[0])
        print(f"  {name}: input {tuple(x.shape)} logits {tuple(logits.shape)} features {tuple(feats.shape)} "
              f"max|logit| {logits.abs().max().item():.3g}")


if __name__ == "__main__":
    main()
