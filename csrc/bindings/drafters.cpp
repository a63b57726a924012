// Binds the drafters the engine can be given.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "engine/context.h"
#include "drafters/draft_model.h"
#include "drafters/dflash.h"
#include "drafters/eagle3.h"
#include "drafters/mtp.h"
#include "drafters/ngram.h"
#include "engine/error.h"

namespace pyspec {

namespace {
// A drafter written in Python: subclass pyspec._core.Drafter and define
// begin(prompt), draft(n_max) -> list of token ids, accept(n_accepted, emitted),
// and optionally observe(tokens, pos0, prompt).
// The engine calls it with the GIL released; each call takes the GIL back.
class PyDrafter : public Drafter {
public:
    std::string name() const override { return "python"; }
    void begin(const std::vector<llama_token> & prompt) override { call("begin", prompt); }
    void observe(const TargetOutputs & out) override {
        py::gil_scoped_acquire gil;
        py::function f = py::get_override(static_cast<const Drafter *>(this), "observe");
        if (f) f(std::vector<llama_token>(out.tokens, out.tokens + out.n_tokens), out.pos0, out.prompt);
    }
    Draft draft(int32_t n_max) override {
        py::gil_scoped_acquire gil;
        Draft d;
        d.tokens = call_locked("draft", n_max).cast<std::vector<llama_token>>();
        return d;
    }
    void accept(int32_t n_accepted, const std::vector<llama_token> & emitted) override {
        call("accept", n_accepted, emitted);
    }

private:
    template <typename... Args> py::object call_locked(const char * fn, Args &&... args) const {
        py::function f = py::get_override(static_cast<const Drafter *>(this), fn);
        if (!f) throw Error(std::string("a Python drafter must define ") + fn + "()");
        return f(std::forward<Args>(args)...);
    }
    template <typename... Args> void call(const char * fn, Args &&... args) const {
        py::gil_scoped_acquire gil;
        call_locked(fn, std::forward<Args>(args)...);
    }
};
}  // namespace

void register_drafters(py::module_ & m) {
    py::class_<Drafter, PyDrafter, std::shared_ptr<Drafter>>(m, "Drafter", R"pbdoc(
        Base class of the engine's drafters. Subclass it in Python to write a
        drafter: define begin(prompt), draft(n_max) -> list[int] and
        accept(n_accepted, emitted), and call Drafter.__init__(self).
        Optionally define observe(tokens, pos0, prompt): called after every
        prompt chunk (prompt=True) and after each verification with the rows
        of the verify batch that the target kept (the last committed token,
        then the accepted drafts), at positions pos0...
    )pbdoc")
        .def(py::init<>())
        .def_property_readonly("name", &Drafter::name)
        // Direct access for tests and tools; the engine calls these itself.
        .def("begin", &Drafter::begin, py::arg("prompt"))
        .def("draft", [](Drafter & d, int32_t n_max) { return d.draft(n_max).tokens; }, py::arg("n_max"))
        .def("accept", &Drafter::accept, py::arg("n_accepted"), py::arg("emitted"));
    py::class_<NgramDrafter, Drafter, std::shared_ptr<NgramDrafter>>(m, "NgramDrafter", R"pbdoc(
        Prompt-lookup drafter: proposes the tokens that followed the latest
        earlier occurrence of the last `n` tokens (then n-1, ..., n_min).
    )pbdoc")
        .def(py::init([](int32_t n, int32_t n_min, bool adaptive) {
                 return std::make_shared<NgramDrafter>(NgramParams{n, n_min, adaptive});
             }),
             py::arg("n") = 3, py::arg("n_min") = 3, py::arg("adaptive") = true);
    py::class_<DraftModelDrafter, Drafter, std::shared_ptr<DraftModelDrafter>>(m, "DraftModelDrafter", R"pbdoc(
        Drafts with a separate GGUF model sharing the target's vocabulary
        (checked: VocabMismatchError names the first difference).
    )pbdoc")
        .def(py::init([](std::shared_ptr<Model> draft, const Model & target, uint32_t n_ctx, int32_t n_threads,
                         float p_min, bool exact, int32_t flash_attn, std::string type_k, std::string type_v) {
                 py::gil_scoped_release nogil;
                 return std::make_shared<DraftModelDrafter>(
                     std::move(draft), target,
                     DraftModelParams{n_ctx, n_threads, p_min, exact, flash_attn, std::move(type_k), std::move(type_v)});
             }),
             py::arg("draft"), py::arg("target"), py::arg("n_ctx") = 4096, py::arg("n_threads") = 0,
             py::arg("p_min") = 0.0f, py::arg("exact") = true, py::arg("flash_attn") = -1,
             py::arg("type_k") = "f16", py::arg("type_v") = "f16",
             py::keep_alive<1, 2>())
        .def_property_readonly("n_threads", &DraftModelDrafter::n_threads, "The CPU threads of the drafter's context.")
        .def("memory", [](const DraftModelDrafter & d) {
                 const ContextMemory m = d.memory();
                 py::dict r;
                 r["kv_bytes"] = m.kv_bytes;
                 r["compute_bytes"] = m.compute_bytes;
                 r["buffer_bytes"] = size_t(0);
                 r["buffer_bytes_used"] = size_t(0);
                 return r;
             }, "Bytes of the draft model's context (its weights are the Model's).");

    auto head_params = [](int32_t n_threads, float p_min, int32_t flash_attn, uint32_t window,
                          const std::string & type_k, const std::string & type_v) {
        HeadParams p;
        p.n_threads = n_threads;
        p.p_min = p_min;
        p.flash_attn = flash_attn;
        p.window = window;
        p.type_k = kv_type_from_name(type_k);
        p.type_v = kv_type_from_name(type_v);
        return p;
    };
    py::class_<FeatureDrafter, Drafter, std::shared_ptr<FeatureDrafter>>(m, "FeatureDrafter", R"pbdoc(
        Base of the drafters that read the target's hidden states (mtp,
        eagle3, dflash). They are bound to one Engine (its context captures
        the features they read) and run a second llama.cpp context.
    )pbdoc")
        .def("memory", [](const FeatureDrafter & d) {
                 const DraftMemory m = d.memory();
                 py::dict r;
                 r["kv_bytes"] = m.kv_bytes;
                 r["compute_bytes"] = m.compute_bytes;
                 r["buffer_bytes"] = m.buffer_bytes;
                 r["buffer_bytes_used"] = m.buffer_bytes_used;
                 return r;
             }, "Bytes the drafter holds beyond its weights: its KV cache and host feature buffers.")
        .def_property_readonly("engine", &FeatureDrafter::target);
    py::class_<MtpDrafter, FeatureDrafter, std::shared_ptr<MtpDrafter>>(m, "MtpDrafter", R"pbdoc(
        Drafts with the target's own MTP (next-token-prediction) layers; the
        engine's Model must be loaded with load_mtp=True.
    )pbdoc")
        .def(py::init([head_params](std::shared_ptr<Engine> engine, int32_t n_threads, float p_min, int32_t flash_attn,
                                    const std::string & type_k, const std::string & type_v) {
                 HeadParams p = head_params(n_threads, p_min, flash_attn, 0, type_k, type_v);
                 py::gil_scoped_release nogil;
                 return std::make_shared<MtpDrafter>(std::move(engine), p);
             }),
             py::arg("engine"), py::arg("n_threads") = 0, py::arg("p_min") = 0.0f, py::arg("flash_attn") = -1,
             py::arg("type_k") = "f16", py::arg("type_v") = "f16");
    py::class_<Eagle3Drafter, FeatureDrafter, std::shared_ptr<Eagle3Drafter>>(m, "Eagle3Drafter", R"pbdoc(
        Drafts with an EAGLE-3 head (GGUF architecture eagle3) built for the
        engine's target; DraftMismatchError / VocabMismatchError otherwise.
    )pbdoc")
        .def(py::init([head_params](std::shared_ptr<Engine> engine, std::shared_ptr<Model> head, int32_t n_threads,
                                    float p_min, int32_t flash_attn, const std::string & type_k, const std::string & type_v) {
                 HeadParams p = head_params(n_threads, p_min, flash_attn, 0, type_k, type_v);
                 py::gil_scoped_release nogil;
                 return std::make_shared<Eagle3Drafter>(std::move(engine), std::move(head), p);
             }),
             py::arg("engine"), py::arg("head"), py::arg("n_threads") = 0, py::arg("p_min") = 0.0f,
             py::arg("flash_attn") = -1, py::arg("type_k") = "f16", py::arg("type_v") = "f16");
    py::class_<DFlashDrafter, FeatureDrafter, std::shared_ptr<DFlashDrafter>>(m, "DFlashDrafter", R"pbdoc(
        Drafts a block per forward with a DFlash drafter (GGUF architecture
        dflash) built for the engine's target; its memory keeps the features
        of the last `window` target positions (0: the whole context).
    )pbdoc")
        .def(py::init([head_params](std::shared_ptr<Engine> engine, std::shared_ptr<Model> drafter, int32_t n_threads,
                                    float p_min, int32_t flash_attn, uint32_t window, bool all_outputs,
                                    const std::string & type_k, const std::string & type_v) {
                 HeadParams p = head_params(n_threads, p_min, flash_attn, window, type_k, type_v);
                 p.all_outputs = all_outputs;
                 py::gil_scoped_release nogil;
                 return std::make_shared<DFlashDrafter>(std::move(engine), std::move(drafter), p);
             }),
             py::arg("engine"), py::arg("drafter"), py::arg("n_threads") = 0, py::arg("p_min") = 0.0f,
             py::arg("flash_attn") = -1, py::arg("window") = 0, py::arg("all_outputs") = false,
             py::arg("type_k") = "f16", py::arg("type_v") = "f16",
             "all_outputs: read the block through every row up to the last one used (a check of the "
             "row mapping; slower)")
        .def_property_readonly("block_size", &DFlashDrafter::block_size)
        .def_property_readonly("window", &DFlashDrafter::window);
    m.def("check_head_compatible", [](const Model & target, const Model & draft) {
              check_head_compatible(target, draft);
          }, py::arg("target"), py::arg("draft"),
          "Raises DraftMismatchError / VocabMismatchError unless `draft` (eagle3 or dflash) was built for `target`.");
}

}  // namespace pyspec
