/* The backward error of a stride-1 convolution for the int8 kernels that have no vector code
 * of their own for it (int8_gemm_avx2.c, int8_gemm_neon.c include it after their
 * nitihw_int8_gemm): the same arguments and result as int8_gemm.c's nitihw_int8_conv_error.
 * A GEMM of a few images' errors with every kernel tap (K = C_out; per image Ho*Wo x k*k*C_in
 * int32 products in `p`), then each input position's sum of the taps that land on it, in
 * plain loops the compiler vectorises.
 * err: NHWC int8 (B, Ho, Wo, C_out), contiguous; taps packed by nitihw_int8_pack_b from the
 * (C_out, k*k*C_in) weights; out: NHWC int32 (B, H, W, C_in), H = Ho - 2*pad + k - 1.
 * Returns 0, or -1 when no memory could be had. */
int nitihw_int8_conv_error(int64_t b_n, int64_t ho, int64_t wo, int64_t cout, int64_t k,
                           int64_t cin, int64_t pad, const int8_t *err, int nv,
                           const int8_t *taps, const int32_t *corr, int64_t block, int32_t *out,
                           int32_t *minmax) {
    const int64_t h = ho - 2 * pad + k - 1, w = wo - 2 * pad + k - 1, kkc = k * k * cin;
    int32_t *p = (int32_t *)malloc(sizeof(int32_t) * block * ho * wo * kkc);
    if (p == NULL) return -1;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
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
                    for (int64_t ci = 0; ci < cin; ci++) dst[ci] = 0;
                    for (int64_t kh = kh0; kh < kh1; kh++) {
                        const int64_t oy = y + pad - kh;
                        for (int64_t kw = kw0; kw < kw1; kw++) {
                            const int64_t ox = x + pad - kw;
                            const int32_t *src = pb + (oy * wo + ox) * kkc + (kh * k + kw) * cin;
                            for (int64_t ci = 0; ci < cin; ci++) dst[ci] += src[ci];
                        }
                    }
                    for (int64_t ci = 0; ci < cin; ci++) {
                        lo = dst[ci] < lo ? dst[ci] : lo;
                        hi = dst[ci] > hi ? dst[ci] : hi;
                    }
                }
            }
        }
    }
    free(p);
    minmax[0] = lo;
    minmax[1] = hi;
    return 0;
}
