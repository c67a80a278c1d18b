#pragma once
// Context: the thread pool every op runs on. One process-wide default; pass your own to pin a count.
#include <algorithm>
#include <atomic>
#include <condition_variable>
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

// True while this thread runs its own share of a parallel_for, so that a nested call runs inline.
inline bool& inside_parallel_for() {
  thread_local bool inside = false;
  return inside;
}

// Eigen::Barrier's protocol (a count of 2 per notification and a waiter bit, so that a notifier whose
// count reaches zero before the waiter sleeps touches nothing afterwards) with a short spin before the
// waiter sleeps: the caller of parallel_for usually finishes its share a few microseconds before the pool
// thread, and sleeping then costs a futex wake-up of tens of microseconds on a VM.
class SpinBarrier {
 public:
  explicit SpinBarrier(unsigned count) : state_(count << 1) {}
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;

  void notify() {
    const unsigned v = state_.fetch_sub(2, std::memory_order_acq_rel) - 2;
    if (v != 1) return;  // not the last, or the waiter is not asleep: nothing of this object is touched again
    std::unique_lock<std::mutex> l(mu_);
    notified_ = true;
    cv_.notify_all();
  }

  void wait() {
    for (int spin = 0; spin < kSpins; ++spin) {
      if ((state_.load(std::memory_order_acquire) >> 1) == 0) return;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if ((state_.fetch_or(1, std::memory_order_acq_rel) >> 1) == 0) return;
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return notified_; });
  }

 private:
  static constexpr int kSpins = 1 << 14;  // about 100-300 microseconds
  std::atomic<unsigned> state_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace detail

class Context {
 public:
  // Threads from FOVEA_NUM_THREADS, else the hardware's count.
  Context() : Context(default_num_threads()) {}

  explicit Context(int num_threads) : num_threads_(num_threads) {
    if (num_threads < 1) detail::throw_shape("Context: num_threads must be >= 1, got ", num_threads);
    detail::tune_allocator_once();
    // The caller is the other worker (parallel_for); a spare pool thread would only spin beside it.
    pool_ = std::make_unique<Eigen::ThreadPool>(std::max(1, num_threads - 1));
    device_ = std::make_unique<Eigen::ThreadPoolDevice>(pool_.get(), num_threads);
  }

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int num_threads() const { return num_threads_; }

  // For Eigen tensor expressions: out.device(ctx.device()) = expr; Eigen runs them on the pool's
  // num_threads() - 1 threads, and on the caller too when an expression splits into few blocks.
  const Eigen::ThreadPoolDevice& device() const { return *device_; }

  // Runs f(i) for every i in [0, n), spread over the pool, and returns when all are done. Tasks are
  // handed out one index at a time, so results must not depend on which thread ran an index. The calling
  // thread is one of the workers (the pool has num_threads() - 1 threads): a call then wakes one thread
  // fewer and starts at once, which matters for a ViT-B's ~90 calls per forward; measured on this VM, a
  // call cost 20-30 us of wake-ups and sleeps when the caller only waited. Called from inside f (a nested
  // call, on the pool or on the caller), it runs inline, so nesting cannot deadlock.
  template <class F>
  void parallel_for(Index n, F&& f) const {
    if (n <= 0) return;
    const Index workers = std::min<Index>(n, num_threads_);
    if (workers <= 1 || pool_->CurrentThreadId() != -1 || detail::inside_parallel_for()) {
      for (Index i = 0; i < n; ++i) f(i);
      return;
    }
    std::atomic<Index> next{0};
    detail::SpinBarrier done(static_cast<unsigned>(workers - 1));
    // First exception wins; the others are dropped after every worker has stopped.
    std::exception_ptr error;
    std::atomic<bool> failed{false};
    auto work = [&] {
      try {
        for (Index i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) f(i);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    };
    for (Index t = 1; t < workers; ++t)
      pool_->Schedule([&] {
        work();
        done.notify();
      });
    {
      detail::inside_parallel_for() = true;
      work();
      detail::inside_parallel_for() = false;
    }
    done.wait();
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
