#include <gtest/gtest.h>

#include <random>
#include <string>

#include "common/reference.hpp"
#include "fovea/ops/linear.hpp"

namespace test_linear {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "linear";

// Tolerances relative to max|expected|. Float: each output is a dot product of length in <= 197 whose
// float rounding error grows like sqrt(in) * 6e-8 of its terms, well under 1e-5 (the design's single-op
// bound). Double: the same in double, so 1e-12 leaves room for summation order only.
template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T, int R>
Tensor<T, R> random_tensor(std::mt19937& rng, const std::array<Index, R>& dims) {
  Tensor<T, R> t(dims);
  std::normal_distribution<double> nd;
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(nd(rng));
  return t;
}

template <class T, int R>
void check_forward(const std::string& name, bool nobias) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto x = test::load_ref<T, R>(kFamily, name + "_x");
  const auto w = test::load_ref<T, 2>(kFamily, name + "_w");
  const auto b = test::load_ref<T, 1>(kFamily, name + "_b");
  const auto expect = test::load_ref<double, R>(kFamily, name + "_out");
  for (int threads : {1, 2, 3}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(linear(x, w, b, ctx), expect, rtol<T>(), 0)) << threads << " threads";
    if (nobias) {
      EXPECT_TRUE(test::all_close(linear(x, w, ctx), test::load_ref<double, R>(kFamily, name + "_out_nobias"),
                                  rtol<T>(), 0))
          << threads << " threads, no bias";
    }
  }
}

template <class T, int R>
void check_backward(const std::string& name) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto x = test::load_ref<T, R>(kFamily, name + "_x");
  const auto w = test::load_ref<T, 2>(kFamily, name + "_w");
  const auto dout = test::load_ref<T, R>(kFamily, name + "_dout");
  const auto dx_ref = test::load_ref<double, R>(kFamily, name + "_dx");
  const auto dw_ref = test::load_ref<double, 2>(kFamily, name + "_dw");
  const auto db_ref = test::load_ref<double, 1>(kFamily, name + "_db");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    Tensor<T, R> dx(x.dimensions());
    Tensor<T, 2> dw(w.dimensions());
    Tensor<T, 1> db(w.dimension(0));
    dx.setZero();
    dw.setZero();
    db.setZero();
    detail::linear_backward(dout, x, w, &dx, &dw, &db, ctx);
    EXPECT_TRUE(test::all_close(dx, dx_ref, rtol<T>(), 0)) << "dx, " << threads << " threads";
    EXPECT_TRUE(test::all_close(dw, dw_ref, rtol<T>(), 0)) << "dw, " << threads << " threads";
    EXPECT_TRUE(test::all_close(db, db_ref, rtol<T>(), 0)) << "db, " << threads << " threads";
  }
}

TEST(Linear, MatchesPyTorch) {
  check_forward<float, 1>("r1", true);
  check_forward<double, 1>("r1", true);
  check_forward<float, 2>("r2_b3", false);
  check_forward<double, 2>("r2_b3", false);
  check_forward<float, 2>("r2_vit_b3", false);
  check_forward<double, 2>("r2_vit_b3", false);
  for (const char* name : {"r3_b1_n1", "r3_b3_n7", "r3_b1_n197", "vit_b3_n7", "vit_b1_n197"}) {
    const bool nobias = std::string(name) == "r3_b3_n7" || std::string(name) == "vit_b3_n7";
    check_forward<float, 3>(name, nobias);
    check_forward<double, 3>(name, nobias);
  }
}

TEST(Linear, BackwardMatchesPyTorchAutograd) {
  check_backward<float, 1>("r1");
  check_backward<double, 1>("r1");
  check_backward<float, 2>("r2_b3");
  check_backward<double, 2>("r2_b3");
  for (const char* name : {"r3_b3_n7", "vit_b3_n7"}) {
    check_backward<float, 3>(name);
    check_backward<double, 3>(name);
  }
}

// Large enough that gemm splits over threads, checked against a naive long-double loop.
TEST(Linear, ThreadedMatchesNaiveLoop) {
  std::mt19937 rng(7);
  const auto x = random_tensor<float, 3>(rng, {2, 61, 96});
  const auto w = random_tensor<float, 2>(rng, {130, 96});
  const auto b = random_tensor<float, 1>(rng, {130});
  Tensor<double, 3> expect(2, 61, 130);
  for (Index i = 0; i < 2; ++i)
    for (Index n = 0; n < 61; ++n)
      for (Index o = 0; o < 130; ++o) {
        long double s = b(o);
        for (Index k = 0; k < 96; ++k) s += (long double)x(i, n, k) * w(o, k);
        expect(i, n, o) = double(s);
      }
  for (int threads : {1, 2, 3}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(linear(x, w, b, ctx), expect, rtol<float>(), 0)) << threads << " threads";
  }
}

// Gradients are added into what the buffers hold, and a null buffer is skipped.
TEST(Linear, BackwardAccumulatesAndSkipsNull) {
  std::mt19937 rng(11);
  const auto x = random_tensor<double, 2>(rng, {5, 6});
  const auto w = random_tensor<double, 2>(rng, {4, 6});
  const auto dout = random_tensor<double, 2>(rng, {5, 4});
  Tensor<double, 2> dx0 = random_tensor<double, 2>(rng, {5, 6}), dw0 = random_tensor<double, 2>(rng, {4, 6});
  Tensor<double, 1> db0 = random_tensor<double, 1>(rng, {4});
  Tensor<double, 2> dx(5, 6), dw(4, 6);
  Tensor<double, 1> db(4);
  dx.setZero();
  dw.setZero();
  db.setZero();
  detail::linear_backward(dout, x, w, &dx, &dw, &db);
  Tensor<double, 2> dx1 = dx0, dw1 = dw0;
  Tensor<double, 1> db1 = db0;
  detail::linear_backward(dout, x, w, &dx1, &dw1, &db1);
  EXPECT_TRUE(test::all_close(dx1, Tensor<double, 2>(dx0 + dx), 1e-14, 0));
  EXPECT_TRUE(test::all_close(dw1, Tensor<double, 2>(dw0 + dw), 1e-14, 0));
  EXPECT_TRUE(test::all_close(db1, Tensor<double, 1>(db0 + db), 1e-14, 0));
  Tensor<double, 2> dw2 = dw0;
  detail::linear_backward<double, 2>(dout, x, w, nullptr, &dw2, nullptr);
  EXPECT_TRUE(test::all_close(dw2, dw1, 1e-14, 0));
}

// Central differences of L = sum(linear(x, w, b) * G) in double. L is linear in each single entry, so the
// difference quotient is exact up to rounding (~1e-16 * |L| / h), and 1e-7 is tight.
TEST(Linear, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(3);
  auto x = random_tensor<double, 3>(rng, {2, 3, 5});
  auto w = random_tensor<double, 2>(rng, {4, 5});
  auto b = random_tensor<double, 1>(rng, {4});
  const auto g = random_tensor<double, 3>(rng, {2, 3, 4});
  auto loss = [&] {
    const Tensor<double, 0> s = (linear(x, w, b) * g).sum();
    return s();
  };
  Tensor<double, 3> dx(x.dimensions());
  Tensor<double, 2> dw(w.dimensions());
  Tensor<double, 1> db(b.dimensions());
  dx.setZero();
  dw.setZero();
  db.setZero();
  detail::linear_backward(g, x, w, &dx, &dw, &db);
  const double h = 1e-5;
  auto numeric = [&](double* p) {
    const double v = *p;
    *p = v + h;
    const double up = loss();
    *p = v - h;
    const double down = loss();
    *p = v;
    return (up - down) / (2 * h);
  };
  for (Index i = 0; i < x.size(); ++i) EXPECT_NEAR(dx.data()[i], numeric(x.data() + i), 1e-7) << "dx " << i;
  for (Index i = 0; i < w.size(); ++i) EXPECT_NEAR(dw.data()[i], numeric(w.data() + i), 1e-7) << "dw " << i;
  for (Index i = 0; i < b.size(); ++i) EXPECT_NEAR(db.data()[i], numeric(b.data() + i), 1e-7) << "db " << i;
}

TEST(Linear, RejectsBadShapes) {
  Tensor<float, 3> x(3, 7, 13);
  Tensor<float, 2> w(7, 13), w12(7, 12);
  Tensor<float, 1> b(7), b8(8);
  x.setZero();
  w.setZero();
  w12.setZero();
  b.setZero();
  b8.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { linear(x, w12, b); },
      {"linear: expected weight.size(1) == input.size(-1) (13), but got 12; input (3, 7, 13), weight (7, 12), bias (7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { linear(x, w12); },
                                            {"linear:", "(13), but got 12; input (3, 7, 13), weight (7, 12)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { linear(x, w, b8); },
      {"linear: expected bias.size(0) == weight.size(0) (7), but got 8; input (3, 7, 13), weight (7, 13), bias (8)"}));
  Tensor<float, 0> scalar;
  scalar.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { linear(scalar, w, b); },
                                            {"linear: expected input of rank >= 1", "rank 0", "input ()", "weight (7, 13)"}));
  Tensor<float, 2> empty_rows(0, 13);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { linear(empty_rows, w, b); },
                                            {"linear: expected non-empty", "input (0, 13)", "weight (7, 13)"}));
  Tensor<float, 2> no_out(0, 13);
  Tensor<float, 1> no_bias(0);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { linear(x, no_out, no_bias); },
                                            {"linear: expected non-empty", "weight (0, 13)", "bias (0)"}));
  Tensor<float, 3> x0(3, 7, 0);
  Tensor<float, 2> w0(7, 0);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { linear(x0, w0, b); }, {"non-empty", "input (3, 7, 0)"}));
}

TEST(Linear, BackwardRejectsBadShapes) {
  Tensor<float, 3> x(3, 7, 13), dout(3, 7, 7), dx(3, 7, 13);
  Tensor<float, 2> w(7, 13), dw(7, 13);
  Tensor<float, 1> db(7);
  for (auto* t : {&x, &dout, &dx}) t->setZero();
  w.setZero();
  dw.setZero();
  db.setZero();
  Tensor<float, 3> dout_bad(3, 7, 8), dx_bad(3, 6, 13);
  Tensor<float, 2> w_bad(7, 12), dw_bad(13, 7);
  Tensor<float, 1> db_bad(6);
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::linear_backward(dout, x, w_bad, &dx, &dw, &db); },
      {"linear_backward: expected weight.size(1) == input.size(-1) (13), but got 12", "input (3, 7, 13)", "weight (7, 12)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::linear_backward(dout_bad, x, w, &dx, &dw, &db); },
      {"linear_backward: expected dout of shape (3, 7, 7)", "but got (3, 7, 8); dout (3, 7, 8), input (3, 7, 13)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::linear_backward(dout, x, w, &dx_bad, &dw, &db); },
      {"linear_backward: expected dinput of the input's shape (3, 7, 13), but got (3, 6, 13)", "dinput (3, 6, 13)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::linear_backward(dout, x, w, &dx, &dw_bad, &db); },
      {"linear_backward: expected dweight of the weight's shape (7, 13), but got (13, 7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::linear_backward(dout, x, w, &dx, &dw, &db_bad); },
      {"linear_backward: expected dbias of size weight.size(0) (7), but got (6)", "dbias (6)"}));
}

}  // namespace test_linear
