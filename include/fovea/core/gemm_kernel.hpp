#pragma once
// fovea's single-precision GEMM kernel for AVX-512 machines, behind gemm_serial (core/gemm.hpp).
//
// Why not Eigen's: Eigen 3.4's float kernel on AVX-512 is a 48 x 4 tile whose three lhs packets GCC folds
// into the FMAs as memory operands, so each step issues 16 loads for 12 FMAs and the load ports, not the
// FMA pipes, set the pace. On this project's machine (AMD Zen 5: two full-width 512-bit FMA pipes per core,
// measured peak 381-434 GFLOP/s on 2 cores, varying with the VM's clock, by bench_gemm's BM_fma_peak) Eigen's SGEMM reached 55-58% of
// that peak. This kernel holds an 8 x 48 tile of C in 24 registers; a step loads 3 packets of B and
// broadcasts 8 values of A, 11 loads for 24 FMAs, so the FMA pipes are the limit.
//
// Layout (row-major C, as everywhere in fovea): C (m, n) = alpha * op(A) (m, k) op(B) (k, n) + beta * C.
// Blocking follows Goto/BLIS with the operands' roles swapped for row-major: a block of B (kc x nc, packed
// into 48-column micro-panels) stays in L2; the kernel reads 8 rows of A where they lie (kc x 8, 8 KiB at
// kc = 256, in L1 while it walks every B micro-panel of the block). Edge tiles are computed whole from
// zero-padded copies and stored through AVX-512 masks, so any m, n, k and leading dimension work.
#include <algorithm>
#include <cstdint>

#include "fovea/core/scratch.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {
// An epilogue that does nothing (see gemm_serial's).
struct NoEpilogue {
  template <class T>
  void operator()(T*, Index, Index, Index, Index, Index) const {}
};
}  // namespace detail
}  // namespace fovea

#if defined(__AVX512F__) && !defined(FOVEA_NO_GEMM_KERNEL)
#define FOVEA_GEMM_KERNEL 1
#include <immintrin.h>

namespace fovea {
namespace detail {

constexpr Index kSgemmMR = 8;    // rows of C per tile: values of A broadcast per step
constexpr Index kSgemmNR = 48;   // columns of C per tile: 3 packets of B per step
constexpr Index kSgemmKC = 256;  // largest depth of a block (the depth is cut into equal blocks up to this)
constexpr Index kSgemmNC = 576;  // columns of a B block: 12 micro-panels, 576 KiB at kc = 256 (in L2)

// The kernel's thread-reused buffers (core/scratch.hpp; 64-byte aligned, so a packed packet is one line):
// slot 0 the packed B block, 1 an edge tile's copy of A, 2 a transposed product.
struct SgemmScratch;
template <int Slot>
float* sgemm_buffer(std::size_t n) {
  return thread_scratch<float, SgemmScratch, Slot>(n);
}

// Mask of the first `count` lanes of a 16-float packet (count clamped to [0, 16]).
inline __mmask16 sgemm_mask(Index count) {
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// In-register transpose of a 16 x 16 block: row q of the result is column q of the input.
inline void sgemm_transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
}

// op(B) depth [p0, p0 + kc), columns [j0, j0 + nc) -> micro-panels of 48 columns: dst[panel][p][c],
// zero-padded. op(B) = B^T (a linear layer's weight (out, in)) is packed 16 x 16 blocks at a time through
// register transposes: its columns are the contiguous rows of b.
inline void sgemm_pack_b(bool trans, const float* b, Index ldb, Index p0, Index kc, Index j0, Index nc, float* dst) {
  for (Index jr = 0; jr < nc; jr += kSgemmNR, dst += kSgemmNR * kc) {
    const Index cols = std::min(kSgemmNR, nc - jr);
    if (!trans) {
      const __mmask16 m0 = sgemm_mask(cols), m1 = sgemm_mask(cols - 16), m2 = sgemm_mask(cols - 32);
      for (Index p = 0; p < kc; ++p) {
        const float* s = b + (p0 + p) * ldb + j0 + jr;
        float* d = dst + p * kSgemmNR;
        // kc rows are kc streams, which the hardware prefetcher does not follow (a 1x1 conv's input rows,
        // HW apart, from L3: packing took 40% of a 64-row product's time); fetch this row's next panel.
        const std::uintptr_t next = reinterpret_cast<std::uintptr_t>(s) + kSgemmNR * sizeof(float);
        for (int l = 0; l < 3; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 64 * l), _MM_HINT_T0);
        _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, s));
        _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, s + 16));
        _mm512_store_ps(d + 32, _mm512_maskz_loadu_ps(m2, s + 32));
      }
      continue;
    }
    // 16 columns (rows of b) at a time, each walked along its depth: 16 sequential streams the hardware
    // prefetcher follows. Full groups take a branch-free path (1.5x faster than a lane test per row).
    for (Index g = 0; g < kSgemmNR; g += 16) {
      const Index rows = std::min<Index>(16, cols - g);
      if (rows <= 0) {  // past the last column: zeros (no pointer into b is formed)
        for (Index p = 0; p < kc; ++p) _mm512_store_ps(dst + p * kSgemmNR + g, _mm512_setzero_ps());
        continue;
      }
      const float* s = b + (j0 + jr + g) * ldb + p0;
      for (Index pb = 0; pb < kc; pb += 16) {
        const Index depth = std::min<Index>(16, kc - pb);
        const __mmask16 mp = sgemm_mask(depth);
        __m512 r[16];
        if (rows == 16) {
#pragma GCC unroll 16
          for (Index q = 0; q < 16; ++q) {
            // Weights that come from DRAM (a ViT's, at batch 1) packed 10-15% faster with 4 lines ahead. The
            // address is formed as an integer: it may lie past the end of b, where a prefetch is harmless
            // (it never faults) but pointer arithmetic would not be.
            _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(s + q * ldb + pb) + 256),
                         _MM_HINT_T0);
            r[q] = _mm512_maskz_loadu_ps(mp, s + q * ldb + pb);
          }
        } else {
          for (Index q = 0; q < 16; ++q)
            r[q] = q < rows ? _mm512_maskz_loadu_ps(mp, s + q * ldb + pb) : _mm512_setzero_ps();
        }
        sgemm_transpose16(r);
        float* d = dst + pb * kSgemmNR + g;
        if (depth == 16) {
#pragma GCC unroll 16
          for (Index q = 0; q < 16; ++q) _mm512_store_ps(d + q * kSgemmNR, r[q]);
        } else {
          for (Index q = 0; q < depth; ++q) _mm512_store_ps(d + q * kSgemmNR, r[q]);
        }
      }
    }
  }
}

// The 8 x 48 tile: C[0:mr, 0:nr] (row stride ldc) = alpha * A Bp + beta * C, where beta == 0 never reads C.
// A (8 rows, kc deep) is read where it lies, A(r, p) = a[r * rs + p * ps]: a row-major op(A) (rs = lda,
// ps = 1), a transposed one (rs = 1, ps = lda) or an edge tile's zero-padded copy (rs = 1, ps = 8). The
// tile's 8 x kc values of A stay in L1 while the kernel walks every B micro-panel of the block, so
// packing A would only add a pass.
template <bool kUnitRowStride>
inline void sgemm_tile(Index kc, const float* a, Index rs, Index ps, const float* bp, float* c, Index ldc, Index mr,
                       Index nr, float alpha, float beta) {
  if (kUnitRowStride) rs = 1;
  __m512 acc[kSgemmMR][3];
#pragma GCC unroll 8
  for (int r = 0; r < kSgemmMR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
  for (Index p = 0; p < kc; ++p, a += ps, bp += kSgemmNR) {
    const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), b2 = _mm512_load_ps(bp + 32);
#pragma GCC unroll 8
    for (int r = 0; r < kSgemmMR; ++r) {
      __m512 x = _mm512_set1_ps(a[r * rs]);
      // One broadcast register per value of A: without this GCC folds the broadcast into each of the three
      // FMAs as a memory operand, tripling the loads of A.
      __asm__("" : "+v"(x));
      acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
    }
  }
  const __mmask16 m[3] = {sgemm_mask(nr), sgemm_mask(nr - 16), sgemm_mask(nr - 32)};
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < kSgemmMR; ++r) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
#pragma GCC unroll 3
    for (int q = 0; q < 3; ++q) {
      __m512 v = _mm512_mul_ps(va, acc[r][q]);
      if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m[q], cr + 16 * q), v);
      _mm512_mask_storeu_ps(cr + 16 * q, m[q], v);
    }
  }
}

// C (m, n) = alpha * op(A) op(B) + beta * C, one orientation: tiles of 8 rows x 48 columns. op(B) is
// reached only through pack_b(p0, kc, j0, nc, dst), which writes its depth [p0, p0 + kc) x columns
// [j0, j0 + nc) as sgemm_pack_b does; a conv gathers its patches there, so they are never stored whole.
// epilogue(c, ldc, rows, cols, i, j) runs on each tile of C (rows x cols at (i, j)) as soon as its last
// depth block is stored, while the tile is in L1.
template <class PackB, class Epilogue = NoEpilogue>
void sgemm_blocked(const PackB& pack_b, bool trans_a, Index m, Index n, Index k, float alpha, const float* a,
                   Index lda, float beta, float* c, Index ldc, const Epilogue& epilogue = Epilogue()) {
  // Equal depth blocks: 576 = 3 x 192 rather than 256 + 256 + 64, whose short block pays a whole pass of
  // loads and stores of C for a quarter of the work.
  const Index kc_max = (k + (k + kSgemmKC - 1) / kSgemmKC - 1) / ((k + kSgemmKC - 1) / kSgemmKC);
  float* bbuf = sgemm_buffer<0>(std::size_t(kc_max * ((std::min(kSgemmNC, n) + kSgemmNR - 1) / kSgemmNR * kSgemmNR)));
  float* edge = sgemm_buffer<1>(std::size_t(kc_max * kSgemmMR));
  for (Index jc = 0; jc < n; jc += kSgemmNC) {
    const Index nc = std::min(kSgemmNC, n - jc);
    for (Index pc = 0; pc < k; pc += kc_max) {
      const Index kc = std::min(kc_max, k - pc);
      pack_b(pc, kc, jc, nc, bbuf);
      const float beta_block = pc == 0 ? beta : 1.f;  // later depth blocks add onto the first one's result
      const bool last_depth = pc + kc >= k;
      for (Index ir = 0; ir < m; ir += kSgemmMR) {
        const Index mr = std::min(kSgemmMR, m - ir);
        const float* at = trans_a ? a + pc * lda + ir : a + ir * lda + pc;  // A(ir, pc)
        if (mr < kSgemmMR) {
          // The last rows: a zero-padded copy, so the tile never reads past A.
          for (Index p = 0; p < kc; ++p)
            for (Index r = 0; r < kSgemmMR; ++r)
              edge[p * kSgemmMR + r] = r < mr ? (trans_a ? at[p * lda + r] : at[r * lda + p]) : 0.f;
        }
        for (Index jr = 0; jr < nc; jr += kSgemmNR) {
          float* ct = c + ir * ldc + jc + jr;
          const float* bt = bbuf + jr * kc;
          const Index nr = std::min(kSgemmNR, nc - jr);
          if (mr < kSgemmMR)
            sgemm_tile<true>(kc, edge, 1, kSgemmMR, bt, ct, ldc, mr, nr, alpha, beta_block);
          else if (trans_a)
            sgemm_tile<true>(kc, at, 1, lda, bt, ct, ldc, mr, nr, alpha, beta_block);
          else
            sgemm_tile<false>(kc, at, lda, 1, bt, ct, ldc, mr, nr, alpha, beta_block);
          if (last_depth) epilogue(ct, ldc, mr, nr, ir, jc + jr);
        }
      }
    }
  }
}

// C (m, n) = alpha * T^T + beta * C for T (n, m) with row stride ldt, 16 x 16 blocks through registers.
inline void sgemm_store_transposed(const float* t, Index ldt, Index m, Index n, float alpha, float beta, float* c,
                                   Index ldc) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (Index j0 = 0; j0 < n; j0 += 16) {
    const Index nj = std::min<Index>(16, n - j0);
    const __mmask16 mj = sgemm_mask(nj);
    for (Index i0 = 0; i0 < m; i0 += 16) {
      const Index ni = std::min<Index>(16, m - i0);
      const __mmask16 mi = sgemm_mask(ni);
      __m512 r[16];
      for (Index q = 0; q < 16; ++q)
        r[q] = q < nj ? _mm512_maskz_loadu_ps(mi, t + (j0 + q) * ldt + i0) : _mm512_setzero_ps();
      sgemm_transpose16(r);
      for (Index q = 0; q < ni; ++q) {
        float* cr = c + (i0 + q) * ldc + j0;
        __m512 v = _mm512_mul_ps(va, r[q]);
        if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mj, cr), v);
        _mm512_mask_storeu_ps(cr, mj, v);
      }
    }
  }
}

// Fraction of a tiled m x n product that is padding: the 48-column tiles waste most on narrow outputs.
inline double sgemm_padding(Index m, Index n) {
  const Index pm = (m + kSgemmMR - 1) / kSgemmMR * kSgemmMR, pn = (n + kSgemmNR - 1) / kSgemmNR * kSgemmNR;
  return double(pm) * double(pn) / (double(m) * double(n));
}

// C (m, n) = alpha * op(A) op(B) + beta * C, single-threaded; m, n, k >= 1. Same arguments as gemm_serial.
// A narrow C (a 7 x 7 or 14 x 14 feature map's 49 or 196 columns, a Winograd product's few tiles) would
// leave most of each 48-column tile empty; such products run transposed, C^T = op(B)^T op(A)^T, into a
// buffer whose transpose is then stored: that pass costs m n moves against 2 m n k flops.
inline bool sgemm_runs_transposed(Index m, Index n) { return sgemm_padding(n, m) * 1.1 < sgemm_padding(m, n); }

template <class Epilogue = NoEpilogue>
void sgemm_kernel(bool trans_a, bool trans_b, Index m, Index n, Index k, float alpha, const float* a, Index lda,
                  const float* b, Index ldb, float beta, float* c, Index ldc, const Epilogue& epilogue = Epilogue()) {
  if (sgemm_runs_transposed(m, n)) {
    float* t = sgemm_buffer<2>(std::size_t(n * m));
    auto pack_a = [&](Index p0, Index kc, Index j0, Index nc, float* dst) {
      sgemm_pack_b(!trans_a, a, lda, p0, kc, j0, nc, dst);
    };
    sgemm_blocked(pack_a, !trans_b, n, m, k, 1.f, b, ldb, 0.f, t, m);
    sgemm_store_transposed(t, m, m, n, alpha, beta, c, ldc);
    epilogue(c, ldc, m, n, Index(0), Index(0));  // a narrow C: the whole of it is small
    return;
  }
  auto pack_b = [&](Index p0, Index kc, Index j0, Index nc, float* dst) {
    sgemm_pack_b(trans_b, b, ldb, p0, kc, j0, nc, dst);
  };
  sgemm_blocked(pack_b, trans_a, m, n, k, alpha, a, lda, beta, c, ldc, epilogue);
}

// C (m, n) = alpha * A (m, k) B + beta * C, A row-major, where B (k, n) exists only as a gather (see
// gemm_serial_gathered): each depth block's micro-panels are gathered in place (ld 48, panel 48 * kc), the
// columns of the last past n zeroed. The caller checks !sgemm_runs_transposed.
template <class Gather>
void sgemm_gathered(Index m, Index n, Index k, float alpha, const float* a, Index lda, const Gather& gather,
                    float beta, float* c, Index ldc) {
  auto pack = [&](Index p0, Index kc, Index j0, Index nc, float* dst) {
    gather(p0, p0 + kc, j0, j0 + nc, dst, kSgemmNR, kSgemmNR * kc);
    if (const Index cols = nc % kSgemmNR) {
      float* last = dst + (nc / kSgemmNR) * kSgemmNR * kc;
      for (Index p = 0; p < kc; ++p) std::fill(last + p * kSgemmNR + cols, last + (p + 1) * kSgemmNR, 0.f);
    }
  };
  sgemm_blocked(pack, false, m, n, k, alpha, a, lda, beta, c, ldc);
}

}  // namespace detail
}  // namespace fovea
#endif
