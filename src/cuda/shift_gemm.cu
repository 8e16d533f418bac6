/* shift_gemm.cu — one ShiftConv of LFE (shift, then 1x1 conv) as one pass on tf32 tensor cores (precision tf32,
   fp32 activations), or on CUDA cores in fp32 (precision fp32, a.simt: the section near the end of this file):

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

   The second conv's input t is the first conv's output, which that pass rounds to tf32 (a.out_tf32) exactly as
   staging would round it; the second pass (a.in_tf32) then stages it unchanged, by cp.async straight into shared
   memory, several tiles ahead (shift_gemm_async_kernel), instead of through registers.

   Fragments: as in gmsa.cu's tf32 attention, the columns of each k8 step are permuted (logical t = channel 2t,
   t + 4 = 2t + 1) so that every A and B register pair is one 8-byte shared load; KS is 8 or 24 mod 32 words,
   so the four rows a half-warp reads fall on four different 8-bank segments. K is padded to whole k8 steps and
   N to whole n8 tiles with zero weights.

   Compiled for (K, N) = (60, 120) and (120, 60) (ELAN-light's LFE: C = 60, e = 120). */
#include "cuda_common.h"
#include "mma.h"

#include <stdlib.h>
#include <string.h>

#define SG_THREADS 256
#define SG_TILE 128 /* pixels per tile: one m16 tile per warp */

template <int K, int N>
struct sg_shape {
    static constexpr int KP = (K + 7) / 8 * 8;                                /* K in whole k8 steps */
    static constexpr int KS = (KP % 32 == 8 || KP % 32 == 24) ? KP : KP + 8;  /* row stride (words) */
    static constexpr int NT = (N + 7) / 8;                                    /* n8 tiles */
    static constexpr int Q = KP / 4;                                          /* float4 pieces per row */
    static constexpr int LOADS = (SG_TILE * Q + SG_THREADS - 1) / SG_THREADS; /* pieces per thread per tile */
    static constexpr size_t SMEM = ((size_t)SG_TILE * KS + (size_t)NT * 8 * KS + KP) * sizeof(float) + (size_t)Q * 8 +
                                   (size_t)2 * SG_TILE * 4;
};

/* Which of the 9 taps of pixel p read a source inside its image: bit ky*3 + kx set when pixel
   (y + ky - 1, x + kx - 1) is inside the Hp x Wp image. One per tile row, computed once per tile (two
   divisions), so that a piece's test is a shift of a shared-memory word. */
static __device__ __forceinline__ unsigned sg_tap_mask(int p, int Hp, int Wp) {
    const int x = p % Wp, y = p / Wp % Hp;
    const unsigned vx = (x > 0 ? 1u : 0u) | 2u | (x < Wp - 1 ? 4u : 0u);
    const unsigned vy = (y > 0 ? 1u : 0u) | 2u | (y < Hp - 1 ? 4u : 0u);
    return (vy & 1u ? vx : 0u) | (vy & 2u ? vx << 3 : 0u) | (vy & 4u ? vx << 6 : 0u);
}

/* The per-piece tap table: (dy * Wp + dx, tap) of each 4-channel piece; tap 31 (never in a row's mask) past K. */
template <int K, int Q>
static __device__ __forceinline__ void sg_taps(const elan_cuda_shift_gemm_args &a, int2 *sTap, int tid) {
    for (int q = tid; q < Q; q += SG_THREADS) {
        const int tp = 4 * q < K ? a.tap[4 * q] : 4;
        sTap[q] = make_int2((tp / 3 - 1) * a.Wp + tp % 3 - 1, 4 * q < K ? tp : 31);
    }
}

/* A tile's shifted rows from global memory into registers: piece u of this thread is row i, channels
   4q..4q+3 of the tile; bit u of *live says it is a channel < K of a source pixel inside the image (else it
   stays 0). The tap of piece q (source offset in pixels, tap index; index 31 for the zero pieces past K) comes
   from sTap, the row's in-image taps from sMask: no division and no global load before a piece's address is
   known. (Reading a.tap[c] from global memory and dividing p by Wp and Hp per piece cost ~170 instructions a
   piece, ~70% of everything the kernel issued.) */
template <int K, int N>
static __device__ __forceinline__ void sg_load(const elan_cuda_shift_gemm_args &a, int p0, const int2 *sTap,
                                               const unsigned *sMask, float4 (&v)[sg_shape<K, N>::LOADS], unsigned *live) {
    typedef sg_shape<K, N> S;
    *live = 0;
#pragma unroll
    for (int u = 0; u < S::LOADS; u++) {
        const int e = (int)threadIdx.x + u * SG_THREADS, i = e / S::Q, q = e - i * S::Q;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (e < SG_TILE * S::Q) {
            const int2 tp = sTap[q];
            if (sMask[i] >> tp.y & 1u) {
                v[u] = __ldg((const float4 *)(a.in + (long long)(p0 + i + tp.x) * K + 4 * q));
                *live |= 1u << u;
            }
        }
    }
}

/* ... then plus in_bias (live pieces only: the shift zero-fills after the bias; sInb holds zeros without one),
   rounded to tf32, into S. */
template <int K, int N>
static __device__ __forceinline__ void sg_store(float *sS, const float *sInb, const float4 (&v)[sg_shape<K, N>::LOADS],
                                                unsigned live) {
    typedef sg_shape<K, N> S;
#pragma unroll
    for (int u = 0; u < S::LOADS; u++) {
        const int e = (int)threadIdx.x + u * SG_THREADS, i = e / S::Q, c = (e - i * S::Q) * 4;
        if (e < SG_TILE * S::Q) {
            float4 r = v[u];
            if (live >> u & 1u) {
                const float4 b = *(const float4 *)(sInb + c);
                r.x += b.x, r.y += b.y, r.z += b.z, r.w += b.w;
            }
            *(uint4 *)(sS + i * S::KS + c) = make_uint4(elan_tf32(r.x), elan_tf32(r.y), elan_tf32(r.z), elan_tf32(r.w));
        }
    }
}

/* The warp's m16 tile of rows 16 warp.. of the staged tile sT times all N columns of the weights sW: mma.sync
   m16n8k8.tf32 from zero accumulators, every fragment pair one 8-byte shared load (the column permutation). */
template <int K, int N>
static __device__ __forceinline__ void sg_mma(const float *sT, const float *sW, int warp, int g, int t,
                                              float (&acc)[sg_shape<K, N>::NT][4]) {
    typedef sg_shape<K, N> S;
    constexpr int KP = S::KP, KS = S::KS, NT = S::NT;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KP / 8; ks++) {
        const float *r = sT + (warp * 16 + g) * KS + ks * 8 + 2 * t;
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
}

/* Epilogue straight from the accumulators: lane (g, t) holds channels 8 nt + 2t, + 1 of rows g and g + 8 of the
   warp's m16 tile. Mode 0: + bias, relu (and, with a.out_tf32, rounded to tf32 for the next pass); mode 1: added
   to out in place (+ bias if given), out's values taken from xv when PRE (loaded by the caller). */
template <int N, int NT, bool PRE>
static __device__ __forceinline__ void sg_epilogue(const elan_cuda_shift_gemm_args &a, int p0, int warp, int g, int t,
                                                   const float (&acc)[NT][4], const float2 (&xv)[2][NT]) {
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
                if (a.out_tf32) r.x = __uint_as_float(elan_tf32(r.x)), r.y = __uint_as_float(elan_tf32(r.y));
            } else {
                const float2 x = PRE ? xv[h][nt] : *(const float2 *)(o + c);
                r.x += x.x, r.y += x.y;
            }
            *(float2 *)(o + c) = r;
        }
    }
}

/* PIPE: the next tile's rows are loaded into registers while this tile's products run (and mode 1's out rows
   are prefetched into L2). Measured on the H100 at 960x544 (dev/cuda/check_shift_gemm.cu, two alternating
   repetitions, before the tap tables): (120, 60) 0.387 -> 0.356 ms with it, (60, 120) 0.193 -> 0.242 ms (its 60
   accumulators and the 32 registers of loads in flight spill under the 128-register cap): on for the first only. */
template <int K, int N, bool PIPE>
static __global__ void __launch_bounds__(SG_THREADS, 2) shift_gemm_kernel(elan_cuda_shift_gemm_args a, int tiles) {
    typedef sg_shape<K, N> S;
    constexpr int KP = S::KP, KS = S::KS, NT = S::NT;
    extern __shared__ float4 smem4[];
    float *sS = (float *)smem4;      /* [SG_TILE][KS] */
    float *sW = sS + SG_TILE * KS;   /* [NT * 8][KS] */
    float *sInb = sW + NT * 8 * KS;  /* [KP]: in_bias, 0 without one or past K */
    int2 *sTap = (int2 *)(sInb + KP); /* [Q]: (dy * Wp + dx, tap) of each 4-channel piece; tap 31 past K */
    unsigned *sMask = (unsigned *)(sTap + S::Q); /* [2][SG_TILE]: sg_tap_mask of the rows of a tile, two tiles */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

    /* the weights, once: tf32, zero past N rows and K columns; the per-channel tables */
    for (int e = tid; e < NT * 8 * KP; e += SG_THREADS) {
        const int j = e / KP, k = e - j * KP;
        sW[j * KS + k] = __uint_as_float(elan_tf32(j < N && k < K ? __ldg(a.w + j * K + k) : 0.0f));
    }
    for (int k = tid; k < KP; k += SG_THREADS) sInb[k] = a.in_bias && k < K ? __ldg(a.in_bias + k) : 0.0f;
    sg_taps<K, S::Q>(a, sTap, tid);
    int buf = 0;
    if (tid < SG_TILE && (int)blockIdx.x < tiles) sMask[tid] = sg_tap_mask((int)blockIdx.x * SG_TILE + tid, a.Hp, a.Wp);
    __syncthreads();

    float4 v[S::LOADS];
    unsigned live;
    if (PIPE && (int)blockIdx.x < tiles) sg_load<K, N>(a, (int)blockIdx.x * SG_TILE, sTap, sMask, v, &live);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int p0 = tile * SG_TILE, next = tile + (int)gridDim.x;
        if (!PIPE) sg_load<K, N>(a, p0, sTap, sMask + buf * SG_TILE, v, &live); /* all of the tile's loads in flight at once */
        __syncthreads(); /* the previous tile's S is read */
        sg_store<K, N>(sS, sInb, v, live);
        if (tid < SG_TILE && next < tiles) sMask[(buf ^ 1) * SG_TILE + tid] = sg_tap_mask(next * SG_TILE + tid, a.Hp, a.Wp);
        __syncthreads();
        buf ^= 1;
        if (PIPE) {
            if (next < tiles) sg_load<K, N>(a, next * SG_TILE, sTap, sMask + buf * SG_TILE, v, &live);
            /* mode 1 reads this tile's out rows in the epilogue: ask L2 for them now (a 128-byte line per thread) */
            if (a.mode == 1)
                for (int l = tid; l * 32 < SG_TILE * N; l += SG_THREADS) elan_prefetch_l2(a.out + (long long)p0 * N + l * 32);
        }

        float acc[NT][4];
        sg_mma<K, N>(sS, sW, warp, g, t, acc);

        float2 xv[2][NT]; /* unused (PRE false) */
        sg_epilogue<N, NT, false>(a, p0, warp, g, t, acc, xv);
    }
}

/* The copies of this CTA's n-th tile (blockIdx.x + n * gridDim.x) into stage n % STAGES; always one commit,
   so that the group count stays aligned with n. */
template <int K, int N, int STAGES>
static __device__ __forceinline__ void sg_issue(const elan_cuda_shift_gemm_args &a, int tiles, int n, float *sS,
                                                const int2 *sTap, const unsigned *sMask) {
    typedef sg_shape<K, N> S;
    const int tile = (int)blockIdx.x + n * (int)gridDim.x, st = n % STAGES;
    if (tile < tiles) {
        const int p0 = tile * SG_TILE;
        const unsigned *m = sMask + st * SG_TILE;
        float *dst = sS + st * SG_TILE * S::KS;
#pragma unroll
        for (int u = 0; u < S::LOADS; u++) {
            const int e = (int)threadIdx.x + u * SG_THREADS, i = e / S::Q, q = e - i * S::Q;
            if (e < SG_TILE * S::Q) {
                const int2 tp = sTap[q];
                const bool in = m[i] >> tp.y & 1u;
                elan_cp_async16(dst + i * S::KS + 4 * q, in ? a.in + (long long)(p0 + i + tp.x) * K + 4 * q : a.in,
                                in ? 16u : 0u);
            }
        }
    }
    elan_cp_async_commit();
}

/* FIX: once this thread's own copies of a stage have landed, its live pieces (the zero fill stays 0) get in_bias
   added in place, and with TF32 are rounded to tf32. */
template <int K, int N, bool TF32>
static __device__ __forceinline__ void sg_fixup(float *sT, const unsigned *m, const int2 *sTap, const float *sInb,
                                                int tid) {
    typedef sg_shape<K, N> S;
#pragma unroll
    for (int u = 0; u < S::LOADS; u++) {
        const int e = tid + u * SG_THREADS, i = e / S::Q, q = e - i * S::Q;
        if (e < SG_TILE * S::Q && (m[i] >> sTap[q].y & 1u)) {
            float4 *r = (float4 *)(sT + i * S::KS + 4 * q);
            const float4 v = *r, b = *(const float4 *)(sInb + 4 * q);
            if (TF32)
                *(uint4 *)r = make_uint4(elan_tf32(v.x + b.x), elan_tf32(v.y + b.y), elan_tf32(v.z + b.z), elan_tf32(v.w + b.w));
            else
                *r = make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
        }
    }
}

/* After the barrier of the CTA's n-th tile (tile): the copies of tile n + STAGES - 1 into the stage just read, the
   tap masks of tile n + STAGES where tile n's were, and in mode 1 the next tile's out rows into L2 for its
   epilogue. */
template <int K, int N, int STAGES>
static __device__ __forceinline__ void sg_advance(const elan_cuda_shift_gemm_args &a, int tiles, int n, int tile,
                                                  float *sS, const int2 *sTap, unsigned *sMask, int tid) {
    const int grid = (int)gridDim.x;
    sg_issue<K, N, STAGES>(a, tiles, n + STAGES - 1, sS, sTap, sMask);
    const int later = tile + STAGES * grid;
    if (tid < SG_TILE && later < tiles) sMask[(n % STAGES) * SG_TILE + tid] = sg_tap_mask(later * SG_TILE + tid, a.Hp, a.Wp);
    if (a.mode == 1 && tile + grid < tiles)
        for (int l = tid; l * 32 < SG_TILE * N; l += SG_THREADS)
            elan_prefetch_l2(a.out + (long long)(tile + grid) * SG_TILE * N + l * 32);
}

/* Both convs with the shifted rows copied by cp.async straight from global to shared memory (16 bytes a piece,
   zero-filled for a source outside the image), STAGES tiles in flight per CTA: while tile n is multiplied,
   tiles n+1 .. n+STAGES-1 are being copied, and no register holds them (the register-staged kernel above had
   60 registers of loads in flight across the products, which spilled under its 2-CTA cap).
   FIX: the input needs in_bias or the tf32 rounding (a.in_tf32 not set): each thread, once its own copies
   of the tile have landed (wait_group), rewrites those pieces in place (live ones only: the zero fill stays 0)
   before the barrier, so the tile still costs one barrier. Without FIX (the second conv, a.in_tf32: t was
   rounded to tf32 by the first pass's epilogue, no in_bias) the copies are the operands as they are.
   Compiled for (120, 60), the second conv: three stages of 61 KB + 31 KB of weights, one CTA of 8 warps per SM:
   the copies in flight, not the warps, hide the DRAM latency; out's values of a tile are loaded before its
   products for the same reason. (For the first conv, (60, 120) with FIX, two stages at two CTAs per SM measured
   0.201 ms at 960x544 against the register-staged kernel's 0.187: it keeps that one.)
   Barriers: one per tile (after the wait: the tile has landed for every thread, and the stage the new copies
   go to was read in the previous iteration by everyone). The tap masks of a tile are computed one tile before
   its copies are issued. */
template <int K, int N, int STAGES, bool FIX, int MINB>
static __global__ void __launch_bounds__(SG_THREADS, MINB) shift_gemm_async_kernel(elan_cuda_shift_gemm_args a, int tiles) {
    typedef sg_shape<K, N> S;
    constexpr int KP = S::KP, KS = S::KS, NT = S::NT;
    extern __shared__ float4 smem4[];
    float *sS = (float *)smem4;                    /* [STAGES][SG_TILE][KS] */
    float *sW = sS + STAGES * SG_TILE * KS;        /* [NT * 8][KS] */
    int2 *sTap = (int2 *)(sW + NT * 8 * KS);       /* [Q] */
    unsigned *sMask = (unsigned *)(sTap + S::Q);   /* [STAGES][SG_TILE] */
    float *sInb = (float *)(sMask + STAGES * SG_TILE); /* [KP] (FIX): in_bias, 0 without one or past K */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int grid = (int)gridDim.x;
    if (FIX)
        for (int k = tid; k < KP; k += SG_THREADS) sInb[k] = a.in_bias && k < K ? __ldg(a.in_bias + k) : 0.0f;

    for (int e = tid; e < NT * 8 * KP; e += SG_THREADS) {
        const int j = e / KP, k = e - j * KP;
        sW[j * KS + k] = __uint_as_float(elan_tf32(j < N && k < K ? __ldg(a.w + j * K + k) : 0.0f));
    }
    sg_taps<K, S::Q>(a, sTap, tid);
#pragma unroll
    for (int st = 0; st < STAGES; st++) {
        const int tile = (int)blockIdx.x + st * grid;
        if (tid < SG_TILE && tile < tiles) sMask[st * SG_TILE + tid] = sg_tap_mask(tile * SG_TILE + tid, a.Hp, a.Wp);
    }
    __syncthreads();

#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) sg_issue<K, N, STAGES>(a, tiles, st, sS, sTap, sMask);

    for (int n = 0;; n++) {
        const int tile = (int)blockIdx.x + n * grid;
        if (tile >= tiles) break;
        const int p0 = tile * SG_TILE;
        elan_cp_async_wait<STAGES - 2>();
        if (FIX) sg_fixup<K, N, true>(sS + (n % STAGES) * SG_TILE * KS, sMask + (n % STAGES) * SG_TILE, sTap, sInb, tid);
        __syncthreads();
        sg_advance<K, N, STAGES>(a, tiles, n, tile, sS, sTap, sMask, tid);

        /* mode 1: this lane's out values of the tile, loaded before the products so that their latency (an L2
           hit: prefetched a tile ago) hides behind them */
        float2 xv[2][NT];
        if (a.mode == 1) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float *o = a.out + (long long)(p0 + warp * 16 + g + 8 * h) * N;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    xv[h][nt] = nt * 8 + 2 * t < N ? *(const float2 *)(o + nt * 8 + 2 * t) : make_float2(0.0f, 0.0f);
            }
        }
        const float *sT = sS + (n % STAGES) * SG_TILE * KS;
        float acc[NT][4];
        sg_mma<K, N>(sT, sW, warp, g, t, acc);
        if (a.mode == 1)
            sg_epilogue<N, NT, true>(a, p0, warp, g, t, acc, xv);
        else
            sg_epilogue<N, NT, false>(a, p0, warp, g, t, acc, xv);
    }
}

/* ---- fp32 on CUDA cores (precision fp32, a.simt): the same pass without tensor cores ----

   Why: precision fp32 ran each LFE as two shift passes and two SIMT cuBLAS GEMMs (878 us per LFE at 960x540 on
   the H100: the GEMMs at ~36% of the fp32 FMA peak, K = 60 and 120 being short, and the shifted copies sA written
   and read back). Here, as in the tf32 kernels above, the shift is applied while the tile is gathered and the
   first conv's bias and ReLU in its epilogue; the products are fp32 fma with nothing rounded.

   Shape: tiles of 128 pixels as above, their shifted rows (+ in_bias, unrounded) in sS [128][SS] (k contiguous;
   SS is the tf32 kernels' KS, 72 or 120 words, so that the 2 or 4 consecutive rows a warp reads at once sit in
   different bank quads), gathered by sg_load through registers or by sg_issue's cp.async (sgs_pick says which
   pass takes which), and the weights transposed once into sWt [K][NP] (n contiguous, N zero-padded to NP = 8 TX). Thread (ty, tx) = (tid /
   TX, tid % TX) owns the PM = 128 / TY pixels ty + TY r and the 8 outputs 4 tx .. 4 tx + 3 and NP / 2 + 4 tx ..
   + 3: per 4 k it loads PM float4 of its pixels' rows (a warp reads 32 / TX distinct rows, each a broadcast) and
   per k two float4 of weights (a warp reads TX consecutive 16-byte pieces twice) for 8 PM fma. TX = 16 for N =
   120 (8 pixels x 8 outputs: 64 accumulators), 8 for N = 60 (4 x 8). Each output is the sum over k in
   ascending order, then the bias. */
template <int K, int N, int TX>
struct sgs_shape {
    static constexpr int KP = sg_shape<K, N>::KP, Q = sg_shape<K, N>::Q;  /* the staging's pieces, as above */
    static constexpr int SS = sg_shape<K, N>::KS; /* sS row stride (words): the rows a warp reads at once (2 or 4
                                                     consecutive) fall in different bank quads, and sg_issue fits */
    static constexpr int NP = 8 * TX;                                      /* N padded */
    static constexpr int TY = SG_THREADS / TX, PM = SG_TILE / TY;          /* pixel groups, pixels per thread */
    static constexpr size_t SMEM = ((size_t)SG_TILE * SS + (size_t)K * NP + KP) * sizeof(float) + (size_t)Q * 8 +
                                   (size_t)2 * SG_TILE * 4;
    static_assert(K % 4 == 0 && N % 4 == 0 && N <= NP && SG_TILE % TY == 0, "sgs_shape");
};

/* The product of one staged tile (sT: [SG_TILE][KS]) with the weights and its epilogue: mode 0 + bias, relu; mode
   1 added to out in place (+ bias if given). U: steps of 4 k unrolled (H100, 960x544, dev_step15d_simt_unroll_h100.log:
   the second conv 0.43 -> 0.344 ms with U = 3 or 5 in the register-staged kernel; the first conv, whose 64
   accumulators leave no registers to load ahead into, spills and slows with U > 1). */
template <int K, int N, int TX, int U>
static __device__ __forceinline__ void sgs_tile(const elan_cuda_shift_gemm_args &a, const float *sT, const float *sWt,
                                                int p0, int tx, int ty) {
    typedef sgs_shape<K, N, TX> S;
    constexpr int SS = S::SS, NP = S::NP, TY = S::TY, PM = S::PM;
    float acc[PM][8];
#pragma unroll
    for (int r = 0; r < PM; r++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[r][c] = 0.0f;
    const float *ar = sT + ty * SS, *br = sWt + 4 * tx;
#pragma unroll U
    for (int k4 = 0; k4 < K; k4 += 4) {
        float4 av[PM];
#pragma unroll
        for (int r = 0; r < PM; r++) av[r] = *(const float4 *)(ar + r * TY * SS + k4);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const float4 b0 = *(const float4 *)(br + (k4 + kk) * NP), b1 = *(const float4 *)(br + (k4 + kk) * NP + NP / 2);
#pragma unroll
            for (int r = 0; r < PM; r++) {
                const float x = kk == 0 ? av[r].x : kk == 1 ? av[r].y : kk == 2 ? av[r].z : av[r].w;
                acc[r][0] = fmaf(x, b0.x, acc[r][0]), acc[r][1] = fmaf(x, b0.y, acc[r][1]);
                acc[r][2] = fmaf(x, b0.z, acc[r][2]), acc[r][3] = fmaf(x, b0.w, acc[r][3]);
                acc[r][4] = fmaf(x, b1.x, acc[r][4]), acc[r][5] = fmaf(x, b1.y, acc[r][5]);
                acc[r][6] = fmaf(x, b1.z, acc[r][6]), acc[r][7] = fmaf(x, b1.w, acc[r][7]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < PM; r++) {
        float *o = a.out + (long long)(p0 + ty + TY * r) * N;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int n = 4 * tx + h * (NP / 2);
            if (n >= N) continue; /* N % 4 == 0: n + 3 < N too */
            float4 res = make_float4(acc[r][4 * h], acc[r][4 * h + 1], acc[r][4 * h + 2], acc[r][4 * h + 3]);
            if (a.bias) {
                const float2 b0 = __ldg((const float2 *)(a.bias + n)), b1 = __ldg((const float2 *)(a.bias + n + 2));
                res.x += b0.x, res.y += b0.y, res.z += b1.x, res.w += b1.y;
            }
            if (a.mode == 0) {
                res.x = fmaxf(res.x, 0.0f), res.y = fmaxf(res.y, 0.0f), res.z = fmaxf(res.z, 0.0f), res.w = fmaxf(res.w, 0.0f);
            } else {
                const float4 x = *(const float4 *)(o + n);
                res.x += x.x, res.y += x.y, res.z += x.z, res.w += x.w;
            }
            *(float4 *)(o + n) = res;
        }
    }
}

/* The weights transposed (sWt [K][NP], zero past N) and the per-channel tables, by the CTA's threads. */
template <int K, int N, int TX>
static __device__ __forceinline__ void sgs_consts(const elan_cuda_shift_gemm_args &a, float *sWt, float *sInb,
                                                  int2 *sTap, int tid) {
    typedef sgs_shape<K, N, TX> S;
    for (int e = tid; e < K * S::NP; e += SG_THREADS) {
        const int k = e / S::NP, j = e - k * S::NP;
        sWt[e] = j < N ? __ldg(a.w + j * K + k) : 0.0f;
    }
    if (sInb)
        for (int k = tid; k < S::KP; k += SG_THREADS) sInb[k] = a.in_bias && k < K ? __ldg(a.in_bias + k) : 0.0f;
    sg_taps<K, S::Q>(a, sTap, tid);
}

template <int K, int N, int TX, int U>
static __global__ void __launch_bounds__(SG_THREADS, 2) shift_gemm_simt_kernel(elan_cuda_shift_gemm_args a, int tiles) {
    typedef sgs_shape<K, N, TX> S;
    constexpr int SS = S::SS, NP = S::NP, KP = S::KP;
    extern __shared__ float4 smem4[];
    float *sS = (float *)smem4;                  /* [SG_TILE][SS] */
    float *sWt = sS + SG_TILE * SS;              /* [K][NP] */
    float *sInb = sWt + K * NP;                  /* [KP] */
    int2 *sTap = (int2 *)(sInb + KP);            /* [Q] */
    unsigned *sMask = (unsigned *)(sTap + S::Q); /* [2][SG_TILE] */
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;

    sgs_consts<K, N, TX>(a, sWt, sInb, sTap, tid);
    int buf = 0;
    if (tid < SG_TILE && (int)blockIdx.x < tiles) sMask[tid] = sg_tap_mask((int)blockIdx.x * SG_TILE + tid, a.Hp, a.Wp);
    __syncthreads();

    float4 v[sg_shape<K, N>::LOADS];
    unsigned live;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int p0 = tile * SG_TILE, next = tile + (int)gridDim.x;
        sg_load<K, N>(a, p0, sTap, sMask + buf * SG_TILE, v, &live); /* all of the tile's loads in flight at once */
        __syncthreads(); /* the previous tile's sS is read */
#pragma unroll
        for (int u = 0; u < sg_shape<K, N>::LOADS; u++) { /* + in_bias on live pieces (the shift zero-fills after it) */
            const int e = tid + u * SG_THREADS, i = e / S::Q, c = (e - i * S::Q) * 4;
            if (e < SG_TILE * S::Q) {
                float4 r = v[u];
                if (live >> u & 1u) {
                    const float4 b = *(const float4 *)(sInb + c);
                    r.x += b.x, r.y += b.y, r.z += b.z, r.w += b.w;
                }
                *(float4 *)(sS + i * SS + c) = r;
            }
        }
        if (tid < SG_TILE && next < tiles) sMask[(buf ^ 1) * SG_TILE + tid] = sg_tap_mask(next * SG_TILE + tid, a.Hp, a.Wp);
        __syncthreads();
        buf ^= 1;

        sgs_tile<K, N, TX, U>(a, sS, sWt, p0, tx, ty);
    }
}

/* The simt pass with the tile's shifted rows copied by cp.async (sg_issue), STAGES tiles in flight, as
   shift_gemm_async_kernel does for tf32; FIX adds in_bias to each thread's own live pieces after they land
   (the first conv: x + B), nothing is rounded. */
template <int K, int N, int TX, int STAGES, bool FIX, int MINB>
static __global__ void __launch_bounds__(SG_THREADS, MINB) shift_gemm_simt_async_kernel(elan_cuda_shift_gemm_args a, int tiles) {
    typedef sgs_shape<K, N, TX> S;
    constexpr int SS = S::SS, NP = S::NP;
    extern __shared__ float4 smem4[];
    float *sS = (float *)smem4;                    /* [STAGES][SG_TILE][SS] */
    float *sWt = sS + STAGES * SG_TILE * SS;       /* [K][NP] */
    float *sInb = sWt + K * NP;                    /* [KP] */
    int2 *sTap = (int2 *)(sInb + S::KP);           /* [Q] */
    unsigned *sMask = (unsigned *)(sTap + S::Q);   /* [STAGES][SG_TILE] */
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX, grid = (int)gridDim.x;
    static_assert(SS == sg_shape<K, N>::KS, "sg_issue's stride");

    sgs_consts<K, N, TX>(a, sWt, FIX ? sInb : NULL, sTap, tid);
#pragma unroll
    for (int st = 0; st < STAGES; st++) {
        const int tile = (int)blockIdx.x + st * grid;
        if (tid < SG_TILE && tile < tiles) sMask[st * SG_TILE + tid] = sg_tap_mask(tile * SG_TILE + tid, a.Hp, a.Wp);
    }
    __syncthreads();
#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) sg_issue<K, N, STAGES>(a, tiles, st, sS, sTap, sMask);

    for (int n = 0;; n++) {
        const int tile = (int)blockIdx.x + n * grid;
        if (tile >= tiles) break;
        elan_cp_async_wait<STAGES - 2>();
        float *sT = sS + (n % STAGES) * SG_TILE * SS;
        if (FIX) sg_fixup<K, N, false>(sT, sMask + (n % STAGES) * SG_TILE, sTap, sInb, tid);
        __syncthreads();
        sg_advance<K, N, STAGES>(a, tiles, n, tile, sS, sTap, sMask, tid);
        sgs_tile<K, N, TX, 1>(a, sT, sWt, tile * SG_TILE, tx, ty);
    }
}

template <int K, int N, int TX, int STAGES, bool FIX>
static constexpr size_t sgs_async_smem() {
    typedef sgs_shape<K, N, TX> S;
    return ((size_t)STAGES * SG_TILE * S::SS + (size_t)K * S::NP + S::KP) * sizeof(float) + (size_t)S::Q * 8 +
           (size_t)STAGES * SG_TILE * 4;
}

typedef void (*sg_fn)(elan_cuda_shift_gemm_args, int);

template <int K, int N, int STAGES, bool FIX>
static constexpr size_t sg_async_smem() {
    typedef sg_shape<K, N> S;
    return ((size_t)STAGES * SG_TILE * S::KS + (size_t)S::NT * 8 * S::KS + (FIX ? S::KP : 0)) * sizeof(float) +
           (size_t)S::Q * 8 + (size_t)STAGES * SG_TILE * 4;
}

/* The kernel for (K, N): the cp.async ones (async: the input is tf32 already and has no in_bias, so the copies
   need no fix-up), or with regs the register-staged ones (ELANSR_CUDA_SHIFT_GEMM=regs; kept as the reference
   the cp.async ones were measured against). */
/* fp32 on CUDA cores (a.simt). The first conv: the cp.async kernel (fix: in_bias given) at two CTAs per SM with
   two stages (106 KB), or with regs the register-staged one (ELANSR_CUDA_SHIFT_GEMM=regs; 0.272 against 0.289 ms
   at 960x544). The second: the register-staged kernel at two CTAs per SM, its loop unrolled by 3 (0.344 ms; a
   cp.async version at one CTA with three stages, the tf32 kernels' shape, measured 0.377-0.394 and was dropped). */
static sg_fn sgs_pick(int K, int N, int fix, int regs, size_t *smem) {
    if (K == 60 && N == 120) {
        if (regs) {
            *smem = sgs_shape<60, 120, 16>::SMEM;
            return shift_gemm_simt_kernel<60, 120, 16, 1>;
        }
        *smem = fix ? sgs_async_smem<60, 120, 16, 2, true>() : sgs_async_smem<60, 120, 16, 2, false>();
        return fix ? shift_gemm_simt_async_kernel<60, 120, 16, 2, true, 2>
                   : shift_gemm_simt_async_kernel<60, 120, 16, 2, false, 2>;
    }
    if (K == 120 && N == 60) {
        *smem = sgs_shape<120, 60, 8>::SMEM;
        return shift_gemm_simt_kernel<120, 60, 8, 3>;
    }
    return NULL;
}

static sg_fn sg_pick(int K, int N, int async, int regs, size_t *smem) {
    if (K == 60 && N == 120) { /* the cp.async kernel with its fix-up pass measured slower here (0.201 against
                                     0.187 ms at 960x544): the first conv keeps the register-staged one */
        *smem = sg_shape<60, 120>::SMEM;
        return shift_gemm_kernel<60, 120, false>;
    }
    if (K == 120 && N == 60) {
        if (regs) {
            *smem = sg_shape<120, 60>::SMEM;
            return shift_gemm_kernel<120, 60, true>;
        }
        *smem = async ? sg_async_smem<120, 60, 3, false>() : sg_async_smem<120, 60, 3, true>();
        return async ? shift_gemm_async_kernel<120, 60, 3, false, 1> : shift_gemm_async_kernel<120, 60, 3, true, 1>;
    }
    return NULL;
}

static int sg_regs(void) {
    const char *e = getenv("ELANSR_CUDA_SHIFT_GEMM"); /* read per launch: the dev check times both in one process */
    return e && !strcmp(e, "regs");
}

extern "C" int elan_cuda_shift_gemm_supported(int K, int N) {
    size_t smem;
    return sg_pick(K, N, 0, 0, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_shift_gemm_prepare(int K, int N) {
    size_t smem;
    for (int v = 0; v < 8; v++) { /* every variant: which one runs is decided per launch (v >= 4: simt) */
        sg_fn f = v < 4 ? sg_pick(K, N, v & 1, v >> 1, &smem) : sgs_pick(K, N, v & 1, (v >> 1) & 1, &smem);
        if (!f) return cudaErrorInvalidValue;
        const cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

extern "C" cudaError_t elan_cuda_shift_gemm(const elan_cuda_shift_gemm_args *a, cudaStream_t s) {
    size_t smem;
    sg_fn f = a->simt ? sgs_pick(a->K, a->N, a->in_bias != NULL, sg_regs(), &smem)
                      : sg_pick(a->K, a->N, a->in_tf32 && !a->in_bias, sg_regs(), &smem);
    const long long P = (long long)a->n * a->Hp * a->Wp;
    /* tiles of 128 whole pixels; 16-byte rows; taps constant over runs of 4 (the caller's promise) */
    if (!f || P % SG_TILE || P > 0x7fffffffLL || ((size_t)a->in & 15) || ((size_t)a->out & 15) ||
        (a->in_bias && ((size_t)a->in_bias & 15)) || (a->bias && ((size_t)a->bias & 7)) || (a->mode == 0 && !a->bias) ||
        a->in == a->out || (a->simt && (a->out_tf32 || a->in_tf32)))
        return cudaErrorInvalidValue;
    const int tiles = (int)(P / SG_TILE);
    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, SG_THREADS, smem, &slots);
    if (e != cudaSuccess) return e;
    const int grid = (int)(slots > 0 && slots < tiles ? slots : tiles);
    f<<<grid, SG_THREADS, smem, s>>>(*a, tiles);
    return cudaGetLastError();
}
