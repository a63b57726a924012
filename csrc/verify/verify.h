// The verifier over the target's logits for one verify batch.
//
// Row i of the batch's logits predicts the token at position pos0 + i given
// the committed history and the drafts 0..i-1 before it. Its distribution
// comes from the same sampler chain as plain decoding (sampling.h), the
// penalties reading the committed history plus drafts 0..i-1: row i is only
// used when those drafts were accepted, so a rejected token never enters the
// penalty window.
//
// Two modes:
//   - accept-if-equal: the target's own token at each row is drawn with
//     sample_token (greedy at temperature 0, the position-keyed draw above
//     it); drafts are accepted while they equal it, and the target's token at
//     the first mismatch (or after the last draft) is the bonus. The output is
//     exactly what plain decoding would have produced, seed for seed.
//   - rejection sampling (rejection.h): accepts a draft sampled from q with
//     probability min(1, p/q), resamples from the residual otherwise. The
//     output follows the target's distribution exactly and drafts are
//     accepted more often; at temperature 0 the engine uses accept-if-equal
//     (both are the argmax path there).
#pragma once
#include <cstdint>
#include <vector>

#include "llama.h"
#include "verify/rejection.h"
#include "verify/sampling.h"

namespace pyspec {

// The target's distributions for the rows of one verify batch.
class TargetRows {
public:
    // logits: [n_draft + 1, n_vocab]; history: the committed tokens (prompt
    // included) through the one the batch starts with.
    TargetRows(const float * logits, int32_t n_vocab, const SamplingParams & params,
               const std::vector<llama_token> & history, const std::vector<llama_token> & draft);
    Candidates  distribution(size_t i) const;
    llama_token sample(size_t i, uint64_t pos) const;  // sample_token of row i

private:
    const llama_token * context() const { return seq_.data(); }
    size_t n_context(size_t i) const { return n_tail_ + i; }

    const float * logits_;
    int32_t n_vocab_;
    SamplingParams params_;
    std::vector<llama_token> seq_;  // the penalty-relevant tail of history, then the drafts
    size_t n_tail_ = 0;
};

// logits: [n_draft + 1, n_vocab]; draft: [n_draft] the drafter's tokens for
// positions pos0 .. pos0 + n_draft - 1.
VerifyResult verify_accept_if_equal(const float * logits, int32_t n_vocab,
                                    const std::vector<llama_token> & draft,
                                    const SamplingParams & params, uint64_t pos0,
                                    const std::vector<llama_token> & history = {});

// Greedy verification from tokens already picked per row (a device argmax):
// picked(i) is row i's token; drafts are accepted while they equal it, and
// the pick at the first mismatch (or after the last draft) is the bonus.
// Reads only the rows it needs.
template <typename Picked>
VerifyResult verify_picked(const std::vector<llama_token> & draft, Picked && picked) {
    VerifyResult vr;
    for (size_t i = 0; i <= draft.size(); ++i) {
        vr.tokens.push_back(picked(int32_t(i)));
        if (i == draft.size() || vr.tokens.back() != draft[i]) break;
        vr.n_accepted++;
    }
    return vr;
}

// q: the drafter's distribution per draft token (empty: none, one-hot).
VerifyResult verify_rejection(const float * logits, int32_t n_vocab, const std::vector<llama_token> & draft,
                              const std::vector<Candidates> & q, const SamplingParams & params, uint64_t pos0,
                              const std::vector<llama_token> & history = {});

}  // namespace pyspec
