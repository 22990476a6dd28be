/*
 * test_encode.c - input encoders (direct, Poisson, sequential, permuted,
 * frames), the adding task, the N-MNIST event reader and event-to-frame
 * binning.
 *
 * Event files are written here, into a fresh temporary directory, except
 * the real data, tested only when present (run from the repository root):
 *   data/mnist                        (sequential coding of a real digit)
 *   ../shared/data/nmnist-subset      (real N-MNIST files)
 * Statistical checks use fixed seeds, so each result is deterministic; the
 * 3-sigma bounds say what a correct coder must satisfy, not a flaky draw.
 */
#include "check.h"
#include "soma_internal.h"   /* soma__fault_after */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];
static char made[32][256];
static int n_made;

static const char *tp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno)); exit(2); }
    if (n && fwrite(data, 1, n, f) != n) { fprintf(stderr, "short write %s\n", path); exit(2); }
    fclose(f);
    if (n_made < 32) snprintf(made[n_made++], sizeof made[0], "%s", path);
}

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
/* Names and argument checks.                                               */
/* ------------------------------------------------------------------------ */

static void test_names_and_args(void)
{
    for (int k = 0; k < SOMA_ENC_COUNT; k++) {
        soma_encoding e = SOMA_ENC_COUNT;
        CHECK(soma_encoding_from_name(&e, soma_encoding_name((soma_encoding)k)) == SOMA_OK &&
              e == (soma_encoding)k);
    }
    CHECK(!strcmp(soma_encoding_name(SOMA_ENC_POISSON), "poisson"));
    CHECK(!strcmp(soma_encoding_name(SOMA_ENC_COUNT), "unknown"));
    soma_encoding e;
    CHECK(!strcmp(soma_encoding_name(SOMA_ENC_FRAMES), "frames"));
    CHECK(soma_encoding_from_name(&e, "frames") == SOMA_OK && e == SOMA_ENC_FRAMES);
    CHECK_ERR(soma_encoding_from_name(&e, "rate"), SOMA_ERR_ARG, "unknown encoding 'rate'",
              "direct, poisson, sequential, permuted, frames");
    CHECK_ERR(soma_encoding_from_name(&e, NULL), SOMA_ERR_ARG, "(null)", "valid:");

    soma_encoder *enc = (soma_encoder *)&e;   /* must be reset to NULL on failure */
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_DIRECT, 10, 0, 1, 1.0f), SOMA_ERR_ARG,
              "T must be > 0, got 0", NULL);
    CHECK(enc == NULL);
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_POISSON, 10, -3, 1, 1.0f), SOMA_ERR_ARG,
              "T must be > 0, got -3", NULL);
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_DIRECT, 0, 5, 1, 1.0f), SOMA_ERR_ARG,
              "D (values per sample) must be > 0, got 0", NULL);
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_SEQUENTIAL, 784, 100, 1, 1.0f), SOMA_ERR_ARG,
              "sequential", "T=100, D=784");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_PERMUTED, 784, 783, 1, 1.0f), SOMA_ERR_ARG,
              "permuted", "T=783, D=784");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_POISSON, 10, 5, 1, 0.0f), SOMA_ERR_ARG,
              "gain must be > 0", "got 0");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_POISSON, 10, 5, 1, -2.0f), SOMA_ERR_ARG,
              "gain", "got -2");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_POISSON, 10, 5, 1, NAN), SOMA_ERR_ARG,
              "gain", "nan");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_POISSON, 10, 5, 1, INFINITY), SOMA_ERR_ARG,
              "gain", "inf");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_FRAMES, 10, 3, 1, 1.0f), SOMA_ERR_ARG,
              "frames: D must be a multiple of T", "D=10, T=3");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_FRAMES, 4, 8, 1, 1.0f), SOMA_ERR_ARG,
              "multiple of T", "D=4, T=8");
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_FRAMES, 10, 0, 1, 1.0f), SOMA_ERR_ARG,
              "T must be > 0, got 0", NULL);
    CHECK_ERR(soma_encoder_new(&enc, SOMA_ENC_COUNT, 10, 5, 1, 1.0f), SOMA_ERR_ARG,
              "encoding 5", "direct, poisson");
    CHECK_ERR(soma_encoder_new(NULL, SOMA_ENC_DIRECT, 10, 5, 1, 1.0f), SOMA_ERR_ARG,
              "out is NULL", NULL);
    CHECK(enc == NULL);
    /* gain is POISSON's alone: other kinds accept any value. */
    CHECK(soma_encoder_new(&enc, SOMA_ENC_DIRECT, 10, 5, 1, 0.0f) == SOMA_OK && enc);
    soma_encoder_free(enc);
    soma_encoder_free(NULL);
    CHECK(soma_encoder_steps(NULL) == 0 && soma_encoder_step_size(NULL) == 0 &&
          soma_encoder_permutation(NULL) == NULL);

    /* Allocation failure leaves nothing behind (ASan sees leaks). */
    int bad = 0, tries;
    for (tries = 1; tries < 10; tries++) {
        enc = NULL;
        soma__fault_after(tries);
        soma_status st = soma_encoder_new(&enc, SOMA_ENC_PERMUTED, 50, 50, 3, 1.0f);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_encoder_free(enc); break; }
        bad += st != SOMA_ERR_NOMEM || enc != NULL;
    }
    CHECK(bad == 0 && tries == 3);   /* two allocations: struct and permutation */
}

/* ------------------------------------------------------------------------ */
/* Direct and Poisson.                                                      */
/* ------------------------------------------------------------------------ */

static void test_direct(void)
{
    enum { B = 3, D = 5, T = 4 };
    float x[B * D], xt[B * D];
    for (int i = 0; i < B * D; i++) x[i] = (float)i * 0.37f - 2.0f;
    soma_encoder *enc = NULL;
    CHECK(soma_encoder_new(&enc, SOMA_ENC_DIRECT, D, T, 0, 1.0f) == SOMA_OK);
    CHECK(soma_encoder_steps(enc) == T && soma_encoder_step_size(enc) == D &&
          soma_encoder_permutation(enc) == NULL);
    int ok = 1;
    for (int t = 0; t < T; t++) {
        memset(xt, 0xff, sizeof xt);
        soma_encode_step(enc, xt, x, B, t, NULL);   /* rng unused: NULL is fine */
        ok &= !memcmp(xt, x, sizeof x);
    }
    CHECK(ok);
    soma_encoder_free(enc);
}

/* Binomial bound: |k - n p| <= 3 sqrt(n p (1-p)). */
static int within_3sigma(long k, long n, double p)
{
    double sd = sqrt((double)n * p * (1 - p));
    int ok = fabs((double)k - (double)n * p) <= 3 * sd;
    if (!ok) fprintf(stderr, "  %ld spikes of %ld, want %.1f +- %.1f (3 sigma)\n", k, n,
                     (double)n * p, 3 * sd);
    return ok;
}

static void test_poisson(void)
{
    enum { B = 200, D = 8, T = 100 };
    /* Columns: three rates at gain 1, then values that test clamping. */
    const float vals[D] = {0.1f, 0.5f, 0.9f, 0.0f, 1.0f, -0.5f, 1.7f, 0.3f};
    static float x[B * D], xt[B * D];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) x[b * D + i] = vals[i];

    soma_encoder *enc = NULL;
    CHECK(soma_encoder_new(&enc, SOMA_ENC_POISSON, D, T, 0, 1.0f) == SOMA_OK);
    CHECK(soma_encoder_steps(enc) == T && soma_encoder_step_size(enc) == D);
    soma_rng rng;
    soma_rng_seed(&rng, 1234);
    long count[D] = {0};
    int binary = 1;
    for (int t = 0; t < T; t++) {
        soma_encode_step(enc, xt, x, B, t, &rng);
        for (int i = 0; i < B * D; i++) {
            binary &= xt[i] == 0.0f || xt[i] == 1.0f;
            count[i % D] += xt[i] == 1.0f;
        }
    }
    const long n = (long)B * T;
    CHECK(binary);
    CHECK(within_3sigma(count[0], n, 0.1));
    CHECK(within_3sigma(count[1], n, 0.5));
    CHECK(within_3sigma(count[2], n, 0.9));
    CHECK(within_3sigma(count[7], n, 0.3));
    CHECK(count[3] == 0);      /* p = 0 never fires */
    CHECK(count[4] == n);      /* p = 1 always fires */
    CHECK(count[5] == 0);      /* negative clamps to 0 */
    CHECK(count[6] == n);      /* above 1 clamps to 1 */
    soma_encoder_free(enc);

    /* gain scales the rate: 0.1 * 5 = 0.5, 0.3 * 5 = 1.5 -> 1, 0.5 * 5 -> 1. */
    CHECK(soma_encoder_new(&enc, SOMA_ENC_POISSON, D, T, 0, 5.0f) == SOMA_OK);
    memset(count, 0, sizeof count);
    for (int t = 0; t < T; t++) {
        soma_encode_step(enc, xt, x, B, t, &rng);
        for (int i = 0; i < B * D; i++) count[i % D] += xt[i] == 1.0f;
    }
    CHECK(within_3sigma(count[0], n, 0.5));
    CHECK(count[1] == n && count[7] == n && count[3] == 0 && count[5] == 0);
    soma_encoder_free(enc);

    /* gain 0.25: 0.5 -> 0.125, 0.9 -> 0.225, 1.7 -> 0.425. */
    CHECK(soma_encoder_new(&enc, SOMA_ENC_POISSON, D, T, 0, 0.25f) == SOMA_OK);
    memset(count, 0, sizeof count);
    for (int t = 0; t < T; t++) {
        soma_encode_step(enc, xt, x, B, t, &rng);
        for (int i = 0; i < B * D; i++) count[i % D] += xt[i] == 1.0f;
    }
    CHECK(within_3sigma(count[1], n, 0.125));
    CHECK(within_3sigma(count[2], n, 0.225));
    CHECK(within_3sigma(count[6], n, 0.425));
    CHECK(within_3sigma(count[4], n, 0.25));

    /* Same rng state -> same spikes; the stream advances by B*D per step. */
    static float a[B * D], b2[B * D];
    soma_rng r1, r2;
    soma_rng_seed(&r1, 77);
    soma_rng_seed(&r2, 77);
    soma_encode_step(enc, a, x, B, 0, &r1);
    soma_encode_step(enc, b2, x, B, 5, &r2);
    CHECK(!memcmp(a, b2, sizeof a));
    for (int i = 0; i < B * D; i++) (void)soma_rng_uniform(&r2);
    soma_rng_seed(&r1, 77);
    soma_encode_step(enc, a, x, B, 0, &r1);
    soma_encode_step(enc, a, x, B, 1, &r1);
    CHECK(r1.s[0] == r2.s[0] && r1.s[1] == r2.s[1] && r1.s[2] == r2.s[2] && r1.s[3] == r2.s[3]);

    /* Misuse: no rng, or t out of range -> zeros and a recorded error. */
    for (int i = 0; i < B * D; i++) a[i] = 7.0f;
    soma_clear_error();
    soma_encode_step(enc, a, x, B, 0, NULL);
    int zeros = 1;
    for (int i = 0; i < B * D; i++) zeros &= a[i] == 0.0f;
    CHECK(zeros && strstr(soma_last_error(), "rng is NULL"));
    soma_clear_error();
    a[0] = 7.0f;
    soma_encode_step(enc, a, x, B, T, &rng);
    CHECK(a[0] == 0.0f && strstr(soma_last_error(), "outside [0, T)"));
    soma_encoder_free(enc);
}

/* ------------------------------------------------------------------------ */
/* Sequential and permuted.                                                 */
/* ------------------------------------------------------------------------ */

enum { NIMG = 2, NPIX = 784 };

/* Two 28x28 images in [0,1]: real MNIST test digits when data/mnist exists. */
static void sample_images(float *x)
{
    soma_dataset *te = NULL;
    if (dir_exists("data/mnist") &&
        soma_dataset_open(NULL, &te, "mnist", "data/mnist", 0) == SOMA_OK &&
        te->n >= NIMG && te->c * te->h * te->w == NPIX) {
        for (int i = 0; i < NIMG * NPIX; i++) x[i] = te->pixels[i] / 255.0f;
        soma_dataset_free(te);
        return;
    }
    soma_dataset_free(te);
    printf("test_encode: data/mnist absent, sequential coding uses a synthetic image\n");
    for (int i = 0; i < NIMG * NPIX; i++) x[i] = (float)((i * 37) % 256) / 255.0f;
}

static void test_sequential(void)
{
    static float x[NIMG * NPIX], cat[NIMG * NPIX];
    float xt[NIMG];
    sample_images(x);
    soma_encoder *enc = NULL;
    CHECK(soma_encoder_new(&enc, SOMA_ENC_SEQUENTIAL, NPIX, NPIX, 0, 1.0f) == SOMA_OK);
    CHECK(soma_encoder_steps(enc) == NPIX && soma_encoder_step_size(enc) == 1 &&
          soma_encoder_permutation(enc) == NULL);
    for (int t = 0; t < NPIX; t++) {
        soma_encode_step(enc, xt, x, NIMG, t, NULL);
        for (int b = 0; b < NIMG; b++) cat[b * NPIX + t] = xt[b];
    }
    /* Concatenated over t, the steps are the flattened (row-major) image. */
    CHECK(!memcmp(cat, x, sizeof x));
    soma_encoder_free(enc);
}

static void test_permuted(void)
{
    static float x[NIMG * NPIX];
    float xt[NIMG];
    sample_images(x);
    soma_encoder *e1 = NULL, *e2 = NULL, *e3 = NULL;
    CHECK(soma_encoder_new(&e1, SOMA_ENC_PERMUTED, NPIX, NPIX, 42, 1.0f) == SOMA_OK);
    CHECK(soma_encoder_new(&e2, SOMA_ENC_PERMUTED, NPIX, NPIX, 42, 1.0f) == SOMA_OK);
    CHECK(soma_encoder_new(&e3, SOMA_ENC_PERMUTED, NPIX, NPIX, 43, 1.0f) == SOMA_OK);
    if (!e1 || !e2 || !e3) goto done;
    CHECK(soma_encoder_step_size(e1) == 1 && soma_encoder_steps(e1) == NPIX);
    const uint32_t *p1 = soma_encoder_permutation(e1), *p2 = soma_encoder_permutation(e2),
                   *p3 = soma_encoder_permutation(e3);
    CHECK(p1 && p2 && p3);

    /* Bijection of 0..D-1. */
    int seen[NPIX] = {0}, ok = 1, fixed = 0;
    for (int i = 0; i < NPIX; i++) {
        ok &= p1[i] < NPIX && !seen[p1[i] < NPIX ? p1[i] : 0]++;
        fixed += p1[i] == (uint32_t)i;
    }
    CHECK(ok);
    CHECK(fixed < 10);   /* a shuffle, not the identity (expected ~1 fixed point) */
    CHECK(!memcmp(p1, p2, NPIX * sizeof *p1));
    CHECK(memcmp(p1, p3, NPIX * sizeof *p1) != 0);

    /* The seed names the permutation: Fisher-Yates with soma_rng(seed). */
    uint32_t ref[NPIX];
    for (int i = 0; i < NPIX; i++) ref[i] = (uint32_t)i;
    soma_rng r;
    soma_rng_seed(&r, 42);
    soma_rng_shuffle_u32(&r, ref, NPIX);
    CHECK(!memcmp(p1, ref, sizeof ref));

    ok = 1;
    for (int t = 0; t < NPIX; t++) {
        soma_encode_step(e1, xt, x, NIMG, t, NULL);
        for (int b = 0; b < NIMG; b++) ok &= xt[b] == x[b * NPIX + p1[t]];
    }
    CHECK(ok);
done:
    soma_encoder_free(e1);
    soma_encoder_free(e2);
    soma_encoder_free(e3);
}

/* ------------------------------------------------------------------------ */
/* Adding task.                                                             */
/* ------------------------------------------------------------------------ */

static void check_adding(int B, int T, uint64_t seed)
{
    float *x = malloc((size_t)B * T * 2 * sizeof *x), *y = malloc((size_t)B * sizeof *y);
    float *x2 = malloc((size_t)B * T * 2 * sizeof *x), *y2 = malloc((size_t)B * sizeof *y);
    if (!x || !y || !x2 || !y2) { fprintf(stderr, "out of memory\n"); exit(2); }
    soma_rng r;
    soma_rng_seed(&r, seed);
    CHECK(soma_adding_batch(x, y, B, T, &r) == SOMA_OK);
    int half = T / 2, second = T - T / 2;
    int ok_two = 1, ok_halves = 1, ok_sum = 1, ok_vals = 1, ok_mid = 1;
    int *hits = calloc((size_t)T, sizeof *hits);
    if (!hits) exit(2);
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * T * 2;
        int n1 = 0, n2 = 0, nmid = 0, pos1 = -1, pos2 = -1;
        for (int t = 0; t < T; t++) {
            float v = xb[2 * t], m = xb[2 * t + 1];
            ok_vals &= v >= 0.0f && v < 1.0f && (m == 0.0f || m == 1.0f);
            if (m != 1.0f) continue;
            hits[t]++;
            if (t < half) { n1++; pos1 = t; }
            else if (t >= second) { n2++; pos2 = t; }
            else nmid++;
        }
        ok_two &= n1 + n2 + nmid == 2;
        ok_halves &= n1 == 1 && n2 == 1;
        ok_mid &= nmid == 0;
        ok_sum &= pos1 >= 0 && pos2 >= 0 && y[b] == xb[2 * pos1] + xb[2 * pos2];
    }
    CHECK(ok_vals);
    CHECK(ok_two);
    CHECK(ok_halves);
    CHECK(ok_mid);
    CHECK(ok_sum);
    /* Positions are uniform within each half: with enough sequences every
     * allowed position is hit, and for odd T the middle step never is. */
    if (B >= 50 * T) {
        int all = 1;
        for (int t = 0; t < T; t++) all &= (t < half || t >= second) ? hits[t] > 0 : hits[t] == 0;
        CHECK(all);
    }
    /* Deterministic: same seed -> same batch; another seed -> another. */
    soma_rng_seed(&r, seed);
    CHECK(soma_adding_batch(x2, y2, B, T, &r) == SOMA_OK);
    CHECK(!memcmp(x, x2, (size_t)B * T * 2 * sizeof *x) && !memcmp(y, y2, (size_t)B * sizeof *y));
    soma_rng_seed(&r, seed + 1);
    CHECK(soma_adding_batch(x2, y2, B, T, &r) == SOMA_OK);
    CHECK(memcmp(x, x2, (size_t)B * T * 2 * sizeof *x) != 0);
    free(hits);
    free(x); free(y); free(x2); free(y2);
}

static void test_adding(void)
{
    check_adding(64, 100, 444);
    check_adding(1000, 10, 1);
    check_adding(1000, 7, 2);    /* odd T: the middle step is never marked */
    check_adding(500, 2, 3);     /* smallest T: markers at 0 and 1 always */

    /* T = 1000 as in the FPTT adding-task run: mean of y is 1 (two U[0,1)). */
    enum { B = 2000, T = 1000 };
    float *x = malloc((size_t)B * T * 2 * sizeof *x), y[B];
    if (!x) exit(2);
    soma_rng r;
    soma_rng_seed(&r, 444);
    CHECK(soma_adding_batch(x, y, B, T, &r) == SOMA_OK);
    double mean = 0;
    for (int b = 0; b < B; b++) mean += y[b];
    mean /= B;
    /* sd of y is sqrt(2/12); 3 sigma of the mean of 2000 */
    CHECK(fabs(mean - 1.0) < 3 * sqrt(2.0 / 12.0 / B));

    CHECK_ERR(soma_adding_batch(x, y, B, 1, &r), SOMA_ERR_ARG, "T must be >= 2", "got 1");
    CHECK_ERR(soma_adding_batch(x, y, 0, T, &r), SOMA_ERR_ARG, "B must be > 0", "got 0");
    CHECK_ERR(soma_adding_batch(x, y, B, T, NULL), SOMA_ERR_ARG, "rng is NULL", NULL);
    CHECK_ERR(soma_adding_batch(NULL, y, B, T, &r), SOMA_ERR_ARG, "x is NULL", NULL);
    free(x);
}

/* ------------------------------------------------------------------------ */
/* Frames: step t is the t-th block of D/T values.                          */
/* ------------------------------------------------------------------------ */

static void test_frames_encoder(void)
{
    enum { B = 3, T = 5, F = 7, D = T * F };
    float x[B * D], xt[B * F];
    for (int i = 0; i < B * D; i++) x[i] = (float)i * 0.5f - 3.0f;
    soma_encoder *enc = NULL;
    CHECK(soma_encoder_new(&enc, SOMA_ENC_FRAMES, D, T, 9, 0.0f) == SOMA_OK);
    if (!enc) return;
    CHECK(soma_encoder_steps(enc) == T && soma_encoder_step_size(enc) == F &&
          soma_encoder_permutation(enc) == NULL);
    /* Each value comes out exactly once: x[b, t F + j] at step t, column j. */
    static float cat[B * D];
    int ok = 1;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < B * F; i++) xt[i] = NAN;
        soma_encode_step(enc, xt, x, B, t, NULL);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                ok &= xt[b * F + j] == x[b * D + t * F + j];
                cat[b * D + t * F + j] = xt[b * F + j];
            }
    }
    CHECK(ok);
    CHECK(!memcmp(cat, x, sizeof x));   /* concatenated over t: the sample */
    /* Step t outside [0, T): zeros and a recorded error. */
    soma_clear_error();
    xt[0] = 7.0f;
    soma_encode_step(enc, xt, x, B, T, NULL);
    CHECK(xt[0] == 0.0f && xt[B * F - 1] == 0.0f && strstr(soma_last_error(), "outside [0, T)"));
    soma_encoder_free(enc);

    /* T = 1 is direct; T = D is sequential. */
    CHECK(soma_encoder_new(&enc, SOMA_ENC_FRAMES, D, 1, 0, 0.0f) == SOMA_OK);
    if (enc) {
        float all[B * D];
        CHECK(soma_encoder_step_size(enc) == D);
        soma_encode_step(enc, all, x, B, 0, NULL);
        CHECK(!memcmp(all, x, sizeof x));
    }
    soma_encoder_free(enc);
    CHECK(soma_encoder_new(&enc, SOMA_ENC_FRAMES, D, D, 0, 0.0f) == SOMA_OK);
    if (enc) {
        CHECK(soma_encoder_step_size(enc) == 1);
        soma_encode_step(enc, xt, x, B, 11, NULL);
        CHECK(xt[0] == x[11] && xt[1] == x[D + 11] && xt[2] == x[2 * D + 11]);
    }
    soma_encoder_free(enc);
}

/* ------------------------------------------------------------------------ */
/* N-MNIST events.                                                          */
/* ------------------------------------------------------------------------ */

static void put_event(uint8_t *p, unsigned x, unsigned y, unsigned pol, uint32_t t)
{
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)y;
    p[2] = (uint8_t)((pol << 7) | ((t >> 16) & 0x7f));
    p[3] = (uint8_t)(t >> 8);
    p[4] = (uint8_t)t;
}

static void test_nmnist_synthetic(void)
{
    /* Edge values: every timestamp bit, both polarities, corners of 34x34. */
    const soma_event want[] = {
        {0, 0, 0, 0}, {33, 33, 1, 0x7fffff}, {5, 17, 1, 0x400000}, {33, 0, 0, 0x2a5a5a},
        {0, 33, 1, 1}, {12, 3, 0, 0x555555}, {7, 8, 1, 0x123456},
    };
    enum { N = sizeof want / sizeof *want };
    uint8_t buf[N * 5 + 3];
    for (int i = 0; i < N; i++) put_event(buf + 5 * i, want[i].x, want[i].y, want[i].p, want[i].t);
    /* Spot-check the encoding itself: ON with t = 2^23-1 is ff ff ff. */
    CHECK(buf[5] == 33 && buf[6] == 33 && buf[7] == 0xff && buf[8] == 0xff && buf[9] == 0xff);
    write_bytes(tp("ok.bin"), buf, N * 5);

    soma_event *ev = NULL;
    size_t n = 0;
    CHECK(soma_nmnist_read(&ev, &n, tp("ok.bin"), 34, 34) == SOMA_OK);
    CHECK(n == N && ev);
    int ok = n == N;
    for (size_t i = 0; ok && i < n; i++)
        ok &= ev[i].x == want[i].x && ev[i].y == want[i].y && ev[i].p == want[i].p &&
              ev[i].t == want[i].t;
    CHECK(ok);
    soma_events_free(ev);

    /* Memory parser: same result. */
    CHECK(soma_nmnist_parse(&ev, &n, buf, N * 5, "mem", 34, 34) == SOMA_OK && n == N &&
          ev[1].t == 0x7fffff && ev[1].p == 1);
    soma_events_free(ev);

    /* Empty file: no events, not an error. */
    write_bytes(tp("empty.bin"), buf, 0);
    ev = (soma_event *)buf;
    CHECK(soma_nmnist_read(&ev, &n, tp("empty.bin"), 34, 34) == SOMA_OK && n == 0 && ev == NULL);

    /* Truncated: 7 events + 3 bytes. */
    write_bytes(tp("cut.bin"), buf, N * 5 + 3);
    CHECK_ERR(soma_nmnist_read(&ev, &n, tp("cut.bin"), 34, 34), SOMA_ERR_FORMAT,
              "cut.bin: size 38 is not a multiple of 5", "truncated event?");
    CHECK(ev == NULL && n == 0);
    CHECK_ERR(soma_nmnist_parse(&ev, &n, buf, 4, "four", 34, 34), SOMA_ERR_FORMAT,
              "four: size 4 is not a multiple of 5", NULL);

    /* A coordinate outside the sensor: event 3 has x = 34. */
    uint8_t bad[4 * 5];
    memcpy(bad, buf, 3 * 5);
    put_event(bad + 15, 34, 2, 0, 100);
    write_bytes(tp("wide.bin"), bad, sizeof bad);
    CHECK_ERR(soma_nmnist_read(&ev, &n, tp("wide.bin"), 34, 34), SOMA_ERR_FORMAT,
              "wide.bin: event 3 at x=34 y=2", "outside the 34x34 sensor");
    CHECK(ev == NULL && n == 0);
    put_event(bad + 15, 1, 40, 0, 100);
    CHECK_ERR(soma_nmnist_parse(&ev, &n, bad, sizeof bad, "tall", 34, 34), SOMA_ERR_FORMAT,
              "tall: event 3 at x=1 y=40", NULL);
    /* The same event fits a bigger sensor. */
    CHECK(soma_nmnist_parse(&ev, &n, bad, sizeof bad, "tall", 34, 41) == SOMA_OK && n == 4);
    soma_events_free(ev);

    CHECK_ERR(soma_nmnist_read(&ev, &n, tp("no_such.bin"), 34, 34), SOMA_ERR_IO, "no_such.bin",
              NULL);
    CHECK_ERR(soma_nmnist_parse(&ev, &n, buf, 10, "w0", 0, 34), SOMA_ERR_ARG, "w0",
              "got 0x34");
    CHECK_ERR(soma_nmnist_parse(&ev, &n, NULL, 10, "nul", 34, 34), SOMA_ERR_ARG, "nul", NULL);
    CHECK(soma_nmnist_parse(&ev, &n, NULL, 0, NULL, 34, 34) == SOMA_OK && n == 0);

    int badf = 0, tries;
    for (tries = 1; tries < 10; tries++) {
        ev = NULL;
        soma__fault_after(tries);
        soma_status st = soma_nmnist_read(&ev, &n, tp("ok.bin"), 34, 34);
        soma__fault_after(0);
        if (st == SOMA_OK) { soma_events_free(ev); break; }
        badf += st != SOMA_ERR_NOMEM || ev != NULL;
    }
    CHECK(badf == 0 && tries == 3);   /* file buffer, then the events */
}

static void test_frames_synthetic(void)
{
    enum { H = 3, W = 4, P = H * W };
    /* Boundaries of [0, 100) in 4 bins: 0, 25, 50, 75. */
    const soma_event ev[] = {
        {3, 1, 1, 25}, {0, 0, 0, 24}, {2, 2, 0, 99}, {2, 2, 0, 100}, {1, 1, 1, 0},
        {1, 1, 1, 0}, {3, 2, 0, 74}, {3, 2, 0, 75},
    };
    const size_t n = sizeof ev / sizeof *ev;
    /* A guard zone after the 4 frames catches writes past frame T-1. */
    float f[5 * 2 * P];
    for (int i = 4 * 2 * P; i < 5 * 2 * P; i++) f[i] = -1.0f;
    CHECK(soma_events_to_frames(f, ev, n, 4, H, W, 0, 100, 0) == SOMA_OK);
#define AT(k, p, y, x) f[(((k) * 2 + (p)) * H + (y)) * W + (x)]
    CHECK(AT(1, 1, 1, 3) == 1 && AT(0, 0, 0, 0) == 1 && AT(3, 0, 2, 2) == 1 &&
          AT(0, 1, 1, 1) == 2 && AT(2, 0, 2, 3) == 1 && AT(3, 0, 2, 3) == 1);
    double total = 0;
    int guard = 1;
    for (int i = 0; i < 4 * 2 * P; i++) total += f[i];
    for (int i = 4 * 2 * P; i < 5 * 2 * P; i++) guard &= f[i] == -1.0f;
    CHECK(total == 7);   /* t = 100 is outside [0, 100) */
    CHECK(guard);

    /* Binary: the doubled event marks presence once. */
    CHECK(soma_events_to_frames(f, ev, n, 4, H, W, 0, 100, 1) == SOMA_OK);
    CHECK(AT(0, 1, 1, 1) == 1);

    /* Non-integer boundaries: [0, 10) in 3 bins = 0, 3.33, 6.67. */
    const soma_event e2[] = {{0, 0, 0, 3}, {1, 0, 0, 4}, {2, 0, 0, 6}, {3, 0, 0, 7}};
    CHECK(soma_events_to_frames(f, e2, 4, 3, H, W, 0, 10, 0) == SOMA_OK);
    CHECK(AT(0, 0, 0, 0) == 1 && AT(1, 0, 0, 1) == 1 && AT(1, 0, 0, 2) == 1 && AT(2, 0, 0, 3) == 1);

    /* t1 <= t0: the stream's own span [min t, max t] (last event included). */
    CHECK(soma_events_to_frames(f, ev, n, 4, H, W, 0, 0, 0) == SOMA_OK);
    total = 0;
    for (int i = 0; i < 4 * 2 * P; i++) total += f[i];
    for (int i = 4 * 2 * P; i < 5 * 2 * P; i++) guard &= f[i] == -1.0f;
    CHECK(guard);
    CHECK(total == (double)n && AT(3, 0, 2, 2) == 2);   /* t = 100 is now in the last bin */
    /* T = 1 over a window starting past 0: events before it are left out. */
    CHECK(soma_events_to_frames(f, ev, n, 1, H, W, 25, 76, 0) == SOMA_OK);
    total = 0;
    for (int i = 0; i < 2 * P; i++) total += f[i];
    CHECK(total == 3);   /* t = 25, 74, 75 */
#undef AT

    /* Events outside the frame are errors, not dropped. */
    CHECK_ERR(soma_events_to_frames(f, ev, n, 4, H, 3, 0, 100, 0), SOMA_ERR_ARG,
              "event 0 at x=3 y=1", "W=3, H=3");
    const soma_event e3[] = {{0, 0, 2, 1}};
    CHECK_ERR(soma_events_to_frames(f, e3, 1, 4, H, W, 0, 100, 0), SOMA_ERR_ARG, "p=2", NULL);
    CHECK_ERR(soma_events_to_frames(f, ev, n, 0, H, W, 0, 100, 0), SOMA_ERR_ARG,
              "T must be > 0, got 0", NULL);
    CHECK_ERR(soma_events_to_frames(f, ev, n, 4, 0, W, 0, 100, 0), SOMA_ERR_ARG,
              "H and W must be > 0", "got 0x4");
    CHECK_ERR(soma_events_to_frames(f, ev, n, 4, H, -1, 0, 100, 0), SOMA_ERR_ARG,
              "H and W must be > 0", NULL);
    CHECK_ERR(soma_events_to_frames(NULL, ev, n, 4, H, W, 0, 100, 0), SOMA_ERR_ARG,
              "frames is NULL", NULL);
    /* No events: all-zero frames. */
    f[0] = 5;
    CHECK(soma_events_to_frames(f, NULL, 0, 4, H, W, 0, 0, 0) == SOMA_OK && f[0] == 0);
}

/* ------------------------------------------------------------------------ */
/* Real N-MNIST files.                                                      */
/* ------------------------------------------------------------------------ */

#define NMNIST_DIR "../shared/data/nmnist-subset"

/* The recorded SHA-256 of `name` from SHA256SUMS, or 0 if not listed. */
static int recorded_sha(const char *name, char hex[65])
{
    FILE *f = fopen(NMNIST_DIR "/SHA256SUMS", "r");
    if (!f) return 0;
    char line[512], file[256];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "%64s %255s", hex, file) == 2 && !strcmp(file, name);
    fclose(f);
    return found;
}

static void test_nmnist_real(void)
{
    if (!dir_exists(NMNIST_DIR)) {
        printf("test_encode: %s absent, skipping the real N-MNIST files\n", NMNIST_DIR);
        return;
    }
    const char *names[] = {"1.bs2", "2.bs2", "500.bs2", "1000.bs2", "60001.bs2", "60100.bs2"};
    for (size_t f = 0; f < sizeof names / sizeof *names; f++) {
        char path[256], hex[65];
        snprintf(path, sizeof path, "%s/%s", NMNIST_DIR, names[f]);
        struct stat st;
        if (stat(path, &st) != 0) {
            printf("test_encode: %s absent, skipped\n", path);
            continue;
        }
        if (recorded_sha(names[f], hex)) {
            soma_status vs = soma_verify_file(path, (uint64_t)st.st_size, hex);
            CHECK(vs == SOMA_OK);
            if (vs) { fprintf(stderr, "  %s\n", soma_last_error()); continue; }
        }
        soma_event *ev = NULL;
        size_t n = 0;
        soma_status rs = soma_nmnist_read(&ev, &n, path, 34, 34);
        CHECK(rs == SOMA_OK);
        if (rs) { fprintf(stderr, "  %s\n", soma_last_error()); continue; }
        CHECK((off_t)(n * 5) == st.st_size);
        /* The subset's README measured 1069..7152 events per sample, all
         * inside 34x34, timestamps <= 336040 us and non-decreasing. */
        CHECK(n >= 500 && n <= 20000);
        int in = 1, sorted = 1;
        size_t on = 0;
        for (size_t i = 0; i < n; i++) {
            in &= ev[i].x < 34 && ev[i].y < 34 && ev[i].p <= 1;
            if (i) sorted &= ev[i].t >= ev[i - 1].t;
            on += ev[i].p;
        }
        CHECK(in);
        CHECK(sorted);
        CHECK(ev[n - 1].t > 250000 && ev[n - 1].t < 400000);   /* three ~100 ms saccades */
        CHECK(on > n / 4 && on < 3 * n / 4);
        if (!strcmp(names[f], "1.bs2"))   /* values measured with an independent reader */
            CHECK(n == 4681 && ev[0].t == 893 && ev[n - 1].t == 305924 && on == 2328);
        if (!strcmp(names[f], "60001.bs2"))
            CHECK(n == 3330 && ev[0].t == 5087 && ev[n - 1].t == 307827 && on == 1718);

        /* Frames over the stream's own span: every event counted once. */
        enum { T = 10, S = 2 * 34 * 34 };
        static float cnt[T * S], bin[T * S], one[S];
        CHECK(soma_events_to_frames(cnt, ev, n, T, 34, 34, 0, 0, 0) == SOMA_OK);
        CHECK(soma_events_to_frames(bin, ev, n, T, 34, 34, 0, 0, 1) == SOMA_OK);
        CHECK(soma_events_to_frames(one, ev, n, 1, 34, 34, 0, 0, 0) == SOMA_OK);
        double total = 0;
        int bin_ok = 1, part_ok = 1, nonempty = 0;
        for (int i = 0; i < T * S; i++) {
            total += cnt[i];
            bin_ok &= (bin[i] == 0.0f || bin[i] == 1.0f) && (bin[i] == 1.0f) == (cnt[i] > 0);
        }
        /* The T bins partition the span: summed over time they give T = 1. */
        for (int i = 0; i < S; i++) {
            float s = 0;
            for (int k = 0; k < T; k++) s += cnt[k * S + i];
            part_ok &= s == one[i];
        }
        for (int k = 0; k < T; k++) {
            float s = 0;
            for (int i = 0; i < S; i++) s += cnt[k * S + i];
            nonempty += s > 0;
        }
        CHECK(total == (double)n);
        CHECK(bin_ok);
        CHECK(part_ok);
        CHECK(nonempty >= T - 1);   /* events span the whole recording */

        /* A window [100 ms, 200 ms): the count is the events inside it. */
        size_t inside = 0;
        for (size_t i = 0; i < n; i++) inside += ev[i].t >= 100000 && ev[i].t < 200000;
        CHECK(soma_events_to_frames(cnt, ev, n, T, 34, 34, 100000, 200000, 0) == SOMA_OK);
        total = 0;
        for (int i = 0; i < T * S; i++) total += cnt[i];
        CHECK(total == (double)inside && inside > 0);
        soma_events_free(ev);
    }
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/soma_test_encode_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }

    test_names_and_args();
    test_direct();
    test_poisson();
    test_sequential();
    test_permuted();
    test_frames_encoder();
    test_adding();
    test_nmnist_synthetic();
    test_frames_synthetic();
    test_nmnist_real();

    for (int i = 0; i < n_made; i++) remove(made[i]);
    rmdir(tmpdir);
    return check_report("test_encode");
}
