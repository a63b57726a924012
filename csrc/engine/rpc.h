// llama.cpp's RPC backend (patch 0011): models split over `pyspec rpc-server` processes.
#pragma once
#include <string>
#include <vector>

#include "ggml-backend.h"

namespace pyspec {

// What an endpoint ("host:port") answers (ggml_backend_rpc_probe): -1 nothing reachable there, -2 not
// an RPC server of this protocol, 0 a server with the fast kernels, 1 one with exact (batch-invariant)
// kernels. Never aborts.
int rpc_probe(const std::string & endpoint);

// The devices of these servers (ggml_backend_rpc_add_server), in order; ModelLoadError naming the
// endpoint when one cannot be reached.
std::vector<ggml_backend_dev_t> rpc_devices(const std::vector<std::string> & endpoints);

// Serves this process's devices (the GPUs, else the CPU; cpu_only: the CPU) at endpoint until the
// process ends; exact: their kernels run in batch-invariant mode and HELLO says so. Returns only when
// the server cannot start (InvalidParameterError).
void rpc_serve(const std::string & endpoint, int n_threads, bool exact, bool cpu_only, const std::string & cache_dir);

}  // namespace pyspec
