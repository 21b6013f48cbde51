/* mg_driver.h: the one driver of the CPU kernels, included at the end of mg_fp32.c and
 * mg_q412.c. It owns everything that is not arithmetic: the argument checks, the
 * generation loop (reset rule, samplers, greedy, timestamps), the offline streams'
 * seeding, the split of streams over threads and the structure-of-arrays batching.
 *
 * The including file defines its arithmetic as hooks:
 *   MG_PREFIX                     the entry points' prefix (mg_fp32, mg_q412)
 *   model_t (with cz, greedy)     the prepared weights; cache_t the single-stream KV ring
 *   logits1(m, c, tok, pos, step, out)            one token's logits (the gate)
 *   step1(m, c, tok, pos, step, mode, r, u)       one token's forward pass and draw
 *   MG_KERNEL_SOA                 1 when it has a vector-across-streams forward pass:
 *     soa_t                       its per-batch state (mg_ringV ring first)
 *     forwardV(m, st, tok, pos, maxpos, step, z, scale)   VW streams' logits * scale
 *     MG_LOGIT_UNIT               the scale at which z holds the logits themselves
 *     MG_SOA_MIN_LANES            the default batch policy: fewer live streams than this
 *                                 in a batch run one by one on the single-stream kernel
 *                                 (model_t.batch_min, set by the autotuner, overrides it)
 */
#ifndef MG_DRIVER_H
#define MG_DRIVER_H

#ifndef MG_KERNEL_SOA
#define MG_KERNEL_SOA 0
#endif

#define MG_CAT_(a, b) a##_##b
#define MG_CAT(a, b) MG_CAT_(a, b)
#define MG_FN(name) MG_CAT(MG_PREFIX, name)

/* ------------------------------------------------------------ single stream */

MG_EXPORT int MG_FN(logits)(void *handle, const int32_t *tokens, int n, float *out)
{
    const model_t *m = handle;
    if (!m || !tokens || !out) return MG_ERR_NULL;
    if (n < 1 || n > MG_CTX) return MG_ERR_ARG;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= MG_VOCAB) return MG_ERR_TOKEN;
    cache_t c;
    memset(&c, 0, sizeof c);
    for (int p = 0; p < n; p++) logits1(m, &c, tokens[p], p, p, out + p * MG_VOCAB);
    return 0;
}

/* The generation loop. python != 0: draw i is uniforms[i]; stamps: a timestamp after
 * each token (ticks since just before token 0), else NULL (the timed window). */
MG_INLINE int64_t gen1(const model_t *m, int64_t n, uint32_t x, const double *uniforms, int32_t *out, int python,
                       uint64_t *stamps)
{
    cache_t c;
    memset(&c, 0, sizeof c);
    int tok = MG_BOS, pos = 0;
    const int mode = m->greedy ? MG_GREEDY : python;
    int64_t sum = 0;
    const uint64_t t0 = stamps ? mg_ticks() : 0;
    for (int64_t i = 0; i < n; i++) {
        float r = 0.0f;
        double u = 0.0;
        if (python) {
            u = uniforms[i];
        } else {
            x = mg_xorshift32(x);
            r = mg_r24(x);
        }
        int nt = step1(m, &c, tok, pos, (int)(i & 15), mode, r, u);
        if (out) out[i] = nt;
        if (stamps) stamps[i] = mg_ticks();
        sum += nt;
        pos++;
        int reset = (nt == MG_BOS) | (pos == MG_CTX);
        pos = reset ? 0 : pos;
        tok = reset ? MG_BOS : nt;
    }
    if (stamps)
        for (int64_t i = 0; i < n; i++) stamps[i] -= t0;
    return sum;
}
static int64_t gen1_xs(const model_t *m, int64_t n, uint32_t seed, int32_t *out) { return gen1(m, n, seed, NULL, out, 0, NULL); }
static int64_t gen1_py(const model_t *m, int64_t n, const double *u, int32_t *out) { return gen1(m, n, 0, u, out, 1, NULL); }

MG_EXPORT int64_t MG_FN(generate)(void *handle, int64_t n_tokens, uint32_t seed, const double *uniforms, int32_t *out)
{
    const model_t *m = handle;
    if (!m) return MG_ERR_NULL;
    if (n_tokens < 1) return MG_ERR_ARG;
    if (uniforms) {
        for (int64_t i = 0; i < n_tokens; i++)
            if (!(uniforms[i] >= 0.0 && uniforms[i] < 1.0)) return MG_ERR_UNIFORM;
        return gen1_py(m, n_tokens, uniforms, out);
    }
    if (seed == 0) return MG_ERR_SEED;
    return gen1_xs(m, n_tokens, seed, out);
}

/* the timed loop with a timestamp after each token */
MG_EXPORT int64_t MG_FN(generate_stamped)(void *handle, int64_t n_tokens, uint32_t seed, int32_t *out, uint64_t *stamps)
{
    const model_t *m = handle;
    if (!m || !out || !stamps) return MG_ERR_NULL;
    if (n_tokens < 1) return MG_ERR_ARG;
    if (seed == 0) return MG_ERR_SEED;
    return gen1(m, n_tokens, seed, NULL, out, 0, stamps);
}
MG_EXPORT const char *MG_FN(timer_source)(void) { return MG_TIMER_SOURCE; }
MG_EXPORT void MG_FN(timer_calibrate)(double *out) { mg_timer_calibrate(out); }

/* ------------------------------------------------------------------ offline */

typedef struct {
    const model_t *m;
    int32_t first, count; /* streams [first, first + count) */
    int64_t tps;
    uint32_t base_seed;
    int32_t *out; /* all streams' tokens or NULL */
    int64_t sum;
    int err;
} off_job;

/* streams [first, first + count) one at a time on the single-stream kernel */
static int64_t offline_single(const off_job *jb, int32_t first, int32_t count)
{
    int64_t sum = 0;
    for (int32_t s = first; s < first + count; s++) {
        uint32_t seed = mg_stream_seed(jb->base_seed, (uint32_t)s);
        sum += gen1_xs(jb->m, jb->tps, seed, jb->out ? jb->out + (int64_t)s * jb->tps : NULL);
    }
    return sum;
}

#if MG_KERNEL_SOA
MG_INLINE int lanes_max(VI v)
{
    int32_t a[VW];
    vi_store(a, v);
    int mx = a[0];
    for (int i = 1; i < VW; i++) mx = a[i] > mx ? a[i] : mx;
    return mx;
}

/* nl <= VW streams from s0 in the lanes of one batch */
static int64_t offline_batch(const off_job *jb, soa_t *st, int32_t s0, int nl)
{
    const model_t *m = jb->m;
    memset(&st->ring, 0, sizeof st->ring);
    int32_t seeds[VW];
    for (int l = 0; l < VW; l++) seeds[l] = (int32_t)(l < nl ? mg_stream_seed(jb->base_seed, (uint32_t)(s0 + l)) : 1u);
    VI rng = vi_load(seeds), tok = vi_set1(MG_BOS), pos = vi_set1(0), acc = vi_set1(0);
    int64_t sum = 0;
    int maxpos = 0;
    VF z[MG_VOCAB];
    for (int64_t i = 0; i < jb->tps; i++) {
        forwardV(m, st, tok, pos, maxpos, (int)(i & 15), z, m->cz);
        rng = mg_xorshiftV(rng);
        VI nt = mg_nextV(z, mg_r24V(rng), m->greedy);
        acc = vi_add(acc, nt);
        if (jb->out) {
            int32_t t[VW];
            vi_store(t, nt);
            for (int l = 0; l < nl; l++) jb->out[(int64_t)(s0 + l) * jb->tps + i] = t[l];
        }
        pos = vi_add(pos, vi_set1(1));
        VM reset = vm_or(vi_eq(nt, vi_set1(MG_BOS)), vi_eq(pos, vi_set1(MG_CTX)));
        pos = vi_sel(reset, vi_set1(0), pos);
        tok = vi_sel(reset, vi_set1(MG_BOS), nt);
        maxpos = lanes_max(pos);
        if ((i & 0xFFFF) == 0xFFFF || i == jb->tps - 1) { /* int32 lanes: flush before they can wrap */
            int32_t a[VW];
            vi_store(a, acc);
            for (int l = 0; l < nl; l++) sum += a[l];
            acc = vi_set1(0);
        }
    }
    return sum;
}
#endif

static void *offline_worker(void *arg)
{
    off_job *jb = arg;
    jb->sum = 0;
#if MG_KERNEL_SOA
    soa_t *st = mg_alloc(sizeof(soa_t));
    if (!st) {
        jb->err = MG_ERR_NOMEM;
        return NULL;
    }
    const int batch_min = jb->m->batch_min > 0 ? jb->m->batch_min : MG_SOA_MIN_LANES;
    for (int32_t b0 = 0; b0 < jb->count; b0 += VW) {
        const int nl = jb->count - b0 < VW ? jb->count - b0 : VW;
        jb->sum += nl < batch_min ? offline_single(jb, jb->first + b0, nl) : offline_batch(jb, st, jb->first + b0, nl);
    }
    free(st);
#else
    jb->sum = offline_single(jb, jb->first, jb->count);
#endif
    return NULL;
}

/* streams per vector batch (1: no batching), and the batch policy: a batch with fewer
 * than n live streams runs them one by one on the single-stream kernel (n <= 0: the
 * kernel's default); tokens are the same either way */
MG_EXPORT int MG_FN(batch_lanes)(void)
{
#if MG_KERNEL_SOA
    return VW;
#else
    return 1;
#endif
}
MG_EXPORT int MG_FN(set_batch_min)(void *handle, int n)
{
    model_t *m = handle;
    if (!m) return MG_ERR_NULL;
    if (n > 64) return MG_ERR_ARG;
    m->batch_min = n;
    return 0;
}

/* split the streams evenly over the threads, run offline_worker on each share, sum the checksums */
MG_EXPORT int64_t MG_FN(generate_offline)(void *handle, int32_t n_streams, int64_t tps, uint32_t base_seed,
                                          int32_t n_threads, int32_t *out)
{
    const model_t *m = handle;
    if (!m) return MG_ERR_NULL;
    if (n_streams < 1 || tps < 1 || n_threads < 1 || n_threads > 64) return MG_ERR_ARG;
    int nt = n_threads < n_streams ? n_threads : n_streams;
    off_job jobs[64];
    for (int t = 0; t < nt; t++) {
        int32_t a = (int32_t)((int64_t)n_streams * t / nt), b = (int32_t)((int64_t)n_streams * (t + 1) / nt);
        jobs[t] = (off_job){m, a, b - a, tps, base_seed, out, 0, 0};
    }
    int err = mg_run_threads(offline_worker, jobs, sizeof(off_job), nt);
    if (err) return err;
    int64_t sum = 0;
    for (int t = 0; t < nt; t++) {
        if (jobs[t].err) return jobs[t].err;
        sum += jobs[t].sum;
    }
    return sum;
}

/* argument checks of the *_logits_offline entry points: 0 or an MG_ERR_* code */
static int mg_check_offline_probe(int32_t n_streams, const int32_t *tokens, const int32_t *lengths, const float *out)
{
    if (!tokens || !lengths || !out) return MG_ERR_NULL;
    if (n_streams < 1) return MG_ERR_ARG;
    for (int32_t s = 0; s < n_streams; s++) {
        if (lengths[s] < 1 || lengths[s] > MG_CTX) return MG_ERR_ARG;
        for (int p = 0; p < lengths[s]; p++)
            if (tokens[s * 16 + p] < 0 || tokens[s * 16 + p] >= MG_VOCAB) return MG_ERR_TOKEN;
    }
    return 0;
}


/* logits of several sequences run as parallel streams: the offline kernels' gate */
MG_EXPORT int MG_FN(logits_offline)(void *handle, int32_t n_streams, const int32_t *tokens, const int32_t *lengths,
                                    float *out)
{
    const model_t *m = handle;
    if (!m) return MG_ERR_NULL;
    int bad = mg_check_offline_probe(n_streams, tokens, lengths, out);
    if (bad) return bad;
#if MG_KERNEL_SOA
    soa_t *st = mg_alloc(sizeof(soa_t));
    if (!st) return MG_ERR_NOMEM;
    for (int32_t b0 = 0; b0 < n_streams; b0 += VW) {
        const int nl = n_streams - b0 < VW ? n_streams - b0 : VW;
        memset(&st->ring, 0, sizeof st->ring);
        int maxlen = 0;
        for (int l = 0; l < nl; l++) maxlen = lengths[b0 + l] > maxlen ? lengths[b0 + l] : maxlen;
        for (int p = 0; p < maxlen; p++) {
            int32_t tk[VW];
            for (int l = 0; l < VW; l++) tk[l] = (l < nl && p < lengths[b0 + l]) ? tokens[(b0 + l) * 16 + p] : MG_BOS;
            VF z[MG_VOCAB];
            forwardV(m, st, vi_load(tk), vi_set1(p), p, p, z, MG_LOGIT_UNIT);
            for (int v = 0; v < MG_VOCAB; v++) {
                MG_ALIGN float lane[VW];
                vf_store(lane, z[v]);
                for (int l = 0; l < nl; l++)
                    if (p < lengths[b0 + l]) out[((int64_t)(b0 + l) * 16 + p) * MG_VOCAB + v] = lane[l];
            }
        }
    }
    free(st);
#else
    for (int32_t s = 0; s < n_streams; s++) {
        int rc = MG_FN(logits)(handle, tokens + s * 16, lengths[s], out + (int64_t)s * 16 * MG_VOCAB);
        if (rc) return rc;
    }
#endif
    return 0;
}

#endif /* MG_DRIVER_H */
