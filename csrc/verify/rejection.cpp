#include "verify/rejection.h"

#include <algorithm>
#include <utility>

namespace pyspec {

double probability_of(const Candidates & c, llama_token t) {
    for (size_t i = 0; i < c.ids.size(); ++i) {
        if (c.ids[i] == t) return c.probs[i];
    }
    return 0.0;
}

double acceptance_probability(const Candidates & p, llama_token x, const Candidates & q) {
    const double px = probability_of(p, x);
    if (px <= 0.0) return 0.0;
    const double qx = q.empty() ? 1.0 : probability_of(q, x);
    if (qx <= 0.0) return 0.0;  // undefined ratio: reject (see the header)
    return px >= qx ? 1.0 : px / qx;
}

namespace {
// q's probabilities by token id: a linear scan for small supports, a sorted
// copy and binary search for large ones (a full 262k vocabulary).
class QLookup {
public:
    explicit QLookup(const Candidates & q) : q_(q) {
        if (q.size() <= 64) return;
        sorted_.reserve(q.size());
        for (size_t i = 0; i < q.size(); ++i) sorted_.emplace_back(q.ids[i], q.probs[i]);
        std::sort(sorted_.begin(), sorted_.end());
    }
    double operator()(llama_token t) const {
        if (sorted_.empty()) return probability_of(q_, t);
        auto it = std::lower_bound(sorted_.begin(), sorted_.end(), std::make_pair(t, -1.0));
        return it != sorted_.end() && it->first == t ? it->second : 0.0;
    }

private:
    const Candidates & q_;
    std::vector<std::pair<llama_token, double>> sorted_;
};
}  // namespace

Candidates residual_distribution(const Candidates & p, const Candidates & q, llama_token x) {
    const QLookup qof(q);
    Candidates r;
    r.ids.reserve(p.size());
    r.probs.reserve(p.size());
    double mass = 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
        const double qi = q.empty() ? (p.ids[i] == x ? 1.0 : 0.0) : qof(p.ids[i]);
        const double d = p.probs[i] - qi;
        if (d > 0.0) {
            r.ids.push_back(p.ids[i]);
            r.probs.push_back(d);
            mass += d;
        }
    }
    if (!(mass >= kResidualMinMass)) return p;  // p == q up to rounding
    for (double & v : r.probs) v /= mass;
    return r;
}

StepOutcome rejection_step(const Candidates & p, llama_token x, const Candidates & q, uint64_t pos,
                           Randomness & rng) {
    if (q.empty()) {
        // One-hot q: accept with p(x), else a draw from p without x; realized
        // as the target's own draw so that plain sampling is reproduced.
        const llama_token y = p.ids[rng.pick(p, pos, kStreamTarget)];
        return {y == x, y};
    }
    if (rng.bernoulli(acceptance_probability(p, x, q), pos, kStreamAccept)) return {true, x};
    const Candidates r = residual_distribution(p, q, x);
    return {false, r.ids[rng.pick(r, pos, kStreamResidual)]};
}

VerifyResult verify_rejection(const TargetDistFn & p, size_t n_draft, const DraftFn & draft, uint64_t pos0,
                              Randomness & rng, StepFn step) {
    static const Candidates kOneHot;
    VerifyResult r;
    r.tokens.reserve(n_draft + 1);
    for (size_t i = 0; i < n_draft; ++i) {
        const DraftedToken d = draft(i);
        const Candidates pi = p(i);
        const StepOutcome o = step(pi, d.token, d.q ? *d.q : kOneHot, pos0 + i, rng);
        r.tokens.push_back(o.token);
        if (!o.accepted) return r;
        r.n_accepted++;
    }
    const Candidates pn = p(n_draft);
    r.tokens.push_back(pn.ids[rng.pick(pn, pos0 + n_draft, kStreamTarget)]);
    return r;
}

VerifyResult verify_rejection(const TargetDistFn & p, const std::vector<llama_token> & draft,
                              const std::vector<Candidates> & q, uint64_t pos0, Randomness & rng, StepFn step) {
    return verify_rejection(
        p, draft.size(),
        [&](size_t i) { return DraftedToken{draft[i], i < q.size() ? &q[i] : nullptr}; }, pos0, rng, step);
}

}  // namespace pyspec
