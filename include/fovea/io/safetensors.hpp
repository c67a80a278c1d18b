#pragma once
// safetensors files (Hugging Face): validated as strictly as the reference reader, memory-mapped, read as
// zero-copy views or converted (F64, F32, F16, BF16 -> float or double), and written as the reference writes.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
// (may be padded at the end with whitespace), then the data buffer; offsets are relative to the buffer, and the
// tensors must tile it exactly, in any header order.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/limits.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define FOVEA_SAFETENSORS_MMAP 1
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "fovea/io/safetensors.hpp reads little-endian data in place and needs a little-endian host"
#endif

namespace fovea {

// Every dtype the reference knows, in its order (increasing alignment), which its writer sorts by.
enum class Dtype {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};

namespace detail {

struct DtypeEntry {
  Dtype dtype;
  const char* name;
  unsigned bits;
};

inline const DtypeEntry (&dtype_table())[20] {
  static const DtypeEntry table[20] = {
      {Dtype::BOOL, "BOOL", 8},       {Dtype::F4, "F4", 4},           {Dtype::F6_E2M3, "F6_E2M3", 6},
      {Dtype::F6_E3M2, "F6_E3M2", 6}, {Dtype::U8, "U8", 8},           {Dtype::I8, "I8", 8},
      {Dtype::F8_E5M2, "F8_E5M2", 8}, {Dtype::F8_E4M3, "F8_E4M3", 8}, {Dtype::F8_E8M0, "F8_E8M0", 8},
      {Dtype::I16, "I16", 16},        {Dtype::U16, "U16", 16},        {Dtype::F16, "F16", 16},
      {Dtype::BF16, "BF16", 16},      {Dtype::I32, "I32", 32},        {Dtype::U32, "U32", 32},
      {Dtype::F32, "F32", 32},        {Dtype::C64, "C64", 64},        {Dtype::F64, "F64", 64},
      {Dtype::I64, "I64", 64},        {Dtype::U64, "U64", 64}};
  return table;
}

inline std::optional<Dtype> parse_dtype(const std::string& s) {
  for (const DtypeEntry& e : dtype_table())
    if (s == e.name) return e.dtype;
  return std::nullopt;
}

}  // namespace detail

// "F32", as the header spells it.
inline const char* dtype_name(Dtype d) { return detail::dtype_table()[static_cast<int>(d)].name; }

// Bits per element: sub-byte dtypes (F4, F6_*) pack several elements into a byte.
inline unsigned dtype_bits(Dtype d) { return detail::dtype_table()[static_cast<int>(d)].bits; }

// One tensor of a file: where its bytes are and how to read them.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<Index> shape;
  std::size_t begin = 0, end = 0;  // absolute byte offsets in the file, [begin, end)

  Index numel() const {
    Index n = 1;
    for (Index d : shape) n *= d;  // every partial product was checked at open
    return n;
  }
  std::size_t nbytes() const { return end - begin; }
};

// SafeTensorsOptions().max_header_bytes(1 << 20).use_mmap(false)
// SafeTensorsOptions().limits(ReadLimits().max_tensor_bytes(1 << 30))
class SafeTensorsOptions {
 public:
  // The ceilings (io/limits.hpp): max_header_bytes for the header's JSON, which is parsed into memory (the
  // reference refuses headers over 100,000,000 bytes, the default); max_tensor_bytes for each tensor get() and
  // get_into() convert (the file's own length already bounds what it stores).
  SafeTensorsOptions& limits(const ReadLimits& l) {
    limits_ = l;
    return *this;
  }
  SafeTensorsOptions& max_header_bytes(std::uint64_t n) {
    limits_.max_header_bytes(n);
    return *this;
  }
  // Map the file (zero-copy views, pages read on demand) or read it whole into memory.
  SafeTensorsOptions& use_mmap(bool on) {
    use_mmap_ = on;
    return *this;
  }
  const ReadLimits& limits() const { return limits_; }
  std::uint64_t max_header_bytes() const { return limits_.max_header_bytes(); }
  bool use_mmap() const { return use_mmap_; }

 private:
  ReadLimits limits_;
  bool use_mmap_ = true;
};

// Dimensions a tensor may have. fovea's own bound (the reference reader sets none; NumPy's is 32): no model
// stores more than a handful, and refusing longer arrays while the header is parsed keeps the parser's memory a
// small multiple of the header's length.
inline constexpr std::size_t kMaxSafeTensorsRank = 64;

namespace detail {

// The file's bytes at an address that never moves, shared by every copy of a SafeTensors and so by its views.
class SafeTensorsStorage {
 public:
  explicit SafeTensorsStorage(std::string bytes) : owned_(std::move(bytes)) {
    data_ = owned_.data();
    size_ = owned_.size();
  }
  SafeTensorsStorage(std::unique_ptr<char[]> bytes, std::size_t size) : read_(std::move(bytes)) {
    data_ = read_.get();
    size_ = size;
  }
#ifdef FOVEA_SAFETENSORS_MMAP
  SafeTensorsStorage(void* map, std::size_t size) : map_(map) {
    data_ = static_cast<const char*>(map);
    size_ = size;
  }
  ~SafeTensorsStorage() {
    if (map_) ::munmap(map_, size_);
  }
#endif
  SafeTensorsStorage(const SafeTensorsStorage&) = delete;
  SafeTensorsStorage& operator=(const SafeTensorsStorage&) = delete;

  const char* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool mapped() const { return map_ != nullptr; }

 private:
  std::string owned_;
  std::unique_ptr<char[]> read_;
  void* map_ = nullptr;
  const char* data_ = nullptr;
  std::size_t size_ = 0;
};

// What a header says once validated.
struct SafeTensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by offset, absolute offsets
  std::unordered_map<std::string, std::size_t> index;
  std::map<std::string, std::string> metadata;
  std::size_t data_start = 0;
};

inline std::string json_excerpt(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

inline std::string hex_byte(unsigned char c) {
  static const char digits[] = "0123456789abcdef";
  return std::string("0x") + digits[c >> 4] + digits[c & 15];
}

// Header parsing, entry by entry: nlohmann's callback hands over each top-level value as it completes, so
// duplicate keys (which a JSON object would silently collapse) are seen, and the DOM never holds more than one
// entry at a time.
class SafeTensorsHeaderParser {
 public:
  explicit SafeTensorsHeaderParser(const std::string& what) : what_(what) {}

  bool operator()(int depth, nlohmann::json::parse_event_t event, nlohmann::json& value) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::key && depth == 1) {
      key_ = value.get<std::string>();
      if (!top_keys_.insert(key_).second) fail(cat("duplicate key \"", key_, "\" in the header"));
      inner_keys_.clear();
    } else if (event == E::key && depth == 2) {
      if (!inner_keys_.insert(value.get<std::string>()).second)
        fail(cat(entry_str(), ": duplicate key \"", value.get<std::string>(), "\""));
    } else if ((event == E::object_start || event == E::array_start) && depth >= 3) {
      fail(cat(entry_str(), ": values nest deeper than a safetensors header does"));
    } else if ((event == E::array_start || event == E::object_start) && depth == 2) {
      array_values_ = 0;
    } else if (event == E::value && depth == 3 && ++array_values_ > kMaxSafeTensorsRank) {
      // Refused while parsing, before the array is held: "shape" has at most kMaxSafeTensorsRank dimensions
      // and "data_offsets" two values (an entry's unknown keys are held to the same bound).
      fail(cat(entry_str(), ": an array of more than ", kMaxSafeTensorsRank, " values (a shape has at most ",
               kMaxSafeTensorsRank, " dimensions)"));
    } else if (depth == 1 && (event == E::object_end || event == E::array_end || event == E::value)) {
      take(value);
      return false;  // processed: keep it out of the DOM
    }
    return true;
  }

  std::vector<TensorInfo> tensors;   // header order, offsets relative to the data buffer
  std::map<std::string, std::string> metadata;

 private:
  [[noreturn]] void fail(const std::string& why) const { throw_format("safetensors: ", what_, ": ", why); }

  std::string entry_str() const {
    return key_ == "__metadata__" ? std::string("__metadata__") : cat("tensor '", key_, "'");
  }

  void take(const nlohmann::json& v) {
    if (key_ == "__metadata__") {
      if (v.is_null()) return;  // the reference reads it as an optional map
      if (!v.is_object()) fail(cat("__metadata__ must be an object of strings, got ", json_excerpt(v)));
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string())
          fail(cat("__metadata__ must map strings to strings, but \"", k, "\" holds ", json_excerpt(s)));
        metadata.emplace(k, s.get<std::string>());
      }
      return;
    }
    if (!v.is_object()) fail(cat(entry_str(), ": entry must be a JSON object, got ", json_excerpt(v)));
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!v.contains(k)) fail(cat(entry_str(), ": entry lacks \"", k, "\": ", json_excerpt(v)));
    TensorInfo t;
    t.name = key_;
    const nlohmann::json& dt = v.at("dtype");
    if (!dt.is_string()) fail(cat(entry_str(), ": \"dtype\" must be a string, got ", json_excerpt(dt)));
    const std::optional<Dtype> d = parse_dtype(dt.get<std::string>());
    if (!d) fail(cat(entry_str(), ": unknown dtype ", json_excerpt(dt)));
    t.dtype = *d;
    const nlohmann::json& sh = v.at("shape");
    if (!sh.is_array()) fail(cat(entry_str(), ": \"shape\" must be an array of integers, got ", json_excerpt(sh)));
    for (std::size_t i = 0; i < sh.size(); ++i) {
      const std::uint64_t dim = whole(sh, i, "shape");
      if (dim > std::uint64_t(std::numeric_limits<Index>::max()))
        fail(cat(entry_str(), ": \"shape\" dimension ", i, " is ", dim, ", past the largest index"));
      t.shape.push_back(static_cast<Index>(dim));
    }
    const nlohmann::json& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2)
      fail(cat(entry_str(), ": \"data_offsets\" must be [begin, end], got ", json_excerpt(off)));
    t.begin = whole(off, 0, "data_offsets");
    t.end = whole(off, 1, "data_offsets");
    tensors.push_back(std::move(t));
  }

  // Element i of the array `a` ("shape" or "data_offsets") as a non-negative integer; the reference's serde
  // rejects floats (even 2.0) and negatives. Messages are built only on failure: headers hold 10^5 entries.
  std::uint64_t whole(const nlohmann::json& a, std::size_t i, const std::string& field) const {
    const nlohmann::json& n = a[i];
    if (n.is_number_unsigned()) return n.get<std::uint64_t>();
    if (n.is_number_integer() && n.get<std::int64_t>() >= 0) return std::uint64_t(n.get<std::int64_t>());  // -0
    const std::string where = cat("\"", field, "\" ", json_excerpt(a), " ",
                                  field == "shape" ? cat("dimension ", i) : std::string(i ? "end" : "begin"));
    if (n.is_number_integer()) fail(cat(entry_str(), ": ", where, " is negative: ", json_excerpt(n)));
    fail(cat(entry_str(), ": ", where, " must be a non-negative integer, got ", json_excerpt(n)));
  }

  const std::string& what_;
  std::string key_;
  std::unordered_set<std::string> top_keys_, inner_keys_;
  std::size_t array_values_ = 0;
};

// Reads and validates everything the header claims against the `size` bytes at p, before any tensor is read.
inline SafeTensorsHeader parse_safetensors(const char* p, std::size_t size, const std::string& what,
                                           const SafeTensorsOptions& options = {}) {
  auto fail = [&](const auto&... a) { throw_format("safetensors: ", what, ": ", a...); };
  if (size < 8) fail("file is ", size, " bytes, too short for the 8-byte header length");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(p[i]);
  if (n > size - 8)
    fail("header length ", n, " (file bytes 0-7) runs past the end of the ", size, "-byte file");
  if (n > options.max_header_bytes())
    fail("header length ", n, " exceeds the limit of ", options.max_header_bytes(),
         " bytes (SafeTensorsOptions::max_header_bytes, ReadLimits::max_header_bytes)");
  if (n == 0 || p[8] != '{')
    fail("header must begin with '{' at file offset 8, got ", n == 0 ? std::string("an empty header")
                                                                    : hex_byte(static_cast<unsigned char>(p[8])));
  // nlohmann's lexer reads NUL as the end of the input, which would let anything follow it; JSON has no raw NUL.
  if (const void* z = std::memchr(p + 8, 0, std::size_t(n)))
    fail("header is not valid JSON: NUL byte at file offset ", static_cast<const char*>(z) - p);
  SafeTensorsHeaderParser parser(what);
  try {
    // Callback rather than a plain parse: see SafeTensorsHeaderParser. Comments are not JSON: refused.
    const nlohmann::json rest = nlohmann::json::parse(p + 8, p + 8 + n, std::ref(parser), true, false);
    (void)rest;  // every entry was taken by the parser
  } catch (const nlohmann::json::parse_error& e) {
    fail("header is not valid JSON at file offset ", 8 + (e.byte ? e.byte - 1 : 0), ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    fail("header is not valid JSON: ", e.what());
  }

  SafeTensorsHeader h;
  h.metadata = std::move(parser.metadata);
  h.data_start = 8 + std::size_t(n);
  const std::size_t buffer = size - h.data_start;
  std::vector<TensorInfo>& ts = parser.tensors;
  // Header order is free (the reference sorts too); the data must tile the buffer in offset order.
  std::stable_sort(ts.begin(), ts.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  auto offsets = [](const TensorInfo& t) { return cat("data_offsets [", t.begin, ", ", t.end, "]"); };
  auto bad = [&](const TensorInfo& t, const auto&... a) { fail("tensor '", t.name, "': ", a...); };
  std::size_t covered = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const TensorInfo& t = ts[i];
    if (t.end < t.begin) bad(t, offsets(t), " end before they begin");
    if (t.end > buffer)
      bad(t, offsets(t), " run past the end of the file: the data buffer at file offset ", h.data_start,
           " holds ", buffer, " bytes");
    if (t.begin > covered)
      bad(t, offsets(t), " leave buffer bytes [", covered, ", ", t.begin, ") to no tensor",
           i ? cat(" after tensor '", ts[i - 1].name, "'") : std::string(), "; tensors must be contiguous");
    if (t.begin < covered)
      bad(t, offsets(t), " overlap tensor '", ts[i - 1].name, "', which ends at ", covered);
    // Every partial product, as the reference checks them (and as Eigen will form them, in Index).
    std::uint64_t count = 1;
    const std::uint64_t most = std::uint64_t(std::numeric_limits<Index>::max());
    for (Index d : t.shape) {
      if (d != 0 && count > most / std::uint64_t(d))
        bad(t, "shape ", dims_str(t.shape), " overflows the element count (a partial product passes 2^63 - 1)");
      count *= std::uint64_t(d);
    }
    const unsigned bits = dtype_bits(t.dtype);
    if (count > std::numeric_limits<std::uint64_t>::max() / bits)
      bad(t, "shape ", dims_str(t.shape), " of ", dtype_name(t.dtype), " overflows the byte count");
    if (count * bits % 8 != 0)
      bad(t, "shape ", dims_str(t.shape), " of ", dtype_name(t.dtype), " is ", count * bits,
           " bits, not a whole number of bytes");
    const std::uint64_t need = count * bits / 8;
    if (need != t.end - t.begin)
      bad(t, "shape ", dims_str(t.shape), " of ", dtype_name(t.dtype), " needs ", need, " bytes, but ",
           offsets(t), " hold ", t.end - t.begin);
    // Any dimension of a tensor with data is at most its element count, so at most 2 per byte of the file (F4).
    // A tensor with no elements holds no data, and nothing bounds its other dimensions: models read sizes off
    // shapes, so those are held to the same bound as the rest.
    if (count == 0)
      for (Index d : t.shape)
        if (std::uint64_t(d) > 2 * std::uint64_t(size))
          bad(t, "shape ", dims_str(t.shape), " has a dimension of ", d, ", more than the ", 2 * std::uint64_t(size),
              " elements a ", size, "-byte file can hold (the tensor has no elements, so no data bounds it)");
    covered = t.end;
  }
  if (covered != buffer)
    fail("the tensors cover ", covered, " bytes of the ", buffer, "-byte data buffer; file bytes [",
         h.data_start + covered, ", ", size, ") belong to no tensor");
  for (std::size_t i = 0; i < ts.size(); ++i) {
    ts[i].begin += h.data_start;
    ts[i].end += h.data_start;
    h.index.emplace(ts[i].name, i);
  }
  h.tensors = std::move(ts);
  return h;
}

// IEEE half -> float, exact for every bit pattern (NaN payloads kept). Branch-free so the loop vectorizes.
// Subnormals m * 2^-24 come from an exact subtraction of two normal floats, 2^-14 * (1 + m/1024) - 2^-14, so
// flush-to-zero modes cannot touch them.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = h & 0x7c00u;
  const std::uint32_t body = std::uint32_t(h & 0x7fffu) << 13;  // exponent and mantissa in float position
  const std::uint32_t normal = body + (exp == 0x7c00u ? (255u - 31u) << 23 : (127u - 15u) << 23);
  const std::uint32_t lifted_bits = body + (113u << 23);
  float lifted;
  std::memcpy(&lifted, &lifted_bits, 4);
  const float sub = lifted - 6.103515625e-05f;
  std::uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, 4);
  const std::uint32_t bits = sign | (exp == 0 ? sub_bits : normal);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// bfloat16 is the top half of a float: exact, NaN payloads included.
inline float bfloat16_to_float(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// n elements of `from` at src (any alignment) -> T at dst.
template <class T>
void convert_elements(Dtype from, const char* src, T* dst, Index n, const Context& ctx) {
  ctx.parallel_range(n, Index(1) << 16, [&](Index b, Index e) {
    switch (from) {
      case Dtype::F32:
        if constexpr (std::is_same_v<T, float>) {
          std::memcpy(dst + b, src + 4 * b, std::size_t(e - b) * 4);
        } else {
          for (Index i = b; i < e; ++i) {
            float v;
            std::memcpy(&v, src + 4 * i, 4);
            dst[i] = static_cast<T>(v);
          }
        }
        break;
      case Dtype::F64:
        if constexpr (std::is_same_v<T, double>) {
          std::memcpy(dst + b, src + 8 * b, std::size_t(e - b) * 8);
        } else {
          for (Index i = b; i < e; ++i) {
            double v;
            std::memcpy(&v, src + 8 * i, 8);
            dst[i] = static_cast<T>(v);  // rounds to nearest
          }
        }
        break;
      case Dtype::F16:
      case Dtype::BF16:
        for (Index i = b; i < e; ++i) {
          std::uint16_t v;
          std::memcpy(&v, src + 2 * i, 2);
          dst[i] = static_cast<T>(from == Dtype::F16 ? half_to_float(v) : bfloat16_to_float(v));
        }
        break;
      default:
        break;  // refused by the caller
    }
  });
}

inline std::string file_label(const std::string& path) { return "'" + path + "'"; }

// Page-level hints, best effort (an older kernel refuses them and nothing changes). Only worth a system call
// for large ranges.
enum class PageAdvice { huge, populate_read, release };
inline void advise_pages(const void* p, std::size_t n, PageAdvice advice) {
#ifdef FOVEA_SAFETENSORS_MMAP
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  (void)page, (void)at, (void)advice;  // unused where no advice exists
  // A mapped source already copied: drop its pages from this process (the file's bytes are unchanged and come
  // back from the page cache if read again), so a model loaded from a mapped file holds its weights once, not
  // twice (ViT-B/16's load peaked at 2.05x its weights before). Whole pages inside the range only: a page shared
  // with the next tensor is left for that tensor's release.
  if (advice == PageAdvice::release) {
    const std::uintptr_t b = (at + page - 1) / page * page, e = (at + n) / page * page;
    if (b < e) (void)::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
    return;
  }
  if (n < (std::size_t(4) << 20)) return;
#if defined(MADV_HUGEPAGE)
  // A fresh destination faults in one small page at a time; huge pages made a 100 MB copy 6x faster where
  // transparent huge pages run in madvise mode. Only whole pages inside the range are advised.
  if (advice == PageAdvice::huge) {
    const std::uintptr_t b = (at + page - 1) / page * page, e = (at + n) / page * page;
    if (b < e) (void)::madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
  }
#endif
#if defined(MADV_POPULATE_READ)
  // A mapped source read end to end: map its pages in one call instead of a fault each (7x faster measured).
  if (advice == PageAdvice::populate_read) {
    const std::uintptr_t b = at / page * page;
    (void)::madvise(reinterpret_cast<void*>(b), at + n - b, MADV_POPULATE_READ);
  }
#endif
#else
  (void)p, (void)n, (void)advice;
#endif
}

}  // namespace detail

// A safetensors file, validated at open. Copies share the bytes; views stay valid while any copy lives.
class SafeTensors {
 public:
  // Maps the file (or reads it, see SafeTensorsOptions) and validates the header against its length. As with
  // any memory map, a file truncated by another process while mapped faults (SIGBUS) when its pages are read.
  static SafeTensors open(const std::string& path, const SafeTensorsOptions& options = {}) {
    const std::string what = detail::file_label(path);
    std::shared_ptr<const detail::SafeTensorsStorage> storage;
#ifdef FOVEA_SAFETENSORS_MMAP
    if (options.use_mmap()) {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) detail::throw_format("safetensors: cannot open ", what, ": ", std::strerror(errno));
      struct stat st {};
      if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        detail::throw_format("safetensors: ", what, " is not a regular file");
      }
      const std::size_t size = static_cast<std::size_t>(st.st_size);
      if (size < 8) {
        ::close(fd);
        detail::throw_format("safetensors: ", what, ": file is ", size,
                             " bytes, too short for the 8-byte header length");
      }
      void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      ::close(fd);
      if (map != MAP_FAILED) storage = std::make_shared<const detail::SafeTensorsStorage>(map, size);
      // else: a file system without mmap; read it below.
    }
#endif
    if (!storage) {
      std::error_code ec;
      const std::filesystem::file_status status = std::filesystem::status(path, ec);
      if (ec || !std::filesystem::exists(status))
        detail::throw_format("safetensors: cannot open ", what, ": ", ec ? ec.message() : "no such file");
      if (!std::filesystem::is_regular_file(status)) detail::throw_format("safetensors: ", what, " is not a regular file");
      const std::uintmax_t size = std::filesystem::file_size(path, ec);
      if (ec) detail::throw_format("safetensors: cannot open ", what, ": ", ec.message());
      if (size < 8)
        detail::throw_format("safetensors: ", what, ": file is ", size, " bytes, too short for the 8-byte header length");
      std::ifstream f(path, std::ios::binary);
      if (!f) detail::throw_format("safetensors: cannot open ", what);
      // Uninitialized, so the pages are first touched by the read, after the huge-page advice.
      std::unique_ptr<char[]> bytes(new char[static_cast<std::size_t>(size)]);
      detail::advise_pages(bytes.get(), static_cast<std::size_t>(size), detail::PageAdvice::huge);
      f.read(bytes.get(), static_cast<std::streamsize>(size));
      if (f.gcount() != static_cast<std::streamsize>(size)) detail::throw_format("safetensors: error reading ", what);
      storage = std::make_shared<const detail::SafeTensorsStorage>(std::move(bytes), static_cast<std::size_t>(size));
    }
    return SafeTensors(std::move(storage), what, options);
  }

  // The bytes of a whole file, already in memory (e.g. downloaded); `label` names it in errors.
  static SafeTensors from_bytes(std::string bytes, const std::string& label = "<memory>",
                                const SafeTensorsOptions& options = {}) {
    return SafeTensors(std::make_shared<const detail::SafeTensorsStorage>(std::move(bytes)), label, options);
  }

  // In data order (the order of their bytes in the file).
  const std::vector<TensorInfo>& tensors() const { return header_->tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_->metadata; }
  const std::string& label() const { return what_; }
  // The ceilings the file was opened with (SafeTensorsOptions::limits).
  const ReadLimits& limits() const { return limits_; }
  bool contains(const std::string& name) const { return header_->index.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    const auto it = header_->index.find(name);
    if (it == header_->index.end()) {
      std::string some;
      for (std::size_t i = 0; i < tensors().size() && i < 5; ++i)
        some += detail::cat(i ? ", '" : ": '", tensors()[i].name, "'");
      if (tensors().size() > 5) some += ", ...";
      detail::throw_format("safetensors: ", what_, " has no tensor '", name, "' (it holds ", tensors().size(), some,
                           ")");
    }
    return header_->tensors[it->second];
  }

  // The tensor's raw little-endian bytes, any dtype, zero-copy.
  std::string_view bytes(const std::string& name) const {
    const TensorInfo& t = info(name);
    return std::string_view(storage_->data() + t.begin, t.nbytes());
  }

  // (shape of the tensor) -> Tensor<T, R>: converts F64, F32, F16 and BF16 to T (F64 -> float rounds to
  // nearest; the others are exact). The rank must be R.
  template <class T, int R>
  Tensor<T, R> get(const std::string& name, const Context& ctx = default_context()) const {
    const TensorInfo& t = convertible<T>(name, "get");
    Tensor<T, R> out(checked_dims<R>(t, "get"));  // within max_tensor_bytes: convertible() checked
    convert_into(t, out.data(), ctx);
    return out;
  }

  // (shape of the tensor) -> dst, converted as get() does, when dst already has exactly that shape: loads a
  // module's own parameters with no temporary.
  template <class T, int R>
  void get_into(const std::string& name, Tensor<T, R>& dst, const Context& ctx = default_context()) const {
    const TensorInfo& t = convertible<T>(name, "get_into");
    if (checked_dims<R>(t, "get_into") != dst.dimensions())
      detail::throw_format("safetensors: ", what_, ": get_into: tensor '", t.name, "' has shape ",
                           detail::dims_str(t.shape), ", but the destination is ", detail::shape_str(dst));
    convert_into(t, dst.data(), ctx);
  }

  // (shape of the tensor) -> a read-only map onto the file's bytes, no copy: the stored dtype must be T's
  // (F32 for float, F64 for double) and the bytes aligned for T, which the reference writer ensures.
  template <class T, int R>
  ConstTensorMap<T, R> view(const std::string& name) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "SafeTensors::view: float or double");
    const TensorInfo& t = info(name);
    const Dtype want = std::is_same_v<T, float> ? Dtype::F32 : Dtype::F64;
    const char* tname = std::is_same_v<T, float> ? "float" : "double";
    if (t.dtype != want)
      detail::throw_format("safetensors: ", what_, ": view<", tname, ">: tensor '", t.name, "' is stored as ",
                           dtype_name(t.dtype), ", not ", dtype_name(want),
                           ", so it cannot be viewed without a copy; get<", tname, ">() converts it");
    const std::array<Index, R> dims = checked_dims<R>(t, "view");
    const char* p = storage_->data() + t.begin;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
      detail::throw_format("safetensors: ", what_, ": view<", tname, ">: tensor '", t.name, "' starts at file offset ",
                           t.begin, ", which is not ", alignof(T), "-byte aligned in memory (the header length is "
                           "not padded to a multiple of 8); get<", tname, ">() copies it");
    return ConstTensorMap<T, R>(reinterpret_cast<const T*>(p), dims);
  }

 private:
  SafeTensors(std::shared_ptr<const detail::SafeTensorsStorage> storage, std::string what,
              const SafeTensorsOptions& options)
      : storage_(std::move(storage)), what_(std::move(what)), limits_(options.limits()) {
    header_ = std::make_shared<const detail::SafeTensorsHeader>(
        detail::parse_safetensors(storage_->data(), storage_->size(), what_, options));
  }

  template <class T>
  const TensorInfo& convertible(const std::string& name, const char* op) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "SafeTensors::get: float or double");
    const TensorInfo& t = info(name);
    if (t.dtype != Dtype::F64 && t.dtype != Dtype::F32 && t.dtype != Dtype::F16 && t.dtype != Dtype::BF16)
      detail::throw_format("safetensors: ", what_, ": ", op, ": tensor '", t.name, "' is ", dtype_name(t.dtype),
                           ", which does not convert to floating point (F64, F32, F16 and BF16 do); its raw "
                           "bytes are available through bytes()");
    // The file holds the bytes (checked at open); converted, an F16 tensor read as double takes 4 times as many.
    const std::uint64_t limit = limits_.max_tensor_bytes();
    if (std::uint64_t(t.numel()) > limit / sizeof(T))
      detail::throw_format("safetensors: ", what_, ": ", op, ": tensor '", t.name, "' of shape ",
                           detail::dims_str(t.shape), " read as ", std::is_same_v<T, float> ? "float" : "double",
                           " takes ", std::uint64_t(t.numel()), " x ", sizeof(T), " = ",
                           std::uint64_t(t.numel()) * sizeof(T), " bytes, more than the limit of ", limit,
                           " (ReadLimits::max_tensor_bytes)");
    return t;
  }

  template <class T>
  void convert_into(const TensorInfo& t, T* dst, const Context& ctx) const {
    detail::advise_pages(dst, std::size_t(t.numel()) * sizeof(T), detail::PageAdvice::huge);
    if (storage_->mapped()) detail::advise_pages(storage_->data() + t.begin, t.nbytes(), detail::PageAdvice::populate_read);
    detail::convert_elements<T>(t.dtype, storage_->data() + t.begin, dst, t.numel(), ctx);
    if (storage_->mapped()) detail::advise_pages(storage_->data() + t.begin, t.nbytes(), detail::PageAdvice::release);
  }

  template <int R>
  std::array<Index, R> checked_dims(const TensorInfo& t, const char* op) const {
    if (static_cast<int>(t.shape.size()) != R)
      detail::throw_format("safetensors: ", what_, ": ", op, ": tensor '", t.name, "' has shape ",
                           detail::dims_str(t.shape), ", expected rank ", R);
    std::array<Index, R> dims{};
    for (int i = 0; i < R; ++i) dims[i] = t.shape[i];
    return dims;
  }

  std::shared_ptr<const detail::SafeTensorsStorage> storage_;
  std::shared_ptr<const detail::SafeTensorsHeader> header_;
  std::string what_;
  ReadLimits limits_;
};

// Collects float and double tensors (stored as F32 and F64) and writes them as the reference writer does:
// data sorted by dtype (F64 first) then name, header JSON without spaces, padded with spaces to a multiple of
// 8 bytes so every tensor is aligned for zero-copy reading. Tensors are copied when added.
class SafeTensorsWriter {
 public:
  template <class T, int R>
  SafeTensorsWriter& add(const std::string& name, const Tensor<T, R>& tensor) {
    return add(name, tensor.data(), std::vector<Index>(tensor.dimensions().begin(), tensor.dimensions().end()));
  }

  // (shape) row-major values at data.
  template <class T>
  SafeTensorsWriter& add(const std::string& name, const T* data, const std::vector<Index>& shape) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "SafeTensorsWriter: float or double");
    check_name(name, "add");
    std::size_t count = 1;
    for (Index d : shape) {
      if (d < 0) detail::throw_shape("SafeTensorsWriter::add: tensor '", name, "' has a negative dimension in shape ",
                                     detail::dims_str(shape));
      count *= static_cast<std::size_t>(d);
    }
    Entry e;
    e.name = name;
    e.dtype = std::is_same_v<T, float> ? Dtype::F32 : Dtype::F64;
    e.shape = shape;
    e.bytes.assign(reinterpret_cast<const char*>(data), count * sizeof(T));
    names_.insert(name);
    entries_.push_back(std::move(e));
    return *this;
  }

  // Free-form string pairs stored under "__metadata__" (e.g. "format": "pt", which transformers checks).
  SafeTensorsWriter& metadata(const std::string& key, const std::string& value) {
    check_utf8(key, "metadata key");
    check_utf8(value, "metadata value");
    metadata_[key] = value;
    return *this;
  }

  // The whole file.
  std::string to_bytes() const {
    std::string out = header();
    for (const Entry* e : order()) out += e->bytes;
    return out;
  }

  void save(const std::string& path) const {
    const std::string h = header();
    std::ofstream f(path, std::ios::binary);
    if (!f) detail::throw_format("SafeTensorsWriter: cannot open '", path, "' for writing");
    f.write(h.data(), std::streamsize(h.size()));
    for (const Entry* e : order()) f.write(e->bytes.data(), std::streamsize(e->bytes.size()));
    f.flush();
    if (!f) detail::throw_format("SafeTensorsWriter: error writing '", path, "'");
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<Index> shape;
    std::string bytes;
  };

  static void check_utf8(const std::string& s, const char* what) {
    try {
      (void)nlohmann::json(s).dump();
    } catch (const nlohmann::json::type_error&) {
      detail::throw_shape("SafeTensorsWriter: ", what, " is not valid UTF-8: '", s, "'");
    }
  }

  void check_name(const std::string& name, const char* op) const {
    if (name == "__metadata__")
      detail::throw_shape("SafeTensorsWriter::", op, ": the name '__metadata__' is reserved for the metadata map");
    if (names_.count(name)) detail::throw_shape("SafeTensorsWriter::", op, ": duplicate tensor name '", name, "'");
    check_utf8(name, "tensor name");
  }

  std::vector<const Entry*> order() const {
    std::vector<const Entry*> o;
    for (const Entry& e : entries_) o.push_back(&e);
    std::sort(o.begin(), o.end(), [](const Entry* a, const Entry* b) {
      return a->dtype != b->dtype ? a->dtype > b->dtype : a->name < b->name;
    });
    return o;
  }

  // 8-byte length + JSON with __metadata__ first, then tensors in data order, fields dtype, shape, data_offsets.
  std::string header() const {
    std::string json = "{";
    if (!metadata_.empty()) {
      json += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata_) {
        json += detail::cat(first ? "" : ",", nlohmann::json(k).dump(), ':', nlohmann::json(v).dump());
        first = false;
      }
      json += '}';
    }
    std::size_t offset = 0;
    for (const Entry* e : order()) {
      if (json.size() > 1) json += ',';
      json += nlohmann::json(e->name).dump();
      json += ":{\"dtype\":\"";
      json += dtype_name(e->dtype);
      json += "\",\"shape\":[";
      for (std::size_t i = 0; i < e->shape.size(); ++i) (json += i ? "," : "") += std::to_string(e->shape[i]);
      json += "],\"data_offsets\":[";
      (json += std::to_string(offset)) += ',';
      offset += e->bytes.size();
      (json += std::to_string(offset)) += "]}";
    }
    json += '}';
    json.append((8 - json.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    std::uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + json;
  }

  std::vector<Entry> entries_;
  std::unordered_set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fovea
