#pragma once
// torch.flatten: merges a run of dimensions into one. Row-major order is unchanged, so it is a copy under
// new dimensions. Also the dimension-wrapping check (negative dims count from the end) that softmax shares.
#include <algorithm>
#include <array>
#include <string>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

// dim in [-rank, rank - 1] -> [0, rank - 1], as PyTorch wraps it; a 0-d tensor accepts -1 and 0, like 1-d.
inline int wrap_dim(const char* op, const char* arg, int dim, int rank, const std::string& shapes) {
  const int n = std::max(rank, 1);
  if (dim < -n || dim >= n)
    throw_shape(op, ": expected ", arg, " in [", -n, ", ", n - 1, "] for a rank-", rank, " input, but got ", dim,
                "; input ", shapes);
  return dim < 0 ? dim + n : dim;
}

}  // namespace detail

// flatten: (d0, ..., dR-1) -> dims start_dim..end_dim merged into one; RO = R - (end_dim - start_dim).
// start_dim defaults to 1 (nn.Flatten's default; torch.flatten's is 0): flatten<2>(x) is (N, C*H*W).
template <int RO, class T, int R>
Tensor<T, RO> flatten(const Tensor<T, R>& x, int start_dim = 1, int end_dim = -1) {
  static_assert(RO >= 1 && RO <= std::max(R, 1), "flatten: the result rank RO must be in [1, max(R, 1)]");
  const std::string shape = detail::shape_str(x);
  const int start = detail::wrap_dim("flatten", "start_dim", start_dim, R, shape);
  const int end = detail::wrap_dim("flatten", "end_dim", end_dim, R, shape);
  if (start > end)
    detail::throw_shape("flatten: expected start_dim <= end_dim, but got start_dim ", start_dim, " (dim ", start,
                        ") after end_dim ", end_dim, " (dim ", end, "); input ", shape);
  const int rank_out = std::max(R, 1) - (end - start);
  if (rank_out != RO)
    detail::throw_shape("flatten: merging dims ", start, "..", end, " of a rank-", R, " input gives rank ", rank_out,
                        ", but the result rank RO is ", RO, "; input ", shape);
  std::array<Index, RO> dims{};
  if constexpr (R == 0) {
    dims[0] = 1;
  } else {
    int o = 0;
    for (int d = 0; d < R; ++d) {
      if (d <= start || d > end) dims[o++] = x.dimension(d);
      else dims[o - 1] *= x.dimension(d);
    }
  }
  Tensor<T, RO> y(dims);
  std::copy(x.data(), x.data() + x.size(), y.data());
  return y;
}

}  // namespace fovea
