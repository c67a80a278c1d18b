#pragma once
// Zero-shot classification scores from image embeddings and one text embedding per class, as CLIP (a softmax
// over the classes) and SigLIP (an independent sigmoid per class, with the learned bias) score them. Feed
// l2_normalize'd features, as both models do.
#include <string>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/loss/siglip_loss.hpp"

namespace fovea {
namespace detail {

// Checks, then logits (N, C) = scale * image * classes^T + bias.
template <class T>
Tensor<T, 2> zero_shot_logits(const char* op, const Tensor<T, 2>& image, const Tensor<T, 2>& classes, T scale,
                              T bias, const Context& ctx) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "zero-shot: float or double");
  const std::string shapes = cat("image ", shape_str(image), ", classes ", shape_str(classes));
  if (image.dimension(1) != classes.dimension(1))
    throw_shape(op, ": expected image.size(1) == classes.size(1) (one embedding width), but got ",
                image.dimension(1), " and ", classes.dimension(1), "; ", shapes);
  if (classes.dimension(0) == 0) throw_shape(op, ": expected at least one class, but got 0; ", shapes);
  if (!(std::isfinite(scale) && scale > T(0)))
    throw_shape(op, ": expected a finite scale > 0, but got ", scale, "; ", shapes);
  if (!std::isfinite(bias)) throw_shape(op, ": expected a finite bias, but got ", bias, "; ", shapes);
  max_row_norm(op, "image", image, shapes, ctx);
  max_row_norm(op, "classes", classes, shapes, ctx);
  const Index N = image.dimension(0), C = classes.dimension(0), D = image.dimension(1);
  Tensor<T, 2> logits(N, C);
  gemm<T>(false, true, N, C, D, scale, image.data(), D, classes.data(), D, T(0), logits.data(), C, ctx);
  if (bias != T(0)) logits = logits + bias;
  return logits;
}

}  // namespace detail

// image (N, D), classes (C, D), scale -> probabilities (N, C): softmax over the classes of
// scale * image * classes^T, each row summing to 1.
template <class T>
Tensor<T, 2> clip_zero_shot(const Tensor<T, 2>& image, const Tensor<T, 2>& classes, detail::same_t<T> scale,
                            const Context& ctx = default_context()) {
  Tensor<T, 2> p = detail::zero_shot_logits<T>("clip_zero_shot", image, classes, scale, T(0), ctx);
  const Index N = p.dimension(0), C = p.dimension(1);
  ctx.parallel_range(N, 16, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      detail::ArrayRow<T> row(p.data() + i * C, C);
      row = (row - row.maxCoeff()).exp();
      row /= row.sum();
    }
  });
  return p;
}

// image (N, D), classes (C, D), scale, bias -> probabilities (N, C): sigmoid(scale * image * classes^T + bias),
// each class judged on its own (rows need not sum to 1).
template <class T>
Tensor<T, 2> siglip_zero_shot(const Tensor<T, 2>& image, const Tensor<T, 2>& classes, detail::same_t<T> scale,
                              detail::same_t<T> bias, const Context& ctx = default_context()) {
  Tensor<T, 2> p = detail::zero_shot_logits<T>("siglip_zero_shot", image, classes, scale, bias, ctx);
  ctx.parallel_range(p.size(), 4096, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) p.data()[i] = detail::stable_sigmoid(p.data()[i]);
  });
  return p;
}

}  // namespace fovea
