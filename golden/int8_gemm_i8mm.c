/* The golden model's int8 GEMM on ARM64 with the int8 matrix-multiply extension (i8mm:
 * Apple M2 and later, Graviton 3 and later, Cortex-A510/A710/X2 and later): C = A @ B for int8
 * A (M x K) and B (K x N), int32 results. The same interface as int8_gemm.c.
 *
 * smmla multiplies a 2 x 8 block of A by an 8 x 2 block of B, signed bytes by signed bytes,
 * into a 2 x 2 block of int32 sums: 32 multiply-adds an instruction, twice sdot's, exact for
 * every int8 pair (no offset: corr is zeros).
 *
 * Layout: B is packed once into panels of 2*NV columns, eight K rows at a time, two columns per
 * 16-byte vector ([panel][K/8][NV][2 columns][8 rows]); each block of MR rows of A is packed
 * two rows per vector ([K/8][MR/2][2 rows][8 bytes]) and multiplied by every panel by a
 * microkernel that holds its (MR/2) x NV blocks of 2 x 2 sums in registers (32 vector
 * registers: accumulators, MR/2 A vectors, NV B vectors). Padding (K to a multiple of 8, N to
 * whole panels, M to whole row blocks) is zeros and never stored. Every sum is exact int32
 * arithmetic; the caller keeps K * 128 * 128 < 2^31 (golden/int8_gemm.py).
 * Nothing here defines a rule: tests/test_int8_gemm.py compares it with NumPy's int64 matmul
 * (under qemu-aarch64 on x86 machines, tests/int8_gemm_check.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define COLS 2 /* columns of B per vector */

int nitihw_int8_supported(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#elif defined(__APPLE__)
    int64_t has = 0;
    size_t size = sizeof(has);
    return sysctlbyname("hw.optional.arm.FEAT_I8MM", &has, &size, NULL, 0) == 0 && has;
#else
    return 0;
#endif
}

/* rows per A block for NV vectors of 2 columns (even: one A vector holds two rows) */
static int rows_for(int nv) {
    switch (nv) {
    case 1: return 16;
    case 2: return 12;
    default: return 8;
    }
}

int nitihw_int8_rows(int nv) { return nv >= 1 && nv <= 4 ? rows_for(nv) : 0; }

/* B (K x N, element strides sbk, sbn) into panels of 2*nv columns; corr is all zeros here */
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr) {
    const int64_t k8 = (k_n + 7) / 8, nr = COLS * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++) {
        const int64_t n0 = p * nr, width = n_n - n0 < nr ? n_n - n0 : nr;
        int8_t *dst = out + p * k8 * nr * 8;
        for (int64_t g = 0; g < k8; g++)
            for (int64_t j = 0; j < nr; j++)
                for (int q = 0; q < 8; q++) {
                    const int64_t k = 8 * g + q;
                    dst[(g * nr + j) * 8 + q] =
                        j < width && k < k_n ? b[k * sbk + (n0 + j) * sbn] : 0;
                }
    }
    memset(corr, 0, sizeof(int32_t) * panels * nr);
}

/* MR rows of A from row m0 (rows past M are zero), as [K/8][MR][8 bytes] */
static void pack_a(int64_t m0, int64_t m_n, int64_t k_n, int mr, const int8_t *a, int64_t sam,
                   int64_t sak, int8_t *out) {
    const int64_t k8 = (k_n + 7) / 8;
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        for (int64_t g = 0; g < k8; g++)
            for (int q = 0; q < 8; q++) {
                const int64_t k = 8 * g + q;
                out[(g * mr + r) * 8 + q] = m < m_n && k < k_n ? a[m * sam + k * sak] : 0;
            }
    }
}

#include "int8_drain_neon.h"

/* acc[i][v] holds rows 2i, 2i+1 by columns 2v, 2v+1 as (r0c0, r0c1, r1c0, r1c1) */
#define MICRO(MR, NV)                                                                          \
    static void micro_##MR##_##NV(int64_t k8, const int8_t *ap, const int8_t *bp, int64_t m0, \
                                  int64_t m_n, int64_t n0, int64_t n_n, int32_t *c,          \
                                  int64_t scm, int64_t scn, range_t *rg) {                   \
        int32x4_t acc[MR / 2][NV];                                                            \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR / 2; i++)                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = vdupq_n_s32(0);  \
        for (int64_t g = 0; g < k8; g++) {                                                    \
            int8x16_t bv[NV];                                                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                bv[v] = vld1q_s8(bp + (g * NV + v) * 16);                                     \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR / 2; i++) {                        \
                const int8x16_t av = vld1q_s8(ap + (g * MR + 2 * i) * 8);                     \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                          \
                    acc[i][v] = vmmlaq_s32(acc[i][v], av, bv[v]);                            \
            }                                                                                 \
        }                                                                                     \
        int32_t tile[MR][NV * COLS] __attribute__((aligned(16)));                             \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR / 2; i++)                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                            \
                vst1_s32(tile[2 * i] + COLS * v, vget_low_s32(acc[i][v]));                    \
                vst1_s32(tile[2 * i + 1] + COLS * v, vget_high_s32(acc[i][v]));               \
            }                                                                                 \
        drain(MR, NV * COLS, &tile[0][0], m0, m_n, n0, n_n, c, scm, scn, rg);                 \
    }

MICRO(16, 1)
MICRO(12, 2)
MICRO(8, 3)
MICRO(8, 4)

/* C (M x N, element strides scm, scn) = A (M x K, strides sam, sak) @ packed B. Returns 0,
   or -1 when no memory could be had for the A block; minmax gets the result's min and max
   (unchanged when M or N is 0). corr is not used (see nitihw_int8_pack_b). */
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax) {
    (void)corr;
    const int mr = rows_for(nv);
    const int64_t k8 = (k_n + 7) / 8, nr = COLS * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    if (m_n <= 0 || n_n <= 0) return 0;
    int8_t *ap = (int8_t *)malloc(k8 * mr * 8 + 16);
    if (ap == NULL) return -1;
    range_t rg = {vdupq_n_s32(INT32_MAX), vdupq_n_s32(INT32_MIN), INT32_MAX, INT32_MIN};
    for (int64_t m0 = 0; m0 < m_n; m0 += mr) {
        pack_a(m0, m_n, k_n, mr, a, sam, sak, ap);
        for (int64_t p = 0; p < panels; p++) {
            const int8_t *b = bp + p * k8 * nr * 8;
            switch (nv) {
            case 1: micro_16_1(k8, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            case 2: micro_12_2(k8, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            case 3: micro_8_3(k8, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            default: micro_8_4(k8, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            }
        }
    }
    free(ap);
    const int32_t vlo = vminvq_s32(rg.vlo), vhi = vmaxvq_s32(rg.vhi);
    minmax[0] = vlo < rg.lo ? vlo : rg.lo;
    minmax[1] = vhi > rg.hi ? vhi : rg.hi;
    return 0;
}

#include "int8_conv_error.h"
