#pragma once
// Images: decode JPEG / PNG (stb_image) to 8-bit RGB as PIL's Image.open(f).convert("RGB") does (PNG exactly,
// JPEG within a few grey levels: see decode_image_bytes), and encode PNG (stb_image_write) for tests and tools.
// (stb_image_write's JPEG encoder is not exposed: it left-shifts negative ints, which -fsanitize=undefined
// rejects.)
//
// stb's implementation is compiled into every translation unit that includes this header as a private static
// copy (STB_IMAGE_STATIC), so there is nothing to link and no clash with a copy of your own. If you include
// <stb_image.h> yourself before this header, fovea uses your declarations instead, and the usual stb rule
// applies: one of your translation units defines STB_IMAGE_IMPLEMENTATION (before including any fovea header);
// your copy's global settings (stbi_set_flip_vertically_on_load, ...) then apply to fovea's decoding too.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/limits.hpp"
#include "fovea/io/npy.hpp"

namespace fovea::detail {

// Every allocation of fovea's own stb copy goes through these, so decode_image_bytes can give each decode a
// budget from the image's declared size: stb's PNG inflater otherwise grows its output buffer for as long as
// the compressed stream goes on (up to 4 GiB), whatever the header says. The budget counts every byte asked
// for (a realloc counts its new size), so it also bounds the total a decode can request. thread_local: each
// thread decodes on its own budget.
struct StbBudget {
  std::size_t left = std::numeric_limits<std::size_t>::max();
  bool exceeded = false;
};
inline StbBudget& stb_budget() {
  static thread_local StbBudget b;
  return b;
}
inline bool stb_take(std::size_t n) {
  StbBudget& b = stb_budget();
  if (n > b.left) {
    b.exceeded = true;
    return false;
  }
  b.left -= n;
  return true;
}
// Zeroed: stb 2.27 decodes a progressive JPEG scan with a Huffman table no DHT segment defined, reading that
// table from the uninitialised decoder struct; garbage there indexed a 256-entry symbol array at 629 (fuzz_image).
// Zeroed, such a table matches no code and the decode fails cleanly.
inline void* stb_malloc(std::size_t n) { return stb_take(n) ? std::calloc(1, n) : nullptr; }
inline void* stb_realloc(void* p, std::size_t n) { return stb_take(n) ? std::realloc(p, n) : nullptr; }

}  // namespace fovea::detail

// stb is third-party C: its warnings are not ours to fix, whatever flags the including project uses.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#if defined(__clang__)
#pragma GCC diagnostic ignored "-Wunknown-warning-option"
#pragma GCC diagnostic ignored "-Wcomma"
#pragma GCC diagnostic ignored "-Wextra-semi-stmt"
#endif
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wzero-as-null-pointer-constant"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#pragma GCC diagnostic ignored "-Wduplicated-branches"
#endif

#ifndef STBI_INCLUDE_STB_IMAGE_H
#define FOVEA_STB_BUDGET 1  // fovea's own copy: its allocations are budgeted (see StbBudget)
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_MALLOC(sz) ::fovea::detail::stb_malloc(sz)
#define STBI_REALLOC(p, newsz) ::fovea::detail::stb_realloc(p, newsz)
#define STBI_FREE(p) std::free(p)
#if __has_include(<stb_image.h>)
#include <stb_image.h>
#else
#include <stb/stb_image.h>
#endif
#undef STB_IMAGE_STATIC
#undef STB_IMAGE_IMPLEMENTATION
#undef STBI_ONLY_PNG
#undef STBI_ONLY_JPEG
#undef STBI_MALLOC
#undef STBI_REALLOC
#undef STBI_FREE
#undef STBIDEF
#endif

#ifndef INCLUDE_STB_IMAGE_WRITE_H
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if __has_include(<stb_image_write.h>)
#include <stb_image_write.h>
#else
#include <stb/stb_image_write.h>
#endif
#undef STB_IMAGE_WRITE_STATIC
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#undef STBIWDEF
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace fovea {

// An 8-bit RGB image, (height, width, 3) interleaved, rows top to bottom: PIL's "RGB" mode and the layout of
// np.array(pil_image).
struct Image {
  Index height = 0, width = 0;
  std::vector<std::uint8_t> pixels;  // height * width * 3

  Image() = default;
  Image(Index height_, Index width_) : height(height_), width(width_) {
    if (height_ < 0 || width_ < 0) detail::throw_shape("Image: negative size (", height_, ", ", width_, ")");
    if (height_ > 0 && width_ > std::numeric_limits<Index>::max() / 3 / height_)
      detail::throw_shape("Image: size (", height_, ", ", width_, ") overflows");
    pixels.assign(static_cast<std::size_t>(height_ * width_ * 3), 0);
  }

  Size2 size() const { return {height, width}; }
  bool empty() const { return height == 0 || width == 0; }
  std::uint8_t* row(Index y) { return pixels.data() + y * width * 3; }
  const std::uint8_t* row(Index y) const { return pixels.data() + y * width * 3; }
  std::uint8_t& at(Index y, Index x, int c) { return pixels[static_cast<std::size_t>((y * width + x) * 3 + c)]; }
  std::uint8_t at(Index y, Index x, int c) const {
    return pixels[static_cast<std::size_t>((y * width + x) * 3 + c)];
  }
};

namespace detail {

inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

// The stb_image in Debian 12 (2.27) writes past its Huffman tables when a JPEG's DHT segment declares more
// than 256 codes (stb issue #1289, fixed upstream in 2.28). This walks the markers the way stb's parser will
// meet them and refuses such a table first. Up to the first scan the walk follows stb segment by segment;
// after it, where stb resumes depends on how much entropy-coded data it consumed, so every 0xFF run followed by
// 0xC4 is checked (in a valid file those are exactly the DHT markers).
// Returns the frame header (SOF) the walk met, if it is one stb will accept, for the size checks.
struct JpegFrame {
  std::uint64_t width = 0, height = 0;
  std::uint64_t max_blocks = 0;  // 8x8 blocks of the component with the most, as stb lays components out
};

inline std::optional<JpegFrame> guard_jpeg_tables(const std::string& b, const std::string& label) {
  const std::size_t n = b.size();
  constexpr int kNone = 0xFF;
  auto u = [&](std::size_t i) -> unsigned { return i < n ? std::uint8_t(b[i]) : 0u; };  // stb reads 0 past the end
  auto be16 = [&](std::size_t i) -> long { return long(u(i) << 8 | u(i + 1)); };
  auto get_marker = [&](std::size_t& p) -> int {
    unsigned x = u(p++);
    if (x != 0xFF) return kNone;
    while (x == 0xFF && p <= n) x = u(p++);
    return int(x);
  };
  // A DHT payload at p (its length field): throws if a table would overflow; returns false if stb rejects it.
  auto dht = [&](std::size_t& p) -> bool {
    long L = be16(p) - 2;
    p += 2;
    while (L > 0) {
      const unsigned q = u(p++);
      if ((q >> 4) > 1 || (q & 15) > 3) return false;
      unsigned codes = 0;
      for (int i = 0; i < 16; ++i) codes += u(p++);
      if (codes > 256)
        throw_format("decode_image: '", label, "' is a corrupt JPEG: a Huffman table declares ", codes,
                     " codes (at most 256)");
      p += codes;
      L -= long(17 + codes);
    }
    return L == 0;
  };
  // Consumes one marker segment as stb's stbi__process_marker does; false where stb stops with an error.
  auto segment = [&](int m, std::size_t& p) -> bool {
    if (m == 0xDD) {  // DRI
      if (be16(p) != 4) return false;
      p += 4;
      return true;
    }
    if (m == 0xDB) {  // DQT
      long L = be16(p) - 2;
      p += 2;
      while (L > 0) {
        const unsigned q = u(p++);
        if ((q >> 4) > 1 || (q & 15) > 3) return false;
        p += (q >> 4) ? 128 : 64;
        L -= (q >> 4) ? 129 : 65;
      }
      return L == 0;
    }
    if (m == 0xC4) return dht(p);
    if ((m >= 0xE0 && m <= 0xEF) || m == 0xFE) {  // APPn, COM
      const long L = be16(p);
      if (L < 2) return false;
      p += std::size_t(L);
      return true;
    }
    return false;
  };
  // SOF at p (its length field): width, height and each component's sampling factors, as stb checks them.
  auto frame = [&](std::size_t at) -> std::optional<JpegFrame> {
    const long L = be16(at);
    const unsigned nf = u(at + 7);
    if (at + std::size_t(L) > n || (nf != 1 && nf != 3 && nf != 4) || L != long(8 + 3 * nf)) return std::nullopt;
    JpegFrame f;
    f.height = std::uint64_t(be16(at + 3));
    f.width = std::uint64_t(be16(at + 5));
    if (f.width == 0 || f.height == 0) return std::nullopt;
    unsigned hs[4], vs[4], hmax = 1, vmax = 1;
    for (unsigned c = 0; c < nf; ++c) {
      hs[c] = u(at + 9 + 3 * c) >> 4, vs[c] = u(at + 9 + 3 * c) & 15;
      if (hs[c] < 1 || hs[c] > 4 || vs[c] < 1 || vs[c] > 4) return std::nullopt;
      hmax = std::max(hmax, hs[c]), vmax = std::max(vmax, vs[c]);
    }
    for (unsigned c = 0; c < nf; ++c) {
      const std::uint64_t x = (f.width * hs[c] + hmax - 1) / hmax, y = (f.height * vs[c] + vmax - 1) / vmax;
      f.max_blocks = std::max(f.max_blocks, ((x + 7) / 8) * ((y + 7) / 8));
    }
    return f;
  };
  std::size_t p = 0;
  if (get_marker(p) != 0xD8) return std::nullopt;
  int m = get_marker(p);
  while (m != 0xC0 && m != 0xC1 && m != 0xC2) {  // header: up to the frame (SOF)
    if (!segment(m, p)) return std::nullopt;
    m = get_marker(p);
    while (m == kNone) {  // stb skips padding between segments here
      if (p >= n) return std::nullopt;
      m = get_marker(p);
    }
  }
  const std::optional<JpegFrame> f = frame(p);
  p += std::size_t(be16(p));  // the frame header
  for (m = get_marker(p); m != 0xD9; m = get_marker(p)) {
    if (m == 0xDA) {  // first scan: from here on, check every DHT marker
      for (std::size_t i = p; i < n; ++i) {
        if (std::uint8_t(b[i]) != 0xFF) continue;
        std::size_t j = i;
        while (j < n && std::uint8_t(b[j]) == 0xFF) ++j;
        if (j < n && std::uint8_t(b[j]) == 0xC4) {
          std::size_t q = j + 1;
          dht(q);
        }
        i = j;
      }
      return f;
    }
    if (m == 0xDC) {  // DNL
      p += 4;
    } else if (!segment(m, p)) {
      return f;
    }
  }
  return f;
}

// Whether stb reads the bytes as a JPEG: it takes any run of 0xFF fill bytes before the SOI marker (0xD8), as
// before every marker, so "FF FF D8" is a JPEG to stb, and the JPEG guards must run on it too (fuzz_image found a
// Huffman-table overflow behind one extra 0xFF).
inline bool is_jpeg(const std::string& b) {
  std::size_t i = 0;
  if (b.empty() || std::uint8_t(b[0]) != 0xFF) return false;
  while (i < b.size() && std::uint8_t(b[i]) == 0xFF) ++i;
  return i < b.size() && std::uint8_t(b[i]) == 0xD8;
}

// A PNG's IHDR fields and the compressed bytes its IDAT chunks hold (walked as stb will, without CRCs).
struct PngLayout {
  std::uint64_t width = 0, height = 0;
  unsigned depth = 0, color = 0;
  std::uint64_t idat_bytes = 0;
  bool ihdr = false;
};

inline PngLayout png_layout(const std::string& b) {
  auto be32 = [&](std::size_t at) {
    return std::uint32_t(std::uint8_t(b[at])) << 24 | std::uint32_t(std::uint8_t(b[at + 1])) << 16 |
           std::uint32_t(std::uint8_t(b[at + 2])) << 8 | std::uint32_t(std::uint8_t(b[at + 3]));
  };
  PngLayout l;
  for (std::size_t p = 8; p + 8 <= b.size();) {
    const std::uint32_t len = be32(p);
    const char* type = b.data() + p + 4;
    if (len > b.size() - p - 8) break;  // runs past the end: stb stops here too
    if (std::memcmp(type, "IHDR", 4) == 0 && len == 13 && !l.ihdr) {
      l.ihdr = true;
      l.width = be32(p + 8), l.height = be32(p + 12);
      l.depth = std::uint8_t(b[p + 16]), l.color = std::uint8_t(b[p + 17]);
    } else if (std::memcmp(type, "IDAT", 4) == 0) {
      l.idat_bytes += len;
    } else if (std::memcmp(type, "IEND", 4) == 0) {
      break;
    }
    if (len > b.size() - p - 12) break;
    p += 12 + std::size_t(len);
  }
  return l;
}

// Deflate codes at most 258 bytes in 2 bits (a length code and a distance code, 1 bit each with a Huffman
// table of one used code), so a zlib stream expands its input at most 1032 times.
constexpr std::uint64_t kDeflateMaxRatio = 1032;

// Bytes stb may allocate to decode a w x h image from a `file`-byte file: PNG keeps its compressed data, its
// inflated rows (up to 8 bytes a pixel at 16-bit RGBA, counted twice for the one doubling an interlaced
// image's estimate can need) and up to three converted copies; JPEG keeps per component a sample plane and,
// when progressive, its coefficients (2 bytes a sample), over planes padded to whole MCUs (at most 32 more
// pixels a side). 64 bytes a padded pixel covers both, plus 4x the file for the growth of the compressed
// buffer and 1 MiB for stb's fixed structures.
inline std::uint64_t stb_decode_budget(std::uint64_t w, std::uint64_t h, std::uint64_t file) {
  return 64 * (w + 32) * (h + 32) + 4 * file + (std::uint64_t(1) << 20);
}

// Restores the unlimited budget however decoding ends.
struct StbBudgetScope {
  explicit StbBudgetScope(std::uint64_t bytes) {
    stb_budget().left = std::size_t(std::min<std::uint64_t>(bytes, std::numeric_limits<std::size_t>::max()));
    stb_budget().exceeded = false;
  }
  ~StbBudgetScope() { stb_budget() = StbBudget{}; }
  StbBudgetScope(const StbBudgetScope&) = delete;
  StbBudgetScope& operator=(const StbBudgetScope&) = delete;
};

// stb copies a zero-length IDAT chunk from a null buffer (undefined behaviour, harmless in practice, fatal under
// -fsanitize=undefined). Such chunks carry no data, so they are dropped; other bytes pass unchanged.
inline const std::string& drop_empty_png_chunks(const std::string& b, std::string& scratch) {
  auto be32 = [&](std::size_t at) {
    return std::uint32_t(std::uint8_t(b[at])) << 24 | std::uint32_t(std::uint8_t(b[at + 1])) << 16 |
           std::uint32_t(std::uint8_t(b[at + 2])) << 8 | std::uint32_t(std::uint8_t(b[at + 3]));
  };
  std::vector<std::size_t> empty;
  for (std::size_t p = 8; p + 12 <= b.size();) {
    const std::uint32_t len = be32(p);
    if (len == 0 && std::memcmp(b.data() + p + 4, "IDAT", 4) == 0) empty.push_back(p);
    if (std::memcmp(b.data() + p + 4, "IEND", 4) == 0 || len > b.size() - p - 12) break;
    p += 12 + len;
  }
  if (empty.empty()) return b;
  scratch.clear();
  scratch.reserve(b.size());
  std::size_t from = 0;
  for (std::size_t at : empty) {
    scratch.append(b, from, at - from);
    from = at + 12;
  }
  scratch.append(b, from, std::string::npos);
  return scratch;
}

}  // namespace detail

// Decodes a JPEG or PNG held in memory; `label` names it in error messages (a path, a URL).
// Colour: grey repeats into R, G and B; alpha is dropped, not composited, as PIL's convert("RGB") does; a
// palette expands; 16-bit colour keeps the high byte and 16-bit grey clips to 255 (PIL reads it as mode "I").
// PNG decodes to exactly PIL's pixels. JPEG uses stb's IDCT and chroma upsampling, not libjpeg's, so pixels
// may differ from PIL by a few grey levels (tests/io/test_image.cpp measures it). EXIF orientation is not
// applied (PIL's Image.open does not apply it either).
// Before anything is allocated, the header's width x height is checked against limits.max_image_pixels() and
// against the file's length: a PNG's IDAT chunks must hold at least 1 / 1032 of the raw rows (deflate's largest
// expansion), a JPEG at least one bit per 8x8 block of its largest component (its DC code); fewer bytes cannot
// encode the declared image (PIL refuses such truncated files too). stb then decodes within a memory budget
// proportional to the declared size (64 bytes a pixel, see stb_decode_budget), which stops compressed-data bombs.
inline Image decode_image_bytes(const std::string& bytes, const std::string& label = "<memory>",
                                const ReadLimits& limits = {}) {
  const char* op = "decode_image";
  const std::uint64_t max_pixels = limits.max_image_pixels();
  if (bytes.empty()) detail::throw_format(op, ": '", label, "' is empty (0 bytes)");
  if (bytes.size() > std::size_t(0x7fffffff))
    detail::throw_format(op, ": '", label, "' is ", bytes.size(), " bytes; at most 2 GiB - 1 can be decoded");
  const bool png = bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0;
  const bool jpeg = detail::is_jpeg(bytes);
  // Both sides are below 2^32, so the product fits.
  auto check_pixels = [&](std::uint64_t w, std::uint64_t h) {
    if (w > 0 && h > max_pixels / w)
      detail::throw_format(op, ": '", label, "' declares ", w, " x ", h, " = ", w * h,
                           " pixels, more than the limit of ", max_pixels, " (max_pixels; ReadLimits::max_image_pixels)");
  };
  std::string scratch;
  const std::string& in = png ? detail::drop_empty_png_chunks(bytes, scratch) : bytes;
  if (jpeg) {
    if (const std::optional<detail::JpegFrame> f = detail::guard_jpeg_tables(bytes, label)) {
      check_pixels(f->width, f->height);
      const std::uint64_t need = (f->max_blocks + 7) / 8;
      if (need > bytes.size())
        detail::throw_format(op, ": '", label, "' is a corrupt or truncated JPEG: it declares ", f->width, " x ",
                             f->height, " pixels, whose ", f->max_blocks, " 8x8 blocks need at least ", need,
                             " bytes of coded data (a bit each), but the file is ", bytes.size(), " bytes");
    }
  }
  // PNG's size sits at a fixed offset; read it here because stb refuses some huge headers itself, with a less
  // helpful message.
  if (png) {
    const detail::PngLayout l = detail::png_layout(in);
    if (l.ihdr) {
      check_pixels(l.width, l.height);
      const unsigned channels = l.color == 0 || l.color == 3 ? 1 : l.color == 2 ? 3 : l.color == 4 ? 2 : 4;
      const unsigned bits = channels * l.depth;  // per pixel; 0 or odd values are left to stb to refuse
      const std::uint64_t most = detail::kDeflateMaxRatio * l.idat_bytes + 1024;  // raw bytes the data can hold
      // No IDAT at all is stb's own "no IDAT" error, found before it allocates.
      if (l.idat_bytes > 0 && bits >= 1 && bits <= 64 && l.width * l.height > most * 8 / bits)
        detail::throw_format(op, ": '", label, "' is a corrupt or truncated PNG: it declares ", l.width, " x ",
                             l.height, " pixels of ", bits, " bits, but its IDAT chunks hold ", l.idat_bytes,
                             " bytes, which inflate to at most ", most, " bytes (deflate expands at most ",
                             detail::kDeflateMaxRatio, " times)");
    }
  }
  const auto* data = reinterpret_cast<const stbi_uc*>(in.data());
  const int len = static_cast<int>(in.size());
  int w = 0, h = 0, comp = 0;
  auto stb_failed = [&](const char* what) {
    if (detail::stb_budget().exceeded)
      detail::throw_format(op, ": '", label, "' ", what, ": decoding it needs more memory than its declared size ",
                           w, " x ", h, " allows (", detail::stb_decode_budget(std::uint64_t(w), std::uint64_t(h), bytes.size()),
                           " bytes; its compressed data inflates past the image)");
    detail::throw_format(op, ": '", label, "' ", what, " (stb_image: ", detail::stb_reason(), ")");
  };
  {
    // Reading the header allocates only stb's fixed structures.
    const detail::StbBudgetScope budget(detail::stb_decode_budget(0, 0, bytes.size()));
    if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
      if (!png && !jpeg)
        detail::throw_format(op, ": '", label, "' is not a JPEG or PNG image (unrecognised signature)");
      // stb's info call reports only its last format's complaint; its loader stops at the same bad header and
      // keeps the real reason.
      int dw = 0, dh = 0, dc = 0;
      stbi_uc* p = stbi_load_from_memory(data, len, &dw, &dh, &dc, 3);
      if (p) stbi_image_free(p);
      stb_failed(png ? "has a corrupt or unsupported PNG header" : "has a corrupt or unsupported JPEG header");
    }
  }
  if (w <= 0 || h <= 0)
    detail::throw_format(op, ": '", label, "' declares an empty image (", w, " x ", h, ")");
  if (comp < 1 || comp > 4)
    detail::throw_format(op, ": '", label, "' has ", comp, " channels; expected 1 to 4");
  check_pixels(std::uint64_t(w), std::uint64_t(h));

  Image img(h, w);
  const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  const detail::StbBudgetScope budget(detail::stb_decode_budget(std::uint64_t(w), std::uint64_t(h), bytes.size()));
  int dw = 0, dh = 0, dc = 0;
  // 16-bit grey is the one case where stb's conversion (high byte) differs from PIL's (mode "I", clipped to 255
  // by convert("RGB")); 16-bit grey + alpha and RGB(A) keep the high byte in both.
  if (comp == 1 && stbi_is_16_bit_from_memory(data, len)) {
    stbi_us* p = stbi_load_16_from_memory(data, len, &dw, &dh, &dc, 1);
    if (!p) stb_failed("is corrupt or truncated");
    if (dw != w || dh != h) {
      stbi_image_free(p);
      detail::throw_format(op, ": '", label, "' decoded to ", dw, " x ", dh, ", but its header says ", w, " x ", h);
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint8_t v = p[i] > 255 ? 255 : static_cast<std::uint8_t>(p[i]);
      img.pixels[3 * i] = img.pixels[3 * i + 1] = img.pixels[3 * i + 2] = v;
    }
    stbi_image_free(p);
    return img;
  }
  stbi_uc* p = stbi_load_from_memory(data, len, &dw, &dh, &dc, 3);
  if (!p) stb_failed("is corrupt or truncated");
  if (dw != w || dh != h) {
    stbi_image_free(p);
    detail::throw_format(op, ": '", label, "' decoded to ", dw, " x ", dh, ", but its header says ", w, " x ", h);
  }
  std::memcpy(img.pixels.data(), p, n * 3);
  stbi_image_free(p);
  return img;
}

// As above with only the pixel ceiling given (the other limits at their defaults).
inline Image decode_image_bytes(const std::string& bytes, const std::string& label, Index max_pixels) {
  if (max_pixels < 1)
    detail::throw_shape("decode_image: max_pixels must be >= 1, got ", max_pixels, " for '", label, "'");
  return decode_image_bytes(bytes, label, ReadLimits().max_image_pixels(std::uint64_t(max_pixels)));
}

// Reads and decodes a JPEG or PNG file; see decode_image_bytes.
inline Image decode_image(const std::string& path, const ReadLimits& limits = {}) {
  return decode_image_bytes(detail::read_file_bytes(path, "decode_image"), path, limits);
}
inline Image decode_image(const std::string& path, Index max_pixels) {
  if (max_pixels < 1) detail::throw_shape("decode_image: max_pixels must be >= 1, got ", max_pixels, " for '", path, "'");
  return decode_image_bytes(detail::read_file_bytes(path, "decode_image"), path, max_pixels);
}

namespace detail {

inline void append_to_string(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<std::size_t>(size));
}

inline void check_encodable(const Image& img, const char* op) {
  if (img.empty()) throw_shape(op, ": cannot encode an empty image ", size2_str(img.size()));
  if (img.pixels.size() != static_cast<std::size_t>(img.height * img.width * 3))
    throw_shape(op, ": image ", size2_str(img.size()), " holds ", img.pixels.size(), " bytes, expected ",
                img.height * img.width * 3);
  if (img.width > 0x7fffffff / 3 || img.height > 0x7fffffff)
    throw_shape(op, ": image ", size2_str(img.size()), " is too large to encode");
}

inline void write_bytes(const std::string& path, const std::string& bytes, const char* op) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw_format(op, ": cannot open '", path, "' for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw_format(op, ": error writing '", path, "'");
}

}  // namespace detail

// Lossless PNG bytes (8-bit RGB).
inline std::string encode_png(const Image& img) {
  detail::check_encodable(img, "encode_png");
  std::string out;
  if (!stbi_write_png_to_func(detail::append_to_string, &out, int(img.width), int(img.height), 3, img.pixels.data(),
                              int(img.width * 3)))
    detail::throw_format("encode_png: stb_image_write failed for an image of ", detail::size2_str(img.size()));
  return out;
}

inline void write_png(const std::string& path, const Image& img) {
  detail::write_bytes(path, encode_png(img), "write_png");
}

}  // namespace fovea
