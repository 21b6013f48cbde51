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
 *     forwardV(m, st, nb, tok, pos, maxpos, step, z, scale)   one token of nb batches of
 *                                 VW streams (st, tok, pos, maxpos: nb each): their logits
 *                                 * scale, z[b * MG_VOCAB + v]
 *     MG_SOA_NB                   the batches an offline pass runs together (default 1)
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
#ifndef MG_SOA_NB
#define MG_SOA_NB 1
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

/* nb batches together, streams s0 .. s0 + nl - 1 in their lanes (nl <= nb * VW) */
static int64_t offline_batch(const off_job *jb, soa_t *st, int32_t s0, int nl, int nb)
{
    const model_t *m = jb->m;
    VI rng[MG_SOA_NB], tok[MG_SOA_NB], pos[MG_SOA_NB], acc[MG_SOA_NB];
    int maxpos[MG_SOA_NB];
    for (int b = 0; b < nb; b++) {
        memset(&st[b].ring, 0, sizeof st[b].ring);
        int32_t seeds[VW];
        for (int l = 0; l < VW; l++) {
            const int s = b * VW + l;
            seeds[l] = (int32_t)(s < nl ? mg_stream_seed(jb->base_seed, (uint32_t)(s0 + s)) : 1u);
        }
        rng[b] = vi_load(seeds), tok[b] = vi_set1(MG_BOS), pos[b] = vi_set1(0), acc[b] = vi_set1(0);
        maxpos[b] = 0;
    }
    int64_t sum = 0;
    VF z[MG_SOA_NB * MG_VOCAB];
    for (int64_t i = 0; i < jb->tps; i++) {
        forwardV(m, st, nb, tok, pos, maxpos, (int)(i & 15), z, m->cz);
        for (int b = 0; b < nb; b++) {
            rng[b] = mg_xorshiftV(rng[b]);
            VI nt;
            MG_REPEAT(MG_PH_SAMPLER) {
                nt = mg_nextV(z + b * MG_VOCAB, mg_r24V(rng[b]), m->greedy);
                MG_REPEAT_KEEP(nt);
            }
            acc[b] = vi_add(acc[b], nt);
            if (jb->out) {
                int32_t t[VW];
                vi_store(t, nt);
                for (int l = 0; l < VW && b * VW + l < nl; l++) jb->out[(int64_t)(s0 + b * VW + l) * jb->tps + i] = t[l];
            }
            VI p = vi_add(pos[b], vi_set1(1));
            VM reset = vm_or(vi_eq(nt, vi_set1(MG_BOS)), vi_eq(p, vi_set1(MG_CTX)));
            pos[b] = vi_sel(reset, vi_set1(0), p);
            tok[b] = vi_sel(reset, vi_set1(MG_BOS), nt);
            maxpos[b] = lanes_max(pos[b]);
        }
        if ((i & 0xFFFF) == 0xFFFF || i == jb->tps - 1) { /* int32 lanes: flush before they can wrap */
            for (int b = 0; b < nb; b++) {
                int32_t a[VW];
                vi_store(a, acc[b]);
                for (int l = 0; l < VW && b * VW + l < nl; l++) sum += a[l];
                acc[b] = vi_set1(0);
            }
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
    soa_t *st = mg_alloc(sizeof(soa_t) * MG_SOA_NB);
    if (!st) {
        jb->err = MG_ERR_NOMEM;
        return NULL;
    }
    const int batch_min = jb->m->batch_min > 0 ? jb->m->batch_min : MG_SOA_MIN_LANES;
    for (int32_t b0 = 0; b0 < jb->count;) {
        /* up to MG_SOA_NB full batches together; a last partial one alone, by the batch policy */
        const int left = jb->count - b0, full = left / VW;
        const int nb = full > MG_SOA_NB ? MG_SOA_NB : full ? full : 1, nl = full ? nb * VW : left;
        jb->sum += nl < batch_min ? offline_single(jb, jb->first + b0, nl) : offline_batch(jb, st, jb->first + b0, nl, nb);
        b0 += nl;
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
            const VI tv = vi_load(tk), pv = vi_set1(p);
            forwardV(m, st, 1, &tv, &pv, &p, p, z, MG_LOGIT_UNIT);
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


/* ------------------------------------------------------------------- server */

/* Continuous batching under a fixed arrival schedule (the server scenario; see server.py).
 *
 * The queue is SHARED: one atomic head index over the arrival-ordered requests, taken by
 * compare-and-swap at each worker's step boundary. That keeps the queue FIFO across
 * threads and no worker idles while another has a backlog; a fixed split (request i to
 * worker i % T) would let one worker's queue grow behind a run of long names while the
 * other sits idle, which is exactly what a p99 bound punishes. The CAS costs ~20 ns per
 * request against ~ms of work per name.
 *
 * Each worker owns n_lanes lanes in blocks of VW (the SoA width). At each step boundary
 * it fills its free lanes with requests whose scheduled arrival has passed, then
 * advances every live lane one token. A request joining a block with at least the batch
 * policy's crossover (batch_min) of live lanes runs in the block's SoA kernel; one joining
 * a sparser block runs its whole name on the single-stream kernel in its own cache (a
 * name never changes kernel half way: the two keep their KV state differently). The
 * tokens are the same either way. A name that ends (BOS, or 16 tokens) frees its lane at
 * once; its latency is its completion time minus its *scheduled* arrival, never its
 * pickup. A worker with no live lane spins (pause) until the next scheduled arrival: the
 * wait is bounded by the schedule, and the call ends when every request is done. */

MG_INLINE void mg_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

#if MG_KERNEL_SOA
#define MG_SERVE_BLOCK VW
#define MG_SERVE_DEFAULT_MIN MG_SOA_MIN_LANES
#else
#define MG_SERVE_BLOCK 1
#define MG_SERVE_DEFAULT_MIN 1
#endif

typedef struct {
    const int64_t *arrival; /* scheduled arrivals in ticks (absolute) */
    const uint32_t *seeds;
    int32_t n;
    int32_t *head;          /* the shared queue's head: next request to hand out */
} serve_queue;

typedef struct {
    int req;                /* request in this lane, -1: free */
    int single;             /* runs on the single-stream kernel */
    int32_t tok, pos, len;
    uint32_t rng;
} serve_lane;

typedef struct {
    const model_t *m;
    serve_queue *q;
    int n_lanes;
    double per_ns;
    int64_t *latency_ns;
    int32_t *tokens;        /* [n][MG_CTX] */
    int64_t steps, lane_steps;
    int err;
} serve_job;

/* the next request whose arrival has passed, or -1 (none yet, or none left) */
static int serve_take(serve_queue *q, int64_t now)
{
    int32_t h = __atomic_load_n(q->head, __ATOMIC_ACQUIRE);
    while (h < q->n && q->arrival[h] <= now)
        if (__atomic_compare_exchange_n(q->head, &h, h + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return h;
    return -1;
}

/* record lane l's new token; frees the lane when its name is done */
static void serve_emit(serve_job *jb, serve_lane *ln, int nt, int *live)
{
    jb->tokens[(int64_t)ln->req * MG_CTX + ln->len] = nt;
    ln->len++;
    ln->pos++;
    ln->tok = nt;
    if (nt == MG_BOS || ln->len == MG_CTX) {
        const int64_t late = (int64_t)mg_ticks() - jb->q->arrival[ln->req];
        jb->latency_ns[ln->req] = (int64_t)((double)late / jb->per_ns);
        ln->req = -1;
        (*live)--;
    }
}

#if MG_KERNEL_SOA
/* one SoA step of the block's batched lanes (the others ride along as BOS at pos 0) */
static void serve_soa_step(serve_job *jb, soa_t *st, serve_lane *ln, int64_t step, int *live)
{
    const model_t *m = jb->m;
    int32_t tk[VW], ps[VW], rg[VW], out[VW];
    int maxpos = 0;
    for (int l = 0; l < VW; l++) {
        const int on = ln[l].req >= 0 && !ln[l].single;
        if (on) ln[l].rng = mg_xorshift32(ln[l].rng);
        tk[l] = on ? ln[l].tok : MG_BOS;
        ps[l] = on ? ln[l].pos : 0;
        rg[l] = on ? (int32_t)ln[l].rng : 1;
        maxpos = ps[l] > maxpos ? ps[l] : maxpos;
    }
    VF z[MG_VOCAB];
    const VI tv = vi_load(tk), pv = vi_load(ps);
    forwardV(m, st, 1, &tv, &pv, &maxpos, (int)(step & 15), z, m->cz);
    vi_store(out, mg_nextV(z, mg_r24V(vi_load(rg)), m->greedy));
    for (int l = 0; l < VW; l++)
        if (ln[l].req >= 0 && !ln[l].single) serve_emit(jb, &ln[l], out[l], live);
}
#endif

/* fill the free lanes; returns how many requests joined */
static int serve_fill(serve_job *jb, serve_lane *ln, cache_t *caches, int *live)
{
    const int batch_min = jb->m->batch_min > 0 ? jb->m->batch_min : MG_SERVE_DEFAULT_MIN;
    int joined = 0;
    for (int b = 0; b < jb->n_lanes; b += MG_SERVE_BLOCK) {
        int in_block = 0, fresh[MG_SERVE_BLOCK], nf = 0;
        for (int l = b; l < b + MG_SERVE_BLOCK; l++) {
            if (ln[l].req < 0) {
                int r = serve_take(jb->q, (int64_t)mg_ticks());
                if (r < 0) continue;
                ln[l] = (serve_lane){r, 0, MG_BOS, 0, 0, jb->q->seeds[r]};
                memset(&caches[l], 0, sizeof(cache_t));
                fresh[nf++] = l;
            }
            in_block++;
        }
        for (int i = 0; i < nf; i++) ln[fresh[i]].single = MG_SERVE_BLOCK == 1 || in_block < batch_min;
        joined += nf;
    }
    *live += joined;
    return joined;
}

/* An idle worker waits for request h's scheduled arrival (or for another worker to take it).
 * Gaps over MG_SERVE_SPIN_NS are slept through, all but their last MG_SERVE_SPIN_NS (sleep
 * overshoots), in slices of at most 1 ms: a thread that spins through long gaps on a shared
 * machine uses up its share and is preempted just when a request arrives, while one that slept
 * is woken promptly. The last stretch spins (pause), for a pickup within ~100 ns. */
#define MG_SERVE_SPIN_NS 150000.0
static void serve_idle(const serve_job *jb, int32_t h)
{
    for (;;) {
        if (__atomic_load_n(jb->q->head, __ATOMIC_ACQUIRE) != h) return;
        const double left_ns = (double)(jb->q->arrival[h] - (int64_t)mg_ticks()) / jb->per_ns;
        if (left_ns <= 0) return;
        if (left_ns > 2 * MG_SERVE_SPIN_NS) {
            double nap = left_ns - MG_SERVE_SPIN_NS;
            struct timespec ts = {0, (long)(nap < 1e6 ? nap : 1e6)};
            nanosleep(&ts, NULL);
        } else {
            mg_cpu_relax();
        }
    }
}

static void *serve_worker(void *arg)
{
    serve_job *jb = arg;
    const model_t *m = jb->m;
    const int mode = m->greedy ? MG_GREEDY : 0;
    serve_lane *ln = mg_alloc(sizeof(serve_lane) * (size_t)jb->n_lanes);
    cache_t *caches = mg_alloc(sizeof(cache_t) * (size_t)jb->n_lanes);
#if MG_KERNEL_SOA
    soa_t *st = mg_alloc(sizeof(soa_t) * (size_t)(jb->n_lanes / VW));
    if (st) memset(st, 0, sizeof(soa_t) * (size_t)(jb->n_lanes / VW));
#else
    void *st = ln; /* no SoA state */
#endif
    if (!ln || !caches || !st) {
        jb->err = MG_ERR_NOMEM;
#if MG_KERNEL_SOA
        free(st);
#endif
        free(ln), free(caches);
        return NULL;
    }
    for (int l = 0; l < jb->n_lanes; l++) ln[l].req = -1;
    int live = 0;
    for (int64_t step = 0;; step++) {
        serve_fill(jb, ln, caches, &live);
        if (live == 0) {
            int32_t h = __atomic_load_n(jb->q->head, __ATOMIC_ACQUIRE);
            if (h >= jb->q->n) break; /* nothing left to take: this worker is done */
            serve_idle(jb, h); /* until the next arrival, or another worker took it */
            step--;
            continue;
        }
        jb->steps++;
        jb->lane_steps += live;
#if MG_KERNEL_SOA
        for (int b = 0; b < jb->n_lanes; b += VW) {
            int batched = 0;
            for (int l = b; l < b + VW; l++) batched += ln[l].req >= 0 && !ln[l].single;
            if (batched) serve_soa_step(jb, (soa_t *)st + b / VW, ln + b, step, &live);
        }
#endif
        for (int l = 0; l < jb->n_lanes; l++) {
            if (ln[l].req < 0 || !ln[l].single) continue;
            ln[l].rng = mg_xorshift32(ln[l].rng);
            int nt = step1(m, &caches[l], ln[l].tok, ln[l].pos, ln[l].len, mode, mg_r24(ln[l].rng), 0.0);
            serve_emit(jb, &ln[l], nt, &live);
        }
    }
    free(ln), free(caches);
#if MG_KERNEL_SOA
    free(st);
#endif
    return NULL;
}

MG_EXPORT int MG_FN(serve)(void *handle, int32_t n, const int64_t *arrival_ns, const uint32_t *seeds,
                           int32_t n_lanes, int32_t n_threads, double ticks_per_ns, int64_t *latency_ns,
                           int32_t *tokens, int64_t *counts)
{
    const model_t *m = handle;
    if (!m || !arrival_ns || !seeds || !latency_ns || !tokens || !counts) return MG_ERR_NULL;
    if (n < 1 || n_threads < 1 || n_threads > 64 || n_lanes < 1 || n_lanes % MG_SERVE_BLOCK || n_lanes > 4096 ||
        !(ticks_per_ns > 0.0))
        return MG_ERR_ARG;
    for (int32_t i = 0; i < n; i++) {
        if (seeds[i] == 0) return MG_ERR_SEED;
        if (arrival_ns[i] < 0 || (i && arrival_ns[i] < arrival_ns[i - 1])) return MG_ERR_ARG;
    }
    int64_t *arrival = mg_alloc(sizeof(int64_t) * (size_t)n);
    if (!arrival) return MG_ERR_NOMEM;
    int32_t head = 0;
    serve_queue q = {arrival, seeds, n, &head};
    serve_job jobs[64];
    /* time 0 of the schedule: the first request arrives now */
    const int64_t t0 = (int64_t)mg_ticks() - (int64_t)((double)arrival_ns[0] * ticks_per_ns);
    for (int32_t i = 0; i < n; i++) arrival[i] = t0 + (int64_t)((double)arrival_ns[i] * ticks_per_ns);
    for (int t = 0; t < n_threads; t++)
        jobs[t] = (serve_job){m, &q, n_lanes, ticks_per_ns, latency_ns, tokens, 0, 0, 0};
    int err = mg_run_threads(serve_worker, jobs, sizeof(serve_job), n_threads);
    counts[0] = counts[1] = 0;
    for (int t = 0; t < n_threads && !err; t++) {
        err = jobs[t].err;
        counts[0] += jobs[t].steps;
        counts[1] += jobs[t].lane_steps;
    }
    free(arrival);
    return err;
}

#endif /* MG_DRIVER_H */
