/* shift_gemm.cu — one ShiftConv of LFE (shift, then 1x1 conv) as one pass on tf32 tensor cores (precision tf32,
   fp32 activations):

     s[p][k]   = in[p + d(tap[k])][k] + in_bias[k]          (0 outside the padded image)
     mode 0:   out[p][j]  = relu(bias[j] + sum_k w[j][k] s[p][k])    first conv:  x -> t
     mode 1:   out[p][j] += sum_k w[j][k] s[p][k] (+ bias[j])        second conv: t -> x, in place

   Why: in tf32 the LFE was shift, cuBLAS GEMM, relu+shift, cuBLAS GEMM, with the shifted copies sA written and
   read back through DRAM (3120 bytes per pixel in fp32, every pass at ~2.8 TB/s). Here the shift is applied
   while a tile's rows are gathered into shared memory, and the first conv's epilogue does bias and ReLU, so an
   LFE moves x (read), t (written, read back) and x (read, written): 1680 bytes per pixel. (The whole LFE in one
   kernel, as lfe_fused.cu does for the half modes, would save t as well; in fp32 its hidden tile of 180 x 120
   floats does not fit beside the weights at two CTAs per SM.)

   Shape. A CTA (256 threads, 8 warps) owns tiles of 128 consecutive pixels of the flattened n x Hp x Wp image
   (the shift's neighbours are gathered from global memory, mostly L1 / L2 hits, so a tile need not be 2-D) and
   loops over them (persistent grid, weights staged once). Per tile: every thread issues its float4 loads of the
   tile's shifted rows (4 channels share a tap; with PIPE a tile ahead, below), adds in_bias, rounds to tf32 and
   stores them to S [128][KS]; barrier; warp w multiplies the m16 tile of rows 16w.. by all N columns (A from S, B from the weights W [N][KS]
   in shared memory), mma.sync m16n8k8.tf32 with fp32 accumulators, and writes its epilogue straight from the
   accumulators (float2 per lane: channels 2t, 2t + 1 of rows g and g + 8).

   Fragments: as in gmsa.cu's tf32 attention, the columns of each k8 step are permuted (logical t = channel 2t,
   t + 4 = 2t + 1) so that every A and B register pair is one 8-byte shared load; KS is 8 or 24 mod 32 words,
   so the four rows a half-warp reads fall on four different 8-bank segments. K is padded to whole k8 steps and
   N to whole n8 tiles with zero weights.

   Compiled for (K, N) = (60, 120) and (120, 60) (ELAN-light's LFE: C = 60, e = 120). */
#include "cuda_common.h"
#include "mma.h"

#define SG_THREADS 256
#define SG_TILE 128 /* pixels per tile: one m16 tile per warp */

template <int K, int N>
struct sg_shape {
    static constexpr int KP = (K + 7) / 8 * 8;                                /* K in whole k8 steps */
    static constexpr int KS = (KP % 32 == 8 || KP % 32 == 24) ? KP : KP + 8;  /* row stride (words) */
    static constexpr int NT = (N + 7) / 8;                                    /* n8 tiles */
    static constexpr int Q = KP / 4;                                          /* float4 pieces per row */
    static constexpr int LOADS = (SG_TILE * Q + SG_THREADS - 1) / SG_THREADS; /* pieces per thread per tile */
    static constexpr size_t SMEM = ((size_t)SG_TILE * KS + (size_t)NT * 8 * KS) * sizeof(float);
};

/* A tile's shifted rows from global memory into registers: piece u of this thread is row i, channels c..c+3 of
   the tile; bit u of *live says it is a channel < K of a source pixel inside the image (else it stays 0). */
template <int K, int N>
static __device__ __forceinline__ void sg_load(const elan_cuda_shift_gemm_args &a, int p0, float4 (&v)[sg_shape<K, N>::LOADS],
                                               unsigned *live) {
    typedef sg_shape<K, N> S;
    *live = 0;
#pragma unroll
    for (int u = 0; u < S::LOADS; u++) {
        const int e = (int)threadIdx.x + u * SG_THREADS, i = e / S::Q, c = (e - i * S::Q) * 4;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (e < SG_TILE * S::Q && c < K) {
            const int p = p0 + i, x = p % a.Wp, y = p / a.Wp % a.Hp;
            const int tp = a.tap[c], dy = tp / 3 - 1, dx = tp % 3 - 1;
            if (y + dy >= 0 && y + dy < a.Hp && x + dx >= 0 && x + dx < a.Wp) {
                v[u] = __ldg((const float4 *)(a.in + ((long long)p + dy * a.Wp + dx) * K + c));
                *live |= 1u << u;
            }
        }
    }
}

/* ... then plus in_bias (live pieces only: the shift zero-fills after the bias), rounded to tf32, into S. */
template <int K, int N>
static __device__ __forceinline__ void sg_store(const elan_cuda_shift_gemm_args &a, float *sS,
                                                const float4 (&v)[sg_shape<K, N>::LOADS], unsigned live) {
    typedef sg_shape<K, N> S;
#pragma unroll
    for (int u = 0; u < S::LOADS; u++) {
        const int e = (int)threadIdx.x + u * SG_THREADS, i = e / S::Q, c = (e - i * S::Q) * 4;
        if (e < SG_TILE * S::Q) {
            float4 r = v[u];
            if (a.in_bias && (live >> u & 1u)) {
                const float4 b = __ldg((const float4 *)(a.in_bias + c));
                r.x += b.x, r.y += b.y, r.z += b.z, r.w += b.w;
            }
            *(uint4 *)(sS + i * S::KS + c) = make_uint4(elan_tf32(r.x), elan_tf32(r.y), elan_tf32(r.z), elan_tf32(r.w));
        }
    }
}

/* PIPE: the next tile's rows are loaded into registers while this tile's products run (and mode 1's out rows
   are prefetched into L2). Measured on the H100 at 960x544 (dev/cuda/check_shift_gemm.cu, two alternating
   repetitions): (120, 60) 0.387 -> 0.356 ms with it, (60, 120) 0.193 -> 0.242 ms (its 60 accumulators and the
   32 registers of loads in flight spill under the 128-register cap): on for the first only. */
template <int K, int N, bool PIPE>
static __global__ void __launch_bounds__(SG_THREADS, 2) shift_gemm_kernel(elan_cuda_shift_gemm_args a, int tiles) {
    typedef sg_shape<K, N> S;
    constexpr int KP = S::KP, KS = S::KS, NT = S::NT;
    extern __shared__ float4 smem4[];
    float *sS = (float *)smem4;     /* [SG_TILE][KS] */
    float *sW = sS + SG_TILE * KS;  /* [NT * 8][KS] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

    /* the weights, once: tf32, zero past N rows and K columns */
    for (int e = tid; e < NT * 8 * KP; e += SG_THREADS) {
        const int j = e / KP, k = e - j * KP;
        sW[j * KS + k] = __uint_as_float(elan_tf32(j < N && k < K ? __ldg(a.w + j * K + k) : 0.0f));
    }

    float4 v[S::LOADS];
    unsigned live;
    if (PIPE && (int)blockIdx.x < tiles) sg_load<K, N>(a, (int)blockIdx.x * SG_TILE, v, &live);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int p0 = tile * SG_TILE;
        if (!PIPE) sg_load<K, N>(a, p0, v, &live); /* all of the tile's loads in flight at once */
        __syncthreads(); /* the previous tile's S is read; (first tile) sW is written */
        sg_store<K, N>(a, sS, v, live);
        __syncthreads();
        if (PIPE) {
            if (tile + (int)gridDim.x < tiles) sg_load<K, N>(a, (tile + (int)gridDim.x) * SG_TILE, v, &live);
            /* mode 1 reads this tile's out rows in the epilogue: ask L2 for them now (a 128-byte line per thread) */
            if (a.mode == 1)
                for (int l = tid; l * 32 < SG_TILE * N; l += SG_THREADS) elan_prefetch_l2(a.out + (long long)p0 * N + l * 32);
        }

        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KP / 8; ks++) {
            const float *r = sS + (warp * 16 + g) * KS + ks * 8 + 2 * t;
            unsigned lo[2], hi[2];
            elan_ld_tf32x2(lo, r);
            elan_ld_tf32x2(hi, r + 8 * KS);
            const unsigned af[4] = {lo[0], hi[0], lo[1], hi[1]};
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                unsigned b[2];
                elan_ld_tf32x2(b, sW + (nt * 8 + g) * KS + ks * 8 + 2 * t);
                elan_mma_tf32(acc[nt], af, b);
            }
        }

        /* epilogue: lane (g, t) holds channels 8 nt + 2t, + 1 of rows g and g + 8 */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float *o = a.out + (long long)(p0 + warp * 16 + g + 8 * h) * N;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int c = nt * 8 + 2 * t;
                if (c >= N) continue;
                float2 r = make_float2(acc[nt][2 * h], acc[nt][2 * h + 1]);
                if (a.bias) {
                    const float2 b = __ldg((const float2 *)(a.bias + c));
                    r.x += b.x, r.y += b.y;
                }
                if (a.mode == 0) {
                    r.x = fmaxf(r.x, 0.0f), r.y = fmaxf(r.y, 0.0f);
                } else {
                    const float2 x = *(const float2 *)(o + c);
                    r.x += x.x, r.y += x.y;
                }
                *(float2 *)(o + c) = r;
            }
        }
    }
}

typedef void (*sg_fn)(elan_cuda_shift_gemm_args, int);

static sg_fn sg_pick(int K, int N, size_t *smem) {
    if (K == 60 && N == 120) {
        *smem = sg_shape<60, 120>::SMEM;
        return shift_gemm_kernel<60, 120, false>;
    }
    if (K == 120 && N == 60) {
        *smem = sg_shape<120, 60>::SMEM;
        return shift_gemm_kernel<120, 60, true>;
    }
    return NULL;
}

extern "C" int elan_cuda_shift_gemm_supported(int K, int N) {
    size_t smem;
    return sg_pick(K, N, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_shift_gemm_prepare(int K, int N) {
    size_t smem;
    sg_fn f = sg_pick(K, N, &smem);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" cudaError_t elan_cuda_shift_gemm(const elan_cuda_shift_gemm_args *a, cudaStream_t s) {
    size_t smem;
    sg_fn f = sg_pick(a->K, a->N, &smem);
    const long long P = (long long)a->n * a->Hp * a->Wp;
    /* tiles of 128 whole pixels; 16-byte rows; taps constant over runs of 4 (the caller's promise) */
    if (!f || P % SG_TILE || P > 0x7fffffffLL || ((size_t)a->in & 15) || ((size_t)a->out & 15) ||
        (a->in_bias && ((size_t)a->in_bias & 15)) || (a->bias && ((size_t)a->bias & 7)) || (a->mode == 0 && !a->bias) ||
        a->in == a->out)
        return cudaErrorInvalidValue;
    const int tiles = (int)(P / SG_TILE);
    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, SG_THREADS, smem, &slots);
    if (e != cudaSuccess) return e;
    const int grid = (int)(slots > 0 && slots < tiles ? slots : tiles);
    f<<<grid, SG_THREADS, smem, s>>>(*a, tiles);
    return cudaGetLastError();
}
