/* What the ARM64 int8 kernels share (int8_gemm_neon.c, int8_gemm_i8mm.c include it after
 * defining COLS, the columns of B one vector holds, and GROUP, the K rows one instruction sums
 * per column): the CPU check, the packing of B and A (GROUP bytes of a column or row together),
 * and the drain of a microkernel's tile into C with the running range of what was stored. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#else
#define AT_HWCAP 0
#define AT_HWCAP2 0
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif

/* whether the CPU has an extension: bit `bit` of the auxiliary vector's word `hwcap` (Linux),
   or the sysctl `apple` (macOS) */
static int arm_has(unsigned long hwcap, unsigned long bit, const char *apple) {
#if defined(__linux__)
    (void)apple;
    return (getauxval(hwcap) & bit) != 0;
#elif defined(__APPLE__)
    (void)hwcap, (void)bit;
    int64_t has = 0;
    size_t size = sizeof(has);
    return sysctlbyname(apple, &has, &size, NULL, 0) == 0 && has;
#else
    (void)hwcap, (void)bit, (void)apple;
    return 0;
#endif
}

/* B (K x N, element strides sbk, sbn) into panels of COLS*nv columns, GROUP K rows at a time
   ([panel][K/GROUP][COLS*nv columns][GROUP bytes]); corr (the VNNI kernel's offset correction)
   is all zeros here: nothing to correct */
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr) {
    const int64_t kg = (k_n + GROUP - 1) / GROUP, nr = COLS * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++) {
        const int64_t n0 = p * nr, width = n_n - n0 < nr ? n_n - n0 : nr;
        int8_t *dst = out + p * kg * nr * GROUP;
        for (int64_t g = 0; g < kg; g++)
            for (int64_t j = 0; j < nr; j++)
                for (int q = 0; q < GROUP; q++) {
                    const int64_t k = GROUP * g + q;
                    dst[(g * nr + j) * GROUP + q] =
                        j < width && k < k_n ? b[k * sbk + (n0 + j) * sbn] : 0;
                }
    }
    memset(corr, 0, sizeof(int32_t) * panels * nr);
}

/* MR rows of A from row m0 (rows past M are zero), as [K/GROUP][MR][GROUP bytes] */
static void pack_a(int64_t m0, int64_t m_n, int64_t k_n, int mr, const int8_t *a, int64_t sam,
                   int64_t sak, int8_t *out) {
    const int64_t kg = (k_n + GROUP - 1) / GROUP;
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        for (int64_t g = 0; g < kg; g++)
            for (int q = 0; q < GROUP; q++) {
                const int64_t k = GROUP * g + q;
                out[(g * mr + r) * GROUP + q] = m < m_n && k < k_n ? a[m * sam + k * sak] : 0;
            }
    }
}

/* the running range: vectors for whole rows of 4, scalars for the rest */
typedef struct {
    int32x4_t vlo, vhi;
    int32_t lo, hi;
} range_t;

/* a microkernel: the sums of a block of rows of A (packed) by a panel of B (packed) over the
   kg groups of K, drained into C */
typedef void (*micro_t)(int64_t kg, const int8_t *ap, const int8_t *bp, int64_t m0, int64_t m_n,
                        int64_t n0, int64_t n_n, int32_t *c, int64_t scm, int64_t scn,
                        range_t *rg);

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

