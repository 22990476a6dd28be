/*
 * file.c - whole-file reads with a size cap, shared by every reader of a
 * data file (IDX, CIFAR, N-MNIST events): one place that handles fstat
 * sizing, pipes, growth, read errors and the cap.
 */
#include "../soma_internal.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* Reads path into a fresh buffer (*out, soma__free'd by the caller; one
 * spare byte past *out_n).  SOMA_ERR_IO names the path and the system's
 * reason; more than max_bytes is SOMA_ERR_FORMAT. */
soma_status soma__read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *out_n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return soma__fail(SOMA_ERR_IO, "%s: %s", path, strerror(errno));
    /* Size the buffer from fstat when we can (one read for regular files);
     * the loop still handles pipes and files that grow while we read. */
    struct stat st;
    size_t cap = 1 << 16;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0) {
        if ((uint64_t)st.st_size > max_bytes) {
            fclose(f);
            return soma__fail(SOMA_ERR_FORMAT, "%s: file is %llu bytes, more than the %zu-byte limit",
                              path, (unsigned long long)st.st_size, max_bytes);
        }
        cap = (size_t)st.st_size + 1;
    }
    uint8_t *buf = soma__malloc(cap);
    if (!buf) { fclose(f); return SOMA_ERR_NOMEM; }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) {
                soma__free(buf); fclose(f);
                return soma__fail(SOMA_ERR_FORMAT, "%s: more than the %zu-byte limit",
                                  path, max_bytes);
            }
            uint8_t *nb = soma__realloc(buf, cap * 2);
            if (!nb) { soma__free(buf); fclose(f); return SOMA_ERR_NOMEM; }
            buf = nb; cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        soma__free(buf); fclose(f);
        return soma__fail(SOMA_ERR_IO, "%s: read error: %s", path, strerror(e));
    }
    fclose(f);
    *out = buf;
    *out_n = n;
    return SOMA_OK;
}
