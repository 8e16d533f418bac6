/* lfe.cu — the non-GEMM parts of LFE (x + c1(relu(c0(x))), each ShiftConv = shift, then 1x1 conv).

   The 1x1 convs are cuBLAS GEMMs over all pixels (cuda_backend.cu). What is left is the shift: channel c of
   pixel (y, x) takes the value of pixel (y + ky - 1, x + kx - 1) for its tap ky*3 + kx, zero outside the padded
   image. It is a pure gather in NHWC: one thread per output element, consecutive threads on consecutive
   channels of a pixel, so both the writes and (within each of the 5 channel groups) the reads are contiguous.
   The second ShiftConv's input is relu(c0 + bias): bias and ReLU are applied here while gathering, before
   the zero fill, because the network pads the ReLU output, not the GEMM output. The first one's input in
   fp32 / tf32 is x + B (no ReLU): the residual stream is kept as x - B, B the sum of the c1 and project_out
   biases so far, and B goes back in here, before the zero fill too (the network pads x itself).

   bias_add adds a 1x1 conv's bias to the residual stream after a GEMM that accumulated into it (beta = 1):
   cuBLAS's plain SGEMM has no bias epilogue. It is a full read and write of x, and after each c1 and
   project_out that was 48 passes per ELAN-light forward (4.8 ms of a 44-54 ms forward of a 960x540 input on
   an H100), so fp32 / tf32 carry the biases instead (cuda_backend.cu) and call it once, with their sum,
   before the tail. In fp16/bf16 (unfused path) the residual stream stays float and bias_add after each GEMM
   also refreshes its half copy xh, which the next GEMM and shift read: that pass is needed anyway, so the
   copy costs only its write.

   Both kernels are templated on the activation storage type T (float, __half, __nv_bfloat16); math is fp32. */
#include "cuda_common.h"

/* Index arithmetic in I: unsigned 32-bit whenever the tensor has fewer than 2^31 elements (every realistic
   size), because a 64-bit division per element costs more than the element's memory traffic. */
template <typename I, typename T>
static __global__ void __launch_bounds__(256) shift_kernel(elan_cuda_shift_args a) {
    const T *in = (const T *)a.in;
    T *out = (T *)a.out;
    const I total = (I)a.pixels * (I)a.cin, cin = (I)a.cin, Hp = (I)a.Hp, Wp = (I)a.Wp;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        const I p = e / cin;
        const I c = e - p * cin;
        const int x = (int)(p % Wp), y = (int)(p / Wp % Hp);
        const int t = a.tap[c];
        const int dy = t / 3 - 1, dx = t % 3 - 1;
        float v = 0.0f;
        if (y + dy >= 0 && y + dy < a.Hp && x + dx >= 0 && x + dx < a.Wp) {
            v = elan_to_f(in[((long long)p + (long long)dy * a.Wp + dx) * a.cin + (long long)c]);
            if (a.bias) {
                v += a.bias[c];
                if (a.relu) v = fmaxf(v, 0.0f);
            }
        }
        out[e] = elan_from_f<T>(v);
    }
}

/* The same gather 4 channels per thread (a.quads): one 16-byte (float) or 8-byte (half) load and store, and
   a quarter of the index arithmetic. */
template <typename I, typename T>
static __global__ void __launch_bounds__(256) shift4_kernel(elan_cuda_shift_args a) {
    const T *in = (const T *)a.in;
    T *out = (T *)a.out;
    const I cq = (I)(a.cin / 4), total = (I)a.pixels * cq, Hp = (I)a.Hp, Wp = (I)a.Wp;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        const I p = e / cq;
        const int c = (int)(e - p * cq) * 4;
        const int x = (int)(p % Wp), y = (int)(p / Wp % Hp);
        const int t = a.tap[c];
        const int dy = t / 3 - 1, dx = t % 3 - 1;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (y + dy >= 0 && y + dy < a.Hp && x + dx >= 0 && x + dx < a.Wp) {
            v = elan_ld4(in + ((long long)p + (long long)dy * a.Wp + dx) * a.cin + c);
            if (a.bias) {
                const float4 b = *(const float4 *)(a.bias + c);
                v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
                if (a.relu) v.x = fmaxf(v.x, 0.0f), v.y = fmaxf(v.y, 0.0f), v.z = fmaxf(v.z, 0.0f), v.w = fmaxf(v.w, 0.0f);
            }
        }
        elan_st4(out + (long long)p * a.cin + c, v);
    }
}

/* Below this many elements the grid-stride loop cannot wrap an unsigned 32-bit index (stride <= 2^24). */
#define SMALL_INDEX (1LL << 31)

template <typename T>
static void shift_launch(const elan_cuda_shift_args *a, cudaStream_t s) {
    const long long total = a->pixels * a->cin;
    if (a->quads && a->cin % 4 == 0 && ((size_t)a->in & 15) == 0 && ((size_t)a->out & 15) == 0 &&
        (!a->bias || ((size_t)a->bias & 15) == 0)) {
        if (total < SMALL_INDEX)
            shift4_kernel<unsigned, T><<<elan_cuda_grid(total / 4, 256), 256, 0, s>>>(*a);
        else
            shift4_kernel<long long, T><<<elan_cuda_grid(total / 4, 256), 256, 0, s>>>(*a);
    } else if (total < SMALL_INDEX)
        shift_kernel<unsigned, T><<<elan_cuda_grid(total, 256), 256, 0, s>>>(*a);
    else
        shift_kernel<long long, T><<<elan_cuda_grid(total, 256), 256, 0, s>>>(*a);
}

extern "C" cudaError_t elan_cuda_shift(const elan_cuda_shift_args *a, cudaStream_t s) {
    switch (a->act) {
    case ELAN_ACT_F32: shift_launch<float>(a, s); break;
    case ELAN_ACT_F16: shift_launch<__half>(a, s); break;
    case ELAN_ACT_BF16: shift_launch<__nv_bfloat16>(a, s); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <typename I>
static __global__ void __launch_bounds__(256) bias_add_kernel(float *x, const float *b, int C, long long total) {
    const I n = (I)total, c = (I)C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (I)gridDim.x * blockDim.x) x[e] += b[e % c];
}

template <typename I, typename T>
static __global__ void __launch_bounds__(256) bias_add_cast_kernel(float *x, const float *b, T *xh, int C, long long total) {
    const I n = (I)total, c = (I)C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (I)gridDim.x * blockDim.x) {
        const float v = x[e] + b[e % c];
        x[e] = v;
        xh[e] = elan_from_f<T>(v);
    }
}

/* 4 channels per thread when C % 4 == 0: float4 x and bias, one 8-byte store of xh. */
template <typename I, typename T>
static __global__ void __launch_bounds__(256) bias_add_cast4_kernel(float *x, const float *b, T *xh, int C, long long total) {
    const I n = (I)(total / 4), cq = (I)(C / 4);
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (I)gridDim.x * blockDim.x) {
        float4 v = ((float4 *)x)[e];
        const float4 bb = ((const float4 *)b)[e % cq];
        v.x += bb.x, v.y += bb.y, v.z += bb.z, v.w += bb.w;
        ((float4 *)x)[e] = v;
        elan_st4(xh + 4 * (long long)e, v);
    }
}

template <typename T>
static void bias_add_cast(float *x, const float *b, void *xh, int C, long long total, cudaStream_t s) {
    if (C % 4 == 0 && ((size_t)x & 15) == 0 && ((size_t)b & 15) == 0 && ((size_t)xh & 7) == 0) {
        if (total < SMALL_INDEX)
            bias_add_cast4_kernel<unsigned, T><<<elan_cuda_grid(total / 4, 256), 256, 0, s>>>(x, b, (T *)xh, C, total);
        else
            bias_add_cast4_kernel<long long, T><<<elan_cuda_grid(total / 4, 256), 256, 0, s>>>(x, b, (T *)xh, C, total);
    } else if (total < SMALL_INDEX)
        bias_add_cast_kernel<unsigned, T><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, (T *)xh, C, total);
    else
        bias_add_cast_kernel<long long, T><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, (T *)xh, C, total);
}

extern "C" cudaError_t elan_cuda_bias_add(float *x, const float *b, void *xh, int act, int C, long long pixels,
                                          cudaStream_t s) {
    const long long total = pixels * C;
    if (!xh || act == ELAN_ACT_F32) {
        if (total < SMALL_INDEX)
            bias_add_kernel<unsigned><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, C, total);
        else
            bias_add_kernel<long long><<<elan_cuda_grid(total, 256), 256, 0, s>>>(x, b, C, total);
    } else if (act == ELAN_ACT_F16) {
        bias_add_cast<__half>(x, b, xh, C, total, s);
    } else if (act == ELAN_ACT_BF16) {
        bias_add_cast<__nv_bfloat16>(x, b, xh, C, total, s);
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* The half residual stream (fp16 mode) back to fp32 for the tail, which reads x: one pass, 6 bytes an element. */
template <typename T>
static __global__ void __launch_bounds__(256) to_f32_kernel(const T *xh, float *x, long long total) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x)
        x[e] = elan_to_f(xh[e]);
}

extern "C" cudaError_t elan_cuda_to_f32(const void *xh, float *x, int act, long long count, cudaStream_t s) {
    if (count <= 0) return cudaSuccess;
    if (act == ELAN_ACT_F16)
        to_f32_kernel<__half><<<elan_cuda_grid(count, 256), 256, 0, s>>>((const __half *)xh, x, count);
    else if (act == ELAN_ACT_BF16)
        to_f32_kernel<__nv_bfloat16><<<elan_cuda_grid(count, 256), 256, 0, s>>>((const __nv_bfloat16 *)xh, x, count);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}
