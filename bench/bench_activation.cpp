// Element-wise activations on a ViT-B MLP hidden tensor (8, 197, 3072) and a ResNet stem output
// (8, 64, 112, 112), float. Counters: items/s (elements) and bytes/s (one read and one write per element).
// Baselines: a plain copy (the memory-bound ceiling) and gelu as a scalar std::erf loop.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "fovea/ops/activation.hpp"

using namespace fovea;

namespace {

enum Kind { kRelu, kGelu, kGeluTanh, kQuickGelu, kSilu, kSigmoid };
const char* const kKindNames[] = {"relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "sigmoid"};

template <int R>
Tensor<float, R> make_input(const std::array<Index, R>& dims) {
  Tensor<float, R> x(dims);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 2.f);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  return x;
}

const Tensor<float, 3>& vit_input() {
  static const auto x = make_input<3>({8, 197, 3072});
  return x;
}
const Tensor<float, 4>& resnet_input() {
  static const auto x = make_input<4>({8, 64, 112, 112});
  return x;
}

template <int R>
void apply(const Tensor<float, R>& x, Tensor<float, R>& y, int kind, bool in_place, const Context& ctx) {
  if (in_place) {
    switch (kind) {
      case kRelu: relu_(y, ctx); break;
      case kGelu: gelu_(y, "none", ctx); break;
      case kGeluTanh: gelu_(y, "tanh", ctx); break;
      case kQuickGelu: quick_gelu_(y, ctx); break;
      case kSilu: silu_(y, ctx); break;
      case kSigmoid: sigmoid_(y, ctx); break;
    }
  } else {
    switch (kind) {
      case kRelu: y = relu(x, ctx); break;
      case kGelu: y = gelu(x, "none", ctx); break;
      case kGeluTanh: y = gelu(x, "tanh", ctx); break;
      case kQuickGelu: y = quick_gelu(x, ctx); break;
      case kSilu: y = silu(x, ctx); break;
      case kSigmoid: y = sigmoid(x, ctx); break;
    }
  }
}

template <int R>
void run(benchmark::State& st, const Tensor<float, R>& x, int kind, bool in_place, const Context& ctx) {
  Tensor<float, R> y = x;
  // Untimed calls first: until the allocator settles on reusing the same blocks, each new output pays
  // first-touch page faults (very slow in sandboxed VMs), which would dominate the first timed iterations.
  for (int i = 0; i < 3; ++i) apply(x, y, kind, in_place, ctx);
  for (auto _ : st) {
    if (in_place) {
      // Fresh input each time: gelu_ applied to its own output drifts into subnormals, which are slow.
      st.PauseTiming();
      std::copy(x.data(), x.data() + x.size(), y.data());
      st.ResumeTiming();
    }
    apply(x, y, kind, in_place, ctx);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * x.size());
  st.SetBytesProcessed(st.iterations() * x.size() * Index(2 * sizeof(float)));
  st.SetLabel(std::string(kKindNames[kind]) + (in_place ? "_ in place" : ""));
}

// Args: kind, shape (0 ViT, 1 ResNet), threads, in place.
void BM_activation(benchmark::State& st) {
  Context ctx(int(st.range(2)));
  const int kind = int(st.range(0));
  const bool in_place = st.range(3) != 0;
  if (st.range(1) == 0) run(st, vit_input(), kind, in_place, ctx);
  else run(st, resnet_input(), kind, in_place, ctx);
}
BENCHMARK(BM_activation)
    ->ArgNames({"kind", "resnet", "threads", "inplace"})
    ->ArgsProduct({{kRelu, kGelu, kGeluTanh, kQuickGelu, kSilu, kSigmoid}, {0, 1}, {1, 2}, {0}})
    ->ArgsProduct({{kRelu, kGelu, kGeluTanh, kQuickGelu, kSilu, kSigmoid}, {0}, {1, 2}, {1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// What moving the bytes alone costs: the ceiling for every activation above.
void BM_copy_baseline(benchmark::State& st) {
  const auto& x = vit_input();
  Tensor<float, 3> y = x;
  for (auto _ : st) {
    std::copy(x.data(), x.data() + x.size(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * x.size());
  st.SetBytesProcessed(st.iterations() * x.size() * Index(2 * sizeof(float)));
}
BENCHMARK(BM_copy_baseline)->Unit(benchmark::kMillisecond)->UseRealTime();

// gelu as the textbook scalar loop over std::erf, one thread: what the vectorised kernel replaces.
void BM_gelu_std_erf_baseline(benchmark::State& st) {
  const auto& x = vit_input();
  Tensor<float, 3> y = x;
  for (auto _ : st) {
    for (Index i = 0; i < x.size(); ++i) {
      const float v = x.data()[i];
      y.data()[i] = 0.5f * v * (1.f + std::erf(v * 0.70710678f));
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * x.size());
  st.SetBytesProcessed(st.iterations() * x.size() * Index(2 * sizeof(float)));
}
BENCHMARK(BM_gelu_std_erf_baseline)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
