/*
 * fuzz_safetensors.c - libFuzzer target for soma_st_parse.
 *
 * Any input must give SOMA_OK or an error, never a crash, a read past the
 * buffer, a leak or undefined behaviour (run with ASan + UBSan).  Inputs that
 * parse are also checked against the reader's own promises, so the fuzzer
 * finds logic bugs too: every tensor is found again by name, its bytes lie
 * inside its aligned slot and agree with shape * sizeof(dtype), and every
 * metadata key maps back to a value.
 *
 * Build (see fuzz/run.sh):
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc fuzz/fuzz_safetensors.c <lib>
 * Without libFuzzer, -DSOMA_FUZZ_MAIN adds a main() that replays the files
 * named on the command line (for reproducing a crash with gcc or valgrind).
 */
#include "soma.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const size_t dtype_size[] = {
    [SOMA_F32] = 4, [SOMA_I32] = 4, [SOMA_I64] = 8, [SOMA_U8] = 1, [SOMA_F64] = 8,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    soma_st *st = NULL;
    if (soma_st_parse(&st, data, size, "fuzz") != SOMA_OK) {
        if (st || !soma_last_error()[0]) abort(); /* errors leave *out NULL and say why */
        return 0;
    }
    volatile unsigned sink = 0;
    for (int i = 0; i < soma_st_count(st); i++) {
        const soma_st_tensor *t = soma_st_at(st, i);
        if (!t || soma_st_find(st, t->name) != t) abort();
        if ((unsigned)t->dtype > SOMA_F64 || t->ndim < 0 || t->ndim > SOMA_MAX_DIMS) abort();
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        if (numel * dtype_size[t->dtype] != t->nbytes || t->nbytes > size) abort();
        if ((uintptr_t)t->data % 64) abort();
        const uint8_t *p = t->data; /* ASan flags any byte outside the slot */
        for (size_t b = 0; b < t->nbytes; b++) sink += p[b];
        if (i && strcmp(soma_st_at(st, i - 1)->name, t->name) >= 0) abort();
    }
    for (int i = 0; i < soma_st_meta_count(st); i++) {
        const char *k = soma_st_meta_key(st, i);
        if (!k || !soma_st_meta(st, k)) abort();
        sink += (unsigned)strlen(soma_st_meta(st, k));
    }
    (void)sink;
    soma_st_free(st);
    return 0;
}

#include "replay.h"

