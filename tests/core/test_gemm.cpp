#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "common/reference.hpp"
#include "fovea/core/gemm.hpp"

using namespace fovea;

// Naive triple loop in long double: the truth for every transpose combination, stride and thread count.
template <class T>
void check_gemm(bool ta, bool tb, Index m, Index n, Index k, T alpha, T beta, int threads) {
  std::mt19937 rng(unsigned(m * 131 + n * 17 + k + ta * 7 + tb * 3));
  std::normal_distribution<double> nd;
  const Index lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
  std::vector<T> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
  for (auto& v : a) v = T(nd(rng));
  for (auto& v : b) v = T(nd(rng));
  for (auto& v : c) v = T(nd(rng));
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
