// Loads a torchvision ResNet from .safetensors (architecture read off the tensor shapes), runs a
// preprocessed (N, 3, H, W) float32 .npy batch and prints each image's top-5 classes by logit.
//   example_resnet resnet18.safetensors batch.npy
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include "fovea/io/npy.hpp"
#include "fovea/models/resnet.hpp"

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: %s WEIGHTS.safetensors INPUT.npy\n", argv[0]), 2;
  try {
    const auto model = fovea::ResNet<float>::from_safetensors(argv[1]);
    const fovea::Tensor<float, 2> logits = model.forward(fovea::read_npy<float, 4>(argv[2]));
    std::printf("%s\n", model.config().str().c_str());
    for (fovea::Index n = 0; n < logits.dimension(0); ++n) {
      std::vector<fovea::Index> order(std::size_t(logits.dimension(1)));
      std::iota(order.begin(), order.end(), 0);
      const std::size_t k = std::min<std::size_t>(5, order.size());
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](auto a, auto b) { return logits(n, a) > logits(n, b); });
      std::printf("image %ld:", long(n));
      for (std::size_t i = 0; i < k; ++i) std::printf("  class %ld (%.3f)", long(order[i]), logits(n, order[i]));
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    return std::fprintf(stderr, "example_resnet: %s\n", e.what()), 1;
  }
}
