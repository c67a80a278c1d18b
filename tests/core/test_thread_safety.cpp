// Thread safety: several std::threads call into ONE const model (a ResNet and a ViT built from the reference
// weights) and the losses at the same time, sharing ONE Context or each with its own, and every result must
// equal, bit for bit, what the same call returns when it runs alone. Built and run under ThreadSanitizer in CI
// (FOVEA_TSAN, build-tsan), where a data race anywhere below these calls fails the run; in the plain and ASan
// builds it still checks the results.
//
// Why exact equality is the right bar: a call's arithmetic depends only on its Context's thread count (panel
// splits and tiles are fixed by it; which pool thread runs a task never changes a sum), so concurrent calls
// can differ from a lone call only through a race. Inputs are drawn here, larger than the reference inputs, so
// that the GEMMs cross gemm()'s 2 MFLOP threshold and take the multi-threaded path too.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <exception>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/reference.hpp"
#include "fovea/core/context.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/loss/clip_loss.hpp"
#include "fovea/loss/siglip_loss.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/resnet.hpp"
#include "fovea/models/vit.hpp"
#include "fovea/nn/conv2d.hpp"

namespace test_thread_safety {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// More callers than the shared pool has threads, so their tasks queue behind each other on it. One call each
// is enough for ThreadSanitizer, which reports unordered accesses whether or not they happened to overlap.
constexpr int kCallers = 4;

// Runs body(caller) on kCallers std::threads released together; rethrows the first exception on this thread
// (gtest assertions stay on this thread too: callers only store results).
void run_concurrently(const std::function<void(int)>& body) {
  std::atomic<int> arrived{0};
  std::vector<std::exception_ptr> errors(kCallers);
  std::vector<std::thread> threads;
  for (int c = 0; c < kCallers; ++c)
    threads.emplace_back([&, c] {
      arrived.fetch_add(1);
      while (arrived.load() < kCallers) std::this_thread::yield();
      try {
        body(c);
      } catch (...) {
        errors[std::size_t(c)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  Tensor<T, R> t(dims);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(u(gen));
  return t;
}

// Every caller's result against the lone call's, exactly (rtol = atol = 0).
template <class R, class Expected>
void expect_all_equal(const std::vector<R>& got, const Expected& expected_for_caller, const std::string& what) {
  for (int c = 0; c < kCallers; ++c)
    EXPECT_TRUE(test::all_close(got[std::size_t(c)], expected_for_caller(c), 0, 0)) << what << ", caller " << c;
}

const std::string kRef = std::string(FOVEA_REF_DIR);

ResNet<float> resnet() { return ResNet<float>::from_safetensors(kRef + "/resnet/bottleneck.safetensors"); }

// SigLIP: attention-pool head (its own parallel_for over the batch), tanh GELU, interpolated position table.
VisionTransformer<float> vit() {
  return VisionTransformer<float>::from_safetensors(SafeTensors::open(kRef + "/vit/siglip.safetensors"),
                                                    read_hf_vision_config(kRef + "/vit/siglip_config.json"));
}

// (2, 3, 64, 64) through the bottleneck net. For the ViT, (16, 3, 32, 32): 1024 tokens of width 24, so its MLP
// GEMMs (1024 x 48 x 24) are multi-threaded, while attention over 64 tokens per image stays cheap under TSan;
// its 8 x 8 position grid is interpolated from the file's 4 x 4.
const Tensor<float, 4>& resnet_input() {
  static const Tensor<float, 4> x = random_tensor<float, 4>({2, 3, 64, 64}, 1);
  return x;
}
const Tensor<float, 4>& vit_input() {
  static const Tensor<float, 4> x = random_tensor<float, 4>({16, 3, 32, 32}, 2);
  return x;
}

TEST(ThreadSafety, ParallelForFromSeveralThreadsOnOneContext) {
  // The bare mechanism: callers' tasks interleave on one pool, each caller waits for its own, a nested call
  // runs inline, and one caller's exception reaches that caller only.
  const Context ctx(2);
  constexpr Index n = 500;
  constexpr int rounds = 3;
  std::vector<std::vector<Index>> got(kCallers);
  std::vector<int> thrown(kCallers, 0);
  run_concurrently([&](int c) {
    std::vector<Index>& out = got[std::size_t(c)];
    for (int r = 0; r < rounds; ++r) {
      out.assign(n, -1);
      ctx.parallel_for(n / 10, [&](Index i) {
        ctx.parallel_range(10, 3, [&](Index b, Index e) {
          for (Index j = b; j < e; ++j) out[std::size_t(i * 10 + j)] = (i * 10 + j) * (c + 1);
        });
      });
      if (c == 1) {
        try {
          ctx.parallel_for(n, [&](Index i) {
            if (i == 123) throw std::runtime_error("caller 1");
          });
        } catch (const std::runtime_error&) {
          ++thrown[std::size_t(c)];
        }
      }
    }
  });
  for (int c = 0; c < kCallers; ++c) {
    EXPECT_EQ(thrown[std::size_t(c)], c == 1 ? rounds : 0) << "caller " << c;
    for (Index i = 0; i < n; ++i) ASSERT_EQ(got[std::size_t(c)][std::size_t(i)], i * (c + 1)) << "caller " << c;
  }
}

TEST(ThreadSafety, ResNetOneModelOneContext) {
  const ResNet<float> model = resnet();
  const Context ctx(2);
  const Tensor<float, 2> alone = model.forward(resnet_input(), ctx);
  std::vector<Tensor<float, 2>> got(kCallers);
  run_concurrently([&](int c) { got[std::size_t(c)] = model.forward(resnet_input(), ctx); });
  expect_all_equal(got, [&](int) { return alone; }, "ResNet, shared Context(2)");
}

TEST(ThreadSafety, ResNetOneModelOwnContexts) {
  // Each caller makes its own pool, of 1 or 2 threads; each result equals the lone call at that count.
  const ResNet<float> model = resnet();
  const Tensor<float, 2> alone[2] = {model.forward(resnet_input(), Context(1)),
                                     model.forward(resnet_input(), Context(2))};
  std::vector<Tensor<float, 2>> got(kCallers);
  run_concurrently([&](int c) { got[std::size_t(c)] = model.forward(resnet_input(), Context(1 + c % 2)); });
  expect_all_equal(got, [&](int c) { return alone[c % 2]; }, "ResNet, own Context(1 + caller % 2)");
}

TEST(ThreadSafety, Conv2dModuleFirstCallsFromSeveralThreads) {
  // A const Conv2d keeps the Winograd-transformed weights its first call makes (16 -> 16 channels, 3x3, 32 x 32:
  // 64 tiles, which conv2d runs with Winograd): here every caller's call is a first call on a fresh module, so
  // they race to fill that cache. The lone result comes from a separate module, so the shared one starts cold.
  auto make = [] {
    Conv2d<float> conv(16, 16, {3, 3}, Conv2dOptions().padding(1));
    conv.weight = random_tensor<float, 4>({16, 16, 3, 3}, 7);
    conv.bias = random_tensor<float, 1>({16}, 8);
    return conv;
  };
  const Tensor<float, 4> x = random_tensor<float, 4>({2, 16, 32, 32}, 9);
  const Context ctx(2);
  const Tensor<float, 4> alone = make().forward(x, ctx);
  for (int round = 0; round < 2; ++round) {
    const Conv2d<float> shared = make();
    std::vector<Tensor<float, 4>> got(kCallers);
    run_concurrently([&](int c) { got[std::size_t(c)] = shared.forward(x, ctx); });
    expect_all_equal(got, [&](int) { return alone; }, "Conv2d first calls, round " + std::to_string(round));
  }
}

TEST(ThreadSafety, VitOneModelOneContext) {
  const VisionTransformer<float> model = vit();
  const Context ctx(2);
  const VitOutput<float> alone = model.forward_with_hidden(vit_input(), ctx);
  std::vector<VitOutput<float>> got(kCallers);
  run_concurrently([&](int c) { got[std::size_t(c)] = model.forward_with_hidden(vit_input(), ctx); });
  for (int c = 0; c < kCallers; ++c) {
    EXPECT_TRUE(test::all_close(got[std::size_t(c)].output, alone.output, 0, 0)) << "ViT output, caller " << c;
    EXPECT_TRUE(test::all_close(got[std::size_t(c)].last_hidden_state, alone.last_hidden_state, 0, 0))
        << "ViT last hidden state, caller " << c;
  }
}

TEST(ThreadSafety, VitOneModelOwnContexts) {
  const VisionTransformer<float> model = vit();
  const Tensor<float, 2> alone[2] = {model.forward(vit_input(), Context(1)), model.forward(vit_input(), Context(2))};
  std::vector<Tensor<float, 2>> got(kCallers);
  run_concurrently([&](int c) { got[std::size_t(c)] = model.forward(vit_input(), Context(1 + c % 2)); });
  expect_all_equal(got, [&](int c) { return alone[c % 2]; }, "ViT, own Context(1 + caller % 2)");
}

TEST(ThreadSafety, LossesOnOneContext) {
  // B = 96 with 32 x 32 tiles: a 3 x 3 tile sweep, each step a parallel_for on the shared pool. Callers
  // alternate between the two losses (and precisions).
  const Context ctx(2);
  const auto image = random_tensor<double, 2>({96, 20}, 3), text = random_tensor<double, 2>({96, 20}, 4);
  const Tensor<float, 2> image_f = image.cast<float>(), text_f = text.cast<float>();
  const LossOptions opt = LossOptions().tile(32);
  const auto clip_alone = clip_loss(image_f, text_f, 10.f, opt, ctx);
  const auto siglip_alone = siglip_loss(image, text, 10.0, -5.0, opt, ctx);
  std::vector<LossResult<float>> clip(kCallers);
  std::vector<LossResult<double>> siglip(kCallers);
  run_concurrently([&](int c) {
    if (c % 2 == 0) clip[std::size_t(c)] = clip_loss(image_f, text_f, 10.f, opt, ctx);
    else siglip[std::size_t(c)] = siglip_loss(image, text, 10.0, -5.0, opt, ctx);
  });
  for (int c = 0; c < kCallers; ++c) {
    SCOPED_TRACE("caller " + std::to_string(c));
    if (c % 2 == 0) {
      const auto& g = clip[std::size_t(c)];
      EXPECT_EQ(g.loss, clip_alone.loss);
      EXPECT_EQ(g.grad_scale, clip_alone.grad_scale);
      EXPECT_TRUE(test::all_close(g.grad_image, clip_alone.grad_image, 0, 0));
      EXPECT_TRUE(test::all_close(g.grad_text, clip_alone.grad_text, 0, 0));
    } else {
      const auto& g = siglip[std::size_t(c)];
      EXPECT_EQ(g.loss, siglip_alone.loss);
      EXPECT_EQ(g.grad_scale, siglip_alone.grad_scale);
      EXPECT_EQ(g.grad_bias, siglip_alone.grad_bias);
      EXPECT_TRUE(test::all_close(g.grad_image, siglip_alone.grad_image, 0, 0));
      EXPECT_TRUE(test::all_close(g.grad_text, siglip_alone.grad_text, 0, 0));
    }
  }
}

TEST(ThreadSafety, ModelsAndLossesTogetherOnOneContext) {
  // Different work on one pool at once: the ResNet, the ViT and a loss, by caller.
  const ResNet<float> net = resnet();
  const VisionTransformer<float> tower = vit();
  const Context ctx(2);
  const auto image = random_tensor<float, 2>({96, 20}, 5), text = random_tensor<float, 2>({96, 20}, 6);
  const LossOptions opt = LossOptions().tile(32);
  const Tensor<float, 2> net_alone = net.forward(resnet_input(), ctx), tower_alone = tower.forward(vit_input(), ctx);
  const Tensor<float, 2> loss_alone = siglip_loss(image, text, 10.f, -5.f, opt, ctx).grad_image;
  std::vector<Tensor<float, 2>> got(kCallers);
  run_concurrently([&](int c) {
    Tensor<float, 2>& slot = got[std::size_t(c)];
    if (c % 3 == 0) slot = net.forward(resnet_input(), ctx);
    else if (c % 3 == 1) slot = tower.forward(vit_input(), ctx);
    else slot = siglip_loss(image, text, 10.f, -5.f, opt, ctx).grad_image;
  });
  expect_all_equal(got, [&](int c) { return c % 3 == 0 ? net_alone : c % 3 == 1 ? tower_alone : loss_alone; },
                   "mixed work, shared Context(2)");
}

}  // namespace test_thread_safety
