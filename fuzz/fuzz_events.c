/*
 * fuzz_events.c - libFuzzer target for the N-MNIST event parser
 * (soma_nmnist_parse) and for binning its events into frames.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *         fuzz/fuzz_events.c src/data/events.c src/base/error.c src/base/alloc.c -o fuzz_events
 *   ./fuzz_events -max_total_time=60 corpus-events/
 *
 * Without libFuzzer, -DSOMA_FUZZ_MAIN adds a main() that runs the target
 * over the files named on the command line, so any compiler can replay a
 * corpus or a crash file:
 *   gcc -DSOMA_FUZZ_MAIN -Iinclude -Isrc fuzz/fuzz_events.c src/data/events.c \
 *       src/base/error.c src/base/alloc.c -o fuzz_events_replay && ./fuzz_events_replay crash-*
 *
 * Beyond "no crash", a successful parse must describe exactly its input:
 * size/5 events, each inside the 34x34 sensor, polarity 0/1, a 23-bit
 * timestamp, and each field equal to the bytes it came from.  Binning those
 * events over their own span must count every one of them exactly once.
 */
#include "soma.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { SIDE = 34, MAX_T = 8 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    soma_event *ev = NULL;
    size_t n = 99;
    soma_status st = soma_nmnist_parse(&ev, &n, data, size, "fuzz", SIDE, SIDE);
    if (st != SOMA_OK) {
        /* Failures are the documented kinds and leave nothing owned. */
        if (!(st == SOMA_ERR_FORMAT || st == SOMA_ERR_NOMEM) || ev != NULL || n != 0 ||
            soma_last_error()[0] == 0)
            abort();
        return 0;
    }
    if (size % 5 || n != size / 5 || (n > 0) != (ev != NULL)) abort();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = data + 5 * i;
        uint32_t t = ((uint32_t)(p[2] & 0x7f) << 16) | ((uint32_t)p[3] << 8) | p[4];
        if (ev[i].x >= SIDE || ev[i].y >= SIDE || ev[i].p > 1 || ev[i].t > 0x7fffff ||
            ev[i].x != p[0] || ev[i].y != p[1] || ev[i].p != p[2] >> 7 || ev[i].t != t)
            abort();
    }

    /* Frames over the stream's own span: T from the input, 1..MAX_T. */
    static float frames[MAX_T * 2 * SIDE * SIDE];
    int T = size ? 1 + data[0] % MAX_T : 1;
    if (soma_events_to_frames(frames, ev, n, T, SIDE, SIDE, 0, 0, 0) != SOMA_OK) abort();
    double total = 0;
    for (size_t i = 0; i < (size_t)T * 2 * SIDE * SIDE; i++) total += frames[i];
    if (total != (double)n) abort();
    soma_events_free(ev);
    return 0;
}

#include "replay.h"

