#pragma once
// linear (F.linear) and its backward. Every product goes through fovea::gemm; leading dimensions of the
// input are flattened into M rows, so (B, N, in) and (B, in) are the same (M, in) x (in, out) product.
#include <algorithm>
#include <array>

#include <Eigen/Core>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

// Rows M of an (..., in) tensor: the product of every dimension but the last.
template <class T, int R>
Index linear_rows(const Tensor<T, R>& t) {
  Index m = 1;
  for (int d = 0; d + 1 < R; ++d) m *= t.dimension(d);
  return m;
}

template <class T, int R>
bool has_empty_dim(const Tensor<T, R>& t) {
  for (int d = 0; d < R; ++d)
    if (t.dimension(d) == 0) return true;
  return false;
}

// "; input (3, 7, 13), weight (7, 13), bias (7)": the shape list every linear message ends with.
template <class T, int R>
std::string linear_shapes(const Tensor<T, R>& input, const Tensor<T, 2>& weight, const Tensor<T, 1>* bias) {
  return cat("; input ", shape_str(input), ", weight ", shape_str(weight),
             bias ? cat(", bias ", shape_str(*bias)) : std::string());
}

// input (..., in), weight (out, in), bias (out) or null: throws ShapeError naming `op` unless they fit.
template <class T, int R>
void check_linear(const char* op, const Tensor<T, R>& input, const Tensor<T, 2>& weight, const Tensor<T, 1>* bias) {
  if constexpr (R < 1) {
    throw_shape(op, ": expected input of rank >= 1 (..., in), but got rank 0", linear_shapes(input, weight, bias));
  } else {
    const Index in = input.dimension(R - 1);
    if (weight.dimension(1) != in)
      throw_shape(op, ": expected weight.size(1) == input.size(-1) (", in, "), but got ", weight.dimension(1),
                  linear_shapes(input, weight, bias));
    if (bias && bias->dimension(0) != weight.dimension(0))
      throw_shape(op, ": expected bias.size(0) == weight.size(0) (", weight.dimension(0), "), but got ",
                  bias->dimension(0), linear_shapes(input, weight, bias));
    // Empty tensors are rejected rather than passed through: a zero width or batch here is a model or
    // packing bug upstream, and PyTorch's silent empty result would only move the error further away.
    if (has_empty_dim(input) || has_empty_dim(weight))
      throw_shape(op, ": expected non-empty tensors, but got a zero dimension", linear_shapes(input, weight, bias));
  }
}

// input (M, in) rows, weight (out, in), bias (out) or null -> out (M, out), all dense row-major.
template <class T>
void linear_forward(const T* input, const T* weight, const T* bias, T* out, Index m, Index in, Index n,
                    const Context& ctx) {
  if (bias) {
    // Bias fused as GEMM's C operand: y starts as b and the product is added onto it (beta = 1).
    const Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>> b(bias, n);
    ctx.parallel_range(m, std::max<Index>(1, (Index(1) << 16) / n), [&](Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>(out + r * n, n) = b;
    });
  }
  gemm<T>(false, true, m, n, in, T(1), input, in, weight, in, bias ? T(1) : T(0), out, n, ctx);
}

template <class T, int R>
Tensor<T, R> linear_impl(const Tensor<T, R>& input, const Tensor<T, 2>& weight, const Tensor<T, 1>* bias,
                         const Context& ctx) {
  if constexpr (R < 1) {
    check_linear("linear", input, weight, bias);  // always throws: rank 0
    return input;
  } else {
    check_linear("linear", input, weight, bias);
    auto dims = input.dimensions();
    dims[R - 1] = weight.dimension(0);
    Tensor<T, R> out(dims);
    linear_forward(input.data(), weight.data(), bias ? bias->data() : nullptr, out.data(), linear_rows(input),
                   input.dimension(R - 1), weight.dimension(0), ctx);
    return out;
  }
}

// dout (..., out), input (..., in), weight (out, in); dinput (..., in), dweight (out, in), dbias (out), each
// optional (null skips it) and added into, so gradients from several uses of a layer accumulate.
template <class T, int R>
void linear_backward(const Tensor<T, R>& dout, const Tensor<T, R>& input, const Tensor<T, 2>& weight,
                     Tensor<T, R>* dinput, Tensor<T, 2>* dweight, Tensor<T, 1>* dbias,
                     const Context& ctx = default_context()) {
  const char* op = "linear_backward";
  check_linear(op, input, weight, static_cast<const Tensor<T, 1>*>(nullptr));
  if constexpr (R >= 1) {
    auto out_dims = input.dimensions();
    out_dims[R - 1] = weight.dimension(0);
    auto shapes = [&] {
      return cat("; dout ", shape_str(dout), ", input ", shape_str(input), ", weight ", shape_str(weight),
                 dinput ? cat(", dinput ", shape_str(*dinput)) : std::string(),
                 dweight ? cat(", dweight ", shape_str(*dweight)) : std::string(),
                 dbias ? cat(", dbias ", shape_str(*dbias)) : std::string());
    };
    if (dout.dimensions() != out_dims)
      throw_shape(op, ": expected dout of shape ", dims_str(out_dims), " (input with its last dimension "
                  "replaced by weight.size(0)), but got ", shape_str(dout), shapes());
    if (dinput && dinput->dimensions() != input.dimensions())
      throw_shape(op, ": expected dinput of the input's shape ", shape_str(input), ", but got ",
                  shape_str(*dinput), shapes());
    if (dweight && dweight->dimensions() != weight.dimensions())
      throw_shape(op, ": expected dweight of the weight's shape ", shape_str(weight), ", but got ",
                  shape_str(*dweight), shapes());
    if (dbias && dbias->dimension(0) != weight.dimension(0))
      throw_shape(op, ": expected dbias of size weight.size(0) (", weight.dimension(0), "), but got ",
                  shape_str(*dbias), shapes());

    const Index m = linear_rows(input), in = input.dimension(R - 1), n = weight.dimension(0);
    // forward: out = input weight^T + bias
    // dinput (M, in) += dout (M, out) weight (out, in)
    if (dinput) gemm<T>(false, false, m, in, n, T(1), dout.data(), n, weight.data(), in, T(1), dinput->data(), in, ctx);
    // dweight (out, in) += dout^T (out, M) input (M, in)
    if (dweight)
      gemm<T>(true, false, n, in, m, T(1), dout.data(), n, input.data(), in, T(1), dweight->data(), in, ctx);
    // dbias (out) += column sums of dout. Threads own column ranges and walk every row, so the order of
    // the sum is the same for any thread count.
    if (dbias) {
      const T* g = dout.data();
      T* db = dbias->data();
      ctx.parallel_range(n, std::max<Index>(16, (Index(1) << 14) / std::max<Index>(m, 1)), [&](Index c0, Index c1) {
        Eigen::Array<T, Eigen::Dynamic, 1> acc = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(c1 - c0);
        for (Index r = 0; r < m; ++r) acc += Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(g + r * n + c0, c1 - c0);
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(db + c0, c1 - c0) += acc;
      });
    }
  }
}

}  // namespace detail

// input (..., in), weight (out, in), bias (out) -> (..., out): y = x W^T + b.
template <class T, int R>
Tensor<T, R> linear(const Tensor<T, R>& input, const Tensor<T, 2>& weight, const Tensor<T, 1>& bias,
                    const Context& ctx = default_context()) {
  return detail::linear_impl(input, weight, &bias, ctx);
}

// input (..., in), weight (out, in) -> (..., out): y = x W^T, no bias.
template <class T, int R>
Tensor<T, R> linear(const Tensor<T, R>& input, const Tensor<T, 2>& weight, const Context& ctx = default_context()) {
  return detail::linear_impl(input, weight, static_cast<const Tensor<T, 1>*>(nullptr), ctx);
}

}  // namespace fovea
