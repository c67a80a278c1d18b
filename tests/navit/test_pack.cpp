// plan_packing, pack_tokens, unpack_tokens: greedy in-order packing as na_vit.py groups images.
#include <gtest/gtest.h>

#include "fovea/navit/pack.hpp"
#include "../common/reference.hpp"

namespace test_pack {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

TEST(PlanPacking, GreedyInInputOrder) {
  // 3 + 4 = 7 fits in 8; 5 does not fit after them, opens sequence 1; 2 still fits there (7); 8 opens 2.
  const PackPlan p = plan_packing({3, 4, 5, 2, 8}, 8);
  EXPECT_EQ(p.sequences, 3);
  EXPECT_EQ(p.seq_len, 8);
  const std::vector<std::array<Index, 3>> want = {{0, 0, 3}, {0, 3, 4}, {1, 0, 5}, {1, 5, 2}, {2, 0, 8}};
  ASSERT_EQ(p.slots.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(p.slots[i].sequence, want[i][0]) << i;
    EXPECT_EQ(p.slots[i].offset, want[i][1]) << i;
    EXPECT_EQ(p.slots[i].length, want[i][2]) << i;
  }
  // Never reorders: the 1-token image after the 8 cannot go back to sequence 0's free slot.
  const PackPlan q = plan_packing({3, 6, 1}, 8);
  EXPECT_EQ(q.sequences, 2);
  EXPECT_EQ(q.slots[2].sequence, 1);
  EXPECT_EQ(q.seq_len, 7);
}

TEST(PlanPacking, SegmentIdsAndPadding) {
  const PackPlan p = plan_packing({2, 3, 4}, 5);
  const Tensor<Index, 2> ids = p.segment_ids();
  ASSERT_EQ(ids.dimension(0), 2);
  ASSERT_EQ(ids.dimension(1), 5);
  const Index want[2][5] = {{0, 0, 1, 1, 1}, {2, 2, 2, 2, -1}};
  for (int s = 0; s < 2; ++s)
    for (int t = 0; t < 5; ++t) EXPECT_EQ(ids(s, t), want[s][t]) << s << "," << t;
  EXPECT_DOUBLE_EQ(p.padding_fraction(), 1.0 / 10.0);
}

TEST(PackTokens, RoundTrip) {
  std::vector<Tensor<float, 2>> toks;
  for (Index n : {3, 1, 5, 2}) {
    Tensor<float, 2> t(n, 4);
    for (Index i = 0; i < t.size(); ++i) t.data()[i] = float(100 * toks.size() + i);
    toks.push_back(t);
  }
  const PackPlan p = plan_packing({3, 1, 5, 2}, 6);
  const Tensor<float, 3> packed = pack_tokens(toks, p);
  EXPECT_EQ(packed.dimension(0), p.sequences);
  EXPECT_EQ(packed.dimension(2), 4);
  const Tensor<Index, 2> ids = p.segment_ids();
  for (Index s = 0; s < packed.dimension(0); ++s)
    for (Index t = 0; t < packed.dimension(1); ++t)
      if (ids(s, t) < 0)
        for (Index c = 0; c < 4; ++c) EXPECT_EQ(packed(s, t, c), 0.0f);
  const auto back = unpack_tokens(packed, p);
  ASSERT_EQ(back.size(), toks.size());
  for (size_t i = 0; i < toks.size(); ++i) {
    ASSERT_EQ(back[i].dimensions(), toks[i].dimensions());
    for (Index j = 0; j < toks[i].size(); ++j) EXPECT_EQ(back[i].data()[j], toks[i].data()[j]);
  }
}

TEST(PackTokens, BadInput) {
  EXPECT_TRUE(test::throws_with<ShapeError>([] { plan_packing({3, 9}, 8); }, {"image 1 has 9 tokens, more than max_seq_len = 8"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { plan_packing({3, 0}, 8); }, {"image 1 has 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { plan_packing({}, 8); }, {"at least one image"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { plan_packing({1}, 0); }, {"max_seq_len > 0"}));
  const PackPlan p = plan_packing({2, 2}, 4);
  std::vector<Tensor<float, 2>> one(1, Tensor<float, 2>(2, 3));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { pack_tokens(one, p); }, {"expected 2 token tensors"}));
  std::vector<Tensor<float, 2>> bad = {Tensor<float, 2>(2, 3), Tensor<float, 2>(3, 3)};
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { pack_tokens(bad, p); }, {"image 1 to have shape (2, 3)"}));
  Tensor<float, 3> wrong(2, 4, 3);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { unpack_tokens(wrong, p); }, {"(1, 4, D)"}));
}

}  // namespace test_pack
