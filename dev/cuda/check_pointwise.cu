// kernel: src/cuda/pointwise.cu
/* check_pointwise.cu — elan_cuda_pw (1x1 conv on tensor cores with a fused bias / residual epilogue) against a
   double-precision CPU reference, then its timing at ELAN-light's size (960 x 544 pixels, P = 522240).

   Coverage: P in {1, 17, 256, 1000, 522240} (none but 256 a multiple of the 64-pixel tile), shapes
   (cin, cout) = (60, 120) and (60, 60) of ELAN-light plus (48, 96), (64, 128), (13, 37), (20, 30) (every
   compiled n8 tile count: 4, 8, 12, 15, 16 tiles; odd cin and cout), fp16 and bf16, the output mode, the residual
   mode with xh and without, the half residual stream (out = x = NULL: xh += r in place), and five layouts of the
   rows (the half stream's xh rows take the x rows' strides):
     dense   strides = row widths (ELAN's case: 120-byte input rows, 8-byte chunks)
     wide    in_stride = 2*cin, out_stride = cout + 8, x_stride = cout + 4
     4-byte  strides = width + 2 (4-byte chunks for the half rows)
     odd     strides = width + 1 (2-byte rows: the plain-load fallback of the input, 1-element stores)
     offset  dense strides with every base pointer moved by 2 elements (alignment taken from the pointer)
   P = 522240 runs only the ELAN shapes with the dense and wide layouts and the modes out, x+xh and half; there the
   values are compared on the first and last 1024 rows and every 97th row, and the untouched checks cover every
   row.

   Inputs: every value non-zero with magnitude 1..10 and a random sign (in, x, xh of the half stream, bias);
   weights 0.1..1 so that the sums stay ~10..300 and far from fp16's 65504. Padding columns of the input rows hold
   NaN: a kernel that read them would poison its row. Output padding columns (xh's for the half stream) and
   2 guard rows past P hold a sentinel and must keep it.

   Reference: r = b + sum_c w[o][c] * in[p][c] in double from the same T-rounded in and w. Tolerances:
     out (fp16): 1e-2 + 2e-3 |r|. Rounding r to fp16 costs at most 2^-11 |r| (4.9e-4 |r|); the fp32
                 accumulation of <= 64 products (S = sum of |terms| <= ~600 here) adds ~64 * 2^-24 * S < 3e-3,
                 which the 1e-2 floor covers; 2e-3 |r| is 4x the rounding bound.
     out (bf16): 8e-2 + 1e-2 |r|: rounding to bf16 costs 2^-9 |r| (2e-3 |r|), 5x margin.
     x (fp32):   1e-4 + 1e-5 S + 1e-6 |x|: the accumulation bound 64 * 2^-24 * S = 3.8e-6 S with room for the
                 tensor cores' internal alignment of each k16 sum; the add of the old x one fp32 rounding.
     xh:         the out tolerance of its type around the reference new x (one rounding of a value already within
                 the x tolerance).
     half:       ref = float(xh) + r, rounded once to T by the kernel. The kernel's fp32 value lies within the x
                 tolerance of ref, so its rounding lies between T(ref - tol) and T(ref + tol); accepted: inside
                 that range, or at most 1 ulp of T from T(ref) (the fp32 sum and ref on two sides of a rounding
                 midpoint). Near ref = 0 (|ref| < ~0.05 in fp16: cancellation of xh and r) the fp32 error can span
                 more than one ulp of T; such values pass by the range and are counted and printed ("beyond
                 1 ulp"), so that a growing count shows.
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


/* Random T values of magnitude 1..10 (sign random) drawn from a pool: converting tens of millions of floats one
   by one on the host would dominate the check's run time. */
#define POOL 65536
static std::vector<uint16_t> pool[3];
static inline uint16_t rnd_act(int act) {
    std::vector<uint16_t> &q = pool[act];
    if (q.empty())
        for (int i = 0; i < POOL; i++) q.push_back(to_bits(rnd_mag(1.0f, 10.0f), act));
    return q[rng_next() & (POOL - 1)];
}
static uint16_t nan_bits(int act) { return act == ELAN_ACT_F16 ? 0x7E00 : 0x7FC0; }

#define SENT16 ((uint16_t)0x5A5A) /* finite in both fp16 and bf16 */
static const uint32_t SENT32 = 0x4640E6B7u; /* 12345.678f */
#define GUARD 2                             /* rows past P that must stay untouched */

enum { MODE_OUT = 0, MODE_XH = 1, MODE_X = 2, MODE_HALF = 3, MODE_N };
static const char *mode_name[] = {"out", "x+xh", "x", "half"};
enum { LAY_DENSE, LAY_WIDE, LAY_4B, LAY_ODD, LAY_OFFSET, LAY_N };
static const char *lay_name[] = {"dense", "wide", "4-byte", "odd", "offset"};

struct tol_t {
    double abs_, rel;
};
static tol_t half_tol(int act) { return act == ELAN_ACT_F16 ? tol_t{1e-2, 2e-3} : tol_t{8e-2, 1e-2}; }

/* Rounding of the half stream's sum as the kernel does it (elan_from_f: fp16 saturates at +-65504). */
static uint16_t round_out(double v, int act) {
    float f = (float)v;
    if (act == ELAN_ACT_F16 && f == f) f = std::min(std::max(f, -65504.0f), 65504.0f);
    return to_bits(f, act);
}
/* 16-bit float bits (fp16 or bf16) as integers ordered like their values, adjacent values 1 apart (+0 = -0 = 0):
   the difference of two is their distance in ulps. */
static int ord16(uint16_t u) { return (u & 0x8000) ? -(int)(u & 0x7FFF) : (int)u; }

static int failures = 0;
static double worst_all[3][MODE_N]; /* [act][mode]: largest error / tolerance over all cases (not for half) */
static int max_ulp_all[3];          /* [act]: half stream, largest distance from T(ref) in ulps */
static long long beyond_all[3];     /* [act]: half stream, values more than 1 ulp from T(ref) (passed by the range) */

/* Runs one configuration and checks it; returns the number of bad values (also counted in failures). */
static long long run_case(long long P, int cin, int cout, int act, int mode, int lay) {
    int in_stride = cin, o_stride = cout;
    size_t shift = 0; /* elements every base pointer moves by */
    switch (lay) {
    case LAY_WIDE: in_stride = 2 * cin, o_stride = mode == MODE_OUT ? cout + 8 : cout + 4; break;
    case LAY_4B: in_stride = cin + 2, o_stride = cout + 2; break;
    case LAY_ODD: in_stride = cin + 1, o_stride = cout + 1; break;
    case LAY_OFFSET: shift = 2; break;
    default: break;
    }
    const long long rows_o = P + GUARD;

    /* host data */
    std::vector<uint16_t> h_in((size_t)P * in_stride), h_w((size_t)cout * cin);
    std::vector<float> h_b(cout);
    for (long long p = 0; p < P; p++)
        for (int c = 0; c < in_stride; c++)
            h_in[(size_t)p * in_stride + c] = c < cin ? rnd_act(act) : nan_bits(act);
    for (auto &v : h_w) v = to_bits(rnd_mag(0.1f, 1.0f), act);
    for (auto &v : h_b) v = rnd_mag(1.0f, 10.0f);
    std::vector<uint16_t> h_o16;
    std::vector<float> h_x0;
    if (mode == MODE_OUT) {
        h_o16.assign((size_t)rows_o * o_stride, SENT16);
    } else if (mode == MODE_HALF) {
        /* the stream itself: live values random, padding columns and guard rows the sentinel */
        h_o16.assign((size_t)rows_o * o_stride, SENT16);
        for (long long p = 0; p < P; p++)
            for (int o = 0; o < cout; o++) h_o16[(size_t)p * o_stride + o] = rnd_act(act);
    } else {
        float sent;
        memcpy(&sent, &SENT32, 4);
        h_x0.assign((size_t)rows_o * o_stride, sent);
        for (long long p = 0; p < P; p++)
            for (int o = 0; o < cout; o++) h_x0[(size_t)p * o_stride + o] = rnd_mag(1.0f, 10.0f);
        if (mode == MODE_XH) h_o16.assign((size_t)rows_o * o_stride, SENT16);
    }

    /* device */
    char *d_in, *d_w, *d_o16 = NULL, *d_x = NULL;
    float *d_b;
    CK(cudaMalloc(&d_in, (h_in.size() + shift) * 2));
    CK(cudaMalloc(&d_w, h_w.size() * 2));
    CK(cudaMalloc(&d_b, h_b.size() * 4));
    CK(cudaMemcpy(d_in + shift * 2, h_in.data(), h_in.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w, h_w.data(), h_w.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_b, h_b.data(), h_b.size() * 4, cudaMemcpyHostToDevice));
    if (!h_o16.empty()) {
        CK(cudaMalloc(&d_o16, (h_o16.size() + shift) * 2));
        CK(cudaMemcpy(d_o16 + shift * 2, h_o16.data(), h_o16.size() * 2, cudaMemcpyHostToDevice));
    }
    if (!h_x0.empty()) {
        CK(cudaMalloc(&d_x, (h_x0.size() + shift) * 4));
        CK(cudaMemcpy(d_x + shift * 4, h_x0.data(), h_x0.size() * 4, cudaMemcpyHostToDevice));
    }

    elan_cuda_pw_args a;
    memset(&a, 0, sizeof a);
    a.in = d_in + shift * 2;
    a.w = d_w;
    a.b = d_b;
    a.out = mode == MODE_OUT ? d_o16 + shift * 2 : NULL;
    a.x = d_x ? (float *)(d_x + shift * 4) : NULL;
    a.xh = mode == MODE_XH || mode == MODE_HALF ? d_o16 + shift * 2 : NULL;
    a.in_stride = in_stride;
    a.out_stride = mode == MODE_OUT ? o_stride : 0;
    a.x_stride = mode == MODE_OUT ? 0 : o_stride;
    a.act = act;
    a.cin = cin, a.cout = cout;
    a.P = P;
    CK(elan_cuda_pw(&a, 0));
    CK(cudaDeviceSynchronize());

    std::vector<uint16_t> g_o16(h_o16.size());
    std::vector<float> g_x(h_x0.size());
    if (!h_o16.empty()) CK(cudaMemcpy(g_o16.data(), d_o16 + shift * 2, g_o16.size() * 2, cudaMemcpyDeviceToHost));
    if (d_x) CK(cudaMemcpy(g_x.data(), d_x + shift * 4, g_x.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaFree(d_in));
    CK(cudaFree(d_w));
    CK(cudaFree(d_b));
    if (d_o16) CK(cudaFree(d_o16));
    if (d_x) CK(cudaFree(d_x));

    /* compare */
    std::vector<double> wf((size_t)cout * cin);
    for (size_t i = 0; i < wf.size(); i++) wf[i] = from_bits(h_w[i], act);
    const tol_t ht = half_tol(act);
    long long bad = 0, checked = 0, beyond = 0; /* beyond: half stream values more than 1 ulp from T(ref) */
    double worst = 0.0; /* largest error / tolerance */
    int max_ulp = 0;
    char what[160];
    snprintf(what, sizeof what, "%s P=%lld %d->%d %s %s", act == ELAN_ACT_F16 ? "fp16" : "bf16", P, cin, cout,
             mode_name[mode], lay_name[lay]);
    auto report = [&](const char *kind, long long p, int o, double got, double ref, double tol) {
        if (bad < 5)
            fprintf(stderr, "  MISMATCH %s: %s p=%lld o=%d got %.6g ref %.6g (tol %.3g)\n", what, kind, p, o, got, ref,
                    tol);
        bad++;
    };
    std::vector<double> xin(cin);
    for (long long p = 0; p < rows_o; p++) {
        const bool live = p < P;
        const bool sample = live && (P <= 4096 || p < 1024 || p >= P - 1024 || p % 97 == 0);
        if (sample) {
            for (int c = 0; c < cin; c++) xin[c] = from_bits(h_in[(size_t)p * in_stride + c], act);
            for (int o = 0; o < cout; o++) {
                double r = h_b[o], S = fabs((double)h_b[o]);
                for (int c = 0; c < cin; c++) {
                    const double term = wf[(size_t)o * cin + c] * xin[c];
                    r += term, S += fabs(term);
                }
                const size_t i = (size_t)p * o_stride + o;
                checked++;
                if (mode == MODE_OUT) {
                    const double got = from_bits(g_o16[i], act), tol = ht.abs_ + ht.rel * fabs(r);
                    const double err = fabs(got - r);
                    worst = std::max(worst, err / tol);
                    if (!(err <= tol)) report("out", p, o, got, r, tol);
                } else if (mode == MODE_HALF) {
                    /* the old value is the T value the kernel read; the fp32 bound is the x mode's (see top) */
                    const double ref = (double)from_bits(h_o16[i], act) + r;
                    const double tol = 1e-4 + 1e-5 * S + 1e-6 * fabs(ref);
                    const double got = from_bits(g_o16[i], act);
                    const int og = ord16(g_o16[i]), ulps = abs(og - ord16(round_out(ref, act)));
                    const bool in_range =
                        ord16(round_out(ref - tol, act)) <= og && og <= ord16(round_out(ref + tol, act));
                    if (got == got) {
                        max_ulp = std::max(max_ulp, ulps);
                        if (ulps > 1) beyond++;
                    }
                    if (!(got == got && (ulps <= 1 || in_range))) report("xh half", p, o, got, ref, tol);
                } else {
                    const double ref = (double)h_x0[i] + r;
                    const double got = g_x[i], tol = 1e-4 + 1e-5 * S + 1e-6 * fabs(ref);
                    const double err = fabs(got - ref);
                    worst = std::max(worst, err / tol);
                    if (!(err <= tol)) report("x", p, o, got, ref, tol);
                    if (mode == MODE_XH) {
                        const double gh = from_bits(g_o16[i], act), th = ht.abs_ + ht.rel * fabs(ref);
                        worst = std::max(worst, fabs(gh - ref) / th);
                        if (!(fabs(gh - ref) <= th)) report("xh", p, o, gh, ref, th);
                    }
                }
            }
        }
        /* untouched: columns past cout of live rows, everything of the guard rows */
        for (int o = live ? cout : 0; o < o_stride; o++) {
            const size_t i = (size_t)p * o_stride + o;
            if (!h_o16.empty() && g_o16[i] != SENT16) report("untouched half", p, o, from_bits(g_o16[i], act), 0, 0);
            if (d_x && memcmp(&g_x[i], &h_x0[i], 4) != 0) report("untouched x", p, o, g_x[i], h_x0[i], 0);
        }
    }
    worst_all[act][mode] = std::max(worst_all[act][mode], worst);
    if (mode == MODE_HALF) {
        max_ulp_all[act] = std::max(max_ulp_all[act], max_ulp);
        beyond_all[act] += beyond;
    }
    if (bad) {
        fprintf(stderr, "FAIL %s: %lld bad values\n", what, bad);
        failures++;
    } else if (P >= 100000 && mode == MODE_HALF)
        printf("ok   %s (%lld values, max %d ulp from T(ref), %lld beyond 1 ulp)\n", what, checked, max_ulp, beyond);
    else if (P >= 100000)
        printf("ok   %s (%lld values, worst err/tol %.3f)\n", what, checked, worst);
    return bad;
}

/* ---- timing ---- */

static void time_case(int cin, int cout, int act, int mode) {
    const long long P = 522240;
    const int NBUF = 3, WARM = 5, RUNS = 60;
    struct bufs {
        void *in, *out, *xh;
        float *x;
    } b[NBUF];
    void *d_w;
    float *d_b;
    std::vector<uint16_t> hw((size_t)cout * cin);
    std::vector<float> hb(cout);
    for (auto &v : hw) v = to_bits(rnd_mag(0.1f, 1.0f), act);
    for (auto &v : hb) v = rnd_mag(1.0f, 10.0f);
    CK(cudaMalloc(&d_w, hw.size() * 2));
    CK(cudaMalloc(&d_b, hb.size() * 4));
    CK(cudaMemcpy(d_w, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_b, hb.data(), hb.size() * 4, cudaMemcpyHostToDevice));
    std::vector<uint16_t> hin((size_t)P * cin);
    for (auto &v : hin) v = rnd_act(act);
    std::vector<float> hx;
    if (mode == MODE_XH || mode == MODE_X) {
        hx.resize((size_t)P * cout);
        for (auto &v : hx) v = rnd_mag(1.0f, 10.0f);
    }
    /* the half stream is updated in place by every run: a buffer gains the same r (|r| <= ~610) on each of its ~22
       runs, which keeps its values far below fp16's 65504 */
    std::vector<uint16_t> hxh;
    if (mode == MODE_HALF) {
        hxh.resize((size_t)P * cout);
        for (auto &v : hxh) v = rnd_act(act);
    }
    for (int i = 0; i < NBUF; i++) {
        b[i].out = b[i].xh = NULL;
        b[i].x = NULL;
        CK(cudaMalloc(&b[i].in, hin.size() * 2));
        CK(cudaMemcpy(b[i].in, hin.data(), hin.size() * 2, cudaMemcpyHostToDevice));
        if (mode == MODE_OUT) {
            CK(cudaMalloc(&b[i].out, (size_t)P * cout * 2));
        } else if (mode == MODE_HALF) {
            CK(cudaMalloc(&b[i].xh, (size_t)P * cout * 2));
            CK(cudaMemcpy(b[i].xh, hxh.data(), hxh.size() * 2, cudaMemcpyHostToDevice));
        } else {
            CK(cudaMalloc(&b[i].x, (size_t)P * cout * 4));
            CK(cudaMemcpy(b[i].x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
            if (mode == MODE_XH) CK(cudaMalloc(&b[i].xh, (size_t)P * cout * 2));
        }
    }
    auto args = [&](int i) {
        elan_cuda_pw_args a;
        memset(&a, 0, sizeof a);
        a.in = b[i].in, a.w = d_w, a.b = d_b, a.out = b[i].out, a.x = b[i].x, a.xh = b[i].xh;
        a.in_stride = cin, a.out_stride = cout, a.x_stride = cout;
        a.act = act, a.cin = cin, a.cout = cout, a.P = P;
        return a;
    };
    std::vector<elan_cuda_pw_args> as;
    for (int i = 0; i < NBUF; i++) as.push_back(args(i));
    const std::vector<float> ms = sorted_times_ms(WARM, RUNS, [&](int r) { return elan_cuda_pw(&as[r % NBUF], 0); });
    const double med = ms[RUNS / 2];
    double bytes = (double)P * (cin * 2.0);
    if (mode == MODE_OUT) bytes += (double)P * cout * 2.0;
    else if (mode == MODE_HALF) bytes += (double)P * cout * 4.0; /* xh read and written */
    else bytes += (double)P * cout * (8.0 + (mode == MODE_XH ? 2.0 : 0.0));
    printf("time %s %d->%d %-4s P=%lld: median %.4f ms (min %.4f, max %.4f), %.0f GB/s effective\n",
           act == ELAN_ACT_F16 ? "fp16" : "bf16", cin, cout, mode_name[mode], P, med, ms[0], ms[RUNS - 1],
           bytes / (med * 1e-3) / 1e9);
    for (int i = 0; i < NBUF; i++) {
        CK(cudaFree(b[i].in));
        if (b[i].out) CK(cudaFree(b[i].out));
        if (b[i].x) CK(cudaFree(b[i].x));
        if (b[i].xh) CK(cudaFree(b[i].xh));
    }
    CK(cudaFree(d_w));
    CK(cudaFree(d_b));
}

int main(void) {
    /* supported shapes */
    const struct {
        int cin, cout, want;
    } sup[] = {{60, 120, 0}, {60, 60, 0},   {48, 96, 0},   {64, 128, 0},
               {1, 1, 0},    {65, 60, -1}, {60, 129, -1}, {0, 8, -1}};
    for (const auto &s : sup)
        if (elan_cuda_pw_supported(s.cin, s.cout) != s.want) {
            fprintf(stderr, "FAIL elan_cuda_pw_supported(%d, %d) = %d, want %d\n", s.cin, s.cout,
                    elan_cuda_pw_supported(s.cin, s.cout), s.want);
            failures++;
        }

    const int shapes[][2] = {{60, 120}, {60, 60}, {48, 96}, {64, 128}, {13, 37}, {20, 30}};
    const int acts[] = {ELAN_ACT_F16, ELAN_ACT_BF16};
    for (const auto &sh : shapes)
        for (int act : acts) CK(elan_cuda_pw_prepare(sh[0], sh[1], act));

    const long long Ps[] = {1, 17, 256, 1000, 522240};
    long long cases = 0;
    for (long long P : Ps)
        for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++)
            for (int act : acts)
                for (int mode = 0; mode < MODE_N; mode++)
                    for (int lay = 0; lay < LAY_N; lay++) {
                        if (P > 100000 && (si > 1 || lay > LAY_WIDE || mode == MODE_X)) continue;
                        run_case(P, shapes[si][0], shapes[si][1], act, mode, lay);
                        cases++;
                    }
    printf("%lld cases, %d failed\n", cases, failures);
    for (int act : acts) {
        for (int mode = 0; mode < MODE_N; mode++)
            if (mode != MODE_HALF)
                printf("  %s %-4s: worst error / tolerance %.3f\n", act == ELAN_ACT_F16 ? "fp16" : "bf16",
                       mode_name[mode], worst_all[act][mode]);
        printf("  %s half: max %d ulp from T(ref), %lld values beyond 1 ulp (inside the fp32 bound)\n",
               act == ELAN_ACT_F16 ? "fp16" : "bf16", max_ulp_all[act], beyond_all[act]);
    }
    if (failures) {
        printf("FAIL pointwise\n");
        return 1;
    }

    for (int act : acts) {
        time_case(60, 120, act, MODE_OUT); /* project_inp of a computing GMSA */
        time_case(60, 60, act, MODE_OUT);  /* project_inp of a reusing GMSA */
        time_case(60, 60, act, MODE_XH);   /* project_out into x, xh refreshed */
        time_case(60, 60, act, MODE_HALF); /* project_out into the half residual stream */
    }
    printf("PASS pointwise\n");
    return 0;
}
