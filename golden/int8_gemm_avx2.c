/* The golden model's int8 GEMM on AVX2 x86 (no AVX-512): C = A @ B for int8 A (M x K) and
 * B (K x N), int32 results. The same interface as int8_gemm.c (the AVX-512 VNNI kernel).
 *
 * AVX2 has no byte dot product that is exact for every int8 pair: vpmaddubsw multiplies
 * unsigned by signed bytes and saturates its int16 pair sums (an offset A + 128 overflows
 * them, and the sign trick |a| * sign(a)b is wrong for b = -128). So both operands are
 * widened to int16 and vpmaddwd multiplies 16 pairs and adds each two into one of 8 int32
 * lanes: |a0 b0 + a1 b1| <= 2 * 128 * 128 = 2^15, exact. 16 multiply-adds an instruction,
 * as float32 FMA has, but on operands of 2 bytes instead of 4, with nothing to convert before
 * or after and the result's range taken as it is stored.
 *
 * The layout is int8_gemm.c's with pairs for groups of four: B is packed once into panels of
 * 8*NV columns, two K rows interleaved per 32-byte vector ([panel][K/2][NV][8 columns][2 rows]
 * of int16); each block of MR rows of A is packed ([K/2][MR] words of two int16) and
 * multiplied by every panel by a microkernel that holds its MR x NV accumulators in registers
 * (16 ymm: MR * NV accumulators, NV B vectors and one broadcast). Padding (K to even, N to
 * whole panels, M to whole row blocks) is zeros and never stored. Every sum is exact int32
 * arithmetic; the caller keeps K * 128 * 128 < 2^31 (golden/int8_gemm.py).
 * Nothing here defines a rule: tests/test_int8_gemm.py compares it with NumPy's int64 matmul.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#define LANES 8

int nitihw_int8_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* rows per A block for NV vectors of 8 columns: MR * NV + NV + 1 <= 16 registers */
static int rows_for(int nv) {
    switch (nv) {
    case 1: return 12;
    case 2: return 6;
    default: return 4;
    }
}

int nitihw_int8_rows(int nv) { return nv >= 1 && nv <= 3 ? rows_for(nv) : 0; }

int nitihw_int8_lanes(void) { return LANES; }

/* bytes of B (K x N) packed in panels of LANES*nv columns */
int64_t nitihw_int8_packed_bytes(int64_t k_n, int64_t n_n, int nv) {
    const int64_t nr = LANES * (int64_t)nv, panels = (n_n + nr - 1) / nr;
    return panels * ((k_n + 1) / 2) * nr * 4;
}

/* B (K x N, element strides sbk, sbn) into panels of 8*nv columns of int16 pairs; corr (the
   VNNI kernel's offset correction) is all zeros here: nothing to correct */
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr) {
    const int64_t k2 = (k_n + 1) / 2, nr = LANES * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    int16_t *dst = (int16_t *)out;
    /* columns contiguous (B the transpose of a row-major N x K array): blocks of 8 columns by
       16 K rows, each column's 16 bytes widened to 8 words of two int16, then the 8 x 8
       words transposed so that each K pair's words of the 8 columns are together */
    const int by_column = sbk == 1 && sbn != 1;
    const int64_t g8 = by_column ? k_n / 16 * 8 : 0; /* K pairs done in such blocks */
    for (int64_t p = 0; p < panels && g8; p++) {
        const int64_t n0 = p * nr, width = n_n - n0 < nr ? n_n - n0 : nr;
        for (int64_t g = 0; g < g8; g += 8) {
            for (int64_t j = 0; j + 8 <= width; j += 8) {
                __m256i r[8], t[8], u[8];
                for (int q = 0; q < 8; q++)
                    r[q] = _mm256_cvtepi8_epi16(
                        _mm_loadu_si128((const void *)(b + 2 * g + (n0 + j + q) * sbn)));
                for (int q = 0; q < 8; q += 2) {
                    t[q] = _mm256_unpacklo_epi32(r[q], r[q + 1]);
                    t[q + 1] = _mm256_unpackhi_epi32(r[q], r[q + 1]);
                }
                for (int q = 0; q < 8; q += 4) {
                    u[q] = _mm256_unpacklo_epi64(t[q], t[q + 2]);     /* pairs 0 and 4 */
                    u[q + 1] = _mm256_unpackhi_epi64(t[q], t[q + 2]); /* 1 and 5 */
                    u[q + 2] = _mm256_unpacklo_epi64(t[q + 1], t[q + 3]); /* 2 and 6 */
                    u[q + 3] = _mm256_unpackhi_epi64(t[q + 1], t[q + 3]); /* 3 and 7 */
                }
                int16_t *d = dst + (p * k2 + g) * nr * 2 + 2 * j;
                for (int q = 0; q < 4; q++) {
                    _mm256_storeu_si256((void *)(d + q * nr * 2),
                                        _mm256_permute2x128_si256(u[q], u[q + 4], 0x20));
                    _mm256_storeu_si256((void *)(d + (q + 4) * nr * 2),
                                        _mm256_permute2x128_si256(u[q], u[q + 4], 0x31));
                }
            }
        }
    }
    for (int64_t p = 0; p < panels; p++) {
        const int64_t n0 = p * nr, width = n_n - n0 < nr ? n_n - n0 : nr;
        for (int64_t g = 0; g < k2; g++) {
            const int8_t *r0 = b + 2 * g * sbk + n0 * sbn;
            const int8_t *r1 = r0 + sbk;
            const int second = 2 * g + 1 < k_n;
            int16_t *d = dst + (p * k2 + g) * nr * 2;
            int64_t j = g < g8 ? width / 8 * 8 : 0; /* the blocks above did these columns */
            if (sbn == 1 && second) {
                for (; j + 16 <= width; j += 16) { /* two rows of 16 bytes: 16 pairs */
                    const __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(r0 + j)));
                    const __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(r1 + j)));
                    const __m256i lo = _mm256_unpacklo_epi16(x0, x1), hi = _mm256_unpackhi_epi16(x0, x1);
                    _mm256_storeu_si256((void *)(d + 2 * j), _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256((void *)(d + 2 * j + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
                }
                for (; j + 8 <= width; j += 8) { /* 8 bytes of each row: 8 pairs (narrow panels) */
                    const __m128i x0 = _mm_cvtepi8_epi16(_mm_loadl_epi64((const void *)(r0 + j)));
                    const __m128i x1 = _mm_cvtepi8_epi16(_mm_loadl_epi64((const void *)(r1 + j)));
                    _mm_storeu_si128((void *)(d + 2 * j), _mm_unpacklo_epi16(x0, x1));
                    _mm_storeu_si128((void *)(d + 2 * j + 8), _mm_unpackhi_epi16(x0, x1));
                }
            }
            for (; j < nr; j++) {
                d[2 * j] = j < width ? r0[j * sbn] : 0;
                d[2 * j + 1] = j < width && second ? r1[j * sbn] : 0;
            }
        }
    }
    memset(corr, 0, sizeof(int32_t) * panels * nr);
}

/* the word of two int16 for the K pair g of a row (its odd half 0 past K) */
static inline uint32_t pair(const int8_t *row, int64_t sak, int64_t g, int64_t k_n) {
    const uint32_t lo = (uint16_t)(int16_t)row[2 * g * sak];
    return 2 * g + 1 < k_n ? lo | (uint32_t)(uint16_t)(int16_t)row[(2 * g + 1) * sak] << 16 : lo;
}

/* MR rows of A from row m0 (rows past M are zero), as [K/2][MR] words of two int16 */
static void pack_a(int64_t m0, int64_t m_n, int64_t k_n, int mr, const int8_t *a, int64_t sam,
                   int64_t sak, uint32_t *out) {
    const int64_t k2 = (k_n + 1) / 2, live = m_n - m0 < mr ? m_n - m0 : mr;
    if (sam == 1 && sak != 1) {
        /* columns contiguous (a transposed view): two K rows of MR bytes become MR words,
           written as 16 (the buffer has room; the next K pair overwrites the excess) */
        int8_t r0[16] = {0}, r1[16] = {0};
        const int whole = m0 + 16 <= m_n; /* 16 bytes of each K row are A's own elements */
        for (int64_t g = 0; g < k2; g++) {
            const int8_t *p0 = a + 2 * g * sak + m0, *p1 = p0 + sak;
            __m128i b0, b1;
            if (whole) {
                b0 = _mm_loadu_si128((const void *)p0);
                b1 = 2 * g + 1 < k_n ? _mm_loadu_si128((const void *)p1) : _mm_setzero_si128();
            } else {
                memcpy(r0, p0, live);
                if (2 * g + 1 < k_n)
                    memcpy(r1, p1, live);
                else
                    memset(r1, 0, sizeof r1);
                b0 = _mm_loadu_si128((const void *)r0);
                b1 = _mm_loadu_si128((const void *)r1);
            }
            const __m256i x0 = _mm256_cvtepi8_epi16(b0), x1 = _mm256_cvtepi8_epi16(b1);
            const __m256i lo = _mm256_unpacklo_epi16(x0, x1), hi = _mm256_unpackhi_epi16(x0, x1);
            _mm256_storeu_si256((void *)(out + g * mr), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((void *)(out + g * mr + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        return; /* rows past M (only without `whole`) are the zeros past `live` */
    }
    int r = 0;
    if (sak == 1) {
        /* rows contiguous: four rows at a time, 8 bytes of each widened to 4 words, then the
           4 x 4 words transposed so that each K pair's words of the four rows are together */
        for (; r + 4 <= live; r += 4) {
            const int8_t *row = a + (m0 + r) * sam;
            int64_t g = 0;
            for (; 2 * g + 8 <= k_n; g += 4) {
                __m128i x[4];
                for (int q = 0; q < 4; q++)
                    x[q] = _mm_cvtepi8_epi16(_mm_loadl_epi64((const void *)(row + q * sam + 2 * g)));
                const __m128i t0 = _mm_unpacklo_epi32(x[0], x[1]), t1 = _mm_unpackhi_epi32(x[0], x[1]);
                const __m128i t2 = _mm_unpacklo_epi32(x[2], x[3]), t3 = _mm_unpackhi_epi32(x[2], x[3]);
                _mm_storeu_si128((void *)(out + g * mr + r), _mm_unpacklo_epi64(t0, t2));
                _mm_storeu_si128((void *)(out + (g + 1) * mr + r), _mm_unpackhi_epi64(t0, t2));
                _mm_storeu_si128((void *)(out + (g + 2) * mr + r), _mm_unpacklo_epi64(t1, t3));
                _mm_storeu_si128((void *)(out + (g + 3) * mr + r), _mm_unpackhi_epi64(t1, t3));
            }
            for (int q = 0; q < 4; q++)
                for (int64_t h = g; h < k2; h++) out[h * mr + r + q] = pair(row + q * sam, 1, h, k_n);
        }
    }
    for (; r < mr; r++) {
        const int8_t *row = a + (m0 + r) * sam;
        for (int64_t g = 0; g < k2; g++) out[g * mr + r] = r < live ? pair(row, sak, g, k_n) : 0;
    }
}

/* the first n of the 8 lanes (n <= 8) */
static inline __m256i first_lanes(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* the running range: vectors for row stores, scalars for column stores */
typedef struct {
    __m256i vlo, vhi;
    int32_t lo, hi;
} range_t;

/* a tile of MR x NV*8 sums, stored where it lies inside C, with the range of what was stored */
static void drain(int mr, int nv, const int32_t *tile, int64_t m0, int64_t m_n, int64_t n0,
                  int64_t n_n, int32_t *c, int64_t scm, int64_t scn, range_t *rg) {
    const int width = nv * LANES;
    const int64_t cols = n_n - n0 < width ? n_n - n0 : width;
    for (int r = 0; r < mr && m0 + r < m_n; r++) {
        const int32_t *t = tile + r * width;
        int32_t *dst = c + (m0 + r) * scm + n0 * scn;
        if (scn == 1) {
            for (int64_t j = 0; j < cols; j += LANES) {
                const __m256i v = _mm256_load_si256((const void *)(t + j));
                if (j + LANES <= cols) {
                    _mm256_storeu_si256((void *)(dst + j), v);
                    rg->vlo = _mm256_min_epi32(rg->vlo, v);
                    rg->vhi = _mm256_max_epi32(rg->vhi, v);
                } else {
                    const __m256i keep = first_lanes(cols - j);
                    _mm256_maskstore_epi32(dst + j, keep, v);
                    rg->vlo = _mm256_min_epi32(rg->vlo, _mm256_blendv_epi8(rg->vlo, v, keep));
                    rg->vhi = _mm256_max_epi32(rg->vhi, _mm256_blendv_epi8(rg->vhi, v, keep));
                }
            }
            continue;
        }
        for (int64_t j = 0; j < cols; j++) {
            const int32_t v = t[j];
            rg->lo = v < rg->lo ? v : rg->lo;
            rg->hi = v > rg->hi ? v : rg->hi;
            dst[j * scn] = v;
        }
    }
}

/* B vectors a microkernel keeps in registers over a K pair: all of them, but where MR * NV
   accumulators, NV B vectors, the broadcast A and the product (MR * NV + NV + 2) exceed the
   16 ymm registers (4 x 3: 17): there the last vector is read from L1 again for each row,
   instead of one accumulator spilling to the stack (a store and reload on every K pair's
   critical path: conv1's weight gradient ran about 20% slower with it) */
#define KEPT(MR, NV) ((MR) * (NV) + (NV) + 2 > 16 ? (NV) - 1 : (NV))

#define MICRO(MR, NV)                                                                          \
    static void micro_##MR##_##NV(int64_t k2, const uint32_t *ap, const int8_t *bp8,         \
                                  int64_t m0, int64_t m_n, int64_t n0, int64_t n_n,          \
                                  int32_t *c, int64_t scm, int64_t scn, range_t *rg) {       \
        const int16_t *bp = (const int16_t *)bp8;                                             \
        __m256i acc[MR][NV];                                                                  \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_si256(); \
        for (int64_t g = 0; g < k2; g++) {                                                    \
            __m256i bv[NV];                                                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                bv[v] = _mm256_loadu_si256((const void *)(bp + (g * NV + v) * 16));           \
            _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                           \
                const __m256i av = _mm256_set1_epi32((int32_t)ap[g * MR + r]);                \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                        \
                    if (v < KEPT(MR, NV)) {                                                   \
                        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, bv[v])); \
                    } else { /* read again per row: one register fewer (see KEPT) */          \
                        const __m256i bm = _mm256_loadu_si256((const void *)(bp + (g * NV + v) * 16)); \
                        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, bm));   \
                        __asm__ volatile("" ::: "memory"); /* not hoisted: reloaded per row */ \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        int32_t tile[MR][NV * LANES] __attribute__((aligned(32)));                            \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                _mm256_store_si256((void *)(tile[r] + LANES * v), acc[r][v]);                 \
        drain(MR, NV, &tile[0][0], m0, m_n, n0, n_n, c, scm, scn, rg);                        \
    }

MICRO(12, 1)
MICRO(6, 2)
MICRO(4, 3)

/* C (M x N, element strides scm, scn) = A (M x K, strides sam, sak) @ packed B. Returns 0,
   or -1 when no memory could be had for the A block; minmax gets the result's min and max
   (unchanged when M or N is 0). corr is not used (see nitihw_int8_pack_b). */
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax) {
    (void)corr;
    const int mr = rows_for(nv);
    const int64_t k2 = (k_n + 1) / 2, nr = LANES * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    if (m_n <= 0 || n_n <= 0) return 0;
    /* 16 words of room past the block: pack_a writes whole vectors */
    uint32_t *ap = (uint32_t *)malloc(sizeof(uint32_t) * (k2 * mr + 16));
    if (ap == NULL) return -1;
    range_t rg = {_mm256_set1_epi32(INT32_MAX), _mm256_set1_epi32(INT32_MIN), INT32_MAX, INT32_MIN};
    for (int64_t m0 = 0; m0 < m_n; m0 += mr) {
        pack_a(m0, m_n, k_n, mr, a, sam, sak, ap);
        for (int64_t p = 0; p < panels; p++) {
            const int8_t *b = bp + p * k2 * nr * 4;
            switch (nv) {
            case 1: micro_12_1(k2, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            case 2: micro_6_2(k2, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            default: micro_4_3(k2, ap, b, m0, m_n, p * nr, n_n, c, scm, scn, &rg); break;
            }
        }
    }
    free(ap);
    int32_t l[LANES], h[LANES];
    _mm256_storeu_si256((void *)l, rg.vlo);
    _mm256_storeu_si256((void *)h, rg.vhi);
    for (int q = 0; q < LANES; q++) {
        rg.lo = l[q] < rg.lo ? l[q] : rg.lo;
        rg.hi = h[q] > rg.hi ? h[q] : rg.hi;
    }
    minmax[0] = rg.lo;
    minmax[1] = rg.hi;
    return 0;
}

#include "int8_conv_error.h"
