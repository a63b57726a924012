// EAGLE-3: a one-layer head (GGUF architecture eagle3) over three target
// layers' features, fused by its encoder; at position p its decoder reads
// (token p+1, fused feature of p) and drafts autoregressively on its own
// pre-norm hidden state.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "drafters/features.h"

namespace pyspec {

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

}  // namespace pyspec
