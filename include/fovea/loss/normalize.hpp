#pragma once
// l2_normalize: torch.nn.functional.normalize(x, p=2, dim=1, eps) on (B, D) embeddings, and its backward,
// since CLIP and SigLIP feed unit vectors to their losses.
#include <cmath>
#include <type_traits>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/loss/clip_loss.hpp"

namespace fovea {
namespace detail {

// |x| of a row without overflow or underflow of the squares: m * |x / m|, m = max|x_i|.
template <class T>
T row_l2_norm(const ConstArrayRow<T>& x) {
  if (x.size() == 0) return T(0);
  const T m = x.abs().maxCoeff();
  if (!(m > T(0)) || !std::isfinite(m)) return m;
  return m * std::sqrt((x / m).square().sum());
}

template <class T>
void check_normalize_eps(const char* op, T eps, const std::string& shapes) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "l2_normalize: float or double");
  if (!(std::isfinite(eps) && eps >= T(0))) throw_shape(op, ": expected a finite eps >= 0, but got ", eps, "; ", shapes);
}

}  // namespace detail

// x (B, D) -> y (B, D), y_i = x_i / max(|x_i|, eps).
template <class T>
Tensor<T, 2> l2_normalize(const Tensor<T, 2>& x, detail::same_t<T> eps = T(1e-12),
                          const Context& ctx = default_context()) {
  detail::check_normalize_eps<T>("l2_normalize", eps, detail::cat("input ", detail::shape_str(x)));
  const Index B = x.dimension(0), D = x.dimension(1);
  Tensor<T, 2> y(B, D);
  ctx.parallel_range(B, 64, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      detail::ConstArrayRow<T> xi(x.data() + i * D, D);
      detail::ArrayRow<T>(y.data() + i * D, D) = xi / std::max(detail::row_l2_norm(xi), eps);
    }
  });
  return y;
}

// grad_output (B, D), x (B, D) -> grad_input (B, D). Backward of y = x / max(|x|, eps): where |x| >= eps,
// dx = (g - y (y . g)) / |x|; below eps the divisor is the constant eps, so dx = g / eps.
template <class T>
Tensor<T, 2> l2_normalize_backward(const Tensor<T, 2>& grad_output, const Tensor<T, 2>& x,
                                   detail::same_t<T> eps = T(1e-12), const Context& ctx = default_context()) {
  const std::string shapes =
      detail::cat("grad_output ", detail::shape_str(grad_output), ", input ", detail::shape_str(x));
  if (grad_output.dimensions() != x.dimensions())
    detail::throw_shape("l2_normalize_backward: expected grad_output and input of one shape; ", shapes);
  detail::check_normalize_eps<T>("l2_normalize_backward", eps, shapes);
  const Index B = x.dimension(0), D = x.dimension(1);
  Tensor<T, 2> dx(B, D);
  ctx.parallel_range(B, 64, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      detail::ConstArrayRow<T> xi(x.data() + i * D, D), gi(grad_output.data() + i * D, D);
      detail::ArrayRow<T> di(dx.data() + i * D, D);
      const T n = detail::row_l2_norm(xi);
      if (n >= eps) {
        // y = x / n; y . g computed as (x / n) . g so that huge or tiny rows stay in range.
        const T yg = ((xi / n) * gi).sum();
        di = (gi - (xi / n) * yg) / n;
      } else {
        di = gi / eps;
      }
    }
  });
  return dx;
}

}  // namespace fovea
