#pragma once
// interpolate (F.interpolate with an output size, modes "bicubic" and "bilinear", antialias=False) and
// interpolate_pos_embed, which resizes a ViT's learned position embeddings to a new patch grid.
//
// PyTorch's arithmetic, per output index i of a side of in -> out:
//   scale = align_corners ? (in - 1) / (out - 1) (0 when out == 1) : in / out
//   src   = align_corners ? scale * i : scale * (i + 0.5) - 0.5
//   bicubic: x0 = floor(src), t = src - x0, taps x0 - 1 .. x0 + 2 clamped to [0, in - 1], weights of Keys'
//            cubic convolution with A = -0.75 (src is not clamped: border taps repeat the edge)
//   bilinear: src clamped to >= 0 first (align_corners=False), x0 = floor(src), x1 = min(x0 + 1, in - 1),
//            weights 1 - t, t; a side whose size does not change is copied
// Both are separable, so a 2-D resize runs as a pass along W then along H; the weights are computed in
// double and rounded to T once.
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

enum class InterpMode { bilinear, bicubic };

// Per output index: `taps` input indices and weights, flattened (out x taps).
template <class T>
struct InterpTable {
  Index taps = 0;
  std::vector<Index> index;
  std::vector<T> weight;
};

inline double interp_scale(Index in, Index out, bool align_corners) {
  if (align_corners) return out > 1 ? double(in - 1) / double(out - 1) : 0.0;
  return double(in) / double(out);
}

// Keys' cubic convolution kernel, A = -0.75 (PyTorch's and OpenCV's choice): weights of the taps at
// distances 1 + t, t, 1 - t, 2 - t from the source position.
inline std::array<double, 4> cubic_weights(double t) {
  constexpr double A = -0.75;
  auto near = [](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };       // |x| <= 1
  auto far = [](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
  return {far(t + 1), near(t), near(1 - t), far(2 - t)};
}

template <class T>
InterpTable<T> interp_table(InterpMode mode, Index in, Index out, bool align_corners) {
  InterpTable<T> tab;
  const double scale = interp_scale(in, out, align_corners);
  auto clamp = [in](Index i) { return std::min(std::max(i, Index(0)), in - 1); };
  if (mode == InterpMode::bicubic) {
    tab.taps = 4;
    for (Index i = 0; i < out; ++i) {
      const double src = align_corners ? scale * double(i) : scale * (double(i) + 0.5) - 0.5;
      const double x0 = std::floor(src);
      const auto w = cubic_weights(src - x0);
      for (Index k = 0; k < 4; ++k) {
        tab.index.push_back(clamp(Index(x0) - 1 + k));
        tab.weight.push_back(T(w[std::size_t(k)]));
      }
    }
  } else {
    tab.taps = 2;
    for (Index i = 0; i < out; ++i) {
      if (in == out) {
        tab.index.insert(tab.index.end(), {i, i});
        tab.weight.insert(tab.weight.end(), {T(1), T(0)});
        continue;
      }
      double src = align_corners ? scale * double(i) : scale * (double(i) + 0.5) - 0.5;
      src = std::max(src, 0.0);
      const Index x0 = Index(src);
      const Index x1 = x0 < in - 1 ? x0 + 1 : x0;
      const double t = std::min(std::max(src - double(x0), 0.0), 1.0);
      tab.index.insert(tab.index.end(), {x0, x1});
      tab.weight.insert(tab.weight.end(), {T(1.0 - t), T(t)});
    }
  }
  return tab;
}

// src viewed as (outer, in, inner) -> dst (outer, out, inner) for outer rows [o0, o1):
// dst[o, j, :] = sum_k w[j, k] src[o, idx[j, k], :].
template <class T>
void interp_rows(const T* src, T* dst, Index o0, Index o1, Index in, Index inner, const InterpTable<T>& tab) {
  const Index taps = tab.taps, out = Index(tab.index.size()) / taps;
  for (Index o = o0; o < o1; ++o) {
    const T* s = src + o * in * inner;
    T* d = dst + o * out * inner;
    for (Index j = 0; j < out; ++j) {
      const Index* idx = tab.index.data() + j * taps;
      const T* w = tab.weight.data() + j * taps;
      T* dj = d + j * inner;
      if (inner == 1) {
        T acc = T(0);
        for (Index k = 0; k < taps; ++k) acc += w[k] * s[idx[k]];
        dj[0] = acc;
        continue;
      }
      const T* s0 = s + idx[0] * inner;
      for (Index c = 0; c < inner; ++c) dj[c] = w[0] * s0[c];
      for (Index k = 1; k < taps; ++k) {
        const T* sk = s + idx[k] * inner;
        const T wk = w[k];
        for (Index c = 0; c < inner; ++c) dj[c] += wk * sk[c];
      }
    }
  }
}

// The same over every outer row, spread over the Context.
template <class T>
void interp_pass(const T* src, T* dst, Index outer, Index in, Index inner, const InterpTable<T>& tab, const Context& ctx) {
  const Index work = Index(tab.index.size()) * inner;  // multiply-adds per outer row
  ctx.parallel_range(outer, std::max<Index>(1, (Index(1) << 15) / std::max<Index>(work, 1)),
                     [&](Index o0, Index o1) { interp_rows(src, dst, o0, o1, in, inner, tab); });
}

// The mode's name -> InterpMode, checked before any compute; `shapes` ends the message.
inline InterpMode interp_mode(const char* op, std::string_view mode, const std::string& shapes) {
  if (mode == "bicubic") return InterpMode::bicubic;
  if (mode == "bilinear") return InterpMode::bilinear;
  throw_shape(op, ": expected mode 'bicubic' or 'bilinear', but got '", mode, "'", shapes);
}

// A (rows, in_h, in_w, inner) grid resized to (rows, out_h, out_w, inner) into dst. Many planes (an NCHW
// tensor): one task a plane, both passes through a per-thread buffer that stays in cache. Few planes (a
// position-embedding grid): each pass spread over the threads.
template <class T>
void interp_2d(const T* src, Index rows, Index in_h, Index in_w, Index inner, Index out_h, Index out_w, InterpMode mode,
               bool align_corners, T* dst, const Context& ctx) {
  const auto tw = interp_table<T>(mode, in_w, out_w, align_corners);
  const auto th = interp_table<T>(mode, in_h, out_h, align_corners);
  const Index tmp_plane = in_h * out_w * inner, in_plane = in_h * in_w * inner, out_plane = out_h * out_w * inner;
  if (rows >= 2 * Index(ctx.num_threads())) {
    ctx.parallel_for(rows, [&](Index r) {
      thread_local std::vector<T> tmp;
      if (tmp.size() < std::size_t(tmp_plane)) tmp.resize(std::size_t(tmp_plane));
      interp_rows(src + r * in_plane, tmp.data(), 0, in_h, in_w, inner, tw);               // along W
      interp_rows(tmp.data(), dst + r * out_plane, 0, 1, in_h, out_w * inner, th);         // along H
    });
    return;
  }
  std::unique_ptr<T[]> tmp(new T[std::size_t(rows * tmp_plane)]);
  interp_pass(src, tmp.get(), rows * in_h, in_w, inner, tw, ctx);      // along W
  interp_pass(tmp.get(), dst, rows, in_h, out_w * inner, th, ctx);     // along H
}

}  // namespace detail

// F.interpolate(x (N, C, H, W), size=(out_h, out_w), mode, align_corners) -> (N, C, out_h, out_w); mode
// "bicubic" (A = -0.75, edge taps clamped) or "bilinear", antialias=False.
template <class T>
Tensor<T, 4> interpolate(const Tensor<T, 4>& x, std::array<Index, 2> size, std::string_view mode, bool align_corners = false,
                         const Context& ctx = default_context()) {
  const char* op = "interpolate";
  const std::string shapes = detail::cat("; input ", detail::shape_str(x), ", size (", size[0], ", ", size[1], ")");
  const auto m = detail::interp_mode(op, mode, shapes);
  for (int i = 0; i < 4; ++i)
    if (x.dimension(i) == 0) detail::throw_shape(op, ": expected a non-empty input, but got a zero dimension", shapes);
  if (size[0] < 1 || size[1] < 1)
    detail::throw_shape(op, ": expected an output size >= 1 on both sides, but got (", size[0], ", ", size[1], ")", shapes);
  Tensor<T, 4> out(x.dimension(0), x.dimension(1), size[0], size[1]);
  detail::interp_2d(x.data(), x.dimension(0) * x.dimension(1), x.dimension(2), x.dimension(3), 1, size[0], size[1], m,
                    align_corners, out.data(), ctx);
  return out;
}

// pos (num_prefix_tokens + gh * gw, D), the patch rows laid out on the grid (gh, gw) row-major -> (num_prefix_tokens
// + nh * nw, D): prefix rows (class token, registers) copied unchanged, the grid resized as F.interpolate of
// its (1, D, gh, gw) view (Hugging Face's interpolate_pos_encoding, timm's resample_abs_pos_embed).
template <class T>
Tensor<T, 2> interpolate_pos_embed(const Tensor<T, 2>& pos, Index num_prefix_tokens, Size2 old_grid, Size2 new_grid,
                                   std::string_view mode = "bicubic", bool align_corners = false,
                                   const Context& ctx = default_context()) {
  const char* op = "interpolate_pos_embed";
  const std::string shapes = detail::cat("; pos_embed ", detail::shape_str(pos), ", num_prefix_tokens ", num_prefix_tokens,
                                         ", old_grid ", detail::size2_str(old_grid), ", new_grid ",
                                         detail::size2_str(new_grid));
  const auto m = detail::interp_mode(op, mode, shapes);
  if (num_prefix_tokens < 0)
    detail::throw_shape(op, ": expected num_prefix_tokens >= 0, but got ", num_prefix_tokens, shapes);
  if (old_grid.h < 1 || old_grid.w < 1 || new_grid.h < 1 || new_grid.w < 1)
    detail::throw_shape(op, ": expected grid sides >= 1, but got old_grid ", detail::size2_str(old_grid), " and new_grid ",
                        detail::size2_str(new_grid), shapes);
  if (pos.dimension(0) != num_prefix_tokens + old_grid.h * old_grid.w)
    detail::throw_shape(op, ": expected pos_embed.size(0) == num_prefix_tokens + old_grid h * w (", num_prefix_tokens,
                        " + ", old_grid.h, " * ", old_grid.w, " = ", num_prefix_tokens + old_grid.h * old_grid.w,
                        "), but got ", pos.dimension(0), shapes);
  if (pos.dimension(1) == 0) detail::throw_shape(op, ": expected a non-empty embedding width, but got 0", shapes);
  const Index D = pos.dimension(1), P = num_prefix_tokens;
  Tensor<T, 2> out(P + new_grid.h * new_grid.w, D);
  std::copy(pos.data(), pos.data() + P * D, out.data());
  // The grid is already channels-last (gh, gw, D): resizing it in place of the (D, gh, gw) view needs no
  // transpose, and each pass runs along rows of D contiguous values.
  detail::interp_2d(pos.data() + P * D, 1, old_grid.h, old_grid.w, D, new_grid.h, new_grid.w, m, align_corners,
                    out.data() + P * D, ctx);
  return out;
}

}  // namespace fovea
