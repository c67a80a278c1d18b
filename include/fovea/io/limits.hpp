#pragma once
// ReadLimits: how much memory a file may make fovea allocate. Files are untrusted input (docs/security.md):
// every size a file declares (a header length, a tensor's shape, an image's width and height) is checked,
// before anything is allocated for it, first against the file's own length (a size the bytes cannot hold is a
// corrupt file) and then against these ceilings (a size the bytes do hold but that is more than the caller
// accepts). Exceeding a ceiling is a FormatError that names the file, the tensor or field, both numbers and the
// setting to change.
//
//   ReadLimits().max_tensor_bytes(1 << 30).max_header_bytes(1 << 20).max_image_pixels(1 << 24)
//
// A default-constructed ReadLimits holds the defaults below, each overridable for the whole process by an
// environment variable read once, at first use (so a command-line tool can be given a ceiling without a flag):
//   max_tensor_bytes  16 GiB       FOVEA_MAX_TENSOR_BYTES   one array once read and converted (npy, safetensors)
//   max_header_bytes  100,000,000  FOVEA_MAX_HEADER_BYTES   a safetensors or npy header, a config.json file
//   max_image_pixels  178,956,970  FOVEA_MAX_IMAGE_PIXELS   width x height of an image to decode
// 100,000,000 is the safetensors reference reader's own header limit; 178,956,970 = 2 * 89,478,485 is where
// PIL raises DecompressionBombError, so the defaults accept what the reference libraries accept.
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {

inline constexpr std::uint64_t kDefaultMaxTensorBytes = std::uint64_t(16) << 30;
inline constexpr std::uint64_t kDefaultMaxHeaderBytes = 100'000'000;
// PIL refuses larger images (DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS).
inline constexpr Index kDefaultMaxImagePixels = 2 * Index(89478485);

namespace detail {

// A whole number from 1 to 2^62 in an environment variable, or `fallback` when it is unset. A set but
// malformed value throws (every time it is asked for) rather than being ignored.
inline std::uint64_t env_limit(const char* name, std::uint64_t fallback) {
  const char* env = std::getenv(name);
  if (!env) return fallback;
  std::uint64_t v = 0;
  const char* p = env;
  for (; *p >= '0' && *p <= '9'; ++p) {
    v = v * 10 + std::uint64_t(*p - '0');
    if (v > (std::uint64_t(1) << 62)) break;
  }
  if (p == env || *p != '\0' || v < 1 || v > (std::uint64_t(1) << 62))
    throw_shape("ReadLimits: ", name, " must be a whole number from 1 to 2^62, got '", env, "'");
  return v;
}

struct EnvLimits {
  std::uint64_t tensor, header, pixels;
};

inline EnvLimits env_limits() {
  return {env_limit("FOVEA_MAX_TENSOR_BYTES", kDefaultMaxTensorBytes),
          env_limit("FOVEA_MAX_HEADER_BYTES", kDefaultMaxHeaderBytes),
          env_limit("FOVEA_MAX_IMAGE_PIXELS", std::uint64_t(kDefaultMaxImagePixels))};
}

// Read once, at first use. While a variable is malformed the static stays uninitialised (its initialiser
// threw), so every ReadLimits made reports it instead of silently using the default.
inline EnvLimits default_limits() {
  static const EnvLimits cached = env_limits();
  return cached;
}

}  // namespace detail

class ReadLimits {
 public:
  // The defaults (or the environment's), see the file comment.
  ReadLimits() {
    const detail::EnvLimits d = detail::default_limits();
    tensor_ = d.tensor, header_ = d.header, pixels_ = d.pixels;
  }

  // Bytes one array may take once read into memory as the type asked for (a float32 file read as double
  // takes twice its bytes).
  ReadLimits& max_tensor_bytes(std::uint64_t n) { return set(tensor_, n, "max_tensor_bytes"); }
  // Bytes of a safetensors header, an npy header, or a whole config.json: JSON-like text parsed into memory.
  ReadLimits& max_header_bytes(std::uint64_t n) { return set(header_, n, "max_header_bytes"); }
  // width * height of an image to decode.
  ReadLimits& max_image_pixels(std::uint64_t n) { return set(pixels_, n, "max_image_pixels"); }

  std::uint64_t max_tensor_bytes() const { return tensor_; }
  std::uint64_t max_header_bytes() const { return header_; }
  std::uint64_t max_image_pixels() const { return pixels_; }

 private:
  ReadLimits& set(std::uint64_t& field, std::uint64_t n, const char* name) {
    if (n < 1) detail::throw_shape("ReadLimits::", name, ": expected a limit >= 1, got ", n);
    field = n;
    return *this;
  }
  std::uint64_t tensor_, header_, pixels_;
};

}  // namespace fovea
