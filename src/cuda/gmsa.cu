/* gmsa.cu — the attention inside GMSA: for every ws x ws window of one channel group,
   A = softmax_rows(q q^T) (no scaling, keys are the queries) and y = A v. project_inp / project_out are
   cuBLAS GEMMs in cuda_backend.cu; this file is only the windowed attention.

   Shape of the work: a window has T = ws^2 tokens (16, 64, 256) with k channels each (20 in ELAN-light). A
   block of 256 threads holds 256 tokens — 256/T whole windows — and each thread owns one token: it loads its
   own q and v rows (contiguous channels in NHWC, bias of project_inp added on the way), keeps q in registers,
   publishes q and v to shared memory, and after one barrier computes its output row alone. The row of A is
   never stored: scores are taken 16 keys at a time and folded into a running max / running sum (online
   softmax), so each key costs one pass over q_j and one over v_j, both broadcast reads from shared memory.

   torch.roll of shifted blocks is folded into the token -> pixel map: token (ty, tx) of window (wy, wx) is
   pixel ((wy*ws + ty + shift) mod Hp, (wx*ws + tx + shift) mod Wp), and its output goes back to the same
   pixel, which is exactly roll(-shift), attend, roll(+shift).

   Reusing GMSAs need the A of the block's first GMSA. A is T x T per window and group (256 x 256 floats for
   ws = 16: 12x the size of q), so instead the first GMSA's project_inp output stays alive for the whole block
   and reusing GMSAs read their q from it and recompute A: no extra memory traffic to store A, and the result
   is bit-identical to the first GMSA's A because the same kernel computes it from the same q.

   The channel count is a template parameter KP (k rounded up to a compiled size, zero-padded), so that q,
   the accumulator and the 16 scores stay in registers: a run-time-sized array would go to local memory.

   The storage type T of q, v and y (float, __half, __nv_bfloat16) is a template parameter too: half inputs are
   widened to fp32 on load (q + bias in fp32, so the scores q.q^T, which reach the hundreds, are fp32 sums of
   fp32 products), shared memory and all the math stay fp32, and y is rounded once on store. */
#include "cuda_common.h"
#include "mma.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_THREADS 256
#define ATTN_CHUNK 16

template <int WS, int KP>
struct attn_shape {
    static constexpr int T = WS * WS;                 /* tokens per window */
    static constexpr int WPB = ATTN_THREADS / T;      /* windows per block */
    static constexpr int WST = T * KP + 4;            /* floats between windows in shared memory: the +4 puts
                                                         the broadcast reads of two windows in a warp (ws = 4)
                                                         on different banks */
    static constexpr size_t SMEM = 2 * (size_t)WPB * WST * sizeof(float);
};

template <int WS, int KP, typename T>
static __device__ __forceinline__ void attn_body(const elan_cuda_attn_args &a, int vec4) {
    typedef attn_shape<WS, KP> S;
    extern __shared__ float4 smem4[];
    float *sq = (float *)smem4;
    float *sv = sq + S::WPB * S::WST;
    const int tid = threadIdx.x, wl = tid / S::T, i = tid % S::T;
    const int nwx = a.Wp / WS, nwy = a.Hp / WS;
    const long long nwin = (long long)a.n * nwy * nwx;
    const long long win = (long long)blockIdx.x * S::WPB + wl;
    const bool live = win < nwin;
    const int K = a.k;

    long long p = 0;
    if (live) {
        const int wx = (int)(win % nwx), wy = (int)(win / nwx % nwy);
        const long long img = win / nwx / nwy;
        int py = wy * WS + i / WS + a.shift, px = wx * WS + i % WS + a.shift;
        if (py >= a.Hp) py -= a.Hp;
        if (px >= a.Wp) px -= a.Wp;
        p = (img * a.Hp + py) * a.Wp + px;
    }

    float qi[KP], acc[KP];
    float *qs = sq + wl * S::WST + i * KP, *vs = sv + wl * S::WST + i * KP;
    if (live && vec4) {
        const T *q4 = (const T *)a.q + p * a.q_stride, *v4 = (const T *)a.v + p * a.v_stride;
        const float4 *qb4 = (const float4 *)a.q_bias, *vb4 = (const float4 *)a.v_bias;
#pragma unroll
        for (int c = 0; c < KP / 4; c++) {
            const float4 q = elan_ld4(q4 + 4 * c), qb = qb4[c], v = elan_ld4(v4 + 4 * c), vb = vb4[c];
            qi[4 * c] = q.x + qb.x;
            qi[4 * c + 1] = q.y + qb.y;
            qi[4 * c + 2] = q.z + qb.z;
            qi[4 * c + 3] = q.w + qb.w;
            ((float4 *)qs)[c] = make_float4(qi[4 * c], qi[4 * c + 1], qi[4 * c + 2], qi[4 * c + 3]);
            ((float4 *)vs)[c] = make_float4(v.x + vb.x, v.y + vb.y, v.z + vb.z, v.w + vb.w);
        }
    } else {
        const T *q = (const T *)a.q + p * a.q_stride, *v = (const T *)a.v + p * a.v_stride;
#pragma unroll
        for (int c = 0; c < KP; c++) {
            const bool in = live && c < K;
            qi[c] = in ? elan_to_f(q[c]) + a.q_bias[c] : 0.0f;
            qs[c] = qi[c];
            vs[c] = in ? elan_to_f(v[c]) + a.v_bias[c] : 0.0f;
        }
    }
    __syncthreads();
    if (!live) return;

#pragma unroll
    for (int c = 0; c < KP; c++) acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const float *qw = sq + wl * S::WST, *vw = sv + wl * S::WST;
#pragma unroll 1
    for (int j0 = 0; j0 < S::T; j0 += ATTN_CHUNK) {
        float s[ATTN_CHUNK];
        float cm = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < ATTN_CHUNK; jj++) {
            const float4 *qj = (const float4 *)(qw + (j0 + jj) * KP);
            float d = 0.0f;
#pragma unroll
            for (int c = 0; c < KP / 4; c++) {
                const float4 t = qj[c];
                d += qi[4 * c] * t.x;
                d += qi[4 * c + 1] * t.y;
                d += qi[4 * c + 2] * t.z;
                d += qi[4 * c + 3] * t.w;
            }
            s[jj] = d;
            cm = fmaxf(cm, d);
        }
        const float mn = fmaxf(m, cm);
        const float sc = expf(m - mn); /* 0 on the first chunk (m = -inf) */
        l *= sc;
#pragma unroll
        for (int c = 0; c < KP; c++) acc[c] *= sc;
        m = mn;
#pragma unroll
        for (int jj = 0; jj < ATTN_CHUNK; jj++) {
            const float e = expf(s[jj] - m);
            l += e;
            const float4 *vj = (const float4 *)(vw + (j0 + jj) * KP);
#pragma unroll
            for (int c = 0; c < KP / 4; c++) {
                const float4 t = vj[c];
                acc[4 * c] += e * t.x;
                acc[4 * c + 1] += e * t.y;
                acc[4 * c + 2] += e * t.z;
                acc[4 * c + 3] += e * t.w;
            }
        }
    }

    const float inv = 1.0f / l;
    if (vec4) {
        T *y4 = (T *)a.y + p * a.y_stride;
#pragma unroll
        for (int c = 0; c < KP / 4; c++)
            elan_st4(y4 + 4 * c,
                     make_float4(acc[4 * c] * inv, acc[4 * c + 1] * inv, acc[4 * c + 2] * inv, acc[4 * c + 3] * inv));
    } else {
        T *y = (T *)a.y + p * a.y_stride;
#pragma unroll
        for (int c = 0; c < KP; c++)
            if (c < K) y[c] = elan_from_f<T>(acc[c] * inv);
    }
}

/* Two entry points around the same body only to steer ptxas: left alone it gave the (ws 4, k 20) case 64
   registers and spilled on sm_80, while a cap of 128 (2 blocks per SM) spills the large-k cases, which need ~200. */
template <int WS, int KP, typename T>
static __global__ void __launch_bounds__(ATTN_THREADS, 2) attn_kernel_small(elan_cuda_attn_args a, int vec4) {
    attn_body<WS, KP, T>(a, vec4);
}
template <int WS, int KP, typename T>
static __global__ void __launch_bounds__(ATTN_THREADS) attn_kernel_large(elan_cuda_attn_args a, int vec4) {
    attn_body<WS, KP, T>(a, vec4);
}
#define ATTN_SMALL_KP 20

/* Compiled channel counts: 20 and 60 are ELAN-light and ELAN; the others zero-pad any k up to 64. */
static int attn_kp(int k) {
    static const int kps[] = {8, 16, 20, 32, 48, 60, 64};
    for (int i = 0; i < (int)(sizeof kps / sizeof kps[0]); i++)
        if (k <= kps[i]) return kps[i];
    return -1;
}

typedef void (*attn_fn)(elan_cuda_attn_args, int);

template <int WS, int KP, typename T>
static attn_fn attn_entry() {
    if constexpr (KP <= ATTN_SMALL_KP)
        return attn_kernel_small<WS, KP, T>;
    else
        return attn_kernel_large<WS, KP, T>;
}

template <int WS, int KP>
static attn_fn attn_entry_act(int act) {
    switch (act) {
    case ELAN_ACT_F32: return attn_entry<WS, KP, float>();
    case ELAN_ACT_F16: return attn_entry<WS, KP, __half>();
    case ELAN_ACT_BF16: return attn_entry<WS, KP, __nv_bfloat16>();
    default: return NULL;
    }
}

#define ATTN_CASE(WS, KP)                                 \
    if (ws == WS && kp == KP) {                           \
        *smem = attn_shape<WS, KP>::SMEM;                 \
        *windows_per_block = attn_shape<WS, KP>::WPB;     \
        return attn_entry_act<WS, KP>(act);               \
    }
#define ATTN_CASES(KP) ATTN_CASE(4, KP) ATTN_CASE(8, KP) ATTN_CASE(16, KP)

static attn_fn attn_pick(int k, int ws, int act, size_t *smem, int *windows_per_block) {
    const int kp = attn_kp(k);
    ATTN_CASES(8)
    ATTN_CASES(16)
    ATTN_CASES(20)
    ATTN_CASES(32)
    ATTN_CASES(48)
    ATTN_CASES(60)
    ATTN_CASES(64)
    return NULL;
}

/* ---- tensor-core attention (fp16 / bf16 modes) ----

   The same windows and the same token -> pixel map, but QQ^T and AV run as mma.sync m16n8k16 (mma.h) in the
   manner of flash attention: a CTA holds 128 or 256 tokens (whole windows) as fp16 rows of Q and V in
   shared memory (channels zero-padded to KP16*16, row stride +8 halves so that ldmatrix is conflict-free);
   each warp owns 32 query rows (two m16 tiles) and walks the keys of their window 32 at a time (16 for ws 4):
     S (16 x 32) = Q_tile K^T          KP16 k-steps x 2 n8 tiles, keys are the window's own q rows
     online softmax on S in registers  row max over the quad (shuffles), exp2 of pre-scaled scores
     O (16 x 8*NV) += P V              P is S's accumulator repacked as an A fragment (no shared memory)
   O is divided by the row sums at the end, staged through shared memory and written one token row per
   thread. A is never stored; reusing GMSAs recompute it from the first GMSA's q, as the fp32 kernel does
   (storing A in fp16 would cost 2*T bytes per token and group, 16x q's size for ws = 16).

   Operands are fp16 in both half modes: q + bias and v + bias are formed in fp32 and rounded once to fp16,
   which keeps 3 more mantissa bits than bf16 for the scores (q.q reaches the hundreds, and exp() turns an
   absolute error of the score into a relative error of the weight). P in [0, 1] is fp16 as well. Scores,
   the softmax and O accumulate in fp32. fp16 saturates at +-65504 (mma.h's pack). */
/* A CTA is 256 tokens = one 16 x 16 region of the (rolled) image: 1, 4 or 16 whole windows of the group. */
#define ATTN_TOK 256
#define ATTN_REGION 16

template <int WS, int KP16, int NV>
struct attn_mma_shape {
    static constexpr int T = WS * WS;
    static constexpr int TOK = ATTN_TOK;          /* tokens (= threads) per CTA */
    static constexpr int SUB = ATTN_REGION / WS;  /* windows per side of the region */
    static constexpr int ROW = KP16 * 16 + 8;     /* halves per token row in shared memory */
    static constexpr size_t SMEM = 2 * TOK * ROW * sizeof(__half) + TOK * sizeof(int);
};
#define ATTN_SMEM(KP16) (2 * ATTN_TOK * ((KP16) * 16 + 8) * sizeof(__half) + ATTN_TOK * sizeof(int))

/* The fused project_inp (attn_project): the CTA's x rows (cin <= 64, zero-padded to 64), the group's weights as
   NW = 8 * (2 KP16 + NV) rows (q rows, zero to KP; v rows, zero to 8 NV) and their biases, after the above. Row
   stride 72 halves (144 bytes: the 8 rows of an ldmatrix phase on 8 different 16-byte bank groups). */
#define ATTN_XR 72
#define ATTN_NW(KP16, NV) (8 * (2 * (KP16) + (NV)))
#define ATTN_PROJ_SMEM(KP16, NV)                                                                                     \
    (ATTN_SMEM(KP16) + (size_t)(ATTN_TOK + ATTN_NW(KP16, NV)) * ATTN_XR * sizeof(__half) +                         \
     ATTN_NW(KP16, NV) * sizeof(float))

/* One block of 16*KB keys (KB = 1 or 2) for one m16 tile: S = Q K^T, online softmax update of (m, o),
   o += P V. kf[kb] / vf[kb] are the fragments of keys 16kb .. 16kb + 15 of the block. Two halves per step
   (ws 8 and 16) halve the max/shuffle/rescale work per key against one. */
template <int KP16, int NV, int KB>
static __device__ __forceinline__ void attn_mma_step(const unsigned (&qa)[KP16][4], const unsigned (&kf)[KB][KP16][4],
                                                     const unsigned (&vf)[KB][NV][2], float (&o)[NV][4], float (&m)[2]) {
    const float L2E = 1.4426950408889634f;
    float s[2 * KB][4]; /* n8 tile n: keys 8n .. 8n + 7 of the block */
#pragma unroll
    for (int n = 0; n < 2 * KB; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) s[n][r] = 0.0f;
#pragma unroll
    for (int kb = 0; kb < KB; kb++)
#pragma unroll
        for (int st = 0; st < KP16; st++) {
            elan_mma16816<__half>(s[2 * kb], qa[st], &kf[kb][st][0]);
            elan_mma16816<__half>(s[2 * kb + 1], qa[st], &kf[kb][st][2]);
        }
    unsigned pa[KB][4];
#pragma unroll
    for (int h = 0; h < 2; h++) { /* h = 0: row g (registers 0, 1); h = 1: row g + 8 (registers 2, 3) */
        float bm = fmaxf(s[0][2 * h], s[0][2 * h + 1]);
#pragma unroll
        for (int n = 1; n < 2 * KB; n++) bm = fmaxf(bm, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
        bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 1));
        bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 2));
        const float mn = fmaxf(m[h], bm * L2E);
        const float alpha = elan_exp2(m[h] - mn); /* 0 on the first block: m = -inf */
        m[h] = mn;
        /* P = 2^(s log2 e - m): the exponent in fp32, then rounded to fp16 and exponentiated two at a time on
           the special-function unit (ex2.approx.f16x2), which yields the A fragment of P V directly. P is fp16
           for the mma anyway; the exponent's fp16 rounding costs at most 2^-11 relative for |exponent| < 1 (the
           weights that matter) and 2^-8 at exponents below -16 (weights under 2^-16). Half the exp instructions
           and no packing: this loop, not the mma, bounds ws = 16. The row sums come from the ones column of V. */
#pragma unroll
        for (int kb = 0; kb < KB; kb++) {
            pa[kb][h] = elan_exp2_h2(fmaf(s[2 * kb][2 * h], L2E, -mn), fmaf(s[2 * kb][2 * h + 1], L2E, -mn));
            pa[kb][2 + h] = elan_exp2_h2(fmaf(s[2 * kb + 1][2 * h], L2E, -mn), fmaf(s[2 * kb + 1][2 * h + 1], L2E, -mn));
        }
#pragma unroll
        for (int j = 0; j < NV; j++) {
            o[j][2 * h] *= alpha;
            o[j][2 * h + 1] *= alpha;
        }
    }
#pragma unroll
    for (int kb = 0; kb < KB; kb++)
#pragma unroll
        for (int j = 0; j < NV; j++) elan_mma16816<__half>(o[j], pa[kb], vf[kb][j]);
}

/* K fragments (keys key0..key0+15 as B of S = Q K^T) and V fragments (the same keys as B of O = P V). */
template <int KP16, int NV, int ROW>
static __device__ __forceinline__ void attn_mma_load_kv(const __half *sq, const __half *sv, int key0, int lane,
                                                        unsigned (&kf)[KP16][4], unsigned (&vf)[NV][2]) {
#pragma unroll
    for (int st = 0; st < KP16; st++)
        elan_ldsm_x4(kf[st], sq + (key0 + (lane & 7) + ((lane >> 4) & 1) * 8) * ROW + st * 16 + ((lane >> 3) & 1) * 8);
    const __half *vrow = sv + (key0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + ((lane >> 4) & 1) * 8;
#pragma unroll
    for (int j = 0; j + 1 < NV; j += 2) {
        unsigned r[4];
        elan_ldsm_x4_trans(r, vrow + j * 8);
        vf[j][0] = r[0], vf[j][1] = r[1], vf[j + 1][0] = r[2], vf[j + 1][1] = r[3];
    }
    if (NV % 2) elan_ldsm_x2_trans(vf[NV - 1], sv + (key0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + (NV - 1) * 8);
}

/* project_inp fused into the attention (a.x != NULL): the CTA's operands are formed on chip instead of being
   read from a project_inp output. x rows of the CTA's 256 tokens (cp.async, 8-byte pieces, zero for tokens of a
   CTA past the last region) and the group's weights go to shared memory; each warp multiplies its 32 tokens'
   rows by the weights on tensor cores (A by ldmatrix from the x tile, K = 64, fp32 accumulators started at the
   bias) and rounds the results to fp16 straight into sq (q, zero up to KP through zero weight rows) and sv (v;
   zero columns up to 8 NV - 1, whose bias row is 1: the ones column of the row sums). With a.wq == NULL (a
   reusing GMSA) q is copied from a.q (fp16, written by the computing GMSA's q_out) instead, and only v is
   computed. Replaces a separate project_inp kernel that wrote 2C halves a pixel for this one to read back:
   per pixel the GMSA now reads x (C halves, shared by the three groups' CTAs through L2) and, in a reusing
   GMSA, q. On return (after a barrier) sq and sv are complete. */
template <int KP16, int NV, typename T>
static __device__ __forceinline__ void attn_project(const elan_cuda_attn_args &a, __half *sq, __half *sv,
                                                   const int *spix, unsigned char *pbase) {
    constexpr int ROW = KP16 * 16 + 8, KP = KP16 * 16, NQT = 2 * KP16, NW = ATTN_NW(KP16, NV);
    T *sx = (T *)pbase;
    T *sw = sx + ATTN_TOK * ATTN_XR;
    float *sb = (float *)(sw + NW * ATTN_XR);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int K = a.k, cin = a.cin, CH = cin / 4;
    const bool own_q = a.wq != NULL;

    /* Every copy is an 8-byte cp.async issued before the one wait: the weights are L2 hits, but loaded by a
       loop of scalar loads (the first version) they sat on each CTA's critical path, with only 2 CTAs per SM
       to hide it. Rows of
       CH pieces are spread over a warp 32 / CH rows at a time (lane -> row, piece by one division per thread),
       so the lanes read consecutive pieces of neighbouring token rows. */
    {
        const int rpw = 32 / CH, lr = lane / CH, lc = 4 * (lane - lr * CH); /* CH <= 16: rpw >= 2 */
        if (lr < rpw)
            for (int tok = warp * rpw + lr; tok < ATTN_TOK; tok += 8 * rpw) {
                const int pt = spix[tok];
                elan_cp_async8(sx + tok * ATTN_XR + lc, (const T *)a.x + (size_t)(pt >= 0 ? pt : 0) * a.x_stride + lc,
                               pt >= 0 ? 8u : 0u);
            }
    }
    if (!own_q) { /* q of the block's computing GMSA, fp16, K channels (K % 4 == 0, K <= 32) */
        const int QC = K / 4, rpw = 32 / QC, lr = lane / QC, lc = 4 * (lane - lr * QC);
        if (lr < rpw)
            for (int tok = warp * rpw + lr; tok < ATTN_TOK; tok += 8 * rpw) {
                const int pt = spix[tok];
                elan_cp_async8(sq + tok * ROW + lc, (const __half *)a.q + (size_t)(pt >= 0 ? pt : 0) * a.q_stride + lc,
                               pt >= 0 ? 8u : 0u);
            }
        for (int c = K; c < KP; c += 2) *(unsigned *)(sq + tid * ROW + c) = 0u;
    }
    /* weights: NW rows of 16 pieces (64 columns); pieces past cin and rows past the real ones are zero-filled */
    for (int e = tid; e < NW * 16; e += ATTN_TOK) {
        const int n = e >> 4, c = 4 * (e & 15);
        const T *src = (const T *)a.wv;
        bool real = c < cin;
        if (n < KP) {
            real = real && own_q && n < K;
            if (real) src = (const T *)a.wq + n * cin + c;
        } else {
            real = real && n - KP < K;
            if (real) src = (const T *)a.wv + (n - KP) * cin + c;
        }
        elan_cp_async8(sw + n * ATTN_XR + c, src, real ? 8u : 0u);
    }
    elan_cp_async_commit();
    for (int c = cin; c < 64; c += 2) *(unsigned *)(sx + tid * ATTN_XR + c) = 0u; /* cin % 4 == 0 */
    for (int n = tid; n < NW; n += ATTN_TOK)
        sb[n] = n < KP ? (own_q && n < K ? a.bq[n] : 0.0f) : n - KP < K ? a.bv[n - KP] : n == NW - 1 ? 1.0f : 0.0f;
    elan_cp_async_wait_all();
    __syncthreads();

    /* warp: tokens 32 warp .. +31 as two m16 tiles; n8 tiles 0 .. NQT-1 are q (skipped when q was copied),
       NQT .. NQT+NV-1 are v */
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        const int r0 = warp * 32 + mt * 16;
        unsigned af[4][4];
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
            elan_ldsm_x4(af[ks], sx + (r0 + (lane & 15)) * ATTN_XR + ks * 16 + 8 * (lane >> 4));
#pragma unroll
        for (int j = 0; j < NQT + NV; j++) {
            if (j < NQT && !own_q) continue;
            const float2 bb = *(const float2 *)(sb + j * 8 + 2 * t);
            float acc[4] = {bb.x, bb.y, bb.x, bb.y};
            /* B of n8 tile j: weight rows j*8 .. +7; ldmatrix.x4 matrices m = lane / 8 are k columns 8m .. 8m+7
               (two k-steps of 16 per call) */
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                unsigned bf[4];
                elan_ldsm_x4(bf, sw + (j * 8 + (lane & 7)) * ATTN_XR + kk * 32 + 8 * (lane >> 3));
                elan_mma16816<T>(acc, af[2 * kk], bf);
                elan_mma16816<T>(acc, af[2 * kk + 1], bf + 2);
            }
            __half *dst = j < NQT ? sq + j * 8 : sv + (j - NQT) * 8;
            *(unsigned *)(dst + (r0 + g) * ROW + 2 * t) = elan_pack2<__half>(acc[0], acc[1]);
            *(unsigned *)(dst + (r0 + g + 8) * ROW + 2 * t) = elan_pack2<__half>(acc[2], acc[3]);
        }
    }
    __syncthreads();
    /* the computing GMSA leaves its q (fp16) for the block's reusing GMSAs */
    if (own_q && a.q_out) {
        const int QC = K / 4;
        for (int e = tid; e < ATTN_TOK * QC; e += ATTN_TOK) {
            const int tok = e / QC, c = 4 * (e - tok * QC), pt = spix[tok];
            if (pt >= 0) *(uint2 *)((__half *)a.q_out + (size_t)pt * a.q_out_stride + c) = *(const uint2 *)(sq + tok * ROW + c);
        }
    }
}

/* The attention of one group over region blk (raster order over the 16 x 16 regions of all n images). Token
   (window wl of the region, position i in the window) is pixel ((wy*WS + i / WS + shift) mod Hp, ...), the
   windows of the region taken in raster order; the regions of the three groups of one block then cover nearly
   the same pixels (they differ by the roll only), which attn3_kernel uses. */
template <int WS, int KP16, int NV, typename T, bool PROJ = false>
static __device__ __forceinline__ void attn_mma_body(const elan_cuda_attn_args &a, int vec4, int blk) {
    typedef attn_mma_shape<WS, KP16, NV> S;
    constexpr int ROW = S::ROW, KP = KP16 * 16;
    extern __shared__ float4 smem4[];
    __half *sq = (__half *)smem4;
    __half *sv = sq + S::TOK * ROW;
    int *spix = (int *)(sv + S::TOK * ROW);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int K = a.k;

    /* load: thread tid is token tid of the CTA */
    {
        const int wl = tid / S::T, i = tid % S::T;
        /* 32-bit indices: the plan refuses more than 2^31 - 1 pixels */
        const int nrx = a.Wp / ATTN_REGION, nry = a.Hp / ATTN_REGION;
        const bool live = blk < a.n * nry * nrx;
        int p = -1;
        if (live) {
            const int rx = blk % nrx, ry = blk / nrx % nry, img = blk / nrx / nry;
            const int wx = rx * S::SUB + wl % S::SUB, wy = ry * S::SUB + wl / S::SUB;
            int py = wy * WS + i / WS + a.shift, px = wx * WS + i % WS + a.shift;
            if (py >= a.Hp) py -= a.Hp;
            if (px >= a.Wp) px -= a.Wp;
            p = (img * a.Hp + py) * a.Wp + px;
        }
        spix[tid] = p;
        if constexpr (PROJ) {
            __syncthreads(); /* spix of every token */
            attn_project<KP16, NV, T>(a, sq, sv, spix, (unsigned char *)(spix + S::TOK));
        } else {
            __half *qs = sq + tid * ROW, *vs = sv + tid * ROW;
            const T *q = (const T *)a.q + (size_t)(live ? p : 0) * a.q_stride;
            const T *v = (const T *)a.v + (size_t)(live ? p : 0) * a.v_stride;
            int c = 0;
            if (vec4) {
                /* Coalesced: the CTA's 2 * CH * TOK 8-byte chunks (CH = K / 4 per q row and per v row) are spread
                   over the threads chunk-major, so the lanes of a warp read the consecutive chunks of 3-4 tokens'
                   rows (a few cache lines per load instruction) instead of one chunk of 32 different rows each (32
                   lines: the L1 then spends a cycle per line, which bounded ws = 4 at ~500 GB/s). Every load is
                   issued before the first one is used. */
                const int CH = K / 4;
                uint2 raw[KP / 2];
                __syncthreads(); /* spix of every token */
    #pragma unroll
                for (int it = 0; it < KP / 2; it++) {
                    raw[it] = make_uint2(0u, 0u);
                    const int cidx = tid + it * S::TOK, tok = cidx / (2 * CH), part = cidx - tok * 2 * CH;
                    if (it < 2 * CH) {
                        const int pt = spix[tok];
                        const bool isv = part >= CH;
                        const int cc = 4 * (isv ? part - CH : part);
                        const T *src = isv ? (const T *)a.v + (size_t)pt * a.v_stride + cc : (const T *)a.q + (size_t)pt * a.q_stride + cc;
                        if (pt >= 0) raw[it] = *(const uint2 *)src;
                    }
                }
    #pragma unroll
                for (int it = 0; it < KP / 2; it++) {
                    if (it >= 2 * CH) break;
                    const int cidx = tid + it * S::TOK, tok = cidx / (2 * CH), part = cidx - tok * 2 * CH;
                    const bool isv = part >= CH;
                    const int cc = 4 * (isv ? part - CH : part);
                    float4 f = elan_ld4((const T *)&raw[it]);
                    const float *bias = isv ? a.v_bias : a.q_bias;
                    if (bias) {
                        const float4 b = *(const float4 *)(bias + cc);
                        f.x += b.x, f.y += b.y, f.z += b.z, f.w += b.w;
                    }
                    if (spix[tok] < 0) f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    *(uint2 *)((isv ? sv : sq) + tok * ROW + cc) =
                        make_uint2(elan_pack2<__half>(f.x, f.y), elan_pack2<__half>(f.z, f.w));
                }
                c = K; /* the zero padding of this thread's own rows follows */
            } else if (live) {
                for (; c + 1 < K; c += 2) {
                    const float q0 = elan_to_f(q[c]) + (a.q_bias ? a.q_bias[c] : 0.0f);
                    const float q1 = elan_to_f(q[c + 1]) + (a.q_bias ? a.q_bias[c + 1] : 0.0f);
                    *(unsigned *)(qs + c) = elan_pack2<__half>(q0, q1);
                    const float v0 = elan_to_f(v[c]) + (a.v_bias ? a.v_bias[c] : 0.0f);
                    const float v1 = elan_to_f(v[c + 1]) + (a.v_bias ? a.v_bias[c + 1] : 0.0f);
                    *(unsigned *)(vs + c) = elan_pack2<__half>(v0, v1);
                }
                if (c < K) {
                    *(unsigned *)(qs + c) = elan_pack2<__half>(elan_to_f(q[c]) + (a.q_bias ? a.q_bias[c] : 0.0f), 0.0f);
                    *(unsigned *)(vs + c) = elan_pack2<__half>(elan_to_f(v[c]) + (a.v_bias ? a.v_bias[c] : 0.0f), 0.0f);
                    c += 2;
                }
            }
            for (; c < KP; c += 2) *(unsigned *)(qs + c) = 0u; /* zero padding (and rows of windows past the end) */
            /* V: the last of its NV * 8 columns (NV = K / 8 + 1, so that column is past K) is all ones: O's last
               column then accumulates the softmax row sums through the same mma and the same rescaling as the
               outputs. The columns between are zero. */
            for (int cv = K; cv < NV * 8; cv += 2) /* K is even (attn_mma_pick) */
                *(unsigned *)(vs + cv) = elan_pack2<__half>(0.0f, cv + 2 == NV * 8 ? 1.0f : 0.0f);
        }
    }
    __syncthreads();

    /* compute: warp owns rows 32*warp .. +31 as two m16 tiles */
    const int row0 = warp * 32;
    unsigned qa[2][KP16][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int st = 0; st < KP16; st++)
            elan_ldsm_x4(qa[mt][st], sq + (row0 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + st * 16 +
                                         ((lane >> 4) & 1) * 8);
    float o[2][NV][4], m[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int j = 0; j < NV; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
    }
    if (S::T >= 32) { /* both tiles in one window: share every K / V fragment; 32 keys per step */
        const int kbase = row0 / S::T * S::T;
        unsigned kf[2][KP16][4], vf[2][NV][2];
#pragma unroll 1
        for (int kb = 0; kb < S::T; kb += 32) {
            attn_mma_load_kv<KP16, NV, ROW>(sq, sv, kbase + kb, lane, kf[0], vf[0]);
            attn_mma_load_kv<KP16, NV, ROW>(sq, sv, kbase + kb + 16, lane, kf[1], vf[1]);
            attn_mma_step<KP16, NV, 2>(qa[0], kf, vf, o[0], m[0]);
            attn_mma_step<KP16, NV, 2>(qa[1], kf, vf, o[1], m[1]);
        }
    } else { /* ws = 4: each m16 tile is a window of its own */
        unsigned kf[1][KP16][4], vf[1][NV][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            attn_mma_load_kv<KP16, NV, ROW>(sq, sv, row0 + mt * 16, lane, kf[0], vf[0]);
            attn_mma_step<KP16, NV, 1>(qa[mt], kf, vf, o[mt], m[mt]);
        }
    }
    __syncthreads(); /* every warp is done with the keys: sq is reused for the output */

    const int g = lane >> 2, t = lane & 3;
    T *so = (T *)sq;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            /* row sum: the last column of O (V's ones column), held by lane t = 3 of the quad */
            const float lt = __shfl_sync(0xffffffffu, o[mt][NV - 1][2 * h + 1], lane | 3);
            const float inv = 1.0f / lt;
            const int r = row0 + mt * 16 + g + 8 * h;
#pragma unroll
            for (int j = 0; j < NV; j++)
                *(unsigned *)(so + r * ROW + j * 8 + 2 * t) = elan_pack2<T>(o[mt][j][2 * h] * inv, o[mt][j][2 * h + 1] * inv);
        }
    __syncthreads();

    if (vec4) { /* coalesced like the loads: chunk-major over the CTA's CH * TOK 8-byte output chunks */
        const int CH = K / 4;
#pragma unroll
        for (int it = 0; it < KP / 4; it++) {
            if (it >= CH) break;
            const int cidx = tid + it * S::TOK, tok = cidx / CH, cc = 4 * (cidx - tok * CH);
            const int pt = spix[tok];
            if (pt >= 0) *(uint2 *)((T *)a.y + (size_t)pt * a.y_stride + cc) = *(const uint2 *)(so + tok * ROW + cc);
        }
    } else {
        const int p = spix[tid];
        if (p < 0) return;
        T *y = (T *)a.y + (size_t)p * a.y_stride;
        const T *src = so + tid * ROW;
        for (int c = 0; c < K; c++) y[c] = src[c];
    }
}

/* One group per launch (any window size that divides 16). Up to 128 registers (ws 8 / 16 hold 32-key steps). */
template <int WS, int KP16, int NV, typename T>
static __global__ void __launch_bounds__(ATTN_TOK, 2) attn_mma_kernel(elan_cuda_attn_args a, int vec4) {
    attn_mma_body<WS, KP16, NV, T>(a, vec4, blockIdx.x);
}

/* The three groups of ELAN (windows 4, 8, 16) in one launch, CTAs interleaved: CTA 3r + gi does group gi of
   region r. The CTAs in flight at any moment then read the q / v channels of all three groups of the same pixels
   and write all three groups' y: each group alone reads 80 of a pixel's 240 bytes of g and writes 40 of its 120
   bytes of y, which cost a third of every DRAM sector touched plus partial-sector writes (measured: one group per
   launch moved data at ~500 GB/s); interleaved, the sectors are whole by the time they leave L2. */
typedef struct {
    elan_cuda_attn_args g[3];
} attn3_args;

template <int KP16, int NV, typename T, bool PROJ = false>
static __global__ void __launch_bounds__(ATTN_TOK, 2) attn3_kernel(attn3_args a, int vec4) {
    const int gi = blockIdx.x % 3, blk = blockIdx.x / 3;
    if (gi == 0)
        attn_mma_body<4, KP16, NV, T, PROJ>(a.g[0], vec4, blk);
    else if (gi == 1)
        attn_mma_body<8, KP16, NV, T, PROJ>(a.g[1], vec4, blk);
    else
        attn_mma_body<16, KP16, NV, T, PROJ>(a.g[2], vec4, blk);
}

typedef void (*attn_mma_fn)(elan_cuda_attn_args, int);
typedef void (*attn3_fn)(attn3_args, int);

template <int WS, int KP16, int NV>
static attn_mma_fn attn_mma_entry(int act, size_t *smem) {
    *smem = attn_mma_shape<WS, KP16, NV>::SMEM;
    if (act == ELAN_ACT_F16) return attn_mma_kernel<WS, KP16, NV, __half>;
    if (act == ELAN_ACT_BF16) return attn_mma_kernel<WS, KP16, NV, __nv_bfloat16>;
    return NULL;
}

template <int KP16, int NV>
static attn3_fn attn3_entry(int act, size_t *smem) {
    *smem = ATTN_SMEM(KP16);
    if (act == ELAN_ACT_F16) return attn3_kernel<KP16, NV, __half>;
    if (act == ELAN_ACT_BF16) return attn3_kernel<KP16, NV, __nv_bfloat16>;
    return NULL;
}

#define ATTN_MMA_CASE(KP16, NV)                                              \
    if (kp16 == KP16 && nv == NV) {                                          \
        if (ws == 4) return attn_mma_entry<4, KP16, NV>(act, smem);          \
        if (ws == 8) return attn_mma_entry<8, KP16, NV>(act, smem);          \
        if (ws == 16) return attn_mma_entry<16, KP16, NV>(act, smem);        \
    }

/* The tensor-core kernel covers even k <= 32 in the half modes (ELAN-light: k = 20, ws 4 / 8 / 16). The
   environment variable ELANSR_CUDA_ATTN=simt keeps the fp32 CUDA-core kernel (comparisons, debugging). */
static attn_mma_fn attn_mma_pick(int k, int ws, int act, size_t *smem) {
    static int simt = -1;
    if (simt < 0) {
        const char *e = getenv("ELANSR_CUDA_ATTN");
        simt = e && !strcmp(e, "simt");
    }
    if (simt || k < 2 || k > 32 || k % 2 || (act != ELAN_ACT_F16 && act != ELAN_ACT_BF16)) return NULL;
    const int kp16 = (k + 15) / 16, nv = k / 8 + 1; /* one column more than k: the ones column */
    ATTN_MMA_CASE(1, 1)
    ATTN_MMA_CASE(1, 2)
    ATTN_MMA_CASE(1, 3)
    ATTN_MMA_CASE(2, 3)
    ATTN_MMA_CASE(2, 4)
    ATTN_MMA_CASE(2, 5)
    return NULL;
}

static attn3_fn attn3_pick(int k, const int ws[3], int act, size_t *smem) {
    size_t sm;
    if (ws[0] != 4 || ws[1] != 8 || ws[2] != 16 || !attn_mma_pick(k, 16, act, &sm)) return NULL;
    const int kp16 = (k + 15) / 16, nv = k / 8 + 1;
    if (kp16 == 1 && nv == 1) return attn3_entry<1, 1>(act, smem);
    if (kp16 == 1 && nv == 2) return attn3_entry<1, 2>(act, smem);
    if (kp16 == 1 && nv == 3) return attn3_entry<1, 3>(act, smem);
    if (kp16 == 2 && nv == 3) return attn3_entry<2, 3>(act, smem);
    if (kp16 == 2 && nv == 4) return attn3_entry<2, 4>(act, smem);
    if (kp16 == 2 && nv == 5) return attn3_entry<2, 5>(act, smem);
    return NULL;
}

/* The fused-project_inp variant is compiled for ELAN-light's groups only (k = 20: KP16 = 2, NV = 3), from up to
   64 input channels in pieces of 4. */
static attn3_fn attn3_proj_pick(int k, int cin, const int ws[3], int act, size_t *smem) {
    size_t sm;
    if (k != 20 || cin < 4 || cin > 64 || cin % 4 || !attn3_pick(k, ws, act, &sm)) return NULL;
    *smem = ATTN_PROJ_SMEM(2, 3);
    if (act == ELAN_ACT_F16) return attn3_kernel<2, 3, __half, true>;
    if (act == ELAN_ACT_BF16) return attn3_kernel<2, 3, __nv_bfloat16, true>;
    return NULL;
}

extern "C" int elan_cuda_attn3_proj_supported(int k, int cin, const int ws[3], int act) {
    size_t smem;
    return attn3_proj_pick(k, cin, ws, act, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn3_proj_prepare(int k, int cin, const int ws[3], int act) {
    size_t smem;
    attn3_fn f = attn3_proj_pick(k, cin, ws, act, &smem);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" int elan_cuda_attn3_supported(int k, const int ws[3], int act) {
    size_t smem;
    return attn3_pick(k, ws, act, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn3_prepare(int k, const int ws[3], int act) {
    size_t smem;
    attn3_fn f = attn3_pick(k, ws, act, &smem);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" int elan_cuda_attn_supported(int k, int ws) {
    size_t smem;
    int wpb;
    return k >= 1 && attn_pick(k, ws, ELAN_ACT_F32, &smem, &wpb) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn_prepare(int k, int ws, int act) {
    size_t smem;
    int wpb;
    attn_mma_fn fm = attn_mma_pick(k, ws, act, &smem);
    if (fm) return cudaFuncSetAttribute(fm, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    attn_fn f = attn_pick(k, ws, act, &smem, &wpb);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

static int aligned(const void *ptr, size_t to) { return ((size_t)ptr & (to - 1)) == 0; }

extern "C" cudaError_t elan_cuda_attn(const elan_cuda_attn_args *a, cudaStream_t s) {
    size_t smem;
    int wpb;
    attn_mma_fn fm = attn_mma_pick(a->k, a->ws, a->act, &smem);
    if (fm) {
        const int vec4 = a->k % 4 == 0 && a->q_stride % 4 == 0 && a->v_stride % 4 == 0 && a->y_stride % 4 == 0 &&
                         aligned(a->q, 8) && aligned(a->v, 8) && aligned(a->y, 8) && aligned(a->q_bias, 16) &&
                         aligned(a->v_bias, 16);
        const long long regions = (long long)a->n * (a->Hp / ATTN_REGION) * (a->Wp / ATTN_REGION);
        fm<<<(unsigned)regions, ATTN_TOK, smem, s>>>(*a, vec4);
        return cudaGetLastError();
    }
    attn_fn f = attn_pick(a->k, a->ws, a->act, &smem, &wpb);
    if (!f) return cudaErrorInvalidValue;
    const size_t v4 = a->act == ELAN_ACT_F32 ? 16 : 8; /* bytes of 4 elements */
    const int vec4 = attn_kp(a->k) == a->k && a->q_stride % 4 == 0 && a->v_stride % 4 == 0 && a->y_stride % 4 == 0 &&
                     aligned(a->q, v4) && aligned(a->v, v4) && aligned(a->y, v4) && aligned(a->q_bias, 16) &&
                     aligned(a->v_bias, 16);
    const long long nwin = (long long)a->n * (a->Hp / a->ws) * (a->Wp / a->ws);
    f<<<(unsigned)((nwin + wpb - 1) / wpb), ATTN_THREADS, smem, s>>>(*a, vec4);
    return cudaGetLastError();
}

extern "C" cudaError_t elan_cuda_attn3(const elan_cuda_attn_args a[3], cudaStream_t s) {
    size_t smem;
    const int ws[3] = {a[0].ws, a[1].ws, a[2].ws};
    const bool proj = a[0].x != NULL;
    attn3_fn f = proj ? attn3_proj_pick(a[0].k, a[0].cin, ws, a[0].act, &smem) : attn3_pick(a[0].k, ws, a[0].act, &smem);
    if (!f) return cudaErrorInvalidValue;
    attn3_args g;
    int vec4 = 1;
    for (int i = 0; i < 3; i++) {
        if (a[i].k != a[0].k || a[i].act != a[0].act || a[i].n != a[0].n || a[i].Hp != a[0].Hp || a[i].Wp != a[0].Wp ||
            (a[i].x != NULL) != proj)
            return cudaErrorInvalidValue;
        if (proj) { /* 8-byte pieces of x, the weights, q and q_out; every operand present */
            if (a[i].cin != a[0].cin || a[i].x_stride % 4 || a[i].x_stride < a[i].cin || !aligned(a[i].x, 8) ||
                !a[i].wv || !aligned(a[i].wv, 8) || !aligned(a[i].wq, 8) || !a[i].bv || !a[i].y || !aligned(a[i].y, 8) || a[i].y_stride % 4 ||
                (a[i].wq ? !a[i].bq || (a[i].q_out && (!aligned(a[i].q_out, 8) || a[i].q_out_stride % 4))
                         : !a[i].q || !aligned(a[i].q, 8) || a[i].q_stride % 4))
                return cudaErrorInvalidValue;
            g.g[i] = a[i];
            continue;
        }
        vec4 = vec4 && a[i].k % 4 == 0 && a[i].q_stride % 4 == 0 && a[i].v_stride % 4 == 0 && a[i].y_stride % 4 == 0 &&
               aligned(a[i].q, 8) && aligned(a[i].v, 8) && aligned(a[i].y, 8) && aligned(a[i].q_bias, 16) &&
               aligned(a[i].v_bias, 16);
        g.g[i] = a[i];
    }
    const long long regions = (long long)a[0].n * (a[0].Hp / ATTN_REGION) * (a[0].Wp / ATTN_REGION);
    f<<<(unsigned)(3 * regions), ATTN_TOK, smem, s>>>(g, vec4);
    return cudaGetLastError();
}
