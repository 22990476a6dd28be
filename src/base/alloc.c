/*
 * alloc.c - the one door for heap memory, with fault injection for tests.
 */
#include "../soma_internal.h"
#include <stdlib.h>
#include <string.h>

static _Thread_local long fault_countdown; /* 0: never fail */

void soma__fault_after(long n) { fault_countdown = n; }

static int should_fail(void)
{
    if (fault_countdown <= 0) return 0;
    return --fault_countdown == 0;
}

void *soma__malloc(size_t bytes)
{
    void *p = should_fail() ? NULL : malloc(bytes ? bytes : 1);
    if (!p) soma__fail(SOMA_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *soma__calloc(size_t n, size_t size)
{
    void *p = should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
    if (!p) soma__fail(SOMA_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *soma__realloc(void *q, size_t bytes)
{
    void *p = should_fail() ? NULL : realloc(q, bytes ? bytes : 1);
    if (!p) soma__fail(SOMA_ERR_NOMEM, "out of memory reallocating to %zu bytes", bytes);
    return p;
}

void soma__free(void *p) { free(p); }

void *soma__malloc_aligned(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = should_fail() ? NULL : aligned_alloc(64, rounded ? rounded : 64);
    if (!p) soma__fail(SOMA_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void soma__free_aligned(void *p) { free(p); }

char *soma__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = soma__malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
