// What the drafters that read the target's hidden states share (mtp.h,
// eagle3.h, dflash.h): their context, batch and memory plumbing, the gathering
// of target layer features, and the check that a head fits its target. Each
// runs through the graphs of the pinned llama.cpp (a second llama_context).
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
#include "engine/device_argmax.h"
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
    // The drafter context's KV cache types (LLM's type_k_draft / type_v_draft): they change which
    // drafts are proposed, never the output.
    ggml_type type_k = GGML_TYPE_F16;
    ggml_type type_v = GGML_TYPE_F16;
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
    // greedy drafts without penalties or p_min: picked on the device (argmax_) when offloaded
    void set_sampling(const SamplingParams & p) override;
    void accept(int32_t n_accepted, const std::vector<llama_token> & emitted) override;
    DraftMemory memory() const;
    const std::shared_ptr<Engine> & target() const { return engine_; }

protected:
    FeatureDrafter(std::shared_ptr<Engine> target, const HeadParams & p);
    // Creates the drafter context for `model` (target or drafter weights);
    // `what` names the drafter in messages ("the MTP head").
    void make_context(const Model & model, const ContextSpec & cs, const std::string & what);
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
    DeviceArgmax argmax_{false};  // greedy drafts on the device (the drafter context's seq 0)
    std::vector<llama_token> history_;  // committed tokens (prompt + emitted)
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

// Checks that `draft` (an eagle3 or dflash GGUF) was built for `target`:
// hidden size, target layer ids, vocabulary. Throws DraftMismatchError or
// VocabMismatchError.
void check_head_compatible(const Model & target, const Model & draft);

// A drafter GGUF's metadata value, or `fallback` when the key is absent.
int32_t meta_int(const Model & m, const std::string & key, int32_t fallback);
bool meta_bool(const Model & m, const std::string & key, bool fallback);

}  // namespace pyspec
