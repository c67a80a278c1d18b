// Streamed CLIP and SigLIP losses, forward + backward, against the B x B reference and the SGEMM rate of the
// products they are made of (docs/losses.md). B = 65,536 runs take minutes: select sizes with
//   bench_loss --benchmark_filter='/(1024|4096)/'
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fovea/loss.hpp"

#ifdef __GLIBC__
#include <malloc.h>
#endif

using namespace fovea;

namespace {

// Random unit rows, each row from its own seed.
Tensor<float, 2> unit_rows(Index B, Index D, unsigned seed, const Context& ctx) {
  Tensor<float, 2> x(B, D);
  ctx.parallel_range(B, 256, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      std::mt19937 rng(seed * 2654435761u + unsigned(i));
      std::normal_distribution<float> nd;
      double n = 0;
      for (Index d = 0; d < D; ++d) n += double(x(i, d) = nd(rng)) * x(i, d);
      for (Index d = 0; d < D; ++d) x(i, d) = float(x(i, d) / std::sqrt(n));
    }
  });
  return x;
}

double status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::strtod(line.c_str() + std::strlen(key) + 1, nullptr) / 1024.0;
  return 0;
}

// Peak resident memory of what runs after this, net of what is resident now: resets VmHWM to the current RSS
// (Linux: "5" to /proc/self/clear_refs).
struct PeakMemory {
  double start;
  PeakMemory() {
#ifdef __GLIBC__
    // What earlier benchmarks freed stays in the heaps (Context fixes glibc's thresholds high) and would be
    // reused without counting: give its pages back first.
    malloc_trim(0);
#endif
    std::ofstream("/proc/self/clear_refs") << "5";
    start = status_mib("VmRSS:");
  }
  double growth_mib() const { return status_mib("VmHWM:") - start; }
};

enum class Kind { clip, siglip, clip_reference, siglip_reference };

// Args: B, D, threads. Counters: GFLOPS = products * 2 B^2 D / time; peak_mib = resident growth during the runs
// (the gradients, 2 B D floats, included; the inputs were resident before); beyond_grads_mib = that minus the
// gradients. For a whole process's figure use fovea-loss bench.
template <Kind K>
void BM_loss(benchmark::State& st) {
  const Index B = st.range(0), D = st.range(1);
  Context ctx(int(st.range(2)));
  const auto image = unit_rows(B, D, 1, ctx), text = unit_rows(B, D, 2, ctx);
  PeakMemory mem;
  for (auto _ : st) {
    LossResult<float> r;
    if constexpr (K == Kind::clip) r = clip_loss(image, text, 100.f, {}, ctx);
    if constexpr (K == Kind::siglip) r = siglip_loss(image, text, 10.f, -10.f, {}, ctx);
    if constexpr (K == Kind::clip_reference) r = reference::clip_loss(image, text, 100.f, ctx);
    if constexpr (K == Kind::siglip_reference) r = reference::siglip_loss(image, text, 10.f, -10.f, ctx);
    benchmark::DoNotOptimize(r.grad_image.data());
  }
  const bool clip = K == Kind::clip || K == Kind::clip_reference;
  const double grads_mib = 2.0 * double(B) * double(D) * sizeof(float) / (1024.0 * 1024.0);
  st.counters["GFLOPS"] = benchmark::Counter((clip ? 4.0 : 3.0) * 2.0 * double(B) * double(B) * double(D),
                                             benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  st.counters["peak_mib"] = mem.growth_mib();
  st.counters["beyond_grads_mib"] = mem.growth_mib() - grads_mib;
}

// The yardstick: fovea::gemm's SGEMM (the kernel the loss runs) on the loss's own product shape, (B, D) x (D, B), threaded.
void BM_sgemm_rate(benchmark::State& st) {
  const Index n = st.range(0), k = st.range(1);
  Context ctx(int(st.range(2)));
  const auto a = unit_rows(n, k, 1, ctx), b = unit_rows(n, k, 2, ctx);
  std::vector<float> c(n * n);
  for (auto _ : st) {
    gemm<float>(false, true, n, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n, ctx);
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * double(n) * double(n) * double(k),
                                             benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void loss_sizes(benchmark::internal::Benchmark* b) {
  for (long B : {1024, 4096, 16384, 65536})
    for (long D : {512, 768})
      for (long threads : {1, 2}) b->Args({B, D, threads});
}

}  // namespace

BENCHMARK(BM_loss<Kind::clip>)->Name("BM_clip_loss")->Apply(loss_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_loss<Kind::siglip>)->Name("BM_siglip_loss")->Apply(loss_sizes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_loss<Kind::clip_reference>)
    ->Name("BM_clip_loss_reference")
    ->ArgsProduct({{1024, 4096}, {512}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_loss<Kind::siglip_reference>)
    ->Name("BM_siglip_loss_reference")
    ->ArgsProduct({{1024, 4096}, {512}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_sgemm_rate)->ArgsProduct({{4096}, {512, 768}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
