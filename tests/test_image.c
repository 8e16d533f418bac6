/* test_image.c — PNG/JPEG loading and saving (src/image.c).
 *
 * Round trips through our own writer prove little about byte order or palette handling (a symmetric bug passes),
 * so the PNG variants the loader must expand (palette, tRNS, low bit depths, Adam7, big-endian 16-bit) are written
 * here directly with libpng, and hostile files (bomb headers, cuts, corrupt scans, CMYK) are crafted byte by byte.
 * Everything is written into a private folder under t_tmp_dir(), because other tests share that folder and the
 * "no temporary file left behind" checks count hidden files.
 */
#define _POSIX_C_SOURCE 200809L

#include "elansr.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <png.h>
#include <jpeglib.h>
#include <zlib.h>

static char g_dir[4096];

static const char *tpath(const char *name) {
    static char buf[8][4608];
    static int next = 0;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Hidden entries in our folder: leftovers of "<dir>/.<base>.XXXXXX". */
static int count_hidden(void) {
    DIR *d = opendir(g_dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            fprintf(stderr, "leftover: %s\n", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static void clean_dir(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        const char *p = tpath(e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(d);
}

static int msg_has(const char *needle) { return strstr(elansr_last_error(), needle) != NULL; }

static int is_zeroed(const elansr_image *img) {
    return img->data == NULL && img->width == 0 && img->height == 0 && img->channels == 0 && img->depth == 0;
}

/* Random image; smooth=1 gives a band-limited pattern plus mild noise, something JPEG can represent well. */
static elansr_image make_image(int w, int h, int c, int depth, int smooth, uint64_t seed) {
    elansr_image img = {w, h, c, depth, NULL};
    size_t n = (size_t)w * h * c;
    img.data = malloc(n * (depth / 8));
    t_seed(seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                size_t i = ((size_t)y * w + x) * c + k;
                double v;
                if (smooth)
                    v = 0.5 + 0.3 * sin(x / 7.0 + k) * cos(y / 9.0 - k) + 0.1 * sin((x + y) / 13.0) +
                        t_uniform(-0.01f, 0.01f);
                else
                    v = t_uniform(0.0f, 1.0f);
                if (v < 0) v = 0;
                if (v > 1) v = 1;
                if (depth == 8)
                    ((uint8_t *)img.data)[i] = (uint8_t)lround(v * 255);
                else
                    ((uint16_t *)img.data)[i] = (uint16_t)lround(v * 65535);
            }
    return img;
}

static int same_image(const elansr_image *a, const elansr_image *b) {
    return a->width == b->width && a->height == b->height && a->channels == b->channels && a->depth == b->depth &&
           a->data && b->data &&
           memcmp(a->data, b->data, (size_t)a->width * a->height * a->channels * (a->depth / 8)) == 0;
}

/* Mean absolute error between the first `comps` channels of an 8-bit (or 16-bit, reduced) reference and an 8-bit
   decoded image with `comps` channels. */
static double mae_vs(const elansr_image *ref, const elansr_image *got, int comps) {
    size_t n = (size_t)ref->width * ref->height;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < comps; k++) {
            double r = ref->depth == 8 ? ((uint8_t *)ref->data)[i * ref->channels + k]
                                       : ((((uint16_t *)ref->data)[i * ref->channels + k] * 255u + 32767u) / 65535u);
            sum += fabs(r - ((uint8_t *)got->data)[i * comps + k]);
        }
    return sum / (double)(n * comps);
}

/* ---- round trips through our own writer ---- */

static void test_png_roundtrips(void) {
    const int sizes[3][2] = {{37, 23}, {1, 1}, {200, 3}};
    for (int s = 0; s < 3; s++)
        for (int depth = 8; depth <= 16; depth += 8)
            for (int c = 1; c <= 4; c++) {
                elansr_image img = make_image(sizes[s][0], sizes[s][1], c, depth, 0, 1000 + c * 10 + depth + s);
                char name[64];
                snprintf(name, sizeof name, "rt_%d_c%d_d%d.%s", s, c, depth, s == 1 ? "PNG" : "png");
                const char *p = tpath(name);
                elansr_status st = elansr_image_save(p, &img, ELANSR_FORMAT_AUTO, 0);
                CHECK_MSG(st == ELANSR_OK, "%s: %s", p, elansr_last_error());
                elansr_image back;
                st = elansr_image_load(p, &back);
                CHECK_MSG(st == ELANSR_OK, "%s: %s", p, elansr_last_error());
                CHECK_MSG(same_image(&img, &back), "%s differs after a round trip", p);
                elansr_image_free(&back);
                elansr_image_free(&img);
            }
}

static void test_jpeg_roundtrips(void) {
    struct {
        int c, depth, quality, expect_c;
        const char *name;
        double tol;
    } cases[] = {
        {1, 8, 95, 1, "grey.jpg", 3},     {3, 8, 95, 3, "rgb.JPEG", 3},   {3, 8, 0, 3, "rgb_default.jpeg", 3},
        {2, 8, 95, 1, "ga.jpg", 3},       {4, 8, 95, 3, "rgba.jpg", 3},   {3, 16, 95, 3, "rgb16.jpg", 3},
        {1, 16, 95, 1, "grey16.jpg", 3},  {3, 8, 50, 3, "rgb_q50.jpg", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        elansr_image img = make_image(67, 45, cases[i].c, cases[i].depth, 1, 77 + i);
        const char *p = tpath(cases[i].name);
        elansr_status st = elansr_image_save(p, &img, ELANSR_FORMAT_AUTO, cases[i].quality);
        CHECK_MSG(st == ELANSR_OK, "%s: %s", p, elansr_last_error());
        elansr_image back;
        st = elansr_image_load(p, &back);
        CHECK_MSG(st == ELANSR_OK, "%s: %s", p, elansr_last_error());
        if (st == ELANSR_OK) {
            CHECK(back.width == 67 && back.height == 45 && back.depth == 8);
            CHECK_MSG(back.channels == cases[i].expect_c, "%s: %d channels", p, back.channels);
            if (back.channels == cases[i].expect_c) {
                double e = mae_vs(&img, &back, cases[i].expect_c);
                CHECK_MSG(e < cases[i].tol, "%s: mean abs error %.3f", p, e);
            }
        }
        elansr_image_free(&back);
        elansr_image_free(&img);
    }

    /* progressive JPEG (multi-scan: goes through the scan-count guard), written with libjpeg directly */
    {
        elansr_image ref = make_image(50, 40, 3, 8, 1, 12);
        const char *p = tpath("progressive.jpg");
        FILE *f = fopen(p, "wb");
        CHECK(f != NULL);
        if (f) {
            struct jpeg_compress_struct ci;
            struct jpeg_error_mgr jerr;
            ci.err = jpeg_std_error(&jerr);
            jpeg_create_compress(&ci);
            jpeg_stdio_dest(&ci, f);
            ci.image_width = 50;
            ci.image_height = 40;
            ci.input_components = 3;
            ci.in_color_space = JCS_RGB;
            jpeg_set_defaults(&ci);
            jpeg_set_quality(&ci, 95, TRUE);
            jpeg_simple_progression(&ci);
            jpeg_start_compress(&ci, TRUE);
            while (ci.next_scanline < ci.image_height) {
                JSAMPROW rp = (uint8_t *)ref.data + (size_t)ci.next_scanline * 50 * 3;
                jpeg_write_scanlines(&ci, &rp, 1);
            }
            jpeg_finish_compress(&ci);
            jpeg_destroy_compress(&ci);
            CHECK(fclose(f) == 0);
            elansr_image back;
            elansr_status st = elansr_image_load(p, &back);
            CHECK_MSG(st == ELANSR_OK && back.channels == 3 && back.width == 50 && back.height == 40, "%s: %s", p,
                      elansr_last_error());
            if (st == ELANSR_OK && back.channels == 3) CHECK(mae_vs(&ref, &back, 3) < 4);
            elansr_image_free(&back);
        }
        elansr_image_free(&ref);
    }

    /* Format given explicitly overrides the name, and loading goes by content. */
    elansr_image img = make_image(20, 20, 3, 8, 1, 5);
    elansr_image back;
    CHECK(elansr_image_save(tpath("really_jpeg.png"), &img, ELANSR_FORMAT_JPEG, 95) == ELANSR_OK);
    CHECK(elansr_image_load(tpath("really_jpeg.png"), &back) == ELANSR_OK);
    CHECK(back.channels == 3 && mae_vs(&img, &back, 3) < 3);
    elansr_image_free(&back);
    CHECK(elansr_image_save(tpath("really_png.jpg"), &img, ELANSR_FORMAT_PNG, 0) == ELANSR_OK);
    CHECK(elansr_image_load(tpath("really_png.jpg"), &back) == ELANSR_OK);
    CHECK(same_image(&img, &back));
    elansr_image_free(&back);
    elansr_image_free(&img);
}

/* ---- PNG variants written directly with libpng ---- */

typedef struct {
    int bit_depth, color_type, interlace;
    const png_color *palette;
    int n_palette;
    const png_byte *trans_alpha;
    int n_trans;
    const png_color_16 *trans_color;
} png_spec;

/* rows: h rows of PNG-format bytes (packed low depths, big-endian 16-bit). */
static int write_png_raw(const char *path, int w, int h, const png_spec *sp, unsigned char *rows, size_t rowbytes) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rp = malloc(sizeof *rp * (size_t)h);
    int ok = 0;
    if (png && info && rp && !setjmp(png_jmpbuf(png))) {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, sp->bit_depth, sp->color_type, sp->interlace,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        if (sp->palette) png_set_PLTE(png, info, sp->palette, sp->n_palette);
        if (sp->trans_alpha || sp->trans_color)
            png_set_tRNS(png, info, sp->trans_alpha, sp->n_trans, sp->trans_color);
        png_write_info(png, info);
        for (int y = 0; y < h; y++) rp[y] = rows + (size_t)y * rowbytes;
        png_write_image(png, rp);
        png_write_end(png, NULL);
        ok = 1;
    }
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    free(rp);
    return fclose(f) == 0 && ok;
}

/* Packs `bits`-wide values MSB first, as PNG stores them. */
static void pack_row(unsigned char *dst, const unsigned char *vals, int n, int bits) {
    memset(dst, 0, ((size_t)n * bits + 7) / 8);
    for (int i = 0; i < n; i++) {
        int bit = i * bits;
        dst[bit / 8] |= (unsigned char)(vals[i] << (8 - bits - bit % 8));
    }
}

static void test_png_variants(void) {
    static const png_color pal[5] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}, {200, 100, 50}};
    static const png_byte pal_alpha[2] = {0, 128};
    elansr_image img;

    /* palette 8-bit -> RGB, and palette 4-bit, Adam7, with tRNS for the first two entries -> RGBA */
    for (int variant = 0; variant < 2; variant++) {
        const int w = 13, h = 11, bits = variant ? 4 : 8;
        unsigned char idx[13 * 11], rows[13 * 11];
        size_t rowbytes = ((size_t)w * bits + 7) / 8;
        for (int i = 0; i < w * h; i++) idx[i] = (unsigned char)((i * 7 + i / w) % 5);
        for (int y = 0; y < h; y++) pack_row(rows + y * rowbytes, idx + y * w, w, bits);
        png_spec sp = {bits, PNG_COLOR_TYPE_PALETTE, variant ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                       pal, 5, variant ? pal_alpha : NULL, variant ? 2 : 0, NULL};
        const char *p = tpath(variant ? "pal4_trns_adam7.png" : "pal8.png");
        CHECK(write_png_raw(p, w, h, &sp, rows, rowbytes));
        elansr_status st = elansr_image_load(p, &img);
        CHECK_MSG(st == ELANSR_OK, "%s", elansr_last_error());
        int c = variant ? 4 : 3;
        CHECK_MSG(img.channels == c && img.depth == 8 && img.width == w && img.height == h, "%s: %dx%d c%d d%d", p,
                  img.width, img.height, img.channels, img.depth);
        if (st == ELANSR_OK && img.channels == c) {
            int bad = 0;
            const uint8_t *d = img.data;
            for (int i = 0; i < w * h; i++) {
                const png_color *e = &pal[idx[i]];
                bad += d[i * c] != e->red || d[i * c + 1] != e->green || d[i * c + 2] != e->blue;
                if (c == 4) bad += d[i * c + 3] != (idx[i] < 2 ? pal_alpha[idx[i]] : 255);
            }
            CHECK_MSG(bad == 0, "%s: %d wrong pixels", p, bad);
        }
        elansr_image_free(&img);
    }

    /* grey 2-bit -> 8-bit scaled (3 -> 255), and grey 1-bit Adam7 */
    for (int bits = 1; bits <= 2; bits++) {
        const int w = 17, h = 9, maxv = (1 << bits) - 1;
        unsigned char vals[17 * 9], rows[17 * 9];
        size_t rowbytes = ((size_t)w * bits + 7) / 8;
        for (int i = 0; i < w * h; i++) vals[i] = (unsigned char)((i * 5 + i / 3) % (maxv + 1));
        for (int y = 0; y < h; y++) pack_row(rows + y * rowbytes, vals + y * w, w, bits);
        png_spec sp = {bits, PNG_COLOR_TYPE_GRAY, bits == 1 ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                       NULL, 0, NULL, 0, NULL};
        const char *p = tpath(bits == 1 ? "grey1_adam7.png" : "grey2.png");
        CHECK(write_png_raw(p, w, h, &sp, rows, rowbytes));
        elansr_status st = elansr_image_load(p, &img);
        CHECK_MSG(st == ELANSR_OK && img.channels == 1 && img.depth == 8, "%s: %s", p, elansr_last_error());
        if (st == ELANSR_OK && img.channels == 1) {
            int bad = 0;
            for (int i = 0; i < w * h; i++) bad += ((uint8_t *)img.data)[i] != vals[i] * 255 / maxv;
            CHECK_MSG(bad == 0, "%s: %d wrong pixels", p, bad);
        }
        elansr_image_free(&img);
    }

    /* grey 8 + tRNS -> grey+alpha; RGB 8 + tRNS -> RGBA; grey 16 + tRNS -> grey+alpha 16 */
    {
        const int w = 10, h = 6;
        unsigned char g8[60], rgb8[180], g16[120];
        for (int i = 0; i < w * h; i++) {
            g8[i] = (unsigned char)(i % 3 == 0 ? 7 : 100 + i);
            for (int k = 0; k < 3; k++) rgb8[i * 3 + k] = (unsigned char)(i % 4 == 0 ? 9 * (k + 1) : 50 + i + k);
            uint16_t v = (uint16_t)(i % 2 == 0 ? 0x1234 : 0x8000 + i * 257);
            g16[i * 2] = (unsigned char)(v >> 8);
            g16[i * 2 + 1] = (unsigned char)(v & 0xff);
        }
        png_color_16 tg = {0, 0, 0, 0, 7}, trgb = {0, 9, 18, 27, 0}, tg16 = {0, 0, 0, 0, 0x1234};
        png_spec sg = {8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, NULL, 0, NULL, 0, &tg};
        png_spec srgb = {8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, NULL, 0, NULL, 0, &trgb};
        png_spec sg16 = {16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_ADAM7, NULL, 0, NULL, 0, &tg16};
        CHECK(write_png_raw(tpath("grey_trns.png"), w, h, &sg, g8, (size_t)w));
        CHECK(write_png_raw(tpath("rgb_trns.png"), w, h, &srgb, rgb8, (size_t)w * 3));
        CHECK(write_png_raw(tpath("grey16_trns.png"), w, h, &sg16, g16, (size_t)w * 2));

        int bad = 0;
        if (elansr_image_load(tpath("grey_trns.png"), &img) == ELANSR_OK && img.channels == 2 && img.depth == 8) {
            for (int i = 0; i < w * h; i++) {
                const uint8_t *d = (const uint8_t *)img.data + i * 2;
                bad += d[0] != g8[i] || d[1] != (g8[i] == 7 ? 0 : 255);
            }
        } else {
            bad = -1;
        }
        CHECK_MSG(bad == 0, "grey+tRNS: %d (%s)", bad, elansr_last_error());
        elansr_image_free(&img);

        bad = 0;
        if (elansr_image_load(tpath("rgb_trns.png"), &img) == ELANSR_OK && img.channels == 4 && img.depth == 8) {
            for (int i = 0; i < w * h; i++) {
                const uint8_t *d = (const uint8_t *)img.data + i * 4;
                bad += memcmp(d, rgb8 + i * 3, 3) != 0 || d[3] != (i % 4 == 0 ? 0 : 255);
            }
        } else {
            bad = -1;
        }
        CHECK_MSG(bad == 0, "RGB+tRNS: %d (%s)", bad, elansr_last_error());
        elansr_image_free(&img);

        bad = 0;
        if (elansr_image_load(tpath("grey16_trns.png"), &img) == ELANSR_OK && img.channels == 2 && img.depth == 16) {
            for (int i = 0; i < w * h; i++) {
                const uint16_t *d = (const uint16_t *)img.data + i * 2;
                uint16_t v = (uint16_t)(g16[i * 2] << 8 | g16[i * 2 + 1]);
                bad += d[0] != v || d[1] != (v == 0x1234 ? 0 : 65535);
            }
        } else {
            bad = -1;
        }
        CHECK_MSG(bad == 0, "grey16+tRNS: %d (%s)", bad, elansr_last_error());
        elansr_image_free(&img);
    }

    /* 16-bit RGB and RGBA, Adam7, big-endian in the file: values must come back in host order. */
    for (int c = 3; c <= 4; c++) {
        const int w = 9, h = 7;
        unsigned char bytes[9 * 7 * 4 * 2];
        uint16_t vals[9 * 7 * 4];
        t_seed(4242 + c);
        for (int i = 0; i < w * h * c; i++) {
            vals[i] = (uint16_t)(t_next() >> 48);
            bytes[i * 2] = (unsigned char)(vals[i] >> 8);
            bytes[i * 2 + 1] = (unsigned char)(vals[i] & 0xff);
        }
        png_spec sp = {16, c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_ADAM7, NULL, 0,
                       NULL, 0, NULL};
        const char *p = tpath(c == 3 ? "rgb16_adam7.png" : "rgba16_adam7.png");
        CHECK(write_png_raw(p, w, h, &sp, bytes, (size_t)w * c * 2));
        elansr_status st = elansr_image_load(p, &img);
        CHECK_MSG(st == ELANSR_OK && img.channels == c && img.depth == 16 && img.width == w && img.height == h,
                  "%s: %s", p, elansr_last_error());
        if (st == ELANSR_OK && img.channels == c)
            CHECK_MSG(memcmp(img.data, vals, sizeof vals[0] * (size_t)(w * h * c)) == 0, "%s: values differ", p);
        elansr_image_free(&img);
    }
}

/* ---- the data sets ---- */

static void test_datasets(void) {
    static const char *set5[5] = {"baby", "bird", "butterfly", "head", "woman"};
    char p[4096];
    for (int i = 0; i < 5; i++) {
        elansr_image hr, lr;
        snprintf(p, sizeof p, "%s/data/Set5/HR/%s.png", t_shared_dir(), set5[i]);
        elansr_status a = elansr_image_load(p, &hr);
        CHECK_MSG(a == ELANSR_OK, "%s", elansr_last_error());
        snprintf(p, sizeof p, "%s/data/Set5/LR_x4/%s.png", t_shared_dir(), set5[i]);
        elansr_status b = elansr_image_load(p, &lr);
        CHECK_MSG(b == ELANSR_OK, "%s", elansr_last_error());
        if (a == ELANSR_OK && b == ELANSR_OK) {
            CHECK_MSG(hr.width == 4 * lr.width && hr.height == 4 * lr.height, "%s: HR %dx%d, LR %dx%d", set5[i],
                      hr.width, hr.height, lr.width, lr.height);
            CHECK(hr.channels == 3 && lr.channels == 3 && hr.depth == 8 && lr.depth == 8);
            CHECK(lr.width >= 50 && lr.width <= 200 && lr.height >= 50 && lr.height <= 200);
        }
        if (i == 0 && a == ELANSR_OK) {
            /* a real photo through both writers */
            elansr_image back;
            CHECK(elansr_image_save(tpath("baby.png"), &hr, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK);
            CHECK(elansr_image_load(tpath("baby.png"), &back) == ELANSR_OK && same_image(&hr, &back));
            elansr_image_free(&back);
            CHECK(elansr_image_save(tpath("baby.jpg"), &hr, ELANSR_FORMAT_AUTO, 95) == ELANSR_OK);
            CHECK(elansr_image_load(tpath("baby.jpg"), &back) == ELANSR_OK && back.channels == 3);
            if (back.data) {
                double e = mae_vs(&hr, &back, 3);
                CHECK_MSG(e < 3, "baby.jpg: mean abs error %.3f", e);
            }
            elansr_image_free(&back);
        }
        elansr_image_free(&hr);
        elansr_image_free(&lr);
    }
    int rgba = 0;
    for (int i = 1; i <= 7; i++) {
        elansr_image img;
        snprintf(p, sizeof p, "%s/data/Urban7/%d.png", t_shared_dir(), i);
        elansr_status st = elansr_image_load(p, &img);
        CHECK_MSG(st == ELANSR_OK, "%s", elansr_last_error());
        if (st == ELANSR_OK) {
            CHECK_MSG(img.width >= 64 && img.width <= 4096 && img.height >= 64 && img.height <= 4096 &&
                          (img.channels == 3 || img.channels == 4) && img.depth == 8,
                      "%s: %dx%d c%d d%d", p, img.width, img.height, img.channels, img.depth);
            rgba += img.channels == 4;
        }
        elansr_image_free(&img);
    }
    CHECK_MSG(rgba >= 1, "Urban7 is expected to hold some RGBA images, found %d", rgba);

    snprintf(p, sizeof p, "%s/data/Manga109_LR_x4", t_shared_dir());
    DIR *d = opendir(p);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strstr(e->d_name, ".png")) continue;
        char q[4608];
        snprintf(q, sizeof q, "%s/%s", p, e->d_name);
        elansr_image img;
        elansr_status st = elansr_image_load(q, &img);
        CHECK_MSG(st == ELANSR_OK && img.width >= 32 && img.height >= 32, "%s: %s", q, elansr_last_error());
        elansr_image_free(&img);
        n++;
    }
    if (d) closedir(d);
    CHECK_MSG(n > 0, "no Manga109 images under %s", p);
}

/* ---- hostile and broken input ---- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t put_chunk(unsigned char *out, const char *type, const unsigned char *data, uint32_t len) {
    put_be32(out, len);
    memcpy(out + 4, type, 4);
    if (len) memcpy(out + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, out + 4, 4 + len);
    put_be32(out + 8 + len, (uint32_t)crc);
    return 12 + len;
}

/* A well-formed PNG whose IHDR claims w x h RGB pixels, followed by a tiny IDAT (a few rows of zeros). */
static size_t craft_png(unsigned char *out, uint32_t w, uint32_t h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8;  /* depth */
    ihdr[9] = 2;  /* RGB */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    unsigned char raw[64] = {0}, z[128];
    uLongf zlen = sizeof z;
    compress(z, &zlen, raw, sizeof raw);
    size_t n = 0;
    memcpy(out, sig, 8);
    n += 8;
    n += put_chunk(out + n, "IHDR", ihdr, 13);
    n += put_chunk(out + n, "IDAT", z, (uint32_t)zlen);
    n += put_chunk(out + n, "IEND", NULL, 0);
    return n;
}

/* CMYK JPEG made with libjpeg itself (the loader must refuse it). */
static int write_cmyk_jpeg(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = 8;
    ci.image_height = 8;
    ci.input_components = 4;
    ci.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_start_compress(&ci, TRUE);
    unsigned char row[32];
    for (int i = 0; i < 32; i++) row[i] = (unsigned char)(i * 8);
    JSAMPROW rp = row;
    while (ci.next_scanline < ci.image_height) jpeg_write_scanlines(&ci, &rp, 1);
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return fclose(f) == 0;
}

static void expect_fail(const char *path, elansr_status want, const char *needle) {
    elansr_image img = {7, 7, 7, 7, NULL};
    elansr_status st = elansr_image_load(path, &img);
    CHECK_MSG(st == want, "%s: status %d (want %d): %s", path, (int)st, (int)want, elansr_last_error());
    CHECK_MSG(msg_has(path), "message does not name the file: %s", elansr_last_error());
    if (needle) CHECK_MSG(msg_has(needle), "message lacks \"%s\": %s", needle, elansr_last_error());
    CHECK_MSG(!strchr(elansr_last_error(), '\n'), "message is not one line: %s", elansr_last_error());
    CHECK(is_zeroed(&img));
    elansr_image_free(&img);
}

static void test_bad_inputs(void) {
    elansr_image img;
    CHECK(elansr_image_load(NULL, &img) == ELANSR_ERR_ARG);
    CHECK(elansr_image_load(tpath("x.png"), NULL) == ELANSR_ERR_ARG);

    expect_fail(tpath("does_not_exist.png"), ELANSR_ERR_IO, strerror(ENOENT));
    CHECK(write_file(tpath("empty.png"), "", 0));
    expect_fail(tpath("empty.png"), ELANSR_ERR_FORMAT, "empty");
    const char *text = "this is not an image, just some words\n";
    CHECK(write_file(tpath("text.png"), text, strlen(text)));
    expect_fail(tpath("text.png"), ELANSR_ERR_FORMAT, "not a PNG or JPEG");
    mkdir(tpath("a_folder.png"), 0755);
    expect_fail(tpath("a_folder.png"), ELANSR_ERR_IO, NULL);

    /* libjpeg prints warnings to stderr by default; send stderr to a file and demand it stays empty. */
    char errlog[4608];
    snprintf(errlog, sizeof errlog, "%s", tpath("stderr.log"));
    fflush(stderr);
    int saved = dup(2);
    int fd = open(errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    int n_checks_before = t_failures;

    /* a real PNG cut at many points, including inside the signature, IHDR, IDAT and IEND */
    char src[4096];
    snprintf(src, sizeof src, "%s/data/Set5/LR_x4/bird.png", t_shared_dir());
    size_t n;
    unsigned char *png = read_file(src, &n);
    CHECK(png && n > 200);
    if (png && n > 200) {
        size_t cuts[] = {1, 4, 7, 8, 16, 32, 33, 40, 100, n / 3, n / 2, n - 20, n - 12, n - 4, n - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "cut_%zu.png", cuts[i]);
            CHECK(write_file(tpath(name), png, cuts[i]));
            expect_fail(tpath(name), ELANSR_ERR_FORMAT, "truncated");
        }
    }
    free(png);

    /* a JPEG cut at many points (n-2 drops EOI) */
    elansr_image smooth = make_image(96, 64, 3, 8, 1, 31);
    CHECK(elansr_image_save(tpath("whole.jpg"), &smooth, ELANSR_FORMAT_AUTO, 90) == ELANSR_OK);
    elansr_image_free(&smooth);
    unsigned char *jpg = read_file(tpath("whole.jpg"), &n);
    CHECK(jpg && n > 600);
    if (jpg && n > 600) {
        size_t cuts[] = {1, 2, 3, 10, 100, 300, n / 2, n - 100, n - 2, n - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "cut_%zu.jpg", cuts[i]);
            CHECK(write_file(tpath(name), jpg, cuts[i]));
            expect_fail(tpath(name), ELANSR_ERR_FORMAT, "truncated");
        }

        /* an EOI marker planted in the middle of the entropy-coded data: libjpeg only warns about that */
        unsigned char *bad = malloc(n);
        memcpy(bad, jpg, n);
        size_t sos = 0;
        for (size_t i = 2; i + 1 < n; i++)
            if (bad[i] == 0xff && bad[i + 1] == 0xda) {
                sos = i;
                break;
            }
        CHECK(sos > 0 && sos + 40 < n);
        size_t mid = sos + (n - sos) / 2;
        bad[mid] = 0xff;
        bad[mid + 1] = 0xd9;
        CHECK(write_file(tpath("corrupt.jpg"), bad, n));
        expect_fail(tpath("corrupt.jpg"), ELANSR_ERR_FORMAT, "Corrupt JPEG data");

        /* junk right before EOI is tolerated (common in camera files; every pixel was decoded before it) */
        /* (64 bytes: a few would vanish into the Huffman decoder's bit buffer without any warning) */
        unsigned char *junk = malloc(n + 64);
        memcpy(junk, jpg, n - 2);
        for (int i = 0; i < 64; i++) junk[n - 2 + i] = (unsigned char)(0x11 + i);
        junk[n + 62] = 0xff;
        junk[n + 63] = 0xd9;
        CHECK(write_file(tpath("junk_before_eoi.jpg"), junk, n + 64));
        free(junk);
        elansr_image ok_img;
        CHECK_MSG(elansr_image_load(tpath("junk_before_eoi.jpg"), &ok_img) == ELANSR_OK, "%s", elansr_last_error());
        CHECK(ok_img.width == 96 && ok_img.height == 64 && ok_img.channels == 3);
        elansr_image_free(&ok_img);

        /* SOF claiming 65000 x 65000: refused on the header */
        memcpy(bad, jpg, n);
        size_t sof = 0;
        for (size_t i = 2; i + 9 < n; i++)
            if (bad[i] == 0xff && bad[i + 1] == 0xc0) {
                sof = i;
                break;
            }
        CHECK(sof > 0);
        if (sof) {
            bad[sof + 5] = bad[sof + 7] = 65000 >> 8;
            bad[sof + 6] = bad[sof + 8] = 65000 & 0xff;
        }
        CHECK(write_file(tpath("bomb.jpg"), bad, n));
        expect_fail(tpath("bomb.jpg"), ELANSR_ERR_NOMEM, "65000x65000 pixels, more than elansr accepts");
        free(bad);
    }
    free(jpg);

    CHECK(write_cmyk_jpeg(tpath("cmyk.jpg")));
    expect_fail(tpath("cmyk.jpg"), ELANSR_ERR_FORMAT, "CMYK");

    /* decompression bombs: a ~100-byte PNG claiming 10^10 pixels, one over the per-side limit, one over the
       pixel limit. The message comes from the header check, which runs before anything is allocated. */
    unsigned char crafted[256];
    n = craft_png(crafted, 100000, 100000);
    CHECK(write_file(tpath("bomb.png"), crafted, n));
    expect_fail(tpath("bomb.png"), ELANSR_ERR_NOMEM, "100000x100000 pixels, more than elansr accepts");
    n = craft_png(crafted, 2000000, 1);
    CHECK(write_file(tpath("wide.png"), crafted, n));
    expect_fail(tpath("wide.png"), ELANSR_ERR_NOMEM, "2000000x1 pixels");
    n = craft_png(crafted, 20000, 20000);
    CHECK(write_file(tpath("big.png"), crafted, n));
    expect_fail(tpath("big.png"), ELANSR_ERR_NOMEM, "20000x20000 pixels");
    /* a sane size whose IDAT is far too short: a format error, not a truncation */
    n = craft_png(crafted, 64, 64);
    CHECK(write_file(tpath("short_idat.png"), crafted, n));
    expect_fail(tpath("short_idat.png"), ELANSR_ERR_FORMAT, "invalid PNG");
    /* IHDR with a wrong CRC */
    n = craft_png(crafted, 64, 64);
    crafted[30] ^= 1; /* inside the IHDR CRC */
    CHECK(write_file(tpath("bad_crc.png"), crafted, n));
    expect_fail(tpath("bad_crc.png"), ELANSR_ERR_FORMAT, "invalid PNG");

    int failed_here = t_failures - n_checks_before;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t logged = 0;
    unsigned char *log = read_file(errlog, &logged);
    if (failed_here) fprintf(stderr, "%.*s", (int)logged, log ? (const char *)log : "");
    else CHECK_MSG(logged == 0, "decoders wrote to stderr: %.*s", (int)logged, log ? (const char *)log : "");
    free(log);
}

/* ---- saving: errors, atomicity, permissions ---- */

static void test_save(void) {
    elansr_image img = make_image(256, 256, 3, 8, 0, 99);
    char p[4608];

    snprintf(p, sizeof p, "%s/no/such/folder/out.png", g_dir);
    CHECK(elansr_image_save(p, &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_IO);
    CHECK_MSG(msg_has(p), "%s", elansr_last_error());
    CHECK(!file_exists(p));

    const char *bad_names[] = {"out.bmp", "out", "out.png.txt", "out.jpgx"};
    for (int i = 0; i < 4; i++) {
        CHECK(elansr_image_save(tpath(bad_names[i]), &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
        CHECK_MSG(msg_has(tpath(bad_names[i])), "%s", elansr_last_error());
        CHECK(!file_exists(tpath(bad_names[i])));
    }
    CHECK(elansr_image_save(tpath("q.jpg"), &img, ELANSR_FORMAT_AUTO, 101) == ELANSR_ERR_ARG);
    CHECK(elansr_image_save(tpath("q.jpg"), &img, ELANSR_FORMAT_AUTO, -5) == ELANSR_ERR_ARG);
    CHECK(elansr_image_save(tpath("q.jpg"), &img, (elansr_format)9, 0) == ELANSR_ERR_ARG);
    CHECK(elansr_image_save(NULL, &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    CHECK(elansr_image_save(tpath("n.png"), NULL, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    elansr_image odd = img;
    odd.channels = 5;
    CHECK(elansr_image_save(tpath("odd.png"), &odd, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    odd = img;
    odd.depth = 12;
    CHECK(elansr_image_save(tpath("odd.png"), &odd, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    odd = img;
    odd.data = NULL;
    CHECK(elansr_image_save(tpath("odd.png"), &odd, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    CHECK(!file_exists(tpath("q.jpg")) && !file_exists(tpath("odd.png")));

    /* the target is a folder: the temporary file is written, the rename fails, the temporary must go */
    mkdir(tpath("folder_target.png"), 0755);
    CHECK(elansr_image_save(tpath("folder_target.png"), &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_IO);
    CHECK_MSG(msg_has(tpath("folder_target.png")), "%s", elansr_last_error());
    struct stat sb;
    CHECK(stat(tpath("folder_target.png"), &sb) == 0 && S_ISDIR(sb.st_mode));

    /* a write that fails half-way (file size limit): the existing target must be untouched */
    const char *keep = "precious bytes";
    CHECK(write_file(tpath("keep.png"), keep, strlen(keep)));
    CHECK(write_file(tpath("keep.jpg"), keep, strlen(keep)));
    struct rlimit old;
    if (getrlimit(RLIMIT_FSIZE, &old) == 0) {
        struct rlimit lim = old;
        lim.rlim_cur = 8192;
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
            elansr_status a = elansr_image_save(tpath("keep.png"), &img, ELANSR_FORMAT_AUTO, 0);
            char ma[1024];
            snprintf(ma, sizeof ma, "%s", elansr_last_error());
            elansr_status b = elansr_image_save(tpath("keep.jpg"), &img, ELANSR_FORMAT_AUTO, 100);
            char mb[1024];
            snprintf(mb, sizeof mb, "%s", elansr_last_error());
            setrlimit(RLIMIT_FSIZE, &old);
            CHECK_MSG(a == ELANSR_ERR_IO && strstr(ma, tpath("keep.png")), "PNG: %d %s", (int)a, ma);
            CHECK_MSG(b == ELANSR_ERR_IO && strstr(mb, tpath("keep.jpg")), "JPEG: %d %s", (int)b, mb);
        }
        signal(SIGXFSZ, SIG_DFL);
    }
    const char *names[2] = {"keep.png", "keep.jpg"};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        unsigned char *got = read_file(tpath(names[i]), &n);
        CHECK_MSG(got && n == strlen(keep) && memcmp(got, keep, n) == 0, "%s was modified by a failed save", names[i]);
        free(got);
    }
    CHECK_MSG(count_hidden() == 0, "temporary files left behind after failed saves");

    /* a successful save replaces an existing file */
    CHECK(elansr_image_save(tpath("keep.png"), &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK);
    elansr_image back;
    CHECK(elansr_image_load(tpath("keep.png"), &back) == ELANSR_OK && same_image(&img, &back));
    elansr_image_free(&back);

    /* permissions follow the umask like fopen's would, not mkstemp's 0600 */
    mode_t saved_mask = umask(022);
    CHECK(elansr_image_save(tpath("perm644.png"), &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK);
    CHECK(stat(tpath("perm644.png"), &sb) == 0 && (sb.st_mode & 0777) == 0644);
    umask(027);
    CHECK(elansr_image_save(tpath("perm640.jpg"), &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK);
    CHECK(stat(tpath("perm640.jpg"), &sb) == 0 && (sb.st_mode & 0777) == 0640);
    umask(saved_mask);

    /* exactly at the per-side limit loads (and is above libpng's default write limit); one more is refused */
    elansr_image line = make_image(1 << 20, 1, 1, 8, 0, 3);
    CHECK_MSG(elansr_image_save(tpath("line.png"), &line, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK, "%s",
              elansr_last_error());
    CHECK_MSG(elansr_image_load(tpath("line.png"), &back) == ELANSR_OK && same_image(&line, &back), "%s",
              elansr_last_error());
    elansr_image_free(&back);
    elansr_image_free(&line);
    line = make_image((1 << 20) + 1, 1, 1, 8, 0, 3);
    CHECK_MSG(elansr_image_save(tpath("line2.png"), &line, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK, "%s",
              elansr_last_error());
    CHECK(elansr_image_load(tpath("line2.png"), &back) == ELANSR_ERR_NOMEM && msg_has("1048577x1 pixels"));
    CHECK(is_zeroed(&back));
    elansr_image_free(&line);
    line = make_image(65501, 1, 3, 8, 0, 3);
    CHECK(elansr_image_save(tpath("too_wide.jpg"), &line, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
    CHECK(!file_exists(tpath("too_wide.jpg")));
    elansr_image_free(&line);

    /* a bare file name (no folder part) goes to the current folder */
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) && chdir(g_dir) == 0) {
        CHECK(elansr_image_save("bare.png", &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_OK);
        CHECK(elansr_image_save("bare.unknown", &img, ELANSR_FORMAT_AUTO, 0) == ELANSR_ERR_ARG);
        CHECK(chdir(cwd) == 0);
        CHECK(file_exists(tpath("bare.png")));
    }
    CHECK_MSG(count_hidden() == 0, "temporary files left behind");
    elansr_image_free(&img);

    /* free is safe on zeroed and already-freed images, and on NULL */
    elansr_image z;
    memset(&z, 0, sizeof z);
    elansr_image_free(&z);
    elansr_image_free(&z);
    elansr_image_free(NULL);
    CHECK(is_zeroed(&z));
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_image", t_tmp_dir());
    mkdir(t_tmp_dir(), 0755);
    if (mkdir(g_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", g_dir, strerror(errno));
        return 1;
    }
    clean_dir();
    CHECK_MSG(count_hidden() == 0, "cannot clean %s", g_dir);

    test_png_roundtrips();
    test_jpeg_roundtrips();
    test_png_variants();
    test_datasets();
    test_bad_inputs();
    test_save();
    return test_finish("test_image");
}
