// Binds the drafters the engine can be given.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "drafters/draft_model.h"
#include "drafters/ngram.h"

namespace pyspec {

void register_drafters(py::module_ & m) {
    py::class_<Drafter, std::shared_ptr<Drafter>>(m, "Drafter", "Base class of the engine's drafters.")
        .def_property_readonly("name", &Drafter::name);
    py::class_<NgramDrafter, Drafter, std::shared_ptr<NgramDrafter>>(m, "NgramDrafter", R"pbdoc(
        Prompt-lookup drafter: proposes the tokens that followed the latest
        earlier occurrence of the last `n` tokens (then n-1, ..., n_min).
    )pbdoc")
        .def(py::init([](int32_t n, int32_t n_min) { return std::make_shared<NgramDrafter>(NgramParams{n, n_min}); }),
             py::arg("n") = 3, py::arg("n_min") = 3);
    py::class_<DraftModelDrafter, Drafter, std::shared_ptr<DraftModelDrafter>>(m, "DraftModelDrafter", R"pbdoc(
        Drafts with a separate GGUF model sharing the target's vocabulary
        (checked: VocabMismatchError names the first difference).
    )pbdoc")
        .def(py::init([](std::shared_ptr<Model> draft, const Model & target, uint32_t n_ctx, int32_t n_threads,
                         float p_min, bool exact, int32_t flash_attn) {
                 py::gil_scoped_release nogil;
                 return std::make_shared<DraftModelDrafter>(std::move(draft), target,
                                                            DraftModelParams{n_ctx, n_threads, p_min, exact, flash_attn});
             }),
             py::arg("draft"), py::arg("target"), py::arg("n_ctx") = 4096, py::arg("n_threads") = 0,
             py::arg("p_min") = 0.0f, py::arg("exact") = true, py::arg("flash_attn") = -1,
             py::keep_alive<1, 2>());
}

}  // namespace pyspec
