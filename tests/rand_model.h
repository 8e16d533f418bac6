/* rand_model.h — a random ELAN (elan_model of model.h) for tests that must not depend on the checkpoint.

   The weights come from testutil's seeded RNG at magnitudes chosen so that the activations stay O(1) through
   the body, as in a trained network, and no op degenerates: the head maps the 0..255 input to values of
   about +-1, 1x1 weights are U(-1,1)/sqrt(cin), the q rows of the computing GMSAs' project_inp are doubled (a
   folded BatchNorm's gain) so that the softmax is neither uniform nor one-hot, and the tail brings the output
   back to image scale (tens around the mean). The shift masks follow ELAN.md's 5-group pattern and sub/add_mean are
   the checkpoint's (identity weight, bias -/+255*mean). Everything is malloc'd here and freed by
   rand_model_free (not elan_model_free, which belongs to the loader). */
#ifndef ELANSR_RAND_MODEL_H
#define ELANSR_RAND_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

static void *rm_alloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "rand_model: out of memory\n");
        exit(1);
    }
    return p;
}

/* Weights U(-1,1) * wscale, biases U(-bscale, bscale); returns the parameter count. */
static size_t rm_conv(elan_conv *c, int cin, int cout, int k, float wscale, float bscale) {
    const size_t nw = (size_t)cout * cin * k * k;
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    c->w = rm_alloc(nw, sizeof(float));
    c->b = rm_alloc((size_t)cout, sizeof(float));
    for (size_t i = 0; i < nw; i++) c->w[i] = t_uniform(-1.0f, 1.0f) * wscale;
    for (int i = 0; i < cout; i++) c->b[i] = t_uniform(-bscale, bscale);
    return nw + (size_t)cout;
}

static void rm_mean(elan_conv *c, float sign) {
    static const float mean[3] = {0.4488f, 0.4371f, 0.4040f};
    rm_conv(c, 3, 3, 1, 0.0f, 0.0f);
    for (int i = 0; i < 3; i++) {
        c->w[i * 3 + i] = 1.0f;
        c->b[i] = sign * 255.0f * mean[i];
    }
}

/* ELAN.md's shift: 5 groups of cin/5 channels (the last takes the rest), taps (1,2), (1,0), (2,1), (0,1), (1,1). */
static size_t rm_shift_conv(elan_shift_conv *sc, int cin, int cout) {
    static const int group_tap[5] = {1 * 3 + 2, 1 * 3 + 0, 2 * 3 + 1, 0 * 3 + 1, 1 * 3 + 1};
    const size_t n = rm_conv(&sc->conv, cin, cout, 1, 1.0f / sqrtf((float)cin), 0.1f);
    const int g = cin / 5;
    sc->tap = rm_alloc((size_t)cin, sizeof(int));
    for (int c = 0; c < cin; c++) {
        int grp = g > 0 ? c / g : 4;
        sc->tap[c] = group_tap[grp > 4 ? 4 : grp];
    }
    return n;
}

/* planes: a multiple of 3, >= 15 (so that every shift group has channels). Returns 0. */
static int rand_model_init(elan_model *m, int planes, int n_blocks, int n_share, int scale) {
    memset(m, 0, sizeof *m);
    const int C = planes;
    m->planes = C;
    m->scale = scale;
    m->n_blocks = n_blocks;
    m->n_share = n_share;
    m->windows[0] = 4;
    m->windows[1] = 8;
    m->windows[2] = 16;
    m->pad_multiple = 16;
    size_t np = 24;
    rm_mean(&m->sub_mean, -1.0f);
    rm_mean(&m->add_mean, 1.0f);
    np += rm_conv(&m->head, 3, C, 3, 1.0f / (sqrtf(27.0f) * 40.0f), 0.1f);
    m->blocks = rm_alloc((size_t)n_blocks, sizeof *m->blocks);
    for (int b = 0; b < n_blocks; b++) {
        elan_block *bl = &m->blocks[b];
        bl->n_pairs = n_share + 1;
        bl->shifted = b % 2;
        bl->lfe = rm_alloc((size_t)bl->n_pairs, sizeof *bl->lfe);
        bl->gmsa = rm_alloc((size_t)bl->n_pairs, sizeof *bl->gmsa);
        for (int j = 0; j < bl->n_pairs; j++) {
            np += rm_shift_conv(&bl->lfe[j].c0, C, 2 * C);
            np += rm_shift_conv(&bl->lfe[j].c1, 2 * C, C);
            elan_gmsa *g = &bl->gmsa[j];
            g->computes_attn = j == 0;
            np += rm_conv(&g->proj_in, C, g->computes_attn ? 2 * C : C, 1, 1.0f / sqrtf((float)C), 0.1f);
            if (g->computes_attn) /* q rows of each group (the first C/3 of its 2C/3) get the gain */
                for (int r = 0; r < 2 * C; r++)
                    if (r % (2 * C / 3) < C / 3)
                        for (int c = 0; c < C; c++) g->proj_in.w[(size_t)r * C + c] *= 2.0f;
            np += rm_conv(&g->proj_out, C, C, 1, 1.0f / sqrtf((float)C), 0.1f);
        }
    }
    np += rm_conv(&m->tail, C, 3 * scale * scale, 3, 20.0f / sqrtf(9.0f * C), 1.0f);
    m->n_params = np;
    return 0;
}

static void rm_conv_free(elan_conv *c) {
    free(c->w);
    free(c->b);
    c->w = c->b = NULL;
}

static void rand_model_free(elan_model *m) {
    rm_conv_free(&m->sub_mean);
    rm_conv_free(&m->add_mean);
    rm_conv_free(&m->head);
    rm_conv_free(&m->tail);
    for (int b = 0; m->blocks && b < m->n_blocks; b++) {
        elan_block *bl = &m->blocks[b];
        for (int j = 0; j < bl->n_pairs; j++) {
            rm_conv_free(&bl->lfe[j].c0.conv);
            rm_conv_free(&bl->lfe[j].c1.conv);
            free(bl->lfe[j].c0.tap);
            free(bl->lfe[j].c1.tap);
            rm_conv_free(&bl->gmsa[j].proj_in);
            rm_conv_free(&bl->gmsa[j].proj_out);
        }
        free(bl->lfe);
        free(bl->gmsa);
    }
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

#endif
