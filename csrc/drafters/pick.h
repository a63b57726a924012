// The one draft loop of the drafters that run a model (draft model, MTP,
// EAGLE-3, DFlash), and the one way they turn a logits row into a draft
// token: the argmax at temperature 0, else a draw from q (the target's
// sampler chain applied to the drafter's logits, stream kStreamDraft keyed by
// the drafted token's position), with q kept for rejection sampling.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "drafters/drafter.h"
#include "engine/device_argmax.h"

namespace pyspec {

// The output row (llama_get_logits_ith's index in the drafter's context) of
// draft step i, the token at position history.size() + i, once the step's
// forward ran. `prev` is the token before it: the last committed token for
// i = 0, then the token drafted at step i - 1.
using DraftRow = std::function<int32_t(int32_t i, llama_token prev)>;

// Drafts up to n_max tokens: step i asks `row_at` for its row, stops before
// picking when the row's top probability (raw softmax) is below p_min (never
// at step 0), and picks from the row. `history`: the committed tokens
// (penalties read their tail); `p`: the target's sampling settings. With
// `argmax` on (greedy, no penalties, no p_min), the token is the one the
// device picked and no logits row leaves the device.
Draft pick_drafts(const SamplingParams & p, const std::vector<llama_token> & history, int32_t n_max, float p_min,
                  int32_t n_vocab, llama_context * ctx, const DeviceArgmax & argmax, const DraftRow & row_at);

}  // namespace pyspec
