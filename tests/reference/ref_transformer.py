"""Transformer modules in float64 with random float32-representable parameters, saved as SafeTensors
(float32) under each family's names, with inputs (float32) and outputs (float64):

- mha: torch.nn.MultiheadAttention(24, 4, batch_first=True): self-attention (2, 7, 24), with an additive
  (7, 7) mask holding -inf, with a key-padding mask, and cross-attention query (2, 3, 24) over (2, 9, 24).
  The same weights also under timm names (qkv, proj) and Hugging Face names (q_proj, k_proj, v_proj,
  out_proj), and a bias=False module.
- mlp: fc1 (12 -> 20), activation, fc2 (20 -> 12) on (2, 5, 12) for GELU (erf), GELU (tanh) and QuickGELU.
- block: torchvision.models.vision_transformer.EncoderBlock(4 heads, width 32, MLP 48, LayerNorm eps 1e-6)
  on (2, 11, 32), every LayerNorm randomised; the state dict also renamed to timm, Hugging Face and legacy
  torchvision (mlp.linear_1/2) names. A second output runs the same block with a key-padding mask
  (batch 1 attends to its first 6 tokens only), through the block's own modules.
- pool: SigLIP's SiglipMultiheadAttentionPoolingHead rebuilt from transformers' modeling_siglip.py (probe,
  nn.MultiheadAttention, LayerNorm, SiglipMLP with gelu_pytorch_tanh) on (3, 10, 32).
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import EncoderBlock

from ref_resnet import write_safetensors
from refutil import family_dir, generator, save

FAMILY = "transformer"


def randomize(module, gen, scale=None):
    """Every parameter redrawn in float32: matrices with a fan-in scale, vectors around 0 (biases) or
    around 1 (LayerNorm weights), so that a loader that swaps or skips any tensor fails the comparison."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                s = scale if scale is not None else p.shape[-1] ** -0.5
                t = torch.randn(*p.shape, generator=gen, dtype=torch.float32) * s
            elif "ln" in name or "norm" in name:
                t = 1.0 + 0.3 * torch.randn(*p.shape, generator=gen, dtype=torch.float32)
            else:
                t = 0.3 * torch.randn(*p.shape, generator=gen, dtype=torch.float32)
            p.copy_(t.double())
    return module


def f32(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


def split_qkv(sd, src, dst):
    """in_proj_weight / in_proj_bias under `src` -> Hugging Face q_proj / k_proj / v_proj under `dst`."""
    out = {}
    w, b = sd[src + ".in_proj_weight"].chunk(3), sd[src + ".in_proj_bias"].chunk(3)
    for i, n in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{dst}.{n}.weight"], out[f"{dst}.{n}.bias"] = w[i], b[i]
    out[f"{dst}.out_proj.weight"], out[f"{dst}.out_proj.bias"] = sd[src + ".out_proj.weight"], sd[src + ".out_proj.bias"]
    return out


def write(name, tensors):
    write_safetensors(os.path.join(family_dir(FAMILY), name + ".safetensors"), tensors)


def mha_cases(g):
    mha = randomize(nn.MultiheadAttention(24, 4, batch_first=True), g).double().eval()
    nobias = randomize(nn.MultiheadAttention(24, 4, bias=False, batch_first=True), g).double().eval()
    x, q, kv = f32(g, 2, 7, 24), f32(g, 2, 3, 24), f32(g, 2, 9, 24)
    mask = torch.randn(7, 7, generator=g, dtype=torch.float32)
    mask[torch.rand(7, 7, generator=g) < 0.3] = float("-inf")
    mask.fill_diagonal_(0.0)  # every row keeps a key: PyTorch 1.13 would give NaN for a fully masked row
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True  # nn.MultiheadAttention: True = ignore this key
    sd = {"mha." + k: v for k, v in mha.state_dict().items()}
    write("mha", sd)
    write("mha_nobias", {"nobias." + k: v for k, v in nobias.state_dict().items()})
    timm = {"mha.qkv.weight": sd["mha.in_proj_weight"], "mha.qkv.bias": sd["mha.in_proj_bias"],
            "mha.proj.weight": sd["mha.out_proj.weight"], "mha.proj.bias": sd["mha.out_proj.bias"]}
    write("mha_timm", timm)
    write("mha_hf", split_qkv(sd, "mha", "mha"))
    with torch.no_grad():
        xd, qd, kvd = x.double(), q.double(), kv.double()
        save(FAMILY, "mha_x", x)
        save(FAMILY, "mha_q", q)
        save(FAMILY, "mha_kv", kv)
        save(FAMILY, "mha_mask", mask)
        save(FAMILY, "mha_self", mha(xd, xd, xd, need_weights=False)[0])
        save(FAMILY, "mha_self_mask", mha(xd, xd, xd, attn_mask=mask.double(), need_weights=False)[0])
        save(FAMILY, "mha_self_padding", mha(xd, xd, xd, key_padding_mask=pad, need_weights=False)[0])
        save(FAMILY, "mha_cross", mha(qd, kvd, kvd, need_weights=False)[0])
    # Outside no_grad: PyTorch 1.13's eval fast path (_native_multi_head_attention) rejects bias=False.
    save(FAMILY, "mha_nobias_self", nobias(xd, xd, xd, need_weights=False)[0].detach())


class Mlp(nn.Module):
    """timm / Hugging Face layout: fc1, activation, fc2."""

    def __init__(self, d, h, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, h), nn.Linear(h, d), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def mlp_cases(g):
    acts = {"gelu": lambda t: F.gelu(t), "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
            "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}
    mlp = randomize(Mlp(12, 20, None), g).double()
    write("mlp", {"mlp." + k: v for k, v in mlp.state_dict().items()})
    x = f32(g, 2, 5, 12) * 2.0  # hidden pre-activations of a few units, both GELU tails exercised
    save(FAMILY, "mlp_x", x)
    with torch.no_grad():
        for name, act in acts.items():
            mlp.act = act
            save(FAMILY, f"mlp_{name}", mlp(x.double()))


def block_cases(g):
    block = randomize(EncoderBlock(4, 32, 48, 0.0, 0.0), g).double().eval()
    sd = block.state_dict()
    write("block", {"block." + k: v for k, v in sd.items()})
    legacy = {("block." + k).replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
              for k, v in sd.items()}
    write("block_legacy", legacy)
    timm = {"block.norm1.weight": sd["ln_1.weight"], "block.norm1.bias": sd["ln_1.bias"],
            "block.attn.qkv.weight": sd["self_attention.in_proj_weight"],
            "block.attn.qkv.bias": sd["self_attention.in_proj_bias"],
            "block.attn.proj.weight": sd["self_attention.out_proj.weight"],
            "block.attn.proj.bias": sd["self_attention.out_proj.bias"],
            "block.norm2.weight": sd["ln_2.weight"], "block.norm2.bias": sd["ln_2.bias"],
            "block.mlp.fc1.weight": sd["mlp.0.weight"], "block.mlp.fc1.bias": sd["mlp.0.bias"],
            "block.mlp.fc2.weight": sd["mlp.3.weight"], "block.mlp.fc2.bias": sd["mlp.3.bias"]}
    write("block_timm", timm)
    hf = {"block.layer_norm1.weight": sd["ln_1.weight"], "block.layer_norm1.bias": sd["ln_1.bias"],
          "block.layer_norm2.weight": sd["ln_2.weight"], "block.layer_norm2.bias": sd["ln_2.bias"],
          "block.mlp.fc1.weight": sd["mlp.0.weight"], "block.mlp.fc1.bias": sd["mlp.0.bias"],
          "block.mlp.fc2.weight": sd["mlp.3.weight"], "block.mlp.fc2.bias": sd["mlp.3.bias"]}
    hf.update(split_qkv({"a." + k[len("self_attention."):]: v for k, v in sd.items() if k.startswith("self_attention.")},
                        "a", "block.self_attn"))
    write("block_hf", hf)
    x = f32(g, 2, 11, 32)
    save(FAMILY, "block_x", x)
    pad = torch.zeros(2, 11, dtype=torch.bool)
    pad[1, 6:] = True
    with torch.no_grad():
        xd = x.double()
        save(FAMILY, "block_out", block(xd))
        # The same block with a key-padding mask, through its own modules (EncoderBlock.forward takes none).
        h = block.ln_1(xd)
        y = block.self_attention(h, h, h, key_padding_mask=pad, need_weights=False)[0] + xd
        save(FAMILY, "block_out_padding", y + block.mlp(block.ln_2(y)))


class SiglipMLP(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    """As transformers' modeling_siglip.py defines it (names probe, attention, layernorm, mlp)."""

    def __init__(self, d, heads, mlp, eps):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, d))
        self.attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=eps)
        self.mlp = SiglipMLP(d, mlp)

    def forward(self, hidden_state):
        probe = self.probe.repeat(hidden_state.shape[0], 1, 1)
        hidden_state = self.attention(probe, hidden_state, hidden_state)[0]
        residual = hidden_state
        hidden_state = self.layernorm(hidden_state)
        hidden_state = residual + self.mlp(hidden_state)
        return hidden_state[:, 0]


def pool_cases(g):
    head = randomize(SiglipMultiheadAttentionPoolingHead(32, 4, 48, 1e-6), g).double().eval()
    with torch.no_grad():
        head.probe.copy_(f32(g, 1, 1, 32).double())  # unit scale, not the matrix fan-in scale
    write("pool", {"head." + k: v for k, v in head.state_dict().items()})
    x = f32(g, 3, 10, 32)
    save(FAMILY, "pool_x", x)
    with torch.no_grad():
        save(FAMILY, "pool_out", head(x.double()))


def main():
    mha_cases(generator(1000))
    mlp_cases(generator(1001))
    block_cases(generator(1002))
    pool_cases(generator(1003))
