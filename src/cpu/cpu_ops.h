/* cpu_ops.h — the CPU backend's layers, shared by cpu_backend.c and the op tests.

   Layout: an image's activations are planar (channel-major), one plane of H*W floats per channel, plane c at
   base + c * ps. The plane stride ps is a little more than H*W (see cpu_plane_stride) so that the planes of a
   tile do not all land in the same L1 set when H*W*4 is a multiple of 4 KiB (128x128 images are).

   Every convolution (head and tail 3x3, the shift convs of LFE, GMSA's projections) is one "packed-tile GEMM":
   for a tile of CPU_TW consecutive pixels of one row, the K input rows it needs (input channel, tap) are
   copied into a contiguous K x CPU_TW block (zero where the tap falls outside the image), then
   out[m][j] = bias[m] + sum_k wt[k][m] * xt[k][j] is computed with the pixels as the vector dimension and
   a block of output channels x 16 pixels kept in registers (3 rows in the portable kernel of conv.c, 24 with
   AVX-512 and 6 with AVX2 in simd.c, chosen at run time). Copying the tile costs K*16 loads per K*M*16
   multiply-adds, so it is nearly free and it makes the shift, the 3x3 taps and the zero padding all the
   same code. The attention reuses the same micro-kernel for q q^T and A v (gmsa.c). */
#ifndef ELANSR_CPU_OPS_H
#define ELANSR_CPU_OPS_H

#include <stddef.h>

#include "common.h"
#include "model.h"

/* Pixels per tile: four 4-float vectors; the output rows go 3 at a time, so 12 accumulators (of 16 SSE
   registers) stay in registers. */
#define CPU_TW 16
/* Output rows per register block of the micro-kernel. C, 2C and 3*s*s are all multiples of 3. */
#define CPU_MR 3
/* Pixels per strip of cpu_conv_apply: tiles packed and multiplied together (conv.c). */
#ifndef CPU_STRIP
#define CPU_STRIP 64
#endif

enum { CPU_STORE = 0, CPU_RELU = 1, CPU_ADD = 2 };

/* A convolution ready for the packed-tile GEMM. */
typedef struct {
    int cin, cout;
    int K;              /* packed rows: cin * k * k */
    int ldw;            /* cout rounded up to CPU_MR */
    float *wt;          /* K x ldw: weight of (row k, output m) at wt[k * ldw + m], zero beyond cout */
    float *bias;        /* cout, padded with zeros to a multiple of CPU_MR */
    int *chan;          /* K: input channel of each packed row */
    unsigned char *tap; /* K: ky*3 + kx of each packed row (4 = the pixel itself) */
    int direct;         /* a plain 1x1 conv (every tap 4): cpu_conv_apply reads the planes without packing */
} cpu_conv;

/* From a model conv (k = 1 or 3). shift_tap (cin entries) makes a 1x1 conv a ShiftConv. name is for errors. */
elansr_status cpu_conv_init(cpu_conv *cv, const elan_conv *src, const int *shift_tap, const char *name);
void cpu_conv_free(cpu_conv *cv);

/* Plane stride for an H x W image (0 when it overflows). */
size_t cpu_plane_stride(int H, int W);

/* Floats of per-thread scratch that cpu_conv_apply needs for cv. */
size_t cpu_conv_scratch(const cpu_conv *cv);

/* ---- conv.c ---- */
/* The micro-kernel: M output rows of one tile. Weight (k, m) at wt[k * ldw + m] (M <= ldw, and the weight rows
   are readable up to a multiple of CPU_MR); input row k at x + k * ldx (CPU_TW floats); output row m at
   out + m * ldo, of which the first nvalid pixels are written (stored, relu'd or added, by mode). bias may be
   NULL. cpu_gemm_tile is the portable one; cpu_gemm_for gives the one of an instruction set. */
typedef void (*cpu_gemm_fn)(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x,
                            size_t ldx, float *out, size_t ldo, int nvalid, int mode);
void cpu_gemm_tile(int M, int K, const float *wt, size_t ldw, const float *bias, const float *x, size_t ldx,
                   float *out, size_t ldo, int nvalid, int mode);

/* ---- simd.c: run-time choice of the instruction set ---- */
enum { CPU_ISA_GENERIC = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 };
/* The best path this CPU runs. */
int cpu_isa_best(void);
/* Picks the best path, or the one ELANSR_CPU_ISA (generic|avx2|avx512) forces when the CPU can run it, makes it
   the current one and returns it. Called at backend creation. */
int cpu_isa_select(void);
/* The current path (process-wide; cpu_isa_select on first use), and a way for tests to force one. */
int cpu_get_isa(void);
void cpu_set_isa(int isa);
const char *cpu_isa_name(int isa);
cpu_gemm_fn cpu_gemm_for(int isa);
/* A kernel for two full tiles at once (x rows hold 2 * CPU_TW pixels; nvalid ignored), or NULL where the
   one-tile kernel is as fast. */
cpu_gemm_fn cpu_gemm2_for(int isa);
/* Copies the tile (y, x0 .. x0+CPU_TW-1) of cv's packed rows from planar input (H x W, stride ps) to xt
   (K x CPU_TW), zero outside the image. */
void cpu_pack_tile(const cpu_conv *cv, const float *in, size_t ps, int H, int W, int y, int x0, float *xt);
/* out = conv(in) over the whole H x W image (zero padding), by mode. in and out must not overlap.
   scratch: n_threads regions of sstride floats, each >= cpu_conv_scratch(cv). */
void cpu_conv_apply(const cpu_conv *cv, const float *in, size_t ps_in, float *out, size_t ps_out, int H, int W,
                    int mode, float *scratch, size_t sstride, int nt);

/* ---- conv3x3.c: the ends of the network ---- */
/* Mirror-pads the 3 x h x w input to 3 x Hp x Wp (elan_mirror_index) and applies sub_mean (a 3 -> 3 1x1
   conv, given as the model's weight w[3][3] and bias b[3]). */
void cpu_input_pad(const float *in, int h, int w, const float *sm_w, const float *sm_b, float *out, size_t ps,
                   int Hp, int Wp, int nt);
/* Tail 3x3 conv of x (C planes, Hp x Wp) on the pixels y < h, x < w only, then PixelShuffle(s) and add_mean
   (3 -> 3 1x1), written to out as 3 x (s*h) x (s*w). scratch regions need cpu_tail_scratch floats. */
void cpu_tail(const cpu_conv *tail, int s, const float *am_w, const float *am_b, const float *x, size_t ps,
              int Hp, int Wp, int h, int w, float *out, float *scratch, size_t sstride, int nt);
size_t cpu_tail_scratch(const cpu_conv *tail);

/* ---- lfe.c ---- */
/* x += c1(relu(c0(x))), with hid (c0->cout planes) as the intermediate. */
void cpu_lfe(const cpu_conv *c0, const cpu_conv *c1, float *x, float *hid, size_t ps, int H, int W, float *scratch,
             size_t sstride, int nt);

/* ---- gmsa.c ---- */
/* Windowed attention of the three channel groups (windows win[0..2], k channels each; H and W multiples of every
   window, windows multiples of 4). Group g's query channel c is plane q + (g * q_gs + c) * ps, its value channel
   v + (g * v_gs + c) * ps; the output channel g*k + c goes to y + (g*k + c) * ps. Shifted: cyclic roll by -w/2
   before and +w/2 after. A = softmax_rows(q q^T) is recomputed from q on every call (see gmsa.c). */
void cpu_attention(const float *q, int q_gs, const float *v, int v_gs, float *y, size_t ps, int H, int W, int k,
                   const int win[3], int shifted, float *scratch, size_t sstride, int *iscratch, size_t istride,
                   int nt);
/* Per-thread scratch of cpu_attention: floats and ints. */
size_t cpu_attention_scratch(int k, int wmax);
size_t cpu_attention_iscratch(int wmax);
/* One GMSA: x += proj_out(attention(proj_in(x))). computes: proj_in gives q|v per group into qv (2C planes);
   otherwise it gives v into hid[0..C) and the attention uses the q still in qv from the block's first GMSA.
   hid needs 2C planes. */
void cpu_gmsa(const cpu_conv *pin, const cpu_conv *pout, int computes, float *x, float *qv, float *hid, size_t ps,
              int H, int W, int C, const int win[3], int shifted, float *scratch, size_t sstride, int *iscratch,
              size_t istride, int nt);

#ifdef _OPENMP
#include <omp.h>
#endif
/* Index of the calling OpenMP thread (0 without OpenMP): selects the thread's slice of per-thread scratch. */
static inline int cpu_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif
