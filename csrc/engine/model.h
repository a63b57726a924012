// RAII wrappers over llama.cpp's model, context and batch, and the model-level
// helpers (tokenizer, chat template, metadata, vocabulary comparison).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace pyspec {

struct ModelDeleter   { void operator()(llama_model * m) const { llama_model_free(m); } };
struct ContextDeleter { void operator()(llama_context * c) const { llama_free(c); } };
using ModelPtr   = std::unique_ptr<llama_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;

// A token batch with per-token logits flags; each token belongs to one
// sequence (seq 0 unless told).
class Batch {
public:
    explicit Batch(int32_t capacity);
    ~Batch() { llama_batch_free(b_); }
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;
    void clear() { b_.n_tokens = 0; }
    void add(llama_token t, llama_pos pos, bool logits, llama_seq_id seq = 0);
    int32_t size() const { return b_.n_tokens; }
    int32_t capacity() const { return cap_; }
    const llama_batch & get() const { return b_; }

private:
    llama_batch b_;
    int32_t cap_;
};

struct ModelParams {
    int32_t n_gpu_layers = 0;
    // Weight repacking (llama.cpp's "extra buffer types") changes a token's
    // logits with the batch width; exact mode turns it off.
    bool    repack = false;
    bool    use_mmap = true;
    // Load the model's MTP ("nextn") layers, for the mtp drafter.
    bool    load_mtp = false;
    // Metadata only, allocations simulated (memory reports): contexts on it
    // report their sizes and cannot run.
    bool    no_alloc = false;
    // llama.cpp RPC servers ("host:port", `pyspec rpc-server`): their devices hold the offloaded
    // layers (n_gpu_layers), split by their free memory as llama.cpp splits layers over GPUs.
    std::vector<std::string> rpc;
};

// This machine's GPUs (the RPC backend's devices are other processes').
std::vector<ggml_backend_dev_t> local_gpu_devices();

class Model {
public:
    // Throws ModelLoadError with llama.cpp's own reason when it refuses the file.
    Model(const std::string & path, const ModelParams & params);

    llama_model *       get() const { return model_.get(); }
    const llama_vocab * vocab() const { return vocab_; }
    const std::string & path() const { return path_; }
    const ModelParams & params() const { return params_; }
    int32_t n_vocab() const { return llama_vocab_n_tokens(vocab_); }
    int32_t n_ctx_train() const { return llama_model_n_ctx_train(model_.get()); }
    bool    is_eog(llama_token t) const { return llama_vocab_is_eog(vocab_, t); }
    int32_t n_embd() const { return llama_model_n_embd(model_.get()); }
    int32_t n_layer() const { return llama_model_n_layer(model_.get()); }
    int32_t n_layer_nextn() const { return llama_model_n_layer_nextn(model_.get()); }
    std::string arch() const { return meta("general.architecture"); }
    uint64_t size_bytes() const { return llama_model_size(model_.get()); }
    // Recurrent or hybrid memory: dropping a suffix of positions may be refused.
    bool    needs_checkpoints() const;

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string token_to_piece(llama_token t, bool special = false) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool special = false) const;
    // Formats a chat with `tmpl` (a template text or the name of one of
    // llama.cpp's built-in templates); empty: the GGUF's own template
    // (tokenizer.chat_template); InvalidParameterError when it has none.
    std::string apply_chat_template(const std::vector<std::pair<std::string, std::string>> & messages,
                                    bool add_assistant, const std::string & tmpl = "") const;
    // Metadata value, or "" when the key is absent.
    std::string meta(const std::string & key) const;

private:
    std::string path_;
    ModelParams params_;
    std::vector<ggml_backend_dev_t> devices_;  // with rpc: what llama_model_params.devices lists
    ModelPtr model_;
    const llama_vocab * vocab_ = nullptr;
};

// Whether the CPU backend offers the AMX weight buffer (an AMX build on an
// AMX CPU), and whether weight repacking may be used: not with that buffer
// unless PYSPEC_AMX=1 (it crashed the pin with the default model).
bool cpu_amx_buffer_type();
bool repack_allowed();

// Bytes a context holds, over all devices: its memory (KV cache, recurrent
// state) and its compute buffers.
struct ContextMemory { size_t kv_bytes = 0, compute_bytes = 0; };
ContextMemory context_memory(const llama_context * ctx);

// Throws VocabMismatchError naming the first difference (type, size, special
// tokens, first differing token) when `draft` cannot draft for `target`.
void check_vocab_compatible(const Model & target, const Model & draft);

// Loads only the metadata (no weights) and returns (key, value) pairs that
// describe the model: architecture, parameters, context, vocabulary, layers.
std::vector<std::pair<std::string, std::string>> model_info(const std::string & path);

}  // namespace pyspec

namespace pyspec {
// Writes `dst`, a copy of `src` quantized to `type` ("q4_0", "q8_0", "q2_k",
// "q3_k_m", "q4_k_m", ...); already-quantized tensors are requantized.
void quantize_model(const std::string & src, const std::string & dst, const std::string & type, int32_t n_threads);
}  // namespace pyspec
