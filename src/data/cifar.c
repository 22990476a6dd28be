/*
 * cifar.c - CIFAR-10 binary batches, raw (.bin) or xz-compressed (.bin.xz).
 *
 * Format (the official "binary version"): records of 3073 bytes, one label
 * byte 0..9 then 3072 pixel bytes, 1024 red, 1024 green, 1024 blue, each
 * 32x32 plane row-major.  That is already the (c,h,w) layout the loader
 * wants, so records are split into labels and pixels without reordering.
 *
 * xz is recognised by its magic bytes (fd 37 7a 58 5a 00), not by the name;
 * a raw file cannot start with them since its first byte is a label < 10.
 * shared/data/cifar10 keeps the batches as .xz (delta + LZMA2), which any
 * liblzma 5 decodes.  Decoding is capped at CIFAR_MAX_BYTES per file.
 *
 * Normalisation constants are the ones the usual PyTorch CIFAR-10 recipes
 * use: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
 */
/* fileno() is POSIX; the Makefile defines this, a bare compile may not. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "../soma_internal.h"
#include <errno.h>
#include <limits.h>
#include <lzma.h>
#include <string.h>
#include <sys/stat.h>

#define CIFAR_RECORD 3073
#define CIFAR_PIXELS 3072
/* One official batch is 30.7 MB; a file that decodes to more than 1 GiB is
 * not a CIFAR batch. */
#define CIFAR_MAX_BYTES ((size_t)1 << 30)

static soma_status read_all(const char *path, uint8_t **out, size_t *out_n)
{
    return soma__read_file(path, CIFAR_MAX_BYTES, out, out_n);
}

static int is_xz(const uint8_t *p, size_t n)
{
    static const uint8_t magic[6] = {0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00};
    return n >= 6 && !memcmp(p, magic, 6);
}

/* liblzma allocates through the library's door, so fault injection reaches it. */
static void *xz_alloc(void *opaque, size_t nmemb, size_t size)
{
    (void)opaque;
    if (size && nmemb > SIZE_MAX / size) return NULL;
    return soma__malloc(nmemb * size);
}
static void xz_free(void *opaque, void *p) { (void)opaque; soma__free(p); }

/* Decodes all xz streams of in[0..n) (as `xz -d` does) into a new buffer. */
static soma_status unxz(uint8_t **out, size_t *out_n, const uint8_t *in, size_t n, const char *name)
{
    const lzma_allocator alloc = {xz_alloc, xz_free, NULL};
    lzma_stream zs = LZMA_STREAM_INIT;
    zs.allocator = &alloc;
    if (lzma_stream_decoder(&zs, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
        return soma__fail(SOMA_ERR_NOMEM, "%s: cannot initialise the xz decoder", name);
    /* A batch is 30.7 MB and xz compresses it about 1.5x; start there. */
    size_t cap = n < CIFAR_MAX_BYTES / 2 ? 2 * n + 4096 : CIFAR_MAX_BYTES + 1;
    uint8_t *buf = soma__malloc(cap);
    if (!buf) { lzma_end(&zs); return SOMA_ERR_NOMEM; }
    zs.next_in = in;
    zs.avail_in = n;
    zs.next_out = buf;
    zs.avail_out = cap;
    soma_status st = SOMA_OK;
    for (;;) {
        lzma_ret rc = lzma_code(&zs, LZMA_FINISH);
        if (rc == LZMA_STREAM_END) break;
        if (rc == LZMA_OK && zs.avail_out == 0) {
            size_t used = cap;
            if (cap > CIFAR_MAX_BYTES) {
                st = soma__fail(SOMA_ERR_FORMAT, "%s: xz data expands to more than %zu bytes",
                                name, CIFAR_MAX_BYTES);
                break;
            }
            size_t ncap = cap * 2 > CIFAR_MAX_BYTES + 1 ? CIFAR_MAX_BYTES + 1 : cap * 2;
            uint8_t *nb = soma__realloc(buf, ncap);
            if (!nb) { st = SOMA_ERR_NOMEM; break; }
            buf = nb; cap = ncap;
            zs.next_out = buf + used;
            zs.avail_out = cap - used;
            continue;
        }
        if (rc == LZMA_OK) continue;
        if (rc == LZMA_MEM_ERROR) { st = soma__fail(SOMA_ERR_NOMEM, "%s: out of memory in liblzma", name); break; }
        if (rc == LZMA_BUF_ERROR) {
            st = soma__fail(SOMA_ERR_FORMAT, "%s: truncated xz stream (or a few stray bytes "
                            "after it)", name);
            break;
        }
        st = soma__fail(SOMA_ERR_FORMAT, "%s: %s", name,
                        rc == LZMA_FORMAT_ERROR  ? "not valid xz data (or garbage after the stream)"
                        : rc == LZMA_OPTIONS_ERROR ? "xz options this liblzma does not support"
                        : rc == LZMA_DATA_ERROR    ? "corrupt xz data"
                        : "xz decoding failed");
        break;
    }
    size_t used = cap - zs.avail_out;
    lzma_end(&zs);
    if (st) { soma__free(buf); return st; }
    *out = buf;
    *out_n = used;
    return SOMA_OK;
}

/* Reads one batch file into memory, decompressing if it is xz. */
static soma_status read_batch(uint8_t **out, size_t *n, const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    soma_status st = read_all(path, &buf, &len);
    if (st) return st;
    if (is_xz(buf, len)) {
        uint8_t *raw = NULL;
        size_t rn = 0;
        st = unxz(&raw, &rn, buf, len, path);
        soma__free(buf);
        if (st) return st;
        buf = raw;
        len = rn;
    }
    if (len == 0 || len % CIFAR_RECORD) {
        soma__free(buf);
        return soma__fail(SOMA_ERR_FORMAT, "%s: %zu bytes is not a whole number of %d-byte "
                          "CIFAR-10 records", path, len, CIFAR_RECORD);
    }
    *out = buf;
    *n = len;
    return SOMA_OK;
}

soma_status soma_dataset_load_cifar10(soma_dataset **out, const char *const *files, int nfiles)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_dataset_load_cifar10: out must not be NULL");
    *out = NULL;
    if (!files || nfiles <= 0)
        return soma__fail(SOMA_ERR_ARG, "soma_dataset_load_cifar10: need at least one file, got %d",
                          nfiles);
    for (int i = 0; i < nfiles; i++)
        if (!files[i])
            return soma__fail(SOMA_ERR_ARG, "soma_dataset_load_cifar10: files[%d] is NULL", i);

    soma_dataset *ds = soma__calloc(1, sizeof *ds);
    if (!ds) return SOMA_ERR_NOMEM;
    strcpy(ds->name, "cifar10");
    ds->c = 3; ds->h = 32; ds->w = 32;
    ds->classes = 10;
    ds->owns = 1;
    static const float mean[3] = {0.4914f, 0.4822f, 0.4465f};
    static const float stdv[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(ds->mean, mean, sizeof mean);
    memcpy(ds->std, stdv, sizeof stdv);

    soma_status st = SOMA_OK;
    for (int f = 0; f < nfiles && !st; f++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        st = read_batch(&buf, &len, files[f]);
        if (st) break;
        size_t recs = len / CIFAR_RECORD;
        if (recs > (size_t)(INT_MAX - ds->n)) {
            soma__free(buf);
            st = soma__fail(SOMA_ERR_FORMAT, "%s: more than %d records in total", files[f], INT_MAX);
            break;
        }
        for (size_t r = 0; r < recs; r++) {
            uint8_t lab = buf[r * CIFAR_RECORD];
            if (lab >= 10) {
                st = soma__fail(SOMA_ERR_FORMAT, "%s: record %zu has label %u, expected 0..9",
                                files[f], r, lab);
                break;
            }
        }
        size_t n_new = (size_t)ds->n + recs;
        uint8_t *px = st ? NULL : soma__realloc(ds->pixels, n_new * CIFAR_PIXELS);
        if (px) ds->pixels = px;
        int32_t *lb = px ? soma__realloc(ds->labels, n_new * sizeof *lb) : NULL;
        if (lb) ds->labels = lb;
        if (!st && (!px || !lb)) st = SOMA_ERR_NOMEM;
        if (!st) {
            for (size_t r = 0; r < recs; r++) {
                const uint8_t *rec = buf + r * CIFAR_RECORD;
                ds->labels[(size_t)ds->n + r] = rec[0];
                memcpy(ds->pixels + ((size_t)ds->n + r) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
            }
            ds->n = (int)n_new;
        }
        soma__free(buf);
    }
    if (st) { soma_dataset_free(ds); return st; }
    *out = ds;
    return SOMA_OK;
}
