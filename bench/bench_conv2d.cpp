// conv2d on every distinct conv shape of torchvision resnet18 / resnet50 at 224, a depthwise layer and the
// ViT-B/16 patch embedding. Names map one-to-one to PyTorch calls:
//   BM_conv2d/<N>/<C>/<H>/<O>/<k>/<stride>/<pad>/<groups>/<threads>
//   = F.conv2d(x (N, C, H, H), w (O, C/groups, k, k), bias (O), stride, pad, groups=groups), H == W.
// Timed through conv2d_into (bias, no ReLU) into a preallocated output, with a Winograd weight cache, as the
// ResNet module runs it, so the number is the kernel's and not the allocator's or the weight transform's.
// Counter GFLOPS = 2 * N * O * OH * OW * C/groups * k * k (direct-conv flops, also for Winograd).
// BM_conv2d_im2col/... runs the shapes with a kernel larger than 1x1 through im2col + GEMM whatever conv2d
// would choose (Winograd, direct), and BM_conv2d_uncached/... the 3x3 stride-1 ones through the functional
// path (Winograd's weights transformed per call), for comparison.
#include <benchmark/benchmark.h>

#include <array>
#include <vector>

#include "fovea/ops/conv2d.hpp"

using namespace fovea;

namespace {

enum class Mode { automatic, im2col, uncached };

template <class T>
void run_conv2d(benchmark::State& st, Mode mode = Mode::automatic) {
  const Index N = st.range(0), C = st.range(1), H = st.range(2), O = st.range(3), k = st.range(4);
  const Index stride = st.range(5), pad = st.range(6), groups = st.range(7);
  Context ctx(int(st.range(8)));
  const auto opt = Conv2dOptions().stride(stride).padding(pad).groups(groups);
  const Index OH = conv_output_size(H, k, stride, pad, 1);
  Tensor<T, 4> weight(O, C / groups, k, k);
  weight.setConstant(T(0.01));
  std::vector<T> input(N * C * H * H, T(0.5)), bias(O, T(0.1)), out(N * O * OH * OH);
  detail::WinogradWeights<T> cache;
  const auto geometry = detail::conv2d_check({N, C, H, H}, {O, C / groups, k, k}, O, opt);
  const detail::Conv2dPlan plan = detail::conv2d_plan(geometry, sizeof(T), ctx.num_threads());
  auto run = [&] {
    if (mode == Mode::im2col)
      detail::conv2d_run(geometry, input.data(), weight.data(), bias.data(), out.data(), false, nullptr, ctx, &plan);
    else
      detail::conv2d_into(input.data(), N, C, H, H, weight, bias.data(), opt, out.data(), false, nullptr, ctx,
                          mode == Mode::automatic ? &cache : nullptr);
  };
  run();  // steady state: scratch buffers grown and the weight cache filled, as in a model's second forward
  for (auto _ : st) {
    run();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(N * O * OH * OH) * double((C / groups) * k * k);
  st.counters["GFLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
}

// C, H, O, k, stride, pad, groups
using Shape = std::array<long, 7>;
const Shape kShapes[] = {
    // resnet18 (and the shared resnet50 3x3 layers)
    {3, 224, 64, 7, 2, 3, 1},     // stem
    {64, 56, 64, 3, 1, 1, 1},     // layer1
    {64, 56, 128, 3, 2, 1, 1},    // layer2.0.conv1
    {128, 28, 128, 3, 1, 1, 1},   // layer2
    {64, 56, 128, 1, 2, 0, 1},    // layer2.0.downsample
    {128, 28, 256, 3, 2, 1, 1},   // layer3.0.conv1
    {256, 14, 256, 3, 1, 1, 1},   // layer3
    {128, 28, 256, 1, 2, 0, 1},   // layer3.0.downsample
    {256, 14, 512, 3, 2, 1, 1},   // layer4.0.conv1
    {512, 7, 512, 3, 1, 1, 1},    // layer4
    {256, 14, 512, 1, 2, 0, 1},   // layer4.0.downsample
    // resnet50 bottlenecks (stride on the 3x3, torchvision v1.5)
    {64, 56, 64, 1, 1, 0, 1},     // layer1.0.conv1
    {64, 56, 256, 1, 1, 0, 1},    // layer1 conv3, layer1.0.downsample
    {256, 56, 64, 1, 1, 0, 1},    // layer1.1.conv1
    {256, 56, 128, 1, 1, 0, 1},   // layer2.0.conv1
    {128, 56, 128, 3, 2, 1, 1},   // layer2.0.conv2
    {128, 28, 512, 1, 1, 0, 1},   // layer2 conv3
    {256, 56, 512, 1, 2, 0, 1},   // layer2.0.downsample
    {512, 28, 128, 1, 1, 0, 1},   // layer2.1.conv1
    {512, 28, 256, 1, 1, 0, 1},   // layer3.0.conv1
    {256, 28, 256, 3, 2, 1, 1},   // layer3.0.conv2
    {256, 14, 1024, 1, 1, 0, 1},  // layer3 conv3
    {512, 28, 1024, 1, 2, 0, 1},  // layer3.0.downsample
    {1024, 14, 256, 1, 1, 0, 1},  // layer3.1.conv1
    {1024, 14, 512, 1, 1, 0, 1},  // layer4.0.conv1
    {512, 14, 512, 3, 2, 1, 1},   // layer4.0.conv2
    {512, 7, 2048, 1, 1, 0, 1},   // layer4 conv3
    {1024, 14, 2048, 1, 2, 0, 1}, // layer4.0.downsample
    {2048, 7, 512, 1, 1, 0, 1},   // layer4.1.conv1
    // others
    {96, 56, 96, 3, 1, 1, 96},    // depthwise 3x3 (MobileNet / ConvNeXt style)
    {3, 224, 768, 16, 16, 0, 1},  // ViT-B/16 patch embedding
};

template <long N>
void all_shapes(benchmark::internal::Benchmark* b) {
  for (const Shape& s : kShapes)
    for (long threads : {1, 2}) b->Args({N, s[0], s[1], s[2], s[3], s[4], s[5], s[6], threads});
}

// Shapes where conv2d may choose another kernel than im2col: ungrouped with a kernel larger than 1x1
// (all of them), or only the 3x3 stride-1 ones (Winograd's).
template <long N, bool only_winograd>
void kernel_shapes(benchmark::internal::Benchmark* b) {
  for (const Shape& s : kShapes)
    if (s[3] > 1 && s[6] == 1 && (!only_winograd || (s[3] == 3 && s[4] == 1)))
      for (long threads : {1, 2}) b->Args({N, s[0], s[1], s[2], s[3], s[4], s[5], s[6], threads});
}

// The double path on the layer the brief singles out (3x3 64->64 at 56), for the float/double ratio.
void double_shapes(benchmark::internal::Benchmark* b) {
  for (long threads : {1, 2}) b->Args({1, 64, 56, 64, 3, 1, 1, 1, threads});
}

}  // namespace

static void BM_conv2d(benchmark::State& st) { run_conv2d<float>(st); }
// Registered once per batch size only to stay under Google Benchmark's "very many inputs" warning.
BENCHMARK(BM_conv2d)->Apply(all_shapes<1>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv2d)->Apply(all_shapes<8>)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_conv2d_im2col(benchmark::State& st) { run_conv2d<float>(st, Mode::im2col); }
BENCHMARK(BM_conv2d_im2col)->Apply(kernel_shapes<1, false>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv2d_im2col)->Apply(kernel_shapes<8, false>)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_conv2d_uncached(benchmark::State& st) { run_conv2d<float>(st, Mode::uncached); }
BENCHMARK(BM_conv2d_uncached)->Apply(kernel_shapes<1, true>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv2d_uncached)->Apply(kernel_shapes<8, true>)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_conv2d_double(benchmark::State& st) { run_conv2d<double>(st); }
BENCHMARK(BM_conv2d_double)->Apply(double_shapes)->Unit(benchmark::kMillisecond)->UseRealTime();
