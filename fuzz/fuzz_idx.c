/*
 * fuzz_idx.c - libFuzzer target for the IDX parser (soma_idx_parse),
 * gzip path included: inputs starting with 1f 8b are inflated first.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         fuzz/fuzz_idx.c src/data/[a-z]*.c src/base/error.c src/base/alloc.c src/base/rng.c -lz -llzma -lm -o fuzz_idx
 *   ./fuzz_idx -max_total_time=60 corpus-idx/
 *
 * Without libFuzzer, -DSOMA_FUZZ_MAIN adds a main() that runs the parser
 * over the files named on the command line, so any compiler can replay a
 * corpus or a crash file:
 *   gcc -DSOMA_FUZZ_MAIN -Iinclude fuzz/fuzz_idx.c src/data/[a-z]*.c src/base/error.c src/base/alloc.c src/base/rng.c \
 *       -lz -llzma -lm -o fuzz_idx_replay && ./fuzz_idx_replay crash-*
 *
 * Beyond "no crash", a successful parse must describe exactly its data:
 * rank 1..4, sizes < 2^31, and a buffer of prod(dims) readable bytes (all
 * read below, so ASan sees any short allocation).
 */
#include "soma.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    soma_idx x;
    soma_status st = soma_idx_parse(&x, data, size, "fuzz");
    if (st != SOMA_OK) {
        /* Failures are the documented kinds and leave nothing owned. */
        if (!(st == SOMA_ERR_FORMAT || st == SOMA_ERR_UNSUPPORTED || st == SOMA_ERR_NOMEM) ||
            x.data != NULL || soma_last_error()[0] == 0)
            abort();
        return 0;
    }
    if (x.ndim < 1 || x.ndim > 4 || !x.data) abort();
    uint64_t n = 1;
    for (int i = 0; i < 4; i++) {
        if (x.dims[i] < 0 || x.dims[i] > INT32_MAX) abort();
        if (i >= x.ndim && x.dims[i] != 1) abort();
        n *= (uint64_t)x.dims[i];
    }
    /* Raw input: header + payload is the whole buffer. */
    if (!(size >= 2 && data[0] == 0x1f && data[1] == 0x8b) && n != size - 4 - 4 * (size_t)x.ndim)
        abort();
    volatile unsigned sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += x.data[i];
    (void)sum;
    soma_idx_free(&x);
    return 0;
}

#include "replay.h"

