"""CLIP and SigLIP losses with every gradient (autograd, float64), l2 normalisation and its backward, zero-shot
scores: the straightforward PyTorch formulations that fovea's streamed versions must reproduce.

    clip:   loss = (cross_entropy(L, arange(B)) + cross_entropy(L.T, arange(B))) / 2,  L = scale * image @ text.T
    siglip: loss = -logsigmoid(z * L).sum() / B,  L = scale * image @ text.T + bias,  z = 2 * eye(B) - 1
"""
import torch
import torch.nn.functional as F

from refutil import generator, randn, save

FAMILY = "loss"


def f32(x):
    """A float64 tensor holding exactly the float32 value the C++ test reads."""
    return torch.as_tensor(x, dtype=torch.float64).float().double()


def embeddings(gen, b, d, unit, scale=1.0):
    x = randn(gen, b, d, scale=scale)
    if unit:
        x = F.normalize(x, dim=1)
    return x.float().double()  # saved as float32: the reference starts from those values


def clip_case(name, gen, b, d, scale, unit):
    image, text = embeddings(gen, b, d, unit), embeddings(gen, b, d, unit)
    s = f32(scale)
    image.requires_grad_(True)
    text.requires_grad_(True)
    s.requires_grad_(True)
    logits = s * image @ text.T
    labels = torch.arange(b)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    save(FAMILY, name + "_image", image.detach().float())
    save(FAMILY, name + "_text", text.detach().float())
    save(FAMILY, name + "_scale", s.detach().float().reshape(1))
    save(FAMILY, name + "_loss", loss.detach().reshape(1))
    save(FAMILY, name + "_grad_image", image.grad)
    save(FAMILY, name + "_grad_text", text.grad)
    save(FAMILY, name + "_grad_scale", s.grad.reshape(1))


def siglip_case(name, gen, b, d, scale, bias, unit):
    image, text = embeddings(gen, b, d, unit), embeddings(gen, b, d, unit)
    s, t = f32(scale), f32(bias)
    for v in (image, text, s, t):
        v.requires_grad_(True)
    logits = s * image @ text.T + t
    z = 2 * torch.eye(b, dtype=torch.float64) - 1
    loss = -F.logsigmoid(z * logits).sum() / b
    loss.backward()
    save(FAMILY, name + "_image", image.detach().float())
    save(FAMILY, name + "_text", text.detach().float())
    save(FAMILY, name + "_scale", s.detach().float().reshape(1))
    save(FAMILY, name + "_bias", t.detach().float().reshape(1))
    save(FAMILY, name + "_loss", loss.detach().reshape(1))
    save(FAMILY, name + "_grad_image", image.grad)
    save(FAMILY, name + "_grad_text", text.grad)
    save(FAMILY, name + "_grad_scale", s.grad.reshape(1))
    save(FAMILY, name + "_grad_bias", t.grad.reshape(1))


def normalize_case(name, gen, b, d, eps):
    x = randn(gen, b, d)
    x[1] = 0  # a zero row: below eps, divided by eps
    x[2] *= 1e-13  # a tiny row: below the default eps too
    x[3] *= 0.9 * eps / x[3].norm()  # just below a large eps, or tiny for the default one
    if b > 4:
        x[4] *= 1e6
    x = x.float().double().requires_grad_(True)
    g = randn(gen, b, d).float().double()
    y = F.normalize(x, p=2.0, dim=1, eps=eps)
    y.backward(g)
    save(FAMILY, name + "_x", x.detach().float())
    save(FAMILY, name + "_grad_y", g.float())
    save(FAMILY, name + "_y", y.detach())
    save(FAMILY, name + "_grad_x", x.grad)


def zero_shot_case(name, gen, n, c, d, scale, bias):
    image, classes = embeddings(gen, n, d, True), embeddings(gen, c, d, True)
    s, t = f32(scale), f32(bias)
    logits = s * image @ classes.T
    save(FAMILY, name + "_image", image.float())
    save(FAMILY, name + "_classes", classes.float())
    save(FAMILY, name + "_clip", torch.softmax(logits, dim=1))
    save(FAMILY, name + "_siglip", torch.sigmoid(logits + t))


def main():
    gen = generator(2024)
    # B = 1, B > D, odd B, CLIP's usual scale on unit vectors, un-normalised embeddings.
    clip_case("clip_b1", gen, 1, 8, 10.0, True)
    clip_case("clip_b5_d3", gen, 5, 3, 2.5, False)
    clip_case("clip_b7_d16", gen, 7, 16, 1 / 0.07, True)
    clip_case("clip_b33_d12", gen, 33, 12, 100.0, True)
    clip_case("clip_b64_d24", gen, 64, 24, 3.0, False)
    siglip_case("siglip_b1", gen, 1, 8, 10.0, -10.0, True)
    siglip_case("siglip_b5_d3", gen, 5, 3, 2.5, 0.5, False)
    siglip_case("siglip_b7_d16", gen, 7, 16, 10.0, -10.0, True)
    siglip_case("siglip_b33_d12", gen, 33, 12, 100.0, -5.0, True)
    siglip_case("siglip_b64_d24", gen, 64, 24, 3.0, 2.0, False)
    normalize_case("normalize_default", gen, 6, 5, 1e-12)
    normalize_case("normalize_eps", gen, 9, 7, 0.5)
    zero_shot_case("zero_shot_5x7", gen, 5, 7, 8, 100.0, -5.0)
    zero_shot_case("zero_shot_3x1", gen, 3, 1, 4, 10.0, 2.0)
