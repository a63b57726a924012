// The verifier: a pure function of the target's logits and the draft.
//
// Accept-if-equal: the target's own token at each verified position is drawn
// with sample_token (greedy at temperature 0, the position-keyed draw above
// it); drafts are accepted while they equal it, and the target's token at the
// first mismatch (or after the last draft) is the bonus. The output therefore
// is exactly what plain decoding would have produced.
#pragma once
#include <cstdint>
#include <vector>

#include "llama.h"
#include "verify/sampling.h"

namespace pyspec {

struct VerifyResult {
    int32_t                  n_accepted = 0;  // drafts accepted (0..n_draft)
    std::vector<llama_token> tokens;          // accepted drafts + the bonus token
};

// logits: [n_draft + 1, n_vocab], row i is the target's prediction for the
// token at position pos0 + i (row 0 follows the last committed token).
// draft:  [n_draft] the drafter's tokens for positions pos0 .. pos0 + n_draft - 1.
VerifyResult verify_accept_if_equal(const float * logits, int32_t n_vocab,
                                    const std::vector<llama_token> & draft,
                                    const SamplingParams & params, uint64_t pos0);

}  // namespace pyspec
