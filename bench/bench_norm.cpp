// layer_norm at ViT-B (8, 197, 768) and batch_norm at ResNet's first stage (8, 64, 56, 56). Both are
// memory-bound: GB/s counts the bytes each pass must move (read input, write output; backward reads
// dout and x and reads and writes dx).
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/ops/norm.hpp"

using namespace fovea;

namespace {

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims, float offset = 0) {
  Tensor<T, R> t(dims);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(offset + u(rng));
  return t;
}

void set_gbps(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Args: B, N, D, threads.
void BM_layer_norm(benchmark::State& st) {
  Context ctx(int(st.range(3)));
  const auto x = random_tensor<float, 3>({st.range(0), st.range(1), st.range(2)});
  const auto w = random_tensor<float, 1>({st.range(2)}, 1);
  const auto b = random_tensor<float, 1>({st.range(2)});
  for (auto _ : st) {
    auto y = layer_norm(x, w, b, 1e-6f, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gbps(st, 2.0 * x.size() * sizeof(float));
}

void BM_layer_norm_backward(benchmark::State& st) {
  Context ctx(int(st.range(3)));
  const auto x = random_tensor<float, 3>({st.range(0), st.range(1), st.range(2)});
  const auto w = random_tensor<float, 1>({st.range(2)}, 1);
  const auto b = random_tensor<float, 1>({st.range(2)});
  const auto dout = random_tensor<float, 3>(x.dimensions());
  Tensor<float, 3> out, dx(x.dimensions());
  Tensor<float, 1> mean, rstd, dw(w.dimensions()), db(w.dimensions());
  detail::layer_norm_forward(x, w, b, 1e-6f, out, mean, rstd, ctx);
  dx.setZero();
  dw.setZero();
  db.setZero();
  for (auto _ : st) {
    detail::layer_norm_backward(dout, x, w, mean, rstd, dx, dw, db, ctx);
    benchmark::DoNotOptimize(dx.data());
  }
  set_gbps(st, 4.0 * x.size() * sizeof(float));
}

// Args: N, C, H, W, threads.
void BM_batch_norm(benchmark::State& st) {
  Context ctx(int(st.range(4)));
  const auto x = random_tensor<float, 4>({st.range(0), st.range(1), st.range(2), st.range(3)});
  const Index c = st.range(1);
  const auto mean = random_tensor<float, 1>({c});
  const auto var = random_tensor<float, 1>({c}, 2);
  const auto w = random_tensor<float, 1>({c}, 1);
  const auto b = random_tensor<float, 1>({c});
  for (auto _ : st) {
    auto y = batch_norm(x, mean, var, w, b, 1e-5f, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gbps(st, 2.0 * x.size() * sizeof(float));
}

BENCHMARK(BM_layer_norm)
    ->ArgsProduct({{8}, {197}, {768}, {1, 2}})
    ->ArgNames({"B", "N", "D", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_layer_norm_backward)
    ->ArgsProduct({{8}, {197}, {768}, {1, 2}})
    ->ArgNames({"B", "N", "D", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_batch_norm)
    ->ArgsProduct({{8}, {64}, {56}, {56}, {1, 2}})
    ->ArgNames({"N", "C", "H", "W", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
