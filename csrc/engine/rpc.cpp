#include "engine/rpc.h"

#include "ggml-rpc.h"

#include "engine/error.h"
#include "engine/log.h"
#include "engine/model.h"

#ifdef PYSPEC_CUDA
#include "cuda/exact_mmv_hook.h"
#endif

namespace pyspec {

int rpc_probe(const std::string & endpoint) { return ggml_backend_rpc_probe(endpoint.c_str()); }

std::vector<ggml_backend_dev_t> rpc_devices(const std::vector<std::string> & endpoints) {
    std::vector<ggml_backend_dev_t> out;
    for (const std::string & ep : endpoints) {
        ggml_backend_reg_t reg = nullptr;
        try {
            reg = ggml_backend_rpc_add_server(ep.c_str());  // connects (patch 0011: throws, never aborts)
        } catch (const ggml_rpc_error & e) {
            throw ModelLoadError("RPC server " + ep + ": " + e.what() + "; start one there with `pyspec rpc-server "
                                 "--host HOST --port PORT`, or leave it out of rpc=[...]");
        }
        if (!reg || ggml_backend_reg_dev_count(reg) == 0)
            throw ModelLoadError("RPC server " + ep + " offers no device");
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) out.push_back(ggml_backend_reg_dev_get(reg, i));
    }
    return out;
}

void rpc_serve(const std::string & endpoint, int n_threads, bool exact, bool cpu_only, const std::string & cache_dir) {
    log_install();
    std::vector<ggml_backend_dev_t> devs = cpu_only ? std::vector<ggml_backend_dev_t>{} : local_gpu_devices();
    if (devs.empty()) {
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (!cpu) throw Error("rpc_serve: this build has no CPU device");
        devs.push_back(cpu);
    }
#ifdef PYSPEC_CUDA
    (void) pyspec_cuda::exact_mmv_kernels();  // pyspec's exact CUDA kernels are registered (exact_mmv_hook.cpp)
#endif
    ggml_backend_rpc_server_set_batch_invariant(exact);
    ggml_backend_rpc_start_server(endpoint.c_str(), cache_dir.empty() ? nullptr : cache_dir.c_str(), size_t(n_threads),
                                  devs.size(), devs.data());
    throw InvalidParameterError("rpc-server could not serve at " + endpoint +
                                " (see the message above: an address in use, or a device without exact kernels); "
                                "expected HOST:PORT with a free port");
}

}  // namespace pyspec
