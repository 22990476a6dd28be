/*
 * arena.c - bump allocator over one aligned block.
 *
 * A training step's scratch lives in one arena that is reset every step, so
 * the hot loop never calls malloc and the peak is visible (soma_arena_peak).
 */
#include "../soma_internal.h"

struct soma_arena {
    unsigned char *base;
    size_t cap, used, peak;
};

soma_status soma_arena_new(soma_arena **out, size_t bytes)
{
    *out = NULL;
    soma_arena *a = soma__calloc(1, sizeof *a);
    if (!a) return SOMA_ERR_NOMEM;
    a->base = soma__malloc_aligned(bytes ? bytes : 64);
    if (!a->base) { soma__free(a); return SOMA_ERR_NOMEM; }
    a->cap = bytes;
    *out = a;
    return SOMA_OK;
}

void soma_arena_free(soma_arena *a)
{
    if (!a) return;
    soma__free_aligned(a->base);
    soma__free(a);
}

void *soma_arena_alloc(soma_arena *a, size_t bytes)
{
    size_t start = (a->used + 63) & ~(size_t)63;
    if (start > a->cap || bytes > a->cap - start) {
        soma__fail(SOMA_ERR_NOMEM, "arena exhausted: %zu bytes requested, %zu of %zu used",
                   bytes, a->used, a->cap);
        return NULL;
    }
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

void   soma_arena_reset(soma_arena *a) { a->used = 0; }
size_t soma_arena_used(const soma_arena *a) { return a->used; }
size_t soma_arena_peak(const soma_arena *a) { return a->peak; }
size_t soma_arena_capacity(const soma_arena *a) { return a->cap; }
