#include "verify/verify.h"

namespace pyspec {

VerifyResult verify_accept_if_equal(const float * logits, int32_t n_vocab,
                                    const std::vector<llama_token> & draft,
                                    const SamplingParams & params, uint64_t pos0) {
    VerifyResult r;
    r.tokens.reserve(draft.size() + 1);
    for (size_t i = 0; i <= draft.size(); ++i) {
        const llama_token t = sample_token(logits + i * size_t(n_vocab), n_vocab, params, pos0 + i);
        r.tokens.push_back(t);
        if (i == draft.size() || t != draft[i]) break;
        r.n_accepted++;
    }
    return r;
}

}  // namespace pyspec
