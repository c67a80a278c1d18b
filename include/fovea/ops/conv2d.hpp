#pragma once
// conv2d (F.conv2d): zero padding, stride, dilation and groups, PyTorch's NCHW / OIHW layouts.
//
// How it runs. Output positions of the whole batch form the columns of one product per group,
// out[n, o, p] = sum_k weight[o, k] * patch[k, (n, p)], K = C/groups * kH * kW. Columns are cut into tiles
// small enough that a tile's patch matrix (K x tile, "im2col") stays in the core's L2; each tile is one
// work item: the product weight x patches straight into the NCHW output, then the epilogue (bias,
// residual, ReLU) while the tile is still in cache. Items are spread over the Context. In float with
// fovea's GEMM kernel the patches are never stored: each depth block is gathered from a zero-padded copy
// of the input straight into the kernel's packed panels (conv_gather_patches, gemm_serial_gathered);
// otherwise im2col writes the tile's patch matrix and gemm_serial reads it.
//   - 1x1, stride 1, padding 0: the input already is the patch matrix, nothing is gathered.
//   - Small images (7x7, 14x14 in late ResNet stages) put several images in one tile so the product stays
//     wide; when there are fewer tiles than threads, the output channels are split as well.
//   - Depthwise (C/groups == 1, any channel multiplier) is a direct loop: its products are 1 x K x P with
//     K = kH*kW, which no GEMM runs well.
//   - 3x3 stride-1 convs with enough channels and output tiles run Winograd F(4x4, 3x3) (ops/winograd.hpp):
//     36 products per 4x4 output tile instead of 144, as 36 GEMMs (O x C) x tiles. Modules keep the
//     transformed weights; the functional conv2d transforms them per call, so it asks for more tiles.
//   - Without that kernel (double, no AVX-512), strided convs with small weights (the 7x7/2 stem, stride-2
//     3x3s) run a direct kernel (conv2d_direct): no gather and no packing, 8 output channels x 48
//     positions accumulated in registers.
// Bias is not added afterwards: the output tile is first filled with bias (+ residual) and the product
// is accumulated onto it (beta = 1), which saves the pass that zeroes C.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/scratch.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/winograd.hpp"

namespace fovea {

// Options of F.conv2d; every size takes one number or {h, w}:
//   Conv2dOptions().stride(2).padding({3, 1}).dilation(1).groups(1)
struct Conv2dOptions {
  Size2 stride_{1}, padding_{0}, dilation_{1};
  Index groups_ = 1;
  Conv2dOptions& stride(Size2 s) {
    stride_ = s;
    return *this;
  }
  Conv2dOptions& padding(Size2 p) {
    padding_ = p;
    return *this;
  }
  Conv2dOptions& dilation(Size2 d) {
    dilation_ = d;
    return *this;
  }
  Conv2dOptions& groups(Index g) {
    groups_ = g;
    return *this;
  }
};

// One spatial side: floor((in + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1, as ATen computes it.
// Below 1 when the dilated kernel does not fit in the padded input; throws ShapeError for stride < 1.
inline Index conv_output_size(Index in, Index kernel, Index stride, Index padding, Index dilation) {
  if (stride < 1) detail::throw_shape("conv_output_size: expected stride >= 1, but got ", stride);
  const Index span = in + 2 * padding - dilation * (kernel - 1) - 1;
  // Floor division, so that a kernel that overhangs by less than a stride still gives 0, not 1.
  return (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
}

namespace detail {

// Keeps a parameter out of template deduction, so that nullptr can be passed for bias or residual.
template <class T>
struct conv_same {
  using type = T;
};

// Sizes of one conv2d call, after the checks. K and P are the GEMM's depth and columns per image.
struct Conv2dGeometry {
  Index N, C, H, W;       // input
  Index O, Cg, kH, kW;    // weight (O, C/groups, kH, kW)
  Index G, Og;            // groups, output channels per group
  Index sh, sw, ph, pw, dh, dw;
  Index OH, OW;
  Index K() const { return Cg * kH * kW; }
  Index P() const { return OH * OW; }
};

// "; input (N, C, H, W), weight (...)[, bias (B)][, stride ..., groups g]": every conv2d message ends so.
inline std::string conv2d_shapes(const std::array<Index, 4>& in, const std::array<Index, 4>& w, Index bias,
                                 const Conv2dOptions* opt) {
  std::string s = cat("; input ", dims_str(in), ", weight ", dims_str(w));
  if (bias >= 0) s += cat(", bias (", bias, ")");
  if (opt)
    s += cat(", stride ", size2_str(opt->stride_), ", padding ", size2_str(opt->padding_), ", dilation ",
             size2_str(opt->dilation_), ", groups ", opt->groups_);
  return s;
}

// input (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) when bias >= 0 (-1: none or unknown size).
// Every argument is checked before anything runs; the ShapeError names conv2d and the shapes.
inline Conv2dGeometry conv2d_check(const std::array<Index, 4>& in, const std::array<Index, 4>& w, Index bias,
                                   const Conv2dOptions& o) {
  auto shapes = [&](bool with_options) { return conv2d_shapes(in, w, bias, with_options ? &o : nullptr); };
  // Empty tensors are rejected (PyTorch would return an empty batch): a zero size here is a bug upstream.
  for (Index d : in)
    if (d < 1) throw_shape("conv2d: expected every input size >= 1, but got ", dims_str(in), shapes(false));
  for (Index d : w)
    if (d < 1) throw_shape("conv2d: expected every weight size >= 1, but got ", dims_str(w), shapes(false));
  if (o.stride_.h < 1 || o.stride_.w < 1)
    throw_shape("conv2d: expected stride >= 1, but got ", size2_str(o.stride_), shapes(true));
  if (o.padding_.h < 0 || o.padding_.w < 0)
    throw_shape("conv2d: expected padding >= 0, but got ", size2_str(o.padding_), shapes(true));
  if (o.dilation_.h < 1 || o.dilation_.w < 1)
    throw_shape("conv2d: expected dilation >= 1, but got ", size2_str(o.dilation_), shapes(true));
  const Index g = o.groups_;
  if (g < 1) throw_shape("conv2d: expected groups >= 1, but got ", g, shapes(true));
  if (in[1] % g != 0)
    throw_shape("conv2d: expected input channels (", in[1], ") to be divisible by groups (", g, ")", shapes(true));
  if (w[0] % g != 0)
    throw_shape("conv2d: expected weight.size(0) (output channels, ", w[0], ") to be divisible by groups (", g, ")",
                shapes(true));
  if (w[1] != in[1] / g)
    throw_shape("conv2d: expected weight.size(1) == input channels / groups (", in[1] / g, "), but got ", w[1],
                shapes(g != 1));
  if (bias >= 0 && bias != w[0])
    throw_shape("conv2d: expected bias.size(0) == weight.size(0) (", w[0], "), but got ", bias, shapes(false));
  const Index oh = conv_output_size(in[2], w[2], o.stride_.h, o.padding_.h, o.dilation_.h);
  const Index ow = conv_output_size(in[3], w[3], o.stride_.w, o.padding_.w, o.dilation_.w);
  if (oh < 1 || ow < 1)
    throw_shape("conv2d: expected the dilated kernel (", o.dilation_.h * (w[2] - 1) + 1, ", ",
                o.dilation_.w * (w[3] - 1) + 1, ") to fit in the padded input (", in[2] + 2 * o.padding_.h, ", ",
                in[3] + 2 * o.padding_.w, "), but the output size would be (", oh, ", ", ow, ")", shapes(true));
  Conv2dGeometry s;
  s.N = in[0], s.C = in[1], s.H = in[2], s.W = in[3];
  s.O = w[0], s.Cg = w[1], s.kH = w[2], s.kW = w[3];
  s.G = g, s.Og = w[0] / g;
  s.sh = o.stride_.h, s.sw = o.stride_.w, s.ph = o.padding_.h, s.pw = o.padding_.w;
  s.dh = o.dilation_.h, s.dw = o.dilation_.w;
  s.OH = oh, s.OW = ow;
  return s;
}

// Output indices [lo, hi) along one side whose input index out*stride + off lands inside [0, in).
inline void conv_valid_range(Index off, Index stride, Index in, Index out, Index& lo, Index& hi) {
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const Index last = in - 1 - off;
  hi = last < 0 ? 0 : last / stride + 1;
  lo = std::min(lo, out);
  hi = std::max(lo, std::min(hi, out));
}

// Zeroes the positions of output columns [j0, j1) in every output row, for positions in [pa, pb) of
// `row` (row[p - p0] is position p). Column by column, so each store is strided: a short contiguous loop
// here would become a memset call per image row, which dominated im2col on 7x7 images.
template <class T>
void conv_zero_columns(T* row, Index p0, Index pa, Index pb, Index OW, Index j0, Index j1) {
  if (pa >= pb) return;
  const Index y0 = pa / OW, y1 = (pb - 1) / OW;
  for (Index j = j0; j < j1; ++j)
    for (Index oy = y0; oy <= y1; ++oy) {
      const Index p = oy * OW + j;
      if (p >= pa && p < pb) row[p - p0] = T(0);
    }
}

// src (Cg, H, W) of one image and group -> rows [k0, k1) of the patch matrix for output positions
// [p0, p1), row k written to col + (k - k0) * ldc (column 0 = position p0). Padding reads as zero.
template <class T>
void conv_im2col(const Conv2dGeometry& s, const T* src, Index p0, Index p1, Index k0, Index k1, T* col,
                 Index ldc) {
  const Index khw = s.kH * s.kW, HW = s.H * s.W;
  // Stride 1 with OW == W ("same" convs, 1x1): position p reads input element p + off_y * W + off_x, so a
  // patch row is one shifted copy of the plane, after which the columns that wrapped into the
  // neighbouring input row are zeroed. 7x7 and 14x14 images then pay no per-row overhead.
  const bool shifted = s.sw == 1 && s.sh == 1 && s.OW == s.W;
  for (Index k = k0; k < k1; ++k) {
    const Index c = k / khw, kh = (k % khw) / s.kW, kw = k % s.kW;
    const T* plane = src + c * HW;
    T* row = col + (k - k0) * ldc;  // row[p - p0] is position p
    const Index off_x = kw * s.dw - s.pw, off_y = kh * s.dh - s.ph;
    Index lo, hi, ya, yb;  // output columns / rows whose tap is inside the input
    conv_valid_range(off_x, s.sw, s.W, s.OW, lo, hi);
    conv_valid_range(off_y, s.sh, s.H, s.OH, ya, yb);
    // Rows whose tap row is padding are zero; [pa, pb) are the positions of the other rows.
    const Index pa = std::min(p1, std::max(p0, ya * s.OW)), pb = std::max(pa, std::min(p1, yb * s.OW));
    if (pa > p0) std::fill(row, row + (pa - p0), T(0));
    if (p1 > pb) std::fill(row + (pb - p0), row + (p1 - p0), T(0));
    if (pa == pb) continue;
    if (shifted) {
      const Index shift = off_y * s.W + off_x;
      // Wrapped columns at the two ends may point outside the plane: clamp, they are zeroed below anyway.
      const Index a = std::min(pb, std::max(pa, -shift)), b = std::max(a, std::min(pb, HW - shift));
      std::copy(plane + a + shift, plane + b + shift, row + (a - p0));
    } else {
      for (Index oy = pa / s.OW; oy * s.OW < pb; ++oy) {
        const Index r0 = oy * s.OW;
        const Index a = std::max(pa, r0 + lo), b = std::min(pb, r0 + hi);
        if (a >= b) continue;
        // The tap for (oy, ox) is input column ox * sw + off_x, inside the row for ox in [lo, hi).
        const T* tap = plane + (oy * s.sh + off_y) * s.W + (a - r0) * s.sw + off_x;
        T* d = row + (a - p0);
        if (s.sw == 1) {
          std::copy(tap, tap + (b - a), d);
        } else if (s.sw == 2) {
          // A constant stride lets the compiler vectorize the gather (two loads and a permute per packet);
          // with the stride a variable it is one scalar load per value, a third of a stride-2 conv's time.
          for (Index j = 0; j < b - a; ++j) d[j] = tap[2 * j];
        } else {
          for (Index j = 0; j < b - a; ++j) d[j] = tap[j * s.sw];
        }
      }
    }
    conv_zero_columns(row, p0, pa, pb, s.OW, 0, lo);
    conv_zero_columns(row, p0, pa, pb, s.OW, hi, s.OW);
  }
}

// rows x cols block at c (leading dimension ldc) = bias[row] (+ residual block, same layout, ldr).
template <class T>
void conv_prefill(T* c, Index ldc, Index rows, Index cols, const T* bias, const T* residual, Index ldr) {
  for (Index r = 0; r < rows; ++r) {
    T* d = c + r * ldc;
    const T b = bias ? bias[r] : T(0);
    if (residual) {
      const T* q = residual + r * ldr;
      for (Index j = 0; j < cols; ++j) d[j] = b + q[j];
    } else {
      std::fill(d, d + cols, b);
    }
  }
}

template <class T>
void conv_relu(T* c, Index ldc, Index rows, Index cols) {
  for (Index r = 0; r < rows; ++r) {
    T* d = c + r * ldc;
    // Written so NaN passes through, as torch.relu does.
    for (Index j = 0; j < cols; ++j) d[j] = d[j] < T(0) ? T(0) : d[j];
  }
}

// conv2d's thread-reused scratch (core/scratch.hpp), one per thread and purpose: a product block of whole
// small images (2048 x 343 for a batched 1x1 on 7x7), the patches of tiles shared by several threads,
// the padded input, the direct kernel's and depthwise's copies. (im2col's per-tile patches, 4608 x 245
// at most on ResNet shapes, are gemm_serial_gathered's.)
struct ConvScratch;
template <class T, int Slot>
T* conv_scratch(std::size_t n) {
  return thread_scratch<T, ConvScratch, Slot>(n);
}

// Depthwise and channel-multiplier convs (C/groups == 1): output planes (n, c * m + j), j < m, read only
// input plane (n, c), which is first copied into a zero-bordered scratch so that no tap needs a bounds
// check. Output rows are accumulated in blocks that stay in L1, one tap at a time. With stride 1 the
// block is kept at the scratch's row pitch, so that each tap is one long contiguous multiply-add over
// the whole block (the few columns past OW are computed and dropped): no per-row loop overhead, and no
// dependency chain between taps, which held a register-blocked version to a third of this speed.
template <class T>
void conv2d_depthwise(const Conv2dGeometry& s, const T* in, const T* weight, const T* bias, T* out, bool relu,
                      const T* residual, const Context& ctx) {
  const Index P = s.P(), taps = s.kH * s.kW, m = s.Og;
  const Index Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw;
  const bool unit = s.sw == 1 && s.sh == 1;
  const Index pitch = unit ? Wp : s.OW;  // of the accumulator block
  const Index rows = std::max<Index>(1, std::min<Index>(s.OH, 4096 / pitch));  // 16 KiB of float accumulators
  // Stride 1 reads up to (kW - 1) * dw past the last padded row through the dropped columns.
  const Index pad_size = Hp * Wp + (s.kW - 1) * s.dw;
  const Index planes = s.N * s.C;
  const Index grain = std::max<Index>(1, (Index(1) << 15) / std::max<Index>(1, P * taps * m));
  ctx.parallel_range(planes, grain, [&](Index q0, Index q1) {
    T* pad = conv_scratch<T, 3>(std::size_t(pad_size));
    T* acc = conv_scratch<T, 4>(std::size_t(rows * pitch));
    std::fill(pad, pad + pad_size, T(0));
    for (Index q = q0; q < q1; ++q) {
      const Index n = q / s.C, c = q % s.C;
      const T* src = in + q * s.H * s.W;
      for (Index y = 0; y < s.H; ++y) std::copy_n(src + y * s.W, s.W, pad + (y + s.ph) * Wp + s.pw);
      for (Index j = 0; j < m; ++j) {
        const Index o = c * m + j;
        const T* w = weight + o * taps;
        T* dst = out + (n * s.O + o) * P;
        const T* res = residual ? residual + (n * s.O + o) * P : nullptr;
        for (Index y0 = 0; y0 < s.OH; y0 += rows) {
          const Index nrows = std::min(rows, s.OH - y0), len = nrows * pitch;
          std::fill(acc, acc + len, bias ? bias[o] : T(0));
          for (Index kh = 0; kh < s.kH; ++kh)
            for (Index kw = 0; kw < s.kW; ++kw) {
              const T wv = w[kh * s.kW + kw];
              const T* tap = pad + (y0 * s.sh + kh * s.dh) * Wp + kw * s.dw;
              if (unit) {
                T* __restrict a = acc;
                const T* __restrict t = tap;
                for (Index i = 0; i < len; ++i) a[i] += wv * t[i];
              } else {
                for (Index r = 0; r < nrows; ++r) {
                  T* __restrict a = acc + r * pitch;
                  const T* __restrict t = tap + r * s.sh * Wp;
                  for (Index x = 0; x < s.OW; ++x) a[x] += wv * t[x * s.sw];
                }
              }
            }
          for (Index r = 0; r < nrows; ++r) {
            T* d = dst + (y0 + r) * s.OW;
            const T* a = acc + r * pitch;
            if (res) {
              const T* rr = res + (y0 + r) * s.OW;
              for (Index x = 0; x < s.OW; ++x) d[x] = a[x] + rr[x];
            } else {
              std::copy_n(a, s.OW, d);
            }
            if (relu) conv_relu(d, s.OW, 1, s.OW);
          }
        }
      }
    }
  });
}

#if defined(__GNUC__)
// The direct kernel below needs GCC's vector extensions (GCC and Clang); elsewhere those convs take im2col.
#define FOVEA_CONV2D_DIRECT 1

// 64 bytes of T: one AVX-512 register (two AVX2 ones, or scalars without SIMD flags).
template <class T>
struct conv_vec {
  typedef T type __attribute__((vector_size(64)));
};

// Geometry of conv2d_direct's input copy: for each input channel c and phase (py, px) < (s, s), the padded
// input's rows s * yy + py and columns s * q + px, yy < Hq, q < Q, of every image stacked (image n's rows
// at n * Hq), then `slack` zeros. Output (n, oy, ox) is then position p = (n * Hq + oy) * Q + ox of every
// plane, and tap (c, kh, kw) reads plane (c, kh % s, kw % s) at p + (kh / s) * Q + kw / s: each tap is one
// contiguous read for a run of positions. Positions with oy >= OH or ox >= OW are computed and dropped.
struct DirectLayout {
  Index s, Hq, Q, len;  // len: one plane's length, slack included
  Index positions;      // N * Hq * Q
  DirectLayout(const Conv2dGeometry& g, Index chunk) : s(g.sh) {
    Hq = g.OH + (g.kH - 1) / s;
    Q = g.OW + (g.kW - 1) / s;
    positions = g.N * Hq * Q;
    // The last chunk may run past `positions` by chunk - 1, and a tap reads up to its offset further.
    len = positions + chunk + ((g.kH - 1) / s) * Q + (g.kW - 1) / s;
  }
  // Share of computed positions that are outputs.
  double useful(const Conv2dGeometry& g) const { return double(g.OH * g.OW) / double(Hq * Q); }
};

// acc[o][v] over the positions [p, p + NV * VL) of the planes at x (channel 0): bias plus the sum over
// every tap (c, t) of weight[o][c * khw + t] * plane(c, t)[p + toff[t]], for output channels o < OB (rows
// past `rows` repeat the last one and are dropped); written to out[(o * NV + v) * VL ...]. Registers: OB *
// NV accumulators, NV inputs and the broadcast weight. KHW > 0 fixes kH * kW at compile time (3x3: the tap
// loop is unrolled).
template <class T, int NV, int OB, int KHW>
void conv_direct_kernel(const T* x, Index cstride, Index C, const Index* toff, Index khw_, const T* w, Index K,
                        Index rows, const T* bias, T* out) {
  const Index khw = KHW > 0 ? Index(KHW) : khw_;
  typedef typename conv_vec<T>::type V;
  constexpr int VL = int(64 / sizeof(T));
  const T* wo[OB];
  V acc[OB][NV];
  for (int o = 0; o < OB; ++o) {
    wo[o] = w + std::min<Index>(o, rows - 1) * K;
    const T b = bias ? bias[std::min<Index>(o, rows - 1)] : T(0);
    for (int v = 0; v < NV; ++v) acc[o][v] = V{} + b;
  }
  for (Index c = 0; c < C; ++c) {
    const T* xc = x + c * cstride;
    for (Index t = 0; t < khw; ++t) {
      const T* xt = xc + toff[t];
      V xv[NV];
      for (int v = 0; v < NV; ++v) std::memcpy(&xv[v], xt + v * VL, sizeof(V));
      const Index k = c * khw + t;
      for (int o = 0; o < OB; ++o) {
        const T wv = wo[o][k];
        for (int v = 0; v < NV; ++v) acc[o][v] += xv[v] * wv;
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int v = 0; v < NV; ++v) std::memcpy(out + (o * NV + v) * VL, &acc[o][v], sizeof(V));
}

// even[q] = in[2 q], odd[q] = in[2 q + 1], q < n: a row split into its two column phases.
template <class T>
void conv_deinterleave2(const T* __restrict in, T* __restrict even, T* __restrict odd, Index n) {
  for (Index q = 0; q < n; ++q) {
    even[q] = in[2 * q];
    odd[q] = in[2 * q + 1];
  }
}

// dst[j] = relu?(a[j] + residual[j]), j < n; residual null or possibly dst. One loop: runs are short (a
// row's part of a chunk), where a memmove call per run showed in profiles.
template <class T>
void conv_direct_store(const T* a, T* dst, const T* residual, Index n, bool relu) {
  // Written so NaN passes through, as torch.relu does.
  for (Index j = 0; j < n; ++j) {
    const T v = residual ? a[j] + residual[j] : a[j];
    dst[j] = relu && v < T(0) ? T(0) : v;
  }
}

// Direct convolution for groups 1, dilation 1, kernels larger than 1x1, where im2col's gather and GEMM's
// packing cost more than the product (the 7x7/2 ResNet stem: C = 3; the stride-2 3x3 convs): the input is
// copied once into the phase planes of DirectLayout, then blocks of 8 output channels x 48 positions (24 in
// double) are accumulated in registers over all C * kH * kW taps, each tap one contiguous vector read
// reused by the 8 channels. Measured at 150..190 GFLOP/s on one core where im2col + Eigen's GEMM reach
// 95..120 (bench_conv2d). The epilogue (residual, ReLU) is applied while the block is written out.
template <class T>
void conv2d_direct(const Conv2dGeometry& s, const T* in, const T* weight, const T* bias, T* out, bool relu,
                   const T* residual, const Context& ctx) {
  constexpr int VL = int(64 / sizeof(T)), OB = 8, NV = 3, CH = NV * VL;
  const DirectLayout L(s, CH);
  const Index st = s.sh, K = s.K(), khw = s.kH * s.kW, cstride = st * st * L.len, HW = s.H * s.W;
  T* planes = conv_scratch<T, 5>(std::size_t(s.C * cstride));
  // The copy, channel by channel: each input row once into a zero-bordered line (line[x] = input column
  // x - pw), then split into its column phases; only the phases some tap reads.
  const Index py_n = std::min(st, s.kH), px_n = std::min(st, s.kW), line_len = st * L.Q;
  const Index a = std::min(line_len, s.pw), b = std::min(line_len, s.pw + s.W);
  ctx.parallel_range(s.C, std::max<Index>(1, (Index(1) << 16) / std::max<Index>(1, s.N * HW)), [&](Index c0, Index c1) {
    T* line = conv_scratch<T, 6>(std::size_t(line_len));
    for (Index c = c0; c < c1; ++c) {
      T* chan = planes + c * cstride;
      for (Index py = 0; py < py_n; ++py)
        for (Index n = 0; n < s.N; ++n)
          for (Index yy = 0; yy < L.Hq; ++yy) {
            const Index y = st * yy + py - s.ph, at = (n * L.Hq + yy) * L.Q;
            if (y < 0 || y >= s.H) {
              for (Index px = 0; px < px_n; ++px) std::fill_n(chan + (py * st + px) * L.len + at, L.Q, T(0));
              continue;
            }
            const T* src = in + (n * s.C + c) * HW + y * s.W;
            std::fill(line, line + a, T(0));
            std::copy(src + (a - s.pw), src + (b - s.pw), line + a);
            std::fill(line + std::max(a, b), line + line_len, T(0));
            if (st == 1) {
              std::copy_n(line, L.Q, chan + at);
            } else if (st == 2 && px_n == 2) {
              conv_deinterleave2(line, chan + 2 * py * L.len + at, chan + (2 * py + 1) * L.len + at, L.Q);
            } else {
              for (Index px = 0; px < px_n; ++px) {
                T* row = chan + (py * st + px) * L.len + at;
                for (Index q = 0; q < L.Q; ++q) row[q] = line[q * st + px];
              }
            }
          }
      for (Index py = 0; py < py_n; ++py)
        for (Index px = 0; px < px_n; ++px) {
          T* plane = chan + (py * st + px) * L.len;
          std::fill(plane + L.positions, plane + L.len, T(0));
        }
    }
  });
  Index toff[64];  // tap offsets within a channel; kH * kW <= 64 (checked by the caller)
  for (Index kh = 0; kh < s.kH; ++kh)
    for (Index kw = 0; kw < s.kW; ++kw)
      toff[kh * s.kW + kw] = ((kh % st) * st + kw % st) * L.len + (kh / st) * L.Q + kw / st;
  // Work items: groups of consecutive chunks x groups of output-channel blocks, about 4 per thread so that
  // the threads end together; output channels are split only when there are too few chunks.
  const Index chunks = (L.positions + CH - 1) / CH, oblocks = (s.O + OB - 1) / OB;
  const Index threads = ctx.num_threads();
  const Index cgroups = std::min(chunks, 4 * threads);
  const Index ogroups = std::min(oblocks, std::max<Index>(1, (4 * threads + cgroups - 1) / cgroups));
  const Index cper = (chunks + cgroups - 1) / cgroups, oper = (oblocks + ogroups - 1) / ogroups;
  const Index PQ = L.Hq * L.Q;
  ctx.parallel_for(cgroups * ogroups, [&](Index item) {
    const Index ch0 = (item / ogroups) * cper, ch1 = std::min(chunks, ch0 + cper);
    const Index ob0 = (item % ogroups) * oper, ob1 = std::min(oblocks, ob0 + oper);
    alignas(64) T acc[OB * CH];
    // Chunk by chunk, all the item's output channels: the chunk's input (C planes x about 2 rows) stays
    // in L2 across them, and so do the item's weights across chunks when they are small (K * 8 * rows).
    for (Index ch = ch0; ch < ch1; ++ch) {
      const Index p0 = ch * CH, n_valid = std::min<Index>(CH, L.positions - p0);
      // The last chunk: only as many vectors as it has positions.
      const int nv = int((n_valid + VL - 1) / VL);
      for (Index ob = ob0; ob < ob1; ++ob) {
        const Index o0 = ob * OB, rows = std::min<Index>(OB, s.O - o0);
        const T* w = weight + o0 * K;
        const T* b = bias ? bias + o0 : nullptr;
        const T* x = planes + p0;
        if (khw == 9) {
          if (nv >= 3)
            conv_direct_kernel<T, 3, OB, 9>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
          else if (nv == 2)
            conv_direct_kernel<T, 2, OB, 9>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
          else
            conv_direct_kernel<T, 1, OB, 9>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
        } else {
          if (nv >= 3)
            conv_direct_kernel<T, 3, OB, 0>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
          else if (nv == 2)
            conv_direct_kernel<T, 2, OB, 0>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
          else
            conv_direct_kernel<T, 1, OB, 0>(x, cstride, s.C, toff, khw, w, K, rows, b, acc);
        }
        // Scatter the block's output positions, row run by row run.
        for (Index p = p0; p < p0 + n_valid;) {
          const Index n = p / PQ, oy = (p % PQ) / L.Q, ox = p % L.Q;
          const Index run = std::min(L.Q - ox, p0 + n_valid - p);
          if (oy < s.OH && ox < s.OW) {
            const Index len = std::min(run, s.OW - ox);
            for (Index r = 0; r < rows; ++r) {
              const T* a = acc + r * nv * VL + (p - p0);
              const Index at = ((n * s.O + o0 + r) * s.OH + oy) * s.OW + ox;
              conv_direct_store(a, out + at, residual ? residual + at : nullptr, len, relu);
            }
          }
          p += run;
        }
      }
    }
  });
}
#endif

#ifdef FOVEA_GEMM_KERNEL
// A zero-padded copy of the input for conv_gather_patches, or the input itself when there is no padding.
struct PaddedInput {
  const float* data;
  Index Hp, Wp;  // padded plane
};

inline PaddedInput conv_pad_input(const Conv2dGeometry& s, const float* in, const Context& ctx) {
  if (s.ph == 0 && s.pw == 0) return {in, s.H, s.W};
  const Index Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, planes = s.N * s.C;
  float* pad = conv_scratch<float, 7>(std::size_t(planes * Hp * Wp));
  ctx.parallel_range(planes, std::max<Index>(1, (Index(1) << 14) / (Hp * Wp)), [&](Index q0, Index q1) {
    for (Index q = q0; q < q1; ++q) {
      float* d = pad + q * Hp * Wp;
      const float* src = in + q * s.H * s.W;
      std::fill(d, d + s.ph * Wp, 0.f);
      for (Index y = 0; y < s.H; ++y) {
        float* row = d + (y + s.ph) * Wp;
        std::fill(row, row + s.pw, 0.f);
        std::copy_n(src + y * s.W, s.W, row + s.pw);
        std::fill(row + s.pw + s.W, row + Wp, 0.f);
      }
      std::fill(d + (s.ph + s.H) * Wp, d + Hp * Wp, 0.f);
    }
  });
  return {pad, Hp, Wp};
}

// Rows [k0, k1) x columns [j0, j1) of a tile's patch matrix, laid out as gemm_serial_gathered asks (row
// stride ld, groups of 48 columns `panel` apart): the GEMM kernel's packed panels. Column j is position
// p0 + j % w of image j / w (counted from `img`: the tile's first image, group g's channel 0, in the padded
// input). The columns are first cut into runs along output rows and panels, the same for every row k; then
// each row k is a few vector copies from the padded input, in input order: no bounds checks, and with
// stride 2 two loads and a permute per 16 values. Against im2col, which writes the patches whole for the
// kernel to read back and pack, this is one pass. (AVX-512 gathers were tried: on this AMD machine they
// ran at half a value per cycle, slower than im2col; so was gathering one 48-column panel at a time, whose
// many short input streams defeated the hardware prefetcher.)
inline void conv_gather_patches(const Conv2dGeometry& s, const PaddedInput& x, const float* img, Index p0, Index w,
                                Index k0, Index k1, Index j0, Index j1, float* dst, Index ld, Index panel) {
  constexpr Index kCols = kSgemmNC;  // columns per pass: the kernel's column block
  if (j0 >= j1 || k0 >= k1) return;   // an empty tile (a forced plan's tiles past the last position)
  if (j1 - j0 > kCols) {
    for (Index j = j0; j < j1; j += kCols)
      conv_gather_patches(s, x, img, p0, w, k0, k1, j, std::min(j1, j + kCols), dst + (j - j0) / kGatherPanel * panel,
                          ld, panel);
    return;
  }
  const Index plane = x.Hp * x.Wp, image = s.C * plane, khw = s.kH * s.kW;
  struct Run {
    Index dst, src, len;
  };
  Run runs[kCols];  // a run is at least one column
  Index nruns = 0;
  for (Index j = j0; j < j1;) {
    const Index p = p0 + j % w, ox = p % s.OW, q = (j - j0) % kGatherPanel;
    const Index len = std::min({s.OW - ox, w - j % w, j1 - j, kGatherPanel - q});
    runs[nruns++] = {(j - j0) / kGatherPanel * panel + q, (j / w) * image + (p / s.OW) * s.sh * x.Wp + ox * s.sw,
                     len};
    j += len;
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  // The input a channel's taps read, [lo, hi) of its plane: prefetched two channels ahead, a share per tap.
  // Without it the loads waited on L3 for 40% of the gather's time (an image batch's input is not in L2).
  const Index lo = runs[0].src, last = nruns - 1;
  const Index hi = runs[last].src + (runs[last].len - 1) * s.sw + (s.kH - 1) * s.dh * x.Wp + (s.kW - 1) * s.dw + 1;
  // Tiles of whole small images span several images' planes: nothing to prefetch there that L2 would keep.
  const Index lines = hi - lo <= plane ? (hi - lo + 15) / 16 : 0, per_tap = (lines + khw - 1) / khw;
  Index c = k0 / khw, t = k0 % khw;
  Index kh = t / s.kW, kw = t % s.kW;
  for (Index k = k0; k < k1; ++k, dst += ld) {
    const float* base = img + c * plane + kh * s.dh * x.Wp + kw * s.dw;
    {
      // As an integer: the address may lie past the input, where a prefetch is harmless but arithmetic is not.
      const std::uintptr_t ahead = reinterpret_cast<std::uintptr_t>(img) + sizeof(float) * ((c + 2) * plane + lo);
      const Index tap = kh * s.kW + kw;
      for (Index l = tap * per_tap; l < std::min(lines, (tap + 1) * per_tap); ++l)
        _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * l), _MM_HINT_T0);
    }
    for (Index r = 0; r < nruns; ++r) {
      const float* src = base + runs[r].src;
      float* d = dst + runs[r].dst;
      const Index len = runs[r].len;
      if (s.sw == 1) {
        for (Index i = 0; i < len; i += 16) {
          const __mmask16 m = sgemm_mask(len - i);
          _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, src + i));
        }
      } else if (s.sw == 2) {
        for (Index i = 0; i < len; i += 16) {
          const Index n = std::min<Index>(16, len - i), span = 2 * n - 1;  // values src[2i .. 2i + span)
          const __m512 lo = _mm512_maskz_loadu_ps(sgemm_mask(span), src + 2 * i);
          const __m512 hi = _mm512_maskz_loadu_ps(sgemm_mask(span - 16), src + 2 * i + 16);
          _mm512_mask_storeu_ps(d + i, sgemm_mask(n), _mm512_permutex2var_ps(lo, even, hi));
        }
      } else {
        for (Index i = 0; i < len; ++i) d[i] = src[i * s.sw];
      }
    }
    if (++kw == s.kW) {
      kw = 0;
      if (++kh == s.kH) kh = 0, ++c;
    }
  }
}
#endif

// How the columns of the product are cut into work items (see the top of this file).
struct Conv2dPlan {
  Index images_per_tile = 1;  // > 1: a tile holds whole images, computed into a scratch block
  Index tiles_per_image = 1;  // > 1: an image's P positions are split into that many tiles
  Index row_blocks = 1;       // > 1: output channels of a group split too (patches gathered first, shared)
};

inline Conv2dPlan conv2d_plan(const Conv2dGeometry& s, std::size_t elem, int threads) {
  // A tile's patches (K x tile) should stay near L2 size (1 MiB per core on the machines measured), but
  // a product narrower than a few hundred columns loses GEMM efficiency to repacking the weights once per
  // tile. Measured on ResNet shapes (bench_conv2d): 256..2048 columns, ~768 KiB of patches.
  // 1x1 stride-1 convs gather nothing, but the same bound keeps the input panel they read cache-sized.
  const Index budget = Index(768) << 10;
  const Index P = s.P(), K = s.K();
  const Index goal = std::min<Index>(2048, std::max<Index>(256, budget / (K * Index(elem))));
  Conv2dPlan plan;
  if (P >= goal) {
    plan.tiles_per_image = (P + goal - 1) / goal;
    // Few items: round their count up to a multiple of the threads so no thread idles at the end.
    const Index items = s.N * plan.tiles_per_image * s.G;
    if (items < 8 * threads && items % threads != 0) {
      const Index want = (items + threads - 1) / threads * threads;
      plan.tiles_per_image = std::min(P, (want + s.N * s.G - 1) / (s.N * s.G));
    }
  } else {
    // Whole images per tile, as many as fit the goal, but no fewer tiles than threads when the batch
    // allows, a multiple of the threads when it is small, and all tiles within one image of each other.
    Index tiles = (s.N + std::max<Index>(1, goal / P) - 1) / std::max<Index>(1, goal / P);
    if (tiles * s.G < 8 * threads) tiles = (tiles * s.G + threads - 1) / threads * threads / s.G;
    tiles = std::min(s.N, std::max<Index>(1, tiles));
    plan.images_per_tile = (s.N + tiles - 1) / tiles;
  }
  const Index tiles = plan.tiles_per_image > 1 ? s.N * plan.tiles_per_image
                                               : (s.N + plan.images_per_tile - 1) / plan.images_per_tile;
  const Index items = tiles * s.G;
  if (items < threads) plan.row_blocks = std::max<Index>(1, std::min<Index>((threads + items - 1) / items, s.Og / 16));
  return plan;
}

// `forced` replaces the plan, so that tests reach every path whatever the sizes (and benchmarks can
// compare plans); it is trusted as given.
template <class T>
void conv2d_gemm(const Conv2dGeometry& s, const T* in, const T* weight, const T* bias, T* out, bool relu,
                 const T* residual, const Context& ctx, const Conv2dPlan* forced = nullptr) {
  const Index K = s.K(), P = s.P(), HW = s.H * s.W, Og = s.Og;
  const bool direct = s.kH == 1 && s.kW == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
  const Conv2dPlan plan = forced ? *forced : conv2d_plan(s, sizeof(T), ctx.num_threads());
  const bool multi = plan.images_per_tile > 1;
  // Tiles of whole GEMM-kernel panels (48 columns with fovea's float kernel) when that leaves no tile
  // empty: 784 positions in 3 tiles of 288, 288, 208 rather than 262 each, which the kernel ran as 288.
  Index tile = (P + plan.tiles_per_image - 1) / plan.tiles_per_image;
  const Index aligned = (tile + gemm_col_align<T>() - 1) / gemm_col_align<T>() * gemm_col_align<T>();
  if ((plan.tiles_per_image - 1) * aligned < P) tile = aligned;
  const Index tiles = multi ? (s.N + plan.images_per_tile - 1) / plan.images_per_tile : s.N * plan.tiles_per_image;
  const Index items = tiles * s.G, rb = plan.row_blocks;
  const Index rows_per_block = (Og + rb - 1) / rb;

  // Tile t of group g: images [n0, n1) and positions [p0, p1) of each; cols = (n1 - n0) * (p1 - p0).
  struct Span {
    Index n0, n1, p0, p1;
    Index cols() const { return (n1 - n0) * (p1 - p0); }
  };
  auto span = [&](Index t) {
    if (multi) return Span{t * plan.images_per_tile, std::min(s.N, (t + 1) * plan.images_per_tile), 0, P};
    const Index n = t / plan.tiles_per_image, j = t % plan.tiles_per_image;
    return Span{n, n + 1, std::min(P, j * tile), std::min(P, (j + 1) * tile)};
  };
#ifdef FOVEA_GEMM_KERNEL
  // In float every gather reads a padded copy of the input, made once here (no copy without padding, so
  // 1x1 convs, which gather only for tiles of several images, pay nothing).
  PaddedInput padded{nullptr, 0, 0};
  if constexpr (std::is_same_v<T, float>) padded = conv_pad_input(s, in, ctx);
#endif
  // Rows [k0, k1) x columns [j0, j1) of the patch matrix of tile sp, group g, laid out as
  // gemm_serial_gathered asks; column j is position sp.p0 + j % w of image sp.n0 + j / w.
  auto gather = [&](const Span& sp, Index g, Index k0, Index k1, Index j0, Index j1, T* dst, Index ld, Index panel) {
    const Index w = sp.p1 - sp.p0;
#ifdef FOVEA_GEMM_KERNEL
    if constexpr (std::is_same_v<T, float>)
      if (padded.data) {
        const float* img = padded.data + (sp.n0 * s.C + g * s.Cg) * padded.Hp * padded.Wp;
        return conv_gather_patches(s, padded, img, sp.p0, w, k0, k1, j0, j1, dst, ld, panel);
      }
#endif
    // im2col (double, or no AVX-512), one group of 48 columns at a time unless they are contiguous.
    const Index step = panel == kGatherPanel ? j1 - j0 : kGatherPanel;
    for (Index jg = j0; jg < j1; jg += step) {
      const Index jg1 = std::min(j1, jg + step);
      T* d = dst + (jg - j0) / kGatherPanel * panel;
      for (Index j = jg; j < jg1;) {
        const Index n = sp.n0 + j / w, q = j % w, len = std::min(w - q, jg1 - j);
        conv_im2col(s, in + (n * s.C + g * s.Cg) * HW, sp.p0 + q, sp.p0 + q + len, k0, k1, d + (j - jg), ld);
        j += len;
      }
    }
  };
  // Output rows [r0, r1) of group g for tile t; product(rows, A, C, ldc) adds weight rows A times the
  // tile's patches onto C.
  auto compute = [&](const Span& sp, Index g, Index r0, Index r1, const auto& product) {
    const Index rows = r1 - r0, o0 = g * Og + r0, cols = sp.cols(), w = sp.p1 - sp.p0;
    const T* A = weight + o0 * K;
    const T* b = bias ? bias + o0 : nullptr;
    if (!multi) {
      T* C = out + (sp.n0 * s.O + o0) * P + sp.p0;
      conv_prefill(C, P, rows, cols, b, residual ? residual + (C - out) : nullptr, P);
      product(rows, A, C, P);
      if (relu) conv_relu(C, P, rows, cols);
      return;
    }
    // Whole images side by side: the product goes to scratch, then each image's block to its place.
    T* tmp = conv_scratch<T, 1>(std::size_t(rows * cols));
    for (Index n = sp.n0; n < sp.n1; ++n)
      conv_prefill(tmp + (n - sp.n0) * w, cols, rows, w, b, residual ? residual + (n * s.O + o0) * P : nullptr, P);
    product(rows, A, tmp, cols);
    if (relu) conv_relu(tmp, cols, rows, cols);
    for (Index n = sp.n0; n < sp.n1; ++n)
      for (Index r = 0; r < rows; ++r)
        std::copy_n(tmp + r * cols + (n - sp.n0) * w, w, out + (n * s.O + o0 + r) * P);
  };
  // The product with a stored patch matrix B (K x cols, row stride ldb).
  auto stored = [&](const Span& sp, const T* B, Index ldb) {
    return [&, sp, B, ldb](Index rows, const T* A, T* C, Index ldc) {
      gemm_serial<T>(false, false, rows, sp.cols(), K, T(1), A, K, B, ldb, T(1), C, ldc);
    };
  };

  if (rb == 1) {
    ctx.parallel_for(items, [&](Index i) {
      const Index t = i / s.G, g = i % s.G;
      const Span sp = span(t);
      if (direct && !multi) {
        compute(sp, g, 0, Og, stored(sp, in + (sp.n0 * s.C + g * s.Cg) * HW + sp.p0, HW));
      } else {
        compute(sp, g, 0, Og, [&](Index rows, const T* A, T* C, Index ldc) {
          auto patches = [&](Index k0, Index k1, Index j0, Index j1, T* dst, Index ld, Index panel) {
            gather(sp, g, k0, k1, j0, j1, dst, ld, panel);
          };
          gemm_serial_gathered<T>(rows, sp.cols(), K, T(1), A, K, patches, T(1), C, ldc);
        });
      }
    });
    return;
  }
  // Fewer tiles than threads: gather every tile once (split over K), then split output channels.
  const Index tile_elems = K * (multi ? plan.images_per_tile * P : tile);
  T* cols_all = nullptr;
  if (!(direct && !multi)) {
    cols_all = conv_scratch<T, 2>(std::size_t(items * tile_elems));
    const Index kparts = std::max<Index>(1, std::min<Index>(K, 4 * ctx.num_threads()));
    const Index kper = (K + kparts - 1) / kparts;
    ctx.parallel_for(items * kparts, [&](Index i) {
      const Index it = i / kparts, kp = i % kparts;
      const Index k0 = std::min(K, kp * kper), k1 = std::min(K, k0 + kper);
      const Span sp = span(it / s.G);
      if (k0 < k1)
        gather(sp, it % s.G, k0, k1, 0, sp.cols(), cols_all + it * tile_elems + k0 * sp.cols(), sp.cols(),
               kGatherPanel);
    });
  }
  ctx.parallel_for(items * rb, [&](Index i) {
    const Index it = i / rb, r = i % rb;
    const Index r0 = std::min(Og, r * rows_per_block), r1 = std::min(Og, r0 + rows_per_block);
    if (r0 >= r1) return;
    const Span sp = span(it / s.G);
    const Index g = it % s.G;
    if (cols_all)
      compute(sp, g, r0, r1, stored(sp, cols_all + it * tile_elems, sp.cols()));
    else
      compute(sp, g, r0, r1, stored(sp, in + (sp.n0 * s.C + g * s.Cg) * HW + sp.p0, HW));
  });
}

// Which kernel runs a conv (see the top of this file).
enum class Conv2dAlgorithm { im2col, depthwise, winograd, direct };

// Whether conv2d_direct can run this conv (and is compiled in).
inline bool conv2d_direct_applies(const Conv2dGeometry& s) {
#ifdef FOVEA_CONV2D_DIRECT
  return s.G == 1 && s.dh == 1 && s.dw == 1 && s.sh == s.sw && s.kH * s.kW > 1 && s.kH * s.kW <= 64;
#else
  (void)s;
  return false;
#endif
}

inline WinogradShape winograd_shape(const Conv2dGeometry& s) {
  return {s.N, s.C, s.H, s.W, s.O, s.ph, s.pw, s.OH, s.OW};
}

// 3x3, stride 1, dilation 1, groups 1: the convs Winograd F(4x4, 3x3) computes.
inline bool conv2d_winograd_applies(const Conv2dGeometry& s) {
  return s.kH == 3 && s.kW == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 && s.G == 1;
}

// Process-wide switch for Winograd, on by default: tests and benchmarks turn it off to compare whole models
// with their im2col run.
inline std::atomic<bool>& conv2d_winograd_enabled() {
  static std::atomic<bool> on{true};
  return on;
}

// `cached`: the caller keeps the transformed weights (a module), so the weight transform costs nothing here.
// `elem`: sizeof the scalar type.
inline Conv2dAlgorithm conv2d_algorithm(const Conv2dGeometry& s, bool cached, std::size_t elem = sizeof(float)) {
  if (s.Cg == 1 && s.G > 1) return Conv2dAlgorithm::depthwise;
  const bool winograd_on = conv2d_winograd_enabled().load(std::memory_order_relaxed);
  if (winograd_on && conv2d_winograd_applies(s) && s.C >= 16 && s.O >= 16) {
    const WinogradShape w = winograd_shape(s);
    const Index tiles = w.tiles();
    // Winograd pays 36 products per tile whatever part of it is inside the image: not for images much
    // smaller than whole tiles. Its products are (O x C) x tiles, weights 4x the size of im2col's, so with
    // only a few tiles (late layers at batch 1) they are bound by reading the weights and lose. Without a
    // cache the weight transform (36 O C values written) must be repaid too. Measured on ResNet shapes
    // (bench_conv2d): 16 tiles (14x14, batch 1) win with the transform cached, 4 (7x7) lose; uncached,
    // 256 -> 256 channels need about 256 tiles.
    const bool mostly_inside = 2 * s.OH * s.OW >= 16 * w.TH() * w.TW();
    const Index enough = cached ? 16 : std::max<Index>(64, s.O * s.C / 256);
    if (mostly_inside && tiles >= enough) return Conv2dAlgorithm::winograd;
  }
#ifdef FOVEA_CONV2D_DIRECT
  // Strided convs with a real kernel (the stem, stride-2 3x3s) when most computed positions are outputs
  // and the weights are read few times: the direct kernel streams all of them once per chunk of 48
  // positions, so they must stay in L2. Not where fovea's float GEMM kernel runs: there the patches are
  // gathered straight into its packed panels (conv_gather_patches), which measured (bench_conv2d
  // BM_conv2d vs BM_conv2d_im2col, 1 and 2 threads) 1.1-1.3x faster than the direct kernel on every
  // stride-2 3x3 of ResNet and even with it on the stem. Elsewhere (double, builds without AVX-512) the
  // direct kernel beat im2col + Eigen's GEMM 1.3-1.6x.
  const Index weight_bytes = s.O * s.K() * Index(elem);
#ifdef FOVEA_GEMM_KERNEL
  const bool gathers = elem == sizeof(float);
#else
  const bool gathers = false;
#endif
  if (!gathers && conv2d_direct_applies(s) && s.sh >= 2 && DirectLayout(s, 48).useful(s) >= 0.75 &&
      weight_bytes <= (Index(768) << 10))
    return Conv2dAlgorithm::direct;
#endif
  return Conv2dAlgorithm::im2col;
}

// `forced` (a GEMM plan: im2col whatever the shape), `forced_winograd` (Winograd with that plan) or
// `forced_direct` replace the choice, so that tests reach every path; the plan is trusted as given, and a
// kernel forced on a conv it cannot run falls back to im2col.
// `cache` holds the transformed weights when the caller keeps them.
template <class T>
void conv2d_run(const Conv2dGeometry& s, const T* input, const T* weight, const typename conv_same<T>::type* bias,
                T* out, bool relu, const typename conv_same<T>::type* residual, const Context& ctx,
                const Conv2dPlan* forced = nullptr, const WinogradWeights<typename conv_same<T>::type>* cache = nullptr,
                const WinogradPlan* forced_winograd = nullptr, bool forced_direct = false) {
  Conv2dAlgorithm algo = forced            ? Conv2dAlgorithm::im2col
                         : forced_winograd ? Conv2dAlgorithm::winograd
                         : forced_direct   ? Conv2dAlgorithm::direct
                                           : conv2d_algorithm(s, cache != nullptr, sizeof(T));
  if ((algo == Conv2dAlgorithm::winograd && !conv2d_winograd_applies(s)) ||
      (algo == Conv2dAlgorithm::direct && !conv2d_direct_applies(s)))
    algo = Conv2dAlgorithm::im2col;
  if (algo == Conv2dAlgorithm::direct) {
#ifdef FOVEA_CONV2D_DIRECT
    conv2d_direct(s, input, weight, bias, out, relu, residual, ctx);
#endif
  } else if (algo == Conv2dAlgorithm::depthwise) {
    conv2d_depthwise(s, input, weight, bias, out, relu, residual, ctx);
  } else if (algo == Conv2dAlgorithm::winograd) {
    std::shared_ptr<const std::vector<T>> u;
    if (cache) {
      u = cache->get(weight, s.O, s.C, ctx);
    } else {
      auto fresh = std::make_shared<std::vector<T>>(std::size_t(36 * s.O * s.C));
      winograd_transform_weight(weight, s.O, s.C, fresh->data(), ctx);
      u = std::move(fresh);
    }
    conv2d_winograd(winograd_shape(s), input, u->data(), bias, out, relu, residual, ctx, forced_winograd);
  } else {
    conv2d_gemm(s, input, weight, bias, out, relu, residual, ctx, forced);
  }
}

// input (N, C, H, W) at `input`, weight (O, C/groups, kH, kW), bias (O) or null -> out (N, O, OH, OW),
// preallocated by the caller; out = relu?(conv2d(input) + bias + residual) in one pass over out.
// For modules that own their buffers (ResNet: BatchNorm folded into weight and bias, then conv + bias +
// identity + ReLU fused). residual is null or has out's shape; it may be `out` itself, but input must not
// overlap out. Sizes are checked as in conv2d (bias's length cannot be: it must be O).
template <class T>
void conv2d_into(const T* input, Index N, Index C, Index H, Index W, const Tensor<T, 4>& weight,
                 const typename conv_same<T>::type* bias, const Conv2dOptions& options, T* out, bool relu,
                 const typename conv_same<T>::type* residual, const Context& ctx = default_context(),
                 const WinogradWeights<typename conv_same<T>::type>* winograd = nullptr) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "conv2d: float or double");
  const std::array<Index, 4> in{N, C, H, W};
  const std::array<Index, 4> w{weight.dimension(0), weight.dimension(1), weight.dimension(2), weight.dimension(3)};
  const Conv2dGeometry s = conv2d_check(in, w, -1, options);
  if (!input || !out)
    throw_shape("conv2d: expected non-null input and output pointers", conv2d_shapes(in, w, -1, nullptr));
  conv2d_run(s, input, weight.data(), bias, out, relu, residual, ctx, nullptr, winograd);
}

template <class T>
Tensor<T, 4> conv2d_impl(const Tensor<T, 4>& input, const Tensor<T, 4>& weight, const Tensor<T, 1>* bias,
                         const Conv2dOptions& options, const Context& ctx,
                         const WinogradWeights<typename conv_same<T>::type>* winograd = nullptr) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "conv2d: float or double");
  const auto& d = input.dimensions();
  const std::array<Index, 4> in{d[0], d[1], d[2], d[3]};
  const std::array<Index, 4> w{weight.dimension(0), weight.dimension(1), weight.dimension(2), weight.dimension(3)};
  const Conv2dGeometry s = conv2d_check(in, w, bias ? bias->dimension(0) : -1, options);
  Tensor<T, 4> out(s.N, s.O, s.OH, s.OW);
  conv2d_run(s, input.data(), weight.data(), bias ? bias->data() : nullptr, out.data(), false, nullptr, ctx, nullptr,
             winograd);
  return out;
}

}  // namespace detail

// input (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) -> (N, O, OH, OW)
template <class T>
Tensor<T, 4> conv2d(const Tensor<T, 4>& input, const Tensor<T, 4>& weight, const Tensor<T, 1>& bias,
                    const Conv2dOptions& options = {}, const Context& ctx = default_context()) {
  return detail::conv2d_impl(input, weight, &bias, options, ctx);
}

// input (N, C, H, W), weight (O, C/groups, kH, kW) -> (N, O, OH, OW), no bias
template <class T>
Tensor<T, 4> conv2d(const Tensor<T, 4>& input, const Tensor<T, 4>& weight, const Conv2dOptions& options = {},
                    const Context& ctx = default_context()) {
  return detail::conv2d_impl<T>(input, weight, nullptr, options, ctx);
}

}  // namespace fovea
