#pragma once
// Context: the thread pool every op runs on. One process-wide default; pass your own to pin a count.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <mutex>
#include <thread>
#if defined(__GLIBC__) && !defined(FOVEA_NO_MALLOC_TUNING)
#include <malloc.h>
#endif

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

// Eigen's GEMM allocates its packing buffers on every call. With glibc's default, adaptive thresholds
// those buffers can be mmapped and unmapped (or trimmed) per call, and every call then page-faults them
// in again: measured here, a 64x96x576 GEMM fell from 140 to 8 GFLOP/s. Fixing both thresholds keeps
// them in the heap. Done once per process, when the first Context is made; define
// FOVEA_NO_MALLOC_TUNING to leave the process's allocator settings alone.
inline void tune_allocator_once() {
#if defined(__GLIBC__) && !defined(FOVEA_NO_MALLOC_TUNING)
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
  });
#endif
}

}  // namespace detail

class Context {
 public:
  // Threads from FOVEA_NUM_THREADS, else the hardware's count.
  Context() : Context(default_num_threads()) {}

  explicit Context(int num_threads) : num_threads_(num_threads) {
    if (num_threads < 1) detail::throw_shape("Context: num_threads must be >= 1, got ", num_threads);
    detail::tune_allocator_once();
    pool_ = std::make_unique<Eigen::ThreadPool>(num_threads);
    device_ = std::make_unique<Eigen::ThreadPoolDevice>(pool_.get(), num_threads);
  }

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int num_threads() const { return num_threads_; }

  // For Eigen tensor expressions: out.device(ctx.device()) = expr;
  const Eigen::ThreadPoolDevice& device() const { return *device_; }

  // Runs f(i) for every i in [0, n), spread over the pool, and returns when all are done. Tasks are
  // handed out one index at a time, so results must not depend on which thread ran an index. Called
  // from one of this pool's own threads (a nested call), it runs inline, so nesting cannot deadlock.
  template <class F>
  void parallel_for(Index n, F&& f) const {
    if (n <= 0) return;
    const Index workers = std::min<Index>(n, num_threads_);
    if (workers <= 1 || pool_->CurrentThreadId() != -1) {
      for (Index i = 0; i < n; ++i) f(i);
      return;
    }
    std::atomic<Index> next{0};
    Eigen::Barrier done(static_cast<unsigned>(workers));
    // First exception wins; the others are dropped after every worker has stopped.
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    auto work = [&] {
      try {
        for (Index i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) f(i);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
      done.Notify();
    };
    for (Index t = 0; t < workers; ++t) pool_->Schedule(work);
    done.Wait();
    if (error) std::rethrow_exception(error);
  }

  // Splits [0, n) into at most num_threads() contiguous ranges of whole `grain`s and runs f(begin, end)
  // on each. For loops whose per-index work is small.
  template <class F>
  void parallel_range(Index n, Index grain, F&& f) const {
    if (n <= 0) return;
    grain = std::max<Index>(grain, 1);
    const Index units = (n + grain - 1) / grain;
    const Index parts = std::min<Index>(units, num_threads_);
    const Index per = (units + parts - 1) / parts;
    parallel_for(parts, [&](Index p) {
      const Index b = std::min(n, p * per * grain), e = std::min(n, (p + 1) * per * grain);
      if (b < e) f(b, e);
    });
  }

  static int default_num_threads() {
    if (const char* env = std::getenv("FOVEA_NUM_THREADS")) {
      char* end = nullptr;
      const long v = std::strtol(env, &end, 10);
      if (end == env || *end != '\0' || v < 1 || v > 4096)
        detail::throw_shape("Context: FOVEA_NUM_THREADS must be a whole number from 1 to 4096, got '", env, "'");
      return static_cast<int>(v);
    }
    return std::max(1u, std::thread::hardware_concurrency());
  }

 private:
  int num_threads_;
  std::unique_ptr<Eigen::ThreadPool> pool_;
  std::unique_ptr<Eigen::ThreadPoolDevice> device_;
};

// The process-wide context, made on first use.
inline const Context& default_context() {
  static const Context ctx;
  return ctx;
}

}  // namespace fovea
