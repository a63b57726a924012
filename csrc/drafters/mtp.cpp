#include "drafters/mtp.h"

#include <algorithm>

#include "drafters/pick.h"
#include "engine/error.h"
#include "llama-ext.h"

namespace pyspec {

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
    make_context(*target_model_, cs, "the MTP head");
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
    return pick_drafts(sampling_, history_, n_max, p_.p_min, n_vocab(), ctx_.get(), argmax_,
                       [&](int32_t i, llama_token prev) {
        if (i > 0) {
            const float * hn = llama_get_embeddings_nextn_ith(ctx_.get(), 0);
            if (!hn) throw Error("mtp: the head produced no hidden state");
            h.assign(hn, hn + E);
        }
        add_token(prev, P + i, h.data(), E, true);
        run(LLAMA_PROCESS_TYPE_DECODE, "mtp draft");
        return 0;
    });
}

}  // namespace pyspec
