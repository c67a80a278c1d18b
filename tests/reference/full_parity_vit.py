#!/usr/bin/python3
"""Full-size ViT parity, outside CI: base-size towers with random weights, run by the built fovea-embed and by
PyTorch, compared; the table goes into docs/parity_vit.md.

    /usr/bin/python3 tests/reference/full_parity_vit.py --embed build/examples/fovea-embed [--threads 2]

Models (random weights drawn in float32 by ref_vit.randomize, saved as float32 safetensors):
  torchvision vit_b_16 (torchvision's own module and forward), 224 x 224
  CLIP ViT-B/16 vision tower with projection 512 (ref_vit's rebuild of CLIPVisionModelWithProjection),
      224 x 224 and 288 x 224 (position embeddings interpolated)
  SigLIP base-patch16-224 vision tower (ref_vit's rebuild of SiglipVisionModel), 224 x 224 and 256 x 192
For each: fovea (float32) against PyTorch in float64 from the same float32 values (the truth), and PyTorch's
own float32 run against the same truth, for scale. Reported: 1 - cosine similarity, max |error|, and max
|error| relative to the output's scale (max |truth|), for the output and the last hidden state.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
from torchvision.models import vision_transformer as tvvit

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from ref_resnet import write_safetensors  # noqa: E402
from ref_vit import ClipVisionModel, SiglipVisionTransformer, randomize, tv_run  # noqa: E402
from refutil import generator  # noqa: E402

DOC = os.path.join(here, "..", "..", "docs", "parity_vit.md")
BEGIN, END = "<!-- full_parity_vit.py: begin -->", "<!-- full_parity_vit.py: end -->"


def metrics(actual, truth):
    a, t = actual.astype(np.float64).ravel(), truth.astype(np.float64).ravel()
    err = np.abs(a - t).max()
    cos = float(a @ t / np.sqrt((a @ a) * (t @ t)))
    return cos, float(err), float(err / np.abs(t).max())


def run_embed(embed, arch, weights, config, x, work, threads):
    xin, out, hid = (os.path.join(work, n) for n in ("x.npy", "out.npy", "hidden.npy"))
    np.save(xin, x.numpy().astype(np.float32))
    cmd = [embed, "--arch", arch, "--weights", weights, "--input", xin, "--output", out, "--hidden-states", hid,
           "--threads", str(threads)]
    if config:
        cmd += ["--config", config]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fovea-embed failed ({r.returncode}): {r.stderr.strip()}")
    return np.load(out), np.load(hid), time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embed", required=True, help="the built fovea-embed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-doc", action="store_true", help="print the table only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="fovea_vit_parity_")
    rows = []

    def compare(label, model_fn, arch, weights, config, x):
        """model_fn(x float64 or float32) -> (output, hidden)."""
        with torch.no_grad():
            out64, hid64 = (t.numpy() for t in model_fn(x.double(), torch.float64))
            out32, hid32 = (t.numpy() for t in model_fn(x.float(), torch.float32))
        fo, fh, secs = run_embed(args.embed, arch, weights, config, x, work, args.threads)
        for what, ours, torch32, truth in (("output", fo, out32, out64), ("last hidden state", fh, hid32, hid64)):
            assert ours.shape == truth.shape, f"{label} {what}: fovea {ours.shape} vs PyTorch {truth.shape}"
            rows.append((label, what, tuple(truth.shape), metrics(ours, truth), metrics(torch32, truth), secs))
        print(f"  {label}: done ({secs:.1f} s in fovea-embed)", flush=True)

    g = generator(4242)

    # torchvision vit_b_16: its own module; forward through tv_run, which the reference checks equals model(x).
    tv = randomize(tvvit.vit_b_16(), generator(4300))
    tv_path = os.path.join(work, "vit_b_16.safetensors")
    write_safetensors(tv_path, OrderedDict((k, v.float()) for k, v in tv.state_dict().items()))

    def tv_fn(x, dtype):
        m = tv.to(dtype)
        out, hidden, _, _ = tv_run(m, x.to(dtype), m.encoder.pos_embedding)
        return out, hidden

    x = torch.randn(2, 3, 224, 224, generator=g)
    compare("torchvision vit_b_16, 2 x 224 x 224", tv_fn, "torchvision-vit", tv_path, None, x)

    # CLIP ViT-B/16 with projection (openai's config).
    clip_cfg = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    patch_size=16, image_size=224, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    clip = randomize(ClipVisionModel(clip_cfg, projection_dim=512), generator(4301))
    clip_path, clip_json = os.path.join(work, "clip.safetensors"), os.path.join(work, "clip.json")
    write_safetensors(clip_path, OrderedDict((k, v.float()) for k, v in clip.state_dict().items()))
    with open(clip_json, "w") as f:
        json.dump(clip_cfg, f)

    def clip_fn(x, dtype):
        out, hidden, _, _ = clip.to(dtype).forward_all(x.to(dtype))
        return out, hidden

    compare("CLIP ViT-B/16 + projection, 2 x 224 x 224", clip_fn, "hf-clip", clip_path, clip_json,
            torch.randn(2, 3, 224, 224, generator=g))
    compare("CLIP ViT-B/16 + projection, 1 x 288 x 224 (interpolated)", clip_fn, "hf-clip", clip_path, clip_json,
            torch.randn(1, 3, 288, 224, generator=g))

    # SigLIP base-patch16-224 vision tower with its attention-pool head.
    siglip_cfg = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                      patch_size=16, image_size=224, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    siglip = randomize(SiglipVisionTransformer(siglip_cfg), generator(4302))
    sig_path, sig_json = os.path.join(work, "siglip.safetensors"), os.path.join(work, "siglip.json")
    write_safetensors(sig_path, OrderedDict(("vision_model." + k, v.float()) for k, v in siglip.state_dict().items()))
    with open(sig_json, "w") as f:
        json.dump({"vision_config": siglip_cfg}, f)

    def siglip_fn(x, dtype):
        out, hidden, _, _ = siglip.to(dtype).forward_all(x.to(dtype))
        return out, hidden

    compare("SigLIP base/16, 2 x 224 x 224", siglip_fn, "hf-siglip", sig_path, sig_json,
            torch.randn(2, 3, 224, 224, generator=g))
    compare("SigLIP base/16, 1 x 256 x 192 (interpolated)", siglip_fn, "hf-siglip", sig_path, sig_json,
            torch.randn(1, 3, 256, 192, generator=g))

    lines = [
        f"torch {torch.__version__}, fovea-embed --threads {args.threads}, float32 in both; the truth is PyTorch in "
        "float64 from the same float32 weights and inputs.",
        "",
        "| model and input | tensor | shape | fovea 1 - cosine | fovea max abs err | fovea err / scale "
        "| PyTorch fp32 1 - cosine | PyTorch fp32 err / scale |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, what, shape, (c, e, r), (tc, te, tr), _ in rows:
        lines.append(f"| {label} | {what} | {shape} | {1 - c:.1e} | {e:.3g} | {r:.3g} | {1 - tc:.1e} | {tr:.3g} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        text = open(DOC).read()
        a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
        open(DOC, "w").write(text[:a] + "\n" + table + "\n" + text[b:])
        print(f"wrote {os.path.normpath(DOC)}")


if __name__ == "__main__":
    main()
