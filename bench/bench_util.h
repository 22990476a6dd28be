/*
 * bench_util.h - the helpers every bench/bench_*.c program shares: clock,
 * median of repeats, resident-set sizes, error exit, the loader's next batch,
 * a row-major sgemm call, and the safetensors dumps of the check modes.
 *
 * Each bench program is compiled alone (the Makefile's $(BUILD)/bench/%
 * rule), so everything here is static inline: a program pays only for what
 * it calls, and an unused helper draws no warning.  Define BENCH_NAME (the
 * program's name, the prefix of its error messages) before including this,
 * and BENCH_CBLAS for sgemm_rm (cblas.h).  Include it after any of soma's
 * internal src/ headers: OpenBLAS's cblas.h pulls in <complex.h>, whose
 * macro I breaks their prototypes.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include "soma.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME (the program's name) before including bench_util.h"
#endif

#define MIB (1024.0 * 1024.0)
#define MAX_REPEATS 64   /* size of the programs' per-repeat time arrays */

/* Seconds on the monotonic clock. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* BENCH_CLOCK=cpu: the process's CPU time instead of the monotonic clock
 * (each bench prints clock= to say which).  On a loaded machine the wall
 * clock also counts the other processes' turns; at one thread the CPU clock
 * does not.  Use it at one thread only (with two it adds them).  IDE_CLOCK
 * is the older name bench_ide still reads. */
static inline int bench_cpu_clock(void)
{
    static int v = -1;
    if (v < 0) {
        const char *c = getenv("BENCH_CLOCK"), *i = getenv("IDE_CLOCK");
        v = (c && !strcmp(c, "cpu")) || (i && !strcmp(i, "cpu"));
    }
    return v;
}

static inline double bench_clock_s(void)
{
    if (!bench_cpu_clock()) return now_s();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts t[0..n) in place (t[0] is then the fastest repeat) and returns the
 * median t[n / 2]. */
static inline double sort_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

/* The process's peak resident set so far. */
static inline double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;   /* Linux: KiB */
}

/* Resident set now (not the peak), from /proc/self/statm; -1 if unreadable. */
static inline double cur_rss_mib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size, res;
    if (!f) return -1;
    int ok = fscanf(f, "%ld %ld", &size, &res) == 2;
    fclose(f);
    return ok ? (double)res * sysconf(_SC_PAGESIZE) / MIB : -1;
}

/* "BENCH_NAME: what: <soma's last error>" on stderr; returns 1 (exit status). */
static inline int fail(const char *what)
{
    fprintf(stderr, BENCH_NAME ": %s: %s\n", what, soma_last_error());
    return 1;
}

/* MNIST from data/mnist (test: NULL to skip it); on failure says so with a
 * hint and returns 1. */
static inline int open_mnist(soma_dataset **train, soma_dataset **test)
{
    if (soma_dataset_open(train, test, "mnist", "data/mnist", 0)) {
        fprintf(stderr, BENCH_NAME ": %s (run make data)\n", soma_last_error());
        return 1;
    }
    return 0;
}

/* The next batch of ld; when the epoch is used up, starts epoch ++*epoch. */
static inline void next_batch(soma_loader *ld, int *epoch, soma_batch *b)
{
    if (!soma_loader_next(ld, b)) {
        soma_loader_start_epoch(ld, ++*epoch);
        soma_loader_next(ld, b);
    }
}

/* Mean loss of a step's stats (0 when empty). */
static inline double mean_loss(const soma_step_stats *st)
{
    return st->n ? st->loss / st->n : 0.0;
}

/* OpenBLAS sets up its buffers on the first call: do that before an RSS
 * baseline so that a delta over it is the rule's memory. */
static inline void blas_warmup(void)
{
    float a[4] = { 1, 2, 3, 4 }, c[4];
    soma_gemm(0, 0, 2, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2);
}

#ifdef BENCH_CBLAS
#include <cblas.h>

/* Row-major C (m, n) = op(A) op(B) + beta C with cblas_sgemm, op(A) (m, k),
 * op(B) (k, n); ta / tb: A / B stored transposed; dense leading dimensions. */
static inline void sgemm_rm(int ta, int tb, int m, int n, int k, const float *a, const float *b,
                            float beta, float *c)
{
    int lda = ta ? m : k, ldb = tb ? k : n;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, 1.0f, a, lda, b, ldb, beta, c, n);
}
#endif /* BENCH_CBLAS */

/* ---- check modes: safetensors dumps for the bench/torch_*.py --check ------ */

/* The first batch of train in file order (not shuffled), batch B; the loader
 * into *ld (the batch lives in it). */
static inline int first_batch(soma_loader **ld, soma_dataset *train, int B, int normalize,
                              soma_batch *b)
{
    soma_loader_config lc = { .batch = B, .seed = 0, .shuffle = 0, .normalize = normalize,
                              .drop_last = 1 };
    if (soma_loader_new(ld, train, &lc)) return fail("loader");
    soma_loader_start_epoch(*ld, 0);
    if (!soma_loader_next(*ld, b)) return fail("first batch");
    return 0;
}

/* Adds the batch as "x" (n, c*h*w) float32 and "y" (n) int32. */
static inline soma_status add_batch(soma_st_writer *w, const soma_batch *b)
{
    int64_t xs[2] = { b->n, (int64_t)b->c * b->h * b->w }, ys[1] = { b->n };
    soma_status st = soma_st_writer_add(w, "x", SOMA_F32, 2, xs, b->x);
    return st ? st : soma_st_writer_add(w, "y", SOMA_I32, 1, ys, b->y);
}

/* Adds every parameter of net as PREFIX.NAME: its values (grad 0), its grad
 * store (grad 1) or the grad store negated (grad -1).  With names, appends
 * each NAME to it, comma-separated (net order). */
static inline soma_status add_params(soma_st_writer *w, soma_net *net, const char *prefix,
                                     int grad, char *names, size_t names_size)
{
    int nt = soma_net_tensor_count(net);
    for (int i = 0; i < nt; i++) {
        const char *name;
        int ndim, is_param;
        int64_t shape[SOMA_MAX_DIMS];
        float *data = soma_net_tensor(net, i, &name, &ndim, shape, &is_param);
        if (!is_param) continue;
        /* the grad store holds a parameter's gradient at its value's offset */
        if (grad) data = soma_net_param_grads(net) + (data - soma_net_param_values(net));
        float *buf = NULL;
        if (grad < 0) {
            size_t n = 1;
            for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
            if (!(buf = malloc(n * sizeof(float)))) return SOMA_ERR_NOMEM;
            for (size_t k = 0; k < n; k++) buf[k] = -data[k];
        }
        char key[256];
        snprintf(key, sizeof key, "%s.%s", prefix, name);
        soma_status st = soma_st_writer_add(w, key, SOMA_F32, ndim, shape, buf ? buf : data);
        free(buf);
        if (st) return st;
        if (names) {
            size_t len = strlen(names);
            snprintf(names + len, names_size - len, "%s%s", len ? "," : "", name);
        }
    }
    return SOMA_OK;
}

/* Metadata key = v as "%.9g" (round-trips a float). */
static inline soma_status meta_g(soma_st_writer *w, const char *key, double v)
{
    char s[64];
    snprintf(s, sizeof s, "%.9g", v);
    return soma_st_writer_meta(w, key, s);
}

#endif /* BENCH_UTIL_H */
