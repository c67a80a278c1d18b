// EncoderBlock at ViT-S/16 (384 wide, 6 heads, MLP 1536) and ViT-B/16 (768, 12, 3072) with 197 tokens,
// batch 1 and 8, in place with a shared workspace (as a model runs its stack); next to the same block
// composed from the public ops (layer_norm, linear, permutes, scaled_dot_product_attention, gelu, adds),
// which shows what the fused path (in-place QKV read, GELU and residual epilogues) saves; and the Hugging
// Face layout (three q/k/v products) next to the fused QKV product. A ViT-B/16 forward at 224 is 12 blocks
// plus a 0.17 GFLOP patch embedding: 35.1 GFLOP.
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/nn/attention_pool.hpp"
#include "fovea/nn/encoder_block.hpp"
#include "fovea/ops/activation.hpp"
#include "fovea/ops/attention.hpp"
#include "fovea/ops/linear.hpp"
#include "fovea/ops/norm.hpp"

using namespace fovea;

namespace {

template <class T, int R>
void fill(Tensor<T, R>& t, std::mt19937& rng, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(nd(rng));
}

// Random parameters at a fan-in scale, so activations stay O(1) (no denormals, no overflow).
template <class T>
void randomize(EncoderBlock<T>& block) {
  std::mt19937 rng(1);
  block.named_tensors("", [&](const std::string& name, auto& t) {
    const bool matrix = t.rank() == 2;
    const bool norm_weight = name.find("ln_") == 0 && name.find("weight") != std::string::npos;
    fill(t, rng, matrix ? 1.0 / std::sqrt(double(t.dimension(1))) : 0.1);
    if (norm_weight) t = t.constant(T(1));
  });
}

// 2 M (4 D^2 + 2 D hidden) for the four projections + 4 B N^2 D for attention.
double block_flops(Index b, Index n, Index d, Index hidden) {
  const double m = double(b * n);
  const double dd = double(d);
  return 2.0 * m * (4.0 * dd * dd + 2.0 * dd * double(hidden)) + 4.0 * double(b) * double(n) * double(n) * dd;
}

void set_gflops(benchmark::State& st, double flops) {
  st.counters["GFLOPS"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Args: batch, tokens, width, heads, threads.
void BM_encoder_block(benchmark::State& st) {
  const Index b = st.range(0), n = st.range(1), d = st.range(2), h = st.range(3), hidden = 4 * d;
  Context ctx(int(st.range(4)));
  EncoderBlock<float> block(d, h, hidden);
  randomize(block);
  Tensor<float, 3> x0(b, n, d), x(b, n, d);
  std::mt19937 rng(2);
  fill(x0, rng, 1.0);
  EncoderWorkspace<float> ws;
  for (auto _ : st) {
    st.PauseTiming();
    x = x0;  // each iteration starts from the same input (residuals would otherwise grow)
    st.ResumeTiming();
    block.forward_(x, ws, {}, ctx);
    benchmark::DoNotOptimize(x.data());
  }
  set_gflops(st, block_flops(b, n, d, hidden));
}

// Hugging Face layout: q_proj, k_proj, v_proj as three (D, D) products into the same buffer.
void BM_encoder_block_hf(benchmark::State& st) {
  const Index b = st.range(0), n = st.range(1), d = st.range(2), h = st.range(3), hidden = 4 * d;
  Context ctx(int(st.range(4)));
  EncoderBlock<float> block(d, h, hidden, Activation::gelu, 1e-6, EncoderBlockNames::hf());
  std::mt19937 rng(1);
  block.named_tensors("", [&](const std::string& name, auto& t) {
    fill(t, rng, t.rank() == 2 ? 1.0 / std::sqrt(double(t.dimension(1))) : 0.1);
    if (name.find("layer_norm") == 0 && name.find("weight") != std::string::npos) t = t.constant(1.f);
  });
  Tensor<float, 3> x0(b, n, d), x(b, n, d);
  fill(x0, rng, 1.0);
  EncoderWorkspace<float> ws;
  for (auto _ : st) {
    st.PauseTiming();
    x = x0;
    st.ResumeTiming();
    block.forward_(x, ws, {}, ctx);
    benchmark::DoNotOptimize(x.data());
  }
  set_gflops(st, block_flops(b, n, d, hidden));
}

// The same block from the public ops, each a pass of its own, with (B, N, 3, H, Dh) -> (3, B, H, N, Dh)
// and (B, H, N, Dh) -> (B, N, H, Dh) permutes around the attention, as a straightforward port does it.
void BM_encoder_block_unfused(benchmark::State& st) {
  const Index b = st.range(0), n = st.range(1), d = st.range(2), h = st.range(3), hidden = 4 * d, dh = d / h;
  Context ctx(int(st.range(4)));
  EncoderBlock<float> block(d, h, hidden);
  randomize(block);
  Tensor<float, 3> x(b, n, d);
  std::mt19937 rng(2);
  fill(x, rng, 1.0);
  const auto& p = block;
  for (auto _ : st) {
    auto y = layer_norm(x, p.norm1.weight, p.norm1.bias, p.norm1.eps, ctx);
    auto qkv = linear(y, p.attn.in_proj_weight, p.attn.in_proj_bias, ctx);
    Tensor<float, 5> split(3, b, h, n, dh);
    split.device(ctx.device()) =
        qkv.reshape(std::array<Index, 5>{b, n, 3, h, dh}).shuffle(std::array<int, 5>{2, 0, 3, 1, 4});
    const Tensor<float, 4> q = split.chip(0, 0), k = split.chip(1, 0), v = split.chip(2, 0);
    auto o = scaled_dot_product_attention(q, k, v, ctx);
    Tensor<float, 3> merged(b, n, d);
    merged.device(ctx.device()) =
        o.shuffle(std::array<int, 4>{0, 2, 1, 3}).reshape(std::array<Index, 3>{b, n, d});
    Tensor<float, 3> x1(b, n, d);
    x1.device(ctx.device()) = x + linear(merged, p.attn.out_proj.weight, p.attn.out_proj.bias, ctx);
    auto z = layer_norm(x1, p.norm2.weight, p.norm2.bias, p.norm2.eps, ctx);
    auto f = linear(z, p.mlp.fc1.weight, p.mlp.fc1.bias, ctx);
    gelu_(f, "none", ctx);
    Tensor<float, 3> out(b, n, d);
    out.device(ctx.device()) = x1 + linear(f, p.mlp.fc2.weight, p.mlp.fc2.bias, ctx);
    benchmark::DoNotOptimize(out.data());
  }
  set_gflops(st, block_flops(b, n, d, hidden));
}

// SigLIP's pooling head at ViT-B width over 196 tokens, batch 8 (one query: cheap next to a block).
void BM_attention_pool_head(benchmark::State& st) {
  const Index b = st.range(0), n = st.range(1), d = st.range(2), h = st.range(3);
  Context ctx(int(st.range(4)));
  AttentionPoolHead<float> head(d, h, 4 * d);
  std::mt19937 rng(1);
  head.named_tensors("", [&](const std::string&, auto& t) { fill(t, rng, t.rank() == 2 ? 0.03 : 0.1); });
  Tensor<float, 3> x(b, n, d);
  fill(x, rng, 1.0);
  for (auto _ : st) {
    auto y = head.forward(x, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  // k, v projections dominate: 2 B N D 2D; q, out and MLP are per image.
  const double dd = double(d * d);
  set_gflops(st, 2.0 * double(b * n) * 2.0 * dd + 4.0 * double(b * n * d) + 2.0 * double(b) * (2.0 * dd + 8.0 * dd));
}

#define BLOCK_SHAPES(bm)                                                       \
  BENCHMARK(bm)                                                                \
      ->ArgsProduct({{1, 8}, {197}, {384}, {6}, {1, 2}})                       \
      ->ArgsProduct({{1, 8}, {197}, {768}, {12}, {1, 2}})                      \
      ->ArgNames({"B", "N", "D", "H", "threads"})                              \
      ->Unit(benchmark::kMillisecond)                                          \
      ->UseRealTime()
BLOCK_SHAPES(BM_encoder_block);
BENCHMARK(BM_encoder_block_hf)
    ->ArgsProduct({{1}, {197}, {768}, {12}, {1, 2}})
    ->ArgNames({"B", "N", "D", "H", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_encoder_block_unfused)
    ->ArgsProduct({{1, 8}, {197}, {768}, {12}, {2}})
    ->ArgNames({"B", "N", "D", "H", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_pool_head)
    ->ArgsProduct({{8}, {196}, {768}, {12}, {1, 2}})
    ->ArgNames({"B", "N", "D", "H", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
