// softmax and log_softmax on ViT-B attention scores, (B*H, N, N) = (8*12, 197, 197), float, along the last
// dim (contiguous rows) and, for comparison, along dim 1 (strided columns).
// Counters: items/s (rows) and bytes/s (one read and one write per element).
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/ops/softmax.hpp"

using namespace fovea;

namespace {

const Tensor<float, 3>& scores() {
  static const Tensor<float, 3> x = [] {
    Tensor<float, 3> t(96, 197, 197);
    std::mt19937 rng(2);
    std::normal_distribution<float> nd(0.f, 3.f);
    for (Index i = 0; i < t.size(); ++i) t.data()[i] = nd(rng);
    return t;
  }();
  return x;
}

// Args: log (0 softmax, 1 log_softmax), dim, threads.
void BM_softmax(benchmark::State& st) {
  const auto& x = scores();
  Context ctx(int(st.range(2)));
  const bool log = st.range(0) != 0;
  const int dim = int(st.range(1));
  // Untimed calls first: until the allocator reuses the same blocks, each new output pays first-touch page
  // faults (very slow in sandboxed VMs).
  Tensor<float, 3> y;
  for (int i = 0; i < 3; ++i) y = log ? log_softmax(x, dim, ctx) : softmax(x, dim, ctx);
  for (auto _ : st) {
    y = log ? log_softmax(x, dim, ctx) : softmax(x, dim, ctx);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * x.size() / x.dimension(dim < 0 ? dim + 3 : dim));  // rows
  st.SetBytesProcessed(st.iterations() * x.size() * Index(2 * sizeof(float)));
  st.SetLabel(log ? "log_softmax" : "softmax");
}
BENCHMARK(BM_softmax)
    ->ArgNames({"log", "dim", "threads"})
    ->ArgsProduct({{0, 1}, {-1}, {1, 2}})
    ->ArgsProduct({{0}, {1}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
