// kernel: none
/* check_rates.cu — how fast this GPU issues the instructions our kernels are made of, per SM and clock, measured
   with clock64 spans: mma.sync m16n8k16 and m16n8k8 (fp16 in, fp32 accumulate), MUFU ex2, and the
   F2FP pack that rounds two floats to fp16x2. These turn the instruction counts of a kernel (Nsight Compute,
   bench/gpu_pipes.sh) into pipe floors: a kernel cannot run faster than its busiest pipe allows, and the
   distance between that floor and its time is latency the kernel failed to hide.

   Each warp runs CH independent dependency chains (so the rate is a throughput, not a latency, once CH x warps
   is large enough), WARPS warps per CTA, one CTA per SM, every CTA resident at once. The span of an SM is
   max(end) - min(start) of its CTAs in SM clocks (clock64). The check: the mma chains' final accumulators are
   compared with the same sums on the CPU (inputs small powers of two, so every partial sum is exact). */
#include "dev_common.h"
#include "mma.h"

#define ITERS 4096

/* The kernels' common end: the thread's result (kept so the chains are not optimised away) and, from thread 0,
   the CTA's clock64 span and SM. */
static __device__ __forceinline__ void rate_record(float s, long long t0, long long t1, float *out, long long *span) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
    if (threadIdx.x == 0) {
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        span[3 * blockIdx.x] = t0, span[3 * blockIdx.x + 1] = t1, span[3 * blockIdx.x + 2] = sm;
    }
}

/* acc += A B for CH chains, A = a everywhere, B = b everywhere (as fp16 pairs) */
template <int CH, bool K8>
static __global__ void mma_rate_kernel(unsigned a, unsigned b, float *out, long long *span) {
    float acc[CH][4];
#pragma unroll
    for (int c = 0; c < CH; c++) acc[c][0] = acc[c][1] = acc[c][2] = acc[c][3] = 0.0f;
    const unsigned af[4] = {a, a, a, a}, bf[2] = {b, b};
    __syncthreads();
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < ITERS; it++) {
#pragma unroll
        for (int c = 0; c < CH; c++) {
            if (K8)
                elan_mma1688<__half>(acc[c], af, b);
            else
                elan_mma16816<__half>(acc[c], af, bf);
        }
    }
    __syncthreads();
    const long long t1 = clock64();
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < CH; c++) s += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
    rate_record(s, t0, t1, out, span);
}

/* MUFU: CH chains of x = -ex2(x) per thread (x stays in [-1, -0.5]) */
template <int CH>
static __global__ void ex2_rate_kernel(float x0, float *out, long long *span) {
    float x[CH];
#pragma unroll
    for (int c = 0; c < CH; c++) x[c] = x0 - 0.001f * c;
    __syncthreads();
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < ITERS; it++) {
#pragma unroll
        for (int c = 0; c < CH; c++) x[c] = -elan_exp2(x[c]);
    }
    __syncthreads();
    const long long t1 = clock64();
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < CH; c++) s += x[c];
    rate_record(s, t0, t1, out, span);
}

/* F2FP: CH chains of p = pack(f(p) ...) per thread */
template <int CH>
static __global__ void pack_rate_kernel(float x0, float *out, long long *span) {
    float x[CH];
#pragma unroll
    for (int c = 0; c < CH; c++) x[c] = x0 + 0.001f * c;
    __syncthreads();
    const long long t0 = clock64();
#pragma unroll 1
    for (int it = 0; it < ITERS; it++) {
#pragma unroll
        for (int c = 0; c < CH; c++) {
            const unsigned p = elan_pack2_out<__half>(x[c], x[c]);
            x[c] = __uint_as_float(p ^ 0x3c003c00u); /* an integer op keeps the chain, stays finite */
        }
    }
    __syncthreads();
    const long long t1 = clock64();
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < CH; c++) s += x[c];
    rate_record(s, t0, t1, out, span);
}

/* Median over SMs of the span (clocks) of their CTAs. */
static double median_span(const std::vector<long long> &sp, int ctas) {
    std::vector<long long> lo(1024, -1), hi(1024, -1);
    for (int i = 0; i < ctas; i++) {
        const int sm = (int)sp[3 * i + 2];
        if (lo[sm] < 0 || sp[3 * i] < lo[sm]) lo[sm] = sp[3 * i];
        if (hi[sm] < 0 || sp[3 * i + 1] > hi[sm]) hi[sm] = sp[3 * i + 1];
    }
    std::vector<double> s;
    for (int k = 0; k < 1024; k++)
        if (lo[k] >= 0) s.push_back((double)(hi[k] - lo[k]));
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
}

static int g_sms;
static float *g_out;
static long long *g_span;

/* runs kern with `ctas_per_sm` CTAs of `warps` warps on each SM; returns warp instructions per SM-clock */
template <typename F>
static double rate(F kern, int warps, int ctas_per_sm, int insts_per_warp_iter) {
    const int ctas = g_sms * ctas_per_sm;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        kern(ctas, warps * 32);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<long long> sp(3 * ctas);
        CK(cudaMemcpy(sp.data(), g_span, sp.size() * sizeof(long long), cudaMemcpyDeviceToHost));
        const double clk = median_span(sp, ctas);
        const double r = (double)ctas_per_sm * warps * ITERS * insts_per_warp_iter / clk;
        if (r > best) best = r;
    }
    return best;
}

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    g_sms = prop.multiProcessorCount;
    printf("device: %s (%d SMs)\n", prop.name, g_sms);
    CK(cudaMalloc(&g_out, (size_t)g_sms * 4 * 1024 * sizeof(float)));
    CK(cudaMalloc(&g_span, (size_t)g_sms * 4 * 3 * sizeof(long long)));

    /* check: A = 2^-6 everywhere, B = 2^-6 everywhere: each m16n8k16 adds 16 * 2^-12 to every accumulator,
       each m16n8k8 8 * 2^-12; after ITERS steps per chain, exact in fp32 */
    const unsigned a = 0x24002400u, b = 0x24002400u; /* fp16 2^-6 = 0x2400 */
    int bad = 0;
    {
        mma_rate_kernel<4, false><<<1, 32>>>(a, b, g_out, g_span);
        mma_rate_kernel<4, true><<<1, 64>>>(a, b, g_out + 32, g_span);
        CK(cudaDeviceSynchronize());
        float h[96];
        CK(cudaMemcpy(h, g_out, sizeof(h), cudaMemcpyDeviceToHost));
        const float want16 = 4 * 4 * (float)ITERS * 16.0f / 4096.0f, want8 = want16 / 2;
        for (int i = 0; i < 32; i++) bad += h[i] != want16;
        for (int i = 32; i < 96; i++) bad += h[i] != want8;
        printf("mma check: %s (m16n8k16 sum %g, want %g; m16n8k8 sum %g, want %g)\n", bad ? "FAIL" : "ok", h[0],
               want16, h[32], want8);
    }

    printf("warp instructions per SM per clock (best of 3; CH chains per warp, W warps per SM)\n");
    const int ws[] = {4, 8, 16, 32};
    for (int k8 = 0; k8 < 2; k8++) {
        printf("  HMMA m16n8k%d f16->f32:", k8 ? 8 : 16);
        for (int w : ws) {
            double r1, r4;
            if (k8) {
                r1 = rate([&](int c, int t) { mma_rate_kernel<1, true><<<c, t>>>(a, b, g_out, g_span); }, w, 1, 1);
                r4 = rate([&](int c, int t) { mma_rate_kernel<4, true><<<c, t>>>(a, b, g_out, g_span); }, w, 1, 4);
            } else {
                r1 = rate([&](int c, int t) { mma_rate_kernel<1, false><<<c, t>>>(a, b, g_out, g_span); }, w, 1, 1);
                r4 = rate([&](int c, int t) { mma_rate_kernel<4, false><<<c, t>>>(a, b, g_out, g_span); }, w, 1, 4);
            }
            printf("  W%-2d CH1 %.3f CH4 %.3f", w, r1, r4);
        }
        printf("\n");
    }
    printf("  MUFU ex2.approx.f32 (per thread):");
    for (int w : ws) {
        const double r = rate([&](int c, int t) { ex2_rate_kernel<8><<<c, t>>>(-0.5f, g_out, g_span); }, w, 1, 8);
        printf("  W%-2d CH8 %.3f (%.1f lanes/clk)", w, r, 32 * r);
    }
    printf("\n  F2FP cvt.rn.satfinite.f16x2.f32 + LOP:");
    for (int w : ws) {
        const double r = rate([&](int c, int t) { pack_rate_kernel<8><<<c, t>>>(0.5f, g_out, g_span); }, w, 1, 8);
        printf("  W%-2d CH8 %.3f", w, r);
    }
    printf("\n");
    /* m16n8k16 = 2048 multiply-adds: at r per SM-clock, 132 SMs and f GHz that is r * 2048 * 2 * 132 * f FLOP/s */
    CK(cudaFree(g_out));
    CK(cudaFree(g_span));
    if (bad) {
        printf("check_rates: FAIL\n");
        return 1;
    }
    printf("check_rates: ok\n");
    return 0;
}
