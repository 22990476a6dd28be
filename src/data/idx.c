/*
 * idx.c - the IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
 *
 * Layout (LeCun's MNIST page): two zero bytes, a data-type byte, a rank
 * byte, then one big-endian 32-bit size per dimension, then the data,
 * row-major.  Only unsigned bytes (type 0x08) occur in the image sets we
 * load, so the other types are refused rather than half-supported.
 *
 * Gzip is recognised by its magic bytes (1f 8b), not by the file name, so a
 * renamed file still loads.  Decompression is capped (IDX_MAX_BYTES) so a
 * small hostile file cannot expand into all of memory, and the parser
 * checks that the header's sizes describe exactly the bytes present:
 * truncation and trailing bytes are both errors, since either means the
 * file is not the one we think.
 *
 * soma_idx_parse (memory) and soma_idx_read (file) share one code path;
 * the fuzzer drives the former, gzip included.
 */
/* fileno() is POSIX; the Makefile defines this, a bare compile may not. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "../soma_internal.h"
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Largest decoded payload we accept: far above MNIST's 47 MB, far below
 * what would hurt a machine. */
#define IDX_MAX_BYTES ((size_t)1 << 30)

/* ---- whole-file read ------------------------------------------------------ */

static soma_status read_all(const char *path, uint8_t **out, size_t *out_n)
{
    return soma__read_file(path, IDX_MAX_BYTES + 64, out, out_n);
}

/* ---- gzip ----------------------------------------------------------------- */

static int is_gzip(const uint8_t *p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

/* zlib allocates through the library's door, so fault injection reaches it. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return soma__malloc((size_t)items * size);
}
static void z_free(voidpf opaque, voidpf p) { (void)opaque; soma__free(p); }

/* Inflates every gzip member of in[0..n) into a new buffer of at most
 * IDX_MAX_BYTES.  Bytes after the last member that do not start another
 * member are an error (a corrupt or concatenated file). */
static soma_status gunzip(uint8_t **out, size_t *out_n, const uint8_t *in, size_t n,
                          const char *name)
{
    /* First guess from the gzip trailer (size mod 2^32 of the last member),
     * bounded by deflate's best ratio (~1032:1) so a lying trailer cannot
     * make us allocate a gigabyte for a 20-byte input. */
    size_t guess = 1 << 16;
    if (n >= 18) {
        size_t isize = (size_t)in[n - 4] | (size_t)in[n - 3] << 8 | (size_t)in[n - 2] << 16 |
                       (size_t)in[n - 1] << 24;
        size_t bound = n < IDX_MAX_BYTES / 1032 ? n * 1032 : IDX_MAX_BYTES;
        if (isize > guess) guess = isize < bound ? isize : bound;
    }
    size_t cap = guess + 1;  /* +1: finishing exactly at cap needs no regrow */
    uint8_t *buf = soma__malloc(cap);
    if (!buf) return SOMA_ERR_NOMEM;

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {  /* 16: gzip wrapper only */
        soma__free(buf);
        return soma__fail(SOMA_ERR_NOMEM, "%s: cannot initialise zlib", name);
    }
    size_t used = 0, in_pos = 0;
    soma_status st = SOMA_OK;
    for (;;) {
        if (used == cap) {
            if (cap > IDX_MAX_BYTES) {
                st = soma__fail(SOMA_ERR_FORMAT, "%s: gzip data expands to more than %zu bytes "
                                "(limit against decompression bombs)", name, IDX_MAX_BYTES);
                break;
            }
            size_t ncap = cap * 2 > IDX_MAX_BYTES + 1 ? IDX_MAX_BYTES + 1 : cap * 2;
            uint8_t *nb = soma__realloc(buf, ncap);
            if (!nb) { st = SOMA_ERR_NOMEM; break; }
            buf = nb; cap = ncap;
        }
        /* avail_in/avail_out are 32-bit: feed at most UINT_MAX at a time. */
        size_t in_left = n - in_pos, out_left = cap - used;
        zs.next_in = (Bytef *)(uintptr_t)(in + in_pos);
        zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        zs.next_out = buf + used;
        zs.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        uInt ain = zs.avail_in, aout = zs.avail_out;
        int rc = inflate(&zs, Z_NO_FLUSH);
        in_pos += ain - zs.avail_in;
        used += aout - zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (in_pos == n) break;
            if (!is_gzip(in + in_pos, n - in_pos)) {
                st = soma__fail(SOMA_ERR_FORMAT, "%s: %zu trailing bytes after the gzip stream",
                                name, n - in_pos);
                break;
            }
            inflateReset(&zs);  /* another member follows, as `cat a.gz b.gz` makes */
            continue;
        }
        if (rc == Z_OK) continue;
        if (rc == Z_BUF_ERROR && zs.avail_out > 0 && in_pos == n) {
            st = soma__fail(SOMA_ERR_FORMAT, "%s: truncated gzip stream (ends after %zu bytes)",
                            name, n);
            break;
        }
        if (rc == Z_BUF_ERROR) continue;  /* output full: grow above */
        if (rc == Z_MEM_ERROR) { st = soma__fail(SOMA_ERR_NOMEM, "%s: out of memory in zlib", name); break; }
        st = soma__fail(SOMA_ERR_FORMAT, "%s: corrupt gzip data (%s)", name,
                        zs.msg ? zs.msg : "inflate failed");
        break;
    }
    inflateEnd(&zs);
    if (st) { soma__free(buf); return st; }
    *out = buf;
    *out_n = used;
    return SOMA_OK;
}

/* ---- header --------------------------------------------------------------- */

static const char *idx_type_name(int t)
{
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
    }
}

/* Validates the header of buf[0..n) and fills out (data left NULL) and the
 * offset of the payload. */
static soma_status parse_header(soma_idx *out, size_t *data_off, const uint8_t *buf, size_t n,
                                const char *name)
{
    if (n < 4)
        return soma__fail(SOMA_ERR_FORMAT, "%s: truncated: %zu bytes, too short for an IDX header",
                          name, n);
    if (buf[0] != 0 || buf[1] != 0)
        return soma__fail(SOMA_ERR_FORMAT, "%s: bad magic %02x %02x %02x %02x: not an IDX file "
                          "(expected 00 00 08 0N)", name, buf[0], buf[1], buf[2], buf[3]);
    if (buf[2] != 0x08)
        return soma__fail(SOMA_ERR_UNSUPPORTED, "%s: IDX data type 0x%02x (%s) is not supported, "
                          "only 0x08 (unsigned byte)", name, buf[2], idx_type_name(buf[2]));
    int ndim = buf[3];
    if (ndim < 1 || ndim > 4)
        return soma__fail(SOMA_ERR_FORMAT, "%s: IDX rank %d, expected 1..4", name, ndim);
    size_t off = 4 + 4 * (size_t)ndim;
    if (n < off)
        return soma__fail(SOMA_ERR_FORMAT, "%s: truncated: header of rank %d needs %zu bytes, "
                          "file has %zu", name, ndim, off, n);
    /* Product of the sizes with overflow detection: four 31-bit sizes can
     * exceed 64 bits, and a wrapped product would pass the length check. */
    uint64_t total = 1;
    int overflow = 0;
    char shape[64];
    int sl = 0;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *p = buf + 4 + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d > INT32_MAX)
            return soma__fail(SOMA_ERR_FORMAT, "%s: dimension %d is %u, larger than 2^31-1",
                              name, i, d);
        out->dims[i] = d;
        if (d && total > UINT64_MAX / d) overflow = 1;
        else total *= d;
        sl += snprintf(shape + sl, sizeof shape - (size_t)sl, "%s%u", i ? "x" : "", d);
    }
    for (int i = ndim; i < 4; i++) out->dims[i] = 1;
    out->ndim = ndim;
    size_t have = n - off;
    if (overflow)
        return soma__fail(SOMA_ERR_FORMAT, "%s: truncated: header says %s (more than 2^64) "
                          "bytes, file has %zu", name, shape, have);
    if (total > have)
        return soma__fail(SOMA_ERR_FORMAT, "%s: truncated: header says %s = %llu bytes, "
                          "file has %zu", name, shape, (unsigned long long)total, have);
    if (total < have)
        return soma__fail(SOMA_ERR_FORMAT, "%s: %llu trailing bytes: header says %s = %llu "
                          "bytes, file has %zu", name, (unsigned long long)(have - total), shape,
                          (unsigned long long)total, have);
    *data_off = off;
    return SOMA_OK;
}

/* Parses a buffer this file owns (from soma__malloc): the payload is moved
 * to its front and the buffer becomes out->data, saving a copy of 47 MB. */
static soma_status parse_owned(soma_idx *out, uint8_t *buf, size_t n, const char *name)
{
    size_t off;
    soma_status st = parse_header(out, &off, buf, n, name);
    if (st) { soma__free(buf); return st; }
    memmove(buf, buf + off, n - off);
    out->data = buf;
    return SOMA_OK;
}

soma_status soma_idx_parse(soma_idx *out, const uint8_t *buf, size_t n, const char *name)
{
    if (!out) return soma__fail(SOMA_ERR_ARG, "soma_idx_parse: out must not be NULL");
    memset(out, 0, sizeof *out);
    if (!name) name = "(buffer)";
    if (!buf && n) return soma__fail(SOMA_ERR_ARG, "%s: NULL buffer of %zu bytes", name, n);
    if (is_gzip(buf, n)) {
        uint8_t *raw = NULL;
        size_t rn = 0;
        soma_status st = gunzip(&raw, &rn, buf, n, name);
        if (st) return st;
        st = parse_owned(out, raw, rn, name);
        if (st) memset(out, 0, sizeof *out);
        return st;
    }
    size_t off;
    soma_status st = parse_header(out, &off, buf, n, name);
    if (st) { memset(out, 0, sizeof *out); return st; }
    out->data = soma__malloc(n - off);
    if (!out->data) { memset(out, 0, sizeof *out); return SOMA_ERR_NOMEM; }
    memcpy(out->data, buf + off, n - off);
    return SOMA_OK;
}

soma_status soma_idx_read(soma_idx *out, const char *path)
{
    if (!out || !path) return soma__fail(SOMA_ERR_ARG, "soma_idx_read: out and path must not be NULL");
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    size_t n = 0;
    soma_status st = read_all(path, &buf, &n);
    if (st) return st;
    if (is_gzip(buf, n)) {
        uint8_t *raw = NULL;
        size_t rn = 0;
        st = gunzip(&raw, &rn, buf, n, path);
        soma__free(buf);
        if (st) return st;
        buf = raw;
        n = rn;
    }
    st = parse_owned(out, buf, n, path);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

void soma_idx_free(soma_idx *x)
{
    if (!x) return;
    soma__free(x->data);
    memset(x, 0, sizeof *x);
}
