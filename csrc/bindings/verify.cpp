// Binds the pure functions (sampling, verifier, n-gram matcher) for unit tests.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "drafters/ngram.h"
#include "engine/error.h"
#include "verify/verify.h"

namespace pyspec {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

static SamplingParams make_params(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed) {
    SamplingParams p{temperature, top_k, top_p, min_p, seed};
    validate(p);
    return p;
}

void register_verify(py::module_ & m) {
    m.def("sample_token", [](FloatArray logits, float temperature, int32_t top_k, float top_p, float min_p,
                             uint64_t seed, uint64_t pos) {
              if (logits.ndim() != 1) throw InvalidParameterError("logits must be 1-D [n_vocab]");
              return sample_token(logits.data(), int32_t(logits.shape(0)),
                                  make_params(temperature, top_k, top_p, min_p, seed), pos);
          }, py::arg("logits"), py::arg("temperature") = 0.0f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f,
          py::arg("min_p") = 0.05f, py::arg("seed") = 0, py::arg("pos") = 0,
          "The token the engine samples at absolute position `pos` from one row of logits.");
    m.def("sampling_distribution", [](FloatArray logits, float temperature, int32_t top_k, float top_p,
                                      float min_p) {
              if (logits.ndim() != 1) throw InvalidParameterError("logits must be 1-D [n_vocab]");
              Candidates c = sampling_distribution(logits.data(), int32_t(logits.shape(0)),
                                                   make_params(temperature, top_k, top_p, min_p, 0));
              return py::make_tuple(c.ids, c.probs);
          }, py::arg("logits"), py::arg("temperature") = 0.0f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f,
          py::arg("min_p") = 0.05f, "(token ids, probabilities) of the truncated, tempered distribution.");
    m.def("verify_accept_if_equal", [](FloatArray logits, const std::vector<llama_token> & draft, float temperature,
                                       int32_t top_k, float top_p, float min_p, uint64_t seed, uint64_t pos0) {
              if (logits.ndim() != 2 || size_t(logits.shape(0)) != draft.size() + 1)
                  throw InvalidParameterError("logits must be [len(draft) + 1, n_vocab]");
              VerifyResult r = verify_accept_if_equal(logits.data(), int32_t(logits.shape(1)), draft,
                                                      make_params(temperature, top_k, top_p, min_p, seed), pos0);
              return py::make_tuple(r.n_accepted, r.tokens);
          }, py::arg("logits"), py::arg("draft"), py::arg("temperature") = 0.0f, py::arg("top_k") = 40,
          py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f, py::arg("seed") = 0, py::arg("pos0") = 0,
          "Verifies a draft: (n_accepted, accepted drafts + bonus token).");
    m.def("ngram_lookup", [](const std::vector<llama_token> & history, int32_t n, int32_t n_min, int32_t n_max) {
              return ngram_lookup(history, NgramParams{n, n_min}, n_max);
          }, py::arg("history"), py::arg("n") = 3, py::arg("n_min") = 1, py::arg("n_max") = 16,
          "The n-gram drafter's proposal for `history`.");
}

}  // namespace pyspec
