#pragma once
// Thread-reused scratch buffers, the one mechanism behind conv2d's, Winograd's and the GEMM kernel's.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fovea {
namespace detail {

// n elements of T: one buffer per thread and (Owner, Slot), grown to the largest request that thread has
// made and never shrunk, so the steady state allocates (and page-faults) nothing. Owner is a tag type that
// gives each user its own slots. The start is 64-byte aligned, so packed SIMD data sits in whole lines.
template <class T, class Owner, int Slot>
T* thread_scratch(std::size_t n) {
  constexpr std::size_t kPad = 64 / sizeof(T);
  thread_local std::vector<T> buf;
  if (buf.size() < n + kPad) buf.resize(n + kPad);
  const auto p = reinterpret_cast<std::uintptr_t>(buf.data());
  return buf.data() + ((64 - p % 64) % 64) / sizeof(T);
}

}  // namespace detail
}  // namespace fovea
