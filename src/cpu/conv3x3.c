/* conv3x3.c — the two ends of the network around the body: input padding + sub_mean before the head, and
   tail + PixelShuffle + add_mean + crop after it (the head itself is a plain cpu_conv_apply).

   Padding: the input is reflected up to the padded size (ELAN.md step 1) and sub_mean is applied in the same
   pass, because the head's zero padding must surround the mean-shifted image, not the raw one.
   Tail: only the LR pixels that survive the final crop (y < h, x < w) are computed; the 3x3 window still reads
   the mirrored pixels beyond them, with zero padding at the padded image's edge, exactly as the full-size
   conv followed by the crop would. Each tile's 3*s*s outputs go straight to their s x s output positions
   with add_mean applied, so neither the shuffled image nor the padded SR image is ever stored. */
#include "backend.h"
#include "cpu_ops.h"


void cpu_input_pad(const float *in, int h, int w, const float *sm_w, const float *sm_b, float *out, size_t ps,
                   int Hp, int Wp, int nt) {
    const size_t hw = (size_t)h * w;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int y = 0; y < Hp; y++) {
        const float *row = in + (size_t)elan_mirror_index(y, h) * w;
        float *o = out + (size_t)y * Wp;
        for (int x = 0; x < Wp; x++) {
            const int sx = x < w ? x : elan_mirror_index(x, w);
            const float r = row[sx], g = row[hw + sx], b = row[2 * hw + sx];
            for (int c = 0; c < 3; c++) o[c * ps + x] = sm_b[c] + sm_w[c * 3] * r + sm_w[c * 3 + 1] * g + sm_w[c * 3 + 2] * b;
        }
    }
}

size_t cpu_tail_scratch(const cpu_conv *tail) {
    return cpu_conv_scratch(tail) + (size_t)(tail->cout + CPU_MR) * CPU_TW;
}

void cpu_tail(const cpu_conv *tail, int s, const float *am_w, const float *am_b, const float *x, size_t ps,
              int Hp, int Wp, int h, int w, float *out, float *scratch, size_t sstride, int nt) {
    const int ntx = (w + CPU_TW - 1) / CPU_TW, ss = s * s;
    const long ntiles = (long)h * ntx;
    const cpu_gemm_fn gemm = cpu_gemm_for(cpu_get_isa());
    const size_t ow = (size_t)w * s, oplane = ow * (size_t)h * s;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4)
    for (long t = 0; t < ntiles; t++) {
        float *xt = scratch + (size_t)cpu_thread_id() * sstride;
        float *acc = xt + cpu_conv_scratch(tail);
        const int y = (int)(t / ntx), x0 = (int)(t % ntx) * CPU_TW;
        const int nvalid = w - x0 < CPU_TW ? w - x0 : CPU_TW;
        cpu_pack_tile(tail, x, ps, Hp, Wp, y, x0, xt);
        gemm(tail->cout, tail->K, tail->wt, (size_t)tail->ldw, tail->bias, xt, CPU_TW, acc, CPU_TW, CPU_TW,
             CPU_STORE);
        for (int i = 0; i < s; i++) {
            for (int jj = 0; jj < s; jj++) {
                const float *a0 = acc + (size_t)(i * s + jj) * CPU_TW;
                const float *a1 = a0 + (size_t)ss * CPU_TW, *a2 = a1 + (size_t)ss * CPU_TW;
                float *o = out + (size_t)(y * s + i) * ow + (size_t)x0 * s + jj;
                for (int j = 0; j < nvalid; j++) {
                    for (int c = 0; c < 3; c++)
                        o[c * oplane + (size_t)j * s] = am_b[c] + am_w[c * 3] * a0[j] + am_w[c * 3 + 1] * a1[j] + am_w[c * 3 + 2] * a2[j];
                }
            }
        }
    }
}
