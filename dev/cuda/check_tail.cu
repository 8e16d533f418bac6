// kernel: src/cuda/conv3x3.cu
/* check_tail.cu — the tensor-core tails against double-precision CPU references and against the fp32 tail
   (elan_cuda_tail) on the same data: elan_cuda_tail_mma (fp16 operands, from the half residual stream) and
   elan_cuda_tail_tf32 (tf32 operands, from the fp32 x, with and without x_bias); then all three timed at
   ELAN-light's size (960 x 540 cropped from 960 x 544, x4, C = 60).

   Coverage: scales 4, 2, 3; C = 60 (ELAN-light), 64 (no zero channels), 48, 20 (a partial k-step: ceil(C/16) = 2
   for tail_mma, ceil(C/8) = 3 for tail_tf32), 4 (the least); xh in fp16 and bf16; images cropped inside their
   padding (H, W not multiples of the 16-pixel tile, so tiles straddle the crop edge and the neighbourhood of edge
   pixels reads real values from the padding) and uncropped; batches of 1 to 4; 1 x 1. The large cases (several
   tiles per CTA: the persistent loop, the L2 prefetch of the next tile and, in tail_tf32, the staging of the next
   tile's k-planes behind the current tile's math) check every 7th LR pixel (every 31st at 960 x 540); tail_tf32
   also runs C = 8 (one k-step, whose pipeline needs its extra barrier) and C = 20 on several tiles per CTA.
   Also the _supported functions, prepare's and the launchers' refusals.

   Inputs: xh (tf32: x) of magnitude 1..60 and hb of 1..20, x_bias (tf32 cases, when given) of 0.5..10, random
   signs, never zero, over the whole padded image (the padding holds real activations); weights 0.01..0.2 and bias
   1..10, random signs, zero in the padded output columns as the backend stages them. The output is surrounded by
   GUARD floats on both sides and filled with a NaN sentinel: an unwritten element fails the comparison, a write
   outside the output changes a guard.

   tail_mma reference: s = fp16(float(xh) + hb) (fp32 sum, one rounding, as the kernel), the weights rounded to fp16
   here from the fp32 ones (independently of elan_cuda_tail_mma_weights, so its layout is checked too), then
   r = b + sum over taps and channels of w * s in double, zero outside the padded image; pixel shuffle; crop.
   Tolerances:
     against r: 1e-4 + 1e-5 S, S = |b| + sum |w s|. Products of fp16 values are exact in fp32; what is left is
                the fp32 accumulation: ceil(C/16) * 9 <= 36 mma steps each rounding the accumulator
                (<= 2^-24 S) plus the tensor core's alignment inside each k16 sum (<= 2^-23 of its |terms|),
                together <= ~2.3e-6 S: 4x margin.
     against the fp32 tail: that one neither rounds s nor the weights to fp16. Each product w s then differs
                by two independent roundings of relative size <= u = 2^-11 each (standard deviation
                <= u/sqrt(3) each), so the difference of the two tails has a standard deviation <= 0.82 u R,
                R = sqrt(sum (w s)^2). Tolerance 8 u R + 2e-5 S + 1e-3: ~10 standard deviations (no false
                alarm in the ~1e6 values compared) plus both accumulation bounds, still smaller than one typical
                term |w s|, so a wrong tap or channel shows.
   tail_tf32 reference: s = tf32((x + x_bias) + hb) (fp32 sums in that order, x_bias only inside the padded image,
   one rounding to nearest with ties away from zero: round_tf32 of dev_common.h, cvt.rna's rule), the weights
   rounded to tf32 here from the fp32 ones [cin][tap][out] (independently of elan_cuda_tail_tf32_weights: its
   layout and rounding are checked too), r in double as above.
     against r: 1e-4 + 3e-5 S. Products of tf32 values (11 significant bits each) are exact in fp32; the fp32
                accumulation runs over 9 * ceil(C/8) <= 72 mma steps, each adding <= 2^-23 S if the tensor core
                truncates rather than rounds (alignment inside the k8 sum included): <= 8.6e-6 S + 1.2e-7 S,
                3.4x margin.
     exact cases: x = +-[1.25, 1.75), x_bias and hb in (-0.125, 0.125), all multiples of 2^-13, so s is exact in
                fp32, lies in (1, 2) and carries 14 significant bits: its tf32 rounding drops 3 of them, 1 in 8
                values is a tie (ties away from zero and ties to even differ there, as do truncation and no
                rounding); w = m/16 (|m| <= 7) and b multiples of 2^-14. Every product and partial sum is then a
                multiple of 2^-14 below 2^9 in magnitude, exact in fp32 whatever the order: tolerance 0. A tie
                rounded the other way changes an output by >= 2^-14.
     against the fp32 tail (same x, x_bias): the same argument and bound as for tail_mma (tf32 also rounds to
                u = 2^-11), with the accumulation terms of 72 tf32 steps and the fp32 tail's 9 C sequential
                additions: 8 u R + 3e-5 S + 1e-3. (The fp32 tail takes x + x_bias, summed on the host.)
   Exit status non-zero on any failure. */
#include "dev_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>


/* fp16 rounding as the kernel's (saturating at +-65504; the inputs never get there) */
static float round16(float v) {
    return from_bits(to_bits(std::min(std::max(v, -65504.0f), 65504.0f), ELAN_ACT_F16), ELAN_ACT_F16);
}

#define GUARD 1024
static const uint32_t SENT = 0x7FBADBADu; /* a NaN */

static int failures = 0;
static double worst_ref = 0.0, worst_old = 0.0; /* largest error / tolerance over all cases */
static double worst_ref_tf32 = 0.0, worst_old_tf32 = 0.0;

struct dev_data {
    void *xh;
    float *x, *hb, *w, *b, *out, *out_old;
    void *wh;
};

/* Inputs of one case on the host: xh bits, hb, fp32 weights [C][9][npad] and bias [npad]. */
struct host_data {
    std::vector<uint16_t> xh;
    std::vector<float> hb, w, b;
};

static void make_inputs(host_data &h, int act, int n, int Hp, int Wp, int C, int S) {
    const size_t px = (size_t)n * Hp * Wp;
    const int nout = 3 * S * S, npad = elan_cuda_tail_nout_pad(S);
    h.xh.resize(px * C);
    h.hb.resize(px * C);
    for (size_t i = 0; i < px * C; i++) h.xh[i] = to_bits(rnd_mag(1.0f, 60.0f), act), h.hb[i] = rnd_mag(1.0f, 20.0f);
    h.w.assign((size_t)C * 9 * npad, 0.0f);
    h.b.assign(npad, 0.0f);
    for (int c = 0; c < C; c++)
        for (int t = 0; t < 9; t++)
            for (int o = 0; o < nout; o++) h.w[((size_t)c * 9 + t) * npad + o] = rnd_mag(0.01f, 0.2f);
    for (int o = 0; o < nout; o++) h.b[o] = rnd_mag(1.0f, 10.0f);
}

static dev_data upload(const host_data &h, int act, int n, int H, int W, int C, int S) {
    dev_data d;
    const size_t elems = h.xh.size(), nout_el = (size_t)n * 3 * H * S * W * S + 2 * GUARD;
    std::vector<float> x(elems);
    for (size_t i = 0; i < elems; i++) x[i] = from_bits(h.xh[i], act);
    std::vector<uint16_t> wh(elan_cuda_tail_mma_weights_count(S));
    elan_cuda_tail_mma_weights(h.w.data(), C, S, wh.data());
    std::vector<uint32_t> sent(nout_el, SENT);
    CK(cudaMalloc(&d.xh, elems * 2));
    CK(cudaMalloc(&d.x, elems * 4));
    CK(cudaMalloc(&d.hb, elems * 4));
    CK(cudaMalloc(&d.w, h.w.size() * 4));
    CK(cudaMalloc(&d.b, h.b.size() * 4));
    CK(cudaMalloc(&d.wh, wh.size() * 2));
    CK(cudaMalloc(&d.out, nout_el * 4));
    CK(cudaMalloc(&d.out_old, nout_el * 4));
    CK(cudaMemcpy(d.xh, h.xh.data(), elems * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.x, x.data(), elems * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.hb, h.hb.data(), elems * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.w, h.w.data(), h.w.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.b, h.b.data(), h.b.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.wh, wh.data(), wh.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.out, sent.data(), nout_el * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.out_old, sent.data(), nout_el * 4, cudaMemcpyHostToDevice));
    return d;
}

static void release(dev_data &d) {
    CK(cudaFree(d.xh));
    CK(cudaFree(d.x));
    CK(cudaFree(d.hb));
    CK(cudaFree(d.w));
    CK(cudaFree(d.b));
    CK(cudaFree(d.wh));
    CK(cudaFree(d.out));
    CK(cudaFree(d.out_old));
}

static elan_cuda_tail_args tail_args(const dev_data &d, int act, int mma, int n, int H, int W, int Hp, int Wp, int C,
                                     int S) {
    elan_cuda_tail_args a;
    memset(&a, 0, sizeof a);
    a.hb = d.hb, a.b = d.b;
    a.n = n, a.H = H, a.W = W, a.Hp = Hp, a.Wp = Wp, a.C = C, a.scale = S;
    if (mma)
        a.xh = d.xh, a.act = act, a.wh = d.wh, a.out = d.out + GUARD;
    else
        a.x = d.x, a.w = d.w, a.out = d.out_old + GUARD;
    return a;
}

/* Checks a tensor-core tail's output got (GUARD sentinels on both sides) against the double reference from its
   rounded operands (s_at(base, c): s in fp32 as the kernel forms it, base the pixel's first element; rnd: the
   kernel's rounding of s and of the weights w) and against the fp32 tail's output old, on every stride-th LR
   pixel; every element must be written. Tolerances (opening comment): 1e-4 + rel_ref S against the reference (0
   when exact), 8 u R + rel_old S + 1e-3 against the fp32 tail. Sets the worst err / tol of both, returns the
   number of bad values. */
template <typename SumAt>
static long long compare_tail(const char *what, const std::vector<float> &got, const std::vector<float> &old,
                              const std::vector<float> &w, const std::vector<float> &b, SumAt s_at, float (*rnd)(float),
                              double rel_ref, double rel_old, int exact, int n, int Hp, int Wp, int H, int W, int C, int S,
                              int stride, double *wr_out, double *wo_out, long long *checked_out) {
    long long bad = 0, checked = 0;
    const int nout = 3 * S * S, npad = elan_cuda_tail_nout_pad(S);
    const size_t nout_el = (size_t)n * 3 * H * S * W * S, OH = (size_t)H * S, OW = (size_t)W * S;
    auto report = [&](const char *kind, long long i, double g, double r, double tol) {
        if (bad < 5) fprintf(stderr, "  MISMATCH %s: %s at %lld: got %.9g ref %.9g (tol %.3g)\n", what, kind, i, g, r, tol);
        bad++;
    };
    for (size_t i = 0; i < GUARD; i++) {
        uint32_t u;
        memcpy(&u, &got[i], 4);
        if (u != SENT) report("guard before", (long long)i - GUARD, got[i], 0, 0);
        memcpy(&u, &got[GUARD + nout_el + i], 4);
        if (u != SENT) report("guard after", (long long)i, got[GUARD + nout_el + i], 0, 0);
    }

    /* rounded weights of the reference, [tap][o][c] */
    std::vector<double> wt((size_t)9 * nout * C), w32((size_t)9 * nout * C);
    for (int c = 0; c < C; c++)
        for (int t = 0; t < 9; t++)
            for (int o = 0; o < nout; o++) {
                const float v = w[((size_t)c * 9 + t) * npad + o];
                wt[((size_t)t * nout + o) * C + c] = rnd(v);
                w32[((size_t)t * nout + o) * C + c] = v;
            }
    std::vector<double> r(nout), S_(nout), R2(nout), st(C), s32(C);
    double wr = 0.0, wo = 0.0;
    const long long lr_px = (long long)n * H * W;
    for (long long p = 0; p < lr_px; p += stride) {
        const int img = (int)(p / ((long long)H * W)), y = (int)(p / W % H), x = (int)(p % W);
        for (int o = 0; o < nout; o++) r[o] = b[o], S_[o] = fabs((double)b[o]), R2[o] = 0.0;
        for (int t = 0; t < 9; t++) {
            const int py = y + t / 3 - 1, px = x + t % 3 - 1;
            if (py < 0 || py >= Hp || px < 0 || px >= Wp) continue;
            const size_t base = (((size_t)img * Hp + py) * Wp + px) * C;
            for (int c = 0; c < C; c++) {
                const float sum = s_at(base, c); /* fp32, as the kernel */
                st[c] = rnd(sum);
                s32[c] = sum;
            }
            for (int o = 0; o < nout; o++) {
                const double *at_ = &wt[((size_t)t * nout + o) * C], *a32 = &w32[((size_t)t * nout + o) * C];
                double acc = 0.0, abs_ = 0.0, sq = 0.0;
                for (int c = 0; c < C; c++) {
                    const double term = at_[c] * st[c], t32 = a32[c] * s32[c];
                    acc += term, abs_ += fabs(term), sq += t32 * t32;
                }
                r[o] += acc, S_[o] += abs_, R2[o] += sq;
            }
        }
        for (int o = 0; o < nout; o++) {
            const int c = o / (S * S), i = o / S % S, j = o % S;
            const size_t e = GUARD + (((size_t)img * 3 + c) * OH + (size_t)y * S + i) * OW + (size_t)x * S + j;
            const double g = got[e], go = old[e];
            const double tol = exact ? 0.0 : 1e-4 + rel_ref * S_[o];
            const double tol_old = 8.0 * (1.0 / 2048.0) * sqrt(R2[o]) + rel_old * S_[o] + 1e-3;
            checked++;
            if (!exact) wr = std::max(wr, fabs(g - r[o]) / tol);
            wo = std::max(wo, fabs(g - go) / tol_old);
            if (!(fabs(g - r[o]) <= tol)) report("vs reference", (long long)e - GUARD, g, r[o], tol);
            if (!(fabs(g - go) <= tol_old)) report("vs fp32 tail", (long long)e - GUARD, g, go, tol_old);
        }
    }
    long long unwritten = 0;
    for (size_t e = 0; e < nout_el; e++) {
        uint32_t u;
        memcpy(&u, &got[GUARD + e], 4);
        if (u == SENT) unwritten++;
    }
    if (unwritten) {
        fprintf(stderr, "  %s: %lld output elements unwritten\n", what, unwritten);
        bad += unwritten;
    }
    *wr_out = wr, *wo_out = wo, *checked_out = checked;
    return bad;
}

/* One case: both tails, compared on every `stride`-th LR pixel (in n, y, x order), guards on all. */
static void run_case(int act, int S, int C, int n, int Hp, int Wp, int H, int W, int stride) {
    char what[160];
    snprintf(what, sizeof what, "%s x%d C=%d n=%d %dx%d (padded %dx%d)%s", act == ELAN_ACT_F16 ? "fp16" : "bf16", S,
             C, n, H, W, Hp, Wp, stride > 1 ? ", sampled" : "");
    host_data h;
    make_inputs(h, act, n, Hp, Wp, C, S);
    dev_data d = upload(h, act, n, H, W, C, S);
    const elan_cuda_tail_args am = tail_args(d, act, 1, n, H, W, Hp, Wp, C, S);
    const elan_cuda_tail_args ao = tail_args(d, act, 0, n, H, W, Hp, Wp, C, S);
    CK(elan_cuda_tail_mma(&am, 0));
    CK(elan_cuda_tail(&ao, 0));
    CK(cudaDeviceSynchronize());
    const size_t nout_el = (size_t)n * 3 * H * S * W * S;
    std::vector<float> got(nout_el + 2 * GUARD), old(nout_el + 2 * GUARD);
    CK(cudaMemcpy(got.data(), d.out, got.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(old.data(), d.out_old, old.size() * 4, cudaMemcpyDeviceToHost));
    release(d);

    double wr = 0.0, wo = 0.0;
    long long checked = 0;
    const long long bad = compare_tail(
        what, got, old, h.w, h.b, [&](size_t base, int c) { return from_bits(h.xh[base + c], act) + h.hb[base + c]; },
        round16, 1e-5, 2e-5, 0, n, Hp, Wp, H, W, C, S, stride, &wr, &wo, &checked);
    worst_ref = std::max(worst_ref, wr);
    worst_old = std::max(worst_old, wo);
    if (bad) {
        fprintf(stderr, "FAIL %s: %lld bad values\n", what, bad);
        failures++;
    } else
        printf("ok   %s: %lld values, worst err/tol %.3f (reference), %.3f (fp32 tail)\n", what, checked, wr, wo);
}

/* ---- tf32 ---- */

struct dev_tf32 {
    float *x, *hb, *xb, *w, *wt, *b, *out, *out_old;
    float *xsum; /* x + x_bias (fp32 sum, as the tf32 tail forms it): the fp32 tail's input, which has no x_bias */
};

/* Inputs of a tf32 case on the host: x, hb, x_bias (C), fp32 weights [C][9][npad] and bias [npad]; exact: the
   dyadic inputs of the exact cases (opening comment). */
struct host_tf32 {
    std::vector<float> x, hb, xb, w, b;
};

/* k / 2^bits, k uniform in [0, 2^n): a multiple of 2^-bits below 2^(n - bits) */
static float rnd_dyadic(int n, int bits) { return (float)(rng_next() >> (64 - n)) / (float)(1u << bits); }
static float rnd_sign(float v) { return (rng_next() & 1) ? -v : v; }

static void make_inputs_tf32(host_tf32 &h, int n, int Hp, int Wp, int C, int S, int exact) {
    const size_t px = (size_t)n * Hp * Wp;
    const int nout = 3 * S * S, npad = elan_cuda_tail_nout_pad(S);
    h.x.resize(px * C);
    h.hb.resize(px * C);
    h.xb.resize(C);
    h.w.assign((size_t)C * 9 * npad, 0.0f);
    h.b.assign(npad, 0.0f);
    for (size_t i = 0; i < px * C; i++) {
        if (exact) {
            h.x[i] = rnd_sign(1.25f + rnd_dyadic(12, 13));   /* [1.25, 1.75) */
            h.hb[i] = rnd_sign(rnd_dyadic(10, 13));          /* [0, 0.125) */
        } else
            h.x[i] = rnd_mag(1.0f, 60.0f), h.hb[i] = rnd_mag(1.0f, 20.0f);
    }
    for (int c = 0; c < C; c++) h.xb[c] = exact ? rnd_sign(rnd_dyadic(10, 13)) : rnd_mag(0.5f, 10.0f);
    for (int c = 0; c < C; c++)
        for (int t = 0; t < 9; t++)
            for (int o = 0; o < nout; o++)
                h.w[((size_t)c * 9 + t) * npad + o] =
                    exact ? rnd_sign((float)(1 + rng_next() % 7) / 16.0f) : rnd_mag(0.01f, 0.2f);
    for (int o = 0; o < nout; o++) h.b[o] = exact ? rnd_sign(rnd_dyadic(17, 14)) : rnd_mag(1.0f, 10.0f);
}

static dev_tf32 upload_tf32(const host_tf32 &h, int n, int H, int W, int C, int S) {
    dev_tf32 d;
    const size_t elems = h.x.size(), nout_el = (size_t)n * 3 * H * S * W * S + 2 * GUARD;
    std::vector<float> wt(elan_cuda_tail_tf32_weights_count(S));
    elan_cuda_tail_tf32_weights(h.w.data(), C, S, wt.data());
    std::vector<uint32_t> sent(nout_el, SENT);
    CK(cudaMalloc(&d.x, elems * 4));
    CK(cudaMalloc(&d.hb, elems * 4));
    CK(cudaMalloc(&d.xb, h.xb.size() * 4));
    CK(cudaMalloc(&d.w, h.w.size() * 4));
    CK(cudaMalloc(&d.wt, wt.size() * 4));
    CK(cudaMalloc(&d.b, h.b.size() * 4));
    CK(cudaMalloc(&d.out, nout_el * 4));
    CK(cudaMalloc(&d.out_old, nout_el * 4));
    CK(cudaMemcpy(d.x, h.x.data(), elems * 4, cudaMemcpyHostToDevice));
    {
        std::vector<float> xs(elems);
        const int C_ = (int)h.xb.size();
        for (size_t i = 0; i < elems; i++) xs[i] = h.x[i] + h.xb[i % C_];
        CK(cudaMalloc(&d.xsum, elems * 4));
        CK(cudaMemcpy(d.xsum, xs.data(), elems * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMemcpy(d.hb, h.hb.data(), elems * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.xb, h.xb.data(), h.xb.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.w, h.w.data(), h.w.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.wt, wt.data(), wt.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.b, h.b.data(), h.b.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.out, sent.data(), nout_el * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.out_old, sent.data(), nout_el * 4, cudaMemcpyHostToDevice));
    return d;
}

static void release_tf32(dev_tf32 &d) {
    CK(cudaFree(d.x));
    CK(cudaFree(d.hb));
    CK(cudaFree(d.xb));
    CK(cudaFree(d.xsum));
    CK(cudaFree(d.w));
    CK(cudaFree(d.wt));
    CK(cudaFree(d.b));
    CK(cudaFree(d.out));
    CK(cudaFree(d.out_old));
}

/* args of the tf32 tail (tc = 1: wt, out) or of the fp32 tail (tc = 0: w, out_old) on the same x, hb, x_bias (the
   fp32 tail has no x_bias: it reads x + x_bias, summed on the host as the tf32 tail sums it) */
static elan_cuda_tail_args tail_args_tf32(const dev_tf32 &d, int tc, int xbias, int n, int H, int W, int Hp, int Wp,
                                          int C, int S) {
    elan_cuda_tail_args a;
    memset(&a, 0, sizeof a);
    a.x = d.x, a.hb = d.hb, a.b = d.b, a.x_bias = xbias && tc ? d.xb : NULL;
    if (xbias && !tc) a.x = d.xsum;
    a.n = n, a.H = H, a.W = W, a.Hp = Hp, a.Wp = Wp, a.C = C, a.scale = S;
    if (tc)
        a.wt = d.wt, a.out = d.out + GUARD;
    else
        a.w = d.w, a.out = d.out_old + GUARD;
    return a;
}

/* One tf32 case: the tf32 and the fp32 tail, compared on every `stride`-th LR pixel (in n, y, x order), guards and
   every element of the tf32 output checked. */
static void run_case_tf32(int S, int C, int n, int Hp, int Wp, int H, int W, int stride, int xbias, int exact) {
    char what[160];
    snprintf(what, sizeof what, "tf32%s x%d C=%d n=%d %dx%d (padded %dx%d)%s%s", exact ? " exact" : "", S, C, n, H, W,
             Hp, Wp, xbias ? ", x_bias" : "", stride > 1 ? ", sampled" : "");
    if (elan_cuda_tail_tf32_supported(C, S) != 0) {
        printf("skip %s: not supported on this GPU\n", what);
        return;
    }
    host_tf32 h;
    make_inputs_tf32(h, n, Hp, Wp, C, S, exact);
    dev_tf32 d = upload_tf32(h, n, H, W, C, S);
    const elan_cuda_tail_args at = tail_args_tf32(d, 1, xbias, n, H, W, Hp, Wp, C, S);
    const elan_cuda_tail_args ao = tail_args_tf32(d, 0, xbias, n, H, W, Hp, Wp, C, S);
    CK(elan_cuda_tail_tf32(&at, 0));
    CK(elan_cuda_tail(&ao, 0));
    CK(cudaDeviceSynchronize());
    const size_t nout_el = (size_t)n * 3 * H * S * W * S;
    std::vector<float> got(nout_el + 2 * GUARD), old(nout_el + 2 * GUARD);
    CK(cudaMemcpy(got.data(), d.out, got.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(old.data(), d.out_old, old.size() * 4, cudaMemcpyDeviceToHost));
    release_tf32(d);

    double wr = 0.0, wo = 0.0;
    long long checked = 0;
    const long long bad = compare_tail(
        what, got, old, h.w, h.b,
        [&](size_t base, int c) { return (h.x[base + c] + (xbias ? h.xb[c] : 0.0f)) + h.hb[base + c]; }, round_tf32,
        3e-5, 3e-5, exact, n, Hp, Wp, H, W, C, S, stride, &wr, &wo, &checked);
    worst_ref_tf32 = std::max(worst_ref_tf32, wr);
    worst_old_tf32 = std::max(worst_old_tf32, wo);
    if (bad) {
        fprintf(stderr, "FAIL %s: %lld bad values\n", what, bad);
        failures++;
    } else if (exact)
        printf("ok   %s: %lld values, exact (reference), worst err/tol %.3f (fp32 tail)\n", what, checked, wo);
    else
        printf("ok   %s: %lld values, worst err/tol %.3f (reference), %.3f (fp32 tail)\n", what, checked, wr, wo);
}

/* The tf32 launcher's and prepare's refusals, and elan_cuda_tail_tf32_supported. */
static void check_tf32_refusals(void) {
    const struct {
        int C, S, want;
    } sup[] = {{60, 4, 0}, {64, 2, 0}, {4, 3, 0}, {8, 4, 0}, {20, 3, 0}, {62, 4, -1}, {68, 4, -1}, {0, 4, -1},
               {2, 4, -1}, {60, 5, -1}, {60, 1, -1}};
    /* x4 needs 189 KB of shared memory a block: supported on sm_90, not on sm_80 (163 KB) */
    int dev = 0, optin = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    for (const auto &s : sup)
        if (elan_cuda_tail_tf32_supported(s.C, s.S) != (s.S == 4 && optin < 200 * 1024 ? -1 : s.want)) {
            fprintf(stderr, "FAIL elan_cuda_tail_tf32_supported(%d, %d) = %d, want %d\n", s.C, s.S,
                    elan_cuda_tail_tf32_supported(s.C, s.S), s.want);
            failures++;
        }
    if (elan_cuda_tail_tf32_prepare(62, 4) != cudaErrorInvalidValue || elan_cuda_tail_tf32_prepare(60, 5) != cudaErrorInvalidValue ||
        elan_cuda_tail_tf32_weights_count(5) != 0 || elan_cuda_tail_tf32_weights_count(4) != (size_t)9 * 8 * 48 * 8) {
        fprintf(stderr, "FAIL elan_cuda_tail_tf32_prepare / _weights_count of unsupported shapes\n");
        failures++;
    }
    host_tf32 h;
    make_inputs_tf32(h, 1, 16, 16, 60, 3, 0);
    dev_tf32 d = upload_tf32(h, 1, 16, 16, 60, 3);
    const elan_cuda_tail_args a = tail_args_tf32(d, 1, 1, 1, 16, 16, 16, 16, 60, 3);
    elan_cuda_tail_args b[8];
    const char *why[8] = {"no wt", "no x", "misaligned x", "misaligned hb", "misaligned wt", "W > Wp", "C = 62", "scale 5"};
    for (int i = 0; i < 8; i++) b[i] = a;
    b[0].wt = NULL;
    b[1].x = NULL;
    b[2].x = a.x + 1;
    b[3].hb = a.hb + 1;
    b[4].wt = a.wt + 2;
    b[5].W = 17;
    b[6].C = 62;
    b[7].scale = 5;
    for (int i = 0; i < 8; i++) {
        const cudaError_t e = elan_cuda_tail_tf32(&b[i], 0);
        if (e != cudaErrorInvalidValue) {
            fprintf(stderr, "FAIL tf32 refusal (%s): %s\n", why[i], cudaGetErrorName(e));
            failures++;
        }
    }
    (void)cudaGetLastError();
    /* and the accepted args, with the output checked by the cases */
    CK(elan_cuda_tail_tf32(&a, 0));
    CK(cudaDeviceSynchronize());
    release_tf32(d);
}

/* ---- timing ---- */

static double median_launch_ms(const elan_cuda_tail_args &a, cudaError_t (*f)(const elan_cuda_tail_args *, cudaStream_t)) {
    const int WARM = 5, RUNS = 100;
    const std::vector<float> ms = sorted_times_ms(WARM, RUNS, [&](int) { return f(&a, 0); });
    return ms[RUNS / 2];
}

/* The three tails at 960 x 540 x4 (C = 60): tf32 (with x_bias, as the forward would call it), fp32 (no x_bias)
   and fp16 tail_mma, each the median of 100 back-to-back launches after 5 warm-ups. */
static void time_tails(void) {
    const int S = 4, C = 60, n = 1, Hp = 544, Wp = 960, H = 540, W = 960;
    /* DRAM bytes a tail must move at least: its input activations of the padded image, the output */
    const double out_bytes = (double)n * 3 * H * S * W * S * 4.0, px = (double)n * Hp * Wp;
    const double macs = (double)n * H * W * 9 * C * 3 * S * S;
    double t_tf32, t_f32, t_mma;
    if (elan_cuda_tail_tf32_supported(C, S) != 0) {
        printf("time: tail_tf32 x%d not supported on this GPU, not timed\n", S);
        return;
    }
    {
        host_tf32 h;
        make_inputs_tf32(h, n, Hp, Wp, C, S, 0);
        dev_tf32 d = upload_tf32(h, n, H, W, C, S);
        const elan_cuda_tail_args at = tail_args_tf32(d, 1, 1, n, H, W, Hp, Wp, C, S);
        const elan_cuda_tail_args ao = tail_args_tf32(d, 0, 1, n, H, W, Hp, Wp, C, S);
        t_tf32 = median_launch_ms(at, elan_cuda_tail_tf32);
        t_f32 = median_launch_ms(ao, elan_cuda_tail);
        release_tf32(d);
    }
    {
        const int act = ELAN_ACT_F16;
        host_data h;
        make_inputs(h, act, n, Hp, Wp, C, S);
        dev_data d = upload(h, act, n, H, W, C, S);
        const elan_cuda_tail_args am = tail_args(d, act, 1, n, H, W, Hp, Wp, C, S);
        t_mma = median_launch_ms(am, elan_cuda_tail_mma);
        release(d);
    }
    const double b32 = px * C * 8.0 + out_bytes, b16 = px * C * 6.0 + out_bytes;
    printf("time x%d C=%d %dx%d (padded %dx%d), medians of 100:\n", S, C, W, H, Wp, Hp);
    printf("  tf32 tail (tensor cores, x_bias) %.4f ms: %.0f GB/s of its minimum traffic (%.0f MB), %.1f TMAC/s\n", t_tf32,
           b32 / (t_tf32 * 1e-3) / 1e9, b32 / 1e6, macs / (t_tf32 * 1e-3) / 1e12);
    printf("  fp32 tail (CUDA cores)           %.4f ms: %.0f GB/s, %.1f TMAC/s; fp32 / tf32 %.2fx\n", t_f32,
           b32 / (t_f32 * 1e-3) / 1e9, macs / (t_f32 * 1e-3) / 1e12, t_f32 / t_tf32);
    printf("  fp16 tail_mma (tensor cores)     %.4f ms: %.0f GB/s of its minimum traffic (%.0f MB), %.1f TMAC/s; "
           "tf32 / fp16 %.2fx\n", t_mma, b16 / (t_mma * 1e-3) / 1e9, b16 / 1e6, macs / (t_mma * 1e-3) / 1e12, t_tf32 / t_mma);
}

int main(void) {
    const struct {
        int C, S, want;
    } sup[] = {{60, 4, 0}, {64, 2, 0}, {4, 3, 0}, {48, 4, 0}, {62, 4, -1}, {68, 4, -1}, {0, 4, -1}, {60, 5, -1}, {60, 1, -1}};
    for (const auto &s : sup)
        if (elan_cuda_tail_mma_supported(s.C, s.S) != s.want) {
            fprintf(stderr, "FAIL elan_cuda_tail_mma_supported(%d, %d) = %d, want %d\n", s.C, s.S,
                    elan_cuda_tail_mma_supported(s.C, s.S), s.want);
            failures++;
        }
    const int acts[] = {ELAN_ACT_F16, ELAN_ACT_BF16};
    const int Cs[] = {60, 64, 48, 20, 8, 4};
    for (int S = 2; S <= 4; S++)
        for (int C : Cs) {
            for (int act : acts) CK(elan_cuda_tail_mma_prepare(C, S, act));
            if (elan_cuda_tail_tf32_supported(C, S) == 0) CK(elan_cuda_tail_tf32_prepare(C, S));
        }
    check_tf32_refusals();
    if (elan_cuda_tail_mma_prepare(60, 4, ELAN_ACT_F32) != cudaErrorInvalidValue) {
        fprintf(stderr, "FAIL elan_cuda_tail_mma_prepare accepts fp32\n");
        failures++;
    }

    /* the launcher's refusals: fp32 act, misaligned hb, crop larger than the padded image */
    {
        host_data h;
        make_inputs(h, ELAN_ACT_F16, 1, 16, 16, 60, 4);
        dev_data d = upload(h, ELAN_ACT_F16, 1, 16, 16, 60, 4);
        elan_cuda_tail_args a = tail_args(d, ELAN_ACT_F16, 1, 1, 16, 16, 16, 16, 60, 4);
        elan_cuda_tail_args b = a;
        b.act = ELAN_ACT_F32;
        const cudaError_t e1 = elan_cuda_tail_mma(&b, 0);
        b = a;
        b.hb = a.hb + 1;
        const cudaError_t e2 = elan_cuda_tail_mma(&b, 0);
        b = a;
        b.W = 17;
        const cudaError_t e3 = elan_cuda_tail_mma(&b, 0);
        if (e1 != cudaErrorInvalidValue || e2 != cudaErrorInvalidValue || e3 != cudaErrorInvalidValue) {
            fprintf(stderr, "FAIL refusals: %s, %s, %s\n", cudaGetErrorName(e1), cudaGetErrorName(e2), cudaGetErrorName(e3));
            failures++;
        }
        (void)cudaGetLastError();
        release(d);
    }

    const struct {
        int S, C, n, Hp, Wp, H, W, stride;
    } cases[] = {
        {4, 60, 1, 64, 48, 60, 45, 1},    /* ELAN-light, cropped inside its padding */
        {4, 60, 2, 32, 32, 32, 32, 1},    /* uncropped, a batch */
        {2, 60, 1, 48, 32, 37, 29, 1},
        {3, 60, 2, 32, 48, 30, 41, 1},
        {2, 64, 1, 32, 32, 17, 31, 1},    /* no zero channels */
        {3, 20, 1, 48, 48, 40, 33, 1},    /* 2 k-steps, the second partial */
        {4, 48, 3, 16, 32, 9, 17, 1},
        {4, 4, 1, 16, 16, 16, 5, 1},      /* the least C */
        {2, 60, 1, 16, 16, 1, 1, 1},
        {3, 60, 4, 256, 256, 250, 250, 7}, /* several tiles per CTA */
        {2, 60, 2, 256, 256, 256, 243, 7},
        {4, 60, 1, 544, 960, 540, 960, 31}, /* the timed size */
    };
    int ncases = 0;
    for (const auto &c : cases)
        for (int act : acts) {
            run_case(act, c.S, c.C, c.n, c.Hp, c.Wp, c.H, c.W, c.stride);
            ncases++;
        }
    const struct {
        int S, C, n, Hp, Wp, H, W, stride;
    } extra[] = {
        {2, 8, 2, 256, 256, 250, 256, 7}, /* one k-step (its extra barrier), several tiles per CTA */
        {3, 20, 3, 128, 256, 125, 250, 5}, /* a partial k-step, several tiles per CTA */
    };
    int ntf32 = 0;
    for (const auto &c : cases)
        for (int xb = 0; xb < 2; xb++) {
            run_case_tf32(c.S, c.C, c.n, c.Hp, c.Wp, c.H, c.W, c.stride, xb, 0);
            ntf32++;
        }
    for (const auto &c : extra)
        for (int xb = 0; xb < 2; xb++) {
            run_case_tf32(c.S, c.C, c.n, c.Hp, c.Wp, c.H, c.W, c.stride, xb, 0);
            ntf32++;
        }
    /* exact: every tf32 rounding of s checked, ties included */
    run_case_tf32(4, 60, 2, 64, 48, 60, 45, 1, 1, 1), ntf32++;
    run_case_tf32(3, 20, 1, 48, 48, 40, 33, 1, 0, 1), ntf32++;
    run_case_tf32(2, 64, 3, 256, 256, 256, 243, 3, 1, 1), ntf32++;
    printf("%d cases (tail_mma), %d (tail_tf32), %d failed; worst error / tolerance: tail_mma %.3f against the reference, "
           "%.3f against the fp32 tail; tail_tf32 %.3f, %.3f\n",
           ncases, ntf32, failures, worst_ref, worst_old, worst_ref_tf32, worst_old_tf32);
    if (failures) {
        printf("FAIL tail\n");
        return 1;
    }
    time_tails();
    printf("PASS tail\n");
    return 0;
}
