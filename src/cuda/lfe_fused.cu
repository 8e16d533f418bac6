/* lfe_fused.cu — the whole LFE block in one kernel (fp16 / bf16 modes), on tensor cores:

     s0[p][c] = xh_in[p + d(tap0[c])][c]                 (0 outside the padded image)
     h[p][j]  = relu(b0[j] + sum_c w0[j][c] s0[p][c])     rounded to T
     s1[p][j] = h[p + d(tap1[j])][j]                     (0 outside the padded image)
     x[p][c] += b1[c] + sum_j w1[c][j] s1[p][j]           fp32, in place;  xh_out[p][c] = T(x[p][c])

   with d(tap) = (tap / 3 - 1, tap % 3 - 1) (a tap past 8 is read as 8). The unfused path moves s0, the first
   GEMM's output and s1 through global memory (C + 2e halves per pixel, each written and read back); here they
   live in shared memory only, and the kernel's traffic is what LFE must touch: xh_in (plus a halo, mostly from
   L2), x read and written (streaming cache hints), xh_out written.

   Shape. A CTA (256 threads, 8 warps) owns an output tile of 8 x 16 pixels of one image. The hidden h is needed
   on the tile plus a 1-pixel halo (10 x 18 = 180 pixels), the input on the tile plus a 2-pixel halo (12 x 20).
   The grid is persistent: 2 CTAs per SM on sm_90 (110 KB of shared memory each for C = 60, e = 120; 1 on an A100,
   whose SM has 164 KB; registers capped at 128 by __launch_bounds__) loop over the tiles (consecutive tile
   indices are neighbours, so the CTAs in flight work on one band of the image and the halos come from L2), and
   load the weights once. With a.rev the tiles are visited from the last one back (lfe_sweep), so that a launch
   starts where the previous kernel's sweep ended, on the part of its input still in L2 (cuda_backend.cu
   alternates it).

   Two paths, chosen per launch inside the kernel (every CTA reads the same taps, so all take the same one):

   Run path, when every aligned run of 4 channels of tap0 and every aligned run of 8 channels of tap1 shares
   one tap (ELAN: 5 groups of C/5 = 12 and e/5 = 24 channels; elan_cuda_lfe_fused_taps_ok says it on the host).
   The shifts then cost nothing in the GEMM loops, whose A fragments are plain ldmatrix:
     1. S0: s0 of the 180 hidden pixels, staged already shifted: cp.async of 8-byte pieces (4 channels, one
        tap) from xh_in[pixel + d][c..c+3], zero-fill for a source outside the image. Row stride XS halves (C
        padded to a multiple of 16 with zero channels, stride an odd multiple of 16 bytes). Issued for the
        next tile right after GEMM1 of this one, so it overlaps GEMM2; at the top of each tile the next
        tile's input window and x rows are also prefetched into L2, so both arrive from L2 a tile later. A
        lane's piece (hence its tap and channels) is the same for every pixel and tile, and its pixel's place
        in the hidden tile advances without a division (lfe_stage_runs).
     2. GEMM1 (M = 180 hidden pixels in 12 m16 tiles, N = e, K = C padded to 16): warp w takes the six m16
        tiles of half w % 2 and the quarter w / 2 of the n8 tiles (e padded to 32 with zero weights), whose B
        fragments it loads once per tile into registers. A: ldmatrix x4 from S0 (lane l points at row l % 16,
        k half l / 16; rows past 180 are clamped to row 179, their results never stored). B: ldmatrix from w0
        in shared memory ([n][k], k contiguous: B[k][n] = w0[n][k]). The bias is part of the GEMM where K has
        room for it (C = 60: K channels 60-62 of S0 hold 1, the same columns of w0 hold b0 split into three
        16-bit parts, hi + mid + lo, ~22-24 bits of it), so the accumulators start at 0 (an mma with a zero C
        operand) and no bias is loaded per tile; otherwise they start at b0. Epilogue: one cvt per pair does
        relu and the rounding to T (fp16 saturating), 32-bit stores to the hidden tile H (192 rows = 12 whole
        m16 tiles, stride HS halves, placed behind S0's 180 rows; rows past 180 are written and never read).
        Hidden pixels outside the image are stored as 0 (the zero fill of shift1): that test runs only in tiles
        at the image border (a second copy of the loop), so interior tiles store without it (lfe_gemm1_runs).
     3. each lane loads its residual values of the tile for GEMM2's accumulators (c0, c1 / c2, c3 are
        channels 2t, 2t+1 of pixels g / g+8) before the barrier: the fp32 x from global memory (an L2 hit,
        prefetched a tile ago), the half stream's xh_in from S0, where channel c of pixel p sits at hidden
        pixel p - d(tap0[c]) (a table ro[c]; 4% faster than its uncoalesced global loads); they are widened
        after the barrier and the staging, and b1 is added.
     4. barrier; GEMM2 (M = 128 tile pixels, N = C, K = e): warp w takes tile rows 2 (w / 2) and + 1 (two m16
        tiles) and half the n8 tiles (w % 2), so that each B fragment serves two m16 tiles (LFE_G2_MI = 1: one
        row and all n8 tiles, and for N not a multiple of 32). A: ldmatrix x4 straight from H, with the shift
        in the row address: lane l reads pixel l % 16 of the tile row, channels of the 8-run r = 2 kc + l / 16,
        at H[pixel + d(tap1 of run r)][8r] (a table of one offset per run); a K remainder of 8 (e = 120) runs as m16n8k8 with ldmatrix x2. B: ldmatrix from
        w1 in shared memory.
     5. epilogue straight from the accumulators (now x + b1 + GEMM2): float2 stores of x and 32-bit stores of
        xh_out (one cvt per pair, rounding exactly as elan_from_f); the 4 lanes of a quad cover 32 contiguous
        bytes of a pixel.

   wgmma (sm_90a builds, shapes with e padded to 128 and C to 64: ELAN-light): the same run path with both GEMMs
   as warpgroup MMAs, wgmma.m64n64k16 with A from registers (the same ldmatrix fragments, shifts included) and B
   read by the tensor cores from w0 / w1 in shared memory, staged once in the core-matrix layout. GEMM1: warpgroup
   h takes w0's columns 64h .. 64h+63 of the three m64 tiles of hidden pixels (lfe_gemm1_wg); GEMM2: warpgroup h
   takes tile rows 4h .. 4h+3 (warp = tile row), K = e padded to 128 (a zero A run past e). ~156 mma.sync per
   warp and tile become 20 wgmma per warpgroup; with the residual from S0, 0.130 -> 0.121 ms (H100, 960x544,
   half stream): the kernel is bound by its memory latency (the staging's wait) more than by its tensor work.
   In the half stream each warp (= tile row) then stores its row through shared memory, as 16-byte pieces of
   1920 contiguous bytes, instead of 4-byte pairs that touch 8 pixels per instruction: 0.121 -> 0.092 ms, and the
   wgmma kernel became faster than the mma.sync one at every size (it is the default; a.wg = 0 keeps the other).

   Generic path, for any taps (kept for other masks; slower: 8 scalar loads per lane and k16 step): X holds the raw 12 x 20
   input tile (cp.async, 8-byte pieces, zero-fill outside the image), and the shifts are applied while
   building the A fragments: each lane loads its 8 halves one by one at (pixel of its row) + off0[c], where the
   table off0[c] = (dy*20 + dx)*XS + c folds channel c's tap into a shared-memory offset (GEMM1), and from H
   through off1[j] = (dy*18 + dx)*HS + j (GEMM2). Same work split, biases added in the epilogues, x loaded
   into registers before GEMM2 and added in the epilogue, no L2 prefetch.

   Bank conflicts: row strides XS and HS are odd multiples of 8 halves (4 mod 8 words). ldmatrix reads 8 rows
   of 16 bytes, here always 8 consecutive rows of w0, w1 or S0, or (GEMM2 A of the run path) 8 consecutive
   pixels of one hidden row of H, all shifted by the same run's tap: conflict-free. So are the H stores of
   GEMM1 (lane (g, t): bank 4*odd*g + t + const). Generic gathers: lane
   (g, t) hits bank 4*odd*(pixel) + t + const (mod 32), conflict-free except where an m16 tile of GEMM1 wraps
   from one hidden row to the next (it skips 2 pixels of X there, and 2 lanes can share a bank).

   Compiled shapes (template on C and e, so every loop bound, fragment count and smem offset is a constant):
   (60, 120) is ELAN-light; (32, 64), (48, 96), (64, 128) are the other e = 2C shapes up to 64 planes. Needs C % 4
   == 0 (8-byte pieces of a pixel row) and e % 8 == 0. T is __half or __nv_bfloat16; all sums are fp32. */
#include "cuda_common.h"
#include "mma.h"

#include <limits.h>

#define LFE_THREADS 256
#define LFE_TH 8  /* tile rows: one per warp in GEMM2 */
#define LFE_TW 16 /* tile columns: one m16 tile per tile row */
#ifndef LFE_G2_MI
#define LFE_G2_MI 2 /* GEMM2: m16 tiles per warp (1: a tile row and all n8 tiles; 2: two rows, half the n8 tiles) */
#endif

/* Smallest row stride >= k halves that is an odd multiple of 8 halves (16 bytes): rows 16-byte aligned for
   ldmatrix and cp.async, consecutive rows 4 banks apart (mod 32). */
static constexpr int lfe_stride(int k) { return ((k + 7) / 8 % 2) ? (k + 7) / 8 * 8 : (k + 7) / 8 * 8 + 8; }

template <int C, int E>
struct lfe_shape {
    static constexpr int HW = LFE_TW + 2, HH = LFE_TH + 2, NH = HW * HH; /* hidden tile: 18 x 10 = 180 */
    static constexpr int XW = LFE_TW + 4, XH = LFE_TH + 4, NX = XW * XH; /* input tile: 20 x 12 = 240 */
    static constexpr int K1 = (C + 15) / 16 * 16;                         /* GEMM1 K (zero-padded) */
    static constexpr int XS = lfe_stride(K1);                             /* X / S0 and w0 row stride */
    static constexpr int MT1 = (NH + 15) / 16;                            /* GEMM1 m16 tiles */
    static constexpr int NT1 = E / 8;                                     /* GEMM1 n8 tiles */
    static constexpr int NTH = (NT1 + 3) / 4 * 2;                         /* half the padded n8 tiles (even) */
    static constexpr int HS = lfe_stride(E);                              /* H and w1 row stride */
    static constexpr int KC2 = E / 16, KT2 = E % 16;                      /* GEMM2: k16 steps, remainder */
    static constexpr int NT2 = (C + 7) / 8 + ((C + 7) / 8) % 2;           /* GEMM2 n8 tiles (even) */
    static constexpr int PPP = C / 4;                                     /* 8-byte pieces per pixel */
    static constexpr int R1 = E / 8;                                      /* 8-channel runs of h */
    /* run path: GEMM1's bias as K channels C .. C+2 (S0 holds 1 there, w0 the bias split in three 16-bit parts),
       where K1 leaves room for them; otherwise the accumulators start at b0 */
    static constexpr int BK = K1 - C >= 3 ? 3 : 0;
    /* wgmma path (sm_90a): GEMM1 as two warpgroups of N = 64 (w0 padded to 128 rows), GEMM2 as m64n64 with K
       padded to K2G; w0 and w1 then sit in shared memory in the core-matrix layout (elan_core_off) */
    static constexpr int K2G = (E + 15) / 16 * 16;
    static constexpr bool WG = 2 * NTH * 8 == 128 && NT2 * 8 == 64;
    /* shared memory, bytes */
    static constexpr size_t W0 = 0;                                       /* 2*NTH*8 rows x XS */
    static constexpr size_t W1 = W0 + (size_t)2 * NTH * 8 * XS * 2;       /* NT2*8 rows x HS */
    static constexpr size_t X = W1 + (size_t)NT2 * 8 * (HS > K2G ? HS : K2G) * 2; /* NX rows x XS (run: S0, NH rows) */
    static constexpr size_t H = X + (size_t)NX * XS * 2;                  /* NH rows x HS */
    static constexpr size_t O0 = H + (size_t)NH * HS * 2;                 /* int[K1]: generic GEMM1 offsets */
    static constexpr size_t O1 = O0 + (size_t)K1 * 4;                     /* int[E]: generic GEMM2 offsets */
    static constexpr size_t D0 = O1 + (size_t)E * 4;                      /* int2[PPP]: run path, (dy, dx) of piece */
    static constexpr size_t D1 = D0 + ((size_t)PPP * 8 + 15) / 16 * 16;   /* int[R1]: run path, offset of run */
    static constexpr size_t RO = D1 + ((size_t)R1 * 4 + 15) / 16 * 16;    /* int[C]: run path, residual in S0 */
    static constexpr size_t B0 = RO + ((size_t)C * 4 + 15) / 16 * 16;     /* float[2*NTH*8] */
    static constexpr size_t B1 = B0 + (size_t)2 * NTH * 8 * 4;            /* float[NT2*8] */
    static constexpr size_t SMEM = B1 + (size_t)NT2 * 8 * 4;
    /* run path: S0 needs NH of X's NX rows, so H moves up behind it and gets MT1 * 16 rows, whole m16 tiles
       (GEMM1 then stores every row without a guard; rows past NH are never read) */
    static constexpr size_t HR = X + (size_t)NH * XS * 2;
    static_assert(C % 4 == 0 && C <= 64 && E % 8 == 0 && E <= 128, "unsupported LFE shape");
    static_assert(W1 % 16 == 0 && X % 16 == 0 && H % 16 == 0 && O0 % 16 == 0 && O1 % 16 == 0 && D0 % 16 == 0 &&
                      D1 % 16 == 0 && RO % 16 == 0 && B0 % 16 == 0 && B1 % 16 == 0,
                  "shared-memory regions must stay 16-byte aligned");
    static_assert(LFE_TH == LFE_THREADS / 32 && LFE_TW == 16, "GEMM2 gives one tile row (one m16 tile) to each warp");
    static_assert(NH <= NX && MT1 == 3 * (LFE_THREADS / 64), "GEMM1 gives 3 m16 tiles to each warp");
    static_assert(HR % 16 == 0 && HR + (size_t)MT1 * 16 * HS * 2 <= O0, "run-path H must fit in X and H");
};

/* ---- small device helpers ---- */

static __device__ __forceinline__ unsigned lfe_pk(unsigned short lo, unsigned short hi) {
    return (unsigned)lo | ((unsigned)hi << 16);
}
static __device__ __forceinline__ int lfe_tap(unsigned char tp) { return tp < 8 ? (int)tp : 8; }
/* Position of a tile: image, top row, left column. */
struct lfe_tile {
    int img, y0, x0;
};
static __device__ __forceinline__ lfe_tile lfe_tile_at(int tile, int tiles_x, int tiles_img) {
    lfe_tile r;
    r.img = tile / tiles_img;
    const int i = tile - r.img * tiles_img;
    r.y0 = i / tiles_x * LFE_TH;
    r.x0 = (i - i / tiles_x * tiles_x) * LFE_TW;
    return r;
}
/* The tile st tiles after tl, st being the persistent loop's stride (gridDim.x tiles) decoded once by
   lfe_tile_at: additions with carries (two run-time divisions per tile cost ~60 issued instructions per warp). */
static __device__ __forceinline__ lfe_tile lfe_tile_next(lfe_tile tl, lfe_tile st, int Hp, int Wp) {
    tl.x0 += st.x0;
    tl.y0 += st.y0;
    tl.img += st.img;
    if (tl.x0 >= Wp) tl.x0 -= Wp, tl.y0 += LFE_TH;
    if (tl.y0 >= Hp) tl.y0 -= Hp, tl.img++;
    return tl;
}

/* The tile the sweep visits in tl's place: tl itself, or (rev) its point reflection through the middle of the n
   images, so that the sweep runs from the last image's bottom row up (elan_cuda_lfe_args.rev). */
static __device__ __forceinline__ lfe_tile lfe_sweep(lfe_tile tl, int rev, int n, int Hp, int Wp) {
    if (rev) tl.img = n - 1 - tl.img, tl.y0 = Hp - LFE_TH - tl.y0, tl.x0 = Wp - LFE_TW - tl.x0;
    return tl;
}

/* Whether hidden pixel q (row-major in the 10 x 18 hidden tile) of tile tl lies inside the padded image. */
template <int C, int E>
static __device__ __forceinline__ bool lfe_hidden_in(lfe_tile tl, int q, int Hp, int Wp) {
    typedef lfe_shape<C, E> S;
    const int hy = q / S::HW, gy = tl.y0 - 1 + hy, gx = tl.x0 - 1 + (q - hy * S::HW);
    return gy >= 0 && gy < Hp && gx >= 0 && gx < Wp;
}

/* Generic path, step 1: issue the cp.async of the input tile (rows y0-2 .. y0+9, columns x0-2 .. x0+17) into
   xs. Channels C..K1-1 of each row are never written here (zeroed once at the start). */
template <int C, int E>
static __device__ __forceinline__ void lfe_stage(const unsigned short *xh, unsigned short *xs, lfe_tile tl, int Hp,
                                                 int Wp) {
    typedef lfe_shape<C, E> S;
    for (int i = threadIdx.x; i < S::NX * S::PPP; i += LFE_THREADS) {
        const int px = i / S::PPP, k = i - px * S::PPP;
        const int yy = px / S::XW, xx = px - yy * S::XW;
        const int gy = tl.y0 - 2 + yy, gx = tl.x0 - 2 + xx;
        const bool in = gy >= 0 && gy < Hp && gx >= 0 && gx < Wp;
        const unsigned short *src = in ? xh + (((long long)tl.img * Hp + gy) * Wp + gx) * C + 4 * k : xh;
        elan_cp_async8(xs + px * S::XS + 4 * k, src, in ? 8u : 0u);
    }
    elan_cp_async_commit();
}

/* Run path, step 1: issue the cp.async of s0 on the 180 hidden pixels (rows y0-1 .. y0+8, columns x0-1 ..
   x0+16): piece k (channels 4k..4k+3) of hidden pixel q comes from pixel q + d0[k]. The lanes of a warp take
   PXW = 32 / PPP pixels per step, lane l piece l % PPP of pixel l / PPP (lanes past PXW * PPP idle): a lane's
   piece, hence its tap and its channel offset, is the same for every pixel and every tile, so the per-piece
   work is the pixel's position, one bounds test and the address (Nsight Compute: ~45 instructions per piece
   when every piece divided its index and re-read its tap). `lp` holds the lane's constants (lfe_lane_piece). */
struct lfe_piece {
    int k, sub; /* piece of a pixel, pixel of the warp step (>= PXW: idle lane) */
    int dy, dx; /* the piece's tap */
};
template <int C, int E>
static __device__ __forceinline__ lfe_piece lfe_lane_piece(const int2 *d0) {
    typedef lfe_shape<C, E> S;
    const int lane = threadIdx.x & 31;
    lfe_piece lp;
    lp.sub = lane / S::PPP;
    lp.k = lane - lp.sub * S::PPP;
    const int2 d = d0[lp.k];
    lp.dy = d.x;
    lp.dx = d.y;
    return lp;
}
template <int C, int E>
static __device__ __forceinline__ void lfe_stage_runs(const unsigned short *xh, unsigned short *s0, lfe_piece lp,
                                                      lfe_tile tl, int Hp, int Wp) {
    typedef lfe_shape<C, E> S;
    constexpr int PXW = 32 / S::PPP, STEP = PXW * (LFE_THREADS / 32);
    if (lp.sub < PXW) {
        /* the image's first pixel, at the lane's channels: a valid address for the zero fills too */
        const char *base = (const char *)(xh + (long long)tl.img * Hp * Wp * C + 4 * lp.k);
        const int oy = tl.y0 - 1 + lp.dy, ox = tl.x0 - 1 + lp.dx;
        int q = (threadIdx.x >> 5) * PXW + lp.sub, hy = q / S::HW, hx = q - hy * S::HW;
#pragma unroll 4
        for (; q < S::NH; q += STEP) {
            const int gy = oy + hy, gx = ox + hx;
            const bool in = (unsigned)gy < (unsigned)Hp && (unsigned)gx < (unsigned)Wp;
            const unsigned pix = in ? (unsigned)(gy * Wp + gx) : 0u; /* the pixel in the image (< 2^31) */
            elan_cp_async8(s0 + q * S::XS + 4 * lp.k, base + (size_t)pix * (2 * C), in ? 8u : 0u);
            hx += STEP % S::HW; /* (hy, hx) of the next q, without a division */
            hy += STEP / S::HW;
            if (hx >= S::HW) hx -= S::HW, hy++;
        }
    }
    elan_cp_async_commit();
}

/* The residual of pixel p, channels c and c + 1: the fp32 x, or (half residual stream, a.x == NULL) the input's
   own half copy xh_in, already in L2 from the staging of this tile. */
template <typename T, int C, bool XF>
static __device__ __forceinline__ float2 lfe_residual(const elan_cuda_lfe_args &a, long long p, int c) {
    if (XF) return __ldcs((const float2 *)(a.x + p * C + c));
    return elan_unpack2<T>(*(const unsigned *)((const T *)a.xh_in + p * C + c));
}

/* The epilogue's stores of the element pair at offset e (pixel * C + channel): x (fp32 stream only) and its
   half copy. */
template <typename T, bool XF>
static __device__ __forceinline__ void lfe_store(const elan_cuda_lfe_args &a, long long e, float2 v) {
    if (XF) __stcs((float2 *)(a.x + e), v);
    *(unsigned *)((T *)a.xh_out + e) = elan_pack2_out<T>(v.x, v.y);
}

/* Run path: L2 prefetch of what tile tl will read (its input window, rows y0-2 .. y0+9 and columns x0-2 ..
   x0+17 clipped to the image, and its x rows), one 128-byte line per thread and request. */
template <int C, int E>
static __device__ __forceinline__ void lfe_prefetch(const unsigned short *xh, const float *x, lfe_tile tl, int Hp,
                                                    int Wp) {
    typedef lfe_shape<C, E> S;
    constexpr int XL = (S::XW * C * 2 + 127) / 128 + 1; /* lines touched by one window row, at most */
    constexpr int FL = (LFE_TW * C * 4 + 127) / 128 + 1; /* lines touched by one x row of the tile, at most */
    const int tid = threadIdx.x;
    static_assert(S::XH * XL <= LFE_THREADS, "one window line per thread");
    const int xa = max(tl.x0 - 2, 0), xb = min(tl.x0 + LFE_TW + 2, Wp);
    if (tid < S::XH * XL) { /* one request per thread: a loop here compiled to ~100 instructions of remainder
                               handling for a single trip */
        const int r = tid / XL, l = tid - r * XL, gy = tl.y0 - 2 + r;
        if ((unsigned)gy < (unsigned)Hp) {
            const char *row = (const char *)(xh + (((long long)tl.img * Hp + gy) * Wp + xa) * C);
            elan_prefetch_l2(row + min(l * 128, (xb - xa) * C * 2 - 1));
        }
    }
    if (!x) return;
    for (int i = tid; i < LFE_TH * FL; i += LFE_THREADS) {
        const int r = i / FL, l = i - r * FL;
        const char *row = (const char *)(x + (((long long)tl.img * Hp + tl.y0 + r) * Wp + tl.x0) * C);
        elan_prefetch_l2(row + min(l * 128, LFE_TW * C * 4 - 1));
    }
}

/* Run path, step 2: GEMM1, H = relu(S0 w0^T + b0) on the 180 hidden pixels, stored as T into H. Warp w takes the
   m16 tiles (w & 1) * MT1/2 .. + MT1/2 - 1 and the quarter w >> 1 of the (zero-padded) n8 tiles, NQ of them, whose
   B fragments it loads once per tile (NQ x K1/16 ldmatrix x2) and keeps in registers across its m16 tiles: against
   a split of whole n-halves with B reloaded for every m16 tile, GEMM1 reads 47% fewer bytes of shared memory.
   BORDER: the hidden tile reaches past the image, whose hidden pixels are stored as 0 (the zero fill of shift1);
   interior tiles (94% of them at 4K) store without the per-pixel test. The padded n8 tiles (e = 120: 120 .. 127,
   in the last quarter) are not stored (H's rows are e halves apart). With S::BK the bias comes out of the GEMM (K
   channels C.. of S0 are 1, w0's hold b0) and the accumulators start at 0. */
template <typename T, int C, int E, bool BORDER>
static __device__ __forceinline__ void lfe_gemm1_runs(const unsigned short *s0, unsigned short *hs,
                                                      const unsigned short *w0q, const float *b0s, lfe_tile tl,
                                                      int Hp, int Wp) {
    typedef lfe_shape<C, E> S;
    constexpr int NQ = S::NTH / 2, MH = S::MT1 / 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int mh = warp & 1, nq = warp >> 1;
    const int arow = lane & 15, akh = lane >> 4; /* A by ldmatrix x4: row arow of the m16 tile, k half akh */
    unsigned bf[NQ][S::K1 / 16][2];
#pragma unroll
    for (int j = 0; j < NQ; j++)
#pragma unroll
        for (int kc = 0; kc < S::K1 / 16; kc++) elan_ldsm_x2(bf[j][kc], w0q + j * 8 * S::XS + kc * 16);
#pragma unroll 2
    for (int i = 0; i < MH; i++) {
        const int mt = mh * MH + i;
        const unsigned short *pa = s0 + min(mt * 16 + arow, S::NH - 1) * S::XS + akh * 8;
        float acc[NQ][4];
#pragma unroll
        for (int j = 0; j < NQ; j++) {
            if constexpr (S::BK != 0) {
                acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
            } else {
                const float2 bb = *(const float2 *)(b0s + (nq * NQ + j) * 8 + 2 * t);
                acc[j][0] = acc[j][2] = bb.x;
                acc[j][1] = acc[j][3] = bb.y;
            }
        }
#pragma unroll
        for (int kc = 0; kc < S::K1 / 16; kc++) {
            unsigned af[4];
            elan_ldsm_x4(af, pa + kc * 16);
#pragma unroll
            for (int j = 0; j < NQ; j++) elan_mma16816<T>(acc[j], af, bf[j][kc]);
        }
        const int q0 = mt * 16 + g, q1 = q0 + 8; /* rows past NH land in H's spare rows */
        bool ina = true, inb = true;
        if (BORDER) ina = lfe_hidden_in<C, E>(tl, q0, Hp, Wp), inb = lfe_hidden_in<C, E>(tl, q1, Hp, Wp);
#pragma unroll
        for (int j = 0; j < NQ; j++) {
            /* only the last quarter holds padded n8 tiles (past NT1): the test is compile-time true elsewhere */
            if (j < S::NT1 - 3 * NQ || nq * NQ + j < S::NT1) {
                const int n = (nq * NQ + j) * 8 + 2 * t;
                unsigned v0 = elan_pack2_relu<T>(acc[j][0], acc[j][1]), v1 = elan_pack2_relu<T>(acc[j][2], acc[j][3]);
                if (BORDER) v0 = ina ? v0 : 0u, v1 = inb ? v1 : 0u;
                *(unsigned *)(hs + q0 * S::HS + n) = v0;
                *(unsigned *)(hs + q1 * S::HS + n) = v1;
            }
        }
    }
}

#if defined(ELAN_HAVE_WGMMA) && !defined(LFE_NO_WGMMA)
#define LFE_WG_ARCH 1 /* this compilation (sm_90a) runs the shapes with S::WG on wgmma */
/* wgmma path, GEMM1: the m64 tile m of the hidden pixels (rows 64m .. 64m+63; warp i of the warpgroup loads rows
   64m + 16i .. + 15 by ldmatrix, clamped to NH - 1 as in lfe_gemm1_runs) against the warpgroup's 64 columns of w0,
   issued as one wgmma group into acc (the bias comes from the GEMM: S::BK, or is added in the epilogue). */
template <typename T, int C, int E>
static __device__ __forceinline__ void lfe_gemm1_wg_issue(float (&acc)[8][4], const unsigned short *s0, int m,
                                                          unsigned long long db) {
    typedef lfe_shape<C, E> S;
    constexpr unsigned LBO = 2 * S::NTH * 8 * 16; /* bytes between w0's k groups */
    const int lane = threadIdx.x & 31, wi = (threadIdx.x >> 5) & 3;
    const unsigned short *pa = s0 + min(m * 64 + wi * 16 + (lane & 15), S::NH - 1) * S::XS + (lane >> 4) * 8;
    unsigned af[S::K1 / 16][4];
#pragma unroll
    for (int kc = 0; kc < S::K1 / 16; kc++) elan_ldsm_x4(af[kc], pa + kc * 16);
    elan_wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < S::K1 / 16; kc++) elan_wgmma_m64n64k16<T>(acc, af[kc], db + (2 * kc * LBO >> 4), kc > 0);
    elan_wgmma_commit();
}
/* ... and its epilogue: b0 where the GEMM has no bias channels (!S::BK), relu, rounding to T, stores into H
   (padded n8 tiles past NT1 skipped; BORDER as in lfe_gemm1_runs). */
template <typename T, int C, int E, bool BORDER>
static __device__ __forceinline__ void lfe_gemm1_wg_store(const float (&acc)[8][4], unsigned short *hs,
                                                          const float *b0s, int m, lfe_tile tl, int Hp, int Wp) {
    typedef lfe_shape<C, E> S;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, h = warp >> 2;
    const int q0 = m * 64 + (warp & 3) * 16 + g, q1 = q0 + 8; /* rows past NH land in H's spare rows */
    bool ina = true, inb = true;
    if (BORDER) ina = lfe_hidden_in<C, E>(tl, q0, Hp, Wp), inb = lfe_hidden_in<C, E>(tl, q1, Hp, Wp);
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (j < S::NT1 - 8 || h * 8 + j < S::NT1) { /* compile-time true but in the second warpgroup's last tile */
            const int n = (h * 8 + j) * 8 + 2 * t;
            unsigned v0, v1;
            if constexpr (S::BK == 0) {
                const float2 bb = *(const float2 *)(b0s + n);
                v0 = elan_pack2_relu<T>(acc[j][0] + bb.x, acc[j][1] + bb.y);
                v1 = elan_pack2_relu<T>(acc[j][2] + bb.x, acc[j][3] + bb.y);
            } else { /* (adding a zero bias would still cost an FADD each: x + 0.0f is not x for x = -0.0f) */
                v0 = elan_pack2_relu<T>(acc[j][0], acc[j][1]);
                v1 = elan_pack2_relu<T>(acc[j][2], acc[j][3]);
            }
            if (BORDER) v0 = ina ? v0 : 0u, v1 = inb ? v1 : 0u;
            *(unsigned *)(hs + q0 * S::HS + n) = v0;
            *(unsigned *)(hs + q1 * S::HS + n) = v1;
        }
    }
}
/* GEMM1 on wgmma: warpgroup h takes columns 64h .. 64h+63 of the three m64 tiles, one tile after the other
   (issue, wait, store). Two tiles in flight would overlap one's epilogue with the next one's tensor work, but
   their accumulators and A fragments (96 registers) spill at the 128-register cap: slower (H100 dev check), as
   was S0 in the core-matrix layout with A read by the tensor cores (no ldmatrix, two m64n32 units in flight:
   0.121 -> 0.126-0.137 ms, longer waits for the staging). w0a: w0's shared address. */
template <typename T, int C, int E, bool BORDER>
static __device__ __forceinline__ void lfe_gemm1_wg(const unsigned short *s0, unsigned short *hs, unsigned w0a,
                                                    const float *b0s, lfe_tile tl, int Hp, int Wp) {
    typedef lfe_shape<C, E> S;
    static_assert(S::MT1 == 12, "three m64 tiles of hidden pixels");
    const unsigned long long db = elan_wgmma_desc(w0a + (threadIdx.x >> 7) * 8 * 128, 2 * S::NTH * 8 * 16, 128);
    float acc[8][4];
#pragma unroll 1
    for (int m = 0; m < 3; m++) {
        lfe_gemm1_wg_issue<T, C, E>(acc, s0, m, db);
        elan_wgmma_wait<0>();
        lfe_gemm1_wg_store<T, C, E, BORDER>(acc, hs, b0s, m, tl, Hp, Wp);
    }
}
#else
#define LFE_WG_ARCH 0
#endif

/* The run path's tile loop (see the opening comment, steps 1-5). The first tile's S0 is already in flight.
   XF: the fp32 residual stream a.x is present (a compile-time choice: a run-time test left both variants'
   address arithmetic in the loop, predicated, about 100 issued instructions per warp and tile). */
template <typename T, int C, int E, bool XF, bool WG>
static __device__ __forceinline__ void lfe_loop_runs(const elan_cuda_lfe_args &a, unsigned char *smem, lfe_piece lp) {
    typedef lfe_shape<C, E> S;
    const unsigned short *w0s = (const unsigned short *)(smem + S::W0);
    const unsigned short *w1s = (const unsigned short *)(smem + S::W1);
    unsigned short *s0 = (unsigned short *)(smem + S::X);
    unsigned short *hs = (unsigned short *)(smem + S::HR);
    const int *d1 = (const int *)(smem + S::D1);
    const int *ro = (const int *)(smem + S::RO);
    const float *b0s = (const float *)(smem + S::B0);
    const float *b1s = (const float *)(smem + S::B1);
    constexpr bool WGP = WG && LFE_WG_ARCH && S::WG; /* both GEMMs on wgmma (w0, w1 in the core-matrix layout) */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int Hp = a.Hp, Wp = a.Wp;
    const int tiles_x = Wp / LFE_TW, tiles_img = Hp / LFE_TH * tiles_x, ntiles = a.n * tiles_img;
    const unsigned short *xh = (const unsigned short *)a.xh_in;
#if LFE_WG_ARCH
    const unsigned w0a = elan_smem_addr(w0s);
    /* GEMM2's B: w1 (NT2 * 8 = 64 rows, K2G columns), k groups 64 * 16 bytes apart */
    const unsigned long long db1 = elan_wgmma_desc(elan_smem_addr(w1s), S::NT2 * 8 * 16, 128);
#endif

    /* GEMM1's B by ldmatrix x2 (lfe_gemm1_runs), matrices (n8 tile, k lo), (n8 tile, k hi); lanes 16-31 repeat 0-15 */
    const unsigned short *w0q = w0s + ((warp >> 1) * (S::NTH / 2) * 8 + (lane & 7)) * S::XS + ((lane >> 3) & 1) * 8;
    const int arow = lane & 15, akh = lane >> 4; /* GEMM2's A by ldmatrix x4: row arow of the m16 tile, k half akh */
    /* GEMM2's B by ldmatrix x4, matrices (n8 tile 2np, k lo), (2np, k hi), (2np + 1, k lo), (2np + 1, k hi) */
    const int bo1 = ((lane >> 4) * 8 + (lane & 7)) * S::HS + ((lane >> 3) & 1) * 8;

    lfe_tile tq = lfe_tile_at(blockIdx.x, tiles_x, tiles_img); /* in sweep order; tl, nx: where they lie */
    const lfe_tile step = lfe_tile_at(gridDim.x, tiles_x, tiles_img);
#pragma unroll 1
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const bool more = tile + (int)gridDim.x < ntiles;
        if (!more) elan_pdl_trigger(); /* the last tile: the next kernel may start placing its CTAs */
        const lfe_tile nq = more ? lfe_tile_next(tq, step, Hp, Wp) : tq;
        const lfe_tile tl = lfe_sweep(tq, a.rev, a.n, Hp, Wp), nx = lfe_sweep(nq, a.rev, a.n, Hp, Wp); /* the next tile */
        elan_cp_async_wait_all();
        __syncthreads(); /* S0 of this tile (and, the first time, weights and tables) visible; GEMM2 of the last
                            tile is done with H */
        if (more) lfe_prefetch<C, E>(xh, XF ? a.x : NULL, nx, Hp, Wp);

        /* ---- GEMM1: H = relu(S0 w0^T + b0) on the 180 hidden pixels ---- */
        const bool interior = tl.y0 >= 1 && tl.y0 + LFE_TH < Hp && tl.x0 >= 1 && tl.x0 + LFE_TW < Wp;
        if constexpr (WGP) {
#if LFE_WG_ARCH
            if (interior)
                lfe_gemm1_wg<T, C, E, false>(s0, hs, w0a, b0s, tl, Hp, Wp);
            else
                lfe_gemm1_wg<T, C, E, true>(s0, hs, w0a, b0s, tl, Hp, Wp);
#endif
        } else if (interior) {
            lfe_gemm1_runs<T, C, E, false>(s0, hs, w0q, b0s, tl, Hp, Wp);
        } else {
            lfe_gemm1_runs<T, C, E, true>(s0, hs, w0q, b0s, tl, Hp, Wp);
        }
        /* GEMM2 work split: warp w takes MI m16 tiles (tile rows row0 .. row0 + MI - 1) and NJ n8 tiles from nj0.
           MI = 2 (rows 2 (w / 2), +1; n-half w % 2) loads each B fragment once for two m16 tiles: 4 ldmatrix
           per k-step instead of 5 (MI = 1: one tile row, all n8 tiles, every warp reloading all of w1). */
        constexpr int MI = WGP ? 1 : S::NT2 % 4 == 0 ? LFE_G2_MI : 1, NJ = S::NT2 / MI; /* WGP: warp = tile row */
        const int row0 = MI == 1 ? warp : 2 * (warp >> 1), nj0 = MI == 1 ? 0 : (warp & 1) * NJ;
        /* GEMM2's accumulators start at x + b1 of tile rows row0 + mi, pixels x0+g (c0, c1) and x0+g+8 (c2, c3):
           the fp32 x loads are issued before the barrier and used after it and the staging, so their latency (an
           L2 hit: prefetched a tile ago) hides behind both. The half stream's residual is xh_in, already in S0 (a
           channel of tap d at hidden pixel p - d: ro), read from there before the barrier frees S0 (4% faster than
           from global memory, step 11); the raw pairs are widened only after it. */
        /* element offset of the lane's first pair, (pixel x0 + g of tile row row0 + mi) * C + nj0 * 8 + 2t: the
           pairs of the lane are at + nt * 8 and + 8 * C from it, immediate offsets of one address per row */
        long long pm[MI];
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
            pm[mi] = (((long long)tl.img * Hp + tl.y0 + row0 + mi) * Wp + tl.x0 + g) * C + nj0 * 8 + 2 * t;
        float acc2[MI][NJ][4];
        unsigned raw[MI][NJ][2];
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
            for (int nt = 0; nt < NJ; nt++) {
                const int c = (nj0 + nt) * 8 + 2 * t;
                if (c < C) { /* c even and C even: c + 1 < C too */
                    if (XF) {
                        const float *xr = a.x + pm[mi] + nt * 8;
                        const float2 r0 = __ldcs((const float2 *)xr), r1 = __ldcs((const float2 *)(xr + 8 * C));
                        acc2[mi][nt][0] = r0.x, acc2[mi][nt][1] = r0.y, acc2[mi][nt][2] = r1.x, acc2[mi][nt][3] = r1.y;
                    } else {
                        const unsigned short *sr = s0 + ((row0 + mi) * S::HW + g) * S::XS + ro[c];
                        raw[mi][nt][0] = *(const unsigned *)sr;
                        raw[mi][nt][1] = *(const unsigned *)(sr + 8 * S::XS);
                    }
                } else {
                    acc2[mi][nt][0] = acc2[mi][nt][1] = acc2[mi][nt][2] = acc2[mi][nt][3] = 0.0f;
                    raw[mi][nt][0] = raw[mi][nt][1] = 0u;
                }
            }
        __syncthreads(); /* H complete; S0 free */

        /* hidden-tile rows of the lane's ldmatrix pixel (output (r, c) is hidden (r + 1, c + 1)) */
        const unsigned short *ha[MI];
#pragma unroll
        for (int mi = 0; mi < MI; mi++) ha[mi] = hs + ((row0 + mi + 1) * S::HW + arow + 1) * S::HS;
        if (more) lfe_stage_runs<C, E>(xh, s0, lp, nx, Hp, Wp);
        if (!XF) {
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int nt = 0; nt < NJ; nt++)
                    if ((nj0 + nt) * 8 + 2 * t < C) {
                        const float2 r0 = elan_unpack2<T>(raw[mi][nt][0]), r1 = elan_unpack2<T>(raw[mi][nt][1]);
                        acc2[mi][nt][0] = r0.x, acc2[mi][nt][1] = r0.y, acc2[mi][nt][2] = r1.x, acc2[mi][nt][3] = r1.y;
                    }
        }
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const float2 bb = *(const float2 *)(b1s + (nj0 + j) * 8 + 2 * t);
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
                acc2[mi][j][0] += bb.x, acc2[mi][j][1] += bb.y, acc2[mi][j][2] += bb.x, acc2[mi][j][3] += bb.y;
        }

#if LFE_WG_ARCH
        /* wgmma path: all of GEMM2's A fragments (after the residual and the staging: fewer live registers; K
           padded to K2G: a run past R1 is zero), then the tensor work in one group */
        constexpr int KS2 = S::K2G / 16;
        unsigned ag[WGP ? KS2 : 1][4];
        if constexpr (WGP) {
#pragma unroll
            for (int kc = 0; kc < KS2; kc++) {
                if (2 * kc + 1 < S::R1) {
                    elan_ldsm_x4(ag[kc], ha[0] + d1[2 * kc + akh]); /* run 2kc + akh, shifted by its tap */
                } else {
                    elan_ldsm_x2(ag[kc], ha[0] + d1[2 * kc]);
                    ag[kc][2] = ag[kc][3] = 0u;
                }
            }
        }
#endif

        /* ---- GEMM2 + epilogue: tile rows row0 .. row0 + MI - 1, n8 tiles nj0 .. nj0 + NJ - 1 ---- */
        if constexpr (WGP) {
#if LFE_WG_ARCH
            elan_wgmma_fence();
#pragma unroll
            for (int kc = 0; kc < KS2; kc++)
                elan_wgmma_m64n64k16<T>(acc2[0], ag[kc], db1 + (2 * kc * (S::NT2 * 8 * 16) >> 4), 1);
            elan_wgmma_commit();
            elan_wgmma_wait<0>();
#endif
        } else {
            float(&acc)[MI][NJ][4] = acc2;
            const unsigned short *wb = w1s + nj0 * 8 * S::HS + bo1;
#pragma unroll
            for (int kc = 0; kc < S::KC2; kc++) {
                unsigned af[MI][4];
#pragma unroll
                for (int mi = 0; mi < MI; mi++)
                    elan_ldsm_x4(af[mi], ha[mi] + d1[2 * kc + akh]); /* run 2kc + akh, shifted by its tap */
#pragma unroll
                for (int np = 0; np < NJ / 2; np++) {
                    unsigned bf[4];
                    elan_ldsm_x4(bf, wb + np * 16 * S::HS + kc * 16);
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        elan_mma16816<T>(acc[mi][2 * np], af[mi], bf);
                        elan_mma16816<T>(acc[mi][2 * np + 1], af[mi], bf + 2);
                    }
                }
            }
            if constexpr (S::KT2 != 0) { /* the last run (k = KC2*16 .. +7) as m16n8k8; x2 reads lanes 0-15 */
                const int k0 = S::KC2 * 16;
                unsigned af[MI][2];
#pragma unroll
                for (int mi = 0; mi < MI; mi++) elan_ldsm_x2(af[mi], ha[mi] + d1[S::R1 - 1]);
#pragma unroll
                for (int np = 0; np < NJ / 2; np++) {
                    /* matrices: (n8 tile 2np, k0..k0+7), (2np+1, k0..k0+7); lanes 16-31 repeat 0-15 */
                    unsigned bf[2];
                    elan_ldsm_x2(bf, w1s + ((nj0 + 2 * np + ((lane >> 3) & 1)) * 8 + (lane & 7)) * S::HS + k0);
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        elan_mma1688<T>(acc[mi][2 * np], af[mi], bf[0]);
                        elan_mma1688<T>(acc[mi][2 * np + 1], af[mi], bf[1]);
                    }
                }
            }
        }
#if LFE_WG_ARCH
        if constexpr (WGP && !XF) {
            /* The warp's tile row (16 pixels x C halves, contiguous in xh_out) goes out through shared memory in
               16-byte pieces: the direct 4-byte stores touch 8 pixels 2C bytes apart per instruction (Nsight Compute:
               12 of 32 bytes of a sector used per store request). The row is staged in H at a hidden row that only
               this warpgroup's GEMM2 reads (warpgroup 0 reads hidden rows 0-5, warpgroup 1 rows 4-9), and the
               warpgroup's wgmma is complete, so no other warp still reads it; the next tile's GEMM1 writes H only
               after the barrier at the top of the loop. */
            unsigned short *ob = hs + (warp < 4 ? warp : warp + 2) * S::HW * S::HS;
#pragma unroll
            for (int nt = 0; nt < NJ; nt++) {
                const int c = nt * 8 + 2 * t;
                if (c < C) {
                    *(unsigned *)(ob + g * C + c) = elan_pack2_out<T>(acc2[0][nt][0], acc2[0][nt][1]);
                    *(unsigned *)(ob + (g + 8) * C + c) = elan_pack2_out<T>(acc2[0][nt][2], acc2[0][nt][3]);
                }
            }
            __syncwarp();
            uint4 *dst = (uint4 *)((T *)a.xh_out + pm[0] - g * C - 2 * t); /* pixel x0 of tile row `warp` */
            constexpr int P16 = LFE_TW * C * 2 / 16;
            static_assert(LFE_TW * C * 2 % 16 == 0 && P16 <= 4 * 32, "a tile row in at most four 16-byte pieces per lane");
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (i * 32 + lane < P16) dst[i * 32 + lane] = ((const uint4 *)ob)[i * 32 + lane];
        } else
#endif
        {
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int nt = 0; nt < NJ; nt++) {
                    const int c = (nj0 + nt) * 8 + 2 * t;
                    if (c < C) {
                        lfe_store<T, XF>(a, pm[mi] + nt * 8, make_float2(acc2[mi][nt][0], acc2[mi][nt][1]));
                        lfe_store<T, XF>(a, pm[mi] + nt * 8 + 8 * C, make_float2(acc2[mi][nt][2], acc2[mi][nt][3]));
                    }
                }
        }
        tq = nq;
    }
}

/* The generic path's tile loop (shifts gathered per channel while building the A fragments). The first
   tile's X is already in flight. */
template <typename T, int C, int E>
static __device__ __forceinline__ void lfe_loop_generic(const elan_cuda_lfe_args &a, unsigned char *smem) {
    typedef lfe_shape<C, E> S;
    const unsigned short *w0s = (const unsigned short *)(smem + S::W0);
    const unsigned short *w1s = (const unsigned short *)(smem + S::W1);
    unsigned short *xs = (unsigned short *)(smem + S::X);
    unsigned short *hs = (unsigned short *)(smem + S::H);
    const int *off0 = (const int *)(smem + S::O0);
    const int *off1 = (const int *)(smem + S::O1);
    const float *b0s = (const float *)(smem + S::B0);
    const float *b1s = (const float *)(smem + S::B1);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int Hp = a.Hp, Wp = a.Wp;
    const int tiles_x = Wp / LFE_TW, tiles_img = Hp / LFE_TH * tiles_x, ntiles = a.n * tiles_img;
    const unsigned short *xh = (const unsigned short *)a.xh_in;

    const int nh = warp & 1; /* GEMM1: which half of the n8 tiles */
    const unsigned short *w0h = w0s + nh * S::NTH * 8 * S::XS;

#pragma unroll 1
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const lfe_tile tl = lfe_sweep(lfe_tile_at(tile, tiles_x, tiles_img), a.rev, a.n, Hp, Wp);
        if (tile + (int)gridDim.x >= ntiles) elan_pdl_trigger();
        elan_cp_async_wait_all();
        __syncthreads(); /* X of this tile (and, the first time, the weights) visible; GEMM2 of the last tile
                            is done with H */

        /* ---- GEMM1: H = relu(shift0(X) w0^T + b0) on the 180 hidden pixels ---- */
#pragma unroll 1
        for (int mt = warp >> 1; mt < S::MT1; mt += LFE_THREADS / 64) {
            const int q0 = mt * 16 + g, q1 = q0 + 8; /* hidden pixels of rows g, g+8 of the m16 tile */
            const int qa = min(q0, S::NH - 1), qb = min(q1, S::NH - 1); /* rows past 180: any valid address */
            const int ya = qa / S::HW, yb = qb / S::HW;
            const unsigned short *pa = xs + ((ya + 1) * S::XW + (qa - ya * S::HW) + 1) * S::XS;
            const unsigned short *pb = xs + ((yb + 1) * S::XW + (qb - yb * S::HW) + 1) * S::XS;
            float acc[S::NTH][4];
#pragma unroll
            for (int j = 0; j < S::NTH; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < S::K1 / 16; kc++) {
                const int2 oa = *(const int2 *)(off0 + kc * 16 + 2 * t);     /* channels k0+2t, k0+2t+1 */
                const int2 ob = *(const int2 *)(off0 + kc * 16 + 8 + 2 * t); /* channels k0+8+2t, +1 */
                unsigned af[4];
                af[0] = lfe_pk(pa[oa.x], pa[oa.y]);
                af[1] = lfe_pk(pb[oa.x], pb[oa.y]);
                af[2] = lfe_pk(pa[ob.x], pa[ob.y]);
                af[3] = lfe_pk(pb[ob.x], pb[ob.y]);
#pragma unroll
                for (int np = 0; np < S::NTH / 2; np++) {
                    /* matrices: (n8 tile 2np, k lo), (2np, k hi), (2np+1, k lo), (2np+1, k hi) */
                    unsigned bf[4];
                    elan_ldsm_x4(bf, w0h + ((2 * np + (lane >> 4)) * 8 + (lane & 7)) * S::XS + kc * 16 +
                                         ((lane >> 3) & 1) * 8);
                    elan_mma16816<T>(acc[2 * np], af, bf);
                    elan_mma16816<T>(acc[2 * np + 1], af, bf + 2);
                }
            }
            /* hidden pixels outside the image are the zero fill of shift1 */
            const bool ina = lfe_hidden_in<C, E>(tl, q0, Hp, Wp), inb = lfe_hidden_in<C, E>(tl, q1, Hp, Wp);
#pragma unroll
            for (int j = 0; j < S::NTH; j++) {
                const int n = (nh * S::NTH + j) * 8 + 2 * t;
                if (n < E) { /* n even and E % 8 == 0: n + 1 < E too */
                    const float2 bb = *(const float2 *)(b0s + n);
                    if (q0 < S::NH)
                        *(unsigned *)(hs + q0 * S::HS + n) =
                            ina ? elan_pack2_relu<T>(acc[j][0] + bb.x, acc[j][1] + bb.y) : 0u;
                    if (q1 < S::NH)
                        *(unsigned *)(hs + q1 * S::HS + n) =
                            inb ? elan_pack2_relu<T>(acc[j][2] + bb.x, acc[j][3] + bb.y) : 0u;
                }
            }
        }
        __syncthreads(); /* H complete; X free */

        if (tile + (int)gridDim.x < ntiles)
            lfe_stage<C, E>(xh, xs, lfe_sweep(lfe_tile_at(tile + gridDim.x, tiles_x, tiles_img), a.rev, a.n, Hp, Wp), Hp,
                            Wp);

        /* ---- GEMM2 + epilogue: tile row `warp`, pixels x0+g and x0+g+8 ---- */
        {
            const long long p0 = ((long long)tl.img * Hp + tl.y0 + warp) * Wp + tl.x0 + g, p1 = p0 + 8;
            float2 r0[S::NT2], r1[S::NT2]; /* residual, loaded now so that GEMM2 hides the latency */
#pragma unroll
            for (int nt = 0; nt < S::NT2; nt++) {
                const int c = nt * 8 + 2 * t;
                if (c < C) { /* c even and C even: c + 1 < C too */
                    r0[nt] = a.x ? lfe_residual<T, C, true>(a, p0, c) : lfe_residual<T, C, false>(a, p0, c);
                    r1[nt] = a.x ? lfe_residual<T, C, true>(a, p1, c) : lfe_residual<T, C, false>(a, p1, c);
                } else {
                    r0[nt] = r1[nt] = make_float2(0.0f, 0.0f);
                }
            }
            /* hidden-tile rows of the two output pixels (output (r, c) is hidden (r + 1, c + 1)) */
            const unsigned short *ha = hs + ((warp + 1) * S::HW + g + 1) * S::HS;
            const unsigned short *hb = ha + 8 * S::HS;
            float acc[S::NT2][4];
#pragma unroll
            for (int j = 0; j < S::NT2; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < S::KC2; kc++) {
                const int2 oa = *(const int2 *)(off1 + kc * 16 + 2 * t);
                const int2 ob = *(const int2 *)(off1 + kc * 16 + 8 + 2 * t);
                unsigned af[4];
                af[0] = lfe_pk(ha[oa.x], ha[oa.y]);
                af[1] = lfe_pk(hb[oa.x], hb[oa.y]);
                af[2] = lfe_pk(ha[ob.x], ha[ob.y]);
                af[3] = lfe_pk(hb[ob.x], hb[ob.y]);
#pragma unroll
                for (int np = 0; np < S::NT2 / 2; np++) {
                    unsigned bf[4];
                    elan_ldsm_x4(bf, w1s + ((2 * np + (lane >> 4)) * 8 + (lane & 7)) * S::HS + kc * 16 +
                                         ((lane >> 3) & 1) * 8);
                    elan_mma16816<T>(acc[2 * np], af, bf);
                    elan_mma16816<T>(acc[2 * np + 1], af, bf + 2);
                }
            }
            if constexpr (S::KT2 != 0) { /* k = KC2*16 .. +7 as m16n8k8 */
                const int k0 = S::KC2 * 16;
                const int2 oa = *(const int2 *)(off1 + k0 + 2 * t);
                unsigned af[2];
                af[0] = lfe_pk(ha[oa.x], ha[oa.y]);
                af[1] = lfe_pk(hb[oa.x], hb[oa.y]);
#pragma unroll
                for (int np = 0; np < S::NT2 / 2; np++) {
                    /* matrices: (n8 tile 2np, k0..k0+7), (2np+1, k0..k0+7); lanes 16-31 repeat 0-15 */
                    unsigned bf[2];
                    elan_ldsm_x2(bf, w1s + ((2 * np + ((lane >> 3) & 1)) * 8 + (lane & 7)) * S::HS + k0);
                    elan_mma1688<T>(acc[2 * np], af, bf[0]);
                    elan_mma1688<T>(acc[2 * np + 1], af, bf[1]);
                }
            }
#pragma unroll
            for (int nt = 0; nt < S::NT2; nt++) {
                const int c = nt * 8 + 2 * t;
                if (c < C) {
                    const float2 bb = *(const float2 *)(b1s + c);
                    const float2 v0 = make_float2(r0[nt].x + (acc[nt][0] + bb.x), r0[nt].y + (acc[nt][1] + bb.y));
                    const float2 v1 = make_float2(r1[nt].x + (acc[nt][2] + bb.x), r1[nt].y + (acc[nt][3] + bb.y));
                    if (a.x) {
                        lfe_store<T, true>(a, p0 * C + c, v0);
                        lfe_store<T, true>(a, p1 * C + c, v1);
                    } else {
                        lfe_store<T, false>(a, p0 * C + c, v0);
                        lfe_store<T, false>(a, p1 * C + c, v1);
                    }
                }
            }
        }
    }
}

/* The kernel: shift tables, the path test (tap0 constant over aligned runs of 4 channels and tap1 over aligned
   runs of 8, taps past 8 read as 8; elan_cuda_lfe_fused_taps_ok tests the same on the host), weights, then
   the tile loop of that path. WG: the run path on wgmma where the build and the shape allow it (sm_90a, S::WG). */
template <typename T, int C, int E, bool WG>
static __global__ void __launch_bounds__(LFE_THREADS, 2) lfe_fused_kernel(elan_cuda_lfe_args a) {
    typedef lfe_shape<C, E> S;
    extern __shared__ float4 lfe_smem4[];
    unsigned char *smem = (unsigned char *)lfe_smem4;
    unsigned short *w0s = (unsigned short *)(smem + S::W0);
    unsigned short *w1s = (unsigned short *)(smem + S::W1);
    unsigned short *xs = (unsigned short *)(smem + S::X);
    int *off0 = (int *)(smem + S::O0);
    int *off1 = (int *)(smem + S::O1);
    int2 *d0 = (int2 *)(smem + S::D0);
    int *ro = (int *)(smem + S::RO);
    int *d1 = (int *)(smem + S::D1);
    float *b0s = (float *)(smem + S::B0);
    float *b1s = (float *)(smem + S::B1);

    const int tid = threadIdx.x;
    const int Hp = a.Hp, Wp = a.Wp;
    const int tiles_x = Wp / LFE_TW, tiles_img = Hp / LFE_TH * tiles_x, ntiles = a.n * tiles_img;
    if ((int)blockIdx.x >= ntiles) return;

    /* shift tables of both paths, and which path the taps allow */
    int ok = 1;
    for (int c = tid; c < S::K1; c += LFE_THREADS) {
        int o = c; /* generic: padded channels read their own (zero) slot of the centre pixel */
        if (c < C) {
            const int tp = lfe_tap(a.tap0[c]);
            o += ((tp / 3 - 1) * S::XW + (tp % 3 - 1)) * S::XS;
            ok &= tp == lfe_tap(a.tap0[c & ~3]);
            if ((c & 3) == 0) d0[c >> 2] = make_int2(tp / 3 - 1, tp % 3 - 1);
            /* run path, half stream: xh_in[p][c] is s0 at hidden pixel p - d(tap0[c]), inside the hidden tile */
            ro[c] = ((1 - (tp / 3 - 1)) * S::HW + (1 - (tp % 3 - 1))) * S::XS + c;
        }
        off0[c] = o;
    }
    for (int j = tid; j < E; j += LFE_THREADS) {
        const int tp = lfe_tap(a.tap1[j]);
        const int o = ((tp / 3 - 1) * S::HW + (tp % 3 - 1)) * S::HS;
        off1[j] = j + o;
        ok &= tp == lfe_tap(a.tap1[j & ~7]);
        if ((j & 7) == 0) d1[j >> 3] = j + o;
    }
    const bool runs = __syncthreads_and(ok) != 0; /* also publishes d0 to the first stage */

    /* once per CTA: weights and biases (zero-padded), zero channels C..K1-1 of X / S0 (never staged). The wgmma
       run path reads w0 and w1 in the core-matrix layout, everything else row by row. */
    const bool core = WG && LFE_WG_ARCH && S::WG && runs;
    {
        if (core) {
            elan_stage_w16<LFE_THREADS, S::K1, true>(w0s, 0, (const unsigned short *)a.w0, E, C, 2 * S::NTH * 8);
            elan_stage_w16<LFE_THREADS, S::K2G, true>(w1s, 0, (const unsigned short *)a.w1, C, E, S::NT2 * 8);
        } else {
            elan_stage_w16<LFE_THREADS, S::XS>(w0s, S::XS, (const unsigned short *)a.w0, E, C, 2 * S::NTH * 8);
            elan_stage_w16<LFE_THREADS, S::HS>(w1s, S::HS, (const unsigned short *)a.w1, C, E, S::NT2 * 8);
        }
        for (int j = tid; j < 2 * S::NTH * 8; j += LFE_THREADS) b0s[j] = j < E ? a.b0[j] : 0.0f;
        for (int c = tid; c < S::NT2 * 8; c += LFE_THREADS) b1s[c] = c < C ? a.b1[c] : 0.0f;
        if constexpr (S::K1 > C)
            for (int i = tid; i < S::NX * (S::K1 - C); i += LFE_THREADS) {
                const int px = i / (S::K1 - C), c = C + (i - px * (S::K1 - C));
                /* run path: S0 (rows 0 .. NH-1) holds 1 in the bias channels (the generic path adds b0 itself,
                   and its zero channels cancel the bias columns of w0) */
                ((T *)xs)[px * S::XS + c] = elan_from_f<T>(runs && px < S::NH && c < C + S::BK ? 1.0f : 0.0f);
            }
        if constexpr (S::BK != 0) {
            __syncthreads(); /* w0 staged (its columns past C zeroed): now its bias columns */
            for (int n = tid; n < E; n += LFE_THREADS) {
                const float b = a.b0[n];
                const T hi = elan_from_f<T>(b), mid = elan_from_f<T>(b - elan_to_f(hi));
                /* K channels C .. C+2 lie in one k group (C % 4 == 0): consecutive in either layout */
                T *row = (T *)w0s + (core ? elan_core_off(n, C, 2 * S::NTH * 8) : n * S::XS + C);
                row[0] = hi;
                row[1] = mid;
                row[2] = elan_from_f<T>(b - elan_to_f(hi) - elan_to_f(mid));
            }
        }
    }

#if LFE_WG_ARCH
    if (core) elan_fence_proxy_async(); /* the weights, for wgmma's reads (after the loop's first barrier) */
#endif
    /* the input: from here on the previous kernel has completed (programmatic dependent launch) */
    elan_pdl_wait();
    const unsigned short *xh = (const unsigned short *)a.xh_in;
    const lfe_tile first = lfe_sweep(lfe_tile_at(blockIdx.x, tiles_x, tiles_img), a.rev, a.n, Hp, Wp);
    const lfe_piece lp = lfe_lane_piece<C, E>(d0);
    if (runs)
        lfe_stage_runs<C, E>(xh, xs, lp, first, Hp, Wp);
    else
        lfe_stage<C, E>(xh, xs, first, Hp, Wp);

    if (runs && a.x)
        lfe_loop_runs<T, C, E, true, WG>(a, smem, lp);
    else if (runs)
        lfe_loop_runs<T, C, E, false, WG>(a, smem, lp);
    else
        lfe_loop_generic<T, C, E>(a, smem);
    elan_cp_async_wait_all(); /* nothing is in flight here (the last tile issues no stage), but leave no group open */
}

/* ---- host side ---- */

typedef void (*lfe_fn)(elan_cuda_lfe_args);

#define LFE_CASE(CC, EE)                                                                        \
    if (C == CC && e == EE) {                                                                   \
        *smem = lfe_shape<CC, EE>::SMEM;                                                        \
        if (act == ELAN_ACT_F16) return wg ? lfe_fused_kernel<__half, CC, EE, true>             \
                                           : lfe_fused_kernel<__half, CC, EE, false>;           \
        if (act == ELAN_ACT_BF16) return wg ? lfe_fused_kernel<__nv_bfloat16, CC, EE, true>     \
                                            : lfe_fused_kernel<__nv_bfloat16, CC, EE, false>;   \
        return NULL;                                                                            \
    }

static lfe_fn lfe_pick(int C, int e, int act, size_t *smem, bool wg) {
    LFE_CASE(60, 120)
    LFE_CASE(32, 64)
    LFE_CASE(48, 96)
    LFE_CASE(64, 128)
    return NULL;
}

extern "C" int elan_cuda_lfe_fused_supported(int C, int e) {
    size_t smem;
    return lfe_pick(C, e, ELAN_ACT_F16, &smem, false) ? 0 : -1;
}

static int lfe_tap_host(unsigned char tp) { return tp < 8 ? (int)tp : 8; }

extern "C" int elan_cuda_lfe_fused_taps_ok(const unsigned char *host_taps0, int C, const unsigned char *host_taps1,
                                           int e) {
    if (!host_taps0 || !host_taps1 || C <= 0 || e <= 0 || C % 4 || e % 8) return 0;
    for (int c = 0; c < C; c++)
        if (lfe_tap_host(host_taps0[c]) != lfe_tap_host(host_taps0[c & ~3])) return 0;
    for (int j = 0; j < e; j++)
        if (lfe_tap_host(host_taps1[j]) != lfe_tap_host(host_taps1[j & ~7])) return 0;
    return 1;
}

extern "C" cudaError_t elan_cuda_lfe_fused_prepare(int C, int e, int act) {
    size_t smem = 0;
    const lfe_fn fn = lfe_pick(C, e, act, &smem, false), fw = lfe_pick(C, e, act, &smem, true);
    if (!fn) return cudaErrorInvalidValue;
    const cudaError_t err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    return err != cudaSuccess ? err : cudaFuncSetAttribute(fw, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

extern "C" cudaError_t elan_cuda_lfe_fused(const elan_cuda_lfe_args *a, cudaStream_t s) {
    size_t smem = 0;
    lfe_fn fn = lfe_pick(a->C, a->e, a->act, &smem, false);
    if (!fn || a->n < 0 || a->Hp <= 0 || a->Wp <= 0 || a->Hp % LFE_TH || a->Wp % LFE_TW || a->xh_in == a->xh_out)
        return cudaErrorInvalidValue;
    /* 8-byte pieces of xh_in, float2 of x, 32-bit pairs of xh_out (every cudaMalloc'd buffer qualifies) */
    if (((size_t)a->xh_in & 7) || ((size_t)a->x & 7) || ((size_t)a->xh_out & 3) || ((size_t)a->w0 & 1) ||
        ((size_t)a->w1 & 1))
        return cudaErrorInvalidValue;
    const long long tiles = (long long)a->n * (a->Hp / LFE_TH) * (a->Wp / LFE_TW);
    if (tiles == 0) return cudaGetLastError();
    if (tiles > INT_MAX) return cudaErrorInvalidValue;
    long long slots = 0;
    const cudaError_t err = elan_resident_ctas(fn, LFE_THREADS, smem, &slots);
    if (err != cudaSuccess) return err;
    const long long grid = tiles < slots ? tiles : slots;
    /* the wgmma path unless a.wg == 0 (the backend: ELANSR_CUDA_LFE_WG=0; tests, A/B). Up to step 11 it was taken
       only where a CTA runs >= 6 tiles (4K), being 1.5-2.5% slower at 720p and 16 x 64x64; with its tile rows
       stored through shared memory it is 4-6% faster there too (H100, same lease). Its 16-byte stores of whole
       tile rows need xh_out 16-byte aligned (every cudaMalloc'd buffer is). */
    const bool wg = a->wg != 0 && ((size_t)a->xh_out & 15) == 0;
    if (wg) fn = lfe_pick(a->C, a->e, a->act, &smem, true); /* the same shared memory and registers */
    return elan_launch_pdl(fn, dim3((unsigned)grid), dim3(LFE_THREADS), smem, s, *a);
}
