/* dev_common.h — what the kernel checks of dev/cuda/ share: the CUDA error check, the random generators that
   fill their inputs, host conversions to and from the half types, and the event timing of a launch. Each check
   stays one standalone program; this header only keeps these helpers in one place. */
#ifndef ELANSR_DEV_COMMON_H
#define ELANSR_DEV_COMMON_H

#include "cuda_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CK(x)                                                                                         \
    do {                                                                                              \
        cudaError_t e_ = (x);                                                                         \
        if (e_ != cudaSuccess) {                                                                      \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));        \
            exit(2);                                                                                  \
        }                                                                                             \
    } while (0)

/* splitmix64; a check may pick its own seed by defining DEV_RNG_SEED before including this header */
#ifndef DEV_RNG_SEED
#define DEV_RNG_SEED 0x9E3779B97F4A7C15ull
#endif
static uint64_t rng_state = DEV_RNG_SEED;
static inline uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* magnitude in [lo, hi), random sign: never zero */
static inline float rnd_mag(float lo, float hi) {
    const uint64_t r = rng_next();
    const float u = (float)(r >> 40) * (1.0f / 16777216.0f);
    const float v = lo + (hi - lo) * u;
    return (r & 1) ? -v : v;
}

/* a small LCG, uniform in [-1, 1) (the attention checks' inputs) */
static inline float frand(void) {
    static unsigned rng = 12345u;
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

/* fp16 / bf16 (act) <-> float through their bit patterns, rounding to nearest */
static inline uint16_t to_bits(float f, int act) {
    if (act == ELAN_ACT_F16) {
        const __half_raw r = __float2half_rn(f);
        return r.x;
    }
    const __nv_bfloat16_raw r = __float2bfloat16_rn(f);
    return r.x;
}
static inline float from_bits(uint16_t u, int act) {
    if (act == ELAN_ACT_F16) {
        __half_raw r;
        r.x = u;
        return __half2float(__half(r));
    }
    __nv_bfloat16_raw r;
    r.x = u;
    return __bfloat162float(__nv_bfloat16(r));
}

/* the same with the type as a template parameter */
template <typename T> static float h2f(T v);
template <> inline float h2f<__half>(__half v) { return __half2float(v); }
template <> inline float h2f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> static T f2h(float v);
template <> inline __half f2h<__half>(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 f2h<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> inline float h2f<float>(float v) { return v; }
template <> inline float f2h<float>(float v) { return v; }
static inline float round_half(float v) { return __half2float(__float2half_rn(v)); }
/* v rounded to tf32 as cvt.rna.tf32.f32 does (10 mantissa bits, ties away from zero; finite v) */
static inline float round_tf32(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&v, &u, 4);
    return v;
}

/* Times of `runs` calls of launch(i) after `warm` untimed ones, sorted, in ms: the events are recorded back to
   back on stream 0 with one synchronisation at the end, so no host round trip separates the launches. */
template <typename F>
static std::vector<float> sorted_times_ms(int warm, int runs, F launch) {
    for (int i = 0; i < warm; i++) CK(launch(i));
    CK(cudaDeviceSynchronize());
    std::vector<cudaEvent_t> ev(2 * runs);
    for (auto &e : ev) CK(cudaEventCreate(&e));
    for (int i = 0; i < runs; i++) {
        CK(cudaEventRecord(ev[2 * i], 0));
        CK(launch(i));
        CK(cudaEventRecord(ev[2 * i + 1], 0));
    }
    CK(cudaDeviceSynchronize());
    std::vector<float> ms(runs);
    for (int i = 0; i < runs; i++) CK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
    for (auto &e : ev) CK(cudaEventDestroy(e));
    std::sort(ms.begin(), ms.end());
    return ms;
}

/* Median of 50 CUDA-event-timed calls of launch() after 10 warm-up calls, in ms. */
template <typename F>
static double median_ms(F launch) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int it = 0; it < 60; it++) {
        CK(cudaEventRecord(e0));
        CK(launch());
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float m;
        CK(cudaEventElapsedTime(&m, e0, e1));
        if (it >= 10) ms.push_back(m);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

#endif
