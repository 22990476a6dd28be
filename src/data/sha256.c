/*
 * sha256.c - SHA-256 (FIPS 180-4) and the file checks built on it.
 *
 * Our own implementation so the library verifies downloads without
 * OpenSSL.  Speed is secondary: 100 MB of datasets hash in well under a
 * second, and verification runs once per dataset open.
 *
 * Reference: FIPS PUB 180-4, section 6.2 (SHA-256 computation) and 5.1.1
 * (padding).  Tests: "abc", "" and one million 'a' (FIPS 180-2 appendix B).
 */
#include "../soma_internal.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;          /* message length so far */
    unsigned char buf[64];   /* partial block */
    size_t fill;
} sha256_ctx;

/* First 32 bits of the fractional parts of the cube roots of the first 64
 * primes (FIPS 180-4, 4.2.2). */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_init(sha256_ctx *c)
{
    /* Fractional parts of the square roots of the first 8 primes (5.3.3). */
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0;
    c->fill = 0;
}

/* One 64-byte block: message schedule W (6.2.2 step 1), then 64 rounds. */
static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        k = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n)
{
    c->bytes += n;
    if (c->fill) {
        size_t take = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->buf + c->fill, p, take);
        c->fill += take; p += take; n -= take;
        if (c->fill < 64) return;
        sha256_block(c->h, c->buf);
        c->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha256_block(c->h, p);
    memcpy(c->buf, p, n);
    c->fill = n;
}

/* Padding (5.1.1): a 1 bit, zeros to 56 mod 64, then the bit length
 * as a big-endian 64-bit integer. */
static void sha256_final(sha256_ctx *c, unsigned char out[32])
{
    uint64_t bits = c->bytes * 8;
    c->buf[c->fill++] = 0x80;
    if (c->fill > 56) {
        memset(c->buf + c->fill, 0, 64 - c->fill);
        sha256_block(c->h, c->buf);
        c->fill = 0;
    }
    memset(c->buf + c->fill, 0, 56 - c->fill);
    for (int i = 0; i < 8; i++) c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_block(c->h, c->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

void soma_sha256(const void *data, size_t n, unsigned char out[32])
{
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, n);
    sha256_final(&c, out);
}

soma_status soma_sha256_file(const char *path, char hex[65], uint64_t *size)
{
    if (!path || !hex) return soma__fail(SOMA_ERR_ARG, "soma_sha256_file: path and hex must not be NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return soma__fail(SOMA_ERR_IO, "%s: %s", path, strerror(errno));
    /* A stack buffer keeps hashing allocation-free; 16 KiB amortises fread and is small enough for any thread stack. */
    unsigned char buf[1 << 14];
    sha256_ctx c;
    sha256_init(&c);
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, buf, got);
    int err = ferror(f);
    int saved = errno;
    fclose(f);
    if (err) return soma__fail(SOMA_ERR_IO, "%s: read error: %s", path, strerror(saved));
    unsigned char d[32];
    sha256_final(&c, d);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = 0;
    if (size) *size = c.bytes;
    return SOMA_OK;
}

/* 64 hex digits, either case (sha256sum prints lowercase; people paste both). */
static int valid_hex64(const char *s)
{
    for (int i = 0; i < 64; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return s[64] == 0;
}

static int hex_equal(const char *a, const char *b)
{
    for (int i = 0; i < 64; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'F') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'F') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

soma_status soma_verify_file(const char *path, uint64_t size, const char *sha256_hex)
{
    if (!path || !sha256_hex)
        return soma__fail(SOMA_ERR_ARG, "soma_verify_file: path and sha256_hex must not be NULL");
    if (!valid_hex64(sha256_hex))
        return soma__fail(SOMA_ERR_ARG, "%s: expected SHA-256 '%s' is not 64 hex digits",
                          path, sha256_hex);
    /* The size check first: it is free and catches truncated downloads
     * without reading the file. */
    struct stat st;
    if (stat(path, &st) != 0)
        return soma__fail(SOMA_ERR_IO, "%s: missing (%s)", path, strerror(errno));
    if ((uint64_t)st.st_size != size)
        return soma__fail(SOMA_ERR_CHECKSUM, "%s: size %llu, expected %llu", path,
                          (unsigned long long)st.st_size, (unsigned long long)size);
    char got[65];
    uint64_t n;
    soma_status s = soma_sha256_file(path, got, &n);
    if (s) return s;
    if (n != size)  /* changed between stat and read */
        return soma__fail(SOMA_ERR_CHECKSUM, "%s: size %llu, expected %llu", path,
                          (unsigned long long)n, (unsigned long long)size);
    if (!hex_equal(got, sha256_hex))
        return soma__fail(SOMA_ERR_CHECKSUM, "%s: SHA-256 %s, expected %s", path, got, sha256_hex);
    return SOMA_OK;
}
