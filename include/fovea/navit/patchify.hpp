#pragma once
// NaViT's per-image bookkeeping (lucidrains' vit_pytorch/na_vit.py, "Patch n' Pack"): one image of its own
// size -> its patch rows and their grid positions, and training-time token dropping. Packing the rows of many
// images into sequences is navit/pack.hpp's (plan_packing, pack_tokens, unpack_tokens).
//
// Patches. An image (C, H, W) whose sides are multiples of the patch size P becomes n = (H / P) (W / P) rows
// of C P P values, in na_vit's order: rearrange(image, 'c (h p1) (w p2) -> (h w) (c p1 p2)'), i.e. patches
// in row-major grid order, each flattened (C, P, P), as a conv weight is. Sides that are not multiples of P
// are refused (ShapeError), as na_vit asserts: nothing is silently cropped or resized; resize or crop the
// image first (io/preprocess.hpp) if it comes at another size.
//
// Token dropping. An image of n patches keeps max(1, floor(n (1 - p))) of them, p in [0, 1), which is what
// na_vit computes (int(seq_len * (1 - p)) in double precision). Which tokens: the first `keep` entries of a
// seeded random permutation of [0, n), returned sorted (row-major order). The generator is std::mt19937_64,
// seeded through std::seed_seq from (seed low 32 bits, seed high 32 bits, image index) so each image draws
// from its own stream: the tokens an image keeps depend on the seed, its index in the batch and its patch
// count only, not on the other images or on how they are packed. The permutation is a partial Fisher-Yates
// shuffle whose bounded draws use rejection sampling written here (std::uniform_int_distribution is
// implementation-defined), so a seed keeps the same tokens with every standard library.
// na_vit draws torch.randn(n).topk(keep) instead, so a given seed does not reproduce its choice; which
// tokens survive is random either way, and the model's output does not depend on the order of an image's
// tokens (attention and attention pooling are permutation-invariant within an image).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/patch_embed.hpp"  // detail::gather_patches

namespace fovea {

// One image as NaViT sees it: n patch rows (n, C P P) and their (row, col) grid positions (n, 2).
template <class T>
struct ImagePatches {
  Tensor<T, 2> patches;        // (n, C * P * P)
  Tensor<Index, 2> positions;  // (n, 2): (row, col) of each patch in the image's grid
  Size2 grid;                  // the full grid (H / P, W / P), before any dropping

  Index size() const { return patches.dimension(0); }
};

// grid (gh, gw) -> (gh gw, 2): (row, col) of every cell in row-major order, as na_vit's
// stack(meshgrid(arange(gh), arange(gw), indexing='ij')) flattened.
inline Tensor<Index, 2> patch_positions(Size2 grid) {
  if (grid.h < 1 || grid.w < 1)
    detail::throw_shape("patch_positions: expected a grid of at least 1x1, but got ", detail::size2_str(grid));
  Tensor<Index, 2> pos(grid.h * grid.w, 2);
  for (Index r = 0; r < grid.h; ++r)
    for (Index c = 0; c < grid.w; ++c) pos(r * grid.w + c, 0) = r, pos(r * grid.w + c, 1) = c;
  return pos;
}

// image (C, H, W) with H, W multiples of patch_size -> its patches and positions (see the file comment).
// `op` names the caller in messages.
template <class T>
ImagePatches<T> patchify_image(const Tensor<T, 3>& image, Index patch_size, const Context& ctx = default_context(),
                               const char* op = "patchify_image") {
  const Index C = image.dimension(0), H = image.dimension(1), W = image.dimension(2), P = patch_size;
  const std::string shapes = detail::cat("; image ", detail::shape_str(image), ", patch_size ", P);
  if (P < 1) detail::throw_shape(op, ": expected patch_size >= 1, but got ", P, shapes);
  if (C < 1 || H < 1 || W < 1) detail::throw_shape(op, ": expected a non-empty image (C, H, W), but got a zero dimension", shapes);
  if (H % P != 0 || W % P != 0)
    detail::throw_shape(op, ": expected height and width to be multiples of the patch size ", P, ", but got ", H, "x", W,
                        " (", H % P, " and ", W % P, " pixels left over); resize or crop the image first", shapes);
  const detail::PatchGrid g{1, C, H, W, P, P, H / P, W / P};
  ImagePatches<T> out;
  out.grid = {g.gh, g.gw};
  out.patches.resize(g.L(), g.K());
  const Index K = g.K();
  ctx.parallel_range(g.L(), std::max<Index>(1, (Index(1) << 15) / K),
                     [&](Index r0, Index r1) { detail::gather_patches(image.data(), g, r0, r1, out.patches.data() + r0 * K); });
  out.positions = patch_positions(out.grid);
  return out;
}

namespace detail {

// Throws ShapeError naming `op` unless 0 <= p < 1 (na_vit >= 1.6.7 asserts the same range).
inline void check_drop_prob(const char* op, double p) {
  if (!(p >= 0.0 && p < 1.0))
    throw_shape(op, ": expected a token drop probability in [0, 1), but got ", p,
                " (0 keeps every token; 1 would drop them all)");
}

// A draw in [0, bound) from g, bound >= 1, unbiased: draws below 2^64 mod bound are rejected, so the
// accepted range [2^64 mod bound, 2^64) holds every residue equally often.
inline std::uint64_t uniform_below(std::mt19937_64& g, std::uint64_t bound) {
  const std::uint64_t threshold = (std::uint64_t(0) - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const std::uint64_t x = g();
    if (x >= threshold) return x % bound;
  }
}

}  // namespace detail

// Tokens an image of n patches keeps at drop probability p: max(1, floor(n (1 - p))).
inline Index tokens_kept(Index n, double drop_prob) {
  detail::check_drop_prob("tokens_kept", drop_prob);
  if (n < 1) detail::throw_shape("tokens_kept: expected an image of at least one patch, but got ", n);
  return std::max<Index>(1, Index(std::floor(double(n) * (1.0 - drop_prob))));
}

// The patch indices image `image_index` of n patches keeps at drop probability p under `seed`, ascending
// (see the file comment for the generator). p = 0 keeps 0 .. n - 1.
inline std::vector<Index> sample_kept_tokens(Index n, double drop_prob, std::uint64_t seed, Index image_index = 0) {
  const Index keep = tokens_kept(n, drop_prob);
  std::vector<Index> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), Index(0));
  if (keep == n) return idx;
  std::seed_seq seq{std::uint32_t(seed & 0xffffffffu), std::uint32_t(seed >> 32), std::uint32_t(std::uint64_t(image_index))};
  std::mt19937_64 g(seq);
  for (Index i = 0; i < keep; ++i) {
    const Index j = i + Index(detail::uniform_below(g, std::uint64_t(n - i)));
    std::swap(idx[std::size_t(i)], idx[std::size_t(j)]);
  }
  idx.resize(std::size_t(keep));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// The rows `keep` of an image's patches and positions, in the order given (indices in [0, n), any order,
// repeats allowed, at least one).
template <class T>
ImagePatches<T> keep_tokens(const ImagePatches<T>& image, const std::vector<Index>& keep) {
  const Index n = image.size(), K = image.patches.dimension(1);
  if (keep.empty()) detail::throw_shape("keep_tokens: expected at least one token index, but got none; image of ", n, " patches");
  for (std::size_t i = 0; i < keep.size(); ++i)
    if (keep[i] < 0 || keep[i] >= n)
      detail::throw_shape("keep_tokens: expected token indices in [0, ", n, "), but index ", i, " is ", keep[i]);
  ImagePatches<T> out;
  out.grid = image.grid;
  out.patches.resize(Index(keep.size()), K);
  out.positions.resize(Index(keep.size()), 2);
  for (std::size_t i = 0; i < keep.size(); ++i) {
    std::copy_n(image.patches.data() + keep[i] * K, K, out.patches.data() + Index(i) * K);
    out.positions(Index(i), 0) = image.positions(keep[i], 0);
    out.positions(Index(i), 1) = image.positions(keep[i], 1);
  }
  return out;
}

}  // namespace fovea
