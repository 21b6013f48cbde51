/* mg_model.h: microGPT's shape, the C flat parameter order, the C kernels' error
 * codes, xorshift32 and the stream seeds, in one place. Included by mg_common.h
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
