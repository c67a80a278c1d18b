// NaViT packing against padding: 32 images of mixed sizes, from 64 x 64 to 384 x 256 (a fixed list), through a
// ViT-B-width NaViT (dim 768, 12 heads of 64, MLP 3072, patch 16, 1000 classes), random weights.
//   packed     the images as they are, packed into sequences of at most max_seq_len tokens; attention kept
//              inside each image by segment ids (each image's queries against its own keys: sum n_i^2 scores)
//   boolean    the same packing through na_vit's dense boolean masks (every score of a sequence's tokens
//              computed, then masked)
//   padded     every image zero-padded to the common size 384 x 256, one image a sequence: a plain ViT batch
//              (32 x 384 tokens), on the same model, so the difference is packing alone
// Args: depth (12 is ViT-B; the default run uses 2 and FOVEA_BENCH_NAVIT_DEPTH sets another), mode (0 packed,
// 1 boolean, 2 padded), max_seq_len, threads. Counters: images/s, tokens/s (the images' own tokens, padding
// excluded), GFLOPS (what the mode computes, multiply-adds counted twice: every token's linear layers plus
// attention over the spans it computes).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fovea/models/navit.hpp"

using namespace fovea;

namespace {

// (H, W) of the 32 images: every side a multiple of 16 from 64 to 384 (height) and 256 (width).
const std::vector<Size2>& sizes() {
  static const std::vector<Size2> s = {
      {64, 64},   {384, 256}, {96, 128},  {224, 224}, {128, 96},  {256, 192}, {320, 240}, {160, 160},
      {64, 128},  {192, 256}, {384, 192}, {112, 176}, {240, 144}, {288, 224}, {80, 64},   {352, 256},
      {208, 112}, {144, 240}, {256, 256}, {176, 96},  {336, 208}, {96, 96},   {272, 160}, {128, 256},
      {368, 128}, {192, 192}, {64, 240},  {304, 256}, {224, 128}, {160, 64},  {384, 256}, {240, 240}};
  return s;
}
const Size2 kCanvas{384, 256};

NaViTConfig vit_b(Index depth) {
  NaViTConfig c;
  c.image_size = kCanvas;
  c.patch_size = 16;
  c.dim = 768;
  c.depth = depth;
  c.heads = 12;
  c.dim_head = 64;
  c.mlp_dim = 3072;
  c.num_classes = 1000;
  return c;
}

// Norm gammas near 1, small betas and biases, fan-in-scaled matrices: activations stay in a normal range.
void randomize(NaViT<float>& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  model.update_parameters([&](const std::string& name, auto& t) {
    const auto ends = [&](const char* s) {
      const std::string e(s);
      return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
    };
    if (ends("gamma")) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = 1.0f + 0.1f * normal(rng);
    } else if (ends("weight") && t.NumDimensions == 2) {
      const float scale = 1.0f / std::sqrt(float(t.dimension(t.NumDimensions - 1)));
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = scale * normal(rng);
    } else {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = 0.02f * normal(rng);
    }
  });
}

std::vector<Tensor<float, 3>> make_images(bool padded) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<Tensor<float, 3>> v;
  for (const Size2& s : sizes()) {
    Tensor<float, 3> im(3, padded ? kCanvas.h : s.h, padded ? kCanvas.w : s.w);
    im.setZero();
    for (Index c = 0; c < 3; ++c)
      for (Index y = 0; y < s.h; ++y)
        for (Index x = 0; x < s.w; ++x) im(c, y, x) = normal(rng);
    v.push_back(im);
  }
  return v;
}

Index depth_arg(Index fallback) {
  if (const char* e = std::getenv("FOVEA_BENCH_NAVIT_DEPTH")) return std::max(1, std::atoi(e));
  return fallback;
}

// Args: depth, mode (0 packed, 1 boolean, 2 padded), max_seq_len, threads.
void BM_navit(benchmark::State& st) {
  const Index depth = depth_arg(st.range(0));
  const int mode = int(st.range(1));
  const Index max_seq_len = mode == 2 ? kCanvas.h * kCanvas.w / 256 : st.range(2);
  Context ctx(int(st.range(3)));
  NaViT<float> model(vit_b(depth));
  randomize(model, 7);
  const std::vector<Tensor<float, 3>> images = make_images(mode == 2);
  NaViTOptions options = NaViTOptions().max_seq_len(max_seq_len);
  if (mode == 1) options.mask(NaViTMask::boolean);

  std::vector<Index> lengths;
  double real_tokens = 0;
  for (const Tensor<float, 3>& im : images) lengths.push_back(im.dimension(1) / 16 * (im.dimension(2) / 16));
  for (const Size2& s : sizes()) real_tokens += double(s.h / 16 * (s.w / 16));
  const PackPlan plan = plan_packing(lengths, max_seq_len);
  // Work per forward: every token's linear layers, and attention over the pairs the mode computes (each image
  // against itself; boolean: every pair of a sequence's tokens; padded: one image a sequence).
  const auto f = model.flops(plan);
  const double flops = f.per_token + (mode == 1 ? f.attention_sequences : f.attention_images);
  for (auto _ : st) {
    Tensor<float, 2> logits = model.forward(images, options, ctx);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["depth"] = double(depth);
  st.counters["seqs"] = double(plan.sequences);
  st.counters["seq_len"] = double(plan.seq_len);
  st.counters["GFLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["images/s"] = benchmark::Counter(double(images.size()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(real_tokens, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_navit)
    ->ArgNames({"depth", "mode", "max_seq_len", "threads"})
    ->ArgsProduct({{2}, {0, 1}, {2048}, {1, 2}})
    ->Args({2, 0, 512, 1})
    ->Args({2, 0, 512, 2})
    ->Args({2, 2, 0, 1})
    ->Args({2, 2, 0, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
