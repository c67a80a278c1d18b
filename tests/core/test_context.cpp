#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <stdexcept>
#include <vector>

#include "common/reference.hpp"
#include "fovea/core/context.hpp"

namespace test_context {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

TEST(Context, RunsEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    Context ctx(threads);
    std::vector<std::atomic<int>> hits(1000);
    ctx.parallel_for(1000, [&](Index i) { hits[i]++; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    std::vector<int> covered(997, 0);
    ctx.parallel_range(997, 16, [&](Index b, Index e) { for (Index i = b; i < e; ++i) covered[i]++; });
    for (int c : covered) EXPECT_EQ(c, 1);
  }
}

TEST(Context, NestedCallsRunInline) {
  Context ctx(2);
  std::atomic<int> total{0};
  ctx.parallel_for(4, [&](Index) { ctx.parallel_for(8, [&](Index) { total++; }); });
  EXPECT_EQ(total.load(), 32);
}

// The calling thread works through indices too, beside num_threads() - 1 pool threads; a nested call runs
// inline on whichever thread made it, the caller included.
TEST(Context, CallerIsOneOfTheWorkers) {
  for (int threads : {2, 3}) {
    Context ctx(threads);
    std::mutex mu;
    std::set<std::thread::id> ran;
    std::atomic<int> nested_elsewhere{0};
    ctx.parallel_for(200, [&](Index) {
      const auto me = std::this_thread::get_id();
      {
        std::lock_guard<std::mutex> l(mu);
        ran.insert(me);
      }
      ctx.parallel_for(4, [&](Index) { nested_elsewhere += std::this_thread::get_id() != me; });
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // so that every worker gets some indices
    });
    EXPECT_LE(ran.size(), std::size_t(threads));
    EXPECT_EQ(ran.count(std::this_thread::get_id()), 1u) << "the caller ran no index";
    EXPECT_EQ(nested_elsewhere.load(), 0);
  }
}

TEST(Context, PropagatesExceptions) {
  Context ctx(2);
  EXPECT_THROW(ctx.parallel_for(100, [&](Index i) { if (i == 37) throw std::runtime_error("boom"); }),
               std::runtime_error);
}

TEST(Context, RejectsBadThreadCounts) {
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Context c(0); }, {"Context", "num_threads", "0"}));
  setenv("FOVEA_NUM_THREADS", "abc", 1);
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Context c; }, {"FOVEA_NUM_THREADS", "'abc'"}));
  setenv("FOVEA_NUM_THREADS", "3", 1);
  EXPECT_EQ(Context().num_threads(), 3);
  unsetenv("FOVEA_NUM_THREADS");
}

}  // namespace test_context
