// The speculative decode loop over one target context:
// draft -> verify (one target batch) -> accept -> roll back -> tell the drafter.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "drafters/drafter.h"
#include "engine/context.h"
#include "engine/device_argmax.h"
#include "engine/model.h"
#include "engine/stats.h"
#include "verify/sampling.h"

namespace pyspec {

struct ContextParams {
    uint32_t n_ctx = 4096;
    uint32_t n_batch = 512;     // prompt chunk per llama_decode
    int32_t  n_threads = 0;     // 0: default_n_threads() (engine/threads.h)
    int32_t  flash_attn = -1;   // -1 auto (exact mode: on), 0 off, 1 on
    std::string type_k = "f16";
    std::string type_v = "f16";
    // Full-size cache for sliding-window layers (llama.cpp's swa_full); false:
    // a ring of n_swa + n_batch cells, exact too (engine/context.h).
    bool swa_full = false;
    // Exact kernels: a token's logits do not depend on the batch that computes
    // them. Required for lossless speculation on the CPU.
    bool exact = true;
    // Recurrent-state snapshots kept for rolling back hybrid / recurrent
    // targets without a state checkpoint (-1: 16 for such targets, else 0;
    // clamped to 0 by llama.cpp where the architecture has none). Drafts
    // longer than this roll back through checkpoints.
    int32_t n_rs_seq = -1;
};

// The llama.cpp context settings both target engines (Engine, BatchEngine)
// take from ContextParams: size (padded as llama.cpp pads it), threads, KV
// types, sliding window, kernels, flash attention. Each adds its own batch
// and sequence settings.
ContextSpec target_context_spec(const ContextParams & p);

// How drafts are verified at temperature > 0 (at temperature 0 both are the
// same argmax path).
enum class SpecSampling {
    // Rejection sampling (verify/rejection.h): drafts sampled from the
    // drafter's q, accepted with min(1, p/q); the output follows the target's
    // distribution, and is reproducible for a given seed, settings, drafter
    // and draft length. Drafts without a distribution (n-gram) reproduce
    // plain sampling token for token.
    Rejection,
    // Accept-if-equal: a draft is kept when it equals the target's own
    // sample; the output equals plain sampling for the same seed, whatever
    // the drafter. Drafters draft greedily in this mode.
    Equal,
};

struct GenerateParams {
    int32_t n_predict = 128;
    SamplingParams sampling;
    SpecSampling spec_sampling = SpecSampling::Rejection;
    int32_t draft_n_max = 16;   // tokens drafted per step, 0..64
    int32_t draft_n_min = 0;    // shorter drafts are not verified
    bool    ignore_eos = false;
};

// Called after every step with the tokens committed in it; n_from_draft of
// them (the first ones) came from the drafter. Return false to stop.
using StepCallback = std::function<bool(const std::vector<llama_token> & tokens, int32_t n_from_draft)>;

struct GenerateResult {
    std::vector<llama_token> tokens;
    Stats stats;
    std::string finish_reason;  // "stop" (end of generation token), "length", "context", "interrupted"
};

// InvalidParameterError unless the settings are usable (sampling, lengths, draft lengths).
void validate(const GenerateParams & gp);

class Engine {
public:
    Engine(std::shared_ptr<Model> target, const ContextParams & params);

    GenerateResult generate(const std::vector<llama_token> & prompt, const GenerateParams & params,
                            Drafter * drafter, const StepCallback & on_step);

    // --- low-level access (tests, tools) ---
    // Clears the memory.
    void reset();
    // Decodes `tokens` at positions n_past.. in chunks of at most `chunk`
    // tokens, returning the logits of every token ([n, n_vocab], row-major).
    std::vector<float> decode(const std::vector<llama_token> & tokens, int32_t chunk, bool all_logits = true);
    // Appends `tokens` to the memory like decode() and returns, for every token, the inputs of
    // the target layers `layers` (layer-input ids: 0 is the token embeddings, k the output of
    // layer k - 1): [n, layers.size(), n_embd], row-major. These are the features the DFlash and
    // EAGLE-3 drafters read, from the same graphs (pyspec train learns from them).
    std::vector<float> layer_inputs(const std::vector<llama_token> & tokens, const std::vector<int32_t> & layers,
                                    int32_t chunk);
    // One forward pass of `tokens` (at most the batch capacity) with logits for every token:
    // the verify step's cost. argmax=false: the logits rows reach the host (llama.cpp copies
    // every output row); returns nothing. argmax=true: returns each row's greedy pick the way a
    // greedy verify takes it (on the device where the backend can, else from the host rows).
    std::vector<llama_token> forward(const std::vector<llama_token> & tokens, bool argmax = false);
    // Keeps the first n_keep positions of the memory and drops the rest (the
    // one rollback of the engine; falls back to a state checkpoint when the
    // memory refuses partial removal).
    void rollback(int32_t n_keep);
    int32_t n_past() const { return int32_t(committed_.size()); }
    // The context size: ContextParams::n_ctx rounded up to a multiple of 256 (llama.cpp's rounding).
    uint32_t n_ctx() const { return llama_n_ctx(ctx_.get()); }
    int32_t  n_threads() const { return llama_n_threads(ctx_.get()); }
    const std::shared_ptr<Model> & model() const { return target_; }
    const ContextParams & params() const { return params_; }
    llama_context * ctx() const { return ctx_.get(); }
    // Called between steps and prompt chunks; returning true interrupts
    // generate() (Ctrl-C). Runs on the thread of generate().
    std::function<bool()> should_stop;
    // Asks the running generate() to stop at its next step or prompt chunk,
    // from any thread (a stream's consumer): it returns with finish_reason
    // "interrupted", or throws Interrupted while still in the prompt. Every
    // generate() starts by dropping an earlier request.
    void interrupt() { interrupt_.store(true); }
    // What the target context exports for the drafter of the current (or
    // last) generation: set from Drafter::features() at every generate().
    void export_features(const FeatureRequest & f);
    const FeatureRequest & exported_features() const { return exported_; }
    // Bytes of the last state checkpoint (recurrent targets whose drafts
    // exceed the recurrent snapshots): the recurrent part only.
    size_t checkpoint_bytes() const { return ckpt_.size(); }
    // Roll back through state checkpoints even where the memory could drop
    // positions itself (the path recurrent models need; for testing it).
    bool force_checkpoints = false;
    // generate() keeps the longest prefix that the memory shares with the new
    // prompt (all of it but its last token) instead of clearing the memory,
    // and prefills only the rest: a long document asked about twice is
    // read once. Only where that gives the same logits as a fresh prefill:
    // exact kernels (prompt chunking does not change a row), no drafter that
    // reads the target's features, no recurrent state, and every position the
    // sliding window needs still in the cache. Off by default. A Python
    // drafter's observe() then sees the new prompt rows only.
    bool reuse_prefix = false;
    // Prompt tokens generate() kept from the memory (reuse_prefix) last time.
    size_t n_prompt_reused() const { return n_prompt_reused_; }
    // Called after each prompt chunk of generate() with (tokens done, prompt
    // tokens), on generate()'s thread: progress for long prompts.
    std::function<void(size_t, size_t)> on_prompt_progress;
    // The CPU threads of the target context from now on (llama_set_n_threads).
    void set_n_threads(int32_t n);
    // Whether greedy generations take the argmax on the device (the model is
    // offloaded to a GPU; PYSPEC_DEVICE_ARGMAX=0 turns it off, =1 on): no logits row
    // is copied to the host, only the token ids.
    bool device_argmax_available() const { return argmax_.available(); }
    // Bytes of the target context: KV cache (and recurrent state), compute buffers.
    ContextMemory memory() const { return context_memory(ctx_.get()); }

private:
    // Fills batch_ with tokens at positions n_past().., logits for every
    // token, only the last one, or none, and decodes it.
    void submit(const llama_token * tokens, size_t n, bool all_logits, bool last_logits, const char * what);
    void decode_batch(const char * what);
    // InvalidParameterError unless every id is in the vocabulary
    void check_tokens(const std::vector<llama_token> & tokens) const;
    // ContextOverflowError unless n more tokens fit after n_past().
    void check_room(size_t n, const char * what) const;
    // "n_ctx=N", and what was asked for when llama.cpp rounded it
    std::string n_ctx_text() const;
    // interrupt() was called, or should_stop() says so
    bool stop_requested();
    void checkpoint();
    // One token through the exact kernels; UnsupportedError if the backend cannot run them.
    void probe_exact();
    // Prompt processing in batch-sized chunks, logits for the last token
    // only; `observer` (a drafter) sees every chunk.
    // Decodes prompt[start..] in chunks (prompt[..start] is in the memory already);
    // progress: report each chunk to on_prompt_progress.
    void prefill(const std::vector<llama_token> & prompt, Drafter * observer = nullptr, size_t start = 0,
                 bool progress = false);
    // Attaches (or detaches) the device-side argmax sampler of seq 0 (DeviceArgmax).
    void use_device_argmax(bool on) { argmax_.set(ctx_.get(), 0, on); }
    llama_token device_token(int32_t i) const { return argmax_.token(ctx_.get(), i, n_vocab_); }

    std::shared_ptr<Model> target_;
    ContextParams params_;
    ContextPtr ctx_;
    Batch batch_;
    int32_t n_vocab_;
    std::vector<llama_token> committed_;  // tokens in the memory, position = index
    size_t n_prompt_reused_ = 0;
    // The prompt tokens generate() may keep in the memory (reuse_prefix).
    size_t reusable_prefix(const std::vector<llama_token> & prompt, const Drafter * drafter) const;
    // state checkpoint for memories that refuse partial removal (recurrent)
    std::vector<uint8_t> ckpt_;
    int32_t ckpt_n_ = -1;
    double forward_ms_ = 0.0;  // time inside llama_decode + synchronize, since reset()
    DeviceArgmax argmax_{false};
    std::atomic<bool> interrupt_{false};
    FeatureRequest exported_;
};

}  // namespace pyspec
