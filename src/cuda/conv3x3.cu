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
   fp32 / tf32 and of the half modes with an fp32 residual stream; with the half residual stream, tail_mma (at
   the end of this file) computes it on tensor cores. */
#include "cuda_common.h"
#include "mma.h"

#include <limits.h>

#define TILE 16
#define HALO (TILE + 2)
#define HALO_N (HALO * HALO)

/* The tile's 256 pixels are walked one per warp and step; lane l owns the output channel pairs l, l + 32, ...
   (2 channels each), whose 2 x 27 weights it keeps in registers, and reads its pixel's 27 input values (3
   channels x 3x3 taps, sub_mean applied) from shared memory as broadcasts. A warp's stores then cover one
   pixel's channels contiguously (coalesced, like the NHWC order the layout asks for), and no lane divides
   an index. Each output is bias + the 27 products in the order (channel, ky, kx), as the CPU head sums them.
   (Measured on the H100 at 960x540: a thread per (pixel, channel) in NHWC order, 54 scalar shared loads per
   output, took 285 us; a thread per pixel looping over the channels, 901 us: its stores hit 32 pixels' rows
   at once.) */
template <typename T>
static __global__ void __launch_bounds__(256) head_kernel(elan_cuda_head_args a) {
    extern __shared__ float smem[];
    float *halo = smem;            /* [3][HALO_N] */
    float *sm = halo + 3 * HALO_N; /* 12 */
    const int C = a.C, CP = (C + 1) / 2;
    const int tiles_x = a.Wp / TILE, tiles_y = a.Hp / TILE;
    const int tile = blockIdx.x;
    const int tx0 = (tile % tiles_x) * TILE;
    const int ty0 = (tile / tiles_x % tiles_y) * TILE;
    const int img = tile / tiles_x / tiles_y;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    for (int i = tid; i < 12; i += blockDim.x) sm[i] = a.sub_mean[i];
    __syncthreads();
    elan_pdl_wait(); /* the input (and, for x / hb / xh, the previous forward's readers) */

    const size_t plane = (size_t)a.H * a.W;
    const float *in = a.in + (size_t)img * 3 * plane;
    for (int i = tid; i < HALO_N; i += blockDim.x) {
        const int py = ty0 + i / HALO - 1, px = tx0 + i % HALO - 1;
        float v0 = 0.0f, v1 = 0.0f, v2 = 0.0f;
        if (py >= 0 && py < a.Hp && px >= 0 && px < a.Wp) {
            const size_t o = (size_t)a.mirror_y[py] * a.W + a.mirror_x[px];
            const float r = in[o], g = in[plane + o], b = in[2 * plane + o];
            v0 = sm[9] + sm[0] * r + sm[1] * g + sm[2] * b;
            v1 = sm[10] + sm[3] * r + sm[4] * g + sm[5] * b;
            v2 = sm[11] + sm[6] * r + sm[7] * g + sm[8] * b;
        }
        halo[i] = v0;
        halo[HALO_N + i] = v1;
        halo[2 * HALO_N + i] = v2;
    }
    __syncthreads();

    const bool pairs = C % 2 == 0; /* 8-byte (x, hb) and 4-byte (xh) pair stores stay aligned */
    const size_t tile_px = ((size_t)img * a.Hp + ty0) * a.Wp + tx0;
#pragma unroll 1
    for (int j = lane; j - lane < CP; j += 32) {
        const bool live = j < CP;
        const int c0 = 2 * j, c1 = min(2 * j + 1, C - 1); /* odd C: the last pair computes channel C-1 twice */
        float w0[27], w1[27];
#pragma unroll
        for (int k = 0; k < 27; k++) {
            w0[k] = live ? a.w[c0 * 27 + k] : 0.0f;
            w1[k] = live ? a.w[c1 * 27 + k] : 0.0f;
        }
        const float b0 = live ? a.b[c0] : 0.0f, b1 = live ? a.b[c1] : 0.0f;
#pragma unroll 1
        for (int p = warp; p < TILE * TILE; p += 8) {
            const int ly = p / TILE, lx = p % TILE;
            float acc0 = b0, acc1 = b1;
#pragma unroll
            for (int c = 0; c < 3; c++)
#pragma unroll
                for (int ky = 0; ky < 3; ky++)
#pragma unroll
                    for (int kx = 0; kx < 3; kx++) {
                        const float v = halo[c * HALO_N + (ly + ky) * HALO + lx + kx];
                        acc0 += v * w0[c * 9 + ky * 3 + kx];
                        acc1 += v * w1[c * 9 + ky * 3 + kx];
                    }
            if (!live) continue;
            const size_t o = (tile_px + (size_t)ly * a.Wp + lx) * C + c0;
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

extern "C" size_t elan_cuda_head_smem(int C) {
    (void)C;
    return (size_t)(3 * HALO_N + 12) * sizeof(float);
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
    if (!a->xh || a->act == ELAN_ACT_F32)
        return elan_launch_pdl(head_kernel<float>, dim3((unsigned)tiles), dim3(256), smem, s, *a);
    if (a->act == ELAN_ACT_F16)
        return elan_launch_pdl(head_kernel<__half>, dim3((unsigned)tiles), dim3(256), smem, s, *a);
    if (a->act == ELAN_ACT_BF16)
        return elan_launch_pdl(head_kernel<__nv_bfloat16>, dim3((unsigned)tiles), dim3(256), smem, s, *a);
    return cudaErrorInvalidValue;
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
