// Built against an installed fovea by .ci/run; exits non-zero if the umbrella header does not work.
#include <fovea/fovea.hpp>

#include <iostream>

int main() {
  fovea::Tensor<float, 4> x(1, 2, 5, 5), w(3, 2, 3, 3);
  x.setConstant(1.f);
  w.setConstant(0.5f);
  fovea::Context ctx(1);
  auto y = fovea::conv2d(x, w, fovea::Conv2dOptions().padding(1), ctx);
  // The centre sees all 2*3*3 inputs: 18 * 0.5 = 9.
  const bool ok = y.dimension(1) == 3 && y(0, 1, 2, 2) == 9.f && y(0, 0, 0, 0) == 4 * 2 * 0.5f;
  std::cout << "consumer: conv2d via find_package(fovea) " << (ok ? "ok" : "WRONG") << "\n";
  return ok ? 0 : 1;
}
