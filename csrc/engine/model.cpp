#include "engine/model.h"
#include "engine/rpc.h"

#include "llama-ext.h"

#include <cstdlib>
#include <cstring>

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "engine/error.h"
#include "engine/log.h"

namespace pyspec {

void check_decode(int rc, const char * what) {
    switch (rc) {
        case 0: return;
        case 1: throw ContextOverflowError(std::string(what) +
                    ": no room in the KV cache for the batch; raise n_ctx or shorten the request");
        case 2: throw Interrupted(std::string(what) + ": aborted");
        case -1: throw DecodeError(std::string(what) + ": llama.cpp rejected the batch as invalid");
        default: throw DecodeError(std::string(what) + ": llama_decode failed with code " +
                                   std::to_string(rc) + (log_recent().empty() ? "" : ": " + log_recent()));
    }
}

int decode_rc(llama_context * ctx, const llama_batch & batch, const char * what) {
    try {
        return llama_decode(ctx, batch);
    } catch (const ggml_rpc_error & e) {
        throw DecodeError(std::string(what) + ": " + e.what() + ". The context's memory is undefined now: make a new "
                          "LLM once the server is back");
    }
}

void decode_checked(llama_context * ctx, const llama_batch & batch, const char * what) {
    check_decode(decode_rc(ctx, batch, what), what);
}

std::vector<ggml_backend_dev_t> local_gpu_devices() {
    std::vector<ggml_backend_dev_t> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        const auto t = ggml_backend_dev_type(d);
        if ((t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) &&
            ggml_backend_dev_backend_reg(d) != ggml_backend_rpc_reg())
            out.push_back(d);
    }
    return out;
}

Batch::Batch(int32_t capacity) : b_(llama_batch_init(capacity, 0, 1)), cap_(capacity) {}

void Batch::add(llama_token t, llama_pos pos, bool logits, llama_seq_id seq) {
    if (b_.n_tokens >= cap_) throw Error("internal: batch overflow");
    const int32_t i = b_.n_tokens++;
    b_.token[i] = t;
    b_.pos[i] = pos;
    b_.n_seq_id[i] = 1;
    b_.seq_id[i][0] = seq;
    b_.logits[i] = logits;
}

bool cpu_amx_buffer_type() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return false;
    auto get = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    if (!get) return false;
    for (ggml_backend_buffer_type_t * b = get(dev); b && *b; ++b) {
        if (std::strstr(ggml_backend_buft_name(*b), "AMX")) return true;
    }
    return false;
}

bool repack_allowed() {
    // The pin's AMX weight buffer (a build with AMX, on a CPU that has it) took
    // the interpreter down with the default model (issue 10): repacking is off
    // there unless PYSPEC_AMX=1 asks for it.
    static const bool allowed = [] {
        const char * env = std::getenv("PYSPEC_AMX");
        return !cpu_amx_buffer_type() || (env && std::strcmp(env, "1") == 0);
    }();
    return allowed;
}

Model::Model(const std::string & path, const ModelParams & params) : path_(path), params_(params) {
    log_install();
    log_clear_recent();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers;
    mp.use_extra_bufts = params.repack && repack_allowed();
    if (!params.use_mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.load_mtp = params.load_mtp;
    if (!params.rpc.empty()) {
        // the servers' devices, then this machine's GPUs (llama.cpp's own order: --rpc devices first)
        devices_ = rpc_devices(params.rpc);
        for (ggml_backend_dev_t d : local_gpu_devices()) devices_.push_back(d);
        devices_.push_back(nullptr);
        mp.devices = devices_.data();
    }
    if (params.no_alloc) {
        mp.no_alloc = true;
        mp.load_mode = LLAMA_LOAD_MODE_NONE;
    }
    model_.reset(llama_model_load_from_file(path.c_str(), mp));
    if (!model_) {
        std::string why = log_recent();
        throw ModelLoadError("llama.cpp could not load '" + path + "'" +
                             (why.empty() ? "" : ": " + why) +
                             ". Expected a GGUF model file of an architecture this llama.cpp build knows "
                             "(see pyspec.build_info()); check the file is complete and not corrupt.");
    }
    vocab_ = llama_model_get_vocab(model_.get());
}

bool Model::needs_checkpoints() const {
    return llama_model_is_recurrent(model_.get()) || llama_model_is_hybrid(model_.get());
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), int32_t(text.size()), out.data(), int32_t(out.size()),
                               add_special, parse_special);
    if (n == INT32_MIN) throw InvalidParameterError("text too long to tokenize");
    if (n < 0) {
        out.resize(size_t(-n));
        n = llama_tokenize(vocab_, text.data(), int32_t(text.size()), out.data(), int32_t(out.size()),
                           add_special, parse_special);
    }
    out.resize(size_t(n));
    return out;
}

std::string Model::token_to_piece(llama_token t, bool special) const {
    if (t < 0 || t >= n_vocab())
        throw InvalidParameterError("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                                    std::to_string(n_vocab()) + ")");
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, t, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, size_t(n));
    std::string s(size_t(-n), '\0');
    n = llama_token_to_piece(vocab_, t, s.data(), int32_t(s.size()), 0, special);
    s.resize(size_t(std::max(n, 0)));
    return s;
}

std::string Model::detokenize(const std::vector<llama_token> & tokens, bool special) const {
    for (llama_token t : tokens) {
        if (t < 0 || t >= n_vocab())
            throw InvalidParameterError("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                                        std::to_string(n_vocab()) + ")");
    }
    std::string s(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), int32_t(tokens.size()), s.data(), int32_t(s.size()),
                                 false, special);
    if (n < 0) {
        s.resize(size_t(-n));
        n = llama_detokenize(vocab_, tokens.data(), int32_t(tokens.size()), s.data(), int32_t(s.size()),
                             false, special);
    }
    s.resize(size_t(std::max(n, 0)));
    return s;
}

std::string Model::apply_chat_template(const std::vector<std::pair<std::string, std::string>> & messages,
                                       bool add_assistant, const std::string & tmpl_override) const {
    std::string tmpl_s = tmpl_override;
    if (tmpl_s.empty()) {
        const char * own = llama_model_chat_template(model_.get(), nullptr);
        // No guess from the architecture: a GGUF without a template is most
        // likely a base model, which continues any chat markup as text.
        if (!own)
            throw InvalidParameterError("'" + path_ + "' has no chat template (GGUF key tokenizer.chat_template) "
                                        "and no template was given: it is most likely a base model, not tuned "
                                        "for chat. Use a plain prompt, an instruction-tuned GGUF, or pass a "
                                        "template or a built-in name such as 'gemma' or 'chatml' if you know "
                                        "the format the model was tuned with");
        tmpl_s = own;
    }
    const char * tmpl = tmpl_s.c_str();
    std::vector<llama_chat_message> msgs;
    size_t total = 0;
    for (const auto & [role, content] : messages) {
        msgs.push_back({role.c_str(), content.c_str()});
        total += role.size() + content.size();
    }
    std::string out(total * 2 + 256, '\0');
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, out.data(), int32_t(out.size()));
    if (n < 0) throw InvalidParameterError("the chat template of '" + path_ +
                                           "' is not one llama.cpp's built-in formatter supports; pass "
                                           "chat_template= with a built-in name such as 'chatml'");
    if (size_t(n) > out.size()) {
        out.resize(size_t(n));
        n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, out.data(), int32_t(out.size()));
    }
    out.resize(size_t(n));
    return out;
}

std::string Model::meta(const std::string & key) const {
    char buf[512];
    int32_t n = llama_model_meta_val_str(model_.get(), key.c_str(), buf, sizeof(buf));
    if (n < 0) return "";
    if (size_t(n) < sizeof(buf)) return std::string(buf, size_t(n));
    std::string s(size_t(n) + 1, '\0');
    llama_model_meta_val_str(model_.get(), key.c_str(), s.data(), s.size());
    s.resize(size_t(n));
    return s;
}

void check_vocab_compatible(const Model & target, const Model & draft) {
    const llama_vocab * a = target.vocab();
    const llama_vocab * b = draft.vocab();
    const std::string head = "draft model '" + draft.path() + "' cannot draft for target '" + target.path() + "': ";
    const std::string tail = ". Use a draft model built with the target's tokenizer (same family), "
                             "or --spec-type ngram.";
    if (llama_vocab_type(a) != llama_vocab_type(b))
        throw VocabMismatchError(head + "vocabulary type differs (target " + std::to_string(llama_vocab_type(a)) +
                                 ", draft " + std::to_string(llama_vocab_type(b)) + ")" + tail);
    if (target.n_vocab() != draft.n_vocab())
        throw VocabMismatchError(head + "vocabulary size differs (target " + std::to_string(target.n_vocab()) +
                                 " tokens, draft " + std::to_string(draft.n_vocab()) + ")" + tail);
    const struct { const char * name; llama_token (*fn)(const llama_vocab *); } specials[] = {
        {"BOS", llama_vocab_bos}, {"EOS", llama_vocab_eos}, {"EOT", llama_vocab_eot},
        {"PAD", llama_vocab_pad}};
    for (const auto & s : specials) {
        if (s.fn(a) != s.fn(b))
            throw VocabMismatchError(head + s.name + " token differs (target " + std::to_string(s.fn(a)) +
                                     ", draft " + std::to_string(s.fn(b)) + ")" + tail);
    }
    if (llama_vocab_get_add_bos(a) != llama_vocab_get_add_bos(b))
        throw VocabMismatchError(head + "add_bos differs" + tail);
    for (llama_token t = 0; t < target.n_vocab(); ++t) {
        const char * ta = llama_vocab_get_text(a, t);
        const char * tb = llama_vocab_get_text(b, t);
        if (std::strcmp(ta, tb) != 0)
            throw VocabMismatchError(head + "token " + std::to_string(t) + " differs (target '" + ta +
                                     "', draft '" + tb + "')" + tail);
    }
}

std::vector<std::pair<std::string, std::string>> model_info(const std::string & path) {
    log_install();
    log_clear_recent();
    llama_model_params mp = llama_model_default_params();
    mp.no_alloc = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;  // the memory-fit pass maps nothing
    mp.use_extra_bufts = false;
    mp.n_gpu_layers = 0;
    ModelPtr m(llama_model_load_from_file(path.c_str(), mp));
    if (!m) {
        std::string why = log_recent();
        throw ModelLoadError("llama.cpp could not read '" + path + "'" + (why.empty() ? "" : ": " + why));
    }
    auto meta = [&](const char * key) {
        char buf[256];
        int32_t n = llama_model_meta_val_str(m.get(), key, buf, sizeof(buf));
        return n < 0 ? std::string() : std::string(buf, size_t(std::min<int32_t>(n, sizeof(buf) - 1)));
    };
    const llama_vocab * v = llama_model_get_vocab(m.get());
    char desc[256];
    llama_model_desc(m.get(), desc, sizeof(desc));
    const char * vtypes[] = {"none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2"};
    int vt = int(llama_vocab_type(v));
    return {
        {"architecture", meta("general.architecture")},
        {"name", meta("general.name")},
        {"description", desc},
        {"n_params", std::to_string(llama_model_n_params(m.get()))},
        {"size_bytes", std::to_string(llama_model_size(m.get()))},
        {"n_ctx_train", std::to_string(llama_model_n_ctx_train(m.get()))},
        {"n_embd", std::to_string(llama_model_n_embd(m.get()))},
        {"n_layer", std::to_string(llama_model_n_layer(m.get()))},
        {"n_layer_nextn", std::to_string(llama_model_n_layer_nextn(m.get()))},
        {"n_head", std::to_string(llama_model_n_head(m.get()))},
        {"n_head_kv", std::to_string(llama_model_n_head_kv(m.get()))},
        {"n_vocab", std::to_string(llama_vocab_n_tokens(v))},
        {"vocab_type", (vt >= 0 && vt < 7) ? vtypes[vt] : std::to_string(vt)},
        {"recurrent", llama_model_is_recurrent(m.get()) || llama_model_is_hybrid(m.get()) ? "true" : "false"},
        {"chat_template", llama_model_chat_template(m.get(), nullptr) ? "true" : "false"},
    };
}

}  // namespace pyspec

namespace pyspec {

void quantize_model(const std::string & src, const std::string & dst, const std::string & type, int32_t n_threads) {
    static const std::pair<const char *, llama_ftype> types[] = {
        {"f16", LLAMA_FTYPE_MOSTLY_F16}, {"bf16", LLAMA_FTYPE_MOSTLY_BF16},
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0}, {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
        {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0}, {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1}, {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K}, {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
        {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M}, {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},
        {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},
        {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K}};
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    bool found = false;
    std::string names;
    for (const auto & [n, t] : types) {
        names += names.empty() ? n : std::string(", ") + n;
        if (type == n) { qp.ftype = t; found = true; }
    }
    if (!found) throw InvalidParameterError("unknown quantization type '" + type + "'; expected one of " + names);
    qp.nthread = n_threads;
    qp.allow_requantize = true;
    log_install();
    log_clear_recent();
    if (llama_model_quantize(src.c_str(), dst.c_str(), &qp) != 0)
        throw ModelLoadError("quantizing '" + src + "' to " + type + " failed: " + log_recent());
}

}  // namespace pyspec

namespace pyspec {

ContextMemory context_memory(const llama_context * ctx) {
    ContextMemory m;
    for (const auto & [buft, b] : llama_get_memory_breakdown(ctx)) {
        m.kv_bytes += b.context;
        m.compute_bytes += b.compute;
    }
    return m;
}

}  // namespace pyspec
