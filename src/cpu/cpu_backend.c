/* cpu_backend.c — the CPU backend: weights laid out for the packed-tile GEMM once at creation, activation
   buffers planned once per input size and reused (the allocation only grows), and the forward of ELAN.md
   image by image.

   Each image of a batch runs the whole network on its own, with every thread working inside each layer
   (tiles of 16 pixels for the convolutions, windows for the attention): an image has thousands of tiles, so
   splitting the batch across threads would gain nothing and multiply the memory. Buffers, in planes of the
   padded image (cpu_ops.h), all in one allocation:
     xin  3     padded, mean-shifted input
     h    C     head output, added back after the body
     x    C     the body's running activation
     hid  max(2C, LFE width)  LFE hidden; GMSA output y (and v of a reusing GMSA)
     qv   2C    q|v per group from the block's first GMSA; its q stays for the reusing ones
   That is 6C + 3 floats per padded pixel (1.4 KiB for C = 60; 0.76 GB for a 960x544 frame). The per-thread
   scratch (packed tiles, one window's q, v and score block) depends only on the model and is allocated at
   creation. The buffers are the backend's own, so one backend runs one forward at a time. The instruction set
   of the kernels (AVX-512 / AVX2 / portable C, or ELANSR_CPU_ISA) is picked at creation (simd.c). */
#define _DEFAULT_SOURCE /* posix_memalign, madvise */
#include "backend.h"
#include "common.h"
#include "cpu_ops.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

typedef struct {
    cpu_conv lfe0, lfe1, proj_in, proj_out;
    int computes;
} cpu_pair;

typedef struct {
    elan_backend base; /* first, so that an elan_backend * is a cpu_backend * */
    int nt, C, s, n_blocks, n_pairs, hidden, pad_multiple;
    int win[3];
    float sm_w[9], sm_b[3], am_w[9], am_b[3];
    cpu_conv head, tail;
    cpu_pair *pairs;   /* n_blocks * n_pairs */
    int *shifted;      /* n_blocks */
    float *scratch;    /* nt * sstride */
    size_t sstride;
    int *iscratch;     /* nt * istride */
    size_t istride;
    /* plan for one input size */
    int plan_h, plan_w, Hp, Wp;
    size_t ps;
    float *act;
    size_t act_cap;    /* floats allocated in act */
} cpu_backend;

/* The activations in 2 MiB pages where the kernel allows it: every conv strip touches 60-180 planes, each in
   its own 4 KiB page, more than the L1 TLB holds; with huge pages a whole 128x128 activation set is a few
   TLB entries (measured 3-5% faster at 128x128, near the noise: docs/PERFORMANCE_CPU_NOTES.md). Falls back
   to malloc. */
static float *alloc_act(size_t count) {
    size_t bytes;
    if (!elansr_mul_size(count, sizeof(float), &bytes)) return NULL;
#ifdef __linux__
    const size_t huge = (size_t)2 << 20;
    if (bytes >= huge) {
        void *p = NULL;
        const size_t rounded = (bytes + huge - 1) / huge * huge;
        if (posix_memalign(&p, huge, rounded) == 0) {
#ifdef MADV_HUGEPAGE
            (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
            return p;
        }
    }
#endif
    return elansr_malloc_array(count, sizeof(float));
}

static size_t r16(size_t v) { return (v + 15) / 16 * 16; }
static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static void cpu_destroy(elan_backend *be) {
    if (!be) return;
    cpu_backend *b = (cpu_backend *)be;
    cpu_conv_free(&b->head);
    cpu_conv_free(&b->tail);
    if (b->pairs) {
        for (int i = 0; i < b->n_blocks * b->n_pairs; i++) {
            cpu_conv_free(&b->pairs[i].lfe0);
            cpu_conv_free(&b->pairs[i].lfe1);
            cpu_conv_free(&b->pairs[i].proj_in);
            cpu_conv_free(&b->pairs[i].proj_out);
        }
    }
    free(b->pairs);
    free(b->shifted);
    free(b->scratch);
    free(b->iscratch);
    free(b->act);
    free(b);
}

/* Plans the activations for an h x w input. The allocation is kept when it is large enough, so that the
   tiles of a tiled upscale (elansr.c), which differ in size only at the edges, do not reallocate. */
static elansr_status plan(cpu_backend *b, int h, int w) {
    if (b->act && b->plan_h == h && b->plan_w == w) return ELANSR_OK;
    b->plan_h = b->plan_w = 0;
    const int pm = b->pad_multiple;
    if (h > INT_MAX - pm || w > INT_MAX - pm || (size_t)h * b->s > INT_MAX || (size_t)w * b->s > INT_MAX)
        return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: a %dx%d input is too large", w, h);
    const int Hp = elan_round_up(h, pm), Wp = elan_round_up(w, pm);
    if ((size_t)Hp * (size_t)Wp > INT_MAX)
        return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: a %dx%d input is too large (padded %dx%d)", w, h, Wp, Hp);
    const size_t ps = cpu_plane_stride(Hp, Wp);
    const size_t planes = 3 + 2 * (size_t)b->C + (size_t)b->hidden + 2 * (size_t)b->C;
    size_t count, bytes;
    if (!ps || !elansr_mul_size(ps, planes, &count) || !elansr_mul_size(count, sizeof(float), &bytes))
        return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: a %dx%d input is too large", w, h);
    if (count > b->act_cap) {
        free(b->act);
        b->act_cap = 0;
        b->act = alloc_act(count);
        if (!b->act)
            return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes for a %dx%d input", bytes, w, h);
        b->act_cap = count;
    }
    b->plan_h = h;
    b->plan_w = w;
    b->Hp = Hp;
    b->Wp = Wp;
    b->ps = ps;
    return ELANSR_OK;
}

static void add_planes(float *x, const float *h, size_t count, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < count; i++) x[i] += h[i];
}

static elansr_status cpu_forward(elan_backend *be, const float *in, int n, int h, int w, float *out) {
    cpu_backend *b = (cpu_backend *)be;
    if (!in || !out) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: NULL input or output");
    if (n < 1 || h < 1 || w < 1) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: invalid input size %dx%d (batch %d)", w, h, n);
    elansr_status st = plan(b, h, w);
    if (st != ELANSR_OK) return st;
    const int C = b->C, Hp = b->Hp, Wp = b->Wp, nt = b->nt;
    const size_t ps = b->ps;
    float *xin = b->act, *hb = xin + 3 * ps, *x = hb + (size_t)C * ps, *hid = x + (size_t)C * ps;
    float *qv = hid + (size_t)b->hidden * ps;
    const size_t in_img = (size_t)3 * h * w, out_img = in_img * b->s * b->s;
    for (int i = 0; i < n; i++) {
        cpu_input_pad(in + i * in_img, h, w, b->sm_w, b->sm_b, xin, ps, Hp, Wp, nt);
        cpu_conv_apply(&b->head, xin, ps, x, ps, Hp, Wp, CPU_STORE, b->scratch, b->sstride, nt);
        memcpy(hb, x, (size_t)C * ps * sizeof(float));
        for (int blk = 0; blk < b->n_blocks; blk++) {
            for (int j = 0; j < b->n_pairs; j++) {
                const cpu_pair *pr = &b->pairs[blk * b->n_pairs + j];
                cpu_lfe(&pr->lfe0, &pr->lfe1, x, hid, ps, Hp, Wp, b->scratch, b->sstride, nt);
                cpu_gmsa(&pr->proj_in, &pr->proj_out, pr->computes, x, qv, hid, ps, Hp, Wp, C, b->win, b->shifted[blk],
                         b->scratch, b->sstride, b->iscratch, b->istride, nt);
            }
        }
        add_planes(x, hb, (size_t)C * ps, nt);
        cpu_tail(&b->tail, b->s, b->am_w, b->am_b, x, ps, Hp, Wp, h, w, out + i * out_img, b->scratch, b->sstride, nt);
    }
    return ELANSR_OK;
}

static elansr_status check_conv(const elan_conv *c, int cin, int cout, int k, const char *name) {
    if (c->cin != cin || c->cout != cout || c->k != k || !c->w || !c->b)
        return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %s is %d -> %d (k %d), expected %d -> %d (k %d)", name,
                           c->cin, c->cout, c->k, cin, cout, k);
    return ELANSR_OK;
}

static elansr_status check_model(const elan_model *m) {
    const int C = m->planes, s = m->scale;
    if (C < 3 || C % 3) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %d planes (a positive multiple of 3 expected)", C);
    if (s < 1 || s > 16) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: scale %d", s);
    if (m->n_blocks < 0 || m->n_share < 0 || (m->n_blocks > 0 && !m->blocks))
        return elansr_fail(ELANSR_ERR_ARG, "cpu backend: %d blocks, %d shared", m->n_blocks, m->n_share);
    if (m->pad_multiple < 1 || m->pad_multiple > 4096) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: pad multiple %d", m->pad_multiple);
    for (int g = 0; g < 3; g++)
        if (m->windows[g] < 4 || m->windows[g] % 4 || m->pad_multiple % m->windows[g])
            return elansr_fail(ELANSR_ERR_ARG, "cpu backend: window %d (multiples of 4 dividing the pad multiple %d supported)",
                               m->windows[g], m->pad_multiple);
    elansr_status st;
    if ((st = check_conv(&m->sub_mean, 3, 3, 1, "sub_mean")) || (st = check_conv(&m->add_mean, 3, 3, 1, "add_mean")) ||
        (st = check_conv(&m->head, 3, C, 3, "head")) || (st = check_conv(&m->tail, C, 3 * s * s, 3, "tail")))
        return st;
    for (int b = 0; b < m->n_blocks; b++) {
        const elan_block *bl = &m->blocks[b];
        char name[64];
        if (bl->n_pairs != m->n_share + 1 || !bl->lfe || !bl->gmsa)
            return elansr_fail(ELANSR_ERR_ARG, "cpu backend: block %d has %d LFE/GMSA pairs, expected %d", b, bl->n_pairs, m->n_share + 1);
        for (int j = 0; j < bl->n_pairs; j++) {
            const elan_lfe *l = &bl->lfe[j];
            const elan_gmsa *g = &bl->gmsa[j];
            snprintf(name, sizeof name, "block %d LFE %d conv 0", b, j);
            if ((st = check_conv(&l->c0.conv, C, l->c0.conv.cout, 1, name))) return st;
            snprintf(name, sizeof name, "block %d LFE %d conv 1", b, j);
            if ((st = check_conv(&l->c1.conv, l->c0.conv.cout, C, 1, name))) return st;
            if (!l->c0.tap || !l->c1.tap) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: block %d LFE %d has no shift taps", b, j);
            if ((j == 0) != (g->computes_attn != 0))
                return elansr_fail(ELANSR_ERR_ARG, "cpu backend: block %d GMSA %d %s attention; only the first GMSA of a block computes it",
                                   b, j, g->computes_attn ? "computes" : "reuses");
            snprintf(name, sizeof name, "block %d GMSA %d project_inp", b, j);
            if ((st = check_conv(&g->proj_in, C, g->computes_attn ? 2 * C : C, 1, name))) return st;
            snprintf(name, sizeof name, "block %d GMSA %d project_out", b, j);
            if ((st = check_conv(&g->proj_out, C, C, 1, name))) return st;
        }
    }
    return ELANSR_OK;
}

static void cpu_name(char *dst, size_t size, int nt, int isa) {
    char model[96] = "CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                const char *p = strchr(line, ':');
                if (p) {
                    p++;
                    while (*p == ' ' || *p == '\t') p++;
                    size_t len = strcspn(p, "\n");
                    if (len >= sizeof model) len = sizeof model - 1;
                    memcpy(model, p, len);
                    model[len] = '\0';
                }
                break;
            }
        }
        fclose(f);
    }
    snprintf(dst, size, "%s (%d thread%s, %s)", model, nt, nt == 1 ? "" : "s", cpu_isa_name(isa));
}

elansr_status elan_cpu_backend_create(const elan_model *m, const elansr_params *p, elan_backend **out) {
    if (!out) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: out is NULL");
    *out = NULL;
    if (!m) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: no model");
    if (p && p->n_threads < 0) return elansr_fail(ELANSR_ERR_ARG, "cpu backend: invalid thread count %d", p->n_threads);
    elansr_status st = check_model(m);
    if (st != ELANSR_OK) return st;

    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: out of memory");
    b->base.name = "cpu";
    b->base.forward = cpu_forward;
    b->base.destroy = cpu_destroy;
#ifdef _OPENMP
    b->nt = p && p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
#else
    b->nt = 1;
#endif
    if (b->nt < 1) b->nt = 1;
    cpu_name(b->base.device_name, sizeof b->base.device_name, b->nt, cpu_isa_select());
    b->C = m->planes;
    b->s = m->scale;
    b->n_blocks = m->n_blocks;
    b->n_pairs = m->n_share + 1;
    b->pad_multiple = m->pad_multiple;
    memcpy(b->win, m->windows, sizeof b->win);
    memcpy(b->sm_w, m->sub_mean.w, sizeof b->sm_w);
    memcpy(b->sm_b, m->sub_mean.b, sizeof b->sm_b);
    memcpy(b->am_w, m->add_mean.w, sizeof b->am_w);
    memcpy(b->am_b, m->add_mean.b, sizeof b->am_b);
    b->hidden = 2 * b->C;

    size_t need = 0;
    const int wmax = b->win[0] > b->win[1] ? (b->win[0] > b->win[2] ? b->win[0] : b->win[2]) : (b->win[1] > b->win[2] ? b->win[1] : b->win[2]);
    if ((st = cpu_conv_init(&b->head, &m->head, NULL, "head")) || (st = cpu_conv_init(&b->tail, &m->tail, NULL, "tail")))
        goto fail;
    need = max_sz(cpu_conv_scratch(&b->head), cpu_tail_scratch(&b->tail));
    need = max_sz(need, cpu_attention_scratch(b->C / 3, wmax));
    if (b->n_blocks > 0) {
        b->pairs = calloc((size_t)b->n_blocks * b->n_pairs, sizeof *b->pairs);
        b->shifted = calloc((size_t)b->n_blocks, sizeof *b->shifted);
        if (!b->pairs || !b->shifted) {
            st = elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: out of memory for %d blocks", b->n_blocks);
            goto fail;
        }
    }
    for (int blk = 0; blk < b->n_blocks; blk++) {
        const elan_block *bl = &m->blocks[blk];
        b->shifted[blk] = bl->shifted != 0;
        for (int j = 0; j < b->n_pairs; j++) {
            cpu_pair *pr = &b->pairs[blk * b->n_pairs + j];
            char name[64];
            snprintf(name, sizeof name, "block %d LFE %d", blk, j);
            if ((st = cpu_conv_init(&pr->lfe0, &bl->lfe[j].c0.conv, bl->lfe[j].c0.tap, name)) ||
                (st = cpu_conv_init(&pr->lfe1, &bl->lfe[j].c1.conv, bl->lfe[j].c1.tap, name)))
                goto fail;
            snprintf(name, sizeof name, "block %d GMSA %d", blk, j);
            if ((st = cpu_conv_init(&pr->proj_in, &bl->gmsa[j].proj_in, NULL, name)) ||
                (st = cpu_conv_init(&pr->proj_out, &bl->gmsa[j].proj_out, NULL, name)))
                goto fail;
            pr->computes = bl->gmsa[j].computes_attn != 0;
            if (pr->lfe0.cout > b->hidden) b->hidden = pr->lfe0.cout;
            need = max_sz(need, cpu_conv_scratch(&pr->lfe0));
            need = max_sz(need, cpu_conv_scratch(&pr->lfe1));
            need = max_sz(need, cpu_conv_scratch(&pr->proj_in));
            need = max_sz(need, cpu_conv_scratch(&pr->proj_out));
        }
    }
    b->sstride = r16(need);
    b->istride = cpu_attention_iscratch(wmax);
    b->scratch = elansr_malloc_array((size_t)b->nt, b->sstride * sizeof(float));
    b->iscratch = elansr_malloc_array((size_t)b->nt, b->istride * sizeof(int));
    if (!b->scratch || !b->iscratch) {
        st = elansr_fail(ELANSR_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes of scratch for %d threads",
                         b->sstride * sizeof(float) * (size_t)b->nt, b->nt);
        goto fail;
    }
    *out = &b->base;
    return ELANSR_OK;
fail:
    cpu_destroy(&b->base);
    return st;
}
