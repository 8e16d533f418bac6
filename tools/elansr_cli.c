/* elansr — command-line front end of the library, in the conventions of realesrgan-ncnn-vulkan:
     elansr -i IN -o OUT [-m MODEL] [-s SCALE] [-g GPU] [-t TILE] [-f FMT] ...   (file or folder)
     elansr eval --hr DIR --lr DIR [-m MODEL] [-g GPU]                           (PSNR / SSIM)
     elansr bench ...                                                            (GPU timing)
   Every failure prints one line naming the file and the cause on stderr and makes the exit status non-zero;
   outputs are written atomically by the library, so a failure never leaves a partial file. */
#define _POSIX_C_SOURCE 200809L
#include "elansr.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int elansr_bench_main(int argc, char **argv); /* bench.c below, via include */

#define MODEL_FILE "elan-light-x4.pth"

static void usage(FILE *f) {
    fprintf(f,
            "elansr %s — ELAN image super-resolution (ECCV 2022) on CPU and NVIDIA GPU\n"
            "\n"
            "Usage:\n"
            "  elansr -i IN -o OUT [options]        upscale an image, or every image of a folder\n"
            "  elansr eval --hr DIR --lr DIR [opts] PSNR/SSIM (Y channel) of the model on a test set\n"
            "  elansr bench [bench options]         GPU latency and throughput (see elansr bench --help)\n"
            "\n"
            "Options:\n"
            "  -i PATH      input image (PNG or JPEG) or folder\n"
            "  -o PATH      output image or folder (created if missing)\n"
            "  -m FILE      model checkpoint (.pth); default: $ELANSR_MODEL, else " MODEL_FILE "\n"
            "               looked up in ./, ./models/ and the executable's ../share/elansr/\n"
            "  -s SCALE     upscale ratio; must match the model (2, 3 or 4); default: the model's\n"
            "  -g GPU       GPU index, or -1 for the CPU; default: GPU 0 if present, else CPU\n"
            "  -t TILE      tile size in input pixels (0 = whole image; default 0)\n"
            "  -f FORMAT    output format png, jpg (folder mode: also the output extension)\n"
            "  -q QUALITY   JPEG quality 1..100 (default 95)\n"
            "  -p PREC      precision fp32, tf32, fp16, bf16 (GPU); default: fp16 on a GPU, fp32 on the CPU\n"
            "  -j THREADS   CPU threads (default: all cores)\n"
            "  -v           verbose: per-image timing\n"
            "  -h, --help   this text;  -V, --version  version\n",
            elansr_version());
}

static int die_usage(const char *msg, const char *arg) {
    fprintf(stderr, "elansr: %s%s%s (see elansr --help)\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

/* dst = a "/" b, or 0 (and an error line) if the path does not fit. */
static int join_path(char *dst, size_t n, const char *a, const char *b) {
    int k = snprintf(dst, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n) {
        fprintf(stderr, "elansr: %s/%s: path too long\n", a, b);
        return 0;
    }
    return 1;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *ext_of(const char *p) {
    const char *slash = strrchr(p, '/');
    const char *dot = strrchr(p, '.');
    return (dot && (!slash || dot > slash)) ? dot + 1 : "";
}

static int is_image_name(const char *name) {
    const char *e = ext_of(name);
    return !strcasecmp(e, "png") || !strcasecmp(e, "jpg") || !strcasecmp(e, "jpeg");
}

/* Finds the default checkpoint; returns NULL (with a message) if none exists. */
static const char *default_model(const char *argv0) {
    static char buf[PATH_MAX];
    const char *env = getenv("ELANSR_MODEL");
    if (env && *env) return env;
    const char *cands[] = {MODEL_FILE, "models/" MODEL_FILE};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++)
        if (file_exists(cands[i])) return cands[i];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            int k = snprintf(buf, sizeof buf, "%s/../share/elansr/" MODEL_FILE, exe);
            if (k > 0 && (size_t)k < sizeof buf && file_exists(buf)) return buf;
            k = snprintf(buf, sizeof buf, "%s/models/" MODEL_FILE, exe);
            if (k > 0 && (size_t)k < sizeof buf && file_exists(buf)) return buf;
        }
    }
    (void)argv0;
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    const char *in, *out, *model, *format;
    int scale, gpu, tile, quality, threads, verbose;
    elansr_precision precision;
    const char *hr, *lr;
} cli_opts;

static int parse_precision(const char *s, elansr_precision *p) {
    if (!s) return 0;
    if (!strcmp(s, "fp32")) *p = ELANSR_PRECISION_FP32;
    else if (!strcmp(s, "tf32")) *p = ELANSR_PRECISION_TF32;
    else if (!strcmp(s, "fp16")) *p = ELANSR_PRECISION_FP16;
    else if (!strcmp(s, "bf16")) *p = ELANSR_PRECISION_BF16;
    else return 0;
    return 1;
}

/* Parses the options shared by upscale and eval. Returns 0 to go on, 1 when --help/--version were served,
   or a usage-error exit code (2). */
static int parse_opts(int argc, char **argv, int first, cli_opts *o, int is_eval) {
    memset(o, 0, sizeof *o);
    o->gpu = ELANSR_DEVICE_AUTO;
    o->quality = 95;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("elansr %s\n", elansr_version());
            return 1;
        }
        if (!strcmp(a, "-v")) {
            o->verbose = 1;
            continue;
        }
        if (a[0] != '-' || !v) return die_usage(v ? "unexpected argument" : "option needs a value", a);
        i++;
        if (!strcmp(a, "-i") && !is_eval) o->in = v;
        else if (!strcmp(a, "-o") && !is_eval) o->out = v;
        else if (!strcmp(a, "--hr") && is_eval) o->hr = v;
        else if (!strcmp(a, "--lr") && is_eval) o->lr = v;
        else if (!strcmp(a, "-m")) o->model = v;
        else if (!strcmp(a, "-f") && !is_eval) o->format = v;
        else if (!strcmp(a, "-s")) {
            if (!parse_int(v, 1, 16, &o->scale)) return die_usage("invalid scale", v);
        } else if (!strcmp(a, "-g")) {
            if (!parse_int(v, -1, 1024, &o->gpu)) return die_usage("invalid GPU index", v);
        } else if (!strcmp(a, "-t")) {
            if (!parse_int(v, 0, 1 << 16, &o->tile)) return die_usage("invalid tile size", v);
        } else if (!strcmp(a, "-q")) {
            if (!parse_int(v, 1, 100, &o->quality)) return die_usage("invalid JPEG quality (1..100)", v);
        } else if (!strcmp(a, "-j")) {
            if (!parse_int(v, 1, 4096, &o->threads)) return die_usage("invalid thread count", v);
        } else if (!strcmp(a, "-p")) {
            if (!parse_precision(v, &o->precision)) return die_usage("invalid precision (fp32, tf32, fp16, bf16)", v);
        } else {
            return die_usage("unknown option", a);
        }
    }
    return 0;
}

/* Loads the model and checks -s against it. Returns NULL after printing the error. */
static elansr_context *open_model(const cli_opts *o, const char *argv0) {
    const char *model = o->model ? o->model : default_model(argv0);
    if (!model) {
        fprintf(stderr, "elansr: no model given and %s not found (use -m FILE or set ELANSR_MODEL)\n", MODEL_FILE);
        return NULL;
    }
    elansr_params p = elansr_default_params();
    p.device = o->gpu;
    p.tile = o->tile;
    p.n_threads = o->threads;
    p.precision = o->precision;
    p.verbose = o->verbose;
    elansr_context *ctx = NULL;
    if (elansr_init(model, &p, &ctx) != ELANSR_OK) {
        fprintf(stderr, "elansr: %s\n", elansr_last_error());
        return NULL;
    }
    elansr_model_info info;
    elansr_get_info(ctx, &info);
    if (o->scale && o->scale != info.scale) {
        fprintf(stderr, "elansr: %s: model upscales x%d, but -s %d was asked for\n", model, info.scale, o->scale);
        elansr_free(ctx);
        return NULL;
    }
    if (o->verbose)
        fprintf(stderr, "elansr: %s: ELAN C=%d, %d blocks, x%d, %zu parameters, on %s (%s)\n", model, info.planes,
                info.n_blocks, info.scale, info.n_params, info.backend, info.device_name);
    return ctx;
}

static int upscale_file(elansr_context *ctx, const char *in, const char *out, elansr_format fmt, int quality,
                        int verbose) {
    elansr_image img = {0}, res = {0};
    double t0 = now_s();
    if (elansr_image_load(in, &img) != ELANSR_OK) {
        fprintf(stderr, "elansr: %s\n", elansr_last_error());
        return 1;
    }
    int rc = 0;
    if (elansr_upscale_image(ctx, &img, &res) != ELANSR_OK) {
        fprintf(stderr, "elansr: %s: %s\n", in, elansr_last_error());
        rc = 1;
    } else if (elansr_image_save(out, &res, fmt, quality) != ELANSR_OK) {
        fprintf(stderr, "elansr: %s\n", elansr_last_error());
        rc = 1;
    } else if (verbose) {
        fprintf(stderr, "elansr: %s (%dx%d) -> %s (%dx%d) in %.3f s\n", in, img.width, img.height, out, res.width,
                res.height, now_s() - t0);
    }
    elansr_image_free(&img);
    elansr_image_free(&res);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted list of image file names (not paths) in dir; NULL with a message on error. */
static char **list_images(const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "elansr: %s: cannot open folder: %s\n", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        names[n] = strdup(e->d_name);
        if (names[n]) n++;
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *count = n;
    if (!names) names = calloc(1, sizeof *names);
    return names;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static int format_from_opt(const char *f, elansr_format *fmt, const char **ext) {
    if (!f) {
        *fmt = ELANSR_FORMAT_AUTO;
        *ext = NULL;
        return 1;
    }
    if (!strcasecmp(f, "png")) {
        *fmt = ELANSR_FORMAT_PNG;
        *ext = "png";
    } else if (!strcasecmp(f, "jpg") || !strcasecmp(f, "jpeg")) {
        *fmt = ELANSR_FORMAT_JPEG;
        *ext = "jpg";
    } else {
        return 0;
    }
    return 1;
}

static int cmd_upscale(int argc, char **argv) {
    cli_opts o;
    int r = parse_opts(argc, argv, 1, &o, 0);
    if (r) return r == 1 ? 0 : r;
    if (!o.in) return die_usage("no input given", "-i");
    if (!o.out) return die_usage("no output given", "-o");
    elansr_format fmt;
    const char *fext;
    if (!format_from_opt(o.format, &fmt, &fext)) return die_usage("unknown output format (png, jpg)", o.format);
    struct stat st;
    if (stat(o.in, &st) != 0) {
        fprintf(stderr, "elansr: %s: %s\n", o.in, strerror(errno));
        return 1;
    }
    int in_dir = S_ISDIR(st.st_mode);
    if (!in_dir && !is_dir(o.out) && !fext && !is_image_name(o.out)) {
        fprintf(stderr, "elansr: %s: output extension must be .png, .jpg or .jpeg (or give -f)\n", o.out);
        return 1;
    }
    if (in_dir) {
        if (file_exists(o.out)) {
            fprintf(stderr, "elansr: %s: input is a folder but the output is a file\n", o.out);
            return 1;
        }
        if (!is_dir(o.out) && mkdir(o.out, 0777) != 0) {
            fprintf(stderr, "elansr: %s: cannot create folder: %s\n", o.out, strerror(errno));
            return 1;
        }
    }
    elansr_context *ctx = open_model(&o, argv[0]);
    if (!ctx) return 1;
    int failed = 0;
    if (!in_dir) {
        char path[PATH_MAX];
        const char *out = o.out;
        if (is_dir(o.out)) { /* file into a folder: keep the name */
            const char *base = strrchr(o.in, '/');
            out = join_path(path, sizeof path, o.out, base ? base + 1 : o.in) ? path : NULL;
        }
        failed = out ? upscale_file(ctx, o.in, out, fmt, o.quality, o.verbose) : 1;
    } else {
        int n = 0;
        char **names = list_images(o.in, &n);
        if (!names) {
            failed = 1;
        } else {
            if (n == 0) {
                fprintf(stderr, "elansr: %s: no PNG or JPEG images in this folder\n", o.in);
                failed = 1;
            }
            for (int i = 0; i < n; i++) {
                char src[PATH_MAX], dst[PATH_MAX], name[PATH_MAX];
                snprintf(name, sizeof name, "%s", names[i]);
                if (fext) { /* same base name, the -f format's extension */
                    char *dot = strrchr(name, '.');
                    if ((size_t)(dot - name) + 5 < sizeof name) strcpy(dot + 1, fext);
                }
                if (!join_path(src, sizeof src, o.in, names[i]) || !join_path(dst, sizeof dst, o.out, name)) {
                    failed++;
                    continue;
                }
                failed += upscale_file(ctx, src, dst, fmt, o.quality, o.verbose);
            }
            if (failed && n > 1) fprintf(stderr, "elansr: %d of %d images failed\n", failed, n);
            free_list(names, n);
        }
    }
    elansr_free(ctx);
    return failed ? 1 : 0;
}

/* 8-bit RGB copy of any image (grey replicated, alpha dropped, 16-bit rounded), for the metrics. */
static uint8_t *to_rgb8(const elansr_image *im) {
    size_t n = (size_t)im->width * im->height;
    uint8_t *o = malloc(n * 3);
    if (!o) return NULL;
    int c = im->channels;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            size_t j = i * c + (c >= 3 ? k : 0);
            o[i * 3 + k] = im->depth == 16 ? (uint8_t)((((const uint16_t *)im->data)[j] * 255u + 32767u) / 65535u)
                                           : ((const uint8_t *)im->data)[j];
        }
    return o;
}

static int cmd_eval(int argc, char **argv) {
    cli_opts o;
    int r = parse_opts(argc, argv, 2, &o, 1);
    if (r) return r == 1 ? 0 : r;
    if (!o.hr) return die_usage("no HR folder given", "--hr");
    if (!o.lr) return die_usage("no LR folder given", "--lr");
    if (!is_dir(o.lr)) {
        fprintf(stderr, "elansr: %s: not a folder\n", o.lr);
        return 1;
    }
    int n = 0;
    char **names = list_images(o.hr, &n);
    if (!names) return 1;
    if (n == 0) {
        fprintf(stderr, "elansr: %s: no PNG or JPEG images in this folder\n", o.hr);
        free_list(names, n);
        return 1;
    }
    elansr_context *ctx = open_model(&o, argv[0]);
    if (!ctx) {
        free_list(names, n);
        return 1;
    }
    elansr_model_info info;
    elansr_get_info(ctx, &info);
    printf("%-24s %10s %8s\n", "image", "PSNR", "SSIM");
    double sp = 0, ss = 0;
    int done = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        char hp[PATH_MAX], lp[PATH_MAX];
        if (!join_path(hp, sizeof hp, o.hr, names[i]) || !join_path(lp, sizeof lp, o.lr, names[i])) {
            failed++;
            continue;
        }
        elansr_image hr = {0}, lr = {0}, sr = {0};
        uint8_t *a = NULL, *b = NULL;
        double psnr, ssim;
        if (!file_exists(lp)) {
            fprintf(stderr, "elansr: %s: no LR image of that name for %s\n", lp, hp);
            failed++;
            continue;
        }
        if (elansr_image_load(hp, &hr) != ELANSR_OK || elansr_image_load(lp, &lr) != ELANSR_OK) {
            fprintf(stderr, "elansr: %s\n", elansr_last_error());
            failed++;
        } else if (elansr_upscale_image(ctx, &lr, &sr) != ELANSR_OK) {
            fprintf(stderr, "elansr: %s: %s\n", lp, elansr_last_error());
            failed++;
        } else if (hr.width < sr.width || hr.height < sr.height) {
            fprintf(stderr, "elansr: %s: HR %dx%d is smaller than x%d of LR %dx%d\n", hp, hr.width, hr.height,
                    info.scale, lr.width, lr.height);
            failed++;
        } else if (!(a = to_rgb8(&sr)) || !(b = to_rgb8(&hr))) {
            fprintf(stderr, "elansr: %s: out of memory\n", hp);
            failed++;
        } else {
            /* HR cropped to s*H x s*W of the LR (top-left), as ELAN.md says. */
            uint8_t *bc = b;
            if (hr.width != sr.width)
                for (int y = 0; y < sr.height; y++)
                    memmove(bc + (size_t)y * sr.width * 3, b + (size_t)y * hr.width * 3, (size_t)sr.width * 3);
            if (elansr_psnr_ssim_y(a, bc, sr.width, sr.height, info.scale, &psnr, &ssim) != ELANSR_OK) {
                fprintf(stderr, "elansr: %s: %s\n", hp, elansr_last_error());
                failed++;
            } else {
                printf("%-24s %10.4f %8.4f\n", names[i], psnr, ssim);
                sp += psnr;
                ss += ssim;
                done++;
            }
        }
        free(a);
        free(b);
        elansr_image_free(&hr);
        elansr_image_free(&lr);
        elansr_image_free(&sr);
    }
    if (done) printf("%-24s %10.4f %8.4f   (%d images, x%d, %s)\n", "mean", sp / done, ss / done, done, info.scale, info.backend);
    elansr_free(ctx);
    free_list(names, n);
    return (failed || !done) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc, argv);
    if (!strcmp(argv[1], "bench")) return elansr_bench_main(argc - 1, argv + 1);
    return cmd_upscale(argc, argv);
}

#include "bench.c.inc"
