/* The GEMM driver of the ARM64 int8 kernels (after int8_neon.h, rows_for and MICROS):
 * C (M x N, element strides scm, scn) = A (M x K, strides sam, sak) @ packed B, each block of
 * MR rows of A packed once and multiplied by every panel. Returns 0, or -1 when no memory could
 * be had for the A block; minmax gets the result's min and max (unchanged when M or N is 0).
 * corr is not used (see nitihw_int8_pack_b). */
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax) {
    (void)corr;
    const int mr = rows_for(nv);
    const int64_t kg = (k_n + GROUP - 1) / GROUP, nr = COLS * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    if (m_n <= 0 || n_n <= 0) return 0;
    int8_t *ap = (int8_t *)malloc(kg * mr * GROUP + 16);
    if (ap == NULL) return -1;
    range_t rg = {vdupq_n_s32(INT32_MAX), vdupq_n_s32(INT32_MIN), INT32_MAX, INT32_MIN};
    const micro_t micro = MICROS[nv - 1];
    for (int64_t m0 = 0; m0 < m_n; m0 += mr) {
        pack_a(m0, m_n, k_n, mr, a, sam, sak, ap);
        for (int64_t p = 0; p < panels; p++)
            micro(kg, ap, bp + p * kg * nr * GROUP, m0, m_n, p * nr, n_n, c, scm, scn, &rg);
    }
    free(ap);
    const int32_t vlo = vminvq_s32(rg.vlo), vhi = vmaxvq_s32(rg.vhi);
    minmax[0] = vlo < rg.lo ? vlo : rg.lo;
    minmax[1] = vhi > rg.hi ? vhi : rg.hi;
    return 0;
}
