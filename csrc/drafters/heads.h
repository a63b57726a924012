// Drafters that read the target's hidden states: MTP heads built into the
// target, EAGLE-3 heads and DFlash block-diffusion drafters, run through the
// graphs of the pinned llama.cpp (a second llama_context each).
//
// The engine has the target export what features() asks for during their
// generations and shows them every target forward (observe: prompt chunks
// and the kept rows of verify batches); they copy the feature rows they need
// right away (the target overwrites them on its next forward). After accept() the target's
// memory holds positions 0 .. n_memory()-1 and the last committed token
// (history_.back()) sits at position n_memory(), not yet decoded: drafts
// start there. A drafter's own KV cache may hold rows for rejected positions
// after a verify; each drafter drops them before it writes there again.
//
// Drafters never affect the output (the target verifies every token), so
// their contexts use the fast kernels.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "drafters/drafter.h"
#include "engine/context.h"
#include "engine/engine.h"
#include "engine/model.h"

namespace pyspec {

struct HeadParams {
    int32_t n_threads = 0;     // 0: the target context's
    float   p_min = 0.0f;      // stop drafting when the top probability falls below this
    int32_t flash_attn = -1;   // drafter context: -1 auto, 0 off, 1 on
    // DFlash: target positions whose features the drafter keeps (its KV
    // cache); 0: the target's whole context.
    uint32_t window = 0;
    // DFlash: mark every block slot up to the last one read as an output (the
    // graph then returns those rows) instead of only the slots read (patched
    // graph: only those rows). Same drafts either way; a check of the row
    // mapping, slower.
    bool all_outputs = false;
};

// Bytes a drafter holds beyond its weights, for memory reports.
struct DraftMemory {
    size_t kv_bytes = 0;       // the drafter context's KV cache
    size_t compute_bytes = 0;  // its compute buffers
    size_t buffer_bytes = 0;   // bound on the feature rows kept on the host
    size_t buffer_bytes_used = 0;  // what they hold now
};

struct BatchExtDeleter { void operator()(llama_batch_ext * b) const { llama_batch_ext_free(b); } };
using BatchExtPtr = std::unique_ptr<llama_batch_ext, BatchExtDeleter>;

class FeatureDrafter : public Drafter {
public:
    void begin(const std::vector<llama_token> & prompt) override;
    void accept(int32_t n_accepted, const std::vector<llama_token> & emitted) override;
    DraftMemory memory() const;
    const std::shared_ptr<Engine> & target() const { return engine_; }

protected:
    FeatureDrafter(std::shared_ptr<Engine> target, const HeadParams & p);
    // Creates the drafter context for `model` (target or drafter weights);
    // `what` names the drafter in messages ("the MTP head").
    void make_context(llama_model * model, const ContextSpec & cs, const std::string & what);
    // The drafter context's settings before each drafter's own: the target's
    // context size, batch and threads, fast kernels, the target as ctx_other.
    ContextSpec base_spec() const;
    // batch_ building; pos is the (single) position of the row
    int32_t add_token(llama_token t, llama_pos pos, const float * embd, size_t n_embd, bool output);
    int32_t add_embd(const float * embd, size_t n_embd, llama_pos pos, bool output);
    void    run(llama_process_type type, const char * what);  // processes batch_, then clears it
    void    drop_from(llama_pos pos);                         // drafter memory: keep positions < pos
    // InvalidParameterError unless `out` comes from the engine this drafter was built on
    void    check_target(const TargetOutputs & out) const;
    int32_t n_memory() const { return int32_t(history_.size()) - 1; }
    int32_t n_vocab() const { return target_model_->n_vocab(); }
    virtual size_t buffer_bytes() const = 0;       // bound
    virtual size_t buffer_bytes_used() const = 0;  // held now
    size_t batch_rows() const { return llama_n_batch(tgt_); }

    std::shared_ptr<Engine> engine_;
    std::shared_ptr<Model> target_model_;
    llama_context * tgt_ = nullptr;
    HeadParams p_;
    ContextPtr ctx_;
    BatchExtPtr batch_;
    std::vector<llama_token> history_;  // committed tokens (prompt + emitted)
};

// MTP: the target's own next-token-prediction layers (GGUF key
// <arch>.nextn_predict_layers > 0; the target Model must be loaded with
// load_mtp). The head at position p reads (token p, target hidden state at
// p-1) and predicts token p+1; drafting chains it on its own hidden state.
// Targets with several nextn blocks draft with the first one.
class MtpDrafter final : public FeatureDrafter {
public:
    MtpDrafter(std::shared_ptr<Engine> target, const HeadParams & p);
    std::string name() const override { return "mtp"; }
    void  observe(const TargetOutputs & out) override;
    Draft draft(int32_t n_max) override;
    FeatureRequest features() const override { return {true, {}}; }

private:
    // the rows of one target forward (at most a batch) and one more
    size_t buffer_bytes() const override { return (batch_rows() + 1) * size_t(n_embd_) * sizeof(float); }
    size_t buffer_bytes_used() const override { return (rows_.capacity() + prev_.capacity()) * sizeof(float); }
    int32_t n_embd_ = 0;
    std::vector<float> rows_;  // target hidden states of the last observed forward
    int32_t rows_pos0_ = -1;
    int32_t rows_n_ = 0;
    std::vector<float> prev_;  // scratch: the row before a forward
};

// The inputs of the target layers a drafter reads (its GGUF's
// <arch>.target_layers), fused per row as [f_id0 | f_id1 | ...].
class FusedFeatures {
public:
    FusedFeatures(const Model & target, const Model & drafter);
    // The fused rows of the forward `out` describes: [out.n_tokens, width()];
    // `exported`: what the target context exports (Error unless it has them).
    const float * gather(const TargetOutputs & out, const FeatureRequest & exported);
    const std::vector<int32_t> & layer_ids() const { return ids_; }
    size_t width() const { return ids_.size() * n_embd_; }
    size_t bytes(size_t rows) const { return rows * width() * sizeof(float); }
    size_t bytes_used() const { return buf_.capacity() * sizeof(float); }

private:
    std::vector<int32_t> ids_;
    size_t n_embd_;
    std::vector<float> buf_;
};

// EAGLE-3: a one-layer head (GGUF architecture eagle3) over three target
// layers' features, fused by its encoder; at position p its decoder reads
// (token p+1, fused feature of p) and drafts autoregressively on its own
// pre-norm hidden state.
class Eagle3Drafter final : public FeatureDrafter {
public:
    Eagle3Drafter(std::shared_ptr<Engine> target, std::shared_ptr<Model> head, const HeadParams & p);
    std::string name() const override { return "eagle3"; }
    FeatureRequest features() const override { return {false, feats_->layer_ids()}; }
    void  begin(const std::vector<llama_token> & prompt) override;
    void  observe(const TargetOutputs & out) override;
    Draft draft(int32_t n_max) override;

private:
    // one forward's fused features, and encoder rows not yet decoded: at
    // most a prompt chunk, or the rows of a verify batch plus its successor
    size_t buffer_bytes() const override {
        return feats_->bytes(batch_rows()) + batch_rows() * 2 * size_t(n_embd_) * sizeof(float);
    }
    size_t buffer_bytes_used() const override { return g_.capacity() * sizeof(float) + feats_->bytes_used(); }
    // decodes the pairs (history_[p+1], g_p) for p in [n_valid_, last], the
    // last one with logits when `output`
    int32_t flush(int32_t last, bool output);
    std::shared_ptr<Model> head_;
    std::unique_ptr<FusedFeatures> feats_;
    int32_t n_embd_ = 0;
    std::vector<float> g_;     // encoder outputs for positions g_pos0_ .. g_pos0_ + g_n_ - 1
    int32_t g_pos0_ = 0, g_n_ = 0;
    int32_t n_valid_ = 0;      // the drafter memory's pairs at positions < n_valid_ are committed
};

// DFlash: a block-diffusion drafter (GGUF architecture dflash; DSpark, its
// variant with a Markov head, too). The fused features of chosen target
// layers are written into its KV cache for every target position; one
// forward of [last token, mask x (block_size - 1)] proposes a block.
class DFlashDrafter final : public FeatureDrafter {
public:
    DFlashDrafter(std::shared_ptr<Engine> target, std::shared_ptr<Model> drafter, const HeadParams & p);
    std::string name() const override { return "dflash"; }
    FeatureRequest features() const override { return {false, feats_->layer_ids()}; }
    void  observe(const TargetOutputs & out) override;
    Draft draft(int32_t n_max) override;
    int32_t block_size() const { return block_size_; }
    uint32_t window() const { return window_; }

private:
    // one forward's fused features; the window itself lives in the KV cache
    size_t buffer_bytes() const override {
        return feats_->bytes(batch_rows());
    }
    size_t buffer_bytes_used() const override { return feats_->bytes_used(); }
    void make_room(llama_pos end);  // keeps the features of positions >= end - window_
    std::shared_ptr<Model> drafter_;
    std::unique_ptr<FusedFeatures> feats_;
    int32_t block_size_ = 16;
    llama_token mask_ = LLAMA_TOKEN_NULL;
    bool dspark_ = false;      // a DSpark drafter (Markov head)
    bool anchor_ = false;      // DSpark drafting from the anchor slot
    uint32_t window_ = 0;
    llama_pos kept_from_ = 0;  // oldest position still in the drafter memory
};

// Checks that `draft` (an eagle3 or dflash GGUF) was built for `target`:
// hidden size, target layer ids, vocabulary. Throws DraftMismatchError or
// VocabMismatchError.
void check_head_compatible(const Model & target, const Model & draft);

}  // namespace pyspec
