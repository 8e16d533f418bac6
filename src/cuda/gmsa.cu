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

#include <math.h>

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

extern "C" int elan_cuda_attn_supported(int k, int ws) {
    size_t smem;
    int wpb;
    return k >= 1 && attn_pick(k, ws, ELAN_ACT_F32, &smem, &wpb) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_attn_prepare(int k, int ws, int act) {
    size_t smem;
    int wpb;
    attn_fn f = attn_pick(k, ws, act, &smem, &wpb);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

static int aligned(const void *ptr, size_t to) { return ((size_t)ptr & (to - 1)) == 0; }

extern "C" cudaError_t elan_cuda_attn(const elan_cuda_attn_args *a, cudaStream_t s) {
    size_t smem;
    int wpb;
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
