// The SGEMM rate every GEMM-shaped op is measured against (docs/performance.md), on ResNet and ViT shapes.
#include <benchmark/benchmark.h>

#include <vector>

#include <Eigen/Core>

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

// The machine's float32 FMA peak on `threads` cores, measured in the same run as everything else: this VM's
// clock varies from run to run, so a tower's fraction of peak is only meaningful against a peak taken
// alongside it (bench/compare_pytorch.py divides by this). Each thread runs 16 independent chains of
// packet FMAs, enough to cover the FMA latency on both pipes, with no memory traffic.
static void BM_fma_peak(benchmark::State& st) {
  using Packet = Eigen::internal::packet_traits<float>::type;
  constexpr int kChains = 16, kPacket = Eigen::internal::packet_traits<float>::size;
  constexpr long kSteps = 1 << 20;
  const int threads = int(st.range(0));
  Context ctx(threads);
  std::vector<float> sink(threads);
  for (auto _ : st) {
    ctx.parallel_for(threads, [&](Index t) {
      Packet acc[kChains];
      for (int c = 0; c < kChains; ++c) acc[c] = Eigen::internal::pset1<Packet>(float(c + t));
      const Packet a = Eigen::internal::pset1<Packet>(0.999999f), b = Eigen::internal::pset1<Packet>(1e-7f);
      for (long s = 0; s < kSteps; ++s) {
        for (int c = 0; c < kChains; ++c) acc[c] = Eigen::internal::pmadd(acc[c], a, b);
        benchmark::ClobberMemory();
      }
      Packet total = acc[0];
      for (int c = 1; c < kChains; ++c) total = Eigen::internal::padd(total, acc[c]);
      sink[t] = Eigen::internal::predux(total);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * kChains * kPacket * double(kSteps) * threads,
                                             benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_fma_peak)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
