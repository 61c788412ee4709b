/* The drain of the ARM64 int8 kernels (int8_gemm_neon.c, int8_gemm_i8mm.c include it): a
 * microkernel's tile of sums stored into C with the running range of what was stored. */
/* the running range: vectors for whole rows of 4, scalars for the rest */
typedef struct {
    int32x4_t vlo, vhi;
    int32_t lo, hi;
} range_t;

/* a tile of mr rows of `width` sums, stored where it lies inside C, with the range of what
   was stored */
static void drain(int mr, int width, const int32_t *tile, int64_t m0, int64_t m_n, int64_t n0,
                  int64_t n_n, int32_t *c, int64_t scm, int64_t scn, range_t *rg) {
    const int64_t cols = n_n - n0 < width ? n_n - n0 : width;
    for (int r = 0; r < mr && m0 + r < m_n; r++) {
        const int32_t *t = tile + r * width;
        int32_t *dst = c + (m0 + r) * scm + n0 * scn;
        int64_t j = 0;
        if (scn == 1)
            for (; j + 4 <= cols; j += 4) {
                const int32x4_t v = vld1q_s32(t + j);
                vst1q_s32(dst + j, v);
                rg->vlo = vminq_s32(rg->vlo, v);
                rg->vhi = vmaxq_s32(rg->vhi, v);
            }
        for (; j < cols; j++) {
            const int32_t v = t[j];
            rg->lo = v < rg->lo ? v : rg->lo;
            rg->hi = v > rg->hi ? v : rg->hi;
            dst[j * scn] = v;
        }
    }
}

