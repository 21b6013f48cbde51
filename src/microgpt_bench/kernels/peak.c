/* peak.c: this machine's measured peak, printed as one JSON object.
 *
 * Run as its own process (peaks.py), never loaded into the tool: a probe that dies
 * (an instruction the OS has not enabled, a miscompiling or sanitizing compiler)
 * takes only itself down.
 *
 *   clock_ghz             the dependent integer add chain of clock.c (one add a cycle),
 *                         before and after the probes
 *   fp32[width]           fp32 FMA lanes a cycle: 12 independent accumulator chains of
 *                         FMAs at that vector width (enough chains to cover a 4-6 cycle
 *                         FMA latency on two pipes), so throughput, not latency, bounds it
 *   int16[instruction]    int16 multiply-adds a cycle, likewise: vpdpwssd (VNNI), vpmaddwd
 *                         + vpaddd, or NEON smlal
 *   mixed[width]          fp32 vector instructions a cycle when every 2 FMAs come with an
 *                         add (8 FMA and 4 add chains): about the FMA rate alone where adds
 *                         share the FMA pipes (Intel's ports 0 and 5), about 1.5x it where
 *                         they have pipes of their own (Zen 4 and 5). It says whether a
 *                         kernel's non-multiply-add work (the canonical sums' adds, exp2,
 *                         norms) costs FMA slots on this core.
 *
 * `peak-probe clock` prints {"clock_ghz": ...} alone (a row's clock, beside its timing).
 *
 * Each figure is the best of 15 trials of ~3 ms (interruptions only make a trial
 * slower). Compiled without -march: each probe enables its own ISA with a target
 * attribute and runs only when the CPU (and OS) support it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t mg_add_chain(uint64_t iterations); /* clock.c, linked beside */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define MG_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#define CHAINS 12
#define TRIALS 15
#define TRIAL_NS 3000000.0

typedef uint64_t (*probe_fn)(uint64_t iterations); /* returns a sink value */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile uint64_t sink;

/* operations per ns of fn, where one iteration does ops_per_iteration operations */
static double rate(probe_fn fn, double ops_per_iteration)
{
    uint64_t n = 1000;
    double elapsed;
    for (;;) { /* calibrate to ~TRIAL_NS a trial */
        double t0 = now_ns();
        sink += fn(n);
        elapsed = now_ns() - t0;
        if (elapsed > TRIAL_NS / 4) break;
        n *= 4;
    }
    n = (uint64_t)((double)n * TRIAL_NS / elapsed) + 1;
    double best = 0.0;
    for (int t = 0; t < TRIALS; t++) {
        double t0 = now_ns();
        sink += fn(n);
        double r = (double)n * ops_per_iteration / (now_ns() - t0);
        best = r > best ? r : best;
    }
    return best;
}

static uint64_t add_chain(uint64_t n) { return mg_add_chain(n); }

/* CHAINS independent accumulators, one instruction on each per step, written in asm so
 * that the compiler can neither merge the chains nor hoist the work out of the loop.
 * (Generated lists: twelve accumulators a0..a11.) */
#define ACC_DECL(VT, INIT) VT a0 = INIT(1), a1 = INIT(2), a2 = INIT(3), a3 = INIT(4), a4 = INIT(5), a5 = INIT(6), a6 = INIT(7), a7 = INIT(8), a8 = INIT(9), a9 = INIT(10), a10 = INIT(11), a11 = INIT(12)
#define ACC_OUT(C) [a0] C(a0), [a1] C(a1), [a2] C(a2), [a3] C(a3), [a4] C(a4), [a5] C(a5), [a6] C(a6), [a7] C(a7), [a8] C(a8), [a9] C(a9), [a10] C(a10), [a11] C(a11)
#define ACC_FOLD(F) (F(a0) + F(a1) + F(a2) + F(a3) + F(a4) + F(a5) + F(a6) + F(a7) + F(a8) + F(a9) + F(a10) + F(a11))
#define C_V(x) "+&v"(x)
#define C_W(x) "+&w"(x)

/* the loop is in the asm too (n >= 1): left to the compiler, its register allocation
 * can add spills to the loop */
#if defined(__aarch64__)
#define LOOP_BACK "subs %[n], %[n], #1\n\tb.ne 1b\n\t"
#else
#define LOOP_BACK "dec %[n]\n\tjnz 1b\n\t"
#endif
#define PROBE_LOOP(NAME, TARGET, VT, INIT, FOLD, ASM_BODY, OUTS, INS)                          \
    TARGET static uint64_t NAME(uint64_t n)                                                  \
    {                                                                                        \
        ACC_DECL(VT, INIT);                                                                  \
        VT b = INIT(100), t = INIT(0);                                                       \
        __asm__ volatile("1:\n\t" ASM_BODY LOOP_BACK : OUTS, [n] "+r"(n) : INS : "cc");     \
        return ACC_FOLD(FOLD) + FOLD(t);                                                     \
    }

#if defined(MG_X86)
/* dst += b * b (AT&T: src, src, dst) */
#define X86_ACC(INSN) INSN " %[b], %[b], %[a0]\n\t" INSN " %[b], %[b], %[a1]\n\t" INSN " %[b], %[b], %[a2]\n\t" INSN " %[b], %[b], %[a3]\n\t" INSN " %[b], %[b], %[a4]\n\t" INSN " %[b], %[b], %[a5]\n\t" INSN " %[b], %[b], %[a6]\n\t" INSN " %[b], %[b], %[a7]\n\t" INSN " %[b], %[b], %[a8]\n\t" INSN " %[b], %[b], %[a9]\n\t" INSN " %[b], %[b], %[a10]\n\t" INSN " %[b], %[b], %[a11]\n\t"
/* t = madd(b, b); dst += t: two instructions, t renamed each step */
#define X86_MADD(M, A) M " %[b], %[b], %[t]\n\t" A " %[t], %[a0], %[a0]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a1], %[a1]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a2], %[a2]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a3], %[a3]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a4], %[a4]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a5], %[a5]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a6], %[a6]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a7], %[a7]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a8], %[a8]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a9], %[a9]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a10], %[a10]\n\t" M " %[b], %[b], %[t]\n\t" A " %[t], %[a11], %[a11]\n\t"
/* 8 FMA chains and 4 add chains */
#define X86_MIX(F, A) F " %[b], %[b], %[a0]\n\t" F " %[b], %[b], %[a1]\n\t" A " %[b], %[a8], %[a8]\n\t" F " %[b], %[b], %[a2]\n\t" F " %[b], %[b], %[a3]\n\t" A " %[b], %[a9], %[a9]\n\t" F " %[b], %[b], %[a4]\n\t" F " %[b], %[b], %[a5]\n\t" A " %[b], %[a10], %[a10]\n\t" F " %[b], %[b], %[a6]\n\t" F " %[b], %[b], %[a7]\n\t" A " %[b], %[a11], %[a11]\n\t"
#define X86_T_OUT , [t] "=&v"(t)
#define X86_PROBE(NAME, TARGET, VT, INIT, FOLD, BODY) \
    PROBE_LOOP(NAME, TARGET, VT, INIT, FOLD, BODY, ACC_OUT(C_V) X86_T_OUT, [b] "v"(b))

#define T_AVX512 __attribute__((target("avx512f,avx512bw")))
#define T_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define T_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#define T_AVX2 __attribute__((target("avx2,fma")))

#define PS512(k) _mm512_set1_ps(0.5f + (float)(k))
#define PS256(k) _mm256_set1_ps(0.5f + (float)(k))
#define PS128(k) _mm_set1_ps(0.5f + (float)(k))
#define EPI512(k) _mm512_set1_epi32(k)
#define EPI256(k) _mm256_set1_epi32(k)
#define EPI128(k) _mm_set1_epi32(k)
#define F512(a) ((uint64_t)_mm512_reduce_add_ps(a))
#define F256(a) ((uint64_t)_mm256_cvtss_f32(a))
#define F128(a) ((uint64_t)_mm_cvtss_f32(a))
#define I512(a) ((uint64_t)(uint32_t)_mm512_reduce_add_epi32(a))
#define I256(a) ((uint64_t)(uint32_t)_mm256_extract_epi32(a, 0))
#define I128(a) ((uint64_t)(uint32_t)_mm_cvtsi128_si32(a))

X86_PROBE(fp32_512, T_AVX512, __m512, PS512, F512, X86_ACC("vfmadd231ps"))
X86_PROBE(fp32_256, T_AVX2, __m256, PS256, F256, X86_ACC("vfmadd231ps"))
X86_PROBE(fp32_128, T_AVX2, __m128, PS128, F128, X86_ACC("vfmadd231ps"))
X86_PROBE(mix_512, T_AVX512, __m512, PS512, F512, X86_MIX("vfmadd231ps", "vaddps"))
X86_PROBE(mix_256, T_AVX2, __m256, PS256, F256, X86_MIX("vfmadd231ps", "vaddps"))
X86_PROBE(dp_512, T_VNNI512, __m512i, EPI512, I512, X86_ACC("vpdpwssd"))
X86_PROBE(dp_256, T_AVXVNNI, __m256i, EPI256, I256, X86_ACC("%{vex%} vpdpwssd"))
X86_PROBE(mw_512, T_AVX512, __m512i, EPI512, I512, X86_MADD("vpmaddwd", "vpaddd"))
X86_PROBE(mw_256, T_AVX2, __m256i, EPI256, I256, X86_MADD("vpmaddwd", "vpaddd"))
X86_PROBE(mw_128, T_AVX2, __m128i, EPI128, I128, X86_MADD("vpmaddwd", "vpaddd"))

static int has_avxvnni(void)
{
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
}
#elif defined(__aarch64__)
/* dst += b * b (AArch64: dst, src, src; AW/BW the lane arrangements) */
#define ARM_ACC(INSN, AW, BW) INSN " %[a0]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a1]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a2]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a3]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a4]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a5]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a6]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a7]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a8]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a9]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a10]." AW ", %[b]." BW ", %[b]." BW "\n\t" INSN " %[a11]." AW ", %[b]." BW ", %[b]." BW "\n\t"
#define PSN(k) vdupq_n_f32(0.5f + (float)(k))
#define EPN(k) vdupq_n_s32(k)
#define F4(a) ((uint64_t)vgetq_lane_f32(a, 0))
#define I4(a) ((uint64_t)(uint32_t)vgetq_lane_s32(a, 0))
#define NOTARGET
PROBE_LOOP(fp32_128, NOTARGET, float32x4_t, PSN, F4, ARM_ACC("fmla", "4s", "4s"), ACC_OUT(C_W), [b] "w"(b))
PROBE_LOOP(ml_64, NOTARGET, int32x4_t, EPN, I4, ARM_ACC("smlal", "4s", "4h"), ACC_OUT(C_W), [b] "w"(b))
#endif

static void item(FILE *out, int *first, const char *name, double per_ns, double ghz)
{
    fprintf(out, "%s\"%s\": %.3f", *first ? "" : ", ", name, per_ns / ghz);
    *first = 0;
}

/* the probes, bracketed by two clock estimates; printed as JSON without a trailing brace */
static void probes(FILE *out, double ghz)
{
    fprintf(out, "\"fp32\": {");
    int first = 1;
#if defined(MG_X86)
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2) item(out, &first, "128", rate(fp32_128, CHAINS * 4.0), ghz);
    if (avx2) item(out, &first, "256", rate(fp32_256, CHAINS * 8.0), ghz);
    if (avx512) item(out, &first, "512", rate(fp32_512, CHAINS * 16.0), ghz);
    fprintf(out, "}, \"int16\": {");
    first = 1;
    if (avx2) item(out, &first, "vpmaddwd-128", rate(mw_128, CHAINS * 8.0), ghz);
    if (avx2) item(out, &first, "vpmaddwd-256", rate(mw_256, CHAINS * 16.0), ghz);
    if (avx512) item(out, &first, "vpmaddwd-512", rate(mw_512, CHAINS * 32.0), ghz);
    if (avx2 && has_avxvnni()) item(out, &first, "vpdpwssd-256", rate(dp_256, CHAINS * 16.0), ghz);
    if (avx512 && __builtin_cpu_supports("avx512vnni")) item(out, &first, "vpdpwssd-512", rate(dp_512, CHAINS * 32.0), ghz);
#elif defined(__aarch64__)
    item(out, &first, "128", rate(fp32_128, CHAINS * 4.0), ghz);
    fprintf(out, "}, \"int16\": {");
    first = 1;
    item(out, &first, "smlal-64", rate(ml_64, CHAINS * 4.0), ghz);
#else
    (void)ghz;
    fprintf(out, "}, \"int16\": {");
#endif
    fprintf(out, "}, \"mixed\": {");
    first = 1;
#if defined(MG_X86)
    if (avx2) item(out, &first, "256", rate(mix_256, CHAINS), ghz);
    if (avx512) item(out, &first, "512", rate(mix_512, CHAINS), ghz);
#endif
    fprintf(out, "}");
}

/* The clock is estimated before and after the probes; a figure per cycle is only as
 * good as the clock it divides by, so the set is rerun (up to 3 times) while the two
 * estimates differ by more than 5% (a core shared with other work). */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "clock") == 0) { /* the clock alone: a row's, beside its timing */
        printf("{\"clock_ghz\": %.4f}\n", rate(add_chain, 16.0));
        return 0;
    }
#if defined(MG_X86)
    __builtin_cpu_init();
#endif
    for (int attempt = 1;; attempt++) {
        double before = rate(add_chain, 16.0);
        char buf[4096] = "";
        FILE *mem = fmemopen(buf, sizeof buf, "w");
        if (!mem) return 1;
        probes(mem, before); /* per cycle at the before-estimate */
        fclose(mem);
        double after_probe_clock = rate(add_chain, 16.0);
        double hi = before > after_probe_clock ? before : after_probe_clock;
        double lo = before < after_probe_clock ? before : after_probe_clock;
        int stable = (hi - lo) <= 0.05 * hi;
        if (stable || attempt == 3) {
            printf("{\"clock_ghz\": %.4f, \"clock_ghz_after\": %.4f, \"stable\": %s, \"attempts\": %d, %s}\n", before,
                   after_probe_clock, stable ? "true" : "false", attempt, buf);
            return 0;
        }
    }
}
