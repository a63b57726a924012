#include "drafters/features.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "llama-ext.h"

namespace pyspec {

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
    cs.type_k = p_.type_k;
    cs.type_v = p_.type_v;
    cs.other = tgt_;   // drafters without their own embeddings / LM head use the target's
    return cs;
}

void FeatureDrafter::make_context(const Model & model, const ContextSpec & cs, const std::string & what) {
    ctx_ = new_context(model.get(), cs, what);
    argmax_ = DeviceArgmax(model.params().n_gpu_layers != 0);
    batch_.reset(llama_batch_ext_init(ctx_.get()));
    if (!batch_) throw Error("llama.cpp could not create a batch for the context of " + what);
}

void FeatureDrafter::set_sampling(const SamplingParams & p) {
    Drafter::set_sampling(p);
    argmax_.set(ctx_.get(), 0, plain_argmax(p) && p_.p_min <= 0.0f);  // p_min reads the probabilities
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

int32_t meta_int(const Model & m, const std::string & key, int32_t fallback) {
    const std::string v = m.meta(key);
    return v.empty() ? fallback : std::stoi(v);
}
bool meta_bool(const Model & m, const std::string & key, bool fallback) {
    const std::string v = m.meta(key);
    return v.empty() ? fallback : v == "true" || v == "1";
}

namespace {
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

}  // namespace pyspec
