// Token sampling as a pure function of one row of logits.
//
// The random draw for the token at absolute position `pos` comes from a
// counter-based generator keyed by (seed, pos), never from a stream that
// advances per call: the token chosen at a position is the same whether it
// is computed by plain decoding, by a k-token verify batch or after a
// rollback. Together with batch-invariant logits this makes speculation with
// accept-if-equal reproduce plain sampling exactly, seed for seed.
#pragma once
#include <cstdint>
#include <vector>

#include "llama.h"

namespace pyspec {

struct SamplingParams {
    float    temperature = 0.0f;   // <= 0: greedy (argmax, lowest id on ties)
    int32_t  top_k       = 40;     // <= 0: off
    float    top_p       = 0.95f;  // >= 1: off
    float    min_p       = 0.05f;  // <= 0: off
    uint64_t seed        = 0;
};

void validate(const SamplingParams & p);  // throws InvalidParameterError

// Uniform double in [0, 1) for (seed, pos, stream); pure.
double counter_uniform(uint64_t seed, uint64_t pos, uint64_t stream = 0);

// The target's truncated, tempered distribution over its support, sorted by
// descending probability (ties: lower id first). Greedy gives one token at 1.0.
struct Candidates {
    std::vector<llama_token> ids;
    std::vector<double>      probs;  // sums to 1
};
Candidates sampling_distribution(const float * logits /* [n_vocab] */, int32_t n_vocab,
                                 const SamplingParams & p);

// The token at absolute position `pos`, drawn from sampling_distribution.
llama_token sample_token(const float * logits /* [n_vocab] */, int32_t n_vocab,
                         const SamplingParams & p, uint64_t pos);

}  // namespace pyspec
