// MTP: the target's own next-token-prediction layers (GGUF key
// <arch>.nextn_predict_layers > 0; the target Model must be loaded with
// load_mtp). The head at position p reads (token p, target hidden state at
// p-1) and predicts token p+1; drafting chains it on its own hidden state.
// Targets with several nextn blocks draft with the first one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "drafters/features.h"

namespace pyspec {

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

}  // namespace pyspec
