// Binds pyspec::BatchEngine: several sequences in one target context, one forward per step.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "engine/batch_engine.h"
#include "engine/error.h"

namespace pyspec {

void register_batch_engine(py::module_ & m) {
    py::class_<BatchEngine, std::shared_ptr<BatchEngine>>(m, "BatchEngine", R"pbdoc(
        Several sequences (llama.cpp seq_ids 0..n_seq_max-1) in one target context: each step() is one
        llama_decode over every active sequence's next prompt chunk or its last token + drafts; each
        sequence verifies its own rows and rolls back its own memory. Requests join (add) and leave
        (finish, cancel) between steps. Each sequence has a KV stream of its own of n_ctx / n_seq_max
        cells (n_ctx_seq), so that with exact kernels its tokens and logits equal the same request run
        alone by Engine (with n_ctx=n_ctx_seq), whatever runs beside it. Not thread-safe but for
        cancel(); pyspec.batch.BatchLLM drives one from a thread of its own.

        Arguments:
          model: the target pyspec._core.Model.
          n_seq_max: sequences at once (1..64).
          n_ctx: context size in tokens, split between the sequences.
          n_batch: tokens of one step over all sequences (prompt chunks and verify rows); >= n_seq_max.
          n_threads, flash_attn, type_k, type_v, exact, swa_full: as Engine's.
          n_step_tokens: tokens per step (0: n_batch).
          pad_rows: pad every sequence's rows in a step to the same count (and idle slots below the
            highest busy one with filler rows), so that llama.cpp runs the step as one pass over the
            KV streams instead of one per distinct row count; the padding has no logits. -1: when
            the model is on a GPU (on the CPU padding measured slower than the split), 0 off, 1 on.

        Example:
          >>> be = pyspec._core.BatchEngine(model, n_seq_max=4)
          >>> a = be.add(prompt_a, max_tokens=16); b = be.add(prompt_b, max_tokens=16)
          >>> while be.n_active: events = be.step()
          >>> be.take(a)["tokens"]
    )pbdoc")
        .def(py::init([](std::shared_ptr<Model> model, int32_t n_seq_max, uint32_t n_ctx, uint32_t n_batch,
                         int32_t n_threads, int32_t flash_attn, std::string type_k, std::string type_v, bool exact,
                         int32_t n_step_tokens, int32_t pad_rows, bool swa_full) {
                 const ContextParams p = context_params(n_ctx, n_batch, n_threads, flash_attn, std::move(type_k),
                                                        std::move(type_v), exact, swa_full);
                 BatchParams bp;
                 bp.n_seq_max = n_seq_max;
                 bp.n_step_tokens = n_step_tokens;
                 bp.pad_rows = pad_rows;
                 py::gil_scoped_release nogil;
                 return std::make_shared<BatchEngine>(std::move(model), p, bp);
             }),
             py::arg("model"), py::arg("n_seq_max") = 4, py::arg("n_ctx") = 4096, py::arg("n_batch") = 512,
             py::arg("n_threads") = 0, py::arg("flash_attn") = -1, py::arg("type_k") = "f16",
             py::arg("type_v") = "f16", py::arg("exact") = true, py::arg("n_step_tokens") = 0,
             py::arg("pad_rows") = -1, py::arg("swa_full") = false)
        .def("add",
             [](BatchEngine & e, const std::vector<llama_token> & prompt, py::object options,
                std::shared_ptr<Drafter> drafter, bool record_logits, py::kwargs changes) {
                 const GenerateParams gp = generate_params(options, changes, "BatchEngine.add()");
                 return e.add(prompt, gp, std::move(drafter), record_logits);
             },
             py::arg("prompt"), py::arg("options") = py::none(), py::kw_only(), py::arg("drafter") = nullptr,
             py::arg("record_logits") = false, R"pbdoc(
        Puts a request into a free slot; it starts at the next step(). Returns its id.

        Arguments:
          prompt: token ids.
          options: a pyspec.GenerationOptions (None: its defaults), read as Engine.generate does.
          drafter: None (plain decoding) or a fresh pyspec._core.NgramDrafter for this request alone;
            other drafters raise InvalidParameterError (they hold one sequence's state).
          record_logits: keep the logits row each committed token was chosen from (tests):
            recorded_logits(id) once it has finished.
          **changes: GenerationOptions fields over `options`; n_predict is max_tokens.

        Raises PyspecError when no slot is free (n_free == 0), ContextOverflowError for a prompt of
        n_ctx_seq tokens or more.
    )pbdoc")
        .def("cancel", &BatchEngine::cancel, py::arg("id"),
             "Stops sequence `id` at the start of the next step (finish_reason 'interrupted'); thread-safe.")
        .def("step",
             [](BatchEngine & e) {
                 std::vector<SequenceEvent> events;
                 {
                     py::gil_scoped_release nogil;
                     events = e.step();
                 }
                 py::list out;
                 for (const SequenceEvent & ev : events)
                     out.append(py::make_tuple(ev.id, ev.tokens, ev.n_from_draft, ev.finished, ev.finish_reason));
                 return out;
             },
             R"pbdoc(
        One forward pass over every active sequence. Returns [(id, tokens, n_from_draft, finished,
        finish_reason)] for each sequence that committed tokens or ended in it (the first n_from_draft
        tokens are accepted drafts). An empty list when nothing is active.
    )pbdoc")
        .def("take",
             [](BatchEngine & e, int64_t id) {
                 const GenerateResult r = e.take(id);
                 py::dict d;
                 d["tokens"] = r.tokens;
                 d["stats"] = stats_to_dict(r.stats);
                 d["finish_reason"] = r.finish_reason;
                 // Engine raises GenerationInterrupted for a generation stopped in its prompt
                 d["in_prompt"] = r.stats.prompt_n == 0;
                 return d;
             },
             py::arg("id"), "The result of a finished sequence, as Engine.generate's dict plus 'in_prompt' "
                            "(cancelled before its first token); the id is forgotten.")
        .def("recorded_logits",
             [](const BatchEngine & e, int64_t id) {
                 const std::vector<float> & l = e.recorded_logits(id);
                 const size_t n_vocab = size_t(e.model()->n_vocab());
                 py::array_t<float> arr({l.size() / n_vocab, n_vocab});
                 std::copy(l.begin(), l.end(), arr.mutable_data());
                 return arr;
             },
             py::arg("id"), "[n_tokens, n_vocab]: the row each committed token of a finished sequence added "
                            "with record_logits=True was chosen from (call before take()).")
        .def_property_readonly("n_seq_max", &BatchEngine::n_seq_max)
        .def_property_readonly("n_active", &BatchEngine::n_active, "Sequences in the batch (prefilling or decoding).")
        .def_property_readonly("n_free", &BatchEngine::n_free, "Slots free for add().")
        .def_property_readonly("n_ctx_seq", &BatchEngine::n_ctx_seq,
                               "The context of one sequence: n_ctx / n_seq_max, rounded up to 256 by llama.cpp.")
        .def_property_readonly("n_step_tokens", &BatchEngine::n_step_tokens)
        .def_property_readonly("pad_rows", &BatchEngine::pad_rows, "Whether steps pad the sequences' rows.")
        .def_property_readonly("device_argmax_available", &BatchEngine::device_argmax_available,
                               "Whether greedy sequences without penalties take their argmax on the device (an "
                               "offloaded model; PYSPEC_DEVICE_ARGMAX=0: off, =1: on, also on the CPU backend).")
        .def_property_readonly("device_rows_with_host_logits", &BatchEngine::device_rows_with_host_logits,
                               "Device picks (the first after each sampler attach) whose logits row was copied to "
                               "the host anyway (0: only the token ids of greedy rows leave the device).")
        .def_property_readonly("n_steps", &BatchEngine::n_steps, "Steps (forward passes) run so far.")
        .def_property_readonly("n_pad_rows", &BatchEngine::n_pad_rows, "Padding and filler rows added so far.")
        .def_property_readonly("n_threads", &BatchEngine::n_threads)
        .def_property_readonly("model", &BatchEngine::model)
        .def("memory", [](const BatchEngine & e) {
                 const ContextMemory m = e.memory();
                 py::dict r;
                 r["kv_bytes"] = m.kv_bytes;
                 r["compute_bytes"] = m.compute_bytes;
                 return r;
             }, "Bytes of the batch context: KV cache (every sequence's stream) and compute buffers.");
}

}  // namespace pyspec
