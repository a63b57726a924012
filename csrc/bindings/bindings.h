// Shared declarations of the binding files.
#pragma once
#include <pybind11/pybind11.h>

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
}  // namespace pyspec
