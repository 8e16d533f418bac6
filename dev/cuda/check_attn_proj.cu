// kernel: src/cuda/gmsa.cu src/cuda/pointwise.cu
/* check_attn_proj.cu — elan_cuda_attn3 with GMSA's project_inp fused (x != NULL) against a CPU reference and
   against the unfused path (elan_cuda_pw writes project_inp's output g, elan_cuda_attn3 reads it), then timed;
   and the whole GMSA (elan_cuda_gmsa: one kernel in unshifted blocks, two in shifted ones) against a CPU reference
   and against elan_cuda_attn3 + elan_cuda_pw (project_out and the residual), then timed beside them.

   Shapes as in ELAN-light and cuda_backend.cu: C = 60 channels, three groups of k = 20 with windows 4, 8, 16.
   A computing GMSA takes group gi's q rows gi*2k.. and v rows gi*2k+k.. of pin_w ([2C][C]) and leaves q (fp16) in
   a C-wide buffer at column gi*k; the reusing GMSA reads that q and takes v rows gi*k.. of its own [C][C] weight.
   x ~ 2 U(-1, 1) and q rows ~ 0.5 U(-1, 1): q has a std of ~2.6 per channel, so q.q over 20 channels reaches the
   hundreds as in the trained network and a wrong score shows as a wrong softmax at once. v rows ~ 0.25 U(-1, 1)
   keep v at check_attn.cu's scale, whose tolerance (P rounded to fp16, y rounded to the storage type) is reused.

   The kernel rounds its fp32 tensor-core sums of q and v to fp16; the reference rounds exact (double) sums, so a
   value may land 1 fp16 ulp away (fp32 summation order; more ulps, within 1e-4, near cancellation). q_out is checked
   to within that (counts printed).
   A 1-ulp q moves a score of a few hundred by ~0.01, more than the tolerance of y can absorb, so the attention
   reference starts from the q the kernel actually used (q_out); v is taken from the reference, where a 1-ulp
   difference moves y by well under the tolerance. For the same reason fused and unfused y are held to the
   tolerance only in windows whose q operands are the same bits in both paths (there the attention does the same
   arithmetic); the other windows are reported. In bf16, g is stored in bf16 before the unfused attention rounds
   it to fp16, so nearly every window differs there: the unfused path is instead checked against a reference
   built from the g it read. */
#include "dev_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>


#define K 20
#define C 60
#define GUARD 4096 /* poisoned bytes before and after y and q_out */
#define POISON 0x5a
static const int WS[3] = {4, 8, 16};

/* fp16 bits as an integer monotonic in the value: ulp distance = difference */
static int h_ord(__half h) {
    unsigned short u;
    memcpy(&u, &h, 2);
    return u & 0x8000 ? -(int)(u & 0x7fff) : (int)(u & 0x7fff);
}
static int h_nan(__half h) { return __half2float(h) != __half2float(h); }


/* A device buffer of `bytes` between two guard zones of POISON (p: the usable part). */
typedef struct {
    unsigned char *base, *p;
    size_t bytes;
} gbuf;
static gbuf gbuf_new(size_t bytes) {
    gbuf b;
    b.bytes = bytes;
    CK(cudaMalloc(&b.base, bytes + 2 * GUARD));
    CK(cudaMemset(b.base, POISON, bytes + 2 * GUARD));
    b.p = b.base + GUARD;
    return b;
}
static int guards_ok(const gbuf &b, const char *name) {
    std::vector<unsigned char> h(GUARD);
    for (int side = 0; side < 2; side++) {
        CK(cudaMemcpy(h.data(), side ? b.p + b.bytes : b.base, GUARD, cudaMemcpyDeviceToHost));
        for (int i = 0; i < GUARD; i++)
            if (h[i] != POISON) {
                printf("  guard %s %s clobbered at byte %d\n", side ? "after" : "before", name, i);
                return 0;
            }
    }
    return 1;
}

/* Arguments of the three groups as cuda_backend.cu builds them. Fused computing (computes = 1): x, wq/bq = rows
   gi*2k.. of w/b, wv/bv = the next k rows, q_out = q + gi*k; fused reusing (computes = 0): q read at q + gi*k,
   wv/bv = rows gi*k.. of w/b. Unfused (x == NULL): q and v from g at stride 2C (pw added the bias). qpl / ypl:
   q / y in planes of P x k per group (group gi at gi*k*P, stride k), as cuda_backend.cu lays out q and the
   shifted whole GMSA's y; else interleaved (group gi at column gi*k of a P x C array). */
static void make_args(elan_cuda_attn_args a[3], int act, size_t esz, const void *x, const void *w, const float *b,
                      __half *q, int computes, const void *g, void *y, int n, int Hp, int Wp, int shifted,
                      int qpl = 0, int ypl = 0, float *m = NULL) {
    const size_t P = (size_t)n * Hp * Wp;
    memset(a, 0, 3 * sizeof *a);
    for (int gi = 0; gi < 3; gi++) {
        a[gi].act = act, a[gi].k = K, a[gi].ws = WS[gi], a[gi].shift = shifted ? WS[gi] / 2 : 0;
        a[gi].n = n, a[gi].Hp = Hp, a[gi].Wp = Wp;
        a[gi].y = (char *)y + (ypl ? gi * K * P : (size_t)gi * K) * esz, a[gi].y_stride = ypl ? K : C;
        if (!x) {
            a[gi].q = (const char *)g + (size_t)gi * 2 * K * esz, a[gi].q_stride = 2 * C;
            a[gi].v = (const char *)g + (size_t)(gi * 2 * K + K) * esz, a[gi].v_stride = 2 * C;
            continue;
        }
        a[gi].x = x, a[gi].x_stride = C, a[gi].cin = C;
        const int r0 = computes ? gi * 2 * K : gi * K;
        if (computes) {
            a[gi].wq = (const char *)w + (size_t)r0 * C * esz, a[gi].bq = b + r0;
            a[gi].q_out = q + (qpl ? gi * K * P : (size_t)gi * K), a[gi].q_out_stride = qpl ? K : C;
            a[gi].m_out = m ? m + gi * P : NULL; /* row maxima for the reusing run (m_in) */
            a[gi].wv = (const char *)w + (size_t)(r0 + K) * C * esz, a[gi].bv = b + r0 + K;
        } else {
            a[gi].q = q + (qpl ? gi * K * P : (size_t)gi * K), a[gi].q_stride = qpl ? K : C;
            a[gi].m_in = m ? m + gi * P : NULL;
            a[gi].wv = (const char *)w + (size_t)r0 * C * esz, a[gi].bv = b + r0;
        }
    }
}

/* fp16(x . w[row]^T + b[row]) from exact (double) sums for every pixel, at column gi*k + c of a P x C result,
   row = gi*gs + off + c. */
template <typename T>
static std::vector<float> project(const std::vector<T> &x, const std::vector<T> &w, const std::vector<float> &b,
                                  int gs, int off, long long P) {
    std::vector<float> r((size_t)P * C);
    for (long long p = 0; p < P; p++)
        for (int gi = 0; gi < 3; gi++)
            for (int c = 0; c < K; c++) {
                const int row = gi * gs + off + c;
                double d = b[row];
                for (int j = 0; j < C; j++) d += (double)h2f(x[(size_t)p * C + j]) * h2f(w[(size_t)row * C + j]);
                r[(size_t)p * C + gi * K + c] = __half2float(__double2half(d));
            }
    return r;
}

/* Pixel of each token of window win of a ws window grid rolled by sh (token (ty, tx) of window (wy, wx) is pixel
   ((wy*ws + ty + sh) mod Hp, (wx*ws + tx + sh) mod Wp)); returns the number of windows. */
static long long win_pixels(long long win, int ws, int sh, int n, int Hp, int Wp, long long *pix) {
    const int nwx = Wp / ws, nwy = Hp / ws, wx = (int)(win % nwx), wy = (int)(win / nwx % nwy);
    const long long img = win / nwx / nwy;
    for (int i = 0; i < ws * ws; i++)
        pix[i] = (img * Hp + (wy * ws + i / ws + sh) % Hp) * Wp + (wx * ws + i % ws + sh) % Wp;
    return (long long)n * nwy * nwx;
}

static double tol_of(int act, double ref) {
    return act == ELAN_ACT_BF16 ? 3e-2 + 1e-2 * fabs(ref) : 8e-3 + 3e-3 * fabs(ref);
}

/* softmax_rows(q q^T) v in double for every pixel and group (column gi*k + c), from the operands q, v (P x C). */
static std::vector<double> ref_y(const std::vector<float> &q, const std::vector<float> &v, int n, int Hp, int Wp,
                                 int shifted) {
    std::vector<double> yr((size_t)n * Hp * Wp * C);
    long long pix[256];
    std::vector<double> s(256);
    for (int gi = 0; gi < 3; gi++) {
        const int ws = WS[gi], T2 = ws * ws, sh = shifted ? ws / 2 : 0;
        for (long long win = 0, nwin = 1; win < nwin; win++) {
            nwin = win_pixels(win, ws, sh, n, Hp, Wp, pix);
            for (int i = 0; i < T2; i++) {
                double mx = -1e300, l = 0;
                for (int j = 0; j < T2; j++) {
                    double d = 0;
                    for (int c = 0; c < K; c++) d += (double)q[pix[i] * C + gi * K + c] * q[pix[j] * C + gi * K + c];
                    mx = std::max(mx, s[j] = d);
                }
                for (int j = 0; j < T2; j++) l += (s[j] = exp(s[j] - mx));
                for (int c = 0; c < K; c++) {
                    double acc = 0;
                    for (int j = 0; j < T2; j++) acc += s[j] * v[pix[j] * C + gi * K + c];
                    yr[pix[i] * C + gi * K + c] = acc / l;
                }
            }
        }
    }
    return yr;
}

/* y (all three groups) against ref_y. Returns the number of elements outside the tolerance. */
template <typename T>
static long long check_y(const std::vector<T> &y, const std::vector<float> &q, const std::vector<float> &v, int n,
                         int Hp, int Wp, int shifted, int act, const char *what, double *maxerr, double *maxref) {
    const std::vector<double> yr = ref_y(q, v, n, Hp, Wp, shifted);
    long long bad = 0;
    *maxerr = *maxref = 0.0;
    for (size_t e = 0; e < yr.size(); e++) {
        const double want = yr[e], got = h2f(y[e]), err = fabs(got - want);
        *maxerr = std::max(*maxerr, err), *maxref = std::max(*maxref, fabs(want));
        if (!(err <= tol_of(act, want)) && bad++ < 5)
            printf("  %s: pixel %zu group %zu ch %zu: got %g want %g\n", what, e / C, e % C / K, e % K, got, want);
    }
    return bad;
}

template <typename T>
static void fill(std::vector<T> &w1, std::vector<T> &w2, std::vector<float> &b1, std::vector<float> &b2) {
    for (size_t i = 0; i < w1.size(); i++) w1[i] = f2h<T>((i / C) % (2 * K) < K ? 0.5f * frand() : 0.25f * frand());
    for (auto &v : w2) v = f2h<T>(0.25f * frand());
    for (auto &v : b1) v = 0.5f * frand();
    for (auto &v : b2) v = 0.5f * frand();
}

template <typename T>
static T *upload(const std::vector<T> &h) {
    T *d;
    CK(cudaMalloc(&d, h.size() * sizeof(T)));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

/* One shape: fused computing, fused reusing (from the computing run's q_out), unfused. Returns failures. */
template <typename T>
static int run_case(int n, int Hp, int Wp, int shifted, int act) {
    const long long P = (long long)n * Hp * Wp;
    const size_t esz = sizeof(T);
    char tag[64];
    snprintf(tag, sizeof tag, "%s n %d %3dx%-3d %-7s", act == ELAN_ACT_F16 ? "fp16" : "bf16", n, Wp, Hp,
             shifted ? "shifted" : "plain");
    std::vector<T> x((size_t)P * C), w1(2 * C * C), w2(C * C), y((size_t)P * C), yf((size_t)P * C), g((size_t)P * 2 * C);
    std::vector<float> b1(2 * C), b2(C);
    std::vector<__half> qo((size_t)P * C), qo2((size_t)P * C);
    for (auto &v : x) v = f2h<T>(2.0f * frand());
    fill(w1, w2, b1, b2);
    T *dx = upload(x), *dw1 = upload(w1), *dw2 = upload(w2), *dg;
    float *db1 = upload(b1), *db2 = upload(b2);
    CK(cudaMalloc(&dg, g.size() * esz));
    gbuf gy = gbuf_new(y.size() * esz), gq = gbuf_new(qo.size() * 2), gm = gbuf_new((size_t)P * 3 * sizeof(float));
    elan_cuda_attn_args ac[3], ar[3], au[3];
    /* the computing run leaves its row maxima in gm, the reusing run takes them (m_in) */
    make_args(ac, act, esz, dx, dw1, db1, (__half *)gq.p, 1, NULL, gy.p, n, Hp, Wp, shifted, 0, 0, (float *)gm.p);
    make_args(ar, act, esz, dx, dw2, db2, (__half *)gq.p, 0, NULL, gy.p, n, Hp, Wp, shifted, 0, 0, (float *)gm.p);
    make_args(au, act, esz, NULL, NULL, NULL, NULL, 0, dg, gy.p, n, Hp, Wp, shifted);
    int fails = 0;
    double me, mr;

    /* fused computing; y and q_out start as NaN (0xff bytes in both types): an unwritten element fails */
    CK(cudaMemset(gy.p, 0xff, gy.bytes));
    CK(cudaMemset(gq.p, 0xff, gq.bytes));
    CK(elan_cuda_attn3(ac, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y.data(), gy.p, gy.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(qo.data(), gq.p, gq.bytes, cudaMemcpyDeviceToHost));
    yf = y;
    const std::vector<float> qref = project(x, w1, b1, 2 * K, 0, P), vc = project(x, w1, b1, 2 * K, K, P);
    long long exact = 0, ulp1 = 0, worse = 0;
    std::vector<float> qk((size_t)P * C);
    for (size_t i = 0; i < qo.size(); i++) {
        const int d = abs(h_ord(qo[i]) - h_ord(__float2half_rn(qref[i])));
        /* past 1 ulp only near cancellation: fp32 sums of ~60 products of size ~1 are off by ~1e-5, which is
           several fp16 ulps for |q| < 0.01 */
        if (h_nan(qo[i]) || (d > 1 && fabs(__half2float(qo[i]) - qref[i]) > 1e-4)) {
            if (worse++ < 5) printf("  q_out %zu: got %g want %g\n", i, __half2float(qo[i]), qref[i]);
        } else
            (d ? ulp1 : exact)++;
        qk[i] = __half2float(qo[i]);
    }
    long long bad = check_y(y, qk, vc, n, Hp, Wp, shifted, act, "computing", &me, &mr);
    int ok = !bad && !worse && guards_ok(gy, "y") && guards_ok(gq, "q_out") && guards_ok(gm, "m_out");
    printf("%s %s computing: q_out %lld exact, %lld 1-ulp, %lld worse; y max|err| %.3g (max|ref| %.3g), %lld bad\n",
           ok ? "PASS" : "FAIL", tag, exact, ulp1, worse, me, mr, bad);
    fails += !ok;

    /* fused reusing: q from the computing run's q_out, which it must leave alone */
    CK(cudaMemset(gy.p, 0xff, gy.bytes));
    CK(elan_cuda_attn3(ar, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y.data(), gy.p, gy.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(qo2.data(), gq.p, gq.bytes, cudaMemcpyDeviceToHost));
    const int q_kept = memcmp(qo.data(), qo2.data(), gq.bytes) == 0;
    if (!q_kept) printf("  the reusing run changed q_out\n");
    bad = check_y(y, qk, project(x, w2, b2, K, 0, P), n, Hp, Wp, shifted, act, "reusing", &me, &mr);
    ok = !bad && q_kept && guards_ok(gy, "y") && guards_ok(gq, "q_out") && guards_ok(gm, "m_out");
    printf("%s %s reusing  : y max|err| %.3g (max|ref| %.3g), %lld bad\n", ok ? "PASS" : "FAIL", tag, me, mr, bad);
    fails += !ok;

    /* unfused: pw project_inp (bias added, rounded to act) into g, then attn3 reading q, v from g without bias */
    elan_cuda_pw_args pw;
    memset(&pw, 0, sizeof pw);
    pw.in = dx, pw.w = dw1, pw.b = db1, pw.out = dg, pw.in_stride = C, pw.out_stride = 2 * C;
    pw.act = act, pw.cin = C, pw.cout = 2 * C, pw.P = P;
    CK(cudaMemset(gy.p, 0xff, gy.bytes));
    CK(elan_cuda_pw(&pw, 0));
    CK(elan_cuda_attn3(au, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(y.data(), gy.p, gy.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(g.data(), dg, g.size() * esz, cudaMemcpyDeviceToHost));
    std::vector<float> qu((size_t)P * C), vu((size_t)P * C); /* the fp16 operands the unfused attention formed */
    for (long long p = 0; p < P; p++)
        for (int gi = 0; gi < 3; gi++)
            for (int c = 0; c < K; c++) {
                qu[p * C + gi * K + c] = round_half(h2f(g[p * 2 * C + gi * 2 * K + c]));
                vu[p * C + gi * K + c] = round_half(h2f(g[p * 2 * C + gi * 2 * K + K + c]));
            }
    bad = check_y(y, qu, vu, n, Hp, Wp, shifted, act, "unfused", &me, &mr);
    /* fused against unfused, window by window */
    long long same_w = 0, diff_w = 0, bad_same = 0, pix[256];
    double max_same = 0, max_diff = 0;
    for (int gi = 0; gi < 3; gi++) {
        const int ws = WS[gi], T2 = ws * ws;
        for (long long win = 0, nwin = 1; win < nwin; win++) {
            nwin = win_pixels(win, ws, shifted ? ws / 2 : 0, n, Hp, Wp, pix);
            int same = 1;
            for (int i = 0; i < T2; i++)
                for (int c = 0; c < K; c++) same &= qk[pix[i] * C + gi * K + c] == qu[pix[i] * C + gi * K + c];
            (same ? same_w : diff_w)++;
            for (int i = 0; i < T2; i++)
                for (int c = 0; c < K; c++) {
                    const double a = h2f(yf[pix[i] * C + gi * K + c]), b = h2f(y[pix[i] * C + gi * K + c]);
                    if (!same) {
                        max_diff = std::max(max_diff, fabs(a - b));
                        continue;
                    }
                    max_same = std::max(max_same, fabs(a - b));
                    if (!(fabs(a - b) <= tol_of(act, b)) && bad_same++ < 5)
                        printf("  fused vs unfused: ws %d win %lld token %d ch %d: %g vs %g\n", ws, win, i, c, a, b);
                }
        }
    }
    ok = !bad && !bad_same && guards_ok(gy, "y");
    printf("%s %s unfused  : y max|err| %.3g (max|ref| %.3g), %lld bad; fused - unfused max %.3g in %lld windows "
           "with the same q (%lld bad), %.3g in %lld windows with different q\n",
           ok ? "PASS" : "FAIL", tag, me, mr, bad, max_same, same_w, bad_same, max_diff, diff_w);
    fails += !ok;
    cudaFree(dx), cudaFree(dw1), cudaFree(dw2), cudaFree(db1), cudaFree(db2), cudaFree(dg);
    cudaFree(gy.base), cudaFree(gq.base), cudaFree(gm.base);
    return fails;
}

/* 960 x 544 (ELAN-light's padded x4 frame): the three launches, x rotated over NB buffers so that no run finds
   the previous run's x in L2. */
template <typename T>
static void time_case(int act) {
    enum { NB = 3 };
    const int n = 1, Hp = 544, Wp = 960;
    const long long P = (long long)n * Hp * Wp;
    const size_t esz = sizeof(T);
    std::vector<T> x((size_t)P * C), w1(2 * C * C), w2(C * C);
    std::vector<float> b1(2 * C), b2(C);
    for (auto &v : x) v = f2h<T>(2.0f * frand());
    fill(w1, w2, b1, b2);
    T *dx[NB], *dw1 = upload(w1), *dw2 = upload(w2), *dg, *dy;
    float *db1 = upload(b1), *db2 = upload(b2);
    __half *dq;
    for (int i = 0; i < NB; i++) dx[i] = upload(x);
    CK(cudaMalloc(&dg, (size_t)P * 2 * C * esz));
    CK(cudaMalloc(&dy, (size_t)P * C * esz));
    CK(cudaMalloc(&dq, (size_t)P * C * 2));
    elan_cuda_attn_args ac[NB][3], ar[NB][3], au[3];
    elan_cuda_pw_args pw[NB];
    for (int i = 0; i < NB; i++) {
        make_args(ac[i], act, esz, dx[i], dw1, db1, dq, 1, NULL, dy, n, Hp, Wp, 0);
        make_args(ar[i], act, esz, dx[i], dw2, db2, dq, 0, NULL, dy, n, Hp, Wp, 0);
        memset(&pw[i], 0, sizeof pw[i]);
        pw[i].in = dx[i], pw[i].w = dw1, pw[i].b = db1, pw[i].out = dg, pw[i].in_stride = C, pw[i].out_stride = 2 * C;
        pw[i].act = act, pw[i].cin = C, pw[i].cout = 2 * C, pw[i].P = P;
    }
    make_args(au, act, esz, NULL, NULL, NULL, NULL, 0, dg, dy, n, Hp, Wp, 0);
    CK(elan_cuda_attn3(ac[0], 0)); /* the q the reusing runs read */
    CK(cudaDeviceSynchronize());
    int it = 0;
    const double tc = median_ms([&] { return elan_cuda_attn3(ac[it++ % NB], 0); });
    const double tr = median_ms([&] { return elan_cuda_attn3(ar[it++ % NB], 0); });
    const double tu = median_ms([&] {
        const cudaError_t e = elan_cuda_pw(&pw[it++ % NB], 0);
        return e != cudaSuccess ? e : elan_cuda_attn3(au, 0);
    });
    const double tp = median_ms([&] { return elan_cuda_pw(&pw[it++ % NB], 0); });
    const double ta = median_ms([&] { return elan_cuda_attn3(au, 0); });
    printf("time %s %dx%d: fused computing %.3f ms, fused reusing %.3f ms, project_inp + attn3 %.3f ms (%.3f + %.3f)\n",
           act == ELAN_ACT_F16 ? "fp16" : "bf16", Wp, Hp, tc, tr, tu, tp, ta);
    for (int i = 0; i < NB; i++) cudaFree(dx[i]);
    cudaFree(dw1), cudaFree(dw2), cudaFree(db1), cudaFree(db2), cudaFree(dg), cudaFree(dy), cudaFree(dq);
}

/* x_out of the whole GMSA against x + bo + wo yr in double (yr: ref_y). Tolerance per element: the rounding of
   x_out to the storage type (1 ulp) plus y's tolerance carried through wo (sum over c of |wo[n][c]| tol_of(y_c)). */
template <typename T>
static long long check_x(const std::vector<T> &xo, const std::vector<T> &x, const std::vector<T> &wo,
                         const std::vector<float> &bo, const std::vector<double> &yr, int act, const char *what,
                         double *maxerr) {
    long long bad = 0;
    *maxerr = 0.0;
    const double ulp = act == ELAN_ACT_BF16 ? 1.0 / 128 : 1.0 / 1024;
    for (size_t p = 0; p < xo.size() / C; p++)
        for (int o = 0; o < C; o++) {
            double want = h2f(x[p * C + o]) + bo[o], tol = 0;
            for (int c = 0; c < C; c++) {
                const double w = h2f(wo[(size_t)o * C + c]);
                want += w * yr[p * C + c];
                tol += fabs(w) * tol_of(act, yr[p * C + c]);
            }
            tol += ulp * fabs(want);
            const double got = h2f(xo[p * C + o]), err = fabs(got - want);
            *maxerr = std::max(*maxerr, err);
            if (!(err <= tol) && bad++ < 5)
                printf("  %s: pixel %zu ch %d: got %g want %g (tol %.3g)\n", what, p, o, got, want, tol);
        }
    return bad;
}

/* The whole GMSA: computing, then reusing (q from the computing run's q_out). Shifted: y (the ws 4 / 8 groups'
   scratch) in a guarded buffer. */
template <typename T>
static int run_gmsa_case(int n, int Hp, int Wp, int act, int shifted, int persist) {
    const long long P = (long long)n * Hp * Wp;
    const size_t esz = sizeof(T);
    char tag[64];
    snprintf(tag, sizeof tag, "%s n %d %3dx%-3d gmsa %s%s", act == ELAN_ACT_F16 ? "fp16" : "bf16", n, Wp, Hp,
             shifted ? "sh" : "  ", persist ? " persistent" : "");
    std::vector<T> x((size_t)P * C), w1(2 * C * C), w2(C * C), wo(C * C), xo((size_t)P * C), xu((size_t)P * C),
        xk((size_t)P * C);
    std::vector<float> b1(2 * C), b2(C), bo(C);
    std::vector<__half> qo((size_t)P * C), qa((size_t)P * C), qo2((size_t)P * C);
    for (auto &v : x) v = f2h<T>(2.0f * frand());
    fill(w1, w2, b1, b2);
    for (auto &v : wo) v = f2h<T>(0.25f * frand());
    for (auto &v : bo) v = 0.5f * frand();
    T *dx = upload(x), *dw1 = upload(w1), *dw2 = upload(w2), *dwo = upload(wo), *dxu;
    float *db1 = upload(b1), *db2 = upload(b2), *dbo = upload(bo);
    CK(cudaMalloc(&dxu, x.size() * esz));
    gbuf gxo = gbuf_new(xo.size() * esz), gq = gbuf_new(qo.size() * 2), gqa = gbuf_new(qo.size() * 2),
         gy = gbuf_new(xo.size() * esz), gm = gbuf_new((size_t)P * 3 * sizeof(float));
    elan_cuda_gmsa_args gc, gr;
    make_args(gc.g, act, esz, dx, dw1, db1, (__half *)gq.p, 1, NULL, shifted ? gy.p : NULL, n, Hp, Wp, shifted, 1, 1,
              (float *)gm.p);
    make_args(gr.g, act, esz, dx, dw2, db2, (__half *)gq.p, 0, NULL, shifted ? gy.p : NULL, n, Hp, Wp, shifted, 1, 1,
              (float *)gm.p);
    gc.wo = gr.wo = dwo, gc.bo = gr.bo = dbo, gc.x_out = gr.x_out = gxo.p;
    gc.persist = gr.persist = persist;
    gc.rev = 0, gr.rev = 1; /* the reusing GMSA sweeps the regions the other way (the same results) */
    int fails = 0;
    double me;

    /* computing; x_out and q_out start as NaN: an unwritten element fails */
    CK(cudaMemset(gxo.p, 0xff, gxo.bytes));
    CK(cudaMemset(gq.p, 0xff, gq.bytes));
    CK(elan_cuda_gmsa(&gc, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(xo.data(), gxo.p, gxo.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(qo.data(), gq.p, gq.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(xk.data(), dx, x.size() * esz, cudaMemcpyDeviceToHost));
    const int x_kept = memcmp(xk.data(), x.data(), x.size() * esz) == 0;
    if (!x_kept) printf("  the GMSA changed its input x\n");
    /* q_out: the same projection code as attn3's, so the same bits */
    elan_cuda_attn_args ac[3];
    const int y_guards = guards_ok(gy, "y");
    make_args(ac, act, esz, dx, dw1, db1, (__half *)gqa.p, 1, NULL, gy.p, n, Hp, Wp, shifted, 1, 0);
    CK(cudaMemset(gqa.p, 0xff, gqa.bytes));
    CK(elan_cuda_attn3(ac, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(qa.data(), gqa.p, gqa.bytes, cudaMemcpyDeviceToHost));
    const int q_same = memcmp(qo.data(), qa.data(), gq.bytes) == 0;
    if (!q_same) printf("  q_out differs from elan_cuda_attn3's\n");
    std::vector<float> qk((size_t)P * C); /* q_out's planes as a P x C array */
    for (long long p = 0; p < P; p++)
        for (int c = 0; c < C; c++) qk[(size_t)p * C + c] = __half2float(qo[(size_t)(c / K) * K * P + (size_t)p * K + c % K]);
    const std::vector<double> yc = ref_y(qk, project(x, w1, b1, 2 * K, K, P), n, Hp, Wp, shifted);
    long long bad = check_x(xo, x, wo, bo, yc, act, "gmsa computing", &me);
    /* against attn3 (y, just computed) + pw: x_unfused = x + bo + wo y */
    elan_cuda_pw_args pw;
    memset(&pw, 0, sizeof pw);
    pw.in = gy.p, pw.in_stride = C, pw.w = dwo, pw.b = dbo, pw.cin = C, pw.cout = C, pw.xh = dxu, pw.x_stride = C;
    pw.act = act, pw.P = P;
    CK(cudaMemcpy(dxu, dx, x.size() * esz, cudaMemcpyDeviceToDevice));
    CK(elan_cuda_pw(&pw, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(xu.data(), dxu, x.size() * esz, cudaMemcpyDeviceToHost));
    long long bad_u = check_x(xu, x, wo, bo, yc, act, "attn3 + pw", &me);
    double du = 0;
    long long same = 0;
    for (size_t i = 0; i < xo.size(); i++) {
        du = std::max(du, (double)fabs(h2f(xo[i]) - h2f(xu[i])));
        same += memcmp(&xo[i], &xu[i], esz) == 0;
    }
    int ok = !bad && !bad_u && x_kept && q_same && y_guards && guards_ok(gxo, "x_out") && guards_ok(gq, "q_out") &&
             guards_ok(gm, "m_out");
    printf("%s %s computing: x_out max|err| %.3g, %lld bad; attn3 + pw %lld bad; gmsa - (attn3 + pw) max %.3g, "
           "%.2f%% identical\n",
           ok ? "PASS" : "FAIL", tag, me, bad, bad_u, du, 100.0 * same / xo.size());
    fails += !ok;

    /* reusing */
    CK(cudaMemset(gxo.p, 0xff, gxo.bytes));
    CK(elan_cuda_gmsa(&gr, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(xo.data(), gxo.p, gxo.bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(qo2.data(), gq.p, gq.bytes, cudaMemcpyDeviceToHost));
    const int q_kept = memcmp(qo.data(), qo2.data(), gq.bytes) == 0;
    if (!q_kept) printf("  the reusing run changed q_out\n");
    const std::vector<double> yr = ref_y(qk, project(x, w2, b2, K, 0, P), n, Hp, Wp, shifted);
    bad = check_x(xo, x, wo, bo, yr, act, "gmsa reusing", &me);
    ok = !bad && q_kept && guards_ok(gxo, "x_out") && guards_ok(gq, "q_out") && guards_ok(gy, "y");
    printf("%s %s reusing  : x_out max|err| %.3g, %lld bad\n", ok ? "PASS" : "FAIL", tag, me, bad);
    fails += !ok;
    cudaFree(dx), cudaFree(dw1), cudaFree(dw2), cudaFree(dwo), cudaFree(dxu), cudaFree(db1), cudaFree(db2),
        cudaFree(dbo);
    cudaFree(gxo.base), cudaFree(gq.base), cudaFree(gqa.base), cudaFree(gy.base), cudaFree(gm.base);
    return fails;
}

/* 960 x 544: the whole GMSA against attn3 (project_inp fused) + pw (project_out, residual), x rotated over NB
   buffers, computing and reusing, alternated twice; unshifted or shifted blocks. */
template <typename T>
static void time_gmsa(int act, int shifted, int persist) {
    enum { NB = 3 };
    const int n = 1, Hp = 544, Wp = 960;
    const long long P = (long long)n * Hp * Wp;
    const size_t esz = sizeof(T);
    std::vector<T> x((size_t)P * C), w1(2 * C * C), w2(C * C), wo(C * C);
    std::vector<float> b1(2 * C), b2(C), bo(C);
    for (auto &v : x) v = f2h<T>(2.0f * frand());
    fill(w1, w2, b1, b2);
    for (auto &v : wo) v = f2h<T>(0.25f * frand());
    for (auto &v : bo) v = 0.5f * frand();
    T *dx[NB], *dw1 = upload(w1), *dw2 = upload(w2), *dwo = upload(wo), *dy, *dxo, *dxs;
    float *db1 = upload(b1), *db2 = upload(b2), *dbo = upload(bo);
    __half *dq;
    for (int i = 0; i < NB; i++) dx[i] = upload(x);
    CK(cudaMalloc(&dy, (size_t)P * C * esz));
    CK(cudaMalloc(&dxo, (size_t)P * C * esz));
    CK(cudaMalloc(&dxs, (size_t)P * C * esz));
    CK(cudaMemcpy(dxs, dx[0], (size_t)P * C * esz, cudaMemcpyDeviceToDevice));
    CK(cudaMalloc(&dq, (size_t)P * C * 2));
    float *dm;
    CK(cudaMalloc(&dm, (size_t)P * 3 * sizeof(float)));
    elan_cuda_gmsa_args gc[NB], gr[NB], go[NB];
    elan_cuda_attn_args ac[NB][3], ar[NB][3];
    for (int i = 0; i < NB; i++) {
        make_args(gc[i].g, act, esz, dx[i], dw1, db1, dq, 1, NULL, dy, n, Hp, Wp, shifted, 1, 1, dm);
        make_args(gr[i].g, act, esz, dx[i], dw2, db2, dq, 0, NULL, dy, n, Hp, Wp, shifted, 1, 1, dm);
        make_args(go[i].g, act, esz, dx[i], dw2, db2, dq, 0, NULL, dy, n, Hp, Wp, shifted, 1, 1); /* own maxima */
        gc[i].wo = gr[i].wo = go[i].wo = dwo, gc[i].bo = gr[i].bo = go[i].bo = dbo;
        gc[i].x_out = gr[i].x_out = go[i].x_out = dxo;
        gc[i].persist = gr[i].persist = go[i].persist = persist;
        gc[i].rev = gr[i].rev = go[i].rev = 0;
        make_args(ac[i], act, esz, dx[i], dw1, db1, dq, 1, NULL, dy, n, Hp, Wp, shifted, 1, 0);
        make_args(ar[i], act, esz, dx[i], dw2, db2, dq, 0, NULL, dy, n, Hp, Wp, shifted, 1, 0);
    }
    elan_cuda_pw_args pw; /* residual mode into a scratch copy of x (in place there, never read by the attention) */
    memset(&pw, 0, sizeof pw);
    pw.in = dy, pw.in_stride = C, pw.w = dwo, pw.b = dbo, pw.cin = C, pw.cout = C, pw.xh = dxs, pw.x_stride = C;
    pw.act = act, pw.P = P;
    CK(elan_cuda_gmsa(&gc[0], 0)); /* the q the reusing runs read */
    CK(cudaDeviceSynchronize());
    int it = 0;
    for (int rep = 0; rep < 2; rep++) {
        const double tgc = median_ms([&] { return elan_cuda_gmsa(&gc[it++ % NB], 0); });
        const double tgr = median_ms([&] { return elan_cuda_gmsa(&gr[it++ % NB], 0); });
        const double tgo = median_ms([&] { return elan_cuda_gmsa(&go[it++ % NB], 0); });
        const double tac = median_ms([&] {
            const cudaError_t e = elan_cuda_attn3(ac[it++ % NB], 0);
            return e != cudaSuccess ? e : elan_cuda_pw(&pw, 0);
        });
        const double tar = median_ms([&] {
            const cudaError_t e = elan_cuda_attn3(ar[it++ % NB], 0);
            return e != cudaSuccess ? e : elan_cuda_pw(&pw, 0);
        });
        const double tp = median_ms([&] { return elan_cuda_pw(&pw, 0); });
        printf("time %s %dx%d %s%s: gmsa computing %.3f ms, reusing %.3f ms (%.3f with its own maxima); attn3 + pw "
               "computing %.3f, reusing %.3f (pw %.3f)\n",
               act == ELAN_ACT_F16 ? "fp16" : "bf16", Wp, Hp, shifted ? "shifted" : "plain", persist ? " persistent" : "",
               tgc, tgr, tgo, tac, tar, tp);
    }
    for (int i = 0; i < NB; i++) cudaFree(dx[i]);
    cudaFree(dw1), cudaFree(dw2), cudaFree(dwo), cudaFree(db1), cudaFree(db2), cudaFree(dbo), cudaFree(dy);
    cudaFree(dxo), cudaFree(dxs), cudaFree(dq), cudaFree(dm);
}

int main(void) {
    int fails = 0;
    const int acts[2] = {ELAN_ACT_F16, ELAN_ACT_BF16};
    /* CHECK_QUICK=1: fp16 only (the phase timings of docs/PERFORMANCE.md step 13, built with -DGMSA_DEV_SKIP=N) */
    const char *qk = getenv("CHECK_QUICK");
    const int quick = qk && qk[0] == '1';
    for (int ai = 0; ai < (quick ? 1 : 2); ai++) {
        const int act = acts[ai];
        if (elan_cuda_attn3_proj_supported(K, C, WS, act) || elan_cuda_attn3_supported(K, WS, act) ||
            elan_cuda_pw_supported(C, 2 * C)) {
            printf("FAIL %s: fused attention, attn3 or pointwise not supported for k %d, C %d\n", ai ? "bf16" : "fp16", K, C);
            fails++;
            continue;
        }
        CK(elan_cuda_attn3_proj_prepare(K, C, WS, act));
        CK(elan_cuda_attn3_prepare(K, WS, act));
        CK(elan_cuda_pw_prepare(C, 2 * C, act));
        for (int shifted = 0; shifted < 2; shifted++) {
            fails += ai ? run_case<__nv_bfloat16>(2, 32, 48, shifted, act) : run_case<__half>(2, 32, 48, shifted, act);
            fails += ai ? run_case<__nv_bfloat16>(1, 64, 80, shifted, act) : run_case<__half>(1, 64, 80, shifted, act);
        }
        if (ai) time_case<__nv_bfloat16>(act);
        else time_case<__half>(act);
        if (elan_cuda_gmsa_supported(K, C, WS, act)) {
            printf("FAIL %s: the whole-GMSA kernel is not supported for k %d, C %d\n", ai ? "bf16" : "fp16", K, C);
            fails++;
            continue;
        }
        CK(elan_cuda_gmsa_prepare(K, C, WS, act));
        CK(elan_cuda_pw_prepare(C, C, act));
        for (int persist = 0; persist < 2; persist++) /* one CTA per region, then the persistent kernel */
            for (int shifted = 0; shifted < 2; shifted++) {
                fails += ai ? run_gmsa_case<__nv_bfloat16>(2, 32, 48, act, shifted, persist)
                            : run_gmsa_case<__half>(2, 32, 48, act, shifted, persist);
                fails += ai ? run_gmsa_case<__nv_bfloat16>(1, 64, 80, act, shifted, persist)
                            : run_gmsa_case<__half>(1, 64, 80, act, shifted, persist);
                /* more regions than the persistent kernel has teams (a region per team and more, unequal counts) */
                if (persist)
                    fails += ai ? run_gmsa_case<__nv_bfloat16>(3, 160, 608, act, shifted, persist)
                                : run_gmsa_case<__half>(3, 160, 608, act, shifted, persist);
            }
        for (int shifted = 0; shifted < 2; shifted++)
            for (int persist = 0; persist < 2; persist++) {
                if (ai) time_gmsa<__nv_bfloat16>(act, shifted, persist);
                else time_gmsa<__half>(act, shifted, persist);
            }
    }
    if (fails) printf("check_attn_proj: FAIL (%d failed)\n", fails);
    else printf("check_attn_proj: PASS\n");
    return fails ? 1 : 0;
}
