"""Images, PIL decodes, PIL resizes and each family's preprocessing (tests/io/test_image.cpp, test_preprocess.cpp).

Everything here is what the reference libraries produce, run on images generated below:
- decode_<file>: PIL's Image.open(f).convert("RGB") as uint8 (H, W, 3); for the two largest PNGs only the
  CRC-32 of each decoded row (decode_<file>_rowcrc, float64 (H,)) to keep the data small.
- resize_<src>_<h>x<w>_<filter>: PIL's Image.resize((w, h), filter) of the decoded RGB image, uint8 (h, w, 3).
- <family>_<src>_<size>: the float32 (1, 3, H, W) a family's own pipeline returns for the decoded RGB image:
  clip    HF CLIPImageProcessor (rebuilt below from transformers' image_transforms: transformers is not installed)
  siglip  HF SiglipImageProcessor (same)
  tv      torchvision Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize(ImageNet) on the PIL image
  timm    timm transforms_imagenet_eval (rebuilt from timm's transforms_factory with torchvision transforms)
  The default-size (224) outputs are saved every s-th row and column (<name>_s<s>) to stay under 1 MB.
The float outputs stay float32: that is the precision these pipelines compute in, so they are the exact truth.
uint8 arrays are saved as '|u1' .npy (the C++ test parses the header with fovea's .npy parser).
"""
import io
import math
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from refutil import family_dir

FAMILY = "image"
D = None  # set in main()

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def path(name):
    return os.path.join(D, name)


def save_u8(name, a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    np.save(path(name + ".npy"), a)


def save_f32(name, a):
    np.save(path(name + ".npy"), np.ascontiguousarray(a, dtype=np.float32))


def save_f64(name, a):
    np.save(path(name + ".npy"), np.ascontiguousarray(a, dtype=np.float64))


# --- images ---------------------------------------------------------------------------------------------

def png_bytes(w, h, color_type, depth, rows):
    """A minimal PNG (PIL cannot write 16-bit RGB): filter 0 on every row, one IDAT."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def make_images(rng):
    """Returns {file name: bytes}. Sizes are W x H as PIL states them."""
    files = {}

    def put_png(name, im):
        b = io.BytesIO()
        im.save(b, format="PNG", optimize=True)
        files[name] = b.getvalue()

    # 37 x 53 grey: horizontal ramp plus strong noise, so every resize tap matters.
    y, x = np.mgrid[0:53, 0:37]
    g = np.clip(x * 6.5 + y * 1.5 + rng.normal(0, 25, (53, 37)), 0, 255).astype(np.uint8)
    put_png("grey_37x53.png", Image.fromarray(g, "L"))

    # 300 x 201 RGB: hard-edged colour blocks, one-pixel lines and noise in one corner (ringing for bicubic and
    # lanczos, clipping at 0 and 255).
    blocks = rng.integers(0, 256, (201 // 9 + 1, 300 // 9 + 1, 3))
    rgb = np.kron(blocks, np.ones((9, 9, 1)))[:201, :300].astype(np.int32)
    rgb[::17, :, :] = 255
    rgb[:, ::23, 1] = 0
    rgb[100:, 150:] += rng.integers(-40, 41, (101, 150, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    put_png("rgb_300x201.png", Image.fromarray(rgb, "RGB"))

    # 257 x 511 RGBA: smooth gradients and a disc with one noisy patch (noise elsewhere would not compress); alpha varies and is 0 in a band whose colour is
    # not black (PIL's convert("RGB") drops alpha and keeps that colour).
    y, x = np.mgrid[0:511, 0:257]
    r = 128 + 100 * np.sin(x / 19.0) * np.cos(y / 31.0)
    gch = (x + y) * 255.0 / (257 + 511)
    b = np.where((x - 128) ** 2 + (y - 300) ** 2 < 70 ** 2, 230.0, 40.0)
    rgba = np.stack([r, gch, b, (y * 255.0 / 510)], -1)
    rgba[400:460, 20:90, :3] += rng.normal(0, 30, (60, 70, 3))
    rgba[200:240, :, 3] = 0
    rgba = np.clip(np.rint(rgba), 0, 255).astype(np.uint8)
    put_png("rgba_257x511.png", Image.fromarray(rgba, "RGBA"))

    # 20 x 30 RGB noise, for upscaling to 224.
    put_png("small_20x30.png", Image.fromarray(rng.integers(0, 256, (30, 20, 3)).astype(np.uint8), "RGB"))

    # Small images in the remaining PNG colour types PIL reads differently.
    la = np.stack([rng.integers(0, 256, (23, 31)), rng.integers(0, 256, (23, 31))], -1).astype(np.uint8)
    put_png("la_31x23.png", Image.fromarray(la, "LA"))
    pal = Image.fromarray(rng.integers(0, 6, (19, 29)).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 10, 17, 99, 201, 0, 0, 0])
    pal.info["transparency"] = 2
    b = io.BytesIO()
    pal.save(b, format="PNG", transparency=2)
    files["pal_29x19.png"] = b.getvalue()
    put_png("bits1_13x11.png", Image.fromarray(rng.integers(0, 2, (11, 13)).astype(bool)))
    # 16-bit: PIL reads grey as mode "I" and clips it to 255 in convert("RGB"); LA and RGB keep the high byte.
    g16 = rng.integers(0, 65536, (7, 11)).astype(">u2")
    g16[0, :4] = [0, 255, 256, 65535]
    files["grey16_11x7.png"] = png_bytes(11, 7, 0, 16, [r_.tobytes() for r_ in g16])
    la16 = rng.integers(0, 65536, (3, 5, 2)).astype(">u2")
    files["la16_5x3.png"] = png_bytes(5, 3, 4, 16, [r_.tobytes() for r_ in la16])
    c16 = rng.integers(0, 65536, (5, 9, 3)).astype(">u2")
    files["rgb16_9x5.png"] = png_bytes(9, 5, 2, 16, [r_.tobytes() for r_ in c16])

    # JPEGs: a photo-like 160 x 120 (4:2:0, quality 90), the grey ramp, a progressive 4:4:4, and CMYK.
    y, x = np.mgrid[0:120, 0:160]
    photo = np.stack([120 + 80 * np.sin(x / 13.0), 60 + 0.9 * y + 30 * np.cos((x + y) / 9.0),
                      200 - 0.8 * x + 20 * np.sin(y / 5.0)], -1) + rng.normal(0, 6, (120, 160, 3))
    photo[40:80, 60:100] = (250, 30, 30)
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)

    def put_jpeg(name, im, **kw):
        b = io.BytesIO()
        im.save(b, format="JPEG", **kw)
        files[name] = b.getvalue()
    put_jpeg("photo_160x120.jpg", Image.fromarray(photo, "RGB"), quality=90)
    # The benchmark's input (bench/bench_preprocess.cpp): a photo-sized 640 x 480 as libjpeg writes it.
    y, x = np.mgrid[0:480, 0:640]
    big = np.stack([128 + 90 * np.sin(x / 37.0) * np.cos(y / 23.0),
                    (x + y) * 255.0 / 1120 + np.where((x // 40 + y // 40) % 2 == 1, 25, -25),
                    60 + 120 * (((x * 7 + y * 13) % 97) / 97.0)], -1) + rng.normal(0, 4, (480, 640, 3))
    put_jpeg("photo_640x480.jpg", Image.fromarray(np.clip(np.rint(big), 0, 255).astype(np.uint8), "RGB"),
             quality=80)
    put_jpeg("grey_37x53.jpg", Image.fromarray(g, "L"), quality=90)
    put_jpeg("prog_64x48.jpg", Image.fromarray(photo[30:78, 40:104], "RGB"), quality=85, progressive=True,
             subsampling=0)
    put_jpeg("cmyk_24x16.jpg", Image.fromarray(photo[:16, :24], "RGB").convert("CMYK"), quality=95)
    return files


def decoded(name):
    return np.array(Image.open(path(name)).convert("RGB"))


# --- the families' pipelines ----------------------------------------------------------------------------

def hf_shortest_edge(h, w, size):
    # transformers.image_transforms.get_resize_output_image_size(default_to_square=False)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def hf_resize(u8, hw, resample):
    # transformers.image_transforms.resize: uint8 goes to PIL unscaled, PIL resizes, back to numpy.
    return np.array(Image.fromarray(u8).resize((hw[1], hw[0]), resample=resample, reducing_gap=None))


def hf_center_crop(u8, hw):
    # transformers.image_transforms.center_crop (the image is never smaller than the crop here).
    top, left = (u8.shape[0] - hw[0]) // 2, (u8.shape[1] - hw[1]) // 2
    assert top >= 0 and left >= 0
    return u8[top:top + hw[0], left:left + hw[1]]


def hf_rescale_normalize(u8, mean, std):
    # rescale: float64 multiply then cast to float32; normalize: float32 (x - mean) / std, channels last.
    x = (u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return x.transpose(2, 0, 1)[None]


def clip_pipeline(u8, size):
    hw = hf_shortest_edge(u8.shape[0], u8.shape[1], size)
    x = hf_resize(u8, hw, Image.Resampling.BICUBIC)
    x = hf_center_crop(x, (size, size))
    return hf_rescale_normalize(x, CLIP_MEAN, CLIP_STD)


def siglip_pipeline(u8, size):
    x = hf_resize(u8, (size, size), Image.Resampling.BICUBIC)
    return hf_rescale_normalize(x, HALF, HALF)


def tv_pipeline(u8, resize, crop):
    t = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(crop), T.ToTensor(),
                   T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return t(Image.fromarray(u8)).numpy()[None]


def timm_pipeline(u8, img_size, crop_pct, mean, std):
    # timm.data.transforms_factory.transforms_imagenet_eval, crop_mode 'center', square img_size.
    scale_size = math.floor(img_size / crop_pct)
    t = T.Compose([T.Resize(scale_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(img_size),
                   T.ToTensor(), T.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))])
    return t(Image.fromarray(u8)).numpy()[None]


def main():
    global D
    D = family_dir(FAMILY)
    for f in os.listdir(D):
        os.remove(os.path.join(D, f))
    rng = np.random.default_rng(20240611)
    files = make_images(rng)
    for name, data in files.items():
        with open(path(name), "wb") as f:
            f.write(data)

    # Decodes.
    for name in files:
        if name == "photo_640x480.jpg":
            continue
        stem = name.replace(".", "_")
        rgb = decoded(name)
        if rgb.size > 60000:
            save_f64("decode_" + stem + "_rowcrc", [zlib.crc32(r.tobytes()) for r in rgb])
        else:
            save_u8("decode_" + stem, rgb)

    # Resizes: downscale, upscale, down in one axis and up in the other, one axis unchanged, large factors.
    cases = [("rgb_300x201.png", (41, 67), list(FILTERS)), ("small_20x30.png", (47, 45), list(FILTERS)),
             ("grey_37x53.png", (20, 50), list(FILTERS)), ("grey_37x53.png", (53, 20), ["bicubic", "nearest"]),
             ("grey_37x53.png", (19, 37), ["bilinear", "nearest"]),
             ("rgba_257x511.png", (37, 29), ["bilinear", "bicubic", "lanczos", "nearest"])]
    for src, (h, w), filters in cases:
        im = Image.open(path(src)).convert("RGB")
        for f in filters:
            save_u8(f"resize_{src.split('.')[0]}_{h}x{w}_{f}", np.array(im.resize((w, h), FILTERS[f])))

    # Family pipelines at small odd sizes (full outputs) on every kind of source.
    for src in ["grey_37x53.png", "rgb_300x201.png", "rgba_257x511.png", "small_20x30.png", "photo_160x120.jpg"]:
        u8, stem = decoded(src), src.split(".")[0] + ("_jpg" if src.endswith(".jpg") else "")
        save_f32(f"clip_{stem}_33", clip_pipeline(u8, 33))
        save_f32(f"siglip_{stem}_29", siglip_pipeline(u8, 29))
        save_f32(f"tv_{stem}_41_35", tv_pipeline(u8, 41, 35))
        save_f32(f"timm_{stem}_31", timm_pipeline(u8, 31, 0.875, IMAGENET_MEAN, IMAGENET_STD))
    # CLIP's floor offset where torchvision's rounding would differ: 37 x 53 -> 35 x 50, margin 15 (7, not 8).
    save_f32("clip_grey_37x53_35", clip_pipeline(decoded("grey_37x53.png"), 35))
    # Defaults (224; timm: vit_base_patch16_224's crop_pct 0.9, bicubic, mean = std = 0.5), every s-th pixel:
    # a portrait and a landscape source, so both branches of the shortest-edge rule run.
    for src, s in [("rgba_257x511.png", 6), ("rgb_300x201.png", 7)]:
        u8, stem = decoded(src), src.split(".")[0]
        save_f32(f"clip_{stem}_224_s{s}", clip_pipeline(u8, 224)[..., ::s, ::s])
        save_f32(f"siglip_{stem}_224_s{s}", siglip_pipeline(u8, 224)[..., ::s, ::s])
        save_f32(f"tv_{stem}_256_224_s{s}", tv_pipeline(u8, 256, 224)[..., ::s, ::s])
        save_f32(f"timm_{stem}_224_s{s}", timm_pipeline(u8, 224, 0.9, HALF, HALF)[..., ::s, ::s])

    total = sum(os.path.getsize(os.path.join(D, f)) for f in os.listdir(D))
    print(f"image: {len(os.listdir(D))} files, {total} bytes")
