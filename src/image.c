/* image.c — reading and writing elansr_image as PNG (libpng 1.6) or JPEG (libjpeg-turbo).
 *
 * Why it is shaped this way:
 *  - Files are recognised by their first bytes, never by their name, so a mislabelled file still loads and a
 *    non-image gets a clear message. The bytes peeked for that are replayed to the decoder by our own read
 *    callbacks, so the input never needs to be seekable (a FIFO works) and a short read is reported as
 *    "truncated" instead of libpng's bare "Read Error" or libjpeg's fake end-of-image.
 *  - Both libraries report fatal errors with longjmp. Every resource that must be released after a jump lives in
 *    a context struct owned by the *caller* of the function that calls setjmp, so no automatic variable of the
 *    setjmp function is read after a jump (C11 7.13.2.1 makes those indeterminate) and no `volatile` is needed.
 *  - Size limits are checked against the header before anything is allocated: for PNG we parse IHDR ourselves
 *    before libpng sees it, for JPEG right after jpeg_read_header. A 100-byte file claiming 10^10 pixels is
 *    refused with our message, not with a failed (or, with overcommit, a successful) multi-gigabyte malloc.
 *  - libjpeg's "corrupt data" warnings are errors here: upscaling a half-grey image without a word is worse than
 *    refusing it. Neither library ever prints anything.
 *  - Saving writes a temporary file next to the target and renames it over the target at the very end, so a
 *    reader never sees a partial file and a failed save leaves the folder exactly as it was.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <errno.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <png.h>
/* jpeglib.h needs stdio.h and stddef.h first. */
#include <jpeglib.h>
#include <jerror.h>

#define MAX_SIDE ((unsigned long long)1 << 20)
/* Real encoders emit at most a few dozen progressive scans; hostile files use many thousands to burn CPU. */
#define JPEG_MAX_SCANS 1000
#define JPEG_IO_BUF 65536
#define PNG_MSG_LEN 256
#define PNG_HEAD_LEN 33 /* signature (8) + IHDR chunk: length, type, 13 data bytes, CRC (25) */

static const unsigned char k_png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const unsigned char k_jpeg_soi[3] = {0xff, 0xd8, 0xff};

static int host_little_endian(void) {
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static elansr_status check_size(const char *path, unsigned long long w, unsigned long long h) {
    if (w > MAX_SIDE || h > MAX_SIDE || w * h > (unsigned long long)ELANSR_MAX_IMAGE_PIXELS)
        return elansr_fail(ELANSR_ERR_NOMEM,
                           "%s: image is %llux%llu pixels, more than elansr accepts (limit %llu pixels, %llu per side)",
                           path, w, h, (unsigned long long)ELANSR_MAX_IMAGE_PIXELS, MAX_SIDE);
    return ELANSR_OK;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Input: the file plus the bytes already consumed to recognise it, handed out again before the rest.          */

typedef struct {
    FILE *fp;
    unsigned char head[PNG_HEAD_LEN];
    size_t head_len, head_pos;
    int err;       /* errno of the first read error, 0 if none */
    int truncated; /* a decoder needed bytes past the end of the file (short reads alone are normal) */
} reader;

static size_t read_raw(reader *r, unsigned char *dst, size_t n) {
    errno = 0;
    size_t got = fread(dst, 1, n, r->fp);
    if (got < n && ferror(r->fp) && !r->err) r->err = errno ? errno : EIO;
    return got;
}

/* Tops the peek buffer up to `want` bytes (fewer at end of file). Returns 0 on a read error. */
static int reader_peek(reader *r, size_t want) {
    if (r->head_len < want) r->head_len += read_raw(r, r->head + r->head_len, want - r->head_len);
    return r->err == 0;
}

static size_t reader_read(reader *r, unsigned char *dst, size_t n) {
    size_t got = 0;
    if (r->head_pos < r->head_len) {
        got = r->head_len - r->head_pos;
        if (got > n) got = n;
        memcpy(dst, r->head + r->head_pos, got);
        r->head_pos += got;
    }
    if (got < n) got += read_raw(r, dst + got, n - got);
    return got;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* PNG                                                                                                           */

/* Shared by reading and writing: the error pointer is the context's message buffer. */
static void png_error_cb(png_structp png, png_const_charp msg) {
    char *buf = png_get_error_ptr(png);
    snprintf(buf, PNG_MSG_LEN, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

/* libpng warnings (bad ancillary CRCs, odd metadata) never change the pixels we return; stay silent. */
static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_cb(png_structp png, png_bytep dst, size_t n) {
    reader *r = png_get_io_ptr(png);
    if (reader_read(r, dst, n) != n) {
        r->truncated = !r->err;
        png_error(png, r->err ? "read error" : "unexpected end of file");
    }
}

typedef struct {
    const char *path;
    reader *r;
    png_structp png;
    png_infop info;
    unsigned char *pixels;
    png_bytep *rows;
    char msg[PNG_MSG_LEN];
} png_load_ctx;

static elansr_status png_load_failed(png_load_ctx *c) {
    if (c->r->err) return elansr_fail(ELANSR_ERR_IO, "%s: read error: %s", c->path, strerror(c->r->err));
    if (c->r->truncated)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: truncated PNG file (unexpected end of file)", c->path);
    return elansr_fail(ELANSR_ERR_FORMAT, "%s: invalid PNG: %s", c->path, c->msg);
}

static elansr_status png_decode(png_load_ctx *c, elansr_image *img) {
    png_structp png = c->png;
    png_infop info = c->info;
    if (setjmp(png_jmpbuf(png))) return png_load_failed(c);

#ifdef PNG_SET_USER_LIMITS_SUPPORTED
    /* Second line of defence behind our own IHDR check. */
    png_set_user_limits(png, (png_uint_32)MAX_SIDE, (png_uint_32)MAX_SIDE);
#endif
#ifdef PNG_HANDLE_AS_UNKNOWN_SUPPORTED
    /* -1: skip every ancillary chunk except tRNS. We use no metadata, and this keeps zTXt/iCCP inflation (and their
       decompression bombs) out of the picture. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
#endif
    png_set_sig_bytes(png, (int)sizeof k_png_sig);
    png_read_info(png, info);

    png_uint_32 w, h;
    int bit_depth, color_type, interlace;
    png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    elansr_status st = check_size(c->path, w, h);
    if (st != ELANSR_OK) return st;

    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (bit_depth == 16 && host_little_endian()) png_set_swap(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    int depth = png_get_bit_depth(png, info);
    size_t stride = (size_t)w * (size_t)channels * (size_t)(depth / 8);
    if (channels < 1 || channels > 4 || (depth != 8 && depth != 16) || png_get_rowbytes(png, info) != stride)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: unsupported PNG layout (%d channels of %d bits after expansion)",
                           c->path, channels, depth);

    c->pixels = elansr_malloc_array(h, stride);
    c->rows = elansr_malloc_array(h, sizeof *c->rows);
    if (!c->pixels || !c->rows)
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for a %lux%lu image", c->path, (unsigned long)w,
                           (unsigned long)h);
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pixels + (size_t)y * stride;
    png_read_image(png, c->rows);
    /* Reading through IEND makes a file cut just after its last IDAT an error too, and checks the trailing CRCs. */
    png_read_end(png, NULL);

    img->width = (int)w;
    img->height = (int)h;
    img->channels = channels;
    img->depth = depth;
    img->data = c->pixels;
    c->pixels = NULL;
    return ELANSR_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static elansr_status load_png(const char *path, reader *r, elansr_image *img) {
    if (!reader_peek(r, PNG_HEAD_LEN)) return elansr_fail(ELANSR_ERR_IO, "%s: read error: %s", path, strerror(r->err));
    if (r->head_len < PNG_HEAD_LEN)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: truncated PNG file (%zu bytes, no complete header)", path,
                           r->head_len);
    /* Anything malformed here is left for libpng to describe; we only need the claimed size. */
    if (memcmp(r->head + 12, "IHDR", 4) == 0) {
        elansr_status st = check_size(path, be32(r->head + 16), be32(r->head + 20));
        if (st != ELANSR_OK) return st;
    }

    r->head_pos = sizeof k_png_sig; /* libpng is told the signature was consumed: png_set_sig_bytes */

    png_load_ctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.r = r;
    c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c.msg, png_error_cb, png_warning_cb);
    if (c.png) c.info = png_create_info_struct(c.png);
    if (!c.png || !c.info) {
        png_destroy_read_struct(c.png ? &c.png : NULL, NULL, NULL);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory starting the PNG decoder", path);
    }
    png_set_read_fn(c.png, r, png_read_cb);
    elansr_status st = png_decode(&c, img);
    png_destroy_read_struct(&c.png, &c.info, NULL);
    free(c.rows);
    free(c.pixels);
    return st;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* JPEG                                                                                                          */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    int sys = errno;
    jpeg_err *e = (jpeg_err *)cinfo->err;
    /* jpeg_stdio_dest reports a failed fwrite as "out of disk space?"; the errno it left says what really happened
       (EFBIG, EIO, ENOSPC...). */
    if (e->pub.msg_code == JERR_FILE_WRITE && sys != 0)
        snprintf(e->msg, sizeof e->msg, "%s", strerror(sys));
    else
        e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings that leave the decoded pixels intact. Junk bytes right before EOI (marker 0xD9) are common in camera
   files and come after the last scan has been decoded; everything else libjpeg warns about means damaged data. */
static int jpeg_warning_is_harmless(const struct jpeg_error_mgr *err) {
    switch (err->msg_code) {
    case JWRN_JFIF_MAJOR:
    case JWRN_ADOBE_XFORM:
        return 1;
    case JWRN_EXTRANEOUS_DATA:
        return err->msg_parm.i[1] == 0xd9;
    default:
        return 0;
    }
}

static void jpeg_emit_cb(j_common_ptr cinfo, int level) {
    if (level >= 0) return; /* trace output */
    jpeg_err *e = (jpeg_err *)cinfo->err;
    e->pub.num_warnings++;
    if (jpeg_warning_is_harmless(&e->pub)) return;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_output_cb(j_common_ptr cinfo) { (void)cinfo; }

static void jpeg_err_init(jpeg_err *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_error_exit_cb;
    e->pub.emit_message = jpeg_emit_cb;
    e->pub.output_message = jpeg_output_cb;
}

static void jpeg_progress_cb(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    if (((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

/* Our source manager, instead of jpeg_stdio_src: it replays the peeked bytes, and at end of file it fails where
   the stdio one would warn and invent an EOI marker. */
typedef struct {
    struct jpeg_source_mgr pub;
    reader *r;
    JOCTET *buf;
} jpeg_src;

static void jpeg_src_init(j_decompress_ptr cinfo) { (void)cinfo; }
static void jpeg_src_term(j_decompress_ptr cinfo) { (void)cinfo; }

static boolean jpeg_src_fill(j_decompress_ptr cinfo) {
    jpeg_src *s = (jpeg_src *)cinfo->src;
    size_t n = reader_read(s->r, s->buf, JPEG_IO_BUF);
    if (n == 0) {
        if (s->r->err) ERREXIT(cinfo, JERR_FILE_READ);
        s->r->truncated = 1;
        ERREXIT(cinfo, JERR_INPUT_EOF);
    }
    s->pub.next_input_byte = s->buf;
    s->pub.bytes_in_buffer = n;
    return TRUE;
}

static void jpeg_src_skip(j_decompress_ptr cinfo, long n) {
    jpeg_src *s = (jpeg_src *)cinfo->src;
    if (n <= 0) return;
    while ((size_t)n > s->pub.bytes_in_buffer) {
        n -= (long)s->pub.bytes_in_buffer;
        jpeg_src_fill(cinfo);
    }
    s->pub.next_input_byte += n;
    s->pub.bytes_in_buffer -= (size_t)n;
}

typedef struct {
    const char *path;
    reader *r;
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    struct jpeg_progress_mgr progress;
    unsigned char *pixels;
} jpeg_load_ctx;

static elansr_status jpeg_load_failed(jpeg_load_ctx *c) {
    if (c->r->err) return elansr_fail(ELANSR_ERR_IO, "%s: read error: %s", c->path, strerror(c->r->err));
    if (c->r->truncated)
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: truncated JPEG file (unexpected end of file)", c->path);
    return elansr_fail(ELANSR_ERR_FORMAT, "%s: invalid JPEG: %s", c->path, c->err.msg);
}

static elansr_status jpeg_decode(jpeg_load_ctx *c, elansr_image *img) {
    j_decompress_ptr ci = &c->cinfo;
    ci->err = &c->err.pub;
    if (setjmp(c->err.jump)) return jpeg_load_failed(c);
    jpeg_create_decompress(ci);

    /* Pool memory: freed by jpeg_destroy_decompress on every path, jump or not. */
    jpeg_src *src = ci->mem->alloc_small((j_common_ptr)ci, JPOOL_PERMANENT, sizeof *src);
    src->buf = ci->mem->alloc_small((j_common_ptr)ci, JPOOL_PERMANENT, JPEG_IO_BUF);
    src->r = c->r;
    src->pub.init_source = jpeg_src_init;
    src->pub.fill_input_buffer = jpeg_src_fill;
    src->pub.skip_input_data = jpeg_src_skip;
    src->pub.resync_to_restart = jpeg_resync_to_restart;
    src->pub.term_source = jpeg_src_term;
    src->pub.next_input_byte = NULL;
    src->pub.bytes_in_buffer = 0;
    ci->src = &src->pub;
    c->progress.progress_monitor = jpeg_progress_cb;
    ci->progress = &c->progress;

    jpeg_read_header(ci, TRUE);
    elansr_status st = check_size(c->path, ci->image_width, ci->image_height);
    if (st != ELANSR_OK) return st;

    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
        ci->out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        /* A faithful CMYK->RGB conversion needs the embedded ICC profile; a naive one gives wrong colours that
           would then be upscaled and saved as if they were right. Refusing is the honest answer. */
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: CMYK JPEG is not supported (convert it to RGB first)", c->path);
    default:
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: JPEG with %d colour components in an unknown colour space is "
                           "not supported", c->path, ci->num_components);
    }

    jpeg_start_decompress(ci);
    int channels = ci->output_components;
    if (channels != (ci->out_color_space == JCS_GRAYSCALE ? 1 : 3))
        return elansr_fail(ELANSR_ERR_FORMAT, "%s: JPEG decoder produced %d channels", c->path, channels);
    size_t stride = (size_t)ci->output_width * (size_t)channels;
    c->pixels = elansr_malloc_array(ci->output_height, stride);
    if (!c->pixels)
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory for a %ux%u image", c->path, ci->output_width,
                           ci->output_height);
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = c->pixels + (size_t)ci->output_scanline * stride;
        /* 0 rows only happens with a suspending source, which ours is not; guard against looping forever. */
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return elansr_fail(ELANSR_ERR_FORMAT, "%s: JPEG decoder stopped at row %u", c->path,
                               ci->output_scanline);
    }
    /* Reads up to EOI, so damage after the last scanline is still seen. */
    jpeg_finish_decompress(ci);

    img->width = (int)ci->output_width;
    img->height = (int)ci->output_height;
    img->channels = channels;
    img->depth = 8;
    img->data = c->pixels;
    c->pixels = NULL;
    return ELANSR_OK;
}

static elansr_status load_jpeg(const char *path, reader *r, elansr_image *img) {
    jpeg_load_ctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.r = r;
    jpeg_err_init(&c.err);
    elansr_status st = jpeg_decode(&c, img);
    jpeg_destroy_decompress(&c.cinfo); /* a no-op if jpeg_create_decompress never ran (mem is still NULL) */
    free(c.pixels);
    return st;
}

/* ------------------------------------------------------------------------------------------------------------ */

elansr_status elansr_image_load(const char *path, elansr_image *img) {
    if (img) memset(img, 0, sizeof *img);
    if (!path || !img)
        return elansr_fail(ELANSR_ERR_ARG, "elansr_image_load: %s is NULL", path ? "image" : "path");

    reader r;
    memset(&r, 0, sizeof r);
    r.fp = fopen(path, "rb");
    if (!r.fp) return elansr_fail(ELANSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    elansr_status st;
    if (!reader_peek(&r, sizeof k_png_sig))
        st = elansr_fail(ELANSR_ERR_IO, "%s: read error: %s", path, strerror(r.err));
    else if (r.head_len == 0)
        st = elansr_fail(ELANSR_ERR_FORMAT, "%s: empty file", path);
    else if (r.head_len == sizeof k_png_sig && memcmp(r.head, k_png_sig, sizeof k_png_sig) == 0)
        st = load_png(path, &r, img);
    else if (r.head_len >= sizeof k_jpeg_soi && memcmp(r.head, k_jpeg_soi, sizeof k_jpeg_soi) == 0)
        st = load_jpeg(path, &r, img);
    else if (memcmp(r.head, k_png_sig, r.head_len) == 0)
        st = elansr_fail(ELANSR_ERR_FORMAT, "%s: truncated PNG file (%zu byte%s)", path, r.head_len,
                         r.head_len == 1 ? "" : "s");
    else if (r.head_len < sizeof k_jpeg_soi && memcmp(r.head, k_jpeg_soi, r.head_len) == 0)
        st = elansr_fail(ELANSR_ERR_FORMAT, "%s: truncated JPEG file (%zu byte%s)", path, r.head_len,
                         r.head_len == 1 ? "" : "s");
    else
        st = elansr_fail(ELANSR_ERR_FORMAT, "%s: not a PNG or JPEG file", path);
    fclose(r.fp); /* read-only: nothing to lose if closing fails */
    if (st != ELANSR_OK) memset(img, 0, sizeof *img);
    return st;
}

void elansr_image_free(elansr_image *img) {
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Writing                                                                                                       */

typedef struct {
    const char *path; /* the target, for messages: the temporary name means nothing to the user */
    FILE *fp;
    png_structp png;
    png_infop info;
    int write_errno;
    char msg[PNG_MSG_LEN];
} png_save_ctx;

static void png_write_cb(png_structp png, png_bytep data, size_t n) {
    png_save_ctx *c = png_get_io_ptr(png);
    errno = 0;
    if (fwrite(data, 1, n, c->fp) != n) {
        c->write_errno = errno ? errno : EIO;
        png_error(png, "write failed");
    }
}

/* We flush and fsync once at the end ourselves. */
static void png_flush_cb(png_structp png) { (void)png; }

static elansr_status png_encode(png_save_ctx *c, const elansr_image *img) {
    png_structp png = c->png;
    if (setjmp(png_jmpbuf(png))) {
        if (c->write_errno)
            return elansr_fail(ELANSR_ERR_IO, "%s: cannot write: %s", c->path, strerror(c->write_errno));
        return elansr_fail(ELANSR_ERR_IO, "%s: PNG encoder failed: %s", c->path, c->msg);
    }
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_write_fn(png, c, png_write_cb, png_flush_cb);
#ifdef PNG_SET_USER_LIMITS_SUPPORTED
    /* libpng's default limit (10^6 per side) applies to writing too; refuse nothing that PNG itself allows. */
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
#endif
    /* zlib's default level: within a few percent of 9 on photos at a fraction of the time. */
    png_set_compression_level(png, 6);
    png_set_IHDR(png, c->info, (png_uint_32)img->width, (png_uint_32)img->height, img->depth,
                 color_types[img->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, c->info);
    /* PNG stores 16-bit samples big-endian; ours are in host order. */
    if (img->depth == 16 && host_little_endian()) png_set_swap(png);
    size_t stride = (size_t)img->width * (size_t)img->channels * (size_t)(img->depth / 8);
    const unsigned char *data = img->data;
    /* libpng copies each row before transforming it, so the caller's const buffer is never written. */
    for (int y = 0; y < img->height; y++) png_write_row(png, data + (size_t)y * stride);
    png_write_end(png, NULL);
    return ELANSR_OK;
}

static elansr_status save_png(const char *path, FILE *fp, const elansr_image *img) {
    png_save_ctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.fp = fp;
    c.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c.msg, png_error_cb, png_warning_cb);
    if (c.png) c.info = png_create_info_struct(c.png);
    if (!c.png || !c.info) {
        png_destroy_write_struct(c.png ? &c.png : NULL, NULL);
        return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory starting the PNG encoder", path);
    }
    elansr_status st = png_encode(&c, img);
    png_destroy_write_struct(&c.png, &c.info);
    return st;
}

typedef struct {
    const char *path;
    FILE *fp;
    struct jpeg_compress_struct cinfo;
    jpeg_err err;
} jpeg_save_ctx;

static elansr_status jpeg_encode(jpeg_save_ctx *c, const elansr_image *img, int quality) {
    j_compress_ptr ci = &c->cinfo;
    ci->err = &c->err.pub;
    if (setjmp(c->err.jump)) return elansr_fail(ELANSR_ERR_IO, "%s: cannot write: %s", c->path, c->err.msg);
    jpeg_create_compress(ci);
    jpeg_stdio_dest(ci, c->fp); /* fails with JERR_FILE_WRITE on a short fwrite, checks ferror at the end */

    int comps = img->channels >= 3 ? 3 : 1; /* alpha is dropped: JPEG has none */
    ci->image_width = (JDIMENSION)img->width;
    ci->image_height = (JDIMENSION)img->height;
    ci->input_components = comps;
    ci->in_color_space = comps == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, quality, TRUE);
    ci->optimize_coding = TRUE; /* lossless, a few percent smaller */
    if (comps == 3 && quality >= 90) {
        /* 4:4:4: at high quality the colour edges that 4:2:0 smears are exactly what an SR user looks at. */
        for (int i = 0; i < 3; i++) ci->comp_info[i].h_samp_factor = ci->comp_info[i].v_samp_factor = 1;
    }
    jpeg_start_compress(ci, TRUE);

    JSAMPARRAY row = ci->mem->alloc_sarray((j_common_ptr)ci, JPOOL_IMAGE, (JDIMENSION)img->width * (JDIMENSION)comps,
                                           1);
    size_t n = (size_t)img->width;
    int ch = img->channels;
    while (ci->next_scanline < ci->image_height) {
        size_t y = ci->next_scanline;
        JSAMPLE *out = row[0];
        if (img->depth == 8) {
            const unsigned char *in = (const unsigned char *)img->data + y * n * (size_t)ch;
            for (size_t x = 0; x < n; x++)
                for (int k = 0; k < comps; k++) out[x * (size_t)comps + (size_t)k] = in[x * (size_t)ch + (size_t)k];
        } else {
            const uint16_t *in = (const uint16_t *)img->data + y * n * (size_t)ch;
            for (size_t x = 0; x < n; x++)
                for (int k = 0; k < comps; k++)
                    out[x * (size_t)comps + (size_t)k] =
                        (JSAMPLE)(((uint32_t)in[x * (size_t)ch + (size_t)k] * 255u + 32767u) / 65535u);
        }
        jpeg_write_scanlines(ci, row, 1);
    }
    jpeg_finish_compress(ci);
    return ELANSR_OK;
}

static elansr_status save_jpeg(const char *path, FILE *fp, const elansr_image *img, int quality) {
    jpeg_save_ctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.fp = fp;
    jpeg_err_init(&c.err);
    elansr_status st = jpeg_encode(&c, img, quality);
    jpeg_destroy_compress(&c.cinfo);
    return st;
}

static int ascii_lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch; }

static int ext_is(const char *ext, const char *want) {
    for (; *ext && *want; ext++, want++)
        if (ascii_lower((unsigned char)*ext) != *want) return 0;
    return *ext == '\0' && *want == '\0';
}

/* The process umask without changing it: umask(2) can only be read by setting it, which races with other threads
   creating files, so prefer Linux's /proc (kernel 4.7+) and fall back to set-and-restore. */
static mode_t current_umask(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        unsigned mask;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "Umask: %o", &mask) == 1) {
                fclose(f);
                return (mode_t)(mask & 0777);
            }
        }
        fclose(f);
    }
    mode_t m = umask(022);
    umask(m);
    return m;
}

elansr_status elansr_image_save(const char *path, const elansr_image *img, elansr_format fmt, int quality) {
    if (!path || !*path) return elansr_fail(ELANSR_ERR_ARG, "elansr_image_save: empty path");
    if (!img || !img->data)
        return elansr_fail(ELANSR_ERR_ARG, "%s: no image to save (%s is NULL)", path, img ? "data" : "image");
    if (img->width < 1 || img->height < 1 || img->channels < 1 || img->channels > 4 ||
        (img->depth != 8 && img->depth != 16))
        return elansr_fail(ELANSR_ERR_ARG, "%s: invalid image (%dx%d, %d channels, %d bits)", path, img->width,
                           img->height, img->channels, img->depth);

    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base) return elansr_fail(ELANSR_ERR_ARG, "%s: not a file name (ends with '/')", path);
    if (fmt == ELANSR_FORMAT_AUTO) {
        const char *dot = strrchr(base, '.');
        if (dot && ext_is(dot + 1, "png"))
            fmt = ELANSR_FORMAT_PNG;
        else if (dot && (ext_is(dot + 1, "jpg") || ext_is(dot + 1, "jpeg")))
            fmt = ELANSR_FORMAT_JPEG;
        else
            return elansr_fail(ELANSR_ERR_ARG, "%s: cannot tell the image format from the name (use .png, .jpg or "
                               ".jpeg)", path);
    }
    if (fmt != ELANSR_FORMAT_PNG && fmt != ELANSR_FORMAT_JPEG)
        return elansr_fail(ELANSR_ERR_ARG, "%s: unknown image format code %d", path, (int)fmt);
    if (fmt == ELANSR_FORMAT_JPEG) {
        if (quality == 0) quality = 95;
        if (quality < 1 || quality > 100)
            return elansr_fail(ELANSR_ERR_ARG, "%s: JPEG quality %d is outside 1..100", path, quality);
        if (img->width > JPEG_MAX_DIMENSION || img->height > JPEG_MAX_DIMENSION)
            return elansr_fail(ELANSR_ERR_ARG, "%s: %dx%d is too large for JPEG (at most %ld pixels per side)", path,
                               img->width, img->height, (long)JPEG_MAX_DIMENSION);
    }

    /* "<dir>/.<base>.XXXXXX": same folder, so rename() is atomic; hidden, so nobody picks up a half-written file.
       The base is cut short if needed so the temporary name stays under NAME_MAX when the target's name fits. */
    size_t dir_len = (size_t)(base - path);
    size_t base_len = strlen(base);
    if (base_len > 200) base_len = 200;
    char *tmp = malloc(dir_len + base_len + 9);
    if (!tmp) return elansr_fail(ELANSR_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, dir_len);
    snprintf(tmp + dir_len, base_len + 9, ".%.*s.XXXXXX", (int)base_len, base);

    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        elansr_status st = elansr_fail(ELANSR_ERR_IO, "%s: cannot create a file in %s: %s", path,
                                       dir_len ? "its folder" : "the current folder", strerror(e));
        free(tmp);
        return st;
    }
    /* mkstemp makes the file 0600; give the result the mode a plain fopen() would have. */
    elansr_status st = ELANSR_OK;
    FILE *fp = NULL;
    if (fchmod(fd, 0666 & ~current_umask()) != 0)
        st = elansr_fail(ELANSR_ERR_IO, "%s: cannot set permissions: %s", path, strerror(errno));
    else if (!(fp = fdopen(fd, "wb")))
        st = elansr_fail(ELANSR_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    if (!fp) close(fd);

    if (fp) {
        st = fmt == ELANSR_FORMAT_PNG ? save_png(path, fp, img) : save_jpeg(path, fp, img, quality);
        if (st == ELANSR_OK && fflush(fp) != 0)
            st = elansr_fail(ELANSR_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        /* EINVAL: the file system cannot sync at all (some FUSE mounts); there is nothing more we could do. */
        if (st == ELANSR_OK && fsync(fileno(fp)) != 0 && errno != EINVAL)
            st = elansr_fail(ELANSR_ERR_IO, "%s: cannot write to disk: %s", path, strerror(errno));
        /* Close even after a failure, but let the first error stand. */
        if (fclose(fp) != 0 && st == ELANSR_OK)
            st = elansr_fail(ELANSR_ERR_IO, "%s: cannot close: %s", path, strerror(errno));
    }
    if (st == ELANSR_OK && rename(tmp, path) != 0)
        st = elansr_fail(ELANSR_ERR_IO, "%s: cannot replace the file: %s", path, strerror(errno));
    if (st != ELANSR_OK) unlink(tmp);
    free(tmp);
    return st;
}
