#pragma once
// Tensor aliases: row-major everywhere, so a (N, C, H, W) tensor has PyTorch's memory layout.
#ifndef EIGEN_USE_THREADS
#define EIGEN_USE_THREADS
#endif
#include <array>
#include <unsupported/Eigen/CXX11/Tensor>

namespace fovea {

using Index = Eigen::Index;

template <class T, int R>
using Tensor = Eigen::Tensor<T, R, Eigen::RowMajor>;

template <class T, int R>
using TensorMap = Eigen::TensorMap<Tensor<T, R>>;

template <class T, int R>
using ConstTensorMap = Eigen::TensorMap<const Tensor<T, R>>;

// A pair of sizes (height, width). Implicit from one number (both sides) or from {h, w}, so an
// options setter reads like PyTorch: .stride(2) or .stride({2, 1}).
struct Size2 {
  Index h = 0, w = 0;
  Size2() = default;
  Size2(Index both) : h(both), w(both) {}  // NOLINT(google-explicit-constructor)
  Size2(Index h_, Index w_) : h(h_), w(w_) {}
  bool operator==(const Size2& o) const { return h == o.h && w == o.w; }
};

}  // namespace fovea
