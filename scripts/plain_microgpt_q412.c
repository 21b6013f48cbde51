/* plain_microgpt_q412.c: the Q4.12 yardstick for the tuned kernels, a plain scalar C
 * port of microGPT's generation loop in TALOS-V2's fixed point as a user would write
 * it: int16 weights and activations (value * 4096), int32 accumulators, >> 12 with
 * saturation between layers, the norms and the softmax in float (expf). Straight
 * loops and a KV cache per position, built with the compiler's own best flags
 * (clang -O3 -march=native -ffast-math). Written here from the model's spec; it is
 * not part of the tool, only of scripts/bench_c.py --original.
 *
 *   plain_microgpt_q412 WEIGHTS.f32 N_TOKENS SEED   -> prints "ns_per_token CHECKSUM"
 * WEIGHTS.f32: the 4,192 float32 parameters in the C flat order (wte, wpe, wq, wk,
 * wv, wo, fc1, fc2, lm_head), quantised here; temperature 0.5; xorshift32 draws.
 */
#include "plain_microgpt.h"

static int16_t W[4192];
static const int16_t *wte = W, *wpe = W + 432, *wq = W + 688, *wk = W + 944, *wv = W + 1200, *wo = W + 1456,
                     *fc1 = W + 1712, *fc2 = W + 2736, *lm = W + 3760;

static int16_t sat16(int32_t v) { return (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v); }

static int16_t quant(float v) { return sat16((int32_t)lrintf(v * 4096.0f)); }

static void rmsnorm(int16_t *out, const int16_t *x, int n)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += (float)x[i] * (float)x[i];
    float s = 1.0f / sqrtf(ss / (4096.0f * 4096.0f * n) + 1e-5f);
    for (int i = 0; i < n; i++) out[i] = quant((float)x[i] / 4096.0f * s);
}

static void matvec(int16_t *out, const int16_t *w, const int16_t *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        int32_t acc = 0;
        for (int c = 0; c < cols; c++) acc += (int32_t)w[r * cols + c] * x[c];
        out[r] = sat16(acc >> 12);
    }
}

static int16_t K[CTX][E], V[CTX][E];

static void forward(int tok, int pos, float *logits)
{
    int16_t x[E], xn[E], q[E], att[E], o[E], h[HID], m[E];
    for (int i = 0; i < E; i++) x[i] = sat16(wte[tok * E + i] + wpe[pos * E + i]);
    rmsnorm(x, x, E);
    rmsnorm(xn, x, E);
    matvec(q, wq, xn, E, E);
    matvec(K[pos], wk, xn, E, E);
    matvec(V[pos], wv, xn, E, E);
    for (int hh = 0; hh < HEADS; hh++) {
        float sc[CTX], mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t <= pos; t++) {
            float d = 0.0f;
            for (int j = 0; j < HD; j++) d += (float)q[hh * HD + j] * (float)K[t][hh * HD + j];
            sc[t] = d / (4096.0f * 4096.0f) / sqrtf((float)HD);
            mx = sc[t] > mx ? sc[t] : mx;
        }
        for (int t = 0; t <= pos; t++) sum += (sc[t] = expf(sc[t] - mx));
        for (int j = 0; j < HD; j++) {
            float a = 0.0f;
            for (int t = 0; t <= pos; t++) a += sc[t] / sum * (float)V[t][hh * HD + j];
            att[hh * HD + j] = quant(a / 4096.0f);
        }
    }
    matvec(o, wo, att, E, E);
    for (int i = 0; i < E; i++) x[i] = sat16(x[i] + o[i]);
    rmsnorm(xn, x, E);
    matvec(h, fc1, xn, HID, E);
    for (int i = 0; i < HID; i++) h[i] = h[i] > 0 ? h[i] : 0;
    matvec(m, fc2, h, E, HID);
    for (int i = 0; i < E; i++) x[i] = sat16(x[i] + m[i]);
    for (int v = 0; v < VOCAB; v++) {
        int32_t acc = 0;
        for (int c = 0; c < E; c++) acc += (int32_t)lm[v * E + c] * x[c];
        logits[v] = (float)(acc >> 12) / 4096.0f;
    }
}

static void set_weights(const float *w)
{
    for (int i = 0; i < 4192; i++) W[i] = quant(w[i]);
}
