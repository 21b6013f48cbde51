/* mg_common.h: what mg_fp32.c and mg_q412.c share.
 *
 *   - the vector path, chosen at build time (MG_FORCE_* overrides the predefined macros);
 *   - the model's constants, error codes, xorshift32 and the offline stream seeds;
 *   - the CANONICAL float arithmetic: one fixed sequence of IEEE operations (add, mul,
 *     fma, div, sqrt, max/min, compare) for every float step of the forward pass and
 *     the sampler. The scalar code (mg_*_s and the scalar forward1 of each kernel) *is*
 *     the definition; every vector path (AVX-512, AVX2, NEON; single stream and
 *     structure-of-arrays alike) performs exactly the same operations in the same
 *     association order, only laid out differently across lanes. So all paths give
 *     bit-identical logits and tokens, and stream i of an offline run equals the
 *     single-stream run with the same seed, token for token (tests check both).
 *   - exp2 (once, on the vector layer, beside its scalar reference), the attention
 *     (ring-slot KV cache) and the sampler, per path;
 *   - the structure-of-arrays (SoA, "streams in lanes") vector layer for offline runs;
 *   - a tiny pthread fan-out.
 *
 * Canonical order (float32), chosen for a short dependency chain per token:
 *   tree16(v)  = (((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7))) + (((v8+v9)+(v10+v11))+((v12+v13)+(v14+v15)))
 *   mv16(w,x)  = (c0+c1)+(c2+c3), c_k = x_k*w_k then fma(x_j, w_j, c_k) for j = k+4, k+8, k+12
 *   mv16b(w,x) = ((c0+c1)+(c2+c3))+((c4+c5)+(c6+c7)), c_k = fma(x_{k+8}, w_{k+8}, x_k*w_k)
 *   mv64(w,x)  = tree16(c), c_k = x_k*w_k then fma over j = k+16, k+32, k+48
 *   rs(a)      = 1 / sqrt(a)
 *   norms      = s = rs(fma(tree16(x*x), 1/16, 1e-5)); the block's two entry norms
 *                at once: S = rs(fma(ss, (1+1e-5)/16, 1e-10)) (= s0*s1 exactly, as the
 *                mean square of x*s0 is ms*s0^2). A norm's scale is applied after the
 *                matvec that reads it (q = mv16(Wq, x) * S ...; fc2's output * S3,
 *                relu commuting with S3 > 0), so the norms run beside the matvecs.
 *   exp2(x)    = 2^n * p(f), n = round(x), f = x - n, p a degree-5 minimax
 *                polynomial, p = fma(fma(p45, f2, p23), f2, p01) with f2 = f*f and
 *                pij = fma(f, Pj, Pi) (Horner in f2: Estrin's three-deep chain, one
 *                multiply fewer), x clamped at -126; softmaxes run in the log2
 *                domain (log2 e folded into the query scale and into 1/T).
 *   offsets    = a softmax subtracts o = 0 when all its live inputs lie in [-126, 64]
 *                (nothing can overflow or lose precision), else o = their max; the
 *                vector paths take the o = 0 branch speculatively.
 *   KV cache   = a ring of 16 slots indexed by the generation step (slot = step & 15);
 *                slot t holds position pos - ((step - t) & 15) and is live when that
 *                age <= pos. Attention sums run over the 16 slots in order, dead = 0.
 *   attention  = score = fma(q1,k1,q0*k0) + fma(q3,k3,q2*k2); L_j = (e_j+e_{4+j}) +
 *                (e_{8+j}+e_{12+j}); L = (L0+L1)+(L2+L3); A_j = fma(e_{4+j},v_{4+j},
 *                e_j*v_j) + fma(e_{12+j},v_{12+j},e_{8+j}*v_{8+j}); out = ((A0+A1)+(A2+A3)) * (1/L)
 *   sampler    = z = logit * log2(e)/T; e = exp2(z - o); total = tree16(e_i + e_{16+i});
 *                inclusive Hillis-Steele scan over 32 lanes (27 + 5 zero pads), strides
 *                1, 2, 4, 8, 16; the token is the first v < 26 with thr < c[v], else 26;
 *                thr = r * total (xorshift32: r = (x >> 8) / 2^24) or
 *                (float)(u * (double)total) (python sampler: u = random.random()).
 * The per-token forward pass of each kernel is spelt out at the top of its file.
 */
#ifndef MG_COMMON_H
#define MG_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#endif

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "mg_model.h"

/* ------------------------------------------------------------ the vector path */

#if defined(MG_FORCE_SCALAR)
#define MG_SCALAR 1
#elif defined(MG_FORCE_AVX512)
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__))
#error "MG_FORCE_AVX512: this compiler/target has no AVX-512 F+BW+DQ+VL (try -march=native on an AVX-512 CPU)"
#endif
#define MG_AVX512 1
#elif defined(MG_FORCE_AVX2)
#if !(defined(__AVX2__) && defined(__FMA__))
#error "MG_FORCE_AVX2: this compiler/target has no AVX2+FMA"
#endif
#define MG_AVX2 1
#elif defined(MG_FORCE_NEON)
#if !(defined(__ARM_NEON) && defined(__aarch64__))
#error "MG_FORCE_NEON: this compiler/target is not AArch64 with NEON"
#endif
#define MG_NEON 1
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define MG_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define MG_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define MG_NEON 1
#else
#define MG_SCALAR 1
#endif

#if defined(MG_AVX512) || defined(MG_AVX2)
#include <immintrin.h>
#endif
#if defined(MG_NEON)
#include <arm_neon.h>
#endif

#if defined(MG_AVX512)
#define MG_SIMD_NAME "avx512"
#elif defined(MG_AVX2)
#define MG_SIMD_NAME "avx2"
#elif defined(MG_NEON)
#define MG_SIMD_NAME "neon"
#else
#define MG_SIMD_NAME "scalar"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MG_ALIGN __attribute__((aligned(64)))
#define MG_INLINE static inline __attribute__((always_inline))
#define MG_EXPORT __attribute__((visibility("default")))
#define MG_UNROLL _Pragma("GCC unroll 64")
/* a loop kept rolled where that measured faster: the offline kernels' hot loop is tens
 * of KB of code, and its size costs more than the loop overhead */
#define MG_ROLL _Pragma("GCC unroll 1")
#define MG_LIKELY(x) __builtin_expect(!!(x), 1)
#define MG_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MG_UNROLL4 _Pragma("GCC unroll 4")
#else
#define MG_ALIGN
#define MG_INLINE static inline
#define MG_EXPORT
#define MG_UNROLL
#define MG_ROLL
#define MG_LIKELY(x) (x)
#define MG_UNLIKELY(x) (x)
#define MG_UNROLL4
#endif

/* ------------------------------------------------------------------ phase costs
 * scripts/phase_costs.py builds a kernel with -DMG_REPEAT_PHASE=MG_PH_<phase> and
 * -DMG_REPEAT_TIMES=n (n >= 1): the offline pass then runs that phase n times a token.
 * Each hooked phase reads its inputs from memory and writes its outputs there (the same
 * values each time), so the tokens do not change and the extra time is the phase's cost
 * where it runs.
 * The compiler barrier before each repeat makes it redo the loads and keep the stores, so
 * the copies cannot be merged; a phase whose inputs or results stay in registers passes
 * them through memory in these builds (MG_REPEAT_FRESH, MG_REPEAT_KEEP).
 * In every other build MG_REPEAT(phase) is nothing. */
enum { MG_PH_QKV = 1, MG_PH_ATTENTION, MG_PH_WO, MG_PH_FC1, MG_PH_FC2, MG_PH_LM, MG_PH_SAMPLER };
#if defined(MG_REPEAT_PHASE) && defined(MG_REPEAT_TIMES)
MG_INLINE int mg_barrier(void)
{
    __asm__ volatile("" ::: "memory");
    return 1;
}
/* kept rolled: a copied phase would double its code, and the L1I cost would count as its own */
#define MG_REPEAT(phase) \
    MG_ROLL for (int mg_rep_ = 0; mg_rep_ < (MG_REPEAT_PHASE == (phase) ? MG_REPEAT_TIMES : 1); mg_rep_++) \
        if (mg_barrier())
/* a result kept in registers: stored, so an overwritten repeat is not dead code */
#define MG_REPEAT_KEEP(v) __asm__ volatile("" : : "m"(v))
/* an input kept in registers: through memory, as if changed, so each repeat recomputes */
#define MG_REPEAT_FRESH(v) __asm__ volatile("" : "+m"(v))
#else
#define MG_REPEAT(phase)
#define MG_REPEAT_KEEP(v) ((void)0)
#define MG_REPEAT_FRESH(v) ((void)0)
#endif

/* ------------------------------------------------------------- the model shape */

#define MG_ABI 1

/* randomness: mg_xorshift32 and mg_stream_seed live in mg_model.h */

MG_INLINE float mg_r24(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

MG_INLINE void *mg_alloc(size_t bytes)
{
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p) memset(p, 0, n ? n : 64);
    return p;
}

/* ------------------------------------------------------ canonical scalar float */

/* the canonical float constants (exp2, softmax ranges, norms) are in mg_model.h */

MG_INLINE float mg_f_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
MG_INLINE uint32_t mg_bits_from_f(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* 2^x for x <= 64 (relative error under 2e-7 against exp2 in double, swept over
 * [-30, 30]; x < -126 behaves as -126) */
MG_INLINE float mg_exp2_s(float x)
{
    x = x > MG_EXP_LO ? x : MG_EXP_LO;
    float t = x + MG_EXP_MAGIC;
    float n = t - MG_EXP_MAGIC;
    float f = x - n;
    float f2 = f * f;
    float p01 = fmaf(f, MG_P1, 1.0f);
    float p23 = fmaf(f, MG_P3, MG_P2);
    float p45 = fmaf(f, MG_P5, MG_P4);
    float p = fmaf(fmaf(p45, f2, p23), f2, p01);
    return p * mg_f_from_bits((mg_bits_from_f(t) + 127u) << 23);  /* * 2^n */
}

/* the softmax offset of a set of values with max mx and min mn */
MG_INLINE float mg_offset_s(float mx, float mn) { return (mn >= MG_FAST_LO && mx <= MG_FAST_HI) ? 0.0f : mx; }

MG_INLINE float mg_rs_s(float a) { return 1.0f / sqrtf(a); }

MG_INLINE float mg_tree16_s(const float *v)
{
    return (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) +
           (((v[8] + v[9]) + (v[10] + v[11])) + ((v[12] + v[13]) + (v[14] + v[15])));
}

/* mv16: 4 chains of 4 (j = k, k+4, k+8, k+12), then (c0+c1)+(c2+c3) */
MG_INLINE float mg_mv16_s(const float *w, const float *x)
{
    float c0 = x[0] * w[0], c1 = x[1] * w[1], c2 = x[2] * w[2], c3 = x[3] * w[3];
    for (int j = 4; j < 16; j += 4) {
        c0 = fmaf(x[j], w[j], c0);
        c1 = fmaf(x[j + 1], w[j + 1], c1);
        c2 = fmaf(x[j + 2], w[j + 2], c2);
        c3 = fmaf(x[j + 3], w[j + 3], c3);
    }
    return (c0 + c1) + (c2 + c3);
}

/* mv16b: 8 chains of 2 (j = k, k+8), then ((c0+c1)+(c2+c3))+((c4+c5)+(c6+c7)) */
MG_INLINE float mg_mv16b_s(const float *w, const float *x)
{
    float c[8];
    for (int k = 0; k < 8; k++) c[k] = fmaf(x[k + 8], w[k + 8], x[k] * w[k]);
    return ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));
}

/* mv64: 16 chains of 4 (j = k, k+16, k+32, k+48), then tree16 */
MG_INLINE float mg_mv64_s(const float *w, const float *x)
{
    float c[16];
    for (int k = 0; k < 16; k++) {
        c[k] = x[k] * w[k];
        c[k] = fmaf(x[k + 16], w[k + 16], c[k]);
        c[k] = fmaf(x[k + 32], w[k + 32], c[k]);
        c[k] = fmaf(x[k + 48], w[k + 48], c[k]);
    }
    return mg_tree16_s(c);
}

/* slot s is valid at (step, pos) when its age (step - s) & 15 is <= pos */
MG_INLINE unsigned mg_valid_slots(int step, int pos)
{
    unsigned m = (1u << (pos + 1)) - 1u;          /* pos + 1 slots ... */
    unsigned start = (unsigned)(step - pos) & 15u; /* ... ending at slot step & 15 */
    return ((m << start) | (m >> (16u - start))) & 0xFFFFu;
}

/* Attention, canonical, in the log2 domain: qs = q * 0.5 * log2(e) (already scaled),
 * K and V [slot][16]; out = softmax-weighted sum of V per head. */
MG_INLINE void mg_attention_s(const float *qs, const float *K, const float *V, unsigned valid, float *out)
{
    for (int h = 0; h < 4; h++) {
        float s[16], e[16], mx = -INFINITY, mn = INFINITY;
        const float *q = qs + 4 * h;
        for (int t = 0; t < 16; t++) {
            const float *k = K + t * 16 + 4 * h;
            float a = fmaf(q[1], k[1], q[0] * k[0]);
            float b = fmaf(q[3], k[3], q[2] * k[2]);
            s[t] = a + b;
            if ((valid >> t) & 1u) {
                mx = s[t] > mx ? s[t] : mx;
                mn = s[t] < mn ? s[t] : mn;
            }
        }
        const float o = mg_offset_s(mx, mn);
        for (int t = 0; t < 16; t++) e[t] = ((valid >> t) & 1u) ? mg_exp2_s(s[t] - o) : 0.0f;
        float l[4];
        for (int j = 0; j < 4; j++) l[j] = (e[j] + e[4 + j]) + (e[8 + j] + e[12 + j]);
        float rl = 1.0f / ((l[0] + l[1]) + (l[2] + l[3]));
        for (int d = 0; d < 4; d++) {
            const float *v = V + 4 * h + d;
            float a[4];
            for (int j = 0; j < 4; j++)
                a[j] = fmaf(e[4 + j], v[(4 + j) * 16], e[j] * v[j * 16]) +
                       fmaf(e[12 + j], v[(12 + j) * 16], e[8 + j] * v[(8 + j) * 16]);
            out[4 * h + d] = ((a[0] + a[1]) + (a[2] + a[3])) * rl;
        }
    }
}

/* the sampler's draw mode: xorshift32 (0), python uniforms (1) or greedy (temperature 0) */
#define MG_GREEDY 2

/* greedy decoding: the lowest index of the largest of the 27 logits */
MG_INLINE int mg_argmax_s(const float *z)
{
    int best = 0;
    for (int v = 1; v < MG_VOCAB; v++) best = z[v] > z[best] ? v : best;
    return best;
}

/* Sampler, canonical. z: the 27 logits * log2(e)/T. python: thr from u, else from r;
 * MG_GREEDY: the argmax. */
MG_INLINE int mg_sample_s(const float *z, int python, float r, double u)
{
    if (python == MG_GREEDY) return mg_argmax_s(z);
    float mx = z[0], mn = z[0], c[32], t[16];
    for (int v = 1; v < MG_VOCAB; v++) {
        mx = z[v] > mx ? z[v] : mx;
        mn = z[v] < mn ? z[v] : mn;
    }
    const float o = mg_offset_s(mx, mn);
    for (int v = 0; v < MG_VOCAB; v++) c[v] = mg_exp2_s(z[v] - o);
    for (int v = MG_VOCAB; v < 32; v++) c[v] = 0.0f;
    for (int i = 0; i < 16; i++) t[i] = i + 16 < MG_VOCAB ? c[i] + c[i + 16] : c[i];
    float total = mg_tree16_s(t);
    for (int s = 1; s < 32; s <<= 1)
        for (int i = 31; i >= s; i--) c[i] = c[i] + c[i - s];
    float thr = python ? (float)(u * (double)total) : r * total;
    for (int v = 0; v < MG_VOCAB - 1; v++)
        if (thr < c[v]) return v;
    return MG_VOCAB - 1;
}

/* ------------------------------------------- structure of arrays (offline) layer
 * One vector holds the same quantity for VW independent streams. The operations are
 * lane-wise images of the canonical scalar ones, so every lane computes exactly what
 * the single-stream code computes for its stream. */

#if defined(MG_AVX512)
#define MG_SOA 1
#define VW 16
typedef __m512 VF;
typedef __m512i VI;
typedef __mmask16 VM;
#define vf_load(p) _mm512_load_ps(p)
#define vf_store(p, v) _mm512_store_ps(p, v)
#define vf_set1(f) _mm512_set1_ps(f)
#define vf_zero() _mm512_setzero_ps()
#define vf_bc(p) _mm512_set1_ps(*(p))
#define vf_add(a, b) _mm512_add_ps(a, b)
#define vf_sub(a, b) _mm512_sub_ps(a, b)
#define vf_mul(a, b) _mm512_mul_ps(a, b)
#define vf_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vf_max(a, b) _mm512_max_ps(a, b)
#define vf_min(a, b) _mm512_min_ps(a, b)
#define vf_ge(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ)
#define vf_le(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ)
#define vm_and(a, b) ((VM)((a) & (b)))
#define vf_div(a, b) _mm512_div_ps(a, b)
#define vf_sqrt(a) _mm512_sqrt_ps(a)
#define vf_rint(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vf_sel(m, t, f) _mm512_mask_blend_ps(m, f, t)
#define vf_maskz(m, v) _mm512_maskz_mov_ps(m, v)
#define vf_lt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define vf_as_vi(v) _mm512_castps_si512(v)
#define vi_as_vf(v) _mm512_castsi512_ps(v)
#define vi_set1(i) _mm512_set1_epi32(i)
#define vi_load(p) _mm512_loadu_si512((const void *)(p))
#define vi_store(p, v) _mm512_storeu_si512((void *)(p), v)
#define vi_add(a, b) _mm512_add_epi32(a, b)
#define vi_xor(a, b) _mm512_xor_si512(a, b)
#define vi_slli(a, n) _mm512_slli_epi32(a, n)
#define vi_srli(a, n) _mm512_srli_epi32(a, n)
#define vi_eq(a, b) _mm512_cmpeq_epi32_mask(a, b)
#define vi_ge(a, b) _mm512_cmpge_epi32_mask(a, b)
#define vi_sel(m, t, f) _mm512_mask_blend_epi32(m, f, t)
#define vi_to_f(a) _mm512_cvtepi32_ps(a)
#define vm_or(a, b) ((VM)((a) | (b)))
#define vm_all(m) ((m) == (VM)0xFFFF)
#define vf_gather(base, idx) _mm512_i32gather_ps(idx, base, 4)
/* integer layer for the Q4.12 kernel: lanes hold int32, or two int16 (a pair) */
#define MG_SOA_Q 1
#define vi_gather(base, idx) _mm512_i32gather_epi32(idx, (const void *)(base), 4)
#define vi_bc32(p) _mm512_set1_epi32(*(const int32_t *)(p))
#if defined(__AVX512VNNI__)
#define vi_dpwssd(acc, a, b) _mm512_dpwssd_epi32(acc, a, b)
#else
#define vi_dpwssd(acc, a, b) _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
#endif
#define vi_srai(a, n) _mm512_srai_epi32(a, n)
#define vi_min(a, b) _mm512_min_epi32(a, b)
#define vi_minm(a, m, b) _mm512_mask_min_epi32(a, m, a, b) /* m ? min(a, b) : a */
#define vi_max(a, b) _mm512_max_epi32(a, b)
#define vi_maxu(a, b) _mm512_max_epu32(a, b)
#define vi_gt(a, b) _mm512_cmpgt_epi32_mask(a, b)
#define vi_adds16(a, b) _mm512_adds_epi16(a, b)
#define vi_max16(a, b) _mm512_max_epi16(a, b)
#define vi_zero() _mm512_setzero_si512()
/* the pair (sat16(lo), sat16(hi)): vpackssdw saturates, then each 128-bit lane's halves interleave */
#define vi_pack2(lo, hi) _mm512_shuffle_epi8(_mm512_packs_epi32(lo, hi), _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)))
#define vi_lo16(a) _mm512_srai_epi32(_mm512_slli_epi32(a, 16), 16)
#define vi_hi16(a) _mm512_srai_epi32(a, 16)
#define vf_to_i(a) _mm512_cvtps_epi32(a)
#elif defined(MG_AVX2)
#define MG_SOA 1
#define VW 8
typedef __m256 VF;
typedef __m256i VI;
typedef __m256 VM;
#define vf_load(p) _mm256_load_ps(p)
#define vf_store(p, v) _mm256_store_ps(p, v)
#define vf_set1(f) _mm256_set1_ps(f)
#define vf_zero() _mm256_setzero_ps()
#define vf_bc(p) _mm256_broadcast_ss(p)
#define vf_add(a, b) _mm256_add_ps(a, b)
#define vf_sub(a, b) _mm256_sub_ps(a, b)
#define vf_mul(a, b) _mm256_mul_ps(a, b)
#define vf_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vf_max(a, b) _mm256_max_ps(a, b)
#define vf_min(a, b) _mm256_min_ps(a, b)
#define vf_ge(a, b) _mm256_cmp_ps(a, b, _CMP_GE_OQ)
#define vf_le(a, b) _mm256_cmp_ps(a, b, _CMP_LE_OQ)
#define vm_and(a, b) _mm256_and_ps(a, b)
#define vf_div(a, b) _mm256_div_ps(a, b)
#define vf_sqrt(a) _mm256_sqrt_ps(a)
#define vf_rint(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vf_sel(m, t, f) _mm256_blendv_ps(f, t, m)
#define vf_maskz(m, v) _mm256_and_ps(m, v)
#define vf_lt(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define vf_as_vi(v) _mm256_castps_si256(v)
#define vi_as_vf(v) _mm256_castsi256_ps(v)
#define vi_set1(i) _mm256_set1_epi32(i)
#define vi_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define vi_store(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define vi_add(a, b) _mm256_add_epi32(a, b)
#define vi_xor(a, b) _mm256_xor_si256(a, b)
#define vi_slli(a, n) _mm256_slli_epi32(a, n)
#define vi_srli(a, n) _mm256_srli_epi32(a, n)
#define vi_eq(a, b) _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b))
#define vi_ge(a, b) _mm256_castsi256_ps(_mm256_xor_si256(_mm256_cmpgt_epi32(b, a), _mm256_set1_epi32(-1)))
#define vi_sel(m, t, f) _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(f), _mm256_castsi256_ps(t), m))
#define vi_to_f(a) _mm256_cvtepi32_ps(a)
#define vm_or(a, b) _mm256_or_ps(a, b)
#define vm_all(m) (_mm256_movemask_ps(m) == 0xFF)
#define vf_gather(base, idx) _mm256_i32gather_ps(base, idx, 4)
#define MG_SOA_Q 1
#define vi_gather(base, idx) _mm256_i32gather_epi32((const int *)(base), idx, 4)
#define vi_bc32(p) _mm256_set1_epi32(*(const int32_t *)(p))
#if defined(__AVXVNNI__)
#define vi_dpwssd(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#else
#define vi_dpwssd(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#endif
#define vi_srai(a, n) _mm256_srai_epi32(a, n)
#define vi_min(a, b) _mm256_min_epi32(a, b)
#define vi_minm(a, m, b) _mm256_min_epi32(a, _mm256_castps_si256(_mm256_and_ps(m, _mm256_castsi256_ps(b)))) /* the same where a <= 0 */
#define vi_max(a, b) _mm256_max_epi32(a, b)
#define vi_maxu(a, b) _mm256_max_epu32(a, b)
#define vi_gt(a, b) _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b))
#define vi_adds16(a, b) _mm256_adds_epi16(a, b)
#define vi_max16(a, b) _mm256_max_epi16(a, b)
#define vi_zero() _mm256_setzero_si256()
#define vi_pack2(lo, hi) _mm256_shuffle_epi8(_mm256_packs_epi32(lo, hi), _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)))
#define vi_lo16(a) _mm256_srai_epi32(_mm256_slli_epi32(a, 16), 16)
#define vi_hi16(a) _mm256_srai_epi32(a, 16)
#define vf_to_i(a) _mm256_cvtps_epi32(a)
#elif defined(MG_NEON)
#define MG_SOA 1
#define VW 4
typedef float32x4_t VF;
typedef int32x4_t VI;
typedef uint32x4_t VM;
#define vf_load(p) vld1q_f32(p)
#define vf_store(p, v) vst1q_f32(p, v)
#define vf_set1(f) vdupq_n_f32(f)
#define vf_zero() vdupq_n_f32(0.0f)
#define vf_bc(p) vld1q_dup_f32(p)
#define vf_add(a, b) vaddq_f32(a, b)
#define vf_sub(a, b) vsubq_f32(a, b)
#define vf_mul(a, b) vmulq_f32(a, b)
#define vf_fma(a, b, c) vfmaq_f32(c, a, b)
#define vf_max(a, b) vmaxq_f32(a, b) /* no NaN reaches a max */
#define vf_min(a, b) vminq_f32(a, b)
#define vf_ge(a, b) vcgeq_f32(a, b)
#define vf_le(a, b) vcleq_f32(a, b)
#define vm_and(a, b) vandq_u32(a, b)
#define vf_div(a, b) vdivq_f32(a, b)
#define vf_sqrt(a) vsqrtq_f32(a)
#define vf_rint(a) vrndnq_f32(a) /* to nearest even, as vf_to_i */
#define vf_sel(m, t, f) vbslq_f32(m, t, f)
#define vf_maskz(m, v) vreinterpretq_f32_u32(vandq_u32(m, vreinterpretq_u32_f32(v)))
#define vf_lt(a, b) vcltq_f32(a, b)
#define vf_as_vi(v) vreinterpretq_s32_f32(v)
#define vi_as_vf(v) vreinterpretq_f32_s32(v)
#define vi_set1(i) vdupq_n_s32(i)
#define vi_load(p) vld1q_s32((const int32_t *)(p))
#define vi_store(p, v) vst1q_s32((int32_t *)(p), v)
#define vi_add(a, b) vaddq_s32(a, b)
#define vi_xor(a, b) veorq_s32(a, b)
#define vi_slli(a, n) vshlq_n_s32(a, n)
#define vi_srli(a, n) vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(a), n))
#define vi_eq(a, b) vceqq_s32(a, b)
#define vi_ge(a, b) vcgeq_s32(a, b)
#define vi_sel(m, t, f) vbslq_s32(m, t, f)
#define vi_to_f(a) vcvtq_f32_s32(a)
#define vm_or(a, b) vorrq_u32(a, b)
#define vm_all(m) (vminvq_u32(m) != 0)
#define vi_min(a, b) vminq_s32(a, b)
MG_INLINE VF vf_gather_neon(const float *base, VI idx)
{
    int32_t i[4];
    vst1q_s32(i, idx);
    float v[4] = {base[i[0]], base[i[1]], base[i[2]], base[i[3]]};
    return vld1q_f32(v);
}
#define vf_gather(base, idx) vf_gather_neon(base, idx)
#endif

/* The canonical exp2, written once on the vector layer (VF is __m512, __m256 or
 * float32x4_t): the single-stream helpers and the SoA code both use it; mg_exp2_s is
 * its scalar reference. _nc: without the clamp (every live lane >= -126). */
#if defined(MG_SOA)
/* the exp2's polynomial p = 2^f, f = x - rint(x) in [-1/2, 1/2] */
MG_INLINE VF mg_exp2V_frac(VF f)
{
    VF f2 = vf_mul(f, f);
    VF p01 = vf_fma(f, vf_set1(MG_P1), vf_set1(1.0f));
    VF p23 = vf_fma(f, vf_set1(MG_P3), vf_set1(MG_P2));
    VF p45 = vf_fma(f, vf_set1(MG_P5), vf_set1(MG_P4));
    /* Horner in f2, not Estrin's q0 + p45 * f4: as deep (f2 and the pij in parallel, then
     * two fmas) but without f4's multiply, one FMA-pipe op fewer an exp2 (offline AVX-512,
     * Zen 5, gcc / clang: c-fp32 -4.0 / -1.2, c-q412 -1.9 / -0.5 cycles/token) */
    return vf_fma(vf_fma(p45, f2, p23), f2, p01);
}
#if defined(MG_AVX512) && defined(MG_EXP2_SCALEF)
/* The avx512-scalef variant: the same bits in 9 vector operations, not 11. f = x - rint(x)
 * by VREDUCEPS (imm 8: round to nearest, checked equal over every float); n = x - f is
 * rint(x) exactly (f is exact and n representable); p * 2^n by VSCALEFPS, exact while it is
 * normal, as the add form's range keeps it (its mg_exp2V_nc; tests/test_exp2_variants.py
 * compares the two bit for bit). Kept a variant for the autotuner, not the default:
 * VREDUCEPS is 2 uops on Zen 5 (there c-fp32 / c-q412 offline gcc +23 cycles/token); on the
 * Intel Xeon family 6 model 167 (one-process A/Bs against the add form) c-q412 offline -3% to
 * -5%, single stream -2%, c-fp32 single stream -2% to -5%, offline within 1%. */
MG_INLINE VF mg_exp2V_fn(VF x, VF *n)
{
    const VF f = _mm512_reduce_ps(x, 8);
    *n = vf_sub(x, f);
    return mg_exp2V_frac(f);
}
MG_INLINE VF mg_exp2V_nc(VF x)
{
    VF n, p = mg_exp2V_fn(x, &n);
    return _mm512_scalef_ps(p, n);
}
/* mg_exp2V_nc in the live lanes, zero in the others */
MG_INLINE VF mg_exp2V_live(__mmask16 live, VF x)
{
    VF n, p = mg_exp2V_fn(x, &n);
    return _mm512_maskz_scalef_ps(live, p, n);
}
#else
/* the polynomial and *t = x + magic, whose low bits hold n */
MG_INLINE VF mg_exp2V_poly(VF x, VF *tn)
{
    const VF t = vf_add(x, vf_set1(MG_EXP_MAGIC));
    *tn = t;
    /* f = x - rint(x), exactly (VREDUCEPS: the avx512-scalef variant above) */
    return mg_exp2V_frac(vf_sub(x, vf_sub(t, vf_set1(MG_EXP_MAGIC))));
}
MG_INLINE VF mg_exp2V_nc(VF x)
{
    VF t, p = mg_exp2V_poly(x, &t);
    /* p * 2^n (the reference's multiply) as an integer add of n to p's exponent: the
     * same bits, as p in [1, 2) for n = -126 (x >= -126) and p < 1.5 for n <= 64 keep
     * p * 2^n normal; an integer pipe instead of an FMA pipe. The low bits of t hold n
     * (t = n + 1.5 * 2^23), and t << 23 keeps just n << 23. */
    return vi_as_vf(vi_add(vf_as_vi(p), vi_slli(vf_as_vi(t), 23)));
}
#if defined(MG_AVX512)
/* mg_exp2V_nc in the live lanes, zero in the others: its last add zero-masked */
MG_INLINE VF mg_exp2V_live(__mmask16 live, VF x)
{
    VF t, p = mg_exp2V_poly(x, &t);
    return vi_as_vf(_mm512_maskz_add_epi32(live, vf_as_vi(p), vi_slli(vf_as_vi(t), 23)));
}
#endif
#endif
MG_INLINE VF mg_exp2V(VF x) { return mg_exp2V_nc(vf_max(x, vf_set1(MG_EXP_LO))); }
#endif

/* ------------------------------------------------ single-stream vector helpers */

#if defined(MG_AVX512)
/* the canonical exp2 on 16 lanes (the vector layer's) */
MG_INLINE __m512 mg_exp2_16nc(__m512 x) { return mg_exp2V_nc(x); }
MG_INLINE __m512 mg_exp2_16(__m512 x) { return mg_exp2V(x); }
/* lanes of m (under mask k) outside the fast range */
MG_INLINE __mmask16 mg_slow16(__mmask16 k, __m512 v)
{
    return _mm512_mask_cmp_ps_mask(k, v, _mm512_set1_ps(MG_FAST_LO), _CMP_LT_OQ) |
           _mm512_mask_cmp_ps_mask(k, v, _mm512_set1_ps(MG_FAST_HI), _CMP_GT_OQ);
}
MG_INLINE __m512 mg_hmin16(__m512 v)
{
    v = _mm512_min_ps(v, _mm512_permute_ps(v, 0xB1));
    v = _mm512_min_ps(v, _mm512_permute_ps(v, 0x4E));
    v = _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    return _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
}
#define MG_SWAP1 0xB1 /* (1,0,3,2) */
#define MG_SWAP2 0x4E /* (2,3,0,1) */
/* butterfly all-reduce sum: every lane gets tree16 */
MG_INLINE __m512 mg_hsum16(__m512 v)
{
    v = _mm512_add_ps(v, _mm512_permute_ps(v, MG_SWAP1));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, MG_SWAP2));
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    return _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
}
MG_INLINE __m512 mg_hmax16(__m512 v)
{
    v = _mm512_max_ps(v, _mm512_permute_ps(v, MG_SWAP1));
    v = _mm512_max_ps(v, _mm512_permute_ps(v, MG_SWAP2));
    v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    return _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
}
/* tree16 of 16 broadcast vectors (all lanes of b[j] hold x_j) */
MG_INLINE __m512 mg_tree16_16(const __m512 *b)
{
#define A_(i, j) _mm512_add_ps(i, j)
    return A_(A_(A_(A_(b[0], b[1]), A_(b[2], b[3])), A_(A_(b[4], b[5]), A_(b[6], b[7]))),
              A_(A_(A_(b[8], b[9]), A_(b[10], b[11])), A_(A_(b[12], b[13]), A_(b[14], b[15]))));
#undef A_
}
MG_INLINE __m512 mg_rs16(__m512 a) { return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(a)); }

/* Attention, single stream, compact layout: KT[b][d] lane h*4+j = K[slot 4b+j][4h+d];
 * V natural [slot][16]. The new key/value go to `slot`. */
MG_INLINE __m512 mg_attention16(__m512 qs, __m512 k, __m512 v, float *KT, float *V, int slot, unsigned valid)
{
    const __m512 q0 = _mm512_permute_ps(qs, 0x00), q1 = _mm512_permute_ps(qs, 0x55);
    const __m512 q2 = _mm512_permute_ps(qs, 0xAA), q3 = _mm512_permute_ps(qs, 0xFF);
    const int cb = slot >> 2;
    const __mmask16 wm = (__mmask16)(0x1111u << (slot & 3));
    _mm512_store_ps(V + slot * 16, v);
    __m512 s[4];
    __mmask16 vm[4];
    for (int b = 0; b < 4; b++) {
        float *kt = KT + b * 64;
        __m512 k0 = _mm512_load_ps(kt), k1 = _mm512_load_ps(kt + 16);
        __m512 k2 = _mm512_load_ps(kt + 32), k3 = _mm512_load_ps(kt + 48);
        if (b == cb) {
            k0 = _mm512_mask_blend_ps(wm, k0, _mm512_permute_ps(k, 0x00));
            k1 = _mm512_mask_blend_ps(wm, k1, _mm512_permute_ps(k, 0x55));
            k2 = _mm512_mask_blend_ps(wm, k2, _mm512_permute_ps(k, 0xAA));
            k3 = _mm512_mask_blend_ps(wm, k3, _mm512_permute_ps(k, 0xFF));
            _mm512_store_ps(kt, k0);
            _mm512_store_ps(kt + 16, k1);
            _mm512_store_ps(kt + 32, k2);
            _mm512_store_ps(kt + 48, k3);
        }
        s[b] = _mm512_add_ps(_mm512_fmadd_ps(q1, k1, _mm512_mul_ps(q0, k0)),
                             _mm512_fmadd_ps(q3, k3, _mm512_mul_ps(q2, k2)));
        vm[b] = (__mmask16)(((valid >> (4 * b)) & 0xFu) * 0x1111u);
    }
    __m512 e0, e1, e2, e3;
    if (__builtin_expect(!(mg_slow16(vm[0], s[0]) | mg_slow16(vm[1], s[1]) | mg_slow16(vm[2], s[2]) |
                           mg_slow16(vm[3], s[3])), 1)) {
        e0 = _mm512_maskz_mov_ps(vm[0], mg_exp2_16nc(s[0]));
        e1 = _mm512_maskz_mov_ps(vm[1], mg_exp2_16nc(s[1]));
        e2 = _mm512_maskz_mov_ps(vm[2], mg_exp2_16nc(s[2]));
        e3 = _mm512_maskz_mov_ps(vm[3], mg_exp2_16nc(s[3]));
    } else { /* per head: offset 0 if all its live scores are in range, else its max */
        const __m512 ninf = _mm512_set1_ps(-INFINITY), pinf = _mm512_set1_ps(INFINITY);
        __m512 m = _mm512_max_ps(_mm512_max_ps(_mm512_mask_blend_ps(vm[0], ninf, s[0]), _mm512_mask_blend_ps(vm[1], ninf, s[1])),
                                 _mm512_max_ps(_mm512_mask_blend_ps(vm[2], ninf, s[2]), _mm512_mask_blend_ps(vm[3], ninf, s[3])));
        __m512 n = _mm512_min_ps(_mm512_min_ps(_mm512_mask_blend_ps(vm[0], pinf, s[0]), _mm512_mask_blend_ps(vm[1], pinf, s[1])),
                                 _mm512_min_ps(_mm512_mask_blend_ps(vm[2], pinf, s[2]), _mm512_mask_blend_ps(vm[3], pinf, s[3])));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, MG_SWAP1));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, MG_SWAP2));
        n = _mm512_min_ps(n, _mm512_permute_ps(n, MG_SWAP1));
        n = _mm512_min_ps(n, _mm512_permute_ps(n, MG_SWAP2));
        __mmask16 fast = _mm512_cmp_ps_mask(n, _mm512_set1_ps(MG_FAST_LO), _CMP_GE_OQ) &
                         _mm512_cmp_ps_mask(m, _mm512_set1_ps(MG_FAST_HI), _CMP_LE_OQ);
        m = _mm512_maskz_mov_ps((__mmask16)~fast, m);
        e0 = _mm512_maskz_mov_ps(vm[0], mg_exp2_16(_mm512_sub_ps(s[0], m)));
        e1 = _mm512_maskz_mov_ps(vm[1], mg_exp2_16(_mm512_sub_ps(s[1], m)));
        e2 = _mm512_maskz_mov_ps(vm[2], mg_exp2_16(_mm512_sub_ps(s[2], m)));
        e3 = _mm512_maskz_mov_ps(vm[3], mg_exp2_16(_mm512_sub_ps(s[3], m)));
    }
    __m512 l = _mm512_add_ps(_mm512_add_ps(e0, e1), _mm512_add_ps(e2, e3));
    l = _mm512_add_ps(l, _mm512_permute_ps(l, MG_SWAP1));
    l = _mm512_add_ps(l, _mm512_permute_ps(l, MG_SWAP2));
    __m512 rl = _mm512_div_ps(_mm512_set1_ps(1.0f), l);
#define MG_PJ(e, j) _mm512_permute_ps(e, (j) * 0x55)
#define MG_AJ(j)                                                                                              \
    _mm512_add_ps(_mm512_fmadd_ps(MG_PJ(e1, j), _mm512_load_ps(V + (4 + j) * 16),                             \
                                  _mm512_mul_ps(MG_PJ(e0, j), _mm512_load_ps(V + (j) * 16))),                 \
                  _mm512_fmadd_ps(MG_PJ(e3, j), _mm512_load_ps(V + (12 + j) * 16),                            \
                                  _mm512_mul_ps(MG_PJ(e2, j), _mm512_load_ps(V + (8 + j) * 16))))
    __m512 a0 = MG_AJ(0), a1 = MG_AJ(1), a2 = MG_AJ(2), a3 = MG_AJ(3);
#undef MG_AJ
#undef MG_PJ
    return _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), rl);
}

/* the sampler on z (lo: ids 0..15, hi: 16..26, lanes 11..15 ignored) */
MG_INLINE int mg_sample16(__m512 zlo, __m512 zhi, int python, float r, double u)
{
    const __mmask16 hv = 0x07FF;
    if (python == MG_GREEDY) {
        MG_ALIGN float z[32];
        _mm512_store_ps(z, zlo);
        _mm512_store_ps(z + 16, zhi);
        return mg_argmax_s(z);
    }
    __m512 lo, hi;
    if (__builtin_expect(!(mg_slow16(0xFFFF, zlo) | mg_slow16(hv, zhi)), 1)) {
        lo = mg_exp2_16nc(zlo);
        hi = _mm512_maskz_mov_ps(hv, mg_exp2_16nc(zhi));
    } else {
        __m512 m = mg_hmax16(_mm512_max_ps(zlo, _mm512_mask_blend_ps(hv, _mm512_set1_ps(-INFINITY), zhi)));
        __m512 n = mg_hmin16(_mm512_min_ps(zlo, _mm512_mask_blend_ps(hv, _mm512_set1_ps(INFINITY), zhi)));
        __mmask16 fast = _mm512_cmp_ps_mask(n, _mm512_set1_ps(MG_FAST_LO), _CMP_GE_OQ) &
                         _mm512_cmp_ps_mask(m, _mm512_set1_ps(MG_FAST_HI), _CMP_LE_OQ);
        m = _mm512_maskz_mov_ps((__mmask16)~fast, m);
        lo = mg_exp2_16(_mm512_sub_ps(zlo, m));
        hi = _mm512_maskz_mov_ps(hv, mg_exp2_16(_mm512_sub_ps(zhi, m)));
    }
    __m512 total = mg_hsum16(_mm512_add_ps(lo, hi));
    const __m512i zero = _mm512_setzero_si512();
#define MG_SCAN_STEP(S)                                                                                   \
    do {                                                                                                  \
        __m512 shi = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), 16 - (S))); \
        __m512 slo = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(lo), zero, 16 - (S)));  \
        hi = _mm512_add_ps(hi, shi);                                                                      \
        lo = _mm512_add_ps(lo, slo);                                                                      \
    } while (0)
    MG_SCAN_STEP(1);
    MG_SCAN_STEP(2);
    MG_SCAN_STEP(4);
    MG_SCAN_STEP(8);
#undef MG_SCAN_STEP
    hi = _mm512_add_ps(hi, lo);
    __m512 thr;
    if (python)
        thr = _mm512_set1_ps((float)(u * (double)_mm512_cvtss_f32(total)));
    else
        thr = _mm512_mul_ps(_mm512_set1_ps(r), total);
    uint32_t ml = _mm512_cmp_ps_mask(thr, lo, _CMP_LT_OQ);
    uint32_t mh = _mm512_cmp_ps_mask(thr, hi, _CMP_LT_OQ) & 0x3FFu;
    return (int)__builtin_ctz(ml | (mh << 16) | (1u << 26));
}
#endif /* MG_AVX512 */

#if defined(MG_AVX2)
/* 16 lanes as two ymm (lanes 0..7, 8..15); every operation is the lane-wise image of
 * the AVX-512 one, so the results are bit-identical */
typedef struct { __m256 lo, hi; } v16;
MG_INLINE v16 v16_load(const float *p) { v16 r = {_mm256_load_ps(p), _mm256_load_ps(p + 8)}; return r; }
MG_INLINE void v16_store(float *p, v16 a) { _mm256_store_ps(p, a.lo); _mm256_store_ps(p + 8, a.hi); }
MG_INLINE v16 v16_set1(float f) { v16 r = {_mm256_set1_ps(f), _mm256_set1_ps(f)}; return r; }
#define V16_OP2(name, op) MG_INLINE v16 name(v16 a, v16 b) { v16 r = {op(a.lo, b.lo), op(a.hi, b.hi)}; return r; }
V16_OP2(v16_add, _mm256_add_ps)
V16_OP2(v16_sub, _mm256_sub_ps)
V16_OP2(v16_mul, _mm256_mul_ps)
V16_OP2(v16_max, _mm256_max_ps)
V16_OP2(v16_min, _mm256_min_ps)
V16_OP2(v16_and, _mm256_and_ps)
MG_INLINE v16 v16_fma(v16 a, v16 b, v16 c) { v16 r = {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; return r; }
#define v16_perm(a, imm) ((v16){_mm256_permute_ps((a).lo, imm), _mm256_permute_ps((a).hi, imm)})
MG_INLINE v16 v16_blendv(v16 a, v16 b, v16 m) { v16 r = {_mm256_blendv_ps(a.lo, b.lo, m.lo), _mm256_blendv_ps(a.hi, b.hi, m.hi)}; return r; }

MG_INLINE __m256 mg_exp2_8nc(__m256 x) { return mg_exp2V_nc(x); }
MG_INLINE __m256 mg_exp2_8(__m256 x) { return mg_exp2V(x); }
MG_INLINE v16 v16_exp2nc(v16 x) { v16 r = {mg_exp2_8nc(x.lo), mg_exp2_8nc(x.hi)}; return r; }
MG_INLINE v16 v16_exp2(v16 x) { v16 r = {mg_exp2_8(x.lo), mg_exp2_8(x.hi)}; return r; }
/* all-lanes masks: any lane of v (under mask k) outside the fast range */
MG_INLINE int mg_slow8(__m256 k, __m256 v)
{
    __m256 bad = _mm256_or_ps(_mm256_cmp_ps(v, _mm256_set1_ps(MG_FAST_LO), _CMP_LT_OQ),
                              _mm256_cmp_ps(v, _mm256_set1_ps(MG_FAST_HI), _CMP_GT_OQ));
    return _mm256_movemask_ps(_mm256_and_ps(k, bad));
}
/* butterfly all-reduce over 16 lanes: every lane gets tree16 */
MG_INLINE __m256 mg_hsum8x2(v16 v)
{
    v = v16_add(v, v16_perm(v, 0xB1));
    v = v16_add(v, v16_perm(v, 0x4E));
    __m256 lo = _mm256_add_ps(v.lo, _mm256_permute2f128_ps(v.lo, v.lo, 1));
    __m256 hi = _mm256_add_ps(v.hi, _mm256_permute2f128_ps(v.hi, v.hi, 1));
    return _mm256_add_ps(lo, hi);
}
MG_INLINE __m256 mg_hmax8x2(v16 v)
{
    v = v16_max(v, v16_perm(v, 0xB1));
    v = v16_max(v, v16_perm(v, 0x4E));
    __m256 lo = _mm256_max_ps(v.lo, _mm256_permute2f128_ps(v.lo, v.lo, 1));
    __m256 hi = _mm256_max_ps(v.hi, _mm256_permute2f128_ps(v.hi, v.hi, 1));
    return _mm256_max_ps(lo, hi);
}
MG_INLINE __m256 mg_hmin8x2(v16 v)
{
    v = v16_min(v, v16_perm(v, 0xB1));
    v = v16_min(v, v16_perm(v, 0x4E));
    __m256 lo = _mm256_min_ps(v.lo, _mm256_permute2f128_ps(v.lo, v.lo, 1));
    __m256 hi = _mm256_min_ps(v.hi, _mm256_permute2f128_ps(v.hi, v.hi, 1));
    return _mm256_min_ps(lo, hi);
}
MG_INLINE __m256 mg_rs8(__m256 a) { return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_sqrt_ps(a)); }
/* lane mask (all ones) for lanes whose (lane & 3) bit is set in nib */
MG_INLINE __m256 mg_nibmask8(unsigned nib)
{
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 1, 2, 4, 8);
    __m256i t = _mm256_and_si256(_mm256_set1_epi32((int)nib), bits);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(t, bits));
}

/* Attention, single stream, compact layout (see mg_attention16) on two ymm */
MG_INLINE v16 mg_attention8x2(v16 qs, v16 k, v16 v, float *KT, float *V, int slot, unsigned valid)
{
    const v16 q0 = v16_perm(qs, 0x00), q1 = v16_perm(qs, 0x55), q2 = v16_perm(qs, 0xAA), q3 = v16_perm(qs, 0xFF);
    const int cb = slot >> 2;
    const __m256 wm8 = mg_nibmask8(1u << (slot & 3));
    const v16 wm = {wm8, wm8};
    v16_store(V + slot * 16, v);
    v16 s[4], vm[4];
    const v16 zero = v16_set1(0.0f);
    for (int b = 0; b < 4; b++) {
        float *kt = KT + b * 64;
        __m256 m8 = mg_nibmask8((valid >> (4 * b)) & 0xFu);
        vm[b] = (v16){m8, m8};
        /* a block without a live slot weighs exact zeros (the and below): its scores and
         * exp2s are skipped (most tokens see one or two of the four blocks) */
        if (((valid >> (4 * b)) & 0xFu) == 0) {
            s[b] = zero;
            continue;
        }
        v16 k0 = v16_load(kt), k1 = v16_load(kt + 16), k2 = v16_load(kt + 32), k3 = v16_load(kt + 48);
        if (b == cb) {
            k0 = v16_blendv(k0, v16_perm(k, 0x00), wm);
            k1 = v16_blendv(k1, v16_perm(k, 0x55), wm);
            k2 = v16_blendv(k2, v16_perm(k, 0xAA), wm);
            k3 = v16_blendv(k3, v16_perm(k, 0xFF), wm);
            v16_store(kt, k0);
            v16_store(kt + 16, k1);
            v16_store(kt + 32, k2);
            v16_store(kt + 48, k3);
        }
        s[b] = v16_add(v16_fma(q1, k1, v16_mul(q0, k0)), v16_fma(q3, k3, v16_mul(q2, k2)));
    }
    v16 e[4];
    int slow = 0;
    for (int b = 0; b < 4; b++) slow |= mg_slow8(vm[b].lo, s[b].lo) | mg_slow8(vm[b].hi, s[b].hi);
    if (__builtin_expect(!slow, 1)) {
        for (int b = 0; b < 4; b++) e[b] = ((valid >> (4 * b)) & 0xFu) ? v16_and(vm[b], v16_exp2nc(s[b])) : zero;
    } else {
        const v16 ninf = v16_set1(-INFINITY), pinf = v16_set1(INFINITY);
        v16 m = v16_max(v16_max(v16_blendv(ninf, s[0], vm[0]), v16_blendv(ninf, s[1], vm[1])),
                        v16_max(v16_blendv(ninf, s[2], vm[2]), v16_blendv(ninf, s[3], vm[3])));
        v16 n = v16_min(v16_min(v16_blendv(pinf, s[0], vm[0]), v16_blendv(pinf, s[1], vm[1])),
                        v16_min(v16_blendv(pinf, s[2], vm[2]), v16_blendv(pinf, s[3], vm[3])));
        m = v16_max(m, v16_perm(m, 0xB1));
        m = v16_max(m, v16_perm(m, 0x4E));
        n = v16_min(n, v16_perm(n, 0xB1));
        n = v16_min(n, v16_perm(n, 0x4E));
        v16 fast = v16_and((v16){_mm256_cmp_ps(n.lo, _mm256_set1_ps(MG_FAST_LO), _CMP_GE_OQ), _mm256_cmp_ps(n.hi, _mm256_set1_ps(MG_FAST_LO), _CMP_GE_OQ)},
                           (v16){_mm256_cmp_ps(m.lo, _mm256_set1_ps(MG_FAST_HI), _CMP_LE_OQ), _mm256_cmp_ps(m.hi, _mm256_set1_ps(MG_FAST_HI), _CMP_LE_OQ)});
        m = v16_blendv(m, v16_set1(0.0f), fast);
        for (int b = 0; b < 4; b++) e[b] = v16_and(vm[b], v16_exp2(v16_sub(s[b], m)));
    }
    v16 l = v16_add(v16_add(e[0], e[1]), v16_add(e[2], e[3]));
    l = v16_add(l, v16_perm(l, 0xB1));
    l = v16_add(l, v16_perm(l, 0x4E));
    v16 rl = {_mm256_div_ps(_mm256_set1_ps(1.0f), l.lo), _mm256_div_ps(_mm256_set1_ps(1.0f), l.hi)};
    v16 a[4];
/* j is an immediate of vpermilps: written out, as clang wants a constant even in an unrolled loop */
#define MG_PJ8(x, j) v16_perm(x, (j) * 0x55)
#define MG_AJ8(j)                                                                                                \
    a[j] = v16_add(v16_fma(MG_PJ8(e[1], j), v16_load(V + (4 + j) * 16), v16_mul(MG_PJ8(e[0], j), v16_load(V + j * 16))), \
                   v16_fma(MG_PJ8(e[3], j), v16_load(V + (12 + j) * 16), v16_mul(MG_PJ8(e[2], j), v16_load(V + (8 + j) * 16))))
    MG_AJ8(0);
    MG_AJ8(1);
    MG_AJ8(2);
    MG_AJ8(3);
#undef MG_AJ8
#undef MG_PJ8
    return v16_mul(v16_add(v16_add(a[0], a[1]), v16_add(a[2], a[3])), rl);
}

/* shift a 32-lane vector (4 ymm) up by s lanes (s = 1, 2, 4), zeros in */
MG_INLINE __m256 mg_shift8(__m256 prev, __m256 cur, int s)
{
    __m256 t = _mm256_permute2f128_ps(prev, cur, 0x21); /* prev.hi, cur.lo */
    if (s == 4) return t;
    if (s == 2) return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(cur), _mm256_castps_si256(t), 8));
    return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(cur), _mm256_castps_si256(t), 12));
}

/* the sampler on z[4] (ids 0..7, 8..15, 16..23, 24..31; lanes >= 27 ignored) */
MG_INLINE int mg_sample8x4(const __m256 *z, int python, float r, double u)
{
    if (python == MG_GREEDY) {
        MG_ALIGN float zb[32];
        for (int i = 0; i < 4; i++) _mm256_store_ps(zb + 8 * i, z[i]);
        return mg_argmax_s(zb);
    }
    const __m256 hv = _mm256_castsi256_ps(_mm256_setr_epi32(-1, -1, -1, 0, 0, 0, 0, 0)); /* ids 24..26 */
    const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    __m256 e[4];
    if (__builtin_expect(!(mg_slow8(all, z[0]) | mg_slow8(all, z[1]) | mg_slow8(all, z[2]) | mg_slow8(hv, z[3])), 1)) {
        for (int i = 0; i < 3; i++) e[i] = mg_exp2_8nc(z[i]);
        e[3] = _mm256_and_ps(hv, mg_exp2_8nc(z[3]));
    } else {
        v16 a = {z[0], z[1]}, b = {z[2], _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), z[3], hv)};
        v16 c = {z[2], _mm256_blendv_ps(_mm256_set1_ps(INFINITY), z[3], hv)};
        __m256 m = mg_hmax8x2(v16_max(a, b)), n = mg_hmin8x2(v16_min(a, c));
        __m256 fast = _mm256_and_ps(_mm256_cmp_ps(n, _mm256_set1_ps(MG_FAST_LO), _CMP_GE_OQ),
                                    _mm256_cmp_ps(m, _mm256_set1_ps(MG_FAST_HI), _CMP_LE_OQ));
        m = _mm256_blendv_ps(m, _mm256_setzero_ps(), fast);
        for (int i = 0; i < 3; i++) e[i] = mg_exp2_8(_mm256_sub_ps(z[i], m));
        e[3] = _mm256_and_ps(hv, mg_exp2_8(_mm256_sub_ps(z[3], m)));
    }
    __m256 total = mg_hsum8x2((v16){_mm256_add_ps(e[0], e[2]), _mm256_add_ps(e[1], e[3])});
    const __m256 zero = _mm256_setzero_ps();
    for (int s = 1; s < 8; s <<= 1) {
        __m256 s3 = mg_shift8(e[2], e[3], s), s2 = mg_shift8(e[1], e[2], s);
        __m256 s1 = mg_shift8(e[0], e[1], s), s0 = mg_shift8(zero, e[0], s);
        e[3] = _mm256_add_ps(e[3], s3);
        e[2] = _mm256_add_ps(e[2], s2);
        e[1] = _mm256_add_ps(e[1], s1);
        e[0] = _mm256_add_ps(e[0], s0);
    }
    e[3] = _mm256_add_ps(e[3], e[2]); /* s = 8 */
    e[2] = _mm256_add_ps(e[2], e[1]);
    e[1] = _mm256_add_ps(e[1], e[0]);
    e[3] = _mm256_add_ps(e[3], e[1]); /* s = 16 */
    e[2] = _mm256_add_ps(e[2], e[0]);
    __m256 thr = python ? _mm256_set1_ps((float)(u * (double)_mm256_cvtss_f32(total))) : _mm256_mul_ps(_mm256_set1_ps(r), total);
    uint32_t bits = 0;
    for (int i = 0; i < 4; i++) bits |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(thr, e[i], _CMP_LT_OQ)) << (8 * i);
    return (int)__builtin_ctz((bits & 0x3FFFFFFu) | (1u << 26));
}
#endif /* MG_AVX2 */

#if defined(MG_NEON)
/* 16 lanes as four float32x4_t: register h holds lanes 4h..4h+3 (one attention head) */
typedef struct { float32x4_t v[4]; } n16;
MG_INLINE n16 n16_load(const float *p) { n16 r = {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}}; return r; }
MG_INLINE void n16_store(float *p, n16 a) { for (int h = 0; h < 4; h++) vst1q_f32(p + 4 * h, a.v[h]); }
MG_INLINE float32x4_t mg_exp2_4nc(float32x4_t x) { return mg_exp2V_nc(x); }
MG_INLINE float32x4_t mg_exp2_4(float32x4_t x) { return mg_exp2V(x); }
/* nonzero if a lane of v under mask k is outside the fast range */
MG_INLINE uint32_t mg_slow4(uint32x4_t k, float32x4_t v)
{
    uint32x4_t bad = vorrq_u32(vcltq_f32(v, vdupq_n_f32(MG_FAST_LO)), vcgtq_f32(v, vdupq_n_f32(MG_FAST_HI)));
    return vmaxvq_u32(vandq_u32(k, bad));
}
/* tree16 of the 16 lanes of a (all lanes of the result) */
MG_INLINE float32x4_t mg_hsum4x4(n16 a)
{
    float32x4_t q = vpaddq_f32(vpaddq_f32(a.v[0], a.v[1]), vpaddq_f32(a.v[2], a.v[3]));
    q = vpaddq_f32(q, q);
    return vdupq_laneq_f32(vpaddq_f32(q, q), 0);
}
/* (x0+x1)+(x2+x3) in every lane */
MG_INLINE float32x4_t mg_gsum4(float32x4_t x)
{
    float32x4_t q = vpaddq_f32(x, x);
    return vdupq_laneq_f32(vpaddq_f32(q, q), 0);
}
MG_INLINE float32x4_t mg_rs4(float32x4_t a) { return vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(a)); }
MG_INLINE uint32x4_t mg_nibmask4(unsigned nib)
{
    const uint32_t bits[4] = {1, 2, 4, 8};
    return vtstq_u32(vdupq_n_u32(nib), vld1q_u32(bits));
}
MG_INLINE float32x4_t mg_lane4(float32x4_t v, int j)
{
    switch (j & 3) {
    case 0: return vdupq_laneq_f32(v, 0);
    case 1: return vdupq_laneq_f32(v, 1);
    case 2: return vdupq_laneq_f32(v, 2);
    default: return vdupq_laneq_f32(v, 3);
    }
}

/* Attention, single stream, compact layout (see mg_attention16): KT[b][d] register h
 * lane j = K[slot 4b+j][4h+d]; V natural [slot][16] */
MG_INLINE n16 mg_attention4x4(n16 qs, n16 k, n16 v, float *KT, float *V, int slot, unsigned valid)
{
    const int cb = slot >> 2;
    const uint32x4_t wm = mg_nibmask4(1u << (slot & 3));
    n16_store(V + slot * 16, v);
    n16 out;
    uint32x4_t vm[4];
    for (int b = 0; b < 4; b++) vm[b] = mg_nibmask4((valid >> (4 * b)) & 0xFu);
    float32x4_t s[4][4]; /* [b][h] */
    for (int b = 0; b < 4; b++) {
        float *kt = KT + b * 64;
        for (int h = 0; h < 4; h++) {
            float32x4_t kk[4];
            for (int d = 0; d < 4; d++) kk[d] = vld1q_f32(kt + 16 * d + 4 * h);
            if (b == cb) {
                for (int d = 0; d < 4; d++) {
                    kk[d] = vbslq_f32(wm, mg_lane4(k.v[h], d), kk[d]);
                    vst1q_f32(kt + 16 * d + 4 * h, kk[d]);
                }
            }
            float32x4_t a = vfmaq_f32(vmulq_f32(mg_lane4(qs.v[h], 0), kk[0]), mg_lane4(qs.v[h], 1), kk[1]);
            float32x4_t c = vfmaq_f32(vmulq_f32(mg_lane4(qs.v[h], 2), kk[2]), mg_lane4(qs.v[h], 3), kk[3]);
            s[b][h] = vaddq_f32(a, c);
        }
    }
    uint32_t slow = 0;
    for (int b = 0; b < 4; b++)
        for (int h = 0; h < 4; h++) slow |= mg_slow4(vm[b], s[b][h]);
    for (int h = 0; h < 4; h++) {
        float32x4_t e[4], o = vdupq_n_f32(0.0f);
        if (__builtin_expect(slow != 0, 0)) {
            float mx = -INFINITY, mn = INFINITY;
            for (int b = 0; b < 4; b++) {
                mx = fmaxf(mx, vmaxvq_f32(vbslq_f32(vm[b], s[b][h], vdupq_n_f32(-INFINITY))));
                mn = fminf(mn, vminvq_f32(vbslq_f32(vm[b], s[b][h], vdupq_n_f32(INFINITY))));
            }
            o = vdupq_n_f32(mg_offset_s(mx, mn));
            for (int b = 0; b < 4; b++)
                e[b] = vreinterpretq_f32_u32(vandq_u32(vm[b], vreinterpretq_u32_f32(mg_exp2_4(vsubq_f32(s[b][h], o)))));
        } else {
            for (int b = 0; b < 4; b++)
                e[b] = vreinterpretq_f32_u32(vandq_u32(vm[b], vreinterpretq_u32_f32(mg_exp2_4nc(s[b][h]))));
        }
        float32x4_t l = mg_gsum4(vaddq_f32(vaddq_f32(e[0], e[1]), vaddq_f32(e[2], e[3])));
        float32x4_t rl = vdivq_f32(vdupq_n_f32(1.0f), l);
        float32x4_t a[4];
        for (int j = 0; j < 4; j++) {
            float32x4_t p = vfmaq_f32(vmulq_f32(mg_lane4(e[0], j), vld1q_f32(V + j * 16 + 4 * h)),
                                      mg_lane4(e[1], j), vld1q_f32(V + (4 + j) * 16 + 4 * h));
            float32x4_t r = vfmaq_f32(vmulq_f32(mg_lane4(e[2], j), vld1q_f32(V + (8 + j) * 16 + 4 * h)),
                                      mg_lane4(e[3], j), vld1q_f32(V + (12 + j) * 16 + 4 * h));
            a[j] = vaddq_f32(p, r);
        }
        out.v[h] = vmulq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])), rl);
    }
    return out;
}

/* the sampler on z[8] (ids 4i..4i+3; lanes >= 27 ignored) */
MG_INLINE int mg_sample4x8(const float32x4_t *z, int python, float r, double u)
{
    if (python == MG_GREEDY) {
        MG_ALIGN float zb[32];
        for (int i = 0; i < 8; i++) vst1q_f32(zb + 4 * i, z[i]);
        return mg_argmax_s(zb);
    }
    const uint32_t h6[4] = {~0u, ~0u, ~0u, 0u};
    const uint32x4_t all = vdupq_n_u32(~0u), m6 = vld1q_u32(h6), none = vdupq_n_u32(0);
    float32x4_t e[8];
    uint32_t slow = 0;
    for (int i = 0; i < 8; i++) slow |= mg_slow4(i < 6 ? all : i == 6 ? m6 : none, z[i]);
    if (__builtin_expect(!slow, 1)) {
        for (int i = 0; i < 8; i++) e[i] = mg_exp2_4nc(z[i]);
    } else {
        float mx = -INFINITY, mn = INFINITY;
        for (int i = 0; i < 7; i++) {
            uint32x4_t k = i < 6 ? all : m6;
            mx = fmaxf(mx, vmaxvq_f32(vbslq_f32(k, z[i], vdupq_n_f32(-INFINITY))));
            mn = fminf(mn, vminvq_f32(vbslq_f32(k, z[i], vdupq_n_f32(INFINITY))));
        }
        float32x4_t o = vdupq_n_f32(mg_offset_s(mx, mn));
        for (int i = 0; i < 8; i++) e[i] = mg_exp2_4(vsubq_f32(z[i], o));
    }
    e[6] = vreinterpretq_f32_u32(vandq_u32(m6, vreinterpretq_u32_f32(e[6])));
    e[7] = vdupq_n_f32(0.0f);
    n16 t = {{vaddq_f32(e[0], e[4]), vaddq_f32(e[1], e[5]), vaddq_f32(e[2], e[6]), vaddq_f32(e[3], e[7])}};
    float total = vgetq_lane_f32(mg_hsum4x4(t), 0);
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (int s = 1; s < 4; s <<= 1) {
        float32x4_t sh[8];
        for (int i = 0; i < 8; i++) {
            float32x4_t prev = i ? e[i - 1] : zero;
            sh[i] = s == 1 ? vextq_f32(prev, e[i], 3) : vextq_f32(prev, e[i], 2);
        }
        for (int i = 0; i < 8; i++) e[i] = vaddq_f32(e[i], sh[i]);
    }
    for (int i = 7; i >= 1; i--) e[i] = vaddq_f32(e[i], e[i - 1]); /* s = 4 */
    for (int i = 7; i >= 2; i--) e[i] = vaddq_f32(e[i], e[i - 2]); /* s = 8 */
    for (int i = 7; i >= 4; i--) e[i] = vaddq_f32(e[i], e[i - 4]); /* s = 16 */
    float thr = python ? (float)(u * (double)total) : r * total;
    const uint32_t bitv[4] = {1, 2, 4, 8};
    const uint32x4_t bv = vld1q_u32(bitv);
    uint32_t bits = 0;
    for (int i = 0; i < 7; i++) bits |= vaddvq_u32(vandq_u32(vcltq_f32(vdupq_n_f32(thr), e[i]), bv)) << (4 * i);
    return (int)__builtin_ctz((bits & 0x3FFFFFFu) | (1u << 26));
}
#endif /* MG_NEON */

#if defined(MG_AVX2)
/* in-register 8 x 8 transpose of 32-bit elements: r[s] element i -> r[i] element s */
MG_INLINE void mg_transpose8(__m256 *r)
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
        r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
}

/* x[i] lane s = wte[tok_s][i] + wpe[pos_s][i]: 16 row loads and adds, then two
 * transposes in registers (cheaper than 32 gathers, and AVX2 has no fast gather) */
MG_INLINE void mg_embed8(const float *wte, const float *wpe, VI tok, VI pos, VF *x)
{
    int32_t t[8], p[8];
    vi_store(t, tok);
    vi_store(p, pos);
    for (int s = 0; s < 8; s++) {
        x[s] = _mm256_add_ps(_mm256_load_ps(wte + t[s] * 16), _mm256_load_ps(wpe + p[s] * 16));
        x[8 + s] = _mm256_add_ps(_mm256_load_ps(wte + t[s] * 16 + 8), _mm256_load_ps(wpe + p[s] * 16 + 8));
    }
    mg_transpose8(x);
    mg_transpose8(x + 8);
}

/* the same for Q4.12: xp[m] lane s = the int16 pair m of sat16(wte[tok_s] + wpe[pos_s]) */
MG_INLINE void mg_embed8q(const int16_t *wte, const int16_t *wpe, VI tok, VI pos, VI *xp)
{
    int32_t t[8], p[8];
    vi_store(t, tok);
    vi_store(p, pos);
    __m256 r[8];
    for (int s = 0; s < 8; s++)
        r[s] = _mm256_castsi256_ps(_mm256_adds_epi16(_mm256_load_si256((const __m256i *)(wte + t[s] * 16)),
                                                     _mm256_load_si256((const __m256i *)(wpe + p[s] * 16))));
    mg_transpose8(r);
    for (int m = 0; m < 8; m++) xp[m] = _mm256_castps_si256(r[m]);
}
#endif

#if defined(MG_SOA)
/* the lanes whose values (max mx, min mn) all lie in the fast range: offset 0 */
MG_INLINE VM mg_fast_rangeV(VF mx, VF mn) { return vm_and(vf_ge(mn, vf_set1(MG_FAST_LO)), vf_le(mx, vf_set1(MG_FAST_HI))); }

/* the canonical offset, lane-wise */
MG_INLINE VF mg_offsetV(VF mx, VF mn) { return vf_sel(mg_fast_rangeV(mx, mn), vf_zero(), mx); }

MG_INLINE VF mg_tree16V(const VF *v)
{
    return vf_add(vf_add(vf_add(vf_add(v[0], v[1]), vf_add(v[2], v[3])), vf_add(vf_add(v[4], v[5]), vf_add(v[6], v[7]))),
                  vf_add(vf_add(vf_add(v[8], v[9]), vf_add(v[10], v[11])), vf_add(vf_add(v[12], v[13]), vf_add(v[14], v[15]))));
}

MG_INLINE VF mg_rsV(VF a) { return vf_div(vf_set1(1.0f), vf_sqrt(a)); }

/* the canonical matvec rows for VW streams: w is one row, broadcast weight by weight */
MG_INLINE VF mg_mv16V(const float *w, const VF *x)
{
    VF c0 = vf_mul(x[0], vf_bc(w + 0)), c1 = vf_mul(x[1], vf_bc(w + 1));
    VF c2 = vf_mul(x[2], vf_bc(w + 2)), c3 = vf_mul(x[3], vf_bc(w + 3));
    MG_UNROLL
    for (int j = 4; j < 16; j += 4) {
        c0 = vf_fma(x[j], vf_bc(w + j), c0);
        c1 = vf_fma(x[j + 1], vf_bc(w + j + 1), c1);
        c2 = vf_fma(x[j + 2], vf_bc(w + j + 2), c2);
        c3 = vf_fma(x[j + 3], vf_bc(w + j + 3), c3);
    }
    return vf_add(vf_add(c0, c1), vf_add(c2, c3));
}

MG_INLINE VF mg_mv16bV(const float *w, const VF *x)
{
    VF c[8];
    MG_UNROLL
    for (int k = 0; k < 8; k++) c[k] = vf_fma(x[k + 8], vf_bc(w + k + 8), vf_mul(x[k], vf_bc(w + k)));
    return vf_add(vf_add(vf_add(c[0], c[1]), vf_add(c[2], c[3])), vf_add(vf_add(c[4], c[5]), vf_add(c[6], c[7])));
}

/* mv64 of a few consecutive rows (w: the first, rows 64 apart) for nx (1 or 2) batches
 * at once, x[i] the batch's inputs in memory: each x vector is loaded once per chain for
 * all the rows, and each broadcast weight serves all the batches, so there are fewer
 * loads than multiply-adds (two loads per multiply-add cap Zen 5 at one zmm FMA per
 * cycle). Per row the canonical 16 chains of 4 and tree16, built pair by pair so few
 * partial sums are live. out[i * rows + r]. */
#if defined(MG_AVX2)
#define MG_MV64_ROWS(nx) (2 / (nx)) /* 16 registers */
#else
#define MG_MV64_ROWS(nx) (4 / (nx))
#endif
#define MG_MV64_MAX 4
/* a loaded value kept in a register for several multiply-adds: gcc would rather fold
 * the load into each of them (a load apiece) */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MG_IN_REG(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define MG_IN_REG(v) __asm__("" : "+w"(v))
#else
#define MG_IN_REG(v) (void)0
#endif
#if defined(__GNUC__)
#define MG_OPAQUE(p) __asm__("" : "+r"(p)) /* the compiler forgets where p points */
#else
#define MG_OPAQUE(p) (void)0
#endif
/* (the loops run to the constant bounds, nx and the row count tested inside, so that
 * both compilers unroll them fully once nx is known) */
MG_INLINE void mg_mv64chV(const float *w, const VF *const *x, int nx, int k, VF *c)
{
    const int R = MG_MV64_ROWS(nx);
    VF xv[2][4];
    MG_UNROLL
    for (int i = 0; i < 2; i++)
        MG_UNROLL
        for (int j = 0; j < 4; j++)
            if (i < nx) {
                xv[i][j] = x[i][k + 16 * j];
                MG_IN_REG(xv[i][j]);
            }
    MG_UNROLL
    for (int r = 0; r < MG_MV64_MAX; r++) {
        if (r >= R) break;
        const float *wr = w + r * 64 + k;
        VF w0 = vf_bc(wr), w1 = vf_bc(wr + 16), w2 = vf_bc(wr + 32), w3 = vf_bc(wr + 48);
        if (nx > 1) {
            MG_IN_REG(w0);
            MG_IN_REG(w1);
            MG_IN_REG(w2);
            MG_IN_REG(w3);
        }
        MG_UNROLL
        for (int i = 0; i < 2; i++)
            if (i < nx) c[i * R + r] = vf_fma(xv[i][3], w3, vf_fma(xv[i][2], w2, vf_fma(xv[i][1], w1, vf_mul(xv[i][0], w0))));
    }
}
MG_INLINE void mg_mv64rowsV(const float *w, const VF *const *x, int nx, VF *out)
{
    const int n = MG_MV64_ROWS(nx) * nx;
    VF a[MG_MV64_MAX], b[MG_MV64_MAX], t4[MG_MV64_MAX], t8[MG_MV64_MAX];
#if defined(__clang__)
    MG_UNROLL /* clang keeps the whole tree in registers */
#else
    MG_UNROLL
    for (int r = 0; r < MG_MV64_MAX; r++) t4[r] = t8[r] = out[r] = vf_zero(); /* all set before use: for -Wall */
    MG_UNROLL4 /* by 4 chain pairs, not fully: gcc spills on the whole tree */
#endif
    for (int k = 0; k < 16; k += 2) {
        mg_mv64chV(w, x, nx, k, a);
        mg_mv64chV(w, x, nx, k + 1, b);
        MG_UNROLL
        for (int r = 0; r < MG_MV64_MAX; r++) {
            if (r >= n) break;
            const VF t2 = vf_add(a[r], b[r]);
            if (!(k & 2)) {
                t4[r] = t2;
                continue;
            }
            t4[r] = vf_add(t4[r], t2);
            if (!(k & 4)) {
                t8[r] = t4[r];
                continue;
            }
            t8[r] = vf_add(t8[r], t4[r]);
            out[r] = k & 8 ? vf_add(out[r], t8[r]) : t8[r];
        }
    }
}

/* The KV ring of one batch: K[slot][16], V[slot][16], one VF per element. */
typedef struct {
    MG_ALIGN VF K[16][16];
    MG_ALIGN VF V[16][16];
} mg_ringV;

/* Attention for VW streams (canonical, see mg_attention_s): qs[16] scaled queries; the
 * new key and value already in slot step & 15 of the ring (written there by the
 * caller's matvecs); pos: each stream's position; maxpos: their maximum. The scores and
 * exp2s run over the slots some stream can see (ages 0..maxpos) in a loop without
 * branches; unseen slots weigh exact zeros, as in the reference, in the fixed sum trees
 * over all 16 slots, whose first stage (slot pairs t, t + 4) is skipped where both slots
 * are unseen: it would only add zeros. checked = 0: the caller has proved every score
 * inside the fast range (offset 0), so the max/min and their test are skipped. */
/* one head's score: q . k in the canonical order */
MG_INLINE VF mg_scoreV(const VF *q, const VF *k) { return vf_add(vf_fma(q[1], k[1], vf_mul(q[0], k[0])), vf_fma(q[3], k[3], vf_mul(q[2], k[2]))); }
/* one head's slot pair (t1, t1 + 4) of the canonical tree: l = e1 + e2, a[d] = e1 v1[d] +
 * e2 v2[d]; a pair no stream has seen is zeros, an unseen slot of a seen pair a plain load
 * from the zero vector zv (the address selected by its seen bit; a masked load measured
 * 1-2 cycles/token more on AVX-512) */
MG_INLINE void mg_slot_pairV(const mg_ringV *ring, VF (*e)[4], const VF *zv, unsigned seen, int h, int t1, VF *l,
                             VF *a)
{
    const int t2 = t1 + 4;
    if (!(((seen >> t1) | (seen >> t2)) & 1u)) {
        *l = vf_zero();
        MG_UNROLL
        for (int d = 0; d < 4; d++) a[d] = vf_zero();
        return;
    }
    const VF e1 = *((seen >> t1) & 1u ? &e[t1][h] : zv), e2 = *((seen >> t2) & 1u ? &e[t2][h] : zv);
    *l = vf_add(e1, e2);
    MG_UNROLL
    for (int d = 0; d < 4; d++) a[d] = vf_fma(e2, ring->V[t2][4 * h + d], vf_mul(e1, ring->V[t1][4 * h + d]));
}
#if defined(MG_AVX512)
/* AVX-512 (32 registers): the 4 heads side by side in one age loop (one loop exit to
 * mispredict, not four, and four independent chains per age); the live lanes' max/min
 * in one masked operation each; e[slot][head] in memory, an unseen slot read as a zero
 * vector (no zeroing stores); the heads' sum trees after the loop. Attention alone,
 * cycles/token: gcc 29.9 -> 24.8, clang 32.0 -> 28.2 (checked: 31.1 -> 28.2, 32.1 ->
 * 30.9). The seen bits stay in a register: a mask array beside the 4 KB e[] cost
 * c-q412 (gcc) 16 cycles/token, a 4K alias with e's stores. */
MG_INLINE void mg_attentionV(mg_ringV *ring, const VF *qs, VI pos, int maxpos, int step, int checked, VF *out)
{
    MG_ALIGN VF e[16][4], zv[1];
    zv[0] = vf_zero();
    VF mx[4], mn[4];
    MG_UNROLL
    for (int h = 0; h < 4; h++) mx[h] = vf_set1(-INFINITY), mn[h] = vf_set1(INFINITY);
    unsigned seen = 0; /* bit t: slot t seen by some stream */
    for (int a = 0; a <= maxpos; a++) {
        const int t = (step - a) & 15;
        const VM vm = vi_ge(pos, vi_set1(a));
        seen |= 1u << t;
        MG_UNROLL
        for (int h = 0; h < 4; h++) {
            const VF sc = mg_scoreV(qs + 4 * h, ring->K[t] + 4 * h);
            if (checked) {
                mx[h] = _mm512_mask_max_ps(mx[h], vm, mx[h], sc);
                mn[h] = _mm512_mask_min_ps(mn[h], vm, mn[h], sc);
            }
            e[t][h] = mg_exp2V_live(vm, sc);
        }
    }
    if (checked)
        for (int h = 0; h < 4; h++) {
            if (MG_LIKELY(vm_all(mg_fast_rangeV(mx[h], mn[h])))) continue;
            const VF o = mg_offsetV(mx[h], mn[h]);
            for (int a = 0; a <= maxpos; a++) {
                const int t = (step - a) & 15;
                e[t][h] = vf_maskz(vi_ge(pos, vi_set1(a)), mg_exp2V(vf_sub(mg_scoreV(qs + 4 * h, ring->K[t] + 4 * h), o)));
            }
        }
    for (int h = 0; h < 4; h++) {
        /* the canonical trees, j = 0, 1 then 2, 3 summed pair by pair: fewer partial sums live */
        VF l2[2], A2[2][4];
        MG_UNROLL
        for (int jp = 0; jp < 2; jp++) {
            VF l[2], A[2][4];
            MG_UNROLL
            for (int jj = 0; jj < 2; jj++) {
                const int j = 2 * jp + jj;
                VF lp[2], ap[2][4];
                MG_UNROLL
                for (int half = 0; half < 2; half++) mg_slot_pairV(ring, e, zv, seen, h, 8 * half + j, &lp[half], ap[half]);
                l[jj] = vf_add(lp[0], lp[1]);
                MG_UNROLL
                for (int d = 0; d < 4; d++) A[jj][d] = vf_add(ap[0][d], ap[1][d]);
            }
            l2[jp] = vf_add(l[0], l[1]);
            MG_UNROLL
            for (int d = 0; d < 4; d++) A2[jp][d] = vf_add(A[0][d], A[1][d]);
        }
        const VF rl = vf_div(vf_set1(1.0f), vf_add(l2[0], l2[1]));
        MG_UNROLL
        for (int d = 0; d < 4; d++) out[4 * h + d] = vf_mul(vf_add(A2[0][d], A2[1][d]), rl);
    }
}
#else /* the other paths: one head at a time */
/* AVX2 (MG_ATT_SPEC): the range test on all lanes' scores, dead lanes too, without the
 * selects (2 fewer operations per head and age); the slow path, rarely taken (also when
 * only a dead lane is out of range), then takes the live lanes' exact max and min. The
 * test passing on all lanes implies it on the live ones, so the offsets are the same.
 * MG_AGE_LOOP: clang unrolls the age loop by 8 and spills; kept rolled there. */
#if defined(MG_AVX2)
#define MG_ATT_SPEC 1
#if defined(__clang__)
#define MG_AGE_LOOP MG_ROLL
#endif
#else
#define MG_ATT_SPEC 0
#endif
#ifndef MG_AGE_LOOP
#define MG_AGE_LOOP
#endif
MG_INLINE void mg_attentionV(mg_ringV *ring, const VF *qs, VI pos, int maxpos, int step, int checked, VF *out)
{
    VM vm[16]; /* by age: the streams that see it */
    unsigned pairs = 0; /* bit 4 * half + j: slot pair (8 half + j, 8 half + j + 4) seen */
    for (int a = 0; a <= maxpos; a++) {
        const int t = (step - a) & 15;
        vm[a] = vi_ge(pos, vi_set1(a));
        pairs |= 1u << ((t >> 3) * 4 + (t & 3));
    }
    const VF ninf = vf_set1(-INFINITY), pinf = vf_set1(INFINITY), zero = vf_zero();
    for (int h = 0; h < 4; h++) {
        const VF *q = qs + 4 * h;
        VF e[16], mx = ninf, mn = pinf;
        MG_UNROLL
        for (int t = 0; t < 16; t++) e[t] = zero;
        /* the offset is 0 in nearly every lane and head: that branch is taken
         * speculatively, so the exp2s need not wait for the max/min */
        MG_AGE_LOOP
        for (int a = 0; a <= maxpos; a++) {
            const int t = (step - a) & 15;
            const VF sc = mg_scoreV(q, ring->K[t] + 4 * h);
            if (checked) {
#if MG_ATT_SPEC
                mx = vf_max(mx, sc);
                mn = vf_min(mn, sc);
#else
                mx = vf_max(mx, vf_sel(vm[a], sc, ninf));
                mn = vf_min(mn, vf_sel(vm[a], sc, pinf));
#endif
            }
            e[t] = vf_maskz(vm[a], mg_exp2V_nc(sc));
        }
        if (checked && !vm_all(mg_fast_rangeV(mx, mn))) {
#if MG_ATT_SPEC
            mx = ninf, mn = pinf; /* the live lanes' exact max and min */
            for (int a = 0; a <= maxpos; a++) {
                const VF sc = mg_scoreV(q, ring->K[(step - a) & 15] + 4 * h);
                mx = vf_max(mx, vf_sel(vm[a], sc, ninf));
                mn = vf_min(mn, vf_sel(vm[a], sc, pinf));
            }
#endif
            const VF o = mg_offsetV(mx, mn);
            for (int a = 0; a <= maxpos; a++) {
                const int t = (step - a) & 15;
                e[t] = vf_maskz(vm[a], mg_exp2V(vf_sub(mg_scoreV(q, ring->K[t] + 4 * h), o)));
            }
        }
        VF l[4], A[4][4];
        MG_UNROLL
        for (int j = 0; j < 4; j++) {
            VF lp[2], ap[2][4];
            MG_UNROLL
            for (int half = 0; half < 2; half++) {
                const int t1 = 8 * half + j, t2 = t1 + 4;
                const int seen = (pairs >> (4 * half + j)) & 1u;
                lp[half] = seen ? vf_add(e[t1], e[t2]) : zero;
                MG_UNROLL
                for (int d = 0; d < 4; d++) {
                    const int c = 4 * h + d;
                    ap[half][d] = seen ? vf_fma(e[t2], ring->V[t2][c], vf_mul(e[t1], ring->V[t1][c])) : zero;
                }
            }
            l[j] = vf_add(lp[0], lp[1]);
            MG_UNROLL
            for (int d = 0; d < 4; d++) A[j][d] = vf_add(ap[0][d], ap[1][d]);
        }
        const VF rl = vf_div(vf_set1(1.0f), vf_add(vf_add(l[0], l[1]), vf_add(l[2], l[3])));
        MG_UNROLL
        for (int d = 0; d < 4; d++) out[4 * h + d] = vf_mul(vf_add(vf_add(A[0][d], A[1][d]), vf_add(A[2][d], A[3][d])), rl);
    }
}
#endif /* MG_AVX512 */

/* the logits' max and min, lane-wise: exact in any order, so four chains, not one */
MG_INLINE void mg_maxminV(const VF *z, VF *m, VF *n)
{
    VF mx[4], mn[4];
    MG_UNROLL
    for (int k = 0; k < 4; k++) mx[k] = mn[k] = z[k];
    MG_UNROLL
    for (int v = 4; v < MG_VOCAB; v++) {
        mx[v & 3] = vf_max(mx[v & 3], z[v]);
        mn[v & 3] = vf_min(mn[v & 3], z[v]);
    }
    *m = vf_max(vf_max(mx[0], mx[1]), vf_max(mx[2], mx[3]));
    *n = vf_min(vf_min(mn[0], mn[1]), vf_min(mn[2], mn[3]));
}

/* The sampler for VW streams (canonical, see mg_sample_s): z[27] = logits * log2(e)/T,
 * r: each stream's draw in [0, 1); returns the tokens. The offset-0 case (nearly every
 * draw) is taken speculatively, so the exp2s need not wait for the max/min. */
MG_INLINE VI mg_sampleV(const VF *z, VF r)
{
    VF c[MG_VOCAB], t[16], m, n;
    mg_maxminV(z, &m, &n);
    /* o = 0 in every lane (the common case): z - 0 is z and no z is below the clamp */
    if (MG_LIKELY(vm_all(mg_fast_rangeV(m, n)))) {
        MG_UNROLL
        for (int v = 0; v < MG_VOCAB; v++) c[v] = mg_exp2V_nc(z[v]);
    } else {
        const VF o = mg_offsetV(m, n);
        MG_UNROLL
        for (int v = 0; v < MG_VOCAB; v++) c[v] = mg_exp2V(vf_sub(z[v], o));
    }
    MG_UNROLL
    for (int i = 0; i < 16; i++) t[i] = i + 16 < MG_VOCAB ? vf_add(c[i], c[i + 16]) : c[i];
    VF thr = vf_mul(r, mg_tree16V(t));
    MG_UNROLL
    for (int s = 1; s < 32; s <<= 1)
        MG_UNROLL
        for (int i = MG_VOCAB - 2; i >= s; i--) c[i] = vf_add(c[i], c[i - s]);
    /* the first v < 26 with thr < c[v], else 26: the least of the v (26 where thr >= c[v]),
     * a tree rather than a chain of 26 selects */
    VI tk[16];
    MG_UNROLL
    for (int v = 0; v < 16; v++) {
        const VI none = vi_set1(MG_VOCAB - 1);
        tk[v] = vi_sel(vf_lt(thr, c[v]), vi_set1(v), none);
        if (v + 16 < MG_VOCAB - 1) tk[v] = vi_min(tk[v], vi_sel(vf_lt(thr, c[v + 16]), vi_set1(v + 16), none));
    }
    MG_UNROLL
    for (int w = 1; w < 16; w <<= 1)
        MG_UNROLL
        for (int v = 0; v < 16; v += 2 * w) tk[v] = vi_min(tk[v], tk[v + w]);
    return tk[0];
}

/* greedy for VW streams: per lane, the lowest index of the largest logit */
MG_INLINE VI mg_argmaxV(const VF *z)
{
    VF best = z[0];
    VI tok = vi_set1(0);
    for (int v = 1; v < MG_VOCAB; v++) {
        VM up = vf_lt(best, z[v]);
        best = vf_sel(up, z[v], best);
        tok = vi_sel(up, vi_set1(v), tok);
    }
    return tok;
}

#if defined(MG_AVX2) || defined(MG_AVX512)
/* e = exp2(z[v]) (offset 0) into memory, then thr = r * tree16(e_i + e_{16+i}) read back:
 * the exp2s keep only their constants and temporaries in registers */
MG_INLINE VF mg_sample_scan_thr(const VF *z, VF r, VF *e)
{
    MG_OPAQUE(z); /* reload z: not its 27 registers kept from the max/min, spilled */
#if defined(__clang__) != defined(MG_AVX512) /* clang on AVX2, gcc on AVX-512 */
    /* gcc, AVX-512, after the exp2 lost its f4 multiply (Zen 5, offline 128 x 5000, one core,
     * three one-process A/Bs): c-fp32 168.0 / 164.9 / 169.9 -> 163.8 / 163.9 / 167.0 cycles/token,
     * c-q412 within noise */
    MG_UNROLL
#else
    /* the smaller hot loop measured faster: gcc on AVX2 by 7-10 cycles/token on c-fp32 (clang
     * there: 2-6 slower); AVX-512 (Zen 5, offline 256 x1) clang 121 -> 118 (c-q412), 178 -> 173 (c-fp32) */
    MG_ROLL
#endif
    for (int v = 0; v < MG_VOCAB; v++) e[v] = mg_exp2V_nc(z[v]);
    MG_OPAQUE(e);
    VF t[16];
    MG_UNROLL
    for (int i = 0; i < 16; i++) t[i] = i + 16 < MG_VOCAB ? vf_add(e[i], e[i + 16]) : e[i];
    return vf_mul(r, mg_tree16V(t));
}

/* every lane's z[0..26] inside [MG_FAST_LO, MG_FAST_HI] (mg_fast_rangeV of their max and min),
 * on integer operations (which any vector pipe runs; the float max, min and compare share two
 * with the adds): as signed integers the bits of z <= 64 order as the floats do, and z >= -126
 * is, as unsigned, bits(z) <= bits(-126) (the positives lie below the negatives, which order by
 * magnitude); maxima started at the bounds stay there iff every z passes */
MG_INLINE int mg_all_fast(const VF *z)
{
    const VI hi = vf_as_vi(vf_set1(MG_FAST_HI)), lo = vf_as_vi(vf_set1(MG_FAST_LO));
    VI s[2] = {hi, hi}, u[2] = {lo, lo};
    MG_UNROLL
    for (int v = 0; v < MG_VOCAB; v++) {
        s[v & 1] = vi_max(s[v & 1], vf_as_vi(z[v]));
        u[v & 1] = vi_maxu(u[v & 1], vf_as_vi(z[v]));
    }
    return vm_all(vm_and(vi_eq(vi_max(s[0], s[1]), hi), vi_eq(vi_maxu(u[0], u[1]), lo)));
}

/* a lane off offset 0 (rare): the generic sampler, out of line (off the hot loop's code) */
__attribute__((noinline, cold, unused)) static VI mg_sample_scan_slow(const VF *z, VF r) { return mg_sampleV(z, r); }

/* The sampler for VW streams (AVX2 and AVX-512), fast case (offset 0) without spills: exp2s and the total
 * first (e[] in memory), then the Hillis-Steele scan index by index: c[i] after stride s
 * is p_s[i] = p_{s/2}[i] + p_{s/2}[i - s], so strides 1, 2 run in rotating registers,
 * strides 4 and 8 read p4 / p8 back from memory; each final c[v] is compared at once.
 * Same sums, same order as mg_sampleV. The other lanes' offsets: mg_sampleV. */
MG_INLINE VI mg_sample_scan(const VF *z, VF r)
{
    if (MG_UNLIKELY(!mg_all_fast(z))) return mg_sample_scan_slow(z, r);
    VF e[MG_VOCAB], p4[18], p8[10];
    const VF thr = mg_sample_scan_thr(z, r, e);
    const VF *ep = e;
    MG_OPAQUE(ep); /* read e back, not kept in registers since the exp2s */
    VF e1 = ep[0], p1[2], p2[4];
    VI best[2] = {vi_zero(), vi_zero()};
    /* the candidates i - 26 read from memory (a broadcast load): from constants gcc builds
     * each in a general register and broadcasts that, a vector-pipe op each (26 a call) */
    _Static_assert(MG_VOCAB == 27, "cand[] lists i - 26");
    static const int32_t cand[MG_VOCAB - 1] = {-26, -25, -24, -23, -22, -21, -20, -19, -18, -17, -16, -15, -14,
                                               -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1};
    const int32_t *cp = cand;
    MG_OPAQUE(cp);
    MG_UNROLL
    for (int i = 0; i < MG_VOCAB - 1; i++) {
        VF c = ep[i];
        if (i >= 1) c = vf_add(c, e1);
        e1 = ep[i];
        const VF c1 = p1[i & 1], c2 = p2[i & 3]; /* p1[i - 2], p2[i - 4] */
        p1[i & 1] = c;
        if (i >= 2) c = vf_add(c, c1);
        p2[i & 3] = c;
        if (i >= 4) c = vf_add(c, c2);
        if (i < 18) p4[i] = c;
        if (i >= 8) c = vf_add(c, p4[i - 8]);
        if (i >= 16) c = vf_add(c, p8[i - 16]);
        if (i < 10) p8[i] = c;
        /* the first v with thr < c[v]: the least of v - 26 over those lanes' hits, else 0
         * (AVX-512: one masked min). thr and c are >= +0 (r >= 0, exp2 > 0), so their bits
         * compare as integers (an integer compare: off the pipes of the scan's adds) */
        best[i & 1] = vi_minm(best[i & 1], vi_gt(vf_as_vi(c), vf_as_vi(thr)), vi_set1(cp[i]));
    }
    return vi_add(vi_min(best[0], best[1]), vi_set1(MG_VOCAB - 1));
}
#define MG_SAMPLE_FAST mg_sample_scan
#else
#define MG_SAMPLE_FAST mg_sampleV
#endif

/* the next tokens of VW streams: greedy, or the sampler on draws r */
MG_INLINE VI mg_nextV(const VF *z, VF r, int greedy) { return greedy ? mg_argmaxV(z) : MG_SAMPLE_FAST(z, r); }

MG_INLINE VF mg_r24V(VI x) { return vf_mul(vi_to_f(vi_srli(x, 8)), vf_set1(1.0f / 16777216.0f)); }

MG_INLINE VI mg_xorshiftV(VI x)
{
    x = vi_xor(x, vi_slli(x, 13));
    x = vi_xor(x, vi_srli(x, 17));
    return vi_xor(x, vi_slli(x, 5));
}
#endif /* MG_SOA */

/* ------------------------------------------------------------------- timer */

/* a cheap per-token timestamp for the latency loop: the TSC (rdtscp waits for the
 * token's work to finish), the Arm generic timer, else CLOCK_MONOTONIC in ns */
MG_INLINE uint64_t mg_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#if defined(__x86_64__) || defined(__i386__)
#define MG_TIMER_SOURCE "rdtsc"
MG_INLINE uint64_t mg_ticks(void)
{
    unsigned aux;
    return __rdtscp(&aux);
}
#elif defined(__aarch64__)
#define MG_TIMER_SOURCE "cntvct"
MG_INLINE uint64_t mg_ticks(void)
{
    uint64_t v;
    __asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v) : : "memory");
    return v;
}
#else
#define MG_TIMER_SOURCE "clock_gettime"
MG_INLINE uint64_t mg_ticks(void) { return mg_monotonic_ns(); }
#endif

/* out[0] ticks per ns (against CLOCK_MONOTONIC over ~20 ms), out[1] the cost of one
 * stamp in ticks (the least of 1000 back-to-back pairs), out[2] the resolution in ns */
static void mg_timer_calibrate(double *out)
{
    uint64_t t0 = mg_monotonic_ns(), k0 = mg_ticks(), t1, k1;
    do {
        k1 = mg_ticks();
        t1 = mg_monotonic_ns();
    } while (t1 - t0 < 20000000u);
    double per_ns = (double)(k1 - k0) / (double)(t1 - t0);
    uint64_t least = UINT64_MAX;
    for (int i = 0; i < 1000; i++) {
        uint64_t a = mg_ticks(), b = mg_ticks();
        least = b - a < least ? b - a : least;
    }
    struct timespec res = {0, 1};
    clock_getres(CLOCK_MONOTONIC, &res);
    double res_ns = 1.0 / per_ns;
    if (!strcmp(MG_TIMER_SOURCE, "clock_gettime")) { /* the ticks are the ns */
        per_ns = 1.0;
        res_ns = (double)res.tv_sec * 1e9 + (double)res.tv_nsec;
    }
    out[0] = per_ns;
    out[1] = (double)least;
    out[2] = res_ns;
}

/* ---------------------------------------------------------------- threading */

typedef struct {
    void *(*fn)(void *);
    void *arg;
} mg_job;

/* run fn(args[i]) for i < n on n threads (the calling thread runs the first);
 * returns 0 or MG_ERR_THREAD */
static int mg_run_threads(void *(*fn)(void *), void *args, size_t arg_size, int n)
{
    if (n <= 1) {
        fn(args);
        return 0;
    }
    pthread_t tid[64];
    int started = 0, err = 0;
    for (int i = 1; i < n && i < 64; i++) {
        if (pthread_create(&tid[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0) {
            err = MG_ERR_THREAD;
            break;
        }
        started = i;
    }
    if (!err) fn(args);
    for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
    return err;
}


#endif /* MG_COMMON_H */
