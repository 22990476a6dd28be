/*
 * test_data.c - the data layer: SHA-256, file verification, IDX (raw and
 * gzip), CIFAR-10 batches (raw and xz), datasets, subsets and the loader.
 *
 * Every file it reads is written here, into a fresh temporary directory,
 * except the real datasets, which are tested only when present:
 *   ./data/mnist, ./data/fashion       (after `sh scripts/data.sh`)
 *   ../shared/data/cifar10/...         (the shared CIFAR-10 copies)
 * Run from the repository root.  Error paths are checked for the status
 * code and for the words of the message, since the message is the API a
 * user reads.
 */
#include "check.h"
#include "soma_internal.h"   /* soma__fault_after */
#include <errno.h>
#include <lzma.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------------ */
/* Temporary directory and small helpers.                                   */
/* ------------------------------------------------------------------------ */

static char tmpdir[64];
static char made[128][256];   /* files to remove at the end */
static int n_made;

/* Path of `name` inside the temporary directory (rotating static buffers,
 * so two results can be used in one call). */
static const char *tp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void remember(const char *path)
{
    for (int i = 0; i < n_made; i++)
        if (!strcmp(made[i], path)) return;
    if (n_made < 128) snprintf(made[n_made++], sizeof made[0], "%s", path);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno)); exit(2); }
    if (n && fwrite(data, 1, n, f) != n) { fprintf(stderr, "short write %s\n", path); exit(2); }
    fclose(f);
    remember(path);
}

static void write_gzip(const char *path, const void *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    if (!g) { fprintf(stderr, "gzopen %s failed\n", path); exit(2); }
    if (n && gzwrite(g, data, (unsigned)n) != (int)n) { fprintf(stderr, "gzwrite %s\n", path); exit(2); }
    gzclose(g);
    remember(path);
}

/* xz via liblzma's easy encoder into a malloc'd buffer. */
static uint8_t *xz_encode(const uint8_t *in, size_t n, size_t *out_n)
{
    size_t cap = lzma_stream_buffer_bound(n);
    uint8_t *out = malloc(cap);
    size_t pos = 0;
    if (!out || lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, NULL, in, n, out, &pos, cap) != LZMA_OK) {
        fprintf(stderr, "xz encode failed\n");
        exit(2);
    }
    *out_n = pos;
    return out;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static int dir_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Checks a status and that the last error contains each of up to three
 * fragments; prints the message when it does not. */
static void check_err(soma_status got, soma_status want, const char *a, const char *b,
                      const char *c, const char *what)
{
    const char *msg = soma_last_error();
    int ok = got == want && (!a || strstr(msg, a)) && (!b || strstr(msg, b)) && (!c || strstr(msg, c));
    if (!ok)
        fprintf(stderr, "  %s: status %d (want %d), message \"%s\" (want \"%s\" \"%s\" \"%s\")\n",
                what, got, want, msg, a ? a : "", b ? b : "", c ? c : "");
    check_true(ok, what, __FILE__, __LINE__);
}

/* An IDX file in memory: 00 00 dtype ndim, big-endian dims, payload
 * (none when data is NULL).  Returns its length. */
static size_t make_idx(uint8_t *buf, int dtype, int ndim, const uint32_t *dims, const uint8_t *data)
{
    size_t k = 0, total = 1;
    buf[k++] = 0; buf[k++] = 0; buf[k++] = (uint8_t)dtype; buf[k++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24); buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8); buf[k++] = (uint8_t)dims[i];
        total *= dims[i];
    }
    if (!data) return k;   /* header only */
    memcpy(buf + k, data, total);
    return k + total;
}

/* Writes an MNIST-like pair of n 28x28 images (pixel = (i*7 + p) & 255)
 * and labels (i % 10 unless bad_label >= 0 puts 10 at that index). */
static void write_mnist_pair(const char *images, const char *labels, int n, int n_labels,
                             int bad_label, int gz)
{
    size_t bytes = 16 + (size_t)n * 784;
    uint8_t *buf = malloc(bytes > 8 + (size_t)n_labels ? bytes : 8 + (size_t)n_labels);
    uint8_t *px = malloc((size_t)n * 784 + 1);
    for (int i = 0; i < n; i++)
        for (int p = 0; p < 784; p++) px[(size_t)i * 784 + p] = (uint8_t)((i * 7 + p) & 255);
    uint32_t d3[3] = {(uint32_t)n, 28, 28};
    size_t len = make_idx(buf, 0x08, 3, d3, px);
    if (gz) write_gzip(images, buf, len); else write_bytes(images, buf, len);
    uint8_t *lb = malloc((size_t)n_labels + 1);
    for (int i = 0; i < n_labels; i++) lb[i] = (uint8_t)(i % 10);
    if (bad_label >= 0) lb[bad_label] = 10;
    uint32_t d1[1] = {(uint32_t)n_labels};
    len = make_idx(buf, 0x08, 1, d1, lb);
    if (gz) write_gzip(labels, buf, len); else write_bytes(labels, buf, len);
    free(buf); free(px); free(lb);
}

/* ------------------------------------------------------------------------ */
/* SHA-256 and verification.                                                */
/* ------------------------------------------------------------------------ */

static void hexify(char *hex, const unsigned char d[32])
{
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
}

static void test_sha256(void)
{
    unsigned char d[32];
    char hex[65];
    /* FIPS 180-2 appendix B vectors, plus the empty message. */
    soma_sha256("abc", 3, d); hexify(hex, d);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    soma_sha256("", 0, d); hexify(hex, d);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    soma_sha256(two, strlen(two), d); hexify(hex, d);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    size_t mn = 1000000;
    char *ma = malloc(mn);
    memset(ma, 'a', mn);
    soma_sha256(ma, mn, d); hexify(hex, d);
    const char *million = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    CHECK(!strcmp(hex, million));

    /* The file path streams in chunks; it must agree with the one-shot hash. */
    write_bytes(tp("million_a"), ma, mn);
    char fhex[65];
    uint64_t size = 0;
    CHECK(soma_sha256_file(tp("million_a"), fhex, &size) == SOMA_OK);
    CHECK(!strcmp(fhex, million) && size == mn);
    /* Lengths around the 56/64-byte padding edges: file == memory. */
    for (size_t n = 50; n <= 130; n++) {
        write_bytes(tp("edge"), ma, n);
        soma_sha256(ma, n, d); hexify(hex, d);
        CHECK(soma_sha256_file(tp("edge"), fhex, NULL) == SOMA_OK && !strcmp(hex, fhex));
    }

    CHECK(soma_verify_file(tp("million_a"), mn, million) == SOMA_OK);
    /* Upper-case hex is the same digest. */
    char upper[65];
    for (int i = 0; i < 65; i++) upper[i] = (char)(million[i] >= 'a' && million[i] <= 'f' ? million[i] - 32 : million[i]);
    CHECK(soma_verify_file(tp("million_a"), mn, upper) == SOMA_OK);
    check_err(soma_verify_file(tp("million_a"), mn + 1, million), SOMA_ERR_CHECKSUM,
              "million_a", "size 1000000, expected 1000001", NULL, "verify: wrong size");
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    check_err(soma_verify_file(tp("million_a"), mn, wrong), SOMA_ERR_CHECKSUM,
              "million_a", "SHA-256 cdc76e5c", "expected 0000", "verify: wrong checksum");
    check_err(soma_verify_file(tp("no_such_file"), 1, wrong), SOMA_ERR_IO,
              "no_such_file", "missing", NULL, "verify: missing file");
    check_err(soma_verify_file(tp("million_a"), mn, "abc"), SOMA_ERR_ARG,
              "not 64 hex digits", NULL, NULL, "verify: malformed digest");
    check_err(soma_sha256_file(tp("no_such_file"), fhex, NULL), SOMA_ERR_IO,
              "no_such_file", "No such file or directory", NULL, "sha256_file: missing");

    /* The table: a name not recorded is not checked; a recorded name with
     * other bytes fails naming the file. */
    int known = -1;
    CHECK(soma_verify_known("mnist", tp("million_a"), &known) == SOMA_OK && known == 0);
    write_bytes(tp("train-labels-idx1-ubyte"), ma, 60008);
    check_err(soma_verify_known("mnist", tp("train-labels-idx1-ubyte"), &known), SOMA_ERR_CHECKSUM,
              "train-labels-idx1-ubyte", "SHA-256", "expected 65a50cbb", "verify_known: wrong bytes");
    CHECK(known == 1);
    check_err(soma_verify_known("fashion", tp("train-labels-idx1-ubyte"), NULL), SOMA_ERR_CHECKSUM,
              "train-labels-idx1-ubyte", "expected bad3541b", NULL, "verify_known: fashion table");
    write_bytes(tp("t10k-labels-idx1-ubyte.gz"), ma, 10);
    check_err(soma_verify_known("mnist", tp("t10k-labels-idx1-ubyte.gz"), NULL), SOMA_ERR_CHECKSUM,
              "t10k-labels-idx1-ubyte.gz", "size 10, expected", NULL, "verify_known: wrong size");
    free(ma);
}

/* ------------------------------------------------------------------------ */
/* IDX                                                                      */
/* ------------------------------------------------------------------------ */

static void test_idx(void)
{
    uint8_t px[3 * 4 * 5];
    for (int i = 0; i < 60; i++) px[i] = (uint8_t)(i * 37 + 11);
    uint32_t dims[3] = {3, 4, 5};
    uint8_t buf[256];
    size_t len = make_idx(buf, 0x08, 3, dims, px);
    write_bytes(tp("a.idx"), buf, len);
    write_gzip(tp("a.idx.gz"), buf, len);
    write_gzip(tp("gz_without_suffix"), buf, len);   /* detected by magic */

    const char *files[3] = {"a.idx", "a.idx.gz", "gz_without_suffix"};
    for (int f = 0; f < 3; f++) {
        soma_idx x;
        soma_status st = soma_idx_read(&x, tp(files[f]));
        CHECK(st == SOMA_OK);
        if (st) { fprintf(stderr, "  %s: %s\n", files[f], soma_last_error()); continue; }
        CHECK(x.ndim == 3 && x.dims[0] == 3 && x.dims[1] == 4 && x.dims[2] == 5 && x.dims[3] == 1);
        CHECK(x.data && !memcmp(x.data, px, 60));
        soma_idx_free(&x);
        CHECK(x.data == NULL);
    }
    /* Memory parser, raw and gzip. */
    soma_idx x;
    CHECK(soma_idx_parse(&x, buf, len, "mem") == SOMA_OK && x.dims[2] == 5 && !memcmp(x.data, px, 60));
    soma_idx_free(&x);
    size_t gzn = 0;
    uint8_t *gz = slurp(tp("a.idx.gz"), &gzn);
    CHECK(soma_idx_parse(&x, gz, gzn, "mem.gz") == SOMA_OK && x.ndim == 3 && !memcmp(x.data, px, 60));
    soma_idx_free(&x);
    /* Two gzip members (cat a.gz b.gz) decode as their concatenation. */
    {
        uint8_t hdr[16];
        uint32_t d1[1] = {6};
        size_t hl = make_idx(hdr, 0x08, 1, d1, NULL);
        uint8_t pay[6] = {1, 2, 3, 4, 5, 6};
        write_gzip(tp("m1.gz"), hdr, hl);
        write_gzip(tp("m2.gz"), pay, 6);
        size_t n1, n2;
        uint8_t *g1 = slurp(tp("m1.gz"), &n1), *g2 = slurp(tp("m2.gz"), &n2);
        uint8_t *cat = malloc(n1 + n2);
        memcpy(cat, g1, n1); memcpy(cat + n1, g2, n2);
        CHECK(soma_idx_parse(&x, cat, n1 + n2, "multi.gz") == SOMA_OK && x.dims[0] == 6 &&
              x.data[5] == 6);
        soma_idx_free(&x);
        /* A 1-D, 4-D and zero-length file are valid IDX. */
        uint32_t d4[4] = {2, 1, 3, 1};
        uint8_t b4[64];
        CHECK(soma_idx_parse(&x, b4, make_idx(b4, 0x08, 4, d4, px), "4d") == SOMA_OK && x.ndim == 4);
        soma_idx_free(&x);
        /* Bad gzip: truncated, corrupt, trailing bytes. */
        check_err(soma_idx_parse(&x, g1, n1 - 5, "cut.gz"), SOMA_ERR_FORMAT, "cut.gz",
                  "truncated gzip", NULL, "gzip truncated");
        uint8_t *bad = malloc(n1 + 8);
        memcpy(bad, g1, n1);
        bad[12] ^= 0xff; bad[13] ^= 0x55;
        soma_status st = soma_idx_parse(&x, bad, n1, "corrupt.gz");
        check_err(st, SOMA_ERR_FORMAT, "corrupt.gz", NULL, NULL, "gzip corrupt");
        memcpy(bad, g1, n1);
        memcpy(bad + n1, "GARBAGE!", 8);
        check_err(soma_idx_parse(&x, bad, n1 + 8, "tail.gz"), SOMA_ERR_FORMAT, "tail.gz",
                  "8 trailing bytes after the gzip stream", NULL, "gzip trailing");
        free(bad); free(cat); free(g1); free(g2);
    }
    free(gz);

    /* Missing file: IO naming the path and the OS reason. */
    check_err(soma_idx_read(&x, tp("nope-idx3-ubyte")), SOMA_ERR_IO, "nope-idx3-ubyte",
              ": No such file or directory", NULL, "idx missing");
    CHECK(x.data == NULL);
    /* Wrong magic. */
    uint8_t b[256];
    memcpy(b, buf, len);
    b[0] = 0x50; b[1] = 0x4b;
    write_bytes(tp("magic.idx"), b, len);
    check_err(soma_idx_read(&x, tp("magic.idx")), SOMA_ERR_FORMAT, "magic.idx", "bad magic 50 4b",
              "not an IDX file", "idx wrong magic");
    /* Unsupported data type: float32. */
    len = make_idx(b, 0x0D, 3, dims, px);
    write_bytes(tp("float.idx"), b, len);
    check_err(soma_idx_read(&x, tp("float.idx")), SOMA_ERR_UNSUPPORTED, "float.idx", "0x0d",
              "float32", "idx unsupported dtype");
    /* Rank out of range. */
    len = make_idx(b, 0x08, 3, dims, px);
    b[3] = 5;
    check_err(soma_idx_parse(&x, b, len, "rank5"), SOMA_ERR_FORMAT, "rank5", "rank 5", NULL, "idx rank 5");
    b[3] = 0;
    check_err(soma_idx_parse(&x, b, len, "rank0"), SOMA_ERR_FORMAT, "rank0", "rank 0", NULL, "idx rank 0");
    /* Truncated: header says 60 bytes, 59 present. */
    len = make_idx(b, 0x08, 3, dims, px);
    write_bytes(tp("short.idx"), b, len - 1);
    check_err(soma_idx_read(&x, tp("short.idx")), SOMA_ERR_FORMAT, "short.idx",
              "truncated: header says 3x4x5 = 60 bytes, file has 59", NULL, "idx truncated");
    check_err(soma_idx_parse(&x, b, 10, "hdr"), SOMA_ERR_FORMAT, "hdr", "truncated", NULL,
              "idx truncated header");
    check_err(soma_idx_parse(&x, b, 2, "tiny"), SOMA_ERR_FORMAT, "tiny", "truncated", NULL,
              "idx 2 bytes");
    /* Truncated gzip'd IDX is caught after decompression too. */
    write_gzip(tp("short.idx.gz"), b, len - 1);
    check_err(soma_idx_read(&x, tp("short.idx.gz")), SOMA_ERR_FORMAT, "short.idx.gz",
              "file has 59", NULL, "idx.gz truncated payload");
    /* Trailing bytes. */
    b[len] = 0xAA; b[len + 1] = 0xBB;
    write_bytes(tp("long.idx"), b, len + 2);
    check_err(soma_idx_read(&x, tp("long.idx")), SOMA_ERR_FORMAT, "long.idx", "2 trailing bytes",
              "file has 62", "idx trailing");
    /* Sizes whose product overflows 64 bits must not wrap past the check. */
    uint32_t huge[4] = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    size_t hl = make_idx(b, 0x08, 4, huge, NULL);
    check_err(soma_idx_parse(&x, b, hl, "huge"), SOMA_ERR_FORMAT, "huge", "more than 2^64", NULL,
              "idx overflow");
    uint32_t neg[1] = {0x80000000u};
    hl = make_idx(b, 0x08, 1, neg, NULL);
    check_err(soma_idx_parse(&x, b, hl, "neg"), SOMA_ERR_FORMAT, "neg", "larger than 2^31-1", NULL,
              "idx dimension >= 2^31");
    CHECK(x.data == NULL && x.ndim == 0);

    /* Mutations of a valid buffer never crash and either parse to the
     * right size or fail (a fuzzer in miniature; fuzz/fuzz_idx.c goes further). */
    soma_rng r;
    soma_rng_seed(&r, 7);
    len = make_idx(buf, 0x08, 3, dims, px);
    for (int it = 0; it < 3000; it++) {
        memcpy(b, buf, len);
        size_t n = len;
        int k = 1 + (int)soma_rng_below(&r, 4);
        for (int j = 0; j < k; j++) b[soma_rng_below(&r, (uint32_t)n)] = (uint8_t)soma_rng_u32(&r);
        if (soma_rng_below(&r, 4) == 0) n = soma_rng_below(&r, (uint32_t)len + 1);
        soma_status st = soma_idx_parse(&x, b, n, "mut");
        if (st == SOMA_OK) {
            int64_t p = 1;
            for (int i = 0; i < x.ndim; i++) p *= x.dims[i];
            if (!(p == (int64_t)n - 4 - 4 * x.ndim)) { CHECK(0); break; }
            soma_idx_free(&x);
        } else if (!(st == SOMA_ERR_FORMAT || st == SOMA_ERR_UNSUPPORTED)) {
            CHECK(0);
            break;
        }
    }
    CHECK(1);
}

/* ------------------------------------------------------------------------ */
/* MNIST-style datasets from files written here.                            */
/* ------------------------------------------------------------------------ */

static void test_idx_dataset(void)
{
    soma_dataset *ds = NULL;
    write_mnist_pair(tp("im"), tp("lb"), 25, 25, -1, 0);
    CHECK(soma_dataset_load_idx(&ds, "mnist", tp("im"), tp("lb")) == SOMA_OK);
    if (ds) {
        CHECK(ds->n == 25 && ds->c == 1 && ds->h == 28 && ds->w == 28 && ds->classes == 10);
        CHECK(!strcmp(ds->name, "mnist") && ds->owns == 1);
        CHECK(ds->labels[13] == 3 && ds->pixels[13 * 784 + 5] == (uint8_t)((13 * 7 + 5) & 255));
        CHECK(ds->mean[0] == 0.1307f && ds->std[0] == 0.3081f);
        /* Subset views share memory. */
        soma_dataset *v = NULL;
        CHECK(soma_dataset_subset(&v, ds, 10, 5) == SOMA_OK);
        if (v) {
            CHECK(v->n == 5 && v->owns == 0 && v->pixels == ds->pixels + 10 * 784 &&
                  v->labels == ds->labels + 10 && v->labels[0] == 0);
            soma_dataset_free(v);
        }
        check_err(soma_dataset_subset(&v, ds, 20, 6), SOMA_ERR_ARG, "out of range", "25 samples",
                  NULL, "subset past the end");
        CHECK(v == NULL);
        check_err(soma_dataset_subset(&v, ds, -1, 2), SOMA_ERR_ARG, "out of range", NULL, NULL,
                  "subset negative start");
        check_err(soma_dataset_subset(&v, ds, 1, 0), SOMA_ERR_ARG, "out of range", NULL, NULL,
                  "subset empty");
        check_err(soma_dataset_subset(&v, ds, 2, 2147483647), SOMA_ERR_ARG, "out of range", NULL, NULL,
                  "subset overflow");
        soma_dataset_free(ds);
        ds = NULL;
    }
    soma_dataset_free(NULL);
    /* gz pair, fashion statistics. */
    write_mnist_pair(tp("im.gz"), tp("lb.gz"), 12, 12, -1, 1);
    CHECK(soma_dataset_load_idx(&ds, "fashion", tp("im.gz"), tp("lb.gz")) == SOMA_OK &&
          ds->n == 12 && ds->mean[0] == 0.2860f && ds->std[0] == 0.3530f);
    soma_dataset_free(ds);
    ds = NULL;

    write_mnist_pair(tp("im_b"), tp("lb_b"), 20, 20, 17, 0);
    check_err(soma_dataset_load_idx(&ds, "mnist", tp("im_b"), tp("lb_b")), SOMA_ERR_FORMAT,
              "lb_b", "label 10 at index 17", NULL, "label out of range");
    CHECK(ds == NULL);
    write_mnist_pair(tp("im_c"), tp("lb_c"), 20, 19, -1, 0);
    check_err(soma_dataset_load_idx(&ds, "mnist", tp("im_c"), tp("lb_c")), SOMA_ERR_FORMAT,
              "has 20 images", "has 19 labels", "lb_c", "count mismatch");
    check_err(soma_dataset_load_idx(&ds, "kmnist", tp("im"), tp("lb")), SOMA_ERR_ARG,
              "unknown IDX dataset 'kmnist'", NULL, NULL, "unknown IDX name");
    /* Images of the wrong shape (e.g. labels passed as images). */
    check_err(soma_dataset_load_idx(&ds, "mnist", tp("lb"), tp("lb")), SOMA_ERR_FORMAT,
              "expected Nx28x28", NULL, NULL, "images not 28x28");
    check_err(soma_dataset_load_idx(&ds, "mnist", tp("im"), tp("missing_labels")), SOMA_ERR_IO,
              "missing_labels", "No such file", NULL, "labels missing");

    /* soma_dataset_open over a directory of four files, raw and gz mixed. */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/mn", tmpdir);
    mkdir(dir, 0700);
    remember(dir);   /* before its files: removal runs in reverse */
    char a[256], bb[256];
    snprintf(a, sizeof a, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(bb, sizeof bb, "%s/train-labels-idx1-ubyte", dir);
    write_mnist_pair(a, bb, 30, 30, -1, 0);   /* raw bytes under a .gz name: magic decides */
    snprintf(a, sizeof a, "%s/t10k-images-idx3-ubyte", dir);
    snprintf(bb, sizeof bb, "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_mnist_pair(a, bb, 11, 11, -1, 1);
    soma_dataset *tr = NULL, *te = NULL;
    CHECK(soma_dataset_open(&tr, &te, "mnist", dir, 0) == SOMA_OK && tr && te &&
          tr->n == 30 && te->n == 11);
    soma_dataset_free(tr); soma_dataset_free(te);
    tr = te = NULL;
    CHECK(soma_dataset_open(NULL, &te, "mnist", dir, 0) == SOMA_OK && te && te->n == 11);
    soma_dataset_free(te); te = NULL;
    /* verify on: these names are in the table, these bytes are not. */
    check_err(soma_dataset_open(&tr, &te, "mnist", dir, 1), SOMA_ERR_CHECKSUM,
              "train-images-idx3-ubyte.gz", "size", NULL, "open verifies recorded names");
    CHECK(tr == NULL && te == NULL);
    check_err(soma_dataset_open(&tr, &te, "svhn", dir, 0), SOMA_ERR_ARG, "unknown dataset 'svhn'",
              NULL, NULL, "open unknown name");
    check_err(soma_dataset_open(&tr, &te, "mnist", tp("no_dir"), 0), SOMA_ERR_IO, "no_dir",
              "No such file or directory", NULL, "open missing dir");
    check_err(soma_dataset_open(&tr, &te, "fashion", tmpdir, 0), SOMA_ERR_IO,
              "train-images-idx3-ubyte", "No such file or directory", NULL, "open missing files");
    check_err(soma_dataset_open(NULL, NULL, "mnist", dir, 0), SOMA_ERR_ARG, "both NULL", NULL, NULL,
              "open nothing requested");
}

/* ------------------------------------------------------------------------ */
/* CIFAR-10                                                                 */
/* ------------------------------------------------------------------------ */

/* n records: label (first + i) % 10, pixel p = (i*13 + p) & 255. */
static uint8_t *make_cifar(int n, int first, size_t *len)
{
    *len = (size_t)n * 3073;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < n; i++) {
        b[(size_t)i * 3073] = (uint8_t)((first + i) % 10);
        for (int p = 0; p < 3072; p++) b[(size_t)i * 3073 + 1 + p] = (uint8_t)((i * 13 + p) & 255);
    }
    return b;
}

static void test_cifar(void)
{
    size_t len, xn;
    uint8_t *raw = make_cifar(7, 0, &len);
    write_bytes(tp("c_raw.bin"), raw, len);
    uint8_t *xz = xz_encode(raw, len, &xn);
    write_bytes(tp("c_xz.bin.xz"), xz, xn);
    const char *files[2] = {tp("c_raw.bin"), tp("c_xz.bin.xz")};
    soma_dataset *ds = NULL;
    CHECK(soma_dataset_load_cifar10(&ds, files, 2) == SOMA_OK);
    if (ds) {
        CHECK(ds->n == 14 && ds->c == 3 && ds->h == 32 && ds->w == 32 && ds->classes == 10);
        CHECK(!strcmp(ds->name, "cifar10") && ds->mean[2] == 0.4465f && ds->std[1] == 0.2435f);
        CHECK(ds->labels[3] == 3 && ds->labels[7 + 6] == 6);
        CHECK(!memcmp(ds->pixels + 3 * 3072, raw + 3 * 3073 + 1, 3072));
        CHECK(!memcmp(ds->pixels + 9 * 3072, raw + 2 * 3073 + 1, 3072));
        soma_dataset_free(ds);
        ds = NULL;
    }
    /* Not a whole number of records. */
    write_bytes(tp("c_odd.bin"), raw, len - 100);
    const char *odd[1] = {tp("c_odd.bin")};
    check_err(soma_dataset_load_cifar10(&ds, odd, 1), SOMA_ERR_FORMAT, "c_odd.bin",
              "not a whole number of 3073-byte", NULL, "cifar partial record");
    /* Label 10 in record 4. */
    raw[4 * 3073] = 10;
    write_bytes(tp("c_lab.bin"), raw, len);
    const char *lab[2] = {tp("c_raw.bin"), tp("c_lab.bin")};
    check_err(soma_dataset_load_cifar10(&ds, lab, 2), SOMA_ERR_FORMAT, "c_lab.bin",
              "record 4 has label 10", NULL, "cifar label out of range");
    /* Truncated xz. */
    write_bytes(tp("c_cut.bin.xz"), xz, xn / 2);
    const char *cut[1] = {tp("c_cut.bin.xz")};
    check_err(soma_dataset_load_cifar10(&ds, cut, 1), SOMA_ERR_FORMAT, "c_cut.bin.xz", "xz",
              NULL, "cifar truncated xz");
    const char *miss[1] = {tp("c_none.bin")};
    check_err(soma_dataset_load_cifar10(&ds, miss, 1), SOMA_ERR_IO, "c_none.bin",
              "No such file or directory", NULL, "cifar missing");
    check_err(soma_dataset_load_cifar10(&ds, files, 0), SOMA_ERR_ARG, "at least one file", NULL,
              NULL, "cifar no files");
    CHECK(ds == NULL);
    free(raw); free(xz);

    /* soma_dataset_open("cifar10") over a directory: .bin and .bin.xz mixed. */
    char dir[128], p[256];
    snprintf(dir, sizeof dir, "%s/cf", tmpdir);
    mkdir(dir, 0700);
    remember(dir);
    for (int b = 1; b <= 6; b++) {
        uint8_t *r = make_cifar(2 + b, b, &len);
        if (b == 6) snprintf(p, sizeof p, "%s/test_batch.bin.xz", dir);
        else snprintf(p, sizeof p, "%s/data_batch_%d.bin%s", dir, b, b % 2 ? ".xz" : "");
        if (b % 2 == 0) {
            write_bytes(p, r, len);
        } else {
            uint8_t *z = xz_encode(r, len, &xn);
            write_bytes(p, z, xn);
            free(z);
        }
        free(r);
    }
    soma_dataset *tr = NULL, *te = NULL;
    CHECK(soma_dataset_open(&tr, &te, "cifar10", dir, 0) == SOMA_OK && tr && te &&
          tr->n == 3 + 4 + 5 + 6 + 7 && te->n == 8 && tr->labels[3] == 2 && te->labels[0] == 6);
    soma_dataset_free(tr); soma_dataset_free(te);
    tr = te = NULL;
    check_err(soma_dataset_open(&tr, &te, "cifar10-4k", dir, 0), SOMA_ERR_IO,
              "data_batch_1_first4000.bin", "No such file", NULL, "cifar10-4k missing");
}

/* The real CIFAR-10 subsets: data/cifar10 after scripts/data.sh (the layout
 * the CLI opens), else the shared folders directly, else skipped. */
static void check_cifar_4k(const soma_dataset *tr)
{
    CHECK(tr->n == 4000 && tr->c == 3 && tr->h == 32 && tr->w == 32);
    int hist[10] = {0}, sum = 0, bad = 0;
    for (int i = 0; i < tr->n; i++) {
        if (tr->labels[i] < 0 || tr->labels[i] > 9) bad++;
        else hist[tr->labels[i]]++;
    }
    for (int k = 0; k < 10; k++) { sum += hist[k]; bad += hist[k] == 0; }
    CHECK(sum == 4000 && bad == 0);
    /* Facts quoted in the folder README: the first training labels and the
     * first red bytes of image 0. */
    static const int first_labels[10] = {6, 9, 9, 4, 1, 1, 2, 7, 8, 3};
    int ok = 1;
    for (int i = 0; i < 10; i++) ok &= tr->labels[i] == first_labels[i];
    CHECK(ok);
    static const uint8_t red0[8] = {59, 43, 50, 68, 98, 119, 139, 145};
    CHECK(!memcmp(tr->pixels, red0, 8));
}

static void check_cifar_test(const soma_dataset *te)
{
    CHECK(te->n == 10000);
    int hist[10] = {0}, ok = 1;
    for (int i = 0; i < te->n; i++) hist[te->labels[i]]++;
    for (int k = 0; k < 10; k++) ok &= hist[k] == 1000;
    CHECK(ok);
    static const int first[10] = {3, 8, 8, 0, 6, 6, 1, 6, 3, 1};
    ok = 1;
    for (int i = 0; i < 10; i++) ok &= te->labels[i] == first[i];
    CHECK(ok);
}

static void test_cifar_real(void)
{
    const char *exact = "../shared/data/cifar10/exact-train-first4000";
    const char *jpeg = "../shared/data/cifar10/jpeg-derived-batches-bin";
    soma_dataset *tr = NULL, *te = NULL;
    soma_status st;
    if (dir_exists("data/cifar10")) {
        /* What `soma train --data cifar10-4k` opens. */
        st = soma_dataset_open(&tr, &te, "cifar10-4k", "data/cifar10", 1);
        CHECK(st == SOMA_OK);
        if (st) fprintf(stderr, "  data/cifar10 (cifar10-4k): %s\n", soma_last_error());
    } else {
        if (dir_exists(exact)) {
            st = soma_dataset_open(&tr, NULL, "cifar10-4k", exact, 1);
            CHECK(st == SOMA_OK);
            if (st) fprintf(stderr, "  %s: %s\n", exact, soma_last_error());
        }
        if (dir_exists(jpeg)) {
            st = soma_dataset_open(NULL, &te, "cifar10", jpeg, 1);
            CHECK(st == SOMA_OK);
            if (st) fprintf(stderr, "  %s: %s\n", jpeg, soma_last_error());
        }
    }
    if (tr) check_cifar_4k(tr);
    else printf("test_data: no CIFAR-10 4000-record subset found, skipped\n");
    if (te) check_cifar_test(te);
    else printf("test_data: no CIFAR-10 test batch found, skipped\n");
    soma_dataset_free(tr);
    soma_dataset_free(te);
}

/* ------------------------------------------------------------------------ */
/* Loader                                                                   */
/* ------------------------------------------------------------------------ */

/* A hand-built dataset (owns = 0: the test frees its arrays). */
static soma_dataset synth(int n, int c, int h, int w, uint8_t *px, int32_t *lb)
{
    soma_dataset d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "synth");
    d.n = n; d.c = c; d.h = h; d.w = w; d.classes = 10;
    d.pixels = px; d.labels = lb;
    for (int k = 0; k < 3; k++) { d.mean[k] = 0.25f + 0.125f * (float)k; d.std[k] = 0.5f - 0.0625f * (float)k; }
    return d;
}

/* Collects the dataset order of one epoch; checks every batch on the way. */
static int epoch_order(soma_loader *l, int epoch, uint32_t *order, const soma_dataset *ds,
                       int batch, int *nbatches)
{
    soma_loader_start_epoch(l, epoch);
    soma_batch b;
    int k = 0, nb = 0;
    while (soma_loader_next(l, &b)) {
        nb++;
        if (b.n <= 0 || b.n > batch || b.c != ds->c || b.h != ds->h || b.w != ds->w) return -1;
        for (int i = 0; i < b.n; i++) {
            if (b.y[i] != ds->labels[b.index[i]]) return -1;
            order[k++] = b.index[i];
        }
    }
    *nbatches = nb;
    return k;
}

static void test_loader(void)
{
    enum { N = 103, C = 3, H = 8, W = 8 };
    uint8_t *px = malloc((size_t)N * C * H * W);
    int32_t lb[N];
    /* Pixel values 1..192 tell channel and position apart; 0 never occurs,
     * so padding is recognisable. */
    for (int i = 0; i < N; i++) {
        lb[i] = i % 10;
        for (int ch = 0; ch < C; ch++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    px[(((size_t)i * C + ch) * H + y) * W + x] =
                        (uint8_t)(1 + ch * 64 + y * 8 + x);
    }
    soma_dataset ds = synth(N, C, H, W, px, lb);
    soma_loader_config cfg = {.batch = 10, .seed = 42, .shuffle = 1};
    soma_loader *l = NULL, *l2 = NULL;
    CHECK(soma_loader_new(&l, &ds, &cfg) == SOMA_OK);
    CHECK(soma_loader_batches(l) == 11);
    uint32_t o1[N], o2[N], o3[N];
    int nb = 0;
    CHECK(epoch_order(l, 0, o1, &ds, 10, &nb) == N && nb == 11);
    int seen[N] = {0}, dup = 0;
    for (int i = 0; i < N; i++) dup += seen[o1[i]]++ != 0;
    CHECK(dup == 0);
    /* Same (seed, epoch) in a fresh loader: the same order. */
    CHECK(soma_loader_new(&l2, &ds, &cfg) == SOMA_OK);
    CHECK(epoch_order(l2, 0, o2, &ds, 10, &nb) == N && !memcmp(o1, o2, sizeof o1));
    /* Another epoch, then back: different, then identical. */
    CHECK(epoch_order(l, 1, o3, &ds, 10, &nb) == N && memcmp(o1, o3, sizeof o1) != 0);
    memset(seen, 0, sizeof seen); dup = 0;
    for (int i = 0; i < N; i++) dup += seen[o3[i]]++ != 0;
    CHECK(dup == 0);
    CHECK(epoch_order(l, 0, o3, &ds, 10, &nb) == N && !memcmp(o1, o3, sizeof o1));
    soma_loader_free(l2);
    /* Another seed: another order. */
    cfg.seed = 43;
    CHECK(soma_loader_new(&l2, &ds, &cfg) == SOMA_OK);
    CHECK(epoch_order(l2, 0, o2, &ds, 10, &nb) == N && memcmp(o1, o2, sizeof o1) != 0);
    soma_loader_free(l2);
    soma_loader_free(l);
    l = l2 = NULL;

    /* No shuffle: dataset order; drop_last drops the short batch. */
    cfg = (soma_loader_config){.batch = 10, .seed = 1, .shuffle = 0, .drop_last = 1};
    CHECK(soma_loader_new(&l, &ds, &cfg) == SOMA_OK && soma_loader_batches(l) == 10);
    int k = epoch_order(l, 3, o1, &ds, 10, &nb);
    CHECK(k == 100 && nb == 10);
    int ident = 1;
    for (int i = 0; i < k; i++) ident &= o1[i] == (uint32_t)i;
    CHECK(ident);
    /* Values without normalisation: pixel/255 in float32. */
    soma_loader_start_epoch(l, 0);
    soma_batch b;
    CHECK(soma_loader_next(l, &b) == 1);
    int vals = 1;
    for (size_t i = 0; i < (size_t)10 * C * H * W; i++) vals &= b.x[i] == (float)px[i] / 255.0f;
    CHECK(vals);
    soma_loader_free(l);
    l = NULL;

    /* Normalisation: (v/255 - mean[c]) / std[c] per channel, as torchvision. */
    cfg = (soma_loader_config){.batch = 7, .seed = 1, .normalize = 1};
    CHECK(soma_loader_new(&l, &ds, &cfg) == SOMA_OK);
    CHECK(soma_loader_batches(l) == 15);
    CHECK(soma_loader_next(l, &b) == 1 && b.n == 7);
    vals = 1;
    for (int i = 0; i < 7; i++)
        for (int ch = 0; ch < C; ch++)
            for (int p = 0; p < H * W; p++) {
                float v = (float)px[((size_t)i * C + ch) * H * W + p] / 255.0f;
                float want = (v - ds.mean[ch]) / ds.std[ch];
                vals &= b.x[((size_t)i * C + ch) * H * W + p] == want;
            }
    CHECK(vals);
    /* The last of 15 batches holds 103 - 14*7 = 5 samples. */
    int last = 0;
    while (soma_loader_next(l, &b)) last = b.n;
    CHECK(last == 5);
    CHECK(soma_loader_next(l, &b) == 0);
    soma_loader_free(l);
    l = NULL;

    /* Crop + flip: every output plane is the source shifted by (dy, dx) with
     * |dy|,|dx| <= pad, maybe mirrored, padded with the value of byte 0. */
    const int pad = 2;
    cfg = (soma_loader_config){.batch = 16, .seed = 5, .shuffle = 1, .crop_pad = pad, .hflip = 1,
                               .normalize = 1};
    CHECK(soma_loader_new(&l, &ds, &cfg) == SOMA_OK);
    CHECK(soma_loader_new(&l2, &ds, &cfg) == SOMA_OK);
    int shapes_ok = 1, same = 1, flips[2] = {0, 0}, offsets[5][5] = {{0}};
    soma_loader_start_epoch(l, 2);
    soma_loader_start_epoch(l2, 2);
    soma_batch b2;
    while (soma_loader_next(l, &b)) {
        same &= soma_loader_next(l2, &b2) == 1 && b2.n == b.n &&
                !memcmp(b.x, b2.x, (size_t)b.n * C * H * W * sizeof(float)) &&
                !memcmp(b.index, b2.index, (size_t)b.n * sizeof *b.index);
        for (int s = 0; s < b.n; s++) {
            const uint8_t *src = px + (size_t)b.index[s] * C * H * W;
            /* Find the (oy, ox, flip) that explains the sample exactly. */
            int found = 0;
            for (int f = 0; f < 2 && !found; f++)
                for (int oy = 0; oy <= 2 * pad && !found; oy++)
                    for (int ox = 0; ox <= 2 * pad && !found; ox++) {
                        int ok = 1;
                        for (int ch = 0; ch < C && ok; ch++) {
                            float padv = (0.0f - ds.mean[ch]) / ds.std[ch];
                            for (int y = 0; y < H && ok; y++)
                                for (int x = 0; x < W && ok; x++) {
                                    int sy = y + oy - pad, sx = (f ? W - 1 - x : x) + ox - pad;
                                    float want = padv;
                                    if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                                        want = ((float)src[(ch * H + sy) * W + sx] / 255.0f - ds.mean[ch]) / ds.std[ch];
                                    ok = b.x[(((size_t)s * C + ch) * H + y) * W + x] == want;
                                }
                        }
                        if (ok) { found = 1; flips[f]++; offsets[oy][ox]++; }
                    }
            shapes_ok &= found;
        }
    }
    CHECK(same);
    CHECK(shapes_ok);
    int used = 0;
    for (int i = 0; i < 5; i++) for (int j = 0; j < 5; j++) used += offsets[i][j] > 0;
    CHECK(flips[0] > 20 && flips[1] > 20 && used >= 20);
    /* A different epoch draws different augmentations. */
    soma_loader_start_epoch(l, 2);
    soma_loader_start_epoch(l2, 3);
    CHECK(soma_loader_next(l, &b) && soma_loader_next(l2, &b2) &&
          memcmp(b.x, b2.x, (size_t)b.n * C * H * W * sizeof(float)) != 0);
    /* The batch buffer is the loader's and stays put (no per-batch malloc). */
    float *x0 = b.x;
    CHECK(soma_loader_next(l, &b) && b.x == x0);
    soma_loader_free(l);
    soma_loader_free(l2);
    l = l2 = NULL;

    /* Subset through the loader. */
    soma_dataset *v = NULL;
    CHECK(soma_dataset_subset(&v, &ds, 50, 20) == SOMA_OK);
    cfg = (soma_loader_config){.batch = 8, .seed = 9, .shuffle = 1};
    CHECK(soma_loader_new(&l, v, &cfg) == SOMA_OK);
    k = epoch_order(l, 0, o1, v, 8, &nb);
    CHECK(k == 20 && nb == 3);
    soma_loader_start_epoch(l, 0);
    CHECK(soma_loader_next(l, &b) && b.y[0] == lb[50 + b.index[0]] &&
          b.x[0] == (float)px[(size_t)(50 + b.index[0]) * C * H * W] / 255.0f);
    soma_loader_free(l);
    soma_dataset_free(v);
    l = NULL;

    /* Validation. */
    cfg = (soma_loader_config){.batch = 0};
    check_err(soma_loader_new(&l, &ds, &cfg), SOMA_ERR_ARG, "batch must be > 0, got 0", NULL, NULL,
              "batch 0");
    cfg.batch = -3;
    check_err(soma_loader_new(&l, &ds, &cfg), SOMA_ERR_ARG, "batch must be > 0, got -3", NULL, NULL,
              "batch negative");
    cfg = (soma_loader_config){.batch = 200, .drop_last = 1};
    check_err(soma_loader_new(&l, &ds, &cfg), SOMA_ERR_ARG, "drop_last", "103", NULL,
              "drop_last leaves nothing");
    cfg = (soma_loader_config){.batch = 4, .crop_pad = -1};
    check_err(soma_loader_new(&l, &ds, &cfg), SOMA_ERR_ARG, "crop_pad", "-1", NULL, "crop_pad < 0");
    cfg.crop_pad = 8;
    check_err(soma_loader_new(&l, &ds, &cfg), SOMA_ERR_ARG, "crop_pad", "8", NULL, "crop_pad >= h");
    CHECK(l == NULL);
    soma_loader_free(NULL);
    free(px);
}

/* ------------------------------------------------------------------------ */
/* Every allocation failure is reported and leaks nothing (under ASan).     */
/* ------------------------------------------------------------------------ */

static void test_faults(void)
{
    int bad = 0, tries;
    soma_idx x;
    for (tries = 1; tries < 200; tries++) {
        soma__fault_after(tries);
        soma_status st = soma_idx_read(&x, tp("a.idx.gz"));
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_idx_free(&x); break; }
        bad += st != SOMA_ERR_NOMEM;
    }
    CHECK(bad == 0 && tries > 1 && tries < 200);

    const char *files[2] = {tp("c_raw.bin"), tp("c_xz.bin.xz")};
    bad = 0;
    for (tries = 1; tries < 500; tries++) {
        soma_dataset *ds = NULL;
        soma__fault_after(tries);
        soma_status st = soma_dataset_load_cifar10(&ds, files, 2);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_dataset_free(ds); break; }
        bad += st != SOMA_ERR_NOMEM || ds != NULL;
    }
    CHECK(bad == 0 && tries > 1 && tries < 500);

    char dir[128];
    snprintf(dir, sizeof dir, "%s/mn", tmpdir);
    bad = 0;
    for (tries = 1; tries < 200; tries++) {
        soma_dataset *tr = NULL, *te = NULL;
        soma__fault_after(tries);
        soma_status st = soma_dataset_open(&tr, &te, "mnist", dir, 0);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_dataset_free(tr); soma_dataset_free(te); break; }
        bad += st != SOMA_ERR_NOMEM || tr || te;
    }
    CHECK(bad == 0 && tries > 1 && tries < 200);

    uint8_t px[4 * 3 * 4 * 4] = {0};
    int32_t lb[4] = {0, 1, 2, 3};
    soma_dataset ds = synth(4, 3, 4, 4, px, lb);
    soma_loader_config cfg = {.batch = 2, .shuffle = 1, .crop_pad = 1};
    bad = 0;
    for (tries = 1; tries < 50; tries++) {
        soma_loader *l = NULL;
        soma__fault_after(tries);
        soma_status st = soma_loader_new(&l, &ds, &cfg);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_loader_free(l); break; }
        bad += st != SOMA_ERR_NOMEM || l != NULL;
    }
    CHECK(bad == 0 && tries > 1 && tries < 50);
}

/* ------------------------------------------------------------------------ */
/* Real MNIST / Fashion-MNIST, after scripts/data.sh.                       */
/* ------------------------------------------------------------------------ */

static void test_real_idx(const char *name, const char *dir, const int *want_counts, int test_each)
{
    if (!dir_exists(dir)) {
        printf("test_data: %s absent, skipping real %s (run `sh scripts/data.sh`)\n", dir, name);
        return;
    }
    soma_dataset *tr = NULL, *te = NULL;
    soma_status st = soma_dataset_open(&tr, &te, name, dir, 1);
    CHECK(st == SOMA_OK);
    if (st) { fprintf(stderr, "  %s: %s\n", name, soma_last_error()); return; }
    CHECK(tr->n == 60000 && te->n == 10000 && tr->c == 1 && tr->h == 28 && tr->w == 28);
    int cnt[10] = {0}, tcnt[10] = {0}, ok = 1, tok = 1;
    for (int i = 0; i < tr->n; i++) cnt[tr->labels[i]]++;
    for (int i = 0; i < te->n; i++) tcnt[te->labels[i]]++;
    for (int k = 0; k < 10; k++) {
        ok &= cnt[k] == want_counts[k];
        if (test_each) tok &= tcnt[k] == test_each;
    }
    if (!ok) {
        fprintf(stderr, "  %s train label counts:", name);
        for (int k = 0; k < 10; k++) fprintf(stderr, " %d", cnt[k]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
    CHECK(tok);
    /* One epoch of the loader over the training set, normalised. */
    soma_loader_config cfg = {.batch = 256, .seed = 1, .shuffle = 1, .normalize = 1};
    soma_loader *l = NULL;
    CHECK(soma_loader_new(&l, tr, &cfg) == SOMA_OK && soma_loader_batches(l) == 235);
    if (l) {
        soma_batch b;
        double sum = 0;
        long cntv = 0;
        while (soma_loader_next(l, &b))
            for (size_t i = 0; i < (size_t)b.n * 784; i++) { sum += b.x[i]; cntv++; }
        /* The published statistics normalise the training set to mean ~0. */
        CHECK(cntv == 60000L * 784 && fabs(sum / (double)cntv) < 2e-3);
        soma_loader_free(l);
    }
    soma_dataset_free(tr);
    soma_dataset_free(te);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/soma_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }

    test_sha256();
    test_idx();
    test_idx_dataset();
    test_cifar();
    test_cifar_real();
    test_loader();
    test_faults();
    static const int mnist_counts[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    static const int fashion_counts[10] = {6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000};
    test_real_idx("mnist", "data/mnist", mnist_counts, 0);
    test_real_idx("fashion", "data/fashion", fashion_counts, 1000);

    for (int i = n_made - 1; i >= 0; i--) remove(made[i]);
    if (rmdir(tmpdir) != 0) fprintf(stderr, "note: could not remove %s: %s\n", tmpdir, strerror(errno));
    return check_report("test_data");
}
