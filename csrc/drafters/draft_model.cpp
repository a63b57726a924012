#include "drafters/draft_model.h"
#include "drafters/pick.h"

#include <algorithm>

#include "engine/context.h"
#include "engine/error.h"
#include "verify/sampling.h"

namespace pyspec {

DraftModelDrafter::DraftModelDrafter(std::shared_ptr<Model> draft, const Model & target, const DraftModelParams & p)
    : model_(std::move(draft)), p_(p), batch_(512) {
    check_vocab_compatible(target, *model_);
    if (!(p.p_min >= 0.0f && p.p_min <= 1.0f))
        throw InvalidParameterError("draft p_min must be in [0, 1], got " + std::to_string(p.p_min));
    ContextSpec cs;
    cs.n_ctx = p.n_ctx;
    cs.n_batch = 512;
    cs.n_threads = p.n_threads;
    cs.exact = p.exact;
    cs.flash_attn = p.flash_attn;
    cs.type_k = kv_type_from_name(p.type_k);
    cs.type_v = kv_type_from_name(p.type_v);
    ctx_ = new_context(model_->get(), cs, "the draft model");
    argmax_ = DeviceArgmax(model_->params().n_gpu_layers != 0);
}

void DraftModelDrafter::begin(const std::vector<llama_token> & prompt) {
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    cached_.clear();
    history_ = prompt;
}

void DraftModelDrafter::accept(int32_t, const std::vector<llama_token> & emitted) {
    history_.insert(history_.end(), emitted.begin(), emitted.end());
}

void DraftModelDrafter::sync_cache() {
    // Keep the common prefix of what is cached and what was committed.
    size_t keep = 0;
    const size_t target_n = history_.size() - 1;  // the last token is decoded in draft()
    while (keep < cached_.size() && keep < target_n && cached_[keep] == history_[keep]) ++keep;
    if (keep < cached_.size()) {
        if (!llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, llama_pos(keep), -1)) {
            // a recurrent draft model cannot drop a suffix: start again from an empty memory
            // (whole-sequence removal cannot fail)
            llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, -1, -1);
            keep = 0;
        }
        cached_.resize(keep);
    }
    // llama.cpp caps a context's batch at the n_ctx it was asked for
    const size_t chunk = std::min<size_t>(size_t(batch_.capacity()), llama_n_batch(ctx_.get()));
    for (size_t i = keep; i < target_n; i += chunk) {
        const size_t n = std::min(target_n - i, chunk);
        batch_.clear();
        for (size_t j = 0; j < n; ++j) batch_.add(history_[i + j], llama_pos(i + j), false);
        decode_checked(ctx_.get(), batch_.get(), "draft model prefill");
        cached_.insert(cached_.end(), history_.begin() + i, history_.begin() + i + n);
    }
}

void DraftModelDrafter::set_sampling(const SamplingParams & p) {
    Drafter::set_sampling(p);
    argmax_.set(ctx_.get(), 0, plain_argmax(p) && p_.p_min <= 0.0f);
}

Draft DraftModelDrafter::draft(int32_t n_max) {
    if (history_.empty() || n_max <= 0) return {};
    if (history_.size() + size_t(n_max) >= llama_n_ctx(ctx_.get())) return {};  // no room: no draft
    sync_cache();
    return pick_drafts(sampling_, history_, n_max, p_.p_min, model_->n_vocab(), ctx_.get(), argmax_,
                       [&](int32_t, llama_token prev) {
        batch_.clear();
        batch_.add(prev, llama_pos(cached_.size()), true);
        decode_checked(ctx_.get(), batch_.get(), "draft model");
        cached_.push_back(prev);
        return 0;
    });
}

}  // namespace pyspec
