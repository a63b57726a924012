// DFlash: a block-diffusion drafter (GGUF architecture dflash; DSpark, its
// variant with a Markov head, too). The fused features of chosen target
// layers are written into its KV cache for every target position; one
// forward of [last token, mask x (block_size - 1)] proposes a block.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "drafters/features.h"

namespace pyspec {

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

}  // namespace pyspec
