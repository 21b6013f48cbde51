// microGPT on NVIDIA GPUs: four ways to run the same forward pass and xorshift32 sampler.
//
//   variant 0  naive       one kernel launch per operation, the sampled token goes to
//                          the host and the next (token, position) comes back every step
//   variant 1  graph       the same per-token kernels captured once in a CUDA graph,
//                          replayed once per token; the loop state stays on the device
//   variant 2  persistent  one launch of ONE warp runs the whole timed loop: per-lane
//                          weights in registers, KV cache and vector exchange in shared
//                          memory, warp shuffles and votes, a parallel prefix-sum sampler
//   variant 3  offline     the persistent warp's code, one warp per independent stream,
//                          enough blocks to fill every SM; stream i is seeded with
//                          fmix32(base + 0x9E3779B9 * i) (samplers.stream_seed)
//
// Variants 2 and 3 share one __device__ token step, so an offline stream reproduces a
// persistent run with the same seed bit for bit. Built with -fmad=false: every fused
// multiply-add is written out (fmaf), none is left to the compiler's choice. Accuracy:
// fp32 throughout, expf (not __expf); rsqrt/rcp are MUFU.RSQ/RCP on normal arguments
// (2 ulp / 1 ulp); logits stay within ~1e-6 of the float64 reference.
//
// The warp step's latency (H100 SXM, 1980 MHz, TALOS weights: about 1420 cycles a token)
// comes from its chain of dependent stages; -DMG_PROFILE adds clock64() stamps between
// the stages and leaves per-stage cycle totals in g_prof (read with cudaMemcpyFromSymbol).
//
// C API (extern "C"): every function returns MG_OK (0) or an error code; mg_last_error()
// gives the message of the calling thread's last failure.

#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MG_OK 0
#define MG_EINVAL 1
#define MG_ENOMEM 2
#define MG_ECUDA 3
#define MG_ENODEV 4

#include "mg_model.h"

#define VOCAB MG_VOCAB
#define BOS MG_BOS
#define EMBD MG_E
#define HID MG_HID
#define CTX MG_CTX
#define NPARAMS MG_NPARAM
#define FULL 0xffffffffu

#define LANE_CHUNKS 28      // float4 chunks of weights each lane keeps in registers
#define RING 65536          // graph variant: device ring of sampled tokens
#define MAX_TOKENS (1LL << 40)

static __thread char g_err[1024];

static int fail(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

#define CK(call)                                                                          \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess)                                                            \
            return fail(e_ == cudaErrorMemoryAllocation ? MG_ENOMEM : MG_ECUDA,           \
                        "%s failed: %s (%s)", #call, cudaGetErrorString(e_),              \
                        cudaGetErrorName(e_));                                            \
    } while (0)

// ===================================================================== shared helpers

// xorshift32 and stream_seed: mg_xorshift32 and mg_stream_seed of mg_model.h

// ====================================================== variants 2 and 3: the warp step

// What one lane keeps in registers (lo = lane & 15, half = lane >> 4):
//   wqk  0.5 * wq row lo (half 0) or wk row lo (half 1)    16
//   wv   wv row lo, columns 8*half .. 8*half+7               8
//   wo   wo row lo, columns 8*half .. 8*half+7               8
//   w1a  fc1 row lane, w1b fc1 row lane+32                 16+16
//   w2   fc2 row lo, columns 32*half .. 32*half+31          32
//   wl   lm_head row lane (zeros for lanes 27..31)           16
struct LaneWeights {
    float wqk[16], wv[8], wo[8], w1a[16], w1b[16], w2[32], wl[16];
};

// Per-warp shared memory: the KV cache and the exchange buffers between the stages.
// K rows are padded to 20 floats so that the 16-byte loads of 8 lanes reading 8 different
// rows hit 8 different bank groups. Partial sums are exchanged as [half][row] pairs and
// added by the reader: one store/load round trip instead of a shuffle plus a gather.
struct __align__(16) WarpSmem {
    float K[CTX][20];
    float V[CTX][16];
    float q[16];
    float e[4][16];       // exp(score) by head and position
    float acc[2][16];     // sum_t e * v by position parity
    float den[2][16];     // sum_t e by position parity
    float po[2][16];      // wo partials
    float h[64];          // relu(fc1 x)
    float pf[2][16];      // fc2 partials
    float pe[8];          // sampler: sums of exp by groups of 4 lanes
};

#ifdef MG_PROFILE
struct Prof {
    long long acc[16];
    long long last;
};
#define PROF_PARAM , Prof &P
#define PROF_ARG , P
#define STAMP(k)                           \
    do {                                   \
        const long long t_ = clock64();    \
        P.acc[k] += t_ - P.last;           \
        P.last = t_;                       \
    } while (0)
__device__ long long g_prof[16];
#else
#define PROF_PARAM
#define PROF_ARG
#define STAMP(k) \
    do {         \
    } while (0)
#endif

// MUFU.RSQ / MUFU.RCP without the denormal-input scaling that rsqrtf and __fdividef add:
// every argument here is a normal number (>= 1e-10 for rsqrt, in [1e-35, 1e36] for rcp),
// where these are as accurate as rsqrtf (2 ulp) and 1/x to 1 ulp.
__device__ __forceinline__ float rsqrt_n(float x) {
    float y;
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float rcp_n(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float dot4(const float4 a, const float4 b) {
    float s = a.x * b.x;
    s = fmaf(a.y, b.y, s);
    s = fmaf(a.z, b.z, s);
    return fmaf(a.w, b.w, s);
}

// sum_i w[i] * x[i] with four independent chains
template <int N>
__device__ __forceinline__ float dotn(const float* w, const float* x) {
    float a0 = w[0] * x[0], a1 = w[1] * x[1], a2 = w[2] * x[2], a3 = w[3] * x[3];
#pragma unroll
    for (int i = 4; i < N; i += 4) {
        a0 = fmaf(w[i], x[i], a0);
        a1 = fmaf(w[i + 1], x[i + 1], a1);
        a2 = fmaf(w[i + 2], x[i + 2], a2);
        a3 = fmaf(w[i + 3], x[i + 3], a3);
    }
    return (a0 + a1) + (a2 + a3);
}

__device__ __forceinline__ void load16(float* x, const float* src) {
    const float4* p = reinterpret_cast<const float4*>(src);
#pragma unroll
    for (int c = 0; c < 4; c++) {
        float4 v = p[c];
        x[4 * c] = v.x;
        x[4 * c + 1] = v.y;
        x[4 * c + 2] = v.z;
        x[4 * c + 3] = v.w;
    }
}

__device__ __forceinline__ void load_lane_weights(LaneWeights& W, const float4* __restrict__ tbl, int lane) {
    float* dst[LANE_CHUNKS];
#pragma unroll
    for (int c = 0; c < 4; c++) dst[c] = W.wqk + 4 * c;
#pragma unroll
    for (int c = 0; c < 2; c++) dst[4 + c] = W.wv + 4 * c;
#pragma unroll
    for (int c = 0; c < 2; c++) dst[6 + c] = W.wo + 4 * c;
#pragma unroll
    for (int c = 0; c < 4; c++) dst[8 + c] = W.w1a + 4 * c;
#pragma unroll
    for (int c = 0; c < 4; c++) dst[12 + c] = W.w1b + 4 * c;
#pragma unroll
    for (int c = 0; c < 8; c++) dst[16 + c] = W.w2 + 4 * c;
#pragma unroll
    for (int c = 0; c < 4; c++) dst[24 + c] = W.wl + 4 * c;
#pragma unroll
    for (int c = 0; c < LANE_CHUNKS; c++) {
        float4 v = tbl[c * 32 + lane];
        dst[c][0] = v.x;
        dst[c][1] = v.y;
        dst[c][2] = v.z;
        dst[c][3] = v.w;
    }
}

// One token through the model for one warp, then (unless LOGITS) the xorshift32 draw.
// tok/pos are warp-uniform. Returns the sampled id (warp-uniform); with LOGITS it
// writes the 27 logits to logits_out and returns -1. inv_t = 1 / temperature.
template <bool LOGITS>
__device__ __forceinline__ int warp_token_step(const LaneWeights& W, WarpSmem& S, const float* sWte,
                                               const float* sWpe, int tok, int pos, float inv_t,
                                               uint32_t& rng, float* logits_out, int lane PROF_PARAM) {
    const int lo = lane & 15, half = lane >> 4;
    STAMP(0);

    // ---- embedding and the two RMSNorms (vectors replicated in every lane)
    float x[16], xn[16], res[16];
    {
        float a[16], b[16];
        load16(a, sWte + tok * 16);
        load16(b, sWpe + pos * 16);
#pragma unroll
        for (int i = 0; i < 16; i++) x[i] = a[i] + b[i];
    }
    {
        const float ms = dotn<16>(x, x) * 0.0625f;
        const float s1 = rsqrt_n(ms + 1e-5f);
        // rmsnorm(rmsnorm(x)) = x * s1 * s2 with s2 = (ms*s1^2 + eps)^-1/2, and
        // s1 * s2 = (ms * (1 + eps) + eps^2)^-1/2: one rsqrt on the critical path
        const float s12 = rsqrt_n(fmaf(ms, 1.0f + 1e-5f, 1e-10f));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            res[i] = x[i] * s1;
            xn[i] = x[i] * s12;
        }
    }
    STAMP(1);

    // ---- q (lanes 0..15, pre-scaled by 1/sqrt(head_dim) = 0.5 in the weight table: exact),
    // k (lanes 16..31), v (all lanes: column halves, added by a shuffle that completes
    // while the scores are computed; v is stored before the second barrier)
    float v;
    {
        const float qk = dotn<16>(W.wqk, xn);
        float xh[8];
#pragma unroll
        for (int j = 0; j < 8; j++) xh[j] = half ? xn[8 + j] : xn[j];
        const float pv = dotn<8>(W.wv, xh);
        v = pv + __shfl_xor_sync(FULL, pv, 16);
        if (half == 0) S.q[lo] = qk;
        else S.K[pos][lo] = qk;
    }
    __syncwarp();
    STAMP(2);

    // ---- attention scores: lane = (position t = lo, heads 2*half and 2*half+1)
    {
        const float4* qp = reinterpret_cast<const float4*>(S.q + 8 * half);
        const float4* kp = reinterpret_cast<const float4*>(&S.K[lo][8 * half]);
        const bool valid = lo <= pos;
        // masked positions get -inf, whose expf is exactly 0 (no divergent branch)
        const float sa = valid ? dot4(qp[0], kp[0]) : -INFINITY;
        const float sb = valid ? dot4(qp[1], kp[1]) : -INFINITY;
        if (half == 0) S.V[pos][lo] = v;
        // exp without the max shift when every score is in [-80, 80] (no overflow, no
        // total underflow); otherwise the usual max-shifted softmax
        const float big = valid ? fmaxf(fabsf(sa), fabsf(sb)) : 0.f;
        float ea, eb;
        if (__any_sync(FULL, !(big <= 80.f))) {
            float ma = sa, mb = sb;
#pragma unroll
            for (int off = 1; off < 16; off <<= 1) {
                ma = fmaxf(ma, __shfl_xor_sync(FULL, ma, off));
                mb = fmaxf(mb, __shfl_xor_sync(FULL, mb, off));
            }
            ea = expf(valid ? sa - ma : -INFINITY);
            eb = expf(valid ? sb - mb : -INFINITY);
        } else {
            ea = expf(sa);
            eb = expf(sb);
        }
        S.e[2 * half][lo] = ea;
        S.e[2 * half + 1][lo] = eb;
    }
    __syncwarp();
    STAMP(3);

    // ---- weighted sums: lane = (output dim lo, positions of parity half)
    {
        const int hd = lo >> 2;
        float a0 = 0.f, a1 = 0.f, d0 = 0.f, d1 = 0.f;
#pragma unroll
        for (int j = 0; j < CTX / 2; j++) {
            const int t = 2 * j + half;
            if (t <= pos) {
                const float w = S.e[hd][t];
                const float vt = S.V[t][lo];
                if (j & 1) {
                    a1 = fmaf(w, vt, a1);
                    d1 += w;
                } else {
                    a0 = fmaf(w, vt, a0);
                    d0 += w;
                }
            }
        }
        S.acc[half][lo] = a0 + a1;
        S.den[half][lo] = d0 + d1;
    }
    __syncwarp();
    STAMP(4);

    // ---- x = wo @ out + res; lane: row lo of wo over out[8*half .. 8*half+7]
    {
        float o[8];
        const float4* a0 = reinterpret_cast<const float4*>(S.acc[0] + 8 * half);
        const float4* a1 = reinterpret_cast<const float4*>(S.acc[1] + 8 * half);
        // softmax denominators of heads 2*half and 2*half+1 (|den| in [1e-35, 1e36]:
        // the reciprocal is exact to 2 ulp there)
        const float ra = rcp_n(S.den[0][8 * half] + S.den[1][8 * half]);
        const float rb = rcp_n(S.den[0][8 * half + 4] + S.den[1][8 * half + 4]);
#pragma unroll
        for (int c = 0; c < 2; c++) {
            const float4 u = a0[c], v = a1[c];
            const float r = c ? rb : ra;
            o[4 * c] = (u.x + v.x) * r;
            o[4 * c + 1] = (u.y + v.y) * r;
            o[4 * c + 2] = (u.z + v.z) * r;
            o[4 * c + 3] = (u.w + v.w) * r;
        }
        S.po[half][lo] = dotn<8>(W.wo, o);
    }
    __syncwarp();
    STAMP(5);
    {
        float p0[16], p1[16];
        load16(p0, S.po[0]);
        load16(p1, S.po[1]);
#pragma unroll
        for (int i = 0; i < 16; i++) x[i] = (p0[i] + p1[i]) + res[i];
    }

    // ---- MLP: rmsnorm, fc1 + relu (rows lane, lane+32), fc2 (+ res)
    {
        const float ms = dotn<16>(x, x) * 0.0625f;
        const float s = rsqrt_n(ms + 1e-5f);
#pragma unroll
        for (int i = 0; i < 16; i++) xn[i] = x[i] * s;
    }
    S.h[lane] = fmaxf(dotn<16>(W.w1a, xn), 0.f);
    S.h[lane + 32] = fmaxf(dotn<16>(W.w1b, xn), 0.f);
    __syncwarp();
    STAMP(6);
    {
        float hh[32];
#pragma unroll
        for (int c = 0; c < 2; c++) load16(hh + 16 * c, S.h + 32 * half + 16 * c);
        S.pf[half][lo] = dotn<32>(W.w2, hh);
    }
    __syncwarp();
    STAMP(7);
    {
        float p0[16], p1[16];
        load16(p0, S.pf[0]);
        load16(p1, S.pf[1]);
#pragma unroll
        for (int i = 0; i < 16; i++) x[i] = (p0[i] + p1[i]) + x[i];
    }

    // ---- logits: lane l < 27 holds logit l (lanes 27..31 have zero weights)
    const float logit = dotn<16>(W.wl, x);
    STAMP(8);
    if (LOGITS) {
        if (lane < VOCAB) logits_out[lane] = logit;
        return -1;
    }

    // ---- sampler: probs = softmax(logits / T); xorshift32; first id with r < cumsum
    const bool live = lane < VOCAB;
    const float z = logit * inv_t;
    const unsigned big = __ballot_sync(FULL, live && !(z <= 80.f));
    const unsigned sane = __ballot_sync(FULL, live && z >= -80.f);
    const float zl = live ? z : -INFINITY;  // expf(-inf) = 0 for lanes 27..31
    float e;
    if (big == 0u && sane != 0u) {
        e = expf(zl);
    } else {
        float m = zl;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) m = fmaxf(m, __shfl_xor_sync(FULL, m, off));
        e = expf(live ? z - m : -INFINITY);
    }
    STAMP(9);
    // inclusive prefix sum in two levels: within groups of 4 lanes by shuffles, then the
    // group sums through shared memory (each lane adds those of the groups before its own)
    float c = e;
    {
        const int sub = lane & 3, grp = lane >> 2;
        float u = __shfl_up_sync(FULL, c, 1, 4);
        if (sub >= 1) c += u;
        u = __shfl_up_sync(FULL, c, 2, 4);
        if (sub >= 2) c += u;
        if (sub == 3) S.pe[grp] = c;
        __syncwarp();
        const float4 g0 = reinterpret_cast<const float4*>(S.pe)[0];
        const float4 g1 = reinterpret_cast<const float4*>(S.pe)[1];
        const float b0 = grp > 0 ? g0.x : 0.f, b1 = grp > 1 ? g0.y : 0.f, b2 = grp > 2 ? g0.z : 0.f;
        const float b3 = grp > 3 ? g0.w : 0.f, b4 = grp > 4 ? g1.x : 0.f, b5 = grp > 5 ? g1.y : 0.f;
        const float b6 = grp > 6 ? g1.z : 0.f;
        c += ((b0 + b1) + (b2 + b3)) + ((b4 + b5) + b6);
        const float tot = ((g0.x + g0.y) + (g0.z + g0.w)) + ((g1.x + g1.y) + (g1.z + g1.w));
        rng = mg_xorshift32(rng);
        const float r = (float)(rng >> 8) * (1.0f / 16777216.0f);
        // r < c / tot, written without the division
        const unsigned hit = __ballot_sync(FULL, lane < VOCAB - 1 && r * tot < c);
        STAMP(10);
        return hit ? __ffs(hit) - 1 : BOS;
    }
}

__device__ __forceinline__ void load_block_tables(float* sWte, float* sWpe, const float* __restrict__ w) {
    for (int i = threadIdx.x; i < 432; i += blockDim.x) sWte[i] = w[OFF_WTE + i];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sWpe[i] = w[OFF_WPE + i];
}

__device__ __forceinline__ void zero_cache(WarpSmem& S, int lane) {
    float* k = &S.K[0][0];
    float* v = &S.V[0][0];
    for (int i = lane; i < CTX * 20; i += 32) k[i] = 0.f;
    for (int i = lane; i < CTX * 16; i += 32) v[i] = 0.f;
}

// variant 2: one warp, the whole loop. forced != NULL: feed forced[0..n) at positions
// 0.. and write the logits (n <= 16); else generate n tokens from BOS.
template <bool LOGITS>
__global__ void __launch_bounds__(32, 1)
k_persistent(const float4* __restrict__ tbl, const float* __restrict__ w, float inv_t, long long n,
             uint32_t seed, const int* __restrict__ forced, float* __restrict__ logits,
             int* __restrict__ out_tokens, unsigned long long* __restrict__ checksum) {
    __shared__ __align__(16) float sWte[432];
    __shared__ __align__(16) float sWpe[256];
    __shared__ WarpSmem S;
    const int lane = threadIdx.x;
    load_block_tables(sWte, sWpe, w);
    zero_cache(S, lane);
    LaneWeights W;
    load_lane_weights(W, tbl, lane);
    __syncwarp();
    int tok = BOS, pos = 0;
    uint32_t rng = seed;
    unsigned long long sum = 0;
#ifdef MG_PROFILE
    Prof P = {};
    P.last = clock64();
#endif
    for (long long i = 0; i < n; i++) {
        if (LOGITS) {
            warp_token_step<true>(W, S, sWte, sWpe, forced[i], (int)i, inv_t, rng, logits + 27 * i, lane PROF_ARG);
            continue;
        }
        const int next = warp_token_step<false>(W, S, sWte, sWpe, tok, pos, inv_t, rng, nullptr, lane PROF_ARG);
        if (out_tokens != nullptr && lane == 0) out_tokens[i] = next;
        sum += (unsigned)next;
        pos++;
        if (next == BOS || pos == CTX) {
            tok = BOS;
            pos = 0;
        } else {
            tok = next;
        }
    }
    if (!LOGITS && lane == 0 && checksum != nullptr) *checksum = sum;
#ifdef MG_PROFILE
    if (lane == 0)
        for (int k = 0; k < 16; k++) g_prof[k] = P.acc[k];
#endif
}

// variant 3: warp per stream, grid-stride over streams.
// seed_mode 0: stream i seeded with mg_stream_seed(seed, i); 1: every stream seeded with seed.
// LOGITS: stream i feeds forced[16*i .. 16*i+lens[i]) and writes logits[16*27*i ..].
#define OFF_WARPS 4
#define OFF_MIN_BLOCKS 3  // 168 registers, no spills: 12 warps per SM
template <bool LOGITS>
__global__ void __launch_bounds__(32 * OFF_WARPS, OFF_MIN_BLOCKS)
k_offline(const float4* __restrict__ tbl, const float* __restrict__ w, float inv_t, int n_streams,
          long long tps, uint32_t seed, int seed_mode, const int* __restrict__ forced,
          const int* __restrict__ lens, float* __restrict__ logits, int* __restrict__ out_tokens,
          unsigned long long* __restrict__ checksum) {
    __shared__ __align__(16) float sWte[432];
    __shared__ __align__(16) float sWpe[256];
    __shared__ WarpSmem Sall[OFF_WARPS];
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    WarpSmem& S = Sall[wib];
    load_block_tables(sWte, sWpe, w);
    zero_cache(S, lane);
    LaneWeights W;
    load_lane_weights(W, tbl, lane);
    __syncthreads();
    const int warps = gridDim.x * OFF_WARPS;
#ifdef MG_PROFILE
    Prof P = {};
    P.last = clock64();
#endif
    for (int s = blockIdx.x * OFF_WARPS + wib; s < n_streams; s += warps) {
        if (LOGITS) {
            const int len = lens[s];
            uint32_t dummy = 1;
            for (int i = 0; i < len; i++) {
                warp_token_step<true>(W, S, sWte, sWpe, forced[16 * s + i], i, inv_t, dummy,
                                      logits + (size_t)(16 * 27) * s + 27 * i, lane PROF_ARG);
                __syncwarp();
            }
            continue;
        }
        uint32_t rng = seed_mode ? seed : mg_stream_seed(seed, (uint32_t)s);
        int tok = BOS, pos = 0;
        unsigned long long sum = 0;
        int* out = out_tokens ? out_tokens + (size_t)s * (size_t)tps : nullptr;
        for (long long i = 0; i < tps; i++) {
            const int next = warp_token_step<false>(W, S, sWte, sWpe, tok, pos, inv_t, rng, nullptr, lane PROF_ARG);
            if (out != nullptr && lane == 0) out[i] = next;
            sum += (unsigned)next;
            pos++;
            if (next == BOS || pos == CTX) {
                tok = BOS;
                pos = 0;
            } else {
                tok = next;
            }
        }
        __syncwarp();
        if (lane == 0 && checksum != nullptr) atomicAdd(checksum, sum);
    }
}

// ============================================== variants 0 and 1: one kernel per operation

struct DevState {
    int tok, pos, sampled, step;
    uint32_t rng;
    unsigned long long checksum;
    float x0[16], x1[16], xn[16], q[16], K[CTX * 16], V[CTX * 16], att[16], xa[16], xm[16];
    float h[HID], xb[16], logits[32], probs[32];
    int ring[RING];
};

__global__ void k_embed(const float* __restrict__ w, DevState* S) {
    const int i = threadIdx.x;
    if (i < EMBD) S->x0[i] = w[OFF_WTE + S->tok * 16 + i] + w[OFF_WPE + S->pos * 16 + i];
}

__global__ void k_rmsnorm(const float* __restrict__ src, float* __restrict__ dst) {
    const int i = threadIdx.x;
    if (i >= EMBD) return;
    float ss = 0.f;
    for (int j = 0; j < EMBD; j++) ss = fmaf(src[j], src[j], ss);
    dst[i] = src[i] * rsqrtf(ss / EMBD + 1e-5f);
}

// out[r] = act(W[r,:] @ in) (+ res[r]); kv: out += pos * 16 (the cache row)
__global__ void k_matvec(const float* __restrict__ W, int rows, int cols, const float* __restrict__ in,
                         float* out, const float* res, int relu, int kv, const DevState* S) {
    const int r = threadIdx.x;
    if (r >= rows) return;
    float acc = 0.f;
    for (int j = 0; j < cols; j++) acc = fmaf(W[r * cols + j], in[j], acc);
    if (relu) acc = fmaxf(acc, 0.f);
    if (res) acc += res[r];
    if (kv) out += S->pos * 16;
    out[r] = acc;
}

__global__ void k_attention(DevState* S) {
    const int d = threadIdx.x;
    if (d >= EMBD) return;
    const int h = d >> 2, pos = S->pos;
    float sc[CTX];
    float m = -INFINITY;
    for (int t = 0; t <= pos; t++) {
        float a = 0.f;
        for (int j = 0; j < 4; j++) a = fmaf(S->q[4 * h + j], S->K[t * 16 + 4 * h + j], a);
        sc[t] = a * 0.5f;
        m = fmaxf(m, sc[t]);
    }
    float den = 0.f, acc = 0.f;
    for (int t = 0; t <= pos; t++) {
        const float e = expf(sc[t] - m);
        den += e;
        acc = fmaf(e, S->V[t * 16 + d], acc);
    }
    S->att[d] = acc / den;
}

__global__ void k_softmax(DevState* S, float temperature) {
    if (threadIdx.x != 0) return;
    float m = -INFINITY;
    for (int i = 0; i < VOCAB; i++) m = fmaxf(m, S->logits[i] / temperature);
    float tot = 0.f;
    for (int i = 0; i < VOCAB; i++) {
        S->probs[i] = expf(S->logits[i] / temperature - m);
        tot += S->probs[i];
    }
    for (int i = 0; i < VOCAB; i++) S->probs[i] /= tot;
}

// update: advance the loop state on the device (graph); else the host does it (naive)
__global__ void k_sample(DevState* S, int update) {
    if (threadIdx.x != 0) return;
    const uint32_t x = mg_xorshift32(S->rng);
    S->rng = x;
    const float r = (float)(x >> 8) * (1.0f / 16777216.0f);
    float c = 0.f;
    int next = BOS;
    for (int i = 0; i < VOCAB - 1; i++) {
        c += S->probs[i];
        if (r < c) {
            next = i;
            break;
        }
    }
    S->sampled = next;
    if (update) {
        S->ring[S->step % RING] = next;
        S->step++;
        S->checksum += (unsigned)next;
        const int pos = S->pos + 1;
        if (next == BOS || pos == CTX) {
            S->tok = BOS;
            S->pos = 0;
        } else {
            S->tok = next;
            S->pos = pos;
        }
    }
}

// ========================================================================= host side

struct mg_handle {
    int device;
    float temperature;
    cudaStream_t stream;
    float* d_w;       // 4192 floats, C order
    float4* d_tbl;    // lane weight table, LANE_CHUNKS * 32 float4
    DevState* d_state;
    int* h_pin;       // pinned: 4 ints of host<->device state
    int* h_ring;      // pinned: RING tokens
    float* h_logits;  // pinned: 32 floats
    unsigned long long* d_sum;
    cudaGraph_t graph;
    cudaGraphExec_t graph_exec;
    int sms, offline_blocks_per_sm;
};

static void build_lane_table(const float* w, float* tbl /* LANE_CHUNKS*32*4 */) {
    for (int lane = 0; lane < 32; lane++) {
        const int lo = lane & 15, half = lane >> 4;
        float v[LANE_CHUNKS * 4];
        int k = 0;
        // q rows scaled by 1/sqrt(head_dim) = 0.5: exact, so q.k * 0.5 is unchanged
        for (int j = 0; j < 16; j++) v[k++] = half ? w[OFF_WK + lo * 16 + j] : 0.5f * w[OFF_WQ + lo * 16 + j];
        for (int j = 0; j < 8; j++) v[k++] = w[OFF_WV + lo * 16 + 8 * half + j];
        for (int j = 0; j < 8; j++) v[k++] = w[OFF_WO + lo * 16 + 8 * half + j];
        for (int j = 0; j < 16; j++) v[k++] = w[OFF_FC1 + lane * 16 + j];
        for (int j = 0; j < 16; j++) v[k++] = w[OFF_FC1 + (lane + 32) * 16 + j];
        for (int j = 0; j < 32; j++) v[k++] = w[OFF_FC2 + lo * 64 + 32 * half + j];
        for (int j = 0; j < 16; j++) v[k++] = lane < VOCAB ? w[OFF_LM + lane * 16 + j] : 0.f;
        for (int c = 0; c < LANE_CHUNKS; c++)
            for (int e = 0; e < 4; e++) tbl[(c * 32 + lane) * 4 + e] = v[4 * c + e];
    }
}

static int check_handle(mg_handle* h) {
    if (h == nullptr) return fail(MG_EINVAL, "null handle");
    return MG_OK;
}

extern "C" {

const char* mg_last_error(void) { return g_err; }

int mg_device_count(int* count) {
    *count = 0;
    CK(cudaGetDeviceCount(count));
    return MG_OK;
}

// "name|cc|sms|driver|runtime|clock_khz|mem_clock_khz|l2|smem_per_block_optin"
int mg_device_info(char* buf, int len) {
    int dev = 0, drv = 0, rt = 0, clk = 0, mclk = 0, count = 0;
    if (buf == nullptr || len < 2) return fail(MG_EINVAL, "buffer too small");
    CK(cudaGetDeviceCount(&count));
    if (count == 0) return fail(MG_ENODEV, "no CUDA device");
    CK(cudaGetDevice(&dev));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    CK(cudaDriverGetVersion(&drv));
    CK(cudaRuntimeGetVersion(&rt));
    CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, dev));
    CK(cudaDeviceGetAttribute(&mclk, cudaDevAttrMemoryClockRate, dev));
    snprintf(buf, (size_t)len, "%s|%d.%d|%d|%d|%d|%d|%d|%d|%zu", p.name, p.major, p.minor,
             p.multiProcessorCount, drv, rt, clk, mclk, p.l2CacheSize, p.sharedMemPerBlockOptin);
    return MG_OK;
}

void mg_destroy(mg_handle* h) {
    if (h == nullptr) return;
    cudaSetDevice(h->device);
    if (h->stream) cudaStreamSynchronize(h->stream);
    if (h->graph_exec) cudaGraphExecDestroy(h->graph_exec);
    if (h->graph) cudaGraphDestroy(h->graph);
    cudaFree(h->d_w);
    cudaFree(h->d_tbl);
    cudaFree(h->d_state);
    cudaFree(h->d_sum);
    cudaFreeHost(h->h_pin);
    cudaFreeHost(h->h_ring);
    cudaFreeHost(h->h_logits);
    if (h->stream) cudaStreamDestroy(h->stream);
    free(h);
}

static int create_inner(mg_handle* h, const float* weights) {
    int count = 0;
    CK(cudaGetDeviceCount(&count));
    if (count == 0) return fail(MG_ENODEV, "no CUDA device");
    CK(cudaGetDevice(&h->device));
    CK(cudaSetDevice(h->device));
    CK(cudaDeviceGetAttribute(&h->sms, cudaDevAttrMultiProcessorCount, h->device));
    CK(cudaStreamCreateWithFlags(&h->stream, cudaStreamNonBlocking));
    CK(cudaMalloc((void**)&h->d_w, NPARAMS * sizeof(float)));
    CK(cudaMalloc((void**)&h->d_tbl, LANE_CHUNKS * 32 * sizeof(float4)));
    CK(cudaMalloc((void**)&h->d_state, sizeof(DevState)));
    CK(cudaMalloc((void**)&h->d_sum, sizeof(unsigned long long)));
    CK(cudaMallocHost((void**)&h->h_pin, 4 * sizeof(int)));
    CK(cudaMallocHost((void**)&h->h_ring, RING * sizeof(int)));
    CK(cudaMallocHost((void**)&h->h_logits, 32 * sizeof(float)));
    const size_t tbl_bytes = LANE_CHUNKS * 32 * sizeof(float4);
    float* t = (float*)malloc(tbl_bytes);
    if (t == nullptr) return fail(MG_ENOMEM, "host allocation failed");
    build_lane_table(weights, t);
    cudaError_t e1 = cudaMemcpy(h->d_tbl, t, tbl_bytes, cudaMemcpyHostToDevice);
    free(t);
    CK(e1);
    CK(cudaMemcpy(h->d_w, weights, NPARAMS * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemset(h->d_state, 0, sizeof(DevState)));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&h->offline_blocks_per_sm, k_offline<false>,
                                                     32 * OFF_WARPS, 0));
    if (h->offline_blocks_per_sm < 1) h->offline_blocks_per_sm = 1;
    return MG_OK;
}

int mg_create(const float* weights, float temperature, mg_handle** out) {
    if (out == nullptr) return fail(MG_EINVAL, "null output pointer");
    *out = nullptr;
    if (weights == nullptr) return fail(MG_EINVAL, "null weights");
    if (!(temperature > 0.f) || !isfinite(temperature))
        return fail(MG_EINVAL, "temperature must be a positive finite number");
    for (int i = 0; i < NPARAMS; i++)
        if (!isfinite(weights[i])) return fail(MG_EINVAL, "weight %d is not finite", i);
    mg_handle* h = (mg_handle*)calloc(1, sizeof(mg_handle));
    if (h == nullptr) return fail(MG_ENOMEM, "host allocation failed");
    h->temperature = temperature;
    const int rc = create_inner(h, weights);
    if (rc != MG_OK) {
        char keep[sizeof g_err];
        memcpy(keep, g_err, sizeof keep);
        mg_destroy(h);
        memcpy(g_err, keep, sizeof keep);
        return rc;
    }
    *out = h;
    return MG_OK;
}

// resident warps of the offline kernel when the grid fills every SM
int mg_offline_capacity(mg_handle* h, int* warps) {
    if (check_handle(h)) return MG_EINVAL;
    *warps = h->sms * h->offline_blocks_per_sm * OFF_WARPS;
    return MG_OK;
}

int mg_mem_info(size_t* free_bytes, size_t* total_bytes) {
    CK(cudaMemGetInfo(free_bytes, total_bytes));
    return MG_OK;
}

// ------------------------------------------------------------- naive and graph plumbing

static void launch_forward(mg_handle* h, int update) {
    DevState* S = h->d_state;
    const float* w = h->d_w;
    cudaStream_t st = h->stream;
    k_embed<<<1, 32, 0, st>>>(w, S);
    k_rmsnorm<<<1, 32, 0, st>>>(S->x0, S->x1);
    k_rmsnorm<<<1, 32, 0, st>>>(S->x1, S->xn);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_WQ, 16, 16, S->xn, S->q, nullptr, 0, 0, S);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_WK, 16, 16, S->xn, S->K, nullptr, 0, 1, S);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_WV, 16, 16, S->xn, S->V, nullptr, 0, 1, S);
    k_attention<<<1, 32, 0, st>>>(S);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_WO, 16, 16, S->att, S->xa, S->x1, 0, 0, S);
    k_rmsnorm<<<1, 32, 0, st>>>(S->xa, S->xm);
    k_matvec<<<1, 64, 0, st>>>(w + OFF_FC1, 64, 16, S->xm, S->h, nullptr, 1, 0, S);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_FC2, 16, 64, S->h, S->xb, S->xa, 0, 0, S);
    k_matvec<<<1, 32, 0, st>>>(w + OFF_LM, 27, 16, S->xb, S->logits, nullptr, 0, 0, S);
    k_softmax<<<1, 32, 0, st>>>(S, h->temperature);
    k_sample<<<1, 32, 0, st>>>(S, update);
}

static int ensure_graph(mg_handle* h) {
    if (h->graph_exec) return MG_OK;
    CK(cudaStreamBeginCapture(h->stream, cudaStreamCaptureModeThreadLocal));
    launch_forward(h, 1);
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(h->stream, &g);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        if (g) cudaGraphDestroy(g);
        CK(e);
    }
    h->graph = g;
    CK(cudaGraphInstantiate(&h->graph_exec, g, 0));
    CK(cudaGraphUpload(h->graph_exec, h->stream));
    return MG_OK;
}

// set tok, pos (and when reset, rng/step/checksum) in the device state
static int put_state(mg_handle* h, int tok, int pos) {
    h->h_pin[0] = tok;
    h->h_pin[1] = pos;
    CK(cudaMemcpyAsync(&h->d_state->tok, h->h_pin, 2 * sizeof(int), cudaMemcpyHostToDevice, h->stream));
    return MG_OK;
}

static int reset_state(mg_handle* h, uint32_t seed) {
    struct {
        int tok, pos, sampled, step;
        uint32_t rng;
    } init = {BOS, 0, 0, 0, seed};
    static_assert(sizeof(init) == 20, "layout");
    CK(cudaMemcpy(h->d_state, &init, sizeof init, cudaMemcpyHostToDevice));
    CK(cudaMemset(&h->d_state->checksum, 0, sizeof(unsigned long long)));
    return MG_OK;
}

static int check_tokens(const int* tokens, int n) {
    if (tokens == nullptr) return fail(MG_EINVAL, "null tokens");
    if (n < 1 || n > CTX) return fail(MG_EINVAL, "a probe sequence holds 1..16 tokens, got %d", n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= VOCAB) return fail(MG_EINVAL, "token %d at %d is not in 0..26", tokens[i], i);
    return MG_OK;
}

static int finish(mg_handle* h) {
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(h->stream));
    return MG_OK;
}

// logits (n, 27) of tokens fed at positions 0.. from an empty cache, through `variant`
int mg_logits(mg_handle* h, int variant, const int* tokens, int n, float* out) {
    if (check_handle(h)) return MG_EINVAL;
    if (out == nullptr) return fail(MG_EINVAL, "null output");
    int rc = check_tokens(tokens, n);
    if (rc) return rc;
    CK(cudaSetDevice(h->device));
    if (variant == 0 || variant == 1) {
        if (variant == 1 && (rc = ensure_graph(h))) return rc;
        if ((rc = reset_state(h, 1))) return rc;
        for (int i = 0; i < n; i++) {
            if ((rc = put_state(h, tokens[i], i))) return rc;
            if (variant == 0) launch_forward(h, 0);
            else CK(cudaGraphLaunch(h->graph_exec, h->stream));
            CK(cudaMemcpyAsync(h->h_logits, h->d_state->logits, VOCAB * sizeof(float), cudaMemcpyDeviceToHost,
                               h->stream));
            if ((rc = finish(h))) return rc;
            memcpy(out + VOCAB * i, h->h_logits, VOCAB * sizeof(float));
        }
        return MG_OK;
    }
    if (variant != 2 && variant != 3) return fail(MG_EINVAL, "unknown variant %d", variant);
    int* d_tok = nullptr;
    float* d_log = nullptr;
    CK(cudaMalloc((void**)&d_tok, CTX * sizeof(int)));
    cudaError_t e = cudaMalloc((void**)&d_log, CTX * VOCAB * sizeof(float));
    if (e == cudaSuccess) e = cudaMemcpyAsync(d_tok, tokens, n * sizeof(int), cudaMemcpyHostToDevice, h->stream);
    if (e == cudaSuccess) {
        if (variant == 2) {
            k_persistent<true><<<1, 32, 0, h->stream>>>(h->d_tbl, h->d_w, 1.0f / h->temperature, n, 1u, d_tok, d_log,
                                                        nullptr, nullptr);
        } else {
            int* d_len = nullptr;
            e = cudaMalloc((void**)&d_len, sizeof(int));
            if (e == cudaSuccess) e = cudaMemcpyAsync(d_len, &n, sizeof(int), cudaMemcpyHostToDevice, h->stream);
            if (e == cudaSuccess)
                k_offline<true><<<1, 32 * OFF_WARPS, 0, h->stream>>>(h->d_tbl, h->d_w, 1.0f / h->temperature, 1, 0, 1u, 1,
                                                                     d_tok, d_len, d_log, nullptr, nullptr);
            if (e == cudaSuccess) e = cudaStreamSynchronize(h->stream);
            cudaFree(d_len);
        }
    }
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(out, d_log, (size_t)n * VOCAB * sizeof(float), cudaMemcpyDeviceToHost, h->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(h->stream);
    cudaFree(d_tok);
    cudaFree(d_log);
    CK(e);
    return MG_OK;
}

// n_tokens of the generation loop with xorshift32 from `seed`; out_tokens may be NULL
int mg_generate(mg_handle* h, int variant, long long n_tokens, uint32_t seed, int* out_tokens,
                unsigned long long* checksum) {
    if (check_handle(h)) return MG_EINVAL;
    if (n_tokens < 1 || n_tokens > MAX_TOKENS) return fail(MG_EINVAL, "n_tokens must be in 1..2^40, got %lld", n_tokens);
    if (seed == 0u) return fail(MG_EINVAL, "xorshift32 needs a nonzero seed");
    CK(cudaSetDevice(h->device));
    int rc;
    unsigned long long sum = 0;
    if (variant == 0) {
        if ((rc = reset_state(h, seed))) return rc;
        int tok = BOS, pos = 0;
        for (long long i = 0; i < n_tokens; i++) {
            if ((rc = put_state(h, tok, pos))) return rc;
            launch_forward(h, 0);
            CK(cudaMemcpyAsync(h->h_pin + 2, &h->d_state->sampled, sizeof(int), cudaMemcpyDeviceToHost, h->stream));
            if ((rc = finish(h))) return rc;
            const int next = h->h_pin[2];
            if (out_tokens) out_tokens[i] = next;
            sum += (unsigned)next;
            pos++;
            if (next == BOS || pos == CTX) {
                tok = BOS;
                pos = 0;
            } else {
                tok = next;
            }
        }
    } else if (variant == 1) {
        if ((rc = ensure_graph(h))) return rc;
        if ((rc = reset_state(h, seed))) return rc;
        for (long long base = 0; base < n_tokens; base += RING) {
            const long long m = n_tokens - base < RING ? n_tokens - base : RING;
            for (long long i = 0; i < m; i++) CK(cudaGraphLaunch(h->graph_exec, h->stream));
            if (out_tokens)
                CK(cudaMemcpyAsync(h->h_ring, h->d_state->ring, m * sizeof(int), cudaMemcpyDeviceToHost, h->stream));
            if ((rc = finish(h))) return rc;
            if (out_tokens) memcpy(out_tokens + base, h->h_ring, m * sizeof(int));
        }
        CK(cudaMemcpy(&sum, &h->d_state->checksum, sizeof sum, cudaMemcpyDeviceToHost));
    } else if (variant == 2) {
        int* d_out = nullptr;
        if (out_tokens) CK(cudaMalloc((void**)&d_out, (size_t)n_tokens * sizeof(int)));
        k_persistent<false><<<1, 32, 0, h->stream>>>(h->d_tbl, h->d_w, 1.0f / h->temperature, n_tokens, seed, nullptr,
                                                     nullptr, d_out, h->d_sum);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaStreamSynchronize(h->stream);
        if (e == cudaSuccess && out_tokens)
            e = cudaMemcpy(out_tokens, d_out, (size_t)n_tokens * sizeof(int), cudaMemcpyDeviceToHost);
        if (e == cudaSuccess) e = cudaMemcpy(&sum, h->d_sum, sizeof sum, cudaMemcpyDeviceToHost);
        cudaFree(d_out);
        CK(e);
    } else {
        return fail(MG_EINVAL, "unknown variant %d for mg_generate", variant);
    }
    if (checksum) *checksum = sum;
    return MG_OK;
}

// n_streams independent streams of tokens_per_stream tokens; out (n_streams, tps) may be NULL.
// seed_mode 0: stream i seeded with mg_stream_seed(seed, i); 1: all with seed (single stream runs)
int mg_generate_offline(mg_handle* h, int n_streams, long long tps, uint32_t seed, int seed_mode, int* out,
                        unsigned long long* checksum) {
    if (check_handle(h)) return MG_EINVAL;
    if (n_streams < 1) return fail(MG_EINVAL, "n_streams must be >= 1, got %d", n_streams);
    if (tps < 1 || tps > MAX_TOKENS) return fail(MG_EINVAL, "tokens_per_stream must be in 1..2^40, got %lld", tps);
    if (seed_mode == 1 && seed == 0u) return fail(MG_EINVAL, "xorshift32 needs a nonzero seed");
    CK(cudaSetDevice(h->device));
    int* d_out = nullptr;
    if (out) {
        if ((unsigned long long)tps > (1ULL << 62) / (unsigned long long)n_streams / sizeof(int))
            return fail(MG_EINVAL, "n_streams * tokens_per_stream overflows");
        const size_t bytes = (size_t)n_streams * (size_t)tps * sizeof(int);
        size_t fr = 0, tot = 0;
        CK(cudaMemGetInfo(&fr, &tot));
        if (bytes > fr)
            return fail(MG_ENOMEM, "%d streams x %lld tokens need %zu bytes of GPU memory, %zu free", n_streams, tps,
                        bytes, fr);
        CK(cudaMalloc((void**)&d_out, bytes));
    }
    const int cap_blocks = h->sms * h->offline_blocks_per_sm;
    const int need = (n_streams + OFF_WARPS - 1) / OFF_WARPS;
    const int blocks = need < cap_blocks ? need : cap_blocks;
    cudaError_t e = cudaMemsetAsync(h->d_sum, 0, sizeof(unsigned long long), h->stream);
    if (e == cudaSuccess) {
        k_offline<false><<<blocks, 32 * OFF_WARPS, 0, h->stream>>>(h->d_tbl, h->d_w, 1.0f / h->temperature, n_streams, tps,
                                                                   seed, seed_mode, nullptr, nullptr, nullptr, d_out,
                                                                   h->d_sum);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(h->stream);
    if (e == cudaSuccess && out)
        e = cudaMemcpy(out, d_out, (size_t)n_streams * (size_t)tps * sizeof(int), cudaMemcpyDeviceToHost);
    unsigned long long sum = 0;
    if (e == cudaSuccess) e = cudaMemcpy(&sum, h->d_sum, sizeof sum, cudaMemcpyDeviceToHost);
    cudaFree(d_out);
    CK(e);
    if (checksum) *checksum = sum;
    return MG_OK;
}

// logits of several sequences run as parallel streams: tokens (n_streams, 16), lens[n_streams],
// out (n_streams, 16, 27)
int mg_logits_offline(mg_handle* h, int n_streams, const int* tokens, const int* lens, float* out) {
    if (check_handle(h)) return MG_EINVAL;
    if (n_streams < 1 || n_streams > (1 << 24)) return fail(MG_EINVAL, "n_streams must be in 1..2^24, got %d", n_streams);
    if (tokens == nullptr || lens == nullptr || out == nullptr) return fail(MG_EINVAL, "null pointer");
    for (int s = 0; s < n_streams; s++) {
        int rc = check_tokens(tokens + 16 * s, lens[s]);
        if (rc) return rc;
    }
    CK(cudaSetDevice(h->device));
    int *d_tok = nullptr, *d_len = nullptr;
    float* d_log = nullptr;
    const size_t nt = (size_t)n_streams * 16, nl = (size_t)n_streams * 16 * VOCAB;
    cudaError_t e = cudaMalloc((void**)&d_tok, nt * sizeof(int));
    if (e == cudaSuccess) e = cudaMalloc((void**)&d_len, n_streams * sizeof(int));
    if (e == cudaSuccess) e = cudaMalloc((void**)&d_log, nl * sizeof(float));
    if (e == cudaSuccess) e = cudaMemcpy(d_tok, tokens, nt * sizeof(int), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(d_len, lens, n_streams * sizeof(int), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemset(d_log, 0, nl * sizeof(float));
    if (e == cudaSuccess) {
        const int cap_blocks = h->sms * h->offline_blocks_per_sm;
        const int need = (n_streams + OFF_WARPS - 1) / OFF_WARPS;
        k_offline<true><<<need < cap_blocks ? need : cap_blocks, 32 * OFF_WARPS, 0, h->stream>>>(
            h->d_tbl, h->d_w, 1.0f / h->temperature, n_streams, 0, 1u, 1, d_tok, d_len, d_log, nullptr, nullptr);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(h->stream);
    if (e == cudaSuccess) e = cudaMemcpy(out, d_log, nl * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d_tok);
    cudaFree(d_len);
    cudaFree(d_log);
    CK(e);
    return MG_OK;
}

}  // extern "C"
