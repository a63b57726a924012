// batch_invariance_probe: are a token's logits bitwise independent of how many
// tokens share its forward pass?  Uses only llama.h (+ the ggml headers it pulls in).
//
// Build (static libs of the pip build dir; see tests/cpp/README.md):
//   B=build/cp311-cp311-linux_x86_64/llama.cpp; S=llama.cpp/_cache/src
//   g++ -O2 -std=c++17 tests/cpp/batch_invariance_probe.cpp -I$S/include -I$S/ggml/include \
//       -L$B/src -L$B/ggml/src -lllama -lggml -lggml-cpu -lggml-base -lpthread -ldl -o /tmp/bip
//
// Modes
//   bip -m MODEL [opts]                 logits mode: width-1 reference vs widths (default 1,2,5,16,64)
//   bip -m MODEL --dump J --widths W    eval-callback mode: token J's intermediate tensors,
//                                       width 1 vs width W, prints the first differing node
//   bip --quantize IN OUT FTYPE         llama_model_quantize (FTYPE: f16 q8_0 q4_0 q4_k_m q4_k_s q5_0)
//
// Options
//   -t N         threads (default 2)
//   --fa 0|1|-1  flash attention off/on/auto (default 0)
//   --repack 0|1 use_extra_bufts (weight repacking), default 0
//   --swa-full 0|1 (default 1)
//   -p N         prefill length in tokens (default: tokenized quicksort prompt, else 40 synthetic ids)
//   -T N         tokens to check after the prefill (default 64)
//   --ub N       n_ubatch = n_batch (default max(64, max width))
//   --ctx N      n_ctx (default 1024)
//   --widths a,b,c
//   --ktype/--vtype f16|f32|q8_0   KV cache types (default f16)
//   --reps N     timing repetitions per width (default 1)
//   --rollback   after each chunk keep only its first ceil(n/2) tokens (llama_memory_seq_rm), resubmit the rest
//                in the next chunk: checks KV reuse after rejections (rows counted per submission)
//   --save F / --cmp F   write / compare the width-1 reference logits (e.g. across thread counts)
#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

static const char * QUICKSORT_PROMPT =
    "def quicksort(arr):\n"
    "    if len(arr) <= 1:\n"
    "        return arr\n"
    "    pivot = arr[len(arr) // 2]\n"
    "    left = [x for x in arr if x < pivot]\n"
    "    middle = [x for x in arr if x == pivot]\n"
    "    right = [x for x in arr if x > pivot]\n"
    "    return quicksort(left) + middle + quicksort(right)\n"
    "\n"
    "# The same function again, with type hints added:\n";

struct opts {
    std::string model;
    int threads = 2;
    int fa = 0;
    int repack = 0;
    int swa_full = 1;
    int n_prefill = -1;
    int T = 64;
    int ub = -1;
    int ctx = 1024;
    int dump = -1;
    int reps = 1;
    int rollback = 0;
    int ngl = 0;     // layers on the GPU
    int exact = -1;  // llama_set_batch_invariant(ctx, exact) when >= 0 (else the env switches decide)
    std::string save, cmp;
    std::vector<int> widths = {1, 2, 5, 16, 64};
    ggml_type tk = GGML_TYPE_F16, tv = GGML_TYPE_F16;
};

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static ggml_type parse_type(const std::string & s) {
    if (s == "f32") return GGML_TYPE_F32;
    if (s == "f16") return GGML_TYPE_F16;
    if (s == "q8_0") return GGML_TYPE_Q8_0;
    if (s == "q4_0") return GGML_TYPE_Q4_0;
    fprintf(stderr, "unknown type %s\n", s.c_str());
    exit(1);
}

// ---------------------------------------------------------------- eval callback capture
struct captured {
    std::string name;
    std::string op;
    std::string srcs;
    int64_t ne[4];
    std::vector<float> data;  // full tensor, f32, logical (ne) order
};

struct capture_state {
    bool active = false;
    std::vector<captured> nodes;
    std::map<std::string, int> seen;
};

static bool tensor_to_f32(const ggml_tensor * t, std::vector<float> & out) {
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_I32) return false;
    if (!t->buffer || !ggml_backend_buffer_is_host(t->buffer) || !t->data) return false;
    const int64_t n = ggml_nelements(t);
    out.resize(n);
    int64_t k = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
    for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
    for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
    for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
        const char * p = (const char *) t->data + i0*t->nb[0] + i1*t->nb[1] + i2*t->nb[2] + i3*t->nb[3];
        float v;
        if (t->type == GGML_TYPE_F32) memcpy(&v, p, 4);
        else if (t->type == GGML_TYPE_F16) v = ggml_fp16_to_fp32(*(const ggml_fp16_t *) p);
        else { int32_t x; memcpy(&x, p, 4); v = (float) x; }
        out[k++] = v;
    }
    return true;
}

static bool eval_cb(struct ggml_tensor * t, bool ask, void * ud) {
    auto * st = (capture_state *) ud;
    if (ask) return st->active;  // ask for every node: scheduler then computes node by node (no cross-node fusion)
    if (!st->active) return true;
    captured c;
    std::string nm = t->name;
    int k = st->seen[nm]++;
    c.name = k ? nm + "#" + std::to_string(k) : nm;
    c.op = ggml_op_desc(t);
    for (int i = 0; i < GGML_MAX_SRC && t->src[i]; i++) {
        if (i) c.srcs += ",";
        c.srcs += t->src[i]->name;
        c.srcs += ":";
        c.srcs += ggml_type_name(t->src[i]->type);
    }
    for (int i = 0; i < 4; i++) c.ne[i] = t->ne[i];
    if (!tensor_to_f32(t, c.data)) c.data.clear();
    st->nodes.push_back(std::move(c));
    return true;
}

// ---------------------------------------------------------------- runner
struct runner {
    opts o;
    llama_model * model = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    int n_vocab = 0;
    capture_state cap;

    void init(int max_w) {
        llama_model_params mp = llama_model_default_params();
        mp.use_extra_bufts = o.repack != 0;
        mp.n_gpu_layers = o.ngl;
        model = llama_model_load_from_file(o.model.c_str(), mp);
        if (!model) { fprintf(stderr, "load failed\n"); exit(1); }
        vocab = llama_model_get_vocab(model);
        n_vocab = llama_vocab_n_tokens(vocab);

        llama_context_params cp = llama_context_default_params();
        int ub = o.ub > 0 ? o.ub : std::max(64, max_w);
        cp.n_ctx = o.ctx;
        cp.n_batch = std::max(ub, o.ctx);  // prefill in one llama_decode, split into n_ubatch pieces
        cp.n_ubatch = ub;
        cp.n_seq_max = 1;
        cp.n_threads = o.threads;
        cp.n_threads_batch = o.threads;
        cp.flash_attn_type = o.fa == 1 ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                           : o.fa == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
        cp.swa_full = o.swa_full != 0;
        cp.type_k = o.tk;
        cp.type_v = o.tv;
        cp.no_perf = true;
        if (o.dump >= 0) {
            cp.cb_eval = eval_cb;
            cp.cb_eval_user_data = &cap;
        }
        ctx = llama_init_from_model(model, cp);
        if (!ctx) { fprintf(stderr, "ctx failed\n"); exit(1); }
        if (o.exact >= 0 && !llama_set_batch_invariant(ctx, o.exact != 0)) fprintf(stderr, "warning: a backend has no batch-invariant mode\n");
    }

    // decode tokens [toks] at positions pos0.., logits for all if want_all, else only last
    void decode(const llama_token * toks, int n, int pos0, bool want_all) {
        llama_batch b = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; i++) {
            b.token[i] = toks[i];
            b.pos[i] = pos0 + i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = want_all || i == n - 1;
        }
        b.n_tokens = n;
        int rc = llama_decode(ctx, b);
        llama_batch_free(b);
        if (rc != 0) { fprintf(stderr, "llama_decode rc=%d\n", rc); exit(1); }
    }

    double prefill(const std::vector<llama_token> & p) {
        llama_memory_clear(llama_get_memory(ctx), true);
        double t0 = now_s();
        decode(p.data(), (int) p.size(), 0, false);
        return now_s() - t0;
    }
};

static int argmax(const float * x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

// compare token J's slice of each captured node: ref (width 1, J is the only token) vs run (width W)
// kv_valid: KV cells [0, kv_valid) are the ones token J may see; kq-* rows are compared only there
// (the other cells hold later tokens of the same ubatch, or stale data, and are masked anyway)
static void compare_capture(const std::vector<captured> & ref, const std::vector<captured> & run, int jpos, int kv_valid) {
    std::map<std::string, const captured *> by;
    for (auto & c : run) by[c.name] = &c;
    int n_diff = 0, n_cmp = 0, n_skip = 0;
    for (auto & r : ref) {
        auto it = by.find(r.name);
        if (it == by.end() || r.data.empty() || it->second->data.empty()) { n_skip++; continue; }
        const captured & w = *it->second;
        // the KV cache itself (and its views) holds other tokens' rows: not a per-token quantity
        if (r.name.find("cache_") != std::string::npos) { n_skip++; continue; }
        // token axis: the dim where ref has 1 and run has >1; other differing dims (n_kv) compared over common prefix
        int tok_dim = -1;
        int64_t lim[4];
        for (int d = 0; d < 4; d++) {
            lim[d] = std::min(r.ne[d], w.ne[d]);
            if (r.ne[d] == 1 && w.ne[d] > 1 && tok_dim < 0) tok_dim = d;
        }
        bool same_shape = true;
        for (int d = 0; d < 4; d++) same_shape &= r.ne[d] == w.ne[d];
        if (tok_dim < 0 && !same_shape) { n_skip++; continue; }  // token axis folded into another dim
        if (r.name.rfind("kq-", 0) == 0) lim[0] = std::min<int64_t>(lim[0], kv_valid);
        double maxd = 0; int64_t nd = 0, ncmp = 0;
        bool nan_mismatch = false;
        for (int64_t i3 = 0; i3 < lim[3]; i3++)
        for (int64_t i2 = 0; i2 < lim[2]; i2++)
        for (int64_t i1 = 0; i1 < lim[1]; i1++)
        for (int64_t i0 = 0; i0 < lim[0]; i0++) {
            int64_t idx[4] = {i0, i1, i2, i3};
            int64_t ir = ((idx[3]*r.ne[2] + idx[2])*r.ne[1] + idx[1])*r.ne[0] + idx[0];
            int64_t jw[4] = {i0, i1, i2, i3};
            if (tok_dim >= 0) jw[tok_dim] = jpos;
            int64_t iw = ((jw[3]*w.ne[2] + jw[2])*w.ne[1] + jw[1])*w.ne[0] + jw[0];
            float a = r.data[ir], b = w.data[iw];
            ncmp++;
            if (memcmp(&a, &b, 4) != 0) {
                if (std::isnan(a) != std::isnan(b)) nan_mismatch = true;
                if (std::isinf(a) && std::isinf(b) && a == b) continue;
                nd++;
                double d = std::fabs((double) a - (double) b);
                if (std::isfinite(d)) maxd = std::max(maxd, d);
            }
        }
        n_cmp++;
        if (nd) {
            if (n_diff < 12)
                printf("  DIFF %-28s op=%-14s srcs=[%s] ref_ne=[%lld,%lld,%lld,%lld] w_ne=[%lld,%lld,%lld,%lld] tokdim=%d ndiff=%lld/%lld maxabs=%.3g%s\n",
                       r.name.c_str(), r.op.c_str(), r.srcs.c_str(),
                       (long long) r.ne[0], (long long) r.ne[1], (long long) r.ne[2], (long long) r.ne[3],
                       (long long) w.ne[0], (long long) w.ne[1], (long long) w.ne[2], (long long) w.ne[3],
                       tok_dim, (long long) nd, (long long) ncmp, maxd, nan_mismatch ? " NaN" : "");
            n_diff++;
        }
    }
    printf("  compared %d nodes, %d differ, %d skipped (KV cache, non-float, folded token axis)\n", n_cmp, n_diff, n_skip);
}

static int do_quantize(int argc, char ** argv) {
    if (argc < 5) { fprintf(stderr, "--quantize IN OUT FTYPE\n"); return 1; }
    std::string f = argv[4];
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    std::map<std::string, llama_ftype> m = {
        {"f32", LLAMA_FTYPE_ALL_F32}, {"f16", LLAMA_FTYPE_MOSTLY_F16}, {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0}, {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
        {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},
    };
    if (!m.count(f)) { fprintf(stderr, "bad ftype\n"); return 1; }
    qp.ftype = m[f];
    qp.nthread = 2;
    return (int) llama_model_quantize(argv[2], argv[3], &qp);
}

int main(int argc, char ** argv) {
    if (argc > 1 && !strcmp(argv[1], "--quantize")) {
        llama_backend_init();
        return do_quantize(argc, argv);
    }
    opts o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto nx = [&]() -> const char * { if (i + 1 >= argc) { fprintf(stderr, "missing value\n"); exit(1); } return argv[++i]; };
        if (a == "-m") o.model = nx();
        else if (a == "-t") o.threads = atoi(nx());
        else if (a == "--fa") o.fa = atoi(nx());
        else if (a == "--repack") o.repack = atoi(nx());
        else if (a == "--swa-full") o.swa_full = atoi(nx());
        else if (a == "-p") o.n_prefill = atoi(nx());
        else if (a == "-T") o.T = atoi(nx());
        else if (a == "--ub") o.ub = atoi(nx());
        else if (a == "--ctx") o.ctx = atoi(nx());
        else if (a == "--dump") o.dump = atoi(nx());
        else if (a == "--reps") o.reps = atoi(nx());
        else if (a == "--rollback") o.rollback = 1;
        else if (a == "-ngl") o.ngl = atoi(nx());
        else if (a == "--exact") o.exact = atoi(nx());
        else if (a == "--save") o.save = nx();
        else if (a == "--cmp") o.cmp = nx();
        else if (a == "--ktype") o.tk = parse_type(nx());
        else if (a == "--vtype") o.tv = parse_type(nx());
        else if (a == "--widths") {
            o.widths.clear();
            std::string s = nx();
            size_t p = 0;
            while (p < s.size()) { size_t q = s.find(',', p); if (q == std::string::npos) q = s.size(); o.widths.push_back(atoi(s.substr(p, q - p).c_str())); p = q + 1; }
        } else { fprintf(stderr, "unknown arg %s\n", a.c_str()); return 1; }
    }
    if (o.model.empty()) { fprintf(stderr, "-m MODEL required\n"); return 1; }

    llama_log_set([](ggml_log_level lvl, const char * txt, void *) { if (lvl >= GGML_LOG_LEVEL_WARN && getenv("BIP_VERBOSE")) fputs(txt, stderr); }, nullptr);
    llama_backend_init();

    runner R;
    R.o = o;
    int max_w = *std::max_element(o.widths.begin(), o.widths.end());
    R.init(max_w);

    // prompt
    std::vector<llama_token> prompt;
    if (o.n_prefill < 0) {
        prompt.resize(512);
        int n = llama_tokenize(R.vocab, QUICKSORT_PROMPT, (int) strlen(QUICKSORT_PROMPT), prompt.data(), 512, true, false);
        prompt.resize(std::max(n, 0));
        if (n < 8) o.n_prefill = 40;
    }
    if (o.n_prefill >= 0) {
        prompt.resize(o.n_prefill);
        uint32_t s = 12345;
        for (auto & t : prompt) { s = s * 1103515245u + 12345u; t = (llama_token) ((s >> 8) % (uint32_t) R.n_vocab); }
    }
    const int P = (int) prompt.size();
    const int T = o.T;
    const int V = R.n_vocab;
    printf("model=%s P=%d T=%d threads=%d fa=%d repack=%d swa_full=%d ub=%d ctx=%d env(GGML_CPU_BATCH_INVARIANT)=%s\n",
           o.model.c_str(), P, T, o.threads, o.fa, o.repack, o.swa_full, o.ub > 0 ? o.ub : std::max(64, max_w), o.ctx,
           getenv("GGML_CPU_BATCH_INVARIANT") ? getenv("GGML_CPU_BATCH_INVARIANT") : "(unset)");

    // reference: width 1, greedy; tokens y[0..T-1] fed after the prompt, y[0] = argmax(prompt logits)
    std::vector<llama_token> y(T);
    std::vector<float> ref((size_t) T * V);
    double t_pf = R.prefill(prompt);
    y[0] = argmax(llama_get_logits_ith(R.ctx, -1), V);
    double t0 = now_s();
    for (int i = 0; i < T; i++) {
        R.decode(&y[i], 1, P + i, true);
        const float * l = llama_get_logits_ith(R.ctx, 0);
        memcpy(&ref[(size_t) i * V], l, sizeof(float) * V);
        if (i + 1 < T) y[i + 1] = argmax(l, V);
    }
    double t_w1 = now_s() - t0;
    printf("prefill %d tok: %.1f tok/s\n", P, P / t_pf);
    if (!o.save.empty()) {
        FILE * f = fopen(o.save.c_str(), "wb");
        fwrite(ref.data(), sizeof(float), ref.size(), f);
        fclose(f);
    }
    if (!o.cmp.empty()) {
        std::vector<float> other(ref.size());
        FILE * f = fopen(o.cmp.c_str(), "rb");
        size_t got = f ? fread(other.data(), sizeof(float), other.size(), f) : 0;
        if (f) fclose(f);
        int eq = 0;
        for (int i = 0; i < T && got == other.size(); i++) eq += memcmp(&ref[(size_t) i*V], &other[(size_t) i*V], sizeof(float)*V) == 0;
        printf("reference vs %s: %d/%d rows bitwise equal\n", o.cmp.c_str(), eq, T);
    }
    {
        std::string txt;
        for (int i = 0; i < std::min(T, 24); i++) {
            char buf[128];
            int n = llama_token_to_piece(R.vocab, y[i], buf, sizeof(buf), 0, true);
            if (n > 0) txt.append(buf, n);
        }
        for (auto & ch : txt) if (ch == '\n') ch = '|';
        printf("greedy (width 1): %s\n", txt.c_str());
    }

    if (o.dump >= 0) {
        const int J = o.dump;
        if (J >= T) { fprintf(stderr, "--dump J must be < T\n"); return 1; }
        for (int w : o.widths) {
            // reference capture: width 1, token J alone
            std::vector<captured> cap_ref, cap_w;
            for (int pass = 0; pass < 2; pass++) {
                int width = pass == 0 ? 1 : w;
                R.prefill(prompt);
                for (int s = 0; s < T; s += width) {
                    int n = std::min(width, T - s);
                    bool has = J >= s && J < s + n;
                    R.cap.active = has;
                    R.cap.nodes.clear();
                    R.cap.seen.clear();
                    R.decode(&y[s], n, P + s, true);
                    R.cap.active = false;
                    if (has) { (pass == 0 ? cap_ref : cap_w) = R.cap.nodes; if (pass == 1) printf("width %d: token %d at slot %d of a %d-token ubatch\n", w, J, J - s, n); }
                    if (has) {
                        if (pass == 1) compare_capture(cap_ref, cap_w, J - s, P + J + 1);
                        break;
                    }
                }
            }
        }
        llama_free(R.ctx);
        llama_model_free(R.model);
        return 0;
    }

    printf("%-6s %-8s %-10s %-12s %-10s %-10s\n", "width", "bitwise", "rows_eq", "max_abs", "tok/s", "greedy_eq");
    printf("%-6d %-8s %4d/%-5d %-12.3g %-10.1f %-10s\n", 1, "ref", T, T, 0.0, T / t_w1, "ref");
    bool all_ok = true;
    for (int w : o.widths) {
        if (w == 1 && o.reps <= 1) continue;
        double best = 1e30;
        int rows_eq = 0, rows_tot = 0; double maxd = 0; int greedy_eq = 1;
        for (int rep = 0; rep < std::max(1, o.reps); rep++) {
            R.prefill(prompt);
            rows_eq = 0; maxd = 0; greedy_eq = 1;
            double tt = 0;
            rows_tot = 0;
            for (int s = 0, adv = 0; s < T; s += adv) {
                int n = std::min(w, T - s);
                double a = now_s();
                R.decode(&y[s], n, P + s, true);
                tt += now_s() - a;
                adv = n;
                if (o.rollback && n > 1) {
                    // speculative-style rejection: keep the first ceil(n/2) tokens, drop the rest from the KV cache
                    adv = n - n / 2;
                    llama_memory_seq_rm(llama_get_memory(R.ctx), 0, P + s + adv, -1);
                }
                rows_tot += n;
                for (int i = 0; i < n; i++) {
                    const float * l = llama_get_logits_ith(R.ctx, i);
                    const float * r = &ref[(size_t) (s + i) * V];
                    if (memcmp(l, r, sizeof(float) * V) == 0) rows_eq++;
                    else for (int k = 0; k < V; k++) maxd = std::max(maxd, (double) std::fabs(l[k] - r[k]));
                    if (s + i + 1 < T && argmax(l, V) != y[s + i + 1]) greedy_eq = 0;
                }
            }
            best = std::min(best, tt);
        }
        bool ok = rows_eq == rows_tot;
        all_ok &= ok;
        printf("%-6d %-8s %4d/%-5d %-12.3g %-10.1f %-10s\n", w, ok ? "yes" : "NO", rows_eq, rows_tot, maxd, T / best, greedy_eq ? "yes" : "no");
    }
    printf("ALL_BITWISE_EQUAL=%s\n", all_ok ? "yes" : "no");
    llama_free(R.ctx);
    llama_model_free(R.model);
    return all_ok ? 0 : 2;
}
