#pragma once
// batch_norm (inference, running statistics) and layer_norm (last dimension) with PyTorch's semantics;
// layer_norm's forward keeps mean and rstd for its backward, llm.c style. fold_batch_norm merges an
// inference BatchNorm into the convolution before it.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

template <class T>
using NormArray = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using NormMap = Eigen::Map<NormArray<T>>;
template <class T>
using ConstNormMap = Eigen::Map<const NormArray<T>>;

template <class T, int R>
bool norm_has_empty_dim(const Tensor<T, R>& t) {
  for (int d = 0; d < R; ++d)
    if (t.dimension(d) == 0) return true;
  return false;
}

// PyTorch takes any eps; a negative or NaN one is always a bug (NaN or a sign flip for small variances).
template <class T>
void check_eps(const char* op, T eps, const std::string& shapes) {
  if (!(eps >= T(0))) throw_shape(op, ": expected eps >= 0, but got ", eps, shapes);
}

// Elements per channel plane: the product of the dimensions after (N, C).
template <class T, int R>
Index plane_size(const Tensor<T, R>& t) {
  Index s = 1;
  for (int d = 2; d < R; ++d) s *= t.dimension(d);
  return s;
}

// Rows of an (..., D) tensor for layer_norm: the product of every dimension but the last.
template <class T, int R>
Index norm_rows(const Tensor<T, R>& t) {
  Index m = 1;
  for (int d = 0; d + 1 < R; ++d) m *= t.dimension(d);
  return m;
}

// Elements per parallel task, so small inputs stay on the caller and large ones split evenly.
constexpr Index kNormGrain = Index(1) << 15;

// x (..., D), weight (D), bias (D): the checks layer_norm and its forward share.
template <class T, int R>
void check_layer_norm(const char* op, const Tensor<T, R>& x, const Tensor<T, 1>& weight, const Tensor<T, 1>& bias,
                      T eps) {
  const std::string shapes =
      cat("; input ", shape_str(x), ", weight ", shape_str(weight), ", bias ", shape_str(bias));
  if constexpr (R < 1) {
    throw_shape(op, ": expected input of rank >= 1 (..., D), but got rank 0", shapes);
  } else {
    const Index d = x.dimension(R - 1);
    if (weight.dimension(0) != d)
      throw_shape(op, ": expected weight.size(0) == input.size(-1) (", d, "), but got ", weight.dimension(0), shapes);
    if (bias.dimension(0) != d)
      throw_shape(op, ": expected bias.size(0) == input.size(-1) (", d, "), but got ", bias.dimension(0), shapes);
    check_eps(op, eps, shapes);
    // A zero-size input is rejected: it can only come from a bug upstream (see linear).
    if (norm_has_empty_dim(x)) throw_shape(op, ": expected a non-empty input, but got a zero dimension", shapes);
  }
}

// x (..., D), weight (D), bias (D) -> out (..., D), mean (M), rstd (M), M = rows of x; out, mean and rstd
// are resized. Two passes in T: the mean m1, then the deviations from it. The second pass also sums the
// deviations themselves, which are zero up to m1's rounding error, and corrects mean and variance by
// them (Chan, Golub & LeVeque's corrected two-pass). The output is centred as (x - m1) - shift rather
// than x - mean: for rows far from zero (x + 1000) x - m1 is exact, while mean rounded to T is off by
// half an ulp of itself (3e-5 at 1000 in float), which x - mean would carry into every output.
template <class T, int R>
void layer_norm_forward(const Tensor<T, R>& x, const Tensor<T, 1>& weight, const Tensor<T, 1>& bias,
                        typename Tensor<T, 1>::Scalar eps, Tensor<T, R>& out, Tensor<T, 1>& mean, Tensor<T, 1>& rstd,
                        const Context& ctx = default_context()) {
  check_layer_norm("layer_norm", x, weight, bias, eps);
  if constexpr (R >= 1) {
    const Index d = x.dimension(R - 1), m = norm_rows(x);
    if (out.dimensions() != x.dimensions()) out.resize(x.dimensions());
    if (mean.dimension(0) != m) mean.resize(m);
    if (rstd.dimension(0) != m) rstd.resize(m);
    const ConstNormMap<T> w(weight.data(), d), b(bias.data(), d);
    const T* xp = x.data();
    T* yp = out.data();
    T* mp = mean.data();
    T* rp = rstd.data();
    ctx.parallel_range(m, std::max<Index>(1, kNormGrain / d), [&](Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        const ConstNormMap<T> row(xp + r * d, d);
        const T m1 = row.sum() / T(d);
        const T dev_sum = (row - m1).sum();
        const T sq_sum = (row - m1).square().sum();
        const T shift = dev_sum / T(d);
        const T var = std::max(T(0), sq_sum / T(d) - shift * shift);
        const T rs = T(1) / std::sqrt(var + eps);
        mp[r] = m1 + shift;
        rp[r] = rs;
        NormMap<T>(yp + r * d, d) = ((row - m1) - shift) * rs * w + b;
      }
    });
  }
}

// dout (..., D), x (..., D), weight (D), mean (M), rstd (M) from layer_norm_forward; dx (..., D) is added
// into, dweight (D) and dbias (D) accumulate (all must be sized already).
template <class T, int R>
void layer_norm_backward(const Tensor<T, R>& dout, const Tensor<T, R>& x, const Tensor<T, 1>& weight,
                         const Tensor<T, 1>& mean, const Tensor<T, 1>& rstd, Tensor<T, R>& dx, Tensor<T, 1>& dweight,
                         Tensor<T, 1>& dbias, const Context& ctx = default_context()) {
  const char* op = "layer_norm_backward";
  const std::string shapes = cat("; dout ", shape_str(dout), ", input ", shape_str(x), ", weight ", shape_str(weight),
                                 ", mean ", shape_str(mean), ", rstd ", shape_str(rstd), ", dinput ", shape_str(dx),
                                 ", dweight ", shape_str(dweight), ", dbias ", shape_str(dbias));
  if constexpr (R < 1) {
    throw_shape(op, ": expected input of rank >= 1 (..., D), but got rank 0", shapes);
  } else {
    const Index d = x.dimension(R - 1), m = norm_rows(x);
    if (norm_has_empty_dim(x)) throw_shape(op, ": expected a non-empty input, but got a zero dimension", shapes);
    if (weight.dimension(0) != d)
      throw_shape(op, ": expected weight.size(0) == input.size(-1) (", d, "), but got ", weight.dimension(0), shapes);
    if (dout.dimensions() != x.dimensions())
      throw_shape(op, ": expected dout of the input's shape ", shape_str(x), ", but got ", shape_str(dout), shapes);
    if (mean.dimension(0) != m || rstd.dimension(0) != m)
      throw_shape(op, ": expected mean and rstd of size input.numel() / input.size(-1) (", m, "), but got ",
                  mean.dimension(0), " and ", rstd.dimension(0), shapes);
    if (dx.dimensions() != x.dimensions())
      throw_shape(op, ": expected dinput of the input's shape ", shape_str(x), ", but got ", shape_str(dx), shapes);
    if (dweight.dimension(0) != d || dbias.dimension(0) != d)
      throw_shape(op, ": expected dweight and dbias of size input.size(-1) (", d, "), but got ",
                  dweight.dimension(0), " and ", dbias.dimension(0), shapes);

    const ConstNormMap<T> w(weight.data(), d);
    const T *gp = dout.data(), *xp = x.data(), *mp = mean.data(), *rp = rstd.data();
    T* dxp = dx.data();
    // The saved mean is rounded to T; as in the forward, the mean deviation from it (zero up to that
    // rounding) recentres each row, so rows far from zero keep full precision. Kept per row for dweight.
    std::vector<T> shift(static_cast<std::size_t>(m));
    // forward: out = (x - mean) * rstd * weight + bias, with mean and rstd functions of the whole row.
    // xhat = (x - mean) * rstd, dnorm = dout * weight:
    // dx += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
    ctx.parallel_range(m, std::max<Index>(1, kNormGrain / d), [&](Index r0, Index r1) {
      NormArray<T> xhat(d), dnorm(d);
      for (Index r = r0; r < r1; ++r) {
        const ConstNormMap<T> row(xp + r * d, d);
        shift[r] = (row - mp[r]).sum() / T(d);
        xhat = ((row - mp[r]) - shift[r]) * rp[r];
        dnorm = ConstNormMap<T>(gp + r * d, d) * w;
        const T dnorm_mean = dnorm.sum() / T(d);
        const T dnorm_xhat_mean = (dnorm * xhat).sum() / T(d);
        NormMap<T>(dxp + r * d, d) += (dnorm - dnorm_mean - xhat * dnorm_xhat_mean) * rp[r];
      }
    });
    // dweight += sum over rows of dout * xhat; dbias += sum over rows of dout. Threads own column
    // ranges and walk every row, so the summation order does not depend on the thread count.
    T* dwp = dweight.data();
    T* dbp = dbias.data();
    ctx.parallel_range(d, std::max<Index>(16, kNormGrain / m), [&](Index c0, Index c1) {
      const Index n = c1 - c0;
      NormArray<T> acc_w = NormArray<T>::Zero(n), acc_b = NormArray<T>::Zero(n);
      for (Index r = 0; r < m; ++r) {
        const ConstNormMap<T> g(gp + r * d + c0, n);
        acc_w += g * (((ConstNormMap<T>(xp + r * d + c0, n) - mp[r]) - shift[r]) * rp[r]);
        acc_b += g;
      }
      NormMap<T>(dwp + c0, n) += acc_w;
      NormMap<T>(dbp + c0, n) += acc_b;
    });
  }
}

}  // namespace detail

// input (N, C, ...), running_mean, running_var, weight, bias (C) -> (N, C, ...), inference mode:
// y = (x - mean) / sqrt(var + eps) * weight + bias.
template <class T, int R>
Tensor<T, R> batch_norm(const Tensor<T, R>& input, const Tensor<T, 1>& running_mean, const Tensor<T, 1>& running_var,
                        const Tensor<T, 1>& weight, const Tensor<T, 1>& bias, typename Tensor<T, 1>::Scalar eps = T(1e-5),
                        const Context& ctx = default_context()) {
  const char* op = "batch_norm";
  const std::string shapes = detail::cat("; input ", detail::shape_str(input), ", running_mean ",
                                         detail::shape_str(running_mean), ", running_var ", detail::shape_str(running_var),
                                         ", weight ", detail::shape_str(weight), ", bias ", detail::shape_str(bias));
  if constexpr (R < 2) {
    detail::throw_shape(op, ": expected input of rank >= 2 (N, C, ...), but got rank ", R, shapes);
    return input;
  } else {
    const Index n = input.dimension(0), c = input.dimension(1), plane = detail::plane_size(input);
    const std::pair<const char*, const Tensor<T, 1>*> params[] = {
        {"running_mean", &running_mean}, {"running_var", &running_var}, {"weight", &weight}, {"bias", &bias}};
    for (const auto& [name, p] : params)
      if (p->dimension(0) != c)
        detail::throw_shape(op, ": expected ", name, ".size(0) == input channels (", c, "), but got ", p->dimension(0),
                            shapes);
    detail::check_eps(op, eps, shapes);
    if (detail::norm_has_empty_dim(input))
      detail::throw_shape(op, ": expected a non-empty input, but got a zero dimension", shapes);

    // Per-channel scale computed in double and rounded once, so float output carries one rounding of it.
    std::vector<T> scale(static_cast<std::size_t>(c));
    for (Index k = 0; k < c; ++k)
      scale[k] = T(double(weight(k)) / std::sqrt(double(running_var(k)) + double(eps)));
    // The centred form (x - mean) * scale + bias, rather than x * scale + (bias - mean * scale): the same
    // memory traffic, and no cancellation when |x| and |mean| are large next to the spread.
    Tensor<T, R> out(input.dimensions());
    const T* xp = input.data();
    T* yp = out.data();
    const T *mp = running_mean.data(), *bp = bias.data();
    if (plane == 1) {
      // (N, C): rows of C, one expression per row.
      const detail::ConstNormMap<T> mean(mp, c), shift(bp, c), s(scale.data(), c);
      ctx.parallel_range(n, std::max<Index>(1, detail::kNormGrain / c), [&](Index r0, Index r1) {
        for (Index r = r0; r < r1; ++r)
          detail::NormMap<T>(yp + r * c, c) = (detail::ConstNormMap<T>(xp + r * c, c) - mean) * s + shift;
      });
    } else {
      ctx.parallel_range(n * c, std::max<Index>(1, detail::kNormGrain / plane), [&](Index p0, Index p1) {
        for (Index p = p0; p < p1; ++p) {
          const Index k = p % c;
          detail::NormMap<T>(yp + p * plane, plane) =
              (detail::ConstNormMap<T>(xp + p * plane, plane) - mp[k]) * scale[k] + bp[k];
        }
      });
    }
    return out;
  }
}

// input (..., D), weight (D), bias (D) -> (..., D), normalized over the last dimension.
template <class T, int R>
Tensor<T, R> layer_norm(const Tensor<T, R>& input, const Tensor<T, 1>& weight, const Tensor<T, 1>& bias,
                        typename Tensor<T, 1>::Scalar eps = T(1e-5), const Context& ctx = default_context()) {
  Tensor<T, R> out;
  Tensor<T, 1> mean, rstd;
  detail::layer_norm_forward(input, weight, bias, eps, out, mean, rstd, ctx);
  return out;
}

namespace detail {

// A convolution's parameters with a following inference BatchNorm folded in.
template <class T, int R>
struct FoldedConv {
  Tensor<T, R> weight;  // (O, ...)
  Tensor<T, 1> bias;    // (O)
};

// conv_weight (O, ...), conv_bias (O) or null/empty, mean, var, gamma, beta (O) -> weight (O, ...), bias (O)
// with batch_norm(conv(x, W, b)) == conv(x, W', b'): per output channel o, s = gamma / sqrt(var + eps),
// W'[o] = W[o] * s, b' = (b - mean) * s + beta. Computed in double and rounded once.
// (conv_bias is spelled with Tensor<T, R>::Scalar so that T is deduced elsewhere and a bare nullptr binds.)
template <class T, int R>
FoldedConv<T, R> fold_batch_norm(const Tensor<T, R>& conv_weight, const Tensor<typename Tensor<T, R>::Scalar, 1>* conv_bias,
                                 const Tensor<T, 1>& mean, const Tensor<T, 1>& var, const Tensor<T, 1>& gamma,
                                 const Tensor<T, 1>& beta, typename Tensor<T, 1>::Scalar eps = T(1e-5)) {
  const char* op = "fold_batch_norm";
  const bool has_bias = conv_bias && conv_bias->size() > 0;
  const std::string shapes =
      cat("; conv_weight ", shape_str(conv_weight), has_bias ? cat(", conv_bias ", shape_str(*conv_bias)) : "",
          ", mean ", shape_str(mean), ", var ", shape_str(var), ", gamma ", shape_str(gamma), ", beta ",
          shape_str(beta));
  if constexpr (R < 1) {
    throw_shape(op, ": expected conv_weight of rank >= 1 (O, ...), but got rank 0", shapes);
  } else {
    const Index o = conv_weight.dimension(0);
    const std::pair<const char*, const Tensor<T, 1>*> params[] = {
        {"conv_bias", has_bias ? conv_bias : nullptr}, {"mean", &mean}, {"var", &var}, {"gamma", &gamma}, {"beta", &beta}};
    for (const auto& [name, p] : params)
      if (p && p->dimension(0) != o)
        throw_shape(op, ": expected ", name, ".size(0) == conv_weight.size(0) (", o, "), but got ", p->dimension(0),
                    shapes);
    check_eps(op, eps, shapes);
    if (norm_has_empty_dim(conv_weight))
      throw_shape(op, ": expected a non-empty conv_weight, but got a zero dimension", shapes);
  }
  FoldedConv<T, R> f{Tensor<T, R>(conv_weight.dimensions()), Tensor<T, 1>(R < 1 ? 0 : conv_weight.dimension(0))};
  if constexpr (R >= 1) {
    const Index o = conv_weight.dimension(0), per = conv_weight.size() / o;
    for (Index k = 0; k < o; ++k) {
      const double s = double(gamma(k)) / std::sqrt(double(var(k)) + double(eps));
      for (Index i = 0; i < per; ++i) f.weight.data()[k * per + i] = T(double(conv_weight.data()[k * per + i]) * s);
      f.bias(k) = T(((has_bias ? double((*conv_bias)(k)) : 0.0) - double(mean(k))) * s + double(beta(k)));
    }
  }
  return f;
}

}  // namespace detail
}  // namespace fovea
