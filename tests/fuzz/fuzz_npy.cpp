// Fuzzes the .npy reader on whole files in memory (read_npy_bytes, the same parser read_npy_array uses after
// its header-first file read): every result must be consistent between float and double.
#include <cstring>

#include "common.hpp"
#include "fovea/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fovea;
  const std::string in = fuzz::bytes(data, size);
  // Small ceilings keep a run fast; they are part of what is fuzzed (the checks run before any allocation).
  const ReadLimits limits = ReadLimits().max_tensor_bytes(1 << 20).max_header_bytes(1 << 16);
  fuzz::expect_clean([&] {
    const NpyArray<double> d = read_npy_bytes<double>(in, "fuzz.npy", limits);
    std::uint64_t count = 1;
    for (Index n : d.shape) {
      FOVEA_FUZZ_CHECK(n >= 0);
      count *= std::uint64_t(n);
    }
    FOVEA_FUZZ_CHECK(count == d.values.size());
    const NpyArray<float> f = read_npy_bytes<float>(in, "fuzz.npy", limits);
    FOVEA_FUZZ_CHECK(f.shape == d.shape && f.values.size() == d.values.size() && f.was_double == d.was_double);
    for (std::size_t i = 0; i < f.values.size(); ++i) {
      const float r = static_cast<float>(d.values[i]);
      FOVEA_FUZZ_CHECK((r != r && f.values[i] != f.values[i]) || std::memcmp(&r, &f.values[i], 4) == 0);
    }
  });
  return 0;
}
