#pragma once
// NumPy .npy files: float32 / float64, C order, versions 1.0-3.0. Reading converts to the scalar asked for.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

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

inline NpyHeader parse_npy_header(const char* p, std::size_t size, const std::string& what) {
  auto fail = [&](std::size_t at, const std::string& why) -> void {
    throw_format("read_npy: ", what, ": ", why, " at byte ", at);
  };
  static const char magic[] = "\x93NUMPY";
  if (size < 10 || std::memcmp(p, magic, 6) != 0) fail(0, "not a .npy file (bad magic)");
  const unsigned major = static_cast<unsigned char>(p[6]);
  std::size_t hlen = 0, start = 0;
  if (major == 1) {
    hlen = static_cast<unsigned char>(p[8]) | (static_cast<unsigned char>(p[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail(8, "truncated header length");
    hlen = 0;
    for (int i = 3; i >= 0; --i) hlen = (hlen << 8) | static_cast<unsigned char>(p[8 + i]);
    start = 12;
  } else {
    fail(6, cat("unsupported version ", major));
  }
  if (hlen > size - start) fail(start, cat("header length ", hlen, " runs past the end of the ", size, "-byte file"));
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

template <class T>
NpyArray<T> parse_npy(const char* p, std::size_t size, const std::string& what) {
  const NpyHeader h = parse_npy_header(p, size, what);
  if (h.fortran_order) throw_format("read_npy: ", what, ": Fortran-order arrays are not supported; save with C order");
  std::size_t item = 0;
  if (h.descr == "<f4" || h.descr == "=f4") item = 4;
  else if (h.descr == "<f8" || h.descr == "=f8") item = 8;
  else throw_format("read_npy: ", what, ": dtype '", h.descr, "' is not supported (float32 or float64, little-endian)");
  std::uint64_t count = 1;
  for (Index d : h.shape) {
    if (d != 0 && count > std::numeric_limits<std::uint64_t>::max() / std::uint64_t(d))
      throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " overflows");
    count *= std::uint64_t(d);
  }
  const std::size_t avail = size - h.data_offset;
  if (count > avail / item || count * item != avail)
    throw_format("read_npy: ", what, ": shape ", dims_str(h.shape), " of ", h.descr, " needs ", count, " x ", item, " = ",
                 count * item, " bytes, but the file holds ", avail, " bytes of data from offset ", h.data_offset);
  NpyArray<T> out;
  out.shape = h.shape;
  out.was_double = item == 8;
  out.values.resize(count);
  const char* d = p + h.data_offset;
  for (std::size_t k = 0; k < count; ++k) {
    if (item == 4) {
      float v;
      std::memcpy(&v, d + 4 * k, 4);
      out.values[k] = static_cast<T>(v);
    } else {
      double v;
      std::memcpy(&v, d + 8 * k, 8);
      out.values[k] = static_cast<T>(v);
    }
  }
  return out;
}

template <class T>
const char* npy_descr() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "npy: float or double");
  return std::is_same_v<T, float> ? "<f4" : "<f8";
}

}  // namespace detail

// Any rank, converted to T.
template <class T>
NpyArray<T> read_npy_array(const std::string& path) {
  const std::string bytes = detail::read_file_bytes(path, "read_npy");
  return detail::parse_npy<T>(bytes.data(), bytes.size(), "'" + path + "'");
}

// Exactly rank R, converted to T.
template <class T, int R>
Tensor<T, R> read_npy(const std::string& path) {
  NpyArray<T> a = read_npy_array<T>(path);
  if (static_cast<int>(a.shape.size()) != R)
    detail::throw_format("read_npy: '", path, "' holds shape ", detail::dims_str(a.shape), ", expected rank ", R);
  std::array<Index, R> dims{};
  for (int i = 0; i < R; ++i) dims[i] = a.shape[i];
  Tensor<T, R> t(dims);
  if (!a.values.empty()) std::memcpy(t.data(), a.values.data(), a.values.size() * sizeof(T));
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
