/* Core clock estimate: a chain of dependent integer adds retires one add per
 * cycle on every out-of-order core we know of (x86-64 and arm64 alike), so
 * adds / seconds ~ the clock the core runs at right now (boost included).
 * The empty asm after each add forces a real add on the critical path: the
 * compiler can neither fold the chain nor vectorise it. The addend is a
 * register, not an immediate: recent Intel cores (Golden Cove and later) fold
 * chains of add-immediate at rename, which once made a 4 GHz core read 8.5 GHz. */
#include <stdint.h>

#define STEP(x) do { x += step; __asm__ volatile("" : "+r"(x)); } while (0)

uint64_t mg_add_chain(uint64_t iterations)
{
    uint64_t x = 0, step = iterations | 1;
    __asm__ volatile("" : "+r"(step)); /* opaque: the compiler cannot make it an immediate */
    for (uint64_t i = 0; i < iterations; i++) {
        STEP(x); STEP(x); STEP(x); STEP(x);
        STEP(x); STEP(x); STEP(x); STEP(x);
        STEP(x); STEP(x); STEP(x); STEP(x);
        STEP(x); STEP(x); STEP(x); STEP(x);
    }
    return x; /* 16 adds per iteration */
}
