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

Candidates sampling_distribution(const float * logits, int32_t n_vocab, const SamplingParams & p) {
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

llama_token sample_token(const float * logits, int32_t n_vocab, const SamplingParams & p, uint64_t pos) {
    if (p.temperature <= 0.0f) return argmax(logits, n_vocab);
    Candidates c = sampling_distribution(logits, n_vocab, p);
    const double u = counter_uniform(p.seed, pos);
    double acc = 0.0;
    for (size_t i = 0; i < c.ids.size(); ++i) {
        acc += c.probs[i];
        if (u < acc) return c.ids[i];
    }
    return c.ids.back();
}

}  // namespace pyspec
