// Zero-shot classification with a CLIP or SigLIP vision tower: embeds images, scores them against one text
// embedding per label (computed elsewhere, e.g. by the model's text tower, saved as a (labels, E) .npy) and
// prints each label's probability the way the family scores it:
//   CLIP    softmax over the labels of scale * cos(image, text)           (CLIPModel's logits_per_image)
//   SigLIP  sigmoid(scale * cos(image, text) + bias), each label on its own (SiglipModel's logits_per_image)
// Both embeddings are l2-normalised first, as the models do. scale = exp(logit_scale) and bias = logit_bias
// are read from a full CLIPModel / SiglipModel file when it holds them; --scale / --bias override.
//
//   example_zero_shot --weights clip.safetensors [--config config.json] (--image a.jpg ... | --input x.npy)
//                     --text-embeds labels.npy --labels "a cat,a dog,a car" [--scale S] [--bias B] [--threads N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include "fovea/io/image.hpp"
#include "fovea/io/npy.hpp"
#include "fovea/io/preprocess.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/vit.hpp"
#include "fovea/loss/normalize.hpp"
#include "fovea/loss/zero_shot.hpp"

using fovea::Index;

namespace {

struct Args {
  std::string weights, config, input, text, labels;
  std::vector<std::string> images;
  std::optional<double> scale, bias;
  int threads = 0;
};

// Bad flags or an unusable combination: exit code 2 with the usage line.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void usage(const std::string& why) { throw UsageError(why); }

double number(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d)) usage(flag + " expects a number, got '" + v + "'");
  return d;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string v = argv[++i];
    if (flag == "--weights") a.weights = v;
    else if (flag == "--config") a.config = v;
    else if (flag == "--image") a.images.push_back(v);
    else if (flag == "--input") a.input = v;
    else if (flag == "--text-embeds") a.text = v;
    else if (flag == "--labels") a.labels = v;
    else if (flag == "--scale") a.scale = number(flag, v);
    else if (flag == "--bias") a.bias = number(flag, v);
    else if (flag == "--threads") a.threads = int(number(flag, v));
    else usage("unknown flag '" + flag + "'");
  }
  if (a.weights.empty() || a.text.empty() || a.labels.empty()) usage("--weights, --text-embeds and --labels are required");
  if (a.images.empty() == a.input.empty()) usage("give --image FILE... or --input X.npy");
  return a;
}

// A scalar tensor (shape () or (1)) of the weights file, if it has it.
std::optional<double> file_scalar(const fovea::SafeTensors& file, const std::string& name) {
  if (!file.contains(name)) return std::nullopt;
  const auto& info = file.info(name);
  if (info.shape.empty()) return file.get<double, 0>(name)();
  if (info.shape.size() == 1 && info.shape[0] == 1) return file.get<double, 1>(name)(0);
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    std::optional<fovea::Context> own;
    if (a.threads > 0) own.emplace(a.threads);
    const fovea::Context& ctx = own ? *own : fovea::default_context();

    const fovea::SafeTensors file = fovea::SafeTensors::open(a.weights);
    const fovea::HfVisionConfig hf = a.config.empty() ? fovea::HfVisionConfig{} : fovea::read_hf_vision_config(a.config);
    const auto model = fovea::VisionTransformer<float>::from_safetensors(file, hf);
    const fovea::VitConfig& c = model.config();
    const bool siglip = c.family == fovea::VitFamily::hf_siglip;
    if (c.family != fovea::VitFamily::hf_clip && !siglip)
      usage(std::string("zero-shot needs a CLIP or SigLIP tower, but the weights are ") + fovea::vit_family_name(c.family));

    // Images: decoded and preprocessed as the family's processor does, at the model's size; or a ready batch.
    fovea::Tensor<float, 4> x;
    std::vector<std::string> names = a.images;
    if (!a.input.empty()) {
      x = fovea::read_npy<float, 4>(a.input);
      for (Index i = 0; i < x.dimension(0); ++i) names.push_back(a.input + "[" + std::to_string(i) + "]");
    } else {
      const int size = int(c.image_size.h);
      x = fovea::Tensor<float, 4>(Index(a.images.size()), 3, size, size);
      for (std::size_t i = 0; i < a.images.size(); ++i) {
        const fovea::Image img = fovea::decode_image(a.images[i]);
        const fovea::Tensor<float, 4> one =
            siglip ? fovea::preprocess_siglip(img, size, ctx) : fovea::preprocess_clip(img, size, ctx);
        std::copy(one.data(), one.data() + one.size(), x.data() + Index(i) * one.size());
      }
    }

    std::vector<std::string> labels;
    std::stringstream ls(a.labels);
    for (std::string l; std::getline(ls, l, ',');) labels.push_back(l);
    const fovea::Tensor<float, 2> text = fovea::read_npy<float, 2>(a.text);
    if (text.dimension(0) != Index(labels.size()))
      usage("--text-embeds has " + std::to_string(text.dimension(0)) + " rows but --labels names " +
            std::to_string(labels.size()));

    const std::optional<double> logit_scale = file_scalar(file, "logit_scale");
    const double scale = a.scale ? *a.scale : logit_scale ? std::exp(*logit_scale) : siglip ? 0.0 : 100.0;
    const std::optional<double> bias = a.bias ? a.bias : file_scalar(file, "logit_bias");
    if (siglip && (scale == 0.0 || !bias))
      usage("SigLIP scores need its logit_scale and logit_bias: use a full SiglipModel file or give --scale and --bias");

    const fovea::Tensor<float, 2> image = fovea::l2_normalize(model.forward(x, ctx));
    const fovea::Tensor<float, 2> classes = fovea::l2_normalize(text);
    const fovea::Tensor<float, 2> p = siglip ? fovea::siglip_zero_shot(image, classes, float(scale), float(*bias), ctx)
                                             : fovea::clip_zero_shot(image, classes, float(scale), ctx);

    if (siglip)
      std::printf("%s, sigmoid scoring, scale %.6g, bias %.6g\n", c.str().c_str(), scale, *bias);
    else
      std::printf("%s, softmax scoring, scale %.6g\n", c.str().c_str(), scale);
    for (Index n = 0; n < p.dimension(0); ++n) {
      std::vector<Index> order(labels.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](Index i, Index j) { return p(n, i) > p(n, j); });
      std::printf("%s\n", names[std::size_t(n)].c_str());
      for (Index k : order) std::printf("  %6.2f%%  %s\n", 100.0 * double(p(n, k)), labels[std::size_t(k)].c_str());
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr,
                 "example_zero_shot: %s\nusage: example_zero_shot --weights W.safetensors [--config config.json] "
                 "(--image FILE... | --input X.npy) --text-embeds T.npy --labels \"a,b,c\" [--scale S] [--bias B] "
                 "[--threads N]\n",
                 e.what());
    return 2;
  } catch (const std::exception& e) {
    return std::fprintf(stderr, "example_zero_shot: %s\n", e.what()), 1;
  }
  return 0;
}
