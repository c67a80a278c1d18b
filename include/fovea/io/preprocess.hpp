#pragma once
// Image preprocessing that reproduces each model family's own processor: PIL's resampling to the uint8 value,
// the families' resize-size and crop-offset rules, then rescale and normalise in float32 as they do.
//
//   resize        Pillow 9.4 Image.resize on an "RGB" image (src/libImaging/Resample.c, _imaging.c _resize,
//                 Geometry.c ImagingScaleAffine for NEAREST)
//   center_crop   torchvision's or Hugging Face's offset rounding (they differ)
//   to_tensor     uint8 (H, W, 3) -> float (1, 3, H, W), (x / 255 - mean) / std in float32
//   preprocess_clip / _siglip / _torchvision / _timm   the families' eval pipelines
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/image.hpp"

// PIL computes its filter weights without fused multiply-add (its x86-64 builds); contracting a * b + c into
// one FMA (GCC does under -march=native) can round a weight differently and, rarely, move its 22-bit
// fixed-point value by one. 400 random resizes matched PIL with and without this; it guards the rare case.
#if defined(__clang__)
#define FOVEA_NO_FP_CONTRACT
#define FOVEA_NO_FP_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define FOVEA_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#define FOVEA_NO_FP_CONTRACT_BODY
#else
#define FOVEA_NO_FP_CONTRACT
#define FOVEA_NO_FP_CONTRACT_BODY
#endif

namespace fovea {

// PIL's filters (PIL.Image.Resampling). bicubic is Keys' cubic with a = -0.5; lanczos has 3 lobes.
enum class Resample { nearest, box, bilinear, hamming, bicubic, lanczos };

inline const char* resample_name(Resample r) {
  switch (r) {
    case Resample::nearest: return "nearest";
    case Resample::box: return "box";
    case Resample::bilinear: return "bilinear";
    case Resample::hamming: return "hamming";
    case Resample::bicubic: return "bicubic";
    case Resample::lanczos: return "lanczos";
  }
  return "unknown";
}

// How center_crop rounds an odd margin.
//   half_even  torchvision: top = int(round((H - h) / 2.0)), Python's round-half-to-even
//   floor      Hugging Face image_transforms.center_crop: top = (H - h) // 2
enum class CropRounding { half_even, floor };

inline constexpr std::array<float, 3> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};
inline constexpr std::array<float, 3> kImagenetMean = {0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImagenetStd = {0.229f, 0.224f, 0.225f};
inline constexpr std::array<float, 3> kHalfMean = {0.5f, 0.5f, 0.5f};  // SigLIP, timm's "inception" ViTs
inline constexpr std::array<float, 3> kHalfStd = {0.5f, 0.5f, 0.5f};

namespace detail {

// --- PIL's filters, term for term (Resample.c), so the double weights round as PIL's do. ---
constexpr double kPilPi = 3.14159265358979323846;  // M_PI, which not every platform defines
FOVEA_NO_FP_CONTRACT inline double pil_box(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}
FOVEA_NO_FP_CONTRACT inline double pil_bilinear(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
FOVEA_NO_FP_CONTRACT inline double pil_hamming(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPilPi;
  // PIL writes the window's constants as float literals.
  return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
}
FOVEA_NO_FP_CONTRACT inline double pil_bicubic(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
FOVEA_NO_FP_CONTRACT inline double pil_sinc(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  if (x == 0.0) return 1.0;
  x = x * kPilPi;
  return std::sin(x) / x;
}
FOVEA_NO_FP_CONTRACT inline double pil_lanczos(double x) {
  FOVEA_NO_FP_CONTRACT_BODY
  return (-3.0 <= x && x < 3.0) ? pil_sinc(x) * pil_sinc(x / 3) : 0.0;
}

struct PilFilter {
  double (*f)(double);
  double support;
};

inline PilFilter pil_filter(Resample r) {
  switch (r) {
    case Resample::box: return {pil_box, 0.5};
    case Resample::bilinear: return {pil_bilinear, 1.0};
    case Resample::hamming: return {pil_hamming, 1.0};
    case Resample::bicubic: return {pil_bicubic, 2.0};
    case Resample::lanczos: return {pil_lanczos, 3.0};
    case Resample::nearest: break;
  }
  throw_shape("resize: no convolution filter for ", resample_name(r));
}

// PIL keeps 8 bits for the value, 2 for overshoot and sign, 22 for the fraction.
constexpr int kPilPrecisionBits = 32 - 8 - 2;

// One axis of a resize: output i reads `count[i]` inputs from `first[i]` with fixed-point weights
// k[i * ksize + j]. Built like PIL's precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size).
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> k;
};

// Only outputs [out0, out0 + n) (all by default) are computed, at indices from 0: each output's weights depend on
// its own index alone, so a window of a resize needs only its own.
FOVEA_NO_FP_CONTRACT inline AxisCoeffs pil_axis_coeffs(int in_size, int out_size, const PilFilter& filter,
                                                       int out0 = 0, int n = -1) {
  FOVEA_NO_FP_CONTRACT_BODY
  if (n < 0) n = out_size - out0;
  const float in0 = 0.0f, in1 = float(in_size);
  double filterscale, scale;
  filterscale = scale = double(in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;  // upscaling: the filter keeps its own width
  const double support = filter.support * filterscale;  // downscaling widens it: PIL's antialias
  AxisCoeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(std::size_t(n));
  c.count.resize(std::size_t(n));
  c.k.assign(std::size_t(n) * std::size_t(c.ksize), 0);
  std::vector<double> w(std::size_t(c.ksize));
  for (int xx = out0; xx < out0 + n; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // truncation toward zero, as PIL's (int) cast
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double v = filter.f((x + xmin - center + 0.5) * ss);
      w[std::size_t(x)] = v;
      ww += v;
    }
    std::int32_t* k = c.k.data() + std::size_t(xx - out0) * std::size_t(c.ksize);
    for (int x = 0; x < xmax; ++x) {
      double v = w[std::size_t(x)];
      if (ww != 0.0) v /= ww;
      const double scaled = v * double(1 << kPilPrecisionBits);
      k[x] = v < 0 ? std::int32_t(-0.5 + scaled) : std::int32_t(0.5 + scaled);
    }
    c.first[std::size_t(xx - out0)] = xmin;
    c.count[std::size_t(xx - out0)] = xmax;
  }
  return c;
}

inline std::uint8_t pil_clip8(std::int32_t acc) {
  const std::int32_t v = acc >> kPilPrecisionBits;  // arithmetic shift: PIL floors negative sums the same way
  return std::uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over rows [row0, row0 + out.height) of `in`.
inline void pil_resample_rows(const Image& in, Index row0, const AxisCoeffs& c, Image& out, const Context& ctx) {
  const Index W = out.width;
  ctx.parallel_range(out.height, 8, [&](Index y0, Index y1) {
    for (Index y = y0; y < y1; ++y) {
      const std::uint8_t* src = in.row(y + row0);
      std::uint8_t* dst = out.row(y);
      for (Index xx = 0; xx < W; ++xx) {
        const std::int32_t* k = c.k.data() + xx * c.ksize;
        const std::uint8_t* s = src + Index(c.first[std::size_t(xx)]) * 3;
        std::int32_t s0 = 1 << (kPilPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0, n = c.count[std::size_t(xx)]; x < n; ++x) {
          s0 += std::int32_t(s[3 * x + 0]) * k[x];
          s1 += std::int32_t(s[3 * x + 1]) * k[x];
          s2 += std::int32_t(s[3 * x + 2]) * k[x];
        }
        dst[3 * xx + 0] = pil_clip8(s0);
        dst[3 * xx + 1] = pil_clip8(s1);
        dst[3 * xx + 2] = pil_clip8(s2);
      }
    }
  });
}

// Vertical pass; c.first is relative to row 0 of `in`.
inline void pil_resample_cols(const Image& in, const AxisCoeffs& c, Image& out, const Context& ctx) {
  const Index n = out.width * 3;
  ctx.parallel_range(out.height, 8, [&](Index y0, Index y1) {
    std::vector<std::int32_t> acc(static_cast<std::size_t>(n));
    for (Index yy = y0; yy < y1; ++yy) {
      const std::int32_t* k = c.k.data() + yy * c.ksize;
      std::fill(acc.begin(), acc.end(), std::int32_t(1) << (kPilPrecisionBits - 1));
      for (int y = 0, m = c.count[std::size_t(yy)]; y < m; ++y) {
        const std::uint8_t* s = in.row(Index(c.first[std::size_t(yy)]) + y);
        const std::int32_t ky = k[y];
        for (Index i = 0; i < n; ++i) acc[std::size_t(i)] += std::int32_t(s[i]) * ky;
      }
      std::uint8_t* dst = out.row(yy);
      for (Index i = 0; i < n; ++i) dst[i] = pil_clip8(acc[std::size_t(i)]);
    }
  });
}

// PIL's NEAREST: an affine scale whose source position advances by repeated addition (Geometry.c
// ImagingScaleAffine), so the accumulated rounding is PIL's too. Outputs [out0, out0 + n), at indices from 0.
inline std::vector<Index> pil_nearest_index(Index in_size, Index out_size, Index out0 = 0, Index n = -1) {
  if (n < 0) n = out_size - out0;
  const double a = double(float(in_size) - 0.0f) / double(out_size);
  std::vector<Index> idx(std::size_t(n), -1);
  double pos = 0.0 + a * 0.5;
  for (Index i = 0; i < out0 + n; ++i) {
    const Index v = pos < 0.0 ? -1 : Index(pos);
    if (i >= out0 && v >= 0 && v < in_size) idx[std::size_t(i - out0)] = v;
    pos += a;
  }
  return idx;
}

inline void check_image(const Image& img, const char* op) {
  if (img.height < 0 || img.width < 0 || img.pixels.size() != std::size_t(img.height * img.width * 3))
    throw_shape(op, ": image ", size2_str(img.size()), " holds ", img.pixels.size(), " bytes, expected height * width * 3 = ",
                img.height * img.width * 3);
  if (img.empty()) throw_shape(op, ": expected a non-empty image, got ", size2_str(img.size()));
}

// int(round(d / 2.0)) in Python: halves go to the even neighbour.
inline Index half_even_half(Index d) {
  const Index q = d / 2;
  return (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
}

// Where a centred crop of `crop` starts in an image of `in` (top, left), rounded as each library does.
inline Size2 crop_origin(Size2 in, Size2 crop, CropRounding rounding) {
  const Index dh = in.h - crop.h, dw = in.w - crop.w;
  if (rounding == CropRounding::floor) return {dh / 2, dw / 2};
  return {half_even_half(dh), half_even_half(dw)};
}

}  // namespace detail

namespace detail {

// The window (win.h, win.w) at (top, left) of resize(img, size, resample), computed alone: PIL derives every
// output pixel from its own row and column weights, so the window equals the same pixels of the whole resize.
// Preprocessing crops right after resizing; computing only the crop keeps its memory and time to the crop's,
// whatever the image's aspect ratio makes the whole resize (a 1 x 3000 image resized so its short side is 224
// would be 224 x 672000). The caller checks the window lies inside `size`.
inline Image resize_window(const Image& img, Size2 size, Index top, Index left, Size2 win, Resample resample,
                           const Context& ctx) {
  Image out(win.h, win.w);
  if (size == img.size()) {  // PIL copies
    for (Index y = 0; y < win.h; ++y)
      std::memcpy(out.row(y), img.row(top + y) + left * 3, std::size_t(win.w * 3));
    return out;
  }
  if (resample == Resample::nearest) {
    const std::vector<Index> xs = pil_nearest_index(img.width, size.w, left, win.w);
    const std::vector<Index> ys = pil_nearest_index(img.height, size.h, top, win.h);
    ctx.parallel_range(win.h, 16, [&](Index y0, Index y1) {
      for (Index y = y0; y < y1; ++y) {
        if (ys[std::size_t(y)] < 0) continue;  // PIL leaves unmapped pixels at 0
        const std::uint8_t* src = img.row(ys[std::size_t(y)]);
        std::uint8_t* dst = out.row(y);
        for (Index x = 0; x < win.w; ++x) {
          const Index sx = xs[std::size_t(x)];
          if (sx < 0) continue;
          dst[3 * x] = src[3 * sx];
          dst[3 * x + 1] = src[3 * sx + 1];
          dst[3 * x + 2] = src[3 * sx + 2];
        }
      }
    });
    return out;
  }

  const PilFilter filter = pil_filter(resample);
  const bool need_h = size.w != img.width, need_v = size.h != img.height;
  if (!need_v) {  // PIL skips the vertical pass: the window's rows, horizontal pass only
    const AxisCoeffs horiz = pil_axis_coeffs(int(img.width), int(size.w), filter, int(left), int(win.w));
    pil_resample_rows(img, top, horiz, out, ctx);
    return out;
  }
  AxisCoeffs vert = pil_axis_coeffs(int(img.height), int(size.h), filter, int(top), int(win.h));
  if (!need_h) {  // PIL skips the horizontal pass: the window's columns, vertical pass only
    Image cols(img.height, win.w);
    for (Index y = 0; y < img.height; ++y)
      std::memcpy(cols.row(y), img.row(y) + left * 3, std::size_t(win.w * 3));
    pil_resample_cols(cols, vert, out, ctx);
    return out;
  }
  // Only the source rows the vertical pass reads go through the horizontal pass.
  const int row0 = vert.first.front();
  const int row1 = vert.first.back() + vert.count.back();
  const AxisCoeffs horiz = pil_axis_coeffs(int(img.width), int(size.w), filter, int(left), int(win.w));
  for (int& f : vert.first) f -= row0;
  Image tmp(row1 - row0, win.w);
  pil_resample_rows(img, row0, horiz, tmp, ctx);
  pil_resample_cols(tmp, vert, out, ctx);
  return out;
}

inline void check_resize(const Image& img, Size2 size, const char* op) {
  check_image(img, op);
  if (size.h < 1 || size.w < 1)
    throw_shape(op, ": expected an output size >= 1, got ", size2_str(size), " for image ", size2_str(img.size()));
  // PIL's coefficients and positions are ints.
  if (size.h > 0x7fffffff || size.w > 0x7fffffff || img.height > 0x7fffffff || img.width > 0x7fffffff)
    throw_shape(op, ": output ", size2_str(size), " or image ", size2_str(img.size()), " has a side over 2^31 - 1");
}

}  // namespace detail

// (H, W, 3) -> (size.h, size.w, 3). PIL's Image.resize((w, h), resample) on an "RGB" image, to the uint8 value:
// separable, horizontal pass first, each pass rounded to 8 bits with PIL's 22-bit fixed-point weights; on a
// downscale the filter support widens by the scale factor (PIL's antialiasing).
inline Image resize(const Image& img, Size2 size, Resample resample = Resample::bicubic,
                    const Context& ctx = default_context()) {
  detail::check_resize(img, size, "resize");
  if (size.h > kDefaultMaxImagePixels / size.w)
    detail::throw_shape("resize: output ", detail::size2_str(size), " from image ", detail::size2_str(img.size()),
                        " exceeds ", kDefaultMaxImagePixels, " pixels");
  if (size == img.size()) return img;  // PIL copies
  return detail::resize_window(img, size, 0, 0, size, resample, ctx);
}

// torchvision's and Hugging Face's shortest-edge rule: the short side becomes `size`, the long side
// int(size * long / short) (truncated, not rounded). Returns (height, width).
inline Size2 shortest_edge_size(Size2 in, Index size) {
  if (in.h < 1 || in.w < 1 || size < 1)
    detail::throw_shape("shortest_edge_size: expected an image and a size >= 1, got image ", detail::size2_str(in),
                        " and size ", size);
  const Index short_side = std::min(in.h, in.w), long_side = std::max(in.h, in.w);
  const Index new_long = Index(double(size * long_side) / double(short_side));
  return in.w <= in.h ? Size2(new_long, size) : Size2(size, new_long);
}

// (H, W, 3) -> (size.h, size.w, 3), centred; the crop must fit inside the image (torchvision and Hugging Face
// zero-pad instead; no family preset needs that).
inline Image center_crop(const Image& img, Size2 size, CropRounding rounding = CropRounding::half_even) {
  detail::check_image(img, "center_crop");
  if (size.h < 1 || size.w < 1)
    detail::throw_shape("center_crop: expected a crop size >= 1, got ", detail::size2_str(size), " for image ",
                        detail::size2_str(img.size()));
  if (size.h > img.height || size.w > img.width)
    detail::throw_shape("center_crop: crop ", detail::size2_str(size), " is larger than the image ",
                        detail::size2_str(img.size()));
  const Size2 at = detail::crop_origin(img.size(), size, rounding);
  Image out(size.h, size.w);
  for (Index y = 0; y < size.h; ++y)
    std::memcpy(out.row(y), img.row(at.h + y) + at.w * 3, std::size_t(size.w * 3));
  return out;
}

// center_crop(resize(img, size, resample), crop, rounding), computing only the crop (see detail::resize_window):
// equal pixel for pixel, at the crop's cost whatever the resize's size.
inline Image resize_center_crop(const Image& img, Size2 size, Size2 crop, Resample resample = Resample::bicubic,
                                CropRounding rounding = CropRounding::half_even,
                                const Context& ctx = default_context()) {
  detail::check_resize(img, size, "resize_center_crop");
  if (crop.h < 1 || crop.w < 1 || crop.h > size.h || crop.w > size.w)
    detail::throw_shape("resize_center_crop: expected a crop size >= 1 and within the resized ",
                        detail::size2_str(size), ", got ", detail::size2_str(crop), " for image ",
                        detail::size2_str(img.size()));
  const Size2 at = detail::crop_origin(size, crop, rounding);
  return detail::resize_window(img, size, at.h, at.w, crop, resample, ctx);
}

// (H, W, 3) uint8 -> (1, 3, H, W) float: (x / 255 - mean[c]) / std[c], every step in float32 as torchvision's
// ToTensor + Normalize and Hugging Face's rescale + normalize compute it (both give the same float for each of
// the 256 values, so one table serves both).
inline Tensor<float, 4> to_tensor(const Image& img, const std::array<float, 3>& mean = {0.f, 0.f, 0.f},
                                  const std::array<float, 3>& std = {1.f, 1.f, 1.f},
                                  const Context& ctx = default_context()) {
  detail::check_image(img, "to_tensor");
  for (int c = 0; c < 3; ++c)
    if (!(std[std::size_t(c)] != 0.f) || !std::isfinite(std[std::size_t(c)]) || !std::isfinite(mean[std::size_t(c)]))
      detail::throw_shape("to_tensor: expected finite mean and non-zero finite std, got mean (", mean[0], ", ",
                          mean[1], ", ", mean[2], "), std (", std[0], ", ", std[1], ", ", std[2], ")");
  float table[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      const float x = float(v) / 255.f;
      table[c][v] = (x - mean[std::size_t(c)]) / std[std::size_t(c)];
    }
  const Index H = img.height, W = img.width;
  Tensor<float, 4> out(1, 3, H, W);
  float* o = out.data();
  ctx.parallel_range(H, 32, [&](Index y0, Index y1) {
    for (Index y = y0; y < y1; ++y) {
      const std::uint8_t* s = img.row(y);
      for (int c = 0; c < 3; ++c) {
        float* d = o + (c * H + y) * W;
        for (Index x = 0; x < W; ++x) d[x] = table[c][s[3 * x + c]];
      }
    }
  });
  return out;
}

namespace detail {
inline void check_preset_size(const char* op, const char* what, Index v, const Image& img) {
  if (v < 1) throw_shape(op, ": expected ", what, " >= 1, got ", v, "; image ", size2_str(img.size()));
}
}  // namespace detail

// (H, W, 3) -> (1, 3, size, size). Hugging Face CLIPImageProcessor defaults (image_processing_clip.py):
// resize the shortest edge to `size` (bicubic, PIL, on uint8), center crop size x size ((H - h) // 2),
// rescale 1/255, normalise with OpenAI CLIP's mean and std.
inline Tensor<float, 4> preprocess_clip(const Image& image, int size = 224, const Context& ctx = default_context()) {
  detail::check_image(image, "preprocess_clip");
  detail::check_preset_size("preprocess_clip", "size", size, image);
  const Image r = resize_center_crop(image, shortest_edge_size(image.size(), size), size, Resample::bicubic,
                                     CropRounding::floor, ctx);
  return to_tensor(r, kClipMean, kClipStd, ctx);
}

// (H, W, 3) -> (1, 3, size, size). Hugging Face SiglipImageProcessor defaults (image_processing_siglip.py):
// resize to size x size (bicubic, PIL, aspect ratio not kept), rescale 1/255, mean = std = 0.5.
inline Tensor<float, 4> preprocess_siglip(const Image& image, int size = 224, const Context& ctx = default_context()) {
  detail::check_image(image, "preprocess_siglip");
  detail::check_preset_size("preprocess_siglip", "size", size, image);
  return to_tensor(resize(image, Size2(size, size), Resample::bicubic, ctx), kHalfMean, kHalfStd, ctx);
}

// (H, W, 3) -> (1, 3, crop, crop). torchvision's ImageNet eval transform on a PIL image (the classification
// weights' transforms(), e.g. ResNet50 and ViT_B_16 IMAGENET1K_V1): Resize(resize) of the shortest edge with
// PIL's filter, CenterCrop(crop), ToTensor, Normalize(ImageNet mean, std).
inline Tensor<float, 4> preprocess_torchvision(const Image& image, int resize_size = 256, int crop = 224,
                                               Resample interpolation = Resample::bilinear,
                                               const Context& ctx = default_context()) {
  detail::check_image(image, "preprocess_torchvision");
  detail::check_preset_size("preprocess_torchvision", "resize", resize_size, image);
  detail::check_preset_size("preprocess_torchvision", "crop", crop, image);
  if (crop > resize_size)
    detail::throw_shape("preprocess_torchvision: expected crop <= resize, got crop ", crop, " and resize ", resize_size,
                        "; image ", detail::size2_str(image.size()));
  const Image r = resize_center_crop(image, shortest_edge_size(image.size(), resize_size), crop, interpolation,
                                     CropRounding::half_even, ctx);
  return to_tensor(r, kImagenetMean, kImagenetStd, ctx);
}

// (H, W, 3) -> (1, 3, img_size, img_size). timm's transforms_imagenet_eval (transforms_factory.py, crop_mode
// "center"): Resize(floor(img_size / crop_pct)) of the shortest edge, CenterCrop(img_size), ToTensor,
// Normalize(mean, std). The defaults are vit_base_patch16_224's pretrained config: crop_pct 0.9, bicubic,
// mean = std = 0.5; for timm models with ImageNet statistics pass kImagenetMean / kImagenetStd.
inline Tensor<float, 4> preprocess_timm(const Image& image, int img_size = 224, double crop_pct = 0.9,
                                        Resample interpolation = Resample::bicubic,
                                        const std::array<float, 3>& mean = kHalfMean,
                                        const std::array<float, 3>& std = kHalfStd,
                                        const Context& ctx = default_context()) {
  detail::check_image(image, "preprocess_timm");
  detail::check_preset_size("preprocess_timm", "img_size", img_size, image);
  if (!(crop_pct > 0.0 && crop_pct <= 1.0))
    detail::throw_shape("preprocess_timm: expected 0 < crop_pct <= 1, got ", crop_pct, "; image ",
                        detail::size2_str(image.size()));
  const Index scale_size = Index(std::floor(double(img_size) / crop_pct));
  const Image r = resize_center_crop(image, shortest_edge_size(image.size(), scale_size), img_size, interpolation,
                                     CropRounding::half_even, ctx);
  return to_tensor(r, mean, std, ctx);
}

}  // namespace fovea

#undef FOVEA_NO_FP_CONTRACT
#undef FOVEA_NO_FP_CONTRACT_BODY
