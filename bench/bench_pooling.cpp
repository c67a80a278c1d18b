// Pooling on the shapes vision encoders run: ResNet's stem max pool, its 1x1 head, a 2x2 average pool.
// Counters: "items" = input elements read per second, bytes = input + output bytes per second.
#include <benchmark/benchmark.h>

#include "fovea/ops/pooling.hpp"

using namespace fovea;

namespace {

Tensor<float, 4> input(Index n, Index c, Index h, Index w) {
  Tensor<float, 4> x(n, c, h, w);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 1000) * 1e-3f - 0.5f;
  return x;
}

void set_counters(benchmark::State& st, const Tensor<float, 4>& x, const Tensor<float, 4>& y) {
  st.SetItemsProcessed(int64_t(st.iterations()) * int64_t(x.size()));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(x.size() + y.size()) * int64_t(sizeof(float)));
}

// Args: batch, threads. ResNet stem: (B, 64, 112, 112), kernel 3, stride 2, padding 1 -> (B, 64, 56, 56).
void BM_max_pool2d_resnet_stem(benchmark::State& st) {
  Context ctx(int(st.range(1)));
  const auto x = input(st.range(0), 64, 112, 112);
  const auto o = Pool2dOptions(3).stride(2).padding(1);
  Tensor<float, 4> y;
  for (auto _ : st) {
    y = max_pool2d(x, o, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, x, y);
}
BENCHMARK(BM_max_pool2d_resnet_stem)->ArgsProduct({{1, 8}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();

// Args: batch, threads. ResNet-50 head: (B, 2048, 7, 7) -> (B, 2048, 1, 1).
void BM_adaptive_avg_pool2d_resnet_head(benchmark::State& st) {
  Context ctx(int(st.range(1)));
  const auto x = input(st.range(0), 2048, 7, 7);
  Tensor<float, 4> y;
  for (auto _ : st) {
    y = adaptive_avg_pool2d(x, {1, 1}, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, x, y);
}
BENCHMARK(BM_adaptive_avg_pool2d_resnet_head)
    ->ArgsProduct({{1, 8}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Args: batch, threads. 2x2 average pool as in ResNet-D's downsampling shortcut: (B, 256, 56, 56) -> 28x28.
void BM_avg_pool2d_2x2(benchmark::State& st) {
  Context ctx(int(st.range(1)));
  const auto x = input(st.range(0), 256, 56, 56);
  const auto o = Pool2dOptions(2);
  Tensor<float, 4> y;
  for (auto _ : st) {
    y = avg_pool2d(x, o, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, x, y);
}
BENCHMARK(BM_avg_pool2d_2x2)->ArgsProduct({{1, 8}, {1, 2}})->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
