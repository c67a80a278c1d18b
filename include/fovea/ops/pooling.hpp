#pragma once
// Pooling over the last two dims of (N, C, H, W) with torch.nn.functional's names, defaults and results:
// max_pool2d, avg_pool2d, adaptive_avg_pool2d, and pooling_output_size (ATen's pooling_output_shape).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {

// Pool2dOptions(3).stride(2).padding(1).dilation(1).ceil_mode(false).count_include_pad(true); every size
// takes one number or {h, w}. stride defaults to the kernel, as in PyTorch.
struct Pool2dOptions {
  explicit Pool2dOptions(Size2 kernel) : kernel_(kernel), stride_(kernel) {}
  Pool2dOptions& stride(Size2 v) {
    stride_ = v;
    return *this;
  }
  Pool2dOptions& padding(Size2 v) {
    padding_ = v;
    return *this;
  }
  Pool2dOptions& dilation(Size2 v) {
    dilation_ = v;
    return *this;
  }
  Pool2dOptions& ceil_mode(bool v) {
    ceil_mode_ = v;
    return *this;
  }
  Pool2dOptions& count_include_pad(bool v) {
    count_include_pad_ = v;
    return *this;
  }

  Size2 kernel_, stride_, padding_{0}, dilation_{1};
  bool ceil_mode_ = false, count_include_pad_ = true;
};

namespace detail {

// Saturating at the largest Index instead of overflowing: a length that large never fits anything, so
// every comparison it feeds still comes out right.
inline Index sat_add(Index a, Index b) {
  Index r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<Index>::max() : r;
}
inline Index sat_mul(Index a, Index b) {
  Index r;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<Index>::max() : r;
}
// Rounding toward -inf and +inf (C++ division truncates toward zero); b > 0.
inline Index floor_div(Index a, Index b) { return a / b - (a % b != 0 && a < 0); }
inline Index ceil_div(Index a, Index b) { return a / b + (a % b != 0 && a > 0); }

}  // namespace detail

// Output length of a window of `kernel` taps `dilation` apart sliding by `stride` over `in` with `pad` on
// both sides: floor (or ceil) of (in + 2 pad - dilation (kernel - 1) - 1) / stride, plus one. In ceil_mode
// a last window that would start past the input and its left padding is dropped, as PyTorch does. The
// result is 0 or negative when not even one window fits.
inline Index pooling_output_size(Index in, Index kernel, Index pad, Index stride, Index dilation, bool ceil_mode) {
  if (in < 0 || kernel < 1 || pad < 0 || stride < 1 || dilation < 1)
    detail::throw_shape(
        "pooling_output_size: expected in >= 0, kernel >= 1, pad >= 0, stride >= 1, dilation >= 1, "
        "but got in ",
        in, ", kernel ", kernel, ", pad ", pad, ", stride ", stride, ", dilation ", dilation);
  const Index reach = detail::sat_add(detail::sat_mul(dilation, kernel - 1), 1);
  const Index room = detail::sat_add(in, detail::sat_mul(pad, 2)) - reach;  // both terms >= 0: no overflow
  Index out = (ceil_mode ? detail::ceil_div(room, stride) : detail::floor_div(room, stride)) + 1;
  if (ceil_mode && detail::sat_mul(out - 1, stride) >= detail::sat_add(in, pad)) --out;
  return out;
}

namespace detail {

// The sizes of one pooling call, checked.
struct Pool2dGeometry {
  Index n, c, h, w, oh, ow;
};

inline std::string pool2d_args_str(const Pool2dOptions& o, bool is_max) {
  return cat("kernel_size ", size2_str(o.kernel_), ", stride ", size2_str(o.stride_), ", padding ",
             size2_str(o.padding_), ", dilation ", size2_str(o.dilation_), ", ceil_mode ",
             o.ceil_mode_ ? "true" : "false",
             is_max ? std::string() : cat(", count_include_pad ", o.count_include_pad_ ? "true" : "false"));
}

// pool2d_shape_check's rules, every one a ShapeError naming the op, the input and all the options.
template <class T>
Pool2dGeometry check_pool2d(const char* op, const Tensor<T, 4>& input, const Pool2dOptions& o, bool is_max) {
  const auto fail = [&](const auto&... what) {
    throw_shape(op, ": ", what..., "; input ", shape_str(input), ", ", pool2d_args_str(o, is_max));
  };
  const auto positive = [](Size2 s) { return s.h > 0 && s.w > 0; };
  // ATen narrows these to int; past that its kernels would overflow, so it refuses them and so do we.
  const auto fits_int = [](Size2 s) {
    return s.h <= std::numeric_limits<int>::max() && s.w <= std::numeric_limits<int>::max();
  };
  if (!positive(o.kernel_)) fail("expected kernel_size > 0, but got ", size2_str(o.kernel_));
  if (!positive(o.stride_)) fail("expected stride > 0, but got ", size2_str(o.stride_));
  if (is_max && !positive(o.dilation_)) fail("expected dilation > 0, but got ", size2_str(o.dilation_));
  if (!is_max && !(o.dilation_ == Size2(1)))
    fail("dilation applies to max pooling only, expected dilation (1, 1), but got ", size2_str(o.dilation_));
  if (o.padding_.h < 0 || o.padding_.w < 0) fail("expected padding >= 0, but got ", size2_str(o.padding_));
  if (!fits_int(o.kernel_) || !fits_int(o.stride_) || !fits_int(o.padding_) || !fits_int(o.dilation_))
    fail("expected kernel_size, stride, padding and dilation to fit in int (at most ", std::numeric_limits<int>::max(),
         ")");
  // PyTorch bounds the padding by half the kernel itself, not the dilated extent.
  if (o.padding_.h > o.kernel_.h / 2 || o.padding_.w > o.kernel_.w / 2)
    fail("expected padding <= kernel_size / 2, but got padding ", size2_str(o.padding_), " with kernel_size ",
         size2_str(o.kernel_));
  const Index n = input.dimension(0), c = input.dimension(1), h = input.dimension(2), w = input.dimension(3);
  if (c == 0 || h == 0 || w == 0)
    fail("expected input with non-zero channels, height and width (only the batch may be 0), but got ",
         shape_str(input));
  const Index oh = pooling_output_size(h, o.kernel_.h, o.padding_.h, o.stride_.h, o.dilation_.h, o.ceil_mode_);
  const Index ow = pooling_output_size(w, o.kernel_.w, o.padding_.w, o.stride_.w, o.dilation_.w, o.ceil_mode_);
  if (oh < 1 || ow < 1) fail("output size (", oh, ", ", ow, ") is too small, expected at least (1, 1)");
  return {n, c, h, w, oh, ow};
}

// The taps of the window of output `o` that land inside the input: [first, last), empty when none do.
inline std::pair<Index, Index> live_window(Index o, Index in, Index kernel, Index pad, Index stride, Index dilation) {
  const Index start = o * stride - pad;
  const Index lo = start < 0 ? ceil_div(-start, dilation) : 0;
  const Index hi = start > in - 1 ? 0 : std::min(kernel, floor_div(in - 1 - start, dilation) + 1);
  return {lo, std::max(lo, hi)};
}

// One tap of the window along the width: it reads input column o * stride + offset for the output
// columns o in [lo, hi), the ones where that column is inside the input.
struct Tap {
  Index lo, hi, offset;
};

// The taps that land inside the input for at least one output column, in window order. Found from the
// outputs' windows, so that their count stays below out * in however large the kernel is.
inline std::vector<Tap> live_taps(Index in, Index out, Index kernel, Index pad, Index stride, Index dilation) {
  // The windows' live ranges slide toward smaller taps as the column grows, so walking the columns from
  // the right yields them sorted, ready to merge.
  std::vector<std::pair<Index, Index>> ranges;
  for (Index o = out - 1; o >= 0; --o) {
    const auto [lo, hi] = live_window(o, in, kernel, pad, stride, dilation);
    if (lo == hi) continue;
    if (!ranges.empty() && lo <= ranges.back().second)
      ranges.back().second = std::max(ranges.back().second, hi);
    else
      ranges.emplace_back(lo, hi);
  }
  std::vector<Tap> taps;
  for (const auto& [b, e] : ranges)
    for (Index k = b; k < e; ++k) {
      const Index offset = k * dilation - pad;
      const Index lo = offset < 0 ? ceil_div(-offset, stride) : 0;
      const Index hi = std::min(out, floor_div(in - 1 - offset, stride) + 1);
      if (lo < hi) taps.push_back({lo, hi, offset});
    }
  return taps;
}

// acc[i] = f(acc[i], src[i * stride]) for i < n. Strides 1 and 2 get their own loops so that the compiler
// vectorizes them; the order of updates per output is unchanged.
template <class T, class F>
inline void strided_update(T* __restrict acc, const T* __restrict src, Index n, Index stride, F f) {
  if (stride == 1) {
    for (Index i = 0; i < n; ++i) acc[i] = f(acc[i], src[i]);
  } else if (stride == 2) {
    for (Index i = 0; i < n; ++i) acc[i] = f(acc[i], src[2 * i]);
  } else {
    for (Index i = 0; i < n; ++i) acc[i] = f(acc[i], src[i * stride]);
  }
}

// Visits every in-input tap of every output of one plane in PyTorch's order (window row, then column),
// vectorized across an output row: acc(out_row + o) = f(acc, input) for each tap in turn.
template <class T, class F>
void pool_plane(const T* in, T* out, const Pool2dGeometry& g, const Pool2dOptions& o, const std::vector<Tap>& taps,
                F f) {
  for (Index oh = 0; oh < g.oh; ++oh) {
    T* orow = out + oh * g.ow;
    const auto [kh0, kh1] = live_window(oh, g.h, o.kernel_.h, o.padding_.h, o.stride_.h, o.dilation_.h);
    for (Index kh = kh0; kh < kh1; ++kh) {
      const T* irow = in + (oh * o.stride_.h - o.padding_.h + kh * o.dilation_.h) * g.w;
      for (const Tap& t : taps)
        strided_update(orow + t.lo, irow + t.lo * o.stride_.w + t.offset, t.hi - t.lo, o.stride_.w, f);
    }
  }
}

// Runs plane(p) for p in [0, planes), in contiguous ranges per thread; small jobs stay on the caller.
template <class F>
void for_each_plane(const Context& ctx, Index planes, Index cost_per_plane, F&& plane) {
  constexpr Index kMinWorkPerThread = 1 << 15;  // below ~30k element visits a hand-off costs more than it saves
  const Index grain = std::max<Index>(1, kMinWorkPerThread / std::max<Index>(1, cost_per_plane));
  ctx.parallel_range(planes, grain, [&](Index b, Index e) {
    for (Index p = b; p < e; ++p) plane(p);
  });
}

// Sum of p[0, n) in 16 interleaved partial sums, which the compiler keeps in one or two vector
// registers, then added in lane order: a fixed order for each n, so the result does not depend on the
// instruction set. (Folding the lanes pairwise measured 2x slower on 7x7 bins: GCC spills it.)
template <class T>
T lane_sum(const T* p, Index n) {
  constexpr int kLanes = 16;
  if (n < kLanes) {  // short bin rows: the lanes would cost more than they save
    T sum = 0;
    for (Index i = 0; i < n; ++i) sum += p[i];
    return sum;
  }
  T part[kLanes] = {};
  Index i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += p[i + l];
  for (int l = 0; i < n; ++i, ++l) part[l] += p[i];
  T sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

template <class T>
constexpr void require_float() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "pooling: float or double");
}

}  // namespace detail

// input (N, C, H, W) -> (N, C, OH, OW); padding acts as -inf (a dilated window can hold only padding and
// give -inf, as in PyTorch) and a NaN in a window makes that output NaN.
template <class T>
Tensor<T, 4> max_pool2d(const Tensor<T, 4>& input, const Pool2dOptions& options,
                        const Context& ctx = default_context()) {
  detail::require_float<T>();
  const auto g = detail::check_pool2d("max_pool2d", input, options, true);
  const auto taps =
      detail::live_taps(g.w, g.ow, options.kernel_.w, options.padding_.w, options.stride_.w, options.dilation_.w);
  Tensor<T, 4> out(g.n, g.c, g.oh, g.ow);
  const T* in = input.data();
  T* o = out.data();
  // PyTorch's rule, keeping the later value only when it is larger or NaN: the first NaN sticks unless
  // another NaN replaces it, and ties keep the first value (which decides the sign of a zero).
  const auto take_max = [](T acc, T v) { return (v > acc || v != v) ? v : acc; };
  const Index cost =
      g.oh * g.ow * std::min(options.kernel_.h, g.h) * std::min<Index>(Index(taps.size()), g.w) + g.h * g.w;
  detail::for_each_plane(ctx, g.n * g.c, cost, [&](Index p) {
    T* op = o + p * g.oh * g.ow;
    std::fill(op, op + g.oh * g.ow, -std::numeric_limits<T>::infinity());
    detail::pool_plane(in + p * g.h * g.w, op, g, options, taps, take_max);
  });
  return out;
}

// input (N, C, H, W) -> (N, C, OH, OW); each output is its window's sum over the input divided by the
// window's size clipped to input + padding (count_include_pad) or to the input alone.
template <class T>
Tensor<T, 4> avg_pool2d(const Tensor<T, 4>& input, const Pool2dOptions& options,
                        const Context& ctx = default_context()) {
  detail::require_float<T>();
  const auto g = detail::check_pool2d("avg_pool2d", input, options, false);
  const Size2 k = options.kernel_, s = options.stride_, pd = options.padding_;
  const auto taps = detail::live_taps(g.w, g.ow, k.w, pd.w, s.w, 1);
  // Window extent per output row and column, clipped the way ATen does: the end to input + padding (this
  // is what ceil_mode's overhanging last window needs), then both ends to the input.
  const auto extents = [&](Index count, Index len, Index kernel, Index pad, Index stride) {
    std::vector<Index> ext(count);
    for (Index i = 0; i < count; ++i) {
      const Index b = i * stride - pad, e = std::min(b + kernel, len + pad);
      ext[i] = options.count_include_pad_ ? e - b : std::max<Index>(0, std::min(e, len) - std::max<Index>(b, 0));
    }
    return ext;
  };
  const std::vector<Index> eh = extents(g.oh, g.h, k.h, pd.h, s.h), ew = extents(g.ow, g.w, k.w, pd.w, s.w);
  Tensor<T, 4> out(g.n, g.c, g.oh, g.ow);
  const T* in = input.data();
  T* o = out.data();
  const auto add = [](T acc, T v) { return acc + v; };
  const Index cost = g.oh * g.ow * std::min(k.h, g.h) * std::min<Index>(Index(taps.size()), g.w) + g.h * g.w;
  detail::for_each_plane(ctx, g.n * g.c, cost, [&](Index p) {
    T* op = o + p * g.oh * g.ow;
    std::fill(op, op + g.oh * g.ow, T(0));
    detail::pool_plane(in + p * g.h * g.w, op, g, options, taps, add);
    for (Index i = 0; i < g.oh; ++i)
      for (Index j = 0; j < g.ow; ++j) {
        const Index count = eh[i] * ew[j];
        // A window with nothing of the input in it stays 0, as in ATen (padding <= kernel / 2 leaves none
        // without dilation, but the guard keeps 0 / 0 out).
        if (count > 0) op[i * g.ow + j] /= T(count);
      }
  });
  return out;
}

// input (N, C, H, W) -> (N, C, OH, OW) = output_size; output (i, j) averages input rows
// [floor(i H / OH), ceil((i + 1) H / OH)) and the columns likewise.
template <class T>
Tensor<T, 4> adaptive_avg_pool2d(const Tensor<T, 4>& input, std::array<Index, 2> output_size,
                                 const Context& ctx = default_context()) {
  detail::require_float<T>();
  const Index n = input.dimension(0), c = input.dimension(1), h = input.dimension(2), w = input.dimension(3);
  const Index oh = output_size[0], ow = output_size[1];
  const auto fail = [&](const auto&... what) {
    detail::throw_shape("adaptive_avg_pool2d: ", what..., "; input ", detail::shape_str(input), ", output_size (", oh,
                        ", ", ow, ")");
  };
  if (oh < 1 || ow < 1) fail("expected output_size > 0, but got (", oh, ", ", ow, ")");
  if (h == 0 || w == 0)
    fail("expected input with non-zero height and width (the batch and channels may be 0), but got ",
         detail::shape_str(input));
  if (detail::sat_mul(detail::sat_mul(detail::sat_mul(n, c), oh), ow) == std::numeric_limits<Index>::max() ||
      detail::sat_mul(detail::sat_add(oh, 1), h) == std::numeric_limits<Index>::max() ||
      detail::sat_mul(detail::sat_add(ow, 1), w) == std::numeric_limits<Index>::max())
    fail("output_size too large");
  Tensor<T, 4> out(n, c, oh, ow);
  if (out.size() == 0) return out;
  // Bin edges per output row and column, shared by every plane.
  const auto bins = [](Index count, Index len) {
    std::vector<std::pair<Index, Index>> b(count);
    for (Index i = 0; i < count; ++i) b[i] = {i * len / count, detail::ceil_div((i + 1) * len, count)};
    return b;
  };
  const auto bh = bins(oh, h), bw = bins(ow, w);
  const T* in = input.data();
  T* o = out.data();
  // Element visits per plane; bins overlap when the output is larger than the input, so sum them.
  Index rows = 0, cols = 0;
  for (const auto& [b0, b1] : bh) rows += b1 - b0;
  for (const auto& [b0, b1] : bw) cols += b1 - b0;
  detail::for_each_plane(ctx, n * c, detail::sat_mul(rows, cols), [&](Index p) {
    const T* ip = in + p * h * w;
    T* op = o + p * oh * ow;
    for (Index i = 0; i < oh; ++i) {
      const auto [h0, h1] = bh[i];
      for (Index j = 0; j < ow; ++j) {
        const auto [w0, w1] = bw[j];
        T sum = 0;
        // Full-width bins are one contiguous block: a single vectorized sum (the 1x1 head of every ResNet).
        if (w0 == 0 && w1 == w) {
          sum = detail::lane_sum(ip + h0 * w, (h1 - h0) * w);
        } else {
          for (Index r = h0; r < h1; ++r) sum += detail::lane_sum(ip + r * w + w0, w1 - w0);
        }
        op[i * ow + j] = sum / T((h1 - h0) * (w1 - w0));
      }
    }
  });
  return out;
}

}  // namespace fovea
