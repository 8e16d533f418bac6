/* lfe.cu — the non-GEMM parts of LFE (x + c1(relu(c0(x))), each ShiftConv = shift, then 1x1 conv).

   The 1x1 convs are cuBLAS GEMMs over all pixels (cuda_backend.cu). What is left is the shift: channel c of
   pixel (y, x) takes the value of pixel (y + ky - 1, x + kx - 1) for its tap ky*3 + kx, zero outside the padded
   image. It is a pure gather in NHWC: one thread per output element, consecutive threads on consecutive
   channels of a pixel, so both the writes and (within each of the 5 channel groups) the reads are contiguous.
   The second ShiftConv's input is relu(c0 + bias): bias and ReLU are applied here while gathering, before
   the zero fill, because the network pads the ReLU output, not the GEMM output.

   bias_add finishes the GEMMs that accumulate into the residual stream (beta = 1): cuBLAS's plain SGEMM has
   no bias epilogue. */
#include "cuda_common.h"

/* Index arithmetic in I: unsigned 32-bit whenever the tensor has fewer than 2^31 elements (every realistic
   size), because a 64-bit division per element costs more than the element's memory traffic. */
template <typename I>
static __global__ void __launch_bounds__(256) shift_kernel(elan_cuda_shift_args a) {
    const I total = (I)a.pixels * (I)a.cin, cin = (I)a.cin, Hp = (I)a.Hp, Wp = (I)a.Wp;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        const I p = e / cin;
        const I c = e - p * cin;
        const int x = (int)(p % Wp), y = (int)(p / Wp % Hp);
        const int t = a.tap[c];
        const int dy = t / 3 - 1, dx = t % 3 - 1;
        float v = 0.0f;
        if (y + dy >= 0 && y + dy < a.Hp && x + dx >= 0 && x + dx < a.Wp) {
            v = a.in[((long long)p + (long long)dy * a.Wp + dx) * a.cin + (long long)c];
            if (a.bias) v = fmaxf(v + a.bias[c], 0.0f);
        }
        a.out[e] = v;
    }
}

/* Below this many elements the grid-stride loop cannot wrap an unsigned 32-bit index (stride <= 2^24). */
#define SMALL_INDEX (1LL << 31)

extern "C" cudaError_t elan_cuda_shift(const elan_cuda_shift_args *a, cudaStream_t s) {
    const long long total = a->pixels * a->cin;
    if (total < SMALL_INDEX)
        shift_kernel<unsigned><<<elan_cuda_grid(total, 256), 256, 0, s>>>(*a);
    else
        shift_kernel<long long><<<elan_cuda_grid(total, 256), 256, 0, s>>>(*a);
    return cudaGetLastError();
}

template <typename I>
static __global__ void __launch_bounds__(256) bias_add_kernel(float *x, const float *b, int C, long long total) {
    const I n = (I)total, c = (I)C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (I)gridDim.x * blockDim.x) x[e] += b[e % c];
}

extern "C" cudaError_t elan_cuda_bias_add(float *x, const float *b, int C, long long pixels, cudaStream_t s) {
    const long long total = pixels * C;
    if (total < SMALL_INDEX)
        bias_add_kernel<unsigned><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, C, total);
    else
        bias_add_kernel<long long><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, C, total);
    return cudaGetLastError();
}
