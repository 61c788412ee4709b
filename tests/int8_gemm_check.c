/* A self-contained check of one int8 GEMM kernel (golden/int8_gemm*.c) against plain int64
 * loops, for machines Python cannot test it on: tests/test_int8_gemm_arm64.py cross-compiles it
 * with the ARM64 kernel and runs it under qemu-aarch64. Every panel width, direct operands and
 * transposed views, padding tails of M, K and N, the int32 extremes at the longest K, and the
 * convolution's backward error. Prints one line per failure and a summary; exits 1 on any.
 *
 *   cc -O2 [kernel flags] -Igolden tests/int8_gemm_check.c golden/int8_gemm_KERNEL.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nitihw_int8_supported(void);
int nitihw_int8_rows(int nv);
void nitihw_int8_pack_b(int64_t k_n, int64_t n_n, int nv, const int8_t *b, int64_t sbk,
                        int64_t sbn, int8_t *out, int32_t *corr);
int nitihw_int8_gemm(int64_t m_n, int64_t n_n, int64_t k_n, int nv, const int8_t *a,
                     int64_t sam, int64_t sak, const int8_t *bp, const int32_t *corr,
                     int32_t *c, int64_t scm, int64_t scn, int32_t *minmax);
int nitihw_int8_conv_error(int64_t b_n, int64_t ho, int64_t wo, int64_t cout, int64_t k,
                           int64_t cin, int64_t pad, const int8_t *err, int nv,
                           const int8_t *taps, const int32_t *corr, int64_t block, int32_t *out,
                           int32_t *minmax);

static uint64_t state = 88172645463325252ull;
static int8_t rnd8(void) { /* xorshift64: any int8, -128 included */
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (int8_t)(state >> 24);
}

static int failures = 0, checks = 0;

/* panels are packed with the widest lanes any kernel has (16) and four bytes a lane: enough
   room for every kernel's layout */
static int64_t packed_bytes(int64_t k, int64_t n, int nv) {
    const int64_t nr = 16 * (int64_t)nv;
    return ((n + nr - 1) / nr + 1) * ((k + 3) / 4 + 1) * nr * 8;
}

/* C = A @ B through the kernel at panel width nv: A is M x K with strides (sam, sak), B K x N
   with (sbk, sbn); compared with int64 loops, the range too */
static void check_gemm(const char *what, int64_t m, int64_t k, int64_t n, int nv,
                       const int8_t *a, int64_t sam, int64_t sak, const int8_t *b, int64_t sbk,
                       int64_t sbn) {
    int8_t *packed = malloc(packed_bytes(k, n, nv));
    int32_t *corr = malloc(sizeof(int32_t) * (n + 64 * nv));
    int32_t *c = malloc(sizeof(int32_t) * (m * n + 1));
    int32_t mm[2] = {INT32_MAX, INT32_MIN};
    nitihw_int8_pack_b(k, n, nv, b, sbk, sbn, packed, corr);
    int rc = nitihw_int8_gemm(m, n, k, nv, a, sam, sak, packed, corr, c, n, 1, mm);
    int64_t lo = INT64_MAX, hi = INT64_MIN, bad = 0;
    for (int64_t i = 0; i < m && rc == 0; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t want = 0;
            for (int64_t q = 0; q < k; q++)
                want += (int64_t)a[i * sam + q * sak] * b[q * sbk + j * sbn];
            lo = want < lo ? want : lo;
            hi = want > hi ? want : hi;
            if (c[i * n + j] != want && bad++ == 0)
                printf("FAIL %s %lldx%lldx%lld nv=%d: C[%lld,%lld] = %d, want %lld\n", what,
                       (long long)m, (long long)k, (long long)n, nv, (long long)i,
                       (long long)j, c[i * n + j], (long long)want);
        }
    if (rc != 0) {
        printf("FAIL %s: the kernel returned %d\n", what, rc);
        bad = 1;
    } else if (!bad && m && n && (mm[0] != lo || mm[1] != hi)) {
        printf("FAIL %s %lldx%lldx%lld nv=%d: range [%d, %d], want [%lld, %lld]\n", what,
               (long long)m, (long long)k, (long long)n, nv, mm[0], mm[1], (long long)lo,
               (long long)hi);
        bad = 1;
    }
    failures += bad != 0;
    checks++;
    free(packed);
    free(corr);
    free(c);
}

static void check_conv_error(int64_t bn, int64_t ho, int64_t wo, int64_t cout, int64_t k,
                             int64_t cin, int64_t pad, int nv, int64_t block) {
    const int64_t kkc = k * k * cin, h = ho - 2 * pad + k - 1, w = wo - 2 * pad + k - 1;
    int8_t *err = malloc(bn * ho * wo * cout), *wt = malloc(cout * kkc);
    for (int64_t i = 0; i < bn * ho * wo * cout; i++) err[i] = rnd8();
    for (int64_t i = 0; i < cout * kkc; i++) wt[i] = rnd8();
    int8_t *packed = malloc(packed_bytes(cout, kkc, nv));
    int32_t *corr = malloc(sizeof(int32_t) * (kkc + 64 * nv));
    int32_t *out = malloc(sizeof(int32_t) * bn * h * w * cin), mm[2];
    nitihw_int8_pack_b(cout, kkc, nv, wt, kkc, 1, packed, corr);
    int rc = nitihw_int8_conv_error(bn, ho, wo, cout, k, cin, pad, err, nv, packed, corr, block,
                                    out, mm);
    int64_t bad = rc != 0, lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t b = 0; b < bn && !bad; b++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++)
                for (int64_t ci = 0; ci < cin; ci++) {
                    int64_t want = 0;
                    for (int64_t kh = 0; kh < k; kh++)
                        for (int64_t kw = 0; kw < k; kw++) {
                            const int64_t oy = y + pad - kh, ox = x + pad - kw;
                            if (oy < 0 || oy >= ho || ox < 0 || ox >= wo) continue;
                            for (int64_t co = 0; co < cout; co++)
                                want += (int64_t)err[((b * ho + oy) * wo + ox) * cout + co] *
                                        wt[co * kkc + (kh * k + kw) * cin + ci];
                        }
                    lo = want < lo ? want : lo;
                    hi = want > hi ? want : hi;
                    if (out[((b * h + y) * w + x) * cin + ci] != want && bad++ == 0)
                        printf("FAIL conv error b=%lld y=%lld x=%lld c=%lld\n", (long long)b,
                               (long long)y, (long long)x, (long long)ci);
                }
    if (!bad && (mm[0] != lo || mm[1] != hi)) {
        printf("FAIL conv error range [%d, %d], want [%lld, %lld]\n", mm[0], mm[1],
               (long long)lo, (long long)hi);
        bad = 1;
    }
    failures += bad != 0;
    checks++;
    free(err), free(wt), free(packed), free(corr), free(out);
}

int main(void) {
    if (!nitihw_int8_supported()) {
        printf("this CPU cannot run the kernel (its check failed)\n");
        return 2;
    }
    static const int64_t shapes[][3] = {{1, 1, 1},   {5, 3, 7},   {17, 4, 16},   {16, 5, 17},
                                        {33, 6, 48}, {49, 7, 65}, {6, 257, 100}, {64, 25, 20}};
    for (int nv = 1; nv <= 4; nv++) {
        if (nitihw_int8_rows(nv) <= 0) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int64_t m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
            int8_t *a = malloc(m * k), *b = malloc(k * n);
            for (int64_t i = 0; i < m * k; i++) a[i] = rnd8();
            for (int64_t i = 0; i < k * n; i++) b[i] = rnd8();
            check_gemm("row-major", m, k, n, nv, a, k, 1, b, n, 1);
            check_gemm("A col-major", m, k, n, nv, a, 1, m, b, n, 1);
            check_gemm("B col-major", m, k, n, nv, a, k, 1, b, 1, k);
            check_gemm("both col-major", m, k, n, nv, a, 1, m, b, 1, k);
            free(a);
            free(b);
        }
    }
    /* the longest K whose sums all fit int32, -128 and 127 everywhere */
    const int64_t kmax = (INT64_C(2147483647)) / (128 * 128);
    int8_t *a = malloc(3 * kmax), *b = malloc(kmax * 3);
    for (int64_t q = 0; q < kmax; q++) {
        a[q] = -128, a[kmax + q] = 127, a[2 * kmax + q] = q % 2 ? 127 : -128;
        b[q * 3] = -128, b[q * 3 + 1] = 127, b[q * 3 + 2] = q % 3 ? -128 : 0;
    }
    for (int nv = 1; nv <= 4; nv++)
        if (nitihw_int8_rows(nv) > 0) check_gemm("extremes", 3, kmax, 3, nv, a, kmax, 1, b, 3, 1);
    free(a);
    free(b);
    check_conv_error(4, 8, 8, 10, 5, 6, 0, 1, 2);
    check_conv_error(3, 6, 5, 7, 3, 17, 1, 2, 1);
    check_conv_error(2, 12, 11, 9, 5, 3, 4, 3, 4);
    printf("%d of %d checks failed\n", failures, checks);
    return failures ? 1 : 0;
}
