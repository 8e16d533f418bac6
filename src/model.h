/* model.h — ELAN held in a backend-neutral form: plain float32 host arrays, BatchNorm already folded into
   project_inp, shift masks decoded to one tap per channel. The loader builds it from a checkpoint; each
   backend (cpu/, cuda/) reads it once at creation and lays the weights out as it likes. */
#ifndef ELANSR_MODEL_H
#define ELANSR_MODEL_H

#include <stddef.h>

/* Dense convolution, weight laid out as PyTorch's: w[cout][cin][k][k], bias b[cout]. k = 1 or 3. */
typedef struct {
    int cin, cout, k;
    float *w;
    float *b;
} elan_conv;

/* ShiftConv: every input channel c is first moved by one pixel (zero fill) as its one-hot 3x3 mask says,
   then a 1x1 conv. tap[c] = ky*3 + kx of the mask's single 1: the shifted value at (y, x) is
   in[c][y + ky - 1][x + kx - 1] (zero outside the image). tap 4 = identity. */
typedef struct {
    elan_conv conv;     /* k = 1 */
    int *tap;           /* conv.cin entries, each 0..8 */
} elan_shift_conv;

/* LFE: x + c1(relu(c0(x))). c0: C -> e*C, c1: e*C -> C (e = 2 for ELAN-light). */
typedef struct {
    elan_shift_conv c0, c1;
} elan_lfe;

/* GMSA. proj_in: C -> 2C (computes attention: per group the first k channels are q, the next k are v) or
   C -> C (reuses the block's attention: all v). Channel order of proj_in's output: group 0 (window 4) first,
   then group 1 (8), then group 2 (16); each group 2k or k channels. proj_out: C -> C. */
typedef struct {
    elan_conv proj_in;  /* k = 1, BatchNorm folded in */
    elan_conv proj_out; /* k = 1 */
    int computes_attn;
} elan_gmsa;

/* ELAB: for j in 0..n_pairs-1: x += lfe[j](x); x += gmsa[j](x) (gmsa[0] computes A, the rest reuse it). */
typedef struct {
    int n_pairs;
    int shifted;        /* roll groups by -w/2 before attention and +w/2 after */
    elan_lfe *lfe;
    elan_gmsa *gmsa;
} elan_block;

typedef struct {
    int planes;         /* C */
    int scale;          /* s */
    int n_blocks;
    int n_share;        /* n_pairs - 1 for every block */
    int windows[3];     /* (4, 8, 16) */
    int pad_multiple;   /* lcm of windows: 16 */
    elan_conv sub_mean; /* 3 -> 3, k = 1 (identity weight, bias -255*mean in the shipped checkpoint) */
    elan_conv head;     /* 3 -> C, k = 3, zero padding 1 */
    elan_block *blocks;
    elan_conv tail;     /* C -> 3*s*s, k = 3, zero padding 1; then PixelShuffle(s) */
    elan_conv add_mean; /* 3 -> 3, k = 1 */
    size_t n_params;
} elan_model;

/* Loads and validates a checkpoint; on failure returns a status with elansr_last_error() naming the file
   and the tensor. The model owns all its arrays; free with elan_model_free. */
#include "elansr.h"
elansr_status elan_model_load(const char *path, elan_model *m);
void elan_model_free(elan_model *m);

#endif
