/* The vector layer's exp2 over arrays, for tests/test_exp2_variants.py: built once as the
 * avx512 variant and once as avx512-scalef (-DMG_EXP2_SCALEF), whose outputs must agree
 * bit for bit. n: a multiple of VW (16). */
#include "mg_common.h"
#if !defined(MG_AVX512)
#error "the AVX-512 vector path"
#endif

void exp2_nc(const float *x, float *out, long n)
{
    for (long i = 0; i < n; i += VW) _mm512_storeu_ps(out + i, mg_exp2V_nc(_mm512_loadu_ps(x + i)));
}

/* the clamped exp2 (x below -126 gives 2^-126's neighbourhood, as the reference) */
void exp2_clamped(const float *x, float *out, long n)
{
    for (long i = 0; i < n; i += VW) _mm512_storeu_ps(out + i, mg_exp2V(_mm512_loadu_ps(x + i)));
}

/* the attention's form: live lanes by the bits of `live`, the others exact zeros */
void exp2_live(const float *x, float *out, long n, unsigned live)
{
    for (long i = 0; i < n; i += VW)
        _mm512_storeu_ps(out + i, mg_exp2V_live((__mmask16)live, _mm512_loadu_ps(x + i)));
}
