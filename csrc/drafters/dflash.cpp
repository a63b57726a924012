#include "drafters/dflash.h"

#include <algorithm>

#include "drafters/pick.h"
#include "engine/error.h"

namespace pyspec {

DFlashDrafter::DFlashDrafter(std::shared_ptr<Engine> target, std::shared_ptr<Model> drafter, const HeadParams & p)
    : FeatureDrafter(std::move(target), p), drafter_(std::move(drafter)) {
    check_head_compatible(*target_model_, *drafter_);
    if (drafter_->arch() != "dflash")
        throw DraftMismatchError("'" + drafter_->path() + "' is a " + drafter_->arch() +
                                 " drafter, not a DFlash drafter");
    block_size_ = meta_int(*drafter_, "dflash.block_size", 16);
    if (block_size_ < 2) throw DraftMismatchError("'" + drafter_->path() + "' has block size " +
                                                  std::to_string(block_size_) + "; expected >= 2");
    mask_ = llama_vocab_mask(drafter_->vocab());
    // DSpark (a DFlash drafter with a Markov head) may draft from the anchor
    // slot itself: its block's slot 0 predicts the token after the anchor.
    const bool dspark = !drafter_->meta("dflash.sample_from_anchor").empty() ||
                        !drafter_->meta("dflash.has_confidence_head").empty();
    anchor_ = dspark && meta_bool(*drafter_, "dflash.sample_from_anchor", true);
    dspark_ = dspark;
    ContextSpec cs = base_spec();
    // The drafter's memory: the features of the last `window` target
    // positions plus one block, not a second full-length cache.
    const uint32_t n_ctx = engine_->n_ctx();
    window_ = p.window > 0 ? std::min(p.window, n_ctx) : n_ctx;
    cs.n_ctx = std::min<uint32_t>(n_ctx, window_ + 2 * uint32_t(block_size_));
    // Features go in by chunks of 64 rows: llama.cpp sizes the compute
    // buffers for a whole batch through the LM head (the target's vocabulary).
    cs.n_batch = std::max<uint32_t>(64, uint32_t(block_size_));
    cs.n_outputs_max = uint32_t(block_size_);
    cs.n_outputs_max_per_seq = cs.n_outputs_max;  // a device argmax reads every slot
    make_context(*drafter_, cs, "the DFlash drafter");
    feats_ = std::make_unique<FusedFeatures>(*target_model_, *drafter_);
    llama_set_causal_attn(ctx_.get(), meta_bool(*drafter_, "dflash.attention.causal", false));
}

void DFlashDrafter::make_room(llama_pos end) {
    if (end - kept_from_ <= llama_pos(window_)) return;
    kept_from_ = end - llama_pos(window_);
    if (!llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, 0, kept_from_))
        throw Error("dflash: the drafter's memory refused to drop the features before position " +
                    std::to_string(kept_from_) + " (its window)");
}

void DFlashDrafter::observe(const TargetOutputs & out) {
    check_target(out);
    if (out.pos0 == 0) kept_from_ = 0;
    const float * feat = feats_->gather(out, engine_->exported_features());
    const size_t W = feats_->width();
    // features of rejected rows and the last noise block are replaced
    drop_from(out.pos0);
    const llama_pos first = std::max<llama_pos>(out.pos0, out.pos0 + out.n_tokens - llama_pos(window_));
    make_room(out.pos0 + out.n_tokens);
    const llama_pos end = out.pos0 + out.n_tokens, chunk = llama_pos(llama_n_batch(ctx_.get()));
    for (llama_pos p = first; p < end; p += chunk) {
        for (llama_pos q = p; q < std::min(end, p + chunk); ++q) add_embd(feat + size_t(q - out.pos0) * W, W, q, false);
        run(LLAMA_PROCESS_TYPE_DECODE, "dflash features");
    }
}

Draft DFlashDrafter::draft(int32_t n_max) {
    const int32_t P = n_memory();  // the last committed token's position
    // Always the trained block: [last token, mask x (block_size - 1)] (the
    // block attends to itself, so a shorter one would change every row).
    // Slot j predicts the token at P + j + 1 from the anchor (DSpark), at
    // P + j otherwise.
    const int32_t first = anchor_ ? 0 : 1;
    const int32_t n = std::min(n_max, block_size_ - first);
    if (n <= 0 || P < 1) return {};
    drop_from(P);  // rows of rejected drafts
    make_room(P + block_size_);
    // Plain DFlash runs its LM head (the whole vocabulary) only on the slots
    // read (patches/0003); DSpark's graph keeps every row and hands back the
    // first n_outputs of them: mark the prefix through the last slot read.
    for (int32_t j = 0; j < block_size_; ++j)
        add_token(j == 0 ? history_.back() : mask_, P + j, nullptr, 0,
                  j < first + n && (dspark_ || p_.all_outputs || j >= first));
    run(LLAMA_PROCESS_TYPE_DECODE, "dflash block");
    Draft d = pick_drafts(sampling_, history_, n, p_.p_min, n_vocab(), ctx_.get(), argmax_,
                          [&](int32_t i, llama_token) { return first + i; });
    drop_from(P);  // the block's own rows
    return d;
}

}  // namespace pyspec
