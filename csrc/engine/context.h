// The one place that fills llama_context_params and creates a llama context:
// the target's, the draft model's and the feature drafters' contexts differ
// only in what ContextSpec holds.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model.h"
#include "llama.h"

namespace pyspec {

// What differs between the contexts pyspec creates. The rest is the same for
// all: a full-size SWA cache (rolled-back positions must not have evicted the
// window of a kept token), no perf timers.
struct ContextSpec {
    uint32_t n_ctx = 0;
    uint32_t n_batch = 512;              // also the ubatch: a batch is one forward
    uint32_t n_outputs_max = 0;          // rows with outputs per ubatch; 0: n_batch
    uint32_t n_outputs_max_per_seq = 1;  // rows a backend sampler may read (llama.cpp's default)
    uint32_t n_rs_seq = 0;               // recurrent-state snapshots for rollback
    // Sequences (llama.cpp seq_ids 0..n_seq_max-1; the batch engine's slots).
    // With n_seq_max > 1 and kv_unified false each sequence has a KV stream of
    // its own, n_ctx / n_seq_max cells (engine/batch_engine.h says why).
    uint32_t n_seq_max = 1;
    bool     kv_unified = false;
    int32_t  n_threads = 0;              // 0: default_n_threads() (engine/threads.h)
    // Exact (batch-invariant) kernels: a token's logits do not depend on the
    // batch that computes them. flash_attn: -1 auto (exact: on), 0 off, 1 on.
    bool     exact = false;
    int32_t  flash_attn = -1;
    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
    // Sliding-window layers keep every position (llama.cpp's swa_full) instead of
    // a ring of n_swa + n_batch cells. Rollback is exact either way: the ring
    // reuses only cells the window hides from every later position, and
    // patches/0007 places each position at a fixed cell, so the summation order
    // of attention does not depend on how the cells were written.
    bool     swa_full = false;
    llama_context_type type = LLAMA_CONTEXT_TYPE_DEFAULT;
    // a drafter without its own embeddings / LM head uses this context's
    llama_context * other = nullptr;
};

llama_context_params context_params(const ContextSpec & s);

// llama.cpp rounds the context up to a multiple of 256 but caps n_batch at the
// n_ctx it was asked for: asked for 100, it would take no batch wider than 100
// tokens (and abort on one). The engines ask for the rounded size.
uint32_t padded_n_ctx(uint32_t n_ctx);

// Creates a context on `model` from `s` and switches it to the kernels
// s.exact asks for. Throws Error with llama.cpp's reason (then `advice`) when
// llama.cpp refuses, UnsupportedError when exact kernels are asked for and a
// backend has none. `what` names the context's owner ("the target").
ContextPtr new_context(llama_model * model, const ContextSpec & s, const std::string & what,
                       const std::string & advice = "");

// Switches a context's backends to exact (batch-invariant) or fast kernels;
// UnsupportedError if exact is asked and a backend has no such mode.
void set_kernel_mode(llama_context * ctx, bool exact, const std::string & what);

// One buffer type's share of a context, from llama.cpp's memory breakdown:
// one per device, plus host buffers. Simulated on a no_alloc model.
struct BufferMemory {
    std::string buffer;  // the buffer type's name ("CPU", "CUDA0", "CUDA_Host", ...)
    std::string device;  // its device's name, "" when it has none
    bool   host = false;     // host memory
    size_t model = 0;        // the model's weights in it
    size_t context = 0;      // KV cache and recurrent state
    size_t compute = 0;      // compute buffers
};
std::vector<BufferMemory> context_memory_by_buffer(const llama_context * ctx);

// Named KV cache type ("f16", "q8_0", ...) to ggml_type; throws on unknown names.
ggml_type kv_type_from_name(const std::string & name);

}  // namespace pyspec
