// pyspec.build_info(): what this extension was built from and with.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "engine/device_argmax.h"
#include "engine/log.h"
#include "engine/model.h"
#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "ggml-cpu.h"
#include "llama.h"
#ifdef PYSPEC_CUDA
#include "cuda/exact_mmv_hook.h"
#endif

namespace pyspec {

void register_build_info(py::module_ & m) {
    m.def("build_info", [] {
        log_install();
        py::dict d;
        d["llama_cpp_commit"] = PYSPEC_LLAMA_COMMIT;
        py::list backends;
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i) backends.append(ggml_backend_reg_name(ggml_backend_reg_get(i)));
        d["backends"] = backends;
        // backends with exact (batch-invariant) kernels of their own: patches 0001 (CPU) and 0005 (CUDA);
        // not RPC, whose kernels are the server's (exact when `pyspec rpc-server` runs them: patch 0011)
        py::list exact;
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
            ggml_backend_reg_t reg = ggml_backend_reg_get(i);
            if (reg == ggml_backend_rpc_reg()) continue;
            if (ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_batch_invariant")) exact.append(ggml_backend_reg_name(reg));
        }
        d["exact_backends"] = exact;
        py::list feats;
        auto add = [&](const char * n, int on) { if (on) feats.append(n); };
        add("SSE3", ggml_cpu_has_sse3());
        add("SSSE3", ggml_cpu_has_ssse3());
        add("AVX", ggml_cpu_has_avx());
        add("AVX2", ggml_cpu_has_avx2());
        add("F16C", ggml_cpu_has_f16c());
        add("FMA", ggml_cpu_has_fma());
        add("AVX_VNNI", ggml_cpu_has_avx_vnni());
        add("AVX512", ggml_cpu_has_avx512());
        add("AVX512_VBMI", ggml_cpu_has_avx512_vbmi());
        add("AVX512_VNNI", ggml_cpu_has_avx512_vnni());
        add("AVX512_BF16", ggml_cpu_has_avx512_bf16());
        add("AMX_INT8", ggml_cpu_has_amx_int8());
        add("NEON", ggml_cpu_has_neon());
        add("ARM_FMA", ggml_cpu_has_arm_fma());
        add("SVE", ggml_cpu_has_sve());
        add("LLAMAFILE", ggml_cpu_has_llamafile());
        d["cpu_features"] = feats;
        d["system_info"] = llama_print_system_info();
        // kernels="fast" repacks weights, except where the AMX weight buffer would be used (PYSPEC_AMX=1: anyway)
        d["amx_buffer"] = cpu_amx_buffer_type();
        d["repack"] = repack_allowed();
        // a GPU of this machine (llama_supports_gpu_offload() also says yes for the RPC backend)
        d["gpu_offload"] = !local_gpu_devices().empty();
#ifdef PYSPEC_CUDA
        d["cuda"] = true;
        // the verify-shaped kernels ggml-cuda's exact mode runs (csrc/cuda, patch 0006)
        d["exact_cuda_kernels"] = pyspec_cuda::exact_mmv_kernels();
#else
        d["cuda"] = false;
#endif
        return d;
    }, "Build facts: llama.cpp commit, compiled backends, CPU features.");
    m.def("set_verbose", &log_set_verbose, py::arg("verbose"), "Echo llama.cpp's log to stderr.");
    m.def("device_argmax_counts", [] {
        const DeviceArgmaxCounts c = device_argmax_counts();
        py::dict d;
        d["ops"] = c.ops;
        d["rows"] = c.rows;
        return d;
    }, "Device greedy picks in this process: argmax ops built into graphs ('ops') and the rows they "
       "picked ('rows'); the rows of one graph share one op.");
}

}  // namespace pyspec
