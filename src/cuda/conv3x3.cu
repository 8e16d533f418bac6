/* conv3x3.cu — the two dense 3x3 convolutions at the ends of ELAN, each fused with the cheap per-pixel
   steps around it so that no intermediate image makes a round trip through device memory.

   head: padded pixel (y, x) reads the input at (mirror_y[y], mirror_x[x]) — index tables the backend fills
   with elan_mirror_index, so the GPU pads exactly as the CPU does — applies sub_mean, and convolves 3 -> C
   with zero padding at the border of the padded image. A block owns a 16x16 tile (the padded sizes are
   multiples of 16, so tiles never straddle the edge): its 18x18x3 halo and all C*27 weights sit in shared
   memory, and the 256 threads walk the tile's 256*C outputs in NHWC order, so consecutive threads write
   consecutive addresses. In fp16/bf16 the head also writes xh, the half copy of x that the first GEMM and
   shift read (template T; T = float writes no copy).

   tail: (x + hb) -> 3x3 conv C -> 3*s*s -> pixel shuffle -> add_mean -> crop, straight into the NCHW output.
   add_mean is a 3x3 channel mix of each output pixel and is folded into the weights at creation. Only the
   cropped H x W pixels are computed (their 3x3 neighbourhood still reaches into the padding, which holds real
   activations). One thread owns one LR pixel and all its 3*s*s outputs in registers; the input channels are
   streamed through shared memory in chunks of TAIL_CC, stored channel-major so that neighbouring threads read
   neighbouring banks, and the weights are laid out [cin][tap][out] so each thread reads them as float4
   broadcasts. The tail is ~3% of the network's work; this is simple rather than fast. */
#include "cuda_common.h"

#define TILE 16
#define HALO (TILE + 2)
#define HALO_N (HALO * HALO)

template <typename T>
static __global__ void __launch_bounds__(256) head_kernel(elan_cuda_head_args a) {
    extern __shared__ float smem[];
    float *halo = smem;                 /* [3][HALO_N] */
    float *sm = halo + 3 * HALO_N;      /* 12 */
    float *ws = sm + 12;                /* C*27 */
    float *bs = ws + a.C * 27;          /* C */
    const int C = a.C;
    const int tiles_x = a.Wp / TILE, tiles_y = a.Hp / TILE;
    const int tile = blockIdx.x;
    const int tx0 = (tile % tiles_x) * TILE;
    const int ty0 = (tile / tiles_x % tiles_y) * TILE;
    const int img = tile / tiles_x / tiles_y;
    const int tid = threadIdx.x;

    for (int i = tid; i < 12; i += blockDim.x) sm[i] = a.sub_mean[i];
    for (int i = tid; i < C * 27; i += blockDim.x) ws[i] = a.w[i];
    for (int i = tid; i < C; i += blockDim.x) bs[i] = a.b[i];
    __syncthreads();

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

    for (int idx = tid; idx < TILE * TILE * C; idx += blockDim.x) {
        const int p = idx / C, oc = idx - p * C;
        const int ly = p / TILE, lx = p % TILE;
        const float *w = ws + oc * 27;
        float acc = bs[oc];
#pragma unroll
        for (int c = 0; c < 3; c++)
#pragma unroll
            for (int ky = 0; ky < 3; ky++)
#pragma unroll
                for (int kx = 0; kx < 3; kx++)
                    acc += halo[c * HALO_N + (ly + ky) * HALO + lx + kx] * w[c * 9 + ky * 3 + kx];
        const size_t o = (((size_t)img * a.Hp + ty0 + ly) * a.Wp + tx0 + lx) * C + oc;
        a.x[o] = acc;
        a.hb[o] = acc;
        if constexpr (sizeof(T) == 2) ((T *)a.xh)[o] = elan_from_f<T>(acc);
    }
}

extern "C" size_t elan_cuda_head_smem(int C) { return (size_t)(3 * HALO_N + 12 + C * 28) * sizeof(float); }

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
        head_kernel<float><<<(unsigned)tiles, 256, smem, s>>>(*a);
    else if (a->act == ELAN_ACT_F16)
        head_kernel<__half><<<(unsigned)tiles, 256, smem, s>>>(*a);
    else if (a->act == ELAN_ACT_BF16)
        head_kernel<__nv_bfloat16><<<(unsigned)tiles, 256, smem, s>>>(*a);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
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
