/* mg_model.h: microGPT's shape, the C flat parameter order, the C kernels' error
 * codes, the canonical float constants, xorshift32 and the stream seeds, in one place. Included by mg_common.h
 * (mg_fp32.c, mg_q412.c), mg_cuda.cu, mg_wasm.c and talos_emu.c; tests/test_mg_model_header.py checks model.py and
 * backends/c_native.ERRORS against it, so the Python side cannot drift from it. */
#ifndef MG_MODEL_H
#define MG_MODEL_H

#define MG_VOCAB 27
#define MG_BOS 26
#define MG_E 16        /* n_embd */
#define MG_HEADS 4
#define MG_HEAD_DIM 4
#define MG_HID 64      /* MLP hidden */
#define MG_CTX 16      /* block size */
#define MG_NPARAM 4192

/* offsets in the C flat order: wte, wpe, wq, wk, wv, wo, fc1, fc2, lm_head */
#define OFF_WTE 0
#define OFF_WPE 432
#define OFF_WQ 688
#define OFF_WK 944
#define OFF_WV 1200
#define OFF_WO 1456
#define OFF_FC1 1712
#define OFF_FC2 2736
#define OFF_LM 3760

/* multiply-adds of one token at position pos: the matvecs (qkv 768, wo 256, fc1 1024,
 * fc2 1024, lm_head 432) and attention (scores and values: 2 * 16 * (pos + 1)) */
#define MG_MACS_FIXED 3504
#define MG_MACS_PER_POS 32

/* the CPU kernels' error codes (negative return values) */
#define MG_ERR_NULL (-1)     /* a NULL pointer where one is needed */
#define MG_ERR_ARG (-2)      /* a count or size out of range */
#define MG_ERR_TOKEN (-3)    /* a token id outside 0..26 */
#define MG_ERR_SEED (-4)     /* xorshift32 seed 0 */
#define MG_ERR_NOMEM (-5)
#define MG_ERR_THREAD (-6)
#define MG_ERR_UNIFORM (-7)  /* a python-sampler draw outside [0, 1) */

/* ------------------------------------------------- the canonical float constants
 * of mg_common.h's reference order, shared with the freestanding wasm kernel */
#define MG_EPS 1e-5f
#define MG_EXP_MAGIC 12582912.0f   /* 1.5 * 2^23: adding it rounds to an integer */
#define MG_EXP_LO (-126.0f)
#define MG_LOG2E 1.44269504088896341f
/* 2^f ~ 1 + f (P1 + f (P2 + ...)), |f| <= 1/2: a degree-5 minimax fit (relative error 1.1e-7) */
#define MG_P1 0.693147063f
#define MG_P2 0.240222424f
#define MG_P3 0.0555065572f
#define MG_P4 0.00967150647f
#define MG_P5 0.00132874330f
/* softmax offsets: exp2(x - o) with o = 0 when every live x lies in [MG_FAST_LO, MG_FAST_HI]
 * (nothing can overflow or lose precision), else o = max x: the max is off the
 * critical path in the common case */
#define MG_FAST_LO (-126.0f)
#define MG_FAST_HI 64.0f
/* the norms: s0 = 1/sqrt(ss/16 + eps); both entry norms at once: S = s0 * s1 =
 * 1/sqrt(ss (1 + eps)/16 + eps^2), exactly, since mean(x1^2) = ms s0^2 */
#define MG_N1 0.0625f
#define MG_N2 0.0625006250f        /* (1 + 1e-5) / 16 */
#define MG_EPS2 1e-10f
#define MG_CQ 0.721347520f         /* 0.5 * log2(e): 1/sqrt(head_dim), in the log2 domain */

/* ---------------------------------------------------------------- randomness
 * xorshift32 and the offline streams' seeds, written once for every kernel (C, CUDA
 * host and device, freestanding wasm): this header needs nothing but stdint.h. */
#include <stdint.h>
#ifdef __CUDACC__
#define MG_RAND_FN __host__ __device__ __forceinline__
#else
#define MG_RAND_FN static inline
#endif

MG_RAND_FN uint32_t mg_xorshift32(uint32_t x)
{
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* samplers.stream_seed: murmur3 fmix32 of base + golden * i; 0 maps to 1 */
MG_RAND_FN uint32_t mg_stream_seed(uint32_t base, uint32_t i)
{
    uint32_t h = base + 0x9E3779B9u * i;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h ? h : 1u;
}

#endif /* MG_MODEL_H */
