/* The golden model's int8 GEMM on ARM64 with the dot-product extension (ARMv8.2 dotprod:
 * Apple M-series, Graviton 2 and later, Cortex-A76 and later): C = A @ B for int8 A (M x K)
 * and B (K x N), int32 results. The same interface as int8_gemm.c (the AVX-512 VNNI kernel).
 *
 * sdot multiplies signed bytes by signed bytes and adds each group of four products into one
 * of 4 int32 lanes: 16 multiply-adds an instruction, exact for every int8 pair (no offset, so
 * no correction: corr is zeros). Its indexed form takes the four bytes of one lane of a
 * second register, so a 16-byte load of A feeds four rows without broadcasts.
 *
 * The layout is int8_gemm.c's with 4-column vectors: B is packed once into panels of 4*NV
 * columns, four K rows interleaved per 16-byte vector ([panel][K/4][NV][4 columns][4 rows]);
 * each block of MR rows of A is packed ([K/4][MR][4 bytes]) and multiplied by every panel by
 * a microkernel that holds its MR x NV accumulators in registers (32 vector registers: MR * NV
 * accumulators, NV B vectors, MR/4 A vectors). Padding (K to a multiple of 4, N to whole
 * panels, M to whole row blocks) is zeros and never stored. Every sum is exact int32
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
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define LANES 4

int nitihw_int8_supported(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int64_t has = 0;
    size_t size = sizeof(has);
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &size, NULL, 0) == 0 && has;
#else
    return 0;
#endif
}

/* rows per A block for NV vectors of 4 columns (a multiple of 4: one A vector feeds four) */
static int rows_for(int nv) {
    switch (nv) {
    case 1: return 16;
    case 2: return 12;
    case 3: return 8;
    default: return 4;
    }
}

int nitihw_int8_rows(int nv) { return nv >= 1 && nv <= 4 ? rows_for(nv) : 0; }

/* B (K x N, element strides sbk, sbn) into panels of 4*nv columns; corr is all zeros here */
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr) {
    const int64_t k4 = (k_n + 3) / 4, nr = LANES * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++) {
        const int64_t n0 = p * nr, width = n_n - n0 < nr ? n_n - n0 : nr;
        int8_t *dst = out + p * k4 * nr * 4;
        for (int64_t g = 0; g < k4; g++)
            for (int64_t j = 0; j < nr; j++)
                for (int q = 0; q < 4; q++) {
                    const int64_t k = 4 * g + q;
                    dst[(g * nr + j) * 4 + q] =
                        j < width && k < k_n ? b[k * sbk + (n0 + j) * sbn] : 0;
                }
    }
    memset(corr, 0, sizeof(int32_t) * panels * nr);
}

/* MR rows of A from row m0 (rows past M are zero), as [K/4][MR][4 bytes] */
static void pack_a(int64_t m0, int64_t m_n, int64_t k_n, int mr, const int8_t *a, int64_t sam,
                   int64_t sak, int8_t *out) {
    const int64_t k4 = (k_n + 3) / 4;
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        for (int64_t g = 0; g < k4; g++)
            for (int q = 0; q < 4; q++) {
                const int64_t k = 4 * g + q;
                out[(g * mr + r) * 4 + q] = m < m_n && k < k_n ? a[m * sam + k * sak] : 0;
            }
    }
}

#include "int8_drain_neon.h"

#define MICRO(MR, NV)                                                                          \
    static void micro_##MR##_##NV(int64_t k4, const int8_t *ap, const int8_t *bp, int64_t m0, \
                                  int64_t m_n, int64_t n0, int64_t n_n, int32_t *c,          \
                                  int64_t scm, int64_t scn, range_t *rg) {                   \
        int32x4_t acc[MR][NV];                                                                \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = vdupq_n_s32(0);  \
        for (int64_t g = 0; g < k4; g++) {                                                    \
            int8x16_t bv[NV];                                                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                bv[v] = vld1q_s8(bp + (g * NV + v) * 16);                                     \
            _Pragma("GCC unroll 4") for (int q = 0; q < MR / 4; q++) {                        \
                const int8x16_t av = vld1q_s8(ap + (g * MR + 4 * q) * 4);                     \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                        \
                    acc[4 * q][v] = vdotq_laneq_s32(acc[4 * q][v], bv[v], av, 0);            \
                    acc[4 * q + 1][v] = vdotq_laneq_s32(acc[4 * q + 1][v], bv[v], av, 1);    \
                    acc[4 * q + 2][v] = vdotq_laneq_s32(acc[4 * q + 2][v], bv[v], av, 2);    \
                    acc[4 * q + 3][v] = vdotq_laneq_s32(acc[4 * q + 3][v], bv[v], av, 3);    \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        int32_t tile[MR][NV * LANES] __attribute__((aligned(16)));                            \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                vst1q_s32(tile[r] + LANES * v, acc[r][v]);                                    \
        drain(MR, NV * LANES, &tile[0][0], m0, m_n, n0, n_n, c, scm, scn, rg);                \
    }

MICRO(16, 1)
MICRO(12, 2)
MICRO(8, 3)
MICRO(4, 4)

/* C (M x N, element strides scm, scn) = A (M x K, strides sam, sak) @ packed B. Returns 0,
   or -1 when no memory could be had for the A block; minmax gets the result's min and max
   (unchanged when M or N is 0). corr is not used (see nitihw_int8_pack_b). */
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax) {
    (void)corr;
    const int mr = rows_for(nv);
    const int64_t k4 = (k_n + 3) / 4, nr = LANES * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    if (m_n <= 0 || n_n <= 0) return 0;
    int8_t *ap = (int8_t *)malloc(k4 * mr * 4 + 16);
    if (ap == NULL) return -1;
    range_t rg = {vdupq_n_s32(INT32_MAX), vdupq_n_s32(INT32_MIN), INT32_MAX, INT32_MIN};
    for (int64_t m0 = 0; m0 < m_n; m0 += mr) {
        pack_a(m0, m_n, k_n, mr, a, sam, sak, ap);
        for (int64_t p = 0; p < panels; p++) {
            const int8_t *b = bp + p * k4 * nr * 4;
            switch (nv) {
            case 1: micro_16_1(k4, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            case 2: micro_12_2(k4, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            case 3: micro_8_3(k4, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            default: micro_4_4(k4, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
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
