// Exact (batch-invariant) quantized matrix x few-vectors kernels: see exact_mmv.cu.
// Independent of ggml's headers so that benchmarks/gpu/exact_mmv_check.cu can test the kernels alone.
#pragma once

#include <cstdint>

// Tunables (compile-time constants, never a function of the width; the harness
// benchmarks/gpu/exact_mmv_check.cu sweeps them with -D): warps per block, each a fixed share of
// K (exact_mmv.cu); shared-memory stages per warp (STAGES - 1 chunks in flight); m-tiles of 16 rows
// per block tile (0: chosen per matrix and width, m_tiles() in exact_mmv.cu); 16-byte copies where rows are multiples of 16 bytes; exact integer-to-float by
// the 1.5 * 2^23 trick instead of the conversion unit. CP16 and MAGIC_CVT are off by default: both
// pass the harness checks on the H200 and are faster at one column, but slower on Q6_K at 16 and
// more (BENCHMARKS.md), and have not been measured through pyspec.
#ifndef EXACT_MMV_WARPS
#define EXACT_MMV_WARPS 8
#endif
#ifndef EXACT_MMV_STAGES
#define EXACT_MMV_STAGES 3
#endif
#ifndef EXACT_MMV_MT
#define EXACT_MMV_MT 0
#endif
#ifndef EXACT_MMV_CP16
#define EXACT_MMV_CP16 0
#endif
#ifndef EXACT_MMV_MAGIC_CVT
#define EXACT_MMV_MAGIC_CVT 0
#endif

namespace pyspec_cuda {

// Weight types, numbered as ggml_type (checked in exact_mmv_hook.cpp).
enum : int { EXACT_MMV_Q4_0 = 2, EXACT_MMV_Q5_0 = 6, EXACT_MMV_Q8_0 = 8, EXACT_MMV_Q4_K = 12, EXACT_MMV_Q6_K = 14 };

struct ExactMmvArgs {
    int type;                // EXACT_MMV_*
    const void * x;          // weights: nrows rows of ncols_x values, row r at x + r*x_row_stride blocks
    int64_t x_row_stride;    // in weight blocks
    int64_t nrows;
    int64_t ncols_x;         // values per row (K)
    const void * y;          // activations as ggml's block_q8_1, column j at y + j*y_col_stride blocks
    int64_t y_col_stride;    // in block_q8_1 (36 bytes)
    int64_t ncols;           // activation columns
    float * dst;             // column j at dst + j*dst_col_stride floats
    int64_t dst_col_stride;
    void * stream;           // cudaStream_t
};

// Whether exact_mmv_run covers this weight type and row length: a function of the shape only,
// never of the number of columns, so every width of one matrix takes the same kernel.
bool exact_mmv_supports(int type, int64_t ncols_x);
// Launches on args.stream; no synchronisation, no allocation (safe inside CUDA graph capture).
void exact_mmv_run(const ExactMmvArgs & args);

}  // namespace pyspec_cuda
