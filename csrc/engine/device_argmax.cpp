#include "engine/device_argmax.h"

#include <atomic>
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

// One argmax op for every row of a graph. llama.cpp's build_sampling calls backend_apply once per
// output row, each with a view of one row of the same logits matrix; an argmax per row is one
// kernel per row, and ggml-cuda's argmax runs a row on one thread block (one SM), so k rows cost
// k serial scans of the vocabulary. The first row of a graph builds the argmax of the whole
// matrix (one block per row, all rows at once); every row reads its element of it. build_sampling
// calls every sampler's backend_reset before the first backend_apply of a graph, which forgets
// the shared op (a later graph may reuse the same addresses). The argmax of a row does not depend
// on the other rows: the picks are the same as one argmax per row.
struct SharedArgmax {
    const ggml_context * ctx = nullptr;
    const ggml_tensor * logits = nullptr;
    ggml_tensor * argmax = nullptr;
};
thread_local SharedArgmax shared;
std::atomic<int64_t> n_argmax_ops{0}, n_argmax_rows{0};

void argmax_backend_reset(llama_sampler *) { shared = SharedArgmax{}; }

void argmax_backend_apply(llama_sampler *, ggml_context * ctx, ggml_cgraph *, llama_sampler_data * data) {
    ggml_tensor * row = data->logits;
    const ggml_tensor * m = row->view_src;
    const int64_t n = ggml_nelements(row);
    n_argmax_rows++;
    if (m && m->type == GGML_TYPE_F32 && ggml_is_contiguous(m) && ggml_is_matrix(m) && m->ne[0] == n &&
        row->view_offs % m->nb[1] == 0) {
        if (shared.ctx != ctx || shared.logits != m) {
            shared = {ctx, m, ggml_argmax(ctx, const_cast<ggml_tensor *>(m))};
            ggml_set_name(shared.argmax, "pyspec_argmax_rows");
            n_argmax_ops++;
        }
        const size_t i = row->view_offs / m->nb[1];
        data->sampled = ggml_view_1d(ctx, shared.argmax, 1, i * shared.argmax->nb[0]);
    } else {  // not a row of a logits matrix: its own argmax
        ggml_tensor * tok = ggml_argmax(ctx, ggml_reshape_1d(ctx, row, n));
        ggml_set_name(tok, "pyspec_argmax");
        data->sampled = tok;
        n_argmax_ops++;
    }
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
    /* .backend_reset     = */ argmax_backend_reset,
    /* .copy_state        = */ argmax_copy_state,
};
}  // namespace

DeviceArgmaxCounts device_argmax_counts() { return {n_argmax_ops.load(), n_argmax_rows.load()}; }

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
