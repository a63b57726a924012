// Registers csrc/cuda/exact_mmv.cu with ggml-cuda's batch-invariant mode (patch 0006) when _core is
// loaded, before any model can compute. Built only with PYSPEC_CUDA.
#include "cuda/exact_mmv_hook.h"

#include "cuda/exact_mmv.h"
#include "ggml-cuda.h"

namespace pyspec_cuda {
namespace {

static_assert(EXACT_MMV_Q4_0 == GGML_TYPE_Q4_0 && EXACT_MMV_Q5_0 == GGML_TYPE_Q5_0 && EXACT_MMV_Q8_0 == GGML_TYPE_Q8_0 &&
              EXACT_MMV_Q4_K == GGML_TYPE_Q4_K && EXACT_MMV_Q6_K == GGML_TYPE_Q6_K, "exact_mmv.h numbers types as ggml_type");

bool supports(enum ggml_type type, int64_t ncols_x) { return exact_mmv_supports(int(type), ncols_x); }

void run(const ggml_cuda_exact_mmv_args * a) {
    const ExactMmvArgs args{int(a->type), a->x, a->x_row_stride, a->nrows, a->ncols_x, a->y, a->y_col_stride,
                            a->ncols, a->dst, a->dst_col_stride, a->stream};
    exact_mmv_run(args);
}

struct Registration {
    Registration() { ggml_backend_cuda_set_exact_mmv(supports, run); }
} registration;

}  // namespace

const char * exact_mmv_kernels() {
    (void) registration;
    return "pyspec exact_mmv (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K; int8 mma, one weight read per launch)";
}

}  // namespace pyspec_cuda
