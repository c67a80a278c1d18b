// linear at ViT-B shapes, next to the bare GEMM of the same shape (the ratio is the cost of the op
// around the product: bias fusion and the reshape-free row view).
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/core/gemm.hpp"
#include "fovea/ops/linear.hpp"

using namespace fovea;

namespace {

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims) {
  Tensor<T, R> t(dims);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(u(rng));
  return t;
}

void set_gflops(benchmark::State& st, double flops) {
  st.counters["GFLOPS"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Args: rows M (batch * tokens), in, out, threads. linear (M, in) x (out, in)^T + bias.
void BM_linear(benchmark::State& st) {
  const Index m = st.range(0), in = st.range(1), out = st.range(2);
  Context ctx(int(st.range(3)));
  const auto x = random_tensor<float, 2>({m, in});
  const auto w = random_tensor<float, 2>({out, in});
  const auto b = random_tensor<float, 1>({out});
  for (auto _ : st) {
    auto y = linear(x, w, b, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(st, 2.0 * m * in * out);
}

// The same product through gemm alone (trans_b, beta 0): the ceiling linear is measured against.
void BM_gemm_nt(benchmark::State& st) {
  const Index m = st.range(0), in = st.range(1), out = st.range(2);
  Context ctx(int(st.range(3)));
  const auto x = random_tensor<float, 2>({m, in});
  const auto w = random_tensor<float, 2>({out, in});
  Tensor<float, 2> y(m, out);
  for (auto _ : st) {
    gemm<float>(false, true, m, out, in, 1.f, x.data(), in, w.data(), in, 0.f, y.data(), out, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(st, 2.0 * m * in * out);
}

// Backward: dinput, dweight (two GEMMs, 4 M in out flops) and dbias.
void BM_linear_backward(benchmark::State& st) {
  const Index m = st.range(0), in = st.range(1), out = st.range(2);
  Context ctx(int(st.range(3)));
  const auto x = random_tensor<float, 2>({m, in});
  const auto w = random_tensor<float, 2>({out, in});
  const auto dout = random_tensor<float, 2>({m, out});
  Tensor<float, 2> dx(m, in), dw(out, in);
  Tensor<float, 1> db(out);
  dx.setZero();
  dw.setZero();
  db.setZero();
  for (auto _ : st) {
    detail::linear_backward(dout, x, w, &dx, &dw, &db, ctx);
    benchmark::DoNotOptimize(dx.data());
  }
  set_gflops(st, 4.0 * m * in * out);
}

// ViT-B/16 at 224: 197 tokens, width 768; batch 8 -> M = 1576. qkv 768 -> 2304, MLP fc1 768 -> 3072,
// attention output projection 768 -> 768 at batch 1.
#define VIT_SHAPES(bm)                                                                              \
  BENCHMARK(bm)                                                                                     \
      ->ArgsProduct({{1576}, {768}, {2304, 3072}, {1, 2}})                                          \
      ->ArgsProduct({{197}, {768}, {768}, {1, 2}})                                                  \
      ->ArgNames({"M", "in", "out", "threads"})                                                     \
      ->Unit(benchmark::kMillisecond)                                                               \
      ->UseRealTime()
VIT_SHAPES(BM_linear);
VIT_SHAPES(BM_gemm_nt);
BENCHMARK(BM_linear_backward)
    ->ArgsProduct({{1576}, {768}, {2304}, {1, 2}})
    ->ArgNames({"M", "in", "out", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
