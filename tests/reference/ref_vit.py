"""VisionTransformer reference: small random-weight models of the four weight families, in float64.

  torchvision  torchvision.models.vision_transformer.VisionTransformer itself (installed), its own forward
  timm         timm's VisionTransformer rebuilt below from timm/models/vision_transformer.py (Block,
               Attention with fused qkv, Mlp, _pos_embed, global_pool_nlc, forward_features/forward_head) and
               timm/layers/pos_embed.py (resample_abs_pos_embed), since timm is not installed here
  hf-clip      CLIPVisionModel(WithProjection) rebuilt from transformers' models/clip/modeling_clip.py
  hf-siglip    SiglipVisionModel rebuilt from transformers' models/siglip/modeling_siglip.py
(transformers cannot be installed either). Each rebuilt class keeps the source's module names, so its
state_dict has the family's real tensor names, and its forward follows the source line by line.

Every model is saved as <name>.safetensors (float32, values drawn in float32), with config.json files where
the shapes cannot say everything (heads, activation, eps). Outputs are computed in float64 from those values:
  <name>_<case>_output  what fovea-embed writes (logits / image_embeds / pooler_output)
  <name>_<case>_hidden  the family's last hidden state (N, tokens, D)
  <name>_<case>_pos     the position table used for that input size (tokens, D), interpolated or not
  <name>_base_embed     the token sequence entering the first block (after position embeddings, before CLIP's
                        pre_layrnorm), and <name>_base_block<i> every block's output: each stage on its own
  <name>_text, <name>_zero_shot   (full two-tower files) three text embeddings and the probabilities the
                        family's model gives the base images for them
Inputs are shared by the families: input_<case> (float32).

Position embeddings for an input of another size, as each family does it today:
  torchvision  no resizing in forward (it asserts the size); its interpolate_embeddings() helper, used to
               fine-tune at another size, resizes the grid with bicubic, align_corners=True. A square size runs
               exactly that helper and a fresh VisionTransformer; a non-square size (which no torchvision model
               accepts) extends it per axis with the same interpolation.
  timm         dynamic_img_size: resample_abs_pos_embed, bicubic, antialias=True (Keys a = -0.5 and a widened
               support when shrinking), align_corners=False, prefix tokens kept apart. timm casts to float32 for
               the resize; here it stays float64, a rounding-only difference.
  hf           interpolate_pos_encoding as the current source does it: F.interpolate(size=(H // P, W // P),
               bicubic, align_corners=False), skipped when the patch count is unchanged and H == W.
"""
import json
import math
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import vision_transformer as tvvit

from refutil import family_dir, generator, save
from ref_resnet import write_safetensors

FAMILY = "vit"
PATCH = 4
IMAGE = 16

# Inputs shared by every family: (N, C, H, W).
INPUTS = {
    "base": (2, 3, 16, 16),    # the configured size, grid 4 x 4
    "wide": (2, 3, 24, 20),    # non-square, grid 6 x 5: every family interpolates
    "square": (1, 3, 20, 20),  # grid 5 x 5 (torchvision's own interpolate_embeddings path)
    "small": (1, 3, 12, 8),    # grid 3 x 2: shrinking (timm's antialias widens the filter)
    "ragged": (2, 3, 18, 23),  # not a multiple of the patch: the conv drops the remainder, grid 4 x 5
}


# --- random weights --------------------------------------------------------------------------------------

def randomize(model, gen):
    """Every parameter drawn in float32: LayerNorm weight in [0.5, 1.5] and bias N(0, 0.2) so that a swapped or
    skipped norm shows; matrices N(0, 1 / fan_in); other biases N(0, 0.1); tokens, probes and position tables
    N(0, 0.5), large enough that a misplaced position row changes the output."""
    def f32(shape, scale=1.0, lo=None, hi=None):
        if lo is not None:
            t = lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float32)
        else:
            t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.double()

    with torch.no_grad():
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(owner, nn.LayerNorm):
                p.copy_(f32(p.shape, lo=0.5, hi=1.5) if leaf == "weight" else f32(p.shape, scale=0.2))
            elif isinstance(owner, nn.Embedding):
                p.copy_(f32(p.shape, scale=0.5))
            elif p.dim() >= 2 and "weight" in leaf:
                p.copy_(f32(p.shape, scale=p[0].numel() ** -0.5))
            elif "bias" in leaf:
                p.copy_(f32(p.shape, scale=0.1))
            else:
                p.copy_(f32(p.shape, scale=0.5))
    return model.double().eval()


def state_f32(model, prefix=""):
    return OrderedDict((prefix + k, v.detach().float()) for k, v in model.state_dict().items())


def write_model(name, tensors):
    write_safetensors(os.path.join(family_dir(FAMILY), name + ".safetensors"), tensors, metadata={"format": "pt"})


def write_json(name, obj):
    with open(os.path.join(family_dir(FAMILY), name + ".json"), "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def grid(shape):
    return shape[2] // PATCH, shape[3] // PATCH


# --- torchvision -----------------------------------------------------------------------------------------

def tv_run(model, x, pos):
    """torchvision's VisionTransformer.forward with the position table `pos` (1, 1 + gh * gw, D) in place of
    encoder.pos_embedding and without _process_input's size assertion; everything else is its modules. At the
    configured size, with the model's own table, it is checked to equal model(x)."""
    n = x.shape[0]
    t = model.conv_proj(x)
    t = t.reshape(n, model.hidden_dim, -1).permute(0, 2, 1)
    t = torch.cat([model.class_token.expand(n, -1, -1), t], dim=1)
    enc = model.encoder
    embed = enc.dropout(t + pos)
    blocks = []
    h = embed
    for layer in enc.layers:
        h = layer(h)
        blocks.append(h)
    hidden = enc.ln(h)
    return model.heads(hidden[:, 0]), hidden, embed, blocks


def tv_pos(model, g):
    """interpolate_embeddings' resize of the patch grid, per axis (bicubic, align_corners=True)."""
    pos = model.encoder.pos_embedding
    old = int(math.sqrt(pos.shape[1] - 1))
    if (old, old) == g:
        return pos
    img = pos[:, 1:].permute(0, 2, 1).reshape(1, pos.shape[2], old, old)
    img = F.interpolate(img, size=g, mode="bicubic", align_corners=True)
    img = img.reshape(1, pos.shape[2], -1).permute(0, 2, 1)
    return torch.cat([pos[:, :1], img], dim=1)


def torchvision_family(inputs):
    # vit_b_16's shape, shrunk: 4 heads of width 6, mlp 48; then a representation_size head (pre_logits +
    # tanh) saved with the legacy MLPBlock names mlp.linear_1 / mlp.linear_2.
    specs = {
        "tv": dict(image_size=IMAGE, patch_size=PATCH, num_layers=2, num_heads=4, hidden_dim=24, mlp_dim=48,
                   num_classes=10),
        "tv_legacy": dict(image_size=IMAGE, patch_size=PATCH, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=40,
                          num_classes=7, representation_size=12),
    }
    for seed, (name, kw) in enumerate(specs.items()):
        model = randomize(tvvit.VisionTransformer(**kw), generator(900 + seed))
        sd = state_f32(model)
        if name == "tv_legacy":
            sd = OrderedDict((k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."), v)
                             for k, v in sd.items())
        write_model(name, sd)
        write_json(name + "_config", {"hidden_size": kw["hidden_dim"], "num_attention_heads": kw["num_heads"],
                                      "num_hidden_layers": kw["num_layers"], "intermediate_size": kw["mlp_dim"],
                                      "patch_size": PATCH, "image_size": IMAGE, "layer_norm_eps": 1e-6,
                                      "hidden_act": "gelu"})
        cases = ["base", "wide", "square"] if name == "tv" else ["base"]
        with torch.no_grad():
            for case in cases:
                x = inputs[case].double()
                out, hidden, embed, blocks = tv_run(model, x, tv_pos(model, grid(x.shape)))
                if case == "base":
                    assert torch.equal(out, model(x)), "tv_run drifted from torchvision's forward"
                    save(FAMILY, f"{name}_base_embed", embed)
                    for i, b in enumerate(blocks):
                        save(FAMILY, f"{name}_base_block{i}", b)
                if case == "square":
                    # torchvision's own path: interpolate_embeddings, a model built for 40 x 40, model(x).
                    size = x.shape[-1]
                    state = tvvit.interpolate_embeddings(size, PATCH, OrderedDict(model.state_dict()))
                    tuned = tvvit.VisionTransformer(**dict(kw, image_size=size)).double().eval()
                    tuned.load_state_dict(state)
                    assert torch.allclose(tuned(x), out, rtol=0, atol=1e-12), "per-axis resize != torchvision's"
                    out = tuned(x)
                save(FAMILY, f"{name}_{case}_output", out)
                save(FAMILY, f"{name}_{case}_hidden", hidden)
                save(FAMILY, f"{name}_{case}_pos", tv_pos(model, grid(x.shape))[0])
        print(f"  {name}: {sum(v.numel() for v in sd.values())} values, cases {cases}")


# --- timm ------------------------------------------------------------------------------------------------

def resample_abs_pos_embed(posemb, new_size, old_size, num_prefix_tokens):
    """timm.layers.pos_embed.resample_abs_pos_embed (bicubic, antialias=True), in the input's precision."""
    if new_size[0] * new_size[1] + num_prefix_tokens == posemb.shape[1] and new_size[0] == new_size[1]:
        return posemb
    prefix, body = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    d = body.shape[-1]
    body = body.reshape(1, old_size[0], old_size[1], d).permute(0, 3, 1, 2)
    body = F.interpolate(body, size=new_size, mode="bicubic", antialias=True)
    body = body.permute(0, 2, 3, 1).reshape(1, -1, d)
    return torch.cat([prefix, body], dim=1) if num_prefix_tokens else body


class TimmAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TimmMlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act, nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimmBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, norm, act):
        super().__init__()
        self.norm1 = norm(dim)
        self.attn = TimmAttention(dim, num_heads, qkv_bias)
        self.norm2 = norm(dim)
        self.mlp = TimmMlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    """timm.models.vision_transformer.VisionTransformer with dynamic_img_size=True (no dropout, LayerScale,
    qk_norm or attention pooling)."""

    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio=4.0, num_classes=1000,
                 global_pool="token", class_token=True, reg_tokens=0, no_embed_class=False, pre_norm=False,
                 fc_norm=None, qkv_bias=True, eps=1e-6, act=None):
        super().__init__()
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm
        norm = lambda d: nn.LayerNorm(d, eps=eps)  # noqa: E731 (timm's LayerNorm: eps 1e-6)
        act = act or nn.GELU()
        self.global_pool = global_pool
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.no_embed_class = no_embed_class
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size, bias=not pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        num_patches = self.grid_size[0] * self.grid_size[1]
        embed_len = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim))
        self.norm_pre = norm(embed_dim) if pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[TimmBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, norm, act)
                                      for _ in range(depth)])
        self.norm = norm(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm(embed_dim) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def pos_table(self, new_size):
        return resample_abs_pos_embed(self.pos_embed, new_size, self.grid_size,
                                      0 if self.no_embed_class else self.num_prefix_tokens)

    def _pos_embed(self, x):
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
        b, h, w, c = x.shape
        pos_embed = self.pos_table((h, w))
        x = x.view(b, -1, c)
        if self.no_embed_class:
            x = x + pos_embed
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
        else:
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
            x = x + pos_embed
        return x

    def forward_all(self, x):
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # NHWC, as PatchEmbed(output_fmt='NHWC')
        embed = self._pos_embed(x)
        x = self.norm_pre(embed)
        blocks = []
        for blk in self.blocks:
            x = blk(x)
            blocks.append(x)
        hidden = self.norm(x)
        if self.global_pool == "token":
            pooled = hidden[:, 0]
        else:
            pooled = hidden[:, self.num_prefix_tokens:].mean(dim=1)
        return self.head(self.fc_norm(pooled)), hidden, embed, blocks


def timm_family(inputs):
    specs = {
        # vit_base_patch16_224's recipe: class token, token pooling, final norm, head; 2 heads of 12.
        "timm": dict(img_size=IMAGE, patch_size=PATCH, embed_dim=24, depth=2, num_heads=2, mlp_ratio=2.5,
                     num_classes=10),
        # The other switches timm's checkpoints use: two register tokens, position table for the patches only
        # (no_embed_class), pre-norm (patch conv without bias), average pooling with fc_norm instead of the
        # final norm, no qkv bias and no classifier (num_classes=0: the output is the pooled feature).
        "timm_avg": dict(img_size=IMAGE, patch_size=PATCH, embed_dim=16, depth=2, num_heads=4, mlp_ratio=2.0,
                         num_classes=0, global_pool="avg", reg_tokens=2, no_embed_class=True, pre_norm=True,
                         qkv_bias=False),
    }
    for seed, (name, kw) in enumerate(specs.items()):
        model = randomize(TimmViT(**kw), generator(910 + seed))
        sd = state_f32(model)
        write_model(name, sd)
        write_json(name + "_config", {"hidden_size": kw["embed_dim"], "num_attention_heads": kw["num_heads"],
                                      "patch_size": PATCH, "image_size": IMAGE,
                                      "global_pool": kw.get("global_pool", "token")})
        cases = ["base", "wide", "small"] if name == "timm" else ["base", "wide"]
        with torch.no_grad():
            for case in cases:
                x = inputs[case].double()
                out, hidden, embed, blocks = model.forward_all(x)
                if case == "base":
                    save(FAMILY, f"{name}_base_embed", embed)
                    for i, b in enumerate(blocks):
                        save(FAMILY, f"{name}_base_block{i}", b)
                save(FAMILY, f"{name}_{case}_output", out)
                save(FAMILY, f"{name}_{case}_hidden", hidden)
                save(FAMILY, f"{name}_{case}_pos", model.pos_table(grid(x.shape))[0])
        print(f"  {name}: {sum(v.numel() for v in sd.values())} values, cases {cases}")


# --- Hugging Face CLIP and SigLIP ------------------------------------------------------------------------

ACT = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu,
       "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


def hf_interpolate_pos_encoding(table, num_prefix, num_patches, height, width, patch):
    """CLIPVisionEmbeddings / SiglipVisionEmbeddings.interpolate_pos_encoding (current source): table
    (1, prefix + n, D) -> (1, prefix + (H // P) * (W // P), D)."""
    num_positions = table.shape[1] - num_prefix
    if num_patches == num_positions and height == width:
        return table
    prefix, body = table[:, :num_prefix], table[:, num_prefix:]
    d = table.shape[-1]
    side = int(num_positions ** 0.5)
    body = body.reshape(1, side, side, d).permute(0, 3, 1, 2)
    body = F.interpolate(body, size=(height // patch, width // patch), mode="bicubic", align_corners=False)
    body = body.permute(0, 2, 3, 1).reshape(1, -1, d)
    return torch.cat((prefix, body), dim=1)


class HfAttention(nn.Module):
    """CLIPAttention / SiglipAttention, eager: softmax(q k^T * head_dim^-0.5) v, separate q, k, v projections."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, -1, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.softmax((q @ k.transpose(-1, -2)) * self.head_dim ** -0.5, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, n, -1))


class HfMLP(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.act = ACT[act]
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class HfEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = HfAttention(c["hidden_size"], c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.mlp = HfMLP(c["hidden_size"], c["intermediate_size"], c["hidden_act"])
        self.layer_norm2 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class HfEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([HfEncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class ClipEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.patch = c["hidden_size"], c["patch_size"]
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(3, d, self.patch, self.patch, bias=False)
        self.position_embedding = nn.Embedding((c["image_size"] // self.patch) ** 2 + 1, d)

    def table(self, x):
        gh, gw = x.shape[2] // self.patch, x.shape[3] // self.patch
        return hf_interpolate_pos_encoding(self.position_embedding.weight.unsqueeze(0), 1, gh * gw, x.shape[2],
                                           x.shape[3], self.patch)

    def forward(self, x):
        p = self.patch_embedding(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), p], dim=1)
        return t + self.table(x)


class ClipVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = ClipEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = HfEncoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward_all(self, x):
        embed = self.embeddings(x)
        h = self.pre_layrnorm(embed)
        blocks = []
        for layer in self.encoder.layers:
            h = layer(h)
            blocks.append(h)
        pooled = self.post_layernorm(h[:, 0, :])
        return pooled, h, embed, blocks  # last_hidden_state is before post_layernorm


class ClipVisionModel(nn.Module):
    """CLIPVisionModel, or CLIPVisionModelWithProjection when projection_dim is given."""

    def __init__(self, c, projection_dim=None):
        super().__init__()
        self.vision_model = ClipVisionTransformer(c)
        if projection_dim:
            self.visual_projection = nn.Linear(c["hidden_size"], projection_dim, bias=False)

    def forward_all(self, x):
        pooled, hidden, embed, blocks = self.vision_model.forward_all(x)
        out = self.visual_projection(pooled) if hasattr(self, "visual_projection") else pooled
        return out, hidden, embed, blocks

    def table(self, x):
        return self.vision_model.embeddings.table(x)


class SiglipEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.patch = c["hidden_size"], c["patch_size"]
        self.patch_embedding = nn.Conv2d(3, d, self.patch, self.patch)
        self.position_embedding = nn.Embedding((c["image_size"] // self.patch) ** 2, d)

    def table(self, x):
        gh, gw = x.shape[2] // self.patch, x.shape[3] // self.patch
        return hf_interpolate_pos_encoding(self.position_embedding.weight.unsqueeze(0), 0, gh * gw, x.shape[2],
                                           x.shape[3], self.patch)

    def forward(self, x):
        return self.patch_embedding(x).flatten(2).transpose(1, 2) + self.table(x)


class SiglipHead(nn.Module):
    """SiglipMultiheadAttentionPoolingHead."""

    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.probe = nn.Parameter(torch.zeros(1, 1, d))
        self.attention = nn.MultiheadAttention(d, c["num_attention_heads"], batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = HfMLP(d, c["intermediate_size"], c["hidden_act"])

    def forward(self, h):
        probe = self.probe.repeat(h.shape[0], 1, 1)
        h = self.attention(probe, h, h)[0]
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class SiglipVisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = SiglipEmbeddings(c)
        self.encoder = HfEncoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.head = SiglipHead(c)

    def forward_all(self, x):
        embed = self.embeddings(x)
        h = embed
        blocks = []
        for layer in self.encoder.layers:
            h = layer(h)
            blocks.append(h)
        hidden = self.post_layernorm(h)  # SigLIP's last_hidden_state is after post_layernorm
        return self.head(hidden), hidden, embed, blocks

    def table(self, x):
        return self.embeddings.table(x)


def text_tower_stub(gen, width, vocab, length, projection, extra):
    """The text half of a full CLIPModel / SiglipModel file (a few of its tensors, which the vision loader must
    ignore), with the stale position_ids buffers older transformers saved."""
    f = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32)  # noqa: E731
    t = OrderedDict()
    t["text_model.embeddings.token_embedding.weight"] = f(vocab, width)
    t["text_model.embeddings.position_embedding.weight"] = f(length, width)
    t["text_model.embeddings.position_ids"] = torch.arange(length, dtype=torch.int64)[None]
    t["text_model.encoder.layers.0.self_attn.q_proj.weight"] = f(width, width)
    t["text_model.final_layer_norm.weight"] = f(width)
    if projection:
        t["text_projection.weight"] = f(projection, width)
    t.update(extra)
    return t


def hf_family(inputs):
    clip_cfg = dict(hidden_size=24, intermediate_size=56, num_attention_heads=3, num_hidden_layers=2,
                    patch_size=PATCH, image_size=IMAGE, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    gelu_cfg = dict(clip_cfg, hidden_act="gelu", hidden_size=16, intermediate_size=40, num_attention_heads=2)
    siglip_cfg = dict(hidden_size=24, intermediate_size=48, num_attention_heads=4, num_hidden_layers=2,
                      patch_size=PATCH, image_size=IMAGE, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    # The two-tower files get one-layer vision towers of their own (their text tensors only need ignoring).
    clip_full_cfg = dict(clip_cfg, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1)
    siglip_full_cfg = dict(siglip_cfg, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                           num_hidden_layers=1)
    # name: (model, config, seed, cases, config.json written as)
    specs = {
        # CLIPVisionModelWithProjection with openai's defaults (quick_gelu, eps 1e-5), projection 20; its
        # config.json is a flat CLIPVisionConfig.
        "clip": (ClipVisionModel(clip_cfg, projection_dim=20), clip_cfg, 920, ["base", "wide", "ragged"], "flat"),
        # CLIPVisionModel with hidden_act "gelu", no projection (output: pooler_output); config.json is a
        # CLIPConfig with the vision keys under "vision_config".
        "clip_gelu": (ClipVisionModel(gelu_cfg), gelu_cfg, 921, ["base", "wide"], "nested"),
        # SiglipVisionModel, saved under the tower's own names without "vision_model." (a bare
        # SiglipVisionTransformer state_dict, and how transformers >= 5 lays out SiglipVisionModel).
        "siglip": (SiglipVisionTransformer(siglip_cfg), siglip_cfg, 922, ["base", "wide", "small"], "nested"),
        # Full CLIPModel / SiglipModel files: vision_model.*, text_model.*, text_projection, logit_scale and
        # logit_bias, and the stale position_ids buffers that older transformers versions saved.
        "clip_full": (ClipVisionModel(clip_full_cfg, projection_dim=12), clip_full_cfg, 923, ["base"], "nested"),
        "siglip_full": (SiglipVisionTransformer(siglip_full_cfg), siglip_full_cfg, 924, ["base"], "nested"),
    }
    for name, (model, cfg, seed, cases, layout) in specs.items():
        randomize(model, generator(seed))
        sd = state_f32(model)
        gen = generator(seed + 50)
        if name == "clip_full":
            sd.update(text_tower_stub(gen, 16, 11, 6, 12, {"logit_scale": torch.tensor(2.6592)}))
            sd["vision_model.embeddings.position_ids"] = torch.arange(17, dtype=torch.int64)[None]
        if name == "siglip_full":
            sd = OrderedDict(("vision_model." + k, v) for k, v in sd.items())
            sd.update(text_tower_stub(gen, 16, 11, 6, 0, {"text_model.head.weight": torch.randn(16, 16, generator=gen),
                                                          "logit_scale": torch.tensor([2.3]),
                                                          "logit_bias": torch.tensor([-10.0])}))
            sd["vision_model.embeddings.position_ids"] = torch.arange(16, dtype=torch.int64)[None]
        write_model(name, sd)
        if layout == "flat":
            write_json(name + "_config", cfg)
        else:
            arch = "SiglipModel" if "siglip" in name else "CLIPModel"
            # CLIPModel's top-level projection_dim is its visual_projection's width; clip_gelu (a vision model
            # without projection, its config taken from a CLIPConfig) keeps the default 512, which then applies
            # to nothing.
            proj = model.visual_projection.out_features if hasattr(model, "visual_projection") else 512
            write_json(name + "_config", {"architectures": [arch], "projection_dim": proj,
                                          "text_config": {"hidden_size": 16, "hidden_act": "quick_gelu"},
                                          "vision_config": dict(cfg, model_type=arch.lower() + "_vision_model")})
        with torch.no_grad():
            for case in cases:
                x = inputs[case].double()
                out, hidden, embed, blocks = model.forward_all(x)
                if case == "base":
                    save(FAMILY, f"{name}_base_embed", embed)
                    for i, b in enumerate(blocks):
                        save(FAMILY, f"{name}_base_block{i}", b)
                save(FAMILY, f"{name}_{case}_output", out)
                save(FAMILY, f"{name}_{case}_hidden", hidden)
                save(FAMILY, f"{name}_{case}_pos", model.table(x)[0])
                if name == "clip":
                    save(FAMILY, f"{name}_{case}_pooler", model.vision_model.forward_all(x)[0])
        print(f"  {name}: {sum(v.numel() for v in sd.values())} values, cases {cases}")
        if name.endswith("_full"):
            zero_shot(name, model, inputs["base"].double(), sd, generator(seed + 60))


def zero_shot(name, model, x, sd, gen):
    """Text embeddings for three labels and the probabilities the family's own model gives them (CLIPModel:
    softmax over labels of exp(logit_scale) * cos; SiglipModel: sigmoid(exp(logit_scale) * cos + logit_bias)),
    for examples/example_zero_shot.cpp."""
    with torch.no_grad():
        image = model.forward_all(x)[0]
    text = torch.randn(3, image.shape[1], generator=gen, dtype=torch.float32)
    cos = F.normalize(image, dim=-1) @ F.normalize(text.double(), dim=-1).t()
    logits = cos * sd["logit_scale"].double().exp()
    if "logit_bias" in sd:
        p = torch.sigmoid(logits + sd["logit_bias"].double())
    else:
        p = torch.softmax(logits, dim=-1)
    save(FAMILY, f"{name}_text", text)
    save(FAMILY, f"{name}_zero_shot", p)


def main():
    g = generator(899)
    inputs = {k: torch.randn(*s, generator=g, dtype=torch.float32) for k, s in INPUTS.items()}
    for k, x in inputs.items():
        save(FAMILY, f"input_{k}", x)
    torchvision_family(inputs)
    timm_family(inputs)
    hf_family(inputs)
    total = sum(os.path.getsize(os.path.join(family_dir(FAMILY), f)) for f in os.listdir(family_dir(FAMILY)))
    print(f"  {FAMILY}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
