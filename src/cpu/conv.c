/* conv.c — the packed-tile GEMM that every convolution of the CPU backend is (see cpu_ops.h): packing, the
   loop over the image in strips of CPU_STRIP pixels, and the portable micro-kernel (the AVX2 and AVX-512 ones,
   picked at run time, are in simd.c).

   out[m][j] = bias[m] + sum_k wt[k][m] * xt[k][j] for one tile of CPU_TW = 16 pixels. The pixels are the
   vector dimension and each weight is a scalar broadcast, so the loops vectorize in portable C. CPU_MR = 3
   output rows x 16 pixels = 12 SSE accumulators, which fit the 16 registers. The inner loop is written as
   4 unrolled groups (#pragma GCC unroll) of one 4-wide simd loop each: with GCC 12 and 13 that is the only
   form we found that keeps the accumulators in registers at both -O2 and -O3. A plain 16-wide simd loop keeps
   them on the stack at -O2 (~30% slower); fully unrolling it instead makes -O3 vectorize the k loop across
   rows, 5x slower. Weights are a K x ldw matrix (the outputs contiguous), the layout the wide kernels of
   simd.c want too. When fewer than 3 rows remain, the missing rows repeat a real row's weights and are not
   stored. This kernel is the path for CPUs without AVX2 (simd.c picks the kernel at run time). */
#include "cpu_ops.h"

#include <stdlib.h>
#include <string.h>

size_t cpu_plane_stride(int H, int W) {
    size_t hw;
    if (!elansr_mul_size((size_t)H, (size_t)W, &hw) || hw > SIZE_MAX / 2) return 0;
    /* A multiple of 4 KiB plus one cache line: consecutive planes fall in consecutive L1 sets. */
    return (hw + 1023) / 1024 * 1024 + 16;
}

elansr_status cpu_conv_init(cpu_conv *cv, const elan_conv *src, const int *shift_tap, const char *name) {
    memset(cv, 0, sizeof *cv);
    if (src->k != 1 && src->k != 3)
        return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %s has kernel size %d (1 or 3 expected)", name, src->k);
    if (src->cin < 1 || src->cout < 1 || !src->w || !src->b)
        return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %s is empty", name);
    const int kk = src->k * src->k;
    cv->cin = src->cin;
    cv->cout = src->cout;
    cv->K = src->cin * kk;
    const int mp = (src->cout + CPU_MR - 1) / CPU_MR * CPU_MR;
    cv->ldw = mp;
    size_t nw;
    if (!elansr_mul_size((size_t)cv->K, (size_t)mp, &nw)) return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: %s is too large", name);
    cv->wt = elansr_calloc_array(nw, sizeof(float));
    cv->bias = elansr_calloc_array((size_t)mp, sizeof(float));
    cv->chan = elansr_malloc_array((size_t)cv->K, sizeof(int));
    cv->tap = elansr_malloc_array((size_t)cv->K, 1);
    if (!cv->wt || !cv->bias || !cv->chan || !cv->tap) {
        cpu_conv_free(cv);
        return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes for the weights of %s",
                           nw * sizeof(float), name);
    }
    for (int m = 0; m < cv->cout; m++) {
        cv->bias[m] = src->b[m];
        for (int k = 0; k < cv->K; k++)
            cv->wt[(size_t)k * mp + m] = src->w[(size_t)m * cv->K + k];
    }
    for (int k = 0; k < cv->K; k++) {
        const int c = k / kk;
        int t = src->k == 3 ? k % kk : 4;
        if (shift_tap) {
            if (shift_tap[c] < 0 || shift_tap[c] > 8) {
                cpu_conv_free(cv);
                return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %s: shift tap %d of channel %d", name, shift_tap[c], c);
            }
            t = shift_tap[c];
        }
        cv->chan[k] = c;
        cv->tap[k] = (unsigned char)t;
    }
    cv->direct = 1;
    for (int k = 0; k < cv->K; k++) cv->direct &= cv->tap[k] == 4 && cv->chan[k] == k;
    return ELANSR_OK;
}

void cpu_conv_free(cpu_conv *cv) {
    free(cv->wt);
    free(cv->bias);
    free(cv->chan);
    free(cv->tap);
    memset(cv, 0, sizeof *cv);
}

size_t cpu_conv_scratch(const cpu_conv *cv) { return (size_t)cv->K * CPU_STRIP; }

/* The full-tile case has a constant trip count so that it vectorizes at -O2 too (GCC 12's -O2 cost model
   vectorizes no loop that needs a scalar epilogue). */
static inline void store_row(const float *restrict acc, float *restrict out, int nvalid, int mode) {
    if (nvalid == CPU_TW) {
        if (mode == CPU_ADD) {
            for (int j = 0; j < CPU_TW; j++) out[j] += acc[j];
        } else if (mode == CPU_RELU) {
            for (int j = 0; j < CPU_TW; j++) out[j] = acc[j] > 0.0f ? acc[j] : 0.0f;
        } else {
            for (int j = 0; j < CPU_TW; j++) out[j] = acc[j];
        }
        return;
    }
    for (int j = 0; j < nvalid; j++) {
        const float a = acc[j];
        out[j] = mode == CPU_ADD ? out[j] + a : (mode == CPU_RELU && !(a > 0.0f)) ? 0.0f : a;
    }
}

void cpu_gemm_tile(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x, size_t ldx,
                   float *out, size_t ldo, int nvalid, int mode) {
    for (int m0 = 0; m0 < M; m0 += CPU_MR) {
        const int rows = M - m0 < CPU_MR ? M - m0 : CPU_MR;
        const int o1 = rows > 1 ? 1 : 0, o2 = rows > 2 ? 2 : 0;
        const float *restrict w = wt + m0;
        float a0[CPU_TW], a1[CPU_TW], a2[CPU_TW];
        const float b0 = bias ? bias[m0] : 0.0f, b1 = bias ? bias[m0 + o1] : 0.0f, b2 = bias ? bias[m0 + o2] : 0.0f;
        for (int j = 0; j < CPU_TW; j++) {
            a0[j] = b0;
            a1[j] = b1;
            a2[j] = b2;
        }
        for (int k = 0; k < K; k++) {
            const float *restrict wk = w + (size_t)k * ldw;
            const float w0 = wk[0], w1 = wk[o1], w2 = wk[o2];
            const float *restrict xk = x + (size_t)k * ldx;
#pragma GCC unroll 4
            for (int v = 0; v < CPU_TW / 4; v++) {
#pragma omp simd
                for (int l = 0; l < 4; l++) {
                    const int j = 4 * v + l;
                    a0[j] += w0 * xk[j];
                    a1[j] += w1 * xk[j];
                    a2[j] += w2 * xk[j];
                }
            }
        }
        store_row(a0, out + (size_t)m0 * ldo, nvalid, mode);
        if (rows > 1) store_row(a1, out + (size_t)(m0 + 1) * ldo, nvalid, mode);
        if (rows > 2) store_row(a2, out + (size_t)(m0 + 2) * ldo, nvalid, mode);
    }
}

/* Packs `width` pixels from x0 of row y into rows of ld floats. */
static void pack_rows(const cpu_conv *cv, const float *in, size_t ps, int H, int W, int y, int x0, int width, int ld,
                      float *xt) {
    for (int k = 0; k < cv->K; k++) {
        float *restrict d = xt + (size_t)k * ld;
        const int t = cv->tap[k], yy = y + t / 3 - 1, xs = x0 + t % 3 - 1;
        if (yy < 0 || yy >= H) {
            memset(d, 0, (size_t)width * sizeof(float));
            continue;
        }
        const float *restrict s = in + (size_t)cv->chan[k] * ps + (size_t)yy * W;
        if (xs >= 0 && xs + width <= W) {
            memcpy(d, s + xs, (size_t)width * sizeof(float));
        } else {
            for (int j = 0; j < width; j++) d[j] = (xs + j >= 0 && xs + j < W) ? s[xs + j] : 0.0f;
        }
    }
}

void cpu_pack_tile(const cpu_conv *cv, const float *in, size_t ps, int H, int W, int y, int x0, float *xt) {
    pack_rows(cv, in, ps, H, W, y, x0, CPU_TW, CPU_TW, xt);
}

/* The image goes in strips of CPU_STRIP pixels of one row (4 tiles): packing a strip reads 256 contiguous bytes
   of each input plane instead of 64, and the strip's tiles write 256 contiguous bytes of each output plane,
   which with 60-180 planes per conv is what decides the speed (page walks and prefetch streams per byte), the
   FMAs themselves running near peak. The packed strip (K x 64 floats, at most 30 KiB for K = 120) stays in L1
   while its 4 tiles are multiplied. */
void cpu_conv_apply(const cpu_conv *cv, const float *in, size_t ps_in, float *out, size_t ps_out, int H, int W,
                    int mode, float *scratch, size_t sstride, int nt) {
    const int nsx = (W + CPU_STRIP - 1) / CPU_STRIP;
    const long nstrips = (long)H * nsx;
    const cpu_gemm_fn gemm = cpu_gemm_for(cpu_get_isa()), gemm2 = cpu_gemm2_for(cpu_get_isa());
    /* Dynamic chunks of 2 strips (tens of microseconds each): on a shared machine a static split waits for
       whichever thread the OS preempted. Every output element is computed by one thread in a fixed order, so
       the result does not depend on the schedule. */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 2)
    for (long t = 0; t < nstrips; t++) {
        float *xt = scratch + (size_t)cpu_thread_id() * sstride;
        const int y = (int)(t / nsx), x0 = (int)(t % nsx) * CPU_STRIP;
        const int width = W - x0 < CPU_STRIP ? W - x0 : CPU_STRIP;
        const int wpad = (width + CPU_TW - 1) / CPU_TW * CPU_TW;
        /* A plain 1x1 conv reads its input rows straight from the planes (row k of the strip at
           in + k * ps_in + y * W + x0); a partial last tile reads at most 15 floats past the row, which the
           plane stride keeps inside the plane (cpu_plane_stride) and which are never stored. */
        const float *xs = xt;
        size_t ldx = CPU_STRIP;
        if (cv->direct) {
            xs = in + (size_t)y * W + x0;
            ldx = ps_in;
        } else {
            pack_rows(cv, in, ps_in, H, W, y, x0, wpad, CPU_STRIP, xt);
        }
        int j0 = 0;
        if (gemm2)
            for (; j0 + 2 * CPU_TW <= width; j0 += 2 * CPU_TW)
                gemm2(cv->cout, cv->K, cv->wt, (size_t)cv->ldw, cv->bias, xs + j0, ldx, out + (size_t)y * W + x0 + j0,
                      ps_out, 2 * CPU_TW, mode);
        for (; j0 < width; j0 += CPU_TW) {
            const int nvalid = width - j0 < CPU_TW ? width - j0 : CPU_TW;
            gemm(cv->cout, cv->K, cv->wt, (size_t)cv->ldw, cv->bias, xs + j0, ldx, out + (size_t)y * W + x0 + j0,
                 ps_out, nvalid, mode);
        }
    }
}
