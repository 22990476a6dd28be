/*
 * soma_internal.h - declarations shared inside libsoma, never installed.
 * Internal symbols carry the soma__ prefix.
 */
#ifndef SOMA_INTERNAL_H
#define SOMA_INTERNAL_H

#include "soma.h"
#include <stdarg.h>
#include <stdio.h>

/* Records a formatted message as this thread's last error and returns code,
 * so callers write: return soma__fail(SOMA_ERR_ARG, "batch must be > 0, got %d", b); */
soma_status soma__fail(soma_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The spiking simulations' hot elementwise loops, built also for AVX2 and
 * AVX-512 and chosen by the CPU at load time (GCC's function multiversioning;
 * the build itself targets x86-64-v2 for portability).  Their lanes are
 * independent sums and ISO C mode keeps contraction off, so every clone
 * gives the same bits.  Off under the sanitizers and where unsupported. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(SOMA_NO_CLONES)
#define SOMA_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SOMA_SIMD_CLONES
#endif

/* All library allocation goes through these, so a test can make the Nth
 * allocation fail (sqlite's fault simulator). They set the last error on
 * failure. soma__free accepts NULL. */
void *soma__malloc(size_t bytes);
void *soma__calloc(size_t n, size_t size);
void *soma__realloc(void *p, size_t bytes);
void  soma__free(void *p);
/* 64-byte aligned allocation, freed with soma__free_aligned. */
void *soma__malloc_aligned(size_t bytes);
void  soma__free_aligned(void *p);
/* Test hook: make the n-th allocation from now fail (0 = never). Per thread. */
void  soma__fault_after(long n);

/* Reads a whole file (at most max_bytes) into *out (caller frees with
 * soma__free); errors name the path. src/base/file.c */
soma_status soma__read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *n);

/* An optimizer step in pieces (small-batch BP forms each weight row's
 * gradient in a scratch row and updates it at once, so the gradient never
 * reaches memory): begin counts the step, then range updates parameters
 * off..off+n of the flat array w with their gradient g[0..n).  Every
 * parameter must be covered exactly once per step.  src/optim/optim.c */
void soma__optim_begin(soma_optim *o);
void soma__optim_range(soma_optim *o, float *w, const float *g, float lr, size_t off, size_t n);

/* strdup through soma__malloc. */
char *soma__strdup(const char *s);

/* Inside an OpenMP parallel region: this thread's contiguous share
 * [*lo, *hi) of n items (static split: same split for the same team size,
 * so results do not depend on scheduling). */
#ifdef _OPENMP
#include <omp.h>
static inline void soma__thread_range(size_t n, size_t *lo, size_t *hi)
{
    size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}
#else
static inline void soma__thread_range(size_t n, size_t *lo, size_t *hi) { *lo = 0; *hi = n; }
#endif

#endif /* SOMA_INTERNAL_H */
