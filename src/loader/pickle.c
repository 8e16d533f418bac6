/* pickle.c — the restricted pickle machine of pickle.h.
   Objects live in an arena (one list of every object made) and the stack, memo and containers hold plain
   pointers into it, so shared references and even cycles cost nothing and everything is freed in one sweep;
   nothing is ever traversed recursively, so a hostile nesting depth cannot overflow the C stack. MARK
   follows CPython's meta-stack rule (ops after a MARK cannot pop below it), which keeps the stack shape the
   same as in the real unpickler. Every opcode consumes at least one input byte and makes at most one object,
   so time and memory are linear in the pickle's size on top of the fixed caps below. */
#include "loader/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "loader/zip.h"

/* Caps far above what any state dict needs (the ELAN-light pickle: ~15k objects, stack < 1k, memo 3.5k). */
#define MAX_STACK ((size_t)1 << 18)
#define MAX_MARKS ((size_t)1 << 10)
#define MAX_MEMO ((size_t)1 << 20)
#define MAX_OBJECTS ((size_t)1 << 20)
#define MAX_ITEMS ((size_t)1 << 22) /* container slots, all containers together */
#define MAX_STRING ((size_t)1 << 16)
#define MAX_GLOBAL_LINE 256

typedef enum { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR } kind;
static const char *const k_kind_names[] = {"None", "bool", "int", "float", "str", "tuple",
                                           "list", "dict", "global", "storage", "tensor"};

typedef enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE } gkind;
static const struct {
    const char *module, *name;
    gkind g;
    elan_dtype dt;
} k_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, ELAN_DT_F32},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, ELAN_DT_F32},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, ELAN_DT_F32},
    {"torch", "FloatStorage", G_STORAGE, ELAN_DT_F32},
    {"torch", "DoubleStorage", G_STORAGE, ELAN_DT_F64},
    {"torch", "HalfStorage", G_STORAGE, ELAN_DT_F16},
    {"torch", "BFloat16Storage", G_STORAGE, ELAN_DT_BF16},
    {"torch", "LongStorage", G_STORAGE, ELAN_DT_I64},
    {"torch", "IntStorage", G_STORAGE, ELAN_DT_I32},
};
#define N_GLOBALS (sizeof k_globals / sizeof k_globals[0])

typedef struct {
    struct obj *storage;
    int64_t offset;
    int ndim;
    int64_t shape[ELAN_PK_MAX_DIMS], stride[ELAN_PK_MAX_DIMS];
    size_t numel;
} tinfo;

typedef struct obj {
    kind k;
    int64_t i;          /* K_INT, K_BOOL; K_GLOBAL: index into k_globals; K_STORAGE: numel */
    double f;           /* K_FLOAT */
    char *s;            /* K_STR (owned, NUL-terminated) */
    size_t slen;
    struct obj *ref;    /* K_STORAGE: its key (a K_STR) */
    elan_dtype dt;      /* K_STORAGE */
    struct obj **it;    /* K_TUPLE, K_LIST; K_DICT as key, value, key, value... (owned array) */
    size_t n, cap;
    tinfo *t;           /* K_TENSOR (owned) */
} obj;

typedef struct {
    const char *label;
    const uint8_t *p;
    size_t n, pos, op_pos;
    obj **arena;
    size_t n_arena, cap_arena;
    obj **stack;
    size_t sp, cap_stack;
    size_t *marks;
    size_t n_marks, cap_marks;
    obj **memo;
    size_t cap_memo, n_memo;
    size_t n_items;
} vm;

size_t elan_dtype_size(elan_dtype t) {
    switch (t) {
    case ELAN_DT_F64: case ELAN_DT_I64: return 8;
    case ELAN_DT_F16: case ELAN_DT_BF16: return 2;
    case ELAN_DT_F32: case ELAN_DT_I32: return 4;
    }
    return 0;
}

const char *elan_dtype_name(elan_dtype t) {
    switch (t) {
    case ELAN_DT_F32: return "float32";
    case ELAN_DT_F64: return "float64";
    case ELAN_DT_F16: return "float16";
    case ELAN_DT_BF16: return "bfloat16";
    case ELAN_DT_I64: return "int64";
    case ELAN_DT_I32: return "int32";
    }
    return "?";
}

static const char *opcode_name(uint8_t op) {
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    }
    return NULL;
}

static elansr_status vfail(vm *v, elansr_status st, const char *fmt, ...) ELANSR_PRINTF(3, 4);
static elansr_status vfail(vm *v, elansr_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (v->op_pos == SIZE_MAX) return elansr_fail(st, "%s: %s", v->label, msg);
    return elansr_fail(st, "%s: %s (data.pkl byte %zu)", v->label, msg, v->op_pos);
}
#define FAIL(...) vfail(v, ELANSR_ERR_FORMAT, __VA_ARGS__)
#define NOMEM() vfail(v, ELANSR_ERR_NOMEM, "out of memory while reading the pickle")

/* Grows *arr to hold `need` elements (doubling), refusing sizes that overflow. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 16, bytes;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return 0;
        nc *= 2;
    }
    if (!elansr_mul_size(nc, elem, &bytes)) return 0;
    void *q = realloc(*arr, bytes);
    if (!q) return 0;
    *arr = q;
    *cap = nc;
    return 1;
}

static elansr_status new_obj(vm *v, kind k, obj **out) {
    *out = NULL;
    if (v->n_arena >= MAX_OBJECTS) return FAIL("pickle makes more than %zu objects", MAX_OBJECTS);
    if (!grow((void **)&v->arena, &v->cap_arena, v->n_arena + 1, sizeof *v->arena)) return NOMEM();
    obj *o = calloc(1, sizeof *o);
    if (!o) return NOMEM();
    o->k = k;
    v->arena[v->n_arena++] = o;
    *out = o;
    return ELANSR_OK;
}

static elansr_status push(vm *v, obj *o) {
    if (v->sp >= MAX_STACK) return FAIL("pickle stack deeper than %zu", MAX_STACK);
    if (!grow((void **)&v->stack, &v->cap_stack, v->sp + 1, sizeof *v->stack)) return NOMEM();
    v->stack[v->sp++] = o;
    return ELANSR_OK;
}

static elansr_status push_new(vm *v, kind k, obj **out) {
    obj *o;
    elansr_status st = new_obj(v, k, &o);
    if (st) return st;
    if (out) *out = o;
    return push(v, o);
}

static size_t floor_sp(const vm *v) { return v->n_marks ? v->marks[v->n_marks - 1] : 0; }

static elansr_status pop(vm *v, obj **out) {
    if (v->sp <= floor_sp(v)) return FAIL("pickle opcode %s pops an empty stack", opcode_name(v->p[v->op_pos]));
    *out = v->stack[--v->sp];
    return ELANSR_OK;
}

static elansr_status top(vm *v, obj **out) {
    if (v->sp <= floor_sp(v)) return FAIL("pickle opcode %s finds an empty stack", opcode_name(v->p[v->op_pos]));
    *out = v->stack[v->sp - 1];
    return ELANSR_OK;
}

static elansr_status pop_mark(vm *v, size_t *mark) {
    if (!v->n_marks) return FAIL("pickle opcode %s has no MARK", opcode_name(v->p[v->op_pos]));
    *mark = v->marks[--v->n_marks];
    return ELANSR_OK;
}

static elansr_status add_item(vm *v, obj *c, obj *x) {
    if (++v->n_items > MAX_ITEMS) return FAIL("pickle containers hold more than %zu items", MAX_ITEMS);
    if (!grow((void **)&c->it, &c->cap, c->n + 1, sizeof *c->it)) return NOMEM();
    c->it[c->n++] = x;
    return ELANSR_OK;
}

static elansr_status need(vm *v, size_t k) {
    if (v->n - v->pos < k)
        return FAIL("pickle ends early (%s needs %zu more bytes)", opcode_name(v->p[v->op_pos]), k);
    return ELANSR_OK;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static elansr_status push_int(vm *v, int64_t x) {
    obj *o;
    elansr_status st = push_new(v, K_INT, &o);
    if (!st) o->i = x;
    return st;
}

static elansr_status read_string(vm *v, size_t len) {
    if (len > MAX_STRING) return FAIL("pickle string of %zu bytes exceeds the %zu allowed", len, MAX_STRING);
    elansr_status st = need(v, len);
    if (st) return st;
    const char *src = (const char *)v->p + v->pos;
    if (memchr(src, '\0', len)) return FAIL("pickle string contains a NUL byte");
    obj *o;
    if ((st = push_new(v, K_STR, &o))) return st;
    o->s = malloc(len + 1);
    if (!o->s) return NOMEM();
    memcpy(o->s, src, len);
    o->s[len] = '\0';
    o->slen = len;
    v->pos += len;
    return ELANSR_OK;
}

static int find_global(const char *module, size_t ml, const char *name, size_t nl) {
    for (size_t g = 0; g < N_GLOBALS; g++)
        if (strlen(k_globals[g].module) == ml && memcmp(k_globals[g].module, module, ml) == 0 &&
            strlen(k_globals[g].name) == nl && memcmp(k_globals[g].name, name, nl) == 0)
            return (int)g;
    return -1;
}

static elansr_status push_global(vm *v, const char *module, size_t ml, const char *name, size_t nl) {
    int g = find_global(module, ml, name, nl);
    if (g < 0) {
        char a[80], b[80];
        return FAIL("pickle refers to forbidden global '%s.%s'", elan_printable(a, sizeof a, module, ml),
                    elan_printable(b, sizeof b, name, nl));
    }
    obj *o;
    elansr_status st = push_new(v, K_GLOBAL, &o);
    if (!st) o->i = g;
    return st;
}

/* GLOBAL's argument: "module\nname\n". */
static elansr_status read_line(vm *v, const char **s, size_t *len) {
    size_t avail = v->n - v->pos, lim = avail < MAX_GLOBAL_LINE ? avail : MAX_GLOBAL_LINE;
    const uint8_t *nl = memchr(v->p + v->pos, '\n', lim);
    if (!nl) return FAIL("pickle GLOBAL name is unterminated or longer than %d bytes", MAX_GLOBAL_LINE);
    *s = (const char *)v->p + v->pos;
    *len = (size_t)(nl - (v->p + v->pos));
    v->pos += *len + 1;
    return ELANSR_OK;
}

static int as_nonneg_int(const obj *o, int64_t *x) {
    if (o->k != K_INT || o->i < 0) return 0;
    *x = o->i;
    return 1;
}

static elansr_status rebuild_tensor(vm *v, obj *args, obj **res) {
    if (args->n < 6 || args->n > 7)
        return FAIL("_rebuild_tensor_v2 takes 6 or 7 arguments, the pickle gives %zu", args->n);
    obj *storage = args->it[0], *size = args->it[2], *stride = args->it[3];
    int64_t offset;
    if (storage->k != K_STORAGE)
        return FAIL("_rebuild_tensor_v2 gets a %s where a storage (persistent id) belongs", k_kind_names[storage->k]);
    if (!as_nonneg_int(args->it[1], &offset)) return FAIL("_rebuild_tensor_v2 gets a bad storage offset");
    if (size->k != K_TUPLE || stride->k != K_TUPLE || size->n != stride->n)
        return FAIL("_rebuild_tensor_v2 needs size and stride tuples of equal length");
    if (size->n > ELAN_PK_MAX_DIMS)
        return FAIL("tensor has %zu dimensions, more than the %d supported", size->n, ELAN_PK_MAX_DIMS);
    tinfo *t = calloc(1, sizeof *t);
    if (!t) return NOMEM();
    obj *o;
    elansr_status st = new_obj(v, K_TENSOR, &o);
    if (st) {
        free(t);
        return st;
    }
    o->t = t;
    t->storage = storage;
    t->offset = offset;
    t->ndim = (int)size->n;
    t->numel = 1;
    for (size_t d = 0; d < size->n; d++) {
        if (!as_nonneg_int(size->it[d], &t->shape[d]) || !as_nonneg_int(stride->it[d], &t->stride[d]))
            return FAIL("tensor size or stride %zu is not a non-negative integer", d);
        if ((uint64_t)t->shape[d] > SIZE_MAX || !elansr_mul_size(t->numel, (size_t)t->shape[d], &t->numel))
            return FAIL("tensor element count overflows");
    }
    *res = o;
    return ELANSR_OK;
}

/* REDUCE: "calls" one of the whitelisted globals by building the record it would return. */
static elansr_status reduce(vm *v) {
    obj *args = NULL, *fn = NULL, *res = NULL;
    elansr_status st;
    if ((st = pop(v, &args)) || (st = pop(v, &fn))) return st;
    if (fn->k != K_GLOBAL) return FAIL("pickle REDUCE calls a %s", k_kind_names[fn->k]);
    if (args->k != K_TUPLE) return FAIL("pickle REDUCE arguments are a %s, not a tuple", k_kind_names[args->k]);
    switch (k_globals[fn->i].g) {
    case G_ORDERED_DICT:
        if (args->n != 0) return FAIL("OrderedDict is called with arguments");
        if ((st = new_obj(v, K_DICT, &res))) return st;
        break;
    case G_REBUILD_TENSOR:
        if ((st = rebuild_tensor(v, args, &res))) return st;
        break;
    case G_REBUILD_PARAMETER:
        if (args->n != 3 || args->it[0]->k != K_TENSOR)
            return FAIL("_rebuild_parameter needs (tensor, requires_grad, hooks)");
        res = args->it[0];
        break;
    case G_STORAGE:
        return FAIL("pickle calls storage type torch.%s", k_globals[fn->i].name);
    }
    return push(v, res);
}

/* BINPERSID: torch's ('storage', StorageType, key, location, numel). */
static elansr_status persistent_id(vm *v) {
    obj *pid = NULL, *o = NULL;
    elansr_status st = pop(v, &pid);
    if (st) return st;
    if (pid->k != K_TUPLE || pid->n != 5 || pid->it[0]->k != K_STR || strcmp(pid->it[0]->s, "storage") != 0)
        return FAIL("pickle persistent id is not a ('storage', type, key, location, numel) tuple");
    obj *type = pid->it[1], *key = pid->it[2];
    int64_t numel;
    if (type->k != K_GLOBAL || k_globals[type->i].g != G_STORAGE)
        return FAIL("pickle persistent id names no storage type");
    if (key->k != K_STR || key->slen == 0) return FAIL("pickle persistent id has no storage key");
    if (pid->it[3]->k != K_STR) return FAIL("pickle persistent id has no device location");
    if (!as_nonneg_int(pid->it[4], &numel)) return FAIL("pickle persistent id has a bad element count");
    if ((st = push_new(v, K_STORAGE, &o))) return st;
    o->dt = k_globals[type->i].dt;
    o->ref = key;
    o->i = numel;
    return ELANSR_OK;
}

static elansr_status memo_put(vm *v, size_t idx) {
    obj *o = NULL;
    elansr_status st = top(v, &o);
    if (st) return st;
    if (idx >= MAX_MEMO) return FAIL("pickle memo index %zu exceeds the %zu allowed", idx, MAX_MEMO);
    size_t old = v->cap_memo;
    if (!grow((void **)&v->memo, &v->cap_memo, idx + 1, sizeof *v->memo)) return NOMEM();
    if (v->cap_memo > old) memset(v->memo + old, 0, (v->cap_memo - old) * sizeof *v->memo);
    if (!v->memo[idx]) v->n_memo++;
    v->memo[idx] = o;
    return ELANSR_OK;
}

static elansr_status memo_get(vm *v, size_t idx) {
    if (idx >= v->cap_memo || !v->memo[idx]) return FAIL("pickle reads memo entry %zu, which was never set", idx);
    return push(v, v->memo[idx]);
}

static elansr_status make_tuple(vm *v, size_t from) {
    obj *t;
    size_t k = v->sp - from;
    if ((v->n_items += k) > MAX_ITEMS) return FAIL("pickle containers hold more than %zu items", MAX_ITEMS);
    elansr_status st = new_obj(v, K_TUPLE, &t);
    if (st) return st;
    if (k) {
        t->it = elansr_malloc_array(k, sizeof *t->it);
        if (!t->it) return NOMEM();
        memcpy(t->it, v->stack + from, k * sizeof *t->it);
        t->n = t->cap = k;
    }
    v->sp = from;
    return push(v, t);
}

/* Runs the program up to STOP; *result is the object STOP returns. */
static elansr_status run(vm *v, obj **result) {
    elansr_status st = ELANSR_OK;
    for (;;) {
        if (v->pos >= v->n) {
            v->op_pos = v->pos;
            return FAIL("pickle ends without STOP (truncated)");
        }
        v->op_pos = v->pos;
        uint8_t op = v->p[v->pos++];
        obj *a = NULL, *b = NULL, *c = NULL;
        size_t m = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if ((st = need(v, 1))) return st;
            if (v->p[v->pos] < 2 || v->p[v->pos] > 5)
                return FAIL("pickle protocol %d is not supported", v->p[v->pos]);
            v->pos++;
            break;
        case 0x95: { /* FRAME: only a read-ahead hint; its length must still lie inside the data */
            if ((st = need(v, 8))) return st;
            uint64_t len = le32(v->p + v->pos) | ((uint64_t)le32(v->p + v->pos + 4) << 32);
            v->pos += 8;
            if (len > v->n - v->pos)
                return FAIL("pickle FRAME of %llu bytes runs past the end", (unsigned long long)len);
            break;
        }
        case '}': st = push_new(v, K_DICT, NULL); break;
        case ')': st = push_new(v, K_TUPLE, NULL); break;
        case ']': st = push_new(v, K_LIST, NULL); break;
        case 'N': st = push_new(v, K_NONE, NULL); break;
        case 0x88: case 0x89:
            if (!(st = push_new(v, K_BOOL, &a))) a->i = op == 0x88;
            break;
        case '(':
            if (v->n_marks >= MAX_MARKS) return FAIL("pickle nests more than %zu MARKs", MAX_MARKS);
            if (!grow((void **)&v->marks, &v->cap_marks, v->n_marks + 1, sizeof *v->marks)) return NOMEM();
            v->marks[v->n_marks++] = v->sp;
            break;
        case 'X':
            if ((st = need(v, 4))) return st;
            m = le32(v->p + v->pos);
            v->pos += 4;
            st = read_string(v, m);
            break;
        case 0x8c: /* SHORT_BINUNICODE */
            if ((st = need(v, 1))) return st;
            m = v->p[v->pos++];
            st = read_string(v, m);
            break;
        case 'J':
            if ((st = need(v, 4))) return st;
            st = push_int(v, (int32_t)le32(v->p + v->pos));
            v->pos += 4;
            break;
        case 'K':
            if ((st = need(v, 1))) return st;
            st = push_int(v, v->p[v->pos]);
            v->pos += 1;
            break;
        case 'M':
            if ((st = need(v, 2))) return st;
            st = push_int(v, v->p[v->pos] | (v->p[v->pos + 1] << 8));
            v->pos += 2;
            break;
        case 0x8a: { /* LONG1: little-endian two's complement of n bytes */
            if ((st = need(v, 1))) return st;
            size_t nb = v->p[v->pos++];
            if (nb > 8) return FAIL("pickle integer of %zu bytes does not fit 64 bits", nb);
            if ((st = need(v, nb))) return st;
            uint64_t u = 0;
            for (size_t k = 0; k < nb; k++) u |= (uint64_t)v->p[v->pos + k] << (8 * k);
            if (nb > 0 && nb < 8 && (v->p[v->pos + nb - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * nb);
            v->pos += nb;
            int64_t x;
            memcpy(&x, &u, sizeof x); /* reinterpret without implementation-defined conversion */
            st = push_int(v, x);
            break;
        }
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            if ((st = need(v, 8))) return st;
            uint64_t u = 0;
            for (size_t k = 0; k < 8; k++) u = (u << 8) | v->p[v->pos + k];
            v->pos += 8;
            if (!(st = push_new(v, K_FLOAT, &a))) memcpy(&a->f, &u, sizeof a->f);
            break;
        }
        case 'c': {
            const char *mod = NULL, *name = NULL;
            size_t ml = 0, nl = 0;
            if ((st = read_line(v, &mod, &ml)) || (st = read_line(v, &name, &nl))) return st;
            st = push_global(v, mod, ml, name, nl);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if ((st = pop(v, &b)) || (st = pop(v, &a))) return st;
            if (a->k != K_STR || b->k != K_STR) return FAIL("pickle STACK_GLOBAL needs two strings");
            st = push_global(v, a->s, a->slen, b->s, b->slen);
            break;
        case 'R': st = reduce(v); break;
        case 'b': /* BUILD: only the __dict__ state of an OrderedDict (its _metadata) is expected; dropped */
            if ((st = pop(v, &a)) || (st = top(v, &b))) return st;
            if (b->k != K_DICT && b->k != K_TENSOR) return FAIL("pickle BUILD on a %s", k_kind_names[b->k]);
            break;
        case 'q':
            if ((st = need(v, 1))) return st;
            st = memo_put(v, v->p[v->pos++]);
            break;
        case 'r':
            if ((st = need(v, 4))) return st;
            m = le32(v->p + v->pos);
            v->pos += 4;
            st = memo_put(v, m);
            break;
        case 0x94: st = memo_put(v, v->n_memo); break; /* MEMOIZE */
        case 'h':
            if ((st = need(v, 1))) return st;
            st = memo_get(v, v->p[v->pos++]);
            break;
        case 'j':
            if ((st = need(v, 4))) return st;
            m = le32(v->p + v->pos);
            v->pos += 4;
            st = memo_get(v, m);
            break;
        case 't':
            if ((st = pop_mark(v, &m))) return st;
            st = make_tuple(v, m);
            break;
        case 0x85: case 0x86: case 0x87: {
            size_t k = (size_t)(op - 0x84);
            if (v->sp - floor_sp(v) < k) return FAIL("pickle %s pops an empty stack", opcode_name(op));
            st = make_tuple(v, v->sp - k);
            break;
        }
        case 's':
            if ((st = pop(v, &b)) || (st = pop(v, &a)) || (st = top(v, &c))) return st;
            if (c->k != K_DICT) return FAIL("pickle SETITEM on a %s", k_kind_names[c->k]);
            if (!(st = add_item(v, c, a))) st = add_item(v, c, b);
            break;
        case 'u':
        case 'e':
            if ((st = pop_mark(v, &m))) return st;
            if (m <= floor_sp(v)) return FAIL("pickle %s has no target below its MARK", opcode_name(op));
            c = v->stack[m - 1];
            if (c->k != (op == 'u' ? K_DICT : K_LIST))
                return FAIL("pickle %s on a %s", opcode_name(op), k_kind_names[c->k]);
            if (op == 'u' && (v->sp - m) % 2) return FAIL("pickle SETITEMS has an odd number of items");
            for (size_t k = m; k < v->sp && !st; k++) st = add_item(v, c, v->stack[k]);
            v->sp = m;
            break;
        case 'a':
            if ((st = pop(v, &a)) || (st = top(v, &c))) return st;
            if (c->k != K_LIST) return FAIL("pickle APPEND on a %s", k_kind_names[c->k]);
            st = add_item(v, c, a);
            break;
        case 'Q': st = persistent_id(v); break;
        case '.':
            return pop(v, result);
        default: {
            const char *name = opcode_name(op);
            if (name) return FAIL("pickle uses forbidden opcode %s (0x%02x)", name, op);
            return FAIL("pickle has unknown opcode 0x%02x (not a pickle, or corrupt)", op);
        }
        }
        if (st) return st;
    }
}

static obj *dict_get(const obj *d, const char *key) {
    obj *found = NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i + 1 < d->n; i += 2) /* the last duplicate wins, as in Python */
        if (d->it[i]->k == K_STR && d->it[i]->slen == kl && memcmp(d->it[i]->s, key, kl) == 0) found = d->it[i + 1];
    return found;
}

static size_t count_tensors(const obj *d) {
    size_t n = 0;
    for (size_t i = 0; i + 1 < d->n; i += 2) n += d->it[i + 1]->k == K_TENSOR;
    return n;
}

static char *dup_str(const obj *s) {
    char *r = malloc(s->slen + 1);
    if (r) memcpy(r, s->s, s->slen + 1);
    return r;
}

static elansr_status extract(vm *v, const obj *root, elan_pk_tensors *out) {
    v->op_pos = SIZE_MAX; /* past the program: no byte to point at */
    if (root->k != K_DICT) return FAIL("pickle holds a %s, not a state dict", k_kind_names[root->k]);
    static const char *const wrappers[] = {"params", "params_ema", "state_dict"};
    const obj *sd = root;
    for (size_t w = 0; w < sizeof wrappers / sizeof wrappers[0]; w++) {
        const obj *d = dict_get(root, wrappers[w]);
        if (d && d->k == K_DICT && count_tensors(d)) {
            sd = d;
            break;
        }
    }
    size_t n = count_tensors(sd);
    if (!n) return FAIL("pickle holds no tensors (expected a state dict, possibly under 'params')");
    out->t = elansr_calloc_array(n, sizeof *out->t);
    if (!out->t) return NOMEM();
    for (size_t i = 0; i + 1 < sd->n; i += 2) {
        const obj *key = sd->it[i], *val = sd->it[i + 1];
        if (val->k != K_TENSOR) continue;
        if (key->k != K_STR) return FAIL("state dict key of a tensor is a %s, not a string", k_kind_names[key->k]);
        elan_pk_tensor *t = &out->t[out->n++];
        const tinfo *ti = val->t;
        t->name = dup_str(key);
        t->storage_key = dup_str(ti->storage->ref);
        if (!t->name || !t->storage_key) return NOMEM();
        t->dtype = ti->storage->dt;
        t->ndim = ti->ndim;
        memcpy(t->shape, ti->shape, sizeof t->shape);
        memcpy(t->stride, ti->stride, sizeof t->stride);
        t->storage_offset = ti->offset;
        t->storage_numel = ti->storage->i;
        t->numel = ti->numel;
    }
    return ELANSR_OK;
}

void elan_pickle_free(elan_pk_tensors *ts) {
    if (!ts) return;
    if (ts->t) {
        for (size_t i = 0; i < ts->n; i++) {
            free(ts->t[i].name);
            free(ts->t[i].storage_key);
        }
    }
    free(ts->t);
    ts->t = NULL;
    ts->n = 0;
}

elansr_status elan_pickle_tensors(const char *label, const uint8_t *data, size_t size, elan_pk_tensors *out) {
    out->t = NULL;
    out->n = 0;
    vm vs;
    memset(&vs, 0, sizeof vs);
    vm *v = &vs;
    v->label = label;
    v->p = data;
    v->n = size;
    obj *root = NULL;
    elansr_status st = run(v, &root);
    if (!st) st = extract(v, root, out);
    if (st) elan_pickle_free(out);
    for (size_t i = 0; i < v->n_arena; i++) {
        free(v->arena[i]->s);
        free(v->arena[i]->it);
        free(v->arena[i]->t);
        free(v->arena[i]);
    }
    free(v->arena);
    free(v->stack);
    free(v->marks);
    free(v->memo);
    return st;
}
