// scaled_dot_product_attention at ViT-B shapes (197 tokens, 12 heads of 64) and a long sequence (4096
// tokens, 8 heads), next to the straightforward version that materialises every (N x N) score matrix
// (gemm, softmax rows, gemm): the ratio is what streaming the keys costs or saves.
#include <benchmark/benchmark.h>

#include <atomic>
#include <random>
#include <vector>

#include "fovea/core/gemm.hpp"
#include "fovea/ops/attention.hpp"
#include "fovea/ops/softmax.hpp"

using namespace fovea;

namespace {

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims, unsigned seed) {
  Tensor<T, R> t(dims);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(nd(rng));
  return t;
}

// Two products of 2 N^2 Dh flops each per (batch, head).
void set_gflops(benchmark::State& st, Index b, Index h, Index n, Index d) {
  st.counters["GFLOPS"] =
      benchmark::Counter(4.0 * double(b * h) * double(n) * double(n) * double(d) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Args: batch, heads, tokens, head dim, threads.
void BM_sdpa(benchmark::State& st) {
  const Index b = st.range(0), h = st.range(1), n = st.range(2), d = st.range(3);
  Context ctx(int(st.range(4)));
  const auto q = random_tensor<float, 4>({b, h, n, d}, 1);
  const auto k = random_tensor<float, 4>({b, h, n, d}, 2);
  const auto v = random_tensor<float, 4>({b, h, n, d}, 3);
  for (auto _ : st) {
    auto o = scaled_dot_product_attention(q, k, v, ctx);
    benchmark::DoNotOptimize(o.data());
  }
  set_gflops(st, b, h, n, d);
}

// With a key-padding mask (B, 1, 1, N), the NaViT / padded-batch case: the mask read costs per score.
void BM_sdpa_masked(benchmark::State& st) {
  const Index b = st.range(0), h = st.range(1), n = st.range(2), d = st.range(3);
  Context ctx(int(st.range(4)));
  const auto q = random_tensor<float, 4>({b, h, n, d}, 1);
  const auto k = random_tensor<float, 4>({b, h, n, d}, 2);
  const auto v = random_tensor<float, 4>({b, h, n, d}, 3);
  Tensor<float, 4> pad(b, 1, 1, n);
  pad.setZero();
  const auto mask = AttentionMask<float>::additive(pad);
  for (auto _ : st) {
    auto o = scaled_dot_product_attention(q, k, v, mask, {}, ctx);
    benchmark::DoNotOptimize(o.data());
  }
  set_gflops(st, b, h, n, d);
}

// The unfused baseline: per (batch, head) S = q k^T * scale (N x N), softmax rows, S v; (b, h) pairs are
// spread over the threads, as PyTorch's math path does with its batched GEMMs.
void BM_materialized(benchmark::State& st) {
  const Index b = st.range(0), h = st.range(1), n = st.range(2), d = st.range(3);
  Context ctx(int(st.range(4)));
  const auto q = random_tensor<float, 4>({b, h, n, d}, 1);
  const auto k = random_tensor<float, 4>({b, h, n, d}, 2);
  const auto v = random_tensor<float, 4>({b, h, n, d}, 3);
  Tensor<float, 4> o(b, h, n, d);
  // Scores and probabilities (N x N each) per thread slot.
  std::vector<std::vector<float>> scores(std::size_t(2 * ctx.num_threads()), std::vector<float>(std::size_t(n * n)));
  std::atomic<int> slot{0};
  for (auto _ : st) {
    slot = 0;
    ctx.parallel_range(b * h, 1, [&](Index p0, Index p1) {
      const int my = slot++;
      float* s = scores[std::size_t(2 * my)].data();
      float* pr = scores[std::size_t(2 * my + 1)].data();
      for (Index p = p0; p < p1; ++p) {
        const float* qp = q.data() + p * n * d;
        detail::gemm_serial<float>(false, true, n, n, d, 0.125f, qp, d, k.data() + p * n * d, d, 0.f, s, n);
        for (Index r = 0; r < n; ++r) detail::softmax_row<false>(s + r * n, pr + r * n, n);
        detail::gemm_serial<float>(false, false, n, d, n, 1.f, pr, n, v.data() + p * n * d, d, 0.f, o.data() + p * n * d, d);
      }
    });
    benchmark::DoNotOptimize(o.data());
  }
  set_gflops(st, b, h, n, d);
}

BENCHMARK(BM_sdpa)
    ->ArgsProduct({{8}, {12}, {197}, {64}, {1, 2}})
    ->ArgsProduct({{1}, {12}, {197}, {64}, {1, 2}})
    ->ArgsProduct({{1}, {8}, {4096}, {64}, {1, 2}})
    ->ArgNames({"B", "H", "N", "Dh", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_sdpa_masked)
    ->ArgsProduct({{8}, {12}, {197}, {64}, {2}})
    ->ArgsProduct({{1}, {8}, {4096}, {64}, {2}})
    ->ArgNames({"B", "H", "N", "Dh", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_materialized)
    ->ArgsProduct({{8}, {12}, {197}, {64}, {1, 2}})
    ->ArgsProduct({{1}, {8}, {4096}, {64}, {2}})
    ->ArgNames({"B", "H", "N", "Dh", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
