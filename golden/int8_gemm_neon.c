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
#define COLS 4 /* columns of B per vector */
#define GROUP 4 /* K rows per column one instruction sums */
#include "int8_neon.h"

int nitihw_int8_supported(void) {
    return arm_has(AT_HWCAP, HWCAP_ASIMDDP, "hw.optional.arm.FEAT_DotProd");
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
        int32_t tile[MR][NV * COLS] __attribute__((aligned(16)));                            \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                vst1q_s32(tile[r] + COLS * v, acc[r][v]);                                    \
        drain(MR, NV * COLS, &tile[0][0], m0, m_n, n0, n_n, c, scm, scn, rg);                \
    }

MICRO(16, 1)
MICRO(12, 2)
MICRO(8, 3)
MICRO(4, 4)

/* the microkernel of each panel width, for int8_neon_gemm.h's driver */
static const micro_t MICROS[4] = {micro_16_1, micro_12_2, micro_8_3, micro_4_4};

#include "int8_neon_gemm.h"
#include "int8_conv_error.h"
