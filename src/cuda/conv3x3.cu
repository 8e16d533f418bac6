/* conv3x3.cu — the two dense 3x3 convolutions at the ends of ELAN, each fused with the cheap per-pixel
   steps around it so that no intermediate image makes a round trip through device memory.

   head: padded pixel (y, x) reads the input at (mirror_y[y], mirror_x[x]) — index tables the backend fills
   with elan_mirror_index, so the GPU pads exactly as the CPU does — applies sub_mean, and convolves 3 -> C
   with zero padding at the border of the padded image. A block owns a 16x16 tile (the padded sizes are
   multiples of 16, so tiles never straddle the edge): its 18x18x3 halo and all C*27 weights sit in shared
   memory, and the 256 threads walk the tile's 256*C outputs in NHWC order, so consecutive threads write
   consecutive addresses. In fp16/bf16 the head also writes xh, the half copy of x that the first GEMM and
   shift read (template T; T = float writes no copy), and skips x when it is NULL: with the half residual
   stream nothing reads the fp32 x.

   tail: (x + hb) -> 3x3 conv C -> 3*s*s -> pixel shuffle -> add_mean -> crop, straight into the NCHW output.
   add_mean is a 3x3 channel mix of each output pixel and is folded into the weights at creation. Only the
   cropped H x W pixels are computed (their 3x3 neighbourhood still reaches into the padding, which holds real
   activations). One thread owns one LR pixel and all its 3*s*s outputs in registers; the input channels are
   streamed through shared memory in chunks of TAIL_CC, stored channel-major so that neighbouring threads read
   neighbouring banks, and the weights are laid out [cin][tap][out] so each thread reads them as float4
   broadcasts. The tail is ~3% of the network's work; this is simple rather than fast. It stays the tail of
   fp32 and of the half modes with an fp32 residual stream; with the half residual stream, tail_mma (below)
   computes it on tensor cores, and in tf32, tail_tf32 (at the end of this file), which also adds the optional
   per-channel x_bias to x while staging (this one does not: in fp32 the carried biases are added by one
   bias_add pass before it, because an x_bias read here measured 1.26 -> 1.56 ms at 960x540 on the H100). */
#include "cuda_common.h"
#include "mma.h"

#include <limits.h>
#include <string.h>

#define TILE 16
#define HALO (TILE + 2)
#define HALO_N (HALO * HALO)

/* Pixels a warp computes per step of the head: HEAD_PV of one column, one under the other, so that their 3 x 3
   windows share rows (HEAD_PV + 2 halo rows per channel instead of 3 HEAD_PV: 54 shared loads for 4 pixels
   instead of 108) and each lane runs 2 HEAD_PV independent chains of fma instead of 2. With one pixel per step
   (the first version) the dependent chains of 27 fma held the head at 0.49 instructions per cycle and 20 us at
   720p (Nsight Compute, H100; most stall samples on FFMA). */
#ifndef HEAD_PV
#define HEAD_PV 4 /* 1: the first version's order and registers (80); a divisor of 16 */
#endif

/* The tile's 256 pixels are walked HEAD_PV per warp and step; lane l owns the output channel pairs l, l + 32, ...
   (2 channels each), whose 2 x 27 weights it keeps in registers, and reads its pixels' input values (3
   channels x 3x3 taps, sub_mean applied) from shared memory as broadcasts. A warp's stores then cover one
   pixel's channels contiguously (coalesced, like the NHWC order the layout asks for), and no lane divides
   an index. Each output is bias + the 27 products in the order (channel, ky, kx), as the CPU head sums them.
   (Measured on the H100 at 960x540: a thread per (pixel, channel) in NHWC order, 54 scalar shared loads per
   output, took 285 us; a thread per pixel looping over the channels, 901 us: its stores hit 32 pixels' rows
   at once.) */
/* The 3 x 18 x 18 halo of tile `tile` (sub_mean applied, zero outside the padded image), the thread's share of
   it (pieces tid, tid + 256 of each channel) into registers: loaded a tile ahead, stored after. */
struct head_halo {
    float v[2][3];
};
static __device__ __forceinline__ head_halo head_load(const elan_cuda_head_args &a, const float *sm, int tile) {
    const int tiles_x = a.Wp / TILE, tiles_y = a.Hp / TILE;
    const int tx0 = (tile % tiles_x) * TILE, ty0 = (tile / tiles_x % tiles_y) * TILE, img = tile / tiles_x / tiles_y;
    const size_t plane = (size_t)a.H * a.W;
    const float *in = a.in + (size_t)img * 3 * plane;
    head_halo h;
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = (int)threadIdx.x + 256 * u;
        const int py = ty0 + i / HALO - 1, px = tx0 + i % HALO - 1;
        float v0 = 0.0f, v1 = 0.0f, v2 = 0.0f;
        if (i < HALO_N && py >= 0 && py < a.Hp && px >= 0 && px < a.Wp) {
            const size_t o = (size_t)a.mirror_y[py] * a.W + a.mirror_x[px];
            const float r = in[o], g = in[plane + o], b = in[2 * plane + o];
            v0 = sm[9] + sm[0] * r + sm[1] * g + sm[2] * b;
            v1 = sm[10] + sm[3] * r + sm[4] * g + sm[5] * b;
            v2 = sm[11] + sm[6] * r + sm[7] * g + sm[8] * b;
        }
        h.v[u][0] = v0, h.v[u][1] = v1, h.v[u][2] = v2;
    }
    return h;
}
static __device__ __forceinline__ void head_store(float *halo, const head_halo &h) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int i = (int)threadIdx.x + 256 * u;
        if (i < HALO_N) {
            halo[i] = h.v[u][0];
            halo[HALO_N + i] = h.v[u][1];
            halo[2 * HALO_N + i] = h.v[u][2];
        }
    }
}

/* Persistent: a CTA takes tiles blockIdx.x, + gridDim.x, ... (the grid is what fits at once), and loads the next
   tile's halo into registers before it computes this one, so that the loads' latency hides behind the products.
   Measured on the H100 at 4K: 111.8 -> 104.7 us against one CTA per tile (720p unchanged, one tile per CTA there).
   The halo was the smaller part: the head writes 360 bytes per pixel (hb in fp32, xh), ~1.8 TB/s at 104.7 us. */
template <typename T>
static __global__ void __launch_bounds__(256, 2) head_kernel(elan_cuda_head_args a, int tiles) {
    extern __shared__ float smem[];
    float *sm = smem;          /* 12 */
    float *halo0 = smem + 16;  /* [2][3][HALO_N] */
    const int C = a.C, CP = (C + 1) / 2;
    const int tiles_x = a.Wp / TILE, tiles_y = a.Hp / TILE;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    for (int i = tid; i < 12; i += blockDim.x) sm[i] = a.sub_mean[i];
    __syncthreads();
    elan_pdl_wait(); /* the input (and, for x / hb / xh, the previous forward's readers) */
    int tile = blockIdx.x, buf = 0;
    if (tile < tiles) head_store(halo0, head_load(a, sm, tile));
    __syncthreads();

    const bool pairs = C % 2 == 0; /* 8-byte (x, hb) and 4-byte (xh) pair stores stay aligned */
#pragma unroll 1
    for (; tile < tiles; tile += gridDim.x, buf ^= 1) {
        const int next = tile + (int)gridDim.x;
        if (next >= tiles) elan_pdl_trigger(); /* the CTA's last tile: the next kernel may start placing its CTAs */
        head_halo hn;
        if (next < tiles) hn = head_load(a, sm, next);
        const float *halo = halo0 + buf * 3 * HALO_N;
        const int tx0 = (tile % tiles_x) * TILE, ty0 = (tile / tiles_x % tiles_y) * TILE, img = tile / tiles_x / tiles_y;
        const size_t tile_px = ((size_t)img * a.Hp + ty0) * a.Wp + tx0;
#pragma unroll 1
        for (int j = lane; j - lane < CP; j += 32) {
            const bool live = j < CP;
            const int c0 = 2 * j, c1 = min(2 * j + 1, C - 1); /* odd C: the last pair computes channel C-1 twice */
            float w0[27], w1[27];
#pragma unroll
            for (int k = 0; k < 27; k++) {
                w0[k] = live ? __ldg(a.w + c0 * 27 + k) : 0.0f;
                w1[k] = live ? __ldg(a.w + c1 * 27 + k) : 0.0f;
            }
            const float b0 = live ? __ldg(a.b + c0) : 0.0f, b1 = live ? __ldg(a.b + c1) : 0.0f;
#pragma unroll 1
            for (int q = 0; q < TILE * TILE / (8 * HEAD_PV); q++) {
                const int lx = warp + 8 * (q & 1), ly0 = (q >> 1) * HEAD_PV; /* pixels (ly0 .. ly0 + HEAD_PV - 1, lx) */
                float acc[HEAD_PV][2];
#pragma unroll
                for (int i = 0; i < HEAD_PV; i++) acc[i][0] = b0, acc[i][1] = b1;
#pragma unroll
                for (int c = 0; c < 3; c++)
#pragma unroll
                    for (int r = 0; r < HEAD_PV + 2; r++) /* halo row ly0 + r is tap row r - i of pixel i */
#pragma unroll
                        for (int kx = 0; kx < 3; kx++) {
                            const float v = halo[c * HALO_N + (ly0 + r) * HALO + lx + kx];
#pragma unroll
                            for (int i = 0; i < HEAD_PV; i++) {
                                const int ky = r - i;
                                if (ky < 0 || ky > 2) continue;
                                acc[i][0] += v * w0[c * 9 + ky * 3 + kx];
                                acc[i][1] += v * w1[c * 9 + ky * 3 + kx];
                            }
                        }
                if (!live) continue;
#pragma unroll
                for (int i = 0; i < HEAD_PV; i++) {
                    const float acc0 = acc[i][0], acc1 = acc[i][1];
                    const size_t o = (tile_px + (size_t)(ly0 + i) * a.Wp + lx) * C + c0;
                    if (pairs) {
                        if (a.x) *(float2 *)(a.x + o) = make_float2(acc0, acc1);
                        *(float2 *)(a.hb + o) = make_float2(acc0, acc1);
                        if constexpr (sizeof(T) == 2) *(unsigned *)((T *)a.xh + o) = elan_pack2_out<T>(acc0, acc1);
                    } else {
                        if (a.x) a.x[o] = acc0;
                        a.hb[o] = acc0;
                        if constexpr (sizeof(T) == 2) ((T *)a.xh)[o] = elan_from_f<T>(acc0);
                        if (c0 + 1 < C) {
                            if (a.x) a.x[o + 1] = acc1;
                            a.hb[o + 1] = acc1;
                            if constexpr (sizeof(T) == 2) ((T *)a.xh)[o + 1] = elan_from_f<T>(acc1);
                        }
                    }
                }
            }
        }
        /* the next tile's halo into the other buffer: everyone finished reading it in the previous iteration
           (barrier below); then this tile's buffer is free and the next one visible */
        if (next < tiles) head_store(halo0 + (buf ^ 1) * 3 * HALO_N, hn);
        __syncthreads();
    }
}

extern "C" size_t elan_cuda_head_smem(int C) {
    (void)C;
    return (size_t)(16 + 2 * 3 * HALO_N) * sizeof(float);
}

extern "C" cudaError_t elan_cuda_head_prepare(int C) {
    const int smem = (int)elan_cuda_head_smem(C);
    cudaError_t e = cudaFuncSetAttribute(head_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(head_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(head_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return e;
}

extern "C" cudaError_t elan_cuda_head(const elan_cuda_head_args *a, cudaStream_t s) {
    const long long tiles = (long long)a->n * (a->Hp / TILE) * (a->Wp / TILE);
    const size_t smem = elan_cuda_head_smem(a->C);
    void (*f)(elan_cuda_head_args, int) = !a->xh || a->act == ELAN_ACT_F32 ? head_kernel<float>
                                          : a->act == ELAN_ACT_F16          ? head_kernel<__half>
                                          : a->act == ELAN_ACT_BF16         ? head_kernel<__nv_bfloat16>
                                                                            : NULL;
    if (!f || tiles > INT_MAX) return cudaErrorInvalidValue;
    if (tiles == 0) return cudaSuccess;
    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, 256, smem, &slots);
    if (e != cudaSuccess) return e;
    const long long grid = slots > 0 && slots < tiles ? slots : tiles;
    return elan_launch_pdl(f, dim3((unsigned)grid), dim3(256), smem, s, *a, (int)tiles);
}

/* Input channels per shared-memory chunk of the tail: 12 divides both 60 and 180; other C are zero-padded. */
#define TAIL_CC 12

template <int S>
static __global__ void __launch_bounds__(256) tail_kernel(elan_cuda_tail_args a) {
    constexpr int NOUT = 3 * S * S, NP = (NOUT + 3) / 4 * 4;
    __shared__ float halo[TAIL_CC][HALO_N];
    __shared__ __align__(16) float wsh[TAIL_CC * 9 * NP];
    const int C = a.C;
    const int tiles_x = (a.W + TILE - 1) / TILE, tiles_y = (a.H + TILE - 1) / TILE;
    const int tile = blockIdx.x;
    const int tx0 = (tile % tiles_x) * TILE;
    const int ty0 = (tile / tiles_x % tiles_y) * TILE;
    const int img = tile / tiles_x / tiles_y;
    const int tid = threadIdx.x, ly = tid / TILE, lx = tid % TILE;

    float acc[NP];
#pragma unroll
    for (int o = 0; o < NP; o++) acc[o] = a.b[o];

    const size_t img_px = (size_t)img * a.Hp * a.Wp;
    for (int c0 = 0; c0 < C; c0 += TAIL_CC) {
        for (int i = tid; i < HALO_N * TAIL_CC; i += blockDim.x) {
            const int hp = i / TAIL_CC, cc = i % TAIL_CC;
            const int py = ty0 + hp / HALO - 1, px = tx0 + hp % HALO - 1;
            float v = 0.0f;
            if (c0 + cc < C && py >= 0 && py < a.Hp && px >= 0 && px < a.Wp) {
                const size_t o = (img_px + (size_t)py * a.Wp + px) * C + c0 + cc;
                v = a.x[o] + a.hb[o];
            }
            halo[cc][hp] = v;
        }
        for (int i = tid; i < TAIL_CC * 9 * NP; i += blockDim.x)
            wsh[i] = c0 + i / (9 * NP) < C ? a.w[(size_t)c0 * 9 * NP + i] : 0.0f;
        __syncthreads();
#pragma unroll 1
        for (int cc = 0; cc < TAIL_CC; cc++) {
#pragma unroll
            for (int t = 0; t < 9; t++) {
                const float v = halo[cc][(ly + t / 3) * HALO + lx + t % 3];
                const float4 *w4 = (const float4 *)(wsh + (cc * 9 + t) * NP);
#pragma unroll
                for (int o = 0; o < NP / 4; o++) {
                    const float4 w = w4[o];
                    acc[4 * o] += v * w.x;
                    acc[4 * o + 1] += v * w.y;
                    acc[4 * o + 2] += v * w.z;
                    acc[4 * o + 3] += v * w.w;
                }
            }
        }
        __syncthreads();
    }

    const int y = ty0 + ly, x = tx0 + lx;
    if (y >= a.H || x >= a.W) return;
    const size_t oh = (size_t)a.H * S, ow = (size_t)a.W * S;
#pragma unroll
    for (int c = 0; c < 3; c++)
#pragma unroll
        for (int i = 0; i < S; i++) {
            float *row = a.out + (((size_t)img * 3 + c) * oh + (size_t)y * S + i) * ow + (size_t)x * S;
#pragma unroll
            for (int j = 0; j < S; j++) row[j] = acc[c * S * S + i * S + j];
        }
}

extern "C" cudaError_t elan_cuda_tail(const elan_cuda_tail_args *a, cudaStream_t s) {
    const long long tiles = (long long)a->n * ((a->H + TILE - 1) / TILE) * ((a->W + TILE - 1) / TILE);
    switch (a->scale) {
    case 2: tail_kernel<2><<<(unsigned)tiles, 256, 0, s>>>(*a); break;
    case 3: tail_kernel<3><<<(unsigned)tiles, 256, 0, s>>>(*a); break;
    case 4: tail_kernel<4><<<(unsigned)tiles, 256, 0, s>>>(*a); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- the tail on tensor cores (fp16 / bf16 modes with the half residual stream) ----

   tail_mma computes the same tail as tail_kernel, but from the half residual stream xh (T = __half or
   __nv_bfloat16) and hb, with no fp32 copy of x: s = float(xh) + hb is formed in fp32 and rounded once to fp16
   (saturating, NaN kept, as every fp16 store of the backend). The operands are fp16 in both half modes: in bf16
   mode that keeps 3 more bits of s than bf16 would, and the activations stay far below 65504 (pure-noise
   inputs of ~1e5 would saturate here: ELANSR_CUDA_TAIL=simt keeps the fp32 tail). The conv is an implicit GEMM
   on mma.sync m16n8k16 with fp32 accumulators started at the bias: M = LR pixels, N = 3*s*s padded to NP = 16,
   32 or 48 (whole pairs of n8 tiles for ldmatrix.x4), K = 9 taps x 64 channels, C zero-padded, and only the
   ceil(C/16) k-steps that hold channels run.

   Shape. 256 threads (8 warps) per CTA, which owns a 16 x 16 tile of LR pixels of the cropped image (16 x 16
   rather than 8 x 16: the halo costs 1.27x the tile's reads instead of 1.41x). The tile's 18 x 18 halo of s
   sits in shared memory as fp16 rows of 64 channels, and the weights as [tap][n][k] rows (B[k][n] = w[tap][n][k]:
   plain ldmatrix), both with a stride of TM_KS = 72 halves = 144 bytes, an odd multiple of 16, so the 8 row
   addresses of an ldmatrix phase fall on 8 different 16-byte bank groups. Warp w owns tile rows 2w and 2w+1
   (two m16 tiles of 16 pixels) and all NP/8 n8 tiles: for tap (ky, kx) the A fragment of row r is an ldmatrix
   at halo row r + ky, columns kx..kx+15, so the tap is only an address offset. Per k-step a warp issues
   2 + NP/16 ldmatrix.x4 for NP/4 mma; accumulators 2 x NP/2 floats a lane (48 for x4).
   The grid is persistent: as many CTAs as are resident (occupancy calculator; 2 per SM on sm_90 for x4,
   109 KB of shared memory each), each copying the weights once (cp.async, 62 KB for x4: per 16 x 16 tile that
   would be as many bytes as the tile's activations) and then walking the tiles with a grid stride. Consecutive
   tiles are row neighbours, so the CTAs in flight cover one band of the image and the shared halo columns and
   rows come from L2. A tile's halo is staged by plain loads (s needs the fp32 add, so cp.async cannot place it),
   4 pieces of 4 channels in flight per thread; the other CTA of the SM computes meanwhile, and each CTA
   prefetches its next tile's halo into L2 once its current one is staged, so that staging reads L2, not DRAM.

   Epilogue straight from the accumulators: lane (g, t) holds outputs n = 8j + 2t and 8j + 2t + 1 of pixels g and
   g + 8 of its m16 tile. For s = 4 (2) that pair is two adjacent sub-pixels of one output row, and one float2
   store of the warp writes 2 (4) runs of 128 (64) contiguous bytes, i.e. whole 32-byte sectors: staging through
   shared memory would add a barrier and shared traffic and gain no sector. For s = 3 the pair can straddle two
   sub-pixel rows, so lanes store single floats (8 pixels x 3 columns apart), and the sectors fill up in L2 from
   the stores of the other two columns. Stores carry the streaming hint: the output (100 MB for a 960x540 input at
   x4) would otherwise push the halos out of L2. Pixels of a tile past the crop (H, W not multiples of 16) are
   computed from the padding and not written. */
#define TM_TILE 16
#define TM_HALO (TM_TILE + 2)
#define TM_HALO_N (TM_HALO * TM_HALO)
#define TM_KP ELAN_CUDA_TAIL_MMA_K  /* channels a row holds (C zero-padded) */
#define TM_KS (TM_KP + 8)           /* row stride in shared memory, halves */
#define TM_THREADS 256
#define TM_BATCH 4                  /* halo pieces a thread loads before it stores any */

static __host__ __device__ constexpr int tail_mma_np(int S) { return (3 * S * S + 15) / 16 * 16; }
static constexpr size_t tail_mma_smem(int S) {
    return (size_t)(TM_HALO_N + 9 * tail_mma_np(S)) * TM_KS * 2 + (size_t)tail_mma_np(S) * sizeof(float);
}

/* Asks L2 for the bytes of xh and hb under the halo of the tile at (img, ty0, tx0). Per halo row, 64 slots of
   128-byte lines: 20 for xh (18 pixels of at most 64 halves, 2304 bytes from a misaligned start) and 44 for hb
   (4608 bytes); slots past a row's end do nothing. */
static __device__ __forceinline__ void tail_mma_prefetch(const void *xh, const float *hb, int C, int img, int ty0,
                                                         int tx0, int Hp, int Wp) {
    const int p0 = max(tx0 - 1, 0), p1 = min(tx0 + TM_TILE + 1, Wp);
    for (int i = threadIdx.x; i < TM_HALO * 64; i += TM_THREADS) {
        const int py = ty0 - 1 + (i >> 6), l = i & 63;
        if (py < 0 || py >= Hp) continue;
        const size_t px = ((size_t)img * Hp + py) * Wp + p0;
        const int hbl = l >= 20; /* lines 0..19: xh, 20..63: hb */
        const char *base = hbl ? (const char *)(hb + px * C) : (const char *)xh + px * C * 2;
        const size_t bytes = (size_t)(p1 - p0) * C * (hbl ? 4 : 2);
        const char *line = (const char *)((size_t)base & ~(size_t)127) + (size_t)(hbl ? l - 20 : l) * 128;
        if (line < base + bytes) elan_prefetch_l2(line);
    }
}

template <typename T, int S>
static __global__ void __launch_bounds__(TM_THREADS, 2) tail_mma_kernel(elan_cuda_tail_args a) {
    constexpr int NOUT = 3 * S * S, NP = tail_mma_np(S), NT = NP / 8;
    extern __shared__ __align__(16) unsigned char tm_smem[];
    __half *halo = (__half *)tm_smem;               /* [TM_HALO_N][TM_KS] */
    __half *wsm = halo + TM_HALO_N * TM_KS;         /* [9][NP][TM_KS] */
    float *bsm = (float *)(wsm + 9 * NP * TM_KS);   /* [NP] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int C = a.C, kq = C / 4, ksteps = (C + 15) / 16;
    const T *xh = (const T *)a.xh;
    const float *hb = a.hb;

    /* the weights, once; the first tile's barrier publishes them */
    const __half *wg = (const __half *)a.wh;
    for (int i = tid; i < 9 * NP * (TM_KP / 4); i += TM_THREADS)
        elan_cp_async8(wsm + (i >> 4) * TM_KS + (i & 15) * 4, wg + (i >> 4) * TM_KP + (i & 15) * 4, 8);
    elan_cp_async_commit();
    for (int i = tid; i < NP; i += TM_THREADS) bsm[i] = i < NOUT ? a.b[i] : 0.0f;
    elan_pdl_wait(); /* xh and hb of the last layer */

    const int tiles_x = (a.W + TM_TILE - 1) / TM_TILE, tiles_y = (a.H + TM_TILE - 1) / TM_TILE;
    const int ntiles = a.n * tiles_x * tiles_y; /* fits an int: checked at launch */
    const size_t OH = (size_t)a.H * S, OW = (size_t)a.W * S;
    /* ldmatrix row addresses of this lane: A rows are the 16 pixels of the warp's first tile row (lane % 16),
       k half lane / 16; B rows are n = lane % 8 + 8 (lane / 16), k half (lane / 8) % 2 */
    const __half *a_lane = halo + (2 * warp * TM_HALO + (lane & 15)) * TM_KS + (lane >> 4) * 8;
    const __half *b_lane = wsm + ((lane & 7) + (lane >> 4) * 8) * TM_KS + ((lane >> 3) & 1) * 8;
    const int g = lane >> 2, t = lane & 3;

    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int tx0 = tile % tiles_x * TM_TILE, ty0 = tile / tiles_x % tiles_y * TM_TILE;
        const int img = tile / tiles_x / tiles_y;
        __syncthreads(); /* the previous tile's ldmatrix reads are done */

        /* s of the halo: piece i is 4 channels (q = i % 16) of halo pixel i / 16; zero outside the padded image
           and past C */
        const size_t img_px = (size_t)img * a.Hp * a.Wp;
        constexpr int ITEMS = TM_HALO_N * (TM_KP / 4);
        for (int i0 = tid; i0 < ITEMS; i0 += TM_BATCH * TM_THREADS) {
            uint2 xr[TM_BATCH];
            float4 hr[TM_BATCH];
#pragma unroll
            for (int u = 0; u < TM_BATCH; u++) {
                const int i = i0 + u * TM_THREADS, hp = i >> 4, q = i & 15;
                const int py = ty0 - 1 + hp / TM_HALO, px = tx0 - 1 + hp % TM_HALO;
                xr[u] = make_uint2(0, 0);
                hr[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (i < ITEMS && q < kq && py >= 0 && py < a.Hp && px >= 0 && px < a.Wp) {
                    const size_t o = (img_px + (size_t)py * a.Wp + px) * C + q * 4;
                    xr[u] = __ldg((const uint2 *)(xh + o));
                    hr[u] = __ldg((const float4 *)(hb + o));
                }
            }
#pragma unroll
            for (int u = 0; u < TM_BATCH; u++) {
                const int i = i0 + u * TM_THREADS;
                if (i >= ITEMS) break;
                const float2 v0 = elan_unpack2<T>(xr[u].x), v1 = elan_unpack2<T>(xr[u].y);
                *(uint2 *)(halo + (i >> 4) * TM_KS + (i & 15) * 4) =
                    make_uint2(elan_pack2_out<__half>(v0.x + hr[u].x, v0.y + hr[u].y),
                               elan_pack2_out<__half>(v1.x + hr[u].z, v1.y + hr[u].w));
            }
        }
        elan_cp_async_wait_all();
        __syncthreads();
        if (tile + (int)gridDim.x < ntiles) {
            const int nt_ = tile + (int)gridDim.x;
            tail_mma_prefetch(xh, hb, C, nt_ / tiles_x / tiles_y, nt_ / tiles_x % tiles_y * TM_TILE,
                              nt_ % tiles_x * TM_TILE, a.Hp, a.Wp);
        }

        float acc[2][NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const float b0 = bsm[j * 8 + 2 * t], b1 = bsm[j * 8 + 2 * t + 1];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) acc[mi][j][0] = b0, acc[mi][j][1] = b1, acc[mi][j][2] = b0, acc[mi][j][3] = b1;
        }
#pragma unroll 1
        for (int kc = 0; kc < ksteps; kc++) {
#pragma unroll
            for (int tap = 0; tap < 9; tap++) {
                unsigned af[2][4];
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
                    elan_ldsm_x4(af[mi], a_lane + ((mi + tap / 3) * TM_HALO + tap % 3) * TM_KS + kc * 16);
#pragma unroll
                for (int jp = 0; jp < NT / 2; jp++) {
                    unsigned bf[4];
                    elan_ldsm_x4(bf, b_lane + (tap * NP + jp * 16) * TM_KS + kc * 16);
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
                        elan_mma16816<__half>(acc[mi][2 * jp], af[mi], bf);
                        elan_mma16816<__half>(acc[mi][2 * jp + 1], af[mi], bf + 2);
                    }
                }
            }
        }

        /* pixel shuffle + crop: output n = c*S*S + i*S + j of LR pixel (y, x) goes to row y*S + i, column
           x*S + j of channel c */
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
            const int y = ty0 + 2 * warp + mi;
            if (y >= a.H) continue;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int x = tx0 + g + 8 * h;
                if (x >= a.W) continue;
                float *o = a.out + ((size_t)img * 3 * OH + (size_t)y * S) * OW + (size_t)x * S;
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int n = j * 8 + 2 * t;
                    if constexpr (S % 2 == 0) {
                        if (n < NOUT)
                            __stcs((float2 *)(o + ((size_t)(n / (S * S)) * OH + n / S % S) * OW + n % S),
                                   make_float2(acc[mi][j][2 * h], acc[mi][j][2 * h + 1]));
                    } else {
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (n + e < NOUT)
                                __stcs(o + ((size_t)((n + e) / (S * S)) * OH + (n + e) / S % S) * OW + (n + e) % S,
                                       acc[mi][j][2 * h + e]);
                    }
                }
            }
        }
    }
}

typedef void (*tail_mma_fn)(elan_cuda_tail_args);

static tail_mma_fn tail_mma_pick(int C, int scale, int act, size_t *smem) {
    if (C < 4 || C > TM_KP || C % 4) return NULL;
#define TM_CASE(S)                                                                                   \
    case S:                                                                                          \
        *smem = tail_mma_smem(S);                                                                    \
        return act == ELAN_ACT_F16    ? tail_mma_kernel<__half, S>                                   \
               : act == ELAN_ACT_BF16 ? tail_mma_kernel<__nv_bfloat16, S>                            \
                                      : NULL;
    switch (scale) {
        TM_CASE(2)
        TM_CASE(3)
        TM_CASE(4)
    default: return NULL;
    }
#undef TM_CASE
}

extern "C" int elan_cuda_tail_mma_supported(int C, int scale) {
    size_t smem;
    return tail_mma_pick(C, scale, ELAN_ACT_F16, &smem) ? 0 : -1;
}

extern "C" size_t elan_cuda_tail_mma_weights_count(int scale) {
    return scale >= 2 && scale <= 4 ? (size_t)9 * tail_mma_np(scale) * TM_KP : 0;
}

extern "C" void elan_cuda_tail_mma_weights(const float *w, int C, int scale, void *wh) {
    const int nout = 3 * scale * scale, npad = elan_cuda_tail_nout_pad(scale), np = tail_mma_np(scale);
    __half *d = (__half *)wh;
    for (int tap = 0; tap < 9; tap++)
        for (int n = 0; n < np; n++)
            for (int k = 0; k < TM_KP; k++)
                d[((size_t)tap * np + n) * TM_KP + k] =
                    __float2half_rn(n < nout && k < C ? w[((size_t)k * 9 + tap) * npad + n] : 0.0f);
}

extern "C" cudaError_t elan_cuda_tail_mma_prepare(int C, int scale, int act) {
    size_t smem;
    const tail_mma_fn f = tail_mma_pick(C, scale, act, &smem);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" cudaError_t elan_cuda_tail_mma(const elan_cuda_tail_args *a, cudaStream_t s) {
    size_t smem;
    const tail_mma_fn f = tail_mma_pick(a->C, a->scale, a->act, &smem);
    if (!f || !a->xh || !a->hb || !a->wh || !a->b || !a->out || a->n < 0 || a->H < 0 || a->W < 0 || a->H > a->Hp ||
        a->W > a->Wp)
        return cudaErrorInvalidValue;
    /* 8-byte pieces of xh, float4 of hb, 8-byte cp.async of wh, float2 stores of out for even scales */
    if (((size_t)a->xh & 7) || ((size_t)a->hb & 15) || ((size_t)a->wh & 7) || ((size_t)a->out & (a->scale % 2 ? 3 : 7)))
        return cudaErrorInvalidValue;
    const long long tiles = (long long)a->n * ((a->H + TM_TILE - 1) / TM_TILE) * ((a->W + TM_TILE - 1) / TM_TILE);
    if (tiles == 0) return cudaGetLastError();
    if (tiles > INT_MAX) return cudaErrorInvalidValue;
    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, TM_THREADS, smem, &slots);
    if (e != cudaSuccess) return e;
    const long long grid = tiles < slots ? tiles : slots;
    return elan_launch_pdl(f, dim3((unsigned)grid), dim3(TM_THREADS), smem, s, *a);
}

/* ---- the tail on tf32 tensor cores (precision tf32: fp32 activations) ----

   tail_tf32 computes the same tail as tail_kernel from the fp32 x and hb: s = (x + x_bias) + hb in fp32 (x_bias
   per input channel, optional; s = 0 outside the padded image, x_bias included), rounded once to tf32 as it is
   staged (elan_tf32: to nearest, ties away from zero), the weights rounded to tf32 on the host
   (elan_cuda_tail_tf32_weights), the bias fp32. The conv is an implicit GEMM on mma.sync m16n8k8.tf32 with fp32
   accumulators started at the bias, with the roles of tail_mma swapped: the weights are the A operand
   (M = 3*s*s outputs padded to 16, 32 or 48: whole m16 tiles), the pixels the B operand (N = LR pixels, an n8
   tile is 8 pixels of a tile row), K = 9 taps x 64 channels (C zero-padded), and only the ceil(C/8) k8 steps that
   hold channels run. Epilogue: pixel shuffle and crop straight from the accumulators, streaming stores.

   Error. s and w carry one rounding each of relative size <= 2^-11 (tf32 keeps 10 mantissa bits, as fp16, but
   fp32's exponent range: nothing saturates); their products are exact in fp32 (11 x 11 significant bits), and
   the sums are accumulated in fp32 over 9 x ceil(C/8) <= 72 mma steps. Against the fp32 tail the output then
   differs by about 0.8 x 2^-11 x sqrt(sum (w s)^2) (two independent roundings per product; check_tail.cu).

   Shape. fp32 operands are twice the bytes of fp16: the weights for x4 (9 taps x 48 outputs x 64 channels) take
   110.6 KB and a 16 x 16 tile's 18 x 18 halo of s 83 KB, so tail_mma's two CTAs per SM (109 KB each) cannot
   fit in the SM's 228 KB. Smaller tiles (8 x 16: two CTAs, or one CTA with a double-buffered halo) or weights
   streamed per tap would keep the staging of one tile beside the math of another, but cost shared-memory
   wavefronts per mma (smaller warp blocks) or L2 reads (110 KB of weights per tile). So: ONE CTA per SM, the
   16 x 16 tile, the weights resident (x4: 189 KB of shared memory per CTA, 384 threads; x3: 153 KB, 256; x2:
   117 KB, 256), the persistent grid and tile walk of tail_mma. With no second CTA to compute while one stages,
   the staging is pipelined inside the CTA, along K:
   - Layout. s sits in shared memory as k8 planes [k-step][halo pixel][8 channels] (the natural channel order:
     logical k = t is channel 2t and t + 4 is 2t + 1, elan_ld_tf32x2's permutation), so lane (g, t) gets its
     B register pair (pixel g, channels 2t, 2t + 1) with one 8-byte load and a warp's load is 256 contiguous
     bytes at every tap offset: no bank conflicts. The weights sit in the A fragments' lane order
     [tap][k-step][m16 tile][lane][4] (elan_cuda_tail_tf32_weights arranges them): one conflict-free 16-byte load
     gives a lane its 4 A registers, in the order mma takes them. (With the pixels as A, the two 8-byte loads of
     an A fragment arrive as (a0, a2), (a1, a3) and cost 2.4 register moves per mma: 0.286 ms instead of 0.264
     at 960 x 540 x4, measured.)
   - Pipeline. k-step j of a tile reads plane j only. While the CTA computes k-step j of tile i, each thread has
     its loads of plane j of the CTA's next tile in flight (x and hb, 2 or 3 float4 pieces each); after the
     k-step's barrier it adds x_bias, rounds and stores them into plane j, now free. A tile's staging thus runs
     behind the previous tile's math; only a CTA's first tile is staged before any math (4 planes at a time).
     Each tile also starts by prefetching its successor's halo (x and hb) into L2, as tail_mma does.
   - Warps. Warp w owns tile rows 4 (w % 4) .. + 3, one m16 tile of outputs and both n8 tiles of its rows (x4:
     12 warps, x3: 8; x2, one m16 tile: 8 warps of one n8 tile each): 32 accumulators a lane. Per k-step and kx it
     loads the A fragments of its 3 ky taps, then walks the 6 halo rows its 4 output rows touch: the B fragment
     of halo row r serves output row r - ky for every ky. Per (k-step, kx) a warp moves 3 A + 12 B fragments
     (36 wavefronts) for 24 mma, 1.5 wavefronts per mma (x4, x3).
   Measured on the H100 at 960 x 540 x4 (C = 60): 0.25 ms, against 0.15 ms for the math alone (staging switched
   off) and 0.15 ms for the staging alone. Tried without gain: the loads one k-step further ahead (two register
   sets, 0.29 ms), a barrier every 2 or 4 k-steps (0.26), the L2 prefetch two tiles ahead (0.29) or none (0.25),
   8 warps of 4 rows x 8 columns x 48 outputs (0.26). Staging (32-byte runs of 240-byte pixel rows, ~20 L1
   wavefronts per warp load) and math share the SM's load / store unit, and with 8 to 12 warps neither hides the
   other's latency fully. x4 needs more shared memory than sm_80's 163 KB per block: elan_cuda_tail_tf32_supported
   says so there. */
#define TT_TILE 16
#define TT_HALO (TT_TILE + 2)
#define TT_HALO_N (TT_HALO * TT_HALO)
#define TT_K ELAN_CUDA_TAIL_MMA_K                  /* channels (C zero-padded) */
#define TT_KSTEPS (TT_K / 8)                       /* k8 planes */
#define TT_PLANE (TT_HALO_N * 8)                   /* floats of one plane of the halo */
#define TT_R 4                                     /* tile rows per warp */
#define TT_ITEMS (2 * TT_HALO_N)                   /* 4-channel pieces of one plane of the halo */
#define TT_PF_SLOTS 40                             /* 128-byte lines per halo row and tensor (37 at most) */

/* m16 tiles of outputs (3*s*s rounded up to 16); per warp one m16 tile and both n8 tiles of its rows (x3, x4), or
   the m16 tile and one n8 tile (x2, which has one m16 tile); warps: 4 row groups x the rest */
static __host__ __device__ constexpr int tail_tf32_mt(int S) { return (3 * S * S + 15) / 16; }
static __host__ __device__ constexpr int tail_tf32_wn(int S) { return tail_tf32_mt(S) >= 2 ? 2 : 1; }
static __host__ __device__ constexpr int tail_tf32_threads(int S) {
    return 32 * (TT_TILE / TT_R) * tail_tf32_mt(S) * (2 / tail_tf32_wn(S));
}
static constexpr size_t tail_tf32_smem(int S) {
    return ((size_t)TT_KSTEPS * TT_PLANE + (size_t)9 * TT_KSTEPS * tail_tf32_mt(S) * 128 + 16 * tail_tf32_mt(S) + TT_K) *
           sizeof(float);
}

/* Asks L2 for the bytes of x and hb under the halo of the tile at (img, ty0, tx0): per halo row, 40 slots of
   128-byte lines per tensor (18 pixels of at most 64 floats: 4608 bytes from a misaligned start, 37 lines);
   slots past a row's end do nothing. */
template <int THREADS>
static __device__ __forceinline__ void tail_tf32_prefetch(const float *x, const float *hb, int C, int img, int ty0,
                                                          int tx0, int Hp, int Wp) {
    const int p0 = max(tx0 - 1, 0), p1 = min(tx0 + TT_TILE + 1, Wp);
    for (int i = threadIdx.x; i < TT_HALO * 2 * TT_PF_SLOTS; i += THREADS) {
        const int py = ty0 - 1 + i / (2 * TT_PF_SLOTS), l = i % (2 * TT_PF_SLOTS);
        if (py < 0 || py >= Hp) continue;
        const int second = l >= TT_PF_SLOTS;
        const char *base = (const char *)((second ? hb : x) + (((size_t)img * Hp + py) * Wp + p0) * C);
        const size_t bytes = (size_t)(p1 - p0) * C * 4;
        const char *line = (const char *)((size_t)base & ~(size_t)127) + (size_t)(second ? l - TT_PF_SLOTS : l) * 128;
        if (line < base + bytes) elan_prefetch_l2(line);
    }
}

/* Plane j (channels 8j .. 8j + 7) of the halo of the tile at (img, ty0, tx0), from x and hb into registers: piece
   u of this thread is item i = tid + u * THREADS, channels 8j + 4 (i % 2) .. + 3 of halo pixel i / 2 (so a warp
   reads 16 pixels' 32-byte runs). Bit q * P + u of *live: the piece of plane j + q lies inside the padded image and
   below C (else it stays 0). NPL planes j .. j + NPL - 1 at once (those below C). */
template <int THREADS, int NPL, int P = (TT_ITEMS + THREADS - 1) / THREADS>
static __device__ __forceinline__ void tail_tf32_load(const elan_cuda_tail_args &a, int img, int ty0, int tx0, int j,
                                                      float4 (&xv)[NPL][P], float4 (&hv)[NPL][P], unsigned *live) {
    const size_t img_px = (size_t)img * a.Hp * a.Wp;
    *live = 0;
#pragma unroll
    for (int u = 0; u < P; u++) {
        const int i = (int)threadIdx.x + u * THREADS, hp = i >> 1;
        const int py = ty0 - 1 + hp / TT_HALO, px = tx0 - 1 + hp % TT_HALO;
        const bool in = i < TT_ITEMS && py >= 0 && py < a.Hp && px >= 0 && px < a.Wp;
        const size_t o = (img_px + (size_t)(in ? py : 0) * a.Wp + (in ? px : 0)) * a.C + 4 * (i & 1);
#pragma unroll
        for (int q = 0; q < NPL; q++) {
            const int c = 8 * (j + q) + 4 * (i & 1);
            xv[q][u] = hv[q][u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (in && c < a.C) {
                xv[q][u] = __ldg((const float4 *)(a.x + o + 8 * (j + q)));
                hv[q][u] = __ldg((const float4 *)(a.hb + o + 8 * (j + q)));
                *live |= 1u << (q * P + u);
            }
        }
    }
}

/* ... then s = tf32((x + x_bias) + hb) for the live pieces, 0 for the others, into planes j .. j + NPL - 1 below
   ksteps (item i of a plane is the 16 bytes at 4i: pixel i / 2, channels 4 (i % 2) ..). */
template <int THREADS, int NPL, int P = (TT_ITEMS + THREADS - 1) / THREADS>
static __device__ __forceinline__ void tail_tf32_store(float *halo, const float *xbs, int j, int ksteps,
                                                       const float4 (&xv)[NPL][P], const float4 (&hv)[NPL][P],
                                                       unsigned live) {
#pragma unroll
    for (int q = 0; q < NPL; q++) {
        if (j + q >= ksteps) break;
#pragma unroll
        for (int u = 0; u < P; u++) {
            const int i = (int)threadIdx.x + u * THREADS;
            if (i >= TT_ITEMS) break;
            float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (live >> (q * P + u) & 1u) {
                const float4 b = *(const float4 *)(xbs + 8 * (j + q) + 4 * (i & 1)), x = xv[q][u], h = hv[q][u];
                r = make_float4((x.x + b.x) + h.x, (x.y + b.y) + h.y, (x.z + b.z) + h.z, (x.w + b.w) + h.w);
            }
            *(uint4 *)(halo + (size_t)(j + q) * TT_PLANE + 4 * i) =
                make_uint4(elan_tf32(r.x), elan_tf32(r.y), elan_tf32(r.z), elan_tf32(r.w));
        }
    }
}

template <int S>
static __global__ void __launch_bounds__(tail_tf32_threads(S), 1) tail_tf32_kernel(elan_cuda_tail_args a) {
    constexpr int NOUT = 3 * S * S, MT = tail_tf32_mt(S), WN = tail_tf32_wn(S), THREADS = tail_tf32_threads(S);
    constexpr int P = (TT_ITEMS + THREADS - 1) / THREADS;
    extern __shared__ __align__(16) float tt_smem[];
    float *halo = tt_smem;                       /* [TT_KSTEPS][TT_HALO_N][8] */
    float *wsm = halo + TT_KSTEPS * TT_PLANE;    /* [9][TT_KSTEPS][MT][32 lanes][4] */
    float *bsm = wsm + 9 * TT_KSTEPS * MT * 128; /* [16 MT] */
    float *xbs = bsm + 16 * MT;                  /* [TT_K]: x_bias, 0 past C or without one */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int C = a.C, ksteps = (C + 7) / 8;

    /* the weights of the k-steps that hold channels, once; the first tile's barrier publishes them */
    {
        const int per_tap = ksteps * MT * 32; /* 16-byte pieces of a tap's used k-steps, contiguous */
        for (int i = tid; i < 9 * per_tap; i += THREADS) {
            const int tap = i / per_tap, off = tap * (TT_KSTEPS * MT * 128) + (i - tap * per_tap) * 4;
            elan_cp_async16(wsm + off, a.wt + off, 16);
        }
        elan_cp_async_commit();
    }
    for (int i = tid; i < 16 * MT; i += THREADS) bsm[i] = i < NOUT ? a.b[i] : 0.0f;
    for (int i = tid; i < TT_K; i += THREADS) xbs[i] = a.x_bias && i < C ? a.x_bias[i] : 0.0f;
    __syncthreads(); /* xbs, read by the first tile's staging */
    elan_pdl_wait(); /* x and hb of the last layer */

    const int tiles_x = (a.W + TT_TILE - 1) / TT_TILE, tiles_y = (a.H + TT_TILE - 1) / TT_TILE;
    const int ntiles = a.n * tiles_x * tiles_y; /* fits an int: checked at launch */
    const size_t OH = (size_t)a.H * S, OW = (size_t)a.W * S;

    /* the first tile, all planes, 4 planes' loads in flight at a time */
    if ((int)blockIdx.x < ntiles) {
        const int tile = blockIdx.x;
        const int tx0 = tile % tiles_x * TT_TILE, ty0 = tile / tiles_x % tiles_y * TT_TILE, img = tile / tiles_x / tiles_y;
        for (int j = 0; j < ksteps; j += 4) {
            float4 xv[4][P], hv[4][P];
            unsigned live;
            tail_tf32_load<THREADS, 4>(a, img, ty0, tx0, j, xv, hv, &live);
            tail_tf32_store<THREADS, 4>(halo, xbs, j, ksteps, xv, hv, live);
        }
    }
    elan_cp_async_wait_all();
    __syncthreads();

    /* warp: tile rows TT_R rg .. + TT_R - 1, outputs 16 mt .. + 15, columns 8 cn .. 8 (cn + WN) - 1 (WN n8 tiles a
       row). Lane addresses: B (pixels) rows are pixel g of the warp's first halo row and column, channels 2t,
       2t + 1 of plane 0; A (weights) is this lane's 16-byte fragment piece of m16 tile mt, tap 0, k-step 0. */
    const int rg = warp % (TT_TILE / TT_R), mt = warp / (TT_TILE / TT_R) % MT, cn = warp / (TT_TILE / TT_R) / MT * WN;
    const float *p_lane = halo + (rg * TT_R * TT_HALO + 8 * cn + g) * 8 + 2 * t;
    const float *w_lane = wsm + mt * 128 + lane * 4;

    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int tx0 = tile % tiles_x * TT_TILE, ty0 = tile / tiles_x % tiles_y * TT_TILE;
        const int img = tile / tiles_x / tiles_y;
        const int nt = tile + (int)gridDim.x;
        const bool has_next = nt < ntiles;
        const int ntx0 = nt % tiles_x * TT_TILE, nty0 = nt / tiles_x % tiles_y * TT_TILE, nimg = nt / tiles_x / tiles_y;
        if (has_next) tail_tf32_prefetch<THREADS>(a.x, a.hb, C, nimg, nty0, ntx0, a.Hp, a.Wp);

        /* acc[m][nn]: outputs 16 mt + g (regs 0, 1) and + 8 (regs 2, 3) of pixels 8 (cn + nn) + 2t, + 1 of row m */
        float acc[TT_R][WN][4];
        {
            const float b0 = bsm[16 * mt + g], b1 = bsm[16 * mt + g + 8];
#pragma unroll
            for (int m = 0; m < TT_R; m++)
#pragma unroll
                for (int nn = 0; nn < WN; nn++) acc[m][nn][0] = b0, acc[m][nn][1] = b0, acc[m][nn][2] = b1, acc[m][nn][3] = b1;
        }

#pragma unroll 1
        for (int j = 0; j < ksteps; j++) {
            float4 xv[1][P], hv[1][P];
            unsigned live = 0;
            if (has_next) tail_tf32_load<THREADS, 1>(a, nimg, nty0, ntx0, j, xv, hv, &live);

            const float *pp = p_lane + j * TT_PLANE, *wp = w_lane + j * MT * 128;
#pragma unroll
            for (int kx = 0; kx < 3; kx++) {
                unsigned af[3][4];
#pragma unroll
                for (int ky = 0; ky < 3; ky++) {
                    const uint4 v = *(const uint4 *)(wp + (ky * 3 + kx) * TT_KSTEPS * MT * 128);
                    af[ky][0] = v.x, af[ky][1] = v.y, af[ky][2] = v.z, af[ky][3] = v.w;
                }
#pragma unroll
                for (int hr = 0; hr < TT_R + 2; hr++) {
                    unsigned bf[WN][2];
#pragma unroll
                    for (int nn = 0; nn < WN; nn++) elan_ld_tf32x2(bf[nn], pp + (hr * TT_HALO + 8 * nn + kx) * 8);
#pragma unroll
                    for (int ky = 0; ky < 3; ky++) {
                        const int m = hr - ky; /* halo row hr, tap row ky -> output row m */
                        if (m < 0 || m >= TT_R) continue;
#pragma unroll
                        for (int nn = 0; nn < WN; nn++) elan_mma_tf32(acc[m][nn], af[ky], bf[nn]);
                    }
                }
            }
            __syncthreads(); /* every warp is done with plane j of this tile */
            if (has_next) {
                tail_tf32_store<THREADS, 1>(halo, xbs, j, ksteps, xv, hv, live);
                if (ksteps == 1) __syncthreads(); /* else later k-steps' barriers publish it */
            }
        }

        /* pixel shuffle + crop: output n = c*S*S + i*S + j of LR pixel (y, x) goes to row y*S + i, column x*S + j
           of channel c. Even S: lanes g and g ^ 1 (lane ^ 4) swap one value, so that each holds two adjacent
           outputs n, n + 1 (n = 16 mt + 8h + (g & ~1), same sub-pixel row) of one pixel, 2t + (g & 1): one float2
           store; a warp's store then covers 8 pixels x S floats of each of its sub-pixel rows, whole 32-byte
           sectors. S = 3: single floats (n, n + 1 may straddle two sub-pixel rows). */
#pragma unroll
        for (int m = 0; m < TT_R; m++) {
            const int y = ty0 + rg * TT_R + m;
            const bool row_in = y < a.H;
            float *orow = a.out + ((size_t)img * 3 * OH + (size_t)y * S) * OW;
#pragma unroll
            for (int nn = 0; nn < WN; nn++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float c0 = acc[m][nn][2 * h], c1 = acc[m][nn][2 * h + 1];
                    const int x0 = tx0 + 8 * (cn + nn) + 2 * t;
                    if constexpr (S % 2 == 0) {
                        const bool odd = g & 1;
                        const float r = __shfl_xor_sync(0xffffffffu, odd ? c0 : c1, 4);
                        const int n = 16 * mt + 8 * h + (g & ~1), x = x0 + (g & 1);
                        if (row_in && x < a.W && n < NOUT)
                            __stcs((float2 *)(orow + ((size_t)(n / (S * S)) * OH + n / S % S) * OW + (size_t)x * S + n % S),
                                   odd ? make_float2(r, c1) : make_float2(c0, r));
                    } else {
                        const int n = 16 * mt + 8 * h + g;
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (row_in && x0 + e < a.W && n < NOUT)
                                __stcs(orow + ((size_t)(n / (S * S)) * OH + n / S % S) * OW + (size_t)(x0 + e) * S + n % S,
                                       e ? c1 : c0);
                    }
                }
        }
    }
}

typedef void (*tail_tf32_fn)(elan_cuda_tail_args);

static tail_tf32_fn tail_tf32_pick(int C, int scale, size_t *smem, int *threads) {
    if (C < 4 || C > TT_K || C % 4) return NULL;
    switch (scale) {
    case 2: *smem = tail_tf32_smem(2), *threads = tail_tf32_threads(2); return tail_tf32_kernel<2>;
    case 3: *smem = tail_tf32_smem(3), *threads = tail_tf32_threads(3); return tail_tf32_kernel<3>;
    case 4: *smem = tail_tf32_smem(4), *threads = tail_tf32_threads(4); return tail_tf32_kernel<4>;
    default: return NULL;
    }
}

extern "C" int elan_cuda_tail_tf32_supported(int C, int scale) {
    size_t smem;
    int threads, dev = 0, optin = 0;
    if (!tail_tf32_pick(C, scale, &smem, &threads)) return -1;
    /* the current device must grant the shared memory (sm_90: 227 KB a block; sm_80: 163 KB, too little for x4) */
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return (size_t)optin >= smem ? 0 : -1;
}

extern "C" size_t elan_cuda_tail_tf32_weights_count(int scale) {
    return scale >= 2 && scale <= 4 ? (size_t)9 * TT_KSTEPS * tail_tf32_mt(scale) * 128 : 0;
}

/* v rounded to tf32 as cvt.rna.tf32.f32 does: to nearest on the 13 dropped bits, ties away from zero (the carry
   may reach the exponent, up to inf); inf and NaN kept (a NaN keeps a high mantissa bit, so it stays one). */
static float tail_tf32_round(float v) {
    unsigned u;
    memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u)
        u = (u & 0x007fffffu) ? (u | 0x00400000u) & 0xffffe000u : u;
    else
        u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&v, &u, 4);
    return v;
}

/* The A fragments of mma.m16n8k8.tf32 in lane order: for tap, k-step j and m16 tile mt, lane (g, t) holds
   a0 = W[16 mt + g][k], a1 = W[16 mt + g + 8][k], a2 = W[16 mt + g][k + 1], a3 = W[16 mt + g + 8][k + 1] with
   k = 8j + 2t (logical k columns t and t + 4 are channels 2t and 2t + 1, as the pixels' B fragments). */
extern "C" void elan_cuda_tail_tf32_weights(const float *w, int C, int scale, float *wt) {
    const int nout = 3 * scale * scale, npad = elan_cuda_tail_nout_pad(scale), mts = tail_tf32_mt(scale);
    for (int tap = 0; tap < 9; tap++)
        for (int j = 0; j < TT_KSTEPS; j++)
            for (int mt = 0; mt < mts; mt++)
                for (int l = 0; l < 32; l++)
                    for (int r = 0; r < 4; r++) {
                        const int n = 16 * mt + l / 4 + 8 * (r & 1), k = 8 * j + 2 * (l % 4) + (r >> 1);
                        wt[((((size_t)tap * TT_KSTEPS + j) * mts + mt) * 32 + l) * 4 + r] =
                            n < nout && k < C ? tail_tf32_round(w[((size_t)k * 9 + tap) * npad + n]) : 0.0f;
                    }
}

extern "C" cudaError_t elan_cuda_tail_tf32_prepare(int C, int scale) {
    size_t smem;
    int threads;
    const tail_tf32_fn f = tail_tf32_pick(C, scale, &smem, &threads);
    if (!f) return cudaErrorInvalidValue;
    return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" cudaError_t elan_cuda_tail_tf32(const elan_cuda_tail_args *a, cudaStream_t s) {
    size_t smem;
    int threads;
    const tail_tf32_fn f = tail_tf32_pick(a->C, a->scale, &smem, &threads);
    if (!f || !a->x || !a->hb || !a->wt || !a->b || !a->out || a->n < 0 || a->H < 0 || a->W < 0 || a->H > a->Hp ||
        a->W > a->Wp)
        return cudaErrorInvalidValue;
    /* float4 pieces of x and hb, 16-byte cp.async of wt, float2 stores of out for even scales (x_bias and b are
       read as floats) */
    if (((size_t)a->x & 15) || ((size_t)a->hb & 15) || ((size_t)a->wt & 15) || ((size_t)a->out & (a->scale % 2 ? 3 : 7)))
        return cudaErrorInvalidValue;
    const long long tiles = (long long)a->n * ((a->H + TT_TILE - 1) / TT_TILE) * ((a->W + TT_TILE - 1) / TT_TILE);
    if (tiles == 0) return cudaGetLastError();
    if (tiles > INT_MAX) return cudaErrorInvalidValue;
    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, threads, smem, &slots);
    if (e != cudaSuccess) return e;
    const long long grid = tiles < slots ? tiles : slots;
    return elan_launch_pdl(f, dim3((unsigned)grid), dim3(threads), smem, s, *a);
}
