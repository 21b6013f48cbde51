/* mg_q412.c: microGPT in TALOS-V2's Q4.12 fixed point, single stream and offline.
 *
 * Weights and activations are int16 Q4.12 (value * 4096): weights rint(w * 4096)
 * clipped to int16. Every matvec multiplies int16 by int16 and accumulates in int32
 * (wrapping, so any summation order gives the same result), then shifts right by 12
 * (arithmetic: floor) and saturates to int16. Residual adds saturate. The norms,
 * the attention softmax and the sampler are float32, in the canonical order of
 * mg_common.h; they read and write int16 activations:
 *   norm(x)   = sat16(rint(x * s)), s = 1/sqrt(fma(sum x^2 (tree16), 2^-28, 1e-5))
 *   attention = the float attention on q, k, v converted from int16 (scores scaled
 *               by log2(e) * 2^-25); its output is rounded back to int16 (Q12)
 *   logits    = the lm_head output at full precision: (sum) >> 12 without the int16
 *               saturation (it is the model's output, not an activation between layers,
 *               and it reaches past +-8 on real weights); z = l * log2(e) / (T * 4096)
 * Per token:
 *   x = sat16(wte[tok] + wpe[pos]); n0 = norm(x); n1 = norm(n0)
 *   q, k, v = mv(n1); att = attention(q, k, v); x3 = sat16(mv(Wo, att) + n0)
 *   n2 = norm(x3); h = max(mv(fc1, n2), 0); y = sat16(mv(fc2, h) + x3); l = mv(lm, y)
 * with mv(W, x)_o = sat16((sum_j W[o][j] x[j]) >> 12); l = (sum_j lm[v][j] y[j]) >> 12.
 * Vector paths: AVX-512 (vpdpwssd with AVX512-VNNI, else vpmaddwd), AVX2 (AVX-VNNI
 * vpdpwssd, else vpmaddwd), NEON (vmlal_s16), scalar; all bit-identical.
 */
#include "mg_common.h"

#define MG_Q28 3.7252902984e-09f       /* 2^-28: mean of 16 squares of Q12 values */
#define MG_CQQ 4.29948877e-08f         /* log2(e) * 2^-25: Q12 * Q12, / sqrt(head_dim) */

typedef struct {
    float cz;                           /* log2(e) / (T * 4096) */
    int greedy;                        /* temperature 0: next token = argmax */
    int batch_min;                     /* offline: fewer live streams run one by one (0: default) */
    int att_fast;                      /* offline: every attention score provably in the fast range */
    int qkv_fast;                      /* offline: every q, k, v provably in int16 (no saturation) */
    int pad[12];
    MG_ALIGN int16_t raw[MG_NPARAM];    /* C flat order (rows); a row pair j, j+1 is one int32 */
    /* single stream: pair-transposed matrices, P[m][r] = (W[r][2m], W[r][2m+1]) */
    MG_ALIGN int16_t qkvP[8 * 48 * 2];
    MG_ALIGN int16_t woP[8 * 16 * 2];
    MG_ALIGN int16_t fc1P[8 * 64 * 2];
    MG_ALIGN int16_t fc2P[32 * 16 * 2];
    MG_ALIGN int16_t lmP[8 * 32 * 2];   /* rows >= 27 zero */
    MG_ALIGN int32_t wte32[MG_VOCAB * 16], wpe32[MG_CTX * 16]; /* AVX-512: no sign-extension on the chain */
    /* AVX-512 offline's embedding tables: [m][v] the wte pair m of token v (v < 32, v >= 27
     * zero), [m][32 + p] the wpe pair m of position p */
    MG_ALIGN int32_t embP[8 * 48];
} model_t;

typedef struct {
    MG_ALIGN float K[256];
    MG_ALIGN float V[256];
} cache_t;

MG_EXPORT int mg_q412_abi(void) { return MG_ABI; }
MG_EXPORT const char *mg_q412_simd(void) { return MG_SIMD_NAME; }

static int16_t quant(float w)
{
    float r = rintf(w * 4096.0f);
    return (int16_t)(r < -32768.0f ? -32768.0f : r > 32767.0f ? 32767.0f : r);
}

static void pairs(int16_t *dst, const int16_t *w, int rows, int cols, int rows_out)
{
    for (int m = 0; m < cols / 2; m++)
        for (int r = 0; r < rows; r++) {
            dst[(m * rows_out + r) * 2] = w[r * cols + 2 * m];
            dst[(m * rows_out + r) * 2 + 1] = w[r * cols + 2 * m + 1];
        }
}

#define NORM_L2_MAX 16386.0 /* |a norm's output|_2 <= 2^14 + 2 (the rint), in Q12 */
/* the sum of squares of w[0..n) (the square of a row's or a block's Frobenius norm) */
static double sumsq(const int16_t *w, int n)
{
    double f = 0.0;
    for (int i = 0; i < n; i++) f += (double)w[i] * w[i];
    return f;
}

/* A bound on |score| (the fp32 kernel's, in Q12): a norm's output has |n|_2 <= 2^14 + 2
 * (the rint), so |q_h|_2 <= |Wq_h|_F (2^14 + 2) / 4096 + 2 (the floor, 4 elements), the same
 * for k, and |score| <= MG_CQQ |q_h|_2 |k_h|_2. Where it is <= 32 (half the fast range's 64:
 * room for rounding) for every head, the offset is 0 for every input. */
static double att_bound(const int16_t *raw)
{
    double worst = 0.0;
    for (int h = 0; h < MG_HEADS; h++) {
        const double fq = sumsq(raw + OFF_WQ + 64 * h, 64), fk = sumsq(raw + OFF_WK + 64 * h, 64);
        const double nq = sqrt(fq) * NORM_L2_MAX / 4096.0 + 2.0, nk = sqrt(fk) * NORM_L2_MAX / 4096.0 + 2.0;
        const double b = MG_CQQ * nq * nk;
        worst = b > worst ? b : worst;
    }
    return worst;
}

/* A bound on |sum_j W[o][j] n[j]| over the q, k, v rows (Cauchy-Schwarz with |n|_2 <=
 * 2^14 + 2, as above); below 2^27 (used with 1% to spare for the float rounding of the
 * norm's scale) every (sum >> 12) is in int16 and sat16 is the identity */
static double qkv_bound(const int16_t *raw)
{
    double worst = 0.0;
    for (int o = 0; o < 48; o++) { /* wq, wk, wv: consecutive rows */
        const double b = sqrt(sumsq(raw + OFF_WQ + o * 16, 16)) * NORM_L2_MAX;
        worst = b > worst ? b : worst;
    }
    return worst;
}

/* the int16 pair at p as one int32 (lane order: p[0] low) */
static int32_t pair32(const int16_t *p) { return (int32_t)((uint32_t)(uint16_t)p[0] | (uint32_t)(uint16_t)p[1] << 16); }

MG_EXPORT void *mg_q412_create(const float *w, float temperature)
{
    if (!w || !(temperature >= 0.0f) || !isfinite(temperature)) return NULL;
    for (int i = 0; i < MG_NPARAM; i++)
        if (!isfinite(w[i])) return NULL;
    model_t *m = mg_alloc(sizeof(model_t));
    if (!m) return NULL;
    m->greedy = temperature == 0.0f;
    /* greedy: z keeps the logits' order (a positive power-of-two scale) */
    m->cz = m->greedy ? (1.0f / 4096.0f) : (float)(1.4426950408889634 / (double)temperature / 4096.0);
    for (int i = 0; i < MG_NPARAM; i++) m->raw[i] = quant(w[i]);
    m->att_fast = att_bound(m->raw) <= 32.0;
    m->qkv_fast = qkv_bound(m->raw) < 0.99 * 134217728.0;
    int16_t tmp[48 * 16];
    memcpy(tmp, m->raw + OFF_WQ, sizeof tmp); /* wq, wk, wv are consecutive: one 48 x 16 matrix */
    pairs(m->qkvP, tmp, 48, 16, 48);
    pairs(m->woP, m->raw + OFF_WO, 16, 16, 16);
    pairs(m->fc1P, m->raw + OFF_FC1, 64, 16, 64);
    pairs(m->fc2P, m->raw + OFF_FC2, 16, 64, 16);
    pairs(m->lmP, m->raw + OFF_LM, 27, 16, 32);
    for (int i = 0; i < MG_VOCAB * 16; i++) m->wte32[i] = m->raw[OFF_WTE + i];
    for (int i = 0; i < MG_CTX * 16; i++) m->wpe32[i] = m->raw[OFF_WPE + i];
    for (int mm = 0; mm < 8; mm++) {
        for (int v = 0; v < MG_VOCAB; v++) m->embP[mm * 48 + v] = pair32(m->raw + OFF_WTE + v * 16 + 2 * mm);
        for (int p = 0; p < MG_CTX; p++) m->embP[mm * 48 + 32 + p] = pair32(m->raw + OFF_WPE + p * 16 + 2 * mm);
    }
    return m;
}

MG_EXPORT void mg_q412_destroy(void *m) { free(m); }

/* ================================================================ single stream */

#if defined(MG_AVX512)
#if defined(__AVX512VNNI__)
#define DP(acc, a, b) _mm512_dpwssd_epi32(acc, a, b)
#else
#define DP(acc, a, b) _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
#endif
#define LD(p) _mm512_load_si512((const void *)(p))
#define BD(buf, m) _mm512_set1_epi32(((const int32_t *)(buf))[m])
/* pair j of 16 int32 in int16 range (|norm output| <= 2^14; others saturated) in every
 * lane: a word permute in registers, not a pack, a store and a broadcast load (store
 * forwarding would be on the token's dependency chain) */
#define BW(d, j) _mm512_permutexvar_epi16(_mm512_set1_epi32((4 * (j)) | ((4 * (j) + 2) << 16)), d)

#define RINT(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* the norm's argument fma(sum x^2, 2^-28, eps) */
MG_INLINE __m512 ms1(__m512 xf) { return _mm512_fmadd_ps(mg_hsum16(_mm512_mul_ps(xf, xf)), _mm512_set1_ps(MG_Q28), _mm512_set1_ps(MG_EPS)); }
/* the same from 4 block copies (every 128-bit block of b[r] holds elements 4r..4r+3):
 * mg_hsum16's tree, its last two levels as adds of the copies' block sums instead of
 * cross-lane shuffles (~5 cycles each on Zen 5) */
MG_INLINE __m512 ms4(const __m512 *b)
{
    __m512 w[4];
    MG_UNROLL
    for (int r = 0; r < 4; r++) {
        __m512 v = _mm512_mul_ps(b[r], b[r]);
        v = _mm512_add_ps(v, _mm512_permute_ps(v, MG_SWAP1));
        w[r] = _mm512_add_ps(v, _mm512_permute_ps(v, MG_SWAP2));
    }
    __m512 t = _mm512_add_ps(_mm512_add_ps(w[0], w[1]), _mm512_add_ps(w[2], w[3]));
    return _mm512_fmadd_ps(t, _mm512_set1_ps(MG_Q28), _mm512_set1_ps(MG_EPS));
}
/* x[r] = rint(x[r] * mg_rs16(a)) for n copies, without waiting for the square root and the
 * division: the products take rsqrt14 with a Newton step (a few ulps off), and the exact
 * scale is checked later on x[0] (all 16 elements; the others are copies) by a branch predicted
 * equal; a product within a few ulps of a rounding boundary takes the slow path. So the
 * results are always the canonical ones, and the chain is shorter by the sqrt and the div. */
MG_INLINE void qscale(__m512 *x, __m512 a, int n)
{
    __m512 y = _mm512_rsqrt14_ps(a);
    __m512 sf = _mm512_mul_ps(y, _mm512_fnmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(0.5f)), _mm512_mul_ps(y, y), _mm512_set1_ps(1.5f)));
    __m512 se = mg_rs16(a);
    __m512 e = RINT(_mm512_mul_ps(x[0], se)), f[5];
    for (int r = 0; r < n; r++) f[r] = RINT(_mm512_mul_ps(x[r], sf));
    if (__builtin_expect(_mm512_cmp_ps_mask(f[0], e, _CMP_NEQ_UQ) != 0, 0)) {
        __asm__ volatile("" : "+v"(se)); /* a branch: a select would wait for se */
        for (int r = 0; r < n; r++) f[r] = RINT(_mm512_mul_ps(x[r], se));
    }
    for (int r = 0; r < n; r++) x[r] = f[r];
}
MG_INLINE __m512i sat32(__m512i a) { return _mm512_max_epi32(_mm512_min_epi32(a, _mm512_set1_epi32(32767)), _mm512_set1_epi32(-32768)); }
MG_INLINE __m512i rq32(__m512i acc) { return sat32(_mm512_srai_epi32(acc, 12)); } /* sat16(acc >> 12), as int32 */

MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, __m512 *zlo, __m512 *zhi)
{
    MG_ALIGN int16_t xb[64];
    /* the embedding and the two norms: xf[0] in order, xf[1 + r] block copies (see ms4),
     * loaded by block broadcasts */
    const int32_t *te = m->wte32 + tok * 16, *pe = m->wpe32 + pos * 16;
    __m512 xf[5];
    xf[0] = _mm512_cvtepi32_ps(sat32(_mm512_add_epi32(LD(te), LD(pe))));
    MG_UNROLL
    for (int r = 0; r < 4; r++)
        xf[1 + r] = _mm512_cvtepi32_ps(sat32(_mm512_add_epi32(_mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(te + 4 * r))),
                                                              _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(pe + 4 * r))))));
    qscale(xf, ms4(xf + 1), 5);
    __m512i n0 = _mm512_cvtps_epi32(xf[0]);
    qscale(xf, ms4(xf + 1), 5);
    /* n1's pairs 0..3 and 4..7 in every block: the broadcasts are in-lane shuffles */
    const __m512i p03 = _mm512_packs_epi32(_mm512_cvtps_epi32(xf[1]), _mm512_cvtps_epi32(xf[2]));
    const __m512i p47 = _mm512_packs_epi32(_mm512_cvtps_epi32(xf[3]), _mm512_cvtps_epi32(xf[4]));
#define SH(p, j) _mm512_shuffle_epi32(p, (_MM_PERM_ENUM)((j) * 0x55)) /* an immediate (clang) */
    const __m512i bn[8] = {SH(p03, 0), SH(p03, 1), SH(p03, 2), SH(p03, 3), SH(p47, 0), SH(p47, 1), SH(p47, 2), SH(p47, 3)};
#undef SH

    /* q, k, v: 8 pair-columns, 4 chains of 2 (integer sums: any order is exact) */
    const int16_t *P = m->qkvP;
    __m512i q[4], k[4], v[4];
    MG_UNROLL
    for (int j = 0; j < 4; j++) {
        __m512i b0 = bn[j], b1 = bn[j + 4];
        q[j] = DP(_mm512_setzero_si512(), LD(P + j * 96), b0);
        k[j] = DP(_mm512_setzero_si512(), LD(P + j * 96 + 32), b0);
        v[j] = DP(_mm512_setzero_si512(), LD(P + j * 96 + 64), b0);
        q[j] = DP(q[j], LD(P + (j + 4) * 96), b1);
        k[j] = DP(k[j], LD(P + (j + 4) * 96 + 32), b1);
        v[j] = DP(v[j], LD(P + (j + 4) * 96 + 64), b1);
    }
    __m512i q0 = _mm512_add_epi32(q[0], q[1]), q1 = _mm512_add_epi32(q[2], q[3]);
    __m512i k0 = _mm512_add_epi32(k[0], k[1]), k1 = _mm512_add_epi32(k[2], k[3]);
    __m512i v0 = _mm512_add_epi32(v[0], v[1]), v1 = _mm512_add_epi32(v[2], v[3]);
    __m512 qs = _mm512_mul_ps(_mm512_cvtepi32_ps(rq32(_mm512_add_epi32(q0, q1))), _mm512_set1_ps(MG_CQQ));
    __m512 kf = _mm512_cvtepi32_ps(rq32(_mm512_add_epi32(k0, k1)));
    __m512 vf = _mm512_cvtepi32_ps(rq32(_mm512_add_epi32(v0, v1)));
    __m512 att = mg_attention16(qs, kf, vf, c->K, c->V, step & 15, mg_valid_slots(step, pos));
    __m512i ap = sat32(_mm512_cvtps_epi32(att));

    /* wo + residual */
    __m512i a[4];
    MG_UNROLL
    for (int j = 0; j < 4; j++) a[j] = DP(DP(_mm512_setzero_si512(), LD(m->woP + j * 32), BW(ap, j)), LD(m->woP + (j + 4) * 32), BW(ap, j + 4));
    __m512i x3 = sat32(_mm512_add_epi32(rq32(_mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]))), n0));
    __m512 t = _mm512_cvtepi32_ps(x3);
    qscale(&t, ms1(t), 1);
    __m512i n2 = _mm512_cvtps_epi32(t);

    /* fc1 (64 outputs: 4 blocks) + relu */
    __m512i f[4][2];
    for (int o = 0; o < 4; o++) f[o][0] = f[o][1] = _mm512_setzero_si512();
    MG_UNROLL
    for (int j = 0; j < 8; j++) {
        __m512i b = BW(n2, j);
        for (int o = 0; o < 4; o++) f[o][j & 1] = DP(f[o][j & 1], LD(m->fc1P + j * 128 + o * 32), b);
    }
    /* packed in-lane (vpackssdw: sat16 of the shifted sums), not by cross-lane narrowing:
     * 128-bit lane k of packs(A, B) holds A's rows 4k..4k+3, then B's; HP(j): the hidden
     * pair at pair j of xb */
    for (int o = 0; o < 4; o += 2)
        _mm512_store_si512((void *)(xb + 16 * o),
                           _mm512_max_epi16(_mm512_packs_epi32(_mm512_srai_epi32(_mm512_add_epi32(f[o][0], f[o][1]), 12),
                                                               _mm512_srai_epi32(_mm512_add_epi32(f[o + 1][0], f[o + 1][1]), 12)),
                                            _mm512_setzero_si512()));
    __asm__ volatile("" : : "r"(xb) : "memory");
#define HP(j) (16 * ((j) >> 4) + 8 * (((j) >> 1) & 1) + 2 * (((j) >> 2) & 3) + ((j) & 1))

    /* fc2: 32 pair-columns, 8 chains (broadcasts from memory: 32 word permutes measured slower) */
    __m512i g[8];
    for (int k = 0; k < 8; k++) g[k] = _mm512_setzero_si512();
    MG_UNROLL
    for (int j = 0; j < 32; j++) g[j & 7] = DP(g[j & 7], LD(m->fc2P + HP(j) * 32), BD(xb, j));
#undef HP
    __m512i gs = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(g[0], g[1]), _mm512_add_epi32(g[2], g[3])),
                                  _mm512_add_epi32(_mm512_add_epi32(g[4], g[5]), _mm512_add_epi32(g[6], g[7])));
    __m512i y = sat32(_mm512_add_epi32(rq32(gs), x3));

    /* lm_head: 2 blocks, 4 chains of 2 */
    __m512i l0[4], l1[4];
    MG_UNROLL
    for (int j = 0; j < 4; j++) {
        __m512i b0 = BW(y, j), b1 = BW(y, j + 4);
        l0[j] = DP(DP(_mm512_setzero_si512(), LD(m->lmP + j * 64), b0), LD(m->lmP + (j + 4) * 64), b1);
        l1[j] = DP(DP(_mm512_setzero_si512(), LD(m->lmP + j * 64 + 32), b0), LD(m->lmP + (j + 4) * 64 + 32), b1);
    }
    *zlo = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(l0[0], l0[1]), _mm512_add_epi32(l0[2], l0[3])), 12));
    *zhi = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(l1[0], l1[1]), _mm512_add_epi32(l1[2], l1[3])), 12));
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    __m512 lo, hi;
    forward1(m, c, tok, pos, step, &lo, &hi);
    const __m512 s = _mm512_set1_ps(1.0f / 4096.0f);
    _mm512_storeu_ps(out, _mm512_mul_ps(lo, s));
    _mm512_mask_storeu_ps(out + 16, 0x07FF, _mm512_mul_ps(hi, s));
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    __m512 lo, hi;
    forward1(m, c, tok, pos, step, &lo, &hi);
    const __m512 cz = _mm512_set1_ps(m->cz);
    return mg_sample16(_mm512_mul_ps(lo, cz), _mm512_mul_ps(hi, cz), python, r, u);
}

#elif defined(MG_AVX2)
#if defined(__AVXVNNI__)
#define DP8(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#else
#define DP8(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#endif
#define LD8(p) _mm256_load_si256((const __m256i *)(p))
#define BD8(buf, m) _mm256_set1_epi32(((const int32_t *)(buf))[m])

/* 8 outputs r0..r0+7 of a pair-transposed matrix with R rows, 8 pair-columns; b[m]:
 * pair m of the input in every lane */
MG_INLINE __m256i mvq8(const int16_t *P, int R, int r0, const __m256i *b)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    MG_UNROLL
    for (int mm = 0; mm < 8; mm += 2) {
        a0 = DP8(a0, LD8(P + (mm * R + r0) * 2), b[mm]);
        a1 = DP8(a1, LD8(P + ((mm + 1) * R + r0) * 2), b[mm + 1]);
    }
    return _mm256_add_epi32(a0, a1);
}
/* the 8 pair broadcasts of 16 int16 by dword permutes in registers, not a store and
 * broadcast loads (the store forwarding was on the token's chain); p as vpackssdw
 * leaves it (pairs 0, 1, 4, 5, 2, 3, 6, 7): no vpermq to put the pairs in order */
MG_INLINE void bcast8(__m256i p, __m256i *b)
{
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++)
        b[mm] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32((mm & 1) | ((mm & 2) << 1) | ((mm & 4) >> 1)));
}
MG_INLINE __m256i rq32_8(__m256i acc)
{
    return _mm256_max_epi32(_mm256_min_epi32(_mm256_srai_epi32(acc, 12), _mm256_set1_epi32(32767)), _mm256_set1_epi32(-32768));
}
MG_INLINE v16 tof16(__m256i x)
{
    v16 r = {_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(x))),
             _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(x, 1)))};
    return r;
}
/* 16 rounded floats -> saturated int16 in vpackssdw's order (see bcast8) */
MG_INLINE __m256i to16p(v16 f) { return _mm256_packs_epi32(_mm256_cvtps_epi32(f.lo), _mm256_cvtps_epi32(f.hi)); }
/* rint(x * mg_rs8(a)) without waiting for the square root and the division: as the
 * AVX-512 qscale, from an approximate scale (rsqrt14, or rsqrt without AVX512VL, and a
 * Newton step), the exact one checked by a branch predicted equal */
MG_INLINE v16 qscale(v16 x, __m256 a)
{
#if defined(__AVX512VL__)
    __m256 y = _mm256_rsqrt14_ps(a);
#else
    __m256 y = _mm256_rsqrt_ps(a);
#endif
    /* x * y * (1.5 - 0.5 a y^2) as (x y) * (1.5 - (0.5 a y) y): 3 dependent steps after y, not 4 */
    __m256 corr = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_mul_ps(a, _mm256_set1_ps(0.5f)), y), y, _mm256_set1_ps(1.5f));
    __m256 se = mg_rs8(a);
#define MG_RM (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* an immediate: clang wants a constant expression */
    v16 f = {_mm256_round_ps(_mm256_mul_ps(_mm256_mul_ps(x.lo, y), corr), MG_RM), _mm256_round_ps(_mm256_mul_ps(_mm256_mul_ps(x.hi, y), corr), MG_RM)};
    __m256 el = _mm256_round_ps(_mm256_mul_ps(x.lo, se), MG_RM), eh = _mm256_round_ps(_mm256_mul_ps(x.hi, se), MG_RM);
#undef MG_RM
    if (__builtin_expect(_mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(f.lo, el, _CMP_NEQ_UQ), _mm256_cmp_ps(f.hi, eh, _CMP_NEQ_UQ))) != 0, 0)) {
        __asm__ volatile("" : "+x"(el), "+x"(eh)); /* a branch: a select would wait for se */
        f.lo = el;
        f.hi = eh;
    }
    return f;
}
/* norm: x (float, integer-valued) -> round(x * s) as float */
MG_INLINE v16 qnorm(v16 xf) { return qscale(xf, _mm256_fmadd_ps(mg_hsum8x2(v16_mul(xf, xf)), _mm256_set1_ps(MG_Q28), _mm256_set1_ps(MG_EPS))); }

MG_INLINE __m256i sat8(__m256i a) { return _mm256_max_epi32(_mm256_min_epi32(a, _mm256_set1_epi32(32767)), _mm256_set1_epi32(-32768)); }
MG_INLINE v16 i2f16(__m256i lo, __m256i hi) { v16 r = {_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi)}; return r; }

/* The residual stream (n0, x3) is kept as int32 in int16 range: sat16(a + b) is the
 * int32 sum clamped, and it converts to float without a sign extension. The hidden
 * layer is stored as vpackssdw leaves it (HP(j): the hidden pair at pair j of hb), with
 * no lane-crossing permute on the chain; vpackssdw saturates, so fc1 needs no clamp. */
MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, __m256 *z)
{
    const int16_t *w = m->raw;
    __m256i x = _mm256_adds_epi16(LD8(w + OFF_WTE + tok * 16), LD8(w + OFF_WPE + pos * 16));
    v16 n0f = qnorm(tof16(x));
    const __m256i n0lo = _mm256_cvtps_epi32(n0f.lo), n0hi = _mm256_cvtps_epi32(n0f.hi); /* |norm output| <= 2^14 */
    __m256i b[8];
    bcast8(to16p(qnorm(n0f)), b);
    const __m256 cq = _mm256_set1_ps(MG_CQQ);
    v16 qs = {_mm256_mul_ps(_mm256_cvtepi32_ps(rq32_8(mvq8(m->qkvP, 48, 0, b))), cq),
              _mm256_mul_ps(_mm256_cvtepi32_ps(rq32_8(mvq8(m->qkvP, 48, 8, b))), cq)};
    v16 kf = i2f16(rq32_8(mvq8(m->qkvP, 48, 16, b)), rq32_8(mvq8(m->qkvP, 48, 24, b)));
    v16 vf = i2f16(rq32_8(mvq8(m->qkvP, 48, 32, b)), rq32_8(mvq8(m->qkvP, 48, 40, b)));
    v16 att = mg_attention8x2(qs, kf, vf, c->K, c->V, step & 15, mg_valid_slots(step, pos));
    bcast8(to16p(att), b);
    const __m256i x3lo = sat8(_mm256_add_epi32(rq32_8(mvq8(m->woP, 16, 0, b)), n0lo));
    const __m256i x3hi = sat8(_mm256_add_epi32(rq32_8(mvq8(m->woP, 16, 8, b)), n0hi));
    bcast8(to16p(qnorm(i2f16(x3lo, x3hi))), b);
    MG_ALIGN int16_t hb[64];
    for (int o = 0; o < 4; o++)
        _mm256_store_si256((__m256i *)(hb + 16 * o),
                           _mm256_max_epi16(_mm256_packs_epi32(_mm256_srai_epi32(mvq8(m->fc1P, 64, 16 * o, b), 12),
                                                               _mm256_srai_epi32(mvq8(m->fc1P, 64, 16 * o + 8, b), 12)),
                                            _mm256_setzero_si256()));
    __asm__ volatile("" : : "r"(hb) : "memory");
#define HP(j) (8 * ((j) >> 3) + ((j) & 1) + (((j) & 2) << 1) + (((j) & 4) >> 1))
    __m256i yh[2];
    for (int half = 0; half < 2; half++) {
        __m256i g[8];
        for (int k = 0; k < 8; k++) g[k] = _mm256_setzero_si256();
        MG_UNROLL
        for (int j = 0; j < 32; j++) g[j & 7] = DP8(g[j & 7], LD8(m->fc2P + (HP(j) * 16 + 8 * half) * 2), BD8(hb, j));
        yh[half] = rq32_8(_mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(g[0], g[1]), _mm256_add_epi32(g[2], g[3])),
                                           _mm256_add_epi32(_mm256_add_epi32(g[4], g[5]), _mm256_add_epi32(g[6], g[7]))));
    }
#undef HP
    bcast8(_mm256_packs_epi32(_mm256_add_epi32(yh[0], x3lo), _mm256_add_epi32(yh[1], x3hi)), b); /* packs: the sat16 */
    for (int o = 0; o < 4; o++) z[o] = _mm256_cvtepi32_ps(_mm256_srai_epi32(mvq8(m->lmP, 32, 8 * o, b), 12));
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    MG_ALIGN float l[32];
    __m256 z[4];
    forward1(m, c, tok, pos, step, z);
    for (int o = 0; o < 4; o++) _mm256_store_ps(l + 8 * o, _mm256_mul_ps(z[o], _mm256_set1_ps(1.0f / 4096.0f)));
    memcpy(out, l, MG_VOCAB * sizeof(float));
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    __m256 z[4];
    forward1(m, c, tok, pos, step, z);
    const __m256 cz = _mm256_set1_ps(m->cz);
    for (int o = 0; o < 4; o++) z[o] = _mm256_mul_ps(z[o], cz);
    return mg_sample8x4(z, python, r, u);
}

#elif defined(MG_NEON)
/* 4 outputs r0..r0+3 of a pair-transposed matrix with R rows over np pair-columns */
MG_INLINE int32x4_t mvq4(const int16_t *P, int R, int r0, const int16_t *xb, int np)
{
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
    for (int mm = 0; mm < np; mm++) {
        int16x4x2_t wp = vld2_s16(P + (mm * R + r0) * 2);
        a0 = vmlal_n_s16(a0, wp.val[0], xb[2 * mm]);
        a1 = vmlal_n_s16(a1, wp.val[1], xb[2 * mm + 1]);
    }
    return vaddq_s32(a0, a1);
}
MG_INLINE int16x4_t rq4(int32x4_t acc) { return vqmovn_s32(vshrq_n_s32(acc, 12)); }
MG_INLINE float32x4_t rqf4(int32x4_t acc) { return vcvtq_f32_s32(vmovl_s16(rq4(acc))); }
/* norm of 16 int16 (x) -> rounded floats */
MG_INLINE n16 qnorm4(const int16_t *x)
{
    n16 xf, sq;
    for (int h = 0; h < 4; h++) {
        xf.v[h] = vcvtq_f32_s32(vmovl_s16(vld1_s16(x + 4 * h)));
        sq.v[h] = vmulq_f32(xf.v[h], xf.v[h]);
    }
    float32x4_t s = mg_rs4(vfmaq_f32(vdupq_n_f32(MG_EPS), mg_hsum4x4(sq), vdupq_n_f32(MG_Q28)));
    for (int h = 0; h < 4; h++) xf.v[h] = vrndnq_f32(vmulq_f32(xf.v[h], s));
    return xf;
}
MG_INLINE void store16(int16_t *dst, n16 f)
{
    for (int h = 0; h < 4; h++) vst1_s16(dst + 4 * h, vqmovn_s32(vcvtnq_s32_f32(f.v[h])));
}

MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, float32x4_t *z)
{
    const int16_t *w = m->raw;
    MG_ALIGN int16_t x[16], n0[16], xb[16], x3[16], hb[64];
    for (int i = 0; i < 16; i += 8)
        vst1q_s16(x + i, vqaddq_s16(vld1q_s16(w + OFF_WTE + tok * 16 + i), vld1q_s16(w + OFF_WPE + pos * 16 + i)));
    n16 n0f = qnorm4(x);
    store16(n0, n0f);
    store16(xb, qnorm4(n0));
    n16 qs, kf, vf;
    for (int h = 0; h < 4; h++) {
        qs.v[h] = vmulq_f32(rqf4(mvq4(m->qkvP, 48, 4 * h, xb, 8)), vdupq_n_f32(MG_CQQ));
        kf.v[h] = rqf4(mvq4(m->qkvP, 48, 16 + 4 * h, xb, 8));
        vf.v[h] = rqf4(mvq4(m->qkvP, 48, 32 + 4 * h, xb, 8));
    }
    store16(xb, mg_attention4x4(qs, kf, vf, c->K, c->V, step & 15, mg_valid_slots(step, pos)));
    for (int h = 0; h < 4; h++) vst1_s16(x3 + 4 * h, vqadd_s16(rq4(mvq4(m->woP, 16, 4 * h, xb, 8)), vld1_s16(n0 + 4 * h)));
    store16(xb, qnorm4(x3));
    for (int o = 0; o < 16; o++) vst1_s16(hb + 4 * o, vmax_s16(rq4(mvq4(m->fc1P, 64, 4 * o, xb, 8)), vdup_n_s16(0)));
    for (int h = 0; h < 4; h++) vst1_s16(xb + 4 * h, vqadd_s16(rq4(mvq4(m->fc2P, 16, 4 * h, hb, 32)), vld1_s16(x3 + 4 * h)));
    for (int o = 0; o < 8; o++) z[o] = vcvtq_f32_s32(vshrq_n_s32(mvq4(m->lmP, 32, 4 * o, xb, 8), 12));
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    MG_ALIGN float l[32];
    float32x4_t z[8];
    forward1(m, c, tok, pos, step, z);
    for (int o = 0; o < 8; o++) vst1q_f32(l + 4 * o, vmulq_n_f32(z[o], 1.0f / 4096.0f));
    memcpy(out, l, MG_VOCAB * sizeof(float));
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    float32x4_t z[8];
    forward1(m, c, tok, pos, step, z);
    for (int o = 0; o < 8; o++) z[o] = vmulq_n_f32(z[o], m->cz);
    return mg_sample4x8(z, python, r, u);
}

#else /* scalar: the reference for the canonical order */

MG_INLINE int32_t sat16(int32_t v) { return v < -32768 ? -32768 : v > 32767 ? 32767 : v; }
MG_INLINE int32_t rq(uint32_t acc) { return sat16((int32_t)acc >> 12); }

MG_INLINE uint32_t dotq(const int16_t *w, const int16_t *x, int n)
{
    uint32_t a = 0;
    for (int j = 0; j < n; j++) a += (uint32_t)((int32_t)w[j] * (int32_t)x[j]);
    return a;
}

/* out = sat16(rint(x * s)) */
static void qnorm_s(const int16_t *x, int16_t *out)
{
    float xf[16], sq[16];
    for (int i = 0; i < 16; i++) {
        xf[i] = (float)x[i];
        sq[i] = xf[i] * xf[i];
    }
    float s = mg_rs_s(fmaf(mg_tree16_s(sq), MG_Q28, MG_EPS));
    for (int i = 0; i < 16; i++) out[i] = (int16_t)sat16((int32_t)rintf(xf[i] * s));
}

static void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, int32_t *logits)
{
    const int16_t *w = m->raw;
    int16_t x[16], n0[16], n1[16], xa[16], x3[16], n2[16], hid[64], y[16];
    float qs[16], att[16];
    for (int i = 0; i < 16; i++) x[i] = (int16_t)sat16(w[OFF_WTE + tok * 16 + i] + w[OFF_WPE + pos * 16 + i]);
    qnorm_s(x, n0);
    qnorm_s(n0, n1);
    const int slot = step & 15;
    for (int o = 0; o < 16; o++) {
        qs[o] = (float)rq(dotq(w + OFF_WQ + o * 16, n1, 16)) * MG_CQQ;
        c->K[slot * 16 + o] = (float)rq(dotq(w + OFF_WK + o * 16, n1, 16));
        c->V[slot * 16 + o] = (float)rq(dotq(w + OFF_WV + o * 16, n1, 16));
    }
    mg_attention_s(qs, c->K, c->V, mg_valid_slots(step, pos), att);
    for (int o = 0; o < 16; o++) xa[o] = (int16_t)sat16((int32_t)rintf(att[o]));
    for (int o = 0; o < 16; o++) x3[o] = (int16_t)sat16(rq(dotq(w + OFF_WO + o * 16, xa, 16)) + n0[o]);
    qnorm_s(x3, n2);
    for (int o = 0; o < 64; o++) {
        int32_t h = rq(dotq(w + OFF_FC1 + o * 16, n2, 16));
        hid[o] = (int16_t)(h > 0 ? h : 0);
    }
    for (int o = 0; o < 16; o++) y[o] = (int16_t)sat16(rq(dotq(w + OFF_FC2 + o * 64, hid, 64)) + x3[o]);
    for (int v = 0; v < MG_VOCAB; v++) logits[v] = (int32_t)dotq(w + OFF_LM + v * 16, y, 16) >> 12;
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    int32_t l[MG_VOCAB];
    forward1(m, c, tok, pos, step, l);
    for (int v = 0; v < MG_VOCAB; v++) out[v] = (float)l[v] * (1.0f / 4096.0f);
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    int32_t l[MG_VOCAB];
    float z[MG_VOCAB];
    forward1(m, c, tok, pos, step, l);
    for (int v = 0; v < MG_VOCAB; v++) z[v] = (float)l[v] * m->cz;
    return mg_sample_s(z, python, r, u);
}
#endif

/* ------------------------------------------------------------ the entry points */


/* ====================================================================== offline */

#if defined(MG_SOA_Q) && !defined(MG_NO_SOA)
#define MG_KERNEL_SOA 1

MG_INLINE VI sat16V(VI a) { return vi_max(vi_min(a, vi_set1(32767)), vi_set1(-32768)); }
/* acc >> 12, saturated to int16 when sat (without: the model's bound says it is the identity) */
MG_INLINE VI rq1V(VI acc, int sat)
{
    const VI s = vi_srai(acc, 12);
    return sat ? sat16V(s) : s;
}
/* the pair (rq(lo), rq(hi)) */
MG_INLINE VI rq2V(VI lo, VI hi) { return vi_pack2(vi_srai(lo, 12), vi_srai(hi, 12)); }

#if defined(MG_AVX2)
/* AVX2 offline (Zen 3 measured): two batches of 8 streams per pass, phase by phase, so
 * one batch's serial steps (a norm, a softmax, the sampler) overlap the other's work,
 * and each broadcast weight pair of a matvec serves both batches' inputs (the vector
 * pipes, not the loads, bound it: every other operation counts). */
#define MG_SOA_NB 2
typedef struct {
    mg_ringV ring;
    MG_ALIGN VF qs[16];    /* scaled queries */
    MG_ALIGN VF att[16];
    MG_ALIGN VI in[8];     /* the pairs the next matvec reads: n1, the attention, n2, y */
    MG_ALIGN VI n0[8];     /* the residual stream, pairs */
    MG_ALIGN VI x3[8];
    MG_ALIGN VI hp[32];    /* hidden, as pairs */
} soa_t;
#else
typedef struct {
    mg_ringV ring;
    MG_ALIGN VF qs[16];    /* scaled queries */
    MG_ALIGN VF att[16];
    MG_ALIGN VI hp[32];    /* hidden, as pairs */
} soa_t;
#endif

/* float(x) of 8 pairs -> 16 floats */
MG_INLINE void unpairV(const VI *p, VF *f)
{
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) {
        f[2 * mm] = vi_to_f(vi_lo16(p[mm]));
        f[2 * mm + 1] = vi_to_f(vi_hi16(p[mm]));
    }
}
/* the norm's scale of 16 floats */
MG_INLINE VF qsV(const VF *x)
{
    VF sq[16];
    MG_UNROLL
    for (int i = 0; i < 16; i++) sq[i] = vf_mul(x[i], x[i]);
    return mg_rsV(vf_fma(mg_tree16V(sq), vf_set1(MG_Q28), vf_set1(MG_EPS)));
}
/* pairs of rint(x * s) (|x * s| <= 2^14: no saturation) */
MG_INLINE void qpairsV(const VF *x, VF s, VI *out)
{
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) out[mm] = vi_pack2(vf_to_i(vf_mul(x[2 * mm], s)), vf_to_i(vf_mul(x[2 * mm + 1], s)));
}
/* norm of 8 pairs -> 8 pairs */
MG_INLINE void qnormV(const VI *xp, VI *out)
{
    VF x[16];
    unpairV(xp, x);
    qpairsV(x, qsV(x), out);
}
/* the two entry norms of the embedding's pairs: n0 (pairs, the residual) and n1 (pairs);
 * n0 stays float for the second norm (rint as a rounding, not a conversion, a pack, an
 * unpack and a conversion back) */
MG_INLINE void qnorm01V(const VI *xp, VI *n0, VI *n1)
{
    VF x[16], n0f[16];
    unpairV(xp, x);
    const VF s0 = qsV(x);
    MG_UNROLL
    for (int i = 0; i < 16; i++) n0f[i] = vf_rint(vf_mul(x[i], s0));
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) n0[mm] = vi_pack2(vf_to_i(n0f[2 * mm]), vf_to_i(n0f[2 * mm + 1]));
    qpairsV(n0f, qsV(n0f), n1);
}

/* acc + x . the weight pair at p, broadcast: gcc 12 keeps the broadcast a separate
 * instruction; the embedded broadcast (one instruction, as clang emits) */
#if defined(MG_AVX512) && defined(__AVX512VNNI__) && !defined(__clang__)
MG_INLINE VI dpbc(VI acc, VI x, const int16_t *p)
{
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*(const int32_t *)p));
    return acc;
}
#else
#define dpbc(acc, x, p) vi_dpwssd(acc, x, vi_bc32(p))
#endif

/* sum_m x[m] . w pair m (w: a row of int16, read as int32 pairs) */
MG_INLINE VI dot8(const int16_t *w, const VI *xp)
{
    VI a0 = dpbc(vi_zero(), xp[0], w), a1 = dpbc(vi_zero(), xp[1], w + 2);
    a0 = dpbc(a0, xp[2], w + 4);
    a1 = dpbc(a1, xp[3], w + 6);
    a0 = dpbc(a0, xp[4], w + 8);
    a1 = dpbc(a1, xp[5], w + 10);
    a0 = dpbc(a0, xp[6], w + 12);
    a1 = dpbc(a1, xp[7], w + 14);
    return vi_add(a0, a1);
}

/* q (scaled), k, v of the pairs n1; sat: saturate to int16 (without: the model's bound
 * says it is the identity; measured -1 to -2 cycles/token offline) */
MG_INLINE void qkvV(const int16_t *w, const VI *n1, VF *qs, VF *k, VF *v, int sat)
{
    for (int o = 0; o < 16; o++) {
        const VI aq = rq1V(dot8(w + OFF_WQ + o * 16, n1), sat), ak = rq1V(dot8(w + OFF_WK + o * 16, n1), sat),
                 av = rq1V(dot8(w + OFF_WV + o * 16, n1), sat);
        qs[o] = vf_mul(vi_to_f(aq), vf_set1(MG_CQQ));
        k[o] = vi_to_f(ak);
        v[o] = vi_to_f(av);
    }
}

/* fc2's row block (measured): all 16 rows unrolled with 32 registers; with 16, two
 * blocks of 8 and the pair loop rolled (unrolled, the compiler keeps all hidden pairs
 * in registers and spills). gcc on AVX2: four blocks of 4, the pair loop unrolled by 4
 * (with 8 rows it hoists all 8 broadcasts, runs out of registers and keeps an
 * accumulator in memory: 71 -> 44 cycles/token on Zen 3) */
#if defined(MG_AVX512)
#define MG_FC2R 16
#define MG_FC2_LOOP MG_UNROLL
#elif defined(MG_AVX2) && !defined(__clang__)
#define MG_FC2R 4
#define MG_FC2_LOOP MG_UNROLL4
#else
#define MG_FC2R 8
#define MG_FC2_LOOP MG_ROLL
#endif

/* fc1 and lm_head unrolled (AVX-512, Zen 5, offline 128 streams x 5000 on one core, min
 * of 20, four runs): gcc 118.5-119.5 -> 114.4-115.6 cycles/token, clang 115.7-117.2 ->
 * 115.2-115.7; each loop alone gives most of it */
#if defined(MG_AVX512)
#define MG_FC1_LOOP MG_UNROLL4
#define MG_LM_LOOP MG_UNROLL
#else
#define MG_FC1_LOOP
#define MG_LM_LOOP
#endif

MG_INLINE void forward1V(const model_t *m, soa_t *st, VI tok, VI pos, int maxpos, int step, VF *z, float scale)
{
    const int16_t *w = m->raw;
    VI xp[8], n0[8], n1[8], ap[8], x3[8], n2[8], yp[8];
#if defined(MG_AVX512)
    /* lane permutes of the per-pair tables (vpermt2d on tok, vpermd on pos), not 16 row
     * loads and a 16 x 16 transpose */
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) {
        const int32_t *et = m->embP + 48 * mm;
        xp[mm] = vi_adds16(_mm512_permutex2var_epi32(vi_load(et), tok, vi_load(et + 16)),
                           _mm512_permutexvar_epi32(pos, vi_load(et + 32)));
    }
#elif defined(MG_AVX2)
    mg_embed8q(w + OFF_WTE, w + OFF_WPE, tok, pos, xp);
#else
    VI ti = vi_slli(tok, 3), pi = vi_slli(pos, 3);
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++)
        xp[mm] = vi_adds16(vi_gather(w + OFF_WTE, vi_add(ti, vi_set1(mm))), vi_gather(w + OFF_WPE, vi_add(pi, vi_set1(mm))));
#endif
    qnorm01V(xp, n0, n1);
    VF *qs = st->qs, *k = st->ring.K[step & 15], *v = st->ring.V[step & 15];
    /* the MG_REPEAT hooks (phase_costs.py) pass this pass's register arrays through memory
     * in profiling builds (MG_REPEAT_FRESH, MG_REPEAT_KEEP); in others they are nothing */
    MG_REPEAT(MG_PH_QKV) {
        MG_REPEAT_FRESH(n1);
        if (m->qkv_fast) /* two calls, so each inlined copy has sat as a constant */
            qkvV(w, n1, qs, k, v, 0);
        else
            qkvV(w, n1, qs, k, v, 1);
    }
    MG_REPEAT(MG_PH_ATTENTION) mg_attentionV(&st->ring, qs, pos, maxpos, step, !m->att_fast, st->att);
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) {
        ap[mm] = vi_pack2(vf_to_i(st->att[2 * mm]), vf_to_i(st->att[2 * mm + 1]));
    }
    MG_REPEAT(MG_PH_WO) {
        MG_REPEAT_FRESH(ap);
        MG_REPEAT_FRESH(n0);
        for (int mm = 0; mm < 8; mm++)
            x3[mm] = vi_adds16(rq2V(dot8(w + OFF_WO + 32 * mm, ap), dot8(w + OFF_WO + 32 * mm + 16, ap)), n0[mm]);
        MG_REPEAT_KEEP(x3);
    }
    qnormV(x3, n2);
    MG_REPEAT(MG_PH_FC1) {
        MG_REPEAT_FRESH(n2);
        MG_FC1_LOOP
        for (int mm = 0; mm < 32; mm++)
            st->hp[mm] = vi_max16(rq2V(dot8(w + OFF_FC1 + 32 * mm, n2), dot8(w + OFF_FC1 + 32 * mm + 16, n2)), vi_zero());
    }
    /* fc2: the hidden pairs outermost, each loaded once for MG_FC2R rows (one chain each) */
    MG_REPEAT(MG_PH_FC2) {
        MG_REPEAT_FRESH(x3);
        for (int r0 = 0; r0 < 16; r0 += MG_FC2R) {
            VI acc[MG_FC2R];
            MG_UNROLL
            for (int r = 0; r < MG_FC2R; r++) acc[r] = vi_zero();
            MG_FC2_LOOP
            for (int j = 0; j < 32; j++) {
                const VI hj = st->hp[j];
                MG_UNROLL
                for (int r = 0; r < MG_FC2R; r++) acc[r] = dpbc(acc[r], hj, w + OFF_FC2 + (r0 + r) * 64 + 2 * j);
            }
            MG_UNROLL
            for (int r = 0; r < MG_FC2R; r += 2) yp[(r0 + r) / 2] = vi_adds16(rq2V(acc[r], acc[r + 1]), x3[(r0 + r) / 2]);
        }
        MG_REPEAT_KEEP(yp);
    }
    const VF cz = vf_set1(scale);
    MG_REPEAT(MG_PH_LM) {
        MG_REPEAT_FRESH(yp);
        MG_LM_LOOP
        for (int v2 = 0; v2 < MG_VOCAB; v2++) z[v2] = vf_mul(vi_to_f(vi_srai(dot8(w + OFF_LM + v2 * 16, yp), 12)), cz);
    }
}

#if defined(MG_AVX2)

/* an accumulator kept in its order (gcc would reassociate the integer sums: all the
 * products first, spilled) */
#define MG_KEEP(v) __asm__("" : "+x"(v))

/* R rows (16 columns, 8 pairs, row stride 16) for nx batches' input pairs x[i]: the
 * pairs outermost, each weight pair broadcast once for both batches; a[i * R + r] */
MG_INLINE void mvV8(const int16_t *w, const VI *const *x, int nx, int R, VI *a)
{
    MG_UNROLL
    for (int k = 0; k < 2 * 8; k++) a[k] = vi_zero();
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) {
        VI xv[2];
        MG_UNROLL
        for (int i = 0; i < 2; i++) xv[i] = x[i][mm];
        MG_UNROLL
        for (int r = 0; r < 8; r++) {
            if (r >= R) break;
            const VI wb = vi_bc32(w + r * 16 + 2 * mm);
            MG_UNROLL
            for (int i = 0; i < 2; i++)
                if (i < nx) {
                    a[i * R + r] = vi_dpwssd(a[i * R + r], xv[i], wb);
                    MG_KEEP(a[i * R + r]);
                }
        }
    }
}

/* the embedding and the two entry norms: n0 (the residual) and n1 (the next matvec's input) */
MG_INLINE void fq_embed(const model_t *m, soa_t *st, VI tok, VI pos)
{
    VI xp[8];
    mg_embed8q(m->raw + OFF_WTE, m->raw + OFF_WPE, tok, pos, xp);
    qnorm01V(xp, st->n0, st->in);
}

/* R rows of q, k or v from row o of wq/wk/wv: the queries scaled, k and v into the ring;
 * sat as in rq1V */
MG_INLINE void fq_qkv_rows(const int16_t *w, const VI *const *x, int nx, int R, VF *const *dst, int o, VF sc, int q,
                           int sat)
{
    VI a[16];
    mvV8(w + o * 16, x, nx, R, a);
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        MG_UNROLL
        for (int r = 0; r < 8; r++)
            if (i < nx && r < R) {
                VF f = vi_to_f(rq1V(a[i * R + r], sat));
                dst[i][o + r] = q ? vf_mul(f, sc) : f;
            }
}
MG_INLINE void fq_qkv_sat(const model_t *m, soa_t *st, int nx, int step, int sat)
{
    const VI *x[2] = {st[0].in, st[nx - 1].in};
    const VF cq = vf_set1(MG_CQQ);
    for (int g = 0; g < 3; g++) {
        VF *dst[2];
        for (int i = 0; i < 2; i++) {
            soa_t *s = &st[i < nx ? i : 0];
            dst[i] = g == 0 ? s->qs : g == 1 ? s->ring.K[step & 15] : s->ring.V[step & 15];
        }
        const int16_t *w = m->raw + OFF_WQ + g * 256;
        fq_qkv_rows(w, x, nx, 6, dst, 0, cq, g == 0, sat);
        fq_qkv_rows(w, x, nx, 6, dst, 6, cq, g == 0, sat);
        fq_qkv_rows(w, x, nx, 4, dst, 12, cq, g == 0, sat);
    }
}
/* two calls, so each inlined copy has sat as a constant */
MG_INLINE void fq_qkv(const model_t *m, soa_t *st, int nx, int step)
{
    if (m->qkv_fast)
        fq_qkv_sat(m, st, nx, step, 0);
    else
        fq_qkv_sat(m, st, nx, step, 1);
}

/* the attention's output as pairs (sat16 by the pack) */
MG_INLINE void fq_attpairs(soa_t *st)
{
    MG_UNROLL
    for (int mm = 0; mm < 8; mm++) st->in[mm] = vi_pack2(vf_to_i(st->att[2 * mm]), vf_to_i(st->att[2 * mm + 1]));
}

/* pairs (rq(a[2k]), rq(a[2k+1])) + res, saturating: R rows from row o */
MG_INLINE void rq_res(const VI *a, int nx, int R, VI *const *out, const VI *const *res, int o)
{
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        MG_UNROLL
        for (int r = 0; r < 8; r += 2)
            if (i < nx && r < R)
                out[i][(o + r) / 2] = vi_adds16(rq2V(a[i * R + r], a[i * R + r + 1]), res[i][(o + r) / 2]);
}

/* wo + the residual: x3 */
MG_INLINE void fq_wo(const model_t *m, soa_t *st, int nx)
{
    const VI *x[2] = {st[0].in, st[nx - 1].in}, *res[2] = {st[0].n0, st[nx - 1].n0};
    VI *out[2] = {st[0].x3, st[nx - 1].x3};
    const int R = 4;
    for (int o = 0; o < 16; o += R) {
        VI a[16];
        mvV8(m->raw + OFF_WO + o * 16, x, nx, R, a);
        rq_res(a, nx, R, out, res, o);
    }
}

/* the MLP's norm: n2 pairs from x3 */
MG_INLINE void fq_norm2(soa_t *st)
{
    VF x[16];
    unpairV(st->x3, x);
    qpairsV(x, qsV(x), st->in);
}

/* fc1 + relu: the hidden pairs */
MG_INLINE void fq_fc1(const model_t *m, soa_t *st, int nx)
{
    const VI *x[2] = {st[0].in, st[nx - 1].in};
    const int R = 4;
    for (int o = 0; o < 64; o += R) {
        VI a[16];
        mvV8(m->raw + OFF_FC1 + o * 16, x, nx, R, a);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            MG_UNROLL
            for (int r = 0; r < 8; r += 2)
                if (i < nx && r < R) st[i].hp[(o + r) / 2] = vi_max16(rq2V(a[i * R + r], a[i * R + r + 1]), vi_zero());
    }
}

/* fc2 + the residual: y pairs. The hidden pairs outermost, each broadcast weight pair
 * for both batches */
MG_INLINE void fq_fc2(const model_t *m, soa_t *st, int nx)
{
    const VI *res[2] = {st[0].x3, st[nx - 1].x3};
    VI *out[2] = {st[0].in, st[nx - 1].in};
    const int R = 4;
    for (int o = 0; o < 16; o += R) {
        const VI *h[2] = {st[0].hp, st[nx - 1].hp};
        MG_OPAQUE(h[0]);
        MG_OPAQUE(h[1]);
        VI a[16];
        MG_UNROLL
        for (int k = 0; k < 16; k++) a[k] = vi_zero();
        MG_UNROLL4
        for (int j = 0; j < 32; j++) {
            VI hv[2] = {h[0][j], h[1][j]};
            MG_UNROLL
            for (int r = 0; r < 8; r++) {
                if (r >= R) break;
                const VI wb = vi_bc32(m->raw + OFF_FC2 + (o + r) * 64 + 2 * j);
                MG_UNROLL
                for (int i = 0; i < 2; i++)
                    if (i < nx) {
                        a[i * R + r] = vi_dpwssd(a[i * R + r], hv[i], wb);
                        MG_KEEP(a[i * R + r]);
                    }
            }
        }
        rq_res(a, nx, R, out, res, o);
    }
}

/* lm_head: the logits * scale, z[i * MG_VOCAB + v] */
MG_INLINE void fq_lm_rows(const model_t *m, const VI *const *x, int nx, int R, int o, VF *z, VF cz)
{
    VI a[16];
    mvV8(m->raw + OFF_LM + o * 16, x, nx, R, a);
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        MG_UNROLL
        for (int r = 0; r < 8; r++)
            if (i < nx && r < R) z[i * MG_VOCAB + o + r] = vf_mul(vi_to_f(vi_srai(a[i * R + r], 12)), cz);
}
MG_INLINE void fq_lm(const model_t *m, soa_t *st, int nx, VF *z, float scale)
{
    const VI *x[2] = {st[0].in, st[nx - 1].in};
    const VF cz = vf_set1(scale);
    for (int o = 0; o < 24; o += 6) fq_lm_rows(m, x, nx, 6, o, z, cz);
    fq_lm_rows(m, x, nx, 3, 24, z, cz);
}

/* one token for nx batches, phase by phase (called with 2: a single batch takes
 * forward1V, which is faster for one) */
MG_INLINE void forward2V(const model_t *m, soa_t *st, int nx, const VI *tok, const VI *pos, const int *maxpos, int step,
                         VF *z, float scale)
{
    for (int b = 0; b < nx; b++) fq_embed(m, &st[b], tok[b], pos[b]);
    MG_REPEAT(MG_PH_QKV) fq_qkv(m, st, nx, step);
    for (int b = 0; b < nx; b++) {
        MG_REPEAT(MG_PH_ATTENTION) mg_attentionV(&st[b].ring, st[b].qs, pos[b], maxpos[b], step, !m->att_fast, st[b].att);
        fq_attpairs(&st[b]);
    }
    MG_REPEAT(MG_PH_WO) fq_wo(m, st, nx);
    for (int b = 0; b < nx; b++) fq_norm2(&st[b]);
    MG_REPEAT(MG_PH_FC1) fq_fc1(m, st, nx);
    MG_REPEAT(MG_PH_FC2) fq_fc2(m, st, nx);
    MG_REPEAT(MG_PH_LM) fq_lm(m, st, nx, z, scale);
}

/* two batches together; one (a last partial batch, the server, the probe) on the
 * one-batch pass below */
static void forwardV(const model_t *m, soa_t *st, int nb, const VI *tok, const VI *pos, const int *maxpos, int step,
                     VF *z, float scale)
{
    if (nb == 2)
        forward2V(m, st, 2, tok, pos, maxpos, step, z, scale);
    else
        forward1V(m, st, tok[0], pos[0], maxpos[0], step, z, scale);
}

#else
/* one token for nb batches of VW streams: logits nb x MG_VOCAB */
static void forwardV(const model_t *m, soa_t *st, int nb, const VI *tok, const VI *pos, const int *maxpos, int step,
                     VF *z, float scale)
{
    for (int b = 0; b < nb; b++) forward1V(m, &st[b], tok[b], pos[b], maxpos[b], step, z + b * MG_VOCAB, scale);
}

#endif
#endif

#define MG_PREFIX mg_q412
#define MG_LOGIT_UNIT (1.0f / 4096.0f)
#define MG_SOA_MIN_LANES (3 * VW / 8) /* default; the autotuner sets the measured crossover */
#include "mg_driver.h"
