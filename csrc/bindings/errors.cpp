// Maps the C++ exceptions of engine/error.h onto pyspec.errors' classes.
#include "bindings/bindings.h"
#include "engine/error.h"

#include <string>

#include "ggml-rpc.h"

namespace pyspec {

static void raise_as(const char * cls, const std::exception & e) {
    py::object errors = py::module_::import("pyspec.errors");
    PyErr_SetString(errors.attr(cls).ptr(), e.what());
}

void register_errors(py::module_ &) {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelLoadError & e) {
            raise_as("ModelLoadError", e);
        } catch (const VocabMismatchError & e) {
            raise_as("VocabMismatchError", e);
        } catch (const DraftMismatchError & e) {
            raise_as("DraftMismatchError", e);
        } catch (const ContextOverflowError & e) {
            raise_as("ContextOverflowError", e);
        } catch (const InvalidParameterError & e) {
            raise_as("InvalidParameterError", e);
        } catch (const UnsupportedError & e) {
            raise_as("UnsupportedError", e);
        } catch (const DecodeError & e) {
            raise_as("DecodeError", e);
        } catch (const Interrupted & e) {
            raise_as("GenerationInterrupted", e);
        } catch (const Error & e) {
            raise_as("PyspecError", e);
        } catch (const ggml_rpc_error & e) {
            // llama.cpp's RPC backend lost its server outside a forward (a cache clear, a tensor read;
            // patch 0011 throws there instead of aborting): the model's backend is gone
            py::object errors = py::module_::import("pyspec.errors");
            PyErr_SetString(errors.attr("DecodeError").ptr(),
                            (std::string(e.what()) + ". The context's memory is undefined now: make a new LLM once "
                             "the server is back").c_str());
        }
    });
}

}  // namespace pyspec
