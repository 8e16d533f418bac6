/* gmsa.cu — the attention inside GMSA: for every ws x ws window of one channel group,
   A = softmax_rows(q q^T) (no scaling, keys are the queries) and y = A v. In fp32 / tf32 project_inp and
   project_out are cuBLAS GEMMs in cuda_backend.cu; in the half modes project_inp runs inside the tensor-core
   kernel below (attn_project) and project_out in pointwise.cu. Four kernels: the fp32 CUDA-core one first
   (precision fp32, and any shape), the fp16 / bf16 tensor-core one (mma.sync m16n8k16), its tf32 sibling
   (precision tf32, fp32 storage, mma.sync m16n8k8.tf32), and at the end the fp32 CUDA-core arithmetic again,
   reshaped for ELAN's three groups in one launch (attn3_f32_kernel; the first kernel stays the per-group
   fallback and reference). In the half modes the GMSA of unshifted blocks is one kernel from project_inp to the
   residual (gmsa_kernel, with project_out: its section says why), that of shifted blocks two (attn3_kernel for the
   ws 4 / 8 groups, then gmsa_kernel for the ws 16 group, project_out and the residual); at large sizes
   gmsa_persist_kernel runs gmsa_kernel's regions in a persistent CTA instead.

   Shape of the work (CUDA-core kernel): a window has T = ws^2 tokens (16, 64, 256) with k channels each (20 in ELAN-light). A
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

   The same windows and the same token -> pixel map, but QQ^T and AV run as mma.sync (mma.h) in the manner of
   flash attention: a CTA holds 256 tokens (whole windows) as fp16 rows of Q and V in shared memory; each warp
   owns 32 query rows (two m16 tiles) and walks the keys of their window 16 KB at a time (KB = 1 with the fused
   project_inp, 2 without: ATTN_KB_PROJ, ATTN_KB; always 16 for ws 4):
     S (16 x 16 KB) = Q_tile K^T       k16 steps (+ one k8 step when the channels end on an odd multiple of 8),
                                       x 2 KB n8 tiles; the keys are the window's own q rows
     online softmax on S in registers  row max over the quad (shuffles), exp2 of pre-scaled scores
     O (16 x 8*NV) += P V              P is S's accumulator repacked as an A fragment (no shared memory)
   O is divided by the row sums at the end, staged through shared memory and written back row by row in
   8-byte pieces (attn_rows). A is never stored; reusing GMSAs recompute it from the first GMSA's q, as the fp32
   kernel does (storing A in fp16 would cost 2*T bytes per token and group, 16x q's size for ws = 16). With the
   fused project_inp the first GMSA also stores each row's maximum score (m_out, 4 bytes per token and group), and
   the reusing ones start from it (m_in, KM) instead of keeping a running maximum: the same A up to the rounding
   of the rescaling they skip, no longer bit-identical to the first GMSA's.

   Rows of Q and V are KQ8 * 8 and NV * 8 halves (k = 20: 24 and 24, so QK^T is one k16 and one k8 step rather
   than two k16 steps over 12 zero channels), stored with a row stride that is an odd multiple of 8 halves
   (16 bytes), so that the 8 rows of every ldmatrix phase fall on 8 different 16-byte bank groups.

   Operands are fp16 in both half modes: q + bias and v + bias are formed in fp32 and rounded once to fp16,
   which keeps 3 more mantissa bits than bf16 for the scores (q.q reaches the hundreds, and exp() turns an
   absolute error of the score into a relative error of the weight). P in [0, 1] is fp16 as well. Scores,
   the softmax and O accumulate in fp32. fp16 saturates at +-65504 (mma.h's pack). */
/* A CTA is 256 tokens = one 16 x 16 region of the (rolled) image: 1, 4 or 16 whole windows of the group. The
   grid is (regions across, regions down, images), x times 3 in attn3: a CTA reads its region off blockIdx
   without a run-time division, and the grid holds no CTA past the last region, so every token is a pixel. */
#define ATTN_TOK 256
#define ATTN_REGION 16

/* k of the paths that move rows in 8-byte pieces (k % 4 == 0: vec4, and the fused project_inp, k = 20): the
   (KQ8, NV) = (ceil(k / 8), k / 8 + 1) of attn_mma_pick leave one such k per pair, 8 KQ8 - 4 when NV == KQ8
   (k % 8 == 4) and 8 KQ8 when NV == KQ8 + 1 (k % 8 == 0). As a constant it makes the lane -> (token, piece) maps
   of those copies constant divisions and their loops straight code. */
#define ATTN_K4(KQ8, NV) ((NV) == (KQ8) ? 8 * (KQ8) - 4 : 8 * (KQ8))

/* Row stride (halves) of Q / V in shared memory: the smaller odd multiple of 8 that holds KQ8 and NV 8-runs. */
#define ATTN_ROW(KQ8, NV) (8 * (((KQ8) > (NV) ? (KQ8) : (NV)) | 1))

template <int WS, int KQ8, int NV>
struct attn_mma_shape {
    static constexpr int T = WS * WS;
    static constexpr int TOK = ATTN_TOK;          /* tokens (= threads) per CTA */
    static constexpr int SUB = ATTN_REGION / WS;  /* windows per side of the region */
    static constexpr int ROW = ATTN_ROW(KQ8, NV); /* halves per token row in shared memory */
    static constexpr size_t SMEM = 2 * TOK * ROW * sizeof(__half) + TOK * sizeof(int);
};
#define ATTN_SMEM(KQ8, NV) (2 * ATTN_TOK * ATTN_ROW(KQ8, NV) * sizeof(__half) + ATTN_TOK * sizeof(int))

/* The fused project_inp (attn_project), after the above: the CTA's x rows as they lie in memory (256 rows of cin
   <= 64 halves, back to back, plus 64 zero halves that the last row's K padding reads), the group's weights as
   NW = 8 * (KQ8 + NV) rows (q rows, zero to 8 KQ8; v rows, zero to 8 NV) of 64 halves at a stride of 72 (144
   bytes: the 8 rows of an ldmatrix phase on 8 different 16-byte bank groups), and their NW biases, each twice: per
   n8 tile and quad lane t the float4 (b[2t], b[2t + 1], b[2t], b[2t + 1]) that starts the accumulator of rows g
   and g + 8, one shared load. */
#define ATTN_XR 72
#define ATTN_NW(KQ8, NV) (8 * ((KQ8) + (NV)))
#define ATTN_XTILE ((ATTN_TOK * 64 + 64) * sizeof(__half))
#define ATTN_PROJ_SMEM(KQ8, NV)                                                                                       \
    (ATTN_SMEM(KQ8, NV) + ATTN_XTILE + (size_t)ATTN_NW(KQ8, NV) * ATTN_XR * sizeof(__half) +                       \
     2 * ATTN_NW(KQ8, NV) * sizeof(float))

/* CTAs per SM promised to ptxas for attn3 (register cap 65536 / (256 * this)). 3 (80 registers, ~90 bytes of
   spills in the ws = 16 loop, 66 KB of shared memory with the fused project_inp) measured 0.209 / 0.194 ms
   (computing / reusing GMSA at 960x544, H100) against 0.217 / 0.199 ms for 2 CTAs at 103 registers. */
#ifndef ATTN_MIN_CTAS
#define ATTN_MIN_CTAS 3
#endif

/* Key blocks of 16 per step of the ws 8 / 16 loop (attn_mma_body): 2 halves the max / shuffle / rescale work
   per key, 1 holds 14 fewer registers of K / V fragments. With the fused project_inp, 2 spilled ~70 bytes under
   the 80-register cap and 1 spills none: 0.195 / 0.173 -> 0.188 / 0.167 ms (computing / reusing GMSA, dev
   check at 960x544, H100, two alternating repetitions); the unfused kernel spills little either way and was
   1-2% faster with 2. */
#ifndef ATTN_KB_PROJ
#define ATTN_KB_PROJ 1
#endif
#ifndef ATTN_KB
#define ATTN_KB 2
#endif
/* The same for gmsa_kernel, which has 128 registers at 2 CTAs per SM: 2 fits without spills (128 registers, 109
   with 1) and cuts the ws 8 / 16 loops' row max, shuffles and rescale test per key by half: 0.215 / 0.207 ->
   0.196 / 0.189 ms (computing / reusing GMSA, dev check at 960x544, H100, fp16; bf16 the same; two alternations,
   bench/results/dev_step10_lfe_gmsa_h100.log). */
#ifndef GMSA_KB
#define GMSA_KB 2
#endif

/* One block of 16*KB keys (KB = 1 or 2) for one m16 tile: S = Q K^T, online softmax update of (m, o),
   o += P V. kf[kb] / vf[kb] are the fragments of keys 16kb .. 16kb + 15 of the block: kf[kb][s] for k16 step s
   holds (keys 0-7: [0], [1]; keys 8-15: [2], [3]); the k8 remainder step (KQ8 odd) holds keys 0-7 in [0] and
   8-15 in [1]. Two halves per step (ws 8 and 16) halve the max/shuffle/rescale work per key against one.
   KM: m already holds each row's final maximum (a reusing GMSA, from its computing GMSA: the same q, the same
   scores), so there is no running maximum to update and nothing to rescale. */
template <int KQ8, int NV, int KB, bool KM = false>
static __device__ __forceinline__ void attn_mma_step(const unsigned (&qa)[(KQ8 + 1) / 2][4],
                                                     const unsigned (&kf)[KB][(KQ8 + 1) / 2][4],
                                                     const unsigned (&vf)[KB][NV][2], float (&o)[NV][4], float (&m)[2]) {
    constexpr int KS = KQ8 / 2, KR = KQ8 % 2;
    const float L2E = 1.4426950408889634f;
    float s[2 * KB][4]; /* n8 tile n: keys 8n .. 8n + 7 of the block */
#pragma unroll
    for (int n = 0; n < 2 * KB; n++)
#pragma unroll
        for (int r = 0; r < 4; r++) s[n][r] = 0.0f;
#pragma unroll
    for (int kb = 0; kb < KB; kb++) {
#pragma unroll
        for (int st = 0; st < KS; st++) {
            elan_mma16816<__half>(s[2 * kb], qa[st], &kf[kb][st][0]);
            elan_mma16816<__half>(s[2 * kb + 1], qa[st], &kf[kb][st][2]);
        }
        if constexpr (KR) {
            elan_mma1688<__half>(s[2 * kb], qa[KS], kf[kb][KS][0]);
            elan_mma1688<__half>(s[2 * kb + 1], qa[KS], kf[kb][KS][1]);
        }
    }
    /* Row maxima (h = 0: row g, registers 0, 1; h = 1: row g + 8, registers 2, 3), in log2 units. The running
       output is rescaled only when some row of the warp saw its maximum grow: alpha is then exactly 1 for the
       others, so skipping the multiplications when none grew changes no bit. In ws = 16 windows the maximum
       mostly stops growing once the block holding the query's own key (q.q, usually the largest score) is
       behind. */
    float mn[2] = {m[0], m[1]};
    if constexpr (!KM) {
        bool grew = false;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float bm = fmaxf(s[0][2 * h], s[0][2 * h + 1]);
#pragma unroll
            for (int n = 1; n < 2 * KB; n++) bm = fmaxf(bm, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
            bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 1));
            bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 2));
            mn[h] = fmaxf(m[h], bm * L2E);
            grew |= mn[h] > m[h];
        }
        if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float alpha = elan_exp2(m[h] - mn[h]); /* 0 on the first block: m = -inf */
#pragma unroll
                for (int j = 0; j < NV; j++) {
                    o[j][2 * h] *= alpha;
                    o[j][2 * h + 1] *= alpha;
                }
            }
        }
    }
    /* P = 2^(s log2 e - m): fp32 exponent and fp32 ex2 on the special-function unit, rounded once to fp16 as
       the A fragment of P V (one cvt per pair: P is in [0, 1], nothing to saturate). (ex2.approx.f16x2 is no
       cheaper on sm_90: it issues two MUFU.EX2.F16 and a PRMT, after rounding the exponent to fp16. A share of the
       exponentials as a polynomial on the FMA pipe, FlashAttention 4's split, measured slower: the loop is bound
       by its issue slots and dependent chain, not by MUFU; docs/PERFORMANCE.md step 14, code in 78a6396.) The row
       sums come from the ones column of V. */
    unsigned pa[KB][4];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        m[h] = mn[h];
#pragma unroll
        for (int kb = 0; kb < KB; kb++) {
            pa[kb][h] = elan_pack2_out<__half>(elan_exp2(fmaf(s[2 * kb][2 * h], L2E, -mn[h])),
                                           elan_exp2(fmaf(s[2 * kb][2 * h + 1], L2E, -mn[h])));
            pa[kb][2 + h] = elan_pack2_out<__half>(elan_exp2(fmaf(s[2 * kb + 1][2 * h], L2E, -mn[h])),
                                               elan_exp2(fmaf(s[2 * kb + 1][2 * h + 1], L2E, -mn[h])));
        }
    }
#pragma unroll
    for (int kb = 0; kb < KB; kb++)
#pragma unroll
        for (int j = 0; j < NV; j++) elan_mma16816<__half>(o[j], pa[kb], vf[kb][j]);
}

/* 1 / x rounded to nearest for x in [2^-126, 2^126) (or NaN: then NaN): the fast path of the compiler's own 1.0f / x,
   instruction for instruction (MUFU.RCP, then a Newton step of two fma: the same bits), without its test of x's
   exponent and the branch to the slow-path subroutine (3 instructions instead of 10). The row sums it serves lie in
   [1, 256]: the key of the row's maximum score contributes P = 1 (exp2 of the maximum's own rounding residue, 1.0
   in fp16) and no key more than 1. */
static __device__ __forceinline__ float attn_rcp(float x) {
    float r;
    asm("{\n .reg .f32 e;\n rcp.approx.ftz.f32 %0, %1;\n fma.rn.f32 e, %1, %0, 0fBF800000;\n neg.f32 e, e;\n"
        " fma.rn.f32 %0, %0, e, %0;\n}\n"
        : "=f"(r)
        : "f"(x));
    return r;
}

/* K fragments (keys key0..key0+15 as B of S = Q K^T) and V fragments (the same keys as B of O = P V). */
template <int KQ8, int NV, int ROW>
static __device__ __forceinline__ void attn_mma_load_kv(const __half *sq, const __half *sv, int key0, int lane,
                                                        unsigned (&kf)[(KQ8 + 1) / 2][4], unsigned (&vf)[NV][2]) {
    constexpr int KS = KQ8 / 2;
#pragma unroll
    for (int st = 0; st < KS; st++)
        elan_ldsm_x4(kf[st], sq + (key0 + (lane & 7) + ((lane >> 4) & 1) * 8) * ROW + st * 16 + ((lane >> 3) & 1) * 8);
    if constexpr (KQ8 % 2) /* k8 remainder: matrices (keys 0-7, channels 16KS..+7), (keys 8-15, same) */
        elan_ldsm_x2(kf[KS], sq + (key0 + (lane & 15)) * ROW + KS * 16);
    const __half *vrow = sv + (key0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + ((lane >> 4) & 1) * 8;
#pragma unroll
    for (int j = 0; j + 1 < NV; j += 2) {
        unsigned r[4];
        elan_ldsm_x4_trans(r, vrow + j * 8);
        vf[j][0] = r[0], vf[j][1] = r[1], vf[j + 1][0] = r[2], vf[j + 1][1] = r[3];
    }
    if (NV % 2) elan_ldsm_x2_trans(vf[NV - 1], sv + (key0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + (NV - 1) * 8);
}

/* cp.async to a shared-memory address held as a 32-bit integer. mma.h's elan_cp_async8 / 16 take a generic
   pointer, and ptxas rebuilds the shared window base (S2R SR_CgaCtaId, MOV, LEA) for its conversion at every
   call, inside loops too: the copies below form the shared address once and step it. */
static __device__ __forceinline__ void attn_cp_async16(unsigned dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst),
                 "l"((unsigned long long)__cvta_generic_to_global(src))
                 : "memory");
}
static __device__ __forceinline__ void attn_cp_async8(unsigned dst, const void *src, unsigned bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst),
                 "l"((unsigned long long)__cvta_generic_to_global(src)), "r"(bytes)
                 : "memory");
}

/* v, opaque to the compiler (an empty asm that may change it). For a base pointer: the compiler reassociates
   base + (offset + row * stride) and then adds the 64-bit base at every access, 2 more instructions each (the
   pointer then no longer counts as global: stores through it use attn_st_global8 / 16). For a lane index: the
   compiler merges equal lane -> piece maps of two copies into one value, and when the attention lies between
   them that value is spilled across it. */
static __device__ __forceinline__ const char *attn_opaque(const char *v) {
    asm("" : "+l"(v));
    return v;
}
static __device__ __forceinline__ int attn_opaque(int v) {
    asm("" : "+r"(v));
    return v;
}
/* base + i * stride (bytes) by one 32 x 32 -> 64-bit multiply-add. Written out because the compiler does a full
   64-bit multiply (5 instructions) where the widened stride was formed in another basic block. */
static __device__ __forceinline__ const char *attn_row_ptr(const char *base, int i, int stride) {
    long long off;
    asm("mul.wide.s32 %0, %1, %2;" : "=l"(off) : "r"(i), "r"(stride));
    return base + off;
}
static __device__ __forceinline__ void attn_st_global8(const char *p, uint2 v) {
    asm volatile("st.global.v2.u32 [%0], {%1, %2};\n" ::"l"((unsigned long long)__cvta_generic_to_global(p)),
                 "r"(v.x), "r"(v.y)
                 : "memory");
}
/* The same, marked evict-first (st.global.cs): q_out and m_out, which are read again only two kernels later,
   after the next LFE has streamed 2 x 120 bytes per pixel through L2, so that they do not push x_out (read by
   that LFE) out of L2. GMSA_Q_CS=0 stores them as the others. */
#ifndef GMSA_Q_CS
#define GMSA_Q_CS 1
#endif
static __device__ __forceinline__ void attn_st_global8_cs(const char *p, uint2 v) {
    asm volatile("st.global.cs.v2.u32 [%0], {%1, %2};\n" ::"l"((unsigned long long)__cvta_generic_to_global(p)),
                 "r"(v.x), "r"(v.y)
                 : "memory");
}
static __device__ __forceinline__ void attn_st_global16(const char *p, uint4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"l"((unsigned long long)__cvta_generic_to_global(p)),
                 "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

/* The CTA's token rows in shared memory (ROW halves apart, channels 0 .. K4-1) to or from their pixels' rows in
   global memory (16-bit elements, row spix[tok] at g + spix[tok] * stride; g is written when !LOAD), in 8-byte
   pieces laid over the lanes row after row: a warp moves the whole rows of RPW = 32 / (K4 / 4) consecutive tokens
   per step (a few cache lines per instruction, where one row per lane would touch 32), the CTA 8 RPW tokens. K4
   is a constant, so the lane -> (token, piece) map is a constant division and the steps are unrolled with
   constant offsets: per piece, one spix load, one 64-bit multiply-add and the copy. LOAD copies by cp.async (the
   caller commits and waits). */
template <int K4, int ROW, bool LOAD, bool CS = false>
static __device__ __forceinline__ void attn_rows(__half *srow, const int *spix, const void *g, int stride, int lane,
                                                 int warp) {
    constexpr int CH = K4 / 4, RPW = 32 / CH, STEP = 8 * RPW, NS = (ATTN_TOK + STEP - 1) / STEP;
    static_assert(K4 % 4 == 0 && K4 >= 4 && K4 <= 32, "8-byte pieces, at least one row per warp");
    lane = attn_opaque(lane);
    const int lr = (unsigned)lane / CH, tok0 = warp * RPW + lr, lc = 4 * (lane - lr * CH);
    if (lr >= RPW) return; /* the 32 % CH lanes left over */
    const char *gl = attn_opaque((const char *)g + 2 * lc);
    const int rowb = 2 * stride; /* bytes */
    __half *s0 = srow + tok0 * ROW + lc;
    const unsigned a0 = elan_smem_addr(s0);
#pragma unroll
    for (int st = 0; st < NS; st++) {
        if (ATTN_TOK % STEP && st == NS - 1 && tok0 + st * STEP >= ATTN_TOK) break; /* a last, partial step */
        const char *gp = attn_row_ptr(gl, spix[tok0 + st * STEP], rowb);
        if constexpr (LOAD)
            attn_cp_async8(a0 + st * STEP * ROW * 2, gp, 8u);
        else if constexpr (CS)
            attn_st_global8_cs(gp, *(const uint2 *)(s0 + st * STEP * ROW));
        else
            attn_st_global8(gp, *(const uint2 *)(s0 + st * STEP * ROW));
    }
}

/* The A fragments (k16 steps 0-3) of the m16 tile of tokens r0 .. r0 + 15: x rows of cin halves, 32-bit loads. */
template <typename T>
static __device__ __forceinline__ void attn_proj_a(unsigned (&af)[4][4], const T *sx, int cin, int r0, int lane) {
    const T *xa = sx + (r0 + (lane >> 2)) * cin + 2 * (lane & 3), *xb = xa + 8 * cin;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        af[ks][0] = *(const unsigned *)(xa + ks * 16);
        af[ks][1] = *(const unsigned *)(xb + ks * 16);
        af[ks][2] = *(const unsigned *)(xa + ks * 16 + 8);
        af[ks][3] = *(const unsigned *)(xb + ks * 16 + 8);
    }
}

/* n8 tiles J0 .. J1-1 of the fused project_inp (tiles 0 .. NQT-1 are q, into sq; NQT .. the v tiles, into sv) for
   the warp's 32 tokens r0 .. r0 + 31: D_j = bias_j + A B_j over K = 64, rounded to fp16. B of tile j: weight rows
   8j .. 8j+7 of sw (the v tiles' rows and biases follow the q tiles': ATTN_PROJ_SMEM); one ldmatrix.x4 covers two
   k16 steps (matrix m = lane / 8: k columns 8m .. 8m+7 of the pair); sb holds the tiles' biases as float4s.
   Shaped by the shared-memory data pipe, the kernel's busiest unit (docs/PERFORMANCE.md step 6): the A fragments
   of both m16 tiles stay in registers (32) while the tiles' B fragments pass one tile at a time, so a warp reads
   its x rows once and the weights once. Before, each m16 tile read all the weights again (6 KB per tile and
   warp; counted with the x loads, ~1376 -> 944 wavefronts per computing CTA, 944 -> 728 per reusing one); a
   split of the warps into q and v warps of 64 tokens each saved less (1312 / 752: each x row read twice). Dev
   check at 960x544,
   H100, three alternating repetitions: 0.190 / 0.169 -> 0.182 / 0.163 ms (computing / reusing GMSA; the split:
   0.190 / 0.166). Each D still sums bias, k-steps 0, 1, 2, 3 in that order (the same bits as before), the two m16
   tiles' chains interleaved. The next tile's B fragments and bias are loaded before this tile's stores, which the
   loads could not pass (ptxas cannot tell sw from sq / sv). */
template <typename T, int NQT, int J0, int J1, int ROW>
static __device__ __forceinline__ void attn_proj_cols(const T *sx, int cin, int r0, const T *sw, const float *sb,
                                                      __half *sq, __half *sv, int lane) {
    const int t = lane & 3;
    unsigned af[2][4][4];
    attn_proj_a(af[0], sx, cin, r0, lane);
    attn_proj_a(af[1], sx, cin, r0 + 16, lane);
    const T *bw = sw + (lane & 7) * ATTN_XR + 8 * (lane >> 3);
    const int o = (r0 + (lane >> 2)) * ROW + 2 * t;
    unsigned bf[2][2][4];
    float4 bb[2];
    elan_ldsm_x4(bf[J0 & 1][0], bw + J0 * 8 * ATTN_XR);
    elan_ldsm_x4(bf[J0 & 1][1], bw + J0 * 8 * ATTN_XR + 32);
    bb[J0 & 1] = *(const float4 *)(sb + 16 * J0 + 4 * t);
#pragma unroll
    for (int j = J0; j < J1; j++) {
        const unsigned(&b)[2][4] = bf[j & 1];
        float acc[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
            acc[mt][0] = bb[j & 1].x, acc[mt][1] = bb[j & 1].y, acc[mt][2] = bb[j & 1].z, acc[mt][3] = bb[j & 1].w;
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
#pragma unroll
            for (int mt = 0; mt < 2; mt++) elan_mma16816<T>(acc[mt], af[mt][ks], b[ks >> 1] + 2 * (ks & 1));
        if (j + 1 < J1) {
            elan_ldsm_x4(bf[(j + 1) & 1][0], bw + (j + 1) * 8 * ATTN_XR);
            elan_ldsm_x4(bf[(j + 1) & 1][1], bw + (j + 1) * 8 * ATTN_XR + 32);
            bb[(j + 1) & 1] = *(const float4 *)(sb + 16 * (j + 1) + 4 * t);
        }
        __half *d = (j < NQT ? sq + 8 * j : sv + 8 * (j - NQT)) + o;
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            *(unsigned *)(d + mt * 16 * ROW) = elan_pack2_out<__half>(acc[mt][0], acc[mt][1]);
            *(unsigned *)(d + mt * 16 * ROW + 8 * ROW) = elan_pack2_out<__half>(acc[mt][2], acc[mt][3]);
        }
    }
}

/* attn_project's three staging steps (gmsa_kernel runs them too): the group's weights (cp.async, the caller
   commits), its biases (plain stores), the CTA's x rows (cp.async, after the caller's elan_pdl_wait and a barrier
   that publishes spix). Shapes as in attn_project. */
template <int KQ8, int NV, typename T>
static __device__ __forceinline__ void attn_proj_stage_w(const elan_cuda_attn_args &a, T *sw, int tid) {
    constexpr int KQ = 8 * KQ8, NW = ATTN_NW(KQ8, NV), K = ATTN_K4(KQ8, NV);
    const int cin = a.cin;
    const bool own_q = a.wq != NULL;
    /* NW rows of 16 8-byte pieces (64 columns), q rows (computing GMSA only), then v rows; pieces past cin and
       rows past K are zero-filled. Thread tid copies piece tid % 16 (the same column at every step) of rows
       tid / 16 + 16 st: a warp reads two rows' consecutive pieces. (The mask tells the compiler that n0 < 16, so
       that whether a step's rows are q or v rows is mostly a constant.) */
    const int c = 4 * (tid & 15), n0 = (tid >> 4) & 15;
    const unsigned d0 = elan_smem_addr(sw + n0 * ATTN_XR + c);
#pragma unroll
    for (int st = 0; st < (NW + 15) / 16; st++) {
        const int n = n0 + 16 * st;
        if (NW % 16 && st == (NW + 15) / 16 - 1 && n >= NW) break;
        const bool isq = n < KQ;
        const int r = isq ? n : n - KQ;
        const bool real = c < cin && r < K && (own_q || !isq);
        const T *w = (const T *)(isq ? a.wq : a.wv);
        attn_cp_async8(d0 + st * 16 * ATTN_XR * 2, real ? w + r * cin + c : a.wv, real ? 8u : 0u);
    }
}

template <int KQ8, int NV>
static __device__ __forceinline__ void attn_proj_stage_bias(const elan_cuda_attn_args &a, float *sb, int tid) {
    constexpr int KQ = 8 * KQ8, NW = ATTN_NW(KQ8, NV), K = ATTN_K4(KQ8, NV);
    const bool own_q = a.wq != NULL;
    if (tid < NW) { /* bias of output column tid, at (tile tid / 8, lane t = tid % 8 / 2, element tid % 2 and + 2) */
        const float b = tid < KQ ? (own_q && tid < K ? a.bq[tid] : 0.0f)
                                 : tid - KQ < K ? a.bv[tid - KQ] : tid == NW - 1 ? 1.0f : 0.0f;
        sb[2 * tid - (tid & 1)] = sb[2 * tid - (tid & 1) + 2] = b;
    }
}

template <typename T>
static __device__ __forceinline__ void attn_proj_stage_x(const elan_cuda_attn_args &a, T *sx, const int *spix, int tid) {
    const int lane = tid & 31, warp = tid >> 5, cin = a.cin;
    /* 128 token pairs of PP = cin / 4 <= 16 16-byte pieces each. A warp copies 2 pairs per step (lanes 0-15 the
       one, 16-31 the other; lane j of a half copies piece j, lanes j >= PP idle: 30 of 32 busy for cin = 60), the
       CTA 16, so every thread takes 8 steps of a constant stride and no lane needs a division */
    const int j = lane & 15, pr0 = 2 * warp + (lane >> 4);
    if (4 * j < cin) {
        const char *xs = attn_opaque((const char *)a.x + 16 * j);
        const int rowb = 2 * cin; /* bytes per x row */
        const unsigned d0 = elan_smem_addr(sx + pr0 * 2 * cin + 8 * j);
#pragma unroll
        for (int st = 0; st < ATTN_TOK / 32; st++)
            attn_cp_async16(d0 + st * 16 * 2 * rowb, attn_row_ptr(xs, spix[2 * (pr0 + 16 * st)], rowb));
    }
    if (tid < 8) elan_cp_async16(sx + ATTN_TOK * cin + 8 * tid, a.x, 0u); /* the zeros past the last row */
}

/* project_inp fused into the attention (a.x != NULL): the CTA's operands are formed on chip instead of being
   read from a project_inp output. The warps multiply the tokens' x rows by the group's weights on tensor cores
   (K = 64, fp32 accumulators started at the bias: attn_proj_cols) and round the results to fp16 straight into
   sq (q, zero up to 8 KQ8 through zero weight rows) and sv (v; zero columns up to 8 NV - 1, whose bias row is 1:
   the ones column of the row sums). With a.wq == NULL (a reusing GMSA) q is
   copied from a.q (fp16, written by the computing GMSA's q_out) instead, and only v is computed. Per pixel the
   GMSA reads x (C halves, shared by the three groups' CTAs through L2) and, in a reusing GMSA, q. On return
   (after a barrier) sq and sv are complete. k is ATTN_K4(KQ8, NV) (= 20: attn3_proj_pick), a constant here.

   The copies are the kernel's most frequent instructions, so they are shaped for few of them: tokens 2i and
   2i + 1 are always neighbouring pixels of one window row (ws even, shift ws/2 even, so pixel 2i is even and
   its neighbour never wraps), i.e. 4 cin contiguous bytes that start 16-byte aligned (cin % 4 == 0, x_stride
   == cin): the x tile is copied pair by pair in 16-byte pieces, in the order it lies in memory, and the A
   fragments are then read with 32-bit shared loads (row stride cin halves: 2-way bank conflicts at cin = 60,
   8-way at cin = 64; a few dozen loads per warp) instead of ldmatrix, which would need a padded, 16-byte
   aligned row stride. (Rows padded to 72 halves would make these loads conflict-free, but the odd row of a pair
   then starts 8 bytes off a 16-byte boundary in global memory, where a 16-byte cp.async cannot read: tried in
   step 6, wrong results, caught by check_attn_proj.) K runs to 64: the columns past cin read the next row
   (finite values, times zero weights) and, for the last row, zero halves past the tile. Every loop has a
   constant trip count and is unrolled, with the shared addresses formed once: per 16-byte piece of x, one spix
   load, one 64-bit multiply-add, the cp.async and an add. */
template <int KQ8, int NV, typename T>
static __device__ __forceinline__ void attn_project(const elan_cuda_attn_args &a, __half *sq, __half *sv,
                                                   const int *spix, unsigned char *pbase) {
    constexpr int ROW = ATTN_ROW(KQ8, NV), KQ = 8 * KQ8, NQT = KQ8, NW = ATTN_NW(KQ8, NV), K = ATTN_K4(KQ8, NV);
    static_assert(NW <= ATTN_TOK, "one bias per thread");
    T *sx = (T *)pbase;
    T *sw = (T *)(pbase + ATTN_XTILE);
    float *sb = (float *)(sw + NW * ATTN_XR);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int cin = a.cin;
    const bool own_q = a.wq != NULL;

    attn_proj_stage_w<KQ8, NV>(a, sw, tid);
    elan_cp_async_commit();
    /* the weights are constants and in flight; x (and q) are the previous kernels' outputs */
    elan_pdl_wait();
    attn_proj_stage_x(a, sx, spix, tid);
    if (!own_q) { /* q of the block's computing GMSA, fp16, K channels */
        attn_rows<K, ROW, true>(sq, spix, a.q, a.q_stride, lane, warp);
#pragma unroll
        for (int c = K; c < KQ; c += 2) *(unsigned *)(sq + tid * ROW + c) = 0u;
    }
    elan_cp_async_commit();
    attn_proj_stage_bias<KQ8, NV>(a, sb, tid);
    elan_cp_async_wait_all();
    __syncthreads();

    /* warp: tokens 32 warp .. +31; the q tiles (computing GMSA), then the v tiles, past the same A fragments */
    if (own_q)
        attn_proj_cols<T, NQT, 0, NQT + NV, ROW>(sx, cin, 32 * warp, sw, sb, sq, sv, lane);
    else
        attn_proj_cols<T, NQT, NQT, NQT + NV, ROW>(sx, cin, 32 * warp, sw, sb, sq, sv, lane);
    __syncthreads();
    /* the computing GMSA leaves its q (fp16) for the block's reusing GMSAs */
    if (own_q && a.q_out) attn_rows<K, ROW, false, GMSA_Q_CS>(sq, spix, a.q_out, a.q_out_stride, lane, warp);
}

/* The attention of one warp's 32 query rows row0 .. row0 + 31 (two m16 tiles) of sq (Q = K) and sv (V, with the
   ones column) into o (unnormalised; o[mt][NV - 1] column 7 holds the row sums): ws 8 / 16 tiles share their
   window's K / V fragments (the window holding row0: rows row0 / T * T ..), 16 KB keys per step; ws 4 tiles are
   each a window of their own. m[mt][h]: the maximum score (log2 units) of row g + 8h of tile mt, returned; KM:
   given (attn_mma_step). */
template <int WS, int KQ8, int NV, int KB, bool KM = false>
static __device__ __forceinline__ void attn_mma_rows(const __half *sq, const __half *sv, int row0, int lane,
                                                     float (&o)[2][NV][4], float (&m)[2][2]) {
    constexpr int T = WS * WS, ROW = ATTN_ROW(KQ8, NV), KS = KQ8 / 2;
    unsigned qa[2][(KQ8 + 1) / 2][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int st = 0; st < KS; st++)
            elan_ldsm_x4(qa[mt][st], sq + (row0 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW + st * 16 +
                                         ((lane >> 4) & 1) * 8);
        if constexpr (KQ8 % 2) /* k8 remainder: matrices rows 0-7, rows 8-15 of channels 16KS .. +7 */
            elan_ldsm_x2(qa[mt][KS], sq + (row0 + mt * 16 + (lane & 15)) * ROW + KS * 16);
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int j = 0; j < NV; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
        if (!KM) m[mt][0] = m[mt][1] = -INFINITY;
    }
    if constexpr (T >= 32) { /* both tiles in one window: share every K / V fragment */
        const int kbase = row0 / T * T;
        unsigned kf[KB][(KQ8 + 1) / 2][4], vf[KB][NV][2];
#pragma unroll 1
        for (int kb = 0; kb < T; kb += 16 * KB) {
#pragma unroll
            for (int b = 0; b < KB; b++) attn_mma_load_kv<KQ8, NV, ROW>(sq, sv, kbase + kb + 16 * b, lane, kf[b], vf[b]);
            attn_mma_step<KQ8, NV, KB, KM>(qa[0], kf, vf, o[0], m[0]);
            attn_mma_step<KQ8, NV, KB, KM>(qa[1], kf, vf, o[1], m[1]);
        }
    } else {
        unsigned kf[1][(KQ8 + 1) / 2][4], vf[1][NV][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            attn_mma_load_kv<KQ8, NV, ROW>(sq, sv, row0 + mt * 16, lane, kf[0], vf[0]);
            attn_mma_step<KQ8, NV, 1, KM>(qa[mt], kf, vf, o[mt], m[mt]);
        }
    }
}

/* The row maxima m of attn_mma_rows for the warp's rows row0 .. row0 + 31, to or from a plane of one fp32 per pixel
   (token r is pixel spix[r]): the computing GMSA leaves them for its reusing GMSAs (a.m_out), which then skip
   the running maximum (a.m_in, KM). The four lanes of a quad hold the same two rows; lane t = 0 stores. */
static __device__ __forceinline__ void attn_max_load(float (&m)[2][2], const float *in, const int *spix, int row0,
                                                     int lane) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) m[mt][h] = in[spix[row0 + 16 * mt + (lane >> 2) + 8 * h]];
}
static __device__ __forceinline__ void attn_max_store(const float (&m)[2][2], float *out, const int *spix, int row0,
                                                      int lane) {
    if (lane & 3) return;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float *p = out + spix[row0 + 16 * mt + (lane >> 2) + 8 * h];
            if (GMSA_Q_CS)
                __stcs(p, m[mt][h]);
            else
                *p = m[mt][h];
        }
}

/* The attention of one group over the 16 x 16 region (rx, ry) of image img. Token (window wl of the region,
   position i in the window) is pixel ((wy*WS + i / WS + shift) mod Hp, ...), the windows of the region taken in
   raster order; the regions of the three groups of one block then cover nearly the same pixels (they differ by
   the roll only), which attn3_kernel uses. */
template <int WS, int KQ8, int NV, typename T, bool PROJ = false, bool KM = false>
static __device__ __forceinline__ void attn_mma_body(const elan_cuda_attn_args &a, int vec4, int rx, int ry, int img) {
    typedef attn_mma_shape<WS, KQ8, NV> S;
    constexpr int ROW = S::ROW, KQ = 8 * KQ8;
    extern __shared__ float4 smem4[];
    __half *sq = (__half *)smem4;
    __half *sv = sq + S::TOK * ROW;
    int *spix = (int *)(sv + S::TOK * ROW);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int K = a.k;

    /* load: thread tid is token tid of the CTA */
    {
        const unsigned wl = threadIdx.x / S::T, i = threadIdx.x % S::T; /* unsigned: shifts and masks */
        const int wx = rx * S::SUB + wl % S::SUB, wy = ry * S::SUB + wl / S::SUB;
        int py = wy * WS + i / WS + a.shift, px = wx * WS + i % WS + a.shift;
        if (py >= a.Hp) py -= a.Hp;
        if (px >= a.Wp) px -= a.Wp;
        const int p = (img * a.Hp + py) * a.Wp + px; /* 32-bit: the plan refuses more than 2^31 - 1 pixels */
        spix[tid] = p;
        if constexpr (PROJ) {
            __syncthreads(); /* spix of every token */
            attn_project<KQ8, NV, T>(a, sq, sv, spix, (unsigned char *)(spix + S::TOK));
        } else {
            __half *qs = sq + tid * ROW, *vs = sv + tid * ROW;
            const T *q = (const T *)a.q + (size_t)p * a.q_stride;
            const T *v = (const T *)a.v + (size_t)p * a.v_stride;
            int c = 0;
            if (vec4) {
                /* Coalesced: the CTA's 2 * CH * TOK 8-byte chunks (CH = K / 4 per q row and per v row) are spread
                   over the threads chunk-major, so the lanes of a warp read the consecutive chunks of 3-4 tokens'
                   rows (a few cache lines per load instruction) instead of one chunk of 32 different rows each (32
                   lines: the L1 then spends a cycle per line, which bounded ws = 4 at ~500 GB/s). Every load is
                   issued before the first one is used. */
                const int CH = K / 4;
                uint2 raw[KQ / 2];
                __syncthreads(); /* spix of every token */
    #pragma unroll
                for (int it = 0; it < KQ / 2; it++) {
                    raw[it] = make_uint2(0u, 0u);
                    const int cidx = tid + it * S::TOK, tok = cidx / (2 * CH), part = cidx - tok * 2 * CH;
                    if (it < 2 * CH) {
                        const int pt = spix[tok];
                        const bool isv = part >= CH;
                        const int cc = 4 * (isv ? part - CH : part);
                        const T *src = isv ? (const T *)a.v + (size_t)pt * a.v_stride + cc : (const T *)a.q + (size_t)pt * a.q_stride + cc;
                        raw[it] = *(const uint2 *)src;
                    }
                }
    #pragma unroll
                for (int it = 0; it < KQ / 2; it++) {
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
                    *(uint2 *)((isv ? sv : sq) + tok * ROW + cc) =
                        make_uint2(elan_pack2<__half>(f.x, f.y), elan_pack2<__half>(f.z, f.w));
                }
                c = K; /* the zero padding of this thread's own rows follows */
            } else {
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
            for (; c < KQ; c += 2) *(unsigned *)(qs + c) = 0u; /* zero padding */
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
    float o[2][NV][4], m[2][2];
    if (KM) attn_max_load(m, a.m_in, spix, row0, lane);
    attn_mma_rows<WS, KQ8, NV, PROJ ? ATTN_KB_PROJ : ATTN_KB, KM>(sq, sv, row0, lane, o, m);
    if (PROJ && !KM && a.m_out) attn_max_store(m, a.m_out, spix, row0, lane);
    __syncthreads(); /* every warp is done with the keys: sq is reused for the output */

    const int g = lane >> 2, t = lane & 3;
    T *so = (T *)sq;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            /* row sum: the last column of O (V's ones column), held by lane t = 3 of the quad */
            const float lt = __shfl_sync(0xffffffffu, o[mt][NV - 1][2 * h + 1], lane | 3);
            const float inv = attn_rcp(lt);
            const int r = row0 + mt * 16 + g + 8 * h;
#pragma unroll
            for (int j = 0; j < NV; j++)
                *(unsigned *)(so + r * ROW + j * 8 + 2 * t) = elan_pack2_out<T>(o[mt][j][2 * h] * inv, o[mt][j][2 * h + 1] * inv);
        }
    __syncthreads();

    /* coalesced like the loads; the fused project_inp's operands always pass vec4's tests (elan_cuda_attn3) */
    if (PROJ || vec4) {
        attn_rows<ATTN_K4(KQ8, NV), ROW, false>(sq, spix, a.y, a.y_stride, lane, warp);
    } else {
        T *y = (T *)a.y + (size_t)spix[tid] * a.y_stride;
        const T *src = so + tid * ROW;
        for (int c = 0; c < K; c++) y[c] = src[c];
    }
}

/* One group per launch (any window size that divides 16). Up to 128 registers (ws 8 / 16 hold 32-key steps). */
template <int WS, int KQ8, int NV, typename T>
static __global__ void __launch_bounds__(ATTN_TOK, 2) attn_mma_kernel(elan_cuda_attn_args a, int vec4) {
    attn_mma_body<WS, KQ8, NV, T>(a, vec4, blockIdx.x, blockIdx.y, blockIdx.z);
}

/* The three groups of ELAN (windows 4, 8, 16) in one launch, CTAs interleaved: CTA (3 rx + gi, ry, img) does
   group gi of region (rx, ry) of image img, i.e. in the grid's linear order (x fastest) CTA 3r + gi does group gi
   of region r, the regions in raster order over all n images. The CTAs in flight at any moment then read the q / v
   channels of all three groups of the same pixels and write all three groups' y: each group alone reads 80 of a
   pixel's 240 bytes of g and writes 40 of its 120 bytes of y, which cost a third of every DRAM sector touched plus
   partial-sector writes (measured: one group per launch moved data at ~500 GB/s); interleaved, the sectors are
   whole by the time they leave L2. */
typedef struct {
    elan_cuda_attn_args g[3];
    unsigned pdl_from; /* CTAs from this linear index on (the last wave) trigger the next kernel's launch */
    int ng;            /* attn3_kernel: groups launched, 3, or 2 (ws 4 and 8 only: the shifted whole GMSA) */
    int rev;           /* regions in reverse order (elan_cuda_gmsa_args.rev) */
} attn3_args;

template <int KQ8, int NV, typename T, bool PROJ = false, bool KM = false>
static __global__ void __launch_bounds__(ATTN_TOK, ATTN_MIN_CTAS) attn3_kernel(attn3_args a, int vec4) {
    const unsigned bx = blockIdx.x;
    const int gi = a.ng == 2 ? bx & 1 : bx % 3;
    int rx = a.ng == 2 ? bx >> 1 : bx / 3, ry = blockIdx.y, img = blockIdx.z;
    if (a.rev) rx = gridDim.x / a.ng - 1 - rx, ry = gridDim.y - 1 - ry, img = gridDim.z - 1 - img;
    /* programmatic dependent launch (cuda_common.h): the CTAs of the last wave let the next kernel launch */
    if (blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z) >= a.pdl_from) elan_pdl_trigger();
    if (!PROJ) elan_pdl_wait(); /* attn_project waits after staging its weights */
    if (gi == 0)
        attn_mma_body<4, KQ8, NV, T, PROJ, KM>(a.g[0], vec4, rx, ry, img);
    else if (gi == 1)
        attn_mma_body<8, KQ8, NV, T, PROJ, KM>(a.g[1], vec4, rx, ry, img);
    else
        attn_mma_body<16, KQ8, NV, T, PROJ, KM>(a.g[2], vec4, rx, ry, img);
}

typedef void (*attn_mma_fn)(elan_cuda_attn_args, int);
typedef void (*attn3_fn)(attn3_args, int);

template <int WS, int KQ8, int NV>
static attn_mma_fn attn_mma_entry(int act, size_t *smem) {
    *smem = attn_mma_shape<WS, KQ8, NV>::SMEM;
    if (act == ELAN_ACT_F16) return attn_mma_kernel<WS, KQ8, NV, __half>;
    if (act == ELAN_ACT_BF16) return attn_mma_kernel<WS, KQ8, NV, __nv_bfloat16>;
    return NULL;
}

template <int KQ8, int NV>
static attn3_fn attn3_entry(int act, size_t *smem) {
    *smem = ATTN_SMEM(KQ8, NV);
    if (act == ELAN_ACT_F16) return attn3_kernel<KQ8, NV, __half>;
    if (act == ELAN_ACT_BF16) return attn3_kernel<KQ8, NV, __nv_bfloat16>;
    return NULL;
}

#define ATTN_MMA_CASE(KQ8, NV)                                               \
    if (kq8 == KQ8 && nv == NV) {                                            \
        if (ws == 4) return attn_mma_entry<4, KQ8, NV>(act, smem);           \
        if (ws == 8) return attn_mma_entry<8, KQ8, NV>(act, smem);           \
        if (ws == 16) return attn_mma_entry<16, KQ8, NV>(act, smem);         \
    }

/* The tensor-core kernel covers even k <= 32 in the half modes (ELAN-light: k = 20, ws 4 / 8 / 16): q rows of
   KQ8 = ceil(k / 8) 8-runs, v rows of NV = k / 8 + 1 (one column more than k: the ones column). The environment
   variable ELANSR_CUDA_ATTN=simt keeps the fp32 CUDA-core kernel (comparisons, debugging). */
static attn_mma_fn attn_mma_pick(int k, int ws, int act, size_t *smem) {
    static int simt = -1;
    if (simt < 0) {
        const char *e = getenv("ELANSR_CUDA_ATTN");
        simt = e && !strcmp(e, "simt");
    }
    if (simt || k < 2 || k > 32 || k % 2 || (act != ELAN_ACT_F16 && act != ELAN_ACT_BF16)) return NULL;
    const int kq8 = (k + 7) / 8, nv = k / 8 + 1;
    ATTN_MMA_CASE(1, 1)
    ATTN_MMA_CASE(1, 2)
    ATTN_MMA_CASE(2, 2)
    ATTN_MMA_CASE(2, 3)
    ATTN_MMA_CASE(3, 3)
    ATTN_MMA_CASE(3, 4)
    ATTN_MMA_CASE(4, 4)
    ATTN_MMA_CASE(4, 5)
    return NULL;
}

#define ATTN3_CASE(KQ8, NV) \
    if (kq8 == KQ8 && nv == NV) return attn3_entry<KQ8, NV>(act, smem);

static attn3_fn attn3_pick(int k, const int ws[3], int act, size_t *smem) {
    size_t sm;
    if (ws[0] != 4 || ws[1] != 8 || ws[2] != 16 || !attn_mma_pick(k, 16, act, &sm)) return NULL;
    const int kq8 = (k + 7) / 8, nv = k / 8 + 1;
    ATTN3_CASE(1, 1)
    ATTN3_CASE(1, 2)
    ATTN3_CASE(2, 2)
    ATTN3_CASE(2, 3)
    ATTN3_CASE(3, 3)
    ATTN3_CASE(3, 4)
    ATTN3_CASE(4, 4)
    ATTN3_CASE(4, 5)
    return NULL;
}

/* The fused-project_inp variant is compiled for ELAN-light's groups only (k = 20: KQ8 = 3, NV = 3), from up to
   64 input channels in pieces of 4; km: the reusing GMSA's variant with the row maxima given (a.m_in). */
static attn3_fn attn3_proj_pick(int k, int cin, const int ws[3], int act, size_t *smem, bool km = false) {
    size_t sm;
    if (k != ATTN_K4(3, 3) || cin < 4 || cin > 64 || cin % 4 || !attn3_pick(k, ws, act, &sm)) return NULL;
    *smem = ATTN_PROJ_SMEM(3, 3);
    if (act == ELAN_ACT_F16) return km ? attn3_kernel<3, 3, __half, true, true> : attn3_kernel<3, 3, __half, true>;
    if (act == ELAN_ACT_BF16)
        return km ? attn3_kernel<3, 3, __nv_bfloat16, true, true> : attn3_kernel<3, 3, __nv_bfloat16, true>;
    return NULL;
}

/* ---- the whole GMSA of a block: one kernel in unshifted blocks, two in shifted ones (half modes) ----

   gmsa_kernel does for one 16 x 16 region what attn3_kernel (with project_inp fused) does in three CTAs and the
   pointwise kernel in a fourth pass: project_inp, the attention of the three groups, project_out and the residual,
   x_out = x + bo + wo [y0 y1 y2]. Why: per block pair the three-kernel path moves ~960 bytes per pixel through
   DRAM (x in and y out of the attention, y and x in and x out of project_out, each 120 bytes in fp16), ~3.6 ms per
   4K forward at the H100's bandwidth, more than the 3.2 ms target on its own; here y never leaves the chip and the
   attention reads x once for the three groups: x in, x_out out (and q out or in), 360 bytes.

   Only unshifted blocks: there every group's windows tile the region exactly, so the three groups see the same
   256 pixels. The tokens are ordered so that they also see them in the same order, window by window for all three
   window sizes: token t is ws 8 window t / 64 of the region (2 x 2, raster), ws 4 window (t / 16) % 4 of that (2
   x 2, raster), pixel t % 16 of that (4 x 4, raster). ws 4 windows are then 16 consecutive tokens, ws 8 windows 64
   and the ws 16 window all 256, so attn_mma_rows serves each group unchanged, and warp w owns the same 32 pixels
   (rows 32 w ..) in every group: their three y stay in the warp's registers, already in the A-fragment layout of
   project_out's mma (the accumulator of o is, column pair by column pair), and are never stored. (In the shifted
   blocks the groups' windows are rolled by 2, 4 and 8 pixels: a region would need the ws 8 and ws 4 windows of a
   halo, 24 x 24 and 20 x 20 pixels; they take the two launches below.) Keys are visited in this
   order, not attn3_kernel's, so the sums differ from it in rounding only.

   Shifted blocks (SHIFT): two launches instead of attn3 + the pointwise kernel. attn3_kernel runs the ws 4 and ws 8
   groups only (a.ng = 2) and writes their y (a P x k plane per group, as cuda_backend.cu lays out q: in one P x C
   array each launch would write 40 or 80 of a pixel's 120 bytes, partial sectors; measured slower than attn3 +
   pw until the planes); then gmsa_kernel<T, true> takes one ws 16
   window of the rolled image (rolled by 8: region (rx, ry) is pixels ((16 ry + ty + 8) mod Hp, (16 rx + tx + 8) mod
   Wp), tokens in raster order, so token pairs are still neighbouring pixels that start 16-byte aligned), does that
   group's project_inp and attention, reads the other two groups' y of its 256 pixels straight into project_out's A
   fragments (gmsa_load_y), and finishes as above. project_out is pointwise, so only the ws 16 group needs its
   window; y of that group (80 bytes per pixel written and read back) and the pointwise kernel's second pass over x
   go away. The ws 16 group is ~3/4 of the attention's work, so the two launches stay unbalanced but short.

   Shared memory: sq, sv, spix as attn3_kernel; the x tile (staged once, used by the three projections and as
   the residual, then overwritten in place by x_out: each warp rewrites only its own rows); the three groups'
   project_inp weights and biases; project_out's weight as 64 rows (output channels, zero past C) of GMSA_WO = 72
   halves: column 24 g + c holds wo[n][20 g + c] for c < 20 and zero for c = 20 .. 23, matching o's 24 columns
   per group (20 values, zeros, the ones column). 87.75 KB: two CTAs (16 warps) per SM. */
#define GMSA_WO 72
#define GMSA_SMEM                                                                                                  \
    (ATTN_SMEM(3, 3) + ATTN_XTILE + 3 * (size_t)ATTN_NW(3, 3) * ATTN_XR * sizeof(__half) +                        \
     3 * 2 * ATTN_NW(3, 3) * sizeof(float) + 64 * GMSA_WO * sizeof(__half) + 64 * sizeof(float))

typedef struct {
    elan_cuda_attn_args g[3];
    const void *wo;
    const float *bo;
    void *x_out;
    unsigned pdl_from;
    int nreg; /* gmsa_persist_kernel: regions (grid of gmsa_kernel: x * y * z) */
    int rev;  /* regions in reverse order (elan_cuda_gmsa_args.rev) */
} gmsa_args;
typedef void (*gmsa_fn_t)(gmsa_args);

/* The barrier of the 256 threads that work on one region: the CTA (gmsa_kernel), or its team of a persistent CTA
   (P: gmsa_persist_kernel, named barrier 1 + team). */
template <bool P>
static __device__ __forceinline__ void gmsa_sync() {
    if (P)
        asm volatile("bar.sync %0, %1;\n" ::"r"(1 + (threadIdx.x >> 8)), "n"(ATTN_TOK) : "memory");
    else
        __syncthreads();
}

/* One group of gmsa_kernel: operands (q from a.q in a reusing GMSA), project_inp, the attention of the warp's 32
   rows, and its y, normalised and rounded to T, into ya as project_out's A fragments (per m16 tile: the k16 step
   of columns 0-15, then the k8 step of 16-23). Starts with a barrier (the previous group is done with sq, sv) and
   leaves the CTA's cp.async groups drained. */
template <int WS, typename T, bool KM, bool P>
static __device__ __forceinline__ void gmsa_group(const elan_cuda_attn_args &a, __half *sq, __half *sv,
                                                  const int *spix, const T *sx, const T *sw, const float *sb,
                                                  unsigned (&ya)[2][6], int tid, T *sx_next, const int *spix_next) {
    constexpr int KQ8 = 3, NV = 3, ROW = ATTN_ROW(KQ8, NV), KQ = 8 * KQ8, NQT = KQ8, K = ATTN_K4(KQ8, NV);
#if defined(GMSA_DEV_SKIP) /* dev/cuda timing of the kernel's phases only (wrong results; docs/PERFORMANCE.md step
                              13): 1 skips the ws 16 attention, 2 every attention, 3 the projections too */
    constexpr bool skip_attn = GMSA_DEV_SKIP >= 2 || WS == ATTN_REGION, skip_proj = GMSA_DEV_SKIP >= 3;
#else
    constexpr bool skip_attn = false, skip_proj = false;
#endif
    const int lane = tid & 31, warp = tid >> 5;
    const bool own_q = a.wq != NULL;
    gmsa_sync<P>();
    if (!own_q) {
        attn_rows<K, ROW, true>(sq, spix, a.q, a.q_stride, lane, warp);
#pragma unroll
        for (int c = K; c < KQ; c += 2) *(unsigned *)(sq + tid * ROW + c) = 0u;
        elan_cp_async_commit();
    }
    elan_cp_async_wait_all();
    gmsa_sync<P>();
    if (P && WS == ATTN_REGION && sx_next) { /* the next region's x, in flight until that region starts */
        attn_proj_stage_x(a, sx_next, spix_next, tid);
        elan_cp_async_commit();
    }
    if (own_q && !skip_proj)
        attn_proj_cols<T, NQT, 0, NQT + NV, ROW>(sx, a.cin, 32 * warp, sw, sb, sq, sv, lane);
    else if (!skip_proj)
        attn_proj_cols<T, NQT, NQT, NQT + NV, ROW>(sx, a.cin, 32 * warp, sw, sb, sq, sv, lane);
    gmsa_sync<P>();
    if (own_q && a.q_out) attn_rows<K, ROW, false, GMSA_Q_CS>(sq, spix, a.q_out, a.q_out_stride, lane, warp);

    float o[2][NV][4], m[2][2];
    if (KM) attn_max_load(m, a.m_in, spix, 32 * warp, lane);
    if constexpr (skip_attn) {
        for (int mt = 0; mt < 2; mt++)
            for (int j = 0; j < NV; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 1.0f;
        m[0][0] = m[0][1] = m[1][0] = m[1][1] = 0.0f;
    } else
        attn_mma_rows<WS, KQ8, NV, GMSA_KB, KM>(sq, sv, 32 * warp, lane, o, m);
    if (!KM && a.m_out) attn_max_store(m, a.m_out, spix, 32 * warp, lane);
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        float inv[2];
#pragma unroll
        for (int h = 0; h < 2; h++) inv[h] = attn_rcp(__shfl_sync(0xffffffffu, o[mt][NV - 1][2 * h + 1], lane | 3));
#pragma unroll
        for (int j = 0; j < NV; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) /* j = 0, 1: a0-a3 of the k16 step; j = 2: a0, a1 of the k8 step */
                ya[mt][2 * j + h] = elan_pack2_out<T>(o[mt][j][2 * h] * inv[h], o[mt][j][2 * h + 1] * inv[h]);
    }
}

/* Shifted blocks: y of groups 0 and 1 (a: that group's arguments; attn3_kernel wrote them) for the warp's 32 rows
   row0 .. row0 + 31, as project_out's A fragments in gmsa_group's layout; columns k .. 23 are 0 (what they meet
   in wo is zero, but the halves there belong to the next group's y, not written in this path). */
static __device__ __forceinline__ void gmsa_load_y(const elan_cuda_attn_args &a, const int *spix, unsigned (&ya)[2][6],
                                                   int row0, int lane) {
    constexpr int K = ATTN_K4(3, 3);
    const int g = lane >> 2, t = lane & 3;
    const char *y = attn_opaque((const char *)a.y + 4 * t);
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const char *yr = attn_row_ptr(y, spix[row0 + 16 * mt + g + 8 * h], 2 * a.y_stride);
#pragma unroll
            for (int j = 0; j < 3; j++)
                ya[mt][2 * j + h] = 8 * j + 2 * t < K ? *(const unsigned *)(yr + 16 * j) : 0u;
        }
}

/* Pixel of token tid of region (rx, ry) of image img: unshifted, the window-major order above; SHIFT, the ws 16
   window (rx, ry) of the image rolled by a.g[2].shift, raster order. With a.rev the region is the one as far from
   the last as (rx, ry, img) is from the first. */
template <bool SHIFT>
static __device__ __forceinline__ int gmsa_pixel(const gmsa_args &a, int tid, int rx, int ry, int img) {
    const elan_cuda_attn_args &a0 = a.g[0];
    if (a.rev) rx = a0.Wp / ATTN_REGION - 1 - rx, ry = a0.Hp / ATTN_REGION - 1 - ry, img = a0.n - 1 - img;
    if (SHIFT) {
        int py = ry * 16 + (tid >> 4) + a.g[2].shift, px = rx * 16 + (tid & 15) + a.g[2].shift;
        if (py >= a0.Hp) py -= a0.Hp;
        if (px >= a0.Wp) px -= a0.Wp;
        return (img * a0.Hp + py) * a0.Wp + px;
    }
    const unsigned w8 = tid >> 6, w4 = (tid >> 4) & 3, i = tid & 15;
    const int py = ry * 16 + (w8 >> 1) * 8 + (w4 >> 1) * 4 + (i >> 2);
    const int px = rx * 16 + (w8 & 1) * 8 + (w4 & 1) * 4 + (i & 3);
    return (img * a0.Hp + py) * a0.Wp + px;
}

/* The constants, by 256 threads (tid): the groups' weights and biases (SHIFT: the ws 16 group's only), project_out's
   weight in 8-byte pieces (row n: 3 groups x 6 pieces, the sixth zero) and bias. The caller commits. */
template <typename T, bool SHIFT>
static __device__ __forceinline__ void gmsa_stage_consts(const gmsa_args &a, T *sw, float *sb, T *swo, float *sbo,
                                                         int tid) {
    constexpr int NW = ATTN_NW(3, 3);
    const int C = a.g[0].cin;
#pragma unroll
    for (int gi = SHIFT ? 2 : 0; gi < 3; gi++) attn_proj_stage_w<3, 3>(a.g[gi], sw + gi * NW * ATTN_XR, tid);
    for (int e = tid; e < 64 * 18; e += ATTN_TOK) {
        const int n = e / 18, r = e - 18 * n, gi = r / 6, pc = r - 6 * gi;
        const bool real = n < C && pc < 5;
        attn_cp_async8(elan_smem_addr(swo + n * GMSA_WO + 24 * gi + 4 * pc),
                       real ? (const T *)a.wo + n * C + 20 * gi + 4 * pc : a.wo, real ? 8u : 0u);
    }
#pragma unroll
    for (int gi = SHIFT ? 2 : 0; gi < 3; gi++) attn_proj_stage_bias<3, 3>(a.g[gi], sb + gi * 2 * NW, tid);
    if (tid < 64) sbo[tid] = tid < C ? a.bo[tid] : 0.0f;
}

/* One region, once its spix is published and its x staging committed: the groups (P, sx_next: as gmsa_group),
   project_out and the residual into sx, x_out. Ends after the x_out stores are issued, with no barrier. */
template <typename T, bool SHIFT, bool KM, bool P>
static __device__ __forceinline__ void gmsa_region(const gmsa_args &a, __half *sq, __half *sv, const int *spix, T *sx,
                                                   const T *sw, const float *sb, const T *swo, const float *sbo,
                                                   int tid, T *sx_next, const int *spix_next) {
    constexpr int NW = ATTN_NW(3, 3);
    const int lane = tid & 31, warp = tid >> 5, cin = a.g[0].cin;
    unsigned ya[3][2][6];
    if (SHIFT) { /* in flight during the ws 16 group's projection and attention */
        gmsa_load_y(a.g[0], spix, ya[0], 32 * warp, lane);
        gmsa_load_y(a.g[1], spix, ya[1], 32 * warp, lane);
    } else {
        gmsa_group<4, T, KM, P>(a.g[0], sq, sv, spix, sx, sw, sb, ya[0], tid, NULL, NULL);
        gmsa_group<8, T, KM, P>(a.g[1], sq, sv, spix, sx, sw + NW * ATTN_XR, sb + 2 * NW, ya[1], tid, NULL, NULL);
    }
    gmsa_group<16, T, KM, P>(a.g[2], sq, sv, spix, sx, sw + 2 * NW * ATTN_XR, sb + 4 * NW, ya[2], tid, sx_next,
                             spix_next);

    /* project_out and the residual, n8 tile by n8 tile of output channels, into the warp's own x rows (every
       warp's projections read sx before the last group's attention began) */
    const int g = lane >> 2, t = lane & 3, row0 = 32 * warp;
    const T *bw = swo + (lane & 7) * GMSA_WO;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        unsigned b[10]; /* matrices of columns 0-7, 8-15, ..., 64-71 (b[9] repeats b[8]) */
        elan_ldsm_x4(b, bw + j * 8 * GMSA_WO + 8 * (lane >> 3));
        elan_ldsm_x4(b + 4, bw + j * 8 * GMSA_WO + 32 + 8 * (lane >> 3));
        elan_ldsm_x2(b + 8, bw + j * 8 * GMSA_WO + 64);
        const float2 bb = *(const float2 *)(sbo + 8 * j + 2 * t);
        const int c = 8 * j + 2 * t;
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            float acc[4] = {bb.x, bb.y, bb.x, bb.y};
#pragma unroll
            for (int gi = 0; gi < 3; gi++) {
                elan_mma16816<T>(acc, ya[gi][mt], b + 3 * gi);
                elan_mma1688<T>(acc, ya[gi][mt] + 4, b[3 * gi + 2]);
            }
            if (c < cin)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    unsigned *px = (unsigned *)(sx + (row0 + 16 * mt + g + 8 * h) * cin + c);
                    const float2 xv = elan_unpack2<T>(*px);
                    *px = elan_pack2_out<T>(xv.x + acc[2 * h], xv.y + acc[2 * h + 1]);
                }
        }
    }
    gmsa_sync<P>();
    { /* x_out rows from the tile, 16-byte pieces of token pairs as attn_proj_stage_x copied them in */
        const int jp = lane & 15, pr0 = 2 * warp + (lane >> 4), rowb = 2 * cin;
        if (4 * jp < cin) {
            const char *xo = attn_opaque((const char *)a.x_out + 16 * jp);
            const char *src = (const char *)sx + pr0 * 2 * rowb + 16 * jp;
#pragma unroll
            for (int st = 0; st < ATTN_TOK / 32; st++)
                attn_st_global16(attn_row_ptr(xo, spix[2 * (pr0 + 16 * st)], rowb),
                                 *(const uint4 *)(src + st * 16 * 2 * rowb));
        }
    }
}

template <typename T, bool SHIFT, bool KM>
static __global__ void __launch_bounds__(ATTN_TOK, 2) gmsa_kernel(gmsa_args a) {
    constexpr int NW = ATTN_NW(3, 3), ROW = ATTN_ROW(3, 3);
    extern __shared__ float4 smem4[];
    __half *sq = (__half *)smem4;
    __half *sv = sq + ATTN_TOK * ROW;
    int *spix = (int *)(sv + ATTN_TOK * ROW);
    T *sx = (T *)(spix + ATTN_TOK);
    T *sw = (T *)((unsigned char *)sx + ATTN_XTILE);
    float *sb = (float *)(sw + 3 * NW * ATTN_XR);
    T *swo = (T *)(sb + 3 * 2 * NW);
    float *sbo = (float *)(swo + 64 * GMSA_WO);
    const int tid = threadIdx.x;

    if (blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z) >= a.pdl_from) elan_pdl_trigger();
    spix[tid] = gmsa_pixel<SHIFT>(a, tid, blockIdx.x, blockIdx.y, blockIdx.z);
    /* constants first (in flight while the previous kernel finishes) */
    gmsa_stage_consts<T, SHIFT>(a, sw, sb, swo, sbo, tid);
    elan_cp_async_commit();
    elan_pdl_wait();
    __syncthreads(); /* spix */
    attn_proj_stage_x(a.g[0], sx, spix, tid);
    elan_cp_async_commit();
    gmsa_region<T, SHIFT, KM, false>(a, sq, sv, spix, sx, sw, sb, swo, sbo, tid, NULL, NULL);
}

/* Persistent variant (ELANSR_CUDA_GMSA_PERSIST): one CTA of two teams of 256 threads per SM; team h of CTA b takes
   regions 2b + h, 2b + h + 2 gridDim.x, ... (linear over (rx, ry, img), a.nreg of them). The constants are staged
   once per CTA instead of once per region, and a region's x tile is staged during the previous region's ws 16
   group (after its last cp.async wait), into the other of two x buffers. Why: timed alone, the whole GMSA's
   skeleton (x in, q and the maxima out, project_out, x_out; docs/PERFORMANCE.md step 13) takes 53% of it, and the
   wait for the staged x is its single largest stall. Shared memory: the constants once, then per team sq, sv, two
   spix and two x tiles: 209 KB, so one CTA (16 warps, as two CTAs of gmsa_kernel) per SM. */
#define GMSA_CONSTS                                                                                                 \
    (3 * (size_t)ATTN_NW(3, 3) * ATTN_XR * sizeof(__half) + 3 * 2 * ATTN_NW(3, 3) * sizeof(float) +                \
     64 * GMSA_WO * sizeof(__half) + 64 * sizeof(float))
#define GMSA_TEAM (ATTN_SMEM(3, 3) + ATTN_TOK * sizeof(int) + 2 * ATTN_XTILE)
#define GMSA_PSMEM (GMSA_CONSTS + 2 * GMSA_TEAM)

template <typename T, bool SHIFT, bool KM>
static __global__ void __launch_bounds__(2 * ATTN_TOK, 1) gmsa_persist_kernel(gmsa_args a) {
    constexpr int NW = ATTN_NW(3, 3), ROW = ATTN_ROW(3, 3);
    extern __shared__ float4 smem4[];
    T *sw = (T *)smem4;
    float *sb = (float *)(sw + 3 * NW * ATTN_XR);
    T *swo = (T *)(sb + 3 * 2 * NW);
    float *sbo = (float *)(swo + 64 * GMSA_WO);
    const int team = threadIdx.x >> 8, tid = threadIdx.x & (ATTN_TOK - 1);
    unsigned char *tb = (unsigned char *)smem4 + GMSA_CONSTS + team * GMSA_TEAM;
    __half *sq = (__half *)tb;
    __half *sv = sq + ATTN_TOK * ROW;
    int *const spix0 = (int *)(sv + ATTN_TOK * ROW); /* two spix, then two x tiles: buffer b at + b * size */
    unsigned char *const sx0 = (unsigned char *)(spix0 + 2 * ATTN_TOK);
    const int gx = a.g[0].Wp / ATTN_REGION, gy = a.g[0].Hp / ATTN_REGION, step = 2 * gridDim.x;

    if (team == 0) gmsa_stage_consts<T, SHIFT>(a, sw, sb, swo, sbo, tid);
    elan_cp_async_commit();
    int r = 2 * blockIdx.x + team, buf = 0;
    elan_pdl_wait();
    if (r < a.nreg) {
        spix0[tid] = gmsa_pixel<SHIFT>(a, tid, r % gx, r / gx % gy, r / gx / gy);
        gmsa_sync<true>();
        attn_proj_stage_x(a.g[0], (T *)sx0, spix0, tid);
        elan_cp_async_commit();
    }
    elan_cp_async_wait_all();
    __syncthreads(); /* the constants, staged by team 0 */
    for (; r < a.nreg; r += step, buf ^= 1) {
        const int rn = r + step;
        int *const sp = spix0 + buf * ATTN_TOK, *const spn = spix0 + (buf ^ 1) * ATTN_TOK;
        T *const sx = (T *)(sx0 + buf * ATTN_XTILE), *const sxn = (T *)(sx0 + (buf ^ 1) * ATTN_XTILE);
        if (rn < a.nreg) spn[tid] = gmsa_pixel<SHIFT>(a, tid, rn % gx, rn / gx % gy, rn / gx / gy);
        if (rn >= a.nreg) elan_pdl_trigger(); /* the team's last region: the next kernel may launch */
        gmsa_region<T, SHIFT, KM, true>(a, sq, sv, sp, sx, sw, sb, swo, sbo, tid, rn < a.nreg ? sxn : NULL, spn);
        gmsa_sync<true>(); /* spix[buf], sx[buf] free for the region after next */
    }
}

template <typename T>
static gmsa_fn_t gmsa_entry(bool shifted, bool km, bool persist) {
    if (persist) {
        if (shifted) return km ? gmsa_persist_kernel<T, true, true> : gmsa_persist_kernel<T, true, false>;
        return km ? gmsa_persist_kernel<T, false, true> : gmsa_persist_kernel<T, false, false>;
    }
    if (shifted) return km ? gmsa_kernel<T, true, true> : gmsa_kernel<T, true, false>;
    return km ? gmsa_kernel<T, false, true> : gmsa_kernel<T, false, false>;
}

/* km: the reusing GMSA's variant with the row maxima given (a.m_in); persist: gmsa_persist_kernel */
static gmsa_fn_t gmsa_pick(int k, int cin, const int ws[3], int act, bool shifted, bool km, bool persist = false) {
    size_t sm;
    if (cin != 3 * k || !attn3_proj_pick(k, cin, ws, act, &sm)) return NULL;
    if (act == ELAN_ACT_F16) return gmsa_entry<__half>(shifted, km, persist);
    if (act == ELAN_ACT_BF16) return gmsa_entry<__nv_bfloat16>(shifted, km, persist);
    return NULL;
}

/* ---- tensor-core attention in tf32 (precision TF32, fp32 storage) ----

   The same windows and token -> pixel map as the half kernel: a CTA is one 16 x 16 region (256 tokens, whole
   windows), grid (regions across, regions down, images). Each thread stages its token: q + bias and v + bias in
   fp32, rounded once to tf32 (cvt.rna), q into Q [token][KS] and v transposed into Vt [channel][VS]. Each warp
   then owns 32 query rows (two m16 tiles of one window; two windows for ws 4) and walks their window's keys 16
   at a time with mma.sync m16n8k8.tf32:
     S (16 x 16) = Q_tile K^T    KP / 8 k8 steps per n8 tile of keys; the keys are the window's own q rows
     online softmax              row max over the quad (shuffles), exp2 in fp32, P rounded to tf32
     O (16 x KP) += P V          one k8 step per 8 keys
   and divides O by the row sums (of the rounded P, so that the weights it applied sum to 1) at the end.

   A tf32 fragment holds one element per register, A's columns t and t + 4 (mma.h). A k8 step sums over its 8
   columns, so any permutation of them that A and B share leaves the product unchanged; here logical column t is
   channel (or key) 2t and column t + 4 is 2t + 1. Then every A and B fragment pair is one 8-byte shared load,
   and S's accumulator (c0, c1 = S[g][2t..2t+1], c2, c3 the same of row g + 8) is P's A fragment register for
   register (a0 = c0, a2 = c1, a1 = c2, a3 = c3). V is stored transposed for the same reason: B of P V is
   (key 2t, 2t + 1) of one channel, contiguous in Vt. KS and VS are 8 or 24 mod 32 words: the four rows (g) of
   a half-warp's 8-byte loads fall on four different 8-bank segments, conflict-free.

   Compiled for KP = k rounded up to 8, KP <= 32 (ELAN-light: k = 20, KP = 24); zero channels past k. */
#define ATTN_TF32_MAXKP 32

template <int KP>
struct attn_tf32_shape {
    static constexpr int K8 = KP / 8;
    static constexpr int KS = (KP % 32 == 8 || KP % 32 == 24) ? KP : KP + 8; /* Q row stride (words) */
    static constexpr int VS = ATTN_TOK + 8;                                  /* Vt row stride (words) */
    static constexpr size_t SMEM = ((size_t)ATTN_TOK * KS + (size_t)KP * VS) * sizeof(float);
};

/* Pixel of token tok of region (rx, ry) of image img (window-major: tok = window * ws^2 + row * ws + column). */
template <int WS>
static __device__ __forceinline__ long long attn_tf32_pixel(const elan_cuda_attn_args &a, int tok, int rx, int ry, int img) {
    constexpr int T = WS * WS, SUB = ATTN_REGION / WS;
    const int w = tok / T, i = tok % T;
    int py = ry * ATTN_REGION + (w / SUB) * WS + i / WS + a.shift;
    int px = rx * ATTN_REGION + (w % SUB) * WS + i % WS + a.shift;
    if (py >= a.Hp) py -= a.Hp;
    if (px >= a.Wp) px -= a.Wp;
    return ((long long)img * a.Hp + py) * a.Wp + px;
}

/* CTAs per SM the register budget is set for: 2 (128 registers; k = 20 needs ~100) */
#ifndef ATTN_TF32_MIN_CTAS
#define ATTN_TF32_MIN_CTAS 2
#endif

template <int WS, int KP>
static __device__ __forceinline__ void attn_tf32_body(const elan_cuda_attn_args &a, int vec4, int rx, int ry, int img) {
    typedef attn_tf32_shape<KP> S;
    constexpr int T = WS * WS, K8 = S::K8, KS = S::KS, VS = S::VS;
    constexpr int STEPS = T >= 16 ? T / 16 : 1;
    constexpr float L2E = 1.4426950408889634f;
    extern __shared__ float4 smem4[];
    float *sq = (float *)smem4;  /* [ATTN_TOK][KS] */
    float *svt = sq + ATTN_TOK * KS; /* [KP][VS] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int K = a.k;

    /* stage this thread's token: every load first (one memory latency per CTA, not one per piece), then the
       sums, the rounding and the stores */
    {
        const long long p = attn_tf32_pixel<WS>(a, tid, rx, ry, img);
        const float *q = (const float *)a.q + p * a.q_stride, *v = (const float *)a.v + p * a.v_stride;
        float *qs = sq + tid * KS;
        if (vec4) {
            const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float4 qv[KP / 4], vv[KP / 4], qb[KP / 4], vb[KP / 4];
#pragma unroll
            for (int c = 0; c < KP / 4; c++) {
                const bool in = 4 * c < K;
                qv[c] = in ? __ldg((const float4 *)(q + 4 * c)) : z;
                vv[c] = in ? __ldg((const float4 *)(v + 4 * c)) : z;
                qb[c] = in && a.q_bias ? __ldg((const float4 *)(a.q_bias + 4 * c)) : z;
                vb[c] = in && a.v_bias ? __ldg((const float4 *)(a.v_bias + 4 * c)) : z;
            }
#pragma unroll
            for (int c = 0; c < KP / 4; c++) {
                const float4 qq = make_float4(qv[c].x + qb[c].x, qv[c].y + qb[c].y, qv[c].z + qb[c].z, qv[c].w + qb[c].w);
                const float4 vv4 = make_float4(vv[c].x + vb[c].x, vv[c].y + vb[c].y, vv[c].z + vb[c].z, vv[c].w + vb[c].w);
                *(uint4 *)(qs + 4 * c) = make_uint4(elan_tf32(qq.x), elan_tf32(qq.y), elan_tf32(qq.z), elan_tf32(qq.w));
                svt[(4 * c) * VS + tid] = __uint_as_float(elan_tf32(vv4.x));
                svt[(4 * c + 1) * VS + tid] = __uint_as_float(elan_tf32(vv4.y));
                svt[(4 * c + 2) * VS + tid] = __uint_as_float(elan_tf32(vv4.z));
                svt[(4 * c + 3) * VS + tid] = __uint_as_float(elan_tf32(vv4.w));
            }
        } else {
            for (int c = 0; c < KP; c++) {
                float qv = 0.0f, vv = 0.0f;
                if (c < K) {
                    qv = q[c] + (a.q_bias ? a.q_bias[c] : 0.0f);
                    vv = v[c] + (a.v_bias ? a.v_bias[c] : 0.0f);
                }
                qs[c] = __uint_as_float(elan_tf32(qv));
                svt[c * VS + tid] = __uint_as_float(elan_tf32(vv));
            }
        }
    }
    __syncthreads();

    const int r0 = warp * 32; /* the warp's first query row (token) */
    /* first key of each m16 tile's window: the same for both tiles unless ws = 4 (a window per tile) */
    const int kb[2] = {(r0 / T) * T, ((r0 + 16) / T) * T};
    unsigned qa[2][K8][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int ks = 0; ks < K8; ks++) {
            const float *r = sq + (r0 + mt * 16 + g) * KS + ks * 8 + 2 * t;
            unsigned lo[2], hi[2];
            elan_ld_tf32x2(lo, r);
            elan_ld_tf32x2(hi, r + 8 * KS);
            qa[mt][ks][0] = lo[0], qa[mt][ks][2] = lo[1], qa[mt][ks][1] = hi[0], qa[mt][ks][3] = hi[1];
        }

    float o[2][K8][4], mrow[2][2], lrow[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int ct = 0; ct < K8; ct++) o[mt][ct][0] = o[mt][ct][1] = o[mt][ct][2] = o[mt][ct][3] = 0.0f;
        mrow[mt][0] = mrow[mt][1] = -INFINITY;
        lrow[mt][0] = lrow[mt][1] = 0.0f;
    }

#pragma unroll 1
    for (int st = 0; st < STEPS; st++) {
        float s[2][2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
        /* S = Q K^T: B[k][n] = q[key n][channel k] */
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int ks = 0; ks < K8; ks++) {
                if (WS == 4) {
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        unsigned b[2];
                        elan_ld_tf32x2(b, sq + (kb[mt] + nt * 8 + g) * KS + ks * 8 + 2 * t);
                        elan_mma_tf32(s[mt][nt], qa[mt][ks], b);
                    }
                } else {
                    unsigned b[2];
                    elan_ld_tf32x2(b, sq + (kb[0] + st * 16 + nt * 8 + g) * KS + ks * 8 + 2 * t);
                    elan_mma_tf32(s[0][nt], qa[0][ks], b);
                    elan_mma_tf32(s[1][nt], qa[1][ks], b);
                }
            }
        /* online softmax; P (tf32) replaces S in place */
        unsigned pa[2][2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float mx = fmaxf(fmaxf(s[mt][0][2 * h], s[mt][0][2 * h + 1]), fmaxf(s[mt][1][2 * h], s[mt][1][2 * h + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mn = fmaxf(mrow[mt][h], mx);
                const float sc = elan_exp2((mrow[mt][h] - mn) * L2E); /* 0 on the first step (m = -inf) */
                mrow[mt][h] = mn;
                float l = lrow[mt][h] * sc;
#pragma unroll
                for (int ct = 0; ct < K8; ct++) o[mt][ct][2 * h] *= sc, o[mt][ct][2 * h + 1] *= sc;
                const float ml = mn * L2E;
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const unsigned pv = elan_tf32(elan_exp2(fmaf(s[mt][nt][2 * h + e], L2E, -ml)));
                        pa[mt][nt][2 * h + e] = pv;
                        l += __uint_as_float(pv);
                    }
                lrow[mt][h] = l;
            }
        /* O += P V: A = P (a0 = c0, a1 = c2, a2 = c1, a3 = c3), B[k][n] = v[key k][channel n] from Vt */
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const unsigned af[4] = {pa[mt][nt][0], pa[mt][nt][2], pa[mt][nt][1], pa[mt][nt][3]};
                const int key = (WS == 4 ? kb[mt] : kb[0] + st * 16) + nt * 8 + 2 * t;
#pragma unroll
                for (int ct = 0; ct < K8; ct++) {
                    unsigned b[2];
                    elan_ld_tf32x2(b, svt + (ct * 8 + g) * VS + key);
                    elan_mma_tf32(o[mt][ct], af, b);
                }
            }
    }

    /* y = O / l, straight from the accumulators: lane (g, t) has channels 8 ct + 2t, + 1 of rows g and g + 8 */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float l = lrow[mt][h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = 1.0f / l;
            float *y = (float *)a.y + attn_tf32_pixel<WS>(a, r0 + mt * 16 + g + 8 * h, rx, ry, img) * a.y_stride;
#pragma unroll
            for (int ct = 0; ct < K8; ct++) {
                const int c = ct * 8 + 2 * t;
                const float y0 = o[mt][ct][2 * h] * inv, y1 = o[mt][ct][2 * h + 1] * inv;
                if (vec4) {
                    if (c < K) *(float2 *)(y + c) = make_float2(y0, y1);
                } else {
                    if (c < K) y[c] = y0;
                    if (c + 1 < K) y[c + 1] = y1;
                }
            }
        }
}

/* One group per launch: grid (regions across, regions down, images). */
template <int WS, int KP>
static __global__ void __launch_bounds__(ATTN_TOK, ATTN_TF32_MIN_CTAS) attn_tf32_kernel(elan_cuda_attn_args a, int vec4) {
    attn_tf32_body<WS, KP>(a, vec4, blockIdx.x, blockIdx.y, blockIdx.z);
}

/* ELAN's three groups (windows 4, 8, 16) in one launch, CTAs interleaved as in attn3_kernel: CTA (3 rx + gi, ry,
   img) does group gi of region (rx, ry). The small windows' CTAs (mostly loads and stores) then run beside the
   ws 16 ones (mostly mma and exp) instead of in launches of their own. */
template <int KP>
static __global__ void __launch_bounds__(ATTN_TOK, ATTN_TF32_MIN_CTAS) attn3_tf32_kernel(attn3_args a, int vec4) {
    const int gi = blockIdx.x % 3, rx = blockIdx.x / 3;
    if (gi == 0)
        attn_tf32_body<4, KP>(a.g[0], vec4, rx, blockIdx.y, blockIdx.z);
    else if (gi == 1)
        attn_tf32_body<8, KP>(a.g[1], vec4, rx, blockIdx.y, blockIdx.z);
    else
        attn_tf32_body<16, KP>(a.g[2], vec4, rx, blockIdx.y, blockIdx.z);
}

/* The tf32 kernel for (k, ws), or NULL: act fp32 with tf32 asked for, k <= 32, ws 4, 8 or 16 (a window must
   tile the 16 x 16 region), not ELANSR_CUDA_ATTN=simt. */
typedef void (*attn_tf32_fn)(elan_cuda_attn_args, int);

template <int KP>
static attn_tf32_fn attn_tf32_entry(int ws, size_t *smem) {
    *smem = attn_tf32_shape<KP>::SMEM;
    if (ws == 4) return attn_tf32_kernel<4, KP>;
    if (ws == 8) return attn_tf32_kernel<8, KP>;
    if (ws == 16) return attn_tf32_kernel<16, KP>;
    return NULL;
}

static attn_tf32_fn attn_tf32_pick(int k, int ws, size_t *smem) {
    static int simt = -1;
    if (simt < 0) {
        const char *e = getenv("ELANSR_CUDA_ATTN");
        simt = e && !strcmp(e, "simt");
    }
    if (simt || k < 1 || k > ATTN_TF32_MAXKP) return NULL;
    const int kp = (k + 7) / 8 * 8;
    if (kp == 8) return attn_tf32_entry<8>(ws, smem);
    if (kp == 16) return attn_tf32_entry<16>(ws, smem);
    if (kp == 24) return attn_tf32_entry<24>(ws, smem);
    return attn_tf32_entry<32>(ws, smem);
}

/* The three-group tf32 kernel for windows exactly 4, 8, 16, or NULL. */
static attn3_fn attn3_tf32_pick(int k, const int ws[3], size_t *smem) {
    if (ws[0] != 4 || ws[1] != 8 || ws[2] != 16 || !attn_tf32_pick(k, 16, smem)) return NULL;
    const int kp = (k + 7) / 8 * 8;
    if (kp == 8) return attn3_tf32_kernel<8>;
    if (kp == 16) return attn3_tf32_kernel<16>;
    if (kp == 24) return attn3_tf32_kernel<24>;
    return attn3_tf32_kernel<32>;
}

/* ---- fp32 attention on CUDA cores, the three groups in one launch (precision fp32, fp32 storage) ----

   What attn_body computes, exactly (q + bias and v + bias in fp32, never rounded; scores and outputs summed in
   fp32; full-precision expf), reshaped for throughput. attn_body gives each thread one query: every key then
   costs the thread 5 float4 broadcast loads of q_j and 5 of v_j (k = 20) for 40 fma, and a warp's shared-memory
   wavefronts (one per broadcast load) and its fma issue (one cycle per 4 warp-fmas on an SM of 128 fp32 lanes)
   are level, so neither unit can run full. Here a thread owns R query tokens of one window (register blocking):
   each broadcast load of a key's row serves R queries, 10 loads per R * 40 fma, and the loop is bound by the
   fma pipe and the softmax's expf instead (R = 2: 80 fma, ~20 instructions of max / exp / sum and 10 loads per
   key and warp).

   Per query the arithmetic is attn_body's, in the same order: a score is the chain of fma over channels 0..KP-1
   from 0, scores are taken ATTN_F32_CHUNK keys at a time and folded into the running max / sum and the
   accumulator (rescaled by expf(m_old - m_new) per chunk), y = acc * (1 / l). With a chunk of 16 the outputs
   would be the same bits as attn_body's; with the chunk of 8 compiled they differ in the last bits (the check
   compares both with the reference). The rescale is
   skipped when no query of the warp saw its maximum grow: the factor would be expf(0) = 1 exactly, so that
   changes no bit; in ws 16 windows the maximum mostly stops growing after the chunk of the query's own key.

   A CTA is one 16 x 16 region of one group, as in the tf32 kernel: 256 tokens (1, 4 or 16 whole windows,
   window-major), 256 / R threads; thread u of window w owns tokens u, u + T/R, ... of w. The grid and the
   token -> pixel map (the roll folded in) are attn3_tf32_kernel's and attn_tf32_pixel's: CTA (3 rx + gi, ry,
   img) does group gi of region (rx, ry), so the small windows' CTAs (loads and stores mostly) run beside the
   ws 16 ones (fma and expf mostly), and the three groups' q / v / y sectors of the same pixels pass L2 together.

   Loads and stores go through shared memory in whole rows: the CTA's 2 * 256 rows of q and v are copied
   piece-major (consecutive lanes take consecutive 16-byte pieces of a few tokens' rows, every load issued
   before the first store), y is staged in the q rows after the attention and written back the same way. One
   row per lane would touch 32 cache lines per instruction (the half kernel measured ws 4 bound at ~500 GB/s
   that way).

   Shared memory holds q and v rows of KP floats (zero past k), windows WST = T * KP + 4 floats apart: for ws 4
   a warp spans 32 R / 16 windows reading the same key of each, and the 4-float skew puts those rows in
   different 16-byte bank groups (one wavefront per load, as attn_shape's + 4 does); for ws 8 and 16 a warp is
   in one window and every load is a pure broadcast. KP = 20 (ELAN-light) is compiled; smaller k are padded. */
#define ATTN_F32_KP 20
#ifndef ATTN_F32_R
#define ATTN_F32_R 2 /* query tokens per thread */
#endif
/* Keys per online-softmax step, and the CTAs per SM the register budget is set for (cap 65536 / (256 / R * this)).
   Measured on the H100 at 960x544 (check_attn, computing GMSA, fp32): chunk 16 at 3 CTAs (168 registers, same
   bits as attn_body) 0.926 ms, slower than attn_body's launch per group (0.741); chunk 8 at 4 CTAs (128
   registers, 16 warps per SM) 0.625 ms. */
#ifndef ATTN_F32_CHUNK
#define ATTN_F32_CHUNK 8
#endif
#ifndef ATTN_F32_MIN_CTAS
#define ATTN_F32_MIN_CTAS 4
#endif
/* dynamic shared memory: q and v rows of the largest layout (ws 4: 16 windows of 16 rows, skewed), pixel indices */
#define ATTN_F32_SMEM(KP) ((size_t)(2 * (ATTN_TOK * (KP) + (ATTN_TOK / 16) * 4) + ATTN_TOK) * sizeof(float))

template <int WS, int KP, int R, int CH>
static __device__ __forceinline__ void attn_f32_body(const elan_cuda_attn_args &a, int vec4, int rx, int ry, int img) {
    constexpr int T = WS * WS, NWIN = ATTN_TOK / T, WST = T * KP + 4, NT = ATTN_TOK / R, TPW = T / R, C4 = KP / 4;
    static_assert(KP % 4 == 0 && T % R == 0 && T % CH == 0 && CH <= T, "shapes");
    static_assert((size_t)(2 * NWIN * WST + ATTN_TOK) * sizeof(float) <= ATTN_F32_SMEM(KP), "shared memory");
    extern __shared__ float4 smem4[];
    float *sq = (float *)smem4, *sv = sq + NWIN * WST;
    int *spix = (int *)(sv + NWIN * WST);
    const int tid = threadIdx.x, K = a.k;
#define ATTN_F32_ROW(tok) ((tok) / T * WST + (tok) % T * KP) /* token -> first float of its row */

    for (int tok = tid; tok < ATTN_TOK; tok += NT) spix[tok] = (int)attn_tf32_pixel<WS>(a, tok, rx, ry, img);
    __syncthreads();

    /* stage q + bias and v + bias (fp32, zero past K) */
    const float *gq = (const float *)a.q, *gv = (const float *)a.v;
    if (vec4) {
        /* K % 4 == 0, every row 16-byte aligned: pieces of 4 channels, token-major (a token's q pieces, then its v
           pieces), copied by cp.async, all in flight at once without holding registers (loaded into registers,
           the 20 pieces per thread and their addresses spilled at any register cap); pieces past K are zero.
           Then each thread adds the bias to the pieces it copied (its own cp.async writes are visible to it after
           the wait). */
        constexpr int PT = 2 * C4, NP = ATTN_TOK * PT / NT;
        static_assert(ATTN_TOK * PT % NT == 0, "whole steps");
#pragma unroll
        for (int it = 0; it < NP; it++) {
            const int cidx = tid + it * NT, tok = cidx / PT, part = cidx % PT;
            const bool isv = part >= C4;
            const int c = 4 * (isv ? part - C4 : part);
            const size_t p = (size_t)spix[tok];
            float *dst = (isv ? sv : sq) + ATTN_F32_ROW(tok) + c;
            if (c < K)
                attn_cp_async16(elan_smem_addr(dst), isv ? gv + p * a.v_stride + c : gq + p * a.q_stride + c);
            else
                *(float4 *)dst = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        elan_cp_async_commit();
        elan_cp_async_wait_all();
        if (a.q_bias || a.v_bias) {
#pragma unroll
            for (int it = 0; it < NP; it++) {
                const int cidx = tid + it * NT, tok = cidx / PT, part = cidx % PT;
                const bool isv = part >= C4;
                const int c = 4 * (isv ? part - C4 : part);
                const float *bias = isv ? a.v_bias : a.q_bias;
                if (c < K && bias) {
                    const float4 b = __ldg((const float4 *)(bias + c));
                    float4 *dst = (float4 *)((isv ? sv : sq) + ATTN_F32_ROW(tok) + c);
                    float4 f = *dst;
                    f.x += b.x, f.y += b.y, f.z += b.z, f.w += b.w;
                    *dst = f;
                }
            }
        }
    } else { /* any K, any alignment: one channel at a time, token-major */
        constexpr int PT = 2 * KP, NP = ATTN_TOK * PT / NT;
#pragma unroll 4
        for (int it = 0; it < NP; it++) {
            const int cidx = tid + it * NT, tok = cidx / PT, part = cidx % PT;
            const bool isv = part >= KP;
            const int c = isv ? part - KP : part;
            const size_t p = (size_t)spix[tok];
            const float *bias = isv ? a.v_bias : a.q_bias;
            float f = 0.0f;
            if (c < K) f = (isv ? gv[p * a.v_stride + c] : gq[p * a.q_stride + c]) + (bias ? bias[c] : 0.0f);
            ((isv ? sv : sq) + ATTN_F32_ROW(tok))[c] = f;
        }
    }
    __syncthreads();

    /* the attention of this thread's R queries: tokens u + r TPW of window w */
    const int w = tid / TPW, u = tid % TPW;
    const float *kq = sq + w * WST, *kv = sv + w * WST;
    float qi[R][KP], acc[R][KP], m[R], l[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int c = 0; c < C4; c++) {
            const float4 t = ((const float4 *)(kq + (u + r * TPW) * KP))[c];
            qi[r][4 * c] = t.x, qi[r][4 * c + 1] = t.y, qi[r][4 * c + 2] = t.z, qi[r][4 * c + 3] = t.w;
        }
#pragma unroll
        for (int c = 0; c < KP; c++) acc[r][c] = 0.0f;
        m[r] = -INFINITY, l[r] = 0.0f;
    }
#pragma unroll 1
    for (int j0 = 0; j0 < T; j0 += CH) {
        float s[R][CH], cm[R];
#pragma unroll
        for (int r = 0; r < R; r++) cm[r] = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < CH; jj++) {
            const float4 *qj = (const float4 *)(kq + (j0 + jj) * KP);
            float d[R];
#pragma unroll
            for (int r = 0; r < R; r++) d[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < C4; c++) {
                const float4 t = qj[c];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    d[r] += qi[r][4 * c] * t.x;
                    d[r] += qi[r][4 * c + 1] * t.y;
                    d[r] += qi[r][4 * c + 2] * t.z;
                    d[r] += qi[r][4 * c + 3] * t.w;
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++) s[r][jj] = d[r], cm[r] = fmaxf(cm[r], d[r]);
        }
        float mn[R];
        bool grew = false;
#pragma unroll
        for (int r = 0; r < R; r++) mn[r] = fmaxf(m[r], cm[r]), grew |= mn[r] > m[r];
        if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float sc = expf(m[r] - mn[r]); /* 0 on the first chunk (m = -inf), 1 where m did not grow */
                l[r] *= sc;
#pragma unroll
                for (int c = 0; c < KP; c++) acc[r][c] *= sc;
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) m[r] = mn[r];
#pragma unroll
        for (int jj = 0; jj < CH; jj++) {
            float e[R];
#pragma unroll
            for (int r = 0; r < R; r++) e[r] = expf(s[r][jj] - m[r]), l[r] += e[r];
            const float4 *vj = (const float4 *)(kv + (j0 + jj) * KP);
#pragma unroll
            for (int c = 0; c < C4; c++) {
                const float4 t = vj[c];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    acc[r][4 * c] += e[r] * t.x;
                    acc[r][4 * c + 1] += e[r] * t.y;
                    acc[r][4 * c + 2] += e[r] * t.z;
                    acc[r][4 * c + 3] += e[r] * t.w;
                }
            }
        }
    }
    __syncthreads(); /* every thread is done with the keys: the q rows take y */
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float inv = 1.0f / l[r];
        float4 *yr = (float4 *)(sq + w * WST + (u + r * TPW) * KP);
#pragma unroll
        for (int c = 0; c < C4; c++)
            yr[c] = make_float4(acc[r][4 * c] * inv, acc[r][4 * c + 1] * inv, acc[r][4 * c + 2] * inv,
                                acc[r][4 * c + 3] * inv);
    }
    __syncthreads();

    float *gy = (float *)a.y;
    if (vec4) {
        constexpr int NP = ATTN_TOK * C4 / NT;
        static_assert(ATTN_TOK * C4 % NT == 0, "whole steps");
#pragma unroll
        for (int it = 0; it < NP; it++) {
            const int cidx = tid + it * NT, tok = cidx / C4, c = 4 * (cidx % C4);
            if (c < K)
                *(float4 *)(gy + (size_t)spix[tok] * a.y_stride + c) = *(const float4 *)(sq + ATTN_F32_ROW(tok) + c);
        }
    } else {
        constexpr int NP = ATTN_TOK * KP / NT;
#pragma unroll 4
        for (int it = 0; it < NP; it++) {
            const int cidx = tid + it * NT, tok = cidx / KP, c = cidx % KP;
            if (c < K) gy[(size_t)spix[tok] * a.y_stride + c] = sq[ATTN_F32_ROW(tok) + c];
        }
    }
#undef ATTN_F32_ROW
}

template <int KP, int R, int CH>
static __global__ void __launch_bounds__(ATTN_TOK / R, ATTN_F32_MIN_CTAS) attn3_f32_kernel(attn3_args a, int vec4) {
    const int gi = blockIdx.x % 3, rx = blockIdx.x / 3;
    if (gi == 0)
        attn_f32_body<4, KP, R, CH>(a.g[0], vec4, rx, blockIdx.y, blockIdx.z);
    else if (gi == 1)
        attn_f32_body<8, KP, R, CH>(a.g[1], vec4, rx, blockIdx.y, blockIdx.z);
    else
        attn_f32_body<16, KP, R, CH>(a.g[2], vec4, rx, blockIdx.y, blockIdx.z);
}

/* The three-group fp32 kernel for windows exactly 4, 8, 16 and k <= ATTN_F32_KP, or NULL (also under
   ELANSR_CUDA_ATTN=simt, which keeps attn_body's launch per group). */
static attn3_fn attn3_f32_pick(int k, const int ws[3], size_t *smem) {
    static int simt = -1;
    if (simt < 0) {
        const char *e = getenv("ELANSR_CUDA_ATTN");
        simt = e && !strcmp(e, "simt");
    }
    if (simt || k < 1 || k > ATTN_F32_KP || ws[0] != 4 || ws[1] != 8 || ws[2] != 16) return NULL;
    *smem = ATTN_F32_SMEM(ATTN_F32_KP);
    return attn3_f32_kernel<ATTN_F32_KP, ATTN_F32_R, ATTN_F32_CHUNK>;
}

extern "C" int elan_cuda_attn3_proj_supported(int k, int cin, const int ws[3], int act) {
    size_t smem;
    return attn3_proj_pick(k, cin, ws, act, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn3_proj_prepare(int k, int cin, const int ws[3], int act) {
    size_t smem;
    attn3_fn f = attn3_proj_pick(k, cin, ws, act, &smem), fk = attn3_proj_pick(k, cin, ws, act, &smem, true);
    if (!f || !fk) return cudaErrorInvalidValue;
    const cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return e != cudaSuccess ? e : cudaFuncSetAttribute(fk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

/* fp32 storage: two three-group kernels, tf32 (attn3_tf32_kernel) and fp32 (attn3_f32_kernel). The precision is
   not known here, so supported means either exists and prepare readies both; elan_cuda_attn3 picks by tf32 and
   runs attn_body once per group for a shape the chosen one lacks. */
extern "C" int elan_cuda_attn3_supported(int k, const int ws[3], int act) {
    size_t smem;
    if (act == ELAN_ACT_F32) return attn3_tf32_pick(k, ws, &smem) || attn3_f32_pick(k, ws, &smem) ? 0 : -1;
    return attn3_pick(k, ws, act, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn3_prepare(int k, const int ws[3], int act) {
    size_t smem;
    if (act == ELAN_ACT_F32) {
        attn3_fn ft = attn3_tf32_pick(k, ws, &smem);
        if (ft) {
            const cudaError_t e = cudaFuncSetAttribute(ft, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
            if (e != cudaSuccess) return e;
        }
        attn3_fn ff = attn3_f32_pick(k, ws, &smem);
        if (ff) return cudaFuncSetAttribute(ff, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        return ft ? cudaSuccess : cudaErrorInvalidValue;
    }
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
    if (act == ELAN_ACT_F32) { /* the tf32 kernel too: the precision is not known here */
        attn_tf32_fn ft = attn_tf32_pick(k, ws, &smem);
        if (ft) {
            const cudaError_t e = cudaFuncSetAttribute(ft, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
            if (e != cudaSuccess) return e;
        }
    }
    attn_mma_fn fm = attn_mma_pick(k, ws, act, &smem);
    if (fm) return cudaFuncSetAttribute(fm, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    attn_fn f = attn_pick(k, ws, act, &smem, &wpb);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

static int aligned(const void *ptr, size_t to) { return ((size_t)ptr & (to - 1)) == 0; }

/* The float4 path of the tf32 kernels and of attn3_f32_kernel: k, the strides and every pointer in whole 16-byte
   pieces. */
static int attn_tf32_vec4(const elan_cuda_attn_args *a) {
    return a->k % 4 == 0 && a->q_stride % 4 == 0 && a->v_stride % 4 == 0 && a->y_stride % 4 == 0 && aligned(a->q, 16) &&
           aligned(a->v, 16) && aligned(a->y, 16) && aligned(a->q_bias, 16) && aligned(a->v_bias, 16);
}

extern "C" cudaError_t elan_cuda_attn(const elan_cuda_attn_args *a, cudaStream_t s) {
    size_t smem;
    int wpb;
    attn_tf32_fn ft = a->act == ELAN_ACT_F32 && a->tf32 && a->Hp % ATTN_REGION == 0 && a->Wp % ATTN_REGION == 0
                          ? attn_tf32_pick(a->k, a->ws, &smem)
                          : NULL;
    if (ft) {
        const dim3 grid(a->Wp / ATTN_REGION, a->Hp / ATTN_REGION, a->n);
        if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
        ft<<<grid, ATTN_TOK, smem, s>>>(*a, attn_tf32_vec4(a));
        return cudaGetLastError();
    }
    attn_mma_fn fm = attn_mma_pick(a->k, a->ws, a->act, &smem);
    if (fm) {
        const int vec4 = a->k % 4 == 0 && a->q_stride % 4 == 0 && a->v_stride % 4 == 0 && a->y_stride % 4 == 0 &&
                         aligned(a->q, 8) && aligned(a->v, 8) && aligned(a->y, 8) && aligned(a->q_bias, 16) &&
                         aligned(a->v_bias, 16);
        const dim3 grid(a->Wp / ATTN_REGION, a->Hp / ATTN_REGION, a->n);
        if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
        fm<<<grid, ATTN_TOK, smem, s>>>(*a, vec4);
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

/* Whether the groups suit attn3_f32_kernel (with its pick for k and the windows): fp32 without tf32, no fused
   project_inp, one k, image and batch, the image in whole 16 x 16 regions within the grid's limits, pixel
   indices in 32 bits (its spix), shifts inside the image. Otherwise the groups run attn_body once each. */
static bool attn_f32_fits(const elan_cuda_attn_args a[3]) {
    for (int i = 0; i < 3; i++)
        if (a[i].act != ELAN_ACT_F32 || a[i].tf32 || a[i].x || a[i].k != a[0].k || a[i].n != a[0].n ||
            a[i].Hp != a[0].Hp || a[i].Wp != a[0].Wp || a[i].shift < 0 || a[i].shift >= a[i].Hp ||
            a[i].shift >= a[i].Wp)
            return false;
    return a[0].n >= 1 && a[0].Hp >= ATTN_REGION && a[0].Wp >= ATTN_REGION && a[0].Hp % ATTN_REGION == 0 &&
           a[0].Wp % ATTN_REGION == 0 && a[0].Hp / ATTN_REGION <= 65535 && a[0].n <= 65535 &&
           3ll * (a[0].Wp / ATTN_REGION) <= 0x7fffffffll && (long long)a[0].n * a[0].Hp * a[0].Wp <= 0x7fffffffll;
}

/* The fused project_inp's operands (attn_project, gmsa_kernel), group a against group a0: x rows back to back in
   16-byte pieces; 8-byte pieces of the weights, q and q_out; every operand present. */
static bool attn_proj_args_ok(const elan_cuda_attn_args &a, const elan_cuda_attn_args &a0) {
    return a.cin == a0.cin && a.x_stride == a.cin && aligned(a.x, 16) && a.wv && aligned(a.wv, 8) &&
           aligned(a.wq, 8) && a.bv &&
           (a.wq ? a.bq && (!a.q_out || (aligned(a.q_out, 8) && a.q_out_stride % 4 == 0))
                 : a.q && aligned(a.q, 8) && a.q_stride % 4 == 0) &&
           (!a.m_in || !a.wq) && (!a.m_out || a.wq) && (a.m_in != NULL) == (a0.m_in != NULL) && aligned(a.m_in, 4) &&
           aligned(a.m_out, 4);
}

/* The first CTA (linear index) that lets the next kernel launch. The early trigger (the last wave: grid minus the
   CTAs resident at once) only for grids of up to two waves. Measured on the H100, fp16 (docs/PERFORMANCE.md step
   5): at 720p (1.8 waves) and 16 x 64x64 it takes 3-4% off the forward, at 4K (15 waves) it added 8% (10.37
   against 9.6 ms without it), at 1080p (3.9 waves) it changed nothing. ELANSR_CUDA_PDL_ATTN=last / none forces
   either. */
template <typename F>
static unsigned attn_pdl_from(F f, dim3 grid, size_t smem) {
    const unsigned long long total = (unsigned long long)grid.x * grid.y * grid.z;
    unsigned from = total > 0xffffffffull ? 0xffffffffu : (unsigned)total;
    const char *pe = getenv("ELANSR_CUDA_PDL_ATTN");
    const int policy = pe && !strcmp(pe, "none") ? 0 : pe && !strcmp(pe, "last") ? 1 : 2; /* 2: auto */
    long long slots = 0;
    if (policy && elan_resident_ctas(f, ATTN_TOK, smem, &slots) == cudaSuccess &&
        (policy == 1 || total <= 2ull * (unsigned long long)slots))
        from = total > (unsigned long long)slots ? (unsigned)(total - (unsigned long long)slots) : 0u;
    return from;
}

/* attn3_kernel for the first g.ng groups of g: ng CTAs per 16 x 16 region, the last wave letting the next kernel
   launch (elan_cuda_attn3: 3; the shifted blocks of elan_cuda_gmsa: 2). */
static cudaError_t attn3_launch(attn3_fn f, attn3_args &g, size_t smem, int vec4, cudaStream_t s) {
    const elan_cuda_attn_args &a0 = g.g[0];
    const dim3 grid(g.ng * (a0.Wp / ATTN_REGION), a0.Hp / ATTN_REGION, a0.n); /* gridDim.y, z <= 65535 */
    if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
    g.pdl_from = attn_pdl_from(f, grid, smem);
    return elan_launch_pdl(f, grid, dim3(ATTN_TOK), smem, s, g, vec4);
}

/* y of the fused-projection path, written in 8-byte pieces (attn_rows) */
static bool attn_proj_y_ok(const elan_cuda_attn_args &a) { return a.y && aligned(a.y, 8) && a.y_stride % 4 == 0; }

extern "C" cudaError_t elan_cuda_attn3(const elan_cuda_attn_args a[3], cudaStream_t s) {
    size_t smem;
    const int ws[3] = {a[0].ws, a[1].ws, a[2].ws};
    const bool proj = a[0].x != NULL;
    if (a[0].act == ELAN_ACT_F32) {
        attn3_fn ft = a[0].tf32 && !proj ? attn3_tf32_pick(a[0].k, ws, &smem) : NULL;
        int vec4 = 1;
        for (int i = 0; i < 3 && ft; i++) {
            if (a[i].k != a[0].k || a[i].act != a[0].act || !a[i].tf32 || a[i].n != a[0].n || a[i].Hp != a[0].Hp ||
                a[i].Wp != a[0].Wp || a[i].x || a[i].Hp % ATTN_REGION || a[i].Wp % ATTN_REGION)
                return cudaErrorInvalidValue;
            vec4 = vec4 && attn_tf32_vec4(&a[i]);
        }
        if (!ft && !proj) { /* fp32 on CUDA cores: the three-group kernel where it fits (attn_f32_fits) */
            attn3_fn ff = attn_f32_fits(a) ? attn3_f32_pick(a[0].k, ws, &smem) : NULL;
            if (ff) {
                attn3_args g;
                g.rev = 0;
                g.ng = 3;
                vec4 = 1;
                for (int i = 0; i < 3; i++) {
                    g.g[i] = a[i];
                    vec4 = vec4 && attn_tf32_vec4(&a[i]);
                }
                g.pdl_from = 0xffffffffu; /* unused: launched without programmatic dependent launch */
                const dim3 grid(3 * (a[0].Wp / ATTN_REGION), a[0].Hp / ATTN_REGION, a[0].n);
                ff<<<grid, ATTN_TOK / ATTN_F32_R, smem, s>>>(g, vec4);
                return cudaGetLastError();
            }
        }
        if (!ft) { /* fp32 on CUDA cores (or a shape the tf32 / fp32 three-group kernels lack): a launch per group */
            if (proj) return cudaErrorInvalidValue;
            for (int i = 0; i < 3; i++) {
                const cudaError_t e = elan_cuda_attn(&a[i], s);
                if (e != cudaSuccess) return e;
            }
            return cudaSuccess;
        }
        attn3_args g;
        g.rev = 0;
        g.ng = 3;
        for (int i = 0; i < 3; i++) g.g[i] = a[i];
        g.pdl_from = 0xffffffffu; /* unused: launched without programmatic dependent launch */
        const dim3 grid(3 * (a[0].Wp / ATTN_REGION), a[0].Hp / ATTN_REGION, a[0].n);
        if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
        ft<<<grid, ATTN_TOK, smem, s>>>(g, vec4);
        return cudaGetLastError();
    }
    attn3_fn f = proj ? attn3_proj_pick(a[0].k, a[0].cin, ws, a[0].act, &smem, a[0].m_in != NULL)
                      : attn3_pick(a[0].k, ws, a[0].act, &smem);
    if (!f) return cudaErrorInvalidValue;
    attn3_args g;
    g.rev = 0;
    g.ng = 3;
    int vec4 = 1;
    for (int i = 0; i < 3; i++) {
        if (a[i].k != a[0].k || a[i].act != a[0].act || a[i].n != a[0].n || a[i].Hp != a[0].Hp || a[i].Wp != a[0].Wp ||
            (a[i].x != NULL) != proj)
            return cudaErrorInvalidValue;
        if (proj) {
            if (!attn_proj_args_ok(a[i], a[0]) || !attn_proj_y_ok(a[i])) return cudaErrorInvalidValue;
            g.g[i] = a[i];
            continue;
        }
        vec4 = vec4 && a[i].k % 4 == 0 && a[i].q_stride % 4 == 0 && a[i].v_stride % 4 == 0 && a[i].y_stride % 4 == 0 &&
               aligned(a[i].q, 8) && aligned(a[i].v, 8) && aligned(a[i].y, 8) && aligned(a[i].q_bias, 16) &&
               aligned(a[i].v_bias, 16);
        g.g[i] = a[i];
    }
    return attn3_launch(f, g, smem, vec4, s);
}

extern "C" int elan_cuda_gmsa_supported(int k, int cin, const int ws[3], int act) {
    return gmsa_pick(k, cin, ws, act, false, false) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_gmsa_prepare(int k, int cin, const int ws[3], int act) {
    cudaError_t e = elan_cuda_attn3_proj_prepare(k, cin, ws, act); /* the shifted blocks' first launch */
    for (int v = 0; v < 8 && e == cudaSuccess; v++) {
        gmsa_fn_t f = gmsa_pick(k, cin, ws, act, v & 1, (v >> 1) & 1, v >> 2);
        e = f ? cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)(v >> 2 ? GMSA_PSMEM : GMSA_SMEM))
              : cudaErrorInvalidValue;
    }
    return e;
}

extern "C" cudaError_t elan_cuda_gmsa(const elan_cuda_gmsa_args *a, cudaStream_t s) {
    const elan_cuda_attn_args *g = a->g;
    const int ws[3] = {g[0].ws, g[1].ws, g[2].ws};
    const bool shifted = g[0].shift != 0, km = g[0].m_in != NULL;
    /* the persistent kernel where every team gets several regions (a->persist < 0): H100, same lease, 4K (~7.7
       regions per team) 7.02 / 7.05 -> 6.91 ms forward; at 1080p and below (<= 2 per team) 1-2.5% slower.
       slots: its CTAs resident at once, one per SM (elan_resident_ctas, on the current device) */
    const long long nreg = (long long)(g[0].Wp / ATTN_REGION) * (g[0].Hp / ATTN_REGION) * g[0].n;
    gmsa_fn_t fp = a->persist ? gmsa_pick(g[0].k, g[0].cin, ws, g[0].act, shifted, km, true) : NULL;
    long long slots = 0;
    const bool persist = fp && elan_resident_ctas(fp, 2 * ATTN_TOK, GMSA_PSMEM, &slots) == cudaSuccess &&
                         (a->persist > 0 || nreg >= 8 * slots);
    gmsa_fn_t f = persist ? fp : gmsa_pick(g[0].k, g[0].cin, ws, g[0].act, shifted, km, false);
    if (!f || !a->wo || !aligned(a->wo, 8) || !a->bo || !a->x_out || !aligned(a->x_out, 16) || a->x_out == g[0].x ||
        g[0].n < 1 || g[0].Hp % ATTN_REGION || g[0].Wp % ATTN_REGION ||
        (long long)g[0].n * g[0].Hp * g[0].Wp > 0x7fffffffll)
        return cudaErrorInvalidValue;
    gmsa_args ga;
    for (int i = 0; i < 3; i++) {
        if (g[i].k != g[0].k || g[i].act != g[0].act || g[i].n != g[0].n || g[i].Hp != g[0].Hp || g[i].Wp != g[0].Wp ||
            g[i].shift != (shifted ? g[i].ws / 2 : 0) || g[i].x != g[0].x || (g[i].wq != NULL) != (g[0].wq != NULL) || !attn_proj_args_ok(g[i], g[0]))
            return cudaErrorInvalidValue;
        ga.g[i] = g[i];
    }
    ga.wo = a->wo, ga.bo = a->bo, ga.x_out = a->x_out;
    ga.rev = shifted ? !a->rev : a->rev != 0; /* shifted: back over the regions the first launch ended on */
    const dim3 grid(g[0].Wp / ATTN_REGION, g[0].Hp / ATTN_REGION, g[0].n);
    if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
    if (shifted) { /* first the ws 4 and ws 8 groups' attention, their y into g[0].y, g[1].y (gmsa.cu, SHIFT) */
        size_t sm;
        attn3_fn f3 = attn3_proj_pick(g[0].k, g[0].cin, ws, g[0].act, &sm, km);
        attn3_args g3;
        for (int i = 0; i < 3; i++) {
            if (i < 2 && !attn_proj_y_ok(g[i])) return cudaErrorInvalidValue;
            g3.g[i] = g[i];
        }
        g3.ng = 2, g3.rev = a->rev;
        const cudaError_t e = attn3_launch(f3, g3, sm, 1, s);
        if (e != cudaSuccess) return e;
    }
    if (persist) { /* one CTA of two teams per SM, at most one team per region */
        ga.nreg = (int)(grid.x * grid.y * grid.z);
        ga.pdl_from = 0;
        const unsigned ctas = (unsigned)((ga.nreg + 1) / 2 < slots ? (ga.nreg + 1) / 2 : slots);
        return elan_launch_pdl(f, dim3(ctas), dim3(2 * ATTN_TOK), GMSA_PSMEM, s, ga);
    }
    ga.nreg = 0;
    ga.pdl_from = attn_pdl_from(f, grid, GMSA_SMEM);
    return elan_launch_pdl(f, grid, dim3(ATTN_TOK), GMSA_SMEM, s, ga);
}
