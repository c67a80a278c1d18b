// Mixed-size images through ViT-B/16 (random weights filled through the module API): eight images from 64 x 320
// to 288 x 192 (37 to 226 tokens, 1072 in all), four ways, on 1 and 2 threads:
//   packed     VisionTransformer::forward_packed, max_seq_len 2048 (all in one sequence) and 512 (three)
//   alone      forward() on each image in turn (what a runtime without packing does to keep each image's size)
//   padded     every image zero-padded to the largest height and width (288 x 320, 361 tokens each) and run as
//              one batch (what a runtime with fixed-size batches does; the outputs are not the images' own)
// images/s counts the eight images per iteration; tokens/s the tokens actually computed (padding included).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "fovea/models/vit.hpp"

using namespace fovea;

namespace {

// LayerNorm weights near 1, fan-in-scaled matrices, small biases: activations keep a normal float range
// through the depth (as bench_vit.cpp fills its models).
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

constexpr std::array<std::array<Index, 2>, 8> kSizes = {
    {{224, 224}, {160, 256}, {96, 96}, {288, 192}, {128, 176}, {64, 320}, {240, 240}, {112, 144}}};

std::vector<Tensor<float, 4>> mixed_images() {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<Tensor<float, 4>> images;
  for (const auto& s : kSizes) {
    Tensor<float, 4> x(1, 3, s[0], s[1]);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
    images.push_back(x);
  }
  return images;
}

// Every image in the top-left corner of a zero canvas of the largest height and width.
Tensor<float, 4> padded_batch(const std::vector<Tensor<float, 4>>& images) {
  Index H = 0, W = 0;
  for (const auto& x : images) H = std::max(H, x.dimension(2)), W = std::max(W, x.dimension(3));
  Tensor<float, 4> batch(Index(images.size()), 3, H, W);
  batch.setZero();
  for (Index b = 0; b < Index(images.size()); ++b) {
    const auto& x = images[std::size_t(b)];
    for (Index c = 0; c < 3; ++c)
      for (Index y = 0; y < x.dimension(2); ++y)
        std::copy_n(&x(0, c, y, 0), x.dimension(3), &batch(b, c, y, 0));
  }
  return batch;
}

enum Mode { packed_2048, packed_512, alone, padded };

// Args: mode (0 packed 2048, 1 packed 512, 2 alone, 3 padded), threads.
void BM_vit_mixed(benchmark::State& st) {
  const Mode mode = Mode(st.range(0));
  Context ctx(int(st.range(1)));
  VisionTransformer<float> model(VitConfig::vit_b_16());
  randomize(model, 7);
  const std::vector<Tensor<float, 4>> images = mixed_images();
  const Tensor<float, 4> batch = mode == padded ? padded_batch(images) : Tensor<float, 4>();
  const Index max_seq_len = mode == packed_512 ? 512 : 2048;
  Index tokens = 0;
  for (const auto& x : images) tokens += model.num_tokens(model.grid_for(x.dimensions()));
  if (mode == padded) tokens = batch.dimension(0) * model.num_tokens(model.grid_for(batch.dimensions()));
  for (auto _ : st) {
    if (mode == alone) {
      for (const auto& x : images) {
        Tensor<float, 2> logits = model.forward(x, ctx);
        benchmark::DoNotOptimize(logits.data());
      }
    } else if (mode == padded) {
      Tensor<float, 2> logits = model.forward(batch, ctx);
      benchmark::DoNotOptimize(logits.data());
    } else {
      Tensor<float, 2> logits = model.forward_packed(images, max_seq_len, ctx);
      benchmark::DoNotOptimize(logits.data());
    }
  }
  if (mode == packed_2048 || mode == packed_512) {
    std::vector<Index> lengths;
    for (const auto& x : images) lengths.push_back(model.num_tokens(model.grid_for(x.dimensions())));
    const PackPlan plan = plan_packing(lengths, max_seq_len);
    tokens = plan.sequences * plan.seq_len;
    st.counters["sequences"] = double(plan.sequences);
  }
  const char* names[] = {"packed(2048)", "packed(512)", "alone", "padded"};
  st.SetLabel(names[mode]);
  st.counters["images/s"] = benchmark::Counter(double(images.size()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_vit_mixed)
    ->ArgNames({"mode", "threads"})
    ->ArgsProduct({{0, 1, 2, 3}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
