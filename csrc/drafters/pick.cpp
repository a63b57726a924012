#include "drafters/pick.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"

namespace pyspec {

namespace {
class DraftPicker {
public:
    DraftPicker(const SamplingParams & p, const std::vector<llama_token> & history) : p_(p) {
        size_t tail = 0;
        if (penalties_active(p)) {
            tail = p.penalty_last_n < 0 ? history.size() : std::min(history.size(), size_t(p.penalty_last_n));
        }
        context_.assign(history.end() - long(tail), history.end());
    }

    // Picks the token at absolute position `pos` from `logits`, appends it
    // (and q when sampling) to `out`, and returns it.
    llama_token pick(const float * logits, int32_t n_vocab, uint64_t pos, Draft & out) {
        llama_token next = 0;
        if (p_.temperature > 0.0f) {
            // x ~ q, q under the target's temperature, truncation and penalties
            Candidates q = sampling_distribution(logits, n_vocab, p_, context_.data(), context_.size());
            next = q.ids[sample_index(q, counter_uniform(p_.seed, pos, kStreamDraft))];
            out.q.push_back(std::move(q));
        } else {
            const float * row = penalized_logits(logits, n_vocab, p_, context_.data(), context_.size(), scratch_);
            for (int32_t t = 1; t < n_vocab; ++t) {
                if (row[t] > row[next]) next = t;
            }
        }
        out.tokens.push_back(next);
        context_.push_back(next);
        return next;
    }

private:
    SamplingParams p_;
    std::vector<llama_token> context_;  // penalty window: history tail + drafted tokens
    std::vector<float> scratch_;
};

// The largest softmax probability of a row.
double top_probability(const float * logits, int32_t n_vocab) {
    const float best = *std::max_element(logits, logits + n_vocab);
    double sum = 0.0;
    for (int32_t t = 0; t < n_vocab; ++t) sum += std::exp(double(logits[t] - best));
    return 1.0 / sum;
}
}  // namespace

Draft pick_drafts(const SamplingParams & p, const std::vector<llama_token> & history, int32_t n_max, float p_min,
                  int32_t n_vocab, llama_context * ctx, const DeviceArgmax & argmax, const DraftRow & row_at) {
    Draft d;
    if (history.empty()) return d;
    llama_token prev = history.back();
    if (argmax.on()) {
        for (int32_t i = 0; i < n_max; ++i) {
            prev = argmax.token(ctx, row_at(i, prev), n_vocab);
            d.tokens.push_back(prev);
        }
        return d;
    }
    DraftPicker picker(p, history);
    for (int32_t i = 0; i < n_max; ++i) {
        const float * logits = llama_get_logits_ith(ctx, row_at(i, prev));
        if (!logits) throw Error("a drafter's forward returned no logits for its draft step " + std::to_string(i));
        if (p_min > 0.0f && i > 0 && top_probability(logits, n_vocab) < p_min) break;
        prev = picker.pick(logits, n_vocab, uint64_t(history.size()) + uint64_t(i), d);
    }
    return d;
}

}  // namespace pyspec
