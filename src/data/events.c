/*
 * events.c - address-event streams: the N-MNIST file format and binning
 * events into frames.
 *
 * N-MNIST (Orchard et al. 2015) stores one sample per file, no header,
 * 5 bytes (40 bits) per event:
 *   byte 0            x address
 *   byte 1            y address
 *   byte 2, bit 7     polarity (1 = ON, 0 = OFF)
 *   bytes 2..4, bits 22..0 of the big-endian 24-bit word: timestamp in us
 * (shared/data/nmnist-subset/README.md; checked on its 1100 files: every
 * size a multiple of 5, x and y <= 33, timestamps <= 336040 us and never
 * decreasing within a file).
 *
 * The parser is strict: a size that is not a multiple of 5 means a cut
 * event, and an address outside the sensor means the file is not what the
 * caller thinks, so both are errors rather than dropped events.  Timestamp
 * order is not enforced (other recordings need not be sorted); the binning
 * below does not rely on it.
 *
 * soma_nmnist_parse (memory) and soma_nmnist_read (file) share one code
 * path; the fuzzer drives the former.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L   /* fileno */
#endif
#include "../soma_internal.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#define EVENT_BYTES 5
/* Largest file we read: an N-MNIST sample is ~20 KB; 256 MiB leaves room
 * for long recordings while a wrong path (a disk image) fails fast. */
#define EVENTS_MAX_BYTES ((size_t)256 << 20)

soma_status soma_nmnist_parse(soma_event **ev, size_t *n, const uint8_t *buf, size_t len,
                              const char *name, int width, int height)
{
    if (!ev || !n) return soma__fail(SOMA_ERR_ARG, "soma_nmnist_parse: %s is NULL", !ev ? "ev" : "n");
    *ev = NULL;
    *n = 0;
    if (!name) name = "(memory)";
    if (!buf && len) return soma__fail(SOMA_ERR_ARG, "%s: buffer is NULL with length %zu", name, len);
    if (width <= 0 || height <= 0)
        return soma__fail(SOMA_ERR_ARG, "%s: sensor width and height must be > 0, got %dx%d",
                          name, width, height);
    if (len % EVENT_BYTES)
        return soma__fail(SOMA_ERR_FORMAT, "%s: size %zu is not a multiple of %d (truncated event?)",
                          name, len, EVENT_BYTES);
    size_t count = len / EVENT_BYTES;
    if (count == 0) return SOMA_OK;   /* an empty recording is well-formed */
    if (count > SIZE_MAX / sizeof(soma_event))
        return soma__fail(SOMA_ERR_FORMAT, "%s: %zu events do not fit in memory", name, count);

    /* Check every address before allocating, so a bad file costs nothing. */
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = buf + i * EVENT_BYTES;
        if (p[0] >= width || p[1] >= height)
            return soma__fail(SOMA_ERR_FORMAT,
                              "%s: event %zu at x=%u y=%u is outside the %dx%d sensor",
                              name, i, p[0], p[1], width, height);
    }
    soma_event *e = soma__malloc(count * sizeof *e);
    if (!e) return SOMA_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = buf + i * EVENT_BYTES;
        e[i].x = p[0];
        e[i].y = p[1];
        e[i].p = (uint8_t)(p[2] >> 7);
        e[i].t = ((uint32_t)(p[2] & 0x7f) << 16) | ((uint32_t)p[3] << 8) | p[4];
    }
    *ev = e;
    *n = count;
    return SOMA_OK;
}

static soma_status read_all(const char *path, uint8_t **out, size_t *out_n)
{
    return soma__read_file(path, EVENTS_MAX_BYTES, out, out_n);
}

soma_status soma_nmnist_read(soma_event **ev, size_t *n, const char *path,
                             int width, int height)
{
    if (!ev || !n) return soma__fail(SOMA_ERR_ARG, "soma_nmnist_read: %s is NULL", !ev ? "ev" : "n");
    *ev = NULL;
    *n = 0;
    if (!path) return soma__fail(SOMA_ERR_ARG, "soma_nmnist_read: path is NULL");
    uint8_t *buf = NULL;
    size_t len = 0;
    soma_status st = read_all(path, &buf, &len);
    if (st) return st;
    st = soma_nmnist_parse(ev, n, buf, len, path, width, height);
    soma__free(buf);
    return st;
}

void soma_events_free(soma_event *ev) { soma__free(ev); }

soma_status soma_events_to_frames(float *frames, const soma_event *ev, size_t n, int T,
                                  int H, int W, uint32_t t0, uint32_t t1, int binary)
{
    if (!frames) return soma__fail(SOMA_ERR_ARG, "soma_events_to_frames: frames is NULL");
    if (!ev && n) return soma__fail(SOMA_ERR_ARG, "soma_events_to_frames: ev is NULL with n = %zu", n);
    if (T <= 0) return soma__fail(SOMA_ERR_ARG, "event frames: T must be > 0, got %d", T);
    if (H <= 0 || W <= 0)
        return soma__fail(SOMA_ERR_ARG, "event frames: H and W must be > 0, got %dx%d", H, W);
    const size_t plane = (size_t)H * (size_t)W;
    if (plane > SIZE_MAX / 2 / sizeof(float) / (size_t)T)
        return soma__fail(SOMA_ERR_ARG, "event frames: %d x 2 x %d x %d floats overflow", T, H, W);

    /* Validate every event before writing, so a failure leaves no half-binned
     * frames; an address outside the frame is refused, never dropped. */
    uint32_t tmin = UINT32_MAX, tmax = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].x >= W || ev[i].y >= H || ev[i].p > 1)
            return soma__fail(SOMA_ERR_ARG,
                              "event frames: event %zu at x=%u y=%u p=%u is outside the "
                              "frame (W=%d, H=%d, polarity 0 or 1)",
                              i, ev[i].x, ev[i].y, ev[i].p, W, H);
        if (ev[i].t < tmin) tmin = ev[i].t;
        if (ev[i].t > tmax) tmax = ev[i].t;
    }
    memset(frames, 0, (size_t)T * 2 * plane * sizeof *frames);
    if (n == 0) return SOMA_OK;

    /* [lo, hi) in 64 bits: the stream's own span ends one past its last
     * timestamp, so the last event lands in the last frame. */
    uint64_t lo = t0, hi = t1;
    if (t1 <= t0) { lo = tmin; hi = (uint64_t)tmax + 1; }
    const uint64_t span = hi - lo;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].t < lo || ev[i].t >= hi) continue;
        /* k = floor((t - lo) T / span) is exactly the k with
         * lo + k span/T <= t < lo + (k+1) span/T; < 2^63, no overflow. */
        size_t k = (size_t)(((uint64_t)ev[i].t - lo) * (uint64_t)T / span);
        float *f = frames + (k * 2 + ev[i].p) * plane + (size_t)ev[i].y * (size_t)W + ev[i].x;
        if (binary) *f = 1.0f;
        else *f += 1.0f;
    }
    return SOMA_OK;
}
