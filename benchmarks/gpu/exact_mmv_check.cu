// Stand-alone check and timing of csrc/cuda/exact_mmv.cu on a GPU (run by run_h200.sh step "mmv"):
//
//   nvcc -O3 -std=c++17 -arch=sm_90a -Icsrc/cuda benchmarks/gpu/exact_mmv_check.cu csrc/cuda/exact_mmv.cu -o /tmp/mmv
//   /tmp/mmv            # correctness: every type, widths 1..17, 24, 25, 33 (exit 1 on any failure)
//   /tmp/mmv --bench    # microseconds per launch on the 8B Q4_K_M and Gemma 3 270M shapes
//
// Correctness, per weight type, on random blocks and random activations quantized to q8_1:
// - against a float64 reference over the same quantized values (relative to the sum of |terms|);
// - batch invariance: column j of a width-W launch is bitwise equal to a width-1 launch of column j,
//   for every W; the output is poisoned first and nothing outside [rows x W] is written.
#include "exact_mmv.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace pyspec_cuda;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); std::exit(2); } } while (0)

struct TypeInfo { int type; const char * name; int bytes; int values; };
static const TypeInfo TYPES[] = {
    {EXACT_MMV_Q4_0, "Q4_0", 18, 32}, {EXACT_MMV_Q5_0, "Q5_0", 22, 32}, {EXACT_MMV_Q8_0, "Q8_0", 34, 32},
    {EXACT_MMV_Q4_K, "Q4_K", 144, 256}, {EXACT_MMV_Q6_K, "Q6_K", 210, 256},
};

static uint16_t f2h(float f) { __half h = __float2half(f); uint16_t u; std::memcpy(&u, &h, 2); return u; }
static float h2f(const uint8_t * p) { __half h; std::memcpy(&h, p, 2); return __half2float(h); }
static void put_h(uint8_t * p, float f) { uint16_t u = f2h(f); std::memcpy(p, &u, 2); }

// Random weight blocks: random quant bytes, sane scales.
static std::vector<uint8_t> random_weights(const TypeInfo & ti, int64_t nrows, int64_t k, std::mt19937 & rng) {
    const int64_t nb = k / ti.values;
    std::vector<uint8_t> w(size_t(nrows * nb * ti.bytes));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> sc(0.002f, 0.02f);
    for (auto & b : w) b = uint8_t(byte(rng));
    for (int64_t i = 0; i < nrows * nb; ++i) {
        uint8_t * b = w.data() + i * ti.bytes;
        switch (ti.type) {
            case EXACT_MMV_Q4_0: case EXACT_MMV_Q5_0: case EXACT_MMV_Q8_0: put_h(b, sc(rng)); break;
            case EXACT_MMV_Q4_K: put_h(b, sc(rng)); put_h(b + 2, sc(rng)); break;
            case EXACT_MMV_Q6_K: put_h(b + 208, sc(rng)); break;
        }
    }
    return w;
}

// Weight value k of a row as (integer part q, multiplier) so the reference can follow the kernel's
// split: value = mult * q - off, where off (Q4_K's min term) multiplies the activation block sum.
struct WVal { double mult; int q; double off; };
static WVal weight_value(const TypeInfo & ti, const uint8_t * row, int64_t k) {
    const uint8_t * b = row + (k / ti.values) * ti.bytes;
    const int j = int(k % ti.values);
    switch (ti.type) {
        case EXACT_MMV_Q4_0: { const int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4); return {h2f(b), q - 8, 0}; }
        case EXACT_MMV_Q5_0: {
            uint32_t qh; std::memcpy(&qh, b + 2, 4);
            const int lo = j < 16 ? (b[6 + j] & 15) : (b[6 + j - 16] >> 4);
            return {h2f(b), int(lo | (((qh >> j) & 1) << 4)) - 16, 0};
        }
        case EXACT_MMV_Q8_0: return {h2f(b), int(int8_t(b[2 + j])), 0};
        case EXACT_MMV_Q4_K: {
            const int s = j / 32, l = j % 32;
            const uint8_t * sc = b + 4;
            int d, m;
            if (s < 4) { d = sc[s] & 63; m = sc[s + 4] & 63; }
            else { d = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4); m = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4); }
            const uint8_t q = b[16 + 32 * (s / 2) + l];
            return {double(h2f(b)) * d, (s % 2) ? (q >> 4) : (q & 15), double(h2f(b + 2)) * m};
        }
        case EXACT_MMV_Q6_K: {
            const int n = j / 128, m = (j % 128) / 32, l = j % 32;
            const uint8_t ql = b[64 * n + 32 * (m & 1) + l];
            const uint8_t qh = b[128 + 32 * n + l];
            const int q = (((m >> 1) ? (ql >> 4) : (ql & 15)) | (((qh >> (2 * m)) & 3) << 4)) - 32;
            return {double(h2f(b + 208)) * int8_t(b[192 + 8 * n + 2 * m + l / 16]), q, 0};
        }
    }
    return {0, 0, 0};
}

// Activations: ncols columns of k floats, quantized like ggml's quantize_q8_1 (d = amax/127, ds = (d, d*sum)).
static std::vector<uint8_t> quantize_q8_1(const std::vector<float> & y, int64_t k, int64_t ncols) {
    const int64_t nb = k / 32;
    std::vector<uint8_t> out(size_t(ncols * nb * 36));
    for (int64_t c = 0; c < ncols; ++c) {
        for (int64_t i = 0; i < nb; ++i) {
            const float * x = y.data() + c * k + i * 32;
            uint8_t * b = out.data() + (c * nb + i) * 36;
            float amax = 0;
            for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(x[l]));
            const float d = amax / 127.0f;
            int sum = 0;
            for (int l = 0; l < 32; ++l) {
                const int q = amax == 0 ? 0 : int(std::lround(x[l] / d));
                b[4 + l] = uint8_t(int8_t(q));
                sum += q;
            }
            put_h(b, d);
            put_h(b + 2, d * sum);
        }
    }
    return out;
}

static void reference(const TypeInfo & ti, const std::vector<uint8_t> & w, int64_t nrows, int64_t k,
                      const std::vector<uint8_t> & yq, int64_t ncols, std::vector<double> & ref, std::vector<double> & mag) {
    const int64_t nb = k / 32, row_bytes = (k / ti.values) * ti.bytes;
    ref.assign(size_t(nrows * ncols), 0.0);
    mag.assign(size_t(nrows * ncols), 0.0);
    for (int64_t c = 0; c < ncols; ++c) {
        for (int64_t r = 0; r < nrows; ++r) {
            double s = 0, a = 0;
            for (int64_t i = 0; i < nb; ++i) {
                const uint8_t * b = yq.data() + (c * nb + i) * 36;
                const double dy = h2f(b);
                double dot = 0, off = 0, sumq = 0;
                for (int l = 0; l < 32; ++l) {
                    const WVal v = weight_value(ti, w.data() + r * row_bytes, i * 32 + l);
                    dot += v.mult * v.q * int8_t(b[4 + l]);
                    off = v.off;
                    sumq += int8_t(b[4 + l]);
                }
                const double dys = dy * sumq;   // the kernel's min term uses the exact sum of the quants
                s += dot * dy - off * dys;
                a += std::fabs(dot * dy) + std::fabs(off * dys);
            }
            ref[c * nrows + r] = s;
            mag[c * nrows + r] = a;
        }
    }
}

static const uint32_t POISON = 0x7fc0dead;

static bool check_type(const TypeInfo & ti, int64_t nrows, int64_t k, std::mt19937 & rng) {
    const int64_t maxc = 33, nb = k / 32;
    std::vector<uint8_t> w = random_weights(ti, nrows, k, rng);
    std::vector<float> y(size_t(maxc * k));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto & v : y) v = nd(rng);
    std::vector<uint8_t> yq = quantize_q8_1(y, k, maxc);
    std::vector<double> ref, mag;
    reference(ti, w, nrows, k, yq, maxc, ref, mag);

    void *dw, *dy;
    float * dd;
    const int64_t guard = 64;
    CK(cudaMalloc(&dw, w.size()));
    CK(cudaMalloc(&dy, yq.size()));
    CK(cudaMalloc(&dd, (nrows * maxc + guard) * sizeof(float)));
    CK(cudaMemcpy(dw, w.data(), w.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dy, yq.data(), yq.size(), cudaMemcpyHostToDevice));
    std::vector<float> out(size_t(nrows * maxc + guard)), solo(size_t(nrows * maxc));

    auto run = [&](int64_t c0, int64_t ncols) {
        std::vector<uint32_t> poison(out.size(), POISON);
        CK(cudaMemcpy(dd, poison.data(), poison.size() * 4, cudaMemcpyHostToDevice));
        ExactMmvArgs a{ti.type, dw, k / ti.values, nrows, k, static_cast<uint8_t *>(dy) + c0 * nb * 36, nb, ncols, dd, nrows, nullptr};
        exact_mmv_run(a);
        CK(cudaGetLastError());
        CK(cudaMemcpy(out.data(), dd, out.size() * 4, cudaMemcpyDeviceToHost));
    };

    bool ok = true;
    double worst = 0;
    for (int64_t c = 0; c < maxc; ++c) {  // width 1, column by column
        run(c, 1);
        for (int64_t r = 0; r < nrows; ++r) {
            const double e = std::fabs(out[r] - ref[c * nrows + r]) / (mag[c * nrows + r] + 1e-30);
            worst = std::max(worst, e);
        }
        std::memcpy(solo.data() + c * nrows, out.data(), nrows * 4);
        uint32_t u;
        std::memcpy(&u, &out[nrows], 4);
        if (u != POISON) { std::printf("  %s width 1 wrote past its column\n", ti.name); ok = false; }
    }
    if (worst > 1e-5) { std::printf("  %s: relative error %.3g against the float64 reference\n", ti.name, worst); ok = false; }
    int bad_widths = 0;
    for (int64_t wdt : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 24, 25, 33}) {
        run(0, wdt);
        bool same = std::memcmp(out.data(), solo.data(), size_t(nrows * wdt) * 4) == 0;
        for (int64_t i = nrows * wdt; i < int64_t(out.size()); ++i) {
            uint32_t u; std::memcpy(&u, &out[i], 4);
            same = same && u == POISON;
        }
        if (!same) { std::printf("  %s: width %lld differs from width 1\n", ti.name, (long long) wdt); ++bad_widths; }
    }
    ok = ok && bad_widths == 0;
    std::printf("%-5s rows %6lld K %5lld: max rel err %.2e, widths 1..33 %s -> %s\n", ti.name, (long long) nrows, (long long) k,
                worst, bad_widths ? "DIFFER" : "bitwise equal", ok ? "ok" : "FAIL");
    CK(cudaFree(dw)); CK(cudaFree(dy)); CK(cudaFree(dd));
    return ok;
}

// Device copies of random weights, constant activations (0.5, quantized) and an output, for timing.
struct TimingBuffers {
    const TypeInfo & ti;
    int64_t nrows, k;
    size_t w_bytes = 0;
    void * w = nullptr, * y = nullptr;
    float * dst = nullptr;
    TimingBuffers(const TypeInfo & t, int64_t rows, int64_t kk, int64_t maxc, std::mt19937 & rng) : ti(t), nrows(rows), k(kk) {
        std::vector<uint8_t> hw = random_weights(ti, nrows, k, rng);
        std::vector<uint8_t> hy = quantize_q8_1(std::vector<float>(size_t(maxc * k), 0.5f), k, maxc);
        w_bytes = hw.size();
        CK(cudaMalloc(&w, hw.size())); CK(cudaMalloc(&y, hy.size())); CK(cudaMalloc(&dst, nrows * maxc * 4));
        CK(cudaMemcpy(w, hw.data(), hw.size(), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(y, hy.data(), hy.size(), cudaMemcpyHostToDevice));
    }
    ~TimingBuffers() { cudaFree(w); cudaFree(y); cudaFree(dst); }
    ExactMmvArgs args(int64_t ncols) const { return {ti.type, w, k / ti.values, nrows, k, y, k / 32, ncols, dst, nrows, nullptr}; }
};

static void bench_shape(const TypeInfo & ti, int64_t nrows, int64_t k, const char * what, std::mt19937 & rng) {
    const TimingBuffers buf(ti, nrows, k, 32, rng);
    // a buffer larger than L2 to evict the weights between launches
    static void * flush = nullptr; const size_t flush_bytes = 256u << 20;
    if (!flush) { CK(cudaMalloc(&flush, flush_bytes)); }
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    std::printf("%-5s %-14s %6lld x %5lld (%6.2f MB):", ti.name, what, (long long) nrows, (long long) k, buf.w_bytes / 1e6);
    for (int wdt : {1, 2, 4, 8, 9, 16, 17, 24, 32}) {
        const ExactMmvArgs a = buf.args(wdt);
        std::vector<float> ts;
        for (int it = 0; it < 30; ++it) {
            CK(cudaMemsetAsync(flush, it, flush_bytes));
            CK(cudaEventRecord(e0));
            exact_mmv_run(a);
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
            ts.push_back(ms * 1000.0f);
        }
        std::sort(ts.begin(), ts.end());
        const float us = ts[ts.size() / 2];
        std::printf(" %d:%.1f", wdt, us);
        if (wdt == 1) std::printf("us(%.0fGB/s)", buf.w_bytes / (us * 1e3));
    }
    std::printf("\n");
}

// --one TYPE ROWS K NCOLS: 20 launches of one shape (for ncu: --launch-skip 10 --launch-count 1).
static int one(int argc, char ** argv, std::mt19937 & rng) {
    if (argc < 6) { std::fprintf(stderr, "usage: --one TYPE ROWS K NCOLS\n"); return 2; }
    const TypeInfo * ti = nullptr;
    for (const TypeInfo & t : TYPES) if (std::string(argv[2]) == t.name) ti = &t;
    if (!ti) { std::fprintf(stderr, "unknown type %s\n", argv[2]); return 2; }
    const int64_t nrows = std::atoll(argv[3]), k = std::atoll(argv[4]), ncols = std::atoll(argv[5]);
    const TimingBuffers buf(*ti, nrows, k, ncols, rng);
    for (int it = 0; it < 20; ++it) exact_mmv_run(buf.args(ncols));
    CK(cudaDeviceSynchronize());
    std::printf("%s %lld x %lld, %lld columns: 20 launches\n", ti->name, (long long) nrows, (long long) k, (long long) ncols);
    return 0;
}

int main(int argc, char ** argv) {
    std::mt19937 rng(1234);
    if (argc > 1 && std::string(argv[1]) == "--one") return one(argc, argv, rng);
    const bool bench = argc > 1 && std::string(argv[1]) == "--bench";
    if (!bench) {
        bool ok = true;
        for (const TypeInfo & ti : TYPES) {
            // shapes the kernels cover (exact_mmv_supports): Q6_K rows of 4 super-blocks
            const int64_t k = ti.type == EXACT_MMV_Q6_K ? 1024 : 512;
            if (!exact_mmv_supports(ti.type, k)) { std::printf("%s K %lld not covered\n", ti.name, (long long) k); ok = false; continue; }
            ok = check_type(ti, 83, k, rng) && ok;
            ok = check_type(ti, 5000, k, rng) && ok;   // more row tiles than blocks
        }
        std::printf(ok ? "ALL OK\n" : "FAILURES\n");
        return ok ? 0 : 1;
    }
    const TypeInfo & q4k = TYPES[3], & q6k = TYPES[4], & q5 = TYPES[1], & q8 = TYPES[2];
    bench_shape(q4k, 4096, 4096, "8B attn q/o", rng);
    bench_shape(q4k, 1024, 4096, "8B attn k", rng);
    bench_shape(q6k, 1024, 4096, "8B attn v", rng);
    bench_shape(q4k, 14336, 4096, "8B ffn gate/up", rng);
    bench_shape(q4k, 4096, 14336, "8B ffn down", rng);
    bench_shape(q6k, 4096, 14336, "8B ffn down Q6", rng);
    bench_shape(q6k, 128256, 4096, "8B output", rng);
    bench_shape(q5, 1024, 640, "270M attn q", rng);
    bench_shape(q5, 2048, 640, "270M ffn up", rng);
    bench_shape(q4k, 640, 2048, "270M ffn down", rng);
    bench_shape(q8, 262144, 640, "270M output", rng);
    bench_shape(q4k, 16384, 16384, "dense 16k", rng);
    return 0;
}
