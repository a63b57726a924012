#include "engine/device_argmax.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"

namespace pyspec {

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
        llama_sampler_chain_add(chain_.get(), llama_sampler_init_greedy());
    }
    if (!llama_set_sampler(ctx, seq, on ? chain_.get() : nullptr)) {
        if (on) {  // the backend cannot run it: host picks from now on
            ok_ = false;
            return false;
        }
        throw Error("could not detach the device sampler of sequence " + std::to_string(seq));
    }
    on_ = on;
    return on_;
}

llama_token DeviceArgmax::token(llama_context * ctx, int32_t i, int32_t n_vocab) const {
    const llama_token t = llama_get_sampled_token_ith(ctx, i);
    if (t < 0 || t >= n_vocab)
        throw Error("the device sampler returned no token for output " + std::to_string(i));
    return t;
}

}  // namespace pyspec
