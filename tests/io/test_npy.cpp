#include <gtest/gtest.h>

#include <fstream>

#include "common/reference.hpp"
#include "fovea/io/npy.hpp"

namespace test_npy {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

static std::string tmp(const std::string& name) { return std::string(FOVEA_TEST_TMP) + "/" + name; }

TEST(Npy, RoundTripsFloatAndDouble) {
  Tensor<float, 3> a(2, 3, 4);
  for (Index i = 0; i < a.size(); ++i) a.data()[i] = float(i) * 0.25f - 1;
  write_npy(tmp("a.npy"), a);
  auto b = read_npy<float, 3>(tmp("a.npy"));
  auto c = read_npy<double, 3>(tmp("a.npy"));
  EXPECT_TRUE(test::all_close(b, a, 0, 0));
  EXPECT_TRUE(test::all_close(c, a, 0, 0));
  Tensor<double, 1> d(5);
  d.setValues({1, 2, 3, 4, 1e-300});
  write_npy(tmp("d.npy"), d);
  EXPECT_TRUE(test::all_close(read_npy<double, 1>(tmp("d.npy")), d, 0, 0));
  EXPECT_TRUE(read_npy_array<float>(tmp("d.npy")).was_double);
}

TEST(Npy, ReadsNumpyWrittenFile) {
  // Written by numpy (tests/reference/ref_npy.py): np.arange(6, dtype=float32).reshape(2, 3) / 2.
  auto a = test::load_ref<float, 2>("npy", "arange_2x3");
  ASSERT_EQ(a.dimension(0), 2);
  ASSERT_EQ(a.dimension(1), 3);
  for (Index i = 0; i < 6; ++i) EXPECT_EQ(a.data()[i], float(i) / 2);
}

static std::string npy_bytes(const std::string& dict, std::size_t data_bytes) {
  std::string h = dict;
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::string s = std::string("\x93NUMPY\x01\x00", 8);
  s += char(h.size() & 0xff);
  s += char(h.size() >> 8);
  return s + h + std::string(data_bytes, '\0');
}

TEST(Npy, RejectsMalformedFilesWithClearErrors) {
  auto bad = [](const std::string& bytes, std::initializer_list<const char*> frags) {
    return test::throws_with<FormatError>([&] { detail::parse_npy<float>(bytes.data(), bytes.size(), "x.npy"); },
                                          frags);
  };
  EXPECT_TRUE(bad("hello", {"read_npy", "x.npy", "bad magic"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23),
                  {"x.npy", "(2, 3)", "24 bytes", "holds 23"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16), {"'<i8'", "not supported"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8), {"Fortran"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999,), }", 8),
                  {"dimension too large"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 8),
                  {"x.npy"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'shape': (2,), }", 8), {"lacks"}));
  EXPECT_TRUE(bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", 8), {"x.npy"}));
  std::string trunc = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
  trunc[8] = char(0xff);  // header length past the end of the file
  EXPECT_TRUE(bad(trunc, {"runs past the end"}));
  EXPECT_TRUE(test::throws_with<FormatError>([] { read_npy<float, 2>(tmp("does_not_exist.npy")); },
                                             {"cannot open", "does_not_exist.npy"}));
  write_npy(tmp("r1.npy"), Tensor<float, 1>(3));
  EXPECT_TRUE(test::throws_with<FormatError>([] { read_npy<float, 2>(tmp("r1.npy")); }, {"(3)", "expected rank 2"}));
}

// Every prefix and every single-byte corruption of a valid file either parses or throws FormatError.
TEST(Npy, SurvivesTruncationAndCorruption) {
  const std::string good = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", 48);
  for (std::size_t len = 0; len < good.size(); ++len) {
    EXPECT_THROW(detail::parse_npy<double>(good.data(), len, "t"), FormatError) << len;
  }
  for (std::size_t at = 0; at < 128; ++at)
    for (int v : {0, 0x20, 0x29, 0x7f, 0xff}) {
      std::string s = good;
      s[at] = char(v);
      try {
        detail::parse_npy<double>(s.data(), s.size(), "t");
      } catch (const FormatError&) {
      }
    }
}

}  // namespace test_npy
