// ReadLimits: every size a file declares is checked against the file's length and against the ceilings before
// anything is allocated for it; exceeding a ceiling is a FormatError naming the file, the field and the numbers.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "common/reference.hpp"
#include "fovea/io/image.hpp"
#include "fovea/io/limits.hpp"
#include "fovea/io/npy.hpp"
#include "fovea/io/preprocess.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/weights.hpp"

namespace test_limits {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

std::string tmp(const std::string& name) { return std::string(FOVEA_TEST_TMP) + "/limits_" + name; }
std::string image_file(const std::string& name) { return std::string(FOVEA_REF_DIR) + "/image/" + name; }

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A safetensors file from its header text and `data` zero bytes.
std::string st_bytes(const std::string& header, std::size_t data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((std::uint64_t(header.size()) >> (8 * i)) & 0xff);
  return s + header + std::string(data, '\0');
}

// A version 1.0 .npy file of the dict `dict` and `data` bytes of data.
std::string npy_bytes(const std::string& dict, std::size_t data) {
  std::string s("\x93NUMPY\x01\x00", 8);
  s += char(dict.size() & 0xff);
  s += char(dict.size() >> 8);
  return s + dict + std::string(data, '\0');
}

std::string be32(std::uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

// A PNG of the given IHDR and one IDAT chunk holding `idat` (CRCs left zero: stb does not check them).
std::string png(std::uint32_t w, std::uint32_t h, int depth, int color, const std::string& idat) {
  const std::string ihdr = be32(w) + be32(h) + std::string{char(depth), char(color), 0, 0, 0};
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + ihdr + be32(0) + be32(std::uint32_t(idat.size())) +
         "IDAT" + idat + be32(0) + be32(0) + "IEND" + be32(0);
}

TEST(ReadLimits, DefaultsAcceptWhatTheReferenceLibrariesAccept) {
  const ReadLimits d;
  EXPECT_EQ(d.max_tensor_bytes(), std::uint64_t(16) << 30);
  EXPECT_EQ(d.max_header_bytes(), 100'000'000u);  // the safetensors reference reader's limit
  EXPECT_EQ(d.max_image_pixels(), 2u * 89478485u);  // where PIL raises DecompressionBombError
  const ReadLimits l = ReadLimits().max_tensor_bytes(10).max_header_bytes(20).max_image_pixels(30);
  EXPECT_EQ(l.max_tensor_bytes(), 10u);
  EXPECT_EQ(l.max_header_bytes(), 20u);
  EXPECT_EQ(l.max_image_pixels(), 30u);
  EXPECT_TRUE(test::throws_with<ShapeError>([] { ReadLimits().max_tensor_bytes(0); },
                                            {"ReadLimits::max_tensor_bytes", ">= 1", "got 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { ReadLimits().max_image_pixels(0); }, {"max_image_pixels"}));
}

// The variables are read once per process by ReadLimits(); env_limit is what reads them.
TEST(ReadLimits, EnvironmentVariablesAreWholeNumbersOrAnError) {
  const char* var = "FOVEA_TEST_LIMIT_VARIABLE";
  ::unsetenv(var);
  EXPECT_EQ(detail::env_limit(var, 77), 77u);
  ::setenv(var, "1048576", 1);
  EXPECT_EQ(detail::env_limit(var, 77), 1048576u);
  for (const char* bad : {"", "0", "-5", "12x", "1e9", " 5", "99999999999999999999"}) {
    ::setenv(var, bad, 1);
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::env_limit(var, 77); },
                                              {"FOVEA_TEST_LIMIT_VARIABLE", "whole number"}))
        << "'" << bad << "'";
  }
  ::unsetenv(var);
}

TEST(ReadLimits, SafeTensorsHeaderAndTensorCeilings) {
  // 4 F16 values: 8 bytes in the file, 16 as float, 32 as double.
  const std::string header = R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}})";
  const std::string file = st_bytes(header, 8);
  auto open = [&](const ReadLimits& l) {
    return SafeTensors::from_bytes(file, "w.safetensors", SafeTensorsOptions().limits(l));
  };
  EXPECT_TRUE(test::throws_with<FormatError>([&] { open(ReadLimits().max_header_bytes(header.size() - 1)); },
                                             {"w.safetensors", "header length 56", "limit of 55",
                                              "ReadLimits::max_header_bytes"}));
  EXPECT_NO_THROW(open(ReadLimits().max_header_bytes(header.size())));
  const SafeTensors st = open(ReadLimits().max_tensor_bytes(16));
  EXPECT_EQ(st.limits().max_tensor_bytes(), 16u);
  EXPECT_NO_THROW((st.get<float, 2>("h")));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get<double, 2>("h"); },
                                             {"w.safetensors", "get", "tensor 'h'", "(2, 2)", "double",
                                              "4 x 8 = 32 bytes", "limit of 16", "ReadLimits::max_tensor_bytes"}));
  Tensor<double, 2> into(2, 2);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { st.get_into("h", into); }, {"get_into", "limit of 16"}));
  // The old setter still works, alone or after limits().
  EXPECT_EQ(SafeTensorsOptions().limits(ReadLimits().max_header_bytes(5)).max_header_bytes(9).max_header_bytes(), 9u);
}

TEST(ReadLimits, SafeTensorsRankIsBoundedWhileTheHeaderIsParsed) {
  auto header = [](std::size_t rank) {
    std::string shape;
    for (std::size_t i = 0; i < rank; ++i) shape += i ? ",1" : "1";
    return R"({"t":{"dtype":"F32","shape":[)" + shape + R"(],"data_offsets":[0,4]}})";
  };
  const SafeTensors ok = SafeTensors::from_bytes(st_bytes(header(kMaxSafeTensorsRank), 4), "r.safetensors");
  EXPECT_EQ(ok.info("t").shape.size(), kMaxSafeTensorsRank);
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { SafeTensors::from_bytes(st_bytes(header(kMaxSafeTensorsRank + 1), 4), "r.safetensors"); },
      {"r.safetensors", "tensor 't'", "more than 64 values"}));
  // A zero-size tensor with a million dimensions is refused at dimension 65, not held.
  std::string zeros = R"({"z":{"dtype":"F32","shape":[0)";
  for (int i = 0; i < 1000000; ++i) zeros += ",0";
  zeros += R"(],"data_offsets":[0,0]}})";
  EXPECT_TRUE(test::throws_with<FormatError>([&] { SafeTensors::from_bytes(st_bytes(zeros, 0), "z"); },
                                             {"tensor 'z'", "more than 64 values"}));
}

// A tensor with no elements has no data to bound its other dimensions; they are held to what the file could hold.
TEST(ReadLimits, DimensionsOfEmptyTensorsAreBoundedByTheFilesLength) {
  auto st = [](const std::string& shape) {
    return st_bytes(R"({"z":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})", 0);
  };
  const std::string ok = st("[0,64]");
  EXPECT_EQ(SafeTensors::from_bytes(ok, "z").info("z").shape[1], 64);
  const std::string big = st("[1099511627776,0]");
  EXPECT_TRUE(test::throws_with<FormatError>([&] { SafeTensors::from_bytes(big, "z.safetensors"); },
                                             {"z.safetensors", "tensor 'z'", "(1099511627776, 0)",
                                              "dimension of 1099511627776", "a 76-byte file can hold"}));
  const std::string npy = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 100000000), }", 0);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { read_npy_bytes<float>(npy, "z.npy"); },
                                             {"'z.npy'", "(0, 100000000)", "dimension of 100000000", "byte file"}));
  EXPECT_EQ(read_npy_bytes<float>(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", 0), "z")
                .shape[1],
            5);
}

TEST(ReadLimits, NpyHeaderAndTensorCeilingsInMemoryAndOnDisk) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string file = npy_bytes(dict, 24);
  EXPECT_NO_THROW(read_npy_bytes<float>(file, "a.npy", ReadLimits().max_tensor_bytes(24)));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { read_npy_bytes<double>(file, "a.npy", ReadLimits().max_tensor_bytes(47)); },
      {"read_npy", "'a.npy'", "(2, 3)", "double", "6 x 8 = 48 bytes", "limit of 47", "ReadLimits::max_tensor_bytes"}));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { read_npy_bytes<float>(file, "a.npy", ReadLimits().max_header_bytes(dict.size() - 1)); },
      {"'a.npy'", "header length", "exceeds the limit", "ReadLimits::max_header_bytes"}));
  write_file(tmp("a.npy"), file);
  EXPECT_EQ(read_npy_array<float>(tmp("a.npy")).values.size(), 6u);
  EXPECT_EQ((read_npy<double, 2>(tmp("a.npy")).dimension(1)), 3);
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { read_npy_array<double>(tmp("a.npy"), ReadLimits().max_tensor_bytes(47)); }, {"a.npy", "limit of 47"}));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { read_npy<float, 2>(tmp("a.npy"), ReadLimits().max_tensor_bytes(23)); }, {"a.npy", "limit of 23"}));
  // A header declaring 10^12 elements in a short file: the file's length refuses it (nothing is read past
  // the header, so nothing is allocated for it).
  write_file(tmp("huge.npy"), npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }", 16));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { read_npy_array<double>(tmp("huge.npy")); },
                                             {"huge.npy", "(1000000, 1000000)", "needs", "the file holds 16 bytes"}));
  // A version 2.0 header length of 4 GiB - 1 in a 20-byte file.
  std::string v2("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12);
  write_file(tmp("v2.npy"), v2 + "12345678");
  EXPECT_TRUE(test::throws_with<FormatError>([&] { read_npy_array<float>(tmp("v2.npy")); },
                                             {"v2.npy", "header length 4294967295 runs past the end of the 20-byte file"}));
}

// A pipe has no length to check first: it is read whole, then checked the same way.
TEST(ReadLimits, NpyFromAPipe) {
  const std::string fifo = tmp("pipe.npy");
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string file = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 24);
  std::thread writer([&] { write_file(fifo, file); });
  const NpyArray<float> a = read_npy_array<float>(fifo);
  writer.join();
  EXPECT_EQ(a.shape, std::vector<Index>{3});
  EXPECT_TRUE(a.was_double);
  std::thread writer2([&] { write_file(fifo, file); });
  EXPECT_TRUE(test::throws_with<FormatError>([&] { read_npy_array<double>(fifo, ReadLimits().max_tensor_bytes(8)); },
                                             {"pipe.npy", "limit of 8"}));
  writer2.join();
  ::unlink(fifo.c_str());
}

TEST(ReadLimits, ImagePixelCeiling) {
  const std::string png_file = detail::read_file_bytes(image_file("small_20x30.png"), "test");
  EXPECT_NO_THROW(decode_image_bytes(png_file, "s.png", ReadLimits().max_image_pixels(600)));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { decode_image_bytes(png_file, "s.png", ReadLimits().max_image_pixels(599)); },
      {"'s.png'", "20 x 30 = 600 pixels", "limit of 599", "ReadLimits::max_image_pixels"}));
  write_file(tmp("s.png"), png_file);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image(tmp("s.png"), ReadLimits().max_image_pixels(599)); },
                                             {"limit of 599"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { decode_image(tmp("s.png"), Index(0)); }, {"max_pixels must be >= 1"}));
}

// Sizes a file's bytes cannot encode are refused before stb allocates for them.
TEST(ReadLimits, ImageDimensionsAgainstTheFilesLength) {
  // A JPEG's SOF patched from 160 x 120 to 4000 x 4000: 250000 luma blocks need at least 31250 bytes.
  std::string jpg = detail::read_file_bytes(image_file("photo_160x120.jpg"), "test");
  const std::size_t sof = jpg.find("\xff\xc0", 2);
  ASSERT_NE(sof, std::string::npos);
  jpg[sof + 5] = jpg[sof + 7] = char(4000 >> 8);
  jpg[sof + 6] = jpg[sof + 8] = char(4000 & 0xff);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image_bytes(jpg, "big.jpg"); },
                                             {"'big.jpg'", "corrupt or truncated JPEG", "4000 x 4000",
                                              "250000 8x8 blocks", "at least 31250 bytes", "5741 bytes"}));
  // A PNG declaring 5000 x 5000 RGB over 100 bytes of IDAT: 75 MB of rows, at most 104224 inflated bytes.
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image_bytes(png(5000, 5000, 8, 2, std::string(100, 'x')), "b.png"); },
                                             {"'b.png'", "corrupt or truncated PNG", "5000 x 5000", "24 bits",
                                              "IDAT chunks hold 100 bytes", "at most 104224 bytes"}));
  // 1-bit grey at the deflate bound passes the check (and then fails in stb on the junk data instead).
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image_bytes(png(8000, 100, 1, 0, std::string(100, 'x')), "c.png"); },
                                             {"'c.png'", "corrupt or truncated (stb_image"}));
}

// A deflate bomb: a 1 x 1 PNG whose IDAT inflates to 8 MiB. stb would grow its buffer for all of it; the
// budget from the declared size (64 bytes a padded pixel + 4x the file + 1 MiB) stops it.
TEST(ReadLimits, ImageDecodeBudgetStopsADeflateBomb) {
  std::vector<unsigned char> zeros(std::size_t(8) << 20, 0);
  int n = 0;
  unsigned char* z = stbi_zlib_compress(zeros.data(), int(zeros.size()), &n, 8);
  ASSERT_NE(z, nullptr);
  const std::string idat(reinterpret_cast<const char*>(z), std::size_t(n));
  std::free(z);
  ASSERT_LT(idat.size(), std::size_t(100000));  // a small file
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image_bytes(png(1, 1, 8, 0, idat), "bomb.png"); },
                                             {"'bomb.png'", "needs more memory than its declared size 1 x 1 allows",
                                              "inflates past the image"}));
  // The budget is per decode: an ordinary image right after decodes.
  const Image img = decode_image_bytes(detail::read_file_bytes(image_file("small_20x30.png"), "test"), "ok.png");
  EXPECT_EQ(img.height, 30);
}

TEST(ReadLimits, ConfigLengthAndNesting) {
  const std::string cfg = R"({"hidden_size": 768})";
  EXPECT_EQ(*parse_hf_vision_config(cfg, "c.json", ReadLimits().max_header_bytes(cfg.size())).hidden_size, 768);
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { parse_hf_vision_config(cfg, "c.json", ReadLimits().max_header_bytes(cfg.size() - 1)); },
      {"c.json", "20 bytes of JSON", "limit of 19", "ReadLimits::max_header_bytes"}));
  write_file(tmp("config.json"), cfg);
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { read_hf_vision_config(tmp("config.json"), ReadLimits().max_header_bytes(10)); },
      {"config.json", "the file is 20 bytes", "limit of 10"}));
  auto nested = [](int levels) {
    return R"({"x": )" + std::string(std::size_t(levels), '[') + std::string(std::size_t(levels), ']') + "}";
  };
  EXPECT_NO_THROW(parse_hf_vision_config(nested(kMaxConfigDepth - 1), "deep.json"));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { parse_hf_vision_config(nested(kMaxConfigDepth), "deep.json"); },
                                             {"deep.json", "nests deeper than 64 levels"}));
  // A million levels: refused at level 64, not parsed into a million-deep document.
  EXPECT_TRUE(test::throws_with<FormatError>([&] { parse_hf_vision_config(nested(1000000), "deep.json"); },
                                             {"nests deeper"}));
}

TEST(ReadLimits, ModelMustFitInTheFilesWeights) {
  const std::string file = st_bytes(
      R"({"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I8","shape":[8],"data_offsets":[12,20]}})",
      20);
  const SafeTensors st = SafeTensors::from_bytes(file, "m.safetensors");
  // 6 floating-point elements (the I8 tensor holds no weights a model can load): a model of up to
  // 4 * 6 + 2^22 elements is left to the loader's per-tensor message, one more is refused.
  const Index most = 4 * 6 + (Index(1) << 22);
  EXPECT_NO_THROW(check_model_fits(st, {{"w", {2, 3}}}, "Model(small)"));
  EXPECT_NO_THROW(check_model_fits(st, {{"w", {5}}, {"z", {0, 1000000}}}, "Model(small)"));
  EXPECT_NO_THROW(check_model_fits(st, {{"w", {2, 3}}, {"fc.weight", {most - 6}}}, "Model(x)"));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { check_model_fits(st, {{"w", {2, 3}}, {"fc.weight", {most - 5}}}, "Model(x)"); },
      {"load weights: m.safetensors cannot hold Model(x)", "2 tensors need 4194329 elements",
       "'fc.weight', 4194323", "hold 6 in all (at most 4 times that plus 4194304", "not built"}));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { check_model_fits(st, {{"fc.weight", {Index(1) << 40, Index(1) << 40}}}, "Model(x)"); },
      {"more than 2^63", "'fc.weight', over 2^63"}));
}

// resize_center_crop computes only the crop of a resize: pixel for pixel the same as resizing, then cropping.
TEST(ResizeCenterCrop, EqualsResizeThenCrop) {
  std::mt19937 rng(99);
  const Resample filters[] = {Resample::nearest, Resample::box,     Resample::bilinear,
                              Resample::hamming, Resample::bicubic, Resample::lanczos};
  for (int t = 0; t < 60; ++t) {
    Image img(1 + Index(rng() % 40), 1 + Index(rng() % 40));
    for (auto& p : img.pixels) p = std::uint8_t(rng());
    const Size2 size(1 + Index(rng() % 50), 1 + Index(rng() % 50));
    const Size2 crop(1 + Index(rng() % size.h), 1 + Index(rng() % size.w));
    const Resample r = filters[rng() % 6];
    for (CropRounding rounding : {CropRounding::half_even, CropRounding::floor}) {
      const Image want = center_crop(resize(img, size, r), crop, rounding);
      const Image got = resize_center_crop(img, size, crop, r, rounding);
      ASSERT_EQ(got.pixels, want.pixels) << "image " << img.height << "x" << img.width << " size " << size.h << "x"
                                         << size.w << " crop " << crop.h << "x" << crop.w << " filter "
                                         << resample_name(r);
    }
  }
  Image img(3, 3);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { resize_center_crop(img, {4, 4}, {5, 4}); },
                                            {"resize_center_crop", "(4, 4)", "(5, 4)", "(3, 3)"}));
}

// An extreme aspect ratio: CLIP's shortest-edge resize of a 2 x 3000 image is 224 x 336000 (75 million pixels,
// 226 MB); preprocessing computes only its 224 x 224 crop, equal to the crop of the whole resize.
TEST(ResizeCenterCrop, PreprocessingAThinImageCostsOnlyTheCrop) {
  Image thin(2, 300);
  for (std::size_t i = 0; i < thin.pixels.size(); ++i) thin.pixels[i] = std::uint8_t(i * 7);
  const Size2 full = shortest_edge_size(thin.size(), 224);
  ASSERT_EQ(full, Size2(224, 33600));
  const Image want = center_crop(resize(thin, full), 224, CropRounding::floor);
  EXPECT_TRUE(test::all_close(preprocess_clip(thin), to_tensor(want, kClipMean, kClipStd), 0, 0));
  Image thinner(2, 3000);
  const Tensor<float, 4> x = preprocess_clip(thinner);
  EXPECT_EQ(x.dimension(2), 224);
  EXPECT_EQ(x.dimension(3), 224);
}

}  // namespace test_limits
