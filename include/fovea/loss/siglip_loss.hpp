#pragma once
// Streamed SigLIP loss (a sigmoid per image-text pair). Each tile of the logits is independent: its gradient
// G = (sigmoid(L) - I) / B needs nothing outside it, so the loss and the gradients come from one sweep that
// computes every tile once (3 B x B x D products in all).
#include "fovea/loss/clip_loss.hpp"

namespace fovea {
namespace detail {

// softplus(x) = log(1 + exp(x)) and sigmoid(x) in forms that neither overflow nor lose small values.
template <class T>
T softplus(T x) {
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}
template <class T>
T stable_sigmoid(T x) {
  const T e = std::exp(-std::abs(x));
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// Sums a tile contributes: loss = sum of softplus(-z * L); for the scalar gradients sum(G) and sum(G * S).
struct SiglipSums {
  double loss = 0, g = 0, g_dot_s = 0;
};

// SigLIP on one tile of S = image_I * text_J^T (ti, tj), L = scale * S + bias. Adds the tile's loss terms
// -log sigmoid(z * L) = softplus(-z * L) and, with gradients, overwrites S with B * G = sigmoid(L) - I (the 1/B
// goes into the products). a, b, c: scratch rows of tj.
template <class T>
SiglipSums siglip_tile(T* S, const TileSpan& s, T scale, T bias, bool gradients, T* a, T* b, T* c) {
  const Index tj = s.tj;
  ArrayRow<T> L(a, tj), E(b, tj), W(c, tj);
  // sigmoid(L) = select(L >= 0, 1, e) / (1 + e), e = exp(-|L|); min(L * huge, 1) is 1 for L > 0 and <= 0 below,
  // so max(that, e) makes the select without a branch (for tiny |L|, e rounds to 1 and either side gives 1).
  const T huge = std::is_same_v<T, float> ? T(1e30) : T(1e300);
  SiglipSums sums;
  for (Index r = 0; r < s.ti; ++r) {
    ArrayRow<T> Sr(S + r * tj, tj);
    L = Sr * scale + bias;
    E = (-L.abs()).exp();
    if (s.diagonal) {
      W = L.max(T(0)) + E.log1p();
      W(r) = softplus(-L(r));  // the positive pair, z = +1
      sums.loss += double(W.sum());
    } else {
      sums.loss += double((L.max(T(0)) + E.log1p()).sum());
    }
    if (!gradients) continue;
    W = (L * huge).min(T(1)).max(E) / (T(1) + E);
    if (s.diagonal) W(r) = -stable_sigmoid(-L(r));  // sigmoid(L) - 1 without the cancellation
    sums.g += double(W.sum());
    sums.g_dot_s += double((W * Sr).sum());
    Sr = W;
  }
  return sums;
}

}  // namespace detail

// image (B, D), text (B, D), scale, bias -> loss, grad_image (B, D), grad_text (B, D), grad_scale, grad_bias.
// loss = -(1/B) sum_ij log sigmoid(z_ij * L_ij), L = scale * image * text^T + bias, z = +1 on the diagonal and -1
// elsewhere. One sweep: each tile's S = image_I * text_J^T gives its loss terms and G = (sigmoid(L) - I) / B, then
// grad_image_I += scale * G * text_J and grad_text_J += scale * G^T * image_I. Working memory O(threads * tile^2).
template <class T>
LossResult<T> siglip_loss(const Tensor<T, 2>& image, const Tensor<T, 2>& text, detail::same_t<T> scale,
                          detail::same_t<T> bias, const LossOptions& options = {},
                          const Context& ctx = default_context()) {
  const detail::LossPlan p = detail::plan_loss<T>("siglip_loss", image, text, scale, &bias, options, ctx);
  const Index B = p.B, D = p.D;
  const T* X = image.data();
  const T* Y = text.data();
  const bool grads = options.gradients();
  LossResult<T> out;
  if (grads) {
    out.grad_image = Tensor<T, 2>(B, D);
    out.grad_text = Tensor<T, 2>(B, D);
  }
  T* dX = out.grad_image.data();
  T* dY = out.grad_text.data();
  // G is stored times B, so the products take scale / B.
  const T alpha = scale / T(B);
  detail::TileScratch<T> scratch(std::min<Index>(ctx.num_threads(), p.blocks), p.tile);
  std::vector<detail::SiglipSums> sums(p.blocks);
  detail::sweep_tiles(p.blocks, ctx, [&](Index k, Index I, Index J) {
    const detail::TileSpan s = detail::tile_span(p, I, J);
    typename detail::TileScratch<T>::Lease w(scratch);
    T* S = w->tile.data();
    detail::gemm_serial<T>(false, true, s.ti, s.tj, D, T(1), X + s.i0 * D, D, Y + s.j0 * D, D, T(0), S, s.tj);
    const detail::SiglipSums t = detail::siglip_tile(S, s, scale, bias, grads, w->a.data(), w->b.data(), w->c.data());
    sums[I].loss += t.loss;
    sums[I].g += t.g;
    sums[I].g_dot_s += t.g_dot_s;
    if (!grads) return;
    // Step 0 writes each gradient block first (beta = 0).
    const T beta = k == 0 ? T(0) : T(1);
    detail::gemm_serial<T>(false, false, s.ti, D, s.tj, alpha, S, s.tj, Y + s.j0 * D, D, beta, dX + s.i0 * D, D);
    detail::gemm_serial<T>(true, false, s.tj, D, s.ti, alpha, S, s.tj, X + s.i0 * D, D, beta, dY + s.j0 * D, D);
  });
  detail::SiglipSums total;
  for (const auto& t : sums) {
    total.loss += t.loss;
    total.g += t.g;
    total.g_dot_s += t.g_dot_s;
  }
  out.loss = T(total.loss / double(B));
  if (grads) {
    out.grad_bias = T(total.g / double(B));
    out.grad_scale = T(total.g_dot_s / double(B));
  }
  return out;
}

}  // namespace fovea
