/* elansr.c — the context: loads a checkpoint into the backend-neutral model, picks a backend, and does the
   backend-neutral work around a forward: argument checks, tiling of huge inputs, and conversion between
   elansr_image (8/16-bit, grey/RGB, with or without alpha) and the network's float RGB tensors. */
#include "backend.h"
#include "common.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct elansr_context {
    elan_model model;
    elan_backend *backend;
    elansr_params params;
};

/* Overlap given to each tile on every side: one 16x16 attention window of context. Tiles start on multiples
   of 16 so their windows coincide with the whole image's; only context beyond the overlap differs. */
#define TILE_OVERLAP 16
/* Largest input side we accept: the padded size and the x4 output must stay well inside int arithmetic. */
#define MAX_SIDE (1 << 16)

const char *elansr_version(void) { return ELANSR_VERSION_STRING; }

const char *elansr_status_string(elansr_status s) {
    switch (s) {
    case ELANSR_OK: return "ok";
    case ELANSR_ERR_ARG: return "invalid argument";
    case ELANSR_ERR_IO: return "i/o error";
    case ELANSR_ERR_FORMAT: return "invalid file format";
    case ELANSR_ERR_CHECKPOINT: return "unsupported checkpoint";
    case ELANSR_ERR_NOMEM: return "out of memory";
    case ELANSR_ERR_DEVICE: return "device error";
    case ELANSR_ERR_UNSUPPORTED: return "not supported by this build";
    }
    return "unknown status";
}

int elansr_cuda_device_count(void) { return elan_cuda_device_count(); }

elansr_params elansr_default_params(void) {
    elansr_params p;
    memset(&p, 0, sizeof p);
    p.device = ELANSR_DEVICE_AUTO;
    p.n_threads = 0;
    p.precision = ELANSR_PRECISION_DEFAULT;
    p.tile = 0;
    p.verbose = 0;
    return p;
}

elansr_status elansr_init(const char *model_path, const elansr_params *params, elansr_context **out) {
    if (!out) return elansr_fail(ELANSR_ERR_ARG, "elansr_init: out is NULL");
    *out = NULL;
    if (!model_path || !*model_path) return elansr_fail(ELANSR_ERR_ARG, "elansr_init: no model path given");
    elansr_params p = params ? *params : elansr_default_params();
    if (p.device < ELANSR_DEVICE_AUTO) return elansr_fail(ELANSR_ERR_ARG, "invalid device %d", p.device);
    if (p.tile < 0) return elansr_fail(ELANSR_ERR_ARG, "invalid tile size %d", p.tile);
    if (p.n_threads < 0) return elansr_fail(ELANSR_ERR_ARG, "invalid thread count %d", p.n_threads);
    if (p.precision < ELANSR_PRECISION_DEFAULT || p.precision > ELANSR_PRECISION_BF16)
        return elansr_fail(ELANSR_ERR_ARG, "invalid precision %d", (int)p.precision);

    elansr_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return elansr_fail(ELANSR_ERR_NOMEM, "elansr_init: out of memory");
    ctx->params = p;
    elansr_status st = elan_model_load(model_path, &ctx->model);
    if (st != ELANSR_OK) {
        free(ctx);
        return st;
    }
    int device = p.device;
    if (device == ELANSR_DEVICE_AUTO) device = elan_cuda_device_count() > 0 ? 0 : ELANSR_DEVICE_CPU;
    ctx->params.device = device;
    if (device == ELANSR_DEVICE_CPU) {
        if (p.precision != ELANSR_PRECISION_DEFAULT && p.precision != ELANSR_PRECISION_FP32) {
            st = elansr_fail(ELANSR_ERR_UNSUPPORTED, "the CPU backend computes in fp32 only");
        } else {
            st = elan_cpu_backend_create(&ctx->model, &ctx->params, &ctx->backend);
        }
    } else {
        st = elan_cuda_backend_create(&ctx->model, &ctx->params, &ctx->backend);
    }
    if (st != ELANSR_OK) {
        elan_model_free(&ctx->model);
        free(ctx);
        return st;
    }
    *out = ctx;
    return ELANSR_OK;
}

void elansr_free(elansr_context *ctx) {
    if (!ctx) return;
    if (ctx->backend) ctx->backend->destroy(ctx->backend);
    elan_model_free(&ctx->model);
    free(ctx);
}

elansr_status elansr_get_info(const elansr_context *ctx, elansr_model_info *info) {
    if (!ctx || !info) return elansr_fail(ELANSR_ERR_ARG, "elansr_get_info: NULL argument");
    memset(info, 0, sizeof *info);
    info->scale = ctx->model.scale;
    info->planes = ctx->model.planes;
    info->n_blocks = ctx->model.n_blocks;
    info->n_share = ctx->model.n_share;
    memcpy(info->windows, ctx->model.windows, sizeof info->windows);
    info->n_params = ctx->model.n_params;
    info->backend = ctx->backend->name;
    info->device_name = ctx->backend->device_name;
    return ELANSR_OK;
}

static elansr_status check_size(const elansr_context *ctx, int n, int h, int w) {
    if (n < 1 || h < 1 || w < 1) return elansr_fail(ELANSR_ERR_ARG, "invalid input size %dx%d (batch %d)", w, h, n);
    if (h > MAX_SIDE || w > MAX_SIDE)
        return elansr_fail(ELANSR_ERR_NOMEM, "input %dx%d is larger than elansr accepts (%d per side)", w, h, MAX_SIDE);
    size_t px, tot;
    int s = ctx->model.scale;
    if (!elansr_mul_size((size_t)h * s, (size_t)w * s, &px) || !elansr_mul_size(px, (size_t)n * 3, &tot) ||
        tot > SIZE_MAX / sizeof(float))
        return elansr_fail(ELANSR_ERR_NOMEM, "input %dx%d (batch %d) is too large", w, h, n);
    return ELANSR_OK;
}

/* Runs the forward in tiles of T x T LR pixels (T a multiple of 16), each with TILE_OVERLAP pixels of
   context on every side that exists, and stitches the tiles' centres. */
static elansr_status forward_tiled(elansr_context *ctx, const float *in, int n, int h, int w, float *out) {
    const int s = ctx->model.scale, T = elan_round_up(ctx->params.tile, 16), P = TILE_OVERLAP;
    const int maxh = T + 2 * P < h ? T + 2 * P : h, maxw = T + 2 * P < w ? T + 2 * P : w;
    float *tin = elansr_malloc_array((size_t)n * 3 * maxh * maxw, sizeof(float));
    float *tout = elansr_malloc_array((size_t)n * 3 * maxh * maxw * s * s, sizeof(float));
    if (!tin || !tout) {
        free(tin);
        free(tout);
        return elansr_fail(ELANSR_ERR_NOMEM, "cannot allocate tile buffers for tile %d", T);
    }
    elansr_status st = ELANSR_OK;
    for (int y0 = 0; y0 < h && st == ELANSR_OK; y0 += T) {
        for (int x0 = 0; x0 < w && st == ELANSR_OK; x0 += T) {
            const int y1 = y0 + T < h ? y0 + T : h, x1 = x0 + T < w ? x0 + T : w;
            const int ty0 = y0 - P > 0 ? y0 - P : 0, tx0 = x0 - P > 0 ? x0 - P : 0;
            const int ty1 = y1 + P < h ? y1 + P : h, tx1 = x1 + P < w ? x1 + P : w;
            const int th = ty1 - ty0, tw = tx1 - tx0;
            for (int b = 0; b < n * 3; b++)
                for (int y = 0; y < th; y++)
                    memcpy(tin + ((size_t)b * th + y) * tw, in + ((size_t)b * h + ty0 + y) * w + tx0,
                           (size_t)tw * sizeof(float));
            st = ctx->backend->forward(ctx->backend, tin, n, th, tw, tout);
            if (st != ELANSR_OK) break;
            const size_t ow = (size_t)w * s, oh = (size_t)h * s, tow = (size_t)tw * s, toh = (size_t)th * s;
            for (int b = 0; b < n * 3; b++)
                for (int y = y0 * s; y < y1 * s; y++)
                    memcpy(out + ((size_t)b * oh + y) * ow + (size_t)x0 * s,
                           tout + ((size_t)b * toh + (y - ty0 * s)) * tow + (size_t)(x0 - tx0) * s,
                           (size_t)(x1 - x0) * s * sizeof(float));
        }
    }
    free(tin);
    free(tout);
    return st;
}

elansr_status elansr_upscale_f32(elansr_context *ctx, const float *in, int n, int h, int w, float *out) {
    if (!ctx || !in || !out) return elansr_fail(ELANSR_ERR_ARG, "elansr_upscale_f32: NULL argument");
    elansr_status st = check_size(ctx, n, h, w);
    if (st != ELANSR_OK) return st;
    if (ctx->params.tile > 0 && (h > elan_round_up(ctx->params.tile, 16) || w > elan_round_up(ctx->params.tile, 16)))
        return forward_tiled(ctx, in, n, h, w, out);
    return ctx->backend->forward(ctx->backend, in, n, h, w, out);
}

/* Keys' cubic convolution kernel (a = -0.5), the usual "bicubic". */
static float cubic_weight(float t) {
    t = fabsf(t);
    if (t <= 1.0f) return (1.5f * t - 2.5f) * t * t + 1.0f;
    if (t < 2.0f) return ((-0.5f * t + 2.5f) * t - 4.0f) * t + 2.0f;
    return 0.0f;
}

/* Bicubic upscaling by an integer factor of one float plane, pixel centres aligned (half-pixel), edges
   replicated. Used for the alpha channel, which the network was not trained on. */
static void bicubic_upscale(const float *src, int h, int w, int s, float *dst) {
    const int oh = h * s, ow = w * s;
    float wt[16][4]; /* weights per output phase (s <= 16) */
    for (int ph = 0; ph < s; ph++) {
        float f = (ph + 0.5f) / s - 0.5f;
        float fl = floorf(f), t = f - fl;
        for (int k = 0; k < 4; k++) wt[ph][k] = cubic_weight(t - (float)(k - 1));
    }
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < oh; oy++) {
        const int py = oy % s;
        const int by = (int)floorf((py + 0.5f) / s - 0.5f) + oy / s;
        for (int ox = 0; ox < ow; ox++) {
            const int px = ox % s;
            const int bx = (int)floorf((px + 0.5f) / s - 0.5f) + ox / s;
            float acc = 0.0f;
            for (int ky = 0; ky < 4; ky++) {
                int yy = by + ky - 1;
                yy = yy < 0 ? 0 : (yy >= h ? h - 1 : yy);
                float row = 0.0f;
                for (int kx = 0; kx < 4; kx++) {
                    int xx = bx + kx - 1;
                    xx = xx < 0 ? 0 : (xx >= w ? w - 1 : xx);
                    row += wt[px][kx] * src[(size_t)yy * w + xx];
                }
                acc += wt[py][ky] * row;
            }
            dst[(size_t)oy * ow + ox] = acc;
        }
    }
}

static float sample_at(const elansr_image *im, size_t i) {
    return im->depth == 16 ? ((const uint16_t *)im->data)[i] / 257.0f : ((const uint8_t *)im->data)[i];
}

static void store_sample(elansr_image *im, size_t i, float v) {
    if (im->depth == 16) {
        float q = nearbyintf(v * 257.0f);
        ((uint16_t *)im->data)[i] = (uint16_t)(q < 0.0f ? 0.0f : (q > 65535.0f ? 65535.0f : q));
    } else {
        float q = nearbyintf(v);
        ((uint8_t *)im->data)[i] = (uint8_t)(q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q));
    }
}

elansr_status elansr_upscale_image(elansr_context *ctx, const elansr_image *in, elansr_image *out) {
    if (!ctx || !in || !out || !in->data) return elansr_fail(ELANSR_ERR_ARG, "elansr_upscale_image: NULL argument");
    memset(out, 0, sizeof *out);
    if (in->channels < 1 || in->channels > 4 || (in->depth != 8 && in->depth != 16))
        return elansr_fail(ELANSR_ERR_ARG, "unsupported image layout (%d channels, %d bits)", in->channels, in->depth);
    const int h = in->height, w = in->width, s = ctx->model.scale, c = in->channels;
    elansr_status st = check_size(ctx, 1, h, w);
    if (st != ELANSR_OK) return st;
    const size_t npx = (size_t)h * w, onpx = npx * s * s;
    const int has_alpha = (c == 2 || c == 4), colour = (c >= 3);
    float *rgb = elansr_malloc_array(3 * npx, sizeof(float));
    float *sr = elansr_malloc_array(3 * onpx, sizeof(float));
    float *alpha = has_alpha ? elansr_malloc_array(npx, sizeof(float)) : NULL;
    float *alpha_up = has_alpha ? elansr_malloc_array(onpx, sizeof(float)) : NULL;
    out->data = elansr_malloc_array(onpx * c, in->depth / 8);
    if (!rgb || !sr || !out->data || (has_alpha && (!alpha || !alpha_up))) {
        st = elansr_fail(ELANSR_ERR_NOMEM, "cannot allocate buffers for a %dx%d image", w, h);
        goto done;
    }
    for (size_t i = 0; i < npx; i++) {
        for (int k = 0; k < 3; k++) rgb[k * npx + i] = sample_at(in, i * c + (colour ? k : 0));
        if (has_alpha) alpha[i] = sample_at(in, i * c + c - 1);
    }
    st = elansr_upscale_f32(ctx, rgb, 1, h, w, sr);
    if (st != ELANSR_OK) goto done;
    if (has_alpha) bicubic_upscale(alpha, h, w, s, alpha_up);
    out->width = w * s;
    out->height = h * s;
    out->channels = c;
    out->depth = in->depth;
    for (size_t i = 0; i < onpx; i++) {
        if (colour) {
            for (int k = 0; k < 3; k++) store_sample(out, i * c + k, sr[k * onpx + i]);
        } else {
            store_sample(out, i * c, (sr[i] + sr[onpx + i] + sr[2 * onpx + i]) / 3.0f);
        }
        if (has_alpha) store_sample(out, i * c + c - 1, alpha_up[i]);
    }
done:
    free(rgb);
    free(sr);
    free(alpha);
    free(alpha_up);
    if (st != ELANSR_OK) {
        free(out->data);
        memset(out, 0, sizeof *out);
    }
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

elansr_status elansr_benchmark(elansr_context *ctx, int n, int h, int w, int warmup, int iters,
                               elansr_bench_result *r) {
    if (!ctx || !r || iters < 1 || warmup < 0) return elansr_fail(ELANSR_ERR_ARG, "elansr_benchmark: invalid argument");
    elansr_status st = check_size(ctx, n, h, w);
    if (st != ELANSR_OK) return st;
    if (!ctx->backend->benchmark)
        return elansr_fail(ELANSR_ERR_UNSUPPORTED, "the %s backend has no benchmark", ctx->backend->name);
    double *t = elansr_malloc_array((size_t)iters, sizeof(double));
    if (!t) return elansr_fail(ELANSR_ERR_NOMEM, "elansr_benchmark: out of memory");
    memset(r, 0, sizeof *r);
    st = ctx->backend->benchmark(ctx->backend, n, h, w, warmup, iters, t, &r->peak_bytes);
    if (st == ELANSR_OK) {
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        r->iters = iters;
        r->min_ms = t[0];
        r->median_ms = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
        r->p90_ms = t[(size_t)((iters - 1) * 0.9)];
        double s = ctx->model.scale;
        r->out_mpix_per_s = (double)n * h * w * s * s / (r->median_ms * 1e-3) / 1e6;
    }
    free(t);
    return st;
}
