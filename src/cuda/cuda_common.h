/* cuda_common.h — what the CUDA backend's files share: the argument blocks and launchers of the layer
   kernels (conv3x3.cu, lfe.cu, gmsa.cu), and the error-check macros of cuda_backend.cu.

   Activations live on the device as NHWC over the padded image (Hp x Wp, multiples of 16): pixel
   p = (n*Hp + y)*Wp + x holds its channels contiguously at p*C. Every 1x1 conv is then one cuBLAS GEMM over
   all N*Hp*Wp pixels, and an attention window reads each token's channels as one contiguous run.
   Pixel and element indices are 64-bit: n*Hp*Wp*C passes 2^31 well before device memory runs out.

   Storage precision (elan_cuda_act): in fp32/tf32 every activation is float. In fp16/bf16 the residual stream
   x and the head output hb stay float (the residual sum over ~50 updates is where half storage would lose the
   most: bf16 keeps 8 bits), and a half copy xh of x feeds the GEMMs and the shift; every other activation
   (sA, t, g) is half. GEMMs accumulate in fp32 on tensor cores; all elementwise math and the softmax are fp32.
   Activation pointers of the layer kernels are therefore void *, typed by the act field.

   Each launcher only enqueues on the given stream and returns cudaGetLastError() of the launch; the caller
   turns a failure into an elansr status naming the kernel. */
#ifndef ELANSR_CUDA_COMMON_H
#define ELANSR_CUDA_COMMON_H

#include <cuda_runtime.h>

/* Storage type of the half-precision activations (sA, t, g, xh). */
typedef enum { ELAN_ACT_F32 = 0, ELAN_ACT_F16 = 1, ELAN_ACT_BF16 = 2 } elan_cuda_act;

/* ---- conv3x3.cu ---- */

/* head: reflect/mirror pad (through row/column index tables), sub_mean, 3x3 conv 3 -> C with zero padding
   at the padded image's border; writes the result both to x (the residual stream) and hb (kept for the tail).
   x may be NULL when nothing reads it (the half residual stream lives in xh). */
typedef struct {
    const float *in;        /* n x 3 x H x W, NCHW */
    const int *mirror_y;    /* Hp entries: source row of padded row y */
    const int *mirror_x;    /* Wp entries */
    const float *sub_mean;  /* 12: w[3][3] then b[3] */
    const float *w;         /* C x 27, PyTorch layout [cout][cin][ky][kx] */
    const float *b;         /* C */
    float *x, *hb;          /* n x Hp x Wp x C; x may be NULL */
    void *xh;               /* NULL, or the same values as x in act (fp16/bf16) */
    int act;
    int n, H, W, Hp, Wp, C;
} elan_cuda_head_args;

/* tail: (x + hb), 3x3 conv C -> 3*s*s with zero padding at the padded border, pixel shuffle, add_mean
   (folded into w and b at creation), crop to s*H x s*W, written as NCHW.
   elan_cuda_tail reads x, w (fp32 throughout); elan_cuda_tail_mma (fp16 / bf16 modes with the half residual
   stream, on tensor cores) reads xh of type act instead of x and the fp16 weights wh, and forms
   s = fp16(float(xh) + hb); elan_cuda_tail_tf32 (precision tf32, on tensor cores) reads x and the tf32 weights
   wt, and forms s = tf32((x + x_bias) + hb) (fp32 sums, one rounding to nearest, ties away from zero).
   elan_cuda_tail_tf32 adds x_bias[c] to x when it is not NULL: the biases the tf32 forward carries beside its
   residual stream, so that no separate pass adds them (elan_cuda_tail ignores x_bias: the fp32 forward adds
   them with one bias_add before it). Zero padding
   applies to s as a whole: outside the padded image s = 0, x_bias included. Zero-initialise the struct
   (memset): x_bias and wt are NULL then, and the older fields keep their meaning. */
typedef struct {
    const float *x, *hb;    /* n x Hp x Wp x C */
    const float *w;         /* C x 9 x nout_pad: [cin][tap][out], add_mean folded in, zero past 3*s*s */
    const float *b;         /* nout_pad */
    float *out;             /* n x 3 x sH x sW */
    int n, H, W, Hp, Wp, C, scale;
    const void *xh;         /* tail_mma: act, n x Hp x Wp x C (x unused) */
    int act;                /* tail_mma: ELAN_ACT_F16 or ELAN_ACT_BF16 */
    const void *wh;         /* tail_mma: fp16, elan_cuda_tail_mma_weights' layout (w unused) */
    const float *x_bias;    /* elan_cuda_tail_tf32: C floats added to x, or NULL (the other tails: unused) */
    const float *wt;        /* tail_tf32: tf32-rounded floats, elan_cuda_tail_tf32_weights' layout (w unused) */
} elan_cuda_tail_args;

/* Output channels of the tail padded to a multiple of 4 (float4 loads of the weights). */
static inline int elan_cuda_tail_nout_pad(int scale) { return (3 * scale * scale + 3) / 4 * 4; }
/* Input channels a row of the tensor-core tail's weights holds (C zero-padded). */
#define ELAN_CUDA_TAIL_MMA_K 64

/* ---- lfe.cu ---- */

/* Shift gather of ShiftConv: out[p][c] = v(in[p shifted by tap[c]][c]) inside the padded image, 0 outside,
   where v(t) = t without bias, t + bias[c] with bias and relu 0, max(t + bias[c], 0) with bias and relu 1.
   Both are applied before the zero fill, exactly as the network does: relu 1 is the bias and ReLU of the
   previous 1x1 conv (the second shift), relu 0 the biases the fp32 / tf32 forward carries instead of adding
   them to the residual stream (the first shift; cuda_backend.cu). */
typedef struct {
    const void *in;             /* both of type act */
    void *out;
    const unsigned char *tap;   /* cin entries, ky*3 + kx */
    const float *bias;          /* NULL: plain shift; else bias[c] added first */
    int relu;                   /* with bias: 1 for ReLU after the bias, 0 for none */
    int act;
    int quads;                  /* 1: cin % 4 == 0 and every aligned run of 4 channels shares one tap, so a
                                   thread moves 4 channels (16 or 8 bytes) at once */
    int cin, Hp, Wp;
    long long pixels;           /* n*Hp*Wp */
} elan_cuda_shift_args;

/* ---- shift_gemm.cu (precision tf32) ----

   One ShiftConv of LFE as one pass, on tf32 tensor cores, fp32 in and out:
     s[p][k]   = in[p + d(tap[k])][k] + in_bias[k]     (0 outside the padded Hp x Wp image; in_bias may be NULL)
     mode 0:   out[p][j] = relu(bias[j] + sum_k w[j][k] s[p][k])        (LFE's first conv: out = t)
     mode 1:   out[p][j] += sum_k w[j][k] s[p][k] (+ bias[j] if not NULL) (LFE's second conv: out = x, in place)
   with d(tap) = (tap / 3 - 1, tap % 3 - 1), s and w rounded to tf32 (unless simt), fp32 accumulation. in, out: P x K and P x N
   NHWC, 16-byte aligned; w: [N][K] (PyTorch layout). The taps must be constant over aligned runs of 4 channels
   (ELAN's are). out must not alias in. */
typedef struct {
    const float *in;
    const unsigned char *tap;   /* K entries, 0..8 */
    const float *in_bias;       /* K, or NULL */
    const float *w;             /* N x K */
    const float *bias;          /* N, or NULL in mode 1 */
    float *out;
    int mode;
    int K, N;
    int n, Hp, Wp;
    int out_tf32;               /* mode 0: round out to tf32 (so that the next pass may take it as is) */
    int in_tf32;                /* in holds tf32 values already (and in_bias is NULL): staged by cp.async */
    int simt;                   /* fp32 on CUDA cores instead (precision fp32): nothing rounded to tf32; out_tf32
                                   and in_tf32 must be 0 */
} elan_cuda_shift_gemm_args;

/* ---- lfe_fused.cu (fp16 / bf16 only) ---- */

/* The whole LFE in one kernel: x += c1(shift1(relu(c0(shift0(x)) + b0))) + b1, where c0/c1 are 1x1 convs
   (w0: [e][C], w1: [C][e], PyTorch layout, in the activation type) and shift0/shift1 move channel c by its tap
   (ky*3 + kx: value from pixel (y + ky - 1, x + kx - 1), zero outside the padded Hp x Wp image). The relu output
   is what shift1 zero-fills. Reads the half copy xh_in of x over each tile and a 2-pixel halo, and the fp32 x
   of the tile; writes the new x (in place, own pixels only) and its half copy to xh_out. With x == NULL the
   residual stream is the half tensor itself (xh_out = xh_in + LFE(xh_in), rounded once). xh_out must not alias
   xh_in: neighbouring tiles still read the old values. */
typedef struct {
    const void *xh_in;          /* act, P x C */
    float *x;                   /* P x C, updated in place; NULL: half residual stream */
    void *xh_out;               /* act, P x C */
    const void *w0;             /* act, e x C */
    const float *b0;            /* e */
    const unsigned char *tap0;  /* C */
    const void *w1;             /* act, C x e */
    const float *b1;            /* C */
    const unsigned char *tap1;  /* e */
    int act;                    /* ELAN_ACT_F16 or ELAN_ACT_BF16 */
    int C, e;
    int n, Hp, Wp;              /* P = n*Hp*Wp; Hp, Wp multiples of 16 */
    int wg;                     /* the wgmma path (sm_90a builds, xh_out 16-byte aligned): 0 off, else on */
    int rev;                    /* sweep: 0 takes the tiles from the first image's top row down, else from the
                                   last image's bottom row up (the same results; see elan_cuda_gmsa_args.rev) */
} elan_cuda_lfe_args;

/* ---- pointwise.cu (fp16 / bf16 only) ---- */

/* A 1x1 conv over P pixels on tensor cores with its epilogue fused: r = in[p] . w^T + b (fp32 accumulation),
   then either out[p] = r in the activation type (x == NULL), or x[p] += r in fp32 and, when xh is not NULL,
   xh[p] = x[p] in the activation type (out == NULL), or (out == NULL, x == NULL: the half residual stream)
   xh[p] += r, summed in fp32 and rounded once. Rows are read and written at the given strides (elements). */
typedef struct {
    const void *in;             /* act, P rows of cin */
    const void *w;              /* act, cout x cin */
    const float *b;             /* cout */
    void *out;                  /* act, P rows of cout, or NULL */
    float *x;                   /* P rows of cout, or NULL */
    void *xh;                   /* act, P rows of cout, or NULL */
    int in_stride, out_stride, x_stride;
    int act;
    int cin, cout;
    long long P;
} elan_cuda_pw_args;

/* ---- gmsa.cu ---- */

/* Windowed attention of one channel group: per window of ws x ws tokens, y = softmax_rows(q q^T) v.
   q and v are read at q + p*q_stride (+ q_bias) and v + p*v_stride (+ v_bias), k channels each; y written at
   y + p*y_stride. shift = ws/2 for shifted blocks (torch.roll folded into the token -> pixel map), else 0. */
typedef struct {
    const void *q;              /* q, v and y of type act; the biases float */
    const float *q_bias;
    const void *v;
    const float *v_bias;
    void *y;
    int act;
    int tf32;                   /* act fp32: 1 to run QQ^T and AV on tensor cores in tf32 (precision TF32),
                                   0 for fp32 on CUDA cores */
    int q_stride, v_stride, y_stride;
    int k, ws, shift;
    int n, Hp, Wp;
    /* project_inp fused (elan_cuda_attn3 only; elan_cuda_attn3_proj_supported says for which shapes): when x is
       not NULL the kernel forms its group's operands itself from x (act, cin channels at x_stride):
       v = x wv^T + bv, and q = x wq^T + bq, also written as fp16 to q_out (at q_out_stride) when that is not
       NULL; or, with wq == NULL, q is read as fp16 from q (at q_stride, no bias): the block's first GMSA wrote
       it to its q_out. wq, wv: act, k rows of cin (PyTorch layout). v, v_bias, q_bias are then unused. */
    const void *x;
    const void *wq, *wv;
    const float *bq, *bv;
    void *q_out;
    int x_stride, cin, q_out_stride;
    /* fused project_inp only, optional: the computing GMSA (wq != NULL) writes each pixel's maximum score (log2
       units, fp32) to m_out + p; a reusing GMSA given that plane as m_in, computed from the same q, skips the
       running maximum of the online softmax (the same A up to the rounding of its rescaling). */
    float *m_out;
    const float *m_in;
} elan_cuda_attn_args;

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t elan_cuda_head(const elan_cuda_head_args *a, cudaStream_t s);
cudaError_t elan_cuda_tail(const elan_cuda_tail_args *a, cudaStream_t s);
/* Largest dynamic shared memory the head needs for C channels (for cudaFuncSetAttribute at creation). */
size_t elan_cuda_head_smem(int C);
cudaError_t elan_cuda_head_prepare(int C);
/* 0 when elan_cuda_tail_mma handles C planes at this scale (4 <= C <= 64, C % 4 == 0, scale 2, 3, 4), else -1:
   the caller keeps elan_cuda_tail. */
int elan_cuda_tail_mma_supported(int C, int scale);
/* Halves of the tensor-core tail's weights: 9 x NP x ELAN_CUDA_TAIL_MMA_K, NP = 3*s*s rounded up to 16 (0 for an
   unsupported scale). */
size_t elan_cuda_tail_mma_weights_count(int scale);
/* Fills wh (host, that many halves) from the fp32 tail weights w (host, elan_cuda_tail's [cin][tap][out]
   layout): wh[tap][out][cin] rounded to fp16, zero past 3*s*s outputs and past C inputs. */
void elan_cuda_tail_mma_weights(const float *w, int C, int scale, void *wh);
/* Raises the kernel's dynamic shared-memory limit (up to 109 KB); once, at creation. */
cudaError_t elan_cuda_tail_mma_prepare(int C, int scale, int act);
cudaError_t elan_cuda_tail_mma(const elan_cuda_tail_args *a, cudaStream_t s);
/* The tail on tf32 tensor cores (precision tf32): 0 when elan_cuda_tail_tf32 handles C planes at this scale on the
   current device (4 <= C <= 64, C % 4 == 0, scale 2, 3, 4, and the device grants the kernel's shared memory:
   x4 needs 189 KB, more than sm_80 has), else -1: the caller keeps elan_cuda_tail. */
int elan_cuda_tail_tf32_supported(int C, int scale);
/* Floats of its weights: 9 x 8 x MT x 128 (tap, k-step of 8 channels, m16 tile of outputs, the 32 lanes' 4 A
   fragment registers), MT = 3*s*s / 16 rounded up (0 for an unsupported scale). */
size_t elan_cuda_tail_tf32_weights_count(int scale);
/* Fills wt (host, that many floats, to be copied to 16-byte aligned device memory) from the fp32 tail weights w
   (host, elan_cuda_tail's [cin][tap][out] layout), rounded to tf32 (to nearest, ties away from zero, as
   cvt.rna), in mma.m16n8k8 A-fragment order: wt[tap][j][mt][lane][r] = w[k][tap][n] with n = 16 mt + lane / 4
   + 8 (r & 1), k = 8j + 2 (lane % 4) + (r >> 1); zero past 3*s*s outputs and past C inputs. */
void elan_cuda_tail_tf32_weights(const float *w, int C, int scale, float *wt);
/* Raises the kernel's dynamic shared-memory limit (up to 189 KB: one CTA per SM); once, at creation. */
cudaError_t elan_cuda_tail_tf32_prepare(int C, int scale);
/* Reads x, hb (16-byte aligned), x_bias (optional), wt (16-byte aligned), b; writes out (8-byte aligned for
   scales 2 and 4, 4-byte for 3). cudaErrorInvalidValue for what it cannot do. */
cudaError_t elan_cuda_tail_tf32(const elan_cuda_tail_args *a, cudaStream_t s);

cudaError_t elan_cuda_shift(const elan_cuda_shift_args *a, cudaStream_t s);
/* shift_gemm.cu: 0 when the kernel is compiled for (K, N) (ELAN-light: (60, 120) and (120, 60)), else -1;
   prepare raises its dynamic shared-memory limit (once, at creation). */
int elan_cuda_shift_gemm_supported(int K, int N);
cudaError_t elan_cuda_shift_gemm_prepare(int K, int N);
cudaError_t elan_cuda_shift_gemm(const elan_cuda_shift_gemm_args *a, cudaStream_t s);
/* x[p][c] += b[c] over pixels*C elements: the bias of a 1x1 conv whose GEMM accumulated into x with beta = 1
   (the half modes' unfused path), or, once before the tail, the biases the fp32 / tf32 forward carried; when xh
   is not NULL, also xh = x converted to act (fp16 saturating at +-65504). */
cudaError_t elan_cuda_bias_add(float *x, const float *b, void *xh, int act, int C, long long pixels, cudaStream_t s);
/* x[e] = xh[e] for count elements (act fp16 or bf16): the half residual stream back to fp32 for the fp32 tail
   (ELANSR_CUDA_TAIL=simt, or a shape elan_cuda_tail_mma lacks). */
cudaError_t elan_cuda_to_f32(const void *xh, float *x, int act, long long count, cudaStream_t s);

/* 0 when the fused LFE kernel handles C planes with e hidden channels, else -1 (the caller falls back to
   shift + GEMM + shift + GEMM). */
int elan_cuda_lfe_fused_supported(int C, int e);
/* Raises the kernel's dynamic shared-memory limit; once, at creation. */
cudaError_t elan_cuda_lfe_fused_prepare(int C, int e, int act);
/* 1 when the taps (host copies, C and e entries) let the fused kernel take its fast run path: tap0 constant
   over each aligned run of 4 channels and tap1 over each aligned run of 8 (ELAN's shifts of 5 groups of C/5 and
   e/5 channels qualify when C/5 % 4 == 0 and e/5 % 8 == 0, as for C = 60, e = 120); else 0, and the kernel
   takes its generic path (any taps, correct, slower). The kernel decides by itself; this is for
   reporting and for choosing between the fused and the unfused LFE. */
int elan_cuda_lfe_fused_taps_ok(const unsigned char *host_taps0, int C, const unsigned char *host_taps1, int e);
cudaError_t elan_cuda_lfe_fused(const elan_cuda_lfe_args *a, cudaStream_t s);

/* 0 when the pointwise kernel handles cin -> cout, else -1. */
int elan_cuda_pw_supported(int cin, int cout);
cudaError_t elan_cuda_pw_prepare(int cin, int cout, int act);
cudaError_t elan_cuda_pw(const elan_cuda_pw_args *a, cudaStream_t s);

/* 0 when attention over groups of k channels with window ws is compiled in, else -1. */
int elan_cuda_attn_supported(int k, int ws);
/* Raises the dynamic shared-memory limit of the attention kernel for (k, ws, act); once, at creation. */
cudaError_t elan_cuda_attn_prepare(int k, int ws, int act);
cudaError_t elan_cuda_attn(const elan_cuda_attn_args *a, cudaStream_t s);
/* The three groups of a GMSA in one launch (fp16/bf16 on tensor cores; fp32 storage on tf32 tensor cores with
   tf32 set, or on CUDA cores for k <= 20 without it; windows exactly 4, 8, 16, same k and image): 0 / -1. Other
   fp32 shapes (and ELANSR_CUDA_ATTN=simt): elan_cuda_attn3 runs elan_cuda_attn once per group. */
int elan_cuda_attn3_supported(int k, const int ws[3], int act);
cudaError_t elan_cuda_attn3_prepare(int k, const int ws[3], int act);
cudaError_t elan_cuda_attn3(const elan_cuda_attn_args a[3], cudaStream_t s);
/* 0 when elan_cuda_attn3 can also fuse project_inp (x != NULL) for groups of k channels from cin, else -1;
   prepare raises that variant's shared-memory limit. */
int elan_cuda_attn3_proj_supported(int k, int cin, const int ws[3], int act);
cudaError_t elan_cuda_attn3_proj_prepare(int k, int cin, const int ws[3], int act);
/* The whole GMSA of a block (half modes, gmsa.cu gmsa_kernel): project_inp as elan_cuda_attn3 with x != NULL (g:
   the three groups' arguments), the attention, then x_out = x + bo + wo y (project_out and the residual; wo: act,
   C x C with C = cin = 3k, PyTorch layout), x_out not x. Unshifted blocks (every shift 0): one launch, y unused.
   Shifted blocks (shift ws / 2 in every group): two launches, the ws 4 and ws 8 groups' attention writing their y
   to g[0].y and g[1].y (scratch, as elan_cuda_attn3 would), then the rest. Supported for the shapes of
   elan_cuda_attn3_proj_supported with cin = 3k, else -1; prepare raises the limits of every kernel involved.
   persist: 1 for the persistent kernel (one CTA of two 256-thread teams per SM, constants staged once, each
   region's x staged during the previous region), 0 for one CTA per region, -1 to choose (persistent where there
   are at least 8 regions of 16 x 16 pixels per SM). */
typedef struct {
    elan_cuda_attn_args g[3];
    const void *wo;
    const float *bo;
    void *x_out;
    int persist;
    /* sweep: 0 takes the regions from the first image's top row down, else from the last image's bottom row up
       (the same results). Shifted blocks' second launch sweeps the other way from their first, so it starts
       where that one ended. Why: at 4K a tensor of the residual stream (62 MB) is larger than the L2, and a
       kernel that starts where the previous one ended finds the last-written part of its input still there. */
    int rev;
} elan_cuda_gmsa_args;
int elan_cuda_gmsa_supported(int k, int cin, const int ws[3], int act);
cudaError_t elan_cuda_gmsa_prepare(int k, int cin, const int ws[3], int act);
cudaError_t elan_cuda_gmsa(const elan_cuda_gmsa_args *a, cudaStream_t s);

#ifdef __cplusplus
}
#endif

/* Grid for grid-stride elementwise kernels: enough blocks to fill any current GPU, never more than needed. */
static inline unsigned elan_cuda_grid(long long elems, int threads) {
    long long b = (elems + threads - 1) / threads;
    if (b > 65536) b = 65536;
    if (b < 1) b = 1;
    return (unsigned)b;
}


/* ---- device helpers: conversions between the storage types and float ---- */
#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

/* ---- programmatic dependent launch (sm_90+) ----
   The fused kernels of the half modes (head, LFE, attention, pointwise, tensor-core tail) are launched with
   cudaLaunchAttributeProgrammaticStreamSerialization through elan_launch_pdl: a kernel's CTAs may then be placed
   while the previous kernel's last CTAs still run, and stage their weights meanwhile. Each such kernel calls
   elan_pdl_wait() before it reads or writes any activation (griddepcontrol.wait returns once the kernels it
   depends on have completed and their writes are visible), and elan_pdl_trigger() where its own dependents may
   begin to launch: persistent kernels on their last tile, the attention in its last wave (earlier, the next
   kernel's CTAs would take SM room from the attention's own later waves). On older GPUs both are no-ops and the
   launch is an ordinary one; ELANSR_CUDA_PDL=0 turns the attribute off (comparisons). Inside a stream capture the
   attribute becomes a programmatic edge of the graph. */
static __device__ __forceinline__ void elan_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void elan_pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
static inline int elan_pdl_enabled(void) {
    static int env = -1;
    if (env < 0) {
        const char *e = getenv("ELANSR_CUDA_PDL");
        env = !(e && !strcmp(e, "0"));
    }
    int dev = 0, major = 0;
    if (!env || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
        return 0;
    return major >= 9;
}
/* CTAs of `kernel` resident at once on the current GPU (SMs x occupancy at `threads` and `smem`, each at least 1;
   a kernel not prepared for its shared memory then fails at launch, which reports it): the grid of the persistent
   kernels, and the size of the attention's last wave. */
template <typename F>
static cudaError_t elan_resident_ctas(F kernel, int threads, size_t smem, long long *ctas) {
    int dev = 0, sms = 0, per_sm = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
    if (e != cudaSuccess) return e;
    *ctas = (long long)(sms > 0 ? sms : 1) * (per_sm > 0 ? per_sm : 1);
    return cudaSuccess;
}
template <typename... P, typename... A>
static cudaError_t elan_launch_pdl(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                   A... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = elan_pdl_enabled() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

static __device__ __forceinline__ float elan_to_f(float v) { return v; }
static __device__ __forceinline__ float elan_to_f(__half v) { return __half2float(v); }
static __device__ __forceinline__ float elan_to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

/* fp16 saturates instead of overflowing to inf (activations of pure noise can pass 65504; see README of the
   backend in cuda_backend.cu). NaN stays NaN. */
template <typename T> static __device__ __forceinline__ T elan_from_f(float v);
template <> __device__ __forceinline__ float elan_from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half elan_from_f<__half>(float v) {
    return __float2half_rn(v != v ? v : fminf(fmaxf(v, -65504.0f), 65504.0f));
}
template <> __device__ __forceinline__ __nv_bfloat16 elan_from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/* 4 consecutive elements as a float4 (one 16-byte load for float, one 8-byte load for the half types);
   p must be aligned to 4 elements. */
static __device__ __forceinline__ float4 elan_ld4(const float *p) { return *(const float4 *)p; }
static __device__ __forceinline__ float4 elan_ld4(const __half *p) {
    const uint2 u = *(const uint2 *)p;
    const float2 a = __half22float2(*(const __half2 *)&u.x), b = __half22float2(*(const __half2 *)&u.y);
    return make_float4(a.x, a.y, b.x, b.y);
}
static __device__ __forceinline__ float4 elan_ld4(const __nv_bfloat16 *p) {
    const uint2 u = *(const uint2 *)p;
    const float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&u.x), b = __bfloat1622float2(*(const __nv_bfloat162 *)&u.y);
    return make_float4(a.x, a.y, b.x, b.y);
}
static __device__ __forceinline__ void elan_st4(float *p, float4 v) { *(float4 *)p = v; }
static __device__ __forceinline__ void elan_st4(__half *p, float4 v) {
    __half2 a = __halves2half2(elan_from_f<__half>(v.x), elan_from_f<__half>(v.y));
    __half2 b = __halves2half2(elan_from_f<__half>(v.z), elan_from_f<__half>(v.w));
    *(uint2 *)p = make_uint2(*(const unsigned *)&a, *(const unsigned *)&b);
}
static __device__ __forceinline__ void elan_st4(__nv_bfloat16 *p, float4 v) {
    __nv_bfloat162 a = __halves2bfloat162(__float2bfloat16_rn(v.x), __float2bfloat16_rn(v.y));
    __nv_bfloat162 b = __halves2bfloat162(__float2bfloat16_rn(v.z), __float2bfloat16_rn(v.w));
    *(uint2 *)p = make_uint2(*(const unsigned *)&a, *(const unsigned *)&b);
}
#endif

#endif
