#pragma once
// NumPy .npy files: float32 / float64, C order, versions 1.0-3.0. Reading converts to the scalar asked for.
// The header's length and shape are checked against the file's length and the ReadLimits ceilings before
// anything is allocated for the data (read_npy_array reads the header first, then only the data it declares).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/limits.hpp"

namespace fovea {

// A .npy array of any rank, its values converted to T.
template <class T>
struct NpyArray {
  std::vector<Index> shape;
  std::vector<T> values;
  bool was_double = false;  // stored as float64 in the file
};

namespace detail {

inline std::string read_file_bytes(const std::string& path, const char* op) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_format(op, ": cannot open '", path, "'");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw_format(op, ": error reading '", path, "'");
  return bytes;
}

// Parses the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<Index> shape;
  std::size_t data_offset = 0;
};

// Where the header dict starts and how long it is, from the first (at most 12) bytes of a `size`-byte file,
// checked against the file's length and the header ceiling.
struct NpyExtent {
  std::size_t start = 0, hlen = 0;
};

inline NpyExtent npy_extent(const char* p, std::size_t size, const std::string& what, const ReadLimits& limits) {
  auto fail = [&](std::size_t at, const std::string& why) { throw_format("read_npy: ", what, ": ", why, " at byte ", at); };
  static const char magic[] = "\x93NUMPY";
  if (size < 10 || std::memcmp(p, magic, 6) != 0) fail(0, "not a .npy file (bad magic)");
  const unsigned major = static_cast<unsigned char>(p[6]);
  NpyExtent e;
  if (major == 1) {
    e.hlen = static_cast<unsigned char>(p[8]) | (static_cast<unsigned char>(p[9]) << 8);
    e.start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail(8, "truncated header length");
    for (int i = 3; i >= 0; --i) e.hlen = (e.hlen << 8) | static_cast<unsigned char>(p[8 + i]);
    e.start = 12;
  } else {
    fail(6, cat("unsupported version ", major));
  }
  if (e.hlen > size - e.start)
    fail(e.start, cat("header length ", e.hlen, " runs past the end of the ", size, "-byte file"));
  if (e.hlen > limits.max_header_bytes())
    fail(e.start, cat("header length ", e.hlen, " exceeds the limit of ", limits.max_header_bytes(),
                      " bytes (ReadLimits::max_header_bytes)"));
  return e;
}

// The header of a `size`-byte file whose first start + hlen bytes are at p.
inline NpyHeader parse_npy_header(const char* p, std::size_t size, const std::string& what,
                                  const ReadLimits& limits = {}) {
  auto fail = [&](std::size_t at, const std::string& why) -> void {
    throw_format("read_npy: ", what, ": ", why, " at byte ", at);
  };
  const NpyExtent e = npy_extent(p, size, what, limits);
  const std::size_t start = e.start, hlen = e.hlen;
  NpyHeader h;
  h.data_offset = start + hlen;
  std::size_t i = start;
  const std::size_t end = start + hlen;
  auto ws = [&] { while (i < end && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t')) ++i; };
  auto expect = [&](char c) {
    ws();
    if (i >= end || p[i] != c) fail(i, cat("expected '", c, "' in header"));
    ++i;
  };
  auto quoted = [&] {
    ws();
    if (i >= end || (p[i] != '\'' && p[i] != '"')) fail(i, "expected a quoted string in header");
    const char q = p[i++];
    const std::size_t b = i;
    while (i < end && p[i] != q) ++i;
    if (i >= end) fail(b, "unterminated string in header");
    return std::string(p + b, p + i++);
  };
  bool have_descr = false, have_order = false, have_shape = false;
  expect('{');
  for (;;) {
    ws();
    if (i < end && p[i] == '}') break;
    const std::string key = quoted();
    expect(':');
    ws();
    if (key == "descr") {
      h.descr = quoted();
      have_descr = true;
    } else if (key == "fortran_order") {
      if (end - i >= 4 && std::memcmp(p + i, "True", 4) == 0) { h.fortran_order = true; i += 4; }
      else if (end - i >= 5 && std::memcmp(p + i, "False", 5) == 0) { h.fortran_order = false; i += 5; }
      else fail(i, "fortran_order must be True or False");
      have_order = true;
    } else if (key == "shape") {
      expect('(');
      for (;;) {
        ws();
        if (i < end && p[i] == ')') { ++i; break; }
        if (i >= end || p[i] < '0' || p[i] > '9') fail(i, "expected a dimension in shape");
        std::uint64_t v = 0;
        while (i < end && p[i] >= '0' && p[i] <= '9') {
          v = v * 10 + std::uint64_t(p[i++] - '0');
          if (v > (std::uint64_t(1) << 48)) fail(i, "dimension too large");
        }
        h.shape.push_back(static_cast<Index>(v));
        if (h.shape.size() > 32) fail(i, "more than 32 dimensions");
        ws();
        if (i < end && p[i] == ',') ++i;
      }
      have_shape = true;
    } else {
      fail(i, cat("unknown header key '", key, "'"));
    }
    ws();
    if (i < end && p[i] == ',') ++i;
  }
  if (!have_descr || !have_order || !have_shape) fail(start, "header lacks descr, fortran_order or shape");
  return h;
}

// What a header says about the data, checked against the file's length and the ceilings.
struct NpyData {
  std::size_t item = 0;     // 4 or 8 bytes per stored element
  std::uint64_t count = 0;  // elements
};

template <class T>
NpyData check_npy_data(const NpyHeader& h, std::size_t size, const std::string& what, const ReadLimits& limits) {
  if (h.fortran_order) throw_format("read_npy: ", what, ": Fortran-order arrays are not supported; save with C order");
  NpyData d;
  if (h.descr == "<f4" || h.descr == "=f4") d.item = 4;
  else if (h.descr == "<f8" || h.descr == "=f8") d.item = 8;
  else throw_format("read_npy: ", what, ": dtype '", h.descr, "' is not supported (float32 or float64, little-endian)");
  d.count = 1;
  for (Index n : h.shape) {
    if (n != 0 && d.count > std::numeric_limits<std::uint64_t>::max() / std::uint64_t(n))
      throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " overflows");
    d.count *= std::uint64_t(n);
  }
  const std::size_t avail = size - h.data_offset;
  // A dimension of an array with data is at most its element count, bounded by the file; an empty array's other
  // dimensions are held to the file's length too (a reader takes sizes from shapes).
  if (d.count == 0)
    for (Index n : h.shape)
      if (std::uint64_t(n) > size)
        throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " has a dimension of ", n, ", more than the ",
                     size, "-byte file's length (the array has no elements, so no data bounds it)");
  if (d.count > avail / d.item || d.count * d.item != avail)
    throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " of ", h.descr, " needs ", d.count, " x ", d.item,
                 " = ", d.count * d.item, " bytes, but the file holds ", avail, " bytes of data from offset ",
                 h.data_offset);
  // The file holds the bytes; reading them as T may still take more than the caller accepts.
  if (d.count > limits.max_tensor_bytes() / sizeof(T))
    throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " read as ", sizeof(T) == 4 ? "float" : "double",
                 " takes ", d.count, " x ", sizeof(T), " = ", d.count * sizeof(T), " bytes, more than the limit of ",
                 limits.max_tensor_bytes(), " (ReadLimits::max_tensor_bytes)");
  return d;
}

// n stored elements of `item` bytes at src (any alignment) -> T.
template <class T>
void convert_npy(const char* src, std::size_t item, T* dst, std::size_t n) {
  if (item == sizeof(T)) {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  } else if (item == 4) {
    for (std::size_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, src + 4 * k, 4);
      dst[k] = static_cast<T>(v);
    }
  } else {
    for (std::size_t k = 0; k < n; ++k) {
      double v;
      std::memcpy(&v, src + 8 * k, 8);
      dst[k] = static_cast<T>(v);  // rounds to nearest
    }
  }
}

template <class T>
NpyArray<T> parse_npy(const char* p, std::size_t size, const std::string& what, const ReadLimits& limits = {}) {
  const NpyHeader h = parse_npy_header(p, size, what, limits);
  const NpyData d = check_npy_data<T>(h, size, what, limits);
  NpyArray<T> out;
  out.shape = h.shape;
  out.was_double = d.item == 8;
  out.values.resize(std::size_t(d.count));
  convert_npy(p + h.data_offset, d.item, out.values.data(), std::size_t(d.count));
  return out;
}

// A .npy file opened for reading: its header is read and checked first, then `read_data` fills a destination
// the caller allocated from the checked header, so nothing is allocated for data the file does not hold.
template <class T>
class NpyFileReader {
 public:
  NpyFileReader(const std::string& path, const ReadLimits& limits)
      : what_("'" + path + "'"), f_(path, std::ios::binary) {
    if (!f_) throw_format("read_npy: cannot open ", what_);
    f_.seekg(0, std::ios::end);
    const std::streamoff len = f_.tellg();
    f_.seekg(0, std::ios::beg);
    if (len < 0 || !f_) {  // not seekable (a pipe): read it whole
      f_.clear();
      whole_ = std::string((std::istreambuf_iterator<char>(f_)), std::istreambuf_iterator<char>());
      if (f_.bad()) throw_format("read_npy: error reading ", what_);
      header_ = parse_npy_header(whole_.data(), whole_.size(), what_, limits);
      data_ = check_npy_data<T>(header_, whole_.size(), what_, limits);
      return;
    }
    size_ = std::size_t(len);
    std::string head(std::min<std::size_t>(size_, 12), '\0');
    read(head.data(), head.size());
    const NpyExtent e = npy_extent(head.data(), size_, what_, limits);  // throws before the header is read
    head.resize(e.start + e.hlen);
    read(head.data() + std::min<std::size_t>(size_, 12), head.size() - std::min<std::size_t>(size_, 12));
    header_ = parse_npy_header(head.data(), size_, what_, limits);
    data_ = check_npy_data<T>(header_, size_, what_, limits);
    f_.seekg(std::streamoff(header_.data_offset), std::ios::beg);
  }

  const NpyHeader& header() const { return header_; }
  const NpyData& data() const { return data_; }
  const std::string& what() const { return what_; }

  // The data, converted, into dst (data().count elements).
  void read_data(T* dst) {
    const std::size_t n = std::size_t(data_.count);
    if (!whole_.empty()) return convert_npy(whole_.data() + header_.data_offset, data_.item, dst, n);
    if (data_.item == sizeof(T)) return read(reinterpret_cast<char*>(dst), n * sizeof(T));
    std::vector<char> chunk;
    for (std::size_t k = 0; k < n;) {
      const std::size_t m = std::min<std::size_t>(n - k, 1 << 16);
      chunk.resize(m * data_.item);
      read(chunk.data(), chunk.size());
      convert_npy(chunk.data(), data_.item, dst + k, m);
      k += m;
    }
  }

 private:
  void read(char* dst, std::size_t n) {
    if (n == 0) return;
    f_.read(dst, std::streamsize(n));
    if (std::size_t(f_.gcount()) != n)
      throw_format("read_npy: error reading ", what_, ": the file ended early (it changed while being read?)");
  }

  std::string what_;
  std::ifstream f_;
  std::size_t size_ = 0;
  std::string whole_;
  NpyHeader header_;
  NpyData data_;
};

template <class T>
const char* npy_descr() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "npy: float or double");
  return std::is_same_v<T, float> ? "<f4" : "<f8";
}

}  // namespace detail

// A whole .npy file already in memory (e.g. downloaded), any rank, converted to T; `label` names it in errors.
template <class T>
NpyArray<T> read_npy_bytes(const std::string& bytes, const std::string& label = "<memory>",
                           const ReadLimits& limits = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "read_npy: float or double");
  return detail::parse_npy<T>(bytes.data(), bytes.size(), "'" + label + "'", limits);
}

// Any rank, converted to T.
template <class T>
NpyArray<T> read_npy_array(const std::string& path, const ReadLimits& limits = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "read_npy: float or double");
  detail::NpyFileReader<T> f(path, limits);
  NpyArray<T> out;
  out.shape = f.header().shape;
  out.was_double = f.data().item == 8;
  out.values.resize(std::size_t(f.data().count));
  f.read_data(out.values.data());
  return out;
}

// Exactly rank R, converted to T.
template <class T, int R>
Tensor<T, R> read_npy(const std::string& path, const ReadLimits& limits = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "read_npy: float or double");
  detail::NpyFileReader<T> f(path, limits);
  const std::vector<Index>& shape = f.header().shape;
  if (static_cast<int>(shape.size()) != R)
    detail::throw_format("read_npy: '", path, "' holds shape ", detail::dims_str(shape), ", expected rank ", R);
  std::array<Index, R> dims{};
  for (int i = 0; i < R; ++i) dims[std::size_t(i)] = shape[std::size_t(i)];
  Tensor<T, R> t(dims);
  f.read_data(t.data());
  return t;
}

// Writes C-order float32 or float64 (the scalar of the data), version 1.0.
template <class T>
void write_npy(const std::string& path, const T* data, const std::vector<Index>& shape) {
  std::string dict = detail::cat("{'descr': '", detail::npy_descr<T>(), "', 'fortran_order': False, 'shape': (");
  std::size_t count = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict += detail::cat(shape[i], shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    count *= static_cast<std::size_t>(shape[i]);
  }
  dict += "), }";
  std::size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) detail::throw_format("write_npy: cannot open '", path, "' for writing");
  const unsigned short hlen = static_cast<unsigned short>(dict.size());
  f.write("\x93NUMPY\x01\x00", 8);
  const char lenb[2] = {char(hlen & 0xff), char(hlen >> 8)};
  f.write(lenb, 2);
  f.write(dict.data(), std::streamsize(dict.size()));
  f.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(T)));
  if (!f) detail::throw_format("write_npy: error writing '", path, "'");
}

template <class T, int R>
void write_npy(const std::string& path, const Tensor<T, R>& t) {
  std::vector<Index> shape(t.dimensions().begin(), t.dimensions().end());
  write_npy(path, t.data(), shape);
}

}  // namespace fovea
