// The SGEMM rate every GEMM-shaped op is measured against (docs/performance.md), on ResNet and ViT shapes.
#include <benchmark/benchmark.h>

#include <vector>

#include "fovea/core/gemm.hpp"

using namespace fovea;

// Args: m, n, k, threads. Counter GFLOPS = 2mnk / time.
static void BM_sgemm(benchmark::State& st) {
  const Index m = st.range(0), n = st.range(1), k = st.range(2);
  Context ctx(int(st.range(3)));
  std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n);
  for (auto _ : st) {
    gemm<float>(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n, ctx);
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
}
BENCHMARK(BM_sgemm)
    ->ArgsProduct({{1024}, {1024}, {1024}, {1, 2}})
    ->Args({64, 3136, 576, 1})->Args({64, 3136, 576, 2})      // resnet 3x3 conv 64->64 at 56x56, im2col
    ->Args({197, 2304, 768, 1})->Args({197, 2304, 768, 2})    // ViT-B qkv projection, batch 1
    ->Args({1576, 3072, 768, 2})                               // ViT-B MLP fc1, batch 8
    ->Unit(benchmark::kMillisecond)->UseRealTime();
