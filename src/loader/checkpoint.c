/* checkpoint.c — builds an elan_model (model.h) from a torch.save'd ELAN state dict.
   Three passes, so that each check happens once and where its cause is clear:
   1. index: every tensor name is mapped to one canonical spelling (this checkpoint's; the authors'
      `lfe_J.conv0.shift_conv.conv1x1.*` / `gmsa_J.*` / `head.0.*` and a DataParallel "module." are
      rewritten), duplicates are refused, and every tensor's offset, shape and stride are checked against
      the byte size of its storage entry before any byte is read;
   2. build: the variant is inferred from shapes (planes from the head, scale from the tail, blocks and
      pairs by counting names), then each tensor is taken by its canonical name with its exact expected
      shape, converted to float32, BatchNorm folded in double, masks decoded to one tap per channel;
   3. leftovers: a tensor nobody took means a network this loader does not know, so it is an error rather
      than silently ignored weights.
   Every error names the file and the tensor; a partially built model is freed by elan_model_free. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "loader/pickle.h"
#include "loader/zip.h"
#include "model.h"

#define BN_EPS 1e-5
#define MAX_PLANES 4096
#define MAX_INDEX 100000 /* block / pair numbers */
#define NAME_CAP 192     /* canonical names we construct are far shorter */

static const double k_rgb_mean[3] = {0.4488, 0.4371, 0.4040};

typedef struct {
    char *canon;
    const elan_pk_tensor *t;
    size_t entry; /* zip index of its storage */
    int used;
} slot;

typedef struct {
    const char *path;
    elan_zip *zip;
    char *prefix; /* archive folder holding data.pkl, with its trailing '/' ("" at the root) */
    elan_pk_tensors pk;
    slot *s;
    size_t n;
} loader;

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static size_t digits(const char *s) {
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') n++;
    return n;
}

/* Maps the authors' spelling onto this checkpoint's; anything unrecognised is kept as is (minus "module.")
   and will be reported as unexpected or missing later. NULL only when out of memory. */
static char *canonical(const char *name) {
    const char *s = starts(name, "module.") ? name + 7 : name;
    size_t cap = strlen(s) + 32;
    char *out = malloc(cap);
    if (!out) return NULL;
    snprintf(out, cap, "%s", s);
    if (starts(s, "head.0.")) {
        snprintf(out, cap, "head.%s", s + 7);
    } else if (starts(s, "body.")) {
        const char *b = s + 5;
        size_t nb = digits(b);
        const char *r = b + nb;
        if (nb && starts(r, ".modules_lfe.lfe_")) {
            const char *j = r + 17;
            size_t nj = digits(j);
            const char *f = j + nj;
            static const struct {
                const char *from, *to;
            } map[] = {
                {".conv0.shift_conv.weight", "lfe.0.mask"},   {".conv0.shift_conv.conv1x1.weight", "lfe.0.weight"},
                {".conv0.shift_conv.conv1x1.bias", "lfe.0.bias"}, {".conv1.shift_conv.weight", "lfe.2.mask"},
                {".conv1.shift_conv.conv1x1.weight", "lfe.2.weight"}, {".conv1.shift_conv.conv1x1.bias", "lfe.2.bias"},
            };
            for (size_t i = 0; nj && i < sizeof map / sizeof map[0]; i++)
                if (strcmp(f, map[i].from) == 0)
                    snprintf(out, cap, "body.%.*s.modules_lfe.%.*s.%s", (int)nb, b, (int)nj, j, map[i].to);
        } else if (nb && starts(r, ".modules_gmsa.gmsa_")) {
            const char *j = r + 19;
            size_t nj = digits(j);
            if (nj && j[nj] == '.') snprintf(out, cap, "body.%.*s.modules_gmsa.%s", (int)nb, b, j);
        }
    }
    return out;
}

static int cmp_slot(const void *a, const void *b) {
    return strcmp(((const slot *)a)->canon, ((const slot *)b)->canon);
}

static slot *find(loader *L, const char *canon) {
    slot key;
    key.canon = (char *)(uintptr_t)canon; /* bsearch's key is never written */
    return bsearch(&key, L->s, L->n, sizeof *L->s, cmp_slot);
}

/* The name to show for a canonical name: the file's own spelling when the tensor exists. */
static const char *shown(loader *L, const char *canon, char *buf, size_t cap) {
    slot *s = find(L, canon);
    const char *n = s ? s->t->name : canon;
    return elan_printable(buf, cap, n, strlen(n));
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *dims) {
    size_t o = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? "," : "", (long long)dims[d]);
    if (o < cap) snprintf(buf + o, cap - o, ")");
}

static elansr_status missing(loader *L, const char *canon) {
    char nb[NAME_CAP];
    return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: missing tensor '%s'", L->path,
                       elan_printable(nb, sizeof nb, canon, strlen(canon)));
}

static elansr_status wrong_shape(loader *L, const slot *s, const char *expected) {
    char nb[NAME_CAP], got[160];
    fmt_shape(got, sizeof got, s->t->ndim, s->t->shape);
    return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' has shape %s but %s was expected", L->path,
                       elan_printable(nb, sizeof nb, s->t->name, strlen(s->t->name)), got, expected);
}

/* ---- pass 1: index and layout checks ---- */

static elansr_status find_pickle(loader *L, const uint8_t **data, size_t *size) {
    size_t found = 0, idx = 0, n = elan_zip_count(L->zip);
    for (size_t i = 0; i < n; i++) {
        const char *nm = elan_zip_name(L->zip, i);
        size_t len = strlen(nm);
        if (strcmp(nm, "data.pkl") == 0 || (len > 9 && strcmp(nm + len - 9, "/data.pkl") == 0)) {
            if (found++) {
                char a[96], b[96];
                return elansr_fail(ELANSR_ERR_FORMAT, "%s: archive holds more than one data.pkl ('%s' and '%s')",
                                   L->path, elan_printable(a, sizeof a, elan_zip_name(L->zip, idx), SIZE_MAX),
                                   elan_printable(b, sizeof b, nm, len));
            }
            idx = i;
        }
    }
    if (!found)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip archive has no data.pkl (not a checkpoint written by "
                           "torch.save)", L->path);
    const char *nm = elan_zip_name(L->zip, idx);
    size_t plen = strlen(nm) - 8; /* keeps the '/' */
    L->prefix = malloc(plen + 1);
    if (!L->prefix) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    memcpy(L->prefix, nm, plen);
    L->prefix[plen] = '\0';
    /* Newer torch records the byte order of the tensor data; everything below reads little-endian. */
    char *bo = malloc(plen + 10);
    if (!bo) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    snprintf(bo, plen + 10, "%sbyteorder", L->prefix);
    size_t bi;
    int has_bo = elan_zip_find(L->zip, bo, &bi);
    free(bo);
    if (has_bo) {
        const uint8_t *b;
        size_t bn;
        elansr_status st = elan_zip_get(L->zip, bi, &b, &bn);
        if (st) return st;
        if (!(bn >= 6 && memcmp(b, "little", 6) == 0 && (bn == 6 || (bn == 7 && b[6] == '\n'))))
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: tensor data is not little-endian (byteorder entry); only "
                               "little-endian checkpoints are supported", L->path);
    }
    return elan_zip_get(L->zip, idx, data, size);
}

static elansr_status check_layout(loader *L, slot *s) {
    const elan_pk_tensor *t = s->t;
    char nb[NAME_CAP], kb[64];
    const char *name = elan_printable(nb, sizeof nb, t->name, strlen(t->name));
    const char *key = elan_printable(kb, sizeof kb, t->storage_key, strlen(t->storage_key));
    size_t plen = strlen(L->prefix), klen = strlen(t->storage_key);
    char *entry = malloc(plen + 5 + klen + 1);
    if (!entry) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    memcpy(entry, L->prefix, plen);
    memcpy(entry + plen, "data/", 5);
    memcpy(entry + plen + 5, t->storage_key, klen + 1);
    int ok = elan_zip_find(L->zip, entry, &s->entry);
    free(entry);
    if (!ok)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: tensor '%s' refers to storage '%s', which the archive lacks",
                           L->path, name, key);
    size_t es = elan_dtype_size(t->dtype), need, have = elan_zip_size(L->zip, s->entry);
    if ((uint64_t)t->storage_numel > SIZE_MAX || !elansr_mul_size((size_t)t->storage_numel, es, &need) || need != have)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: storage '%s' of tensor '%s' holds %zu bytes, not the %lld %s "
                           "elements (%zu bytes each) it is declared with", L->path, key, name, have,
                           (long long)t->storage_numel, elan_dtype_name(t->dtype), es);
    if (t->storage_offset > t->storage_numel || t->numel > (uint64_t)(t->storage_numel - t->storage_offset))
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: tensor '%s' (%zu elements at offset %lld) runs past the end "
                           "of its storage '%s' (%lld elements)", L->path, name, t->numel,
                           (long long)t->storage_offset, key, (long long)t->storage_numel);
    /* Row-major contiguity; a dimension of size 1 may carry any stride, as in torch. */
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0 && t->numel; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect) {
            char sh[160], st[160];
            fmt_shape(sh, sizeof sh, t->ndim, t->shape);
            fmt_shape(st, sizeof st, t->ndim, t->stride);
            return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' (shape %s) has strides %s; only contiguous "
                               "tensors are supported", L->path, name, sh, st);
        }
        expect *= t->shape[d]; /* partial products <= numel <= storage bytes / 2: no int64 overflow */
    }
    return ELANSR_OK;
}

static elansr_status index_tensors(loader *L) {
    L->s = elansr_calloc_array(L->pk.n, sizeof *L->s);
    if (!L->s) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    for (size_t i = 0; i < L->pk.n; i++) {
        L->s[i].t = &L->pk.t[i];
        L->s[i].canon = canonical(L->pk.t[i].name);
        L->n = i + 1;
        if (!L->s[i].canon) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    }
    qsort(L->s, L->n, sizeof *L->s, cmp_slot);
    for (size_t i = 1; i < L->n; i++) {
        if (strcmp(L->s[i - 1].canon, L->s[i].canon) == 0) {
            char a[NAME_CAP], b[NAME_CAP];
            const char *x = L->s[i - 1].t->name, *y = L->s[i].t->name;
            return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' appears twice (also as '%s')", L->path,
                               elan_printable(a, sizeof a, x, strlen(x)), elan_printable(b, sizeof b, y, strlen(y)));
        }
    }
    for (size_t i = 0; i < L->n; i++) {
        elansr_status st = check_layout(L, &L->s[i]);
        if (st) return st;
    }
    return ELANSR_OK;
}

/* ---- pass 2: typed reads ---- */

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (e == 0)
        v = ldexpf((float)man, -24);
    else if (e == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexpf((float)(man | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

static float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Takes tensor `canon` with exactly the given shape as a new float32 array (caller owns it). */
static elansr_status take(loader *L, const char *canon, int ndim, const int64_t *dims, float **out) {
    *out = NULL;
    slot *s = find(L, canon);
    if (!s) return missing(L, canon);
    const elan_pk_tensor *t = s->t;
    char nb[NAME_CAP];
    const char *name = elan_printable(nb, sizeof nb, t->name, strlen(t->name));
    if (t->dtype == ELAN_DT_I64 || t->dtype == ELAN_DT_I32)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' is %s, a floating-point tensor was expected",
                           L->path, name, elan_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == dims[d];
    if (!same) {
        char want[160];
        fmt_shape(want, sizeof want, ndim, dims);
        return wrong_shape(L, s, want);
    }
    const uint8_t *bytes;
    size_t size;
    elansr_status st = elan_zip_get(L->zip, s->entry, &bytes, &size);
    if (st) return st;
    size_t es = elan_dtype_size(t->dtype);
    /* check_layout proved (offset + numel) * es <= size, with no overflow. */
    const uint8_t *p = bytes + (size_t)t->storage_offset * es;
    float *dst = elansr_malloc_array(t->numel, sizeof *dst);
    if (!dst) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for tensor '%s'", L->path, name);
    for (size_t i = 0; i < t->numel; i++, p += es) {
        uint32_t lo = (uint32_t)p[0] | ((uint32_t)p[1] << 8);
        switch (t->dtype) {
        case ELAN_DT_F16: dst[i] = half_to_float((uint16_t)lo); break;
        case ELAN_DT_BF16: dst[i] = bits_to_float(lo << 16); break;
        case ELAN_DT_F32: dst[i] = bits_to_float(lo | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24)); break;
        default: { /* ELAN_DT_F64 */
            uint64_t u = 0;
            double d;
            for (int k = 7; k >= 0; k--) u = (u << 8) | p[k];
            memcpy(&d, &u, sizeof d);
            dst[i] = (float)d; /* out of float range becomes inf and is refused below */
            break;
        }
        }
        if (!isfinite(dst[i])) {
            free(dst);
            return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' holds a non-finite value (element %zu)",
                               L->path, name, i);
        }
    }
    s->used = 1;
    *out = dst;
    return ELANSR_OK;
}

static elansr_status load_conv(loader *L, elan_conv *c, const char *wname, const char *bname, int cout, int cin,
                               int k) {
    int64_t wd[4] = {cout, cin, k, k}, bd[1] = {cout};
    c->cout = cout;
    c->cin = cin;
    c->k = k;
    elansr_status st = take(L, wname, 4, wd, &c->w);
    if (!st) st = take(L, bname, 1, bd, &c->b);
    return st;
}

static elansr_status load_shift_conv(loader *L, elan_shift_conv *sc, const char *base, int cin, int cout) {
    char w[NAME_CAP], b[NAME_CAP], mk[NAME_CAP];
    snprintf(w, sizeof w, "%s.weight", base);
    snprintf(b, sizeof b, "%s.bias", base);
    snprintf(mk, sizeof mk, "%s.mask", base);
    elansr_status st = load_conv(L, &sc->conv, w, b, cout, cin, 1);
    if (st) return st;
    int64_t md[4] = {cin, 1, 3, 3};
    float *m;
    if ((st = take(L, mk, 4, md, &m))) return st;
    sc->tap = elansr_malloc_array((size_t)cin, sizeof *sc->tap);
    if (!sc->tap) {
        free(m);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    }
    for (int c = 0; c < cin; c++) {
        int tap = -1, bad = 0;
        for (int q = 0; q < 9; q++) {
            float x = m[(size_t)c * 9 + (size_t)q];
            if (x == 1.0f) {
                bad |= tap >= 0;
                tap = q;
            } else if (x != 0.0f) {
                bad = 1;
            }
        }
        if (bad || tap < 0) {
            free(m);
            char nb[NAME_CAP];
            return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' is not a one-hot shift mask (channel %d "
                               "needs exactly one 1 among zeros)", L->path, shown(L, mk, nb, sizeof nb), c);
        }
        sc->tap[c] = tap;
    }
    free(m);
    return ELANSR_OK;
}

/* project_inp = Conv1x1 then BatchNorm (eval): folded so the backends see one conv. */
static elansr_status load_gmsa(loader *L, elan_gmsa *g, int b, int j, int C) {
    char base[64], w[NAME_CAP], bi[NAME_CAP], nm[4][NAME_CAP];
    static const char *const bn_fields[4] = {"weight", "bias", "running_mean", "running_var"};
    int cout = j == 0 ? 2 * C : C;
    g->computes_attn = j == 0;
    snprintf(base, sizeof base, "body.%d.modules_gmsa.%d", b, j);
    snprintf(w, sizeof w, "%s.project_inp.0.weight", base);
    snprintf(bi, sizeof bi, "%s.project_inp.0.bias", base);
    elansr_status st = load_conv(L, &g->proj_in, w, bi, cout, C, 1);
    if (st) return st;
    float *bn[4] = {NULL, NULL, NULL, NULL};
    int64_t d[1] = {cout};
    for (int k = 0; k < 4 && !st; k++) {
        snprintf(nm[k], sizeof nm[k], "%s.project_inp.1.%s", base, bn_fields[k]);
        st = take(L, nm[k], 1, d, &bn[k]);
    }
    for (int o = 0; o < cout && !st; o++) {
        double var = (double)bn[3][o] + BN_EPS;
        if (!(var > 0)) {
            char nb[NAME_CAP];
            st = elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' has a negative variance at channel %d", L->path,
                             shown(L, nm[3], nb, sizeof nb), o);
            break;
        }
        double scale = (double)bn[0][o] / sqrt(var);
        for (int i = 0; i < C; i++) {
            float *x = &g->proj_in.w[(size_t)o * (size_t)C + (size_t)i];
            *x = (float)((double)*x * scale);
        }
        g->proj_in.b[o] = (float)(((double)g->proj_in.b[o] - (double)bn[2][o]) * scale + (double)bn[1][o]);
    }
    for (int k = 0; k < 4; k++) free(bn[k]);
    if (st) return st;
    /* The batch counter is training state: accepted (any type) and ignored. */
    snprintf(w, sizeof w, "%s.project_inp.1.num_batches_tracked", base);
    slot *nbt = find(L, w);
    if (nbt) nbt->used = 1;
    snprintf(w, sizeof w, "%s.project_out.weight", base);
    snprintf(bi, sizeof bi, "%s.project_out.bias", base);
    return load_conv(L, &g->proj_out, w, bi, C, C, 1);
}

/* sub_mean / add_mean, synthesised from the standard DIV2K mean when the checkpoint has neither tensor. */
static elansr_status load_mean_shift(loader *L, elan_conv *c, const char *base, double sign) {
    char w[NAME_CAP], b[NAME_CAP];
    snprintf(w, sizeof w, "%s.weight", base);
    snprintf(b, sizeof b, "%s.bias", base);
    if (find(L, w) || find(L, b)) return load_conv(L, c, w, b, 3, 3, 1);
    c->cin = c->cout = 3;
    c->k = 1;
    c->w = elansr_calloc_array(9, sizeof *c->w);
    c->b = elansr_calloc_array(3, sizeof *c->b);
    if (!c->w || !c->b) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    for (int i = 0; i < 3; i++) {
        c->w[i * 3 + i] = 1.0f;
        c->b[i] = (float)(sign * 255.0 * k_rgb_mean[i]);
    }
    return ELANSR_OK;
}

/* Parses "body.<B>.modules_lfe.<J>." or "body.<B>.modules_gmsa.<J>."; returns 0 if the name is neither. */
static int body_indices(const char *canon, long *b, long *j) {
    if (!starts(canon, "body.")) return 0;
    const char *p = canon + 5;
    size_t nb = digits(p);
    if (!nb || nb > 6) return 0;
    *b = strtol(p, NULL, 10);
    p += nb;
    if (starts(p, ".modules_lfe."))
        p += 13;
    else if (starts(p, ".modules_gmsa."))
        p += 14;
    else
        return 0;
    size_t nj = digits(p);
    if (!nj || nj > 6 || p[nj] != '.') return 0;
    *j = strtol(p, NULL, 10);
    return 1;
}

static elansr_status shape_of(loader *L, const char *canon, int ndim, const char *expected, const slot **out) {
    const slot *s = find(L, canon);
    if (!s) return missing(L, canon);
    if (s->t->ndim != ndim) return wrong_shape(L, s, expected);
    *out = s;
    return ELANSR_OK;
}

static size_t conv_params(const elan_conv *c) {
    return (size_t)c->cout * (size_t)c->cin * (size_t)c->k * (size_t)c->k + (size_t)c->cout;
}

static elansr_status build(loader *L, elan_model *m) {
    char nb[NAME_CAP];
    const slot *hs = NULL, *ts = NULL, *ls = NULL;
    elansr_status st = shape_of(L, "head.weight", 4, "(C,3,3,3)", &hs);
    if (st) return st;
    int64_t C64 = hs->t->shape[0];
    if (C64 < 3 || C64 > MAX_PLANES || C64 % 3)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' gives %lld planes; ELAN needs a multiple of 3 "
                           "(3..%d)", L->path, shown(L, "head.weight", nb, sizeof nb), (long long)C64, MAX_PLANES);
    int C = (int)C64;
    if ((st = shape_of(L, "tail.0.weight", 4, "(3*s*s,C,3,3)", &ts))) return st;
    int s = ts->t->shape[0] == 12 ? 2 : ts->t->shape[0] == 27 ? 3 : ts->t->shape[0] == 48 ? 4 : 0;
    if (!s)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' has %lld output channels; 12, 27 or 48 "
                           "(scale 2, 3 or 4) were expected", L->path, shown(L, "tail.0.weight", nb, sizeof nb),
                           (long long)ts->t->shape[0]);

    /* Blocks and pairs by counting names; every block must then have every tensor of every pair. */
    long nblocks = 0;
    for (size_t i = 0; i < L->n; i++) {
        long b, j;
        if (body_indices(L->s[i].canon, &b, &j) && b + 1 > nblocks) nblocks = b + 1;
    }
    if (nblocks == 0) return missing(L, "body.0.modules_lfe.0.lfe.0.weight");
    if ((size_t)nblocks > L->n || nblocks > MAX_INDEX)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: block numbers reach %ld but the checkpoint has only %zu "
                           "tensors (blocks are missing)", L->path, nblocks - 1, L->n);
    long *pairs = elansr_calloc_array((size_t)nblocks, sizeof *pairs);
    if (!pairs) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    for (size_t i = 0; i < L->n; i++) {
        long b, j;
        if (body_indices(L->s[i].canon, &b, &j) && j + 1 > pairs[b]) pairs[b] = j + 1;
    }
    long P = pairs[0];
    for (long b = 0; b < nblocks && !st; b++) {
        if (pairs[b] == 0) {
            snprintf(nb, sizeof nb, "body.%ld.modules_lfe.0.lfe.0.weight", b);
            st = missing(L, nb);
        } else if (pairs[b] != P) {
            st = elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: block %ld has %ld LFE/GMSA pairs but block 0 has %ld "
                             "(every block must share attention the same way)", L->path, b, pairs[b], P);
        }
    }
    free(pairs);
    if (st) return st;
    if ((size_t)P > L->n)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: pair numbers reach %ld but the checkpoint has only %zu "
                           "tensors (pairs are missing)", L->path, P - 1, L->n);
    if ((st = shape_of(L, "body.0.modules_lfe.0.lfe.0.weight", 4, "(E,C,1,1)", &ls))) return st;
    int64_t E64 = ls->t->shape[0];
    if (E64 < 1 || E64 > 16 * (int64_t)C)
        return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: tensor '%s' gives an LFE width of %lld for %d planes",
                           L->path, shown(L, "body.0.modules_lfe.0.lfe.0.weight", nb, sizeof nb), (long long)E64, C);
    int E = (int)E64;

    m->planes = C;
    m->scale = s;
    m->n_share = (int)P - 1;
    m->windows[0] = 4;
    m->windows[1] = 8;
    m->windows[2] = 16;
    m->pad_multiple = 16;
    if ((st = load_mean_shift(L, &m->sub_mean, "sub_mean", -1.0))) return st;
    if ((st = load_conv(L, &m->head, "head.weight", "head.bias", C, 3, 3))) return st;
    m->blocks = elansr_calloc_array((size_t)nblocks, sizeof *m->blocks);
    if (!m->blocks) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
    m->n_blocks = (int)nblocks;
    for (int b = 0; b < m->n_blocks; b++) {
        elan_block *blk = &m->blocks[b];
        blk->shifted = b & 1;
        blk->lfe = elansr_calloc_array((size_t)P, sizeof *blk->lfe);
        blk->gmsa = elansr_calloc_array((size_t)P, sizeof *blk->gmsa);
        blk->n_pairs = (int)P;
        if (!blk->lfe || !blk->gmsa) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", L->path);
        for (int j = 0; j < P; j++) {
            char base[NAME_CAP];
            snprintf(base, sizeof base, "body.%d.modules_lfe.%d.lfe.0", b, j);
            if ((st = load_shift_conv(L, &blk->lfe[j].c0, base, C, E))) return st;
            snprintf(base, sizeof base, "body.%d.modules_lfe.%d.lfe.2", b, j);
            if ((st = load_shift_conv(L, &blk->lfe[j].c1, base, E, C))) return st;
            if ((st = load_gmsa(L, &blk->gmsa[j], b, j, C))) return st;
        }
    }
    if ((st = load_conv(L, &m->tail, "tail.0.weight", "tail.0.bias", 3 * s * s, C, 3))) return st;
    if ((st = load_mean_shift(L, &m->add_mean, "add_mean", 1.0))) return st;

    size_t np = conv_params(&m->sub_mean) + conv_params(&m->head) + conv_params(&m->tail) + conv_params(&m->add_mean);
    for (int b = 0; b < m->n_blocks; b++)
        for (int j = 0; j < m->blocks[b].n_pairs; j++) {
            const elan_block *blk = &m->blocks[b];
            np += conv_params(&blk->lfe[j].c0.conv) + conv_params(&blk->lfe[j].c1.conv) +
                  conv_params(&blk->gmsa[j].proj_in) + conv_params(&blk->gmsa[j].proj_out);
        }
    m->n_params = np;

    /* ---- pass 3 ---- */
    for (size_t i = 0; i < L->n; i++) {
        if (!L->s[i].used) {
            size_t more = 0;
            for (size_t k = i + 1; k < L->n; k++) more += !L->s[k].used;
            const char *n = L->s[i].t->name;
            return elansr_fail(ELANSR_ERR_CHECKPOINT, "%s: unexpected tensor '%s'%s (not part of the ELAN layout "
                               "this loader knows)", L->path, elan_printable(nb, sizeof nb, n, strlen(n)),
                               more ? " and others" : "");
        }
    }
    return ELANSR_OK;
}

static void free_conv(elan_conv *c) {
    free(c->w);
    free(c->b);
    c->w = c->b = NULL;
}

void elan_model_free(elan_model *m) {
    if (!m) return;
    free_conv(&m->sub_mean);
    free_conv(&m->head);
    free_conv(&m->tail);
    free_conv(&m->add_mean);
    if (m->blocks) {
        for (int b = 0; b < m->n_blocks; b++) {
            elan_block *blk = &m->blocks[b];
            for (int j = 0; blk->lfe && j < blk->n_pairs; j++) {
                free_conv(&blk->lfe[j].c0.conv);
                free_conv(&blk->lfe[j].c1.conv);
                free(blk->lfe[j].c0.tap);
                free(blk->lfe[j].c1.tap);
            }
            for (int j = 0; blk->gmsa && j < blk->n_pairs; j++) {
                free_conv(&blk->gmsa[j].proj_in);
                free_conv(&blk->gmsa[j].proj_out);
            }
            free(blk->lfe);
            free(blk->gmsa);
        }
    }
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

elansr_status elan_model_load(const char *path, elan_model *m) {
    if (!m) return elansr_fail(ELANSR_ERR_ARG, "elan_model_load: model is NULL");
    memset(m, 0, sizeof *m);
    if (!path || !*path) return elansr_fail(ELANSR_ERR_ARG, "elan_model_load: no checkpoint path");
    elansr_clear_error();
    loader L;
    memset(&L, 0, sizeof L);
    L.path = path;
    const uint8_t *pkl;
    size_t pkl_size;
    elansr_status st = elan_zip_open(path, &L.zip);
    if (!st) st = find_pickle(&L, &pkl, &pkl_size);
    if (!st) st = elan_pickle_tensors(path, pkl, pkl_size, &L.pk);
    if (!st) st = index_tensors(&L);
    if (!st) st = build(&L, m);
    if (L.s)
        for (size_t i = 0; i < L.n; i++) free(L.s[i].canon);
    free(L.s);
    elan_pickle_free(&L.pk);
    free(L.prefix);
    elan_zip_close(L.zip);
    if (st) elan_model_free(m);
    return st;
}
