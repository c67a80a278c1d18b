#pragma once
// Helpers for tests that compare with the PyTorch reference files in tests/reference/data.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "fovea/core/tensor.hpp"
#include "fovea/io/npy.hpp"

namespace fovea::test {

inline std::string ref_path(const std::string& family, const std::string& name) {
  return std::string(FOVEA_REF_DIR) + "/" + family + "/" + name + ".npy";
}

// A reference array, converted to T (the files hold float32 inputs and float64 outputs).
template <class T, int R>
Tensor<T, R> load_ref(const std::string& family, const std::string& name) {
  return read_npy<T, R>(ref_path(family, name));
}

inline double ref_scalar(const std::string& family, const std::string& name) {
  auto a = read_npy_array<double>(ref_path(family, name));
  return a.values.at(0);
}

// Passes when every |a - e| <= atol + rtol * max|e|; the message gives the largest difference and where,
// so a failing case says by how much.
template <class A, class E>
::testing::AssertionResult all_close(const A& actual, const E& expected, double rtol, double atol) {
  if (actual.dimensions() != expected.dimensions())
    return ::testing::AssertionFailure() << "shape " << ::testing::PrintToString(actual.dimensions())
                                         << " != expected " << ::testing::PrintToString(expected.dimensions());
  const Index n = actual.size();
  double scale = 0, worst = -1;
  Index at = 0;
  for (Index i = 0; i < n; ++i)
    if (std::isfinite(double(expected.data()[i]))) scale = std::max(scale, std::abs(double(expected.data()[i])));
  for (Index i = 0; i < n; ++i) {
    const double x = double(actual.data()[i]), y = double(expected.data()[i]);
    // Equal values (equal infinities too) differ by 0; NaN only matches NaN.
    const double d = (x == y || (std::isnan(x) && std::isnan(y))) ? 0.0 : std::abs(x - y);
    if (!(d <= worst) ) { worst = d; at = i; }
    if (std::isnan(d)) { worst = d; at = i; break; }
  }
  const double tol = atol + rtol * scale;
  if (n == 0 || worst <= tol) return ::testing::AssertionSuccess() << "max abs diff " << worst;
  return ::testing::AssertionFailure() << "max abs diff " << worst << " at flat index " << at << " (actual "
                                       << actual.data()[at] << ", expected " << expected.data()[at]
                                       << ") exceeds " << tol << " = " << atol << " + " << rtol << " * max|expected| "
                                       << scale;
}

// Runs `f` and checks that it throws exactly exception type E with every fragment in its message.
template <class E, class F>
::testing::AssertionResult throws_with(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments)
      if (msg.find(frag) == std::string::npos)
        return ::testing::AssertionFailure() << "message '" << msg << "' lacks '" << frag << "'";
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another type: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace fovea::test
