// How many CPU threads a context uses when none is asked for: the one rule for
// the target, the draft model and the feature drafters (pyspec.default_threads
// calls it too). llama.cpp's threads spin while they wait for each other, so
// a thread per hardware thread would fight hyperthread siblings and CPUs
// outside this process's mask.
#pragma once
#include <cstdint>

namespace pyspec {

// $PYSPEC_THREADS when set (InvalidParameterError unless a whole number >= 1),
// else the physical cores among the CPUs this process may run on (its
// affinity mask: taskset, a container's cpuset); hyperthreads of one core
// count once. At least 1.
int32_t default_n_threads();

}  // namespace pyspec
