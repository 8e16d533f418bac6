/* backend.h — what a compute backend provides. The context (elansr.c) owns one backend; everything above
   it (tiling, image conversion, the CLI) is backend-neutral, and a backend sees only the elan_model and
   float tensors. A backend does the whole forward of ELAN.md, padding and cropping included, so that a GPU
   backend can fuse them into its kernels. */
#ifndef ELANSR_BACKEND_H
#define ELANSR_BACKEND_H

#include "elansr.h"
#include "model.h"

typedef struct elan_backend elan_backend;
struct elan_backend {
    const char *name;           /* "cpu", "cuda" */
    char device_name[128];
    /* in: n x 3 x h x w host floats (0..255); out: n x 3 x (s*h) x (s*w) host floats, unclamped. */
    elansr_status (*forward)(elan_backend *be, const float *in, int n, int h, int w, float *out);
    void (*destroy)(elan_backend *be);
    /* Optional (NULL if unsupported): times `iters` forwards of n x 3 x h x w random inputs that already live
       where the backend computes (no host transfers), after `warmup` untimed ones, rotating among several input
       buffers so caches do not flatter; times_ms[i] gets iteration i (CUDA events on a GPU). *peak_bytes gets
       the backend's peak memory for this size (device memory on a GPU). */
    elansr_status (*benchmark)(elan_backend *be, int n, int h, int w, int warmup, int iters, double *times_ms,
                               size_t *peak_bytes);
};

elansr_status elan_cpu_backend_create(const elan_model *m, const elansr_params *p, elan_backend **out);
/* Defined in cuda/ when CUDA is compiled in, else a stub that returns ELANSR_ERR_UNSUPPORTED. */
elansr_status elan_cuda_backend_create(const elan_model *m, const elansr_params *p, elan_backend **out);
int elan_cuda_device_count(void);

/* Mirror extension used for padding (ELAN.md step 1). For 0 <= i < n it is i; past the end it reflects
   without repeating the edge (PyTorch 'reflect'), and keeps folding when the pad is longer than the image,
   which PyTorch refuses: the index walks back and forth over 0..n-1 with period 2(n-1); n = 1 repeats. */
static inline int elan_mirror_index(int i, int n) {
    if (n <= 1) return 0;
    int period = 2 * (n - 1);
    int j = i % period;
    if (j < 0) j += period;
    return j < n ? j : period - j;
}
/* Padded extent: the next multiple of m. */
static inline int elan_round_up(int v, int m) { return (v + m - 1) / m * m; }

#endif
