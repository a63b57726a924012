// Prompt-lookup (n-gram) drafting over the prompt plus the generated text.
#pragma once
#include "drafters/drafter.h"

namespace pyspec {

struct NgramParams {
    int32_t n = 3;      // length of the suffix to look up
    // Shorter suffixes tried when the n-gram has no match. Defaults to n:
    // 1- and 2-gram matches draft poorly and their verify costs more than it gains.
    int32_t n_min = 3;
    // Adapt the draft length to how the last draft fared: +4 after a fully
    // accepted draft, back to (accepted + 1, at least n) after a rejection.
    // On text the n-grams predict poorly, long drafts cost more to verify
    // than they return (BENCHMARKS.md: prose went from 0.7x to ~1.0x).
    bool adaptive = true;
};

// Pure matcher: finds the most recent earlier occurrence of the last `n`
// tokens of `history` that is followed by n_max tokens (else the one followed
// by the most), trying n, n-1, ..., n_min, and returns up to n_max tokens that
// followed it. Empty when nothing matches or the continuation is shorter than
// the n-gram.
std::vector<llama_token> ngram_lookup(const std::vector<llama_token> & history,
                                      const NgramParams & p, int32_t n_max);

class NgramDrafter final : public Drafter {
public:
    explicit NgramDrafter(NgramParams p);
    std::string name() const override { return "ngram"; }
    void  begin(const std::vector<llama_token> & prompt) override;
    Draft draft(int32_t n_max) override;
    void  accept(int32_t n_accepted, const std::vector<llama_token> & emitted) override;

private:
    static constexpr int32_t kMaxCap = 64;
    NgramParams p_;
    std::vector<llama_token> history_;
    int32_t cap_ = kMaxCap;  // current draft-length limit (adaptive)
    int32_t last_ = 0;       // length of the draft awaiting its verdict
};

}  // namespace pyspec
