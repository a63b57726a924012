#include "engine/context.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/log.h"
#include "engine/threads.h"
#include "ggml-backend.h"
#include "llama-ext.h"

namespace pyspec {

llama_context_params context_params(const ContextSpec & s) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = s.n_ctx;
    cp.n_batch = s.n_batch;
    cp.n_ubatch = s.n_batch;
    cp.n_seq_max = s.n_seq_max;
    cp.kv_unified = s.kv_unified;
    cp.n_rs_seq = s.n_rs_seq;
    cp.n_outputs_max = s.n_outputs_max;
    cp.n_outputs_max_per_seq = s.n_outputs_max_per_seq;
    cp.n_threads = s.n_threads > 0 ? s.n_threads : default_n_threads();
    cp.n_threads_batch = cp.n_threads;
    cp.ctx_type = s.type;
    cp.type_k = s.type_k;
    cp.type_v = s.type_v;
    cp.no_perf = true;
    cp.swa_full = s.swa_full;
    cp.ctx_other = s.other;
    cp.flash_attn_type = llama_flash_attn_type(s.flash_attn);
    if (s.exact && s.flash_attn < 0) {
        // Exact mode pins the attention kernel (on and off are both exact but
        // give different numbers); "auto" could pick differently per context.
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    }
    return cp;
}

uint32_t padded_n_ctx(uint32_t n_ctx) {
    return uint32_t(std::min<uint64_t>((uint64_t(n_ctx) + 255) / 256 * 256, UINT32_MAX & ~255u));
}

ContextPtr new_context(llama_model * model, const ContextSpec & s, const std::string & what,
                       const std::string & advice) {
    log_clear_recent();
    ContextPtr ctx(llama_init_from_model(model, context_params(s)));
    if (!ctx) throw Error("llama.cpp could not create the context of " + what + ": " + log_recent() + advice);
    set_kernel_mode(ctx.get(), s.exact, what);
    return ctx;
}

void set_kernel_mode(llama_context * ctx, bool exact, const std::string & what) {
    // Per context (patches/0004): a drafter or another LLM in another thread keeps its own mode.
    if (!llama_set_batch_invariant(ctx, exact) && exact)
        throw UnsupportedError(what + ": a backend of this context has no exact (batch-invariant) kernels; "
                               "use kernels='fast' (--kernels fast), which is not lossless, or run on the CPU");
}

std::vector<BufferMemory> context_memory_by_buffer(const llama_context * ctx) {
    std::vector<BufferMemory> out;
    for (const auto & [buft, b] : llama_get_memory_breakdown(ctx)) {
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
        out.push_back({ggml_backend_buft_name(buft), dev ? ggml_backend_dev_name(dev) : "",
                       ggml_backend_buft_is_host(buft), b.model, b.context, b.compute});
    }
    return out;
}

ggml_type kv_type_from_name(const std::string & name) {
    static const std::pair<const char *, ggml_type> types[] = {
        {"f32", GGML_TYPE_F32}, {"f16", GGML_TYPE_F16}, {"bf16", GGML_TYPE_BF16},
        {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1},
        {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1}, {"iq4_nl", GGML_TYPE_IQ4_NL}};
    std::string names;
    for (const auto & [n, t] : types) {
        if (name == n) return t;
        names += names.empty() ? n : std::string(", ") + n;
    }
    throw InvalidParameterError("unknown KV cache type '" + name + "'; expected one of " + names);
}

}  // namespace pyspec
