// Verify-shaped exact quantized matrix x few-vectors kernels for ggml-cuda's batch-invariant mode.
//
// dst[:, j] = W @ y[:, j] for j < ncols (1 up to any width, 24 columns per launch), W quantized
// (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K), y already quantized by ggml to block_q8_1. One launch reads
// the weights once for all of its columns: integer dot products per quant block come from int8
// tensor-core mma (m16n8k32, or m16n8k16 where Q6_K's scales change every 16 values), exact in
// int32, so the column count only decides how many n-tiles ride along.
//
// Batch invariance by construction: the float arithmetic of one (row, column) is the same whatever
// the number of columns. Each warp of a block takes fixed chunks of K steps, in increasing order
// (the chunking and WARPS are constants, never a function of the width), accumulates with explicit
// round-to-nearest intrinsics (no contraction the compiler could choose differently per template
// instance), and the block sums the warps' partials in warp order. The m-tile count per block (a
// function of the matrix shape) only decides which block holds a row, not how the row is summed.
//
// ggml calls this through ggml_backend_cuda_set_exact_mmv (patch 0006): pyspec registers it when
// its engine is created, so llama.cpp's own tools built from the same source keep ggml's kernels.

#include "exact_mmv.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace pyspec_cuda {
namespace {

// Tunables: EXACT_MMV_* in exact_mmv.h.
constexpr int WARPS = EXACT_MMV_WARPS;
constexpr int STAGES = EXACT_MMV_STAGES;
constexpr int MAX_NT = 3;    // n-tiles of 8 columns per launch
constexpr int Q8_1_BYTES = 36;  // block_q8_1: half2 ds (d, d*sum), int8 qs[32]

// Block sizes (bytes) and values per block of the weight types, as in ggml-common.h.
constexpr int Q4_0_BYTES = 18, Q5_0_BYTES = 22, Q8_0_BYTES = 34, Q4_K_BYTES = 144, Q6_K_BYTES = 210;

__device__ __forceinline__ int ld_u16x2(const uint8_t * p) {  // 4 bytes at a 2-byte aligned address
    const uint16_t * q = reinterpret_cast<const uint16_t *>(p);
    return int(uint32_t(q[0]) | (uint32_t(q[1]) << 16));
}
__device__ __forceinline__ int ld_i32(const uint8_t * p) { return *reinterpret_cast<const int *>(p); }
__device__ __forceinline__ float2 ld_half2(const uint8_t * p) { return __half22float2(*reinterpret_cast<const __half2 *>(p)); }

// D += A (16x32 int8) * B (32x8 int8). Fragments (g = lane/4, t = lane%4): a0 = (row g, k 4t..4t+3),
// a1 = (row g+8, k 4t..), a2 = (row g, k 16+4t..), a3 = (row g+8, k 16+4t..); b0 = (k 4t.., col g),
// b1 = (k 16+4t.., col g); d0 = (g, 2t), d1 = (g, 2t+1), d2 = (g+8, 2t), d3 = (g+8, 2t+1). Which
// quantized values sit at which k is free as long as A and B agree: each type below pairs them.
__device__ __forceinline__ void mma_k32(int (&d)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void) d; (void) a0; (void) a1; (void) a2; (void) a3; (void) b0; (void) b1;
    __trap();
#endif
}

// D += A (16x16 int8) * B (16x8 int8): a0 = (row g, k 4t..4t+3), a1 = (row g+8, k 4t..), b0 = (k 4t.., col g).
__device__ __forceinline__ void mma_k16(int (&d)[4], int a0, int a1, int b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(b0));
#else
    (void) d; (void) a0; (void) a1; (void) b0;
    __trap();
#endif
}

// float(c) for |c| < 2^22, exactly (every product sum of one mma and every small scale is far
// below that): 1.5 * 2^23 + c is a float with unit spacing, so the subtraction is exact. The same
// bits as __int2float_rn, on the integer and FMA pipes instead of the conversion unit.
__device__ __forceinline__ float i2f_exact(int c) {
#if EXACT_MMV_MAGIC_CVT
    return __fsub_rn(__int_as_float(0x4B400000 + c), 12582912.0f);
#else
    return __int2float_rn(c);
#endif
}

// acc += w * (dy * float(c)): the one accumulation step of every type, in explicit roundings.
__device__ __forceinline__ float acc_step(float acc, float w, float dy, int c) {
    return __fmaf_rn(w, __fmul_rn(dy, i2f_exact(c)), acc);
}

// Per-thread view of the activations of one launch (the weights come through shared memory): yb[nt]
// is the activation column g of n-tile nt (for B fragments), ys[nt][c] the columns 2t + c (for
// the scales that multiply D fragments). Columns past the last are clamped to it (their D columns
// are never stored); weight rows past the last likewise.
template <int MT, int NT>
struct Operands {
    const uint8_t * yb[NT];
    const uint8_t * ys[NT][2];
    int t;
};

__device__ __forceinline__ int y_int(const uint8_t * col, int block, int i) {  // int i of the qs of q8_1 block
    return ld_i32(col + size_t(block) * Q8_1_BYTES + 4 + 4 * i);
}
__device__ __forceinline__ float2 y_ds(const uint8_t * col, int block) {
    return ld_half2(col + size_t(block) * Q8_1_BYTES);
}

// Each type is a Step: load() issues every global load of one K step (weights, activations, scales)
// into registers, compute() decodes, multiplies and accumulates. The main loop loads several steps
// before computing the first, so that many loads are in flight per thread; the accumulation order
// (steps in increasing K) is the one of a plain loop either way.

// ---- the 32-value types: one K step is one weight block, one q8_1 block ----

// Q4_0: d, qs[16]; value j < 16 is the low nibble of qs[j], value j + 16 its high nibble, minus 8.
// Q5_0: d, qh (bit j: high bit of value j), qs[16] as Q4_0; minus 16.
// Q8_0: d, int8 qs[32]; this thread takes values 8t..8t+7.
template <int TYPE, int MT, int NT>
struct StepLegacy {
    static constexpr int BYTES = TYPE == 0 ? Q4_0_BYTES : TYPE == 1 ? Q5_0_BYTES : Q8_0_BYTES;
    int w[MT][2][3];       // raw weight ints of rows g, g+8
    int b[NT][2];          // B fragments
    float dy[NT][2];       // activation scales of columns 2t, 2t+1

    __device__ __forceinline__ void load(const Operands<MT, NT> & op, const uint8_t * const (&xr)[MT][2], int kw, int ks) {
        const int t = op.t;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const uint8_t * p = xr[mt][r] + kw * BYTES;
                w[mt][r][0] = *reinterpret_cast<const uint16_t *>(p);
                if (TYPE == 0) {
                    w[mt][r][1] = ld_u16x2(p + 2 + 4 * t);       // values 4t..4t+3 and 16+4t..16+4t+3
                } else if (TYPE == 1) {
                    w[mt][r][1] = ld_u16x2(p + 6 + 4 * t);
                    w[mt][r][2] = ld_u16x2(p + 2);
                } else {
                    w[mt][r][1] = ld_u16x2(p + 2 + 8 * t);       // values 8t..8t+3
                    w[mt][r][2] = ld_u16x2(p + 6 + 8 * t);       // values 8t+4..8t+7
                }
            }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            b[nt][0] = y_int(op.yb[nt], ks, TYPE == 2 ? 2 * t : t);
            b[nt][1] = y_int(op.yb[nt], ks, TYPE == 2 ? 2 * t + 1 : 4 + t);
            dy[nt][0] = y_ds(op.ys[nt][0], ks).x;
            dy[nt][1] = y_ds(op.ys[nt][1], ks).x;
        }
    }

    static __device__ __forceinline__ int spread4(uint32_t h) {  // bits 0..3 -> bit 4 of bytes 0..3
        return int(((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25));
    }

    __device__ __forceinline__ void compute(const Operands<MT, NT> & op, float (&acc)[MT][NT][4]) const {
        int lo[MT][2], hi[MT][2];
        float dw[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int q = w[mt][r][1];
                if (TYPE == 0) {
                    lo[mt][r] = __vsub4(q & 0x0F0F0F0F, 0x08080808);
                    hi[mt][r] = __vsub4((q >> 4) & 0x0F0F0F0F, 0x08080808);
                } else if (TYPE == 1) {
                    const uint32_t qh = uint32_t(w[mt][r][2]);
                    lo[mt][r] = __vsub4((q & 0x0F0F0F0F) | spread4(qh >> (4 * op.t)), 0x10101010);
                    hi[mt][r] = __vsub4(((q >> 4) & 0x0F0F0F0F) | spread4(qh >> (16 + 4 * op.t)), 0x10101010);
                } else {
                    lo[mt][r] = q;
                    hi[mt][r] = w[mt][r][2];
                }
                dw[mt][r] = __half2float(__ushort_as_half(uint16_t(w[mt][r][0])));
            }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                int c[4] = {0, 0, 0, 0};
                mma_k32(c, lo[mt][0], lo[mt][1], hi[mt][0], hi[mt][1], b[nt][0], b[nt][1]);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    acc[mt][nt][e] = acc_step(acc[mt][nt][e], dw[mt][e >> 1], dy[nt][e & 1], c[e]);
                }
            }
    }
};

// ---- Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins; one K step is a
// pair of sub-blocks (2j, 2j+1) stored as the low and high nibbles of qs[32j .. 32j+31] ----

template <int MT, int NT>
struct StepQ4K {
    int j;
    int w[MT][2][6];       // qs ints (values 8t..8t+3, 8t+4..8t+7), dm, scales[0..11]
    int b[2][NT][2];       // [h]: B fragments of sub-block 2j + h
    float dy[2][NT][2];    // [h]: activation scales of columns 2t, 2t+1

    __device__ __forceinline__ void load(const Operands<MT, NT> & op, const uint8_t * const (&xr)[MT][2], int kw, int ks) {
        const int kb = ks >> 2, t = op.t;
        j = ks & 3;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const uint8_t * p = xr[mt][r];   // the chunk is this step's super-block
                (void) kw;
                w[mt][r][0] = ld_i32(p + 16 + 32 * j + 8 * t);
                w[mt][r][1] = ld_i32(p + 20 + 32 * j + 8 * t);
                w[mt][r][2] = ld_i32(p);
                w[mt][r][3] = ld_i32(p + 4);
                w[mt][r][4] = ld_i32(p + 8);
                w[mt][r][5] = ld_i32(p + 12);
            }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int yb = kb * 8 + 2 * j + h;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                b[h][nt][0] = y_int(op.yb[nt], yb, 2 * t);
                b[h][nt][1] = y_int(op.yb[nt], yb, 2 * t + 1);
                dy[h][nt][0] = y_ds(op.ys[nt][0], yb).x;
                dy[h][nt][1] = y_ds(op.ys[nt][1], yb).x;
            }
        }
    }

    // 6-bit scale and min of sub-block s from the 12 scale bytes held as ints s0 (bytes 0..3), s1, s2
    static __device__ __forceinline__ void scale_min(int s0, int s1, int s2, int s, int & d, int & m) {
        if (s < 4) {
            d = (s0 >> (8 * s)) & 63;
            m = (s1 >> (8 * s)) & 63;
        } else {
            const int i = 8 * (s - 4);
            d = ((s2 >> i) & 0xF) | (((s0 >> (i + 6)) & 3) << 4);
            m = ((s2 >> (i + 4)) & 0xF) | (((s1 >> (i + 6)) & 3) << 4);
        }
    }

    __device__ __forceinline__ void compute(const Operands<MT, NT> &, float (&acc)[MT][NT][4]) const {
        int v[2][MT][2][2];                  // [h][mt][r][0/1]
        float ws[2][MT][2], wm[2][MT][2];    // [h][mt][r]: d*scale and dmin*min of sub-block 2j + h
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int * q = w[mt][r];
                v[0][mt][r][0] = q[0] & 0x0F0F0F0F;
                v[0][mt][r][1] = q[1] & 0x0F0F0F0F;
                v[1][mt][r][0] = (q[0] >> 4) & 0x0F0F0F0F;
                v[1][mt][r][1] = (q[1] >> 4) & 0x0F0F0F0F;
                const float2 dm = __half22float2(*reinterpret_cast<const __half2 *>(&q[2]));
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    int sc, mn;
                    scale_min(q[3], q[4], q[5], 2 * j + h, sc, mn);
                    ws[h][mt][r] = __fmul_rn(dm.x, i2f_exact(sc));
                    wm[h][mt][r] = __fmul_rn(dm.y, i2f_exact(mn));
                }
            }
        // exact integer sums of the activation quants of columns 2t, 2t+1 (for the mins): a row of ones times B
        int ysum[2][NT][2];
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                int c[4] = {0, 0, 0, 0};
                mma_k32(c, 0x01010101, 0x01010101, 0x01010101, 0x01010101, b[h][nt][0], b[h][nt][1]);
                ysum[h][nt][0] = c[0];
                ysum[h][nt][1] = c[1];
            }
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    int c[4] = {0, 0, 0, 0};
                    mma_k32(c, v[h][mt][0][0], v[h][mt][1][0], v[h][mt][0][1], v[h][mt][1][1], b[h][nt][0], b[h][nt][1]);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float s = acc_step(acc[mt][nt][e], ws[h][mt][e >> 1], dy[h][nt][e & 1], c[e]);
                        acc[mt][nt][e] = acc_step(s, -wm[h][mt][e >> 1], dy[h][nt][e & 1], ysum[h][nt][e & 1]);
                    }
                }
    }
};

// ---- Q6_K: super-blocks of 256 in two halves n of 128; value 128n + 32m + l (m = 0..3, l = 0..31)
// has its low 4 bits in ql[64n + 32(m&1) + l] (nibble m>>1), its high 2 bits in qh[32n + l] (bits
// 2m), scale scales[8n + 2m + l/16], minus 32. One K step is (n, l/16 = h): 4 groups of 16 values ----

template <int MT, int NT>
struct StepQ6K {
    int h;
    int w[MT][2][6];       // ql (m = 0, 2), ql (m = 1, 3), qh, d, scales[8n..8n+3], scales[8n+4..8n+7]
    int b[4][NT];          // [m]: B fragment
    float dy[4][NT][2];    // [m]: activation scales of columns 2t, 2t+1

    __device__ __forceinline__ void load(const Operands<MT, NT> & op, const uint8_t * const (&xr)[MT][2], int kw, int ks) {
        const int kb = ks >> 2, n = (ks >> 1) & 1, t = op.t;
        h = ks & 1;
        const int off = 16 * h + 4 * t;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const uint8_t * p = xr[mt][r];
                (void) kw;
                w[mt][r][0] = ld_u16x2(p + 64 * n + off);
                w[mt][r][1] = ld_u16x2(p + 64 * n + 32 + off);
                w[mt][r][2] = ld_u16x2(p + 128 + 32 * n + off);
                w[mt][r][3] = *reinterpret_cast<const uint16_t *>(p + 208);
                w[mt][r][4] = ld_u16x2(p + 192 + 8 * n);
                w[mt][r][5] = ld_u16x2(p + 196 + 8 * n);
            }
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const int yb = kb * 8 + 4 * n + m;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                b[m][nt] = y_int(op.yb[nt], yb, 4 * h + t);
                dy[m][nt][0] = y_ds(op.ys[nt][0], yb).x;
                dy[m][nt][1] = y_ds(op.ys[nt][1], yb).x;
            }
        }
    }

    __device__ __forceinline__ void compute(const Operands<MT, NT> &, float (&acc)[MT][NT][4]) const {
        int v[4][MT][2];
        float ws[4][MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int qa = w[mt][r][0], qb = w[mt][r][1], qh = w[mt][r][2];
                v[0][mt][r] = __vsub4((qa & 0x0F0F0F0F) | ((qh << 4) & 0x30303030), 0x20202020);
                v[1][mt][r] = __vsub4((qb & 0x0F0F0F0F) | ((qh << 2) & 0x30303030), 0x20202020);
                v[2][mt][r] = __vsub4(((qa >> 4) & 0x0F0F0F0F) | (qh & 0x30303030), 0x20202020);
                v[3][mt][r] = __vsub4(((qb >> 4) & 0x0F0F0F0F) | ((qh >> 2) & 0x30303030), 0x20202020);
                const float d = __half2float(__ushort_as_half(uint16_t(w[mt][r][3])));
#pragma unroll
                for (int m = 0; m < 4; ++m) {   // scales[8n + 2m + h]
                    const int sc = int(int8_t(uint32_t(w[mt][r][4 + (m >> 1)]) >> (8 * (2 * (m & 1) + h))));
                    ws[m][mt][r] = __fmul_rn(d, i2f_exact(sc));
                }
            }
#pragma unroll
        for (int m = 0; m < 4; ++m)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    int c[4] = {0, 0, 0, 0};
                    mma_k16(c, v[m][mt][0], v[m][mt][1], b[m][nt]);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        acc[mt][nt][e] = acc_step(acc[mt][nt][e], ws[m][mt][e >> 1], dy[m][nt][e & 1], c[e]);
                    }
                }
    }
};

enum : int { T_Q4_0 = 0, T_Q5_0 = 1, T_Q8_0 = 2, T_Q4_K = 3, T_Q6_K = 4 };

template <int CP> __device__ __forceinline__ void cp_async(void * smem_dst, const void * gmem_src) {
    const unsigned s = unsigned(__cvta_generic_to_shared(smem_dst));
    if constexpr (CP == 16) {   // L2 only: the weights are read once
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(s), "l"(gmem_src) : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"(s), "l"(gmem_src) : "memory");
    }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }

// Chunks of K steps staged through shared memory: STEPS steps of STEP_BYTES bytes per row, in rows
// of SROW bytes (room for a start misaligned by up to 15 bytes).
template <int T> struct Chunk {
    static constexpr bool K_QUANT = T == T_Q4_K || T == T_Q6_K;
    static constexpr int STEPS = 4;
    static constexpr int STEP_BYTES = T == T_Q4_0 ? Q4_0_BYTES : T == T_Q5_0 ? Q5_0_BYTES : Q8_0_BYTES;  // legacy
    static constexpr int BYTES = T == T_Q4_K ? Q4_K_BYTES : T == T_Q6_K ? Q6_K_BYTES : STEPS * STEP_BYTES;
    // bytes of a chunk of nvalid steps (K-quant rows hold whole super-blocks)
    static __device__ __forceinline__ int bytes(int nvalid) { return K_QUANT ? BYTES : nvalid * STEP_BYTES; }
    static constexpr int SROW = (BYTES + (EXACT_MMV_CP16 ? 16 : 8) + 15) / 16 * 16;
};

template <int T, int MT> constexpr size_t smem_bytes(int nt) {
    return size_t(WARPS) * STAGES * 16 * MT * Chunk<T>::SROW + size_t(WARPS) * MT * nt * 4 * 32 * sizeof(float);
}

template <int T> constexpr int values_per_step() { return T == T_Q4_K || T == T_Q6_K ? 64 : 32; }

// CP: bytes per cp.async (16 where a row is a multiple of 16 bytes, else 8); it moves bytes only.
template <int T, int MT, int NT, int CP>
__global__ void __launch_bounds__(WARPS * 32) exact_mmv_kernel(
        const uint8_t * __restrict__ x, int64_t row_bytes, int nrows, int nsteps,
        const uint8_t * __restrict__ y, int64_t y_col_bytes, int ncols,
        float * __restrict__ dst, int64_t dst_col_stride) {
    const int lane = threadIdx.x, warp = threadIdx.y, g = lane >> 2, t = lane & 3;
    Operands<MT, NT> op;
    op.t = t;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        op.yb[nt] = y + size_t(min(8 * nt + g, ncols - 1)) * y_col_bytes;
        op.ys[nt][0] = y + size_t(min(8 * nt + 2 * t, ncols - 1)) * y_col_bytes;
        op.ys[nt][1] = y + size_t(min(8 * nt + 2 * t + 1, ncols - 1)) * y_col_bytes;
    }

    using Step = std::conditional_t<T == T_Q4_K, StepQ4K<MT, NT>,
                 std::conditional_t<T == T_Q6_K, StepQ6K<MT, NT>, StepLegacy<T, MT, NT>>>;
    using L = Chunk<T>;
    constexpr int ROWS = 16 * MT;
    constexpr int U = NT == 1 ? 4 : 2;   // steps decoded together (L::STEPS is a multiple)

    // A block takes the row tiles blockIdx.x, blockIdx.x + gridDim.x, ... In each tile warp w takes
    // the chunks w, w + WARPS, ... of L::STEPS consecutive K steps (contiguous bytes of each row: a
    // K-quant super-block, or 4 legacy blocks) and accumulates them in increasing K; the block then
    // adds its warps' partial sums in warp order. The chunks' bytes are copied to shared memory with
    // 8-byte cp.async, STAGES - 1 chunks ahead across tile boundaries, so that global loads are wide,
    // coalesced along a row and always in flight whatever layout the mma fragments need; neither the
    // copy nor the grid size changes the arithmetic.
    extern __shared__ __align__(16) uint8_t smem[];
    constexpr int NV = MT * NT * 4;
    float (*part)[NV][32] = reinterpret_cast<float (*)[NV][32]>(smem + size_t(WARPS) * STAGES * ROWS * L::SROW);
    auto stage = [&](int it) { return smem + (size_t(warp) * STAGES + it % STAGES) * ROWS * L::SROW; };
    const int nchunks = (nsteps + L::STEPS - 1) / L::STEPS;
    const int mine = nchunks > warp ? (nchunks - warp + WARPS - 1) / WARPS : 0;   // chunks per tile
    const int ntiles = (nrows + ROWS - 1) / ROWS;
    const int my_tiles = ntiles > int(blockIdx.x) ? (ntiles - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x) : 0;
    const int items = my_tiles * mine;
    const int delta0 = int(reinterpret_cast<uintptr_t>(x) & (CP - 1));   // rows are CP-byte multiples long

    auto issue = [&](int it) {
        if (it < items) {
            const int row0 = (int(blockIdx.x) + (it / mine) * int(gridDim.x)) * ROWS;
            const int c = warp + (it % mine) * WARPS;
            const int nbytes = L::bytes(min(L::STEPS, nsteps - c * L::STEPS));
            const size_t off = size_t(c) * L::BYTES;
            const int delta = int((delta0 + off) & (CP - 1));
            const int npieces = (delta + nbytes + CP - 1) / CP;
            uint8_t * dstage = stage(it);
            for (int q = lane; q < ROWS * npieces; q += 32) {
                const int rr = q / npieces, piece = q % npieces;
                const uint8_t * src = x + size_t(min(row0 + rr, nrows - 1)) * row_bytes + off - delta + CP * piece;
                cp_async<CP>(dstage + rr * L::SROW + CP * piece, src);
            }
        }
        cp_async_commit();
    };

#pragma unroll
    for (int it = 0; it < STAGES - 1; ++it) issue(it);

    for (int ti = 0; ti < my_tiles; ++ti) {
        float acc[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

        for (int j = 0; j < mine; ++j) {
            const int it = ti * mine + j;
            cp_async_wait<STAGES - 2>();
            __syncwarp();
            const int c = warp + j * WARPS, ks0 = c * L::STEPS;
            const int nvalid = min(L::STEPS, nsteps - ks0);
            const int delta = int((delta0 + size_t(c) * L::BYTES) & (CP - 1));
            const uint8_t * xr[MT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int r = 0; r < 2; ++r) xr[mt][r] = stage(it) + (16 * mt + 8 * r + g) * L::SROW + delta;
            if (nvalid == L::STEPS) {
#pragma unroll
                for (int u0 = 0; u0 < L::STEPS; u0 += U) {
                    Step st[U];
#pragma unroll
                    for (int u = 0; u < U; ++u) st[u].load(op, xr, u0 + u, ks0 + u0 + u);
#pragma unroll
                    for (int u = 0; u < U; ++u) st[u].compute(op, acc);
                }
            } else {
                for (int kw = 0; kw < nvalid; ++kw) {
                    Step st;
                    st.load(op, xr, kw, ks0 + kw);
                    st.compute(op, acc);
                }
            }
            __syncwarp();
            issue(it + STAGES - 1);
        }

        // the warps' partial sums of this tile, added in warp order
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) part[warp][(mt * NT + nt) * 4 + e][lane] = acc[mt][nt][e];
        __syncthreads();
        const int row0 = (int(blockIdx.x) + ti * int(gridDim.x)) * ROWS;
        for (int o = warp * 32 + lane; o < NV * 32; o += WARPS * 32) {
            const int v = o / 32, l = o % 32;
            float sum = part[0][v][l];
#pragma unroll
            for (int w = 1; w < WARPS; ++w) sum = __fadd_rn(sum, part[w][v][l]);
            const int mt = v / (NT * 4), nt = (v / 4) % NT, e = v % 4;
            const int row = row0 + 16 * mt + 8 * (e >> 1) + (l >> 2);
            const int col = 8 * nt + 2 * (l & 3) + (e & 1);
            if (row < nrows && col < ncols) {
                dst[size_t(col) * dst_col_stride + row] = sum;
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();
}

int sm_count() {
    static int n = [] {
        int dev = 0, v = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
        return v > 0 ? v : 1;
    }();
    return n;
}

template <int T, int MT, int NT, int CP>
void launch(const ExactMmvArgs & a, int ncols, const uint8_t * y, float * dst, cudaStream_t s, int64_t row_bytes, int nsteps) {
    constexpr size_t smem = smem_bytes<T, MT>(NT);
    static const bool attr = [] {   // more than the default 48 KiB of dynamic shared memory
        return cudaFuncSetAttribute(exact_mmv_kernel<T, MT, NT, CP>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) == cudaSuccess;
    }();
    (void) attr;
    // as many blocks as fit at once (each loops over row tiles), or one per tile
    static const int per_sm = [] {
        int n = 0;
        return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, exact_mmv_kernel<T, MT, NT, CP>, WARPS * 32, smem) == cudaSuccess && n > 0 ? n : 1;
    }();
    const int64_t ntiles = (a.nrows + 16 * MT - 1) / (16 * MT);
    const dim3 grid(unsigned(std::min<int64_t>(ntiles, int64_t(per_sm) * sm_count()))), block(32, WARPS);
    exact_mmv_kernel<T, MT, NT, CP><<<grid, block, smem, s>>>(static_cast<const uint8_t *>(a.x), row_bytes, int(a.nrows), nsteps,
        y, a.y_col_stride * Q8_1_BYTES, ncols, dst, a.dst_col_stride);
}

template <int T, int MT, int CP>
void launch_nt(int nt, const ExactMmvArgs & a, int ncols, const uint8_t * y, float * dst, cudaStream_t s,
               int64_t row_bytes, int nsteps) {
    switch (nt) {
        case 1: launch<T, MT, 1, CP>(a, ncols, y, dst, s, row_bytes, nsteps); break;
        case 2: launch<T, MT, 2, CP>(a, ncols, y, dst, s, row_bytes, nsteps); break;
        default: launch<T, MT, 3, CP>(a, ncols, y, dst, s, row_bytes, nsteps); break;
    }
}

// m-tiles per block tile: EXACT_MMV_MT, or where it is 0 (the default), two for matrices of K >= 2048
// at 9 columns and more, one otherwise (measured on the H200: two cut the 16-column cost of the 8B
// shape's matrices by 5-21% and slow the Gemma LM head, K = 640). A row's arithmetic is the same
// whatever the m-tiles (each warp still takes the same K chunks in the same order, the warps are
// still added in warp order), so choosing them by width keeps the result width-independent; the
// harness checks every width against width 1.
int m_tiles(int64_t k, int nt) {
    if (EXACT_MMV_MT > 0) {
        return EXACT_MMV_MT;
    }
    return nt >= 2 && k >= 2048 ? 2 : 1;
}

template <int T, int CP>
void launch_mt(int mt, int nt, const ExactMmvArgs & a, int ncols, const uint8_t * y, float * dst, cudaStream_t s,
               int64_t row_bytes, int nsteps) {
    if constexpr (EXACT_MMV_MT == 0 || EXACT_MMV_MT == 2) {
        if (mt == 2) {
            launch_nt<T, 2, CP>(nt, a, ncols, y, dst, s, row_bytes, nsteps);
            return;
        }
    }
    if constexpr (EXACT_MMV_MT == 0 || EXACT_MMV_MT == 1) {
        launch_nt<T, 1, CP>(nt, a, ncols, y, dst, s, row_bytes, nsteps);
    } else {
        launch_nt<T, EXACT_MMV_MT, CP>(nt, a, ncols, y, dst, s, row_bytes, nsteps);
    }
}

template <int T>
void run_type(const ExactMmvArgs & a, int block_bytes) {
    cudaStream_t s = static_cast<cudaStream_t>(a.stream);
    const int64_t row_bytes = a.x_row_stride * block_bytes;
    const int nsteps = int(a.ncols_x / values_per_step<T>());
    for (int64_t c0 = 0; c0 < a.ncols; c0 += 8 * MAX_NT) {
        const int nc = int(std::min<int64_t>(8 * MAX_NT, a.ncols - c0));
        const uint8_t * y = static_cast<const uint8_t *>(a.y) + c0 * a.y_col_stride * Q8_1_BYTES;
        float * dst = a.dst + c0 * a.dst_col_stride;
        const int nt = (nc + 7) / 8;
        const int mt = m_tiles(a.ncols_x, nt);
        // 16-byte copies where every row is a multiple of 16 bytes (a function of the shape only)
        if constexpr (EXACT_MMV_CP16) {
            if (row_bytes % 16 == 0) {
                launch_mt<T, 16>(mt, nt, a, nc, y, dst, s, row_bytes, nsteps);
                continue;
            }
        }
        launch_mt<T, 8>(mt, nt, a, nc, y, dst, s, row_bytes, nsteps);
    }
}

}  // namespace

// int8 mma needs compute capability 8.0, and a kernel image built for it (CMakeLists.txt).
static bool device_ok() {
    static int ok[64] = {0};   // per device: 0 unknown, 1 yes, 2 no
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        return false;
    }
    if (ok[dev] == 0) {
        int major = 0;
        cudaFuncAttributes attr{};
        const bool good = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 8 &&
            cudaFuncGetAttributes(&attr, exact_mmv_kernel<T_Q4_K, (EXACT_MMV_MT > 0 ? EXACT_MMV_MT : 1), 1, 8>) == cudaSuccess &&
            std::max(attr.binaryVersion, attr.ptxVersion) >= 80;
        ok[dev] = good ? 1 : 2;
    }
    return ok[dev] == 1;
}

bool exact_mmv_supports(int type, int64_t ncols_x) {
    if (!device_ok()) {
        return false;
    }
    switch (type) {
        // rows must be whole 8-byte multiples (the shared-memory staging copies 8 bytes at a time)
        case EXACT_MMV_Q4_0: return ncols_x % 32 == 0 && (ncols_x / 32 * Q4_0_BYTES) % 8 == 0;
        case EXACT_MMV_Q5_0: return ncols_x % 32 == 0 && (ncols_x / 32 * Q5_0_BYTES) % 8 == 0;
        case EXACT_MMV_Q8_0: return ncols_x % 32 == 0 && (ncols_x / 32 * Q8_0_BYTES) % 8 == 0;
        case EXACT_MMV_Q4_K: return ncols_x % 256 == 0;              // 144-byte super-blocks
        case EXACT_MMV_Q6_K: return ncols_x % 1024 == 0;             // 210-byte super-blocks, 4 to 8 bytes
        default: return false;
    }
}

void exact_mmv_run(const ExactMmvArgs & a) {
    if (a.ncols <= 0 || a.nrows <= 0) {
        return;
    }
    switch (a.type) {
        case EXACT_MMV_Q4_0: run_type<T_Q4_0>(a, Q4_0_BYTES); break;
        case EXACT_MMV_Q5_0: run_type<T_Q5_0>(a, Q5_0_BYTES); break;
        case EXACT_MMV_Q8_0: run_type<T_Q8_0>(a, Q8_0_BYTES); break;
        case EXACT_MMV_Q4_K: run_type<T_Q4_K>(a, Q4_K_BYTES); break;
        case EXACT_MMV_Q6_K: run_type<T_Q6_K>(a, Q6_K_BYTES); break;
        default: break;
    }
}

}  // namespace pyspec_cuda
