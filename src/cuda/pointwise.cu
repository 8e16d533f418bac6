/* pointwise.cu — a 1x1 conv over all pixels on tensor cores with its epilogue fused (fp16 / bf16 storage):
   r[p] = in[p] . w^T + b with fp32 accumulation, then either out[p] = r (stored in the activation type) or
   x[p] += r in fp32 with the half copy xh[p] = x[p] refreshed. It replaces cublasGemmEx followed by a separate
   bias / residual pass for GMSA's project_inp (C -> 2C or C -> C) and project_out (C -> C into x).

   Shape of the work: with cin <= 64 and cout <= 128 there are ~40 flops per byte moved (60 -> 120), far below
   the ~200 at which mma.sync would be the limit, so the kernel is built to stream rows at DRAM speed and the mma
   only has to stay out of the way. A block of 4 warps is persistent: it keeps the weights (zero-padded to
   NP = 8*NT rows x 64 columns) and the bias in shared memory and walks tiles of 64 pixels with a grid stride
   (grid = resident blocks, from the occupancy calculator). Each tile's input rows are copied into shared memory
   with cp.async (K zero-padded to 64) while the previous tile is computed (two buffers), and in the residual
   mode so are its rows of x (two buffers too); one barrier after the copies land, one before the write-back.
   Each warp then owns 16 pixels: 4 ldmatrix.x4 give its A fragments (all of K), and for each n8 tile two
   ldmatrix.x4 of the weights give the B fragments of 4 k-steps; the accumulators start from the bias and are
   kept for 8 n8 tiles at a time (32 registers), each group finished into shared memory before the next. The
   weight fragments are re-read from shared memory per tile (NT*2 ldmatrix per 16 pixels, ~15 KB) rather than
   kept in registers (NT*8 of them, too many).

   The accumulator layout (rows g, g+8, 2 adjacent columns per lane) makes direct global stores 4-byte pieces
   of 8 rows, so the result goes through shared memory and leaves with a coalesced copy, one row after another,
   in the widest chunk (16, 8, 4 or 2 bytes) that the pointers, strides and row widths allow (checked at launch;
   ELAN-light's 120-byte rows are only 8-byte aligned). In the output mode the mma results are rounded into a
   staging tile; in the residual mode they are added in place to the x tile already in shared memory, which is
   then written back to x and, converted, to xh. In the half residual mode (fp16: x is the half tensor xh itself)
   the xh rows are fetched like the input, each sum is formed in fp32 and rounded once in place in shared memory,
   and the tile leaves like the output mode's. Input rows use the same chunk rule (cp.async takes 16, 8 or 4
   bytes; 2-byte rows fall back to plain loads).

   Shared-memory strides, chosen so that every access pattern is free of bank conflicts: the input tile and the
   weights are 72 elements (144 bytes) a row, so the 8 row addresses of an ldmatrix phase fall on 8 different
   16-byte bank groups; the staging tile (halves) and the x tile (floats) are SS elements a row, SS = NP or
   NP + 8 with SS = 8 (mod 16), so the 32-bit fragment stores of the staging tile (8 rows x 4 lanes) and the
   64-bit read-modify-writes of the x tile (4 rows x 4 lanes per half warp) each hit 32 different banks.

   Templates: T (the storage type), NT (n8 tiles: cout is rounded up to 32, 64, 96, 120 or 128) and XM (epilogue
   mode), so the accumulators stay in registers and each mode compiles only its own epilogue. */
#include "cuda_common.h"
#include "mma.h"

#define PW_WARPS 4
#define PW_THREADS (32 * PW_WARPS)
#define PW_TILE (16 * PW_WARPS) /* pixels per tile, 16 per warp */
#define PW_KP 64                /* cin padded (4 k-steps of 16) */
#define PW_KS 72                /* row stride (elements) of the input tile and of the weights in shared memory */
#define PW_NC 8                 /* n8 tiles accumulated at a time */

/* epilogue modes (template XM): out = r; x += r in fp32 (+ half copy); xh += r (the half residual stream) */
#define PW_OUT 0
#define PW_X32 1
#define PW_XH 2

template <int NT>
struct pw_shape {
    static constexpr int NP = 8 * NT;
    static constexpr int SS = NP % 16 == 8 ? NP : NP + 8; /* row stride of the staging / x tile, = 8 (mod 16) */
    static constexpr size_t W_BYTES = (size_t)NP * PW_KS * 2;
    static constexpr size_t B_BYTES = (size_t)NP * 4;
    static constexpr size_t IN_BYTES = (size_t)PW_TILE * PW_KS * 2; /* one of two buffers */
    static constexpr size_t OUT_BYTES = (size_t)PW_TILE * SS * 2;   /* staging tile of the output mode */
    static constexpr size_t X_BYTES = (size_t)PW_TILE * SS * 4;     /* one of two x tiles of the residual mode */
    static constexpr size_t XH_BYTES = (size_t)PW_TILE * SS * 2;    /* one of two xh tiles of the half residual mode */
    static constexpr size_t smem(int xm) {
        return W_BYTES + B_BYTES + 2 * IN_BYTES + (xm == PW_X32 ? 2 * X_BYTES : xm == PW_XH ? 2 * XH_BYTES : OUT_BYTES);
    }
};

/* ---- asynchronous global -> shared copies (sm_80+) ---- */
template <int BYTES>
static __device__ __forceinline__ void pw_cp_async(void *dst, const void *src);
template <>
__device__ __forceinline__ void pw_cp_async<16>(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(elan_smem_addr(dst)), "l"(src) : "memory");
}
template <>
__device__ __forceinline__ void pw_cp_async<8>(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(elan_smem_addr(dst)), "l"(src) : "memory");
}
template <>
__device__ __forceinline__ void pw_cp_async<4>(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(elan_smem_addr(dst)), "l"(src) : "memory");
}
/* cp.async has no 2-byte form: odd-width or 2-byte-aligned rows are copied with plain loads (synchronous, only
   for shapes ELAN never has). */
template <>
__device__ __forceinline__ void pw_cp_async<2>(void *dst, const void *src) {
    *(unsigned short *)dst = *(const unsigned short *)src;
}

/* e / d for the chunk loops below, as one multiply-high by m = ceil(2^32 / d) (pw_magic, once per launch): exact
   whenever e * d < 2^32, here e < 64 rows x d chunks with d <= 64. A run-time division per chunk cost ~20
   instructions and made the kernel issue-bound (Nsight Compute: IPC 2.5, DRAM 53%). */
static __device__ __forceinline__ unsigned pw_magic(int d) { return 0xffffffffu / (unsigned)d + 1u; }
static __device__ __forceinline__ int pw_div(int e, unsigned m) { return (int)__umulhi((unsigned)e, m); }

/* Copies `rows` rows of `chunks` chunks of V bytes each (m = pw_magic(chunks)): global rows at src_stride bytes,
   shared rows at dst_stride bytes. Consecutive threads take consecutive chunks of a row. */
template <int V>
static __device__ __forceinline__ void pw_fetch_rows(char *dst, int dst_stride, const char *src, long long src_stride,
                                                     int rows, int chunks, unsigned m) {
    const int n = rows * chunks;
    for (int e = threadIdx.x; e < n; e += PW_THREADS) {
        const int r = pw_div(e, m), c = e - r * chunks;
        pw_cp_async<V>(dst + r * dst_stride + c * V, src + r * src_stride + c * V);
    }
}
static __device__ __forceinline__ void pw_fetch(int v, char *dst, int dst_stride, const char *src, long long src_stride,
                                                int rows, int row_bytes, unsigned m) {
    switch (v) {
    case 16: pw_fetch_rows<16>(dst, dst_stride, src, src_stride, rows, row_bytes / 16, m); break;
    case 8: pw_fetch_rows<8>(dst, dst_stride, src, src_stride, rows, row_bytes / 8, m); break;
    case 4: pw_fetch_rows<4>(dst, dst_stride, src, src_stride, rows, row_bytes / 4, m); break;
    default: pw_fetch_rows<2>(dst, dst_stride, src, src_stride, rows, row_bytes / 2, m); break;
    }
}

/* The reverse for the staging tile of the output mode: chunks of type V (uint4, uint2, unsigned, unsigned short). */
template <typename V>
static __device__ __forceinline__ void pw_store_rows(char *dst, long long dst_stride, const char *src, int src_stride,
                                                     int rows, int row_bytes, unsigned m) {
    const int chunks = row_bytes / (int)sizeof(V), n = rows * chunks;
    for (int e = threadIdx.x; e < n; e += PW_THREADS) {
        const int r = pw_div(e, m), c = e - r * chunks;
        *(V *)(dst + r * dst_stride + c * (int)sizeof(V)) = *(const V *)(src + r * src_stride + c * (int)sizeof(V));
    }
}

static __device__ __forceinline__ unsigned short pw_bits(__half v) { return __half_as_ushort(v); }
static __device__ __forceinline__ unsigned short pw_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }

/* Two floats as two 16-bit values in one register (lo first), rounded exactly as elan_from_f does (fp16 saturates
   at +-65504, NaN stays NaN: the same values the cuBLAS + bias_add path stores). */
template <typename T>
static __device__ __forceinline__ unsigned pw_pack2(float lo, float hi) {
    return (unsigned)pw_bits(elan_from_f<T>(lo)) | (unsigned)pw_bits(elan_from_f<T>(hi)) << 16;
}

/* Residual mode write-back: rows of the x tile (stride SS floats) to x and, when xh != NULL, converted to xh (both
   at stride elements a row), E floats a chunk. */
template <typename T, int E>
static __device__ __forceinline__ void pw_store_x(float *x, T *xh, long long stride, const float *xs, int ss, int rows,
                                                  int cout, unsigned m) {
    const int chunks = cout / E, n = rows * chunks;
    for (int e = threadIdx.x; e < n; e += PW_THREADS) {
        const int r = pw_div(e, m), c = (e - r * chunks) * E;
        const float *s = xs + r * ss + c;
        const long long o = r * stride + c;
        if constexpr (E == 4) {
            const float4 v = *(const float4 *)s;
            *(float4 *)(x + o) = v;
            if (xh) elan_st4(xh + o, v);
        } else if constexpr (E == 2) {
            const float2 v = *(const float2 *)s;
            *(float2 *)(x + o) = v;
            if (xh) *(unsigned *)(xh + o) = pw_pack2<T>(v.x, v.y);
        } else {
            x[o] = *s;
            if (xh) xh[o] = elan_from_f<T>(*s);
        }
    }
}

/* vin: bytes per chunk of the input rows (16, 8, 4, 2). vout: output mode, bytes per chunk of the out rows
   (16, 8, 4, 2); residual mode, floats per chunk of the x rows (4, 2, 1, with xh chunks of half the bytes). */
template <typename T, int NT, int XM>
static __global__ void __launch_bounds__(PW_THREADS, 4) pw_kernel(elan_cuda_pw_args a, int vin, int vout) {
    typedef pw_shape<NT> S;
    extern __shared__ float4 pw_smem4[];
    char *smem = (char *)pw_smem4;
    T *ws = (T *)smem;
    float *bs = (float *)(smem + S::W_BYTES);
    T *ins = (T *)(smem + S::W_BYTES + S::B_BYTES);          /* 2 buffers of PW_TILE x PW_KS */
    char *rest = smem + S::W_BYTES + S::B_BYTES + 2 * S::IN_BYTES;
    T *stage = (T *)rest;                                    /* output mode: PW_TILE x SS */
    float *xs = (float *)rest;                               /* residual mode: 2 buffers of PW_TILE x SS */
    T *xhs = (T *)rest;                                      /* half residual mode: 2 buffers of PW_TILE x SS */

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int cin = a.cin, cout = a.cout;

    /* weights [n][k], zero past cout and cin; bias zero past cout; both input buffers zero (columns cin..63 stay
       zero for good: the copies only ever write the first cin) */
    elan_stage_w16<PW_THREADS, PW_KP>((unsigned short *)ws, PW_KS, (const unsigned short *)a.w, cout, cin, S::NP);
    for (int n = tid; n < S::NP; n += PW_THREADS) bs[n] = n < cout ? a.b[n] : 0.0f;
    for (int e = tid; e < (int)(2 * S::IN_BYTES / 16); e += PW_THREADS) ((uint4 *)ins)[e] = make_uint4(0, 0, 0, 0);
    __syncthreads();

    const long long P = a.P, ntiles = (P + PW_TILE - 1) / PW_TILE;
    const long long in_rs = (long long)a.in_stride * 2;
    const long long x_rs = (long long)a.x_stride * 4;
    const int in_bytes = cin * 2;
    /* the chunk counts of every row copy of this launch, and their reciprocals for pw_div */
    const unsigned m_in = pw_magic(in_bytes / vin);
    const unsigned m_x = pw_magic(XM == PW_X32 ? cout / vout : XM == PW_XH ? cout * 2 / vout : 1);
    const unsigned m_out = pw_magic(XM == PW_OUT ? cout * 2 / vout : 1);

    /* issues the copies of tile `tile` into buffer `buf` (no commit) */
    auto fetch = [&](long long tile, int buf) {
        const long long p0 = tile * PW_TILE;
        const int rows = (int)(P - p0 < PW_TILE ? P - p0 : PW_TILE);
        pw_fetch(vin, (char *)(ins + buf * PW_TILE * PW_KS), PW_KS * 2, (const char *)a.in + p0 * in_rs, in_rs, rows,
                 in_bytes, m_in);
        if constexpr (XM == PW_X32)
            pw_fetch(4 * vout, (char *)(xs + buf * PW_TILE * S::SS), S::SS * 4, (const char *)(a.x) + p0 * x_rs, x_rs,
                     rows, cout * 4, m_x);
        if constexpr (XM == PW_XH)
            pw_fetch(vout, (char *)(xhs + buf * PW_TILE * S::SS), S::SS * 2, (const char *)(a.xh) + p0 * x_rs / 2,
                     x_rs / 2, rows, cout * 2, m_x);
    };

    elan_pdl_wait(); /* the input rows and x / xh: the previous kernel has completed */
    long long tile = blockIdx.x;
    if (tile < ntiles) fetch(tile, 0);
    elan_cp_async_commit();
    for (int buf = 0; tile < ntiles; tile += gridDim.x, buf ^= 1) {
        /* this tile's copies have landed, and every thread is done with the previous tile (its buffers and the
           staging tile are free) */
        elan_cp_async_wait_all();
        __syncthreads();
        if (tile + gridDim.x < ntiles)
            fetch(tile + gridDim.x, buf ^ 1);
        else
            elan_pdl_trigger(); /* the last tile: the next kernel may start placing its CTAs */
        elan_cp_async_commit();

        /* A: rows warp*16 .. +15 of the tile, all 4 k-steps. ldmatrix.x4 matrix m = lane/8 is (rows 0-7 | 8-15 as
           m & 1, k 0-7 | 8-15 as m >> 1), i.e. a0..a3 of the mma's A fragment; lane gives row lane % 16,
           column 8 * (lane / 16). */
        const T *tin = ins + buf * PW_TILE * PW_KS;
        unsigned af[4][4];
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
            elan_ldsm_x4(af[ks], tin + (warp * 16 + (lane & 15)) * PW_KS + ks * 16 + 8 * (lane >> 4));

        /* The n8 tiles in chunks of PW_NC, each finished (into the x or staging tile) before the next starts, so
           that only PW_NC * 4 accumulators are live next to the 16 registers of A. */
        const int r0 = warp * 16 + g;
        const T *wrow = ws + (lane & 7) * PW_KS + 8 * (lane >> 3);
        float *xt = xs + buf * PW_TILE * S::SS;
        T *xht = xhs + buf * PW_TILE * S::SS;
#pragma unroll
        for (int j0 = 0; j0 < NT; j0 += PW_NC) {
            /* accumulators from the bias: c0, c1 = columns j*8 + 2t, +1 of row g; c2, c3 the same of row g + 8 */
            float acc[PW_NC][4];
#pragma unroll
            for (int jj = 0; jj < PW_NC; jj++) {
                if (j0 + jj >= NT) break;
                const float2 bb = *(const float2 *)(bs + (j0 + jj) * 8 + 2 * t);
                acc[jj][0] = bb.x, acc[jj][1] = bb.y, acc[jj][2] = bb.x, acc[jj][3] = bb.y;
            }
            /* B of n8 tile j, k-steps 2kk and 2kk+1: B[k][n] = W[n][k], so matrix m = lane/8 of the ldmatrix.x4 is
               weight rows j*8 .. +7, columns kk*32 + 8m .. +7 (lane gives row lane % 8); registers 0, 1 are b0, b1
               of k-step 2kk, registers 2, 3 those of 2kk+1. Step st = 2*jj + kk; the next step's B is loaded before
               this step's mma so that the ldmatrix latency overlaps them. */
            unsigned bf[2][4];
            elan_ldsm_x4(bf[0], wrow + j0 * 8 * PW_KS);
#pragma unroll
            for (int st = 0; st < 2 * PW_NC; st++) {
                const int jj = st >> 1, kk = st & 1, nx = st + 1;
                if (j0 + jj >= NT) break;
                if (nx < 2 * PW_NC && j0 + (nx >> 1) < NT)
                    elan_ldsm_x4(bf[nx & 1], wrow + (j0 + (nx >> 1)) * 8 * PW_KS + (nx & 1) * 32);
                elan_mma16816<T>(acc[jj], af[2 * kk], bf[st & 1]);
                elan_mma16816<T>(acc[jj], af[2 * kk + 1], bf[st & 1] + 2);
            }
#pragma unroll
            for (int jj = 0; jj < PW_NC; jj++) {
                if (j0 + jj >= NT) break;
                const int c = (j0 + jj) * 8 + 2 * t;
                if constexpr (XM == PW_XH) {
                    unsigned *lo = (unsigned *)(xht + r0 * S::SS + c), *hi = (unsigned *)(xht + (r0 + 8) * S::SS + c);
                    const float2 v = elan_unpack2<T>(*lo), u = elan_unpack2<T>(*hi);
                    *lo = pw_pack2<T>(v.x + acc[jj][0], v.y + acc[jj][1]);
                    *hi = pw_pack2<T>(u.x + acc[jj][2], u.y + acc[jj][3]);
                } else if constexpr (XM == PW_X32) {
                    float2 *lo = (float2 *)(xt + r0 * S::SS + c), *hi = (float2 *)(xt + (r0 + 8) * S::SS + c);
                    float2 v = *lo, u = *hi;
                    v.x += acc[jj][0], v.y += acc[jj][1], u.x += acc[jj][2], u.y += acc[jj][3];
                    *lo = v, *hi = u;
                } else {
                    *(unsigned *)(stage + r0 * S::SS + c) = pw_pack2<T>(acc[jj][0], acc[jj][1]);
                    *(unsigned *)(stage + (r0 + 8) * S::SS + c) = pw_pack2<T>(acc[jj][2], acc[jj][3]);
                }
            }
        }

        const long long p0 = tile * PW_TILE;
        const int rows = (int)(P - p0 < PW_TILE ? P - p0 : PW_TILE);
        if constexpr (XM == PW_X32) {
            __syncthreads();
            float *x = a.x + p0 * a.x_stride;
            T *xh = a.xh ? (T *)a.xh + p0 * a.x_stride : (T *)0;
            switch (vout) {
            case 4: pw_store_x<T, 4>(x, xh, a.x_stride, xt, S::SS, rows, cout, m_x); break;
            case 2: pw_store_x<T, 2>(x, xh, a.x_stride, xt, S::SS, rows, cout, m_x); break;
            default: pw_store_x<T, 1>(x, xh, a.x_stride, xt, S::SS, rows, cout, m_x); break;
            }
        } else {
            __syncthreads();
            const long long out_rs = (long long)(XM == PW_XH ? a.x_stride : a.out_stride) * 2;
            char *dst = (char *)(XM == PW_XH ? a.xh : a.out) + p0 * out_rs;
            const char *src = XM == PW_XH ? (const char *)xht : (const char *)stage;
            switch (vout) {
            case 16: pw_store_rows<uint4>(dst, out_rs, src, S::SS * 2, rows, cout * 2, XM == PW_XH ? m_x : m_out); break;
            case 8: pw_store_rows<uint2>(dst, out_rs, src, S::SS * 2, rows, cout * 2, XM == PW_XH ? m_x : m_out); break;
            case 4: pw_store_rows<unsigned>(dst, out_rs, src, S::SS * 2, rows, cout * 2, XM == PW_XH ? m_x : m_out); break;
            default: pw_store_rows<unsigned short>(dst, out_rs, src, S::SS * 2, rows, cout * 2, XM == PW_XH ? m_x : m_out); break;
            }
        }
    }
    elan_cp_async_wait_all(); /* the last (empty) group: nothing may be in flight at exit */
}

typedef void (*pw_fn)(elan_cuda_pw_args, int, int);

/* n8 tiles compiled: cout up to 32, 64, 96, 120 (ELAN-light's 2C without waste), 128 */
static int pw_nt(int cout) {
    static const int nts[] = {4, 8, 12, 15, 16};
    for (int i = 0; i < (int)(sizeof nts / sizeof nts[0]); i++)
        if (cout <= 8 * nts[i]) return nts[i];
    return -1;
}

template <typename T, int XM>
static pw_fn pw_pick_t(int nt, size_t *smem) {
    switch (nt) {
    case 4: *smem = pw_shape<4>::smem(XM); return pw_kernel<T, 4, XM>;
    case 8: *smem = pw_shape<8>::smem(XM); return pw_kernel<T, 8, XM>;
    case 12: *smem = pw_shape<12>::smem(XM); return pw_kernel<T, 12, XM>;
    case 15: *smem = pw_shape<15>::smem(XM); return pw_kernel<T, 15, XM>;
    case 16: *smem = pw_shape<16>::smem(XM); return pw_kernel<T, 16, XM>;
    default: return NULL;
    }
}

static pw_fn pw_pick(int cin, int cout, int act, int xm, size_t *smem) {
    if (cin < 1 || cin > PW_KP) return NULL;
    const int nt = pw_nt(cout);
    if (cout < 1 || nt < 0) return NULL;
    switch (act) {
    case ELAN_ACT_F16:
        return xm == PW_X32 ? pw_pick_t<__half, PW_X32>(nt, smem)
               : xm == PW_XH ? pw_pick_t<__half, PW_XH>(nt, smem)
                             : pw_pick_t<__half, PW_OUT>(nt, smem);
    case ELAN_ACT_BF16:
        return xm == PW_X32 ? pw_pick_t<__nv_bfloat16, PW_X32>(nt, smem)
               : xm == PW_XH ? pw_pick_t<__nv_bfloat16, PW_XH>(nt, smem)
                             : pw_pick_t<__nv_bfloat16, PW_OUT>(nt, smem);
    default: return NULL;
    }
}

extern "C" int elan_cuda_pw_supported(int cin, int cout) {
    size_t smem;
    return pw_pick(cin, cout, ELAN_ACT_F16, 0, &smem) ? 0 : -1;
}

extern "C" cudaError_t elan_cuda_pw_prepare(int cin, int cout, int act) {
    for (int xm = PW_OUT; xm <= PW_XH; xm++) {
        size_t smem;
        pw_fn f = pw_pick(cin, cout, act, xm, &smem);
        if (!f) return cudaErrorInvalidValue;
        const cudaError_t e = cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

/* Widest chunk (bytes, a power of two from `from` down to `least`) that divides the row width, the row pitch and
   the base address. */
static int pw_chunk(const void *ptr, long long row_bytes, long long pitch_bytes, int from, int least) {
    int v = from;
    while (v > least && (row_bytes % v || pitch_bytes % v || (size_t)ptr % (size_t)v)) v /= 2;
    return v;
}

extern "C" cudaError_t elan_cuda_pw(const elan_cuda_pw_args *a, cudaStream_t s) {
    const int xm = a->out ? PW_OUT : a->x ? PW_X32 : PW_XH;
    if ((a->out && (a->x || a->xh)) || (!a->out && !a->x && !a->xh) || a->in_stride < a->cin ||
        (xm != PW_OUT ? a->x_stride : a->out_stride) < a->cout || a->P < 0)
        return cudaErrorInvalidValue;
    size_t smem;
    pw_fn f = pw_pick(a->cin, a->cout, a->act, xm, &smem);
    if (!f) return cudaErrorInvalidValue;
    if (a->P == 0) return cudaSuccess;

    const int vin = pw_chunk(a->in, a->cin * 2LL, a->in_stride * 2LL, 16, 2);
    int vout;
    if (xm == PW_X32) {
        /* floats a chunk: x chunks of 4*vout bytes, xh chunks of 2*vout bytes */
        vout = pw_chunk(a->x, a->cout * 4LL, a->x_stride * 4LL, 16, 4) / 4;
        if (a->xh) {
            const int vh = pw_chunk(a->xh, a->cout * 2LL, a->x_stride * 2LL, 8, 2) / 2;
            if (vh < vout) vout = vh;
        }
    } else if (xm == PW_XH)
        vout = pw_chunk(a->xh, a->cout * 2LL, a->x_stride * 2LL, 16, 2);
    else
        vout = pw_chunk(a->out, a->cout * 2LL, a->out_stride * 2LL, 16, 2);

    long long slots = 0;
    const cudaError_t e = elan_resident_ctas(f, PW_THREADS, smem, &slots);
    if (e != cudaSuccess) return e;
    const long long ntiles = (a->P + PW_TILE - 1) / PW_TILE;
    const long long grid = ntiles < slots ? ntiles : slots;
    return elan_launch_pdl(f, dim3((unsigned)grid), dim3(PW_THREADS), smem, s, *a, vin, vout);
}
