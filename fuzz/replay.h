/*
 * replay.h - the main() of a fuzz target built without libFuzzer
 * (-DSOMA_FUZZ_MAIN): replays each file named on the command line through
 * LLVMFuzzerTestOneInput, prints one line per file, and exits non-zero if a
 * file cannot be read.  For reproducing a crash with gcc or valgrind.
 */
#ifndef SOMA_FUZZ_REPLAY_H
#define SOMA_FUZZ_REPLAY_H
#ifdef SOMA_FUZZ_MAIN
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); bad = 1; continue; }
        size_t cap = 1 << 16, n = 0, got;
        uint8_t *buf = malloc(cap);
        while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
            n += got;
            if (n == cap) {
                uint8_t *nb = realloc(buf, cap * 2);
                if (!nb) { free(buf); buf = NULL; break; }
                buf = nb; cap *= 2;
            }
        }
        fclose(f);
        if (!buf) { fprintf(stderr, "%s: out of memory\n", argv[i]); bad = 1; continue; }
        LLVMFuzzerTestOneInput(buf, n);
        printf("%s: %zu bytes, %s\n", argv[i], n, soma_last_error()[0] ? soma_last_error() : "ok");
        soma_clear_error();
        free(buf);
    }
    return bad;
}
#endif
#endif
