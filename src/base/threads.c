/*
 * threads.c - one knob for OpenMP and OpenBLAS thread counts.
 */
#include "../soma_internal.h"
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
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
