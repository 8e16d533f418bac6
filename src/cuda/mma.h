/* mma.h — the warp-level tensor-core primitives the fused kernels share: mma.sync m16n8k16 with fp32
   accumulation (fp16 or bf16 inputs), m16n8k8 in tf32, ldmatrix, and packing two floats into one 32-bit
   register of halves.

   Fragment layout of mma.m16n8k16 (PTX ISA, "Matrix fragments for mma.m16n8k16"), with g = lane / 4 and
   t = lane % 4:
     A (16 x 16, row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
     B (16 x 8, "col"):      b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
     C/D (16 x 8, fp32):     c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
   So the accumulator of two adjacent n8 tiles is, register for register, an A fragment of a following mma whose
   k runs over those 16 columns (the flash-attention trick used in gmsa.cu), and a B operand whose k index is
   contiguous in memory (B[k][n] = W[n][k] with W row-major, as PyTorch stores conv weights) is loaded with
   plain ldmatrix, while one whose n index is contiguous (V[key][channel]) needs ldmatrix.trans.

   Everything here needs sm_80 or newer (the backend is built for sm_80 and sm_90). */
#ifndef ELANSR_CUDA_MMA_H
#define ELANSR_CUDA_MMA_H

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

/* D = A * B + D; T selects the input type (__half or __nv_bfloat16). */
template <typename T> static __device__ __forceinline__ void elan_mma16816(float d[4], const unsigned a[4], const unsigned b[2]);
template <>
__device__ __forceinline__ void elan_mma16816<__half>(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void elan_mma16816<__nv_bfloat16>(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* D = A * B + D with k = 8 (a K remainder of 8): A (16 x 8) is a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], i.e. the
   first half of an m16n8k16 A fragment; B (8 x 8) is b0 = B[2t..2t+1][g]; C/D as for m16n8k16. */
template <typename T> static __device__ __forceinline__ void elan_mma1688(float d[4], const unsigned a[2], unsigned b);
template <>
__device__ __forceinline__ void elan_mma1688<__half>(float d[4], const unsigned a[2], unsigned b) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
}
template <>
__device__ __forceinline__ void elan_mma1688<__nv_bfloat16>(float d[4], const unsigned a[2], unsigned b) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
}

/* D = A * B + D, m16n8k8 with tf32 inputs and fp32 accumulation (precision TF32). Each register holds one fp32
   bit pattern, of which the tensor core reads the tf32 part (sign, exponent, 10 mantissa bits): round it first
   with elan_tf32. Layout (PTX ISA, "m16n8k8 .tf32"): a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4],
   a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]; C/D as for m16n8k16. */
static __device__ __forceinline__ void elan_mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* A tf32 fragment register pair from two consecutive floats of shared memory (already rounded), one 8-byte load:
   with the k columns of a step permuted so that logical k = t is element 2t and t + 4 is 2t + 1 (for A and B
   alike, which leaves the product unchanged), every pair a lane needs (a0 / a2, a1 / a3, b0 / b1) is contiguous. */
static __device__ __forceinline__ void elan_ld_tf32x2(unsigned r[2], const float *p) {
    const float2 v = *(const float2 *)p;
    r[0] = __float_as_uint(v.x), r[1] = __float_as_uint(v.y);
}

/* x rounded to tf32 (to nearest, ties away from zero: cvt.rna), as an fp32 bit pattern with 13 zero low bits. */
static __device__ __forceinline__ unsigned elan_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

static __device__ __forceinline__ unsigned elan_smem_addr(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

/* ldmatrix: lane l gives the address of row (l % 8) of matrix l / 8; each 8 x 8 matrix of 16-bit elements
   arrives as one register per lane holding row l / 4, elements 2(l % 4) and 2(l % 4) + 1 (after .trans: of the
   transposed matrix). Rows must be 16-byte aligned. */
static __device__ __forceinline__ void elan_ldsm_x4(unsigned r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(elan_smem_addr(row)));
}
static __device__ __forceinline__ void elan_ldsm_x2(unsigned r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(elan_smem_addr(row)));
}
static __device__ __forceinline__ void elan_ldsm_x4_trans(unsigned r[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(elan_smem_addr(row)));
}
static __device__ __forceinline__ void elan_ldsm_x2_trans(unsigned r[2], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(elan_smem_addr(row)));
}

/* Two floats as one register of two 16-bit values (lo in the low half), round to nearest; fp16 saturates. */
template <typename T> static __device__ __forceinline__ unsigned elan_pack2(float lo, float hi);
template <> __device__ __forceinline__ unsigned elan_pack2<__half>(float lo, float hi) {
    const __half2 h = __floats2half2_rn(fminf(fmaxf(lo, -65504.0f), 65504.0f), fminf(fmaxf(hi, -65504.0f), 65504.0f));
    return *(const unsigned *)&h;
}
template <> __device__ __forceinline__ unsigned elan_pack2<__nv_bfloat16>(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(const unsigned *)&h;
}

/* The reverse of elan_pack2: one register of two 16-bit values as two floats (exact). */
template <typename T> static __device__ __forceinline__ float2 elan_unpack2(unsigned v);
template <> __device__ __forceinline__ float2 elan_unpack2<__half>(unsigned v) {
    return make_float2(__half2float(__ushort_as_half((unsigned short)(v & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(v >> 16))));
}
template <> __device__ __forceinline__ float2 elan_unpack2<__nv_bfloat16>(unsigned v) {
    return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

/* 2^lo, 2^hi rounded to fp16 and exponentiated in fp16 on the special-function unit (one MUFU.EX2 for both),
   as one register of two halves (lo in the low half): an A fragment element pair. */
static __device__ __forceinline__ unsigned elan_exp2_h2(float lo, float hi) {
    unsigned y; /* cvt.rn.f16x2.f32 d, a, b puts a in the upper half */
    asm("{\n .reg .b32 t;\n cvt.rn.f16x2.f32 t, %2, %1;\n ex2.approx.f16x2 %0, t;\n}\n" : "=r"(y) : "f"(lo), "f"(hi));
    return y;
}

/* 2^x on the special-function unit (one MUFU.EX2; relative error ~2^-22, flushes denormal results to 0). */
static __device__ __forceinline__ float elan_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
/* Two floats as two 16-bit values in one register (lo in the low half), round to nearest, in one cvt:
   elan_pack2_out rounds exactly as elan_from_f of cuda_common.h (fp16: +-inf and overflow saturate to +-65504,
   NaN stays NaN; bf16: plain rounding), elan_pack2_relu first clamps negatives to 0 (.relu; a NaN input gives
   NaN there, not 0). */
template <typename T> static __device__ __forceinline__ unsigned elan_pack2_out(float lo, float hi);
template <> __device__ __forceinline__ unsigned elan_pack2_out<__half>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ unsigned elan_pack2_out<__nv_bfloat16>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <typename T> static __device__ __forceinline__ unsigned elan_pack2_relu(float lo, float hi);
template <> __device__ __forceinline__ unsigned elan_pack2_relu<__half>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.relu.satfinite.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ unsigned elan_pack2_relu<__nv_bfloat16>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* cp.async of 8 bytes global -> shared; bytes = 0 writes 8 zero bytes and reads nothing. commit / wait_all close
   and drain the groups. */
static __device__ __forceinline__ void elan_cp_async8(void *dst, const void *src, unsigned bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(elan_smem_addr(dst)),
                 "l"((unsigned long long)__cvta_generic_to_global(src)), "r"(bytes)
                 : "memory");
}
/* The same for 16 bytes (dst and src 16-byte aligned), through L2 only; bytes = 0 writes 16 zero bytes. */
static __device__ __forceinline__ void elan_cp_async16(void *dst, const void *src, unsigned bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(elan_smem_addr(dst)),
                 "l"((unsigned long long)__cvta_generic_to_global(src)), "r"(bytes)
                 : "memory");
}
static __device__ __forceinline__ void elan_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void elan_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
/* Waits until at most N of this thread's committed groups are still in flight (N a compile-time constant). */
template <int N>
static __device__ __forceinline__ void elan_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* Element (n, k) of an R x K operand (R a multiple of 8) in the wgmma core-matrix layout without swizzle: 8 x 8
   blocks of 128 contiguous bytes (8 rows of 8 k), the blocks of one 8-column k group side by side along n
   (128 bytes apart: the descriptor's stride offset), the k groups R * 16 bytes apart (its leading offset). */
static __device__ __forceinline__ int elan_core_off(int n, int k, int R) {
    return ((k >> 3) * (R >> 3) + (n >> 3)) * 64 + (n & 7) * 8 + (k & 7);
}

/* Stages an [rows][cols] matrix of 16-bit elements (weights, row-major, 2-byte aligned) into shared memory as
   R rows of K elements at a stride of dst_stride, zero past rows / cols: dst[n][k] = src[n][k]. Each thread keeps
   8 loads in flight (CORE: in elan_core_off's layout instead, dst_stride unused): a plain strided loop stores
   every loaded value before its next load issues, so a CTA waits one L2 latency per element it stages (66 of
   them per thread for an LFE's weights: ~25 us, most of a small image's LFE launch). Where every run of 4
   elements is whole on both sides (cols, K and the stride multiples of 4, src and dst 8-byte aligned: ELAN's
   shapes), it moves 8-byte pieces instead, 4x fewer loads (an LFE's 16384 weights: 8 pieces per thread, one L2
   latency), and 16-bit elements only otherwise. */
template <int THREADS, int K, bool CORE = false>
static __device__ __forceinline__ void elan_stage_w16(unsigned short *dst, int dst_stride, const unsigned short *src,
                                                      int rows, int cols, int R) {
    constexpr int U = 8;
    const bool whole4 = K % 4 == 0 && cols % 4 == 0 && (CORE || dst_stride % 4 == 0);
    if (whole4 && ((size_t)src & 7) == 0 && ((size_t)dst & 7) == 0) {
        constexpr int K4 = K / 4;
        const int total4 = R * K4;
        for (int e0 = (int)threadIdx.x; e0 < total4; e0 += U * THREADS) {
            uint2 v[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int e = e0 + u * THREADS, n = e / K4, k = (e - n * K4) * 4;
                v[u] = e < total4 && n < rows && k < cols ? __ldg((const uint2 *)(src + n * cols + k)) : make_uint2(0, 0);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int e = e0 + u * THREADS, n = e / K4, k = (e - n * K4) * 4;
                if (e < total4) *(uint2 *)(dst + (CORE ? elan_core_off(n, k, R) : n * dst_stride + k)) = v[u];
            }
        }
        return;
    }
    const int total = R * K;
    for (int e0 = (int)threadIdx.x; e0 < total; e0 += U * THREADS) {
        unsigned short v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * THREADS, n = e / K, k = e - n * K;
            v[u] = e < total && n < rows && k < cols ? __ldg(src + n * cols + k) : (unsigned short)0;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * THREADS, n = e / K, k = e - n * K;
            if (e < total) dst[CORE ? elan_core_off(n, k, R) : n * dst_stride + k] = v[u];
        }
    }
}

/* ---- wgmma (sm_90a only: compiled where __CUDA_ARCH_FEAT_SM90_ALL is defined) ----
   wgmma.mma_async m64n64k16, fp32 accumulators, A from registers, B from shared memory through a descriptor.
   The four warps of a warpgroup (warps 4h .. 4h+3) issue it together; warp i holds rows 16i .. 16i+15 of the
   64 x 16 A and of the 64 x 64 D, each in mma.m16n8k16's layout (above): a[0..3] as A there, d[j][0..3] as the
   C/D fragment of the n8 tile j. So a warp's ldmatrix A fragments and its epilogue are those of mma.sync.
   B (16 x 64) is K-major: n rows of k, in elan_core_off's layout with R = 64 rows per k group. The instruction
   runs asynchronously: wgmma_fence orders earlier register writes (A, D) before it, wgmma_commit closes a
   group, wgmma_wait<N> returns when at most N groups are in flight; D may not be touched in between. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ELAN_HAVE_WGMMA 1
/* Descriptor of a no-swizzle K-major operand at shared address addr: lbo = bytes between k groups, sbo = bytes
   between 8-row groups (both multiples of 16). */
static __device__ __forceinline__ unsigned long long elan_wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (unsigned long long)(lbo >> 4) << 16 |
           (unsigned long long)(sbo >> 4) << 32;
}
static __device__ __forceinline__ void elan_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void elan_wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void elan_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Generic-proxy writes of shared memory (st.shared, cp.async) made visible to wgmma's operand reads: after the
   writes, before the barrier that precedes the wgmma. */
static __device__ __forceinline__ void elan_fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
#define ELAN_WG_D32(d)                                                                                              \
    "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),         \
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),     \
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),     \
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),     \
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define ELAN_WG_ASM(TY)                                                                                             \
    "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                    \
    "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,"  \
    "%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
/* D = A * B + (acc ? D : 0) */
template <typename T>
static __device__ __forceinline__ void elan_wgmma_m64n64k16(float (&d)[8][4], const unsigned a[4],
                                                            unsigned long long desc_b, int acc);
template <>
__device__ __forceinline__ void elan_wgmma_m64n64k16<__half>(float (&d)[8][4], const unsigned a[4],
                                                             unsigned long long desc_b, int acc) {
    asm volatile(ELAN_WG_ASM("f16") : ELAN_WG_D32(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b),
                 "r"(acc));
}
template <>
__device__ __forceinline__ void elan_wgmma_m64n64k16<__nv_bfloat16>(float (&d)[8][4], const unsigned a[4],
                                                                    unsigned long long desc_b, int acc) {
    asm volatile(ELAN_WG_ASM("bf16") : ELAN_WG_D32(d) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b),
                 "r"(acc));
}
#undef ELAN_WG_ASM
#undef ELAN_WG_D32
#endif

/* Hint: bring the 128-byte line holding p into L2 (no register, no wait). */
static __device__ __forceinline__ void elan_prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"((unsigned long long)__cvta_generic_to_global(p)));
}
#endif

#endif
