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
#define COLS 2 /* columns of B per vector */
#define GROUP 8 /* K rows per column one instruction sums */
#include "int8_neon.h"

int nitihw_int8_supported(void) {
    return arm_has(AT_HWCAP2, HWCAP2_I8MM, "hw.optional.arm.FEAT_I8MM");
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

/* the microkernel of each panel width, for int8_neon_gemm.h's driver */
static const micro_t MICROS[4] = {micro_16_1, micro_12_2, micro_8_3, micro_8_4};

#include "int8_neon_gemm.h"
#include "int8_conv_error.h"
