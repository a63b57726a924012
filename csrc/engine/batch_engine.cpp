#include "engine/batch_engine.h"

#include <algorithm>

#include "drafters/draft_model.h"
#include "drafters/ngram.h"
#include "engine/context.h"
#include "engine/error.h"
#include "verify/verify.h"

namespace pyspec {
namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
constexpr int32_t kMaxSeq = 64;
}  // namespace

namespace {
// The tokens of one step (the batch's capacity), after checking the settings.
int32_t step_width(const Model & target, const ContextParams & params, const BatchParams & bp) {
    if (bp.n_seq_max < 1 || bp.n_seq_max > kMaxSeq)
        throw InvalidParameterError("n_seq_max (-np, the sequences served at once) must be in [1, " +
                                    std::to_string(kMaxSeq) + "], got " + std::to_string(bp.n_seq_max));
    if (params.n_batch < 1) throw InvalidParameterError("n_batch must be >= 1, got " + std::to_string(params.n_batch));
    if (bp.n_step_tokens < 0)
        throw InvalidParameterError("n_step_tokens must be >= 0 (0: n_batch), got " + std::to_string(bp.n_step_tokens));
    // llama.cpp gives each stream n_ctx / n_seq_max cells, rounded up to 256
    if (params.n_ctx < 8 || params.n_ctx / uint32_t(bp.n_seq_max) < 8)
        throw InvalidParameterError("n_ctx=" + std::to_string(params.n_ctx) + " is split between " +
                                    std::to_string(bp.n_seq_max) + " sequences, leaving fewer than 8 tokens "
                                    "each; use a larger n_ctx (-c) or fewer sequences (-np)");
    if (target.needs_checkpoints())
        throw UnsupportedError("'" + target.path() + "' has recurrent (or hybrid) memory, which the batch "
                               "engine cannot roll back per sequence yet; serve it with one sequence (-np 1)");
    int32_t n = bp.n_step_tokens > 0 ? bp.n_step_tokens : int32_t(params.n_batch);
    n = std::min<int32_t>(n, int32_t(padded_n_ctx(params.n_ctx)));
    if (n < bp.n_seq_max)
        throw InvalidParameterError("a step of " + std::to_string(n) + " tokens (n_batch / n_step_tokens) cannot "
                                    "hold one token of each of the " + std::to_string(bp.n_seq_max) +
                                    " sequences; give n_batch >= n_seq_max");
    return n;
}
}  // namespace

BatchEngine::BatchEngine(std::shared_ptr<Model> target, const ContextParams & params, const BatchParams & bp)
    : target_(std::move(target)), params_(params), bp_(bp), step_tokens_(step_width(*target_, params, bp)),
      batch_(step_tokens_), n_vocab_(target_->n_vocab()) {
    ContextSpec cs = target_context_spec(params);
    cs.n_batch = uint32_t(step_tokens_);
    cs.n_seq_max = uint32_t(bp.n_seq_max);
    cs.kv_unified = false;  // one KV stream per sequence: see the header
    // a verify reads up to a 64-token draft + 1 rows of one sequence (device argmax included)
    cs.n_outputs_max_per_seq = std::min<uint32_t>(65, cs.n_batch);
    ctx_ = new_context(target_->get(), cs, "the batch target",
                       " (n_ctx=" + std::to_string(params.n_ctx) + ", " + std::to_string(bp.n_seq_max) +
                           " sequences). Try a smaller n_ctx, fewer sequences or another KV cache type.");
    if (llama_n_batch(ctx_.get()) < uint32_t(step_tokens_))
        throw Error("llama.cpp gave the batch target a batch of " + std::to_string(llama_n_batch(ctx_.get())) +
                    " tokens, fewer than the step's " + std::to_string(step_tokens_));
    slot_used_.assign(size_t(bp.n_seq_max), false);
    for (int32_t i = 0; i < bp.n_seq_max; ++i) argmax_.emplace_back(target_->params().n_gpu_layers != 0);
    pad_ = bp.pad_rows < 0 ? target_->params().n_gpu_layers != 0 && llama_supports_gpu_offload() : bp.pad_rows > 0;
}

int64_t BatchEngine::add(const std::vector<llama_token> & prompt, const GenerateParams & gp,
                         std::shared_ptr<Drafter> drafter, bool record_logits) {
    validate(gp);
    // n-gram and draft-model drafters keep their state to themselves (a draft model: its own context);
    // the feature drafters (MTP, EAGLE-3, DFlash) read the features of the target context's one sequence
    if (drafter && !dynamic_cast<NgramDrafter *>(drafter.get()) && !dynamic_cast<DraftModelDrafter *>(drafter.get()))
        throw InvalidParameterError("the '" + drafter->name() + "' drafter cannot serve several sequences at once: "
                                    "the batch engine (n_seq_max > 1, pyspec serve -np N) drafts with 'none', "
                                    "'ngram' or 'draft' only; use one of those, or run this request with one "
                                    "sequence (pyspec.LLM, pyspec serve -np 1)");
    for (const auto & a : active_) {
        if (drafter && a->drafter == drafter)
            throw InvalidParameterError("this drafter already drafts for sequence " + std::to_string(a->id) +
                                        "; give every request a drafter of its own (a new NgramDrafter, or a "
                                        "DraftModelDrafter per sequence)");
    }
    if (prompt.empty()) throw InvalidParameterError("the prompt is empty; give at least one token");
    for (llama_token t : prompt) {
        if (t < 0 || t >= n_vocab_)
            throw InvalidParameterError("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                                        std::to_string(n_vocab_) + ")");
    }
    if (prompt.size() >= n_ctx_seq())
        throw ContextOverflowError("the prompt has " + std::to_string(prompt.size()) + " tokens but a sequence holds "
                                   "n_ctx_seq=" + std::to_string(n_ctx_seq()) + " (n_ctx / n_seq_max), which "
                                   "leaves no room to generate; shorten the prompt, or use a larger n_ctx or "
                                   "fewer sequences");
    auto it = std::find(slot_used_.begin(), slot_used_.end(), false);
    if (it == slot_used_.end())
        throw Error("all " + std::to_string(bp_.n_seq_max) + " sequences are busy; add the request when one "
                    "finishes (n_free() > 0)");

    auto s = std::make_unique<Sequence>();
    s->id = next_id_++;
    s->slot = llama_seq_id(it - slot_used_.begin());
    s->prompt = prompt;
    s->params = gp;
    s->drafter = std::move(drafter);
    s->rejection = gp.spec_sampling == SpecSampling::Rejection && gp.sampling.temperature > 0.0f;
    s->history = prompt;
    s->record_logits = record_logits;
    s->device_argmax = argmax_[size_t(s->slot)].set(ctx_.get(), s->slot, plain_argmax(gp.sampling) && !record_logits);
    if (s->drafter) {
        SamplingParams ds = gp.sampling;
        if (!s->rejection) ds.temperature = 0.0f;  // accept-if-equal: greedy drafts accept best
        s->drafter->set_sampling(ds);
        s->drafter->begin(prompt);
    }
    // the stream may hold a cancelled predecessor's cells only if finish() failed to clear it
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), s->slot, -1, -1);
    slot_used_[size_t(s->slot)] = true;
    const int64_t id = s->id;
    active_.push_back(std::move(s));
    return id;
}

void BatchEngine::cancel(int64_t id) {
    std::lock_guard<std::mutex> lock(cancel_mu_);
    cancels_.push_back(id);
}

const char * BatchEngine::cut(const Sequence & s, std::vector<llama_token> & toks) const {
    // As Engine::generate: tokens cut here are not kept, told to the drafter or counted.
    const size_t left = size_t(s.params.n_predict) - s.result.tokens.size();
    for (size_t i = 0; i < toks.size(); ++i) {
        if (i == left) { toks.resize(i); return "length"; }
        if (!s.params.ignore_eos && target_->is_eog(toks[i])) { toks.resize(i + 1); return "stop"; }
    }
    return toks.size() == left ? "length" : "";
}

void BatchEngine::rollback(Sequence & s, int32_t n_keep) {
    if (n_keep == s.n_past) return;
    if (!llama_memory_seq_rm(llama_get_memory(ctx_.get()), s.slot, n_keep, -1))
        throw Error("rollback: the memory refused to drop positions >= " + std::to_string(n_keep) + " of sequence " +
                    std::to_string(s.slot));
    s.n_past = n_keep;
}

void BatchEngine::finish(Sequence & s, const std::string & reason, std::vector<SequenceEvent> & events) {
    s.result.finish_reason = reason;
    Stats & st = s.result.stats;
    st.predicted_n = int32_t(s.result.tokens.size());
    if (st.prompt_n > 0) st.predicted_ms = ms_since(s.t_gen);
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), s.slot, -1, -1);
    slot_used_[size_t(s.slot)] = false;
    if (!events.empty() && events.back().id == s.id) {
        events.back().finished = true;
        events.back().finish_reason = reason;
    } else {
        SequenceEvent e;
        e.id = s.id;
        e.finished = true;
        e.finish_reason = reason;
        events.push_back(std::move(e));
    }
}

void BatchEngine::plan_drafts(std::vector<Sequence *> & decoding, int32_t budget) {
    const int32_t share = decoding.empty() ? 0 : std::max(budget, 0) / int32_t(decoding.size());
    for (Sequence * s : decoding) {
        s->draft.clear();
        s->draft_q.clear();
        const GenerateParams & gp = s->params;
        if (!s->drafter || gp.draft_n_max == 0) continue;
        const int32_t room = int32_t(n_ctx_seq()) - s->n_past - 1;  // positions left after `next`
        const int32_t left = gp.n_predict - int32_t(s->result.tokens.size());
        const int32_t n_max = std::min({gp.draft_n_max, room, left - 1, share});
        if (n_max <= 0) continue;
        const auto td = Clock::now();
        Draft d = s->drafter->draft(n_max);
        s->result.stats.draft_ms += ms_since(td);
        s->draft = std::move(d.tokens);
        s->draft_q = std::move(d.q);
        if (!s->draft_q.empty() && s->draft_q.size() < s->draft.size())
            throw Error("drafter '" + s->drafter->name() + "' returned " + std::to_string(s->draft.size()) +
                        " tokens but " + std::to_string(s->draft_q.size()) + " distributions");
        if (int32_t(s->draft.size()) > n_max) s->draft.resize(size_t(n_max));
        if (int32_t(s->draft.size()) < std::max(gp.draft_n_min, 1)) s->draft.clear();
        for (llama_token t : s->draft) {
            if (t < 0 || t >= n_vocab_) { s->draft.clear(); break; }
        }
        if (s->draft_q.size() > s->draft.size()) s->draft_q.resize(s->draft.size());
    }
}

std::vector<SequenceEvent> BatchEngine::step() {
    std::vector<SequenceEvent> events;
    {
        std::lock_guard<std::mutex> lock(cancel_mu_);
        for (int64_t id : cancels_) {
            for (auto & s : active_) {
                if (s->id == id) s->cancelled = true;
            }
        }
        cancels_.clear();
    }
    // Sequences that end in this step leave active_ for done_ at the end of it.
    auto retire = [&] {
        for (auto it = active_.begin(); it != active_.end();) {
            if ((*it)->result.finish_reason.empty()) { ++it; continue; }
            const int64_t id = (*it)->id;
            done_[id] = std::move(*it);
            it = active_.erase(it);
        }
    };
    for (auto & s : active_) {
        if (s->cancelled) finish(*s, "interrupted", events);
    }
    retire();

    std::vector<Sequence *> decoding, prefilling;
    for (auto & s : active_) {
        s->row0 = -1;
        s->n_rows = 0;
        s->n_pad = 0;
        (s->n_prefilled < int32_t(s->prompt.size()) ? prefilling : decoding).push_back(s.get());
    }
    if (decoding.empty() && prefilling.empty()) return events;

    // Every decoding sequence verifies its last token and drafts; while prompts wait, drafts take at
    // most half the step so the prompts go on.
    const int32_t n_dec = int32_t(decoding.size());
    int32_t draft_budget = step_tokens_ - n_dec;
    if (!prefilling.empty()) draft_budget = std::min(draft_budget, step_tokens_ / 2 - n_dec);
    plan_drafts(decoding, draft_budget);

    // The rows of each sequence in this step (decode: its last token + drafts; prompt: its next chunk),
    // the prompts served in join order out of what the step has left.
    const bool pad = pad_;
    int32_t width = 0;  // the most rows of a decoding sequence: what padding evens the others out to
    for (Sequence * s : decoding) {
        s->n_rows = 1 + int32_t(s->draft.size());
        width = std::max(width, s->n_rows);
    }
    int32_t used = 0;
    for (Sequence * s : decoding) {
        s->n_pad = pad ? width - s->n_rows : 0;
        used += s->n_rows + s->n_pad;
    }
    const auto now = Clock::now();
    for (Sequence * s : prefilling) {
        const int32_t left = step_tokens_ - used;
        if (left <= 0) break;
        s->n_rows = std::min<int32_t>(int32_t(s->prompt.size()) - s->n_prefilled, left);
        s->n_pad = pad && s->n_rows < width && width <= left ? width - s->n_rows : 0;
        used += s->n_rows + s->n_pad;
        if (!s->started) {
            s->started = true;
            s->t_start = now;
        }
    }
    // llama.cpp splits a batch over several KV streams into passes of equal tokens per sequence over
    // consecutive seq_ids: rows in slot order, and with padding, slots without rows below the highest
    // busy one get `width` filler rows too (if they fit), dropped after the step like the padding.
    std::vector<Sequence *> by_slot(size_t(bp_.n_seq_max), nullptr);
    int32_t top = -1;
    for (auto & s : active_) {
        by_slot[size_t(s->slot)] = s.get();
        if (s->n_rows > 0) top = std::max<int32_t>(top, s->slot);
    }
    std::vector<std::pair<llama_seq_id, llama_pos>> fillers;  // (slot, first position)
    batch_.clear();
    for (int32_t slot = 0; slot <= top; ++slot) {
        Sequence * s = by_slot[size_t(slot)];
        if (!s || s->n_rows == 0) {
            if (pad && width > 0 && used + width <= step_tokens_) {
                const llama_pos p0 = s ? s->n_past : 0;
                for (int32_t j = 0; j < width; ++j) batch_.add(0, p0 + j, false, slot);
                fillers.emplace_back(slot, p0);
                used += width;
                n_pad_rows_ += width;
            }
            continue;
        }
        s->row0 = batch_.size();
        llama_pos pos = s->n_past;
        llama_token last_token;
        if (s->n_prefilled < int32_t(s->prompt.size())) {
            const bool last = s->n_prefilled + s->n_rows == int32_t(s->prompt.size());
            for (int32_t j = 0; j < s->n_rows; ++j)
                batch_.add(s->prompt[size_t(s->n_prefilled + j)], pos++, last && j + 1 == s->n_rows, s->slot);
            last_token = s->prompt[size_t(s->n_prefilled + s->n_rows - 1)];
        } else {
            batch_.add(s->result.tokens.back(), pos++, true, s->slot);
            for (llama_token t : s->draft) batch_.add(t, pos++, true, s->slot);
            last_token = batch_.get().token[batch_.size() - 1];
        }
        for (int32_t j = 0; j < s->n_pad; ++j) batch_.add(last_token, pos++, false, s->slot);
        n_pad_rows_ += s->n_pad;
    }

    const auto tf = Clock::now();
    decode_checked(ctx_.get(), batch_.get(), "batch step");
    llama_synchronize(ctx_.get());
    const double forward_ms = ms_since(tf);
    n_steps_++;
    for (const auto & [slot, p0] : fillers) {
        if (!llama_memory_seq_rm(llama_get_memory(ctx_.get()), slot, p0, -1))
            throw Error("the memory refused to drop the filler rows of sequence " + std::to_string(slot));
    }

    // Rows of a sequence are consecutive in the batch, and llama.cpp returns the outputs in batch
    // order: row i of a verify is at logits_ith(row0 + i).
    auto rows = [&](const Sequence & s, int32_t first, int32_t n) {
        const float * p = llama_get_logits_ith(ctx_.get(), first);
        if (!p || (n > 1 && llama_get_logits_ith(ctx_.get(), first + n - 1) != p + size_t(n - 1) * size_t(n_vocab_)))
            throw Error("internal: the logits of sequence " + std::to_string(s.slot) + " are not consecutive rows");
        return p;
    };
    auto record = [&](Sequence & s, const float * p, size_t n) {
        if (s.record_logits) s.logits.insert(s.logits.end(), p, p + n * size_t(n_vocab_));
    };
    // Commits what a sequence emitted in this step; ends it when the step said so or its stream is full.
    auto commit = [&](Sequence & s, std::vector<llama_token> & emit, int32_t n_from_draft, const char * end) {
        s.result.tokens.insert(s.result.tokens.end(), emit.begin(), emit.end());
        s.history.insert(s.history.end(), emit.begin(), emit.end());
        if (!emit.empty()) {
            SequenceEvent e;
            e.id = s.id;
            e.tokens = emit;
            e.n_from_draft = n_from_draft;
            events.push_back(std::move(e));
        }
        if (*end) { finish(s, end, events); return; }
        const int32_t room = int32_t(n_ctx_seq()) - s.n_past - 1;  // positions left after the last token
        if (room < 0) finish(s, "context", events);
    };

    for (Sequence * s : prefilling) {
        if (s->n_rows == 0) continue;
        s->n_prefilled += s->n_rows;
        s->n_past += s->n_rows + s->n_pad;
        rollback(*s, s->n_past - s->n_pad);  // the padding
        if (s->n_prefilled < int32_t(s->prompt.size())) continue;
        // The first generated token comes from the prompt's last row.
        const int32_t last = s->row0 + s->n_rows - 1;
        const float * p = s->device_argmax ? nullptr : rows(*s, last, 1);
        const llama_token next = s->device_argmax
            ? argmax_[size_t(s->slot)].token(ctx_.get(), last, n_vocab_)
            : sample_token(p, n_vocab_, s->params.sampling, uint64_t(s->n_past), s->prompt.data(), s->prompt.size());
        if (s->drafter) s->drafter->accept(0, {next});
        Stats & st = s->result.stats;
        st.prompt_n = int32_t(s->prompt.size());
        st.prompt_ms = ms_since(s->t_start);
        s->t_gen = Clock::now();
        std::vector<llama_token> emit = {next};
        const char * end = cut(*s, emit);
        record(*s, p, emit.size());
        commit(*s, emit, 0, end);
    }
    for (Sequence * s : decoding) {
        const auto tv = Clock::now();
        const int32_t pos0 = s->n_past;
        s->n_past += s->n_rows + s->n_pad;  // the verify rows (and padding) are in the memory until the rollback
        const float * p = s->device_argmax ? nullptr : rows(*s, s->row0, s->n_rows);
        VerifyResult vr;
        if (s->device_argmax) {
            const DeviceArgmax & am = argmax_[size_t(s->slot)];
            vr = verify_picked(s->draft, [&](int32_t i) { return am.token(ctx_.get(), s->row0 + i, n_vocab_); });
        } else {
            vr = s->rejection
                ? verify_rejection(p, n_vocab_, s->draft, s->draft_q, s->params.sampling, uint64_t(pos0 + 1), s->history)
                : verify_accept_if_equal(p, n_vocab_, s->draft, s->params.sampling, uint64_t(pos0 + 1), s->history);
        }
        std::vector<llama_token> emit = vr.tokens;
        const char * end = cut(*s, emit);
        const int32_t n_from_draft = std::min(vr.n_accepted, int32_t(emit.size()));
        // the memory keeps the verified token and every emitted one but the last (the new `next`)
        rollback(*s, pos0 + int32_t(emit.size()));
        Stats & st = s->result.stats;
        st.forward_ms += forward_ms;
        st.verify_ms += forward_ms + ms_since(tv);
        st.n_steps++;
        if (s->drafter) {
            const auto ta = Clock::now();
            s->drafter->accept(n_from_draft, emit);
            st.draft_ms += ms_since(ta);
        }
        if (!s->draft.empty()) {
            st.draft_n += int32_t(s->draft.size());
            st.draft_n_accepted += n_from_draft;
            if (st.drafted_per_position.size() < s->draft.size()) {
                st.drafted_per_position.resize(s->draft.size());
                st.accepted_per_position.resize(s->draft.size());
            }
            for (size_t i = 0; i < s->draft.size(); ++i) {
                st.drafted_per_position[i]++;
                if (int32_t(i) < n_from_draft) st.accepted_per_position[i]++;
            }
        }
        record(*s, p, emit.size());
        commit(*s, emit, n_from_draft, end);
    }
    retire();
    return events;
}

GenerateResult BatchEngine::take(int64_t id) {
    auto it = done_.find(id);
    if (it == done_.end())
        throw InvalidParameterError("sequence " + std::to_string(id) + " has not finished (or was taken already); "
                                    "take() a sequence after step() reported it finished");
    GenerateResult r = std::move(it->second->result);
    done_.erase(it);
    return r;
}

const std::vector<float> & BatchEngine::recorded_logits(int64_t id) const {
    auto it = done_.find(id);
    if (it == done_.end())
        throw InvalidParameterError("sequence " + std::to_string(id) + " has not finished (or was taken already)");
    return it->second->logits;
}

}  // namespace pyspec
