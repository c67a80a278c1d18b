#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"

namespace test_safetensors {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

static std::string tmp(const std::string& name) { return std::string(FOVEA_TEST_TMP) + "/" + name; }
static std::string ref_file(const std::string& name) { return std::string(FOVEA_REF_DIR) + "/safetensors/" + name; }

static std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A file from its header text and a data buffer of `data` bytes (values 0, 1, 2, ...).
static std::string st_bytes(const std::string& header, std::size_t data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((std::uint64_t(header.size()) >> (8 * i)) & 0xff);
  s += header;
  for (std::size_t i = 0; i < data; ++i) s += char(i);
  return s;
}

static SafeTensors parse(const std::string& bytes, const SafeTensorsOptions& o = {}) {
  return SafeTensors::from_bytes(bytes, "bad.safetensors", o);
}

// Parsing `bytes` throws FormatError naming the file and every fragment.
static ::testing::AssertionResult rejects(const std::string& bytes, std::initializer_list<const char*> fragments,
                                          const SafeTensorsOptions& o = {}) {
  auto r = test::throws_with<FormatError>([&] { parse(bytes, o); }, fragments);
  if (!r) return r;
  return test::throws_with<FormatError>([&] { parse(bytes, o); }, {"safetensors: bad.safetensors: "});
}

// Exact equality that also tells -0 from 0 and accepts NaN for NaN: F16, BF16 and F32 convert exactly.
template <class A, class E>
static ::testing::AssertionResult same_values(const A& actual, const E& expected) {
  if (actual.size() != expected.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (Index i = 0; i < actual.size(); ++i) {
    const double a = actual.data()[i], e = expected.data()[i];
    const bool same = (std::isnan(a) && std::isnan(e)) || (a == e && std::signbit(a) == std::signbit(e));
    if (!same) return ::testing::AssertionFailure() << "at flat index " << i << ": " << a << " != expected " << e;
  }
  return ::testing::AssertionSuccess();
}

template <class T, int R>
static void expect_tensor(const SafeTensors& st, const std::string& name, const std::string& truth,
                          bool f64_rounds_for_float) {
  const Tensor<double, R> want = test::load_ref<double, R>("safetensors", truth);
  for (int threads : {1, 2}) {
    Context ctx(threads);
    const Tensor<T, R> got = st.get<T, R>(name, ctx);
    ASSERT_EQ(got.dimensions(), want.dimensions()) << name;
    if (std::is_same_v<T, float> && f64_rounds_for_float) {
      Tensor<float, R> rounded = want.template cast<float>();  // what rounding to nearest gives
      EXPECT_TRUE(same_values(got, rounded)) << name << " threads " << threads;
    } else {
      EXPECT_TRUE(same_values(got, want)) << name << " threads " << threads;
    }
  }
}

// The PyTorch-written file: every float dtype read exactly (F64 -> float rounded to nearest), odd shapes,
// batch 2, a scalar, an empty tensor. Tolerance: none, the conversions are exact by definition.
TEST(SafeTensors, ReadsEveryFloatDtypeOfAReferenceFile) {
  for (bool mmap : {true, false}) {
    const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"), SafeTensorsOptions().use_mmap(mmap));
    expect_tensor<float, 2>(st, "f16", "dtypes_f16", false);
    expect_tensor<double, 2>(st, "f16", "dtypes_f16", false);
    expect_tensor<float, 3>(st, "bf16", "dtypes_bf16", false);
    expect_tensor<double, 3>(st, "bf16", "dtypes_bf16", false);
    expect_tensor<float, 4>(st, "blocks.0.f32", "dtypes_f32", false);
    expect_tensor<double, 4>(st, "blocks.0.f32", "dtypes_f32", false);
    expect_tensor<float, 3>(st, "f64", "dtypes_f64", true);
    expect_tensor<double, 3>(st, "f64", "dtypes_f64", false);
    const double scalar = test::load_ref<double, 1>("safetensors", "dtypes_scalar")(0);  // numpy saved it 1-d
    EXPECT_EQ(double(st.get<float, 0>("scalar")()), scalar);
    EXPECT_EQ((st.get<double, 0>("scalar")()), scalar);
    expect_tensor<double, 2>(st, "empty", "dtypes_empty", false);
    expect_tensor<float, 1>(st, "blöck.ü", "dtypes_utf8", false);
  }
}

// The special values the file holds, spelled out, so a wrong truth file could not hide a wrong conversion.
TEST(SafeTensors, SpecialValuesOfHalfAndBfloat16) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  const Tensor<float, 2> h = st.get<float, 2>("f16");
  EXPECT_EQ(h(0, 0), 0.0f);
  EXPECT_FALSE(std::signbit(h(0, 0)));
  EXPECT_TRUE(std::signbit(h(0, 1)) && h(0, 1) == 0.0f);
  EXPECT_EQ(h(0, 2), INFINITY);
  EXPECT_EQ(h(0, 3), -INFINITY);
  EXPECT_TRUE(std::isnan(h(0, 4)));
  EXPECT_EQ(h(0, 5), 65504.0f);
  EXPECT_EQ(h(0, 7), std::ldexp(1.0f, -24));   // smallest subnormal
  EXPECT_EQ(h(0, 8), -std::ldexp(1.0f, -24));
  EXPECT_EQ(h(1, 0), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(h(1, 3), std::ldexp(1.0f, -14));   // smallest normal
  const Tensor<double, 3> b = st.get<double, 3>("bf16");
  EXPECT_TRUE(std::signbit(b(0, 0, 1)) && b(0, 0, 1) == 0.0);
  EXPECT_EQ(b(0, 0, 2), INFINITY);
  EXPECT_TRUE(std::isnan(b(0, 1, 1)));
  EXPECT_EQ(b(0, 1, 2), 3.3895313892515355e38);  // bfloat16's largest
  EXPECT_EQ(b(0, 2, 1), std::ldexp(1.0, -133));  // its smallest subnormal
  EXPECT_EQ(b(0, 3, 0), std::ldexp(127.0, -133));  // its largest subnormal
  const Tensor<float, 3> f = st.get<float, 3>("f64");
  EXPECT_EQ(f(0, 0, 0), INFINITY);  // 1e300 overflows float
  EXPECT_TRUE(f(0, 0, 1) == 0.0f && std::signbit(f(0, 0, 1)));  // -1e-300 underflows to -0
  EXPECT_EQ(f(0, 0, 2), 1.0f);  // 1 + 2^-24 is a tie: to even
}

// Every one of the 65,536 half and bfloat16 bit patterns against the value its fields define.
TEST(SafeTensors, HalfAndBfloat16ConversionOfEveryBitPattern) {
  for (std::uint32_t u = 0; u < 65536; ++u) {
    const std::uint16_t h = std::uint16_t(u);
    const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double want;
    if (exp == 31) want = mant ? NAN : INFINITY;
    else if (exp == 0) want = std::ldexp(double(mant), -24);
    else want = std::ldexp(double(1024 + mant), exp - 25);
    if (sign) want = -want;
    const float got = detail::half_to_float(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << u;
      std::uint32_t bits;
      std::memcpy(&bits, &got, 4);
      ASSERT_EQ(bits & 0x7fffffu, std::uint32_t(mant) << 13) << "NaN payload kept, " << std::hex << u;
    } else {
      ASSERT_EQ(double(got), want) << std::hex << u;
      ASSERT_EQ(std::signbit(got), bool(sign)) << std::hex << u;
    }
    const int bexp = (h >> 7) & 255, bmant = h & 127;
    double bwant;
    if (bexp == 255) bwant = bmant ? NAN : INFINITY;
    else if (bexp == 0) bwant = std::ldexp(double(bmant), -133);
    else bwant = std::ldexp(double(128 + bmant), bexp - 134);
    if (sign) bwant = -bwant;
    const float bgot = detail::bfloat16_to_float(h);
    if (std::isnan(bwant)) ASSERT_TRUE(std::isnan(bgot)) << std::hex << u;
    else ASSERT_TRUE(double(bgot) == bwant && std::signbit(bgot) == bool(sign)) << std::hex << u;
  }
}

TEST(SafeTensors, ListsTensorsInDataOrderWithAbsoluteOffsets) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  const std::vector<std::string> order = {"ids", "f64", "blocks.0.f32", "blöck.ü", "empty", "scalar", "bf16", "f16"};
  ASSERT_EQ(st.tensors().size(), order.size());
  const std::string bytes = file_bytes(ref_file("dtypes.safetensors"));
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  std::size_t at = 8 + n;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const TensorInfo& t = st.tensors()[i];
    EXPECT_EQ(t.name, order[i]);
    EXPECT_EQ(t.begin, at) << t.name;
    at = t.end;
    EXPECT_TRUE(st.contains(t.name));
    EXPECT_EQ(&st.info(t.name), &t);
  }
  EXPECT_EQ(at, bytes.size());
  const TensorInfo& f16 = st.info("f16");
  EXPECT_EQ(f16.dtype, Dtype::F16);
  EXPECT_EQ(f16.shape, (std::vector<Index>{4, 9}));
  EXPECT_EQ(f16.numel(), 36);
  EXPECT_EQ(f16.nbytes(), 72u);
  EXPECT_EQ(st.info("scalar").shape.size(), 0u);
  EXPECT_EQ(st.info("empty").numel(), 0);
  EXPECT_EQ(st.info("ids").dtype, Dtype::I64);
  EXPECT_STREQ(dtype_name(Dtype::BF16), "BF16");
  EXPECT_EQ(dtype_bits(Dtype::F6_E2M3), 6u);
  EXPECT_TRUE(st.metadata().empty());
  EXPECT_FALSE(st.contains("missing"));
  EXPECT_EQ(st.label(), "'" + ref_file("dtypes.safetensors") + "'");
}

TEST(SafeTensors, ReadsMetadata) {
  const SafeTensors st = SafeTensors::open(ref_file("meta.safetensors"));
  ASSERT_EQ(st.metadata().size(), 2u);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.metadata().at("note"), "ünïcode \"quoted\"\n\ttab");
  EXPECT_TRUE(test::all_close(st.get<double, 2>("w"), test::load_ref<double, 2>("safetensors", "meta_w"), 0, 0));
}

TEST(SafeTensors, RawBytesOfAnyDtype) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  const std::string_view b = st.bytes("ids");
  ASSERT_EQ(b.size(), 40u);
  std::int64_t ids[5];
  std::memcpy(ids, b.data(), 40);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], -1);
  EXPECT_EQ(ids[2], std::int64_t(1) << 40);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get<float, 1>("ids"); },
                                             {"dtypes.safetensors", "get: tensor 'ids' is I64", "bytes()"}));
}

TEST(SafeTensors, ZeroCopyViewPointsIntoTheFile) {
  for (bool mmap : {true, false}) {
    const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"), SafeTensorsOptions().use_mmap(mmap));
    const ConstTensorMap<float, 4> v = st.view<float, 4>("blocks.0.f32");
    EXPECT_EQ(static_cast<const void*>(v.data()), static_cast<const void*>(st.bytes("blocks.0.f32").data()));
    EXPECT_TRUE(same_values(v, st.get<float, 4>("blocks.0.f32")));
    const ConstTensorMap<double, 3> d = st.view<double, 3>("f64");
    EXPECT_TRUE(same_values(d, test::load_ref<double, 3>("safetensors", "dtypes_f64")));
    EXPECT_EQ((st.view<float, 0>("scalar")()), 2.75f);
    EXPECT_EQ((st.view<float, 2>("empty").size()), 0);
  }
  // A view outlives the SafeTensors it came from as long as a copy lives.
  std::optional<ConstTensorMap<float, 1>> kept;
  SafeTensors copy = SafeTensors::from_bytes(st_bytes("{}", 0));
  {
    const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
    copy = st;
    kept.emplace(st.view<float, 1>("blöck.ü"));
  }
  EXPECT_EQ((*kept)(0), 1.5f);
  EXPECT_EQ((*kept)(1), -2.0f);
  EXPECT_EQ(copy.tensors().size(), 8u);
}

TEST(SafeTensors, ViewRefusesWhatItCannotMapWithoutACopy) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.view<float, 2>("f16"); },
                                             {"dtypes.safetensors", "view<float>", "'f16' is stored as F16, not F32",
                                              "get<float>()"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.view<double, 4>("blocks.0.f32"); },
                                             {"view<double>", "stored as F32, not F64"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.view<float, 3>("blocks.0.f32"); },
                                             {"view", "(2, 3, 5, 7)", "expected rank 3"}));
  // A header of 61 bytes, not padded to 8: the F32 data starts at file offset 69, misaligned for float.
  std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  h.append(61 - h.size(), ' ');
  const SafeTensors odd = SafeTensors::from_bytes(st_bytes(h, 8), "odd.safetensors");
  EXPECT_TRUE(test::throws_with<FormatError>([&] { odd.view<float, 1>("w"); },
                                             {"odd.safetensors", "'w' starts at file offset 69", "4-byte aligned",
                                              "get<float>()"}));
  EXPECT_EQ((odd.get<float, 1>("w").size()), 2);  // get copies from any alignment
}

TEST(SafeTensors, TensorsStayReadableAfterACopyReleasesTheirMappedPages) {
  // get() and get_into() drop a mapped tensor's pages from the process once copied (so a loaded model holds its
  // weights once); a view into the same bytes, taken before, and later reads must still see the file's values.
  Tensor<float, 2> big(300, 1000);  // 1.2 MB: many whole pages
  Tensor<float, 1> small(5);
  for (Index i = 0; i < big.size(); ++i) big.data()[i] = float(i % 977) - 300.5f;
  for (Index i = 0; i < small.size(); ++i) small.data()[i] = float(i) + 0.25f;
  SafeTensorsWriter().add("big", big).add("small", small).save(tmp("release.safetensors"));
  const SafeTensors st = SafeTensors::open(tmp("release.safetensors"));
  const ConstTensorMap<float, 2> view = st.view<float, 2>("big");
  EXPECT_TRUE(same_values(st.get<float, 2>("big"), big));
  EXPECT_TRUE(same_values(view, big));  // read again after the release: paged back in from the file
  Tensor<double, 2> as_double(300, 1000);
  st.get_into("big", as_double);
  EXPECT_TRUE(same_values(as_double, big));
  EXPECT_TRUE(same_values(st.get<float, 1>("small"), small));
  EXPECT_TRUE(same_values(st.get<float, 2>("big"), big));
}

TEST(SafeTensors, GetIntoFillsAnExistingTensor) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  Tensor<double, 3> dst(3, 5, 3);
  const double* before = dst.data();
  st.get_into("bf16", dst);
  EXPECT_EQ(dst.data(), before);
  EXPECT_TRUE(same_values(dst, test::load_ref<double, 3>("safetensors", "dtypes_bf16")));
  Tensor<float, 3> wrong(3, 3, 5);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get_into("bf16", wrong); },
                                             {"dtypes.safetensors", "get_into: tensor 'bf16' has shape (3, 5, 3)",
                                              "the destination is (3, 3, 5)"}));
  Tensor<float, 1> ids(5);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get_into("ids", ids); }, {"get_into: tensor 'ids' is I64"}));
}

TEST(SafeTensors, GetChecksRankAndName) {
  const SafeTensors st = SafeTensors::open(ref_file("dtypes.safetensors"));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get<float, 3>("f16"); },
                                             {"dtypes.safetensors", "get: tensor 'f16' has shape (4, 9)",
                                              "expected rank 3"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.info("nope"); },
                                             {"dtypes.safetensors", "has no tensor 'nope'", "it holds 8: 'ids'",
                                              ", ..."}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get<double, 1>("nope"); }, {"no tensor 'nope'"}));
}

TEST(SafeTensors, OpenReportsMissingAndNonRegularFiles) {
  for (bool mmap : {true, false}) {
    const auto o = SafeTensorsOptions().use_mmap(mmap);
    EXPECT_TRUE(test::throws_with<FormatError>([&] { SafeTensors::open(tmp("does_not_exist.safetensors"), o); },
                                               {"cannot open", "does_not_exist.safetensors"}));
  }
  EXPECT_TRUE(test::throws_with<FormatError>([&] { SafeTensors::open(FOVEA_TEST_TMP); }, {"not a regular file"}));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { SafeTensors::open(FOVEA_TEST_TMP, SafeTensorsOptions().use_mmap(false)); }, {"not a regular file"}));
  std::ofstream(tmp("five.safetensors"), std::ios::binary) << "12345";
  for (bool mmap : {true, false})
    EXPECT_TRUE(test::throws_with<FormatError>(
        [&] { SafeTensors::open(tmp("five.safetensors"), SafeTensorsOptions().use_mmap(mmap)); },
        {"five.safetensors", "file is 5 bytes", "8-byte header length"}));
}

// ---- Accepted variations (as the reference accepts them) ----

TEST(SafeTensors, AcceptsPaddingAnyHeaderOrderAndZeroSizedTensors) {
  // Trailing JSON whitespace of every kind, entries out of data order, extra keys ignored as serde does.
  const std::string h =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"z":{"dtype":"U8","shape":[0,5],"data_offsets":[8,8]},)"
      R"("a":{"shape":[2],"data_offsets":[0,8],"dtype":"F32","extra":[1,2]},"__metadata__":null})"
      "\r\n\t  ";
  const SafeTensors st = parse(st_bytes(h, 12));
  ASSERT_EQ(st.tensors().size(), 3u);
  EXPECT_EQ(st.tensors()[0].name, "a");
  EXPECT_EQ(st.tensors()[1].name, "z");
  EXPECT_EQ(st.tensors()[2].name, "b");
  EXPECT_TRUE(st.metadata().empty());
  EXPECT_TRUE(parse(st_bytes("{}", 0)).tensors().empty());
  EXPECT_TRUE(parse(st_bytes(R"({"__metadata__":{}})", 0)).metadata().empty());
  // Sub-byte dtypes: 4 F4 values are 2 bytes; 4 F6 values are 3.
  const SafeTensors sub = parse(st_bytes(
      R"({"p":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"q":{"dtype":"F6_E3M2","shape":[2,2],"data_offsets":[2,5]}})",
      5));
  EXPECT_EQ(sub.info("q").nbytes(), 3u);
}

// ---- Each corruption: the exception type and what the message names ----

TEST(SafeTensors, RejectsAFileShorterThanTheLengthField) {
  EXPECT_TRUE(rejects("", {"file is 0 bytes", "too short"}));
  EXPECT_TRUE(rejects(std::string("\x02\x00\x00", 3), {"file is 3 bytes"}));
}

TEST(SafeTensors, RejectsAHeaderLengthPastTheEnd) {
  std::string s = st_bytes("{}", 0);
  s[0] = 3;
  EXPECT_TRUE(rejects(s, {"header length 3 (file bytes 0-7) runs past the end of the 10-byte file"}));
  s[7] = char(0xff);  // ~2^64: no overflow in the check
  EXPECT_TRUE(rejects(s, {"runs past the end of the 10-byte file"}));
}

TEST(SafeTensors, RejectsAHeaderOverTheLimit) {
  const std::string s = st_bytes(R"({"__metadata__":{"k":"0123456789"}})", 0);
  EXPECT_TRUE(rejects(s, {"header length 35 exceeds the limit of 16 bytes", "max_header_bytes"},
                      SafeTensorsOptions().max_header_bytes(16)));
  EXPECT_EQ(parse(s, SafeTensorsOptions().max_header_bytes(35)).metadata().at("k"), "0123456789");
}

TEST(SafeTensors, RejectsAHeaderThatIsNotAJsonObject) {
  EXPECT_TRUE(rejects(st_bytes("[1, 2]", 0), {"header must begin with '{' at file offset 8, got 0x5b"}));
  EXPECT_TRUE(rejects(st_bytes(" {}", 0), {"must begin with '{'", "got 0x20"}));  // only trailing padding
  EXPECT_TRUE(rejects(st_bytes("", 0), {"must begin with '{'", "empty header"}));
  EXPECT_TRUE(rejects(st_bytes("{\"__metadata__\":{} x}", 0), {"header is not valid JSON at file offset 27", "parse error"}));
  EXPECT_TRUE(rejects(st_bytes("{} {}", 0), {"not valid JSON"}));
  // NUL is not padding (nlohmann's lexer would take it for the end of the input).
  EXPECT_TRUE(rejects(st_bytes(std::string("{}\0\0", 4), 0), {"header is not valid JSON", "NUL byte at file offset 10"}));
  EXPECT_TRUE(rejects(st_bytes(std::string("{}\0 x", 5), 0), {"NUL byte at file offset 10"}));
  EXPECT_TRUE(rejects(st_bytes("{/* c */}", 0), {"not valid JSON"}));
  EXPECT_TRUE(rejects(st_bytes("{\"\xff\":1}", 0), {"not valid JSON"}));  // not UTF-8
}

TEST(SafeTensors, RejectsEntriesMissingAField) {
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor 'w': entry lacks \"dtype\""}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"tensor 'w': entry lacks \"shape\""}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[1]}})", 4), {"tensor 'w': entry lacks \"data_offsets\""}));
}

TEST(SafeTensors, RejectsWrongJsonTypes) {
  auto entry = [](const std::string& body) { return st_bytes("{\"w\":" + body + "}", 4); };
  EXPECT_TRUE(rejects(entry("5"), {"tensor 'w': entry must be a JSON object, got 5"}));
  EXPECT_TRUE(rejects(entry("[1]"), {"tensor 'w': entry must be a JSON object, got [1]"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})"), {"\"dtype\" must be a string, got 32"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})"),
                      {"tensor 'w': \"shape\" must be an array of integers, got \"1\""}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"),
                      {"\"data_offsets\" must be [begin, end], got [0]"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,4]})"), {"must be [begin, end]"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[1],"data_offsets":{"a":0}})"), {"must be [begin, end]"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,"4"]})"),
                      {"\"data_offsets\" [0,\"4\"] end must be a non-negative integer, got \"4\""}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,4]})"),
                      {"\"data_offsets\" [-4,4] begin is negative: -4"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[[1]],"data_offsets":[0,4]})"), {"nest deeper"}));
  EXPECT_TRUE(rejects(entry(R"({"dtype":"F32","shape":[{"a":1}],"data_offsets":[0,4]})"), {"nest deeper"}));
}

TEST(SafeTensors, RejectsAnUnknownDtype) {
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", 4),
                      {"tensor 'w': unknown dtype \"F17\""}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4), {"unknown dtype"}));
}

TEST(SafeTensors, RejectsNegativeOrNonIntegerDimensions) {
  auto shape = [](const std::string& s) {
    return st_bytes(R"({"w":{"dtype":"F32","shape":)" + s + R"(,"data_offsets":[0,4]}})", 4);
  };
  EXPECT_TRUE(rejects(shape("[2,-1]"), {"tensor 'w': \"shape\" [2,-1] dimension 1 is negative: -1"}));
  EXPECT_TRUE(rejects(shape("[1.0]"), {"\"shape\" [1.0] dimension 0 must be a non-negative integer, got 1.0"}));
  EXPECT_TRUE(rejects(shape("[1e0]"), {"dimension 0 must be a non-negative integer"}));
  EXPECT_TRUE(rejects(shape("[true]"), {"dimension 0 must be a non-negative integer, got true"}));
  EXPECT_TRUE(rejects(shape("[18446744073709551616]"), {"must be a non-negative integer"}));  // past u64: a float
  EXPECT_TRUE(rejects(shape("[9223372036854775808]"), {"dimension 0 is 9223372036854775808, past the largest index"}));
}

TEST(SafeTensors, RejectsShapeProductOverflow) {
  // 2^32 * 2^32 wraps to 0 in 64 bits: an unchecked product would accept zero bytes.
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
                      {"tensor 'w': shape (4294967296, 4294967296) overflows the element count"}));
  // Every partial product is checked, even when a later dimension is 0.
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4,0],"data_offsets":[0,0]}})", 0),
                      {"overflows the element count"}));
  // The element count fits, the byte count does not: 2^62 F64 values.
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
                      {"shape (4611686018427387904) of F64 overflows the byte count"}));
}

TEST(SafeTensors, RejectsAByteCountThatDisagreesWithTheShape) {
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
                      {"tensor 'w': shape (2, 3) of F32 needs 24 bytes, but data_offsets [0, 20] hold 20"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
                      {"shape (3) of F4 is 12 bits, not a whole number of bytes"}));
}

TEST(SafeTensors, RejectsBadOffsets) {
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
                      {"tensor 'w': data_offsets [8, 4] end before they begin"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                      {"tensor 'w': data_offsets [4, 8] leave buffer bytes [0, 4) to no tensor"}));
  // A gap between tensors.
  EXPECT_TRUE(rejects(st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                               12),
                      {"tensor 'b': data_offsets [8, 12] leave buffer bytes [4, 8) to no tensor after tensor 'a'"}));
  // Overlap.
  EXPECT_TRUE(rejects(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               12),
                      {"tensor 'b': data_offsets [4, 12] overlap tensor 'a', which ends at 8"}));
  // Two names on the same bytes: the reference refuses tied storage.
  EXPECT_TRUE(rejects(st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                               4),
                      {"overlap tensor 'a'"}));
  // Past the end of the file.
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12),
                      {"tensor 'w': data_offsets [0, 16] run past the end of the file", "holds 12 bytes"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})", 4),
                      {"run past the end of the file"}));
  // Bytes after the last tensor.
  const std::string h = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_TRUE(rejects(st_bytes(h, 6), {"the tensors cover 4 bytes of the 6-byte data buffer; file bytes [",
                                       ") belong to no tensor"}));
  EXPECT_TRUE(rejects(st_bytes("{}", 1), {"the tensors cover 0 bytes of the 1-byte data buffer"}));
}

TEST(SafeTensors, RejectsDuplicateNames) {
  // nlohmann's object would keep the last "w" silently; the reference fails on it too (as an orphaned range).
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                               8),
                      {"duplicate key \"w\" in the header"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4),
                      {"tensor 'w': duplicate key \"dtype\""}));
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":{"k":"a","k":"b"}})", 0), {"__metadata__: duplicate key \"k\""}));
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":{},"__metadata__":{}})", 0), {"duplicate key \"__metadata__\""}));
}

TEST(SafeTensors, RejectsMetadataThatIsNotStringToString) {
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":{"format":"pt","epoch":3}})", 0),
                      {"__metadata__ must map strings to strings, but \"epoch\" holds 3"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":{"k":["a"]}})", 0), {"\"k\" holds [\"a\"]"}));
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":"pt"})", 0), {"__metadata__ must be an object of strings"}));
  // A tensor named "__metadata__" is not a tensor.
  EXPECT_TRUE(rejects(st_bytes(R"({"__metadata__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
                      {"__metadata__ must map strings to strings"}));
}

// Every prefix of a valid file fails cleanly, and every header byte replaced by a handful of values either
// parses or throws FormatError: never a crash, never another exception type (run under the sanitizers too).
TEST(SafeTensors, SurvivesTruncationAndCorruption) {
  const std::string good = file_bytes(ref_file("dtypes.safetensors"));
  ASSERT_GT(good.size(), 1000u);
  for (std::size_t len = 0; len < good.size(); ++len)
    ASSERT_THROW(SafeTensors::from_bytes(good.substr(0, len)), FormatError) << "prefix " << len;
  std::uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  int parsed = 0, refused = 0;
  for (std::size_t at = 0; at < 8 + n; ++at)
    for (int v : {0x00, 0x20, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x5d, 0x7b, 0x7d, 0xc3, 0xff}) {
      std::string s = good;
      if (s[at] == char(v)) continue;
      s[at] = char(v);
      try {
        const SafeTensors st = SafeTensors::from_bytes(std::move(s));
        for (const TensorInfo& t : st.tensors()) {  // whatever parsed must be readable within the file
          ASSERT_LE(t.end, good.size());
          if (t.dtype == Dtype::F32 && t.shape.size() == 4) (void)st.get<float, 4>(t.name);
        }
        ++parsed;
      } catch (const FormatError&) {
        ++refused;
      }
    }
  EXPECT_GT(refused, 0);
  EXPECT_GT(parsed, 0);  // e.g. digits changed inside a name
  // Random bytes in the data buffer never matter to the header.
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    std::string s = good;
    s[8 + n + rng() % (good.size() - 8 - n)] = char(rng());
    EXPECT_EQ(SafeTensors::from_bytes(std::move(s)).tensors().size(), 8u);
  }
}

// ---- Writer ----

TEST(SafeTensorsWriter, ReproducesTheReferenceWriterByteForByte) {
  // Same values as tests/reference/ref_safetensors.py wrote, added in another order.
  SafeTensorsWriter w;
  w.add("a", test::load_ref<float, 2>("safetensors", "writer_a"));
  w.add("z", test::load_ref<double, 2>("safetensors", "writer_z"));
  w.add("b", test::load_ref<float, 1>("safetensors", "writer_b"));
  const Tensor<double, 1> c = test::load_ref<double, 1>("safetensors", "writer_c");
  w.add("c", c.data(), {});  // a scalar
  w.metadata("format", "pt");
  EXPECT_EQ(w.to_bytes(), file_bytes(ref_file("writer.safetensors")));
}

// Known answers from the reference implementation's own tests (safetensors/src/tensor.rs).
TEST(SafeTensorsWriter, MatchesTheReferenceTestVectors) {
  const float v[6] = {0, 1, 2, 3, 4, 5};
  const std::string data(reinterpret_cast<const char*>(v), 24);
  SafeTensorsWriter a;
  a.add("attn.0", v, {1, 2, 3});
  const std::string ha = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(a.to_bytes(), std::string("\x40\0\0\0\0\0\0\0", 8) + ha + data);
  SafeTensorsWriter b;
  b.add("attn0", v, {1, 1, 2, 3});
  const std::string hb = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(b.to_bytes(), std::string("\x48\0\0\0\0\0\0\0", 8) + hb + "       " + data);
  EXPECT_EQ(SafeTensorsWriter().to_bytes(), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  SafeTensorsWriter m;
  m.metadata("framework", "pt");
  EXPECT_EQ(m.to_bytes(), std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

TEST(SafeTensorsWriter, RoundTripsFloatAndDoubleOfEveryRank) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  Tensor<float, 4> x(2, 3, 5, 7);
  Tensor<double, 3> y(3, 1, 9);
  Tensor<float, 1> z(5);
  Tensor<double, 2> e(0, 4);
  Tensor<float, 0> s;
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(nd(rng));
  for (Index i = 0; i < y.size(); ++i) y.data()[i] = nd(rng) * 1e-200;
  for (Index i = 0; i < z.size(); ++i) z.data()[i] = float(i) - 2;
  s() = -0.0f;
  SafeTensorsWriter w;
  w.add("x", x).add("y", y).add("z", z).add("e", e).add("ünï \"q\"\n", s);
  w.metadata("format", "pt").metadata("b", "two\nlines");
  w.save(tmp("roundtrip.safetensors"));
  const SafeTensors st = SafeTensors::open(tmp("roundtrip.safetensors"));
  std::vector<std::string> order;
  for (const TensorInfo& t : st.tensors()) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"e", "y", "x", "z", "ünï \"q\"\n"}));  // F64 first, then by name
  EXPECT_EQ(st.info("y").dtype, Dtype::F64);
  EXPECT_EQ(st.info("x").dtype, Dtype::F32);
  EXPECT_TRUE(same_values(st.view<float, 4>("x"), x));
  EXPECT_TRUE(same_values(st.view<double, 3>("y"), y));
  EXPECT_TRUE(same_values(st.get<float, 1>("z"), z));
  EXPECT_EQ((st.get<double, 2>("e").dimension(0)), 0);
  EXPECT_TRUE(std::signbit(st.get<float, 0>("ünï \"q\"\n")()));
  EXPECT_EQ(st.metadata().at("b"), "two\nlines");
  EXPECT_EQ(st.metadata().at("format"), "pt");
  EXPECT_EQ(st.tensors().front().begin % 8, 0u);  // header padded to 8
  EXPECT_EQ(file_bytes(tmp("roundtrip.safetensors")), w.to_bytes());
}

TEST(SafeTensorsWriter, RejectsBadNames) {
  Tensor<float, 1> t(2);
  t.setZero();
  SafeTensorsWriter w;
  w.add("a", t);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { w.add("a", t); }, {"SafeTensorsWriter::add", "duplicate", "'a'"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { w.add("__metadata__", t); }, {"'__metadata__' is reserved"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { w.add("bad\xff", t); }, {"tensor name is not valid UTF-8"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { w.metadata("k", "\xc3"); }, {"metadata value is not valid UTF-8"}));
  const float v[2] = {1, 2};
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { w.add("n", v, {-1, 2}); }, {"'n'", "negative", "(-1, 2)"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { w.save(tmp("no_such_dir/x.safetensors")); },
                                             {"cannot open", "no_such_dir/x.safetensors"}));
}

}  // namespace test_safetensors
