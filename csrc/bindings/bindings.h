// Shared declarations of the binding files.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "engine/engine.h"
#include "engine/stats.h"

namespace pyspec {
namespace py = pybind11;
void register_errors(py::module_ & m);
void register_model(py::module_ & m);
void register_verify(py::module_ & m);
void register_drafters(py::module_ & m);
void register_engine(py::module_ & m);
void register_batch_engine(py::module_ & m);
void register_build_info(py::module_ & m);

// Shared by the engine bindings (engine.cpp): Stats as a dict, and pyspec.GenerationOptions
// (`options` or its defaults, with `changes`) as GenerateParams; `where` names the caller.
py::dict stats_to_dict(const Stats & s);
GenerateParams generate_params(py::object options, py::kwargs changes, const char * where);
// The context arguments of the Engine and BatchEngine constructors (Engine adds n_rs_seq).
ContextParams context_params(uint32_t n_ctx, uint32_t n_batch, int32_t n_threads, int32_t flash_attn,
                             std::string type_k, std::string type_v, bool exact, bool swa_full);
}  // namespace pyspec
