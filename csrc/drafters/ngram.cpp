#include "drafters/ngram.h"

#include <algorithm>
#include <string>

#include "engine/error.h"

namespace pyspec {

std::vector<llama_token> ngram_lookup(const std::vector<llama_token> & h,
                                      const NgramParams & p, int32_t n_max) {
    const int64_t len = int64_t(h.size());
    for (int32_t n = p.n; n >= std::max(1, p.n_min); --n) {
        if (len <= n) continue;
        const llama_token * key = h.data() + len - n;
        // Latest match first: recent text predicts the continuation best. A
        // match near the end has a short continuation (in a run of repeated
        // tokens, one token); keep looking for an older match that can fill
        // the draft, and keep the longest one seen.
        int64_t best_from = -1, best_len = 0;
        for (int64_t start = len - n - 1; start >= 0; --start) {
            if (!std::equal(key, key + n, h.data() + start)) continue;
            const int64_t from = start + n;
            const int64_t avail = std::min<int64_t>(len - from, n_max);
            if (avail > best_len) {
                best_from = from;
                best_len = avail;
            }
            if (best_len >= n_max) break;
        }
        // A draft shorter than the key it was found with is mostly noise:
        // its verify costs more than it gains (llama.cpp's ngram-simple rule).
        if (best_len >= std::min<int64_t>(n, n_max)) return {h.begin() + best_from, h.begin() + best_from + best_len};
    }
    return {};
}

void NgramDrafter::begin(const std::vector<llama_token> & prompt) {
    history_ = prompt;
    cap_ = kMaxCap;
    last_ = 0;
}

Draft NgramDrafter::draft(int32_t n_max) {
    Draft d;
    d.tokens = ngram_lookup(history_, p_, p_.adaptive ? std::min(n_max, cap_) : n_max);
    last_ = int32_t(d.tokens.size());
    return d;
}

void NgramDrafter::accept(int32_t n_accepted, const std::vector<llama_token> & emitted) {
    if (p_.adaptive && last_ > 0) {
        cap_ = n_accepted >= last_ ? std::min(cap_ + 4, kMaxCap) : std::max(n_accepted + 1, p_.n);
    }
    last_ = 0;
    history_.insert(history_.end(), emitted.begin(), emitted.end());
}

NgramDrafter::NgramDrafter(NgramParams p) : p_(p) {
    if (p_.n < 1 || p_.n > 64)
        throw InvalidParameterError("ngram size must be in [1, 64], got " + std::to_string(p_.n));
    if (p_.n_min < 1 || p_.n_min > p_.n)
        throw InvalidParameterError("ngram n_min must be in [1, n=" + std::to_string(p_.n) +
                                    "], got " + std::to_string(p_.n_min));
}

}  // namespace pyspec
