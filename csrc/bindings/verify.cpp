// Binds the pure functions (sampling, verifiers, n-gram matcher) and the
// verifier's test harness, for unit tests.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "bindings/bindings.h"
#include "drafters/ngram.h"
#include "engine/error.h"
#include "verify/markov_harness.h"
#include "verify/rejection.h"
#include "verify/verify.h"

namespace pyspec {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

static SamplingParams make_params(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed,
                                  float repeat_penalty, float frequency_penalty, float presence_penalty,
                                  int32_t penalty_last_n) {
    SamplingParams p{temperature, top_k, top_p, min_p, seed,
                     repeat_penalty, frequency_penalty, presence_penalty, penalty_last_n};
    validate(p);
    return p;
}

// A dense probability vector as Candidates: the nonzero entries, by
// descending probability (ties: lower id first), as sampling_distribution orders them.
static Candidates to_candidates(const double * probs, size_t n, const char * what) {
    Candidates c;
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) {
        if (!(probs[i] >= 0.0) || !std::isfinite(probs[i]))
            throw InvalidParameterError(std::string(what) + ": probabilities must be finite and >= 0");
        sum += probs[i];
        if (probs[i] > 0.0) c.ids.push_back(llama_token(i));
    }
    if (std::fabs(sum - 1.0) > 1e-9)
        throw InvalidParameterError(std::string(what) + ": probabilities must sum to 1, got " + std::to_string(sum));
    std::stable_sort(c.ids.begin(), c.ids.end(), [&](llama_token a, llama_token b) { return probs[a] > probs[b]; });
    for (llama_token t : c.ids) c.probs.push_back(probs[t]);
    return c;
}

static DoubleArray to_dense(const Candidates & c, size_t n) {
    DoubleArray out(n);
    std::fill(out.mutable_data(), out.mutable_data() + n, 0.0);
    for (size_t i = 0; i < c.size(); ++i) out.mutable_data()[c.ids[i]] = c.probs[i];
    return out;
}

static Candidates optional_q(const std::optional<DoubleArray> & q, size_t n) {
    if (!q) return {};
    if (q->ndim() != 1 || size_t(q->shape(0)) != n) throw InvalidParameterError("q must be 1-D like p");
    return to_candidates(q->data(), n, "q");
}

static MarkovChain to_chain(const DoubleArray & p0, const DoubleArray & P, const char * what) {
    if (p0.ndim() != 1 || P.ndim() != 2 || P.shape(0) != p0.shape(0) || P.shape(1) != p0.shape(0))
        throw InvalidParameterError(std::string(what) + ": need an initial [V] and a transition table [V, V]");
    const size_t v = size_t(p0.shape(0));
    MarkovChain c;
    c.initial = to_candidates(p0.data(), v, what);
    for (size_t i = 0; i < v; ++i) c.next.push_back(to_candidates(P.data() + i * v, v, what));
    return c;
}

static MarkovSpec make_spec(const DoubleArray & p0, const DoubleArray & P, const DoubleArray & q0,
                            const DoubleArray & Q, int32_t draft_n, int32_t n_tokens, bool draft_onehot, bool wrong) {
    MarkovSpec s;
    s.n_vocab = int32_t(p0.shape(0));
    if (s.n_vocab > 16 || n_tokens > 4) throw InvalidParameterError("markov harness: at most 16 tokens, 4 positions");
    s.target = to_chain(p0, P, "target");
    s.draft = to_chain(q0, Q, "draft");
    if (q0.shape(0) != p0.shape(0)) throw InvalidParameterError("target and draft need the same vocabulary");
    s.draft_n = draft_n;
    s.n_tokens = n_tokens;
    s.draft_onehot = draft_onehot;
    s.wrong = wrong;
    return s;
}

template <typename T>
static py::array_t<T> shaped(const std::vector<T> & v, int32_t n_vocab, int32_t n_tokens) {
    std::vector<py::ssize_t> shape(static_cast<size_t>(n_tokens), static_cast<py::ssize_t>(n_vocab));
    py::array_t<T> out(shape);
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

// the sampler chain's keyword arguments, shared by every function below
#define SAMPLING_ARGS                                                                                             \
    py::arg("temperature") = 0.0f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,    \
        py::arg("seed") = 0, py::arg("repeat_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f,               \
        py::arg("presence_penalty") = 0.0f, py::arg("penalty_last_n") = 64
#define SAMPLING_PARAMS                                                                                           \
    float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed, float repeat_penalty,              \
        float frequency_penalty, float presence_penalty, int32_t penalty_last_n
#define MAKE_PARAMS                                                                                               \
    make_params(temperature, top_k, top_p, min_p, seed, repeat_penalty, frequency_penalty, presence_penalty,      \
                penalty_last_n)

void register_verify(py::module_ & m) {
    m.def("sample_token", [](FloatArray logits, SAMPLING_PARAMS, uint64_t pos, const std::vector<llama_token> & context) {
              if (logits.ndim() != 1) throw InvalidParameterError("logits must be 1-D [n_vocab]");
              return sample_token(logits.data(), int32_t(logits.shape(0)), MAKE_PARAMS, pos, context.data(),
                                  context.size());
          }, py::arg("logits"), SAMPLING_ARGS, py::arg("pos") = 0, py::arg("context") = std::vector<llama_token>{},
          "The token the engine samples at absolute position `pos` from one row of logits; `context`: the "
          "tokens before it (what the penalties read).");
    m.def("sampling_distribution", [](FloatArray logits, SAMPLING_PARAMS, const std::vector<llama_token> & context) {
              if (logits.ndim() != 1) throw InvalidParameterError("logits must be 1-D [n_vocab]");
              Candidates c = sampling_distribution(logits.data(), int32_t(logits.shape(0)), MAKE_PARAMS,
                                                   context.data(), context.size());
              return py::make_tuple(c.ids, c.probs);
          }, py::arg("logits"), SAMPLING_ARGS, py::arg("context") = std::vector<llama_token>{},
          "(token ids, probabilities) of the penalized, truncated, tempered distribution.");
    m.def("verify_accept_if_equal", [](FloatArray logits, const std::vector<llama_token> & draft, SAMPLING_PARAMS,
                                       uint64_t pos0, const std::vector<llama_token> & history) {
              if (logits.ndim() != 2 || size_t(logits.shape(0)) != draft.size() + 1)
                  throw InvalidParameterError("logits must be [len(draft) + 1, n_vocab]");
              VerifyResult r = verify_accept_if_equal(logits.data(), int32_t(logits.shape(1)), draft, MAKE_PARAMS,
                                                      pos0, history);
              return py::make_tuple(r.n_accepted, r.tokens);
          }, py::arg("logits"), py::arg("draft"), SAMPLING_ARGS, py::arg("pos0") = 0,
          py::arg("history") = std::vector<llama_token>{},
          "Accept-if-equal: (n_accepted, accepted drafts + bonus token). history: the committed tokens.");
    m.def("verify_rejection", [](FloatArray logits, const std::vector<llama_token> & draft,
                                 std::optional<std::vector<std::optional<std::pair<std::vector<llama_token>,
                                                                                   std::vector<double>>>>> q,
                                 SAMPLING_PARAMS, uint64_t pos0, const std::vector<llama_token> & history) {
              if (logits.ndim() != 2 || size_t(logits.shape(0)) != draft.size() + 1)
                  throw InvalidParameterError("logits must be [len(draft) + 1, n_vocab]");
              std::vector<Candidates> qs;
              if (q) {
                  if (q->size() != draft.size()) throw InvalidParameterError("q needs one entry per draft token");
                  for (const auto & e : *q) {
                      Candidates c;
                      if (e) {
                          if (e->first.size() != e->second.size())
                              throw InvalidParameterError("q entries are (ids, probs) of equal length");
                          c.ids = e->first;
                          c.probs = e->second;
                      }
                      qs.push_back(std::move(c));
                  }
              }
              VerifyResult r = verify_rejection(logits.data(), int32_t(logits.shape(1)), draft, qs, MAKE_PARAMS, pos0,
                                                history);
              return py::make_tuple(r.n_accepted, r.tokens);
          }, py::arg("logits"), py::arg("draft"), py::arg("q") = py::none(), SAMPLING_ARGS, py::arg("pos0") = 0,
          py::arg("history") = std::vector<llama_token>{},
          "Rejection sampling: (n_accepted, accepted drafts + resampled/bonus token). q: per draft token "
          "(ids, probs) of the drafter's distribution, or None (one-hot).");

    // ---- the per-position step on dense distributions ----
    m.def("acceptance_probability", [](DoubleArray p, llama_token x, std::optional<DoubleArray> q) {
              const size_t n = size_t(p.shape(0));
              return acceptance_probability(to_candidates(p.data(), n, "p"), x, optional_q(q, n));
          }, py::arg("p"), py::arg("x"), py::arg("q") = py::none(), "min(1, p(x)/q(x)) (q None: one-hot at x).");
    m.def("residual_distribution", [](DoubleArray p, std::optional<DoubleArray> q, llama_token x) {
              const size_t n = size_t(p.shape(0));
              return to_dense(residual_distribution(to_candidates(p.data(), n, "p"), optional_q(q, n), x), n);
          }, py::arg("p"), py::arg("q") = py::none(), py::arg("x") = -1,
          "norm(max(0, p - q)) as a dense vector (q None: one-hot at x; p when the residual has no mass).");
    m.def("rejection_step", [](DoubleArray p, llama_token x, std::optional<DoubleArray> q, uint64_t seed, uint64_t pos) {
              const size_t n = size_t(p.shape(0));
              CounterRandomness rng(seed);
              StepOutcome o = rejection_step(to_candidates(p.data(), n, "p"), x, optional_q(q, n), pos, rng);
              return py::make_tuple(o.accepted, o.token);
          }, py::arg("p"), py::arg("x"), py::arg("q") = py::none(), py::arg("seed") = 0, py::arg("pos") = 0,
          "One accept/resample decision: (accepted, token).");

    // ---- the Markov-chain harness (tests) ----
    m.def("rejection_exact", [](DoubleArray p0, DoubleArray P, DoubleArray q0, DoubleArray Q, int32_t draft_n,
                                int32_t n_tokens, bool draft_onehot, bool wrong) {
              MarkovSpec s = make_spec(p0, P, q0, Q, draft_n, n_tokens, draft_onehot, wrong);
              std::vector<double> v;
              {
                  py::gil_scoped_release nogil;
                  v = markov_exact(s);
              }
              return shaped(v, s.n_vocab, s.n_tokens);
          }, py::arg("p0"), py::arg("P"), py::arg("q0"), py::arg("Q"), py::arg("draft_n") = 2, py::arg("n_tokens") = 2,
          py::arg("draft_onehot") = false, py::arg("wrong") = false,
          "Exact distribution [V]*n_tokens of the first tokens emitted by speculative sampling, target a Markov "
          "chain (p0, P), drafter another (q0, Q). draft_onehot: the drafter proposes argmax q without q; "
          "wrong: the negative control (resample from p, not the residual).");
    m.def("rejection_counts", [](DoubleArray p0, DoubleArray P, DoubleArray q0, DoubleArray Q, int32_t draft_n,
                                 int32_t n_tokens, uint64_t n_runs, uint64_t seed0, bool draft_onehot, bool wrong) {
              MarkovSpec s = make_spec(p0, P, q0, Q, draft_n, n_tokens, draft_onehot, wrong);
              std::vector<int64_t> v;
              {
                  py::gil_scoped_release nogil;
                  v = markov_counts(s, n_runs, seed0);
              }
              return shaped(v, s.n_vocab, s.n_tokens);
          }, py::arg("p0"), py::arg("P"), py::arg("q0"), py::arg("Q"), py::arg("draft_n") = 2, py::arg("n_tokens") = 2,
          py::arg("n_runs") = 200000, py::arg("seed0") = 0, py::arg("draft_onehot") = false, py::arg("wrong") = false,
          "Like rejection_exact, but counts over n_runs runs with seeds seed0, seed0 + 1, ...");

    m.def("ngram_lookup", [](const std::vector<llama_token> & history, int32_t n, int32_t n_min, int32_t n_max) {
              return ngram_lookup(history, NgramParams{n, n_min}, n_max);
          }, py::arg("history"), py::arg("n") = 3, py::arg("n_min") = 1, py::arg("n_max") = 16,
          "The n-gram drafter's proposal for `history`.");
}

}  // namespace pyspec
