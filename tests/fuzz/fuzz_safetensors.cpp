// Fuzzes the safetensors reader on whole files in memory: open (header validation), every accessor on every
// tensor, and, for files the writer can reproduce (F32 / F64 only), a write-and-read-back round trip.
#include <cstring>
#include <string>

#include "common.hpp"
#include "fovea/io/safetensors.hpp"

namespace {

using namespace fovea;

// get<T, R> for the tensor's own rank (up to 5), as a flat copy; false when its rank is larger.
template <class T>
bool get_any_rank(const SafeTensors& st, const TensorInfo& t, std::vector<T>& out) {
  auto take = [&](const auto& x) { out.assign(x.data(), x.data() + x.size()); };
  switch (t.shape.size()) {
    case 0: take(st.get<T, 0>(t.name, fuzz::ctx())); return true;
    case 1: take(st.get<T, 1>(t.name, fuzz::ctx())); return true;
    case 2: take(st.get<T, 2>(t.name, fuzz::ctx())); return true;
    case 3: take(st.get<T, 3>(t.name, fuzz::ctx())); return true;
    case 4: take(st.get<T, 4>(t.name, fuzz::ctx())); return true;
    case 5: take(st.get<T, 5>(t.name, fuzz::ctx())); return true;
    default: return false;
  }
}

bool same_bits(const void* a, const void* b, std::size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

void exercise(const SafeTensors& st) {
  bool writable = true;
  for (const TensorInfo& t : st.tensors()) {
    const TensorInfo& again = st.info(t.name);
    FOVEA_FUZZ_CHECK(&again == &t || again.begin == t.begin);
    FOVEA_FUZZ_CHECK(st.bytes(t.name).size() == t.nbytes());
    FOVEA_FUZZ_CHECK(t.end <= st.tensors().back().end);
    writable = writable && (t.dtype == Dtype::F32 || t.dtype == Dtype::F64);
    std::vector<float> f;
    std::vector<double> d;
    bool got = false;
    fuzz::expect_clean([&] { got = get_any_rank(st, t, f) && get_any_rank(st, t, d); });
    if (!got) continue;
    FOVEA_FUZZ_CHECK(f.size() == std::size_t(t.numel()) && d.size() == f.size());
    // Every conversion to float equals the conversion to double, then rounded.
    for (std::size_t i = 0; i < f.size(); ++i) {
      const float r = static_cast<float>(d[i]);
      FOVEA_FUZZ_CHECK((r != r && f[i] != f[i]) || same_bits(&r, &f[i], 4) || (r == 0 && f[i] == 0));
    }
    if (t.dtype == Dtype::F32 && t.shape.size() == 1) {
      fuzz::expect_clean([&] {
        const auto v = st.view<float, 1>(t.name);
        FOVEA_FUZZ_CHECK(same_bits(v.data(), f.data(), f.size() * 4));
      });
    }
  }
  if (!writable) return;
  // What the writer makes of what was read reads back the same.
  SafeTensorsWriter w;
  for (const auto& [k, v] : st.metadata()) w.metadata(k, v);
  for (const TensorInfo& t : st.tensors()) {
    const std::string_view b = st.bytes(t.name);
    if (t.dtype == Dtype::F32) {
      std::vector<float> x(std::size_t(t.numel()));
      if (!x.empty()) std::memcpy(x.data(), b.data(), b.size());
      w.add(t.name, x.data(), t.shape);
    } else {
      std::vector<double> x(std::size_t(t.numel()));
      if (!x.empty()) std::memcpy(x.data(), b.data(), b.size());
      w.add(t.name, x.data(), t.shape);
    }
  }
  const SafeTensors back = SafeTensors::from_bytes(w.to_bytes(), "round trip");
  FOVEA_FUZZ_CHECK(back.tensors().size() == st.tensors().size());
  FOVEA_FUZZ_CHECK(back.metadata() == st.metadata());
  for (const TensorInfo& t : st.tensors()) {
    const TensorInfo& u = back.info(t.name);
    FOVEA_FUZZ_CHECK(u.dtype == t.dtype && u.shape == t.shape);
    FOVEA_FUZZ_CHECK(back.bytes(t.name) == st.bytes(t.name));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::expect_clean([&] {
    const SafeTensors st = SafeTensors::from_bytes(fuzz::bytes(data, size), "fuzz input");
    exercise(st);
    // A name the file does not hold is a clean error too.
    fuzz::expect_clean([&] { (void)st.info("\x01 not a tensor"); });
  });
  return 0;
}
