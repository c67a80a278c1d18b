#pragma once
// patchify and patch_embed: a ViT's patch projection, F.conv2d(images, weight, bias, stride=patch) followed by
// flatten(2).transpose(1, 2), computed as the linear map it is: each non-overlapping patch, flattened in
// (C, kH, kW) order, times weight.reshape(D, -1)^T. Each output tile gathers its own patches into a
// per-thread buffer and multiplies them there, so the whole (N L, K) patch matrix is never built.
//
// Image sizes that are not a multiple of the patch follow PyTorch's conv: the last H % P rows and W % P
// columns are dropped. Real checkpoints rely on it (SigLIP so400m-patch14-384 embeds 384 x 384 images as
// 27 x 27 patches of 14, ignoring 6 pixels), so rejecting it would break them. A patch larger than the
// image (no patch at all) is a ShapeError, as it is in PyTorch.
//
// The overload with prefix tokens and position embeddings builds the whole input sequence of the encoder
// in the same pass: the GEMM accumulates onto rows that already hold bias + position embedding, so
// neither the class token's concatenation nor the position add costs a pass of its own.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/attention.hpp"  // detail::gemm_serial_stack, detail::gemm_tiles

namespace fovea {
namespace detail {

// Patches per side: floor(size / patch), as a stride-P conv without padding counts them.
struct PatchGrid {
  Index n, c, h, w;    // images (N, C, H, W)
  Index ph, pw;        // patch
  Index gh, gw;        // grid
  Index L() const { return gh * gw; }
  Index K() const { return c * ph * pw; }
};

inline std::string patch_shapes(const std::array<Index, 4>& images, const std::array<Index, 4>* weight, Index bias) {
  return cat("; images ", dims_str(images), weight ? cat(", weight ", dims_str(*weight)) : std::string(),
             bias >= 0 ? cat(", bias (", bias, ")") : std::string());
}

// images (N, C, H, W) and a patch of ph x pw: throws ShapeError naming `op` unless at least one patch fits.
inline PatchGrid check_patch_grid(const char* op, const std::array<Index, 4>& images, Index ph, Index pw,
                                  const std::string& shapes) {
  for (Index d : images)
    if (d == 0) throw_shape(op, ": expected non-empty images, but got a zero dimension", shapes);
  if (ph < 1 || pw < 1) throw_shape(op, ": expected a patch size >= 1, but got (", ph, ", ", pw, ")", shapes);
  if (ph > images[2] || pw > images[3])
    throw_shape(op, ": expected a patch no larger than the image, but got patch (", ph, ", ", pw, ") for an image of (",
                images[2], ", ", images[3], ")", shapes);
  return {images[0], images[1], images[2], images[3], ph, pw, images[2] / ph, images[3] / pw};
}

// Gathers patches [r0, r1) of the batch into rows of dst ((r1 - r0), K): patch r is image r / L, grid cell
// r % L in row-major order, laid out (C, ph, pw) like weight.reshape(D, -1). Each patch row is pw
// contiguous source values.
template <class T>
void gather_patches(const T* images, const PatchGrid& g, Index r0, Index r1, T* dst) {
  const Index K = g.K(), L = g.L();
  for (Index r = r0; r < r1; ++r) {
    const Index n = r / L, gy = (r % L) / g.gw, gx = (r % L) % g.gw;
    T* row = dst + (r - r0) * K;
    for (Index c = 0; c < g.c; ++c)
      for (Index ky = 0; ky < g.ph; ++ky) {
        const T* src = images + ((n * g.c + c) * g.h + gy * g.ph + ky) * g.w + gx * g.pw;
        T* d = row + (c * g.ph + ky) * g.pw;
        for (Index kx = 0; kx < g.pw; ++kx) d[kx] = src[kx];
      }
  }
}

template <class T>
PatchGrid check_patch_embed(const char* op, const Tensor<T, 4>& images, const Tensor<T, 4>& weight, const Tensor<T, 1>& bias) {
  const std::array<Index, 4> wd = weight.dimensions();
  const std::string shapes = patch_shapes(images.dimensions(), &wd, bias.size() ? bias.dimension(0) : -1);
  for (Index d : wd)
    if (d == 0) throw_shape(op, ": expected a non-empty weight, but got a zero dimension", shapes);
  if (wd[1] != images.dimension(1))
    throw_shape(op, ": expected weight.size(1) == input channels (", images.dimension(1), "), but got ", wd[1], shapes);
  if (bias.size() && bias.dimension(0) != wd[0])
    throw_shape(op, ": expected bias.size(0) == weight.size(0) (", wd[0], "), but got ", bias.dimension(0), shapes);
  return check_patch_grid(op, images.dimensions(), wd[2], wd[3], shapes);
}

// tokens: (N, S, D) with S = P + L; rows [P, P + L) of each image get the patch embeddings added onto what
// they hold (beta = 1): the caller fills them with bias (+ position embedding) first. Tiled as
// fused_linear: each (rows, columns) tile gathers its own patches into a per-thread buffer that stays in
// cache and is reused across calls (the whole (N L, K) patch matrix is never built).
template <class T>
void patch_embed_accumulate(const Tensor<T, 4>& images, const Tensor<T, 4>& weight, const PatchGrid& g, Index prefix,
                            T* tokens, const Context& ctx) {
  const Index L = g.L(), K = g.K(), D = weight.dimension(0), S = prefix + L, M = g.n * L;
  const GemmTiles tiles = gemm_tiles(M, D, ctx.num_threads(), gemm_col_align<T>());
  ctx.parallel_for(tiles.count(), [&](Index t) {
    const Index i0 = (t / tiles.col_tiles) * tiles.mt, j0 = tiles.col_begin(t % tiles.col_tiles);
    const Index m = std::min(tiles.mt, M - i0), n = tiles.col_begin(t % tiles.col_tiles + 1) - j0;
    thread_local std::vector<T> patches;
    if (patches.size() < std::size_t(m * K)) patches.resize(std::size_t(m * K));
    gather_patches(images.data(), g, i0, i0 + m, patches.data());
    // Output rows of patches [i0, i0 + m): contiguous within an image, a gap of P prefix rows between images.
    for (Index r = i0; r < i0 + m;) {
      const Index img = r / L, end = std::min(i0 + m, (img + 1) * L);
      gemm_serial_stack<T>(false, true, end - r, n, K, T(1), patches.data() + (r - i0) * K, K, weight.data() + j0 * K, K,
                           T(1), tokens + (img * S + prefix + r % L) * D + j0, D);
      r = end;
    }
  });
}

// The sequence overload's work, into `out` (resized only when its shape differs, so a model can keep one
// token buffer across calls); prefix and pos may be null (none).
template <class T>
void patch_embed_into(const Tensor<T, 4>& images, const Tensor<T, 4>& weight, const Tensor<T, 1>& bias,
                      const Tensor<T, 2>* prefix_tokens, const Tensor<T, 2>* pos_embed, Tensor<T, 3>& out,
                      const Context& ctx) {
  const char* op = "patch_embed";
  const auto g = check_patch_embed(op, images, weight, bias);
  const Index D = weight.dimension(0), P = prefix_tokens ? prefix_tokens->dimension(0) : 0, L = g.L(), S = P + L;
  const Index pos_rows = pos_embed ? pos_embed->dimension(0) : 0;
  if (prefix_tokens || pos_embed) {
    const std::array<Index, 4> wd = weight.dimensions();
    const std::string shapes = cat(patch_shapes(images.dimensions(), &wd, bias.size() ? D : -1),
                                   prefix_tokens ? cat(", prefix_tokens ", shape_str(*prefix_tokens)) : std::string(),
                                   pos_embed ? cat(", pos_embed ", shape_str(*pos_embed)) : std::string());
    if (P > 0 && prefix_tokens->dimension(1) != D)
      throw_shape(op, ": expected prefix_tokens.size(1) == weight.size(0) (", D, "), but got ", prefix_tokens->dimension(1),
                  shapes);
    if (pos_rows > 0 && pos_embed->dimension(1) != D)
      throw_shape(op, ": expected pos_embed.size(1) == weight.size(0) (", D, "), but got ", pos_embed->dimension(1), shapes);
    if (pos_rows != 0 && pos_rows != S && pos_rows != L)
      throw_shape(op, ": expected pos_embed with prefix + patches (", P, " + ", L, " = ", S, ") rows, or patches only (",
                  L, "), or none, but got ", pos_rows, " rows (grid ", g.gh, " x ", g.gw, ")", shapes);
  }
  if (out.dimension(0) != g.n || out.dimension(1) != S || out.dimension(2) != D) out.resize(g.n, S, D);
  // Every row starts as what the product is added onto: prefix token or bias, plus its position embedding.
  const Index pos_skip = pos_rows == L ? P : 0;  // row s of the sequence takes pos row s - pos_skip
  ctx.parallel_range(g.n * S, std::max<Index>(1, (Index(1) << 14) / D), [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const Index s = r % S;
      T* row = out.data() + r * D;
      if (s < P) {
        std::memcpy(row, prefix_tokens->data() + s * D, sizeof(T) * std::size_t(D));
      } else if (bias.size()) {
        std::memcpy(row, bias.data(), sizeof(T) * std::size_t(D));
      } else {
        std::fill(row, row + D, T(0));
      }
      if (pos_rows && s >= pos_skip) {
        const T* p = pos_embed->data() + (s - pos_skip) * D;
        for (Index d = 0; d < D; ++d) row[d] += p[d];
      }
    }
  });
  patch_embed_accumulate(images, weight, g, P, out.data(), ctx);
}

}  // namespace detail

// images (N, C, H, W), patch (ph, pw) -> (N, (H / ph) * (W / pw), C * ph * pw): the non-overlapping patches in
// row-major grid order, each flattened (C, ph, pw) as weight.reshape(D, -1) is. Remainders are dropped.
template <class T>
Tensor<T, 3> patchify(const Tensor<T, 4>& images, Size2 patch, const Context& ctx = default_context()) {
  const auto g = detail::check_patch_grid("patchify", images.dimensions(), patch.h, patch.w,
                                          detail::cat("; images ", detail::shape_str(images), ", patch ",
                                                      detail::size2_str(patch)));
  Tensor<T, 3> out(g.n, g.L(), g.K());
  const Index rows = g.n * g.L();
  ctx.parallel_range(rows, std::max<Index>(1, (Index(1) << 15) / g.K()),
                     [&](Index r0, Index r1) { detail::gather_patches(images.data(), g, r0, r1, out.data() + r0 * g.K()); });
  return out;
}

// images (N, C, H, W), weight (D, C, P, P), bias (D) or empty -> tokens (N, (H / P) * (W / P), D), row-major patch
// order: conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2). Remainders are dropped (see top).
template <class T>
Tensor<T, 3> patch_embed(const Tensor<T, 4>& images, const Tensor<T, 4>& weight, const Tensor<T, 1>& bias,
                         const Context& ctx = default_context()) {
  Tensor<T, 3> out;
  detail::patch_embed_into<T>(images, weight, bias, nullptr, nullptr, out, ctx);
  return out;
}

// The encoder's input sequence in one pass: prefix (P, D) (class token, register tokens; P may be 0),
// pos_embed (P + L, D) added to every token, or (L, D) added to the patches only (timm's no_embed_class), or
// empty (0, D) for none -> (N, P + L, D) = cat(prefix, patch_embed(images, weight, bias)) + pos_embed.
template <class T>
Tensor<T, 3> patch_embed(const Tensor<T, 4>& images, const Tensor<T, 4>& weight, const Tensor<T, 1>& bias,
                         const Tensor<T, 2>& prefix_tokens, const Tensor<T, 2>& pos_embed,
                         const Context& ctx = default_context()) {
  Tensor<T, 3> out;
  detail::patch_embed_into(images, weight, bias, &prefix_tokens, &pos_embed, out, ctx);
  return out;
}

}  // namespace fovea
