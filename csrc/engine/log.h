// Routes llama.cpp's log output: silent by default, the recent warnings and
// errors kept so that a failed load can say why.
#pragma once
#include <string>

namespace pyspec {

// Install the log hook once (idempotent). verbose=true echoes everything to stderr.
void log_install();
void log_set_verbose(bool verbose);
// Clears the recent-message buffer of the calling thread.
void log_clear_recent();
// The warnings and errors llama.cpp logged on the calling thread since the last clear.
std::string log_recent();

}  // namespace pyspec
