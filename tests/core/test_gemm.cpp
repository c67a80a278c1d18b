#include <gtest/gtest.h>

#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "common/reference.hpp"
#include "fovea/core/gemm.hpp"

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
