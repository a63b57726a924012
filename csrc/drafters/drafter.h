// The interface every drafter implements. The engine owns the target and its
// memory; a drafter only proposes tokens and is told what was kept.
//
// Call order for one generation:
//   features()                         what the target must export for it
//   set_sampling(params)               the target's sampling settings
//   begin(prompt)                      once, with the prompt's tokens
//   observe(outputs)                   after every prompt chunk, and after
//                                      each verification with the rows of
//                                      the verify batch that were kept (not
//                                      after rollback replays)
//   draft(n_max) -> Draft              before each verify step
//   accept(n_accepted, emitted)        after each verify step: emitted = what
//                                      was committed, the accepted drafts
//                                      followed by the target's bonus token;
//                                      at an end-of-generation token the
//                                      tokens stop there (a draft accepted
//                                      past it is not emitted, nor counted in
//                                      n_accepted, and there is no bonus)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "llama.h"
#include "verify/sampling.h"

namespace pyspec {

struct Draft {
    std::vector<llama_token> tokens;
    // q[i]: the distribution tokens[i] was sampled from (sparse: its truncated
    // support), for rejection sampling. Empty when the drafter has none
    // (n-gram, greedy drafting): the drafts are then treated as one-hot.
    std::vector<Candidates> q;
};

// What the target produced in one forward pass; drafters that read the
// target's hidden states (MTP, DFlash, EAGLE-3) take them from here.
struct TargetOutputs {
    // [n_tokens] tokens of the forward that stay in the target's memory: a
    // whole prompt chunk, or the first rows of a verify batch (the last
    // committed token and the accepted drafts); its rows 0..n_tokens-1 in ctx
    const llama_token * tokens = nullptr;
    int32_t             n_tokens = 0;
    int32_t             pos0 = 0;          // position of tokens[0]
    llama_context *     ctx = nullptr;     // the target context, read-only use
    bool                prompt = false;    // a chunk of the prompt (else a verify batch)
};

// What a drafter reads from the target's forwards besides the logits. The
// engine has the target context export it during the generations that use
// this drafter, and nothing during the others.
struct FeatureRequest {
    bool hidden = false;                // the last hidden state of every row (MTP)
    std::vector<int32_t> layer_inputs;  // the inputs of these target layers, every row (EAGLE-3, DFlash)
    bool operator==(const FeatureRequest & o) const { return hidden == o.hidden && layer_inputs == o.layer_inputs; }
};

class Drafter {
public:
    virtual ~Drafter() = default;
    virtual std::string name() const = 0;
    virtual FeatureRequest features() const { return {}; }
    // The target's sampling settings for the next generation. A drafter with
    // a distribution samples from it under the same temperature, truncation
    // and penalties (stream kStreamDraft, keyed by the drafted token's
    // position) and returns it in Draft::q; at temperature 0 it drafts the
    // argmax and returns no q.
    virtual void  set_sampling(const SamplingParams & p) { sampling_ = p; }
    virtual void  begin(const std::vector<llama_token> & prompt) = 0;
    virtual void  observe(const TargetOutputs &) {}
    virtual Draft draft(int32_t n_max) = 0;
    virtual void  accept(int32_t n_accepted, const std::vector<llama_token> & emitted) = 0;

protected:
    SamplingParams sampling_;
};

}  // namespace pyspec
