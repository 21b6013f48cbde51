/* plain_microgpt.c: the yardstick for the tuned kernels, a plain scalar C port of
 * microGPT's generation loop as a user would write it (straight loops, expf, a
 * KV cache per position), built with the compiler's own best flags
 * (clang -O3 -march=native -ffast-math). Written here from the model's spec; it is
 * not part of the tool, only of scripts/bench_c.py --original.
 *
 *   plain_microgpt WEIGHTS.f32 N_TOKENS SEED   -> prints "ns_per_token CHECKSUM"
 * WEIGHTS.f32: the 4,192 float32 parameters in the C flat order (wte, wpe, wq, wk,
 * wv, wo, fc1, fc2, lm_head); temperature 0.5; xorshift32 draws.
 */
#include "plain_microgpt.h"
#include <string.h>

static float W[4192];
static const float *wte = W, *wpe = W + 432, *wq = W + 688, *wk = W + 944, *wv = W + 1200, *wo = W + 1456,
                   *fc1 = W + 1712, *fc2 = W + 2736, *lm = W + 3760;

static void rmsnorm(float *out, const float *x, int n)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float s = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int i = 0; i < n; i++) out[i] = x[i] * s;
}

static void matvec(float *out, const float *w, const float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float acc = 0.0f;
        for (int c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
        out[r] = acc;
    }
}

static float K[CTX][E], V[CTX][E];

static void forward(int tok, int pos, float *logits)
{
    float x[E], xn[E], q[E], att[E], o[E], h[HID], m[E];
    for (int i = 0; i < E; i++) x[i] = wte[tok * E + i] + wpe[pos * E + i];
    rmsnorm(x, x, E);
    rmsnorm(xn, x, E);
    matvec(q, wq, xn, E, E);
    matvec(K[pos], wk, xn, E, E);
    matvec(V[pos], wv, xn, E, E);
    for (int hh = 0; hh < HEADS; hh++) {
        float sc[CTX], mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            float d = 0.0f;
            for (int j = 0; j < HD; j++) d += q[hh * HD + j] * K[t][hh * HD + j];
            sc[t] = d / sqrtf((float)HD);
            mx = sc[t] > mx ? sc[t] : mx;
        }
        for (int t = 0; t <= pos; t++) sum += (sc[t] = expf(sc[t] - mx));
        for (int j = 0; j < HD; j++) {
            float a = 0.0f;
            for (int t = 0; t <= pos; t++) a += sc[t] / sum * V[t][hh * HD + j];
            att[hh * HD + j] = a;
        }
    }
    matvec(o, wo, att, E, E);
    for (int i = 0; i < E; i++) x[i] += o[i];
    rmsnorm(xn, x, E);
    matvec(h, fc1, xn, HID, E);
    for (int i = 0; i < HID; i++) h[i] = h[i] > 0.0f ? h[i] : 0.0f;
    matvec(m, fc2, h, E, HID);
    for (int i = 0; i < E; i++) x[i] += m[i];
    matvec(logits, lm, x, VOCAB, E);
}

static void set_weights(const float *w) { memcpy(W, w, sizeof W); }
