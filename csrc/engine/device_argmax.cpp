#include "engine/device_argmax.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"

#include "ggml.h"

namespace pyspec {

namespace {
// llama.cpp's greedy sampler leaves the row's logits in the sampler data, so llama_decode copies
// every sampled row's logits to the host (copy_tensor_async_rows of t_sampled_logits: 1 MiB per
// row for Gemma 3's vocabulary), whether or not anyone reads them. Measured on the H200: a batch
// of 32 or 64 greedy sequences generated ~3.7k tok/s whatever the kernels or the parallelism
// (~0.27 ms per row). This sampler hands back the argmax token only (llama.h: "user code can
// implement the interface below"); ties go to the lowest index on every backend (patch 0009).
const char * argmax_name(const llama_sampler *) { return "pyspec-argmax"; }

void argmax_apply(llama_sampler *, llama_token_data_array * cur) {  // on the host, as greedy does
    if (cur->size == 0) return;
    size_t best = 0;
    for (size_t i = 1; i < cur->size; ++i)
        if (cur->data[i].logit > cur->data[best].logit) best = i;
    cur->selected = int64_t(best);
}

bool argmax_backend_init(llama_sampler *, ggml_backend_buffer_type_t, uint32_t) { return true; }

void argmax_backend_apply(llama_sampler *, ggml_context * ctx, ggml_cgraph *, llama_sampler_data * data) {
    ggml_tensor * row = ggml_reshape_1d(ctx, data->logits, ggml_nelements(data->logits));
    ggml_tensor * tok = ggml_argmax(ctx, row);
    ggml_set_name(tok, "pyspec_argmax");
    data->sampled = tok;
    data->logits = nullptr;  // the point: nothing else of the row leaves the device
}

void argmax_copy_state(const llama_sampler *, llama_sampler *) {}  // stateless

llama_sampler_i argmax_iface = {
    /* .name              = */ argmax_name,
    /* .accept            = */ nullptr,
    /* .apply             = */ argmax_apply,
    /* .reset             = */ nullptr,
    /* .clone             = */ nullptr,
    /* .free              = */ nullptr,
    /* .backend_init      = */ argmax_backend_init,
    /* .backend_accept    = */ nullptr,
    /* .backend_apply     = */ argmax_backend_apply,
    /* .backend_set_input = */ nullptr,
    /* .backend_reset     = */ nullptr,
    /* .copy_state        = */ argmax_copy_state,
};
}  // namespace

DeviceArgmax::DeviceArgmax(bool offloaded) {
    const char * env = std::getenv("PYSPEC_DEVICE_ARGMAX");
    if (env && std::strcmp(env, "0") == 0) ok_ = false;
    else if (env && std::strcmp(env, "1") == 0) ok_ = true;
    else ok_ = offloaded && llama_supports_gpu_offload();
}

bool DeviceArgmax::set(llama_context * ctx, llama_seq_id seq, bool on) {
    on = on && ok_;
    if (on == on_) return on_;
    if (on) {
        chain_.reset(llama_sampler_chain_init(llama_sampler_chain_default_params()));
        llama_sampler_chain_add(chain_.get(), llama_sampler_init(&argmax_iface, nullptr));
    }
    if (!llama_set_sampler(ctx, seq, on ? chain_.get() : nullptr)) {
        if (on) {  // the backend cannot run it: host picks from now on
            ok_ = false;
            return false;
        }
        throw Error("could not detach the device sampler of sequence " + std::to_string(seq));
    }
    on_ = on;
    checked_ = false;
    return on_;
}

llama_token DeviceArgmax::token(llama_context * ctx, int32_t i, int32_t n_vocab) const {
    const llama_token t = llama_get_sampled_token_ith(ctx, i);
    if (t < 0 || t >= n_vocab)
        throw Error("the device sampler returned no token for output " + std::to_string(i));
    if (!checked_) {  // once per attach, off the per-token path: every row of the sampler is alike
        checked_ = true;
        if (llama_get_sampled_logits_ith(ctx, i) != nullptr) ++n_host_rows_;
    }
    return t;
}

}  // namespace pyspec
