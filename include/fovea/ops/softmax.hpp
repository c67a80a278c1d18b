#pragma once
// softmax and log_softmax along one dimension, PyTorch's semantics: the row maximum is subtracted first, so
// rows of huge values (1e4) neither overflow nor lose their small entries; a row that is all -inf, or holds
// +inf or NaN, gives NaN, as in PyTorch.
#include <algorithm>
#include <cmath>
#include <string>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/activation.hpp"
#include "fovea/ops/flatten.hpp"

namespace fovea {
namespace detail {

// One contiguous row of D values: y = exp(x - max) / sum, or (x - max) - log(sum) for Log. The max and the
// sum run in L independent lanes (one 512-bit register's worth), which the compiler vectorises where a
// single running sum would have to stay serial; L partial sums also round less than one.
template <bool Log, class T>
void softmax_row(const T* __restrict x, T* __restrict y, Index d) {
  constexpr Index L = 64 / sizeof(T);
  const Index full = d - d % L;
  T lane[L];
  for (Index l = 0; l < L; ++l) lane[l] = x[0];
  // NaN in x reaches every output of the row through x - m below, so max need not propagate it.
  for (Index i = 0; i < full; i += L)
    for (Index l = 0; l < L; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  T m = x[0];
  for (Index l = 0; l < L; ++l) m = lane[l] > m ? lane[l] : m;
  for (Index i = full; i < d; ++i) m = x[i] > m ? x[i] : m;

  for (Index l = 0; l < L; ++l) lane[l] = T(0);
  for (Index i = 0; i < full; i += L)
    for (Index l = 0; l < L; ++l) {
      const T e = vexp(x[i + l] - m);
      y[i + l] = e;
      lane[l] += e;
    }
  T s = T(0);
  for (Index i = full; i < d; ++i) {
    y[i] = vexp(x[i] - m);
    s += y[i];
  }
  for (Index l = 0; l < L; ++l) s += lane[l];

  if constexpr (Log) {
    const T ls = std::log(s);
    for (Index i = 0; i < d; ++i) y[i] = (x[i] - m) - ls;
  } else {
    const T inv = T(1) / s;
    for (Index i = 0; i < d; ++i) y[i] *= inv;
  }
}

// Columns c0..c0+w of one (D, inner) slab, reduced along D: vectorised across the w columns, which are
// contiguous, so a strided softmax costs about what a contiguous one does. Each column sums its D terms one
// after another, so float sums in double (a float sum of 300 terms is already off by ~1e-6).
template <bool Log, class T, Index W>
void softmax_columns(const T* x, T* y, Index d, Index inner, Index w) {
  using Acc = double;
  T m[W];
  Acc s[W];
  for (Index c = 0; c < w; ++c) m[c] = x[c];
  for (Index k = 1; k < d; ++k) {
    const T* xr = x + k * inner;
    // NaN in x reaches every output of its column through x - m below, so max need not propagate it.
    for (Index c = 0; c < w; ++c) m[c] = xr[c] > m[c] ? xr[c] : m[c];
  }
  for (Index c = 0; c < w; ++c) s[c] = Acc(0);
  for (Index k = 0; k < d; ++k) {
    const T* __restrict xr = x + k * inner;
    T* __restrict yr = y + k * inner;
    for (Index c = 0; c < w; ++c) yr[c] = vexp(xr[c] - m[c]);
    for (Index c = 0; c < w; ++c) s[c] += Acc(yr[c]);  // a separate loop: fused, neither vectorises
  }
  if constexpr (Log) {
    T ls[W];
    for (Index c = 0; c < w; ++c) ls[c] = T(std::log(s[c]));
    for (Index k = 0; k < d; ++k) {
      const T* xr = x + k * inner;
      T* yr = y + k * inner;
      for (Index c = 0; c < w; ++c) yr[c] = (xr[c] - m[c]) - ls[c];
    }
  } else {
    T inv[W];
    for (Index c = 0; c < w; ++c) inv[c] = T(Acc(1) / s[c]);
    for (Index k = 0; k < d; ++k) {
      T* yr = y + k * inner;
      for (Index c = 0; c < w; ++c) yr[c] *= inv[c];
    }
  }
}

// x viewed as (outer, D, inner), reduced along D. Work is split over rows (inner == 1) or over
// (outer, column block) pairs; each task gets at least ~16 Ki values.
template <bool Log, class T>
void softmax_impl(const T* x, T* y, Index outer, Index d, Index inner, const Context& ctx) {
  if (outer == 0 || d == 0 || inner == 0) return;
  constexpr Index kWork = Index(1) << 14;
  if (inner == 1) {
    ctx.parallel_range(outer, std::max<Index>(1, kWork / d), [&](Index b, Index e) {
      for (Index r = b; r < e; ++r) softmax_row<Log>(x + r * d, y + r * d, d);
    });
    return;
  }
  constexpr Index kCols = 256;  // two column buffers of 256 stay in L1 next to the rows being read
  const Index blocks = (inner + kCols - 1) / kCols;
  const Index per_task = std::max<Index>(1, kWork / (d * std::min(inner, kCols)));
  ctx.parallel_range(outer * blocks, per_task, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      const Index o = i / blocks, c0 = (i % blocks) * kCols;
      const Index off = o * d * inner + c0;
      softmax_columns<Log, T, kCols>(x + off, y + off, d, inner, std::min(kCols, inner - c0));
    }
  });
}

template <bool Log, class T, int R>
Tensor<T, R> softmax_any(const char* op, const Tensor<T, R>& x, int dim, const Context& ctx) {
  static_assert(is_float_or_double_v<T>, "softmax: float or double");
  const int dm = wrap_dim(op, "dim", dim, R, shape_str(x));
  Index outer = 1, d = 1, inner = 1;
  for (int k = 0; k < R; ++k) (k < dm ? outer : k == dm ? d : inner) *= x.dimension(k);
  Tensor<T, R> y(x.dimensions());
  softmax_impl<Log>(x.data(), y.data(), outer, d, inner, ctx);
  return y;
}

}  // namespace detail

// softmax: (any shape) -> same shape, exp(x) / sum exp(x) along dim (negative counts from the end).
template <class T, int R>
Tensor<T, R> softmax(const Tensor<T, R>& x, int dim, const Context& ctx = default_context()) {
  return detail::softmax_any<false>("softmax", x, dim, ctx);
}

// log_softmax: (any shape) -> same shape, x - log sum exp(x) along dim.
template <class T, int R>
Tensor<T, R> log_softmax(const Tensor<T, R>& x, int dim, const Context& ctx = default_context()) {
  return detail::softmax_any<true>("log_softmax", x, dim, ctx);
}

}  // namespace fovea
