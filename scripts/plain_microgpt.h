/* plain_microgpt.h: what the two plain ports (plain_microgpt.c, fp32, and
 * plain_microgpt_q412.c, Q4.12) share: the shape, the xorshift32 draws, the
 * temperature sampler with expf, and the timed generation loop. The including file
 * defines set_weights (the 4,192 float32 parameters in the C flat order) and forward
 * (one token's logits). Not part of the tool, only of scripts/bench_c.py --original. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define VOCAB 27
#define BOS 26
#define E 16
#define HEADS 4
#define HD 4
#define HID 64
#define CTX 16

static void set_weights(const float *w);
static void forward(int tok, int pos, float *logits);

static uint32_t rng;
static float uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (float)(rng >> 8) / 16777216.0f;
}

static int sample(const float *logits, float temperature)
{
    float p[VOCAB], mx = -INFINITY, sum = 0.0f;
    for (int v = 0; v < VOCAB; v++) mx = logits[v] > mx ? logits[v] : mx;
    for (int v = 0; v < VOCAB; v++) sum += (p[v] = expf((logits[v] - mx) / temperature));
    float r = uniform() * sum, c = 0.0f;
    for (int v = 0; v < VOCAB - 1; v++)
        if (r < (c += p[v])) return v;
    return VOCAB - 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s WEIGHTS.f32 N_TOKENS SEED\n", argv[0]);
        return 2;
    }
    static float wf[4192];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(wf, sizeof(float), 4192, f) != 4192) {
        fprintf(stderr, "cannot read 4192 float32 weights from %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    set_weights(wf);
    long n = atol(argv[2]);
    rng = (uint32_t)strtoul(argv[3], NULL, 10);
    if (n < 1 || rng == 0) return 2;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long sum = 0;
    int tok = BOS, pos = 0;
    float logits[VOCAB];
    for (long i = 0; i < n; i++) {
        forward(tok, pos, logits);
        int nt = sample(logits, 0.5f);
        sum += nt;
        pos++;
        if (nt == BOS || pos == CTX) {
            tok = BOS;
            pos = 0;
        } else {
            tok = nt;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%.3f %ld\n", ns / (double)n, sum);
    return 0;
}
