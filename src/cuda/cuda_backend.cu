/* cuda_backend.cu — the CUDA backend: device selection, weights on the device, the memory plan of one input
   size, the order of the layer kernels (the forward), CUDA graphs, and the benchmark hook.

   Order of one forward (activations NHWC over the padded image, P = n*Hp*Wp pixels; see cuda_common.h):
     head                      in (NCHW) -> x, hb;  B = 0              conv3x3.cu
     per block, per pair j:
       shift(x + B)            -> sA          [P x C]                  lfe.cu
       GEMM c0                 sA -> t        [P x eC]                 cuBLAS
       shift(relu(t + b0))     -> sA          [P x eC]                 lfe.cu
       GEMM c1, beta = 1       sA -> x;  B += b1                       cuBLAS
       GEMM project_inp        x -> g [P x 2C] (computing) or t [P x C] (reusing)
       attention x3 groups     q from g, v from g or t -> sA [P x C];  gmsa.cu
                               project_inp's bias bin + Win B added on load
       GEMM project_out, b = 1 sA -> x;  B += b                        cuBLAS
     x += B                                                            lfe.cu
     tail                      x + hb -> out (NCHW, cropped)           conv3x3.cu
   In tf32 each LFE is two passes instead (shift_gemm.cu), with no sA: shift(x + B) and c0 with bias and ReLU
   -> t (rounded to tf32, so the second pass copies it as is); shift(t) and c1 into x. The attention and the tail
   run on tf32 tensor cores too (gmsa.cu, conv3x3.cu). In fp32 the LFE is the same two passes on CUDA cores
   (shift_gemm.cu simt, nothing rounded; ELANSR_CUDA_SIMT_LFE=0 keeps the shifts and cuBLAS GEMMs).
   The biases of c1 and project_out are carried, not added: x holds the residual stream minus B, the sum of
   those biases so far (a per-channel vector), and each reader of x adds B itself: the first shift while it
   gathers, project_inp through its bias (Win (x - B) + bin + Win B; the attention adds that bias on load
   anyway), the tail after one bias_add of the final B (tf32: the tail adds it as it reads x). B before each pair's LFE, the adjusted project_inp
   biases and the final B are constants of the model, staged at creation (stage_model). Why: cuBLAS's SGEMM
   has no bias epilogue, and a bias_add after each accumulating GEMM was a full read and write of x, two per
   pair (48 in ELAN-light): 4.8 ms of a 44-54 ms forward of a 960x540 input on an H100.
   g holds the block's computing project_inp output until the block ends, so reusing GMSAs recompute the
   block's attention maps from its q (gmsa.cu says why).
   In fp16 / bf16 (the default on a GPU) a pair is 3 launches instead (fused_lfe, fused_attn, fused_pw):
       fused LFE               xh[cur] (halo), x -> x, xh[cur ^ 1]; cur flips                lfe_fused.cu
       attention, 3 groups,    xh[cur] -> sA, one launch; project_inp inside; the         gmsa.cu
         project_inp fused     computing GMSA leaves its q (fp16) in g for the reusing ones, and its row
                               maxima in m: the reusing ones skip the online softmax's running maximum
                               (ELANSR_CUDA_ATTN_KM=0 keeps it)
       project_out + residual  sA, x -> x, xh[cur]                                           pointwise.cu
   In unshifted blocks (gmsa_one) the last two are one kernel instead, the whole GMSA: xh[cur] -> xh[cur ^ 1],
   cur flips (gmsa.cu gmsa_kernel; y never leaves the chip). In shifted blocks (gmsa_shifted) they are the ws 4 / 8
   groups' attention (y of those groups into sA) and then the ws 16 group's with project_out and the residual,
   again xh[cur] -> xh[cur ^ 1]. ELANSR_CUDA_GMSA=split keeps attention + project_out (attn3 + pointwise) in every
   block, =unshifted in shifted blocks only. Where an image has at least 8 regions of 16 x 16 pixels per SM the
   whole GMSA runs as a persistent kernel (gmsa.cu gmsa_persist_kernel; ELANSR_CUDA_GMSA_PERSIST=0 / 1: never /
   always).
   The residual stream is xh itself (half_x: the LFE and project_out update xh, and the head writes no x);
   ELANSR_CUDA_HALF_X=0 keeps it in fp32 (4 bytes more per element and access). The tail then reads xh and hb
   itself and runs on tensor cores (tail_mma), and the plan has no fp32 x at all; ELANSR_CUDA_TAIL=simt (and a
   shape tail_mma lacks) keeps the fp32 tail, for which x is filled from xh once before it.
   ELANSR_CUDA_FUSED_ATTN=0 puts project_inp back into its own pointwise kernel (4 launches).
   The unfused order above stays for fp32 / tf32 and behind ELANSR_CUDA_FUSED=0; in the half modes it adds
   b1 and project_out's bias to x after each GEMM instead of carrying them (B = 0 throughout), because that
   bias_add also refreshes xh (below).
   The fused kernels (and the head) are launched with programmatic dependent launch on sm_90+ (cuda_common.h):
   each stages its weights while the previous kernel drains; ELANSR_CUDA_PDL=0 turns it off, and
   ELANSR_CUDA_PDL_ATTN=last|none overrides when the attention lets its successor launch (gmsa.cu).

   Every 1x1 conv is out[P][cout] = in[P][cin] * W^T. cuBLAS is column-major, where an NHWC [P][cin] array is a
   cin x P matrix and PyTorch's w[cout][cin] is a cin x cout one, so the call is
   C(cout x P) = op_T(w) * in with the weights exactly as the checkpoint stores them.

   Memory: the weights, folded and converted once, live in one device allocation; all activations of one
   (n, h, w) live in one more (the plan), made on the first forward of that size and kept while the size
   stays. The second forward of a size captures the whole forward in a CUDA graph (the first runs it eagerly,
   which also warms cuBLAS) and later forwards replay it: a forward is ~270 launches, which dominate for
   small images.

   fp16 / bf16 (elansr precision FP16 / BF16): the 1x1-conv weights are converted once at creation; sA, t and
   g hold half values, and the GEMMs are cublasGemmEx with half A and B, fp32 compute (tensor cores), and a
   half C for the GEMMs that start an activation (c0, project_inp) or a float C for the two that accumulate
   into the residual stream (c1, project_out: beta = 1 on the fp32 x). On that unfused path the residual
   stream x and hb stay fp32; bias_add, which each accumulating GEMM needs anyway, writes xh, the half copy of
   x that the next shift and project_inp read. (The fused path keeps the residual stream in half precision,
   above: measured, it costs no Set5 PSNR in fp16 and 0.0008 dB in bf16.) The head computes in fp32, as does
   the attention's math (gmsa.cu); the tail too, except with the half residual stream, where it takes fp16
   operands (x + hb rounded once) with fp32 accumulation on tensor cores, in both half modes. fp16 saturates at
   +-65504 in every kernel store; a GEMM's half output (c0, project_inp) is cuBLAS's conversion and overflows to
   inf past that: real images stay in the hundreds, pure noise can reach ~1e5 (use fp32 for such inputs, or bf16
   with ELANSR_CUDA_TAIL=simt, whose tail does not round to fp16).
   The only difference of the two half modes is the storage type (elan_cuda_act). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "common.h"
}
#include "cuda_common.h"

#define MIB (1024.0 * 1024.0)
/* cuBLAS workspace, given explicitly so that no allocation happens inside a graph capture; NVIDIA recommends
   32 MiB on Hopper. */
#define BLAS_WORKSPACE (32u << 20)
/* Benchmark inputs rotate among this many buffers so that a small input does not sit in L2 between runs. */
#define BENCH_INPUTS 4

typedef struct {
    const void *w;      /* w[cout][cin] on the device, float or (fp16/bf16 modes) the activation type */
    const float *b;     /* b[cout] */
    int cin, cout;
} dconv;

typedef struct {
    dconv c0, c1;
    const unsigned char *tap0, *tap1;
    int quads0, quads1;         /* the shift's taps are constant over aligned runs of 4 channels */
    dconv pin, pout;
    int computes;
    /* carry_bias (fp32 / tf32; enqueue_forward): B, the c1 and project_out biases summed over the pairs
       before this one, which the first shift adds back; and project_inp's bias adjusted for it, pin.b + Win B
       with B as it is after this pair's c1 (pin.cout entries). Otherwise NULL and pin.b. */
    const float *x_bias, *pin_b;
} dpair;

typedef struct {
    int n_pairs, shifted;
    dpair *pairs;
} dblock;

typedef struct {
    int n, h, w, Hp, Wp;
    long long P;
    void *arena;
    size_t bytes;
    float *in, *out, *x, *hb;   /* fp32 always; x NULL with the tensor-core tail (nothing reads it) */
    void *sA, *t, *g;           /* act */
    float *m;                   /* fused_attn: the computing GMSA's row maxima, a P plane per group (gmsa.cu m_out) */
    void *xh[2];                /* act; NULL in fp32. Two, because the fused LFE reads one over a halo while
                                   it writes the other; xh[cur] holds the half copy of x (enqueue_forward) */
    int *mirror_y, *mirror_x;
    int runs;                   /* forwards done with this plan; the graph is captured on the second */
    cudaGraphExec_t graph;
} plan_t;

typedef struct {
    elan_backend base;          /* first: the library sees only this */
    int dev, verbose, use_graph;
    int act;                    /* elan_cuda_act: storage of sA, t, g, xh and the 1x1 weights */
    size_t esz;                 /* its bytes */
    cudaStream_t stream;
    cublasHandle_t blas;
    void *weights;
    size_t weights_bytes;
    void *workspace;
    int C, k, scale, n_blocks, windows[3], pad;
    int width_s, width_t;       /* channels of the sA and t buffers */
    int fused_lfe;              /* half modes: LFE as one kernel (lfe_fused.cu) */
    int attn3;                  /* half modes: the three attention groups in one launch (gmsa.cu) */
    int fused_pw;               /* half modes: project_inp / project_out as pointwise.cu kernels with the bias
                                   (and the residual update) fused, instead of cuBLAS + bias_add */
    int half_x;                 /* fused half modes: the residual stream is xh itself (no fp32 x in the body) */
    int fused_attn;             /* half modes: project_inp inside the attention kernel (gmsa.cu attn_project) */
    int gmsa_one;               /* half_x, fused_attn: the GMSA of unshifted blocks as one kernel (gmsa.cu gmsa_kernel) */
    int gmsa_shifted;           /* gmsa_one: shifted blocks through elan_cuda_gmsa as well (no pointwise kernel) */
    int attn_km;                /* fused_attn: reusing GMSAs take the computing one's row maxima (gmsa.cu m_in) */
    int tail_tf32;              /* tf32: the tail on tf32 tensor cores (conv3x3.cu tail_tf32), the carried B added there */
    int lfe_wg;                 /* elan_cuda_lfe_args.wg: -1 (default: on), or 0 / 1 (ELANSR_CUDA_LFE_WG) */
    int gmsa_persist;           /* elan_cuda_gmsa_args.persist: -1 (chosen by size), 0 / 1 (ELANSR_CUDA_GMSA_PERSIST) */
    int sweep_alt;              /* fused LFE and whole GMSA: each launch sweeps the image the other way from the
                                   one before (elan_cuda_gmsa_args.rev); ELANSR_CUDA_SWEEP=0 keeps every sweep
                                   top-down */
    int tail_mma;               /* half_x: the tail on tensor cores straight from xh (conv3x3.cu tail_mma); the
                                   plan then has no fp32 x at all */
    int carry_bias;             /* fp32 / tf32: x holds the residual stream minus the c1 and project_out biases
                                   so far, which its readers add (enqueue_forward) */
    int tf32;                   /* precision TF32: the attention (gmsa.cu) and the LFE (shift_gemm.cu) on tf32 tensor cores */
    int shift_gemm;             /* fp32 / tf32: each ShiftConv of LFE as one shift_gemm.cu pass (no sA; fp32 on CUDA cores) */
    dblock *blocks;
    const float *sub_mean, *head_w, *head_b, *tail_w, *tail_b;
    const void *tail_wh;        /* tail_mma: fp16 copy of tail_w (elan_cuda_tail_mma_weights' layout) */
    const float *tail_wt;       /* tail_tf32: tf32 copy of tail_w (elan_cuda_tail_tf32_weights' layout) */
    const float *x_bias_final;  /* carry_bias: the sum of all c1 and project_out biases, added before the tail */
    plan_t plan;
} cuda_backend;

/* ---- errors ---- */

static elansr_status cuda_fail(int dev, const char *what, cudaError_t e) {
    if (e == cudaErrorMemoryAllocation)
        return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of memory in %s", dev, what);
    return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d: %s failed: %s", dev, what, cudaGetErrorString(e));
}

#define CU(call, what)                                          \
    do {                                                        \
        cudaError_t e_ = (call);                                \
        if (e_ != cudaSuccess) {                                \
            (void)cudaGetLastError();                           \
            return cuda_fail(be->dev, what, e_);                \
        }                                                       \
    } while (0)

/* Layer launches name the block and pair they belong to. */
#define LAUNCH(call, what)                                      \
    do {                                                        \
        cudaError_t e_ = (call);                                \
        if (e_ != cudaSuccess) {                                \
            (void)cudaGetLastError();                           \
            return launch_fail(be, e_, what, bi, j);            \
        }                                                       \
    } while (0)

static elansr_status launch_fail(const cuda_backend *be, cudaError_t e, const char *what, int bi, int j) {
    if (bi < 0)
        return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d: %s kernel launch failed: %s", be->dev, what, cudaGetErrorString(e));
    return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d: block %d pair %d: %s kernel launch failed: %s", be->dev, bi, j, what,
                       cudaGetErrorString(e));
}

/* ---- weights ---- */

/* The weights are laid out in two passes over the same code: the first (host == NULL) only adds up the
   sizes, the second fills a host staging copy whose image is then copied to the device in one transfer.
   Each array starts on a 256-byte boundary (float4 loads, coalescing). */
typedef struct {
    char *host;
    uintptr_t dev;
    size_t used;
} stage_t;

static float *stage_alloc(stage_t *s, size_t count, size_t elem, void **host) {
    const size_t off = s->used;
    s->used += (count * elem + 255) & ~(size_t)255;
    *host = s->host ? s->host + off : NULL;
    return (float *)(s->dev + off);
}

static const float *stage_floats(stage_t *s, const float *src, size_t count) {
    void *h;
    const float *d = stage_alloc(s, count, sizeof(float), &h);
    if (h) memcpy(h, src, count * sizeof(float));
    return d;
}

/* A 1x1 conv: weights in the activation type act (converted here, round to nearest), bias in float. */
static dconv stage_conv(stage_t *s, const elan_conv *c, int act) {
    dconv d;
    d.cin = c->cin;
    d.cout = c->cout;
    const size_t nw = (size_t)c->cout * c->cin * c->k * c->k;
    if (act == ELAN_ACT_F32) {
        d.w = stage_floats(s, c->w, nw);
    } else {
        void *h;
        d.w = stage_alloc(s, nw, 2, &h);
        if (h) {
            if (act == ELAN_ACT_F16)
                for (size_t i = 0; i < nw; i++) ((__half *)h)[i] = __float2half_rn(c->w[i]);
            else
                for (size_t i = 0; i < nw; i++) ((__nv_bfloat16 *)h)[i] = __float2bfloat16_rn(c->w[i]);
        }
    }
    d.b = stage_floats(s, c->b, (size_t)c->cout);
    return d;
}

static const unsigned char *stage_taps(stage_t *s, const int *tap, int n) {
    void *h;
    const unsigned char *d = (const unsigned char *)stage_alloc(s, (size_t)n, 1, &h);
    if (h)
        for (int i = 0; i < n; i++) ((unsigned char *)h)[i] = (unsigned char)tap[i];
    return d;
}

static int taps_in_quads(const int *tap, int n) {
    if (n % 4) return 0;
    for (int i = 0; i < n; i++)
        if (tap[i] != tap[i & ~3]) return 0;
    return 1;
}

/* B (double, C entries) rounded once to float into a staged array of C floats (host copy h, NULL when sizing). */
static const float *stage_carried(stage_t *s, const double *B, int C) {
    void *h;
    const float *d = stage_alloc(s, (size_t)C, sizeof(float), &h);
    if (h)
        for (int c = 0; c < C; c++) ((float *)h)[c] = (float)B[c];
    return d;
}

static elansr_status stage_model(cuda_backend *be, const elan_model *m, stage_t *s) {
    void *h;
    float *sm = NULL;
    /* carry_bias: B, the c1 and project_out biases summed so far in the network's order, in double and rounded
       once per staged copy. Only the filling pass (s->host) needs its values. */
    double *B = NULL;
    if (be->carry_bias && s->host) {
        B = (double *)calloc((size_t)m->planes, sizeof(double));
        if (!B) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory staging the weights", be->dev);
    }
    be->sub_mean = stage_alloc(s, 12, sizeof(float), &h);
    sm = (float *)h;
    if (sm) {
        memcpy(sm, m->sub_mean.w, 9 * sizeof(float));
        memcpy(sm + 9, m->sub_mean.b, 3 * sizeof(float));
    }
    be->head_w = stage_floats(s, m->head.w, (size_t)m->planes * 27);
    be->head_b = stage_floats(s, m->head.b, (size_t)m->planes);
    for (int bi = 0; bi < m->n_blocks; bi++) {
        const elan_block *b = &m->blocks[bi];
        for (int j = 0; j < b->n_pairs; j++) {
            dpair *d = &be->blocks[bi].pairs[j];
            d->quads0 = taps_in_quads(b->lfe[j].c0.tap, b->lfe[j].c0.conv.cin);
            d->quads1 = taps_in_quads(b->lfe[j].c1.tap, b->lfe[j].c1.conv.cin);
            d->c0 = stage_conv(s, &b->lfe[j].c0.conv, be->act);
            d->tap0 = stage_taps(s, b->lfe[j].c0.tap, b->lfe[j].c0.conv.cin);
            d->c1 = stage_conv(s, &b->lfe[j].c1.conv, be->act);
            d->tap1 = stage_taps(s, b->lfe[j].c1.tap, b->lfe[j].c1.conv.cin);
            d->pin = stage_conv(s, &b->gmsa[j].proj_in, be->act);
            d->pout = stage_conv(s, &b->gmsa[j].proj_out, be->act);
            d->computes = b->gmsa[j].computes_attn;
            d->x_bias = NULL, d->pin_b = d->pin.b;
            if (be->carry_bias) {
                const int C = m->planes;
                const elan_conv *c1 = &b->lfe[j].c1.conv, *pi = &b->gmsa[j].proj_in, *po = &b->gmsa[j].proj_out;
                d->x_bias = stage_carried(s, B, C);
                if (B)
                    for (int c = 0; c < C; c++) B[c] += c1->b[c];
                /* project_inp(x) = Win x + bin = Win (x - B) + (bin + Win B) */
                d->pin_b = stage_alloc(s, (size_t)pi->cout, sizeof(float), &h);
                if (B)
                    for (int r = 0; r < pi->cout; r++) {
                        double acc = pi->b[r];
                        for (int c = 0; c < C; c++) acc += (double)pi->w[(size_t)r * C + c] * B[c];
                        ((float *)h)[r] = (float)acc;
                    }
                if (B)
                    for (int c = 0; c < C; c++) B[c] += po->b[c];
            }
        }
    }
    be->x_bias_final = be->carry_bias ? stage_carried(s, B, m->planes) : NULL;
    free(B);
    /* Tail with add_mean folded in: out[c'] = am_b[c'] + sum_c am_w[c'][c] * tail[c], per output pixel, i.e.
       per sub-pixel ij the 3 tail channels c*s*s + ij are mixed. Rearranged to [cin][tap][out] (see conv3x3.cu). */
    const int C = m->planes, ss = m->scale * m->scale, np = elan_cuda_tail_nout_pad(m->scale);
    float *tw, *tb;
    be->tail_w = stage_alloc(s, (size_t)C * 9 * np, sizeof(float), &h);
    tw = (float *)h;
    be->tail_b = stage_alloc(s, (size_t)np, sizeof(float), &h);
    tb = (float *)h;
    if (tw) {
        const float *W = m->tail.w, *B = m->tail.b, *aw = m->add_mean.w, *ab = m->add_mean.b;
        memset(tw, 0, (size_t)C * 9 * np * sizeof(float));
        memset(tb, 0, (size_t)np * sizeof(float));
        for (int co = 0; co < 3; co++)
            for (int ij = 0; ij < ss; ij++) {
                const int o = co * ss + ij;
                double bias = ab[co];
                for (int c2 = 0; c2 < 3; c2++) bias += (double)aw[co * 3 + c2] * B[c2 * ss + ij];
                tb[o] = (float)bias;
                for (int c = 0; c < C; c++)
                    for (int t = 0; t < 9; t++) {
                        double acc = 0.0;
                        for (int c2 = 0; c2 < 3; c2++)
                            acc += (double)aw[co * 3 + c2] * W[((size_t)(c2 * ss + ij) * C + c) * 9 + t];
                        tw[((size_t)c * 9 + t) * np + o] = (float)acc;
                    }
            }
    }
    /* the same weights in fp16 for the tensor-core tail */
    if (be->tail_mma) {
        be->tail_wh = stage_alloc(s, elan_cuda_tail_mma_weights_count(m->scale), 2, &h);
        if (h) elan_cuda_tail_mma_weights(tw, C, m->scale, h);
    }
    /* and rounded to tf32 for the tf32 tail */
    if (be->tail_tf32) {
        be->tail_wt = stage_alloc(s, elan_cuda_tail_tf32_weights_count(m->scale), sizeof(float), &h);
        if (h) elan_cuda_tail_tf32_weights(tw, C, m->scale, (float *)h);
    }
    return ELANSR_OK;
}

/* What the kernels assume about the network; a model the loader accepts but these kernels were not built for
   is refused here, at creation, rather than computed wrongly. */
static elansr_status check_model(const elan_model *m, int dev) {
    const int C = m->planes;
#define BAD(...) return elansr_fail(ELANSR_ERR_UNSUPPORTED, __VA_ARGS__)
    if (C < 3 || C % 3) BAD("GPU %d: %d planes: the CUDA backend needs a multiple of 3", dev, C);
    if (m->scale < 2 || m->scale > 4) BAD("GPU %d: scale %d: the CUDA backend supports 2, 3 and 4", dev, m->scale);
    for (int i = 0; i < 3; i++) {
        if (elan_cuda_attn_supported(C / 3, m->windows[i]))
            BAD("GPU %d: attention with window %d over %d channels is not compiled into the CUDA backend", dev,
                m->windows[i], C / 3);
        if (m->pad_multiple <= 0 || m->pad_multiple % m->windows[i] || m->pad_multiple % 16)
            BAD("GPU %d: pad multiple %d does not suit window %d", dev, m->pad_multiple, m->windows[i]);
    }
    if (m->sub_mean.cin != 3 || m->sub_mean.cout != 3 || m->sub_mean.k != 1 || m->add_mean.cin != 3 ||
        m->add_mean.cout != 3 || m->add_mean.k != 1 || m->head.cin != 3 || m->head.cout != C || m->head.k != 3 ||
        m->tail.cin != C || m->tail.cout != 3 * m->scale * m->scale || m->tail.k != 3)
        BAD("GPU %d: unexpected head/tail shapes", dev);
    for (int bi = 0; bi < m->n_blocks; bi++) {
        const elan_block *b = &m->blocks[bi];
        if (b->n_pairs < 1 || !b->gmsa[0].computes_attn) BAD("GPU %d: block %d has no attention-computing GMSA", dev, bi);
        for (int j = 0; j < b->n_pairs; j++) {
            const elan_lfe *l = &b->lfe[j];
            const elan_gmsa *g = &b->gmsa[j];
            if (l->c0.conv.cin != C || l->c0.conv.k != 1 || l->c0.conv.cout < 1 || l->c1.conv.cin != l->c0.conv.cout ||
                l->c1.conv.cout != C || l->c1.conv.k != 1 || g->proj_in.cin != C || g->proj_in.k != 1 ||
                g->proj_in.cout != (g->computes_attn ? 2 * C : C) || g->proj_out.cin != C || g->proj_out.cout != C ||
                g->proj_out.k != 1)
                BAD("GPU %d: block %d pair %d: unexpected layer shapes", dev, bi, j);
            for (int c = 0; c < l->c0.conv.cin; c++)
                if (l->c0.tap[c] < 0 || l->c0.tap[c] > 8) BAD("GPU %d: block %d pair %d: bad shift tap", dev, bi, j);
            for (int c = 0; c < l->c1.conv.cin; c++)
                if (l->c1.tap[c] < 0 || l->c1.tap[c] > 8) BAD("GPU %d: block %d pair %d: bad shift tap", dev, bi, j);
        }
    }
#undef BAD
    return ELANSR_OK;
}

/* ---- plan ---- */

static void plan_free(cuda_backend *be) {
    plan_t *pl = &be->plan;
    if (pl->graph) cudaGraphExecDestroy(pl->graph);
    if (pl->arena) cudaFree(pl->arena);
    memset(pl, 0, sizeof *pl);
}

typedef struct {
    size_t off;
} carve_t;

static size_t carve(carve_t *c, size_t bytes) {
    const size_t o = c->off;
    c->off += (bytes + 255) & ~(size_t)255;
    return o;
}

static elansr_status plan_for(cuda_backend *be, int n, int h, int w) {
    plan_t *pl = &be->plan;
    if (pl->arena && pl->n == n && pl->h == h && pl->w == w) return ELANSR_OK;
    plan_free(be);
    const int Hp = elan_round_up(h, be->pad), Wp = elan_round_up(w, be->pad), C = be->C, s = be->scale;
    const long long P = (long long)n * Hp * Wp;
    const size_t es = be->esz;
    const double bytes_per_px = (be->tail_mma ? 1.0 : 2.0) * C * 4 + /* x (unless tail_mma) and hb */
                                (be->width_s + be->width_t + 2.0 * C + (be->act != ELAN_ACT_F32 ? 2 * C : 0)) * es;
    const double need = (double)P * bytes_per_px + (double)n * h * w * 3 * 4 * (1 + s * s) + (Hp + Wp) * 4.0;
    /* cuBLAS takes the pixel count as an int; past that, memory ran out long ago on any current GPU. */
    if (P > 0x7fffffffLL) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        (void)cudaGetLastError();
        return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of memory: need %.0f MiB for a %dx%d input (batch %d), %.0f MiB free",
                           be->dev, need / MIB, w, h, n, fr / MIB);
    }
    carve_t cv = {0};
    const size_t in_b = (size_t)n * 3 * h * w * sizeof(float), out_b = in_b * s * s;
    const size_t o_in = carve(&cv, in_b), o_out = carve(&cv, out_b);
    const size_t o_x = be->tail_mma ? 0 : carve(&cv, (size_t)P * C * 4), o_hb = carve(&cv, (size_t)P * C * 4);
    const size_t o_sA = carve(&cv, (size_t)P * be->width_s * es), o_t = carve(&cv, (size_t)P * be->width_t * es);
    const size_t o_g = carve(&cv, (size_t)P * 2 * C * es);
    const size_t o_xh = be->act != ELAN_ACT_F32 ? carve(&cv, (size_t)P * C * es) : 0;
    const size_t o_xh1 = be->act != ELAN_ACT_F32 ? carve(&cv, (size_t)P * C * es) : 0;
    const size_t o_m = be->fused_attn ? carve(&cv, (size_t)P * 3 * sizeof(float)) : 0;
    const size_t o_my = carve(&cv, (size_t)Hp * sizeof(int)), o_mx = carve(&cv, (size_t)Wp * sizeof(int));
    void *arena = NULL;
    cudaError_t e = cudaMalloc(&arena, cv.off);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e != cudaErrorMemoryAllocation) return cuda_fail(be->dev, "cudaMalloc (activations)", e);
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        (void)cudaGetLastError();
        return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of memory: need %.0f MiB for a %dx%d input (batch %d), %.0f MiB free",
                           be->dev, cv.off / MIB, w, h, n, fr / MIB);
    }
    char *a = (char *)arena;
    pl->arena = arena;
    pl->bytes = cv.off;
    pl->n = n, pl->h = h, pl->w = w, pl->Hp = Hp, pl->Wp = Wp, pl->P = P;
    pl->in = (float *)(a + o_in), pl->out = (float *)(a + o_out);
    pl->x = be->tail_mma ? NULL : (float *)(a + o_x), pl->hb = (float *)(a + o_hb), pl->sA = a + o_sA;
    pl->t = a + o_t, pl->g = a + o_g;
    pl->xh[0] = be->act != ELAN_ACT_F32 ? a + o_xh : NULL;
    pl->xh[1] = be->act != ELAN_ACT_F32 ? a + o_xh1 : NULL;
    pl->m = be->fused_attn ? (float *)(a + o_m) : NULL;
    pl->mirror_y = (int *)(a + o_my), pl->mirror_x = (int *)(a + o_mx);

    int *tab = (int *)malloc((size_t)(Hp + Wp) * sizeof(int));
    if (!tab) {
        plan_free(be);
        return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory for the padding tables", be->dev);
    }
    for (int i = 0; i < Hp; i++) tab[i] = elan_mirror_index(i, h);
    for (int i = 0; i < Wp; i++) tab[Hp + i] = elan_mirror_index(i, w);
    e = cudaMemcpyAsync(pl->mirror_y, tab, (size_t)Hp * sizeof(int), cudaMemcpyHostToDevice, be->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(pl->mirror_x, tab + Hp, (size_t)Wp * sizeof(int), cudaMemcpyHostToDevice, be->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(be->stream);
    free(tab);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        plan_free(be);
        return cuda_fail(be->dev, "cudaMemcpyAsync (padding tables)", e);
    }
    if (be->verbose)
        fprintf(stderr, "elansr: cuda:%d: plan for %dx%d (batch %d, padded %dx%d): %.1f MiB\n", be->dev, w, h, n, Wp, Hp,
                cv.off / MIB);
    return ELANSR_OK;
}

/* ---- forward ---- */

/* out = in * W^T (+ out when beta = 1). In fp16/bf16 in is half and out is half (out_f32 = 0) or the fp32
   residual stream (out_f32 = 1). */
static elansr_status gemm(const cuda_backend *be, const dconv *c, const void *in, void *out, float beta, int out_f32,
                          const char *what, int bi, int j) {
    const float one = 1.0f;
    cublasStatus_t st;
    if (be->act == ELAN_ACT_F32) {
        st = cublasSgemm(be->blas, CUBLAS_OP_T, CUBLAS_OP_N, c->cout, (int)be->plan.P, c->cin, &one, (const float *)c->w,
                         c->cin, (const float *)in, c->cin, &beta, (float *)out, c->cout);
    } else {
        const cudaDataType_t t = be->act == ELAN_ACT_F16 ? CUDA_R_16F : CUDA_R_16BF;
        st = cublasGemmEx(be->blas, CUBLAS_OP_T, CUBLAS_OP_N, c->cout, (int)be->plan.P, c->cin, &one, c->w, t, c->cin, in,
                          t, c->cin, &beta, out, out_f32 ? CUDA_R_32F : t, c->cout, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    if (st != CUBLAS_STATUS_SUCCESS)
        return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d: block %d pair %d: %s (%s, %d -> %d) failed: %s", be->dev, bi, j,
                           be->act == ELAN_ACT_F32 ? "cublasSgemm" : "cublasGemmEx", what, c->cin, c->cout,
                           cublasGetStatusString(st));
    return ELANSR_OK;
}

/* Element offset into an activation buffer of the backend's storage type. */
static inline void *act_at(const cuda_backend *be, void *p, long long elems) { return (char *)p + elems * (long long)be->esz; }

#define GEMM(c, in, out, beta, out_f32, what)                                   \
    do {                                                                        \
        elansr_status st_ = gemm(be, c, in, out, beta, out_f32, what, bi, j);   \
        if (st_ != ELANSR_OK) return st_;                                       \
    } while (0)

/* Enqueues one whole forward on the stream: d_in (n x 3 x h x w, device) -> d_out (n x 3 x sh x sw, device). */
static elansr_status enqueue_forward(cuda_backend *be, const float *d_in, float *d_out) {
    const plan_t *pl = &be->plan;
    const cudaStream_t s = be->stream;
    const int C = be->C, k = be->k;
    int bi = -1, j = -1;

    elan_cuda_head_args ha;
    ha.in = d_in, ha.mirror_y = pl->mirror_y, ha.mirror_x = pl->mirror_x, ha.sub_mean = be->sub_mean;
    /* with the half residual stream the body never reads x, and the tail reads xh (tail_mma) or x refilled from
       xh (elan_cuda_to_f32): the head's fp32 x would be dead */
    ha.w = be->head_w, ha.b = be->head_b, ha.x = be->half_x ? NULL : pl->x, ha.hb = pl->hb, ha.xh = pl->xh[0];
    ha.act = be->act;
    ha.n = pl->n, ha.H = pl->h, ha.W = pl->w, ha.Hp = pl->Hp, ha.Wp = pl->Wp, ha.C = C;
    LAUNCH(elan_cuda_head(&ha, s), "head");

    /* what the GEMMs and the first shift read of the residual stream: x itself in fp32, else its half copy
       xh[cur] (the fused LFE writes the other one and flips cur) */
    int cur = 0;
#define XIN (be->act == ELAN_ACT_F32 ? (void *)pl->x : pl->xh[cur])
    elan_cuda_shift_args sh;
    sh.Hp = pl->Hp, sh.Wp = pl->Wp, sh.pixels = pl->P, sh.act = be->act;
    elan_cuda_pw_args pw;
    memset(&pw, 0, sizeof pw);
    pw.act = be->act, pw.P = pl->P;
    int rev = 0; /* the direction of the next launch's sweep (sweep_alt): it starts where the last one ended */
    for (bi = 0; bi < be->n_blocks; bi++) {
        const dblock *b = &be->blocks[bi];
        const float *q_bias = NULL; /* project_inp bias of the block's computing GMSA, whose output g holds
                                       (NULL when the pointwise kernel added it already) */
        for (j = 0; j < b->n_pairs; j++) {
            const dpair *d = &b->pairs[j];
            /* LFE */
            if (be->fused_lfe) {
                elan_cuda_lfe_args la;
                la.xh_in = pl->xh[cur], la.x = be->half_x ? NULL : pl->x, la.xh_out = pl->xh[cur ^ 1];
                la.w0 = d->c0.w, la.b0 = d->c0.b, la.tap0 = d->tap0, la.w1 = d->c1.w, la.b1 = d->c1.b, la.tap1 = d->tap1;
                la.act = be->act, la.C = C, la.e = d->c0.cout, la.n = pl->n, la.Hp = pl->Hp, la.Wp = pl->Wp;
                la.wg = be->lfe_wg, la.rev = rev;
                rev ^= be->sweep_alt;
                LAUNCH(elan_cuda_lfe_fused(&la, s), "fused lfe");
                cur ^= 1;
            } else if (be->shift_gemm && d->quads0 && d->quads1) {
                /* tf32 / fp32: shift(x + B) and conv 0 with bias and ReLU -> t; shift(t) and conv 1 into x (b1
                   carried); fp32 on CUDA cores (simt) */
                elan_cuda_shift_gemm_args sg;
                sg.in = pl->x, sg.tap = d->tap0, sg.in_bias = d->x_bias, sg.w = (const float *)d->c0.w, sg.bias = d->c0.b;
                sg.out = (float *)pl->t, sg.mode = 0, sg.K = C, sg.N = d->c0.cout, sg.n = pl->n, sg.Hp = pl->Hp, sg.Wp = pl->Wp;
                sg.simt = !be->tf32;
                sg.out_tf32 = be->tf32, sg.in_tf32 = 0; /* t leaves rounded to tf32, as the second pass would round it */
                LAUNCH(elan_cuda_shift_gemm(&sg, s), "lfe shift+conv 0");
                sg.in = (const float *)pl->t, sg.tap = d->tap1, sg.in_bias = NULL, sg.w = (const float *)d->c1.w, sg.bias = NULL;
                sg.out = pl->x, sg.mode = 1, sg.K = d->c0.cout, sg.N = C;
                sg.out_tf32 = 0, sg.in_tf32 = be->tf32; /* so it can be copied into shared memory as is (cp.async) */
                LAUNCH(elan_cuda_shift_gemm(&sg, s), "lfe shift+conv 1");
            } else {
                /* x_bias: the carried B (fp32 / tf32), else NULL */
                sh.in = XIN, sh.out = pl->sA, sh.tap = d->tap0, sh.bias = d->x_bias, sh.relu = 0, sh.cin = C;
                sh.quads = d->quads0;
                LAUNCH(elan_cuda_shift(&sh, s), "lfe shift 0");
                GEMM(&d->c0, pl->sA, pl->t, 0.0f, 0, "lfe conv 0");
                sh.in = pl->t, sh.out = pl->sA, sh.tap = d->tap1, sh.bias = d->c0.b, sh.relu = 1, sh.cin = d->c0.cout;
                sh.quads = d->quads1;
                LAUNCH(elan_cuda_shift(&sh, s), "lfe relu+shift 1");
                GEMM(&d->c1, pl->sA, pl->x, 1.0f, 1, "lfe conv 1");
                if (!be->carry_bias) LAUNCH(elan_cuda_bias_add(pl->x, d->c1.b, pl->xh[cur], be->act, C, pl->P, s), "lfe bias");
            }
            /* GMSA */
            elan_cuda_attn_args ats[3];
            memset(ats, 0, sizeof ats); /* x == NULL unless project_inp is fused in */
            for (int gi = 0; gi < 3; gi++) {
                elan_cuda_attn_args &at = ats[gi];
                at.act = be->act, at.tf32 = be->tf32, at.k = k, at.ws = be->windows[gi];
                at.shift = b->shifted ? be->windows[gi] / 2 : 0;
                at.n = pl->n, at.Hp = pl->Hp, at.Wp = pl->Wp;
                at.y = act_at(be, pl->sA, gi * k), at.y_stride = C;
            }
            if (be->fused_attn) {
                /* project_inp inside the attention: the computing GMSA leaves its q (fp16) in g for the
                   block's reusing GMSAs, one plane of P x k per group (whole sectors: a group's kernel writes
                   and reads 40 contiguous bytes per pixel, not 40 of every 120, which in shifted blocks, where
                   the groups' kernels run apart, cost partial-sector traffic) */
                for (int gi = 0; gi < 3; gi++) {
                    elan_cuda_attn_args &at = ats[gi];
                    at.x = pl->xh[cur], at.x_stride = C, at.cin = C;
                    const int r0 = d->computes ? gi * 2 * k : gi * k; /* first project_inp row of the group's v or q */
                    if (d->computes) {
                        at.wq = (const char *)d->pin.w + (size_t)r0 * C * be->esz, at.bq = d->pin.b + r0;
                        at.wv = (const char *)d->pin.w + (size_t)(r0 + k) * C * be->esz, at.bv = d->pin.b + r0 + k;
                        at.q_out = (__half *)pl->g + gi * k * pl->P, at.q_out_stride = k;
                        at.m_out = pl->m + gi * pl->P; /* and its row maxima */
                    } else {
                        at.q = (const __half *)pl->g + gi * k * pl->P, at.q_stride = k;
                        at.m_in = be->attn_km ? pl->m + gi * pl->P : NULL;
                        at.wv = (const char *)d->pin.w + (size_t)r0 * C * be->esz, at.bv = d->pin.b + r0;
                    }
                }
                if (be->gmsa_one && (!b->shifted || be->gmsa_shifted)) { /* with project_out and the residual:
                                                                            xh[cur] -> xh[cur ^ 1] */
                    elan_cuda_gmsa_args ga;
                    memcpy(ga.g, ats, sizeof ats);
                    for (int gi = 0; gi < 2; gi++) /* shifted: the ws 4 / 8 groups' y, planes as q */
                        ga.g[gi].y = act_at(be, pl->sA, gi * k * pl->P), ga.g[gi].y_stride = k;
                    ga.wo = d->pout.w, ga.bo = d->pout.b, ga.x_out = pl->xh[cur ^ 1], ga.persist = be->gmsa_persist;
                    ga.rev = rev; /* shifted blocks: two launches, the second sweeping back (elan_cuda_gmsa) */
                    if (!b->shifted) rev ^= be->sweep_alt;
                    LAUNCH(elan_cuda_gmsa(&ga, s), "gmsa");
                    cur ^= 1;
                    continue;
                }
                LAUNCH(elan_cuda_attn3(ats, s), "attention (with project_inp)");
            } else {
                void *pin_out = d->computes ? pl->g : pl->t;
                const float *v_bias = d->pin_b; /* pin.b, or adjusted for the carried B (carry_bias) */
                if (be->fused_pw) {
                    pw.in = pl->xh[cur], pw.in_stride = C, pw.w = d->pin.w, pw.b = d->pin.b, pw.cin = C, pw.cout = d->pin.cout;
                    pw.out = pin_out, pw.out_stride = d->pin.cout, pw.x = NULL, pw.xh = NULL, pw.x_stride = 0;
                    LAUNCH(elan_cuda_pw(&pw, s), "project_inp");
                    v_bias = NULL;
                } else {
                    GEMM(&d->pin, XIN, pin_out, 0.0f, 0, "project_inp");
                    if (d->computes) q_bias = d->pin_b;
                }
                for (int gi = 0; gi < 3; gi++) {
                    elan_cuda_attn_args &at = ats[gi];
                    at.q = act_at(be, pl->g, gi * 2 * k), at.q_bias = q_bias ? q_bias + gi * 2 * k : NULL, at.q_stride = 2 * C;
                    if (d->computes) {
                        at.v = act_at(be, pl->g, gi * 2 * k + k), at.v_stride = 2 * C;
                        at.v_bias = v_bias ? v_bias + gi * 2 * k + k : NULL;
                    } else {
                        at.v = act_at(be, pl->t, gi * k), at.v_stride = C;
                        at.v_bias = v_bias ? v_bias + gi * k : NULL;
                    }
                    if (!be->attn3) LAUNCH(elan_cuda_attn(&at, s), "attention");
                }
                if (be->attn3) LAUNCH(elan_cuda_attn3(ats, s), "attention");
            }
            if (be->fused_pw) {
                pw.in = pl->sA, pw.in_stride = C, pw.w = d->pout.w, pw.b = d->pout.b, pw.cin = C, pw.cout = C;
                pw.out = NULL, pw.out_stride = 0, pw.x = be->half_x ? NULL : pl->x, pw.xh = pl->xh[cur], pw.x_stride = C;
                LAUNCH(elan_cuda_pw(&pw, s), "project_out");
            } else {
                GEMM(&d->pout, pl->sA, pl->x, 1.0f, 1, "project_out");
                if (!be->carry_bias)
                    LAUNCH(elan_cuda_bias_add(pl->x, d->pout.b, pl->xh[cur], be->act, C, pl->P, s), "project_out bias");
            }
        }
    }
#undef XIN
    bi = -1;
    elan_cuda_tail_args ta;
    memset(&ta, 0, sizeof ta);
    ta.hb = pl->hb, ta.b = be->tail_b, ta.out = d_out;
    ta.n = pl->n, ta.H = pl->h, ta.W = pl->w, ta.Hp = pl->Hp, ta.Wp = pl->Wp, ta.C = C, ta.scale = be->scale;
    if (be->tail_mma) {
        ta.xh = pl->xh[cur], ta.act = be->act, ta.wh = be->tail_wh;
        LAUNCH(elan_cuda_tail_mma(&ta, s), "tail (tensor cores)");
    } else {
        if (be->half_x) LAUNCH(elan_cuda_to_f32(pl->xh[cur], pl->x, be->act, pl->P * C, s), "residual to fp32");
        ta.x = pl->x;
        if (be->tail_tf32) { /* it adds the biases carried through the body as it reads x */
            ta.x_bias = be->carry_bias ? be->x_bias_final : NULL, ta.wt = be->tail_wt;
            LAUNCH(elan_cuda_tail_tf32(&ta, s), "tail (tf32 tensor cores)");
        } else { /* the biases carried through the body, in one pass */
            if (be->carry_bias)
                LAUNCH(elan_cuda_bias_add(pl->x, be->x_bias_final, NULL, ELAN_ACT_F32, C, pl->P, s), "carried bias");
            ta.w = be->tail_w;
            LAUNCH(elan_cuda_tail(&ta, s), "tail");
        }
    }
    return ELANSR_OK;
}

/* Captures enqueue_forward(d_in -> d_out) into an executable graph. */
static elansr_status capture(cuda_backend *be, const float *d_in, float *d_out, cudaGraphExec_t *exec) {
    *exec = NULL;
    CU(cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    elansr_status st = enqueue_forward(be, d_in, d_out);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(be->stream, &graph);
    if (st != ELANSR_OK || e != cudaSuccess) {
        (void)cudaGetLastError();
        if (graph) cudaGraphDestroy(graph);
        return st != ELANSR_OK ? st : cuda_fail(be->dev, "cudaStreamEndCapture", e);
    }
    e = cudaGraphInstantiate(exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        *exec = NULL;
        (void)cudaGetLastError();
        return cuda_fail(be->dev, "cudaGraphInstantiate", e);
    }
    return ELANSR_OK;
}

/* Runs the plan's forward from pl->in to pl->out: eagerly the first time, from a graph afterwards. A graph
   that cannot be captured is not an error: the backend warns (verbose) and keeps launching eagerly. */
static elansr_status run_plan(cuda_backend *be) {
    plan_t *pl = &be->plan;
    if (be->use_graph && pl->runs >= 1 && !pl->graph) {
        elansr_status st = capture(be, pl->in, pl->out, &pl->graph);
        if (st != ELANSR_OK) {
            if (be->verbose) fprintf(stderr, "elansr: cuda:%d: no CUDA graph (%s); launching eagerly\n", be->dev, elansr_last_error());
            be->use_graph = 0;
        }
    }
    pl->runs++;
    if (pl->graph) {
        CU(cudaGraphLaunch(pl->graph, be->stream), "cudaGraphLaunch");
        return ELANSR_OK;
    }
    return enqueue_forward(be, pl->in, pl->out);
}

static elansr_status cuda_forward(elan_backend *base, const float *in, int n, int h, int w, float *out) {
    cuda_backend *be = (cuda_backend *)base;
    if (!in || !out || n < 1 || h < 1 || w < 1)
        return elansr_fail(ELANSR_ERR_ARG, "GPU %d: invalid forward of %dx%d (batch %d)", be->dev, w, h, n);
    CU(cudaSetDevice(be->dev), "cudaSetDevice");
    elansr_status st = plan_for(be, n, h, w);
    if (st != ELANSR_OK) return st;
    const plan_t *pl = &be->plan;
    const size_t in_b = (size_t)n * 3 * h * w * sizeof(float), out_b = in_b * be->scale * be->scale;
    CU(cudaMemcpyAsync(pl->in, in, in_b, cudaMemcpyHostToDevice, be->stream), "cudaMemcpyAsync (input)");
    st = run_plan(be);
    if (st != ELANSR_OK) {
        cudaStreamSynchronize(be->stream);
        (void)cudaGetLastError();
        return st;
    }
    CU(cudaMemcpyAsync(out, pl->out, out_b, cudaMemcpyDeviceToHost, be->stream), "cudaMemcpyAsync (output)");
    CU(cudaStreamSynchronize(be->stream), "forward (cudaStreamSynchronize)");
    return ELANSR_OK;
}

/* ---- benchmark ---- */

/* Inputs for the benchmark: a hash of the element index, 0..255, different for every buffer. */
static __global__ void fill_kernel(float *x, long long count, unsigned seed) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ (unsigned)(i >> 32) * 40503u ^ seed;
        h ^= h >> 16;
        h *= 0x85ebca6bu;
        h ^= h >> 13;
        h *= 0xc2b2ae35u;
        h ^= h >> 16;
        x[i] = (float)(h >> 8) * (255.0f / 16777215.0f);
    }
}

static elansr_status cuda_benchmark(elan_backend *base, int n, int h, int w, int warmup, int iters, double *times_ms,
                                    size_t *peak_bytes) {
    cuda_backend *be = (cuda_backend *)base;
    if (n < 1 || h < 1 || w < 1 || warmup < 0 || iters < 1 || !times_ms || !peak_bytes)
        return elansr_fail(ELANSR_ERR_ARG, "GPU %d: invalid benchmark arguments", be->dev);
    CU(cudaSetDevice(be->dev), "cudaSetDevice");
    elansr_status st = plan_for(be, n, h, w);
    if (st != ELANSR_OK) return st;
    plan_t *pl = &be->plan;
    const size_t in_n = (size_t)n * 3 * h * w;
    float *inputs = NULL;
    cudaEvent_t *ev = (cudaEvent_t *)calloc(2 * (size_t)iters, sizeof(cudaEvent_t));
    cudaGraphExec_t graphs[BENCH_INPUTS] = {0};
    int use_graph = be->use_graph;
    if (!ev) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory for %d benchmark events", be->dev, iters);
    cudaError_t e = cudaMalloc((void **)&inputs, BENCH_INPUTS * in_n * sizeof(float));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        free(ev);
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        (void)cudaGetLastError();
        return elansr_fail(e == cudaErrorMemoryAllocation ? ELANSR_ERR_NOMEM : ELANSR_ERR_DEVICE,
                           "GPU %d: cannot allocate %.0f MiB of benchmark inputs (%.0f MiB free): %s", be->dev,
                           BENCH_INPUTS * in_n * sizeof(float) / MIB, fr / MIB, cudaGetErrorString(e));
    }
#define BCU(call, what)                                                 \
    do {                                                                \
        cudaError_t e_ = (call);                                        \
        if (e_ != cudaSuccess) {                                        \
            (void)cudaGetLastError();                                   \
            st = cuda_fail(be->dev, what, e_);                          \
            goto done;                                                  \
        }                                                               \
    } while (0)
#define BST(call)                                                       \
    do {                                                                \
        st = (call);                                                    \
        if (st != ELANSR_OK) goto done;                                 \
    } while (0)
    for (int i = 0; i < BENCH_INPUTS; i++) {
        fill_kernel<<<elan_cuda_grid((long long)in_n, 256), 256, 0, be->stream>>>(inputs + i * in_n, (long long)in_n,
                                                                                  0x9e3779b9u * (unsigned)(i + 1));
        BCU(cudaGetLastError(), "fill_kernel launch");
    }
    for (int i = 0; i < 2 * iters; i++) BCU(cudaEventCreate(&ev[i]), "cudaEventCreate");
    /* One eager forward first (warms cuBLAS before any capture), then a graph per input buffer. */
    BST(enqueue_forward(be, inputs, pl->out));
    if (use_graph) {
        for (int i = 0; i < BENCH_INPUTS && use_graph; i++)
            if (capture(be, inputs + i * in_n, pl->out, &graphs[i]) != ELANSR_OK) use_graph = 0;
        if (!use_graph && be->verbose)
            fprintf(stderr, "elansr: cuda:%d: no CUDA graph (%s); timing eager launches\n", be->dev, elansr_last_error());
    }
    for (int i = 0; i < warmup + iters; i++) {
        const int b = i % BENCH_INPUTS, t = i - warmup;
        if (t >= 0) BCU(cudaEventRecord(ev[2 * t], be->stream), "cudaEventRecord");
        if (use_graph)
            BCU(cudaGraphLaunch(graphs[b], be->stream), "cudaGraphLaunch");
        else
            BST(enqueue_forward(be, inputs + b * in_n, pl->out));
        if (t >= 0) BCU(cudaEventRecord(ev[2 * t + 1], be->stream), "cudaEventRecord");
    }
    BCU(cudaStreamSynchronize(be->stream), "benchmark (cudaStreamSynchronize)");
    for (int t = 0; t < iters; t++) {
        float ms = 0.0f;
        BCU(cudaEventElapsedTime(&ms, ev[2 * t], ev[2 * t + 1]), "cudaEventElapsedTime");
        times_ms[t] = ms;
    }
    *peak_bytes = pl->bytes + be->weights_bytes + BLAS_WORKSPACE;
done:
#undef BCU
#undef BST
    cudaStreamSynchronize(be->stream);
    for (int i = 0; i < BENCH_INPUTS; i++)
        if (graphs[i]) cudaGraphExecDestroy(graphs[i]);
    for (int i = 0; i < 2 * iters; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    free(ev);
    cudaFree(inputs);
    (void)cudaGetLastError();
    return st;
}

/* ---- creation ---- */

static void cuda_destroy(elan_backend *base) {
    cuda_backend *be = (cuda_backend *)base;
    if (!be) return;
    cudaSetDevice(be->dev);
    if (be->stream) cudaStreamSynchronize(be->stream);
    plan_free(be);
    if (be->blas) cublasDestroy(be->blas);
    if (be->workspace) cudaFree(be->workspace);
    if (be->weights) cudaFree(be->weights);
    if (be->stream) cudaStreamDestroy(be->stream);
    (void)cudaGetLastError();
    if (be->blocks) {
        for (int i = 0; i < be->n_blocks; i++) free(be->blocks[i].pairs);
        free(be->blocks);
    }
    free(be);
}

extern "C" int elan_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* The backend's switches (comparisons and A/Bs): env_off says whether NAME is set to something starting with '0';
   env_tristate gives 0 or 1 for a value starting with that digit, -1 (the default choice) otherwise. */
static int env_off(const char *name) {
    const char *v = getenv(name);
    return v && v[0] == '0';
}
static int env_tristate(const char *name) {
    const char *v = getenv(name);
    return v && (v[0] == '0' || v[0] == '1') ? v[0] - '0' : -1;
}

static elansr_status create(cuda_backend *be, const elan_model *m, const elansr_params *p) {
    cudaDeviceProp prop;
    CU(cudaSetDevice(be->dev), "cudaSetDevice");
    CU(cudaGetDeviceProperties(&prop, be->dev), "cudaGetDeviceProperties");
    snprintf(be->base.device_name, sizeof be->base.device_name, "cuda:%d %.100s", be->dev, prop.name);
    CU(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");

    cublasStatus_t bs = cublasCreate(&be->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        be->blas = NULL;
        return elansr_fail(bs == CUBLAS_STATUS_ALLOC_FAILED ? ELANSR_ERR_NOMEM : ELANSR_ERR_DEVICE,
                           "GPU %d: cublasCreate failed: %s", be->dev, cublasGetStatusString(bs));
    }
    CU(cudaMalloc(&be->workspace, BLAS_WORKSPACE), "cudaMalloc (cuBLAS workspace)");
    /* fp16/bf16: tensor cores are cuBLAS's default for half GemmEx; split-K partial sums must stay fp32 too */
    const cublasMath_t math = p->precision == ELANSR_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                              : be->act != ELAN_ACT_F32
                                  ? (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)
                                  : CUBLAS_DEFAULT_MATH;
    if ((bs = cublasSetStream(be->blas, be->stream)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetWorkspace(be->blas, be->workspace, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetMathMode(be->blas, math)) != CUBLAS_STATUS_SUCCESS)
        return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d: cuBLAS setup failed: %s", be->dev, cublasGetStatusString(bs));

    be->C = m->planes, be->k = m->planes / 3, be->scale = m->scale, be->n_blocks = m->n_blocks, be->pad = m->pad_multiple;
    memcpy(be->windows, m->windows, sizeof be->windows);
    be->width_s = be->C, be->width_t = be->C;
    /* The fused kernels exist for the half modes; ELANSR_CUDA_FUSED=0 keeps the unfused path (comparisons). */
    const int unfused = env_off("ELANSR_CUDA_FUSED");
    be->fused_lfe = be->fused_pw = be->act != ELAN_ACT_F32 && !unfused;
    /* tf32 and fp32: the LFE's two ShiftConvs as shift_gemm.cu passes when compiled for the shapes (the same
       switch; fp32 on CUDA cores, ELANSR_CUDA_SIMT_LFE=0 keeps shifts + cuBLAS there) */
    be->shift_gemm = be->act == ELAN_ACT_F32 && !unfused && (be->tf32 || !env_off("ELANSR_CUDA_SIMT_LFE"));
    be->blocks = (dblock *)calloc((size_t)m->n_blocks, sizeof(dblock));
    if (!be->blocks) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory", be->dev);
    for (int bi = 0; bi < m->n_blocks; bi++) {
        const elan_block *b = &m->blocks[bi];
        be->blocks[bi].n_pairs = b->n_pairs;
        be->blocks[bi].shifted = b->shifted;
        be->blocks[bi].pairs = (dpair *)calloc((size_t)b->n_pairs, sizeof(dpair));
        if (!be->blocks[bi].pairs) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory", be->dev);
        for (int j = 0; j < b->n_pairs; j++) {
            const int e = b->lfe[j].c0.conv.cout;
            if (e > be->width_s) be->width_s = e;
            if (e > be->width_t) be->width_t = e;
            if (elan_cuda_lfe_fused_supported(be->C, e)) be->fused_lfe = 0;
            if (elan_cuda_shift_gemm_supported(be->C, e) || elan_cuda_shift_gemm_supported(e, be->C)) be->shift_gemm = 0;
            if (elan_cuda_pw_supported(be->C, b->gmsa[j].proj_in.cout) || elan_cuda_pw_supported(be->C, be->C)) be->fused_pw = 0;
        }
    }
    /* The half residual stream, in both half modes (Set5 measured: fp16 32.4376, bf16 32.4368 against fp32
       32.4376; error statistics in docs/ACCURACY.md); ELANSR_CUDA_HALF_X=0 keeps x in fp32. */
    be->half_x = be->fused_lfe && be->fused_pw && !env_off("ELANSR_CUDA_HALF_X");
    /* project_inp fused into the attention (ELANSR_CUDA_FUSED_ATTN=0 keeps the separate pointwise kernel) */
    be->fused_attn = be->fused_pw && !env_off("ELANSR_CUDA_FUSED_ATTN") &&
                     elan_cuda_attn3_proj_supported(be->k, be->C, m->windows, be->act) == 0;
    /* the whole GMSA of unshifted blocks in one kernel (ELANSR_CUDA_GMSA=split keeps attention + project_out) */
    const char *gs = getenv("ELANSR_CUDA_GMSA");
    be->gmsa_one = be->fused_attn && be->half_x && !(gs && strcmp(gs, "split") == 0) &&
                   elan_cuda_gmsa_supported(be->k, be->C, m->windows, be->act) == 0;
    be->gmsa_shifted = be->gmsa_one && !(gs && strcmp(gs, "unshifted") == 0);
    /* reusing GMSAs without a running maximum (ELANSR_CUDA_ATTN_KM=0 keeps it) */
    be->attn_km = be->fused_attn && !env_off("ELANSR_CUDA_ATTN_KM");
    /* the LFE's wgmma path (sm_90a builds): the default; ELANSR_CUDA_LFE_WG=0 keeps the mma.sync kernel */
    be->lfe_wg = env_tristate("ELANSR_CUDA_LFE_WG");
    /* the whole GMSA as a persistent kernel (gmsa.cu gmsa_persist_kernel) at large sizes; ELANSR_CUDA_GMSA_PERSIST=0 /
       1 never / always */
    be->gmsa_persist = env_tristate("ELANSR_CUDA_GMSA_PERSIST");
    be->sweep_alt = !env_off("ELANSR_CUDA_SWEEP");
    /* the tail on tensor cores from xh (ELANSR_CUDA_TAIL=simt keeps the fp32 tail after a conversion of xh) */
    const char *tl = getenv("ELANSR_CUDA_TAIL");
    be->tail_mma = be->half_x && !(tl && strcmp(tl, "simt") == 0) && elan_cuda_tail_mma_supported(be->C, be->scale) == 0;
    be->tail_tf32 = be->tf32 && !(tl && strcmp(tl, "simt") == 0) && elan_cuda_tail_tf32_supported(be->C, be->scale) == 0;

    /* fp32 / tf32 carry the biases of the accumulating GEMMs (enqueue_forward); the half modes' unfused path
       keeps its bias_add after each, which also refreshes xh */
    be->carry_bias = be->act == ELAN_ACT_F32;

    stage_t sg = {NULL, 0, 0};
    elansr_status st = stage_model(be, m, &sg);
    if (st != ELANSR_OK) return st;
    be->weights_bytes = sg.used;
    CU(cudaMalloc(&be->weights, sg.used), "cudaMalloc (weights)");
    sg.host = (char *)calloc(1, sg.used);
    if (!sg.host) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory staging the weights", be->dev);
    sg.dev = (uintptr_t)be->weights;
    sg.used = 0;
    st = stage_model(be, m, &sg);
    if (st != ELANSR_OK) {
        free(sg.host);
        return st;
    }
    cudaError_t e = cudaMemcpyAsync(be->weights, sg.host, sg.used, cudaMemcpyHostToDevice, be->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(be->stream);
    free(sg.host);
    CU(e, "cudaMemcpyAsync (weights)");

    CU(elan_cuda_head_prepare(be->C), "cudaFuncSetAttribute (head)");
    for (int i = 0; i < 3; i++)
        CU(elan_cuda_attn_prepare(be->k, be->windows[i], be->act), "cudaFuncSetAttribute (attention)");
    be->attn3 = elan_cuda_attn3_supported(be->k, be->windows, be->act) == 0;
    if (be->attn3) CU(elan_cuda_attn3_prepare(be->k, be->windows, be->act), "cudaFuncSetAttribute (attention)");
    if (be->fused_lfe)
        for (int bi = 0; bi < m->n_blocks; bi++)
            for (int j = 0; j < m->blocks[bi].n_pairs; j++)
                CU(elan_cuda_lfe_fused_prepare(be->C, m->blocks[bi].lfe[j].c0.conv.cout, be->act), "cudaFuncSetAttribute (fused lfe)");
    if (be->fused_attn) CU(elan_cuda_attn3_proj_prepare(be->k, be->C, be->windows, be->act), "cudaFuncSetAttribute (attention)");
    if (be->gmsa_one) CU(elan_cuda_gmsa_prepare(be->k, be->C, be->windows, be->act), "cudaFuncSetAttribute (gmsa)");
    if (be->tail_mma) CU(elan_cuda_tail_mma_prepare(be->C, be->scale, be->act), "cudaFuncSetAttribute (tail)");
    if (be->tail_tf32) CU(elan_cuda_tail_tf32_prepare(be->C, be->scale), "cudaFuncSetAttribute (tail)");
    if (be->shift_gemm)
        for (int bi = 0; bi < m->n_blocks; bi++)
            for (int j = 0; j < m->blocks[bi].n_pairs; j++) {
                const int e = m->blocks[bi].lfe[j].c0.conv.cout;
                CU(elan_cuda_shift_gemm_prepare(be->C, e), "cudaFuncSetAttribute (shift+conv)");
                CU(elan_cuda_shift_gemm_prepare(e, be->C), "cudaFuncSetAttribute (shift+conv)");
            }
    if (be->fused_pw) {
        CU(elan_cuda_pw_prepare(be->C, be->C, be->act), "cudaFuncSetAttribute (pointwise)");
        CU(elan_cuda_pw_prepare(be->C, 2 * be->C, be->act), "cudaFuncSetAttribute (pointwise)");
    }
    if (p->verbose)
        fprintf(stderr, "elansr: %s: %.1f MiB of weights, %s%s%s%s%s%s\n", be->base.device_name, be->weights_bytes / MIB,
                be->half_x                 ? (be->act == ELAN_ACT_F16 ? "fp16 activations and residual stream, fp32 accumulation"
                                                                       : "bf16 activations and residual stream, fp32 accumulation")
                : be->act == ELAN_ACT_F16  ? "fp16 activations, fp32 accumulation and residual stream"
                : be->act == ELAN_ACT_BF16 ? "bf16 activations, fp32 accumulation and residual stream"
                : math == CUBLAS_TF32_TENSOR_OP_MATH ? "tf32 GEMMs"
                                                     : "fp32",
                be->fused_lfe ? ", fused LFE" : "", be->fused_pw ? ", fused 1x1 convs" : "",
                be->fused_attn ? ", project_inp in the attention" : "", be->tail_mma || be->tail_tf32 ? ", tail on tensor cores" : "",
                be->shift_gemm ? ", LFE as two shift+conv passes" : "");
    return ELANSR_OK;
}

extern "C" elansr_status elan_cuda_backend_create(const elan_model *m, const elansr_params *p, elan_backend **out) {
    if (!out) return elansr_fail(ELANSR_ERR_ARG, "elan_cuda_backend_create: out is NULL");
    *out = NULL;
    if (!m || !p) return elansr_fail(ELANSR_ERR_ARG, "elan_cuda_backend_create: NULL argument");
    const int dev = p->device;
    if (p->precision != ELANSR_PRECISION_DEFAULT && p->precision != ELANSR_PRECISION_FP32 &&
        p->precision != ELANSR_PRECISION_TF32 && p->precision != ELANSR_PRECISION_FP16 &&
        p->precision != ELANSR_PRECISION_BF16)
        return elansr_fail(ELANSR_ERR_ARG, "GPU %d: invalid precision %d", dev, (int)p->precision);
    const int count = elan_cuda_device_count();
    if (count == 0) return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d requested but no CUDA GPU found", dev);
    if (dev < 0 || dev >= count)
        return elansr_fail(ELANSR_ERR_DEVICE, "GPU %d requested but %d GPU%s found", dev, count, count == 1 ? "" : "s");
    elansr_status st = check_model(m, dev);
    if (st != ELANSR_OK) return st;

    cuda_backend *be = (cuda_backend *)calloc(1, sizeof *be);
    if (!be) return elansr_fail(ELANSR_ERR_NOMEM, "GPU %d: out of host memory", dev);
    be->base.name = "cuda";
    be->base.forward = cuda_forward;
    be->base.destroy = cuda_destroy;
    be->base.benchmark = cuda_benchmark;
    be->dev = dev;
    be->verbose = p->verbose;
    /* DEFAULT is fp16: it meets the accuracy bar (Set5 within 0.0005 dB of fp32, docs/ACCURACY.md) at a
       fraction of fp32's time. fp32 and tf32 only when asked for. */
    be->act = p->precision == ELANSR_PRECISION_FP16 || p->precision == ELANSR_PRECISION_DEFAULT ? ELAN_ACT_F16
              : p->precision == ELANSR_PRECISION_BF16 ? ELAN_ACT_BF16
                                                      : ELAN_ACT_F32;
    be->esz = be->act == ELAN_ACT_F32 ? 4 : 2;
    be->tf32 = p->precision == ELANSR_PRECISION_TF32;
    /* ELANSR_CUDA_GRAPHS=0 launches every forward eagerly (debugging, or comparing the two paths). */
    be->use_graph = !env_off("ELANSR_CUDA_GRAPHS");
    st = create(be, m, p);
    if (st != ELANSR_OK) {
        cuda_destroy(&be->base);
        return st;
    }
    *out = &be->base;
    return ELANSR_OK;
}
