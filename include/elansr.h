/*
 * elansr.h — the whole public surface of the elansr library.
 *
 * elansr runs ELAN image super-resolution (Zhang et al., ECCV 2022) from a PyTorch checkpoint, on the
 * CPU or on an NVIDIA GPU, with no Python at run time.
 *
 * Usage:
 *     elansr_params p = elansr_default_params();
 *     elansr_context *ctx;
 *     if (elansr_init("elan-light-x4.pth", &p, &ctx) != ELANSR_OK) { puts(elansr_last_error()); ... }
 *     elansr_image img, out;
 *     elansr_image_load("in.png", &img);
 *     elansr_upscale_image(ctx, &img, &out);
 *     elansr_image_save("out.png", &out, ELANSR_FORMAT_AUTO, 95);
 *     elansr_image_free(&img); elansr_image_free(&out); elansr_free(ctx);
 *
 * Conventions:
 *  - Every call that can fail returns an elansr_status; on failure elansr_last_error() holds a one-line
 *    message naming the file or object and the cause. The message is per thread.
 *  - Float tensors are N,C,H,W, channels R,G,B, values on the 0..255 scale (as the network is trained).
 *  - Nothing is written to a destination file unless the whole write succeeds (temporary file + rename).
 */
#ifndef ELANSR_H
#define ELANSR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ELANSR_VERSION_MAJOR 0
#define ELANSR_VERSION_MINOR 1
#define ELANSR_VERSION_PATCH 0
#define ELANSR_VERSION_STRING "0.1.0"

typedef enum {
    ELANSR_OK = 0,
    ELANSR_ERR_ARG = 1,         /* invalid argument (bad size, scale mismatch, NULL pointer) */
    ELANSR_ERR_IO = 2,          /* file missing, unreadable or unwritable */
    ELANSR_ERR_FORMAT = 3,      /* file exists but is not a valid image / checkpoint */
    ELANSR_ERR_CHECKPOINT = 4,  /* checkpoint is well formed but not an ELAN model we understand */
    ELANSR_ERR_NOMEM = 5,       /* host or device allocation failed, or a size exceeds the limits */
    ELANSR_ERR_DEVICE = 6,      /* CUDA error or no such GPU */
    ELANSR_ERR_UNSUPPORTED = 7  /* feature not compiled in (e.g. CUDA backend in a CPU-only build) */
} elansr_status;

typedef enum {
    ELANSR_PRECISION_DEFAULT = 0, /* fp32 on the CPU; fp16 on a GPU (Set5 within 0.0005 dB of fp32) */
    ELANSR_PRECISION_FP32 = 1,
    ELANSR_PRECISION_TF32 = 2,
    ELANSR_PRECISION_FP16 = 3,
    ELANSR_PRECISION_BF16 = 4
} elansr_precision;

#define ELANSR_DEVICE_AUTO (-2) /* GPU 0 when one is present and CUDA is compiled in, else the CPU */
#define ELANSR_DEVICE_CPU (-1)

typedef struct {
    int device;                 /* ELANSR_DEVICE_AUTO, ELANSR_DEVICE_CPU, or a CUDA device index >= 0 */
    int n_threads;              /* CPU threads; 0 = OpenMP's default */
    elansr_precision precision;
    int tile;                   /* 0 = whole image at once; T > 0: LR tiles of T x T (rounded up to 16)
                                   with a 16-pixel overlap, to bound memory on huge images */
    int verbose;                /* 1: print progress and timings to stderr */
} elansr_params;

typedef struct {
    int scale;          /* 2, 3 or 4 */
    int planes;         /* C: 60 for ELAN-light */
    int n_blocks;       /* ELAB blocks */
    int n_share;        /* GMSAs per block that reuse the first one's attention */
    int windows[3];     /* attention window sizes, (4, 8, 16) */
    size_t n_params;    /* parameters after folding */
    const char *backend;        /* "cpu" or "cuda" */
    const char *device_name;    /* CPU or GPU name */
} elansr_model_info;

/* Image in memory: 8-bit or 16-bit samples, interleaved, rows tightly packed. */
typedef struct {
    int width, height;
    int channels;       /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
    int depth;          /* bits per sample: 8 or 16 (16-bit samples in host byte order) */
    void *data;         /* width*height*channels samples */
} elansr_image;

typedef enum {
    ELANSR_FORMAT_AUTO = 0, /* from the file name's extension (.png, .jpg, .jpeg) */
    ELANSR_FORMAT_PNG = 1,
    ELANSR_FORMAT_JPEG = 2
} elansr_format;

typedef struct elansr_context elansr_context;

/* ---- library ---- */
const char *elansr_version(void);
const char *elansr_status_string(elansr_status s);
const char *elansr_last_error(void);        /* this thread's last error message ("" if none) */
int elansr_cuda_device_count(void);         /* 0 when CUDA is not compiled in or no GPU is present */

/* ---- context ---- */
elansr_params elansr_default_params(void);
/* Loads the checkpoint at model_path (PyTorch .pth zip), builds the network on the chosen backend. */
elansr_status elansr_init(const char *model_path, const elansr_params *params, elansr_context **out);
void elansr_free(elansr_context *ctx);
elansr_status elansr_get_info(const elansr_context *ctx, elansr_model_info *info);

/* Float forward: in is n x 3 x h x w (0..255), out is n x 3 x (s*h) x (s*w), unclamped.
   Any h, w >= 1 (small inputs are mirror-extended, see README). */
elansr_status elansr_upscale_f32(elansr_context *ctx, const float *in, int n, int h, int w, float *out);

/* Image forward: upscales any elansr_image (grey, grey+alpha, RGB, RGBA, 8 or 16 bit) by the model's scale.
   *out gets the same channels and depth; free it with elansr_image_free. Alpha is upscaled bicubically. */
elansr_status elansr_upscale_image(elansr_context *ctx, const elansr_image *in, elansr_image *out);

/* ---- benchmarking ---- */
typedef struct {
    int iters;
    double median_ms, min_ms, p90_ms;   /* per forward of the whole batch */
    double out_mpix_per_s;              /* output megapixels per second at the median */
    size_t peak_bytes;                  /* peak memory of the backend for this size (device memory on a GPU) */
} elansr_bench_result;
/* Times forwards of a batch of n random h x w inputs resident on the backend's device (no host copies), after
   `warmup` untimed runs; median of `iters`. */
elansr_status elansr_benchmark(elansr_context *ctx, int n, int h, int w, int warmup, int iters,
                               elansr_bench_result *r);

/* ---- images ---- */
/* Reads PNG (8/16-bit grey, grey+alpha, RGB, RGBA, palette) or JPEG (grey, RGB, CMYK refused) by content. */
elansr_status elansr_image_load(const char *path, elansr_image *img);
/* Writes atomically (temporary file in the target folder, then rename). quality: JPEG 1..100.
   JPEG has no alpha and 8 bits only: alpha is dropped, 16-bit samples are rounded to 8 bits. */
elansr_status elansr_image_save(const char *path, const elansr_image *img, elansr_format fmt, int quality);
void elansr_image_free(elansr_image *img);
/* Largest accepted width*height of a decoded image (guards against decompression bombs). */
#define ELANSR_MAX_IMAGE_PIXELS ((size_t)1 << 28)

/* ---- metrics (ELAN.md conventions) ---- */
/* PSNR and SSIM on the Y channel (BT.601) of two 8-bit RGB images of equal size, with `border`
   pixels cropped on each side. */
elansr_status elansr_psnr_ssim_y(const uint8_t *a, const uint8_t *b, int width, int height,
                                 int border, double *psnr, double *ssim);

#ifdef __cplusplus
}
#endif
#endif
