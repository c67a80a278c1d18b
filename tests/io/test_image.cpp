// decode_image against PIL (tests/reference/ref_image.py): PNG pixel for pixel, JPEG within a measured
// tolerance; malformed, truncated, corrupted and oversized inputs throw FormatError and never crash.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "common/reference.hpp"
#include "fovea/io/image.hpp"

namespace test_image {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

std::string data_path(const std::string& file) { return std::string(FOVEA_REF_DIR) + "/image/" + file; }

std::string file_bytes(const std::string& file) { return detail::read_file_bytes(data_path(file), "test"); }

// An (H, W, 3) uint8 .npy written by ref_image.py ('|u1', which read_npy does not take).
Image load_u8(const std::string& name) {
  const std::string b = detail::read_file_bytes(data_path(name + ".npy"), "test");
  const detail::NpyHeader h = detail::parse_npy_header(b.data(), b.size(), name);
  if (h.descr != "|u1" || h.shape.size() != 3 || h.shape[2] != 3)
    throw std::runtime_error(name + ": expected a (H, W, 3) uint8 array, got " + h.descr + " " + detail::dims_str(h.shape));
  Image img(h.shape[0], h.shape[1]);
  if (b.size() - h.data_offset != img.pixels.size()) throw std::runtime_error(name + ": wrong data size");
  std::memcpy(img.pixels.data(), b.data() + h.data_offset, img.pixels.size());
  return img;
}

std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

struct Diff {
  int max = 0;
  Index differing = 0;
  double mean = 0;
};

Diff compare(const Image& a, const Image& b) {
  Diff d;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    d.max = std::max(d.max, e);
    d.differing += e != 0;
    d.mean += e;
  }
  d.mean /= double(a.pixels.size());
  return d;
}

TEST(DecodeImage, PngMatchesPilPixelForPixel) {
  // Every PNG colour type PIL reads: grey, grey + alpha, palette + tRNS, 1-bit, 16-bit grey (PIL clips it to
  // 255), 16-bit grey + alpha and RGB (high byte), RGB.
  for (const char* stem : {"grey_37x53", "la_31x23", "pal_29x19", "bits1_13x11", "grey16_11x7", "la16_5x3", "rgb16_9x5",
                           "small_20x30"}) {
    const Image got = decode_image(data_path(std::string(stem) + ".png"));
    const Image want = load_u8(std::string("decode_") + stem + "_png");
    ASSERT_EQ(got.size(), want.size()) << stem;
    const Diff d = compare(got, want);
    EXPECT_EQ(d.differing, 0) << stem << ": " << d.differing << " values differ, max " << d.max;
  }
  // The two large ones are stored as PIL's CRC-32 of each decoded row.
  for (const char* stem : {"rgb_300x201", "rgba_257x511"}) {
    const Image got = decode_image(data_path(std::string(stem) + ".png"));
    const auto crc = read_npy<double, 1>(data_path(std::string("decode_") + stem + "_png_rowcrc.npy"));
    ASSERT_EQ(got.height, crc.dimension(0)) << stem;
    Index bad = 0;
    for (Index y = 0; y < got.height; ++y) bad += double(crc32(got.row(y), std::size_t(got.width * 3))) != crc(y);
    EXPECT_EQ(bad, 0) << stem << ": " << bad << " rows differ from PIL's";
  }
  // RGBA: alpha is dropped, not composited (the band with alpha 0 keeps its colour).
  const Image rgba = decode_image(data_path("rgba_257x511.png"));
  EXPECT_EQ(rgba.width, 257);
  EXPECT_EQ(rgba.height, 511);
  EXPECT_GT(int(rgba.at(220, 10, 2)), 0);
}

TEST(DecodeImage, JpegWithinMeasuredToleranceOfPil) {
  // stb and libjpeg-turbo (PIL) differ in IDCT rounding, chroma upsampling and YCbCr -> RGB fixed point.
  // Measured here: 4:2:0 photo max 3 (mean 0.10, 7% of values differ), grey max 1, progressive 4:4:4 max 2,
  // CMYK max 1. The bound is 4 grey levels and a mean under 1 for every file.
  struct Case {
    const char* file;
    const char* ref;
  };
  for (const Case& c : {Case{"photo_160x120.jpg", "decode_photo_160x120_jpg"}, Case{"grey_37x53.jpg", "decode_grey_37x53_jpg"},
                        Case{"prog_64x48.jpg", "decode_prog_64x48_jpg"}, Case{"cmyk_24x16.jpg", "decode_cmyk_24x16_jpg"}}) {
    const Image got = decode_image(data_path(c.file));
    const Image want = load_u8(c.ref);
    ASSERT_EQ(got.size(), want.size()) << c.file;
    const Diff d = compare(got, want);
    EXPECT_LE(d.max, 4) << c.file;
    EXPECT_LT(d.mean, 1.0) << c.file;
    std::printf("  %-20s max diff %d, mean %.3f, %.1f%% of values differ\n", c.file, d.max, d.mean,
                100.0 * double(d.differing) / double(got.pixels.size()));
  }
}

TEST(DecodeImage, BytesAndPathAgreeAndPngRoundTrips) {
  const std::string bytes = file_bytes("small_20x30.png");
  const Image a = decode_image(data_path("small_20x30.png"));
  const Image b = decode_image_bytes(bytes, "small");
  EXPECT_EQ(a.pixels, b.pixels);
  const Image c = decode_image_bytes(encode_png(a));
  EXPECT_EQ(a.size(), c.size());
  EXPECT_EQ(a.pixels, c.pixels);  // PNG is lossless
  const std::string tmp = std::string(FOVEA_TEST_TMP) + "/roundtrip.png";
  write_png(tmp, a);
  EXPECT_EQ(decode_image(tmp).pixels, a.pixels);
}

// A PNG of the given declared size: signature, a valid IHDR (with its CRC) and IEND, no pixel data.
static std::string png_header_only(std::uint32_t w, std::uint32_t h) {
  auto be32 = [](std::uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  };
  const std::string ihdr = "IHDR" + be32(w) + be32(h) + std::string{8, 2, 0, 0, 0};
  auto crc = [](const std::string& s) { return crc32(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()); };
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc(ihdr)) + be32(0) + "IEND" +
         be32(crc("IEND"));
}

TEST(DecodeImage, RejectsBadInputWithClearErrors) {
  auto bad = [](const std::string& bytes, std::initializer_list<const char*> frags, Index max_pixels = kDefaultMaxImagePixels) {
    return test::throws_with<FormatError>([&] { decode_image_bytes(bytes, "input.png", max_pixels); }, frags);
  };
  EXPECT_TRUE(bad("", {"decode_image", "'input.png'", "empty"}));
  EXPECT_TRUE(bad("hello, this is not an image at all", {"'input.png'", "not a JPEG or PNG", "signature"}));
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& ch : noise) ch = char(rng());
  EXPECT_TRUE(bad(noise, {"'input.png'", "not a JPEG or PNG"}));
  EXPECT_TRUE(bad(std::string("\xff\xd8\xff\xe0garbage", 11), {"'input.png'", "corrupt or unsupported JPEG header",
                                                                  "stb_image"}));
  // Truncated: the signature alone, then header without pixel data.
  const std::string png = file_bytes("small_20x30.png");
  EXPECT_TRUE(bad(png.substr(0, 8), {"'input.png'", "corrupt or unsupported PNG header", "stb_image"}));
  EXPECT_TRUE(bad(png_header_only(20, 30), {"'input.png'", "corrupt or truncated", "stb_image"}));
  EXPECT_TRUE(bad(png.substr(0, png.size() / 2), {"'input.png'", "corrupt or truncated"}));
  // A hostile header: 100000 x 100000 is refused before any allocation, naming the limit; a small limit too.
  EXPECT_TRUE(bad(png_header_only(100000, 100000), {"'input.png'", "100000 x 100000", "10000000000 pixels",
                                                     "limit of 178956970", "max_pixels"}));
  EXPECT_TRUE(bad(png, {"20 x 30 = 600 pixels", "limit of 599"}, 599));
  EXPECT_NO_THROW(decode_image_bytes(png, "ok", 600));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { decode_image_bytes(png, "ok", 0); }, {"max_pixels must be >= 1"}));
  // The same for JPEG: patch the SOF0 height and width to 65000 x 65000.
  std::string jpg = file_bytes("photo_160x120.jpg");
  const std::size_t sof = jpg.find("\xff\xc0", 2);
  ASSERT_NE(sof, std::string::npos);
  jpg[sof + 5] = jpg[sof + 7] = char(0xfd);
  jpg[sof + 6] = jpg[sof + 8] = char(0xe8);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image_bytes(jpg, "x.jpg"); },
                                             {"'x.jpg'", "65000 x 65000", "max_pixels"}));
  // Files: missing, empty.
  EXPECT_TRUE(test::throws_with<FormatError>([] { decode_image("/nonexistent/dir/x.png"); },
                                             {"decode_image", "cannot open", "/nonexistent/dir/x.png"}));
  const std::string empty = std::string(FOVEA_TEST_TMP) + "/empty.png";
  std::ofstream(empty, std::ios::binary).close();
  EXPECT_TRUE(test::throws_with<FormatError>([&] { decode_image(empty); }, {empty.c_str(), "empty (0 bytes)"}));
  // Encoders refuse an empty or inconsistent image.
  EXPECT_TRUE(test::throws_with<ShapeError>([] { encode_png(Image()); }, {"encode_png", "empty image (0, 0)"}));
  Image broken(2, 2);
  broken.pixels.resize(5);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { encode_png(broken); }, {"encode_png", "(2, 2)", "holds 5 bytes"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Image(-1, 3); }, {"Image", "negative"}));
}

TEST(DecodeImage, TruncatedAndCorruptedFilesThrowOrDecodeNeverCrash) {
  // Every outcome must be a decoded image of the declared size or a FormatError; a crash, hang or other
  // exception fails (run under -DFOVEA_SANITIZE=ON to also catch out-of-bounds reads).
  std::mt19937 rng(1234);
  Index decoded = 0, rejected = 0;
  // A flipped size byte can declare a large image; the ceiling keeps each attempt fast.
  auto attempt = [&](const std::string& bytes) {
    try {
      const Image img = decode_image_bytes(bytes, "fuzz", 1 << 16);
      ASSERT_EQ(img.pixels.size(), std::size_t(img.height * img.width * 3));
      ++decoded;
    } catch (const FormatError&) {
      ++rejected;
    }
  };
  for (const char* file : {"small_20x30.png", "la_31x23.png", "pal_29x19.png", "grey16_11x7.png", "prog_64x48.jpg",
                           "photo_160x120.jpg", "grey_37x53.jpg"}) {
    const std::string good = file_bytes(file);
    const std::size_t step = std::max<std::size_t>(1, good.size() / 150);
    for (std::size_t n = 0; n < good.size(); n += step) attempt(good.substr(0, n));
    for (int t = 0; t < 300; ++t) {
      std::string b = good;
      const int flips = 1 + int(rng() % 4);
      for (int f = 0; f < flips; ++f) b[rng() % b.size()] ^= char(1 + rng() % 255);
      attempt(b);
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(decoded, 0);
  std::printf("  fuzz: %ld decoded, %ld rejected with FormatError\n", long(decoded), long(rejected));
}

}  // namespace test_image
