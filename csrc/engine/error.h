// pyspec's C++ exception hierarchy; the bindings map each class onto one
// Python exception in pyspec.errors. llama.cpp return codes become these here.
#pragma once
#include <stdexcept>
#include <string>

struct llama_context;  // llama.h
struct llama_batch;

namespace pyspec {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A model file could not be read or llama.cpp refused it.
struct ModelLoadError : Error { using Error::Error; };
// Target and drafter do not share a vocabulary.
struct VocabMismatchError : Error { using Error::Error; };
// A drafter (EAGLE-3, DFlash, MTP) was not built for this target: hidden
// size, target layers or architecture do not match.
struct DraftMismatchError : Error { using Error::Error; };
// The request does not fit into the context window.
struct ContextOverflowError : Error { using Error::Error; };
// A parameter is out of range or inconsistent with another.
struct InvalidParameterError : Error { using Error::Error; };
// llama_decode failed (a fatal error inside llama.cpp).
struct DecodeError : Error { using Error::Error; };
// The model or backend cannot run in the requested mode (e.g. exact kernels
// on a GPU for weight types or ops they do not cover).
struct UnsupportedError : Error { using Error::Error; };
// The caller asked to stop (Ctrl-C, a callback returning false).
struct Interrupted : Error { using Error::Error; };

// Converts llama_decode's return code into an exception (the one place that
// interprets it). `what` names the step, for the message.
void check_decode(int rc, const char * what);
// llama_decode's return code, with a lost RPC server (ggml_rpc_error, patch 0011) turned into
// DecodeError instead of leaving through the caller.
int decode_rc(llama_context * ctx, const llama_batch & batch, const char * what);
// decode_rc, its return code checked by check_decode.
void decode_checked(llama_context * ctx, const llama_batch & batch, const char * what);

}  // namespace pyspec
