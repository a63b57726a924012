#include "verify/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "engine/error.h"

namespace pyspec {

void validate(const SamplingParams & p) {
    auto bad = [](const std::string & m) { throw InvalidParameterError(m); };
    if (!std::isfinite(p.temperature) || p.temperature < 0.0f)
        bad("temperature must be a finite number >= 0 (0 = greedy), got " + std::to_string(p.temperature));
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
        bad("top_p must be in (0, 1] (1 = off), got " + std::to_string(p.top_p));
    if (!(p.min_p >= 0.0f && p.min_p < 1.0f))
        bad("min_p must be in [0, 1) (0 = off), got " + std::to_string(p.min_p));
    if (p.top_k < 0) bad("top_k must be >= 0 (0 = off), got " + std::to_string(p.top_k));
    if (!(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f && std::isfinite(1.0f / p.repeat_penalty)))
        bad("repeat_penalty must be a finite number > 0 (1 = off), got " + std::to_string(p.repeat_penalty));
    if (!std::isfinite(p.frequency_penalty))
        bad("frequency_penalty must be finite (0 = off), got " + std::to_string(p.frequency_penalty));
    if (!std::isfinite(p.presence_penalty))
        bad("presence_penalty must be finite (0 = off), got " + std::to_string(p.presence_penalty));
    if (p.penalty_last_n < -1)
        bad("penalty_last_n must be >= -1 (0 = off, -1 = the whole context), got " +
            std::to_string(p.penalty_last_n));
}

bool penalties_active(const SamplingParams & p) {
    return p.penalty_last_n != 0 &&
           (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f);
}

const float * penalized_logits(const float * logits, int32_t n_vocab, const SamplingParams & p,
                               const llama_token * context, size_t n_context, std::vector<float> & scratch) {
    if (!penalties_active(p) || n_context == 0) return logits;
    const size_t n = p.penalty_last_n < 0 ? n_context : std::min(n_context, size_t(p.penalty_last_n));
    // Counts per token by one pass over the window (a window of the whole context is 262k tokens at
    // long context, and this runs for every sampled row: no sort). The counts live in a per-thread
    // array that is left zeroed again; each distinct token is penalized once, so the order in which
    // they are visited does not change any result.
    thread_local std::vector<int32_t> counts;
    thread_local std::vector<llama_token> distinct;
    if (counts.size() < size_t(n_vocab)) counts.assign(size_t(n_vocab), 0);
    distinct.clear();
    for (const llama_token * t = context + (n_context - n); t != context + n_context; ++t) {
        if (*t < 0 || *t >= n_vocab) continue;
        if (counts[size_t(*t)]++ == 0) distinct.push_back(*t);
    }
    scratch.assign(logits, logits + n_vocab);
    for (const llama_token t : distinct) {
        const int count = counts[size_t(t)];
        counts[size_t(t)] = 0;
        // llama.cpp's penalties sampler, operation for operation (float)
        float & l = scratch[size_t(t)];
        if (l <= 0) {
            l *= p.repeat_penalty;
        } else {
            l /= p.repeat_penalty;
        }
        l -= float(count) * p.frequency_penalty + float(count > 0) * p.presence_penalty;
    }
    return scratch.data();
}

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double counter_uniform(uint64_t seed, uint64_t pos, uint64_t stream) {
    uint64_t h = splitmix64(splitmix64(splitmix64(seed) ^ pos) ^ (stream * 0xD1B54A32D192ED03ull));
    return double(h >> 11) * 0x1.0p-53;
}

// Lowest id among the maximal logits. Two passes: a max over 16 independent
// lanes (vectorizes; a per-row argmax over a 128k-262k vocabulary was the
// largest part of the engine's own per-step cost), then the first index that
// equals it. NaN logits never win.
static llama_token argmax(const float * logits, int32_t n) {
    constexpr int32_t L = 16;
    float lane[L];
    for (float & v : lane) v = -INFINITY;
    int32_t i = 0;
    for (; i + L <= n; i += L) {
        for (int32_t j = 0; j < L; ++j) lane[j] = logits[i + j] > lane[j] ? logits[i + j] : lane[j];
    }
    float best = -INFINITY;
    for (float v : lane) best = v > best ? v : best;
    for (; i < n; ++i) best = logits[i] > best ? logits[i] : best;
    for (i = 0; i < n; ++i) {
        if (logits[i] == best) return i;
    }
    return 0;
}

Candidates sampling_distribution(const float * logits_in, int32_t n_vocab, const SamplingParams & p,
                                 const llama_token * context, size_t n_context) {
    std::vector<float> scratch;
    const float * logits = penalized_logits(logits_in, n_vocab, p, context, n_context, scratch);
    Candidates c;
    if (p.temperature <= 0.0f) {
        c.ids = {argmax(logits, n_vocab)};
        c.probs = {1.0};
        return c;
    }
    std::vector<llama_token> ids(n_vocab);
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [&](llama_token a, llama_token b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    size_t k = ids.size();
    if (p.top_k > 0 && size_t(p.top_k) < k) {
        k = size_t(p.top_k);
        std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
        ids.resize(k);
    } else {
        std::sort(ids.begin(), ids.end(), by_logit);
    }
    // Truncation works on the untempered softmax and temperature is applied to
    // the survivors, in llama.cpp's default sampler order (top-k, top-p, min-p, temp).
    auto softmax = [&](double inv_t, size_t n, std::vector<double> & w) {
        const double m = double(logits[ids[0]]) * inv_t;
        w.resize(n);
        double sum = 0.0;
        for (size_t i = 0; i < n; ++i) {
            w[i] = std::exp(double(logits[ids[i]]) * inv_t - m);
            sum += w[i];
        }
        for (auto & x : w) x /= sum;
    };
    std::vector<double> w;
    softmax(1.0, k, w);
    size_t keep = k;
    if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
        double acc = 0.0;
        for (size_t i = 0; i < k; ++i) {
            acc += w[i];
            if (acc >= double(p.top_p)) { keep = i + 1; break; }
        }
    }
    if (p.min_p > 0.0f) {  // drop tokens below min_p times the top probability
        const double floor_p = double(p.min_p) * w[0];
        size_t j = 1;
        while (j < keep && w[j] >= floor_p) ++j;
        keep = j;
    }
    ids.resize(keep);
    softmax(1.0 / double(p.temperature), keep, w);
    c.ids = std::move(ids);
    c.probs = std::move(w);
    return c;
}

size_t sample_index(const Candidates & c, double u) {
    double acc = 0.0;
    for (size_t i = 0; i < c.ids.size(); ++i) {
        acc += c.probs[i];
        if (u < acc) return i;
    }
    // rounding left u above the last partial sum: the last token with mass
    size_t i = c.ids.size() - 1;
    while (i > 0 && c.probs[i] <= 0.0) --i;
    return i;
}

llama_token sample_token(const float * logits, int32_t n_vocab, const SamplingParams & p, uint64_t pos,
                         const llama_token * context, size_t n_context) {
    if (p.temperature <= 0.0f) {
        std::vector<float> scratch;
        return argmax(penalized_logits(logits, n_vocab, p, context, n_context, scratch), n_vocab);
    }
    Candidates c = sampling_distribution(logits, n_vocab, p, context, n_context);
    return c.ids[sample_index(c, counter_uniform(p.seed, pos, kStreamTarget))];
}

}  // namespace pyspec
