/*
 * threads.c - one knob for OpenMP and OpenBLAS thread counts.
 */
#include "../soma_internal.h"
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SOMA_HAVE_MXCSR 1
#endif

void openblas_set_num_threads(int n); /* provided by OpenBLAS */

static int current_threads = 1; /* mirrors what was last applied */

int soma_set_threads(int n)
{
    if (n <= 0) {
        const char *e = getenv("SOMA_THREADS");
        n = e ? atoi(e) : 1;
        if (n <= 0) n = 1;
    }
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
    current_threads = n;
    return n;
}

int soma_get_threads(void)
{
#ifdef _OPENMP
    /* what an OpenMP team started now would get: kernels size per-thread
     * scratch by it */
    return omp_get_max_threads();
#else
    return current_threads;
#endif
}

#ifdef SOMA_HAVE_MXCSR
static void set_mxcsr_ftz(int on)
{
    const unsigned ftz_daz = 0x8040u;   /* MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero */
    unsigned m = _mm_getcsr();
    _mm_setcsr(on ? (m | ftz_daz) : (m & ~ftz_daz));
}
#endif

int soma_flush_denormals(int on)
{
    if (on < 0) {   /* as SOMA_THREADS for soma_set_threads: the environment decides */
        const char *e = getenv("SOMA_DENORMALS");
        on = !(e && !strcmp(e, "1"));
    }
#ifdef SOMA_HAVE_MXCSR
    set_mxcsr_ftz(on);
#ifdef _OPENMP
    /* the workers of the current team too; threads made later inherit the
     * creating thread's floating-point environment */
#pragma omp parallel
    set_mxcsr_ftz(on);
#endif
    return 1;
#else
    (void)on;
    return 0;
#endif
}
