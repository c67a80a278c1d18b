#pragma once
// The straightforward CLIP and SigLIP losses: they form the whole B x B logits (B^2 memory), as PyTorch's
// cross_entropy / logsigmoid versions do. For tests and benchmarks of the streamed fovea::clip_loss and
// fovea::siglip_loss; same checks, same results up to rounding.
#include "fovea/loss/clip_loss.hpp"
#include "fovea/loss/siglip_loss.hpp"

namespace fovea {
namespace reference {
namespace detail {

// G (B, B) -> grad_image = scale * G * text, grad_text = scale * G^T * image.
template <class T>
void loss_input_grads(LossResult<T>& out, const T* G, const Tensor<T, 2>& image, const Tensor<T, 2>& text, T scale,
                      const Context& ctx) {
  const Index B = image.dimension(0), D = image.dimension(1);
  out.grad_image = Tensor<T, 2>(B, D);
  out.grad_text = Tensor<T, 2>(B, D);
  gemm<T>(false, false, B, D, B, scale, G, B, text.data(), D, T(0), out.grad_image.data(), D, ctx);
  gemm<T>(true, false, B, D, B, scale, G, B, image.data(), D, T(0), out.grad_text.data(), D, ctx);
}

}  // namespace detail

// image (B, D), text (B, D), scale -> LossResult, through the B x B logits L = scale * image * text^T.
template <class T>
LossResult<T> clip_loss(const Tensor<T, 2>& image, const Tensor<T, 2>& text, fovea::detail::same_t<T> scale,
                        const Context& ctx = default_context()) {
  const auto p = fovea::detail::plan_loss<T>("clip_loss", image, text, scale, nullptr, LossOptions(), ctx);
  const Index B = p.B, D = p.D;
  Tensor<T, 2> logits(B, B);
  gemm<T>(false, true, B, B, D, scale, image.data(), D, text.data(), D, T(0), logits.data(), B, ctx);
  fovea::detail::MatMap<T> L(logits.data(), B, B, Eigen::OuterStride<>(B));
  // log-softmax over each row (image -> texts) and each column (text -> images), max-shifted.
  const Eigen::Array<T, Eigen::Dynamic, 1> row_max = L.rowwise().maxCoeff().array();
  const Eigen::Array<T, 1, Eigen::Dynamic> col_max = L.colwise().maxCoeff().array();
  const Eigen::Array<T, Eigen::Dynamic, 1> lse_row =
      row_max + (L.array().colwise() - row_max).exp().rowwise().sum().log();
  const Eigen::Array<T, 1, Eigen::Dynamic> lse_col =
      col_max + (L.array().rowwise() - col_max).exp().colwise().sum().log();
  LossResult<T> out;
  double total = 0;
  for (Index i = 0; i < B; ++i) total += double(lse_row(i) - L(i, i)) + double(lse_col(i) - L(i, i));
  out.loss = T(total / (2.0 * double(B)));
  // G = (softmax_rows(L) + softmax_cols(L) - 2I) / (2B); grad_scale = sum(G * L) / scale.
  Tensor<T, 2> grad_logits(B, B);
  fovea::detail::MatMap<T> G(grad_logits.data(), B, B, Eigen::OuterStride<>(B));
  G = (((L.array().colwise() - lse_row).exp() + (L.array().rowwise() - lse_col).exp()) / T(2 * B)).matrix();
  G.diagonal().array() -= T(1) / T(B);
  out.grad_scale = T(double((G.array() * L.array()).sum()) / double(scale));
  detail::loss_input_grads(out, grad_logits.data(), image, text, T(scale), ctx);
  return out;
}

// image (B, D), text (B, D), scale, bias -> LossResult, through the B x B logits L = scale * image * text^T + bias.
template <class T>
LossResult<T> siglip_loss(const Tensor<T, 2>& image, const Tensor<T, 2>& text, fovea::detail::same_t<T> scale,
                          fovea::detail::same_t<T> bias, const Context& ctx = default_context()) {
  const auto p = fovea::detail::plan_loss<T>("siglip_loss", image, text, scale, &bias, LossOptions(), ctx);
  const Index B = p.B, D = p.D;
  Tensor<T, 2> products(B, B);
  gemm<T>(false, true, B, B, D, T(1), image.data(), D, text.data(), D, T(0), products.data(), B, ctx);
  fovea::detail::MatMap<T> S(products.data(), B, B, Eigen::OuterStride<>(B));
  LossResult<T> out;
  // -log sigmoid(z L) = softplus(-z L); d/dL = sigmoid(L) - [z = +1].
  Tensor<T, 2> grad_logits(B, B);
  fovea::detail::MatMap<T> G(grad_logits.data(), B, B, Eigen::OuterStride<>(B));
  double total = 0;
  for (Index i = 0; i < B; ++i)
    for (Index j = 0; j < B; ++j) {
      const T l = scale * S(i, j) + bias;
      const T z = i == j ? T(1) : T(-1);
      total += double(fovea::detail::softplus(-z * l));
      G(i, j) = (fovea::detail::stable_sigmoid(l) - (i == j ? T(1) : T(0))) / T(B);
    }
  out.loss = T(total / double(B));
  out.grad_bias = T(double(G.sum()));
  out.grad_scale = T(double((G.array() * S.array()).sum()));
  detail::loss_input_grads(out, grad_logits.data(), image, text, T(scale), ctx);
  return out;
}

}  // namespace reference
}  // namespace fovea
