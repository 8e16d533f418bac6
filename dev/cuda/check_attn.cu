// kernel: src/cuda/gmsa.cu
/* check_attn.cu — the windowed attention of gmsa.cu against a naive CPU softmax(q q^T) v, then timed.

   Inputs are random q and v rows of the layout the backend uses (project_inp output g: per pixel 2C channels,
   group gi's q at 2k*gi and v at 2k*gi + k), in fp16, bf16 or fp32, with a float bias. The reference works in
   double from the same values the kernel sees (q + bias and v + bias rounded to fp16 as the half tensor-core
   kernel does, or to tf32 for the tf32 kernel; for the fp32 CUDA-core kernel, ELANSR_CUDA_ATTN=simt, they are
   not rounded, which only shrinks the error). Errors come from P rounded to fp16 or tf32 before P.V (2^-11
   relative) and y rounded to the storage type, so the tolerance is relative to the output's scale. Scores reach a few hundred here as in the real network, so a
   wrong score shows up as a wrong softmax at once.

   fp32 without tf32 has two kernels: elan_cuda_attn runs attn_body once per group (the reference kernel), and
   elan_cuda_attn3 runs attn3_f32_kernel (all three groups, R queries per thread; unless ELANSR_CUDA_ATTN=simt).
   Both are checked against the reference with the fp32 tolerance (no operand is rounded: the error is the fp32
   scores' and sums' own), and the timing at 960x544 shows both side by side. A case may offset q, v and y by one
   element off 16 bytes, which puts both kernels on their scalar paths. */
#include "dev_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>




/* One case: n images of Hp x Wp, k channels per group, all 3 windows; computing layout (q and v from g) when
   reuse == 0, reusing layout (q from g, v from a separate C-wide buffer) when reuse == 1; misalign == 1 starts g,
   t and y one element past their allocations (rows no longer 16-byte aligned). Returns failures. */
template <typename T>
static int run_case(int n, int Hp, int Wp, int k, int shifted, int reuse, int act, int tf32, int time_it,
                    int misalign = 0) {
    const int C = 3 * k, ws_[3] = {4, 8, 16};
    const long long P = (long long)n * Hp * Wp;
    std::vector<T> g((size_t)P * 2 * C), t((size_t)P * C), y((size_t)P * C);
    std::vector<float> bias(2 * C);
    /* q ~ 4 * U(-1, 1) per channel: q.q over 20 channels reaches ~100-300, as in the trained network */
    for (auto &v : g) v = f2h<T>(4.0f * frand());
    for (auto &v : t) v = f2h<T>(4.0f * frand());
    for (auto &v : bias) v = 0.5f * frand();
    T *dg0, *dt0, *dy0, *dg, *dt, *dy;
    float *db;
    CK(cudaMalloc(&dg0, (g.size() + 1) * sizeof(T)));
    CK(cudaMalloc(&dt0, (t.size() + 1) * sizeof(T)));
    CK(cudaMalloc(&dy0, (y.size() + 1) * sizeof(T)));
    CK(cudaMalloc(&db, bias.size() * sizeof(float)));
    dg = dg0 + misalign, dt = dt0 + misalign, dy = dy0 + misalign;
    CK(cudaMemcpy(dg, g.data(), g.size() * sizeof(T), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dt, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db, bias.data(), bias.size() * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(dy, 0xff, y.size() * sizeof(T))); /* NaN in both types: unwritten outputs fail */

    const char *simt = getenv("ELANSR_CUDA_ATTN");
    /* 1: operands rounded to fp16 (half modes), 2: to tf32 (fp32 storage, tf32 asked for), 0: not rounded */
    const int round_in = simt && !strcmp(simt, "simt") ? 0 : act != ELAN_ACT_F32 ? 1 : tf32 ? 2 : 0;
    elan_cuda_attn_args a[3];
    for (int gi = 0; gi < 3; gi++) {
        CK(elan_cuda_attn_prepare(k, ws_[gi], act));
        memset(&a[gi], 0, sizeof a[gi]);
        a[gi].act = act, a[gi].tf32 = tf32;
        a[gi].q = dg + gi * 2 * k, a[gi].q_bias = db + gi * 2 * k, a[gi].q_stride = 2 * C;
        if (reuse)
            a[gi].v = dt + gi * k, a[gi].v_bias = db + gi * 2 * k + k, a[gi].v_stride = C;
        else
            a[gi].v = dg + gi * 2 * k + k, a[gi].v_bias = db + gi * 2 * k + k, a[gi].v_stride = 2 * C;
        a[gi].y = dy + gi * k, a[gi].y_stride = C;
        a[gi].k = k, a[gi].ws = ws_[gi], a[gi].shift = shifted ? ws_[gi] / 2 : 0;
        a[gi].n = n, a[gi].Hp = Hp, a[gi].Wp = Wp;
        CK(elan_cuda_attn(&a[gi], 0));
    }
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y.data(), dy, y.size() * sizeof(T), cudaMemcpyDeviceToHost));

    /* fp32 without rounded operands: the error is fp32's own (scores of a few hundred summed in fp32, expf, the
       sums over up to 256 keys). A float emulation of the kernels' arithmetic against this reference peaked at
       4.6e-5 with |y| up to 4.5 (1e-5 of the outputs' scale); the tolerance is 1.2e-4 (2.7e-5 of it). */
    const bool exact32 = act == ELAN_ACT_F32 && round_in == 0;
    const double tol_abs = exact32 ? 1.2e-4 : sizeof(T) == 2 && act == ELAN_ACT_BF16 ? 3e-2 : 8e-3;
    const double tol_rel = exact32 ? 0.0 : act == ELAN_ACT_BF16 ? 1e-2 : 3e-3;
    const char *mode = act == ELAN_ACT_F16 ? "fp16" : act == ELAN_ACT_BF16 ? "bf16" : tf32 ? "tf32" : "fp32";
    /* reference, on a sample of windows when the image is large; yv is the output of a launch per group or of
       the three-group launch (what names it in the report) */
    auto verify = [&](const std::vector<T> &yv, const char *what) {
        int fails = 0;
        double maxerr = 0.0, maxref = 0.0;
        for (int gi = 0; gi < 3; gi++) {
            const int ws = ws_[gi], T2 = ws * ws, sh = shifted ? ws / 2 : 0;
            const int nwy = Hp / ws, nwx = Wp / ws;
            const long long nwin = (long long)n * nwy * nwx;
            const long long step = nwin > 400 ? nwin / 397 : 1;
            std::vector<double> q((size_t)T2 * k), v((size_t)T2 * k), s(T2);
            std::vector<long long> pix(T2);
            for (long long win = 0; win < nwin; win += step) {
                const int wx = (int)(win % nwx), wy = (int)(win / nwx % nwy);
                const long long img = win / nwx / nwy;
                for (int i = 0; i < T2; i++) {
                    const int py = (wy * ws + i / ws + sh) % Hp, px = (wx * ws + i % ws + sh) % Wp;
                    const long long p = (img * Hp + py) * Wp + px;
                    pix[i] = p;
                    for (int c = 0; c < k; c++) {
                        float qf = h2f(g[(size_t)p * 2 * C + gi * 2 * k + c]) + bias[gi * 2 * k + c];
                        float vf = (reuse ? h2f(t[(size_t)p * C + gi * k + c])
                                          : h2f(g[(size_t)p * 2 * C + gi * 2 * k + k + c])) +
                                   bias[gi * 2 * k + k + c];
                        q[(size_t)i * k + c] = round_in == 1 ? round_half(qf) : round_in == 2 ? round_tf32(qf) : qf;
                        v[(size_t)i * k + c] = round_in == 1 ? round_half(vf) : round_in == 2 ? round_tf32(vf) : vf;
                    }
                }
                for (int i = 0; i < T2; i++) {
                    double mx = -1e300;
                    for (int j2 = 0; j2 < T2; j2++) {
                        double d = 0;
                        for (int c = 0; c < k; c++) d += q[(size_t)i * k + c] * q[(size_t)j2 * k + c];
                        s[j2] = d;
                        mx = std::max(mx, d);
                    }
                    double l = 0;
                    for (int j2 = 0; j2 < T2; j2++) l += (s[j2] = exp(s[j2] - mx));
                    for (int c = 0; c < k; c++) {
                        double acc = 0;
                        for (int j2 = 0; j2 < T2; j2++) acc += s[j2] * v[(size_t)j2 * k + c];
                        acc /= l;
                        const double got = h2f(yv[(size_t)pix[i] * C + gi * k + c]);
                        const double err = fabs(got - acc);
                        maxerr = std::max(maxerr, err);
                        maxref = std::max(maxref, fabs(acc));
                        if (!(err <= tol_abs + tol_rel * fabs(acc))) {
                            if (fails < 5)
                                printf("  mismatch (%s) ws %d win %lld token %d ch %d: got %g want %g\n", what, ws, win,
                                       i, c, got, acc);
                            fails++;
                        }
                    }
                }
            }
        }
        printf("%-5s n %d %4dx%-4d k %2d %s %s%s %-9s: max|err| %.3g (max|ref| %.3g) %s\n", mode, n, Wp, Hp, k,
               shifted ? "shifted" : "plain  ", reuse ? "reusing  " : "computing", misalign ? " misaligned" : "", what,
               maxerr, maxref, fails ? "FAIL" : "ok");
        return fails;
    };
    int fails = verify(y, "per group");

    /* the three groups in one launch (attn3): in fp32 without tf32 the CUDA-core three-group kernel, checked
       against the reference (its bits are attn_body's too with ATTN_F32_CHUNK 16: reported, not required);
       otherwise it must give the same bits as one launch per group */
    const int wsv[3] = {4, 8, 16};
    if (elan_cuda_attn3_supported(k, wsv, act) == 0) {
        CK(elan_cuda_attn3_prepare(k, wsv, act));
        std::vector<T> y3(y.size());
        CK(cudaMemset(dy, 0xff, y.size() * sizeof(T)));
        CK(elan_cuda_attn3(a, 0));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(y3.data(), dy, y.size() * sizeof(T), cudaMemcpyDeviceToHost));
        size_t ndiff = 0;
        double maxdiff = 0.0;
        for (size_t e = 0; e < y.size(); e++) {
            const float u = h2f(y3[e]), w = h2f(y[e]);
            if (memcmp(&y3[e], &y[e], sizeof(T))) ndiff++, maxdiff = std::max(maxdiff, (double)fabs(u - w));
        }
        if (act == ELAN_ACT_F32 && !tf32) {
            fails += verify(y3, "attn3");
            printf("    three groups in one launch against one per group: %s (%zu of %zu values differ, max %.3g)\n",
                   ndiff ? "different bits" : "same bits", ndiff, y.size(), maxdiff);
        } else {
            printf("    three groups in one launch: %s\n", ndiff ? "DIFFERENT" : "same bits");
            if (ndiff) fails++;
        }
    }

    /* elan_cuda_attn is one launch per group (for fp32 without tf32 always attn_body), elan_cuda_attn3 the
       three-group kernel of the mode (fp32 without tf32: attn3_f32_kernel), so one process times both */
    if (time_it && !fails) {
        double sum = 0.0, fl = 0.0;
        for (int gi = 0; gi < 3; gi++) {
            const double med = median_ms([&] { return elan_cuda_attn(&a[gi], 0); });
            const double flops = 4.0 * P * ws_[gi] * ws_[gi] * k; /* QQ^T and AV, 2 flops per multiply-add */
            const double bytes = (double)P * 3 * k * sizeof(T);
            printf("    ws %2d: median %.4f ms  %.1f TFLOP/s  %.0f GB/s\n", ws_[gi], med, flops / med * 1e-9,
                   bytes / med * 1e-6);
            sum += med, fl += flops;
        }
        printf("    3 groups, a launch each: %.4f ms  %.1f TFLOP/s\n", sum, fl / sum * 1e-9);
        if (elan_cuda_attn3_supported(k, wsv, act) == 0) {
            const double med = median_ms([&] { return elan_cuda_attn3(a, 0); });
            printf("    all 3 groups, one launch: median %.4f ms  %.1f TFLOP/s  %.0f GB/s\n", med, fl / med * 1e-9,
                   (double)P * 3 * C * sizeof(T) / med * 1e-6);
        }
    }
    cudaFree(dg0), cudaFree(dt0), cudaFree(dy0), cudaFree(db);
    return fails;
}

int main(void) {
    int fails = 0;
    fails += run_case<__half>(2, 32, 48, 20, 0, 0, ELAN_ACT_F16, 0, 0);
    fails += run_case<__half>(2, 32, 48, 20, 1, 0, ELAN_ACT_F16, 0, 0);
    fails += run_case<__half>(1, 48, 16, 20, 1, 1, ELAN_ACT_F16, 0, 0);
    fails += run_case<__nv_bfloat16>(2, 32, 48, 20, 1, 0, ELAN_ACT_BF16, 0, 0);
    fails += run_case<__nv_bfloat16>(1, 16, 64, 20, 0, 1, ELAN_ACT_BF16, 0, 0);
    fails += run_case<__half>(1, 32, 32, 10, 1, 0, ELAN_ACT_F16, 0, 0);
    fails += run_case<__half>(1, 32, 32, 32, 0, 1, ELAN_ACT_F16, 0, 0);
    fails += run_case<__half>(1, 32, 32, 6, 1, 1, ELAN_ACT_F16, 0, 0);
    fails += run_case<__half>(1, 544, 960, 20, 1, 0, ELAN_ACT_F16, 0, 1);
    fails += run_case<__half>(1, 544, 960, 20, 0, 1, ELAN_ACT_F16, 0, 1);
    /* fp32 storage: the tf32 tensor-core kernel (KP 24, 16, 32, 8; strided and unaligned rows), then timed
       beside the fp32 CUDA-core kernel */
    fails += run_case<float>(2, 32, 48, 20, 0, 0, ELAN_ACT_F32, 1, 0);
    fails += run_case<float>(2, 32, 48, 20, 1, 1, ELAN_ACT_F32, 1, 0);
    fails += run_case<float>(1, 32, 32, 10, 1, 0, ELAN_ACT_F32, 1, 0);
    fails += run_case<float>(1, 32, 32, 32, 0, 1, ELAN_ACT_F32, 1, 0);
    fails += run_case<float>(1, 32, 32, 5, 1, 1, ELAN_ACT_F32, 1, 0);
    /* fp32 without tf32: attn_body per group and attn3_f32_kernel (KP 20) in one launch; both layouts, shifted and
       plain, 1 to 20 regions, k 20 (float4 path), 12 (float4, zero-padded), 10 and 5 (scalar, padded), k 20 with
       rows off 16 bytes (scalar); then k 24 (no three-group fp32 kernel: a launch per group) */
    fails += run_case<float>(1, 16, 16, 20, 0, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 16, 16, 20, 1, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 32, 48, 20, 1, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 32, 48, 20, 0, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 80, 64, 20, 1, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 64, 80, 20, 0, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 48, 32, 20, 1, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 32, 48, 12, 1, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 64, 80, 12, 0, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 48, 32, 10, 1, 1, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 16, 32, 5, 0, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(2, 32, 48, 20, 1, 0, ELAN_ACT_F32, 0, 0, 1);
    fails += run_case<float>(1, 48, 32, 20, 0, 1, ELAN_ACT_F32, 0, 0, 1);
    fails += run_case<float>(1, 32, 32, 24, 1, 0, ELAN_ACT_F32, 0, 0);
    fails += run_case<float>(1, 544, 960, 20, 1, 0, ELAN_ACT_F32, 0, 1);
    fails += run_case<float>(1, 544, 960, 20, 0, 1, ELAN_ACT_F32, 0, 1);
    fails += run_case<float>(1, 544, 960, 20, 1, 0, ELAN_ACT_F32, 1, 1);
    fails += run_case<float>(1, 544, 960, 20, 0, 1, ELAN_ACT_F32, 1, 1);
    printf(fails ? "check_attn: FAILED\n" : "check_attn: all ok\n");
    return fails ? 1 : 0;
}
