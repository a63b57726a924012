// Lossless speculative sampling (Leviathan et al. 2023; Chen et al. 2023).
//
// The drafter samples x from its own distribution q; the verifier accepts x
// with probability min(1, p(x) / q(x)) and otherwise samples from the
// residual norm(max(0, p - q)). The emitted token then follows the target's
// p exactly, and a draft is accepted with probability 1 - TV(p, q).
//
// Everything here is a pure function of distributions (p from
// sampling_distribution, so penalties and truncation are already in it),
// draft tokens and a source of randomness. The per-position step
// (rejection_step) and its pieces (acceptance_probability,
// residual_distribution) are what a tree verifier reuses per node; for
// several children of one node, apply the step child after child, each
// rejection replacing p by the residual.
//
// Edge cases:
//   - p(x) = 0 (x outside the target's truncated support): always rejected.
//   - q(x) = 0 for the drafted x: a drafter never emits a token it gave no
//     probability, so the ratio is undefined; treated as a rejection, the
//     token is resampled from the residual (documented, not lossless if a
//     drafter does this systematically).
//   - p == q: every draft is accepted (u < 1); a residual with (numerically)
//     no mass can only be reached by rounding, and falls back to p.
//   - a single-token support: p(t) = 1, so x == t is always accepted and any
//     other x is rejected and resampled as t.
//   - no q (empty Candidates: n-gram and other deterministic drafters): q is
//     one-hot at x. Then min(1, p(x)/1) = p(x) and the residual is p without
//     x, renormalized; the step draws y from p with the target's own stream
//     and accepts iff y == x, which has exactly that law and makes such
//     drafts reproduce plain sampling token for token.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "llama.h"
#include "verify/sampling.h"

namespace pyspec {

// Where the verifier's random choices come from. The engine draws every
// choice from counter_uniform(seed, pos, stream); tests substitute a source
// that branches over all outcomes to compute the exact output distribution.
class Randomness {
public:
    virtual ~Randomness() = default;
    // True with probability `prob`.
    virtual bool bernoulli(double prob, uint64_t pos, uint64_t stream) = 0;
    // An index into c, drawn with probabilities c.probs.
    virtual size_t pick(const Candidates & c, uint64_t pos, uint64_t stream) = 0;
};

class CounterRandomness final : public Randomness {
public:
    explicit CounterRandomness(uint64_t seed) : seed_(seed) {}
    bool bernoulli(double prob, uint64_t pos, uint64_t stream) override {
        return counter_uniform(seed_, pos, stream) < prob;
    }
    size_t pick(const Candidates & c, uint64_t pos, uint64_t stream) override {
        return sample_index(c, counter_uniform(seed_, pos, stream));
    }

private:
    uint64_t seed_;
};

// c's probability of token t (0 when t is not in its support).
double probability_of(const Candidates & c, llama_token t);

// min(1, p(x) / q(x)); 0 when p(x) = 0 or q(x) = 0. An empty q is one-hot at x.
double acceptance_probability(const Candidates & p, llama_token x, const Candidates & q);

// norm(max(0, p - q)), over p's support in p's order. An empty q is one-hot
// at x. When the residual's mass is below kResidualMinMass (p == q up to
// rounding), p itself.
constexpr double kResidualMinMass = 1e-12;
Candidates residual_distribution(const Candidates & p, const Candidates & q, llama_token x);

struct StepOutcome {
    bool        accepted = false;
    llama_token token = -1;  // x when accepted, else the resampled token
};

// One accept/resample decision for the token at absolute position `pos`.
StepOutcome rejection_step(const Candidates & p, llama_token x, const Candidates & q, uint64_t pos,
                           Randomness & rng);

// Per-position rule signature (tests substitute a deliberately wrong one).
using StepFn = StepOutcome (*)(const Candidates & p, llama_token x, const Candidates & q, uint64_t pos,
                               Randomness & rng);

// The target's distribution for verify row i (0..n_draft), asked for in order
// and only as far as needed.
using TargetDistFn = std::function<Candidates(size_t i)>;

struct VerifyResult {
    int32_t                  n_accepted = 0;  // drafts accepted (0..n_draft)
    std::vector<llama_token> tokens;          // accepted drafts + the bonus/resampled token
};

// One drafted position: the token and the distribution it was drawn from
// (nullptr or empty: none, one-hot).
struct DraftedToken {
    llama_token token = -1;
    const Candidates * q = nullptr;
};
// Drafted position i (0..n_draft-1), asked for in order and only as far as
// verification goes, so that a drafter may also draft lazily.
using DraftFn = std::function<DraftedToken(size_t i)>;

// Verifies a chain draft: row i of the target predicts the token at position
// pos0 + i given the drafts before it. After a rejection the resampled token
// ends the step; after n_draft acceptances the bonus token is drawn from row
// n_draft with the target's stream.
VerifyResult verify_rejection(const TargetDistFn & p, size_t n_draft, const DraftFn & draft, uint64_t pos0,
                              Randomness & rng, StepFn step = rejection_step);

// The same over a drafted chain. q: one distribution per draft token, or
// empty for none (one-hot); any q[i] may itself be empty.
VerifyResult verify_rejection(const TargetDistFn & p, const std::vector<llama_token> & draft,
                              const std::vector<Candidates> & q, uint64_t pos0, Randomness & rng,
                              StepFn step = rejection_step);

}  // namespace pyspec
