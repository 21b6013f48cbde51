/* TALOS-V2's FPGA core, bit for bit, in C: the fast twin of talos.py.
 *
 * Same arithmetic as ../talos.py (see its docstrings and talos-rtl-spec.md):
 * Q4.12 int16 values, exact 64-bit sums, floor shifts (>> on signed values is
 * arithmetic with gcc/clang, which is what the RTL does), int16 saturation,
 * exp tables, xorshift32. Every entry point checks its arguments and returns a
 * negative TALOS_E_* code instead of crashing; 0 means success.
 *
 * ROM layout passed to talos_create: the 4,192 int16 words in the C flat order
 * wte[27][16], wpe[16][16], wq, wk, wv, wo [16][16], fc1[64][16], fc2[16][64],
 * lm_head[27][16], each row-major.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TALOS_ABI 2  /* 2: talos_generate takes sample_mode (argmax decoding) */
#include "mg_model.h"

#define VOCAB MG_VOCAB
#define BOS MG_BOS
#define E MG_E
#define H MG_HEADS
#define HD MG_HEAD_DIM
#define HID MG_HID
#define BLOCK MG_CTX      /* positions */
#define N_ROM MG_NPARAM
#define MAGIC 0x7A105E40u

enum {
    TALOS_OK = 0,
    TALOS_E_NULL = -1,    /* a required pointer is NULL */
    TALOS_E_SIZE = -2,    /* ROM word count is not 4,192 */
    TALOS_E_TOKEN = -3,   /* token outside 0..26 */
    TALOS_E_POS = -4,     /* position outside 0..15 (undefined in the RTL) */
    TALOS_E_TEMP = -5,    /* Q8.8 temperature outside 0..65535 */
    TALOS_E_FLAG = -6,    /* clear / sample_mode not 0 or 1 */
    TALOS_E_COUNT = -7,   /* a count is negative or out of range */
    TALOS_E_HANDLE = -8,  /* not a live handle from talos_create */
    TALOS_E_NOMEM = -9,
};

static const int32_t EXP_LUT[32] = {
    4096, 3189, 2484, 1935, 1507, 1174, 914, 712, 555, 432, 337, 262, 204, 159, 124, 97,
    75, 59, 46, 36, 28, 22, 17, 13, 10, 8, 6, 5, 4, 3, 2, 1};

typedef struct {
    uint32_t magic;
    int32_t wte[VOCAB][E], wpe[BLOCK][E];
    int32_t wq[E][E], wk[E][E], wv[E][E], wo[E][E];
    int32_t fc1[HID][E], fc2[E][HID], lm[VOCAB][E];
    int32_t kc[BLOCK][E], vc[BLOCK][E];
} Core;

/* -------------------------------------------------------------- primitives */

static inline int32_t sat16(int64_t v) {
    return v < -32768 ? -32768 : v > 32767 ? 32767 : (int32_t)v;
}

static inline int32_t lut(uint32_t i) { return i < 32 ? EXP_LUT[i] : 1; }

/* out[r] = sat16(floor(sum_c W[r][c]*in[c] / 4096)): exact sum, one floor shift */
static void matvec(const int32_t *w, const int32_t *in, int32_t *out, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        int64_t acc = 0;
        for (int c = 0; c < cols; c++) acc += (int64_t)w[r * cols + c] * in[c];
        out[r] = sat16(acc >> 12);
    }
}

static uint32_t isqrt64(uint64_t n) { /* floor(sqrt(n)), exact like the RTL's restoring sqrt */
    uint64_t root = 0, bit = (uint64_t)1 << 62;
    while (bit > n) bit >>= 2;
    while (bit) {
        if (n >= root + bit) { n -= root + bit; root = (root >> 1) + bit; }
        else root >>= 1;
        bit >>= 2;
    }
    return (uint32_t)root;
}

/* y = x * (4096/rms(x)) in Q12; returns 1 when the RTL takes its 25-cycle shortcut */
static int rmsnorm(const int32_t *x, int32_t *y) {
    int64_t sumsq = 0;
    for (int i = 0; i < E; i++) sumsq += ((int64_t)x[i] * x[i]) >> 12;  /* floor each square */
    int64_t ms = (sumsq >> 4) + 1;                                       /* +1: the epsilon */
    uint32_t denom = isqrt64((uint64_t)ms << 12);
    int shortcut = denom <= 512;
    int64_t scale = shortcut ? 32767 : ((int64_t)1 << 24) / denom;
    if (scale > 32767) scale = 32767;
    for (int i = 0; i < E; i++) y[i] = sat16(((int64_t)x[i] * scale) >> 12);
    return shortcut;
}

static inline int32_t exp_attn(int64_t d) { /* d <= 0, |d| in 0.25 steps, 6-bit index */
    return d >= 0 ? 4096 : lut((uint32_t)(((-d) + 511) >> 10) & 63);
}

static inline uint32_t xorshift32(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* ---------------------------------------------------------------- sampler */

static inline int64_t temper(int64_t d, int32_t tq) { /* only 4 behaviours: T = .5, 1, 2, 4 */
    if (tq <= 128) return 2 * d;
    if (tq <= 256) return d;
    if (tq <= 512) return d >> 1;
    return d >> 2;
}

/* The interpolated exp table with its 8-bit index wrap and u32 wrap (spec ambiguity A2). */
static inline uint32_t sampler_weight(int64_t d) {
    if (d >= 0) return 4096;
    uint32_t f = (uint32_t)(((-d) + 127) >> 8) & 0xFF;
    uint32_t c = f >> 2, r = f & 3;
    uint32_t w0 = (uint32_t)lut(c), w1 = (uint32_t)lut((c + 1) & 63);
    uint32_t w = w0 - (((w0 - w1) * r) >> 2);
    return w ? w : 1;
}

static int argmax27(const int32_t *logits) {
    int best = 0;
    for (int v = 1; v < VOCAB; v++)
        if (logits[v] > logits[best]) best = v; /* strict: the lowest index wins ties */
    return best;
}

static int sample(const int32_t *logits, uint32_t rng_out, int32_t tq, int best) {
    uint32_t w[VOCAB], total = 0;
    for (int v = 0; v < VOCAB; v++) {
        w[v] = sampler_weight(temper((int64_t)logits[v] - logits[best], tq));
        total += w[v];
    }
    if (total == 0) total = 1;
    uint32_t mixed = rng_out * 0x149FBu;
    uint32_t cut = (uint32_t)(((uint64_t)(mixed >> 8) * total) >> 24);
    uint32_t running = 0;
    for (int v = 0; v < VOCAB; v++) {
        running += w[v];  /* the RTL compares wrapped u32 running sums */
        if (running > cut) return v;
    }
    return best;
}

/* ------------------------------------------------------------ one core step */

static void attention(Core *k, const int32_t *q, int pos, int32_t *xa) {
    for (int h = 0; h < H; h++) {
        int32_t score[BLOCK], w[BLOCK], top = -32768;
        for (int t = 0; t <= pos; t++) {
            int64_t dot = 0;
            for (int j = h * HD; j < (h + 1) * HD; j++) dot += (int64_t)q[j] * k->kc[t][j];
            score[t] = sat16(dot >> 13); /* /4096 then /2 (1/sqrt(head_dim)), floored */
            if (score[t] > top) top = score[t];
        }
        int64_t total = 0;
        for (int t = 0; t <= pos; t++) total += w[t] = exp_attn((int64_t)score[t] - top);
        if (total == 0) total = 1;
        for (int j = h * HD; j < (h + 1) * HD; j++) {
            int64_t num = 0;
            for (int t = 0; t <= pos; t++) num += (int64_t)w[t] * k->vc[t][j];
            int64_t quo = (num < 0 ? -num : num) / total;  /* truncating divide */
            xa[j] = sat16(num < 0 ? -quo : quo);
        }
    }
}

/* The forward pass at (token, pos): fills logits, returns the number of RMS shortcuts. */
static int forward(Core *k, int token, int pos, int32_t *logits) {
    int32_t x[E], resid[E], n[E], q[E], xa[E], o[E], hid[HID];
    int shortcuts = 0;
    for (int i = 0; i < E; i++) x[i] = sat16((int64_t)k->wte[token][i] + k->wpe[pos][i]);
    shortcuts += rmsnorm(x, resid);
    shortcuts += rmsnorm(resid, n);  /* the model's second norm */
    matvec(&k->wq[0][0], n, q, E, E);
    matvec(&k->wk[0][0], n, k->kc[pos], E, E);
    matvec(&k->wv[0][0], n, k->vc[pos], E, E);
    attention(k, q, pos, xa);
    matvec(&k->wo[0][0], xa, o, E, E);
    for (int i = 0; i < E; i++) x[i] = sat16((int64_t)o[i] + resid[i]);
    shortcuts += rmsnorm(x, n);
    matvec(&k->fc1[0][0], n, hid, HID, E);
    for (int i = 0; i < HID; i++) if (hid[i] < 0) hid[i] = 0;  /* relu after saturation */
    matvec(&k->fc2[0][0], hid, o, E, HID);
    for (int i = 0; i < E; i++) x[i] = sat16((int64_t)o[i] + x[i]);
    matvec(&k->lm[0][0], x, logits, VOCAB, E);
    return shortcuts;
}

static inline int32_t step_cycles(int pos, int sample_mode, int shortcuts) {
    return (sample_mode ? 866 : 752) + 20 * pos - 25 * shortcuts;
}

/* ------------------------------------------------------------ exported API */

int talos_abi(void) { return TALOS_ABI; }

const char *talos_strerror(int code) {
    switch (code) {
    case TALOS_OK: return "ok";
    case TALOS_E_NULL: return "a required pointer is NULL";
    case TALOS_E_SIZE: return "the ROM must hold 4192 int16 words";
    case TALOS_E_TOKEN: return "token outside 0..26";
    case TALOS_E_POS: return "position outside 0..15";
    case TALOS_E_TEMP: return "Q8.8 temperature outside 0..65535";
    case TALOS_E_FLAG: return "clear and sample_mode must be 0 or 1";
    case TALOS_E_COUNT: return "count negative or out of range";
    case TALOS_E_HANDLE: return "not a live handle from talos_create";
    case TALOS_E_NOMEM: return "out of memory";
    default: return "unknown error";
    }
}

static int check_handle(const void *h) {
    if (!h) return TALOS_E_NULL;
    return ((const Core *)h)->magic == MAGIC ? TALOS_OK : TALOS_E_HANDLE;
}

int talos_create(const int16_t *rom, int32_t n_words, void **out) {
    if (!rom || !out) return TALOS_E_NULL;
    *out = NULL;
    if (n_words != N_ROM) return TALOS_E_SIZE;
    Core *k = calloc(1, sizeof *k);
    if (!k) return TALOS_E_NOMEM;
    int32_t *dst[] = {&k->wte[0][0], &k->wpe[0][0], &k->wq[0][0], &k->wk[0][0], &k->wv[0][0],
                      &k->wo[0][0], &k->fc1[0][0], &k->fc2[0][0], &k->lm[0][0]};
    const int sizes[] = {VOCAB * E, BLOCK * E, E * E, E * E, E * E, E * E, HID * E, E * HID, VOCAB * E};
    const int16_t *src = rom;
    for (int t = 0; t < 9; t++)
        for (int i = 0; i < sizes[t]; i++) dst[t][i] = *src++;
    k->magic = MAGIC;
    *out = k;
    return TALOS_OK;
}

int talos_destroy(void *h) {
    int err = check_handle(h);
    if (err) return err;
    ((Core *)h)->magic = 0; /* best effort against a second destroy */
    free(h);
    return TALOS_OK;
}

/* One start..done of the core (spec section 3). out4 = {token_out, argmax, top, cycles}. */
int talos_step(void *h, int32_t token, int32_t pos, uint32_t rng_in, int32_t clear, int32_t tq,
               int32_t sample_mode, int32_t *out4, uint32_t *rng_out, int32_t *logits27) {
    int err = check_handle(h);
    if (err) return err;
    if (!out4 || !rng_out || !logits27) return TALOS_E_NULL;
    if (token < 0 || token >= VOCAB) return TALOS_E_TOKEN;
    if (pos < 0 || pos >= BLOCK) return TALOS_E_POS;
    if (tq < 0 || tq > 0xFFFF) return TALOS_E_TEMP;
    if ((clear != 0 && clear != 1) || (sample_mode != 0 && sample_mode != 1)) return TALOS_E_FLAG;
    Core *k = h;
    uint32_t rng = sample_mode ? xorshift32(rng_in) : rng_in;
    if (clear) { memset(k->kc, 0, sizeof k->kc); memset(k->vc, 0, sizeof k->vc); }
    int shortcuts = forward(k, token, pos, logits27);
    int best = argmax27(logits27);
    out4[0] = sample_mode ? sample(logits27, rng, tq, best) : best;
    out4[1] = best;
    out4[2] = logits27[best];
    out4[3] = step_cycles(pos, sample_mode, shortcuts);
    *rng_out = rng;
    return TALOS_OK;
}

/* Logits (n x 27, row-major) of tokens fed at positions 0..n-1 from a cleared cache. */
int talos_logits(void *h, const int32_t *tokens, int32_t n, int32_t *logits_out) {
    int err = check_handle(h);
    if (err) return err;
    if (!tokens || !logits_out) return TALOS_E_NULL;
    if (n < 1 || n > BLOCK) return TALOS_E_COUNT;
    for (int p = 0; p < n; p++)
        if (tokens[p] < 0 || tokens[p] >= VOCAB) return TALOS_E_TOKEN;
    Core *k = h;
    memset(k->kc, 0, sizeof k->kc);
    memset(k->vc, 0, sizeof k->vc);
    for (int p = 0; p < n; p++) forward(k, tokens[p], p, logits_out + p * VOCAB);
    return TALOS_OK;
}

/* The benchmark loop (see talos.generate_stream): n_tokens tokens from seed (sampled, or
 * the argmax with sample_mode = 0, as the core's own input selects), each name
 * restarting at BOS/pos 0 with the RNG carried on. tokens_out may be NULL
 * (the timed run). stats4 = {checksum (sum of the tokens), board cycles (sum of
 * L(p) + 2), number of BOS tokens, final RNG state}. */
int talos_generate(void *h, int64_t n_tokens, uint32_t seed, int32_t tq, int32_t sample_mode,
                   int32_t *tokens_out, uint64_t *stats4) {
    int err = check_handle(h);
    if (err) return err;
    if (!stats4) return TALOS_E_NULL;
    if (n_tokens < 0) return TALOS_E_COUNT;
    if (tq < 0 || tq > 0xFFFF) return TALOS_E_TEMP;
    if (sample_mode != 0 && sample_mode != 1) return TALOS_E_FLAG;
    Core *k = h;
    int32_t logits[VOCAB];
    uint32_t rng = seed;
    uint64_t sum = 0, cycles = 0, bos = 0;
    int token = BOS, pos = 0;
    /* No cache clear at pos 0: only t <= pos is ever read, so it is cosmetic (spec step 0). */
    for (int64_t i = 0; i < n_tokens; i++) {
        if (sample_mode) rng = xorshift32(rng);
        int shortcuts = forward(k, token, pos, logits);
        int best = argmax27(logits);
        token = sample_mode ? sample(logits, rng, tq, best) : best;
        if (tokens_out) tokens_out[i] = token;
        sum += (uint64_t)token;
        cycles += (uint64_t)step_cycles(pos, sample_mode, shortcuts) + 2;
        if (token == BOS) bos++;
        if (token == BOS || ++pos == BLOCK) { token = BOS; pos = 0; }
    }
    stats4[0] = sum;
    stats4[1] = cycles;
    stats4[2] = bos;
    stats4[3] = rng;
    return TALOS_OK;
}
