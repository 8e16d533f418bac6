/* test_loader.c — the checkpoint loader against the shipped ELAN-light x4 checkpoint and against broken or
   re-spelled copies of it that the test builds itself.
   The copies are made here rather than shipped: a small stored/deflate zip writer and a small protocol-2/4
   pickle writer rebuild the archive with one thing changed at a time (a renamed key, a patched byte, a cut
   file, another dtype, the authors' tensor names...). Every broken copy must fail with a one-line message
   naming the file (and, where there is one, the tensor); every re-spelled copy must load to exactly the
   same weights. Runs under ASan/UBSan with leak detection, so error paths are checked for leaks too. */
#include <zlib.h>

#include "testutil.h"

#include "common.h"
#include "loader/pickle.h"
#include "loader/zip.h"
#include "model.h"

static const double k_mean[3] = {0.4488, 0.4371, 0.4040};

/* ---------------- byte buffers ---------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} t_buf;

static void tb_put(t_buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) abort();
        b->p = q;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void tb_u8(t_buf *b, unsigned v) {
    uint8_t x = (uint8_t)v;
    tb_put(b, &x, 1);
}
static void tb_u16(t_buf *b, unsigned v) {
    tb_u8(b, v & 255u);
    tb_u8(b, (v >> 8) & 255u);
}
static void tb_u32(t_buf *b, uint32_t v) {
    tb_u16(b, v & 0xffffu);
    tb_u16(b, v >> 16);
}
static void tb_free(t_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------- in-memory archive and a minimal zip writer ---------------- */

typedef struct {
    char name[256];
    t_buf data;
} t_entry;

typedef struct {
    t_entry *e;
    size_t n;
} t_archive;

static t_entry *ar_find(const t_archive *a, const char *name) {
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->e[i].name, name) == 0) return &a->e[i];
    return NULL;
}

static void ar_set(t_archive *a, const char *name, const void *data, size_t n) {
    t_entry *e = ar_find(a, name);
    if (!e) {
        t_entry *q = realloc(a->e, (a->n + 1) * sizeof *a->e);
        if (!q) abort();
        a->e = q;
        e = &a->e[a->n++];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
    }
    e->data.n = 0;
    tb_put(&e->data, data, n);
}

static void ar_remove(t_archive *a, const char *name) {
    t_entry *e = ar_find(a, name);
    if (!e) return;
    tb_free(&e->data);
    size_t i = (size_t)(e - a->e);
    memmove(a->e + i, a->e + i + 1, (a->n - i - 1) * sizeof *a->e);
    a->n--;
}

static t_archive ar_copy(const t_archive *src) {
    t_archive a = {NULL, 0};
    for (size_t i = 0; i < src->n; i++) ar_set(&a, src->e[i].name, src->e[i].data.p, src->e[i].data.n);
    return a;
}

static void ar_free(t_archive *a) {
    for (size_t i = 0; i < a->n; i++) tb_free(&a->e[i].data);
    free(a->e);
    a->e = NULL;
    a->n = 0;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s (does %s exist?)\n", path, t_tmp_dir());
        return 0;
    }
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    int ok = (w == n) & (fclose(f) == 0);
    return ok;
}

/* Writes a plain zip: local header + data for each entry, central directory, end record. */
static int ar_write(const t_archive *a, const char *path, int use_deflate) {
    t_buf out = {0}, cd = {0};
    for (size_t i = 0; i < a->n; i++) {
        const t_entry *e = &a->e[i];
        uint32_t crc = (uint32_t)crc32(0L, e->data.p, (uInt)e->data.n);
        t_buf comp = {0};
        unsigned method = 0;
        const uint8_t *payload = e->data.p;
        size_t plen = e->data.n;
        if (use_deflate) {
            z_stream s;
            memset(&s, 0, sizeof s);
            if (deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
            size_t bound = deflateBound(&s, (uLong)e->data.n);
            comp.p = malloc(bound);
            if (!comp.p) abort();
            s.next_in = e->data.p;
            s.avail_in = (uInt)e->data.n;
            s.next_out = comp.p;
            s.avail_out = (uInt)bound;
            if (deflate(&s, Z_FINISH) != Z_STREAM_END) abort();
            comp.n = s.total_out;
            deflateEnd(&s);
            method = 8;
            payload = comp.p;
            plen = comp.n;
        }
        size_t nl = strlen(e->name);
        uint32_t off = (uint32_t)out.n;
        tb_u32(&out, 0x04034b50u);
        tb_u16(&out, 20);
        tb_u16(&out, 0);
        tb_u16(&out, method);
        tb_u16(&out, 0);
        tb_u16(&out, 0x21);
        tb_u32(&out, crc);
        tb_u32(&out, (uint32_t)plen);
        tb_u32(&out, (uint32_t)e->data.n);
        tb_u16(&out, (unsigned)nl);
        tb_u16(&out, 0);
        tb_put(&out, e->name, nl);
        tb_put(&out, payload, plen);
        tb_u32(&cd, 0x02014b50u);
        tb_u16(&cd, 20);
        tb_u16(&cd, 20);
        tb_u16(&cd, 0);
        tb_u16(&cd, method);
        tb_u16(&cd, 0);
        tb_u16(&cd, 0x21);
        tb_u32(&cd, crc);
        tb_u32(&cd, (uint32_t)plen);
        tb_u32(&cd, (uint32_t)e->data.n);
        tb_u16(&cd, (unsigned)nl);
        tb_u16(&cd, 0);
        tb_u16(&cd, 0);
        tb_u16(&cd, 0);
        tb_u16(&cd, 0);
        tb_u32(&cd, 0);
        tb_u32(&cd, off);
        tb_put(&cd, e->name, nl);
        tb_free(&comp);
    }
    uint32_t cd_off = (uint32_t)out.n;
    tb_put(&out, cd.p, cd.n);
    tb_u32(&out, 0x06054b50u);
    tb_u16(&out, 0);
    tb_u16(&out, 0);
    tb_u16(&out, (unsigned)a->n);
    tb_u16(&out, (unsigned)a->n);
    tb_u32(&out, (uint32_t)cd.n);
    tb_u32(&out, cd_off);
    tb_u16(&out, 0);
    int ok = write_file(path, out.p, out.n);
    tb_free(&out);
    tb_free(&cd);
    return ok;
}

/* ---------------- a minimal pickle writer for state dicts ---------------- */

typedef struct {
    char name[200];
    char key[32];
    elan_dtype dt;
    int ndim;
    int64_t shape[ELAN_PK_MAX_DIMS], stride[ELAN_PK_MAX_DIMS];
    int64_t offset, storage_numel;
} t_tensor;

typedef struct {
    t_tensor *t;
    size_t n;
} t_list;

typedef struct {
    int proto4;   /* SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, FRAME instead of the protocol-2 forms */
    int as_param; /* wrap every tensor in torch._utils._rebuild_parameter */
} t_style;

static void pk_str(t_buf *b, const t_style *st, const char *s) {
    size_t n = strlen(s);
    if (st->proto4 && n < 256) {
        tb_u8(b, 0x8c);
        tb_u8(b, (unsigned)n);
    } else {
        tb_u8(b, 'X');
        tb_u32(b, (uint32_t)n);
    }
    tb_put(b, s, n);
    if (st->proto4) tb_u8(b, 0x94);
}

static void pk_int(t_buf *b, int64_t v) {
    if (v >= 0 && v < 256) {
        tb_u8(b, 'K');
        tb_u8(b, (unsigned)v);
    } else if (v >= 0 && v < 65536) {
        tb_u8(b, 'M');
        tb_u16(b, (unsigned)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        tb_u8(b, 'J');
        tb_u32(b, (uint32_t)(int32_t)v);
    } else {
        tb_u8(b, 0x8a);
        tb_u8(b, 8);
        for (int k = 0; k < 8; k++) tb_u8(b, (unsigned)(((uint64_t)v >> (8 * k)) & 255u));
    }
}

static void pk_global(t_buf *b, const t_style *st, const char *mod, const char *name) {
    if (st->proto4) {
        pk_str(b, st, mod);
        pk_str(b, st, name);
        tb_u8(b, 0x93);
        tb_u8(b, 0x94);
    } else {
        tb_u8(b, 'c');
        tb_put(b, mod, strlen(mod));
        tb_u8(b, '\n');
        tb_put(b, name, strlen(name));
        tb_u8(b, '\n');
    }
}

static const char *storage_type(elan_dtype dt) {
    switch (dt) {
    case ELAN_DT_F32: return "FloatStorage";
    case ELAN_DT_F64: return "DoubleStorage";
    case ELAN_DT_F16: return "HalfStorage";
    case ELAN_DT_BF16: return "BFloat16Storage";
    case ELAN_DT_I64: return "LongStorage";
    case ELAN_DT_I32: return "IntStorage";
    }
    return "?";
}

static void pk_tensor(t_buf *b, const t_style *st, const t_tensor *t) {
    if (st->as_param) pk_global(b, st, "torch._utils", "_rebuild_parameter");
    pk_global(b, st, "torch._utils", "_rebuild_tensor_v2");
    tb_u8(b, '(');
    tb_u8(b, '(');
    pk_str(b, st, "storage");
    pk_global(b, st, "torch", storage_type(t->dt));
    pk_str(b, st, t->key);
    pk_str(b, st, "cpu");
    pk_int(b, t->storage_numel);
    tb_u8(b, 't');
    tb_u8(b, 'Q');
    pk_int(b, t->offset);
    tb_u8(b, '(');
    for (int d = 0; d < t->ndim; d++) pk_int(b, t->shape[d]);
    tb_u8(b, 't');
    tb_u8(b, '(');
    for (int d = 0; d < t->ndim; d++) pk_int(b, t->stride[d]);
    tb_u8(b, 't');
    tb_u8(b, 0x89);
    pk_global(b, st, "collections", "OrderedDict");
    tb_u8(b, ')');
    tb_u8(b, 'R');
    tb_u8(b, 't');
    tb_u8(b, 'R');
    if (st->as_param) {
        tb_u8(b, 0x88);
        pk_global(b, st, "collections", "OrderedDict");
        tb_u8(b, ')');
        tb_u8(b, 'R');
        tb_u8(b, 0x87); /* TUPLE3 */
        tb_u8(b, 'R');
    }
}

typedef struct {
    const char *wrapper; /* NULL: tensors go straight into the top-level dict */
    const t_list *list;
} t_section;

static void make_pickle(t_buf *b, const t_style *st, const t_section *sec, size_t nsec) {
    t_buf body = {0};
    tb_u8(&body, '}');
    for (size_t s = 0; s < nsec; s++) {
        if (sec[s].wrapper) {
            pk_str(&body, st, sec[s].wrapper);
            pk_global(&body, st, "collections", "OrderedDict");
            tb_u8(&body, ')');
            tb_u8(&body, 'R');
        }
        tb_u8(&body, '(');
        for (size_t i = 0; i < sec[s].list->n; i++) {
            pk_str(&body, st, sec[s].list->t[i].name);
            pk_tensor(&body, st, &sec[s].list->t[i]);
        }
        tb_u8(&body, 'u');
        if (sec[s].wrapper) tb_u8(&body, 's');
    }
    tb_u8(&body, '.');
    tb_u8(b, 0x80);
    tb_u8(b, st->proto4 ? 4 : 2);
    if (st->proto4) {
        tb_u8(b, 0x95);
        tb_u32(b, (uint32_t)body.n);
        tb_u32(b, 0);
    }
    tb_put(b, body.p, body.n);
    tb_free(&body);
}

/* ---------------- the real checkpoint, opened with the loader's own zip/pickle layers ---------------- */

typedef struct {
    elan_zip *zip;
    elan_pk_tensors pk;
    t_archive ar; /* every entry, for rebuilding */
    t_buf pkl;    /* archive/data.pkl */
} t_real;

static int real_open(t_real *r) {
    memset(r, 0, sizeof *r);
    if (elan_zip_open(t_model_path(), &r->zip) != ELANSR_OK) return 0;
    for (size_t i = 0; i < elan_zip_count(r->zip); i++) {
        const uint8_t *d;
        size_t n;
        if (elan_zip_get(r->zip, i, &d, &n) != ELANSR_OK) return 0;
        ar_set(&r->ar, elan_zip_name(r->zip, i), d, n);
    }
    t_entry *e = ar_find(&r->ar, "archive/data.pkl");
    if (!e) return 0;
    tb_put(&r->pkl, e->data.p, e->data.n);
    return elan_pickle_tensors("real", r->pkl.p, r->pkl.n, &r->pk) == ELANSR_OK;
}

static void real_close(t_real *r) {
    elan_pickle_free(&r->pk);
    elan_zip_close(r->zip);
    ar_free(&r->ar);
    tb_free(&r->pkl);
}

static const elan_pk_tensor *real_tensor(const t_real *r, const char *name) {
    for (size_t i = 0; i < r->pk.n; i++)
        if (strcmp(r->pk.t[i].name, name) == 0) return &r->pk.t[i];
    return NULL;
}

/* float32 values of a tensor of the real file, read independently of checkpoint.c */
static float *real_floats(t_real *r, const char *name, size_t *n) {
    const elan_pk_tensor *t = real_tensor(r, name);
    if (!t || t->dtype != ELAN_DT_F32) return NULL;
    char en[128];
    snprintf(en, sizeof en, "archive/data/%s", t->storage_key);
    t_entry *e = ar_find(&r->ar, en);
    if (!e || e->data.n < ((size_t)t->storage_offset + t->numel) * 4) return NULL;
    float *v = malloc(t->numel * sizeof *v + 1);
    if (!v) abort();
    memcpy(v, e->data.p + t->storage_offset * 4, t->numel * 4);
    *n = t->numel;
    return v;
}

static t_list real_list(const t_real *r) {
    t_list l;
    l.n = r->pk.n;
    l.t = calloc(l.n, sizeof *l.t);
    if (!l.t) abort();
    for (size_t i = 0; i < l.n; i++) {
        const elan_pk_tensor *p = &r->pk.t[i];
        t_tensor *t = &l.t[i];
        snprintf(t->name, sizeof t->name, "%s", p->name);
        snprintf(t->key, sizeof t->key, "%s", p->storage_key);
        t->dt = p->dtype;
        t->ndim = p->ndim;
        memcpy(t->shape, p->shape, sizeof t->shape);
        memcpy(t->stride, p->stride, sizeof t->stride);
        t->offset = p->storage_offset;
        t->storage_numel = p->storage_numel;
    }
    return l;
}

static t_tensor *tl_find(t_list *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0) return &l->t[i];
    return NULL;
}

static void tl_drop_prefix(t_list *l, const char *prefix) {
    size_t o = 0;
    for (size_t i = 0; i < l->n; i++)
        if (strncmp(l->t[i].name, prefix, strlen(prefix)) != 0) l->t[o++] = l->t[i];
    l->n = o;
}

static void tl_add(t_list *l, const t_tensor *t) {
    t_tensor *q = realloc(l->t, (l->n + 1) * sizeof *q);
    if (!q) abort();
    l->t = q;
    l->t[l->n++] = *t;
}

/* This checkpoint's names in the spelling of github.com/xindongzhang/ELAN, behind DataParallel's prefix. */
static void authors_name(const char *canon, char *out, size_t cap) {
    int b, j, k;
    char field[64];
    if (sscanf(canon, "body.%d.modules_lfe.%d.lfe.%d.%63s", &b, &j, &k, field) == 4) {
        const char *conv = k == 0 ? "conv0" : "conv1";
        if (strcmp(field, "mask") == 0)
            snprintf(out, cap, "module.body.%d.modules_lfe.lfe_%d.%s.shift_conv.weight", b, j, conv);
        else
            snprintf(out, cap, "module.body.%d.modules_lfe.lfe_%d.%s.shift_conv.conv1x1.%s", b, j, conv, field);
    } else if (sscanf(canon, "body.%d.modules_gmsa.%d.%63s", &b, &j, field) == 3) {
        snprintf(out, cap, "module.body.%d.modules_gmsa.gmsa_%d.%s", b, j, field);
    } else if (strncmp(canon, "head.", 5) == 0) {
        snprintf(out, cap, "module.head.0.%s", canon + 5);
    } else {
        snprintf(out, cap, "module.%s", canon);
    }
}

/* ---------------- model comparisons ---------------- */

static double conv_diff(const elan_conv *a, const elan_conv *b) {
    if (a->cin != b->cin || a->cout != b->cout || a->k != b->k || !a->w || !b->w || !a->b || !b->b) return INFINITY;
    size_t nw = (size_t)a->cout * (size_t)a->cin * (size_t)a->k * (size_t)a->k;
    double d1 = t_max_abs_diff(a->w, b->w, nw), d2 = t_max_abs_diff(a->b, b->b, (size_t)a->cout);
    return d1 > d2 ? d1 : d2;
}

static double shift_diff(const elan_shift_conv *a, const elan_shift_conv *b) {
    double d = conv_diff(&a->conv, &b->conv);
    if (!isfinite(d) || !a->tap || !b->tap) return INFINITY;
    for (int c = 0; c < a->conv.cin; c++)
        if (a->tap[c] != b->tap[c]) return INFINITY;
    return d;
}

static double dmax(double a, double b) { return a > b || a != a ? a : b; }

/* Largest weight difference; INFINITY when the structure differs. skip_means: ignore sub_mean/add_mean. */
static double model_diff(const elan_model *a, const elan_model *b, int skip_means) {
    if (a->planes != b->planes || a->scale != b->scale || a->n_blocks != b->n_blocks || a->n_share != b->n_share ||
        a->n_params != b->n_params || a->pad_multiple != b->pad_multiple || !a->blocks || !b->blocks)
        return INFINITY;
    double d = dmax(conv_diff(&a->head, &b->head), conv_diff(&a->tail, &b->tail));
    if (!skip_means) d = dmax(d, dmax(conv_diff(&a->sub_mean, &b->sub_mean), conv_diff(&a->add_mean, &b->add_mean)));
    for (int i = 0; i < a->n_blocks; i++) {
        const elan_block *x = &a->blocks[i], *y = &b->blocks[i];
        if (x->n_pairs != y->n_pairs || x->shifted != y->shifted) return INFINITY;
        for (int j = 0; j < x->n_pairs; j++) {
            if (x->gmsa[j].computes_attn != y->gmsa[j].computes_attn) return INFINITY;
            d = dmax(d, shift_diff(&x->lfe[j].c0, &y->lfe[j].c0));
            d = dmax(d, shift_diff(&x->lfe[j].c1, &y->lfe[j].c1));
            d = dmax(d, conv_diff(&x->gmsa[j].proj_in, &y->gmsa[j].proj_in));
            d = dmax(d, conv_diff(&x->gmsa[j].proj_out, &y->gmsa[j].proj_out));
        }
    }
    return d;
}

/* ---------------- helpers for cases ---------------- */

static char g_path[1024];
static const char *tmp_path(const char *name) {
    snprintf(g_path, sizeof g_path, "%s/loader-%s", t_tmp_dir(), name); /* tests run in parallel in one folder */
    return g_path;
}

static void expect_fail(const char *path, const char *must, const char *what) {
    elan_model m;
    memset(&m, 0, sizeof m);
    elansr_clear_error();
    elansr_status st = elan_model_load(path, &m);
    const char *msg = elansr_last_error();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    CHECK_MSG(st != ELANSR_OK, "%s: loaded although broken", what);
    CHECK_MSG(msg[0] != '\0', "%s: empty error message", what);
    CHECK_MSG(!strchr(msg, '\n'), "%s: message has several lines: %s", what, msg);
    CHECK_MSG(strstr(msg, base) != NULL, "%s: message lacks the file name: %s", what, msg);
    if (must) CHECK_MSG(strstr(msg, must) != NULL, "%s: message lacks '%s': %s", what, must, msg);
    CHECK_MSG(m.blocks == NULL && m.head.w == NULL && m.sub_mean.w == NULL, "%s: failed load left arrays", what);
    elan_model_free(&m);
    printf("  %-26s %s\n", what, msg);
}

/* Writes bytes to a scratch file, expects the load to fail, removes the file (they are megabytes each). */
static void expect_fail_bytes(const void *data, size_t n, const char *file, const char *must, const char *what) {
    char path[1024];
    snprintf(path, sizeof path, "%s", tmp_path(file));
    CHECK_MSG(write_file(path, data, n), "%s: cannot write %s", what, path);
    expect_fail(path, must, what);
    remove(path);
}

static void expect_fail_ar(const t_archive *a, const char *file, const char *must, const char *what) {
    const char *p = tmp_path(file);
    if (!ar_write(a, p, 0)) {
        CHECK_MSG(0, "%s: cannot write %s", what, p);
        return;
    }
    expect_fail(p, must, what);
    remove(p);
}

/* Archive of the real entries with data.pkl replaced by pkl. */
static void expect_fail_pkl(const t_real *r, const uint8_t *pkl, size_t n, const char *file, const char *must,
                            const char *what) {
    t_archive a = ar_copy(&r->ar);
    ar_set(&a, "archive/data.pkl", pkl, n);
    expect_fail_ar(&a, file, must, what);
    ar_free(&a);
}

/* Replaces the first occurrence of `from` (len fl) by `to` (len tl) in a copy of the real pickle. */
static int patch(const t_buf *src, t_buf *dst, const void *from, size_t fl, const void *to, size_t tl) {
    dst->n = 0;
    for (size_t i = 0; i + fl <= src->n; i++) {
        if (memcmp(src->p + i, from, fl) == 0) {
            tb_put(dst, src->p, i);
            tb_put(dst, to, tl);
            tb_put(dst, src->p + i + fl, src->n - i - fl);
            return 1;
        }
    }
    return 0;
}

static int load_ok(const char *path, elan_model *m, const char *what) {
    elansr_status st = elan_model_load(path, m);
    CHECK_MSG(st == ELANSR_OK, "%s: load failed: %s", what, elansr_last_error());
    return st == ELANSR_OK;
}

/* Writes archive a (data.pkl replaced by pkl if given), loads it and compares with ref. */
static void expect_same(const t_archive *base, const t_buf *pkl, int use_deflate, const elan_model *ref, int skip_means,
                        const char *file, const char *what, elan_model *keep) {
    t_archive a = ar_copy(base);
    if (pkl) ar_set(&a, "archive/data.pkl", pkl->p, pkl->n);
    const char *p = tmp_path(file);
    CHECK_MSG(ar_write(&a, p, use_deflate), "%s: cannot write %s", what, p);
    ar_free(&a);
    elan_model m;
    int ok = load_ok(p, &m, what);
    remove(p);
    if (ok) {
        double d = model_diff(&m, ref, skip_means);
        CHECK_MSG(d == 0.0, "%s: weights differ from the reference by %g", what, d);
        printf("  %-26s loads, identical weights\n", what);
    }
    if (keep)
        *keep = m; /* zeroed by the loader when it failed */
    else
        elan_model_free(&m);
}

/* ---------------- half / bfloat16 encodings written by the test ---------------- */

static uint16_t f16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if ((u & 0x7fffffffu) == 0) return sign;
    if (e >= 31) return (uint16_t)(sign | 0x7bffu);
    if (e <= 0) {
        if (e < -10) return sign;
        return (uint16_t)(sign | ((man | 0x800000u) >> (14 - e)));
    }
    return (uint16_t)(sign | ((uint32_t)e << 10) | (man >> 13));
}

static float f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(m + 1024, e - 25) : ldexp(m, -24);
    return (float)((h & 0x8000u) ? -v : v);
}

static float le_float(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void put_le_float(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(u >> (8 * k));
}

/* Rewrites every float32 storage as dt (into conv), and as float32 holding exactly the values dt can hold
   (into same): loading both must give identical models. */
static void convert_storages(const t_real *r, t_list *l, elan_dtype dt, t_archive *conv, t_archive *same) {
    for (size_t i = 0; i < l->n; i++) {
        t_tensor *t = &l->t[i];
        if (t->dt != ELAN_DT_F32) continue;
        char en[128];
        snprintf(en, sizeof en, "archive/data/%s", t->key);
        const t_entry *e = ar_find(&r->ar, en);
        size_t n = e->data.n / 4;
        size_t es = dt == ELAN_DT_F64 ? 8 : 2;
        uint8_t *c = malloc(n * es + 1), *s = malloc(n * 4 + 1);
        if (!c || !s) abort();
        for (size_t k = 0; k < n; k++) {
            float x = le_float(e->data.p + 4 * k), y;
            if (dt == ELAN_DT_F64) {
                double d = x;
                uint64_t u;
                memcpy(&u, &d, 8);
                for (int b = 0; b < 8; b++) c[8 * k + (size_t)b] = (uint8_t)(u >> (8 * b));
                y = x;
            } else if (dt == ELAN_DT_F16) {
                uint16_t h = f16_bits(x);
                c[2 * k] = (uint8_t)h;
                c[2 * k + 1] = (uint8_t)(h >> 8);
                y = f16_value(h);
            } else {
                uint32_t u;
                memcpy(&u, &x, 4);
                c[2 * k] = (uint8_t)(u >> 16);
                c[2 * k + 1] = (uint8_t)(u >> 24);
                u &= 0xffff0000u;
                memcpy(&y, &u, 4);
            }
            put_le_float(s + 4 * k, y);
        }
        ar_set(conv, en, c, n * es);
        ar_set(same, en, s, n * 4);
        free(c);
        free(s);
        t->dt = dt;
    }
}

/* ---------------- the cases ---------------- */

static void check_real(t_real *r, const elan_model *m) {
    CHECK(m->planes == 60);
    CHECK(m->scale == 4);
    CHECK(m->n_blocks == 12);
    CHECK(m->n_share == 1);
    CHECK(m->windows[0] == 4 && m->windows[1] == 8 && m->windows[2] == 16);
    CHECK(m->pad_multiple == 16);
    CHECK_MSG(m->n_params == 597192, "n_params %zu", m->n_params);
    CHECK(m->n_params > 550000 && m->n_params < 650000);
    int pairs = 0;
    for (int b = 0; b < m->n_blocks; b++) {
        const elan_block *blk = &m->blocks[b];
        pairs += blk->n_pairs;
        CHECK(blk->shifted == (b & 1));
        for (int j = 0; j < blk->n_pairs; j++) {
            const elan_gmsa *g = &blk->gmsa[j];
            CHECK(g->computes_attn == (j == 0));
            CHECK(g->proj_in.cin == 60 && g->proj_in.cout == (j == 0 ? 120 : 60) && g->proj_in.k == 1);
            CHECK(g->proj_out.cin == 60 && g->proj_out.cout == 60 && g->proj_out.k == 1);
            const elan_shift_conv *sc[2] = {&blk->lfe[j].c0, &blk->lfe[j].c1};
            CHECK(sc[0]->conv.cin == 60 && sc[0]->conv.cout == 120 && sc[0]->conv.k == 1);
            CHECK(sc[1]->conv.cin == 120 && sc[1]->conv.cout == 60 && sc[1]->conv.k == 1);
            for (int k = 0; k < 2; k++) {
                int cin = sc[k]->conv.cin, g5 = cin / 5, bad = 0;
                for (int c = 0; c < cin; c++) {
                    int want = c < g5 ? 5 : c < 2 * g5 ? 3 : c < 3 * g5 ? 7 : c < 4 * g5 ? 1 : 4;
                    bad += sc[k]->tap[c] != want;
                }
                CHECK_MSG(!bad, "block %d pair %d conv %d: %d taps differ from the ELAN shift pattern", b, j, k, bad);
            }
        }
    }
    CHECK(pairs == 24);
    CHECK(m->head.cin == 3 && m->head.cout == 60 && m->head.k == 3);
    CHECK(m->tail.cin == 60 && m->tail.cout == 48 && m->tail.k == 3);
    for (int i = 0; i < 3; i++) {
        CHECK(fabs(m->sub_mean.b[i] + 255.0 * k_mean[i]) < 1e-3);
        CHECK(fabs(m->add_mean.b[i] - 255.0 * k_mean[i]) < 1e-3);
        for (int k = 0; k < 3; k++) CHECK(m->sub_mean.w[i * 3 + k] == (i == k) && m->add_mean.w[i * 3 + k] == (i == k));
    }
    /* Values measured with Python's struct module on the same file. */
    CHECK(fabs(m->head.w[0] - -0.0327013656) < 1e-8 && fabs(m->head.w[2] - 0.0178215206) < 1e-8);
    CHECK(fabs(m->tail.b[0] - -0.230375826) < 1e-7);
    const elan_conv *pi = &m->blocks[0].gmsa[0].proj_in;
    CHECK(fabs(pi->w[5 * 60 + 0] - 0.0147497856) < 1e-8 && fabs(pi->w[5 * 60 + 1] - 0.042524218) < 1e-8);
    CHECK(fabs(pi->b[5] - 2.45326448) < 1e-6);

    /* BatchNorm folding by hand, for block 3, the reusing GMSA, channel 7. */
    size_t n[6];
    const char *p = "body.3.modules_gmsa.1.project_inp.";
    const char *f[6] = {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"};
    float *v[6];
    int ok = 1;
    for (int k = 0; k < 6; k++) {
        char nm[128];
        snprintf(nm, sizeof nm, "%s%s", p, f[k]);
        v[k] = real_floats(r, nm, &n[k]);
        ok &= v[k] != NULL;
    }
    CHECK_MSG(ok, "cannot read the BatchNorm tensors independently");
    if (ok) {
        const elan_conv *c = &m->blocks[3].gmsa[1].proj_in;
        const int o = 7;
        double scale = v[2][o] / sqrt((double)v[5][o] + 1e-5);
        for (int i = 0; i < 60; i++) {
            double want = v[0][o * 60 + i] * scale;
            CHECK_MSG(fabs(c->w[o * 60 + i] - want) <= 1e-6 * fabs(want) + 1e-9, "fold w[%d][%d]", o, i);
        }
        double bwant = (v[1][o] - (double)v[4][o]) * scale + v[3][o];
        CHECK_MSG(fabs(c->b[o] - bwant) <= 1e-6 * fabs(bwant) + 1e-7, "fold b[%d]: %g vs %g", o, c->b[o], bwant);
        CHECK(n[0] == 3600 && n[5] == 60);
    }
    for (int k = 0; k < 6; k++) free(v[k]);
}

static void broken_files(t_real *r) {
    /* The real file's bytes, to cut and patch. */
    FILE *fp = fopen(t_model_path(), "rb");
    t_buf file = {0};
    if (fp) {
        uint8_t chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) tb_put(&file, chunk, got);
        fclose(fp);
    }
    CHECK(file.n > 100000);
    if (file.n <= 100000) return;

    expect_fail(tmp_path("does-not-exist.pth"), "cannot open", "missing file");
    expect_fail(t_tmp_dir(), "cannot read", "a directory");
    expect_fail_bytes("", 0, "empty.pth", "empty", "empty file");
    t_seed(7);
    uint8_t rnd[4096];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)t_next();
    expect_fail_bytes(rnd, sizeof rnd, "random.pth", "not a zip", "random bytes");
    expect_fail_bytes("hello\n", 6, "text.pth", "too short", "tiny text file");

    const size_t cuts[] = {1, 4, 21, 22, 30, 100, 1000, 59000, file.n / 2, file.n - 200, file.n - 100, file.n - 23,
                           file.n - 22, file.n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char nm[64], what[64];
        snprintf(nm, sizeof nm, "truncated-%zu.pth", cuts[i]);
        snprintf(what, sizeof what, "truncated at %zu", cuts[i]);
        expect_fail_bytes(file.p, cuts[i], nm, NULL, what);
    }

    t_buf b = {0};
    tb_put(&b, file.p, file.n);
    memcpy(b.p, "XXXX", 4);
    expect_fail_bytes(b.p, b.n, "bad-magic.pth", "local header", "wrong local magic");
    memcpy(b.p, file.p, file.n);
    memcpy(b.p + file.n - 22, "PK\x05\x07", 4);
    expect_fail_bytes(b.p, b.n, "bad-eocd.pth", "not a zip", "wrong end-record magic");
    memcpy(b.p, file.p, file.n);
    b.p[file.n - 100000] ^= 0x40; /* inside some stored tensor */
    expect_fail_bytes(b.p, b.n, "bitflip.pth", "CRC", "flipped data bit");
    memcpy(b.p, file.p, file.n);
    b.p[6] |= 1; /* the encryption flag, in the first local header ... */
    size_t cd_off = (size_t)file.p[file.n - 6] | ((size_t)file.p[file.n - 5] << 8) |
                    ((size_t)file.p[file.n - 4] << 16) | ((size_t)file.p[file.n - 3] << 24);
    b.p[cd_off + 8] |= 1; /* ... and in its central entry */
    expect_fail_bytes(b.p, b.n, "encrypted.pth", "encrypted", "encrypted entry");
    memcpy(b.p, file.p, file.n);
    memset(b.p + file.n - 22 + 10, 0xff, 2); /* entry count 0xFFFF: zip64 */
    expect_fail_bytes(b.p, b.n, "zip64.pth", "zip64", "zip64 end record");
    memcpy(b.p, file.p, file.n);
    b.p[file.n - 22 + 4] = 1; /* disk number */
    expect_fail_bytes(b.p, b.n, "multidisk.pth", "multi-disk", "multi-disk archive");
    tb_free(&b);
    tb_free(&file);

    /* Archives rebuilt with one entry changed. */
    t_archive a = ar_copy(&r->ar);
    t_entry *e = ar_find(&a, "archive/data/4"); /* head.weight */
    e->data.n -= 4;
    expect_fail_ar(&a, "short-storage.pth", "head.weight", "storage too short");
    ar_free(&a);

    a = ar_copy(&r->ar);
    e = ar_find(&a, "archive/data/4");
    put_le_float(e->data.p + 40, NAN);
    expect_fail_ar(&a, "nan.pth", "non-finite", "NaN weight");
    ar_free(&a);

    a = ar_copy(&r->ar);
    ar_remove(&a, "archive/data/5"); /* head.bias */
    expect_fail_ar(&a, "no-storage.pth", "lacks", "storage entry missing");
    ar_free(&a);

    a = ar_copy(&r->ar);
    ar_set(&a, "archive/byteorder", "big", 3);
    expect_fail_ar(&a, "big-endian.pth", "little-endian", "big-endian byteorder");
    ar_free(&a);

    a = ar_copy(&r->ar);
    e = ar_find(&a, "archive/data.pkl");
    snprintf(e->name, sizeof e->name, "archive/data.pkx");
    expect_fail_ar(&a, "no-pickle.pth", "no data.pkl", "no data.pkl");
    ar_free(&a);

    a = ar_copy(&r->ar);
    e = ar_find(&a, "archive/data/8"); /* body.0.modules_lfe.0.lfe.0.mask: channel 0 gets a second 1 */
    put_le_float(e->data.p + 0, 1.0f);
    expect_fail_ar(&a, "mask-two-ones.pth", "body.0.modules_lfe.0.lfe.0.mask", "mask with two ones");
    ar_free(&a);

    a = ar_copy(&r->ar);
    e = ar_find(&a, "archive/data/11"); /* body.0.modules_lfe.0.lfe.2.mask: channel 3 all zero */
    for (int q = 0; q < 9; q++) put_le_float(e->data.p + (3 * 9 + q) * 4, 0.0f);
    expect_fail_ar(&a, "mask-zero.pth", "body.0.modules_lfe.0.lfe.2.mask", "mask channel all zero");
    ar_free(&a);

    a = ar_copy(&r->ar);
    e = ar_find(&a, "archive/data/8");
    for (int q = 0; q < 9; q++) {
        uint8_t *at = e->data.p + (size_t)(20 * 9 + q) * 4; /* channel 20 */
        if (le_float(at) == 1.0f) put_le_float(at, 0.5f);
    }
    expect_fail_ar(&a, "mask-half.pth", "not a one-hot", "mask value 0.5");
    ar_free(&a);

    /* Patched pickles. */
    t_buf p = {0};
    CHECK(patch(&r->pkl, &p, "head.bias", 9, "head.bia_", 9));
    expect_fail_pkl(r, p.p, p.n, "missing-tensor.pth", "missing tensor 'head.bias'", "missing tensor");
    CHECK(patch(&r->pkl, &p, "(K\x03K\x03K\x01K\x01t", 10, "(K\x03K\x01K\x03K\x01t", 10));
    expect_fail_pkl(r, p.p, p.n, "wrong-shape.pth",
                    "tensor 'sub_mean.weight' has shape (3,1,3,1) but (3,3,1,1) was expected", "wrong shape");
    CHECK(patch(&r->pkl, &p, "collections\nOrderedDict\n", 24, "posix\nsystem\n", 13));
    expect_fail_pkl(r, p.p, p.n, "evil-global.pth", "forbidden global 'posix.system'", "forbidden global");
    CHECK(patch(&r->pkl, &p, "torch\nFloatStorage\n", 19, "torch\nByteStorage\n", 18));
    expect_fail_pkl(r, p.p, p.n, "byte-storage.pth", "'torch.ByteStorage'", "unsupported storage type");
    CHECK(patch(&r->pkl, &p, "QK\x00", 3, "QK\x05", 3));
    expect_fail_pkl(r, p.p, p.n, "offset-past-end.pth", "runs past the end", "offset past storage end");
    CHECK(patch(&r->pkl, &p, "\x80\x02}", 3, "\x80\x02i", 3));
    expect_fail_pkl(r, p.p, p.n, "inst-opcode.pth", "forbidden opcode INST", "forbidden opcode");
    CHECK(patch(&r->pkl, &p, "\x80\x02}", 3, "\x80\x02R", 3));
    expect_fail_pkl(r, p.p, p.n, "underflow.pth", "empty stack", "stack underflow");
    CHECK(patch(&r->pkl, &p, "\x80\x02}", 3, "\x80\x02\xff", 3));
    expect_fail_pkl(r, p.p, p.n, "bad-opcode.pth", "unknown opcode 0xff", "unknown opcode");
    CHECK(patch(&r->pkl, &p, "\x80\x02", 2, "\x80\x07", 2));
    expect_fail_pkl(r, p.p, p.n, "proto7.pth", "protocol 7", "pickle protocol 7");
    expect_fail_pkl(r, r->pkl.p, r->pkl.n / 2, "half-pickle.pth", "pickle", "pickle cut in half");
    expect_fail_pkl(r, r->pkl.p, r->pkl.n - 1, "no-stop.pth", "without STOP", "pickle without STOP");
    expect_fail_pkl(r, (const uint8_t *)"", 0, "empty-pickle.pth", "without STOP", "empty pickle");
    tb_free(&p);
}

/* Re-spelled, re-typed and re-wrapped copies made with the pickle writer. */
static void generated(t_real *r, const elan_model *ref) {
    t_style p2 = {0, 0}, p4 = {1, 1};
    t_buf pk = {0};

    /* Exactly the real tensors through the writer: guards the writer itself. */
    t_list base = real_list(r);
    t_section s1 = {"params", &base};
    make_pickle(&pk, &p2, &s1, 1);
    expect_same(&r->ar, &pk, 0, ref, 0, "gen-params.pth", "generated 'params'", NULL);

    /* The authors' names, DataParallel prefix, top-level dict. */
    t_list au = real_list(r);
    for (size_t i = 0; i < au.n; i++) {
        char nm[256];
        authors_name(au.t[i].name, nm, sizeof nm);
        snprintf(au.t[i].name, sizeof au.t[i].name, "%.*s", (int)sizeof au.t[i].name - 1, nm);
    }
    t_section s2 = {NULL, &au};
    pk.n = 0;
    make_pickle(&pk, &p2, &s2, 1);
    expect_same(&r->ar, &pk, 0, ref, 0, "gen-authors.pth", "authors' names, top level", NULL);
    free(au.t);

    /* Protocol 4 forms, parameters, under "state_dict". */
    t_section s3 = {"state_dict", &base};
    pk.n = 0;
    make_pickle(&pk, &p4, &s3, 1);
    expect_same(&r->ar, &pk, 0, ref, 0, "gen-proto4.pth", "protocol 4, state_dict", NULL);

    /* "params" is preferred over a broken "params_ema". */
    t_list ema = real_list(r);
    tl_drop_prefix(&ema, "head.");
    t_section s4[2] = {{"params_ema", &ema}, {"params", &base}};
    pk.n = 0;
    make_pickle(&pk, &p2, s4, 2);
    expect_same(&r->ar, &pk, 0, ref, 0, "gen-prefer.pth", "params over params_ema", NULL);
    t_section s5 = {"params_ema", &base};
    pk.n = 0;
    make_pickle(&pk, &p2, &s5, 1);
    expect_same(&r->ar, &pk, 0, ref, 0, "gen-ema.pth", "params_ema only", NULL);
    t_section s6[2] = {{"params", &ema}, {"other", &base}};
    pk.n = 0;
    make_pickle(&pk, &p2, s6, 2);
    expect_fail_pkl(r, pk.p, pk.n, "gen-ema-broken.pth", "missing tensor 'head.weight'", "params lacks head");
    free(ema.t);

    /* Without sub_mean / add_mean: synthesised from the DIV2K mean. */
    t_list nomean = real_list(r);
    tl_drop_prefix(&nomean, "sub_mean.");
    tl_drop_prefix(&nomean, "add_mean.");
    t_section s7 = {"params", &nomean};
    pk.n = 0;
    make_pickle(&pk, &p2, &s7, 1);
    elan_model m;
    memset(&m, 0, sizeof m);
    expect_same(&r->ar, &pk, 0, ref, 1, "gen-nomean.pth", "no sub_mean/add_mean", &m);
    if (m.sub_mean.w) {
        CHECK(conv_diff(&m.sub_mean, &ref->sub_mean) < 1e-4);
        CHECK(conv_diff(&m.add_mean, &ref->add_mean) < 1e-4);
    }
    elan_model_free(&m);
    tl_drop_prefix(&nomean, "sub_mean."); /* only the bias of add_mean left: half a layer is an error */
    t_tensor amb = *tl_find(&base, "add_mean.bias");
    tl_add(&nomean, &amb);
    pk.n = 0;
    make_pickle(&pk, &p2, &s7, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-half-mean.pth", "missing tensor 'add_mean.weight'", "add_mean half present");
    free(nomean.t);

    /* Other storage dtypes: float64 must give the same model; float16 and bfloat16 the same model as a float32
       file holding the rounded values. */
    const elan_dtype dts[3] = {ELAN_DT_F64, ELAN_DT_F16, ELAN_DT_BF16};
    for (int k = 0; k < 3; k++) {
        t_list l = real_list(r);
        t_archive conv = ar_copy(&r->ar), same = ar_copy(&r->ar);
        convert_storages(r, &l, dts[k], &conv, &same);
        t_section s = {"params", &l};
        pk.n = 0;
        make_pickle(&pk, &p2, &s, 1);
        char file[64], what[64];
        elan_model rounded;
        memset(&rounded, 0, sizeof rounded);
        snprintf(file, sizeof file, "gen-%s-ref.pth", elan_dtype_name(dts[k]));
        const char *path = tmp_path(file);
        CHECK(ar_write(&same, path, 0));
        int ok = load_ok(path, &rounded, "rounded reference");
        remove(path);
        if (ok) {
            snprintf(file, sizeof file, "gen-%s.pth", elan_dtype_name(dts[k]));
            snprintf(what, sizeof what, "%s storages", elan_dtype_name(dts[k]));
            expect_same(&conv, &pk, 0, &rounded, 0, file, what, NULL);
            double d = model_diff(&rounded, ref, 0);
            CHECK(dts[k] == ELAN_DT_F64 ? d == 0.0 : isfinite(d));
        }
        elan_model_free(&rounded);
        ar_free(&conv);
        ar_free(&same);
        free(l.t);
    }

    /* Structural errors. */
    t_list l = real_list(r);
    t_section s = {"params", &l};
    t_tensor *t = tl_find(&l, "tail.0.weight");
    t->ndim = 3;
    t->shape[2] = 9;
    t->stride[1] = 9;
    t->stride[2] = 1;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-tail3d.pth", "tensor 'tail.0.weight' has shape (48,60,9) but", "3-d tail");
    free(l.t);

    l = real_list(r);
    s.list = &l;
    t = tl_find(&l, "tail.0.weight");
    t->shape[0] = 45;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-scale.pth", "45 output channels", "tail of no known scale");
    free(l.t);

    l = real_list(r);
    s.list = &l;
    t = tl_find(&l, "head.weight");
    t->shape[0] = 58;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-planes.pth", "58 planes", "planes not a multiple of 3");
    free(l.t);

    l = real_list(r);
    s.list = &l;
    t = tl_find(&l, "head.weight");
    t->stride[2] = 1;
    t->stride[3] = 3;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-strided.pth", "only contiguous", "non-contiguous tensor");
    t->stride[2] = 3;
    t->stride[3] = 1;
    t->storage_numel = 1700;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-numel.pth", "holds 6480 bytes", "storage numel mismatch");
    t->storage_numel = 1620;
    t = tl_find(&l, "head.bias");
    t->dt = ELAN_DT_I64;
    snprintf(t->key, sizeof t->key, "int64bias");
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    t_archive a = ar_copy(&r->ar);
    uint8_t zeros[480] = {0};
    ar_set(&a, "archive/data/int64bias", zeros, sizeof zeros);
    ar_set(&a, "archive/data.pkl", pk.p, pk.n);
    expect_fail_ar(&a, "gen-int64.pth", "'head.bias' is int64", "int64 weight");
    ar_free(&a);
    free(l.t);

    l = real_list(r);
    s.list = &l;
    t_tensor dup = *tl_find(&l, "head.bias");
    snprintf(dup.name, sizeof dup.name, "head.0.bias");
    tl_add(&l, &dup);
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-dup.pth", "appears twice", "same tensor twice");
    snprintf(l.t[l.n - 1].name, sizeof l.t[l.n - 1].name, "tail.2.weight");
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-extra.pth", "unexpected tensor 'tail.2.weight'", "extra tensor");
    free(l.t);

    l = real_list(r);
    s.list = &l;
    tl_drop_prefix(&l, "body.3.modules_lfe.1.");
    tl_drop_prefix(&l, "body.3.modules_gmsa.1.");
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-pairs.pth", "block 3 has 1", "uneven pairs per block");
    tl_drop_prefix(&l, "body.11.");
    tl_drop_prefix(&l, "body.3.");
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-noblock.pth", "missing tensor 'body.3.", "block missing");
    tl_drop_prefix(&l, "body.");
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-nobody.pth", "missing tensor 'body.0.", "no body at all");
    l.n = 0;
    pk.n = 0;
    make_pickle(&pk, &p2, &s, 1);
    expect_fail_pkl(r, pk.p, pk.n, "gen-empty.pth", "no tensors", "empty state dict");
    free(l.t);
    free(base.t);
    tb_free(&pk);
}

/* Random damage: every outcome is either a clean load or a clean one-line error. */
static void fuzz(t_real *r) {
    t_seed(12345);
    int bad = 0, n_ok = 0;
    t_buf p = {0};
    for (int it = 0; it < 1200; it++) {
        p.n = 0;
        size_t n = r->pkl.n;
        if (it % 5 == 0) n = (size_t)(t_next() % (r->pkl.n + 1));
        tb_put(&p, r->pkl.p, n);
        int flips = 1 + (int)(t_next() % 4);
        for (int k = 0; k < flips && n; k++) {
            size_t at = (size_t)(t_next() % n);
            p.p[at] = (t_next() & 1) ? (uint8_t)t_next() : (uint8_t)(p.p[at] ^ (1u << (t_next() % 8)));
        }
        elan_pk_tensors ts = {NULL, 0};
        elansr_clear_error();
        elansr_status st = elan_pickle_tensors("fuzz.pth", p.p, p.n, &ts);
        const char *msg = elansr_last_error();
        if (st == ELANSR_OK)
            n_ok++;
        else if (!msg[0] || strchr(msg, '\n') || !strstr(msg, "fuzz.pth") || ts.t)
            bad++;
        elan_pickle_free(&ts);
    }
    CHECK_MSG(bad == 0, "pickle fuzz: %d bad outcomes", bad);
    printf("  pickle fuzz: 1200 mutations, %d parsed, the rest refused cleanly\n", n_ok);

    FILE *fp = fopen(t_model_path(), "rb");
    t_buf file = {0};
    if (fp) {
        uint8_t chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) tb_put(&file, chunk, got);
        fclose(fp);
    }
    bad = 0;
    n_ok = 0;
    for (int it = 0; it < 200 && file.n > 40000; it++) {
        t_buf z = {0};
        tb_put(&z, file.p, file.n);
        int flips = 1 + (int)(t_next() % 3);
        for (int k = 0; k < flips; k++) {
            size_t at = (it & 1) ? file.n - 1 - (size_t)(t_next() % 40000) : (size_t)(t_next() % file.n);
            z.p[at] = (uint8_t)t_next();
        }
        elan_zip *zz = NULL;
        elansr_clear_error();
        elansr_status st = elan_zip_open_memory("zfuzz.pth", z.p, z.n, &zz);
        for (size_t i = 0; !st && i < elan_zip_count(zz); i++) {
            const uint8_t *d;
            size_t dn;
            st = elan_zip_get(zz, i, &d, &dn);
        }
        const char *msg = elansr_last_error();
        if (!st)
            n_ok++;
        else if (!msg[0] || strchr(msg, '\n') || !strstr(msg, "zfuzz.pth"))
            bad++;
        elan_zip_close(zz);
        tb_free(&z);
    }
    CHECK_MSG(bad == 0, "zip fuzz: %d bad outcomes", bad);
    printf("  zip fuzz: 200 mutations, %d still readable, the rest refused cleanly\n", n_ok);
    tb_free(&file);

    /* A few damaged pickles through the whole loader. */
    for (int it = 0; it < 40; it++) {
        p.n = 0;
        tb_put(&p, r->pkl.p, r->pkl.n);
        p.p[(size_t)(t_next() % p.n)] = (uint8_t)t_next();
        t_archive a = ar_copy(&r->ar);
        ar_set(&a, "archive/data.pkl", p.p, p.n);
        const char *path = tmp_path("fuzz-load.pth");
        CHECK(ar_write(&a, path, 0));
        ar_free(&a);
        elan_model m;
        elansr_clear_error();
        elansr_status st = elan_model_load(path, &m);
        const char *msg = elansr_last_error();
        if (st)
            CHECK_MSG(msg[0] && !strchr(msg, '\n') && strstr(msg, "fuzz-load.pth"), "load fuzz message: %s", msg);
        elan_model_free(&m);
        remove(path);
    }
    tb_free(&p);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines interleave with CHECK failures on stderr */
    FILE *f = fopen(t_model_path(), "rb");
    if (!f) {
        printf("test_loader: skipped, no checkpoint at %s\n", t_model_path());
        return TEST_SKIP_CODE;
    }
    fclose(f);

    elan_model ref;
    elan_model_free(NULL);
    memset(&ref, 0, sizeof ref);
    elan_model_free(&ref); /* zeroed model: nothing to free */
    if (!load_ok(t_model_path(), &ref, "real checkpoint")) return test_finish("test_loader");
    t_real r;
    if (!real_open(&r)) {
        CHECK_MSG(0, "cannot reopen the checkpoint: %s", elansr_last_error());
        real_close(&r);
        elan_model_free(&ref);
        return test_finish("test_loader");
    }
    printf("real checkpoint: planes %d, scale %d, %d blocks, n_share %d, %zu parameters\n", ref.planes, ref.scale,
           ref.n_blocks, ref.n_share, ref.n_params);
    check_real(&r, &ref);

    printf("rebuilt archives:\n");
    t_archive moved = {NULL, 0};
    for (size_t i = 0; i < r.ar.n; i++) {
        char nm[300];
        snprintf(nm, sizeof nm, "elan_light_x4_v2/%s", r.ar.e[i].name + strlen("archive/"));
        ar_set(&moved, nm, r.ar.e[i].data.p, r.ar.e[i].data.n);
    }
    expect_same(&moved, NULL, 0, &ref, 0, "stored-copy.pth", "stored, other top folder", NULL);
    expect_same(&r.ar, NULL, 1, &ref, 0, "deflated.pth", "deflated", NULL);
    t_archive little = ar_copy(&r.ar);
    ar_set(&little, "archive/byteorder", "little", 6);
    expect_same(&little, NULL, 0, &ref, 0, "little.pth", "byteorder 'little'", NULL);
    ar_free(&little);
    ar_free(&moved);

    printf("broken files:\n");
    broken_files(&r);
    printf("generated pickles:\n");
    generated(&r, &ref);
    printf("fuzzing:\n");
    fuzz(&r);

    real_close(&r);
    elan_model_free(&ref);
    elan_model_free(&ref); /* twice is harmless */
    return test_finish("test_loader");
}
