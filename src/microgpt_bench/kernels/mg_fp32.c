/* mg_fp32.c: microGPT in float32, single stream and offline (many streams).
 *
 * Per token, in the canonical order of mg_common.h (scalar forward1 below):
 *   x = wte[tok] + wpe[pos]; ss = tree16(x*x); s0 = rs(fma(ss, 1/16, eps));
 *   S = rs(fma(ss, (1+eps)/16, eps^2)); x1 = x * s0 (the residual)
 *   qs = mv16(Wq, x) * (S * 0.5 log2 e); k = mv16(Wk, x) * S; v = mv16(Wv, x) * S
 *   att = attention(qs, k, v); x3 = mv16b(Wo, att) + x1
 *   S3 = rs(fma(tree16(x3*x3), 1/16, eps)); h = max(mv16(fc1, x3), 0)
 *   y = fma(mv64(fc2, h), S3, x3); logits = mv16b(lm_head, y)
 * Layouts:
 *   - single stream: weights transposed (a column per input element); an input
 *     element is broadcast (one vbroadcastss load after one store) and multiplied
 *     into whole output vectors with the canonical chains: no horizontal reductions in
 *     the matvecs. The KV cache is the 16-slot ring in a compact layout (4 slots x 4
 *     heads per vector), attention over 4 fixed blocks, no branches on positions.
 *   - offline: VW streams per vector (structure of arrays), each weight broadcast
 *     once per batch (fc2: once per two), per-stream positions handled with masks;
 *     slots no stream of the batch can see are skipped. Two batches run together,
 *     phase by phase (forwardV), so one's serial stretches overlap the other's work.
 */
#include "mg_common.h"

typedef struct {
    float cz;                          /* log2(e) / T */
    int greedy;                        /* temperature 0: next token = argmax */
    int batch_min;                     /* offline: fewer live streams run one by one (0: default) */
    int att_fast;                      /* offline: every attention score provably in the fast range */
    int pad[12];
    MG_ALIGN float raw[MG_NPARAM + 16]; /* C flat order (rows), for SoA and scalar; a zero row after lm_head */
    MG_ALIGN float wqkvT[16 * 48];     /* [j][o]: o<16 q, <32 k, <48 v */
    MG_ALIGN float woT[16 * 16];       /* [j][o] */
    MG_ALIGN float fc1T[16 * 64];      /* [j][o] */
    MG_ALIGN float fc2T[64 * 16];      /* [j][o] */
    MG_ALIGN float lmT[16 * 32];       /* [j][v], v >= 27 zero */
    MG_ALIGN float embT[16 * 48];      /* [j][v] wte (v < 32, v >= 27 zero), [j][32 + p] wpe: AVX-512 offline's tables */
} model_t;

/* the per-stream cache of the single-stream paths: K ring (layout depends on the
 * path) and V ring [slot][16] */
typedef struct {
    MG_ALIGN float K[256];
    MG_ALIGN float V[256];
} cache_t;

MG_EXPORT int mg_fp32_abi(void) { return MG_ABI; }
MG_EXPORT const char *mg_fp32_simd(void) { return MG_SIMD_NAME; }

MG_EXPORT void *mg_fp32_create(const float *w, float temperature)
{
    if (!w || !(temperature >= 0.0f) || !isfinite(temperature)) return NULL;
    for (int i = 0; i < MG_NPARAM; i++)
        if (!isfinite(w[i])) return NULL;
    model_t *m = mg_alloc(sizeof(model_t));
    if (!m) return NULL;
    m->greedy = temperature == 0.0f;
    /* greedy: z keeps the logits' order (a positive power-of-two scale) */
    m->cz = m->greedy ? 1.0f : (float)(1.4426950408889634 / (double)temperature);
    memcpy(m->raw, w, MG_NPARAM * sizeof(float));
    /* A score is qs_h . k_h with qs = 0.5 log2(e) Wq xn and k = Wk xn, xn the twice-normed
     * x (|xn| <= 4): |score| <= 0.5 log2(e) 16 |Wq_h|_F |Wk_h|_F. Where that is <= 32 (half
     * the fast range's 64: room for rounding) for every head, the offset is 0 for every
     * input, and the offline attention skips its max/min and their test. */
    m->att_fast = 1;
    for (int h = 0; h < MG_HEADS; h++) {
        double fq = 0.0, fk = 0.0;
        for (int i = 4 * h * 16; i < (4 * h + 4) * 16; i++) {
            fq += (double)w[OFF_WQ + i] * w[OFF_WQ + i];
            fk += (double)w[OFF_WK + i] * w[OFF_WK + i];
        }
        m->att_fast &= 0.5 * 1.4426950408889634 * 16.0 * sqrt(fq) * sqrt(fk) <= 32.0;
    }
    for (int o = 0; o < 16; o++)
        for (int j = 0; j < 16; j++) {
            m->wqkvT[j * 48 + o] = w[OFF_WQ + o * 16 + j];
            m->wqkvT[j * 48 + 16 + o] = w[OFF_WK + o * 16 + j];
            m->wqkvT[j * 48 + 32 + o] = w[OFF_WV + o * 16 + j];
            m->woT[j * 16 + o] = w[OFF_WO + o * 16 + j];
        }
    for (int o = 0; o < 64; o++)
        for (int j = 0; j < 16; j++) m->fc1T[j * 64 + o] = w[OFF_FC1 + o * 16 + j];
    for (int o = 0; o < 16; o++)
        for (int j = 0; j < 64; j++) m->fc2T[j * 16 + o] = w[OFF_FC2 + o * 64 + j];
    for (int v = 0; v < MG_VOCAB; v++)
        for (int j = 0; j < 16; j++) m->lmT[j * 32 + v] = w[OFF_LM + v * 16 + j];
    for (int j = 0; j < 16; j++) {
        for (int v = 0; v < MG_VOCAB; v++) m->embT[j * 48 + v] = w[OFF_WTE + v * 16 + j];
        for (int p = 0; p < MG_CTX; p++) m->embT[j * 48 + 32 + p] = w[OFF_WPE + p * 16 + j];
    }
    return m;
}

MG_EXPORT void mg_fp32_destroy(void *m) { free(m); }

/* ================================================================ single stream */

#if defined(MG_AVX512)
/* broadcasts of a vector's elements go through memory: one store, then one
 * vbroadcastss load per element (load ports, not the FP pipes; no index registers) */
#define SPILL(buf, v) do { _mm512_store_ps(buf, v); __asm__ volatile("" : : "r"(buf) : "memory"); } while (0)
#define BM(buf, j) _mm512_set1_ps((buf)[j])
/* the 16 broadcasts of v's elements in registers: 4 block copies (cross-lane), then
 * in-lane permutes */
MG_INLINE void bcast16(__m512 v, __m512 *b)
{
    const __m512 c0 = _mm512_shuffle_f32x4(v, v, 0x00), c1 = _mm512_shuffle_f32x4(v, v, 0x55);
    const __m512 c2 = _mm512_shuffle_f32x4(v, v, 0xAA), c3 = _mm512_shuffle_f32x4(v, v, 0xFF);
#define P4_(c, j) b[4 * (j) + 0] = _mm512_permute_ps(c, 0x00), b[4 * (j) + 1] = _mm512_permute_ps(c, 0x55), \
                 b[4 * (j) + 2] = _mm512_permute_ps(c, 0xAA), b[4 * (j) + 3] = _mm512_permute_ps(c, 0xFF)
    P4_(c0, 0); P4_(c1, 1); P4_(c2, 2); P4_(c3, 3); /* immediates (clang) */
#undef P4_
}

/* one token: logits lo (ids 0..15) and hi (16..26) */
MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, __m512 *zlo, __m512 *zhi)
{
    const float *w = m->raw;
    MG_ALIGN float xb[16], hb[64];
    __m512 x = _mm512_add_ps(_mm512_load_ps(w + OFF_WTE + tok * 16), _mm512_load_ps(w + OFF_WPE + pos * 16));
    SPILL(xb, x);
    __m512 ss = mg_hsum16(_mm512_mul_ps(x, x));
    __m512 x1 = _mm512_mul_ps(x, mg_rs16(_mm512_fmadd_ps(ss, _mm512_set1_ps(MG_N1), _mm512_set1_ps(MG_EPS))));
    __m512 S = mg_rs16(_mm512_fmadd_ps(ss, _mm512_set1_ps(MG_N2), _mm512_set1_ps(MG_EPS2)));

    /* q, k, v = mv16(W, x) * S: the matvecs run while the norm is computed */
    const float *W = m->wqkvT;
    __m512 q[4], k[4], v[4];
    for (int j = 0; j < 4; j++) {
        __m512 b = BM(xb, j);
        q[j] = _mm512_mul_ps(b, _mm512_load_ps(W + j * 48));
        k[j] = _mm512_mul_ps(b, _mm512_load_ps(W + j * 48 + 16));
        v[j] = _mm512_mul_ps(b, _mm512_load_ps(W + j * 48 + 32));
    }
    MG_UNROLL
    for (int j = 4; j < 16; j++) {
        __m512 b = BM(xb, j);
        q[j & 3] = _mm512_fmadd_ps(b, _mm512_load_ps(W + j * 48), q[j & 3]);
        k[j & 3] = _mm512_fmadd_ps(b, _mm512_load_ps(W + j * 48 + 16), k[j & 3]);
        v[j & 3] = _mm512_fmadd_ps(b, _mm512_load_ps(W + j * 48 + 32), v[j & 3]);
    }
    __m512 qv = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(q[0], q[1]), _mm512_add_ps(q[2], q[3])),
                              _mm512_mul_ps(S, _mm512_set1_ps(MG_CQ)));
    __m512 kv = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(k[0], k[1]), _mm512_add_ps(k[2], k[3])), S);
    __m512 vv = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(v[0], v[1]), _mm512_add_ps(v[2], v[3])), S);
    __m512 att = mg_attention16(qv, kv, vv, c->K, c->V, step & 15, mg_valid_slots(step, pos));
    __m512 ab[16];
    bcast16(att, ab);

    /* wo + residual: 8 chains of 2 */
    __m512 a[8];
    MG_UNROLL
    for (int j = 0; j < 8; j++)
        a[j] = _mm512_fmadd_ps(ab[j + 8], _mm512_load_ps(m->woT + (j + 8) * 16),
                               _mm512_mul_ps(ab[j], _mm512_load_ps(m->woT + j * 16)));
    __m512 x3 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
                                            _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7]))),
                              x1);
    SPILL(xb, x3);

    /* MLP: the norm's scale S3 is applied after fc2 (relu commutes with it) */
    __m512 S3 = mg_rs16(_mm512_fmadd_ps(mg_hsum16(_mm512_mul_ps(x3, x3)), _mm512_set1_ps(MG_N1), _mm512_set1_ps(MG_EPS)));
    /* fc1 block by block: fc2's first chain step needs only block 0, so fc2 starts while
     * fc1's later blocks still run (both share the FMA pipes) */
    MG_UNROLL
    for (int o = 0; o < 4; o++) {
        __m512 f[4];
        for (int j = 0; j < 4; j++) f[j] = _mm512_mul_ps(BM(xb, j), _mm512_load_ps(m->fc1T + j * 64 + o * 16));
        MG_UNROLL
        for (int j = 4; j < 16; j++) f[j & 3] = _mm512_fmadd_ps(BM(xb, j), _mm512_load_ps(m->fc1T + j * 64 + o * 16), f[j & 3]);
        _mm512_store_ps(hb + 16 * o, _mm512_max_ps(_mm512_add_ps(_mm512_add_ps(f[0], f[1]), _mm512_add_ps(f[2], f[3])), _mm512_setzero_ps()));
    }
    __asm__ volatile("" : : "r"(hb) : "memory");
    __m512 g[16];
    MG_UNROLL
    for (int j = 0; j < 16; j++) g[j] = _mm512_mul_ps(BM(hb, j), _mm512_load_ps(m->fc2T + j * 16));
    MG_UNROLL
    for (int j = 16; j < 64; j++) g[j & 15] = _mm512_fmadd_ps(BM(hb, j), _mm512_load_ps(m->fc2T + j * 16), g[j & 15]);
    __m512 y = _mm512_fmadd_ps(mg_tree16_16(g), S3, x3);
    __m512 yb[16];
    bcast16(y, yb);

    /* lm_head: 2 blocks x 8 chains of 2 */
    __m512 l0[8], l1[8];
    MG_UNROLL
    for (int j = 0; j < 8; j++) {
        __m512 b0 = yb[j], b8 = yb[j + 8];
        l0[j] = _mm512_fmadd_ps(b8, _mm512_load_ps(m->lmT + (j + 8) * 32), _mm512_mul_ps(b0, _mm512_load_ps(m->lmT + j * 32)));
        l1[j] = _mm512_fmadd_ps(b8, _mm512_load_ps(m->lmT + (j + 8) * 32 + 16),
                                _mm512_mul_ps(b0, _mm512_load_ps(m->lmT + j * 32 + 16)));
    }
    *zlo = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l0[0], l0[1]), _mm512_add_ps(l0[2], l0[3])),
                         _mm512_add_ps(_mm512_add_ps(l0[4], l0[5]), _mm512_add_ps(l0[6], l0[7])));
    *zhi = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(l1[0], l1[1]), _mm512_add_ps(l1[2], l1[3])),
                         _mm512_add_ps(_mm512_add_ps(l1[4], l1[5]), _mm512_add_ps(l1[6], l1[7])));
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    __m512 lo, hi;
    forward1(m, c, tok, pos, step, &lo, &hi);
    _mm512_storeu_ps(out, lo);
    _mm512_mask_storeu_ps(out + 16, 0x07FF, hi);
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    __m512 lo, hi;
    forward1(m, c, tok, pos, step, &lo, &hi);
    const __m512 cz = _mm512_set1_ps(m->cz);
    return mg_sample16(_mm512_mul_ps(lo, cz), _mm512_mul_ps(hi, cz), python, r, u);
}

#elif defined(MG_AVX2)
#define SPILL8(buf, v) do { v16_store(buf, v); __asm__ volatile("" : : "r"(buf) : "memory"); } while (0)
#define B8(buf, j) _mm256_broadcast_ss((buf) + (j))

/* mv16 (4 chains) of 8 outputs: columns W + j * stride, input broadcasts from xb */
MG_INLINE __m256 mv16_8(const float *W, int stride, const float *xb)
{
    __m256 c[4];
    for (int j = 0; j < 4; j++) c[j] = _mm256_mul_ps(B8(xb, j), _mm256_load_ps(W + j * stride));
    MG_UNROLL
    for (int j = 4; j < 16; j++) c[j & 3] = _mm256_fmadd_ps(B8(xb, j), _mm256_load_ps(W + j * stride), c[j & 3]);
    return _mm256_add_ps(_mm256_add_ps(c[0], c[1]), _mm256_add_ps(c[2], c[3]));
}
/* mv16b (8 chains of 2) of 8 outputs */
MG_INLINE __m256 mv16b_8(const float *W, int stride, const float *xb)
{
    __m256 c[8];
    MG_UNROLL
    for (int j = 0; j < 8; j++)
        c[j] = _mm256_fmadd_ps(B8(xb, j + 8), _mm256_load_ps(W + (j + 8) * stride), _mm256_mul_ps(B8(xb, j), _mm256_load_ps(W + j * stride)));
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c[0], c[1]), _mm256_add_ps(c[2], c[3])),
                         _mm256_add_ps(_mm256_add_ps(c[4], c[5]), _mm256_add_ps(c[6], c[7])));
}

/* fc2 (mv64: 16 chains of 4) of 8 outputs, then fma(., S3, res) */
MG_INLINE __m256 fc2_8(const float *F, const float *hb, __m256 S3, __m256 res)
{
    __m256 g[16];
    for (int k = 0; k < 16; k++) {
        g[k] = _mm256_mul_ps(B8(hb, k), _mm256_load_ps(F + k * 16));
        g[k] = _mm256_fmadd_ps(B8(hb, k + 16), _mm256_load_ps(F + (k + 16) * 16), g[k]);
        g[k] = _mm256_fmadd_ps(B8(hb, k + 32), _mm256_load_ps(F + (k + 32) * 16), g[k]);
        g[k] = _mm256_fmadd_ps(B8(hb, k + 48), _mm256_load_ps(F + (k + 48) * 16), g[k]);
    }
#define A_(i, j) _mm256_add_ps(i, j)
    __m256 t = A_(A_(A_(A_(g[0], g[1]), A_(g[2], g[3])), A_(A_(g[4], g[5]), A_(g[6], g[7]))),
                  A_(A_(A_(g[8], g[9]), A_(g[10], g[11])), A_(A_(g[12], g[13]), A_(g[14], g[15]))));
#undef A_
    return _mm256_fmadd_ps(t, S3, res);
}

MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, __m256 *z)
{
    const float *w = m->raw;
    MG_ALIGN float xb[16], hb[64];
    v16 x = v16_add(v16_load(w + OFF_WTE + tok * 16), v16_load(w + OFF_WPE + pos * 16));
    SPILL8(xb, x);
    __m256 ss = mg_hsum8x2(v16_mul(x, x));
    __m256 s0 = mg_rs8(_mm256_fmadd_ps(ss, _mm256_set1_ps(MG_N1), _mm256_set1_ps(MG_EPS)));
    __m256 S = mg_rs8(_mm256_fmadd_ps(ss, _mm256_set1_ps(MG_N2), _mm256_set1_ps(MG_EPS2)));
    v16 x1 = {_mm256_mul_ps(x.lo, s0), _mm256_mul_ps(x.hi, s0)};
    const float *W = m->wqkvT;
    __m256 sq = _mm256_mul_ps(S, _mm256_set1_ps(MG_CQ));
    v16 qv = {_mm256_mul_ps(mv16_8(W, 48, xb), sq), _mm256_mul_ps(mv16_8(W + 8, 48, xb), sq)};
    v16 kv = {_mm256_mul_ps(mv16_8(W + 16, 48, xb), S), _mm256_mul_ps(mv16_8(W + 24, 48, xb), S)};
    v16 vv = {_mm256_mul_ps(mv16_8(W + 32, 48, xb), S), _mm256_mul_ps(mv16_8(W + 40, 48, xb), S)};
    v16 att = mg_attention8x2(qv, kv, vv, c->K, c->V, step & 15, mg_valid_slots(step, pos));
    SPILL8(xb, att);
    v16 x3 = {_mm256_add_ps(mv16b_8(m->woT, 16, xb), x1.lo), _mm256_add_ps(mv16b_8(m->woT + 8, 16, xb), x1.hi)};
    SPILL8(xb, x3);
    __m256 S3 = mg_rs8(_mm256_fmadd_ps(mg_hsum8x2(v16_mul(x3, x3)), _mm256_set1_ps(MG_N1), _mm256_set1_ps(MG_EPS)));
    for (int o = 0; o < 8; o++) _mm256_store_ps(hb + 8 * o, _mm256_max_ps(mv16_8(m->fc1T + 8 * o, 64, xb), _mm256_setzero_ps()));
    __asm__ volatile("" : : "r"(hb) : "memory");
    v16 y = {fc2_8(m->fc2T, hb, S3, x3.lo), fc2_8(m->fc2T + 8, hb, S3, x3.hi)};
    SPILL8(xb, y);
    for (int o = 0; o < 4; o++) z[o] = mv16b_8(m->lmT + 8 * o, 32, xb);
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    MG_ALIGN float l[32];
    __m256 z[4];
    forward1(m, c, tok, pos, step, z);
    for (int o = 0; o < 4; o++) _mm256_store_ps(l + 8 * o, z[o]);
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
/* mv16 (4 chains) of the 4 outputs at column offset o of a transposed matrix (stride) */
MG_INLINE float32x4_t mv16_4(const float *W, int stride, const float *xb)
{
    float32x4_t c[4];
    for (int k = 0; k < 4; k++) c[k] = vmulq_n_f32(vld1q_f32(W + k * stride), xb[k]);
    for (int j = 4; j < 16; j++) c[j & 3] = vfmaq_n_f32(c[j & 3], vld1q_f32(W + j * stride), xb[j]);
    return vaddq_f32(vaddq_f32(c[0], c[1]), vaddq_f32(c[2], c[3]));
}
MG_INLINE float32x4_t mv16b_4(const float *W, int stride, const float *xb)
{
    float32x4_t c[8];
    for (int k = 0; k < 8; k++)
        c[k] = vfmaq_n_f32(vmulq_n_f32(vld1q_f32(W + k * stride), xb[k]), vld1q_f32(W + (k + 8) * stride), xb[k + 8]);
    return vaddq_f32(vaddq_f32(vaddq_f32(c[0], c[1]), vaddq_f32(c[2], c[3])), vaddq_f32(vaddq_f32(c[4], c[5]), vaddq_f32(c[6], c[7])));
}

MG_INLINE void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, float32x4_t *z)
{
    const float *w = m->raw;
    MG_ALIGN float xb[16], hb[64];
    n16 x, sq, x1, qs, kv, vv, x3;
    for (int h = 0; h < 4; h++) {
        x.v[h] = vaddq_f32(vld1q_f32(w + OFF_WTE + tok * 16 + 4 * h), vld1q_f32(w + OFF_WPE + pos * 16 + 4 * h));
        sq.v[h] = vmulq_f32(x.v[h], x.v[h]);
    }
    n16_store(xb, x);
    float32x4_t ss = mg_hsum4x4(sq);
    float32x4_t s0 = mg_rs4(vfmaq_f32(vdupq_n_f32(MG_EPS), ss, vdupq_n_f32(MG_N1)));
    float32x4_t S = mg_rs4(vfmaq_f32(vdupq_n_f32(MG_EPS2), ss, vdupq_n_f32(MG_N2)));
    float32x4_t Sq = vmulq_f32(S, vdupq_n_f32(MG_CQ));
    for (int h = 0; h < 4; h++) {
        x1.v[h] = vmulq_f32(x.v[h], s0);
        qs.v[h] = vmulq_f32(mv16_4(m->wqkvT + 4 * h, 48, xb), Sq);
        kv.v[h] = vmulq_f32(mv16_4(m->wqkvT + 16 + 4 * h, 48, xb), S);
        vv.v[h] = vmulq_f32(mv16_4(m->wqkvT + 32 + 4 * h, 48, xb), S);
    }
    n16 att = mg_attention4x4(qs, kv, vv, c->K, c->V, step & 15, mg_valid_slots(step, pos));
    n16_store(xb, att);
    for (int h = 0; h < 4; h++) {
        x3.v[h] = vaddq_f32(mv16b_4(m->woT + 4 * h, 16, xb), x1.v[h]);
        sq.v[h] = vmulq_f32(x3.v[h], x3.v[h]);
    }
    n16_store(xb, x3);
    float32x4_t S3 = mg_rs4(vfmaq_f32(vdupq_n_f32(MG_EPS), mg_hsum4x4(sq), vdupq_n_f32(MG_N1)));
    for (int o = 0; o < 16; o++) vst1q_f32(hb + 4 * o, vmaxq_f32(mv16_4(m->fc1T + 4 * o, 64, xb), vdupq_n_f32(0.0f)));
    n16 y;
    for (int h = 0; h < 4; h++) {
        const float *F = m->fc2T + 4 * h;
        n16 g[4];
        for (int k = 0; k < 16; k++) {
            float32x4_t a = vmulq_n_f32(vld1q_f32(F + k * 16), hb[k]);
            a = vfmaq_n_f32(a, vld1q_f32(F + (k + 16) * 16), hb[k + 16]);
            a = vfmaq_n_f32(a, vld1q_f32(F + (k + 32) * 16), hb[k + 32]);
            g[k >> 2].v[k & 3] = vfmaq_n_f32(a, vld1q_f32(F + (k + 48) * 16), hb[k + 48]);
        }
        /* tree16 over the 16 chains, lane-wise */
        float32x4_t t[16];
        for (int k = 0; k < 16; k++) t[k] = g[k >> 2].v[k & 3];
        for (int w2 = 1; w2 < 16; w2 <<= 1)
            for (int k = 0; k < 16; k += 2 * w2) t[k] = vaddq_f32(t[k], t[k + w2]);
        y.v[h] = vfmaq_f32(x3.v[h], t[0], S3);
    }
    n16_store(xb, y);
    for (int o = 0; o < 8; o++) z[o] = mv16b_4(m->lmT + 4 * o, 32, xb);
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    MG_ALIGN float l[32];
    float32x4_t z[8];
    forward1(m, c, tok, pos, step, z);
    for (int o = 0; o < 8; o++) vst1q_f32(l + 4 * o, z[o]);
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

static void forward1(const model_t *m, cache_t *c, int tok, int pos, int step, float *logits)
{
    const float *w = m->raw;
    float x[16], sq[16], x1[16], qs[16], att[16], x3[16], hid[64], y[16];
    for (int i = 0; i < 16; i++) {
        x[i] = w[OFF_WTE + tok * 16 + i] + w[OFF_WPE + pos * 16 + i];
        sq[i] = x[i] * x[i];
    }
    float ss = mg_tree16_s(sq);
    float s0 = mg_rs_s(fmaf(ss, MG_N1, MG_EPS));
    float S = mg_rs_s(fmaf(ss, MG_N2, MG_EPS2));
    float Sq = S * MG_CQ;
    for (int i = 0; i < 16; i++) x1[i] = x[i] * s0;
    const int slot = step & 15;
    for (int o = 0; o < 16; o++) {
        qs[o] = mg_mv16_s(w + OFF_WQ + o * 16, x) * Sq;
        c->K[slot * 16 + o] = mg_mv16_s(w + OFF_WK + o * 16, x) * S;
        c->V[slot * 16 + o] = mg_mv16_s(w + OFF_WV + o * 16, x) * S;
    }
    mg_attention_s(qs, c->K, c->V, mg_valid_slots(step, pos), att);
    for (int o = 0; o < 16; o++) {
        x3[o] = mg_mv16b_s(w + OFF_WO + o * 16, att) + x1[o];
        sq[o] = x3[o] * x3[o];
    }
    float S3 = mg_rs_s(fmaf(mg_tree16_s(sq), MG_N1, MG_EPS));
    for (int o = 0; o < 64; o++) {
        float h = mg_mv16_s(w + OFF_FC1 + o * 16, x3);
        hid[o] = h > 0.0f ? h : 0.0f;
    }
    for (int o = 0; o < 16; o++) y[o] = fmaf(mg_mv64_s(w + OFF_FC2 + o * 64, hid), S3, x3[o]);
    for (int v = 0; v < MG_VOCAB; v++) logits[v] = mg_mv16b_s(w + OFF_LM + v * 16, y);
}

MG_INLINE void logits1(const model_t *m, cache_t *c, int tok, int pos, int step, float *out)
{
    forward1(m, c, tok, pos, step, out);
}

MG_INLINE int step1(const model_t *m, cache_t *c, int tok, int pos, int step, int python, float r, double u)
{
    float z[MG_VOCAB];
    forward1(m, c, tok, pos, step, z);
    for (int v = 0; v < MG_VOCAB; v++) z[v] *= m->cz;
    return mg_sample_s(z, python, r, u);
}
#endif

/* ====================================================================== offline */

#if defined(MG_SOA) && !defined(MG_NO_SOA)
#define MG_KERNEL_SOA 1
#ifndef MG_SOA_NB
#define MG_SOA_NB 2
#endif
/* batches per forward pass, phase by phase */
/* one batch: the ring and the values that pass between the phases */
typedef struct {
    mg_ringV ring;
    MG_ALIGN VF qs[16], att[16], x1[16], x3[16], y[16], hid[64];
    VF S3;
} soa_t;

#if defined(MG_AVX2)
/* AVX2 (16 registers): the matvecs run on groups of R rows for both batches of a pass
 * (nx = 2; 1 for an odd last batch), one canonical chain at a time: each x vector loaded
 * serves R rows and each broadcast weight nx batches (0.75 loads per FMA at R = 4, against
 * 2 for mg_mv16V's row at a time, whose x[16] cannot stay in 16 registers). A row's chains
 * combine in its canonical balanced tree (mv16: 4 chains, mv16b: 8, mv64: 16); the
 * partials spill to the stack, a few stores per 32 FMAs. */
#define GR 4 /* rows per group */
/* one step j of a chain: c[i * GR + r] (+)= x[i][j] * w[r * ld + j] */
MG_INLINE void gstep(const float *w, int ld, const VF *const *x, int nx, int R, int j, int first, VF *c)
{
    VF xv[2];
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        if (i < nx) {
            xv[i] = x[i][j];
            MG_IN_REG(xv[i]); /* else gcc folds the load into each FMA: a load apiece */
        }
    MG_UNROLL
    for (int r = 0; r < GR; r++)
        if (r < R) {
            VF wb = vf_bc(w + r * ld + j);
            if (nx > 1) MG_IN_REG(wb);
            MG_UNROLL
            for (int i = 0; i < 2; i++)
                if (i < nx) c[i * GR + r] = first ? vf_mul(xv[i], wb) : vf_fma(xv[i], wb, c[i * GR + r]);
        }
}
/* chain k of rows of stride ld: steps j = k, k + N, ... (N chains, S steps) */
MG_INLINE void gchain(const float *w, int ld, const VF *const *x, int nx, int R, int N, int S, int k, VF *c)
{
    gstep(w, ld, x, nx, R, k, 1, c);
    gstep(w, ld, x, nx, R, k + N, 0, c);
    if (S > 2) {
        gstep(w, ld, x, nx, R, k + 2 * N, 0, c);
        gstep(w, ld, x, nx, R, k + 3 * N, 0, c);
    }
}
/* tree4 of the 4 chains k0 .. k0 + 3 (the canonical pairs), into t */
MG_INLINE void gquad(const float *w, int ld, const VF *const *x, int nx, int R, int N, int S, int k0, VF *t)
{
    VF a[2 * GR], b[2 * GR];
    gchain(w, ld, x, nx, R, N, S, k0, a);
    gchain(w, ld, x, nx, R, N, S, k0 + 1, b);
    MG_UNROLL
    for (int n = 0; n < 2 * GR; n++) a[n] = vf_add(a[n], b[n]);
    gchain(w, ld, x, nx, R, N, S, k0 + 2, t);
    gchain(w, ld, x, nx, R, N, S, k0 + 3, b);
    MG_UNROLL
    for (int n = 0; n < 2 * GR; n++) t[n] = vf_add(a[n], vf_add(t[n], b[n]));
}
/* out[i * GR + r] = the canonical matvec of N chains (4, 8 or 16) of S steps: quads of
 * chains in a loop (the code stays small: the offline loop must fit the 32 KB L1I), their
 * tree4s combined in the canonical tree */
MG_INLINE void grows(const float *w, int ld, const VF *const *x, int nx, int R, int N, int S, VF *out)
{
    if (N == 4) {
        gquad(w, ld, x, nx, R, N, S, 0, out);
        return;
    }
    MG_ALIGN VF l4[2 * GR], l8[2 * GR];
    MG_UNROLL
    for (int n = 0; n < 2 * GR; n++) l4[n] = l8[n] = out[n] = vf_zero(); /* all set before use, as far as -Wall sees */
    MG_ROLL
    for (int q = 0; q < N / 4; q++) {
        VF t[2 * GR];
        const VF *xq[2] = {x[0] + 4 * q, x[1] + 4 * q};
        gquad(w + 4 * q, ld, xq, nx, R, N, S, 0, t);
        if (!(q & 1)) {
            MG_UNROLL
            for (int n = 0; n < 2 * GR; n++) l4[n] = t[n];
            continue;
        }
        MG_UNROLL
        for (int n = 0; n < 2 * GR; n++) t[n] = vf_add(l4[n], t[n]);
        if (N == 8 || (q & 2)) {
            MG_UNROLL
            for (int n = 0; n < 2 * GR; n++) out[n] = N == 8 ? t[n] : vf_add(l8[n], t[n]);
        } else {
            MG_UNROLL
            for (int n = 0; n < 2 * GR; n++) l8[n] = t[n];
        }
    }
}
#define G16(w, x, nx, R, out) grows(w, 16, x, nx, R, 4, 4, out)   /* mv16 */
#define G16B(w, x, nx, R, out) grows(w, 16, x, nx, R, 8, 2, out)  /* mv16b */
#define G64(w, x, nx, R, out) grows(w, 64, x, nx, R, 16, 4, out)  /* mv64 */

typedef struct {
    MG_ALIGN VF x[16];
    VF S, Sq;
} g_in;

/* rows per group, by phase (measured on Zen 3, gcc 12 / clang 14; at most GR) */
#ifndef R_QKV
#define R_QKV 4
#endif
#ifndef R_WO
#define R_WO 2
#endif
#ifndef R_FC1
#define R_FC1 4
#endif
#ifndef R_FC2
#define R_FC2 4
#endif
#ifndef R_LM
#define R_LM 3 /* 9 groups (4: gcc spills) */
#endif

/* embedding and the entry norms of one batch: xn (the matvec input) and its scales */
MG_INLINE void g_embed(const model_t *m, soa_t *st, VI tok, VI pos, g_in *g)
{
    const float *w = m->raw;
    VF x[16], sq[16];
    mg_embed8(w + OFF_WTE, w + OFF_WPE, tok, pos, x);
    MG_UNROLL
    for (int i = 0; i < 16; i++) sq[i] = vf_mul(x[i], x[i]);
    VF ss = mg_tree16V(sq);
    VF s0 = mg_rsV(vf_fma(ss, vf_set1(MG_N1), vf_set1(MG_EPS)));
    g->S = mg_rsV(vf_fma(ss, vf_set1(MG_N2), vf_set1(MG_EPS2)));
    g->Sq = vf_mul(g->S, vf_set1(MG_CQ));
    MG_UNROLL
    for (int i = 0; i < 16; i++) {
        st->x1[i] = vf_mul(x[i], s0);
        g->x[i] = x[i];
    }
}

MG_INLINE void g_qkv(const model_t *m, soa_t *st, const g_in *g, int nx, int step)
{
    const VF *x[2] = {g[0].x, g[nx - 1].x};
    MG_OPAQUE(x[0]);
    MG_OPAQUE(x[1]);
    MG_ROLL
    for (int o = 0; o < 48; o += R_QKV) {
        VF r[2 * GR];
        G16(m->raw + OFF_WQ + o * 16, x, nx, R_QKV, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++) {
            if (i >= nx) break;
            VF *dst = o < 16 ? st[i].qs + o : o < 32 ? st[i].ring.K[step & 15] + o - 16 : st[i].ring.V[step & 15] + o - 32;
            const VF sc = o < 16 ? g[i].Sq : g[i].S;
            MG_UNROLL
            for (int j = 0; j < R_QKV; j++) dst[j] = vf_mul(r[i * GR + j], sc);
        }
    }
}

MG_INLINE void g_wo(const model_t *m, soa_t *st, int nx)
{
    const VF *x[2] = {st[0].att, st[nx - 1].att};
    MG_OPAQUE(x[0]);
    MG_OPAQUE(x[1]);
    MG_ROLL
    for (int o = 0; o < 16; o += R_WO) {
        VF r[2 * GR];
        G16B(m->raw + OFF_WO + o * 16, x, nx, R_WO, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            if (i < nx)
                MG_UNROLL
                for (int j = 0; j < R_WO; j++) st[i].x3[o + j] = vf_add(r[i * GR + j], st[i].x1[o + j]);
    }
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        if (i < nx) {
            VF sq[16];
            MG_UNROLL
            for (int o = 0; o < 16; o++) sq[o] = vf_mul(st[i].x3[o], st[i].x3[o]);
            st[i].S3 = mg_rsV(vf_fma(mg_tree16V(sq), vf_set1(MG_N1), vf_set1(MG_EPS)));
        }
}

MG_INLINE void g_fc1(const model_t *m, soa_t *st, int nx)
{
    const VF *x[2] = {st[0].x3, st[nx - 1].x3};
    MG_OPAQUE(x[0]);
    MG_OPAQUE(x[1]);
    MG_ROLL
    for (int o = 0; o < 64; o += R_FC1) {
        VF r[2 * GR];
        G16(m->raw + OFF_FC1 + o * 16, x, nx, R_FC1, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            if (i < nx)
                MG_UNROLL
                for (int j = 0; j < R_FC1; j++) st[i].hid[o + j] = vf_max(r[i * GR + j], vf_zero());
    }
}

MG_INLINE void g_fc2(const model_t *m, soa_t *st, int nx)
{
    const VF *x[2] = {st[0].hid, st[nx - 1].hid};
    MG_OPAQUE(x[0]);
    MG_OPAQUE(x[1]);
    MG_ROLL
    for (int o = 0; o < 16; o += R_FC2) {
        VF r[2 * GR];
        G64(m->raw + OFF_FC2 + o * 64, x, nx, R_FC2, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            if (i < nx)
                MG_UNROLL
                for (int j = 0; j < R_FC2; j++) st[i].y[o + j] = vf_fma(r[i * GR + j], st[i].S3, st[i].x3[o + j]);
    }
}

MG_INLINE void g_lm(const model_t *m, soa_t *st, int nx, VF *logits, float scale)
{
    const VF *x[2] = {st[0].y, st[nx - 1].y};
    MG_OPAQUE(x[0]);
    MG_OPAQUE(x[1]);
    const VF cz = vf_set1(scale);
    MG_ROLL
    for (int o = 0; o < MG_VOCAB; o += R_LM) {
        VF r[2 * GR]; /* R_LM = 2 or 4: the last group's last row is raw's zero padding, dropped */
        G16B(m->raw + OFF_LM + o * 16, x, nx, R_LM, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            if (i < nx)
                MG_UNROLL
                for (int j = 0; j < R_LM; j++)
                    if (o + j < MG_VOCAB) logits[i * MG_VOCAB + o + j] = vf_mul(r[i * GR + j], cz);
    }
}

/* mg_attentionV's fast case (the caller proved every score in the fast range: offset 0),
 * the same operations with the 4 heads' scores and exp2s side by side in the age loop:
 * one head at a time leaves a chain of ~80 cycles per head that the out-of-order window
 * cannot hide. Unseen slots read a zero vector instead of a zeroed e[t]. */
MG_INLINE void g_attention(const mg_ringV *ring, const VF *qs, VI pos, int maxpos, int step, VF *out)
{
    MG_ALIGN VF e[16][4], zv[1];
    zv[0] = vf_zero();
    unsigned seen = 0; /* bit t: slot t seen by some stream */
    MG_ROLL
    for (int a = 0; a <= maxpos; a++) {
        const int t = (step - a) & 15;
        const VM vm = vi_ge(pos, vi_set1(a));
        const VF *k = ring->K[t];
        seen |= 1u << t;
        MG_UNROLL
        for (int h = 0; h < 4; h++) {
            e[t][h] = vf_maskz(vm, mg_exp2V_nc(mg_scoreV(qs + 4 * h, k + 4 * h)));
        }
    }
    MG_ROLL
    for (int h = 0; h < 4; h++) {
        VF l[4], A[4][4];
        MG_UNROLL
        for (int j = 0; j < 4; j++) {
            VF lp[2], ap[2][4];
            MG_UNROLL
            for (int half = 0; half < 2; half++) mg_slot_pairV(ring, e, zv, seen, h, 8 * half + j, &lp[half], ap[half]);
            l[j] = vf_add(lp[0], lp[1]);
            MG_UNROLL
            for (int d = 0; d < 4; d++) A[j][d] = vf_add(ap[0][d], ap[1][d]);
        }
        const VF rl = vf_div(vf_set1(1.0f), vf_add(vf_add(l[0], l[1]), vf_add(l[2], l[3])));
        MG_UNROLL
        for (int d = 0; d < 4; d++) out[4 * h + d] = vf_mul(vf_add(vf_add(A[0][d], A[1][d]), vf_add(A[2][d], A[3][d])), rl);
    }
}

/* nx (1 or 2) batches phase by phase, the matvecs of both together */
MG_INLINE void forward_g(const model_t *m, soa_t *st, int nx, const VI *tok, const VI *pos, const int *maxpos, int step,
                         VF *logits, float scale)
{
    g_in g[2];
    for (int b = 0; b < nx; b++) g_embed(m, &st[b], tok[b], pos[b], &g[b]);
    MG_REPEAT(MG_PH_QKV) g_qkv(m, st, g, nx, step);
    for (int b = 0; b < nx; b++) {
        MG_REPEAT(MG_PH_ATTENTION) {
            if (m->att_fast) g_attention(&st[b].ring, st[b].qs, pos[b], maxpos[b], step, st[b].att);
            else mg_attentionV(&st[b].ring, st[b].qs, pos[b], maxpos[b], step, 1, st[b].att);
        }
    }
    MG_REPEAT(MG_PH_WO) g_wo(m, st, nx);
    MG_REPEAT(MG_PH_FC1) g_fc1(m, st, nx);
    MG_REPEAT(MG_PH_FC2) g_fc2(m, st, nx);
    MG_REPEAT(MG_PH_LM) g_lm(m, st, nx, logits, scale);
}

static void forwardV(const model_t *m, soa_t *st, int nb, const VI *tok, const VI *pos, const int *maxpos, int step,
                     VF *logits, float scale)
{
    for (int b = 0; b + 1 < nb; b += 2)
        forward_g(m, st + b, 2, tok + b, pos + b, maxpos + b, step, logits + b * MG_VOCAB, scale);
    if (nb & 1)
        forward_g(m, st + nb - 1, 1, tok + nb - 1, pos + nb - 1, maxpos + nb - 1, step, logits + (nb - 1) * MG_VOCAB,
                  scale);
}
#else /* the other vector paths: a batch at a time, a row at a time */
/* embedding, the entry norms, q (scaled) and the new key/value into the ring */
MG_INLINE void fv_qkv(const model_t *m, soa_t *st, VI tok, VI pos, int step)
{
    const float *w = m->raw;
    VF x[16], sq[16];
#if defined(MG_AVX512)
    /* x[i] lane s = wte[tok_s][i] + wpe[pos_s][i] by lane permutes of element i's tables
     * (27 + 16 entries: three vectors), not 16 row loads and a 16 x 16 transpose:
     * offline 256 x 1, gcc 175 -> 172, clang 176 -> 170 cycles/token */
    MG_UNROLL
    for (int i = 0; i < 16; i++) {
        const float *et = m->embT + 48 * i;
        x[i] = vf_add(_mm512_permutex2var_ps(vf_load(et), tok, vf_load(et + 16)), _mm512_permutexvar_ps(pos, vf_load(et + 32)));
    }
#else
    VI ti = vi_add(vi_slli(tok, 4), vi_set1(OFF_WTE)), pi = vi_add(vi_slli(pos, 4), vi_set1(OFF_WPE));
    MG_UNROLL
    for (int i = 0; i < 16; i++) x[i] = vf_add(vf_gather(w, vi_add(ti, vi_set1(i))), vf_gather(w, vi_add(pi, vi_set1(i))));
#endif
    MG_UNROLL
    for (int i = 0; i < 16; i++) sq[i] = vf_mul(x[i], x[i]);
    VF ss = mg_tree16V(sq);
    VF s0 = mg_rsV(vf_fma(ss, vf_set1(MG_N1), vf_set1(MG_EPS)));
    VF S = mg_rsV(vf_fma(ss, vf_set1(MG_N2), vf_set1(MG_EPS2)));
    VF Sq = vf_mul(S, vf_set1(MG_CQ));
    MG_UNROLL
    for (int i = 0; i < 16; i++) st->x1[i] = vf_mul(x[i], s0);
    VF *k = st->ring.K[step & 15], *v = st->ring.V[step & 15];
    for (int o = 0; o < 16; o++) {
        st->qs[o] = vf_mul(mg_mv16V(w + OFF_WQ + o * 16, x), Sq);
        k[o] = vf_mul(mg_mv16V(w + OFF_WK + o * 16, x), S);
        v[o] = vf_mul(mg_mv16V(w + OFF_WV + o * 16, x), S);
    }
}

/* wo + the residual, and the MLP's norm scale S3 */
MG_INLINE void fv_wo(const model_t *m, soa_t *st)
{
    const float *w = m->raw;
    VF att[16], sq[16];
    MG_UNROLL
    for (int i = 0; i < 16; i++) att[i] = st->att[i];
    MG_UNROLL
    for (int o = 0; o < 16; o++) {
        const VF x3 = vf_add(mg_mv16bV(w + OFF_WO + o * 16, att), st->x1[o]);
        st->x3[o] = x3;
        sq[o] = vf_mul(x3, x3);
    }
    st->S3 = mg_rsV(vf_fma(mg_tree16V(sq), vf_set1(MG_N1), vf_set1(MG_EPS)));
}

MG_INLINE void fv_fc1(const model_t *m, soa_t *st)
{
    VF x3[16];
    MG_UNROLL
    for (int i = 0; i < 16; i++) x3[i] = st->x3[i];
    for (int o = 0; o < 64; o++) st->hid[o] = vf_max(mg_mv16V(m->raw + OFF_FC1 + o * 16, x3), vf_zero());
}

/* fc2 of nx (1 or 2) batches together: they share the weight broadcasts */
MG_INLINE void fv_fc2(const model_t *m, soa_t *st, int nx)
{
    const int R = MG_MV64_ROWS(nx);
    for (int o = 0; o < 16; o += R) {
        const VF *x[2] = {st[0].hid, st[nx - 1].hid};
        MG_OPAQUE(x[0]); /* else gcc hoists all 64 loads per batch out of the loop, to the stack */
        MG_OPAQUE(x[1]);
        VF r[MG_MV64_MAX];
        mg_mv64rowsV(m->raw + OFF_FC2 + o * 64, x, nx, r);
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            MG_UNROLL
            for (int j = 0; j < MG_MV64_MAX; j++)
                if (i < nx && j < R) st[i].y[o + j] = vf_fma(r[i * R + j], st[i].S3, st[i].x3[o + j]);
    }
}

MG_INLINE void fv_lm(const model_t *m, const soa_t *st, VF *logits, float scale)
{
    VF y[16];
    MG_UNROLL
    for (int i = 0; i < 16; i++) y[i] = st->y[i];
    const VF cz = vf_set1(scale);
    for (int v2 = 0; v2 < MG_VOCAB; v2++) logits[v2] = vf_mul(mg_mv16bV(m->raw + OFF_LM + v2 * 16, y), cz);
}

/* one token for nb batches of VW streams (tok/pos per lane, the same step for all):
 * logits nb x MG_VOCAB. The batches run phase by phase, so the serial end of one
 * batch's phase (a norm, a softmax, the last rows a matvec waits for) overlaps the
 * other batch's work instead of stalling the core; attention and wo batch by batch, so
 * one batch's wo (multiply-adds) overlaps the next batch's attention (latency-bound;
 * clang 188 -> 179 cycles/token, gcc the same) */
static void forwardV(const model_t *m, soa_t *st, int nb, const VI *tok, const VI *pos, const int *maxpos, int step,
                     VF *logits, float scale)
{
    MG_REPEAT(MG_PH_QKV) for (int b = 0; b < nb; b++) fv_qkv(m, &st[b], tok[b], pos[b], step);
    for (int b = 0; b < nb; b++) {
        MG_REPEAT(MG_PH_ATTENTION) mg_attentionV(&st[b].ring, st[b].qs, pos[b], maxpos[b], step, !m->att_fast, st[b].att);
        MG_REPEAT(MG_PH_WO) fv_wo(m, &st[b]);
    }
    MG_REPEAT(MG_PH_FC1) for (int b = 0; b < nb; b++) fv_fc1(m, &st[b]);
    MG_REPEAT(MG_PH_FC2) {
        for (int b = 0; b + 1 < nb; b += 2) fv_fc2(m, &st[b], 2);
        if (nb & 1) fv_fc2(m, &st[nb - 1], 1);
    }
    MG_REPEAT(MG_PH_LM) for (int b = 0; b < nb; b++) fv_lm(m, &st[b], logits + b * MG_VOCAB, scale);
}
#endif /* !MG_AVX2 */

#endif

#define MG_PREFIX mg_fp32
#define MG_LOGIT_UNIT 1.0f
#define MG_SOA_MIN_LANES (VW / 2 + 1) /* default; the autotuner sets the measured crossover */
#include "mg_driver.h"
