#!/usr/bin/python3
"""Full-size parity of fovea-embed with torchvision (outside CI; results go in docs/parity.md).

    /usr/bin/python3 tests/reference/full_parity.py build/examples/fovea-embed [--threads 2] [--models resnet18,resnet50]

For each model: torchvision's own constructor with random weights and random BatchNorm running statistics
(ref_resnet.randomize), eval mode; exports tests/reference/full/<model>.safetensors (float32, torchvision's
state_dict names) and a (2, 3, 224, 224) float32 input; runs PyTorch in float32 and in float64 (the truth)
and fovea-embed on the same files; prints max abs error, max error relative to max |logit|, and 1 - cosine
similarity, for the logits and for layer4's feature map. Files are regenerated only if missing.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torchvision.models import resnet as tv

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from ref_resnet import logits_and_features, randomize, write_safetensors  # noqa: E402

FULL = os.path.join(here, "full")
MODELS = {"resnet18": (tv.resnet18, 1), "resnet50": (tv.resnet50, 2)}


def export(name):
    ctor, seed = MODELS[name]
    weights = os.path.join(FULL, name + ".safetensors")
    inp = os.path.join(FULL, name + "_input.npy")
    g = torch.Generator()
    g.manual_seed(seed)
    model = randomize(ctor(), g).eval()
    x = torch.randn(2, 3, 224, 224, generator=g, dtype=torch.float32)
    if not os.path.exists(weights):
        write_safetensors(weights, model.state_dict(), metadata={"format": "pt"})
    if not os.path.exists(inp):
        np.save(inp, x.numpy())
    return model, x, weights, inp


def compare(label, got, want):
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    err = np.abs(got - want).max()
    cos = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
    print(f"    {label:32s} max abs err {err:.3e}   rel to max|ref| {err / np.abs(want).max():.3e}   "
          f"1 - cosine {1 - cos:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fovea_embed", help="path to the built fovea-embed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="resnet18,resnet50")
    args = ap.parse_args()
    os.makedirs(FULL, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    for name in args.models.split(","):
        model, x, weights, inp = export(name)
        with torch.no_grad():
            t0 = time.perf_counter()
            logits32, feats32 = logits_and_features(model, x)
            t32 = (time.perf_counter() - t0) * 1e3
            model64 = model.double()
            logits64, feats64 = logits_and_features(model64, x.double())
            model.float()
        out = os.path.join(FULL, name + "_fovea_logits.npy")
        hid = os.path.join(FULL, name + "_fovea_layer4.npy")
        cmd = [args.fovea_embed, "--arch", "torchvision-resnet", "--weights", weights, "--input", inp, "--output", out,
               "--hidden-states", hid, "--threads", str(args.threads)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"fovea-embed failed ({run.returncode}): {run.stderr.strip()}")
        print(f"{name}: logits {tuple(logits64.shape)}, max|logit| {logits64.abs().max().item():.3g}; "
              f"torch float32 forward {t32:.1f} ms (first call)")
        print("    fovea: " + run.stdout.strip())
        fl, ff = np.load(out), np.load(hid)
        compare("fovea f32 vs torch f64 (logits)", fl, logits64)
        compare("fovea f32 vs torch f32 (logits)", fl, logits32)
        compare("torch f32 vs torch f64 (logits)", logits32, logits64)
        compare("fovea f32 vs torch f64 (layer4)", ff, feats64)
        compare("torch f32 vs torch f64 (layer4)", feats32, feats64)
        top_f, top_t = np.argsort(-fl, 1)[:, :5], np.argsort(-logits64.numpy(), 1)[:, :5]
        print(f"    top-5 classes equal to torch f64: {bool((top_f == top_t).all())}")


if __name__ == "__main__":
    main()
