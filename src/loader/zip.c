/* zip.c — the zip reader behind zip.h.
   A .pth file is a few MiB to a few tens of MiB, so reading it whole is cheap and lets every header field be
   checked against one buffer size; nothing is trusted before that check. PyTorch writes data descriptors
   (local headers with zero sizes), so sizes and CRCs come from the central directory only; the local
   header is used just to find where the data starts. Stored entries are returned in place (no copy);
   deflated ones are inflated once into a bounded buffer and kept for later calls. */
#include "loader/zip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define EOCD_SIZE 22u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE 30u
/* Without zip64 no offset can pass 4 GiB, so a larger file cannot be a checkpoint we read. */
#define MAX_FILE_SIZE ((uint64_t)0xFFFFFFFFu + EOCD_SIZE + 0xFFFFu)
/* A deflated entry may not claim more than this, so a forged size cannot make us allocate without limit. */
#define INFLATE_SLACK ((uint64_t)64 << 20)

typedef struct {
    char *name;
    size_t name_len;
    uint16_t method, flags;
    uint32_t crc;
    size_t csize, usize, local_off;
    const uint8_t *data; /* set once the entry has been read and checked */
    uint8_t *owned;      /* inflated bytes, freed at close */
} zentry;

struct elan_zip {
    char *label;
    uint8_t *buf;
    size_t size;
    size_t cd_off;
    zentry *e;
    size_t n;
    zentry **order; /* entries sorted by name, for lookup */
};

const char *elan_printable(char *dst, size_t cap, const char *s, size_t len) {
    size_t n = 0, o = 0;
    if (cap < 8) {
        if (cap) dst[0] = '\0';
        return dst;
    }
    while (n < len && s[n]) n++;
    size_t room = n <= cap - 1 ? n : cap - 4;
    for (size_t i = 0; i < room; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (room < n) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* zlib's crc32 takes a uInt length; feed it in pieces so no size_t is narrowed. */
static uint32_t crc_of(const uint8_t *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

void elan_zip_close(elan_zip *z) {
    if (!z) return;
    if (z->e) {
        for (size_t i = 0; i < z->n; i++) {
            free(z->e[i].name);
            free(z->e[i].owned);
        }
    }
    free(z->e);
    free(z->order);
    free(z->buf);
    free(z->label);
    free(z);
}

static int cmp_entry(const void *a, const void *b) {
    const zentry *x = *(const zentry *const *)a, *y = *(const zentry *const *)b;
    return strcmp(x->name, y->name);
}

/* Finds the end-of-central-directory record: the last 22 bytes unless the archive has a comment, in which
   case the record is up to 64 KiB earlier and its comment length must reach exactly the end of the file
   (that rules out a signature that merely appears inside the comment). */
static elansr_status find_eocd(const elan_zip *z, size_t *at) {
    if (z->size == 0) return elansr_fail(ELANSR_ERR_FORMAT, "%s: file is empty (not a checkpoint)", z->label);
    if (z->size < EOCD_SIZE)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: file is only %zu bytes long, too short to be a zip archive",
                           z->label, z->size);
    size_t last = z->size - EOCD_SIZE;
    size_t first = last > 0xFFFFu ? last - 0xFFFFu : 0;
    for (size_t q = last + 1; q > first; q--) {
        size_t p = q - 1;
        if (rd32(z->buf + p) == SIG_EOCD && p + EOCD_SIZE + rd16(z->buf + p + 20) == z->size) {
            *at = p;
            return ELANSR_OK;
        }
    }
    return elansr_fail(ELANSR_ERR_FORMAT,
                       "%s: not a zip archive (no end-of-central-directory record; truncated or not a .pth file)",
                       z->label);
}

static elansr_status parse(elan_zip *z) {
    char nb[96];
    size_t eocd = 0;
    elansr_status st = find_eocd(z, &eocd);
    if (st) return st;
    const uint8_t *r = z->buf + eocd;
    uint16_t disk = rd16(r + 4), cd_disk = rd16(r + 6), n_here = rd16(r + 8), n_total = rd16(r + 10);
    uint32_t cd_size = rd32(r + 12), cd_off = rd32(r + 16);
    if (n_total == 0xFFFFu || n_here == 0xFFFFu || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip64 archive (over 4 GiB or 65535 entries) is not supported",
                           z->label);
    if (disk != 0 || cd_disk != 0 || n_here != n_total)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: multi-disk (split) zip archives are not supported", z->label);
    if ((uint64_t)cd_off + cd_size > eocd)
        return elansr_fail(ELANSR_ERR_FORMAT,
                           "%s: central directory (offset %u, %u bytes) runs past its end record at %zu "
                           "(truncated or corrupt zip)", z->label, (unsigned)cd_off, (unsigned)cd_size, eocd);
    if ((uint64_t)n_total * CENTRAL_SIZE > cd_size)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: central directory of %u bytes cannot hold %u entries",
                           z->label, (unsigned)cd_size, (unsigned)n_total);
    if (n_total == 0) return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip archive has no entries", z->label);
    z->cd_off = cd_off;
    z->e = elansr_calloc_array(n_total, sizeof *z->e);
    z->order = elansr_calloc_array(n_total, sizeof *z->order);
    if (!z->e || !z->order) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for the zip directory", z->label);

    size_t pos = cd_off, end = (size_t)cd_off + cd_size;
    for (size_t i = 0; i < n_total; i++) {
        if (end - pos < CENTRAL_SIZE || rd32(z->buf + pos) != SIG_CENTRAL)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: central directory entry %zu is damaged", z->label, i);
        const uint8_t *c = z->buf + pos;
        zentry *e = &z->e[i];
        size_t nl = rd16(c + 28), xl = rd16(c + 30), cl = rd16(c + 32);
        if (end - pos - CENTRAL_SIZE < nl + xl + cl)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: central directory entry %zu runs past the directory",
                               z->label, i);
        e->name = malloc(nl + 1);
        if (!e->name) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for the zip directory", z->label);
        memcpy(e->name, c + CENTRAL_SIZE, nl);
        e->name[nl] = '\0';
        e->name_len = nl;
        z->n = i + 1; /* from here on close() frees this entry's name */
        z->order[i] = e;
        if (memchr(e->name, '\0', nl))
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry %zu has a NUL byte in its name", z->label, i);
        const char *shown = elan_printable(nb, sizeof nb, e->name, nl);
        e->flags = rd16(c + 8);
        e->method = rd16(c + 10);
        e->crc = rd32(c + 16);
        uint32_t csize = rd32(c + 20), usize = rd32(c + 24), lo = rd32(c + 42);
        uint16_t disk_start = rd16(c + 34);
        if ((e->flags & 0x0041u) || e->method == 99)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' is encrypted (not supported)", z->label, shown);
        if (csize == 0xFFFFFFFFu || usize == 0xFFFFFFFFu || lo == 0xFFFFFFFFu || disk_start == 0xFFFFu)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' needs zip64 (not supported)", z->label, shown);
        if (disk_start != 0)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' lies on another disk (split archives are "
                               "not supported)", z->label, shown);
        e->csize = csize;
        e->usize = usize;
        e->local_off = lo;
        pos += CENTRAL_SIZE + nl + xl + cl;
    }
    qsort(z->order, z->n, sizeof *z->order, cmp_entry);
    for (size_t i = 1; i < z->n; i++)
        if (strcmp(z->order[i - 1]->name, z->order[i]->name) == 0)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' appears twice", z->label,
                               elan_printable(nb, sizeof nb, z->order[i]->name, z->order[i]->name_len));
    return ELANSR_OK;
}

/* Takes ownership of buf (freed on failure too). */
static elansr_status open_buffer(const char *label, uint8_t *buf, size_t size, elan_zip **out) {
    *out = NULL;
    elan_zip *z = calloc(1, sizeof *z);
    size_t ll = strlen(label);
    char *lab = malloc(ll + 1);
    if (!z || !lab) {
        free(z);
        free(lab);
        free(buf);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", label);
    }
    memcpy(lab, label, ll + 1);
    z->label = lab;
    z->buf = buf;
    z->size = size;
    elansr_status st = parse(z);
    if (st) {
        elan_zip_close(z);
        return st;
    }
    *out = z;
    return ELANSR_OK;
}

elansr_status elan_zip_open_memory(const char *label, const void *data, size_t size, elan_zip **out) {
    *out = NULL;
    if ((uint64_t)size > MAX_FILE_SIZE)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: %zu bytes is too large for a zip archive without zip64",
                           label, size);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for %zu bytes", label, size);
    if (size) memcpy(buf, data, size);
    return open_buffer(label, buf, size, out);
}

elansr_status elan_zip_open(const char *path, elan_zip **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return elansr_fail(ELANSR_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    /* fopen accepts a directory on POSIX systems; the first read is what fails (and says why). */
    errno = 0;
    if (fgetc(f) == EOF && ferror(f)) {
        int e = errno;
        fclose(f);
        return elansr_fail(ELANSR_ERR_IO, "%s: cannot read (%s)", path, e ? strerror(e) : "read error");
    }
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return elansr_fail(ELANSR_ERR_IO, "%s: cannot determine the file size", path);
    }
    if ((uint64_t)len > MAX_FILE_SIZE) {
        fclose(f);
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: %ld bytes is too large for a zip archive without zip64",
                           path, len);
    }
    size_t size = (size_t)len;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
    }
    size_t got = size ? fread(buf, 1, size, f) : 0;
    int bad = ferror(f) || got != size;
    fclose(f);
    if (bad) {
        free(buf);
        return elansr_fail(ELANSR_ERR_IO, "%s: read error (got %zu of %zu bytes)", path, got, size);
    }
    return open_buffer(path, buf, size, out);
}

size_t elan_zip_count(const elan_zip *z) { return z->n; }
const char *elan_zip_name(const elan_zip *z, size_t i) { return i < z->n ? z->e[i].name : NULL; }
size_t elan_zip_size(const elan_zip *z, size_t i) { return i < z->n ? z->e[i].usize : 0; }

int elan_zip_find(const elan_zip *z, const char *name, size_t *index) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->order[mid]->name, name);
        if (c == 0) {
            *index = (size_t)(z->order[mid] - z->e);
            return 1;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static elansr_status inflate_entry(elan_zip *z, zentry *e, const uint8_t *src, const char *shown) {
    if ((uint64_t)e->usize > 4 * (uint64_t)z->size + INFLATE_SLACK)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' claims %zu uncompressed bytes, implausible for "
                           "a %zu-byte file", z->label, shown, e->usize, z->size);
    /* One spare byte of output room: a stream that fills it is longer than the directory says. */
    uint8_t *out = malloc(e->usize + 1);
    if (!out) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory inflating '%s'", z->label, shown);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) {
        free(out);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: cannot start zlib for '%s'", z->label, shown);
    }
    s.next_in = (Bytef *)(uintptr_t)src; /* zlib does not write through next_in */
    s.avail_in = (uInt)e->csize;         /* both sizes came from 32-bit fields */
    s.next_out = out;
    s.avail_out = (uInt)(e->usize + 1);
    int r = inflate(&s, Z_FINISH);
    uLong total = s.total_out;
    const char *zmsg = s.msg ? s.msg : "corrupt data";
    char why[128];
    why[0] = '\0';
    if (r == Z_DATA_ERROR)
        snprintf(why, sizeof why, "corrupt deflate data (%s)", zmsg);
    else if (r == Z_MEM_ERROR)
        snprintf(why, sizeof why, "zlib ran out of memory");
    else if (r != Z_STREAM_END && total > e->usize)
        snprintf(why, sizeof why, "inflates to more than the declared %zu bytes", e->usize);
    else if (r != Z_STREAM_END)
        snprintf(why, sizeof why, "deflate stream ends early");
    else if (total != e->usize)
        snprintf(why, sizeof why, "inflates to %lu bytes, not the declared %zu", (unsigned long)total, e->usize);
    inflateEnd(&s);
    if (why[0]) {
        free(out);
        return elansr_fail(r == Z_MEM_ERROR ? ELANSR_ERR_NOMEM : ELANSR_ERR_FORMAT, "%s: zip entry '%s': %s",
                           z->label, shown, why);
    }
    e->owned = out;
    e->data = out;
    return ELANSR_OK;
}

elansr_status elan_zip_get(elan_zip *z, size_t i, const uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    if (i >= z->n) return elansr_fail(ELANSR_ERR_ARG, "%s: zip entry index %zu out of range", z->label, i);
    zentry *e = &z->e[i];
    if (e->data) {
        *data = e->data;
        *size = e->usize;
        return ELANSR_OK;
    }
    char nb[96];
    const char *shown = elan_printable(nb, sizeof nb, e->name, e->name_len);
    size_t lo = e->local_off;
    if (lo > z->size || z->size - lo < LOCAL_SIZE || rd32(z->buf + lo) != SIG_LOCAL)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' has no local header at offset %zu "
                           "(corrupt or truncated archive)", z->label, shown, lo);
    size_t nl = rd16(z->buf + lo + 26), xl = rd16(z->buf + lo + 28);
    size_t data_off = lo + LOCAL_SIZE + nl + xl; /* cannot overflow: each term is below 2^32 */
    if (data_off > z->cd_off || nl != e->name_len || memcmp(z->buf + lo + LOCAL_SIZE, e->name, nl) != 0)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: local header of zip entry '%s' does not match the central "
                           "directory", z->label, shown);
    if (e->csize > z->cd_off - data_off)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' (%zu bytes at offset %zu) runs past the end "
                           "of the data (truncated or corrupt archive)", z->label, shown, e->csize, data_off);
    const uint8_t *src = z->buf + data_off;
    if (e->method == 0) {
        if (e->csize != e->usize)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: stored zip entry '%s' has different sizes (%zu, %zu)",
                               z->label, shown, e->csize, e->usize);
        e->data = src;
    } else if (e->method == 8) {
        elansr_status st = inflate_entry(z, e, src, shown);
        if (st) return st;
    } else {
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' uses compression method %u (only stored and "
                           "deflate are supported)", z->label, shown, (unsigned)e->method);
    }
    uint32_t crc = crc_of(e->data, e->usize);
    if (crc != e->crc) {
        free(e->owned);
        e->owned = NULL;
        e->data = NULL;
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: zip entry '%s' fails its CRC check (%08x, expected %08x): the "
                           "file is corrupt", z->label, shown, (unsigned)crc, (unsigned)e->crc);
    }
    *data = e->data;
    *size = e->usize;
    return ELANSR_OK;
}
