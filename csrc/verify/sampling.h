// Token sampling as a pure function of one row of logits.
//
// The random draw for the token at absolute position `pos` comes from a
// counter-based generator keyed by (seed, pos, stream), never from a stream
// that advances per call: the token chosen at a position is the same whether
// it is computed by plain decoding, by a k-token verify batch or after a
// rollback. Together with batch-invariant logits this makes speculation with
// accept-if-equal reproduce plain sampling exactly, seed for seed. Each use of
// randomness has its own stream id (RngStream), so that, for example, the
// drafter's own sampling never shifts the target's draws.
//
// The sampler chain is llama.cpp's default order: penalties (repeat,
// frequency, presence) on the logits, then top-k, top-p and min-p on the
// untempered softmax, then temperature on the survivors.
#pragma once
#include <cstddef>
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
    // Penalties with llama.cpp's semantics, over the last penalty_last_n
    // tokens of the context (prompt included) before the sampled token:
    // a token seen c > 0 times gets its logit divided by repeat_penalty (or
    // multiplied when <= 0), then c * frequency_penalty + presence_penalty
    // subtracted. They apply at temperature 0 too (before the argmax).
    float    repeat_penalty    = 1.0f;  // 1: off
    float    frequency_penalty = 0.0f;  // 0: off
    float    presence_penalty  = 0.0f;  // 0: off
    int32_t  penalty_last_n    = 64;    // 0: off, -1: the whole context
};

void validate(const SamplingParams & p);  // throws InvalidParameterError

// True when any penalty changes the logits.
bool penalties_active(const SamplingParams & p);

// True when a token is the plain argmax of its logits row (greedy, no penalties): a device-side
// argmax (engine/device_argmax.h) can pick it.
inline bool plain_argmax(const SamplingParams & p) { return p.temperature <= 0.0f && !penalties_active(p); }

// The independent random streams, all keyed by (seed, absolute position of
// the token being decided).
enum RngStream : uint64_t {
    kStreamTarget   = 0,  // the target's own sample (plain decoding, bonus token)
    kStreamAccept   = 1,  // rejection sampling: the acceptance test
    kStreamResidual = 2,  // rejection sampling: the resample after a rejection
    kStreamDraft    = 3,  // a drafter sampling from its own distribution
};

// Uniform double in [0, 1) for (seed, pos, stream); pure.
double counter_uniform(uint64_t seed, uint64_t pos, uint64_t stream = 0);

// A sparse distribution: the target's truncated, tempered distribution over
// its support, sorted by descending probability (ties: lower id first).
// Greedy gives one token at 1.0.
struct Candidates {
    std::vector<llama_token> ids;
    std::vector<double>      probs;  // sums to 1
    size_t size() const { return ids.size(); }
    bool   empty() const { return ids.empty(); }
};

// The logits after the penalties for `context` (the tokens before the one
// being sampled; the penalty window is its last penalty_last_n tokens).
// Returns `logits` itself when no penalty applies, else a copy in `scratch`.
const float * penalized_logits(const float * logits, int32_t n_vocab, const SamplingParams & p,
                               const llama_token * context, size_t n_context, std::vector<float> & scratch);

// The distribution the target samples the token after `context` from.
Candidates sampling_distribution(const float * logits /* [n_vocab] */, int32_t n_vocab,
                                 const SamplingParams & p, const llama_token * context = nullptr,
                                 size_t n_context = 0);

// Inverse CDF: the index into c on which u in [0, 1) falls.
size_t sample_index(const Candidates & c, double u);

// The token at absolute position `pos`, drawn from sampling_distribution with
// counter_uniform(seed, pos, kStreamTarget).
llama_token sample_token(const float * logits /* [n_vocab] */, int32_t n_vocab, const SamplingParams & p,
                         uint64_t pos, const llama_token * context = nullptr, size_t n_context = 0);

}  // namespace pyspec
