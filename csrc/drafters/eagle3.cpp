#include "drafters/eagle3.h"

#include <algorithm>
#include <cstring>

#include "drafters/pick.h"
#include "engine/error.h"
#include "llama-ext.h"

namespace pyspec {

Eagle3Drafter::Eagle3Drafter(std::shared_ptr<Engine> target, std::shared_ptr<Model> head, const HeadParams & p)
    : FeatureDrafter(std::move(target), p), head_(std::move(head)) {
    check_head_compatible(*target_model_, *head_);
    if (head_->arch() != "eagle3")
        throw DraftMismatchError("'" + head_->path() + "' is a " + head_->arch() + " drafter, not an EAGLE-3 head");
    n_embd_ = head_->n_embd();
    // The encoder outputs every row and the output buffer holds rows x
    // vocabulary logits: encode and decode in chunks of 64 rows.
    ContextSpec cs = base_spec();
    cs.n_batch = cs.n_outputs_max = std::min<uint32_t>(cs.n_batch, 64);
    cs.n_outputs_max_per_seq = cs.n_outputs_max;  // a device argmax reads the chunk's rows
    make_context(*head_, cs, "the EAGLE-3 head");
    feats_ = std::make_unique<FusedFeatures>(*target_model_, *head_);
    llama_set_embeddings_nextn(ctx_.get(), true, /*masked=*/true);
}

void Eagle3Drafter::begin(const std::vector<llama_token> & prompt) {
    FeatureDrafter::begin(prompt);
    g_.clear();
    g_pos0_ = 0;
    g_n_ = 0;
    n_valid_ = 0;
}

void Eagle3Drafter::observe(const TargetOutputs & out) {
    check_target(out);
    const float * feat = feats_->gather(out, engine_->exported_features());
    const size_t W = feats_->width(), D = size_t(n_embd_);
    // rows at positions >= pos0 are replaced (a rollback dropped them)
    g_n_ = std::clamp(out.pos0 - g_pos0_, 0, g_n_);
    if (g_n_ == 0) g_pos0_ = out.pos0;
    if (g_pos0_ + g_n_ != out.pos0) throw Error("eagle3: feature rows are not contiguous");
    // the encoder fuses each row on its own; positions are unused, but the
    // batch checks them against the memory: continue after its last one
    const int32_t chunk = int32_t(llama_n_ubatch(ctx_.get()));
    const llama_pos pos = llama_memory_seq_pos_max(llama_get_memory(ctx_.get()), 0) + 1;
    g_.resize(size_t(g_n_ + out.n_tokens) * D);
    for (int32_t i = 0; i < out.n_tokens; i += chunk) {
        const int32_t n = std::min(chunk, out.n_tokens - i);
        for (int32_t j = 0; j < n; ++j) add_embd(feat + size_t(i + j) * W, W, pos + j, true);
        run(LLAMA_PROCESS_TYPE_ENCODE, "eagle3 encoder");
        const float * g = llama_get_embeddings_nextn(ctx_.get());
        if (!g) throw Error("eagle3: the encoder produced no output");
        std::memcpy(&g_[size_t(g_n_ + i) * D], g, size_t(n) * D * sizeof(float));
    }
    g_n_ += out.n_tokens;
    // prompt rows are committed: decode their pairs now and keep few rows
    if (out.prompt) flush(std::min(g_pos0_ + g_n_ - 1, int32_t(history_.size()) - 2), false);
}

int32_t Eagle3Drafter::flush(int32_t last, bool output) {
    const size_t D = size_t(n_embd_);
    drop_from(n_valid_);
    // The pin's EAGLE-3 graph does not prune its rows to the outputs (llama.cpp
    // then hands back the first rows): the pair whose logits are read goes
    // alone in its own batch.
    const int32_t chunk = int32_t(llama_n_ubatch(ctx_.get()));
    const int32_t last_silent = output ? last - 1 : last;
    for (int32_t p = n_valid_; p <= last_silent; p += chunk) {
        const int32_t end = std::min(last_silent + 1, p + chunk);
        for (int32_t q = p; q < end; ++q) add_token(history_[size_t(q + 1)], q, &g_[size_t(q - g_pos0_) * D], D, false);
        run(LLAMA_PROCESS_TYPE_DECODE, "eagle3 pairs");
    }
    int32_t idx = -1;
    if (output && last >= n_valid_) {
        idx = add_token(history_[size_t(last + 1)], last, &g_[size_t(last - g_pos0_) * D], D, true);
        run(LLAMA_PROCESS_TYPE_DECODE, "eagle3 pair");
    }
    if (last >= n_valid_) {
        n_valid_ = last + 1;
        // keep only the rows not decoded yet
        const int32_t drop = n_valid_ - g_pos0_;
        g_.erase(g_.begin(), g_.begin() + long(size_t(drop) * D));
        g_pos0_ += drop;
        g_n_ -= drop;
    }
    return idx;
}

Draft Eagle3Drafter::draft(int32_t n_max) {
    const int32_t P = n_memory();  // the last committed token's position: pair (token P, g_{P-1}) at P-1
    if (n_max <= 0 || P < 1 || n_valid_ > P - 1 || g_pos0_ + g_n_ < P) return {};
    const int32_t idx = flush(P - 1, true);
    if (idx < 0) return {};
    const size_t D = size_t(n_embd_);
    std::vector<float> h;
    // step 0 reads the pair's logits; step i decodes (draft i - 1, the head's
    // hidden state of the step before) at P + i - 1
    return pick_drafts(sampling_, history_, n_max, p_.p_min, n_vocab(), ctx_.get(), argmax_,
                       [&](int32_t i, llama_token prev) {
        if (i == 0) return idx;
        const float * hn = llama_get_embeddings_nextn_ith(ctx_.get(), i == 1 ? idx : 0);
        if (!hn) throw Error("eagle3: the head produced no hidden state");
        h.assign(hn, hn + D);
        add_token(prev, P + i - 1, h.data(), D, true);
        run(LLAMA_PROCESS_TYPE_DECODE, "eagle3 draft");
        return int32_t(0);
    });
}

}  // namespace pyspec
