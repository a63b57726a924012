// Binds pyspec::Engine: the target context and the speculative loop.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "engine/engine.h"
#include "engine/context.h"
#include "engine/error.h"
#include "engine/threads.h"

namespace pyspec {

py::dict stats_to_dict(const Stats & s) {
    py::dict d;
    d["prompt_n"] = s.prompt_n;
    d["prompt_ms"] = s.prompt_ms;
    d["predicted_n"] = s.predicted_n;
    d["predicted_ms"] = s.predicted_ms;
    d["n_steps"] = s.n_steps;
    d["draft_n"] = s.draft_n;
    d["draft_n_accepted"] = s.draft_n_accepted;
    d["drafted_per_position"] = s.drafted_per_position;
    d["accepted_per_position"] = s.accepted_per_position;
    d["draft_ms"] = s.draft_ms;
    d["verify_ms"] = s.verify_ms;
    d["forward_ms"] = s.forward_ms;
    d["mean_acceptance_length"] = s.mean_acceptance_length();
    return d;
}

// pyspec.GenerationOptions (options, or its defaults, with `changes` applied and checked
// there) to GenerateParams: the one place where the Python options meet the engine's.
GenerateParams generate_params(py::object options, py::kwargs changes, const char * where) {
    py::object cls = py::module_::import("pyspec.options").attr("GenerationOptions");
    if (changes.contains("n_predict")) {  // the engine's (and llama.cpp's) name for max_tokens
        if (changes.contains("max_tokens"))
            throw InvalidParameterError("give n_predict or max_tokens, not both (n_predict is max_tokens)");
        changes["max_tokens"] = changes.attr("pop")("n_predict");
    }
    py::object o = cls.attr("build")(options, where, **changes);
    GenerateParams gp;
    gp.n_predict = o.attr("max_tokens").cast<int32_t>();
    SamplingParams & sp = gp.sampling;
    sp.temperature = o.attr("temperature").cast<float>();
    sp.top_k = o.attr("top_k").cast<int32_t>();
    sp.top_p = o.attr("top_p").cast<float>();
    sp.min_p = o.attr("min_p").cast<float>();
    py::object seed = o.attr("seed");
    sp.seed = seed.is_none() ? 0 : seed.cast<uint64_t>();
    sp.repeat_penalty = o.attr("repeat_penalty").cast<float>();
    sp.frequency_penalty = o.attr("frequency_penalty").cast<float>();
    sp.presence_penalty = o.attr("presence_penalty").cast<float>();
    sp.penalty_last_n = o.attr("penalty_last_n").cast<int32_t>();
    const std::string spec_sampling = o.attr("spec_sampling").cast<std::string>();
    gp.spec_sampling = spec_sampling == "equal" ? SpecSampling::Equal : SpecSampling::Rejection;
    gp.draft_n_max = o.attr("draft_n_max").cast<int32_t>();
    gp.draft_n_min = o.attr("draft_n_min").cast<int32_t>();
    gp.ignore_eos = o.attr("ignore_eos").cast<bool>();
    return gp;
}

ContextParams context_params(uint32_t n_ctx, uint32_t n_batch, int32_t n_threads, int32_t flash_attn,
                             std::string type_k, std::string type_v, bool exact, bool swa_full) {
    ContextParams p;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = n_threads;
    p.flash_attn = flash_attn;
    p.type_k = std::move(type_k);
    p.type_v = std::move(type_v);
    p.exact = exact;
    p.swa_full = swa_full;
    return p;
}

void register_engine(py::module_ & m) {
    m.def("default_threads", &default_n_threads, R"pbdoc(
        The CPU threads a context uses when n_threads is 0 (pyspec.default_threads): $PYSPEC_THREADS
        (InvalidParameterError unless a whole number >= 1), else the physical cores among the CPUs
        this process may run on (its affinity mask); hyperthreads of one core count once.
    )pbdoc");
    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine", R"pbdoc(
        A target context (KV cache) and the speculative decode loop.

        Arguments:
          model: the target pyspec._core.Model.
          n_ctx: context size in tokens.
          n_batch: prompt tokens per forward pass.
          n_threads: CPU threads (0: default_threads(): $PYSPEC_THREADS, else the physical cores of this
            process's CPU mask).
          flash_attn: -1 auto, 0 off, 1 on (exact mode forces its own choice).
          type_k, type_v: KV cache types ("f16", "q8_0", ...).
          exact: batch-invariant kernels (lossless speculation); False is faster and not exact.
          n_rs_seq: recurrent-state snapshots for rolling back hybrid targets (-1: 16 for those, else 0).
          swa_full: sliding-window layers keep every position (llama.cpp's swa_full); False (default):
            a ring of n_swa + n_batch cells per such layer, exact too (patches/0007).
    )pbdoc")
        .def(py::init([](std::shared_ptr<Model> model, uint32_t n_ctx, uint32_t n_batch, int32_t n_threads,
                         int32_t flash_attn, std::string type_k, std::string type_v, bool exact, int32_t n_rs_seq,
                         bool swa_full) {
                 ContextParams p = context_params(n_ctx, n_batch, n_threads, flash_attn, std::move(type_k),
                                                  std::move(type_v), exact, swa_full);
                 p.n_rs_seq = n_rs_seq;
                 py::gil_scoped_release nogil;
                 auto e = std::make_shared<Engine>(std::move(model), p);
                 e->should_stop = [] {
                     py::gil_scoped_acquire gil;
                     if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                     return false;
                 };
                 return e;
             }),
             py::arg("model"), py::arg("n_ctx") = 4096, py::arg("n_batch") = 512, py::arg("n_threads") = 0,
             py::arg("flash_attn") = -1, py::arg("type_k") = "f16", py::arg("type_v") = "f16",
             py::arg("exact") = true, py::arg("n_rs_seq") = -1, py::arg("swa_full") = false)
        .def("generate",
             [](Engine & e, const std::vector<llama_token> & prompt, py::object options,
                std::shared_ptr<Drafter> drafter, std::optional<py::function> on_step,
                std::optional<py::function> on_prompt, py::kwargs changes) {
                 const GenerateParams gp = generate_params(options, changes, "Engine.generate()");
                 StepCallback cb;
                 if (on_step) {
                     cb = [&on_step](const std::vector<llama_token> & toks, int32_t n_from_draft) {
                         py::gil_scoped_acquire gil;
                         py::object r = (*on_step)(toks, n_from_draft);
                         return r.is_none() || r.cast<bool>();
                     };
                 }
                 // for this call only: restored however it ends
                 struct Restore {
                     Engine & e;
                     std::function<void(size_t, size_t)> old;
                     ~Restore() { e.on_prompt_progress = std::move(old); }
                 } restore{e, e.on_prompt_progress};
                 if (on_prompt) {
                     e.on_prompt_progress = [&on_prompt](size_t done, size_t total) {
                         py::gil_scoped_acquire gil;
                         (*on_prompt)(done, total);
                     };
                 }
                 GenerateResult res;
                 {
                     py::gil_scoped_release nogil;
                     res = e.generate(prompt, gp, drafter.get(), cb);
                 }
                 py::dict d;
                 d["tokens"] = res.tokens;
                 d["stats"] = stats_to_dict(res.stats);
                 d["finish_reason"] = res.finish_reason;
                 return d;
             },
             py::arg("prompt"), py::arg("options") = py::none(), py::kw_only(), py::arg("drafter") = nullptr,
             py::arg("on_step") = py::none(), py::arg("on_prompt") = py::none(), R"pbdoc(
        Generates from prompt token ids; returns {'tokens', 'stats', 'finish_reason'}.

        Arguments:
          prompt: token ids.
          options: a pyspec.GenerationOptions (None: its defaults); the engine reads its
            sampling, draft-length and stop fields (spec_type, ngram_*, add_special and
            parse_special are LLM's: which drafter, how text is tokenized). seed None is 0.
          drafter: a pyspec._core drafter (None: plain decoding).
          on_step: called with (tokens, n_from_draft) after every step; False stops.
          on_prompt: called with (prompt tokens done, prompt tokens) after every prompt chunk
            (n_batch tokens; a reused prefix counts as done).
          **changes: GenerationOptions fields over `options`; n_predict is max_tokens.

        Example:
          >>> engine.generate(tokens, pyspec.GenerationOptions(max_tokens=32), drafter=d)
          >>> engine.generate(tokens, n_predict=32, draft_n_max=4, ignore_eos=True, drafter=d)
    )pbdoc")
        .def("reset", &Engine::reset, "Clears the memory.")
        .def("decode",
             [](Engine & e, const std::vector<llama_token> & tokens, int32_t chunk, bool all_logits) {
                 std::vector<float> out;
                 {
                     py::gil_scoped_release nogil;
                     out = e.decode(tokens, chunk, all_logits);
                 }
                 const size_t n_vocab = size_t(e.model()->n_vocab());
                 py::array_t<float> arr({out.size() / n_vocab, n_vocab});
                 std::copy(out.begin(), out.end(), arr.mutable_data());
                 return arr;
             },
             py::arg("tokens"), py::arg("chunk") = 512, py::arg("all_logits") = true,
             "Appends tokens to the memory in forward passes of at most `chunk` tokens; returns their logits.")
        .def("layer_inputs",
             [](Engine & e, const std::vector<llama_token> & tokens, const std::vector<int32_t> & layers,
                int32_t chunk) {
                 std::vector<float> out;
                 {
                     py::gil_scoped_release nogil;
                     out = e.layer_inputs(tokens, layers, chunk);
                 }
                 const size_t E = size_t(e.model()->n_embd());
                 py::array_t<float> arr({tokens.size(), layers.size(), E});
                 std::copy(out.begin(), out.end(), arr.mutable_data());
                 return arr;
             },
             py::arg("tokens"), py::arg("layers"), py::arg("chunk") = 0,
             "Appends tokens to the memory like decode() and returns the inputs of the target layers `layers` "
             "(layer-input ids: 0 = the token embeddings, k = the output of layer k - 1) for every token, in "
             "forward passes of `chunk` tokens (0: the batch size): float32 [n_tokens, len(layers), n_embd]. The features DFlash / EAGLE-3 drafters read.")
        .def("forward", [](Engine & e, const std::vector<llama_token> & tokens, bool argmax) -> py::object {
                 std::vector<llama_token> picks;
                 {
                     py::gil_scoped_release nogil;
                     picks = e.forward(tokens, argmax);
                 }
                 if (!argmax) return py::none();
                 return py::cast(picks);
             }, py::arg("tokens"), py::arg("argmax") = false,
             "One synchronized forward pass with logits for every token (timing: the verify step's cost). "
             "argmax=False: every logits row is copied to the host, returns None; argmax=True: returns each "
             "row's greedy pick, taken as a greedy verify takes it (on the device where it can).")
        .def("rollback", [](Engine & e, int32_t n_keep) { py::gil_scoped_release nogil; e.rollback(n_keep); },
             py::arg("n_keep"), "Keeps the first n_keep positions of the memory.")
        .def_readwrite("reuse_prefix", &Engine::reuse_prefix,
                       "generate() keeps the memory's longest prefix shared with the new prompt (all but its last "
                       "token) and prefills only the rest, where that gives the logits of a fresh prefill (exact "
                       "kernels, no feature-reading drafter, no recurrent state, the sliding window still in the "
                       "cache); stats['prompt_n'] counts the tokens computed. Off by default.")
        .def_property_readonly("n_prompt_reused", &Engine::n_prompt_reused,
                               "Prompt tokens the last generate() kept from the memory (reuse_prefix).")
        .def("set_n_threads", [](Engine & e, int32_t n) { e.set_n_threads(n); }, py::arg("n_threads"),
             "Sets the CPU threads of the target context for the next forward passes.")
        .def_readwrite("force_checkpoints", &Engine::force_checkpoints,
                       "Roll back via state checkpoints even where positions could be dropped (testing).")
        .def("interrupt", &Engine::interrupt,
             "Asks the running generate() (in another thread) to stop at its next step or prompt chunk: it "
             "returns with finish_reason 'interrupted', or raises GenerationInterrupted while still in the "
             "prompt. Each generate() drops an earlier request.")
        .def_property_readonly("exported_features", [](const Engine & e) {
                 py::dict d;
                 d["hidden"] = e.exported_features().hidden;
                 d["layer_inputs"] = e.exported_features().layer_inputs;
                 return d;
             }, "What the target context computes for the drafter of the last generation besides the logits: "
                "{'hidden': every row's last hidden state (mtp), 'layer_inputs': layer ids (eagle3, dflash)}.")
        .def_property_readonly("checkpoint_bytes", &Engine::checkpoint_bytes,
                               "Bytes of the last recurrent-state checkpoint (0: none taken).")
        .def_property_readonly("n_past", &Engine::n_past)
        .def_property_readonly("n_ctx", &Engine::n_ctx,
                               "The context size: the n_ctx asked for, rounded up to a multiple of 256 by llama.cpp.")
        .def_property_readonly("exact", [](const Engine & e) { return e.params().exact; })
        .def("memory", [](const Engine & e) {
                 const ContextMemory m = e.memory();
                 py::dict r;
                 r["kv_bytes"] = m.kv_bytes;
                 r["compute_bytes"] = m.compute_bytes;
                 return r;
             }, "Bytes of the target context: KV cache (recurrent state included) and compute buffers.")
        .def("memory_by_buffer", [](const Engine & e) {
                 py::list out;
                 for (const BufferMemory & b : context_memory_by_buffer(e.ctx())) {
                     py::dict d;
                     d["buffer"] = b.buffer;
                     d["device"] = b.device;
                     d["host"] = b.host;
                     d["model_bytes"] = b.model;
                     d["context_bytes"] = b.context;
                     d["compute_bytes"] = b.compute;
                     out.append(d);
                 }
                 return out;
             }, "llama.cpp's breakdown of the target context by buffer type (one per device, plus host "
                "buffers): the target's weights (model), KV cache and recurrent state (context) and compute "
                "buffers, in bytes; simulated on a no_alloc model. memory() sums the last two.")
        .def("device_argmax_available", &Engine::device_argmax_available,
             "Whether greedy generations take the argmax on the GPU (offloaded model; PYSPEC_DEVICE_ARGMAX=0: off, =1: on, also on the CPU backend).")
        .def_property_readonly("n_threads", &Engine::n_threads, "The CPU threads of the target context.")
        .def_property_readonly("model", &Engine::model);
}

}  // namespace pyspec
