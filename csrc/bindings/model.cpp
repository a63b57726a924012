// Binds pyspec::Model (a loaded GGUF) and the metadata helpers.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "engine/model.h"
#include "engine/rpc.h"

namespace pyspec {

void register_model(py::module_ & m) {
    py::class_<Model, std::shared_ptr<Model>>(m, "Model", R"pbdoc(
        A GGUF model loaded by llama.cpp (weights only; contexts live in Engine).

        Arguments:
          path: the GGUF file.
          n_gpu_layers: layers to offload to a GPU (-1: all).
          repack: allow weight repacking (faster, not batch-invariant).
          use_mmap: map the file instead of reading it.
          load_mtp: also load the MTP ("nextn") layers, for the mtp drafter.
          no_alloc: metadata only, allocations simulated: contexts made on it
            report their memory (Engine.memory) but cannot run.
          rpc: llama.cpp RPC servers ("host:port"): the offloaded layers live on their devices.
    )pbdoc")
        .def(py::init([](const std::string & path, int32_t n_gpu_layers, bool repack, bool use_mmap, bool load_mtp,
                         bool no_alloc, const std::vector<std::string> & rpc) {
                 ModelParams p;
                 p.rpc = rpc;
                 p.n_gpu_layers = n_gpu_layers;
                 p.repack = repack;
                 p.use_mmap = use_mmap;
                 p.load_mtp = load_mtp;
                 p.no_alloc = no_alloc;
                 py::gil_scoped_release nogil;
                 return std::make_shared<Model>(path, p);
             }),
             py::arg("path"), py::arg("n_gpu_layers") = 0, py::arg("repack") = false, py::arg("use_mmap") = true,
             py::arg("load_mtp") = false, py::arg("no_alloc") = false, py::arg("rpc") = std::vector<std::string>{})
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_ctx_train", &Model::n_ctx_train)
        .def_property_readonly("n_embd", &Model::n_embd)
        .def_property_readonly("n_layer", &Model::n_layer)
        .def_property_readonly("n_layer_nextn", &Model::n_layer_nextn,
                               "MTP layers loaded (0 unless loaded with load_mtp=True)")
        .def_property_readonly("arch", &Model::arch)
        .def_property_readonly("size_bytes", &Model::size_bytes, "Bytes of the loaded weights.")
        .def_property_readonly("repack", [](const Model & mdl) { return mdl.params().repack; })
        .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special") = true,
             py::arg("parse_special") = false, "Text to token ids.")
        .def("token_to_bytes", [](const Model & mdl, llama_token t, bool special) {
                 return py::bytes(mdl.token_to_piece(t, special));
             }, py::arg("token"), py::arg("special") = false, "The bytes of one token (may be a partial UTF-8 character).")
        .def("detokenize", [](const Model & mdl, const std::vector<llama_token> & toks, bool special) {
                 return py::bytes(mdl.detokenize(toks, special));
             }, py::arg("tokens"), py::arg("special") = false, "Token ids to bytes.")
        .def("is_eog", &Model::is_eog, py::arg("token"), "True for end-of-generation tokens.")
        .def("apply_chat_template", &Model::apply_chat_template, py::arg("messages"),
             py::arg("add_assistant") = true, py::arg("template") = "",
             "Formats [(role, content), ...] with a chat template (default: the GGUF's own).")
        .def("meta", &Model::meta, py::arg("key"), "A metadata value as text, '' when absent.");

    m.def("model_info", [](const std::string & path) {
              py::gil_scoped_release nogil;
              return model_info(path);
          }, py::arg("path"), "Reads a GGUF's metadata without loading its weights: [(key, value), ...].");
    m.def("quantize", [](const std::string & src, const std::string & dst, const std::string & type,
                         int32_t n_threads) {
              py::gil_scoped_release nogil;
              quantize_model(src, dst, type, n_threads);
          }, py::arg("src"), py::arg("dst"), py::arg("type"), py::arg("n_threads") = 0,
          "Writes dst: src quantized (or requantized) to `type` with llama.cpp's quantizer.");
    m.def("rpc_probe", [](const std::string & endpoint) {
              py::gil_scoped_release nogil;
              return rpc_probe(endpoint);
          }, py::arg("endpoint"),
          "Asks the RPC server at HOST:PORT who it is, never aborting: -1 nothing reachable, -2 not an RPC server of "
          "this protocol, 0 a server with the fast kernels, 1 one with exact (batch-invariant) kernels.");
    m.def("rpc_serve", [](const std::string & endpoint, int n_threads, bool exact, bool cpu_only, const std::string & cache_dir) {
              py::gil_scoped_release nogil;
              rpc_serve(endpoint, n_threads, exact, cpu_only, cache_dir);
          }, py::arg("endpoint"), py::arg("n_threads"), py::arg("exact") = true, py::arg("cpu_only") = false,
          py::arg("cache_dir") = "",
          "Serves this process's devices (GPUs, else the CPU) to llama.cpp RPC clients at HOST:PORT until the process "
          "ends (pyspec rpc-server); raises when it cannot start.");
    m.def("check_vocab_compatible", &check_vocab_compatible, py::arg("target"), py::arg("draft"),
          "Raises VocabMismatchError when `draft` cannot draft for `target`.");
}

}  // namespace pyspec
