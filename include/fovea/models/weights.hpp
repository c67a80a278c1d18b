#pragma once
// WeightLoader: fills a module's named tensors from a SafeTensors file, or reports every problem at once.
//
// A model asks for each of its tensors by state_dict name (its current dimensions are the expected shape)
// and names the entries it accepts but does not use. load() then checks the whole request against the
// file before copying anything, and throws one FormatError listing every missing name, every unexpected
// name, every shape mismatch and every non-float dtype, so a wrong checkpoint is diagnosed in one run
// rather than one name a run.
#include <algorithm>
#include <cstring>
#include <functional>
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
    r.fill = [this, name, &dst] {
      Tensor<T, R> t = file_.template get<T, R>(name);
      std::memcpy(dst.data(), t.data(), sizeof(T) * std::size_t(dst.size()));
    };
    requests_.push_back(std::move(r));
  }

  // Accepts `name` if the file has it, without reading it (e.g. BatchNorm's num_batches_tracked).
  void ignore(const std::string& name) { ignored_.insert(name); }

  // Every tensor of a module (its named_tensors) under `prefix`, and the names it accepts and ignores.
  template <class Module>
  void expect_module(Module& module, const std::string& prefix) {
    module.named_tensors(prefix, [this](const std::string& name, auto& t) { expect(name, t); });
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
      auto list = [&msg](const std::vector<std::string>& v, const char* one, const char* many) {
        if (v.empty()) return;
        msg += detail::cat(" ", v.size(), " ", v.size() == 1 ? one : many, " [");
        for (std::size_t i = 0; i < v.size(); ++i) msg += (i ? ", " : "") + v[i];
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

}  // namespace fovea
