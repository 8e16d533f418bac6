/* gmsa.c — group-wise multi-scale self-attention (ELAN.md "GMSA"): proj_in, windowed attention per channel
   group, proj_out + residual.

   The roll of shifted blocks is never materialized: token t of window (wy, wx) of a group with window w is the
   pixel ((wy*w + t/w + w/2) mod H, (wx*w + t%w + w/2) mod W), both when its q and v are gathered and when its
   output is scattered back, which is torch.roll(-w/2), attention, torch.roll(+w/2) in one mapping.

   Per window, q is gathered transposed (qt[c][t]) and v token-major (v[t][c]). Queries go 16 at a time:
   s[j][i] = q_j . q_i for all keys j (the scores are symmetric, so this is also the score row of query i laid
   out with the queries as the vector lanes), softmax down each lane, then y[c][i] = sum_j v[j][c] s[j][i].
   Both products are calls of the micro-kernel of the current instruction set (simd.c), and the score block of
   16 queries (at most 256 x 16 floats, 16 KiB) stays in L1 instead of the window's whole 256 x 256 map. The
   window is instantiated once per instruction set (window_generic / _avx2 / _avx512), and with AVX-512 the
   softmax of a block is written with intrinsics (softmax16_avx512). q is gathered by runs of w consecutive
   pixels, the output scattered by runs of up to 16 (issue 5; docs/PERFORMANCE_CPU_NOTES.md).

   Reusing GMSAs recompute A from the q kept by the block's first GMSA instead of storing A. Stored, A is
   16 + 64 + 256 = 336 floats per pixel (1.3 KiB/px: 22 MB at 128x128, 0.7 GB for a 960x544 frame), which
   would nearly double the backend's 1.4 KiB/px of activations, against C floats of q per pixel (kept anyway in
   the qv buffer). Recomputing costs 6.7 k multiply-adds and 336 exps per pixel per reusing GMSA: measured at
   ELAN-light size, q q^T + softmax are ~60% of an attention call and the recomputation ~15% of the forward
   time. We take the 15% to keep the memory of large frames (whole 4K frames fit in 1 GB); the recomputed A is
   bit-identical to the first one.

   exp is a polynomial written so that it vectorizes (libm's expf is a scalar call), see exp_softmax. */
#include "cpu_ops.h"

#include <stdint.h>
#include <string.h>

/* e^d for the softmax, d = score - row max <= 0: 2^n e^r with n = round(d / ln 2), |r| <= ln2 / 2, e^r by
   Cephes' expf polynomial. Measured against double exp on every float in [-63, 0]: at most 8.2e-8 relative
   (1.4 ulp). Everything below about e^-64 is flushed to 0: next to the row's largest term (1) it is below fp32
   resolution in the sum, and kept it would put denormal products into A v, which run ~100x slower on x86
   (a whole random network ran 2x slower). d is first clamped to -80 through its bits (for d <= 0 a larger
   unsigned pattern is a larger magnitude) so that n fits the exponent field. Only integer selects: with the
   default -ftrapping-math GCC does not if-convert, and so does not vectorize, a float comparison whose result
   feeds more float arithmetic. NaN scores (from NaN inputs only) give unspecified weights. */
#define EXP_CLAMP_BITS 0xC2A00000u /* -80.0f */
static inline float exp_softmax(float d) {
    uint32_t u;
    memcpy(&u, &d, sizeof u);
    u = u > EXP_CLAMP_BITS ? EXP_CLAMP_BITS : u;
    float x;
    memcpy(&x, &u, sizeof x);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145751953125f;                                     /* ln 2, high bits: exact */
    r = r - n * 1.428606765330187045e-06f;                                    /* ln 2, low bits */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t ni = (int32_t)n;
    const int32_t bits = ni < -92 ? 0 : (ni + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* The softmax of one block of 16 queries with AVX-512 (s: n rows of 16 lanes, exponentiated in place; inv gets
   1 / row sum): the same polynomial and the same flush below e^-64 as exp_softmax, but rounding by
   roundscale and the 2^n scaling by scalef instead of integer bit tricks, ~14 instructions per 16 scores
   instead of ~22. Results equal exp_softmax's to within an ulp or so (same polynomial; the tests bound it). */
__attribute__((target("avx512f,avx512vl,avx512dq,fma"))) static void softmax16_avx512(float *s, int n, float *inv) {
    __m512 mx = _mm512_loadu_ps(s);
    for (int j = 1; j < n; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + (size_t)j * CPU_TW));
    __m512 sum = _mm512_setzero_ps();
    const __m512 lo = _mm512_set1_ps(-80.0f), l2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 c_hi = _mm512_set1_ps(0.693145751953125f), c_lo = _mm512_set1_ps(1.428606765330187045e-06f);
    const __m512 p0 = _mm512_set1_ps(1.9875691500e-4f), p1 = _mm512_set1_ps(1.3981999507e-3f);
    const __m512 p2 = _mm512_set1_ps(8.3334519073e-3f), p3 = _mm512_set1_ps(4.1665795894e-2f);
    const __m512 p4 = _mm512_set1_ps(1.6666665459e-1f), p5 = _mm512_set1_ps(5.0000001201e-1f);
    const __m512 one = _mm512_set1_ps(1.0f), nmin = _mm512_set1_ps(-92.0f);
    for (int j = 0; j < n; j++) {
        float *sj = s + (size_t)j * CPU_TW;
        const __m512 x = _mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(sj), mx), lo);
        const __m512 nn = _mm512_roundscale_ps(_mm512_mul_ps(x, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(nn, c_hi, x);
        r = _mm512_fnmadd_ps(nn, c_lo, r);
        __m512 p = _mm512_fmadd_ps(p0, r, p1);
        p = _mm512_fmadd_ps(p, r, p2);
        p = _mm512_fmadd_ps(p, r, p3);
        p = _mm512_fmadd_ps(p, r, p4);
        p = _mm512_fmadd_ps(p, r, p5);
        p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), one);
        const __mmask16 keep = _mm512_cmp_ps_mask(nn, nmin, _CMP_GE_OQ);
        const __m512 e = _mm512_maskz_scalef_ps(keep, p, nn);
        _mm512_storeu_ps(sj, e);
        sum = _mm512_add_ps(sum, e);
    }
    _mm512_storeu_ps(inv, _mm512_div_ps(one, sum));
}

#endif

/* Offsets of the per-thread scratch, in floats, each a multiple of 16. */
static size_t r16(size_t v) { return (v + 15) / 16 * 16; }

size_t cpu_attention_scratch(int k, int wmax) {
    const size_t n = (size_t)wmax * wmax;
    return 2 * r16(n * k) + r16(n * CPU_TW) + r16((size_t)k * CPU_TW) + CPU_TW;
}

size_t cpu_attention_iscratch(int wmax) { return r16((size_t)wmax * wmax); }

/* One window. Written once and instantiated per instruction set (always_inline into the target-attributed
   wrappers below), so that the softmax loops over the 16 queries vectorize as one zmm with AVX-512, two ymm
   with AVX2, and the products call that set's micro-kernel directly. */
static inline __attribute__((always_inline)) void window_attention(const float *q, int q_gs, const float *v, int v_gs,
                                                                   float *y, size_t ps, int H, int W, int k, int g,
                                                                   int w, int shifted, int wi, float *scratch,
                                                                   int *pix, cpu_gemm_fn gemm, int isa) {
    const int n = w * w, sh = shifted ? w / 2 : 0, nwx = W / w;
    const int wy = wi / nwx, wx = wi % nwx;
    float *qt = scratch, *vt = qt + r16((size_t)n * k), *s = vt + r16((size_t)n * k);
    float *yt = s + r16((size_t)n * CPU_TW), *inv = yt + r16((size_t)k * CPU_TW);
    for (int t = 0; t < n; t++) {
        const int yy = (wy * w + t / w + sh) % H, xx = (wx * w + t % w + sh) % W;
        pix[t] = yy * W + xx;
    }
    /* Gather. q goes channel-major (qt[c][t]): a window row is w consecutive pixels of one image row (two runs
       where a shifted window wraps around the right edge), copied run by run. v goes token-major
       (vt[t][c]) straight through pix: copying it channel-major and transposing in L1 measured 30% slower. */
    const int xs = wx * w + sh, run0 = xs + w <= W ? w : W - xs;
    for (int c = 0; c < k; c++) {
        const float *qp = q + (size_t)(g * q_gs + c) * ps, *vp = v + (size_t)(g * v_gs + c) * ps;
        float *qrow = qt + (size_t)c * n;
        for (int r = 0; r < w; r++) {
            const size_t row = (size_t)((wy * w + r + sh) % H) * W;
            for (int i = 0; i < run0; i++) qrow[r * w + i] = qp[row + xs + i];
            for (int i = run0; i < w; i++) qrow[r * w + i] = qp[row + i - run0];
        }
        for (int t = 0; t < n; t++) vt[(size_t)t * k + c] = vp[pix[t]];
    }
    for (int i0 = 0; i0 < n; i0 += CPU_TW) {
        /* s[j][i] = q_j . q_(i0+i) */
        gemm(n, k, qt, (size_t)n, NULL, qt + i0, (size_t)n, s, CPU_TW, CPU_TW, CPU_STORE);
#if defined(__x86_64__) && defined(__GNUC__)
        if (isa == CPU_ISA_AVX512) {
            softmax16_avx512(s, n, inv);
            gemm(k, n, vt, (size_t)k, NULL, s, CPU_TW, yt, CPU_TW, CPU_TW, CPU_STORE);
        } else
#endif
        {
            float mx[CPU_TW], sum[CPU_TW];
            for (int i = 0; i < CPU_TW; i++) {
                mx[i] = s[i];
                sum[i] = 0.0f;
            }
            for (int j = 1; j < n; j++) {
                const float *sj = s + (size_t)j * CPU_TW;
#pragma omp simd
                for (int i = 0; i < CPU_TW; i++) mx[i] = sj[i] > mx[i] ? sj[i] : mx[i];
            }
            for (int j = 0; j < n; j++) {
                float *sj = s + (size_t)j * CPU_TW;
#pragma omp simd
                for (int i = 0; i < CPU_TW; i++) {
                    const float e = exp_softmax(sj[i] - mx[i]);
                    sj[i] = e;
                    sum[i] += e;
                }
            }
            for (int i = 0; i < CPU_TW; i++) inv[i] = 1.0f / sum[i];
            /* yt[c][i] = sum_j v[j][c] e[j][i] */
            gemm(k, n, vt, (size_t)k, NULL, s, CPU_TW, yt, CPU_TW, CPU_TW, CPU_STORE);
        }
        /* Scatter by runs of L queries that lie in one window row: L = w when w divides 16 (4, 8, 16), 16 when
           16 divides w, else 1. A run that is consecutive pixels (all but wrapped ones) is a vector loop. */
        const int L = CPU_TW % w == 0 ? w : w % CPU_TW == 0 ? CPU_TW : 1;
        for (int i = 0; i < CPU_TW; i += L) {
            const int base = pix[i0 + i];
            if (pix[i0 + i + L - 1] == base + L - 1) {
                for (int c = 0; c < k; c++) {
                    float *restrict yp = y + (size_t)(g * k + c) * ps + base;
                    const float *restrict yr = yt + (size_t)c * CPU_TW + i;
                    for (int l = 0; l < L; l++) yp[l] = yr[l] * inv[i + l];
                }
            } else {
                for (int c = 0; c < k; c++) {
                    float *yp = y + (size_t)(g * k + c) * ps;
                    const float *yr = yt + (size_t)c * CPU_TW;
                    for (int l = i; l < i + L; l++) yp[pix[i0 + l]] = yr[l] * inv[l];
                }
            }
        }
    }
}

typedef void (*window_fn)(const float *q, int q_gs, const float *v, int v_gs, float *y, size_t ps, int H, int W,
                          int k, int g, int w, int shifted, int wi, float *scratch, int *pix, cpu_gemm_fn gemm);

static void window_generic(const float *q, int q_gs, const float *v, int v_gs, float *y, size_t ps, int H, int W,
                           int k, int g, int w, int shifted, int wi, float *scratch, int *pix, cpu_gemm_fn gemm) {
    window_attention(q, q_gs, v, v_gs, y, ps, H, W, k, g, w, shifted, wi, scratch, pix, gemm, CPU_ISA_GENERIC);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void window_avx2(const float *q, int q_gs, const float *v, int v_gs,
                                                            float *y, size_t ps, int H, int W, int k, int g, int w,
                                                            int shifted, int wi, float *scratch, int *pix,
                                                            cpu_gemm_fn gemm) {
    window_attention(q, q_gs, v, v_gs, y, ps, H, W, k, g, w, shifted, wi, scratch, pix, gemm, CPU_ISA_AVX2);
}
__attribute__((target("avx512f,avx512vl,avx512dq,fma,prefer-vector-width=512"))) static void window_avx512(
    const float *q, int q_gs, const float *v, int v_gs, float *y, size_t ps, int H, int W, int k, int g, int w,
    int shifted, int wi, float *scratch, int *pix, cpu_gemm_fn gemm) {
    window_attention(q, q_gs, v, v_gs, y, ps, H, W, k, g, w, shifted, wi, scratch, pix, gemm, CPU_ISA_AVX512);
}
#endif

void cpu_attention(const float *q, int q_gs, const float *v, int v_gs, float *y, size_t ps, int H, int W, int k,
                   const int win[3], int shifted, float *scratch, size_t sstride, int *iscratch, size_t istride,
                   int nt) {
    /* Groups with the largest windows first: with nowait, threads that finish one group's windows start on
       the next, and the cheap 4x4 windows last fill the gaps. Dynamic chunks of about one 16x16 window's
       work, as in cpu_conv_apply. */
    int order[3] = {0, 1, 2};
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            if (win[order[b]] > win[order[a]]) {
                const int tmp = order[a];
                order[a] = order[b];
                order[b] = tmp;
            }
    const int isa = cpu_get_isa();
    const cpu_gemm_fn gemm = cpu_gemm_for(isa);
    window_fn win_fn = window_generic;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == CPU_ISA_AVX512) win_fn = window_avx512;
    else if (isa == CPU_ISA_AVX2) win_fn = window_avx2;
#endif
#pragma omp parallel num_threads(nt)
    {
        float *sc = scratch + (size_t)cpu_thread_id() * sstride;
        int *pix = iscratch + (size_t)cpu_thread_id() * istride;
        for (int o = 0; o < 3; o++) {
            const int g = order[o], w = win[g];
            const int nwin = (H / w) * (W / w);
#pragma omp for schedule(dynamic, w >= 16 ? 1 : 256 / (w * w)) nowait
            for (int wi = 0; wi < nwin; wi++)
                win_fn(q, q_gs, v, v_gs, y, ps, H, W, k, g, w, shifted, wi, sc, pix, gemm);
        }
    }
}

void cpu_gmsa(const cpu_conv *pin, const cpu_conv *pout, int computes, float *x, float *qv, float *hid, size_t ps,
              int H, int W, int C, const int win[3], int shifted, float *scratch, size_t sstride, int *iscratch,
              size_t istride, int nt) {
    const int k = C / 3;
    if (computes) {
        cpu_conv_apply(pin, x, ps, qv, ps, H, W, CPU_STORE, scratch, sstride, nt);
        cpu_attention(qv, 2 * k, qv + (size_t)k * ps, 2 * k, hid, ps, H, W, k, win, shifted, scratch, sstride, iscratch,
                      istride, nt);
        cpu_conv_apply(pout, hid, ps, x, ps, H, W, CPU_ADD, scratch, sstride, nt);
    } else {
        float *y = hid + (size_t)C * ps;
        cpu_conv_apply(pin, x, ps, hid, ps, H, W, CPU_STORE, scratch, sstride, nt);
        cpu_attention(qv, 2 * k, hid, k, y, ps, H, W, k, win, shifted, scratch, sstride, iscratch, istride, nt);
        cpu_conv_apply(pout, y, ps, x, ps, H, W, CPU_ADD, scratch, sstride, nt);
    }
}
