// Several sequences in one target context (continuous batching): every step is
// ONE llama_decode holding each active sequence's next prompt chunk, or its
// last committed token and its drafts; each sequence then verifies its own rows
// and rolls back its own seq_id.
//
// KV layout: one KV stream per sequence (kv_unified = false), n_ctx / n_seq_max
// cells each, as llama-server -np N. The reason is exactness: the CPU's exact
// attention (patches/0001, the reference flash-attention kernel) walks the KV
// cells in cell order, skipping masked ones, and an online softmax is not
// associative. In a unified cache a sequence's cells are wherever the free
// cells were when it decoded: after a neighbour's rejected drafts are removed,
// the holes they leave get the next tokens of any sequence, so the cell order
// of a sequence's positions (and the rounding of its attention) would depend
// on its neighbours. In a stream of its own, a sequence's positions sit in
// cells 0..n-1 in order, exactly as in a single-sequence Engine context, and
// its logits are bitwise those of the same request run alone
// (tests/test_batch.py checks this; built with kv_unified = true, those
// checks fail on the tiny models and on Gemma 3 270M: rows differ from the
// 4th significant digit on). The cost: llama.cpp splits a batch over
// several streams into ubatches of equal tokens per sequence (split_equal),
// so sequences with different row counts in one step take several passes
// inside the one llama_decode, unless the step pads them to the same count
// (BatchParams::pad_rows).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "drafters/drafter.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/stats.h"
#include "verify/sampling.h"

namespace pyspec {

struct BatchParams {
    int32_t n_seq_max = 4;      // slots: llama.cpp seq_ids 0..n_seq_max-1, in 1..64
    // Tokens of one step over all sequences (prompt chunks + verify rows);
    // 0: ContextParams::n_batch. At least n_seq_max (every decoding sequence
    // gets its one token); a long prompt is prefilled in chunks of what is
    // left of it, so it does not stall the others.
    int32_t n_step_tokens = 0;
    // Pads the rows of every sequence in a step to the most any decoding sequence has (rows without
    // logits, dropped after the step), and gives the idle slots below the highest busy one as many
    // filler rows, so that llama.cpp runs the step as one pass over the streams instead of one per
    // distinct row count or gap in the seq_ids. Costs the padding rows' compute (not their logits).
    // -1: on when the model is offloaded to a GPU, where a pass costs the reading of the weights and
    // a row little. On the CPU the exact kernels' cost grows with the rows and it depends on the
    // drafts (Gemma 3 270M, 16 n-gram sequences, idle 2 cores: draft_n_max 2: 150 tok/s padded vs
    // 112 split; draft_n_max 16: 89 padded vs 97 split), so it stays off there. 0 off, 1 on.
    int32_t pad_rows = -1;
};

// What one sequence did in a step: the tokens it committed (accepted drafts
// first, then the target's own), and whether it ended.
struct SequenceEvent {
    int64_t id = -1;
    std::vector<llama_token> tokens;
    int32_t n_from_draft = 0;
    bool finished = false;
    std::string finish_reason;  // as GenerateResult's; "" while running
};

// One request in the batch: its committed tokens, settings, drafter, stats.
struct Sequence {
    int64_t id = -1;
    llama_seq_id slot = -1;            // its seq_id (and KV stream) while active
    std::vector<llama_token> prompt;
    GenerateParams params;
    std::shared_ptr<Drafter> drafter;  // its own instance (n-gram), or null
    bool rejection = false;            // verify by rejection sampling (temperature > 0)
    GenerateResult result;             // tokens committed so far, stats, finish reason
    std::vector<llama_token> history;  // prompt + committed tokens (what penalties read)
    int32_t n_prefilled = 0;           // prompt tokens in the memory
    int32_t n_past = 0;                // positions in the memory
    bool cancelled = false;
    bool record_logits = false;        // keep the row each committed token was chosen from
    bool device_argmax = false;        // greedy picks on the device (its slot's backend sampler)
    std::vector<float> logits;         // [n_tokens, n_vocab] when record_logits
    // this step's rows
    std::vector<llama_token> draft;
    std::vector<Candidates> draft_q;
    int32_t row0 = -1, n_rows = 0, n_pad = 0;  // n_pad: rows after them without logits (BatchParams::pad_rows)
    bool prefill_done_this_step = false;
    // timing
    std::chrono::steady_clock::time_point t_start, t_gen;
    bool started = false;
};

class BatchEngine {
public:
    BatchEngine(std::shared_ptr<Model> target, const ContextParams & params, const BatchParams & bp);

    // Queues a request into a free slot; it starts at the next step. Returns
    // its id. InvalidParameterError for bad settings or a drafter that cannot
    // serve several sequences (only none and n-gram can), ContextOverflowError
    // for a prompt that leaves no room in a sequence's n_ctx_seq() cells, Error
    // when no slot is free (n_free() == 0: wait for one to finish).
    int64_t add(const std::vector<llama_token> & prompt, const GenerateParams & params,
                std::shared_ptr<Drafter> drafter = nullptr, bool record_logits = false);
    // Asks sequence `id` to stop: it ends at the start of the next step with
    // finish_reason "interrupted" (no tokens are computed for it any more).
    // Thread-safe; unknown or finished ids are ignored.
    void cancel(int64_t id);
    // One forward over every active sequence; returns what each did (the
    // sequences that committed tokens or ended). Finished sequences leave
    // their slot at once; take() their result.
    std::vector<SequenceEvent> step();
    // The result of a finished sequence (and forgets it). InvalidParameterError
    // for an unknown or unfinished id.
    GenerateResult take(int64_t id);
    // The logits rows recorded for a finished sequence added with
    // record_logits ([n_tokens, n_vocab]); call before take().
    const std::vector<float> & recorded_logits(int64_t id) const;

    int32_t n_seq_max() const { return bp_.n_seq_max; }
    int32_t n_active() const { return int32_t(active_.size()); }
    int32_t n_free() const { return bp_.n_seq_max - n_active(); }
    int32_t n_step_tokens() const { return step_tokens_; }
    bool pad_rows() const { return pad_; }
    // Whether greedy sequences take their argmax on the device (offloaded model, or
    // PYSPEC_DEVICE_ARGMAX=1; false once the backend refused the sampler)
    bool device_argmax_available() const { return !argmax_.empty() && argmax_[0].available(); }
    // Device picks (the first after each attach) whose logits row was copied to the host all the
    // same (DeviceArgmax): 0 expected.
    int64_t device_rows_with_host_logits() const {
        int64_t n = 0;
        for (const auto & a : argmax_) n += a.n_rows_with_host_logits();
        return n;
    }
    // Cells of each sequence's KV stream: the context of one request.
    uint32_t n_ctx_seq() const { return llama_n_ctx_seq(ctx_.get()); }
    int32_t  n_threads() const { return llama_n_threads(ctx_.get()); }
    int64_t  n_steps() const { return n_steps_; }
    // Padding and filler rows added so far (pad_rows)
    int64_t  n_pad_rows() const { return n_pad_rows_; }
    const std::shared_ptr<Model> & model() const { return target_; }
    ContextMemory memory() const { return context_memory(ctx_.get()); }
    llama_context * ctx() const { return ctx_.get(); }

private:
    // Frees a sequence's slot (its KV stream cleared) and records why it ended.
    void finish(Sequence & s, const std::string & reason, std::vector<SequenceEvent> & events);
    void rollback(Sequence & s, int32_t n_keep);
    // Cuts `toks` at an end-of-generation token (kept) or at n_predict; the
    // reason ("stop", "length") or "".
    const char * cut(const Sequence & s, std::vector<llama_token> & toks) const;
    void plan_drafts(std::vector<Sequence *> & decoding, int32_t budget);

    std::shared_ptr<Model> target_;
    ContextParams params_;
    BatchParams bp_;
    int32_t step_tokens_ = 0;
    bool pad_ = false;
    Batch batch_;
    ContextPtr ctx_;
    int32_t n_vocab_;
    std::vector<std::unique_ptr<Sequence>> active_;        // in the order they joined
    std::vector<bool> slot_used_;
    // per slot: a backend argmax sampler (DeviceArgmax), attached while greedy requests without penalties
    // (or recorded logits) hold the slot, so only their token ids leave the device
    std::vector<DeviceArgmax> argmax_;
    std::map<int64_t, std::unique_ptr<Sequence>> done_;    // finished, until take()
    int64_t next_id_ = 0;
    int64_t n_steps_ = 0;
    int64_t n_pad_rows_ = 0;
    std::mutex cancel_mu_;
    std::vector<int64_t> cancels_;
};

}  // namespace pyspec
