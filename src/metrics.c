/* metrics.c — PSNR and SSIM as ELAN.md (and the SR literature since EDSR) define them: on the BT.601 luma of
   8-bit RGB, unrounded, with `border` pixels cropped on each side; SSIM with an 11x11 Gaussian (sigma 1.5)
   over the valid region only, averaged over its map. Computed in double so the 4th decimal is ours. */
#include "common.h"

#include <math.h>
#include <stdlib.h>

static double luma(const uint8_t *p) { return 16.0 + (65.481 * p[0] + 128.553 * p[1] + 24.966 * p[2]) / 255.0; }

elansr_status elansr_psnr_ssim_y(const uint8_t *a, const uint8_t *b, int width, int height, int border,
                                 double *psnr, double *ssim) {
    if (!a || !b || !psnr || !ssim || width < 1 || height < 1 || border < 0)
        return elansr_fail(ELANSR_ERR_ARG, "elansr_psnr_ssim_y: invalid argument");
    const int w = width - 2 * border, h = height - 2 * border;
    if (w < 11 || h < 11)
        return elansr_fail(ELANSR_ERR_ARG, "image %dx%d is too small for SSIM after cropping %d pixels", width, height, border);
    double *ya = elansr_malloc_array((size_t)w * h * 2, sizeof(double));
    if (!ya) return elansr_fail(ELANSR_ERR_NOMEM, "elansr_psnr_ssim_y: out of memory");
    double *yb = ya + (size_t)w * h;
    double se = 0.0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t src = ((size_t)(y + border) * width + x + border) * 3;
            double va = luma(a + src), vb = luma(b + src);
            ya[(size_t)y * w + x] = va;
            yb[(size_t)y * w + x] = vb;
            se += (va - vb) * (va - vb);
        }
    double mse = se / ((double)w * h);
    *psnr = mse == 0.0 ? INFINITY : 10.0 * log10(255.0 * 255.0 / mse);

    double g[11], gs = 0.0;
    for (int i = 0; i < 11; i++) {
        g[i] = exp(-((i - 5) * (i - 5)) / (2.0 * 1.5 * 1.5));
        gs += g[i];
    }
    for (int i = 0; i < 11; i++) g[i] /= gs;
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    double total = 0.0;
    const int vh = h - 10, vw = w - 10;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int y = 0; y < vh; y++) {
        for (int x = 0; x < vw; x++) {
            double ma = 0, mb = 0, saa = 0, sbb = 0, sab = 0;
            for (int i = 0; i < 11; i++) {
                for (int j = 0; j < 11; j++) {
                    double wgt = g[i] * g[j];
                    double pa = ya[(size_t)(y + i) * w + x + j], pb = yb[(size_t)(y + i) * w + x + j];
                    ma += wgt * pa;
                    mb += wgt * pb;
                    saa += wgt * pa * pa;
                    sbb += wgt * pb * pb;
                    sab += wgt * pa * pb;
                }
            }
            double va = saa - ma * ma, vb = sbb - mb * mb, cov = sab - ma * mb;
            total += ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
    }
    *ssim = total / ((double)vh * vw);
    free(ya);
    return ELANSR_OK;
}
