/* test_golden.c — the whole network against PyTorch. tools/reference.py (our PyTorch implementation of
   ELAN.md) writes, at test time, a random input and the activations after the head, after blocks 0 and 1 and
   the output, computed with torch on the CPU in fp32 from the real checkpoint (the input: random crops of a Set5 image plus noise). This test loads the same
   checkpoint with our loader and compares: the naive reference step by step (so a loader or op error shows
   where it starts), then the CPU backend's output, and the CUDA backend's when a GPU is present.
   Skips (77) when python3 cannot import torch. */
#define _POSIX_C_SOURCE 200809L
#include "naive_elan.h"
#include "testutil.h"

#include "backend.h"
#include "common.h"
#include "model.h"

typedef struct {
    int ndim, dims[8];
    size_t n;
    float *data;
} elt;

static int read_elt(const char *path, elt *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "ELT1", 4) && fread(&t->ndim, 4, 1, f) == 1 &&
             t->ndim > 0 && t->ndim <= 8 && fread(t->dims, 4, (size_t)t->ndim, f) == (size_t)t->ndim;
    if (ok) {
        t->n = 1;
        for (int i = 0; i < t->ndim; i++) t->n *= (size_t)t->dims[i];
        t->data = malloc(t->n * sizeof(float));
        ok = t->data && fread(t->data, sizeof(float), t->n, f) == t->n;
    }
    fclose(f);
    return ok;
}

/* max |a - b| against tol_abs + 2e-6 * max|ref| (fp32 rounding grows with the activations' size), printed. */
static double compare(const char *what, const float *a, const float *ref, size_t n, double tol_abs) {
    double d = t_max_abs_diff(a, ref, n), mag = 0;
    for (size_t i = 0; i < n; i++) mag = fmax(mag, fabs(ref[i]));
    tol_abs += 2e-6 * mag;
    printf("  %-28s max|diff| %.3e  (max|ref| %.1f, tolerance %.1e)\n", what, d, mag, tol_abs);
    CHECK_MSG(d <= tol_abs, "%s: %.3e > %.1e", what, d, tol_abs);
    return d;
}

int main(void) {
    if (system("python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        printf("test_golden: SKIPPED: python3 cannot import torch (run tools/setup.sh --python)\n");
        return TEST_SKIP_CODE;
    }
    char dir[4096], cmd[16384], path[4200];
    snprintf(dir, sizeof dir, "%s/golden", t_tmp_dir());
    snprintf(cmd, sizeof cmd, "python3 '%s/tools/reference.py' --model '%s' golden --out '%s' --size 37x53 --batch 2 --seed 7",
             ELANSR_SOURCE_DIR, t_model_path(), dir);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
    elt in, head, b0, b1, out;
    const char *names[] = {"input", "head", "block0", "block1", "output"};
    elt *ts[] = {&in, &head, &b0, &b1, &out};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s.elt", dir, names[i]);
        CHECK_MSG(read_elt(path, ts[i]), "cannot read %s", path);
    }
    elan_model m;
    memset(&m, 0, sizeof m);
    if (t_failures || elan_model_load(t_model_path(), &m) != ELANSR_OK) {
        fprintf(stderr, "test_golden: setup failed: %s\n", elansr_last_error());
        return 1;
    }
    const int n = in.dims[0], h = in.dims[2], w = in.dims[3], C = m.planes, s = m.scale;
    const int Hp = elan_round_up(h, 16), Wp = elan_round_up(w, 16);
    const size_t hw = (size_t)Hp * Wp;
    CHECK(head.dims[1] == C && head.dims[2] == Hp && head.dims[3] == Wp);
    printf("test_golden: input %dx%d batch %d (padded %dx%d)\n", h, w, n, Hp, Wp);

    /* naive reference, step by step, image 0 */
    float *pad = naive_floats(3 * hw), *xin = naive_floats(3 * hw), *x = naive_floats((size_t)C * hw);
    naive_pad(in.data, 3, h, w, pad, Hp, Wp);
    naive_conv(&m.sub_mean, pad, Hp, Wp, xin);
    naive_conv(&m.head, xin, Hp, Wp, x);
    compare("naive head", x, head.data, (size_t)C * hw, 1e-3);
    naive_block(&m.blocks[0], x, C, Hp, Wp, m.windows);
    compare("naive block 0", x, b0.data, (size_t)C * hw, 2e-3);
    naive_block(&m.blocks[1], x, C, Hp, Wp, m.windows);
    compare("naive block 1", x, b1.data, (size_t)C * hw, 2e-3);

    const size_t osz = (size_t)n * 3 * h * s * w * s;
    float *y = naive_floats(osz);
    naive_elan_forward(&m, in.data, n, h, w, y);
    compare("naive output", y, out.data, osz, 1e-3);

    elansr_params p = elansr_default_params();
    p.device = ELANSR_DEVICE_CPU;
    elan_backend *be = NULL;
    CHECK(elan_cpu_backend_create(&m, &p, &be) == ELANSR_OK);
    if (be) {
        for (size_t i = 0; i < osz; i++) y[i] = NAN;
        CHECK(be->forward(be, in.data, n, h, w, y) == ELANSR_OK);
        compare("cpu backend output", y, out.data, osz, 1e-3);
        be->destroy(be);
    }
    if (elan_cuda_device_count() > 0) {
        p.device = 0;
        p.precision = ELANSR_PRECISION_FP32; /* the GPU default is fp16, whose error this tolerance does not take */
        be = NULL;
        CHECK(elan_cuda_backend_create(&m, &p, &be) == ELANSR_OK);
        if (be) {
            for (size_t i = 0; i < osz; i++) y[i] = NAN;
            CHECK(be->forward(be, in.data, n, h, w, y) == ELANSR_OK);
            compare("cuda backend output (fp32)", y, out.data, osz, 1e-3);
            be->destroy(be);
        }
    } else {
        printf("  cuda backend: no GPU present, not compared\n");
    }
    free(pad);
    free(xin);
    free(x);
    free(y);
    for (int i = 0; i < 5; i++) free(ts[i]->data);
    elan_model_free(&m);
    return test_finish("test_golden");
}
