// Counters of one generation, filled by the engine; everything else only
// formats them (llama.cpp's field names where it has one).
#pragma once
#include <cstdint>
#include <vector>

namespace pyspec {

struct Stats {
    int32_t prompt_n = 0;       // prompt tokens processed
    double  prompt_ms = 0.0;    // prompt processing time (first token sampled)
    int32_t predicted_n = 0;    // tokens generated
    double  predicted_ms = 0.0; // time from the first generated token to the last
    int32_t n_steps = 0;        // target forward passes after the prompt (verify steps)
    int32_t draft_n = 0;        // drafted tokens sent to verification
    int32_t draft_n_accepted = 0;
    std::vector<int32_t> drafted_per_position;   // [i]: steps that verified a draft at position i
    std::vector<int32_t> accepted_per_position;  // [i]: of those, how many accepted it
    double  draft_ms = 0.0;     // time inside the drafter
    double  verify_ms = 0.0;    // time of the verify steps: forward, verification, rollback
    double  forward_ms = 0.0;   // of that, time inside the target's forward passes (synchronized)
    // Everything else in a step (the engine's own overhead) is
    // predicted_ms - draft_ms - forward_ms.

    // Tokens per verify step, the bonus included (1.0 without speculation).
    double mean_acceptance_length() const {
        return n_steps > 0 ? 1.0 + double(draft_n_accepted) / n_steps : 0.0;
    }
};

}  // namespace pyspec
