// Drafting with a separate, smaller GGUF model that shares the target's
// vocabulary; it keeps its own context and KV cache.
#pragma once
#include <memory>

#include "drafters/drafter.h"
#include "engine/device_argmax.h"
#include "engine/model.h"

namespace pyspec {

struct DraftModelParams {
    uint32_t n_ctx = 4096;
    int32_t  n_threads = 0;  // 0: default_n_threads() (engine/threads.h)
    float    p_min = 0.0f;  // stop drafting when the drafter's top probability falls below this
    bool     exact = true;  // batch-invariant kernels, as for the target
    int32_t  flash_attn = -1;  // as for the target
    // the draft context's KV cache types: the drafter's precision changes how
    // many drafts are accepted, never the output
    std::string type_k = "f16";
    std::string type_v = "f16";
};

class DraftModelDrafter final : public Drafter {
public:
    // Checks the vocabularies (VocabMismatchError) before anything else.
    DraftModelDrafter(std::shared_ptr<Model> draft, const Model & target, const DraftModelParams & p);
    std::string name() const override { return "draft"; }
    void  begin(const std::vector<llama_token> & prompt) override;
    Draft draft(int32_t n_max) override;
    void  accept(int32_t n_accepted, const std::vector<llama_token> & emitted) override;
    // greedy drafts without penalties or p_min: picked on the device when the model is offloaded
    void  set_sampling(const SamplingParams & p) override;
    ContextMemory memory() const { return context_memory(ctx_.get()); }
    int32_t n_threads() const { return llama_n_threads(ctx_.get()); }

private:
    void sync_cache();  // make the drafter's memory hold exactly history_ (but its last token)

    std::shared_ptr<Model> model_;
    DraftModelParams p_;
    ContextPtr ctx_;
    DeviceArgmax argmax_{false};
    Batch batch_;
    std::vector<llama_token> history_;  // committed tokens
    std::vector<llama_token> cached_;   // tokens in the drafter's memory, position = index
};

}  // namespace pyspec
