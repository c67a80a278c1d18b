#pragma once
// Error types and the message helpers every shape check uses.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fovea/core/tensor.hpp"

namespace fovea {

// Bad shapes or arguments: the message names the operation and every shape involved.
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Malformed or unsupported files: the message names the file and, where known, the tensor and offset.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

// "(2, 3, 224, 224)" from anything indexable with a size().
template <class Dims>
std::string dims_str(const Dims& d) {
  std::ostringstream s;
  s << '(';
  for (std::size_t i = 0; i < static_cast<std::size_t>(d.size()); ++i) s << (i ? ", " : "") << d[i];
  s << ')';
  return s.str();
}

template <class T, int R, int L>
std::string shape_str(const Eigen::Tensor<T, R, L>& t) {
  return dims_str(t.dimensions());
}
template <class T, int R, int L>
std::string shape_str(const Eigen::TensorMap<Eigen::Tensor<T, R, L>>& t) {
  return dims_str(t.dimensions());
}

inline std::string size2_str(const Size2& s) { return cat('(', s.h, ", ", s.w, ')'); }

template <class... A>
[[noreturn]] void throw_shape(const A&... a) {
  throw ShapeError(cat(a...));
}
template <class... A>
[[noreturn]] void throw_format(const A&... a) {
  throw FormatError(cat(a...));
}

}  // namespace detail
}  // namespace fovea
