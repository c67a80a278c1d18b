#pragma once
// WeightLoader: fills a module's named tensors from a SafeTensors file, or reports every problem at once.
//
// A model asks for each of its tensors by state_dict name (its current dimensions are the expected shape)
// and names the entries it accepts but does not use. load() then checks the whole request against the
// file before copying anything, and throws one FormatError listing every missing name, every unexpected
// name, every shape mismatch and every non-float dtype, so a wrong checkpoint is diagnosed in one run
// rather than one name a run.
//
// check_model_fits runs before that, before a model whose sizes were read off a file's shapes is built: a file
// can declare a size it holds no weights for (a class count on a tensor with a zero dimension, a width that
// only one small tensor names), and building the model would allocate it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/safetensors.hpp"

namespace fovea {

template <class T>
class WeightLoader {
 public:
  // `target` names what is being loaded, for messages (the file is named by its label, its quoted path).
  WeightLoader(const SafeTensors& file, std::string target) : file_(file), target_(std::move(target)) {}

  // Asks for `name` into dst; dst's current dimensions are the shape the file must hold.
  template <int R>
  void expect(const std::string& name, Tensor<T, R>& dst) {
    Request r;
    r.name = name;
    r.shape.assign(dst.dimensions().begin(), dst.dimensions().end());
    r.fill = [this, name, &dst] { file_.get_into(name, dst); };  // straight into the module: no temporary
    requests_.push_back(std::move(r));
  }

  // Accepts `name` if the file has it, without reading it (e.g. BatchNorm's num_batches_tracked).
  void ignore(const std::string& name) { ignored_.insert(name); }

  // Every tensor of a module (its named_tensors) under `prefix`, and the names it accepts and ignores.
  template <class Module>
  void expect_module(Module& module, const std::string& prefix) {
    module.named_tensors(prefix, [this](const std::string& name, auto& t) { this->expect(name, t); });
    for (const std::string& n : module.ignored_names(prefix)) ignore(n);
  }

  // Checks every request against the file, then copies. On any problem nothing is copied and one
  // FormatError names all of them.
  void load() {
    std::vector<std::string> missing, unexpected, mismatched, bad_dtype;
    std::set<std::string> wanted;
    for (const Request& r : requests_) {
      wanted.insert(r.name);
      if (!file_.contains(r.name)) {
        missing.push_back(r.name);
        continue;
      }
      const auto& info = file_.info(r.name);
      std::vector<Index> have(info.shape.begin(), info.shape.end());
      if (have != r.shape)
        mismatched.push_back(detail::cat(r.name, ": expected ", detail::dims_str(r.shape), ", file has ",
                                         detail::dims_str(have)));
      if (info.dtype != Dtype::F32 && info.dtype != Dtype::F64 && info.dtype != Dtype::F16 && info.dtype != Dtype::BF16)
        bad_dtype.push_back(detail::cat(r.name, ": ", dtype_name(info.dtype)));
    }
    for (const auto& info : file_.tensors())
      if (!wanted.count(info.name) && !ignored_.count(info.name)) unexpected.push_back(info.name);

    if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !bad_dtype.empty()) {
      std::string msg = detail::cat("load weights: ", file_.label(), " does not match ", target_, ":");
      // A hostile header can name 10^6 tensors: each list stops after kMaxListed names.
      constexpr std::size_t kMaxListed = 64;
      auto list = [&msg](const std::vector<std::string>& v, const char* one, const char* many) {
        if (v.empty()) return;
        msg += detail::cat(" ", v.size(), " ", v.size() == 1 ? one : many, " [");
        for (std::size_t i = 0; i < v.size() && i < kMaxListed; ++i) msg += (i ? ", " : "") + v[i];
        if (v.size() > kMaxListed) msg += detail::cat(", ... and ", v.size() - kMaxListed, " more");
        msg += "];";
      };
      list(missing, "missing", "missing");
      list(unexpected, "unexpected", "unexpected");
      list(mismatched, "shape mismatch", "shape mismatches");
      list(bad_dtype, "tensor not F32, F64, F16 or BF16", "tensors not F32, F64, F16 or BF16");
      msg.pop_back();
      throw FormatError(msg);
    }
    for (const Request& r : requests_) r.fill();
  }

 private:
  struct Request {
    std::string name;
    std::vector<Index> shape;
    std::function<void()> fill;
  };
  SafeTensors file_;  // a copy shares the mapped bytes, so the loader outlives a temporary file object
  std::string target_;
  std::vector<Request> requests_;
  std::set<std::string> ignored_;
};

namespace detail {

// A model's update_parameters: visit(g) calls g(name, tensor&) for each of its tensors. Runs visit(f), then
// throws ShapeError naming the model, its config and every tensor whose shape f changed (the config fixes them).
template <class Visit, class F>
void update_keeping_shapes(Visit&& visit, F&& f, const char* model, const std::string& config) {
  std::vector<std::vector<Index>> before;
  visit([&](const std::string&, const auto& t) { before.emplace_back(t.dimensions().begin(), t.dimensions().end()); });
  visit(f);
  std::size_t i = 0;
  std::string changed;
  visit([&](const std::string& name, const auto& t) {
    const std::vector<Index> now(t.dimensions().begin(), t.dimensions().end());
    if (now != before[i])
      changed += cat(changed.empty() ? "" : ", ", name, " ", dims_str(before[i]), " -> ", dims_str(now));
    ++i;
  });
  if (!changed.empty())
    throw_shape(model, ".update_parameters: tensor shapes are fixed by the config ", config, ", but these changed: ",
                changed);
}

}  // namespace detail

// shapes: every tensor of the model about to be built (name -> shape, e.g. resnet_state_dict_shapes(config),
// vit_state_dict_shapes(config)), none allocated yet. Throws FormatError, naming the file and `target`, when
// they hold more than kModelFitFactor times the elements of all of the file's floating-point tensors (F64, F32,
// F16, BF16) plus kModelFitSlack: such a file is not a damaged copy of the model's weights but a few tensors
// whose shapes name a far larger model, and the model is not built. Below that, a file with some tensors
// missing or misshapen is left to WeightLoader, whose message lists each of them. So a model built from a file
// takes at most sizeof(T) * (kModelFitFactor * the file's elements + kModelFitSlack) bytes.
inline constexpr std::uint64_t kModelFitFactor = 4;
inline constexpr std::uint64_t kModelFitSlack = std::uint64_t(1) << 22;  // elements: 16 MiB of float
inline void check_model_fits(const SafeTensors& file, const std::map<std::string, std::vector<Index>>& shapes,
                             const std::string& target) {
  constexpr std::uint64_t kMost = std::uint64_t(std::numeric_limits<Index>::max());
  std::uint64_t have = 0, need = 0;
  for (const TensorInfo& t : file.tensors())
    if (t.dtype == Dtype::F32 || t.dtype == Dtype::F64 || t.dtype == Dtype::F16 || t.dtype == Dtype::BF16)
      have += std::uint64_t(t.numel());  // each below the file's length
  std::string largest;
  std::uint64_t largest_n = 0;
  for (const auto& [name, shape] : shapes) {
    std::uint64_t n = 1;
    for (Index d : shape) {
      if (d < 0 || (d != 0 && n > kMost / std::uint64_t(d))) {
        n = kMost;
        break;
      }
      n *= std::uint64_t(d);
    }
    if (n > largest_n) largest_n = n, largest = name;
    need = n > kMost - need ? kMost : need + n;
  }
  if (need > kModelFitFactor * have + kModelFitSlack)
    detail::throw_format("load weights: ", file.label(), " cannot hold ", target, ": its ", shapes.size(),
                         " tensors need ", need == kMost ? std::string("more than 2^63") : std::to_string(need),
                         " elements (the largest, '", largest, "', ", largest_n == kMost ? std::string("over 2^63")
                                                                                       : std::to_string(largest_n),
                         "), but the file's floating-point tensors hold ", have, " in all (at most ", kModelFitFactor,
                         " times that plus ", kModelFitSlack, " are accepted); the model was not built");
}

}  // namespace fovea
