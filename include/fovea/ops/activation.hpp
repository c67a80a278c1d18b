#pragma once
// Element-wise activations with PyTorch's semantics: relu, gelu (erf and tanh forms), quick_gelu (CLIP),
// silu, sigmoid; each out of place and in place (trailing underscore, as torch.relu_).
//
// The scalar kernels in fovea::detail are branch-free, call no libm function and are forced inline, so a
// plain loop over them vectorises at -O3 (-march=native: 16 floats at a time with AVX-512); other ops
// (linear and convolution epilogues) call them directly, or apply_activation on a row they just wrote.
// They are accurate to a few ulp over the whole range, tails included (tested against long double):
// every gate is a sigmoid or a normal CDF computed so that nothing cancels (1 + tanh(u) is 2 sigmoid(2u),
// 1 + erf(-z) is erfc(z)) and nothing overflows for any input, infinities included. NaN propagates.
// Deliberate difference from PyTorch: at x = -inf, gelu, quick_gelu and silu return -0 (the limit) where
// PyTorch's formulas give NaN (-inf * 0).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

// The scalar kernels must inline into the loops that call them, or those loops stay scalar (10x slower);
// in a large translation unit GCC's inlining budget otherwise gives up on the bigger ones.
#ifndef FOVEA_ALWAYS_INLINE
#if defined(__GNUC__) || defined(__clang__)
#define FOVEA_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FOVEA_ALWAYS_INLINE __forceinline
#else
#define FOVEA_ALWAYS_INLINE inline
#endif
#endif

namespace fovea {
namespace detail {

template <class T>
constexpr bool is_float_or_double_v = std::is_same_v<T, float> || std::is_same_v<T, double>;

// memcpy rather than a union: defined behaviour, and compilers still turn it into a register move.
template <class To, class From>
FOVEA_ALWAYS_INLINE To float_bits_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "float_bits_cast: sizes differ");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

template <class T>
struct ExpTraits;

// Per-type constants of vexp_sum and normal_cdf.
template <>
struct ExpTraits<float> {
  using Bits = std::uint32_t;
  using SBits = std::int32_t;
  static constexpr int mantissa = 23, bias = 127;
  // Beyond these exp is 0 or inf; inside them, half of any power of two the result needs is a normal number.
  static constexpr float exp_lo = -110.f, exp_hi = 90.f;
  static constexpr float round_magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float log2e = 1.44269504f;
  // ln 2 = ln2_hi + ln2_lo, ln2_hi with 16 significant bits so that n * ln2_hi is exact for |n| < 2^8.
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860677e-06f;
  // Low bits cleared to split a = a_hi + a_lo with a_hi * a_hi exact (12 significant bits).
  static constexpr Bits split_mask = ~Bits(0) << 12;
  // Phi(-x) is 0 in float beyond this (exp(-x^2 / 2) underflows); clamping keeps x^2 finite.
  static constexpr float cdf_clamp = 16.f;
};

template <>
struct ExpTraits<double> {
  using Bits = std::uint64_t;
  using SBits = std::int64_t;
  static constexpr int mantissa = 52, bias = 1023;
  static constexpr double exp_lo = -760., exp_hi = 710.;
  static constexpr double round_magic = 6755399441055744.;  // 1.5 * 2^52
  static constexpr double log2e = 1.4426950408889634;
  // ln2_hi has 40 significant bits: n * ln2_hi is exact for |n| < 2^13.
  static constexpr double ln2_hi = 0.6931471805592082, ln2_lo = 7.371002565167799e-13;
  static constexpr Bits split_mask = ~Bits(0) << 27;  // 26 significant bits left: a_hi^2 fits in 52
  static constexpr double cdf_clamp = 40.;
};

// p = c[0] t^(N-1) + ... + c[N-1] by Horner, as straight-line code (a fold, not a loop) so that the loop
// calling it vectorises whatever the degree.
template <class T, std::size_t N, std::size_t... I>
FOVEA_ALWAYS_INLINE T horner_fold(T t, const T (&c)[N], std::index_sequence<I...>) {
  T p = c[0];
  ((p = p * t + c[I + 1]), ...);
  return p;
}
template <class T, std::size_t N>
FOVEA_ALWAYS_INLINE T horner(T t, const T (&c)[N]) {
  return horner_fold(t, c, std::make_index_sequence<N - 1>{});
}

// Taylor coefficients of exp on |r| <= ln2 / 2, highest power first: degree 7 leaves 6e-9 (float), degree 13
// 4e-18 (double), both well under half an ulp.
template <class T>
struct ExpPoly;
template <>
struct ExpPoly<float> {
  static constexpr float c[] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};
};
template <>
struct ExpPoly<double> {
  static constexpr double c[] = {1. / 6227020800., 1. / 479001600., 1. / 39916800., 1. / 3628800., 1. / 362880.,
                                 1. / 40320.,      1. / 5040.,       1. / 720.,       1. / 120.,     1. / 24.,
                                 1. / 6.,          0.5,              1.,              1.};
};

// exp(hi + lo) for |lo| small next to max(|hi|, 1): lo joins after the range reduction, so it adds
// precision that hi + lo rounded to T would lose (normal_cdf passes -x^2 / 2 as two exact parts).
// Cody-Waite reduction r = hi + lo - n ln 2, Taylor polynomial, then scaling by 2^n in two halves so that
// subnormal results round once and overflow reaches inf. Max error about 1 ulp (tests/ops/test_activation).
template <class T>
FOVEA_ALWAYS_INLINE T vexp_sum(T hi, T lo) {
  using F = ExpTraits<T>;
  using Bits = typename F::Bits;
  using SBits = typename F::SBits;
  // Clamped as `hi < exp_lo ? exp_lo : hi` so that NaN (every comparison false) passes through.
  hi = hi < F::exp_lo ? F::exp_lo : hi;
  hi = hi > F::exp_hi ? F::exp_hi : hi;
  const T shifted = (hi + lo) * F::log2e + F::round_magic;
  const T n = shifted - F::round_magic;
  // n as an integer from the low mantissa bits of `shifted` (no float-to-int conversion, so NaN is harmless).
  const SBits ni = static_cast<SBits>(float_bits_cast<Bits>(shifted) - float_bits_cast<Bits>(F::round_magic));
  const T r = (hi - n * F::ln2_hi) + (lo - n * F::ln2_lo);
  const SBits n1 = ni >> 1, n2 = ni - n1;
  const T s1 = float_bits_cast<T>(static_cast<Bits>(n1 + F::bias) << F::mantissa);
  const T s2 = float_bits_cast<T>(static_cast<Bits>(n2 + F::bias) << F::mantissa);
  return horner(r, ExpPoly<T>::c) * s1 * s2;
}

// exp(x), vectorisable; exp(-inf) = 0, exp(inf) = inf, exp(NaN) = NaN.
template <class T>
FOVEA_ALWAYS_INLINE T vexp(T x) {
  return vexp_sum(x, T(0));
}

template <class T>
FOVEA_ALWAYS_INLINE T relu(T x) {
  static_assert(is_float_or_double_v<T>, "relu: float or double");
  return x < T(0) ? T(0) : x;  // NaN stays NaN, as torch.relu
}

// 1 / (1 + exp(-x)), from exp(-|x|) <= 1 so that it never overflows; relative error a few ulp also in the
// lower tail, where sigmoid(x) ~ exp(x).
template <class T>
FOVEA_ALWAYS_INLINE T sigmoid(T x) {
  static_assert(is_float_or_double_v<T>, "sigmoid: float or double");
  const T e = vexp(-std::fabs(x));
  const T s = T(1) / (T(1) + e);
  return x < T(0) ? e * s : s;
}

// x * gate for a gate that underflows to 0 as x -> -inf: returns -0 there instead of -inf * 0 = NaN.
template <class T>
FOVEA_ALWAYS_INLINE T gated(T x, T gate) {
  return gate == T(0) ? T(-0.0) : x * gate;
}

// x * sigmoid(x)
template <class T>
FOVEA_ALWAYS_INLINE T silu(T x) {
  return gated(x, sigmoid(x));
}

// x * sigmoid(1.702 x), CLIP's QuickGELU.
template <class T>
FOVEA_ALWAYS_INLINE T quick_gelu(T x) {
  return gated(x, sigmoid(T(1.702) * x));
}

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as x * sigmoid(2u) (the same function, since
// 1 + tanh(u) = 2 sigmoid(2u)) so that the negative side does not cancel. u is factored as
// x (1 + 0.044715 x^2) so that it stays finite up to |x| ~ 1e19 and reaches +-inf (not NaN) beyond.
template <class T>
FOVEA_ALWAYS_INLINE T gelu_tanh(T x) {
  static_assert(is_float_or_double_v<T>, "gelu_tanh: float or double");
  const T two_beta = T(1.5957691216057308);  // 2 sqrt(2 / pi)
  return gated(x, sigmoid(two_beta * x * (T(1) + T(0.044715) * x * x)));
}

// Horner coefficients, highest power first, of g(t) = (1 + 2z) exp(z^2) erfc(z) with z = 3 (1 + t) / (1 - t):
// one polynomial for every z >= 0 (t in [-1, 1)). Chebyshev interpolants made and documented by
// `python3 tests/reference/ref_activation.py fit`; truncation error 3e-9 (float), 2e-17 (double).
template <class T>
struct ErfcxPoly;
template <>
struct ErfcxPoly<float> {
  static constexpr float k = 3.f;
  static constexpr float c[] = {3.8917515e-06f, 7.720414e-05f,  -0.00010422118f, -0.0007261608f, 0.0018882157f,
                                0.0024988225f,  -0.023770388f,  0.0683167f,      -0.11927368f,   0.1296441f,
                                -0.047562294f,  -0.13562107f,   1.253008f};
};
template <>
struct ErfcxPoly<double> {
  static constexpr double k = 3.;
  static constexpr double c[] = {
      8.864219016427092e-10,  9.885798831139365e-10,   -8.500397929772615e-09,  -1.3326364813003834e-08,
      4.180784698845582e-08,  1.0187000600072885e-07,  -1.4160064940265987e-07, -6.166496077604353e-07,
      3.5683839153992204e-07, 3.472414602875686e-06,   -7.315105164159062e-07,  -2.0100567931289227e-05,
      4.949484992570595e-06,  0.00012509935235563107,  -0.00010515979981501177, -0.0007798322721083991,
      0.0018886903591561553,  0.002529391816066239,    -0.023770514918645888,   0.06830802734397848,
      -0.11927366341530699,   0.1296451587027606,      -0.04756229435345087,    -0.13562110612458117,
      1.2530080582697296};
};

// Phi(x) = 0.5 erfc(-x / sqrt 2), the standard normal CDF. The tail q = Phi(-|x|) is computed directly, with
// relative accuracy (a few ulp) down to underflow: q = 0.5 exp(-x^2 / 2) g(t) / (1 + 2z), z = |x| / sqrt 2.
// x^2 is split exactly (x_hi^2 + (x - x_hi)(x + x_hi)) because exp(-x^2 / 2) amplifies the rounding of
// x^2 by x^2 / 2; without the split float loses 5e-6 relative at x = -13.
template <class T>
FOVEA_ALWAYS_INLINE T normal_cdf(T x) {
  static_assert(is_float_or_double_v<T>, "normal_cdf: float or double");
  using F = ExpTraits<T>;
  using P = ErfcxPoly<T>;
  T a = std::fabs(x);
  a = a > F::cdf_clamp ? F::cdf_clamp : a;  // NaN passes through
  const T a_hi = float_bits_cast<T>(float_bits_cast<typename F::Bits>(a) & F::split_mask);
  const T e = vexp_sum(T(-0.5) * (a_hi * a_hi), T(-0.5) * ((a - a_hi) * (a + a_hi)));
  const T z = a * T(0.70710678118654752);
  const T t = (z - P::k) / (z + P::k);
  const T g = horner(t, P::c);
  const T q = e * g / (T(2) + T(4) * z);
  return x < T(0) ? q : T(1) - q;
}

// 0.5 x (1 + erf(x / sqrt 2)) = x Phi(x), torch.nn.functional.gelu's exact form.
template <class T>
FOVEA_ALWAYS_INLINE T gelu_erf(T x) {
  return gated(x, normal_cdf(x));
}

// A runtime choice of activation, for epilogues configured from a model's config (hidden_act).
enum class Activation { identity, relu, gelu, gelu_tanh, quick_gelu, silu, sigmoid };

// Applies `f` to n values. In place gets its own loop: in a single loop the compiler's runtime overlap
// check would send in == out to the scalar fallback.
template <class T, class F>
inline void elementwise_serial(const T* in, T* out, Index n, const F& f) {
  if (in == out) {
    for (Index i = 0; i < n; ++i) out[i] = f(out[i]);
  } else {
    const T* __restrict src = in;
    T* __restrict dst = out;
    for (Index i = 0; i < n; ++i) dst[i] = f(src[i]);
  }
}

// The kernels as function objects, for the loops below (lambdas cannot be forced inline portably).
struct ReluFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return relu(v); }
};
struct GeluErfFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return gelu_erf(v); }
};
struct GeluTanhFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return gelu_tanh(v); }
};
struct QuickGeluFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return quick_gelu(v); }
};
struct SiluFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return silu(v); }
};
struct SigmoidFn {
  template <class T>
  FOVEA_ALWAYS_INLINE T operator()(T v) const { return sigmoid(v); }
};

// In place on n contiguous values, single-threaded: for epilogues that already run inside a parallel task.
template <class T>
inline void apply_activation(Activation act, T* data, Index n) {
  static_assert(is_float_or_double_v<T>, "apply_activation: float or double");
  switch (act) {
    case Activation::identity: return;
    case Activation::relu: return elementwise_serial(data, data, n, ReluFn());
    case Activation::gelu: return elementwise_serial(data, data, n, GeluErfFn());
    case Activation::gelu_tanh: return elementwise_serial(data, data, n, GeluTanhFn());
    case Activation::quick_gelu: return elementwise_serial(data, data, n, QuickGeluFn());
    case Activation::silu: return elementwise_serial(data, data, n, SiluFn());
    case Activation::sigmoid: return elementwise_serial(data, data, n, SigmoidFn());
  }
}

// Below this many values one thread does it all; above, whole chunks of it go to the pool (16 Ki floats is
// 64 KiB, enough work to amortise handing out a task; a multiple of every vector width).
constexpr Index kElementwiseGrain = Index(1) << 14;

template <class T, class F>
void elementwise_parallel(const T* in, T* out, Index n, const F& f, const Context& ctx) {
  if (n <= kElementwiseGrain || ctx.num_threads() == 1) return elementwise_serial(in, out, n, f);
  ctx.parallel_range(n, kElementwiseGrain, [&](Index b, Index e) { elementwise_serial(in + b, out + b, e - b, f); });
}

template <class T, int R, class F>
Tensor<T, R> elementwise_tensor(const Tensor<T, R>& x, const F& f, const Context& ctx) {
  Tensor<T, R> y(x.dimensions());
  elementwise_parallel(x.data(), y.data(), x.size(), f, ctx);
  return y;
}

// gelu's `approximate`, checked before any compute: true for "tanh", false for "none".
template <class T, int R>
bool gelu_uses_tanh(const char* op, std::string_view approximate, const Tensor<T, R>& x) {
  if (approximate == "none") return false;
  if (approximate == "tanh") return true;
  throw_shape(op, ": expected approximate 'none' or 'tanh', but got '", approximate, "'; input ", shape_str(x));
}

}  // namespace detail

// relu: (any shape) -> same shape, max(x, 0).
template <class T, int R>
Tensor<T, R> relu(const Tensor<T, R>& x, const Context& ctx = default_context()) {
  return detail::elementwise_tensor(x, detail::ReluFn(), ctx);
}
template <class T, int R>
void relu_(Tensor<T, R>& x, const Context& ctx = default_context()) {
  detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::ReluFn(), ctx);
}

// gelu: (any shape) -> same shape; approximate "none" is x Phi(x) with the erf, "tanh" the tanh form.
template <class T, int R>
Tensor<T, R> gelu(const Tensor<T, R>& x, std::string_view approximate = "none",
                  const Context& ctx = default_context()) {
  if (detail::gelu_uses_tanh("gelu", approximate, x))
    return detail::elementwise_tensor(x, detail::GeluTanhFn(), ctx);
  return detail::elementwise_tensor(x, detail::GeluErfFn(), ctx);
}
template <class T, int R>
void gelu_(Tensor<T, R>& x, std::string_view approximate = "none", const Context& ctx = default_context()) {
  if (detail::gelu_uses_tanh("gelu_", approximate, x))
    detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::GeluTanhFn(), ctx);
  else
    detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::GeluErfFn(), ctx);
}

// quick_gelu: (any shape) -> same shape, x sigmoid(1.702 x) (CLIP's QuickGELU).
template <class T, int R>
Tensor<T, R> quick_gelu(const Tensor<T, R>& x, const Context& ctx = default_context()) {
  return detail::elementwise_tensor(x, detail::QuickGeluFn(), ctx);
}
template <class T, int R>
void quick_gelu_(Tensor<T, R>& x, const Context& ctx = default_context()) {
  detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::QuickGeluFn(), ctx);
}

// silu: (any shape) -> same shape, x sigmoid(x).
template <class T, int R>
Tensor<T, R> silu(const Tensor<T, R>& x, const Context& ctx = default_context()) {
  return detail::elementwise_tensor(x, detail::SiluFn(), ctx);
}
template <class T, int R>
void silu_(Tensor<T, R>& x, const Context& ctx = default_context()) {
  detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::SiluFn(), ctx);
}

// sigmoid: (any shape) -> same shape, 1 / (1 + exp(-x)).
template <class T, int R>
Tensor<T, R> sigmoid(const Tensor<T, R>& x, const Context& ctx = default_context()) {
  return detail::elementwise_tensor(x, detail::SigmoidFn(), ctx);
}
template <class T, int R>
void sigmoid_(Tensor<T, R>& x, const Context& ctx = default_context()) {
  detail::elementwise_parallel(x.data(), x.data(), x.size(), detail::SigmoidFn(), ctx);
}

}  // namespace fovea
