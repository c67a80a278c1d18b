#pragma once
// The one matrix-product seam: every GEMM-shaped op (linear, conv, attention, losses) calls gemm(), so
// the backend is one choice: fovea's AVX-512 kernel for float where the build has AVX-512 (core/gemm_kernel.hpp),
// Eigen's blocked kernel otherwise and for double; a BLAS with -DFOVEA_USE_BLAS.
#include <algorithm>
#include <type_traits>
#include <Eigen/Core>

#include "fovea/core/context.hpp"
#include "fovea/core/gemm_kernel.hpp"
#include "fovea/core/scratch.hpp"

#ifdef FOVEA_USE_BLAS
extern "C" {
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
void cblas_dgemm(int order, int trans_a, int trans_b, int m, int n, int k, double alpha, const double* a,
                 int lda, const double* b, int ldb, double beta, double* c, int ldc);
// OpenBLAS only; weak so that another BLAS links too.
void openblas_set_num_threads(int) __attribute__((weak));
}
#endif

namespace fovea {
namespace detail {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMatMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MatMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

// gemm_serial on Eigen's blocked kernel (double; float without fovea's kernel; skinny products).
template <class T>
void gemm_serial_eigen(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
                       const T* b, Index ldb, T beta, T* c, Index ldc) {
  MatMap<T> C(c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0)) {
    C.setZero();
  } else if (beta != T(1)) {
    C *= beta;
  }
  if (k <= 0) return;
  const ConstMatMap<T> A(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  const ConstMatMap<T> B(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b) C.noalias() += alpha * A * B;
  else if (!trans_a && trans_b) C.noalias() += alpha * A * B.transpose();
  else if (trans_a && !trans_b) C.noalias() += alpha * A.transpose() * B;
  else C.noalias() += alpha * A.transpose() * B.transpose();
}

// Single-threaded C[m, n] = alpha * op(A) op(B) + beta * C. Row-major; op(A) is (m, k), op(B) is (k, n);
// A is stored (m, k) with stride lda, or (k, m) when trans_a.
// epilogue(c, ldc, rows, cols, i, j) is then called on blocks that tile C (the block at C(i, j), rows x cols,
// row stride ldc), each once it is final: a linear layer's bias and activation. fovea's float kernel calls it
// per 8 x 48 tile while the tile is in L1, so the epilogue costs no pass over memory; other paths call it
// once on the whole of C.
template <class T, class Epilogue = NoEpilogue>
void gemm_serial(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
                 const T* b, Index ldb, T beta, T* c, Index ldc, const Epilogue& epilogue = Epilogue()) {
  if (m <= 0 || n <= 0) return;
#ifdef FOVEA_GEMM_KERNEL
  // Skinny products (a matrix-vector product, a handful of rows) stay with Eigen, whose GEMV does not pad
  // them to the kernel's 8 x 48 tile.
  if constexpr (std::is_same_v<T, float>) {
    if (k > 0 && m >= 4 && n >= 16)
      return sgemm_kernel(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
  }
#endif
  gemm_serial_eigen(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  epilogue(c, ldc, m, n, Index(0), Index(0));
}

// gemm_serial(false, false, ...) for a B (k, n) that is produced, not stored. gather(k0, k1, j0, j1, dst,
// ld, panel) writes B(p, j) for p in [k0, k1), j in [j0, j1) to
//   dst[(p - k0) * ld + ((j - j0) / kGatherPanel) * panel + (j - j0) % kGatherPanel],
// i.e. in groups of 48 columns `panel` apart (panel == 48: a plain row-major block). fovea's float kernel
// gathers a depth block straight into its packed micro-panels (a conv's patches, which as a matrix would
// be written once and read back once more to be packed); other paths gather B whole into a thread-reused
// buffer and run gemm_serial.
constexpr Index kGatherPanel = 48;
struct GatheredScratch;
template <class T, class Gather>
void gemm_serial_gathered(Index m, Index n, Index k, T alpha, const T* a, Index lda, const Gather& gather, T beta,
                          T* c, Index ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef FOVEA_GEMM_KERNEL
  static_assert(kGatherPanel == kSgemmNR, "gathers fill the kernel's micro-panels");
  if constexpr (std::is_same_v<T, float>) {
    if (k > 0 && m >= 4 && n >= 16 && !sgemm_runs_transposed(m, n))
      return sgemm_gathered(m, n, k, alpha, a, lda, gather, beta, c, ldc);
  }
#endif
  T* b = thread_scratch<T, GatheredScratch, 0>(std::size_t(std::max<Index>(k, 0) * n));
  if (k > 0) gather(0, k, 0, n, b, n, kGatherPanel);
  gemm_serial<T>(false, false, m, n, k, alpha, a, lda, b, n, beta, c, ldc);
}

// Column width that products should be cut into: whole tiles of the kernel that will run them.
template <class T>
constexpr Index gemm_col_align() {
#ifdef FOVEA_GEMM_KERNEL
  if constexpr (std::is_same_v<T, float>) return kSgemmNR;
#endif
  return 16;
}

}  // namespace detail

// C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C; row-major with leading dimensions.
// Threads split C into row or column panels, one Eigen GEMM each; small products stay on the caller.
template <class T>
void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda, const T* b,
          Index ldb, T beta, T* c, Index ldc, const Context& ctx = default_context()) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm: float or double");
  if (m <= 0 || n <= 0) return;
#ifdef FOVEA_USE_BLAS
  if (openblas_set_num_threads) openblas_set_num_threads(ctx.num_threads());
  constexpr int kRow = 101, kNo = 111, kTr = 112;
  if (k > 0) {
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(kRow, trans_a ? kTr : kNo, trans_b ? kTr : kNo, int(m), int(n), int(k), alpha, a, int(lda), b,
                  int(ldb), beta, c, int(ldc));
    else
      cblas_dgemm(kRow, trans_a ? kTr : kNo, trans_b ? kTr : kNo, int(m), int(n), int(k), alpha, a, int(lda), b,
                  int(ldb), beta, c, int(ldc));
    return;
  }
#endif
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const int threads = ctx.num_threads();
  if (threads == 1 || flops < 2e6) {
    detail::gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C into whole register-tile multiples so every panel stays efficient.
  const bool split_rows = m >= n;
  const Index len = split_rows ? m : n;
  const Index align = split_rows ? 16 : detail::gemm_col_align<T>();
  Index parts = std::min<Index>(threads, std::max<Index>(1, len / align));
  const Index per = ((len + parts - 1) / parts + align - 1) / align * align;
  parts = (len + per - 1) / per;
  ctx.parallel_for(parts, [&](Index p) {
    const Index b0 = p * per, e0 = std::min(len, b0 + per);
    if (split_rows) {
      const T* ap = trans_a ? a + b0 : a + b0 * lda;
      detail::gemm_serial(trans_a, trans_b, e0 - b0, n, k, alpha, ap, lda, b, ldb, beta, c + b0 * ldc, ldc);
    } else {
      const T* bp = trans_b ? b + b0 * ldb : b + b0;
      detail::gemm_serial(trans_a, trans_b, m, e0 - b0, k, alpha, a, lda, bp, ldb, beta, c + b0, ldc);
    }
  });
}

}  // namespace fovea
