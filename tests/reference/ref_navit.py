"""NaViT reference: lucidrains' vit_pytorch/na_vit.py (version >= 1.6.7) rebuilt in plain torch, in float64.

vit_pytorch and einops are not installed here, so the module is rebuilt below from the source: the same module
tree (LayerNorm with a `gamma` parameter and a `beta` buffer, RMSNorm q/k norms, Attention with to_q / to_kv /
to_out, FeedForward as an nn.Sequential, Transformer.norm, to_patch_embedding, pos_embed_height / _width,
attn_pool_queries, attn_pool, mlp_head), so its state_dict has na_vit's real tensor names, and a forward that
follows na_vit's line by line with einops' rearrange / repeat written as reshape / permute / expand:
group_images_by_max_seq_len (greedy, in input order), per-image patchify 'c (h p1) (w p2) -> (h w) (c p1 p2)'
and (row, col) positions, the 1.6.7 key-padding mask (arange < length), the image-id attention mask, the
factorized position embedding, masked_fill with -finfo.max, attention pooling with one query per image and
the per-sequence image count. Eval mode: no dropout, no token dropping; the dropping case passes the kept
indices in (na_vit draws them with randn().topk(); any choice is a valid one to check against).

Models (weights float32 in <name>.safetensors, values drawn in float32; outputs float64):
  navit        3 channels, patch 4, tables 8 x 10 (image 32 x 40), dim 32, depth 2, heads 4, dim_head 12
               (inner 48 != dim), mlp 64, 10 classes
  navit_gray   1 channel, patch 4, tables 4 x 4, dim 24, depth 1, heads 2, dim_head 8, mlp 40, 3 classes, with
               navit_gray_config.json
Files:
  <name>_image_<i>       the inputs (C, H, W), float32, several resolutions, non-square ones included
  <name>_logits          model(images, group_images=True, group_max_seq_len=GROUP[name]) (images, classes)
  <name>_pooled          the attention-pool output before mlp_head (images, dim)
  <name>_hidden          every image's transformer output (after transformer.norm), concatenated in input order
                         (sum n_i, dim)
  navit_drop_keep_<i>    kept patch indices of each image (float64 holding integers, in topk's order, unsorted)
  navit_drop_logits      the model on those kept tokens only (packed with group_max_seq_len GROUP['navit'])
"""
import json
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from refutil import family_dir, generator, save
from ref_resnet import write_safetensors

FAMILY = "navit"


# --- na_vit.py rebuilt -----------------------------------------------------------------------------------

class LayerNorm(nn.Module):
    """Bias-free LayerNorm: a learned gamma, a beta buffer (zeros in na_vit; saved in the state dict)."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class RMSNorm(nn.Module):
    """Query-key norm of ViT-22B: F.normalize, times sqrt(dim) and a per-head gamma (heads, 1, dim)."""

    def __init__(self, heads, dim):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, 1, dim))

    def forward(self, x):
        return F.normalize(x, dim=-1) * self.scale * self.gamma


def FeedForward(dim, hidden_dim):
    return nn.Sequential(LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(0.0),
                         nn.Linear(hidden_dim, dim), nn.Dropout(0.0))


class Attention(nn.Module):
    def __init__(self, dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = LayerNorm(dim)
        self.q_norm = RMSNorm(heads, dim_head)
        self.k_norm = RMSNorm(heads, dim_head)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(0.0)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(0.0))

    def forward(self, x, context=None, attn_mask=None):
        x = self.norm(x)
        kv_input = x if context is None else context
        q = self.to_q(x)
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)

        def heads(t):  # 'b n (h d) -> b h n d'
            b, n, _ = t.shape
            return t.reshape(b, n, self.heads, -1).permute(0, 2, 1, 3)

        q, k, v = heads(q), heads(k), heads(v)
        q = self.q_norm(q)
        k = self.k_norm(k)
        dots = torch.matmul(q, k.transpose(-1, -2))
        if attn_mask is not None:
            dots = dots.masked_fill(~attn_mask, -torch.finfo(dots.dtype).max)
        attn = self.dropout(self.attend(dots))
        out = torch.matmul(attn, v)
        b, h, n, d = out.shape
        out = out.permute(0, 2, 1, 3).reshape(b, n, h * d)  # 'b h n d -> b n (h d)'
        return self.to_out(out)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)])
                                     for _ in range(depth)])
        self.norm = LayerNorm(dim)

    def forward(self, x, attn_mask=None):
        for attn, ff in self.layers:
            x = attn(x, attn_mask=attn_mask) + x
            x = ff(x) + x
        return self.norm(x)


def group_images_by_max_seq_len(images, patch_size, max_seq_len):
    """Greedy in input order: an image joins the current group while the group's patches fit."""
    groups, group, seq_len = [], [], 0
    for image in images:
        ph, pw = image.shape[-2] // patch_size, image.shape[-1] // patch_size
        n = ph * pw
        assert n <= max_seq_len
        if seq_len + n > max_seq_len:
            groups.append(group)
            group, seq_len = [], 0
        group.append(image)
        seq_len += n
    if group:
        groups.append(group)
    return groups


class NaViT(nn.Module):
    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, channels=3, dim_head=64):
        super().__init__()
        ih, iw = image_size
        assert ih % patch_size == 0 and iw % patch_size == 0
        patch_dim = channels * patch_size ** 2
        self.channels, self.patch_size = channels, patch_size
        self.to_patch_embedding = nn.Sequential(LayerNorm(patch_dim), nn.Linear(patch_dim, dim), LayerNorm(dim))
        self.pos_embed_height = nn.Parameter(torch.randn(ih // patch_size, dim))
        self.pos_embed_width = nn.Parameter(torch.randn(iw // patch_size, dim))
        self.dropout = nn.Dropout(0.0)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim)
        self.attn_pool_queries = nn.Parameter(torch.randn(dim))
        self.attn_pool = Attention(dim, heads, dim_head)
        self.to_latent = nn.Identity()
        self.mlp_head = nn.Sequential(LayerNorm(dim), nn.Linear(dim, num_classes, bias=False))

    def forward(self, images, group_max_seq_len=2048, keep=None, stages=None):
        """images: a list (grouped here, as group_images=True); keep: None or, per image, the patch indices kept
        (the training-mode dropping with a given choice); stages: a dict that receives pooled and hidden."""
        p, c = self.patch_size, self.channels
        index_of = {id(im): i for i, im in enumerate(images)}
        if keep is not None:  # group by the kept counts, as na_vit groups by the counts after dropping
            groups, group, used = [], [], 0
            for i, im in enumerate(images):
                n = len(keep[i])
                if used + n > group_max_seq_len:
                    groups.append(group)
                    group, used = [], 0
                group.append(im)
                used += n
            groups.append(group)
        else:
            groups = group_images_by_max_seq_len(images, p, group_max_seq_len)

        num_images, batched_sequences, batched_positions, batched_image_ids, order = [], [], [], [], []
        for group in groups:
            num_images.append(len(group))
            sequences, positions, image_ids = [], [], torch.empty((0,), dtype=torch.long)
            for image_id, image in enumerate(group):
                assert image.ndim == 3 and image.shape[0] == c
                h, w = image.shape[-2] // p, image.shape[-1] // p
                pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1)
                pos = pos.reshape(h * w, 2)
                # 'c (h p1) (w p2) -> (h w) (c p1 p2)'
                seq = image.reshape(c, h, p, w, p).permute(1, 3, 0, 2, 4).reshape(h * w, c * p * p)
                if keep is not None:
                    idx = keep[index_of[id(image)]]
                    seq, pos = seq[idx], pos[idx]
                image_ids = F.pad(image_ids, (0, seq.shape[-2]), value=image_id)
                sequences.append(seq)
                positions.append(pos)
                order.append(index_of[id(image)])
            batched_image_ids.append(image_ids)
            batched_sequences.append(torch.cat(sequences, dim=0))
            batched_positions.append(torch.cat(positions, dim=0))

        # key padding mask as of 1.6.7: a key is real iff its index is below the sequence's length
        lengths = torch.tensor([s.shape[-2] for s in batched_sequences], dtype=torch.long)
        seq_arange = torch.arange(int(lengths.amax().item()))
        key_pad_mask = seq_arange[None, :] < lengths[:, None]

        batched_image_ids = nn.utils.rnn.pad_sequence(batched_image_ids, batch_first=True)
        attn_mask = batched_image_ids[:, None, :, None] == batched_image_ids[:, None, None, :]
        attn_mask = attn_mask & key_pad_mask[:, None, None, :]

        patches = nn.utils.rnn.pad_sequence(batched_sequences, batch_first=True)
        patch_positions = nn.utils.rnn.pad_sequence(batched_positions, batch_first=True)
        num_images = torch.tensor(num_images, dtype=torch.long)

        x = self.to_patch_embedding(patches)
        h_indices, w_indices = patch_positions.unbind(dim=-1)
        x = x + self.pos_embed_height[h_indices] + self.pos_embed_width[w_indices]
        x = self.dropout(x)
        x = self.transformer(x, attn_mask=attn_mask)
        hidden = x

        max_queries = int(num_images.amax().item())
        queries = self.attn_pool_queries.expand(x.shape[0], max_queries, -1)  # 'd -> b n d'
        image_id_arange = torch.arange(max_queries)
        attn_pool_mask = image_id_arange[:, None] == batched_image_ids[:, None, :]
        attn_pool_mask = attn_pool_mask & key_pad_mask[:, None, :]
        attn_pool_mask = attn_pool_mask[:, None]
        x = self.attn_pool(queries, context=x, attn_mask=attn_pool_mask) + queries
        x = x.reshape(-1, x.shape[-1])
        is_images = (image_id_arange[None, :] < num_images[:, None]).reshape(-1)
        x = x[is_images]
        x = self.to_latent(x)
        logits = self.mlp_head(x)

        # the groups keep input order; order[] says so, and stages are given in input order
        assert order == sorted(order)
        if stages is not None:
            stages["pooled"] = x
            per_image = []
            for s, seq_ids in enumerate(batched_image_ids):
                n_real = int(lengths[s])
                for j in range(int(num_images[s])):
                    rows = (seq_ids[:n_real] == j).nonzero().flatten()
                    per_image.append(hidden[s, rows])
            stages["hidden"] = torch.cat(per_image, dim=0)
        return logits


# --- the reference cases ---------------------------------------------------------------------------------

MODELS = {
    "navit": dict(image_size=(32, 40), patch_size=4, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64,
                  channels=3, dim_head=12),
    "navit_gray": dict(image_size=(16, 16), patch_size=4, num_classes=3, dim=24, depth=1, heads=2, mlp_dim=40,
                       channels=1, dim_head=8),
}
# (H, W) of each input: several resolutions, non-square both ways, one a single patch, one the full tables.
IMAGES = {
    "navit": [(8, 12), (32, 40), (4, 4), (16, 8), (12, 28), (20, 20), (28, 16)],
    "navit_gray": [(16, 16), (4, 8), (12, 4), (8, 8)],
}
# group_max_seq_len: navit packs 6 + 80 + 1 + 8 = 95 | 21 + 25 + 28 = 74 into two sequences.
GROUP = {"navit": 96, "navit_gray": 20}
DROP = 0.5  # the dropping case keeps max(1, int(n * (1 - DROP))) tokens of each navit image


def randomize(model, gen):
    """Every tensor of the state dict drawn in float32: gammas in [0.5, 1.5] and betas N(0, 0.2) (the beta
    buffers too, so that a loader skipping them shows), matrices N(0, 1 / fan_in), biases N(0, 0.1), position
    tables and the pooling query N(0, 0.5)."""
    def f32(shape, scale=1.0, lo=None, hi=None):
        if lo is not None:
            t = lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float32)
        else:
            t = torch.randn(*shape, generator=gen, dtype=torch.float32) * scale
        return t.double()

    model = model.double()
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":
                t.copy_(f32(t.shape, lo=0.5, hi=1.5))
            elif leaf == "beta":
                t.copy_(f32(t.shape, scale=0.2))
            elif leaf == "weight":
                t.copy_(f32(t.shape, scale=t.shape[1] ** -0.5))
            elif leaf == "bias":
                t.copy_(f32(t.shape, scale=0.1))
            else:
                t.copy_(f32(t.shape, scale=0.5))
    return model.eval()


def main():
    torch.manual_seed(0)
    out = family_dir(FAMILY)
    gen = generator(505)
    for name, cfg in MODELS.items():
        model = randomize(NaViT(**cfg), gen)
        state = OrderedDict((k, v.detach().float()) for k, v in model.state_dict().items())
        write_safetensors(os.path.join(out, name + ".safetensors"), state, metadata={"format": "pt"})
        images = []
        for i, (h, w) in enumerate(IMAGES[name]):
            im = torch.randn(cfg["channels"], h, w, generator=gen, dtype=torch.float32)
            save(FAMILY, f"{name}_image_{i}", im)
            images.append(im.double())
        with torch.no_grad():
            stages = {}
            logits = model(images, group_max_seq_len=GROUP[name], stages=stages)
            # Packing must not change any image's result: each image alone gives the same logits.
            alone = torch.cat([model([im], group_max_seq_len=GROUP[name]) for im in images])
            assert torch.allclose(logits, alone, rtol=0, atol=1e-12), (logits - alone).abs().max()
        save(FAMILY, name + "_logits", logits)
        save(FAMILY, name + "_pooled", stages["pooled"])
        save(FAMILY, name + "_hidden", stages["hidden"])
        print(f"{name}: logits {tuple(logits.shape)}, hidden {tuple(stages['hidden'].shape)}")

        if name == "navit":
            keep = []
            for i, im in enumerate(images):
                n = (im.shape[-2] // cfg["patch_size"]) * (im.shape[-1] // cfg["patch_size"])
                k = max(1, int(n * (1 - DROP)))
                keep.append(torch.randn(n, generator=gen).topk(k).indices)  # na_vit's choice, from our generator
                save(FAMILY, f"navit_drop_keep_{i}", keep[-1].double())
            with torch.no_grad():
                drop = model(images, group_max_seq_len=GROUP[name], keep=keep)
            save(FAMILY, "navit_drop_logits", drop)

    cfg = MODELS["navit_gray"]
    with open(os.path.join(out, "navit_gray_config.json"), "w") as f:
        json.dump({"hidden_size": cfg["dim"], "num_attention_heads": cfg["heads"], "num_hidden_layers": cfg["depth"],
                   "intermediate_size": cfg["mlp_dim"], "num_channels": cfg["channels"],
                   "patch_size": cfg["patch_size"], "image_size": list(cfg["image_size"])}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
