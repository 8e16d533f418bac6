/* simd.c — the micro-kernel of every convolution and attention product, once per instruction set, and the
   run-time choice between them (issue 5).

   The shipped library is built for plain x86-64 (no -march=native), so the wide kernels are separate
   functions compiled with GCC's target attribute and chosen once, when a backend is created, from
   __builtin_cpu_supports: AVX-512 where the CPU has it, else AVX2 + FMA, else the portable C kernel of conv.c.
   ELANSR_CPU_ISA=generic|avx2|avx512 forces a path (one the CPU cannot run falls back to the best it can),
   which is how the tests run the forward on every path.

   Kernel: out[m][j] = bias[m] + sum_k w[k][m] x[k][j] for one tile of 16 pixels (cpu_ops.h). The pixels are
   the vector lanes; every weight is a broadcast. AVX-512: one zmm holds the tile's 16 pixels of an output
   row, and R rows (R = 24, 20, 16, 12, 8, 4 or 1, largest first) are accumulated at once, so one k step is one
   16-float load of x and R broadcast FMAs; 24 accumulators of the 32 registers hide the FMA latency and
   the weight broadcasts come straight from L1 as memory operands. AVX2: two ymm per row, 6 rows (12
   accumulators of 16). R is a compile-time constant in each instantiation (always_inline + constant
   argument), so the accumulator arrays live in registers. FMA rounds once instead of twice, so results
   differ from the generic path in the last bits only (the tests bound it). */
#include "cpu_ops.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CPU_HAVE_X86 1
#define T512 __attribute__((target("avx512f,avx512vl,avx512dq,fma,prefer-vector-width=512")))
#define T256 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

T512 INLINE void blk512(const int R, int K, const float *w, size_t ldw, const float *bias, const float *x,
                        size_t ldx, float *out, size_t ldo, __mmask16 msk, int mode) {
    __m512 acc[24];
#pragma GCC unroll 24
    for (int r = 0; r < R; r++) acc[r] = bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m512 xv = _mm512_loadu_ps(x + (size_t)k * ldx);
        const float *wk = w + (size_t)k * ldw;
#pragma GCC unroll 24
        for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(wk[r]), xv, acc[r]);
    }
    if (msk == 0xFFFF) {
#pragma GCC unroll 24
        for (int r = 0; r < R; r++) {
            float *o = out + (size_t)r * ldo;
            __m512 a = acc[r];
            if (mode == CPU_ADD) a = _mm512_add_ps(_mm512_loadu_ps(o), a);
            else if (mode == CPU_RELU) a = _mm512_max_ps(a, _mm512_setzero_ps());
            _mm512_storeu_ps(o, a);
        }
    } else {
        for (int r = 0; r < R; r++) {
            float *o = out + (size_t)r * ldo;
            __m512 a = acc[r];
            if (mode == CPU_ADD) a = _mm512_add_ps(_mm512_maskz_loadu_ps(msk, o), a);
            else if (mode == CPU_RELU) a = _mm512_max_ps(a, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(o, msk, a);
        }
    }
}

T512 static void gemm_avx512(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x,
                             size_t ldx, float *out, size_t ldo, int nvalid, int mode) {
    const __mmask16 msk = (__mmask16)((1u << nvalid) - 1u);
    int m = 0;
#define B512(R)                                                                                               \
    blk512(R, K, wt + m, ldw, bias ? bias + m : NULL, x, ldx, out + (size_t)m * ldo, ldo, msk, mode); \
    m += R
    while (M - m >= 24) { B512(24); }
    if (M - m >= 20) { B512(20); } /* the attention's A v: k = 20 channels in one block */
    if (M - m >= 16) { B512(16); }
    if (M - m >= 12) { B512(12); }
    if (M - m >= 8) { B512(8); }
    if (M - m >= 4) { B512(4); }
    while (M - m >= 1) { B512(1); }
#undef B512
}

/* Two tiles (32 pixels, x rows of ldx floats holding both) at once: R rows x 2 zmm, so each weight broadcast
   feeds two FMAs. With one tile the k step is 1 + R loads for R FMAs and the loads, not the FMAs, set the
   pace; with two it is 2 + R loads for 2R FMAs. Both tiles full. */
T512 INLINE void blk512x2(const int R, int K, const float *w, size_t ldw, const float *bias, const float *x,
                          size_t ldx, float *out, size_t ldo, int mode) {
    __m512 a0[12], a1[12];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) a0[r] = a1[r] = bias ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m512 x0 = _mm512_loadu_ps(x + (size_t)k * ldx), x1 = _mm512_loadu_ps(x + (size_t)k * ldx + 16);
        const float *wk = w + (size_t)k * ldw;
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            const __m512 wv = _mm512_set1_ps(wk[r]);
            a0[r] = _mm512_fmadd_ps(wv, x0, a0[r]);
            a1[r] = _mm512_fmadd_ps(wv, x1, a1[r]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        float *o = out + (size_t)r * ldo;
        __m512 b0 = a0[r], b1 = a1[r];
        if (mode == CPU_ADD) {
            b0 = _mm512_add_ps(_mm512_loadu_ps(o), b0);
            b1 = _mm512_add_ps(_mm512_loadu_ps(o + 16), b1);
        } else if (mode == CPU_RELU) {
            b0 = _mm512_max_ps(b0, _mm512_setzero_ps());
            b1 = _mm512_max_ps(b1, _mm512_setzero_ps());
        }
        _mm512_storeu_ps(o, b0);
        _mm512_storeu_ps(o + 16, b1);
    }
}

T512 static void gemm2_avx512(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x,
                              size_t ldx, float *out, size_t ldo, int nvalid, int mode) {
    (void)nvalid;
    int m = 0;
#define B512X2(R)                                                                                       \
    blk512x2(R, K, wt + m, ldw, bias ? bias + m : NULL, x, ldx, out + (size_t)m * ldo, ldo, mode); \
    m += R
    while (M - m >= 12) { B512X2(12); }
    if (M - m >= 8) { B512X2(8); }
    if (M - m >= 4) { B512X2(4); }
    while (M - m >= 1) { B512X2(1); }
#undef B512X2
}

T256 INLINE void blk256(const int R, int K, const float *w, size_t ldw, const float *bias, const float *x,
                        size_t ldx, float *out, size_t ldo, int nvalid, int mode) {
    __m256 a0[6], a1[6];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) a0[r] = a1[r] = bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m256 x0 = _mm256_loadu_ps(x + (size_t)k * ldx), x1 = _mm256_loadu_ps(x + (size_t)k * ldx + 8);
        const float *wk = w + (size_t)k * ldw;
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const __m256 wv = _mm256_broadcast_ss(wk + r);
            a0[r] = _mm256_fmadd_ps(wv, x0, a0[r]);
            a1[r] = _mm256_fmadd_ps(wv, x1, a1[r]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        float *o = out + (size_t)r * ldo;
        if (nvalid == CPU_TW) {
            __m256 b0 = a0[r], b1 = a1[r];
            if (mode == CPU_ADD) {
                b0 = _mm256_add_ps(_mm256_loadu_ps(o), b0);
                b1 = _mm256_add_ps(_mm256_loadu_ps(o + 8), b1);
            } else if (mode == CPU_RELU) {
                b0 = _mm256_max_ps(b0, _mm256_setzero_ps());
                b1 = _mm256_max_ps(b1, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(o, b0);
            _mm256_storeu_ps(o + 8, b1);
        } else {
            float t[CPU_TW];
            _mm256_storeu_ps(t, a0[r]);
            _mm256_storeu_ps(t + 8, a1[r]);
            for (int j = 0; j < nvalid; j++) {
                const float v = t[j];
                o[j] = mode == CPU_ADD ? o[j] + v : (mode == CPU_RELU && !(v > 0.0f)) ? 0.0f : v;
            }
        }
    }
}

T256 static void gemm_avx2(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x,
                           size_t ldx, float *out, size_t ldo, int nvalid, int mode) {
    int m = 0;
#define B256(R)                                                                                                 \
    blk256(R, K, wt + m, ldw, bias ? bias + m : NULL, x, ldx, out + (size_t)m * ldo, ldo, nvalid, mode); \
    m += R
    while (M - m >= 6) { B256(6); }
    if (M - m >= 4) { B256(4); }
    if (M - m >= 2) { B256(2); }
    if (M - m >= 1) { B256(1); }
#undef B256
}
#endif

static _Atomic int g_isa = -1;

const char *cpu_isa_name(int isa) {
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "generic";
}

int cpu_isa_best(void) {
#ifdef CPU_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
        return CPU_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CPU_ISA_AVX2;
#endif
    return CPU_ISA_GENERIC;
}

int cpu_isa_select(void) {
    const int best = cpu_isa_best();
    int isa = best;
    const char *e = getenv("ELANSR_CPU_ISA");
    if (e && *e) {
        if (strcmp(e, "generic") == 0) isa = CPU_ISA_GENERIC;
        else if (strcmp(e, "avx2") == 0) isa = CPU_ISA_AVX2;
        else if (strcmp(e, "avx512") == 0) isa = CPU_ISA_AVX512;
        if (isa > best) isa = best;
    }
    cpu_set_isa(isa);
    return isa;
}

void cpu_set_isa(int isa) { atomic_store_explicit(&g_isa, isa, memory_order_relaxed); }

int cpu_get_isa(void) {
    int isa = atomic_load_explicit(&g_isa, memory_order_relaxed);
    return isa < 0 ? cpu_isa_select() : isa;
}

cpu_gemm_fn cpu_gemm_for(int isa) {
#ifdef CPU_HAVE_X86
    if (isa == CPU_ISA_AVX512) return gemm_avx512;
    if (isa == CPU_ISA_AVX2) return gemm_avx2;
#endif
    (void)isa;
    return cpu_gemm_tile;
}

cpu_gemm_fn cpu_gemm2_for(int isa) {
#ifdef CPU_HAVE_X86
    if (isa == CPU_ISA_AVX512) return gemm2_avx512;
#endif
    (void)isa;
    return NULL;
}
