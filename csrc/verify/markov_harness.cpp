#include "verify/markov_harness.h"

#include <cmath>

#include "engine/error.h"

namespace pyspec {
namespace {

// The bug the negative control must catch: after a rejection, resample from
// p itself instead of the residual.
StepOutcome wrong_step(const Candidates & p, llama_token x, const Candidates & q, uint64_t pos, Randomness & rng) {
    if (rng.bernoulli(acceptance_probability(p, x, q), pos, kStreamAccept)) return {true, x};
    return {false, p.ids[rng.pick(p, pos, kStreamResidual)]};
}

size_t sequence_index(const std::vector<llama_token> & toks, int32_t n_vocab) {
    size_t k = 0;
    for (llama_token t : toks) k = k * size_t(n_vocab) + size_t(t);
    return k;
}

size_t n_sequences(const MarkovSpec & s) {
    size_t n = 1;
    for (int32_t i = 0; i < s.n_tokens; ++i) n *= size_t(s.n_vocab);
    return n;
}

// Follows a script of choices; past its end, records the options and stops.
class Enumerator final : public Randomness {
public:
    struct Exhausted {};
    explicit Enumerator(const std::vector<size_t> & script) : script_(script) {}
    bool bernoulli(double prob, uint64_t, uint64_t) override { return choose({1.0 - prob, prob}) == 1; }
    size_t pick(const Candidates & c, uint64_t, uint64_t) override { return choose(c.probs); }
    double weight = 1.0;
    std::vector<double> options;

private:
    size_t choose(const std::vector<double> & probs) {
        if (next_ < script_.size()) {
            const size_t k = script_[next_++];
            weight *= probs[k];
            return k;
        }
        options = probs;
        throw Exhausted{};
    }
    const std::vector<size_t> & script_;
    size_t next_ = 0;
};

void enumerate(const MarkovSpec & spec, std::vector<size_t> & script, std::vector<double> & out) {
    Enumerator e(script);
    try {
        const std::vector<llama_token> toks = markov_run(spec, e);
        out[sequence_index(toks, spec.n_vocab)] += e.weight;
        return;
    } catch (const Enumerator::Exhausted &) {
    }
    const std::vector<double> options = e.options;
    for (size_t k = 0; k < options.size(); ++k) {
        if (!(options[k] > 0.0)) continue;
        script.push_back(k);
        enumerate(spec, script, out);
        script.pop_back();
    }
}

void check(const MarkovSpec & s) {
    if (s.n_vocab < 1 || s.n_tokens < 1 || s.draft_n < 0)
        throw InvalidParameterError("markov harness: need n_vocab >= 1, n_tokens >= 1, draft_n >= 0");
    if (s.target.next.size() != size_t(s.n_vocab) || s.draft.next.size() != size_t(s.n_vocab))
        throw InvalidParameterError("markov harness: transition tables must have n_vocab rows");
}

}  // namespace

std::vector<llama_token> markov_run(const MarkovSpec & spec, Randomness & rng) {
    std::vector<llama_token> out;
    std::vector<llama_token> draft;
    while (int32_t(out.size()) < spec.n_tokens) {
        const llama_token prev = out.empty() ? -1 : out.back();
        const uint64_t pos0 = out.size();
        // The drafter drafts lazily, as far as verification asks: the same
        // law (and, with counter-based randomness, the same tokens) as
        // drafting all draft_n tokens first, and far fewer branches to enumerate.
        draft.clear();
        auto drafted = [&](size_t j) {
            const Candidates & qd = spec.draft.after(j == 0 ? prev : draft[j - 1]);
            const llama_token x =
                spec.draft_onehot ? qd.ids[0] : qd.ids[rng.pick(qd, pos0 + uint64_t(j), kStreamDraft)];
            draft.push_back(x);
            return DraftedToken{x, spec.draft_onehot ? nullptr : &qd};
        };
        auto p = [&](size_t i) { return spec.target.after(i == 0 ? prev : draft[i - 1]); };
        const VerifyResult r = verify_rejection(p, size_t(spec.draft_n), drafted, pos0, rng,
                                                spec.wrong ? wrong_step : rejection_step);
        out.insert(out.end(), r.tokens.begin(), r.tokens.end());
    }
    out.resize(size_t(spec.n_tokens));
    return out;
}

std::vector<double> markov_exact(const MarkovSpec & spec) {
    check(spec);
    std::vector<double> out(n_sequences(spec), 0.0);
    std::vector<size_t> script;
    enumerate(spec, script, out);
    return out;
}

std::vector<int64_t> markov_counts(const MarkovSpec & spec, uint64_t n_runs, uint64_t seed0) {
    check(spec);
    std::vector<int64_t> counts(n_sequences(spec), 0);
    for (uint64_t s = 0; s < n_runs; ++s) {
        CounterRandomness rng(seed0 + s);
        counts[sequence_index(markov_run(spec, rng), spec.n_vocab)]++;
    }
    return counts;
}

}  // namespace pyspec
