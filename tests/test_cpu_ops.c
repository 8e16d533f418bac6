/* test_cpu_ops.c — the CPU backend against the naive reference (naive_elan.h): each op on its own on random
   inputs of odd sizes, then the whole forward of random small models at awkward sizes, batches and scales.
   Outputs are NaN-poisoned before every call so that an element the CPU code forgets to write fails.
   `test_cpu_ops --bench [h w]` instead times an ELAN-light-sized random model (planes 60, 12 blocks, x4). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, setenv */

#include <time.h>

#include "backend.h"
#include "common.h"
#include "cpu/cpu_ops.h"
#include "naive_elan.h"
#include "rand_model.h"
#include "testutil.h"

#define TOL 1e-3
#define NT 2 /* threads for the op tests: exercises the per-thread scratch */

/* Built by hand: this test links the backend without elansr.c. */
static elansr_params cpu_params(void) {
    elansr_params p;
    memset(&p, 0, sizeof p);
    p.device = ELANSR_DEVICE_CPU;
    return p;
}

static size_t r16(size_t v) { return (v + 15) / 16 * 16; }

/* C x H x W tensor -> planes of stride ps (slack zeroed), and back. */
static float *to_planes(const float *src, int C, size_t hw, size_t ps) {
    float *p = naive_floats((size_t)C * ps);
    for (int c = 0; c < C; c++) memcpy(p + c * ps, src + c * hw, hw * sizeof(float));
    return p;
}
static void from_planes(const float *p, int C, size_t hw, size_t ps, float *dst) {
    for (int c = 0; c < C; c++) memcpy(dst + c * hw, p + c * ps, hw * sizeof(float));
}

static float *rand_floats(size_t n, float lo, float hi) {
    float *x = naive_floats(n);
    t_fill(x, n, lo, hi);
    return x;
}

/* ---------------------------------------------------------------------------------------------------- */

static void test_pad(void) {
    static const int sizes[][2] = {{1, 1}, {5, 33}, {37, 53}, {2, 3}, {16, 16}, {17, 1}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int h = sizes[si][0], w = sizes[si][1], Hp = elan_round_up(h, 16), Wp = elan_round_up(w, 16);
        const size_t hw = (size_t)Hp * Wp, ps = cpu_plane_stride(Hp, Wp);
        float *in = rand_floats((size_t)3 * h * w, 0.0f, 255.0f);
        elan_conv sm;
        rm_conv(&sm, 3, 3, 1, 1.0f, 100.0f);
        float *pad = naive_floats(3 * hw), *ref = naive_floats(3 * hw), *got = naive_floats(3 * hw);
        naive_pad(in, 3, h, w, pad, Hp, Wp);
        naive_conv(&sm, pad, Hp, Wp, ref);
        float *planes = naive_floats(3 * ps);
        poison(planes, 3 * ps);
        cpu_input_pad(in, h, w, sm.w, sm.b, planes, ps, Hp, Wp, NT);
        from_planes(planes, 3, hw, ps, got);
        const double d = t_max_abs_diff(ref, got, 3 * hw);
        printf("pad+sub_mean %dx%d -> %dx%d: max abs diff %.3g\n", h, w, Hp, Wp, d);
        CHECK_MSG(d <= TOL, "pad %dx%d: %g", h, w, d);
        free(in), free(pad), free(ref), free(got), free(planes), rm_conv_free(&sm);
    }
}

/* One conv through cpu_conv_apply in every mode against naive_conv (+ relu / + residual). */
static void check_conv(const elan_conv *cv, const int *taps, int H, int W, const char *what) {
    const size_t hw = (size_t)H * W, ps = cpu_plane_stride(H, W);
    cpu_conv c;
    CHECK(cpu_conv_init(&c, cv, taps, what) == ELANSR_OK);
    const size_t sstride = r16(cpu_conv_scratch(&c));
    float *scratch = naive_floats(NT * sstride);
    float *in = rand_floats((size_t)cv->cin * hw, -1.0f, 1.0f), *base = rand_floats((size_t)cv->cout * hw, -1.0f, 1.0f);
    float *ref = naive_floats((size_t)cv->cout * hw), *got = naive_floats((size_t)cv->cout * hw);
    if (taps) {
        elan_shift_conv sc = {*cv, (int *)taps};
        naive_shift_conv(&sc, in, H, W, ref);
    } else {
        naive_conv(cv, in, H, W, ref);
    }
    float *pin = to_planes(in, cv->cin, hw, ps);
    for (int mode = CPU_STORE; mode <= CPU_ADD; mode++) {
        float *want = naive_floats((size_t)cv->cout * hw);
        for (size_t i = 0; i < (size_t)cv->cout * hw; i++)
            want[i] = mode == CPU_STORE ? ref[i] : mode == CPU_RELU ? (ref[i] > 0 ? ref[i] : 0.0f) : base[i] + ref[i];
        float *pout = mode == CPU_ADD ? to_planes(base, cv->cout, hw, ps) : naive_floats((size_t)cv->cout * ps);
        if (mode != CPU_ADD)
            for (int co = 0; co < cv->cout; co++) poison(pout + co * ps, hw);
        cpu_conv_apply(&c, pin, ps, pout, ps, H, W, mode, scratch, sstride, NT);
        from_planes(pout, cv->cout, hw, ps, got);
        const double d = t_max_abs_diff(want, got, (size_t)cv->cout * hw);
        printf("%s %d->%d k%d %dx%d mode %d: max abs diff %.3g\n", what, cv->cin, cv->cout, cv->k, H, W, mode, d);
        CHECK_MSG(d <= TOL && count_nan(got, (size_t)cv->cout * hw) == 0, "%s mode %d: %g", what, mode, d);
        free(want), free(pout);
    }
    free(scratch), free(in), free(base), free(ref), free(got), free(pin);
    cpu_conv_free(&c);
}

static void test_conv(void) {
    static const int cases[][5] = {/* cin, cout, k, H, W */
                                   {3, 15, 3, 7, 45}, {30, 12, 3, 5, 16}, {15, 48, 3, 3, 19}, {30, 21, 1, 13, 37},
                                   {15, 10, 1, 3, 50}, {7, 1, 1, 1, 1},   {60, 120, 1, 2, 33}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        elan_conv cv;
        rm_conv(&cv, cases[i][0], cases[i][1], cases[i][2], 1.0f / sqrtf((float)cases[i][0]), 0.5f);
        check_conv(&cv, NULL, cases[i][3], cases[i][4], "conv");
        rm_conv_free(&cv);
    }
    /* ShiftConvs: ELAN's 5-group pattern, and every tap (diagonals included) in random order. */
    static const int shifts[][4] = {{15, 30, 9, 35}, {30, 15, 16, 16}, {20, 9, 5, 21}};
    for (size_t i = 0; i < sizeof shifts / sizeof shifts[0]; i++) {
        elan_shift_conv sc;
        rm_shift_conv(&sc, shifts[i][0], shifts[i][1]);
        check_conv(&sc.conv, sc.tap, shifts[i][2], shifts[i][3], "shift conv");
        for (int c = 0; c < sc.conv.cin; c++) sc.tap[c] = (int)(t_next() % 9);
        check_conv(&sc.conv, sc.tap, shifts[i][2], shifts[i][3], "shift conv (random taps)");
        rm_conv_free(&sc.conv);
        free(sc.tap);
    }
}

static void test_lfe(void) {
    static const int cases[][3] = {{15, 9, 35}, {30, 16, 48}, {15, 1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int C = cases[i][0], H = cases[i][1], W = cases[i][2];
        const size_t hw = (size_t)H * W, ps = cpu_plane_stride(H, W);
        elan_lfe l;
        rm_shift_conv(&l.c0, C, 2 * C);
        rm_shift_conv(&l.c1, 2 * C, C);
        cpu_conv c0, c1;
        CHECK(cpu_conv_init(&c0, &l.c0.conv, l.c0.tap, "c0") == ELANSR_OK);
        CHECK(cpu_conv_init(&c1, &l.c1.conv, l.c1.tap, "c1") == ELANSR_OK);
        const size_t sstride = r16(cpu_conv_scratch(&c1));
        float *scratch = naive_floats(NT * sstride);
        float *x = rand_floats((size_t)C * hw, -1.0f, 1.0f), *got = naive_floats((size_t)C * hw);
        float *px = to_planes(x, C, hw, ps), *hid = naive_floats((size_t)2 * C * ps);
        poison(hid, (size_t)2 * C * ps);
        naive_lfe(&l, x, H, W);
        cpu_lfe(&c0, &c1, px, hid, ps, H, W, scratch, sstride, NT);
        from_planes(px, C, hw, ps, got);
        const double d = t_max_abs_diff(x, got, (size_t)C * hw);
        printf("LFE C=%d %dx%d: max abs diff %.3g\n", C, H, W, d);
        CHECK_MSG(d <= TOL, "LFE C=%d %dx%d: %g", C, H, W, d);
        free(scratch), free(x), free(got), free(px), free(hid);
        cpu_conv_free(&c0), cpu_conv_free(&c1);
        rm_conv_free(&l.c0.conv), rm_conv_free(&l.c1.conv), free(l.c0.tap), free(l.c1.tap);
    }
}

static const int g_windows[3] = {4, 8, 16};

static void test_attention(void) {
    /* The last case has windows that neither divide 16 nor are multiples of it (the output scatter's runs). */
    static const int cases[][6] = {/* k, H, W, windows */ {5, 16, 48, 4, 8, 16}, {10, 48, 32, 4, 8, 16},
                                   {20, 32, 32, 4, 8, 16}, {4, 16, 16, 4, 8, 16}, {4, 60, 60, 4, 12, 20}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        for (int shifted = 0; shifted < 2; shifted++) {
            const int k = cases[ci][0], H = cases[ci][1], W = cases[ci][2], C = 3 * k;
            const int *win = &cases[ci][3], wmax = win[2];
            const size_t hw = (size_t)H * W, ps = cpu_plane_stride(H, W);
            float *q = rand_floats((size_t)C * hw, -1.5f, 1.5f), *v = rand_floats((size_t)C * hw, -1.0f, 1.0f);
            float *v2 = rand_floats((size_t)C * hw, -1.0f, 1.0f);
            float *ref = naive_floats((size_t)C * hw), *ref2 = naive_floats((size_t)C * hw), *got = naive_floats((size_t)C * hw);
            double *A[3];
            for (int g = 0; g < 3; g++) {
                const int w = win[g], sh = shifted ? w / 2 : 0;
                A[g] = naive_alloc(naive_attn_size(H, W, w), sizeof(double));
                naive_group_attention(q + (size_t)g * k * hw, v + (size_t)g * k * hw, k, H, W, w, sh, A[g], ref + (size_t)g * k * hw);
                naive_group_attention(NULL, v2 + (size_t)g * k * hw, k, H, W, w, sh, A[g], ref2 + (size_t)g * k * hw);
            }
            naive_free_attn(A);
            const size_t sstride = r16(cpu_attention_scratch(k, wmax)), istride = cpu_attention_iscratch(wmax);
            float *scratch = naive_floats(NT * sstride);
            int *iscratch = naive_alloc(NT * istride, sizeof(int));
            float *pq = to_planes(q, C, hw, ps), *pv = to_planes(v, C, hw, ps), *pv2 = to_planes(v2, C, hw, ps);
            float *py = naive_floats((size_t)C * ps);
            for (int pass = 0; pass < 2; pass++) {
                poison(py, (size_t)C * ps);
                cpu_attention(pq, k, pass ? pv2 : pv, k, py, ps, H, W, k, win, shifted, scratch, sstride, iscratch,
                              istride, NT);
                from_planes(py, C, hw, ps, got);
                const double d = t_max_abs_diff(pass ? ref2 : ref, got, (size_t)C * hw);
                printf("attention k=%d %dx%d windows %d,%d,%d shifted %d (%s v): max abs diff %.3g\n", k, H, W, win[0], win[1],
                       win[2], shifted, pass ? "second" : "first", d);
                CHECK_MSG(d <= TOL, "attention k=%d %dx%d shifted %d pass %d: %g", k, H, W, shifted, pass, d);
            }
            free(q), free(v), free(v2), free(ref), free(ref2), free(got), free(scratch), free(iscratch);
            free(pq), free(pv), free(pv2), free(py);
        }
    }
}

/* A computing and a reusing GMSA (a random model's block) against naive_gmsa with the shared A. */
static void test_gmsa(void) {
    static const int cases[][3] = {/* C, H, W */ {15, 32, 48}, {30, 16, 16}, {60, 16, 32}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int C = cases[ci][0], H = cases[ci][1], W = cases[ci][2];
        elan_model m;
        rand_model_init(&m, C, 2, 1, 2);
        const size_t hw = (size_t)H * W, ps = cpu_plane_stride(H, W);
        const size_t sstride = r16(cpu_attention_scratch(C / 3, 16) + (size_t)2 * C * CPU_TW);
        const size_t istride = cpu_attention_iscratch(16);
        float *scratch = naive_floats(NT * sstride);
        int *iscratch = naive_alloc(NT * istride, sizeof(int));
        for (int b = 0; b < 2; b++) {
            const elan_block *bl = &m.blocks[b];
            float *x = rand_floats((size_t)C * hw, -1.0f, 1.0f), *got = naive_floats((size_t)C * hw);
            float *px = to_planes(x, C, hw, ps), *qv = naive_floats((size_t)2 * C * ps), *hid = naive_floats((size_t)2 * C * ps);
            poison(qv, (size_t)2 * C * ps);
            poison(hid, (size_t)2 * C * ps);
            double *A[3] = {NULL, NULL, NULL};
            for (int j = 0; j < bl->n_pairs; j++) {
                cpu_conv pin, pout;
                CHECK(cpu_conv_init(&pin, &bl->gmsa[j].proj_in, NULL, "proj_in") == ELANSR_OK);
                CHECK(cpu_conv_init(&pout, &bl->gmsa[j].proj_out, NULL, "proj_out") == ELANSR_OK);
                naive_gmsa(&bl->gmsa[j], x, C, H, W, g_windows, bl->shifted, A);
                cpu_gmsa(&pin, &pout, bl->gmsa[j].computes_attn, px, qv, hid, ps, H, W, C, g_windows, bl->shifted, scratch,
                         sstride, iscratch, istride, NT);
                from_planes(px, C, hw, ps, got);
                const double d = t_max_abs_diff(x, got, (size_t)C * hw);
                printf("GMSA C=%d %dx%d shifted %d %s: max abs diff %.3g\n", C, H, W, bl->shifted,
                       j ? "reusing" : "computing", d);
                CHECK_MSG(d <= TOL, "GMSA C=%d %dx%d block %d pair %d: %g", C, H, W, b, j, d);
                cpu_conv_free(&pin), cpu_conv_free(&pout);
            }
            naive_free_attn(A);
            free(x), free(got), free(px), free(qv), free(hid);
        }
        free(scratch), free(iscratch);
        rand_model_free(&m);
    }
}

static void test_tail(void) {
    static const int cases[][5] = {/* C, h, w, Hp, Wp */ {15, 29, 37, 32, 48}, {30, 1, 1, 16, 16}, {15, 16, 17, 16, 32}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        for (int s = 2; s <= 4; s++) {
            const int C = cases[ci][0], h = cases[ci][1], w = cases[ci][2], Hp = cases[ci][3], Wp = cases[ci][4];
            const size_t hw = (size_t)Hp * Wp, ps = cpu_plane_stride(Hp, Wp), oh = (size_t)h * s, ow = (size_t)w * s;
            elan_conv tail, am;
            rm_conv(&tail, C, 3 * s * s, 3, 30.0f / sqrtf(9.0f * C), 1.0f);
            rm_conv(&am, 3, 3, 1, 1.0f, 100.0f);
            float *x = rand_floats((size_t)C * hw, -1.0f, 1.0f), *t = naive_floats((size_t)3 * s * s * hw);
            float *sr = naive_floats(3 * hw * s * s), *sr2 = naive_floats(3 * hw * s * s);
            float *ref = naive_floats(3 * oh * ow), *got = naive_floats(3 * oh * ow);
            naive_conv(&tail, x, Hp, Wp, t);
            naive_pixel_shuffle(t, 3, s, Hp, Wp, sr);
            naive_conv(&am, sr, Hp * s, Wp * s, sr2);
            for (int c = 0; c < 3; c++)
                for (size_t y = 0; y < oh; y++)
                    memcpy(ref + (c * oh + y) * ow, sr2 + (c * (size_t)Hp * s + y) * Wp * s, ow * sizeof(float));
            cpu_conv ct;
            CHECK(cpu_conv_init(&ct, &tail, NULL, "tail") == ELANSR_OK);
            const size_t sstride = r16(cpu_tail_scratch(&ct));
            float *scratch = naive_floats(NT * sstride), *px = to_planes(x, C, hw, ps);
            poison(got, 3 * oh * ow);
            cpu_tail(&ct, s, am.w, am.b, px, ps, Hp, Wp, h, w, got, scratch, sstride, NT);
            const double d = t_max_abs_diff(ref, got, 3 * oh * ow);
            printf("tail+shuffle+add_mean C=%d x%d %dx%d (padded %dx%d): max abs diff %.3g\n", C, s, h, w, Hp, Wp, d);
            CHECK_MSG(d <= TOL, "tail C=%d x%d %dx%d: %g", C, s, h, w, d);
            free(x), free(t), free(sr), free(sr2), free(ref), free(got), free(scratch), free(px);
            cpu_conv_free(&ct), rm_conv_free(&tail), rm_conv_free(&am);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------- */

static void test_forward(void) {
    /* Every model has a shifted block (odd index) and a computing + reusing GMSA pair in each block. */
    static const int configs[][3] = {/* planes, blocks, scale */ {15, 2, 2}, {15, 3, 3}, {30, 2, 4}};
    static const int sizes[][3] = {/* n, h, w */ {1, 1, 1}, {1, 5, 33}, {1, 37, 53}, {1, 17, 250}, {2, 5, 33}};
    for (size_t ci = 0; ci < sizeof configs / sizeof configs[0]; ci++) {
        const int C = configs[ci][0], nb = configs[ci][1], s = configs[ci][2];
        elan_model m;
        rand_model_init(&m, C, nb, 1, s);
        if (ci == 1) { /* sub/add_mean need not be the identity: perturb them once */
            for (int i = 0; i < 9; i++) m.sub_mean.w[i] += t_uniform(-0.1f, 0.1f), m.add_mean.w[i] += t_uniform(-0.1f, 0.1f);
        }
        elansr_params p = cpu_params();
        elan_backend *be = NULL, *be1 = NULL;
        CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_OK);
        p.n_threads = 1;
        CHECK(elan_cpu_backend_create(&m, &p, &be1) == ELANSR_OK);
        if (!be || !be1) {
            fprintf(stderr, "create: %s\n", elansr_last_error());
            rand_model_free(&m);
            continue;
        }
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si][0], h = sizes[si][1], w = sizes[si][2];
            const size_t nin = (size_t)n * 3 * h * w, nout = nin * s * s;
            float *in = rand_floats(nin, 0.0f, 255.0f), *ref = naive_floats(nout), *got = naive_floats(nout);
            float *got1 = naive_floats(nout);
            naive_elan_forward(&m, in, n, h, w, ref);
            poison(got, nout);
            CHECK(be->forward(be, in, n, h, w, got) == ELANSR_OK);
            const size_t nan = count_nan(got, nout);
            const double d = t_max_abs_diff(ref, got, nout);
            double lo = ref[0], hi = ref[0];
            for (size_t i = 0; i < nout; i++) lo = ref[i] < lo ? ref[i] : lo, hi = ref[i] > hi ? ref[i] : hi;
            printf("forward planes %d blocks %d x%d, %d x %dx%d: max abs diff %.3g (output %.1f..%.1f), unwritten %zu\n", C,
                   nb, s, n, h, w, d, lo, hi, nan);
            CHECK_MSG(d <= TOL && nan == 0, "forward planes %d x%d %d x %dx%d: diff %g, %zu unwritten", C, s, n, h, w, d, nan);
            CHECK_MSG(hi - lo > 10.0, "the reference output is nearly constant (%g..%g): the test proves little", lo, hi);
            /* Same size again (planned buffers reused) and one thread: bit-identical. */
            poison(got1, nout);
            CHECK(be->forward(be, in, n, h, w, got1) == ELANSR_OK);
            CHECK_MSG(memcmp(got, got1, nout * sizeof(float)) == 0, "second forward differs");
            poison(got1, nout);
            CHECK(be1->forward(be1, in, n, h, w, got1) == ELANSR_OK);
            CHECK_MSG(memcmp(got, got1, nout * sizeof(float)) == 0, "one thread differs from %s", be->device_name);
            free(in), free(ref), free(got), free(got1);
        }
        be->destroy(be);
        be1->destroy(be1);
        rand_model_free(&m);
    }
}

static void test_errors(void) {
    elan_model m;
    rand_model_init(&m, 15, 2, 1, 2);
    elansr_params p = cpu_params();
    elan_backend *be = NULL;
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_OK);
    if (be) {
        float in[3] = {1, 2, 3}, out[12];
        CHECK(be->forward(be, in, 0, 1, 1, out) == ELANSR_ERR_ARG);
        CHECK(be->forward(be, in, 1, 0, 1, out) == ELANSR_ERR_ARG);
        CHECK(be->forward(be, NULL, 1, 1, 1, out) == ELANSR_ERR_ARG);
        CHECK(strstr(elansr_last_error(), "cpu backend") != NULL);
        CHECK(be->forward(be, in, 1, 1, 1, out) == ELANSR_OK);
        CHECK(count_nan(out, 12) == 0);
        be->destroy(be);
    }
    m.planes = 16;
    static elan_backend dummy;
    be = &dummy; /* must be reset to NULL on failure */
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_ERR_ARG && be == NULL);
    m.planes = 15;
    m.blocks[1].gmsa[1].computes_attn = 1;
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_ERR_ARG);
    printf("errors: %s\n", elansr_last_error());
    m.blocks[1].gmsa[1].computes_attn = 0;
    m.windows[2] = 12; /* does not divide the pad multiple */
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_ERR_ARG);
    m.windows[2] = 16;
    p.n_threads = -1;
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_ERR_ARG);
    rand_model_free(&m);
}

/* ---------------------------------------------------------------------------------------------------- */

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Reports the best wall time of 3 runs after a warm-up (which also plans the buffers), and the process CPU
   time of that run: on a shared machine wall > CPU time / threads shows that we were preempted. */
static int bench(int h, int w) {
    elan_model m;
    rand_model_init(&m, 60, 12, 1, 4);
    elansr_params p = cpu_params();
    elan_backend *be;
    if (elan_cpu_backend_create(&m, &p, &be) != ELANSR_OK) {
        fprintf(stderr, "%s\n", elansr_last_error());
        return 1;
    }
    const size_t nin = (size_t)3 * h * w;
    float *in = rand_floats(nin, 0.0f, 255.0f), *out = naive_floats(nin * 16);
    double best = 1e30, best_cpu = 0;
    for (int it = 0; it < 4; it++) {
        const double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (be->forward(be, in, 1, h, w, out) != ELANSR_OK) {
            fprintf(stderr, "%s\n", elansr_last_error());
            return 1;
        }
        const double t = clock_s(CLOCK_MONOTONIC) - t0, c = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        printf("  run %d: %.1f ms wall, %.1f ms CPU\n", it, t * 1e3, c * 1e3);
        if (it > 0 && t < best) best = t, best_cpu = c;
    }
    const double flop = 1.66e6 * (double)elan_round_up(h, 16) * elan_round_up(w, 16);
    printf("bench %s: planes 60, 12 blocks, x4, %dx%d: %.1f ms, %.1f GFLOP/s effective (1.66 MFLOP per padded LR "
           "pixel); that run used %.1f ms of CPU, %.1f GFLOP per CPU-second\n",
           be->device_name, h, w, best * 1e3, flop / best * 1e-9, best_cpu * 1e3, flop / best_cpu * 1e-9);
    be->destroy(be);
    free(in), free(out);
    rand_model_free(&m);
    return 0;
}

/* Planes 60 (k = 20, ELAN-light's attention width, which the AVX-512 kernels block for) on every path this CPU
   runs: each against the naive forward, and the paths against each other (they differ by FMA rounding). */
static void test_isa_paths_agree(void) {
    elan_model m;
    rand_model_init(&m, 60, 2, 1, 4);
    const int n = 1, h = 37, w = 53;
    const size_t nin = (size_t)n * 3 * h * w, nout = nin * 16;
    float *in = rand_floats(nin, 0.0f, 255.0f), *ref = naive_floats(nout), *got[3] = {NULL, NULL, NULL};
    naive_elan_forward(&m, in, n, h, w, ref);
    const int best = cpu_isa_best();
    for (int isa = 0; isa <= best; isa++) {
        setenv("ELANSR_CPU_ISA", cpu_isa_name(isa), 1);
        elansr_params p = cpu_params();
        elan_backend *be = NULL;
        CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_OK);
        if (!be) continue;
        CHECK_MSG(cpu_get_isa() == isa, "ELANSR_CPU_ISA=%s gave %s", cpu_isa_name(isa), cpu_isa_name(cpu_get_isa()));
        CHECK_MSG(strstr(be->device_name, cpu_isa_name(isa)) != NULL, "device name %s", be->device_name);
        got[isa] = naive_floats(nout);
        CHECK(be->forward(be, in, n, h, w, got[isa]) == ELANSR_OK);
        const double d = t_max_abs_diff(ref, got[isa], nout), d0 = t_max_abs_diff(got[0], got[isa], nout);
        printf("isa %s: planes 60 x4 %dx%d: max abs diff %.3g vs naive, %.3g vs generic\n", cpu_isa_name(isa), h, w, d, d0);
        CHECK_MSG(d <= TOL && d0 <= TOL, "isa %s: diff %g vs naive, %g vs generic", cpu_isa_name(isa), d, d0);
        be->destroy(be);
    }
    unsetenv("ELANSR_CPU_ISA");
    cpu_isa_select();
    for (int i = 0; i < 3; i++) free(got[i]);
    free(in), free(ref);
    rand_model_free(&m);
}

int main(int argc, char **argv) {
    t_seed(20220606);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc > 3 ? atoi(argv[2]) : 128, argc > 3 ? atoi(argv[3]) : 128);
    test_pad();
    /* Every op and the forward on every instruction-set path this CPU runs (simd.c), best first. */
    for (int isa = cpu_isa_best(); isa >= 0; isa--) {
        setenv("ELANSR_CPU_ISA", cpu_isa_name(isa), 1);
        CHECK(cpu_isa_select() == isa);
        printf("== path %s\n", cpu_isa_name(isa));
        test_conv();
        test_lfe();
        test_attention();
        test_gmsa();
        test_tail();
        test_forward();
    }
    unsetenv("ELANSR_CPU_ISA");
    cpu_isa_select();
    test_errors();
    test_isa_paths_agree();
    return test_finish("test_cpu_ops");
}
