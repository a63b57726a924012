#include "verify/verify.h"

#include <algorithm>

namespace pyspec {

TargetRows::TargetRows(const float * logits, int32_t n_vocab, const SamplingParams & params,
                       const std::vector<llama_token> & history, const std::vector<llama_token> & draft)
    : logits_(logits), n_vocab_(n_vocab), params_(params) {
    size_t tail = 0;
    if (penalties_active(params)) {
        tail = params.penalty_last_n < 0 ? history.size()
                                         : std::min(history.size(), size_t(params.penalty_last_n));
    }
    seq_.reserve(tail + draft.size());
    seq_.insert(seq_.end(), history.end() - tail, history.end());
    seq_.insert(seq_.end(), draft.begin(), draft.end());
    n_tail_ = tail;
}

Candidates TargetRows::distribution(size_t i) const {
    return sampling_distribution(logits_ + i * size_t(n_vocab_), n_vocab_, params_, context(), n_context(i));
}

llama_token TargetRows::sample(size_t i, uint64_t pos) const {
    return sample_token(logits_ + i * size_t(n_vocab_), n_vocab_, params_, pos, context(), n_context(i));
}

VerifyResult verify_accept_if_equal(const float * logits, int32_t n_vocab,
                                    const std::vector<llama_token> & draft,
                                    const SamplingParams & params, uint64_t pos0,
                                    const std::vector<llama_token> & history) {
    const TargetRows rows(logits, n_vocab, params, history, draft);
    VerifyResult r;
    r.tokens.reserve(draft.size() + 1);
    for (size_t i = 0; i <= draft.size(); ++i) {
        const llama_token t = rows.sample(i, pos0 + i);
        r.tokens.push_back(t);
        if (i == draft.size() || t != draft[i]) break;
        r.n_accepted++;
    }
    return r;
}

VerifyResult verify_rejection(const float * logits, int32_t n_vocab, const std::vector<llama_token> & draft,
                              const std::vector<Candidates> & q, const SamplingParams & params, uint64_t pos0,
                              const std::vector<llama_token> & history) {
    const TargetRows rows(logits, n_vocab, params, history, draft);
    CounterRandomness rng(params.seed);
    return verify_rejection([&rows](size_t i) { return rows.distribution(i); }, draft, q, pos0, rng);
}

}  // namespace pyspec
