// kernel: src/cuda/lfe_fused.cu
/* check_lfe_fused.cu — the fused LFE kernel (elan_cuda_lfe_fused) against a naive CPU reference in double.

   For each shape and both storage types (fp16, bf16): random x (fp32, |x| in [1, 8], random sign), xh_in =
   x rounded to T, random weights (rounded to T, then used as exactly those values by the reference), random
   biases and taps 0..8: random per channel, ELAN's grouping (5 groups of C/5 channels, one tap each), or random
   per aligned run (4 channels of tap0, 8 of tap1). The kernel takes its run path when the taps are constant over
   such runs (elan_cuda_lfe_fused_taps_ok; ELAN's grouping for C = 60, e = 120 qualifies), else its generic path;
   each case prints which one, and both must pass. The reference uses the same rounded inputs and weights, sums in double, and rounds h to T
   (saturating in fp16) like the kernel does. Each case runs the kernel twice on the same inputs: with the fp32 x
   (residual x, x updated in place) and with a.x = NULL (the half residual stream: residual xh_in, only xh_out
   written, into a second buffer). Checked:
     - x (all pixels, or for the 960x544 case the border rows/columns plus random pixels) against the
       reference, |err| <= atol + rtol*|ref| (see tolerance() for why these values);
     - xh_out == T(x) bit for bit on every element (fp16 saturating at +-65504, as elan_from_f);
     - x = NULL: xh_out on the same pixels against ref = xh_in + b1 + GEMM2 (the same GEMM2 reference as x's),
       inside [T(ref - tol), T(ref + tol)] with x's tol, or at most 1 ulp from T(ref) (see tolerance()), and
       every element of it written (none left NaN);
     - guard zones before and after x and both xh_out untouched.
   Then times the 960x544 case (C = 60, e = 120), both variants: warm-up, 100 runs with CUDA events, median. */
#define DEV_RNG_SEED 0x1234567887654321ull
#include "dev_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>


static double urand() { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); } /* [0, 1) */
static float uni(float lo, float hi) { return (float)(lo + (hi - lo) * urand()); }

/* host rounding to the storage type, identical to elan_from_f (fp16 saturates, NaN kept) */
struct half_t {
    static const char *name() { return "fp16"; }
    static int act() { return ELAN_ACT_F16; }
    static unsigned short round(float v) {
        if (v == v) v = std::min(std::max(v, -65504.0f), 65504.0f);
        const __half_raw r = __float2half_rn(v);
        return r.x;
    }
    static float val(unsigned short b) {
        __half_raw r;
        r.x = b;
        return __half2float(__half(r));
    }
};
struct bf16_t {
    static const char *name() { return "bf16"; }
    static int act() { return ELAN_ACT_BF16; }
    static unsigned short round(float v) {
        const __nv_bfloat16_raw r = __float2bfloat16_rn(v);
        return r.x;
    }
    static float val(unsigned short b) {
        __nv_bfloat16_raw r;
        r.x = b;
        return __bfloat162float(__nv_bfloat16(r));
    }
};

/* Tolerances. The GPU and the reference share every rounded input and weight, so the differences are
   (1) fp32 (GPU) vs double accumulation over <= 128 products: ~1e-6 relative, negligible;
   (2) h is rounded to T on both sides, but from values that differ by (1), so an h lying next to a rounding
       midpoint can land one ulp apart. With h up to ~20 an ulp is <= 2^-6 (fp16) / 2^-3 (bf16), times
       |w1| <= 1/sqrt(e) ~ 0.09: ~1.4e-3 (fp16) / 1.1e-2 (bf16) per flipped value, and flips are rare
       (probability ~ fp32 error / ulp: ~1e-3 per hidden value in fp16, less in bf16), so even several flips
       in one output stay well under atol;
   (3) x itself is fp32 (|x| <= ~20): its rounding is covered by rtol.
   A real indexing error (wrong tap, channel, pixel, missing zero fill) changes terms of size |w| * |h| ~
   0.05..1 in many channels at once, far above these bounds.
   The half stream (x = NULL) forms the same sum from the T value xh_in (exact in fp32 and in the reference), so
   its fp32 value lies within the same atol + rtol*|ref| of ref = xh_in + b1 + GEMM2, and xh_out is that value
   rounded once to T: it must lie between T(ref - tol) and T(ref + tol). Also accepted, as in check_pointwise, is
   1 ulp from T(ref) (the fp32 value and ref on two sides of a rounding midpoint); with these tolerances (at least
   ~1.3 ulp of T either side: bf16's rtol against its 2^-8 relative ulp) the range already covers that. Values
   more than 1 ulp from T(ref) (mostly the flips of (2)) are counted and printed. */
static void tolerance(int act, double *atol, double *rtol) {
    if (act == ELAN_ACT_F16) *atol = 2e-2, *rtol = 2e-3;
    else *atol = 1e-1, *rtol = 1e-2;
}

/* 16-bit float bits (fp16 or bf16) as integers ordered like their values, adjacent values 1 apart (+0 = -0 = 0):
   the difference of two is their distance in ulps. */
static int ord16(unsigned short u) { return (u & 0x8000) ? -(int)(u & 0x7fff) : (int)u; }

struct lfe_case {
    int n, Hp, Wp, C, e;
    int elan_taps; /* 1: ELAN's 5 groups of one tap each; 0: random tap per channel; 2: random per aligned run */
    int full;      /* 1: reference on every pixel; 0: borders + random sample */
    int timed;
};

#define GUARD 64
static const float GUARD_F = -12345.5f;
static const unsigned short GUARD_H = 0x7bcd;

/* ELAN's shift: groups of in/5 (last takes the rest): taps 5 (1,2), 3 (1,0), 7 (2,1), 1 (0,1), 4 (identity) */
/* mode 2: one random tap per aligned run of `run` channels */
static void make_taps(std::vector<unsigned char> &tap, int cin, int elan, int run) {
    static const int grp[5] = {5, 3, 7, 1, 4};
    tap.resize(cin);
    const int gsz = cin / 5;
    for (int c = 0; c < cin; c++)
        tap[c] = elan == 1   ? (unsigned char)grp[std::min(c / gsz, 4)]
                 : elan == 2 ? (c % run ? tap[c - c % run] : (unsigned char)(rng_next() % 9))
                             : (unsigned char)(rng_next() % 9);
}

static int g_wg = -1; /* elan_cuda_lfe_args.wg of every launch: 1 / 0 forced, -1 as the launcher picks */

/* ms_out (timed cases): median ms of the fp32-x variant, then of the half stream (x = NULL) */
template <typename TT>
static int run_case(const lfe_case &k, double *ms_out) {
    const int n = k.n, Hp = k.Hp, Wp = k.Wp, C = k.C, E = k.e;
    const long long P = (long long)n * Hp * Wp;
    std::vector<unsigned char> tap0, tap1;
    make_taps(tap0, C, k.elan_taps, 4);
    make_taps(tap1, E, k.elan_taps, 8);
    const int runs = elan_cuda_lfe_fused_taps_ok(tap0.data(), C, tap1.data(), E);
    printf("--- %s n=%d %dx%d C=%d e=%d taps=%s ref=%s path=%s\n", TT::name(), n, Hp, Wp, C, E,
           k.elan_taps == 1 ? "elan" : k.elan_taps == 2 ? "runs" : "random", k.full ? "full" : "sampled",
           runs ? "run" : "generic");
    fflush(stdout);

    /* inputs */
    std::vector<float> x(P * C);
    std::vector<unsigned short> xh(P * C);
    for (long long i = 0; i < P * C; i++) {
        const float m = uni(1.0f, 8.0f);
        x[i] = (rng_next() & 1) ? m : -m;
        xh[i] = TT::round(x[i]);
    }
    std::vector<unsigned short> w0(E * C), w1(C * E);
    std::vector<float> b0(E), b1(C);
    const float s0 = 1.0f / sqrtf((float)C), s1 = 1.0f / sqrtf((float)E);
    for (auto &w : w0) w = TT::round(uni(-s0, s0));
    for (auto &w : w1) w = TT::round(uni(-s1, s1));
    for (auto &b : b0) b = uni(-1.0f, 1.0f);
    for (auto &b : b1) b = uni(-1.0f, 1.0f);

    /* device */
    float *d_xg, *d_b0, *d_b1;
    unsigned short *d_xh, *d_xog, *d_xo2g, *d_w0, *d_w1;
    unsigned char *d_t0, *d_t1;
    CK(cudaMalloc(&d_xg, (P * C + 2 * GUARD) * sizeof(float)));
    CK(cudaMalloc(&d_xog, (P * C + 2 * GUARD) * sizeof(unsigned short)));
    CK(cudaMalloc(&d_xo2g, (P * C + 2 * GUARD) * sizeof(unsigned short))); /* xh_out of the x = NULL run */
    CK(cudaMalloc(&d_xh, P * C * sizeof(unsigned short)));
    CK(cudaMalloc(&d_w0, E * C * 2));
    CK(cudaMalloc(&d_w1, C * E * 2));
    CK(cudaMalloc(&d_b0, E * 4));
    CK(cudaMalloc(&d_b1, C * 4));
    CK(cudaMalloc(&d_t0, C));
    CK(cudaMalloc(&d_t1, E));
    float *d_x = d_xg + GUARD;
    unsigned short *d_xo = d_xog + GUARD, *d_xo2 = d_xo2g + GUARD;
    {
        std::vector<float> gf(GUARD, GUARD_F);
        std::vector<unsigned short> gh(GUARD, GUARD_H);
        CK(cudaMemcpy(d_xg, gf.data(), GUARD * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_x + P * C, gf.data(), GUARD * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_xog, gh.data(), GUARD * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_xo + P * C, gh.data(), GUARD * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_xo2g, gh.data(), GUARD * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(d_xo2 + P * C, gh.data(), GUARD * 2, cudaMemcpyHostToDevice));
    }
    CK(cudaMemcpy(d_x, x.data(), P * C * 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(d_xo, 0xff, P * C * 2)); /* NaN pattern: every element must be written */
    CK(cudaMemset(d_xo2, 0xff, P * C * 2));
    CK(cudaMemcpy(d_xh, xh.data(), P * C * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w0, w0.data(), E * C * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_w1, w1.data(), C * E * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_b0, b0.data(), E * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_b1, b1.data(), C * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_t0, tap0.data(), C, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_t1, tap1.data(), E, cudaMemcpyHostToDevice));

    elan_cuda_lfe_args a;
    memset(&a, 0, sizeof a);
    a.wg = g_wg;
    a.xh_in = d_xh, a.x = d_x, a.xh_out = d_xo;
    a.w0 = d_w0, a.b0 = d_b0, a.tap0 = d_t0, a.w1 = d_w1, a.b1 = d_b1, a.tap1 = d_t1;
    a.act = TT::act(), a.C = C, a.e = E, a.n = n, a.Hp = Hp, a.Wp = Wp;
    CK(elan_cuda_lfe_fused_prepare(C, E, TT::act()));
    CK(elan_cuda_lfe_fused(&a, 0));
    CK(cudaDeviceSynchronize());
    /* the half residual stream on the same inputs (xh_in is not written by either run) */
    elan_cuda_lfe_args a2 = a;
    a2.x = NULL, a2.xh_out = d_xo2;
    a2.rev = 1; /* and with the tiles swept from the last one back (elan_cuda_lfe_args.rev): the same results */
    CK(elan_cuda_lfe_fused(&a2, 0));
    CK(cudaDeviceSynchronize());

    std::vector<float> xg(P * C + 2 * GUARD);
    std::vector<unsigned short> xog(P * C + 2 * GUARD), xo2g(P * C + 2 * GUARD);
    CK(cudaMemcpy(xg.data(), d_xg, xg.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(xog.data(), d_xog, xog.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(xo2g.data(), d_xo2g, xo2g.size() * 2, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int i = 0; i < GUARD; i++)
        if (xg[i] != GUARD_F || xg[GUARD + P * C + i] != GUARD_F || xog[i] != GUARD_H ||
            xog[GUARD + P * C + i] != GUARD_H || xo2g[i] != GUARD_H || xo2g[GUARD + P * C + i] != GUARD_H) {
            if (bad < 1) printf("FAIL: guard zone overwritten (offset %d)\n", i);
            bad++;
        }
    const float *xr = xg.data() + GUARD;
    const unsigned short *xo = xog.data() + GUARD, *xo2 = xo2g.data() + GUARD;

    /* xh_out == T(x), every element */
    long long bad_h = 0;
    for (long long i = 0; i < P * C; i++)
        if (xo[i] != TT::round(xr[i])) {
            if (bad_h < 5)
                printf("FAIL: xh_out[%lld] = 0x%04x, T(x) = 0x%04x (x = %g)\n", i, xo[i], TT::round(xr[i]), xr[i]);
            bad_h++;
        }
    if (bad_h) printf("FAIL: %lld xh_out elements differ from T(x)\n", bad_h);

    /* x = NULL: every element written (no NaN left of the 0xff fill; the sampled reference below does not see
       every pixel of the large case) */
    long long bad_w = 0;
    for (long long i = 0; i < P * C; i++)
        if (!(TT::val(xo2[i]) == TT::val(xo2[i]))) {
            if (bad_w < 5) printf("FAIL (x = NULL): xh_out[%lld] = 0x%04x not written\n", i, xo2[i]);
            bad_w++;
        }
    if (bad_w) printf("FAIL (x = NULL): %lld xh_out elements not written\n", bad_w);

    /* reference */
    std::vector<double> w0d(E * C), w1d(C * E), xhd(P * C);
    for (int i = 0; i < E * C; i++) w0d[i] = TT::val(w0[i]);
    for (int i = 0; i < C * E; i++) w1d[i] = TT::val(w1[i]);
    for (long long i = 0; i < P * C; i++) xhd[i] = TT::val(xh[i]);
    auto hidden = [&](int img, int y, int xx, double *h) { /* rounded relu output at one pixel (0 outside) */
        if (y < 0 || y >= Hp || xx < 0 || xx >= Wp) {
            for (int j = 0; j < E; j++) h[j] = 0.0;
            return;
        }
        std::vector<double> s(C);
        for (int c = 0; c < C; c++) {
            const int yy = y + tap0[c] / 3 - 1, xs = xx + tap0[c] % 3 - 1;
            s[c] = (yy < 0 || yy >= Hp || xs < 0 || xs >= Wp) ? 0.0 : xhd[(((long long)img * Hp + yy) * Wp + xs) * C + c];
        }
        for (int j = 0; j < E; j++) {
            double acc = b0[j];
            for (int c = 0; c < C; c++) acc += w0d[(long long)j * C + c] * s[c];
            h[j] = TT::val(TT::round((float)std::max(acc, 0.0)));
        }
    };
    std::vector<double> hall;
    if (k.full) {
        hall.resize(P * E);
        for (int img = 0; img < n; img++)
            for (int y = 0; y < Hp; y++)
                for (int xx = 0; xx < Wp; xx++) hidden(img, y, xx, &hall[(((long long)img * Hp + y) * Wp + xx) * E]);
    }
    std::vector<int> pix; /* pixels to check, as (img*Hp + y)*Wp + x */
    if (k.full) {
        for (long long p = 0; p < P; p++) pix.push_back((int)p);
    } else {
        for (int img = 0; img < n; img++)
            for (int y = 0; y < Hp; y++)
                for (int xx = 0; xx < Wp; xx++)
                    if (y < 3 || y >= Hp - 3 || xx < 3 || xx >= Wp - 3 || (y % 8 == 7 && xx % 16 == 15) ||
                        (y % 8 == 0 && xx % 16 == 0))
                        pix.push_back((img * Hp + y) * Wp + xx);
        for (int i = 0; i < 12000; i++) pix.push_back((int)(rng_next() % (unsigned long long)P));
    }
    double atol, rtol, max_abs = 0.0, max_rel = 0.0;
    tolerance(TT::act(), &atol, &rtol);
    long long bad_x = 0;
    /* half stream: largest |err|, largest distance from T(ref) in ulps, values more than 1 ulp away, failures */
    double max_abs_h = 0.0;
    int max_ulp_h = 0;
    long long beyond_h = 0, bad_h2 = 0;
    std::vector<double> nb(9 * (size_t)E), zero(E, 0.0);
    for (int p : pix) {
        const int img = p / (Hp * Wp), y = p / Wp % Hp, xx = p % Wp;
        const double *hat[9]; /* hidden vector of the neighbour at each tap (zeros outside the image) */
        for (int tp = 0; tp < 9; tp++) {
            const int yy = y + tp / 3 - 1, xs = xx + tp % 3 - 1;
            if (!k.full) {
                hidden(img, yy, xs, &nb[(size_t)tp * E]);
                hat[tp] = &nb[(size_t)tp * E];
            } else if (yy < 0 || yy >= Hp || xs < 0 || xs >= Wp) {
                hat[tp] = zero.data();
            } else {
                hat[tp] = &hall[(((long long)img * Hp + yy) * Wp + xs) * E];
            }
        }
        for (int c = 0; c < C; c++) {
            double g2 = b1[c]; /* b1 + GEMM2, shared by both variants */
            for (int j = 0; j < E; j++) g2 += w1d[(long long)c * E + j] * hat[tap1[j]][j];
            const double acc = (double)x[(long long)p * C + c] + g2;
            const double got = xr[(long long)p * C + c], err = fabs(got - acc);
            max_abs = std::max(max_abs, err);
            max_rel = std::max(max_rel, err / std::max(fabs(acc), 1.0)); /* relative, floor 1 */
            if (!(err <= atol + rtol * fabs(acc))) {
                if (bad_x < 8) printf("FAIL: img %d y %d x %d c %d: got %.6f, ref %.6f\n", img, y, xx, c, got, acc);
                bad_x++;
            }

            /* x = NULL: the residual is the T value xh_in itself */
            const double ref = xhd[(long long)p * C + c] + g2, tol = atol + rtol * fabs(ref);
            const unsigned short gb = xo2[(long long)p * C + c];
            const double gh = TT::val(gb);
            const int og = ord16(gb), ulps = abs(og - ord16(TT::round((float)ref)));
            const bool in_range =
                ord16(TT::round((float)(ref - tol))) <= og && og <= ord16(TT::round((float)(ref + tol)));
            if (gh == gh) {
                max_abs_h = std::max(max_abs_h, fabs(gh - ref));
                max_ulp_h = std::max(max_ulp_h, ulps);
                if (ulps > 1) beyond_h++;
            }
            if (!(gh == gh && (ulps <= 1 || in_range))) {
                if (bad_h2 < 8)
                    printf("FAIL (x = NULL): img %d y %d x %d c %d: xh_out 0x%04x = %.6f, ref %.6f (T(ref) 0x%04x)\n",
                           img, y, xx, c, gb, gh, ref, TT::round((float)ref));
                bad_h2++;
            }
        }
    }
    printf("x: %zu pixels checked, max |err| %.3g, max rel err %.3g (tol %.0e + %.0e*|ref|), %lld over\n", pix.size(),
           max_abs, max_rel, atol, rtol, bad_x);
    printf("xh_out (x = NULL): %zu pixels checked, max |err| %.3g, max %d ulp from T(ref), %lld beyond 1 ulp, "
           "%lld outside T(ref -+ tol)\n",
           pix.size(), max_abs_h, max_ulp_h, beyond_h, bad_h2);
    bad += (int)std::min(bad_x + bad_h + bad_w + bad_h2, 1000000LL);

    /* median time of one variant; bytes are what it must move (halo re-reads not counted) */
    auto time_it = [&](const elan_cuda_lfe_args &ta, const char *label, double bytes) {
        const int warm = 5, runs = 100;
        const std::vector<float> t = sorted_times_ms(warm, runs, [&](int) { return elan_cuda_lfe_fused(&ta, 0); });
        const double med = t[runs / 2];
        printf("%s: median %.4f ms (min %.4f, max %.4f) over %d runs, %.0f GB/s effective\n", label, med, t[0],
               t[runs - 1], runs, bytes / (med * 1e-3) / 1e9);
        return med;
    };
    if (k.timed) {
        /* fp32 x: xh_in read, x read + written, xh_out written; x = NULL: xh_in read, xh_out written */
        const double t32 = time_it(a, "time", (double)P * C * (2 + 4 + 4 + 2));
        const double th = time_it(a2, "time (x = NULL)", (double)P * C * (2 + 2));
        if (ms_out) ms_out[0] = t32, ms_out[1] = th;
    }

    cudaFree(d_xg), cudaFree(d_xog), cudaFree(d_xo2g), cudaFree(d_xh), cudaFree(d_w0), cudaFree(d_w1);
    cudaFree(d_b0), cudaFree(d_b1), cudaFree(d_t0), cudaFree(d_t1);
    printf("%s\n", bad ? "FAIL" : "ok");
    return bad ? 1 : 0;
}

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);

    int fails = 0;
    /* supported shapes */
    const int sup[][3] = {{60, 120, 0}, {48, 96, 0}, {32, 64, 0}, {64, 128, 0}, {180, 360, -1}, {60, 100, -1}, {62, 124, -1}};
    for (const auto &s : sup)
        if (elan_cuda_lfe_fused_supported(s[0], s[1]) != s[2]) {
            printf("FAIL: elan_cuda_lfe_fused_supported(%d, %d) != %d\n", s[0], s[1], s[2]);
            fails++;
        }

    {
        std::vector<unsigned char> t0, t1;
        make_taps(t0, 60, 1, 4), make_taps(t1, 120, 1, 8);
        if (elan_cuda_lfe_fused_taps_ok(t0.data(), 60, t1.data(), 120) != 1) {
            printf("FAIL: ELAN taps for C=60, e=120 should take the run path\n");
            fails++;
        }
        make_taps(t0, 32, 1, 4), make_taps(t1, 64, 1, 8); /* groups of 6 and 12: not run-aligned */
        if (elan_cuda_lfe_fused_taps_ok(t0.data(), 32, t1.data(), 64) != 0) {
            printf("FAIL: ELAN taps for C=32, e=64 are not run-aligned\n");
            fails++;
        }
    }

    const lfe_case cases[] = {
        {1, 16, 16, 60, 120, 0, 1, 0},  {2, 32, 48, 60, 120, 0, 1, 0}, {1, 64, 160, 60, 120, 0, 1, 0},
        {1, 64, 160, 60, 120, 1, 1, 0}, {2, 32, 32, 48, 96, 0, 1, 0},  {1, 48, 64, 64, 128, 0, 1, 0},
        {3, 16, 32, 32, 64, 0, 1, 0},   {1, 64, 160, 60, 120, 2, 1, 0}, {2, 32, 48, 60, 120, 2, 1, 0},
        {1, 16, 16, 60, 120, 1, 1, 0},  {2, 32, 32, 48, 96, 2, 1, 0},  {1, 48, 64, 64, 128, 2, 1, 0},
        {1, 48, 64, 64, 128, 1, 1, 0},  {3, 16, 32, 32, 64, 2, 1, 0},  {1, 544, 960, 60, 120, 1, 0, 1},
    };
    double ms[2][2] = {{0, 0}, {0, 0}}; /* [fp16, bf16][fp32 x, x = NULL] */
    const bool timed_only = getenv("CHECK_TIMED_ONLY") != NULL; /* profiling one timed launch (Nsight Compute) */
    /* every case with the wgmma path forced on (sm_90a builds; elsewhere the same kernel), then forced off, then
       as the launcher picks it by tiles per CTA (the timed run) */
    for (int m = 1; m >= -1; m--) {
        g_wg = m;
        printf("=== args.wg = %d\n", m);
        for (const auto &k : cases) {
            const bool want = m >= 0 ? !timed_only && !k.timed : k.timed != 0;
            if (!want) continue;
            fails += run_case<half_t>(k, k.timed && m < 0 ? ms[0] : NULL);
            fails += run_case<bf16_t>(k, k.timed && m < 0 ? ms[1] : NULL);
        }
    }
    printf("960x544 C=60 e=120: fp16 %.4f ms, bf16 %.4f ms\n", ms[0][0], ms[1][0]);
    printf("960x544 C=60 e=120 x = NULL: fp16 %.4f ms, bf16 %.4f ms\n", ms[0][1], ms[1][1]);
    printf("%s: %d failing case(s)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
