// Whole-model inference: torchvision resnet18 and resnet50 at 224 x 224, random weights filled through the
// module API (no file), batch 1 and 8, 1 and 2 threads. Targets on 2 threads (docs/parity.md): resnet18
// batch 1 under PyTorch's 26.1 ms (ideally ONNX Runtime's 18.3 ms), batch 8 under 194 ms.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "fovea/models/resnet.hpp"

using namespace fovea;

namespace {

// Fan-in-scaled normal weights and non-trivial BatchNorm statistics, so activations stay in a normal
// float range through the depth (denormals or infinities would time something else).
void randomize(ResNet<float>& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
  model.update_parameters([&](const std::string& name, auto& t) {
    const auto ends = [&](const char* s) {
      const std::string suffix(s);
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool bn = name.find("bn") != std::string::npos || name.find("downsample.1") != std::string::npos;
    if (bn && (ends("running_var") || ends(".weight"))) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = uniform(rng);
    } else if (bn || ends(".bias")) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = 0.1f * normal(rng);
    } else {
      const float scale = std::sqrt(2.0f * float(t.dimension(0)) / float(t.size()));  // sqrt(2 / fan_in)
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = scale * normal(rng);
    }
  });
}

// Multiply-adds of one 224 x 224 image, for the GFLOPS counter: resnet18 1.814 G, resnet50 4.089 G
// (convs and fc; torchvision's published figures).
double gmacs(bool is50) { return is50 ? 4.089 : 1.814; }

// Args: model (18 or 50), batch, threads.
void BM_resnet(benchmark::State& st) {
  const bool is50 = st.range(0) == 50;
  const Index batch = st.range(1);
  Context ctx(int(st.range(2)));
  ResNet<float> model(is50 ? ResNetConfig::resnet50() : ResNetConfig::resnet18());
  randomize(model, 7);
  Tensor<float, 4> x(batch, 3, 224, 224);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  // One forward first, as a served model has run before: conv2d's scratch buffers grown and the Winograd
  // layers' transformed weights made (once per model, a few ms; the first forward of resnet18 at batch 8
  // transforms 150 MB of them).
  benchmark::DoNotOptimize(model.forward(x, ctx).data());
  for (auto _ : st) {
    Tensor<float, 2> logits = model.forward(x, ctx);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter(2e9 * gmacs(is50) * double(batch),
                                             benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  st.counters["images/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_resnet)
    ->ArgNames({"resnet", "batch", "threads"})
    ->ArgsProduct({{18, 50}, {1, 8}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
