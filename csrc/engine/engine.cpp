#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "engine/context.h"
#include "engine/error.h"
#include "engine/log.h"
#include "llama-ext.h"
#include "verify/verify.h"

namespace pyspec {
namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

ContextSpec target_context_spec(const ContextParams & p) {
    ContextSpec cs;
    cs.n_ctx = padded_n_ctx(p.n_ctx);
    cs.n_threads = p.n_threads;
    cs.type_k = kv_type_from_name(p.type_k);
    cs.type_v = kv_type_from_name(p.type_v);
    cs.swa_full = p.swa_full;
    cs.exact = p.exact;
    cs.flash_attn = p.flash_attn;
    return cs;
}

namespace {
// A prompt chunk, and room for a 64-token draft + 1; never wider than the context.
uint32_t batch_width(const ContextParams & p) {
    return std::min(std::max<uint32_t>(p.n_batch, 65), padded_n_ctx(p.n_ctx));
}
}  // namespace

Engine::Engine(std::shared_ptr<Model> target, const ContextParams & params)
    : target_(std::move(target)), params_(params), batch_(int32_t(batch_width(params))),
      n_vocab_(target_->n_vocab()) {
    if (params.n_ctx < 8) throw InvalidParameterError("n_ctx must be >= 8, got " + std::to_string(params.n_ctx));
    if (params.n_batch < 1) throw InvalidParameterError("n_batch must be >= 1");
    ContextSpec cs = target_context_spec(params);
    cs.n_batch = batch_width(params);
    cs.n_rs_seq = uint32_t(params.n_rs_seq >= 0 ? params.n_rs_seq : (target_->needs_checkpoints() ? 16 : 0));
    // every row of a verify batch may be sampled on the device
    cs.n_outputs_max_per_seq = cs.n_batch;
    ctx_ = new_context(target_->get(), cs, "the target",
                       " (n_ctx=" + std::to_string(params.n_ctx) + "). Try a smaller n_ctx or another KV cache type.");
    if (llama_n_batch(ctx_.get()) < uint32_t(batch_.capacity()))
        throw Error("llama.cpp gave the target a batch of " + std::to_string(llama_n_batch(ctx_.get())) +
                    " tokens, fewer than the " + std::to_string(batch_.capacity()) + " the engine needs; n_ctx=" +
                    std::to_string(n_ctx()) + ", n_batch=" + std::to_string(params.n_batch));
    if (params.exact && target_->params().n_gpu_layers != 0 && !target_->params().no_alloc && llama_supports_gpu_offload())
        probe_exact();
    argmax_ = DeviceArgmax(target_->params().n_gpu_layers != 0);
}

void Engine::probe_exact() {
    // The GPU's exact kernels cover some weight types and ops only (patches/0005), and the backend
    // says so when it meets a graph it cannot run exactly: find out now, with one token, rather
    // than in the middle of a generation. Every forward of the model uses the same ops.
    const llama_token bos = llama_vocab_bos(target_->vocab());
    batch_.clear();
    batch_.add(bos >= 0 && bos < n_vocab_ ? bos : 0, 0, true);
    log_clear_recent();
    const int rc = decode_rc(ctx_.get(), batch_.get(), "exact-kernel probe");
    batch_.clear();
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    if (rc == -3)
        throw UnsupportedError("exact (batch-invariant) GPU kernels cannot run '" + target_->path() + "': " +
                               log_recent() + ". Use kernels='fast' (not lossless) or n_gpu_layers=0 (exact on the CPU).");
    check_decode(rc, "exact-kernel probe");
}

size_t Engine::reusable_prefix(const std::vector<llama_token> & prompt, const Drafter * drafter) const {
    if (!reuse_prefix || !params_.exact || target_->needs_checkpoints() || force_checkpoints) return 0;
    if (drafter && !(drafter->features() == FeatureRequest{})) return 0;
    size_t n = 0;
    const size_t n_max = std::min(committed_.size(), prompt.size() - 1);  // the last token gives the logits
    while (n < n_max && committed_[n] == prompt[n]) ++n;
    if (n == 0) return 0;
    // A sliding-window cache keeps the last window only: the positions the
    // next token attends to must still be there (llama-server's check).
    const int32_t n_swa = llama_model_n_swa(target_->get());
    if (n_swa > 0) {
        const llama_pos pos_min = llama_memory_seq_pos_min(llama_get_memory(ctx_.get()), 0);
        if (pos_min > std::max<llama_pos>(0, llama_pos(n) - n_swa)) return 0;
    }
    return n;
}

void Engine::set_n_threads(int32_t n) {
    if (n < 1) throw InvalidParameterError("n_threads must be >= 1, got " + std::to_string(n));
    llama_set_n_threads(ctx_.get(), n, n);
    params_.n_threads = n;
}

void Engine::reset() {
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    committed_.clear();
    ckpt_n_ = -1;
    forward_ms_ = 0.0;
}

void Engine::decode_batch(const char * what) {
    const auto t0 = Clock::now();
    decode_checked(ctx_.get(), batch_.get(), what);
    llama_synchronize(ctx_.get());
    forward_ms_ += ms_since(t0);
    for (int32_t i = 0; i < batch_.size(); ++i) committed_.push_back(batch_.get().token[i]);
}

void Engine::check_tokens(const std::vector<llama_token> & tokens) const {
    for (llama_token t : tokens) {
        if (t < 0 || t >= n_vocab_)
            throw InvalidParameterError("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                                        std::to_string(n_vocab_) + ")");
    }
}

std::vector<float> Engine::decode(const std::vector<llama_token> & tokens, int32_t chunk, bool all_logits) {
    if (chunk < 1 || chunk > batch_.capacity())
        throw InvalidParameterError("chunk must be in [1, " + std::to_string(batch_.capacity()) + "], got " +
                                    std::to_string(chunk));
    check_room(tokens.size(), "decode");
    check_tokens(tokens);
    use_device_argmax(false);  // the caller reads logits rows
    std::vector<float> out;
    if (all_logits) out.reserve(tokens.size() * size_t(n_vocab_));
    for (size_t i = 0; i < tokens.size(); i += size_t(chunk)) {
        const size_t n = std::min(tokens.size() - i, size_t(chunk));
        submit(tokens.data() + i, n, all_logits, i + n == tokens.size(), "decode");
        for (size_t j = 0; j < n; ++j) {
            if (!all_logits && i + j + 1 != tokens.size()) continue;
            const float * row = llama_get_logits_ith(ctx_.get(), int32_t(j));
            out.insert(out.end(), row, row + n_vocab_);
        }
        if (should_stop && i + n < tokens.size() && should_stop()) throw Interrupted("interrupted");
    }
    return out;
}

std::vector<float> Engine::layer_inputs(const std::vector<llama_token> & tokens, const std::vector<int32_t> & layers,
                                        int32_t chunk) {
    if (layers.empty()) throw InvalidParameterError("layer_inputs needs at least one layer id");
    for (int32_t id : layers) {
        if (id < 0 || id >= target_->n_layer())
            throw InvalidParameterError("layer-input id " + std::to_string(id) + " is not a layer of the target: "
                                        "expected 0.." + std::to_string(target_->n_layer() - 1) +
                                        " (0: the token embeddings, k: the output of layer k - 1)");
    }
    if (chunk == 0) chunk = batch_.capacity();
    if (chunk < 1 || chunk > batch_.capacity())
        throw InvalidParameterError("chunk must be in [1, " + std::to_string(batch_.capacity()) + "] (0: the batch), got " +
                                    std::to_string(chunk));
    check_room(tokens.size(), "layer_inputs");
    check_tokens(tokens);
    use_device_argmax(false);
    FeatureRequest f;
    for (int32_t id : layers)
        if (std::find(f.layer_inputs.begin(), f.layer_inputs.end(), id) == f.layer_inputs.end()) f.layer_inputs.push_back(id);
    export_features(f);
    const size_t E = size_t(target_->n_embd()), L = layers.size();
    std::vector<float> out(tokens.size() * L * E);
    for (size_t i = 0; i < tokens.size(); i += size_t(chunk)) {
        const size_t n = std::min(tokens.size() - i, size_t(chunk));
        submit(tokens.data() + i, n, false, true, "layer_inputs");
        for (size_t k = 0; k < L; ++k) {
            const float * src = llama_get_embeddings_layer_inp(ctx_.get(), uint32_t(layers[k]));
            if (!src) throw Error("the target did not capture the input of its layer " + std::to_string(layers[k]));
            for (size_t j = 0; j < n; ++j)
                std::memcpy(&out[((i + j) * L + k) * E], src + j * E, E * sizeof(float));
        }
        if (should_stop && i + n < tokens.size() && should_stop()) throw Interrupted("interrupted");
    }
    return out;
}

std::string Engine::n_ctx_text() const {
    std::string s = "n_ctx=" + std::to_string(n_ctx());
    if (params_.n_ctx != n_ctx())
        s += " (n_ctx=" + std::to_string(params_.n_ctx) + " was asked for; llama.cpp rounds it up to a multiple of 256)";
    return s;
}

void Engine::check_room(size_t n, const char * what) const {
    if (size_t(n_past()) + n > n_ctx())
        throw ContextOverflowError(std::string(what) + ": " + std::to_string(n_past()) + " tokens in memory + " +
                                   std::to_string(n) + " new exceed " + n_ctx_text() +
                                   "; shorten the request or load the model with a larger n_ctx");
}

void Engine::prefill(const std::vector<llama_token> & prompt, Drafter * observer, size_t start, bool progress) {
    check_room(prompt.size() - start, "prompt");
    const size_t chunk = size_t(batch_.capacity());
    for (size_t i = start; i < prompt.size(); i += chunk) {
        const size_t n = std::min(prompt.size() - i, chunk);
        const int32_t pos0 = n_past();
        submit(prompt.data() + i, n, false, i + n == prompt.size(), "prompt");
        if (observer) observer->observe({prompt.data() + i, int32_t(n), pos0, ctx_.get(), true});
        if (progress && on_prompt_progress) on_prompt_progress(i + n, prompt.size());
        if (i + n < prompt.size() && stop_requested())
            throw Interrupted("interrupted in the prompt, after " + std::to_string(i + n) + " of its " +
                              std::to_string(prompt.size()) + " tokens");
    }
}

bool Engine::stop_requested() {
    return interrupt_.load() || (should_stop && should_stop());
}

void Engine::export_features(const FeatureRequest & f) {
    if (f == exported_) return;
    for (int32_t id : f.layer_inputs) {
        if (id < 0 || id >= target_->n_layer())
            throw InvalidParameterError("a drafter asked for the input of layer " + std::to_string(id) +
                                        "; the target has layers 0.." + std::to_string(target_->n_layer() - 1));
    }
    if (f.hidden != exported_.hidden) llama_set_embeddings_nextn(ctx_.get(), f.hidden, /*masked=*/false);
    // each change of the layer captures makes llama.cpp reserve its graph again: change only what differs
    for (int32_t id : exported_.layer_inputs) {
        if (std::find(f.layer_inputs.begin(), f.layer_inputs.end(), id) == f.layer_inputs.end())
            llama_set_embeddings_layer_inp(ctx_.get(), uint32_t(id), false);
    }
    for (int32_t id : f.layer_inputs) {
        if (std::find(exported_.layer_inputs.begin(), exported_.layer_inputs.end(), id) == exported_.layer_inputs.end())
            llama_set_embeddings_layer_inp(ctx_.get(), uint32_t(id), true);
    }
    exported_ = f;
}

std::vector<llama_token> Engine::forward(const std::vector<llama_token> & tokens, bool argmax) {
    if (tokens.empty() || int32_t(tokens.size()) > batch_.capacity())
        throw InvalidParameterError("forward takes 1.." + std::to_string(batch_.capacity()) + " tokens, got " +
                                    std::to_string(tokens.size()));
    check_room(tokens.size(), "forward");
    check_tokens(tokens);
    const bool dev = argmax_.set(ctx_.get(), 0, argmax);
    submit(tokens.data(), tokens.size(), true, true, "forward");
    std::vector<llama_token> picks;
    if (!argmax) return picks;
    for (int32_t i = 0; i < int32_t(tokens.size()); ++i) {
        picks.push_back(dev ? device_token(i)
                            : sample_token(llama_get_logits_ith(ctx_.get(), i), n_vocab_, SamplingParams{}, 0, nullptr, 0));
    }
    return picks;
}

void Engine::submit(const llama_token * tokens, size_t n, bool all_logits, bool last_logits, const char * what) {
    batch_.clear();
    for (size_t j = 0; j < n; ++j) {
        batch_.add(tokens[j], llama_pos(committed_.size() + j), all_logits || (last_logits && j + 1 == n));
    }
    decode_batch(what);
}

void Engine::checkpoint() {
    // Only the part that cannot drop positions (the recurrent state; a hybrid's
    // attention KV can, in rollback()): its size does not grow with the context.
    const size_t n = llama_state_seq_get_size_ext(ctx_.get(), 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY);
    ckpt_.resize(n);
    if (llama_state_seq_get_data_ext(ctx_.get(), ckpt_.data(), n, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) != n)
        throw Error("checkpoint: llama.cpp could not copy the recurrent state (" + std::to_string(n) + " bytes)");
    ckpt_n_ = n_past();
}

void Engine::rollback(int32_t n_keep) {
    if (n_keep < 0 || n_keep > n_past())
        throw InvalidParameterError("rollback: n_keep must be in [0, " + std::to_string(n_past()) + "], got " +
                                    std::to_string(n_keep));
    if (n_keep == n_past()) return;
    llama_memory_t mem = llama_get_memory(ctx_.get());
    if (!force_checkpoints && llama_memory_seq_rm(mem, 0, n_keep, -1)) {
        committed_.resize(size_t(n_keep));
        return;
    }
    // Recurrent state cannot drop a suffix: restore the checkpoint taken
    // before the verify step and replay the kept tokens after it.
    if (ckpt_n_ < 0 || ckpt_n_ > n_keep)
        throw Error("rollback: the memory refused to drop positions >= " + std::to_string(n_keep) +
                    " and no checkpoint precedes them");
    // The recurrent state back at ckpt_n_, then the rest of the memory (the
    // attention KV of a hybrid) cut there too, and the kept tokens replayed.
    if (llama_state_seq_set_data_ext(ctx_.get(), ckpt_.data(), ckpt_.size(), 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) == 0)
        throw Error("rollback: restoring the state checkpoint failed");
    if (!llama_memory_seq_rm(mem, 0, ckpt_n_, -1))
        throw Error("rollback: the memory refused to drop positions >= " + std::to_string(ckpt_n_) +
                    " after restoring the checkpoint taken there");
    std::vector<llama_token> replay(committed_.begin() + ckpt_n_, committed_.begin() + n_keep);
    committed_.resize(size_t(ckpt_n_));
    if (!replay.empty()) prefill(replay);
}

void validate(const GenerateParams & gp) {
    validate(gp.sampling);
    if (gp.n_predict < 0) throw InvalidParameterError("n_predict must be >= 0, got " + std::to_string(gp.n_predict));
    if (gp.draft_n_max < 0 || gp.draft_n_max > 64)
        throw InvalidParameterError("draft length (draft_n_max) must be in [0, 64], got " +
                                    std::to_string(gp.draft_n_max));
    if (gp.draft_n_min < 0 || gp.draft_n_min > gp.draft_n_max)
        throw InvalidParameterError("draft_n_min must be in [0, draft_n_max=" + std::to_string(gp.draft_n_max) +
                                    "], got " + std::to_string(gp.draft_n_min));
}

GenerateResult Engine::generate(const std::vector<llama_token> & prompt, const GenerateParams & gp,
                                Drafter * drafter, const StepCallback & on_step) {
    validate(gp);
    if (prompt.empty()) throw InvalidParameterError("the prompt is empty; give at least one token");
    if (prompt.size() >= n_ctx())
        throw ContextOverflowError("the prompt has " + std::to_string(prompt.size()) +
                                   " tokens but the context holds " + n_ctx_text() +
                                   ", which leaves no room to generate; "
                                   "shorten the prompt or load the model with a larger n_ctx");

    GenerateResult res;
    Stats & st = res.stats;
    interrupt_.store(false);  // a request left over from an earlier generation
    const size_t n_reuse = reusable_prefix(prompt, drafter);
    if (n_reuse > 0) {
        rollback(int32_t(n_reuse));
        ckpt_n_ = -1;
        forward_ms_ = 0.0;
    } else {
        reset();
    }
    n_prompt_reused_ = n_reuse;
    // The target computes what this drafter reads, and nothing for plain runs.
    export_features(drafter ? drafter->features() : FeatureRequest{});
    // Recurrent state rolls back through llama.cpp's snapshots when the draft
    // fits in them, else through a state checkpoint taken before each verify.
    const bool use_ckpt =
        drafter && (force_checkpoints || (target_->needs_checkpoints() &&
                                          uint32_t(gp.draft_n_max) > llama_n_rs_seq(ctx_.get())));
    // Greedy without penalties on a GPU: the argmax runs on the device.
    const bool dev_argmax =
        argmax_.set(ctx_.get(), 0, plain_argmax(gp.sampling));

    const bool rejection = gp.spec_sampling == SpecSampling::Rejection && gp.sampling.temperature > 0.0f;
    if (drafter) {
        SamplingParams ds = gp.sampling;
        if (!rejection) ds.temperature = 0.0f;  // accept-if-equal: greedy drafts accept best
        drafter->set_sampling(ds);
        drafter->begin(prompt);
    }

    // What a step emits: its tokens up to the first end-of-generation token
    // (included) and within n_predict. Returns why the generation ends there
    // ("stop", "length"), or "" when it goes on. Tokens cut here are not
    // kept in the memory, told to the drafter or counted.
    auto cut = [&](std::vector<llama_token> & toks) -> const char * {
        const size_t left = size_t(gp.n_predict) - res.tokens.size();
        for (size_t i = 0; i < toks.size(); ++i) {
            if (i == left) { toks.resize(i); return "length"; }
            if (!gp.ignore_eos && target_->is_eog(toks[i])) { toks.resize(i + 1); return "stop"; }
        }
        return toks.size() == left ? "length" : "";
    };

    // Prompt: the first generated token comes from its last row.
    auto t0 = Clock::now();
    prefill(prompt, drafter, n_reuse, /*progress=*/true);
    st.prompt_n = int32_t(prompt.size() - n_reuse);  // the tokens computed (llama.cpp's prompt_n)
    llama_token next = dev_argmax ? device_token(-1)
                                  : sample_token(llama_get_logits_ith(ctx_.get(), -1), n_vocab_, gp.sampling,
                                                 uint64_t(n_past()), prompt.data(), prompt.size());
    if (drafter) drafter->accept(0, {next});  // the first token, sampled from the prompt's last row
    st.prompt_ms = ms_since(t0);

    const auto t_gen = Clock::now();
    const double forward_prompt_ms = forward_ms_;
    std::vector<llama_token> emit = {next};
    const char * end = cut(emit);
    int32_t n_from_draft = 0;  // the first n_from_draft tokens of emit are accepted drafts
    std::vector<llama_token> draft;
    std::vector<Candidates> draft_q;
    std::vector<llama_token> history = prompt;  // committed tokens, what penalties read
    while (true) {
        // commit what the last step emitted
        res.tokens.insert(res.tokens.end(), emit.begin(), emit.end());
        history.insert(history.end(), emit.begin(), emit.end());
        if (on_step && !emit.empty() && !on_step(emit, n_from_draft)) {
            // a generation that ended with this step keeps its reason
            res.finish_reason = *end ? end : "interrupted";
            break;
        }
        if (*end) { res.finish_reason = end; break; }
        if (stop_requested()) { res.finish_reason = "interrupted"; break; }
        // `next` is the last committed token, not yet in the memory.
        next = res.tokens.back();
        const int32_t room = int32_t(n_ctx()) - n_past() - 1;  // positions left after `next`
        if (room < 0) { res.finish_reason = "context"; break; }

        // draft
        draft.clear();
        draft_q.clear();
        if (drafter && gp.draft_n_max > 0) {
            const int32_t left = gp.n_predict - int32_t(res.tokens.size());
            const int32_t n_max = std::min({gp.draft_n_max, room, left - 1});
            if (n_max > 0) {
                auto td = Clock::now();
                Draft d = drafter->draft(n_max);
                st.draft_ms += ms_since(td);
                draft = std::move(d.tokens);
                draft_q = std::move(d.q);
                if (!draft_q.empty() && draft_q.size() < draft.size())
                    throw Error("drafter '" + drafter->name() + "' returned " + std::to_string(draft.size()) +
                                " tokens but " + std::to_string(draft_q.size()) + " distributions");
                if (int32_t(draft.size()) > n_max) draft.resize(size_t(n_max));
                if (int32_t(draft.size()) < std::max(gp.draft_n_min, 1)) draft.clear();
                for (llama_token t : draft) {
                    if (t < 0 || t >= n_vocab_) { draft.clear(); break; }
                }
                if (draft_q.size() > draft.size()) draft_q.resize(draft.size());
            }
        }

        // verify: `next` + drafts in one target batch, logits for every row
        auto tv = Clock::now();
        if (use_ckpt && !draft.empty()) checkpoint();
        const int32_t pos0 = n_past();
        draft.insert(draft.begin(), next);  // the verify batch: `next`, then the drafts
        submit(draft.data(), draft.size(), true, true, "verify");
        draft.erase(draft.begin());
        // every token of the batch outputs logits: rows are contiguous, in batch order
        VerifyResult vr;
        if (dev_argmax) {
            vr = verify_picked(draft, [&](int32_t i) { return device_token(i); });
        } else {
            const float * logits = llama_get_logits(ctx_.get());
            vr = rejection
                     ? verify_rejection(logits, n_vocab_, draft, draft_q, gp.sampling, uint64_t(pos0 + 1), history)
                     : verify_accept_if_equal(logits, n_vocab_, draft, gp.sampling, uint64_t(pos0 + 1), history);
        }
        emit = std::move(vr.tokens);
        end = cut(emit);
        n_from_draft = std::min(vr.n_accepted, int32_t(emit.size()));
        // The memory keeps `next` and every emitted token but the last (the
        // new `next`): the batch's first emit.size() rows.
        const int32_t n_keep = pos0 + int32_t(emit.size());
        // Drafters that read the target's outputs take the kept rows now,
        // before a checkpoint rollback could replay (and overwrite) them. The
        // drafter's work counts as drafting time, not verifying.
        double observe_ms = 0.0;
        if (drafter) {
            const auto to = Clock::now();
            drafter->observe({batch_.get().token, n_keep - pos0, pos0, ctx_.get()});
            observe_ms = ms_since(to);
            st.draft_ms += observe_ms;
        }
        rollback(n_keep);
        st.verify_ms += ms_since(tv) - observe_ms;
        st.n_steps++;
        if (drafter) {
            const auto ta = Clock::now();
            drafter->accept(n_from_draft, emit);
            st.draft_ms += ms_since(ta);
        }
        if (!draft.empty()) {
            st.draft_n += int32_t(draft.size());
            st.draft_n_accepted += n_from_draft;
            if (st.drafted_per_position.size() < draft.size()) {
                st.drafted_per_position.resize(draft.size());
                st.accepted_per_position.resize(draft.size());
            }
            for (size_t i = 0; i < draft.size(); ++i) {
                st.drafted_per_position[i]++;
                if (int32_t(i) < n_from_draft) st.accepted_per_position[i]++;
            }
        }
    }
    st.predicted_n = int32_t(res.tokens.size());
    st.predicted_ms = ms_since(t_gen);
    st.forward_ms = forward_ms_ - forward_prompt_ms;
    return res;
}

}  // namespace pyspec
