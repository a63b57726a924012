// The one way a drafter turns a logits row into its next draft token: the
// argmax at temperature 0, else a draw from q (the target's sampler chain
// applied to the drafter's logits, stream kStreamDraft keyed by the drafted
// token's position), with q kept for rejection sampling.
#pragma once
#include <cstdint>
#include <vector>

#include "drafters/drafter.h"

namespace pyspec {

class DraftPicker {
public:
    // history: the committed tokens (penalties read their tail).
    DraftPicker(const SamplingParams & p, const std::vector<llama_token> & history);
    // Picks the token at absolute position `pos` from `logits`, appends it
    // (and q when sampling) to `out`, and returns it.
    llama_token pick(const float * logits, int32_t n_vocab, uint64_t pos, Draft & out);
    // The largest softmax probability of a row (for p_min cut-offs).
    static double top_probability(const float * logits, int32_t n_vocab);

private:
    SamplingParams p_;
    std::vector<llama_token> context_;  // penalty window: history tail + drafted tokens
    std::vector<float> scratch_;
};

}  // namespace pyspec
