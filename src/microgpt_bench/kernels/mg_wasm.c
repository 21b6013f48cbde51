/* mg_wasm.c: microGPT in float32 for wasm32 with SIMD128, freestanding (no libc).
 *
 * Built by backends/wasm.py with
 *   clang --target=wasm32 -msimd128 -mbulk-memory -O3 -nostdlib -ffreestanding
 *         -fuse-ld=lld -Wl,--no-entry
 * and run by wasmtime (wasm-wasmtime) and by headless Chromium (wasm-chromium).
 *
 * The arithmetic is the canonical sequence of kernels/mg_common.h (the scalar
 * code there is its definition) with one change forced by the instruction set:
 * WebAssembly SIMD128 has no fused multiply-add, so every canonical fma(a, b, c)
 * is round(round(a * b) + c) here (MAD below). Every other operation (adds in
 * the same association order, 1/sqrt as div(1, sqrt), the degree-5 exp2, the
 * log2-domain softmaxes with their 0-or-max offsets, the 16-slot ring KV cache,
 * the 32-lane inclusive scan of the sampler, xorshift32, the stream seeds) is
 * the same, so logits differ from c-fp32's only by the fma roundings.
 *
 * Layout, single stream (the only one: offline runs the streams one after another,
 * as wasm here has one thread): the 16-input matvecs (q, k, v, wo, fc1, lm_head) read
 * the weights row-major, with x in 4 vectors, so lane k of a row's product chain is the
 * canonical chain c_k and one 4x4 shuffle-and-add (hsum4x4) finishes 4 rows at once
 * (fc2, 64 inputs in 16 vectors, the same with two of them): no broadcasts, no
 * transposed copies. The KV cache is [head][dim][slot], 4 slots of one head
 * per vector; blocks of 4 slots without a live slot are skipped.
 *
 * Shared with the native kernels through the libc-free mg_model.h: the model's shape,
 * the flat-order offsets, the error codes, xorshift32 and the stream seeds. The exp2
 * coefficients are still written here as in mg_common.h, whose vector layer needs libc.
 *
 * Exports (the host writes the weights to mg_weights(), then calls mg_init):
 *   mg_abi() -> 1;  mg_weights() -> float[4192];  mg_init(T) -> 0 | error (T = 0: greedy)
 *   mg_scratch(bytes) -> a pointer to at least `bytes` free bytes (0: out of memory)
 *   mg_logits(tokens, n, out) -> 0 | error
 *   mg_generate(n, seed, uniforms or 0, out or 0, greedy) -> checksum (f64) | error
 *   mg_generate_offline(streams, tokens_per_stream, base_seed, out or 0) -> checksum | error
 * Errors are the negative codes of mg_common.h (backends/c_native.ERRORS).
 */
#include <stdint.h>
#include <wasm_simd128.h>

#include "mg_model.h"  /* shape, offsets, error codes, xorshift32, stream seeds (libc-free) */

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

/* short names for mg_model.h's facts */
enum { VOCAB = MG_VOCAB, BOS = MG_BOS, CTX = MG_CTX, E = MG_E, HID = MG_HID };
enum {
    W_TE = OFF_WTE, W_PE = OFF_WPE, W_Q = OFF_WQ, W_K = OFF_WK, W_V = OFF_WV,
    W_O = OFF_WO, W_FC1 = OFF_FC1, W_FC2 = OFF_FC2, W_LM = OFF_LM, N_PARAM = MG_NPARAM
};
enum { ERR_NULL = MG_ERR_NULL, ERR_ARG = MG_ERR_ARG, ERR_TOKEN = MG_ERR_TOKEN, ERR_SEED = MG_ERR_SEED,
       ERR_NOMEM = MG_ERR_NOMEM, ERR_UNIFORM = MG_ERR_UNIFORM };

typedef v128_t F4;
#define ADD wasm_f32x4_add
#define SUB wasm_f32x4_sub
#define MUL wasm_f32x4_mul
#define SPL wasm_f32x4_splat
#define LD(p) wasm_v128_load(p)
#define ST(p, v) wasm_v128_store(p, v)
/* the canonical fma(a, b, c), unfused: SIMD128 has no fma */
INLINE F4 MAD(F4 a, F4 b, F4 c) { return ADD(MUL(a, b), c); }

/* exp2, the softmax ranges and the norms: the MG_* constants of mg_model.h */

/* ---------------------------------------------------------------- the state */

typedef struct {
    float cz;                            /* log2(e) / T */
    int greedy;                          /* T = 0: every token is the argmax */
    float raw[N_PARAM];                  /* C flat order, as written by the host */
    float lm[28 * E];                    /* lm_head with a zero row 27: 7 groups of 4 outputs */
} model_t;

typedef struct {
    float KT[4 * 4 * CTX];               /* [head][dim][slot] */
    float VT[4 * 4 * CTX];
} cache_t;

static model_t M __attribute__((aligned(16)));
extern unsigned char __heap_base;

EXPORT(mg_abi) int mg_abi(void) { return 1; }
EXPORT(mg_weights) float *mg_weights(void) { return M.raw; }

static int finite(float f) { return f - f == 0.0f; }

EXPORT(mg_init) int mg_init(float temperature)
{
    if (!(temperature >= 0.0f) || !finite(temperature)) return ERR_ARG;
    for (int i = 0; i < N_PARAM; i++)
        if (!finite(M.raw[i])) return ERR_ARG;
    const float *w = M.raw;
    M.greedy = temperature == 0.0f;
    M.cz = M.greedy ? 0.0f : (float)(1.4426950408889634 / (double)temperature);
    __builtin_memset(M.lm, 0, sizeof M.lm);
    __builtin_memcpy(M.lm, w + W_LM, VOCAB * E * sizeof(float));
    return 0;
}

/* one growing region past the static data, for the host's inputs and outputs */
EXPORT(mg_scratch) void *mg_scratch(int32_t bytes)
{
    if (bytes < 0) return 0;
    uintptr_t base = ((uintptr_t)&__heap_base + 15) & ~(uintptr_t)15;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    uintptr_t need = base + (uintptr_t)bytes;
    if (need > have && __builtin_wasm_memory_grow(0, (need - have + 65535) / 65536) == (uintptr_t)-1) return 0;
    return (void *)base;
}

/* ------------------------------------------------------- canonical vector ops */

/* 2^x (mg_exp2_s) for x >= -126 */
INLINE F4 exp2nc(F4 x)
{
    F4 t = ADD(x, SPL(MG_EXP_MAGIC));
    F4 f = SUB(x, SUB(t, SPL(MG_EXP_MAGIC)));
    F4 f2 = MUL(f, f);
    F4 p01 = MAD(f, SPL(MG_P1), SPL(1.0f));
    F4 p23 = MAD(f, SPL(MG_P3), SPL(MG_P2));
    F4 p45 = MAD(f, SPL(MG_P5), SPL(MG_P4));
    F4 p = MAD(MAD(p45, f2, p23), f2, p01);
    return MUL(p, wasm_i32x4_shl(wasm_i32x4_add(t, wasm_i32x4_splat(127)), 23));
}

/* 2^(x - o), x - o clamped at -126; the fast range (o = 0) needs neither */
INLINE F4 exp2o(F4 x, int slow, float o)
{
    if (!slow) return exp2nc(x);  /* x - 0 is x, and every live x is >= -126 */
    return exp2nc(wasm_f32x4_pmax(SPL(MG_EXP_LO), SUB(x, SPL(o))));  /* -126 < x ? x : -126, one maxps */
}

INLINE F4 rs(F4 a) { return wasm_f32x4_div(SPL(1.0f), wasm_f32x4_sqrt(a)); }

/* lanes k: (a_{4k} + a_{4k+1}) + (a_{4k+2} + a_{4k+3}) of a = (v0, v1, v2, v3) */
INLINE F4 hsum4x4(F4 v0, F4 v1, F4 v2, F4 v3)
{
    F4 p = ADD(wasm_i32x4_shuffle(v0, v1, 0, 2, 4, 6), wasm_i32x4_shuffle(v0, v1, 1, 3, 5, 7));
    F4 q = ADD(wasm_i32x4_shuffle(v2, v3, 0, 2, 4, 6), wasm_i32x4_shuffle(v2, v3, 1, 3, 5, 7));
    return ADD(wasm_i32x4_shuffle(p, q, 0, 2, 4, 6), wasm_i32x4_shuffle(p, q, 1, 3, 5, 7));
}

/* (v0 + v1) + (v2 + v3) in every lane */
INLINE F4 hsum4(F4 v)
{
    v = ADD(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return ADD(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
}

/* tree16 of the 16 lanes of v[0..3], in every lane */
INLINE F4 tree16(const F4 *v) { return hsum4(hsum4x4(v[0], v[1], v[2], v[3])); }

/* mv16 (4 chains of 4) of 4 outputs: rows W, W + 16, W + 32, W + 48 of a row-major
 * [out][16] matrix, x in 4 vectors. Lane k of a row's chain is the canonical c_k
 * (j = k, k + 4, k + 8, k + 12); hsum4x4 then adds (c0 + c1) + (c2 + c3) per row. */
INLINE F4 mv16(const float *W, const F4 *x)
{
    F4 c[4];
    for (int r = 0; r < 4; r++) {
        const float *w = W + 16 * r;
        c[r] = MAD(x[3], LD(w + 12), MAD(x[2], LD(w + 8), MAD(x[1], LD(w + 4), MUL(x[0], LD(w)))));
    }
    return hsum4x4(c[0], c[1], c[2], c[3]);
}

/* mv16b (8 chains of 2) of 4 outputs: a lanes c_0..c_3, b lanes c_4..c_7 (c_k = x_{k+8} w_{k+8}
 * + x_k w_k); ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) per row */
INLINE F4 mv16b(const float *W, const F4 *x)
{
    F4 a[4], b[4];
    for (int r = 0; r < 4; r++) {
        const float *w = W + 16 * r;
        a[r] = MAD(x[2], LD(w + 8), MUL(x[0], LD(w)));
        b[r] = MAD(x[3], LD(w + 12), MUL(x[1], LD(w + 4)));
    }
    return ADD(hsum4x4(a[0], a[1], a[2], a[3]), hsum4x4(b[0], b[1], b[2], b[3]));
}

/* mv64 (16 chains of 4, then tree16) of 4 outputs: rows W + 64 r of a row-major [out][64]
 * matrix, h in 16 vectors. c[b] lanes: the chains c_{4b}..c_{4b+3} (j = k, k + 16, k + 32,
 * k + 48); hsum4x4 adds tree16's inner levels, a second hsum4x4 its outer ones, for 4 rows. */
INLINE F4 mv64(const float *W, const F4 *h)
{
    F4 d[4];
    for (int r = 0; r < 4; r++) {
        const float *w = W + 64 * r;
        F4 c[4];
        for (int b = 0; b < 4; b++)
            c[b] = MAD(h[b + 12], LD(w + 48 + 4 * b), MAD(h[b + 8], LD(w + 32 + 4 * b),
                       MAD(h[b + 4], LD(w + 16 + 4 * b), MUL(h[b], LD(w + 4 * b)))));
        d[r] = hsum4x4(c[0], c[1], c[2], c[3]);
    }
    return hsum4x4(d[0], d[1], d[2], d[3]);
}

/* lanes j of the mask: bit j of nib */
INLINE F4 nibmask(unsigned nib)
{
    const F4 bits = wasm_i32x4_make(1, 2, 4, 8);
    return wasm_i32x4_eq(wasm_v128_and(wasm_i32x4_splat((int32_t)nib), bits), bits);
}

/* slot s is live at (step, pos) when its age (step - s) & 15 is <= pos */
INLINE unsigned valid_slots(int step, int pos)
{
    unsigned m = (1u << (pos + 1)) - 1u;
    unsigned start = (unsigned)(step - pos) & 15u;
    return ((m << start) | (m >> (16u - start))) & 0xFFFFu;
}

INLINE float hmax(F4 v)
{
    v = wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(wasm_f32x4_max(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1)), 0);
}
INLINE float hmin(F4 v)
{
    v = wasm_f32x4_min(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(wasm_f32x4_min(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1)), 0);
}

/* the softmax offset of n vectors under masks: 0 when every live lane is in [-126, 64], else the max */
INLINE float offset(const F4 *s, const F4 *live, int n)
{
    F4 mx = SPL(-__builtin_inff()), mn = SPL(__builtin_inff());
    for (int b = 0; b < n; b++) {
        mx = wasm_f32x4_max(mx, wasm_v128_bitselect(s[b], SPL(-__builtin_inff()), live[b]));
        mn = wasm_f32x4_min(mn, wasm_v128_bitselect(s[b], SPL(__builtin_inff()), live[b]));
    }
    float hi = hmax(mx), lo = hmin(mn);
    return (lo >= MG_FAST_LO && hi <= MG_FAST_HI) ? 0.0f : hi;
}

/* any live lane outside [-126, 64] */
INLINE int any_slow(const F4 *s, const F4 *live, int n)
{
    F4 bad = wasm_i32x4_splat(0);
    for (int b = 0; b < n; b++)
        bad = wasm_v128_or(bad, wasm_v128_and(live[b], wasm_v128_or(wasm_f32x4_lt(s[b], SPL(MG_FAST_LO)),
                                                                     wasm_f32x4_gt(s[b], SPL(MG_FAST_HI)))));
    return wasm_v128_any_true(bad);
}

/* Attention of the 4 heads (mg_attention_s): qs[h] lanes d = q_{4h+d} (scaled), the new
 * k, v go to `slot` first. s[h][b] lanes j: the score of slot 4b + j. */
INLINE void attention(const F4 *qs, const F4 *k, const F4 *v, cache_t *c, int slot, unsigned valid, float *out)
{
    for (int h = 0; h < 4; h++) {
        float kk[4], vv[4];
        ST(kk, k[h]);
        ST(vv, v[h]);
        for (int d = 0; d < 4; d++) {
            c->KT[(h * 4 + d) * CTX + slot] = kk[d];
            c->VT[(h * 4 + d) * CTX + slot] = vv[d];
        }
    }
    /* blocks of 4 slots no live slot lies in are skipped: their e are 0, their terms +-0 */
    F4 live[4], s[4][4];
    int any[4];
    for (int b = 0; b < 4; b++) {
        any[b] = (valid >> (4 * b)) & 15u;
        live[b] = nibmask((unsigned)any[b]);
    }
    int slow = 0;
    for (int h = 0; h < 4; h++) {
        const float *K = c->KT + h * 4 * CTX;
        F4 q0 = wasm_i32x4_shuffle(qs[h], qs[h], 0, 0, 0, 0), q1 = wasm_i32x4_shuffle(qs[h], qs[h], 1, 1, 1, 1);
        F4 q2 = wasm_i32x4_shuffle(qs[h], qs[h], 2, 2, 2, 2), q3 = wasm_i32x4_shuffle(qs[h], qs[h], 3, 3, 3, 3);
        for (int b = 0; b < 4; b++)
            s[h][b] = !any[b] ? wasm_i32x4_splat(0)
                              : ADD(MAD(q1, LD(K + CTX + 4 * b), MUL(q0, LD(K + 4 * b))),
                                    MAD(q3, LD(K + 3 * CTX + 4 * b), MUL(q2, LD(K + 2 * CTX + 4 * b))));
        slow |= any_slow(s[h], live, 4);
    }
    const int lo = any[0] | any[1], hi = any[2] | any[3];
    for (int h = 0; h < 4; h++) {
        const float o = slow ? offset(s[h], live, 4) : 0.0f;
        F4 e[4];
        for (int b = 0; b < 4; b++) e[b] = any[b] ? wasm_v128_and(live[b], exp2o(s[h][b], slow, o)) : wasm_i32x4_splat(0);
        F4 rl = wasm_f32x4_div(SPL(1.0f), hsum4(ADD(ADD(e[0], e[1]), ADD(e[2], e[3]))));
        const float *V = c->VT + h * 4 * CTX;
        F4 a[4];
        for (int d = 0; d < 4; d++) {
            const float *vd = V + d * CTX;
            F4 a01 = lo ? MAD(e[1], LD(vd + 4), MUL(e[0], LD(vd))) : wasm_i32x4_splat(0);
            F4 a23 = hi ? MAD(e[3], LD(vd + 12), MUL(e[2], LD(vd + 8))) : wasm_i32x4_splat(0);
            a[d] = ADD(a01, a23);
        }
        ST(out + 4 * h, MUL(hsum4x4(a[0], a[1], a[2], a[3]), rl));
    }
}

/* ------------------------------------------------------------- one token */

/* logits z[8] (ids 4o..4o+3; 27..31 are 0) of token tok at position pos */
static void forward(cache_t *c, int tok, int pos, int step, F4 *z)
{
    const float *w = M.raw;
    float xb[16] __attribute__((aligned(16)));
    F4 x[4], sq[4], x1[4], qs[4], k[4], v[4], x3[4];
    for (int h = 0; h < 4; h++) {
        x[h] = ADD(LD(w + W_TE + tok * E + 4 * h), LD(w + W_PE + pos * E + 4 * h));
        sq[h] = MUL(x[h], x[h]);
    }
    F4 ss = tree16(sq);
    F4 s0 = rs(MAD(ss, SPL(MG_N1), SPL(MG_EPS)));
    F4 S = rs(MAD(ss, SPL(MG_N2), SPL(MG_EPS2)));
    F4 Sq = MUL(S, SPL(MG_CQ));
    for (int h = 0; h < 4; h++) {
        x1[h] = MUL(x[h], s0);
        qs[h] = MUL(mv16(w + W_Q + 64 * h, x), Sq);
        k[h] = MUL(mv16(w + W_K + 64 * h, x), S);
        v[h] = MUL(mv16(w + W_V + 64 * h, x), S);
    }
    attention(qs, k, v, c, step & 15, valid_slots(step, pos), xb);
    F4 att[4];
    for (int h = 0; h < 4; h++) att[h] = LD(xb + 4 * h);
    for (int h = 0; h < 4; h++) {
        x3[h] = ADD(mv16b(w + W_O + 64 * h, att), x1[h]);
        sq[h] = MUL(x3[h], x3[h]);
    }
    F4 S3 = rs(MAD(tree16(sq), SPL(MG_N1), SPL(MG_EPS)));
    F4 hid[16], y[4];
    for (int o = 0; o < 16; o++) hid[o] = wasm_f32x4_pmax(SPL(0.0f), mv16(w + W_FC1 + 64 * o, x3));
    for (int h = 0; h < 4; h++) y[h] = MAD(mv64(w + W_FC2 + 256 * h, hid), S3, x3[h]);
    for (int o = 0; o < 7; o++) z[o] = mv16b(M.lm + 64 * o, y);
    z[7] = wasm_i32x4_splat(0);
}

/* the canonical sampler (mg_sample_s) on z = logits * log2(e)/T */
static int sample(F4 *z, int python, float r, double u)
{
    F4 live[7];
    for (int k = 0; k < 6; k++) live[k] = wasm_i32x4_splat(-1);
    live[6] = nibmask(7u);                               /* ids 24..26 */
    const int slow = any_slow(z, live, 7);
    const float o = slow ? offset(z, live, 7) : 0.0f;
    F4 e[8];
    for (int k = 0; k < 7; k++) e[k] = wasm_v128_and(live[k], exp2o(z[k], slow, o));
    e[7] = wasm_i32x4_splat(0);
    F4 t[4];
    for (int k = 0; k < 4; k++) t[k] = ADD(e[k], e[k + 4]);  /* c_i + c_{16+i}; + 0 past id 26 is exact */
    float total = wasm_f32x4_extract_lane(tree16(t), 0);
    /* inclusive Hillis-Steele scan over 32 lanes, strides 1, 2, 4, 8, 16 (high vectors first: old values) */
    for (int k = 7; k >= 0; k--) e[k] = ADD(e[k], wasm_i32x4_shuffle(k ? e[k - 1] : wasm_i32x4_splat(0), e[k], 3, 4, 5, 6));
    for (int k = 7; k >= 0; k--) e[k] = ADD(e[k], wasm_i32x4_shuffle(k ? e[k - 1] : wasm_i32x4_splat(0), e[k], 2, 3, 4, 5));
    for (int k = 7; k >= 1; k--) e[k] = ADD(e[k], e[k - 1]);
    for (int k = 7; k >= 2; k--) e[k] = ADD(e[k], e[k - 2]);
    for (int k = 7; k >= 4; k--) e[k] = ADD(e[k], e[k - 4]);
    const F4 thr = SPL(python ? (float)(u * (double)total) : r * total);
    uint32_t bits = 1u << 26;
    for (int k = 0; k < 7; k++) bits |= (uint32_t)wasm_i32x4_bitmask(wasm_f32x4_lt(thr, e[k])) << (4 * k);
    return __builtin_ctz(bits & 0x7FFFFFFu);  /* the first id < 26 with thr < c, else 26 */
}

/* ------------------------------------------------------------ the entry points */

EXPORT(mg_logits) int mg_logits(const int32_t *tokens, int32_t n, float *out)
{
    if (!tokens || !out) return ERR_NULL;
    if (n < 1 || n > CTX) return ERR_ARG;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= VOCAB) return ERR_TOKEN;
    cache_t c;
    __builtin_memset(&c, 0, sizeof c);
    for (int p = 0; p < n; p++) {
        float l[32] __attribute__((aligned(16)));
        F4 z[8];
        forward(&c, tokens[p], p, p, z);
        for (int o = 0; o < 8; o++) ST(l + 4 * o, z[o]);
        __builtin_memcpy(out + p * VOCAB, l, VOCAB * sizeof(float));
    }
    return 0;
}

/* greedy decoding: the lowest index of the maximum logit */
static int argmax(const F4 *z)
{
    float l[28] __attribute__((aligned(16)));
    for (int k = 0; k < 7; k++) ST(l + 4 * k, z[k]);
    int best = 0;
    for (int v = 1; v < VOCAB; v++) best = l[v] > l[best] ? v : best;
    return best;
}

static double gen1(int32_t n, uint32_t x, const double *uniforms, int32_t *out, int greedy)
{
    cache_t c;
    __builtin_memset(&c, 0, sizeof c);
    const F4 cz = SPL(M.cz);
    int tok = BOS, pos = 0;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        float r = 0.0f;
        if (!uniforms) {
            x = mg_xorshift32(x);
            r = (float)(x >> 8) * (1.0f / 16777216.0f);
        }
        F4 z[8];
        forward(&c, tok, pos, i & 15, z);
        int nt;
        if (greedy) {
            nt = argmax(z);
        } else {
            for (int o = 0; o < 7; o++) z[o] = MUL(z[o], cz);
            nt = sample(z, uniforms != 0, r, uniforms ? uniforms[i] : 0.0);
        }
        if (out) out[i] = nt;
        sum += nt;
        pos++;
        int reset = (nt == BOS) | (pos == CTX);
        pos = reset ? 0 : pos;
        tok = reset ? BOS : nt;
    }
    return sum;
}

EXPORT(mg_generate) double mg_generate(int32_t n, uint32_t seed, const double *uniforms, int32_t *out, int32_t greedy)
{
    if (n < 1) return ERR_ARG;
    greedy |= M.greedy;
    if (greedy) {
        uniforms = 0;                    /* no random draws: seed and uniforms play no part */
        seed = seed ? seed : 1u;
    } else if (uniforms) {
        for (int32_t i = 0; i < n; i++)
            if (!(uniforms[i] >= 0.0 && uniforms[i] < 1.0)) return ERR_UNIFORM;
    } else if (seed == 0) {
        return ERR_SEED;
    }
    return gen1(n, seed, uniforms, out, greedy);
}


EXPORT(mg_generate_offline) double mg_generate_offline(int32_t n_streams, int32_t tps, uint32_t base_seed, int32_t *out)
{
    if (n_streams < 1 || tps < 1) return ERR_ARG;
    double sum = 0;
    for (int32_t s = 0; s < n_streams; s++)
        sum += gen1(tps, mg_stream_seed(base_seed, (uint32_t)s), 0, out ? out + (int64_t)s * tps : 0, M.greedy);
    return sum;
}
