/* lfe.c — local feature extraction: x += c1(relu(c0(x))), c0 and c1 ShiftConvs (ELAN.md "LFE").

   The one-pixel shift of each channel is not a separate pass: it is the tap of that channel's packed row
   (cpu_pack_tile reads the neighbouring pixel, or zero past the edge), so a ShiftConv costs what a 1x1 conv
   does. The ReLU is applied when c0's tile is stored and the residual add when c1's is, so the block makes
   exactly two passes over the image. The hidden activation must be complete before c1 runs, because c1's
   shifts read the hidden pixels of the rows above and below. */
#include "cpu_ops.h"

void cpu_lfe(const cpu_conv *c0, const cpu_conv *c1, float *x, float *hid, size_t ps, int H, int W, float *scratch,
             size_t sstride, int nt) {
    cpu_conv_apply(c0, x, ps, hid, ps, H, W, CPU_RELU, scratch, sstride, nt);
    cpu_conv_apply(c1, hid, ps, x, ps, H, W, CPU_ADD, scratch, sstride, nt);
}
