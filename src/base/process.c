/*
 * process.c - settings a program makes for its whole process at start: which
 * OpenBLAS kernel runs (and a better one where OpenBLAS does not know the
 * CPU), and the OpenMP wait policy; soma_exec_tuned applies both.
 *
 * Why: OpenBLAS built for several CPUs (DYNAMIC_ARCH, as Debian's) picks its
 * kernels by the CPU's model number, and falls back to the SSE3 "Prescott"
 * kernels for a model newer than its table (Debian 12's 0.3.21 on an Intel
 * Xeon of model 207: FPTT training 2x slower, docs/results.md session 9).
 * Its OPENBLAS_CORETYPE variable overrides the choice but is read when the
 * library loads, before main: so this file only says what to set, and a
 * program that wants it (the CLI, the benchmarks) runs itself again with it.
 */
#include "../soma_internal.h"
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void); /* provided by OpenBLAS */

const char *soma_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

const char *soma_blas_core_better(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    if (strcasecmp(soma_blas_core(), "prescott")) return NULL;   /* OpenBLAS knew the CPU */
    __builtin_cpu_init();
    /* the features OpenBLAS's own check asks for each kernel set; libgcc
     * also checks that the OS saves the wide registers */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
#endif
    return NULL;
}

void soma_exec_tuned(char **argv)
{
    /* A time step is many short parallel regions.  OpenMP threads that spin
     * between them starve each other when the cores are shared (another job,
     * two soma runs): measured 20-40x slower.  Sleeping waits cost a few
     * percent on an idle machine. */
    int again = !getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0;
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : soma_blas_core_better();
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) again = 1;
    /* both are read when the runtimes load, before main: run again once,
     * now with them set (so no loop); on failure carry on as we are.  By
     * the file's own path where it still has one, so that the process keeps
     * its name (exec of /proc/self/exe names it "exe" in ps and top). */
    if (!again) return;
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = '\0';
        execv(path, argv);
    }
    execv("/proc/self/exe", argv);
}
