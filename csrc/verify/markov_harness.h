// Test harness for the rejection verifier: a first-order Markov chain as the
// target and another as the drafter, run through the same draft -> verify ->
// commit loop as the engine (verify_rejection, rejection_step). It gives the
// exact distribution of the first emitted tokens (every random choice
// enumerated with its probability) and Monte Carlo counts over seeds, both
// fast enough for the unit tests. Not used by the engine.
#pragma once
#include <cstdint>
#include <vector>

#include "verify/rejection.h"

namespace pyspec {

struct MarkovChain {
    Candidates initial;            // the first token's distribution
    std::vector<Candidates> next;  // [n_vocab]: the distribution after token t
    const Candidates & after(llama_token prev) const { return prev < 0 ? initial : next[size_t(prev)]; }
};

struct MarkovSpec {
    int32_t n_vocab = 0;
    MarkovChain target;
    MarkovChain draft;
    int32_t draft_n = 2;        // tokens drafted per step (0: plain sampling)
    int32_t n_tokens = 2;       // emitted tokens recorded
    bool draft_onehot = false;  // the drafter proposes its most likely token and gives no q (like n-gram)
    bool wrong = false;         // negative control: resample from p instead of the residual
};

// One generation with the randomness `rng`: the first n_tokens emitted tokens.
std::vector<llama_token> markov_run(const MarkovSpec & spec, Randomness & rng);

// The exact probability of every sequence of the first n_tokens tokens,
// indexed in base n_vocab (first token most significant).
std::vector<double> markov_exact(const MarkovSpec & spec);

// How often each sequence came out over n_runs runs with seeds seed0, seed0 + 1, ...
std::vector<int64_t> markov_counts(const MarkovSpec & spec, uint64_t n_runs, uint64_t seed0);

}  // namespace pyspec
