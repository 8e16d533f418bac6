/* gpu_backend.c — the CUDA backend against the naive reference (naive_elan.h) and the CPU backend: random small
   models at awkward sizes, batches and scales (each size run twice: eagerly, then from the CUDA graph the
   second forward captures), the real checkpoint in fp32 and tf32, fp16 and bf16 against the CPU backend
   (random model and checkpoint, with max and mean |diff| printed), refusal of sizes that cannot fit, the
   benchmark hook, and the creation errors. Outputs are NaN-poisoned before every forward so that an element
   the GPU forgets to write fails. Skips (77) when no CUDA GPU is present. */
#define _POSIX_C_SOURCE 200809L /* setenv */

#include "backend.h"
#include "common.h"
#include "naive_elan.h"
#include "rand_model.h"
#include "testutil.h"

#define TOL 1e-3
#define TOL_TF32 0.5
/* fp16 / bf16 against the fp32 CPU backend, on the 0..255 output scale. Set from the H100 run of 2026-11-24
   with 2-4x headroom: fp16 mean |diff| 0.002-0.009, max 0.05-0.09; bf16 (8-bit mantissa) mean 0.017-0.071,
   max 0.30-0.68. */
#define TOL_FP16_MEAN 0.03
#define TOL_BF16_MEAN 0.15
#define TOL_FP16_MAX 0.5
#define TOL_BF16_MAX 2.0

static elansr_params params(int device, elansr_precision prec) {
    elansr_params p;
    memset(&p, 0, sizeof p);
    p.device = device;
    p.precision = prec;
    return p;
}

static float *rand_floats(size_t n, float lo, float hi) {
    float *x = naive_floats(n);
    t_fill(x, n, lo, hi);
    return x;
}

/* One GPU forward into a poisoned buffer; returns max |got - ref| (NaN-propagating) and counts NaNs. */
static double gpu_run(elan_backend *be, const float *in, int n, int h, int w, const float *ref, float *got, size_t nout,
                      size_t *nan) {
    poison(got, nout);
    elansr_status st = be->forward(be, in, n, h, w, got);
    CHECK_MSG(st == ELANSR_OK, "%s forward %d x %dx%d: %s", be->device_name, n, h, w, elansr_last_error());
    *nan = count_nan(got, nout);
    return t_max_abs_diff(ref, got, nout);
}

static void test_random_models(void) {
    static const int configs[][3] = {/* planes, blocks, scale */ {60, 2, 4}, {24, 2, 2}, {30, 3, 3}, {15, 2, 4}};
    static const int sizes[][3] = {/* n, h, w */ {1, 1, 1}, {1, 37, 53}, {1, 250, 17}, {2, 37, 53}, {2, 5, 33}};
    for (size_t ci = 0; ci < sizeof configs / sizeof configs[0]; ci++) {
        const int C = configs[ci][0], nb = configs[ci][1], s = configs[ci][2];
        elan_model m;
        rand_model_init(&m, C, nb, 1, s);
        if (ci == 2) /* sub/add_mean need not be the identity */
            for (int i = 0; i < 9; i++) m.sub_mean.w[i] += t_uniform(-0.1f, 0.1f), m.add_mean.w[i] += t_uniform(-0.1f, 0.1f);
        elansr_params pc = params(ELANSR_DEVICE_CPU, ELANSR_PRECISION_FP32), pg = params(0, ELANSR_PRECISION_FP32);
        elan_backend *cpu = NULL, *gpu = NULL, *eager = NULL;
        CHECK_MSG(elan_cpu_backend_create(&m, &pc, &cpu) == ELANSR_OK, "cpu create: %s", elansr_last_error());
        CHECK_MSG(elan_cuda_backend_create(&m, &pg, &gpu) == ELANSR_OK, "gpu create: %s", elansr_last_error());
        if (ci == 0) { /* the same forward with graphs turned off must give the same bits */
            setenv("ELANSR_CUDA_GRAPHS", "0", 1);
            CHECK_MSG(elan_cuda_backend_create(&m, &pg, &eager) == ELANSR_OK, "gpu create: %s", elansr_last_error());
            unsetenv("ELANSR_CUDA_GRAPHS");
        }
        if (!cpu || !gpu) {
            if (cpu) cpu->destroy(cpu);
            if (gpu) gpu->destroy(gpu);
            if (eager) eager->destroy(eager);
            rand_model_free(&m);
            continue;
        }
        if (ci == 0) printf("device: %s\n", gpu->device_name);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si][0], h = sizes[si][1], w = sizes[si][2];
            const size_t nin = (size_t)n * 3 * h * w, nout = nin * s * s;
            float *in = rand_floats(nin, 0.0f, 255.0f), *ref = naive_floats(nout), *cref = naive_floats(nout);
            float *got = naive_floats(nout), *got2 = naive_floats(nout);
            naive_elan_forward(&m, in, n, h, w, ref);
            poison(cref, nout);
            CHECK_MSG(cpu->forward(cpu, in, n, h, w, cref) == ELANSR_OK, "cpu forward: %s", elansr_last_error());
            size_t nan1, nan2;
            const double d1 = gpu_run(gpu, in, n, h, w, ref, got, nout, &nan1);
            const double d2 = gpu_run(gpu, in, n, h, w, ref, got2, nout, &nan2); /* replayed from the graph */
            const double dc = t_max_abs_diff(cref, got, nout);
            const int same = memcmp(got, got2, nout * sizeof(float)) == 0;
            printf("planes %2d blocks %d x%d, %d x %3dx%-3d: max|gpu-naive| %.3g, graph %.3g (%s), max|gpu-cpu| %.3g, "
                   "unwritten %zu/%zu\n",
                   C, nb, s, n, h, w, d1, d2, same ? "same bits" : "differs", dc, nan1, nan2);
            CHECK_MSG(d1 <= TOL && d2 <= TOL && dc <= TOL && nan1 == 0 && nan2 == 0,
                      "planes %d x%d %d x %dx%d: naive %g, graph %g, cpu %g, unwritten %zu/%zu", C, s, n, h, w, d1, d2, dc,
                      nan1, nan2);
            if (eager) {
                size_t nan3;
                const double d3 = gpu_run(eager, in, n, h, w, ref, got2, nout, &nan3);
                gpu_run(eager, in, n, h, w, ref, got2, nout, &nan3);
                CHECK_MSG(d3 <= TOL && nan3 == 0, "eager: %g, %zu unwritten", d3, nan3);
                CHECK_MSG(memcmp(got, got2, nout * sizeof(float)) == 0, "eager launches differ from the graph backend");
            }
            free(in), free(ref), free(cref), free(got), free(got2);
        }
        cpu->destroy(cpu);
        gpu->destroy(gpu);
        if (eager) eager->destroy(eager);
        rand_model_free(&m);
    }
}

/* A crop of a real photo (Set5 LR) plus noise of +-4, like tools/reference.py's golden input. Uniform noise would
   not do for the real checkpoint: far outside what it was trained on, its attention turns so sharp that the last
   bit of a score flips which token wins, and even the CPU backend and the naive reference then differ by
   thousands. Returns NULL if the photo cannot be read. */
static float *photo_crop(int h, int w) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data/Set5/LR_x4/baby.png", t_shared_dir());
    elansr_image im;
    if (elansr_image_load(path, &im) != ELANSR_OK) return NULL;
    float *x = NULL;
    if (im.depth == 8 && im.channels >= 3 && im.height >= h && im.width >= w) {
        x = naive_floats((size_t)3 * h * w);
        const int y0 = (int)(t_next() % (uint64_t)(im.height - h + 1)), x0 = (int)(t_next() % (uint64_t)(im.width - w + 1));
        const unsigned char *px = (const unsigned char *)im.data;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    const float v = px[((size_t)(y0 + y) * im.width + x0 + xx) * im.channels + c] + t_uniform(-4.0f, 4.0f);
                    x[((size_t)c * h + y) * w + xx] = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
                }
    }
    elansr_image_free(&im);
    return x;
}

/* The shipped checkpoint, a 48x40 crop of a Set5 photo and the CPU fp32 output for it: the reference of the
   checkpoint tests. Returns 0 after a failed CHECK, with nothing left allocated. */
static int checkpoint_reference(elan_model *m, int h, int w, float **in, float **ref, size_t *nout) {
    memset(m, 0, sizeof *m);
    *in = *ref = NULL;
    if (elan_model_load(t_model_path(), m) != ELANSR_OK) {
        CHECK_MSG(0, "cannot load %s: %s", t_model_path(), elansr_last_error());
        return 0;
    }
    *nout = (size_t)3 * h * w * m->scale * m->scale;
    *in = photo_crop(h, w);
    *ref = naive_floats(*nout);
    elansr_params pc = params(ELANSR_DEVICE_CPU, ELANSR_PRECISION_FP32);
    elan_backend *cpu = NULL;
    int ok = 0;
    if (!*in)
        CHECK_MSG(0, "cannot read a %dx%d crop of %s/data/Set5/LR_x4/baby.png: %s", w, h, t_shared_dir(),
                  elansr_last_error());
    else if (elan_cpu_backend_create(m, &pc, &cpu) != ELANSR_OK)
        CHECK_MSG(0, "cpu create: %s", elansr_last_error());
    else {
        poison(*ref, *nout);
        ok = cpu->forward(cpu, *in, 1, h, w, *ref) == ELANSR_OK;
        CHECK_MSG(ok, "cpu forward: %s", elansr_last_error());
        cpu->destroy(cpu);
    }
    if (!ok) {
        free(*in), free(*ref);
        *in = *ref = NULL;
        elan_model_free(m);
    }
    return ok;
}

/* The shipped checkpoint: fp32 within TOL of the CPU backend, tf32 within TOL_TF32. */
static void test_checkpoint(void) {
    elan_model m;
    const int n = 1, h = 48, w = 40;
    float *in, *ref;
    size_t nout;
    if (!checkpoint_reference(&m, h, w, &in, &ref, &nout)) return;
    float *got = naive_floats(nout);
    /* DEFAULT is fp16 on a GPU: test_half checks it with the fp16 tolerances */
    static const elansr_precision precs[] = {ELANSR_PRECISION_FP32, ELANSR_PRECISION_TF32};
    for (int i = 0; i < 2; i++) {
        elansr_params pg = params(0, precs[i]);
        elan_backend *gpu = NULL;
        CHECK_MSG(elan_cuda_backend_create(&m, &pg, &gpu) == ELANSR_OK, "gpu create: %s", elansr_last_error());
        if (!gpu) continue;
        const double tol = precs[i] == ELANSR_PRECISION_TF32 ? TOL_TF32 : TOL;
        for (int rep = 0; rep < 2; rep++) {
            size_t nan;
            const double d = gpu_run(gpu, in, n, h, w, ref, got, nout, &nan);
            printf("checkpoint %dx%d %s%s: max|gpu-cpu| %.3g (tolerance %g), unwritten %zu\n", h, w,
                   precs[i] == ELANSR_PRECISION_TF32 ? "tf32" : "fp32",
                   rep ? " (graph)" : "", d, tol, nan);
            CHECK_MSG(d <= tol && nan == 0, "checkpoint precision %d: %g, %zu unwritten", (int)precs[i], d, nan);
        }
        gpu->destroy(gpu);
    }
    free(in), free(ref), free(got);
    elan_model_free(&m);
}

static double mean_abs_diff(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - (double)b[i]);
    return n ? s / (double)n : 0.0;
}

/* One fp16/bf16 comparison: runs the GPU twice (eager, then the graph), against the fp32 reference ref.
   Returns 1 when it passed. */
static int half_compare(elan_backend *gpu, const char *what, elansr_precision prec, const float *in, int n, int h, int w,
                        const float *ref, size_t nout) {
    float *got = naive_floats(nout), *got2 = naive_floats(nout);
    size_t nan1, nan2;
    const double mx = gpu_run(gpu, in, n, h, w, ref, got, nout, &nan1);
    const double mx2 = gpu_run(gpu, in, n, h, w, ref, got2, nout, &nan2);
    const double mean = mean_abs_diff(ref, got, nout);
    const int same = memcmp(got, got2, nout * sizeof(float)) == 0;
    const double tmax = prec == ELANSR_PRECISION_FP16 ? TOL_FP16_MAX : TOL_BF16_MAX;
    const double tmean = prec == ELANSR_PRECISION_FP16 ? TOL_FP16_MEAN : TOL_BF16_MEAN;
    const char *pn = prec == ELANSR_PRECISION_FP16 ? "fp16" : "bf16";
    printf("%s %s, %d x %3dx%-3d: max|gpu-cpu| %.4g mean %.4g (tolerance %g / %g), graph max %.4g (%s), unwritten "
           "%zu/%zu\n",
           pn, what, n, h, w, mx, mean, tmax, tmean, mx2, same ? "same bits" : "differs", nan1, nan2);
    const int ok = mx <= tmax && mx2 <= tmax && mean <= tmean && nan1 == 0 && nan2 == 0 && same;
    CHECK_MSG(ok, "%s %s %d x %dx%d: max %g, graph %g, mean %g, unwritten %zu/%zu, graph %s", pn, what, n, h, w, mx, mx2,
              mean, nan1, nan2, same ? "same bits" : "differs");
    free(got), free(got2);
    return ok;
}

/* fp16 and bf16 against the fp32 CPU backend: random models (k = 20 takes the vectorised attention loads,
   k = 10 the scalar ones; 48 planes run the half residual stream and the tensor-core tail at scales 2 and 3,
   60 planes at 4) at awkward sizes and a batch, then the real checkpoint on a photo crop; and the benchmark
   hook in both. */
static void test_half(void) {
    static const elansr_precision precs[] = {ELANSR_PRECISION_FP16, ELANSR_PRECISION_BF16};
    static const int configs[][3] = {/* planes, blocks, scale */ {60, 2, 4}, {30, 2, 3}, {48, 2, 2}, {48, 2, 3}};
    static const int sizes[][3] = {/* n, h, w */ {1, 37, 53}, {1, 250, 17}, {2, 37, 53}};
    for (size_t ci = 0; ci < sizeof configs / sizeof configs[0]; ci++) {
        const int C = configs[ci][0], nb = configs[ci][1], s = configs[ci][2];
        elan_model m;
        rand_model_init(&m, C, nb, 1, s);
        elansr_params pc = params(ELANSR_DEVICE_CPU, ELANSR_PRECISION_FP32);
        elan_backend *cpu = NULL;
        CHECK_MSG(elan_cpu_backend_create(&m, &pc, &cpu) == ELANSR_OK, "cpu create: %s", elansr_last_error());
        elan_backend *gpus[2] = {NULL, NULL};
        for (int pi = 0; pi < 2; pi++) {
            elansr_params pg = params(0, precs[pi]);
            CHECK_MSG(elan_cuda_backend_create(&m, &pg, &gpus[pi]) == ELANSR_OK, "gpu create (precision %d): %s",
                      (int)precs[pi], elansr_last_error());
        }
        for (size_t si = 0; cpu && si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si][0], h = sizes[si][1], w = sizes[si][2];
            const size_t nin = (size_t)n * 3 * h * w, nout = nin * s * s;
            float *in = rand_floats(nin, 0.0f, 255.0f), *ref = naive_floats(nout);
            poison(ref, nout);
            CHECK_MSG(cpu->forward(cpu, in, n, h, w, ref) == ELANSR_OK, "cpu forward: %s", elansr_last_error());
            char what[64];
            snprintf(what, sizeof what, "random planes %d blocks %d x%d", C, nb, s);
            for (int pi = 0; pi < 2; pi++)
                if (gpus[pi]) half_compare(gpus[pi], what, precs[pi], in, n, h, w, ref, nout);
            free(in), free(ref);
        }
        if (ci == 0)
            for (int pi = 0; pi < 2; pi++) {
                if (!gpus[pi]) continue;
                double times[4];
                size_t peak = 0;
                elansr_status st = gpus[pi]->benchmark(gpus[pi], 1, 64, 64, 1, 4, times, &peak);
                CHECK_MSG(st == ELANSR_OK, "%s benchmark: %s", pi ? "bf16" : "fp16", elansr_last_error());
                if (st == ELANSR_OK)
                    printf("%s benchmark 1 x 64x64: %.3f ms, peak %.1f MiB\n", pi ? "bf16" : "fp16", times[3],
                           peak / 1048576.0);
            }
        for (int pi = 0; pi < 2; pi++)
            if (gpus[pi]) gpus[pi]->destroy(gpus[pi]);
        if (cpu) cpu->destroy(cpu);
        rand_model_free(&m);
    }

    elan_model m;
    const int n = 1, h = 48, w = 40;
    float *in, *ref;
    size_t nout;
    if (!checkpoint_reference(&m, h, w, &in, &ref, &nout)) return;
    /* fp16 and bf16; DEFAULT, which is fp16 on a GPU; both with the fused kernels turned off (ELANSR_CUDA_FUSED=0,
       read at creation), so that the unfused path stays tested; and the non-default choices of the fused path:
       the residual stream in fp32 (ELANSR_CUDA_HALF_X=0), project_inp as its own kernel (ELANSR_CUDA_FUSED_ATTN=0),
       attention and project_out as two kernels in every block (ELANSR_CUDA_GMSA=split) or in shifted blocks only
       (=unshifted), the whole GMSA as a persistent kernel (ELANSR_CUDA_GMSA_PERSIST=1), reusing GMSAs with their
       own running maximum (ELANSR_CUDA_ATTN_KM=0),
       the LFE's mma.sync path, which sm_90a builds take only when asked (ELANSR_CUDA_LFE_WG=0; the default
       kernel in builds without sm_90a), the fp32 tail after a conversion of the half stream instead of the tensor-core one
       (ELANSR_CUDA_TAIL=simt) */
    static const struct {
        elansr_precision prec, as;
        const char *env, *val;
        const char *what;
    } runs[] = {{ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, NULL, NULL, "checkpoint"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, NULL, NULL, "checkpoint"},
                {ELANSR_PRECISION_DEFAULT, ELANSR_PRECISION_FP16, NULL, NULL, "checkpoint, default precision"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_FUSED", "0", "checkpoint, unfused"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_FUSED", "0", "checkpoint, unfused"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_HALF_X", "0", "checkpoint, fp32 residual"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_HALF_X", "0", "checkpoint, fp32 residual"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_FUSED_ATTN", "0", "checkpoint, separate project_inp"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_GMSA", "split", "checkpoint, split GMSA"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_GMSA", "split", "checkpoint, split GMSA"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_GMSA", "unshifted", "checkpoint, shifted GMSA split"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_ATTN_KM", "0", "checkpoint, reusing GMSA's own max"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_LFE_WG", "0", "checkpoint, LFE on mma.sync"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_LFE_WG", "0", "checkpoint, LFE on mma.sync"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_GMSA_PERSIST", "1", "checkpoint, persistent GMSA"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_GMSA_PERSIST", "1", "checkpoint, persistent GMSA"},
                {ELANSR_PRECISION_FP16, ELANSR_PRECISION_FP16, "ELANSR_CUDA_TAIL", "simt", "checkpoint, fp32 tail"},
                {ELANSR_PRECISION_BF16, ELANSR_PRECISION_BF16, "ELANSR_CUDA_TAIL", "simt", "checkpoint, fp32 tail"}};
    for (size_t ri = 0; ri < sizeof runs / sizeof runs[0]; ri++) {
        elansr_params pg = params(0, runs[ri].prec);
        elan_backend *gpu = NULL;
        if (runs[ri].env) setenv(runs[ri].env, runs[ri].val, 1);
        CHECK_MSG(elan_cuda_backend_create(&m, &pg, &gpu) == ELANSR_OK, "gpu create: %s", elansr_last_error());
        if (runs[ri].env) unsetenv(runs[ri].env);
        if (!gpu) continue;
        half_compare(gpu, runs[ri].what, runs[ri].as, in, n, h, w, ref, nout);
        gpu->destroy(gpu);
    }
    free(in), free(ref);
    elan_model_free(&m);
}

/* Sizes that cannot fit are refused with ELANSR_ERR_NOMEM, and the backend keeps working afterwards. */
static void test_limits_and_bench(void) {
    elan_model m;
    rand_model_init(&m, 60, 2, 1, 4);
    elansr_params pg = params(0, ELANSR_PRECISION_FP32), pc = params(ELANSR_DEVICE_CPU, ELANSR_PRECISION_FP32);
    elan_backend *gpu = NULL, *cpu = NULL;
    CHECK_MSG(elan_cuda_backend_create(&m, &pg, &gpu) == ELANSR_OK, "gpu create: %s", elansr_last_error());
    CHECK_MSG(elan_cpu_backend_create(&m, &pc, &cpu) == ELANSR_OK, "cpu create: %s", elansr_last_error());
    if (!gpu || !cpu) {
        if (gpu) gpu->destroy(gpu);
        if (cpu) cpu->destroy(cpu);
        rand_model_free(&m);
        return;
    }
    const int h = 37, w = 29, s = 4;
    const size_t nin = (size_t)3 * h * w, nout = nin * s * s;
    float *in = rand_floats(nin, 0.0f, 255.0f), *ref = naive_floats(nout), *got = naive_floats(nout);
    CHECK(cpu->forward(cpu, in, 1, h, w, ref) == ELANSR_OK);
    size_t nan;
    double d = gpu_run(gpu, in, 1, h, w, ref, got, nout, &nan);
    CHECK_MSG(d <= TOL && nan == 0, "before: %g", d);

    double times[8];
    size_t peak = 0;
    /* more pixels than one GEMM call can take */
    elansr_status st = gpu->benchmark(gpu, 64, 8192, 8192, 0, 1, times, &peak);
    printf("benchmark 64 x 8192x8192: %s: %s\n", elansr_status_string(st), elansr_last_error());
    CHECK(st == ELANSR_ERR_NOMEM || st == ELANSR_ERR_ARG);
    /* the backend refuses before touching the (here far too small) buffers */
    float dummy[4] = {0, 0, 0, 0};
    st = gpu->forward(gpu, dummy, 64, 8192, 8192, dummy);
    printf("forward 64 x 8192x8192: %s: %s\n", elansr_status_string(st), elansr_last_error());
    CHECK(st == ELANSR_ERR_NOMEM || st == ELANSR_ERR_ARG);
    /* a size whose allocation cudaMalloc itself refuses (~0.5 TB) */
    st = gpu->benchmark(gpu, 1, 16384, 16384, 0, 1, times, &peak);
    printf("benchmark 1 x 16384x16384: %s: %s\n", elansr_status_string(st), elansr_last_error());
    CHECK(st == ELANSR_ERR_NOMEM);
    st = gpu->forward(gpu, dummy, 1, 16384, 16384, dummy);
    printf("forward 1 x 16384x16384: %s: %s\n", elansr_status_string(st), elansr_last_error());
    CHECK(st == ELANSR_ERR_NOMEM);
    d = gpu_run(gpu, in, 1, h, w, ref, got, nout, &nan);
    printf("forward after the refusals: max|gpu-cpu| %.3g, unwritten %zu\n", d, nan);
    CHECK_MSG(d <= TOL && nan == 0, "after: %g, %zu unwritten", d, nan);

    static const int bsizes[][3] = {{1, 64, 64}, {2, 37, 53}, {1, 128, 96}};
    for (int i = 0; i < 3; i++) {
        const int iters = 8;
        for (int t = 0; t < iters; t++) times[t] = -1.0;
        peak = 0;
        st = gpu->benchmark(gpu, bsizes[i][0], bsizes[i][1], bsizes[i][2], 2, iters, times, &peak);
        CHECK_MSG(st == ELANSR_OK, "benchmark: %s", elansr_last_error());
        double mn = 1e300, mx = 0;
        for (int t = 0; t < iters; t++) mn = times[t] < mn ? times[t] : mn, mx = times[t] > mx ? times[t] : mx;
        printf("benchmark %d x %dx%d: %.3f..%.3f ms, peak %.1f MiB\n", bsizes[i][0], bsizes[i][1], bsizes[i][2], mn, mx,
               peak / 1048576.0);
        CHECK_MSG(st != ELANSR_OK || (mn > 0.0 && peak > 0), "benchmark times %g..%g, peak %zu", mn, mx, peak);
    }
    /* a forward after benchmarks at other sizes re-plans and still matches */
    d = gpu_run(gpu, in, 1, h, w, ref, got, nout, &nan);
    CHECK_MSG(d <= TOL && nan == 0, "after benchmark: %g, %zu unwritten", d, nan);

    free(in), free(ref), free(got);
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    rand_model_free(&m);
}

static void test_create_errors(void) {
    elan_model m;
    rand_model_init(&m, 15, 2, 1, 2);
    const int count = elan_cuda_device_count();
    elan_backend *be = (elan_backend *)&m; /* must come back NULL */
    elansr_params p = params(count, ELANSR_PRECISION_FP32);
    elansr_status st = elan_cuda_backend_create(&m, &p, &be);
    printf("GPU %d of %d: %s: %s\n", count, count, elansr_status_string(st), elansr_last_error());
    CHECK(st == ELANSR_ERR_DEVICE && be == NULL && strstr(elansr_last_error(), "requested"));
    static const elansr_precision halfs[] = {ELANSR_PRECISION_FP16, ELANSR_PRECISION_BF16};
    for (int i = 0; i < 2; i++) {
        p = params(0, halfs[i]);
        be = NULL;
        st = elan_cuda_backend_create(&m, &p, &be);
        printf("%s: %s%s%s\n", i ? "bf16" : "fp16", elansr_status_string(st), st ? ": " : "", st ? elansr_last_error() : "");
        CHECK(st == ELANSR_OK && be != NULL);
        if (be) be->destroy(be);
    }
    p = params(0, (elansr_precision)99);
    be = (elan_backend *)&m;
    st = elan_cuda_backend_create(&m, &p, &be);
    CHECK(st == ELANSR_ERR_ARG && be == NULL);
    rand_model_free(&m);
}

int main(void) {
    if (elan_cuda_device_count() == 0) {
        printf("gpu_backend: SKIPPED: no CUDA GPU present\n");
        return TEST_SKIP_CODE;
    }
    t_seed(20221023);
    test_create_errors();
    test_random_models();
    test_checkpoint();
    test_half();
    test_limits_and_bench();
    return test_finish("gpu_backend");
}
