// kernel: src/cuda/shift_gemm.cu
/* check_shift_gemm.cu — elan_cuda_shift_gemm (one ShiftConv of LFE: per-channel 3x3 shift + 1x1 conv on tf32
   tensor cores, fp32 in and out) against a double-precision CPU reference, then timed at ELAN-light's size.

   Checked: both modes (0: out = relu(bias + W s), overwriting; 1: out += W s (+ bias), in place), in_bias and
   NULL, bias and NULL in mode 1, out_tf32 (mode 0) and in_tf32 (mode 1, input pre-rounded: the cp.async kernel
   without fix-up), the default cp.async kernels and the register-staged ones (ELANSR_CUDA_SHIFT_GEMM=regs), n = 1 and 2 images (the shift must zero-fill at each image's border, never read
   the neighbouring image), (K, N) = (60, 120) and (120, 60). Taps are random 0..8, one per aligned run of 4
   channels. Inputs are never zero (magnitude 0.1..4), so a dropped or misplaced term shows. Mode 0's output is
   prefilled with NaN bytes (0xff): an output the kernel does not write fails; every output is also scanned for
   NaN. At 960 x 544 the values are compared on every 97th pixel, the first and last image rows and the first
   and last column of every row (the borders are where the zero padding matters).

   Reference: s = tf32(fp32(in + in_bias)) (0 outside the image), w rounded to tf32, the sum in double. The kernel
   multiplies exactly these tf32 operands (products are exact in fp32) and accumulates in fp32 in its own order:
   K <= 120 additions cost at most ~K * 2^-24 * S = 7.2e-6 S with S = sum_k |w s| (+ |bias|) the sum of the
   magnitudes, so the tolerance is 1e-4 + 1e-5 (S + |out_before|) (the add of the old out one more fp32 rounding;
   the 1e-4 floor covers outputs near 0 and relu's edge). */
#include "dev_common.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

/* a failing CUDA call of the kernel under test: a failure of the check, not of the harness */
#define CKF(x)                                                                                        \
    do {                                                                                              \
        cudaError_t e_ = (x);                                                                         \
        if (e_ != cudaSuccess) {                                                                      \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));        \
            printf("check_shift_gemm: FAILED\n");                                                     \
            exit(1);                                                                                  \
        }                                                                                             \
    } while (0)

/* One case; returns 1 on failure. */
static int run_case(int n, int Hp, int Wp, int K, int N, int mode, int use_in_bias, int use_bias, int rnd, int time_it,
                    int simt = 0) {
    const long long P = (long long)n * Hp * Wp;
    const bool big = P > 100000;

    /* host inputs */
    std::vector<float> h_in((size_t)P * K), h_inb(K), h_w((size_t)N * K), h_b(N), h_out0((size_t)P * N);
    std::vector<unsigned char> h_tap(K);
    for (auto &v : h_in) v = rnd_mag(0.1f, 4.0f);
    if (rnd && mode == 1) /* in_tf32: the input holds tf32 values, as the first pass leaves t */
        for (auto &v : h_in) v = (float)round_tf32(v);
    for (int k = 0; k < K; k += 4) {
        const unsigned char t = (unsigned char)(rng_next() % 9);
        for (int j = k; j < std::min(K, k + 4); j++) h_tap[j] = t;
    }
    for (auto &v : h_inb) v = rnd_mag(0.1f, 1.0f);
    const float ws = 1.0f / sqrtf((float)K);
    for (auto &v : h_w) v = rnd_mag(0.5f * ws, 1.5f * ws);
    for (auto &v : h_b) v = rnd_mag(0.1f, 1.0f);
    if (mode == 1)
        for (auto &v : h_out0) v = rnd_mag(0.1f, 4.0f);
    else
        memset(h_out0.data(), 0xff, h_out0.size() * 4); /* NaN: unwritten outputs fail */

    /* device */
    float *d_in, *d_inb, *d_w, *d_b, *d_out;
    unsigned char *d_tap;
    CK(cudaMalloc(&d_in, h_in.size() * 4));
    CK(cudaMalloc(&d_inb, h_inb.size() * 4));
    CK(cudaMalloc(&d_w, h_w.size() * 4));
    CK(cudaMalloc(&d_b, h_b.size() * 4));
    CK(cudaMalloc(&d_out, h_out0.size() * 4));
    CK(cudaMalloc(&d_tap, K));
    CK(cudaMemcpy(d_in, h_in.data(), h_in.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_inb, h_inb.data(), h_inb.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w, h_w.data(), h_w.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_b, h_b.data(), h_b.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_out, h_out0.data(), h_out0.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_tap, h_tap.data(), K, cudaMemcpyHostToDevice));

    elan_cuda_shift_gemm_args a;
    memset(&a, 0, sizeof a);
    a.in = d_in;
    a.tap = d_tap;
    a.in_bias = use_in_bias ? d_inb : NULL;
    a.w = d_w;
    a.bias = (mode == 0 || use_bias) ? d_b : NULL;
    a.out = d_out;
    a.mode = mode;
    a.K = K, a.N = N;
    a.n = n, a.Hp = Hp, a.Wp = Wp;
    a.out_tf32 = rnd && mode == 0, a.in_tf32 = rnd && mode == 1;
    a.simt = simt; /* fp32 on CUDA cores: the reference below rounds nothing */
    CKF(elan_cuda_shift_gemm_prepare(K, N));
    CKF(elan_cuda_shift_gemm(&a, 0));
    CKF(cudaDeviceSynchronize());
    std::vector<float> g((size_t)P * N);
    CK(cudaMemcpy(g.data(), d_out, g.size() * 4, cudaMemcpyDeviceToHost));

    /* reference */
    char what[160];
    snprintf(what, sizeof what, "n=%d %dx%d K=%d N=%d mode %d in_bias %s bias %s%s", n, Hp, Wp, K, N, mode,
             use_in_bias ? "yes" : "NULL", a.bias ? "yes" : "NULL",
             a.out_tf32 ? " out_tf32" : a.in_tf32 ? " in_tf32 (cp.async)" : simt ? " simt (fp32)" : "");
    std::vector<double> wt((size_t)N * K);
    for (size_t i = 0; i < wt.size(); i++) wt[i] = simt ? (double)h_w[i] : round_tf32(h_w[i]);
    std::vector<double> s(K);
    long long bad = 0, nan = 0, checked = 0;
    double maxerr = 0.0, worst = 0.0;
    for (long long i = 0; i < (long long)g.size(); i++)
        if (g[i] != g[i]) nan++;
    for (long long p = 0; p < P; p++) {
        const int x = (int)(p % Wp), y = (int)(p / Wp % Hp), img = (int)(p / ((long long)Wp * Hp));
        if (big && !(p % 97 == 0 || y == 0 || y == Hp - 1 || x == 0 || x == Wp - 1)) continue;
        for (int k = 0; k < K; k++) {
            const int dy = h_tap[k] / 3 - 1, dx = h_tap[k] % 3 - 1, sy = y + dy, sx = x + dx;
            if (sy < 0 || sy >= Hp || sx < 0 || sx >= Wp) {
                s[k] = 0.0;
                continue;
            }
            const long long q = ((long long)img * Hp + sy) * Wp + sx;
            float v = h_in[(size_t)q * K + k];
            if (use_in_bias) v = v + h_inb[k];
            s[k] = simt ? (double)v : round_tf32(v);
        }
        for (int j = 0; j < N; j++) {
            double r = 0.0, S = 0.0;
            const double *wr = &wt[(size_t)j * K];
            for (int k = 0; k < K; k++) {
                const double t = wr[k] * s[k];
                r += t, S += fabs(t);
            }
            const size_t i = (size_t)p * N + j;
            double ref, tol;
            if (mode == 0) {
                ref = std::max(0.0, (double)h_b[j] + r);
                tol = 1e-4 + 1e-5 * (S + fabs((double)h_b[j]));
                /* out_tf32: the kernel rounds its fp32 sum; the two can straddle a rounding boundary: one tf32
                   ulp (2^-10 relative) more */
                if (a.out_tf32) ref = round_tf32((float)ref), tol += fabs(ref) * (1.0 / 1024.0);
            } else {
                const double o = h_out0[i];
                ref = o + r + (a.bias ? (double)h_b[j] : 0.0);
                tol = 1e-4 + 1e-5 * (S + fabs(o) + (a.bias ? fabs((double)h_b[j]) : 0.0));
            }
            const double got = g[i], err = fabs(got - ref);
            checked++;
            if (err == err) maxerr = std::max(maxerr, err), worst = std::max(worst, err / tol);
            if (!(err <= tol)) {
                if (bad < 8)
                    fprintf(stderr, "  MISMATCH %s: img %d y %d x %d j %d: got %.7g ref %.7g (err %.3g, tol %.3g)\n",
                            what, img, y, x, j, got, ref, err, tol);
                bad++;
            }
        }
    }
    const int fail = bad || nan;
    printf("%-4s %s: %lld values compared, max abs err %.3g, worst err/tol %.3f, %lld bad, %lld NaN\n",
           fail ? "FAIL" : "ok", what, checked, maxerr, worst, bad, nan);

    if (time_it && !fail) {
        /* the cp.async kernel and the register-staged one (ELANSR_CUDA_SHIFT_GEMM=regs) alternately, twice */
        double bytes = (double)P * K * 4 + (double)P * N * 4;
        if (mode == 1) bytes += (double)P * N * 4;
        const char *prev = getenv("ELANSR_CUDA_SHIFT_GEMM");
        for (int rep = 0; rep < 4; rep++) {
            const int regs = rep & 1;
            if (regs) setenv("ELANSR_CUDA_SHIFT_GEMM", "regs", 1);
            else unsetenv("ELANSR_CUDA_SHIFT_GEMM");
            const double ms = median_ms([&]() { return elan_cuda_shift_gemm(&a, 0); });
            printf("time %s [%s]: median %.4f ms, %.0f GB/s effective\n", what, regs ? "regs" : "cp.async", ms,
                   bytes / (ms * 1e-3) / 1e9);
        }
        if (prev) setenv("ELANSR_CUDA_SHIFT_GEMM", prev, 1);
        else unsetenv("ELANSR_CUDA_SHIFT_GEMM");
    }

    CK(cudaFree(d_in));
    CK(cudaFree(d_inb));
    CK(cudaFree(d_w));
    CK(cudaFree(d_b));
    CK(cudaFree(d_out));
    CK(cudaFree(d_tap));
    return fail;
}

int main(void) {
    int failures = 0;
    /* n, Hp, Wp, K, N, mode, in_bias, bias (mode 1), rnd (mode 0: out_tf32; mode 1: in_tf32, the cp.async
       kernel), time */
    failures += run_case(1, 32, 48, 60, 120, 0, 1, 1, 0, 0);
    failures += run_case(1, 32, 48, 120, 60, 1, 1, 0, 0, 0);
    failures += run_case(2, 16, 32, 60, 120, 0, 0, 1, 0, 0);
    failures += run_case(2, 16, 32, 120, 60, 1, 1, 1, 0, 0);
    failures += run_case(1, 32, 48, 60, 120, 0, 1, 1, 1, 0);
    failures += run_case(2, 16, 32, 60, 120, 0, 0, 1, 1, 0);
    failures += run_case(1, 32, 48, 120, 60, 1, 0, 0, 1, 0);
    failures += run_case(2, 16, 32, 120, 60, 1, 0, 1, 1, 0);
    failures += run_case(3, 48, 16, 120, 60, 1, 0, 0, 1, 0); /* tiles span image rows and images */
    /* the small cases once more through the register-staged kernels (the reference the cp.async ones replaced) */
    setenv("ELANSR_CUDA_SHIFT_GEMM", "regs", 1);
    failures += run_case(1, 32, 48, 60, 120, 0, 1, 1, 0, 0);
    failures += run_case(2, 16, 32, 120, 60, 1, 1, 1, 0, 0);
    failures += run_case(2, 16, 32, 60, 120, 0, 0, 1, 1, 0);
    failures += run_case(3, 48, 16, 120, 60, 1, 0, 0, 1, 0);
    unsetenv("ELANSR_CUDA_SHIFT_GEMM");
    if (getenv("CHECK_SIMT_TIMED")) { /* the simt kernels' timed cases only */
        failures += run_case(1, 544, 960, 60, 120, 0, 1, 1, 0, 1, 1);
        failures += run_case(1, 544, 960, 120, 60, 1, 0, 0, 0, 1, 1);
        printf(failures ? "check_shift_gemm: FAILED\n" : "check_shift_gemm: all ok\n");
        return failures ? 1 : 0;
    }
    /* fp32 on CUDA cores (simt): both convs, with and without the biases, tiles across rows and images */
    failures += run_case(1, 32, 48, 60, 120, 0, 1, 1, 0, 0, 1);
    failures += run_case(2, 16, 32, 60, 120, 0, 0, 1, 0, 0, 1);
    failures += run_case(1, 32, 48, 120, 60, 1, 1, 0, 0, 0, 1);
    failures += run_case(2, 16, 32, 120, 60, 1, 0, 1, 0, 0, 1);
    failures += run_case(3, 48, 16, 120, 60, 1, 0, 0, 0, 0, 1);
    setenv("ELANSR_CUDA_SHIFT_GEMM", "regs", 1); /* and the register-staged simt kernels */
    failures += run_case(1, 32, 48, 60, 120, 0, 1, 1, 0, 0, 1);
    failures += run_case(3, 48, 16, 120, 60, 1, 0, 0, 0, 0, 1);
    unsetenv("ELANSR_CUDA_SHIFT_GEMM");
    failures += run_case(1, 544, 960, 60, 120, 0, 1, 1, 0, 1, 1);
    failures += run_case(1, 544, 960, 120, 60, 1, 1, 0, 0, 1, 1);
    failures += run_case(1, 544, 960, 120, 60, 1, 0, 0, 0, 1, 1); /* no in_bias: as the forward runs it */
    failures += run_case(1, 544, 960, 60, 120, 0, 1, 1, 0, 1);
    failures += run_case(1, 544, 960, 60, 120, 0, 1, 1, 1, 1);
    failures += run_case(1, 544, 960, 120, 60, 1, 1, 0, 0, 1);
    failures += run_case(1, 544, 960, 120, 60, 1, 0, 0, 1, 1);
    if (failures) {
        printf("%d case(s) failed\n", failures);
        printf("check_shift_gemm: FAILED\n");
        return 1;
    }
    printf("check_shift_gemm: all ok\n");
    return 0;
}
