// Packing variable-length token sequences (one per image) into a few fixed-length sequences, and back.
//
// NaViT ("Patch n' Pack", Dehghani et al. 2023) and the packed forward of every ViT tower share this
// bookkeeping: images keep their own number of tokens, are laid end to end in input order into sequences of
// at most max_seq_len tokens, and attention is kept inside each image through segment ids
// (AttentionMask<T>::segments), so packing costs sum_i n_i^2, not L^2.
#pragma once

#include <algorithm>
#include <vector>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {

// Where one image's tokens sit in a packed batch.
struct PackedSlot {
  Index sequence = 0;  // which packed sequence
  Index offset = 0;    // first token within it
  Index length = 0;    // number of tokens
};

// The layout of a packed batch: sequences (S) of seq_len tokens each (the longest packed sequence, at most
// max_seq_len; shorter ones are padded), and one slot per image in input order.
struct PackPlan {
  Index max_seq_len = 0;
  Index sequences = 0;
  Index seq_len = 0;
  std::vector<PackedSlot> slots;

  Index images() const { return Index(slots.size()); }

  // (S, seq_len): the image index of every token, -1 for padding. Feed to AttentionMask<T>::segments.
  Tensor<Index, 2> segment_ids() const {
    Tensor<Index, 2> ids(sequences, seq_len);
    ids.setConstant(-1);
    for (Index i = 0; i < images(); ++i) {
      const PackedSlot& s = slots[size_t(i)];
      std::fill_n(ids.data() + s.sequence * seq_len + s.offset, s.length, i);
    }
    return ids;
  }

  // Tokens that are padding, over all tokens: the share of work packing still wastes.
  double padding_fraction() const {
    Index used = 0;
    for (const PackedSlot& s : slots) used += s.length;
    const Index total = sequences * seq_len;
    return total == 0 ? 0.0 : double(total - used) / double(total);
  }
};

// lengths[i] tokens of image i -> a plan. Greedy in input order, as lucidrains' na_vit.py groups images: an
// image goes into the current sequence if it still fits, otherwise it opens a new one. Images are never
// split or reordered, so every sequence holds a run of consecutive images.
inline PackPlan plan_packing(const std::vector<Index>& lengths, Index max_seq_len) {
  const char* op = "plan_packing";
  if (max_seq_len <= 0) detail::throw_shape(op, ": expected max_seq_len > 0, but got ", max_seq_len);
  if (lengths.empty()) detail::throw_shape(op, ": expected at least one image, but got none");
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] <= 0)
      detail::throw_shape(op, ": expected every image to have at least one token, but image ", i, " has ", lengths[i]);
    if (lengths[i] > max_seq_len)
      detail::throw_shape(op, ": image ", i, " has ", lengths[i], " tokens, more than max_seq_len = ", max_seq_len,
                          "; raise max_seq_len or use a smaller image");
  }
  PackPlan plan;
  plan.max_seq_len = max_seq_len;
  Index used = 0;
  for (Index n : lengths) {
    if (plan.sequences == 0 || used + n > max_seq_len) {
      ++plan.sequences;
      used = 0;
    }
    plan.slots.push_back({plan.sequences - 1, used, n});
    used += n;
    plan.seq_len = std::max(plan.seq_len, used);
  }
  return plan;
}

// tokens[i] (n_i, D) laid out by plan -> (S, seq_len, D), padding zero.
template <class T>
Tensor<T, 3> pack_tokens(const std::vector<Tensor<T, 2>>& tokens, const PackPlan& plan) {
  const char* op = "pack_tokens";
  if (Index(tokens.size()) != plan.images())
    detail::throw_shape(op, ": expected ", plan.images(), " token tensors (one per image of the plan), but got ",
                        tokens.size());
  const Index d = tokens.empty() ? 0 : tokens[0].dimension(1);
  for (Index i = 0; i < plan.images(); ++i) {
    const auto& t = tokens[size_t(i)];
    if (t.dimension(0) != plan.slots[size_t(i)].length || t.dimension(1) != d)
      detail::throw_shape(op, ": expected image ", i, " to have shape (", plan.slots[size_t(i)].length, ", ", d,
                          "), but got ", detail::dims_str(t.dimensions()));
  }
  Tensor<T, 3> out(plan.sequences, plan.seq_len, d);
  out.setZero();
  for (Index i = 0; i < plan.images(); ++i) {
    const PackedSlot& s = plan.slots[size_t(i)];
    std::copy_n(tokens[size_t(i)].data(), s.length * d, out.data() + (s.sequence * plan.seq_len + s.offset) * d);
  }
  return out;
}

// (S, seq_len, D) -> one (n_i, D) tensor per image, in input order.
template <class T>
std::vector<Tensor<T, 2>> unpack_tokens(const Tensor<T, 3>& packed, const PackPlan& plan) {
  if (packed.dimension(0) != plan.sequences || packed.dimension(1) != plan.seq_len)
    detail::throw_shape("unpack_tokens: expected packed tokens of shape (", plan.sequences, ", ", plan.seq_len,
                        ", D) as the plan lays them out, but got ", detail::dims_str(packed.dimensions()));
  const Index d = packed.dimension(2);
  std::vector<Tensor<T, 2>> out;
  out.reserve(plan.slots.size());
  for (const PackedSlot& s : plan.slots) {
    Tensor<T, 2> t(s.length, d);
    std::copy_n(packed.data() + (s.sequence * plan.seq_len + s.offset) * d, s.length * d, t.data());
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace fovea
