#include <gtest/gtest.h>

#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "common/reference.hpp"
#include "fovea/core/gemm.hpp"

namespace test_gemm {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// Naive triple loop in long double: the truth for every transpose combination, stride and thread count.
template <class T>
void check_gemm(bool ta, bool tb, Index m, Index n, Index k, T alpha, T beta, int threads, bool nan_c = false) {
  std::mt19937 rng(unsigned(m * 131 + n * 17 + k + ta * 7 + tb * 3));
  std::normal_distribution<double> nd;
  const Index lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
  std::vector<T> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
  for (auto& v : a) v = T(nd(rng));
  for (auto& v : b) v = T(nd(rng));
  for (auto& v : c) v = nan_c ? std::numeric_limits<T>::quiet_NaN() : T(nd(rng));
  std::vector<T> expect = c;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      long double s = 0;
      for (Index p = 0; p < k; ++p)
        s += (long double)(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
      expect[i * ldc + j] = T(alpha * s + (beta == T(0) ? 0 : beta * (long double)c[i * ldc + j]));
    }
  Context ctx(threads);
  gemm<T>(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc, ctx);
  const double tol = (std::is_same_v<T, float> ? 1e-5 : 1e-12) * std::sqrt(double(k) + 1) * 4;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j)
      ASSERT_NEAR(c[i * ldc + j], expect[i * ldc + j], tol)
          << "ta=" << ta << " tb=" << tb << " m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
}

TEST(Gemm, MatchesNaiveFloatAndDouble) {
  for (int threads : {1, 2})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [m, n, k] : {std::array<Index, 3>{1, 1, 1}, {7, 5, 3}, {200, 33, 70}, {17, 300, 129}, {64, 64, 0}}) {
          check_gemm<float>(ta, tb, m, n, k, 1.0f, 0.0f, threads);
          check_gemm<double>(ta, tb, m, n, k, 0.5, 2.0, threads);
        }
}

// Shapes around every block edge of the AVX-512 float kernel (core/gemm_kernel.hpp: tiles 8 x 48, equal
// depth blocks of at most 256, column blocks of 576), just past the sizes below which gemm_serial leaves a
// product to Eigen (m < 4 or n < 16), and narrow outputs the kernel computes transposed; every transpose,
// alpha and beta in {0, 1, other}.
TEST(Gemm, FloatKernelBlockEdges) {
#ifdef FOVEA_GEMM_KERNEL
  std::cout << "[   INFO   ] float products run fovea's AVX-512 kernel in this build\n";
#else
  std::cout << "[   INFO   ] no AVX-512 in this build: float products run Eigen's kernel, checked here instead\n";
#endif
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] : {std::array<Index, 3>{4, 16, 1}, {3, 16, 9}, {4, 15, 9}, {8, 48, 256}, {9, 49, 257},
                             {193, 577, 513}, {200, 1250, 70}, {31, 95, 600},
                             // narrow outputs, which the kernel runs transposed
                             {512, 49, 300}, {1024, 196, 64}, {100, 16, 33}, {37, 21, 5}}) {
        check_gemm<float>(ta, tb, m, n, k, 1.0f, 0.0f, 1);
        check_gemm<float>(ta, tb, m, n, k, -0.75f, 1.0f, 2);
        check_gemm<float>(ta, tb, m, n, k, 0.5f, 2.0f, 1);
      }
}

// beta == 0 means C is not read, as in BLAS: NaN or garbage in C must not reach the result.
TEST(Gemm, BetaZeroNeverReadsC) {
  for (auto [m, n, k] : {std::array<Index, 3>{7, 5, 3}, {64, 100, 300}, {197, 48, 768}}) {
    check_gemm<float>(false, true, m, n, k, 1.0f, 0.0f, 1, true);
    check_gemm<float>(true, false, m, n, k, 1.0f, 0.0f, 2, true);
    check_gemm<double>(false, false, m, n, k, 1.0, 0.0, 2, true);
  }
}

// gemm_serial's epilogue: its blocks tile C exactly once, each block holds its final product when the
// epilogue sees it, and what the epilogue writes is what stays (no later depth block or transposed store
// overwrites it). Float covers fovea's kernel: per-tile calls, edge tiles, several depth and column blocks,
// and the narrow products it runs transposed; double covers the one call on Eigen's path.
template <class T>
void check_epilogue(bool ta, bool tb, Index m, Index n, Index k, T beta) {
  std::mt19937 rng(unsigned(m * 7 + n * 3 + k));
  std::normal_distribution<double> nd;
  const Index lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
  std::vector<T> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
  for (auto& v : a) v = T(nd(rng));
  for (auto& v : b) v = T(nd(rng));
  for (auto& v : c) v = T(nd(rng));
  std::vector<double> expect(m * ldc);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double s = 0;
      for (Index p = 0; p < k; ++p) s += double(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
      expect[i * ldc + j] = s + double(beta) * c[i * ldc + j];
    }
  const double tol = (std::is_same_v<T, float> ? 1e-5 : 1e-12) * std::sqrt(double(k) + 1) * 4;
  std::vector<int> seen(m * n, 0);
  Index wrong = 0, outside = 0;
  auto epilogue = [&](T* blk, Index ld, Index rows, Index cols, Index i0, Index j0) {
    if (ld != ldc || blk != c.data() + i0 * ldc + j0 || i0 < 0 || j0 < 0 || i0 + rows > m || j0 + cols > n) {
      ++outside;
      return;
    }
    for (Index r = 0; r < rows; ++r)
      for (Index q = 0; q < cols; ++q) {
        T& v = blk[r * ld + q];
        if (std::abs(double(v) - expect[(i0 + r) * ldc + j0 + q]) > tol) ++wrong;
        ++seen[(i0 + r) * n + j0 + q];
        v = T(2) * v + T(1);
      }
  };
  detail::gemm_serial<T>(ta, tb, m, n, k, T(1), a.data(), lda, b.data(), ldb, beta, c.data(), ldc, epilogue);
  const std::string where = "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " m=" + std::to_string(m) +
                            " n=" + std::to_string(n) + " k=" + std::to_string(k);
  EXPECT_EQ(outside, 0) << where;
  EXPECT_EQ(wrong, 0) << where << ": blocks the epilogue saw were not final";
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      ASSERT_EQ(seen[i * n + j], 1) << where << " at " << i << "," << j;
      ASSERT_NEAR(c[i * ldc + j], 2 * expect[i * ldc + j] + 1, 2 * tol + 1e-6) << where << " at " << i << "," << j;
    }
}

TEST(Gemm, EpilogueSeesEachFinalBlockOnce) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] : {std::array<Index, 3>{197, 256, 300}, {9, 49, 257}, {200, 1250, 70}, {3, 16, 9},
                             {512, 49, 300}, {37, 21, 5}}) {
        check_epilogue<float>(ta, tb, m, n, k, 0.f);
        check_epilogue<float>(ta, tb, m, n, k, 1.f);
        check_epilogue<double>(ta, tb, m, n, k, 1.0);
      }
}

}  // namespace test_gemm
