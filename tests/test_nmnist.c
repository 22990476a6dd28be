/*
 * test_nmnist.c - the N-MNIST dataset (soma_dataset_open_nmnist): listings,
 * event files binned into T frames of bytes, SHA256SUMS verification, the
 * loader on a raw dataset and the frames encoder on its batches.
 *
 * Folders of listings and event files are written here, into a fresh
 * temporary directory; the real subset is tested only when present (run
 * from the repository root): ../shared/data/nmnist-subset.
 */
#include "check.h"
#include "soma_internal.h"   /* soma__fault_after */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { S = 34, PLANE = S * S, FRAME = 2 * PLANE };

static char tmpdir[64];
static char made[64][256];   /* files and folders to remove, in order */
static int n_made;

static void remember(const char *path)
{
    if (n_made < 64) snprintf(made[n_made++], sizeof made[0], "%s", path);
}

/* tmpdir/a[/b]: a path in one of four rotating buffers. */
static const char *tp2(const char *a, const char *b)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) & 3;
    if (b) snprintf(buf[k], sizeof buf[k], "%s/%s/%s", tmpdir, a, b);
    else snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, a);
    return buf[k];
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot mkdir %s: %s\n", path, strerror(errno));
        exit(2);
    }
    remember(path);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno)); exit(2); }
    if (n && fwrite(data, 1, n, f) != n) { fprintf(stderr, "short write %s\n", path); exit(2); }
    fclose(f);
    for (int i = 0; i < n_made; i++)
        if (!strcmp(made[i], path)) return;
    remember(path);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static int dir_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Checks status and that the message contains every given fragment. */
static int check_err_at(soma_status got, soma_status want, const char *a, const char *b,
                        const char *file, int line)
{
    const char *msg = soma_last_error();
    int ok = got == want && (!a || strstr(msg, a)) && (!b || strstr(msg, b));
    if (!ok)
        fprintf(stderr, "  status %d (want %d), message \"%s\" (want \"%s\"%s%s%s)\n", got, want,
                msg, a ? a : "", b ? ", \"" : "", b ? b : "", b ? "\"" : "");
    return check_true(ok, "error status and message", file, line);
}
#define CHECK_ERR(got, want, a, b) check_err_at((got), (want), (a), (b), __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */
/* Synthetic event files.                                                   */
/* ------------------------------------------------------------------------ */

static void put_event(uint8_t *p, const soma_event *e)
{
    p[0] = (uint8_t)e->x;
    p[1] = (uint8_t)e->y;
    p[2] = (uint8_t)((e->p << 7) | ((e->t >> 16) & 0x7f));
    p[3] = (uint8_t)(e->t >> 8);
    p[4] = (uint8_t)e->t;
}

typedef struct sample { soma_event ev[400]; size_t n; } sample;

/* Writes the events of s as an N-MNIST file. */
static void write_sample(const char *path, const sample *s)
{
    static uint8_t buf[400 * 5];
    for (size_t i = 0; i < s->n; i++) put_event(buf + 5 * i, &s->ev[i]);
    write_bytes(path, buf, s->n * 5);
}

/* Three samples: A spreads 40 events over both polarities and [1000, 5000];
 * B puts 300 ON events on one pixel in its first frame (count > 255: clipped)
 * plus a few others; C has no events at all. */
static sample A, B, C;

static void make_samples(void)
{
    A.n = 40;
    for (size_t i = 0; i < A.n; i++)
        A.ev[i] = (soma_event){.x = (uint16_t)(i % 34), .y = (uint16_t)((i * 7) % 34),
                               .p = (uint8_t)(i % 3 == 0), .t = (uint32_t)(1000 + 100 * i)};
    A.ev[A.n - 1].t = 5000;   /* the span is [1000, 5000] */
    B.n = 0;
    for (int i = 0; i < 300; i++) B.ev[B.n++] = (soma_event){.x = 33, .y = 0, .p = 1, .t = 10};
    B.ev[B.n++] = (soma_event){.x = 0, .y = 33, .p = 0, .t = 900};
    B.ev[B.n++] = (soma_event){.x = 1, .y = 2, .p = 1, .t = 500};
    B.ev[B.n++] = (soma_event){.x = 1, .y = 2, .p = 1, .t = 501};
    C.n = 0;
}

static void sha_hex(char hex[65], const char *path)
{
    uint64_t n;
    if (soma_sha256_file(path, hex, &n) != SOMA_OK) { fprintf(stderr, "%s\n", soma_last_error()); exit(2); }
}

/* tmpdir/d: listings, the three samples (ids 1, 2, 3; 2 also as sub/two.ev)
 * and a SHA256SUMS in sha256sum's text and binary forms. */
static void make_folder(const char *d)
{
    make_dir(tp2(d, NULL));
    make_dir(tp2(d, "sub"));
    write_sample(tp2(d, "1.bs2"), &A);
    write_sample(tp2(d, "2.bs2"), &B);
    write_sample(tp2(d, "3.bs2"), &C);
    write_sample(tp2(d, "sub/two.ev"), &B);
    /* As in the subset: '#' header, tab, CRLF.  Test: spaces, LF, a path,
     * a blank line and a comment in the middle. */
    write_text(tp2(d, "train1K.txt"), "#sample #class\r\n1\t5\r\n2\t0\r\n3\t9\r\n");
    write_text(tp2(d, "test100.txt"), "# test\n  2  7 \n\n# a path:\nsub/two.ev\t3\n");
    const char *names[] = {"1.bs2", "2.bs2", "3.bs2", "sub/two.ev", "train1K.txt", "test100.txt"};
    char text[2048] = "", hex[65], line[256];
    for (int i = 0; i < 6; i++) {
        sha_hex(hex, tp2(d, names[i]));
        /* sha256sum's forms: "<hex>  name", "<hex> *name" (binary), "./name" */
        snprintf(line, sizeof line, "%s %s%s\n", hex, i == 1 ? "*" : i == 2 ? " ./" : " ",
                 names[i]);
        strcat(text, line);
    }
    write_text(tp2(d, "SHA256SUMS"), text);
}

/* The bytes a sample must hold: soma_events_to_frames over its own span,
 * clipped to 255. */
static void expected_bytes(uint8_t *out, const sample *s, int T, int binary)
{
    float *f = malloc((size_t)T * FRAME * sizeof *f);
    if (!f || soma_events_to_frames(f, s->ev, s->n, T, S, S, 0, 0, binary) != SOMA_OK) exit(2);
    for (size_t k = 0; k < (size_t)T * FRAME; k++) out[k] = f[k] > 255 ? 255 : (uint8_t)f[k];
    free(f);
}

static void test_synthetic(void)
{
    enum { T = 4 };
    make_samples();
    make_folder("ok");
    soma_dataset *tr = NULL, *te = NULL;
    soma_status st = soma_dataset_open_nmnist(&tr, &te, tp2("ok", NULL), T, 0, 1);
    CHECK(st == SOMA_OK);
    if (st) { fprintf(stderr, "  %s\n", soma_last_error()); return; }
    CHECK(tr && te);
    CHECK(!strcmp(tr->name, "nmnist") && tr->n == 3 && tr->c == 2 * T && tr->h == S &&
          tr->w == S && tr->classes == 10 && tr->raw == 1 && tr->owns == 1);
    CHECK(te->n == 2 && te->c == 2 * T && te->raw == 1);
    CHECK(tr->labels[0] == 5 && tr->labels[1] == 0 && tr->labels[2] == 9);
    CHECK(te->labels[0] == 7 && te->labels[1] == 3);
    CHECK(tr->mean[0] == 0 && tr->std[0] == 1.0f / 255.0f && tr->std[2] == 1.0f / 255.0f);

    /* Every byte equals the binning of the events, per sample. */
    static uint8_t want[T * FRAME];
    const size_t per = (size_t)T * FRAME;
    const sample *srcs[3] = {&A, &B, &C};
    for (int i = 0; i < 3; i++) {
        expected_bytes(want, srcs[i], T, 0);
        CHECK(!memcmp(tr->pixels + i * per, want, per));
    }
    expected_bytes(want, &B, T, 0);
    CHECK(!memcmp(te->pixels, want, per) && !memcmp(te->pixels + per, want, per));

    /* Frame counts equal event counts per polarity (A: nothing clipped);
     * the layout is (T, 2, 34, 34). */
    long on = 0, off = 0, ev_on = 0;
    for (size_t i = 0; i < A.n; i++) ev_on += A.ev[i].p;
    for (int t = 0; t < T; t++)
        for (int k = 0; k < PLANE; k++) {
            off += tr->pixels[(size_t)t * FRAME + k];
            on += tr->pixels[(size_t)t * FRAME + PLANE + k];
        }
    CHECK(on == ev_on && off == (long)A.n - ev_on);
    /* A's first event (x 0, y 0, ON, t 1000) is in frame 0; its last (x 5,
     * y 273 % 34 = 1, ON, t 5000) in frame T-1. */
    CHECK(tr->pixels[PLANE + 0] == 1);
    CHECK(tr->pixels[(size_t)(T - 1) * FRAME + PLANE + 1 * S + 5] == 1);
    /* B: 300 events on one pixel clip to 255; the span [10, 900] puts t 500
     * and 501 both in frame 2 ((500-10)*4/891 = 2.2). */
    const uint8_t *b = tr->pixels + per;
    CHECK(b[PLANE + 0 * S + 33] == 255);
    CHECK(b[2 * FRAME + PLANE + 2 * S + 1] == 2);
    CHECK(b[3 * FRAME + 33 * S + 0] == 1);
    /* C: no events, all zero. */
    int zero = 1;
    for (size_t k = 0; k < per; k++) zero &= tr->pixels[2 * per + k] == 0;
    CHECK(zero);

    /* The loader gives the counts themselves, normalize or not. */
    for (int norm = 0; norm < 2; norm++) {
        soma_loader *l = NULL;
        soma_loader_config cfg = {.batch = 2, .normalize = norm};
        CHECK(soma_loader_new(&l, tr, &cfg) == SOMA_OK);
        if (!l) break;
        soma_batch bt;
        int same = 1, n = 0;
        while (soma_loader_next(l, &bt)) {
            same &= bt.c == 2 * T && bt.h == S && bt.w == S;
            for (int s = 0; s < bt.n; s++, n++) {
                const uint8_t *px = tr->pixels + (size_t)bt.index[s] * per;
                for (size_t k = 0; k < per; k++) same &= bt.x[(size_t)s * per + k] == (float)px[k];
                same &= bt.y[s] == tr->labels[bt.index[s]];
            }
        }
        CHECK(same && n == 3);
        soma_loader_free(l);
    }
    /* The same shape without the raw flag is refused: images have 1..3 channels. */
    soma_dataset img = *tr;
    img.raw = 0;
    soma_loader *l = NULL;
    soma_loader_config cfg = {.batch = 2};
    CHECK_ERR(soma_loader_new(&l, &img, &cfg), SOMA_ERR_ARG, "8x34x34", "1..3 channels");

    /* The frames encoder on a loader batch: step t is frame t. */
    soma_encoder *enc = NULL;
    CHECK(soma_encoder_new(&enc, SOMA_ENC_FRAMES, (int)per, T, 0, 0.0f) == SOMA_OK);
    CHECK(soma_loader_new(&l, tr, &cfg) == SOMA_OK);
    if (enc && l) {
        soma_batch bt;
        CHECK(soma_loader_next(l, &bt) == 1 && bt.n == 2);
        CHECK(soma_encoder_step_size(enc) == FRAME && soma_encoder_steps(enc) == T);
        static float xt[2 * FRAME];
        int ok = 1;
        for (int t = 0; t < T; t++) {
            soma_encode_step(enc, xt, bt.x, bt.n, t, NULL);
            for (int s = 0; s < bt.n; s++)
                ok &= !memcmp(xt + (size_t)s * FRAME, bt.x + (size_t)s * per + (size_t)t * FRAME,
                              FRAME * sizeof *xt);
        }
        CHECK(ok);
    }
    soma_encoder_free(enc);
    soma_loader_free(l);

    /* A subset view keeps the flag. */
    soma_dataset *v = NULL;
    CHECK(soma_dataset_subset(&v, tr, 1, 2) == SOMA_OK && v->raw == 1 && v->labels[0] == 0 &&
          v->pixels == tr->pixels + per);
    soma_dataset_free(v);
    soma_dataset_free(tr);
    soma_dataset_free(te);

    /* Binary: presence 0/1 exactly where the counts are > 0. */
    soma_dataset *bi = NULL;
    CHECK(soma_dataset_open_nmnist(&bi, NULL, tp2("ok", NULL), T, 1, 0) == SOMA_OK);
    if (bi) {
        int ok = bi->n == 3;
        for (int i = 0; ok && i < 3; i++) {
            expected_bytes(want, srcs[i], T, 0);
            for (size_t k = 0; k < per; k++) ok &= bi->pixels[i * per + k] == (want[k] > 0);
        }
        CHECK(ok);
        CHECK(bi->pixels[per + PLANE + 33] == 1);   /* B's 300 events: one mark */
    }
    soma_dataset_free(bi);

    /* T = 1: one frame per sample; its sum is the event count. */
    CHECK(soma_dataset_open_nmnist(NULL, &te, tp2("ok", NULL), 1, 0, 1) == SOMA_OK);
    if (te) {
        long sum = 0;
        for (int k = 0; k < FRAME; k++) sum += te->pixels[FRAME + k];
        CHECK(te->c == 2 && sum == 255 + 3);   /* B from sub/two.ev: 300 clipped + 3 */
    }
    soma_dataset_free(te);
}

/* ------------------------------------------------------------------------ */
/* Errors: each names the file (and the listing line).                      */
/* ------------------------------------------------------------------------ */

static void test_errors(void)
{
    soma_dataset *tr = (soma_dataset *)&tr, *te = (soma_dataset *)&te;   /* reset to NULL */
    char ok[256], lst[256];
    snprintf(ok, sizeof ok, "%s", tp2("ok", NULL));
    snprintf(lst, sizeof lst, "%s", tp2("half", "train1K.txt"));
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, ok, 0, 0, 0), SOMA_ERR_ARG,
              "T must be > 0, got 0", NULL);
    CHECK(tr == NULL && te == NULL);
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, ok, -3, 0, 0), SOMA_ERR_ARG,
              "T must be > 0, got -3", NULL);
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, ok, 2000000000, 0, 0), SOMA_ERR_ARG,
              "T must be at most", "got 2000000000");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, NULL, 4, 0, 0), SOMA_ERR_ARG, "dir", NULL);
    CHECK_ERR(soma_dataset_open_nmnist(NULL, NULL, ok, 4, 0, 0), SOMA_ERR_ARG, "both NULL", NULL);
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, tp2("absent", NULL), 4, 0, 0), SOMA_ERR_IO,
              "absent: no such directory", "make data");

    /* A missing listing; the other split alone still opens. */
    make_dir(tp2("half", NULL));
    write_sample(tp2("half", "1.bs2"), &A);
    write_text(tp2("half", "train1K.txt"), "#h\n1 4\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, &te, tp2("half", NULL), 4, 0, 0), SOMA_ERR_IO,
              "half/test100.txt", NULL);
    CHECK(tr == NULL && te == NULL);
    CHECK(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0) == SOMA_OK &&
          tr->n == 1 && tr->labels[0] == 4);
    soma_dataset_free(tr);
    CHECK_ERR(soma_dataset_open_nmnist(NULL, &te, tp2("half", NULL), 4, 0, 0), SOMA_ERR_IO,
              "half/test100.txt", NULL);

    /* Listing contents; each case rewrites half/train1K.txt. */
    write_text(lst, "#h\n1 4\n7\t2\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_IO,
              "half/7.bs2", "listed at ");
    CHECK(strstr(soma_last_error(), "half/train1K.txt:3"));
    write_text(lst, "#h\r\n1\t12\r\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "half/train1K.txt:2: label '12' of sample 1", "0..9");
    write_text(lst, "1\tx\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "train1K.txt:1: label 'x'", NULL);
    write_text(lst, "1\t-1\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "label '-1'", NULL);
    write_text(lst, "#h\n1\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "train1K.txt:2: expected '<sample> <label>', got '1'", NULL);
    write_text(lst, "1 2 3\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "train1K.txt:1: expected", "got '1 2 3'");
    write_text(lst, "#only a header\r\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "train1K.txt: no samples listed", NULL);
    CHECK(tr == NULL);

    /* Corrupt event files: the reader's error, with the listing line. */
    uint8_t bytes[7] = {1, 2, 3, 4, 5, 6, 7};
    write_bytes(tp2("half", "5.bs2"), bytes, sizeof bytes);
    write_text(lst, "1 4\n5 4\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "half/5.bs2: size 7 is not a multiple of 5", "listed at");
    CHECK(strstr(soma_last_error(), "train1K.txt:2"));
    sample wide = {.n = 2};
    wide.ev[0] = (soma_event){.x = 3, .y = 3, .p = 0, .t = 1};
    wide.ev[1] = (soma_event){.x = 34, .y = 3, .p = 1, .t = 2};
    write_sample(tp2("half", "5.bs2"), &wide);
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0), SOMA_ERR_FORMAT,
              "half/5.bs2: event 1 at x=34 y=3", "outside the 34x34 sensor");
    CHECK(tr == NULL);

    /* Verification: no SHA256SUMS, a file not in it, a changed file, a bad line. */
    write_text(lst, "1 4\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 1), SOMA_ERR_IO,
              "half/SHA256SUMS", NULL);
    char hex[65], text[512];
    sha_hex(hex, tp2("half", "1.bs2"));
    snprintf(text, sizeof text, "%s  1.bs2\n", hex);
    write_text(tp2("half", "SHA256SUMS"), text);
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 1), SOMA_ERR_CHECKSUM,
              "half/train1K.txt: not listed in", "half/SHA256SUMS");
    char lhex[65];
    sha_hex(lhex, lst);
    snprintf(text, sizeof text, "%s  train1K.txt\n%s  1.bs2\n", lhex, hex);
    write_text(tp2("half", "SHA256SUMS"), text);
    CHECK(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 1) == SOMA_OK);
    soma_dataset_free(tr);
    write_sample(tp2("half", "1.bs2"), &B);   /* changed after SHA256SUMS was written */
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 1), SOMA_ERR_CHECKSUM,
              "half/1.bs2: SHA-256 ", hex);
    CHECK(strstr(soma_last_error(), "listed at") && tr == NULL);
    CHECK(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 0) == SOMA_OK);   /* unchecked */
    soma_dataset_free(tr);
    write_text(tp2("half", "SHA256SUMS"), "# c\nabc  1.bs2\n");
    CHECK_ERR(soma_dataset_open_nmnist(&tr, NULL, tp2("half", NULL), 4, 0, 1), SOMA_ERR_FORMAT,
              "half/SHA256SUMS:2: expected '<64 hex digits>  <file name>'", "got 'abc  1.bs2'");
    CHECK(tr == NULL);
}

/* Every allocation failure is reported and leaks nothing (under ASan). */
static void test_faults(void)
{
    int bad = 0, tries;
    for (tries = 1; tries < 200; tries++) {
        soma_dataset *tr = NULL, *te = NULL;
        soma__fault_after(tries);
        soma_status st = soma_dataset_open_nmnist(&tr, &te, tp2("ok", NULL), 3, 0, 1);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_dataset_free(tr); soma_dataset_free(te); break; }
        bad += st != SOMA_ERR_NOMEM || tr || te;
    }
    CHECK(bad == 0 && tries > 10 && tries < 200);
}

/* ------------------------------------------------------------------------ */
/* The real subset: 1000 train + 100 test samples.                          */
/* ------------------------------------------------------------------------ */

#define NMNIST_DIR "../shared/data/nmnist-subset"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Events in a sample's file: its size / 5. */
static long file_events(const char *id)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s.bs2", NMNIST_DIR, id);
    return stat(path, &st) == 0 ? (long)(st.st_size / 5) : -1;
}

static void check_real(const soma_dataset *ds, int n, const int *counts, int first_id, int T)
{
    CHECK(ds->n == n && ds->c == 2 * T && ds->h == S && ds->w == S && ds->raw == 1);
    int hist[10] = {0}, labels_ok = 1;
    for (int i = 0; i < ds->n; i++) {
        labels_ok &= ds->labels[i] >= 0 && ds->labels[i] < 10;
        if (labels_ok) hist[ds->labels[i]]++;
    }
    CHECK(labels_ok);
    CHECK(!memcmp(hist, counts, sizeof hist));   /* the README's class counts */
    if (memcmp(hist, counts, sizeof hist))
        for (int k = 0; k < 10; k++) fprintf(stderr, "  class %d: %d, want %d\n", k, hist[k], counts[k]);
    /* Every sample: all its events counted (nothing clipped at T = 10) and
     * events in at least T-1 frames (the saccades fill the recording). */
    const size_t per = (size_t)T * FRAME;
    int sums_ok = 1, frames_ok = 1;
    for (int i = 0; i < ds->n; i++) {
        const uint8_t *px = ds->pixels + (size_t)i * per;
        long sum = 0;
        int nonempty = 0;
        for (int t = 0; t < T; t++) {
            long fs = 0;
            for (int k = 0; k < FRAME; k++) fs += px[(size_t)t * FRAME + k];
            sum += fs;
            nonempty += fs > 0;
        }
        char id[16];
        snprintf(id, sizeof id, "%d", first_id + i);
        long want = file_events(id);
        if (sum != want && sums_ok) fprintf(stderr, "  sample %s: %ld counts, %ld events\n", id, sum, want);
        sums_ok &= sum == want;
        frames_ok &= nonempty >= T - 1;
    }
    CHECK(sums_ok);
    CHECK(frames_ok);
}

static long on_events(const soma_dataset *ds, int i, int T)
{
    long on = 0;
    const uint8_t *px = ds->pixels + (size_t)i * T * FRAME;
    for (int t = 0; t < T; t++)
        for (int k = 0; k < PLANE; k++) on += px[(size_t)t * FRAME + PLANE + k];
    return on;
}

static void test_real(void)
{
    if (!dir_exists(NMNIST_DIR)) {
        printf("test_nmnist: %s absent, skipping the real subset\n", NMNIST_DIR);
        return;
    }
    enum { T = 10 };
    static const int train_counts[10] = {97, 116, 99, 93, 105, 92, 94, 117, 87, 100};
    static const int test_counts[10] = {8, 14, 8, 11, 14, 7, 10, 15, 2, 11};
    soma_dataset *tr = NULL, *te = NULL;
    double t0 = now();
    soma_status st = soma_dataset_open_nmnist(&tr, &te, NMNIST_DIR, T, 0, 1);
    double dt = now() - t0;
    CHECK(st == SOMA_OK);
    if (st) { fprintf(stderr, "  %s\n", soma_last_error()); return; }
    printf("test_nmnist: opened and verified %s (1100 files, T = %d) in %.2f s\n", NMNIST_DIR, T, dt);
    check_real(tr, 1000, train_counts, 1, T);
    check_real(te, 100, test_counts, 60001, T);
    /* Listing order and values measured with an independent reader
     * (tests/test_encode.c): 1.bs2 label 5, 4681 events, 2328 ON;
     * 60001.bs2 label 7, 3330 events, 1718 ON. */
    CHECK(tr->labels[0] == 5 && tr->labels[1] == 0 && te->labels[0] == 7 && te->labels[1] == 2);
    CHECK(on_events(tr, 0, T) == 2328 && on_events(te, 0, T) == 1718);

    /* Binary frames of the test split alone: 0/1, marking the count frames. */
    soma_dataset *bi = NULL;
    CHECK(soma_dataset_open_nmnist(NULL, &bi, NMNIST_DIR, T, 1, 0) == SOMA_OK);
    if (bi) {
        int ok = bi->n == te->n;
        for (size_t k = 0; ok && k < (size_t)te->n * T * FRAME; k++)
            ok &= bi->pixels[k] == (te->pixels[k] > 0);
        CHECK(ok);
    }
    soma_dataset_free(bi);
    soma_dataset_free(tr);
    soma_dataset_free(te);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/soma_test_nmnist_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }

    test_synthetic();
    test_errors();
    test_faults();
    test_real();

    for (int i = n_made - 1; i >= 0; i--) remove(made[i]);   /* files before their folders */
    rmdir(tmpdir);
    return check_report("test_nmnist");
}
