/*
 * check.h - the tiny test harness every tests/test_*.c includes.
 *
 * Each test binary counts its checks, prints every failure with context
 * (first bad values, max abs/rel error) and exits non-zero on any failure.
 * Its last line is "<name>: N passed, N failed", which tests/run.sh sums.
 */
#ifndef SOMA_CHECK_H
#define SOMA_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "soma.h"

static int check_passed, check_failed;

/* Records one check; prints the message when it fails. Returns ok. */
static inline int check_true(int ok, const char *what, const char *file, int line)
{
    if (ok) check_passed++;
    else { check_failed++; fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what); }
    return ok;
}
#define CHECK(cond) check_true(!!(cond), #cond, __FILE__, __LINE__)

/* Compares two float arrays: |a-b| <= atol + rtol*|b| element-wise. */
static inline int check_close_f(const char *name, const float *got, const float *want,
                         size_t n, double rtol, double atol)
{
    double max_abs = 0, max_rel = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double r = d / (fabs((double)want[i]) + 1e-30);
        if (d > max_abs) max_abs = d;
        if (r > max_rel && fabs((double)want[i]) > atol) max_rel = r;
        if (!(d <= atol + rtol * fabs((double)want[i]))) { if (!bad) first_bad = i; bad++; }
    }
    if (bad) {
        check_failed++;
        fprintf(stderr, "FAIL %s: %zu/%zu values off (max abs %.3g, max rel %.3g); "
                "first at [%zu]: got %.9g want %.9g\n", name, bad, n, max_abs,
                max_rel, first_bad, got[first_bad], want[first_bad]);
        return 0;
    }
    check_passed++;
    return 1;
}

static inline int check_close_d(const char *name, const double *got, const double *want,
                         size_t n, double rtol, double atol)
{
    size_t bad = 0, first_bad = 0;
    double max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (d > max_abs) max_abs = d;
        if (!(d <= atol + rtol * fabs(want[i]))) { if (!bad) first_bad = i; bad++; }
    }
    if (bad) {
        check_failed++;
        fprintf(stderr, "FAIL %s: %zu/%zu values off (max abs %.3g); first at [%zu]: "
                "got %.12g want %.12g\n", name, bad, n, max_abs, first_bad,
                got[first_bad], want[first_bad]);
        return 0;
    }
    check_passed++;
    return 1;
}

/* Prints the closing line and returns the process exit code. */
static inline int check_report(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
