/* test_context.c — the public API around a forward (src/elansr.c) on the real checkpoint, CPU backend:
   image conversion (grey, grey+alpha, RGB, RGBA, 8 and 16 bit), alpha upscaled bicubically, tiling against
   the untiled forward, batch equals single forwards, and argument errors. */
#include "testutil.h"

#include "elansr.h"

static elansr_context *open_ctx(int tile) {
    elansr_params p = elansr_default_params();
    p.device = ELANSR_DEVICE_CPU;
    p.tile = tile;
    elansr_context *ctx = NULL;
    if (elansr_init(t_model_path(), &p, &ctx) != ELANSR_OK) {
        fprintf(stderr, "test_context: %s\n", elansr_last_error());
        exit(1);
    }
    return ctx;
}

/* A smooth-ish random image, so the network sees something photo-like. */
static void fill_image(elansr_image *im, int w, int h, int c, int depth) {
    im->width = w;
    im->height = h;
    im->channels = c;
    im->depth = depth;
    im->data = malloc((size_t)w * h * c * (depth / 8));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                float v = 128.0f + 90.0f * sinf(0.21f * x + 0.13f * y + k) + t_uniform(-20, 20);
                v = v < 0 ? 0 : (v > 255 ? 255 : v);
                size_t i = ((size_t)y * w + x) * c + k;
                if (depth == 16) ((uint16_t *)im->data)[i] = (uint16_t)(v * 257.0f);
                else ((uint8_t *)im->data)[i] = (uint8_t)v;
            }
}

static double sample(const elansr_image *im, size_t i) {
    return im->depth == 16 ? ((const uint16_t *)im->data)[i] / 257.0 : ((const uint8_t *)im->data)[i];
}

int main(void) {
    t_seed(42);
    elansr_context *ctx = open_ctx(0);
    elansr_model_info info;
    CHECK(elansr_get_info(ctx, &info) == ELANSR_OK);
    CHECK(info.scale == 4 && info.planes == 60 && !strcmp(info.backend, "cpu"));

    /* Every channel layout and depth: right shape, colour consistent with the RGB run. */
    elansr_image rgb = {0}, out_rgb = {0};
    fill_image(&rgb, 23, 17, 3, 8);
    CHECK(elansr_upscale_image(ctx, &rgb, &out_rgb) == ELANSR_OK);
    CHECK(out_rgb.width == 92 && out_rgb.height == 68 && out_rgb.channels == 3 && out_rgb.depth == 8);
    for (int c = 1; c <= 4; c++) {
        for (int depth = 8; depth <= 16; depth += 8) {
            elansr_image in = {0}, out = {0};
            fill_image(&in, 23, 17, c, depth);
            CHECK_MSG(elansr_upscale_image(ctx, &in, &out) == ELANSR_OK, "c=%d depth=%d: %s", c, depth, elansr_last_error());
            CHECK(out.width == 92 && out.height == 68 && out.channels == c && out.depth == depth);
            if (out.data && (c == 2 || c == 4)) {
                /* alpha: bicubic of the input alpha; its mean must match the input's mean closely */
                double ma = 0, mo = 0;
                for (size_t i = 0; i < (size_t)23 * 17; i++) ma += sample(&in, i * c + c - 1);
                for (size_t i = 0; i < (size_t)92 * 68; i++) mo += sample(&out, i * c + c - 1);
                ma /= 23 * 17;
                mo /= 92 * 68;
                CHECK_MSG(fabs(ma - mo) < 2.0, "alpha mean %.2f -> %.2f", ma, mo);
            }
            elansr_image_free(&in);
            elansr_image_free(&out);
        }
    }

    /* Batch of 2 equals two single forwards; tiled equals untiled away from nothing but seams. */
    const int h = 70, w = 90, s = 4;
    const size_t isz = (size_t)3 * h * w, osz = isz * s * s;
    float *in = malloc(2 * isz * sizeof(float)), *o1 = malloc(2 * osz * sizeof(float)), *o2 = malloc(osz * sizeof(float));
    elansr_image src = {0};
    fill_image(&src, w, h, 3, 8);
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < (size_t)h * w; i++)
            for (int k = 0; k < 3; k++)
                in[b * isz + k * (size_t)h * w + i] = ((uint8_t *)src.data)[i * 3 + k] + (b ? t_uniform(-3, 3) : 0.0f);
    CHECK(elansr_upscale_f32(ctx, in, 2, h, w, o1) == ELANSR_OK);
    CHECK(elansr_upscale_f32(ctx, in + isz, 1, h, w, o2) == ELANSR_OK);
    double d = t_max_abs_diff(o1 + osz, o2, osz);
    printf("  batch vs single: max|diff| %.3e\n", d);
    CHECK(d <= 1e-4);
    elansr_context *tiled = open_ctx(32);
    CHECK(elansr_upscale_f32(tiled, in, 1, h, w, o2) == ELANSR_OK);
    double mean = 0;
    d = 0;
    for (size_t i = 0; i < osz; i++) {
        double e = fabs((double)o1[i] - o2[i]);
        mean += e;
        if (e > d) d = e;
    }
    mean /= (double)osz;
    printf("  tiled (32) vs whole: max|diff| %.3f, mean|diff| %.4f (0..255)\n", d, mean);
    CHECK(mean < 1.0 && d < 64.0);
    elansr_free(tiled);

    /* Argument errors. */
    CHECK(elansr_upscale_f32(ctx, in, 0, h, w, o1) == ELANSR_ERR_ARG);
    CHECK(elansr_upscale_f32(ctx, in, 1, 0, w, o1) == ELANSR_ERR_ARG);
    CHECK(elansr_upscale_f32(ctx, NULL, 1, h, w, o1) == ELANSR_ERR_ARG);
    CHECK(elansr_upscale_f32(ctx, in, 1, 1 << 20, 4, o1) == ELANSR_ERR_NOMEM);
    CHECK(strlen(elansr_last_error()) > 0);
    elansr_params p = elansr_default_params();
    p.device = ELANSR_DEVICE_CPU;
    p.precision = ELANSR_PRECISION_FP16;
    elansr_context *bad = NULL;
    CHECK(elansr_init(t_model_path(), &p, &bad) == ELANSR_ERR_UNSUPPORTED && bad == NULL);
    p.precision = ELANSR_PRECISION_DEFAULT;
    p.tile = -1;
    CHECK(elansr_init(t_model_path(), &p, &bad) == ELANSR_ERR_ARG && bad == NULL);
    p.tile = 0;
    CHECK(elansr_init("/nonexistent/model.pth", &p, &bad) == ELANSR_ERR_IO && bad == NULL);
    CHECK(strstr(elansr_last_error(), "/nonexistent/model.pth") != NULL);

    free(in);
    free(o1);
    free(o2);
    elansr_image_free(&src);
    elansr_image_free(&rgb);
    elansr_image_free(&out_rgb);
    elansr_free(ctx);
    return test_finish("test_context");
}
