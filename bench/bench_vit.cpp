// Whole-model inference: ViT-S/16 and ViT-B/16 at 224 x 224 (197 tokens), random weights filled through the
// module API (no file), batch 1 and 8, 1 and 2 threads. Target on 2 threads: ViT-B/16 batch 1 under
// PyTorch's 242 ms. GFLOPS counts every multiply-add of the forward (patch embedding, QKV, attention scores
// and values, output projection, MLP, head) twice: ViT-B/16 is 35.1 GFLOP per image.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>

#include "fovea/models/vit.hpp"

using namespace fovea;

namespace {

// LayerNorm weights near 1, fan-in-scaled matrices, small biases: activations keep a normal float range
// through the depth (denormals or infinities would time something else).
void randomize(VisionTransformer<float>& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  model.update_parameters([&](const std::string& name, auto& t) {
    const bool norm = name.find("ln") != std::string::npos || name.find("norm") != std::string::npos;
    const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (norm && !bias) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = 1.0f + 0.1f * normal(rng);
    } else if (bias || t.dimension(0) == 0) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = 0.02f * normal(rng);
    } else {
      const float scale = std::sqrt(float(t.dimension(0)) / float(t.size()));  // 1 / sqrt(fan_in)
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = scale * normal(rng);
    }
  });
}

// Floating-point operations of one forward of a batch.
double forward_flops(const VitConfig& c, Index batch) {
  const double D = double(c.width), M = double(c.mlp_dim), G = double(c.grid().h * c.grid().w);
  const double N = G + double(c.num_prefix_tokens());
  const double per_block = 2 * N * D * 3 * D + 2 * 2 * N * N * D + 2 * N * D * D + 2 * 2 * N * D * M;
  const double patch = 2 * G * D * double(c.in_channels * c.patch_size * c.patch_size);
  const double head = 2 * D * double(c.output_dim());
  return double(batch) * (patch + double(c.depth) * per_block + head);
}

// Args: width (384 = ViT-S/16, 768 = ViT-B/16), batch, threads.
void BM_vit(benchmark::State& st) {
  const VitConfig config = st.range(0) == 384 ? VitConfig::vit_small_patch16_224() : VitConfig::vit_b_16();
  const Index batch = st.range(1);
  Context ctx(int(st.range(2)));
  VisionTransformer<float> model(config);
  randomize(model, 7);
  Tensor<float, 4> x(batch, 3, 224, 224);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  for (auto _ : st) {
    Tensor<float, 2> logits = model.forward(x, ctx);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(forward_flops(config, batch), benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["images/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_vit)
    ->ArgNames({"width", "batch", "threads"})
    ->ArgsProduct({{384, 768}, {1, 8}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
