// Greedy picks on the device: an argmax-only backend sampler (llama.cpp's backend
// sampling API) attached to one sequence of a context, so a forward hands
// back the argmax token id of each output row instead of its logits (a row of
// Gemma 3's vocabulary is 1 MiB of floats; copying it and scanning it on the
// host costs more than the forward of a small model). The target's greedy
// generations, drafters' greedy drafts and the batch engine's greedy
// sequences use it when their model runs on a GPU.
#pragma once
#include <cstdint>
#include <memory>

#include "llama.h"

namespace pyspec {

// Argmax ops built into graphs and rows picked by them, in this process, on every context:
// the rows of one graph share one op (so ops <= graphs built with device picks).
struct DeviceArgmaxCounts {
    int64_t ops = 0;
    int64_t rows = 0;
};
DeviceArgmaxCounts device_argmax_counts();

class DeviceArgmax {
public:
    // offloaded: the context's model runs (some of) its layers on a GPU.
    // PYSPEC_DEVICE_ARGMAX=0 turns device picks off, =1 turns them on even on
    // the CPU backend (tests run the same path there).
    explicit DeviceArgmax(bool offloaded);
    DeviceArgmax(DeviceArgmax &&) = default;
    DeviceArgmax & operator=(DeviceArgmax &&) = default;

    bool available() const { return ok_; }
    bool on() const { return on_; }
    // Attaches (on) or detaches the sampler of `seq` in ctx; returns whether it
    // is on. When the backend cannot run it, stays off from then on.
    bool set(llama_context * ctx, llama_seq_id seq, bool on);
    // The token picked for output row i (as llama_get_logits_ith's i);
    // Error when there is none.
    llama_token token(llama_context * ctx, int32_t i, int32_t n_vocab) const;
    // Attachments whose first pick's logits row reached the host anyway (llama.cpp copies a sampled
    // row's logits when the sampler leaves them in its data, as its greedy sampler does; every row
    // of a sampler is alike, so the first pick after each attach is checked): 0 with this class's.
    int64_t n_rows_with_host_logits() const { return n_host_rows_; }

private:
    struct SamplerDeleter { void operator()(llama_sampler * s) const { llama_sampler_free(s); } };
    // a chain is initialised for the backend once (llama_sampler_chain_backend_init asserts
    // otherwise): a fresh one for every attach after a detach
    std::unique_ptr<llama_sampler, SamplerDeleter> chain_;
    bool ok_ = false;
    bool on_ = false;
    mutable bool checked_ = false;
    mutable int64_t n_host_rows_ = 0;
};

}  // namespace pyspec
