/* naive_elan.h — the reference every backend is tested against: ELAN.md's forward written as directly as
   possible, one op at a time, on float32 N,C,H,W tensors, with no attention to speed.

   Conventions: a tensor of C channels of an H x W image is C*H*W floats, x[(c*H + y)*W + x]. Sums are
   accumulated in double and rounded to float when stored, like an exact fp32 PyTorch op; the attention
   map A is kept in double. Each op is a static function a test can call on its own (naive_conv,
   naive_shift_conv, naive_lfe, naive_roll, naive_group_attention, naive_gmsa, naive_pixel_shuffle, ...), and
   naive_elan_forward chains them. Memory failures abort: this is test code. */
#ifndef ELANSR_NAIVE_ELAN_H
#define ELANSR_NAIVE_ELAN_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"

static void *naive_alloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "naive_elan: out of memory (%zu x %zu bytes)\n", count, size);
        exit(1);
    }
    return p;
}
static float *naive_floats(size_t count) { return naive_alloc(count, sizeof(float)); }

/* ELAN.md step 1: out (C x Hp x Wp) from in (C x h x w), bottom and right mirror-extended. */
static void naive_pad(const float *in, int C, int h, int w, float *out, int Hp, int Wp) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < Hp; y++)
            for (int x = 0; x < Wp; x++)
                out[((size_t)c * Hp + y) * Wp + x] =
                    in[((size_t)c * h + elan_mirror_index(y, h)) * w + elan_mirror_index(x, w)];
}

/* Cross-correlation with zero padding k/2 (PyTorch Conv2d): out (cout x H x W). Each output plane is
   accumulated in double, one (input channel, tap) at a time over the pixels where the tap lands inside the
   image (outside it the input is zero and adds nothing). */
static void naive_conv(const elan_conv *cv, const float *in, int H, int W, float *out) {
    const int k = cv->k, p = k / 2;
    const size_t hw = (size_t)H * W;
    double *acc = naive_alloc(hw, sizeof(double));
    for (int co = 0; co < cv->cout; co++) {
        for (size_t i = 0; i < hw; i++) acc[i] = cv->b[co];
        for (int ci = 0; ci < cv->cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    const double wv = cv->w[(((size_t)co * cv->cin + ci) * k + ky) * k + kx];
                    const int dy = ky - p, dx = kx - p;
                    for (int y = dy < 0 ? -dy : 0; y < H && y + dy < H; y++)
                        for (int x = dx < 0 ? -dx : 0; x < W && x + dx < W; x++)
                            acc[(size_t)y * W + x] += wv * in[((size_t)ci * H + y + dy) * W + x + dx];
                }
        for (size_t i = 0; i < hw; i++) out[(size_t)co * hw + i] = (float)acc[i];
    }
    free(acc);
}

/* The shift of a ShiftConv: channel c moved as its one-hot 3x3 mask says (tap = ky*3 + kx), zero fill. */
static void naive_shift(const float *in, int C, int H, int W, const int *tap, float *out) {
    for (int c = 0; c < C; c++) {
        const int dy = tap[c] / 3 - 1, dx = tap[c] % 3 - 1;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int yy = y + dy, xx = x + dx;
                out[((size_t)c * H + y) * W + x] =
                    (yy < 0 || yy >= H || xx < 0 || xx >= W) ? 0.0f : in[((size_t)c * H + yy) * W + xx];
            }
    }
}

static void naive_shift_conv(const elan_shift_conv *sc, const float *in, int H, int W, float *out) {
    float *t = naive_floats((size_t)sc->conv.cin * H * W);
    naive_shift(in, sc->conv.cin, H, W, sc->tap, t);
    naive_conv(&sc->conv, t, H, W, out);
    free(t);
}

static void naive_relu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void naive_add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* x += c1(relu(c0(x))); x has C = c0.cin channels. */
static void naive_lfe(const elan_lfe *l, float *x, int H, int W) {
    const size_t hw = (size_t)H * W;
    float *t = naive_floats((size_t)l->c0.conv.cout * hw), *u = naive_floats((size_t)l->c1.conv.cout * hw);
    naive_shift_conv(&l->c0, x, H, W, t);
    naive_relu(t, (size_t)l->c0.conv.cout * hw);
    naive_shift_conv(&l->c1, t, H, W, u);
    naive_add(x, u, (size_t)l->c1.conv.cout * hw);
    free(t);
    free(u);
}

/* torch.roll(in, (sy, sx), dims=(H, W)): the element at (y, x) moves to ((y + sy) mod H, (x + sx) mod W). */
static void naive_roll(const float *in, int C, int H, int W, int sy, int sx, float *out) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int ty = ((y + sy) % H + H) % H, tx = ((x + sx) % W + W) % W;
                out[((size_t)c * H + ty) * W + tx] = in[((size_t)c * H + y) * W + x];
            }
}

/* Doubles of one group's attention maps: (H/w)*(W/w) windows of (w*w)^2. */
static size_t naive_attn_size(int H, int W, int w) { return (size_t)(H / w) * (W / w) * w * w * w * w; }

/* One channel group of a GMSA, after proj_in: q and v are k x H x W (q NULL when reusing), y is k x H x W.
   Rolls by -shift, attends within w x w windows, rolls back. A (naive_attn_size doubles) is written from q
   when q is given, else read: A[win][i][j] = softmax_j(q_i . q_j), y_i = sum_j A[win][i][j] v_j. */
static void naive_group_attention(const float *q, const float *v, int k, int H, int W, int w, int shift, double *A,
                                  float *y) {
    const size_t hw = (size_t)H * W;
    const int n = w * w, nwx = W / w, nwy = H / w;
    float *qr = q ? naive_floats((size_t)k * hw) : NULL, *vr = naive_floats((size_t)k * hw);
    float *yr = naive_floats((size_t)k * hw);
    /* one window's tokens, token-major: tq[t][c], tv[t][c], and the pixel of each token */
    double *tq = naive_alloc((size_t)n * k, sizeof(double)), *tv = naive_alloc((size_t)n * k, sizeof(double));
    double *acc = naive_alloc((size_t)k, sizeof(double));
    size_t *pix = naive_alloc((size_t)n, sizeof(size_t));
    if (q) naive_roll(q, k, H, W, -shift, -shift, qr);
    naive_roll(v, k, H, W, -shift, -shift, vr);
    for (int wy = 0; wy < nwy; wy++)
        for (int wx = 0; wx < nwx; wx++) {
            double *a = A + ((size_t)wy * nwx + wx) * n * n;
            for (int t = 0; t < n; t++) {
                pix[t] = (size_t)(wy * w + t / w) * W + (wx * w + t % w);
                for (int c = 0; c < k; c++) {
                    tq[(size_t)t * k + c] = q ? qr[c * hw + pix[t]] : 0.0;
                    tv[(size_t)t * k + c] = vr[c * hw + pix[t]];
                }
            }
            for (int i = 0; i < n; i++) {
                double *ai = a + (size_t)i * n;
                if (q) {
                    double mx = -INFINITY, sum = 0.0;
                    for (int j = 0; j < n; j++) {
                        double s = 0.0;
                        for (int c = 0; c < k; c++) s += tq[(size_t)i * k + c] * tq[(size_t)j * k + c];
                        ai[j] = s;
                        if (s > mx) mx = s;
                    }
                    for (int j = 0; j < n; j++) {
                        ai[j] = exp(ai[j] - mx);
                        sum += ai[j];
                    }
                    for (int j = 0; j < n; j++) ai[j] /= sum;
                }
                for (int c = 0; c < k; c++) acc[c] = 0.0;
                for (int j = 0; j < n; j++)
                    for (int c = 0; c < k; c++) acc[c] += ai[j] * tv[(size_t)j * k + c];
                for (int c = 0; c < k; c++) yr[c * hw + pix[i]] = (float)acc[c];
            }
        }
    naive_roll(yr, k, H, W, shift, shift, y);
    free(qr);
    free(vr);
    free(yr);
    free(tq);
    free(tv);
    free(acc);
    free(pix);
}

/* x += proj_out(concat_i attention_i(proj_in(x))), ELAN.md GMSA; x is C x H x W (H, W multiples of the
   windows). A[i] holds group i's maps: allocated and filled when g computes attention (free them with
   naive_free_attn), read when it reuses. */
static void naive_gmsa(const elan_gmsa *g, float *x, int C, int H, int W, const int windows[3], int shifted,
                       double *A[3]) {
    const size_t hw = (size_t)H * W;
    const int k = C / 3;
    float *t = naive_floats((size_t)g->proj_in.cout * hw), *y = naive_floats((size_t)C * hw);
    float *o = naive_floats((size_t)C * hw);
    naive_conv(&g->proj_in, x, H, W, t);
    for (int i = 0; i < 3; i++) {
        const int w = windows[i], shift = shifted ? w / 2 : 0;
        const float *q = g->computes_attn ? t + (size_t)2 * k * i * hw : NULL;
        const float *v = g->computes_attn ? t + (size_t)(2 * k * i + k) * hw : t + (size_t)k * i * hw;
        if (g->computes_attn) A[i] = naive_alloc(naive_attn_size(H, W, w), sizeof(double));
        naive_group_attention(q, v, k, H, W, w, shift, A[i], y + (size_t)k * i * hw);
    }
    naive_conv(&g->proj_out, y, H, W, o);
    naive_add(x, o, (size_t)C * hw);
    free(t);
    free(y);
    free(o);
}

static void naive_free_attn(double *A[3]) {
    for (int i = 0; i < 3; i++) {
        free(A[i]);
        A[i] = NULL;
    }
}

/* One ELAB: for each pair, x += LFE(x); x += GMSA(x) (the first GMSA computes A, the others reuse it). */
static void naive_block(const elan_block *b, float *x, int C, int H, int W, const int windows[3]) {
    double *A[3] = {NULL, NULL, NULL};
    for (int j = 0; j < b->n_pairs; j++) {
        naive_lfe(&b->lfe[j], x, H, W);
        naive_gmsa(&b->gmsa[j], x, C, H, W, windows, b->shifted, A);
    }
    naive_free_attn(A);
}

/* PixelShuffle(s): in (C*s*s x H x W) -> out (C x sH x sW), out[c][y*s+i][x*s+j] = in[c*s*s + i*s + j][y][x]. */
static void naive_pixel_shuffle(const float *in, int C, int s, int H, int W, float *out) {
    const size_t oh = (size_t)H * s, ow = (size_t)W * s;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < s; i++)
            for (int j = 0; j < s; j++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        out[((size_t)c * oh + (size_t)y * s + i) * ow + (size_t)x * s + j] =
                            in[(((size_t)c * s * s + i * s + j) * H + y) * W + x];
}

/* The whole network: in n x 3 x h x w (0..255) -> out n x 3 x (s*h) x (s*w). */
static void naive_elan_forward(const elan_model *m, const float *in, int n, int h, int w, float *out) {
    const int C = m->planes, s = m->scale;
    const int Hp = elan_round_up(h, m->pad_multiple), Wp = elan_round_up(w, m->pad_multiple);
    const size_t hw = (size_t)Hp * Wp, ohw = hw * s * s;
    float *pad = naive_floats(3 * hw), *xin = naive_floats(3 * hw), *head = naive_floats((size_t)C * hw);
    float *x = naive_floats((size_t)C * hw), *tail = naive_floats((size_t)3 * s * s * hw);
    float *sr = naive_floats(3 * ohw), *sr2 = naive_floats(3 * ohw);
    for (int b = 0; b < n; b++) {
        naive_pad(in + (size_t)b * 3 * h * w, 3, h, w, pad, Hp, Wp);
        naive_conv(&m->sub_mean, pad, Hp, Wp, xin);
        naive_conv(&m->head, xin, Hp, Wp, head);
        memcpy(x, head, (size_t)C * hw * sizeof(float));
        for (int blk = 0; blk < m->n_blocks; blk++) naive_block(&m->blocks[blk], x, C, Hp, Wp, m->windows);
        naive_add(x, head, (size_t)C * hw);
        naive_conv(&m->tail, x, Hp, Wp, tail);
        naive_pixel_shuffle(tail, 3, s, Hp, Wp, sr);
        naive_conv(&m->add_mean, sr, Hp * s, Wp * s, sr2);
        const size_t oh = (size_t)h * s, ow = (size_t)w * s;
        for (int c = 0; c < 3; c++)
            for (size_t y = 0; y < oh; y++)
                memcpy(out + (((size_t)b * 3 + c) * oh + y) * ow, sr2 + ((size_t)c * Hp * s + y) * Wp * s,
                       ow * sizeof(float));
    }
    free(pad);
    free(xin);
    free(head);
    free(x);
    free(tail);
    free(sr);
    free(sr2);
}

#endif
