// Shared declarations of the binding files.
#pragma once
#include <pybind11/pybind11.h>

namespace pyspec {
namespace py = pybind11;
void register_errors(py::module_ & m);
void register_model(py::module_ & m);
void register_verify(py::module_ & m);
void register_drafters(py::module_ & m);
void register_engine(py::module_ & m);
void register_build_info(py::module_ & m);
}  // namespace pyspec
