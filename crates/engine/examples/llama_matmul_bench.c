// llama.cpp's side of crates/engine/examples/kernel_bench.rs: ggml_mul_mat of a random
// quantized [rows x cols] matrix (weights in the CPU backend's REPACK buffer type for the
// formats llama.cpp repacks on x86, as it loads them) with n f32 activation rows, best of
// reps (the time includes quantizing the activations, as in llama.cpp), wall-clock and the
// process's CPU time.
//
// Build against the anchor build of scripts/llama-cpp.sh:
//   R=~/.cache/distributed-llm/llama.cpp/0.3.36
//   gcc -O2 -o /tmp/llama_matmul_bench crates/engine/examples/llama_matmul_bench.c
//     -I$R/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include -L$R/build/bin
//     -lggml -lggml-base -lggml-cpu -Wl,-rpath,$R/build/bin
//
// usage: llama_matmul_bench TYPE ROWS COLS N THREADS REPS [plain]
//   TYPE: q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K q6_K iq4_nl; "plain" keeps the
//   weights in the plain CPU buffer (llama.cpp's vec_dot kernels, no repacking).
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double clock_s(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s TYPE ROWS COLS N THREADS REPS [plain]\n", argv[0]);
        return 1;
    }
    enum ggml_type type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char * name = ggml_type_name((enum ggml_type) t);
        if (name && strcmp(name, argv[1]) == 0) type = (enum ggml_type) t;
    }
    if (type == GGML_TYPE_COUNT) { fprintf(stderr, "unknown type %s\n", argv[1]); return 1; }
    const int64_t rows = atoll(argv[2]), cols = atoll(argv[3]), n = atoll(argv[4]);
    const int threads = atoi(argv[5]), reps = atoi(argv[6]);
    // The formats llama.cpp repacks on x86 (AVX2; Q2_K with AVX-512), the others stay plain.
    const int repacked = type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_K || type == GGML_TYPE_IQ4_NL ||
                         (type == GGML_TYPE_Q2_K && ggml_cpu_has_avx512());
    const int plain = !repacked || (argc > 7 && strcmp(argv[7], "plain") == 0);

    ggml_backend_t be = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(be, threads);
    ggml_backend_dev_t dev = ggml_backend_get_device(be);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_buffer_type_t wbuft = ggml_backend_cpu_buffer_type();
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (!plain && get_extra) {
        for (ggml_backend_buffer_type_t * b = get_extra(dev); b && *b; b++) {
            if (strstr(ggml_backend_buft_name(*b), "REPACK")) wbuft = *b;
        }
    }

    struct ggml_init_params wp = { 2 * ggml_tensor_overhead(), NULL, true };
    struct ggml_context * cw = ggml_init(wp);
    struct ggml_tensor * w = ggml_new_tensor_2d(cw, type, cols, rows);
    struct ggml_context * cx = ggml_init(wp);
    struct ggml_tensor * x = ggml_new_tensor_2d(cx, GGML_TYPE_F32, cols, n);
    ggml_backend_buffer_t bw = ggml_backend_alloc_ctx_tensors_from_buft(cw, wbuft);
    ggml_backend_buffer_t bx = ggml_backend_alloc_ctx_tensors_from_buft(cx, ggml_backend_cpu_buffer_type());
    if (!bw || !bx) { fprintf(stderr, "alloc failed\n"); return 1; }

    // Blocks from a real quantization of 64 rows of random values (so scales are sane),
    // repeated over the matrix (the caches do not care what the bytes are).
    const size_t bytes = ggml_row_size(type, cols) * rows;
    float * f = malloc(sizeof(float) * cols * 64);
    for (int64_t i = 0; i < cols * 64; i++) f[i] = (float) ((next() >> 40) / (double) (1 << 23) - 1.0);
    char * q = malloc(bytes);
    const size_t chunk = ggml_row_size(type, cols) * 64;
    for (int64_t r = 0; r < rows; r += 64) {
        if (r == 0) ggml_quantize_chunk(type, f, q, 0, 64, cols, NULL);
        else memcpy(q + (r / 64) * chunk, q, chunk);
    }
    ggml_backend_tensor_set(w, q, 0, bytes);
    float * xs = malloc(sizeof(float) * cols * n);
    for (int64_t i = 0; i < cols * n; i++) xs[i] = (float) ((next() >> 40) / (double) (1 << 23) - 1.0);
    ggml_backend_tensor_set(x, xs, 0, sizeof(float) * cols * n);

    struct ggml_init_params gp = { ggml_tensor_overhead() * 8 + ggml_graph_overhead(), NULL, true };
    struct ggml_context * cg = ggml_init(gp);
    struct ggml_tensor * y = ggml_mul_mat(cg, w, x);
    struct ggml_cgraph * g = ggml_new_graph(cg);
    ggml_build_forward_expand(g, y);
    ggml_gallocr_t ga = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
    ggml_gallocr_alloc_graph(ga, g);

    double best = 1e30, best_cpu = 1e30;
    for (int i = 0; i < reps; i++) {
        double c = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        double t = clock_s(CLOCK_MONOTONIC);
        ggml_backend_graph_compute(be, g);
        t = clock_s(CLOCK_MONOTONIC) - t;
        c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c;
        if (t < best) best = t;
        if (c < best_cpu) best_cpu = c;
    }
    // The process's CPU time is the compute time with 1 thread (time slices given to other
    // processes do not count); with more it is their sum.
    printf("%s %s %lldx%lld n=%lld threads=%d: %.3f ms, %.2f GB/s of weights, %.2f GMAC/s; cpu %.3f ms\n",
           argv[1], ggml_backend_buft_name(wbuft), (long long) rows, (long long) cols, (long long) n, threads,
           best * 1e3, bytes / best / 1e9, (double) rows * cols * n / best / 1e9, best_cpu * 1e3);
    return 0;
}
