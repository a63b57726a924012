#pragma once

namespace pyspec_cuda {
// What build_info reports; referencing it links the registration of the exact kernels into _core.
const char * exact_mmv_kernels();
}  // namespace pyspec_cuda
