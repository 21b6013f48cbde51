/* trace_ops.c: count the instructions one offline call of a kernel executes, by class,
 * by single-stepping it under ptrace (x86-64 Linux). A dynamic count, exact for the
 * binary and inputs: no performance counters or emulator needed (scripts/vector_ops.py
 * builds and runs it; the counts need no quiet machine).
 *
 *   trace_ops LIB PREFIX WEIGHTS STREAMS TOKENS SEED
 *
 * LIB is a kernel library, PREFIX its symbol prefix (mg_fp32), WEIGHTS a file of raw
 * float32 weights. The child process loads the library, runs the call once untraced (so
 * lazy binding and first-touch faults are not counted), stops itself, runs it again
 * traced and stops again. Printed: one JSON object of counts.
 *
 * Classes, from each instruction's bytes (prefixes skipped): "vector" is every VEX (C4,
 * C5) or EVEX (62: always EVEX in 64-bit mode) instruction; of those, "vector_moves" are
 * the pure loads, stores and register moves (vmov* of map 0F 10/11/28/29/6F/7F, and
 * broadcasts from memory: map 0F38 18/19/58/59/5A/5B with a memory operand), which need
 * no vector ALU port; "fma" are the FMA family (map 0F38 96-BF) and "vpdpwssd" the VNNI
 * word dot products (map 0F38 52/53). The rest of the vector instructions ("vector_alu",
 * computed by the caller) are what a core with two vector ALU ports issues two a cycle.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void *(*create_fn)(const float *, float);
typedef int64_t (*offline_fn)(void *, int32_t, int64_t, uint32_t, int32_t, int32_t *);

static int child(const char *lib, const char *prefix, const char *weights, int streams, long tokens, unsigned seed)
{
    char name[128];
    void *h = dlopen(lib, RTLD_NOW);
    if (!h) return fprintf(stderr, "dlopen: %s\n", dlerror()), 10;
    snprintf(name, sizeof name, "%s_create", prefix);
    create_fn create = (create_fn)dlsym(h, name);
    snprintf(name, sizeof name, "%s_generate_offline", prefix);
    offline_fn run = (offline_fn)dlsym(h, name);
    if (!create || !run) return fprintf(stderr, "missing %s\n", name), 11;
    FILE *f = fopen(weights, "rb");
    if (!f) return perror(weights), 12;
    static float w[1 << 16];
    size_t n = fread(w, sizeof(float), sizeof w / sizeof w[0], f);
    fclose(f);
    if (n == 0) return fprintf(stderr, "no weights in %s\n", weights), 13;
    void *m = create(w, 0.5f);
    if (!m) return fprintf(stderr, "create refused the weights\n"), 14;
    int32_t *out = calloc((size_t)streams * (size_t)tokens, sizeof(int32_t));
    if (!out) return 15;
    int64_t a = run(m, streams, tokens, seed, 1, out); /* untraced: binding, page faults */
    raise(SIGSTOP);                                  /* the parent starts stepping here */
    int64_t b = run(m, streams, tokens, seed, 1, out);
    raise(SIGSTOP);                                  /* and stops here */
    return a == b && b >= 0 ? 0 : 16;
}

/* the opcode map and byte after the prefixes of an instruction at p (16 bytes read) */
static int classify(const uint8_t *p, int *map, int *op, int *is_mem)
{
    int i = 0;
    while (i < 14 && (p[i] == 0x66 || p[i] == 0xF2 || p[i] == 0xF3 || p[i] == 0x2E || p[i] == 0x3E || p[i] == 0x26 ||
                      p[i] == 0x64 || p[i] == 0x65 || p[i] == 0x36 || p[i] == 0x67 || p[i] == 0xF0))
        i++;
    int modrm;
    if (p[i] == 0x62) { /* EVEX: 62 P0 P1 P2 opcode modrm */
        *map = p[i + 1] & 7, *op = p[i + 4], modrm = p[i + 5];
    } else if (p[i] == 0xC4) { /* VEX3: C4 R.X.B.mmmmm W.vvvv.L.pp opcode modrm */
        *map = p[i + 1] & 31, *op = p[i + 3], modrm = p[i + 4];
    } else if (p[i] == 0xC5) { /* VEX2: C5 R.vvvv.L.pp opcode modrm, map 0F */
        *map = 1, *op = p[i + 2], modrm = p[i + 3];
    } else {
        return 0;
    }
    *is_mem = (modrm >> 6) != 3;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s LIB PREFIX WEIGHTS STREAMS TOKENS SEED\n", argv[0]);
        return 2;
    }
    int streams = atoi(argv[4]);
    long tokens = atol(argv[5]);
    unsigned seed = (unsigned)strtoul(argv[6], NULL, 10);
    if (streams < 1 || tokens < 1) return fprintf(stderr, "STREAMS and TOKENS must be positive\n"), 2;
    pid_t pid = fork();
    if (pid < 0) return perror("fork"), 3;
    if (pid == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) _exit(20);
        _exit(child(argv[1], argv[2], argv[3], streams, tokens, seed));
    }
    int status, stops = 0;
    uint64_t total = 0, vector = 0, moves = 0, fma = 0, dp = 0;
    for (;;) {
        if (waitpid(pid, &status, 0) < 0) return perror("waitpid"), 4;
        if (WIFEXITED(status)) {
            int code = WEXITSTATUS(status);
            if (code != 0 || stops != 2) return fprintf(stderr, "the kernel process exited %d after %d stops\n", code, stops), 5;
            break;
        }
        if (WIFSIGNALED(status)) return fprintf(stderr, "the kernel process died of signal %d\n", WTERMSIG(status)), 5;
        int sig = WSTOPSIG(status);
        if (sig == SIGSTOP) {
            stops++;
            ptrace(stops == 1 ? PTRACE_SINGLESTEP : PTRACE_CONT, pid, NULL, NULL);
            continue;
        }
        if (sig != SIGTRAP || stops != 1) { /* a signal of the child's own: deliver it */
            ptrace(stops == 1 ? PTRACE_SINGLESTEP : PTRACE_CONT, pid, NULL, (void *)(intptr_t)(sig == SIGTRAP ? 0 : sig));
            continue;
        }
        struct user_regs_struct regs;
        ptrace(PTRACE_GETREGS, pid, NULL, &regs);
        union { long w[2]; uint8_t b[16]; } code;
        errno = 0;
        code.w[0] = ptrace(PTRACE_PEEKTEXT, pid, (void *)regs.rip, NULL);
        code.w[1] = ptrace(PTRACE_PEEKTEXT, pid, (void *)(regs.rip + 8), NULL);
        total++;
        int map, op, mem;
        if (!errno && classify(code.b, &map, &op, &mem)) {
            vector++;
            if ((map == 1 && (op == 0x10 || op == 0x11 || op == 0x28 || op == 0x29 || op == 0x6F || op == 0x7F)) ||
                (map == 2 && mem && (op == 0x18 || op == 0x19 || op == 0x58 || op == 0x59 || op == 0x5A || op == 0x5B)))
                moves++;
            else if (map == 2 && op >= 0x96 && op <= 0xBF)
                fma++;
            else if (map == 2 && (op == 0x52 || op == 0x53))
                dp++;
        }
        ptrace(PTRACE_SINGLESTEP, pid, NULL, NULL);
    }
    printf("{\"instructions\": %llu, \"vector\": %llu, \"vector_moves\": %llu, \"fma\": %llu, \"vpdpwssd\": %llu}\n",
           (unsigned long long)total, (unsigned long long)vector, (unsigned long long)moves, (unsigned long long)fma,
           (unsigned long long)dp);
    return 0;
}
