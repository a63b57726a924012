#include "drafters/heads.h"

#include <algorithm>
#include <cstring>

#include "drafters/pick.h"
#include "engine/error.h"
#include "llama-ext.h"

namespace pyspec {

// ---- shared plumbing ----

FeatureDrafter::FeatureDrafter(std::shared_ptr<Engine> target, const HeadParams & p)
    : engine_(std::move(target)), target_model_(engine_->model()), tgt_(engine_->ctx()), p_(p) {
    if (!(p.p_min >= 0.0f && p.p_min <= 1.0f))
        throw InvalidParameterError("p_min must be in [0, 1], got " + std::to_string(p.p_min));
}

ContextSpec FeatureDrafter::base_spec() const {
    ContextSpec cs;
    cs.n_ctx = engine_->n_ctx();
    cs.n_batch = llama_n_batch(tgt_);  // a prompt chunk or a verify batch in one forward
    cs.n_threads = p_.n_threads > 0 ? p_.n_threads : llama_n_threads(tgt_);
    cs.exact = false;  // drafts never change the output: fast kernels
    cs.flash_attn = p_.flash_attn;
    cs.other = tgt_;   // drafters without their own embeddings / LM head use the target's
    return cs;
}

void FeatureDrafter::make_context(llama_model * model, const ContextSpec & cs, const std::string & what) {
    ctx_ = new_context(model, cs, what);
    batch_.reset(llama_batch_ext_init(ctx_.get()));
    if (!batch_) throw Error("llama.cpp could not create a batch for the context of " + what);
}

int32_t FeatureDrafter::add_token(llama_token t, llama_pos pos, const float * embd, size_t n_embd, bool output) {
    const int32_t i = llama_batch_ext_add_token(batch_.get(), 0, t);
    if (i < 0) throw Error(name() + ": could not add token " + std::to_string(t) + " to a batch (" +
                           std::to_string(i) + ")");
    const llama_pos p4[4] = {pos, 0, 0, 0};
    llama_batch_ext_set_pos(batch_.get(), i, p4);
    if (embd && !llama_batch_ext_set_embd_token(batch_.get(), i, {embd, 1, n_embd}))
        throw Error(name() + ": the drafter refused a hidden-state row of width " + std::to_string(n_embd));
    if (output) llama_batch_ext_set_output_logits(batch_.get(), i, true);
    return i;
}

int32_t FeatureDrafter::add_embd(const float * embd, size_t n_embd, llama_pos pos, bool output) {
    const int32_t i = llama_batch_ext_add_embd(batch_.get(), 0, {embd, 1, n_embd});
    if (i < 0) throw Error(name() + ": the drafter refused a feature row of width " + std::to_string(n_embd) +
                           " (" + std::to_string(i) + ")");
    const llama_pos p4[4] = {pos, 0, 0, 0};
    llama_batch_ext_set_pos(batch_.get(), i, p4);
    if (output) llama_batch_ext_set_output_logits(batch_.get(), i, true);
    return i;
}

void FeatureDrafter::run(llama_process_type type, const char * what) {
    const int rc = llama_process(ctx_.get(), type, batch_.get());
    llama_batch_ext_clear(batch_.get());
    check_decode(rc, what);
}

void FeatureDrafter::drop_from(llama_pos pos) {
    if (!llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, pos, -1))
        throw Error(name() + ": the drafter's memory refused to drop its positions >= " + std::to_string(pos) +
                    " (rows of rejected drafts); its context cannot roll back");
}

void FeatureDrafter::check_target(const TargetOutputs & out) const {
    // the features are read from out.ctx: only the context this drafter asked to export them has them
    if (out.ctx != tgt_)
        throw InvalidParameterError(name() + " drafter: it was built for another Engine than the one "
                                    "generating; build the drafter on that engine (" + name() +
                                    "Drafter(engine, ...)) and pass it to that engine only");
}

void FeatureDrafter::begin(const std::vector<llama_token> & prompt) {
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    history_ = prompt;
}

void FeatureDrafter::accept(int32_t, const std::vector<llama_token> & emitted) {
    history_.insert(history_.end(), emitted.begin(), emitted.end());
}

DraftMemory FeatureDrafter::memory() const {
    DraftMemory m;
    const ContextMemory c = context_memory(ctx_.get());
    m.kv_bytes = c.kv_bytes;
    m.compute_bytes = c.compute_bytes;
    m.buffer_bytes = buffer_bytes();
    m.buffer_bytes_used = buffer_bytes_used();
    return m;
}

namespace {
// Reads a metadata value of the drafter; "" when absent.
int32_t meta_int(const Model & m, const std::string & key, int32_t fallback) {
    const std::string v = m.meta(key);
    return v.empty() ? fallback : std::stoi(v);
}
bool meta_bool(const Model & m, const std::string & key, bool fallback) {
    const std::string v = m.meta(key);
    return v.empty() ? fallback : v == "true" || v == "1";
}
std::vector<int32_t> target_layer_ids(const Model & m) {
    const int32_t * ids = llama_model_target_layer_ids(m.get());
    const uint32_t n = llama_model_target_layer_ids_n(m.get());
    return ids ? std::vector<int32_t>(ids, ids + n) : std::vector<int32_t>{};
}
}  // namespace

void check_head_compatible(const Model & target, const Model & draft) {
    const std::string arch = draft.arch();
    const std::string file = "'" + draft.path() + "'";
    if (arch != "eagle3" && arch != "dflash")
        throw DraftMismatchError(file + " is a '" + arch + "' model, not an EAGLE-3 head or a DFlash drafter "
                                 "(GGUF architecture eagle3 or dflash); use spec_type='draft' for a draft model");
    const std::string for_target = " (" + target.path() + ": " + target.arch() + ", hidden size " +
                                   std::to_string(target.n_embd()) + ", " + std::to_string(target.n_layer()) +
                                   " layers)";
    const int32_t tgt_hidden = arch == "eagle3" ? meta_int(draft, "eagle3.target_hidden_size", draft.n_embd())
                                                : draft.n_embd();
    if (tgt_hidden != target.n_embd())
        throw DraftMismatchError(file + " was built for a target of hidden size " + std::to_string(tgt_hidden) +
                                 ", not for this target" + for_target + "; use the " + arch +
                                 " drafter trained for this model");
    const std::vector<int32_t> ids = target_layer_ids(draft);
    if (ids.empty() || (arch == "eagle3" && ids.size() != 3))
        throw DraftMismatchError(file + " has " + std::to_string(ids.size()) + " target layer ids (" + arch +
                                 ".target_layers); expected " + (arch == "eagle3" ? "3" : "at least 1"));
    for (int32_t id : ids) {
        if (id < 0 || id >= target.n_layer())
            throw DraftMismatchError(file + " reads target layer " + std::to_string(id) +
                                     ", which this target does not have" + for_target);
    }
    if (arch == "dflash") {
        if (llama_vocab_mask(draft.vocab()) == LLAMA_TOKEN_NULL)
            throw DraftMismatchError(file + " has no mask token (tokenizer.ggml.mask_token_id); a DFlash "
                                     "drafter needs one");
        if (!draft.meta("dflash.selector_top_k").empty() || llama_model_dflash_selector_top_k(draft.get()) > 0)
            throw DraftMismatchError(file + " is a DFlash2 drafter (selector head); pyspec drives DFlash only");
    }
    check_vocab_compatible(target, draft);
}

FusedFeatures::FusedFeatures(const Model & target, const Model & drafter)
    : ids_(target_layer_ids(drafter)), n_embd_(size_t(target.n_embd())) {}

const float * FusedFeatures::gather(const TargetOutputs & out, const FeatureRequest & exported) {
    const size_t W = width();
    buf_.resize(size_t(out.n_tokens) * W);
    for (size_t k = 0; k < ids_.size(); ++k) {
        // llama.cpp asserts (aborts) on a layer it was not asked to capture
        if (std::find(exported.layer_inputs.begin(), exported.layer_inputs.end(), ids_[k]) == exported.layer_inputs.end())
            throw Error("the target does not export the input of its layer " + std::to_string(ids_[k]));
        const float * f = llama_get_embeddings_layer_inp(out.ctx, uint32_t(ids_[k]));
        if (!f) throw Error("the target did not capture the input of its layer " + std::to_string(ids_[k]));
        for (int32_t i = 0; i < out.n_tokens; ++i)
            std::memcpy(&buf_[size_t(i) * W + k * n_embd_], f + size_t(i) * n_embd_, n_embd_ * sizeof(float));
    }
    return buf_.data();
}

// ---- MTP ----

MtpDrafter::MtpDrafter(std::shared_ptr<Engine> target, const HeadParams & p) : FeatureDrafter(std::move(target), p) {
    if (target_model_->n_layer_nextn() <= 0 || !target_model_->params().load_mtp)
        throw DraftMismatchError(
            "'" + target_model_->path() + "' has no MTP layers loaded (" + target_model_->arch() +
            ".nextn_predict_layers is 0 or the model was loaded without load_mtp); MTP drafting needs a target "
            "with next-token-prediction layers");
    n_embd_ = llama_model_n_embd_out(target_model_->get());
    ContextSpec cs = base_spec();
    cs.type = LLAMA_CONTEXT_TYPE_MTP;
    cs.n_outputs_max = 1;  // a draft step reads one row; the catch-up reads none
    make_context(target_model_->get(), cs, "the MTP head");
    llama_set_embeddings_nextn(ctx_.get(), true, /*masked=*/true);
}

void MtpDrafter::observe(const TargetOutputs & out) {
    check_target(out);
    if (!engine_->exported_features().hidden) throw Error("mtp: the target does not export its hidden states");
    const float * h = llama_get_embeddings_nextn(out.ctx);
    if (!h) throw Error("mtp: the target produced no hidden states");
    const size_t E = size_t(n_embd_);
    // the row before this forward: h at pos0 - 1 (zeros at the start)
    prev_.assign(E, 0.0f);
    const int32_t r = out.pos0 - 1 - rows_pos0_;
    if (out.pos0 > 0 && rows_pos0_ >= 0 && r >= 0 && r < rows_n_)
        std::copy_n(rows_.begin() + long(size_t(r) * E), E, prev_.begin());
    // the head at position p reads (token p, h at p - 1)
    drop_from(out.pos0);
    for (int32_t k = 0; k < out.n_tokens; ++k)
        add_token(out.tokens[k], out.pos0 + k, k == 0 ? prev_.data() : h + size_t(k - 1) * E, E, false);
    run(LLAMA_PROCESS_TYPE_DECODE, "mtp catch-up");
    rows_.assign(h, h + size_t(out.n_tokens) * E);
    rows_pos0_ = out.pos0;
    rows_n_ = out.n_tokens;
}

Draft MtpDrafter::draft(int32_t n_max) {
    const int32_t P = n_memory();  // position of the last committed token
    const int32_t r = P - 1 - rows_pos0_;
    if (n_max <= 0 || rows_pos0_ < 0 || r < 0 || r >= rows_n_) return {};
    const size_t E = size_t(n_embd_);
    std::vector<float> h(rows_.begin() + long(size_t(r) * E), rows_.begin() + long(size_t(r + 1) * E));
    drop_from(P);
    // step i: the head at P + i reads (the token there, h at P + i - 1): the
    // target's row first, then the head's own from the step before
    return pick_drafts(sampling_, history_, n_max, p_.p_min, n_vocab(), [&](int32_t i, llama_token prev) {
        if (i > 0) {
            const float * hn = llama_get_embeddings_nextn_ith(ctx_.get(), 0);
            if (!hn) throw Error("mtp: the head produced no hidden state");
            h.assign(hn, hn + E);
        }
        add_token(prev, P + i, h.data(), E, true);
        run(LLAMA_PROCESS_TYPE_DECODE, "mtp draft");
        return llama_get_logits_ith(ctx_.get(), 0);
    });
}

// ---- EAGLE-3 ----

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
    make_context(head_->get(), cs, "the EAGLE-3 head");
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
    return pick_drafts(sampling_, history_, n_max, p_.p_min, n_vocab(), [&](int32_t i, llama_token prev) {
        if (i == 0) return llama_get_logits_ith(ctx_.get(), idx);
        const float * hn = llama_get_embeddings_nextn_ith(ctx_.get(), i == 1 ? idx : 0);
        if (!hn) throw Error("eagle3: the head produced no hidden state");
        h.assign(hn, hn + D);
        add_token(prev, P + i - 1, h.data(), D, true);
        run(LLAMA_PROCESS_TYPE_DECODE, "eagle3 draft");
        return llama_get_logits_ith(ctx_.get(), 0);
    });
}

// ---- DFlash ----

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
    make_context(drafter_->get(), cs, "the DFlash drafter");
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
    Draft d = pick_drafts(sampling_, history_, n, p_.p_min, n_vocab(),
                          [&](int32_t i, llama_token) { return llama_get_logits_ith(ctx_.get(), first + i); });
    drop_from(P);  // the block's own rows
    return d;
}

}  // namespace pyspec
