/* The golden model's int8 GEMM: C = A @ B for int8 A (M x K) and B (K x N), int32 results.
 *
 * AVX-512 VNNI (vpdpbusd): each instruction multiplies 64 unsigned bytes by 64 signed bytes
 * and adds each group of four products into one of 16 int32 lanes, 64 multiply-adds at once
 * (float32 FMA: 16). vpdpbusd wants one operand unsigned, so A enters as A + 128 (its bytes
 * XOR 0x80) and every sum carries 128 * (column sum of B), subtracted at the end. All of it is
 * int32 arithmetic modulo 2^32: whatever the intermediate values, the result is the exact sum
 * whenever that sum fits int32, which the caller guarantees (golden/int8_gemm.py checks
 * K * max|A| * max|B| < 2^31 before it calls).
 *
 * The layout is BLIS's: B is packed once into panels of 16*NV columns, four K rows interleaved
 * per 64-byte vector ([panel][K/4][NV][16 columns][4 rows]); each block of MR rows of A is
 * packed ([K/4][MR][4 bytes], XOR 0x80) and multiplied by every panel by a microkernel that
 * holds its MR x NV accumulators in registers over the whole K. K is padded to a multiple of
 * 4 with zero rows of B (whatever A holds there adds nothing), N to whole panels with zero
 * columns, M to whole row blocks; the padding is never stored.
 *
 * The result's min and max are taken as it is stored (the range unit watches the drain).
 * Nothing here defines a rule: tests/test_int8_gemm.py compares it with NumPy's int64 matmul.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

int nitihw_int8_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

/* rows per A block for NV vectors of 16 columns: MR * NV accumulators + NV B vectors + one
   broadcast within the 32 zmm registers */
static int rows_for(int nv) {
    switch (nv) {
    case 1: return 16;
    case 2: return 12;
    case 3: return 8;
    default: return 6;
    }
}

int nitihw_int8_rows(int nv) { return rows_for(nv); }

/* four rows of 16 bytes (row q at p + q * stride; masked columns and rows at or past `rows`
   read as zeros) as 16 groups of four bytes, one per int32 lane: column j's four rows in lane j */
static inline __m512i interleave4(const int8_t *p, int64_t stride, int64_t rows, __mmask16 keep) {
    __m128i r[4];
    for (int q = 0; q < 4; q++)
        r[q] = q < rows && keep ? _mm_maskz_loadu_epi8(keep, p + q * stride) : _mm_setzero_si128();
    const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
    const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
    __m512i out = _mm512_castsi128_si512(_mm_unpacklo_epi16(lo01, lo23));
    out = _mm512_inserti32x4(out, _mm_unpackhi_epi16(lo01, lo23), 1);
    out = _mm512_inserti32x4(out, _mm_unpacklo_epi16(hi01, hi23), 2);
    return _mm512_inserti32x4(out, _mm_unpackhi_epi16(hi01, hi23), 3);
}

static inline __mmask16 first_lanes(int64_t n) {
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* B (K x N, element strides sbk, sbn) into panels of 16*nv columns; corr[n] = 128 * sum_k B */
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr) {
    const int64_t k4 = (k_n + 3) / 4, nr = 16 * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++) {
        int8_t *dst = out + p * k4 * nr * 4;
        const int64_t n0 = p * nr;
        const int64_t width = n_n - n0 < nr ? n_n - n0 : nr;
        if (sbn == 1) {
            /* rows contiguous: interleave four rows of 16 bytes into 16 groups of four (masked
               loads where the last panel is narrower: the columns past N read as zeros) */
            for (int v = 0; v < nv; v++) {
                const __mmask16 keep = first_lanes(width - 16 * v);
                for (int64_t g = 0; g < k4; g++)
                    _mm512_storeu_si512((void *)(dst + (g * nv + v) * 64),
                                        interleave4(b + 4 * g * sbk + n0 + 16 * v, sbk,
                                                    k_n - 4 * g, keep));
            }
        } else {
            for (int64_t g = 0; g < k4; g++) {
                for (int64_t j = 0; j < nr; j++) {
                    int8_t *d = dst + (g * nv + j / 16) * 64 + (j % 16) * 4;
                    for (int q = 0; q < 4; q++) {
                        const int64_t k = 4 * g + q;
                        d[q] = (j < width && k < k_n) ? b[k * sbk + (n0 + j) * sbn] : 0;
                    }
                }
            }
        }
        /* the column sums, from the packed panel (zeros where padded): vpdpbusd of a vector
           of ones adds each lane's four bytes */
        const __m512i ones = _mm512_set1_epi8(1);
        for (int v = 0; v < nv; v++) {
            __m512i sum = _mm512_setzero_si512();
            for (int64_t g = 0; g < k4; g++)
                sum = _mm512_dpbusd_epi32(sum, ones,
                                          _mm512_loadu_si512((const void *)(dst + (g * nv + v) * 64)));
            _mm512_storeu_si512((void *)(corr + n0 + 16 * v), _mm512_slli_epi32(sum, 7));
        }
    }
}

/* MR rows of A from row m0 (rows past M are zero), as [K/4][MR] words of A XOR 0x80 */
static void pack_a(int64_t m0, int64_t m_n, int64_t k_n, int mr, const int8_t *a, int64_t sam,
                   int64_t sak, uint32_t *out) {
    const int64_t k4 = (k_n + 3) / 4;
    if (sam == 1 && sak != 1) { /* columns contiguous: four K rows of MR bytes at a time */
        const __mmask16 keep = first_lanes(m_n - m0), words = first_lanes(mr);
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int64_t g = 0; g < k4; g++) {
            const __m512i w = interleave4(a + 4 * g * sak + m0, sak, k_n - 4 * g, keep);
            _mm512_mask_storeu_epi32(out + g * mr, words, _mm512_xor_si512(w, flip));
        }
        return;
    }
    for (int r = 0; r < mr; r++) {
        const int64_t m = m0 + r;
        if (m >= m_n) {
            for (int64_t g = 0; g < k4; g++) out[g * mr + r] = 0;
            continue;
        }
        const int8_t *row = a + m * sam;
        int64_t g = 0;
        if (sak == 1) {
            for (; 4 * g + 4 <= k_n; g++) {
                uint32_t w;
                memcpy(&w, row + 4 * g, 4);
                out[g * mr + r] = w ^ 0x80808080u;
            }
        }
        for (; g < k4; g++) {
            uint32_t w = 0;
            for (int q = 0; q < 4; q++) {
                int64_t k = 4 * g + q;
                uint8_t byte = k < k_n ? (uint8_t)row[k * sak] ^ 0x80u : 0;
                w |= (uint32_t)byte << (8 * q);
            }
            out[g * mr + r] = w;
        }
    }
}

/* a tile of MR x NV*16 sums, less the correction, stored where it lies inside C */
static void drain(int mr, int nv, const int32_t *tile, const int32_t *corr, int64_t m0,
                  int64_t m_n, int64_t n0, int64_t n_n, int32_t *c, int64_t scm, int64_t scn,
                  __m512i *lo, __m512i *hi) {
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    if (scm == 1 && scn != 1) { /* C's columns are contiguous: store the tile's columns */
        const __mmask16 rows = first_lanes(m_n - m0 < mr ? m_n - m0 : mr);
        const __m512i down = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(nv * 16));
        for (int j = 0; j < nv * 16 && n0 + j < n_n; j++) {
            __m512i val = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, down,
                                                      tile + j, 4);
            val = _mm512_sub_epi32(val, _mm512_set1_epi32(corr[j]));
            *lo = _mm512_mask_min_epi32(*lo, rows, *lo, val);
            *hi = _mm512_mask_max_epi32(*hi, rows, *hi, val);
            _mm512_mask_storeu_epi32(c + (n0 + j) * scn + m0, rows, val);
        }
        return;
    }
    const __m512i idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int32_t)scn));
    for (int v = 0; v < nv; v++) {
        const int64_t n = n0 + 16 * v;
        if (n >= n_n) break;
        const __mmask16 keep = first_lanes(n_n - n);
        const __m512i cv = _mm512_loadu_si512((const void *)(corr + 16 * v));
        for (int r = 0; r < mr && m0 + r < m_n; r++) {
            __m512i val = _mm512_sub_epi32(_mm512_load_si512(tile + r * nv * 16 + 16 * v), cv);
            *lo = _mm512_mask_min_epi32(*lo, keep, *lo, val);
            *hi = _mm512_mask_max_epi32(*hi, keep, *hi, val);
            int32_t *dst = c + (m0 + r) * scm + n * scn;
            if (scn == 1)
                _mm512_mask_storeu_epi32(dst, keep, val);
            else
                _mm512_mask_i32scatter_epi32(dst, keep, idx, val, 4);
        }
    }
}

#define MICRO(MR, NV)                                                                          \
    static void micro_##MR##_##NV(int64_t k4, const uint32_t *ap, const int8_t *bp,          \
                                  const int32_t *corr, int64_t m0, int64_t m_n, int64_t n0,  \
                                  int64_t n_n, int32_t *c, int64_t scm, int64_t scn,          \
                                  __m512i *lo, __m512i *hi) {                                \
        __m512i acc[MR][NV];                                                                  \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();                  \
        for (int64_t g = 0; g < k4; g++) {                                                    \
            __m512i bv[NV];                                                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
                bv[v] = _mm512_loadu_si512((const void *)(bp + (g * NV + v) * 64));           \
            _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) {                           \
                __m512i av = _mm512_set1_epi32((int32_t)ap[g * MR + r]);                      \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]); \
            }                                                                                 \
        }                                                                                     \
        /* through memory once, so that the loop above keeps every accumulator in a register */ \
        int32_t tile[MR][NV * 16] __attribute__((aligned(64)));                               \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) _mm512_store_si512((void *)(tile[r] + 16 * v), acc[r][v]); \
        drain(MR, NV, &tile[0][0], corr, m0, m_n, n0, n_n, c, scm, scn, lo, hi);              \
    }

MICRO(16, 1)
MICRO(12, 2)
MICRO(8, 3)
MICRO(6, 4)

/* C (M x N, element strides scm, scn) = A (M x K, strides sam, sak) @ packed B. Returns 0,
   or -1 when no memory could be had for the A block; minmax gets the result's min and max
   (unchanged when M or N is 0). */
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax) {
    const int mr = rows_for(nv);
    const int64_t k4 = (k_n + 3) / 4, nr = 16 * (int64_t)nv;
    const int64_t panels = (n_n + nr - 1) / nr;
    if (m_n <= 0 || n_n <= 0) return 0;
    uint32_t *ap = (uint32_t *)aligned_alloc(64, ((k4 * mr * 4 + 63) / 64) * 64);
    if (ap == NULL) return -1;
    __m512i lo = _mm512_set1_epi32(INT32_MAX), hi = _mm512_set1_epi32(INT32_MIN);
    for (int64_t m0 = 0; m0 < m_n; m0 += mr) {
        pack_a(m0, m_n, k_n, mr, a, sam, sak, ap);
        for (int64_t p = 0; p < panels; p++) {
            const int8_t *b = bp + p * k4 * nr * 4;
            const int32_t *cr = corr + p * nr;
            switch (nv) {
            case 1: micro_16_1(k4, ap, b, cr, m0, m_n, p * nr, n_n, c, scm, scn, &lo, &hi); break;
            case 2: micro_12_2(k4, ap, b, cr, m0, m_n, p * nr, n_n, c, scm, scn, &lo, &hi); break;
            case 3: micro_8_3(k4, ap, b, cr, m0, m_n, p * nr, n_n, c, scm, scn, &lo, &hi); break;
            default: micro_6_4(k4, ap, b, cr, m0, m_n, p * nr, n_n, c, scm, scn, &lo, &hi); break;
            }
        }
    }
    free(ap);
    minmax[0] = _mm512_reduce_min_epi32(lo);
    minmax[1] = _mm512_reduce_max_epi32(hi);
    return 0;
}

/* The backward error of a stride-1 convolution, a few images at a time: the products of every
   output position's error with every kernel tap (one GEMM, K = C_out, into `p`: per image
   Ho*Wo x k*k*C_in int32), then each input position's sum of the taps that land on it.
   err: NHWC int8 (B, Ho, Wo, C_out), contiguous; taps packed by nitihw_int8_pack_b from the
   (C_out, k*k*C_in) weights; out: NHWC int32 (B, H, W, C_in), H = Ho - 2*pad + k - 1.
   `block` images per GEMM (their products stay in cache for the gathering pass). Returns 0,
   or -1 when no memory could be had. */
int nitihw_int8_conv_error(int64_t b_n, int64_t ho, int64_t wo, int64_t cout, int64_t k,
                           int64_t cin, int64_t pad, const int8_t *err, int nv,
                           const int8_t *taps, const int32_t *corr, int64_t block, int32_t *out,
                           int32_t *minmax) {
    const int64_t h = ho - 2 * pad + k - 1, w = wo - 2 * pad + k - 1, kkc = k * k * cin;
    int32_t *p = (int32_t *)malloc(sizeof(int32_t) * block * ho * wo * kkc);
    if (p == NULL) return -1;
    __m512i lo = _mm512_set1_epi32(INT32_MAX), hi = _mm512_set1_epi32(INT32_MIN);
    for (int64_t b0 = 0; b0 < b_n; b0 += block) {
        const int64_t nb = b_n - b0 < block ? b_n - b0 : block;
        int32_t mm[2];
        if (nitihw_int8_gemm(nb * ho * wo, kkc, cout, nv, err + b0 * ho * wo * cout, cout, 1,
                             taps, corr, p, kkc, 1, mm) != 0) {
            free(p);
            return -1;
        }
        for (int64_t b = 0; b < nb; b++) {
            const int32_t *pb = p + b * ho * wo * kkc;
            for (int64_t y = 0; y < h; y++) {
                const int64_t kh0 = y + pad - ho + 1 > 0 ? y + pad - ho + 1 : 0;
                const int64_t kh1 = y + pad + 1 < k ? y + pad + 1 : k;
                for (int64_t x = 0; x < w; x++) {
                    const int64_t kw0 = x + pad - wo + 1 > 0 ? x + pad - wo + 1 : 0;
                    const int64_t kw1 = x + pad + 1 < k ? x + pad + 1 : k;
                    int32_t *dst = out + (((b0 + b) * h + y) * w + x) * cin;
                    for (int64_t c0 = 0; c0 < cin; c0 += 16) {
                        const __mmask16 keep = first_lanes(cin - c0);
                        __m512i acc = _mm512_setzero_si512();
                        for (int64_t kh = kh0; kh < kh1; kh++) {
                            const int64_t oy = y + pad - kh;
                            for (int64_t kw = kw0; kw < kw1; kw++) {
                                const int64_t ox = x + pad - kw;
                                const int32_t *src =
                                    pb + (oy * wo + ox) * kkc + (kh * k + kw) * cin + c0;
                                acc = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(keep, src));
                            }
                        }
                        lo = _mm512_mask_min_epi32(lo, keep, lo, acc);
                        hi = _mm512_mask_max_epi32(hi, keep, hi, acc);
                        _mm512_mask_storeu_epi32(dst + c0, keep, acc);
                    }
                }
            }
        }
    }
    free(p);
    minmax[0] = _mm512_reduce_min_epi32(lo);
    minmax[1] = _mm512_reduce_max_epi32(hi);
    return 0;
}
